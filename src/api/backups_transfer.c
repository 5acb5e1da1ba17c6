/*
 * The backups API's archives in and out (see backups.c's opening for the API):
 *   POST /api/backups/upload        multipart, field "file": checked, then stored
 *   GET  /api/backups/:key?token=   streamed in chunks, with ranges, for a superuser
 *                                   file token
 * The disk work runs on a task's thread (backups_int.h) and the next chunks of a
 * download on the file pool, so no event loop waits on the disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "api/backups_int.h"
#include "auth/token.h"
#include "backup/archive.h"
#include "base/log.h"
#include "base/util.h"
#include "files/filepool.h"

/* Messages name paths; a path long enough to truncate one still leaves it readable. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

/* ---- upload ---- */

/* Finds the multipart part named "file": its filename and bytes (pointers into
 * body). 0, or -1 with a message. Pure. */
static int find_file_part(const char *ctype, const char *body, size_t n, const char **fname,
                          size_t *fname_len, const char **data, size_t *dlen, const char **why)
{
    const char *bp = ctype ? strcasestr(ctype, "boundary=") : NULL;
    if (ctype == NULL || strncasecmp(ctype, "multipart/form-data", 19) != 0 || bp == NULL) {
        *why = "The upload must be multipart/form-data with a \"file\" field.";
        return -1;
    }
    bp += 9;
    int quoted = *bp == '"';
    if (quoted)
        bp++;
    size_t bl = strcspn(bp, "\";, \t");
    if (bl == 0 || bl > 200) {
        *why = "The multipart boundary is invalid.";
        return -1;
    }
    char delim[210];
    snprintf(delim, sizeof(delim), "--%.*s", (int)bl, bp);
    size_t dl = bl + 2;
    const char *p = memmem(body, n, delim, dl);
    while (p != NULL) {
        p += dl;
        size_t rest = n - (size_t)(p - body);
        if (rest < 2 || p[0] != '\r' || p[1] != '\n')
            break;
        p += 2;
        rest -= 2;
        const char *hend = memmem(p, rest, "\r\n\r\n", 4);
        if (hend == NULL)
            break;
        const char *d = hend + 4;
        const char *next = memmem(d, n - (size_t)(d - body), delim, dl);
        if (next == NULL || next - d < 2)
            break;
        /* The part's headers: is it name="file" with a filename? */
        size_t hl = (size_t)(hend - p);
        const char *nm = memmem(p, hl, "name=\"file\"", 11);
        const char *fn = memmem(p, hl, "filename=\"", 10);
        if (nm != NULL && (nm == p || nm[-1] == ' ' || nm[-1] == ';')) {
            if (fn == NULL) {
                *why = "The \"file\" field must be a file.";
                return -1;
            }
            fn += 10;
            const char *fe = memchr(fn, '"', (size_t)(hend - fn));
            if (fe == NULL) {
                *why = "The file part has a malformed filename.";
                return -1;
            }
            *fname = fn;
            *fname_len = (size_t)(fe - fn);
            *data = d;
            *dlen = (size_t)(next - d) - 2;
            return 0;
        }
        p = next;
    }
    *why = "The upload has no \"file\" field.";
    return -1;
}

static void upload_work(api_backups_task_t *t)
{
    char dir[1100], zip[1400], tmp[1500];
    if (api_backups_new_path(t, dir, sizeof(dir), zip, sizeof(zip)) != 0)
        return;
    snprintf(tmp, sizeof(tmp), "%s/.upload-%08x.tmp", dir, (unsigned)getpid() ^ (unsigned)time(NULL));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, t->data, t->len) != (ssize_t)t->len || fsync(fd) != 0) {
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        api_backups_task_fail(t, BS_ERR_UNAVAILABLE, "Cannot store the upload: %s.", strerror(errno));
        return;
    }
    close(fd);
    char err[1024];
    if (backup_zip_check(tmp, err, sizeof(err)) != 0) {
        unlink(tmp);
        api_backups_task_fail(t, BS_ERR_BAD_REQUEST, "The file is not a Basalt or PocketBase backup: %s.",
                              err);
        return;
    }
    if (rename(tmp, zip) != 0) {
        unlink(tmp);
        api_backups_task_fail(t, BS_ERR_UNAVAILABLE, "Cannot store the upload: %s.", strerror(errno));
    }
}

