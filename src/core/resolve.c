#include "core/resolve.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "rules/dialect.h"

/* The dialect of the statement ctx compiles into. */
static const dialect_t *dia(const resolve_ctx_t *ctx)
{
    return dialect_get(ctx->compiler->dialect);
}

bs_value_t resolve_json_scalar(const json_t *v)
{
    if (json_is_string(v))
        return bs_val_text(json_string_value(v), json_string_length(v));
    if (json_is_integer(v))
        return bs_val_int(json_integer_value(v));
    if (json_is_real(v))
        return bs_val_double(json_real_value(v));
    if (json_is_true(v))
        return bs_val_int(1);
    if (json_is_false(v))
        return bs_val_int(0);
    return bs_val_null();
}

/* A request value (auth field, body, query, header) as a constant operand. `what`
 * names a client-supplied value (NULL: the stored auth record): its arrays are
 * bounded, as each one is a table the statement scans per row. */
static int value_operand(const json_t *v, unsigned mods, arena_t *a, rules_resolved_t *out, bs_error_t *err,
                         const char *what)
{
    out->is_value = 1;
    if (mods & RULES_MOD_ISSET) {
        out->value = bs_val_int(v != NULL);
        return 0;
    }
    if (json_is_array(v)) {
        if (mods & RULES_MOD_LENGTH) {
            out->value = bs_val_int((int64_t)json_array_size(v));
            return 0;
        }
        if (what != NULL && json_array_size(v) > RESOLVE_MAX_ARRAY) {
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         "The value of \"%s\" has %zu items, more than a rule can check (limit %d).", what,
                         json_array_size(v), RESOLVE_MAX_ARRAY);
            return -1;
        }
        out->multi = 1;
        out->nvalues = json_array_size(v);
        out->values = arena_alloc(a, (out->nvalues + 1) * sizeof(bs_value_t));
        if (out->values == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        for (size_t i = 0; i < out->nvalues; i++)
            out->values[i] = resolve_json_scalar(json_array_get(v, i));
        return 0;
    }
    out->value = resolve_json_scalar(v);
    if (mods & RULES_MOD_LENGTH)
        out->value = bs_val_int(json_is_string(v) ? (int64_t)json_string_length(v) : 0);
    return 0;
}

static int path_error(bs_error_t *err, const char *fmt, const char *name)
{
    bs_error_set(err, BS_ERR_BAD_REQUEST, fmt, name);
    return -1;
}

int resolve_json_segments(const char *path, size_t len, dialect_json_seg_t *segs, size_t *n, const char *full,
                          bs_error_t *err)
{
    size_t pos = 0;
    *n = 0;
    for (;;) {
        const char *seg = path + pos;
        const char *dot = memchr(seg, '.', len - pos);
        size_t k = dot ? (size_t)(dot - seg) : len - pos;
        if (*n == RESOLVE_MAX_JSON_SEGS)
            return path_error(err, "Invalid filter: the JSON path in \"%s\" is too deep (limit 16 keys).",
                              full);
        if (k == 0)
            return path_error(err, "Invalid filter: the JSON path in \"%s\" has an empty key.", full);
        if (k > RESOLVE_MAX_JSON_KEY)
            return path_error(
                err, "Invalid filter: a key of the JSON path in \"%s\" is too long (limit 100).", full);
        int digits = 1;
        for (size_t i = 0; i < k; i++) {
            char ch = seg[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '_' || ch == '-' || ch == '@' || ch == '#'))
                return path_error(err,
                                  "Invalid filter: a key of the JSON path in \"%s\" may hold only letters, "
                                  "digits, _ - @ and #.",
                                  full);
            if (ch < '0' || ch > '9')
                digits = 0;
        }
        if (digits && k > 9)
            return path_error(err, "Invalid filter: an array index in \"%s\" is too large.", full);
        segs[*n].key = seg;
        segs[*n].n = k;
        segs[*n].is_index = digits;
        (*n)++;
        if (dot == NULL)
            return 0;
        pos += k + 1;
    }
}

const json_t *resolve_json_walk(const json_t *v, const dialect_json_seg_t *segs, size_t n)
{
    for (size_t i = 0; i < n && v != NULL; i++) {
        if (segs[i].is_index) {
            size_t idx = (size_t)strtoul(segs[i].key, NULL, 10);
            v = json_is_array(v) ? json_array_get(v, idx) : NULL;
        } else if (json_is_object(v)) {
            char key[RESOLVE_MAX_JSON_KEY + 1];
            memcpy(key, segs[i].key, segs[i].n);
            key[segs[i].n] = '\0';
            v = json_object_get(v, key);
        } else {
            v = NULL;
        }
    }
    return v;
}

