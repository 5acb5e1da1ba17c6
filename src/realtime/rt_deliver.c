/*
 * Delivery: which subscriptions admit an event (rules and filters, checked per
 * subscriber), the payload once per visibility class, the wire frame once per
 * (event, topic, transport, payload) shared by every queue that takes it, the
 * PostgreSQL path through read jobs, and replay for resuming clients. On the worker
 * thread that owns the clients, except run_rt_job (a pool thread).
 *
 * Visibility classes: what record_write_json writes for a subscriber depends on
 * whether it is a superuser (hidden fields), whether it owns the auth record (its
 * email), and on its expand/fields options. Subscribers with neither options nor
 * ownership share one payload per event: one for superusers, one for everyone
 * else. The others get their own.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "metrics/metrics.h"
#include "realtime/rt_conn.h"
#include "realtime/rt_frame.h"

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

/* ---- delivery ---- */

static const char *action_name(int a)
{
    return a == RT_CREATE ? "create" : a == RT_UPDATE ? "update" : "delete";
}

typedef struct {
    buf_t plain, super; /* the payload as a non-superuser and as a superuser sees it */
    int have_plain, have_super;
} variants_t;

enum { PAYLOAD_OWN, PAYLOAD_PLAIN, PAYLOAD_SUPER };

/* Which payload a subscriber gets for ev: its own (expand or fields options, or the
 * owner of an auth record, who sees its email), or the one shared by every superuser
 * or by everyone else (see the file's comment). */
static int payload_class(const rt_sub_t *sub, int superuser, const collection_t *ac, const json_t *auth,
                         const collection_t *coll, const rt_event_t *ev)
{
    if (sub->expand != NULL || sub->fields != NULL)
        return PAYLOAD_OWN;
    int owner = ac == coll && auth != NULL &&
                strcmp(json_string_value(json_object_get(auth, "id")) ?: "", ev->rec_id) == 0;
    if (owner && coll->type == COLL_AUTH)
        return PAYLOAD_OWN;
    return superuser ? PAYLOAD_SUPER : PAYLOAD_PLAIN;
}

