/* Basalt's realtime over WebSocket: the upgrade at /api/realtime/ws, frames in,
 * and the JSON messages (auth, subscribe, unsubscribe, resume, ping). */
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "metrics/metrics.h"
#include "realtime/rt_conn.h"

#include <h2o/http1.h>
#include "realtime/wsframe.h"

static void ws_send_json(rt_client_t *c, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s != NULL)
        rt_client_send(c, NULL, NULL, s, strlen(s));
    free(s);
}

static void ws_error(rt_client_t *c, const json_t *rid, int code, const char *message)
{
    json_t *o = json_pack("{s:s, s:i, s:s}", "type", "error", "code", code, "message", message);
    if (rid != NULL)
        json_object_set(o, "requestId", (json_t *)rid);
    ws_send_json(c, o);
}

/* Counts one message or control frame (ping, pong) of the client against
 * --realtime-max-messages in a one-second window. Returns 0 when it may be handled,
 * 1 when it is over the rate (and is to be refused or, for a ping, left unanswered:
 * RFC 6455 5.5.3 lets an endpoint answer only the latest of several pings), -1 when
 * the connection was closed for sending at twice the rate. Control frames count
 * because each ping costs a pong in the client's queue: without this a client that
 * sends pings and never reads grows the server's memory. */
static int ws_count(rt_client_t *c)
{
    int64_t now = util_now_ms();
    if (now - c->rate_window_ms >= 1000) {
        c->rate_window_ms = now;
        c->rate_count = 0;
        c->rate_refused = 0;
    }
    if (++c->rate_count <= rt_config()->max_messages_per_s)
        return 0;
    metrics_add(&metrics_g.rt_rate_limited, 1);
    if (++c->rate_refused > rt_config()->max_messages_per_s) {
        rt_client_close(c, WS_CLOSE_POLICY, "message rate limit exceeded");
        return -1;
    }
    return 1;
}

static void ws_on_read(h2o_socket_t *sock, const char *err);

/* An "auth" message waiting for its token check; the client is found again by id
 * (it may have gone meanwhile). */
typedef struct {
    worker_t *w;
    char id[CLIENT_ID_LEN + 1];
    json_t *rid; /* the requestId, or NULL */
    schema_t *s;
} ws_auth_t;

static void ws_authed(void *arg, api_token_result_t *res)
{
    ws_auth_t *a = arg;
    rt_worker_t *rw = rt_rw_of(a->w);
    rt_client_t *c = rw ? rt_client_find(rw, a->id) : NULL;
    /* 2: the check went to a job and the reading loop stopped for it (1: it is
     * answered inline, inside that loop, which goes on by itself). */
    int resume = c != NULL && c->auth_pending == 2;
    if (c != NULL)
        c->auth_pending = 0;
    if (c == NULL || c->dead || c->closing) {
        json_decref(res->auth);
    } else if (res->status != 0) {
        ws_error(c, a->rid, 401,
                 res->err.message[0] ? res->err.message : "The token is invalid or has expired.");
    } else {
        /* A new identity starts with no subscriptions: they were checked for the old one. */
        rt_client_unsubscribe(c, NULL);
        rt_client_set_auth(c, res->auth, res->coll, res->superuser);
        json_t *o = json_pack("{s:s}", "type", "auth");
        if (res->auth != NULL) {
            json_object_set_new(o, "collectionName", json_string(res->coll->name));
            json_object_set(o, "id", json_object_get(res->auth, "id"));
        }
        if (a->rid)
            json_object_set(o, "requestId", a->rid);
        ws_send_json(c, o);
    }
    json_decref(a->rid);
    schema_release(a->s);
    free(a);
    /* Messages that arrived while the check ran. */
    if (resume && !c->dead && !c->closing && c->sock != NULL && c->sock->input->size > 0)
        ws_on_read(c->sock, NULL);
}

