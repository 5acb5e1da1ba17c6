/*
 * The PostgreSQL backend of store.h (ADR 0004), over libpq.
 *
 * Connections: one per reader index (one per worker) and one for the writer thread.
 * Each is used by one thread at a time, as store.h requires, and is reconnected by
 * that thread when it breaks: a query on a broken connection tries to reconnect at
 * most once per backoff period (100 ms doubling to 2 s) and otherwise fails at once
 * with 503, so a lost server gives fast errors, never a hang, and service returns by
 * itself when the server does.
 *
 * Statements: a query runs to completion when store_query is called and its rows are
 * read from the result (PQsendQueryParams; reads are short and indexed, results
 * small), waited for with a deadline (await_result). With `prepared_statements` set,
 * each connection prepares each distinct SQL text once under a name of its own and
 * runs it with PQsendQueryPrepared; through PgBouncer's
 * transaction mode (1.18 has no protocol-level prepared statements) it must be off,
 * and unnamed statements are used: no session state is ever left on a connection.
 *
 * Writes: the writer thread runs the jobs that queued while its last transaction ran
 * as one group commit (BEGIN, a statement time-out local to it, each job in a
 * savepoint, COMMIT; a lone job needs no savepoint) and answers them only after COMMIT
 * returned, so an acknowledged write is durable on the primary as its
 * synchronous_commit setting defines (on by default). A job that fails is rolled back
 * alone (ROLLBACK TO its savepoint). One writer thread (ADR 0014): the jobs' committed
 * hooks (schema snapshot, cache invalidation) run in commit order on it. Consecutive
 * pipelinable jobs (creates) run as coroutines up to their first statement, and those
 * statements go out in one pipeline; what a later failure or a further statement
 * proves premature is undone and sent again (ADR 0021, "pipelined jobs" below).
 *
 * External changes: every write transaction sends NOTIFY basalt_changes with this
 * store's instance id (delivered only if it commits, in commit order); a thread of
 * its own listens on a direct connection (LISTEN needs a session, which PgBouncer's
 * transaction mode does not keep), waiting on its socket, and calls
 * on_external_change for the ids of others, on_schema_change for basalt_schema.
 *
 * Reads (ADR 0004): a pool of --db-pool-size threads, each owning one connection of
 * the same kind (deadline, reconnect with backoff, one safe retry), takes read jobs
 * from one queue. A worker hands over the reads of one loop turn together (one lock,
 * one wake-up); a thread takes a share of what waits (several jobs per wake-up under
 * load; their first statements in one pipeline, ADR 0021), runs them and posts each
 * back to its worker's mailbox. A worker's loop never
 * waits on the network: a read that waits on a lock holds one pool thread, not the
 * worker's other connections. The per-reader connections (store_reader) stay for
 * start-up and the command line, never for a worker's loop.
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "base/coro.h"
#include "base/log.h"
#include "base/util.h"
#include "metrics/metrics.h"
#include "store/postgres/pg_replicas.h"
#include "store/store_backend.h"

/* Type OIDs from PostgreSQL's catalog (pg_type.dat); libpq does not export them. */
enum {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700
};

#define PREPARED_SLOTS 256
#define DEFS_STALE UINT64_MAX

typedef struct pg_store pg_store_t;

typedef struct {
    char *sql; /* owned */
    char name[16];
} prepared_t;

typedef struct pg_conn {
    store_conn_t base; /* first: what callers hold */
    pg_store_t *owner;
    int is_reader;
    int prepare; /* names its statements (a session of its own: not through PgBouncer) */
    PGconn *pg;
    uint64_t retry_at_ns; /* after a failed reconnect, not before this */
    uint64_t backoff_ns;
    int connected_once; /* for the log: a first connection is no reconnection */
    int timed_out;      /* the last statement passed the deadline: not to be run again */
    int in_script;      /* the writer runs a script (DDL): its deadline is ddl_timeout_ms */
    /* store_set_budget: past budget_ns (monotonic; 0: none) the running statement is
     * cancelled (budget_cancelled), the connection kept. A cancel that arrived after
     * its statement had finished may still stop the next one (cancel_stale): a
     * reader's is then run once more. */
    uint64_t budget_ns;
    int budget_cancelled;
    int cancel_stale;
    int wrote;      /* the open transaction may have changed data (changes_data) */
    int ran_script; /* a script (DDL) ran since the prepared statements were dropped */
    /* store_definitions_gen() when the prepared statements were last known to match
     * the collections' definitions; DEFS_STALE: drop them before the next job. */
    uint64_t defs_gen;
    /* The writer, between two jobs of a group commit: "RELEASE SAVEPOINT job;
     * SAVEPOINT job" is owed, and goes out with the next statement (send_savepoint);
     * savepoint_failed: it was refused, so the batch cannot commit. */
    int savepoint_due;
    int savepoint_failed;
    /* The writer: the transaction's "BEGIN; SET LOCAL statement_timeout = n" (and the
     * first "SAVEPOINT job" of a group commit) not sent yet: it goes out with the
     * first statement, in the same pipeline (ADR 0018). */
    int begin_due;
    int begin_savepoint;
    char begin_timeout[48];
    /* The writer: one statement whose result is not needed at once (store_exec_later:
     * a job's outbox statement), sent in the same round trip as the next statement or
     * the COMMIT. text NULL: none pending. */
    struct {
        char *text; /* owned (pg_sql form) */
        const char **vals;
        char *buf; /* owned: the values' text */
        int nparams;
        store_later_fn done;
        void *arg;
        bs_error_t *err; /* the job's */
    } later;
    prepared_t prepared[PREPARED_SLOTS];
    unsigned next_name;
    /* The writer while it runs pipelinable jobs as coroutines (ADR 0021); else NULL. */
    struct spec *spec;
    /* A pool connection is used by its own thread only (checked on every statement). */
    int bound;
    pthread_t thread;
    const char *url; /* a replica's URL (borrowed from the monitor); NULL: the store's */
} pg_conn_t;

/* Jobs of one group commit run as coroutines up to their first statement, whose
 * statements then go out in one pipeline (ADR 0021). At most SPEC_MAX at once: a
 * savepoint each, and PostgreSQL keeps 64 subtransactions per backend in its cache. */
#define SPEC_MAX 60
#define SPEC_STACK (1024 * 1024)
#define SPEC_PREPARE 4
/* Most point reads a pool thread takes per wake-up: enough to pay the hand-over once
 * for several reads under load (and to send them in one pipeline), few enough that one
 * slow read delays few others. A scan is taken alone. */
#define POOL_TAKE_MAX 8

typedef struct {
    store_job_t *job;
    struct pg_conn *conn;
    coro_t *co;
    int status;
    int done;    /* its run returned */
    int waiting; /* suspended at its first statement (below), whose result it waits for */
    int resend;  /* that statement is not (or no longer) done on the server: to be sent */
    int sent;    /* its savepoint stands in the transaction: a rollback has a target */
    int failed;  /* its statement failed: the transaction is aborted from there */
    int second;  /* it ran further statements after its first */
    int gave_up; /* a read whose statement ran past its deadline: why says so */
    bs_error_t why;
    const char *text, *name; /* its first statement (run()'s, alive while it waits) */
    int nparams;
    const char *const *vals;
    PGresult *res; /* that statement's result, handed over when it is resumed */
} spec_job_t;

typedef struct spec {
    spec_job_t jobs[SPEC_MAX];
    int n;
    int cur;       /* the job running now, -1: the writer's own code */
    int deferring; /* 1: a job's first statement is held (not sent) and the job suspended */
    int broken;    /* the connection or the transaction is lost: every job fails */
    int retried;   /* the first pipeline of the transaction was sent again once */
    int sent_any;
    int failures;   /* pipelines of this run lost with their connection */
    int sequential; /* a speculation was undone: the rest go one job per pipeline */
    /* 1: a pool thread's point reads: no savepoints and nothing to undo; the pipeline
     * is one transaction (BEGIN ... COMMIT), so that PgBouncer keeps one server for it. */
    int reads;
    bs_error_t err;                             /* why broken */
    char set[SPEC_MAX][28], undo[SPEC_MAX][40]; /* SAVEPOINT spN, ROLLBACK TO SAVEPOINT spN */
    char *prepare[SPEC_PREPARE];                /* texts sent unnamed, to prepare once the transaction ends */
    int nprepare;
} spec_t;

typedef struct pool_thread {
    pg_store_t *s;
    pthread_t thread;
    int started;
    pg_conn_t conn;
    pg_conn_t *replicas; /* one per read replica, connected when first used */
    spec_t spec;         /* point reads sent in one pipeline (ADR 0021) */
    coro_t *coros[POOL_TAKE_MAX];
    int coros_failed;
} pool_thread_t;

typedef struct pg_stmt {
    store_stmt_t base; /* first: what callers hold */
    pg_conn_t *conn;
    PGresult *res;
    int row, nrows, ncols;
    uint64_t started_ns;
} pg_stmt_t;

struct pg_store {
    store_t base; /* first: what callers hold */
    store_config_t cfg;
    pg_replicas_t *replicas; /* NULL without --db-replicas */
    char *url;
    char where[160]; /* "host:port/db" for messages: never the password */
    pg_conn_t writer;
    spec_t spec;             /* the writer's pipelined jobs (ADR 0021) */
    coro_t *coros[SPEC_MAX]; /* their coroutines, made when first needed */
    int coros_failed;        /* could not be made: jobs run one after another */
    pg_conn_t *readers;
    int nreaders;
    pg_conn_t listener; /* LISTEN basalt_changes, basalt_schema; listener thread only */
    int listening;      /* the LISTEN on the current listener connection took */
    pthread_t listen_thread;
    int listen_started, listen_stopping; /* stopping: atomic */
    int listen_wake;                     /* eventfd: wakes the listener thread to stop */
    char *listen_url;
    char *writer_url;  /* --db-writer: the writer's own direct connection; NULL: url */
    char instance[33]; /* hex; the payload of this store's NOTIFYs */
    char notify_commit[96];
    char notify_only[80];
    uint64_t writer_round_trips; /* atomic: written by the writer's thread, read by stats */
    /* The read pool: its threads take jobs from the two queues (under pool_lock):
     * rq[READS_POINT] and rq[READS_SCAN] (store_job_t.scan), oldest first, at most
     * scan_cap scans running at once (scans_running). */
    pthread_mutex_t pool_lock;
    pthread_cond_t pool_cond;
    struct {
        store_job_t *head, **tail;
        size_t n;
    } rq[2];
    uint64_t rseq;
    int scans_running;
    int scan_cap;
    int pool_stopping;
    int npool;
    pool_thread_t *pool;
};

static const store_ops_t pg_ops;

/* --- errors ------------------------------------------------------------------------ */

static int conn_lost(pg_conn_t *c)
{
    return c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK;
}

/* The columns of a unique violation from its detail, "Key (a, lower(b))=(...) already
 * exists.": each term without function calls and casts. */
static void key_columns(const char *detail, bs_error_t *err)
{
    const char *p = detail ? strstr(detail, "Key (") : NULL;
    const char *end = p ? strstr(p, ")=(") : NULL;
    if (p == NULL || end == NULL)
        return;
    p += 5;
    size_t n = 0;
    while (p < end) {
        const char *term_end = p;
        int depth = 0;
        while (term_end < end && (depth > 0 || *term_end != ',')) {
            depth += *term_end == '(' ? 1 : *term_end == ')' ? -1 : 0;
            term_end++;
        }
        /* The innermost identifier: after the last '(' and before ')' or "::". */
        const char *a = p;
        for (const char *q = p; q < term_end; q++)
            if (*q == '(')
                a = q + 1;
        const char *b = a;
        while (b < term_end && *b != ')' && *b != ':' && *b != ' ')
            b++;
        if (*a == '"')
            a++;
        if (b > a && b[-1] == '"')
            b--;
        size_t len = b > a ? (size_t)(b - a) : 0;
        if (len > 0 && n + len + 2 < sizeof(err->columns)) {
            if (n > 0)
                err->columns[n++] = ',';
            memcpy(err->columns + n, a, len);
            n += len;
            err->columns[n] = '\0';
        }
        p = term_end < end ? term_end + 1 : end;
        while (p < end && *p == ' ')
            p++;
    }
}

/* Fills err from a failed result (res may be NULL: then from the connection); sql,
 * when known, is logged with errors that mean a bug (its values are parameters). */
static int stale_plan(const PGresult *res);

