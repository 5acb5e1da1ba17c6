/*
 * Files: GET /api/files/{collection}/{recordId}/{filename} (thumbnails, downloads,
 * ranges, ETags) and POST /api/files/token; the uploads of file fields are in
 * files_upload.c.
 *
 * Nothing here blocks a loop: storage calls and thumbnails run on the file pool
 * (files/filepool.h) and answer through the worker's mailbox; the record and the
 * rules are read in a read job, as every other read.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "auth/token.h"
#include "base/log.h"
#include "base/util.h"
#include "files/filepool.h"
#include "files/thumb.h"

/* ---- POST /api/files/token ---- */

void api_files_token(req_ctx_t *ctx, char **params)
{
    (void)params;
    if (ctx->auth == NULL || ctx->who.auth_coll == NULL) {
        if (ctx->auth_err.code != BS_ERR_OK)
            ctx_send_error(ctx, &ctx->auth_err);
        else
            ctx_send_status(ctx, BS_ERR_UNAUTHORIZED, "Missing auth context.");
        return;
    }
    const collection_t *c = ctx->who.auth_coll;
    const char *id = json_string_value(json_object_get(ctx->auth, "id"));
    const char *key = json_string_value(json_object_get(ctx->auth, "tokenKey"));
    token_claims_t claims = {0};
    snprintf(claims.id, sizeof(claims.id), "%s", id ? id : "");
    snprintf(claims.collection_id, sizeof(claims.collection_id), "%s", c->id);
    snprintf(claims.type, sizeof(claims.type), "file");
    /* 3 minutes by default, as PocketBase's fileToken duration. */
    int life = filepool_settings()->file_token_seconds;
    claims.exp = util_now_ms() / 1000 + (life > 0 ? life : 180);
    buf_t tok, out;
    buf_init(&tok, &ctx->arena);
    buf_init(&out, &ctx->arena);
    token_sign(&tok, &claims, key ? key : "", c->token_secret ? c->token_secret : "");
    buf_puts(&out, "{\"token\":");
    util_json_quote(&out, tok.data ? tok.data : "", tok.len);
    buf_putc(&out, '}');
    if (tok.oom || out.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    ctx_send_json(ctx, 200, out.data, out.len);
}

/* ---- GET /api/files/{collection}/{recordId}/{filename} ---- */

typedef struct {
    files_work_t work; /* first */
    req_ctx_t *ctx;
    const collection_t *c;
    const char *id, *name;
    /* the read job */
    record_reader_t r;
    const char *token; /* ?token=, or NULL */
    token_claims_t claims;
    int claims_ok;
    int found; /* the record holds the file, and (protected) the token may see it */
    int thumb_listed;
    const char *thumb_arg;
    files_thumb_t thumb;
    int download, protected_file;
    /* range and validators */
    const char *range, *inm;
    /* the pool's answer */
    bs_error_t err;
    int status; /* 200, 206, 304, 416 */
    char *body; /* owned (malloc) */
    size_t len;
    int64_t total, from;
    const char *mime;
    char etag[96];
    const char *thumb_error;
    char served[FILES_MAX_NAME + 32];
    int inlined; /* answered by the read job itself (a small local file) */
} serve_t;

/* Local files up to this size are read inside the read job, the way SQLite's own
 * pages are (inline on the worker on SQLite, on a read pool thread on PostgreSQL):
 * a plain read from the page cache, no fsync, no network, and no second hop to the
 * file pool. Larger files, S3 and thumbnail generation go to the pool. */
#define FILES_INLINE_MAX (64 * 1024)

static int try_inline(serve_t *s);

static int run_lookup(store_job_t *job, store_conn_t *conn)
{
    serve_t *s = ((api_job_t *)job)->data;
    bs_error_t *err = &job->err;
    json_t *rec = record_load(conn, s->c, "id", s->id, err);
    if (rec == NULL) {
        if (err->code == BS_ERR_NOT_FOUND) {
            bs_error_init(err);
            return 0;
        }
        return -1;
    }
    const field_t *hit = NULL;
    for (size_t i = 0; i < s->c->nfields && hit == NULL; i++) {
        const field_t *f = &s->c->fields[i];
        if (f->type != FIELD_FILE)
            continue;
        json_t *v = json_object_get(rec, f->name);
        if (json_is_string(v) && strcmp(json_string_value(v), s->name) == 0)
            hit = f;
        size_t k;
        json_t *x;
        if (json_is_array(v))
            json_array_foreach(v, k, x) if (json_is_string(x) && strcmp(json_string_value(x), s->name) == 0)
                hit = f;
    }
    json_decref(rec);
    if (hit == NULL)
        return 0;
    if (s->thumb_arg != NULL) {
        s->thumb_listed = strcmp(s->thumb_arg, "100x100") == 0;
        size_t k;
        json_t *x;
        if (hit->thumbs != NULL)
            json_array_foreach(hit->thumbs, k, x) if (strcmp(json_string_value(x), s->thumb_arg) == 0)
                s->thumb_listed = 1;
    }
    s->protected_file = hit->protected_files;
    if (!hit->protected_files) {
        /* PocketBase serves an unprotected file to whoever has its URL, whatever the
         * view rule: the name's random part is the secret. */
        s->found = 1;
        s->inlined = try_inline(s);
        return 0;
    }
    /* Protected: the view rule, for the file token's record (or nobody). */
    record_reader_t r = s->r;
    r.conn = conn;
    json_t *auth = NULL;
    const collection_t *ac = NULL;
    int su = 0;
    if (s->claims_ok) {
        const collection_t *tc = schema_find(s->r.schema, s->claims.collection_id);
        bs_error_t aerr;
        bs_error_init(&aerr);
        auth = tc != NULL && tc->type == COLL_AUTH ? record_load(conn, tc, "id", s->claims.id, &aerr) : NULL;
        const char *key = auth ? json_string_value(json_object_get(auth, "tokenKey")) : NULL;
        if (auth != NULL &&
            token_verify(s->token, strlen(s->token), key ? key : "", tc->token_secret ? tc->token_secret : "",
                         util_now_ms() / 1000, "file", &aerr) == 0) {
            ac = tc;
            su = strcmp(tc->name, "_superusers") == 0;
        }
    }
    /* The request's facts with the token's record (or nobody) as @request.auth. */
    caller_t who = caller_as(s->r.who, ac, ac != NULL ? auth : NULL, su);
    who.context = "protectedFile";
    r.who = &who;
    int m = su ? 1 : record_matches(&r, s->c, s->id, s->c->rules[RULE_VIEW], NULL, err);
    json_decref(auth);
    if (m < 0)
        return -1;
    s->found = m == 1;
    if (s->found)
        s->inlined = try_inline(s);
    return 0;
}

/* Whether If-None-Match (a list, or "*") names tag. */
static int inm_matches(const char *inm, const char *tag)
{
    if (inm == NULL)
        return 0;
    if (strcmp(inm, "*") == 0)
        return 1;
    size_t tl = strlen(tag);
    for (const char *p = inm; (p = strstr(p, tag)) != NULL; p += tl) {
        int start_ok =
            p == inm || p[-1] == ' ' || p[-1] == ',' || (p - inm >= 2 && p[-1] == '/' && p[-2] == 'W');
        int end_ok = p[tl] == '\0' || p[tl] == ',' || p[tl] == ' ';
        if (start_ok && end_ok)
            return 1;
    }
    return 0;
}

/* Parses a single "bytes=a-b" / "bytes=a-" / "bytes=-n" range against total.
 * Returns 1 with [*from, *to] (inclusive), 0 to ignore the header (several ranges,
 * other units, malformed: RFC 9110 lets a server answer 200), -1 unsatisfiable. */
static int parse_range(const char *h, int64_t total, int64_t *from, int64_t *to)
{
    if (h == NULL || strncmp(h, "bytes=", 6) != 0 || strchr(h, ',') != NULL)
        return 0;
    const char *p = h + 6;
    int64_t a = -1, b = -1;
    if (*p >= '0' && *p <= '9') {
        a = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (a > (INT64_MAX - 9) / 10)
                return 0;
            a = a * 10 + (*p - '0');
        }
    }
    if (*p++ != '-')
        return 0;
    if (*p >= '0' && *p <= '9') {
        b = 0;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (b > (INT64_MAX - 9) / 10)
                return 0;
            b = b * 10 + (*p - '0');
        }
    }
    if (*p != '\0' || (a < 0 && b < 0))
        return 0;
    if (a < 0) { /* the last b bytes */
        if (b == 0)
            return -1;
        a = b >= total ? 0 : total - b;
        b = total - 1;
    } else {
        if (b >= 0 && b < a)
            return 0;
        if (a >= total)
            return -1;
        if (b < 0 || b >= total)
            b = total - 1;
    }
    *from = a;
    *to = b;
    return 1;
}

