/*
 * store_wake_writer (store.c): an idle writer ticks when woken, not only at its idle
 * tick. The store here is the common part alone, with a tick that counts; its idle
 * tick is a minute, so a second tick within the test's bound can only be the wake's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <time.h>

#include "store/store_backend.h"

static int ticks;

static void count_tick(store_t *s)
{
    (void)s;
    __atomic_add_fetch(&ticks, 1, __ATOMIC_RELEASE);
}

static int no_jobs(store_t *s, store_job_t *jobs)
{
    (void)s;
    (void)jobs;
    return 0;
}

/* Waits (up to 20 s, a bound for a loaded machine, not a timing) until ticks >= n. */
static int wait_ticks(int n)
{
    for (int i = 0; i < 2000; i++) {
        if (__atomic_load_n(&ticks, __ATOMIC_ACQUIRE) >= n)
            return 1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void test_wake_ticks_an_idle_writer(void **state)
{
    (void)state;
    static const store_ops_t ops = {.name = "test", .run_jobs = no_jobs, .writer_tick = count_tick};
    static store_t s;
    memset(&s, 0, sizeof(s));
    store_base_init(&s, &ops, 1);
    s.idle_tick_ms = 60000;
    bs_error_t err;
    bs_error_init(&err);
    assert_int_equal(store_start_writer(&s, &err), 0);
    assert_true(wait_ticks(1)); /* the baseline tick at start */
    store_wake_writer(&s);
    assert_true(wait_ticks(2));
    store_wake_writer(&s);
    assert_true(wait_ticks(3));
    /* A wake is one tick, not a spin: the count stays while nothing wakes it. */
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_int_equal(__atomic_load_n(&ticks, __ATOMIC_ACQUIRE), 3);
    store_base_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wake_ticks_an_idle_writer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
