/*
 * PocketBase's backups API (apis/backup.go; the JS SDK's BackupService):
 *   GET    /api/backups                 list: [{key, size, modified}]
 *   POST   /api/backups                 {name?}: a zip of the database and storage/
 *   POST   /api/backups/upload          multipart, field "file": a zip made elsewhere
 *   GET    /api/backups/:key?token=     download, with a superuser file token
 *   POST   /api/backups/:key/restore    restore it and restart the process
 *   DELETE /api/backups/:key
 * and POST /api/files/token, the minimal file-token issuance the download needs
 * (superusers only here; see the report on issue 15).
 *
 * Archives live in DIR/backups/ as PocketBase keeps them in pb_data/backups. Every
 * operation that touches the disk runs on a thread of its own (one per operation:
 * they are rare and superusers only) and answers on the request's worker through its
 * mailbox, so no event loop waits on the disk. Only one create, upload or restore runs
 * at a time, as in PocketBase.
 *
 * This file holds the task machinery (backups_int.h), list, create, restore and
 * delete; the archives' way in and out (upload, download) is backups_transfer.c.
 *
 * Restore: the archive is extracted and checked into DIR/.pending-restore while the
 * server runs on; then the server answers 204, shuts down cleanly (draining requests,
 * shipping the continuous backup's last frames, closing the store) and executes itself
 * again, and at start-up, before the store opens, the current database is moved into
 * DIR/.pre-restore-<time>/ and the restored one takes its place. PocketBase restarts
 * the process the same way; nothing is deleted.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
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

static char g_dir[1024];
static int g_sqlite;
static int g_busy;    /* atomic: a create, upload or restore is running */
static int g_restart; /* atomic: restart after shutdown (a restore is pending) */
static int g_running; /* atomic: task threads that have not yet posted their answer */

void api_backups_configure(const char *data_dir, int sqlite)
{
    snprintf(g_dir, sizeof(g_dir), "%s", data_dir);
    g_sqlite = sqlite;
}

void api_backups_drain(void)
{
    int logged = 0;
    while (__atomic_load_n(&g_running, __ATOMIC_ACQUIRE) > 0) {
        if (!logged++)
            LOGF(LOG_INFO, "backup", "waiting for a backup operation to finish before shutting down");
        usleep(50000);
    }
}

int api_backups_restart_requested(void)
{
    return __atomic_load_n(&g_restart, __ATOMIC_ACQUIRE);
}

static void bg_delivered(mailbox_msg_t *msg)
{
    api_backups_task_t *t = (api_backups_task_t *)msg;
    req_ctx_t *ctx = t->ctx;
    t->done(t, ctx);
    if (t->holds_busy)
        api_backups_release_busy();
    if (t->fd >= 0)
        close(t->fd);
    free(t->data);
    free(t);
    ctx_async_end(ctx);
}

static void *bg_main(void *arg)
{
    api_backups_task_t *t = arg;
    t->work(t);
    mailbox_post(t->reply_to, &t->msg);
    /* After the post: shutdown waits for this before the workers (and their
     * mailboxes) go away. */
    __atomic_sub_fetch(&g_running, 1, __ATOMIC_ACQ_REL);
    return NULL;
}

void api_backups_task_fail(api_backups_task_t *t, bs_code_t code, const char *fmt, const char *a)
{
    t->status = -1;
    t->code = code;
    snprintf(t->message, sizeof(t->message), fmt, a);
}

/* Runs t->work on a new thread; t->done follows on ctx's worker. Takes t. */
void api_backups_task_start(req_ctx_t *ctx, api_backups_task_t *t)
{
    t->msg.deliver = bg_delivered;
    t->reply_to = &ctx->worker->mailbox;
    t->ctx = ctx;
    ctx_async_begin(ctx);
    pthread_attr_t attr;
    pthread_t th;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    __atomic_add_fetch(&g_running, 1, __ATOMIC_ACQ_REL);
    if (pthread_create(&th, &attr, bg_main, t) != 0) {
        __atomic_sub_fetch(&g_running, 1, __ATOMIC_ACQ_REL);
        api_backups_task_fail(t, BS_ERR_UNAVAILABLE, "%s",
                              "Cannot start the backup operation; please retry.");
        bg_delivered(&t->msg);
    }
    pthread_attr_destroy(&attr);
}

