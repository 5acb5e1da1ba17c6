/*
 * metrics — counters, histograms and a distinct-count sketch for Prometheus.
 *
 * Every metric is a plain struct of 64-bit counters updated with relaxed atomic
 * adds, so any thread may record without locks; a scrape reads them without
 * stopping anyone (a scrape may see a histogram one observation ahead of its
 * count, which Prometheus tolerates). The metrics Basalt exposes are declared
 * here, in one place; metrics_write() renders them in the text exposition format.
 */
#ifndef BASALT_METRICS_METRICS_H
#define BASALT_METRICS_METRICS_H

#include <stdint.h>

#include "base/buf.h"

#define METRICS_BUCKETS 13
#define METRICS_MAX_ROUTES 64
#define METRICS_STATUS_SLOTS 18

typedef struct {
    uint64_t counts[METRICS_BUCKETS + 1]; /* last: +Inf */
    uint64_t sum_ns;
} metrics_hist_t;

/* Adds one observation of a duration in nanoseconds (buckets 100 us .. 10 s). */
void metrics_hist_observe(metrics_hist_t *h, uint64_t ns);
/* Adds one observation of a count (buckets 1 .. 65536), e.g. a batch size. */
void metrics_hist_observe_value(metrics_hist_t *h, uint64_t v);
void metrics_add(uint64_t *counter, uint64_t n);

/* Per-route HTTP metrics; route index METRICS_MAX_ROUTES - 1 is "unmatched". */
void metrics_route_name(int idx, const char *method, const char *pattern);
void metrics_http_observe(int route, int status, uint64_t duration_ns, uint64_t bytes_in, uint64_t bytes_out);

/* Distinct active users over the last five minutes (linear counting over one
 * bitmap a minute; about 1% error up to a few thousand users, bounded memory). */
void metrics_active_user(const char *id, int64_t now_ms);
uint64_t metrics_active_users(int64_t now_ms);

/* Named counters and histograms recorded by the other layers. */
typedef struct {
    uint64_t logins_ok, logins_failed;
    uint64_t store_commits, store_failed_commits, store_jobs;
    uint64_t store_submitted;       /* queued jobs ever; minus store_jobs = queue depth */
    uint64_t store_background_jobs; /* the server's own upkeep (store_job_t.background) */
    uint64_t store_round_trips;     /* PostgreSQL: the writer connection's round trips */
    /* Lists answered without a total: counted past the budget, or known to be too slow
     * to count (the verdict cached). */
    uint64_t list_counts_over_budget, list_counts_skipped;
    /* Searches whose page was read along the sort's index (SQLite, many matches). */
    uint64_t list_search_scans;
    /* SQLite: WAL checkpoints, by the checkpoint thread and by the writer (the few pages
     * after the thread's, or a log past its hard size). */
    uint64_t store_ckpt_thread, store_ckpt_writer;
    metrics_hist_t store_query;  /* reader statement time */
    metrics_hist_t store_commit; /* writer transaction time */
    metrics_hist_t store_batch;  /* jobs per commit (values, not ns) */
    /* realtime */
    uint64_t rt_published, rt_deliveries, rt_resumes, rt_resyncs;
    uint64_t rt_closed_slow, rt_closed_idle, rt_refused, rt_rate_limited;
    metrics_hist_t rt_latency; /* commit to queued on the subscriber's connection */
} metrics_global_t;

extern metrics_global_t metrics_g;

/* Sources of gauges known only to upper layers, set once at start-up. */
typedef struct {
    uint64_t (*inflight)(void);
    uint64_t (*connections)(void);
    uint64_t (*rate_limited)(int cls, const char **name); /* cls 0..; NULL name ends */
    /* hits, misses, evictions, bytes, entries */
    void (*cache)(uint64_t out[5]);
    /* SSE connections, WebSocket connections, subscriptions, events held */
    void (*realtime)(uint64_t out[4]);
    /* Read replica i: 0 and its state while i < their number, -1 after. */
    int (*db_replica)(size_t i, int *in_rotation, int64_t *lag_ms);
    /* Request log entries dropped because a worker's ring was full (api/logs.c). */
    uint64_t (*logs_dropped)(void);
    /* Appends whole metric families of its own (the job queue's), or NULL. */
    void (*extra)(buf_t *out, int64_t now_ms);
} metrics_sources_t;
void metrics_set_sources(const metrics_sources_t *src);

/* Registers a function that appends a module's own metrics at the end of every
 * scrape (any thread may scrape: it must read atomics only); at most 8, at start-up. */
void metrics_add_writer(void (*fn)(buf_t *out));

/* Appends every metric in the Prometheus text format (version 0.0.4). */
void metrics_write(buf_t *out, int64_t now_ms);

#endif
