/*
 * logs — the request log (PocketBase's GET /api/logs, /api/logs/{id}, /api/logs/stats).
 *
 * Every answered request (but GET /metrics and /api/health, which probes and the
 * dashboard poll) becomes one row of the `_logs` table. Nothing is written on the
 * request path: logs_note copies the request's facts into a fixed-size ring of the
 * worker (RING entries; when the writer falls behind, the oldest are dropped and
 * counted), and logs_tick, at the end of a loop turn, hands the ring's entries to the
 * writer as one job once a second or when FLUSH_AT have gathered. The writer inserts
 * them in its group commit and, at most once a minute, deletes rows older than
 * --logs-max-days and past --logs-max-rows. The table is the same on both backends
 * (text and integer columns; `created` is the sortable UTC text of util_format_time).
 */
#ifndef BASALT_API_LOGS_H
#define BASALT_API_LOGS_H

#include <stdint.h>

#include "http/context.h"

/* Settings; max_days 0 turns the request log off. Main thread, before the workers. */
void logs_configure(int max_days, int64_t max_rows);
/* The log's table and index (writer connection at start-up, both backends). */
int logs_bootstrap(store_conn_t *conn, bs_error_t *err);
/* Builds the filterable description of the table against schema s (main thread). */
int logs_init(const schema_t *s);
/* Deletes the log entries of record_id's requests and of every path naming it (an
 * erased user's): inside a write job. logs_forget_later queues the same for a few
 * seconds later (entries still in a worker's ring then); the "logs.forget" handler
 * is registered by logs_register_jobs, before jobs_start. */
int logs_forget(store_conn_t *conn, const char *record_id, bs_error_t *err);
int logs_forget_later(store_conn_t *conn, const char *record_id, bs_error_t *err);
int logs_register_jobs(void);
void logs_shutdown(void);
/* A response was sent (http_settings_t.on_response). Worker thread. */
void logs_note(req_ctx_t *ctx);
/* A worker's life event (SERVER_WORKER_*): at the end of a loop turn the ring goes to
 * the writer when due, at the drain whatever is left, at the end it is freed. */
void logs_tick(struct worker *w, int event);
/* Flush jobs of the calling worker still at the writer (the drain waits for them). */
size_t logs_pending(void);
/* Entries dropped because the ring was full (for /metrics). */
uint64_t logs_dropped(void);

/* A client's filter with PocketBase's "data." prefix taken off the names outside
 * string literals, in a (NULL when out of memory). Pure; fuzzed. */
char *logs_strip_data_prefix(arena_t *a, const char *filter);

void api_logs_list(req_ctx_t *ctx, char **params);
void api_logs_view(req_ctx_t *ctx, char **params);
void api_logs_stats(req_ctx_t *ctx, char **params);

#endif