static void ws_handle_text(rt_client_t *c, const char *p, size_t n)
{
    int rate = ws_count(c);
    if (rate != 0) {
        if (rate > 0)
            ws_error(c, NULL, 429,
                     "Too many messages: at most --realtime-max-messages per second per connection.");
        return;
    }
    json_error_t jerr;
    json_t *m = json_loadb(p, n, 0, &jerr);
    const char *type = json_string_value(json_object_get(m, "type"));
    const json_t *rid = json_object_get(m, "requestId");
    if (!json_is_object(m) || type == NULL) {
        ws_error(
            c, NULL, 400,
            "Messages must be JSON objects with a \"type\" (auth, subscribe, unsubscribe, resume, ping).");
        json_decref(m);
        return;
    }
    bs_error_t err;
    bs_error_init(&err);
    if (strcmp(type, "ping") == 0) {
        json_t *o = json_pack("{s:s}", "type", "pong");
        if (rid)
            json_object_set(o, "requestId", (json_t *)rid);
        ws_send_json(c, o);
    } else if (strcmp(type, "auth") == 0) {
        const char *tok = json_string_value(json_object_get(m, "token"));
        ws_auth_t *a = calloc(1, sizeof(*a));
        if (a == NULL) {
            ws_error(c, rid, 503, "Out of memory.");
        } else {
            a->w = c->rw->w;
            memcpy(a->id, c->id, sizeof(a->id));
            a->rid = rid ? json_incref((json_t *)rid) : NULL;
            a->s = schema_acquire();
            if (tok == NULL || tok[0] == '\0' || rt_authenticate == NULL) {
                api_token_result_t res = {.status = tok == NULL || tok[0] == '\0' ? 0 : -1};
                bs_error_init(&res.err);
                ws_authed(a, &res);
            } else {
                /* The token's record may have to be read (a job): the messages after
                 * this one wait until it is answered, so they see the new identity. */
                c->auth_pending = 1;
                rt_authenticate(a->w, a->s, tok, strlen(tok), ws_authed, a);
                if (c->auth_pending == 1)
                    c->auth_pending = 2;
            }
        }
    } else if (strcmp(type, "subscribe") == 0 || strcmp(type, "unsubscribe") == 0) {
        json_t *topics = json_object_get(m, "topics");
        json_t *one = json_object_get(m, "topic");
        json_t *list = NULL;
        if (json_is_array(topics))
            list = json_incref(topics);
        else if (json_is_string(one))
            list = json_pack("[O]", one);
        int sub = type[0] == 's';
        if (list == NULL && sub) {
            ws_error(c, rid, 400, "subscribe needs \"topics\": an array of topic strings.");
        } else if (sub) {
            schema_t *s = schema_acquire();
            if (rt_client_subscribe(c, s, list, 0, &err) != 0) {
                ws_error(c, rid, bs_status(err.code), err.message);
            } else {
                json_t *o = json_pack("{s:s, s:O}", "type", "subscribed", "topics", list);
                if (rid)
                    json_object_set(o, "requestId", (json_t *)rid);
                ws_send_json(c, o);
            }
            schema_release(s);
        } else {
            if (list == NULL)
                rt_client_unsubscribe(c, NULL);
            for (size_t i = 0; i < json_array_size(list); i++)
                if (json_is_string(json_array_get(list, i)))
                    rt_client_unsubscribe(c, json_string_value(json_array_get(list, i)));
            json_t *o = json_pack("{s:s}", "type", "unsubscribed");
            if (list)
                json_object_set(o, "topics", list);
            if (rid)
                json_object_set(o, "requestId", (json_t *)rid);
            ws_send_json(c, o);
        }
        json_decref(list);
    } else if (strcmp(type, "resume") == 0) {
        const char *last = json_string_value(json_object_get(m, "lastEventId"));
        uint64_t from = last ? rt_parse_event_id(last, strlen(last)) : 0;
        if (from == 0) {
            ws_error(c, rid, 400, "resume needs \"lastEventId\": the id of the last event received.");
        } else if (rt_client_replay(c, from) == 0) {
            char idbuf[24];
            snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)c->min_id);
            json_t *o = json_pack("{s:s, s:s}", "type", "resumed", "lastEventId", idbuf);
            if (rid)
                json_object_set(o, "requestId", (json_t *)rid);
            /* After the replayed events, which may still be decided in a read job. */
            char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
            if (text != NULL)
                rt_client_send_ordered(c, text, strlen(text));
            free(text);
            json_decref(o);
        }
    } else {
        ws_error(c, rid, 400, "Unknown message type: expected auth, subscribe, unsubscribe, resume or ping.");
    }
    json_decref(m);
}

