/* The settings table: defaults, environment, flags, and refusals naming the setting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "app/config.h"

static int parse(config_t *cfg, int argc, char **argv)
{
    char *rest[4];
    int nrest;
    return config_parse(cfg, argc, argv, rest, 4, &nrest);
}

static void test_defaults(void **state)
{
    (void)state;
    config_t cfg;
    unsetenv("BASALT_HTTP");
    assert_int_equal(parse(&cfg, 0, NULL), 0);
    assert_string_equal(cfg.http, "127.0.0.1:8090");
    assert_string_equal(cfg.dir, "./basalt_data");
    assert_int_equal(cfg.max_body, 10485760);
    assert_string_equal(cfg.sync, "normal");
}

static void test_env_and_flags(void **state)
{
    (void)state;
    config_t cfg;
    setenv("BASALT_HTTP", "0.0.0.0:9000", 1);
    setenv("BASALT_THREADS", "3", 1);
    char *argv[] = {"--threads=5", "--dir", "/tmp/x", "--sync=full", "pos"};
    char *rest[4];
    int nrest;
    assert_int_equal(config_parse(&cfg, 5, argv, rest, 4, &nrest), 0);
    assert_string_equal(cfg.http, "0.0.0.0:9000"); /* from the environment */
    assert_int_equal(cfg.threads, 5);              /* the flag wins */
    assert_string_equal(cfg.dir, "/tmp/x");
    assert_string_equal(cfg.sync, "full");
    assert_int_equal(nrest, 1);
    assert_string_equal(rest[0], "pos");
    unsetenv("BASALT_HTTP");
    unsetenv("BASALT_THREADS");
}

static void test_refusals(void **state)
{
    (void)state;
    config_t cfg;
    char *bad1[] = {"--threads=-1"};
    char *bad2[] = {"--threads=abc"};
    char *bad3[] = {"--sync=sometimes"};
    char *bad4[] = {"--nope=1"};
    char *bad5[] = {"--tls-cert=/x.pem"};
    char *bad6[] = {"--dir"};
    assert_int_equal(parse(&cfg, 1, bad1), -1);
    assert_int_equal(parse(&cfg, 1, bad2), -1);
    assert_int_equal(parse(&cfg, 1, bad3), -1);
    assert_int_equal(parse(&cfg, 1, bad4), -1);
    assert_int_equal(parse(&cfg, 1, bad5), -1);
    assert_int_equal(parse(&cfg, 1, bad6), -1);
    setenv("BASALT_MAX_BODY", "12", 1);
    assert_int_equal(parse(&cfg, 0, NULL), -1);
    unsetenv("BASALT_MAX_BODY");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_defaults), cmocka_unit_test(test_env_and_flags),
                                       cmocka_unit_test(test_refusals)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