/* Reads key's bytes as the request asks (validators, range) into s. 0 or -1. */
static int serve_key(serve_t *s, storage_t *st, const char *key, const storage_stat_t *meta)
{
    snprintf(s->etag, sizeof(s->etag), "%s", meta->etag);
    s->total = meta->size;
    if (inm_matches(s->inm, s->etag)) {
        s->status = 304;
        return 0;
    }
    int64_t from = 0, to = meta->size - 1;
    int rr = parse_range(s->range, meta->size, &from, &to);
    if (rr < 0) {
        s->status = 416;
        return 0;
    }
    s->status = rr == 1 ? 206 : 200;
    s->from = from;
    if (from != 0) {
        char *head = NULL;
        size_t hn = 0;
        if (storage_get(st, key, 0, FILES_SNIFF_BYTES, &head, &hn, &s->err) != 0)
            return -1;
        s->mime = files_sniff(head, hn);
        free(head);
    }
    if (meta->size == 0) {
        s->mime = files_sniff("", 0);
        return 0;
    }
    if (storage_get(st, key, from, to - from + 1, &s->body, &s->len, &s->err) != 0)
        return -1;
    if (from == 0)
        s->mime = files_sniff(s->body, s->len);
    return 0;
}

/* One thumbnail made at a time per key (as PocketBase's singleflight): the pool
 * threads making one list its key here; another thread that wants the same waits.
 * At most one entry per pool thread. */
