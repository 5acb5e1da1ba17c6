/*
 * The compiler from rules AST to a parameterised SQL boolean expression.
 *
 * Semantics follow PocketBase: `=`/`!=` against '' or null also match NULL; `~`
 * is a case-insensitive LIKE with implicit %...% unless the value holds a %;
 * against a multi-valued operand the `?` forms must hold for at least one value, the
 * plain positive operators (= > >= < <= ~) for every value and there must be one,
 * and the plain negations (!= !~) for every value (no value equals / matches), so
 * that an empty list satisfies no positive comparison and every negation.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "rules/dialect.h"
#include "rules/rules.h"

/* Appends v to the statement's parameters; returns its number (1-based) or 0. */
static size_t push_param(rules_compiler_t *c, arena_t *arena, bs_value_t v)
{
    if (c->nparams == c->cap_params) {
        size_t cap = c->cap_params ? c->cap_params * 2 : 8;
        bs_value_t *p = arena_alloc(arena, cap * sizeof(*p));
        if (p == NULL)
            return 0;
        if (c->nparams)
            memcpy(p, c->params, c->nparams * sizeof(*p));
        c->params = p;
        c->cap_params = cap;
    }
    c->params[c->nparams++] = v;
    return c->nparams;
}

int rules_add_param(rules_compiler_t *c, arena_t *arena, bs_value_t v, buf_t *out)
{
    size_t n = push_param(c, arena, v);
    if (n == 0)
        return -1;
    dialect_placeholder(dialect_get(c->dialect), out, n);
    return out->oom ? -1 : 0;
}

/* A parameter whose type nothing around it gives (typed: compared with another
 * constant): PostgreSQL cannot infer it, so the dialect spells the type out. */
static int add_param(rules_compiler_t *c, arena_t *arena, bs_value_t v, buf_t *out, int typed)
{
    if (!typed)
        return rules_add_param(c, arena, v, out);
    size_t n = push_param(c, arena, v);
    if (n == 0)
        return -1;
    dialect_typed_placeholder(dialect_get(c->dialect), out, n,
                              typed == 2 || v.type == BS_VAL_INT || v.type == BS_VAL_DOUBLE);
    return out->oom ? -1 : 0;
}

static int64_t day_start(int64_t ms)
{
    int64_t d = ms / 86400000;
    if (ms < 0 && ms % 86400000)
        d--;
    return d * 86400000;
}

int rules_macro(arena_t *arena, int64_t now_ms, const char *name, size_t len, bs_value_t *out)
{
    time_t secs = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int64_t ms = -1;
    int64_t num = -1;
#define IS(str) (len == sizeof(str) - 1 && memcmp(name, str, len) == 0)
    if (IS("@now"))
        ms = now_ms;
    else if (IS("@yesterday"))
        ms = now_ms - 86400000;
    else if (IS("@tomorrow"))
        ms = now_ms + 86400000;
    else if (IS("@todayStart"))
        ms = day_start(now_ms);
    else if (IS("@todayEnd"))
        ms = day_start(now_ms) + 86400000 - 1;
    else if (IS("@monthStart") || IS("@monthEnd") || IS("@yearStart") || IS("@yearEnd")) {
        struct tm t = {0};
        int month = IS("@monthStart") || IS("@monthEnd");
        int end = IS("@monthEnd") || IS("@yearEnd");
        t.tm_year = tm.tm_year;
        t.tm_mon = month ? tm.tm_mon : 0;
        t.tm_mday = 1;
        if (end) {
            if (month)
                t.tm_mon += 1;
            else
                t.tm_year += 1;
        }
        ms = (int64_t)timegm(&t) * 1000 - (end ? 1 : 0);
    } else if (IS("@second"))
        num = tm.tm_sec;
    else if (IS("@minute"))
        num = tm.tm_min;
    else if (IS("@hour"))
        num = tm.tm_hour;
    else if (IS("@weekday"))
        num = tm.tm_wday;
    else if (IS("@day"))
        num = tm.tm_mday;
    else if (IS("@month"))
        num = tm.tm_mon + 1;
    else if (IS("@year"))
        num = tm.tm_year + 1900;
    else
        return -1;
#undef IS
    if (num >= 0) {
        *out = bs_val_int(num);
        return 0;
    }
    char *s = arena_alloc(arena, UTIL_TIME_LEN + 1);
    if (s == NULL)
        return -1;
    util_format_time(ms, s);
    *out = bs_val_text(s, UTIL_TIME_LEN);
    return 0;
}

