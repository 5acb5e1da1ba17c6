/*
 * store — the interface between core/ and a database backend.
 *
 * Reads are jobs too (ADR 0004): a worker packs a request's read work into a
 * store_job_t and hands it to store_read. On SQLite the job runs at once, inline, on
 * the worker's own reader connection (store_reader), and its completion is called
 * before store_read returns: no thread hop, no copy. On PostgreSQL the jobs of one
 * loop turn are handed to a pool of read threads together (store_read_flush, one lock
 * and one wake-up), each thread owning one connection, and the completions come back
 * through the job's mailbox, so a worker's loop never waits on the network. Writes never run on a worker: a
 * caller packs its work into a store_job_t and submits it; the single writer thread runs many jobs in one
 * transaction (group commit), each in its own savepoint so one job's failure rolls back only that job,
 * commits once, and only after the commit is durable posts every job back to the mailbox it came from. A job
 * that failed, or whose batch could not commit, comes back with status -1 and err filled; its changes are not
 * in the database.
 *
 * Statements are prepared once per connection and cached by their SQL text.
 * Threads: a reader connection is used only by the thread that owns it; the writer
 * connection only by the writer thread (or by the caller of store_write_sync
 * before the writer starts / after it stops).
 */
#ifndef BASALT_STORE_STORE_H
#define BASALT_STORE_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "base/mailbox.h"
#include "base/value.h"
#include "rules/rules.h"

typedef struct store store_t;
typedef struct store_conn store_conn_t;
typedef struct store_stmt store_stmt_t;

typedef struct {
    const char *path;     /* SQLite: the database file; PostgreSQL: a postgres:// URL */
    int readers;          /* number of reader connections (one per worker) */
    int synchronous_full; /* 1: fsync every commit (power-safe); 0: WAL NORMAL (crash-safe) */
    int max_batch;        /* jobs per group commit */
    int busy_timeout_ms;
    /* PostgreSQL only. */
    int connect_timeout_ms;   /* per connection attempt (libpq rounds up to whole seconds, at least 2) */
    int statement_timeout_ms; /* per write transaction; 0: none */
    int ddl_timeout_ms;       /* per script (store_exec_script: DDL) on the writer; 0: none */
    int prepared_statements;  /* 1: named prepared statements (direct connections); 0: unnamed
                               * statements, no session state (PgBouncer transaction mode) */
    const char *listen_url;   /* a direct (session) connection for LISTEN; NULL: path */
    const char *writer_url;   /* a direct (session) connection for the writer; NULL or "": path */
    int pool_size;            /* read threads, each with its own connection; < 1: 4 */
    const char *replicas;     /* read replicas, comma-separated URLs; NULL or "": none */
    int replica_max_lag_ms;   /* a replica further behind leaves the rotation */
    int replica_wait_ms;      /* a read-your-writes read waits this long for a replica */
    /* Called within about a second when another process has committed (SQLite: on
     * the writer thread, to the file; PostgreSQL: on its listener thread, as soon as
     * the NOTIFY arrives). */
    void (*on_external_change)(void);
    /* Optional; any thread, as soon as it is known: another instance committed a change
     * of the collections (PostgreSQL: NOTIFY basalt_schema, ADR 0013), or none can be
     * ruled out (the notifications' connection was lost). */
    void (*on_schema_change)(void);
    /* SQLite only, for continuous backup (src/backup/backup.h); all NULL: none. When
     * wal_commit is set the writer connection reports each commit (with the number of
     * frames in the WAL after it) and never checkpoints by itself: at its ticks it
     * asks wal_checkpoint_due and, when told to, runs a passive checkpoint and reports
     * SQLite's result codes and frame counts. All three run on the writer thread. */
    void *wal_ctx;
    void (*wal_commit)(void *ctx, int nframes);
    int (*wal_checkpoint_due)(void *ctx);
    void (*wal_checkpointed)(void *ctx, int rc, int nlog, int nckpt);
} store_config_t;