static void ws_on_read(h2o_socket_t *sock, const char *err)
{
    rt_client_t *c = sock->data;
    if (c == NULL)
        return;
    if (err != NULL) {
        rt_client_teardown(c);
        return;
    }
    const realtime_config_t *cfg = rt_config();
    c->last_activity_ms = util_now_ms();
    for (;;) {
        if (c->closing || c->dead || c->auth_pending)
            return; /* an auth message's check is still running: the rest waits for it */
        uint8_t *p = (uint8_t *)sock->input->bytes;
        size_t n = sock->input->size;
        ws_frame_t f;
        int code = 0;
        const char *why = NULL;
        int rc = ws_parse_header(p, n, &f, &code, &why);
        if (rc < 0) {
            rt_client_close(c, code, why);
            return;
        }
        if (rc == 0)
            break;
        if (f.len > cfg->max_message || c->msg.len + f.len > cfg->max_message) {
            rt_client_close(c, WS_CLOSE_TOO_BIG, "message too big (--realtime-max-message)");
            return;
        }
        if (n < f.header_len + f.len)
            break; /* the rest of the frame is still coming */
        uint8_t *payload = p + f.header_len;
        size_t plen = (size_t)f.len;
        ws_unmask(payload, plen, f.mask, 0);
        switch (f.opcode) {
        case WS_OP_PING:
        case WS_OP_PONG: {
            int rate = ws_count(c);
            if (rate < 0)
                return;
            /* The pong is bounded by the queue like any message. */
            if (rate == 0 && f.opcode == WS_OP_PING &&
                rt_ws_control(c, WS_OP_PONG, (const char *)payload, plen) != 0)
                return;
            break;
        }
        case WS_OP_CLOSE: {
            /* A valid close is answered with its code (1000 when it had none) and
             * finishes; RFC 6455 5.5.1 and 7.4: a 1-byte payload or a code that may
             * not be sent (1005, 1006, 1015, reserved ranges) is a protocol error, a
             * reason that is not UTF-8 is 1007. */
            int cc = WS_CLOSE_NORMAL;
            const char *reason = "";
            if (plen == 1) {
                cc = WS_CLOSE_PROTOCOL;
                reason = "a close frame carries a 2-byte code and an optional reason, not 1 byte";
            } else if (plen >= 2) {
                cc = payload[0] << 8 | payload[1];
                if (!ws_close_code_valid(cc)) {
                    cc = WS_CLOSE_PROTOCOL;
                    reason = "invalid close code (1005, 1006, 1015 and reserved codes may not be sent)";
                } else if (!ws_utf8_valid(payload + 2, plen - 2)) {
                    cc = WS_CLOSE_BAD_DATA;
                    reason = "the close reason must be UTF-8";
                }
            }
            h2o_buffer_consume(&sock->input, f.header_len + plen);
            rt_client_close(c, cc, reason);
            return;
        }
        case WS_OP_BINARY:
            rt_client_close(c, 1003, "binary messages are not supported; send JSON text");
            return;
        case WS_OP_TEXT:
        case WS_OP_CONT:
            if ((f.opcode == WS_OP_CONT) != (c->msg_op != 0)) {
                rt_client_close(c, WS_CLOSE_PROTOCOL, "unexpected continuation frame");
                return;
            }
            if (f.opcode == WS_OP_TEXT && f.fin) {
                if (!ws_utf8_valid(payload, plen)) {
                    rt_client_close(c, WS_CLOSE_BAD_DATA, "text messages must be UTF-8");
                    return;
                }
                ws_handle_text(c, (const char *)payload, plen);
            } else {
                buf_append(&c->msg, payload, plen);
                c->msg_op = WS_OP_TEXT;
                if (f.fin) {
                    c->msg_op = 0;
                    if (!ws_utf8_valid((const uint8_t *)c->msg.data, c->msg.len))
                        rt_client_close(c, WS_CLOSE_BAD_DATA, "text messages must be UTF-8");
                    else
                        ws_handle_text(c, c->msg.data, c->msg.len);
                    buf_free(&c->msg);
                    buf_init(&c->msg, NULL);
                }
            }
            break;
        }
        if (c->dead)
            return;
        h2o_buffer_consume(&sock->input, f.header_len + plen);
    }
}