#define MAKING_MAX 256
static pthread_mutex_t making_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t making_cond = PTHREAD_COND_INITIALIZER;
static char *making[MAKING_MAX];

/* Claims key; returns 1 if it had to wait for another thread's (then the thumbnail
 * may exist now). */
static int making_claim(const char *key)
{
    int waited = 0;
    pthread_mutex_lock(&making_lock);
    for (;;) {
        int busy = 0;
        for (int i = 0; i < MAKING_MAX && !busy; i++)
            busy = making[i] != NULL && strcmp(making[i], key) == 0;
        if (!busy)
            break;
        waited = 1;
        pthread_cond_wait(&making_cond, &making_lock);
    }
    for (int i = 0; i < MAKING_MAX; i++)
        if (making[i] == NULL) {
            making[i] = strdup(key); /* NULL on no memory: no claim, no harm */
            break;
        }
    pthread_mutex_unlock(&making_lock);
    return waited;
}

static void making_release(const char *key)
{
    pthread_mutex_lock(&making_lock);
    for (int i = 0; i < MAKING_MAX; i++)
        if (making[i] != NULL && strcmp(making[i], key) == 0) {
            free(making[i]);
            making[i] = NULL;
            break;
        }
    pthread_cond_broadcast(&making_cond);
    pthread_mutex_unlock(&making_lock);
}

static int make_thumb(serve_t *s, storage_t *st, const char *key, const char *tkey, const char *mime);

static int try_inline(serve_t *s)
{
    storage_t *st = filepool_storage();
    if (st == NULL || strcmp(st->kind, "local") != 0)
        return 0;
    char key[768];
    storage_stat_t meta;
    bs_error_t err;
    bs_error_init(&err);
    if (s->thumb_listed)
        snprintf(key, sizeof(key), "%s/%s/thumbs_%s/%s_%s", s->c->id, s->id, s->name, s->thumb_arg, s->name);
    else
        snprintf(key, sizeof(key), "%s/%s/%s", s->c->id, s->id, s->name);
    if (storage_stat(st, key, &meta, &err) != 1 || meta.size > FILES_INLINE_MAX)
        return 0; /* missing (a thumbnail to make), large, or an error: the pool decides */
    if (s->thumb_listed)
        snprintf(s->served, sizeof(s->served), "%s_%s", s->thumb_arg, s->name);
    else
        snprintf(s->served, sizeof(s->served), "%s", s->name);
    bs_error_init(&s->err);
    serve_key(s, st, key, &meta);
    return 1;
}

