/*
 * The SQLite backend of store.h: WAL mode, one reader connection per worker, one
 * writer connection driven by the writer thread with group commit.
 *
 * Durability: with synchronous=NORMAL in WAL mode a commit is in the OS once
 * sqlite3_step(COMMIT) returns, so it survives a crash of the process (SIGKILL);
 * synchronous=FULL also survives power loss. The writer answers jobs only after
 * COMMIT returned, so no acknowledged write can be lost to a process crash.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "base/log.h"
#include "base/util.h"
#include "metrics/metrics.h"
#include "store/store_backend.h"

#define CACHE_SLOTS 128

typedef struct sq_store sq_store_t;
typedef struct sq_conn sq_conn_t;
typedef struct sq_stmt sq_stmt_t;
static const store_ops_t sqlite_ops;
static void sq_close(sq_store_t *s);
static void sq_reader_release(sq_conn_t *c);
static int wal_hook(void *arg, sqlite3 *db, const char *name, int nframes);
static int ckpt_wal_hook(void *arg, sqlite3 *db, const char *name, int nframes);
static int ckpt_start(sq_store_t *s, bs_error_t *err);
static void ckpt_stop(sq_store_t *s);

/* SQLite's own automatic checkpoint threshold, in WAL frames (pages). */
#define CKPT_FRAMES 1000
/* The log restarts only at a write that finds it checkpointed to its end; a writer that
 * never pauses can keep the checkpoint thread one step behind for ever, so past this
 * size (about 64 MB of 4 KB pages) the writer checkpoints itself, as SQLite would. */
#define CKPT_WRITER_FRAMES (16 * CKPT_FRAMES)

struct sq_stmt {
    store_stmt_t base; /* first: what callers hold */
    sqlite3_stmt *stmt;
    sq_conn_t *conn;
    char *sql; /* owned; NULL for an uncached statement */
    int in_use;
    uint64_t started_ns; /* readers: for the query latency histogram */
};

struct sq_conn {
    store_conn_t base; /* first: what callers hold */
    sqlite3 *db;
    sq_stmt_t cache[CACHE_SLOTS];
    int ncached;
    sq_stmt_t *spare; /* an uncached statement handed out (while the cached one is busy) */
    /* Readers keep one read transaction (a WAL snapshot) across the requests of a
     * loop turn instead of taking and dropping the WAL read lock per statement. */
    struct sq_store *owner;
    int is_reader;
    int in_txn;
    int active; /* statements handed out and not yet done */
    uint64_t snap_seq;
    /* store_set_budget: the statements stop past budget_ns (monotonic; 0: none), by
     * the progress handler, which sets over_budget so the interrupt reads as such. */
    uint64_t budget_ns;
    int over_budget;
};

struct sq_store {
    store_t base; /* first: what callers hold */
    store_config_t cfg;
    char *path;
    sq_conn_t writer;
    sq_conn_t *readers;
    int nreaders;

    /* Checkpoints without a backup: a thread of their own with its own connection, so
     * that the writer does not wait for one. A checkpoint copies the log's pages into
     * the data file and fsyncs it; SQLite's automatic checkpoint runs inside the COMMIT
     * that crosses the threshold, on the writer, and every write queued behind that
     * commit waits for the copy and the fsync (pages scattered over the whole file on
     * a large database). In WAL mode a PASSIVE checkpoint and a writer run at the same
     * time. With a backup the writer keeps doing them between batches
     * (backup_checkpoint): the backup must have shipped every frame a checkpoint may
     * let SQLite overwrite. */
    struct {
        pthread_t thread;
        int started;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int pending;   /* the writer saw the WAL pass CKPT_FRAMES since the last checkpoint */
        int caught_up; /* atomic: the thread's checkpoint reached the end of the log it saw */
        int stop;
        sqlite3 *db; /* owned by the thread */
    } ckpt;

    uint64_t commit_seq;  /* atomic: bumped after every commit, before replies are posted */
    int64_t data_version; /* writer thread only */
    int have_data_version;
    uint64_t last_external_check_ns;
};

/* SQLite names the columns of a failed UNIQUE constraint in its message
 * ("UNIQUE constraint failed: posts.title, posts.n"): the one place its text is read,
 * turned into err's typed fields. */
