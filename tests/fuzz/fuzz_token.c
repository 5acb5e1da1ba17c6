/* JWT parsing and verification: no input is accepted unless it was signed with
 * the key, and nothing crashes. */
#include <assert.h>
#include <string.h>

#include "auth/token.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *t = (const char *)data;
    token_claims_t c;
    bs_error_t err;
    bs_error_init(&err);
    token_peek(t, size, &c, &err);
    bs_error_init(&err);
    int rc = token_verify(t, size, "fuzz-token-key", "fuzz-collection-secret", 1000, "auth", &err);
    /* A forged token would need an HMAC-SHA256 collision. */
    assert(rc != 0);
    assert(bs_status(err.code) == 401);
    return 0;
}
