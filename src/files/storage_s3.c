/*
 * The S3-compatible storage backend: libcurl with CURLOPT_AWS_SIGV4 (7.75+; Debian
 * 12 has 7.88), one easy handle per pool thread (kept, so connections are reused),
 * connect and total time-outs on every request so a dead or slow server fails the
 * request (503/504) instead of holding a thread. Blocking: file pool threads only.
 */
#include <curl/curl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"
#include "files/storage.h"

typedef struct {
    storage_t base;
    storage_s3_config_t cfg; /* strings owned */
    char sigv4[128];
    char userpwd[600];
} s3_t;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static pthread_key_t handle_key;

static void free_handle(void *h)
{
    curl_easy_cleanup(h);
}

static void init_curl(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pthread_key_create(&handle_key, free_handle);
}

static CURL *thread_handle(void)
{
    CURL *h = pthread_getspecific(handle_key);
    if (h == NULL) {
        h = curl_easy_init();
        pthread_setspecific(handle_key, h);
    } else {
        curl_easy_reset(h);
    }
    return h;
}

static int unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

/* Appends s percent-encoded as SigV4 wants (everything but unreserved; '/' kept
 * when keep_slash). */
static void enc(buf_t *b, const char *s, int keep_slash)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (unreserved(c) || (keep_slash && c == '/'))
            buf_putc(b, (char)c);
        else
            buf_printf(b, "%%%02X", c);
    }
}

int storage_s3_url(const storage_s3_config_t *cfg, const char *key, const char *query, char *out, size_t cap)
{
    buf_t b;
    buf_init(&b, NULL);
    const char *ep = cfg->endpoint;
    size_t el = strlen(ep);
    while (el > 0 && ep[el - 1] == '/')
        el--;
    if (cfg->force_path_style) {
        buf_printf(&b, "%.*s/", (int)el, ep);
        enc(&b, cfg->bucket, 0);
        buf_putc(&b, '/');
    } else {
        const char *host = strstr(ep, "://");
        size_t sl = host ? (size_t)(host - ep) + 3 : 0;
        buf_printf(&b, "%.*s", (int)sl, ep);
        enc(&b, cfg->bucket, 0);
        buf_printf(&b, ".%.*s/", (int)(el - sl), ep + sl);
    }
    if (key != NULL)
        enc(&b, key, 1);
    if (query != NULL)
        buf_printf(&b, "?%s", query);
    int rc = -1;
    if (!b.oom && b.len < cap) {
        memcpy(out, b.data, b.len + 1);
        rc = (int)b.len;
    }
    buf_free(&b);
    return rc;
}

typedef struct {
    buf_t body;
    size_t max; /* stop reading beyond (0: no cap) */
    char etag[80];
    long long length;
    long long mtime;
} resp_t;

static size_t on_data(char *p, size_t sz, size_t n, void *arg)
{
    resp_t *r = arg;
    size_t len = sz * n;
    if (r->max && r->body.len + len > r->max)
        return 0; /* more than asked for: abort */
    buf_append(&r->body, p, len);
    return r->body.oom ? 0 : len;
}

static size_t on_header(char *p, size_t sz, size_t n, void *arg)
{
    resp_t *r = arg;
    size_t len = sz * n;
    if (len > 5 && strncasecmp(p, "etag:", 5) == 0) {
        const char *v = p + 5;
        while (*v == ' ')
            v++;
        size_t vl = (size_t)(p + len - v);
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl < sizeof(r->etag)) {
            memcpy(r->etag, v, vl);
            r->etag[vl] = '\0';
        }
    } else if (len > 14 && strncasecmp(p, "last-modified:", 14) == 0) {
        char v[80];
        snprintf(v, sizeof(v), "%.*s", (int)(len - 14 < 79 ? len - 14 : 79), p + 14);
        time_t t = curl_getdate(v, NULL);
        if (t > 0)
            r->mtime = (long long)t * 1000;
    } else if (len > 15 && strncasecmp(p, "content-length:", 15) == 0) {
        r->length = strtoll(p + 15, NULL, 10);
    }
    return len;
}

