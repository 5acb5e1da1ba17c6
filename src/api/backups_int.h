/*
 * backups_int — the backups API's task machinery, shared by api/backups.c (list,
 * create, restore, delete) and api/backups_transfer.c (upload, download); internal to
 * those two files.
 *
 * A task is one operation's disk work: api_backups_task_start runs its `work` on a
 * thread of its own and then its `done` on the request's worker (through the worker's
 * mailbox), and frees it. The worker thread owns a task before it starts and in
 * `done`; the task's thread owns it in `work`. At most one create, upload or restore
 * runs at a time: the "busy" hold below, taken on the worker.
 */
#ifndef BASALT_API_BACKUPS_INT_H
#define BASALT_API_BACKUPS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "api/api.h"

typedef struct api_backups_task api_backups_task_t;
struct api_backups_task {
    mailbox_msg_t msg; /* first */
    mailbox_t *reply_to;
    req_ctx_t *ctx;
    void (*work)(api_backups_task_t *t);               /* the task's thread */
    void (*done)(api_backups_task_t *t, req_ctx_t *c); /* the request's worker */
    int holds_busy;
    int status; /* 0 ok, else an HTTP error in code/message */
    bs_code_t code;
    char message[1024];
    char key[200];
    char *data; /* owned (malloc): upload body in, download body / list JSON out */
    size_t len;
    /* download: the open archive (owned until the stream takes it; -1: none), its size,
     * the request's Range header, and the first chunk read (in data/len) */
    int fd;
    int64_t size, from, to;
    int http_status;
    char range[128];
};

/* A zeroed task (fd -1), or NULL after answering 500 on ctx. Returns owned (the
 * caller frees it with free() until api_backups_task_start takes it). Worker thread. */
api_backups_task_t *api_backups_task_new(req_ctx_t *ctx);
/* Runs t->work on a new thread; t->done follows on ctx's worker, then t is freed (and
 * the busy hold released when t->holds_busy). Takes t. Worker thread. */
void api_backups_task_start(req_ctx_t *ctx, api_backups_task_t *t);
/* Marks t failed with code and the message fmt % a. The task's thread. */
void api_backups_task_fail(api_backups_task_t *t, bs_code_t code, const char *fmt, const char *a);
/* A `done` that answers t's error, or 204. */
void api_backups_answer_empty(api_backups_task_t *t, req_ctx_t *ctx);

/* 1 when k names a file of the backups folder: [A-Za-z0-9_.-], ending in .zip, no
 * dot first (no hidden, temporary or parent names). Pure. */
int api_backups_key_ok(const char *k);
/* DIR/backups into out. */
void api_backups_dir(char *out, size_t n);
/* DIR/backups/KEY into out (key checked with api_backups_key_ok first). */
void api_backups_key_path(const char *key, char *out, size_t n);
/* For a new archive t->key (a create or an upload): makes DIR/backups into dir if
 * missing and puts the archive's path into zip; it must not exist yet. 0, or -1 with
 * t failed (api_backups_task_fail). The task's thread. */
int api_backups_new_path(api_backups_task_t *t, char *dir, size_t dn, char *zip, size_t zn);
/* Takes the busy hold: 0, or -1 after answering 400 (another operation runs). */
int api_backups_take_busy(req_ctx_t *ctx);
/* Ends the hold that api_backups_take_busy took. */
void api_backups_release_busy(void);

#endif
