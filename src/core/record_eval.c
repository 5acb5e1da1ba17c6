/*
 * Rules checked against a record held in memory (realtime delivery): the record's
 * own fields come from its JSON, request values from the same resolver the SQL
 * compiler uses, so both paths agree on what @request.* means. Anything else (paths
 * through relations, @collection, back-relations) is left to the database.
 */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "core/record.h"
#include "rules/dialect.h"

typedef struct {
    const record_reader_t *r;
    const collection_t *c;
    const json_t *rec;
    int trusted;        /* a rule (1) or a client's filter (0, with r's rights) */
    const json_t *body; /* @request.body for a write's rule, or NULL */
} eval_ctx_t;

/* Compiles text as a rule or as a client's filter. */
static int compile_text(const eval_ctx_t *e, rules_compiler_t *comp, const char *text, buf_t *out,
                        bs_error_t *err)
{
    return e->trusted ? record_compile_rule(e->r, e->c, comp, text, e->body, out, err)
                      : record_compile_filter(e->r, e->c, comp, text, out, err);
}

/* Whether a client's filter may read the e-mail of rec (an auth record): as the
 * compiler's e-mail guard decides, public or the caller's own. */
static int email_readable(const eval_ctx_t *e)
{
    if (e->trusted || e->r->who->superuser || e->c->type != COLL_AUTH)
        return 1;
    if (json_is_true(json_object_get(e->rec, "emailVisibility")))
        return 1;
    const char *aid = e->r->who->auth ? json_string_value(json_object_get(e->r->who->auth, "id")) : NULL;
    const char *rid = json_string_value(json_object_get(e->rec, "id"));
    return aid != NULL && rid != NULL && e->r->who->auth_coll == e->c && strcmp(aid, rid) == 0;
}

static size_t utf8_chars(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            k++;
    return k;
}

/* "meta.a.0": the value inside one of the record's JSON fields, typed as stored
 * (rules_evalue_t.json), read as resolve.c's SQL reads it. Returns 1 when name is
 * such a path (out filled), 0 when it is not, -1 when the path is invalid. */
static int lookup_json_path(eval_ctx_t *e, const char *name, size_t len, unsigned mods, rules_evalue_t *out)
{
    const char *dot = memchr(name, '.', len);
    const field_t *f = dot ? collection_field_n(e->c, name, (size_t)(dot - name)) : NULL;
    if (f == NULL || (f->type != FIELD_JSON && f->type != FIELD_GEOPOINT))
        return 0;
    if (mods != 0 || (f->hidden && !e->trusted && !e->r->who->superuser))
        return -1; /* the compiler refuses these */
    dialect_json_seg_t segs[RESOLVE_MAX_JSON_SEGS];
    size_t n;
    bs_error_t err;
    bs_error_init(&err);
    if (resolve_json_segments(dot + 1, len - (size_t)(dot - name) - 1, segs, &n, "", &err) != 0)
        return -1;
    const json_t *v = resolve_json_walk(json_object_get(e->rec, f->name), segs, n);
    if (json_is_array(v) || json_is_object(v)) {
        out->unknown = 1; /* read as JSON text, which the backends write differently */
        return 1;
    }
    out->json = 1;
    out->value = resolve_json_scalar(v);
    return 1;
}

/* "field.lon" / "field.lat" of a geoPoint in the record: 1 and its number (as the
 * SQL reads it, resolve.c geo_member), 0 when name is no such path. */
static int lookup_geo_member(eval_ctx_t *e, const char *name, size_t len, unsigned mods, rules_evalue_t *out)
{
    const char *dot = memchr(name, '.', len);
    if (dot == NULL || (size_t)(name + len - dot) != 4 ||
        (memcmp(dot + 1, "lon", 3) && memcmp(dot + 1, "lat", 3)))
        return 0;
    const field_t *f = collection_field_n(e->c, name, (size_t)(dot - name));
    if (f == NULL || f->type != FIELD_GEOPOINT || (mods & ~RULES_MOD_NUMERIC) != 0)
        return 0;
    const json_t *m = json_object_get(json_object_get(e->rec, f->name), dot[2] == 'o' ? "lon" : "lat");
    if (json_is_integer(m))
        out->value = bs_val_int(json_integer_value(m));
    else if (json_is_real(m))
        out->value = bs_val_double(json_real_value(m));
    else
        out->unknown = 1;
    return 1;
}

