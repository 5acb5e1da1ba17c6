/* The --redis URL: what is accepted, what is refused (a name that would need DNS
 * above all), and the parts taken from it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "redis/redis_url.h"

static void test_accepted(void **state)
{
    (void)state;
    redis_url_t u;
    char err[256];
    assert_int_equal(redis_url_parse("redis://127.0.0.1:6380", &u, err, sizeof(err)), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");

    assert_int_equal(redis_url_parse("redis://localhost", &u, err, sizeof(err)), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6379);

    assert_int_equal(redis_url_parse("redis://:s%40cret@10.0.0.2:7000/3", &u, err, sizeof(err)), 0);
    assert_string_equal(u.password, "s@cret");
    assert_string_equal(u.user, "");
    assert_string_equal(u.host, "10.0.0.2");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 3);

    assert_int_equal(redis_url_parse("redis://basalt:pw@[::1]:6379/", &u, err, sizeof(err)), 0);
    assert_string_equal(u.user, "basalt");
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.db, 0);
}

static void test_refused(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "127.0.0.1:6379",              /* no scheme */
        "rediss://127.0.0.1:6379",     /* TLS: not supported */
        "redis://redis.internal:6379", /* a name: would need DNS on a loop */
        "redis://:6379",               /* no host */
        "redis://127.0.0.1:0",         /* port out of range */
        "redis://127.0.0.1:65536",
        "redis://127.0.0.1:12ab",
        "redis://127.0.0.1:-1",
        "redis://127.0.0.1:6379/x", /* db not a number */
        "redis://127.0.0.1:6379/-1",
        "redis://pw@127.0.0.1:6379", /* credentials without ':' */
        "redis://:p%zz@127.0.0.1",   /* bad escape */
        "redis://:p%00@127.0.0.1",   /* NUL */
        "redis://:p%4@127.0.0.1",    /* short escape */
        "redis://[::1:6379",         /* unclosed bracket */
        "redis://[::1]x6379",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        redis_url_t u;
        char err[256] = "";
        assert_int_equal(redis_url_parse(bad[i], &u, err, sizeof(err)), -1);
        assert_true(err[0] != '\0'); /* a message for a person */
    }
}

static void test_long_parts(void **state)
{
    (void)state;
    char s[1200], err[256];
    redis_url_t u;
    memset(s, 0, sizeof(s));
    strcpy(s, "redis://:");
    memset(s + strlen(s), 'p', 600); /* longer than the password buffer */
    strcat(s, "@127.0.0.1");
    assert_int_equal(redis_url_parse(s, &u, err, sizeof(err)), -1);
    strcpy(s, "redis://");
    memset(s + 8, '1', 100); /* a host longer than any address */
    assert_int_equal(redis_url_parse(s, &u, err, sizeof(err)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_accepted), cmocka_unit_test(test_refused),
                                       cmocka_unit_test(test_long_parts)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