/* Whether sub admits ev, and if so the payload into *payload (in scratch). */
static int sub_wants(rt_worker_t *rw, const schema_t *s, const collection_t *coll, rt_sub_t *sub,
                     const rt_event_t *ev, int live, arena_t *scratch, variants_t *var, const char **payload,
                     size_t *plen)
{
    rt_client_t *c = sub->client;
    if (sub->record_id != NULL && strcmp(sub->record_id, ev->rec_id) != 0)
        return 0;
    json_t *rec = rt_event_record(ev);
    if (rec == NULL)
        return 0; /* a history row that is not JSON: nobody sees it */
    const collection_t *ac = rt_client_auth_coll(c, s);
    caller_t who = rt_sub_caller(sub, c->superuser, ac, ac ? c->auth : NULL);
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
            if (node == NULL || record_check(&r, coll, rec, node, text, live, &err) != 1)
                return 0;
        }
    }
    if (sub->filter_node != NULL &&
        record_check_filter(&r, coll, rec, sub->filter_node, sub->filter, live, &err) != 1)
        return 0;
    /* The payload: shared by every subscriber who sees the same thing. */
    int individual = payload_class(sub, c->superuser, ac, c->auth, coll, ev) == PAYLOAD_OWN;
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
    if (record_write_json(&r, coll, rec, sub->expand, sub->fields, b, &err) != 0) {
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

/* Queues a shared payload's frame: from the event's cache, or built once into it. */
static void deliver_shared(rt_client_t *c, rt_sub_t *sub, const rt_event_t *ev, const char *payload, size_t n,
                           rt_frame_cache_t *fc)
{
    rt_frame_t *f = rt_frame_cache_event(fc, c->transport == T_WS, sub->topic, ev->id, payload, n);
    if (f != NULL && rt_client_queue(c, rt_frame_ref(f), 1) == 0)
        metrics_add(&metrics_g.rt_deliveries, 1);
}

/* Queues a payload of this subscriber's own (or a replayed event's) in its own frame. */
static void deliver_to(rt_client_t *c, rt_sub_t *sub, const rt_event_t *ev, const char *payload, size_t n)
{
    rt_frame_t *f = rt_frame_event(c->transport == T_WS, sub->topic, ev->id, payload, n);
    if (f != NULL && rt_client_queue(c, f, 1) == 0)
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
    int shared; /* payload is the event's shared one for its class (one frame for all) */
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

/* The rules a job parsed, by collection and rule (list or view): once per job, not
 * once per item. */
#define JOB_RULES 8
typedef struct {
    const collection_t *coll;
    int which;
    rules_node_t *node;
} job_rule_t;

static rules_node_t *job_rule(rt_job_t *j, job_rule_t *rules, int *nrules, const collection_t *coll,
                              int which, const char *text)
{
    for (int k = 0; k < *nrules; k++)
        if (rules[k].coll == coll && rules[k].which == which)
            return rules[k].node;
    bs_error_t err;
    bs_error_init(&err);
    rules_node_t *node = rules_parse(&j->arena, text, strlen(text), NULL, &err);
    if (*nrules < JOB_RULES)
        rules[(*nrules)++] = (job_rule_t){.coll = coll, .which = which, .node = node};
    return node;
}

/* Pool thread: decides every item (as sub_wants does, with the item's identity). Items
 * of one event are next to each other (job_add's callers add them event by event), so
 * the shared payloads of the current event are kept until the event changes. */
static int run_rt_job(store_job_t *job, store_conn_t *conn)
{
    rt_job_t *j = (rt_job_t *)job;
    job_rule_t rules[JOB_RULES];
    int nrules = 0;
    const rt_event_t *cur = NULL;
    /* The current event's shared payloads: [PAYLOAD_PLAIN], [PAYLOAD_SUPER]; tried
     * once each (len 0 with tried set: the record could not be written). */
    struct {
        const char *p;
        size_t len;
        int tried;
    } shared[3];
    for (size_t i = 0; i < j->n; i++) {
        rt_item_t *it = &j->items[i];
        rt_sub_t *sub = it->sub;
        if (it->ev != cur) {
            cur = it->ev;
            memset(shared, 0, sizeof(shared));
        }
        const collection_t *coll = schema_find(j->schema, it->ev->coll_id);
        if (coll == NULL || (sub->record_id != NULL && strcmp(sub->record_id, it->ev->rec_id) != 0))
            continue;
        json_t *rec = rt_event_record(it->ev);
        if (rec == NULL)
            continue;
        caller_t who = rt_sub_caller(sub, it->superuser, it->ac, it->auth);
        record_reader_t r = {.schema = j->schema, .conn = conn, .arena = &j->arena, .who = &who};
        bs_error_t err;
        bs_error_init(&err);
        int live = !it->replay && it->ev->action != RT_DELETE;
        if (!it->superuser) {
            int which = sub->record_id ? 1 : 0;
            const char *text = coll->rules[which ? RULE_VIEW : RULE_LIST];
            if (text == NULL)
                continue;
            if (text[0] != '\0') {
                rules_node_t *node = job_rule(j, rules, &nrules, coll, which, text);
                if (node == NULL || record_check(&r, coll, rec, node, text, live, &err) != 1)
                    continue;
            }
        }
        if (sub->filter_node != NULL &&
            record_check_filter(&r, coll, rec, sub->filter_node, sub->filter, live, &err) != 1)
            continue;
        int cls = payload_class(sub, it->superuser, it->ac, it->auth, coll, it->ev);
        if (cls != PAYLOAD_OWN && shared[cls].tried) {
            if (shared[cls].len == 0)
                continue;
            it->payload = shared[cls].p;
            it->plen = shared[cls].len;
            it->wanted = it->shared = 1;
            continue;
        }
        if (cls != PAYLOAD_OWN)
            shared[cls].tried = 1;
        buf_t b;
        buf_init(&b, &j->arena);
        buf_printf(&b, "{\"action\":\"%s\",\"record\":", action_name(it->ev->action));
        if (record_write_json(&r, coll, rec, sub->expand, sub->fields, &b, &err) != 0)
            continue;
        buf_putc(&b, '}');
        if (b.oom)
            continue;
        it->payload = b.data;
        it->plen = b.len;
        it->wanted = 1;
        if (cls != PAYLOAD_OWN) {
            it->shared = 1;
            shared[cls].p = b.data;
            shared[cls].len = b.len;
        }
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
            rt_sub_free(it->sub);
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
    rt_frame_cache_t fc;
    rt_frame_cache_init(&fc);
    const rt_event_t *cur = NULL;
    for (size_t i = 0; i < j->n; i++) {
        rt_item_t *it = &j->items[i];
        rt_sub_t *sub = it->sub;
        rt_client_t *c = sub->client;
        if (it->ev != cur) {
            cur = it->ev;
            rt_frame_cache_clear(&fc);
        }
        if (it->wanted && !sub->dead && c != NULL && !c->closing && !c->dead && !rw->draining) {
            if (it->shared)
                deliver_shared(c, sub, it->ev, it->payload, it->plen, &fc);
            else
                deliver_to(c, sub, it->ev, it->payload, it->plen);
            if (!it->replay)
                metrics_hist_observe(&metrics_g.rt_latency, util_mono_ns() - it->ev->mono_ns);
        }
    }
    rt_frame_cache_clear(&fc);
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

/* The subscribers of ev's collection on this worker (NULL: none, or the collection is
 * gone), after the identities ev changed: the event itself is checked with what it
 * changed; *collp gets the collection. */
static bucket_t *event_bucket(rt_worker_t *rw, const schema_t *s, rt_event_t *ev, const collection_t **collp)
{
    const collection_t *coll = *collp = schema_find(s, ev->coll_id);
    if (coll == NULL)
        return NULL;
    if (coll->type == COLL_AUTH)
        rt_auth_record_changed(rw, s, ev);
    return rt_bucket_find(rw, ev->coll_id, 0);
}

/* deliver_events for a store whose reads go to a pool: identities are updated in
 * order here, the rest is decided in a job. */
static void deliver_events_job(rt_worker_t *rw, rt_event_t **evs, size_t n)
{
    schema_t *s = schema_acquire();
    rt_auth_check_schema(rw, s);
    rt_job_t *j = job_new(rw, s);
    if (j == NULL) {
        schema_release(s);
        return;
    }
    for (size_t e = 0; e < n; e++) {
        rt_event_t *ev = evs[e];
        const collection_t *coll;
        bucket_t *b = event_bucket(rw, s, ev, &coll);
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
void rt_deliver_events(worker_t *w, rt_event_t **evs, size_t n)
{
    rt_worker_t *rw = rt_rw_of(w);
    if (rw == NULL || rw->draining)
        return;
    if (!store_reads_inline(worker_settings()->store)) {
        deliver_events_job(rw, evs, n);
        return;
    }
    schema_t *s = schema_acquire();
    rt_auth_check_schema(rw, s);
    for (size_t e = 0; e < n; e++) {
        rt_event_t *ev = evs[e];
        const collection_t *coll;
        bucket_t *b = event_bucket(rw, s, ev, &coll);
        if (b == NULL)
            continue;
        arena_t scratch;
        arena_init(&scratch, 8192);
        variants_t var;
        buf_init(&var.plain, &scratch);
        buf_init(&var.super, &scratch);
        var.have_plain = var.have_super = 0;
        rt_frame_cache_t frames;
        rt_frame_cache_init(&frames);
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
                deliver_to(c, sub, ev, payload, plen);
        }
        metrics_hist_observe(&metrics_g.rt_latency, util_mono_ns() - ev->mono_ns);
        rt_frame_cache_clear(&frames);
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
                deliver_to(c, sub, ev, payload, plen);
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

/* The worker ends: delivery jobs waiting are dropped, the one in flight is waited
 * for (it holds subscriptions and posts back to this loop). */
void rt_deliver_end(rt_worker_t *rw)
{
    while (rw->jobs_head != NULL) {
        rt_job_t *j = rw->jobs_head;
        rw->jobs_head = j->next;
        job_release(j);
    }
    rw->jobs_tail = &rw->jobs_head;
    for (int i = 0; i < 2000 && rw->job_running; i++) {
        store_read_flush(worker_settings()->store, rw->w->idx);
        h2o_evloop_run(rw->w->loop, 1);
    }
}
