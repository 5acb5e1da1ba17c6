/* ids, dates, JSON quoting, base64url, arena and buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/util.h"

static void test_ids(void **state)
{
    (void)state;
    char a[16], b[16];
    util_random_id(a);
    util_random_id(b);
    assert_int_equal(strlen(a), 15);
    assert_string_not_equal(a, b);
    for (int i = 0; i < 15; i++)
        assert_true((a[i] >= 'a' && a[i] <= 'z') || (a[i] >= '0' && a[i] <= '9'));
    assert_true(util_valid_id(a, 15));
    assert_false(util_valid_id("a/b", 3));
    assert_false(util_valid_id("", 0));
    assert_false(util_valid_id("../etc", 6));
}

static void test_dates(void **state)
{
    (void)state;
    char out[32];
    util_format_time(0, out);
    assert_string_equal(out, "1970-01-01 00:00:00.000Z");
    util_format_time(1700000000123, out);
    assert_string_equal(out, "2023-11-14 22:13:20.123Z");
    int64_t ms;
    static const struct {
        const char *in;
        int64_t ms;
    } ok[] = {
        {"2023-11-14 22:13:20.123Z", 1700000000123},  {"2023-11-14T22:13:20.123Z", 1700000000123},
        {"2023-11-14 22:13:20Z", 1700000000000},      {"2023-11-14", 1699920000000},
        {"2023-11-14 23:13:20+01:00", 1700000000000}, {"2023-11-14 22:13", 1699999980000},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(util_parse_time(ok[i].in, strlen(ok[i].in), &ms), 0);
        assert_int_equal(ms, ok[i].ms);
    }
    static const char *bad[] = {"",
                                "2023",
                                "2023-13-01",
                                "2023-02-30",
                                "2023-11-14 25:00:00",
                                "2023-11-14x",
                                "yesterday",
                                "2023-11-14 22:13:20.Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(util_parse_time(bad[i], strlen(bad[i]), &ms), -1);
}

static void test_json_quote(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, NULL);
    util_json_quote(&b, "a\"b\\c\n\x01\xc3\xa9\xff", 10);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\\ufffd\"");
    buf_free(&b);
}

static void test_b64(void **state)
{
    (void)state;
    buf_t b;
    buf_init(&b, NULL);
    util_b64url_encode(&b, (const unsigned char *)"hello?>", 7);
    assert_string_equal(b.data, "aGVsbG8_Pg");
    unsigned char out[16];
    assert_int_equal(util_b64url_decode(b.data, b.len, out, sizeof(out)), 7);
    assert_memory_equal(out, "hello?>", 7);
    assert_int_equal(util_b64url_decode("a", 1, out, sizeof(out)), -1);
    assert_int_equal(util_b64url_decode("a+b=", 4, out, sizeof(out)), -1);
    buf_free(&b);
}

static void test_arena_and_buf(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 256);
    for (int i = 0; i < 1000; i++) {
        char *p = arena_alloc(&a, (size_t)(i % 300) + 1);
        assert_non_null(p);
        assert_int_equal(((uintptr_t)p) % 16, 0);
        memset(p, 1, (size_t)(i % 300) + 1);
    }
    char *big = arena_alloc(&a, 1 << 20);
    assert_non_null(big);
    buf_t b;
    buf_init(&b, &a);
    for (int i = 0; i < 1000; i++)
        buf_put_i64(&b, i - 500);
    assert_false(b.oom);
    assert_int_equal(b.data[0], '-');
    assert_null(arena_alloc(&a, SIZE_MAX - 4));
    arena_free(&a);
    int64_t v;
    assert_int_equal(util_parse_i64("-42", 3, &v), 0);
    assert_int_equal(v, -42);
    assert_int_equal(util_parse_i64("4x", 2, &v), -1);
    assert_int_equal(util_parse_i64("", 0, &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids), cmocka_unit_test(test_dates),         cmocka_unit_test(test_json_quote),
        cmocka_unit_test(test_b64), cmocka_unit_test(test_arena_and_buf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
