/* The --redis URL parser: any bytes, NUL-terminated; what it accepts must be a
 * numeric address with a port in range. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "redis/redis_url.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    redis_url_t u;
    char err[256];
    if (redis_url_parse(copy, &u, err, sizeof(err)) == 0) {
        unsigned char a[16];
        if ((inet_pton(AF_INET, u.host, a) != 1 && inet_pton(AF_INET6, u.host, a) != 1) || u.port < 1 ||
            u.port > 65535 || u.db < 0)
            abort();
    }
    free(copy);
    return 0;
}
