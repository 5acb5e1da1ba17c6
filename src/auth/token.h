/*
 * token — PocketBase-compatible JWTs, HS256 only.
 *
 * A token's signing key is the record's tokenKey followed by its collection's
 * secret, so changing a record's tokenKey revokes every token it holds. Verification
 * is in two steps because the key depends on the record: token_peek() reads the
 * claims without trusting them, the caller loads the record, then token_verify()
 * checks the header's algorithm, the signature (constant time), the expiry and the
 * type. Pure; any thread.
 */
#ifndef BASALT_AUTH_TOKEN_H
#define BASALT_AUTH_TOKEN_H

#include <stdint.h>

#include "base/buf.h"
#include "base/error.h"

typedef struct {
    char id[101];
    char collection_id[101];
    char type[32];
    int64_t exp;
    int refreshable;
    /* The mail flows' tokens (verification, passwordReset, emailChange) also carry
     * the address they were issued for, as PocketBase's do; empty: left out. */
    char email[256];
    char new_email[256];
} token_claims_t;

/* Appends a signed token to out. */
void token_sign(buf_t *out, const token_claims_t *claims, const char *token_key, const char *secret);
/* Parses the claims of a well-formed token without checking the signature.
 * Returns 0 or -1 (err: 401 with a reason). */
int token_peek(const char *tok, size_t len, token_claims_t *claims, bs_error_t *err);
/* Checks alg == HS256, the signature with tokenKey+secret, exp > now_s and the type.
 * Returns 0 or -1 (err: 401). */
int token_verify(const char *tok, size_t len, const char *token_key, const char *secret, int64_t now_s,
                 const char *want_type, bs_error_t *err);

#endif