static void constraint_columns(int rc, const char *msg, bs_error_t *err)
{
    err->conflict = rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY ? BS_CONFLICT_UNIQUE
                    : rc == SQLITE_CONSTRAINT_FOREIGNKEY                                 ? BS_CONFLICT_FOREIGN
                                                                                         : BS_CONFLICT_OTHER;
    const char *p = strstr(msg, "constraint failed: ");
    if (p == NULL || err->conflict != BS_CONFLICT_UNIQUE)
        return;
    p += 19;
    size_t n = 0;
    while (*p != '\0') {
        const char *dot = strchr(p, '.');
        const char *end = p + strcspn(p, ",");
        const char *col = dot != NULL && dot < end ? dot + 1 : p;
        size_t len = (size_t)(end - col);
        if (n + len + 2 >= sizeof(err->columns))
            break;
        if (n > 0)
            err->columns[n++] = ',';
        memcpy(err->columns + n, col, len);
        n += len;
        err->columns[n] = '\0';
        p = *end == ',' ? end + 1 : end;
        while (*p == ' ')
            p++;
    }
}

static void map_error(sqlite3 *db, int rc, bs_error_t *err)
{
    int prim = rc & 0xff;
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    switch (prim) {
    case SQLITE_FULL:
        bs_error_set(err, BS_ERR_STORAGE_FULL, "The database is out of space: %s.", msg);
        break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database is busy; please retry.");
        break;
    case SQLITE_CONSTRAINT:
        bs_error_set(err, BS_ERR_VALIDATION, "%s", msg);
        constraint_columns(rc, msg, err);
        break;
    case SQLITE_NOMEM:
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        break;
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database cannot be written: %s.", msg);
        LOGF(LOG_ERROR, "store", "sqlite error %d: %s", rc, msg);
        break;
    default:
        bs_error_set(err, BS_ERR_INTERNAL, NULL);
        LOGF(LOG_ERROR, "store", "sqlite error %d: %s", rc, msg);
    }
}

/* The math functions geoDistance's SQL uses (rules/dialect.c), for an SQLite built
 * without SQLITE_ENABLE_MATH_FUNCTIONS (Debian's has them): as SQLite's own, NULL
 * for a NULL or non-numeric argument and for a result that is not a number. */
static void math_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    int t = sqlite3_value_numeric_type(argv[0]);
    if (t != SQLITE_INTEGER && t != SQLITE_FLOAT) {
        sqlite3_result_null(ctx);
        return;
    }
    double x = sqlite3_value_double(argv[0]), r;
    switch (*(const char *)sqlite3_user_data(ctx)) {
    case 'r':
        r = x * (M_PI / 180.0);
        break;
    case 's':
        r = sin(x);
        break;
    case 'c':
        r = cos(x);
        break;
    default:
        r = acos(x);
    }
    if (isnan(r))
        sqlite3_result_null(ctx);
    else
        sqlite3_result_double(ctx, r);
}

