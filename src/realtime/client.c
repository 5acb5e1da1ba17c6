/*
 * The worker side of realtime: connections (SSE streams and WebSockets), their
 * subscriptions, the per-worker index from collection to subscriptions, delivery
 * with rule checks, resume, limits, idle time-outs and drain. Everything here runs
 * on the worker thread that owns the connection; other threads reach a connection
 * only through the worker's mailbox.
 *
 * Output: each connection has one write in flight (`inflight`) and a queue of
 * what came since (`out`). Their sum is bounded by queue_bytes; a connection over
 * the bound is a slow consumer and is closed with a reason, so that it never holds
 * back the others (delivery only appends to its queue).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/util.h"
#include "core/record.h"
#include "http/body.h"
#include "http/server.h"
#include <h2o/http1.h>
#include "metrics/metrics.h"
#include "realtime/realtime.h"
#include "realtime/wsframe.h"

#define CLIENT_ID_LEN 40

typedef struct rt_client rt_client_t;
typedef struct rt_worker rt_worker_t;

typedef struct {
    rt_client_t *client;
    char *topic; /* as subscribed: the event name */
    char coll_id[64];
    char *record_id; /* NULL: every record (the "coll/STAR" topic) */
    char *filter;    /* options.query.filter, or NULL */
    rules_node_t *filter_node;
    path_tree_t *expand, *fields;
    json_t *query, *headers; /* options, for @request.query / @request.headers */
    arena_t arena;           /* filter AST, trees, strings */
    size_t slot;             /* position in its bucket */
} rt_sub_t;

typedef struct {
    char coll_id[64];
    rt_sub_t **subs;
    size_t n, cap;
} bucket_t;

enum { T_SSE, T_WS };

/* Lives in an SSE request's pool: h2o disposing of it tells the client. */
typedef struct sse_guard {
    rt_client_t *c;
} sse_guard_t;

struct rt_client {
    rt_client_t *prev, *next;
    rt_worker_t *rw;
    int transport;
    char id[CLIENT_ID_LEN + 1];
    /* who */
    json_t *auth; /* the authenticated record, or NULL */
    char auth_coll_id[64];
    int superuser;
    int auth_set; /* SSE: the first subscription request fixed the identity */
    rt_sub_t **subs;
    int nsubs;
    /* output */
    buf_t out;      /* queued */
    buf_t inflight; /* being written */
    int writing;
    int closing; /* no more deliveries; close after the queue is written */
    int dead;    /* the peer is gone; freed when nothing references it */
    /* SSE */
    h2o_req_t *req;
    h2o_generator_t gen;
    struct sse_guard *guard; /* in the request's pool; tells us when h2o disposes of it */
    /* WebSocket */
    h2o_socket_t *sock;
    buf_t msg; /* a fragmented message being assembled */
    int msg_op;
    /* resume: events up to this id were replayed or are not wanted */
    uint64_t min_id;
    uint64_t resume_from; /* SSE: Last-Event-ID, applied with the first subscriptions */
    /* limits and timers */
    int64_t last_activity_ms, last_ping_ms, closing_since_ms;
    int64_t rate_window_ms;
    int rate_count, rate_refused;
};

struct rt_worker {
    worker_t *w;
    rt_client_t *clients;
    size_t nclients;
    bucket_t *buckets;
    size_t nbuckets, cap_buckets;
    int64_t last_sweep_ms;
    int draining;
    /* parsed rules of the current schema: [collection][list/view] */
    uint64_t rules_version;
    arena_t rules_arena;
    struct rule_cache {
        const collection_t *coll;
        rules_node_t *node[2];
        int parsed[2];
    } * rules;
    size_t nrules, cap_rules;
};

static realtime_auth_fn authenticate;
static uint64_t n_sse, n_ws, n_subs; /* atomic gauges */

void realtime_set_authenticator(realtime_auth_fn fn)
{
    authenticate = fn;
}

