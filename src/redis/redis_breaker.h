/*
 * redis_breaker — the circuit breaker in front of one Redis connection.
 *
 * Closed: every decision goes to Redis; `threshold` failures in a row (errors of
 * the connection, time-outs) open it. Open: nothing goes to Redis (callers decide
 * locally) until `cooldown` has passed; then half-open: exactly one call (the probe)
 * goes to Redis while the others stay local; its success closes the breaker, its
 * failure opens it again with the cooldown doubled (up to max_cooldown). A success
 * while closed resets the count of failures.
 *
 * Pure: no I/O, no clock of its own (the caller passes now), no locking (one per
 * event loop, used on that loop only).
 */
#ifndef BASALT_REDIS_REDIS_BREAKER_H
#define BASALT_REDIS_REDIS_BREAKER_H

#include <stdint.h>

typedef enum { REDIS_BREAKER_CLOSED, REDIS_BREAKER_OPEN, REDIS_BREAKER_HALF_OPEN } redis_breaker_state_t;

typedef struct {
    redis_breaker_state_t state;
    int failures;  /* consecutive, while closed */
    int threshold; /* failures that open it */
    int probing;   /* half-open: the probe is out */
    int64_t opened_at_ms;
    int64_t cooldown_ms, base_cooldown_ms, max_cooldown_ms;
} redis_breaker_t;

void redis_breaker_init(redis_breaker_t *b, int threshold, int64_t cooldown_ms, int64_t max_cooldown_ms);
/* Whether a call may go to Redis now. In half-open, returns 1 once (the probe) and
 * 0 until that probe is reported. */
int redis_breaker_allow(redis_breaker_t *b, int64_t now_ms);
/* The outcome of a call that allow() let through. */
void redis_breaker_success(redis_breaker_t *b);
void redis_breaker_failure(redis_breaker_t *b, int64_t now_ms);
/* Opens at once (the connection is gone: no point in counting). */
void redis_breaker_trip(redis_breaker_t *b, int64_t now_ms);

#endif
