/*
 * The one table of every endpoint Basalt serves, and the dispatcher that matches
 * a request against it. Middleware that every request passes (request id, access
 * log: http/context.c; authentication: here) runs before the handler.
 */
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "api/logs.h"
#include "api/routes.h"
#include "base/log.h"
#include "cache/cache.h"
#include "http/reqcheck.h"
#include "http/static.h"
#include "jobs/jobs.h"
#include "metrics/metrics.h"
#include "realtime/realtime.h"

typedef void (*handler_fn)(req_ctx_t *ctx, char **params);

static const struct route {
    const char *method;
    const char *pattern; /* ":name" segments are parameters */
    handler_fn fn;
    api_rl_class_t limit; /* rate-limit class (api/limits.c) */
} routes[] = {
    {"GET", "/metrics", api_metrics, RL_EXEMPT},
    {"GET", "/api/health", api_health, RL_EXEMPT},
    {"HEAD", "/api/health", api_health, RL_EXEMPT},
    {"GET", "/api/basalt/ready", api_ready, RL_EXEMPT},
    {"GET", "/api/collections", api_collections_list, RL_DEFAULT},
    {"POST", "/api/collections", api_collections_create, RL_DEFAULT},
    {"PUT", "/api/collections/import", api_collections_import, RL_DEFAULT},
    {"GET", "/api/collections/:c", api_collections_view, RL_DEFAULT},
    {"PATCH", "/api/collections/:c", api_collections_update, RL_DEFAULT},
    {"DELETE", "/api/collections/:c", api_collections_delete, RL_DEFAULT},
    {"GET", "/api/collections/:c/records", api_records_list, RL_DEFAULT},
    {"POST", "/api/collections/:c/records", api_records_create, RL_DEFAULT},
    {"GET", "/api/collections/:c/records/:id", api_records_view, RL_DEFAULT},
    {"PATCH", "/api/collections/:c/records/:id", api_records_update, RL_DEFAULT},
    {"DELETE", "/api/collections/:c/records/:id", api_records_delete, RL_DEFAULT},
    {"POST", "/api/batch", api_batch, RL_DEFAULT},
    {"GET", "/api/logs", api_logs_list, RL_DEFAULT},
    {"GET", "/api/logs/stats", api_logs_stats, RL_DEFAULT},
    {"GET", "/api/logs/:id", api_logs_view, RL_DEFAULT},
    {"GET", "/api/basalt/collections/:c/stats", api_collection_stats, RL_DEFAULT},
    {"POST", "/api/basalt/collections/dry-run-view", api_collections_dry_run_view, RL_DEFAULT},
    {"GET", "/api/realtime", api_realtime_sse, RL_DEFAULT},
    {"POST", "/api/realtime", api_realtime_subscribe, RL_DEFAULT},
    {"GET", "/api/realtime/ws", api_realtime_ws, RL_DEFAULT},
    {"POST", "/api/basalt/collections/:c/revoke-tokens/:id", api_revoke_tokens, RL_DEFAULT},
    {"GET", "/api/basalt/users/:c/:id/export", api_user_export, RL_AUTH},
    {"DELETE", "/api/basalt/users/:c/:id/erase", api_user_erase, RL_AUTH},
    {"POST", "/api/collections/:c/auth-with-password", api_auth_with_password, RL_AUTH},
    {"POST", "/api/collections/:c/auth-refresh", api_auth_refresh, RL_DEFAULT},
    {"POST", "/api/collections/:c/impersonate/:id", api_impersonate, RL_DEFAULT},
    {"GET", "/api/collections/:c/auth-methods", api_auth_methods, RL_DEFAULT},
    {"POST", "/api/collections/:c/request-verification", api_request_verification, RL_AUTH},
    {"POST", "/api/collections/:c/confirm-verification", api_confirm_verification, RL_AUTH},
    {"POST", "/api/collections/:c/request-password-reset", api_request_password_reset, RL_AUTH},
    {"POST", "/api/collections/:c/confirm-password-reset", api_confirm_password_reset, RL_AUTH},
    {"POST", "/api/collections/:c/request-email-change", api_request_email_change, RL_AUTH},
    {"POST", "/api/collections/:c/confirm-email-change", api_confirm_email_change, RL_AUTH},
    {"POST", "/api/collections/:c/request-otp", api_request_otp, RL_AUTH},
    {"POST", "/api/collections/:c/auth-with-otp", api_auth_with_otp, RL_AUTH},
    {"GET", "/api/crons", api_crons_list, RL_DEFAULT},
    {"POST", "/api/crons/:id", api_crons_run, RL_DEFAULT},
    {"GET", "/api/settings", api_settings_get, RL_DEFAULT},
    {"PATCH", "/api/settings", api_settings_patch, RL_DEFAULT},
    {"POST", "/api/settings/test/email", api_settings_test_email, RL_DEFAULT},
    {"GET", "/api/basalt/jobs", api_jobs_list, RL_DEFAULT},
    {"POST", "/api/basalt/jobs", api_jobs_create, RL_DEFAULT},
    {"GET", "/api/basalt/jobs/:id", api_jobs_view, RL_DEFAULT},
    {"GET", "/api/basalt/webhooks/deliveries", api_webhook_deliveries, RL_DEFAULT},
    {"GET", "/api/backups", api_backups_list, RL_DEFAULT},
    {"POST", "/api/backups", api_backups_create, RL_DEFAULT},
    {"POST", "/api/backups/upload", api_backups_upload, RL_DEFAULT},
    {"GET", "/api/backups/:key", api_backups_download, RL_DEFAULT},
    {"DELETE", "/api/backups/:key", api_backups_delete, RL_DEFAULT},
    {"POST", "/api/backups/:key/restore", api_backups_restore, RL_DEFAULT},
    {"POST", "/api/files/token", api_files_token, RL_DEFAULT},
    {"GET", "/api/files/:c/:id/:name", api_files_download, RL_DEFAULT},
};