/* A compiled operand: its SQL, and where its values come from when multi. */
typedef struct {
    const char *expr;
    const char *from, *where;
    int multi;
    int is_value;
    bs_value_t value;                 /* valid when is_value && !multi */
    const char *json_num, *json_text; /* a JSON path's typed forms (rules_resolved_t) */
} operand_sql_t;

static int nomem(bs_error_t *err)
{
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return -1;
}

static char *lower_copy(arena_t *a, const char *s, size_t n)
{
    char *o = arena_strndup(a, s, n);
    if (o != NULL)
        for (size_t i = 0; i < n; i++)
            if (o[i] >= 'A' && o[i] <= 'Z')
                o[i] = (char)(o[i] - 'A' + 'a');
    return o;
}

/* Turns a constant into a parameter placeholder; when like_wrap, applies the
 * implicit %...% of `~`. */
static const char *value_expr(rules_compiler_t *c, arena_t *a, bs_value_t v, int like_wrap, int typed)
{
    if (like_wrap && v.type == BS_VAL_TEXT && memchr(v.s, '%', v.n) == NULL) {
        buf_t w;
        buf_init(&w, a);
        buf_putc(&w, '%');
        for (size_t i = 0; i < v.n; i++) {
            if (v.s[i] == '_' || v.s[i] == '\\')
                buf_putc(&w, '\\');
            buf_putc(&w, v.s[i]);
        }
        buf_putc(&w, '%');
        if (w.oom)
            return NULL;
        v = bs_val_text(w.data, w.len);
    } else if (like_wrap && v.type != BS_VAL_TEXT && v.type != BS_VAL_NULL) {
        /* A number on the right of `~` matches its text form anywhere. */
        char *s = v.type == BS_VAL_INT ? arena_printf(a, "%%%lld%%", (long long)v.i)
                                       : arena_printf(a, "%%%g%%", v.d);
        if (s == NULL)
            return NULL;
        v = bs_val_text(s, strlen(s));
    }
    buf_t b;
    buf_init(&b, a);
    if (add_param(c, a, v, &b, typed) != 0)
        return NULL;
    return b.data;
}

