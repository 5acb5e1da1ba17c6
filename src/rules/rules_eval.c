/*
 * The evaluator of rules ASTs in memory, mirroring rules_sql.c clause by clause:
 *
 *   a = b, a != b    against an empty constant ('' or null): COALESCE(x, '') = ''
 *   a = b            NULL on either side is false
 *   a != b           IS NOT: NULL != NULL is false, NULL != 'x' is true
 *   < <= > >=        NULL is false
 *   a ~ b            LIKE, constant patterns wrapped in %...% unless they hold a %
 *   a !~ b           COALESCE(a, '') NOT LIKE pattern
 *   multi operands   the right side innermost, then the left; "?" = some, plain = all
 *                    (and, for the positive operators, at least one: an empty list
 *                    is false; for != and !~ it is true)
 *
 * Values compare as SQLite compares values of one class: numbers numerically, text
 * bytewise. Values of different classes (and numbers on the left of LIKE that are
 * not integers) would depend on column affinity, so they are RULES_UNKNOWN.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "rules/rules.h"

static int lower_ascii(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static size_t utf8_step(const char *s, size_t n)
{
    unsigned char c = (unsigned char)s[0];
    size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    return k > n ? n : k;
}

int rules_like(const char *s, size_t sn, const char *p, size_t pn)
{
    size_t si = 0, pi = 0;
    /* Backtracking point for the last %: where it was and where the text resumes. */
    size_t star_p = (size_t)-1, star_s = 0;
    while (si < sn) {
        if (pi < pn && p[pi] == '%') {
            star_p = ++pi;
            star_s = si;
            continue;
        }
        if (pi < pn && p[pi] == '_') {
            pi++;
            si += utf8_step(s + si, sn - si);
            continue;
        }
        if (pi < pn) {
            size_t q = pi;
            if (p[q] == '\\' && q + 1 < pn)
                q++;
            size_t k = utf8_step(p + q, pn - q);
            int same = k == 1 ? lower_ascii((unsigned char)p[q]) == lower_ascii((unsigned char)s[si])
                              : si + k <= sn && memcmp(p + q, s + si, k) == 0;
            if (same) {
                pi = q + k;
                si += k;
                continue;
            }
        }
        if (star_p == (size_t)-1)
            return 0;
        pi = star_p;
        star_s += utf8_step(s + star_s, sn - star_s);
        si = star_s;
    }
    while (pi < pn && p[pi] == '%')
        pi++;
    return pi == pn;
}

typedef enum { C_NULL, C_NUM, C_TEXT } vclass_t;

static vclass_t vclass(bs_value_t v)
{
    return v.type == BS_VAL_NULL ? C_NULL : v.type == BS_VAL_TEXT ? C_TEXT : C_NUM;
}

static double num(bs_value_t v)
{
    return v.type == BS_VAL_INT ? (double)v.i : v.d;
}

/* <0, 0, >0, or 2 when the classes differ (unknown). Both non-NULL. */
static int compare(bs_value_t a, bs_value_t b, int *unknown)
{
    vclass_t ca = vclass(a), cb = vclass(b);
    *unknown = 0;
    if (ca != cb) {
        *unknown = 1;
        return 0;
    }
    if (ca == C_NUM) {
        if (a.type == BS_VAL_INT && b.type == BS_VAL_INT)
            return a.i < b.i ? -1 : a.i > b.i;
        double x = num(a), y = num(b);
        return x < y ? -1 : x > y;
    }
    size_t n = a.n < b.n ? a.n : b.n;
    int c = memcmp(a.s, b.s, n);
    if (c != 0)
        return c < 0 ? -1 : 1;
    return a.n < b.n ? -1 : a.n > b.n;
}

static int is_empty(bs_value_t v)
{
    return v.type == BS_VAL_NULL || (v.type == BS_VAL_TEXT && v.n == 0);
}

/* The text a number takes in LIKE, or NULL when it is not an integer. */
static const char *like_text(arena_t *a, bs_value_t v, size_t *n)
{
    if (v.type == BS_VAL_TEXT) {
        *n = v.n;
        return v.s;
    }
    if (v.type != BS_VAL_INT)
        return NULL;
    char *s = arena_printf(a, "%lld", (long long)v.i);
    *n = s ? strlen(s) : 0;
    return s;
}

typedef struct {
    const rules_node_t *n;
    int empty_cmp;   /* = / != against an empty constant */
    int empty_right; /* the empty constant is on the right */
    int like_const;  /* the pattern is a constant (wrapped at compile time) */
} cmp_t;