static const field_t *visible_field(resolve_ctx_t *ctx, const collection_t *c, const char *seg, size_t n,
                                    const char *full, bs_error_t *err)
{
    const field_t *f = collection_field_n(c, seg, n);
    if (f == NULL) {
        path_error(err, "Invalid filter: unknown field \"%s\".", full);
        return NULL;
    }
    if ((f->hidden || f->type == FIELD_PASSWORD) && !ctx->trusted) {
        path_error(err, "Invalid filter: \"%s\" is a hidden field and cannot be used to filter or sort.",
                   full);
        return NULL;
    }
    if (f->type == FIELD_PASSWORD || strcmp(f->name, "tokenKey") == 0) {
        path_error(err, "Invalid filter: \"%s\" cannot be used to filter or sort.", full);
        return NULL;
    }
    return f;
}

/* A client's filter reaches the collection target (row `talias`): appends to gate
 * the condition under which the caller may see that row, i.e. target's list rule
 * compiled as trusted text for that row. A null rule admits only superusers, so the
 * path is refused outright (PocketBase does the same). Rules themselves (trusted)
 * do not get here. */
static int gate_hop(resolve_ctx_t *ctx, arena_t *a, const collection_t *target, const char *talias,
                    const char *full, buf_t *gate, bs_error_t *err)
{
    if (ctx->trusted)
        return 0;
    if (++ctx->compiler->joins > RESOLVE_MAX_JOINS) {
        bs_error_set(err, BS_ERR_BAD_REQUEST,
                     "Invalid filter: the filter and sort go through too many relations (limit %d).",
                     RESOLVE_MAX_JOINS);
        return -1;
    }
    const char *rule = target->rules[RULE_LIST];
    if (rule == NULL) {
        bs_error_set(err, BS_ERR_BAD_REQUEST,
                     "Invalid filter: \"%s\" reaches the collection \"%s\", which only superusers can list.",
                     full, target->name);
        return -1;
    }
    if (rule[0] == '\0')
        return 0;
    resolve_ctx_t sub = *ctx;
    sub.coll = target;
    sub.alias = talias;
    sub.trusted = 1;
    sub.naliases = 0;
    buf_puts(gate, gate->len ? " AND " : "");
    return resolve_compile(&sub, a, rule, strlen(rule), gate, err);
}

/* An auth record's e-mail for a client's filter: NULL unless it is public or the
 * caller's own record (what the caller would see of it in the record's JSON). */
static const char *email_guard(resolve_ctx_t *ctx, arena_t *a, const collection_t *c, const char *alias,
                               const char *col)
{
    buf_t b;
    buf_init(&b, a);
    buf_printf(&b, "(CASE WHEN \"%s\".\"emailVisibility\" = %s", alias, dia(ctx)->true_lit);
    const char *aid = ctx->who->auth ? json_string_value(json_object_get(ctx->who->auth, "id")) : NULL;
    if (aid != NULL && ctx->who->auth_coll == c) {
        buf_printf(&b, " OR \"%s\".\"id\" = ", alias);
        if (rules_add_param(ctx->compiler, a, bs_val_text(aid, strlen(aid)), &b) != 0)
            return NULL;
    }
    buf_printf(&b, " THEN %s END)", col);
    return b.oom ? NULL : b.data;
}

/* "coll_via_field": the records of coll whose relation `field` points at the current
 * record. Returns 1 and fills bc and bf, 0 when seg is not of that form, -1 on error. */
static int back_relation(resolve_ctx_t *ctx, const collection_t *cur, const char *seg, size_t n,
                         const char *full, const collection_t **bc, const field_t **bf, bs_error_t *err)
{
    const char *via = NULL;
    for (size_t i = 1; i + 5 < n; i++)
        if (memcmp(seg + i, "_via_", 5) == 0)
            via = seg + i; /* the last one: collection names may hold "_via_" */
    if (via == NULL)
        return 0;
    *bc = schema_find_n(ctx->schema, seg, (size_t)(via - seg));
    *bf = *bc ? collection_field_n(*bc, via + 5, n - (size_t)(via + 5 - seg)) : NULL;
    if (*bf == NULL || (*bf)->type != FIELD_RELATION || strcmp((*bf)->collection_id, cur->id) != 0)
        return path_error(err, "Invalid filter: \"%s\" names no relation back to this collection.", full);
    if ((*bf)->hidden && !ctx->trusted)
        return path_error(err, "Invalid filter: \"%s\" goes through a hidden field.", full);
    return 1;
}

