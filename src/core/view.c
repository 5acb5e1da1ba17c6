/*
 * view — view collections (PocketBase's "view" type): read-only records that come
 * from a SELECT over other collections, kept in the database as a SQL view.
 *
 * The query is a superuser's text, but it still reaches the database as written, so
 * it is checked as if it were not trusted: one statement (no ';', no comment to hide
 * one), starting with SELECT or WITH, with no word that writes, changes the schema,
 * attaches a database, changes a setting or calls a function that reads files, other
 * databases or the server's processes, and no internal table (names starting with
 * '_': the stored definitions, password hashes of _superusers, the outbox). Both
 * backends then refuse anything but a query inside CREATE VIEW.
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "core/resolve.h"
#include "core/schema.h"

enum { VIEW_MAX_QUERY = 20000, VIEW_MAX_COLUMNS = 200 };

/* Words that never belong in a view's query (compared case-insensitively, whole
 * words outside literals and quoted names). */
static const char *const forbidden[] = {
    /* statements: one SELECT cannot hold them, but a data-modifying WITH or a
     * SELECT INTO could try */
    "insert", "update", "delete", "create", "drop", "alter", "truncate", "attach", "detach", "pragma",
    "vacuum", "copy", "grant", "revoke", "into",
    /* SQLite functions that reach outside the database */
    "load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "sqlite_offset",
    /* PostgreSQL functions that reach files, other databases, settings or processes */
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir", "pg_ls_waldir",
    "pg_ls_tmpdir", "pg_ls_archive_statusdir", "lo_import", "lo_export", "lo_get", "lo_put", "lo_from_bytea",
    "lo_open", "lo_create", "lo_unlink", "dblink", "dblink_exec", "dblink_connect", "pg_sleep",
    "pg_sleep_for", "pg_sleep_until", "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf",
    "pg_rotate_logfile", "set_config", "current_setting", "pg_advisory_lock", "pg_advisory_xact_lock",
    "pg_notify", "query_to_xml", "query_to_xml_and_xmlschema", "table_to_xml", "cursor_to_xml",
    "database_to_xml", "schema_to_xml", "nextval", "setval", "txid_current", "pg_current_xact_id",
    "pg_switch_wal", "pg_create_restore_point", "pg_start_backup", "pg_backup_start", "pg_promote",
    "pg_logical_emit_message", "pg_replication_origin_create", "pg_drop_replication_slot",
    "pg_create_physical_replication_slot", "pg_create_logical_replication_slot", "pg_file_write",
    "pg_catalog", "information_schema", "pg_authid", "pg_shadow", "pg_user", "pg_roles", "pg_settings",
    "pg_stat_activity", "sqlite_master", "sqlite_schema", "sqlite_temp_master"};

static int refuse(arena_t *a, bs_error_t *err, const char *fmt, const char *p, size_t n)
{
    bs_error_field(err, a, "viewQuery", "validation_invalid_view_query", fmt, (int)(n > 80 ? 80 : n), p);
    return -1;
}

