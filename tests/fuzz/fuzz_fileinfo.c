/* File names, thumb specs and sniffing (files/fileinfo.c): the first byte picks
 * which. A stored name made of any input passes files_name_ok (so it can always be
 * served, and never escapes its folder); a parsed thumb spec is in range and prints
 * back to a spec that parses the same; sniffing returns a type for any bytes. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "files/fileinfo.h"
#include "files/storage.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0: {
        char out[FILES_MAX_NAME + 2];
        size_t l = files_unique_name(s, n, files_sniff(s, n), "abcdefghij0123456789", out);
        assert(l == strlen(out) && l <= FILES_MAX_NAME);
        assert(files_name_ok(out, l));
        char key[300];
        snprintf(key, sizeof(key), "c/r/%s", out);
        assert(storage_key_ok(key, 0));
        if (files_name_ok(s, n)) {
            assert(memchr(s, '/', n) == NULL && memchr(s, '\\', n) == NULL && memchr(s, '\0', n) == NULL);
        }
        break;
    }
    case 1: {
        files_thumb_t t;
        if (files_thumb_parse(s, n, &t) == 0) {
            assert(t.w >= 0 && t.h >= 0 && t.w <= FILES_THUMB_MAX_SIDE && t.h <= FILES_THUMB_MAX_SIDE);
            assert(t.w > 0 || t.h > 0);
            assert(t.mode == 'c' || t.mode == 't' || t.mode == 'b' || t.mode == 'f');
            char back[32];
            int bl = snprintf(back, sizeof(back), "%dx%d%s", t.w, t.h,
                              t.mode == 'c' ? ""
                                            : (t.mode == 't'   ? "t"
                                               : t.mode == 'b' ? "b"
                                                               : "f"));
            files_thumb_t u;
            assert(files_thumb_parse(back, (size_t)bl, &u) == 0 && u.w == t.w && u.h == t.h &&
                   u.mode == t.mode);
        }
        break;
    }
    default: {
        const char *m = files_sniff(s, n);
        assert(m != NULL && strchr(m, '/') != NULL);
        break;
    }
    }
    return 0;
}