typedef struct store_job {
    mailbox_msg_t msg; /* first: delivered back to reply_to with msg.deliver */
    mailbox_t *reply_to;
    /* A write: runs on the writer thread inside a savepoint; returns 0 to keep its
     * changes or -1 (with job->err filled) to roll them back. A read (store_read):
     * runs on the worker's reader (SQLite) or a pool thread (PostgreSQL) and returns
     * 0 or -1 with job->err; it must not touch loop-owned state (h2o objects, the
     * request context other than what its creator handed to it). */
    int (*run)(struct store_job *job, store_conn_t *conn);
    /* Optional; runs on the writer thread after the batch committed durably, before
     * the reply is posted (e.g. to publish a new schema snapshot). */
    void (*committed)(struct store_job *job);
    int status; /* 0 ok, -1 failed */
    bs_error_t err;
    arena_t *arena; /* for err's field list; owned by the job's creator */
    struct store_job *next_in_queue;
    /* Read replicas (PostgreSQL): a read must see the commit at this WAL position
     * (0: any replica will do; store_read sets 0, store_read_after sets it); a write
     * comes back with the position of its commit here (0 when unknown or SQLite). */
    uint64_t min_lsn;
    uint64_t commit_lsn;
    /* A write's record changes for realtime (a JSON array of {action, collectionId,
     * record}, borrowed from the job's creator; NULL: none). With the outbox open
     * (store_outbox_open), the backend writes them to `_events` inside the job's
     * transaction once run succeeded, numbering them ("offset", "time" are set on
     * each change), and after the commit hands them to the outbox's sink in order. */
    json_t *events;
    /* 1: the server's own upkeep (the job queue's claims and polls, src/jobs/), counted
     * apart from the writes requests make (basalt_store_background_jobs_total), so
     * that an idle server's polling does not show as write load. */
    int background;
    /* 1: a job handed to store_run_pooled must run on the primary, never on a read
     * replica (it writes). */
    int primary;
    /* 1: changes only tables no instance caches and no subscriber reads (the request
     * log): on PostgreSQL its commit sends no NOTIFY, so other instances keep their
     * caches (ADR 0014). */
    int unshared;
    /* 1: a read that may scan many rows (a list, statistics, an export, upkeep). A
     * backend with a read pool runs at most pool_size - 1 of them at once, so that
     * point reads (a token's record, a record by id, a write's rule check) always find
     * a connection however slow the scans are. */
    int scan;
    /* 1: a write that usually sends one statement (a record's create). The PostgreSQL
     * writer sends the statements of consecutive such jobs of a group commit in one
     * pipeline (ADR 0021), each job run until its first statement as a coroutine; the
     * outcome is the same as running them one after another. Its run is called once
     * and must not run a script (store_exec_script fails there). */
    int pipelinable;
    uint64_t queued_seq; /* the read pool's order of arrival (set by the backend) */
} store_job_t;

typedef struct {
    uint64_t commits, jobs, failed_commits;
    uint64_t commit_ns_total;
    uint64_t max_batch_seen;
    /* PostgreSQL: the writer connection's round trips so far (a pipeline of several
     * statements counts once); 0 on SQLite, where a statement is a function call. */
    uint64_t round_trips;
} store_stats_t;

/* Opens (creating if needed) the database; returns NULL and fills err on failure.
 * cfg->path chooses the backend: a postgres:// or postgresql:// URL is PostgreSQL,
 * anything else a SQLite file. */
store_t *store_open(const store_config_t *cfg, bs_error_t *err);
/* 1 when location is a PostgreSQL URL. */
int store_is_url(const char *location);
/* "sqlite" or "postgres". */
const char *store_backend_name(const store_t *s);
/* Starts the writer thread. Returns 0 or -1. */
int store_start_writer(store_t *s, bs_error_t *err);
/* Finishes every queued job, stops the writer thread. Idempotent. */
void store_stop_writer(store_t *s);
void store_close(store_t *s);
rules_dialect_t store_dialect(const store_t *s);
/* The dialect conn speaks (that of its store). */
rules_dialect_t store_conn_dialect(const store_conn_t *c);
store_conn_t *store_reader(store_t *s, int idx);
/* Queues job for the writer; takes the job until it is posted back. */
void store_submit(store_t *s, store_job_t *job);

