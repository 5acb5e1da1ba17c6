/*
 * redis_url — parses the --redis setting, redis://[:password@]host:port[/db].
 *
 * Pure: no I/O, no globals. The host must be an IPv4 or IPv6 address, or
 * "localhost" (taken as 127.0.0.1): Basalt never resolves a name, because a DNS
 * query would block the event loop that (re)connects.
 */
#ifndef BASALT_REDIS_REDIS_URL_H
#define BASALT_REDIS_REDIS_URL_H

#include <stddef.h>

typedef struct {
    char host[64];      /* a numeric address */
    int port;           /* 1..65535; 6379 when the URL gives none */
    char password[256]; /* "" when none */
    char user[64];      /* "" when none (Redis 6 ACL user before the ':') */
    int db;             /* 0 when the URL gives none */
} redis_url_t;

/* Fills out from s. Returns 0, or -1 with a message for a person in err. */
int redis_url_parse(const char *s, redis_url_t *out, char *err, size_t errlen);

#endif
