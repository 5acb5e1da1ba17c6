/* Multipart bodies with file parts (body_parse_upload): the first byte picks the
 * boundary form and the file limit, the rest is the body. Every file part returned
 * lies inside the body, has a name and a file name, and the limit holds. */
#include <assert.h>
#include <jansson.h>
#include <string.h>

#include "http/body.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size == 0)
        return 0;
    static const char *types[] = {"multipart/form-data; boundary=XyZ",
                                  "multipart/form-data; boundary=\"a b\"",
                                  "multipart/form-data; charset=utf-8; boundary=XyZ"};
    const char *ct = types[data[0] % 3];
    size_t max_files = (size_t)(data[0] >> 4);
    const char *body = (const char *)data + 1;
    size_t n = size - 1;
    arena_t a;
    arena_init(&a, 4096);
    bs_error_t err;
    bs_error_init(&err);
    body_file_t *files = NULL;
    json_t *v = body_parse_upload(&a, ct, strlen(ct), body, n, 32, max_files, &files, &err);
    if (v != NULL) {
        assert(json_is_object(v));
        size_t count = 0;
        for (const body_file_t *f = files; f != NULL; f = f->next) {
            count++;
            assert(f->field != NULL && f->field[0] != '\0');
            assert(f->filename != NULL && f->filename[0] != '\0');
            assert(f->data >= body && f->data + f->len <= body + n);
        }
        assert(count <= max_files);
    } else {
        assert(bs_status(err.code) == 400 || bs_status(err.code) == 415 || err.code == BS_ERR_NOMEM);
    }
    json_decref(v);
    arena_free(&a);
    return 0;
}
