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
#include "base/util.h"
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

/* L2: the tag of an entry is the values of its version counters (KEYS), read in
 * the same step as the entry stored under the base key plus that tag. Returns the
 * full key, and the value if there is one. */
static const char l2get_script[] = "local tag = {}\n"
                                   "for i = 1, #KEYS do tag[i] = redis.call('GET', KEYS[i]) or '0' end\n"
                                   "local key = ARGV[1] .. '@' .. table.concat(tag, '.')\n"
                                   "local v = redis.call('GET', key)\n"
                                   "if v then return {key, v} end\n"
                                   "return {key}\n";

#define HEARTBEAT_MS 1000
#define INSTANCE_TTL_MS "3000"
/* While the subscription is down, cached entries live at most this long. */
#define DEGRADED_TTL_MS 1000
#define QUEUE_MAX 64
#define L2_SLOTS 4096             /* cache_gen_slot's range */
#define L2_MAX_VALUE (256 * 1024) /* larger views stay in process only */
#define L2_MAX_BASE 700
#define VER_PREFIX "basalt:ver:"
#define L2_PREFIX "basalt:l2:"

static char instance_id[33];
static int live_instances = 1;
static uint64_t n_local, n_published, n_received, n_publish_lost;
static uint64_t n_l2_hit, n_l2_miss, n_l2_error;
static int64_t l2_ttl_ms; /* 0: no L2 */
/* L2 fences (any thread reads): the sequence number of the last bump of each slot,
 * and the last sequence whose version INCRs Redis acknowledged. A slot whose last
 * bump is not acknowledged yet is read from the database, not from L2. */
static uint64_t bump_seq, acked_seq;
static uint64_t slot_seq[L2_SLOTS];
static int l2_suspect; /* an INCR may have been lost: no L2 until a "*" is acknowledged */

/* Invalidations waiting for worker 0 (from the writer thread): collection ids, or
 * "all" when more came than fit. */
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static char queue[QUEUE_MAX][64];
static int queue_n, queue_all, queue_posted;
static uint64_t queue_seq; /* the last bump in the queue */
static mailbox_msg_t queue_msg;
/* Commit positions of callers (read-your-writes with replicas across instances):
 * (caller slot, WAL position) pairs; past POS_MAX, one "every caller" entry with the
 * highest position (a read then waits for a later position than it needs, never for
 * an earlier one). */
#define POS_MAX 128
static struct {
    uint32_t slot;
    uint64_t lsn;
} pos_queue[POS_MAX];
static int pos_n;
static uint64_t pos_all_lsn; /* 0: none */
static uint64_t pos_highest; /* the highest position ever queued (under q_lock) */
static void (*position_hook)(uint32_t slot, uint64_t lsn);
/* Worker 0 only. */
static int publish_lost; /* some could not be sent: tell everyone to drop all */
static int64_t next_heartbeat_ms, next_degraded_bump_ms;
static int draining;    /* no more heartbeats: the others stop counting this instance */
#define DEFINITIONS "!" /* the queue's and the channel's word for "collections or settings" */
static void (*definitions_hook)(void);

/* Writers waiting for their invalidations to be published, per worker (ADR 0015). */
typedef struct waiter {
    struct waiter *next;
    uint64_t seq;      /* 0: a reader waiting for the subscriber's messages to be applied */
    uint64_t since_us; /* monotonic */
    redis_wait_fn fn;
    void *arg;
} waiter_t;

typedef struct {
    mailbox_msg_t msg; /* first: the wake-up worker 0 posts when a batch ends */
    int posted;        /* the wake-up is queued (atomic) */
    int n;             /* waiters (atomic: worker 0 reads it) */
    waiter_t *head;    /* this worker's thread only */
} wait_list_t;

static wait_list_t *waits;
static int nwaits;
static uint64_t done_seq; /* the last invalidation whose batch ended, published or not */
static int64_t wait_max_ms;
static uint64_t n_wait_acked, n_wait_lost, n_wait_timeout, wait_us_total;
static uint64_t n_read_applied, n_read_timeout, read_us_total;

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

