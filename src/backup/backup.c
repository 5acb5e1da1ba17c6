/*
 * backup.c — the writer-thread hooks, the set-up, the shipper and schedule threads,
 * retention and verification of backup.h; the WAL is read and shipped in
 * backup_ship.c, snapshots and generations are made in backup_gen.c, and
 * backup_int.h holds the state they share. The argument for correctness is in ADR
 * 0011; in short:
 *
 *  - Only Basalt checkpoints (the WAL hook turns SQLite's automatic checkpoints off),
 *    and only when the shipper has shipped every commit the hook reported. The
 *    checkpoint runs on the writer thread between batches, so no commit of this
 *    process can slip in between "all shipped" and the checkpoint; its frame counts
 *    (log = backfilled = shipped) prove that nothing else was in the log. Only such a
 *    checkpoint may be followed by a WAL restart inside one generation: any other
 *    change of the WAL header starts a new generation.
 *  - A frame is shipped only as part of a whole transaction whose frames all carry the
 *    header's salts and continue the checksum chain; that is SQLite's own test of
 *    what is committed.
 *  - A snapshot starts under the write lock (BEGIN IMMEDIATE on the shipper's own
 *    connection, held for a moment): the shipper reads the WAL's committed end M and
 *    opens a read transaction on its read connection, which therefore sees exactly
 *    the commits up to M; then the lock goes and the copy runs in steps from that read
 *    transaction while writers go on. The generation's segments start at M + 1.
 */
/* Messages name paths; a path long enough to truncate one still leaves it readable. */
#pragma GCC diagnostic ignored "-Wformat-truncation"
#include "base/util.h"
#include "backup/backup.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "backup/backup_int.h"
#include "backup/wal.h"
#include "base/log.h"

#define MAX_ROUND_BYTES (16u << 20)
/* A WAL this long is checkpointed even when shipping fails (the generation is then
 * lost and a new one starts), so that a dead target cannot grow the log forever. */
#define WAL_SAFETY_FRAMES 262144

static backup_t *the_backup; /* for /metrics */

/* ---- writer-thread hooks ---- */

