/*
 * PocketBase's crons API (GET /api/crons, POST /api/crons/{id}) and Basalt's view
 * of the job queue (GET/POST /api/basalt/jobs, GET /api/basalt/jobs/{id}):
 * superusers only. Running a cron or queuing a job is a write job that inserts the
 * job row; a runner thread takes it from there (jobs.h).
 */
#include <string.h>

#include "api/api.h"
#include "base/util.h"
#include "jobs/jobs.h"

void api_crons_list(req_ctx_t *ctx, char **params)
{
    (void)params;
    if (api_require_superuser(ctx) != 0)
        return;
    buf_t out;
    buf_init(&out, &ctx->arena);
    jobs_crons_json(&out);
    if (out.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    ctx_send_json(ctx, 200, out.data, out.len);
}

typedef struct {
    int cron;
    const char *name; /* api_jobs_create */
    json_t *payload;
    jobs_opts_t opts;
    char id[UTIL_ID_LEN + 1];
} enqueue_t;

static int run_cron_now(store_job_t *job, store_conn_t *conn)
{
    enqueue_t *e = ((api_job_t *)job)->data;
    return jobs_cron_enqueue_now(conn, e->cron, &job->err);
}

static void queued_committed(store_job_t *job)
{
    (void)job;
    jobs_wake();
}

static void cron_queued(api_job_t *j, req_ctx_t *ctx)
{
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    api_audit(ctx, "cron_run", ((enqueue_t *)j->data)->name, NULL);
    ctx_send_empty(ctx, 204);
}

void api_crons_run(req_ctx_t *ctx, char **params)
{
    if (api_require_superuser(ctx) != 0)
        return;
    int idx = jobs_cron_index(params[0]);
    if (idx < 0) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, "Missing or invalid cron job.");
        return;
    }
    enqueue_t *e = arena_calloc(&ctx->arena, sizeof(*e));
    if (e == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    e->cron = idx;
    e->name = params[0];
    api_submit(ctx, run_cron_now, queued_committed, cron_queued, e);
}

/* ---- /api/basalt/jobs ---- */

static int run_create(store_job_t *job, store_conn_t *conn)
{
    enqueue_t *e = ((api_job_t *)job)->data;
    e->opts.id_out = e->id;
    return jobs_enqueue(conn, e->name, e->payload, &e->opts, &job->err);
}

static void created_done(api_job_t *j, req_ctx_t *ctx)
{
    enqueue_t *e = j->data;
    json_decref(e->payload);
    e->payload = NULL;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    api_audit(ctx, "job_queued", e->name, NULL);
    buf_t out;
    buf_init(&out, &ctx->arena);
    buf_puts(&out, "{\"id\":");
    util_json_quote(&out, e->id, strlen(e->id));
    buf_puts(&out, ",\"name\":");
    util_json_quote(&out, e->name, strlen(e->name));
    buf_puts(&out, ",\"state\":\"ready\"}");
    ctx_send_json(ctx, 200, out.data, out.len);
}

/* POST /api/basalt/jobs {"name", "payload"?, "maxAttempts"?, "timeoutMs"?,
 * "delayMs"?}: queues a job for a registered handler. */
void api_jobs_create(req_ctx_t *ctx, char **params)
{
    (void)params;
    json_t *body = api_superuser_body(ctx);
    if (body == NULL)
        return;
    bs_error_t err;
    bs_error_init(&err);
    const char *name = json_string_value(json_object_get(body, "name"));
    json_t *payload = json_object_get(body, "payload");
    json_t *ma = json_object_get(body, "maxAttempts"), *to = json_object_get(body, "timeoutMs"),
           *delay = json_object_get(body, "delayMs");
    if (name == NULL || !jobs_known(name))
        bs_error_field(&err, &ctx->arena, "name", "validation_invalid_value",
                       "Must name a registered job handler.");
    if (payload != NULL && !json_is_object(payload))
        bs_error_field(&err, &ctx->arena, "payload", "validation_invalid_value", "Must be an object.");
    if (ma != NULL && (!json_is_integer(ma) || json_integer_value(ma) < 1 || json_integer_value(ma) > 100))
        bs_error_field(&err, &ctx->arena, "maxAttempts", "validation_invalid_value",
                       "A whole number from 1 to 100.");
    if (to != NULL &&
        (!json_is_integer(to) || json_integer_value(to) < 100 || json_integer_value(to) > 3600000))
        bs_error_field(&err, &ctx->arena, "timeoutMs", "validation_invalid_value",
                       "A whole number of milliseconds from 100 to 3600000.");
    if (delay != NULL && (!json_is_integer(delay) || json_integer_value(delay) < 0 ||
                          json_integer_value(delay) > 31536000000LL))
        bs_error_field(&err, &ctx->arena, "delayMs", "validation_invalid_value",
                       "A whole number of milliseconds from 0 to a year.");
    enqueue_t *e = err.code == BS_ERR_OK ? arena_calloc(&ctx->arena, sizeof(*e)) : NULL;
    if (e == NULL || (e->name = arena_strdup(&ctx->arena, name)) == NULL) {
        json_decref(body);
        if (err.code == BS_ERR_OK)
            bs_error_set(&err, BS_ERR_NOMEM, NULL);
        ctx_send_error(ctx, &err);
        return;
    }
    e->payload = payload ? json_incref(payload) : NULL;
    e->opts.max_attempts = ma ? (int)json_integer_value(ma) : 0;
    e->opts.timeout_ms = to ? (int)json_integer_value(to) : 0;
    e->opts.run_at_ms = delay ? util_now_ms() + json_integer_value(delay) : 0;
    json_decref(body);
    api_submit(ctx, run_create, queued_committed, created_done, e);
}

