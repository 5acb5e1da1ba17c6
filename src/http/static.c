#include "base/util.h"
#include "http/static.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "base/log.h"
#include "http/context.h"

#define STATIC_MAX_FILES 20000
#define STATIC_MAX_DEPTH 16

typedef struct {
    char *path; /* relative, '/'-separated, no leading '/' */
    char *data;
    size_t len;
    char *gz; /* gzip representation or NULL; owned unless gz_borrowed */
    size_t gzlen;
    int gz_borrowed;
    const char *ctype;
    const char *cache_control;
    char etag[48], etag_gz[52];
    int64_t mtime_ns;
} sfile_t;

/* One consistent view of the folder. refs: the site's own reference plus one per
 * request answering from it (atomic). */
typedef struct {
    int refs;
    sfile_t *files; /* sorted by path */
    size_t n;
    uint64_t sig; /* fingerprint of the names, sizes and times it was read from */
} snap_t;

struct static_site {
    char root[PATH_MAX];
    static_opts_t opts;
    char *extra_headers;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    snap_t *cur; /* guarded by mu */
    int stop;
    pthread_t thread;
    int has_thread;
};

/* ---- pure helpers ---- */

static const struct {
    const char *ext, *type;
    int text;
} types[] = {
    {"html", "text/html; charset=utf-8", 1},
    {"htm", "text/html; charset=utf-8", 1},
    {"css", "text/css; charset=utf-8", 1},
    {"js", "text/javascript; charset=utf-8", 1},
    {"mjs", "text/javascript; charset=utf-8", 1},
    {"json", "application/json", 1},
    {"map", "application/json", 1},
    {"webmanifest", "application/manifest+json", 1},
    {"svg", "image/svg+xml", 1},
    {"txt", "text/plain; charset=utf-8", 1},
    {"md", "text/markdown; charset=utf-8", 1},
    {"csv", "text/csv; charset=utf-8", 1},
    {"xml", "application/xml", 1},
    {"wasm", "application/wasm", 1},
    {"ico", "image/x-icon", 1},
    {"png", "image/png", 0},
    {"jpg", "image/jpeg", 0},
    {"jpeg", "image/jpeg", 0},
    {"gif", "image/gif", 0},
    {"webp", "image/webp", 0},
    {"avif", "image/avif", 0},
    {"woff", "font/woff", 0},
    {"woff2", "font/woff2", 0},
    {"ttf", "font/ttf", 1},
    {"otf", "font/otf", 1},
    {"pdf", "application/pdf", 0},
    {"mp4", "video/mp4", 0},
    {"webm", "video/webm", 0},
    {"mp3", "audio/mpeg", 0},
    {"gz", "application/gzip", 0},
    {"zip", "application/zip", 0},
};

const char *static_content_type(const char *path, int *compressible)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *dot = strrchr(base, '.');
    *compressible = 0;
    if (dot != NULL && dot != base)
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0) {
                *compressible = types[i].text;
                return types[i].type;
            }
    return "application/octet-stream";
}

int static_is_hashed_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    const char *ext = strrchr(base, '.');
    if (ext == NULL || ext == base)
        return 0;
    /* The segment before the extension, after the last '-' or '.'. */
    const char *seg = ext;
    while (seg > base && seg[-1] != '-' && seg[-1] != '.')
        seg--;
    if (seg == base)
        return 0;
    size_t n = (size_t)(ext - seg);
    if (n < 8 || n > 64)
        return 0;
    int upper = 1, hex = 1, digits = 0;
    for (const char *p = seg; p < ext; p++) {
        char c = *p;
        if (c >= '0' && c <= '9') {
            digits++;
            continue;
        }
        if (!(c >= 'A' && c <= 'Z'))
            upper = 0;
        if (!(c >= 'a' && c <= 'f'))
            hex = 0;
    }
    /* esbuild's [hash] is 8 upper-case base32 characters; others use lower-case hex. */
    return upper || (hex && digits > 0);
}