void realtime_gauges(uint64_t out[4])
{
    out[0] = __atomic_load_n(&n_sse, __ATOMIC_RELAXED);
    out[1] = __atomic_load_n(&n_ws, __ATOMIC_RELAXED);
    out[2] = __atomic_load_n(&n_subs, __ATOMIC_RELAXED);
    out[3] = rt_log_count();
}

static uint64_t total_connections(void)
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

static void client_flush(rt_client_t *c);
static void client_teardown(rt_client_t *c);

static void sse_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    rt_client_t *c = H2O_STRUCT_FROM_MEMBER(rt_client_t, gen, gen);
    c->writing = 0;
    c->inflight.len = 0;
    client_flush(c);
}

static void sse_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)gen;
    (void)req;
}

static void ws_written(h2o_socket_t *sock, const char *err)
{
    rt_client_t *c = sock->data;
    if (c == NULL)
        return;
    c->writing = 0;
    c->inflight.len = 0;
    if (err != NULL) {
        client_teardown(c);
        return;
    }
    client_flush(c);
}

/* Starts a write of the queue if none is in flight; ends the connection once a
 * closing one has written everything. */
static void client_flush(rt_client_t *c)
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
            client_teardown(c);
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

static void ws_frame(rt_client_t *c, int op, const char *p, size_t n)
{
    uint8_t h[10];
    size_t hl = ws_write_header(h, op, n);
    buf_append(&c->out, h, hl);
    buf_append(&c->out, p, n);
}

/* Ends a connection with a reason: SSE gets a last event, WebSocket a close frame. */
static void client_close(rt_client_t *c, int code, const char *reason)
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
        if (rn > 120)
            rn = 120;
        p[0] = (char)(code >> 8);
        p[1] = (char)(code & 0xFF);
        memcpy(p + 2, reason, rn);
        ws_frame(c, WS_OP_CLOSE, p, rn + 2);
        if (c->sock != NULL)
            h2o_socket_read_stop(c->sock);
    }
    c->closing = 1;
    c->closing_since_ms = util_now_ms();
    client_flush(c);
}