static void hook_commit(void *ctx, int nframes)
{
    backup_t *b = ctx;
    pthread_mutex_lock(&b->lock);
    if (b->ring_n == BACKUP_RING_CAP) {
        /* The shipper is far behind: forget the oldest time (its commit ships with the
         * time it is shipped, later than true, never earlier). */
        b->ring_head = (b->ring_head + 1) % BACKUP_RING_CAP;
        b->ring_n--;
        b->ring_overflow = 1;
    }
    backup_commit_rec_t *r = &b->ring[(b->ring_head + b->ring_n) % BACKUP_RING_CAP];
    r->nframes = nframes;
    r->time_ms = backup_now_ms();
    b->ring_n++;
    b->last_hook_frames = nframes;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

static int hook_due(void *ctx)
{
    backup_t *b = ctx;
    pthread_mutex_lock(&b->lock);
    int64_t now = backup_now_ms();
    /* Frames added since the last checkpoint of this log: 1000 of them (SQLite's own
     * threshold), or any after a second. A log already checkpointed whole waits for its
     * restart, not for another checkpoint before every batch. */
    uint32_t since = b->shipped.salt1 == b->ckpt_log_salt1 && b->shipped.frames >= b->ckpt_log_frames
                         ? b->shipped.frames - b->ckpt_log_frames
                         : b->shipped.frames;
    int due = b->gen_active && b->ring_n == 0 && !b->ring_overflow && since > 0 &&
              (since >= 1000 || now - b->last_ckpt_ms >= 1000);
    if (!due && b->last_hook_frames > WAL_SAFETY_FRAMES)
        due = 1;
    pthread_mutex_unlock(&b->lock);
    return due;
}

static void hook_checkpointed(void *ctx, int rc, int nlog, int nckpt)
{
    backup_t *b = ctx;
    pthread_mutex_lock(&b->lock);
    b->last_ckpt_ms = backup_now_ms();
    if (rc == SQLITE_OK && nlog >= 0 && nlog == nckpt) {
        b->ckpt_log_salt1 = b->shipped.salt1;
        b->ckpt_log_frames = (uint32_t)nlog;
    }
    if (rc == SQLITE_OK && nlog >= 0 && nlog == nckpt && (uint32_t)nlog == b->shipped.frames &&
        b->ring_n == 0 && b->gen_active && !b->shipped.none) {
        b->ckpt.valid = 1;
        b->ckpt.salt1 = b->shipped.salt1;
        b->ckpt.salt2 = b->shipped.salt2;
        b->ckpt.frames = (uint32_t)nlog;
    } else
        b->ckpt.valid = 0;
    if (nlog >= 0 && nlog == nckpt)
        b->last_hook_frames = 0; /* the log restarts at the next write */
    pthread_mutex_unlock(&b->lock);
}

void backup_store_hooks(backup_t *b, store_config_t *sc)
{
    sc->wal_ctx = b;
    sc->wal_commit = hook_commit;
    sc->wal_checkpoint_due = hook_due;
    sc->wal_checkpointed = hook_checkpointed;
}

/* ---- set-up ---- */

/* Room for `bytes` of frames plus a header and a transaction table for each frame
 * (the smallest frame is 536 bytes, so bytes / 32 is plenty). */
int backup_grow_buf(backup_t *b, size_t bytes)
{
    uint8_t *p = realloc(b->buf, WAL_SEG_HEADER_SIZE + bytes + bytes / 32 + WAL_SEG_TXN_SIZE);
    if (p == NULL)
        return -1;
    b->buf = p;
    b->round_bytes = bytes;
    return 0;
}

backup_t *backup_new(const backup_config_t *cfg, char *err, size_t errlen)
{
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to start");
        return NULL;
    }
    backup_t *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    snprintf(b->target_dir, sizeof(b->target_dir), "%s", cfg->target_dir);
    snprintf(b->data_dir, sizeof(b->data_dir), "%s", cfg->data_dir);
    snprintf(b->db_path, sizeof(b->db_path), "%s", cfg->db_path);
    snprintf(b->wal_path, sizeof(b->wal_path), "%s-wal", cfg->db_path);
    snprintf(b->key_file, sizeof(b->key_file), "%s", cfg->key_file ? cfg->key_file : "");
    b->cfg.target_dir = b->target_dir;
    b->cfg.data_dir = b->data_dir;
    b->cfg.db_path = b->db_path;
    b->cfg.key_file = b->key_file;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    if (backup_key_load(b->key_file, &b->key, err, errlen) != 0)
        goto fail;
    b->target = backup_target_dir_open(b->target_dir, 1, err, errlen);
    if (b->target == NULL)
        goto fail;
    if (backup_key_check(b->target, &b->key, 1, err, errlen) != 0)
        goto fail;
    if (backup_grow_buf(b, MAX_ROUND_BYTES) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return b;
fail:
    backup_free(b);
    return NULL;
}

/* ---- the shipper thread ---- */

static void *shipper_main(void *arg)
{
    util_thread_name("backup-ship");
    backup_t *b = arg;
    backup_try_resume(b);
    pthread_mutex_lock(&b->lock);
    int64_t retry_at = 0;
    for (;;) {
        if (b->stopping)
            break;
        int want_gen = b->want_generation || !b->gen_active;
        /* Commits wake us; otherwise poll a few times a second (another process's
         * commits, retries). */
        if (b->ring_n == 0 && !(want_gen && backup_now_ms() >= retry_at)) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 200 * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&b->cond, &b->lock, &until);
            if (b->stopping)
                break;
        }
        want_gen = b->want_generation || !b->gen_active;
        size_t ring_before = b->ring_n;
        pthread_mutex_unlock(&b->lock);
        int rc = 0;
        if (!want_gen)
            rc = backup_ship_round(b);
        if (rc == 0 && ring_before != 0) {
            /* Commits noted but nothing could be shipped (the log vanished under us, say):
             * wait a little rather than spin. */
            pthread_mutex_lock(&b->lock);
            int stuck = b->ring_n == ring_before;
            pthread_mutex_unlock(&b->lock);
            if (stuck)
                usleep(50000);
        }
        if (rc == 1 || (want_gen && backup_now_ms() >= retry_at)) {
            pthread_mutex_lock(&b->lock);
            b->want_generation = 0;
            pthread_mutex_unlock(&b->lock);
            if (backup_start_generation(b, rc != 1) != 0) {
                pthread_mutex_lock(&b->lock);
                b->want_generation = 1;
                pthread_mutex_unlock(&b->lock);
                retry_at = backup_now_ms() + 1000;
            }
        } else if (rc < 0) {
            /* The target failed: wait a little, the commits stay in the WAL. */
            usleep(200000);
        }
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    /* The writer has stopped: ship the rest. */
    if (b->gen_active && backup_ship_round(b) != 0)
        LOGF(LOG_WARN, "backup", "the last WAL frames could not be shipped before shutdown");
    if (b->snap_running && b->snap != NULL)
        LOGF(LOG_WARN, "backup", "shutdown during a snapshot: generation %s stays incomplete", b->gen_id);
    backup_snapshot_join(b, 1);
    return NULL;
}