/* The rest of a field path inside JSON column col ("meta.a.0" after "meta."), of
 * the row reached after `hops` relations (from/where/gate as field_path_from built
 * them). Each of the value's forms (dialect_json_views_t) is gated and wrapped the
 * same way. Modifiers do not apply (PocketBase reads them as part of the key). */
static int json_path(resolve_ctx_t *ctx, arena_t *a, const char *col, const char *path, size_t plen,
                     const char *full, unsigned mods, int hops, int multi, buf_t *from, buf_t *where,
                     buf_t *gate, rules_resolved_t *out, bs_error_t *err)
{
    dialect_json_seg_t segs[RESOLVE_MAX_JSON_SEGS];
    size_t n;
    if (mods != 0)
        return path_error(err,
                          "Invalid filter: \"%s\": modifiers (:lower, :length, :each) do not apply to JSON "
                          "paths.",
                          full);
    if (resolve_json_segments(path, plen, segs, &n, full, err) != 0)
        return -1;
    dialect_json_views_t v;
    if (dialect_json_path(dia(ctx), ctx->compiler, a, col, segs, n, &v) != 0)
        goto oom;
    const char **forms[4] = {&v.value, &v.num, &v.text, &v.sort};
    for (int i = 0; i < 4; i++) {
        const char *e = *forms[i];
        if (e != NULL && gate->len > 0)
            e = arena_printf(a, "(CASE WHEN %s THEN %s END)", gate->data, e);
        if (e != NULL && hops > 0 && !multi)
            e = arena_printf(a, "(SELECT %s FROM %s WHERE %s)", e, from->data, where->data);
        if (e == NULL)
            goto oom;
        *forms[i] = e;
    }
    if (from->oom || where->oom || gate->oom)
        goto oom;
    out->sql = v.value;
    out->json_num = v.num;
    out->json_text = v.text;
    out->sort_sql = v.sort;
    if (multi) {
        out->multi = 1;
        out->from = from->data;
        out->where = where->len ? where->data : dia(ctx)->true_lit;
    }
    return 0;
oom:
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return -1;
}

/* "lon" or "lat" when f is a geoPoint and rest[0..n) names one, else NULL. */
static const char *geo_member(const field_t *f, const char *rest, size_t n)
{
    if (f->type != FIELD_GEOPOINT || n != 3)
        return NULL;
    return memcmp(rest, "lon", 3) == 0 ? "lon" : memcmp(rest, "lat", 3) == 0 ? "lat" : NULL;
}

/* A function's argument (rules_func.c) asks for a number or a date: other fields
 * are a 400, so that no backend is asked to read text as one (PostgreSQL would
 * fail the statement where SQLite reads 0). */
static int function_arg_mismatch(const field_t *f, const char *member, unsigned mods, const char *full,
                                 bs_error_t *err)
{
    if ((mods & RULES_MOD_NUMERIC) && f->type != FIELD_NUMBER && member == NULL) {
        path_error(err,
                   "Invalid filter: geoDistance takes numbers: \"%s\" is neither a number field nor a "
                   "geoPoint's lon or lat.",
                   full);
        return 1;
    }
    if ((mods & RULES_MOD_DATE) && f->type != FIELD_DATE && f->type != FIELD_AUTODATE) {
        path_error(err, "Invalid filter: strftime's time value \"%s\" is not a date field.", full);
        return 1;
    }
    return 0;
}

/* Resolves a dotted field path starting at collection `start` whose row is
 * `start_alias` in the statement. Every hop of a client's filter is gated by the
 * reached collection's list rule: the rows it may not list read as NULL. */
