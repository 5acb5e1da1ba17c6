/*
 * `basalt db copy`, the two ends (dbcopy_int.h): checking and opening the source and
 * the destination, the few queries every step asks of them (a count, a table's
 * presence, the database's identity), and reading the `_collections` rows and the
 * `_params` settings as the source stores them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/dbcopy_int.h"
#include "base/util.h"

/* ---- messages ---- */

/* Copies url into out without the password (user:PASSWORD@ and password=... in the
 * query string), for messages. */
static void redact_url(const char *url, char *out, size_t cap)
{
    buf_t b;
    buf_init(&b, NULL);
    const char *scheme = strstr(url, "://");
    const char *rest = scheme ? scheme + 3 : url;
    buf_append(&b, url, (size_t)(rest - url));
    const char *slash = rest + strcspn(rest, "/?");
    const char *at = NULL;
    for (const char *p = rest; p < slash; p++)
        if (*p == '@')
            at = p;
    if (at != NULL) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        buf_append(&b, rest, (size_t)((colon ? colon : at) - rest));
        if (colon)
            buf_puts(&b, ":***");
        rest = at;
    }
    /* The rest, with every password=VALUE parameter's value hidden. */
    while (*rest) {
        const char *hit = strstr(rest, "password=");
        if (hit == NULL || (hit != rest && hit[-1] != '?' && hit[-1] != '&')) {
            if (hit == NULL) {
                buf_puts(&b, rest);
                break;
            }
            buf_append(&b, rest, (size_t)(hit - rest) + 9);
            rest = hit + 9;
            continue;
        }
        buf_append(&b, rest, (size_t)(hit - rest) + 9);
        buf_puts(&b, "***");
        rest = hit + 9 + strcspn(hit + 9, "&");
    }
    snprintf(out, cap, "%s", b.data ? b.data : "");
    buf_free(&b);
}

/* ---- opening the ends ---- */

