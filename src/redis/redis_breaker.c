#include "redis/redis_breaker.h"

void redis_breaker_init(redis_breaker_t *b, int threshold, int64_t cooldown_ms, int64_t max_cooldown_ms)
{
    b->state = REDIS_BREAKER_CLOSED;
    b->failures = 0;
    b->threshold = threshold > 0 ? threshold : 1;
    b->probing = 0;
    b->opened_at_ms = 0;
    b->cooldown_ms = b->base_cooldown_ms = cooldown_ms;
    b->max_cooldown_ms = max_cooldown_ms > cooldown_ms ? max_cooldown_ms : cooldown_ms;
}

static void open_at(redis_breaker_t *b, int64_t now_ms)
{
    b->state = REDIS_BREAKER_OPEN;
    b->opened_at_ms = now_ms;
    b->probing = 0;
    b->failures = 0;
}

int redis_breaker_allow(redis_breaker_t *b, int64_t now_ms)
{
    switch (b->state) {
    case REDIS_BREAKER_CLOSED:
        return 1;
    case REDIS_BREAKER_OPEN:
        if (now_ms - b->opened_at_ms < b->cooldown_ms)
            return 0;
        b->state = REDIS_BREAKER_HALF_OPEN;
        b->probing = 1;
        return 1;
    case REDIS_BREAKER_HALF_OPEN:
        if (b->probing)
            return 0;
        b->probing = 1;
        return 1;
    }
    return 0;
}

void redis_breaker_success(redis_breaker_t *b)
{
    b->state = REDIS_BREAKER_CLOSED;
    b->failures = 0;
    b->probing = 0;
    b->cooldown_ms = b->base_cooldown_ms;
}

void redis_breaker_failure(redis_breaker_t *b, int64_t now_ms)
{
    if (b->state == REDIS_BREAKER_HALF_OPEN) {
        /* The probe failed: wait longer before the next one. */
        b->cooldown_ms = b->cooldown_ms * 2 > b->max_cooldown_ms ? b->max_cooldown_ms : b->cooldown_ms * 2;
        open_at(b, now_ms);
        return;
    }
    if (b->state == REDIS_BREAKER_OPEN)
        return; /* a call sent before it opened */
    if (++b->failures >= b->threshold)
        open_at(b, now_ms);
}

void redis_breaker_trip(redis_breaker_t *b, int64_t now_ms)
{
    if (b->state == REDIS_BREAKER_OPEN)
        return;
    if (b->state == REDIS_BREAKER_HALF_OPEN)
        b->cooldown_ms = b->cooldown_ms * 2 > b->max_cooldown_ms ? b->max_cooldown_ms : b->cooldown_ms * 2;
    open_at(b, now_ms);
}
