/*
 * The worker side of realtime: connections (whatever their transport), their
 * subscriptions, the per-worker index from collection to subscriptions, delivery
 * with rule checks, resume, idle time-outs and drain. Everything here runs on the
 * worker thread that owns the connection; other threads reach a connection only
 * through the worker's mailbox. The transports are in sse.c and ws.c.
 *
 * Output: each connection has one write in flight (`inflight`) and a queue of
 * what came since (`out`). Their sum is bounded by queue_bytes; a connection over
 * the bound is a slow consumer and is closed with a reason, so that it never holds
 * back the others (delivery only appends to its queue).
 */
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "base/util.h"
#include "metrics/metrics.h"
#include "realtime/rt_conn.h"
#include "realtime/rt_topic.h"
#include "realtime/wsframe.h"

realtime_auth_fn rt_authenticate;
static uint64_t n_sse, n_ws, n_subs; /* atomic gauges */

void realtime_set_authenticator(realtime_auth_fn fn)
{
    rt_authenticate = fn;
}

void realtime_gauges(uint64_t out[4])
{
    out[0] = __atomic_load_n(&n_sse, __ATOMIC_RELAXED);
    out[1] = __atomic_load_n(&n_ws, __ATOMIC_RELAXED);
    out[2] = __atomic_load_n(&n_subs, __ATOMIC_RELAXED);
    out[3] = rt_log_count();
}

uint64_t rt_total_connections(void)
{
    return __atomic_load_n(&n_sse, __ATOMIC_RELAXED) + __atomic_load_n(&n_ws, __ATOMIC_RELAXED);
}

/* ---- index ---- */

static bucket_t *bucket_find(rt_worker_t *rw, const char *coll_id, int create)
{
    for (size_t i = 0; i < rw->nbuckets; i++)
        if (strcmp(rw->buckets[i].coll_id, coll_id) == 0)
            return &rw->buckets[i];
    if (!create)
        return NULL;
    if (rw->nbuckets == rw->cap_buckets) {
        size_t cap = rw->cap_buckets ? rw->cap_buckets * 2 : 8;
        bucket_t *b = realloc(rw->buckets, cap * sizeof(*b));
        if (b == NULL)
            return NULL;
        rw->buckets = b;
        rw->cap_buckets = cap;
    }
    bucket_t *b = &rw->buckets[rw->nbuckets++];
    memset(b, 0, sizeof(*b));
    snprintf(b->coll_id, sizeof(b->coll_id), "%s", coll_id);
    return b;
}

static int index_add(rt_worker_t *rw, rt_sub_t *s)
{
    bucket_t *b = bucket_find(rw, s->coll_id, 1);
    if (b == NULL)
        return -1;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        rt_sub_t **p = realloc(b->subs, cap * sizeof(*p));
        if (p == NULL)
            return -1;
        b->subs = p;
        b->cap = cap;
    }
    s->slot = b->n;
    b->subs[b->n++] = s;
    return 0;
}

static void index_remove(rt_worker_t *rw, rt_sub_t *s)
{
    bucket_t *b = bucket_find(rw, s->coll_id, 0);
    if (b == NULL || s->slot >= b->n || b->subs[s->slot] != s)
        return;
    b->subs[s->slot] = b->subs[--b->n];
    b->subs[s->slot]->slot = s->slot;
    if (b->n == 0) {
        free(b->subs);
        *b = rw->buckets[--rw->nbuckets];
    }
}

static void sub_free(rt_sub_t *s)
{
    if (s->refs > 0) {
        /* A read job still reads it: the last one frees it. */
        s->dead = 1;
        s->client = NULL;
        return;
    }
    json_decref(s->query);
    json_decref(s->headers);
    arena_free(&s->arena);
    free(s);
}

static void client_clear_subs(rt_client_t *c)
{
    for (int i = 0; i < c->nsubs; i++) {
        index_remove(c->rw, c->subs[i]);
        sub_free(c->subs[i]);
    }
    __atomic_sub_fetch(&n_subs, (uint64_t)c->nsubs, __ATOMIC_RELAXED);
    free(c->subs);
    c->subs = NULL;
    c->nsubs = 0;
}

/* ---- rules of the current schema ---- */

static rules_node_t *rule_node(rt_worker_t *rw, const schema_t *s, const collection_t *c, int which)
{
    if (rw->rules_version != s->version) {
        arena_free(&rw->rules_arena);
        arena_init(&rw->rules_arena, 4096);
        rw->nrules = 0;
        rw->rules_version = s->version;
    }
    struct rule_cache *rc = NULL;
    for (size_t i = 0; i < rw->nrules; i++)
        if (rw->rules[i].coll == c)
            rc = &rw->rules[i];
    if (rc == NULL) {
        if (rw->nrules == rw->cap_rules) {
            size_t cap = rw->cap_rules ? rw->cap_rules * 2 : 8;
            struct rule_cache *p = realloc(rw->rules, cap * sizeof(*p));
            if (p == NULL)
                return NULL;
            rw->rules = p;
            rw->cap_rules = cap;
        }
        rc = &rw->rules[rw->nrules++];
        memset(rc, 0, sizeof(*rc));
        rc->coll = c;
    }
    if (!rc->parsed[which]) {
        const char *text = c->rules[which ? RULE_VIEW : RULE_LIST];
        bs_error_t err;
        bs_error_init(&err);
        rc->node[which] = text ? rules_parse(&rw->rules_arena, text, strlen(text), NULL, &err) : NULL;
        rc->parsed[which] = 1;
    }
    return rc->node[which];
}