/* ---- L2 ---- */

int redis_l2_usable(const int *slots, int nslots)
{
    if (l2_ttl_ms <= 0 || !redis_enabled() || __atomic_load_n(&l2_suspect, __ATOMIC_ACQUIRE))
        return 0;
    uint64_t acked = __atomic_load_n(&acked_seq, __ATOMIC_ACQUIRE);
    for (int i = 0; i < nslots; i++)
        if (__atomic_load_n(&slot_seq[slots[i] % L2_SLOTS], __ATOMIC_ACQUIRE) > acked)
            return 0;
    return 1;
}

typedef struct {
    redis_l2_fn fn;
    void *arg;
} l2_call_t;

static void on_l2_reply(void *arg, redisReply *reply, redis_status_t st)
{
    l2_call_t *c = arg;
    int ok = st == REDIS_STATUS_OK && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
             reply->element[0]->type == REDIS_REPLY_STRING;
    if (!ok) {
        __atomic_add_fetch(&n_l2_error, 1, __ATOMIC_RELAXED);
        c->fn(c->arg, 0, NULL, 0, NULL, 0);
    } else if (reply->elements >= 2 && reply->element[1]->type == REDIS_REPLY_STRING) {
        __atomic_add_fetch(&n_l2_hit, 1, __ATOMIC_RELAXED);
        c->fn(c->arg, 1, reply->element[1]->str, reply->element[1]->len, reply->element[0]->str,
              reply->element[0]->len);
    } else {
        __atomic_add_fetch(&n_l2_miss, 1, __ATOMIC_RELAXED);
        c->fn(c->arg, 1, NULL, 0, reply->element[0]->str, reply->element[0]->len);
    }
    free(c);
}

int redis_l2_get(const char *base, size_t blen, const int *slots, int nslots, redis_l2_fn fn, void *arg)
{
    if (l2_ttl_ms <= 0 || blen > L2_MAX_BASE || nslots < 0 || nslots > 8)
        return -1;
    char keys[9][32], b[L2_MAX_BASE + sizeof(L2_PREFIX)];
    const char *args[10];
    size_t lens[10];
    int nk = 0;
    lens[nk] = (size_t)snprintf(keys[nk], sizeof(keys[nk]), VER_PREFIX "*");
    args[nk] = keys[nk];
    nk++;
    for (int i = 0; i < nslots; i++, nk++) {
        lens[nk] = (size_t)snprintf(keys[nk], sizeof(keys[nk]), VER_PREFIX "%d", slots[i]);
        args[nk] = keys[nk];
    }
    memcpy(b, L2_PREFIX, sizeof(L2_PREFIX) - 1);
    memcpy(b + sizeof(L2_PREFIX) - 1, base, blen);
    args[nk] = b;
    lens[nk] = sizeof(L2_PREFIX) - 1 + blen;
    l2_call_t *c = malloc(sizeof(*c));
    if (c == NULL)
        return -1;
    c->fn = fn;
    c->arg = arg;
    if (redis_eval(REDIS_SCRIPT_L2GET, nk + 1, nk, args, lens, REDIS_SEND_BREAKER, on_l2_reply, c) != 0) {
        free(c);
        return -1;
    }
    return 0;
}

void redis_l2_put(const char *key, size_t klen, const char *val, size_t vlen)
{
    if (l2_ttl_ms <= 0 || vlen > L2_MAX_VALUE)
        return;
    char px[24];
    const char *argv[5] = {"SET", key, val, "PX", px};
    size_t lens[5] = {3, klen, vlen, 2, (size_t)snprintf(px, sizeof(px), "%lld", (long long)l2_ttl_ms)};
    redis_send(5, argv, lens, 0, NULL, NULL);
}

/* ---- the live instances ---- */

static void on_heartbeat(void *arg, redisReply *reply, redis_status_t st)
{
    (void)arg;
    if (st == REDIS_STATUS_OK && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0)
        __atomic_store_n(&live_instances, (int)reply->integer, __ATOMIC_RELAXED);
}

/* ---- invalidations ---- */