static void ws_upgraded(void *data, h2o_socket_t *sock, size_t reqsize)
{
    rt_client_t *c = data;
    if (sock == NULL) {
        c->dead = 1;
        rt_client_free(c);
        return;
    }
    h2o_buffer_consume(&sock->input, reqsize);
    c->sock = sock;
    sock->data = c;
    c->writing = 0;
    char m[96];
    snprintf(m, sizeof(m), "{\"type\":\"connect\",\"clientId\":\"%s\"}", c->id);
    rt_client_send(c, NULL, NULL, m, strlen(m));
    h2o_socket_read_start(sock, ws_on_read);
    if (sock->input->size > 0)
        ws_on_read(sock, NULL);
}

void realtime_ws_open(req_ctx_t *ctx)
{
    rt_worker_t *rw = rt_rw_of(ctx->worker);
    const char *key = NULL;
    if (ctx->req == NULL)
        return;
    size_t klen = 0, vlen = 0;
    key = ctx_header(ctx, "sec-websocket-key", &klen);
    const char *ver = ctx_header(ctx, "sec-websocket-version", &vlen);
    h2o_iovec_t up = ctx->req->upgrade;
    if (ctx->req->version != 0x101 || strcmp(ctx->method, "GET") != 0 || up.base == NULL ||
        !h2o_lcstris(up.base, up.len, H2O_STRLIT("websocket")) || key == NULL || klen != 24 || ver == NULL ||
        vlen != 2 || memcmp(ver, "13", 2) != 0) {
        ctx_add_header(ctx, "upgrade", "websocket");
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST,
                        "Expected a WebSocket handshake: HTTP/1.1 GET with Upgrade: websocket, Connection: "
                        "Upgrade, Sec-WebSocket-Key and Sec-WebSocket-Version: 13.");
        return;
    }
    if (rw == NULL || rt_refuse_if_full(ctx) != 0)
        return;
    char accept[29];
    ws_accept_key(key, klen, accept);
    rt_client_t *c = rt_client_new(rw, T_WS);
    if (c == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    /* A token in the handshake authenticates the connection from the start. */
    if (ctx->auth != NULL && ctx->who.auth_coll != NULL) {
        rt_client_set_auth(c, json_deep_copy(ctx->auth), ctx->who.auth_coll, ctx->who.superuser);
    }
    h2o_req_t *req = ctx_begin_stream(ctx, 101);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_UPGRADE, NULL, H2O_STRLIT("websocket"));
    char *acc = h2o_mem_alloc_pool(&req->pool, 28);
    memcpy(acc, accept, 28);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("sec-websocket-accept"), 0, NULL, acc,
                          28);
    c->writing = 1; /* nothing may be written before the upgrade completes */
    h2o_http1_upgrade(req, NULL, 0, ws_upgraded, c);
}
