/* Helpers shared by the handlers: authentication, lookups, writer jobs. */
#include <assert.h>
#include <pthread.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "api/logs.h"
#include "api/positions.h"
#include "auth/token.h"
#include "base/audit.h"
#include "cache/cache.h"
#include "base/log.h"
#include "base/util.h"
#include "metrics/metrics.h"
#include "redis/redis.h"
#include "redis/redis_shared.h"
#include "realtime/realtime.h"
#include "settings/settings.h"

/* The done handler always runs (it releases the job's resources); what it sends
 * goes nowhere if the client has gone. */
static void job_finish(void *arg)
{
    api_job_t *j = arg;
    req_ctx_t *ctx = j->ctx;
    j->done(j, ctx);
    ctx_async_end(ctx);
}

static void job_delivered(mailbox_msg_t *msg)
{
    api_job_t *j = (api_job_t *)msg;
    req_ctx_t *ctx = j->ctx;
    assert(server_current_worker() == ctx->worker);
    if (j->job.status == 0 && j->job.commit_lsn != 0) {
        api_position_note(ctx, j->job.commit_lsn);
        /* The other instances learn the position before the writer hears of its
         * write, as they learn its invalidations: its next read, wherever it lands,
         * waits for a replica that has it (commit_lsn is set only with replicas). */
        uint64_t seq = redis_shared_note_position((uint32_t)api_caller_slot(ctx), j->job.commit_lsn);
        if (seq > j->inval_seq)
            j->inval_seq = seq;
    }
    /* With other instances (Redis): the writer hears of its write once they have what
     * it invalidated, so its next request, wherever it lands, reads the write
     * (ADR 0015). The loop goes on meanwhile; bounded by redis_shared_wait. */
    if (j->job.status == 0 && j->inval_seq != 0 && redis_shared_wait(j->inval_seq, job_finish, j) == 0)
        return;
    job_finish(j);
}

/* The writer thread: the handler's hook, then which invalidation it queued. */
static void committed_then_seq(store_job_t *job)
{
    api_job_t *j = (api_job_t *)job;
    uint64_t before = redis_shared_seq();
    if (j->committed != NULL)
        j->committed(job);
    uint64_t after = redis_shared_seq();
    j->inval_seq = after != before ? after : 0;
}

void api_read(req_ctx_t *ctx, int (*run)(store_job_t *, store_conn_t *), api_job_done_fn done, void *data)
{
    api_read_on(ctx, worker_settings()->store, run, done, data, 0);
}

void api_read_scan(req_ctx_t *ctx, int (*run)(store_job_t *, store_conn_t *), api_job_done_fn done,
                   void *data)
{
    api_read_on(ctx, worker_settings()->store, run, done, data, 1);
}