void api_backups_upload(req_ctx_t *ctx, char **params)
{
    (void)params;
    if (api_require_superuser(ctx) != 0)
        return;
    size_t clen = 0;
    const char *ct = ctx_header(ctx, "content-type", &clen);
    char ctype[512] = "";
    if (ct != NULL)
        snprintf(ctype, sizeof(ctype), "%.*s", (int)(clen < 511 ? clen : 511), ct);
    const char *fname, *data, *why = NULL;
    size_t fl, dlen;
    if (ctx->req == NULL)
        return;
    if (find_file_part(ct ? ctype : NULL, ctx->req->entity.base, ctx->req->entity.len, &fname, &fl, &data,
                       &dlen, &why) != 0) {
        bs_error_t err;
        bs_error_init(&err);
        bs_error_set(&err, BS_ERR_VALIDATION, NULL);
        bs_error_field(&err, &ctx->arena, "file", "validation_required", why);
        ctx_send_error(ctx, &err);
        return;
    }
    char key[200];
    snprintf(key, sizeof(key), "%.*s", (int)(fl < 199 ? fl : 199), fname);
    if (fl >= 199 || !api_backups_key_ok(key)) {
        bs_error_t err;
        bs_error_init(&err);
        bs_error_set(&err, BS_ERR_VALIDATION, NULL);
        bs_error_field(&err, &ctx->arena, "file", "validation_invalid_name",
                       "The file name must be letters, digits, _, - or ., ending in .zip.");
        ctx_send_error(ctx, &err);
        return;
    }
    if (api_backups_take_busy(ctx) != 0)
        return;
    api_backups_task_t *t = api_backups_task_new(ctx);
    if (t == NULL || (t->data = malloc(dlen ? dlen : 1)) == NULL) {
        if (t != NULL) {
            free(t);
            ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        }
        api_backups_release_busy();
        return;
    }
    memcpy(t->data, data, dlen);
    t->len = dlen;
    t->holds_busy = 1;
    snprintf(t->key, sizeof(t->key), "%s", key);
    t->work = upload_work;
    t->done = api_backups_answer_empty;
    api_audit(ctx, "backup.upload", key, "");
    api_backups_task_start(ctx, t);
}

/* ---- download ---- */

/* A download is streamed from the file in chunks of DL_CHUNK: one chunk in memory per
 * download whatever the archive's size. The first is read on the task's thread with
 * the open and the checks; each next one on the file pool when libh2o asks for it
 * (proceed: the previous chunk went out), and sent from the request's worker. */
#define DL_CHUNK (256 * 1024)

typedef struct {
    files_work_t work; /* first: a chunk read on the file pool */
    h2o_generator_t gen;
    h2o_req_t *req;    /* NULL once the request is gone (worker thread only) */
    mailbox_t *worker; /* the request's worker */
    int fd;            /* owned */
    int64_t pos, end;  /* the next byte to send; one past the last */
    char *buf;         /* owned: the chunk being sent or read */
    size_t n;          /* bytes in buf */
    int err;           /* errno of the last read (0: none; EIO: the file shrank) */
    int reading, gone; /* a read is at the pool; the request's pool was cleared */
} dl_stream_t;

typedef struct {
    dl_stream_t *s;
} dl_guard_t;

static void dl_free(dl_stream_t *s)
{
    close(s->fd);
    free(s->buf);
    free(s);
}

/* The request's memory pool is cleared (sent whole, or the client went): the stream
 * goes with it, or, when a read is at the pool, once that read comes back. */
static void dl_guard_dispose(void *p)
{
    dl_stream_t *s = ((dl_guard_t *)p)->s;
    s->gone = 1;
    s->req = NULL;
    if (!s->reading)
        dl_free(s);
}