/* One comparison of two scalar values. */
static rules_truth_t cmp1(arena_t *a, const cmp_t *c, bs_value_t l, bs_value_t r)
{
    int unknown = 0, d;
    switch (c->n->op) {
    case RULES_EQ:
    case RULES_NEQ: {
        int eq;
        if (c->empty_cmp) {
            bs_value_t x = c->empty_right ? l : r;
            eq = is_empty(x);
        } else if (c->n->op == RULES_EQ) {
            if (l.type == BS_VAL_NULL || r.type == BS_VAL_NULL)
                return RULES_FALSE;
            d = compare(l, r, &unknown);
            eq = d == 0;
        } else {
            if (l.type == BS_VAL_NULL || r.type == BS_VAL_NULL)
                eq = l.type == r.type;
            else {
                d = compare(l, r, &unknown);
                eq = d == 0;
            }
        }
        if (unknown)
            return RULES_UNKNOWN;
        return (c->n->op == RULES_EQ) == eq ? RULES_TRUE : RULES_FALSE;
    }
    case RULES_GT:
    case RULES_GTE:
    case RULES_LT:
    case RULES_LTE:
        if (l.type == BS_VAL_NULL || r.type == BS_VAL_NULL)
            return RULES_FALSE;
        d = compare(l, r, &unknown);
        if (unknown)
            return RULES_UNKNOWN;
        switch (c->n->op) {
        case RULES_GT:
            return d > 0 ? RULES_TRUE : RULES_FALSE;
        case RULES_GTE:
            return d >= 0 ? RULES_TRUE : RULES_FALSE;
        case RULES_LT:
            return d < 0 ? RULES_TRUE : RULES_FALSE;
        default:
            return d <= 0 ? RULES_TRUE : RULES_FALSE;
        }
    case RULES_LIKE:
    case RULES_NLIKE: {
        /* The pattern. */
        if (r.type == BS_VAL_NULL)
            return RULES_FALSE;
        size_t rn;
        const char *rs = like_text(a, r, &rn);
        if (rs == NULL)
            return RULES_UNKNOWN;
        const char *pat;
        size_t pn;
        if (c->like_const && r.type == BS_VAL_TEXT && memchr(rs, '%', rn) != NULL) {
            pat = rs;
            pn = rn;
        } else {
            buf_t w;
            buf_init(&w, a);
            buf_putc(&w, '%');
            for (size_t i = 0; i < rn; i++) {
                /* Constants are escaped; a column's value goes in as it is. */
                if (c->like_const && r.type == BS_VAL_TEXT && (rs[i] == '_' || rs[i] == '\\'))
                    buf_putc(&w, '\\');
                buf_putc(&w, rs[i]);
            }
            buf_putc(&w, '%');
            if (w.oom)
                return RULES_UNKNOWN;
            pat = w.data;
            pn = w.len;
        }
        if (l.type == BS_VAL_NULL) {
            if (c->n->op == RULES_LIKE)
                return RULES_FALSE;
            l = bs_val_text("", 0);
        }
        size_t ln;
        const char *ls = like_text(a, l, &ln);
        if (ls == NULL)
            return RULES_UNKNOWN;
        /* SQLite reads invalid UTF-8 its own way: leave such text to it. */
        if (!util_valid_utf8(ls, ln) || !util_valid_utf8(pat, pn))
            return RULES_UNKNOWN;
        int m = rules_like(ls, ln, pat, pn);
        return (c->n->op == RULES_LIKE) == m ? RULES_TRUE : RULES_FALSE;
    }
    }
    return RULES_UNKNOWN;
}

static rules_truth_t combine(rules_truth_t acc, rules_truth_t t, int any)
{
    if (any) /* TRUE wins, then UNKNOWN */
        return acc == RULES_TRUE || t == RULES_TRUE         ? RULES_TRUE
               : acc == RULES_UNKNOWN || t == RULES_UNKNOWN ? RULES_UNKNOWN
                                                            : RULES_FALSE;
    return acc == RULES_FALSE || t == RULES_FALSE       ? RULES_FALSE
           : acc == RULES_UNKNOWN || t == RULES_UNKNOWN ? RULES_UNKNOWN
                                                        : RULES_TRUE;
}

/* Right side innermost: for one left value, over the right's values. */
static rules_truth_t over_right(arena_t *a, const cmp_t *c, bs_value_t l, const rules_evalue_t *r)
{
    if (!r->multi)
        return cmp1(a, c, l, r->value);
    if (r->nvalues == 0 && !c->n->any && rules_op_needs_item(c->n->op))
        return RULES_FALSE;
    rules_truth_t acc = c->n->any ? RULES_FALSE : RULES_TRUE;
    for (size_t i = 0; i < r->nvalues; i++) {
        acc = combine(acc, cmp1(a, c, l, r->values[i]), c->n->any);
        if (acc == (c->n->any ? RULES_TRUE : RULES_FALSE))
            break;
    }
    return acc;
}

