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

int api_rate_limit(req_ctx_t *ctx, api_rl_class_t cls)
{
    const http_settings_t *s = worker_settings();
    if (s->ratelimit == NULL || cls == RL_EXEMPT || ctx->who.superuser)
        return 0;
    int64_t now = util_now_ms();
    char key[128];
    ratelimit_result_t r, burst;
    /* The overall cap of the address first, then the class limit; the headers
     * describe whichever is closer to refusing. */
    int n = snprintf(key, sizeof(key), "b:%s", ctx->client_ip);
    ratelimit_take(s->ratelimit, key, (size_t)n, s->rl_burst, s->rl_period_ms, now, &burst);
    api_rl_class_t counted = cls;
    if (!burst.allowed) {
        r = burst;
        counted = RL_BURST;
    } else if (cls == RL_AUTH) {
        n = snprintf(key, sizeof(key), "a:%s", ctx->client_ip);
        ratelimit_take(s->ratelimit, key, (size_t)n, s->rl_auth, s->rl_period_ms, now, &r);
    } else {
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
            n = snprintf(key, sizeof(key), "u:%s:%s%s%s", ctx->who.auth_coll->id, id ? id : "",
                         override >= 0 ? ":" : "", override >= 0 ? coll : "");
            ratelimit_take(s->ratelimit, key, (size_t)n, override >= 0 ? override : s->rl_user,
                           s->rl_period_ms, now, &r);
            counted = RL_USER;
        } else {
            n = snprintf(key, sizeof(key), "i:%s%s%s", ctx->client_ip, override >= 0 ? ":" : "",
                         override >= 0 ? coll : "");
            ratelimit_take(s->ratelimit, key, (size_t)n, override >= 0 ? override : s->rl_anon,
                           s->rl_period_ms, now, &r);
            counted = RL_ANON;
        }
    }
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