/* One delivery of the queue: its commands' replies come back in order. */
typedef struct {
    uint64_t seq;
    int remaining, failed, all;
} batch_t;

static void wake_waiters(uint64_t seq);

static void batch_end(batch_t *b)
{
    uint64_t seq = b->seq;
    if (b->failed) {
        /* Some invalidations may not have reached Redis: everyone drops everything
         * once the connection is back, and L2 waits for that. */
        publish_lost = 1;
        __atomic_store_n(&l2_suspect, 1, __ATOMIC_RELEASE);
        __atomic_add_fetch(&n_publish_lost, 1, __ATOMIC_RELAXED);
    } else {
        if (b->seq > __atomic_load_n(&acked_seq, __ATOMIC_ACQUIRE))
            __atomic_store_n(&acked_seq, b->seq, __ATOMIC_RELEASE);
        if (b->all)
            __atomic_store_n(&l2_suspect, 0, __ATOMIC_RELEASE);
        __atomic_add_fetch(&n_published, 1, __ATOMIC_RELAXED);
    }
    free(b);
    wake_waiters(seq);
}

static void on_batch_reply(void *arg, redisReply *reply, redis_status_t st)
{
    batch_t *b = arg;
    if (st != REDIS_STATUS_OK || reply->type == REDIS_REPLY_ERROR)
        b->failed = 1;
    if (--b->remaining == 0)
        batch_end(b);
}

static void batch_send(batch_t *b, int argc, const char **argv, const size_t *lens)
{
    if (redis_send(argc, argv, lens, 0, on_batch_reply, b) == 0)
        b->remaining++;
    else
        b->failed = 1;
}

/* PUBLISH "<instance> <what>" as part of batch b. */
static void publish_word(batch_t *b, const char *what)
{
    char msg[128];
    int mn = snprintf(msg, sizeof(msg), "%s %s", instance_id, what);
    const char *argv[3] = {"PUBLISH", REDIS_SHARED_CHANNEL, msg};
    size_t lens[3] = {7, sizeof(REDIS_SHARED_CHANNEL) - 1, (size_t)mn};
    batch_send(b, 3, argv, lens);
}

/* Worker 0: INCR the version counter (with L2) then PUBLISH "<instance> <what>"
 * for each collection id, or for "*". */
static void publish_batch(char (*ids)[64], int n, int all, char (*pos)[64], int npos, uint64_t seq)
{
    batch_t *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        publish_lost = 1;
        __atomic_store_n(&l2_suspect, 1, __ATOMIC_RELEASE);
        return;
    }
    b->seq = seq;
    b->all = all;
    for (int i = 0; i < (all ? 1 : n); i++) {
        const char *what = all ? "*" : ids[i];
        if (l2_ttl_ms > 0 && strcmp(what, DEFINITIONS) != 0) {
            char key[64];
            int kn = all ? snprintf(key, sizeof(key), VER_PREFIX "*")
                         : snprintf(key, sizeof(key), VER_PREFIX "%d", cache_gen_slot(what));
            const char *argv[2] = {"INCR", key};
            size_t lens[2] = {4, (size_t)kn};
            batch_send(b, 2, argv, lens);
        }
        publish_word(b, what);
    }
    for (int i = 0; i < npos; i++)
        publish_word(b, pos[i]);
    if (b->remaining == 0)
        batch_end(b); /* nothing went out: lost (or nothing to send) */
}

static void deliver_queue(mailbox_msg_t *m)
{
    (void)m;
    /* Positions travel as words of the same channel, "~<slot> <lsn>" or "~* <lsn>". */
    char local[QUEUE_MAX + POS_MAX + 1][64];
    pthread_mutex_lock(&q_lock);
    int n = queue_n, all = queue_all;
    uint64_t seq = queue_seq;
    memcpy(local, queue, sizeof(local[0]) * (size_t)n);
    int np = 0;
    for (int i = 0; i < pos_n; i++)
        snprintf(local[QUEUE_MAX + np++], sizeof(local[0]), "~%u %llu", (unsigned)pos_queue[i].slot,
                 (unsigned long long)pos_queue[i].lsn);
    if (pos_all_lsn != 0)
        snprintf(local[QUEUE_MAX + np++], sizeof(local[0]), "~* %llu", (unsigned long long)pos_all_lsn);
    queue_n = queue_all = queue_posted = pos_n = 0;
    pos_all_lsn = 0;
    pthread_mutex_unlock(&q_lock);
    publish_batch(local, n, all, local + QUEUE_MAX, np, seq);
}

