/* The HTTP request line and headers as Basalt sees them: the strict head check
 * (framing, line ends, folding, Host), the request target's decoding, the route
 * match of what it accepts, and the X-Forwarded-For walk over every line of the
 * header. Invariants that a bug would break abort (libFuzzer reports them). */
#include <stdlib.h>
#include <string.h>

#include "api/routes.h"
#include "http/reqcheck.h"

#define TRUSTED "127.0.0.1, ::1,10.0.0.1 ,bogus"

#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c))                                                                                            \
            abort();                                                                                         \
    } while (0)

static int is_trusted(const char *ip)
{
    return reqcheck_ip_in_list(TRUSTED, ip, strlen(ip));
}

/* A decoded path that was accepted: starts with '/', no dot-segment, no backslash,
 * no control character; never longer than the raw target. */
static void check_path(const char *raw, size_t rawlen, const char *p, size_t n)
{
    CHECK(n <= rawlen && n >= 1 && p[0] == '/' && p[n] == '\0');
    size_t seg = 1;
    for (size_t i = 1; i <= n; i++) {
        if (i == n || p[i] == '/') {
            size_t sl = i - seg;
            CHECK(!(sl == 1 && p[seg] == '.') && !(sl == 2 && p[seg] == '.' && p[seg + 1] == '.'));
            seg = i + 1;
            continue;
        }
        unsigned char c = (unsigned char)p[i];
        CHECK(c >= 0x20 && c != 0x7f && c != '\\');
    }
    /* Without escapes, decoding changes nothing, so every separator was raw. */
    if (memchr(raw, '%', rawlen) == NULL)
        CHECK(n == rawlen && memcmp(raw, p, n) == 0);
}

static void check_route(const char *method, const char *path)
{
    arena_t a;
    arena_init(&a, 1024);
    char *params[API_ROUTE_MAX_PARAMS] = {0};
    int matched = 0;
    int i = api_route_find(&a, method, path, params, &matched);
    if (i >= 0) {
        CHECK(matched);
        for (int k = 0; k < API_ROUTE_MAX_PARAMS && params[k] != NULL; k++)
            CHECK(params[k][0] != '\0' && strchr(params[k], '/') == NULL);
    }
    arena_free(&a);
}

static void check_xff(const char *list, size_t len)
{
    char out[64];
    int r = reqcheck_forwarded_for(list, len, TRUSTED, out, sizeof(out));
    CHECK(r >= -1 && r <= 1);
    if (r == 1) {
        char again[64];
        /* The answer is an address in canonical form. */
        CHECK(reqcheck_ip_canonical(out, strlen(out), again, sizeof(again)) == 0 && strcmp(out, again) == 0);
        /* A trusted proxy is the answer only when every entry was one; the
         * rightmost entry then is trusted too. */
        if (is_trusted(out)) {
            size_t e = len;
            while (e > 0) {
                size_t s = e;
                while (s > 0 && list[s - 1] != ',')
                    s--;
                size_t a = s, b = e;
                while (a < b && (list[a] == ' ' || list[a] == '\t'))
                    a++;
                while (b > a && (list[b - 1] == ' ' || list[b - 1] == '\t'))
                    b--;
                if (b > a) {
                    char ip[64];
                    CHECK(reqcheck_ip_canonical(list + a, b - a, ip, sizeof(ip)) == 0 && is_trusted(ip));
                    break;
                }
                e = s > 0 ? s - 1 : 0;
                if (s == 0)
                    break;
            }
        }
    }
}

/* Parses what reqcheck_head accepted the way a reader of the same rules would: the
 * request line's method and target, and every X-Forwarded-For line. */
static void walk_head(const char *buf, const reqcheck_head_info_t *info)
{
    const char *line = buf + info->start, *end = buf + info->len;
    const char *sp1 = memchr(line, ' ', info->line_len);
    if (sp1 != NULL) {
        const char *rest = sp1 + 1, *le = line + info->line_len;
        const char *sp2 = memchr(rest, ' ', (size_t)(le - rest));
        size_t tl = (size_t)((sp2 ? sp2 : le) - rest);
        const char *q = memchr(rest, '?', tl);
        size_t pl = q ? (size_t)(q - rest) : tl;
        char *method = strndup(line, (size_t)(sp1 - line));
        char *out = malloc(pl + 1);
        size_t n = 0;
        if (method != NULL && out != NULL && reqcheck_path(rest, pl, out, &n) == REQCHECK_PATH_OK) {
            check_path(rest, pl, out, n);
            check_route(method, out);
        }
        free(out);
        free(method);
    }
    /* Every header line after the request line: "name: value" CRLF, until the blank
     * line (the check guaranteed CRLF endings and no folding). */
    char *xff = malloc(info->len + 1);
    if (xff == NULL)
        return;
    size_t xl = 0;
    int lines = 0;
    const char *p = line + info->line_len + 2;
    while (p + 2 <= end) {
        const char *le = memchr(p, '\r', (size_t)(end - p));
        CHECK(le != NULL && le + 1 < end && le[1] == '\n');
        if (le == p)
            break;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        CHECK(colon != NULL && colon > p && *p != ' ' && *p != '\t');
        if ((size_t)(colon - p) == 15 && strncasecmp(p, "x-forwarded-for", 15) == 0) {
            if (lines++ > 0)
                xff[xl++] = ',';
            memcpy(xff + xl, colon + 1, (size_t)(le - colon - 1));
            xl += (size_t)(le - colon - 1);
        }
        p = le + 2;
    }
    if (lines > 0)
        check_xff(xff, xl);
    free(xff);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *buf = (const char *)data;
    reqcheck_head_info_t info;
    reqcheck_head_t r = reqcheck_head(buf, size, &info);
    CHECK(reqcheck_head_message(r)[0] != '\0' || r == REQCHECK_OK);
    if (r == REQCHECK_OK) {
        CHECK(info.start <= 2 && info.len <= size && info.start + info.line_len + 2 <= info.len);
        walk_head(buf, &info);
    }
    /* The whole input as a target and as an address list too: more of each
     * function's input space than well-formed heads reach. */
    char *out = malloc(size + 1);
    size_t n = 0;
    if (out != NULL && reqcheck_path(buf, size, out, &n) == REQCHECK_PATH_OK)
        check_path(buf, size, out, n);
    free(out);
    check_xff(buf, size);
    return 0;
}
