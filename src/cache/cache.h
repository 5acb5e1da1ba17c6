/*
 * cache — the in-process cache of hot reads (authenticated records behind token
 * checks, record views, list pages), with exact invalidation.
 *
 * Invalidation is by generation: every collection has a counter, bumped by the
 * writer after a commit that changed it and before the writer's answer is posted.
 * An entry remembers the generations of the collections it was computed from, read
 * *before* the computation, plus the schema version; a lookup that finds any of them
 * changed treats the entry as absent. So a read that starts after a write was
 * acknowledged never gets data older than that write.
 *
 * Memory: a byte budget over all entries, least-recently-used first out; entries
 * also expire after a TTL. Sharded, one lock per shard; any thread. Values are
 * copied in and out, so no entry is shared with a request.
 */
#ifndef BASALT_CACHE_CACHE_H
#define BASALT_CACHE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"

#define CACHE_MAX_DEPS 4

typedef struct cache cache_t;

typedef struct {
    int slot[CACHE_MAX_DEPS]; /* generation slots (cache_gen_slot) */
    uint64_t gen[CACHE_MAX_DEPS];
    int n;
    uint64_t schema_version;
    uint64_t external; /* set by the first cache_deps_add */
    /* cache_deps_init: a fact about a query (its cost), not about rows: no write
     * makes it stale, this process's or another's; only the schema version. */
    int rows_independent;
} cache_deps_t;

typedef struct {
    uint64_t hits, misses, stale, evictions, inserts, bytes, entries;
} cache_stats_t;

/* budget 0 disables the cache (every get misses, puts are dropped). */
cache_t *cache_new(size_t budget_bytes, int64_t ttl_ms);
void cache_free(cache_t *c);

/* Generations (process-wide). */
int cache_gen_slot(const char *collection_id);
uint64_t cache_gen_get(int slot);
void cache_gen_bump(const char *collection_id);
/* The same for a change another instance reported (its invalidation message): it
 * is not passed on to the bump hook again. */
void cache_gen_bump_local(const char *collection_id);
/* Called by every cache_gen_bump after the local generation moved (the writer
 * thread, mostly), to pass the invalidation on to other instances; it must not
 * block. NULL: none. Set once, before the server starts. */
void cache_set_bump_hook(void (*fn)(const char *collection_id));
/* Set once before the server starts: while fn() says another instance's invalidations
 * have arrived but are not applied yet (redis_sub_pending), lookups miss and
 * cache_deps_fresh answers 0, so nothing cached is served past an acknowledged
 * write elsewhere (ADR 0015). NULL: none. */
void cache_set_pending_hook(int (*fn)(void));
/* The generation of changes made outside this process (another process writing
 * the same database); every entry but cache_deps_init's depends on it. */
void cache_gen_bump_external(void);
/* Deps on nothing but the schema version: such an entry lives until its TTL whatever
 * is written, here or by another instance (for facts about a query's cost, not its
 * rows). */
void cache_deps_init(cache_deps_t *d, uint64_t schema_version);
/* Adds a dependency on collection_id's current generation; call before reading. */
void cache_deps_add(cache_deps_t *d, const char *collection_id);

/* True when nothing d depends on has changed since it was taken (for callers that
 * keep derived state of their own, such as a worker's verified tokens). */
int cache_deps_fresh(const cache_deps_t *d, uint64_t schema_version);
/* Returns a copy of the value (in arena, NUL-terminated) or NULL when absent,
 * expired or stale. */
char *cache_get(cache_t *c, const char *key, size_t klen, uint64_t schema_version, arena_t *arena,
                size_t *vlen, int64_t now_ms);
/* Stores a copy of value under key with its dependencies. */
void cache_put(cache_t *c, const char *key, size_t klen, const char *val, size_t vlen,
               const cache_deps_t *deps, int64_t now_ms);
void cache_get_stats(cache_t *c, cache_stats_t *out);

#endif