static int field_path_from(resolve_ctx_t *ctx, arena_t *a, const collection_t *start, const char *start_alias,
                           const char *name, size_t len, unsigned mods, rules_resolved_t *out,
                           bs_error_t *err)
{
    const char *full = arena_strndup(a, name, len);
    const collection_t *cur = start;
    const char *cur_alias = start_alias;
    buf_t from, where, gate;
    buf_init(&from, a);
    buf_init(&where, a);
    buf_init(&gate, a);
    int hops = 0, multi = 0;
    size_t pos = 0;
    for (;;) {
        const char *seg = name + pos;
        const char *dot = memchr(seg, '.', len - pos);
        size_t n = dot ? (size_t)(dot - seg) : len - pos;
        const collection_t *bc = NULL;
        const field_t *bf = NULL;
        int back = 0;
        if (dot != NULL && collection_field_n(cur, seg, n) == NULL) {
            back = back_relation(ctx, cur, seg, n, full, &bc, &bf, err);
            if (back < 0)
                return -1;
        }
        if (back) {
            if (++hops > 6)
                return path_error(err, "Invalid filter: \"%s\" goes through too many relations (max 6).",
                                  full);
            int t = ++ctx->compiler->alias_seq;
            char *talias = arena_printf(a, "__r%d", t);
            char *cond = NULL;
            if (talias == NULL)
                goto oom;
            if (field_is_multi(bf)) {
                buf_t e;
                buf_init(&e, a);
                char *col = arena_printf(a, "\"%s\".\"%s\"", talias, bf->name);
                char *je = arena_printf(a, "__j%d", t);
                if (col == NULL || je == NULL)
                    goto oom;
                dialect_json_elements(dia(ctx), &e, col, je);
                cond =
                    e.oom
                        ? NULL
                        : arena_printf(a, "EXISTS (SELECT 1 FROM %s WHERE \"%s\".\"value\" = \"%s\".\"id\")",
                                       e.data, je, cur_alias);
            } else
                cond = arena_printf(a, "\"%s\".\"%s\" = \"%s\".\"id\"", talias, bf->name, cur_alias);
            if (cond == NULL)
                goto oom;
            if (hops == 1) {
                buf_printf(&from, "\"%s\" AS \"%s\"", bc->name, talias);
                buf_puts(&where, cond);
            } else {
                buf_printf(&from, " JOIN \"%s\" AS \"%s\" ON %s", bc->name, talias, cond);
            }
            multi = 1;
            if (gate_hop(ctx, a, bc, talias, full, &gate, err) != 0)
                return -1;
            cur = bc;
            cur_alias = talias;
            pos += n + 1;
            continue;
        }
        const field_t *f = visible_field(ctx, cur, seg, n, full, err);
        if (f == NULL)
            return -1;
        const char *col = arena_printf(a, "\"%s\".\"%s\"", cur_alias, f->name);
        if (col == NULL)
            goto oom;
        /* A geoPoint's "lon" or "lat" is its last segment: a number. */
        const char *member = dot != NULL ? geo_member(f, dot + 1, len - pos - n - 1) : NULL;
        if (member != NULL) {
            col = arena_printf(a, dia(ctx)->geo_member_fmt, col, member);
            if (col == NULL)
                goto oom;
            dot = NULL;
        }
        if (dot != NULL && (f->type == FIELD_JSON || f->type == FIELD_GEOPOINT))
            return json_path(ctx, a, col, name + pos + n + 1, len - pos - n - 1, full, mods, hops, multi,
                             &from, &where, &gate, out, err);
        if (dot == NULL && function_arg_mismatch(f, member, mods, full, err))
            return -1;
        if (dot == NULL) {
            /* The last segment: the value itself. */
            const char *plain = member == NULL ? col : NULL;
            if (!ctx->trusted && cur->type == COLL_AUTH && strcmp(f->name, "email") == 0) {
                col = email_guard(ctx, a, cur, cur_alias, col);
                if (col == NULL)
                    goto oom;
            }
            const char *expr = col;
            if (field_is_multi(f)) {
                if (mods & RULES_MOD_LENGTH) {
                    const char *len_sql = arena_printf(a, dia(ctx)->json_length_fmt, col);
                    expr = len_sql ? arena_printf(a, "COALESCE(%s, 0)", len_sql) : NULL;
                } else {
                    char *je = arena_printf(a, "__j%d", ++ctx->compiler->alias_seq);
                    if (je == NULL)
                        goto oom;
                    /* CROSS JOIN: PostgreSQL's JOIN needs an ON, and the elements are
                     * of the row before them anyway. */
                    if (hops > 0)
                        buf_puts(&from, " CROSS JOIN ");
                    dialect_json_elements(dia(ctx), &from, col, je);
                    expr = arena_printf(a, "\"%s\".\"value\"", je);
                    multi = 1;
                }
            } else if (mods & RULES_MOD_LENGTH) {
                const char *t = arena_printf(a, dia(ctx)->as_text_fmt, col);
                expr = t ? arena_printf(a, "length(COALESCE(%s, ''))", t) : NULL;
            }
            if (expr != NULL && gate.len > 0)
                expr = arena_printf(a, "(CASE WHEN %s THEN %s END)", gate.data, expr);
            if (expr == NULL || from.oom || where.oom || gate.oom)
                goto oom;
            if (hops == 0 && !multi) {
                out->sql = expr;
                /* Every column but a JSON field's is made NOT NULL (schema_ddl.c); a
                 * view collection's columns are whatever its query gives. */
                out->not_null = expr == plain && cur->type != COLL_VIEW && f->type != FIELD_JSON;
                return 0;
            }
            if (multi) {
                out->multi = 1;
                out->sql = expr;
                out->from = from.data;
                out->where = where.len ? where.data : dia(ctx)->true_lit;
                return 0;
            }
            out->sql = arena_printf(a, "(SELECT %s FROM %s WHERE %s)", expr, from.data, where.data);
            return out->sql ? 0 : -1;
        }
        if (f->type != FIELD_RELATION)
            return path_error(err, "Invalid filter: \"%s\" goes through a field that is not a relation.",
                              full);
        const collection_t *target = schema_find(ctx->schema, f->collection_id);
        if (target == NULL)
            return path_error(err, "Invalid filter: the relation in \"%s\" points to a missing collection.",
                              full);
        if (++hops > 6)
            return path_error(err, "Invalid filter: \"%s\" goes through too many relations (max 6).", full);
        int t = ++ctx->compiler->alias_seq;
        char *talias = arena_printf(a, "__r%d", t);
        if (talias == NULL)
            goto oom;
        if (field_is_multi(f)) {
            multi = 1;
            char *je = arena_printf(a, "__j%d", t);
            if (je == NULL)
                goto oom;
            if (hops > 1)
                buf_puts(&from, " CROSS JOIN ");
            dialect_json_elements(dia(ctx), &from, col, je);
            buf_printf(&from, " JOIN \"%s\" AS \"%s\" ON \"%s\".\"id\" = \"%s\".\"value\"", target->name,
                       talias, talias, je);
        } else if (hops == 1) {
            buf_printf(&from, "\"%s\" AS \"%s\"", target->name, talias);
            buf_printf(&where, "\"%s\".\"id\" = %s", talias, col);
        } else {
            buf_printf(&from, " JOIN \"%s\" AS \"%s\" ON \"%s\".\"id\" = %s", target->name, talias, talias,
                       col);
        }
        if (gate_hop(ctx, a, target, talias, full, &gate, err) != 0)
            return -1;
        cur = target;
        cur_alias = talias;
        pos += n + 1;
    }
oom:
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return -1;
}

