#include "api/logs.h"

#include <pthread.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/log.h"
#include "base/util.h"
#include "core/resolve.h"
#include "jobs/jobs.h"
#include "rules/dialect.h"

/* The longest record id a collection allows (its id field's max). */
#define RECORD_ID_MAX 100
#define RING 1024    /* entries a worker holds between flushes */
#define FLUSH_AT 256 /* a flush before the second is up */
#define FLUSH_MS 1000
#define RETENTION_MS 60000
/* PostgreSQL: rows per INSERT: a flush of 256 entries is 4 statements, not 256 round
 * trips to the database (each one parsed and planned; ADR 0014). 64 rows of 14 values
 * stay far below its limit on parameters. SQLite (logs.db) inserts one row per
 * statement: a function call, not a round trip, and the same prepared statement. */
#define ROWS_PER_INSERT 64
#define COLS 14

typedef struct {
    int64_t created_ms;
    char id[16];
    int status;
    double exec_ms;
    char method[12];
    char url[512];
    char remote_ip[64], user_ip[64];
    char referer[256];
    char user_agent[256];
    char auth[64];
    char auth_id[RECORD_ID_MAX + 1]; /* the signed-in record's id: its entries go when it is erased */
} entry_t;

typedef struct {
    entry_t *v; /* RING entries, allocated on first use */
    size_t head, n;
    int64_t last_flush_ms;
} ring_t;

static __thread ring_t ring;
static __thread size_t pending; /* flush jobs of this worker not yet back */
static int max_days = 7;
static int64_t max_rows = 100000;
static uint64_t dropped;
/* The table as a collection, for the filter compiler (never in the schema). */
static collection_t *logs_coll;
/* SQLite: the request log's own database file, logs.db in the data folder (ADR 0019),
 * written only by the logs thread below and read by the workers through its own reader
 * connections. NULL: the log is a table of the data store (PostgreSQL). Set on the main
 * thread before the workers start, closed by logs_shutdown after they end. */
static store_t *logs_store;
static char logs_path[1100]; /* <data folder>/logs.db; "" before logs_set_dir */
/* The logs thread's queue (SQLite): workers push, the thread takes all at once. */
typedef struct item {
    struct item *next;
    entry_t *v; /* owned; NULL for a forget */
    size_t n;
    char forget[RECORD_ID_MAX + 1];
} item_t;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond = PTHREAD_COND_INITIALIZER;
static item_t *q_head, **q_tail = &q_head;
static int q_stop, q_running;
static pthread_t q_thread;
/* The INSERT of one row and of ROWS_PER_INSERT rows, built once (logs_configure). */
static char *sql_one, *sql_full;

/* The columns a filter or sort may name, PocketBase's data.* names without "data.". */
static const char *const columns[] = {"id",      "created",   "level",    "message",  "method",
                                      "url",     "status",    "execTime", "remoteIP", "userIP",
                                      "referer", "userAgent", "auth"};

static char *insert_sql(size_t n);

void logs_configure(int days, int64_t rows)
{
    max_days = days;
    max_rows = rows;
    if (sql_one == NULL)
        sql_one = insert_sql(1);
    if (sql_full == NULL)
        sql_full = insert_sql(ROWS_PER_INSERT);
}

void logs_set_dir(const char *dir)
{
    snprintf(logs_path, sizeof(logs_path), "%s/logs.db", dir);
}

uint64_t logs_dropped(void)
{
    return __atomic_load_n(&dropped, __ATOMIC_RELAXED);
}

/* A count from sql with the two text parameters a and b; -1 on error. */
static int64_t count2(store_conn_t *conn, const char *sql, const char *a, const char *b, bs_error_t *err)
{
    bs_value_t p[] = {bs_val_text(a, strlen(a)), bs_val_text(b, strlen(b))};
    store_stmt_t *st = store_query(conn, sql, p, 2, err);
    if (st == NULL)
        return -1;
    int64_t n = store_step(st, err) == 1 ? store_col(st, 0).i : -1;
    store_done(st);
    return n;
}

/* The table and its index, on either backend. */
static int create_table(store_conn_t *conn, bs_error_t *err)
{
    int rc =
        store_exec_script(conn,
                          "CREATE TABLE IF NOT EXISTS _logs (id TEXT PRIMARY KEY NOT NULL, created TEXT NOT "
                          "NULL, level INTEGER NOT NULL, message TEXT NOT NULL, method TEXT NOT NULL, url "
                          "TEXT NOT NULL, status INTEGER NOT NULL, \"execTime\" DOUBLE PRECISION NOT NULL, "
                          "\"remoteIP\" TEXT NOT NULL, \"userIP\" TEXT NOT NULL, referer TEXT NOT NULL, "
                          "\"userAgent\" TEXT NOT NULL, auth TEXT NOT NULL);"
                          "CREATE INDEX IF NOT EXISTS _logs_created ON _logs (created);",
                          err);
    if (rc != 0)
        return -1;
    /* Databases from before erasure forgot log entries have no authId column. */
    int64_t has =
        count2(conn, dialect_get(store_conn_dialect(conn))->column_exists_sql, "_logs", "authId", err);
    if (has < 0)
        return -1;
    if (has == 0 &&
        store_exec_script(conn, "ALTER TABLE _logs ADD COLUMN \"authId\" TEXT NOT NULL DEFAULT ''", err) != 0)
        return -1;
    return 0;
}

/* 1 when conn's database has a _logs table, 0 when not, -1 on error. */
static int has_table(store_conn_t *conn, bs_error_t *err)
{
    int64_t n = count2(conn, dialect_get(store_conn_dialect(conn))->column_exists_sql, "_logs", "id", err);
    return n < 0 ? -1 : n > 0;
}

int logs_bootstrap(store_conn_t *conn, bs_error_t *err)
{
    /* SQLite: the log lives in logs.db (logs_open_file), not in the data file; a data
     * file's _logs from before is moved there by the server's start-up. */
    if (store_conn_dialect(conn) == RULES_DIALECT_SQLITE)
        return 0;
    return create_table(conn, err);
}

