/*
 * filepool — the threads that do the blocking file work: storage calls (disk
 * writes with fsync, S3 requests) and thumbnail generation never run on an event
 * loop. A worker hands a files_work_t to the pool; run() executes on a pool thread
 * and the work is posted back to reply_to, whose loop calls msg.deliver. With no
 * reply_to (clean-ups after a commit: nobody waits), release() runs on the pool
 * thread after run() instead.
 *
 * The pool also holds the process's storage backend and file settings, set once at
 * start-up before any worker runs and read-only afterwards.
 */
#ifndef BASALT_FILES_FILEPOOL_H
#define BASALT_FILES_FILEPOOL_H

#include <stdint.h>

#include "base/mailbox.h"
#include "files/storage.h"

typedef struct files_work {
    mailbox_msg_t msg;                     /* first: posted back to reply_to */
    mailbox_t *reply_to;                   /* NULL: fire and forget */
    void (*run)(struct files_work *w);     /* on a pool thread */
    void (*release)(struct files_work *w); /* fire and forget: frees w (pool thread) */
    struct files_work *next;
} files_work_t;

typedef struct {
    storage_t *storage;       /* taken */
    int threads;              /* >= 1 */
    int64_t thumb_max_pixels; /* an original larger than this gets no thumbnail */
    int max_queue;            /* work beyond this many queued items is refused */
    int file_token_seconds;   /* lifetime of file tokens */
} files_settings_t;

/* Starts the pool; takes the storage. Returns 0 or -1. */
int filepool_start(const files_settings_t *s);
/* Runs what is queued, joins the threads and closes the storage. */
void filepool_stop(void);
/* Takes w until it is posted back (or released). Returns 0, or -1 when the queue is
 * full or the pool is not running (w is not taken then: the caller answers 503). */
int filepool_submit(files_work_t *w);
/* The storage (NULL when the pool is not running) and the settings. */
storage_t *filepool_storage(void);
const files_settings_t *filepool_settings(void);
/* Work queued and running now (for metrics). */
int filepool_queued(void);

#endif
