/* The `fields` and `expand` path lists. */
#include <stdlib.h>
#include <string.h>

#include "core/record.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    arena_t a;
    arena_init(&a, 1024);
    bs_error_t err;
    bs_error_init(&err);
    path_tree_t *t = path_tree_parse(&a, s, 6, &err);
    (void)t;
    arena_free(&a);
    free(s);
    return 0;
}
