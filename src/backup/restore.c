/*
 * restore.c — point-in-time restore (`basalt restore`) and the verification restore.
 *
 * Picks the newest complete generation whose start is at or before the target time
 * (never "the generation updated last", litestream's v0.3.13 mistake: a generation
 * that started after the target cannot describe it, and an older one stops where the
 * next began), copies its snapshot, and applies its segments in order, checking that
 * each one continues the last (salts, frame numbers, checksums), up to the last
 * transaction committed at or before the time. Pages are written into the database
 * file as a checkpoint would. Then SQLite checks the result (integrity_check) and
 * counts the rows of each collection before success is reported. The target's shared
 * lock is held throughout, so retention waits.
 */
/* Messages name paths; a path long enough to truncate one still leaves it readable. */
#pragma GCC diagnostic ignored "-Wformat-truncation"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>

#include <sqlite3.h>

#include "backup/backup.h"
#include "backup/wal.h"
#include "base/util.h"

#define MAX_SEGMENT (1100u << 20)

int backup_parse_time(const char *s, int64_t *ms)
{
    if (strcmp(s, "latest") == 0) {
        *ms = INT64_MAX;
        return 0;
    }
    return util_parse_time(s, strlen(s), ms);
}

typedef struct {
    FILE *out;
    int quiet, tty;
    uint64_t total, done;
    int last_pct;
} progress_t;

static void progress(progress_t *p, uint64_t add)
{
    p->done += add;
    if (p->quiet || p->total == 0)
        return;
    int pct = (int)(p->done * 100 / p->total);
    if (pct > 100)
        pct = 100;
    if (p->tty) {
        if (pct == p->last_pct)
            return;
        char bar[41];
        int fill = pct * 40 / 100;
        for (int i = 0; i < 40; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[40] = '\0';
        fprintf(p->out, "\r[%s] %3d%% %.1f/%.1f MB", bar, pct, (double)p->done / 1e6, (double)p->total / 1e6);
        if (pct == 100)
            fputc('\n', p->out);
        fflush(p->out);
    } else if (pct / 10 != p->last_pct / 10 || p->last_pct < 0) {
        fprintf(p->out, "restore: %d%% (%.1f of %.1f MB)\n", pct, (double)p->done / 1e6,
                (double)p->total / 1e6);
        fflush(p->out);
    }
    p->last_pct = pct;
}

static int dir_empty_or_create(const char *dir, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "cannot open %s: %s", dir, strerror(errno));
            return -1;
        }
        if (mkdir(dir, 0700) != 0) {
            snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
            return -1;
        }
        return 0;
    }
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = 0;
    closedir(d);
    if (!empty) {
        snprintf(err, errlen, "%s is not empty: restore into a new folder (it never overwrites data)", dir);
        return -1;
    }
    return 0;
}

typedef struct {
    char id[32];
    int64_t created_ms;
} gen_t;

static int cmp_gen(const void *a, const void *b)
{
    return strcmp(((const gen_t *)a)->id, ((const gen_t *)b)->id);
}

static int write_all(int fd, const void *p, size_t n, off_t off)
{
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t k = pwrite(fd, q, n, off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        q += k;
        n -= (size_t)k;
        off += k;
    }
    return 0;
}

static int check_db(const char *path, FILE *out, int quiet, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "the restored database cannot be opened: %s",
                 db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        snprintf(err, errlen, "the restored database cannot be checked: %s", sqlite3_errmsg(db));
        goto out;
    }
    const char *res = (const char *)sqlite3_column_text(st, 0);
    if (res == NULL || strcmp(res, "ok") != 0) {
        snprintf(err, errlen, "the restored database failed integrity_check: %s", res ? res : "?");
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (!quiet)
        fprintf(out, "integrity_check: ok\n");
    if (sqlite3_prepare_v2(db, "SELECT name FROM _collections WHERE type <> 'view' ORDER BY name", -1, &st,
                           NULL) != SQLITE_OK) {
        snprintf(err, errlen, "the restored database has no collections table: %s", sqlite3_errmsg(db));
        goto out;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        char sql[600];
        /* Collection names are [A-Za-z0-9_]: quoting is for safety only. */
        char q[300];
        size_t k = 0;
        for (const char *c = name; *c && k < sizeof(q) - 2; c++)
            if (*c != '"')
                q[k++] = *c;
        q[k] = '\0';
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM \"%s\"", q);
        sqlite3_stmt *cs = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &cs, NULL) != SQLITE_OK || sqlite3_step(cs) != SQLITE_ROW) {
            snprintf(err, errlen, "cannot count the rows of collection %s: %s", name, sqlite3_errmsg(db));
            sqlite3_finalize(cs);
            goto out;
        }
        if (!quiet)
            fprintf(out, "  %-32s %lld rows\n", name, (long long)sqlite3_column_int64(cs, 0));
        sqlite3_finalize(cs);
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