static int compile_operand(rules_compiler_t *c, arena_t *a, const rules_operand_t *o, int like_rhs,
                           operand_sql_t *out, bs_error_t *err)
{
    memset(out, 0, sizeof(*out));
    bs_value_t v;
    switch (o->kind) {
    case RULES_LIT_STRING:
        v = bs_val_text(o->name, o->len);
        if (o->mods & RULES_MOD_LOWER) {
            v.s = lower_copy(a, o->name, o->len);
            if (v.s == NULL)
                return nomem(err);
        }
        break;
    case RULES_LIT_NUMBER:
        if (o->num == floor(o->num) && fabs(o->num) < 9e15)
            v = bs_val_int((int64_t)o->num);
        else
            v = bs_val_double(o->num);
        break;
    case RULES_LIT_BOOL:
        v = bs_val_int(o->boolean);
        break;
    case RULES_LIT_NULL:
        v = bs_val_null();
        break;
    case RULES_LIT_FUNC: {
        /* A call with constant arguments is computed once, as a constant. */
        int is_value = 0;
        if (rules_func_compile(c, a, o->call, &out->expr, &v, &is_value, err) != 0)
            return -1;
        if (!is_value)
            return 0;
        break;
    }
    case RULES_LIT_IDENT:
        if (o->name[0] == '@' && rules_macro(a, c->now_ms, o->name, o->len, &v) == 0)
            break;
        {
            rules_resolved_t r;
            memset(&r, 0, sizeof(r));
            if (c->resolve == NULL) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid filter: unknown field \"%s\".", o->name);
                return -1;
            }
            if (c->resolve(c->resolve_ud, a, o->name, o->len, o->mods, &r, err) != 0)
                return -1;
            if (r.is_value && !r.multi) {
                v = r.value;
                if ((o->mods & RULES_MOD_LOWER) && v.type == BS_VAL_TEXT) {
                    v.s = lower_copy(a, v.s, v.n);
                    if (v.s == NULL)
                        return nomem(err);
                }
                break;
            }
            out->multi = r.multi;
            if (r.is_value) {
                /* A list of constants is one parameter, the JSON array of its values,
                 * read as the elements of a JSON array: preparing the statement costs
                 * the same however long the list (one parameter per value made it
                 * quadratic). */
                const dialect_t *d = dialect_get(c->dialect);
                int alias = ++c->alias_seq;
                char name[24];
                snprintf(name, sizeof(name), "__v%d", alias);
                buf_t f;
                buf_init(&f, a);
                if (r.nvalues == 0) {
                    buf_printf(&f, "(SELECT NULL AS \"value\" WHERE %s) AS \"%s\"", d->false_lit, name);
                } else {
                    buf_t j, ph;
                    buf_init(&j, a);
                    buf_init(&ph, a);
                    buf_putc(&j, '[');
                    for (size_t i = 0; i < r.nvalues; i++) {
                        bs_value_t x = r.values[i];
                        if (i)
                            buf_putc(&j, ',');
                        if (x.type == BS_VAL_TEXT)
                            util_json_quote(&j, x.s, x.n);
                        else if (x.type == BS_VAL_INT)
                            buf_put_i64(&j, x.i);
                        else if (x.type == BS_VAL_DOUBLE && isfinite(x.d))
                            buf_printf(&j, "%.17g", x.d);
                        else
                            buf_puts(&j, "null");
                    }
                    buf_putc(&j, ']');
                    if (j.oom || rules_add_param(c, a, bs_val_text(j.data, j.len), &ph) != 0)
                        return nomem(err);
                    char *param = arena_printf(a, d->json_param_fmt, ph.data);
                    if (param == NULL)
                        return nomem(err);
                    dialect_json_elements(d, &f, param, name);
                }
                out->expr = arena_printf(a, "\"%s\".\"value\"", name);
                if (f.oom)
                    return nomem(err);
                out->from = f.data;
                out->where = d->true_lit;
            } else {
                out->expr = r.sql;
                out->json_num = r.json_num;
                out->json_text = r.json_text;
                out->from = r.from;
                out->where = r.where ? r.where : dialect_get(c->dialect)->true_lit;
            }
            if (o->mods & RULES_MOD_LOWER)
                out->expr = arena_printf(a, "LOWER(%s)", out->expr);
            if (out->expr == NULL || (out->multi && out->from == NULL))
                return out->expr == NULL ? nomem(err) : (bs_error_set(err, BS_ERR_INTERNAL, NULL), -1);
            return 0;
        }
    }
    /* The placeholder is added only when the SQL uses it (see need_expr), so that
     * no unused parameter is left behind. */
    out->is_value = 1;
    out->value = v;
    (void)like_rhs;
    return 0;
}

static int need_expr(rules_compiler_t *c, arena_t *a, operand_sql_t *o, int like, int typed, bs_error_t *err)
{
    if (o->expr != NULL)
        return 0;
    o->expr = value_expr(c, a, o->value, like, typed);
    return o->expr == NULL ? nomem(err) : 0;
}

static int is_empty_value(const operand_sql_t *o)
{
    return o->is_value && (o->value.type == BS_VAL_NULL || (o->value.type == BS_VAL_TEXT && o->value.n == 0));
}

