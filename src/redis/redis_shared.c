#include "redis/redis_shared.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/mailbox.h"
#include "cache/cache.h"
#include "http/server.h"
#include "metrics/metrics.h"

/* The same GCRA as ratelimit.c, in integer milliseconds, on Redis's clock. A key
 * holds its theoretical arrival time and expires when it has fully recovered. The
 * overall cap (KEYS[1]) is spent first; the class limit (KEYS[2]) only when the cap
 * allowed the request, as in api/limits.c. Returns the two outcomes (allowed,
 * remaining, reset, retry) and whether the second was taken. */
static const char rl_script[] = "local t = redis.call('TIME')\n"
                                "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                                "local period = tonumber(ARGV[3])\n"
                                "local function take(key, limit)\n"
                                "  if limit <= 0 then return {1, 0, 0, 0} end\n"
                                "  local interval = period / limit\n"
                                "  local tat = tonumber(redis.call('GET', key)) or now\n"
                                "  if tat < now then tat = now end\n"
                                "  local new_tat = tat + math.floor(interval + 0.5)\n"
                                "  local allow_at = new_tat - period\n"
                                "  if now < allow_at then return {0, 0, tat - now, allow_at - now} end\n"
                                "  redis.call('SET', key, new_tat, 'PX', math.max(1, new_tat - now))\n"
                                "  local rem = math.floor((period - (new_tat - now)) / interval)\n"
                                "  if rem < 0 then rem = 0 elseif rem > limit then rem = limit end\n"
                                "  return {1, rem, new_tat - now, 0}\n"
                                "end\n"
                                "local b = take(KEYS[1], tonumber(ARGV[1]))\n"
                                "if b[1] == 0 then return {b[1], b[2], b[3], b[4], 0, 0, 0, 0, 0} end\n"
                                "local r = take(KEYS[2], tonumber(ARGV[2]))\n"
                                "return {b[1], b[2], b[3], b[4], r[1], r[2], r[3], r[4], 1}\n";

/* An instance announces itself (scored with Redis's time), the members older than
 * ARGV[2] ms go, and the rest are counted. */
static const char heartbeat_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ttl = tonumber(ARGV[2])\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)\n"
    "redis.call('PEXPIRE', KEYS[1], ttl * 2)\n"
    "return redis.call('ZCARD', KEYS[1])\n";

#define HEARTBEAT_MS 1000
#define INSTANCE_TTL_MS "3000"
/* While the subscription is down, cached entries live at most this long. */
#define DEGRADED_TTL_MS 1000
#define QUEUE_MAX 64

static char instance_id[33];
static int live_instances = 1;
static uint64_t n_local, n_published, n_received, n_publish_lost;

/* Invalidations waiting for worker 0 (from the writer thread): collection ids, or
 * "all" when more came than fit. */
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static char queue[QUEUE_MAX][64];
static int queue_n, queue_all, queue_posted;
static mailbox_msg_t queue_msg;
/* Worker 0 only. */
static int publish_lost; /* some could not be sent: tell everyone to drop all */
static int64_t next_heartbeat_ms, next_degraded_bump_ms;

int redis_live_instances(void)
{
    int n = __atomic_load_n(&live_instances, __ATOMIC_RELAXED);
    return n > 0 ? n : 1;
}

void redis_rl_count_local(void)
{
    __atomic_add_fetch(&n_local, 1, __ATOMIC_RELAXED);
}

/* ---- rate limits ---- */

typedef struct {
    redis_rl_fn fn;
    void *arg;
    int64_t blimit, limit;
} rl_call_t;

static int64_t int_at(const redisReply *r, size_t i)
{
    return r->element[i]->type == REDIS_REPLY_INTEGER ? (int64_t)r->element[i]->integer : 0;
}

static void on_rl_reply(void *arg, redisReply *reply, redis_status_t st)
{
    rl_call_t *c = arg;
    ratelimit_result_t b = {0}, r = {0};
    int ok =
        st == REDIS_STATUS_OK && reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 9;
    if (!ok && st == REDIS_STATUS_OK && reply != NULL && reply->type == REDIS_REPLY_ERROR)
        LOGF(LOG_WARN, "redis", "the rate-limit script failed: %s; deciding locally", reply->str);
    if (ok) {
        b.allowed = (int)int_at(reply, 0);
        b.remaining = int_at(reply, 1);
        b.reset_ms = int_at(reply, 2);
        b.retry_ms = int_at(reply, 3);
        b.limit = c->blimit;
        r.allowed = (int)int_at(reply, 4);
        r.remaining = int_at(reply, 5);
        r.reset_ms = int_at(reply, 6);
        r.retry_ms = int_at(reply, 7);
        r.limit = c->limit;
        if (c->blimit <= 0)
            b.remaining = 0;
        if (c->limit <= 0)
            r.remaining = 0;
    }
    c->fn(c->arg, ok, &b, &r, ok ? (int)int_at(reply, 8) : 0);
    free(c);
}