/* Deletes record_id's entries from conn's _logs (record_id checked by the caller). */
static int forget_in(store_conn_t *conn, const char *record_id, bs_error_t *err)
{
    /* The record's own requests, and every path that names it (its profile, its
     * files, its export); LIKE's wildcards in an id (_) are escaped. */
    char pattern[2 * RECORD_ID_MAX + 3]; /* '%', each character escaped at most, '%' */
    size_t n = 0;
    pattern[n++] = '%';
    for (const char *c = record_id; *c != '\0'; c++) {
        if (*c == '%' || *c == '_' || *c == '\\')
            pattern[n++] = '\\';
        pattern[n++] = *c;
    }
    pattern[n++] = '%';
    pattern[n] = '\0';
    bs_value_t p[] = {bs_val_text(record_id, strlen(record_id)), bs_val_text(pattern, n)};
    return store_exec(conn, "DELETE FROM _logs WHERE \"authId\" = ?1 OR url LIKE ?2 ESCAPE '\\'", p, 2, err) <
                   0
               ? -1
               : 0;
}

static int forget_file(const char *record_id, bs_error_t *err);

int logs_forget(store_conn_t *conn, const char *record_id, bs_error_t *err)
{
    if (strlen(record_id) > RECORD_ID_MAX) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "A record id is at most %d characters.", RECORD_ID_MAX);
        return -1;
    }
    if (store_conn_dialect(conn) != RULES_DIALECT_SQLITE)
        return forget_in(conn, record_id, err);
    /* A data file whose old _logs was not moved yet (a command on a folder the new
     * server has not opened): its rows too. */
    int old = has_table(conn, err);
    if (old < 0 || (old == 1 && forget_in(conn, record_id, err) != 0))
        return -1;
    return forget_file(record_id, err);
}

typedef struct {
    store_job_t job;
    const char *id;
} forget_job_t;

static int run_forget(store_job_t *job, store_conn_t *conn)
{
    return logs_forget(conn, ((forget_job_t *)job)->id, &job->err);
}

/* The second pass, a few seconds after an erasure: entries still in a worker's
 * ring then (they are flushed within FLUSH_MS) are in the table by now. */
static int forget_handler(jobs_ctx_t *ctx)
{
    json_t *id = json_object_get(ctx->payload, "id");
    if (!json_is_string(id)) {
        snprintf(ctx->error, sizeof(ctx->error), "the payload has no id");
        return JOBS_FAIL;
    }
    arena_t a;
    arena_init(&a, 256);
    forget_job_t j = {.job = {.run = run_forget, .arena = &a, .background = 1, .unshared = 1},
                      .id = json_string_value(id)};
    bs_error_init(&j.job.err);
    int rc = jobs_store_run(ctx->store, &j.job);
    if (rc != 0)
        snprintf(ctx->error, sizeof(ctx->error), "%s", j.job.err.message);
    arena_free(&a);
    return rc == 0 ? JOBS_OK : JOBS_RETRY;
}

int logs_register_jobs(void)
{
    return jobs_known("logs.forget") ? 0 : jobs_register("logs.forget", forget_handler);
}

int logs_forget_later(store_conn_t *conn, const char *record_id, bs_error_t *err)
{
    json_t *payload = json_pack("{s:s}", "id", record_id);
    if (payload == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, "out of memory");
        return -1;
    }
    jobs_opts_t o = {.run_at_ms = util_now_ms() + 3 * FLUSH_MS};
    int rc = jobs_enqueue(conn, "logs.forget", payload, &o, err);
    json_decref(payload);
    return rc;
}

int logs_init(const schema_t *s)
{
    json_t *fields = json_array();
    for (size_t i = 2; i < sizeof(columns) / sizeof(columns[0]); i++) {
        int num =
            !strcmp(columns[i], "level") || !strcmp(columns[i], "status") || !strcmp(columns[i], "execTime");
        json_array_append_new(fields,
                              json_pack("{s:s, s:s}", "name", columns[i], "type", num ? "number" : "text"));
    }
    json_array_append_new(fields, json_pack("{s:s, s:s, s:b, s:b}", "name", "created", "type", "autodate",
                                            "onCreate", 1, "onUpdate", 0));
    json_t *def = json_pack("{s:s, s:s, s:s, s:o}", "id", "logsview", "name", "logsview", "type", "base",
                            "fields", fields);
    arena_t a;
    arena_init(&a, 4096);
    bs_error_t err;
    bs_error_init(&err);
    logs_coll = collection_from_json(def, NULL, s, &a, &err);
    json_decref(def);
    if (logs_coll == NULL)
        LOGF(LOG_ERROR, "logs", "cannot describe the request log: %s (%s: %s)", err.message,
             err.fields ? err.fields->field : "", err.fields ? err.fields->message : "");
    arena_free(&a);
    return logs_coll ? 0 : -1;
}

void logs_shutdown(void)
{
    /* After the workers ended: the thread stores what they handed over, then ends. */
    if (q_running) {
        pthread_mutex_lock(&q_lock);
        q_stop = 1;
        pthread_cond_signal(&q_cond);
        pthread_mutex_unlock(&q_lock);
        pthread_join(q_thread, NULL);
        q_running = 0;
    }
    if (logs_store != NULL)
        store_close(logs_store);
    logs_store = NULL;
    free(sql_one);
    free(sql_full);
    sql_one = sql_full = NULL;
    if (logs_coll != NULL)
        collection_free(logs_coll);
    logs_coll = NULL;
}

void logs_make_id(int64_t created_ms, char *out)
{
    /* The creation time first, then randomness: entries come in about the order of
     * their ids, so each batch inserts at the end of the id index, on a few pages,
     * where random ids touched a page each (a WAL frame each, per commit). */
    util_random_id(out);
    uint64_t t = created_ms > 0 ? (uint64_t)created_ms : 0;
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    for (int i = LOGS_ID_TIME_CHARS - 1; i >= 0; i--) {
        out[i] = digits[t % 36];
        t /= 36;
    }
}

