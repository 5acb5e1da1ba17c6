/*
 * File names, sniffed types and thumb specs (see fileinfo.h). Pure.
 */
#include "files/fileinfo.h"

#include <string.h>
#include <strings.h>

#include "base/util.h"

static int has(const unsigned char *d, size_t n, size_t off, const char *sig, size_t sl)
{
    return n >= off + sl && memcmp(d + off, sig, sl) == 0;
}

/* Whether the first n bytes hold "<tag" case-insensitively after optional space,
 * a BOM, comments or an XML prolog: used for SVG and HTML, which have no fixed
 * signature. */
static int text_has_tag(const unsigned char *d, size_t n, const char *tag)
{
    size_t tl = strlen(tag);
    for (size_t i = 0; i + tl <= n; i++)
        if (d[i] == '<' && strncasecmp((const char *)d + i + 1, tag + 1, tl - 1) == 0 &&
            (i + tl == n || d[i + tl] == ' ' || d[i + tl] == '>' || d[i + tl] == '\n' || d[i + tl] == '\r' ||
             d[i + tl] == '\t'))
            return 1;
    return 0;
}

const char *files_sniff(const void *data, size_t n)
{
    const unsigned char *d = data;
    if (n > FILES_SNIFF_BYTES)
        n = FILES_SNIFF_BYTES;
    if (has(d, n, 0, "\x89PNG\r\n\x1a\n", 8))
        return "image/png";
    if (has(d, n, 0, "\xff\xd8\xff", 3))
        return "image/jpeg";
    if (has(d, n, 0, "GIF87a", 6) || has(d, n, 0, "GIF89a", 6))
        return "image/gif";
    if (has(d, n, 0, "RIFF", 4) && has(d, n, 8, "WEBP", 4))
        return "image/webp";
    if (has(d, n, 0, "RIFF", 4) && has(d, n, 8, "WAVE", 4))
        return "audio/wav";
    if (has(d, n, 0, "RIFF", 4) && has(d, n, 8, "AVI ", 4))
        return "video/x-msvideo";
    if (has(d, n, 0, "%PDF-", 5))
        return "application/pdf";
    if (has(d, n, 0, "PK\x03\x04", 4))
        return "application/zip";
    if (has(d, n, 0, "\x1f\x8b", 2))
        return "application/gzip";
    if (has(d, n, 0, "7z\xbc\xaf\x27\x1c", 6))
        return "application/x-7z-compressed";
    if (has(d, n, 0, "II*\0", 4) || has(d, n, 0, "MM\0*", 4))
        return "image/tiff";
    if (has(d, n, 0, "BM", 2) && n >= 26 && d[14] >= 12 && d[15] == 0 && d[16] == 0 && d[17] == 0)
        return "image/bmp";
    if (has(d, n, 0, "\0\0\1\0", 4) && n >= 6 && (d[4] | d[5]) != 0)
        return "image/x-icon";
    if (has(d, n, 4, "ftyp", 4)) {
        if (has(d, n, 8, "avif", 4))
            return "image/avif";
        if (has(d, n, 8, "heic", 4) || has(d, n, 8, "heix", 4))
            return "image/heic";
        if (has(d, n, 8, "qt  ", 4))
            return "video/quicktime";
        return "video/mp4";
    }
    if (has(d, n, 0, "\x1a\x45\xdf\xa3", 4)) {
        for (size_t i = 4; i + 4 <= n; i++)
            if (memcmp(d + i, "webm", 4) == 0)
                return "video/webm";
        return "video/x-matroska";
    }
    if (has(d, n, 0, "OggS", 4))
        return "audio/ogg";
    if (has(d, n, 0, "fLaC", 4))
        return "audio/flac";
    if (has(d, n, 0, "ID3", 3) || (n >= 2 && d[0] == 0xff && (d[1] & 0xe0) == 0xe0))
        return "audio/mpeg";
    /* Text: no NUL and valid UTF-8 in the window (a multi-byte character cut at
     * the window's end is allowed). */
    if (memchr(d, 0, n) != NULL)
        return "application/octet-stream";
    size_t m = n;
    if (m == FILES_SNIFF_BYTES) {
        /* Back off to the start of a possibly cut UTF-8 sequence. */
        size_t k = 0;
        while (k < 3 && k < m && (d[m - 1 - k] & 0xc0) == 0x80)
            k++;
        if (k < m && d[m - 1 - k] >= 0xc0)
            m -= k + 1;
    }
    if (!util_valid_utf8((const char *)d, m))
        return "application/octet-stream";
    if (text_has_tag(d, n, "<svg"))
        return "image/svg+xml";
    if (text_has_tag(d, n, "<html") || text_has_tag(d, n, "<!doctype") || text_has_tag(d, n, "<script"))
        return "text/html; charset=utf-8";
    return "text/plain; charset=utf-8";
}

int files_is_thumbable(const char *mime)
{
    return strcmp(mime, "image/png") == 0 || strcmp(mime, "image/jpeg") == 0 ||
           strcmp(mime, "image/gif") == 0 || strcmp(mime, "image/webp") == 0;
}

/* The type without parameters, lower-cased, image/jpg as image/jpeg. */
static void base_type(const char *m, char out[128])
{
    size_t i = 0;
    while (m[i] && m[i] != ';' && m[i] != ' ' && i < 127) {
        out[i] = (char)(m[i] >= 'A' && m[i] <= 'Z' ? m[i] + 32 : m[i]);
        i++;
    }
    out[i] = '\0';
    if (strcmp(out, "image/jpg") == 0)
        strcpy(out, "image/jpeg");
}

int files_mime_allowed(const char *mime, const char *const *list, size_t n)
{
    char a[128], b[128];
    base_type(mime, a);
    for (size_t i = 0; i < n; i++) {
        base_type(list[i], b);
        if (strcmp(a, b) == 0)
            return 1;
    }
    return 0;
}

