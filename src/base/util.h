/*
 * util — small pure helpers: record ids, PocketBase dates, JSON string quoting,
 * base64url, constant-time comparison, number parsing.
 */
#ifndef BASALT_BASE_UTIL_H
#define BASALT_BASE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define UTIL_ID_LEN 15
#define UTIL_TIME_LEN 24 /* "2006-01-02 15:04:05.000Z" */

/* Milliseconds since the epoch (wall clock) and monotonic nanoseconds. */
int64_t util_now_ms(void);
uint64_t util_mono_ns(void);
/* Fills out with UTIL_ID_LEN random chars of [a-z0-9] and a NUL (out has 16 bytes). */
void util_random_id(char *out);
/* Fills out with n random bytes from the kernel. */
void util_random_bytes(void *out, size_t n);
/* True if s (len n) looks like a record id: 1..100 chars of [A-Za-z0-9_-]. */
int util_valid_id(const char *s, size_t n);
/* Formats ms since epoch as "2006-01-02 15:04:05.000Z" into out (>= 25 bytes). */
void util_format_time(int64_t ms, char *out);
/* Parses PocketBase/ISO dates ("2006-01-02", "2006-01-02 15:04:05", optional
 * ".000", "T" separator, "Z" or "+hh:mm"); returns 0 and ms since epoch, or -1. */
int util_parse_time(const char *s, size_t n, int64_t *ms);
/* Appends s as a JSON string literal with quotes; invalid UTF-8 becomes U+FFFD. */
void util_json_quote(buf_t *b, const char *s, size_t n);
/* base64url without padding. encode appends; decode returns decoded length or -1. */
void util_b64url_encode(buf_t *b, const unsigned char *p, size_t n);
long util_b64url_decode(const char *s, size_t n, unsigned char *out, size_t cap);
/* Constant-time equality of two byte strings of equal length n. */
int util_ct_equal(const void *a, const void *b, size_t n);
/* Strict integer parse of the whole string; returns 0 or -1. */
int util_parse_i64(const char *s, size_t n, int64_t *out);
/* True if s (len n) is valid UTF-8. */
int util_valid_utf8(const char *s, size_t n);
/* Names the calling thread ("bs-" and the name, cut to the kernel's 15 characters),
 * as top -H, perf and /proc/PID/task/TID/comm show it. */
void util_thread_name(const char *name);

#endif
