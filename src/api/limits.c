/*
 * Rate limits of the API (plan 001's numbers as defaults): a signed-in user is
 * limited by user id, anyone else by client address, auth endpoints more strictly
 * by address, and every address has an overall cap. Health, readiness, CORS
 * preflights and superusers are exempt. Every limited response carries
 * RateLimit-Limit/-Remaining/-Reset; a refusal is a 429 with Retry-After.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "base/log.h"
#include "base/util.h"
#include "http/reqcheck.h"
#include "ratelimit/ratelimit.h"
#include "redis/redis_shared.h"

int api_client_address(req_ctx_t *ctx)
{
    const char *trusted = worker_settings()->trusted_proxies;
    if (!trusted[0] || !reqcheck_ip_in_list(trusted, ctx->peer_ip, strlen(ctx->peer_ip)))
        return 0;
    /* Every X-Forwarded-For line, as one list: a client's own line sent before the
     * proxy's must not be the one that is read. */
    size_t len = 0;
    int oom = 0;
    const char *xff = ctx_header_list(ctx, "x-forwarded-for", &len, &oom);
    if (oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return -1;
    }
    if (xff == NULL)
        return 0;
    char ip[sizeof(ctx->client_ip)];
    int r = reqcheck_forwarded_for(xff, len, trusted, ip, sizeof(ip));
    if (r > 0)
        memcpy(ctx->client_ip, ip, sizeof(ip));
    if (r >= 0)
        return 0;
    /* Neither the proxy (it is not the client: on this host it would pass as
     * loopback) nor anything to the left (the client wrote that) can stand in. */
    ctx_send_status(ctx, BS_ERR_BAD_REQUEST,
                    "The X-Forwarded-For header from the proxy does not end with the client's IP address.");
    return -1;
}

static void put_headers(req_ctx_t *ctx, const ratelimit_result_t *r)
{
    char v[32];
    snprintf(v, sizeof(v), "%lld", (long long)r->limit);
    ctx_add_header(ctx, "ratelimit-limit", v);
    snprintf(v, sizeof(v), "%lld", (long long)r->remaining);
    ctx_add_header(ctx, "ratelimit-remaining", v);
    snprintf(v, sizeof(v), "%lld", (long long)((r->reset_ms + 999) / 1000));
    ctx_add_header(ctx, "ratelimit-reset", v);
}

static uint64_t rejections[RL__COUNT];

static const char *rl_class_name(api_rl_class_t c)
{
    static const char *names[RL__COUNT] = {"exempt", "default", "auth", "anonymous", "user", "ip_overall"};
    return names[c];
}

uint64_t api_rate_limit_rejections(api_rl_class_t cls)
{
    return __atomic_load_n(&rejections[cls], __ATOMIC_RELAXED);
}

/* The override for a collection from "name=N,...", or -1. */
static long collection_limit(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *eq = strchr(p, '=');
        if (eq == NULL)
            return -1;
        if ((size_t)(eq - p) == n && strncmp(p, name, n) == 0)
            return strtol(eq + 1, NULL, 10);
        const char *comma = strchr(eq, ',');
        if (comma == NULL)
            return -1;
        p = comma + 1;
    }
    return -1;
}

/* What one request spends: the address's overall cap (bkey) and its class limit
 * (key), computed once whoever decides (the local limiter or Redis). */
typedef struct {
    char bkey[128], key[128];
    int blen, klen;
    int64_t blimit, limit;
    api_rl_class_t counted; /* the class limit's class */
} rl_plan_t;

static void rl_plan(req_ctx_t *ctx, api_rl_class_t cls, rl_plan_t *p)
{
    const http_settings_t *s = worker_settings();
    p->blen = snprintf(p->bkey, sizeof(p->bkey), "b:%s", ctx->client_ip);
    p->blimit = s->rl_burst;
    p->counted = cls;
    if (cls == RL_AUTH) {
        p->klen = snprintf(p->key, sizeof(p->key), "a:%s", ctx->client_ip);
        p->limit = s->rl_auth;
        return;
    }
    /* Record endpoints of a collection with an override have their own budget. */
    long override = -1;
    const char *coll = NULL;
    if (s->rl_collections[0] && strncmp(ctx->path, "/api/collections/", 17) == 0) {
        const char *c = ctx->path + 17, *slash = strchr(c, '/');
        if (slash != NULL && strncmp(slash, "/records", 8) == 0) {
            coll = arena_strndup(&ctx->arena, c, (size_t)(slash - c));
            const collection_t *cc = coll ? schema_find(ctx->schema, coll) : NULL;
            override = cc ? collection_limit(s->rl_collections, cc->name) : -1;
            coll = cc ? cc->name : NULL;
        }
    }
    if (ctx->auth != NULL) {
        const char *id = json_string_value(json_object_get(ctx->auth, "id"));
        p->klen = snprintf(p->key, sizeof(p->key), "u:%s:%s%s%s", ctx->who.auth_coll->id, id ? id : "",
                           override >= 0 ? ":" : "", override >= 0 ? coll : "");
        p->limit = override >= 0 ? override : s->rl_user;
        p->counted = RL_USER;
    } else {
        p->klen = snprintf(p->key, sizeof(p->key), "i:%s%s%s", ctx->client_ip, override >= 0 ? ":" : "",
                           override >= 0 ? coll : "");
        p->limit = override >= 0 ? override : s->rl_anon;
        p->counted = RL_ANON;
    }
    if (p->klen >= (int)sizeof(p->key))
        p->klen = (int)sizeof(p->key) - 1;
}

/* Answers from the two outcomes: the headers, and 429 when refused. Returns 0 (go
 * on) or -1 (answered). */
