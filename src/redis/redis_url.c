#include "redis/redis_url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Percent-decodes [s, s+n) into out (cap bytes with the NUL). -1 when it does not
 * fit or holds a bad escape or a NUL byte. */
static int decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n || !isxdigit((unsigned char)s[i + 1]) || !isxdigit((unsigned char)s[i + 2]))
                return -1;
            char hex[3] = {s[i + 1], s[i + 2], 0};
            long v = strtol(hex, NULL, 16);
            if (v == 0)
                return -1;
            c = (int)v;
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

int redis_url_parse(const char *s, redis_url_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (strncmp(s, "redis://", 8) != 0) {
        snprintf(err, errlen, "must start with redis:// (rediss:// and unix sockets are not supported)");
        return -1;
    }
    const char *p = s + 8, *end = p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *auth_end = slash ? slash : end;
    const char *at = NULL;
    for (const char *q = p; q < auth_end; q++)
        if (*q == '@')
            at = q; /* the last '@': a password may hold one only percent-encoded, but be lenient */
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL) {
            snprintf(err, errlen, "the credentials must be :password@ or user:password@");
            return -1;
        }
        if (decode(p, (size_t)(colon - p), out->user, sizeof(out->user)) != 0 ||
            decode(colon + 1, (size_t)(at - colon - 1), out->password, sizeof(out->password)) != 0) {
            snprintf(err, errlen, "the user or password is too long or badly percent-encoded");
            return -1;
        }
        p = at + 1;
    }
    /* host[:port], or [v6]:port */
    const char *host = p, *host_end, *port = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(auth_end - p));
        if (rb == NULL) {
            snprintf(err, errlen, "an IPv6 address must be written [addr]:port");
            return -1;
        }
        host = p + 1;
        host_end = rb;
        if (rb + 1 < auth_end) {
            if (rb[1] != ':') {
                snprintf(err, errlen, "an IPv6 address must be written [addr]:port");
                return -1;
            }
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        host_end = colon ? colon : auth_end;
        if (colon != NULL)
            port = colon + 1;
    }
    size_t hl = (size_t)(host_end - host);
    if (hl == 0 || hl >= sizeof(out->host)) {
        snprintf(err, errlen, "the host is missing or too long");
        return -1;
    }
    memcpy(out->host, host, hl);
    out->host[hl] = '\0';
    if (strcmp(out->host, "localhost") == 0)
        snprintf(out->host, sizeof(out->host), "127.0.0.1");
    unsigned char addr[16];
    if (inet_pton(AF_INET, out->host, addr) != 1 && inet_pton(AF_INET6, out->host, addr) != 1) {
        snprintf(err, errlen,
                 "the host must be an IP address or localhost (\"%s\" would need a DNS lookup, which Basalt "
                 "does not do on its event loops)",
                 out->host);
        return -1;
    }
    if (port != NULL) {
        size_t pl = (size_t)(auth_end - port);
        char num[8];
        char *e;
        if (pl == 0 || pl >= sizeof(num)) {
            snprintf(err, errlen, "the port must be a number from 1 to 65535");
            return -1;
        }
        memcpy(num, port, pl);
        num[pl] = '\0';
        long v = strtol(num, &e, 10);
        if (*e != '\0' || num[0] < '0' || num[0] > '9' || v < 1 || v > 65535) {
            snprintf(err, errlen, "the port must be a number from 1 to 65535");
            return -1;
        }
        out->port = (int)v;
    }
    if (slash != NULL && slash + 1 < end) {
        char *e;
        long v = strtol(slash + 1, &e, 10);
        if (*e != '\0' || slash[1] < '0' || slash[1] > '9' || v < 0 || v > 1000000) {
            snprintf(err, errlen, "the database must be a number (redis://host:port/0)");
            return -1;
        }
        out->db = (int)v;
    }
    return 0;
}
