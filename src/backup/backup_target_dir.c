/*
 * The directory target of backup_target.h. Objects are files under the folder; a
 * write goes to NAME.tmp-PID-N, is fsynced, renamed and the folder fsynced, so that
 * after a crash an object is either whole or absent.
 */
/* Messages name paths; a path long enough to truncate one still leaves it readable. */
#pragma GCC diagnostic ignored "-Wformat-truncation"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/backup_target.h"

typedef struct {
    backup_target_t base;
    char dir[PATH_MAX];
    int lock_fd;
    char desc[PATH_MAX + 16];
} dir_target_t;

struct backup_writer {
    dir_target_t *t;
    int fd;
    char tmp[PATH_MAX];
    char final[PATH_MAX];
};

struct backup_reader {
    int fd;
};

static const backup_target_ops_t dir_ops;
static unsigned long tmp_counter;

int backup_target_name_ok(const char *name)
{
    if (name == NULL || name[0] == '\0' || name[0] == '/' || strlen(name) > 512)
        return 0;
    const char *p = name;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.') || p[0] == '.')
            return 0;
        for (size_t i = 0; i < n; i++) {
            char c = p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-'))
                return 0;
        }
        p += n;
        if (*p == '/')
            p++;
    }
    return 1;
}

static int mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static void fsync_dir(const char *file)
{
    char d[PATH_MAX];
    snprintf(d, sizeof(d), "%s", file);
    char *slash = strrchr(d, '/');
    if (slash == NULL)
        return;
    *slash = '\0';
    int fd = open(d, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

backup_target_t *backup_target_dir_open(const char *dir, int create, char *err, size_t errlen)
{
    struct stat st;
    if (create && mkdirs(dir) != 0) {
        snprintf(err, errlen, "cannot create the backup folder %s: %s", dir, strerror(errno));
        return NULL;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "the backup folder %s does not exist", dir);
        return NULL;
    }
    dir_target_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->base.ops = &dir_ops;
    snprintf(t->dir, sizeof(t->dir), "%s", dir);
    size_t n = strlen(t->dir);
    while (n > 1 && t->dir[n - 1] == '/')
        t->dir[--n] = '\0';
    snprintf(t->desc, sizeof(t->desc), "folder %s", t->dir);
    char lp[PATH_MAX + 8];
    snprintf(lp, sizeof(lp), "%s/.lock", t->dir);
    /* Read-only folders (a restore from a mounted copy) still restore: no lock then. */
    t->lock_fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (t->lock_fd < 0)
        t->lock_fd = open(lp, O_RDONLY | O_CLOEXEC);
    return &t->base;
}

static backup_writer_t *d_open_write(backup_target_t *bt, const char *name, char *err, size_t errlen)
{
    dir_target_t *t = (dir_target_t *)bt;
    if (!backup_target_name_ok(name)) {
        snprintf(err, errlen, "invalid backup object name \"%s\"", name);
        return NULL;
    }
    backup_writer_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->t = t;
    snprintf(w->final, sizeof(w->final), "%s/%s", t->dir, name);
    snprintf(w->tmp, sizeof(w->tmp), "%s.tmp-%ld-%lu", w->final, (long)getpid(),
             __atomic_add_fetch(&tmp_counter, 1, __ATOMIC_RELAXED));
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s", w->final);
    *strrchr(parent, '/') = '\0';
    if (mkdirs(parent) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", parent, strerror(errno));
        free(w);
        return NULL;
    }
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", w->tmp, strerror(errno));
        free(w);
        return NULL;
    }
    return w;
}

