/*
 * pg_internal.h: what the files of the PostgreSQL backend (ADR 0004) share. Internal
 * to src/store/postgres/: nothing outside it includes this (callers use store.h; the
 * backend's one entry point is pg_store_open, in store_backend.h).
 *
 * Who owns what:
 *   pg_store.c     the store: run() and the store_ops_t (pg_ops), the writer (one job,
 *                  group commit, the listener thread), the read pool, open and close.
 *   pg_conn.c      the connection and statement layer: errors, connections (connect,
 *                  reconnect with backoff, the deadline), statements (prepared names,
 *                  pipelines, the writer's owed BEGIN, savepoints and later statement,
 *                  parameters).
 *   pg_pipeline.c  pipelined jobs (ADR 0021): the writer's group commit and the read
 *                  pool's point reads, their first statements in one pipeline.
 *   pg_replicas.c  the read replicas' monitor (pg_replicas.h).
 *
 * The functions shared between these files are named pg_* and declared here, by the
 * file that defines them (where each is described); the rest are static.
 */
#ifndef BASALT_STORE_PG_INTERNAL_H
#define BASALT_STORE_PG_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "base/coro.h"
#include "store/postgres/pg_replicas.h"
#include "store/store_backend.h"

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

/* One statement of a pipeline: text (unnamed) or name (prepared before). */
typedef struct {
    const char *text, *name;
    int nparams;
    const char *const *vals;
} pipe_q_t;

/* The store's and its connections' operations (pg_store.c). */
extern const store_ops_t pg_ops;

/* pg_conn.c: errors */
int pg_conn_lost(pg_conn_t *c);
void pg_map_error_sql(pg_conn_t *c, const PGresult *res, const char *sql, bs_error_t *err);
void pg_map_error(pg_conn_t *c, const PGresult *res, bs_error_t *err);
int pg_stale_plan(const PGresult *res);

/* pg_conn.c: connections */
void pg_forget_prepared(pg_conn_t *c);
int pg_connect_conn(pg_conn_t *c, bs_error_t *err);
int pg_ensure_conn(pg_conn_t *c, bs_error_t *err);
void pg_close_conn(pg_conn_t *c);
int pg_result_failed(const PGresult *r);
PGresult *pg_exec_simple(pg_conn_t *c, const char *sql, bs_error_t *err);

/* pg_conn.c: statements */
char *pg_sql(const char *sql);
uint64_t pg_hash_sql(const char *s);
const char *pg_prepared_name(pg_conn_t *c, const char *sql, bs_error_t *err);
int pg_pipeline(pg_conn_t *c, const pipe_q_t *qs, int n, PGresult **res, bs_error_t *err);
int pg_pipeline_got(pg_conn_t *c, const pipe_q_t *qs, int n, PGresult **res, bs_error_t *err, int *got);
void pg_later_discard(pg_conn_t *c);
int pg_later_flush(pg_conn_t *c, bs_error_t *err);
int pg_simple(pg_conn_t *c, const char *sql, bs_error_t *err);
int pg_begin_now(pg_conn_t *c, bs_error_t *err);
int pg_make_params(const bs_value_t *params, size_t nparams, const char ***valsp, char **bufp,
                   bs_error_t *err);
PGresult *pg_send_now(pg_conn_t *c, const char *text, int nparams, const char *const *vals, int owed,
                      bs_error_t *err);

/* pg_pipeline.c */
void pg_spec_break(spec_t *sp, const bs_error_t *why);
void pg_spec_undo_after(pg_conn_t *c, spec_t *sp, int k);
PGresult *pg_spec_defer(pg_conn_t *c, const char *text, int nparams, const char *const *vals,
                        bs_error_t *err);
int pg_coros_ready(coro_t **coros, int n, int *failed);
int pg_segment_len(pg_store_t *s, const store_job_t *j);
int pg_run_segment(pg_store_t *s, store_job_t *first, int n, bs_error_t *err);
void pg_spec_prepare_sent(pg_conn_t *c, spec_t *sp);
void pg_run_reads_pipelined(pool_thread_t *t, store_job_t *batch, int n);

#endif
