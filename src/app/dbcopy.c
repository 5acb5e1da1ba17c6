/*
 * `basalt db copy`: see dbcopy.h.
 *
 * Order of work, each step safe to repeat:
 *   1. Both ends are checked and opened: a source that holds no Basalt data, a
 *      destination that is the source, or a server that cannot be reached stops here
 *      with a message naming the flag and the place (never a password).
 *   2. The source is read in one snapshot (SQLite: the reader's read transaction,
 *      kept since this process commits nothing through it; PostgreSQL: a REPEATABLE
 *      READ transaction), so a `basalt serve` may keep writing to it: the copy is
 *      the state at its start, and the counts it verifies are that state's.
 *   3. Schema: the destination gets the system tables, then every source collection
 *      it lacks, through schema_apply (its table, indexes and `_collections` row),
 *      the row then made byte-identical to the source's (definition, token secret,
 *      dates). A destination collection whose definition differs stops the copy
 *      before anything is written, unless it is a system collection without records
 *      (what `basalt serve` creates on a new database) or --force is given: then it
 *      is dropped with its records and created as the source has it. `_params` rows
 *      are added; one that differs is a conflict too (--force overwrites it).
 *   4. Records: per collection, in the source's insertion order (rowid / _rowid, so
 *      that `@rowid` and unsorted lists keep their order), in batches of --batch rows,
 *      each batch one destination transaction of multi-row INSERTs that skip ids
 *      already there. A re-run resumes after the last row the destination holds when
 *      everything before it is there (else it reads the collection again from the
 *      start, skipping what exists); SIGINT stops after the current batch.
 *   5. Verification: every table's row count, source (same snapshot) against
 *      destination, and every definition and setting compared; a report and exit 1
 *      on any difference.
 *
 * Records already at the destination are never changed: a copy is a move, not a
 * sync. Single-threaded; the stores are used through store.h only (writes as
 * store_write_sync jobs, one transaction each).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/dbcopy.h"
#include "base/log.h"
#include "base/util.h"
#include "core/schema.h"
#include "rules/dialect.h"

#define DEFAULT_BATCH 1000
#define MAX_BATCH 100000
/* Rows per INSERT statement: SQLite allows 32,766 parameters, PostgreSQL 65,535. */
#define MAX_STMT_ROWS 500
#define MAX_STMT_PARAMS 30000

enum { PROGRESS_OFF, PROGRESS_LINES, PROGRESS_BAR };

typedef struct {
    const char *from, *to;
    int force;
    int batch;
    int progress;
    int connect_timeout_ms;
} opts_t;

