/*
 * GET /metrics: Prometheus text format. Who may read it is the setting
 * metrics-access: "loopback" (default: clients on 127.0.0.0/8 or ::1, or a
 * superuser token), "token" (superusers only), "open", or "off" (404).
 */
#include <string.h>

#include "api/api.h"
#include "base/util.h"
#include "metrics/metrics.h"

static int loopback(const char *ip)
{
    return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0 || strncmp(ip, "::ffff:127.", 11) == 0;
}

void api_metrics(req_ctx_t *ctx, char **params)
{
    (void)params;
    int access = worker_settings()->metrics_access;
    if (access == 0) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
        return;
    }
    /* The client address decides: behind a trusted proxy on this host the peer is
     * always loopback, the client (from X-Forwarded-For) is not. */
    int ok = access == 3 || ctx->who.superuser || (access == 1 && loopback(ctx->client_ip));
    if (!ok) {
        if (ctx->auth == NULL)
            ctx_send_status(ctx, BS_ERR_UNAUTHORIZED,
                            "Metrics need a superuser token from outside this host.");
        else
            ctx_send_status(ctx, BS_ERR_FORBIDDEN, "Only superusers can read the metrics.");
        return;
    }
    buf_t out;
    buf_init(&out, &ctx->arena);
    metrics_write(&out, util_now_ms());
    if (out.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    ctx_add_header(ctx, "cache-control", "no-store");
    ctx_send_body(ctx, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
}
