/*
 * The worker side of realtime connections (whatever their transport): their output,
 * their identities (which follow the signed-in record), idle time-outs, drain and
 * the worker's life. Everything here runs on the worker thread that owns the
 * connection; other threads reach a connection only through the worker's mailbox.
 * The transports are in sse.c and ws.c, subscriptions in rt_sub.c, delivery and
 * replay in rt_deliver.c.
 *
 * Output: each connection has a queue of frames (rt_frame.h: references to bytes
 * built once and shared between connections), of which the first `inflight` are in
 * the one write in flight. The queue's bytes are bounded by queue_bytes; a
 * connection over the bound is a slow consumer and is closed with a reason, so
 * that it never holds back the others (delivery only appends to its queue).
 * Deliveries are written once per loop turn: a connection that got events is
 * marked (the worker's dirty list) and written, all its frames in one writev, when
 * the turn ends, so a connection that several events reach in one turn costs one
 * system call, not one per event.
 *
 * A turn writes at most FLUSH_SLICE connections, oldest mark first, and the loop
 * comes straight back for the rest (worker_t.more) after reading what has arrived:
 * a fan-out to thousands no longer holds the loop's requests for its whole length,
 * and an event that arrives while it runs joins the frames of every connection not
 * yet written, which then costs one write for both (events meet under load, and
 * only under load: an idle loop's lone event goes out in the turn it came).
 */
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "metrics/metrics.h"
#include "realtime/rt_conn.h"
#include "realtime/rt_frame.h"
#include "realtime/wsframe.h"

realtime_auth_fn rt_authenticate;
static uint64_t n_sse, n_ws; /* atomic gauges */
uint64_t rt_n_subs;

void realtime_set_authenticator(realtime_auth_fn fn)
{
    rt_authenticate = fn;
}

void realtime_gauges(uint64_t out[4])
{
    out[0] = __atomic_load_n(&n_sse, __ATOMIC_RELAXED);
    out[1] = __atomic_load_n(&n_ws, __ATOMIC_RELAXED);
    out[2] = __atomic_load_n(&rt_n_subs, __ATOMIC_RELAXED);
    out[3] = rt_log_count();
}

uint64_t rt_total_connections(void)
{
    return __atomic_load_n(&n_sse, __ATOMIC_RELAXED) + __atomic_load_n(&n_ws, __ATOMIC_RELAXED);
}

/* ---- output ---- */

/* The first c->inflight frames were written: they leave the queue. */
void rt_client_written(rt_client_t *c)
{
    c->writing = 0;
    rt_outq_drop_front(&c->out, c->inflight);
    c->inflight = 0;
}

static void ws_written(h2o_socket_t *sock, const char *err)
{
    rt_client_t *c = sock->data;
    if (c == NULL)
        return;
    rt_client_written(c);
    if (err != NULL) {
        rt_client_teardown(c);
        return;
    }
    rt_client_continue(c);
}

void rt_client_continue(rt_client_t *c)
{
    /* A connection marked by deliveries waits for its turn on the list (oldest first,
     * a slice per turn), and takes with it whatever else reaches it meanwhile. */
    if (c->dirty && !c->closing)
        return;
    rt_client_flush(c);
}

/* Frames per write: their iovecs are on the stack (h2o copies the array; the frames
 * stay referenced by the queue until the write completes). A longer queue goes in
 * several writes, each one system call. */
#define WRITE_FRAMES 256

/* Starts a write of the queue if none is in flight; ends the connection once a
 * closing one has written everything. */
