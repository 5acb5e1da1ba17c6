/*
 * backup.c — the shipper, snapshots, generations, the schedule, retention and
 * verification of backup.h. The argument for correctness is in ADR 0011; in short:
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
#include "backup/backup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "backup/wal.h"
#include "base/log.h"
#include "base/util.h"

#define RING_CAP 8192
#define MAX_ROUND_BYTES (16u << 20)
#define SNAPSHOT_STEP_PAGES 1024
/* A WAL this long is checkpointed even when shipping fails (the generation is then
 * lost and a new one starts), so that a dead target cannot grow the log forever. */
#define WAL_SAFETY_FRAMES 262144

typedef struct {
    int nframes;
    int64_t time_ms;
} commit_rec_t;

typedef struct {
    int none; /* no WAL at the generation's start: any first log continues it */
    uint32_t salt1, salt2;
    uint32_t frames;
    uint32_t ck[2];
} wal_pos_t;

struct backup {
    backup_config_t cfg;
    char target_dir[1024], data_dir[1024], db_path[1100], wal_path[1110], key_file[1024];
    backup_target_t *target;
    backup_key_t key;

    pthread_mutex_t lock; /* everything below up to the shipper-only part */
    pthread_cond_t cond;
    commit_rec_t ring[RING_CAP];
    size_t ring_head, ring_n;
    int ring_overflow;
    int last_hook_frames;
    int stopping, started;
    int want_generation;
    int gen_active;
    wal_pos_t shipped; /* what the target has of the current log */
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
    wal_pos_t gen_start;
    int64_t gen_start_ms;
    uint32_t page_size;
    uint8_t *buf;       /* a segment being built: header, transaction table, frames */
    size_t round_bytes; /* frames read per round; doubles for a transaction larger than it */
    int64_t last_error_log_ms;

    pthread_t shipper, scheduler;
};

static backup_t *the_backup; /* for /metrics */

static int64_t now_ms(void)
{
    return util_now_ms();
}

/* ---- writer-thread hooks ---- */

