/*
 * Allocation-failure injection: every allocation our code makes (malloc, calloc,
 * realloc, strdup, wrapped at link time) is made to fail in turn, the Nth one on the
 * Nth run, over the rules compiler, the body parsers and the path lists. Each run
 * must end in success or a clean out-of-memory error: no crash, and (under ASan) no
 * leak.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/record.h"
#include "http/body.h"
#include "rules/rules.h"
#include "store/store.h"

static long countdown = -1; /* -1: never fail; 0: fail the next allocation */
static long failures;

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);

static int should_fail(void)
{
    if (countdown < 0)
        return 0;
    if (countdown-- == 0) {
        failures++;
        return 1;
    }
    return 0;
}

void *__wrap_malloc(size_t n)
{
    return should_fail() ? NULL : __real_malloc(n);
}
void *__wrap_calloc(size_t a, size_t b)
{
    return should_fail() ? NULL : __real_calloc(a, b);
}
void *__wrap_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : __real_realloc(p, n);
}
char *__wrap_strdup(const char *s)
{
    return should_fail() ? NULL : __real_strdup(s);
}

static int resolve(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_resolved_t *out,
                   bs_error_t *err)
{
    (void)ud;
    (void)mods;
    if (name[0] == 'm') {
        out->multi = 1;
        out->from = "json_each(x) AS j";
        out->where = "1";
        out->sql = "j.value";
        return 0;
    }
    out->sql = arena_printf(a, "\"_r\".\"%.*s\"", (int)len, name);
    if (out->sql == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    return 0;
}

static int run_rules(void)
{
    static const char *filters[] = {"title = 'a' && n > 5 || mtags ?= 'x'",
                                    "(a ~ 'b%' || c !~ \"d\") && e = null",
                                    "created >= @todayStart && t:lower = 'q'", "mx = 'a' && my ?!= 'b'"};
    int nomem = 0;
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
        arena_t a;
        arena_init(&a, 256);
        bs_error_t err;
        bs_error_init(&err);
        rules_node_t *root = rules_parse(&a, filters[i], strlen(filters[i]), NULL, &err);
        if (root != NULL) {
            rules_compiler_t c = {0};
            c.resolve = resolve;
            buf_t out;
            buf_init(&out, &a);
            if (rules_compile(&c, &a, root, &out, &err) != 0)
                assert_int_equal(err.code, BS_ERR_NOMEM);
        } else {
            assert_int_equal(err.code, BS_ERR_NOMEM);
        }
        nomem |= err.code == BS_ERR_NOMEM;
        arena_free(&a);
    }
    return nomem;
}

static int run_bodies(void)
{
    static const char mp[] =
        "--B\r\nContent-Disposition: form-data; name=\"@jsonPayload\"\r\n\r\n{\"a\":[1,2]}\r\n"
        "--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--B--\r\n";
    static const char form[] = "a=1&b=%20two&b=three";
    int nomem = 0;
    arena_t a;
    arena_init(&a, 256);
    bs_error_t err;
    bs_error_init(&err);
    json_t *v = body_parse(&a, "multipart/form-data; boundary=B", 31, mp, sizeof(mp) - 1, 16, &err);
    nomem |= v == NULL;
    json_decref(v);
    v = body_parse(&a, "application/x-www-form-urlencoded", 33, form, sizeof(form) - 1, 16, &err);
    json_decref(v);
    path_tree_t *t = path_tree_parse(&a, "id,title,expand.author.name,expand.tags", 6, &err);
    nomem |= t == NULL;
    arena_free(&a);
    return nomem;
}

static int ddl(store_job_t *j, store_conn_t *c)
{
    if (store_exec_script(c, "CREATE TABLE IF NOT EXISTS t (v INTEGER)", &j->err) != 0)
        return -1;
    bs_value_t p = bs_val_int(7);
    return store_exec(c, "INSERT INTO t (v) VALUES (?1)", &p, 1, &j->err) < 0 ? -1 : 0;
}

static char store_path[64];

static int run_store(void)
{
    const char *path = store_path;
    store_config_t cfg = {.path = path, .readers = 2};
    bs_error_t err;
    bs_error_init(&err);
    store_t *s = store_open(&cfg, &err);
    if (s == NULL) {
        assert_true(err.code == BS_ERR_NOMEM || err.code == BS_ERR_UNAVAILABLE);
        return 1;
    }
    store_job_t j = {.run = ddl};
    if (store_write_sync(s, &j) != 0)
        assert_true(j.err.code != BS_ERR_OK);
    store_stmt_t *st = store_query(store_reader(s, 1), "SELECT COUNT(*) FROM t", NULL, 0, &err);
    if (st != NULL) {
        store_step(st, &err);
        store_done(st);
    }
    store_close(s);
    return 0;
}

static void sweep(int (*fn)(void))
{
    /* Run with the 0th, 1st, 2nd... allocation failing until a run has no failure. */
    for (long n = 0; n < 100000; n++) {
        countdown = n;
        failures = 0;
        fn();
        long f = failures;
        countdown = -1;
        if (f == 0)
            return;
    }
    fail_msg("the sweep did not end");
}

static void test_rules_out_of_memory(void **state)
{
    (void)state;
    sweep(run_rules);
}

static void test_bodies_out_of_memory(void **state)
{
    (void)state;
    sweep(run_bodies);
}

static void test_store_out_of_memory(void **state)
{
    (void)state;
    snprintf(store_path, sizeof(store_path), "/tmp/basalt-faults-%d.db", (int)getpid());
    sweep(run_store);
    /* The database and its WAL files are this test's own: leave nothing in /tmp. */
    char p[80];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", store_path, suffix[i]);
        unlink(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_rules_out_of_memory),
                                       cmocka_unit_test(test_bodies_out_of_memory),
                                       cmocka_unit_test(test_store_out_of_memory)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