/* ---- the schedule ---- */

static void *scheduler_main(void *arg)
{
    util_thread_name("backup-cron");
    backup_t *b = arg;
    int64_t next_retention = backup_now_ms() + 1000,
            next_verify = backup_now_ms() + (int64_t)b->cfg.verify_interval_s * 1000;
    int64_t retention_every = b->cfg.retention_s * 1000 / 2;
    if (retention_every > 3600000)
        retention_every = 3600000;
    if (retention_every < 1000)
        retention_every = 1000;
    pthread_mutex_lock(&b->lock);
    while (!b->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&b->cond, &b->lock, &until);
        if (b->stopping)
            break;
        int64_t now = backup_now_ms();
        /* Not while a snapshot is still being taken: a long one would never finish. */
        if (b->gen_active && !b->want_generation && __atomic_load_n(&b->gen_complete, __ATOMIC_ACQUIRE) &&
            now - b->last_generation_ms >= (int64_t)b->cfg.interval_s * 1000) {
            b->want_generation = 1;
            pthread_cond_broadcast(&b->cond);
        }
        int verify = b->verify_wanted || now >= next_verify;
        int retention = now >= next_retention;
        b->verify_wanted = 0;
        pthread_mutex_unlock(&b->lock);
        char err[512];
        if (retention) {
            int n = backup_retention_run(b, err, sizeof(err));
            if (n == -1)
                LOGF(LOG_ERROR, "backup", "retention: %s", err);
            next_retention = backup_now_ms() + (n == -2 ? 1000 : retention_every);
        }
        if (verify) {
            if (backup_verify_run(b, err, sizeof(err)) != 0)
                LOGF(LOG_ERROR, "backup", "verification failed: %s", err);
            next_verify = backup_now_ms() + (int64_t)b->cfg.verify_interval_s * 1000;
        }
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

int backup_start(backup_t *b, char *err, size_t errlen)
{
    if (pthread_create(&b->shipper, NULL, shipper_main, b) != 0) {
        snprintf(err, errlen, "cannot start the backup thread");
        return -1;
    }
    if (pthread_create(&b->scheduler, NULL, scheduler_main, b) != 0) {
        pthread_mutex_lock(&b->lock);
        b->stopping = 1;
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
        pthread_join(b->shipper, NULL);
        snprintf(err, errlen, "cannot start the backup schedule thread");
        return -1;
    }
    b->started = 1;
    __atomic_store_n(&the_backup, b, __ATOMIC_RELEASE);
    return 0;
}

void backup_stop(backup_t *b)
{
    if (b == NULL || !b->started)
        return;
    pthread_mutex_lock(&b->lock);
    b->stopping = 1;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->scheduler, NULL);
    pthread_join(b->shipper, NULL);
    b->started = 0;
    __atomic_store_n(&the_backup, NULL, __ATOMIC_RELEASE);
}

void backup_free(backup_t *b)
{
    if (b == NULL)
        return;
    backup_stop(b);
    backup_snapshot_abort(b);
    sqlite3_close(b->rconn);
    sqlite3_close(b->wconn);
    if (b->target != NULL)
        b->target->ops->close(b->target);
    free(b->buf);
    sodium_memzero(&b->key, sizeof(b->key));
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    free(b);
}