static void register_math(sqlite3 *db)
{
    if (sqlite3_compileoption_used("ENABLE_MATH_FUNCTIONS"))
        return;
    static const char *const names[] = {"radians", "sin", "cos", "acos"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        sqlite3_create_function(db, names[i], 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS,
                                (void *)names[i], math_fn, NULL, NULL);
}

static int open_conn(sq_store_t *s, sq_conn_t *c, int readonly, bs_error_t *err)
{
    memset(c, 0, sizeof(*c));
    c->base.ops = &sqlite_ops;
    c->owner = s;
    c->is_reader = readonly;
    int flags =
        SQLITE_OPEN_NOMUTEX | (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(s->path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "Cannot open the database %s: %s.", s->path,
                     c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        sqlite3_close(c->db);
        c->db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(c->db, s->cfg.busy_timeout_ms > 0 ? s->cfg.busy_timeout_ms : 5000);
    register_math(c->db);
    /* With continuous backup the last connection to close must not checkpoint and
     * delete the WAL: the log left behind lets the next start prove that it continues
     * the backup (ADR 0011) instead of taking a new snapshot. */
    if (s->cfg.wal_commit != NULL)
        sqlite3_db_config(c->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
    sqlite3_extended_result_codes(c->db, 1);
    /* All pragmas live here. */
    char pragmas[512];
    snprintf(pragmas, sizeof(pragmas),
             "PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16000;"
             "PRAGMA mmap_size=268435456; %s",
             readonly ? "PRAGMA query_only=1;"
                      : (s->cfg.synchronous_full ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                                                 : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"));
    char *emsg = NULL;
    rc = sqlite3_exec(c->db, pragmas, NULL, NULL, &emsg);
    if (rc != SQLITE_OK) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "Cannot configure the database %s: %s.", s->path,
                     emsg ? emsg : sqlite3_errstr(rc));
        sqlite3_free(emsg);
        sqlite3_close(c->db);
        c->db = NULL;
        return -1;
    }
    return 0;
}

static void sq_clear_cache(sq_conn_t *c)
{
    for (int i = 0; i < CACHE_SLOTS; i++) {
        sq_stmt_t *st = &c->cache[i];
        if (st->stmt != NULL) {
            sqlite3_finalize(st->stmt);
            free(st->sql);
            st->stmt = NULL;
            st->sql = NULL;
            st->in_use = 0;
        }
    }
    c->ncached = 0;
}

static void close_conn(sq_conn_t *c)
{
    if (c->db == NULL)
        return;
    sq_reader_release(c);
    sq_clear_cache(c);
    sqlite3_close(c->db);
    c->db = NULL;
}

store_t *sqlite_store_open(const store_config_t *cfg, bs_error_t *err)
{
    sq_store_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    store_base_init(&s->base, &sqlite_ops, cfg->max_batch > 0 ? cfg->max_batch : 256);
    s->cfg = *cfg;
    s->path = strdup(cfg->path);
    s->nreaders = cfg->readers > 0 ? cfg->readers : 1;
    s->readers = calloc((size_t)s->nreaders, sizeof(*s->readers));
    if (s->path == NULL || s->readers == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        sq_close(s);
        return NULL;
    }
    /* The writer first: it creates the file and switches it to WAL. */
    if (open_conn(s, &s->writer, 0, err) != 0) {
        sq_close(s);
        return NULL;
    }
    /* A WAL hook replaces SQLite's automatic checkpoints: the backup decides when, or
     * else the checkpoint thread does them. */
    if (cfg->wal_commit != NULL)
        sqlite3_wal_hook(s->writer.db, wal_hook, s);
    else if (ckpt_start(s, err) != 0) {
        sq_close(s);
        return NULL;
    }
    for (int i = 0; i < s->nreaders; i++)
        if (open_conn(s, &s->readers[i], 1, err) != 0) {
            sq_close(s);
            return NULL;
        }
    return &s->base;
}

static void sq_close(sq_store_t *s)
{
    if (s == NULL)
        return;
    store_base_destroy(&s->base);
    ckpt_stop(s);
    for (int i = 0; s->readers != NULL && i < s->nreaders; i++)
        close_conn(&s->readers[i]);
    close_conn(&s->writer);
    free(s->readers);
    free(s->path);
    free(s);
}

/* Writer thread, right after a commit is in the WAL. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int nframes)
{
    (void)db;
    (void)name;
    sq_store_t *s = arg;
    s->cfg.wal_commit(s->cfg.wal_ctx, nframes);
    return SQLITE_OK;
}

/* Writer thread, between batches: the backup's checkpoint, when it asks for one. A
 * passive checkpoint never waits for readers; what it cannot copy yet waits for the
 * next one. */
static void backup_checkpoint(sq_store_t *s)
{
    if (s->cfg.wal_checkpoint_due == NULL || !s->cfg.wal_checkpoint_due(s->cfg.wal_ctx))
        return;
    int nlog = -1, nckpt = -1;
    int rc = sqlite3_wal_checkpoint_v2(s->writer.db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
    s->cfg.wal_checkpointed(s->cfg.wal_ctx, rc, nlog, nckpt);
}

/* ---- the checkpoint thread (no backup) ---- */

/* Writer thread, right after a commit is in the WAL: nframes is the WAL's size. */
static int ckpt_wal_hook(void *arg, sqlite3 *db, const char *name, int nframes)
{
    (void)name;
    sq_store_t *s = arg;
    /* The log restarts from its start only at a write that finds it checkpointed to its
     * end, and the writer has gone on while the thread copied: the writer copies the
     * few pages it added since, so that its next transaction restarts the log. The
     * thread's fsync already wrote the rest: this one is short. */
    if (__atomic_exchange_n(&s->ckpt.caught_up, 0, __ATOMIC_ACQ_REL)) {
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        metrics_add(&metrics_g.store_ckpt_writer, 1);
        return SQLITE_OK;
    }
    if (nframes < CKPT_FRAMES)
        return SQLITE_OK;
    if (nframes >= CKPT_WRITER_FRAMES) {
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        metrics_add(&metrics_g.store_ckpt_writer, 1);
        return SQLITE_OK;
    }
    pthread_mutex_lock(&s->ckpt.lock);
    if (!s->ckpt.pending) {
        s->ckpt.pending = 1;
        pthread_cond_signal(&s->ckpt.cond);
    }
    pthread_mutex_unlock(&s->ckpt.lock);
    return SQLITE_OK;
}

static void *ckpt_main(void *arg)
{
    util_thread_name("checkpoint");
    sq_store_t *s = arg;
    pthread_mutex_lock(&s->ckpt.lock);
    for (;;) {
        while (!s->ckpt.pending && !s->ckpt.stop)
            pthread_cond_wait(&s->ckpt.cond, &s->ckpt.lock);
        if (s->ckpt.stop)
            break;
        s->ckpt.pending = 0;
        pthread_mutex_unlock(&s->ckpt.lock);
        int nlog = -1, nckpt = -1;
        int rc = sqlite3_wal_checkpoint_v2(s->ckpt.db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
        /* BUSY: another connection is checkpointing (a backup tool, the sqlite3 shell);
         * what it leaves waits for the next commit past the threshold. */
        if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY)
            LOGF(LOG_WARN, "store", "checkpoint of %s failed: %s", s->path, sqlite3_errmsg(s->ckpt.db));
        if (rc == SQLITE_OK)
            metrics_add(&metrics_g.store_ckpt_thread, 1);
        if (rc == SQLITE_OK && nlog >= 0 && nckpt == nlog)
            __atomic_store_n(&s->ckpt.caught_up, 1, __ATOMIC_RELEASE);
        pthread_mutex_lock(&s->ckpt.lock);
    }
    pthread_mutex_unlock(&s->ckpt.lock);
    return NULL;
}

static int ckpt_start(sq_store_t *s, bs_error_t *err)
{
    int rc = sqlite3_open_v2(s->path, &s->ckpt.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(s->ckpt.db, 0);
        /* The checkpoint's fsyncs follow the durability setting (NORMAL: the WAL before,
         * the data file after each checkpoint). */
        rc = sqlite3_exec(s->ckpt.db,
                          s->cfg.synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                          NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "Cannot open the database %s for checkpoints: %s.", s->path,
                     s->ckpt.db ? sqlite3_errmsg(s->ckpt.db) : sqlite3_errstr(rc));
        sqlite3_close(s->ckpt.db);
        s->ckpt.db = NULL;
        return -1;
    }
    pthread_mutex_init(&s->ckpt.lock, NULL);
    pthread_cond_init(&s->ckpt.cond, NULL);
    if (pthread_create(&s->ckpt.thread, NULL, ckpt_main, s) != 0) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "Cannot start the checkpoint thread.");
        pthread_mutex_destroy(&s->ckpt.lock);
        pthread_cond_destroy(&s->ckpt.cond);
        sqlite3_close(s->ckpt.db);
        s->ckpt.db = NULL;
        return -1;
    }
    s->ckpt.started = 1;
    sqlite3_wal_hook(s->writer.db, ckpt_wal_hook, s);
    return 0;
}

static void ckpt_stop(sq_store_t *s)
{
    if (!s->ckpt.started)
        return;
    pthread_mutex_lock(&s->ckpt.lock);
    s->ckpt.stop = 1;
    pthread_cond_signal(&s->ckpt.cond);
    pthread_mutex_unlock(&s->ckpt.lock);
    pthread_join(s->ckpt.thread, NULL);
    pthread_mutex_destroy(&s->ckpt.lock);
    pthread_cond_destroy(&s->ckpt.cond);
    /* Closed before the writer: the writer, last, checkpoints and removes the WAL. */
    sqlite3_close(s->ckpt.db);
    s->ckpt.db = NULL;
    s->ckpt.started = 0;
}

static sq_conn_t *sq_reader(sq_store_t *s, int idx)
{
    return &s->readers[idx % s->nreaders];
}

static sq_stmt_t *sq_query_raw(sq_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                               bs_error_t *err);

static uint64_t hash_sql(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int bind_all(sqlite3_stmt *stmt, const bs_value_t *params, size_t n)
{
    int want = sqlite3_bind_parameter_count(stmt);
    if ((size_t)want != n)
        return SQLITE_RANGE;
    for (size_t i = 0; i < n; i++) {
        int rc;
        const bs_value_t *v = &params[i];
        switch (v->type) {
        case BS_VAL_INT:
            rc = sqlite3_bind_int64(stmt, (int)i + 1, v->i);
            break;
        case BS_VAL_DOUBLE:
            rc = sqlite3_bind_double(stmt, (int)i + 1, v->d);
            break;
        case BS_VAL_TEXT:
            rc = sqlite3_bind_text64(stmt, (int)i + 1, v->s ? v->s : "", v->n, SQLITE_STATIC, SQLITE_UTF8);
            break;
        default:
            rc = sqlite3_bind_null(stmt, (int)i + 1);
        }
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* Makes sure a reader's snapshot includes every commit acknowledged so far. Only
 * when no statement is in progress: a nested read keeps its outer snapshot. */
static void reader_snapshot(sq_conn_t *c)
{
    if (c->active > 0)
        return;
    uint64_t seq = __atomic_load_n(&c->owner->commit_seq, __ATOMIC_ACQUIRE);
    if (c->in_txn && c->snap_seq == seq)
        return;
    if (c->in_txn)
        sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
    c->in_txn = sqlite3_exec(c->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
    c->snap_seq = seq;
}

static void sq_reader_release(sq_conn_t *c)
{
    if (c->is_reader && c->active > 0) {
        /* Every read of a loop turn has ended by now (SQLite reads run inline): a
         * statement still counted is one a caller never ended, and it holds this
         * reader's snapshot (reader_snapshot refreshes only when none is active), so
         * the worker would serve old data from then on. Said once, with the SQL. */
        static int told;
        if (!__atomic_exchange_n(&told, 1, __ATOMIC_RELAXED))
            for (sqlite3_stmt *x = sqlite3_next_stmt(c->db, NULL); x != NULL; x = sqlite3_next_stmt(c->db, x))
                if (sqlite3_stmt_busy(x))
                    LOGF(LOG_ERROR, "store", "a read statement was left unfinished (a bug): %s",
                         sqlite3_sql(x));
    }
    if (c->is_reader && c->in_txn && c->active == 0) {
        sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
        c->in_txn = 0;
    }
}

static sq_stmt_t *sq_query(sq_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                           bs_error_t *err)
{
    uint64_t t0 = util_mono_ns();
    if (c->is_reader)
        reader_snapshot(c);
    sq_stmt_t *st = sq_query_raw(c, sql, params, nparams, err);
    if (st != NULL) {
        c->active++;
        st->started_ns = t0;
    }
    return st;
}

static sq_stmt_t *sq_query_raw(sq_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                               bs_error_t *err)
{
    uint64_t h = hash_sql(sql);
    sq_stmt_t *st = NULL;
    /* Linear probing over a small table; a full table is flushed wholesale, which
     * only happens with many distinct filter shapes. */
    for (int probe = 0; probe < 8; probe++) {
        sq_stmt_t *slot = &c->cache[(h + (uint64_t)probe) % CACHE_SLOTS];
        if (slot->stmt == NULL) {
            if (st == NULL)
                st = slot;
            break;
        }
        if (strcmp(slot->sql, sql) == 0) {
            st = slot->in_use ? NULL : slot;
            if (st == NULL)
                goto uncached;
            goto bind;
        }
    }
    if (st == NULL) {
        for (int i = 0; i < CACHE_SLOTS; i++)
            if (c->cache[i].in_use)
                goto uncached;
        sq_clear_cache(c);
        st = &c->cache[h % CACHE_SLOTS];
    }
    {
        int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st->stmt, NULL);
        if (rc != SQLITE_OK) {
            map_error(c->db, rc, err);
            if ((rc & 0xff) == SQLITE_ERROR)
                LOGF(LOG_ERROR, "store", "prepare failed: %s", sqlite3_errmsg(c->db));
            st->stmt = NULL;
            return NULL;
        }
        st->sql = strdup(sql);
        if (st->sql == NULL) {
            sqlite3_finalize(st->stmt);
            st->stmt = NULL;
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return NULL;
        }
        st->conn = c;
        c->ncached++;
    }
bind : {
    int rc = bind_all(st->stmt, params, nparams);
    if (rc != SQLITE_OK) {
        map_error(c->db, rc, err);
        sqlite3_reset(st->stmt);
        sqlite3_clear_bindings(st->stmt);
        return NULL;
    }
    st->base.ops = &sqlite_ops;
    st->in_use = 1;
    return st;
}
uncached : {
    sq_stmt_t *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &u->stmt, NULL);
    if (rc == SQLITE_OK)
        rc = bind_all(u->stmt, params, nparams);
    if (rc != SQLITE_OK) {
        map_error(c->db, rc, err);
        sqlite3_finalize(u->stmt);
        free(u);
        return NULL;
    }
    u->base.ops = &sqlite_ops;
    u->conn = c;
    u->in_use = 1;
    return u;
}
}

static int sq_step(sq_stmt_t *st, bs_error_t *err)
{
    int rc = sqlite3_step(st->stmt);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    if ((rc & 0xff) == SQLITE_INTERRUPT && st->conn->over_budget) {
        bs_error_set(err, BS_ERR_TIMEOUT, "The statement ran past its time budget.");
        return -1;
    }
    map_error(st->conn->db, rc, err);
    return -1;
}

/* The progress handler of a budgeted connection: every few thousand steps of the
 * virtual machine, nonzero (interrupt) once the budget is spent. */
static int budget_check(void *arg)
{
    sq_conn_t *c = arg;
    if (util_mono_ns() < c->budget_ns)
        return 0;
    c->over_budget = 1;
    return 1;
}

static void sq_set_budget(sq_conn_t *c, int budget_ms)
{
    c->over_budget = 0;
    if (budget_ms <= 0) {
        c->budget_ns = 0;
        sqlite3_progress_handler(c->db, 0, NULL, NULL);
        return;
    }
    c->budget_ns = util_mono_ns() + (uint64_t)budget_ms * 1000000u;
    sqlite3_progress_handler(c->db, 4000, budget_check, c);
}

static int sq_ncols(sq_stmt_t *st)
{
    return sqlite3_column_count(st->stmt);
}

static const char *sq_col_name(sq_stmt_t *st, int i)
{
    return sqlite3_column_name(st->stmt, i);
}

static bs_value_t sq_col(sq_stmt_t *st, int i)
{
    switch (sqlite3_column_type(st->stmt, i)) {
    case SQLITE_INTEGER:
        return bs_val_int(sqlite3_column_int64(st->stmt, i));
    case SQLITE_FLOAT:
        return bs_val_double(sqlite3_column_double(st->stmt, i));
    case SQLITE_NULL:
        return bs_val_null();
    default: {
        const char *p = (const char *)sqlite3_column_text(st->stmt, i);
        int n = sqlite3_column_bytes(st->stmt, i);
        return bs_val_text(p ? p : "", (size_t)n);
    }
    }
}

static void sq_done(sq_stmt_t *st)
{
    if (st == NULL)
        return;
    st->conn->active--;
    if (st->conn->is_reader)
        metrics_hist_observe(&metrics_g.store_query, util_mono_ns() - st->started_ns);
    if (st->sql == NULL) {
        sqlite3_finalize(st->stmt);
        free(st);
        return;
    }
    sqlite3_reset(st->stmt);
    sqlite3_clear_bindings(st->stmt);
    st->in_use = 0;
}

static int64_t sq_exec(sq_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                       bs_error_t *err)
{
    sq_stmt_t *st = sq_query(c, sql, params, nparams, err);
    if (st == NULL)
        return -1;
    int rc;
    while ((rc = sq_step(st, err)) == 1)
        ;
    sq_done(st);
    if (rc < 0)
        return -1;
    return sqlite3_changes64(c->db);
}

static int sq_exec_script(sq_conn_t *c, const char *sql, bs_error_t *err)
{
    char *emsg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &emsg);
    if (rc != SQLITE_OK) {
        if ((rc & 0xff) == SQLITE_ERROR)
            bs_error_set(err, BS_ERR_BAD_REQUEST, "The database rejected the change: %s.",
                         emsg ? emsg : sqlite3_errstr(rc));
        else
            map_error(c->db, rc, err);
        sqlite3_free(emsg);
        return -1;
    }
    return 0;
}

/* Transaction control through the statement cache: these run for every job, and
 * parsing them each time costs more than the insert itself. */
static int raw(sq_conn_t *c, const char *sql, bs_error_t *err)
{
    return sq_exec(c, sql, NULL, 0, err) < 0 ? -1 : 0;
}

/* Fails job j because the batch's transaction is gone: its changes (if it ran) were
 * rolled back with everything else. */
static void fail_rolled_back(store_job_t *j, const bs_error_t *cause)
{
    j->status = -1;
    if (cause->code != BS_ERR_OK && cause->code != BS_ERR_VALIDATION && cause->code != BS_ERR_BAD_REQUEST) {
        j->err = *cause;
        j->err.fields = NULL; /* they belong to the arena of the job that failed */
    } else
        bs_error_set(&j->err, BS_ERR_UNAVAILABLE,
                     "The database rolled back the transaction this write was part of; please retry.");
}

/* Runs a batch of jobs in one transaction. Returns 1 if it committed, 0 if not.
 *
 * SQLite may roll the whole transaction back by itself when a statement fails with
 * SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM or SQLITE_INTERRUPT (see "Response To Errors
 * Within A Transaction" in its documentation). The connection is then in autocommit
 * mode, and a following "SAVEPOINT job" would open a transaction of its own that
 * "RELEASE job" commits at once: rows on disk whose callers are told it failed. So
 * after every job the writer checks that its transaction still stands; if not, the
 * jobs that ran before lost their changes with it and the rest are not run. */
static int run_batch(sq_store_t *s, store_job_t *jobs)
{
    bs_error_t err;
    bs_error_init(&err);
    sq_conn_t *c = &s->writer;
    int committed = 0;
    if (raw(c, "BEGIN IMMEDIATE", &err) == 0) {
        store_job_t *j;
        for (j = jobs; j != NULL; j = j->next_in_queue) {
            bs_error_init(&j->err);
            if (raw(c, "SAVEPOINT job", &j->err) != 0) {
                j->status = -1;
            } else {
                j->status = j->run(j, &c->base);
                /* The job's realtime events, in its own savepoint (store/outbox.c). */
                if (j->status == 0 && store_outbox_append(&s->base, &c->base, j) != 0)
                    j->status = -1;
                bs_error_t ignored;
                bs_error_init(&ignored);
                if (j->status != 0) {
                    if (j->err.code == BS_ERR_OK)
                        bs_error_set(&j->err, BS_ERR_INTERNAL, NULL);
                    raw(c, "ROLLBACK TO job", &ignored);
                }
                raw(c, "RELEASE job", &ignored);
            }
            if (sqlite3_get_autocommit(c->db))
                break;
        }
        if (j != NULL) {
            /* The transaction vanished under job j: nothing of this batch is on disk. */
            bs_error_t cause = j->err;
            LOGF(LOG_ERROR, "store", "the database rolled back a group commit by itself: %s",
                 cause.message[0] ? cause.message : "unknown cause");
            int after = 0;
            for (store_job_t *k = jobs; k != NULL; k = k->next_in_queue) {
                if (k == j) {
                    after = 1;
                    if (k->status == 0)
                        fail_rolled_back(k, &cause);
                } else if (after || k->status == 0) {
                    bs_error_init(&k->err);
                    fail_rolled_back(k, &cause);
                }
            }
            err = cause;
        } else if (raw(c, "COMMIT", &err) == 0)
            committed = 1;
        else {
            bs_error_t ignored;
            bs_error_init(&ignored);
            raw(c, "ROLLBACK", &ignored);
        }
    }
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue)
        if (!committed && j->status == 0) {
            j->status = -1;
            j->err = err;
        }
    if (committed)
        __atomic_add_fetch(&s->commit_seq, 1, __ATOMIC_RELEASE);
    return committed;
}

/* PRAGMA data_version on the writer's connection changes only when another
 * connection commits: readers never do, so it means another process wrote the file
 * (e.g. `basalt superuser` while serving). Callers are told through the hook. */
static void check_external(sq_store_t *s)
{
    /* At most once a second: that is the promise, and batches can be frequent. */
    uint64_t now = util_mono_ns();
    if (s->have_data_version && now - s->last_external_check_ns < 900000000u)
        return;
    s->last_external_check_ns = now;
    sq_stmt_t *st;
    bs_error_t err;
    bs_error_init(&err);
    st = sq_query(&s->writer, "PRAGMA data_version", NULL, 0, &err);
    if (st == NULL)
        return;
    if (sq_step(st, &err) == 1) {
        int64_t v = sq_col(st, 0).i;
        if (s->have_data_version && v != s->data_version) {
            store_outbox_external(&s->base);
            if (s->cfg.on_external_change != NULL)
                s->cfg.on_external_change();
        }
        s->data_version = v;
        s->have_data_version = 1;
    }
    sq_done(st);
}

/* --- store_ops_t: the public interface's entry points ------------------------------ */

#define S(p) ((sq_store_t *)(p))
#define C(p) ((sq_conn_t *)(p))
#define ST(p) ((sq_stmt_t *)(p))

static void op_close(store_t *s)
{
    sq_close(S(s));
}
static store_conn_t *op_reader(store_t *s, int idx)
{
    return &sq_reader(S(s), idx)->base;
}
static int op_run_jobs(store_t *s, store_job_t *jobs)
{
    return run_batch(S(s), jobs);
}
static void op_writer_tick(store_t *s)
{
    check_external(S(s));
    backup_checkpoint(S(s));
}
static store_conn_t *op_writer(store_t *s)
{
    return &S(s)->writer.base;
}
static store_stmt_t *op_query(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                              bs_error_t *err)
{
    sq_stmt_t *st = sq_query(C(c), sql, params, nparams, err);
    return st != NULL ? &st->base : NULL;
}
static int op_step(store_stmt_t *st, bs_error_t *err)
{
    return sq_step(ST(st), err);
}
static int op_ncols(store_stmt_t *st)
{
    return sq_ncols(ST(st));
}
static const char *op_col_name(store_stmt_t *st, int i)
{
    return sq_col_name(ST(st), i);
}
static bs_value_t op_col(store_stmt_t *st, int i)
{
    return sq_col(ST(st), i);
}
static void op_done(store_stmt_t *st)
{
    sq_done(ST(st));
}
static int64_t op_exec(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                       bs_error_t *err)
{
    return sq_exec(C(c), sql, params, nparams, err);
}
static int op_exec_script(store_conn_t *c, const char *sql, bs_error_t *err)
{
    return sq_exec_script(C(c), sql, err);
}
static void op_reader_release(store_conn_t *c)
{
    sq_reader_release(C(c));
}

static void op_set_budget(store_conn_t *c, int budget_ms)
{
    sq_set_budget(C(c), budget_ms);
}
static void op_clear_cache(store_conn_t *c)
{
    sq_clear_cache(C(c));
}

static const store_ops_t sqlite_ops = {
    .name = "sqlite",
    .close = op_close,
    .sql = RULES_DIALECT_SQLITE,
    .reader = op_reader,
    .run_jobs = op_run_jobs,
    .writer_tick = op_writer_tick,
    .writer = op_writer,
    .query = op_query,
    .step = op_step,
    .ncols = op_ncols,
    .col_name = op_col_name,
    .col = op_col,
    .done = op_done,
    .exec = op_exec,
    .exec_script = op_exec_script,
    .reader_release = op_reader_release,
    .set_budget = op_set_budget,
    .clear_cache = op_clear_cache,
};
