/*
 * /api/basalt/users/:collection/:id/export and .../erase (core/privacy.h,
 * docs/privacy.md), and the retention purger.
 *
 * Export is a read job that builds the zip (on the worker's reader on SQLite, a pool
 * thread on PostgreSQL) and sends it. Erasure is a writer job through the record
 * writer, so realtime subscribers get the deletes, the cache forgets the records and
 * the user's tokens stop working (their record is gone, and the collection's
 * generation moved); both are audited. The user may erase themselves with their
 * password (verified on the password pool, never on the loop); a superuser needs none.
 *
 * Retention runs on a thread of its own: every --retention-interval-s it submits, per
 * collection with a retention option, writer jobs of at most RETENTION_BATCH deletes
 * each (a short transaction, so requests' writes interleave), and waits for each.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "auth/password.h"
#include "api/logs.h"
#include "base/audit.h"
#include "base/log.h"
#include "base/util.h"
#include "core/privacy.h"

/* ---- who may ---- */

/* The auth collection and the id of the route, if the requester may act on them:
 * a superuser, or the user themselves. Sends the error and returns NULL otherwise. */
static const collection_t *target_user(req_ctx_t *ctx, char **params, int *self)
{
    const collection_t *c = api_collection(ctx, params[0]);
    if (c == NULL)
        return NULL;
    if (c->type != COLL_AUTH) {
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST, "Users are records of an auth collection.");
        return NULL;
    }
    if (!util_valid_id(params[1], strlen(params[1]))) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, "The user was not found.");
        return NULL;
    }
    const char *me = ctx->auth ? json_string_value(json_object_get(ctx->auth, "id")) : NULL;
    *self = ctx->who.auth_coll == c && me != NULL && strcmp(me, params[1]) == 0;
    if (ctx->who.superuser || *self)
        return c;
    if (ctx->auth == NULL) {
        if (ctx->auth_err.code != BS_ERR_OK)
            ctx_send_error(ctx, &ctx->auth_err);
        else
            ctx_send_status(ctx, BS_ERR_UNAUTHORIZED, NULL);
    } else {
        ctx_send_status(ctx, BS_ERR_FORBIDDEN, "Only the user themselves or a superuser may do this.");
    }
    return NULL;
}

/* ---- export ---- */

typedef struct {
    const collection_t *coll;
    char *id;
    buf_t zip;
    privacy_counts_t counts;
    const schema_t *schema;
} export_state_t;

static int export_run(store_job_t *job, store_conn_t *conn)
{
    export_state_t *es = ((api_job_t *)job)->data;
    return privacy_export_zip(conn, es->schema, es->coll, es->id, 1, &es->zip, &es->counts, job->arena,
                              &job->err);
}

static void export_done(api_job_t *j, req_ctx_t *ctx)
{
    export_state_t *es = j->data;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    char target[200], detail[96], disp[200];
    snprintf(target, sizeof(target), "%s/%s", es->coll->name, es->id);
    snprintf(detail, sizeof(detail), "%zu related records in %zu collections", es->counts.records,
             es->counts.collections);
    api_audit(ctx, "user_export", target, detail);
    snprintf(disp, sizeof(disp), "attachment; filename=\"%s-%s.zip\"", es->coll->name, es->id);
    ctx_add_header(ctx, "content-disposition", disp);
    ctx_add_header(ctx, "cache-control", "no-store");
    ctx_send_body(ctx, 200, "application/zip", es->zip.data, es->zip.len);
}

