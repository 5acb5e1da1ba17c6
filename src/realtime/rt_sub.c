/*
 * Subscriptions: a topic parsed and checked against the schema and the client's
 * rights (sub_parse), a client's set of them (subscribe, unsubscribe, the re-check
 * after a lost identity), and the worker's index from collection to subscriptions
 * that delivery walks. On the worker thread that owns the client.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "realtime/rt_conn.h"
#include "realtime/rt_topic.h"

/* ---- index ---- */

bucket_t *rt_bucket_find(rt_worker_t *rw, const char *coll_id, int create)
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
    bucket_t *b = rt_bucket_find(rw, s->coll_id, 1);
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
    bucket_t *b = rt_bucket_find(rw, s->coll_id, 0);
    if (b == NULL || s->slot >= b->n || b->subs[s->slot] != s)
        return;
    b->subs[s->slot] = b->subs[--b->n];
    b->subs[s->slot]->slot = s->slot;
    if (b->n == 0) {
        free(b->subs);
        *b = rw->buckets[--rw->nbuckets];
    }
}

void rt_sub_free(rt_sub_t *s)
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

void rt_client_clear_subs(rt_client_t *c)
{
    for (int i = 0; i < c->nsubs; i++) {
        index_remove(c->rw, c->subs[i]);
        rt_sub_free(c->subs[i]);
    }
    __atomic_sub_fetch(&rt_n_subs, (uint64_t)c->nsubs, __ATOMIC_RELAXED);
    free(c->subs);
    c->subs = NULL;
    c->nsubs = 0;
}

/* ---- topics ---- */

/* Who a subscription reads as: its client's identity, with the subscription's own
 * options as @request.query / @request.headers, in the "realtime" context. */
caller_t rt_sub_caller(const rt_sub_t *sub, int superuser, const collection_t *ac, const json_t *auth)
{
    return (caller_t){.superuser = superuser,
                      .auth_coll = auth != NULL ? ac : NULL,
                      .auth = auth,
                      .query = sub->query,
                      .headers = sub->headers,
                      .method = "GET",
                      .context = "realtime"};
}

/* Parses "coll/STAR" (every record) or "coll/id", with an optional "?options=<json>", into a
 * subscription checked against the schema and the client's rights. Returns the
 * subscription or NULL with err (400). */
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
        caller_t who = rt_sub_caller(s, superuser, auth_coll, auth);
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
    rt_sub_free(s);
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
        rt_client_clear_subs(c);
    rt_sub_t **all = realloc(c->subs, ((size_t)c->nsubs + nf + 1) * sizeof(*all));
    if (all == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        goto fail;
    }
    c->subs = all;
    for (size_t k = 0; k < nf; k++) {
        fresh[k]->client = c;
        if (index_add(c->rw, fresh[k]) != 0) {
            rt_sub_free(fresh[k]);
            continue;
        }
        c->subs[c->nsubs++] = fresh[k];
        __atomic_add_fetch(&rt_n_subs, 1, __ATOMIC_RELAXED);
    }
    free(fresh);
    return 0;
fail:
    for (size_t k = 0; k < nf; k++)
        rt_sub_free(fresh[k]);
    free(fresh);
    return -1;
}

/* Drops c's subscription i (the last one takes its place). */
static void sub_remove_at(rt_client_t *c, int i)
{
    index_remove(c->rw, c->subs[i]);
    rt_sub_free(c->subs[i]);
    c->subs[i] = c->subs[--c->nsubs];
    __atomic_sub_fetch(&rt_n_subs, 1, __ATOMIC_RELAXED);
}

void rt_client_unsubscribe(rt_client_t *c, const char *topic)
{
    for (int i = 0; i < c->nsubs; i++) {
        if (topic != NULL && strcmp(c->subs[i]->topic, topic) != 0)
            continue;
        sub_remove_at(c, i--);
    }
}

/* An SSE client that lost its identity keeps the subscriptions it may still hold as
 * anonymous (PocketBase keeps them all; a superuser's may filter on hidden fields,
 * which no one else may). */
void rt_client_recheck_subs(rt_client_t *c, const schema_t *s)
{
    for (int i = 0; i < c->nsubs; i++) {
        bs_error_t err;
        bs_error_init(&err);
        const char *t = c->subs[i]->topic;
        rt_sub_t *again = sub_parse(s, t, strlen(t), c->superuser, rt_client_auth_coll(c, s), c->auth, &err);
        if (again != NULL) {
            rt_sub_free(again);
            continue;
        }
        sub_remove_at(c, i--);
    }
}