/* ---- output ---- */

static void ws_written(h2o_socket_t *sock, const char *err)
{
    rt_client_t *c = sock->data;
    if (c == NULL)
        return;
    c->writing = 0;
    c->inflight.len = 0;
    if (err != NULL) {
        rt_client_teardown(c);
        return;
    }
    rt_client_flush(c);
}

/* Starts a write of the queue if none is in flight; ends the connection once a
 * closing one has written everything. */
void rt_client_flush(rt_client_t *c)
{
    if (c->writing || c->dead)
        return;
    if (c->out.len == 0) {
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
    /* Swap: the queue becomes the write in flight. */
    buf_t t = c->inflight;
    c->inflight = c->out;
    c->out = t;
    c->out.len = 0;
    if (c->out.cap > 64 * 1024) {
        buf_free(&c->out);
        buf_init(&c->out, NULL);
    }
    h2o_iovec_t iov = h2o_iovec_init(c->inflight.data, c->inflight.len);
    c->writing = 1;
    if (c->transport == T_SSE) {
        if (c->req == NULL)
            return;
        h2o_send(c->req, &iov, 1, c->closing ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
    } else {
        h2o_socket_write(c->sock, &iov, 1, ws_written);
    }
}

/* Queued plus in-flight bytes. */
static size_t client_backlog(const rt_client_t *c)
{
    return c->out.len + c->inflight.len;
}

void rt_ws_frame(rt_client_t *c, int op, const char *p, size_t n)
{
    uint8_t h[10];
    size_t hl = ws_write_header(h, op, n);
    buf_append(&c->out, h, hl);
    buf_append(&c->out, p, n);
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
        buf_printf(&c->out, "event:PB_ERROR\ndata:%.*s\n\n", (int)b.len, b.data);
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

/* Appends one message (a JSON text) for the client, enforcing the queue bound. */
void rt_client_send(rt_client_t *c, const char *sse_event, const char *sse_id, const char *json, size_t n)
{
    if (c->closing || c->dead)
        return;
    size_t need = n + 64 + (sse_event ? strlen(sse_event) : 0);
    if (client_backlog(c) + need > rt_config()->queue_bytes) {
        metrics_add(&metrics_g.rt_closed_slow, 1);
        rt_client_close(c, c->transport == T_WS ? WS_CLOSE_POLICY : 1008,
                        "slow consumer: the connection's queue is full; reconnect and resume");
        return;
    }
    if (c->transport == T_SSE) {
        if (sse_id != NULL)
            buf_printf(&c->out, "id:%s\n", sse_id);
        buf_printf(&c->out, "event:%s\ndata:", sse_event);
        buf_append(&c->out, json, n);
        buf_puts(&c->out, "\n\n");
    } else {
        rt_ws_frame(c, WS_OP_TEXT, json, n);
    }
    c->last_activity_ms = util_now_ms();
    rt_client_flush(c);
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
    buf_init(&c->out, NULL);
    buf_init(&c->inflight, NULL);
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
static void dirty_unlink(rt_client_t *c);

void rt_client_free(rt_client_t *c)
{
    rt_worker_t *rw = c->rw;
    dirty_unlink(c);
    if (c->guard != NULL)
        c->guard->c = NULL;
    client_clear_subs(c);
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
    buf_free(&c->out);
    buf_free(&c->inflight);
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

/* ---- topics ---- */

/* Parses "coll/STAR" (every record) or "coll/id", with an optional "?options=<json>", into a
 * subscription checked against the schema and the client's rights. Returns the
 * subscription or NULL with err (400). */
/* Who a subscription reads as: its client's identity, with the subscription's own
 * options as @request.query / @request.headers, in the "realtime" context. */
static caller_t sub_caller(const rt_sub_t *sub, int superuser, const collection_t *ac, const json_t *auth)
{
    return (caller_t){.superuser = superuser,
                      .auth_coll = auth != NULL ? ac : NULL,
                      .auth = auth,
                      .query = sub->query,
                      .headers = sub->headers,
                      .method = "GET",
                      .context = "realtime"};
}

static rt_sub_t *sub_parse(const schema_t *schema, const char *topic, size_t tlen, int superuser,
                           const collection_t *auth_coll, const json_t *auth, bs_error_t *err)
{
    const realtime_config_t *cfg = rt_config();
    rt_sub_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    arena_init(&s->arena, 512);
    /* The topic's shape, its options and the control characters, without the schema. */
    rt_topic_t t;
    if (rt_topic_parse(&s->arena, topic, tlen, (size_t)cfg->max_topic_length, &t, err) != 0)
        goto fail;
    s->query = t.query;
    s->headers = t.headers;
    s->record_id = (char *)t.record_id;
    s->topic = arena_strndup(&s->arena, topic, tlen);
    if (s->topic == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        goto fail;
    }
    const collection_t *c = schema_find_n(schema, t.coll, t.coll_len);
    if (t.custom) {
        /* Inert (no record event is addressed to it), but a collection's name alone is
         * a mistake worth naming: PocketBase would take it and never deliver a thing. */
        if (c != NULL) {
            bs_error_set(
                err, BS_ERR_BAD_REQUEST,
                "Invalid topic \"%s\": the records of a collection are \"%s/*\" or \"%s/RECORD_ID\".",
                c->name, c->name, c->name);
            goto fail;
        }
        s->coll_id[0] = '\0';
        return s;
    }
    if (c == NULL) {
        size_t cut = t.coll_len > 200 ? 200 : t.coll_len;
        while (cut < t.coll_len && cut > 0 && ((unsigned char)topic[cut] & 0xC0) == 0x80)
            cut--;
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid topic \"%.*s\": unknown collection.", (int)cut, topic);
        goto fail;
    }
    snprintf(s->coll_id, sizeof(s->coll_id), "%s", c->id);
    const char *filter = s->query ? json_string_value(json_object_get(s->query, "filter")) : NULL;
    if (filter != NULL && filter[0] != '\0') {
        /* Checked as a filter of this client: hidden fields only for superusers. */
        caller_t who = sub_caller(s, superuser, auth_coll, auth);
        rules_compiler_t comp = {0};
        resolve_ctx_t rc = {
            .schema = schema, .coll = c, .alias = "_r", .trusted = superuser, .who = &who, .compiler = &comp};
        buf_t tmp;
        buf_init(&tmp, &s->arena);
        if (resolve_compile(&rc, &s->arena, filter, strlen(filter), &tmp, err) != 0)
            goto fail;
        s->filter = arena_strdup(&s->arena, filter);
        s->filter_node = rules_parse(&s->arena, filter, strlen(filter), NULL, err);
        if (err->code != BS_ERR_OK)
            goto fail;
    }
    const char *expand = s->query ? json_string_value(json_object_get(s->query, "expand")) : NULL;
    const char *fields = s->query ? json_string_value(json_object_get(s->query, "fields")) : NULL;
    s->expand = path_tree_parse(&s->arena, expand, 6, err);
    if (err->code == BS_ERR_OK)
        s->fields = path_tree_parse(&s->arena, fields, 8, err);
    if (err->code == BS_ERR_OK && s->expand)
        record_check_expand(schema, c, s->expand, superuser, err);
    if (err->code != BS_ERR_OK)
        goto fail;
    return s;
fail:
    sub_free(s);
    return NULL;
}

/* Replaces (SSE) or extends (WebSocket) the client's subscriptions with topics.
 * All are checked first: either all apply or none. */
int rt_client_subscribe(rt_client_t *c, const schema_t *schema, const json_t *topics, int replace,
                        bs_error_t *err)
{
    const realtime_config_t *cfg = rt_config();
    size_t n = json_array_size(topics);
    size_t keep = replace ? 0 : (size_t)c->nsubs;
    const collection_t *ac = rt_client_auth_coll(c, schema);
    /* Topics already held (WebSocket) are not counted twice. */
    rt_sub_t **fresh = calloc(n ? n : 1, sizeof(*fresh));
    if (fresh == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    size_t nf = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(topics, i);
        if (!json_is_string(t)) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "Every subscription must be a topic string.");
            goto fail;
        }
        int dup = 0;
        for (size_t k = 0; k < nf && !dup; k++)
            dup = strcmp(fresh[k]->topic, json_string_value(t)) == 0;
        for (size_t k = 0; k < keep && !dup; k++)
            dup = strcmp(c->subs[k]->topic, json_string_value(t)) == 0;
        if (dup)
            continue;
        if (keep + nf + 1 > (size_t)cfg->max_subscriptions) {
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         "Too many subscriptions: at most %d per connection (--realtime-max-subscriptions).",
                         cfg->max_subscriptions);
            goto fail;
        }
        fresh[nf] =
            sub_parse(schema, json_string_value(t), json_string_length(t), c->superuser, ac, c->auth, err);
        if (fresh[nf] == NULL)
            goto fail;
        nf++;
    }
    if (replace)
        client_clear_subs(c);
    rt_sub_t **all = realloc(c->subs, ((size_t)c->nsubs + nf + 1) * sizeof(*all));
    if (all == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        goto fail;
    }
    c->subs = all;
    for (size_t k = 0; k < nf; k++) {
        fresh[k]->client = c;
        if (index_add(c->rw, fresh[k]) != 0) {
            sub_free(fresh[k]);
            continue;
        }
        c->subs[c->nsubs++] = fresh[k];
        __atomic_add_fetch(&n_subs, 1, __ATOMIC_RELAXED);
    }
    free(fresh);
    return 0;
fail:
    for (size_t k = 0; k < nf; k++)
        sub_free(fresh[k]);
    free(fresh);
    return -1;
}

void rt_client_unsubscribe(rt_client_t *c, const char *topic)
{
    for (int i = 0; i < c->nsubs; i++) {
        if (topic != NULL && strcmp(c->subs[i]->topic, topic) != 0)
            continue;
        index_remove(c->rw, c->subs[i]);
        sub_free(c->subs[i]);
        c->subs[i] = c->subs[--c->nsubs];
        __atomic_sub_fetch(&n_subs, 1, __ATOMIC_RELAXED);
        i--;
    }
}

/* ---- identities follow their records ---- */

/* An SSE client that lost its identity keeps the subscriptions it may still hold as
 * anonymous (PocketBase keeps them all; a superuser's may filter on hidden fields,
 * which no one else may). */
static void client_recheck_subs(rt_client_t *c, const schema_t *s)
{
    for (int i = 0; i < c->nsubs; i++) {
        bs_error_t err;
        bs_error_init(&err);
        const char *t = c->subs[i]->topic;
        rt_sub_t *again = sub_parse(s, t, strlen(t), c->superuser, rt_client_auth_coll(c, s), c->auth, &err);
        if (again != NULL) {
            sub_free(again);
            continue;
        }
        index_remove(c->rw, c->subs[i]);
        sub_free(c->subs[i]);
        c->subs[i] = c->subs[--c->nsubs];
        __atomic_sub_fetch(&n_subs, 1, __ATOMIC_RELAXED);
        i--;
    }
}

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
        client_recheck_subs(c, s);
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
static void auth_record_changed(rt_worker_t *rw, const schema_t *s, const rt_event_t *ev)
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
        const char *now = json_string_value(json_object_get(ev->record, "tokenKey"));
        if (was == NULL || now == NULL || strcmp(was, now) != 0) {
            auth_lost(c, s, why_revoked);
            continue;
        }
        /* A copy: the event's record is shared with other threads. */
        json_t *fresh = json_deep_copy(ev->record);
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
static void auth_check_schema(rt_worker_t *rw, const schema_t *s)
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

/* ---- delivery ---- */

static const char *action_name(int a)
{
    return a == RT_CREATE ? "create" : a == RT_UPDATE ? "update" : "delete";
}

typedef struct {
    buf_t plain, super; /* the payload as a non-superuser and as a superuser sees it */
    int have_plain, have_super;
} variants_t;

/* Whether sub admits ev, and if so the payload into *payload (in scratch). */
static int sub_wants(rt_worker_t *rw, const schema_t *s, const collection_t *coll, rt_sub_t *sub,
                     const rt_event_t *ev, int live, arena_t *scratch, variants_t *var, const char **payload,
                     size_t *plen)
{
    rt_client_t *c = sub->client;
    if (sub->record_id != NULL && strcmp(sub->record_id, ev->rec_id) != 0)
        return 0;
    const collection_t *ac = rt_client_auth_coll(c, s);
    caller_t who = sub_caller(sub, c->superuser, ac, ac ? c->auth : NULL);
    record_reader_t r = {.schema = s, .conn = rw->w->reader, .arena = scratch, .who = &who};
    bs_error_t err;
    bs_error_init(&err);
    if (!c->superuser) {
        int which = sub->record_id ? 1 : 0;
        const char *text = coll->rules[which ? RULE_VIEW : RULE_LIST];
        if (text == NULL)
            return 0;
        if (text[0] != '\0') {
            rules_node_t *node = rule_node(rw, s, coll, which);
            if (node == NULL || record_check(&r, coll, ev->record, node, text, live, &err) != 1)
                return 0;
        }
    }
    if (sub->filter_node != NULL &&
        record_check_filter(&r, coll, ev->record, sub->filter_node, sub->filter, live, &err) != 1)
        return 0;
    /* The payload: shared by every subscriber who sees the same thing. */
    int owner = ac == coll && c->auth != NULL &&
                strcmp(json_string_value(json_object_get(c->auth, "id")) ?: "", ev->rec_id) == 0;
    int individual = sub->expand != NULL || sub->fields != NULL || (owner && coll->type == COLL_AUTH);
    buf_t own;
    buf_t *b = &own;
    if (individual) {
        buf_init(&own, scratch);
    } else {
        b = c->superuser ? &var->super : &var->plain;
        int *have = c->superuser ? &var->have_super : &var->have_plain;
        if (*have) {
            *payload = b->data;
            *plen = b->len;
            return b->len > 0;
        }
        *have = 1;
    }
    buf_printf(b, "{\"action\":\"%s\",\"record\":", action_name(ev->action));
    r.skip_view_rule = 0;
    if (record_write_json(&r, coll, ev->record, sub->expand, sub->fields, b, &err) != 0) {
        b->len = 0;
        return 0;
    }
    buf_putc(b, '}');
    if (b->oom) {
        b->len = 0;
        return 0;
    }
    *payload = b->data;
    *plen = b->len;
    return 1;
}

/* The frames already built for one event on one worker: every subscriber of the same
 * topic on the same transport who sees the same shared payload gets the same bytes,
 * appended to its queue without formatting anything again. */
#define FRAME_CACHE 4
typedef struct {
    struct {
        const char *payload, *topic;
        int transport;
        size_t off, len;
    } e[FRAME_CACHE];
    int n;
    buf_t bytes; /* in the event's scratch arena */
} frames_t;

/* The message as it goes on the wire: an SSE event, or a WebSocket text frame. */
static void build_frame(buf_t *b, int transport, const char *topic, const rt_event_t *ev, const char *payload,
                        size_t n)
{
    char idbuf[24];
    snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)ev->id);
    if (transport == T_SSE) {
        buf_printf(b, "id:%s\nevent:%s\ndata:", idbuf, topic);
        buf_append(b, payload, n);
        buf_puts(b, "\n\n");
        return;
    }
    size_t tl = strlen(topic), quoted = tl + 2;
    for (size_t i = 0; i < tl; i++)
        quoted += topic[i] == '"' || topic[i] == '\\';
    size_t mlen =
        strlen("{\"type\":\"event\",\"id\":\"\",\"topic\":,\"data\":}") + strlen(idbuf) + quoted + n;
    uint8_t h[10];
    size_t hl = ws_write_header(h, WS_OP_TEXT, mlen);
    size_t start = b->len;
    buf_append(b, h, hl);
    buf_printf(b, "{\"type\":\"event\",\"id\":\"%s\",\"topic\":", idbuf);
    util_json_quote(b, topic, tl);
    buf_puts(b, ",\"data\":");
    buf_append(b, payload, n);
    buf_putc(b, '}');
    if (!b->oom && b->len - start - hl != mlen) {
        /* The topic had characters the quoting escapes otherwise: frame it again. */
        buf_t m;
        buf_init(&m, NULL);
        buf_append(&m, b->data + start + hl, b->len - start - hl);
        b->len = start;
        hl = ws_write_header(h, WS_OP_TEXT, m.len);
        buf_append(b, h, hl);
        buf_append(b, m.data, m.len);
        buf_free(&m);
    }
}

