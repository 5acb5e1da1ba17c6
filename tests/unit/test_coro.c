/* coro: coroutines run, yield and resume in order, finish, are reused, and their
 * stacks hold a deep call chain. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "base/coro.h"

typedef struct {
    coro_t *co;
    int steps;
    char trace[64];
    size_t len;
} walker_t;

static void note(walker_t *w, char c)
{
    if (w->len + 1 < sizeof(w->trace))
        w->trace[w->len++] = c;
}

/* Notes its name, then yields `steps` times, noting a step each time it is back. */
static void walk(void *arg)
{
    walker_t *w = arg;
    note(w, 'S');
    for (int i = 0; i < w->steps; i++) {
        coro_yield(w->co);
        note(w, (char)('0' + i));
    }
    note(w, 'E');
}

static void test_yield_and_resume_in_order(void **state)
{
    (void)state;
    walker_t a = {.co = coro_new(64 * 1024), .steps = 2}, b = {.co = coro_new(64 * 1024), .steps = 1};
    assert_non_null(a.co);
    assert_non_null(b.co);
    coro_start(a.co, walk, &a);
    coro_start(b.co, walk, &b);
    assert_int_equal(coro_resume(a.co), 0); /* to its first yield */
    assert_int_equal(coro_resume(b.co), 0);
    assert_int_equal(coro_resume(a.co), 0);
    assert_int_equal(coro_resume(b.co), 1); /* b ends */
    assert_int_equal(coro_resume(a.co), 1);
    assert_int_equal(coro_resume(a.co), 1); /* a finished one stays finished */
    a.trace[a.len] = b.trace[b.len] = 0;
    assert_string_equal(a.trace, "S01E");
    assert_string_equal(b.trace, "S0E");
    /* Reused once finished. */
    a.len = 0;
    a.steps = 0;
    coro_start(a.co, walk, &a);
    assert_int_equal(coro_resume(a.co), 1);
    a.trace[a.len] = 0;
    assert_string_equal(a.trace, "SE");
    coro_free(a.co);
    coro_free(b.co);
}

static unsigned deep(unsigned n)
{
    volatile char pad[512];
    memset((char *)pad, (int)n, sizeof(pad));
    return n == 0 ? (unsigned char)pad[0] : deep(n - 1) + (unsigned char)pad[1];
}

typedef struct {
    coro_t *co;
    unsigned depth, got;
} deep_t;

static void run_deep(void *arg)
{
    deep_t *d = arg;
    coro_yield(d->co);
    d->got = deep(d->depth);
}

/* About 300 KiB of frames on a 1 MiB stack, across a yield. */
static void test_deep_stack(void **state)
{
    (void)state;
    deep_t d = {.co = coro_new(1024 * 1024), .depth = 500};
    assert_non_null(d.co);
    coro_start(d.co, run_deep, &d);
    assert_int_equal(coro_resume(d.co), 0);
    assert_int_equal(coro_resume(d.co), 1);
    assert_int_equal(d.got, deep(500));
    coro_free(d.co);
    coro_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yield_and_resume_in_order),
        cmocka_unit_test(test_deep_stack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