int static_parse_range(const char *h, size_t hl, size_t len, size_t *start, size_t *end)
{
    if (hl < 6 || strncasecmp(h, "bytes=", 6) != 0 || len == 0)
        return 0;
    const char *p = h + 6, *e = h + hl;
    if (memchr(p, ',', (size_t)(e - p)) != NULL)
        return 0; /* several ranges: the whole body is a valid answer */
    unsigned long long a = 0, b = 0;
    int have_a = 0, have_b = 0;
    while (p < e && *p == ' ')
        p++;
    while (p < e && *p >= '0' && *p <= '9') {
        if (a > (ULLONG_MAX - 9) / 10)
            return 0;
        a = a * 10 + (unsigned)(*p++ - '0');
        have_a = 1;
    }
    if (p >= e || *p != '-')
        return 0;
    p++;
    while (p < e && *p >= '0' && *p <= '9') {
        if (b > (ULLONG_MAX - 9) / 10)
            return 0;
        b = b * 10 + (unsigned)(*p++ - '0');
        have_b = 1;
    }
    while (p < e && *p == ' ')
        p++;
    if (p != e || (!have_a && !have_b))
        return 0;
    if (!have_a) { /* the last b bytes */
        if (b == 0)
            return -1;
        *start = b >= len ? 0 : len - (size_t)b;
        *end = len - 1;
        return 1;
    }
    if (have_b && b < a)
        return 0;
    if (a >= len)
        return -1;
    *start = (size_t)a;
    *end = !have_b || b >= len ? len - 1 : (size_t)b;
    return 1;
}

/* ---- snapshots (main thread and the refresher) ---- */

typedef struct {
    char *path;
    char full[PATH_MAX];
    size_t size;
    int64_t mtime_ns;
} entry_t;

typedef struct {
    entry_t *v;
    size_t n, cap;
    size_t total;
    int over; /* something was left out */
} scan_t;

static int within(const char *root, const char *real)
{
    size_t rl = strlen(root);
    return strncmp(real, root, rl) == 0 && (real[rl] == '/' || real[rl] == '\0');
}

static void scan_dir(const static_site_t *s, const char *dir, const char *rel, int depth, scan_t *sc)
{
    if (depth > STATIC_MAX_DEPTH)
        return;
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue; /* ".", "..", and hidden files (.env, .git) are never served */
        char full[PATH_MAX], relp[PATH_MAX];
        if (snprintf(full, sizeof(full), "%s/%s", dir, de->d_name) >= (int)sizeof(full) ||
            snprintf(relp, sizeof(relp), "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) >= (int)sizeof(relp))
            continue;
        struct stat st;
        if (lstat(full, &st) != 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            char real[PATH_MAX];
            if (realpath(full, real) == NULL || !within(s->root, real) || stat(real, &st) != 0)
                continue; /* a link out of the folder is not followed */
        }
        if (S_ISDIR(st.st_mode)) {
            scan_dir(s, full, relp, depth + 1, sc);
            continue;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        if ((size_t)st.st_size > s->opts.max_file_bytes ||
            sc->total + (size_t)st.st_size > s->opts.max_total_bytes || sc->n >= STATIC_MAX_FILES) {
            sc->over = 1;
            continue;
        }
        if (sc->n == sc->cap) {
            size_t nc = sc->cap ? sc->cap * 2 : 64;
            entry_t *nv = realloc(sc->v, nc * sizeof(*nv));
            if (nv == NULL)
                continue;
            sc->v = nv;
            sc->cap = nc;
        }
        entry_t *e = &sc->v[sc->n];
        e->path = strdup(relp);
        if (e->path == NULL)
            continue;
        memcpy(e->full, full, sizeof(full));
        e->size = (size_t)st.st_size;
        e->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        sc->total += e->size;
        sc->n++;
    }
    closedir(d);
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const entry_t *)a)->path, ((const entry_t *)b)->path);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t scan_sig(const scan_t *sc)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sc->n; i++) {
        h = fnv(h, sc->v[i].path, strlen(sc->v[i].path) + 1);
        h = fnv(h, &sc->v[i].size, sizeof(sc->v[i].size));
        h = fnv(h, &sc->v[i].mtime_ns, sizeof(sc->v[i].mtime_ns));
    }
    return h;
}

