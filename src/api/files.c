/*
 * Files: uploads of file fields (for records.c and batch.c), GET
 * /api/files/{collection}/{recordId}/{filename} (thumbnails, downloads, ranges,
 * ETags) and POST /api/files/token.
 *
 * Nothing here blocks a loop: storage calls and thumbnails run on the file pool
 * (files/filepool.h) and answer through the worker's mailbox; the record and the
 * rules are read in a read job, as every other read. The order of an upload is
 * PocketBase's: the files are stored first (under names nobody references yet),
 * then the record is written; after the commit the files the write left
 * unreferenced are deleted, and after a failed write the new uploads are. A crash
 * between the two leaves unreferenced files only, never a reference to a missing one.
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

/* ---- uploads ---- */

typedef struct upload {
    char key[400]; /* storage key */
    char *data;    /* owned copy (the request's memory may go with the client) */
    size_t len;
    const char *mime;
    int stored;
    struct upload *next;
} upload_t;

struct api_uploads {
    files_work_t work; /* first */
    req_ctx_t *ctx;
    upload_t *head;
    size_t n;
    json_t *names_lists; /* owned: one array of names per prepared write */
    bs_error_t err;
    api_uploads_next_fn next;
    void *arg;
};

/* Deletes keys (strings; a trailing '/' is a prefix) on the pool, fire and forget. */
typedef struct {
    files_work_t work;
    json_t *keys; /* owned */
} cleanup_t;

static void run_cleanup(files_work_t *w)
{
    cleanup_t *c = (cleanup_t *)w;
    storage_t *s = filepool_storage();
    size_t i;
    json_t *k;
    json_array_foreach(c->keys, i, k)
    {
        const char *key = json_string_value(k);
        bs_error_t err;
        bs_error_init(&err);
        size_t n = strlen(key);
        int rc =
            n > 0 && key[n - 1] == '/' ? storage_delete_prefix(s, key, &err) : storage_delete(s, key, &err);
        if (rc != 0)
            LOGF(LOG_WARN, "files", "could not delete %s from the %s storage: %s (left as an orphan)", key,
                 s->kind, err.message);
    }
}

static void release_cleanup(files_work_t *w)
{
    cleanup_t *c = (cleanup_t *)w;
    json_decref(c->keys);
    free(c);
}

static void cleanup_keys(json_t *keys)
{
    if (keys == NULL || json_array_size(keys) == 0 || filepool_storage() == NULL) {
        json_decref(keys);
        return;
    }
    cleanup_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        json_decref(keys);
        return;
    }
    c->work.run = run_cleanup;
    c->work.release = release_cleanup;
    c->keys = keys;
    if (filepool_submit(&c->work) != 0) {
        LOGF(LOG_WARN, "files", "the file pool is full: %zu file(s) left as orphans", json_array_size(keys));
        release_cleanup(&c->work);
    }
}

static void free_data(api_uploads_t *u)
{
    for (upload_t *p = u->head; p != NULL; p = p->next) {
        free(p->data);
        p->data = NULL;
    }
}

void api_files_finish(api_uploads_t *u, int ok, json_t *gone)
{
    if (u != NULL) {
        free_data(u);
        if (!ok) {
            json_t *keys = json_array();
            for (upload_t *p = u->head; p != NULL; p = p->next)
                if (p->stored)
                    json_array_append_new(keys, json_string(p->key));
            cleanup_keys(keys);
        }
        json_decref(u->names_lists);
        u->names_lists = NULL;
    }
    if (ok)
        cleanup_keys(gone);
    else
        json_decref(gone);
}

