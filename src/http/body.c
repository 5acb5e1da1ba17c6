/*
 * Request bodies into JSON objects: JSON, multipart/form-data (the SDK's
 * @jsonPayload part and plain fields) and application/x-www-form-urlencoded.
 * Pure: no I/O, no globals, so the parsers can be fuzzed.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "http/body.h"

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

/* Percent-decodes s (plus as space when form) into the arena. */
static char *url_decode(arena_t *a, const char *s, size_t n, int form, size_t *out_len)
{
    char *o = arena_alloc(a, n + 1);
    if (o == NULL)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n + 0 && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            o[j++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else if (s[i] == '+' && form) {
            o[j++] = ' ';
        } else {
            o[j++] = s[i];
        }
    }
    o[j] = '\0';
    if (out_len)
        *out_len = j;
    return o;
}

int body_parse_pairs(arena_t *a, json_t *obj, const char *s, size_t n, int arrays)
{
    size_t i = 0;
    int bad = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && s[e] != '&')
            e++;
        size_t eq = i;
        while (eq < e && s[eq] != '=')
            eq++;
        if (eq > i) {
            size_t kl = 0, vl = 0;
            char *k = url_decode(a, s + i, eq - i, 1, &kl);
            char *v = eq < e ? url_decode(a, s + eq + 1, e - eq - 1, 1, &vl) : arena_strdup(a, "");
            if (k != NULL && v != NULL &&
                (!util_valid_utf8(k, kl) || !util_valid_utf8(v, vl) || strlen(k) != kl || strlen(v) != vl)) {
                bad++;
            } else if (k != NULL && v != NULL) {
                json_t *old = json_object_get(obj, k);
                if (arrays && old != NULL) {
                    if (!json_is_array(old)) {
                        json_t *arr = json_array();
                        json_array_append(arr, old);
                        json_object_set_new(obj, k, arr);
                        old = arr;
                    }
                    json_array_append_new(old, json_string(v));
                } else {
                    json_object_set_new(obj, k, json_string(v));
                }
            }
        }
        i = e + 1;
    }
    return bad;
}

static size_t json_depth(const char *p, size_t n)
{
    size_t depth = 0, max = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
        } else if (c == '}' || c == ']') {
            if (depth)
                depth--;
        }
    }
    return max;
}

static json_t *parse_json(const char *p, size_t n, size_t max_depth, bs_error_t *err)
{
    if (json_depth(p, n) > max_depth) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The JSON body is nested too deeply (limit %zu levels).",
                     max_depth);
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(p, n, JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid JSON body at line %d, column %d: %s.", jerr.line,
                     jerr.column, jerr.text);
        return NULL;
    }
    return v;
}

static const char *memmem_s(const char *h, size_t hn, const char *n, size_t nn)
{
    return memmem(h, hn, n, nn);
}