static void map_error_sql(pg_conn_t *c, const PGresult *res, const char *sql, bs_error_t *err)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (msg == NULL)
        msg = c->pg != NULL ? PQerrorMessage(c->pg) : "no connection";
    const char *severity = res != NULL ? PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;
    int fatal = severity != NULL && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0);
    if (conn_lost(c) || fatal || state == NULL || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57P", 3) == 0) {
        /* 08: connection exceptions; 57P01-03: the server is shutting down or starting;
         * FATAL or PANIC, whatever the SQLSTATE: the server ended the session (an idle
         * transaction's time-out, a terminated backend), and the connection with it. */
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
        LOGF(LOG_WARN, "store", "PostgreSQL at %s: %s%s%.*s", c->owner->where, state ? state : "no SQLSTATE",
             state ? " " : ": ", (int)strcspn(msg, "\n"), msg);
        return;
    }
    if (strncmp(state, "23", 2) == 0) {
        bs_error_set(err, BS_ERR_VALIDATION, "%s", msg);
        err->conflict = strcmp(state, "23505") == 0   ? BS_CONFLICT_UNIQUE
                        : strcmp(state, "23503") == 0 ? BS_CONFLICT_FOREIGN
                                                      : BS_CONFLICT_OTHER;
        const char *name = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        snprintf(err->constraint, sizeof(err->constraint), "%s", name ? name : "");
        key_columns(PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL), err);
    } else if (stale_plan(res)) {
        /* A prepared statement met a table whose columns changed after it was prepared:
         * another instance's schema change that this connection's job overtook (a
         * reader retried once already, its slot forgotten by run; the writer's
         * transaction is aborted). The statements go before the next job, and the
         * definitions are reloaded. */
        c->defs_gen = DEFS_STALE;
        bs_error_set(err, BS_ERR_UNAVAILABLE,
                     "The collections changed on another instance a moment ago; please retry.");
        LOGF(LOG_INFO, "store", "a prepared statement met collections changed elsewhere: %.*s",
             (int)strcspn(msg, "\n"), msg);
        if (c->owner->cfg.on_schema_change != NULL)
            c->owner->cfg.on_schema_change();
    } else if (strcmp(state, "57014") == 0) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database did not answer within the statement time-out.");
    } else if (strcmp(state, "25006") == 0) {
        /* A write reached a server in recovery: a failover is under way (the new
         * primary's Patroni holds the leader key a moment before promotion ends) or the
         * connection still points at a demoted node. */
        bs_error_set(err, BS_ERR_UNAVAILABLE,
                     "The database is read-only for now (a failover may be under way); please retry.");
        LOGF(LOG_WARN, "store", "PostgreSQL at %s is read-only (in recovery): %.*s", c->owner->where,
             (int)strcspn(msg, "\n"), msg);
    } else if (strcmp(state, "53100") == 0) {
        bs_error_set(err, BS_ERR_STORAGE_FULL, "The database is out of space: %s.", msg);
    } else if (strncmp(state, "53", 2) == 0 || strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) {
        /* Too many connections, out of memory, serialization failure, deadlock. */
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database is busy (%s); please retry.", msg);
    } else if (strncmp(state, "22", 2) == 0) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The database refused a value: %s.", msg);
    } else if ((c->is_reader || !c->ran_script) &&
               (strcmp(state, "42P01") == 0 || strcmp(state, "42703") == 0)) {
        /* A read or a record write built from this instance's collections met a table
         * or column that is gone: another instance changed them and this request
         * overtook its notification (ADR 0013). The writer's transaction is aborted,
         * nothing of it stays; the next request reloads them. A script's (this
         * instance's own DDL) is an error of the script, below. */
        bs_error_set(err, BS_ERR_UNAVAILABLE,
                     "The collections changed on another instance a moment ago; please retry.");
        LOGF(LOG_INFO, "store", "a read met collections changed elsewhere (%s): %.*s", state,
             (int)strcspn(msg, "\n"), msg);
        if (c->owner->cfg.on_schema_change != NULL)
            c->owner->cfg.on_schema_change();
    } else {
        bs_error_set(err, BS_ERR_INTERNAL, NULL);
        LOGF(LOG_ERROR, "store", "postgres error %s: %s%s%s", state, msg, sql ? " in: " : "", sql ? sql : "");
    }
}

static void map_error(pg_conn_t *c, const PGresult *res, bs_error_t *err)
{
    map_error_sql(c, res, NULL, err);
}

/* --- connections ------------------------------------------------------------------- */

static void forget_prepared(pg_conn_t *c)
{
    for (int i = 0; i < PREPARED_SLOTS; i++) {
        free(c->prepared[i].sql);
        c->prepared[i].sql = NULL;
    }
}

/* Server notices ("table does not exist, skipping") go to the debug log, not stderr. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    LOGF(LOG_DEBUG, "store", "postgres notice: %.*s", (int)strcspn(message, "\n"), message);
}

static int connect_conn(pg_conn_t *c, bs_error_t *err)
{
    pg_store_t *s = c->owner;
    const char *url = c->url != NULL ? c->url : c == &s->listener ? s->listen_url : s->url;
    if (c == &s->writer && s->writer_url != NULL)
        url = s->writer_url;
    char timeout[16];
    int secs = (s->cfg.connect_timeout_ms + 999) / 1000;
    snprintf(timeout, sizeof(timeout), "%d", secs < 2 ? 2 : secs); /* libpq's minimum is 2 s */
    /* UTF-8 in the start-up packet: no round trip, and PgBouncer tracks it. */
    const char *keys[] = {"dbname", "connect_timeout", "application_name", "client_encoding", NULL};
    const char *vals[] = {url, timeout, "basalt", "UTF8", NULL};
    if (c->pg != NULL)
        PQfinish(c->pg);
    forget_prepared(c);
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (c->pg == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    if (PQstatus(c->pg) != CONNECTION_OK) {
        char msg[200];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c->pg));
        msg[strcspn(msg, "\n")] = '\0';
        bs_error_set(err, BS_ERR_UNAVAILABLE, "Cannot connect to PostgreSQL at %s: %s.", s->where, msg);
        return -1;
    }
    PQsetNoticeProcessor(c->pg, on_notice, NULL);
    return 0;
}

/* Makes sure c has a working connection: reconnects a broken one, at most once per
 * backoff period. Returns 0 or -1 (err filled: 503). */
static int ensure_conn(pg_conn_t *c, bs_error_t *err)
{
    if (!conn_lost(c))
        return 0;
    uint64_t now = util_mono_ns();
    if (now < c->retry_at_ns) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
        return -1;
    }
    if (connect_conn(c, err) == 0) {
        c->backoff_ns = 0;
        if (c->connected_once)
            LOGF(LOG_INFO, "store", "reconnected to PostgreSQL at %s", c->owner->where);
        c->connected_once = 1;
        return 0;
    }
    c->backoff_ns = c->backoff_ns == 0 ? 100000000u : c->backoff_ns * 2;
    if (c->backoff_ns > 2000000000u)
        c->backoff_ns = 2000000000u;
    c->retry_at_ns = now + c->backoff_ns;
    return -1;
}

static void later_discard(pg_conn_t *c);

static void close_conn(pg_conn_t *c)
{
    later_discard(c);
    forget_prepared(c);
    if (c->pg != NULL)
        PQfinish(c->pg);
    c->pg = NULL;
}

/* "host:port/dbname" of a URL, for messages (libpq parses it; no password). */
static void describe(pg_store_t *s)
{
    PQconninfoOption *opts = PQconninfoParse(s->url, NULL);
    const char *host = "localhost", *port = "5432", *db = "";
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
    }
    snprintf(s->where, sizeof(s->where), "%s:%s/%s", host, port, db);
    PQconninfoFree(opts);
}

static int result_failed(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY;
}

/* The deadline of c's next statement: a script's on the writer, else a write's. */
static int limit_ms(const pg_conn_t *c)
{
    return c->in_script ? c->owner->cfg.ddl_timeout_ms : c->owner->cfg.statement_timeout_ms;
}

/* Waits for the whole answer to the statement just sent on c, until the deadline
 * (statement_timeout_ms, plus a little so that the server's own time-out of a write
 * transaction speaks first). Returns the last result (owned; the first failed one if
 * any failed), or NULL with err filled: on a lost connection, or past the deadline,
 * when the statement is cancelled and the connection dropped, so that a server that
 * stopped answering (or a PgBouncer waiting for one) gives a fast 503, never a hang. */
static uint64_t answer_deadline(pg_conn_t *c)
{
    int limit = limit_ms(c);
    return limit > 0 ? util_mono_ns() + (uint64_t)(limit + 500) * 1000000u : 0;
}

/* Waits until PQgetResult will not block, or past deadline (0: none) cancels the
 * statement and drops the connection (c->pg NULL, err filled, -1). */
static int await_ready(pg_conn_t *c, uint64_t deadline, bs_error_t *err)
{
    int limit = limit_ms(c);
    c->timed_out = 0;
    while (PQisBusy(c->pg)) {
        int wait = -1;
        if (c->budget_ns != 0 && !c->budget_cancelled) {
            uint64_t now = util_mono_ns();
            if (now >= c->budget_ns) {
                /* Past the budget: the server stops the statement, whose error then
                 * comes as its answer (the deadline still holds if none comes). */
                char why[128];
                PGcancel *cn = PQgetCancel(c->pg);
                if (cn != NULL) {
                    PQcancel(cn, why, sizeof(why));
                    PQfreeCancel(cn);
                }
                c->budget_cancelled = 1;
                continue;
            }
            wait = (int)((c->budget_ns - now) / 1000000u) + 1;
        }
        if (deadline != 0) {
            uint64_t now = util_mono_ns();
            if (now >= deadline) {
                char why[128];
                PGcancel *cn = PQgetCancel(c->pg);
                if (cn != NULL) {
                    PQcancel(cn, why, sizeof(why));
                    PQfreeCancel(cn);
                }
                PQfinish(c->pg);
                c->pg = NULL;
                forget_prepared(c);
                c->timed_out = 1;
                LOGF(LOG_WARN, "store", "PostgreSQL at %s did not answer within %d ms", c->owner->where,
                     limit);
                bs_error_set(err, BS_ERR_UNAVAILABLE,
                             "The database did not answer within %d ms; please retry.", limit);
                return -1;
            }
            int left = (int)((deadline - now) / 1000000u) + 1;
            if (wait < 0 || left < wait)
                wait = left;
        }
        struct pollfd p = {.fd = PQsocket(c->pg), .events = POLLIN};
        int rc = poll(&p, 1, wait);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0 && !PQconsumeInput(c->pg))
            break;
    }
    return 0;
}

/* Counts a round trip of the writer's connection (store_stats_t.round_trips). */
static void count_round_trip(pg_conn_t *c)
{
    if (c == &c->owner->writer) {
        __atomic_add_fetch(&c->owner->writer_round_trips, 1, __ATOMIC_RELAXED);
        metrics_add(&metrics_g.store_round_trips, 1);
    }
}

static PGresult *await_result(pg_conn_t *c, bs_error_t *err)
{
    count_round_trip(c);
    if (await_ready(c, answer_deadline(c), err) != 0)
        return NULL;
    PGresult *keep = NULL, *r;
    while ((r = PQgetResult(c->pg)) != NULL) {
        /* The first failure wins; otherwise the last statement's result. */
        if (keep != NULL && (result_failed(keep) || PQresultStatus(r) == PGRES_EMPTY_QUERY)) {
            PQclear(r);
            continue;
        }
        PQclear(keep);
        keep = r;
    }
    if (keep == NULL) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
        return NULL;
    }
    return keep;
}

/* PQexec with the deadline: sends sql (no parameters; may hold several statements)
 * and returns the last result (or the first failed one), or NULL with err filled. */
static PGresult *exec_simple(pg_conn_t *c, const char *sql, bs_error_t *err)
{
    if (!PQsendQuery(c->pg, sql)) {
        map_error(c, NULL, err);
        return NULL;
    }
    return await_result(c, err);
}

/* --- statements -------------------------------------------------------------------- */

/* PostgreSQL takes ?N as an operator character: the SQLite dialect's placeholders
 * are rewritten to $N, so SQL written for store.h runs on both while the callers
 * move to the dialect table. Quoted strings and identifiers are left alone. */
static char *pg_sql(const char *sql)
{
    size_t n = strlen(sql);
    char *out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    char quote = 0;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = sql[i];
        if (quote) {
            if (ch == quote)
                quote = 0;
        } else if (ch == '\'' || ch == '"') {
            quote = ch;
        } else if (ch == '?' && i + 1 < n && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
            ch = '$';
        }
        out[j++] = ch;
    }
    out[j] = '\0';
    return out;
}