static int operand(const rules_evaluator_t *ev, arena_t *a, const rules_operand_t *o, rules_evalue_t *out)
{
    memset(out, 0, sizeof(*out));
    out->is_const = 1;
    switch (o->kind) {
    case RULES_LIT_STRING:
        out->value = bs_val_text(o->name, o->len);
        break;
    case RULES_LIT_NUMBER:
        out->value = o->num == floor(o->num) && fabs(o->num) < 9e15 ? bs_val_int((int64_t)o->num)
                                                                    : bs_val_double(o->num);
        break;
    case RULES_LIT_BOOL:
        out->value = bs_val_int(o->boolean);
        break;
    case RULES_LIT_NULL:
        out->value = bs_val_null();
        break;
    case RULES_LIT_FUNC:
        return rules_func_eval(ev, a, o->call, out);
    case RULES_LIT_IDENT:
        if (o->name[0] == '@' && rules_macro(a, ev->now_ms, o->name, o->len, &out->value) == 0)
            break;
        out->is_const = 0; /* a column unless the lookup says otherwise */
        if (ev->lookup == NULL || ev->lookup(ev->ud, a, o->name, o->len, o->mods, out) != 0)
            return -1;
        break;
    }
    if ((o->mods & RULES_MOD_LOWER) && !out->unknown) {
        size_t n = out->multi ? out->nvalues : 1;
        bs_value_t *vals = arena_alloc(a, (n ? n : 1) * sizeof(*vals));
        if (vals == NULL)
            return -1;
        for (size_t i = 0; i < n; i++) {
            bs_value_t v = out->multi ? out->values[i] : out->value;
            if (v.type == BS_VAL_INT || v.type == BS_VAL_DOUBLE) {
                out->unknown = 1; /* LOWER() turns numbers into text */
                return 0;
            }
            if (v.type == BS_VAL_TEXT) {
                char *s = arena_strndup(a, v.s, v.n);
                if (s == NULL)
                    return -1;
                for (size_t k = 0; k < v.n; k++)
                    s[k] = (char)lower_ascii((unsigned char)s[k]);
                v.s = s;
            }
            vals[i] = v;
        }
        if (out->multi)
            out->values = vals;
        else
            out->value = vals[0];
    }
    return 0;
}

/* A JSON path's form for this comparison, as rules_sql.c's json_form picks it: the
 * value against a number constant only when it is a number, against a text constant
 * only when it is a string (else NULL); in LIKE only a string. Returns -1 where the
 * SQL compares text forms or a pattern (the database decides). */
static int json_form(rules_evalue_t *s, const rules_evalue_t *o, int like, int left, int empty_cmp)
{
    if (!s->json)
        return 0;
    if (like) {
        if (!left)
            return -1;
        if (s->value.type != BS_VAL_TEXT)
            s->value = bs_val_null();
        return 0;
    }
    if (!o->is_const || o->multi)
        return -1;
    if (empty_cmp || o->value.type == BS_VAL_NULL)
        return 0;
    if (vclass(o->value) != vclass(s->value))
        s->value = bs_val_null();
    return 0;
}

static rules_truth_t eval_cmp(const rules_evaluator_t *ev, arena_t *a, const rules_node_t *n)
{
    rules_evalue_t l, r;
    if (operand(ev, a, &n->lhs, &l) != 0 || operand(ev, a, &n->rhs, &r) != 0)
        return RULES_FALSE;
    if (l.unknown || r.unknown)
        return RULES_UNKNOWN;
    cmp_t c = {.n = n};
    int like = n->op == RULES_LIKE || n->op == RULES_NLIKE;
    c.like_const = r.is_const;
    if (n->op == RULES_EQ || n->op == RULES_NEQ) {
        int er = r.is_const && !r.multi && is_empty(r.value);
        int el = l.is_const && !l.multi && is_empty(l.value);
        c.empty_cmp = er || el;
        c.empty_right = er;
    }
    if ((l.json || r.json) &&
        (json_form(&l, &r, like, 1, c.empty_cmp) != 0 || json_form(&r, &l, like, 0, c.empty_cmp) != 0))
        return RULES_UNKNOWN;
    if (!l.multi)
        return over_right(a, &c, l.value, &r);
    if (l.nvalues == 0 && !n->any && rules_op_needs_item(n->op))
        return RULES_FALSE;
    rules_truth_t acc = n->any ? RULES_FALSE : RULES_TRUE;
    for (size_t i = 0; i < l.nvalues; i++) {
        acc = combine(acc, over_right(a, &c, l.values[i], &r), n->any);
        if (acc == (n->any ? RULES_TRUE : RULES_FALSE))
            break;
    }
    return acc;
}

rules_truth_t rules_eval(const rules_evaluator_t *ev, arena_t *arena, const rules_node_t *node)
{
    if (node == NULL)
        return RULES_TRUE;
    if (node->kind == RULES_N_CMP)
        return eval_cmp(ev, arena, node);
    rules_truth_t l = rules_eval(ev, arena, node->left);
    int any = node->kind == RULES_N_OR;
    if (l == (any ? RULES_TRUE : RULES_FALSE))
        return l;
    return combine(l, rules_eval(ev, arena, node->right), any);
}
