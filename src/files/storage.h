/*
 * storage — where uploaded files live, behind one interface: a local directory
 * (the default, <data dir>/storage) or an S3-compatible bucket.
 *
 * Keys are "<collectionId>/<recordId>/<name>" and, for thumbnails,
 * "<collectionId>/<recordId>/thumbs_<name>/<WxH>_<name>", as PocketBase lays them
 * out. Every function checks the key itself (segments of [A-Za-z0-9_.*+=#-], none
 * empty, "." or "..") so that a path trick that got past a caller still never
 * reaches the disk or the bucket.
 *
 * Every call BLOCKS (disk fsync, network): call them only from the file pool's
 * threads (files/filepool.h), never from an event loop. A storage_t is shared by
 * all threads; each backend is thread-safe. Errors: -1 with err set: 404 for a
 * missing object where it matters, 503 for a backend that is down or timed out
 * (S3: connect and total time-outs, so a dead server never hangs a thread), 500
 * for anything else.
 */
#ifndef BASALT_FILES_STORAGE_H
#define BASALT_FILES_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct storage storage_t;

typedef struct {
    int64_t size;
    int64_t mtime_ms;
    char etag[96]; /* quoted, as sent in ETag */
} storage_stat_t;

/* Called for each key under a prefix; return non-zero to stop. */
typedef int (*storage_list_fn)(void *arg, const char *key);

typedef struct {
    int (*put)(storage_t *s, const char *key, const void *data, size_t n, const char *ctype, bs_error_t *err);
    int (*stat)(storage_t *s, const char *key, storage_stat_t *st, bs_error_t *err);
    int (*get)(storage_t *s, const char *key, int64_t off, int64_t len, char **data, size_t *n,
               bs_error_t *err);
    int (*del)(storage_t *s, const char *key, bs_error_t *err);
    int (*list)(storage_t *s, const char *prefix, storage_list_fn fn, void *arg, bs_error_t *err);
    void (*close)(storage_t *s);
} storage_ops_t;

struct storage {
    const storage_ops_t *ops;
    const char *kind; /* "local" or "s3", for logs and metrics */
};

/* The local backend rooted at dir (created if missing). Writes go to a temporary
 * file in the same directory, are fsynced, renamed over the target and the
 * directory fsynced: a crash leaves the old object or the new one, never half.
 * Returns an owned storage or NULL with err. */
storage_t *storage_local_open(const char *dir, bs_error_t *err);

typedef struct {
    const char *endpoint; /* http(s)://host[:port] */
    const char *bucket;
    const char *region;
    const char *access_key;
    const char *secret;
    int force_path_style; /* endpoint/bucket/key instead of bucket.host/key */
    int connect_timeout_ms;
    int timeout_ms;
} storage_s3_config_t;
/* The S3 backend (requests signed with SigV4 by libcurl). The strings are copied.
 * Returns an owned storage or NULL with err (a bad endpoint). Nothing is sent. */
storage_t *storage_s3_open(const storage_s3_config_t *cfg, bs_error_t *err);

/* Whether key is one the storage accepts (see above); prefixes may end in '/', and
 * the empty prefix is the whole storage. */
int storage_key_ok(const char *key, int prefix);

/* Stores n bytes under key, replacing what was there. 0 or -1. */
int storage_put(storage_t *s, const char *key, const void *data, size_t n, const char *ctype,
                bs_error_t *err);
/* 1 with st filled, 0 when there is no such object, -1 on error. */
int storage_stat(storage_t *s, const char *key, storage_stat_t *st, bs_error_t *err);
/* Reads len bytes from off (len < 0: to the end) into *data (returns owned,
 * free()) of *n bytes. 0, or -1 (404 when missing). */
int storage_get(storage_t *s, const char *key, int64_t off, int64_t len, char **data, size_t *n,
                bs_error_t *err);
/* Removes key; a missing key is not an error. 0 or -1. */
int storage_delete(storage_t *s, const char *key, bs_error_t *err);
/* Calls fn for every key that starts with prefix. 0 or -1. */
int storage_list(storage_t *s, const char *prefix, storage_list_fn fn, void *arg, bs_error_t *err);
/* Removes every key under prefix (e.g. a record's folder). 0 or -1. */
int storage_delete_prefix(storage_t *s, const char *prefix, bs_error_t *err);
void storage_close(storage_t *s);

/* S3 request pieces, exposed for the unit tests: the object URL for key (path or
 * virtual-host style, key segments percent-encoded as SigV4 canonical URIs are).
 * Returns the length written to out (cap bytes), or -1 if it does not fit. */
int storage_s3_url(const storage_s3_config_t *cfg, const char *key, const char *query, char *out, size_t cap);

#endif
