#include "cache/cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 16
#define BUCKETS 1024 /* per shard */
#define GEN_SLOTS 4096

typedef struct entry {
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* LRU list, most recent at head */
    uint64_t hash;
    int64_t expires_ms;
    cache_deps_t deps;
    size_t klen, vlen;
    char data[]; /* key then value (+ NUL) */
} entry_t;

typedef struct {
    pthread_mutex_t lock;
    entry_t *buckets[BUCKETS];
    entry_t *head, *tail;
    size_t bytes;
    cache_stats_t st;
} shard_t;

struct cache {
    size_t budget_per_shard;
    int64_t ttl_ms;
    shard_t shards[SHARDS];
};

static uint64_t gens[GEN_SLOTS];
static uint64_t external_gen;

void cache_gen_bump_external(void)
{
    __atomic_add_fetch(&external_gen, 1, __ATOMIC_RELEASE);
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

int cache_gen_slot(const char *collection_id)
{
    return (int)(hash_bytes(collection_id, strlen(collection_id)) % GEN_SLOTS);
}

uint64_t cache_gen_get(int slot)
{
    return __atomic_load_n(&gens[slot], __ATOMIC_ACQUIRE);
}

static void (*bump_hook)(const char *collection_id);
static int (*pending_hook)(void);

void cache_set_pending_hook(int (*fn)(void))
{
    pending_hook = fn;
}

void cache_set_bump_hook(void (*fn)(const char *collection_id))
{
    bump_hook = fn;
}

void cache_gen_bump_local(const char *collection_id)
{
    __atomic_add_fetch(&gens[cache_gen_slot(collection_id)], 1, __ATOMIC_RELEASE);
}

void cache_gen_bump(const char *collection_id)
{
    cache_gen_bump_local(collection_id);
    if (bump_hook != NULL)
        bump_hook(collection_id);
}

void cache_deps_init(cache_deps_t *d, uint64_t schema_version)
{
    *d = (cache_deps_t){.schema_version = schema_version, .rows_independent = 1};
}

void cache_deps_add(cache_deps_t *d, const char *collection_id)
{
    if (d->n == 0)
        d->external = __atomic_load_n(&external_gen, __ATOMIC_ACQUIRE);
    int slot = cache_gen_slot(collection_id);
    for (int i = 0; i < d->n; i++)
        if (d->slot[i] == slot)
            return;
    if (d->n == CACHE_MAX_DEPS) {
        d->n = CACHE_MAX_DEPS + 1; /* too many: the entry will not be stored */
        return;
    }
    d->slot[d->n] = slot;
    d->gen[d->n] = cache_gen_get(slot);
    d->n++;
}

cache_t *cache_new(size_t budget_bytes, int64_t ttl_ms)
{
    cache_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->budget_per_shard = budget_bytes / SHARDS;
    c->ttl_ms = ttl_ms;
    for (int i = 0; i < SHARDS; i++)
        pthread_mutex_init(&c->shards[i].lock, NULL);
    return c;
}

static void unlink_entry(shard_t *s, entry_t *e)
{
    entry_t **pp = &s->buckets[e->hash % BUCKETS];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    s->bytes -= sizeof(*e) + e->klen + e->vlen + 1;
    s->st.entries--;
}

void cache_free(cache_t *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < SHARDS; i++) {
        entry_t *e = c->shards[i].head;
        while (e) {
            entry_t *n = e->next;
            free(e);
            e = n;
        }
        pthread_mutex_destroy(&c->shards[i].lock);
    }
    free(c);
}

static int deps_fresh(const cache_deps_t *d, uint64_t schema_version)
{
    if (d->schema_version != schema_version)
        return 0;
    if (d->rows_independent)
        return 1;
    if (d->external != __atomic_load_n(&external_gen, __ATOMIC_ACQUIRE))
        return 0;
    for (int i = 0; i < d->n; i++)
        if (cache_gen_get(d->slot[i]) != d->gen[i])
            return 0;
    return 1;
}

int cache_deps_fresh(const cache_deps_t *d, uint64_t schema_version)
{
    return (pending_hook == NULL || !pending_hook()) && deps_fresh(d, schema_version);
}

