/*
 * context — one request's state between the server and the API handlers.
 *
 * A req_ctx_t is heap-allocated when a request arrives and owns the request's arena,
 * its schema reference and its authenticated record. h2o frees its own request
 * memory when the response is done or the client goes away; a guard in that memory
 * clears ctx->req then. If asynchronous work (a writer job, a password hash) is still
 * outstanding, the context lives on until it comes back (ctx_async_end), and is
 * freed there without answering. All of it runs on the worker's own thread (asserted):
 * a read job that owns the context's arena (api_read) touches nothing else of it.
 */
#ifndef BASALT_HTTP_CONTEXT_H
#define BASALT_HTTP_CONTEXT_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <jansson.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/error.h"
#include "core/caller.h"
#include "core/schema.h"

struct worker;

typedef struct req_ctx {
    h2o_req_t *req; /* NULL once h2o has disposed of the request */
    struct worker *worker;
    arena_t arena;
    schema_t *schema; /* referenced for the request's lifetime */
    /* The snapshot the request started with, once a reload replaced schema after the
     * requester was authenticated (api/common.c): what was taken from it stays valid.
     * Referenced; NULL when none. */
    schema_t *schema_prev;
    /* Runs the matched route again (set by routes.c before the handler): after
     * api_collection found a collection missing and reloaded the collections. */
    void (*rerun)(struct req_ctx *ctx, void *arg);
    void *rerun_arg;
    int schema_rechecked; /* the collections were reloaded once for this request */
    char request_id[33];
    uint64_t start_ns;
    int pending; /* outstanding async operations */
    int responded;
    /* the request */
    const char *method;
    const char *path;   /* decoded path without the query, NUL-terminated, in arena */
    int path_error;     /* reqcheck_path_t: why the raw path is refused (0: it is not) */
    json_t *query;      /* object of strings (last value wins), owned */
    int query_invalid;  /* a query pair was not valid UTF-8 or held a NUL byte: refused */
    char client_ip[64]; /* the client: the peer, or X-Forwarded-For behind a trusted proxy */
    char peer_ip[64];   /* the socket peer, always */
    /* authentication (set by api_authenticate) */
    json_t *auth; /* the authenticated record's stored fields, owned; who.auth borrows it */
    /* Who is asking and the request's facts: filled by api_authenticate before the
     * handler runs and read-only after, handed by pointer to every reader, writer and
     * rule this request's jobs run (see core/caller.h). */
    caller_t who;
    int auth_refreshable; /* the presented token may be refreshed */
    json_t *headers;      /* request headers for rules, built on first use, owned */
    bs_error_t auth_err;  /* why a presented token was refused (code OK if none presented) */
    int route;            /* index in the route table, -1 if none matched (metrics) */
    /* response bookkeeping for the access log */
    int status;
    size_t bytes;
} req_ctx_t;

/* Returns a header's value (borrowed from h2o) or NULL. Only the first line of a
 * header that came in several: for a list-valued header use ctx_header_list. */
const char *ctx_header(req_ctx_t *ctx, const char *name, size_t *len);
/* Every line of a header, joined with ',' in order of arrival (RFC 9110 5.3: the
 * lines of a list-valued field are one list). Returns a NUL-terminated string in
 * ctx's arena (valid until the context is freed), or NULL if there is no such
 * header or memory ran out (*oom set then). */
const char *ctx_header_list(req_ctx_t *ctx, const char *name, size_t *len, int *oom);
/* The request headers as an object (names lower-cased, '-' as '_'), for
 * @request.headers.* in rules; built on first use, owned by ctx. */
const json_t *ctx_headers(req_ctx_t *ctx);
/* Query parameter as a string (borrowed from ctx->query) or NULL. */
const char *ctx_query(req_ctx_t *ctx, const char *name);
/* Parses the body: JSON, multipart/form-data (with @jsonPayload) or urlencoded.
 * Returns an owned JSON object (an empty one for an empty body) or NULL with err. */
json_t *ctx_body(req_ctx_t *ctx, bs_error_t *err);
/* ctx_body that also takes multipart file parts (into *files, in ctx's arena,
 * borrowing the request's bytes: valid while ctx->req is). */
struct body_file;
json_t *ctx_body_upload(req_ctx_t *ctx, struct body_file **files, bs_error_t *err);

/* Responses. Each sends exactly once; later calls are ignored. */
void ctx_send_json(req_ctx_t *ctx, int status, const char *body, size_t len);
/* Sends body without copying it: takes it, and calls free_fn(body) once h2o is done
 * with it (or at once when nothing is sent). */
void ctx_send_owned(req_ctx_t *ctx, int status, const char *content_type, void *body, size_t len,
                    void (*free_fn)(void *));
void ctx_send_body(req_ctx_t *ctx, int status, const char *content_type, const char *body, size_t len);
void ctx_send_error(req_ctx_t *ctx, const bs_error_t *err);
/* Appends PocketBase's `data` object of err's field errors ({} when none). */
void ctx_write_field_errors(buf_t *b, const bs_error_t *err);
void ctx_send_status(req_ctx_t *ctx, bs_code_t code, const char *message);
void ctx_send_empty(req_ctx_t *ctx, int status);
/* Sends body without copying it and without libh2o's gzip filter (the caller chose the
 * encoding): body must stay valid until the request is disposed of, which the caller
 * ensures by tying its owner to the request's pool (h2o_mem_alloc_shared). */
void ctx_send_borrowed(req_ctx_t *ctx, int status, const char *content_type, const char *body, size_t len);
void ctx_add_header(req_ctx_t *ctx, const char *name, const char *value);

/* Hands the response to a streaming owner (SSE, a WebSocket upgrade): sets status
 * and the common headers, writes the access log line and marks ctx answered.
 * Returns the request, or NULL if the client has gone. */
h2o_req_t *ctx_begin_stream(req_ctx_t *ctx, int status);

/* Async bookkeeping. A context is never freed while one of its callbacks runs:
 * whoever runs code on it (the server around the handler, every completion) calls
 * ctx_async_begin first and ctx_async_end last. ctx_async_end frees the context if
 * the client has gone (ctx->req == NULL) and nothing else is pending, so nothing may
 * touch ctx after it. Completions always run, so that they release what they own;
 * the ctx_send_* functions do nothing once the client has gone. */
void ctx_async_begin(req_ctx_t *ctx);
void ctx_async_end(req_ctx_t *ctx);

/* Writes the calling worker's buffered access log lines; release frees the
 * buffer (when the worker ends). */
void ctx_flush_access_log(int release);

/* Used by the server. */
req_ctx_t *ctx_create(struct worker *w, h2o_req_t *req);
void ctx_release(req_ctx_t *ctx);

#endif
