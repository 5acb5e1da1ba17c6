#include "base/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t util_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void util_random_bytes(void *out, size_t n)
{
    unsigned char *p = out;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            /* getrandom cannot fail on Linux >= 3.17 once the pool is seeded. */
            memset(p, 0, n);
            return;
        }
        p += r;
        n -= (size_t)r;
    }
}

void util_random_id(char *out)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    /* Bytes from getrandom, drawn a buffer at a time: one system call per dozens of
     * ids rather than one per id (record creates are the hot path). Per thread, and
     * every byte is used once. */
    static __thread unsigned char pool[512];
    static __thread size_t left;
    size_t o = 0;
    while (o < UTIL_ID_LEN) {
        if (left == 0) {
            util_random_bytes(pool, sizeof(pool));
            left = sizeof(pool);
        }
        unsigned char b = pool[sizeof(pool) - left];
        pool[sizeof(pool) - left] = 0;
        left--;
        /* Rejection sampling keeps every character equally likely. */
        if (b < 252)
            out[o++] = alphabet[b % 36];
    }
    out[UTIL_ID_LEN] = '\0';
}

int util_valid_id(const char *s, size_t n)
{
    if (n == 0 || n > 100)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

void util_format_time(int64_t ms, char *out)
{
    time_t secs = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        secs -= 1;
    }
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* Written digit by digit: fixed width, no locale, no truncation warnings. */
    int parts[7] = {
        (tm.tm_year + 1900) % 10000, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac};
    static const int widths[7] = {4, 2, 2, 2, 2, 2, 3};
    static const char seps[7] = {'-', '-', ' ', ':', ':', '.', 'Z'};
    char *p = out;
    for (int i = 0; i < 7; i++) {
        int v = parts[i] < 0 ? 0 : parts[i];
        for (int k = widths[i] - 1; k >= 0; k--) {
            p[k] = (char)('0' + v % 10);
            v /= 10;
        }
        p += widths[i];
        *p++ = seps[i];
    }
    *p = '\0';
}

static int digits(const char *s, size_t n, size_t at, size_t count, int *out)
{
    if (at + count > n)
        return -1;
    int v = 0;
    for (size_t i = 0; i < count; i++) {
        char c = s[at + i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 0;
}

int util_parse_time(const char *s, size_t n, int64_t *ms)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, msec = 0;
    if (digits(s, n, 0, 4, &y) || n < 10 || s[4] != '-' || digits(s, n, 5, 2, &mo) || s[7] != '-' ||
        digits(s, n, 8, 2, &d))
        return -1;
    size_t i = 10;
    if (i < n && (s[i] == ' ' || s[i] == 'T')) {
        if (digits(s, n, i + 1, 2, &h) || i + 3 >= n || s[i + 3] != ':' || digits(s, n, i + 4, 2, &mi))
            return -1;
        i += 6;
        if (i < n && s[i] == ':') {
            if (digits(s, n, i + 1, 2, &sec))
                return -1;
            i += 3;
        }
        if (i < n && s[i] == '.') {
            i++;
            int scale = 100, nd = 0;
            while (i < n && s[i] >= '0' && s[i] <= '9') {
                if (nd < 3)
                    msec += (s[i] - '0') * scale;
                scale /= 10;
                nd++;
                i++;
            }
            if (nd == 0)
                return -1;
        }
    }
    int tz = 0;
    if (i < n && s[i] == 'Z') {
        i++;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        int th, tm;
        if (digits(s, n, i + 1, 2, &th) || i + 3 >= n || s[i + 3] != ':' || digits(s, n, i + 4, 2, &tm))
            return -1;
        tz = (th * 60 + tm) * (s[i] == '-' ? -1 : 1);
        i += 6;
    }
    if (i != n)
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (d > mdays[mo - 1])
        return -1;
    struct tm tmv = {0};
    tmv.tm_year = y - 1900;
    tmv.tm_mon = mo - 1;
    tmv.tm_mday = d;
    tmv.tm_hour = h;
    tmv.tm_min = mi;
    tmv.tm_sec = sec;
    time_t t = timegm(&tmv);
    *ms = ((int64_t)t - (int64_t)tz * 60) * 1000 + msec;
    return 0;
}

/* Returns the length of the valid UTF-8 sequence at s, or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned min;
    if ((c & 0xE0) == 0xC0) {
        len = 2;
        min = 0x80;
        c &= 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3;
        min = 0x800;
        c &= 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4;
        min = 0x10000;
        c &= 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    return len;
}

int util_valid_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_seq(p + i, n - i);
        if (l == 0)
            return 0;
        i += l;
    }
    return 1;
}

void util_json_quote(buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    if (buf_reserve(b, n + 2) != 0)
        return;
    buf_putc(b, '"');
    size_t run = 0; /* start of a run of bytes that need no escaping */
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        size_t l = c >= 0x80 ? utf8_seq(p + i, n - i) : 0;
        if (l > 0) {
            i += l;
            continue;
        }
        buf_append(b, s + run, i - run);
        switch (c) {
        case '"':
            buf_append(b, "\\\"", 2);
            break;
        case '\\':
            buf_append(b, "\\\\", 2);
            break;
        case '\n':
            buf_append(b, "\\n", 2);
            break;
        case '\r':
            buf_append(b, "\\r", 2);
            break;
        case '\t':
            buf_append(b, "\\t", 2);
            break;
        default:
            if (c < 0x20) {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                buf_append(b, e, 6);
            } else {
                buf_append(b, "\\ufffd", 6); /* invalid UTF-8 byte */
            }
        }
        i++;
        run = i;
    }
    buf_append(b, s + run, n - run);
    buf_putc(b, '"');
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void util_b64url_encode(buf_t *b, const unsigned char *p, size_t n)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        char o[4] = {b64chars[v >> 18], b64chars[(v >> 12) & 63], b64chars[(v >> 6) & 63], b64chars[v & 63]};
        buf_append(b, o, 4);
    }
    if (n - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        char o[2] = {b64chars[v >> 18], b64chars[(v >> 12) & 63]};
        buf_append(b, o, 2);
    } else if (n - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        char o[3] = {b64chars[v >> 18], b64chars[(v >> 12) & 63], b64chars[(v >> 6) & 63]};
        buf_append(b, o, 3);
    }
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long util_b64url_decode(const char *s, size_t n, unsigned char *out, size_t cap)
{
    if (n % 4 == 1)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val(s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* non-canonical trailing bits */
        return -1;
    return (long)o;
}

int util_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

int util_parse_i64(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 19)
        return -1;
    size_t i = 0;
    int neg = 0;
    if (s[0] == '-') {
        neg = 1;
        i = 1;
        if (n == 1)
            return -1;
    }
    int64_t v = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

void util_thread_name(const char *name)
{
    char n[16];
    snprintf(n, sizeof(n), "bs-%s", name);
    pthread_setname_np(pthread_self(), n); /* only cosmetic: a failure changes nothing */
}