static int field_path(resolve_ctx_t *ctx, arena_t *a, const char *name, size_t len, unsigned mods,
                      rules_resolved_t *out, bs_error_t *err)
{
    return field_path_from(ctx, a, ctx->coll, ctx->alias, name, len, mods, out, err);
}

/* Wraps a path resolved from the row `alias` of `c` (selected by `cond`) into an
 * operand of the outer statement: a scalar subquery, or a multi-valued source. */
static int wrap_source(arena_t *a, const collection_t *c, const char *alias, const char *cond,
                       int force_multi, rules_resolved_t *r, rules_resolved_t *out, bs_error_t *err)
{
    if (!r->multi && !force_multi) {
        out->sql =
            arena_printf(a, "(SELECT %s FROM \"%s\" AS \"%s\" WHERE %s)", r->sql, c->name, alias, cond);
    } else {
        out->multi = 1;
        out->sql = r->sql;
        out->from = r->multi ? arena_printf(a, "\"%s\" AS \"%s\", %s", c->name, alias, r->from)
                             : arena_printf(a, "\"%s\" AS \"%s\"", c->name, alias);
        out->where = r->multi ? arena_printf(a, "%s AND %s", cond, r->where) : cond;
        if (out->from == NULL || out->where == NULL)
            goto oom;
    }
    if (out->sql == NULL)
        goto oom;
    /* A JSON path's typed forms (rules_resolved_t) go the same way as its value. */
    if (r->json_num != NULL) {
        const char *const in[3] = {r->json_num, r->json_text, r->sort_sql};
        const char **dst[3] = {&out->json_num, &out->json_text, &out->sort_sql};
        for (int i = 0; i < 3; i++) {
            *dst[i] = out->multi ? in[i]
                                 : arena_printf(a, "(SELECT %s FROM \"%s\" AS \"%s\" WHERE %s)", in[i],
                                                c->name, alias, cond);
            if (*dst[i] == NULL)
                goto oom;
        }
    }
    return 0;
oom:
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return -1;
}

/* @collection.name[:alias].path: the values of path over every record of name.
 * Only rules (trusted text) may use it; user filters may not read other collections. */
