/*
 * logs — the request log (PocketBase's GET /api/logs, /api/logs/{id}, /api/logs/stats).
 *
 * Every answered request (but GET /metrics and /api/health, which probes and the
 * dashboard poll) becomes one row of the `_logs` table. Nothing is written on the
 * request path: logs_note copies the request's facts into a fixed-size ring of the
 * worker (RING entries; when the writer falls behind, the oldest are dropped and
 * counted), and logs_tick, at the end of a loop turn, hands the ring's entries to the
 * store once a second or when FLUSH_AT have gathered, and at most once a minute rows
 * older than --logs-max-days and past --logs-max-rows are deleted. Where the table lives
 * differs (ADR 0019): on SQLite in logs.db, a database file of its own in the data
 * folder, written by one logs thread and read through its own reader connections, so
 * that the log never touches the data file's WAL; on PostgreSQL in the data store,
 * inserted by the writer in its group commit. The table is the same on both (text and
 * integer columns; `created` is the sortable UTC text of util_format_time).
 */
#ifndef BASALT_API_LOGS_H
#define BASALT_API_LOGS_H

#include <stdint.h>

#include "http/context.h"

/* Settings; max_days 0 turns the request log off. Main thread, before the workers. */
void logs_configure(int max_days, int64_t max_rows);
/* The data folder, where logs.db is (main thread, before logs_open_file or a command
 * that may erase a user). */
void logs_set_dir(const char *dir);
/* The log's table and index in the data store (writer connection at start-up):
 * PostgreSQL's; nothing on SQLite. */
int logs_bootstrap(store_conn_t *conn, bs_error_t *err);
/* SQLite (nothing on PostgreSQL): opens logs.db (creating it) with readers reader
 * connections, moves the rows of the data file's _logs from before into it (then drops
 * that table) and starts the logs thread. Main thread, before the workers and before
 * data's writer thread starts. 0 or -1 with err. */
int logs_open_file(store_t *data, int readers, bs_error_t *err);
/* Builds the filterable description of the table against schema s (main thread). */
int logs_init(const schema_t *s);
/* Deletes the log entries of record_id's requests and of every path naming it (an
 * erased user's): inside a write job. logs_forget_later queues the same for a few
 * seconds later (entries still in a worker's ring then); the "logs.forget" handler
 * is registered by logs_register_jobs, before jobs_start. */
int logs_forget(store_conn_t *conn, const char *record_id, bs_error_t *err);
int logs_forget_later(store_conn_t *conn, const char *record_id, bs_error_t *err);
int logs_register_jobs(void);
/* Stores what the workers handed over, stops the logs thread, closes logs.db (after the
 * workers ended). */
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

/* An entry's id (UTIL_ID_LEN characters of [a-z0-9] and a NUL, out has 16 bytes), as
 * PocketBase's: its first LOGS_ID_TIME_CHARS are created_ms in base 36 (36^9 ms is past
 * the year 5000), the rest random, so ids sort in about the order entries come. Pure. */
#define LOGS_ID_TIME_CHARS 9
void logs_make_id(int64_t created_ms, char *out);

/* A client's filter with PocketBase's "data." prefix taken off the names outside
 * string literals, in a (NULL when out of memory). Pure; fuzzed. */
char *logs_strip_data_prefix(arena_t *a, const char *filter);

void api_logs_list(req_ctx_t *ctx, char **params);
void api_logs_view(req_ctx_t *ctx, char **params);
void api_logs_stats(req_ctx_t *ctx, char **params);

#endif