static int lookup_field(eval_ctx_t *e, arena_t *a, const char *name, size_t len, unsigned mods,
                        rules_evalue_t *out)
{
    if (lookup_geo_member(e, name, len, mods, out))
        return 0;
    int jp = lookup_json_path(e, name, len, mods, out);
    if (jp != 0)
        return jp < 0 ? -1 : 0;
    if (memchr(name, '.', len) != NULL || (mods & (RULES_MOD_ISSET | RULES_MOD_CHANGED))) {
        out->unknown = 1;
        return 0;
    }
    const field_t *f = collection_field_n(e->c, name, len);
    if (f == NULL) {
        out->unknown = 1; /* a back-relation or an unknown name: the database decides */
        return 0;
    }
    const json_t *v = json_object_get(e->rec, f->name);
    if (field_is_multi(f)) {
        if (!json_is_array(v) && v != NULL && !json_is_null(v)) {
            out->unknown = 1;
            return 0;
        }
        size_t n = json_array_size(v);
        if (mods & RULES_MOD_LENGTH) {
            out->value = bs_val_int((int64_t)n);
            return 0;
        }
        bs_value_t *vals = arena_alloc(a, (n ? n : 1) * sizeof(*vals));
        if (vals == NULL)
            return -1;
        for (size_t i = 0; i < n; i++) {
            const json_t *x = json_array_get(v, i);
            if (json_is_string(x))
                vals[i] = bs_val_text(json_string_value(x), json_string_length(x));
            else if (json_is_integer(x))
                vals[i] = bs_val_int(json_integer_value(x));
            else {
                out->unknown = 1;
                return 0;
            }
        }
        out->multi = 1;
        out->values = vals;
        out->nvalues = n;
        return 0;
    }
    if (field_is_json(f)) {
        out->unknown = 1;
        return 0;
    }
    bs_value_t x = record_json_cell(f, v, a);
    if (strcmp(f->name, "email") == 0 && !email_readable(e))
        x = bs_val_null(); /* as the SQL reads it (see resolve.c email_guard) */
    if (mods & RULES_MOD_LENGTH) {
        if (x.type == BS_VAL_NULL)
            x = bs_val_int(0);
        else if (x.type == BS_VAL_TEXT)
            x = bs_val_int((int64_t)utf8_chars(x.s, x.n));
        else {
            out->unknown = 1;
            return 0;
        }
    }
    out->value = x;
    return 0;
}

static int lookup(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_evalue_t *out)
{
    eval_ctx_t *e = ud;
    if (name[0] != '@')
        return lookup_field(e, a, name, len, mods, out);
    /* Request values: ask the compiler's resolver; a value it returns is the same
     * constant the SQL would bind. */
    rules_compiler_t comp = {0};
    resolve_ctx_t rc = {.schema = e->r->schema,
                        .coll = e->c,
                        .alias = "_r",
                        .trusted = e->trusted || e->r->who->superuser,
                        .who = e->r->who,
                        .body = e->body,
                        .compiler = &comp};
    comp.resolve = resolve_identifier;
    comp.resolve_ud = &rc;
    rules_resolved_t res;
    memset(&res, 0, sizeof(res));
    bs_error_t err;
    bs_error_init(&err);
    if (resolve_identifier(&rc, a, name, len, mods, &res, &err) != 0)
        return -1;
    if (!res.is_value || comp.nparams > 0 || rc.naliases > 0) {
        out->unknown = 1;
        return 0;
    }
    out->is_const = 1;
    out->multi = res.multi;
    out->value = res.value;
    out->values = res.values;
    out->nvalues = res.nvalues;
    return 0;
}

/* The rule against rec's fields in place of its (deleted) row: a CTE named like the
 * collection's table shadows it for the statement. */
static int check_shadow(const eval_ctx_t *e, const char *text, bs_error_t *err)
{
    const record_reader_t *r = e->r;
    const collection_t *c = e->c;
    const json_t *rec = e->rec;
    rules_compiler_t comp = {0};
    comp.now_ms = util_now_ms();
    comp.dialect = store_conn_dialect(r->conn);
    const dialect_t *d = dialect_get(comp.dialect);
    buf_t sql, ph;
    buf_init(&sql, r->arena);
    buf_puts(&sql, "WITH ");
    sql_ident(&sql, c->name);
    buf_putc(&sql, '(');
    for (size_t i = 0; i < c->nfields; i++) {
        if (i)
            buf_putc(&sql, ',');
        sql_ident(&sql, c->fields[i].name);
    }
    buf_puts(&sql, ") AS (VALUES(");
    for (size_t i = 0; i < c->nfields; i++) {
        if (i)
            buf_putc(&sql, ',');
        const field_t *f = &c->fields[i];
        bs_value_t v = record_json_cell(f, json_object_get(rec, f->name), r->arena);
        /* Typed as the table's column is: PostgreSQL's VALUES would make it text. */
        const char *type = field_is_json(f)          ? d->type_json
                           : f->type == FIELD_NUMBER ? d->type_number
                           : f->type == FIELD_BOOL   ? d->type_bool
                                                     : d->type_text;
        buf_init(&ph, r->arena);
        if (rules_add_param(&comp, r->arena, v, &ph) != 0 || ph.oom)
            goto oom;
        buf_printf(&sql, d->column_param_fmt, ph.data, type);
    }
    buf_puts(&sql, ")) SELECT 1 FROM ");
    sql_ident(&sql, c->name);
    buf_puts(&sql, " AS \"_r\" WHERE ");
    if (compile_text(e, &comp, text, &sql, err) != 0)
        return -1;
    if (sql.oom)
        goto oom;
    store_stmt_t *st = store_query(r->conn, sql.data, comp.params, comp.nparams, err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, err);
    store_done(st);
    return rc;
oom:
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return -1;
}

