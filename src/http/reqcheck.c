#include "http/reqcheck.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* ---- the request head ---- */

/* n bytes at s equal the lower-case literal lit, case-insensitively. */
static int name_is(const char *s, size_t n, const char *lit)
{
    size_t ll = strlen(lit);
    if (n != ll)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != lit[i])
            return 0;
    }
    return 1;
}

reqcheck_head_t reqcheck_head(const char *buf, size_t len, reqcheck_head_info_t *info)
{
    size_t p = 0;
    /* One empty line before the request line is tolerated (RFC 9112 2.2; some
     * clients send CRLF after a POST body), as picohttpparser does; CRLF only. */
    if (len >= 1 && buf[0] == '\n')
        return REQCHECK_BARE_LF;
    if (len >= 1 && buf[0] == '\r') {
        if (len < 2)
            return REQCHECK_INCOMPLETE;
        if (buf[1] != '\n')
            return REQCHECK_BARE_CR;
        p = 2;
    }
    size_t start = p, line_len = 0;
    int line_no = 0, te = 0, host = 0;
    const char *cl = NULL;
    size_t cl_len = 0;
    for (;; line_no++) {
        size_t ls = p;
        while (p < len && buf[p] != '\r' && buf[p] != '\n') {
            unsigned char c = (unsigned char)buf[p];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return REQCHECK_CONTROL;
            p++;
        }
        if (p >= len)
            return REQCHECK_INCOMPLETE;
        if (buf[p] == '\n')
            return REQCHECK_BARE_LF;
        if (p + 1 >= len)
            return REQCHECK_INCOMPLETE;
        if (buf[p + 1] != '\n')
            return REQCHECK_BARE_CR;
        size_t le = p;
        p += 2;
        if (line_no == 0) {
            if (le == ls)
                return REQCHECK_BAD_LINE; /* a second empty line: no request line */
            line_len = le - ls;
            continue;
        }
        if (le == ls)
            break; /* the blank line that ends the head */
        if (buf[ls] == ' ' || buf[ls] == '\t')
            return REQCHECK_OBS_FOLD;
        const char *colon = memchr(buf + ls, ':', le - ls);
        if (colon == NULL || colon == buf + ls)
            return REQCHECK_BAD_LINE;
        size_t nl = (size_t)(colon - (buf + ls));
        const char *v = colon + 1, *ve = buf + le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (name_is(buf + ls, nl, "content-length")) {
            /* The same value twice frames the body one way only (RFC 9110 8.6);
             * different values are two framings. */
            if (cl != NULL && (cl_len != (size_t)(ve - v) || memcmp(cl, v, cl_len) != 0))
                return REQCHECK_CL_CONFLICT;
            cl = v;
            cl_len = (size_t)(ve - v);
        } else if (name_is(buf + ls, nl, "transfer-encoding")) {
            te++;
        } else if (name_is(buf + ls, nl, "host")) {
            host++;
        }
    }
    if (te > 0 && cl != NULL)
        return REQCHECK_CL_AND_TE;
    if (te > 1)
        return REQCHECK_TE_REPEATED;
    if (host > 1)
        return REQCHECK_HOST_REPEATED;
    /* RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host. */
    if (host == 0 && line_len >= 8 && memcmp(buf + start + line_len - 8, "HTTP/1.1", 8) == 0)
        return REQCHECK_HOST_MISSING;
    if (info != NULL) {
        info->start = start;
        info->len = p;
        info->line_len = line_len;
    }
    return REQCHECK_OK;
}

const char *reqcheck_head_message(reqcheck_head_t r)
{
    switch (r) {
    case REQCHECK_OK:
        return "";
    case REQCHECK_INCOMPLETE:
        return "The request could not be read as sent.";
    case REQCHECK_BARE_LF:
        return "Every line of the request must end with CRLF, not a bare LF.";
    case REQCHECK_BARE_CR:
        return "The request has a CR that does not end a line.";
    case REQCHECK_CONTROL:
        return "The request head has a control character.";
    case REQCHECK_OBS_FOLD:
        return "A header line starts with a space or tab (obs-fold): send each header on one line.";
    case REQCHECK_BAD_LINE:
        return "The request has a header line without a name.";
    case REQCHECK_CL_CONFLICT:
        return "The request has Content-Length headers with different values.";
    case REQCHECK_CL_AND_TE:
        return "The request has both Content-Length and Transfer-Encoding: send only one.";
    case REQCHECK_TE_REPEATED:
        return "The request has more than one Transfer-Encoding header.";
    case REQCHECK_HOST_REPEATED:
        return "The request has more than one Host header.";
    case REQCHECK_HOST_MISSING:
        return "An HTTP/1.1 request needs a Host header.";
    }
    return "The request is not valid.";
}

