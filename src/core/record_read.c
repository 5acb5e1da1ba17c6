/*
 * Records, the read side: `fields`/`expand` path trees, rows out as PocketBase
 * JSON (hidden fields, email visibility, nested expand under the target's view
 * rule), lookups by id, and loading a stored record as JSON for rules and writes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "core/record.h"
#include "rules/dialect.h"

/* ---- path trees ---- */

static path_tree_t *tree_child(arena_t *a, path_tree_t **list, const char *name, size_t n)
{
    for (path_tree_t *t = *list; t != NULL; t = t->next)
        if (strlen(t->name) == n && memcmp(t->name, name, n) == 0)
            return t;
    path_tree_t *t = arena_calloc(a, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->name = arena_strndup(a, name, n);
    if (t->name == NULL)
        return NULL;
    /* Keep the order in which paths were given. */
    path_tree_t **p = list;
    while (*p)
        p = &(*p)->next;
    *p = t;
    return t;
}

/* ":excerpt(max[, ellipsis])": the only modifier PocketBase has. */
static int parse_modifier(path_tree_t *t, const char *m, size_t n, bs_error_t *err)
{
    while (n > 0 && m[n - 1] == ' ')
        n--;
    char buf[64];
    if (n < 9 || n >= sizeof(buf) || memcmp(m, "excerpt(", 8) != 0 || m[n - 1] != ')')
        goto bad;
    memcpy(buf, m + 8, n - 9);
    buf[n - 9] = '\0';
    char *comma = strchr(buf, ',');
    if (comma != NULL)
        *comma++ = '\0';
    int64_t max;
    char *num = buf;
    while (*num == ' ')
        num++;
    size_t nl = strlen(num);
    while (nl > 0 && num[nl - 1] == ' ')
        num[--nl] = '\0';
    if (util_parse_i64(num, nl, &max) != 0 || max < 1 || max > 100000)
        goto bad;
    int ellipsis = 0;
    if (comma != NULL) {
        while (*comma == ' ')
            comma++;
        size_t cl = strlen(comma);
        while (cl > 0 && comma[cl - 1] == ' ')
            comma[--cl] = '\0';
        if (strcmp(comma, "true") == 0 || strcmp(comma, "1") == 0)
            ellipsis = 1;
        else if (strcmp(comma, "false") != 0 && strcmp(comma, "0") != 0)
            goto bad;
    }
    t->excerpt_max = (int)max;
    t->excerpt_ellipsis = ellipsis;
    return 0;
bad:
    bs_error_set(
        err, BS_ERR_BAD_REQUEST,
        "Invalid fields modifier \":%.*s\": use :excerpt(maxLength[, withEllipsis]) with maxLength from 1 "
        "to 100000.",
        (int)(n > 60 ? 60 : n), m);
    return -1;
}

path_tree_t *path_tree_parse(arena_t *a, const char *list, int max_depth, bs_error_t *err)
{
    path_tree_t *root = NULL;
    if (list == NULL)
        return NULL;
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        /* A term ends at a comma outside parentheses (excerpt(200, true)). */
        const char *e = p;
        int paren = 0;
        while (*e && (paren > 0 || *e != ',')) {
            paren += *e == '(' ? 1 : *e == ')' ? -1 : 0;
            e++;
        }
        path_tree_t **level = &root;
        int depth = 0;
        const char *s = p;
        while (s < e) {
            const char *d = s;
            while (d < e && *d != '.')
                d++;
            size_t n = (size_t)(d - s);
            const char *colon = memchr(s, ':', n);
            if (colon) {
                /* The modifier runs to the end of the term (it may hold dots). */
                d = e;
                n = (size_t)(colon - s);
            }
            while (n > 0 && s[n - 1] == ' ')
                n--;
            if (n == 0 || n > 100) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid path list near \"%.*s\".", (int)(e - p), p);
                return NULL;
            }
            if (++depth > max_depth) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "The path \"%.*s\" is nested too deeply (max %d).",
                             (int)(e - p), p, max_depth);
                return NULL;
            }
            path_tree_t *t = tree_child(a, level, s, n);
            if (t == NULL) {
                bs_error_set(err, BS_ERR_NOMEM, NULL);
                return NULL;
            }
            if (colon != NULL && parse_modifier(t, colon + 1, (size_t)(e - colon - 1), err) != 0)
                return NULL;
            level = &t->children;
            s = d < e ? d + 1 : d;
        }
        p = e;
    }
    return root;
}