#define MAX_PARAMS API_ROUTE_MAX_PARAMS

/* Matches path against pattern; fills params (arena copies). Returns 1 on match. */
static int match(arena_t *arena, const char *pattern, const char *path, char **params)
{
    int np = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p != '/' || *s != '/')
            return 0;
        p++;
        s++;
        const char *pe = strchr(p, '/'), *se = strchr(s, '/');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p), sl = se ? (size_t)(se - s) : strlen(s);
        if (*p == ':') {
            if (sl == 0 || np == MAX_PARAMS)
                return 0;
            params[np++] = arena_strndup(arena, s, sl);
        } else if (pl != sl || memcmp(p, s, pl) != 0) {
            return 0;
        }
        p += pl;
        s += sl;
    }
    if (*s == '/' && s[1] == '\0')
        s++; /* a trailing slash is tolerated */
    return *p == '\0' && *s == '\0';
}

static const char *rl_names[RL__COUNT] = {"", "", "auth", "anonymous", "user", "ip_overall"};

static uint64_t rate_limited(int cls, const char **name)
{
    if (cls < 0 || cls >= RL__COUNT) {
        *name = NULL;
        return 0;
    }
    *name = rl_names[cls];
    return api_rate_limit_rejections((api_rl_class_t)cls);
}

static void cache_source(uint64_t out[5])
{
    cache_stats_t st;
    cache_get_stats(worker_settings()->cache, &st);
    out[0] = st.hits;
    out[1] = st.misses;
    out[2] = st.evictions;
    out[3] = st.bytes;
    out[4] = st.entries;
}

static int db_replica_source(size_t i, int *up, int64_t *lag_ms)
{
    return store_replica_state(worker_settings()->store, i, up, lag_ms);
}

int api_route_find(arena_t *arena, const char *method, const char *path, char **params, int *path_matched)
{
    *path_matched = 0;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (!match(arena, routes[i].pattern, path, params))
            continue;
        *path_matched = 1;
        if (strcmp(routes[i].method, method) == 0)
            return (int)i;
    }
    return -1;
}

void api_init(void)
{
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]) && i < METRICS_MAX_ROUTES - 1; i++)
        metrics_route_name((int)i, routes[i].method, routes[i].pattern);
    metrics_sources_t src = {.inflight = server_inflight,
                             .connections = server_connections,
                             .rate_limited = rate_limited,
                             .cache = cache_source,
                             .realtime = realtime_gauges,
                             .db_replica = db_replica_source,
                             .logs_dropped = logs_dropped,
                             .extra = jobs_metrics_write};
    metrics_set_sources(&src);
}

/* A matched route waiting for its requester's identity (api_authenticate). */
typedef struct {
    int route;
    char *params[MAX_PARAMS];
} route_call_t;

static void route_call(req_ctx_t *ctx, void *arg)
{
    route_call_t *rc = arg;
    /* api_collection may run the handler again after reloading the collections. */
    ctx->rerun = route_call;
    ctx->rerun_arg = rc;
    routes[rc->route].fn(ctx, rc->params);
}

static void route_run(req_ctx_t *ctx, void *arg)
{
    route_call_t *rc = arg;
    api_rate_limit_then(ctx, routes[rc->route].limit, route_call, rc);
}

/* The requester's identity under the collections as committed (ADR 0013). */
static void route_identify(req_ctx_t *ctx, void *arg)
{
    api_authenticate(ctx, route_run, arg);
}

void api_dispatch(req_ctx_t *ctx)
{
    if (strcmp(ctx->method, "OPTIONS") == 0) {
        /* CORS preflight: every origin may call the API with a token header. */
        ctx_add_header(ctx, "access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS");
        ctx_add_header(ctx, "access-control-allow-headers", "authorization, content-type, x-request-id");
        ctx_add_header(ctx, "access-control-max-age", "86400");
        ctx_send_empty(ctx, 204);
        return;
    }
    if (ctx->path == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    if (ctx->path_error != REQCHECK_PATH_OK) {
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST, reqcheck_path_message((reqcheck_path_t)ctx->path_error));
        return;
    }
    /* Who the client is (behind a trusted proxy) decides the access log's address,
     * /metrics' loopback check and the rate limits. */
    if (api_client_address(ctx) != 0)
        return;
    if (ctx->query_invalid) {
        /* Dropping the pair would run the request without it (an unfiltered list). */
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST,
                        "The query string is not valid UTF-8 (or holds a NUL byte).");
        return;
    }
    /* In the arena: the identity may need a read job, after which the route runs. */
    route_call_t *call = arena_calloc(&ctx->arena, sizeof(*call));
    if (call == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    int path_matched = 0;
    int i = api_route_find(&ctx->arena, ctx->method, ctx->path, call->params, &path_matched);
    if (i >= 0) {
        ctx->route = i;
        call->route = i;
        api_schema_fresh_then(ctx, route_identify, call);
        return;
    }
    if (path_matched) {
        ctx_send_status(ctx, BS_ERR_METHOD_NOT_ALLOWED, NULL);
        return;
    }
    /* The dashboard at /_/ and the public folder: what no route claims. */
    if (static_dispatch(ctx))
        return;
    ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
}