/* A thread's jobs held back to be submitted together: a worker collects the writes of
 * one event-loop turn and hands them over with one lock and one wake-up, so they share
 * a commit instead of waking the writer once each. Owned by one thread. */
typedef struct {
    store_job_t *head, **tail;
    size_t n;
} store_queue_t;

void store_queue_init(store_queue_t *q);
/* Holds job back; it goes to the writer with the next store_submit_queue. */
void store_queue_add(store_queue_t *q, store_job_t *job);
/* Submits every held job in order (one lock, one wake-up) and empties q. */
void store_submit_queue(store_t *s, store_queue_t *q);
/* Runs a read job for worker worker_idx (the calling worker thread), which owns the
 * job until its msg.deliver runs on that worker (job->reply_to must be its mailbox).
 * SQLite: run executes on the worker's reader connection and msg.deliver is called
 * before store_read returns. Backends with a read pool: the job is held until
 * store_read_flush, then runs on a pool thread and is posted back to reply_to. Either
 * way deliver runs exactly once, on the worker, with job->status and job->err set. */
void store_read(store_t *s, int worker_idx, store_job_t *job);
/* store_read for a caller who must see its own commit at min_lsn: on PostgreSQL with
 * read replicas the job goes to a replica that has replayed it, waiting up to
 * replica_wait_ms, else to the primary. */
void store_read_after(store_t *s, int worker_idx, store_job_t *job, uint64_t min_lsn);
/* 1 when the store has read replicas (callers then track commit positions). */
int store_has_replicas(const store_t *s);
/* Read replica i's state: 0 and up (in the rotation) and lag_ms (-1 unknown) while
 * i < their number, -1 after. */
int store_replica_state(store_t *s, size_t i, int *up, int64_t *lag_ms);
/* Hands the reads held for worker_idx to the pool (one lock, one wake-up); the worker
 * calls it at the end of each loop turn. Nothing to do on SQLite. */
void store_read_flush(store_t *s, int worker_idx);
/* 1 when store_read runs jobs inline (SQLite): callers may then take a synchronous
 * path (store_reader) and skip the job's bookkeeping. */
int store_reads_inline(const store_t *s);
/* Hands job to the backend's pool of connections outside the single writer
 * (PostgreSQL's read pool; job->primary keeps it off the replicas), where each
 * statement commits on its own: for short writes that many threads and instances
 * may run at once and that must not queue behind the request writes (the job
 * queue's claims, taken with FOR UPDATE SKIP LOCKED). The job is posted back to
 * job->reply_to as a write is. Returns 0, or -1 at once (nothing submitted) when the
 * backend has no such pool (SQLite: the caller submits to the writer instead). */
int store_run_pooled(store_t *s, store_job_t *job);
/* Runs job on the calling thread in its own transaction; only while the writer
 * thread is not running (start-up, CLI). Returns job->status. */
int store_write_sync(store_t *s, store_job_t *job);
/* Health probe: a trivial read on conn (inside a read job). Returns 0 when reachable. */
int store_ping(store_conn_t *conn);
void store_get_stats(store_t *s, store_stats_t *out);

/* ---- The realtime outbox (store/outbox.c, ADR 0006) ----
 * Every write job's changes are inserted into `_events` in the job's own
 * transaction, numbered from a one-row counter that the transaction updates (its
 * row lock orders the committers of every instance, so offsets are given in commit
 * order and none is skipped). The writer thread hands the events to the sink in
 * offset order, without gaps or repeats: its own after their commit, other
 * instances' read back from the table (after a NOTIFY on PostgreSQL, a change of
 * the file on SQLite, and at least once a second), and prunes the table by age and
 * count. */
