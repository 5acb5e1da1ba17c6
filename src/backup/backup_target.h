/*
 * backup_target — where backups go: named objects with put, get, list and delete.
 *
 * An object is written through a writer (open, write chunks, commit or abort) and
 * appears whole or not at all: a reader never sees half an object. The directory
 * target (another disk, a mounted volume) writes a temporary file, fsyncs it, renames
 * it into place and fsyncs the folder. Another target (S3, SFTP) implements the same
 * ops. Names are relative paths of [A-Za-z0-9._-] parts separated by '/'; the target
 * refuses any other (no "..", no absolute paths).
 *
 * Locks: a restore holds the target's shared lock while it reads; retention takes the
 * exclusive lock without waiting and skips its round when it cannot, so cleanup never
 * deletes what a restore is reading (litestream's "missing initial WAL segment"
 * reports came from that race). The directory target uses flock(2) on DIR/.lock, which
 * holds between processes on one host.
 *
 * Threads: a target may be used by several threads at once (each with its own
 * writers and readers). Calls block on disk I/O: never call them on an event loop.
 */
#ifndef BASALT_BACKUP_TARGET_H
#define BASALT_BACKUP_TARGET_H

#include <stddef.h>
#include <stdint.h>

typedef struct backup_target backup_target_t;
typedef struct backup_writer backup_writer_t;
typedef struct backup_reader backup_reader_t;

typedef struct {
    char *name; /* owned by the list */
    uint64_t size;
    int64_t mtime_ms;
} backup_object_t;

typedef struct {
    backup_object_t *items;
    size_t n, cap;
} backup_list_t;

typedef struct backup_target_ops {
    /* Returns a writer, or NULL with a message in err. */
    backup_writer_t *(*open_write)(backup_target_t *t, const char *name, char *err, size_t errlen);
    int (*write)(backup_writer_t *w, const void *data, size_t n, char *err, size_t errlen);
    /* Makes the object visible (durably) and frees w. */
    int (*commit)(backup_writer_t *w, char *err, size_t errlen);
    /* Drops what was written and frees w. */
    void (*abort)(backup_writer_t *w);
    backup_reader_t *(*open_read)(backup_target_t *t, const char *name, char *err, size_t errlen);
    /* Returns bytes read (0 at the end) or -1. */
    long (*read)(backup_reader_t *r, void *buf, size_t n, char *err, size_t errlen);
    void (*close_read)(backup_reader_t *r);
    /* Every object whose name starts with prefix, sorted by name. */
    int (*list)(backup_target_t *t, const char *prefix, backup_list_t *out, char *err, size_t errlen);
    int (*remove)(backup_target_t *t, const char *name, char *err, size_t errlen);
    /* shared: 1 shared, 0 exclusive; wait: 0 returns 1 at once when held by another. 0 when taken. */
    int (*lock)(backup_target_t *t, int shared, int wait);
    void (*unlock)(backup_target_t *t);
    void (*close)(backup_target_t *t);
    /* A description for messages ("directory /mnt/b"). */
    const char *(*describe)(backup_target_t *t);
} backup_target_ops_t;

struct backup_target {
    const backup_target_ops_t *ops;
};

/* The directory target. create: make dir if missing. Returns NULL with err. */
backup_target_t *backup_target_dir_open(const char *dir, int create, char *err, size_t errlen);

/* 1 when name is a valid object name. */
int backup_target_name_ok(const char *name);

void backup_list_free(backup_list_t *l);

#endif
