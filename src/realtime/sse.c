/* PocketBase's realtime over SSE: GET /api/realtime (the stream) and POST
 * /api/realtime (its subscriptions, applied on the worker that holds the stream). */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "realtime/rt_conn.h"

static void sse_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    rt_client_t *c = H2O_STRUCT_FROM_MEMBER(rt_client_t, gen, gen);
    rt_client_written(c);
    rt_client_continue(c);
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
typedef struct sub_req {
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
    /* The client registry (below): the request's row in _realtime_requests, when it
     * came from another instance (remote: ctx is NULL, the answer goes to the row) or
     * went to one (pending on this instance until the answer is read). */
    int remote;
    char row[16];
    uint64_t deadline_ns;
    struct sub_req *next_pending;
} sub_req_t;

static void sub_done(sub_req_t *r);

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
    sub_done(r);
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
    sub_done(r);
}

/* ---- The client registry across instances (ADR 0006) ----
 *
 * The SDK opens its stream on one instance and POSTs its subscriptions, which a load
 * balancer may send to another. A client id carries the tag of the instance that
 * holds the stream; a POST for another instance's client, its token checked here as
 * usual, becomes a row of `_realtime_requests` (client, topics, the signed-in
 * record's id and tokenKey), committed like any write: the commit's NOTIFY wakes the
 * other instances' writers, the one that holds the client claims the row and applies
 * the request on the stream's worker exactly as a local one (the identity rules, the
 * re-read of the record, the replay of missed events), and writes the answer to the
 * row; its commit's NOTIFY wakes this instance, which answers the POST. So the POST
 * is answered only after the subscriptions are in force on the stream. A request
 * nobody claims within REGISTRY_WAIT_NS is answered 404, as an unknown client is.
 * PostgreSQL only: on SQLite one instance holds every stream. */
#define REGISTRY_WAIT_NS 5000000000ull
#define REGISTRY_KEEP_MS 60000

static int registry_on;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static sub_req_t *pending; /* forwarded requests waiting for their answer */
static char tag[RT_INSTANCE_TAG_LEN + 1];
static pthread_once_t tag_once = PTHREAD_ONCE_INIT;

static void tag_init(void)
{
    char rnd[16];
    util_random_id(rnd);
    memcpy(tag, rnd, RT_INSTANCE_TAG_LEN);
    tag[RT_INSTANCE_TAG_LEN] = '\0';
}

const char *rt_instance_tag(void)
{
    pthread_once(&tag_once, tag_init);
    return tag;
}

void realtime_registry_enable(void)
{
    rt_instance_tag();
    registry_on = 1;
}

static sub_req_t *sub_of_job(store_job_t *job)
{
    return (sub_req_t *)((char *)job - offsetof(sub_req_t, job));
}

static bs_code_t code_of_status(int status)
{
    return status == 400   ? BS_ERR_BAD_REQUEST
           : status == 403 ? BS_ERR_FORBIDDEN
           : status == 404 ? BS_ERR_NOT_FOUND
           : status == 503 ? BS_ERR_UNAVAILABLE
                           : BS_ERR_INTERNAL;
}

