/* The cache: hits, invalidation by generation and schema, TTL, LRU under budget. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "cache/cache.h"

static void test_hit_and_invalidation(void **state)
{
    (void)state;
    cache_t *c = cache_new(1 << 20, 60000);
    arena_t a;
    arena_init(&a, 1024);
    cache_deps_t d = {.schema_version = 7};
    cache_deps_add(&d, "pbc_posts");
    cache_deps_add(&d, "pbc_users");
    cache_put(c, "k1", 2, "value-1", 7, &d, 1000);
    size_t n = 0;
    char *v = cache_get(c, "k1", 2, 7, &a, &n, 1001);
    assert_non_null(v);
    assert_int_equal(n, 7);
    assert_string_equal(v, "value-1");
    /* A write to a collection the entry read: gone. */
    cache_gen_bump("pbc_users");
    assert_null(cache_get(c, "k1", 2, 7, &a, &n, 1002));
    /* A write elsewhere does not touch it. */
    cache_deps_t d2 = {.schema_version = 7};
    cache_deps_add(&d2, "pbc_posts");
    cache_put(c, "k2", 2, "v2", 2, &d2, 1000);
    cache_gen_bump("pbc_other");
    assert_non_null(cache_get(c, "k2", 2, 7, &a, &n, 1003));
    /* A schema change: gone. */
    assert_null(cache_get(c, "k2", 2, 8, &a, &n, 1004));
    /* TTL */
    cache_put(c, "k3", 2, "v3", 2, &d2, 1000);
    assert_null(cache_get(c, "k3", 2, 7, &a, &n, 61000));
    cache_stats_t st;
    cache_get_stats(c, &st);
    assert_int_equal(st.hits, 2);
    assert_true(st.stale >= 3);
    arena_free(&a);
    cache_free(c);
}

/* A fact about a query's cost (cache_deps_init) outlives every write, this process's
 * and another's, but not a schema change or its TTL. */
static void test_rows_independent(void **state)
{
    (void)state;
    cache_t *c = cache_new(1 << 20, 60000);
    arena_t a;
    arena_init(&a, 1024);
    cache_deps_t d;
    cache_deps_init(&d, 7);
    cache_put(c, "b1", 2, "1", 1, &d, 1000);
    cache_deps_t rows = {.schema_version = 7};
    cache_deps_add(&rows, "pbc_posts");
    cache_put(c, "n1", 2, "42", 2, &rows, 1000);
    cache_gen_bump("pbc_posts");
    cache_gen_bump_external();
    size_t n = 0;
    assert_non_null(cache_get(c, "b1", 2, 7, &a, &n, 1001));
    assert_null(cache_get(c, "n1", 2, 7, &a, &n, 1001));
    assert_null(cache_get(c, "b1", 2, 8, &a, &n, 1002));
    cache_put(c, "b2", 2, "1", 1, &d, 1000);
    assert_null(cache_get(c, "b2", 2, 7, &a, &n, 61000));
    arena_free(&a);
    cache_free(c);
}

static void test_budget_and_lru(void **state)
{
    (void)state;
    size_t budget = 16 * 16 * 1024; /* 16 KiB per shard */
    cache_t *c = cache_new(budget, 60000);
    arena_t a;
    arena_init(&a, 1024);
    char key[32], val[1000];
    memset(val, 'x', sizeof(val));
    cache_deps_t d = {.schema_version = 1};
    for (int i = 0; i < 5000; i++) {
        int kl = snprintf(key, sizeof(key), "key-%d", i);
        cache_put(c, key, (size_t)kl, val, sizeof(val), &d, 1000);
        /* Keep key-0 hot: it must survive the flood. */
        size_t n;
        cache_get(c, "key-0", 5, 1, &a, &n, 1000);
    }
    cache_stats_t st;
    cache_get_stats(c, &st);
    assert_true(st.bytes <= budget);
    assert_true(st.evictions > 4000);
    size_t n;
    assert_non_null(cache_get(c, "key-0", 5, 1, &a, &n, 1001));
    assert_null(cache_get(c, "key-1", 5, 1, &a, &n, 1001));
    arena_free(&a);
    cache_free(c);
    /* budget 0: disabled */
    cache_t *off = cache_new(0, 1000);
    cache_put(off, "k", 1, "v", 1, &d, 0);
    assert_null(cache_get(off, "k", 1, 1, &a, &n, 0));
    cache_free(off);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_hit_and_invalidation),
                                       cmocka_unit_test(test_budget_and_lru),
                                       cmocka_unit_test(test_rows_independent)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