/* Writes a client's deliveries once per loop turn, not once per event: marks it for
 * rt_flush_dirty, which the worker runs when its mailbox is drained. */
static void defer_flush(rt_client_t *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    c->dirty_prev = NULL;
    c->dirty_next = c->rw->dirty;
    if (c->rw->dirty)
        c->rw->dirty->dirty_prev = c;
    c->rw->dirty = c;
}

static void dirty_unlink(rt_client_t *c)
{
    if (!c->dirty)
        return;
    if (c->dirty_prev)
        c->dirty_prev->dirty_next = c->dirty_next;
    else
        c->rw->dirty = c->dirty_next;
    if (c->dirty_next)
        c->dirty_next->dirty_prev = c->dirty_prev;
    c->dirty = 0;
}

static void flush_dirty(rt_worker_t *rw)
{
    while (rw->dirty != NULL) {
        rt_client_t *c = rw->dirty;
        dirty_unlink(c);
        rt_client_flush(c);
    }
}

/* Queues wire bytes for the client under the queue bound (rt_client_send's rules). */
static void send_frame(rt_client_t *c, const char *bytes, size_t n)
{
    if (c->closing || c->dead)
        return;
    if (client_backlog(c) + n > rt_config()->queue_bytes) {
        metrics_add(&metrics_g.rt_closed_slow, 1);
        rt_client_close(c, c->transport == T_WS ? WS_CLOSE_POLICY : 1008,
                        "slow consumer: the connection's queue is full; reconnect and resume");
        return;
    }
    buf_append(&c->out, bytes, n);
    c->last_activity_ms = util_now_ms();
    defer_flush(c);
}