static int rl_finish(req_ctx_t *ctx, const rl_plan_t *p, const ratelimit_result_t *burst_in,
                     const ratelimit_result_t *class_r, int class_taken)
{
    const http_settings_t *s = worker_settings();
    ratelimit_result_t r, burst = *burst_in;
    api_rl_class_t counted = p->counted;
    const char *key = p->key;
    if (!burst.allowed || !class_taken) {
        r = burst;
        counted = RL_BURST;
        key = p->bkey;
    } else {
        r = *class_r;
    }
    /* The headers describe whichever is closer to refusing. */
    if (r.allowed && burst.limit > 0 && (r.limit <= 0 || burst.remaining < r.remaining))
        r = burst;
    if (r.limit <= 0)
        return 0;
    put_headers(ctx, &r);
    if (r.allowed)
        return 0;
    __atomic_add_fetch(&rejections[counted], 1, __ATOMIC_RELAXED);
    /* Audit a client's first refusal of a burst, not every one (an attack would
     * flood the log): one line per key per ten seconds per worker. */
    int64_t now = util_now_ms();
    static __thread char last_key[128];
    static __thread int64_t last_ms;
    if (strcmp(last_key, key) != 0 || now - last_ms > 10000) {
        snprintf(last_key, sizeof(last_key), "%s", key);
        last_ms = now;
        api_audit(ctx, "rate_limited", key, rl_class_name(counted));
    }
    char ra[32];
    snprintf(ra, sizeof(ra), "%lld", (long long)((r.retry_ms + 999) / 1000));
    ctx_add_header(ctx, "retry-after", ra);
    bs_error_t err;
    bs_error_init(&err);
    bs_error_set(&err, BS_ERR_RATE_LIMITED, "Too many requests: the limit is %lld per %lld s; retry in %s s.",
                 (long long)r.limit, (long long)(s->rl_period_ms / 1000), ra);
    ctx_send_error(ctx, &err);
    return -1;
}

/* The local limiter's decision; divisor > 1 shares each limit among that many
 * instances (Redis unreachable: each instance keeps its share). */
static int rl_local(req_ctx_t *ctx, const rl_plan_t *p, int64_t divisor)
{
    const http_settings_t *s = worker_settings();
    int64_t now = util_now_ms();
    int64_t blimit = p->blimit, limit = p->limit;
    if (divisor > 1) {
        blimit = blimit > 0 ? (blimit / divisor > 0 ? blimit / divisor : 1) : blimit;
        limit = limit > 0 ? (limit / divisor > 0 ? limit / divisor : 1) : limit;
    }
    ratelimit_result_t burst, r;
    memset(&r, 0, sizeof(r));
    ratelimit_take(s->ratelimit, p->bkey, (size_t)p->blen, blimit, s->rl_period_ms, now, &burst);
    if (burst.allowed)
        ratelimit_take(s->ratelimit, p->key, (size_t)p->klen, limit, s->rl_period_ms, now, &r);
    return rl_finish(ctx, p, &burst, &r, burst.allowed);
}

int api_rate_limit(req_ctx_t *ctx, api_rl_class_t cls)
{
    const http_settings_t *s = worker_settings();
    if (s->ratelimit == NULL || cls == RL_EXEMPT || ctx->who.superuser)
        return 0;
    rl_plan_t p;
    rl_plan(ctx, cls, &p);
    return rl_local(ctx, &p, 1);
}

/* A request waiting for Redis's decision (in its arena). */
typedef struct {
    rl_plan_t plan;
    req_ctx_t *ctx;
    api_auth_next_fn next;
    void *arg;
} rl_wait_t;

static void rl_decided(void *arg, int ok, const ratelimit_result_t *burst, const ratelimit_result_t *cls,
                       int class_taken)
{
    rl_wait_t *w = arg;
    req_ctx_t *ctx = w->ctx;
    if (ctx->req != NULL) {
        int rc;
        if (ok) {
            rc = rl_finish(ctx, &w->plan, burst, cls, class_taken);
        } else {
            redis_rl_count_local();
            rc = rl_local(ctx, &w->plan, redis_live_instances());
        }
        if (rc == 0)
            w->next(ctx, w->arg);
    }
    ctx_async_end(ctx);
}

void api_rate_limit_then(req_ctx_t *ctx, api_rl_class_t cls, api_auth_next_fn next, void *arg)
{
    const http_settings_t *s = worker_settings();
    if (s->ratelimit == NULL || cls == RL_EXEMPT || ctx->who.superuser) {
        next(ctx, arg);
        return;
    }
    if (!redis_enabled()) {
        /* One instance: the local limiter, as fast as ever. */
        if (api_rate_limit(ctx, cls) == 0)
            next(ctx, arg);
        return;
    }
    rl_wait_t *w = arena_calloc(&ctx->arena, sizeof(*w));
    if (w == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    rl_plan(ctx, cls, &w->plan);
    w->ctx = ctx;
    w->next = next;
    w->arg = arg;
    /* The request waits for Redis (at most --redis-timeout-ms), its loop does not. */
    ctx_async_begin(ctx);
    if (redis_rl_take(w->plan.bkey, (size_t)w->plan.blen, w->plan.blimit, w->plan.key, (size_t)w->plan.klen,
                      w->plan.limit, s->rl_period_ms, rl_decided, w) == 0)
        return;
    /* Redis cannot be asked now (down, or its breaker is open): this instance's
     * share of each limit, decided here. The caller holds the context, so this
     * end does not free it. */
    ctx_async_end(ctx);
    redis_rl_count_local();
    if (rl_local(ctx, &w->plan, redis_live_instances()) == 0)
        next(ctx, arg);
}
