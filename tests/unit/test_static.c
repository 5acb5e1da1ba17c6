/* The static server's pure parts: content types, hashed names, Range, Accept-Encoding,
 * If-None-Match; and the request log's filter rewrite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "api/logs.h"
#include "http/static.h"

static void test_types(void **state)
{
    (void)state;
    int text = 0;
    assert_string_equal(static_content_type("a/index.html", &text), "text/html; charset=utf-8");
    assert_true(text);
    assert_string_equal(static_content_type("app-X.JS", &text), "text/javascript; charset=utf-8");
    assert_string_equal(static_content_type("x.png", &text), "image/png");
    assert_false(text);
    assert_string_equal(static_content_type("noext", &text), "application/octet-stream");
    assert_string_equal(static_content_type(".hidden", &text), "application/octet-stream");
    assert_string_equal(static_content_type("dir.d/file", &text), "application/octet-stream");
}

static void test_hashed(void **state)
{
    (void)state;
    assert_true(static_is_hashed_name("assets/main-LQ5M3KZE.js"));
    assert_true(static_is_hashed_name("main.8f3a2b1c.css"));
    assert_false(static_is_hashed_name("index.html"));
    assert_false(static_is_hashed_name("my-settings.js"));
    assert_false(static_is_hashed_name("app-abc.js"));
    assert_false(static_is_hashed_name("LQ5M3KZE.js"));   /* no separator: a plain name */
    assert_false(static_is_hashed_name("a-deadbeef.js")); /* hex without a digit reads as a word */
}

static void test_range(void **state)
{
    (void)state;
    size_t a = 99, b = 99;
    const char *r = "bytes=0-9";
    assert_int_equal(static_parse_range(r, strlen(r), 100, &a, &b), 1);
    assert_int_equal(a, 0);
    assert_int_equal(b, 9);
    r = "bytes=90-";
    assert_int_equal(static_parse_range(r, strlen(r), 100, &a, &b), 1);
    assert_int_equal(a, 90);
    assert_int_equal(b, 99);
    r = "bytes=-10";
    assert_int_equal(static_parse_range(r, strlen(r), 100, &a, &b), 1);
    assert_int_equal(a, 90);
    r = "bytes=-1000";
    assert_int_equal(static_parse_range(r, strlen(r), 100, &a, &b), 1);
    assert_int_equal(a, 0);
    r = "bytes=50-2000";
    assert_int_equal(static_parse_range(r, strlen(r), 100, &a, &b), 1);
    assert_int_equal(b, 99);
    r = "bytes=100-";
    assert_int_equal(static_parse_range(r, strlen(r), 100, &a, &b), -1);
    r = "bytes=-0";
    assert_int_equal(static_parse_range(r, strlen(r), 100, &a, &b), -1);
    const char *whole[] = {"bytes=0-1,5-6",
                           "items=0-1",
                           "bytes=5-1",
                           "bytes=x-1",
                           "bytes=-",
                           "bytes=",
                           "bytes=99999999999999999999999-"};
    for (size_t i = 0; i < sizeof(whole) / sizeof(whole[0]); i++)
        assert_int_equal(static_parse_range(whole[i], strlen(whole[i]), 100, &a, &b), 0);
}

static void test_headers(void **state)
{
    (void)state;
    const char *ok[] = {"gzip", "deflate, gzip", "gzip;q=0.5", "br, gzip ;q=1", "GZIP"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_true(static_header_has_token(ok[i], strlen(ok[i]), "gzip"));
    const char *no[] = {"gzip;q=0", "gzip; q=0.0", "x-gzip", "deflate", "", "gzipx"};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(static_header_has_token(no[i], strlen(no[i]), "gzip"));
    const char *e = "\"abc-1\"";
    assert_true(static_etag_matches("\"abc-1\"", 7, e));
    assert_true(static_etag_matches("W/\"abc-1\"", 9, e));
    assert_true(static_etag_matches("\"x\", \"abc-1\"", 12, e));
    assert_true(static_etag_matches("*", 1, e));
    assert_false(static_etag_matches("\"abc-2\"", 7, e));
    assert_false(static_etag_matches("", 0, e));
}

static void test_strip(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 256);
    assert_string_equal(logs_strip_data_prefix(&a, "data.status >= 400 && data.url ~ 'data.x'"),
                        "status >= 400 && url ~ 'data.x'");
    assert_string_equal(logs_strip_data_prefix(&a, "mydata.x = 1 || @request.data.y = 2"),
                        "mydata.x = 1 || @request.data.y = 2");
    assert_string_equal(logs_strip_data_prefix(&a, "(data.a=\"q\\\"data.b\")"), "(a=\"q\\\"data.b\")");
    assert_string_equal(logs_strip_data_prefix(&a, ""), "");
    arena_free(&a);
}

/* The request log's ids: PocketBase's shape, in the order of their time. */
static void test_log_ids(void **state)
{
    (void)state;
    char a[16], b[16], c[16];
    logs_make_id(1764633600000, a); /* 2025-12-02 */
    logs_make_id(1764633600000, b);
    logs_make_id(1764633600001, c);
    assert_int_equal(strlen(a), 15);
    for (int i = 0; i < 15; i++)
        assert_true((a[i] >= 'a' && a[i] <= 'z') || (a[i] >= '0' && a[i] <= '9'));
    assert_memory_equal(a, b, LOGS_ID_TIME_CHARS); /* the same millisecond */
    assert_string_not_equal(a, b);                 /* told apart by the random part */
    assert_true(strcmp(a, c) < 0 && strcmp(b, c) < 0);
    char d[16];
    logs_make_id(1764633600000 + 86400000LL * 365, d);
    assert_true(strcmp(c, d) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types),   cmocka_unit_test(test_hashed), cmocka_unit_test(test_range),
        cmocka_unit_test(test_headers), cmocka_unit_test(test_strip),  cmocka_unit_test(test_log_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