const path_tree_t *path_tree_find(const path_tree_t *t, const char *name)
{
    for (; t != NULL; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

/* "coll_via_field": the relation field of coll that points at c, for expanding the
 * records that point at a record of c (PocketBase's back-relations). */
static const field_t *back_field(const schema_t *s, const collection_t *c, const char *name,
                                 const collection_t **bc)
{
    const char *via = NULL;
    size_t n = strlen(name);
    for (size_t i = 1; i + 5 < n; i++)
        if (memcmp(name + i, "_via_", 5) == 0)
            via = name + i; /* the last one: collection names may hold "_via_" */
    if (via == NULL)
        return NULL;
    *bc = schema_find_n(s, name, (size_t)(via - name));
    const field_t *f = *bc ? collection_field(*bc, via + 5) : NULL;
    return f != NULL && f->type == FIELD_RELATION && strcmp(f->collection_id, c->id) == 0 ? f : NULL;
}

const collection_t *record_expand_target(const schema_t *s, const collection_t *c, const char *name)
{
    const field_t *f = collection_field(c, name);
    if (f != NULL)
        return f->type == FIELD_RELATION ? schema_find(s, f->collection_id) : NULL;
    const collection_t *bc = NULL;
    return back_field(s, c, name, &bc) != NULL ? bc : NULL;
}

int record_check_expand(const schema_t *s, const collection_t *c, const path_tree_t *expand, int superuser,
                        bs_error_t *err)
{
    for (const path_tree_t *e = expand; e != NULL; e = e->next) {
        const field_t *f = collection_field(c, e->name);
        const collection_t *bc = NULL;
        const field_t *bf = f == NULL ? back_field(s, c, e->name, &bc) : NULL;
        if (bf != NULL) {
            if (bf->hidden && !superuser) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "Cannot expand \"%s\": it goes through a hidden field.",
                             e->name);
                return -1;
            }
            if (e->children != NULL && record_check_expand(s, bc, e->children, superuser, err) != 0)
                return -1;
            continue;
        }
        if (f == NULL || f->type != FIELD_RELATION) {
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         "Cannot expand \"%s\": it is not a relation field of \"%s\".", e->name, c->name);
            return -1;
        }
        if (f->hidden && !superuser) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "Cannot expand \"%s\": it is a hidden field.", e->name);
            return -1;
        }
        const collection_t *t = schema_find(s, f->collection_id);
        if (t != NULL && e->children != NULL && record_check_expand(s, t, e->children, superuser, err) != 0)
            return -1;
    }
    return 0;
}

/* ---- output ---- */

static int is_secret(const field_t *f)
{
    return f->type == FIELD_PASSWORD || strcmp(f->name, "tokenKey") == 0;
}

void record_write_value(buf_t *out, const field_t *f, bs_value_t v)
{
    if (field_is_json(f)) {
        if (v.type == BS_VAL_TEXT && v.n > 0)
            buf_append(out, v.s, v.n);
        else if (field_is_multi(f))
            buf_puts(out, "[]");
        else
            buf_puts(out, "null");
        return;
    }
    switch (f->type) {
    case FIELD_NUMBER:
        if (v.type == BS_VAL_INT)
            buf_put_i64(out, v.i);
        else if (v.type == BS_VAL_DOUBLE && isfinite(v.d))
            buf_printf(out, "%.17g", v.d);
        else if (v.type == BS_VAL_TEXT && v.n > 0)
            buf_printf(out, "%.17g", strtod(v.s, NULL));
        else
            buf_putc(out, '0');
        break;
    case FIELD_BOOL:
        buf_puts(out, (v.type == BS_VAL_INT && v.i) ||
                              (v.type == BS_VAL_TEXT && v.n == 4 && !memcmp(v.s, "true", 4))
                          ? "true"
                          : "false");
        break;
    default:
        if (v.type == BS_VAL_TEXT)
            util_json_quote(out, v.s, v.n);
        else if (v.type == BS_VAL_INT) {
            buf_putc(out, '"');
            buf_put_i64(out, v.i);
            buf_putc(out, '"');
        } else
            buf_puts(out, "\"\"");
    }
}