static void run_serve(files_work_t *w)
{
    serve_t *s = (serve_t *)w;
    storage_t *st = filepool_storage();
    char key[512], tkey[768];
    snprintf(key, sizeof(key), "%s/%s/%s", s->c->id, s->id, s->name);
    snprintf(tkey, sizeof(tkey), "%s/%s/thumbs_%s/%s_%s", s->c->id, s->id, s->name,
             s->thumb_arg ? s->thumb_arg : "", s->name);
    storage_stat_t meta, tm;
    if (s->thumb_listed) {
        /* A thumbnail made before: served without looking at the original (it
         * exists only for an original that was an image). */
        int tex = storage_stat(st, tkey, &tm, &s->err);
        if (tex < 0)
            return;
        if (tex == 1) {
            snprintf(s->served, sizeof(s->served), "%s_%s", s->thumb_arg, s->name);
            serve_key(s, st, tkey, &tm);
            return;
        }
    }
    int ex = storage_stat(st, key, &meta, &s->err);
    if (ex < 0)
        return;
    if (ex == 0) {
        bs_error_set(&s->err, BS_ERR_NOT_FOUND, NULL);
        return;
    }
    snprintf(s->served, sizeof(s->served), "%s", s->name);
    if (s->thumb_listed) {
        char *orig = NULL;
        size_t on = 0;
        if (storage_get(st, key, 0, FILES_SNIFF_BYTES, &orig, &on, &s->err) != 0)
            return;
        const char *mime = files_sniff(orig, on);
        free(orig);
        orig = NULL;
        if (files_is_thumbable(mime)) {
            /* Made now, once: the original is read whole (it is at most the field's
             * maxSize), checked, resized and stored beside it. A request that finds
             * another one making the same thumbnail waits for it and serves its. */
            if (making_claim(tkey)) {
                bs_error_t werr;
                bs_error_init(&werr);
                if (storage_stat(st, tkey, &tm, &werr) == 1) {
                    making_release(tkey);
                    snprintf(s->served, sizeof(s->served), "%s_%s", s->thumb_arg, s->name);
                    serve_key(s, st, tkey, &tm);
                    return;
                }
            }
            int served = make_thumb(s, st, key, tkey, mime);
            making_release(tkey);
            if (served)
                return;
        }
    }
    serve_key(s, st, key, &meta);
}

/* Makes, stores and serves the thumbnail tkey of key; 1 when served, 0 when the
 * original is to be served instead (s->thumb_error says why). */
static int make_thumb(serve_t *s, storage_t *st, const char *key, const char *tkey, const char *mime)
{
    char *orig = NULL;
    size_t on = 0;
    if (storage_get(st, key, 0, -1, &orig, &on, &s->err) != 0)
        return 1; /* the storage's error is the answer */
    void *th = NULL;
    size_t tn = 0;
    bs_error_t terr;
    bs_error_init(&terr);
    int rc = thumb_make(orig, on, mime, &s->thumb, filepool_settings()->thumb_max_pixels, &th, &tn, &terr);
    free(orig);
    if (rc != 0) {
        /* PocketBase serves the original when a thumbnail cannot be made; so does
         * Basalt, saying why in a header. */
        s->thumb_error = strdup(terr.message);
        LOGF(LOG_INFO, "files", "no thumbnail %s of %s: %s", s->thumb_arg, key, terr.message);
        return 0;
    }
    bs_error_t perr;
    bs_error_init(&perr);
    storage_stat_t tm;
    int served = 0;
    if (storage_put(st, tkey, th, tn, mime, &perr) != 0) {
        LOGF(LOG_WARN, "files", "could not store the thumbnail %s: %s", tkey, perr.message);
    } else if (storage_stat(st, tkey, &tm, &perr) == 1) {
        /* Served from what was stored, so that ranges and ETags agree with later
         * requests. */
        snprintf(s->served, sizeof(s->served), "%s_%s", s->thumb_arg, s->name);
        serve_key(s, st, tkey, &tm);
        served = 1;
    }
    thumb_free(th);
    return served;
}