void api_user_export(req_ctx_t *ctx, char **params)
{
    int self;
    const collection_t *c = target_user(ctx, params, &self);
    if (c == NULL)
        return;
    export_state_t *es = arena_calloc(&ctx->arena, sizeof(*es));
    if (es == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    es->coll = c;
    es->id = arena_strdup(&ctx->arena, params[1]);
    es->schema = ctx->schema;
    buf_init(&es->zip, &ctx->arena);
    api_read_scan(ctx, export_run, export_done, es);
}

/* ---- erasure ---- */

typedef struct {
    password_req_t pw; /* first: posted back from the password pool */
    req_ctx_t *ctx;
    const collection_t *coll;
    char *id;
    record_write_t w;
    int deleted;
} erase_state_t;

static int erase_run(store_job_t *job, store_conn_t *conn)
{
    erase_state_t *es = ((api_job_t *)job)->data;
    if (es->w.changes != NULL)
        json_array_clear(es->w.changes);
    memset(&es->w.touched, 0, sizeof(es->w.touched));
    if (privacy_erase(conn, &es->w, es->coll, es->id, &es->deleted, job->arena, &job->err) != 0)
        return -1;
    /* The request log names the user too (their requests, their IP, their paths). */
    if (logs_forget(conn, es->id, &job->err) != 0 || logs_forget_later(conn, es->id, &job->err) != 0)
        return -1;
    return 0;
}

static void erase_committed(store_job_t *job)
{
    erase_state_t *es = ((api_job_t *)job)->data;
    api_bump_written(es->w.schema, &es->w.touched);
    api_changes_publish(&es->w.changes);
}

static void erase_done(api_job_t *j, req_ctx_t *ctx)
{
    erase_state_t *es = j->data;
    json_decref(es->w.changes); /* left only when the job failed */
    es->w.changes = NULL;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    char target[200], detail[64];
    snprintf(target, sizeof(target), "%s/%s", es->coll->name, es->id);
    snprintf(detail, sizeof(detail), "%d records deleted (cascades not counted)", es->deleted);
    api_audit(ctx, "user_erase", target, detail);
    buf_t out;
    buf_init(&out, &ctx->arena);
    buf_puts(&out, "{\"collection\":");
    util_json_quote(&out, es->coll->name, strlen(es->coll->name));
    buf_puts(&out, ",\"id\":");
    util_json_quote(&out, es->id, strlen(es->id));
    buf_printf(&out, ",\"deletedRecords\":%d}", es->deleted);
    ctx_send_json(ctx, 200, out.data, out.len);
}

static void erase_submit(erase_state_t *es)
{
    es->w.schema = es->ctx->schema;
    es->w.changes = api_changes_new();
    store_job_t *job = api_submit(es->ctx, erase_run, erase_committed, erase_done, es);
    if (job != NULL)
        job->events = es->w.changes; /* the outbox writes them with the job */
}

static void erase_password_done(mailbox_msg_t *msg)
{
    erase_state_t *es = (erase_state_t *)msg;
    req_ctx_t *ctx = es->ctx;
    if (ctx->req != NULL) {
        if (es->pw.ok) {
            erase_submit(es);
        } else {
            bs_error_t err;
            bs_error_init(&err);
            bs_error_set(&err, BS_ERR_BAD_REQUEST, "The password is not correct; nothing was erased.");
            bs_error_field(&err, &ctx->arena, "password", "validation_invalid_password", "Invalid password.");
            api_audit(ctx, "user_erase_refused", NULL, "wrong password");
            ctx_send_error(ctx, &err);
        }
    }
    ctx_async_end(ctx);
}

void api_user_erase(req_ctx_t *ctx, char **params)
{
    int self;
    const collection_t *c = target_user(ctx, params, &self);
    if (c == NULL)
        return;
    erase_state_t *es = arena_calloc(&ctx->arena, sizeof(*es));
    if (es == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    es->ctx = ctx;
    es->coll = c;
    es->id = arena_strdup(&ctx->arena, params[1]);
    if (ctx->who.superuser) {
        erase_submit(es);
        return;
    }
    /* The user themselves: their password, as for any irreversible change. */
    bs_error_t err;
    bs_error_init(&err);
    json_t *body = ctx_body(ctx, &err);
    if (body == NULL) {
        ctx_send_error(ctx, &err);
        return;
    }
    json_t *pw = json_object_get(body, "password");
    const char *hash = json_string_value(json_object_get(ctx->auth, "password"));
    if (!json_is_string(pw) || json_string_length(pw) == 0 || api_has_nul(pw)) {
        json_decref(body);
        bs_error_set(&err, BS_ERR_BAD_REQUEST,
                     "Erasing your account needs your password; nothing was erased.");
        bs_error_field(&err, &ctx->arena, "password", "validation_required", "Cannot be blank.");
        ctx_send_error(ctx, &err);
        return;
    }
    es->pw.password = arena_strdup(&ctx->arena, json_string_value(pw));
    json_decref(body);
    if (hash != NULL && strlen(hash) < sizeof(es->pw.hash))
        memcpy(es->pw.hash, hash, strlen(hash) + 1);
    es->pw.msg.deliver = erase_password_done;
    es->pw.reply_to = &ctx->worker->mailbox;
    es->pw.op = PASSWORD_VERIFY;
    ctx_async_begin(ctx);
    password_submit(&es->pw);
}

/* ---- retention ---- */

#define RETENTION_BATCH 100
/* Batches per collection per round: a large backlog drains over several rounds
 * instead of occupying the writer for long. */
#define RETENTION_MAX_BATCHES 50

typedef struct {
    store_job_t job;
    const collection_t *coll;
    record_write_t w;
    int deleted;
    int done;
} purge_job_t;

static struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int running, stop;
    store_t *store;
    int interval_s;
    mailbox_t mailbox;
} ret = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static int purge_run(store_job_t *job, store_conn_t *conn)
{
    purge_job_t *pj = (purge_job_t *)job;
    if (pj->w.changes != NULL)
        json_array_clear(pj->w.changes);
    memset(&pj->w.touched, 0, sizeof(pj->w.touched));
    return privacy_purge(conn, &pj->w, pj->coll, util_now_ms(), RETENTION_BATCH, &pj->deleted, job->arena,
                         &job->err);
}

static void purge_committed(store_job_t *job)
{
    purge_job_t *pj = (purge_job_t *)job;
    api_bump_written(pj->w.schema, &pj->w.touched);
    api_changes_publish(&pj->w.changes);
}

static void purge_delivered(mailbox_msg_t *m)
{
    ((purge_job_t *)m)->done = 1;
}

/* One batch of c; returns records deleted or -1. Waits for the writer (this thread's
 * own mailbox), so it must not run on an event loop. */
static int purge_batch(schema_t *s, const collection_t *c)
{
    arena_t a;
    arena_init(&a, 4096);
    purge_job_t pj = {.job = {.msg = {.deliver = purge_delivered},
                              .reply_to = &ret.mailbox,
                              .run = purge_run,
                              .committed = purge_committed,
                              .arena = &a},
                      .coll = c,
                      .w = {.schema = s, .changes = api_changes_new()}};
    pj.job.events = pj.w.changes; /* the outbox writes them with the job */
    pj.job.background = 1;        /* upkeep: not a request's write */
    store_submit(ret.store, &pj.job);
    while (!pj.done) {
        struct pollfd p = {.fd = ret.mailbox.efd, .events = POLLIN};
        poll(&p, 1, 1000);
        mailbox_drain(&ret.mailbox);
    }
    json_decref(pj.w.changes);
    int n = pj.job.status == 0 ? pj.deleted : -1;
    if (pj.job.status != 0)
        LOGF(LOG_ERROR, "retention", "purging %s failed: %s", c->name, pj.job.err.message);
    arena_free(&a);
    return n;
}

static void purge_round(void)
{
    schema_t *s = schema_acquire();
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->ncols; i++) {
        const collection_t *c = s->cols[i];
        if (c->retention_days <= 0)
            continue;
        int total = 0, n = RETENTION_BATCH;
        for (int b = 0; b < RETENTION_MAX_BATCHES && n == RETENTION_BATCH; b++) {
            pthread_mutex_lock(&ret.lock);
            int stop = ret.stop;
            pthread_mutex_unlock(&ret.lock);
            if (stop || (n = purge_batch(s, c)) < 0)
                break;
            total += n;
        }
        if (total > 0) {
            char detail[96];
            snprintf(detail, sizeof(detail), "%d records older than %d days", total, c->retention_days);
            audit_event_t e = {
                .action = "retention_purge", .actor = "basalt", .target = c->name, .detail = detail};
            audit_log(&e);
            LOGF(LOG_INFO, "retention", "purged %d records of %s", total, c->name);
        }
    }
    schema_release(s);
}

