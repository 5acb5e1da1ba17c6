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
                    json_array_append_new(old, json_stringn(v, vl));
                } else {
                    json_object_set_new(obj, k, json_stringn(v, vl));
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

static int is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* What a part's headers say: its field name and whether it is a file. */
typedef struct {
    char *name; /* arena, NUL-terminated, no NUL inside */
    int file;
    char *filename; /* arena: the file's original name ("" when not given) */
} part_info_t;

/* Parses a Content-Disposition value (RFC 7578 4.2, RFC 6266 4.1):
 *   form-data *( OWS ";" OWS token OWS "=" OWS ( token / quoted-string ) )
 * Parameter names are case-insensitive and compared whole (so "filename" is not
 * "name"); quoted strings may hold quoted pairs. Returns 0, or -1 with err. */
static int parse_disposition(arena_t *a, const char *v, size_t n, part_info_t *out, bs_error_t *err)
{
    size_t i = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    size_t t = i;
    while (i < n && is_tchar(v[i]))
        i++;
    if (i - t != 9 || strncasecmp(v + t, "form-data", 9) != 0) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "A multipart part's Content-Disposition must be form-data.");
        return -1;
    }
    for (;;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i == n)
            break;
        if (v[i] != ';')
            goto bad;
        i++;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        size_t ps = i;
        while (i < n && is_tchar(v[i]))
            i++;
        size_t pn = i - ps;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (pn == 0 || i == n || v[i] != '=')
            goto bad;
        i++;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        char *val = arena_alloc(a, n - i + 1);
        if (val == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        size_t vl = 0;
        if (i < n && v[i] == '"') {
            i++;
            for (;;) {
                if (i == n)
                    goto bad; /* unterminated */
                if (v[i] == '"')
                    break;
                if (v[i] == '\\' && i + 1 < n)
                    i++;
                val[vl++] = v[i++];
            }
            i++;
        } else {
            while (i < n && is_tchar(v[i]))
                val[vl++] = v[i++];
            if (vl == 0)
                goto bad;
        }
        val[vl] = '\0';
        const char *pname = v + ps;
        if (pn == 4 && strncasecmp(pname, "name", 4) == 0) {
            if (out->name != NULL) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "A multipart part has two names.");
                return -1;
            }
            if (vl == 0 || memchr(val, '\0', vl) != NULL || !util_valid_utf8(val, vl))
                goto bad;
            out->name = val;
        } else if (pn == 8 && strncasecmp(pname, "filename", 8) == 0) {
            out->file = 1;
            if (out->filename == NULL || out->filename[0] == '\0')
                out->filename = val;
        } else if (pn == 9 && strncasecmp(pname, "filename*", 9) == 0) {
            /* RFC 5987: charset'lang'percent-encoded; it wins over filename. */
            out->file = 1;
            char *q = strchr(val, '\'');
            char *q2 = q ? strchr(q + 1, '\'') : NULL;
            if (q2 != NULL)
                out->filename = url_decode(a, q2 + 1, strlen(q2 + 1), 0, NULL);
        }
    }
    if (out->name == NULL) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "A multipart part has no name in its Content-Disposition.");
        return -1;
    }
    return 0;
bad:
    bs_error_set(err, BS_ERR_BAD_REQUEST, "A multipart part has a malformed Content-Disposition header.");
    return -1;
}

/* Reads a part's header block (lines separated by CRLF, without the blank line):
 * exactly one Content-Disposition, no folded lines. Returns 0 or -1 with err. */
static int parse_part_headers(arena_t *a, const char *h, size_t n, part_info_t *out, bs_error_t *err)
{
    int seen = 0;
    size_t i = 0;
    while (i < n) {
        const char *eol = memmem_s(h + i, n - i, "\r\n", 2);
        size_t ll = eol ? (size_t)(eol - (h + i)) : n - i;
        const char *line = h + i;
        i += ll + (eol ? 2 : 0);
        if (ll == 0)
            continue;
        if (line[0] == ' ' || line[0] == '\t' || memchr(line, '\0', ll) != NULL) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "A multipart part has a malformed header.");
            return -1;
        }
        const char *colon = memchr(line, ':', ll);
        if (colon == NULL) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "A multipart part has a malformed header.");
            return -1;
        }
        size_t nl = (size_t)(colon - line);
        if (nl != 19 || strncasecmp(line, "Content-Disposition", 19) != 0)
            continue;
        if (seen++) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "A multipart part has two Content-Disposition headers.");
            return -1;
        }
        if (parse_disposition(a, colon + 1, ll - nl - 1, out, err) != 0)
            return -1;
    }
    if (!seen) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "A multipart part has no Content-Disposition header.");
        return -1;
    }
    return 0;
}

static json_t *parse_multipart(arena_t *arena, const char *ctype, size_t clen, const char *body, size_t n,
                               size_t max_depth, size_t max_files, body_file_t **files, bs_error_t *err)
{
    size_t nfiles = 0;
    body_file_t **ftail = files;
    /* The boundary parameter itself, not the tail of another one ("xboundary="). */
    const char *bp = strcasestr(ctype, "boundary=");
    while (bp != NULL && bp > ctype && bp[-1] != ';' && bp[-1] != ' ' && bp[-1] != '\t')
        bp = strcasestr(bp + 1, "boundary=");
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
        const char *data = hend + 4;
        const char *next = memmem_s(data, n - (size_t)(data - body), delim, dl);
        if (next == NULL || next - data < 2)
            goto bad;
        size_t dlen = (size_t)(next - data) - 2; /* minus the CRLF before the delimiter */
        /* Headers of the part: we need the name and whether it is a file. */
        part_info_t part = {0};
        if (parse_part_headers(arena, p, (size_t)(hend - p), &part, err) != 0) {
            json_decref(out);
            return NULL;
        }
        const char *np = part.name;
        /* A file part without a file name is a plain value, as Go's multipart reader
         * (and so PocketBase) takes it: a browser's empty file input. */
        if (part.file && part.filename != NULL && part.filename[0] != '\0') {
            if (files == NULL) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "File uploads are not accepted here (part \"%s\").",
                             np);
                json_decref(out);
                return NULL;
            }
            if (++nfiles > max_files) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "Too many files in one request (limit %zu).",
                             max_files);
                json_decref(out);
                return NULL;
            }
            body_file_t *bf = arena_calloc(arena, sizeof(*bf));
            if (bf == NULL) {
                bs_error_set(err, BS_ERR_NOMEM, NULL);
                json_decref(out);
                return NULL;
            }
            bf->field = np;
            bf->filename = part.filename;
            bf->data = data;
            bf->len = dlen;
            *ftail = bf;
            ftail = &bf->next;
            p = next;
            continue;
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
    return body_parse_upload(arena, ctype, ctype_len, body, n, max_depth, 0, NULL, err);
}

json_t *body_parse_upload(arena_t *arena, const char *ctype, size_t ctype_len, const char *body, size_t n,
                          size_t max_depth, size_t max_files, body_file_t **files, bs_error_t *err)
{
    if (files != NULL)
        *files = NULL;
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
        return parse_multipart(arena, ct, strlen(ct), body, n, max_depth, max_files, files, err);
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