int redis_rl_take(const char *bkey, size_t blen, int64_t blimit, const char *key, size_t klen, int64_t limit,
                  int64_t period_ms, redis_rl_fn fn, void *arg)
{
    char k1[192], k2[192], a1[24], a2[24], a3[24];
    size_t pl = sizeof(REDIS_SHARED_KEY_PREFIX) - 1;
    if (blen + pl >= sizeof(k1) || klen + pl >= sizeof(k2))
        return -1;
    memcpy(k1, REDIS_SHARED_KEY_PREFIX, pl);
    memcpy(k1 + pl, bkey, blen);
    memcpy(k2, REDIS_SHARED_KEY_PREFIX, pl);
    memcpy(k2 + pl, key, klen);
    const char *args[5] = {k1, k2, a1, a2, a3};
    size_t lens[5] = {blen + pl, klen + pl, 0, 0, 0};
    lens[2] = (size_t)snprintf(a1, sizeof(a1), "%lld", (long long)blimit);
    lens[3] = (size_t)snprintf(a2, sizeof(a2), "%lld", (long long)limit);
    lens[4] = (size_t)snprintf(a3, sizeof(a3), "%lld", (long long)period_ms);
    rl_call_t *c = malloc(sizeof(*c));
    if (c == NULL)
        return -1;
    c->fn = fn;
    c->arg = arg;
    c->blimit = blimit;
    c->limit = limit;
    if (redis_eval(REDIS_SCRIPT_RATELIMIT, 5, 2, args, lens, REDIS_SEND_BREAKER, on_rl_reply, c) != 0) {
        free(c);
        return -1;
    }
    return 0;
}

/* ---- the live instances ---- */