static int collection_ref(resolve_ctx_t *ctx, arena_t *a, const char *name, size_t len, unsigned mods,
                          rules_resolved_t *out, bs_error_t *err)
{
    const char *full = arena_strndup(a, name, len);
    if (!ctx->trusted)
        return path_error(err, "Invalid filter: \"%s\": @collection references may only be used in rules.",
                          full);
    const char *p = name + 12, *end = name + len;
    const char *dot = memchr(p, '.', (size_t)(end - p));
    if (dot == NULL || dot + 1 >= end)
        return path_error(err, "Invalid filter: \"%s\" must be @collection.name.field.", full);
    const char *colon = memchr(p, ':', (size_t)(dot - p));
    size_t cn = (size_t)((colon ? colon : dot) - p);
    const collection_t *target = schema_find_n(ctx->schema, p, cn);
    if (target == NULL)
        return path_error(err, "Invalid filter: \"%s\" names an unknown collection.", full);
    if (colon != NULL) {
        /* A named alias: one shared row for the whole expression (see resolve_compile). */
        size_t an = (size_t)(dot - colon - 1);
        char *aname = arena_strndup(a, colon + 1, an);
        int k;
        if (aname == NULL || an == 0)
            return path_error(err, "Invalid filter: \"%s\" has an empty alias.", full);
        for (k = 0; k < ctx->naliases; k++)
            if (strcmp(ctx->aliases[k].name, aname) == 0)
                break;
        if (k == ctx->naliases) {
            if (k == (int)(sizeof(ctx->aliases) / sizeof(ctx->aliases[0])))
                return path_error(err, "Invalid filter: too many @collection aliases (max 8) at \"%s\".",
                                  full);
            ctx->aliases[k].name = aname;
            ctx->aliases[k].coll = target;
            ctx->naliases++;
        } else if (ctx->aliases[k].coll != target) {
            return path_error(
                err, "Invalid filter: the alias in \"%s\" is already used for another collection.", full);
        }
        char *sql_alias = arena_printf(a, "__cal%d_%d", ctx->cal_base, k);
        return sql_alias ? field_path_from(ctx, a, target, sql_alias, dot + 1, (size_t)(end - dot - 1), mods,
                                           out, err)
                         : (bs_error_set(err, BS_ERR_NOMEM, NULL), -1);
    }
    char *alias = arena_printf(a, "__c%d", ++ctx->compiler->alias_seq);
    rules_resolved_t r;
    memset(&r, 0, sizeof(r));
    if (alias == NULL ||
        field_path_from(ctx, a, target, alias, dot + 1, (size_t)(end - dot - 1), mods, &r, err) != 0)
        return alias == NULL ? (bs_error_set(err, BS_ERR_NOMEM, NULL), -1) : -1;
    return wrap_source(a, target, alias, dia(ctx)->true_lit, 1, &r, out, err);
}

/* An @request.auth value that is not there (no signed-in record, or no such field):
 * NULL, as PocketBase has it. It equals '' and null (`= ''` matches NULL), but it is
 * no LIKE pattern and no bound: `x ~ @request.auth.id` must not become `x ~ ''`,
 * which matches every value. */
static int absent_auth(unsigned mods, rules_resolved_t *out)
{
    out->is_value = 1;
    out->value = (mods & (RULES_MOD_ISSET | RULES_MOD_LENGTH)) ? bs_val_int(0) : bs_val_null();
    return 0;
}

/* @request.auth.rel.field: a path through the signed-in record's relations. */
static int auth_path(resolve_ctx_t *ctx, arena_t *a, const char *name, size_t len, unsigned mods,
                     rules_resolved_t *out, bs_error_t *err)
{
    const char *id = json_string_value(json_object_get(ctx->who->auth, "id"));
    if (ctx->who->auth == NULL || ctx->who->auth_coll == NULL || id == NULL)
        return absent_auth(mods, out);
    char *alias = arena_printf(a, "__a%d", ++ctx->compiler->alias_seq);
    buf_t cond;
    buf_init(&cond, a);
    if (alias == NULL)
        goto oom;
    buf_printf(&cond, "\"%s\".\"id\" = ", alias);
    if (rules_add_param(ctx->compiler, a, bs_val_text(id, strlen(id)), &cond) != 0)
        goto oom;
    rules_resolved_t r;
    memset(&r, 0, sizeof(r));
    if (field_path_from(ctx, a, ctx->who->auth_coll, alias, name, len, mods, &r, err) != 0)
        return -1;
    return wrap_source(a, ctx->who->auth_coll, alias, cond.data, 0, &r, out, err);
oom:
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return -1;
}

