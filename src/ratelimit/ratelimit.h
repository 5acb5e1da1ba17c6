/*
 * ratelimit — GCRA (the generic cell rate algorithm) per key, in memory.
 *
 * A limit is "L requests per period T": a key may spend L requests at once, then
 * regains one every T/L. The state of a key is one timestamp (its theoretical arrival
 * time). Keys live in fixed-size sharded tables, so memory is bounded however many
 * clients appear: a new key takes the stalest slot of its probe window, which can
 * only forget a key that has fully recovered or is the least recently limited.
 * Thread-safe: each shard has its own lock. The Redis-backed variant for a cluster
 * implements the same interface in a later issue.
 */
#ifndef BASALT_RATELIMIT_RATELIMIT_H
#define BASALT_RATELIMIT_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ratelimit ratelimit_t;

typedef struct {
    int allowed;
    int64_t limit;     /* L */
    int64_t remaining; /* requests left right now */
    int64_t reset_ms;  /* until the key is back to L */
    int64_t retry_ms;  /* when refused: until one request is allowed */
} ratelimit_result_t;

/* capacity: slots in all (rounded up to a power of two per shard). NULL on OOM. */
ratelimit_t *ratelimit_new(size_t capacity);
void ratelimit_free(ratelimit_t *rl);
/* Spends one request of key under "limit per period_ms" at now_ms. A limit <= 0
 * allows everything. */
void ratelimit_take(ratelimit_t *rl, const char *key, size_t key_len, int64_t limit, int64_t period_ms,
                    int64_t now_ms, ratelimit_result_t *out);
/* Keys currently tracked (for metrics and tests). */
size_t ratelimit_size(ratelimit_t *rl);

#endif