static void copy_str(char *dst, size_t cap, const char *src, size_t n)
{
    if (src == NULL)
        n = 0;
    if (n >= cap)
        n = cap - 1;
    /* Only printable ASCII and UTF-8 bytes: the text ends up in JSON and HTML. */
    for (size_t i = 0; i < n; i++)
        dst[i] = (unsigned char)src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
    dst[n] = '\0';
}

void logs_note(req_ctx_t *ctx)
{
    if (max_days <= 0 || ctx->path == NULL)
        return;
    if (!strcmp(ctx->path, "/metrics") || !strcmp(ctx->path, "/api/health"))
        return; /* probes and the dashboard's polling would drown the rest */
    if (ring.v == NULL && (ring.v = calloc(RING, sizeof(entry_t))) == NULL)
        return;
    if (ring.n == RING) { /* the writer is behind: the oldest goes */
        ring.head = (ring.head + 1) % RING;
        ring.n--;
        __atomic_add_fetch(&dropped, 1, __ATOMIC_RELAXED);
    }
    entry_t *e = &ring.v[(ring.head + ring.n) % RING];
    ring.n++;
    e->created_ms = util_now_ms();
    logs_make_id(e->created_ms, e->id);
    e->status = ctx->status;
    e->exec_ms = (double)(util_mono_ns() - ctx->start_ns) / 1e6;
    copy_str(e->method, sizeof(e->method), ctx->method, ctx->method ? strlen(ctx->method) : 0);
    copy_str(e->url, sizeof(e->url), ctx->path, strlen(ctx->path)); /* no query: it may hold secrets */
    copy_str(e->remote_ip, sizeof(e->remote_ip), ctx->peer_ip, strlen(ctx->peer_ip));
    copy_str(e->user_ip, sizeof(e->user_ip), ctx->client_ip, strlen(ctx->client_ip));
    size_t hl = 0;
    const char *h = ctx_header(ctx, "referer", &hl);
    copy_str(e->referer, sizeof(e->referer), h, hl);
    hl = 0;
    h = ctx_header(ctx, "user-agent", &hl);
    copy_str(e->user_agent, sizeof(e->user_agent), h, hl);
    const char *who = ctx->who.superuser ? "_superusers" : ctx->who.auth_coll ? ctx->who.auth_coll->name : "";
    copy_str(e->auth, sizeof(e->auth), who, strlen(who));
    json_t *aid = ctx->who.auth ? json_object_get(ctx->who.auth, "id") : NULL;
    const char *ids = json_is_string(aid) ? json_string_value(aid) : "";
    copy_str(e->auth_id, sizeof(e->auth_id), ids, strlen(ids));
}

/* ---- storing entries ---- */

typedef struct {
    store_job_t job;
    arena_t arena;
    entry_t *v;
    size_t n;
} flush_job_t;

/* The INSERT of n rows (1..ROWS_PER_INSERT), ?1.. numbered row by row; NULL if out of
 * memory. The caller frees it. */
static char *insert_sql(size_t n)
{
    static const char head[] =
        "INSERT INTO _logs (id, created, level, message, method, url, status, "
        "\"execTime\", \"remoteIP\", \"userIP\", referer, \"userAgent\", auth, \"authId\") VALUES ";
    size_t cap = sizeof(head) + n * (COLS * 7 + 4);
    char *sql = malloc(cap);
    if (sql == NULL)
        return NULL;
    size_t len = (size_t)snprintf(sql, cap, "%s", head);
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c < COLS; c++)
            len += (size_t)snprintf(sql + len, cap - len, "%s?%zu%s", c == 0 ? (r == 0 ? "(" : ", (") : ", ",
                                    r * COLS + c + 1, c == COLS - 1 ? ")" : "");
    return sql;
}

typedef struct {
    char created[UTIL_TIME_LEN + 1];
    char msg[600];
} row_text_t;

/* Inserts v[0..count) with conn, per rows per statement (1 or ROWS_PER_INSERT). */
static int insert_entries(store_conn_t *conn, const entry_t *v, size_t count, size_t per, bs_error_t *err)
{
    bs_value_t *p = malloc(per * COLS * sizeof(*p));
    row_text_t *t = malloc(per * sizeof(*t));
    int rc = p != NULL && t != NULL && sql_one != NULL && sql_full != NULL ? 0 : -1;
    if (rc != 0)
        bs_error_set(err, BS_ERR_NOMEM, NULL);
    for (size_t at = 0; rc == 0 && at < count; at += per) {
        size_t n = count - at < per ? count - at : per;
        for (size_t i = 0; i < n; i++) {
            const entry_t *e = &v[at + i];
            util_format_time(e->created_ms, t[i].created);
            snprintf(t[i].msg, sizeof(t[i].msg), "%s %s", e->method, e->url);
            bs_value_t *r = p + i * COLS;
            r[0] = bs_val_text(e->id, strlen(e->id));
            r[1] = bs_val_text(t[i].created, strlen(t[i].created));
            r[2] = bs_val_int(e->status >= 500 ? 8 : e->status >= 400 ? 4 : 0);
            r[3] = bs_val_text(t[i].msg, strlen(t[i].msg));
            r[4] = bs_val_text(e->method, strlen(e->method));
            r[5] = bs_val_text(e->url, strlen(e->url));
            r[6] = bs_val_int(e->status);
            r[7] = bs_val_double(e->exec_ms);
            r[8] = bs_val_text(e->remote_ip, strlen(e->remote_ip));
            r[9] = bs_val_text(e->user_ip, strlen(e->user_ip));
            r[10] = bs_val_text(e->referer, strlen(e->referer));
            r[11] = bs_val_text(e->user_agent, strlen(e->user_agent));
            r[12] = bs_val_text(e->auth, strlen(e->auth));
            r[13] = bs_val_text(e->auth_id, strlen(e->auth_id));
        }
        /* The statements built at start-up; only PostgreSQL's last, shorter one of a
         * flush is built here. */
        char *sql = n == 1 ? sql_one : n == ROWS_PER_INSERT ? sql_full : insert_sql(n);
        if (sql == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            rc = -1;
        } else if (store_exec(conn, sql, p, n * COLS, err) < 0) {
            rc = -1;
        }
        if (sql != sql_one && sql != sql_full)
            free(sql);
    }
    free(t);
    free(p);
    return rc;
}