static int run_fwd_insert(store_job_t *job, store_conn_t *conn)
{
    sub_req_t *r = sub_of_job(job);
    json_t *req =
        json_pack("{s:s, s:O, s:s?, s:s?, s:s, s:b}", "client", r->client_id, "topics", r->topics, "authId",
                  r->auth ? json_string_value(json_object_get(r->auth, "id")) : NULL, "tokenKey",
                  r->auth ? json_string_value(json_object_get(r->auth, "tokenKey")) : NULL, "authColl",
                  r->auth_coll_id, "superuser", r->superuser);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (text == NULL) {
        bs_error_set(&job->err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    char target[RT_INSTANCE_TAG_LEN + 1];
    memcpy(target, r->client_id + 2, RT_INSTANCE_TAG_LEN);
    target[RT_INSTANCE_TAG_LEN] = '\0';
    bs_value_t p[5] = {bs_val_text(r->row, strlen(r->row)), bs_val_text(tag, strlen(tag)),
                       bs_val_text(target, strlen(target)), bs_val_text(text, strlen(text)),
                       bs_val_int(util_now_ms())};
    int64_t n = store_exec(conn,
                           "INSERT INTO _realtime_requests (id, origin, target, request, created) "
                           "VALUES (?1, ?2, ?3, ?4, ?5)",
                           p, 5, &job->err);
    free(text);
    return n < 0 ? -1 : 0;
}

/* On the POST's worker: the row is committed; wait for its answer. */
static void fwd_inserted(mailbox_msg_t *m)
{
    sub_req_t *r = sub_of_job((store_job_t *)m);
    if (r->job.status != 0) {
        r->status = 503;
        bs_error_set(
            &r->err, BS_ERR_UNAVAILABLE,
            "The subscription could not be handed to the instance that holds this stream; please retry.");
        sub_reply(&r->msg);
        return;
    }
    r->deadline_ns = util_mono_ns() + REGISTRY_WAIT_NS;
    pthread_mutex_lock(&reg_lock);
    r->next_pending = pending;
    pending = r;
    pthread_mutex_unlock(&reg_lock);
}

static void forward(sub_req_t *r)
{
    util_random_id(r->row);
    r->row[15] = '\0';
    r->job.msg.deliver = fwd_inserted;
    r->job.reply_to = &r->ctx->worker->mailbox;
    r->job.run = run_fwd_insert;
    r->job.arena = &r->arena;
    store_submit(worker_settings()->store, &r->job);
}

static int run_fwd_answer(store_job_t *job, store_conn_t *conn)
{
    sub_req_t *r = sub_of_job(job);
    json_t *a = json_pack("{s:s}", "message", r->err.message);
    char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    bs_value_t p[3] = {bs_val_text(r->row, strlen(r->row)), bs_val_int(r->status),
                       text ? bs_val_text(text, strlen(text)) : bs_val_null()};
    int64_t n = store_exec(conn, "UPDATE _realtime_requests SET status = ?2, answer = ?3 WHERE id = ?1", p, 3,
                           &job->err);
    free(text);
    return n < 0 ? -1 : 0;
}

static void fwd_answered(mailbox_msg_t *m)
{
    sub_req_t *r = sub_of_job((store_job_t *)m);
    if (r->job.status != 0)
        LOGF(LOG_WARN, "realtime", "cannot answer a forwarded subscription request: %s", r->job.err.message);
    sub_req_free(r);
}

/* The end of a request on the stream's worker: back to the POST's worker, or (from
 * another instance) the answer written to its row. */
static void sub_done(sub_req_t *r)
{
    if (!r->remote) {
        r->msg.deliver = sub_reply;
        mailbox_post(&r->ctx->worker->mailbox, &r->msg);
        return;
    }
    bs_error_init(&r->job.err);
    r->job.msg.deliver = fwd_answered;
    r->job.reply_to = &r->owner->mailbox;
    r->job.run = run_fwd_answer;
    r->job.arena = &r->arena;
    r->job.events = NULL;
    store_submit(worker_settings()->store, &r->job);
}

/* Writer thread: a request from another instance for one of this instance's clients. */
static void take_request(store_conn_t *conn, const char *row, const char *text, size_t n)
{
    bs_error_t err;
    bs_error_init(&err);
    bs_value_t id = bs_val_text(row, strlen(row));
    if (store_exec(conn, "UPDATE _realtime_requests SET status = 0 WHERE id = ?1 AND status IS NULL", &id, 1,
                   &err) != 1)
        return; /* claimed already, or the database is away (the origin answers 404 in time) */
    json_t *req = json_loadb(text, n, 0, NULL);
    const char *cid = json_string_value(json_object_get(req, "client"));
    json_t *topics = json_object_get(req, "topics");
    const char *auth_id = json_string_value(json_object_get(req, "authId"));
    const char *key = json_string_value(json_object_get(req, "tokenKey"));
    const char *coll = json_string_value(json_object_get(req, "authColl"));
    sub_req_t *r = calloc(1, sizeof(*r));
    if (r == NULL || cid == NULL || strlen(cid) != CLIENT_ID_LEN || !json_is_array(topics) || coll == NULL ||
        strlen(row) >= sizeof(r->row)) {
        free(r);
        json_decref(req);
        return;
    }
    arena_init(&r->arena, 1024);
    bs_error_init(&r->err);
    r->remote = 1;
    snprintf(r->row, sizeof(r->row), "%s", row);
    snprintf(r->client_id, sizeof(r->client_id), "%s", cid);
    r->topics = json_incref(topics);
    if (auth_id != NULL && key != NULL)
        r->auth = json_pack("{s:s, s:s}", "id", auth_id, "tokenKey", key);
    snprintf(r->auth_coll_id, sizeof(r->auth_coll_id), "%s", coll);
    r->superuser = json_is_true(json_object_get(req, "superuser"));
    json_decref(req);
    unsigned idx = 0;
    r->owner = sscanf(r->client_id, "%2x", &idx) == 1 ? server_worker((int)idx) : NULL; /* req is gone */
    if (r->owner == NULL) {
        r->owner = server_worker(0);
        r->status = 404;
        bs_error_set(&r->err, BS_ERR_NOT_FOUND, "Missing or invalid client id.");
        sub_done(r);
        return;
    }
    r->msg.deliver = sub_apply;
    mailbox_post(&r->owner->mailbox, &r->msg);
}

/* Writer thread: the answer to one of this instance's forwarded requests. */
static void take_answer(store_conn_t *conn, const char *row, int status, const char *text, size_t n)
{
    pthread_mutex_lock(&reg_lock);
    sub_req_t **pp = &pending, *r = NULL;
    for (; *pp != NULL; pp = &(*pp)->next_pending)
        if (strcmp((*pp)->row, row) == 0) {
            r = *pp;
            *pp = r->next_pending;
            break;
        }
    pthread_mutex_unlock(&reg_lock);
    if (r == NULL)
        return; /* not registered yet (its insert is still coming back): next tick */
    r->status = status;
    if (status != 204) {
        json_t *a = text ? json_loadb(text, n, 0, NULL) : NULL;
        const char *msg = json_string_value(json_object_get(a, "message"));
        bs_error_set(&r->err, code_of_status(status), "%s", msg && msg[0] ? msg : "The subscription failed.");
        json_decref(a);
    }
    bs_error_t err;
    bs_error_init(&err);
    bs_value_t id = bs_val_text(row, strlen(row));
    store_exec(conn, "DELETE FROM _realtime_requests WHERE id = ?1", &id, 1, &err);
    r->msg.deliver = sub_reply;
    mailbox_post(&r->ctx->worker->mailbox, &r->msg);
}

void realtime_registry_tick(store_conn_t *conn, int external)
{
    if (!registry_on)
        return;
    static uint64_t last_read_ns, last_prune_ns;
    uint64_t now = util_mono_ns();
    /* Requests that nobody claimed in time: no instance holds the client. */
    pthread_mutex_lock(&reg_lock);
    sub_req_t *expired = NULL;
    int waiting = pending != NULL;
    for (sub_req_t **pp = &pending; *pp != NULL;) {
        sub_req_t *r = *pp;
        if (r->deadline_ns < now) {
            *pp = r->next_pending;
            r->next_pending = expired;
            expired = r;
        } else {
            pp = &r->next_pending;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    while (expired != NULL) {
        sub_req_t *r = expired;
        expired = r->next_pending;
        r->status = 404;
        bs_error_set(&r->err, BS_ERR_NOT_FOUND,
                     "Missing or invalid client id (no instance holds this stream).");
        r->msg.deliver = sub_reply;
        mailbox_post(&r->ctx->worker->mailbox, &r->msg);
    }
    /* Commits of others wake us; a slow poll covers a lost notification. */
    if (!external && !(waiting && now - last_read_ns >= 200000000ull) && now - last_read_ns < 1000000000ull)
        return;
    last_read_ns = now;
    bs_error_t err;
    bs_error_init(&err);
    bs_value_t me = bs_val_text(tag, strlen(tag));
    store_stmt_t *st = store_query(
        conn,
        "SELECT id, request, status, answer, origin FROM _realtime_requests WHERE (target = ?1 AND status IS "
        "NULL) OR (origin = ?1 AND status IS NOT NULL AND status <> 0)",
        &me, 1, &err);
    if (st == NULL)
        return;
    /* Collected first: the statement's row text is gone once the next one runs. */
    json_t *rows = json_array();
    while (store_step(st, &err) == 1) {
        bs_value_t id = store_col(st, 0), req = store_col(st, 1), status = store_col(st, 2),
                   answer = store_col(st, 3), origin = store_col(st, 4);
        if (id.type != BS_VAL_TEXT || req.type != BS_VAL_TEXT || origin.type != BS_VAL_TEXT)
            continue;
        json_array_append_new(
            rows,
            json_pack("{s:s%, s:s%, s:I, s:s%, s:b}", "id", id.s, id.n, "request", req.s, req.n, "status",
                      (json_int_t)(status.type == BS_VAL_INT ? status.i : -1), "answer",
                      answer.type == BS_VAL_TEXT ? answer.s : "", answer.type == BS_VAL_TEXT ? answer.n : 0,
                      "mine", origin.n == strlen(tag) && memcmp(origin.s, tag, origin.n) == 0));
    }
    store_done(st);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        const char *id = json_string_value(json_object_get(row, "id"));
        json_int_t status = json_integer_value(json_object_get(row, "status"));
        if (json_is_true(json_object_get(row, "mine")) && status > 0) {
            const char *a = json_string_value(json_object_get(row, "answer"));
            take_answer(conn, id, (int)status, a, strlen(a));
        } else if (status == -1) {
            const char *q = json_string_value(json_object_get(row, "request"));
            take_request(conn, id, q, strlen(q));
        }
    }
    json_decref(rows);
    if (now - last_prune_ns >= 10000000000ull) {
        last_prune_ns = now;
        bs_value_t cut = bs_val_int(util_now_ms() - REGISTRY_KEEP_MS);
        store_exec(conn, "DELETE FROM _realtime_requests WHERE created < ?1", &cut, 1, &err);
    }
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
    if (registry_on && memcmp(r->client_id + 2, rt_instance_tag(), RT_INSTANCE_TAG_LEN) != 0) {
        forward(r); /* the stream is held by another instance */
        return;
    }
    r->msg.deliver = sub_apply;
    mailbox_post(&owner->mailbox, &r->msg);
}
