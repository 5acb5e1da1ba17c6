/* JWT: round trip and every refusal the API relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "auth/token.h"
#include "base/util.h"

static const char *KEY = "tokenkey-0123456789012345678901234567890";
static const char *SECRET = "collection-secret-abcdefghijklmnopqrstuvwxyz";

static char *make(int64_t exp, const char *type)
{
    token_claims_t c = {0};
    strcpy(c.id, "rec123");
    strcpy(c.collection_id, "pbc_1");
    strcpy(c.type, type);
    c.exp = exp;
    c.refreshable = 1;
    buf_t b;
    buf_init(&b, NULL);
    token_sign(&b, &c, KEY, SECRET);
    return buf_detach(&b);
}

static int verify(const char *t)
{
    bs_error_t err;
    bs_error_init(&err);
    int rc = token_verify(t, strlen(t), KEY, SECRET, 1000, "auth", &err);
    if (rc != 0)
        assert_int_equal(bs_status(err.code), 401);
    return rc;
}

static void test_round_trip(void **state)
{
    (void)state;
    char *t = make(2000, "auth");
    assert_int_equal(verify(t), 0);
    token_claims_t c;
    bs_error_t err;
    bs_error_init(&err);
    assert_int_equal(token_peek(t, strlen(t), &c, &err), 0);
    assert_string_equal(c.id, "rec123");
    assert_string_equal(c.collection_id, "pbc_1");
    assert_int_equal(c.exp, 2000);
    assert_true(c.refreshable);
    free(t);
}

static void test_refusals(void **state)
{
    (void)state;
    char *t = make(2000, "auth");
    /* tampered signature */
    char *s = strdup(t);
    s[strlen(s) - 2] ^= 1;
    assert_int_equal(verify(s), -1);
    free(s);
    /* tampered payload: a different id, re-encoded, old signature */
    char *p = strdup(t);
    char *dot = strchr(p, '.');
    dot[5] = dot[5] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(p), -1);
    free(p);
    /* other key (the user's tokenKey changed) */
    bs_error_t err;
    bs_error_init(&err);
    assert_int_equal(token_verify(t, strlen(t), "other-key", SECRET, 1000, "auth", &err), -1);
    /* expired */
    char *e = make(999, "auth");
    assert_int_equal(verify(e), -1);
    free(e);
    /* wrong type */
    char *w = make(2000, "file");
    assert_int_equal(verify(w), -1);
    free(w);
    /* alg none: header {"alg":"none"} with the same payload and no signature */
    const char *pay = strchr(t, '.') + 1;
    size_t pl = (size_t)(strchr(pay, '.') - pay);
    buf_t b;
    buf_init(&b, NULL);
    buf_puts(&b, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.");
    buf_append(&b, pay, pl);
    buf_puts(&b, ".");
    assert_int_equal(verify(b.data), -1);
    buf_free(&b);
    /* HS512 header with an HS256 signature */
    buf_init(&b, NULL);
    buf_puts(&b, "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9");
    buf_puts(&b, strchr(t, '.'));
    assert_int_equal(verify(b.data), -1);
    buf_free(&b);
    /* garbage */
    assert_int_equal(verify("a.b"), -1);
    assert_int_equal(verify("a.b.c.d"), -1);
    assert_int_equal(verify(""), -1);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_round_trip), cmocka_unit_test(test_refusals)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