typedef struct {
    int none;
    uint32_t index, frame, salt1, salt2, ck[2];
} pos_t;

int backup_restore(const backup_restore_opts_t *o, char *err, size_t errlen)
{
    FILE *out = o->out ? o->out : stderr;
    int64_t target;
    if (backup_parse_time(o->to, &target) != 0) {
        snprintf(err, errlen,
                 "--to must be \"latest\" or an RFC 3339 time such as 2026-12-01T10:00:00Z, not \"%s\"",
                 o->to);
        return -1;
    }
    backup_key_t key;
    if (backup_key_load(o->key_file, &key, err, errlen) != 0)
        return -1;
    backup_target_t *t = backup_target_dir_open(o->from, 0, err, errlen);
    if (t == NULL)
        return -1;
    int rc = -1, fd = -1, locked = 0;
    uint8_t *seg = NULL;
    backup_list_t segs = {0}, all = {0};
    gen_t *gens = NULL;
    json_t *meta = NULL;
    backup_in_t *in = NULL;
    char tmp[1200] = "", final[1200];
    if (backup_key_check(t, &key, 0, err, errlen) != 0)
        goto out;
    if (t->ops->lock(t, 1, 1) == 0)
        locked = 1;
    if (t->ops->list(t, "generations/", &all, err, errlen) != 0)
        goto out;
    size_t ng = 0;
    gens = calloc(all.n + 1, sizeof(*gens));
    if (gens == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < all.n; i++) {
        const char *p = all.items[i].name + 12, *slash = strchr(p, '/');
        if (slash != NULL && slash - p == 24 && strcmp(slash + 1, "generation.json") == 0) {
            memcpy(gens[ng].id, p, 24);
            char hex[17];
            memcpy(hex, p, 16);
            hex[16] = '\0';
            gens[ng].created_ms = (int64_t)strtoull(hex, NULL, 16);
            ng++;
        }
    }
    if (ng == 0) {
        snprintf(err, errlen, "there is no complete backup in %s", t->ops->describe(t));
        goto out;
    }
    qsort(gens, ng, sizeof(*gens), cmp_gen);
    ssize_t pick = -1;
    for (size_t i = 0; i < ng; i++)
        if (gens[i].created_ms <= target)
            pick = (ssize_t)i;
    if (pick < 0) {
        char first[32];
        util_format_time(gens[0].created_ms, first);
        snprintf(err, errlen, "%s is before the first backup in %s (the earliest point is %s)", o->to,
                 t->ops->describe(t), first);
        goto out;
    }
    gen_t *g = &gens[pick];
    char name[160];
    snprintf(name, sizeof(name), "generations/%s/generation.json", g->id);
    uint8_t *mtext;
    size_t mlen;
    if (backup_get(t, &key, name, 65536, &mtext, &mlen, err, errlen) != 0)
        goto out;
    meta = json_loadb((const char *)mtext, mlen, 0, NULL);
    free(mtext);
    if (!json_is_object(meta)) {
        snprintf(err, errlen, "%s is damaged", name);
        goto out;
    }
    pos_t pos = {.none = (int)json_integer_value(json_object_get(meta, "none")),
                 .index = 0,
                 .frame = (uint32_t)json_integer_value(json_object_get(meta, "frame")),
                 .salt1 = (uint32_t)json_integer_value(json_object_get(meta, "salt1")),
                 .salt2 = (uint32_t)json_integer_value(json_object_get(meta, "salt2")),
                 .ck = {(uint32_t)json_integer_value(json_object_get(meta, "ck0")),
                        (uint32_t)json_integer_value(json_object_get(meta, "ck1"))}};
    uint32_t page_size = (uint32_t)json_integer_value(json_object_get(meta, "page_size"));
    if (dir_empty_or_create(o->dir, err, errlen) != 0)
        goto out;
    char prefix[80];
    snprintf(prefix, sizeof(prefix), "generations/%s/wal/", g->id);
    if (t->ops->list(t, prefix, &segs, err, errlen) != 0)
        goto out;
    progress_t pr = {.out = out, .quiet = o->quiet, .tty = isatty(fileno(out)), .last_pct = -1};
    for (size_t i = 0; i < all.n; i++)
        if (strncmp(all.items[i].name, prefix, strlen(prefix)) == 0 ||
            (strncmp(all.items[i].name + 12, g->id, 24) == 0 && strstr(all.items[i].name, "snapshot.db")))
            pr.total += all.items[i].size;
    if (!o->quiet) {
        char when[32];
        util_format_time(g->created_ms, when);
        fprintf(out, "restore: generation %s (started %s), %zu WAL segments\n", g->id, when, segs.n);
    }
    snprintf(tmp, sizeof(tmp), "%s/data.db.restore", o->dir);
    snprintf(final, sizeof(final), "%s/data.db", o->dir);
    fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    snprintf(name, sizeof(name), "generations/%s/snapshot.db", g->id);
    in = backup_in_open(t, &key, name, err, errlen);
    if (in == NULL)
        goto out;
    seg = malloc(1 << 20);
    if (seg == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    off_t off = 0;
    for (;;) {
        long n = backup_in_read(in, seg, 1 << 20, err, errlen);
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        if (write_all(fd, seg, (size_t)n, off) != 0) {
            snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
            goto out;
        }
        off += n;
        progress(&pr, (uint64_t)n);
    }
    backup_in_close(in);
    in = NULL;
    free(seg);
    seg = NULL;
    int64_t restored_to = g->created_ms;
    uint32_t db_pages = 0;
    int reached = 0;
    uint64_t txns_applied = 0;
    for (size_t i = 0; i < segs.n && !reached; i++) {
        size_t len;
        if (backup_get(t, &key, segs.items[i].name, MAX_SEGMENT, &seg, &len, err, errlen) != 0)
            goto out;
        wal_seg_t s;
        const uint8_t *txns, *frames;
        const char *why;
        if (wal_seg_parse(seg, len, &s, &txns, &frames, &why) != 0) {
            snprintf(err, errlen, "%s is damaged: %s", segs.items[i].name, why);
            goto out;
        }
        int cont;
        if (s.wal_index == pos.index)
            cont = !pos.none && s.first_frame == pos.frame + 1 && s.hdr.salt1 == pos.salt1 &&
                   s.hdr.salt2 == pos.salt2 && s.ck_start[0] == pos.ck[0] && s.ck_start[1] == pos.ck[1];
        else
            cont = s.wal_index == pos.index + 1 && s.first_frame == 1 && s.ck_start[0] == s.hdr.ck[0] &&
                   s.ck_start[1] == s.hdr.ck[1] && (pos.none || s.hdr.salt1 == pos.salt1 + 1);
        if (!cont || s.hdr.page_size != page_size) {
            char when[32];
            util_format_time(restored_to, when);
            snprintf(
                err, errlen,
                "the backup is broken at %s: it does not continue the one before (a segment is missing or "
                "foreign); the last consistent point is %s",
                segs.items[i].name, when);
            goto out;
        }
        size_t fsz = WAL_FRAME_HEADER_SIZE + (size_t)page_size;
        uint32_t applied_to = s.first_frame - 1; /* frames of this segment written so far */
        for (uint32_t k = 0; k < s.ntxn; k++) {
            wal_seg_txn_t tx = wal_seg_txn_at(txns, k);
            if (tx.time_ms > target) {
                reached = 1;
                break;
            }
            for (uint32_t f = applied_to + 1; f <= tx.end_frame; f++) {
                const uint8_t *fr = frames + (size_t)(f - s.first_frame) * fsz;
                uint32_t pgno = wal_get32(fr);
                if (write_all(fd, fr + WAL_FRAME_HEADER_SIZE, page_size, (off_t)(pgno - 1) * page_size) !=
                    0) {
                    snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
                    goto out;
                }
            }
            applied_to = tx.end_frame;
            db_pages = tx.commit_size;
            restored_to = tx.time_ms;
            txns_applied++;
        }
        pos.index = s.wal_index;
        pos.none = 0;
        pos.frame = s.first_frame + s.nframes - 1;
        pos.salt1 = s.hdr.salt1;
        pos.salt2 = s.hdr.salt2;
        pos.ck[0] = s.ck_end[0];
        pos.ck[1] = s.ck_end[1];
        free(seg);
        seg = NULL;
        progress(&pr, segs.items[i].size);
    }
    progress(&pr, pr.total > pr.done ? pr.total - pr.done : 0);
    if (db_pages > 0 && ftruncate(fd, (off_t)db_pages * page_size) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, final) != 0) {
        snprintf(err, errlen, "cannot rename %s: %s", tmp, strerror(errno));
        goto out;
    }
    tmp[0] = '\0';
    if (check_db(final, out, o->quiet, err, errlen) != 0)
        goto out;
    if (!o->quiet) {
        char when[32];
        util_format_time(restored_to, when);
        fprintf(out, "restored %" PRIu64 " transactions after the snapshot; the database is as of %s\n",
                txns_applied, when);
        fprintf(out, "restore: done: %s\n", final);
    }
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (tmp[0] && rc != 0)
        unlink(tmp);
    backup_in_close(in);
    free(seg);
    json_decref(meta);
    free(gens);
    backup_list_free(&segs);
    backup_list_free(&all);
    if (locked)
        t->ops->unlock(t);
    t->ops->close(t);
    return rc;
}

