/*
 * api — the HTTP handlers. routes.c holds the one table of every endpoint; each
 * resource has its file. Handlers run on a worker thread; writes go to the writer
 * as api_job_t and are answered when the job comes back.
 */
#ifndef BASALT_API_API_H
#define BASALT_API_API_H

#include "core/record.h"
#include "http/body.h"
#include "http/context.h"
#include "http/server.h"
#include "realtime/realtime.h"

typedef struct api_job api_job_t;
typedef void (*api_job_done_fn)(api_job_t *job, req_ctx_t *ctx);

struct api_job {
    store_job_t job; /* first */
    req_ctx_t *ctx;
    api_job_done_fn done;
    void *data; /* the handler's own state */
    /* A write's: the handler's committed hook, and the invalidation its commit queued
     * for the other instances (0: none), which the answer waits for (ADR 0015). */
    void (*committed)(store_job_t *job);
    uint64_t inval_seq;
};

/* Rate-limit classes of routes (api/limits.c). */
typedef enum { RL_EXEMPT, RL_DEFAULT, RL_AUTH, RL_ANON, RL_USER, RL_BURST, RL__COUNT } api_rl_class_t;
/* Sets ctx->client_ip from X-Forwarded-For when the peer is a trusted proxy.
 * Returns 0, or -1 after answering 400 when the entry that decides is not an
 * address. */
int api_client_address(req_ctx_t *ctx);
/* Applies the limits of cls; returns 0 (headers added) or -1 after sending 429. */
int api_rate_limit(req_ctx_t *ctx, api_rl_class_t cls);
uint64_t api_rate_limit_rejections(api_rl_class_t cls);
/* Applies the limits of cls, then calls next(ctx, arg) unless it answered 429. With
 * --redis the decision is Redis's and the request waits for it (never the loop);
 * next runs later then, and not at all if the client has gone. */
void api_rate_limit_then(req_ctx_t *ctx, api_rl_class_t cls, void (*next)(req_ctx_t *ctx, void *arg),
                         void *arg);

/* The longest a list's total may take to count (--count-budget-ms; 0: no limit):
 * past it the page is answered with totalItems and totalPages -1, as with skipTotal,
 * and the same count is not tried again until the cache's TTL. */
void api_set_count_budget(int ms);

/* Route entry point for the server; api_init registers the routes' metrics. */
void api_init(void);
void api_dispatch(req_ctx_t *ctx);
void api_metrics(req_ctx_t *ctx, char **params);

/* Submits run to the writer on behalf of ctx; done runs on ctx's worker after the
 * commit (or failure), only if the client is still there. Returns the job (its
 * creator may still set its events before the loop turn ends), or NULL after
 * answering 500. */
store_job_t *api_submit(req_ctx_t *ctx, int (*run)(store_job_t *, store_conn_t *),
                        void (*committed)(store_job_t *), api_job_done_fn done, void *data);

/* Runs run as a read job on behalf of ctx (store_read: inline on SQLite, on the read
 * pool on PostgreSQL); done runs on ctx's worker afterwards, always (it releases what
 * the job holds; what it sends goes nowhere once the client has gone). The job owns
 * ctx's arena meanwhile: run must not touch ctx, only data and the connection. */
void api_read(req_ctx_t *ctx, int (*run)(store_job_t *, store_conn_t *), api_job_done_fn done, void *data);
/* api_read for a read that may scan many rows (a list, statistics, an export): on
 * PostgreSQL it leaves a connection of the read pool to point reads (store_job_t.scan). */
void api_read_scan(req_ctx_t *ctx, int (*run)(store_job_t *, store_conn_t *), api_job_done_fn done,
                   void *data);
/* api_read (scan: api_read_scan) on store instead of the data store (the request log's
 * logs.db on SQLite). */
void api_read_on(req_ctx_t *ctx, store_t *store, int (*run)(store_job_t *, store_conn_t *),
                 api_job_done_fn done, void *data, int scan);

/* Helpers; each sends the error response itself and returns -1 / NULL. */
int api_require_superuser(req_ctx_t *ctx);
/* The collection named or NULL after answering 404. On a shared database (PostgreSQL)
 * a name this instance does not know is first looked up in the database, in a read
 * job: if another instance made it, the collections are reloaded and the route runs
 * again (ctx->rerun), and this call returns NULL without answering. */
const collection_t *api_collection(req_ctx_t *ctx, const char *id_or_name);
/* Calls next(ctx, arg) once the collections this instance serves include every change
 * another instance notified (at once when none is pending; else after reloading them
 * in a read job). ADR 0013. */
void api_schema_fresh_then(req_ctx_t *ctx, void (*next)(req_ctx_t *ctx, void *arg), void *arg);
/* Before refusing a request because of c's definition (a locked rule): on a shared
 * database, when this request has not reloaded yet, checks in a read job whether c
 * changed or went away on another instance, reloads if so and runs the route again.
 * Returns 1 when it did start (the caller returns without answering), else 0. */