/* One end of the copy. */
typedef struct {
    const char *flag; /* "--from" / "--to" */
    const char *arg;  /* as given */
    int is_url;
    char where[1200]; /* for messages: the URL without its password, or the file */
    char path[1200];  /* SQLite: DIR/data.db */
    store_t *store;
    store_conn_t *rd; /* reader 0 */
    const dialect_t *d;
    int in_snapshot; /* snapshot_begin ran */
} end_t;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---- messages ---- */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("basalt db copy: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

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

/* Prints n with thousands separators into out (at least 32 bytes). */
static const char *fmt_n(int64_t n, char *out)
{
    char digits[32];
    int len = snprintf(digits, sizeof(digits), "%lld", (long long)(n < 0 ? -n : n));
    char *w = out;
    if (n < 0)
        *w++ = '-';
    for (int i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            *w++ = ',';
        *w++ = digits[i];
    }
    *w = '\0';
    return out;
}

/* ---- progress ---- */

typedef struct {
    int mode;
    const char *name;
    int64_t done, total;
    uint64_t started_ns, last_ns;
    int drawn; /* the bar is on the terminal's current line */
} progress_t;

static void progress_start(progress_t *p, int mode, const char *name, int64_t done, int64_t total)
{
    p->mode = mode;
    p->name = name;
    p->done = done;
    p->total = total;
    p->started_ns = p->last_ns = util_mono_ns();
    p->drawn = 0;
}

static double rate(const progress_t *p, int64_t copied)
{
    double s = (double)(util_mono_ns() - p->started_ns) / 1e9;
    return s > 1e-6 ? (double)copied / s : 0;
}

/* copied: rows handled by this run (for the rate). final: the collection is done. */
static void progress_show(progress_t *p, int64_t copied, int final)
{
    if (p->mode == PROGRESS_OFF)
        return;
    uint64_t now = util_mono_ns();
    uint64_t every = p->mode == PROGRESS_BAR ? 100000000u : 2000000000u;
    if (!final && now - p->last_ns < every)
        return;
    p->last_ns = now;
    char a[32], b[32], r[32];
    int pct = p->total > 0 ? (int)(p->done * 100 / p->total) : 100;
    if (pct > 100)
        pct = 100;
    fmt_n(p->done, a);
    fmt_n(p->total, b);
    fmt_n((int64_t)rate(p, copied), r);
    if (p->mode == PROGRESS_BAR) {
        char bar[31];
        int fill = pct * 30 / 100;
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r\033[K%-24.24s [%s] %3d%%  %s/%s rows  %s rows/s", p->name, bar, pct, a, b, r);
        if (final)
            fputc('\n', stderr);
        p->drawn = !final;
    } else {
        fprintf(stderr, "%s: %s/%s rows (%d%%), %s rows/s%s\n", p->name, a, b, pct, r, final ? ", done" : "");
    }
    fflush(stderr);
}

/* Ends the bar's line before another message. */
static void progress_break(progress_t *p)
{
    if (p->mode == PROGRESS_BAR && p->drawn) {
        fputc('\n', stderr);
        p->drawn = 0;
    }
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
static int end_locate(end_t *e, int is_source)
{
    e->is_url = store_is_url(e->arg);
    if (e->is_url) {
        redact_url(e->arg, e->where, sizeof(e->where));
        return 0;
    }
    if (strstr(e->arg, "://") != NULL) {
        fail("%s=%s: a URL must start with postgres:// or postgresql://", e->flag, e->arg);
        return -1;
    }
    snprintf(e->path, sizeof(e->path), "%s/data.db", e->arg);
    snprintf(e->where, sizeof(e->where), "%s", e->path);
    struct stat st;
    if (is_source) {
        if (stat(e->arg, &st) != 0) {
            fail("%s=%s: there is no such data directory (%s)", e->flag, e->arg, strerror(errno));
            return -1;
        }
        if (!S_ISDIR(st.st_mode)) {
            fail(
                "%s=%s: not a directory; give the data directory (basalt serve's --dir), which holds data.db",
                e->flag, e->arg);
            return -1;
        }
        if (stat(e->path, &st) != 0) {
            fail("%s=%s: this data directory holds no database (%s does not exist)", e->flag, e->arg,
                 e->path);
            return -1;
        }
        return 0;
    }
    if (stat(e->arg, &st) == 0 && !S_ISDIR(st.st_mode)) {
        fail("%s=%s: not a directory; give a data directory (created if missing) or a postgres:// URL",
             e->flag, e->arg);
        return -1;
    }
    return 0;
}

/* Opens e; a SQLite destination's folder is created first (only once the source
 * opened, so that a failed copy leaves nothing behind). */
static int end_open(end_t *e, const opts_t *o)
{
    if (!e->is_url && strcmp(e->flag, "--to") == 0 && mkdir_p(e->arg) != 0) {
        fail("%s=%s: cannot create the data directory: %s", e->flag, e->arg, strerror(errno));
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
        fail("%s=%s: %s", e->flag, e->where, err.message);
        return -1;
    }
    e->rd = store_reader(e->store, 0);
    e->d = dialect_get(store_dialect(e->store));
    return 0;
}

static void end_close(end_t *e)
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
static int64_t query_int(store_conn_t *c, const char *sql, const bs_value_t *p, size_t np, bs_error_t *err)
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
static int table_exists(end_t *e, const char *table, bs_error_t *err)
{
    bs_value_t p = bs_val_text(table, strlen(table));
    int64_t n = query_int(e->rd, e->d->table_exists_sql, &p, 1, err);
    return n < 0 ? -1 : n > 0;
}

static int64_t count_rows(end_t *e, const char *table, bs_error_t *err)
{
    buf_t b;
    buf_init(&b, NULL);
    buf_puts(&b, "SELECT count(*) FROM ");
    sql_ident(&b, table);
    int64_t n = b.oom ? -1 : query_int(e->rd, b.data, NULL, 0, err);
    buf_free(&b);
    return n;
}

/* The identity text of e's database into out; "" when the file identifies it. */
static int end_identity(end_t *e, char *out, size_t cap, bs_error_t *err)
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
static int same_files(const end_t *a, const end_t *b)
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
typedef struct {
    char *id, *name, *type, *data, *created, *updated;
    int64_t system;
    int unpartitioned; /* a partitioned collection copied as a plain one (see strip_partitions) */
} coll_row_t;

typedef struct {
    coll_row_t *rows;
    size_t n;
} coll_rows_t;

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

static void coll_rows_free(coll_rows_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        coll_row_t *c = &r->rows[i];
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

static int load_coll_rows(end_t *e, coll_rows_t *out, bs_error_t *err)
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
            coll_row_t *n = realloc(out->rows, cap * sizeof(*n));
            if (n == NULL) {
                bs_error_set(err, BS_ERR_NOMEM, NULL);
                rc = -1;
                break;
            }
            out->rows = n;
        }
        coll_row_t *c = &out->rows[out->n++];
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
typedef struct {
    char **ids, **values; /* values[i] NULL for SQL NULL */
    size_t n;
} params_t;

static void params_free(params_t *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->ids[i]);
        free(p->values[i]);
    }
    free(p->ids);
    free(p->values);
    memset(p, 0, sizeof(*p));
}

static int load_params(end_t *e, params_t *out, bs_error_t *err)
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

static const char *param_get(const params_t *p, const char *id, int *found)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->ids[i], id) == 0) {
            *found = 1;
            return p->values[i];
        }
    *found = 0;
    return NULL;
}