/* Deletes rows older than --logs-max-days and past --logs-max-rows, once a minute or
 * sooner when a tenth of --logs-max-rows came in since. One thread stores entries (the
 * writer on PostgreSQL, the logs thread on SQLite): plain statics. */
static int retention(store_conn_t *conn, size_t added, bs_error_t *err)
{
    static int64_t last_retention;
    static int64_t since;
    since += (int64_t)added;
    int64_t now = util_now_ms();
    if (now - last_retention < RETENTION_MS && since < max_rows / 10)
        return 0;
    last_retention = now;
    since = 0;
    char cutoff[UTIL_TIME_LEN + 1];
    util_format_time(now - (int64_t)max_days * 86400000, cutoff);
    bs_value_t c = bs_val_text(cutoff, strlen(cutoff));
    if (store_exec(conn, "DELETE FROM _logs WHERE created < ?1", &c, 1, err) < 0)
        return -1;
    bs_value_t r = bs_val_int(max_rows);
    /* logs.db's rows are numbered in the order they came (its own table, never
     * rewritten): the newest max_rows are found from the highest rowid, where walking
     * the created index past max_rows entries cost a scan of the whole log. */
    return store_exec(
               conn,
               logs_store != NULL
                   ? "DELETE FROM _logs WHERE rowid <= (SELECT max(rowid) FROM _logs) - ?1"
                   : "DELETE FROM _logs WHERE created < (SELECT created FROM _logs ORDER BY created DESC "
                     "LIMIT 1 OFFSET ?1)",
               &r, 1, err) < 0
               ? -1
               : 0;
}

/* PostgreSQL: a worker's flush, one job of the writer's group commit. */
static int flush_run(store_job_t *job, store_conn_t *conn)
{
    flush_job_t *f = (flush_job_t *)job;
    if (insert_entries(conn, f->v, f->n, ROWS_PER_INSERT, &job->err) != 0)
        return -1;
    return retention(conn, f->n, &job->err);
}

static void flush_delivered(mailbox_msg_t *m)
{
    flush_job_t *f = (flush_job_t *)m;
    pending--;
    if (f->job.status != 0)
        LOGF(LOG_WARN, "logs", "%zu request log entries were not stored: %s", f->n, f->job.err.message);
    arena_free(&f->arena);
    free(f->v);
    free(f);
}

size_t logs_pending(void)
{
    return pending;
}

/* ---- SQLite: logs.db and the logs thread ----
 * The workers hand their rings to a queue; one thread takes whatever has gathered and
 * stores it in one transaction of logs.db (store_write_sync on a store of its own whose
 * writer thread never starts: this thread owns its writer connection). Nothing of it
 * touches the data file, so the records' WAL, its checkpoints and the workers' read
 * snapshots of it never see the log (ADR 0019). */

static void q_push(item_t *it)
{
    it->next = NULL;
    pthread_mutex_lock(&q_lock);
    *q_tail = it;
    q_tail = &it->next;
    pthread_cond_signal(&q_cond);
    pthread_mutex_unlock(&q_lock);
}

typedef struct {
    store_job_t job;
    item_t *items;
} store_items_t;

static int store_items_run(store_job_t *job, store_conn_t *conn)
{
    store_items_t *s = (store_items_t *)job;
    size_t added = 0;
    for (item_t *it = s->items; it != NULL; it = it->next) {
        if (it->v == NULL) {
            if (forget_in(conn, it->forget, &job->err) != 0)
                return -1;
        } else if (insert_entries(conn, it->v, it->n, ROWS_PER_INSERT, &job->err) != 0) {
            return -1;
        } else {
            added += it->n;
        }
    }
    return retention(conn, added, &job->err);
}

static void *logs_thread(void *arg)
{
    util_thread_name("logs");
    (void)arg;
    arena_t a;
    arena_init(&a, 512);
    pthread_mutex_lock(&q_lock);
    for (;;) {
        while (q_head == NULL && !q_stop)
            pthread_cond_wait(&q_cond, &q_lock);
        if (q_head == NULL)
            break; /* stopping, and nothing left */
        item_t *items = q_head;
        q_head = NULL;
        q_tail = &q_head;
        pthread_mutex_unlock(&q_lock);
        store_items_t j = {.job = {.run = store_items_run, .arena = &a, .background = 1}, .items = items};
        bs_error_init(&j.job.err);
        if (store_write_sync(logs_store, &j.job) != 0) {
            size_t n = 0;
            for (item_t *it = items; it != NULL; it = it->next)
                n += it->n;
            LOGF(LOG_WARN, "logs", "%zu request log entries were not stored in %s: %s", n, logs_path,
                 j.job.err.message);
        }
        while (items != NULL) {
            item_t *next = items->next;
            free(items->v);
            free(items);
            items = next;
        }
        arena_free(&a); /* the job's error fields, if any */
        arena_init(&a, 512);
        pthread_mutex_lock(&q_lock);
    }
    pthread_mutex_unlock(&q_lock);
    arena_free(&a);
    return NULL;
}

/* The erasure's pass over logs.db: queued behind the entries already handed over
 * (the server), or at once on a store of its own (a command line, no logs thread). */
static int run_forget_in(store_job_t *job, store_conn_t *conn)
{
    return forget_in(conn, ((forget_job_t *)job)->id, &job->err);
}

