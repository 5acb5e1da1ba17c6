#include "ratelimit/ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 16
#define PROBE 8
#define KEY_MAX 80

typedef struct {
    uint64_t hash;     /* 0 = empty */
    int64_t tat_ms;    /* theoretical arrival time */
    int64_t period_ms; /* to know when the key has fully recovered */
    uint8_t key_len;
    char key[KEY_MAX];
} slot_t;

typedef struct {
    pthread_mutex_t lock;
    slot_t *slots;
    size_t mask;
    size_t used;
} shard_t;

struct ratelimit {
    shard_t shards[SHARDS];
};

static uint64_t hash_key(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h ? h : 1;
}

ratelimit_t *ratelimit_new(size_t capacity)
{
    ratelimit_t *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return NULL;
    size_t per = 64;
    while (per * SHARDS < capacity)
        per *= 2;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&rl->shards[i].lock, NULL);
        rl->shards[i].slots = calloc(per, sizeof(slot_t));
        rl->shards[i].mask = per - 1;
        if (rl->shards[i].slots == NULL) {
            ratelimit_free(rl);
            return NULL;
        }
    }
    return rl;
}

void ratelimit_free(ratelimit_t *rl)
{
    if (rl == NULL)
        return;
    for (int i = 0; i < SHARDS; i++) {
        free(rl->shards[i].slots);
        pthread_mutex_destroy(&rl->shards[i].lock);
    }
    free(rl);
}

/* Finds key's slot, or the slot to reuse for it: an empty one, else the one whose
 * key recovered longest ago (its state no longer matters), else the stalest. */
static slot_t *find(shard_t *s, uint64_t h, const char *key, size_t n, int64_t now, int *fresh)
{
    slot_t *victim = NULL;
    int64_t victim_age = INT64_MIN;
    for (size_t i = 0; i < PROBE; i++) {
        slot_t *sl = &s->slots[(h + i) & s->mask];
        if (sl->hash == h && sl->key_len == n && memcmp(sl->key, key, n) == 0) {
            *fresh = 0;
            return sl;
        }
        int64_t age = sl->hash == 0 ? INT64_MAX : now - sl->tat_ms;
        if (age > victim_age) {
            victim_age = age;
            victim = sl;
        }
    }
    if (victim->hash == 0)
        s->used++;
    victim->hash = h;
    victim->key_len = (uint8_t)n;
    memcpy(victim->key, key, n);
    victim->tat_ms = now;
    *fresh = 1;
    return victim;
}

void ratelimit_take(ratelimit_t *rl, const char *key, size_t key_len, int64_t limit, int64_t period_ms,
                    int64_t now_ms, ratelimit_result_t *out)
{
    memset(out, 0, sizeof(*out));
    out->limit = limit;
    if (limit <= 0 || period_ms <= 0) {
        out->allowed = 1;
        out->remaining = limit > 0 ? limit : 0;
        return;
    }
    if (key_len > KEY_MAX)
        key_len = KEY_MAX; /* keys are ids and addresses; a longer one is truncated */
    uint64_t h = hash_key(key, key_len);
    shard_t *s = &rl->shards[h % SHARDS];
    /* GCRA: each request moves the key's TAT by the emission interval; a request is
     * allowed while the TAT stays within one period of now. */
    double interval = (double)period_ms / (double)limit;
    pthread_mutex_lock(&s->lock);
    int fresh;
    slot_t *sl = find(s, h, key, key_len, now_ms, &fresh);
    int64_t tat = sl->tat_ms > now_ms ? sl->tat_ms : now_ms;
    int64_t new_tat = tat + (int64_t)(interval + 0.5);
    int64_t allow_at = new_tat - period_ms;
    if (now_ms < allow_at) {
        out->allowed = 0;
        out->retry_ms = allow_at - now_ms;
        out->remaining = 0;
        out->reset_ms = tat - now_ms;
    } else {
        sl->tat_ms = new_tat;
        sl->period_ms = period_ms;
        out->allowed = 1;
        out->reset_ms = new_tat - now_ms;
        int64_t rem = (int64_t)((double)(period_ms - (new_tat - now_ms)) / interval);
        out->remaining = rem < 0 ? 0 : rem > limit ? limit : rem;
    }
    pthread_mutex_unlock(&s->lock);
}

size_t ratelimit_size(ratelimit_t *rl)
{
    size_t n = 0;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&rl->shards[i].lock);
        n += rl->shards[i].used;
        pthread_mutex_unlock(&rl->shards[i].lock);
    }
    return n;
}
