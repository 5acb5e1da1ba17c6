/*
 * Files, the uploads of file fields (api.h's api_files_prepare, _store, _finish and
 * _gone_new, for records.c and batch.c); serving them and the file tokens are in
 * files.c.
 *
 * Nothing here blocks a loop: storage calls run on the file pool (files/filepool.h)
 * and answer through the worker's mailbox. The order of an upload is PocketBase's:
 * the files are stored first (under names nobody references yet), then the record is
 * written; after the commit the files the write left unreferenced are deleted, and
 * after a failed write the new uploads are. A crash between the two leaves
 * unreferenced files only, never a reference to a missing one.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "base/log.h"
#include "base/util.h"
#include "files/fileinfo.h"
#include "files/filepool.h"

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
