/* PocketBase's realtime over SSE: GET /api/realtime (the stream) and POST
 * /api/realtime (its subscriptions, applied on the worker that holds the stream). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "realtime/rt_conn.h"

static void sse_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    rt_client_t *c = H2O_STRUCT_FROM_MEMBER(rt_client_t, gen, gen);
    c->writing = 0;
    c->inflight.len = 0;
    rt_client_flush(c);
}

static void sse_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)gen;
    (void)req;
}

static void sse_disposed(void *p)
{
    sse_guard_t *g = p;
    rt_client_t *c = g->c;
    if (c != NULL) {
        c->guard = NULL;
        c->req = NULL;
        c->dead = 1;
        rt_client_free(c);
    }
}

void realtime_sse_open(req_ctx_t *ctx)
{
    rt_worker_t *rw = rt_rw_of(ctx->worker);
    if (rw == NULL || rt_refuse_if_full(ctx) != 0)
        return;
    size_t ln = 0;
    const char *last = ctx_header(ctx, "last-event-id", &ln);
    uint64_t resume = rt_parse_event_id(last, ln);
    const char *q = ctx_query(ctx, "lastEventId");
    if (resume == 0 && q != NULL)
        resume = rt_parse_event_id(q, strlen(q));
    h2o_req_t *req = ctx_begin_stream(ctx, 200);
    if (req == NULL)
        return;
    rt_client_t *c = rt_client_new(rw, T_SSE);
    if (c == NULL) {
        h2o_send_error_503(req, "Service Unavailable", "out of memory", 0);
        return;
    }
    c->req = req;
    c->resume_from = resume;
    sse_guard_t *g = h2o_mem_alloc_shared(&req->pool, sizeof(*g), sse_disposed);
    g->c = c;
    c->guard = g;
    c->gen.proceed = sse_proceed;
    c->gen.stop = sse_stop;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream"));
    /* no-transform keeps the compression filter off the stream. */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-cache, no-transform"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0, NULL,
                          H2O_STRLIT("no"));
    h2o_start_response(req, &c->gen);
    char data[96];
    snprintf(data, sizeof(data), "{\"clientId\":\"%s\"}", c->id);
    rt_client_send(c, "PB_CONNECT", c->id, data, strlen(data));
}

/* A subscription request travels to the worker that owns the client and back. */
typedef struct {
    mailbox_msg_t msg;
    req_ctx_t *ctx;
    worker_t *owner;
    char client_id[CLIENT_ID_LEN + 1];
    json_t *topics; /* owned */
    json_t *auth;   /* owned copy, or NULL */
    char auth_coll_id[64];
    int superuser;
    /* result */
    int status;
    bs_error_t err;
    arena_t arena;
    /* The re-read of the identity on the owner (a read job). */
    store_job_t job;
    schema_t *schema; /* held from the re-read until the subscriptions applied */
    const collection_t *ac;
    char auth_id[101];
    json_t *now; /* owned: the record as read again */
} sub_req_t;

static void sub_req_free(sub_req_t *r)
{
    json_decref(r->topics);
    json_decref(r->auth);
    arena_free(&r->arena);
    free(r);
}

static void sub_reply(mailbox_msg_t *m)
{
    sub_req_t *r = (sub_req_t *)m;
    req_ctx_t *ctx = r->ctx;
    if (r->status == 204)
        ctx_send_empty(ctx, 204);
    else
        ctx_send_error(ctx, &r->err);
    sub_req_free(r);
    ctx_async_end(ctx);
}

static void sub_finish(sub_req_t *r);

static int run_sub_load(store_job_t *job, store_conn_t *conn)
{
    sub_req_t *r = (sub_req_t *)((char *)job - offsetof(sub_req_t, job));
    bs_error_t lerr;
    bs_error_init(&lerr);
    r->now = record_load(conn, r->ac, "id", r->auth_id, &lerr);
    return 0;
}

static void sub_loaded(mailbox_msg_t *m)
{
    sub_req_t *r = (sub_req_t *)((char *)m - offsetof(sub_req_t, job));
    sub_finish(r);
}

/* On the owner: the client, with the identity read again (or none). */
static void sub_finish(sub_req_t *r)
{
    rt_worker_t *rw = rt_rw_of(r->owner);
    /* Found again: it may have gone while the record was read. */
    rt_client_t *c = rw ? rt_client_find(rw, r->client_id) : NULL;
    schema_t *s = r->schema;
    json_t *now = r->now;
    r->now = NULL;
    if (c == NULL || c->transport != T_SSE || c->closing) {
        json_decref(now);
        r->status = 404;
        bs_error_set(&r->err, BS_ERR_NOT_FOUND, "Missing or invalid client id.");
    } else {
        const char *k0 = json_string_value(json_object_get(r->auth, "tokenKey"));
        const char *k1 = json_string_value(json_object_get(now, "tokenKey"));
        if (now == NULL || k0 == NULL || k1 == NULL || strcmp(k0, k1) != 0) {
            json_decref(now);
            now = NULL; /* no longer signed in: subscribes as anonymous */
        }
        rt_client_set_auth(c, now, now ? r->ac : NULL, now ? r->superuser : 0);
        c->auth_set = now != NULL;
        if (rt_client_subscribe(c, s, r->topics, 1, &r->err) == 0) {
            r->status = 204;
            c->last_activity_ms = util_now_ms();
            if (c->resume_from != 0) {
                uint64_t from = c->resume_from;
                c->resume_from = 0;
                rt_client_replay(c, from);
            }
        } else {
            r->status = 400;
        }
    }
    schema_release(s);
    r->schema = NULL;
    r->msg.deliver = sub_reply;
    mailbox_post(&r->ctx->worker->mailbox, &r->msg);
}