static void send_file(serve_t *s, req_ctx_t *ctx)
{
    h2o_req_t *req = ctx->req;
    if (req == NULL)
        return;
    /* Ranges are computed on the stored bytes: no compression on the way out. */
    req->compress_hint = H2O_COMPRESS_HINT_DISABLE;
    ctx_add_header(ctx, "accept-ranges", "bytes");
    if (s->etag[0])
        ctx_add_header(ctx, "etag", s->etag);
    ctx_add_header(ctx, "cache-control",
                   s->protected_file ? "private, max-age=2592000"
                                     : "max-age=2592000, stale-while-revalidate=86400");
    if (s->thumb_error != NULL) {
        char *h = arena_printf(&ctx->arena, "%.200s", s->thumb_error);
        for (char *p = h; p && *p; p++)
            if ((unsigned char)*p < ' ' || (unsigned char)*p > 126)
                *p = ' ';
        if (h)
            ctx_add_header(ctx, "x-basalt-thumb-error", h);
    }
    if (s->status == 304) {
        ctx_send_empty(ctx, 304);
        return;
    }
    if (s->status == 416) {
        char *cr = arena_printf(&ctx->arena, "bytes */%lld", (long long)s->total);
        if (cr)
            ctx_add_header(ctx, "content-range", cr);
        ctx_send_status(ctx, BS_ERR_RANGE_NOT_SATISFIABLE, NULL);
        return;
    }
    /* Uploaded content is served as a sandboxed document: an HTML or SVG file cannot
     * run script in the API's origin. */
    ctx_add_header(ctx, "content-security-policy",
                   "default-src 'none'; media-src 'self'; style-src 'unsafe-inline'; sandbox");
    ctx_add_header(ctx, "x-content-type-options", "nosniff");
    char *cd =
        arena_printf(&ctx->arena, "%s; filename=\"%s\"", s->download ? "attachment" : "inline", s->served);
    if (cd)
        ctx_add_header(ctx, "content-disposition", cd);
    if (s->status == 206) {
        char *cr = arena_printf(&ctx->arena, "bytes %lld-%lld/%lld", (long long)s->from,
                                (long long)(s->from + (int64_t)s->len - 1), (long long)s->total);
        if (cr)
            ctx_add_header(ctx, "content-range", cr);
    }
    char *body = s->body;
    s->body = NULL; /* taken by the response */
    ctx_send_owned(ctx, s->status, s->mime ? s->mime : "application/octet-stream", body, s->len, free);
}
static void serve_delivered(mailbox_msg_t *msg)
{
    serve_t *s = (serve_t *)msg;
    req_ctx_t *ctx = s->ctx;
    if (s->err.code != BS_ERR_OK) {
        if (s->err.code != BS_ERR_NOT_FOUND)
            LOGF(LOG_WARN, "files", "serving %s/%s/%s failed: %s", s->c->id, s->id, s->name, s->err.message);
        ctx_send_error(ctx, &s->err);
    } else {
        send_file(s, ctx);
    }
    free(s->body); /* NULL when the response took it */
    s->body = NULL;
    free((char *)s->thumb_error);
    s->thumb_error = NULL;
    ctx_async_end(ctx);
}

static void lookup_done(api_job_t *j, req_ctx_t *ctx)
{
    serve_t *s = j->data;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (!s->found) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
        return;
    }
    if (s->inlined) {
        if (s->err.code != BS_ERR_OK)
            ctx_send_error(ctx, &s->err);
        else
            send_file(s, ctx);
        free(s->body);
        s->body = NULL;
        return;
    }
    if (ctx->req == NULL)
        return;
    if (filepool_storage() == NULL) {
        ctx_send_status(ctx, BS_ERR_UNAVAILABLE, "File storage is not available.");
        return;
    }
    bs_error_init(&s->err);
    s->work.msg.deliver = serve_delivered;
    s->work.reply_to = &ctx->worker->mailbox;
    s->work.run = run_serve;
    ctx_async_begin(ctx);
    if (filepool_submit(&s->work) != 0) {
        bs_error_set(&s->err, BS_ERR_UNAVAILABLE, "The file pool is busy; please retry.");
        serve_delivered(&s->work.msg);
    }
}

void api_files_download(req_ctx_t *ctx, char **params)
{
    const collection_t *c = schema_find(ctx->schema, params[0]);
    if (c == NULL || !util_valid_id(params[1], strlen(params[1]))) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
        return;
    }
    if (!files_name_ok(params[2], strlen(params[2]))) {
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST,
                        "Invalid file name: stored names hold only letters, digits and _ . - + = * #.");
        return;
    }
    serve_t *s = arena_calloc(&ctx->arena, sizeof(*s));
    if (s == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    s->ctx = ctx;
    s->c = c;
    s->id = params[1];
    s->name = params[2];
    s->r = api_reader(ctx);
    const char *thumb = ctx_query(ctx, "thumb");
    if (thumb != NULL && thumb[0] != '\0' && files_thumb_parse(thumb, strlen(thumb), &s->thumb) == 0)
        s->thumb_arg = thumb; /* served only if the field lists it (or 100x100) */
    const char *dl = ctx_query(ctx, "download");
    s->download = dl != NULL && dl[0] != '\0' && strcmp(dl, "0") != 0 && strcasecmp(dl, "false") != 0;
    const char *tok = ctx_query(ctx, "token");
    if (tok != NULL && tok[0] != '\0') {
        bs_error_t terr;
        bs_error_init(&terr);
        s->token = tok;
        s->claims_ok = token_peek(tok, strlen(tok), &s->claims, &terr) == 0;
    }
    size_t n;
    const char *h = ctx_header(ctx, "range", &n);
    s->range = h ? arena_strndup(&ctx->arena, h, n) : NULL;
    int oom = 0;
    s->inm = ctx_header_list(ctx, "if-none-match", &n, &oom);
    api_read(ctx, run_lookup, lookup_done, s);
}

int api_parse_byte_range(const char *h, int64_t total, int64_t *from, int64_t *to)
{
    return parse_range(h, total, from, to);
}
