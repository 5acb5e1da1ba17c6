/* The pieces of realtime that are pure: the rules evaluator, LIKE, WebSocket frames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "realtime/wsframe.h"
#include "rules/rules.h"

/* A record {title: "Hello World", n: 3, tags: ["a","b"], owner: "u1"}, auth id "u1". */
static int lookup(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_evalue_t *out)
{
    (void)ud;
    (void)mods;
    static const bs_value_t tags[2] = {{BS_VAL_TEXT, 0, 0, "a", 1}, {BS_VAL_TEXT, 0, 0, "b", 1}};
    char n[64];
    snprintf(n, sizeof(n), "%.*s", (int)len, name);
    (void)a;
    if (!strcmp(n, "title"))
        out->value = bs_val_text("Hello World", 11);
    else if (!strcmp(n, "n"))
        out->value = bs_val_int(3);
    else if (!strcmp(n, "owner"))
        out->value = bs_val_text("u1", 2);
    else if (!strcmp(n, "empty"))
        out->value = bs_val_text("", 0);
    else if (!strcmp(n, "tags")) {
        out->multi = 1;
        out->values = tags;
        out->nvalues = 2;
    } else if (!strcmp(n, "@request.auth.id")) {
        out->is_const = 1;
        out->value = bs_val_text("u1", 2);
    } else if (!strcmp(n, "author.name")) {
        out->unknown = 1;
    } else {
        return -1;
    }
    return 0;
}

static rules_truth_t eval(const char *text)
{
    arena_t a;
    arena_init(&a, 1024);
    bs_error_t err;
    bs_error_init(&err);
    rules_node_t *n = rules_parse(&a, text, strlen(text), NULL, &err);
    assert_int_equal(err.code, BS_ERR_OK);
    rules_evaluator_t ev = {.lookup = lookup, .now_ms = 1700000000000};
    rules_truth_t t = rules_eval(&ev, &a, n);
    arena_free(&a);
    return t;
}

static void test_eval(void **state)
{
    (void)state;
    assert_int_equal(eval("owner = @request.auth.id"), RULES_TRUE);
    assert_int_equal(eval("owner != @request.auth.id"), RULES_FALSE);
    assert_int_equal(eval("title ~ 'world'"), RULES_TRUE); /* implicit %...%, case-insensitive */
    assert_int_equal(eval("title !~ 'world'"), RULES_FALSE);
    assert_int_equal(eval("title ~ 'Hello%'"), RULES_TRUE);
    assert_int_equal(eval("title ~ '%o_W%'"), RULES_TRUE);
    assert_int_equal(eval("title ~ 'o_W'"), RULES_FALSE); /* _ is literal when wrapped */
    assert_int_equal(eval("n > 2 && n <= 3"), RULES_TRUE);
    assert_int_equal(eval("n > 2.5"), RULES_TRUE);
    assert_int_equal(eval("empty = ''"), RULES_TRUE);
    assert_int_equal(eval("empty = null"), RULES_TRUE);
    assert_int_equal(eval("title = null"), RULES_FALSE);
    assert_int_equal(eval("tags ?= 'b'"), RULES_TRUE);
    assert_int_equal(eval("tags = 'b'"), RULES_FALSE); /* every value must match */
    assert_int_equal(eval("tags != 'c'"), RULES_TRUE);
    assert_int_equal(eval("n = '3'"), RULES_UNKNOWN); /* different classes: affinity decides */
    assert_int_equal(eval("author.name = 'x'"), RULES_UNKNOWN);
    assert_int_equal(eval("author.name = 'x' && n = 4"), RULES_FALSE);
    assert_int_equal(eval("author.name = 'x' || n = 3"), RULES_TRUE);
    assert_int_equal(eval("title:lower = 'hello world'"), RULES_TRUE);
}

static void test_like(void **state)
{
    (void)state;
    assert_true(rules_like("abc", 3, "%", 1));
    assert_true(rules_like("", 0, "%%", 2));
    assert_true(rules_like("ABC", 3, "a_c", 3));
    assert_false(rules_like("ab", 2, "a_c", 3));
    assert_true(rules_like("a%c", 3, "a\\%c", 4));
    assert_false(rules_like("abc", 3, "a\\%c", 4));
    assert_true(rules_like("x\xc3\xa9y", 4, "x_y", 3)); /* _ is one character, not one byte */
    assert_true(rules_like("aXbXc", 5, "a%b%c", 5));
    assert_false(rules_like("aXbXd", 5, "a%b%c", 5));
}

static void test_ws_frames(void **state)
{
    (void)state;
    uint8_t h[14];
    ws_frame_t f;
    int code;
    const char *why;
    for (uint64_t len = 0; len < 70000; len += len < 130 ? 1 : 997) {
        size_t hl = ws_write_header(h, WS_OP_TEXT, len);
        assert_int_equal(ws_parse_header(h, hl, &f, &code, &why), -1); /* unmasked */
        h[1] |= 0x80;
        memset(h + hl, 7, 4);
        assert_int_equal(ws_parse_header(h, hl + 3, &f, &code, &why), 0); /* incomplete */
        assert_int_equal(ws_parse_header(h, hl + 4, &f, &code, &why), 1);
        assert_true(f.len == len && f.fin && f.opcode == WS_OP_TEXT && f.header_len == hl + 4);
    }
    uint8_t ping[] = {0x09, 0x80 | 126, 0, 200};
    assert_int_equal(ws_parse_header(ping, sizeof(ping), &f, &code, &why), -1); /* control > 125 */
    assert_int_equal(code, WS_CLOSE_PROTOCOL);
    uint8_t rsv[] = {0xC1, 0x80, 0, 0, 0, 0};
    assert_int_equal(ws_parse_header(rsv, sizeof(rsv), &f, &code, &why), -1);
    uint8_t p[] = "hello";
    uint8_t m[4] = {1, 2, 3, 4};
    ws_unmask(p, 5, m, 0);
    ws_unmask(p, 5, m, 0);
    assert_memory_equal(p, "hello", 5);
    assert_true(ws_utf8_valid((const uint8_t *)"h\xc3\xa9", 3));
    assert_false(ws_utf8_valid((const uint8_t *)"\xc3", 1));
    assert_false(ws_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3)); /* surrogate */
    assert_false(ws_utf8_valid((const uint8_t *)"\xc0\xaf", 2));     /* overlong */
    char acc[29];
    ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, acc); /* RFC 6455's example */
    assert_string_equal(acc, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval),
        cmocka_unit_test(test_like),
        cmocka_unit_test(test_ws_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
