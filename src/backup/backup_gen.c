/*
 * backup_gen.c — snapshots and generations (backup_int.h): starting a generation
 * under the write lock, the snapshot thread that copies, uploads and completes it,
 * listing the generations on the target, and continuing the newest one at start-up
 * when the WAL on disk still continues it. Shipper thread, except snapshot_main.
 */
/* Messages name paths; a path long enough to truncate one still leaves it readable. */
#pragma GCC diagnostic ignored "-Wformat-truncation"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <sqlite3.h>

#include "base/util.h"
#include "backup/backup_int.h"
#include "backup/wal.h"
#include "base/log.h"

#define SNAPSHOT_STEP_PAGES 1024

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

void backup_snapshot_abort(backup_t *b)
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

/* Starts a new generation. 0 started (the snapshot then runs in steps), -1 not now. */
static void *snapshot_main(void *arg);

int backup_start_generation(backup_t *b, int old_continuous)
{
    char err[512];
    /* A snapshot still running belongs to a generation this one replaces. */
    backup_snapshot_join(b, 1);
    backup_snapshot_abort(b);
    if (open_conns(b, err, sizeof(err)) != 0) {
        backup_log_error_rate_limited(b, "cannot start a backup generation", err);
        return -1;
    }
    if (sqlite3_exec(b->wconn, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        backup_log_error_rate_limited(b, "cannot start a backup generation", sqlite3_errmsg(b->wconn));
        return -1;
    }
    /* No commit can happen now: finish the old generation, find the log's end, and
     * pin a read transaction exactly there. */
    if (old_continuous && b->gen_active)
        backup_ship_round(b);
    backup_wal_pos_t start;
    int rc = backup_wal_end(b, &start);
    if (rc == 0 &&
        (sqlite3_exec(b->rconn, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
         sqlite3_exec(b->rconn, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) != SQLITE_OK))
        rc = -1;
    if (rc != 0) {
        sqlite3_exec(b->wconn, "ROLLBACK", NULL, NULL, NULL);
        backup_snapshot_abort(b);
        backup_log_error_rate_limited(b, "cannot start a backup generation",
                                      "cannot read the database's WAL");
        return -1;
    }
    /* The page size from the database itself (there may be no log to read it from). */
    sqlite3_stmt *ps = NULL;
    if (sqlite3_prepare_v2(b->rconn, "PRAGMA page_size", -1, &ps, NULL) == SQLITE_OK &&
        sqlite3_step(ps) == SQLITE_ROW)
        b->page_size = (uint32_t)sqlite3_column_int(ps, 0);
    sqlite3_finalize(ps);
    int64_t now = backup_now_ms();
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
        backup_log_error_rate_limited(b, "cannot start a snapshot",
                                      b->snap_db ? sqlite3_errmsg(b->snap_db) : "no memory");
        backup_snapshot_abort(b);
        pthread_mutex_lock(&b->lock);
        b->want_generation = 1; /* this generation has no snapshot: try again */
        pthread_mutex_unlock(&b->lock);
        return -1;
    }
    if (pthread_create(&b->snap_thread, NULL, snapshot_main, b) != 0) {
        backup_log_error_rate_limited(b, "cannot start a snapshot", "no thread");
        backup_snapshot_abort(b);
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
    util_thread_name("snapshot");
    backup_t *b = arg;
    int64_t t0 = backup_now_ms();
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
    backup_gen_prefix(b, name, sizeof(name), "snapshot.db");
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
    backup_gen_prefix(b, name, sizeof(name), "generation.json");
    rc = text ? backup_put(b->target, &b->key, name, text, strlen(text), err, sizeof(err)) : -1;
    free(text);
    if (rc != 0)
        goto fail;
    LOGF(LOG_INFO, "backup", "generation %s: snapshot of %lld bytes written in %lld ms", b->gen_id,
         (long long)st.st_size, (long long)(backup_now_ms() - t0));
    __atomic_store_n(&b->gen_complete, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&b->prev_active, 0, __ATOMIC_RELEASE);
    pthread_mutex_lock(&b->lock);
    b->last_success_ms = backup_now_ms();
    b->verify_wanted = 1;
    pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
    return NULL;
fail:
    if (!__atomic_load_n(&b->snap_cancel, __ATOMIC_ACQUIRE))
        LOGF(LOG_ERROR, "backup", "the snapshot of generation %s failed: %s", b->gen_id, err);
    backup_snapshot_abort(b);
    if (!__atomic_load_n(&b->snap_cancel, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&b->lock);
        b->want_generation = 1;
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->lock);
    }
    return NULL;
}

/* Stops (cancel) or waits for the snapshot thread; shipper thread. */
void backup_snapshot_join(backup_t *b, int cancel)
{
    if (!b->snap_running)
        return;
    if (cancel)
        __atomic_store_n(&b->snap_cancel, 1, __ATOMIC_RELEASE);
    pthread_join(b->snap_thread, NULL);
    b->snap_running = 0;
    __atomic_store_n(&b->snap_cancel, 0, __ATOMIC_RELEASE);
    backup_snapshot_abort(b);
}

/* Collects the generations in the target, oldest first. Returns an owned array. */
backup_gen_info_t *backup_list_generations(backup_target_t *t, size_t *n, char *err, size_t errlen)
{
    backup_list_t l;
    *n = 0;
    if (t->ops->list(t, "generations/", &l, err, errlen) != 0)
        return NULL;
    backup_gen_info_t *g = calloc(l.n + 1, sizeof(*g));
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
int backup_try_resume(backup_t *b)
{
    char err[512];
    size_t n;
    backup_gen_info_t *g = backup_list_generations(b->target, &n, err, sizeof(err));
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
    backup_gen_info_t gen = g[pick];
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
    backup_wal_pos_t pos = {.none = (int)json_integer_value(json_object_get(meta, "none")),
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
    if (backup_wal_read_header(b, fd, raw, &h) <= 0 || h.salt1 != pos.salt1 || h.salt2 != pos.salt2 ||
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
            if ((size_t)r == want && b->round_bytes < (1u << 30) &&
                backup_grow_buf(b, b->round_bytes * 2) == 0)
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