int view_check_query(const char *q, arena_t *arena, bs_error_t *err)
{
    size_t len = strlen(q);
    if (len > VIEW_MAX_QUERY)
        return refuse(arena, err, "The query is too long (at most 20000 characters)%.*s.", "", 0);
    int first = 1;
    const char *p = q;
    while (*p) {
        unsigned char ch = (unsigned char)*p;
        if (isspace(ch)) {
            p++;
            continue;
        }
        if (first && !isalpha(ch))
            return refuse(arena, err, "The query must start with SELECT or WITH (at \"%.*s\").", p,
                          strlen(p));
        if (ch == '\'' || ch == '"' || ch == '`' || ch == '[') {
            /* A literal or a quoted name: skipped whole ('' and "" escape themselves). */
            char close = ch == '[' ? ']' : (char)ch;
            const char *s = p++;
            for (;;) {
                if (*p == '\0')
                    return refuse(arena, err, "The query has an unclosed quote at \"%.*s\".", s, strlen(s));
                /* No backslash even inside: PostgreSQL's E'' strings escape quotes
                 * with it, and this scan must end every literal where the database
                 * does. */
                if (*p == '\\')
                    return refuse(arena, err, "The query must not use backslashes (at \"%.*s\").", p,
                                  strlen(p));
                if (*p == close) {
                    if (close != ']' && p[1] == close) {
                        p += 2;
                        continue;
                    }
                    break;
                }
                p++;
            }
            /* A quoted name is still a name: internal tables stay out. */
            if ((ch == '"' || ch == '`' || ch == '[') && s[1] == '_')
                return refuse(
                    arena, err,
                    "The query reads %.*s: internal tables (names starting with _) are not for views.", s,
                    (size_t)(p - s + 1));
            p++;
            first = 0;
            continue;
        }
        if (ch == ';')
            return refuse(arena, err, "The query must be one statement (no ';' at \"%.*s\").", p, strlen(p));
        if ((ch == '-' && p[1] == '-') || (ch == '/' && p[1] == '*'))
            return refuse(arena, err, "The query must not hold comments (at \"%.*s\").", p, strlen(p));
        if (ch == '$' || ch == '\\')
            return refuse(arena, err, "The query must not use dollar quoting or escapes (at \"%.*s\").", p,
                          strlen(p));
        if (isalpha(ch) || ch == '_') {
            const char *s = p;
            while (isalnum((unsigned char)*p) || *p == '_')
                p++;
            size_t n = (size_t)(p - s);
            if (first && !(n == 6 && strncasecmp(s, "select", 6) == 0) &&
                !(n == 4 && strncasecmp(s, "with", 4) == 0))
                return refuse(arena, err, "The query must start with SELECT or WITH, not \"%.*s\".", s, n);
            first = 0;
            if (s[0] == '_')
                return refuse(
                    arena, err,
                    "The query reads \"%.*s\": internal tables (names starting with _) are not for views.", s,
                    n);
            for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++)
                if (strlen(forbidden[i]) == n && strncasecmp(forbidden[i], s, n) == 0)
                    return refuse(
                        arena, err,
                        "The query may only read: \"%.*s\" is not allowed in a view collection's query.", s,
                        n);
            continue;
        }
        p++;
    }
    if (first)
        return refuse(arena, err, "The query is empty%.*s.", "", 0);
    return 0;
}

/* Whether word w appears in q as a whole word, outside nothing in particular (the
 * query passed view_check_query): a collection the query may read. */
static int mentions(const char *q, const char *w)
{
    size_t n = strlen(w);
    for (const char *p = q; (p = strcasestr(p, w)) != NULL; p += n) {
        int before = p == q || !(isalnum((unsigned char)p[-1]) || p[-1] == '_');
        int after = !(isalnum((unsigned char)p[n]) || p[n] == '_');
        if (before && after)
            return 1;
    }
    return 0;
}

int view_reads(const collection_t *view, const char *name)
{
    return view->view_query != NULL && mentions(view->view_query, name);
}

/* The field of a collection the query reads with this column's name (the first, in
 * schema order), or NULL. */
static const field_t *source_field(const schema_t *s, const char *q, const char *name)
{
    for (size_t i = 0; i < s->ncols; i++) {
        const collection_t *o = s->cols[i];
        if (o->type == COLL_VIEW || !mentions(q, o->name))
            continue;
        const field_t *f = collection_field(o, name);
        if (f != NULL)
            return f;
    }
    return NULL;
}

static int json_text(bs_value_t v)
{
    if (v.type != BS_VAL_TEXT || v.n == 0)
        return 0;
    json_error_t jerr;
    json_t *j = json_loadb(v.s, v.n, 0, &jerr);
    int yes = j != NULL && (json_is_object(j) || json_is_array(j));
    json_decref(j);
    return yes;
}

