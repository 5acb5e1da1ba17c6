/* The WAL reader and the checksum chain (src/backup/wal.c), on a log SQLite wrote;
 * segments round-trip and every kind of damage is refused; object names; the
 * encrypted object format (wrong key, truncation, tampering). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "backup/backup_obj.h"
#include "backup/backup_target.h"
#include "backup/wal.h"

static char tmpdir[256];

/* Writes ntx transactions into a fresh WAL database and returns the log's bytes. */
static uint8_t *make_wal(int ntx, size_t *len)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/w.db", tmpdir);
    unlink(path);
    char wal[310];
    snprintf(wal, sizeof(wal), "%s-wal", path);
    unlink(wal);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
                                  "CREATE TABLE t(x TEXT);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    for (int i = 0; i < ntx; i++)
        assert_int_equal(sqlite3_exec(db, "INSERT INTO t VALUES (hex(randomblob(300)))", NULL, NULL, NULL),
                         SQLITE_OK);
    FILE *f = fopen(wal, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len);
    assert_int_equal(fread(buf, 1, *len, f), *len);
    fclose(f);
    sqlite3_close(db);
    return buf;
}

static void test_header_and_scan(void **state)
{
    (void)state;
    size_t len;
    uint8_t *w = make_wal(5, &len);
    wal_header_t h;
    assert_int_equal(wal_header_parse(w, len, &h), 0);
    assert_true(h.page_size >= 512);
    size_t fsz = WAL_FRAME_HEADER_SIZE + h.page_size;
    size_t nframes = (len - WAL_HEADER_SIZE) / fsz;
    size_t commits[64];
    wal_scan_t sc;
    wal_scan(&h, w + WAL_HEADER_SIZE, len - WAL_HEADER_SIZE, h.ck, &sc, commits, 64);
    /* Six transactions (CREATE TABLE and five inserts), every frame valid. */
    assert_int_equal(sc.commits, 6);
    assert_int_equal(sc.frames, nframes);
    assert_int_equal(sc.bad_at, SIZE_MAX);
    assert_int_equal(commits[sc.commits - 1], nframes - 1);
    /* The chain's end is the last frame's stored checksum. */
    const uint8_t *last = w + WAL_HEADER_SIZE + (nframes - 1) * fsz;
    assert_int_equal(sc.ck[0], wal_get32(last + 16));
    assert_int_equal(sc.ck[1], wal_get32(last + 20));
    /* Scanning in two parts continues the chain. */
    wal_scan_t a, b;
    size_t cut = commits[2] + 1;
    wal_scan(&h, w + WAL_HEADER_SIZE, cut * fsz, h.ck, &a, NULL, 0);
    assert_int_equal(a.frames, cut);
    wal_scan(&h, w + WAL_HEADER_SIZE + cut * fsz, (nframes - cut) * fsz, a.ck, &b, NULL, 0);
    assert_int_equal(a.frames + b.frames, nframes);
    assert_memory_equal(b.ck, sc.ck, sizeof(sc.ck));
    /* A wrong starting checksum breaks the first frame. */
    uint32_t bad_ck[2] = {h.ck[0] + 1, h.ck[1]};
    wal_scan(&h, w + WAL_HEADER_SIZE, len - WAL_HEADER_SIZE, bad_ck, &sc, NULL, 0);
    assert_int_equal(sc.frames, 0);
    assert_int_equal(sc.bad_at, 0);
    free(w);
}

static void test_damage_stops_at_last_whole_transaction(void **state)
{
    (void)state;
    size_t len;
    uint8_t *w = make_wal(5, &len);
    wal_header_t h;
    assert_int_equal(wal_header_parse(w, len, &h), 0);
    size_t fsz = WAL_FRAME_HEADER_SIZE + h.page_size;
    size_t commits[64];
    wal_scan_t sc;
    wal_scan(&h, w + WAL_HEADER_SIZE, len - WAL_HEADER_SIZE, h.ck, &sc, commits, 64);
    size_t victim = commits[3]; /* the commit frame of the fourth transaction */
    uint8_t *page = w + WAL_HEADER_SIZE + victim * fsz + WAL_FRAME_HEADER_SIZE + 100;
    *page ^= 1;
    wal_scan(&h, w + WAL_HEADER_SIZE, len - WAL_HEADER_SIZE, h.ck, &sc, NULL, 0);
    assert_int_equal(sc.bad_at, victim);
    assert_int_equal(sc.frames, commits[2] + 1);
    assert_int_equal(sc.commits, 3);
    *page ^= 1;
    /* A frame with another salt (left from an older log) ends the log there. */
    uint8_t *salt = w + WAL_HEADER_SIZE + victim * fsz + 8;
    *salt ^= 0x80;
    wal_scan(&h, w + WAL_HEADER_SIZE, len - WAL_HEADER_SIZE, h.ck, &sc, NULL, 0);
    assert_int_equal(sc.bad_at, victim);
    *salt ^= 0x80;
    /* A partial frame at the end is ignored. */
    wal_scan(&h, w + WAL_HEADER_SIZE, len - WAL_HEADER_SIZE - 7, h.ck, &sc, NULL, 0);
    assert_int_equal(sc.commits, 5);
    /* The header's own checksum, magic and page size are checked. */
    w[20] ^= 1;
    assert_int_equal(wal_header_parse(w, len, &h), -1);
    w[20] ^= 1;
    w[0] = 0;
    assert_int_equal(wal_header_parse(w, len, &h), -1);
    assert_int_equal(wal_header_parse(w, 31, &h), -1);
    free(w);
}