/* The file field a part name addresses ("f", "f+", "+f"), or NULL. */
static const field_t *file_field_of(const collection_t *c, const char *key, size_t kl)
{
    if (kl > 1 && key[kl - 1] == '+')
        kl--;
    else if (kl > 1 && key[0] == '+') {
        key++;
        kl--;
    }
    const field_t *f = collection_field_n(c, key, kl);
    return f != NULL && f->type == FIELD_FILE ? f : NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int api_files_prepare(req_ctx_t *ctx, api_uploads_t **up, const collection_t *c, json_t *body,
                      const char *record_id, const body_file_t *files, const char *prefix,
                      const json_t **names_out, bs_error_t *err)
{
    *names_out = NULL;
    size_t pl = prefix ? strlen(prefix) : 0;
    int any = 0;
    for (const body_file_t *f = files; f != NULL; f = f->next)
        if (pl == 0 || strncmp(f->field, prefix, pl) == 0)
            any = 1;
    if (!any)
        return 0;
    arena_t *a = &ctx->arena;
    if (filepool_storage() == NULL) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "File storage is not available.");
        return -1;
    }
    /* The record's id decides where its files go: a create gets it now. */
    char idbuf[UTIL_ID_LEN + 1];
    if (record_id == NULL || record_id[0] == '\0') {
        json_t *jid = json_object_get(body, "id");
        if (json_is_string(jid) && json_string_length(jid) > 0) {
            record_id = json_string_value(jid);
        } else {
            util_random_id(idbuf);
            json_object_set_new(body, "id", json_string(idbuf));
            record_id = json_string_value(json_object_get(body, "id"));
        }
    }
    if (!util_valid_id(record_id, strlen(record_id))) {
        bs_error_field(err, a, "id", "validation_invalid_id",
                       "The id must be 1-100 characters of letters, digits, _ or -.");
        return -1;
    }
    api_uploads_t *u = *up;
    if (u == NULL) {
        u = arena_calloc(a, sizeof(*u));
        if (u == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        u->ctx = ctx;
        u->names_lists = json_array();
        *up = u;
    }
    json_t *names = json_array();
    json_array_append_new(u->names_lists, names);
    /* Per body key: the new names, in the order of the parts. */
    json_t *by_key = json_object();
    for (const body_file_t *f = files; f != NULL; f = f->next) {
        if (pl > 0 && strncmp(f->field, prefix, pl) != 0)
            continue;
        const char *key = f->field + pl;
        const field_t *fld = file_field_of(c, key, strlen(key));
        if (fld == NULL) {
            bs_error_set(
                err, BS_ERR_BAD_REQUEST,
                "The upload \"%.100s\" does not name a file field of \"%s\" (send files under a file "
                "field's name, or name+ / +name to add them).",
                key, c->name);
            json_decref(by_key);
            return -1;
        }
        int64_t max = fld->max_size > 0 ? fld->max_size : FILES_DEFAULT_MAX_SIZE;
        if ((int64_t)f->len > max) {
            bs_error_field(err, a, fld->name, "validation_file_size_limit",
                           "Failed to upload \"%.100s\" - the maximum allowed file size is %lld bytes.",
                           f->filename, (long long)max);
            continue;
        }
        const char *mime = files_sniff(f->data, f->len);
        if (fld->mime_types != NULL) {
            size_t nm = json_array_size(fld->mime_types);
            const char **list = arena_alloc(a, (nm ? nm : 1) * sizeof(*list));
            for (size_t i = 0; list && i < nm; i++)
                list[i] = json_string_value(json_array_get(fld->mime_types, i));
            if (list == NULL || !files_mime_allowed(mime, list, nm)) {
                bs_error_field(err, a, fld->name, "validation_invalid_mime_type",
                               "\"%.100s\" mime type must be one of: %s (its content is %s).", f->filename,
                               nm ? json_string_value(json_array_get(fld->mime_types, 0)) : "", mime);
                continue;
            }
        }
        upload_t *p = arena_calloc(a, sizeof(*p));
        if (p == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            break;
        }
        char rnd[21], name[FILES_MAX_NAME + 2];
        char r1[UTIL_ID_LEN + 1], r2[UTIL_ID_LEN + 1];
        util_random_id(r1);
        util_random_id(r2);
        memcpy(rnd, r1, 10);
        memcpy(rnd + 10, r2, 10);
        rnd[20] = '\0';
        const char *fn = f->filename ? f->filename : "";
        files_unique_name(fn, strlen(fn), mime, rnd, name);
        snprintf(p->key, sizeof(p->key), "%s/%s/%s", c->id, record_id, name);
        p->mime = mime;
        p->len = f->len;
        p->data = malloc(f->len ? f->len : 1);
        if (p->data == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            break;
        }
        memcpy(p->data, f->data, f->len);
        p->next = u->head;
        u->head = p;
        u->n++;
        json_array_append_new(names, json_string(name));
        json_t *lst = json_object_get(by_key, key);
        if (lst == NULL) {
            lst = json_array();
            json_object_set_new(by_key, key, lst);
        }
        json_array_append_new(lst, json_string(name));
    }
    if (err->code != BS_ERR_OK) {
        json_decref(by_key);
        return -1;
    }
    /* Into the body, as PocketBase merges them: under a plain name the names the
     * client kept (string values of the same key) come first, then the new files;
     * under a modifier key the new files only. Keys in a fixed order. */
    size_t nk = json_object_size(by_key), i = 0;
    const char **keys = arena_alloc(a, (nk ? nk : 1) * sizeof(*keys));
    const char *k;
    json_t *v;
    json_object_foreach(by_key, k, v) if (keys) keys[i++] = k;
    if (keys != NULL)
        qsort(keys, nk, sizeof(*keys), cmp_str);
    for (i = 0; keys && i < nk; i++) {
        k = keys[i];
        json_t *lst = json_object_get(by_key, k);
        size_t kl = strlen(k);
        int modifier = k[0] == '+' || k[kl - 1] == '+';
        json_t *merged = json_array();
        json_t *old = json_object_get(body, k);
        if (!modifier && old != NULL) {
            if (json_is_string(old) && json_string_length(old) > 0)
                json_array_append(merged, old);
            else if (json_is_array(old)) {
                size_t j;
                json_t *x;
                json_array_foreach(old, j, x) if (json_is_string(x) && json_string_length(x) > 0)
                    json_array_append(merged, x);
            }
        }
        json_array_extend(merged, lst);
        json_object_set_new(body, k, merged);
    }
    json_decref(by_key);
    *names_out = names;
    return 0;
}

