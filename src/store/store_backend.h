/*
 * store_backend — what a backend of store.h provides (internal to src/store/).
 *
 * Each backend defines its own store, connection and statement structs whose first
 * member is the matching public one below, so a pointer to either is a pointer to
 * both; store.c dispatches every public call through the ops table the object
 * carries. The semantics of each operation are those documented in store.h.
 */
#ifndef BASALT_STORE_BACKEND_H
#define BASALT_STORE_BACKEND_H

#include <pthread.h>

#include "store/store.h"

typedef struct store_ops {
    const char *name;    /* "sqlite", "postgres": for messages */
    rules_dialect_t sql; /* the dialect its connections speak */
    void (*close)(store_t *s);
    store_conn_t *(*reader)(store_t *s, int idx);
    /* Runs jobs (a list of at most max_batch, linked by next_in_queue) on the writer's
     * connection, setting each one's status and err. Returns 1 if a commit happened
     * (for the statistics), 0 if not. Writer thread, or store_write_sync's caller. */
    int (*run_jobs)(store_t *s, store_job_t *jobs);
    /* Optional; writer thread: before each batch and every idle_tick_ms when idle. */
    void (*writer_tick)(store_t *s);
    /* Optional: store_exec_later (NULL: it runs at once). */
    int (*exec_later)(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                      store_later_fn done, void *arg, bs_error_t *err);
    /* Optional: the writer connection's round trips so far (store_stats_t). */
    uint64_t (*round_trips)(store_t *s);
    /* Optional: takes read jobs (a list of n linked by next_in_queue) to run on a pool
     * of the backend's own threads, each posted back to its reply_to when done. NULL:
     * store_read runs jobs inline on reader(idx). Called by a worker thread. */
    void (*read_submit)(store_t *s, store_job_t *head, store_job_t **tail, size_t n);

    store_stmt_t *(*query)(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                           bs_error_t *err);
    int (*step)(store_stmt_t *st, bs_error_t *err);
    int (*ncols)(store_stmt_t *st);
    const char *(*col_name)(store_stmt_t *st, int i);
    bs_value_t (*col)(store_stmt_t *st, int i);
    void (*done)(store_stmt_t *st);
    int64_t (*exec)(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                    bs_error_t *err);
    int (*exec_script)(store_conn_t *c, const char *sql, bs_error_t *err);
    void (*reader_release)(store_conn_t *c);
    void (*set_budget)(store_conn_t *c, int budget_ms);
    void (*clear_cache)(store_conn_t *c);
    /* Optional (backends with read replicas). */
    int (*replica_state)(store_t *s, size_t i, int *up, int64_t *lag_ms);
    /* The writer's connection: writer thread only (the outbox reads others' events). */
    store_conn_t *(*writer)(store_t *s);
} store_ops_t;

/* Most workers that may hold reads back (config's --threads limit). */
#define STORE_MAX_WORKERS 256

/* What every backend's store begins with: its ops and the writer's job queue, which
 * store.c runs the same way for every backend. */
struct store {
    const store_ops_t *ops;
    int max_batch; /* jobs per run_jobs call */
    /* How often an idle writer ticks (1000 ms; PostgreSQL 50, for what its listener
     * thread did not wake it for). */
    int idle_tick_ms;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    store_job_t *head, **tail; /* jobs waiting for the writer */
    int running, stopping;
    int wake; /* under lock: an idle writer ticks at once (store_wake_writer) */
    pthread_t thread;
    store_stats_t stats;
    /* Reads of the current loop turn, per worker (each touched only by its worker's
     * thread), for backends with read_submit. */
    store_queue_t turn_reads[STORE_MAX_WORKERS];
    /* The realtime outbox (outbox.c); touched by the writer thread only, after
     * store_outbox_open. */
    struct {
        int enabled;
        store_outbox_config_t cfg;
        uint32_t epoch;
        uint64_t delivered; /* every offset up to this one went to the sink */
        int external;       /* atomic: the backend saw another process commit */
        uint64_t last_poll_ns, last_prune_ns;
        int prune_again; /* the last prune took a full batch */
    } outbox;
};

/* Backends, inside a write job's transaction after its run returned 0: writes
 * job->events to the outbox. Returns 0, or -1 with job->err filled (the job fails). */
int store_outbox_append(store_t *s, store_conn_t *c, store_job_t *job);
/* The events of every job of jobs (linked by next_in_queue) whose status is 0, in
 * that order, in one statement where the dialect has outbox_append_sql (ADR 0018:
 * one counter UPDATE and one round trip per transaction, not per job, sent later,
 * before the COMMIT); elsewhere store_outbox_append for each. Returns 0, or -1 with
 * err filled (the transaction must not commit). */
int store_outbox_append_jobs(store_t *s, store_conn_t *c, store_job_t *jobs, bs_error_t *err);
/* store.c: after a batch committed, before the committed hooks: the batch's events to
 * the sink, preceded by any other instance's that came before them. */
void store_outbox_committed(store_t *s, store_job_t *jobs);
/* store.c, writer tick: reads others' events (when the backend saw a change, and at
 * least once a second) and prunes. */
void store_outbox_tick(store_t *s);
/* Backends: another process committed. Called on another thread (a listener), it
 * wakes the writer, whose tick then reads the events and requests one round trip
 * later, not up to idle_tick_ms later; on the writer's own tick, that tick reads them. */
void store_outbox_external(store_t *s);
/* An idle writer ticks now instead of at its next idle tick. Any thread. */
void store_wake_writer(store_t *s);
/* Whether the calling thread is s's writer thread. */
int store_on_writer(const store_t *s);

/* Initialises the common part; max_batch < 1 means 1. */
void store_base_init(store_t *s, const store_ops_t *ops, int max_batch);
/* Stops the writer (finishing queued jobs) and releases the common part. */
void store_base_destroy(store_t *s);
struct store_conn {
    const store_ops_t *ops;
};
struct store_stmt {
    const store_ops_t *ops;
};

/* The backends' constructors; store_open picks one from the configuration. */
store_t *sqlite_store_open(const store_config_t *cfg, bs_error_t *err);
store_t *pg_store_open(const store_config_t *cfg, bs_error_t *err);

#endif