static void scan_free(scan_t *sc)
{
    for (size_t i = 0; i < sc->n; i++)
        free(sc->v[i].path);
    free(sc->v);
    memset(sc, 0, sizeof(*sc));
}

static void snap_free(snap_t *sn)
{
    for (size_t i = 0; i < sn->n; i++) {
        free(sn->files[i].path);
        free(sn->files[i].data);
        if (!sn->files[i].gz_borrowed)
            free(sn->files[i].gz);
    }
    free(sn->files);
    free(sn);
}

static void snap_release(snap_t *sn)
{
    if (sn != NULL && __atomic_sub_fetch(&sn->refs, 1, __ATOMIC_ACQ_REL) == 0)
        snap_free(sn);
}

static char *read_whole(const char *path, size_t expect, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *data = malloc(expect ? expect : 1);
    size_t got = data ? fread(data, 1, expect, f) : 0;
    fclose(f);
    if (data == NULL || got != expect) {
        free(data); /* changed while read: the next look picks it up */
        return NULL;
    }
    *len = got;
    return data;
}

/* gzip of data (level 9: done once per file), or NULL when it would not be smaller. */
static char *gzip_of(const char *data, size_t len, size_t *out_len)
{
    if (len < 256)
        return NULL;
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, 31, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    size_t cap = deflateBound(&z, (uLong)len);
    char *out = malloc(cap);
    if (out == NULL) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    size_t n = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END || n >= len - len / 10) {
        free(out);
        return NULL;
    }
    *out_len = n;
    return out;
}

static int file_cmp(const void *a, const void *b)
{
    return strcmp(((const sfile_t *)a)->path, ((const sfile_t *)b)->path);
}

static sfile_t *snap_find(snap_t *sn, const char *path)
{
    sfile_t key = {.path = (char *)path};
    return bsearch(&key, sn->files, sn->n, sizeof(*sn->files), file_cmp);
}

/* Reads the files sc lists into a new snapshot (refs 1). */
static snap_t *snap_build(const static_site_t *s, scan_t *sc)
{
    snap_t *sn = calloc(1, sizeof(*sn));
    if (sn == NULL)
        return NULL;
    sn->refs = 1;
    sn->sig = scan_sig(sc);
    sn->files = calloc(sc->n ? sc->n : 1, sizeof(*sn->files));
    if (sn->files == NULL) {
        free(sn);
        return NULL;
    }
    for (size_t i = 0; i < sc->n; i++) {
        entry_t *e = &sc->v[i];
        sfile_t *f = &sn->files[sn->n];
        f->data = read_whole(e->full, e->size, &f->len);
        if (f->data == NULL)
            continue;
        f->path = e->path;
        e->path = NULL; /* moved */
        f->mtime_ns = e->mtime_ns;
        uint64_t h = fnv(1469598103934665603ull, f->data, f->len);
        snprintf(f->etag, sizeof(f->etag), "\"%016llx-%zx\"", (unsigned long long)h, f->len);
        snprintf(f->etag_gz, sizeof(f->etag_gz), "\"%016llx-%zx-gz\"", (unsigned long long)h, f->len);
        sn->n++;
    }
    /* entries came sorted, so files are too */
    for (size_t i = 0; i < sn->n; i++) {
        sfile_t *f = &sn->files[i];
        int text = 0;
        f->ctype = static_content_type(f->path, &text);
        f->cache_control = static_is_hashed_name(f->path)         ? "public, max-age=31536000, immutable"
                           : strcmp(f->ctype, types[0].type) == 0 ? "no-cache"
                                                                  : "public, max-age=0, must-revalidate";
        if (!text)
            continue;
        char gzname[PATH_MAX];
        snprintf(gzname, sizeof(gzname), "%s.gz", f->path);
        sfile_t *pre = snap_find(sn, gzname);
        if (pre != NULL && pre->len > 18 && (unsigned char)pre->data[0] == 0x1f &&
            (unsigned char)pre->data[1] == 0x8b) {
            f->gz = pre->data; /* a precompressed sibling, owned by its own entry */
            f->gzlen = pre->len;
            f->gz_borrowed = 1;
        } else {
            f->gz = gzip_of(f->data, f->len, &f->gzlen);
        }
    }
    (void)s;
    return sn;
}