/* Appends one message (a JSON text) for the client, enforcing the queue bound. */
static void client_send(rt_client_t *c, const char *sse_event, const char *sse_id, const char *json, size_t n)
{
    if (c->closing || c->dead)
        return;
    size_t need = n + 64 + (sse_event ? strlen(sse_event) : 0);
    if (client_backlog(c) + need > rt_config()->queue_bytes) {
        metrics_add(&metrics_g.rt_closed_slow, 1);
        client_close(c, c->transport == T_WS ? WS_CLOSE_POLICY : 1008,
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
        ws_frame(c, WS_OP_TEXT, json, n);
    }
    c->last_activity_ms = util_now_ms();
    client_flush(c);
}

/* ---- clients ---- */

static rt_worker_t *rw_of(worker_t *w)
{
    return w->rt;
}

static rt_client_t *client_new(rt_worker_t *rw, int transport)
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
    for (size_t i = 0; i < 3; i++)
        util_random_id(rnd + i * 15);
    memcpy(c->id + 2, rnd, CLIENT_ID_LEN - 2);
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
static void client_free(rt_client_t *c)
{
    rt_worker_t *rw = c->rw;
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
static void client_teardown(rt_client_t *c)
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
    client_free(c);
}

static rt_client_t *client_find(rt_worker_t *rw, const char *id)
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
static rt_sub_t *sub_parse(const schema_t *schema, const char *topic, size_t tlen, int superuser,
                           const collection_t *auth_coll, const json_t *auth, bs_error_t *err)
{
    const realtime_config_t *cfg = rt_config();
    if (tlen == 0 || tlen > (size_t)cfg->max_topic_length) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "A topic must be 1 to %d bytes long.", cfg->max_topic_length);
        return NULL;
    }
    rt_sub_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    arena_init(&s->arena, 512);
    s->topic = arena_strndup(&s->arena, topic, tlen);
    const char *q = memchr(topic, '?', tlen);
    size_t base_len = q ? (size_t)(q - topic) : tlen;
    const char *slash = memchr(topic, '/', base_len);
    if (s->topic == NULL || slash == NULL || slash == topic || slash + 1 == topic + base_len) {
        bs_error_set(err, BS_ERR_BAD_REQUEST,
                     "Invalid topic \"%.*s\": expected \"collection/*\" or \"collection/recordId\".",
                     (int)(base_len > 200 ? 200 : base_len), topic);
        goto fail;
    }
    const collection_t *c = schema_find_n(schema, topic, (size_t)(slash - topic));
    if (c == NULL) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid topic \"%.*s\": unknown collection.",
                     (int)(base_len > 200 ? 200 : base_len), topic);
        goto fail;
    }
    snprintf(s->coll_id, sizeof(s->coll_id), "%s", c->id);
    size_t idn = base_len - (size_t)(slash + 1 - topic);
    if (!(idn == 1 && slash[1] == '*')) {
        if (!util_valid_id(slash + 1, idn)) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid topic \"%.*s\": bad record id.",
                         (int)(base_len > 200 ? 200 : base_len), topic);
            goto fail;
        }
        s->record_id = arena_strndup(&s->arena, slash + 1, idn);
    }
    if (q != NULL) {
        json_t *params = json_object();
        body_parse_pairs(&s->arena, params, q + 1, tlen - base_len - 1, 0);
        const char *opt = json_string_value(json_object_get(params, "options"));
        json_t *o = NULL;
        if (opt != NULL) {
            json_error_t jerr;
            o = json_loads(opt, 0, &jerr);
            if (!json_is_object(o)) {
                json_decref(o);
                json_decref(params);
                bs_error_set(
                    err, BS_ERR_BAD_REQUEST,
                    "Invalid topic options: expected a JSON object {\"query\":{...},\"headers\":{...}}.");
                goto fail;
            }
        }
        json_decref(params);
        if (o != NULL) {
            json_t *qo = json_object_get(o, "query"), *ho = json_object_get(o, "headers");
            s->query = json_object();
            s->headers = json_object();
            const char *k;
            json_t *v;
            /* Query and header values are strings, as they would be in a request. */
            json_object_foreach(qo, k, v)
            {
                if (json_is_string(v))
                    json_object_set(s->query, k, v);
                else if (!json_is_null(v)) {
                    char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
                    if (d)
                        json_object_set_new(s->query, k, json_string(d));
                    free(d);
                }
            }
            json_object_foreach(ho, k, v)
            {
                if (!json_is_string(v))
                    continue;
                char *lk = arena_strdup(&s->arena, k);
                for (char *p = lk; p && *p; p++)
                    *p = *p == '-' ? '_' : (char)((*p >= 'A' && *p <= 'Z') ? *p - 'A' + 'a' : *p);
                if (lk)
                    json_object_set(s->headers, lk, v);
            }
            json_decref(o);
        }
    }
    const char *filter = s->query ? json_string_value(json_object_get(s->query, "filter")) : NULL;
    if (filter != NULL && filter[0] != '\0') {
        /* Checked as a filter of this client: hidden fields only for superusers. */
        rules_compiler_t comp = {0};
        resolve_ctx_t rc = {.schema = schema,
                            .coll = c,
                            .alias = "_r",
                            .superuser = superuser,
                            .auth = auth,
                            .auth_coll = auth_coll,
                            .query = s->query,
                            .headers = s->headers,
                            .compiler = &comp};
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
static int client_subscribe(rt_client_t *c, const schema_t *schema, const json_t *topics, int replace,
                            bs_error_t *err)
{
    const realtime_config_t *cfg = rt_config();
    size_t n = json_array_size(topics);
    size_t keep = replace ? 0 : (size_t)c->nsubs;
    const collection_t *ac = c->auth_coll_id[0] ? schema_find(schema, c->auth_coll_id) : NULL;
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

static void client_unsubscribe(rt_client_t *c, const char *topic)
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
    const collection_t *ac = c->auth_coll_id[0] ? schema_find(s, c->auth_coll_id) : NULL;
    record_reader_t r = {.schema = s,
                         .conn = rw->w->reader,
                         .arena = scratch,
                         .superuser = c->superuser,
                         .auth_coll = ac,
                         .auth = ac ? c->auth : NULL,
                         .query = sub->query,
                         .headers = sub->headers,
                         .method = "GET",
                         .context = "realtime"};
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
        record_check(&r, coll, ev->record, sub->filter_node, sub->filter, live, &err) != 1)
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

static void deliver_to(rt_client_t *c, rt_sub_t *sub, const rt_event_t *ev, const char *payload, size_t n,
                       arena_t *scratch)
{
    char idbuf[24];
    snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)ev->id);
    if (c->transport == T_SSE) {
        client_send(c, sub->topic, idbuf, payload, n);
    } else {
        buf_t m;
        buf_init(&m, scratch);
        buf_printf(&m, "{\"type\":\"event\",\"id\":\"%s\",\"topic\":", idbuf);
        util_json_quote(&m, sub->topic, strlen(sub->topic));
        buf_puts(&m, ",\"data\":");
        buf_append(&m, payload, n);
        buf_putc(&m, '}');
        if (!m.oom)
            client_send(c, NULL, NULL, m.data, m.len);
    }
    metrics_add(&metrics_g.rt_deliveries, 1);
}

