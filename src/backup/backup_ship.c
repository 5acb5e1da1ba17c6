/*
 * backup_ship.c — reading the live WAL and shipping it (backup_int.h): whole
 * committed transactions after the shipped position become segments on the target
 * (and, while a new generation's snapshot is in progress, on the previous generation
 * too); and the committed end of the log where a generation starts. Shipper thread.
 */
/* Messages name paths; a path long enough to truncate one still leaves it readable. */
#pragma GCC diagnostic ignored "-Wformat-truncation"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/backup_int.h"
#include "backup/wal.h"
#include "base/log.h"

/* ---- reading the WAL (shipper thread) ---- */

/* Reads the WAL header: 1 read, 0 no usable log (absent, empty, being created), -1 error. */
int backup_wal_read_header(backup_t *b, int fd, uint8_t raw[WAL_HEADER_SIZE], wal_header_t *h)
{
    ssize_t n = pread(fd, raw, WAL_HEADER_SIZE, 0);
    if (n < 0)
        return -1;
    if (n < WAL_HEADER_SIZE || wal_header_parse(raw, (size_t)n, h) != 0)
        return 0;
    (void)b;
    return 1;
}

void backup_gen_prefix(const backup_t *b, char *out, size_t n, const char *what)
{
    snprintf(out, n, "generations/%s/%s", b->gen_id, what);
}

void backup_log_error_rate_limited(backup_t *b, const char *what, const char *msg)
{
    int64_t now = backup_now_ms();
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
        backup_commit_rec_t *r = &b->ring[(b->ring_head + *popped) % BACKUP_RING_CAP];
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
    return backup_now_ms();
}

/* Ships every whole committed transaction after the shipped position of the current
 * log. Returns 0 (nothing left or shipped all), 1 continuity broken (a new generation
 * is needed), -1 target error. Shipper thread; called also under the write lock. */
int backup_ship_round(backup_t *b)
{
    int fd = open(b->wal_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    int result = 0;
    for (;;) {
        uint8_t raw[WAL_HEADER_SIZE];
        wal_header_t h;
        int hr = backup_wal_read_header(b, fd, raw, &h);
        if (hr <= 0) {
            result = hr < 0 ? -1 : 0;
            break;
        }
        pthread_mutex_lock(&b->lock);
        backup_wal_pos_t pos = b->shipped;
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
                backup_grow_buf(b, b->round_bytes * 2) == 0)
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
        backup_gen_prefix(b, name, sizeof(name), what);
        char err[512];
        if (backup_put(b->target, &b->key, name, b->buf, WAL_SEG_HEADER_SIZE + tsz + fbytes, err,
                       sizeof(err)) != 0) {
            backup_log_error_rate_limited(b, "cannot ship WAL frames", err);
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
                backup_log_error_rate_limited(b, "cannot ship WAL frames to the previous generation", err);
                __atomic_store_n(&b->prev_active, 0, __ATOMIC_RELEASE);
            }
        }
        pthread_mutex_lock(&b->lock);
        b->shipped.frames += (uint32_t)sc.frames;
        b->shipped.ck[0] = sc.ck[0];
        b->shipped.ck[1] = sc.ck[1];
        if (popped > b->ring_n)
            popped = b->ring_n;
        b->ring_head = (b->ring_head + popped) % BACKUP_RING_CAP;
        b->ring_n -= popped;
        if (b->ring_n == 0)
            b->ring_overflow = 0;
        b->last_success_ms = backup_now_ms();
        pthread_mutex_unlock(&b->lock);
        if ((size_t)n < want)
            break; /* read to the end of the file */
    }
    close(fd);
    return result;
}

/* Reads the whole current log to find its committed end: the generation's start. */
int backup_wal_end(backup_t *b, backup_wal_pos_t *out)
{
    memset(out, 0, sizeof(*out));
    int fd = open(b->wal_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        out->none = 1;
        return errno == ENOENT ? 0 : -1;
    }
    uint8_t raw[WAL_HEADER_SIZE];
    wal_header_t h;
    int hr = backup_wal_read_header(b, fd, raw, &h);
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
            if (b->round_bytes < (1u << 30) && backup_grow_buf(b, b->round_bytes * 2) == 0) {
                want = (b->round_bytes / fsz) * fsz;
                continue;
            }
            break;
        }
    }
    close(fd);
    return 0;
}