/* Ends a change of the queue (q_lock held): worker 0 is told once until it takes it. */
static void unlock_and_post(worker_t *w0)
{
    int post = !queue_posted;
    queue_posted = 1;
    pthread_mutex_unlock(&q_lock);
    if (post) {
        queue_msg.deliver = deliver_queue;
        mailbox_post(&w0->mailbox, &queue_msg);
    }
}

/* The cache's bump hook: on the writer thread, after the commit and before the
 * writer's answer is posted. Never blocks: a lock held for a copy, a mailbox post. */
static void queue_add(const char *collection_id, int fence)
{
    worker_t *w0 = server_worker(0);
    if (w0 == NULL)
        return;
    size_t n = strlen(collection_id);
    int slot = cache_gen_slot(collection_id);
    pthread_mutex_lock(&q_lock);
    uint64_t seq = __atomic_add_fetch(&bump_seq, 1, __ATOMIC_ACQ_REL);
    /* Fenced before the writer answers: L2 skips this slot until Redis has it. */
    if (fence)
        __atomic_store_n(&slot_seq[slot % L2_SLOTS], seq, __ATOMIC_RELEASE);
    queue_seq = seq;
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
    unlock_and_post(w0);
}

static void on_bump(const char *collection_id)
{
    queue_add(collection_id, 1);
}

void redis_shared_definitions_changed(void)
{
    if (redis_enabled())
        queue_add(DEFINITIONS, 0);
}

void redis_shared_set_definitions_hook(void (*fn)(void))
{
    definitions_hook = fn;
}

uint64_t redis_shared_note_position(uint32_t slot, uint64_t lsn)
{
    worker_t *w0 = server_worker(0);
    if (w0 == NULL || !redis_enabled())
        return 0;
    pthread_mutex_lock(&q_lock);
    uint64_t seq = __atomic_add_fetch(&bump_seq, 1, __ATOMIC_ACQ_REL);
    queue_seq = seq;
    if (lsn > pos_highest)
        pos_highest = lsn;
    int i = 0;
    while (i < pos_n && pos_queue[i].slot != slot)
        i++;
    if (i < pos_n) {
        if (lsn > pos_queue[i].lsn)
            pos_queue[i].lsn = lsn;
    } else if (pos_n < POS_MAX) {
        pos_queue[pos_n].slot = slot;
        pos_queue[pos_n++].lsn = lsn;
    } else if (lsn > pos_all_lsn) {
        pos_all_lsn = lsn;
    }
    unlock_and_post(w0);
    return seq;
}

void redis_shared_set_position_hook(void (*fn)(uint32_t slot, uint64_t lsn))
{
    position_hook = fn;
}

/* "~<slot> <lsn>" or "~* <lsn>" of another instance: 0 when word is not one. */
static int apply_position(const char *word)
{
    if (word[0] != '~')
        return 0;
    const char *p = word + 1;
    char *end;
    uint32_t slot = UINT32_MAX;
    if (*p == '*') {
        p++;
    } else {
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || v >= UINT32_MAX)
            return 1;
        slot = (uint32_t)v;
        p = end;
    }
    if (*p != ' ')
        return 1;
    unsigned long long lsn = strtoull(p + 1, &end, 10);
    if (end == p + 1 || *end != '\0' || lsn == 0)
        return 1;
    if (position_hook != NULL)
        position_hook(slot, (uint64_t)lsn);
    return 1;
}

uint64_t redis_shared_seq(void)
{
    return __atomic_load_n(&bump_seq, __ATOMIC_ACQUIRE);
}

/* ---- writers waiting for their invalidations ---- */

static void deliver_wake(mailbox_msg_t *m);