/* A JSON path's form for this comparison (its value is typed as stored): against a
 * number constant its number form, against a text constant its string form (so
 * '5' never equals 5, as json_extract has it in SQLite and PocketBase), against ''
 * or null its value; in LIKE, on either side, its string form; against another
 * field or a list both sides compare as text. Returns 1 when both sides must be
 * read as text. */
static int json_form(operand_sql_t *s, const operand_sql_t *o, int like, int empty_cmp)
{
    if (s->json_num == NULL)
        return 0;
    if (like) {
        s->expr = s->json_text;
        return 0;
    }
    if (!o->is_value || o->multi)
        return 1;
    if (empty_cmp)
        return 0;
    if (o->value.type == BS_VAL_INT || o->value.type == BS_VAL_DOUBLE)
        s->expr = s->json_num;
    else if (o->value.type == BS_VAL_TEXT)
        s->expr = s->json_text;
    return 0;
}

static int compile_cmp(rules_compiler_t *c, arena_t *a, const rules_node_t *n, buf_t *out, bs_error_t *err)
{
    int like = n->op == RULES_LIKE || n->op == RULES_NLIKE;
    operand_sql_t l, r;
    if (compile_operand(c, a, &n->lhs, 0, &l, err) != 0 || compile_operand(c, a, &n->rhs, like, &r, err) != 0)
        return -1;
    const dialect_t *d = dialect_get(c->dialect);
    const char *cond = NULL;
    int empty_cmp = (n->op == RULES_EQ || n->op == RULES_NEQ) && (is_empty_value(&r) || is_empty_value(&l));
    /* Two constants: nothing gives their parameters a type. A NULL against a number
     * (a missing request value, a geoDistance of one) is typed as a number too:
     * PostgreSQL has no text < double precision. */
    int typed = l.is_value && r.is_value;
    int num_l = typed && (l.value.type == BS_VAL_INT || l.value.type == BS_VAL_DOUBLE);
    int num_r = typed && (r.value.type == BS_VAL_INT || r.value.type == BS_VAL_DOUBLE);
    int typed_l = typed && num_r && l.value.type == BS_VAL_NULL ? 2 : typed;
    int typed_r = typed && num_l && r.value.type == BS_VAL_NULL ? 2 : typed;
    if (empty_cmp) {
        if (need_expr(c, a, is_empty_value(&r) ? &l : &r, 0, typed, err) != 0)
            return -1;
    } else if (need_expr(c, a, &l, 0, typed_l, err) != 0 || need_expr(c, a, &r, like, typed_r, err) != 0) {
        return -1;
    }
    if ((json_form(&l, &r, like, empty_cmp) | json_form(&r, &l, like, empty_cmp)) != 0) {
        l.expr = arena_printf(a, d->as_text_fmt, l.expr);
        r.expr = arena_printf(a, d->as_text_fmt, r.expr);
        if (l.expr == NULL || r.expr == NULL)
            return nomem(err);
    }
    switch (n->op) {
    case RULES_EQ:
    case RULES_NEQ: {
        const char *eq = n->op == RULES_EQ ? "=" : "<>";
        if (empty_cmp) {
            const char *x = is_empty_value(&r) ? l.expr : r.expr;
            cond = arena_printf(a, d->empty_cmp_fmt, x, eq);
        } else if (n->op == RULES_EQ) {
            cond = arena_printf(a, "(%s = %s)", l.expr, r.expr);
        } else {
            cond = arena_printf(a, "(%s %s %s)", l.expr, d->is_distinct, r.expr);
        }
        break;
    }
    case RULES_GT:
        cond = arena_printf(a, "(%s > %s)", l.expr, r.expr);
        break;
    case RULES_GTE:
        cond = arena_printf(a, "(%s >= %s)", l.expr, r.expr);
        break;
    case RULES_LT:
        cond = arena_printf(a, "(%s < %s)", l.expr, r.expr);
        break;
    case RULES_LTE:
        cond = arena_printf(a, "(%s <= %s)", l.expr, r.expr);
        break;
    case RULES_LIKE:
    case RULES_NLIKE: {
        const char *pat = r.expr;
        if (!r.is_value) {
            const char *t = arena_printf(a, d->as_text_fmt, r.expr);
            pat = t ? arena_printf(a, "('%%' || %s || '%%')", t) : NULL;
        }
        if (pat == NULL)
            return nomem(err);
        cond = arena_printf(a, n->op == RULES_LIKE ? d->like_fmt : d->not_like_fmt, l.expr, pat);
        break;
    }
    }
    if (cond == NULL)
        return nomem(err);
    /* Multi-valued operands: innermost the right side, then the left side. */
    const operand_sql_t *sides[2] = {&r, &l};
    for (int i = 0; i < 2; i++) {
        const operand_sql_t *s = sides[i];
        if (!s->multi)
            continue;
        if (n->any)
            cond = arena_printf(a, "EXISTS (SELECT 1 FROM %s WHERE %s AND %s)", s->from, s->where, cond);
        else if (rules_op_needs_item(n->op))
            /* "Every item, and there is one": an empty list satisfies no positive
             * comparison (PocketBase compares its joined item, NULL for an empty
             * list), or `editors.id = @request.auth.id` would admit anyone to a
             * record with no editors. */
            cond =
                arena_printf(a,
                             "(EXISTS (SELECT 1 FROM %s WHERE %s) AND NOT EXISTS (SELECT 1 FROM %s WHERE %s "
                             "AND NOT COALESCE(%s, %s)))",
                             s->from, s->where, s->from, s->where, cond, d->false_lit);
        else
            /* != and !~: no item equals / matches; an empty deny list denies no one. */
            cond = arena_printf(a, "NOT EXISTS (SELECT 1 FROM %s WHERE %s AND NOT COALESCE(%s, %s))", s->from,
                                s->where, cond, d->false_lit);
        if (cond == NULL)
            return nomem(err);
    }
    buf_puts(out, cond);
    if (c->nparams > RULES_MAX_PARAMS) {
        bs_error_set(err, BS_ERR_BAD_REQUEST,
                     "Invalid filter: the expression needs too many values (limit %d).", RULES_MAX_PARAMS);
        return -1;
    }
    return out->oom ? nomem(err) : 0;
}