/* Scans the folder; builds and swaps a new snapshot when it changed. */
static void refresh(static_site_t *s, int first)
{
    scan_t sc = {0};
    scan_dir(s, s->root, "", 0, &sc);
    qsort(sc.v, sc.n, sizeof(*sc.v), entry_cmp);
    uint64_t sig = scan_sig(&sc);
    pthread_mutex_lock(&s->mu);
    int same = s->cur != NULL && s->cur->sig == sig;
    pthread_mutex_unlock(&s->mu);
    if (!same) {
        if (sc.over)
            LOGF(LOG_WARN, "static", "%s: files over %zu bytes, or past %zu bytes in all, are not served",
                 s->root, s->opts.max_file_bytes, s->opts.max_total_bytes);
        snap_t *sn = snap_build(s, &sc);
        if (sn != NULL) {
            pthread_mutex_lock(&s->mu);
            snap_t *old = s->cur;
            s->cur = sn;
            pthread_mutex_unlock(&s->mu);
            snap_release(old);
            if (!first)
                LOGF(LOG_INFO, "static", "%s changed: %zu files now", s->root, sn->n);
        }
    }
    scan_free(&sc);
}

static void *refresher(void *arg)
{
    util_thread_name("static");
    static_site_t *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += s->opts.refresh_ms / 1000;
        ts.tv_nsec += (long)(s->opts.refresh_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (s->stop)
            break;
        pthread_mutex_unlock(&s->mu);
        refresh(s, 0);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static_site_t *static_open(const char *root, const static_opts_t *opts, char *errbuf, size_t errlen)
{
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(errbuf, errlen, "%s is not a folder (%s)", root,
                 errno ? strerror(errno) : "not a directory");
        return NULL;
    }
    static_site_t *s = calloc(1, sizeof(*s));
    if (s == NULL || realpath(root, s->root) == NULL) {
        snprintf(errbuf, errlen, "cannot resolve %s: %s", root, strerror(errno));
        free(s);
        return NULL;
    }
    s->opts = *opts;
    s->extra_headers = opts->extra_headers ? strdup(opts->extra_headers) : NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    refresh(s, 1);
    if (s->cur == NULL) {
        snprintf(errbuf, errlen, "out of memory reading %s", root);
        static_close(s);
        return NULL;
    }
    if (opts->refresh_ms > 0 && pthread_create(&s->thread, NULL, refresher, s) == 0)
        s->has_thread = 1;
    return s;
}

void static_close(static_site_t *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->has_thread)
        pthread_join(s->thread, NULL);
    snap_release(s->cur);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->extra_headers);
    free(s);
}

size_t static_file_count(static_site_t *s)
{
    pthread_mutex_lock(&s->mu);
    size_t n = s->cur ? s->cur->n : 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- serving (workers) ---- */

static struct mount {
    char prefix[64];
    static_site_t *site;
    char *missing_html;
} mounts[8];
static int nmounts;

void static_mount(const char *prefix, static_site_t *site, const char *missing_html)
{
    if (nmounts == (int)(sizeof(mounts) / sizeof(mounts[0])))
        return;
    struct mount *m = &mounts[nmounts++];
    snprintf(m->prefix, sizeof(m->prefix), "%s", prefix);
    m->site = site;
    m->missing_html = missing_html ? strdup(missing_html) : NULL;
}

void static_unmount_all(void)
{
    for (int i = 0; i < nmounts; i++) {
        static_close(mounts[i].site);
        free(mounts[i].missing_html);
    }
    nmounts = 0;
}

static void on_snap_dispose(void *p)
{
    snap_release(*(snap_t **)p);
}

int static_header_has_token(const char *h, size_t hl, const char *tok)
{
    /* The token listed, and not with q=0 ("gzip;q=0" refuses it). */
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= hl; i++) {
        if (strncasecmp(h + i, tok, tl) != 0 || (i > 0 && h[i - 1] != ' ' && h[i - 1] != ','))
            continue;
        size_t j = i + tl;
        if (j < hl && h[j] != ',' && h[j] != ';' && h[j] != ' ')
            continue;
        size_t end = j;
        while (end < hl && h[end] != ',')
            end++;
        for (size_t k = j; k + 2 < end; k++)
            if ((h[k] == 'q' || h[k] == 'Q') && h[k + 1] == '=') {
                size_t v = k + 2;
                int zero = h[v] == '0';
                for (v++; zero && v < end && h[v] != ' ' && h[v] != ';'; v++)
                    if (h[v] != '.' && h[v] != '0')
                        zero = 0;
                return !zero;
            }
        return 1;
    }
    return 0;
}