static int fresh(const entry_t *e, uint64_t schema_version, int64_t now)
{
    return now < e->expires_ms && deps_fresh(&e->deps, schema_version);
}

char *cache_get(cache_t *c, const char *key, size_t klen, uint64_t schema_version, arena_t *arena,
                size_t *vlen, int64_t now_ms)
{
    if (c == NULL || c->budget_per_shard == 0)
        return NULL;
    uint64_t h = hash_bytes(key, klen);
    shard_t *s = &c->shards[h % SHARDS];
    /* Checked before the generations are compared: an invalidation another instance
     * published may be on its way into them (ADR 0015). The entry stays. */
    int pending = pending_hook != NULL && pending_hook();
    pthread_mutex_lock(&s->lock);
    if (pending) {
        s->st.misses++;
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    entry_t *e = s->buckets[h % BUCKETS];
    while (e && !(e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0))
        e = e->hnext;
    char *out = NULL;
    if (e == NULL) {
        s->st.misses++;
    } else if (!fresh(e, schema_version, now_ms)) {
        s->st.stale++;
        s->st.misses++;
        unlink_entry(s, e);
        free(e);
    } else {
        out = arena_alloc(arena, e->vlen + 1);
        if (out != NULL) {
            memcpy(out, e->data + klen, e->vlen + 1);
            *vlen = e->vlen;
            s->st.hits++;
            /* Most recently used to the head. */
            if (s->head != e) {
                e->prev->next = e->next;
                if (e->next)
                    e->next->prev = e->prev;
                else
                    s->tail = e->prev;
                e->prev = NULL;
                e->next = s->head;
                s->head->prev = e;
                s->head = e;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return out;
}

void cache_put(cache_t *c, const char *key, size_t klen, const char *val, size_t vlen,
               const cache_deps_t *deps, int64_t now_ms)
{
    if (c == NULL || c->budget_per_shard == 0 || deps->n > CACHE_MAX_DEPS)
        return;
    size_t size = sizeof(entry_t) + klen + vlen + 1;
    if (size > c->budget_per_shard / 4)
        return; /* one entry may not crowd out the shard */
    entry_t *e = malloc(size);
    if (e == NULL)
        return;
    uint64_t h = hash_bytes(key, klen);
    e->hash = h;
    e->klen = klen;
    e->vlen = vlen;
    e->deps = *deps;
    e->expires_ms = now_ms + c->ttl_ms;
    memcpy(e->data, key, klen);
    memcpy(e->data + klen, val, vlen);
    e->data[klen + vlen] = '\0';
    shard_t *s = &c->shards[h % SHARDS];
    pthread_mutex_lock(&s->lock);
    entry_t *old = s->buckets[h % BUCKETS];
    while (old && !(old->hash == h && old->klen == klen && memcmp(old->data, key, klen) == 0))
        old = old->hnext;
    if (old != NULL) {
        unlink_entry(s, old);
        free(old);
    }
    while (s->bytes + size > c->budget_per_shard && s->tail != NULL) {
        entry_t *victim = s->tail;
        unlink_entry(s, victim);
        free(victim);
        s->st.evictions++;
    }
    e->hnext = s->buckets[h % BUCKETS];
    s->buckets[h % BUCKETS] = e;
    e->prev = NULL;
    e->next = s->head;
    if (s->head)
        s->head->prev = e;
    s->head = e;
    if (s->tail == NULL)
        s->tail = e;
    s->bytes += size;
    s->st.entries++;
    s->st.inserts++;
    pthread_mutex_unlock(&s->lock);
}

void cache_get_stats(cache_t *c, cache_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (c == NULL)
        return;
    for (int i = 0; i < SHARDS; i++) {
        shard_t *s = &c->shards[i];
        pthread_mutex_lock(&s->lock);
        out->hits += s->st.hits;
        out->misses += s->st.misses;
        out->stale += s->st.stale;
        out->evictions += s->st.evictions;
        out->inserts += s->st.inserts;
        out->entries += s->st.entries;
        out->bytes += s->bytes;
        pthread_mutex_unlock(&s->lock);
    }
}