/* deliver_to for a shared payload: the frame from the cache, or built once into it. */
static void deliver_shared(rt_client_t *c, rt_sub_t *sub, const rt_event_t *ev, const char *payload, size_t n,
                           frames_t *f)
{
    for (int i = 0; i < f->n; i++)
        if (f->e[i].payload == payload && f->e[i].transport == c->transport &&
            strcmp(f->e[i].topic, sub->topic) == 0) {
            send_frame(c, f->bytes.data + f->e[i].off, f->e[i].len);
            metrics_add(&metrics_g.rt_deliveries, 1);
            return;
        }
    size_t off = f->bytes.len;
    build_frame(&f->bytes, c->transport, sub->topic, ev, payload, n);
    if (f->bytes.oom)
        return;
    if (f->n < FRAME_CACHE) {
        f->e[f->n].payload = payload;
        f->e[f->n].topic = sub->topic;
        f->e[f->n].transport = c->transport;
        f->e[f->n].off = off;
        f->e[f->n].len = f->bytes.len - off;
        f->n++;
    }
    send_frame(c, f->bytes.data + off, f->bytes.len - off);
    if (f->n == FRAME_CACHE && f->e[FRAME_CACHE - 1].off != off)
        f->bytes.len = off; /* not kept: the space is reused */
    metrics_add(&metrics_g.rt_deliveries, 1);
}