void api_read_on(req_ctx_t *ctx, store_t *st, int (*run)(store_job_t *, store_conn_t *), api_job_done_fn done,
                 void *data, int scan)
{
    /* Not zeroed: store_read sets status and err; the rest is set here. */
    api_job_t *j = arena_alloc(&ctx->arena, sizeof(*j));
    if (j == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    j->job.msg.next = NULL;
    j->job.msg.deliver = job_delivered;
    j->job.reply_to = &ctx->worker->mailbox;
    j->job.run = run;
    j->job.committed = NULL;
    j->committed = NULL;
    j->inval_seq = 0;
    j->job.next_in_queue = NULL;
    j->job.arena = &ctx->arena;
    /* Every flag of store_job_t a read does not use, set: a read whose `primary` was
     * left as the arena had it skipped the replicas at random. */
    j->job.events = NULL;
    j->job.background = 0;
    j->job.primary = 0;
    j->job.unshared = 0;
    j->job.pipelinable = 0;
    j->job.scan = scan;
    j->ctx = ctx;
    j->done = done;
    j->data = data;
    /* From here the job owns the arena until done runs (SQLite: before store_read
     * returns; PostgreSQL: from the worker's mailbox). A client that leaves meanwhile
     * is freed by ctx_async_end after done, never under the job. */
    ctx_async_begin(ctx);
    if (ctx->req == NULL) {
        /* The client has gone: nothing to read for, but done still releases. */
        j->job.status = -1;
        bs_error_init(&j->job.err);
        bs_error_set(&j->job.err, BS_ERR_UNAVAILABLE, NULL);
        job_delivered(&j->job.msg);
        return;
    }
    j->job.commit_lsn = 0;
    uint64_t lsn = 0;
    if (store_has_replicas(st)) {
        lsn = api_position_wanted(ctx);
        /* Another instance's position messages that arrived but are not applied yet
         * may hold this caller's: the primary answers (ADR 0015's rule for the cache). */
        if (redis_enabled() && redis_sub_pending())
            j->job.primary = 1;
    }
    store_read_after(st, ctx->worker->idx, &j->job, lsn);
}

store_job_t *api_submit(req_ctx_t *ctx, int (*run)(store_job_t *, store_conn_t *),
                        void (*committed)(store_job_t *), api_job_done_fn done, void *data)
{
    api_job_t *j = arena_calloc(&ctx->arena, sizeof(*j));
    if (j == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    j->job.msg.deliver = job_delivered;
    j->job.reply_to = &ctx->worker->mailbox;
    j->job.run = run;
    j->committed = committed;
    j->job.committed = redis_enabled() ? committed_then_seq : committed;
    j->job.arena = &ctx->arena;
    j->ctx = ctx;
    j->done = done;
    j->data = data;
    ctx_async_begin(ctx);
    /* Submitted with the rest of this loop turn's writes (server.c). */
    store_queue_add(&ctx->worker->writes, &j->job);
    return &j->job;
}

int api_require_superuser(req_ctx_t *ctx)
{
    if (ctx->who.superuser)
        return 0;
    if (ctx->auth == NULL) {
        if (ctx->auth_err.code != BS_ERR_OK)
            ctx_send_error(ctx, &ctx->auth_err);
        else
            ctx_send_status(ctx, BS_ERR_UNAUTHORIZED, NULL);
    } else {
        ctx_send_status(ctx, BS_ERR_FORBIDDEN, "Only superusers can perform this action.");
    }
    return -1;
}

/* ---- the collections as committed, on every instance (ADR 0013) ----
 * Another instance's schema change reaches this one as a notification (the store's
 * on_schema_change) and is loaded by the next request before it runs; a request that
 * names a collection this instance does not know asks the database whether it exists
 * (a change whose notification has not arrived yet) and, if so, reloads and runs
 * again. Both read in a read job, never on the loop. */
typedef struct {
    int attempts;     /* loads so far: one more when another snapshot won the race */
    uint64_t gen;     /* the notification generation this load answers (0: none) */
    const char *name; /* a missing collection's id or name: load only if it exists */
    /* A known collection's id and `updated`: load only if its row is gone or newer. */
    const char *known_id, *known_updated;
    uint64_t base;   /* the version of the snapshot current before the load */
    schema_t *fresh; /* loaded by the job; published (or freed) in its done */
    void (*next)(req_ctx_t *ctx, void *arg);
    void *arg;
} schema_check_t;

static int run_schema_check(store_job_t *job, store_conn_t *conn)
{
    schema_check_t *sc = ((api_job_t *)job)->data;
    /* Read before loading: a snapshot the writer publishes meanwhile is newer. */
    schema_t *cur = schema_acquire();
    sc->base = cur != NULL ? cur->version : 0;
    schema_release(cur);
    if (sc->name != NULL) {
        bs_value_t p = bs_val_text(sc->name, strlen(sc->name));
        store_stmt_t *st = store_query(
            conn, "SELECT 1 FROM _collections WHERE id = ?1 OR lower(name) = lower(?1)", &p, 1, &job->err);
        if (st == NULL)
            return -1;
        int rc = store_step(st, &job->err);
        store_done(st);
        if (rc <= 0)
            return rc; /* 0: missing indeed, nothing to load */
    } else if (sc->known_id != NULL) {
        bs_value_t p = bs_val_text(sc->known_id, strlen(sc->known_id));
        store_stmt_t *st =
            store_query(conn, "SELECT updated FROM _collections WHERE id = ?1", &p, 1, &job->err);
        if (st == NULL)
            return -1;
        int rc = store_step(st, &job->err);
        int same = 0;
        if (rc == 1) {
            bs_value_t u = store_col(st, 0);
            same = u.type == BS_VAL_TEXT && strlen(sc->known_updated) == u.n &&
                   memcmp(u.s, sc->known_updated, u.n) == 0;
        }
        store_done(st);
        if (rc < 0)
            return -1;
        if (same)
            return 0; /* as this instance knows it */
    }
    sc->fresh = schema_load(conn, &job->err);
    /* A notification also stands for a change of the settings on another instance
     * (redis_shared_definitions_changed): reread them too, cheap and rare. */
    if (sc->fresh != NULL && sc->gen != 0)
        settings_reload(conn);
    return sc->fresh != NULL ? 0 : -1;
}

static void schema_check_done(api_job_t *j, req_ctx_t *ctx)
{
    schema_check_t *sc = j->data;
    if (sc->fresh != NULL) {
        schema_t *fresh = sc->fresh;
        size_t n = fresh->ncols;
        sc->fresh = NULL;
        if (schema_publish_over(fresh, sc->base)) {
            LOGF(LOG_INFO, "schema", "collections changed on another instance: %zu collections reloaded", n);
        } else if (++sc->attempts < 3 && ctx->req != NULL) {
            /* Another snapshot was published while this one loaded (the writer's, the
             * maintenance thread's): it may predate the change, so load once more. */
            api_read(ctx, run_schema_check, schema_check_done, sc);
            return;
        }
    }
    if (j->job.status != 0) {
        /* The database cannot say: answer as this instance knows, as before. */
        LOGF(LOG_WARN, "schema", "could not check for collections changed elsewhere: %s", j->job.err.message);
    } else if (sc->gen != 0) {
        schema_remote_checked(sc->gen);
    }
    if (ctx->req == NULL)
        return;
    schema_t *now = schema_acquire();
    if (ctx->schema_prev == NULL && ctx->who.auth_coll != NULL)
        ctx->schema_prev = ctx->schema; /* the requester's collection points into it */
    else
        schema_release(ctx->schema);
    ctx->schema = now;
    sc->next(ctx, sc->arg);
}

static void schema_check(req_ctx_t *ctx, uint64_t gen, const char *name, const collection_t *known,
                         void (*next)(req_ctx_t *, void *), void *arg)
{
    schema_check_t *sc = arena_calloc(&ctx->arena, sizeof(*sc));
    if (sc == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    sc->gen = gen;
    sc->name = name != NULL ? arena_strdup(&ctx->arena, name) : NULL;
    if (known != NULL) {
        sc->known_id = arena_strdup(&ctx->arena, known->id);
        sc->known_updated = arena_strdup(&ctx->arena, known->updated != NULL ? known->updated : "");
    }
    sc->next = next;
    sc->arg = arg;
    api_read(ctx, run_schema_check, schema_check_done, sc);
}

static void schema_fresh_now(req_ctx_t *ctx, void (*next)(req_ctx_t *ctx, void *arg), void *arg)
{
    uint64_t gen = schema_remote_unchecked();
    if (gen == 0 || ctx->schema_rechecked) {
        next(ctx, arg);
        return;
    }
    ctx->schema_rechecked = 1;
    schema_check(ctx, gen, NULL, NULL, next, arg);
}

/* A request that came while worker 0's subscriber holds messages not applied yet
 * (one may say that the collections or settings changed on another instance, which
 * answered its writer already) waits for them (redis_shared_wait_applied: woken when
 * worker 0 has applied them, bounded as the writers' wait). */
typedef struct {
    req_ctx_t *ctx;
    void (*next)(req_ctx_t *ctx, void *arg);
    void *arg;
} pending_wait_t;

static void pending_applied(void *arg)
{
    pending_wait_t *p = arg;
    req_ctx_t *ctx = p->ctx;
    if (ctx->req != NULL)
        schema_fresh_now(ctx, p->next, p->arg);
    ctx_async_end(ctx);
}

void api_schema_fresh_then(req_ctx_t *ctx, void (*next)(req_ctx_t *ctx, void *arg), void *arg)
{
    if (redis_enabled() && redis_sub_pending()) {
        pending_wait_t *p = arena_calloc(&ctx->arena, sizeof(*p));
        if (p != NULL) {
            p->ctx = ctx;
            p->next = next;
            p->arg = arg;
            ctx_async_begin(ctx);
            if (redis_shared_wait_applied(pending_applied, p) == 0)
                return;
            ctx_async_end(ctx);
        }
    }
    schema_fresh_now(ctx, next, arg);
}

static void rerun_route(req_ctx_t *ctx, void *arg)
{
    (void)arg;
    ctx->rerun(ctx, ctx->rerun_arg);
}

/* Whether this request may still reload the collections and run its route again. */
static int may_recheck(const req_ctx_t *ctx)
{
    return ctx->rerun != NULL && !ctx->schema_rechecked &&
           store_dialect(worker_settings()->store) == RULES_DIALECT_POSTGRES;
}

int api_collection_recheck(req_ctx_t *ctx, const collection_t *c)
{
    if (!may_recheck(ctx))
        return 0;
    ctx->schema_rechecked = 1;
    schema_check(ctx, 0, NULL, c, rerun_route, NULL);
    return 1;
}

const collection_t *api_collection(req_ctx_t *ctx, const char *id_or_name)
{
    const collection_t *c = schema_find(ctx->schema, id_or_name);
    if (c == NULL && may_recheck(ctx) && id_or_name[0] != '\0' && strlen(id_or_name) <= 255) {
        /* Perhaps made on another instance a moment ago: the handler runs again. */
        ctx->schema_rechecked = 1;
        schema_check(ctx, 0, id_or_name, NULL, rerun_route, NULL);
        return NULL;
    }
    if (c == NULL) {
        bs_error_t err;
        bs_error_init(&err);
        bs_error_set(&err, BS_ERR_NOT_FOUND, "Missing collection \"%s\".", id_or_name);
        ctx_send_error(ctx, &err);
    }
    return c;
}

int api_list_where(req_ctx_t *ctx, const collection_t *c, resolve_ctx_t *rc, buf_t *where, bs_error_t *err)
{
    const char *filter = ctx_query(ctx, "filter");
    if (filter && strlen(filter) > worker_settings()->max_filter_length) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The filter is too long (limit %zu characters).",
                     worker_settings()->max_filter_length);
        return -1;
    }
    if (resolve_compile(rc, &ctx->arena, filter ? filter : "", filter ? strlen(filter) : 0, where, err) != 0)
        return -1;
    const char *rule = c->rules[RULE_LIST];
    if (!ctx->who.superuser && rule && rule[0]) {
        /* Rules are trusted text: they may use hidden fields. */
        resolve_ctx_t rr = *rc;
        rr.trusted = 1;
        buf_puts(where, " AND ");
        if (resolve_compile(&rr, &ctx->arena, rule, strlen(rule), where, err) != 0)
            return -1;
    }
    return 0;
}

json_t *api_superuser_body(req_ctx_t *ctx)
{
    if (api_require_superuser(ctx) != 0)
        return NULL;
    bs_error_t err;
    bs_error_init(&err);
    json_t *body = ctx_body(ctx, &err);
    if (body == NULL)
        ctx_send_error(ctx, &err);
    return body;
}

record_reader_t api_reader(req_ctx_t *ctx)
{
    record_reader_t r = {.schema = ctx->schema,
                         .conn = NULL, /* the read job's connection, set in its run */
                         .arena = &ctx->arena,
                         /* One budget for everything this request writes out. */
                         .budget = arena_calloc(&ctx->arena, sizeof(record_budget_t)),
                         .who = &ctx->who};
    return r;
}

/*
 * A worker's memo of verified tokens. Checking a token costs two JSON parses, an HMAC
 * and the auth record's load (from the cache, as JSON text, parsed again); a client
 * sends the same token with every request. An entry keeps the token's bytes, the auth
 * record and what the check read (the schema version, the auth collection's cache
 * generation, the token's expiry), and is used only while all of them still hold: a
 * changed tokenKey, password, deletion or schema change makes the next request check
 * the token in full again. Direct-mapped by a hash of the token; one per worker
 * thread, so no locking; the record is shared with the requests by reference count
 * and never modified.
 */
#define TOKEN_MEMO_SLOTS 256

typedef struct {
    char *token; /* NULL: empty slot */
    size_t len;
    json_t *rec;
    char coll_id[sizeof(((token_claims_t *)0)->collection_id)];
    int64_t exp;
    int refreshable;
    cache_deps_t deps;
} token_memo_entry_t;

typedef struct {
    token_memo_entry_t slot[TOKEN_MEMO_SLOTS];
} token_memo_t;

static void memo_clear(token_memo_entry_t *e)
{
    free(e->token);
    json_decref(e->rec);
    memset(e, 0, sizeof(*e));
}

void api_worker_event(worker_t *w, int event)
{
    if (event == SERVER_WORKER_END && w->auth_memo != NULL) {
        token_memo_t *m = w->auth_memo;
        for (int i = 0; i < TOKEN_MEMO_SLOTS; i++)
            memo_clear(&m->slot[i]);
        free(m);
        w->auth_memo = NULL;
    }
    logs_tick(w, event);
    realtime_worker_event(w, event);
}

size_t api_worker_busy(worker_t *w)
{
    return realtime_worker_clients(w) + logs_pending();
}

static token_memo_entry_t *memo_slot(worker_t *w, const char *h, size_t len)
{
    if (w == NULL)
        return NULL;
    if (w->auth_memo == NULL && (w->auth_memo = calloc(1, sizeof(token_memo_t))) == NULL)
        return NULL;
    uint64_t x = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        x = (x ^ (unsigned char)h[i]) * 1099511628211ull;
    return &((token_memo_t *)w->auth_memo)->slot[x % TOKEN_MEMO_SLOTS];
}

static void memo_put(token_memo_entry_t *e, const char *h, size_t len, json_t *rec, const collection_t *c,
                     const token_claims_t *claims, const cache_deps_t *deps)
{
    if (e == NULL || strlen(c->id) >= sizeof(e->coll_id))
        return;
    memo_clear(e);
    if ((e->token = malloc(len)) == NULL)
        return;
    memcpy(e->token, h, len);
    e->len = len;
    e->rec = json_incref(rec);
    memcpy(e->coll_id, c->id, strlen(c->id) + 1);
    e->exp = claims->exp;
    e->refreshable = claims->refreshable;
    e->deps = *deps;
}

static void token_accepted(json_t *rec, const collection_t *c, int refreshable, json_t **auth,
                           const collection_t **coll, int *superuser, int *out_refreshable)
{
    char who[220];
    snprintf(who, sizeof(who), "%s:%s", c->id, json_string_value(json_object_get(rec, "id")));
    metrics_active_user(who, util_now_ms());
    *auth = rec;
    *coll = c;
    *superuser = strcmp(c->name, "_superusers") == 0;
    if (out_refreshable != NULL)
        *out_refreshable = refreshable;
}

/* A token whose record must be read: the job that reads it (heap: a WebSocket's
 * check has no request arena), with what the check needs afterwards. */
typedef struct {
    store_job_t job; /* first */
    worker_t *w;
    schema_t *schema; /* the caller's; it keeps it referenced until cb ran */
    const collection_t *coll;
    token_claims_t claims;
    cache_deps_t deps;
    char *token; /* owned copy */
    size_t len;
    json_t *rec; /* owned, from the job */
    bs_error_t load_err;
    api_token_cb cb;
    void *arg;
    arena_t arena;
} token_job_t;

static int run_token_load(store_job_t *job, store_conn_t *conn)
{
    token_job_t *t = (token_job_t *)job;
    bs_error_init(&t->load_err);
    t->rec = record_load(conn, t->coll, "id", t->claims.id, &t->load_err);
    return 0; /* a missing record is an answer, decided in token_finish */
}

/* Verifies the token against its record (taken) and answers cb; on the worker. */
static void token_finish(worker_t *w, schema_t *s, const collection_t *c, const token_claims_t *claims,
                         const cache_deps_t *deps, const char *h, size_t len, json_t *rec,
                         const bs_error_t *load_err, api_token_cb cb, void *arg)
{
    api_token_result_t res = {0};
    bs_error_init(&res.err);
    (void)s;
    if (rec == NULL) {
        bs_error_set(&res.err, BS_ERR_UNAUTHORIZED,
                     load_err->code == BS_ERR_NOT_FOUND ? "The authorization token's record no longer exists."
                                                        : "The authorization token could not be checked.");
        res.status = -1;
        cb(arg, &res);
        return;
    }
    const char *key = json_string_value(json_object_get(rec, "tokenKey"));
    if (token_verify(h, len, key ? key : "", c->token_secret ? c->token_secret : "", util_now_ms() / 1000,
                     "auth", &res.err) != 0) {
        json_decref(rec);
        res.status = -1;
        cb(arg, &res);
        return;
    }
    memo_put(memo_slot(w, h, len), h, len, rec, c, claims, deps);
    token_accepted(rec, c, claims->refreshable, &res.auth, &res.coll, &res.superuser, &res.refreshable);
    cb(arg, &res);
}

static void token_loaded(mailbox_msg_t *msg)
{
    token_job_t *t = (token_job_t *)msg;
    assert(server_current_worker() == t->w);
    struct cache *cache = worker_settings()->cache;
    if (t->rec != NULL && cache != NULL) {
        /* The cache is filled on the worker, from the job's result. */
        char ckey[256];
        int klen = snprintf(ckey, sizeof(ckey), "a:%s:%s", t->coll->id, t->claims.id);
        char *text = json_dumps(t->rec, JSON_COMPACT);
        if (text != NULL) {
            cache_put(cache, ckey, (size_t)klen, text, strlen(text), &t->deps, util_now_ms());
            free(text);
        }
    }
    token_finish(t->w, t->schema, t->coll, &t->claims, &t->deps, t->token, t->len, t->rec, &t->load_err,
                 t->cb, t->arg);
    free(t->token);
    arena_free(&t->arena);
    free(t);
}

void api_check_token(worker_t *w, schema_t *s, const char *h, size_t len, api_token_cb cb, void *arg)
{
    /* Not zeroed whole: its error's buffers are large and this runs per request. */
    api_token_result_t res;
    res.status = -1;
    res.auth = NULL;
    res.coll = NULL;
    res.superuser = res.refreshable = res.coll_unknown = 0;
    bs_error_init(&res.err);
    token_memo_entry_t *memo = memo_slot(w, h, len);
    if (memo != NULL && memo->token != NULL && memo->len == len && memcmp(memo->token, h, len) == 0 &&
        memo->exp > util_now_ms() / 1000 && cache_deps_fresh(&memo->deps, s->version)) {
        const collection_t *c = schema_find(s, memo->coll_id);
        if (c != NULL) {
            token_accepted(json_incref(memo->rec), c, memo->refreshable, &res.auth, &res.coll, &res.superuser,
                           &res.refreshable);
            res.status = 0;
            cb(arg, &res);
            return;
        }
    }
    token_claims_t claims;
    if (token_peek(h, len, &claims, &res.err) != 0) {
        cb(arg, &res);
        return;
    }
    const collection_t *c = schema_find(s, claims.collection_id);
    if (c == NULL || c->type != COLL_AUTH) {
        res.coll_unknown = c == NULL;
        bs_error_set(&res.err, BS_ERR_UNAUTHORIZED, "The authorization token's collection does not exist.");
        cb(arg, &res);
        return;
    }
    json_t *rec = NULL;
    struct cache *cache = worker_settings()->cache;
    /* What the check depends on, read before reading. */
    cache_deps_t deps = {.schema_version = s->version};
    cache_deps_add(&deps, c->id);
    char ckey[256];
    int klen = snprintf(ckey, sizeof(ckey), "a:%s:%s", c->id, claims.id);
    size_t vlen;
    arena_t tmp;
    arena_init(&tmp, 1024);
    char *cached = cache_get(cache, ckey, (size_t)klen, s->version, &tmp, &vlen, util_now_ms());
    if (cached != NULL) {
        json_error_t jerr;
        rec = json_loadb(cached, vlen, 0, &jerr);
    }
    arena_free(&tmp);
    bs_error_t load_err;
    bs_error_init(&load_err);
    if (rec != NULL) {
        token_finish(w, s, c, &claims, &deps, h, len, rec, &load_err, cb, arg);
        return;
    }
    /* The record must be read: a job (inline on SQLite). */
    token_job_t *t = calloc(1, sizeof(*t));
    char *copy = t ? malloc(len ? len : 1) : NULL;
    if (copy == NULL) {
        free(t);
        bs_error_set(&res.err, BS_ERR_UNAUTHORIZED, "The authorization token could not be checked.");
        cb(arg, &res);
        return;
    }
    memcpy(copy, h, len);
    arena_init(&t->arena, 512);
    t->job.msg.deliver = token_loaded;
    t->job.reply_to = &w->mailbox;
    t->job.run = run_token_load;
    t->job.arena = &t->arena;
    t->w = w;
    t->schema = s;
    t->coll = c;
    t->claims = claims;
    t->deps = deps;
    t->token = copy;
    t->len = len;
    t->cb = cb;
    t->arg = arg;
    store_read(worker_settings()->store, w->idx, &t->job);
}

typedef struct {
    req_ctx_t *ctx;
    api_auth_next_fn next;
    void *arg;
} auth_wait_t;

/* Completes ctx->who with the request's facts, once the identity is known; read-only
 * from here on. Headers become an object only when some rule may read them. */
static void seal_caller(req_ctx_t *ctx)
{
    ctx->who.query = ctx->query;
    ctx->who.method = ctx->method;
    ctx->who.headers = ctx->schema->rules_use_headers ? ctx_headers(ctx) : NULL;
    ctx->who.context = NULL;
}

static void reauthenticate(req_ctx_t *ctx, void *arg)
{
    auth_wait_t *aw = arg;
    api_authenticate(ctx, aw->next, aw->arg);
}

static void authenticated(void *p, api_token_result_t *res)
{
    auth_wait_t *aw = p;
    req_ctx_t *ctx = aw->ctx;
    if (res->status != 0 && res->coll_unknown && ctx->req != NULL && ctx->who.auth_coll == NULL &&
        !ctx->schema_rechecked && store_dialect(worker_settings()->store) == RULES_DIALECT_POSTGRES) {
        /* A token of an auth collection made on another instance a moment ago: look it
         * up, reload, and check the token again (ADR 0013). */
        size_t len;
        const char *h = ctx_header(ctx, "authorization", &len);
        token_claims_t claims;
        bs_error_t ignored;
        bs_error_init(&ignored);
        if (h != NULL && len > 7 && strncasecmp(h, "Bearer ", 7) == 0)
            h += 7, len -= 7;
        if (h != NULL && token_peek(h, len, &claims, &ignored) == 0 && claims.collection_id[0] != '\0') {
            ctx->schema_rechecked = 1;
            schema_check(ctx, 0, claims.collection_id, NULL, reauthenticate, aw);
            ctx_async_end(ctx);
            return;
        }
    }
    if (res->status == 0) {
        ctx->auth = res->auth;
        ctx->who.auth = res->auth;
        ctx->who.auth_coll = res->coll;
        ctx->who.superuser = res->superuser;
        ctx->auth_refreshable = res->refreshable;
    } else {
        ctx->auth_err = res->err;
    }
    /* The handler runs only for a client that is still there. */
    if (ctx->req != NULL) {
        seal_caller(ctx);
        aw->next(ctx, aw->arg);
    }
    ctx_async_end(ctx);
}

void api_authenticate(req_ctx_t *ctx, api_auth_next_fn next, void *arg)
{
    size_t len;
    const char *h = ctx_header(ctx, "authorization", &len);
    if (h == NULL || len == 0) {
        seal_caller(ctx);
        next(ctx, arg);
        return;
    }
    if (len > 7 && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        len -= 7;
    }
    auth_wait_t *aw = arena_alloc(&ctx->arena, sizeof(*aw));
    if (aw == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    aw->ctx = ctx;
    aw->next = next;
    aw->arg = arg;
    ctx_async_begin(ctx);
    api_check_token(ctx->worker, ctx->schema, h, len, authenticated, aw);
}

json_t *api_changes_new(void)
{
    return realtime_listening() ? json_array() : NULL;
}

void api_changes_publish(json_t **changes)
{
    if (*changes != NULL)
        realtime_publish(*changes);
    *changes = NULL;
}

typedef struct {
    record_reader_t r;
    const collection_t *coll;
    char id[sizeof(((token_claims_t *)0)->id)];
    path_tree_t *expand;
    buf_t out;
    int found;
    json_t *auth_ref; /* the reference who.auth holds while the job may read it */
    caller_t who;     /* the record's owner, with the request's facts */
} send_auth_t;

static int run_send_auth(store_job_t *job, store_conn_t *conn)
{
    send_auth_t *sa = ((api_job_t *)job)->data;
    sa->r.conn = conn;
    sa->found = record_fetch(&sa->r, sa->coll, sa->id, sa->expand, NULL, &sa->out, &job->err);
    return sa->found < 0 ? -1 : 0;
}

static void send_auth_done(api_job_t *j, req_ctx_t *ctx)
{
    send_auth_t *sa = j->data;
    json_decref(sa->auth_ref);
    sa->auth_ref = NULL;
    if (j->job.status != 0 || sa->found == 0) {
        if (j->job.status == 0)
            bs_error_set(&j->job.err, BS_ERR_NOT_FOUND, NULL);
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    buf_putc(&sa->out, '}');
    if (sa->out.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    ctx_add_header(ctx, "cache-control", "no-store");
    ctx_send_json(ctx, 200, sa->out.data, sa->out.len);
}

void api_send_auth(req_ctx_t *ctx, const collection_t *c, const json_t *rec, int refreshable,
                   int64_t duration_s)
{
    token_claims_t claims = {0};
    snprintf(claims.id, sizeof(claims.id), "%s", json_string_value(json_object_get(rec, "id")));
    snprintf(claims.collection_id, sizeof(claims.collection_id), "%s", c->id);
    snprintf(claims.type, sizeof(claims.type), "auth");
    claims.exp = util_now_ms() / 1000 + (duration_s > 0 ? duration_s : c->token_duration);
    claims.refreshable = refreshable;
    send_auth_t *sa = arena_calloc(&ctx->arena, sizeof(*sa));
    if (sa == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    buf_init(&sa->out, &ctx->arena);
    buf_puts(&sa->out, "{\"token\":\"");
    const char *key = json_string_value(json_object_get(rec, "tokenKey"));
    token_sign(&sa->out, &claims, key ? key : "", c->token_secret ? c->token_secret : "");
    buf_puts(&sa->out, "\",\"record\":");
    /* The record as its owner sees it. The reader keeps rec: the caller's reference
     * outlives the job (it is the request's, or released in the caller's done). */
    sa->auth_ref = json_incref((json_t *)rec);
    sa->who =
        caller_as(&ctx->who, c, sa->auth_ref, ctx->who.superuser || strcmp(c->name, "_superusers") == 0);
    sa->r = api_reader(ctx);
    sa->r.who = &sa->who;
    sa->coll = c;
    memcpy(sa->id, claims.id, sizeof(sa->id));
    bs_error_t err;
    bs_error_init(&err);
    sa->expand = path_tree_parse(&ctx->arena, ctx_query(ctx, "expand"), 6, &err);
    if (err.code != BS_ERR_OK) {
        json_decref(sa->auth_ref);
        ctx_send_error(ctx, &err);
        return;
    }
    api_read(ctx, run_send_auth, send_auth_done, sa);
}

void api_health(req_ctx_t *ctx, char **params)
{
    (void)params;
    const char *ready = ctx_query(ctx, "ready");
    if (ready != NULL && strcmp(ready, "0") != 0 && strcmp(ready, "false") != 0) {
        api_ready(ctx, params);
        return;
    }
    static const char body[] = "{\"message\":\"API is healthy.\",\"code\":200,\"data\":{}}";
    ctx_send_json(ctx, 200, body, sizeof(body) - 1);
}

static int run_ping(store_job_t *job, store_conn_t *conn)
{
    (void)job;
    return store_ping(conn);
}

static void ping_done(api_job_t *j, req_ctx_t *ctx)
{
    if (j->job.status != 0) {
        ctx_send_status(ctx, BS_ERR_UNAVAILABLE, "The database is unreachable.");
        return;
    }
    static const char body[] = "{\"message\":\"API is ready.\",\"code\":200,\"data\":{}}";
    ctx_send_json(ctx, 200, body, sizeof(body) - 1);
}

void api_ready(req_ctx_t *ctx, char **params)
{
    (void)params;
    if (ctx->worker->stop || server_draining()) {
        ctx_send_status(ctx, BS_ERR_UNAVAILABLE, "The server is shutting down.");
        return;
    }
    if (!redis_ready()) {
        ctx_send_status(ctx, BS_ERR_UNAVAILABLE, "Redis is unreachable (and --redis-required is set).");
        return;
    }
    api_read(ctx, run_ping, ping_done, NULL);
}

/* Does If-None-Match (a list, or "*") name tag? Weak and strong forms compare
 * equal, as RFC 9110 wants for GET. */
static int etag_matches(const char *inm, size_t n, const char *tag)
{
    const char *t = tag[0] == 'W' ? tag + 2 : tag;
    size_t tl = strlen(t);
    size_t i = 0;
    while (i < n) {
        while (i < n && (inm[i] == ' ' || inm[i] == ','))
            i++;
        size_t s = i;
        while (i < n && inm[i] != ',')
            i++;
        size_t e = i;
        while (e > s && inm[e - 1] == ' ')
            e--;
        const char *c = inm + s;
        size_t cl = e - s;
        if (cl == 1 && c[0] == '*')
            return 1;
        if (cl > 2 && c[0] == 'W' && c[1] == '/') {
            c += 2;
            cl -= 2;
        }
        if (cl == tl && memcmp(c, t, tl) == 0)
            return 1;
    }
    return 0;
}

void api_send_cacheable(req_ctx_t *ctx, const char *body, size_t len)
{
    /* A weak validator from the body: the same JSON for the same requester. */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)body[i]) * 1099511628211ull;
    char tag[32];
    snprintf(tag, sizeof(tag), "W/\"%016llx\"", (unsigned long long)h);
    ctx_add_header(ctx, "etag", tag);
    /* Records change at any time and may be private: caches must revalidate, and a
     * response for a token is for that client only. */
    ctx_add_header(ctx, "cache-control", ctx->auth != NULL ? "private, no-cache" : "no-cache");
    ctx_add_header(ctx, "vary", "Authorization");
    size_t n;
    const char *inm = ctx_header(ctx, "if-none-match", &n);
    if (inm != NULL && etag_matches(inm, n, tag)) {
        ctx_send_empty(ctx, 304);
        return;
    }
    ctx_send_json(ctx, 200, body, len);
}

void api_audit(req_ctx_t *ctx, const char *action, const char *target, const char *detail)
{
    char actor[160] = "";
    if (ctx->auth != NULL && ctx->who.auth_coll != NULL)
        snprintf(actor, sizeof(actor), "%s/%s", ctx->who.auth_coll->name,
                 json_string_value(json_object_get(ctx->auth, "id"))
                     ? json_string_value(json_object_get(ctx->auth, "id"))
                     : "");
    audit_event_t e = {.action = action,
                       .actor = actor[0] ? actor : NULL,
                       .target = target,
                       .ip = ctx->client_ip,
                       .request_id = ctx->request_id,
                       .detail = detail};
    audit_log(&e);
}

void api_bump_for_write(const schema_t *s, const collection_t *c)
{
    (void)s;
    cache_gen_bump(c->id);
}

void api_bump_written(const schema_t *s, const record_touched_t *t)
{
    /* Every collection the write reports, cascades and cleared references at any
     * depth included; when it touched more than it could list, all of them. */
    if (t->overflow) {
        for (size_t i = 0; i < s->ncols; i++)
            cache_gen_bump(s->cols[i]->id);
        return;
    }
    for (int i = 0; i < t->n; i++)
        cache_gen_bump(t->ids[i]);
}

int api_has_nul(const json_t *v)
{
    return json_is_string(v) && memchr(json_string_value(v), '\0', json_string_length(v)) != NULL;
}

int api_rules_read_body(const collection_t *c)
{
    static const int which[] = {RULE_CREATE, RULE_UPDATE, RULE_DELETE, RULE_MANAGE};
    for (size_t i = 0; i < sizeof(which) / sizeof(which[0]); i++)
        if (c->rules[which[i]] != NULL && strstr(c->rules[which[i]], "@request.body") != NULL)
            return 1;
    return 0;
}

int api_rule_cacheable(const char *rule)
{
    /* A cached view may be reused for the same requester only while its rule
     * depends on nothing but the record and @request.auth.id: no other request
     * data, no time macros, no other collections or relations. The scan must
     * tokenize strings and comments exactly as src/rules/rules_parse.c does, or a
     * quote in a comment hides the rest of the text from it. */
    if (rule == NULL || rule[0] == '\0')
        return 1;
    char q = 0;
    for (const char *p = rule; *p; p++) {
        if (q) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == q)
                q = 0;
            continue;
        }
        if (*p == '\'' || *p == '"') {
            q = *p;
        } else if (p[0] == '/' && p[1] == '/') {
            /* A comment, as the filter lexer reads it (to the end of the line): a
             * quote inside it opens no string, so what follows is still scanned. */
            while (p[1] != '\0' && p[1] != '\n')
                p++;
        } else if (*p == '@') {
            if (strncmp(p, "@request.auth.id", 16) != 0 || isalnum((unsigned char)p[16]) || p[16] == '_' ||
                p[16] == '.' || p[16] == ':')
                return 0;
            p += 15;
        } else if (*p == '.') {
            /* A decimal point (the token is a number) is fine; a path is not. */
            const char *t = p;
            while (t > rule && (isalnum((unsigned char)t[-1]) || t[-1] == '_'))
                t--;
            if (t == p || !isdigit((unsigned char)*t))
                return 0;
        }
    }
    return 1;
}