static int forget_file(const char *record_id, bs_error_t *err)
{
    if (q_running) {
        item_t *it = calloc(1, sizeof(*it));
        if (it == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        snprintf(it->forget, sizeof(it->forget), "%s", record_id);
        q_push(it);
        return 0;
    }
    if (logs_path[0] == '\0' || access(logs_path, F_OK) != 0)
        return 0; /* no logs.db: nothing was logged there */
    store_config_t sc = {.path = logs_path, .readers = 1, .max_batch = 1, .busy_timeout_ms = 5000};
    store_t *s = store_open(&sc, err);
    if (s == NULL)
        return -1;
    arena_t a;
    arena_init(&a, 256);
    forget_job_t j = {.job = {.run = run_forget_in, .arena = &a}, .id = record_id};
    bs_error_init(&j.job.err);
    int rc = store_write_sync(s, &j.job);
    if (rc != 0)
        *err = j.job.err;
    err->fields = NULL;
    arena_free(&a);
    store_close(s);
    return rc;
}

/* Start-up: rows of a data file's _logs from before logs.db are copied over, in the
 * order they were written, a chunk per transaction; then the data file's table goes.
 * A copy cut short copies again at the next start: rows already there are skipped. */
#define MOVE_CHUNK 2000

typedef struct {
    store_job_t job;
    int has_auth_id;
    char after_created[UTIL_TIME_LEN + 1], after_id[64];
    bs_value_t *rows; /* n * COLS, texts in job.arena */
    size_t n;
} move_job_t;

static int move_read(store_job_t *job, store_conn_t *conn)
{
    move_job_t *m = (move_job_t *)job;
    m->n = 0;
    bs_value_t p[] = {bs_val_text(m->after_created, strlen(m->after_created)),
                      bs_val_text(m->after_id, strlen(m->after_id)), bs_val_int(MOVE_CHUNK)};
    store_stmt_t *st = store_query(
        conn,
        m->has_auth_id
            ? "SELECT id, created, level, message, method, url, status, \"execTime\", \"remoteIP\", "
              "\"userIP\", referer, \"userAgent\", auth, \"authId\" FROM _logs WHERE created > ?1 OR "
              "(created = ?1 AND id > ?2) ORDER BY created, id LIMIT ?3"
            : "SELECT id, created, level, message, method, url, status, \"execTime\", \"remoteIP\", "
              "\"userIP\", referer, \"userAgent\", auth, '' FROM _logs WHERE created > ?1 OR "
              "(created = ?1 AND id > ?2) ORDER BY created, id LIMIT ?3",
        p, 3, &job->err);
    if (st == NULL)
        return -1;
    m->rows = arena_alloc(job->arena, MOVE_CHUNK * COLS * sizeof(*m->rows));
    if (m->rows == NULL) {
        store_done(st);
        bs_error_set(&job->err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    int rc;
    while ((rc = store_step(st, &job->err)) == 1) {
        bs_value_t *r = m->rows + m->n * COLS;
        for (int c = 0; c < COLS; c++) {
            bs_value_t v = store_col(st, c);
            if (v.type == BS_VAL_TEXT) {
                char *t = arena_alloc(job->arena, v.n + 1);
                if (t == NULL) {
                    store_done(st);
                    bs_error_set(&job->err, BS_ERR_NOMEM, NULL);
                    return -1;
                }
                memcpy(t, v.s, v.n);
                t[v.n] = '\0';
                v.s = t;
            }
            r[c] = v;
        }
        m->n++;
    }
    store_done(st);
    if (rc < 0)
        return -1;
    if (m->n > 0) {
        const bs_value_t *last = m->rows + (m->n - 1) * COLS;
        snprintf(m->after_id, sizeof(m->after_id), "%.*s", (int)last[0].n, last[0].s);
        snprintf(m->after_created, sizeof(m->after_created), "%.*s", (int)last[1].n, last[1].s);
    }
    return 0;
}

static int move_write(store_job_t *job, store_conn_t *conn)
{
    move_job_t *m = (move_job_t *)job;
    for (size_t i = 0; i < m->n; i++)
        if (store_exec(
                conn,
                "INSERT INTO _logs (id, created, level, message, method, url, status, \"execTime\", "
                "\"remoteIP\", \"userIP\", referer, \"userAgent\", auth, \"authId\") SELECT ?1, ?2, ?3, "
                "?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 WHERE NOT EXISTS (SELECT 1 FROM _logs "
                "WHERE id = ?1)",
                m->rows + i * COLS, COLS, &job->err) < 0)
            return -1;
    return 0;
}

static int move_probe(store_job_t *job, store_conn_t *conn)
{
    move_job_t *m = (move_job_t *)job;
    int has = has_table(conn, &job->err);
    if (has <= 0) {
        m->has_auth_id = -1; /* none to move */
        return has < 0 ? -1 : 0;
    }
    int64_t a =
        count2(conn, dialect_get(store_conn_dialect(conn))->column_exists_sql, "_logs", "authId", &job->err);
    if (a < 0)
        return -1;
    m->has_auth_id = a > 0;
    return 0;
}

static int move_drop(store_job_t *job, store_conn_t *conn)
{
    return store_exec_script(conn, "DROP TABLE IF EXISTS _logs", &job->err);
}

static int create_run(store_job_t *job, store_conn_t *conn)
{
    return create_table(conn, &job->err);
}

/* Copies data's old _logs into logs_store and drops it; the number moved or -1. */
static int64_t move_old_rows(store_t *data, bs_error_t *err)
{
    arena_t a;
    arena_init(&a, 64 * 1024);
    move_job_t m = {.job = {.run = move_probe, .arena = &a}};
    bs_error_init(&m.job.err);
    int64_t moved = 0;
    if (store_write_sync(data, &m.job) != 0)
        goto fail;
    if (m.has_auth_id < 0) {
        arena_free(&a);
        return 0;
    }
    for (;;) {
        m.job.run = move_read;
        if (store_write_sync(data, &m.job) != 0)
            goto fail;
        if (m.n == 0)
            break;
        m.job.run = move_write;
        if (store_write_sync(logs_store, &m.job) != 0)
            goto fail;
        moved += (int64_t)m.n;
        arena_free(&a); /* the chunk's texts */
        arena_init(&a, 64 * 1024);
    }
    m.job.run = move_drop;
    if (store_write_sync(data, &m.job) != 0)
        goto fail;
    arena_free(&a);
    return moved;
fail:
    *err = m.job.err;
    err->fields = NULL;
    arena_free(&a);
    return -1;
}

int logs_open_file(store_t *data, int readers, bs_error_t *err)
{
    if (strcmp(store_backend_name(data), "sqlite") != 0)
        return 0; /* PostgreSQL: the data store's own table (logs_bootstrap) */
    if (logs_path[0] == '\0') {
        bs_error_set(err, BS_ERR_INTERNAL, "the request log's folder is not set");
        return -1;
    }
    /* synchronous=NORMAL in WAL mode: a commit is one write() and no fsync, an fsync
     * only at a checkpoint, on this thread; a power cut loses at most the last commits
     * and never corrupts the file (OFF could, and would cost the same here). */
    store_config_t sc = {.path = logs_path, .readers = readers, .max_batch = 1, .busy_timeout_ms = 5000};
    logs_store = store_open(&sc, err);
    if (logs_store == NULL)
        return -1;
    arena_t a;
    arena_init(&a, 256);
    store_job_t j = {.run = create_run, .arena = &a};
    bs_error_init(&j.err);
    int rc = store_write_sync(logs_store, &j);
    if (rc != 0) {
        *err = j.err;
        err->fields = NULL;
    }
    arena_free(&a);
    int64_t moved = rc == 0 ? move_old_rows(data, err) : -1;
    if (moved < 0) {
        store_close(logs_store);
        logs_store = NULL;
        return -1;
    }
    if (moved > 0)
        LOGF(LOG_INFO, "logs", "moved %lld request log entries from the data file into %s", (long long)moved,
             logs_path);
    q_stop = 0;
    if (pthread_create(&q_thread, NULL, logs_thread, NULL) != 0) {
        bs_error_set(err, BS_ERR_INTERNAL, "cannot start the request log's thread");
        store_close(logs_store);
        logs_store = NULL;
        return -1;
    }
    q_running = 1;
    return 0;
}

void logs_tick(worker_t *w, int event)
{
    if (ring.v == NULL)
        return;
    int64_t now = util_now_ms();
    int final = event == SERVER_WORKER_END;
    /* At the drain the rest goes; the loop runs on until it is back (logs_pending). */
    int now_due = event == SERVER_WORKER_DRAIN || ring.n >= FLUSH_AT || now - ring.last_flush_ms >= FLUSH_MS;
    if (!final && ring.n > 0 && now_due) {
        entry_t *v = malloc(ring.n * sizeof(*v));
        void *holder = v == NULL            ? NULL
                       : logs_store != NULL ? (void *)calloc(1, sizeof(item_t))
                                            : (void *)calloc(1, sizeof(flush_job_t));
        if (holder != NULL) {
            for (size_t i = 0; i < ring.n; i++)
                v[i] = ring.v[(ring.head + i) % RING];
            if (logs_store != NULL) {
                /* SQLite: to the logs thread, which frees it; nothing comes back. */
                item_t *it = holder;
                it->v = v;
                it->n = ring.n;
                q_push(it);
            } else {
                flush_job_t *f = holder;
                f->v = v;
                f->n = ring.n;
                arena_init(&f->arena, 512);
                f->job.arena = &f->arena;
                f->job.run = flush_run;
                f->job.background = 1; /* upkeep: not a request's write */
                f->job.unshared = 1;   /* other instances cache nothing of _logs */
                f->job.msg.deliver = flush_delivered;
                f->job.reply_to = &w->mailbox;
                store_queue_add(&w->writes, &f->job);
                pending++;
            }
            ring.head = 0;
            ring.n = 0;
        } else {
            free(v); /* out of memory: kept for the next turn */
        }
        ring.last_flush_ms = now;
    }
    if (final) {
        if (ring.n > 0)
            LOGF(LOG_WARN, "logs", "%zu request log entries were not stored at the stop", ring.n);
        free(ring.v);
        ring.v = NULL;
        ring.n = ring.head = 0;
    }
}

/* ---- the API ---- */

/* A client's filter with PocketBase's "data." prefix taken off the names outside
 * string literals ("data.status >= 400" reads the status column). */
char *logs_strip_data_prefix(arena_t *a, const char *f)
{
    size_t n = strlen(f);
    char *out = arena_alloc(a, n + 1);
    if (out == NULL)
        return NULL;
    size_t o = 0;
    char quote = 0;
    for (size_t i = 0; i < n; i++) {
        char c = f[i];
        if (quote) {
            out[o++] = c;
            if (c == '\\' && i + 1 < n)
                out[o++] = f[++i];
            else if (c == quote)
                quote = 0;
            continue;
        }
        if (c == '"' || c == '\'') {
            quote = c;
            out[o++] = c;
            continue;
        }
        int boundary =
            i == 0 ||
            !((f[i - 1] >= 'a' && f[i - 1] <= 'z') || (f[i - 1] >= 'A' && f[i - 1] <= 'Z') ||
              (f[i - 1] >= '0' && f[i - 1] <= '9') || f[i - 1] == '_' || f[i - 1] == '.' || f[i - 1] == '@');
        if (boundary && strncmp(f + i, "data.", 5) == 0) {
            i += 4;
            continue;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

static int compile_filter(req_ctx_t *ctx, rules_compiler_t *comp, buf_t *where, bs_error_t *err)
{
    const char *filter = ctx_query(ctx, "filter");
    if (filter && strlen(filter) > worker_settings()->max_filter_length) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The filter is too long (limit %zu characters).",
                     worker_settings()->max_filter_length);
        return -1;
    }
    const char *text = filter ? logs_strip_data_prefix(&ctx->arena, filter) : "";
    if (text == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    /* Superusers only reach here: the log's own fields, trusted. */
    resolve_ctx_t rc = {.schema = ctx->schema,
                        .coll = logs_coll,
                        .alias = "_r",
                        .trusted = 1,
                        .who = &ctx->who,
                        .compiler = comp};
    comp->now_ms = util_now_ms();
    comp->dialect = store_dialect(worker_settings()->store);
    return resolve_compile(&rc, &ctx->arena, text, strlen(text), where, err);
}

static int column_known(const char *p, size_t n)
{
    for (size_t i = 0; i < sizeof(columns) / sizeof(columns[0]); i++)
        if (strlen(columns[i]) == n && memcmp(columns[i], p, n) == 0)
            return 1;
    return 0;
}

/* "-created,status" (data. prefixes allowed) into ORDER BY; the default is newest first. */
static int compile_sort(const char *sort, buf_t *out, bs_error_t *err)
{
    int terms = 0;
    const char *p = sort ? sort : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *q = e;
        while (q > p && q[-1] == ' ')
            q--;
        int desc = 0;
        if (*p == '-' || *p == '+')
            desc = *p++ == '-';
        if (q - p > 5 && strncmp(p, "data.", 5) == 0)
            p += 5;
        size_t n = q > p ? (size_t)(q - p) : 0;
        if (!column_known(p, n) || ++terms > 8) {
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         terms > 8 ? "Invalid sort: at most 8 terms."
                                   : "Invalid sort term \"%.*s\": the log is sorted by id, created, level, "
                                     "message, method, url, status, execTime, remoteIP, userIP, referer, "
                                     "userAgent or auth.",
                         (int)(n > 64 ? 64 : n), p);
            return -1;
        }
        buf_printf(out, "%s\"_r\".\"%.*s\" %s", terms == 1 ? " ORDER BY " : ", ", (int)n, p,
                   desc ? "DESC" : "ASC");
        p = e;
    }
    if (terms == 0)
        buf_puts(out, " ORDER BY \"_r\".created DESC, \"_r\".id DESC");
    else
        buf_puts(out, ", \"_r\".id DESC");
    return 0;
}

static void write_row(buf_t *b, store_stmt_t *st)
{
    /* columns in the order of the SELECT below */
    bs_value_t v[13];
    for (int i = 0; i < 13; i++)
        v[i] = store_col(st, i);
#define TXT(i) util_json_quote(b, v[i].s ? v[i].s : "", v[i].s ? v[i].n : 0)
    buf_puts(b, "{\"id\":");
    TXT(0);
    buf_puts(b, ",\"created\":");
    TXT(1);
    buf_puts(b, ",\"updated\":");
    TXT(1);
    buf_printf(b, ",\"level\":%lld,\"message\":", (long long)v[2].i);
    TXT(3);
    buf_puts(b, ",\"data\":{\"type\":\"request\",\"method\":");
    TXT(4);
    buf_puts(b, ",\"url\":");
    TXT(5);
    double ms = v[7].type == BS_VAL_DOUBLE ? v[7].d : (double)v[7].i;
    buf_printf(b, ",\"status\":%lld,\"execTime\":%.3f,\"remoteIP\":", (long long)v[6].i, ms);
    TXT(8);
    buf_puts(b, ",\"userIP\":");
    TXT(9);
    buf_puts(b, ",\"referer\":");
    TXT(10);
    buf_puts(b, ",\"userAgent\":");
    TXT(11);
    buf_puts(b, ",\"auth\":");
    TXT(12);
    buf_puts(b, "}}");
#undef TXT
}

#define SELECT_COLS                                                                                          \
    "SELECT \"_r\".id, \"_r\".created, \"_r\".level, \"_r\".message, \"_r\".method, \"_r\".url, "            \
    "\"_r\".status, \"_r\".\"execTime\", \"_r\".\"remoteIP\", \"_r\".\"userIP\", \"_r\".referer, "           \
    "\"_r\".\"userAgent\", \"_r\".auth FROM _logs AS \"_r\""

typedef struct {
    buf_t sql, count_sql, out;
    bs_value_t *params;
    size_t nparams, nwhere;
    int64_t page, per_page;
    int skip_total;
    int mode; /* 0 list, 1 view, 2 stats */
    int found;
} logs_job_t;

static int run_logs(store_job_t *job, store_conn_t *conn)
{
    logs_job_t *l = ((api_job_t *)job)->data;
    int64_t total = -1;
    if (l->mode == 0 && !l->skip_total) {
        store_stmt_t *st = store_query(conn, l->count_sql.data, l->params, l->nwhere, &job->err);
        if (st == NULL)
            return -1;
        if (store_step(st, &job->err) == 1)
            total = store_col(st, 0).i;
        store_done(st);
        if (job->err.code != BS_ERR_OK)
            return -1;
    }
    store_stmt_t *st = store_query(conn, l->sql.data, l->params, l->nparams, &job->err);
    if (st == NULL)
        return -1;
    buf_t *b = &l->out;
    if (l->mode == 0)
        buf_printf(b, "{\"page\":%lld,\"perPage\":%lld,\"totalItems\":%lld,\"totalPages\":%lld,\"items\":[",
                   (long long)l->page, (long long)l->per_page, (long long)total,
                   total < 0 ? -1LL : (long long)((total + l->per_page - 1) / l->per_page));
    else if (l->mode == 2)
        buf_putc(b, '[');
    int rc, n = 0;
    while ((rc = store_step(st, &job->err)) == 1) {
        if (n++ > 0)
            buf_putc(b, ',');
        if (l->mode == 2) {
            bs_value_t d = store_col(st, 0);
            buf_printf(b, "{\"total\":%lld,\"date\":", (long long)store_col(st, 1).i);
            util_json_quote(b, d.s ? d.s : "", d.s ? d.n : 0);
            buf_putc(b, '}');
        } else {
            write_row(b, st);
        }
    }
    store_done(st);
    if (rc < 0)
        return -1;
    l->found = n;
    /* logs.db's reader keeps no snapshot between requests: the logs thread's
     * checkpoints would wait for it and the file's WAL grow. */
    if (logs_store != NULL)
        store_reader_release(conn);
    if (l->mode == 0)
        buf_puts(b, "]}");
    else if (l->mode == 2)
        buf_putc(b, ']');
    return 0;
}

static void logs_done(api_job_t *j, req_ctx_t *ctx)
{
    logs_job_t *l = j->data;
    if (j->job.status != 0)
        ctx_send_error(ctx, &j->job.err);
    else if (l->mode == 1 && l->found == 0)
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
    else if (l->out.oom)
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
    else
        ctx_send_json(ctx, 200, l->out.data, l->out.len);
}

static int query_int(req_ctx_t *ctx, const char *name, int64_t def, int64_t min, int64_t max, int64_t *out)
{
    const char *v = ctx_query(ctx, name);
    *out = def;
    if (v == NULL || !*v)
        return 0;
    char *end = NULL;
    long long x = strtoll(v, &end, 10);
    if (*end != '\0' || x < min) {
        bs_error_t err;
        bs_error_init(&err);
        bs_error_set(&err, BS_ERR_BAD_REQUEST,
                     "The query parameter \"%s\" must be a whole number of at least %lld.", name,
                     (long long)min);
        ctx_send_error(ctx, &err);
        return -1;
    }
    *out = x > max ? max : x;
    return 0;
}

/* Runs the API's query where the log lives: logs.db's reader of this worker on SQLite
 * (inline, as every SQLite read), the data store's read path on PostgreSQL; scan: a
 * list or statistics (store_job_t.scan), 0 for one log by id. */
static void logs_read(req_ctx_t *ctx, logs_job_t *l, int scan)
{
    api_read_on(ctx, logs_store != NULL ? logs_store : worker_settings()->store, run_logs, logs_done, l,
                scan);
}

static logs_job_t *start(req_ctx_t *ctx, int mode)
{
    if (api_require_superuser(ctx) != 0)
        return NULL;
    if (logs_coll == NULL) {
        ctx_send_status(ctx, BS_ERR_UNAVAILABLE, "The request log is not available (see the server log).");
        return NULL;
    }
    logs_job_t *l = arena_calloc(&ctx->arena, sizeof(*l));
    if (l == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    l->mode = mode;
    buf_init(&l->sql, &ctx->arena);
    buf_init(&l->count_sql, &ctx->arena);
    buf_init(&l->out, &ctx->arena);
    return l;
}

void api_logs_list(req_ctx_t *ctx, char **params)
{
    logs_job_t *l = start(ctx, 0);
    if (l == NULL)
        return;
    if (query_int(ctx, "page", 1, 1, 1000000, &l->page) != 0 ||
        query_int(ctx, "perPage", 30, 1, 500, &l->per_page) != 0)
        return;
    const char *skip = ctx_query(ctx, "skipTotal");
    l->skip_total = skip && (!strcmp(skip, "1") || !strcmp(skip, "true"));
    bs_error_t err;
    bs_error_init(&err);
    rules_compiler_t comp = {0};
    buf_t where, order;
    buf_init(&where, &ctx->arena);
    buf_init(&order, &ctx->arena);
    if (compile_filter(ctx, &comp, &where, &err) != 0 ||
        compile_sort(ctx_query(ctx, "sort"), &order, &err) != 0) {
        ctx_send_error(ctx, &err);
        return;
    }
    l->nwhere = comp.nparams;
    buf_printf(&l->count_sql, "SELECT COUNT(*) FROM _logs AS \"_r\" WHERE %s", where.data);
    buf_printf(&l->sql, SELECT_COLS " WHERE %s%s LIMIT ", where.data, order.data);
    rules_add_param(&comp, &ctx->arena, bs_val_int(l->per_page), &l->sql);
    buf_puts(&l->sql, " OFFSET ");
    rules_add_param(&comp, &ctx->arena, bs_val_int((l->page - 1) * l->per_page), &l->sql);
    if (l->sql.oom || l->count_sql.oom || where.oom || order.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    l->params = comp.params;
    l->nparams = comp.nparams;
    logs_read(ctx, l, 1);
}

void api_logs_view(req_ctx_t *ctx, char **params)
{
    logs_job_t *l = start(ctx, 1);
    if (l == NULL)
        return;
    rules_compiler_t comp = {0};
    comp.dialect = store_dialect(worker_settings()->store);
    buf_puts(&l->sql, SELECT_COLS " WHERE \"_r\".id = ");
    rules_add_param(&comp, &ctx->arena, bs_val_text(params[0], strlen(params[0])), &l->sql);
    if (l->sql.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    l->params = comp.params;
    l->nparams = comp.nparams;
    logs_read(ctx, l, 0);
}

void api_logs_stats(req_ctx_t *ctx, char **params)
{
    logs_job_t *l = start(ctx, 2);
    if (l == NULL)
        return;
    bs_error_t err;
    bs_error_init(&err);
    rules_compiler_t comp = {0};
    buf_t where;
    buf_init(&where, &ctx->arena);
    if (compile_filter(ctx, &comp, &where, &err) != 0) {
        ctx_send_error(ctx, &err);
        return;
    }
    /* created is "YYYY-MM-DD HH:MM:SS.mmmZ": its first 13 characters are the hour,
     * the same text on both backends. */
    buf_printf(
        &l->sql,
        "SELECT substr(\"_r\".created, 1, 13) || ':00:00.000Z' AS d, COUNT(*) FROM _logs AS \"_r\" WHERE "
        "%s GROUP BY d ORDER BY d",
        where.data);
    if (l->sql.oom || where.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    l->params = comp.params;
    l->nparams = comp.nparams;
    logs_read(ctx, l, 1);
}
