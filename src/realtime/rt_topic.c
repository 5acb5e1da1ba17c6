#include "realtime/rt_topic.h"

#include <stdlib.h>
#include <string.h>

#include "base/util.h"

long rt_find_control(const char *p, size_t n, int allow_space)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch >= 0x20 && ch != 0x7F)
            continue;
        if (allow_space && (ch == '\t' || ch == '\n' || ch == '\r'))
            continue;
        return (long)i;
    }
    return -1;
}

void rt_topic_clear(rt_topic_t *t)
{
    json_decref(t->query);
    json_decref(t->headers);
    t->query = t->headers = NULL;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) ('+' is a space, as in a form) into the arena; a bad
 * escape is kept as it is. *out_len gets the length (the result may hold NULs). */
static char *url_decode_n(arena_t *a, const char *s, size_t n, size_t *out_len)
{
    char *d = arena_alloc(a, n + 1);
    if (d == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
            d[k++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            d[k++] = s[i] == '+' ? ' ' : s[i];
        }
    }
    d[k] = '\0';
    *out_len = k;
    return d;
}

/* A key or a string value of the options: no control characters (see rt_topic.h). */
static int check_text(const char *what, const char *key, const char *p, size_t n, int allow_space,
                      bs_error_t *err)
{
    long at = rt_find_control(p, n, allow_space);
    if (at < 0)
        return 0;
    size_t kn = strlen(key);
    /* The key is named only when it can be shown as it is. */
    if (rt_find_control(key, kn, 0) >= 0) {
        key = "";
        kn = 0;
    }
    if (kn > 64) {
        kn = 64;
        while (kn > 0 && ((unsigned char)key[kn] & 0xC0) == 0x80)
            kn--;
    }
    bs_error_set(err, BS_ERR_BAD_REQUEST,
                 "Invalid topic options: %s \"%.*s\" contains a control character (U+%04X); control "
                 "characters are not allowed in realtime topics and options.",
                 what, (int)kn, key, (unsigned)(unsigned char)p[at]);
    return -1;
}

/* The options JSON into t->query and t->headers. */
static int parse_options(const char *text, size_t n, rt_topic_t *t, arena_t *a, bs_error_t *err)
{
    if (rt_find_control(text, n, 1) >= 0) {
        bs_error_set(
            err, BS_ERR_BAD_REQUEST,
            "Invalid topic options: control characters are not allowed in realtime topics and options.");
        return -1;
    }
    json_error_t jerr;
    json_t *o = json_loadb(text, n, 0, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        bs_error_set(err, BS_ERR_BAD_REQUEST,
                     "Invalid topic options: expected a JSON object {\"query\":{...},\"headers\":{...}}.");
        return -1;
    }
    json_t *qo = json_object_get(o, "query"), *ho = json_object_get(o, "headers");
    t->query = json_object();
    t->headers = json_object();
    const char *k;
    json_t *v;
    int rc = 0;
    /* Query and header values are strings, as they would be in a request. */
    json_object_foreach(qo, k, v)
    {
        if (check_text("the query parameter name", k, k, strlen(k), 0, err) != 0) {
            rc = -1;
            break;
        }
        if (json_is_string(v)) {
            if (check_text("the query parameter", k, json_string_value(v), json_string_length(v),
                           strcmp(k, "filter") == 0, err) != 0) {
                rc = -1;
                break;
            }
            json_object_set(t->query, k, v);
        } else if (!json_is_null(v)) {
            /* The JSON text escapes every control character: nothing to check. */
            char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            if (d)
                json_object_set_new(t->query, k, json_string(d));
            free(d);
        }
    }
    if (rc == 0) {
        json_object_foreach(ho, k, v)
        {
            if (check_text("the header name", k, k, strlen(k), 0, err) != 0) {
                rc = -1;
                break;
            }
            if (!json_is_string(v))
                continue;
            if (check_text("the header", k, json_string_value(v), json_string_length(v), 0, err) != 0) {
                rc = -1;
                break;
            }
            char *lk = arena_strdup(a, k);
            for (char *p = lk; p && *p; p++)
                *p = *p == '-' ? '_' : (char)((*p >= 'A' && *p <= 'Z') ? *p - 'A' + 'a' : *p);
            if (lk)
                json_object_set(t->headers, lk, v);
        }
    }
    json_decref(o);
    return rc;
}

int rt_topic_parse(arena_t *a, const char *topic, size_t tlen, size_t max_len, rt_topic_t *out,
                   bs_error_t *err)
{
    memset(out, 0, sizeof(*out));
    if (tlen == 0 || tlen > max_len) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "A topic must be 1 to %zu bytes long.", max_len);
        return -1;
    }
    /* Before anything echoes the topic: it becomes the SSE "event:" line. */
    if (rt_find_control(topic, tlen, 0) >= 0) {
        bs_error_set(
            err, BS_ERR_BAD_REQUEST,
            "Invalid topic: control characters (such as CR, LF, tab or NUL) are not allowed in realtime "
            "topics; URL-encode the options.");
        return -1;
    }
    const char *q = memchr(topic, '?', tlen);
    size_t base_len = q ? (size_t)(q - topic) : tlen;
    const char *slash = memchr(topic, '/', base_len);
    /* At most 200 bytes of it in messages, cut at a character boundary. */
    size_t cut = base_len > 200 ? 200 : base_len;
    while (cut < base_len && cut > 0 && ((unsigned char)topic[cut] & 0xC0) == 0x80)
        cut--;
    int shown = (int)cut;
    if (slash == NULL && q == NULL) {
        out->coll = topic;
        out->coll_len = tlen;
        out->custom = 1;
        return 0;
    }
    if (slash == NULL || slash == topic || slash + 1 == topic + base_len) {
        bs_error_set(err, BS_ERR_BAD_REQUEST,
                     "Invalid topic \"%.*s\": expected \"collection/*\" or \"collection/recordId\".", shown,
                     topic);
        return -1;
    }
    out->coll = topic;
    out->coll_len = (size_t)(slash - topic);
    size_t idn = base_len - (size_t)(slash + 1 - topic);
    if (!(idn == 1 && slash[1] == '*')) {
        if (!util_valid_id(slash + 1, idn)) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid topic \"%.*s\": bad record id.", shown, topic);
            return -1;
        }
        out->record_id = arena_strndup(a, slash + 1, idn);
        if (out->record_id == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
    }
    if (q == NULL)
        return 0;
    /* The parameters after '?': only "options" means something (the last one wins). */
    const char *opt = NULL;
    size_t optn = 0;
    const char *p = q + 1, *end = topic + tlen;
    while (p < end) {
        const char *e = memchr(p, '&', (size_t)(end - p));
        if (e == NULL)
            e = end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        size_t kn;
        char *k = eq ? url_decode_n(a, p, (size_t)(eq - p), &kn) : NULL;
        if (k != NULL && kn == 7 && memcmp(k, "options", 7) == 0) {
            opt = url_decode_n(a, eq + 1, (size_t)(e - eq - 1), &optn);
            if (opt == NULL) {
                bs_error_set(err, BS_ERR_NOMEM, NULL);
                return -1;
            }
        }
        p = e + 1;
    }
    if (opt == NULL)
        return 0;
    if (!util_valid_utf8(opt, optn)) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid topic options: they must be UTF-8 JSON.");
        return -1;
    }
    if (parse_options(opt, optn, out, a, err) != 0) {
        rt_topic_clear(out);
        return -1;
    }
    return 0;
}