void backup_snapshot_now(backup_t *b)
{
    pthread_mutex_lock(&b->lock);
    b->want_generation = 1;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

/* ---- retention ---- */

static int delete_generation(backup_target_t *t, const char *id, char *err, size_t errlen)
{
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "generations/%s/", id);
    backup_list_t l;
    if (t->ops->list(t, prefix, &l, err, errlen) != 0)
        return -1;
    int rc = 0;
    /* generation.json first: from then on no restore picks the generation. */
    for (size_t i = 0; i < l.n && rc == 0; i++)
        if (strstr(l.items[i].name, "generation.json") != NULL)
            rc = t->ops->remove(t, l.items[i].name, err, errlen);
    for (size_t i = 0; i < l.n && rc == 0; i++)
        rc = t->ops->remove(t, l.items[i].name, err, errlen);
    backup_list_free(&l);
    return rc;
}

int backup_retention_run(backup_t *b, char *err, size_t errlen)
{
    backup_target_t *t = b->target;
    if (t->ops->lock(t, 0, 0) != 0) {
        LOGF(LOG_INFO, "backup", "retention deferred: a restore is reading the backups");
        return -2;
    }
    size_t n;
    backup_gen_info_t *g = backup_list_generations(t, &n, err, errlen);
    if (g == NULL) {
        t->ops->unlock(t);
        return -1;
    }
    char current[32];
    pthread_mutex_lock(&b->lock);
    snprintf(current, sizeof(current), "%s", b->gen_id);
    pthread_mutex_unlock(&b->lock);
    int64_t cutoff = backup_now_ms() - b->cfg.retention_s * 1000;
    ssize_t newest_complete = -1;
    for (size_t i = 0; i < n; i++)
        if (g[i].complete)
            newest_complete = (ssize_t)i;
    int deleted = 0, rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if ((ssize_t)i == newest_complete || strcmp(g[i].id, current) == 0)
            continue;
        /* A generation covers the time until the next one started: it goes once that
         * end is older than the retention window. Only older than the newest
         * complete one: newer ones are still being written or are needed. */
        if ((ssize_t)i > newest_complete)
            continue;
        int64_t end = i + 1 < n ? g[i + 1].created_ms : INT64_MAX;
        if (end < cutoff) {
            rc = delete_generation(t, g[i].id, err, errlen);
            if (rc == 0) {
                deleted++;
                LOGF(LOG_INFO, "backup", "retention: deleted generation %s", g[i].id);
            }
        }
    }
    free(g);
    t->ops->unlock(t);
    return rc == 0 ? deleted : -1;
}

/* ---- verification ---- */

static void remove_tree(const char *dir)
{
    static const char *files[] = {"data.db", "data.db-wal", "data.db-shm", "data.db.restore", NULL};
    char p[1200];
    for (int i = 0; files[i]; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

int backup_verify_run(backup_t *b, char *err, size_t errlen)
{
    char dir[1200];
    snprintf(dir, sizeof(dir), "%s/.backup-verify-%08" PRIx32, b->data_dir, randombytes_random());
    backup_restore_opts_t o = {
        .from = b->target_dir, .to = "latest", .dir = dir, .key_file = b->key_file, .quiet = 1};
    int rc = backup_restore(&o, err, errlen);
    remove_tree(dir);
    pthread_mutex_lock(&b->lock);
    if (rc == 0)
        b->last_verified_ms = backup_now_ms();
    else
        b->verify_failures++;
    pthread_mutex_unlock(&b->lock);
    if (rc == 0)
        LOGF(LOG_INFO, "backup", "verification passed");
    return rc;
}

void backup_get_stats(backup_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    backup_t *b = __atomic_load_n(&the_backup, __ATOMIC_ACQUIRE);
    if (b == NULL)
        return;
    pthread_mutex_lock(&b->lock);
    out->enabled = 1;
    out->last_success_s = (double)b->last_success_ms / 1000.0;
    out->last_verified_s = (double)b->last_verified_ms / 1000.0;
    out->verify_failures = b->verify_failures;
    int64_t now = backup_now_ms();
    if (b->ring_n > 0) {
        int64_t t = b->ring[b->ring_head].time_ms;
        out->lag_s = now > t ? (double)(now - t) / 1000.0 : 0;
    } else if (!b->gen_active || b->want_generation)
        out->lag_s = b->last_generation_ms ? (double)(now - b->last_generation_ms) / 1000.0 : 0;
    out->generation = b->generation_seq;
    pthread_mutex_unlock(&b->lock);
}