/* @request.body.field:changed: whether the request sets field to a value other than
 * the stored one (false when the body does not have it). */
static int body_changed(resolve_ctx_t *ctx, arena_t *a, const char *key, size_t n, rules_resolved_t *out,
                        bs_error_t *err)
{
    const char *k = arena_strndup(a, key, n);
    const json_t *v = k && ctx->body ? json_object_get(ctx->body, k) : NULL;
    const field_t *f = k ? collection_field(ctx->coll, k) : NULL;
    if (f == NULL)
        return path_error(err, "Invalid filter: \"%s\" is not a field of the collection (:changed).",
                          k ? k : "");
    if (v == NULL) {
        out->is_value = 1;
        out->value = bs_val_int(0);
        return 0;
    }
    bs_value_t val;
    if (json_is_array(v) || json_is_object(v)) {
        char *d = json_dumps(v, JSON_COMPACT);
        char *s = d ? arena_strdup(a, d) : NULL;
        free(d);
        if (s == NULL)
            goto oom;
        val = bs_val_text(s, strlen(s));
    } else {
        val = resolve_json_scalar(v);
    }
    buf_t b;
    buf_init(&b, a);
    buf_puts(&b, "(CASE WHEN ");
    if (rules_add_param(ctx->compiler, a, val, &b) != 0)
        goto oom;
    buf_printf(&b, " %s \"%s\".\"%s\" THEN 0 ELSE 1 END)", dia(ctx)->is_not_distinct, ctx->alias, f->name);
    if (b.oom)
        goto oom;
    out->sql = b.data;
    return 0;
oom:
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return -1;
}

static int starts(const char *name, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(name, prefix, n) == 0;
}

/* Looks up "a.b" in a JSON object (one level; the key may contain dots in headers). */
static const json_t *lookup(const json_t *obj, const char *key, size_t n, arena_t *a)
{
    if (obj == NULL)
        return NULL;
    char *k = arena_strndup(a, key, n);
    return k ? json_object_get(obj, k) : NULL;
}

/* @request.body.key, or a path into the body's JSON ("meta.a.0", as PocketBase
 * reads a static request value): a key holding dots wins, then the path; a path
 * that is not well-formed reads as missing, like any other absent body value. */
static const json_t *body_lookup(const json_t *body, const char *key, size_t n, arena_t *a)
{
    const json_t *v = lookup(body, key, n, a);
    const char *dot = memchr(key, '.', n);
    if (v != NULL || dot == NULL || body == NULL)
        return v;
    dialect_json_seg_t segs[RESOLVE_MAX_JSON_SEGS];
    size_t ns;
    bs_error_t ignored;
    bs_error_init(&ignored);
    if (resolve_json_segments(dot + 1, n - (size_t)(dot - key) - 1, segs, &ns, "", &ignored) != 0)
        return NULL;
    return resolve_json_walk(lookup(body, key, (size_t)(dot - key), a), segs, ns);
}

