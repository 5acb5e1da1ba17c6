#include "api/positions.h"

#include <pthread.h>

#include "base/util.h"

/* The WAL position of each caller's last commit (api/positions.h), in a table shared
 * by the workers. A caller is its auth record, else its address. A
 * slot keeps the highest position of the callers hashed to it, for LSN_KEEP_MS: a
 * collision only makes a read wait for a later position (or go to the primary),
 * never see less than its own writes. */
#define LSN_SLOTS 16384
#define LSN_KEEP_MS 30000
static struct {
    uint64_t lsn;
    int64_t at_ms;
} lsn_table[LSN_SLOTS];
static pthread_mutex_t lsn_lock = PTHREAD_MUTEX_INITIALIZER;

size_t api_caller_slot(const req_ctx_t *ctx)
{
    const char *id = ctx->auth ? json_string_value(json_object_get(ctx->auth, "id")) : NULL;
    const char *k = id != NULL ? id : ctx->client_ip;
    uint64_t h = id != NULL ? 1469598103934665603ull : 1099511628211ull;
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 1099511628211ull;
    return (size_t)(h % LSN_SLOTS);
}

/* lsn_lock held. */
static void lsn_note_locked(size_t i, uint64_t lsn, int64_t now)
{
    if (lsn > lsn_table[i].lsn || now - lsn_table[i].at_ms > LSN_KEEP_MS)
        lsn_table[i].lsn = lsn;
    lsn_table[i].at_ms = now;
}

void api_position_note(const req_ctx_t *ctx, uint64_t lsn)
{
    size_t i = api_caller_slot(ctx);
    pthread_mutex_lock(&lsn_lock);
    lsn_note_locked(i, lsn, util_now_ms());
    pthread_mutex_unlock(&lsn_lock);
}

/* Another instance's caller committed at lsn (redis_shared's position messages): the
 * slots are the same on every instance (the same hash of the same caller), so that
 * caller's next read here waits for that position too. UINT32_MAX: every slot. */
void api_note_remote_position(uint32_t slot, uint64_t lsn)
{
    if (slot != UINT32_MAX && slot >= LSN_SLOTS)
        return;
    int64_t now = util_now_ms();
    pthread_mutex_lock(&lsn_lock);
    if (slot != UINT32_MAX)
        lsn_note_locked(slot, lsn, now);
    else
        for (size_t i = 0; i < LSN_SLOTS; i++)
            lsn_note_locked(i, lsn, now);
    pthread_mutex_unlock(&lsn_lock);
}

uint64_t api_position_wanted(const req_ctx_t *ctx)
{
    size_t i = api_caller_slot(ctx);
    uint64_t lsn = 0;
    pthread_mutex_lock(&lsn_lock);
    if (util_now_ms() - lsn_table[i].at_ms <= LSN_KEEP_MS)
        lsn = lsn_table[i].lsn;
    pthread_mutex_unlock(&lsn_lock);
    return lsn;
}