static const struct {
    const char *mime, *ext;
} exts[] = {
    {"image/png", ".png"},
    {"image/jpeg", ".jpg"},
    {"image/gif", ".gif"},
    {"image/webp", ".webp"},
    {"image/svg+xml", ".svg"},
    {"image/bmp", ".bmp"},
    {"image/tiff", ".tiff"},
    {"image/x-icon", ".ico"},
    {"image/avif", ".avif"},
    {"image/heic", ".heic"},
    {"application/pdf", ".pdf"},
    {"application/zip", ".zip"},
    {"application/gzip", ".gz"},
    {"video/mp4", ".mp4"},
    {"video/webm", ".webm"},
    {"audio/mpeg", ".mp3"},
    {"audio/ogg", ".ogg"},
    {"audio/wav", ".wav"},
    {"audio/flac", ".flac"},
    {"video/quicktime", ".mov"},
    {"text/plain; charset=utf-8", ".txt"},
    {"text/html; charset=utf-8", ".html"},
};

static int ext_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '*' || c == '-' || c == '+' || c == '=' || c == '#';
}

size_t files_unique_name(const char *original, size_t n, const char *mime, const char *rnd20, char *out)
{
    /* The base name only, as Go's multipart reader gives PocketBase (and a
     * backslash counts as a separator too: Windows clients may send C:\x\y.png). */
    for (size_t i = n; i > 0; i--)
        if (original[i - 1] == '/' || original[i - 1] == '\\') {
            original += i;
            n -= i;
            break;
        }
    if (n > 300) { /* PocketBase keeps the name's last 300 bytes */
        original += n - 300;
        n = 300;
    }
    /* The extension: from the last dot, or the one before it (".tar.gz"). */
    const char *last = NULL, *prev = NULL;
    for (size_t i = 0; i < n; i++)
        if (original[i] == '.') {
            prev = last;
            last = original + i;
        }
    const char *ext = prev ? prev : last;
    size_t base_len = ext ? (size_t)(ext - original) : n;
    char cext[24];
    size_t el = 0;
    cext[el++] = '.';
    if (ext != NULL) {
        /* Invalid characters out, dots trimmed at both ends; the last 20 kept. */
        char tmp[300];
        size_t tl = 0;
        for (const char *p = ext; p < original + n; p++)
            if (ext_char(*p))
                tmp[tl++] = *p;
        size_t s = 0;
        while (s < tl && tmp[s] == '.')
            s++;
        while (tl > s && tmp[tl - 1] == '.')
            tl--;
        if (tl - s > 19)
            s = tl - 19;
        while (s < tl && tmp[s] == '.') /* a cut may leave a leading dot */
            s++;
        memcpy(cext + 1, tmp + s, tl - s);
        el = 1 + (tl - s);
    }
    if (el == 1) {
        el = 0;
        for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++)
            if (strcmp(exts[i].mime, mime) == 0) {
                el = strlen(exts[i].ext);
                memcpy(cext, exts[i].ext, el);
            }
    }
    /* The base in snake_case: ASCII letters and digits, lower-cased; a word break
     * (any other byte, or a lower-to-upper change) becomes one '_'. */
    size_t o = 0;
    int pending = 0;
    char prevc = 0;
    for (size_t i = 0; i < base_len && o < 100; i++) {
        char c = original[i];
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum) {
            pending = o > 0;
            prevc = 0;
            continue;
        }
        int upper = c >= 'A' && c <= 'Z';
        if (upper && ((prevc >= 'a' && prevc <= 'z') || (prevc >= '0' && prevc <= '9')) && o > 0)
            pending = 1;
        if (pending && o < 99) {
            out[o++] = '_';
        }
        pending = 0;
        out[o++] = (char)(upper ? c + 32 : c);
        prevc = c;
    }
    while (o > 0 && out[o - 1] == '_')
        o--;
    if (o < 3) {
        memcpy(out + o, rnd20 + 10, 10);
        o += 10;
    }
    out[o++] = '_';
    memcpy(out + o, rnd20, 10);
    o += 10;
    memcpy(out + o, cext, el);
    o += el;
    out[o] = '\0';
    return o;
}

int files_name_ok(const char *name, size_t n)
{
    if (n == 0 || n > FILES_MAX_NAME || name[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!ext_char(name[i]))
            return 0;
        if (name[i] == '.' && i + 1 < n && name[i + 1] == '.')
            return 0;
    }
    return 1;
}

static int parse_side(const char *s, size_t n, size_t *i, int *out)
{
    size_t st = *i;
    long v = 0;
    while (*i < n && s[*i] >= '0' && s[*i] <= '9') {
        v = v * 10 + (s[*i] - '0');
        if (v > FILES_THUMB_MAX_SIDE)
            return -1;
        (*i)++;
    }
    if (*i == st || *i - st > 5)
        return -1;
    *out = (int)v;
    return 0;
}

int files_thumb_parse(const char *s, size_t n, files_thumb_t *out)
{
    size_t i = 0;
    files_thumb_t t = {0, 0, 'c'};
    if (s == NULL || parse_side(s, n, &i, &t.w) != 0 || i >= n || s[i] != 'x')
        return -1;
    i++;
    if (parse_side(s, n, &i, &t.h) != 0)
        return -1;
    if (i < n) {
        if (i + 1 != n || (s[i] != 't' && s[i] != 'b' && s[i] != 'f'))
            return -1;
        t.mode = s[i];
    }
    if (t.w == 0 && t.h == 0)
        return -1;
    /* 0xH and Wx0 resize keeping the ratio, whatever mode letter follows (as in
     * PocketBase). */
    *out = t;
    return 0;
}