static void sub_apply(mailbox_msg_t *m)
{
    sub_req_t *r = (sub_req_t *)m;
    rt_worker_t *rw = rt_rw_of(r->owner);
    rt_client_t *c = rw ? rt_client_find(rw, r->client_id) : NULL;
    if (c == NULL || c->transport != T_SSE || c->closing) {
        r->status = 404;
        bs_error_set(&r->err, BS_ERR_NOT_FOUND, "Missing or invalid client id.");
    } else {
        const char *new_id = r->auth ? json_string_value(json_object_get(r->auth, "id")) : NULL;
        const char *old_id = c->auth ? json_string_value(json_object_get(c->auth, "id")) : NULL;
        int same = (new_id == NULL && old_id == NULL) || (new_id && old_id && strcmp(new_id, old_id) == 0 &&
                                                          strcmp(r->auth_coll_id, c->auth_coll_id) == 0);
        if (c->auth_set && c->auth != NULL && !same) {
            r->status = 403;
            bs_error_set(&r->err, BS_ERR_FORBIDDEN,
                         "The current and the previous request authorization don't match.");
        } else {
            r->schema = schema_acquire();
            r->ac = r->auth ? schema_find(r->schema, r->auth_coll_id) : NULL;
            /* The token was checked on the worker that took the request; a revocation
             * or change of the record may have reached this worker since (its event
             * then found no client signed in as it). The record is read again here,
             * where the events for this client are handled, as a read job on this
             * worker: what this read misses comes as an event afterwards. */
            if (r->ac != NULL && new_id != NULL && strlen(new_id) < sizeof(r->auth_id)) {
                memcpy(r->auth_id, new_id, strlen(new_id) + 1);
                r->job.msg.deliver = sub_loaded;
                r->job.reply_to = &r->owner->mailbox;
                r->job.run = run_sub_load;
                r->job.arena = &r->arena;
                store_read(worker_settings()->store, r->owner->idx, &r->job);
                return;
            }
            sub_finish(r);
            return;
        }
    }
    r->msg.deliver = sub_reply;
    mailbox_post(&r->ctx->worker->mailbox, &r->msg);
}

void realtime_sse_subscribe(req_ctx_t *ctx)
{
    bs_error_t err;
    bs_error_init(&err);
    json_t *body = ctx_body(ctx, &err);
    if (body == NULL) {
        ctx_send_error(ctx, &err);
        return;
    }
    const char *cid = json_string_value(json_object_get(body, "clientId"));
    json_t *subs = json_object_get(body, "subscriptions");
    if (cid == NULL || cid[0] == '\0') {
        bs_error_field(&err, &ctx->arena, "clientId", "validation_required", "Cannot be blank.");
        bs_error_set(&err, BS_ERR_BAD_REQUEST,
                     "Failed to load the submitted data due to invalid formatting.");
    } else if (subs != NULL && !json_is_null(subs) && !json_is_array(subs)) {
        bs_error_field(&err, &ctx->arena, "subscriptions", "validation_invalid",
                       "Must be an array of topics.");
        bs_error_set(&err, BS_ERR_BAD_REQUEST,
                     "Failed to load the submitted data due to invalid formatting.");
    }
    if (err.code != BS_ERR_OK) {
        json_decref(body);
        ctx_send_error(ctx, &err);
        return;
    }
    /* The owner is named by the id's first two hex digits. */
    unsigned idx = 0;
    worker_t *owner = NULL;
    if (strlen(cid) == CLIENT_ID_LEN && sscanf(cid, "%2x", &idx) == 1)
        owner = server_worker((int)idx);
    if (owner == NULL) {
        json_decref(body);
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, "Missing or invalid client id.");
        return;
    }
    sub_req_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        json_decref(body);
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    arena_init(&r->arena, 1024);
    bs_error_init(&r->err);
    r->ctx = ctx;
    r->owner = owner;
    snprintf(r->client_id, sizeof(r->client_id), "%s", cid);
    r->topics = json_is_array(subs) ? json_incref(subs) : json_array();
    r->auth = ctx->auth ? json_deep_copy(ctx->auth) : NULL;
    if (ctx->who.auth_coll)
        snprintf(r->auth_coll_id, sizeof(r->auth_coll_id), "%s", ctx->who.auth_coll->id);
    r->superuser = ctx->who.superuser;
    json_decref(body);
    ctx_async_begin(ctx);
    r->msg.deliver = sub_apply;
    mailbox_post(&owner->mailbox, &r->msg);
}