static const char *arg_value(const char *a, const char *flag)
{
    size_t n = strlen(flag);
    return strncmp(a, flag, n) == 0 && a[n] == '=' ? a + n + 1 : NULL;
}

int backup_restore_command(int argc, char **argv)
{
    const char *from = NULL, *to = "latest", *dir = NULL, *key = getenv("BASALT_BACKUP_KEY");
    for (int i = 0; i < argc; i++) {
        const char *v;
        if ((v = arg_value(argv[i], "--from")) != NULL)
            from = v;
        else if ((v = arg_value(argv[i], "--to")) != NULL)
            to = v;
        else if ((v = arg_value(argv[i], "--dir")) != NULL)
            dir = v;
        else if ((v = arg_value(argv[i], "--backup-key")) != NULL)
            key = v;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf(
                "Usage: basalt restore --from=BACKUP_DIR --dir=NEW_DATA_DIR [--to=latest|RFC3339] "
                "[--backup-key=FILE]\n"
                "Rebuilds the database as it was at --to (default latest) into NEW_DATA_DIR/data.db,\n"
                "which must be missing or empty, and checks it. BASALT_BACKUP_KEY may name the key file.\n");
            return 0;
        } else {
            fprintf(stderr, "basalt restore: unknown argument \"%s\" (see --help)\n", argv[i]);
            return 2;
        }
    }
    if (from == NULL || dir == NULL) {
        fprintf(stderr,
                "basalt restore: --from=BACKUP_DIR and --dir=NEW_DATA_DIR are required (see --help)\n");
        return 2;
    }
    backup_restore_opts_t o = {.from = from, .to = to, .dir = dir, .key_file = key ? key : "", .out = stdout};
    char err[1024];
    if (backup_restore(&o, err, sizeof(err)) != 0) {
        fprintf(stderr, "basalt restore: %s\n", err);
        return 1;
    }
    return 0;
}