int rules_compile(rules_compiler_t *c, arena_t *arena, const rules_node_t *node, buf_t *out, bs_error_t *err);

/* A chain of the same operator ("a || b || c", parsed left-nested) is written as one
 * flat group: SQLite's parser has a bounded stack, and 200 nested parentheses from
 * a long chain would overflow it (found by fuzz_filter). */
static int compile_chain(rules_compiler_t *c, arena_t *arena, const rules_node_t *node,
                         rules_node_kind_t kind, buf_t *out, bs_error_t *err)
{
    if (node->kind != kind)
        return rules_compile(c, arena, node, out, err);
    if (compile_chain(c, arena, node->left, kind, out, err) != 0)
        return -1;
    buf_puts(out, kind == RULES_N_AND ? " AND " : " OR ");
    return compile_chain(c, arena, node->right, kind, out, err);
}

int rules_compile(rules_compiler_t *c, arena_t *arena, const rules_node_t *node, buf_t *out, bs_error_t *err)
{
    if (node == NULL) {
        buf_puts(out, dialect_get(c->dialect)->true_lit);
        return out->oom ? nomem(err) : 0;
    }
    if (node->kind == RULES_N_CMP)
        return compile_cmp(c, arena, node, out, err);
    buf_putc(out, '(');
    if (compile_chain(c, arena, node, node->kind, out, err) != 0)
        return -1;
    buf_putc(out, ')');
    return out->oom ? nomem(err) : 0;
}