static void hook_commit(void *ctx, int nframes)
{
    backup_t *b = ctx;
    pthread_mutex_lock(&b->lock);
    if (b->ring_n == RING_CAP) {
        /* The shipper is far behind: forget the oldest time (its commit ships with the
         * time it is shipped, later than true, never earlier). */
        b->ring_head = (b->ring_head + 1) % RING_CAP;
        b->ring_n--;
        b->ring_overflow = 1;
    }
    commit_rec_t *r = &b->ring[(b->ring_head + b->ring_n) % RING_CAP];
    r->nframes = nframes;
    r->time_ms = now_ms();
    b->ring_n++;
    b->last_hook_frames = nframes;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

static int hook_due(void *ctx)
{
    backup_t *b = ctx;
    pthread_mutex_lock(&b->lock);
    int64_t now = now_ms();
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
    b->last_ckpt_ms = now_ms();
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
static int grow_buf(backup_t *b, size_t bytes)
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
    if (grow_buf(b, MAX_ROUND_BYTES) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return b;
fail:
    backup_free(b);
    return NULL;
}

/* ---- reading the WAL (shipper thread) ---- */

/* Reads the WAL header: 1 read, 0 no usable log (absent, empty, being created), -1 error. */
static int read_header(backup_t *b, int fd, uint8_t raw[WAL_HEADER_SIZE], wal_header_t *h)
{
    ssize_t n = pread(fd, raw, WAL_HEADER_SIZE, 0);
    if (n < 0)
        return -1;
    if (n < WAL_HEADER_SIZE || wal_header_parse(raw, (size_t)n, h) != 0)
        return 0;
    (void)b;
    return 1;
}

static void gen_prefix(const backup_t *b, char *out, size_t n, const char *what)
{
    snprintf(out, n, "generations/%s/%s", b->gen_id, what);
}

static void log_error_rate_limited(backup_t *b, const char *what, const char *msg)
{
    int64_t now = now_ms();
    if (now - b->last_error_log_ms > 10000) {
        b->last_error_log_ms = now;
        LOGF(LOG_ERROR, "backup", "%s: %s", what, msg);
    }
}

/* Takes the time of the commit that ends at WAL frame f: the hook's, when the next
 * commit it reported is that one; otherwise (another process wrote) now. Lock held.
 * *popped counts the records to drop once the segment is on the target. */
static int64_t commit_time(backup_t *b, uint32_t f, size_t *popped)
{
    while (*popped < b->ring_n) {
        commit_rec_t *r = &b->ring[(b->ring_head + *popped) % RING_CAP];
        if ((uint32_t)r->nframes == f) {
            (*popped)++;
            return r->time_ms;
        }
        if ((uint32_t)r->nframes < f) {
            (*popped)++; /* a record whose commit was not seen (another log): stale */
            continue;
        }
        break;
    }
    return now_ms();
}

/* Ships every whole committed transaction after the shipped position of the current
 * log. Returns 0 (nothing left or shipped all), 1 continuity broken (a new generation
 * is needed), -1 target error. Shipper thread; called also under the write lock. */
static int ship_round(backup_t *b)
{
    int fd = open(b->wal_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    int result = 0;
    for (;;) {
        uint8_t raw[WAL_HEADER_SIZE];
        wal_header_t h;
        int hr = read_header(b, fd, raw, &h);
        if (hr <= 0) {
            result = hr < 0 ? -1 : 0;
            break;
        }
        pthread_mutex_lock(&b->lock);
        wal_pos_t pos = b->shipped;
        int same = !pos.none && h.salt1 == pos.salt1 && h.salt2 == pos.salt2;
        if (!same) {
            /* A new log: it continues the generation only after our own checkpoint of
             * exactly what was shipped (or when there was no log at its start). */
            int cont =
                pos.none || (b->ckpt.valid && b->ckpt.salt1 == pos.salt1 && b->ckpt.salt2 == pos.salt2 &&
                             b->ckpt.frames == pos.frames && h.salt1 == pos.salt1 + 1);
            if (!cont) {
                pthread_mutex_unlock(&b->lock);
                LOGF(LOG_WARN, "backup",
                     "the WAL was reset without a checkpoint of everything shipped: starting a new "
                     "generation");
                result = 1;
                break;
            }
            b->wal_index++;
            b->prev_wal_index++;
            b->shipped.none = 0;
            b->shipped.salt1 = h.salt1;
            b->shipped.salt2 = h.salt2;
            b->shipped.frames = 0;
            b->shipped.ck[0] = h.ck[0];
            b->shipped.ck[1] = h.ck[1];
            b->ckpt.valid = 0;
            pos = b->shipped;
        }
        pthread_mutex_unlock(&b->lock);
        if (b->page_size == 0)
            b->page_size = h.page_size;
        if (h.page_size != b->page_size) {
            result = 1;
            break;
        }
        size_t fsz = WAL_FRAME_HEADER_SIZE + (size_t)h.page_size;
        size_t want = (b->round_bytes / fsz) * fsz;
        off_t off = WAL_HEADER_SIZE + (off_t)pos.frames * (off_t)fsz;
        uint8_t *frames = b->buf + WAL_SEG_HEADER_SIZE; /* txn table goes before, moved later */
        ssize_t n = pread(fd, frames, want, off);
        if (n < (ssize_t)fsz)
            break;
        size_t *commits = malloc(sizeof(size_t) * ((size_t)n / fsz));
        if (commits == NULL) {
            result = -1;
            break;
        }
        wal_scan_t sc;
        wal_scan(&h, frames, (size_t)n, pos.ck, &sc, commits, (size_t)n / fsz);
        if (sc.frames == 0) {
            free(commits);
            /* One transaction larger than a round: read more at once (up to 1 GiB). */
            if ((size_t)n == want && sc.bad_at == SIZE_MAX && b->round_bytes < (1u << 30) &&
                grow_buf(b, b->round_bytes * 2) == 0)
                continue;
            break;
        }
        /* The times of the transactions, and the segment's header in front. */
        wal_seg_txn_t *txns = malloc(sizeof(*txns) * sc.commits);
        if (txns == NULL) {
            free(commits);
            result = -1;
            break;
        }
        size_t popped = 0;
        pthread_mutex_lock(&b->lock);
        for (size_t i = 0; i < sc.commits; i++) {
            uint32_t f = pos.frames + (uint32_t)commits[i] + 1;
            txns[i].end_frame = f;
            txns[i].commit_size = wal_frame_at(&h, frames, commits[i]).commit_size;
            txns[i].time_ms = commit_time(b, f, &popped);
        }
        pthread_mutex_unlock(&b->lock);
        size_t tsz = sc.commits * WAL_SEG_TXN_SIZE;
        size_t fbytes = sc.frames * fsz;
        /* Make room for the transaction table between header and frames. */
        memmove(b->buf + WAL_SEG_HEADER_SIZE + tsz, frames, fbytes);
        wal_seg_t seg = {.wal_index = b->wal_index,
                         .first_frame = pos.frames + 1,
                         .nframes = (uint32_t)sc.frames,
                         .ntxn = (uint32_t)sc.commits,
                         .ck_start = {pos.ck[0], pos.ck[1]},
                         .ck_end = {sc.ck[0], sc.ck[1]}};
        memcpy(seg.wal_header, raw, WAL_HEADER_SIZE);
        wal_seg_write_header(b->buf, &seg, txns);
        free(txns);
        free(commits);
        char name[128], what[64];
        snprintf(what, sizeof(what), "wal/%08" PRIx32 "-%010" PRIu32 ".seg", seg.wal_index, seg.first_frame);
        gen_prefix(b, name, sizeof(name), what);
        char err[512];
        if (backup_put(b->target, &b->key, name, b->buf, WAL_SEG_HEADER_SIZE + tsz + fbytes, err,
                       sizeof(err)) != 0) {
            log_error_rate_limited(b, "cannot ship WAL frames", err);
            result = -1;
            break;
        }
        if (__atomic_load_n(&b->prev_active, __ATOMIC_ACQUIRE)) {
            /* The same frames, numbered in the previous generation's logs. A failure
             * ends that generation here: it must never get a gap. */
            wal_put32(b->buf + 40, b->prev_wal_index);
            snprintf(name, sizeof(name), "generations/%s/wal/%08" PRIx32 "-%010" PRIu32 ".seg", b->prev_id,
                     b->prev_wal_index, seg.first_frame);
            if (backup_put(b->target, &b->key, name, b->buf, WAL_SEG_HEADER_SIZE + tsz + fbytes, err,
                           sizeof(err)) != 0) {
                log_error_rate_limited(b, "cannot ship WAL frames to the previous generation", err);
                __atomic_store_n(&b->prev_active, 0, __ATOMIC_RELEASE);
            }
        }
        pthread_mutex_lock(&b->lock);
        b->shipped.frames += (uint32_t)sc.frames;
        b->shipped.ck[0] = sc.ck[0];
        b->shipped.ck[1] = sc.ck[1];
        if (popped > b->ring_n)
            popped = b->ring_n;
        b->ring_head = (b->ring_head + popped) % RING_CAP;
        b->ring_n -= popped;
        if (b->ring_n == 0)
            b->ring_overflow = 0;
        b->last_success_ms = now_ms();
        pthread_mutex_unlock(&b->lock);
        if ((size_t)n < want)
            break; /* read to the end of the file */
    }
    close(fd);
    return result;
}

/* ---- snapshots and generations (shipper thread) ---- */

static int open_conns(backup_t *b, char *err, size_t errlen)
{
    if (b->rconn != NULL)
        return 0;
    if (sqlite3_open_v2(b->db_path, &b->rconn, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_open_v2(b->db_path, &b->wconn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s for backup: %s", b->db_path,
                 b->wconn   ? sqlite3_errmsg(b->wconn)
                 : b->rconn ? sqlite3_errmsg(b->rconn)
                            : "out of memory");
        sqlite3_close(b->rconn);
        sqlite3_close(b->wconn);
        b->rconn = b->wconn = NULL;
        return -1;
    }
    sqlite3_busy_timeout(b->rconn, 5000);
    sqlite3_busy_timeout(b->wconn, 2000);
    /* Closing must leave the WAL as it is (see the store's connections). */
    sqlite3_db_config(b->rconn, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
    sqlite3_db_config(b->wconn, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
    /* This connection never commits; it must not checkpoint either (it cannot: the
     * hook is per connection, so switch the automatic one off explicitly). */
    sqlite3_wal_autocheckpoint(b->wconn, 0);
    return 0;
}

static void snapshot_abort(backup_t *b)
{
    if (b->snap != NULL)
        sqlite3_backup_finish(b->snap);
    b->snap = NULL;
    if (b->snap_db != NULL)
        sqlite3_close(b->snap_db);
    b->snap_db = NULL;
    if (b->snap_path[0]) {
        unlink(b->snap_path);
        b->snap_path[0] = '\0';
    }
    if (b->rconn != NULL && !sqlite3_get_autocommit(b->rconn))
        sqlite3_exec(b->rconn, "COMMIT", NULL, NULL, NULL);
}

/* Reads the whole current log to find its committed end: the generation's start. */
static int wal_end(backup_t *b, wal_pos_t *out)
{
    memset(out, 0, sizeof(*out));
    int fd = open(b->wal_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        out->none = 1;
        return errno == ENOENT ? 0 : -1;
    }
    uint8_t raw[WAL_HEADER_SIZE];
    wal_header_t h;
    int hr = read_header(b, fd, raw, &h);
    if (hr <= 0) {
        close(fd);
        out->none = 1;
        return hr < 0 ? -1 : 0;
    }
    out->salt1 = h.salt1;
    out->salt2 = h.salt2;
    out->ck[0] = h.ck[0];
    out->ck[1] = h.ck[1];
    b->page_size = h.page_size;
    size_t fsz = WAL_FRAME_HEADER_SIZE + (size_t)h.page_size;
    size_t want = (b->round_bytes / fsz) * fsz;
    off_t off = WAL_HEADER_SIZE;
    for (;;) {
        ssize_t n = pread(fd, b->buf, want, off);
        if (n < (ssize_t)fsz)
            break;
        wal_scan_t sc;
        wal_scan(&h, b->buf, (size_t)n, out->ck, &sc, NULL, 0);
        out->frames += (uint32_t)sc.frames;
        out->ck[0] = sc.ck[0];
        out->ck[1] = sc.ck[1];
        if (sc.bad_at != SIZE_MAX || (size_t)n < want)
            break;
        /* Continue after the last commit frame (the frames after it are rescanned). */
        off += (off_t)(sc.frames * fsz);
        if (sc.frames == 0) {
            if (b->round_bytes < (1u << 30) && grow_buf(b, b->round_bytes * 2) == 0) {
                want = (b->round_bytes / fsz) * fsz;
                continue;
            }
            break;
        }
    }
    close(fd);
    return 0;
}

/* Starts a new generation. 0 started (the snapshot then runs in steps), -1 not now. */
static void *snapshot_main(void *arg);
static void snapshot_join(backup_t *b, int cancel);

static int start_generation(backup_t *b, int old_continuous)
{
    char err[512];
    /* A snapshot still running belongs to a generation this one replaces. */
    snapshot_join(b, 1);
    snapshot_abort(b);
    if (open_conns(b, err, sizeof(err)) != 0) {
        log_error_rate_limited(b, "cannot start a backup generation", err);
        return -1;
    }
    if (sqlite3_exec(b->wconn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        log_error_rate_limited(b, "cannot start a backup generation", sqlite3_errmsg(b->wconn));
        return -1;
    }
    /* No commit can happen now: finish the old generation, find the log's end, and
     * pin a read transaction exactly there. */
    if (old_continuous && b->gen_active)
        ship_round(b);
    wal_pos_t start;
    int rc = wal_end(b, &start);
    if (rc == 0 &&
        (sqlite3_exec(b->rconn, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
         sqlite3_exec(b->rconn, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) != SQLITE_OK))
        rc = -1;
    if (rc != 0) {
        sqlite3_exec(b->wconn, "ROLLBACK", NULL, NULL, NULL);
        snapshot_abort(b);
        log_error_rate_limited(b, "cannot start a backup generation", "cannot read the database's WAL");
        return -1;
    }
    /* The page size from the database itself (there may be no log to read it from). */
    sqlite3_stmt *ps = NULL;
    if (sqlite3_prepare_v2(b->rconn, "PRAGMA page_size", -1, &ps, NULL) == SQLITE_OK &&
        sqlite3_step(ps) == SQLITE_ROW)
        b->page_size = (uint32_t)sqlite3_column_int(ps, 0);
    sqlite3_finalize(ps);
    int64_t now = now_ms();
    uint32_t rnd = randombytes_random();
    pthread_mutex_lock(&b->lock);
    /* The generation being replaced keeps receiving the log until the new snapshot is
     * complete, if it is itself restorable and the log continues it. */
    if (!old_continuous || !b->gen_active)
        __atomic_store_n(&b->prev_active, 0, __ATOMIC_RELEASE);
    else if (__atomic_load_n(&b->gen_complete, __ATOMIC_ACQUIRE)) {
        snprintf(b->prev_id, sizeof(b->prev_id), "%s", b->gen_id);
        b->prev_wal_index = b->wal_index;
        __atomic_store_n(&b->prev_active, 1, __ATOMIC_RELEASE);
    } /* else: the current one never completed; the previous one (if any) goes on */
    __atomic_store_n(&b->gen_complete, 0, __ATOMIC_RELEASE);
    snprintf(b->gen_id, sizeof(b->gen_id), "%016" PRIx64 "%08" PRIx32, (uint64_t)now, rnd);
    b->wal_index = 0;
    /* A checkpoint of exactly this log (everything backfilled) stays valid: the log
     * may restart at the next write and that continues the new generation too. */
    if (!(b->ckpt.valid && !start.none && b->ckpt.salt1 == start.salt1 && b->ckpt.salt2 == start.salt2 &&
          b->ckpt.frames == start.frames))
        b->ckpt.valid = 0;
    b->shipped = start;
    b->ring_n = 0; /* every commit so far is in the snapshot */
    b->ring_overflow = 0;
    b->gen_active = 1;
    b->generation_seq++;
    b->last_generation_ms = now;
    pthread_mutex_unlock(&b->lock);
    sqlite3_exec(b->wconn, "ROLLBACK", NULL, NULL, NULL);
    b->gen_start = start;
    b->gen_start_ms = now;

    snprintf(b->snap_path, sizeof(b->snap_path), "%s/.backup-snapshot-%s.db", b->data_dir, b->gen_id);
    unlink(b->snap_path);
    if (sqlite3_open_v2(b->snap_path, &b->snap_db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK ||
        (b->snap = sqlite3_backup_init(b->snap_db, "main", b->rconn, "main")) == NULL) {
        log_error_rate_limited(b, "cannot start a snapshot",
                               b->snap_db ? sqlite3_errmsg(b->snap_db) : "no memory");
        snapshot_abort(b);
        pthread_mutex_lock(&b->lock);
        b->want_generation = 1; /* this generation has no snapshot: try again */
        pthread_mutex_unlock(&b->lock);
        return -1;
    }
    if (pthread_create(&b->snap_thread, NULL, snapshot_main, b) != 0) {
        log_error_rate_limited(b, "cannot start a snapshot", "no thread");
        snapshot_abort(b);
        pthread_mutex_lock(&b->lock);
        b->want_generation = 1;
        pthread_mutex_unlock(&b->lock);
        return -1;
    }
    b->snap_running = 1;
    LOGF(LOG_INFO, "backup", "generation %s started at WAL frame %" PRIu32 "; snapshot in progress",
         b->gen_id, start.frames);
    return 0;
}

static int upload_file(backup_t *b, const char *path, const char *name, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    backup_out_t *o = backup_out_open(b->target, &b->key, name, err, errlen);
    if (o == NULL) {
        fclose(f);
        return -1;
    }
    uint8_t *chunk = malloc(1 << 20);
    int rc = chunk ? 0 : -1;
    size_t n;
    while (rc == 0 && (n = fread(chunk, 1, 1 << 20, f)) > 0)
        rc = backup_out_write(o, chunk, n, err, errlen);
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "cannot read %s", path);
        rc = -1;
    }
    free(chunk);
    fclose(f);
    if (rc != 0) {
        backup_out_abort(o);
        return -1;
    }
    return backup_out_commit(o, err, errlen);
}

/* The snapshot thread: copies the database from rconn's pinned read transaction in
 * steps, uploads it, then writes generation.json. Shipping goes on meanwhile on the
 * shipper thread, into the same generation. */
static void *snapshot_main(void *arg)
{
    backup_t *b = arg;
    int64_t t0 = now_ms();
    int rc;
    char err[512];
    while ((rc = sqlite3_backup_step(b->snap, SNAPSHOT_STEP_PAGES)) == SQLITE_OK || rc == SQLITE_BUSY ||
           rc == SQLITE_LOCKED) {
        if (__atomic_load_n(&b->snap_cancel, __ATOMIC_ACQUIRE)) {
            snprintf(err, sizeof(err), "cancelled");
            goto fail;
        }
        if (rc != SQLITE_OK)
            usleep(10000);
    }
    if (rc != SQLITE_DONE) {
        snprintf(err, sizeof(err), "%s", sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_backup_finish(b->snap);
    b->snap = NULL;
    sqlite3_exec(b->rconn, "COMMIT", NULL, NULL, NULL);
    if (sqlite3_close(b->snap_db) != SQLITE_OK) {
        snprintf(err, sizeof(err), "cannot close the snapshot");
        goto fail;
    }
    b->snap_db = NULL;
    char name[128];
    gen_prefix(b, name, sizeof(name), "snapshot.db");
    if (upload_file(b, b->snap_path, name, err, sizeof(err)) != 0)
        goto fail;
    struct stat st;
    stat(b->snap_path, &st);
    unlink(b->snap_path);
    b->snap_path[0] = '\0';
    json_t *meta = json_pack("{s:s,s:I,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:i,s:I}", "id", b->gen_id, "created_ms",
                             (json_int_t)b->gen_start_ms, "version", 1, "none", b->gen_start.none, "salt1",
                             (json_int_t)b->gen_start.salt1, "salt2", (json_int_t)b->gen_start.salt2, "frame",
                             (json_int_t)b->gen_start.frames, "ck0", (json_int_t)b->gen_start.ck[0], "ck1",
                             (json_int_t)b->gen_start.ck[1], "page_size", (int)b->page_size, "snapshot_bytes",
                             (json_int_t)st.st_size);
    char *text = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(meta);
    gen_prefix(b, name, sizeof(name), "generation.json");
    rc = text ? backup_put(b->target, &b->key, name, text, strlen(text), err, sizeof(err)) : -1;
    free(text);
    if (rc != 0)
        goto fail;
    LOGF(LOG_INFO, "backup", "generation %s: snapshot of %lld bytes written in %lld ms", b->gen_id,
         (long long)st.st_size, (long long)(now_ms() - t0));
    __atomic_store_n(&b->gen_complete, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&b->prev_active, 0, __ATOMIC_RELEASE);
    pthread_mutex_lock(&b->lock);
    b->last_success_ms = now_ms();
    b->verify_wanted = 1;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    return NULL;
fail:
    if (!__atomic_load_n(&b->snap_cancel, __ATOMIC_ACQUIRE))
        LOGF(LOG_ERROR, "backup", "the snapshot of generation %s failed: %s", b->gen_id, err);
    snapshot_abort(b);
    if (!__atomic_load_n(&b->snap_cancel, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&b->lock);
        b->want_generation = 1;
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
    }
    return NULL;
}

/* Stops (cancel) or waits for the snapshot thread; shipper thread. */
static void snapshot_join(backup_t *b, int cancel)
{
    if (!b->snap_running)
        return;
    if (cancel)
        __atomic_store_n(&b->snap_cancel, 1, __ATOMIC_RELEASE);
    pthread_join(b->snap_thread, NULL);
    b->snap_running = 0;
    __atomic_store_n(&b->snap_cancel, 0, __ATOMIC_RELEASE);
    snapshot_abort(b);
}

typedef struct {
    char id[32];
    int complete;
    int64_t created_ms;
} gen_info_t;

/* Collects the generations in the target, oldest first. Returns an owned array. */
static gen_info_t *list_generations(backup_target_t *t, size_t *n, char *err, size_t errlen)
{
    backup_list_t l;
    *n = 0;
    if (t->ops->list(t, "generations/", &l, err, errlen) != 0)
        return NULL;
    gen_info_t *g = calloc(l.n + 1, sizeof(*g));
    if (g == NULL) {
        backup_list_free(&l);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < l.n; i++) {
        const char *p = l.items[i].name + 12;
        const char *slash = strchr(p, '/');
        if (slash == NULL || slash - p != 24)
            continue;
        if (*n == 0 || strncmp(g[*n - 1].id, p, 24) != 0) {
            memcpy(g[*n].id, p, 24);
            g[*n].id[24] = '\0';
            g[*n].created_ms =
                (int64_t)strtoull((char[17]){p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9],
                                             p[10], p[11], p[12], p[13], p[14], p[15], 0},
                                  NULL, 16);
            (*n)++;
        }
        if (strcmp(slash + 1, "generation.json") == 0)
            g[*n - 1].complete = 1;
    }
    backup_list_free(&l);
    return g;
}

/* At start-up: continues the newest complete generation when the WAL on disk still
 * holds, with the same salts and the same checksum chain, exactly what that
 * generation's last segment ends with (the previous run closed without checkpointing,
 * and nobody else checkpointed since). Returns 1 resumed, 0 not (a new generation
 * follows). Shipper thread, before the first round. */
static int try_resume(backup_t *b)
{
    char err[512];
    size_t n;
    gen_info_t *g = list_generations(b->target, &n, err, sizeof(err));
    if (g == NULL)
        return 0;
    ssize_t pick = -1;
    for (size_t i = 0; i < n; i++)
        if (g[i].complete)
            pick = (ssize_t)i;
    if (pick < 0) {
        free(g);
        return 0;
    }
    gen_info_t gen = g[pick];
    free(g);
    char name[160];
    snprintf(name, sizeof(name), "generations/%s/generation.json", gen.id);
    uint8_t *data = NULL;
    size_t len;
    if (backup_get(b->target, &b->key, name, 65536, &data, &len, err, sizeof(err)) != 0)
        return 0;
    json_t *meta = json_loadb((const char *)data, len, 0, NULL);
    free(data);
    data = NULL;
    if (meta == NULL)
        return 0;
    uint32_t page_size = (uint32_t)json_integer_value(json_object_get(meta, "page_size"));
    uint32_t index = 0;
    wal_pos_t pos = {.none = (int)json_integer_value(json_object_get(meta, "none")),
                     .salt1 = (uint32_t)json_integer_value(json_object_get(meta, "salt1")),
                     .salt2 = (uint32_t)json_integer_value(json_object_get(meta, "salt2")),
                     .frames = (uint32_t)json_integer_value(json_object_get(meta, "frame")),
                     .ck = {(uint32_t)json_integer_value(json_object_get(meta, "ck0")),
                            (uint32_t)json_integer_value(json_object_get(meta, "ck1"))}};
    json_decref(meta);
    backup_list_t segs;
    snprintf(name, sizeof(name), "generations/%s/wal/", gen.id);
    if (b->target->ops->list(b->target, name, &segs, err, sizeof(err)) != 0)
        return 0;
    int ok = 1;
    if (segs.n > 0) {
        wal_seg_t seg;
        const uint8_t *txns, *frames;
        const char *why;
        ok = backup_get(b->target, &b->key, segs.items[segs.n - 1].name, 1u << 31, &data, &len, err,
                        sizeof(err)) == 0 &&
             wal_seg_parse(data, len, &seg, &txns, &frames, &why) == 0;
        if (ok) {
            index = seg.wal_index;
            pos.none = 0;
            pos.salt1 = seg.hdr.salt1;
            pos.salt2 = seg.hdr.salt2;
            pos.frames = seg.first_frame + seg.nframes - 1;
            pos.ck[0] = seg.ck_end[0];
            pos.ck[1] = seg.ck_end[1];
        }
        free(data);
    }
    backup_list_free(&segs);
    if (!ok || pos.none)
        return 0;
    /* The log on disk: same header salts, and the chain from its start reaches the
     * shipped end with the shipped checksum. */
    int fd = open(b->wal_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    uint8_t raw[WAL_HEADER_SIZE];
    wal_header_t h;
    if (read_header(b, fd, raw, &h) <= 0 || h.salt1 != pos.salt1 || h.salt2 != pos.salt2 ||
        h.page_size != page_size) {
        close(fd);
        return 0;
    }
    size_t fsz = WAL_FRAME_HEADER_SIZE + (size_t)h.page_size;
    uint32_t done = 0;
    uint32_t ck[2] = {h.ck[0], h.ck[1]};
    while (done < pos.frames) {
        size_t want = (b->round_bytes / fsz) * fsz;
        if ((size_t)(pos.frames - done) * fsz < want)
            want = (size_t)(pos.frames - done) * fsz;
        ssize_t r = pread(fd, b->buf, want, WAL_HEADER_SIZE + (off_t)done * (off_t)fsz);
        if (r < (ssize_t)fsz)
            break;
        wal_scan_t sc;
        wal_scan(&h, b->buf, (size_t)r, ck, &sc, NULL, 0);
        if (sc.frames == 0) {
            if ((size_t)r == want && b->round_bytes < (1u << 30) && grow_buf(b, b->round_bytes * 2) == 0)
                continue;
            break;
        }
        done += (uint32_t)sc.frames;
        ck[0] = sc.ck[0];
        ck[1] = sc.ck[1];
    }
    close(fd);
    if (done != pos.frames || ck[0] != pos.ck[0] || ck[1] != pos.ck[1])
        return 0;
    pthread_mutex_lock(&b->lock);
    snprintf(b->gen_id, sizeof(b->gen_id), "%s", gen.id);
    b->wal_index = index;
    b->page_size = page_size;
    b->shipped = pos;
    b->ckpt.valid = 0;
    b->gen_active = 1;
    b->generation_seq++;
    b->last_generation_ms = gen.created_ms;
    pthread_mutex_unlock(&b->lock);
    __atomic_store_n(&b->gen_complete, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&b->prev_active, 0, __ATOMIC_RELEASE);
    LOGF(LOG_INFO, "backup",
         "continuing generation %s at WAL frame %" PRIu32 " (the log on disk continues it)", gen.id,
         pos.frames);
    return 1;
}

static void *shipper_main(void *arg)
{
    backup_t *b = arg;
    try_resume(b);
    pthread_mutex_lock(&b->lock);
    int64_t retry_at = 0;
    for (;;) {
        if (b->stopping)
            break;
        int want_gen = b->want_generation || !b->gen_active;
        /* Commits wake us; otherwise poll a few times a second (another process's
         * commits, retries). */
        if (b->ring_n == 0 && !(want_gen && now_ms() >= retry_at)) {
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
            rc = ship_round(b);
        if (rc == 0 && ring_before != 0) {
            /* Commits noted but nothing could be shipped (the log vanished under us, say):
             * wait a little rather than spin. */
            pthread_mutex_lock(&b->lock);
            int stuck = b->ring_n == ring_before;
            pthread_mutex_unlock(&b->lock);
            if (stuck)
                usleep(50000);
        }
        if (rc == 1 || (want_gen && now_ms() >= retry_at)) {
            pthread_mutex_lock(&b->lock);
            b->want_generation = 0;
            pthread_mutex_unlock(&b->lock);
            if (start_generation(b, rc != 1) != 0) {
                pthread_mutex_lock(&b->lock);
                b->want_generation = 1;
                pthread_mutex_unlock(&b->lock);
                retry_at = now_ms() + 1000;
            }
        } else if (rc < 0) {
            /* The target failed: wait a little, the commits stay in the WAL. */
            usleep(200000);
        }
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    /* The writer has stopped: ship the rest. */
    if (b->gen_active && ship_round(b) != 0)
        LOGF(LOG_WARN, "backup", "the last WAL frames could not be shipped before shutdown");
    if (b->snap_running && b->snap != NULL)
        LOGF(LOG_WARN, "backup", "shutdown during a snapshot: generation %s stays incomplete", b->gen_id);
    snapshot_join(b, 1);
    return NULL;
}

/* ---- the schedule ---- */

static void *scheduler_main(void *arg)
{
    backup_t *b = arg;
    int64_t next_retention = now_ms() + 1000,
            next_verify = now_ms() + (int64_t)b->cfg.verify_interval_s * 1000;
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
        int64_t now = now_ms();
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
            next_retention = now_ms() + (n == -2 ? 1000 : retention_every);
        }
        if (verify) {
            if (backup_verify_run(b, err, sizeof(err)) != 0)
                LOGF(LOG_ERROR, "backup", "verification failed: %s", err);
            next_verify = now_ms() + (int64_t)b->cfg.verify_interval_s * 1000;
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
    snapshot_abort(b);
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
    gen_info_t *g = list_generations(t, &n, err, errlen);
    if (g == NULL) {
        t->ops->unlock(t);
        return -1;
    }
    char current[32];
    pthread_mutex_lock(&b->lock);
    snprintf(current, sizeof(current), "%s", b->gen_id);
    pthread_mutex_unlock(&b->lock);
    int64_t cutoff = now_ms() - b->cfg.retention_s * 1000;
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
        b->last_verified_ms = now_ms();
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
    int64_t now = now_ms();
    if (b->ring_n > 0) {
        int64_t t = b->ring[b->ring_head].time_ms;
        out->lag_s = now > t ? (double)(now - t) / 1000.0 : 0;
    } else if (!b->gen_active || b->want_generation)
        out->lag_s = b->last_generation_ms ? (double)(now - b->last_generation_ms) / 1000.0 : 0;
    out->generation = b->generation_seq;
    pthread_mutex_unlock(&b->lock);
}