static uint64_t hash_sql(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The name under which sql is prepared on c, preparing it first if needed; NULL on
 * failure (err filled). */
static const char *prepared_name(pg_conn_t *c, const char *sql, bs_error_t *err)
{
    prepared_t *p = &c->prepared[hash_sql(sql) % PREPARED_SLOTS];
    if (p->sql != NULL && strcmp(p->sql, sql) == 0)
        return p->name;
    char name[16];
    snprintf(name, sizeof(name), "b%u", c->next_name++);
    PGresult *r = PQsendPrepare(c->pg, name, sql, 0, NULL) ? await_result(c, err) : NULL;
    if (r == NULL && err->code == BS_ERR_OK)
        map_error(c, NULL, err);
    if (r == NULL)
        return NULL;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        map_error(c, r, err);
        PQclear(r);
        return NULL;
    }
    PQclear(r);
    if (p->sql != NULL) {
        /* The slot is taken by another text: free the old statement on the server. */
        char dealloc[48];
        snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", p->name);
        bs_error_t ignored;
        bs_error_init(&ignored);
        PQclear(exec_simple(c, dealloc, &ignored));
        free(p->sql);
    }
    p->sql = strdup(sql);
    if (p->sql == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    memcpy(p->name, name, sizeof(name));
    return p->name;
}

/* Whether a statement that succeeded may have changed data: everything but a plain
 * SELECT and an INSERT, UPDATE or DELETE that touched no row (the job runner's claim
 * when nothing is due). Conservative: a text that does not start with SELECT (a WITH
 * may hold an UPDATE) counts as a change. */
static int changes_data(const char *sql, const PGresult *res)
{
    if (PQresultStatus(res) == PGRES_TUPLES_OK && strncmp(sql, "SELECT", 6) == 0)
        return 0;
    const char *cmd = PQcmdStatus((PGresult *)res), *n = PQcmdTuples((PGresult *)res);
    int dml =
        strncmp(cmd, "INSERT", 6) == 0 || strncmp(cmd, "UPDATE", 6) == 0 || strncmp(cmd, "DELETE", 6) == 0;
    return !(dml && strcmp(n, "0") == 0);
}

/* PostgreSQL refuses to run a prepared statement whose result columns changed since it
 * was prepared ("cached plan must not change result type", SQLSTATE 0A000). */
static int stale_plan(const PGresult *res)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    return state != NULL && strcmp(state, "0A000") == 0 && msg != NULL && strstr(msg, "cached plan") != NULL;
}

/* The next result of a pipeline (the trailing NULL of its statement consumed), or
 * NULL with err filled. */
static PGresult *pipeline_result(pg_conn_t *c, uint64_t deadline, int is_sync, bs_error_t *err)
{
    if (await_ready(c, deadline, err) != 0)
        return NULL;
    PGresult *r = PQgetResult(c->pg);
    if (r == NULL) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
        return NULL;
    }
    if (!is_sync) {
        /* Each statement's results end with NULL, which PQgetResult gives without waiting. */
        PGresult *extra;
        while ((extra = PQgetResult(c->pg)) != NULL)
            PQclear(extra);
    }
    return r;
}

/* One statement of a pipeline: text (unnamed) or name (prepared before). */
typedef struct {
    const char *text, *name;
    int nparams;
    const char *const *vals;
} pipe_q_t;

/* Sends qs[0..n) in one pipeline with one Sync (one round trip) and fills res[]
 * (owned; a statement after a failed one gets PGRES_PIPELINE_ABORTED). Each result
 * must come within the deadline of one statement from the one before. Only ever
 * inside a transaction: PgBouncer's transaction mode then keeps the one server
 * connection for the client, to the Sync at the earliest (a read pipeline ends with
 * its COMMIT before the Sync). Returns 0, or -1 with err and the connection dropped
 * (a pipeline left half read cannot be resumed): every result is freed, or with got
 * set, the first *got are kept (the ones that came). */
static int pipeline_got(pg_conn_t *c, const pipe_q_t *qs, int n, PGresult **res, bs_error_t *err, int *got);

static int pipeline(pg_conn_t *c, const pipe_q_t *qs, int n, PGresult **res, bs_error_t *err)
{
    return pipeline_got(c, qs, n, res, err, NULL);
}

static int pipeline_got(pg_conn_t *c, const pipe_q_t *qs, int n, PGresult **res, bs_error_t *err, int *got)
{
    int came = 0;
    PGresult *sync = NULL;
    for (int q = 0; q < n; q++)
        res[q] = NULL;
    if (!PQenterPipelineMode(c->pg)) {
        map_error(c, NULL, err);
        goto broken;
    }
    int sent = 1;
    for (int q = 0; q < n && sent; q++)
        sent = qs[q].name != NULL
                   ? PQsendQueryPrepared(c->pg, qs[q].name, qs[q].nparams, qs[q].vals, NULL, NULL, 0)
                   : PQsendQueryParams(c->pg, qs[q].text, qs[q].nparams, NULL, qs[q].vals, NULL, NULL, 0);
    if (!sent || !PQpipelineSync(c->pg)) {
        map_error(c, NULL, err);
        goto broken;
    }
    count_round_trip(c);
    for (int q = 0; q < n; q++, came++)
        if ((res[q] = pipeline_result(c, answer_deadline(c), 0, err)) == NULL)
            goto broken;
    if ((sync = pipeline_result(c, answer_deadline(c), 1, err)) == NULL)
        goto broken;
    if (PQresultStatus(sync) != PGRES_PIPELINE_SYNC || !PQexitPipelineMode(c->pg)) {
        /* Where the Sync's answer should be, libpq gives the connection's loss when it
         * closed after the statements' answers and before ReadyForQuery (a server or
         * PgBouncer gone between two messages): that is a lost database (503), as
         * anywhere else. Only a connection still up that answers out of order is a
         * fault of ours. */
        if (conn_lost(c) || result_failed(sync))
            map_error(c, sync, err);
        else
            bs_error_set(err, BS_ERR_INTERNAL, "The database connection's pipeline went out of step.");
        goto broken;
    }
    PQclear(sync);
    return 0;
broken:
    if (got != NULL)
        *got = came;
    for (int q = got != NULL ? came : 0; q < n; q++) {
        PQclear(res[q]);
        res[q] = NULL;
    }
    PQclear(sync);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
        forget_prepared(c);
    }
    if (err->code == BS_ERR_OK)
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
    return -1;
}

static void later_discard(pg_conn_t *c)
{
    free(c->later.text);
    free(c->later.vals);
    free(c->later.buf);
    memset(&c->later, 0, sizeof(c->later));
}

/* The pending later statement as the first of a pipeline (qs[0]); 1 if there is one. */
static int later_q(pg_conn_t *c, pipe_q_t *q)
{
    if (c->later.text == NULL)
        return 0;
    *q = (pipe_q_t){.text = c->later.text, .nparams = c->later.nparams, .vals = c->later.vals};
    return 1;
}

/* Hands the later statement's result to its callback (and forgets the statement).
 * Returns 0, or -1 when it failed or its callback refused it (the job's err says
 * why): the transaction cannot commit. */
static int later_finish(pg_conn_t *c, PGresult *r)
{
    store_later_fn done = c->later.done;
    void *arg = c->later.arg;
    bs_error_t *err = c->later.err;
    later_discard(c);
    if (r == NULL || result_failed(r)) {
        if (err->code == BS_ERR_OK)
            map_error(c, r, err);
        return -1;
    }
    pg_stmt_t st = {.base.ops = &pg_ops,
                    .conn = c,
                    .res = r,
                    .row = -1,
                    .nrows = PQntuples(r),
                    .ncols = PQnfields(r),
                    .started_ns = util_mono_ns()};
    return done(arg, &st.base, err);
}

/* The writer's owed statements with the next one, in one round trip: the
 * transaction's BEGIN and time-out when nothing of it was sent yet (ADR 0018), the
 * pending later statement (the previous job's outbox row) and "RELEASE SAVEPOINT
 * job; SAVEPOINT job" between two jobs (ADR 0017). Returns the statement's result, or
 * NULL with err; when a statement ahead of it was refused, savepoint_failed is set
 * (the transaction is aborted and the batch fails). A pipeline that opened the
 * transaction and carried nothing else of it, lost with its connection, leaves
 * begin_due set: nothing of the transaction reached a server, and run() may send
 * it again on a new connection. */
static PGresult *send_savepoint(pg_conn_t *c, const char *text, const char *name, int nparams,
                                const char *const *vals, bs_error_t *err)
{
    pipe_q_t qs[8];
    PGresult *res[8];
    int n = 0, began = c->begin_due;
    if (began) {
        qs[n++] = (pipe_q_t){.text = "BEGIN"};
        qs[n++] = (pipe_q_t){.text = c->begin_timeout};
        if (c->begin_savepoint)
            qs[n++] = (pipe_q_t){.text = "SAVEPOINT job"};
    }
    int later_at = c->later.text != NULL ? n : -1;
    n += later_q(c, &qs[n]);
    int alone = later_at < 0 && !c->savepoint_due; /* the BEGIN and this statement only */
    if (c->savepoint_due) {
        qs[n++] = (pipe_q_t){.text = "RELEASE SAVEPOINT job"};
        qs[n++] = (pipe_q_t){.text = "SAVEPOINT job"};
    }
    int ahead = n;
    qs[n++] = (pipe_q_t){.text = text, .name = name, .nparams = nparams, .vals = vals};
    c->savepoint_due = 0;
    c->begin_due = 0;
    if (pipeline(c, qs, n, res, err) != 0) {
        later_discard(c);
        if (began && alone && conn_lost(c) && !c->timed_out)
            c->begin_due = 1; /* run() may begin again once on a new connection */
        else
            c->savepoint_failed = 1;
        return NULL;
    }
    int failed = 0;
    for (int q = 0; q < ahead; q++) {
        if (q == later_at) {
            if (later_finish(c, res[q]) != 0)
                failed = 1;
        } else if (!failed && result_failed(res[q])) {
            failed = 1;
            map_error(c, res[q], err);
        }
        PQclear(res[q]);
    }
    if (failed) {
        c->savepoint_failed = 1;
        if (err->code == BS_ERR_OK)
            bs_error_set(err, BS_ERR_UNAVAILABLE,
                         "The database rolled back the transaction this write was part of; please retry.");
        PQclear(res[ahead]);
        return NULL;
    }
    return res[ahead];
}

/* Sends the writer's owed BEGIN on its own (before a script or a lone later
 * statement, which cannot carry it). Returns 0 or -1 (err). */
static int simple(pg_conn_t *c, const char *sql, bs_error_t *err);

static int begin_now(pg_conn_t *c, bs_error_t *err)
{
    char sql[112];
    snprintf(sql, sizeof(sql), "BEGIN; %s%s", c->begin_timeout, c->begin_savepoint ? "; SAVEPOINT job" : "");
    c->begin_due = 0;
    return simple(c, sql, err);
}

/* The values as the text libpq sends: *vals (owned) points into *buf (owned).
 * Returns 0, or -1 with err (both freed). */
static int make_params(const bs_value_t *params, size_t nparams, const char ***valsp, char **bufp,
                       bs_error_t *err)
{
    size_t space = 0;
    for (size_t i = 0; i < nparams; i++)
        space += params[i].type == BS_VAL_TEXT ? params[i].n + 1 : 32;
    const char **vals = calloc(nparams + 1, sizeof(*vals));
    char *buf = malloc(space + 1);
    *valsp = NULL;
    *bufp = NULL;
    if (vals == NULL || buf == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        goto fail;
    }
    char *w = buf;
    for (size_t i = 0; i < nparams; i++) {
        const bs_value_t *v = &params[i];
        switch (v->type) {
        case BS_VAL_INT:
            vals[i] = w;
            w += snprintf(w, 32, "%lld", (long long)v->i) + 1;
            break;
        case BS_VAL_DOUBLE:
            vals[i] = w;
            w += snprintf(w, 32, "%.17g", v->d) + 1;
            break;
        case BS_VAL_TEXT:
            if (v->n > 0 && memchr(v->s, '\0', v->n) != NULL) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "Text values cannot contain NUL characters.");
                goto fail;
            }
            vals[i] = w;
            if (v->n > 0)
                memcpy(w, v->s, v->n);
            w[v->n] = '\0';
            w += v->n + 1;
            break;
        default:
            vals[i] = NULL;
        }
    }
    *valsp = vals;
    *bufp = buf;
    return 0;
fail:
    free(vals);
    free(buf);
    return -1;
}