int view_infer(store_conn_t *conn, const schema_t *s, collection_t *c, arena_t *arena, bs_error_t *err)
{
    buf_t sql;
    buf_init(&sql, arena);
    buf_printf(&sql, "SELECT * FROM (%s) AS \"_v\" LIMIT 1", c->view_query);
    if (sql.oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    bs_error_t qerr;
    bs_error_init(&qerr);
    store_stmt_t *st = store_query(conn, sql.data, NULL, 0, &qerr);
    int row = st != NULL ? store_step(st, &qerr) : -1;
    if (row < 0) {
        if (st != NULL)
            store_done(st);
        bs_error_field(err, arena, "viewQuery", "validation_invalid_view_query", "The query fails: %s",
                       qerr.message);
        return -1;
    }
    int ncols = store_ncols(st);
    if (ncols > VIEW_MAX_COLUMNS) {
        store_done(st);
        bs_error_field(err, arena, "viewQuery", "validation_invalid_view_query",
                       "The query has %d columns (at most %d).", ncols, VIEW_MAX_COLUMNS);
        return -1;
    }
    field_t *fields = calloc((size_t)ncols + 1, sizeof(field_t));
    size_t nf = 0;
    int have_id = 0, rc = 0;
    for (int i = 0; i < ncols && rc == 0; i++) {
        const char *name = store_col_name(st, i);
        size_t n = strlen(name);
        int ok = n > 0 && n <= 55 && !isdigit((unsigned char)name[0]);
        for (size_t k = 0; k < n && ok; k++)
            ok = isalnum((unsigned char)name[k]) || name[k] == '_';
        if (!ok) {
            bs_error_field(
                err, arena, "viewQuery", "validation_invalid_view_query",
                "The column \"%s\" is no field name: name every expression with AS (letters, digits, _).",
                name);
            rc = -1;
            break;
        }
        for (size_t k = 0; k < nf && rc == 0; k++)
            if (strcmp(fields[k].name, name) == 0) {
                bs_error_field(err, arena, "viewQuery", "validation_invalid_view_query",
                               "The query has two columns named \"%s\".", name);
                rc = -1;
            }
        if (rc != 0)
            break;
        if (strcmp(name, "password") == 0 || strcmp(name, "tokenKey") == 0) {
            bs_error_field(err, arena, "viewQuery", "validation_invalid_view_query",
                           "A view cannot show \"%s\": secrets stay with their auth collection.", name);
            rc = -1;
            break;
        }
        field_t *f = &fields[nf];
        const field_t *src = source_field(s, c->view_query, name);
        const field_t *old = NULL;
        for (size_t k = 0; k < c->nfields; k++)
            if (strcmp(c->fields[k].name, name) == 0)
                old = &c->fields[k];
        if (strcmp(name, "id") == 0) {
            have_id = 1;
            memset(f, 0, sizeof(*f));
            f->name = strdup("id");
            f->type = FIELD_TEXT;
            f->system = 1;
            f->primary_key = 1;
            f->id = old && old->id ? strdup(old->id) : collection_random_id("text");
        } else if (src != NULL && src->type != FIELD_PASSWORD) {
            field_copy(f, src);
            free(f->id);
            f->id = old && old->id ? strdup(old->id) : collection_random_id(field_type_name(src->type));
            f->system = 0;
            f->primary_key = 0;
            f->required = 0;
        } else {
            bs_value_t v = row == 1 ? store_col(st, i) : bs_val_null();
            memset(f, 0, sizeof(*f));
            f->name = strdup(name);
            f->type = v.type == BS_VAL_INT || v.type == BS_VAL_DOUBLE ? FIELD_NUMBER
                      : v.type == BS_VAL_TEXT && !json_text(v)        ? FIELD_TEXT
                                                                      : FIELD_JSON;
            f->id = old && old->id ? strdup(old->id) : collection_random_id(field_type_name(f->type));
        }
        nf++;
    }
    store_done(st);
    if (rc == 0 && !have_id) {
        bs_error_field(err, arena, "viewQuery", "validation_invalid_view_query",
                       "The query must return an \"id\" column (unique per row), e.g. SELECT id, ... or "
                       "SELECT (ROW_NUMBER() OVER()) AS id, ...");
        rc = -1;
    }
    if (rc != 0) {
        for (size_t k = 0; k < nf; k++)
            field_free(&fields[k]);
        free(fields);
        return -1;
    }
    for (size_t k = 0; k < c->nfields; k++)
        field_free(&c->fields[k]);
    free(c->fields);
    c->fields = fields;
    c->nfields = nf;
    /* The rules compile against the fields just made. */
    for (int r = RULE_LIST; r <= RULE_VIEW; r++) {
        if (c->rules[r] == NULL || c->rules[r][0] == '\0')
            continue;
        bs_error_t rerr;
        bs_error_init(&rerr);
        if (resolve_check_rule(s, c, c->rules[r], arena, &rerr) != 0) {
            bs_error_field(err, arena, r == RULE_LIST ? "listRule" : "viewRule", "validation_invalid_rule",
                           "%s", rerr.message);
            return -1;
        }
    }
    return 0;
}