/* If-None-Match: weak comparison against etag over the list ("*" matches). */
int static_etag_matches(const char *h, size_t hl, const char *etag)
{
    size_t el = strlen(etag);
    for (size_t i = 0; i < hl;) {
        while (i < hl && (h[i] == ' ' || h[i] == ','))
            i++;
        if (i < hl && h[i] == '*')
            return 1;
        if (i + 2 <= hl && h[i] == 'W' && h[i + 1] == '/')
            i += 2;
        size_t j = i;
        while (j < hl && h[j] != ',')
            j++;
        size_t k = j;
        while (k > i && h[k - 1] == ' ')
            k--;
        if (k - i == el && memcmp(h + i, etag, el) == 0)
            return 1;
        i = j;
    }
    return 0;
}

static void add_extra(req_ctx_t *ctx, const char *extra)
{
    if (extra == NULL)
        return;
    for (const char *p = extra; *p;) {
        const char *nl = strchr(p, '\n'), *colon = strchr(p, ':');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        if (colon != NULL && colon < p + ll) {
            char name[64], value[512];
            size_t n = (size_t)(colon - p), v0 = n + 1;
            while (v0 < ll && p[v0] == ' ')
                v0++;
            if (n < sizeof(name) && ll - v0 < sizeof(value)) {
                memcpy(name, p, n);
                name[n] = '\0';
                memcpy(value, p + v0, ll - v0);
                value[ll - v0] = '\0';
                ctx_add_header(ctx, name, value);
            }
        }
        p += ll + (nl ? 1 : 0);
    }
}

static void send_file(req_ctx_t *ctx, static_site_t *site, snap_t *sn, const sfile_t *f)
{
    size_t hl = 0;
    const char *ae = ctx_header(ctx, "accept-encoding", &hl);
    size_t rl = 0;
    const char *range = ctx_header(ctx, "range", &rl);
    if (range != NULL) {
        size_t il = 0;
        const char *ifr = ctx_header(ctx, "if-range", &il);
        if (ifr != NULL && !(il == strlen(f->etag) && memcmp(ifr, f->etag, il) == 0))
            range = NULL; /* the client's copy is another version: send it whole */
    }
    int gz = f->gz != NULL && range == NULL && ae != NULL && static_header_has_token(ae, hl, "gzip");
    const char *etag = gz ? f->etag_gz : f->etag;
    ctx_add_header(ctx, "etag", etag);
    ctx_add_header(ctx, "cache-control", f->cache_control);
    ctx_add_header(ctx, "x-content-type-options", "nosniff");
    if (f->gz != NULL)
        ctx_add_header(ctx, "vary", "Accept-Encoding");
    add_extra(ctx, site->extra_headers);
    size_t il = 0;
    const char *inm = ctx_header(ctx, "if-none-match", &il);
    if (inm != NULL && static_etag_matches(inm, il, etag)) {
        ctx_send_empty(ctx, 304);
        return;
    }
    ctx_add_header(ctx, "accept-ranges", "bytes");
    const char *body = gz ? f->gz : f->data;
    size_t len = gz ? f->gzlen : f->len;
    int status = 200;
    if (range != NULL) {
        size_t a = 0, b = 0;
        int r = static_parse_range(range, rl, f->len, &a, &b);
        if (r < 0) {
            char cr[64];
            snprintf(cr, sizeof(cr), "bytes */%zu", f->len);
            ctx_add_header(ctx, "content-range", cr);
            ctx_send_status(ctx, BS_ERR_RANGE, "The requested range is past the end of the file.");
            return;
        }
        if (r > 0) {
            char cr[96];
            snprintf(cr, sizeof(cr), "bytes %zu-%zu/%zu", a, b, f->len);
            ctx_add_header(ctx, "content-range", cr);
            body = f->data + a;
            len = b - a + 1;
            status = 206;
        }
    }
    if (gz)
        ctx_add_header(ctx, "content-encoding", "gzip");
    /* The bytes are the snapshot's: it stays referenced until the request is gone. */
    snap_t **ref = h2o_mem_alloc_shared(&ctx->req->pool, sizeof(*ref), on_snap_dispose);
    __atomic_add_fetch(&sn->refs, 1, __ATOMIC_ACQ_REL);
    *ref = sn;
    ctx_send_borrowed(ctx, status, f->ctype, body, len);
}