static void deliver_to(rt_client_t *c, rt_sub_t *sub, const rt_event_t *ev, const char *payload, size_t n,
                       arena_t *scratch)
{
    char idbuf[24];
    snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)ev->id);
    if (c->transport == T_SSE) {
        rt_client_send(c, sub->topic, idbuf, payload, n);
    } else {
        buf_t m;
        buf_init(&m, scratch);
        buf_printf(&m, "{\"type\":\"event\",\"id\":\"%s\",\"topic\":", idbuf);
        util_json_quote(&m, sub->topic, strlen(sub->topic));
        buf_puts(&m, ",\"data\":");
        buf_append(&m, payload, n);
        buf_putc(&m, '}');
        if (!m.oom)
            rt_client_send(c, NULL, NULL, m.data, m.len);
    }
    metrics_add(&metrics_g.rt_deliveries, 1);
}

/* ---- delivery through read jobs (PostgreSQL) ----
 *
 * Where reads go to a pool (store_reads_inline is 0), whether a subscription admits an
 * event and its payload (rules that fall back to a query, expand) are decided in a
 * read job: the loop makes the items (event, subscription, the identity of that
 * moment), the job decides them on a pool connection, and its completion delivers
 * them on the loop. One job per worker runs at a time and the next waits behind it,
 * so every client gets its events in order. The job reads only what does not change
 * under it: the events, the subscriptions' own data (held by a count: a subscription
 * that ends meanwhile is freed by the job's end), references to the identities, and
 * its own schema reference. */