api_backups_task_t *api_backups_task_new(req_ctx_t *ctx)
{
    api_backups_task_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
    else
        t->fd = -1;
    return t;
}

void api_backups_answer_empty(api_backups_task_t *t, req_ctx_t *ctx)
{
    if (t->status != 0)
        ctx_send_status(ctx, t->code, t->message);
    else
        ctx_send_empty(ctx, 204);
}

/* A key names a file in the backups folder: [A-Za-z0-9_.-], ends in .zip, no dot
 * first (no hidden, temporary or parent names). */
int api_backups_key_ok(const char *k)
{
    size_t n = k ? strlen(k) : 0;
    if (n < 5 || n > 150 || k[0] == '.' || strcmp(k + n - 4, ".zip") != 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* PocketBase's rule for new names: lower-case letters, digits, _ and -, then .zip. */
static int new_name_ok(const char *k)
{
    if (!api_backups_key_ok(k))
        return 0;
    for (const char *p = k; p < k + strlen(k) - 4; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

void api_backups_dir(char *out, size_t n)
{
    snprintf(out, n, "%s/backups", g_dir);
}

void api_backups_key_path(const char *key, char *out, size_t n)
{
    snprintf(out, n, "%s/backups/%s", g_dir, key);
}

int api_backups_take_busy(req_ctx_t *ctx)
{
    int expected = 0;
    if (!__atomic_compare_exchange_n(&g_busy, &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST,
                        "Try again later - another backup/restore operation has already been started.");
        return -1;
    }
    return 0;
}

/* Ends the hold that api_backups_take_busy took. */
void api_backups_release_busy(void)
{
    __atomic_store_n(&g_busy, 0, __ATOMIC_RELEASE);
}

int api_backups_new_path(api_backups_task_t *t, char *dir, size_t dn, char *zip, size_t zn)
{
    api_backups_dir(dir, dn);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        api_backups_task_fail(t, BS_ERR_UNAVAILABLE, "Cannot create the backups folder: %s.",
                              strerror(errno));
        return -1;
    }
    api_backups_key_path(t->key, zip, zn);
    struct stat st;
    if (stat(zip, &st) == 0) {
        api_backups_task_fail(t, BS_ERR_BAD_REQUEST, "A backup named %s already exists.", t->key);
        return -1;
    }
    return 0;
}

/* ---- list ---- */

typedef struct {
    char key[256];
    long long size;
    int64_t mtime_ms;
} entry_t;

static int cmp_entry(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    return x->mtime_ms < y->mtime_ms ? 1 : x->mtime_ms > y->mtime_ms ? -1 : strcmp(x->key, y->key);
}

static void list_work(api_backups_task_t *t)
{
    char dir[1100];
    api_backups_dir(dir, sizeof(dir));
    buf_t b;
    arena_t a;
    arena_init(&a, 4096);
    buf_init(&b, &a);
    entry_t *e = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir(dir);
    while (d != NULL) {
        struct dirent *de = readdir(d);
        if (de == NULL)
            break;
        if (!api_backups_key_ok(de->d_name))
            continue;
        char p[1400];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            entry_t *q = realloc(e, cap * sizeof(*e));
            if (q == NULL)
                break;
            e = q;
        }
        snprintf(e[n].key, sizeof(e[n].key), "%s", de->d_name);
        e[n].size = (long long)st.st_size;
        e[n].mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
        n++;
    }
    if (d != NULL)
        closedir(d);
    if (n > 1)
        qsort(e, n, sizeof(*e), cmp_entry);
    buf_putc(&b, '[');
    for (size_t i = 0; i < n; i++) {
        char when[32];
        util_format_time(e[i].mtime_ms, when);
        buf_printf(&b, "%s{\"key\":", i ? "," : "");
        util_json_quote(&b, e[i].key, strlen(e[i].key));
        buf_printf(&b, ",\"size\":%lld,\"modified\":\"%s\"}", e[i].size, when);
    }
    buf_putc(&b, ']');
    free(e);
    if (b.oom) {
        api_backups_task_fail(t, BS_ERR_NOMEM, "%s", "The server is out of memory; please retry.");
    } else {
        t->data = malloc(b.len + 1);
        if (t->data != NULL) {
            memcpy(t->data, b.data, b.len);
            t->len = b.len;
        } else
            api_backups_task_fail(t, BS_ERR_NOMEM, "%s", "The server is out of memory; please retry.");
    }
    arena_free(&a);
}

static void list_done(api_backups_task_t *t, req_ctx_t *ctx)
{
    if (t->status != 0) {
        ctx_send_status(ctx, t->code, t->message);
        return;
    }
    ctx_add_header(ctx, "cache-control", "no-store");
    ctx_send_json(ctx, 200, t->data, t->len);
}

void api_backups_list(req_ctx_t *ctx, char **params)
{
    (void)params;
    if (api_require_superuser(ctx) != 0)
        return;
    api_backups_task_t *t = api_backups_task_new(ctx);
    if (t == NULL)
        return;
    t->work = list_work;
    t->done = list_done;
    api_backups_task_start(ctx, t);
}

/* ---- create ---- */

static void create_work(api_backups_task_t *t)
{
    char dir[1100], zip[1400], db[1100], storage[1100];
    if (api_backups_new_path(t, dir, sizeof(dir), zip, sizeof(zip)) != 0)
        return;
    snprintf(db, sizeof(db), "%s/data.db", g_dir);
    snprintf(storage, sizeof(storage), "%s/storage", g_dir);
    char err[1024];
    if (backup_zip_create(db, storage, zip, err, sizeof(err)) != 0) {
        LOGF(LOG_ERROR, "backup", "creating %s failed: %s", t->key, err);
        api_backups_task_fail(t, BS_ERR_UNAVAILABLE, "The backup could not be created: %s.", err);
        return;
    }
    LOGF(LOG_INFO, "backup", "created %s", t->key);
}

void api_backups_create(req_ctx_t *ctx, char **params)
{
    (void)params;
    if (api_require_superuser(ctx) != 0)
        return;
    if (!g_sqlite) {
        ctx_send_status(
            ctx, BS_ERR_BAD_REQUEST,
            "Backups through the API are of the embedded database; a PostgreSQL deployment is backed "
            "up with pgBackRest (docs/backups.md).");
        return;
    }
    bs_error_t err;
    bs_error_init(&err);
    json_t *body = ctx_body(ctx, &err);
    if (body == NULL) {
        ctx_send_error(ctx, &err);
        return;
    }
    const json_t *name = json_object_get(body, "name");
    char key[200];
    if (name != NULL && !json_is_null(name) && !(json_is_string(name) && json_string_length(name) == 0)) {
        if (!json_is_string(name) || !new_name_ok(json_string_value(name))) {
            json_decref(body);
            bs_error_set(&err, BS_ERR_VALIDATION, NULL);
            bs_error_field(
                &err, &ctx->arena, "name", "validation_invalid_format",
                "Must be lower-case letters, digits, _ or -, ending in .zip (at most 150 characters).");
            ctx_send_error(ctx, &err);
            return;
        }
        snprintf(key, sizeof(key), "%s", json_string_value(name));
    } else {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(key, sizeof(key), "pb_backup_%Y%m%d%H%M%S.zip", &tm);
    }
    json_decref(body);
    if (api_backups_take_busy(ctx) != 0)
        return;
    api_backups_task_t *t = api_backups_task_new(ctx);
    if (t == NULL) {
        api_backups_release_busy();
        return;
    }
    t->holds_busy = 1;
    snprintf(t->key, sizeof(t->key), "%s", key);
    t->work = create_work;
    t->done = api_backups_answer_empty;
    api_audit(ctx, "backup.create", key, "");
    api_backups_task_start(ctx, t);
}

/* ---- restore ---- */

static void rm_tree(const char *path, int depth)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode) && depth < 32) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d != NULL && (e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[1500];
            snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
            rm_tree(p, depth + 1);
        }
        if (d != NULL)
            closedir(d);
        rmdir(path);
    } else
        unlink(path);
}