static int same_value(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* ---- the schema step ---- */

/* Two definitions are the same when their stored forms agree after a round trip
 * through the parser (formatting aside). */
static int same_definition(const collection_t *a, const collection_t *b)
{
    buf_t x, y;
    buf_init(&x, NULL);
    buf_init(&y, NULL);
    collection_to_json(a, &x, 1);
    collection_to_json(b, &y, 1);
    int same = !x.oom && !y.oom && x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    buf_free(&x);
    buf_free(&y);
    return same;
}

enum { ACT_NONE, ACT_CREATE, ACT_REPLACE };

typedef struct {
    store_job_t job;
    const schema_t *src_schema, *dst_schema;
    const coll_rows_t *rows;
    const int *action;
    /* For ACT_REPLACE: the destination collections to drop first (by id; NULL). */
    const collection_t *const *drop_a, *const *drop_b;
    const params_t *src_params, *dst_params;
    int force;
} schema_job_t;

static int drop_collection(store_conn_t *c, const collection_t *old, bs_error_t *err)
{
    buf_t b;
    buf_init(&b, NULL);
    buf_puts(&b, "DROP TABLE IF EXISTS ");
    sql_ident(&b, old->name);
    int rc = b.oom ? -1 : store_exec_script(c, b.data, err);
    buf_free(&b);
    if (rc != 0)
        return -1;
    bs_value_t p = bs_val_text(old->id, strlen(old->id));
    return store_exec(c, "DELETE FROM _collections WHERE id = ?1", &p, 1, err) < 0 ? -1 : 0;
}

static int bootstrap_run(store_job_t *job, store_conn_t *c)
{
    return store_exec_script(c, dialect_get(store_conn_dialect(c))->bootstrap_sql, &job->err);
}

static int schema_run(store_job_t *job, store_conn_t *c)
{
    schema_job_t *j = (schema_job_t *)job;
    for (size_t i = 0; i < j->rows->n; i++) {
        if (j->action[i] == ACT_NONE)
            continue;
        const collection_t *nu = schema_find(j->src_schema, j->rows->rows[i].id);
        if (j->action[i] == ACT_REPLACE) {
            if (j->drop_a[i] != NULL && drop_collection(c, j->drop_a[i], &job->err) != 0)
                return -1;
            if (j->drop_b[i] != NULL && j->drop_b[i] != j->drop_a[i] &&
                drop_collection(c, j->drop_b[i], &job->err) != 0)
                return -1;
        }
        if (schema_apply(c, j->dst_schema, NULL, nu, job->arena, &job->err) != 0)
            return -1;
        /* schema_apply wrote the definition as this build serializes it, with
         * created = updated: the row becomes the source's, byte for byte. */
        const coll_row_t *r = &j->rows->rows[i];
        bs_value_t p[7] = {
            bs_val_text(r->id, strlen(r->id)),           bs_val_text(r->name, strlen(r->name)),
            bs_val_text(r->type, strlen(r->type)),       bs_val_int(r->system),
            bs_val_text(r->created, strlen(r->created)), bs_val_text(r->updated, strlen(r->updated)),
            bs_val_text(r->data, strlen(r->data))};
        /* (A collection made plain keeps the definition schema_apply wrote.) */
        const char *sql = r->unpartitioned ? "UPDATE _collections SET name = ?2, type = ?3, system = ?4, "
                                             "created = ?5, updated = ?6 WHERE id = ?1"
                                           : "UPDATE _collections SET name = ?2, type = ?3, system = ?4, "
                                             "created = ?5, updated = ?6, data = ?7 WHERE id = ?1";
        if (store_exec(c, sql, p, r->unpartitioned ? 6 : 7, &job->err) < 0)
            return -1;
    }
    for (size_t i = 0; i < j->src_params->n; i++) {
        const char *id = j->src_params->ids[i], *v = j->src_params->values[i];
        int found;
        const char *have = param_get(j->dst_params, id, &found);
        if (found && same_value(have, v))
            continue;
        bs_value_t p[2] = {bs_val_text(id, strlen(id)), v ? bs_val_text(v, strlen(v)) : bs_val_null()};
        if (store_exec(c,
                       found ? "UPDATE _params SET value = ?2 WHERE id = ?1"
                             : "INSERT INTO _params (id, value) VALUES (?1, ?2)",
                       p, 2, &job->err) < 0)
            return -1;
    }
    return 0;
}

/* Plans and applies the schema step. Returns 0, or -1 after printing why. */
static int copy_schema(end_t *src, end_t *dst, const opts_t *o, const schema_t *ss, const coll_rows_t *rows,
                       const params_t *sp)
{
    bs_error_t err;
    bs_error_init(&err);
    arena_t a;
    arena_init(&a, 4096);
    store_job_t boot = {.run = bootstrap_run, .arena = &a};
    if (store_write_sync(dst->store, &boot) != 0) {
        fail("%s=%s: cannot create the system tables: %s", dst->flag, dst->where, boot.err.message);
        arena_free(&a);
        return -1;
    }
    schema_t *ds = schema_load(dst->rd, &err);
    params_t dp = {0};
    int rc = -1;
    int *action = calloc(rows->n + 1, sizeof(*action));
    const collection_t **drop_a = calloc(rows->n + 1, sizeof(*drop_a));
    const collection_t **drop_b = calloc(rows->n + 1, sizeof(*drop_b));
    if (ds == NULL || action == NULL || drop_a == NULL || drop_b == NULL) {
        fail("%s=%s: cannot read the collections: %s", dst->flag, dst->where, err.message);
        goto out;
    }
    if (load_params(dst, &dp, &err) != 0) {
        fail("%s=%s: cannot read the settings (_params): %s", dst->flag, dst->where, err.message);
        goto out;
    }
    int conflicts = 0;
    for (size_t i = 0; i < rows->n; i++) {
        const collection_t *c = schema_find(ss, rows->rows[i].id);
        const collection_t *by_id = NULL, *by_name = NULL;
        for (size_t k = 0; k < ds->ncols; k++) {
            if (strcmp(ds->cols[k]->id, c->id) == 0)
                by_id = ds->cols[k];
            if (strcasecmp(ds->cols[k]->name, c->name) == 0)
                by_name = ds->cols[k];
        }
        if (by_id != NULL && by_id == by_name && same_definition(by_id, c)) {
            action[i] = ACT_NONE;
            continue;
        }
        if (by_id == NULL && by_name == NULL) {
            action[i] = ACT_CREATE;
            continue;
        }
        /* A differing collection: replaceable when forced, or when it is one that a new
         * database gets at its first start (a system collection, or the default users
         * by its id) holding no records: a database that `basalt serve` opened once. */
        int replaceable = 1;
        for (int k = 0; k < 2; k++) {
            const collection_t *x = k ? by_name : by_id;
            int first_start = (x != NULL && x->system && c->system) ||
                              (x != NULL && strcmp(x->id, SCHEMA_DEFAULT_USERS_ID) == 0);
            if (x != NULL && !(first_start && count_rows(dst, x->name, &err) == 0))
                replaceable = 0;
        }
        replaceable |= o->force;
        if (!replaceable) {
            const collection_t *x = by_id ? by_id : by_name;
            fail("%s=%s: collection \"%s\" (id %s) exists with a different definition than the source's "
                 "\"%s\" (id %s); nothing was copied. Give --force to replace it (its records at the "
                 "destination are deleted), or copy into another database.",
                 dst->flag, dst->where, x->name, x->id, c->name, c->id);
            conflicts++;
            continue;
        }
        action[i] = ACT_REPLACE;
        drop_a[i] = by_id;
        drop_b[i] = by_name;
    }
    for (size_t i = 0; i < sp->n; i++) {
        int found;
        const char *have = param_get(&dp, sp->ids[i], &found);
        if (found && !same_value(have, sp->values[i]) && !o->force) {
            fail(
                "%s=%s: setting \"%s\" (_params) differs from the source's; nothing was copied. Give --force "
                "to overwrite it.",
                dst->flag, dst->where, sp->ids[i]);
            conflicts++;
        }
    }
    if (conflicts > 0)
        goto out;
    schema_job_t job = {.job = {.run = schema_run, .arena = &a},
                        .src_schema = ss,
                        .dst_schema = ds,
                        .rows = rows,
                        .action = action,
                        .drop_a = drop_a,
                        .drop_b = drop_b,
                        .src_params = sp,
                        .dst_params = &dp,
                        .force = o->force};
    if (store_write_sync(dst->store, &job.job) != 0) {
        fail("%s=%s: cannot create the collections: %s", dst->flag, dst->where, job.job.err.message);
        goto out;
    }
    size_t created = 0, replaced = 0;
    for (size_t i = 0; i < rows->n; i++) {
        created += action[i] == ACT_CREATE;
        replaced += action[i] == ACT_REPLACE;
        if (action[i] == ACT_REPLACE && (o->force || o->progress != PROGRESS_OFF))
            fprintf(stderr, "replaced collection \"%s\" at the destination\n", rows->rows[i].name);
    }
    if (o->progress != PROGRESS_OFF)
        fprintf(stderr,
                "schema: %zu collections (%zu created, %zu replaced, %zu already there), %zu settings\n",
                rows->n, created, replaced, rows->n - created - replaced, sp->n);
    rc = 0;
out:
    free(action);
    free(drop_a);
    free(drop_b);
    params_free(&dp);
    schema_free(ds);
    arena_free(&a);
    return rc;
}

/* ---- the records step ---- */

typedef struct {
    store_job_t job;
    const collection_t *c;
    const char *key_col; /* quoted "id" */
    bs_value_t *vals;    /* nrows * ncols, text in the batch's arena */
    size_t nrows, ncols;
    int64_t inserted;
} batch_job_t;

static void insert_sql(buf_t *b, const dialect_t *d, const collection_t *c, size_t rows)
{
    buf_puts(b, "INSERT INTO ");
    sql_ident(b, c->name);
    buf_puts(b, " (");
    for (size_t i = 0; i < c->nfields; i++) {
        if (i)
            buf_puts(b, ", ");
        sql_ident(b, c->fields[i].name);
    }
    buf_puts(b, ") VALUES ");
    size_t n = 1;
    for (size_t r = 0; r < rows; r++) {
        buf_puts(b, r ? ", (" : "(");
        for (size_t i = 0; i < c->nfields; i++) {
            if (i)
                buf_puts(b, ", ");
            dialect_placeholder(d, b, n++);
        }
        buf_putc(b, ')');
    }
    /* A partitioned table's key is (id, partition field): the only unique index an
     * ON CONFLICT can name there (ids stay unique through the id table's trigger). */
    const field_t *pf =
        c->partition_interval != PART_NONE ? collection_field_by_id(c, c->partition_field_id) : NULL;
    buf_t key;
    buf_init(&key, b->arena);
    buf_puts(&key, "\"id\"");
    if (pf != NULL) {
        buf_puts(&key, ", ");
        sql_ident(&key, pf->name);
    }
    buf_printf(b, d->insert_ignore_fmt, key.oom ? "\"id\"" : key.data);
    if (b->arena == NULL)
        buf_free(&key);
}

static int batch_run(store_job_t *job, store_conn_t *conn)
{
    batch_job_t *j = (batch_job_t *)job;
    const dialect_t *d = dialect_get(store_conn_dialect(conn));
    size_t per = MAX_STMT_PARAMS / (j->ncols ? j->ncols : 1);
    if (per > MAX_STMT_ROWS)
        per = MAX_STMT_ROWS;
    if (per < 1)
        per = 1;
    j->inserted = 0;
    for (size_t at = 0; at < j->nrows; at += per) {
        size_t n = j->nrows - at < per ? j->nrows - at : per;
        buf_t sql;
        buf_init(&sql, job->arena);
        insert_sql(&sql, d, j->c, n);
        if (sql.oom) {
            bs_error_set(&job->err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        int64_t k = store_exec(conn, sql.data, j->vals + at * j->ncols, n * j->ncols, &job->err);
        if (k < 0)
            return -1;
        j->inserted += k;
    }
    return 0;
}

/* The source's rows of one collection after insertion-order key `after`, a batch at
 * a time: a stepped statement (SQLite) or a cursor (PostgreSQL). */
typedef struct {
    end_t *e;
    store_stmt_t *st; /* stepped statement, or NULL */
    int cursor_open;
    char fetch[128];
    int done;
} scan_t;

static int scan_open(scan_t *s, end_t *e, const collection_t *c, int64_t after, int batch, bs_error_t *err)
{
    memset(s, 0, sizeof(*s));
    s->e = e;
    buf_t q;
    buf_init(&q, NULL);
    buf_printf(&q, "SELECT %s", e->d->rowid);
    for (size_t i = 0; i < c->nfields; i++) {
        buf_puts(&q, ", ");
        sql_ident(&q, c->fields[i].name);
    }
    buf_puts(&q, " FROM ");
    sql_ident(&q, c->name);
    buf_printf(&q, " WHERE %s > %lld ORDER BY %s", e->d->rowid, (long long)after, e->d->rowid);
    int rc = 0;
    if (q.oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        rc = -1;
    } else if (e->d->cursor_open_fmt != NULL) {
        buf_t open;
        buf_init(&open, NULL);
        buf_printf(&open, e->d->cursor_open_fmt, "\"_dbcopy\"", q.data);
        rc = open.oom ? -1 : store_exec_script(e->rd, open.data, err);
        buf_free(&open);
        s->cursor_open = rc == 0;
        snprintf(s->fetch, sizeof(s->fetch), e->d->cursor_fetch_fmt, batch, "\"_dbcopy\"");
    } else {
        s->st = store_query(e->rd, q.data, NULL, 0, err);
        rc = s->st == NULL ? -1 : 0;
    }
    buf_free(&q);
    return rc;
}

static void scan_close(scan_t *s)
{
    store_done(s->st);
    s->st = NULL;
    if (s->cursor_open) {
        char sql[64];
        snprintf(sql, sizeof(sql), s->e->d->cursor_close_fmt, "\"_dbcopy\"");
        bs_error_t ignored;
        bs_error_init(&ignored);
        store_exec_script(s->e->rd, sql, &ignored);
        s->cursor_open = 0;
    }
}

/* Copies one row's cells (after the key in column 0) into vals, text into a. */
static int take_row(store_stmt_t *st, size_t ncols, bs_value_t *vals, int64_t *key, arena_t *a)
{
    bs_value_t k = store_col(st, 0);
    *key = k.type == BS_VAL_INT ? k.i : k.type == BS_VAL_DOUBLE ? (int64_t)k.d : 0;
    for (size_t i = 0; i < ncols; i++) {
        bs_value_t v = store_col(st, (int)i + 1);
        if (v.type == BS_VAL_TEXT) {
            char *copy = arena_alloc(a, v.n + 1);
            if (copy == NULL)
                return -1;
            if (v.n)
                memcpy(copy, v.s, v.n);
            copy[v.n] = '\0';
            v.s = copy;
        }
        vals[i] = v;
    }
    return 0;
}

/* Reads up to max rows into vals; returns the count, or -1 (err filled). */
static long scan_next(scan_t *s, size_t ncols, size_t max, bs_value_t *vals, int64_t *last_key, arena_t *a,
                      bs_error_t *err)
{
    if (s->done)
        return 0;
    size_t n = 0;
    if (s->st != NULL) {
        while (n < max) {
            int rc = store_step(s->st, err);
            if (rc < 0)
                return -1;
            if (rc == 0) {
                s->done = 1;
                break;
            }
            if (take_row(s->st, ncols, vals + n * ncols, last_key, a) != 0) {
                bs_error_set(err, BS_ERR_NOMEM, NULL);
                return -1;
            }
            n++;
        }
        return (long)n;
    }
    store_stmt_t *st = store_query(s->e->rd, s->fetch, NULL, 0, err);
    if (st == NULL)
        return -1;
    int rc;
    while (n < max && (rc = store_step(st, err)) == 1) {
        if (take_row(st, ncols, vals + n * ncols, last_key, a) != 0) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            store_done(st);
            return -1;
        }
        n++;
    }
    store_done(st);
    if (n < max)
        s->done = 1;
    return (long)n;
}

/* Where to resume: the source's insertion-order key of the last row the destination
 * holds, when every source row up to it is there (then *have is their number);
 * otherwise 0 and the collection is read from the start. */
static int64_t resume_point(end_t *src, end_t *dst, const collection_t *c, int64_t dst_rows, int64_t *have,
                            bs_error_t *err)
{
    *have = 0;
    if (dst_rows <= 0)
        return 0;
    buf_t b;
    buf_init(&b, NULL);
    buf_puts(&b, "SELECT id FROM ");
    sql_ident(&b, c->name);
    buf_printf(&b, " ORDER BY %s DESC LIMIT 1", dst->d->rowid);
    char id[256] = "";
    store_stmt_t *st = b.oom ? NULL : store_query(dst->rd, b.data, NULL, 0, err);
    buf_free(&b);
    if (st == NULL)
        return -1;
    if (store_step(st, err) == 1) {
        bs_value_t v = store_col(st, 0);
        if (v.type == BS_VAL_TEXT && v.n < sizeof(id))
            snprintf(id, sizeof(id), "%.*s", (int)v.n, v.s);
    }
    store_done(st);
    if (id[0] == '\0')
        return 0;
    buf_init(&b, NULL);
    buf_printf(&b, "SELECT %s FROM ", src->d->rowid);
    sql_ident(&b, c->name);
    buf_puts(&b, " WHERE id = ?1");
    bs_value_t p = bs_val_text(id, strlen(id));
    bs_error_t nf;
    bs_error_init(&nf);
    int64_t key = b.oom ? -1 : query_int(src->rd, b.data, &p, 1, &nf);
    buf_free(&b);
    if (key < 0)
        return 0; /* not in the source: read everything again */
    buf_init(&b, NULL);
    buf_puts(&b, "SELECT count(*) FROM ");
    sql_ident(&b, c->name);
    buf_printf(&b, " WHERE %s <= ?1", src->d->rowid);
    bs_value_t k = bs_val_int(key);
    int64_t before = b.oom ? -1 : query_int(src->rd, b.data, &k, 1, err);
    buf_free(&b);
    if (before < 0)
        return -1;
    if (before != dst_rows)
        return 0;
    *have = before;
    return key;
}

/* Copies the records of c. Returns 0, 1 when interrupted, -1 after printing why. */
static int copy_records(end_t *src, end_t *dst, const opts_t *o, const collection_t *c, int64_t *inserted_out)
{
    bs_error_t err;
    bs_error_init(&err);
    int64_t total = count_rows(src, c->name, &err);
    if (total < 0) {
        fail("%s=%s: cannot count the records of \"%s\": %s", src->flag, src->where, c->name, err.message);
        return -1;
    }
    int64_t dst_rows = count_rows(dst, c->name, &err);
    if (dst_rows < 0) {
        fail("%s=%s: cannot count the records of \"%s\": %s", dst->flag, dst->where, c->name, err.message);
        return -1;
    }
    int64_t have = 0;
    int64_t after = resume_point(src, dst, c, dst_rows, &have, &err);
    if (after < 0) {
        fail("cannot find where to resume \"%s\": %s", c->name, err.message);
        return -1;
    }
    if (dst_rows > 0 && o->progress != PROGRESS_OFF) {
        char a[32], b[32];
        if (after > 0)
            fprintf(stderr, "%s: resuming after %s rows already at the destination\n", c->name,
                    fmt_n(have, a));
        else if (dst_rows > 0)
            fprintf(
                stderr,
                "%s: the destination holds %s rows already; reading all %s again (existing ids are kept)\n",
                c->name, fmt_n(dst_rows, a), fmt_n(total, b));
    }
    progress_t pr;
    progress_start(&pr, o->progress, c->name, have, total);
    scan_t scan;
    if (scan_open(&scan, src, c, after, o->batch, &err) != 0) {
        fail("%s=%s: cannot read the records of \"%s\": %s", src->flag, src->where, c->name, err.message);
        return -1;
    }
    size_t ncols = c->nfields;
    bs_value_t *vals = malloc((size_t)o->batch * (ncols ? ncols : 1) * sizeof(*vals));
    int rc = 0;
    int64_t copied = 0, inserted = 0;
    if (vals == NULL) {
        fail("out of memory for a batch of %d rows", o->batch);
        rc = -1;
    }
    while (rc == 0) {
        if (interrupted) {
            rc = 1;
            break;
        }
        arena_t a;
        arena_init(&a, 64 * 1024);
        int64_t last_key = after;
        long n = scan_next(&scan, ncols, (size_t)o->batch, vals, &last_key, &a, &err);
        if (n < 0) {
            progress_break(&pr);
            fail("%s=%s: cannot read the records of \"%s\": %s", src->flag, src->where, c->name, err.message);
            arena_free(&a);
            rc = -1;
            break;
        }
        if (n == 0) {
            arena_free(&a);
            break;
        }
        batch_job_t job = {
            .job = {.run = batch_run, .arena = &a}, .c = c, .vals = vals, .nrows = (size_t)n, .ncols = ncols};
        if (store_write_sync(dst->store, &job.job) != 0) {
            progress_break(&pr);
            fail("%s=%s: cannot write the records of \"%s\" (none of this batch of %ld was kept): %s",
                 dst->flag, dst->where, c->name, n, job.job.err.message);
            arena_free(&a);
            rc = -1;
            break;
        }
        arena_free(&a);
        after = last_key;
        copied += n;
        inserted += job.inserted;
        pr.done += n;
        progress_show(&pr, copied, 0);
    }
    free(vals);
    scan_close(&scan);
    if (rc == 0) {
        pr.done = pr.done > total ? total : pr.done;
        progress_show(&pr, copied, 1);
    } else {
        progress_break(&pr);
    }
    if (rc == 1) {
        char a[32], b[32];
        fprintf(stderr,
                "basalt db copy: interrupted: %s of %s rows of \"%s\" copied; run the same command again "
                "to finish\n",
                fmt_n(pr.done, a), fmt_n(total, b), c->name);
    }
    *inserted_out += inserted;
    return rc;
}

/* ---- verification ---- */

static int verify(end_t *src, end_t *dst, const schema_t *ss, const coll_rows_t *rows, const params_t *sp)
{
    bs_error_t err;
    bs_error_init(&err);
    int bad = 0;
    int64_t total = 0;
    for (size_t i = 0; i < rows->n; i++) {
        const collection_t *c = schema_find(ss, rows->rows[i].id);
        int64_t a = count_rows(src, c->name, &err), b = count_rows(dst, c->name, &err);
        total += a > 0 ? a : 0;
        if (a < 0 || b < 0 || a != b) {
            char x[32], y[32];
            if (!bad)
                fprintf(stderr, "basalt db copy: verification FAILED:\n");
            fprintf(stderr, "  %-24s source %s rows, destination %s rows%s\n", c->name,
                    a < 0 ? "?" : fmt_n(a, x), b < 0 ? "?" : fmt_n(b, y),
                    a >= 0 && b > a ? " (the destination holds records the source has not)" : "");
            bad++;
        }
    }
    /* Definitions and settings, as the source has them. */
    coll_rows_t dr = {0};
    params_t dp = {0};
    if (load_coll_rows(dst, &dr, &err) != 0 || load_params(dst, &dp, &err) != 0) {
        fprintf(stderr,
                "basalt db copy: verification FAILED: cannot read the destination's definitions: %s\n",
                err.message);
        bad++;
    } else {
        for (size_t i = 0; i < rows->n; i++) {
            const coll_row_t *r = &rows->rows[i], *m = NULL;
            for (size_t k = 0; k < dr.n && m == NULL; k++)
                if (strcmp(dr.rows[k].id, r->id) == 0)
                    m = &dr.rows[k];
            int same = m != NULL && strcmp(m->name, r->name) == 0;
            if (same && r->unpartitioned) {
                bs_error_t perr;
                bs_error_init(&perr);
                collection_t *have = collection_from_stored(m->data, &perr);
                same = have != NULL && same_definition(have, schema_find(ss, r->id));
                collection_free(have);
            } else if (same) {
                same = strcmp(m->data, r->data) == 0;
            }
            if (!same) {
                if (!bad)
                    fprintf(stderr, "basalt db copy: verification FAILED:\n");
                fprintf(stderr, "  collection \"%s\": the destination's definition %s\n", r->name,
                        m == NULL ? "is missing" : "differs");
                bad++;
            }
        }
        for (size_t i = 0; i < sp->n; i++) {
            int found;
            const char *v = param_get(&dp, sp->ids[i], &found);
            if (!found || !same_value(v, sp->values[i])) {
                if (!bad)
                    fprintf(stderr, "basalt db copy: verification FAILED:\n");
                fprintf(stderr, "  setting \"%s\": %s at the destination\n", sp->ids[i],
                        found ? "differs" : "missing");
                bad++;
            }
        }
    }
    coll_rows_free(&dr);
    params_free(&dp);
    if (bad)
        return -1;
    char t[32];
    fprintf(stderr,
            "verified: %zu collections, %s records and %zu settings match (source %s, destination %s)\n",
            rows->n, fmt_n(total, t), sp->n, src->where, dst->where);
    return 0;
}

/* A destination without partitions (SQLite refuses the option) takes a partitioned
 * collection as a plain one: same fields, indexes and records, its definition
 * without "partition". Changes the source's parsed definitions in ss (owned here). */
static void strip_partitions(const end_t *dst, schema_t *ss, coll_rows_t *rows, const opts_t *o)
{
    if (store_dialect(dst->store) == RULES_DIALECT_POSTGRES)
        return;
    for (size_t i = 0; i < rows->n; i++) {
        collection_t *c = (collection_t *)schema_find(ss, rows->rows[i].id);
        if (c == NULL || c->partition_interval == PART_NONE)
            continue;
        c->partition_interval = PART_NONE;
        free(c->partition_field_id);
        c->partition_field_id = NULL;
        rows->rows[i].unpartitioned = 1;
        if (o->progress != PROGRESS_OFF)
            fprintf(stderr,
                    "%s: partitioned at the source; %s has no partitions, so it becomes a plain collection\n",
                    c->name, dst->where);
    }
}

/* ---- the command ---- */

void dbcopy_print_help(FILE *out)
{
    fprintf(out,
            "Usage: basalt db copy --from=DIR|URL --to=URL|DIR [--force] [--batch=N] [--progress=MODE]\n"
            "\n"
            "Copies a Basalt deployment between an embedded data directory (SQLite) and a PostgreSQL\n"
            "database, either way (or between two of a kind): every collection definition (system ones\n"
            "too, with their indexes and token secrets), every record as stored (password hashes and\n"
            "token keys included, so users keep their passwords and issued tokens stay valid), and\n"
            "the settings (_params). Then it compares the row counts of every table and exits 1 with\n"
            "a report if any differs.\n"
            "\n"
            "  --from=DIR|URL    the source: a data directory (basalt serve's --dir, holding data.db)\n"
            "                    or a postgres:// URL. A server may keep serving it: the copy reads\n"
            "                    one snapshot (what was committed when it started).\n"
            "  --to=URL|DIR      the destination: a postgres:// URL (the database must exist) or a\n"
            "                    data directory (created if missing). Must not be the source.\n"
            "                    Do not serve it while copying; start basalt on it afterwards.\n"
            "  --force           replace destination collections whose definition differs from the\n"
            "                    source's (they are dropped with their records, then copied), and\n"
            "                    overwrite differing settings. Without it such a difference stops the\n"
            "                    copy before anything is written. Records already at the destination\n"
            "                    are never changed.\n"
            "  --batch=N         rows per destination transaction (default %d, 1..%d).\n"
            "  --progress=MODE   auto (a bar when stderr is a terminal, else lines), bar, lines or off.\n"
            "  --connect-timeout-ms=N  PostgreSQL connection time-out (default 5000).\n"
            "\n"
            "Interrupted (Ctrl-C stops after the current batch; a kill or a crash loses at most the\n"
            "batch in flight), run the same command again: it resumes and never duplicates a record.\n"
            "Exit status: 0 copied and verified, 1 failed or a count differs, 2 bad usage,\n"
            "130 interrupted.\n",
            DEFAULT_BATCH, MAX_BATCH);
}

static int parse_int_flag(const char *name, const char *v, long lo, long hi, int *out)
{
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (v[0] == '\0' || *end != '\0' || errno != 0 || n < lo || n > hi) {
        fail("--%s must be a whole number from %ld to %ld, not \"%s\"", name, lo, hi, v);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int parse_opts(int argc, char **argv, opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->batch = DEFAULT_BATCH;
    o->connect_timeout_ms = 5000;
    const char *progress = "auto";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--from=", 7) == 0)
            o->from = a + 7;
        else if (strncmp(a, "--to=", 5) == 0)
            o->to = a + 5;
        else if (strcmp(a, "--force") == 0)
            o->force = 1;
        else if (strncmp(a, "--batch=", 8) == 0) {
            if (parse_int_flag("batch", a + 8, 1, MAX_BATCH, &o->batch) != 0)
                return -1;
        } else if (strncmp(a, "--connect-timeout-ms=", 21) == 0) {
            if (parse_int_flag("connect-timeout-ms", a + 21, 1, 600000, &o->connect_timeout_ms) != 0)
                return -1;
        } else if (strncmp(a, "--progress=", 11) == 0)
            progress = a + 11;
        else if (strcmp(a, "--from") == 0 || strcmp(a, "--to") == 0) {
            fail("%s needs a value: %s=DIR or %s=postgres://...", a, a, a);
            return -1;
        } else {
            fail("unknown argument \"%s\" (see basalt db copy --help)", a);
            return -1;
        }
    }
    if (o->from == NULL || o->from[0] == '\0' || o->to == NULL || o->to[0] == '\0') {
        fail("--from and --to are both required: basalt db copy --from=DIR|URL --to=URL|DIR (see --help)");
        return -1;
    }
    if (strcmp(progress, "auto") == 0)
        o->progress = isatty(STDERR_FILENO) ? PROGRESS_BAR : PROGRESS_LINES;
    else if (strcmp(progress, "bar") == 0)
        o->progress = PROGRESS_BAR;
    else if (strcmp(progress, "lines") == 0)
        o->progress = PROGRESS_LINES;
    else if (strcmp(progress, "off") == 0)
        o->progress = PROGRESS_OFF;
    else {
        fail("--progress must be auto, bar, lines or off, not \"%s\"", progress);
        return -1;
    }
    return 0;
}

static int run_copy(const opts_t *o)
{
    end_t src = {.flag = "--from", .arg = o->from}, dst = {.flag = "--to", .arg = o->to};
    schema_t *ss = NULL;
    coll_rows_t rows = {0};
    params_t sp = {0};
    int rc = 1;
    bs_error_t err;
    bs_error_init(&err);
    if (end_locate(&src, 1) != 0 || end_locate(&dst, 0) != 0)
        return 1;
    if (strcmp(o->from, o->to) == 0 || same_files(&src, &dst)) {
        fail("--from and --to are the same database (%s); copy into another one", src.where);
        return 1;
    }
    if (end_open(&src, o) != 0 || end_open(&dst, o) != 0)
        goto out;
    char ida[256], idb[256];
    if (src.is_url && dst.is_url) {
        if (end_identity(&src, ida, sizeof(ida), &err) != 0 ||
            end_identity(&dst, idb, sizeof(idb), &err) != 0) {
            fail("cannot tell whether --from and --to are the same database: %s", err.message);
            goto out;
        }
        if (ida[0] && strcmp(ida, idb) == 0) {
            fail("--from=%s and --to=%s are the same database; copy into another one", src.where, dst.where);
            goto out;
        }
    }
    int has = table_exists(&src, "_collections", &err);
    if (has <= 0) {
        if (has < 0)
            fail("%s=%s: cannot read it: %s", src.flag, src.where, err.message);
        else
            fail("%s=%s holds no Basalt data (no _collections table)", src.flag, src.where);
        goto out;
    }
    int has_params = table_exists(&src, "_params", &err);
    if (has_params < 0) {
        fail("%s=%s: cannot read it: %s", src.flag, src.where, err.message);
        goto out;
    }
    /* One snapshot of the source from here on (see the top of the file). */
    if (src.d->snapshot_begin != NULL) {
        if (store_exec_script(src.rd, src.d->snapshot_begin, &err) != 0) {
            fail("%s=%s: cannot start a read transaction: %s", src.flag, src.where, err.message);
            goto out;
        }
        src.in_snapshot = 1;
    }
    ss = schema_load(src.rd, &err);
    if (ss == NULL || load_coll_rows(&src, &rows, &err) != 0 ||
        (has_params && load_params(&src, &sp, &err) != 0)) {
        fail("%s=%s: cannot read the collections and settings: %s", src.flag, src.where, err.message);
        goto out;
    }
    for (size_t i = 0; i < rows.n; i++)
        if (schema_find(ss, rows.rows[i].id) == NULL) {
            fail("%s=%s: collection row %s cannot be read", src.flag, src.where, rows.rows[i].id);
            goto out;
        }
    if (o->progress != PROGRESS_OFF)
        fprintf(stderr, "copying %s -> %s\n", src.where, dst.where);
    strip_partitions(&dst, ss, &rows, o);
    if (copy_schema(&src, &dst, o, ss, &rows, &sp) != 0)
        goto out;
    int64_t inserted = 0;
    for (size_t i = 0; i < rows.n; i++) {
        int r = copy_records(&src, &dst, o, schema_find(ss, rows.rows[i].id), &inserted);
        if (r != 0) {
            rc = r == 1 ? 130 : 1;
            goto out;
        }
    }
    rc = verify(&src, &dst, ss, &rows, &sp) == 0 ? 0 : 1;
    if (rc == 0) {
        char n[32];
        fprintf(stderr, "done: %s records written by this run\n", fmt_n(inserted, n));
    }
out:
    coll_rows_free(&rows);
    params_free(&sp);
    schema_free(ss);
    end_close(&src);
    end_close(&dst);
    return rc;
}

int dbcopy_command(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "copy") != 0) {
        if (argc >= 1 &&
            (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "help") == 0)) {
            dbcopy_print_help(stdout);
            return 0;
        }
        fprintf(stderr, "basalt db: unknown or missing subcommand%s%s%s\n\n", argc ? " \"" : "",
                argc ? argv[0] : "", argc ? "\"" : "");
        dbcopy_print_help(stderr);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            dbcopy_print_help(stdout);
            return 0;
        }
    opts_t o;
    if (parse_opts(argc - 1, argv + 1, &o) != 0)
        return 2;
    /* The stores' own log lines (a reconnection, a failed statement's detail) only
     * when they matter. */
    log_set_level(LOG_WARN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return run_copy(&o);
}