/*
 * A pool reader's statement as one simple-protocol Query, its parameters written in
 * as quoted literals, when no prepared statement can be used (PgBouncer's transaction
 * mode). An unnamed extended-protocol statement is five messages (Parse, Bind,
 * Describe, Execute, Sync) that PostgreSQL and PgBouncer each handle one by one; one
 * Query message costs PostgreSQL about a tenth less CPU for the same primary-key
 * read (docs/performance.md, "The cache-off view on PostgreSQL"), and the plan is the
 * same: an unnamed statement is planned for its values every time anyway.
 *
 * The meaning does not change: make_params sends every value as text of no declared
 * type, which PostgreSQL resolves exactly as it resolves a quoted literal (both are
 * "unknown" until their context types them), and NULL stays NULL. Values are escaped
 * by libpq for the connection's encoding (UTF8, set at connect) and its
 * standard_conforming_strings. Anything this scanner is not sure of gives NULL and the
 * statement goes out as before: a comment, a backslash or dollar quote in the text,
 * a second statement, a placeholder with no value, a value libpq will not escape
 * (invalid UTF-8: the server's own error then speaks). Returns the text (owned).
 */
static int ident_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '$' || (unsigned char)ch >= 0x80;
}

static char *inline_params(pg_conn_t *c, const char *sql, const char *const *vals, size_t nparams)
{
    size_t n = strlen(sql), space = n + 1;
    for (size_t i = 0; i < nparams; i++)
        space += vals[i] != NULL ? 2 * strlen(vals[i]) + 2 : 4;
    /* A value may be written more than once ($1 twice): counted as we go. */
    char *out = malloc(space);
    if (out == NULL)
        return NULL;
    size_t j = 0;
    char quote = 0;
    int ended = 0; /* a ';' outside quotes was seen: only blanks may follow */
    for (size_t i = 0; i < n; i++) {
        char ch = sql[i];
        if (quote) {
            if (ch == '\\')
                goto refuse; /* E'...' or standard_conforming_strings off: not guessed */
            if (ch == quote)
                quote = 0;
        } else if (ended && ch != ' ' && ch != '\n' && ch != '\t' && ch != '\r') {
            goto refuse; /* several statements: the extended protocol refuses them */
        } else if (ch == '\'' || ch == '"') {
            quote = ch;
        } else if (ch == ';') {
            ended = 1;
        } else if ((ch == '-' && sql[i + 1] == '-') || (ch == '/' && sql[i + 1] == '*')) {
            goto refuse;
        } else if (ch == '$') {
            size_t k = i + 1, num = 0;
            while (k < n && sql[k] >= '0' && sql[k] <= '9' && num <= nparams)
                num = num * 10 + (size_t)(sql[k++] - '0');
            if (k == i + 1 || num == 0 || num > nparams)
                goto refuse; /* a dollar quote, or no such value */
            if ((i > 0 && ident_char(sql[i - 1])) || (k < n && ident_char(sql[k])))
                goto refuse; /* part of a word (a$1 is a name), not a placeholder */
            const char *v = vals[num - 1];
            size_t need = v != NULL ? 2 * strlen(v) + 2 : 4;
            if (j + need + (n - k) + 1 > space) {
                space = j + need + (n - k) + 1 + space / 2;
                char *grown = realloc(out, space);
                if (grown == NULL)
                    goto refuse;
                out = grown;
            }
            if (v == NULL) {
                memcpy(out + j, "NULL", 4);
                j += 4;
            } else {
                int bad = 0;
                out[j++] = '\'';
                j += PQescapeStringConn(c->pg, out + j, v, strlen(v), &bad);
                if (bad)
                    goto refuse;
                out[j++] = '\'';
            }
            i = k - 1;
            continue;
        }
        if (j + 1 >= space)
            goto refuse; /* cannot happen: counted above */
        out[j++] = ch;
    }
    if (quote)
        goto refuse;
    out[j] = '\0';
    return out;
refuse:
    free(out);
    return NULL;
}

/* Runs sql with params as text values; returns the result (owned) or NULL. */
/* --- pipelined jobs (ADR 0021) ---------------------------------------------------- */

/* The batch cannot go on: every job of it fails with why (the first reason kept). */
static void spec_break(spec_t *sp, const bs_error_t *why)
{
    if (sp->broken)
        return;
    sp->broken = 1;
    sp->err = *why;
    sp->err.fields = NULL; /* they belong to an arena */
    if (sp->err.code == BS_ERR_OK)
        bs_error_set(&sp->err, BS_ERR_UNAVAILABLE,
                     "The database rolled back the transaction this write was part of; please retry.");
}

/* ROLLBACK TO job j's savepoint: its work and everything sent after it goes, and the
 * jobs from j on still waiting for a result are to be sent again. Returns 0, or -1
 * with the run broken. */
static int spec_undo(pg_conn_t *c, spec_t *sp, int j)
{
    bs_error_t e;
    bs_error_init(&e);
    if (simple(c, sp->undo[j], &e) != 0) {
        spec_break(sp, &e);
        return -1;
    }
    for (int m = j; m < sp->n; m++) {
        spec_job_t *sj = &sp->jobs[m];
        if (!sj->waiting)
            continue;
        PQclear(sj->res);
        sj->res = NULL;
        sj->resend = 1;
        sj->sent = 0;
    }
    return 0;
}

/* Undoes, on the server, the first statements of the jobs after the running one (k)
 * that were done ahead of it: k is about to send another statement, which must see
 * the jobs before it only, as if they had run one after another. They are sent
 * again once k has finished. */
static void spec_undo_after(pg_conn_t *c, spec_t *sp, int k)
{
    sp->jobs[k].second = 1;
    int j = k + 1;
    while (j < sp->n && !(sp->jobs[j].waiting && !sp->jobs[j].resend))
        j++;
    if (j == sp->n || sp->broken)
        return;
    if (spec_undo(c, sp, j) == 0)
        sp->sequential = 1; /* jobs with further statements come in runs: stop guessing */
}

/* In the running job's coroutine, at its first statement: holds it and suspends the
 * job; the writer sends it with the others' and resumes the job with its result (or
 * NULL with err, when the batch broke). text and vals stay run()'s. */
static PGresult *spec_defer(pg_conn_t *c, const char *text, int nparams, const char *const *vals,
                            bs_error_t *err)
{
    spec_t *sp = c->spec;
    spec_job_t *sj = &sp->jobs[sp->cur];
    sj->text = text;
    sj->nparams = nparams;
    sj->vals = vals;
    sj->waiting = 1;
    sj->resend = 1;
    coro_yield(sj->co);
    PGresult *r = sj->res;
    sj->res = NULL;
    sj->waiting = 0;
    if (r == NULL) {
        *err = sj->gave_up ? sj->why : sp->err;
        return NULL;
    }
    if (c->prepare && sj->name == NULL && !result_failed(r) && sp->nprepare < SPEC_PREPARE) {
        int known = 0;
        for (int i = 0; i < sp->nprepare; i++)
            known |= strcmp(sp->prepare[i], text) == 0;
        if (!known && (sp->prepare[sp->nprepare] = strdup(text)) != NULL)
            sp->nprepare++;
    }
    return r;
}

/* A result that says the session ended (an error of severity FATAL or PANIC, or
 * libpq's own for a lost connection, which has no SQLSTATE): not the statement's
 * answer, which a read may then ask for again. */
static int session_ended(const PGresult *r)
{
    if (PQresultStatus(r) != PGRES_FATAL_ERROR)
        return 0;
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    return PQresultErrorField(r, PG_DIAG_SQLSTATE) == NULL ||
           (sev != NULL && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0));
}

/* A read pipeline lost its connection after `got` results (BEGIN first): the reads
 * answered keep their results; the one it was waiting for, when past its deadline,
 * fails with that (as alone; not run again); the others are sent again on a new
 * connection, at most twice without progress, then each sends its own. */
static void spec_reads_lost(pg_conn_t *c, spec_t *sp, const int *idx, int m, PGresult **res, int got,
                            const bs_error_t *why)
{
    int progress = 0;
    if (got > 0)
        PQclear(res[0]); /* the BEGIN */
    for (int i = 0; i < m; i++) {
        spec_job_t *sj = &sp->jobs[idx[i]];
        int qi = 1 + i;
        if (qi < got && PQresultStatus(res[qi]) != PGRES_PIPELINE_ABORTED && !session_ended(res[qi])) {
            PQclear(sj->res);
            sj->res = res[qi];
            sj->resend = 0;
            sj->failed = result_failed(res[qi]);
            progress = 1;
            continue;
        }
        if (qi < got)
            PQclear(res[qi]);
        if (qi == got && c->timed_out) {
            sj->gave_up = 1;
            sj->why = *why;
            sj->why.fields = NULL;
            sj->resend = 0;
            progress = 1;
        }
    }
    for (int q = 1 + m; q < got; q++)
        PQclear(res[q]); /* the COMMIT's place */
    if (!progress && ++sp->failures >= 2)
        spec_break(sp, why);
}

/* Sends, in one pipeline, what the transaction owes (its BEGIN, the savepoint after
 * the job before the run) and, for every job from `from` on whose statement is to be
 * sent, its savepoint and its statement; hands each job its result. A statement after
 * a failed one is not done (PostgreSQL skips to the Sync): it stays to be sent. */
static void spec_send(pg_conn_t *c, spec_t *sp, int from)
{
    pipe_q_t qs[6 + 2 * SPEC_MAX];
    PGresult *res[6 + 2 * SPEC_MAX];
    int idx[SPEC_MAX];
    if (sp->broken)
        return;
    int n = 0, m = 0, began = c->begin_due, owed_savepoint = c->savepoint_due;
    if (sp->reads) {
        began = 1;
        owed_savepoint = 0;
        qs[n++] = (pipe_q_t){.text = "BEGIN"};
    } else if (began) {
        qs[n++] = (pipe_q_t){.text = "BEGIN"};
        qs[n++] = (pipe_q_t){.text = c->begin_timeout};
        if (c->begin_savepoint)
            qs[n++] = (pipe_q_t){.text = "SAVEPOINT job"};
    }
    if (owed_savepoint) {
        qs[n++] = (pipe_q_t){.text = "RELEASE SAVEPOINT job"};
        qs[n++] = (pipe_q_t){.text = "SAVEPOINT job"};
    }
    int front = n;
    for (int j = from; j < sp->n && !(sp->sequential && m > 0); j++) {
        spec_job_t *sj = &sp->jobs[j];
        if (!sj->waiting || !sj->resend)
            continue;
        idx[m++] = j;
        sj->name = NULL;
        if (c->prepare) {
            /* By name only when prepared before on this session: a Parse that failed
             * inside the transaction would abort it under every job of the pipeline. */
            prepared_t *p = &c->prepared[hash_sql(sj->text) % PREPARED_SLOTS];
            if (p->sql != NULL && strcmp(p->sql, sj->text) == 0)
                sj->name = p->name;
        }
        if (!sp->reads)
            qs[n++] = (pipe_q_t){.text = sp->set[j]};
        qs[n++] = (pipe_q_t){.text = sj->text, .name = sj->name, .nparams = sj->nparams, .vals = sj->vals};
    }
    if (m == 0)
        return; /* what is owed goes with the next statement */
    if (sp->reads && ensure_conn(c, &sp->err) != 0) {
        sp->broken = 1; /* each read then sends its own statement (run) */
        return;
    }
    int per = sp->reads ? 1 : 2; /* pipeline entries per job */
    if (sp->reads)
        qs[n++] = (pipe_q_t){.text = "COMMIT"};
    else
        c->begin_due = c->savepoint_due = 0;
    sp->sent_any = 1;
    bs_error_t e;
    bs_error_init(&e);
    int got = 0;
    if (pipeline_got(c, qs, n, res, &e, sp->reads ? &got : NULL) != 0) {
        if (sp->reads) {
            spec_reads_lost(c, sp, idx, m, res, got, &e);
            return;
        }
        /* The transaction's first pipeline met a connection found dead: nothing of the
         * transaction reached a server, so it is sent once more on a new one. */
        if (began && !sp->retried && !c->timed_out) {
            bs_error_t again;
            bs_error_init(&again);
            sp->retried = 1;
            if (ensure_conn(c, &again) == 0) {
                c->begin_due = !sp->reads;
                spec_send(c, sp, from);
                return;
            }
        }
        spec_break(sp, &e);
        return;
    }
    int failed = 0;
    for (int q = 0; q < front; q++) {
        if (!failed && result_failed(res[q])) {
            failed = 1;
            map_error(c, res[q], &e);
        }
        PQclear(res[q]);
    }
    for (int i = 0; i < m; i++) {
        spec_job_t *sj = &sp->jobs[idx[i]];
        PGresult *sv = per == 2 ? res[front + 2 * i] : NULL, *st = res[front + per * i + per - 1];
        if (failed || (sv != NULL && result_failed(sv)) || PQresultStatus(st) == PGRES_PIPELINE_ABORTED) {
            PQclear(sv);
            PQclear(st);
            continue; /* not done: still to be sent */
        }
        PQclear(sv);
        sj->sent = 1;
        sj->resend = 0;
        sj->failed = result_failed(st);
        PQclear(sj->res);
        sj->res = st;
    }
    if (sp->reads) {
        PQclear(res[front + per * m]); /* the COMMIT, skipped after a failed read */
        if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
            /* A read failed: the rest, COMMIT included, was skipped and the
             * transaction stands aborted; it ends here, or the connection goes. */
            bs_error_t ignored;
            bs_error_init(&ignored);
            if (simple(c, "ROLLBACK", &ignored) != 0 || PQtransactionStatus(c->pg) != PQTRANS_IDLE)
                close_conn(c);
        }
    }
    if (failed)
        spec_break(sp, &e);
}

