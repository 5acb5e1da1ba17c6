/*
 * redis_shared — the state Basalt instances share through Redis (ADR 0005,
 * docs/redis.md):
 *
 * - rate-limit decisions: the GCRA of ratelimit.h, decided in Redis by one Lua
 *   script per request (the address's overall cap and the class limit together,
 *   on Redis's clock), so that a limit holds in total across instances;
 * - the live instances: worker 0 of each instance adds itself to a sorted set
 *   every second (scored by Redis's time, members older than 3 s dropped) and
 *   reads its size, the divisor of the local limits while Redis is unreachable;
 * - cache invalidations: every generation bump of the cache (a committed write,
 *   on the writer thread) is handed to worker 0, which PUBLISHes it on
 *   basalt:invalidate; every instance's worker 0 is SUBSCRIBEd and bumps the same
 *   generation, which drops the cached reads and the token memos that depend on it.
 *   While the subscription is down, every cache entry and token memo lives at most
 *   1 s (the external generation is bumped each second), and everything is dropped
 *   once it is back (messages may have been missed).
 *
 * Threads: redis_shared_start on the main thread before server_start; the hook,
 * the gauges and redis_live_instances on any thread; redis_rl_take on a worker's
 * loop.
 */
#ifndef BASALT_REDIS_REDIS_SHARED_H
#define BASALT_REDIS_REDIS_SHARED_H

#include <stddef.h>
#include <stdint.h>

#include "ratelimit/ratelimit.h"
#include "redis/redis.h"

#define REDIS_SHARED_CHANNEL "basalt:invalidate"
#define REDIS_SHARED_KEY_PREFIX "basalt:rl:"
#define REDIS_SHARED_INSTANCES "basalt:instances"

/* Connects every worker to url (redis_init) and sets the cache's bump hook;
 * l2_ttl_s > 0 turns the L2 tier on. Returns 0, or -1 on OOM. */
int redis_shared_start(const redis_url_t *url, int timeout_ms, int required, int nworkers, int l2_ttl_s);

/*
 * Writes are answered once the other instances have their invalidation (ADR 0015):
 * the write's job remembers redis_shared_seq() after its committed hook (the writer
 * thread), and its worker parks the answer with redis_shared_wait until Redis has
 * answered the PUBLISH of that batch (then every subscribed instance has the message
 * in its socket, and redis_sub_pending makes its readers wait for or skip whatever
 * it has not applied yet). Bounded: a batch that fails or times out (Redis down or
 * slow) releases its writers at once, answered as without Redis.
 */
/* The sequence of the last invalidation queued (any thread). */
uint64_t redis_shared_seq(void);
typedef void (*redis_wait_fn)(void *arg);
/* On a worker's loop: 0 and fn(arg) later on this loop once invalidation seq has been
 * published (or could not be, or waited past the bound); -1 when there is nothing to
 * wait for (fn is not called). */
int redis_shared_wait(uint64_t seq, redis_wait_fn fn, void *arg);
/* On a worker's loop, for a reader that must see what the other instances told this
 * one (their definitions, ADR 0015): 0 and fn(arg) later on this loop once worker 0's
 * subscriber holds nothing unapplied (or it is gone, or after the writers' bound);
 * -1 when nothing is pending now (fn is not called). */
int redis_shared_wait_applied(redis_wait_fn fn, void *arg);
/* The collections or the settings changed (the writer thread, after the commit):
 * every other instance reloads them before its next request (schema_remote_changed
 * through the hook below). */
void redis_shared_definitions_changed(void);
/* What an instance runs when another says its definitions changed (worker 0's loop;
 * must not block). Set once, before the server starts. */
void redis_shared_set_definitions_hook(void (*fn)(void));

/* Read-your-writes with read replicas across instances: after a commit at WAL
 * position lsn by the callers of slot (api/common.c's table), queues that position for
 * the other instances (any thread); returns the sequence to wait for with
 * redis_shared_wait before answering the writer, 0 without Redis. Each instance's
 * worker 0 hands the positions of others to the hook (slot UINT32_MAX: every caller).
 * Set the hook once, before the server starts; it must not block. */
uint64_t redis_shared_note_position(uint32_t slot, uint64_t lsn);
void redis_shared_set_position_hook(void (*fn)(uint32_t slot, uint64_t lsn));

/* The instances that announced themselves within the last 3 s, as last read from
 * Redis (>= 1; 1 until the first answer). */
int redis_live_instances(void);

/* A decision's outcome: ok 0 when Redis did not decide (down, breaker open,
 * time-out): decide locally then. class_taken 0 when the overall cap refused first
 * (the class limit was not spent), as in the local path. */
typedef void (*redis_rl_fn)(void *arg, int ok, const ratelimit_result_t *burst, const ratelimit_result_t *cls,
                            int class_taken);
/* Spends one request of bkey under blimit and, if allowed, of key under limit, per
 * period_ms, in Redis. Returns 0 and fn is called once later on this loop; or -1
 * at once when Redis cannot be asked (fn is not called): decide locally. */
int redis_rl_take(const char *bkey, size_t blen, int64_t blimit, const char *key, size_t klen, int64_t limit,
                  int64_t period_ms, redis_rl_fn fn, void *arg);

/* Counts a decision made locally because Redis could not be asked. */
void redis_rl_count_local(void);

/*
 * The L2 tier: hot record views in Redis for every instance, behind the in-process
 * cache (docs/redis.md). An entry is stored under its L1 key plus a tag made of
 * version counters in Redis, one for everything (basalt:ver:*) and one per
 * generation slot it depends on (basalt:ver:<slot>), read in the same script as
 * the entry; every invalidation this instance publishes INCRs its slot's counter
 * first, so an entry computed before a write is never found after it. Until this
 * instance's own INCR is acknowledged, reads of what it wrote skip L2 (its writer
 * is answered before that): they read the database, so a writer reads its write.
 */
/* Whether a view with these dependencies may use L2 now (any thread). */
int redis_l2_usable(const int *slots, int nslots);
/* The reply: ok 0 when Redis could not be asked or failed (read the database);
 * val NULL on a miss; key (borrowed for the call) is where to store the value
 * computed now. */
typedef void (*redis_l2_fn)(void *arg, int ok, const char *val, size_t vlen, const char *key, size_t klen);
/* Looks base up under the current tag of slots; 0 and fn later on this loop, or -1
 * (not asked: fn is not called). */
int redis_l2_get(const char *base, size_t blen, const int *slots, int nslots, redis_l2_fn fn, void *arg);
/* Stores val under key (from redis_l2_get) for the L2 TTL; fire and forget. */
void redis_l2_put(const char *key, size_t klen, const char *val, size_t vlen);

#endif