/* ---- the path ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

reqcheck_path_t reqcheck_path(const char *t, size_t len, char *out, size_t *out_len)
{
    if (len == 0 || t[0] != '/')
        return REQCHECK_PATH_NOT_ORIGIN;
    size_t o = 0, i = 1, seg = 1;
    out[o++] = '/';
    for (;;) {
        if (i == len || t[i] == '/') {
            /* The segment just decoded, [seg, o): a dot-segment, however it was
             * spelled, would make the route depend on who resolves it. */
            size_t sl = o - seg;
            if ((sl == 1 && out[seg] == '.') || (sl == 2 && out[seg] == '.' && out[seg + 1] == '.'))
                return REQCHECK_PATH_DOT_SEGMENT;
            if (i == len)
                break;
            out[o++] = '/';
            i++;
            seg = o;
            continue;
        }
        unsigned char c = (unsigned char)t[i];
        if (c == '%') {
            int hi = i + 2 < len ? hexval(t[i + 1]) : -1, lo = i + 2 < len ? hexval(t[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return REQCHECK_PATH_BAD_ESCAPE;
            c = (unsigned char)(hi << 4 | lo);
            i += 3;
            /* An encoded slash is data to one reader and a separator to another. */
            if (c == '/')
                return REQCHECK_PATH_ENCODED_SLASH;
        } else {
            i++;
        }
        if (c == '\\')
            return REQCHECK_PATH_ENCODED_SLASH;
        if (c < 0x20 || c == 0x7f)
            return REQCHECK_PATH_CONTROL;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    *out_len = o;
    return REQCHECK_PATH_OK;
}

const char *reqcheck_path_message(reqcheck_path_t r)
{
    switch (r) {
    case REQCHECK_PATH_OK:
        return "";
    case REQCHECK_PATH_NOT_ORIGIN:
        return "The request target must be a path starting with '/'.";
    case REQCHECK_PATH_BAD_ESCAPE:
        return "The request path has a '%' that is not followed by two hex digits.";
    case REQCHECK_PATH_ENCODED_SLASH:
        return "The request path has an encoded slash (%2F) or a backslash.";
    case REQCHECK_PATH_DOT_SEGMENT:
        return "The request path has a '.' or '..' segment.";
    case REQCHECK_PATH_CONTROL:
        return "The request path has a control character.";
    }
    return "The request path is not valid.";
}

/* ---- addresses ---- */

/* An address as 16 bytes; IPv4 as IPv4-mapped IPv6, so that both compare alike. */
typedef struct {
    unsigned char b[16];
} addr_t;

static int parse_addr(const char *s, size_t len, addr_t *a)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    if (len == 0 || len >= sizeof(tmp) || memchr(s, '\0', len) != NULL)
        return -1;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    memset(a->b, 0, sizeof(a->b));
    if (inet_pton(AF_INET, tmp, a->b + 12) == 1) {
        a->b[10] = a->b[11] = 0xff;
        return 0;
    }
    return inet_pton(AF_INET6, tmp, a->b) == 1 ? 0 : -1;
}

static int addr_text(const addr_t *a, char *out, size_t cap)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const char *r = memcmp(a->b, mapped, 12) == 0 ? inet_ntop(AF_INET, a->b + 12, out, (socklen_t)cap)
                                                  : inet_ntop(AF_INET6, a->b, out, (socklen_t)cap);
    return r != NULL ? 0 : -1;
}

int reqcheck_ip_canonical(const char *s, size_t len, char *out, size_t cap)
{
    addr_t a;
    return parse_addr(s, len, &a) == 0 ? addr_text(&a, out, cap) : -1;
}

#define MAX_TRUSTED 128

/* Parses list into at most max addresses; entries that are not addresses are
 * skipped (the setting is documented as a list of IPs). */
static size_t parse_list(const char *list, addr_t *out, size_t max)
{
    size_t n = 0;
    for (const char *p = list; *p && n < max;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if (e > p && parse_addr(p, (size_t)(e - p), &out[n]) == 0)
            n++;
        p = e;
    }
    return n;
}

static int in_set(const addr_t *set, size_t n, const addr_t *a)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(set[i].b, a->b, sizeof(a->b)) == 0)
            return 1;
    return 0;
}

int reqcheck_ip_in_list(const char *list, const char *ip, size_t len)
{
    addr_t set[MAX_TRUSTED], a;
    if (parse_addr(ip, len, &a) != 0)
        return 0;
    return in_set(set, parse_list(list, set, MAX_TRUSTED), &a);
}

int reqcheck_forwarded_for(const char *list, size_t len, const char *trusted, char *out, size_t cap)
{
    addr_t set[MAX_TRUSTED], last = {{0}};
    size_t nt = parse_list(trusted, set, MAX_TRUSTED);
    int seen = 0;
    size_t end = len;
    for (;;) {
        size_t start = end;
        while (start > 0 && list[start - 1] != ',')
            start--;
        size_t a = start, b = end;
        while (a < b && (list[a] == ' ' || list[a] == '\t'))
            a++;
        while (b > a && (list[b - 1] == ' ' || list[b - 1] == '\t'))
            b--;
        if (b > a) {
            addr_t x;
            /* Each entry was written by the trusted hop to its right: one that is
             * not an address leaves the client unknown. */
            if (parse_addr(list + a, b - a, &x) != 0)
                return -1;
            if (!in_set(set, nt, &x))
                return addr_text(&x, out, cap) == 0 ? 1 : -1;
            last = x;
            seen = 1;
        }
        if (start == 0)
            break;
        end = start - 1;
    }
    if (!seen)
        return 0;
    return addr_text(&last, out, cap) == 0 ? 1 : -1;
}