/* Sends one statement of run() and waits for its result: by name when c prepares,
 * with what the writer owes (owed: send_savepoint), else alone (a pool reader as one
 * Query where it can, inline_params). NULL with err on failure. */
static PGresult *send_now(pg_conn_t *c, const char *text, int nparams, const char *const *vals, int owed,
                          bs_error_t *err)
{
    PGresult *res = NULL;
    if (c->prepare) {
        const char *name = prepared_name(c, text, err);
        if (name != NULL && owed)
            res = send_savepoint(c, text, name, nparams, vals, err);
        else if (name != NULL && PQsendQueryPrepared(c->pg, name, nparams, vals, NULL, NULL, 0))
            res = await_result(c, err);
    } else if (owed) {
        res = send_savepoint(c, text, NULL, nparams, vals, err);
    } else {
        char *q = c->is_reader ? inline_params(c, text, vals, (size_t)nparams) : NULL;
        if (q != NULL ? PQsendQuery(c->pg, q)
                      : PQsendQueryParams(c->pg, text, nparams, NULL, vals, NULL, NULL, 0))
            res = await_result(c, err);
        free(q);
    }
    return res;
}

static PGresult *run(pg_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams, bs_error_t *err)
{
    assert(!c->bound || pthread_equal(c->thread, pthread_self()));
    spec_t *sp = c->spec != NULL && c->spec->cur >= 0 ? c->spec : NULL;
    if (sp != NULL && !sp->deferring && !sp->reads)
        spec_undo_after(c, sp, sp->cur); /* a job's further statement */
    if (sp != NULL && !sp->reads && sp->sent_any && conn_lost(c)) {
        bs_error_t e;
        bs_error_init(&e);
        bs_error_set(&e, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
        spec_break(sp, &e);
    }
    if (sp != NULL && sp->broken && !sp->reads) {
        *err = sp->err; /* never on a new connection: the transaction is gone */
        return NULL;
    }
    if (ensure_conn(c, err) != 0)
        return NULL;
    char *text = pg_sql(sql);
    const char **vals = NULL;
    char *buf = NULL;
    PGresult *res = NULL;
    if (text == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        goto out;
    }
    if (make_params(params, nparams, &vals, &buf, err) != 0)
        goto out;
    /* A reader's statement is a read in a transaction of its own: when the connection
     * turns out to be gone (a restarted server or PgBouncer), it is safe to run it
     * again once on a new one. The writer's statements belong to a transaction that
     * died with the connection, so they fail. */
    if (c->budget_ns != 0 && util_mono_ns() >= c->budget_ns) {
        bs_error_set(err, BS_ERR_TIMEOUT, "The statement ran past its time budget.");
        goto out;
    }
    for (int attempt = 0;; attempt++) {
        int owed = c->savepoint_due || c->later.text != NULL || c->begin_due, began = c->begin_due;
        int deferred = sp != NULL && sp->deferring && !(sp->reads && c->budget_ns != 0);
        if (deferred) {
            res = spec_defer(c, text, (int)nparams, vals, err);
            began = 0;
            if (res == NULL && sp->reads && !sp->jobs[sp->cur].gave_up) {
                /* The reads' pipeline broke: this read sends its own statement. */
                bs_error_init(err);
                deferred = 0;
                if (ensure_conn(c, err) != 0)
                    break;
            }
        }
        if (!deferred)
            res = send_now(c, text, (int)nparams, vals, owed, err);
        ExecStatusType st = PQresultStatus(res);
        const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        int cancelled = state != NULL && strcmp(state, "57014") == 0; /* query_canceled */
        int stale = c->cancel_stale;
        c->cancel_stale = c->budget_cancelled && !cancelled;
        if (res != NULL && (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)) {
            if (!c->is_reader && !c->wrote)
                c->wrote = changes_data(text, res);
            break;
        }
        if (cancelled && c->budget_cancelled) {
            bs_error_set(err, BS_ERR_TIMEOUT, "The statement ran past its time budget.");
            PQclear(res);
            res = NULL;
            break;
        }
        if (cancelled && stale && c->is_reader && attempt == 0) {
            /* The cancel meant for the budgeted statement before this one. */
            PQclear(res);
            res = NULL;
            bs_error_init(err);
            continue;
        }
        /* The writer's first statement of a transaction, with the BEGIN, met a
         * connection found dead (a restarted server or PgBouncer): nothing of the
         * transaction reached a server, so it begins again once on a new one. */
        int begin_again = !c->is_reader && began && c->begin_due && conn_lost(c) && !c->timed_out;
        if ((c->is_reader || begin_again) && attempt == 0 && conn_lost(c) && !c->timed_out) {
            PQclear(res);
            res = NULL;
            bs_error_init(err);
            if (ensure_conn(c, err) == 0)
                continue;
            goto out;
        }
        if (c->prepare && stale_plan(res)) {
            /* The table changed under a prepared SELECT * (a schema change, maybe by
             * another instance): prepare the text again. A reader's statement runs
             * alone, so it is retried once; the writer's aborted its transaction. */
            prepared_t *slot = &c->prepared[hash_sql(text) % PREPARED_SLOTS];
            if (slot->sql != NULL && strcmp(slot->sql, text) == 0) {
                free(slot->sql);
                slot->sql = NULL; /* the old name stays unused on the server: names are never reused */
            }
            if (c->is_reader && attempt == 0) {
                PQclear(res);
                res = NULL;
                bs_error_init(err);
                continue;
            }
        }
        if (res != NULL || err->code == BS_ERR_OK)
            map_error_sql(c, res, text, err);
        PQclear(res);
        res = NULL;
        break;
    }
out:
    free(text);
    free(vals);
    free(buf);
    return res;
}

static store_stmt_t *op_query(store_conn_t *base, const char *sql, const bs_value_t *params, size_t nparams,
                              bs_error_t *err)
{
    pg_conn_t *c = (pg_conn_t *)base;
    uint64_t t0 = util_mono_ns();
    pg_stmt_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    st->res = run(c, sql, params, nparams, err);
    if (st->res == NULL) {
        free(st);
        return NULL;
    }
    st->base.ops = &pg_ops;
    st->conn = c;
    st->row = -1;
    st->nrows = PQntuples(st->res);
    st->ncols = PQnfields(st->res);
    st->started_ns = t0;
    return &st->base;
}

static int op_step(store_stmt_t *base, bs_error_t *err)
{
    (void)err;
    pg_stmt_t *st = (pg_stmt_t *)base;
    if (st->row + 1 >= st->nrows) {
        st->row = st->nrows;
        return 0;
    }
    st->row++;
    return 1;
}

static int op_ncols(store_stmt_t *base)
{
    return ((pg_stmt_t *)base)->ncols;
}

static const char *op_col_name(store_stmt_t *base, int i)
{
    return PQfname(((pg_stmt_t *)base)->res, i);
}

static bs_value_t op_col(store_stmt_t *base, int i)
{
    pg_stmt_t *st = (pg_stmt_t *)base;
    if (st->row < 0 || st->row >= st->nrows || PQgetisnull(st->res, st->row, i))
        return bs_val_null();
    const char *v = PQgetvalue(st->res, st->row, i);
    switch (PQftype(st->res, i)) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
        return bs_val_int(strtoll(v, NULL, 10));
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC:
        return bs_val_double(strtod(v, NULL));
    case OID_BOOL:
        return bs_val_int(v[0] == 't');
    default:
        return bs_val_text(v, (size_t)PQgetlength(st->res, st->row, i));
    }
}

static void op_done(store_stmt_t *base)
{
    pg_stmt_t *st = (pg_stmt_t *)base;
    if (st->conn->is_reader)
        metrics_hist_observe(&metrics_g.store_query, util_mono_ns() - st->started_ns);
    PQclear(st->res);
    free(st);
}

static int64_t op_exec(store_conn_t *base, const char *sql, const bs_value_t *params, size_t nparams,
                       bs_error_t *err)
{
    PGresult *res = run((pg_conn_t *)base, sql, params, nparams, err);
    if (res == NULL)
        return -1;
    const char *n = PQcmdTuples(res);
    int64_t changed = n != NULL && n[0] ? strtoll(n, NULL, 10) : 0;
    PQclear(res);
    return changed;
}

/* Sends the pending later statement on its own (one round trip) and hands its result
 * over: before a COMMIT, whose outcome must not precede the statement's check, and
 * before a script. Returns 0, or -1 (the transaction must not commit). */
static int later_flush(pg_conn_t *c, bs_error_t *err)
{
    if (c->later.text == NULL)
        return 0;
    pipe_q_t q;
    PGresult *r;
    bs_error_t *jerr = c->later.err;
    if (c->begin_due && begin_now(c, err) != 0) {
        later_discard(c);
        return -1;
    }
    if (!later_q(c, &q))
        return 0;
    if (pipeline(c, &q, 1, &r, err) != 0) {
        later_discard(c);
        return -1;
    }
    int rc = later_finish(c, r);
    PQclear(r);
    if (rc != 0 && err != jerr && err->code == BS_ERR_OK)
        bs_error_set(err, BS_ERR_UNAVAILABLE,
                     "The database rolled back the transaction this write was part of; please retry.");
    return rc;
}

