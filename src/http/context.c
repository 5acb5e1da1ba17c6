#include "http/context.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/util.h"
#include "http/body.h"
#include "http/reqcheck.h"
#include "metrics/metrics.h"
#include "http/server.h"

typedef struct {
    req_ctx_t *ctx;
} guard_t;

/* A context and its h2o request belong to their worker's loop: never touched from a
 * read pool thread (a job's run), the writer or another worker. */
#define CTX_ON_LOOP(ctx) assert(server_current_worker() == (ctx)->worker)

static void ctx_free(req_ctx_t *ctx)
{
    worker_t *w = ctx->worker;
    schema_release(ctx->schema);
    schema_release(ctx->schema_prev);
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

req_ctx_t *ctx_create(worker_t *w, h2o_req_t *req)
{
    req_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return NULL;
    w->inflight++;
    ctx->req = req;
    ctx->worker = w;
    ctx->route = -1;
    ctx->start_ns = util_mono_ns();
    arena_init(&ctx->arena, 4096);
    bs_error_init(&ctx->auth_err);
    guard_t *g = h2o_mem_alloc_shared(&req->pool, sizeof(*g), on_guard_dispose);
    g->ctx = ctx;
    ctx->schema = schema_acquire();
    ctx->method = arena_strndup(&ctx->arena, req->method.base, req->method.len);
    /* Routing goes by Basalt's own decoding of the raw target, not by libh2o's
     * path_normalized, which decodes %2F into a separator and resolves %2e%2e
     * (http/reqcheck.h says why that matters). */
    const char *q = memchr(req->path.base, '?', req->path.len);
    size_t plen = q != NULL ? (size_t)(q - req->path.base) : req->path.len;
    char *decoded = arena_alloc(&ctx->arena, plen + 1);
    size_t dlen = 0;
    if (decoded != NULL) { /* else ctx->path stays NULL: out of memory */
        ctx->path_error = (int)reqcheck_path(req->path.base, plen, decoded, &dlen);
        /* A refused path is kept raw for the access log (which quotes it). */
        ctx->path =
            ctx->path_error == REQCHECK_PATH_OK ? decoded : arena_strndup(&ctx->arena, req->path.base, plen);
    }
    ctx->query = json_object();
    if (q != NULL)
        ctx->query_invalid =
            body_parse_pairs(&ctx->arena, ctx->query, q + 1, req->path.len - plen - 1, 0) != 0;
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
    memcpy(ctx->peer_ip, ctx->client_ip, sizeof(ctx->peer_ip));
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

void ctx_async_end(req_ctx_t *ctx)
{
    CTX_ON_LOOP(ctx);
    if (--ctx->pending == 0 && ctx->req == NULL)
        ctx_free(ctx);
}

const char *ctx_header(req_ctx_t *ctx, const char *name, size_t *len)
{
    CTX_ON_LOOP(ctx);
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

const char *ctx_header_list(req_ctx_t *ctx, const char *name, size_t *len, int *oom)
{
    *oom = 0;
    if (ctx->req == NULL)
        return NULL;
    size_t nl = strlen(name), total = 0, lines = 0;
    h2o_headers_t *hs = &ctx->req->headers;
    for (size_t i = 0; i < hs->size; i++)
        if (hs->entries[i].name->len == nl && strncasecmp(hs->entries[i].name->base, name, nl) == 0) {
            total += hs->entries[i].value.len;
            lines++;
        }
    if (lines == 0)
        return NULL;
    char *out = arena_alloc(&ctx->arena, total + lines);
    if (out == NULL) {
        *oom = 1;
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < hs->size; i++) {
        h2o_header_t *h = &hs->entries[i];
        if (h->name->len != nl || strncasecmp(h->name->base, name, nl) != 0)
            continue;
        if (o > 0)
            out[o++] = ',';
        memcpy(out + o, h->value.base, h->value.len);
        o += h->value.len;
    }
    out[o] = '\0';
    *len = o;
    return out;
}

const json_t *ctx_headers(req_ctx_t *ctx)
{
    CTX_ON_LOOP(ctx);
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

static void access_line(req_ctx_t *ctx);

static void access_log(req_ctx_t *ctx)
{
    /* Its lines are info: below the level set, nothing is built (a tenth of a cached
     * view's CPU on the loop). */
    if (log_enabled(LOG_INFO))
        access_line(ctx);
    if (worker_settings()->on_response != NULL)
        worker_settings()->on_response(ctx);
}

static void access_line(req_ctx_t *ctx)
{
    char ts[UTIL_TIME_LEN + 1];
    util_format_time(util_now_ms(), ts);
    buf_t *bp = &access_buf;
    buf_t b = *bp;
    buf_printf(
        &b, "{\"time\":\"%s\",\"level\":\"info\",\"module\":\"access\",\"request_id\":\"%s\",\"method\":", ts,
        ctx->request_id);
    util_json_quote(&b, ctx->method ? ctx->method : "", ctx->method ? strlen(ctx->method) : 0);
    buf_puts(&b, ",\"path\":");
    /* The path only: query strings can carry tokens or personal data. */
    util_json_quote(&b, ctx->path ? ctx->path : "", ctx->path ? strlen(ctx->path) : 0);
    buf_printf(&b, ",\"status\":%d,\"bytes\":%zu,\"duration_us\":%llu,\"ip\":\"%s\"}\n", ctx->status,
               ctx->bytes, (unsigned long long)((util_mono_ns() - ctx->start_ns) / 1000), ctx->client_ip);
    *bp = b;
    if (bp->len > 64 * 1024 || bp->oom)
        ctx_flush_access_log(0);
}

void ctx_add_header(req_ctx_t *ctx, const char *name, const char *value)
{
    CTX_ON_LOOP(ctx);
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

h2o_req_t *ctx_begin_stream(req_ctx_t *ctx, int status)
{
    CTX_ON_LOOP(ctx);
    if (ctx->req == NULL || ctx->responded)
        return NULL;
    ctx->responded = 1;
    h2o_req_t *req = ctx->req;
    req->res.status = status;
    req->res.reason = status == 101 ? "Switching Protocols" : "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
                   H2O_STRLIT("*"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, ctx->request_id,
                          strlen(ctx->request_id));
    ctx->status = status;
    access_log(ctx);
    metrics_http_observe(ctx->route, status, util_mono_ns() - ctx->start_ns, req->entity.len, 0);
    return req;
}

static void send_body_as(req_ctx_t *ctx, int status, const char *ctype, const char *body, size_t len,
                         int borrowed)
{
    CTX_ON_LOOP(ctx);
    if (ctx->req == NULL || ctx->responded)
        return;
    ctx->responded = 1;
    h2o_req_t *req = ctx->req;
    req->res.status = status;
    req->res.reason = status == 200   ? "OK"
                      : status == 204 ? "No Content"
                      : status == 206 ? "Partial Content"
                      : status == 304 ? "Not Modified"
                      : status == 206 ? "Partial Content"
                      : status == 301 ? "Moved Permanently"
                                      : "";
    if (ctype != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
                   H2O_STRLIT("*"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, ctx->request_id,
                          strlen(ctx->request_id));
    req->res.content_length = len;
    ctx->status = status;
    ctx->bytes = len;
    access_log(ctx);
    metrics_http_observe(ctx->route, status, util_mono_ns() - ctx->start_ns, req->entity.len, len);
    if (borrowed) {
        /* The caller chose the encoding: no second compression by libh2o's filter. */
        req->res.mime_attr = &h2o_mime_attributes_as_is;
        static h2o_generator_t gen = {NULL, NULL};
        h2o_iovec_t v = h2o_iovec_init(body, len);
        h2o_start_response(req, &gen);
        h2o_send(req, &v, len ? 1 : 0, H2O_SEND_STATE_FINAL);
    } else if (len == 0) {
        static h2o_generator_t gen = {NULL, NULL};
        h2o_start_response(req, &gen);
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    } else {
        h2o_send_inline(req, body, len);
    }
}

static void send_body(req_ctx_t *ctx, int status, const char *ctype, const char *body, size_t len)
{
    send_body_as(ctx, status, ctype, body, len, 0);
}

void ctx_send_borrowed(req_ctx_t *ctx, int status, const char *content_type, const char *body, size_t len)
{
    send_body_as(ctx, status, content_type, body, len, 1);
}

void ctx_send_body(req_ctx_t *ctx, int status, const char *content_type, const char *body, size_t len)
{
    send_body(ctx, status, content_type, body, len);
}

/* The buffer of ctx_send_owned, freed when h2o clears the request's pool (after the
 * response is written, or when the client goes). */
typedef struct {
    void *buf;
    void (*free_fn)(void *);
} owned_body_t;

static void owned_dispose(void *p)
{
    owned_body_t *o = p;
    if (o->free_fn != NULL)
        o->free_fn(o->buf);
}

void ctx_send_owned(req_ctx_t *ctx, int status, const char *content_type, void *body, size_t len,
                    void (*free_fn)(void *))
{
    CTX_ON_LOOP(ctx);
    if (ctx->req == NULL || ctx->responded || len == 0) {
        if (ctx->req != NULL && !ctx->responded)
            send_body(ctx, status, content_type, "", 0);
        if (free_fn != NULL)
            free_fn(body);
        return;
    }
    h2o_req_t *req = ctx->req;
    owned_body_t *o = h2o_mem_alloc_shared(&req->pool, sizeof(*o), owned_dispose);
    o->buf = body;
    o->free_fn = free_fn;
    ctx->responded = 1;
    req->res.status = status;
    req->res.reason = status == 200 ? "OK" : status == 206 ? "Partial Content" : "";
    if (content_type != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                       strlen(content_type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
                   H2O_STRLIT("*"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, ctx->request_id,
                          strlen(ctx->request_id));
    req->res.content_length = len;
    ctx->status = status;
    ctx->bytes = len;
    access_log(ctx);
    metrics_http_observe(ctx->route, status, util_mono_ns() - ctx->start_ns, req->entity.len, len);
    /* One buffer, sent as is: no copy into the pool (h2o_send_inline would). */
    static h2o_generator_t gen = {NULL, NULL};
    h2o_start_response(req, &gen);
    h2o_iovec_t v = h2o_iovec_init(body, len);
    h2o_send(req, &v, 1, H2O_SEND_STATE_FINAL);
}

void ctx_send_json(req_ctx_t *ctx, int status, const char *body, size_t len)
{
    send_body(ctx, status, "application/json", body, len);
}

void ctx_send_empty(req_ctx_t *ctx, int status)
{
    send_body(ctx, status, NULL, "", 0);
}

void ctx_write_field_errors(buf_t *b, const bs_error_t *err)
{
    buf_putc(b, '{');
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
            buf_putc(b, ',');
        first = 0;
        util_json_quote(b, f->field, strlen(f->field));
        buf_puts(b, ":{\"code\":");
        util_json_quote(b, f->code, strlen(f->code));
        buf_puts(b, ",\"message\":");
        util_json_quote(b, f->message, strlen(f->message));
        buf_putc(b, '}');
    }
    buf_putc(b, '}');
}

void ctx_send_error(req_ctx_t *ctx, const bs_error_t *err)
{
    int status = bs_status(err->code);
    buf_t b;
    buf_init(&b, &ctx->arena);
    buf_printf(&b, "{\"status\":%d,\"message\":", status);
    const char *msg = err->message[0] ? err->message : bs_default_message(err->code);
    util_json_quote(&b, msg, strlen(msg));
    buf_puts(&b, ",\"data\":");
    ctx_write_field_errors(&b, err);
    buf_putc(&b, '}');
    if (status == 500)
        LOGF(LOG_ERROR, "http", "request %s %s failed: %s", ctx->method, ctx->path, msg);
    if (b.oom) {
        static const char fallback[] =
            "{\"status\":503,\"message\":\"The server is out of memory.\",\"data\":{}}";
        ctx_send_json(ctx, 503, fallback, sizeof(fallback) - 1);
        return;
    }
    if (status == 503)
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

json_t *ctx_body(req_ctx_t *ctx, bs_error_t *err)
{
    CTX_ON_LOOP(ctx);
    h2o_req_t *req = ctx->req;
    if (req == NULL || req->entity.base == NULL || req->entity.len == 0)
        return json_object();
    size_t cl = 0;
    const char *ct = ctx_header(ctx, "content-type", &cl);
    return body_parse(&ctx->arena, ct, ct ? cl : 0, req->entity.base, req->entity.len,
                      worker_settings()->max_json_depth, err);
}

/* Most files one request may carry (PocketBase's maxSelect is per field; this bounds
 * the work of one request over all its fields and batch items). */
#define CTX_MAX_UPLOAD_FILES 1000

json_t *ctx_body_upload(req_ctx_t *ctx, body_file_t **files, bs_error_t *err)
{
    CTX_ON_LOOP(ctx);
    *files = NULL;
    h2o_req_t *req = ctx->req;
    if (req == NULL || req->entity.base == NULL || req->entity.len == 0)
        return json_object();
    size_t cl = 0;
    const char *ct = ctx_header(ctx, "content-type", &cl);
    return body_parse_upload(&ctx->arena, ct, ct ? cl : 0, req->entity.base, req->entity.len,
                             worker_settings()->max_json_depth, CTX_MAX_UPLOAD_FILES, files, err);
}