typedef struct {
    rt_event_t *ev; /* a reference */
    rt_sub_t *sub;  /* held (refs) */
    json_t *auth;   /* a reference: the identity when the item was made, or NULL */
    const collection_t *ac;
    int superuser;
    int replay; /* checked as it was: against the event's record */
    /* the job's answer */
    const char *payload;
    size_t plen;
    int wanted;
} rt_item_t;

/* A message to send after a job's deliveries (rt_client_send_ordered). */
typedef struct rt_tail {
    struct rt_tail *next;
    char client_id[CLIENT_ID_LEN + 1];
    size_t n;
    char json[]; /* n bytes */
} rt_tail_t;

typedef struct rt_job {
    store_job_t job; /* first */
    rt_worker_t *rw;
    rt_tail_t *tails, **tails_end; /* on the loop only */
    schema_t *schema;
    rt_item_t *items;
    size_t n, cap;
    arena_t arena;
    struct rt_job *next;
} rt_job_t;

static rt_job_t *job_new(rt_worker_t *rw, schema_t *s)
{
    rt_job_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->rw = rw;
    j->schema = s;
    j->tails_end = &j->tails;
    arena_init(&j->arena, 8192);
    return j;
}

static void job_add(rt_job_t *j, rt_client_t *c, rt_sub_t *sub, rt_event_t *ev, const collection_t *ac,
                    int replay)
{
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 16;
        rt_item_t *p = realloc(j->items, cap * sizeof(*p));
        if (p == NULL)
            return; /* out of memory: the event is not delivered to this one */
        j->items = p;
        j->cap = cap;
    }
    rt_item_t *it = &j->items[j->n++];
    memset(it, 0, sizeof(*it));
    __atomic_add_fetch(&ev->refs, 1, __ATOMIC_RELAXED);
    it->ev = ev;
    sub->refs++;
    it->sub = sub;
    it->ac = ac;
    it->auth = ac ? json_incref(c->auth) : NULL;
    it->superuser = c->superuser;
    it->replay = replay;
}

/* Pool thread: decides every item (as sub_wants does, with the item's identity). */
static int run_rt_job(store_job_t *job, store_conn_t *conn)
{
    rt_job_t *j = (rt_job_t *)job;
    for (size_t i = 0; i < j->n; i++) {
        rt_item_t *it = &j->items[i];
        rt_sub_t *sub = it->sub;
        const collection_t *coll = schema_find(j->schema, it->ev->coll_id);
        if (coll == NULL || (sub->record_id != NULL && strcmp(sub->record_id, it->ev->rec_id) != 0))
            continue;
        caller_t who = sub_caller(sub, it->superuser, it->ac, it->auth);
        record_reader_t r = {.schema = j->schema, .conn = conn, .arena = &j->arena, .who = &who};
        bs_error_t err;
        bs_error_init(&err);
        int live = !it->replay && it->ev->action != RT_DELETE;
        if (!it->superuser) {
            const char *text = coll->rules[sub->record_id ? RULE_VIEW : RULE_LIST];
            if (text == NULL)
                continue;
            if (text[0] != '\0') {
                rules_node_t *node = rules_parse(&j->arena, text, strlen(text), NULL, &err);
                if (node == NULL || record_check(&r, coll, it->ev->record, node, text, live, &err) != 1)
                    continue;
            }
        }
        if (sub->filter_node != NULL &&
            record_check_filter(&r, coll, it->ev->record, sub->filter_node, sub->filter, live, &err) != 1)
            continue;
        buf_t b;
        buf_init(&b, &j->arena);
        buf_printf(&b, "{\"action\":\"%s\",\"record\":", action_name(it->ev->action));
        if (record_write_json(&r, coll, it->ev->record, sub->expand, sub->fields, &b, &err) != 0)
            continue;
        buf_putc(&b, '}');
        if (b.oom)
            continue;
        it->payload = b.data;
        it->plen = b.len;
        it->wanted = 1;
    }
    return 0;
}

static void job_start(rt_worker_t *rw);

/* Releases a job that will not run (or ran: after delivery) and what its items hold. */
static void job_release(rt_job_t *j)
{
    for (size_t i = 0; i < j->n; i++) {
        rt_item_t *it = &j->items[i];
        if (--it->sub->refs == 0 && it->sub->dead)
            sub_free(it->sub);
        rt_event_unref(it->ev);
        json_decref(it->auth);
    }
    for (rt_tail_t *t = j->tails, *next; t != NULL; t = next) {
        next = t->next;
        free(t);
    }
    schema_release(j->schema);
    free(j->items);
    arena_free(&j->arena);
    free(j);
}

/* On the loop: delivers the decided items in order, releases what they held, and
 * starts the job waiting behind. */