static void restore_work(api_backups_task_t *t)
{
    char zip[1400], tmp[1100], pending[1100];
    api_backups_key_path(t->key, zip, sizeof(zip));
    struct stat st;
    if (stat(zip, &st) != 0) {
        api_backups_task_fail(t, BS_ERR_NOT_FOUND, "There is no backup named %s.", t->key);
        return;
    }
    snprintf(tmp, sizeof(tmp), "%s/.pending-restore.tmp", g_dir);
    snprintf(pending, sizeof(pending), "%s/.pending-restore", g_dir);
    rm_tree(tmp, 0);
    rm_tree(pending, 0);
    if (mkdir(tmp, 0700) != 0) {
        api_backups_task_fail(t, BS_ERR_UNAVAILABLE, "Cannot prepare the restore: %s.", strerror(errno));
        return;
    }
    char err[1024];
    if (backup_zip_extract(zip, tmp, err, sizeof(err)) != 0) {
        rm_tree(tmp, 0);
        api_backups_task_fail(t, BS_ERR_BAD_REQUEST, "The backup cannot be restored: %s.", err);
        return;
    }
    if (rename(tmp, pending) != 0) {
        rm_tree(tmp, 0);
        api_backups_task_fail(t, BS_ERR_UNAVAILABLE, "Cannot prepare the restore: %s.", strerror(errno));
    }
}