int api_collection_recheck(req_ctx_t *ctx, const collection_t *c);
/* The WHERE of a list for ctx's caller: the ?filter= (a client's text, bounded) and
 * c's list rule (trusted), compiled through rc into where. Returns 0 or -1 with err
 * (the caller answers it). The locked-rule 403 is the caller's to decide first. */
int api_list_where(req_ctx_t *ctx, const collection_t *c, resolve_ctx_t *rc, buf_t *where, bs_error_t *err);
/* A superuser's request body: NULL after answering 401/403 or the body's error. */
json_t *api_superuser_body(req_ctx_t *ctx);
/* The requester as a reader, with no connection: a read job's run sets r.conn. */
record_reader_t api_reader(req_ctx_t *ctx);
/* Loads the requester's record from the Authorization header (a bad token leaves
 * the request anonymous and remembers why in ctx->auth_err), then calls next(ctx,
 * arg): at once, or after a read job when the record is neither memoised nor cached;
 * not at all when the client has gone meanwhile. */
typedef void (*api_auth_next_fn)(req_ctx_t *ctx, void *arg);
void api_authenticate(req_ctx_t *ctx, api_auth_next_fn next, void *arg);
/* After a committed write that changed only c's own records outside the record
 * writer (e.g. a new tokenKey): invalidates cached reads of c (writer thread). */
void api_bump_for_write(const schema_t *s, const collection_t *c);
/* After a record write committed: invalidates every collection it touched. */
void api_bump_written(const schema_t *s, const record_touched_t *t);
/* Whether v is a string holding a NUL byte: such a client value would be cut short
 * wherever it is used as a C string (a password hashed, an identity looked up), so
 * it is refused. */
int api_has_nul(const json_t *v);
/* Whether a write rule (create, update, delete, manage) of c reads @request.body. */
int api_rules_read_body(const collection_t *c);
/* Whether a rule's outcome depends only on the record and @request.auth.id. */
int api_rule_cacheable(const char *rule);
/* Appends a security event to the audit log, with the requester as actor. */
void api_audit(req_ctx_t *ctx, const char *action, const char *target, const char *detail);
/* Sends a 200 JSON body with a weak ETag, Cache-Control and Vary, or 304 when
 * If-None-Match names the same ETag. */
void api_send_cacheable(req_ctx_t *ctx, const char *body, size_t len);
/* Sends {"token","record"} for an auth record; duration_s <= 0 uses the
 * collection's token duration. */
void api_send_auth(req_ctx_t *ctx, const collection_t *c, const json_t *rec, int refreshable,
                   int64_t duration_s);

/* ---- file uploads (api/files_upload.c) ----
 * A write with files: api_files_prepare takes the request's file parts for one
 * record (those under prefix, "" for a plain request, "requests.N." in a batch),
 * checks them (maxSize, the sniffed type against mimeTypes), names them, and puts
 * their names into body as PocketBase merges them; api_files_store puts them in the
 * storage (on the file pool) and then calls next on the loop (err NULL on success;
 * on failure the stored ones are already being deleted); after the write,
 * api_files_finish deletes what the write left unreferenced (ok) or the uploads
 * (failure). All state lives in ctx's arena; the bytes are copied (malloc) and freed
 * once stored. */
typedef struct api_uploads api_uploads_t;
typedef void (*api_uploads_next_fn)(req_ctx_t *ctx, void *arg, const bs_error_t *err);
/* *up: NULL the first time (created in ctx's arena), then shared by the writes of one
 * request. record_id NULL for a create: the body's id, or a new one put into body.
 * *names (borrowed from *up): the stored names for record_write_t.uploads, NULL when
 * there were no files. Returns 0, or -1 with err (field errors in ctx's arena). */
int api_files_prepare(req_ctx_t *ctx, api_uploads_t **up, const collection_t *c, json_t *body,
                      const char *record_id, const body_file_t *files, const char *prefix,
                      const json_t **names, bs_error_t *err);
void api_files_store(req_ctx_t *ctx, api_uploads_t *u, api_uploads_next_fn next, void *arg);
/* Takes gone (may be NULL); u may be NULL. */
void api_files_finish(api_uploads_t *u, int ok, json_t *gone);
/* Parses a single "bytes=a-b" / "bytes=a-" / "bytes=-n" Range (h may be NULL) against
 * total bytes: 1 with [*from, *to] inclusive, 0 to ignore it (answer 200), -1 when it
 * cannot be satisfied (416). Pure; any thread. The files module's and the backups'. */
int api_parse_byte_range(const char *h, int64_t total, int64_t *from, int64_t *to);
/* A new array for record_write_t.files_gone when the write may leave files behind. */
json_t *api_files_gone_new(const api_uploads_t *u, const collection_t *c, int deleting);