/* A short plain-text form of text s: tags removed, whitespace runs as one space,
 * at most max characters, "..." after a cut when ellipsis is set; as a JSON string. */
static void write_excerpt(buf_t *out, const char *s, size_t n, int max, int ellipsis)
{
    buf_t tmp;
    buf_init(&tmp, out->arena);
    int in_tag = 0, space = 1, chars = 0, cut = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (in_tag) {
            in_tag = ch != '>';
            continue;
        }
        if (ch == '<') {
            in_tag = 1;
            continue;
        }
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            if (!space && chars < max) {
                buf_putc(&tmp, ' ');
                chars++;
            }
            space = 1;
            continue;
        }
        if ((ch & 0xC0) != 0x80) { /* the first byte of a character */
            if (chars == max) {
                cut = 1;
                break;
            }
            chars++;
        }
        buf_putc(&tmp, (char)ch);
        space = 0;
    }
    while (tmp.len > 0 && tmp.data[tmp.len - 1] == ' ')
        tmp.len--;
    if (cut && ellipsis)
        buf_puts(&tmp, "...");
    util_json_quote(out, tmp.data ? tmp.data : "", tmp.len);
}

static int field_selected(const path_tree_t *fields, const char *name)
{
    return fields == NULL || path_tree_find(fields, "*") != NULL || path_tree_find(fields, name) != NULL;
}

int record_compile_rule(const record_reader_t *r, const collection_t *c, rules_compiler_t *comp,
                        const char *text, const json_t *body, buf_t *out, bs_error_t *err)
{
    resolve_ctx_t rc = {.schema = r->schema,
                        .coll = c,
                        .alias = "_r",
                        .trusted = 1, /* rules are written by superusers: hidden fields are allowed */
                        .who = r->who,
                        .body = body,
                        .compiler = comp};
    return resolve_compile(&rc, r->arena, text, strlen(text), out, err);
}

int record_compile_filter(const record_reader_t *r, const collection_t *c, rules_compiler_t *comp,
                          const char *text, buf_t *out, bs_error_t *err)
{
    resolve_ctx_t rc = {.schema = r->schema,
                        .coll = c,
                        .alias = "_r",
                        .trusted = r->who->superuser, /* a client's text: see resolve_ctx_t */
                        .who = r->who,
                        .compiler = comp};
    return resolve_compile(&rc, r->arena, text, strlen(text), out, err);
}

/* Counts one more expanded record against the response's budget. */
static int spend_expand(const record_reader_t *r, bs_error_t *err)
{
    if (++r->budget->expanded <= RECORD_MAX_EXPANDED)
        return 0;
    bs_error_set(err, BS_ERR_BAD_REQUEST,
                 "The expand would add more than %d records to the response (limit per request); expand "
                 "fewer relations or levels, or ask for fewer records (perPage).",
                 RECORD_MAX_EXPANDED);
    return -1;
}

/* Writes the expansion of relation f (value v) straight into out, so a nested
 * expand is never copied level by level; nothing is left in out when no related
 * record may be seen. Returns 1 written, 0 nothing, -1 error. */
static int expand_relation(const record_reader_t *r, const field_t *f, bs_value_t v, const path_tree_t *sub,
                           const path_tree_t *fields, buf_t *out, int depth, bs_error_t *err)
{
    const collection_t *target = schema_find(r->schema, f->collection_id);
    if (target == NULL)
        return 0;
    if (target->rules[RULE_VIEW] == NULL && !r->who->superuser)
        return 0;
    if (v.type != BS_VAL_TEXT || v.n == 0)
        return 0;
    (void)depth;
    record_reader_t er = *r;
    er.skip_view_rule = 0;
    if (!field_is_multi(f)) {
        char *id = arena_strndup(r->arena, v.s, v.n);
        if (id == NULL || spend_expand(r, err) != 0)
            return -1;
        return record_fetch(&er, target, id, sub, fields, out, err);
    }
    json_error_t jerr;
    json_t *ids = json_loadb(v.s, v.n, 0, &jerr);
    size_t start = out->len, i;
    json_t *id;
    int any = 0;
    buf_putc(out, '[');
    json_array_foreach(ids, i, id)
    {
        if (!json_is_string(id))
            continue;
        size_t mark = out->len;
        if (any)
            buf_putc(out, ',');
        if (spend_expand(r, err) != 0) {
            json_decref(ids);
            return -1;
        }
        int rc = record_fetch(&er, target, json_string_value(id), sub, fields, out, err);
        if (rc < 0) {
            json_decref(ids);
            return -1;
        }
        if (rc == 0)
            out->len = mark;
        else
            any = 1;
    }
    json_decref(ids);
    buf_putc(out, ']');
    if (!any)
        out->len = start;
    return any;
}