static void rt_job_done(mailbox_msg_t *msg)
{
    rt_job_t *j = (rt_job_t *)msg;
    rt_worker_t *rw = j->rw;
    for (size_t i = 0; i < j->n; i++) {
        rt_item_t *it = &j->items[i];
        rt_sub_t *sub = it->sub;
        rt_client_t *c = sub->client;
        if (it->wanted && !sub->dead && c != NULL && !c->closing && !c->dead && !rw->draining) {
            deliver_to(c, sub, it->ev, it->payload, it->plen, &j->arena);
            if (!it->replay)
                metrics_hist_observe(&metrics_g.rt_latency, util_mono_ns() - it->ev->mono_ns);
        }
    }
    for (rt_tail_t *t = j->tails; t != NULL; t = t->next) {
        rt_client_t *c = rt_client_find(rw, t->client_id);
        if (c != NULL && !c->closing && !c->dead)
            rt_client_send(c, NULL, NULL, t->json, t->n);
    }
    job_release(j);
    rw->job_running = NULL;
    job_start(rw);
}

static void job_start(rt_worker_t *rw)
{
    if (rw->job_running || rw->jobs_head == NULL)
        return;
    rt_job_t *j = rw->jobs_head;
    rw->jobs_head = j->next;
    if (rw->jobs_head == NULL)
        rw->jobs_tail = &rw->jobs_head;
    rw->job_running = j;
    j->job.msg.deliver = rt_job_done;
    j->job.reply_to = &rw->w->mailbox;
    j->job.run = run_rt_job;
    j->job.arena = &j->arena;
    store_read(worker_settings()->store, rw->w->idx, &j->job);
}

void rt_client_send_ordered(rt_client_t *c, const char *json, size_t n)
{
    rt_worker_t *rw = c->rw;
    rt_job_t *last = rw->jobs_head != NULL ? (rt_job_t *)((char *)rw->jobs_tail - offsetof(rt_job_t, next))
                                           : rw->job_running;
    rt_tail_t *t = last != NULL ? malloc(sizeof(*t) + n) : NULL;
    if (t == NULL) {
        rt_client_send(c, NULL, NULL, json, n); /* nothing waits (or no memory): now */
        return;
    }
    t->next = NULL;
    memcpy(t->client_id, c->id, sizeof(t->client_id));
    t->n = n;
    memcpy(t->json, json, n);
    *last->tails_end = t;
    last->tails_end = &t->next;
}

/* Queues j behind the job in flight (or frees it when it holds nothing). */
static void job_queue(rt_worker_t *rw, rt_job_t *j)
{
    if (j->n == 0) {
        job_release(j);
        return;
    }
    if (rw->jobs_tail == NULL)
        rw->jobs_tail = &rw->jobs_head;
    j->next = NULL;
    *rw->jobs_tail = j;
    rw->jobs_tail = &j->next;
    job_start(rw);
}

/* deliver_events for a store whose reads go to a pool: identities are updated in
 * order here, the rest is decided in a job. */
static void deliver_events_job(rt_worker_t *rw, rt_event_t **evs, size_t n)
{
    schema_t *s = schema_acquire();
    auth_check_schema(rw, s);
    rt_job_t *j = job_new(rw, s);
    if (j == NULL) {
        schema_release(s);
        return;
    }
    for (size_t e = 0; e < n; e++) {
        rt_event_t *ev = evs[e];
        const collection_t *coll = schema_find(s, ev->coll_id);
        if (coll != NULL && coll->type == COLL_AUTH)
            auth_record_changed(rw, s, ev);
        bucket_t *b = coll ? bucket_find(rw, ev->coll_id, 0) : NULL;
        for (size_t i = 0; b != NULL && i < b->n; i++) {
            rt_sub_t *sub = b->subs[i];
            rt_client_t *c = sub->client;
            if (c->closing || c->dead || ev->id <= c->min_id)
                continue;
            job_add(j, c, sub, ev, rt_client_auth_coll(c, s), 0);
        }
    }
    job_queue(rw, j);
}

/* Events for this worker's subscribers (from the hub, in id order). */
static void deliver_events(worker_t *w, rt_event_t **evs, size_t n)
{
    rt_worker_t *rw = rt_rw_of(w);
    if (rw == NULL || rw->draining)
        return;
    if (!store_reads_inline(worker_settings()->store)) {
        deliver_events_job(rw, evs, n);
        return;
    }
    schema_t *s = schema_acquire();
    auth_check_schema(rw, s);
    for (size_t e = 0; e < n; e++) {
        rt_event_t *ev = evs[e];
        const collection_t *coll = schema_find(s, ev->coll_id);
        /* Identities first: the event itself is checked with what it changed. */
        if (coll != NULL && coll->type == COLL_AUTH)
            auth_record_changed(rw, s, ev);
        bucket_t *b = coll ? bucket_find(rw, ev->coll_id, 0) : NULL;
        if (b == NULL)
            continue;
        arena_t scratch;
        arena_init(&scratch, 8192);
        variants_t var;
        buf_init(&var.plain, &scratch);
        buf_init(&var.super, &scratch);
        var.have_plain = var.have_super = 0;
        frames_t frames = {.n = 0};
        buf_init(&frames.bytes, &scratch);
        int live = ev->action != RT_DELETE;
        /* Delivery only appends to queues (closing is deferred to write
         * completions), so the bucket does not change under this loop. */
        for (size_t i = 0; i < b->n; i++) {
            rt_sub_t *sub = b->subs[i];
            rt_client_t *c = sub->client;
            if (c->closing || c->dead || ev->id <= c->min_id)
                continue;
            const char *payload;
            size_t plen;
            if (!sub_wants(rw, s, coll, sub, ev, live, &scratch, &var, &payload, &plen))
                continue;
            if ((var.have_plain && payload == var.plain.data) ||
                (var.have_super && payload == var.super.data))
                deliver_shared(c, sub, ev, payload, plen, &frames);
            else
                deliver_to(c, sub, ev, payload, plen, &scratch);
        }
        metrics_hist_observe(&metrics_g.rt_latency, util_mono_ns() - ev->mono_ns);
        arena_free(&scratch);
    }
    schema_release(s);
}