static int has_ext(const char *rel)
{
    const char *slash = strrchr(rel, '/');
    const char *base = slash ? slash + 1 : rel;
    return strchr(base, '.') != NULL;
}

static void redirect(req_ctx_t *ctx, const char *to)
{
    ctx_add_header(ctx, "location", to);
    ctx_send_body(ctx, 301, "text/plain; charset=utf-8", "", 0);
}

int static_dispatch(req_ctx_t *ctx)
{
    const char *path = ctx->path;
    if (path == NULL || strncmp(path, "/api/", 5) == 0 || strcmp(path, "/api") == 0)
        return 0;
    int get = strcmp(ctx->method, "GET") == 0, head = strcmp(ctx->method, "HEAD") == 0;
    struct mount *m = NULL;
    size_t best = 0;
    for (int i = 0; i < nmounts; i++) {
        size_t pl = strlen(mounts[i].prefix);
        /* "/_" is the mount "/_/" without its slash: redirected below. */
        int bare = pl > 1 && strlen(path) == pl - 1 && strncmp(path, mounts[i].prefix, pl - 1) == 0;
        if ((strncmp(path, mounts[i].prefix, pl) == 0 || bare) && pl > best) {
            m = &mounts[i];
            best = pl;
        }
    }
    if (m == NULL)
        return 0;
    if (!get && !head) {
        ctx_add_header(ctx, "allow", "GET, HEAD");
        ctx_send_status(ctx, BS_ERR_METHOD_NOT_ALLOWED, NULL);
        return 1;
    }
    size_t pl = strlen(m->prefix);
    if (strlen(path) == pl - 1) {
        redirect(ctx, m->prefix);
        return 1;
    }
    if (m->site == NULL) {
        const char *html = m->missing_html ? m->missing_html : "Not found.";
        ctx_send_body(ctx, 404, "text/html; charset=utf-8", html, strlen(html));
        return 1;
    }
    const char *rel = path + pl;
    size_t rlen = strlen(rel);
    char name[PATH_MAX];
    if (rlen + sizeof("/index.html") > sizeof(name))
        return 0;
    if (rlen == 0 || rel[rlen - 1] == '/')
        snprintf(name, sizeof(name), "%sindex.html", rel);
    else
        snprintf(name, sizeof(name), "%s", rel);
    static_site_t *s = m->site;
    pthread_mutex_lock(&s->mu);
    snap_t *sn = s->cur;
    __atomic_add_fetch(&sn->refs, 1, __ATOMIC_ACQ_REL);
    pthread_mutex_unlock(&s->mu);
    int answered = 1;
    sfile_t *f = snap_find(sn, name);
    if (f == NULL && rlen > 0 && rel[rlen - 1] != '/') {
        char idx[PATH_MAX];
        snprintf(idx, sizeof(idx), "%s/index.html", rel);
        if (snap_find(sn, idx) != NULL) {
            /* A folder: its index with relative links that resolve inside it. */
            char *to = arena_printf(&ctx->arena, "%s/", path);
            redirect(ctx, to ? to : m->prefix);
            snap_release(sn);
            return 1;
        }
    }
    if (f == NULL && s->opts.spa && !has_ext(rel))
        f = snap_find(sn, "index.html");
    if (f != NULL)
        send_file(ctx, s, sn, f);
    else
        answered = 0;
    snap_release(sn);
    return answered;
}