typedef struct {
    const char *id;    /* view: one job */
    const char *state; /* list filter, or NULL */
    buf_t out;
    int found;
} jobs_read_t;

static const char job_cols[] = "SELECT id, name, payload, state, attempts, max_attempts, timeout_ms, run_at, "
                               "last_error, created, updated FROM "
                               "_jobs";

static void put_job(buf_t *b, store_stmt_t *st)
{
    static const char *names[] = {"id",        "name",  "payload",   "state",   "attempts", "maxAttempts",
                                  "timeoutMs", "runAt", "lastError", "created", "updated"};
    buf_putc(b, '{');
    for (int i = 0; i < 11; i++) {
        bs_value_t v = store_col(st, i);
        buf_printf(b, "%s\"%s\":", i ? "," : "", names[i]);
        if (i == 2 && v.type == BS_VAL_TEXT)
            buf_append(b, v.s, v.n); /* stored as JSON by jobs_enqueue */
        else if (v.type == BS_VAL_TEXT)
            util_json_quote(b, v.s, v.n);
        else if (v.type == BS_VAL_INT)
            buf_put_i64(b, v.i);
        else if (v.type == BS_VAL_DOUBLE)
            buf_put_i64(b, (int64_t)v.d);
        else
            buf_puts(b, "null");
    }
    buf_putc(b, '}');
}

static int run_jobs_read(store_job_t *job, store_conn_t *conn)
{
    jobs_read_t *r = ((api_job_t *)job)->data;
    buf_t sql;
    buf_init(&sql, job->arena);
    buf_puts(&sql, job_cols);
    bs_value_t v = bs_val_null();
    if (r->id) {
        buf_puts(&sql, " WHERE id = ?1");
        v = bs_val_text(r->id, strlen(r->id));
    } else if (r->state) {
        buf_puts(&sql, " WHERE state = ?1");
        v = bs_val_text(r->state, strlen(r->state));
    }
    buf_puts(&sql, " ORDER BY created DESC, id LIMIT 200");
    store_stmt_t *st = store_query(conn, sql.data, &v, v.type == BS_VAL_NULL ? 0 : 1, &job->err);
    if (st == NULL)
        return -1;
    int rc, n = 0;
    if (!r->id)
        buf_puts(&r->out, "{\"items\":[");
    while ((rc = store_step(st, &job->err)) == 1) {
        if (n++ && !r->id)
            buf_putc(&r->out, ',');
        put_job(&r->out, st);
        r->found = 1;
        if (r->id)
            break;
    }
    store_done(st);
    if (!r->id)
        buf_puts(&r->out, "]}");
    return rc < 0 ? -1 : 0;
}

static void jobs_read_done(api_job_t *j, req_ctx_t *ctx)
{
    jobs_read_t *r = j->data;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (r->id && !r->found) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
        return;
    }
    ctx_send_json(ctx, 200, r->out.data, r->out.len);
}

void api_jobs_list(req_ctx_t *ctx, char **params)
{
    (void)params;
    if (api_require_superuser(ctx) != 0)
        return;
    const char *state = ctx_query(ctx, "state");
    if (state != NULL && strcmp(state, "ready") != 0 && strcmp(state, "running") != 0 &&
        strcmp(state, "done") != 0 && strcmp(state, "dead") != 0) {
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST, "state must be ready, running, done or dead.");
        return;
    }
    jobs_read_t *r = arena_calloc(&ctx->arena, sizeof(*r));
    if (r == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    r->state = state;
    buf_init(&r->out, &ctx->arena);
    api_read_scan(ctx, run_jobs_read, jobs_read_done, r);
}

void api_jobs_view(req_ctx_t *ctx, char **params)
{
    if (api_require_superuser(ctx) != 0)
        return;
    jobs_read_t *r = arena_calloc(&ctx->arena, sizeof(*r));
    if (r == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    r->id = params[0];
    buf_init(&r->out, &ctx->arena);
    api_read_scan(ctx, run_jobs_read, jobs_read_done, r);
}