/* Sends the logged events after `after` that the client's subscriptions admit, in
 * order. Returns 0, or -1 when they are no longer held (the client was told to
 * resync). */
int rt_client_replay(rt_client_t *c, uint64_t after)
{
    rt_event_t **evs;
    size_t n;
    int rc = rt_log_since(after, &evs, &n);
    if (rc == 1) {
        /* Ahead of this instance: live events up to after are the client's already. */
        metrics_add(&metrics_g.rt_resumes, 1);
        if (after > c->min_id)
            c->min_id = after;
        return 0;
    }
    if (rc != 0) {
        metrics_add(&metrics_g.rt_resyncs, 1);
        static const char msg[] =
            "{\"reason\":\"The events since this id are no longer held; fetch the current state.\"}";
        if (c->transport == T_SSE)
            rt_client_send(c, "PB_RESYNC", NULL, msg, sizeof(msg) - 1);
        else {
            static const char wmsg[] = "{\"type\":\"resync\",\"message\":\"The events since this id are no "
                                       "longer held; fetch the current state.\"}";
            rt_client_send(c, NULL, NULL, wmsg, sizeof(wmsg) - 1);
        }
        c->min_id = rt_log_last_id();
        return -1;
    }
    metrics_add(&metrics_g.rt_resumes, 1);
    rt_worker_t *rw = c->rw;
    schema_t *s = schema_acquire();
    if (!store_reads_inline(worker_settings()->store)) {
        /* Decided in a read job, behind the deliveries already on their way. */
        rt_job_t *j = job_new(rw, s);
        for (size_t e = 0; e < n; e++) {
            rt_event_t *ev = evs[e];
            for (int i = 0; j != NULL && i < c->nsubs; i++)
                if (strcmp(c->subs[i]->coll_id, ev->coll_id) == 0)
                    job_add(j, c, c->subs[i], ev, rt_client_auth_coll(c, s), 1);
            if (ev->id > c->min_id)
                c->min_id = ev->id;
            rt_event_unref(ev);
        }
        free(evs);
        if (j != NULL)
            job_queue(rw, j);
        else
            schema_release(s);
        return 0;
    }
    for (size_t e = 0; e < n; e++) {
        rt_event_t *ev = evs[e];
        const collection_t *coll = schema_find(s, ev->coll_id);
        for (int i = 0; coll != NULL && i < c->nsubs && !c->closing; i++) {
            rt_sub_t *sub = c->subs[i];
            if (strcmp(sub->coll_id, ev->coll_id) != 0)
                continue;
            arena_t scratch;
            arena_init(&scratch, 4096);
            variants_t var = {0};
            buf_init(&var.plain, &scratch);
            buf_init(&var.super, &scratch);
            const char *payload;
            size_t plen;
            /* Replayed events are checked as they were: against the event's record. */
            if (sub_wants(rw, s, coll, sub, ev, 0, &scratch, &var, &payload, &plen))
                deliver_to(c, sub, ev, payload, plen, &scratch);
            arena_free(&scratch);
        }
        if (ev->id > c->min_id)
            c->min_id = ev->id;
        rt_event_unref(ev);
    }
    free(evs);
    schema_release(s);
    return 0;
}

/* ---- worker lifecycle ---- */

static void sweep(rt_worker_t *rw, int64_t now)
{
    const realtime_config_t *cfg = rt_config();
    if (rw->clients != NULL) {
        /* A schema change may come with no event after it. */
        schema_t *s = schema_acquire();
        auth_check_schema(rw, s);
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
                    buf_puts(&c->out, ":ping\n\n");
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
            buf_printf(
                &c->out,
                "retry:%d\nevent:PB_RECONNECT\ndata:{\"reason\":\"server restarting\",\"retryMs\":%d}\n\n",
                cfg->reconnect_hint_ms, cfg->reconnect_hint_ms);
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
        rt_register_worker(w, deliver_events);
        break;
    case SERVER_WORKER_MAILBOX:
        if (rw != NULL)
            flush_dirty(rw);
        break;
    case SERVER_WORKER_TICK: {
        if (rw == NULL)
            return;
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
        /* Delivery jobs: the waiting ones are dropped, the one in flight is waited for
         * (it holds subscriptions and posts back to this loop). */
        while (rw->jobs_head != NULL) {
            rt_job_t *j = rw->jobs_head;
            rw->jobs_head = j->next;
            job_release(j);
        }
        rw->jobs_tail = &rw->jobs_head;
        for (int i = 0; i < 2000 && rw->job_running; i++) {
            store_read_flush(worker_settings()->store, w->idx);
            h2o_evloop_run(w->loop, 1);
        }
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
