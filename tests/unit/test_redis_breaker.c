/* The circuit breaker in front of Redis: when it opens, the single probe of
 * half-open, closing on success, backing off on a failed probe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "redis/redis_breaker.h"

static void test_opens_after_threshold(void **state)
{
    (void)state;
    redis_breaker_t b;
    redis_breaker_init(&b, 3, 500, 4000);
    assert_true(redis_breaker_allow(&b, 0));
    redis_breaker_failure(&b, 0);
    redis_breaker_failure(&b, 1);
    assert_int_equal(b.state, REDIS_BREAKER_CLOSED);
    assert_true(redis_breaker_allow(&b, 2));
    redis_breaker_failure(&b, 2);
    assert_int_equal(b.state, REDIS_BREAKER_OPEN);
    assert_false(redis_breaker_allow(&b, 3));
    assert_false(redis_breaker_allow(&b, 501));
}

static void test_success_resets_count(void **state)
{
    (void)state;
    redis_breaker_t b;
    redis_breaker_init(&b, 3, 500, 4000);
    redis_breaker_failure(&b, 0);
    redis_breaker_failure(&b, 0);
    redis_breaker_success(&b);
    redis_breaker_failure(&b, 0);
    redis_breaker_failure(&b, 0);
    assert_int_equal(b.state, REDIS_BREAKER_CLOSED); /* not 4 in a row */
}

static void test_half_open_single_probe(void **state)
{
    (void)state;
    redis_breaker_t b;
    redis_breaker_init(&b, 1, 500, 4000);
    redis_breaker_failure(&b, 1000);
    assert_false(redis_breaker_allow(&b, 1499));
    assert_true(redis_breaker_allow(&b, 1500)); /* the probe */
    assert_int_equal(b.state, REDIS_BREAKER_HALF_OPEN);
    assert_false(redis_breaker_allow(&b, 1501)); /* others stay local meanwhile */
    assert_false(redis_breaker_allow(&b, 1502));
    redis_breaker_success(&b);
    assert_int_equal(b.state, REDIS_BREAKER_CLOSED);
    assert_true(redis_breaker_allow(&b, 1503));
    assert_true(redis_breaker_allow(&b, 1503));
}

static void test_failed_probe_backs_off(void **state)
{
    (void)state;
    redis_breaker_t b;
    redis_breaker_init(&b, 1, 500, 1500);
    redis_breaker_failure(&b, 0);
    assert_true(redis_breaker_allow(&b, 500));
    redis_breaker_failure(&b, 500); /* probe failed: open again, 1000 ms */
    assert_int_equal(b.state, REDIS_BREAKER_OPEN);
    assert_false(redis_breaker_allow(&b, 1499));
    assert_true(redis_breaker_allow(&b, 1500));
    redis_breaker_failure(&b, 1500); /* 2000 capped at 1500 */
    assert_false(redis_breaker_allow(&b, 2999));
    assert_true(redis_breaker_allow(&b, 3000));
    redis_breaker_success(&b); /* the cooldown returns to its base */
    redis_breaker_failure(&b, 4000);
    assert_false(redis_breaker_allow(&b, 4499));
    assert_true(redis_breaker_allow(&b, 4500));
}

static void test_trip_and_late_failures(void **state)
{
    (void)state;
    redis_breaker_t b;
    redis_breaker_init(&b, 5, 500, 4000);
    redis_breaker_trip(&b, 100); /* the connection went: open at once */
    assert_int_equal(b.state, REDIS_BREAKER_OPEN);
    redis_breaker_failure(&b, 400); /* a call sent before: no effect on the clock */
    assert_true(redis_breaker_allow(&b, 600));
    redis_breaker_trip(&b, 700); /* while probing: longer cooldown */
    assert_false(redis_breaker_allow(&b, 1699));
    assert_true(redis_breaker_allow(&b, 1700));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_threshold), cmocka_unit_test(test_success_resets_count),
        cmocka_unit_test(test_half_open_single_probe), cmocka_unit_test(test_failed_probe_backs_off),
        cmocka_unit_test(test_trip_and_late_failures)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