/* Reads up to DL_CHUNK bytes at pos into buf (any thread). */
static void dl_read_at(int fd, int64_t pos, int64_t end, char *buf, size_t *n, int *err)
{
    size_t want = (size_t)(end - pos < DL_CHUNK ? end - pos : DL_CHUNK), got = 0;
    *err = 0;
    while (got < want) {
        ssize_t k = pread(fd, buf + got, want - got, (off_t)(pos + (int64_t)got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            *err = k < 0 ? errno : EIO; /* EIO: the file is shorter than it was */
            break;
        }
        got += (size_t)k;
    }
    *n = got;
}

static void dl_send(dl_stream_t *s)
{
    s->pos += (int64_t)s->n;
    h2o_iovec_t v = h2o_iovec_init(s->buf, s->n);
    h2o_send(s->req, &v, 1, s->pos >= s->end ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

/* The client has the length: a short body is the only way left to say it failed. */
static void dl_abort(dl_stream_t *s, const char *why)
{
    LOGF(LOG_WARN, "backup", "a backup download stopped at byte %lld of %lld: %s", (long long)s->pos,
         (long long)s->end, why);
    h2o_send(s->req, NULL, 0, H2O_SEND_STATE_ERROR);
}

static void dl_pool_read(files_work_t *w)
{
    dl_stream_t *s = (dl_stream_t *)w;
    dl_read_at(s->fd, s->pos, s->end, s->buf, &s->n, &s->err);
}

static void dl_pool_done(mailbox_msg_t *msg)
{
    dl_stream_t *s = (dl_stream_t *)msg;
    s->reading = 0;
    if (s->gone) {
        dl_free(s);
        return;
    }
    if (s->err != 0 || s->n == 0) {
        dl_abort(s, s->err == EIO ? "the archive was cut short while it was read" : strerror(s->err));
        return;
    }
    dl_send(s);
}

static void dl_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    dl_stream_t *s = (dl_stream_t *)((char *)gen - offsetof(dl_stream_t, gen));
    (void)req;
    if (s->gone || s->pos >= s->end)
        return;
    memset(&s->work, 0, sizeof(s->work));
    s->work.msg.deliver = dl_pool_done;
    s->work.reply_to = s->worker;
    s->work.run = dl_pool_read;
    s->reading = 1;
    if (filepool_submit(&s->work) != 0) {
        s->reading = 0;
        dl_abort(s, "the file pool is busy or stopped");
    }
}

static void dl_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    dl_stream_t *s = (dl_stream_t *)((char *)gen - offsetof(dl_stream_t, gen));
    s->req = NULL; /* the pool's clearing follows and frees */
}

static void download_work(api_backups_task_t *t)
{
    char zip[1400];
    api_backups_key_path(t->key, zip, sizeof(zip));
    int fd = open(zip, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        api_backups_task_fail(t, BS_ERR_NOT_FOUND, "There is no backup named %s.", t->key);
        return;
    }
    t->fd = fd;
    t->size = st.st_size;
    int64_t from = 0, to = st.st_size - 1;
    int rr = api_parse_byte_range(t->range[0] ? t->range : NULL, st.st_size, &from, &to);
    if (rr < 0) {
        t->http_status = 416;
        return;
    }
    t->http_status = rr == 1 ? 206 : 200;
    t->from = from;
    t->to = to;
    if (st.st_size == 0)
        return;
    t->data = malloc(DL_CHUNK);
    int err = 0;
    if (t->data != NULL)
        dl_read_at(fd, from, to + 1, t->data, &t->len, &err);
    if (t->data == NULL || err != 0 || t->len == 0)
        api_backups_task_fail(t, BS_ERR_UNAVAILABLE, "%s", "The backup could not be read; please retry.");
}

static void download_done(api_backups_task_t *t, req_ctx_t *ctx)
{
    if (t->status != 0) {
        ctx_send_status(ctx, t->code, t->message);
        return;
    }
    char hv[300];
    ctx_add_header(ctx, "accept-ranges", "bytes");
    ctx_add_header(ctx, "cache-control", "no-store");
    if (t->http_status == 416) {
        snprintf(hv, sizeof(hv), "bytes */%lld", (long long)t->size);
        ctx_add_header(ctx, "content-range", hv);
        ctx_send_status(ctx, BS_ERR_RANGE_NOT_SATISFIABLE, NULL);
        return;
    }
    snprintf(hv, sizeof(hv), "attachment; filename=\"%s\"", t->key);
    ctx_add_header(ctx, "content-disposition", hv);
    if (t->size == 0) {
        ctx_send_body(ctx, 200, "application/zip", "", 0);
        return;
    }
    if (t->http_status == 206) {
        snprintf(hv, sizeof(hv), "bytes %lld-%lld/%lld", (long long)t->from, (long long)t->to,
                 (long long)t->size);
        ctx_add_header(ctx, "content-range", hv);
    }
    dl_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    h2o_req_t *req = ctx->req;
    if (req == NULL) {
        free(s);
        return;
    }
    dl_guard_t *g = h2o_mem_alloc_shared(&req->pool, sizeof(*g), dl_guard_dispose);
    /* The stream takes the file and the first chunk. */
    s->fd = t->fd;
    t->fd = -1;
    s->buf = t->data;
    t->data = NULL;
    s->n = t->len;
    s->pos = t->from;
    s->end = t->to + 1;
    s->worker = &ctx->worker->mailbox;
    s->gen.proceed = dl_proceed;
    s->gen.stop = dl_stop;
    g->s = s;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/zip"));
    req = ctx_begin_stream(ctx, t->http_status);
    if (req == NULL)
        return; /* the pool's clearing frees the stream */
    s->req = req;
    req->res.reason = t->http_status == 206 ? "Partial Content" : "OK";
    req->res.content_length = (size_t)(s->end - s->pos);
    req->compress_hint = H2O_COMPRESS_HINT_DISABLE;
    h2o_start_response(req, &s->gen);
    dl_send(s);
}

typedef struct {
    token_claims_t claims;
    const collection_t *coll;
    json_t *rec;
    char token[2048];
    char key[200];
    char range[128]; /* the Range header ("" : none; a longer one is ignored, as RFC 9110 allows) */
} dl_check_t;

static int run_dl_load(store_job_t *job, store_conn_t *conn)
{
    dl_check_t *d = ((api_job_t *)job)->data;
    bs_error_t err;
    bs_error_init(&err);
    d->rec = record_load(conn, d->coll, "id", d->claims.id, &err);
    return 0;
}

static void dl_loaded(api_job_t *j, req_ctx_t *ctx)
{
    dl_check_t *d = j->data;
    json_t *rec = d->rec;
    d->rec = NULL;
    bs_error_t err;
    bs_error_init(&err);
    const char *tk = rec ? json_string_value(json_object_get(rec, "tokenKey")) : NULL;
    int ok = rec != NULL && token_verify(d->token, strlen(d->token), tk ? tk : "",
                                         d->coll->token_secret ? d->coll->token_secret : "",
                                         util_now_ms() / 1000, "file", &err) == 0;
    json_decref(rec);
    if (!ok) {
        ctx_send_status(ctx, BS_ERR_FORBIDDEN, "Insufficient permissions to access the resource.");
        return;
    }
    api_backups_task_t *t = api_backups_task_new(ctx);
    if (t == NULL)
        return;
    snprintf(t->key, sizeof(t->key), "%s", d->key);
    snprintf(t->range, sizeof(t->range), "%s", d->range);
    t->work = download_work;
    t->done = download_done;
    api_backups_task_start(ctx, t);
}

void api_backups_download(req_ctx_t *ctx, char **params)
{
    if (!api_backups_key_ok(params[0])) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, "There is no backup with this key.");
        return;
    }
    /* The file token of a superuser, as PocketBase checks it (the header token is not
     * used: a download is a plain link). */
    const char *tok = ctx_query(ctx, "token");
    dl_check_t *d = arena_calloc(&ctx->arena, sizeof(*d));
    if (d == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    bs_error_t err;
    bs_error_init(&err);
    if (tok == NULL || strlen(tok) >= sizeof(d->token) ||
        token_peek(tok, strlen(tok), &d->claims, &err) != 0 || strcmp(d->claims.type, "file") != 0 ||
        (d->coll = schema_find(ctx->schema, d->claims.collection_id)) == NULL ||
        strcmp(d->coll->name, "_superusers") != 0) {
        ctx_send_status(ctx, BS_ERR_FORBIDDEN, "Insufficient permissions to access the resource.");
        return;
    }
    snprintf(d->token, sizeof(d->token), "%s", tok);
    snprintf(d->key, sizeof(d->key), "%s", params[0]);
    size_t rn;
    const char *range = ctx_header(ctx, "range", &rn);
    if (range != NULL && rn < sizeof(d->range))
        snprintf(d->range, sizeof(d->range), "%.*s", (int)rn, range);
    api_read(ctx, run_dl_load, dl_loaded, d);
}