/* At most this many records per back-relation, in insertion order (PocketBase's
 * bound too). */
enum { RECORD_MAX_BACK = 1000 };

/* Writes the records of bc whose relation bf points at record id (each under bc's
 * view rule) as an array. Returns 1 written, 0 nothing, -1 error. */
static int expand_back(const record_reader_t *r, const collection_t *bc, const field_t *bf, const char *id,
                       const path_tree_t *sub, const path_tree_t *fields, buf_t *out, bs_error_t *err)
{
    if (bc->rules[RULE_VIEW] == NULL && !r->who->superuser)
        return 0;
    const dialect_t *d = dialect_get(store_conn_dialect(r->conn));
    rules_compiler_t comp = {0};
    comp.now_ms = util_now_ms();
    comp.dialect = store_conn_dialect(r->conn);
    buf_t sql;
    buf_init(&sql, r->arena);
    buf_puts(&sql, "SELECT \"_r\".* FROM ");
    sql_ident(&sql, bc->name);
    buf_puts(&sql, " AS \"_r\" WHERE ");
    char col[300];
    snprintf(col, sizeof(col), "\"_r\".\"%s\"", bf->name);
    if (field_is_multi(bf)) {
        buf_puts(&sql, "EXISTS (SELECT 1 FROM ");
        dialect_json_elements(d, &sql, col, "_b");
        buf_puts(&sql, " WHERE \"_b\".\"value\" = ");
        rules_add_param(&comp, r->arena, bs_val_text(id, strlen(id)), &sql);
        buf_putc(&sql, ')');
    } else {
        buf_printf(&sql, "%s = ", col);
        rules_add_param(&comp, r->arena, bs_val_text(id, strlen(id)), &sql);
    }
    const char *rule = r->who->superuser ? NULL : bc->rules[RULE_VIEW];
    if (rule != NULL && rule[0] != '\0') {
        buf_puts(&sql, " AND ");
        if (record_compile_rule(r, bc, &comp, rule, NULL, &sql, err) != 0)
            return -1;
    }
    buf_printf(&sql, " ORDER BY \"_r\".%s LIMIT %d", d->rowid, RECORD_MAX_BACK);
    if (sql.oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    store_stmt_t *st = store_query(r->conn, sql.data, comp.params, comp.nparams, err);
    if (st == NULL)
        return -1;
    record_reader_t er = *r;
    er.skip_view_rule = 0;
    size_t start = out->len;
    int rc, n = 0;
    buf_putc(out, '[');
    while ((rc = store_step(st, err)) == 1) {
        if (spend_expand(r, err) != 0) {
            rc = -1;
            break;
        }
        if (n++)
            buf_putc(out, ',');
        if (record_write_row(&er, bc, st, sub, fields, out, 1, err) != 0) {
            rc = -1;
            break;
        }
    }
    store_done(st);
    if (rc < 0)
        return -1;
    buf_putc(out, ']');
    if (n == 0)
        out->len = start;
    return n > 0;
}

/* Where a record's cells come from: the current row of a statement, or a stored
 * record's JSON (realtime events). */
typedef struct {
    store_stmt_t *st;
    int colmap[256];
    const json_t *rec;
    arena_t *arena;
} row_src_t;

static void src_init_stmt(row_src_t *src, const collection_t *c, store_stmt_t *st)
{
    int ncols = store_ncols(st);
    size_t nf = c->nfields < 256 ? c->nfields : 256;
    src->st = st;
    src->rec = NULL;
    for (size_t i = 0; i < nf; i++) {
        src->colmap[i] = -1;
        for (int k = 0; k < ncols; k++)
            if (strcmp(store_col_name(st, k), c->fields[i].name) == 0) {
                src->colmap[i] = k;
                break;
            }
    }
}

bs_value_t record_json_cell(const field_t *f, const json_t *v, arena_t *a)
{
    if (v == NULL || json_is_null(v))
        return bs_val_null();
    if (field_is_json(f)) {
        char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        char *s = d && a ? arena_strdup(a, d) : NULL;
        free(d);
        return s ? bs_val_text(s, strlen(s)) : bs_val_null();
    }
    return resolve_json_scalar(v);
}

/* The cell of field i; 0 when the source does not have it. */
static int src_get(const row_src_t *src, const collection_t *c, size_t i, bs_value_t *out)
{
    if (src->st != NULL) {
        if (i >= 256 || src->colmap[i] < 0)
            return 0;
        *out = store_col(src->st, src->colmap[i]);
        return 1;
    }
    const json_t *v = json_object_get(src->rec, c->fields[i].name);
    if (v == NULL)
        return 0;
    *out = record_json_cell(&c->fields[i], v, src->arena);
    return 1;
}

static int write_record(const record_reader_t *r, const collection_t *c, const row_src_t *src,
                        const path_tree_t *expand, const path_tree_t *fields, buf_t *out, int depth,
                        bs_error_t *err)
{
    size_t start = out->len;
    size_t nf = c->nfields < 256 ? c->nfields : 256;
    bs_value_t v;
    /* Auth records hide their email unless it is public or the reader owns it. */
    int show_email = 1;
    if (c->type == COLL_AUTH && !r->who->superuser) {
        show_email = 0;
        const field_t *vis = collection_field(c, "emailVisibility");
        if (vis != NULL && src_get(src, c, (size_t)(vis - c->fields), &v))
            show_email = v.type == BS_VAL_INT && v.i;
        const field_t *idf = collection_field(c, "id");
        if (!show_email && r->who->auth != NULL && r->who->auth_coll == c && idf != NULL &&
            src_get(src, c, (size_t)(idf - c->fields), &v)) {
            const char *aid = json_string_value(json_object_get(r->who->auth, "id"));
            show_email = aid && v.type == BS_VAL_TEXT && strlen(aid) == v.n && !memcmp(aid, v.s, v.n);
        }
    }
    buf_puts(out, "{");
    int first = 1;
    if (field_selected(fields, "collectionId")) {
        buf_puts(out, "\"collectionId\":");
        util_json_quote(out, c->id, strlen(c->id));
        first = 0;
    }
    if (field_selected(fields, "collectionName")) {
        buf_puts(out, first ? "\"collectionName\":" : ",\"collectionName\":");
        util_json_quote(out, c->name, strlen(c->name));
        first = 0;
    }
    for (size_t i = 0; i < nf; i++) {
        const field_t *f = &c->fields[i];
        if (is_secret(f) || (f->hidden && !r->who->superuser) || !field_selected(fields, f->name))
            continue;
        if (!show_email && strcmp(f->name, "email") == 0 && c->type == COLL_AUTH)
            continue;
        if (!src_get(src, c, i, &v))
            continue;
        if (!first)
            buf_putc(out, ',');
        first = 0;
        util_json_quote(out, f->name, strlen(f->name));
        buf_putc(out, ':');
        const path_tree_t *fm = fields ? path_tree_find(fields, f->name) : NULL;
        if (fm != NULL && fm->excerpt_max > 0 && v.type == BS_VAL_TEXT && !field_is_json(f))
            write_excerpt(out, v.s, v.n, fm->excerpt_max, fm->excerpt_ellipsis);
        else
            record_write_value(out, f, v);
    }
    /* The record's own bytes count once, here, whatever level it is written at (an
     * outer record copies its expansions in again, but that is bounded by these). */
    r->budget->bytes += out->len - start;
    if (r->budget->bytes > RECORD_MAX_RESPONSE_BYTES) {
        bs_error_set(err, BS_ERR_BAD_REQUEST,
                     "The response would be larger than %u MiB (limit per request); ask for fewer records "
                     "(perPage), fewer fields (fields=...) or a smaller expand.",
                     RECORD_MAX_RESPONSE_BYTES >> 20);
        return -1;
    }
    /* Expanded relations; text from the row stays valid because nested lookups
     * use other statements. */
    const path_tree_t *fexp = fields ? path_tree_find(fields, "expand") : NULL;
    int want_expand =
        expand != NULL && depth < 6 && (fields == NULL || fexp != NULL || path_tree_find(fields, "*"));
    if (want_expand) {
        /* Written in place; rolled back to exp_start when nothing is expanded. */
        size_t exp_start = out->len;
        buf_puts(out, first ? "\"expand\":{" : ",\"expand\":{");
        buf_t *exb = out;
        int nexp = 0;
        for (const path_tree_t *e = expand; e != NULL; e = e->next) {
            const field_t *f = collection_field(c, e->name);
            const collection_t *bc = NULL;
            const field_t *bf = f == NULL ? back_field(r->schema, c, e->name, &bc) : NULL;
            if (bf != NULL) {
                const field_t *idf = collection_field(c, "id");
                if ((bf->hidden && !r->who->superuser) || idf == NULL ||
                    !src_get(src, c, (size_t)(idf - c->fields), &v) || v.type != BS_VAL_TEXT)
                    continue;
                char *rid = arena_strndup(r->arena, v.s, v.n);
                if (rid == NULL) {
                    bs_error_set(err, BS_ERR_NOMEM, NULL);
                    return -1;
                }
                size_t mark = exb->len;
                if (nexp)
                    buf_putc(exb, ',');
                util_json_quote(exb, e->name, strlen(e->name));
                buf_putc(exb, ':');
                const path_tree_t *sub_fields = NULL;
                if (fexp != NULL && fexp->children != NULL) {
                    const path_tree_t *sf = path_tree_find(fexp->children, e->name);
                    if (sf == NULL) {
                        exb->len = mark;
                        continue;
                    }
                    sub_fields = sf->children;
                }
                int rc = expand_back(r, bc, bf, rid, e->children, sub_fields, exb, err);
                if (rc < 0)
                    return -1;
                if (rc == 0)
                    exb->len = mark;
                else
                    nexp++;
                continue;
            }
            if (f == NULL || f->type != FIELD_RELATION || (f->hidden && !r->who->superuser))
                continue;
            if (!src_get(src, c, (size_t)(f - c->fields), &v))
                continue;
            size_t mark = exb->len;
            if (nexp)
                buf_putc(exb, ',');
            util_json_quote(exb, f->name, strlen(f->name));
            buf_putc(exb, ':');
            const path_tree_t *sub_fields = NULL;
            if (fexp != NULL && fexp->children != NULL) {
                const path_tree_t *sf = path_tree_find(fexp->children, f->name);
                sub_fields = sf ? sf->children : NULL;
                if (sf == NULL) {
                    exb->len = mark;
                    continue;
                }
            }
            int rc = expand_relation(r, f, v, e->children, sub_fields, exb, depth + 1, err);
            if (rc < 0)
                return -1;
            if (rc == 0)
                exb->len = mark;
            else
                nexp++;
        }
        if (nexp)
            buf_putc(out, '}');
        else
            out->len = exp_start;
    }
    buf_putc(out, '}');
    if (out->oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    return 0;
}

int record_write_row(const record_reader_t *r, const collection_t *c, store_stmt_t *st,
                     const path_tree_t *expand, const path_tree_t *fields, buf_t *out, int depth,
                     bs_error_t *err)
{
    row_src_t src;
    src_init_stmt(&src, c, st);
    record_budget_t own = {0};
    record_reader_t rb = *r;
    if (rb.budget == NULL)
        rb.budget = &own;
    return write_record(&rb, c, &src, expand, fields, out, depth, err);
}

int record_write_json(const record_reader_t *r, const collection_t *c, const json_t *rec,
                      const path_tree_t *expand, const path_tree_t *fields, buf_t *out, bs_error_t *err)
{
    row_src_t src = {.rec = rec, .arena = r->arena};
    record_budget_t own = {0};
    record_reader_t rb = *r;
    if (rb.budget == NULL)
        rb.budget = &own;
    return write_record(&rb, c, &src, expand, fields, out, 0, err);
}

store_stmt_t *record_select_by_id(const record_reader_t *r, const collection_t *c, const char *what,
                                  const char *id, const char *rule, const json_t *body, bs_error_t *err)
{
    rules_compiler_t comp = {0};
    comp.now_ms = util_now_ms();
    comp.dialect = store_conn_dialect(r->conn);
    buf_t sql;
    buf_init(&sql, r->arena);
    buf_printf(&sql, "SELECT %s FROM ", what);
    sql_ident(&sql, c->name);
    buf_puts(&sql, " AS \"_r\" WHERE \"_r\".\"id\" = ");
    if (rules_add_param(&comp, r->arena, bs_val_text(id, strlen(id)), &sql) != 0)
        goto oom;
    if (rule != NULL && rule[0] != '\0') {
        buf_puts(&sql, " AND ");
        if (record_compile_rule(r, c, &comp, rule, body, &sql, err) != 0)
            return NULL;
    }
    if (sql.oom)
        goto oom;
    return store_query(r->conn, sql.data, comp.params, comp.nparams, err);
oom:
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return NULL;
}

int record_fetch(const record_reader_t *r, const collection_t *c, const char *id, const path_tree_t *expand,
                 const path_tree_t *fields, buf_t *out, bs_error_t *err)
{
    const char *rule = r->who->superuser || r->skip_view_rule ? NULL : c->rules[RULE_VIEW];
    store_stmt_t *st = record_select_by_id(r, c, "*", id, rule, NULL, err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, err);
    if (rc == 1 && record_write_row(r, c, st, expand, fields, out, 0, err) != 0)
        rc = -1;
    store_done(st);
    return rc;
}

int record_matches(const record_reader_t *r, const collection_t *c, const char *id, const char *rule,
                   const json_t *body, bs_error_t *err)
{
    if (r->who->superuser)
        return 1;
    if (rule == NULL)
        return 0;
    if (rule[0] == '\0')
        return 1;
    store_stmt_t *st = record_select_by_id(r, c, "1", id, rule, body, err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, err);
    store_done(st);
    return rc;
}

static json_t *cell_to_json(const field_t *f, bs_value_t v)
{
    if (field_is_json(f)) {
        if (v.type != BS_VAL_TEXT || v.n == 0)
            return field_is_multi(f) ? json_array() : json_null();
        json_error_t jerr;
        json_t *j = json_loadb(v.s, v.n, JSON_DECODE_ANY, &jerr);
        return j ? j : json_stringn(v.s, v.n);
    }
    switch (f->type) {
    case FIELD_NUMBER:
        return v.type == BS_VAL_INT ? json_integer(v.i) : json_real(v.type == BS_VAL_DOUBLE ? v.d : 0);
    case FIELD_BOOL:
        return json_boolean(v.type == BS_VAL_INT && v.i);
    default:
        return v.type == BS_VAL_TEXT ? json_stringn(v.s, v.n) : json_string("");
    }
}

static json_t *row_to_json(const collection_t *c, store_stmt_t *st)
{
    json_t *o = json_object();
    int ncols = store_ncols(st);
    for (int k = 0; k < ncols; k++) {
        const field_t *f = collection_field(c, store_col_name(st, k));
        if (f != NULL)
            json_object_set_new(o, f->name, cell_to_json(f, store_col(st, k)));
    }
    return o;
}

json_t *record_row_json(const collection_t *c, store_stmt_t *st)
{
    return row_to_json(c, st);
}

json_t *record_load(store_conn_t *conn, const collection_t *c, const char *field, const char *value,
                    bs_error_t *err)
{
    buf_t sql;
    buf_init(&sql, NULL);
    buf_puts(&sql, "SELECT * FROM ");
    sql_ident(&sql, c->name);
    buf_puts(&sql, " WHERE ");
    sql_ident(&sql, field);
    buf_puts(&sql, " = ?1 LIMIT 1");
    if (sql.oom) {
        buf_free(&sql);
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    bs_value_t p = bs_val_text(value, strlen(value));
    store_stmt_t *st = store_query(conn, sql.data, &p, 1, err);
    buf_free(&sql);
    if (st == NULL)
        return NULL;
    json_t *o = NULL;
    int rc = store_step(st, err);
    if (rc == 1)
        o = row_to_json(c, st);
    store_done(st);
    if (rc == 0)
        bs_error_set(err, BS_ERR_NOT_FOUND, NULL);
    return o;
}
