/* GCRA: exact counts in a window, recovery, independence of keys, bounded memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "ratelimit/ratelimit.h"

static int take(ratelimit_t *rl, const char *k, int64_t limit, int64_t now, ratelimit_result_t *r)
{
    ratelimit_take(rl, k, strlen(k), limit, 60000, now, r);
    return r->allowed;
}

static void test_exact_window(void **state)
{
    (void)state;
    ratelimit_t *rl = ratelimit_new(1024);
    ratelimit_result_t r;
    for (int i = 0; i < 20; i++) {
        assert_true(take(rl, "ip:1.2.3.4", 20, 1000, &r));
        assert_int_equal(r.remaining, 19 - i);
        assert_int_equal(r.limit, 20);
    }
    assert_false(take(rl, "ip:1.2.3.4", 20, 1000, &r));
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_ms, 3000); /* one request comes back every 60 s / 20 */
    /* Another key is independent. */
    assert_true(take(rl, "ip:5.6.7.8", 20, 1000, &r));
    /* One interval later exactly one more passes. */
    assert_true(take(rl, "ip:1.2.3.4", 20, 4000, &r));
    assert_false(take(rl, "ip:1.2.3.4", 20, 4000, &r));
    /* A full period later the whole burst is back. */
    for (int i = 0; i < 20; i++)
        assert_true(take(rl, "ip:1.2.3.4", 20, 70000, &r));
    assert_false(take(rl, "ip:1.2.3.4", 20, 70000, &r));
    /* limit <= 0: unlimited */
    assert_true(take(rl, "ip:1.2.3.4", 0, 70000, &r));
    ratelimit_free(rl);
}

static void test_bounded_memory(void **state)
{
    (void)state;
    ratelimit_t *rl = ratelimit_new(1024);
    ratelimit_result_t r;
    char k[32];
    for (int i = 0; i < 100000; i++) {
        snprintf(k, sizeof(k), "ip:%d", i);
        take(rl, k, 10, 1000 + i, &r);
    }
    assert_true(ratelimit_size(rl) <= 1024);
    /* A key limited right now is not forgotten by a flood of new keys in its window. */
    for (int i = 0; i < 10; i++)
        take(rl, "victim", 10, 200000, &r);
    for (int i = 0; i < 50000; i++) {
        snprintf(k, sizeof(k), "flood:%d", i);
        take(rl, k, 10, 200001, &r);
    }
    assert_false(take(rl, "victim", 10, 200002, &r));
    ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_exact_window),
                                       cmocka_unit_test(test_bounded_memory)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
