/* The static server's header parsers (Range, Accept-Encoding, If-None-Match), its
 * name helpers, and the request log's filter rewrite, on arbitrary bytes. Invariants
 * that a bug would break abort. */
#include <stdlib.h>
#include <string.h>

#include "api/logs.h"
#include "http/static.h"

#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c))                                                                                            \
            abort();                                                                                         \
    } while (0)

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *h = (const char *)data;
    for (size_t len = 0; len < 3; len++) {
        size_t sizes[] = {0, 1, 1000};
        size_t a = 0, b = 0;
        int r = static_parse_range(h, size, sizes[len], &a, &b);
        CHECK(r >= -1 && r <= 1);
        if (r == 1)
            CHECK(a <= b && b < sizes[len]);
    }
    (void)static_header_has_token(h, size, "gzip");
    (void)static_etag_matches(h, size, "\"0123456789abcdef-10\"");
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    int text;
    CHECK(static_content_type(s, &text) != NULL);
    (void)static_is_hashed_name(s);
    arena_t ar;
    arena_init(&ar, 256);
    char *out = logs_strip_data_prefix(&ar, s);
    CHECK(out != NULL && strlen(out) <= strlen(s));
    arena_free(&ar);
    free(s);
    return 0;
}