static json_t *parse_multipart(arena_t *arena, const char *ctype, size_t clen, const char *body, size_t n,
                               size_t max_depth, bs_error_t *err)
{
    const char *bp = strcasestr(ctype, "boundary=");
    if (bp == NULL || (size_t)(bp - ctype) >= clen) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The multipart body has no boundary.");
        return NULL;
    }
    bp += 9;
    size_t bl = 0;
    int quoted = *bp == '"';
    if (quoted)
        bp++;
    while (bp + bl < ctype + clen && bp[bl] != ';' && bp[bl] != '"' && bp[bl] != ' ')
        bl++;
    if (bl == 0 || bl > 200) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The multipart boundary is invalid.");
        return NULL;
    }
    char *delim = arena_printf(arena, "--%.*s", (int)bl, bp);
    size_t dl = bl + 2;
    json_t *out = json_object();
    if (delim == NULL) {
        json_decref(out);
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    const char *p = memmem_s(body, n, delim, dl);
    if (p == NULL)
        goto bad;
    for (;;) {
        p += dl;
        size_t rest = n - (size_t)(p - body);
        if (rest >= 2 && p[0] == '-' && p[1] == '-')
            break; /* closing delimiter */
        if (rest < 2 || p[0] != '\r' || p[1] != '\n')
            goto bad;
        p += 2;
        rest -= 2;
        const char *hend = memmem_s(p, rest, "\r\n\r\n", 4);
        if (hend == NULL)
            goto bad;
        /* Headers of the part: we need the name and whether it is a file. */
        char *hdrs = arena_strndup(arena, p, (size_t)(hend - p));
        const char *data = hend + 4;
        const char *next = memmem_s(data, n - (size_t)(data - body), delim, dl);
        if (next == NULL || next - data < 2)
            goto bad;
        size_t dlen = (size_t)(next - data) - 2; /* minus the CRLF before the delimiter */
        char *np = hdrs ? strcasestr(hdrs, "name=\"") : NULL;
        if (np == NULL)
            goto bad;
        np += 6;
        char *ne = strchr(np, '"');
        if (ne == NULL)
            goto bad;
        *ne = '\0';
        if (strcasestr(ne + 1, "filename=") != NULL) {
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         "File uploads are not supported yet by this Basalt version (part \"%s\").", np);
            json_decref(out);
            return NULL;
        }
        if (strcmp(np, "@jsonPayload") == 0) {
            json_t *j = parse_json(data, dlen, max_depth, err);
            if (j == NULL) {
                json_decref(out);
                return NULL;
            }
            if (!json_is_object(j)) {
                json_decref(j);
                bs_error_set(err, BS_ERR_BAD_REQUEST, "The @jsonPayload part must hold a JSON object.");
                json_decref(out);
                return NULL;
            }
            json_object_update(out, j);
            json_decref(j);
        } else {
            if (!util_valid_utf8(data, dlen)) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "The multipart field \"%s\" is not valid UTF-8.", np);
                json_decref(out);
                return NULL;
            }
            json_t *v = json_stringn(data, dlen);
            json_t *old = json_object_get(out, np);
            if (old != NULL) {
                if (!json_is_array(old)) {
                    json_t *arr = json_array();
                    json_array_append(arr, old);
                    json_object_set_new(out, np, arr);
                    old = arr;
                }
                json_array_append_new(old, v);
            } else {
                json_object_set_new(out, np, v);
            }
        }
        p = next;
    }
    return out;
bad:
    json_decref(out);
    bs_error_set(err, BS_ERR_BAD_REQUEST, "The multipart body is malformed.");
    return NULL;
}

json_t *body_parse(arena_t *arena, const char *ctype, size_t ctype_len, const char *body, size_t n,
                   size_t max_depth, bs_error_t *err)
{
    if (body == NULL || n == 0)
        return json_object();
    char ct[256] = "";
    if (ctype != NULL)
        snprintf(ct, sizeof(ct), "%.*s", (int)(ctype_len < 255 ? ctype_len : 255), ctype);
    if (ctype == NULL || strncasecmp(ct, "application/json", 16) == 0) {
        json_t *v = parse_json(body, n, max_depth, err);
        if (v != NULL && !json_is_object(v)) {
            json_decref(v);
            bs_error_set(err, BS_ERR_BAD_REQUEST, "The request body must be a JSON object.");
            return NULL;
        }
        return v;
    }
    if (strncasecmp(ct, "multipart/form-data", 19) == 0)
        return parse_multipart(arena, ct, strlen(ct), body, n, max_depth, err);
    if (strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0) {
        json_t *o = json_object();
        if (body_parse_pairs(arena, o, body, n, 1) != 0) {
            json_decref(o);
            bs_error_set(err, BS_ERR_BAD_REQUEST, "The form body is not valid UTF-8 (or holds a NUL byte).");
            return NULL;
        }
        return o;
    }
    bs_error_set(err, BS_ERR_UNSUPPORTED_MEDIA,
                 "Unsupported content type \"%s\"; send application/json or multipart/form-data.", ct);
    return NULL;
}
