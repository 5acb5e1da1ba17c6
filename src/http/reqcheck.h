/*
 * reqcheck — strict checks of an HTTP/1.x request as it arrived on the wire.
 *
 * libh2o 2.2.5 parses requests with picohttpparser, which is lenient where a proxy
 * in front of Basalt may not be: it takes a bare LF as a line end, keeps obs-fold
 * continuation lines as headers without a name, frames the body by the first of two
 * Content-Length headers, lets Transfer-Encoding win over Content-Length, and hides
 * both headers (and Host) from the application. It also decodes %2F and resolves
 * dot-segments (even %2e%2e) in the path it routes by. Each is a way for a proxy and
 * Basalt to disagree about what was asked (request smuggling, routing around a
 * proxy's path rules), so Basalt looks at the raw bytes itself: the request head
 * while it is still at the front of the connection's input buffer (http/server.c),
 * the raw request target, and every X-Forwarded-For line.
 *
 * Pure functions: no I/O, no globals, no allocation; any thread. They are fuzzed by
 * tests/fuzz/fuzz_http.c.
 */
#ifndef BASALT_HTTP_REQCHECK_H
#define BASALT_HTTP_REQCHECK_H

#include <stddef.h>

typedef enum {
    REQCHECK_OK = 0,
    REQCHECK_INCOMPLETE,    /* no blank line ends the head in the bytes given */
    REQCHECK_BARE_LF,       /* a line ends in LF without CR */
    REQCHECK_BARE_CR,       /* a CR not followed by LF */
    REQCHECK_CONTROL,       /* a control character other than HT in the head */
    REQCHECK_OBS_FOLD,      /* a header line starts with SP or HT (obs-fold) */
    REQCHECK_BAD_LINE,      /* a header line without a name and a colon */
    REQCHECK_CL_CONFLICT,   /* Content-Length headers with different values */
    REQCHECK_CL_AND_TE,     /* both Content-Length and Transfer-Encoding */
    REQCHECK_TE_REPEATED,   /* more than one Transfer-Encoding line */
    REQCHECK_HOST_REPEATED, /* more than one Host header */
    REQCHECK_HOST_MISSING,  /* an HTTP/1.1 request without Host */
} reqcheck_head_t;

typedef struct {
    size_t start;    /* offset of the request line (after one tolerated empty line) */
    size_t len;      /* bytes from the buffer's start through the blank line */
    size_t line_len; /* length of the request line without its CRLF */
} reqcheck_head_info_t;

/* Checks the request head at the start of buf (len bytes: the head, perhaps
 * followed by a body and more requests). Returns REQCHECK_OK and fills info (may be
 * NULL), or the first problem found. Reads at most len bytes. */
reqcheck_head_t reqcheck_head(const char *buf, size_t len, reqcheck_head_info_t *info);
/* A message a person can act on, for a 400 (static, no quotes or backslashes). */
const char *reqcheck_head_message(reqcheck_head_t r);

typedef enum {
    REQCHECK_PATH_OK = 0,
    REQCHECK_PATH_NOT_ORIGIN,    /* the target does not start with '/' */
    REQCHECK_PATH_BAD_ESCAPE,    /* '%' not followed by two hex digits */
    REQCHECK_PATH_ENCODED_SLASH, /* %2F, or a backslash raw or encoded */
    REQCHECK_PATH_DOT_SEGMENT,   /* a "." or ".." segment, raw or encoded */
    REQCHECK_PATH_CONTROL,       /* a control character (NUL included), raw or encoded */
} reqcheck_path_t;

/* Decodes the path of a request target (target: len bytes, the query excluded).
 * out must have room for len + 1 bytes; on REQCHECK_PATH_OK it holds the decoded
 * path, NUL-terminated, and *out_len its length. Percent-escapes are decoded once;
 * nothing decoded can become a separator or a dot-segment. */
reqcheck_path_t reqcheck_path(const char *target, size_t len, char *out, size_t *out_len);
const char *reqcheck_path_message(reqcheck_path_t r);

/* Parses an IPv4 or IPv6 address literal (len bytes, no port, no brackets) into its
 * canonical text in out (cap >= 46). An IPv4-mapped IPv6 address is given as IPv4.
 * Returns 0, or -1 if s is not an address. */
int reqcheck_ip_canonical(const char *s, size_t len, char *out, size_t cap);
/* 1 if the address ip (len bytes) is in list, a comma- or space-separated list of
 * addresses (compared as addresses, not as text); 0 otherwise. */
int reqcheck_ip_in_list(const char *list, const char *ip, size_t len);

/* The client behind trusted proxies, from X-Forwarded-For: list is every line of the
 * header joined with ',' in order of arrival (RFC 9110 5.3). Walking from the right,
 * trusted proxies are skipped; the first entry that is not one is the client. If
 * every entry is a trusted proxy, the leftmost is. Empty elements are ignored.
 * Returns 1 with the client's canonical address in out (cap >= 46), 0 if the list
 * has no entries (the peer is the client), -1 if the entry that decides is not an
 * address (nothing to its left can be believed, and the proxy is not the client). */
int reqcheck_forwarded_for(const char *list, size_t len, const char *trusted, char *out, size_t cap);

#endif
