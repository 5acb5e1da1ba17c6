/*
 * jobs — durable background jobs kept in the store, and cron schedules (ADR 0009).
 *
 * A job is a row of `_jobs`: a handler name, a JSON payload, a state (ready,
 * running, done, dead), attempts so far and the most allowed, a time-out, the time
 * it may next run and, while running, the instance that holds it and until when
 * (its lease). Runner threads (never the event loops) claim one due job at a time
 * in a write job (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so that many instances
 * take different jobs; SQLite: the single writer), run its handler outside any
 * transaction, and record the outcome only if they still hold the lease. A job
 * whose lease ran out (its instance died mid-job) is claimed again. A failure is
 * retried after an exponential back-off with jitter; after max_attempts the job
 * is dead (the dead letter), kept for a superuser to read.
 *
 * Cron schedules are registered by name; one scheduler thread per instance inserts
 * a job for each due tick with the unique key "cron:<id>:<tick>", so that a tick
 * runs exactly once across every instance sharing the database.
 *
 * Registration API (for other modules: mail, webhooks, backups...):
 *   jobs_register("backup.run", my_handler);                 before jobs_start
 *   jobs_cron_register("__basaltBackups__", "0 3 * * *", "backup.run", &err);
 *   jobs_enqueue(conn, "backup.run", payload, NULL, &err);    inside a write job
 * A handler runs on a runner thread with the job's payload; it returns 0 when done,
 * JOBS_RETRY (with ctx->error set) to be retried, JOBS_FAIL to go to the dead
 * letter at once. It must finish by ctx->deadline_ms (give network calls the
 * remaining time as their time-out): a handler that returns later counts as failed
 * ("timed out"), and one still running when its lease ends may be run again
 * elsewhere, so handlers are written to be safe to repeat (at-least-once).
 *
 * Threads: register before jobs_start (start-up thread); jobs_enqueue on the
 * writer thread inside a store job; jobs_wake, jobs_crons_json and the counters from
 * any thread; jobs_store_run from runner threads (a handler's own store jobs).
 */
#ifndef BASALT_JOBS_JOBS_H
#define BASALT_JOBS_JOBS_H

#include <jansson.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"
#include "store/store.h"

enum { JOBS_OK = 0, JOBS_RETRY = -1, JOBS_FAIL = -2 };

typedef struct {
    const char *id;        /* the job's id (borrowed) */
    const char *name;      /* its handler's name */
    const json_t *payload; /* borrowed for the call */
    int attempt;           /* 1 for the first run */
    int max_attempts;
    int64_t deadline_ms; /* wall clock: the handler must be done by then */
    store_t *store;      /* for the handler's own store jobs (jobs_store_run) */
    char error[512];     /* the handler's reason on failure (never a secret) */
} jobs_ctx_t;

typedef int (*jobs_handler_fn)(jobs_ctx_t *ctx);

typedef struct {
    int max_attempts;  /* < 1: the configured default */
    int timeout_ms;    /* < 1: the configured default */
    int64_t run_at_ms; /* 0: now */
    /* When not NULL, at most one job with this key exists (a second enqueue is a
     * no-op returning 0); reminders and cron ticks use it. */
    const char *unique_key;
    char *id_out; /* when not NULL: receives the new job's id (UTIL_ID_LEN + 1 bytes) */
} jobs_opts_t;

typedef struct {
    int threads;      /* runner threads; < 1: 2 */
    int poll_ms;      /* idle runners look for due jobs this often */
    int max_attempts; /* default per job */
    int timeout_ms;   /* default per job */
    int backoff_ms;   /* first retry delay; doubles each attempt */
    int backoff_max_ms;
    int lease_grace_ms;  /* a lease is the job's time-out plus this */
    int keep_done_hours; /* finished jobs are deleted after this */
    int test_handlers;   /* 1: register test.sleep and test.flaky (tests only) */
} jobs_config_t;

/* Registers handler fn under name (at most 64 names, each up to 63 characters).
 * Returns 0, or -1 when the table is full or the name taken. Start-up only. */
int jobs_register(const char *name, jobs_handler_fn fn);
/* Registers a cron schedule id (as listed by GET /api/crons) that enqueues a job
 * for handler at each tick of expr. Returns 0 or -1 with err (a bad expression,
 * an unknown handler, a full table). Start-up only. */
int jobs_cron_register(const char *id, const char *expr, const char *handler, bs_error_t *err);

/* Creates the tables (writer connection, at start-up: store_write_sync). */
int jobs_bootstrap(store_conn_t *conn, bs_error_t *err);
/* Starts the runner threads and the scheduler on s (its writer running).
 * Returns 0 or -1. */
int jobs_start(store_t *s, const jobs_config_t *cfg);
/* Graceful stop: no job is claimed any more; running handlers finish (each within
 * its time-out) and their outcome is recorded. Before store_stop_writer. Idempotent. */
void jobs_stop(void);

/* Queues a job inside the caller's write job (conn: the writer's connection), so
 * that it exists exactly when the caller's transaction commits. payload may be
 * NULL ({}). Returns 0 or -1 with err. */
int jobs_enqueue(store_conn_t *conn, const char *name, const json_t *payload, const jobs_opts_t *opts,
                 bs_error_t *err);
/* Deletes the ready job with this unique key (e.g. a reminder whose record went). */
int jobs_cancel_unique(store_conn_t *conn, const char *unique_key, bs_error_t *err);
/* Wakes idle runners (after a commit that queued jobs). Any thread. */
void jobs_wake(void);
/* Whether handler name is registered. */
int jobs_known(const char *name);
/* Whether jobs_stop has begun: a long handler checks it to end early. Any thread. */
int jobs_stopping(void);

/* Runs job (a write: store_submit) and waits for it; on runner threads only.
 * Returns job->status. */
int jobs_store_run(store_t *s, store_job_t *job);

/* The cron schedules, for GET /api/crons: appends [{"id","expression"}, ...]. */
void jobs_crons_json(buf_t *out);
/* The index of cron id, or -1 when there is none. */
int jobs_cron_index(const char *id);
/* Queues a run of cron idx now (POST /api/crons/{id}), inside the caller's write
 * job. Returns 0 or -1 with err. */
int jobs_cron_enqueue_now(store_conn_t *conn, int idx, bs_error_t *err);

/* Adds fn to what the scheduler runs every two seconds inside a write job (e.g.
 * rereading settings another instance changed). At most 8. Start-up only. */
int jobs_add_tick(void (*fn)(store_conn_t *conn));

/* Prometheus lines for the queue (states, oldest ready job, runs, failures). */
void jobs_metrics_write(buf_t *out, int64_t now_ms);

#endif