/* Events for this worker's subscribers (from the hub, in id order). */
static void deliver_events(worker_t *w, rt_event_t **evs, size_t n)
{
    rt_worker_t *rw = rw_of(w);
    if (rw == NULL || rw->draining)
        return;
    schema_t *s = schema_acquire();
    for (size_t e = 0; e < n; e++) {
        rt_event_t *ev = evs[e];
        bucket_t *b = bucket_find(rw, ev->coll_id, 0);
        const collection_t *coll = b ? schema_find(s, ev->coll_id) : NULL;
        if (coll == NULL)
            continue;
        arena_t scratch;
        arena_init(&scratch, 8192);
        variants_t var;
        buf_init(&var.plain, &scratch);
        buf_init(&var.super, &scratch);
        var.have_plain = var.have_super = 0;
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
            if (sub_wants(rw, s, coll, sub, ev, live, &scratch, &var, &payload, &plen))
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
static int client_replay(rt_client_t *c, uint64_t after)
{
    rt_event_t **evs;
    size_t n;
    if (rt_log_since(after, &evs, &n) != 0) {
        metrics_add(&metrics_g.rt_resyncs, 1);
        static const char msg[] =
            "{\"reason\":\"The events since this id are no longer held; fetch the current state.\"}";
        if (c->transport == T_SSE)
            client_send(c, "PB_RESYNC", NULL, msg, sizeof(msg) - 1);
        else {
            static const char wmsg[] = "{\"type\":\"resync\",\"message\":\"The events since this id are no "
                                       "longer held; fetch the current state.\"}";
            client_send(c, NULL, NULL, wmsg, sizeof(wmsg) - 1);
        }
        c->min_id = rt_log_last_id();
        return -1;
    }
    metrics_add(&metrics_g.rt_resumes, 1);
    rt_worker_t *rw = c->rw;
    schema_t *s = schema_acquire();
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
    for (rt_client_t *c = rw->clients, *next; c != NULL; c = next) {
        next = c->next;
        if (c->dead)
            continue;
        if (c->closing) {
            /* A peer that does not read its close frame within a ping interval is cut. */
            if (c->transport == T_WS && now - c->closing_since_ms >= cfg->ping_interval_ms)
                client_teardown(c);
            continue;
        }
        if (now - c->last_activity_ms >= cfg->idle_timeout_ms) {
            metrics_add(&metrics_g.rt_closed_idle, 1);
            client_close(c, c->transport == T_WS ? WS_CLOSE_GOING_AWAY : 408, "idle timeout");
            continue;
        }
        if (now - c->last_ping_ms >= cfg->ping_interval_ms) {
            c->last_ping_ms = now;
            /* A ping (WebSocket) or a comment (SSE) finds dead peers and keeps
             * proxies from closing a quiet connection. Neither counts as activity. */
            if (client_backlog(c) == 0) {
                if (c->transport == T_WS)
                    ws_frame(c, WS_OP_PING, "", 0);
                else
                    buf_puts(&c->out, ":ping\n\n");
                client_flush(c);
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
            client_flush(c);
        } else {
            client_close(c, WS_CLOSE_RESTART, "server restarting; reconnect");
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
        arena_init(&rw->rules_arena, 4096);
        rw->last_sweep_ms = util_now_ms();
        w->rt = rw;
        rt_register_worker(w, deliver_events);
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
        /* Whatever did not finish in the grace period is cut. */
        while (rw->clients != NULL) {
            rt_client_t *c = rw->clients;
            if (c->transport == T_SSE) {
                /* h2o owns the request; the stream ends when the loop is disposed. */
                c->req = NULL;
                client_free(c);
            } else {
                client_teardown(c);
            }
        }
        for (int i = 0; i < 3; i++)
            h2o_evloop_run(w->loop, 0);
        rt_worker_has_clients(w, 0);
        free(rw->buckets);
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

/* ---- SSE ---- */

static void sse_disposed(void *p)
{
    sse_guard_t *g = p;
    rt_client_t *c = g->c;
    if (c != NULL) {
        c->guard = NULL;
        c->req = NULL;
        c->dead = 1;
        client_free(c);
    }
}

static int refuse_if_full(req_ctx_t *ctx)
{
    if (total_connections() < (uint64_t)rt_config()->max_connections && !rw_of(ctx->worker)->draining)
        return 0;
    metrics_add(&metrics_g.rt_refused, 1);
    ctx_add_header(ctx, "retry-after", "5");
    ctx_send_status(ctx, BS_ERR_UNAVAILABLE,
                    rw_of(ctx->worker)->draining
                        ? "The server is restarting; reconnect shortly."
                        : "Too many realtime connections on this server (--realtime-max-connections); "
                          "try again later.");
    return -1;
}

static uint64_t parse_event_id(const char *s, size_t n)
{
    int64_t v;
    if (s == NULL || n == 0 || util_parse_i64(s, n, &v) != 0 || v < 0)
        return 0;
    return (uint64_t)v;
}

void realtime_sse_open(req_ctx_t *ctx)
{
    rt_worker_t *rw = rw_of(ctx->worker);
    if (rw == NULL || refuse_if_full(ctx) != 0)
        return;
    size_t ln = 0;
    const char *last = ctx_header(ctx, "last-event-id", &ln);
    uint64_t resume = parse_event_id(last, ln);
    const char *q = ctx_query(ctx, "lastEventId");
    if (resume == 0 && q != NULL)
        resume = parse_event_id(q, strlen(q));
    h2o_req_t *req = ctx_begin_stream(ctx, 200);
    if (req == NULL)
        return;
    rt_client_t *c = client_new(rw, T_SSE);
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
    client_send(c, "PB_CONNECT", c->id, data, strlen(data));
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

static void sub_apply(mailbox_msg_t *m)
{
    sub_req_t *r = (sub_req_t *)m;
    rt_worker_t *rw = rw_of(r->owner);
    rt_client_t *c = rw ? client_find(rw, r->client_id) : NULL;
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
            json_decref(c->auth);
            c->auth = r->auth;
            r->auth = NULL;
            snprintf(c->auth_coll_id, sizeof(c->auth_coll_id), "%s", r->auth_coll_id);
            c->superuser = r->superuser;
            c->auth_set = 1;
            schema_t *s = schema_acquire();
            if (client_subscribe(c, s, r->topics, 1, &r->err) == 0) {
                r->status = 204;
                c->last_activity_ms = util_now_ms();
                if (c->resume_from != 0) {
                    uint64_t from = c->resume_from;
                    c->resume_from = 0;
                    client_replay(c, from);
                }
            } else {
                r->status = 400;
            }
            schema_release(s);
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
    } else if (json_array_size(subs) > 1000) {
        bs_error_set(&err, BS_ERR_BAD_REQUEST, "Too many subscriptions: at most %d per connection.",
                     rt_config()->max_subscriptions);
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
    if (ctx->auth_coll)
        snprintf(r->auth_coll_id, sizeof(r->auth_coll_id), "%s", ctx->auth_coll->id);
    r->superuser = ctx->superuser;
    json_decref(body);
    /* The error's field list must live in the reply's arena. */
    r->err.code = BS_ERR_OK;
    ctx_async_begin(ctx);
    r->msg.deliver = sub_apply;
    mailbox_post(&owner->mailbox, &r->msg);
}

/* ---- WebSocket ---- */

static void ws_send_json(rt_client_t *c, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s != NULL)
        client_send(c, NULL, NULL, s, strlen(s));
    free(s);
}

static void ws_error(rt_client_t *c, const json_t *rid, int code, const char *message)
{
    json_t *o = json_pack("{s:s, s:i, s:s}", "type", "error", "code", code, "message", message);
    if (rid != NULL)
        json_object_set(o, "requestId", (json_t *)rid);
    ws_send_json(c, o);
}

/* Whether the client may send another message now (a one-second window). */
static int ws_rate_ok(rt_client_t *c, int64_t now)
{
    if (now - c->rate_window_ms >= 1000) {
        c->rate_window_ms = now;
        c->rate_count = 0;
        c->rate_refused = 0;
    }
    return ++c->rate_count <= rt_config()->max_messages_per_s;
}

static void ws_handle_text(rt_client_t *c, const char *p, size_t n)
{
    int64_t now = util_now_ms();
    if (!ws_rate_ok(c, now)) {
        metrics_add(&metrics_g.rt_rate_limited, 1);
        if (++c->rate_refused > rt_config()->max_messages_per_s)
            client_close(c, WS_CLOSE_POLICY, "message rate limit exceeded");
        else
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
        schema_t *s = schema_acquire();
        json_t *auth = NULL;
        const collection_t *ac = NULL;
        int su = 0;
        int rc = 0;
        if (tok != NULL && tok[0] != '\0')
            rc = authenticate ? authenticate(c->rw->w, s, tok, strlen(tok), &auth, &ac, &su, &err) : -1;
        if (rc != 0) {
            ws_error(c, rid, 401, err.message[0] ? err.message : "The token is invalid or has expired.");
        } else {
            /* A new identity starts with no subscriptions: they were checked for the old one. */
            client_unsubscribe(c, NULL);
            json_decref(c->auth);
            c->auth = auth;
            c->superuser = su;
            snprintf(c->auth_coll_id, sizeof(c->auth_coll_id), "%s", ac ? ac->id : "");
            json_t *o = json_pack("{s:s}", "type", "auth");
            if (auth != NULL) {
                json_object_set_new(o, "collectionName", json_string(ac->name));
                json_object_set(o, "id", json_object_get(auth, "id"));
            }
            if (rid)
                json_object_set(o, "requestId", (json_t *)rid);
            ws_send_json(c, o);
        }
        schema_release(s);
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
            if (client_subscribe(c, s, list, 0, &err) != 0) {
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
                client_unsubscribe(c, NULL);
            for (size_t i = 0; i < json_array_size(list); i++)
                if (json_is_string(json_array_get(list, i)))
                    client_unsubscribe(c, json_string_value(json_array_get(list, i)));
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
        uint64_t from = last ? parse_event_id(last, strlen(last)) : 0;
        if (from == 0) {
            ws_error(c, rid, 400, "resume needs \"lastEventId\": the id of the last event received.");
        } else if (client_replay(c, from) == 0) {
            char idbuf[24];
            snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)c->min_id);
            json_t *o = json_pack("{s:s, s:s}", "type", "resumed", "lastEventId", idbuf);
            if (rid)
                json_object_set(o, "requestId", (json_t *)rid);
            ws_send_json(c, o);
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
        client_teardown(c);
        return;
    }
    const realtime_config_t *cfg = rt_config();
    c->last_activity_ms = util_now_ms();
    for (;;) {
        if (c->closing || c->dead)
            return;
        uint8_t *p = (uint8_t *)sock->input->bytes;
        size_t n = sock->input->size;
        ws_frame_t f;
        int code = 0;
        const char *why = NULL;
        int rc = ws_parse_header(p, n, &f, &code, &why);
        if (rc < 0) {
            client_close(c, code, why);
            return;
        }
        if (rc == 0)
            break;
        if (f.len > cfg->max_message || c->msg.len + f.len > cfg->max_message) {
            client_close(c, WS_CLOSE_TOO_BIG, "message too big (--realtime-max-message)");
            return;
        }
        if (n < f.header_len + f.len)
            break; /* the rest of the frame is still coming */
        uint8_t *payload = p + f.header_len;
        size_t plen = (size_t)f.len;
        ws_unmask(payload, plen, f.mask, 0);
        switch (f.opcode) {
        case WS_OP_PING:
            ws_frame(c, WS_OP_PONG, (const char *)payload, plen);
            client_flush(c);
            break;
        case WS_OP_PONG:
            break;
        case WS_OP_CLOSE: {
            /* Answer with the same code (or none) and finish. */
            int cc = plen >= 2 ? (payload[0] << 8 | payload[1]) : WS_CLOSE_NORMAL;
            h2o_buffer_consume(&sock->input, f.header_len + plen);
            client_close(c, cc >= 1000 && cc < 5000 ? cc : WS_CLOSE_PROTOCOL, "");
            return;
        }
        case WS_OP_BINARY:
            client_close(c, 1003, "binary messages are not supported; send JSON text");
            return;
        case WS_OP_TEXT:
        case WS_OP_CONT:
            if ((f.opcode == WS_OP_CONT) != (c->msg_op != 0)) {
                client_close(c, WS_CLOSE_PROTOCOL, "unexpected continuation frame");
                return;
            }
            if (f.opcode == WS_OP_TEXT && f.fin) {
                if (!ws_utf8_valid(payload, plen)) {
                    client_close(c, WS_CLOSE_BAD_DATA, "text messages must be UTF-8");
                    return;
                }
                ws_handle_text(c, (const char *)payload, plen);
            } else {
                buf_append(&c->msg, payload, plen);
                c->msg_op = WS_OP_TEXT;
                if (f.fin) {
                    c->msg_op = 0;
                    if (!ws_utf8_valid((const uint8_t *)c->msg.data, c->msg.len))
                        client_close(c, WS_CLOSE_BAD_DATA, "text messages must be UTF-8");
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
        client_free(c);
        return;
    }
    h2o_buffer_consume(&sock->input, reqsize);
    c->sock = sock;
    sock->data = c;
    c->writing = 0;
    char m[96];
    snprintf(m, sizeof(m), "{\"type\":\"connect\",\"clientId\":\"%s\"}", c->id);
    client_send(c, NULL, NULL, m, strlen(m));
    h2o_socket_read_start(sock, ws_on_read);
    if (sock->input->size > 0)
        ws_on_read(sock, NULL);
}

void realtime_ws_open(req_ctx_t *ctx)
{
    rt_worker_t *rw = rw_of(ctx->worker);
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
    if (rw == NULL || refuse_if_full(ctx) != 0)
        return;
    char accept[29];
    ws_accept_key(key, klen, accept);
    rt_client_t *c = client_new(rw, T_WS);
    if (c == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    /* A token in the handshake authenticates the connection from the start. */
    if (ctx->auth != NULL && ctx->auth_coll != NULL) {
        c->auth = json_deep_copy(ctx->auth);
        snprintf(c->auth_coll_id, sizeof(c->auth_coll_id), "%s", ctx->auth_coll->id);
        c->superuser = ctx->superuser;
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