/* handlers: params[] are the route's :placeholders in order */
void api_files_download(req_ctx_t *ctx, char **params);
void api_files_token(req_ctx_t *ctx, char **params);
void api_health(req_ctx_t *ctx, char **params);
void api_ready(req_ctx_t *ctx, char **params);
void api_collections_list(req_ctx_t *ctx, char **params);
void api_collections_view(req_ctx_t *ctx, char **params);
void api_collections_create(req_ctx_t *ctx, char **params);
void api_collections_update(req_ctx_t *ctx, char **params);
void api_collections_delete(req_ctx_t *ctx, char **params);
void api_collections_import(req_ctx_t *ctx, char **params);
void api_collections_dry_run_view(req_ctx_t *ctx, char **params);
void api_records_list(req_ctx_t *ctx, char **params);
void api_collection_stats(req_ctx_t *ctx, char **params);
void api_records_view(req_ctx_t *ctx, char **params);
void api_records_create(req_ctx_t *ctx, char **params);
void api_records_update(req_ctx_t *ctx, char **params);
void api_records_delete(req_ctx_t *ctx, char **params);
void api_auth_with_password(req_ctx_t *ctx, char **params);
void api_auth_refresh(req_ctx_t *ctx, char **params);
void api_auth_methods(req_ctx_t *ctx, char **params);
void api_request_verification(req_ctx_t *ctx, char **params);
void api_confirm_verification(req_ctx_t *ctx, char **params);
void api_request_password_reset(req_ctx_t *ctx, char **params);
void api_confirm_password_reset(req_ctx_t *ctx, char **params);
void api_request_email_change(req_ctx_t *ctx, char **params);
void api_confirm_email_change(req_ctx_t *ctx, char **params);
void api_request_otp(req_ctx_t *ctx, char **params);
void api_auth_with_otp(req_ctx_t *ctx, char **params);
void api_crons_list(req_ctx_t *ctx, char **params);
void api_crons_run(req_ctx_t *ctx, char **params);
void api_settings_get(req_ctx_t *ctx, char **params);
void api_settings_patch(req_ctx_t *ctx, char **params);
void api_settings_test_email(req_ctx_t *ctx, char **params);
void api_jobs_list(req_ctx_t *ctx, char **params);
void api_jobs_create(req_ctx_t *ctx, char **params);
void api_jobs_view(req_ctx_t *ctx, char **params);
void api_webhook_deliveries(req_ctx_t *ctx, char **params);

/* Mail flows' limits and webhooks' reach, from the flags (api/authmail.c,
 * webhooks/): registers their job handlers. Start-up, before jobs_start. */
typedef struct {
    int mail_rate_limit, mail_rate_limit_ip, mail_rate_period_ms;
    const char *webhook_allow_hosts;
    int webhook_timeout_ms;
} api_jobs_config_t;
int api_jobs_init(const api_jobs_config_t *c);
void api_batch(req_ctx_t *ctx, char **params);
void api_impersonate(req_ctx_t *ctx, char **params);
void api_revoke_tokens(req_ctx_t *ctx, char **params);
void api_realtime_sse(req_ctx_t *ctx, char **params);
void api_realtime_subscribe(req_ctx_t *ctx, char **params);
void api_realtime_ws(req_ctx_t *ctx, char **params);
void api_user_export(req_ctx_t *ctx, char **params);
void api_user_erase(req_ctx_t *ctx, char **params);
/* The retention purger's thread (api/privacy.c): every interval_s, deletes records
 * past their collection's retention through writer jobs. Returns 0 or -1. */
int api_retention_start(store_t *store, int interval_s);
/* Stops and joins it (its batch in flight finishes); idempotent. */
void api_retention_stop(void);
/* The backups API (api/backups.c, api/backups_transfer.c); its downloads take the file
 * tokens of api/files.c. */
void api_backups_list(req_ctx_t *ctx, char **params);
void api_backups_create(req_ctx_t *ctx, char **params);
void api_backups_upload(req_ctx_t *ctx, char **params);
void api_backups_download(req_ctx_t *ctx, char **params);
void api_backups_restore(req_ctx_t *ctx, char **params);
void api_backups_delete(req_ctx_t *ctx, char **params);
/* The data folder the backups live in (DIR/backups) and whether the store is the
 * embedded one; set once at start-up. */
void api_backups_configure(const char *data_dir, int sqlite);
/* Waits until no backup operation's thread is running (main, before the server
 * stops: their answers go to the workers' mailboxes). */
void api_backups_drain(void);
/* 1 after a restore through the API: main executes itself again after shutting down. */
int api_backups_restart_requested(void);
/* The workers' life events (server's worker_hook): frees a worker's verified-token
 * memo at its end, and passes every event on to the realtime layer. */
void api_worker_event(struct worker *w, int event);
/* What a worker still waits for at the drain: realtime clients and request log flushes. */
size_t api_worker_busy(struct worker *w);
/* Checks an auth token (the Authorization header's, or a WebSocket "auth" message's)
 * on worker w, in schema s (which the caller keeps referenced until cb ran), and calls
 * cb(arg, result) once on w: at once when the token is memoised or its record cached,
 * else after a read job. The token's bytes are copied. */
void api_check_token(struct worker *w, schema_t *s, const char *token, size_t len, api_token_cb cb,
                     void *arg);
/* A new changes array for a write job when realtime clients listen, else NULL. */
json_t *api_changes_new(void);
/* Publishes a committed job's changes (writer thread; takes them). */
void api_changes_publish(json_t **changes);

#endif
