/* Argon2id: the dummy hash an unknown identity is verified against costs what a real
 * hash costs (its string carries the configured cost) and matches no password. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "auth/password.h"

#define MEM (19456u * 1024u)

static void test_dummy_has_the_configured_cost(void **state)
{
    (void)state;
    assert_int_equal(password_start(0, 2, MEM), 0);
    const char *d = password_dummy_hash();
    assert_true(strncmp(d, "$argon2id$v=19$m=19456,t=2,p=1$", 31) == 0);
    /* A well-formed string with exactly this cost: libsodium would not rehash it. */
    assert_int_equal(crypto_pwhash_str_needs_rehash(d, 2, MEM), 0);
    assert_int_equal(crypto_pwhash_str_needs_rehash(d, 3, MEM), 1);
    char real[crypto_pwhash_STRBYTES];
    assert_int_equal(password_hash_now("a-password-1", real), 0);
    assert_int_equal(strlen(real), strlen(d));

    assert_int_equal(password_start(0, 3, 2 * MEM), 0);
    d = password_dummy_hash();
    assert_int_equal(crypto_pwhash_str_needs_rehash(d, 3, 2 * MEM), 0);
}

static void test_dummy_matches_nothing_and_differs_per_start(void **state)
{
    (void)state;
    assert_int_equal(password_start(0, 2, MEM), 0);
    char first[crypto_pwhash_STRBYTES];
    strcpy(first, password_dummy_hash());
    assert_int_equal(password_verify_now(first, ""), 0);
    assert_int_equal(password_verify_now(first, "admin-password-1"), 0);
    assert_int_equal(password_start(0, 2, MEM), 0);
    assert_string_not_equal(first, password_dummy_hash());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dummy_has_the_configured_cost),
        cmocka_unit_test(test_dummy_matches_nothing_and_differs_per_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