int resolve_identifier(void *ud, arena_t *arena, const char *name, size_t len, unsigned mods,
                       rules_resolved_t *out, bs_error_t *err)
{
    resolve_ctx_t *ctx = ud;
    if (name[0] != '@')
        return field_path(ctx, arena, name, len, mods, out, err);
    if (starts(name, len, "@request.auth.")) {
        const char *k = name + 14;
        size_t n = len - 14;
        if (memchr(k, '.', n) != NULL)
            return auth_path(ctx, arena, k, n, mods, out, err);
        /* A client may not read their own hidden and secret fields either (with a
         * stolen token that would extract the password hash and the token key). */
        const field_t *af = ctx->who->auth_coll ? collection_field_n(ctx->who->auth_coll, k, n) : NULL;
        if (!ctx->trusted && af != NULL &&
            (af->hidden || af->type == FIELD_PASSWORD || strcmp(af->name, "tokenKey") == 0))
            return path_error(err,
                              "Invalid filter: \"@request.auth.%s\" is a hidden field and cannot be used to "
                              "filter.",
                              af->name);
        const json_t *v = lookup(ctx->who->auth, k, n, arena);
        if (ctx->who->auth != NULL && v == NULL && !(n == 14 && memcmp(k, "collectionName", 14) == 0))
            v = NULL;
        if (ctx->who->auth_coll != NULL && n == 14 && memcmp(k, "collectionName", 14) == 0) {
            json_t *tmp = json_string(ctx->who->auth_coll->name);
            int rc = value_operand(tmp, mods, arena, out, err, NULL);
            /* The value borrows the collection name, which outlives the statement. */
            if (rc == 0 && out->value.type == BS_VAL_TEXT)
                out->value.s = ctx->who->auth_coll->name;
            json_decref(tmp);
            return rc;
        }
        if (v == NULL)
            return absent_auth(mods, out);
        return value_operand(v, mods, arena, out, err, NULL);
    }
    if (starts(name, len, "@request.body.") && (mods & RULES_MOD_CHANGED))
        return body_changed(ctx, arena, name + 14, len - 14, out, err);
    const char *what = starts(name, len, "@request.") ? arena_strndup(arena, name, len) : NULL;
    if (starts(name, len, "@request.body."))
        return value_operand(body_lookup(ctx->body, name + 14, len - 14, arena), mods, arena, out, err, what);
    if (starts(name, len, "@request.query."))
        return value_operand(lookup(ctx->who->query, name + 15, len - 15, arena), mods, arena, out, err,
                             what);
    if (starts(name, len, "@request.headers."))
        return value_operand(lookup(ctx->who->headers, name + 17, len - 17, arena), mods, arena, out, err,
                             what);
    if (len == 15 && memcmp(name, "@request.method", 15) == 0) {
        out->is_value = 1;
        out->value = bs_val_text(ctx->who->method ? ctx->who->method : "GET",
                                 strlen(ctx->who->method ? ctx->who->method : "GET"));
        return 0;
    }
    if (len == 16 && memcmp(name, "@request.context", 16) == 0) {
        out->is_value = 1;
        out->value = bs_val_text(ctx->who->context ? ctx->who->context : "default",
                                 strlen(ctx->who->context ? ctx->who->context : "default"));
        return 0;
    }
    if (starts(name, len, "@collection."))
        return collection_ref(ctx, arena, name, len, mods, out, err);
    return path_error(err, "Invalid filter: unknown identifier \"%s\".", arena_strndup(arena, name, len));
}

int resolve_compile(resolve_ctx_t *ctx, arena_t *arena, const char *text, size_t len, buf_t *out,
                    bs_error_t *err)
{
    rules_node_t *root = rules_parse(arena, text, len, NULL, err);
    if (root == NULL && err->code != BS_ERR_OK)
        return -1;
    /* A text compiled inside another (a joined collection's list rule in a client's
     * filter) shares the compiler: its resolver is put back afterwards. */
    rules_resolve_fn saved_fn = ctx->compiler->resolve;
    void *saved_ud = ctx->compiler->resolve_ud;
    ctx->compiler->resolve = resolve_identifier;
    ctx->compiler->resolve_ud = ctx;
    ctx->naliases = 0;
    ctx->cal_base = ++ctx->compiler->alias_seq;
    size_t mark = out->len;
    buf_t expr;
    buf_init(&expr, arena);
    int rc = rules_compile(ctx->compiler, arena, root, &expr, err);
    ctx->compiler->resolve = saved_fn;
    ctx->compiler->resolve_ud = saved_ud;
    if (rc != 0)
        return -1;
    if (ctx->naliases == 0) {
        buf_append(out, expr.data, expr.len);
    } else {
        /* Named aliases are joined once around the whole expression: it holds if some
         * combination of their rows makes it true. The LEFT JOIN keeps PocketBase's
         * meaning when an aliased collection is empty (its fields read as NULL). */
        buf_printf(out, "EXISTS (SELECT 1 FROM (SELECT 1) AS \"__one%d\"", ctx->cal_base);
        for (int k = 0; k < ctx->naliases; k++)
            buf_printf(out, " LEFT JOIN \"%s\" AS \"__cal%d_%d\" ON TRUE", ctx->aliases[k].coll->name,
                       ctx->cal_base, k);
        buf_printf(out, " WHERE %s)", expr.data);
    }
    if (out->oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    if (out->len - mark > RESOLVE_MAX_SQL) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid filter: the expression is too complex.");
        return -1;
    }
    return 0;
}

int resolve_check_rule(const schema_t *schema, const collection_t *coll, const char *text, arena_t *arena,
                       bs_error_t *err)
{
    rules_compiler_t comp = {0};
    comp.now_ms = util_now_ms();
    resolve_ctx_t ctx = {.schema = schema,
                         .coll = coll,
                         .alias = "_r",
                         .trusted = 1,
                         .who = &caller_anonymous,
                         .compiler = &comp};
    buf_t out;
    buf_init(&out, arena);
    return resolve_compile(&ctx, arena, text, strlen(text), &out, err);
}
