/* Cron expressions: any input parses or is refused with a reason, and what parses
 * gives a next tick that is due, in the future, on a whole minute. */
#include <assert.h>
#include <string.h>

#include "jobs/cron.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    cron_t c;
    char why[160];
    why[0] = '\0';
    if (cron_parse((const char *)data, size, &c, why, sizeof(why)) != 0) {
        assert(why[0] != '\0');
        return 0;
    }
    int64_t now = 1796000000000LL;
    int64_t next = cron_next(&c, now);
    if (next >= 0) {
        assert(next > now);
        assert(next % 60000 == 0);
        assert(cron_due(&c, next));
    }
    return 0;
}