static int op_exec_later(store_conn_t *base, const char *sql, const bs_value_t *params, size_t nparams,
                         store_later_fn done, void *arg, bs_error_t *err)
{
    pg_conn_t *c = (pg_conn_t *)base;
    if (c != &c->owner->writer || c->later.text != NULL || conn_lost(c) || c->spec != NULL ||
        (PQtransactionStatus(c->pg) != PQTRANS_INTRANS && !c->begin_due)) {
        store_stmt_t *st = op_query(base, sql, params, nparams, err);
        if (st == NULL)
            return -1;
        int rc = done(arg, st, err);
        op_done(st);
        return rc;
    }
    char *text = pg_sql(sql);
    if (text == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    if (make_params(params, nparams, &c->later.vals, &c->later.buf, err) != 0) {
        free(text);
        return -1;
    }
    c->later.text = text;
    c->later.nparams = (int)nparams;
    c->later.done = done;
    c->later.arg = arg;
    c->later.err = err;
    c->wrote = 1;
    return 0;
}

static int op_exec_script(store_conn_t *base, const char *sql, bs_error_t *err)
{
    if (((pg_conn_t *)base)->spec != NULL) {
        /* Not in a pipelined job (ADR 0021): it would run ahead of the jobs before it. */
        bs_error_set(err, BS_ERR_INTERNAL, "A script cannot run in a pipelined job.");
        return -1;
    }
    pg_conn_t *c = (pg_conn_t *)base;
    if (sql == NULL || sql[strspn(sql, " \t\n;")] == '\0')
        return 0; /* nothing to run (as sqlite3_exec with an empty script) */
    if (ensure_conn(c, err) != 0)
        return -1;
    c->wrote = 1; /* a script is DDL or a change */
    c->ran_script = 1;
    if (later_flush(c, err) != 0 || (c->begin_due && begin_now(c, err) != 0)) {
        c->savepoint_failed = 1;
        return -1;
    }
    if (c->savepoint_due) {
        /* Simple-query scripts cannot join a pipeline: the owed savepoint on its own. */
        c->savepoint_due = 0;
        if (simple(c, "RELEASE SAVEPOINT job; SAVEPOINT job", err) != 0) {
            c->savepoint_failed = 1;
            return -1;
        }
    }
    PGresult *res;
    if (c->is_reader) {
        res = exec_simple(c, sql, err);
    } else {
        /* A schema change on a large table (CREATE INDEX, the search index) takes longer
         * than a write's statement may: the script runs under the DDL deadline, set and
         * given back with SET LOCAL in the same round trip (outside a transaction SET
         * LOCAL only warns). Its wait for a table's lock stays bounded by the write's
         * deadline: while an ALTER TABLE waits for a lock, every later read of that
         * table queues behind it. The script's end goes on a line of its own, so that a
         * closing line comment cannot swallow what follows. */
        static const char wrap[] = "SET LOCAL statement_timeout = %d; SET LOCAL lock_timeout = %d;\n%s\n;\n"
                                   "SET LOCAL statement_timeout = %d; SET LOCAL lock_timeout = DEFAULT";
        int write_ms = c->owner->cfg.statement_timeout_ms;
        size_t size = strlen(sql) + sizeof(wrap) + 3 * 12; /* three ints in place of their %d */
        char *wrapped = malloc(size);
        if (wrapped == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        snprintf(wrapped, size, wrap, c->owner->cfg.ddl_timeout_ms, write_ms, sql, write_ms);
        c->in_script = 1;
        res = exec_simple(c, wrapped, err);
        c->in_script = 0;
        free(wrapped);
    }
    if (res == NULL)
        return -1;
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state != NULL && strncmp(state, "42", 2) == 0)
            bs_error_set(err, BS_ERR_BAD_REQUEST, "The database rejected the change: %s.",
                         PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
        else
            map_error(c, res, err);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static void op_set_budget(store_conn_t *base, int budget_ms)
{
    pg_conn_t *c = (pg_conn_t *)base;
    c->budget_cancelled = 0;
    c->budget_ns = budget_ms > 0 ? util_mono_ns() + (uint64_t)budget_ms * 1000000u : 0;
}

/* Each query is its own snapshot here (autocommit reads): nothing to release. */
static void op_reader_release(store_conn_t *base)
{
    (void)base;
}

static void op_clear_cache(store_conn_t *base)
{
    pg_conn_t *c = (pg_conn_t *)base;
    if (c->prepare && !conn_lost(c)) {
        bs_error_t ignored;
        bs_error_init(&ignored);
        PQclear(exec_simple(c, "DEALLOCATE ALL", &ignored));
    }
    forget_prepared(c);
}

/* --- the writer -------------------------------------------------------------------- */

static int simple(pg_conn_t *c, const char *sql, bs_error_t *err)
{
    PGresult *r = exec_simple(c, sql, err);
    if (r == NULL)
        return -1;
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        map_error(c, r, err);
    PQclear(r);
    return ok ? 0 : -1;
}

/* Commits the open transaction (sql ends with COMMIT). A transaction that an error
 * had already aborted answers COMMIT with "ROLLBACK": that is a failure too. */
static int commit(pg_conn_t *c, const char *sql, bs_error_t *err)
{
    if (later_flush(c, err) != 0)
        return -1;
    if (c->begin_due) {
        c->begin_due = 0; /* nothing of the transaction was sent: nothing to commit */
        return 0;
    }
    PGresult *r = exec_simple(c, sql, err);
    if (r == NULL)
        return -1;
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
    if (!ok) {
        if (PQresultStatus(r) == PGRES_COMMAND_OK)
            bs_error_set(err, BS_ERR_INTERNAL, "The database rolled the write back.");
        else
            map_error(c, r, err);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* Where the last commit stands in the WAL, for read-your-writes on replicas; 0 when
 * unknown (then reads of that caller wait for no replica: they go to the primary). */
static uint64_t wal_lsn_now(pg_store_t *s)
{
    if (s->replicas == NULL)
        return 0;
    bs_error_t ignored;
    bs_error_init(&ignored);
    uint64_t lsn = 0;
    PGresult *r = exec_simple(&s->writer, "SELECT pg_current_wal_lsn()", &ignored);
    if (r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        lsn = pg_lsn_parse(PQgetvalue(r, 0, 0));
    PQclear(r);
    return lsn;
}

/* The end of a write transaction: NOTIFY (other instances drop their caches and read
 * the outbox) only when it may have changed data; a NOTIFY assigns a transaction id,
 * so an empty transaction with one would flush the WAL at its COMMIT, and wake every
 * instance, for nothing (the job runner's claim polls when no job is due). */
static const char *commit_sql(const pg_store_t *s)
{
    return s->writer.wrote ? s->notify_commit : "COMMIT";
}

static void op_clear_cache(store_conn_t *base);

/* Before a job on c: when the collections' definitions changed since c's prepared
 * statements were made (a snapshot published after this instance's DDL or another
 * instance's), they are dropped, so that no statement prepared over the old columns
 * runs (one DEALLOCATE ALL per connection per change). */
static void drop_stale_prepared(pg_conn_t *c)
{
    if (!c->prepare)
        return;
    uint64_t gen = store_definitions_gen();
    if (c->defs_gen == gen)
        return;
    op_clear_cache(&c->base);
    c->defs_gen = gen;
}

/* After the writer's transaction ended: if it ran DDL, its prepared statements may
 * name columns that changed; they are dropped before the next job prepares any. */
static void after_transaction(pg_conn_t *c)
{
    if (c->ran_script && c->prepare)
        op_clear_cache(&c->base);
    c->ran_script = 0;
}

/* Runs one job in its own transaction; returns its status. */
static int run_job(pg_store_t *s, store_job_t *j)
{
    pg_conn_t *c = &s->writer;
    bs_error_init(&j->err);
    j->status = -1;
    if (ensure_conn(c, &j->err) != 0)
        goto out;
    drop_stale_prepared(c);
    /* BEGIN and the time-out go out with the job's first statement (ADR 0018); SET
     * LOCAL ends with the transaction, so no setting outlives it on a pooled
     * connection. */
    snprintf(c->begin_timeout, sizeof(c->begin_timeout), "SET LOCAL statement_timeout = %d",
             s->cfg.statement_timeout_ms > 0 ? s->cfg.statement_timeout_ms : 0);
    c->begin_due = 1;
    c->begin_savepoint = 0;
    c->wrote = 0;
    j->status = j->run(j, &c->base);
    if (j->unshared)
        c->wrote = 0;
    /* The job's realtime events, last, so that the outbox counter's row lock (which
     * orders the committers of every instance) is held only until the COMMIT. */
    if (j->status == 0 && store_outbox_append_jobs(&s->base, &c->base, j, &j->err) != 0)
        j->status = -1;
    if (j->status != 0) {
        if (j->err.code == BS_ERR_OK)
            bs_error_set(&j->err, BS_ERR_INTERNAL, NULL);
        bs_error_t ignored;
        bs_error_init(&ignored);
        if (!conn_lost(c) && !c->begin_due)
            simple(c, "ROLLBACK", &ignored);
        j->status = -1;
        goto out;
    }
    if (commit(c, commit_sql(s), &j->err) != 0) {
        /* Lost during COMMIT: the outcome is unknown to us, and we say it failed.
         * PostgreSQL either committed it or not; a retry of a create gets a new id. */
        j->status = -1;
        goto out;
    }
    /* Where the commit stands in the WAL (at or past it): the caller's next reads
     * must come from a replica that has replayed that far. */
    j->commit_lsn = wal_lsn_now(s);
out:
    c->begin_due = 0;
    later_discard(c);
    after_transaction(c);
    return j->status;
}

/* Listener thread: reads the notifications that arrived on the listener connection
 * (without waiting) and reports other instances' commits and schema changes;
 * (re)connects and LISTENs when needed, at most once per backoff period. */
static void listen_round(pg_store_t *s)
{
    store_t *base = &s->base;
    pg_conn_t *c = &s->listener;
    bs_error_t err;
    bs_error_init(&err);
    if (conn_lost(c))
        s->listening = 0;
    if (!s->listening) {
        if (ensure_conn(c, &err) != 0)
            return;
        if (simple(c, "LISTEN basalt_changes; LISTEN basalt_schema", &err) != 0)
            return;
        s->listening = 1;
        /* Changes made while no one listened are unknown: treat them as made (the
         * cached answers go before the writer reads the events, below too). */
        if (s->cfg.on_external_change != NULL)
            s->cfg.on_external_change();
        store_outbox_external(base);
        if (s->cfg.on_schema_change != NULL)
            s->cfg.on_schema_change();
    }
    if (!PQconsumeInput(c->pg)) {
        s->listening = 0;
        return;
    }
    int external = 0, schema = 0;
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL) {
        if (strcmp(n->relname, "basalt_schema") == 0)
            schema = 1; /* this instance's own too: harmless, its next request checks */
        else if (strcmp(n->extra, s->instance) != 0)
            external = 1;
        PQfreemem(n);
    }
    /* The schema first: a request that runs after hearing of the commit reloads. */
    if (schema && s->cfg.on_schema_change != NULL)
        s->cfg.on_schema_change();
    if (external && s->cfg.on_external_change != NULL)
        s->cfg.on_external_change();
    if (external)
        store_outbox_external(base);
}

/* The listener's own thread, waiting on its socket (ADR 0013): another instance's
 * commit is known within the notification's network delay, not at the writer's next
 * idle tick, so the request that follows it on this instance already sees it. */
static void *listen_main(void *arg)
{
    util_thread_name("pglisten");
    pg_store_t *s = arg;
    while (!__atomic_load_n(&s->listen_stopping, __ATOMIC_ACQUIRE)) {
        listen_round(s);
        struct pollfd p[2] = {{.fd = s->listen_wake, .events = POLLIN}, {.fd = -1}};
        nfds_t np = 1;
        if (s->listening && s->listener.pg != NULL && PQsocket(s->listener.pg) >= 0) {
            p[1].fd = PQsocket(s->listener.pg);
            p[1].events = POLLIN;
            np = 2;
        }
        /* Bounded: a lost connection is retried (after its backoff) without a wake-up. */
        if (poll(p, np, 200) > 0 && (p[0].revents & POLLIN)) {
            uint64_t v;
            if (read(s->listen_wake, &v, sizeof(v)) < 0) {
                /* nothing to drain */
            }
        }
    }
    return NULL;
}

static void listen_stop(pg_store_t *s)
{
    if (!s->listen_started)
        return;
    __atomic_store_n(&s->listen_stopping, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(s->listen_wake, &one, sizeof(one)) < 0) {
        /* the poll's time-out ends the thread anyway */
    }
    pthread_join(s->listen_thread, NULL);
    s->listen_started = 0;
}

static store_conn_t *op_writer(store_t *base)
{
    return &((pg_store_t *)base)->writer.base;
}

/* Group commit (ADR 0014): the jobs that queued while the last batch ran, in one
 * transaction, each in a savepoint of its own, so that one job's failure rolls back
 * that job alone, and one COMMIT (one WAL flush) answers all of them. Savepoint
 * "job" is reused: after a failure ROLLBACK TO keeps it, after a success it is
 * released and set again in one round trip; COMMIT releases the last one.
 *
 * Order: the jobs' statements run in queue order on one connection, so the batch
 * sees each job's writes as a single writer would; the outbox counter row is taken
 * once for the events of every job that succeeded, just before the COMMIT, and held
 * until it (ADR 0018), so event offsets follow commit order across instances as
 * before (ADR 0006).
 *
 * A failure outside a job (the connection lost, a savepoint statement or the COMMIT
 * refused) fails every job of the batch that had succeeded: none of them is
 * acknowledged, as with a single job whose COMMIT failed. Returns 1 if it committed. */
/* Makes coros[0..n) where missing; 0 (and *failed set, for good) when memory lacks:
 * the jobs then run one after another. */
static int coros_ready(coro_t **coros, int n, int *failed)
{
    if (*failed)
        return 0;
    for (int i = 0; i < n; i++) {
        if (coros[i] == NULL && (coros[i] = coro_new(SPEC_STACK)) == NULL) {
            LOGF(LOG_WARN, "store", "no memory for coroutines: statements go one round trip at a time");
            *failed = 1;
            return 0;
        }
    }
    return 1;
}

/* The number of jobs from j on that run_batch may run as one pipelined run (ADR
 * 0021): consecutive pipelinable jobs, at most SPEC_MAX; with their coroutines made. */
static int segment_len(pg_store_t *s, const store_job_t *j)
{
    int n = 0;
    while (j != NULL && n < SPEC_MAX && j->pipelinable && !j->unshared) {
        n++;
        j = j->next_in_queue;
    }
    return n >= 2 && coros_ready(s->coros, n, &s->coros_failed) ? n : 0;
}

static void spec_entry(void *arg)
{
    spec_job_t *sj = arg;
    sj->status = sj->job->run(sj->job, &sj->conn->base);
}

/* Sets sp up for jobs first.. (n of them, on c, coroutines coros[0..n)) and runs each
 * up to its first statement (held, not sent) or its end. */
static void spec_start(spec_t *sp, pg_conn_t *c, store_job_t *first, int n, coro_t **coros, int reads)
{
    sp->n = n;
    sp->cur = -1;
    sp->broken = sp->retried = sp->sent_any = sp->failures = sp->sequential = 0;
    sp->reads = reads;
    bs_error_init(&sp->err);
    store_job_t *j = first;
    for (int i = 0; i < n; i++, j = j->next_in_queue) {
        sp->jobs[i] = (spec_job_t){.job = j, .conn = c, .co = coros[i], .status = -1};
        snprintf(sp->set[i], sizeof(sp->set[i]), "SAVEPOINT sp%d", i);
        snprintf(sp->undo[i], sizeof(sp->undo[i]), "ROLLBACK TO SAVEPOINT sp%d", i);
    }
    c->spec = sp;
    sp->deferring = 1;
    for (int i = 0; i < n; i++) {
        spec_job_t *sj = &sp->jobs[i];
        coro_start(sj->co, spec_entry, sj);
        sp->cur = i;
        sj->done = coro_resume(sj->co);
        sp->cur = -1;
    }
    sp->deferring = 0;
}

/* Runs jobs first.. (n of them, pipelinable) inside run_batch's transaction as if one
 * after another (ADR 0021): each as a coroutine up to its first statement, those
 * statements in one pipeline (a savepoint before each), then each job resumed in
 * order with its result. A job that fails after its statement ran, or sends another
 * statement, undoes the statements done ahead of it (ROLLBACK TO the next job's
 * savepoint), which are then sent again: every statement sees exactly the jobs
 * before it. Leaves each job's status and err; returns 0, or -1 with err when the
 * transaction cannot commit. */
static int run_segment(pg_store_t *s, store_job_t *first, int n, bs_error_t *err)
{
    pg_conn_t *c = &s->writer;
    spec_t *sp = &s->spec;
    if (later_flush(c, err) != 0)
        return -1;
    spec_start(sp, c, first, n, s->coros, 0);
    spec_send(c, sp, 0);
    for (int k = 0; k < n; k++) {
        spec_job_t *sj = &sp->jobs[k];
        store_job_t *jb = sj->job;
        if (!sj->done) {
            sp->cur = k;
            sj->done = coro_resume(sj->co);
            sp->cur = -1;
            assert(sj->done); /* its further statements ran at once */
        }
        jb->status = sj->status;
        if (!sp->broken && conn_lost(c)) {
            bs_error_t e;
            bs_error_init(&e);
            bs_error_set(&e, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                         s->where);
            spec_break(sp, &e);
        }
        if (sp->broken) {
            if (jb->status == 0 || jb->err.code == BS_ERR_OK) {
                jb->err = sp->err;
                jb->status = -1;
            }
            continue;
        }
        int aborted = sj->failed || (sj->second && PQtransactionStatus(c->pg) == PQTRANS_INERROR);
        if (jb->status == 0 && aborted) {
            LOGF(LOG_ERROR, "store", "a write job succeeded on a failed transaction; it is rolled back");
            jb->status = -1;
        }
        if (jb->status != 0) {
            if (jb->err.code == BS_ERR_OK)
                bs_error_set(&jb->err, BS_ERR_INTERNAL, NULL);
            jb->status = -1;
            if (sj->sent) {
                /* Its work goes, and with it what was done after its savepoint. */
                if (spec_undo(c, sp, k) != 0)
                    continue;
                sp->sequential |= !sj->failed; /* a late refusal undid work done ahead */
            }
        }
        /* Not into a transaction a later job's failed statement aborted: that job's
         * own rollback comes first. */
        for (int m = k + 1; m < n && PQtransactionStatus(c->pg) != PQTRANS_INERROR; m++)
            if (sp->jobs[m].waiting && sp->jobs[m].resend) {
                spec_send(c, sp, k + 1);
                break;
            }
    }
    c->spec = NULL;
    if (sp->sent_any)
        c->savepoint_due = 1; /* the next job gets a savepoint of its own */
    if (sp->broken) {
        *err = sp->err;
        return -1;
    }
    return 0;
}

/* After the writer's transaction: prepares the statements that pipelined jobs sent
 * unnamed, so that the next ones go by name. */
static void spec_prepare_sent(pg_conn_t *c, spec_t *sp)
{
    for (int i = 0; i < sp->nprepare; i++) {
        bs_error_t ignored;
        bs_error_init(&ignored);
        if (!conn_lost(c) && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
            prepared_name(c, sp->prepare[i], &ignored);
        free(sp->prepare[i]);
        sp->prepare[i] = NULL;
    }
    sp->nprepare = 0;
}

static int run_batch(pg_store_t *s, store_job_t *jobs)
{
    pg_conn_t *c = &s->writer;
    bs_error_t err;
    bs_error_init(&err);
    int committed = 0;
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue) {
        bs_error_init(&j->err);
        j->status = -1;
    }
    if (ensure_conn(c, &err) != 0)
        goto out;
    /* BEGIN, the time-out and the first savepoint go out with the first job's first
     * statement (ADR 0018). */
    snprintf(c->begin_timeout, sizeof(c->begin_timeout), "SET LOCAL statement_timeout = %d",
             s->cfg.statement_timeout_ms > 0 ? s->cfg.statement_timeout_ms : 0);
    c->begin_due = 1;
    c->begin_savepoint = 1;
    c->wrote = 0;
    c->savepoint_due = c->savepoint_failed = 0;
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue) {
        int seg = segment_len(s, j);
        if (seg > 0) {
            if (run_segment(s, j, seg, &err) != 0)
                goto out;
            for (int i = 1; i < seg; i++)
                j = j->next_in_queue;
            continue;
        }
        int wrote = c->wrote;
        j->status = j->run(j, &c->base);
        if (j->unshared)
            c->wrote = wrote;
        if (c->savepoint_failed) {
            /* The savepoint owed before this job was refused: the transaction is
             * aborted under every job of the batch. */
            if (err.code == BS_ERR_OK)
                bs_error_set(
                    &err, BS_ERR_UNAVAILABLE,
                    "The database rolled back the transaction this write was part of; please retry.");
            if (j->err.code == BS_ERR_OK)
                j->err = err;
            j->status = -1;
            goto out;
        }
        if (conn_lost(c)) {
            if (j->status == 0 || j->err.code == BS_ERR_OK)
                bs_error_set(&j->err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                             s->where);
            j->status = -1;
            err = j->err;
            err.fields = NULL; /* they belong to the arena of that job */
            goto out;
        }
        if (j->status == 0 && PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
            /* The job left the transaction aborted (a statement failed that it did not
             * report): libpq knows it from the last ReadyForQuery, no round trip needed.
             * The job fails, its savepoint stands. */
            LOGF(LOG_ERROR, "store", "a write job succeeded on a failed transaction; it is rolled back");
            j->status = -1;
        }
        if (j->status == 0) {
            /* Released and set again with the next job's first statement (if it has one). */
            c->savepoint_due = j->next_in_queue != NULL;
        } else if (c->savepoint_due || c->begin_due) {
            /* It failed before sending a statement: nothing of it to undo, and the
             * savepoint still stands before the previous job (or the transaction is
             * still to begin); still owed. */
            if (j->err.code == BS_ERR_OK)
                bs_error_set(&j->err, BS_ERR_INTERNAL, NULL);
            j->status = -1;
        } else {
            if (j->err.code == BS_ERR_OK)
                bs_error_set(&j->err, BS_ERR_INTERNAL, NULL);
            j->status = -1;
            if (conn_lost(c) || simple(c, "ROLLBACK TO SAVEPOINT job", &err) != 0) {
                if (err.code == BS_ERR_OK)
                    bs_error_set(&err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                                 s->where);
                goto out;
            }
        }
    }
    c->savepoint_due = 0; /* COMMIT releases the savepoint */
    /* The events of every job that succeeded, in one statement sent before the COMMIT
     * (ADR 0018): one counter UPDATE per transaction, not one per job, and its row
     * lock held from there to the COMMIT only. */
    if (store_outbox_append_jobs(&s->base, &c->base, jobs, &err) != 0)
        goto out;
    if (commit(c, commit_sql(s), &err) == 0)
        committed = 1;
out:
    c->savepoint_due = c->savepoint_failed = 0;
    if (!committed && !conn_lost(c) && !c->begin_due) {
        bs_error_t ignored;
        bs_error_init(&ignored);
        PGresult *r = exec_simple(c, "ROLLBACK", &ignored);
        PQclear(r);
    }
    c->begin_due = 0;
    later_discard(c); /* a batch that failed may leave one unsent */
    uint64_t lsn = committed ? wal_lsn_now(s) : 0;
    after_transaction(c);
    spec_prepare_sent(c, &s->spec);
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue) {
        if (!committed && j->status == 0) {
            /* Its own part went well; the transaction it was part of did not commit. */
            j->status = -1;
            j->err = err;
            if (j->err.code == BS_ERR_OK || j->err.code == BS_ERR_VALIDATION ||
                j->err.code == BS_ERR_BAD_REQUEST)
                bs_error_set(
                    &j->err, BS_ERR_UNAVAILABLE,
                    "The database rolled back the transaction this write was part of; please retry.");
        } else if (!committed && j->err.code == BS_ERR_OK) {
            j->err = err;
            if (j->err.code == BS_ERR_OK)
                bs_error_set(&j->err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                             s->where);
        }
        if (j->status == 0)
            j->commit_lsn = lsn;
    }
    return committed;
}

/* store_ops_t.run_jobs: one job runs in a transaction of its own (no savepoint); more
 * run as a group commit. */
static int op_run_jobs(store_t *base, store_job_t *jobs)
{
    pg_store_t *s = (pg_store_t *)base;
    if (jobs != NULL && jobs->next_in_queue == NULL)
        return run_job(s, jobs) == 0;
    return run_batch(s, jobs);
}

/* --- the read pool ----------------------------------------------------------------- */

enum { READS_POINT = 0, READS_SCAN = 1 };

/* Where a read goes: a replica in the rotation that has replayed min_lsn (waiting up
 * to replica_wait_ms for one when min_lsn is set), connected; else the primary. */
static pg_conn_t *read_target(pool_thread_t *t, uint64_t min_lsn)
{
    pg_store_t *s = t->s;
    if (s->replicas == NULL)
        return &t->conn;
    int i = min_lsn != 0 ? pg_replicas_wait(s->replicas, min_lsn, s->cfg.replica_wait_ms)
                         : pg_replicas_pick(s->replicas, 0);
    if (i < 0)
        return &t->conn;
    pg_conn_t *rc = &t->replicas[i];
    bs_error_t err;
    bs_error_init(&err);
    if (ensure_conn(rc, &err) != 0)
        return &t->conn; /* the monitor will take it out of the rotation */
    return rc;
}

/* Under pool_lock: which queue a free pool thread serves next, or -1 (nothing it may
 * take). Oldest first between the two; a scan only while fewer than scan_cap run, so
 * that one thread at least stays for point reads. */
static int pool_next_kind(const pg_store_t *s)
{
    const store_job_t *p = s->rq[READS_POINT].head, *q = s->rq[READS_SCAN].head;
    if (q != NULL && s->scans_running >= s->scan_cap)
        q = NULL;
    if (p == NULL)
        return q != NULL ? READS_SCAN : -1;
    return q != NULL && q->queued_seq < p->queued_seq ? READS_SCAN : READS_POINT;
}

/* Under pool_lock: takes the next batch of kind off its queue: one scan, or a share
 * of the point reads that wait (so that a burst spreads over the threads). */
static store_job_t *pool_take(pg_store_t *s, int kind)
{
    size_t take = 1, n = 1;
    if (kind == READS_POINT) {
        take = (s->rq[kind].n + (size_t)s->npool - 1) / (size_t)s->npool;
        if (take > POOL_TAKE_MAX)
            take = POOL_TAKE_MAX;
    }
    store_job_t *batch = s->rq[kind].head, *last = batch;
    while (n < take && last->next_in_queue != NULL) {
        last = last->next_in_queue;
        n++;
    }
    s->rq[kind].head = last->next_in_queue;
    if (s->rq[kind].head == NULL)
        s->rq[kind].tail = &s->rq[kind].head;
    s->rq[kind].n -= n;
    last->next_in_queue = NULL;
    return batch;
}

/* Posts a share of reads back, after the whole share ran: the worker may free a job
 * at once. */
static void batch_posted(store_job_t *batch)
{
    for (store_job_t *j = batch, *next; j != NULL; j = next) {
        next = j->next_in_queue;
        mailbox_post(j->reply_to, &j->msg);
    }
}

/* Runs a pool thread's share of point reads (n >= 2, on its primary connection) with
 * their first statements in one pipeline (ADR 0021): each job as a coroutine up to its
 * first statement; one BEGIN ... COMMIT round trip for all; each resumed in order with
 * its result, its further statements sent one by one. A read after a failed one was
 * not done (PostgreSQL skips to the Sync) and goes again; a lost connection is retried
 * once, then each read retries its statement itself as a read always may. */
static void run_reads_pipelined(pool_thread_t *t, store_job_t *batch, int n)
{
    pg_conn_t *c = &t->conn;
    spec_t *sp = &t->spec;
    bs_error_t ignored;
    bs_error_init(&ignored);
    ensure_conn(c, &ignored); /* here, not on a coroutine's stack (a failure shows below) */
    spec_start(sp, c, batch, n, t->coros, 1);
    spec_send(c, sp, 0);
    for (int k = 0; k < n; k++) {
        spec_job_t *sj = &sp->jobs[k];
        if (!sj->done) {
            if (sj->resend && !sp->broken)
                spec_send(c, sp, k); /* it came after a read that failed */
            sp->cur = k;
            sj->done = coro_resume(sj->co);
            sp->cur = -1;
            assert(sj->done);
        }
        store_job_t *jb = sj->job;
        jb->status = sj->status == 0 ? 0 : -1;
        if (jb->status != 0 && jb->err.code == BS_ERR_OK)
            bs_error_set(&jb->err, BS_ERR_INTERNAL, NULL);
    }
    c->spec = NULL;
    spec_prepare_sent(c, sp);
}

static void *pool_main(void *arg)
{
    util_thread_name("pgpool");
    pool_thread_t *t = arg;
    pg_store_t *s = t->s;
    t->conn.thread = pthread_self();
    t->conn.bound = 1;
    for (size_t i = 0; s->replicas != NULL && i < pg_replicas_count(s->replicas); i++) {
        t->replicas[i].thread = pthread_self();
        t->replicas[i].bound = 1;
    }
    pthread_mutex_lock(&s->pool_lock);
    for (;;) {
        int kind;
        while ((kind = pool_next_kind(s)) < 0 && !s->pool_stopping)
            pthread_cond_wait(&s->pool_cond, &s->pool_lock);
        if (kind < 0) {
            if (s->rq[READS_POINT].n + s->rq[READS_SCAN].n == 0)
                break;                                       /* stopping, and every queued job done */
            pthread_cond_wait(&s->pool_cond, &s->pool_lock); /* scans wait for a slot */
            continue;
        }
        store_job_t *batch = pool_take(s, kind);
        if (kind == READS_SCAN)
            s->scans_running++;
        if (pool_next_kind(s) >= 0)
            pthread_cond_signal(&s->pool_cond); /* the rest for another thread */
        pthread_mutex_unlock(&s->pool_lock);
        /* Point reads in one pipeline when there are no replicas to choose among and
         * none is a write on the pool (store_run_pooled: its statements commit alone). */
        int n = 0, pooled_write = 0;
        for (store_job_t *j = batch; j != NULL; j = j->next_in_queue) {
            n++;
            pooled_write |= j->primary;
        }
        if (kind == READS_POINT && n >= 2 && !pooled_write && s->replicas == NULL &&
            coros_ready(t->coros, n, &t->coros_failed)) {
            drop_stale_prepared(&t->conn);
            run_reads_pipelined(t, batch, n);
            batch_posted(batch);
            pthread_mutex_lock(&s->pool_lock);
            continue;
        }
        for (store_job_t *j = batch; j != NULL; j = j->next_in_queue) {
            pg_conn_t *c = j->primary ? &t->conn : read_target(t, j->min_lsn);
            drop_stale_prepared(c);
            j->status = j->run(j, &c->base) == 0 ? 0 : -1;
            /* A replica lost in the middle of a read (stopped, failed over): the read
             * runs again on the primary instead of answering 503 while the monitor
             * takes the replica out of the rotation. A read has no effect to repeat. */
            if (j->status != 0 && c != &t->conn && j->err.code == BS_ERR_UNAVAILABLE && conn_lost(c)) {
                bs_error_init(&j->err);
                j->status = j->run(j, &t->conn.base) == 0 ? 0 : -1;
            }
            if (j->status != 0 && j->err.code == BS_ERR_OK)
                bs_error_set(&j->err, BS_ERR_INTERNAL, NULL);
        }
        batch_posted(batch);
        pthread_mutex_lock(&s->pool_lock);
        if (kind == READS_SCAN && --s->scans_running < s->scan_cap && s->rq[READS_SCAN].n > 0)
            pthread_cond_signal(&s->pool_cond); /* a slot for a waiting scan */
    }
    pthread_mutex_unlock(&s->pool_lock);
    return NULL;
}

static void op_read_submit(store_t *base, store_job_t *head, store_job_t **tail, size_t n)
{
    pg_store_t *s = (pg_store_t *)base;
    (void)tail;
    (void)n;
    pthread_mutex_lock(&s->pool_lock);
    for (store_job_t *j = head, *next; j != NULL; j = next) {
        next = j->next_in_queue;
        int kind = j->scan ? READS_SCAN : READS_POINT;
        j->next_in_queue = NULL;
        j->queued_seq = ++s->rseq;
        *s->rq[kind].tail = j;
        s->rq[kind].tail = &j->next_in_queue;
        s->rq[kind].n++;
    }
    pthread_cond_signal(&s->pool_cond); /* the taker passes the rest on */
    pthread_mutex_unlock(&s->pool_lock);
}

/* Finishes the queued reads and joins the pool threads. */
static void pool_stop(pg_store_t *s)
{
    if (s->pool == NULL)
        return;
    pthread_mutex_lock(&s->pool_lock);
    s->pool_stopping = 1;
    pthread_cond_broadcast(&s->pool_cond);
    pthread_mutex_unlock(&s->pool_lock);
    for (int i = 0; i < s->npool; i++) {
        if (s->pool[i].started)
            pthread_join(s->pool[i].thread, NULL);
        close_conn(&s->pool[i].conn);
        for (size_t k = 0; s->pool[i].replicas != NULL && k < pg_replicas_count(s->replicas); k++)
            close_conn(&s->pool[i].replicas[k]);
        free(s->pool[i].replicas);
        for (int k = 0; k < POOL_TAKE_MAX; k++)
            coro_free(s->pool[i].coros[k]);
    }
    free(s->pool);
    s->pool = NULL;
}

/* --- the store --------------------------------------------------------------------- */

static void op_close(store_t *base)
{
    pg_store_t *s = (pg_store_t *)base;
    listen_stop(s);
    if (s->listen_wake >= 0)
        close(s->listen_wake);
    pool_stop(s);
    pg_replicas_stop(s->replicas);
    s->replicas = NULL;
    store_base_destroy(base);
    for (int i = 0; s->readers != NULL && i < s->nreaders; i++)
        close_conn(&s->readers[i]);
    close_conn(&s->writer);
    close_conn(&s->listener);
    for (int i = 0; i < SPEC_MAX; i++)
        coro_free(s->coros[i]);
    pthread_mutex_destroy(&s->pool_lock);
    pthread_cond_destroy(&s->pool_cond);
    free(s->readers);
    free(s->url);
    free(s->listen_url);
    free(s->writer_url);
    free(s);
}

static store_conn_t *op_reader(store_t *base, int idx)
{
    pg_store_t *s = (pg_store_t *)base;
    return &s->readers[idx % s->nreaders].base;
}

static void init_conn(pg_store_t *s, pg_conn_t *c)
{
    memset(c, 0, sizeof(*c));
    c->base.ops = &pg_ops;
    c->owner = s;
    c->prepare = s->cfg.prepared_statements;
}

store_t *pg_store_open(const store_config_t *cfg, bs_error_t *err)
{
    pg_store_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    store_base_init(&s->base, &pg_ops, cfg->max_batch > 0 ? cfg->max_batch : 256);
    /* Other instances' commits reach realtime subscribers within this (the outbox is
     * read at the writer's tick once the listener thread has flagged them). */
    s->base.idle_tick_ms = 50;
    s->listen_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_cond_init(&s->pool_cond, NULL);
    for (int k = 0; k < 2; k++)
        s->rq[k].tail = &s->rq[k].head;
    s->cfg = *cfg;
    s->url = strdup(cfg->path);
    s->listen_url = strdup(cfg->listen_url != NULL && cfg->listen_url[0] ? cfg->listen_url : cfg->path);
    int direct_writer = cfg->writer_url != NULL && cfg->writer_url[0] != '\0';
    s->writer_url = direct_writer ? strdup(cfg->writer_url) : NULL;
    unsigned char rnd[16];
    util_random_bytes(rnd, sizeof(rnd));
    for (int i = 0; i < 16; i++)
        snprintf(s->instance + 2 * i, 3, "%02x", rnd[i]);
    snprintf(s->notify_commit, sizeof(s->notify_commit), "NOTIFY basalt_changes, '%s'; COMMIT", s->instance);
    /* One reader connection: workers read through the pool; store_reader serves
     * start-up and the command line only. */
    s->nreaders = 1;
    s->readers = calloc((size_t)s->nreaders, sizeof(*s->readers));
    if (s->url == NULL || s->listen_url == NULL || s->readers == NULL ||
        (direct_writer && s->writer_url == NULL)) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        op_close(&s->base);
        return NULL;
    }
    describe(s);
    init_conn(s, &s->writer);
    /* Its own session: the writer may keep prepared statements there (ADR 0018). */
    s->writer.prepare = s->cfg.prepared_statements || s->writer_url != NULL;
    init_conn(s, &s->listener);
    for (int i = 0; i < s->nreaders; i++) {
        init_conn(s, &s->readers[i]);
        s->readers[i].is_reader = 1;
    }
    /* Every connection at start-up: an unreachable server stops start-up here. */
    if (connect_conn(&s->writer, err) != 0) {
        op_close(&s->base);
        return NULL;
    }
    s->writer.connected_once = 1;
    for (int i = 0; i < s->nreaders; i++) {
        if (connect_conn(&s->readers[i], err) != 0) {
            op_close(&s->base);
            return NULL;
        }
        s->readers[i].connected_once = 1;
    }
    s->npool = cfg->pool_size > 0 ? cfg->pool_size : 4;
    s->scan_cap = s->npool > 1 ? s->npool - 1 : 1;
    s->pool = calloc((size_t)s->npool, sizeof(*s->pool));
    if (s->pool == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        op_close(&s->base);
        return NULL;
    }
    if (cfg->replicas != NULL && cfg->replicas[0] != '\0') {
        pg_replicas_config_t rc = {.primary_url = s->listen_url,
                                   .urls = cfg->replicas,
                                   .max_lag_ms = cfg->replica_max_lag_ms > 0 ? cfg->replica_max_lag_ms : 5000,
                                   .connect_timeout_ms = cfg->connect_timeout_ms};
        s->replicas = pg_replicas_new(&rc, err);
        if (s->replicas == NULL || pg_replicas_start(s->replicas, err) != 0) {
            op_close(&s->base);
            return NULL;
        }
    }
    for (int i = 0; i < s->npool; i++) {
        pool_thread_t *t = &s->pool[i];
        t->s = s;
        init_conn(s, &t->conn);
        t->conn.is_reader = 1;
        size_t nr = pg_replicas_count(s->replicas);
        t->replicas = nr > 0 ? calloc(nr, sizeof(*t->replicas)) : NULL;
        if (nr > 0 && t->replicas == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            op_close(&s->base);
            return NULL;
        }
        for (size_t k = 0; k < nr; k++) {
            init_conn(s, &t->replicas[k]);
            t->replicas[k].is_reader = 1;
            t->replicas[k].url = pg_replicas_url(s->replicas, k);
        }
        if (connect_conn(&t->conn, err) != 0) {
            op_close(&s->base);
            return NULL;
        }
        t->conn.connected_once = 1;
    }
    for (int i = 0; i < s->npool; i++) {
        if (pthread_create(&s->pool[i].thread, NULL, pool_main, &s->pool[i]) != 0) {
            bs_error_set(err, BS_ERR_INTERNAL, "Cannot start the database read threads.");
            op_close(&s->base);
            return NULL;
        }
        s->pool[i].started = 1;
    }
    if (s->listen_wake < 0 || pthread_create(&s->listen_thread, NULL, listen_main, s) != 0) {
        bs_error_set(err, BS_ERR_INTERNAL, "Cannot start the database notifications thread.");
        op_close(&s->base);
        return NULL;
    }
    s->listen_started = 1;
    return &s->base;
}

static int op_replica_state(store_t *base, size_t i, int *up, int64_t *lag_ms)
{
    pg_store_t *s = (pg_store_t *)base;
    if (s->replicas == NULL || i >= pg_replicas_count(s->replicas))
        return -1;
    *up = pg_replicas_healthy(s->replicas, i);
    *lag_ms = pg_replicas_lag_ms(s->replicas, i);
    return 0;
}

static uint64_t op_round_trips(store_t *base)
{
    return __atomic_load_n(&((pg_store_t *)base)->writer_round_trips, __ATOMIC_RELAXED);
}

static const store_ops_t pg_ops = {
    .replica_state = op_replica_state,
    .round_trips = op_round_trips,
    .exec_later = op_exec_later,
    .name = "postgres",
    .close = op_close,
    .sql = RULES_DIALECT_POSTGRES,
    .reader = op_reader,
    .run_jobs = op_run_jobs,
    .writer = op_writer,
    .read_submit = op_read_submit,
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
