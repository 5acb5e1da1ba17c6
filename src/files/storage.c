/*
 * The storage interface's dispatch, key checks and the local directory backend.
 */
#include "files/storage.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"

static int seg_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '*' || c == '-' || c == '+' || c == '=' || c == '#';
}

int storage_key_ok(const char *key, int prefix)
{
    if (prefix && key != NULL && key[0] == '\0')
        return 1; /* the whole storage (the orphan sweep) */
    if (key == NULL || key[0] == '\0' || key[0] == '/' || strlen(key) > 900)
        return 0;
    const char *p = key;
    while (*p) {
        const char *e = p;
        while (*e && *e != '/') {
            if (!seg_char(*e))
                return 0;
            e++;
        }
        size_t n = (size_t)(e - p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        if (*e == '/' && e[1] == '\0')
            return prefix; /* a trailing slash only on prefixes */
        p = *e ? e + 1 : e;
    }
    return 1;
}

static int bad_key(const char *key, bs_error_t *err)
{
    bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid storage key \"%.80s\".", key ? key : "");
    return -1;
}

int storage_put(storage_t *s, const char *key, const void *data, size_t n, const char *ctype, bs_error_t *err)
{
    return storage_key_ok(key, 0) ? s->ops->put(s, key, data, n, ctype, err) : bad_key(key, err);
}

int storage_stat(storage_t *s, const char *key, storage_stat_t *st, bs_error_t *err)
{
    return storage_key_ok(key, 0) ? s->ops->stat(s, key, st, err) : bad_key(key, err);
}

int storage_get(storage_t *s, const char *key, int64_t off, int64_t len, char **data, size_t *n,
                bs_error_t *err)
{
    *data = NULL;
    *n = 0;
    return storage_key_ok(key, 0) ? s->ops->get(s, key, off, len, data, n, err) : bad_key(key, err);
}

int storage_delete(storage_t *s, const char *key, bs_error_t *err)
{
    return storage_key_ok(key, 0) ? s->ops->del(s, key, err) : bad_key(key, err);
}

int storage_list(storage_t *s, const char *prefix, storage_list_fn fn, void *arg, bs_error_t *err)
{
    return storage_key_ok(prefix, 1) ? s->ops->list(s, prefix, fn, arg, err) : bad_key(prefix, err);
}

/* Keys are collected first: deleting while a listing runs would disturb it. */
typedef struct {
    char **keys;
    size_t n, cap;
    int oom;
} keylist_t;

static int collect(void *arg, const char *key)
{
    keylist_t *k = arg;
    if (k->n == k->cap) {
        size_t nc = k->cap ? k->cap * 2 : 16;
        char **nk = realloc(k->keys, nc * sizeof(*nk));
        if (nk == NULL) {
            k->oom = 1;
            return 1;
        }
        k->keys = nk;
        k->cap = nc;
    }
    if ((k->keys[k->n] = strdup(key)) == NULL) {
        k->oom = 1;
        return 1;
    }
    k->n++;
    return 0;
}

int storage_delete_prefix(storage_t *s, const char *prefix, bs_error_t *err)
{
    if (prefix == NULL || prefix[0] == '\0')
        return bad_key(prefix, err); /* never "everything" */
    keylist_t k = {0};
    int rc = storage_list(s, prefix, collect, &k, err);
    if (rc == 0 && k.oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        rc = -1;
    }
    for (size_t i = 0; i < k.n; i++) {
        if (rc == 0 && storage_delete(s, k.keys[i], err) != 0)
            rc = -1;
        free(k.keys[i]);
    }
    free(k.keys);
    return rc;
}

void storage_close(storage_t *s)
{
    if (s != NULL)
        s->ops->close(s);
}

/* ---- local directory ---- */

typedef struct {
    storage_t base;
    char *root;
} local_t;

static int io_error(bs_error_t *err, const char *what, const char *key)
{
    bs_error_set(err, errno == ENOSPC ? BS_ERR_STORAGE_FULL : BS_ERR_INTERNAL,
                 "Storage: cannot %s \"%.80s\": %s.", what, key, strerror(errno));
    return -1;
}