static void *retention_main(void *arg)
{
    util_thread_name("retention");
    (void)arg;
    pthread_mutex_lock(&ret.lock);
    while (!ret.stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += ret.interval_s;
        while (!ret.stop && pthread_cond_timedwait(&ret.cond, &ret.lock, &until) == 0)
            ;
        if (ret.stop)
            break;
        pthread_mutex_unlock(&ret.lock);
        purge_round();
        pthread_mutex_lock(&ret.lock);
    }
    pthread_mutex_unlock(&ret.lock);
    return NULL;
}

int api_retention_start(store_t *store, int interval_s)
{
    if (mailbox_init(&ret.mailbox) != 0)
        return -1;
    ret.store = store;
    ret.interval_s = interval_s > 0 ? interval_s : 60;
    ret.stop = 0;
    if (pthread_create(&ret.thread, NULL, retention_main, NULL) != 0) {
        mailbox_destroy(&ret.mailbox);
        return -1;
    }
    ret.running = 1;
    return 0;
}

void api_retention_stop(void)
{
    if (!ret.running)
        return;
    pthread_mutex_lock(&ret.lock);
    ret.stop = 1;
    pthread_cond_signal(&ret.cond);
    pthread_mutex_unlock(&ret.lock);
    pthread_join(ret.thread, NULL);
    mailbox_destroy(&ret.mailbox);
    ret.running = 0;
}
