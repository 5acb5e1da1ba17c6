/* Request bodies: the first byte picks the content type (JSON, multipart with a
 * fixed boundary, urlencoded), the rest is the body. */
#include <assert.h>
#include <jansson.h>
#include <string.h>

#include "http/body.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size == 0)
        return 0;
    static const char *types[] = {"application/json", "multipart/form-data; boundary=XyZ",
                                  "application/x-www-form-urlencoded",
                                  "multipart/form-data; boundary=\"a b\""};
    const char *ct = types[data[0] % 4];
    arena_t a;
    arena_init(&a, 4096);
    bs_error_t err;
    bs_error_init(&err);
    json_t *v = body_parse(&a, ct, strlen(ct), (const char *)data + 1, size - 1, 32, &err);
    if (v != NULL) {
        assert(json_is_object(v));
        /* Every field has a real name: no empty key from a malformed part. */
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) assert(data[0] % 4 == 0 || data[0] % 4 == 2 || k[0] != '\0');
    } else
        assert(bs_status(err.code) == 400 || bs_status(err.code) == 415 || err.code == BS_ERR_NOMEM);
    json_decref(v);
    arena_free(&a);
    return 0;
}