/* One request. Returns the HTTP status, or -1 with err (transport failure). */
static long request(s3_t *s, const char *method, const char *key, const char *query, const void *data,
                    size_t n, const char *ctype, const char *range, resp_t *r, bs_error_t *err)
{
    char url[2048];
    if (storage_s3_url(&s->cfg, key, query, url, sizeof(url)) < 0) {
        bs_error_set(err, BS_ERR_INTERNAL, "S3: the object URL is too long.");
        return -1;
    }
    CURL *h = thread_handle();
    if (h == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    struct curl_slist *hdrs = NULL;
    char line[256];
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)s->cfg.connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)s->cfg.timeout_ms);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(h, CURLOPT_USERPWD, s->userpwd);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    /* S3 wants the payload's hash in x-amz-content-sha256 (libcurl 7.88 signs the
     * header but does not add it); signed with the rest. */
    unsigned char md[32];
    unsigned int mdl = 0;
    EVP_Digest(n ? data : "", n, md, &mdl, EVP_sha256(), NULL);
    int o = snprintf(line, sizeof(line), "x-amz-content-sha256: ");
    for (unsigned i = 0; i < mdl && o + 3 < (int)sizeof(line); i++)
        o += snprintf(line + o, sizeof(line) - (size_t)o, "%02x", md[i]);
    hdrs = curl_slist_append(hdrs, line);
    if (strcmp(method, "PUT") == 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
        /* Given as POSTFIELDS so that libcurl hashes the payload into the signature. */
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, n ? data : "");
        snprintf(line, sizeof(line), "Content-Type: %s", ctype ? ctype : "application/octet-stream");
        hdrs = curl_slist_append(hdrs, line);
        hdrs = curl_slist_append(hdrs, "Expect:");
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "DELETE") == 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    if (range != NULL) {
        snprintf(line, sizeof(line), "Range: %s", range);
        hdrs = curl_slist_append(hdrs, line);
    }
    if (hdrs != NULL)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    if (rc != CURLE_OK) {
        bs_error_set(err, rc == CURLE_OPERATION_TIMEDOUT ? BS_ERR_GATEWAY_TIMEOUT : BS_ERR_UNAVAILABLE,
                     "The S3 storage cannot be reached: %s.", curl_easy_strerror(rc));
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

static int s3_failed(long status, const resp_t *r, const char *what, const char *key, bs_error_t *err)
{
    if (status < 0)
        return -1;
    /* The server's code, for the log and the message (the body is S3's XML). */
    char code[64] = "";
    const char *c = r->body.data ? strstr(r->body.data, "<Code>") : NULL;
    if (c != NULL)
        sscanf(c + 6, "%63[^<]", code);
    bs_error_set(err, status == 403 || status == 401 ? BS_ERR_BAD_GATEWAY : BS_ERR_BAD_GATEWAY,
                 "The S3 storage refused to %s \"%.80s\": HTTP %ld%s%s.", what, key, status,
                 code[0] ? " " : "", code);
    return -1;
}

static int s3_put(storage_t *st, const char *key, const void *data, size_t n, const char *ctype,
                  bs_error_t *err)
{
    s3_t *s = (s3_t *)st;
    resp_t r = {0};
    buf_init(&r.body, NULL);
    r.max = 1 << 20;
    long status = request(s, "PUT", key, NULL, data, n, ctype, NULL, &r, err);
    int rc = status >= 200 && status < 300 ? 0 : s3_failed(status, &r, "store", key, err);
    buf_free(&r.body);
    return rc;
}

static int s3_stat(storage_t *st, const char *key, storage_stat_t *out, bs_error_t *err)
{
    s3_t *s = (s3_t *)st;
    resp_t r = {0};
    buf_init(&r.body, NULL);
    r.length = -1;
    long status = request(s, "HEAD", key, NULL, NULL, 0, NULL, NULL, &r, err);
    int rc;
    if (status == 404) {
        rc = 0;
    } else if (status >= 200 && status < 300) {
        out->size = r.length < 0 ? 0 : r.length;
        out->mtime_ms = r.mtime;
        if (r.etag[0] == '"')
            snprintf(out->etag, sizeof(out->etag), "%s", r.etag);
        else
            snprintf(out->etag, sizeof(out->etag), "\"%s\"", r.etag);
        rc = 1;
    } else {
        rc = s3_failed(status, &r, "read", key, err);
    }
    buf_free(&r.body);
    return rc;
}

static int s3_get(storage_t *st, const char *key, int64_t off, int64_t len, char **data, size_t *n,
                  bs_error_t *err)
{
    s3_t *s = (s3_t *)st;
    resp_t r = {0};
    buf_init(&r.body, NULL);
    char range[80];
    if (len >= 0)
        snprintf(range, sizeof(range), "bytes=%lld-%lld", (long long)off, (long long)(off + len - 1));
    else
        snprintf(range, sizeof(range), "bytes=%lld-", (long long)off);
    if (len == 0) {
        *data = malloc(1);
        *n = 0;
        return *data ? 0 : -1;
    }
    r.max = len > 0 ? (size_t)len + 1 : 0;
    long status = request(s, "GET", key, NULL, NULL, 0, NULL, off > 0 || len >= 0 ? range : NULL, &r, err);
    if (status == 416) { /* asked past the end (an empty object): nothing */
        buf_free(&r.body);
        *data = malloc(1);
        *n = 0;
        return *data ? 0 : -1;
    }
    if (status == 404) {
        buf_free(&r.body);
        bs_error_set(err, BS_ERR_NOT_FOUND, NULL);
        return -1;
    }
    if (status != 200 && status != 206) {
        int rc = s3_failed(status, &r, "read", key, err);
        buf_free(&r.body);
        return rc;
    }
    if (status == 200 && (off > 0 || len >= 0)) {
        /* A server that ignores Range: cut the part asked for. */
        size_t o = (size_t)off < r.body.len ? (size_t)off : r.body.len;
        size_t m = len >= 0 && o + (size_t)len < r.body.len ? (size_t)len : r.body.len - o;
        memmove(r.body.data, r.body.data + o, m);
        r.body.len = m;
    }
    *n = r.body.len;
    *data = malloc(r.body.len + 1);
    if (*data == NULL) {
        buf_free(&r.body);
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    if (r.body.len)
        memcpy(*data, r.body.data, r.body.len);
    buf_free(&r.body);
    return 0;
}

static int s3_del(storage_t *st, const char *key, bs_error_t *err)
{
    s3_t *s = (s3_t *)st;
    resp_t r = {0};
    buf_init(&r.body, NULL);
    r.max = 1 << 20;
    long status = request(s, "DELETE", key, NULL, NULL, 0, NULL, NULL, &r, err);
    int rc = (status >= 200 && status < 300) || status == 404 ? 0 : s3_failed(status, &r, "delete", key, err);
    buf_free(&r.body);
    return rc;
}

/* The text of the first <tag>...</tag> after p, XML entities decoded, into out. */
static const char *xml_take(const char *p, const char *tag, char *out, size_t cap)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *a = strstr(p, open);
    if (a == NULL)
        return NULL;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (b == NULL)
        return NULL;
    size_t o = 0;
    for (const char *q = a; q < b && o + 1 < cap; q++) {
        if (*q == '&') {
            static const struct {
                const char *e;
                char c;
            } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
            int done = 0;
            for (size_t i = 0; i < 5 && !done; i++)
                if (strncmp(q, ents[i].e, strlen(ents[i].e)) == 0) {
                    out[o++] = ents[i].c;
                    q += strlen(ents[i].e) - 1;
                    done = 1;
                }
            if (done)
                continue;
        }
        out[o++] = *q;
    }
    out[o] = '\0';
    return b + strlen(close);
}

static int s3_list(storage_t *st, const char *prefix, storage_list_fn fn, void *arg, bs_error_t *err)
{
    s3_t *s = (s3_t *)st;
    char token[1024] = "";
    for (int page = 0; page < 10000; page++) {
        buf_t q;
        buf_init(&q, NULL);
        if (token[0]) {
            buf_puts(&q, "continuation-token=");
            enc(&q, token, 0);
            buf_putc(&q, '&');
        }
        buf_puts(&q, "list-type=2&prefix=");
        enc(&q, prefix, 0);
        resp_t r = {0};
        buf_init(&r.body, NULL);
        r.max = 16 << 20;
        long status = q.oom ? -1 : request(s, "GET", NULL, q.data, NULL, 0, NULL, NULL, &r, err);
        buf_free(&q);
        if (status != 200) {
            int rc = status < 0 ? -1 : s3_failed(status, &r, "list", prefix, err);
            buf_free(&r.body);
            return rc;
        }
        buf_putc(&r.body, '\0');
        const char *p = r.body.data;
        char key[1024];
        int stop = 0;
        while (!stop && p != NULL) {
            const char *c = strstr(p, "<Contents>");
            if (c == NULL)
                break;
            p = xml_take(c, "Key", key, sizeof(key));
            if (p != NULL && strncmp(key, prefix, strlen(prefix)) == 0)
                stop = fn(arg, key);
        }
        int more = strstr(r.body.data, "<IsTruncated>true</IsTruncated>") != NULL;
        token[0] = '\0';
        if (more)
            xml_take(r.body.data, "NextContinuationToken", token, sizeof(token));
        buf_free(&r.body);
        if (stop || !more || token[0] == '\0')
            return 0;
    }
    return 0;
}

static void s3_close(storage_t *st)
{
    s3_t *s = (s3_t *)st;
    free((char *)s->cfg.endpoint);
    free((char *)s->cfg.bucket);
    free((char *)s->cfg.region);
    free((char *)s->cfg.access_key);
    free((char *)s->cfg.secret);
    free(s);
}

static const storage_ops_t s3_ops = {s3_put, s3_stat, s3_get, s3_del, s3_list, s3_close};

storage_t *storage_s3_open(const storage_s3_config_t *cfg, bs_error_t *err)
{
    pthread_once(&curl_once, init_curl);
    if (cfg->endpoint == NULL ||
        (strncmp(cfg->endpoint, "http://", 7) != 0 && strncmp(cfg->endpoint, "https://", 8) != 0)) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "S3: the endpoint must be an http:// or https:// URL.");
        return NULL;
    }
    if (cfg->bucket == NULL || cfg->bucket[0] == '\0' || strpbrk(cfg->bucket, "/?#") != NULL) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "S3: the bucket name is missing or invalid.");
        return NULL;
    }
    const char *region = cfg->region && cfg->region[0] ? cfg->region : "us-east-1";
    if (strpbrk(region, ":/") != NULL || strlen(region) > 60) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "S3: the region is invalid.");
        return NULL;
    }
    s3_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    s->cfg = *cfg;
    s->cfg.endpoint = strdup(cfg->endpoint);
    s->cfg.bucket = strdup(cfg->bucket);
    s->cfg.region = strdup(region);
    s->cfg.access_key = strdup(cfg->access_key ? cfg->access_key : "");
    s->cfg.secret = strdup(cfg->secret ? cfg->secret : "");
    if (s->cfg.connect_timeout_ms <= 0)
        s->cfg.connect_timeout_ms = 5000;
    if (s->cfg.timeout_ms <= 0)
        s->cfg.timeout_ms = 30000;
    snprintf(s->sigv4, sizeof(s->sigv4), "aws:amz:%s:s3", s->cfg.region);
    snprintf(s->userpwd, sizeof(s->userpwd), "%s:%s", s->cfg.access_key, s->cfg.secret);
    s->base.ops = &s3_ops;
    s->base.kind = "s3";
    return &s->base;
}