typedef struct {
    int64_t window_ms;  /* events older than this are pruned */
    int64_t max_events; /* and at most this many are kept */
    /* Writer thread (or store_outbox_open's caller): changes (a JSON array as in
     * store_job_t.events, each with "offset" and "time"; the sink takes the reference)
     * in offset order. history: 1 for the events loaded at start-up (to replay to
     * resuming clients, not to deliver live), only those within window_ms, and each
     * with its record as the row's JSON text ("recordText") and the record's id
     * ("recordId") instead of "record": held as text until a client resumes. */
    void (*sink)(json_t *changes, int history);
    /* store_outbox_open's caller, before and after the history: the epoch, and that
     * every offset up to upto was handed over or is no longer held. */
    void (*position)(uint32_t epoch, uint64_t upto);
    /* Optional; writer thread, at every tick: external is 1 when another process
     * committed since the last one (the realtime client registry's turn). */
    void (*tick)(store_conn_t *writer, int external);
} store_outbox_config_t;

/* Creates the tables if needed, reads the epoch and hands the retained events to
 * the sink as history. Before store_start_writer. Returns 0, or -1 with err. */
int store_outbox_open(store_t *s, const store_outbox_config_t *cfg, uint32_t *epoch, bs_error_t *err);
/* 1 when store_outbox_open succeeded: write jobs' events go through the outbox. */
int store_outbox_enabled(const store_t *s);
/* Highest offset an event id may hold (its bits above are the epoch). */
#define STORE_OUTBOX_OFFSET_BITS 44

/* Prepares (or takes from the cache) sql and binds params; the statement is valid
 * until store_done(). Returns NULL with err filled on failure. */
store_stmt_t *store_query(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                          bs_error_t *err);
/* Steps to the next row: 1 row ready, 0 done, -1 error (err filled). */
int store_step(store_stmt_t *st, bs_error_t *err);
int store_ncols(store_stmt_t *st);
const char *store_col_name(store_stmt_t *st, int i);
/* The cell; text is valid until the next store_step/store_done. */
bs_value_t store_col(store_stmt_t *st, int i);
/* Releases the statement back to the cache (or finalizes an uncached one). */
void store_done(store_stmt_t *st);
/* Runs sql to completion; returns rows changed, or -1 with err filled. */
int64_t store_exec(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                   bs_error_t *err);
/* The result of a statement run by store_exec_later: done may read st's rows with
 * store_step and store_col (never store_done); it returns 0, or -1 with err filled to
 * fail the write. */
typedef int (*store_later_fn)(void *arg, store_stmt_t *st, bs_error_t *err);
/* Runs sql in the writer's open transaction when its result is not needed at once
 * (ADR 0017): on PostgreSQL it goes out with the transaction's next statement, in
 * the same round trip (pipeline mode), or on its own before the COMMIT; done runs on
 * this thread before the transaction commits, and a failure fails the whole
 * transaction (its err, which must live until the commit: the job's, is filled).
 * Elsewhere (SQLite, a reader, outside a transaction) it runs at once. Returns 0, or
 * -1 with err (done not called). */
int store_exec_later(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                     store_later_fn done, void *arg, bs_error_t *err);
/* Bounds the statements that run next on c, until store_set_budget(c, 0): past
 * budget_ms from this call one stops with err->code BS_ERR_TIMEOUT (the store's
 * message says so), and c stays usable for the statements after it. For reads whose
 * answer may do without them (a list's total). */
void store_set_budget(store_conn_t *c, int budget_ms);
/* Runs several ;-separated statements without parameters (DDL). */
int store_exec_script(store_conn_t *c, const char *sql, bs_error_t *err);
/* Ends a reader's snapshot (its open read transaction) so that the WAL can be
 * checkpointed past it; the owner calls it when its loop goes idle. The next query
 * starts a fresh snapshot. */
void store_reader_release(store_conn_t *c);
/* Drops every cached statement (after schema changes). */
void store_clear_cache(store_conn_t *c);
/* Process-wide generation of the collections' definitions: schema_publish bumps it
 * whenever a new snapshot is published (this instance's own DDL, or another
 * instance's change reloaded). A connection that caches prepared statements compares
 * it before its next job and drops them when it moved: PostgreSQL refuses a prepared
 * `SELECT *` whose table gained or lost a column, and the writer cannot retry inside
 * its transaction, so it must not meet one (ADR 0013). */
void store_definitions_changed(void);
uint64_t store_definitions_gen(void);

#endif