static int mkdir_p(const char *dir)
{
    char tmp[1200];
    snprintf(tmp, sizeof(tmp), "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(tmp, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* Resolves e's place; for a SQLite source, checks the data is there (store_open
 * would create an empty file). */
int dbcopy_end_locate(dbcopy_end_t *e, int is_source)
{
    e->is_url = store_is_url(e->arg);
    if (e->is_url) {
        redact_url(e->arg, e->where, sizeof(e->where));
        return 0;
    }
    if (strstr(e->arg, "://") != NULL) {
        dbcopy_fail("%s=%s: a URL must start with postgres:// or postgresql://", e->flag, e->arg);
        return -1;
    }
    snprintf(e->path, sizeof(e->path), "%s/data.db", e->arg);
    snprintf(e->where, sizeof(e->where), "%s", e->path);
    struct stat st;
    if (is_source) {
        if (stat(e->arg, &st) != 0) {
            dbcopy_fail("%s=%s: there is no such data directory (%s)", e->flag, e->arg, strerror(errno));
            return -1;
        }
        if (!S_ISDIR(st.st_mode)) {
            dbcopy_fail(
                "%s=%s: not a directory; give the data directory (basalt serve's --dir), which holds data.db",
                e->flag, e->arg);
            return -1;
        }
        if (stat(e->path, &st) != 0) {
            dbcopy_fail("%s=%s: this data directory holds no database (%s does not exist)", e->flag, e->arg,
                        e->path);
            return -1;
        }
        return 0;
    }
    if (stat(e->arg, &st) == 0 && !S_ISDIR(st.st_mode)) {
        dbcopy_fail("%s=%s: not a directory; give a data directory (created if missing) or a postgres:// URL",
                    e->flag, e->arg);
        return -1;
    }
    return 0;
}

/* Opens e; a SQLite destination's folder is created first (only once the source
 * opened, so that a failed copy leaves nothing behind). */
int dbcopy_end_open(dbcopy_end_t *e, const dbcopy_opts_t *o)
{
    if (!e->is_url && strcmp(e->flag, "--to") == 0 && mkdir_p(e->arg) != 0) {
        dbcopy_fail("%s=%s: cannot create the data directory: %s", e->flag, e->arg, strerror(errno));
        return -1;
    }
    store_config_t sc = {.path = e->is_url ? e->arg : e->path,
                         .readers = 1,
                         .max_batch = 1,
                         .busy_timeout_ms = 10000,
                         .connect_timeout_ms = o->connect_timeout_ms,
                         /* Unnamed statements: they work through PgBouncer's
                          * transaction mode, and a cursor's FETCH cannot be prepared. */
                         .prepared_statements = 0};
    bs_error_t err;
    bs_error_init(&err);
    e->store = store_open(&sc, &err);
    if (e->store == NULL) {
        dbcopy_fail("%s=%s: %s", e->flag, e->where, err.message);
        return -1;
    }
    e->rd = store_reader(e->store, 0);
    e->d = dialect_get(store_dialect(e->store));
    return 0;
}

void dbcopy_end_close(dbcopy_end_t *e)
{
    if (e->store == NULL)
        return;
    if (e->in_snapshot) {
        bs_error_t ignored;
        bs_error_init(&ignored);
        store_exec_script(e->rd, "COMMIT", &ignored);
    }
    store_close(e->store);
    e->store = NULL;
}

/* One integer from sql; -1 with err filled on failure. */
int64_t dbcopy_query_int(store_conn_t *c, const char *sql, const bs_value_t *p, size_t np, bs_error_t *err)
{
    store_stmt_t *st = store_query(c, sql, p, np, err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, err);
    int64_t v = -1;
    if (rc == 1) {
        bs_value_t x = store_col(st, 0);
        v = x.type == BS_VAL_INT      ? x.i
            : x.type == BS_VAL_DOUBLE ? (int64_t)x.d
            : x.type == BS_VAL_TEXT   ? atoll(x.s)
                                      : 0;
    } else if (rc == 0) {
        bs_error_set(err, BS_ERR_NOT_FOUND, NULL);
    }
    store_done(st);
    return v;
}

/* 1 if table exists at e, 0 if not, -1 on error. */
int dbcopy_table_exists(dbcopy_end_t *e, const char *table, bs_error_t *err)
{
    bs_value_t p = bs_val_text(table, strlen(table));
    int64_t n = dbcopy_query_int(e->rd, e->d->table_exists_sql, &p, 1, err);
    return n < 0 ? -1 : n > 0;
}

int64_t dbcopy_count_rows(dbcopy_end_t *e, const char *table, bs_error_t *err)
{
    buf_t b;
    buf_init(&b, NULL);
    buf_puts(&b, "SELECT count(*) FROM ");
    sql_ident(&b, table);
    int64_t n = b.oom ? -1 : dbcopy_query_int(e->rd, b.data, NULL, 0, err);
    buf_free(&b);
    return n;
}

/* The identity text of e's database into out; "" when the file identifies it. */
int dbcopy_end_identity(dbcopy_end_t *e, char *out, size_t cap, bs_error_t *err)
{
    out[0] = '\0';
    if (e->d->identity_sql == NULL)
        return 0;
    store_stmt_t *st = store_query(e->rd, e->d->identity_sql, NULL, 0, err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, err);
    if (rc == 1) {
        bs_value_t v = store_col(st, 0);
        snprintf(out, cap, "%.*s", v.s ? (int)v.n : 0, v.s ? v.s : "");
    }
    store_done(st);
    return rc < 0 ? -1 : 0;
}

/* 1 when the two ends are one database. Before opening for files (a missing
 * destination file is no database yet), after opening for URLs. */
int dbcopy_same_files(const dbcopy_end_t *a, const dbcopy_end_t *b)
{
    struct stat sa, sb;
    if (a->is_url || b->is_url)
        return 0;
    if (stat(a->path, &sa) != 0 || stat(b->path, &sb) != 0)
        return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* ---- the source's rows ---- */

/* The raw `_collections` rows of the source, in its order, and the parsed schema. */
static char *dup_text(bs_value_t v)
{
    if (v.type == BS_VAL_TEXT)
        return strndup(v.s ? v.s : "", v.n);
    char tmp[64];
    if (v.type == BS_VAL_INT)
        snprintf(tmp, sizeof(tmp), "%lld", (long long)v.i);
    else if (v.type == BS_VAL_DOUBLE)
        snprintf(tmp, sizeof(tmp), "%.17g", v.d);
    else
        tmp[0] = '\0';
    return strdup(tmp);
}

void dbcopy_coll_rows_free(dbcopy_coll_rows_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        dbcopy_coll_row_t *c = &r->rows[i];
        free(c->id);
        free(c->name);
        free(c->type);
        free(c->data);
        free(c->created);
        free(c->updated);
    }
    free(r->rows);
    r->rows = NULL;
    r->n = 0;
}

int dbcopy_load_coll_rows(dbcopy_end_t *e, dbcopy_coll_rows_t *out, bs_error_t *err)
{
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SELECT id, name, type, system, data, created, updated FROM _collections ORDER BY %s",
             e->d->rowid);
    store_stmt_t *st = store_query(e->rd, sql, NULL, 0, err);
    if (st == NULL)
        return -1;
    size_t cap = 0;
    int rc;
    while ((rc = store_step(st, err)) == 1) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            dbcopy_coll_row_t *n = realloc(out->rows, cap * sizeof(*n));
            if (n == NULL) {
                bs_error_set(err, BS_ERR_NOMEM, NULL);
                rc = -1;
                break;
            }
            out->rows = n;
        }
        dbcopy_coll_row_t *c = &out->rows[out->n++];
        c->id = dup_text(store_col(st, 0));
        c->name = dup_text(store_col(st, 1));
        c->type = dup_text(store_col(st, 2));
        bs_value_t s = store_col(st, 3);
        c->system =
            s.type == BS_VAL_INT ? s.i : s.type == BS_VAL_TEXT && s.n > 0 && (s.s[0] == 't' || s.s[0] == '1');
        c->data = dup_text(store_col(st, 4));
        c->created = dup_text(store_col(st, 5));
        c->updated = dup_text(store_col(st, 6));
        if (!c->id || !c->name || !c->type || !c->data || !c->created || !c->updated) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            rc = -1;
            break;
        }
    }
    store_done(st);
    return rc < 0 ? -1 : 0;
}

