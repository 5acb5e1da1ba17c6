/* A view collection's query is checked before it reaches the database: no input
 * crashes the check, and nothing it accepts holds a backslash (with which a literal
 * could end elsewhere for the database than for the check) or fails to start with
 * SELECT or WITH. */
#include <assert.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "core/schema.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size > 30000 || memchr(data, '\0', size) != NULL)
        return 0;
    arena_t a;
    arena_init(&a, 1024);
    char *q = arena_strndup(&a, (const char *)data, size);
    bs_error_t err;
    bs_error_init(&err);
    if (q != NULL && view_check_query(q, &a, &err) == 0) {
        assert(strchr(q, '\\') == NULL);
        const char *p = q;
        while (isspace((unsigned char)*p))
            p++;
        assert(strncasecmp(p, "select", 6) == 0 || strncasecmp(p, "with", 4) == 0);
    }
    arena_free(&a);
    return 0;
}
