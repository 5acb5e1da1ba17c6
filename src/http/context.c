#include "http/context.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/util.h"
#include "http/server.h"

typedef struct {
    req_ctx_t *ctx;
} guard_t;

static void ctx_free(req_ctx_t *ctx)
{
    worker_t *w = ctx->worker;
    schema_release(ctx->schema);
    json_decref(ctx->query);
    json_decref(ctx->auth);
    json_decref(ctx->headers);
    arena_free(&ctx->arena);
    free(ctx);
    w->inflight--;
}

static void on_guard_dispose(void *p)
{
    guard_t *g = p;
    req_ctx_t *ctx = g->ctx;
    ctx->req = NULL;
    if (ctx->pending == 0)
        ctx_free(ctx);
}

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

/* Parses a=b&c=d into obj (strings; a repeated key keeps the last value unless
 * arrays is set, then repeated keys become arrays). */
static void parse_pairs(arena_t *a, json_t *obj, const char *s, size_t n, int arrays)
{
    size_t i = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && s[e] != '&')
            e++;
        size_t eq = i;
        while (eq < e && s[eq] != '=')
            eq++;
        if (eq > i) {
            size_t kl, vl;
            char *k = url_decode(a, s + i, eq - i, 1, &kl);
            char *v = eq < e ? url_decode(a, s + eq + 1, e - eq - 1, 1, &vl) : arena_strdup(a, "");
            if (k != NULL && v != NULL && util_valid_utf8(k, kl) && util_valid_utf8(v, strlen(v))) {
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
}

req_ctx_t *ctx_create(worker_t *w, h2o_req_t *req)
{
    req_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return NULL;
    w->inflight++;
    ctx->req = req;
    ctx->worker = w;
    ctx->start_ns = util_mono_ns();
    arena_init(&ctx->arena, 4096);
    bs_error_init(&ctx->auth_err);
    guard_t *g = h2o_mem_alloc_shared(&req->pool, sizeof(*g), on_guard_dispose);
    g->ctx = ctx;
    ctx->schema = schema_acquire();
    ctx->method = arena_strndup(&ctx->arena, req->method.base, req->method.len);
    size_t qpos = req->query_at == SIZE_MAX ? req->path_normalized.len : 0;
    (void)qpos;
    ctx->path = arena_strndup(&ctx->arena, req->path_normalized.base, req->path_normalized.len);
    ctx->query = json_object();
    if (req->query_at != SIZE_MAX && req->query_at + 1 <= req->path.len)
        parse_pairs(&ctx->arena, ctx->query, req->path.base + req->query_at + 1, req->path.len - req->query_at - 1, 0);
    /* Request id: the client's if it is sane, otherwise a fresh one. */
    size_t rl;
    const char *rid = ctx_header(ctx, "x-request-id", &rl);
    if (rid != NULL && rl > 0 && rl < sizeof(ctx->request_id) && util_valid_id(rid, rl)) {
        memcpy(ctx->request_id, rid, rl);
        ctx->request_id[rl] = '\0';
    } else {
        /* A random per-thread prefix and a counter: unique without a syscall. */
        static __thread uint32_t prefix, counter;
        if (prefix == 0)
            util_random_bytes(&prefix, sizeof(prefix));
        snprintf(ctx->request_id, sizeof(ctx->request_id), "%08x%08x", prefix, ++counter);
    }
    struct sockaddr_storage ss;
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (sl > 0 && ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ctx->client_ip, sizeof(ctx->client_ip));
    else if (sl > 0 && ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ctx->client_ip, sizeof(ctx->client_ip));
    return ctx;
}

void ctx_release(req_ctx_t *ctx)
{
    (void)ctx; /* freed by the guard when h2o disposes of the request */
}

void ctx_async_begin(req_ctx_t *ctx)
{
    ctx->pending++;
}

int ctx_async_done(req_ctx_t *ctx)
{
    ctx->pending--;
    if (ctx->req == NULL) {
        if (ctx->pending == 0)
            ctx_free(ctx);
        return 0;
    }
    return 1;
}

const char *ctx_header(req_ctx_t *ctx, const char *name, size_t *len)
{
    if (ctx->req == NULL)
        return NULL;
    size_t nl = strlen(name);
    for (size_t i = 0; i < ctx->req->headers.size; i++) {
        h2o_header_t *h = &ctx->req->headers.entries[i];
        if (h->name->len == nl && strncasecmp(h->name->base, name, nl) == 0) {
            if (len)
                *len = h->value.len;
            return h->value.base;
        }
    }
    return NULL;
}

const json_t *ctx_headers(req_ctx_t *ctx)
{
    if (ctx->headers != NULL || ctx->req == NULL)
        return ctx->headers;
    ctx->headers = json_object();
    for (size_t i = 0; i < ctx->req->headers.size; i++) {
        h2o_header_t *h = &ctx->req->headers.entries[i];
        char name[128];
        size_t n = h->name->len < sizeof(name) - 1 ? h->name->len : sizeof(name) - 1;
        for (size_t k = 0; k < n; k++) {
            char c = h->name->base[k];
            name[k] = c == '-' ? '_' : (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        name[n] = '\0';
        if (util_valid_utf8(h->value.base, h->value.len))
            json_object_set_new(ctx->headers, name, json_stringn(h->value.base, h->value.len));
    }
    return ctx->headers;
}

const char *ctx_query(req_ctx_t *ctx, const char *name)
{
    return json_string_value(json_object_get(ctx->query, name));
}

/* Each worker collects access log lines and writes them once per turn of its
 * loop (ctx_flush_access_log), instead of one write(2) per request. */
static __thread buf_t access_buf;

void ctx_flush_access_log(int release)
{
    if (access_buf.len > 0 && !access_buf.oom)
        log_access_line(access_buf.data, access_buf.len);
    access_buf.len = 0;
    access_buf.oom = 0;
    if (release)
        buf_free(&access_buf);
}

static void access_log(req_ctx_t *ctx)
{
    char ts[UTIL_TIME_LEN + 1];
    util_format_time(util_now_ms(), ts);
    buf_t *bp = &access_buf;
    buf_t b = *bp;
    buf_printf(&b, "{\"time\":\"%s\",\"level\":\"info\",\"module\":\"access\",\"request_id\":\"%s\",\"method\":", ts,
               ctx->request_id);
    util_json_quote(&b, ctx->method ? ctx->method : "", ctx->method ? strlen(ctx->method) : 0);
    buf_puts(&b, ",\"path\":");
    /* The path only: query strings can carry tokens or personal data. */
    util_json_quote(&b, ctx->path ? ctx->path : "", ctx->path ? strlen(ctx->path) : 0);
    buf_printf(&b, ",\"status\":%d,\"bytes\":%zu,\"duration_us\":%llu,\"ip\":\"%s\"}\n", ctx->status, ctx->bytes,
               (unsigned long long)((util_mono_ns() - ctx->start_ns) / 1000), ctx->client_ip);
    *bp = b;
    if (bp->len > 64 * 1024 || bp->oom)
        ctx_flush_access_log(0);
}

void ctx_add_header(req_ctx_t *ctx, const char *name, const char *value)
{
    if (ctx->req == NULL || ctx->responded)
        return;
    h2o_req_t *req = ctx->req;
    size_t nl = strlen(name), vl = strlen(value);
    char *n = h2o_mem_alloc_pool(&req->pool, nl);
    char *v = h2o_mem_alloc_pool(&req->pool, vl);
    memcpy(n, name, nl);
    memcpy(v, value, vl);
    h2o_add_header_by_str(&req->pool, &req->res.headers, n, nl, 0, NULL, v, vl);
}

static void send_body(req_ctx_t *ctx, int status, const char *ctype, const char *body, size_t len)
{
    if (ctx->req == NULL || ctx->responded)
        return;
    ctx->responded = 1;
    h2o_req_t *req = ctx->req;
    req->res.status = status;
    req->res.reason = status == 200 ? "OK" : status == 204 ? "No Content" : "";
    if (ctype != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, H2O_STRLIT("*"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, ctx->request_id,
                          strlen(ctx->request_id));
    req->res.content_length = len;
    ctx->status = status;
    ctx->bytes = len;
    access_log(ctx);
    if (len == 0) {
        static h2o_generator_t gen = {NULL, NULL};
        h2o_start_response(req, &gen);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    } else {
        h2o_send_inline(req, body, len);
    }
}

void ctx_send_json(req_ctx_t *ctx, int status, const char *body, size_t len)
{
    send_body(ctx, status, "application/json", body, len);
}

void ctx_send_empty(req_ctx_t *ctx, int status)
{
    send_body(ctx, status, NULL, "", 0);
}

void ctx_send_error(req_ctx_t *ctx, const bs_error_t *err)
{
    int status = bs_status(err->code);
    buf_t b;
    buf_init(&b, &ctx->arena);
    buf_printf(&b, "{\"status\":%d,\"message\":", status);
    const char *msg = err->message[0] ? err->message : bs_default_message(err->code);
    util_json_quote(&b, msg, strlen(msg));
    buf_puts(&b, ",\"data\":{");
    int first = 1;
    for (const bs_field_error_t *f = err->fields; f != NULL; f = f->next) {
        /* Newest first in the list; the first error of a field wins. */
        int dup = 0;
        for (const bs_field_error_t *g = f->next; g != NULL; g = g->next)
            if (strcmp(g->field, f->field) == 0)
                dup = 1;
        if (dup)
            continue;
        if (!first)
            buf_putc(&b, ',');
        first = 0;
        util_json_quote(&b, f->field, strlen(f->field));
        buf_puts(&b, ":{\"code\":");
        util_json_quote(&b, f->code, strlen(f->code));
        buf_puts(&b, ",\"message\":");
        util_json_quote(&b, f->message, strlen(f->message));
        buf_putc(&b, '}');
    }
    buf_puts(&b, "}}");
    if (status == 500)
        LOGF(LOG_ERROR, "http", "request %s %s failed: %s", ctx->method, ctx->path, msg);
    if (b.oom) {
        static const char fallback[] = "{\"status\":503,\"message\":\"The server is out of memory.\",\"data\":{}}";
        ctx_send_json(ctx, 503, fallback, sizeof(fallback) - 1);
        return;
    }
    if (status == 429 || status == 503)
        ctx_add_header(ctx, "retry-after", "1");
    ctx_send_json(ctx, status, b.data, b.len);
}

void ctx_send_status(req_ctx_t *ctx, bs_code_t code, const char *message)
{
    bs_error_t err;
    bs_error_init(&err);
    if (message)
        bs_error_set(&err, code, "%s", message);
    else
        bs_error_set(&err, code, NULL);
    ctx_send_error(ctx, &err);
}

/* ---- bodies ---- */

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
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The JSON body is nested too deeply (limit %zu levels).", max_depth);
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(p, n, JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid JSON body at line %d, column %d: %s.", jerr.line, jerr.column,
                     jerr.text);
        return NULL;
    }
    return v;
}

static const char *memmem_s(const char *h, size_t hn, const char *n, size_t nn)
{
    return memmem(h, hn, n, nn);
}

static json_t *parse_multipart(req_ctx_t *ctx, const char *ctype, size_t clen, bs_error_t *err)
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
    char *delim = arena_printf(&ctx->arena, "--%.*s", (int)bl, bp);
    size_t dl = bl + 2;
    const char *body = ctx->req->entity.base;
    size_t n = ctx->req->entity.len;
    json_t *out = json_object();
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
        char *hdrs = arena_strndup(&ctx->arena, p, (size_t)(hend - p));
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
            json_t *j = parse_json(data, dlen, worker_settings()->max_json_depth, err);
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

json_t *ctx_body(req_ctx_t *ctx, bs_error_t *err)
{
    h2o_req_t *req = ctx->req;
    if (req == NULL || req->entity.base == NULL || req->entity.len == 0)
        return json_object();
    size_t cl = 0;
    const char *ct = ctx_header(ctx, "content-type", &cl);
    char ctype[256] = "";
    if (ct != NULL)
        snprintf(ctype, sizeof(ctype), "%.*s", (int)(cl < 255 ? cl : 255), ct);
    if (ct == NULL || strncasecmp(ctype, "application/json", 16) == 0) {
        json_t *v = parse_json(req->entity.base, req->entity.len, worker_settings()->max_json_depth, err);
        if (v != NULL && !json_is_object(v)) {
            json_decref(v);
            bs_error_set(err, BS_ERR_BAD_REQUEST, "The request body must be a JSON object.");
            return NULL;
        }
        return v;
    }
    if (strncasecmp(ctype, "multipart/form-data", 19) == 0)
        return parse_multipart(ctx, ctype, strlen(ctype), err);
    if (strncasecmp(ctype, "application/x-www-form-urlencoded", 33) == 0) {
        json_t *o = json_object();
        parse_pairs(&ctx->arena, o, req->entity.base, req->entity.len, 1);
        return o;
    }
    bs_error_set(err, BS_ERR_UNSUPPORTED_MEDIA,
                 "Unsupported content type \"%s\"; send application/json or multipart/form-data.", ctype);
    return NULL;
}