/* Worker 0, when a batch ended: every worker with waiters looks at them. */
static void wake_waiters(uint64_t seq)
{
    uint64_t cur = __atomic_load_n(&done_seq, __ATOMIC_SEQ_CST);
    while (seq > cur &&
           !__atomic_compare_exchange_n(&done_seq, &cur, seq, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        ;
    for (int i = 0; i < nwaits; i++) {
        worker_t *w = server_worker(i);
        int zero = 0;
        if (w == NULL || __atomic_load_n(&waits[i].n, __ATOMIC_SEQ_CST) == 0 ||
            !__atomic_compare_exchange_n(&waits[i].posted, &zero, 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            continue;
        waits[i].msg.deliver = deliver_wake;
        mailbox_post(&w->mailbox, &waits[i].msg);
    }
}

/* Answers the waiters whose batch ended (readers: once nothing is pending) or that
 * waited past the bound (all: every one, the loop is ending). On the list's worker. */
static void wait_release(wait_list_t *wl, int all)
{
    waiter_t *list = wl->head, *keep = NULL, **kt = &keep;
    wl->head = NULL;
    uint64_t done = __atomic_load_n(&done_seq, __ATOMIC_SEQ_CST);
    uint64_t acked = __atomic_load_n(&acked_seq, __ATOMIC_ACQUIRE);
    uint64_t now = util_mono_ns() / 1000;
    int pending = -1; /* asked once, and only if a reader waits */
    while (list != NULL) {
        waiter_t *x = list;
        list = x->next;
        int late = now - x->since_us >= (uint64_t)wait_max_ms * 1000;
        int ready;
        if (x->seq == 0) {
            if (pending < 0)
                pending = redis_sub_pending();
            ready = !pending;
        } else {
            ready = x->seq <= done;
        }
        if (ready || all || late) {
            if (x->seq == 0) {
                __atomic_add_fetch(ready ? &n_read_applied : &n_read_timeout, 1, __ATOMIC_RELAXED);
                __atomic_add_fetch(&read_us_total, now - x->since_us, __ATOMIC_RELAXED);
            } else {
                __atomic_add_fetch(x->seq <= acked  ? &n_wait_acked
                                   : x->seq <= done ? &n_wait_lost
                                                    : &n_wait_timeout,
                                   1, __ATOMIC_RELAXED);
                __atomic_add_fetch(&wait_us_total, now - x->since_us, __ATOMIC_RELAXED);
            }
            __atomic_sub_fetch(&wl->n, 1, __ATOMIC_SEQ_CST);
            x->fn(x->arg);
            free(x);
        } else {
            x->next = NULL;
            *kt = x;
            kt = &x->next;
        }
    }
    /* Those fn parked meanwhile go after the ones still waiting. */
    *kt = wl->head;
    wl->head = keep;
}

static void deliver_wake(mailbox_msg_t *m)
{
    wait_list_t *wl = (wait_list_t *)m;
    __atomic_store_n(&wl->posted, 0, __ATOMIC_SEQ_CST);
    wait_release(wl, 0);
}

/* Parks fn on this worker's list unless ready() holds once the waiter is counted
 * (the one who makes it true reads the count after: one of the two sees the other,
 * so no waiter is left asleep). */
static int park(uint64_t seq, int (*ready)(uint64_t seq), redis_wait_fn fn, void *arg)
{
    worker_t *w = server_current_worker();
    if (waits == NULL || w == NULL || w->idx >= nwaits || ready(seq))
        return -1;
    waiter_t *x = malloc(sizeof(*x));
    if (x == NULL)
        return -1; /* answered at once, as without Redis */
    wait_list_t *wl = &waits[w->idx];
    __atomic_add_fetch(&wl->n, 1, __ATOMIC_SEQ_CST);
    if (ready(seq)) {
        __atomic_sub_fetch(&wl->n, 1, __ATOMIC_SEQ_CST);
        free(x);
        return -1;
    }
    x->seq = seq;
    x->since_us = util_mono_ns() / 1000;
    x->fn = fn;
    x->arg = arg;
    x->next = wl->head;
    wl->head = x;
    return 0;
}

static int batch_ended(uint64_t seq)
{
    return __atomic_load_n(&done_seq, __ATOMIC_SEQ_CST) >= seq;
}

static int nothing_pending(uint64_t seq)
{
    (void)seq;
    return !redis_sub_pending();
}

int redis_shared_wait(uint64_t seq, redis_wait_fn fn, void *arg)
{
    if (seq == 0)
        return -1;
    return park(seq, batch_ended, fn, arg);
}

int redis_shared_wait_applied(redis_wait_fn fn, void *arg)
{
    if (!redis_enabled())
        return -1;
    return park(0, nothing_pending, fn, arg);
}

/* Worker 0, when its subscriber's bytes are all applied: readers that waited go on. */
static void on_applied(void)
{
    wake_waiters(0);
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
    if (apply_position(coll))
        return;
    if (strcmp(coll, "*") == 0) {
        /* Some batch never left its instance: it may have said "definitions" too. */
        cache_gen_bump_external();
        if (definitions_hook != NULL)
            definitions_hook();
    } else if (strcmp(coll, DEFINITIONS) == 0) {
        if (definitions_hook != NULL)
            definitions_hook();
    } else
        cache_gen_bump_local(coll);
}

static void on_subscribed(void)
{
    /* Whatever was published while we were not subscribed is lost to us, the
     * collections' and the settings' changes too. */
    cache_gen_bump_external();
    if (definitions_hook != NULL)
        definitions_hook();
}

static void on_tick(worker_t *w, int64_t now)
{
    /* Every turn (at least every 50 ms): a waiter past the bound is answered. */
    if (waits != NULL && w->idx < nwaits && waits[w->idx].head != NULL)
        wait_release(&waits[w->idx], 0);
    if (w->idx != 0)
        return;
    if (now >= next_heartbeat_ms && !draining) {
        next_heartbeat_ms = now + HEARTBEAT_MS;
        const char *a2[3] = {REDIS_SHARED_INSTANCES, instance_id, INSTANCE_TTL_MS};
        size_t lens[3] = {sizeof(REDIS_SHARED_INSTANCES) - 1, strlen(instance_id),
                          sizeof(INSTANCE_TTL_MS) - 1};
        redis_eval(REDIS_SCRIPT_HEARTBEAT, 3, 1, a2, lens, 0, on_heartbeat, NULL);
    }
    if (publish_lost && redis_up()) {
        /* Some invalidations never left: everyone drops everything, once. */
        publish_lost = 0;
        pthread_mutex_lock(&q_lock);
        uint64_t seq = bump_seq;
        uint64_t lsn = pos_highest;
        pthread_mutex_unlock(&q_lock);
        /* And positions may have been lost with them: every caller's reads wait for
         * the highest one queued so far. */
        char all_pos[1][64];
        snprintf(all_pos[0], sizeof(all_pos[0]), "~* %llu", (unsigned long long)lsn);
        publish_batch(NULL, 0, 1, all_pos, lsn != 0, seq);
    }
    if (!redis_up() && now >= next_degraded_bump_ms) {
        /* Invalidations from others may be missed: bound what is cached. */
        next_degraded_bump_ms = now + DEGRADED_TTL_MS;
        cache_gen_bump_external();
    }
}

/* The loop has stopped: whoever still waits is answered now. */
static void on_end(worker_t *w)
{
    if (waits != NULL && w->idx < nwaits)
        wait_release(&waits[w->idx], 1);
}

/* Leaving: the other instances take over this one's share of the limits at once
 * rather than after the 3 s the heartbeat takes to age out. */
static void on_drain(worker_t *w)
{
    if (w->idx != 0)
        return;
    draining = 1;
    const char *argv[3] = {"ZREM", REDIS_SHARED_INSTANCES, instance_id};
    size_t lens[3] = {4, sizeof(REDIS_SHARED_INSTANCES) - 1, strlen(instance_id)};
    redis_send(3, argv, lens, 0, NULL, NULL);
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
    buf_printf(b,
               "# HELP basalt_redis_write_waits_total Writes answered after waiting for their invalidation's "
               "publication: acknowledged by Redis, lost (Redis down or failing), or past the bound.\n"
               "# TYPE basalt_redis_write_waits_total counter\n"
               "basalt_redis_write_waits_total{result=\"acked\"} %llu\n"
               "basalt_redis_write_waits_total{result=\"lost\"} %llu\n"
               "basalt_redis_write_waits_total{result=\"timeout\"} %llu\n"
               "# HELP basalt_redis_write_wait_seconds_total Time writes waited for their invalidation's "
               "publication.\n# TYPE basalt_redis_write_wait_seconds_total counter\n"
               "basalt_redis_write_wait_seconds_total %.6f\n"
               "# HELP basalt_redis_read_waits_total Requests that waited for other instances' messages "
               "(definitions changed) to be applied first.\n"
               "# TYPE basalt_redis_read_waits_total counter\n"
               "basalt_redis_read_waits_total{result=\"applied\"} %llu\n"
               "basalt_redis_read_waits_total{result=\"timeout\"} %llu\n"
               "# HELP basalt_redis_read_wait_seconds_total Time requests waited for other instances' "
               "messages to be applied.\n# TYPE basalt_redis_read_wait_seconds_total counter\n"
               "basalt_redis_read_wait_seconds_total %.6f\n",
               (unsigned long long)__atomic_load_n(&n_wait_acked, __ATOMIC_RELAXED),
               (unsigned long long)__atomic_load_n(&n_wait_lost, __ATOMIC_RELAXED),
               (unsigned long long)__atomic_load_n(&n_wait_timeout, __ATOMIC_RELAXED),
               (double)__atomic_load_n(&wait_us_total, __ATOMIC_RELAXED) / 1e6,
               (unsigned long long)__atomic_load_n(&n_read_applied, __ATOMIC_RELAXED),
               (unsigned long long)__atomic_load_n(&n_read_timeout, __ATOMIC_RELAXED),
               (double)__atomic_load_n(&read_us_total, __ATOMIC_RELAXED) / 1e6);
    if (l2_ttl_ms > 0)
        buf_printf(b,
                   "# HELP basalt_cache_l2_total Lookups of the Redis L2 tier of record views.\n"
                   "# TYPE basalt_cache_l2_total counter\n"
                   "basalt_cache_l2_total{result=\"hit\"} %llu\nbasalt_cache_l2_total{result=\"miss\"} %llu\n"
                   "basalt_cache_l2_total{result=\"error\"} %llu\n",
                   (unsigned long long)__atomic_load_n(&n_l2_hit, __ATOMIC_RELAXED),
                   (unsigned long long)__atomic_load_n(&n_l2_miss, __ATOMIC_RELAXED),
                   (unsigned long long)__atomic_load_n(&n_l2_error, __ATOMIC_RELAXED));
}

int redis_shared_start(const redis_url_t *url, int timeout_ms, int required, int nworkers, int l2_ttl_s)
{
    l2_ttl_ms = (int64_t)l2_ttl_s * 1000;
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
                         .on_applied = on_applied,
                         .on_tick = on_tick,
                         .on_drain = on_drain,
                         .on_end = on_end};
    rc.scripts[REDIS_SCRIPT_RATELIMIT] = rl_script;
    rc.scripts[REDIS_SCRIPT_HEARTBEAT] = heartbeat_script;
    rc.scripts[REDIS_SCRIPT_L2GET] = l2get_script;
    waits = calloc((size_t)nworkers, sizeof(*waits));
    if (waits == NULL)
        return -1;
    nwaits = nworkers;
    /* A batch ends within a command's deadline once worker 0 sends it; twice that
     * (and a loop turn) is the most a writer waits however Redis behaves. */
    wait_max_ms = 2 * (int64_t)(timeout_ms > 0 ? timeout_ms : 50) + 100;
    if (redis_init(&rc, nworkers) != 0)
        return -1;
    cache_set_bump_hook(on_bump);
    metrics_add_writer(write_metrics);
    return 0;
}