static void test_checksum_big_endian(void **state)
{
    (void)state;
    /* Two words, both orders, by hand: s0 += x0 + s1; s1 += x1 + s0. */
    uint8_t d[8] = {0, 0, 0, 1, 0, 0, 0, 2};
    uint32_t ck[2] = {0, 0};
    wal_checksum(1, d, 8, ck);
    assert_int_equal(ck[0], 1);
    assert_int_equal(ck[1], 3);
    uint32_t le[2] = {0, 0};
    wal_checksum(0, d, 8, le);
    assert_int_equal(le[0], 0x01000000u);
    assert_int_equal(le[1], 0x03000000u);
}

/* Builds a segment of all the frames of a fresh log. */
static uint8_t *make_segment(size_t *seglen, uint32_t *ntxn_out)
{
    size_t len;
    uint8_t *w = make_wal(3, &len);
    wal_header_t h;
    assert_int_equal(wal_header_parse(w, len, &h), 0);
    size_t fsz = WAL_FRAME_HEADER_SIZE + h.page_size;
    size_t commits[64];
    wal_scan_t sc;
    wal_scan(&h, w + WAL_HEADER_SIZE, len - WAL_HEADER_SIZE, h.ck, &sc, commits, 64);
    wal_seg_txn_t txns[64];
    for (size_t i = 0; i < sc.commits; i++) {
        txns[i].end_frame = (uint32_t)commits[i] + 1;
        txns[i].commit_size = wal_frame_at(&h, w + WAL_HEADER_SIZE, commits[i]).commit_size;
        txns[i].time_ms = 1700000000000 + (int64_t)i;
    }
    wal_seg_t seg = {.wal_index = 0,
                     .first_frame = 1,
                     .nframes = (uint32_t)sc.frames,
                     .ntxn = (uint32_t)sc.commits,
                     .ck_start = {h.ck[0], h.ck[1]},
                     .ck_end = {sc.ck[0], sc.ck[1]}};
    memcpy(seg.wal_header, w, WAL_HEADER_SIZE);
    *seglen = wal_seg_size(h.page_size, seg.nframes, seg.ntxn);
    uint8_t *out = malloc(*seglen);
    wal_seg_write_header(out, &seg, txns);
    memcpy(out + WAL_SEG_HEADER_SIZE + seg.ntxn * WAL_SEG_TXN_SIZE, w + WAL_HEADER_SIZE, sc.frames * fsz);
    *ntxn_out = seg.ntxn;
    free(w);
    return out;
}

static void test_segment_round_trip_and_damage(void **state)
{
    (void)state;
    size_t n;
    uint32_t ntxn;
    uint8_t *s = make_segment(&n, &ntxn);
    wal_seg_t seg;
    const uint8_t *txns, *frames;
    const char *why = NULL;
    assert_int_equal(wal_seg_parse(s, n, &seg, &txns, &frames, &why), 0);
    assert_int_equal(seg.ntxn, ntxn);
    assert_int_equal(wal_seg_txn_at(txns, 1).time_ms, 1700000000001);
    /* Truncated, extended, a flipped page byte, a reordered table, a wrong end checksum. */
    assert_int_equal(wal_seg_parse(s, n - 1, &seg, &txns, &frames, &why), -1);
    assert_non_null(strstr(why, "size"));
    uint8_t *big = calloc(1, n + 8);
    memcpy(big, s, n);
    assert_int_equal(wal_seg_parse(big, n + 8, &seg, &txns, &frames, &why), -1);
    free(big);
    s[n - 5] ^= 1;
    assert_int_equal(wal_seg_parse(s, n, &seg, &txns, &frames, &why), -1);
    assert_non_null(strstr(why, "checksum"));
    s[n - 5] ^= 1;
    uint8_t *t0 = s + WAL_SEG_HEADER_SIZE;
    uint8_t saved[WAL_SEG_TXN_SIZE];
    memcpy(saved, t0, WAL_SEG_TXN_SIZE);
    memcpy(t0, t0 + WAL_SEG_TXN_SIZE, WAL_SEG_TXN_SIZE);
    assert_int_equal(wal_seg_parse(s, n, &seg, &txns, &frames, &why), -1);
    memcpy(t0, saved, WAL_SEG_TXN_SIZE);
    s[64] ^= 1;
    assert_int_equal(wal_seg_parse(s, n, &seg, &txns, &frames, &why), -1);
    s[64] ^= 1;
    s[0] = 'X';
    assert_int_equal(wal_seg_parse(s, n, &seg, &txns, &frames, &why), -1);
    s[0] = 'B';
    assert_int_equal(wal_seg_parse(s, n, &seg, &txns, &frames, &why), 0);
    free(s);
}