static int d_write(backup_writer_t *w, const void *data, size_t n, char *err, size_t errlen)
{
    const char *p = data;
    while (n > 0) {
        ssize_t k = write(w->fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(err, errlen, "cannot write %s: %s", w->tmp, k < 0 ? strerror(errno) : "short write");
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void d_abort(backup_writer_t *w)
{
    if (w == NULL)
        return;
    close(w->fd);
    unlink(w->tmp);
    free(w);
}

static int d_commit(backup_writer_t *w, char *err, size_t errlen)
{
    if (fsync(w->fd) != 0 || close(w->fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", w->tmp, strerror(errno));
        w->fd = -1;
        unlink(w->tmp);
        free(w);
        return -1;
    }
    if (rename(w->tmp, w->final) != 0) {
        snprintf(err, errlen, "cannot rename %s: %s", w->tmp, strerror(errno));
        unlink(w->tmp);
        free(w);
        return -1;
    }
    fsync_dir(w->final);
    free(w);
    return 0;
}

static backup_reader_t *d_open_read(backup_target_t *bt, const char *name, char *err, size_t errlen)
{
    dir_target_t *t = (dir_target_t *)bt;
    if (!backup_target_name_ok(name)) {
        snprintf(err, errlen, "invalid backup object name \"%s\"", name);
        return NULL;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", t->dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    backup_reader_t *r = malloc(sizeof(*r));
    if (r == NULL) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->fd = fd;
    return r;
}

static long d_read(backup_reader_t *r, void *buf, size_t n, char *err, size_t errlen)
{
    for (;;) {
        ssize_t k = read(r->fd, buf, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            snprintf(err, errlen, "read error: %s", strerror(errno));
        return (long)k;
    }
}

static void d_close_read(backup_reader_t *r)
{
    if (r == NULL)
        return;
    close(r->fd);
    free(r);
}

static int add_item(backup_list_t *out, const char *name, const struct stat *st)
{
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 64;
        backup_object_t *p = realloc(out->items, cap * sizeof(*p));
        if (p == NULL)
            return -1;
        out->items = p;
        out->cap = cap;
    }
    backup_object_t *o = &out->items[out->n];
    o->name = strdup(name);
    if (o->name == NULL)
        return -1;
    o->size = (uint64_t)st->st_size;
    o->mtime_ms = (int64_t)st->st_mtim.tv_sec * 1000 + st->st_mtim.tv_nsec / 1000000;
    out->n++;
    return 0;
}

static int walk(const char *root, const char *rel, const char *prefix, backup_list_t *out, int depth)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(path);
    if (d == NULL)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp-") != NULL)
            continue;
        char child[PATH_MAX];
        snprintf(child, sizeof(child), "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        char full[PATH_MAX + 2];
        snprintf(full, sizeof(full), "%s/%s", root, child);
        struct stat st;
        if (stat(full, &st) != 0)
            continue; /* removed meanwhile */
        size_t cl = strlen(child), pl = strlen(prefix);
        if (S_ISDIR(st.st_mode)) {
            /* Descend only where the prefix can still match. */
            if (depth < 8 && (strncmp(child, prefix, cl < pl ? cl : pl) == 0))
                rc = walk(root, child, prefix, out, depth + 1);
        } else if (S_ISREG(st.st_mode) && strncmp(child, prefix, pl) == 0 && backup_target_name_ok(child))
            rc = add_item(out, child, &st);
    }
    closedir(d);
    return rc;
}

static int cmp_obj(const void *a, const void *b)
{
    return strcmp(((const backup_object_t *)a)->name, ((const backup_object_t *)b)->name);
}

static int d_list(backup_target_t *bt, const char *prefix, backup_list_t *out, char *err, size_t errlen)
{
    dir_target_t *t = (dir_target_t *)bt;
    memset(out, 0, sizeof(*out));
    if (walk(t->dir, "", prefix, out, 0) != 0) {
        snprintf(err, errlen, "cannot list %s: %s", t->dir, strerror(errno));
        backup_list_free(out);
        return -1;
    }
    if (out->n > 1)
        qsort(out->items, out->n, sizeof(*out->items), cmp_obj);
    return 0;
}

static int d_remove(backup_target_t *bt, const char *name, char *err, size_t errlen)
{
    dir_target_t *t = (dir_target_t *)bt;
    if (!backup_target_name_ok(name)) {
        snprintf(err, errlen, "invalid backup object name \"%s\"", name);
        return -1;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", t->dir, name);
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(err, errlen, "cannot delete %s: %s", path, strerror(errno));
        return -1;
    }
    /* Empty parent folders go too (rmdir fails harmlessly on a non-empty one). */
    char *slash;
    while ((slash = strrchr(path, '/')) != NULL && (size_t)(slash - path) > strlen(t->dir)) {
        *slash = '\0';
        if (rmdir(path) != 0)
            break;
    }
    return 0;
}

static int d_lock(backup_target_t *bt, int shared, int wait)
{
    dir_target_t *t = (dir_target_t *)bt;
    if (t->lock_fd < 0)
        return 0;
    int rc;
    while ((rc = flock(t->lock_fd, (shared ? LOCK_SH : LOCK_EX) | (wait ? 0 : LOCK_NB))) != 0 &&
           errno == EINTR)
        ;
    return rc == 0 ? 0 : 1;
}

static void d_unlock(backup_target_t *bt)
{
    dir_target_t *t = (dir_target_t *)bt;
    if (t->lock_fd >= 0)
        flock(t->lock_fd, LOCK_UN);
}

static void d_close(backup_target_t *bt)
{
    dir_target_t *t = (dir_target_t *)bt;
    if (t == NULL)
        return;
    if (t->lock_fd >= 0)
        close(t->lock_fd);
    free(t);
}

static const char *d_describe(backup_target_t *bt)
{
    return ((dir_target_t *)bt)->desc;
}

void backup_list_free(backup_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].name);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

static const backup_target_ops_t dir_ops = {
    .open_write = d_open_write,
    .write = d_write,
    .commit = d_commit,
    .abort = d_abort,
    .open_read = d_open_read,
    .read = d_read,
    .close_read = d_close_read,
    .list = d_list,
    .remove = d_remove,
    .lock = d_lock,
    .unlock = d_unlock,
    .close = d_close,
    .describe = d_describe,
};
