/* ?search= text becomes a full-text query of its words only: whatever a client sends,
 * the query holds nothing but word characters and the separators Basalt writes
 * itself, on both dialects. */
#include <assert.h>
#include <ctype.h>
#include <string.h>

#include "rules/dialect.h"

static void check(rules_dialect_t id, const char *text, arena_t *a)
{
    buf_t b;
    buf_init(&b, a);
    int words = dialect_fts_query(dialect_get(id), &b, text);
    assert(words >= -1 && words <= 32);
    for (size_t i = 0; words > 0 && i < b.len; i++) {
        unsigned char ch = (unsigned char)b.data[i];
        if (id == RULES_DIALECT_POSTGRES)
            assert(isalnum(ch) || ch >= 0x80 || ch == ' ' || ch == '&' || ch == ':' || ch == '*');
        else
            assert(isalnum(ch) || ch >= 0x80 || ch == ' ' || ch == '"' || ch == '*');
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size > 4096 || memchr(data, '\0', size) != NULL)
        return 0;
    arena_t a;
    arena_init(&a, 1024);
    char *text = arena_strndup(&a, (const char *)data, size);
    if (text != NULL) {
        check(RULES_DIALECT_SQLITE, text, &a);
        check(RULES_DIALECT_POSTGRES, text, &a);
    }
    arena_free(&a);
    return 0;
}