static void test_object_names(void **state)
{
    (void)state;
    assert_true(backup_target_name_ok("generations/0001/wal/00000000-0000000001.seg"));
    assert_true(backup_target_name_ok("key-check"));
    assert_false(backup_target_name_ok("../etc/passwd"));
    assert_false(backup_target_name_ok("/abs"));
    assert_false(backup_target_name_ok("a//b"));
    assert_false(backup_target_name_ok("a/./b"));
    assert_false(backup_target_name_ok(".lock"));
    assert_false(backup_target_name_ok("a/b c"));
    assert_false(backup_target_name_ok(""));
}

static void write_key(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_encrypted_objects(void **state)
{
    (void)state;
    char dir[300], kp[300], kp2[300], err[512];
    snprintf(dir, sizeof(dir), "%s/target", tmpdir);
    snprintf(kp, sizeof(kp), "%s/key1", tmpdir);
    snprintf(kp2, sizeof(kp2), "%s/key2", tmpdir);
    write_key(kp, "0123456789abcdef0123456789abcdef-one");
    write_key(kp2, "0123456789abcdef0123456789abcdef-two");
    backup_key_t k1, k2, none = {0};
    assert_int_equal(backup_key_load(kp, &k1, err, sizeof(err)), 0);
    assert_int_equal(backup_key_load(kp2, &k2, err, sizeof(err)), 0);
    write_key(kp2 + 0, "short");
    backup_key_t ks;
    assert_int_equal(backup_key_load(kp2, &ks, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "too short"));
    backup_target_t *t = backup_target_dir_open(dir, 1, err, sizeof(err));
    assert_non_null(t);
    /* 200 KB: several chunks. */
    size_t n = 200000;
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 7);
    assert_int_equal(backup_put(t, &k1, "obj", data, n, err, sizeof(err)), 0);
    uint8_t *back;
    size_t bn;
    assert_int_equal(backup_get(t, &k1, "obj", 1 << 20, &back, &bn, err, sizeof(err)), 0);
    assert_int_equal(bn, n);
    assert_memory_equal(back, data, n);
    free(back);
    assert_int_equal(backup_get(t, &k2, "obj", 1 << 20, &back, &bn, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "wrong backup key"));
    assert_int_equal(backup_get(t, &none, "obj", 1 << 20, &back, &bn, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "encrypted"));
    /* The key check object tells a wrong key apart. */
    assert_int_equal(backup_key_check(t, &k1, 1, err, sizeof(err)), 0);
    assert_int_equal(backup_key_check(t, &k1, 0, err, sizeof(err)), 0);
    assert_int_equal(backup_key_check(t, &k2, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "wrong backup key"));
    /* Truncation and a flipped byte. */
    char p[400];
    snprintf(p, sizeof(p), "%s/obj", dir);
    FILE *f = fopen(p, "r+b");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    assert_int_equal(ftruncate(fileno(f), size - 40), 0);
    fclose(f);
    assert_int_equal(backup_get(t, &k1, "obj", 1 << 20, &back, &bn, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "truncated"));
    assert_int_equal(backup_put(t, &k1, "obj", data, n, err, sizeof(err)), 0);
    f = fopen(p, "r+b");
    fseek(f, 70000, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 70000, SEEK_SET);
    fputc(c ^ 1, f);
    fclose(f);
    assert_int_equal(backup_get(t, &k1, "obj", 1 << 20, &back, &bn, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "altered"));
    /* An object moved under another name does not decrypt (the name is authenticated). */
    assert_int_equal(backup_put(t, &k1, "obj", data, n, err, sizeof(err)), 0);
    char p2[400];
    snprintf(p2, sizeof(p2), "%s/other", dir);
    assert_int_equal(rename(p, p2), 0);
    assert_int_equal(backup_get(t, &k1, "other", 1 << 20, &back, &bn, err, sizeof(err)), -1);
    /* Plain objects with a key set are refused. */
    assert_int_equal(backup_put(t, &none, "plain", data, 100, err, sizeof(err)), 0);
    assert_int_equal(backup_get(t, &k1, "plain", 1 << 20, &back, &bn, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not encrypted"));
    backup_list_t l;
    assert_int_equal(t->ops->list(t, "", &l, err, sizeof(err)), 0);
    assert_int_equal(l.n, 3); /* key-check, other, plain: nothing temporary */
    backup_list_free(&l);
    free(data);
    t->ops->close(t);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/basalt-unit-backup-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_and_scan),
        cmocka_unit_test(test_damage_stops_at_last_whole_transaction),
        cmocka_unit_test(test_checksum_big_endian),
        cmocka_unit_test(test_segment_round_trip_and_damage),
        cmocka_unit_test(test_object_names),
        cmocka_unit_test(test_encrypted_objects),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    return rc;
}