static void run_store(files_work_t *w)
{
    api_uploads_t *u = (api_uploads_t *)w;
    storage_t *s = filepool_storage();
    for (upload_t *p = u->head; p != NULL && u->err.code == BS_ERR_OK; p = p->next) {
        if (storage_put(s, p->key, p->data, p->len, p->mime, &u->err) == 0)
            p->stored = 1;
    }
    free_data(u);
}

static void store_delivered(mailbox_msg_t *msg)
{
    api_uploads_t *u = (api_uploads_t *)msg;
    req_ctx_t *ctx = u->ctx;
    if (u->err.code == BS_ERR_OK && ctx->req == NULL)
        bs_error_set(&u->err, BS_ERR_UNAVAILABLE, "The client has gone.");
    if (u->err.code != BS_ERR_OK) {
        LOGF(LOG_WARN, "files", "upload to the %s storage failed: %s", filepool_storage()->kind,
             u->err.message);
        api_files_finish(u, 0, NULL);
        u->next(ctx, u->arg, &u->err);
    } else {
        u->next(ctx, u->arg, NULL);
    }
    ctx_async_end(ctx);
}

void api_files_store(req_ctx_t *ctx, api_uploads_t *u, api_uploads_next_fn next, void *arg)
{
    if (u == NULL || u->n == 0) {
        next(ctx, arg, NULL);
        return;
    }
    u->next = next;
    u->arg = arg;
    bs_error_init(&u->err);
    u->work.msg.deliver = store_delivered;
    u->work.reply_to = &ctx->worker->mailbox;
    u->work.run = run_store;
    ctx_async_begin(ctx);
    if (filepool_submit(&u->work) != 0) {
        bs_error_set(&u->err, BS_ERR_UNAVAILABLE, "The file pool is busy; please retry.");
        store_delivered(&u->work.msg);
    }
}

json_t *api_files_gone_new(const api_uploads_t *u, const collection_t *c, int deleting)
{
    (void)u;
    for (size_t i = 0; i < c->nfields; i++)
        if (c->fields[i].type == FIELD_FILE)
            return json_array();
    /* A delete may cascade to collections with files. */
    return deleting || u != NULL ? json_array() : NULL;
}

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