static void on_heartbeat(void *arg, redisReply *reply, redis_status_t st)
{
    (void)arg;
    if (st == REDIS_STATUS_OK && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        __atomic_store_n(&live_instances, (int)reply->integer, __ATOMIC_RELAXED);
}

/* ---- invalidations ---- */

static void on_published(void *arg, redisReply *reply, redis_status_t st)
{
    (void)arg;
    if (st != REDIS_STATUS_OK || reply->type == REDIS_REPLY_ERROR) {
        publish_lost = 1;
        __atomic_add_fetch(&n_publish_lost, 1, __ATOMIC_RELAXED);
    } else {
        __atomic_add_fetch(&n_published, 1, __ATOMIC_RELAXED);
    }
}

/* Worker 0: PUBLISH "<instance> <collection id or *>". */
static void publish(const char *what)
{
    char msg[128];
    int n = snprintf(msg, sizeof(msg), "%s %s", instance_id, what);
    const char *argv[3] = {"PUBLISH", REDIS_SHARED_CHANNEL, msg};
    size_t lens[3] = {7, sizeof(REDIS_SHARED_CHANNEL) - 1, (size_t)n};
    if (redis_send(3, argv, lens, 0, on_published, NULL) != 0) {
        publish_lost = 1;
        __atomic_add_fetch(&n_publish_lost, 1, __ATOMIC_RELAXED);
    }
}

static void deliver_queue(mailbox_msg_t *m)
{
    (void)m;
    char local[QUEUE_MAX][64];
    pthread_mutex_lock(&q_lock);
    int n = queue_n, all = queue_all;
    memcpy(local, queue, sizeof(local[0]) * (size_t)n);
    queue_n = queue_all = queue_posted = 0;
    pthread_mutex_unlock(&q_lock);
    if (all) {
        publish("*");
        return;
    }
    for (int i = 0; i < n; i++)
        publish(local[i]);
}

/* The cache's bump hook: on the writer thread, after the commit and before the
 * writer's answer is posted. Never blocks: a lock held for a copy, a mailbox post. */
static void on_bump(const char *collection_id)
{
    worker_t *w0 = server_worker(0);
    if (w0 == NULL)
        return;
    size_t n = strlen(collection_id);
    pthread_mutex_lock(&q_lock);
    if (!queue_all) {
        int dup = 0;
        for (int i = 0; i < queue_n && !dup; i++)
            dup = strcmp(queue[i], collection_id) == 0;
        if (!dup) {
            if (queue_n == QUEUE_MAX || n >= sizeof(queue[0]))
                queue_all = 1;
            else
                memcpy(queue[queue_n++], collection_id, n + 1);
        }
    }
    int post = !queue_posted;
    queue_posted = 1;
    pthread_mutex_unlock(&q_lock);
    if (post) {
        queue_msg.deliver = deliver_queue;
        mailbox_post(&w0->mailbox, &queue_msg);
    }
}

static void on_message(const char *payload, size_t len)
{
    const char *sp = memchr(payload, ' ', len);
    if (sp == NULL || (size_t)(sp - payload) != strlen(instance_id))
        return;
    if (memcmp(payload, instance_id, (size_t)(sp - payload)) == 0)
        return; /* our own: our caches were bumped before we published */
    size_t n = len - (size_t)(sp - payload) - 1;
    char coll[64];
    if (n == 0 || n >= sizeof(coll))
        return;
    memcpy(coll, sp + 1, n);
    coll[n] = '\0';
    __atomic_add_fetch(&n_received, 1, __ATOMIC_RELAXED);
    if (strcmp(coll, "*") == 0)
        cache_gen_bump_external();
    else
        cache_gen_bump_local(coll);
}

static void on_subscribed(void)
{
    /* Whatever was published while we were not subscribed is lost to us. */
    cache_gen_bump_external();
}

static void on_tick(worker_t *w, int64_t now)
{
    if (w->idx != 0)
        return;
    if (now >= next_heartbeat_ms) {
        next_heartbeat_ms = now + HEARTBEAT_MS;
        const char *a2[3] = {REDIS_SHARED_INSTANCES, instance_id, INSTANCE_TTL_MS};
        size_t lens[3] = {sizeof(REDIS_SHARED_INSTANCES) - 1, strlen(instance_id),
                          sizeof(INSTANCE_TTL_MS) - 1};
        redis_eval(REDIS_SCRIPT_HEARTBEAT, 3, 1, a2, lens, 0, on_heartbeat, NULL);
    }
    if (publish_lost && redis_up()) {
        /* Some invalidations never left: everyone drops everything, once. */
        publish_lost = 0;
        publish("*");
    }
    if (!redis_up() && now >= next_degraded_bump_ms) {
        /* Invalidations from others may be missed: bound what is cached. */
        next_degraded_bump_ms = now + DEGRADED_TTL_MS;
        cache_gen_bump_external();
    }
}

static void write_metrics(buf_t *b)
{
    buf_printf(b,
               "# HELP basalt_redis_up 1 while every worker's Redis connection (and the subscriber) is up.\n"
               "# TYPE basalt_redis_up gauge\nbasalt_redis_up %d\n",
               redis_up());
    buf_printf(b,
               "# HELP basalt_ratelimit_degraded 1 while some rate-limit decisions are local (Redis down or "
               "its breaker open).\n# TYPE basalt_ratelimit_degraded gauge\nbasalt_ratelimit_degraded %d\n",
               redis_degraded());
    buf_printf(b,
               "# HELP basalt_redis_live_instances Instances that announced themselves in Redis lately.\n"
               "# TYPE basalt_redis_live_instances gauge\nbasalt_redis_live_instances %d\n",
               redis_live_instances());
    buf_printf(b,
               "# HELP basalt_redis_errors_total Redis commands that failed (connection lost, refused).\n"
               "# TYPE basalt_redis_errors_total counter\nbasalt_redis_errors_total %llu\n",
               (unsigned long long)redis_errors());
    buf_printf(b,
               "# HELP basalt_redis_timeouts_total Redis commands not answered within --redis-timeout-ms.\n"
               "# TYPE basalt_redis_timeouts_total counter\nbasalt_redis_timeouts_total %llu\n",
               (unsigned long long)redis_timeouts());
    buf_printf(
        b,
        "# HELP basalt_ratelimit_local_decisions_total Rate-limit decisions made locally because Redis "
        "could not be asked.\n# TYPE basalt_ratelimit_local_decisions_total counter\n"
        "basalt_ratelimit_local_decisions_total %llu\n",
        (unsigned long long)__atomic_load_n(&n_local, __ATOMIC_RELAXED));
    buf_printf(b,
               "# HELP basalt_redis_invalidations_total Cache invalidations published to and received from "
               "other instances.\n# TYPE basalt_redis_invalidations_total counter\n"
               "basalt_redis_invalidations_total{direction=\"published\"} %llu\n"
               "basalt_redis_invalidations_total{direction=\"received\"} %llu\n"
               "basalt_redis_invalidations_total{direction=\"lost\"} %llu\n",
               (unsigned long long)__atomic_load_n(&n_published, __ATOMIC_RELAXED),
               (unsigned long long)__atomic_load_n(&n_received, __ATOMIC_RELAXED),
               (unsigned long long)__atomic_load_n(&n_publish_lost, __ATOMIC_RELAXED));
}

int redis_shared_start(const redis_url_t *url, int timeout_ms, int required, int nworkers)
{
    unsigned char rnd[16];
    randombytes_buf(rnd, sizeof(rnd));
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(instance_id + 2 * i, 3, "%02x", rnd[i]);
    redis_config_t rc = {.url = *url,
                         .timeout_ms = timeout_ms,
                         .required = required,
                         .channel = REDIS_SHARED_CHANNEL,
                         .on_message = on_message,
                         .on_subscribed = on_subscribed,
                         .on_tick = on_tick};
    rc.scripts[REDIS_SCRIPT_RATELIMIT] = rl_script;
    rc.scripts[REDIS_SCRIPT_HEARTBEAT] = heartbeat_script;
    if (redis_init(&rc, nworkers) != 0)
        return -1;
    cache_set_bump_hook(on_bump);
    metrics_add_writer(write_metrics);
    return 0;
}