void rt_client_flush(rt_client_t *c)
{
    if (c->writing || c->dead)
        return;
    if (c->out.n == 0) {
        if (!c->closing)
            return;
        if (c->transport == T_SSE) {
            if (c->req != NULL) {
                c->writing = 1;
                h2o_send(c->req, NULL, 0, H2O_SEND_STATE_FINAL);
            }
        } else {
            rt_client_teardown(c);
        }
        return;
    }
    uint32_t n = c->out.n < WRITE_FRAMES ? c->out.n : WRITE_FRAMES;
    h2o_iovec_t iov[WRITE_FRAMES];
    for (uint32_t i = 0; i < n; i++)
        iov[i] = h2o_iovec_init(c->out.v[i]->data, c->out.v[i]->len);
    c->inflight = n;
    c->writing = 1;
    if (c->transport == T_SSE) {
        if (c->req == NULL)
            return;
        int final = c->closing && n == c->out.n;
        h2o_send(c->req, iov, n, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
    } else {
        h2o_socket_write(c->sock, iov, n, ws_written);
    }
}

/* Queued plus in-flight bytes. */
static size_t client_backlog(const rt_client_t *c)
{
    return c->out.bytes;
}

/* Appends a frame without the bound (the server's own close and ping frames). */
static void queue_unbounded(rt_client_t *c, rt_frame_t *f)
{
    if (f != NULL)
        rt_outq_push(&c->out, f);
}

void rt_ws_frame(rt_client_t *c, int op, const char *p, size_t n)
{
    queue_unbounded(c, rt_frame_ws(op, p, n));
}

/* Queues a control frame (a pong) under the same bound as messages: a client that
 * sends pings and never reads fills its queue like any slow consumer. Returns 0, or
 * -1 when the connection was closed instead. */
int rt_ws_control(rt_client_t *c, int op, const char *p, size_t n)
{
    if (c->closing || c->dead)
        return -1;
    if (client_backlog(c) + n + 10 > rt_config()->queue_bytes) {
        metrics_add(&metrics_g.rt_closed_slow, 1);
        rt_client_close(c, WS_CLOSE_POLICY,
                        "slow consumer: the connection's queue is full; reconnect and resume");
        return -1;
    }
    rt_ws_frame(c, op, p, n);
    rt_client_flush(c);
    return 0;
}

/* Ends a connection with a reason: SSE gets a last event, WebSocket a close frame. */
void rt_client_close(rt_client_t *c, int code, const char *reason)
{
    if (c->closing || c->dead)
        return;
    if (c->transport == T_SSE) {
        buf_t b;
        buf_init(&b, NULL);
        buf_printf(&b, "{\"code\":%d,\"message\":", code);
        util_json_quote(&b, reason, strlen(reason));
        buf_putc(&b, '}');
        if (!b.oom)
            queue_unbounded(c, rt_frame_message(0, "PB_ERROR", NULL, b.data, b.len));
        buf_free(&b);
    } else {
        char p[128];
        size_t rn = strlen(reason);
        /* A control frame holds 125 bytes: the reason is cut, at a character
         * boundary so that it stays UTF-8 (RFC 6455 7.1.6). */
        if (rn > 120) {
            rn = 120;
            while (rn > 0 && ((unsigned char)reason[rn] & 0xC0) == 0x80)
                rn--;
        }
        /* 1005, 1006, 1015 and reserved codes must never be sent (RFC 6455 7.4.1). */
        if (!ws_close_code_valid(code))
            code = WS_CLOSE_INTERNAL;
        p[0] = (char)(code >> 8);
        p[1] = (char)(code & 0xFF);
        memcpy(p + 2, reason, rn);
        rt_ws_frame(c, WS_OP_CLOSE, p, rn + 2);
        if (c->sock != NULL)
            h2o_socket_read_stop(c->sock);
    }
    c->closing = 1;
    c->closing_since_ms = util_now_ms();
    rt_client_flush(c);
}

/* Marks the client to be written at the end of the loop turn (rt_flush_dirty), after
 * the ones marked before it. A client already marked keeps its place. */
static void defer_flush(rt_client_t *c)
{
    if (c->dirty)
        return;
    rt_worker_t *rw = c->rw;
    c->dirty = 1;
    c->dirty_next = NULL;
    c->dirty_prev = rw->dirty_tail;
    if (rw->dirty_tail)
        rw->dirty_tail->dirty_next = c;
    else
        rw->dirty = c;
    rw->dirty_tail = c;
}

static void dirty_unlink(rt_client_t *c)
{
    if (!c->dirty)
        return;
    rt_worker_t *rw = c->rw;
    if (c->dirty_prev)
        c->dirty_prev->dirty_next = c->dirty_next;
    else
        rw->dirty = c->dirty_next;
    if (c->dirty_next)
        c->dirty_next->dirty_prev = c->dirty_prev;
    else
        rw->dirty_tail = c->dirty_prev;
    c->dirty = 0;
}

/* Connections written per call: about 1.5 ms of loopback writes here, between two
 * looks at the loop's sockets (see the file's comment). */
#define FLUSH_SLICE 256

void rt_flush_dirty(rt_worker_t *rw)
{
    for (int n = 0; rw->dirty != NULL; n++) {
        if (n == FLUSH_SLICE) {
            rw->w->more = 1;
            return;
        }
        rt_client_t *c = rw->dirty;
        dirty_unlink(c);
        rt_client_flush(c);
    }
}

int rt_client_queue(rt_client_t *c, rt_frame_t *f, int deferred)
{
    if (c->closing || c->dead) {
        rt_frame_unref(f);
        return -1;
    }
    if (client_backlog(c) + f->len > rt_config()->queue_bytes) {
        rt_frame_unref(f);
        metrics_add(&metrics_g.rt_closed_slow, 1);
        rt_client_close(c, c->transport == T_WS ? WS_CLOSE_POLICY : 1008,
                        "slow consumer: the connection's queue is full; reconnect and resume");
        return -1;
    }
    if (rt_outq_push(&c->out, f) != 0)
        return -1;
    c->last_activity_ms = util_now_ms();
    if (deferred)
        defer_flush(c);
    else
        rt_client_flush(c);
    return 0;
}

/* Appends one message (a JSON text) for the client, enforcing the queue bound. */
void rt_client_send(rt_client_t *c, const char *sse_event, const char *sse_id, const char *json, size_t n)
{
    if (c->closing || c->dead)
        return;
    rt_frame_t *f = rt_frame_message(c->transport == T_WS, sse_event, sse_id, json, n);
    if (f != NULL)
        rt_client_queue(c, f, 0);
}

/* ---- identities: the index by signed-in record ---- */

static uint64_t fnv1a(uint64_t x, const char *p)
{
    for (; p != NULL && *p; p++)
        x = (x ^ (unsigned char)*p) * 1099511628211ull;
    return x;
}

static size_t auth_slot_of(const char *coll_id, const char *rec_id)
{
    return (size_t)(fnv1a(fnv1a(1469598103934665603ull, coll_id) * 31, rec_id) % RT_AUTH_SLOTS);
}

/* Only a fingerprint is kept: the secret itself stays in the schema. */
static uint64_t secret_hash(const collection_t *coll)
{
    return coll ? fnv1a(1469598103934665603ull, coll->token_secret ? coll->token_secret : "") : 0;
}

static void auth_unlink(rt_client_t *c)
{
    if (!c->auth_linked)
        return;
    if (c->auth_prev)
        c->auth_prev->auth_next = c->auth_next;
    else
        c->rw->auth_index[c->auth_slot] = c->auth_next;
    if (c->auth_next)
        c->auth_next->auth_prev = c->auth_prev;
    c->auth_prev = c->auth_next = NULL;
    c->auth_linked = 0;
}

static void auth_link(rt_client_t *c)
{
    const char *id = json_string_value(json_object_get(c->auth, "id"));
    rt_worker_t *rw = c->rw;
    if (id == NULL || rw->auth_index == NULL)
        return;
    c->auth_slot = auth_slot_of(c->auth_coll_id, id);
    c->auth_next = rw->auth_index[c->auth_slot];
    if (c->auth_next)
        c->auth_next->auth_prev = c;
    c->auth_prev = NULL;
    rw->auth_index[c->auth_slot] = c;
    c->auth_linked = 1;
}

/* ---- clients ---- */

rt_worker_t *rt_rw_of(worker_t *w)
{
    return w->rt;
}

rt_client_t *rt_client_new(rt_worker_t *rw, int transport)
{
    rt_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->rw = rw;
    c->transport = transport;
    /* The owning worker's index leads the id so that a POST arriving on another
     * worker knows where to send it. */
    char rnd[16 * 3];
    snprintf(c->id, 3, "%02x", (unsigned)rw->w->idx & 0xFF);
    /* Then this instance's tag, so that a POST that a load balancer sends to another
     * instance is forwarded here (sse.c, the client registry). */
    memcpy(c->id + 2, rt_instance_tag(), RT_INSTANCE_TAG_LEN);
    for (size_t i = 0; i < 3; i++)
        util_random_id(rnd + i * 15);
    memcpy(c->id + 2 + RT_INSTANCE_TAG_LEN, rnd, CLIENT_ID_LEN - 2 - RT_INSTANCE_TAG_LEN);
    c->id[CLIENT_ID_LEN] = '\0';
    buf_init(&c->msg, NULL);
    c->last_activity_ms = c->last_ping_ms = util_now_ms();
    c->min_id = rt_log_last_id();
    c->next = rw->clients;
    if (rw->clients)
        rw->clients->prev = c;
    rw->clients = c;
    rw->nclients++;
    __atomic_add_fetch(transport == T_SSE ? &n_sse : &n_ws, 1, __ATOMIC_RELAXED);
    rt_worker_has_clients(rw->w, 1);
    return c;
}

/* Unlinks and frees; the transport is already finished with it. */
void rt_client_free(rt_client_t *c)
{
    rt_worker_t *rw = c->rw;
    dirty_unlink(c);
    if (c->guard != NULL)
        c->guard->c = NULL;
    rt_client_clear_subs(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        rw->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    rw->nclients--;
    auth_unlink(c);
    __atomic_sub_fetch(c->transport == T_SSE ? &n_sse : &n_ws, 1, __ATOMIC_RELAXED);
    if (rw->nclients == 0)
        rt_worker_has_clients(rw->w, 0);
    json_decref(c->auth);
    rt_outq_free(&c->out);
    buf_free(&c->msg);
    free(c);
}

/* The peer is gone (or the WebSocket finished closing). */
void rt_client_teardown(rt_client_t *c)
{
    if (c->dead)
        return;
    c->dead = 1;
    if (c->transport == T_WS && c->sock != NULL) {
        h2o_socket_t *s = c->sock;
        c->sock = NULL;
        s->data = NULL;
        h2o_socket_close(s);
    }
    rt_client_free(c);
}

void rt_client_set_auth(rt_client_t *c, json_t *auth, const collection_t *coll, int superuser)
{
    auth_unlink(c);
    json_decref(c->auth);
    c->auth = coll ? auth : (json_decref(auth), NULL);
    snprintf(c->auth_coll_id, sizeof(c->auth_coll_id), "%s", c->auth ? coll->id : "");
    c->auth_secret_hash = c->auth ? secret_hash(coll) : 0;
    c->superuser = c->auth ? superuser : 0;
    c->auth_coll_version = 0; /* looked up again */
    if (c->auth)
        auth_link(c);
}

const collection_t *rt_client_auth_coll(rt_client_t *c, const schema_t *s)
{
    /* Looked up once per schema version, not per event. */
    if (c->auth_coll_version != s->version) {
        c->auth_coll = c->auth_coll_id[0] ? schema_find(s, c->auth_coll_id) : NULL;
        c->auth_coll_version = s->version;
    }
    return c->auth_coll;
}

rt_client_t *rt_client_find(rt_worker_t *rw, const char *id)
{
    for (rt_client_t *c = rw->clients; c != NULL; c = c->next)
        if (!c->dead && strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

/* ---- identities follow their records ---- */

/* The signed-in record was deleted, its tokens revoked (a new tokenKey: revoke-tokens
 * or a password change) or its collection's token secret changed: the connection is
 * no longer signed in. A WebSocket is closed with 1008 and the reason (its protocol
 * has no way to say "you are anonymous now" that a client could miss); an SSE stream
 * stays, as anonymous, as PocketBase does, and its next subscription request may sign
 * in anew. Never called while a bucket is being walked: it may remove subscriptions. */
static void auth_lost(rt_client_t *c, const schema_t *s, const char *why)
{
    rt_client_set_auth(c, NULL, NULL, 0);
    if (c->transport == T_WS) {
        rt_client_close(c, WS_CLOSE_POLICY, why);
    } else {
        c->auth_set = 0;
        rt_client_recheck_subs(c, s);
    }
}

static const char why_revoked[] =
    "signed out: the account's tokens were revoked or its password changed; sign in again",
                  why_deleted[] = "signed out: the account was deleted; sign in again",
                  why_secret[] =
                      "signed out: the account's collection or its token secret changed; sign in again";

/* A change of a record of an auth collection, before it is delivered: the clients
 * signed in as it take the new record (rules are then evaluated with its new values)
 * or lose their identity. */
void rt_auth_record_changed(rt_worker_t *rw, const schema_t *s, const rt_event_t *ev)
{
    if (rw->auth_index == NULL)
        return;
    for (rt_client_t *c = rw->auth_index[auth_slot_of(ev->coll_id, ev->rec_id)], *next; c != NULL; c = next) {
        next = c->auth_next;
        const char *id = json_string_value(json_object_get(c->auth, "id"));
        if (c->dead || c->closing || strcmp(c->auth_coll_id, ev->coll_id) != 0 || id == NULL ||
            strcmp(id, ev->rec_id) != 0)
            continue;
        if (ev->action == RT_DELETE) {
            auth_lost(c, s, why_deleted);
            continue;
        }
        const char *was = json_string_value(json_object_get(c->auth, "tokenKey"));
        const char *now = json_string_value(json_object_get(rt_event_record(ev), "tokenKey"));
        if (was == NULL || now == NULL || strcmp(was, now) != 0) {
            auth_lost(c, s, why_revoked);
            continue;
        }
        /* A copy: the event's record is shared with other threads. */
        json_t *fresh = json_deep_copy(rt_event_record(ev));
        if (fresh == NULL) {
            auth_lost(c, s, why_revoked); /* fail closed */
            continue;
        }
        json_decref(c->auth);
        c->auth = fresh;
    }
}

/* After a schema change: identities whose auth collection is gone or has a new token
 * secret end (every token of that collection is void). */
void rt_auth_check_schema(rt_worker_t *rw, const schema_t *s)
{
    if (rw->auth_schema_version == s->version)
        return;
    rw->auth_schema_version = s->version;
    for (rt_client_t *c = rw->clients, *next; c != NULL; c = next) {
        next = c->next;
        if (c->dead || c->closing || c->auth == NULL)
            continue;
        const collection_t *ac = schema_find(s, c->auth_coll_id);
        if (ac == NULL || ac->type != COLL_AUTH || secret_hash(ac) != c->auth_secret_hash)
            auth_lost(c, s, why_secret);
    }
}

/* ---- worker lifecycle ---- */

static void sweep(rt_worker_t *rw, int64_t now)
{
    const realtime_config_t *cfg = rt_config();
    if (rw->clients != NULL) {
        /* A schema change may come with no event after it. */
        schema_t *s = schema_acquire();
        rt_auth_check_schema(rw, s);
        schema_release(s);
    }
    for (rt_client_t *c = rw->clients, *next; c != NULL; c = next) {
        next = c->next;
        if (c->dead)
            continue;
        if (c->closing) {
            /* A peer that does not read its close frame within a ping interval is cut. */
            if (c->transport == T_WS && now - c->closing_since_ms >= cfg->ping_interval_ms)
                rt_client_teardown(c);
            continue;
        }
        if (now - c->last_activity_ms >= cfg->idle_timeout_ms) {
            metrics_add(&metrics_g.rt_closed_idle, 1);
            rt_client_close(c, c->transport == T_WS ? WS_CLOSE_GOING_AWAY : 408, "idle timeout");
            continue;
        }
        if (now - c->last_ping_ms >= cfg->ping_interval_ms) {
            c->last_ping_ms = now;
            /* A ping (WebSocket) or a comment (SSE) finds dead peers and keeps
             * proxies from closing a quiet connection. Neither counts as activity. */
            if (client_backlog(c) == 0) {
                if (c->transport == T_WS)
                    rt_ws_frame(c, WS_OP_PING, "", 0);
                else
                    queue_unbounded(c, rt_frame_new(":ping\n\n", 7));
                rt_client_flush(c);
            }
        }
    }
}

static void drain(rt_worker_t *rw)
{
    rw->draining = 1;
    const realtime_config_t *cfg = rt_config();
    for (rt_client_t *c = rw->clients, *next; c != NULL; c = next) {
        next = c->next;
        if (c->closing || c->dead)
            continue;
        if (c->transport == T_SSE) {
            char hint[128];
            int hl = snprintf(
                hint, sizeof(hint),
                "retry:%d\nevent:PB_RECONNECT\ndata:{\"reason\":\"server restarting\",\"retryMs\":%d}\n\n",
                cfg->reconnect_hint_ms, cfg->reconnect_hint_ms);
            if (hl > 0 && (size_t)hl < sizeof(hint))
                queue_unbounded(c, rt_frame_new(hint, (size_t)hl));
            c->closing = 1;
            c->closing_since_ms = util_now_ms();
            rt_client_flush(c);
        } else {
            rt_client_close(c, WS_CLOSE_RESTART, "server restarting; reconnect");
        }
    }
}

void realtime_worker_event(worker_t *w, int event)
{
    rt_worker_t *rw = w->rt;
    switch (event) {
    case SERVER_WORKER_START:
        rw = calloc(1, sizeof(*rw));
        if (rw == NULL)
            return;
        rw->w = w;
        rw->auth_index = calloc(RT_AUTH_SLOTS, sizeof(*rw->auth_index));
        if (rw->auth_index == NULL) {
            free(rw);
            return;
        }
        arena_init(&rw->rules_arena, 4096);
        rw->jobs_tail = &rw->jobs_head;
        rw->last_sweep_ms = util_now_ms();
        w->rt = rw;
        rt_register_worker(w, rt_deliver_events);
        break;
    case SERVER_WORKER_MAILBOX:
        if (rw != NULL)
            rt_flush_dirty(rw);
        break;
    case SERVER_WORKER_TICK: {
        if (rw == NULL)
            return;
        /* The end of a loop turn: deliveries queued outside the mailbox (a replay
         * answering a WebSocket message) are written here. */
        rt_flush_dirty(rw);
        int64_t now = util_now_ms();
        if (now - rw->last_sweep_ms >= 1000) {
            rw->last_sweep_ms = now;
            sweep(rw, now);
        }
        break;
    }
    case SERVER_WORKER_DRAIN:
        if (rw != NULL)
            drain(rw);
        break;
    case SERVER_WORKER_END:
        if (rw == NULL)
            return;
        rw->draining = 1;
        rt_deliver_end(rw);
        /* Whatever did not finish in the grace period is cut. */
        while (rw->clients != NULL) {
            rt_client_t *c = rw->clients;
            if (c->transport == T_SSE) {
                /* h2o owns the request; the stream ends when the loop is disposed. */
                c->req = NULL;
                rt_client_free(c);
            } else {
                rt_client_teardown(c);
            }
        }
        for (int i = 0; i < 3; i++)
            h2o_evloop_run(w->loop, 0);
        rt_worker_has_clients(w, 0);
        free(rw->buckets);
        free(rw->auth_index);
        free(rw->rules);
        arena_free(&rw->rules_arena);
        free(rw);
        w->rt = NULL;
        break;
    }
}

size_t realtime_worker_clients(worker_t *w)
{
    rt_worker_t *rw = w->rt;
    return rw ? rw->nclients : 0;
}

int rt_refuse_if_full(req_ctx_t *ctx)
{
    if (rt_total_connections() < (uint64_t)rt_config()->max_connections && !rt_rw_of(ctx->worker)->draining)
        return 0;
    metrics_add(&metrics_g.rt_refused, 1);
    ctx_add_header(ctx, "retry-after", "5");
    ctx_send_status(ctx, BS_ERR_UNAVAILABLE,
                    rt_rw_of(ctx->worker)->draining
                        ? "The server is restarting; reconnect shortly."
                        : "Too many realtime connections on this server (--realtime-max-connections); "
                          "try again later.");
    return -1;
}

uint64_t rt_parse_event_id(const char *s, size_t n)
{
    int64_t v;
    if (s == NULL || n == 0 || util_parse_i64(s, n, &v) != 0 || v < 0)
        return 0;
    return (uint64_t)v;
}