static char *path_of(local_t *l, const char *key)
{
    size_t n = strlen(l->root) + strlen(key) + 2;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s", l->root, key);
    return p;
}

/* mkdir -p of path's parent directories below the root. */
static int make_parents(local_t *l, char *path)
{
    size_t rl = strlen(l->root);
    for (char *p = path + rl + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int rc = mkdir(path, 0750);
        *p = '/';
        if (rc != 0 && errno != EEXIST)
            return -1;
    }
    return 0;
}

static int fsync_dir_of(const char *path)
{
    char *d = strdup(path);
    if (d == NULL)
        return -1;
    char *slash = strrchr(d, '/');
    if (slash != NULL)
        *slash = '\0';
    int fd = open(d, O_RDONLY | O_DIRECTORY);
    free(d);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int local_put(storage_t *s, const char *key, const void *data, size_t n, const char *ctype,
                     bs_error_t *err)
{
    (void)ctype; /* the type is sniffed again when served */
    local_t *l = (local_t *)s;
    char *path = path_of(l, key);
    if (path == NULL || make_parents(l, path) != 0) {
        free(path);
        return io_error(err, "create the folder of", key);
    }
    char rnd[UTIL_ID_LEN + 1];
    util_random_id(rnd);
    size_t tl = strlen(path) + 32;
    char *tmp = malloc(tl);
    if (tmp == NULL) {
        free(path);
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    snprintf(tmp, tl, "%s.tmp-%s", path, rnd);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    int rc = fd < 0 ? -1 : 0;
    const char *p = data;
    size_t left = n;
    while (rc == 0 && left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = -1;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -1;
    if (fd >= 0 && close(fd) != 0)
        rc = -1;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -1;
    if (rc == 0 && fsync_dir_of(path) != 0)
        rc = -1;
    if (rc != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        io_error(err, "write", key);
    }
    free(tmp);
    free(path);
    return rc;
}

static int local_stat(storage_t *s, const char *key, storage_stat_t *st, bs_error_t *err)
{
    local_t *l = (local_t *)s;
    char *path = path_of(l, key);
    struct stat sb;
    int rc = path ? stat(path, &sb) : -1;
    free(path);
    if (rc != 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : io_error(err, "read", key);
    if (!S_ISREG(sb.st_mode))
        return 0;
    st->size = sb.st_size;
    st->mtime_ms = (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
    /* Size and modification time, as nginx does: a replaced object gets a new one. */
    snprintf(st->etag, sizeof(st->etag), "\"%llx-%llx\"", (unsigned long long)sb.st_size,
             (unsigned long long)((int64_t)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec));
    return 1;
}

static int local_get(storage_t *s, const char *key, int64_t off, int64_t len, char **data, size_t *n,
                     bs_error_t *err)
{
    local_t *l = (local_t *)s;
    char *path = path_of(l, key);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
    free(path);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            bs_error_set(err, BS_ERR_NOT_FOUND, NULL);
            return -1;
        }
        return io_error(err, "open", key);
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        bs_error_set(err, BS_ERR_NOT_FOUND, NULL);
        return -1;
    }
    if (off < 0 || off > sb.st_size)
        off = sb.st_size;
    int64_t want = len < 0 || off + len > sb.st_size ? sb.st_size - off : len;
    char *buf = malloc((size_t)want + 1);
    if (buf == NULL) {
        close(fd);
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    size_t got = 0;
    while ((int64_t)got < want) {
        ssize_t r = pread(fd, buf + got, (size_t)want - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *n = got;
    return 0;
}

/* Removes path's empty parent folders up to the root (PocketBase removes a record's
 * folder with its last file). */
static void prune_parents(local_t *l, char *path)
{
    size_t rl = strlen(l->root);
    for (;;) {
        char *slash = strrchr(path, '/');
        if (slash == NULL || (size_t)(slash - path) <= rl)
            return;
        *slash = '\0';
        if (rmdir(path) != 0)
            return;
    }
}

static int local_del(storage_t *s, const char *key, bs_error_t *err)
{
    local_t *l = (local_t *)s;
    char *path = path_of(l, key);
    if (path == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    int rc = unlink(path);
    if (rc != 0 && errno != ENOENT && errno != ENOTDIR) {
        free(path);
        return io_error(err, "delete", key);
    }
    prune_parents(l, path);
    free(path);
    return 0;
}

/* Walks dir (the path of key prefix kp) depth-first. */
static int walk(const char *dir, const char *kp, storage_list_fn fn, void *arg, int depth)
{
    if (depth > 8)
        return 0;
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT || errno == ENOTDIR ? 0 : -1;
    struct dirent *e;
    int stop = 0;
    while (!stop && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp-") != NULL)
            continue;
        size_t pl = strlen(dir) + strlen(e->d_name) + 2, kl = strlen(kp) + strlen(e->d_name) + 2;
        char *p = malloc(pl), *k = malloc(kl);
        if (p == NULL || k == NULL) {
            free(p);
            free(k);
            closedir(d);
            return -1;
        }
        snprintf(p, pl, "%s/%s", dir, e->d_name);
        snprintf(k, kl, "%s%s%s", kp, kp[0] && kp[strlen(kp) - 1] != '/' ? "/" : "", e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0) {
            if (S_ISDIR(sb.st_mode))
                stop = walk(p, k, fn, arg, depth + 1);
            else if (S_ISREG(sb.st_mode))
                stop = fn(arg, k);
        }
        free(p);
        free(k);
    }
    closedir(d);
    return stop;
}

static int local_list(storage_t *s, const char *prefix, storage_list_fn fn, void *arg, bs_error_t *err)
{
    local_t *l = (local_t *)s;
    /* A prefix names a folder ("c/r/") or the start of names in one ("c/r/a"). */
    size_t n = strlen(prefix);
    char *folder = strdup(prefix);
    if (folder == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    char *slash = strrchr(folder, '/');
    if (slash != NULL)
        slash[1] = '\0';
    else
        folder[0] = '\0';
    const char *start = prefix + strlen(folder);
    char *dir = path_of(l, folder);
    if (dir == NULL) {
        free(folder);
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    if (strlen(dir) > 0 && dir[strlen(dir) - 1] == '/')
        dir[strlen(dir) - 1] = '\0';
    int rc = 0;
    if (*start == '\0') {
        rc = walk(dir, folder, fn, arg, 0) < 0 ? -1 : 0;
    } else {
        DIR *d = opendir(dir);
        struct dirent *e;
        int stop = 0;
        while (d != NULL && !stop && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' || strncmp(e->d_name, start, strlen(start)) != 0 ||
                strstr(e->d_name, ".tmp-") != NULL)
                continue;
            size_t pl = strlen(dir) + strlen(e->d_name) + 2;
            char *p = malloc(pl), *k = malloc(pl + n);
            if (p && k) {
                snprintf(p, pl, "%s/%s", dir, e->d_name);
                snprintf(k, pl + n, "%s%s", folder, e->d_name);
                struct stat sb;
                if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
                    stop = walk(p, k, fn, arg, 1);
                else if (lstat(p, &sb) == 0 && S_ISREG(sb.st_mode))
                    stop = fn(arg, k);
            }
            free(p);
            free(k);
        }
        if (d != NULL)
            closedir(d);
    }
    if (rc != 0)
        io_error(err, "list", prefix);
    free(dir);
    free(folder);
    return rc;
}

static void local_close(storage_t *s)
{
    local_t *l = (local_t *)s;
    free(l->root);
    free(l);
}

static const storage_ops_t local_ops = {local_put, local_stat, local_get, local_del, local_list, local_close};

storage_t *storage_local_open(const char *dir, bs_error_t *err)
{
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        bs_error_set(err, BS_ERR_INTERNAL, "Storage: cannot create \"%s\": %s.", dir, strerror(errno));
        return NULL;
    }
    local_t *l = calloc(1, sizeof(*l));
    if (l == NULL || (l->root = strdup(dir)) == NULL) {
        free(l);
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    size_t rl = strlen(l->root);
    while (rl > 1 && l->root[rl - 1] == '/')
        l->root[--rl] = '\0';
    l->base.ops = &local_ops;
    l->base.kind = "local";
    return &l->base;
}