static void restore_done(api_backups_task_t *t, req_ctx_t *ctx)
{
    api_backups_answer_empty(t, ctx);
    if (t->status != 0)
        return;
    LOGF(LOG_WARN, "backup", "restoring %s: restarting", t->key);
    __atomic_store_n(&g_restart, 1, __ATOMIC_RELEASE);
    /* The main thread takes SIGTERM with sigwait and shuts down cleanly (after this
     * response is sent: the drain waits for it); main then executes itself again. */
    kill(getpid(), SIGTERM);
}

void api_backups_restore(req_ctx_t *ctx, char **params)
{
    if (api_require_superuser(ctx) != 0)
        return;
    if (!api_backups_key_ok(params[0])) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, "There is no backup with this key.");
        return;
    }
    if (!g_sqlite) {
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST,
                        "A PostgreSQL deployment is restored with pgBackRest (docs/backups.md).");
        return;
    }
    if (api_backups_take_busy(ctx) != 0)
        return;
    api_backups_task_t *t = api_backups_task_new(ctx);
    if (t == NULL) {
        api_backups_release_busy();
        return;
    }
    /* Busy stays taken: the process restarts after a successful restore. */
    t->holds_busy = 1;
    snprintf(t->key, sizeof(t->key), "%s", params[0]);
    t->work = restore_work;
    t->done = restore_done;
    api_audit(ctx, "backup.restore", params[0], "");
    api_backups_task_start(ctx, t);
}

/* ---- delete ---- */

static void delete_work(api_backups_task_t *t)
{
    char zip[1400];
    api_backups_key_path(t->key, zip, sizeof(zip));
    if (unlink(zip) != 0)
        api_backups_task_fail(
            t, errno == ENOENT ? BS_ERR_NOT_FOUND : BS_ERR_UNAVAILABLE,
            errno == ENOENT ? "There is no backup named %s." : "The backup %s could not be deleted.", t->key);
}

void api_backups_delete(req_ctx_t *ctx, char **params)
{
    if (api_require_superuser(ctx) != 0)
        return;
    if (!api_backups_key_ok(params[0])) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, "There is no backup with this key.");
        return;
    }
    if (__atomic_load_n(&g_busy, __ATOMIC_ACQUIRE)) {
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST,
                        "Try again later - another backup/restore operation has already been started.");
        return;
    }
    api_backups_task_t *t = api_backups_task_new(ctx);
    if (t == NULL)
        return;
    snprintf(t->key, sizeof(t->key), "%s", params[0]);
    t->work = delete_work;
    t->done = api_backups_answer_empty;
    api_audit(ctx, "backup.delete", params[0], "");
    api_backups_task_start(ctx, t);
}