/* The settings: ids and values (text). */
void dbcopy_params_free(dbcopy_params_t *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->ids[i]);
        free(p->values[i]);
    }
    free(p->ids);
    free(p->values);
    memset(p, 0, sizeof(*p));
}

int dbcopy_load_params(dbcopy_end_t *e, dbcopy_params_t *out, bs_error_t *err)
{
    store_stmt_t *st = store_query(e->rd, "SELECT id, value FROM _params ORDER BY id", NULL, 0, err);
    if (st == NULL)
        return -1;
    int rc;
    size_t cap = 0;
    while ((rc = store_step(st, err)) == 1) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            char **a = realloc(out->ids, cap * sizeof(*a));
            if (a != NULL)
                out->ids = a;
            char **b = realloc(out->values, cap * sizeof(*b));
            if (b != NULL)
                out->values = b;
            if (a == NULL || b == NULL) {
                bs_error_set(err, BS_ERR_NOMEM, NULL);
                rc = -1;
                break;
            }
        }
        bs_value_t v = store_col(st, 1);
        out->ids[out->n] = dup_text(store_col(st, 0));
        out->values[out->n] = v.type == BS_VAL_NULL ? NULL : dup_text(v);
        out->n++;
    }
    store_done(st);
    return rc < 0 ? -1 : 0;
}

const char *dbcopy_param_get(const dbcopy_params_t *p, const char *id, int *found)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->ids[i], id) == 0) {
            *found = 1;
            return p->values[i];
        }
    *found = 0;
    return NULL;
}

int dbcopy_same_value(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}
