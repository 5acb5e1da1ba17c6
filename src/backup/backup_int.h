/*
 * backup_int — the state of a backup_t and what the parts of the continuous backup
 * share (internal to src/backup/backup*.c; the public face is backup.h).
 *
 *   backup.c       the writer-thread hooks, set-up, the shipper and schedule threads,
 *                  retention, verification, the statistics
 *   backup_ship.c  reading the live WAL and shipping whole transactions as segments
 *   backup_gen.c   generations: their start under the write lock, the snapshot
 *                  thread, listing them, resuming one at start-up
 *
 * Threads, as in backup.h: the fields of struct backup under `lock` are shared by the
 * writer thread's hooks, the shipper, the snapshot thread and the schedule; the
 * shipper-only part belongs to the shipper thread, and the snapshot thread owns the
 * snapshot's fields while snap_running. Each function below says which thread calls it.
 */
#ifndef BASALT_BACKUP_BACKUP_INT_H
#define BASALT_BACKUP_BACKUP_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/backup.h"
#include "backup/wal.h"
#include "base/util.h"

#define BACKUP_RING_CAP 8192

typedef struct {
    int nframes;
    int64_t time_ms;
} backup_commit_rec_t;

typedef struct {
    int none; /* no WAL at the generation's start: any first log continues it */
    uint32_t salt1, salt2;
    uint32_t frames;
    uint32_t ck[2];
} backup_wal_pos_t;

struct backup {
    backup_config_t cfg;
    char target_dir[1024], data_dir[1024], db_path[1100], wal_path[1110], key_file[1024];
    backup_target_t *target;
    backup_key_t key;

    pthread_mutex_t lock; /* everything below up to the shipper-only part */
    pthread_cond_t cond;
    backup_commit_rec_t ring[BACKUP_RING_CAP];
    size_t ring_head, ring_n;
    int ring_overflow;
    int last_hook_frames;
    int stopping, started;
    int want_generation;
    int gen_active;
    backup_wal_pos_t shipped; /* what the target has of the current log */
    struct {
        int valid;
        uint32_t salt1, salt2, frames;
    } ckpt; /* the last checkpoint that copied exactly the shipped log */
    int64_t last_ckpt_ms;
    uint32_t ckpt_log_salt1, ckpt_log_frames; /* the log and its length at the last full checkpoint */
    int64_t last_success_ms, last_verified_ms, last_generation_ms;
    uint64_t verify_failures, generation_seq;
    int verify_wanted;

    /* Shipper thread only. */
    char gen_id[32];
    uint32_t wal_index;
    sqlite3 *rconn; /* read connection: snapshots */
    sqlite3 *wconn; /* takes the write lock for a moment when a generation starts */
    /* The snapshot thread (one per generation, joined before the next starts): it owns
     * these and rconn's read transaction while snap_running. */
    sqlite3 *snap_db;
    sqlite3_backup *snap;
    char snap_path[1200];
    pthread_t snap_thread;
    int snap_running;
    int snap_cancel;  /* atomic */
    int gen_complete; /* atomic: the current generation's generation.json is written */
    /* While a new generation's snapshot is in progress, the segments also go to the
     * last complete generation (continuous with the same log), so that "latest" never
     * loses the commits made during a snapshot. Shipper thread, except prev_active
     * (atomic: the snapshot thread clears it once the new generation is complete). */
    int prev_active;
    char prev_id[32];
    uint32_t prev_wal_index;
    backup_wal_pos_t gen_start;
    int64_t gen_start_ms;
    uint32_t page_size;
    uint8_t *buf;       /* a segment being built: header, transaction table, frames */
    size_t round_bytes; /* frames read per round; doubles for a transaction larger than it */
    int64_t last_error_log_ms;

    pthread_t shipper, scheduler;
};

typedef struct {
    char id[32];
    int complete;
    int64_t created_ms;
} backup_gen_info_t;

static inline int64_t backup_now_ms(void)
{
    return util_now_ms();
}

/* ---- backup.c ---- */

/* Room in b->buf for `bytes` of frames plus a segment's header and transaction table;
 * sets b->round_bytes. 0, or -1 out of memory (b->buf unchanged). Shipper thread (or
 * backup_new). */
int backup_grow_buf(backup_t *b, size_t bytes);

/* ---- backup_ship.c (shipper thread) ---- */

/* Reads the WAL header from fd: 1 read, 0 no usable log (absent, empty, being
 * created), -1 error. */
int backup_wal_read_header(backup_t *b, int fd, uint8_t raw[WAL_HEADER_SIZE], wal_header_t *h);
/* "generations/<current id>/<what>" into out. */
void backup_gen_prefix(const backup_t *b, char *out, size_t n, const char *what);
/* Logs an error at most every 10 s (a dead target must not flood the log). */
void backup_log_error_rate_limited(backup_t *b, const char *what, const char *msg);
/* Ships every whole committed transaction after the shipped position of the current
 * log. Returns 0 (nothing left or shipped all), 1 continuity broken (a new generation
 * is needed), -1 target error. Called also under the write lock. */
int backup_ship_round(backup_t *b);
/* Reads the whole current log to find its committed end into out (none set when
 * there is no log). 0 or -1. */
int backup_wal_end(backup_t *b, backup_wal_pos_t *out);

/* ---- backup_gen.c (shipper thread) ---- */

/* Ends the snapshot in progress (if any) and removes its temporary file. Shipper
 * thread while no snapshot thread runs, or backup_free. */
void backup_snapshot_abort(backup_t *b);
/* Stops (cancel) or waits for the snapshot thread. */
void backup_snapshot_join(backup_t *b, int cancel);
/* Starts a new generation. 0 started (the snapshot then runs in steps), -1 not now. */
int backup_start_generation(backup_t *b, int old_continuous);
/* At start-up: continues the newest complete generation when the WAL on disk still
 * continues it. 1 resumed, 0 not. Before the first round. */
int backup_try_resume(backup_t *b);
/* The generations in target t, oldest first: an owned array of *n (free), or NULL
 * with err. Any thread (the target's calls are). */
backup_gen_info_t *backup_list_generations(backup_target_t *t, size_t *n, char *err, size_t errlen);

#endif
