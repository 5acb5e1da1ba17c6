/*
 * GET /api/basalt/webhooks/deliveries: the delivery log of webhooks (superusers):
 * newest first, at most 200, filtered by ?webhook=, ?collection= or ?jobId=. The
 * webhooks themselves are configured in the settings (PATCH /api/settings,
 * "webhooks"); deliveries are jobs (webhooks/webhooks.c).
 */
#include <string.h>

#include "api/api.h"
#include "base/util.h"
#include "webhooks/webhooks.h"

typedef struct {
    const char *col, *value;
    buf_t out;
} deliveries_t;

static int run_deliveries(store_job_t *job, store_conn_t *conn)
{
    deliveries_t *d = ((api_job_t *)job)->data;
    buf_t sql;
    buf_init(&sql, job->arena);
    buf_puts(
        &sql,
        "SELECT id, job_id, webhook, collection, action, record_id, url, attempt, status, error, created "
        "FROM _webhook_deliveries");
    bs_value_t v = bs_val_null();
    if (d->col) {
        buf_printf(&sql, " WHERE %s = ?1", d->col); /* one of three constant names */
        v = bs_val_text(d->value, strlen(d->value));
    }
    buf_puts(&sql, " ORDER BY created DESC, id LIMIT 200");
    store_stmt_t *st = store_query(conn, sql.data, &v, d->col ? 1 : 0, &job->err);
    if (st == NULL)
        return -1;
    static const char *names[] = {"id",  "jobId",   "webhook", "collection", "action", "recordId",
                                  "url", "attempt", "status",  "error",      "created"};
    buf_puts(&d->out, "{\"items\":[");
    int rc, n = 0;
    while ((rc = store_step(st, &job->err)) == 1) {
        buf_puts(&d->out, n++ ? ",{" : "{");
        for (int i = 0; i < 11; i++) {
            bs_value_t c = store_col(st, i);
            buf_printf(&d->out, "%s\"%s\":", i ? "," : "", names[i]);
            if (c.type == BS_VAL_TEXT)
                util_json_quote(&d->out, c.s, c.n);
            else if (c.type == BS_VAL_INT)
                buf_put_i64(&d->out, c.i);
            else if (c.type == BS_VAL_DOUBLE)
                buf_put_i64(&d->out, (int64_t)c.d);
            else
                buf_puts(&d->out, "null");
        }
        buf_putc(&d->out, '}');
    }
    store_done(st);
    buf_puts(&d->out, "]}");
    return rc < 0 ? -1 : 0;
}

static void deliveries_done(api_job_t *j, req_ctx_t *ctx)
{
    deliveries_t *d = j->data;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (d->out.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    ctx_send_json(ctx, 200, d->out.data, d->out.len);
}

void api_webhook_deliveries(req_ctx_t *ctx, char **params)
{
    (void)params;
    if (api_require_superuser(ctx) != 0)
        return;
    deliveries_t *d = arena_calloc(&ctx->arena, sizeof(*d));
    if (d == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    static const struct {
        const char *query, *col;
    } filters[] = {{"webhook", "webhook"}, {"collection", "collection"}, {"jobId", "job_id"}};
    for (size_t i = 0; i < 3 && d->col == NULL; i++) {
        const char *v = ctx_query(ctx, filters[i].query);
        if (v != NULL) {
            d->col = filters[i].col;
            d->value = v;
        }
    }
    buf_init(&d->out, &ctx->arena);
    api_read_scan(ctx, run_deliveries, deliveries_done, d);
}

int api_webhooks_init(const api_jobs_config_t *c)
{
    return webhooks_init(c->webhook_allow_hosts, c->webhook_timeout_ms);
}