/* Whether the compiled rule (its n bytes at sql) reads the record's column name: the
 * compiler writes every one of them as "_r"."name" (resolve.c). */
static int rule_reads(const char *sql, size_t n, const char *name)
{
    char needle[160];
    int k = snprintf(needle, sizeof(needle), "\"_r\".\"%s\"", name);
    if (k < 0 || (size_t)k >= sizeof(needle))
        return 1; /* cannot tell: compared */
    return memmem(sql, n, needle, (size_t)k) != NULL;
}

/* The text against the stored row of rec while that row is still the version rec is
 * (every column the rule reads holds rec's value; the others cannot change its
 * answer, and those of related records are the database's in either case): the
 * row's relations and back-relations are the database's own. A row that changed or went since (a later write
 * overtook the event's delivery: another instance's event read a moment after its commit, a batch that
 * updates a record twice, a create deleted at once) is not the event's record: then rec's own values stand in
 * for it (check_shadow), so that an event goes to whom could see the record as that write left it, neither
 * lost nor shown through a later version. */
static int check_live(const eval_ctx_t *e, const char *text, bs_error_t *err)
{
    const char *id = json_string_value(json_object_get(e->rec, "id"));
    if (id == NULL)
        return 0;
    rules_compiler_t comp = {0};
    comp.now_ms = util_now_ms();
    comp.dialect = store_conn_dialect(e->r->conn);
    const dialect_t *d = dialect_get(comp.dialect);
    buf_t sql, ph;
    buf_init(&sql, e->r->arena);
    buf_puts(&sql, "SELECT CASE WHEN (");
    size_t rule_from = sql.len;
    if (compile_text(e, &comp, text, &sql, err) != 0)
        return -1;
    size_t rule_to = sql.len;
    buf_puts(&sql, ") THEN 1 ELSE 0 END FROM ");
    sql_ident(&sql, e->c->name);
    buf_puts(&sql, " AS \"_r\" WHERE \"_r\".\"id\" = ");
    if (rules_add_param(&comp, e->r->arena, bs_val_text(id, strlen(id)), &sql) != 0)
        goto oom;
    for (size_t i = 0; i < e->c->nfields; i++) {
        const field_t *f = &e->c->fields[i];
        const json_t *v = json_object_get(e->rec, f->name);
        if (v == NULL || strcmp(f->name, "id") == 0)
            continue; /* not in the event (none is left out today): not compared */
        if (sql.oom)
            goto oom;
        if (!rule_reads(sql.data + rule_from, rule_to - rule_from, f->name))
            continue; /* the rule does not read it: a change there changes nothing */
        const char *type = field_is_json(f)          ? d->type_json
                           : f->type == FIELD_NUMBER ? d->type_number
                           : f->type == FIELD_BOOL   ? d->type_bool
                                                     : d->type_text;
        buf_puts(&sql, " AND \"_r\".");
        sql_ident(&sql, f->name);
        buf_printf(&sql, " %s ", d->is_not_distinct);
        buf_init(&ph, e->r->arena);
        if (rules_add_param(&comp, e->r->arena, record_json_cell(f, v, e->r->arena), &ph) != 0 || ph.oom)
            goto oom;
        buf_printf(&sql, d->column_param_fmt, ph.data, type);
    }
    if (sql.oom)
        goto oom;
    store_stmt_t *st = store_query(e->r->conn, sql.data, comp.params, comp.nparams, err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, err);
    int admitted = rc == 1 && store_col(st, 0).type == BS_VAL_INT && store_col(st, 0).i == 1;
    store_done(st);
    if (rc < 0)
        return -1;
    return rc == 1 ? admitted : check_shadow(e, text, err);
oom:
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return -1;
}

static int check(const eval_ctx_t *e, const rules_node_t *node, const char *text, int live, bs_error_t *err)
{
    if (node == NULL)
        return 1;
    rules_evaluator_t ev = {.lookup = lookup, .ud = (void *)e, .now_ms = util_now_ms()};
    rules_truth_t t = rules_eval(&ev, e->r->arena, node);
    if (t != RULES_UNKNOWN)
        return t == RULES_TRUE;
    return live ? check_live(e, text, err) : check_shadow(e, text, err);
}

int record_check(const record_reader_t *r, const collection_t *c, const json_t *rec, const rules_node_t *node,
                 const char *text, int live, bs_error_t *err)
{
    eval_ctx_t e = {.r = r, .c = c, .rec = rec, .trusted = 1};
    return check(&e, node, text, live, err);
}

int record_check_body(const record_reader_t *r, const collection_t *c, const json_t *rec,
                      const rules_node_t *node, const char *text, const json_t *body, bs_error_t *err)
{
    eval_ctx_t e = {.r = r, .c = c, .rec = rec, .trusted = 1, .body = body};
    return check(&e, node, text, 1, err);
}

int record_check_filter(const record_reader_t *r, const collection_t *c, const json_t *rec,
                        const rules_node_t *node, const char *text, int live, bs_error_t *err)
{
    eval_ctx_t e = {.r = r, .c = c, .rec = rec, .trusted = 0};
    return check(&e, node, text, live, err);
}
