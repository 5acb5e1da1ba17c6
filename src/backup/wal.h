/*
 * wal — reading SQLite's write-ahead log and Basalt's shipped WAL segments.
 *
 * Pure code: no I/O, no globals, so it is unit-tested and fuzzed (tests/unit/
 * test_backup_wal.c, tests/fuzz/fuzz_walseg.c).
 *
 * A WAL file is a 32-byte header (magic, format version, page size, checkpoint
 * sequence, two salts, a checksum of the first 24 bytes) followed by frames: a
 * 24-byte frame header (page number, database size in pages for the frame that
 * commits a transaction and 0 for the others, the header's two salts, and a running
 * checksum) and a page image. The running checksum of frame i covers the first 8
 * bytes of its header and its page, starting from frame i-1's checksum (the header's
 * for frame 1). A frame counts only when its salts match the header and its checksum
 * continues the chain: that is how SQLite's own recovery finds the end of the log,
 * and how the shipper proves that what it copies follows what it copied before.
 *
 * A segment (what the shipper writes to the target, one object per round) is Basalt's
 * own format: a header naming its place in the log (the WAL header it belongs to, the
 * first frame, the running checksum before it and after it), a table of its
 * transactions (the frame that commits each one and the time it committed), then
 * the frames exactly as they were in the WAL. Segments hold whole transactions only.
 */
#ifndef BASALT_BACKUP_WAL_H
#define BASALT_BACKUP_WAL_H

#include <stddef.h>
#include <stdint.h>

#define WAL_HEADER_SIZE 32
#define WAL_FRAME_HEADER_SIZE 24
#define WAL_SEG_MAGIC "BSWALSG1"
#define WAL_SEG_HEADER_SIZE 88
#define WAL_SEG_TXN_SIZE 16
/* Largest page size SQLite allows. */
#define WAL_MAX_PAGE_SIZE 65536

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint32_t page_size;
    uint32_t ckpt_seq;
    uint32_t salt1, salt2;
    uint32_t ck[2]; /* checksum of the first 24 bytes: the chain's start */
    int big_endian; /* checksums read words big-endian (magic 0x377f0683) */
} wal_header_t;

/* Parses a WAL header: 0, or -1 when it is not one (magic, version, page size or its
 * own checksum wrong). */
int wal_header_parse(const uint8_t *p, size_t n, wal_header_t *h);

/* Continues the running checksum ck over n bytes of data (n a multiple of 8). */
void wal_checksum(int big_endian, const uint8_t *data, size_t n, uint32_t ck[2]);

typedef struct {
    uint32_t pgno;
    uint32_t commit_size; /* database size in pages after the commit; 0: not a commit frame */
} wal_frame_t;

/* What wal_scan found. */
typedef struct {
    size_t frames;  /* whole frames up to and including the last commit frame */
    uint32_t ck[2]; /* the running checksum after that frame */
    size_t commits; /* commit frames among them */
    size_t bad_at;  /* the first frame (0-based, in buf) that broke the chain, or SIZE_MAX */
} wal_scan_t;

/* Scans buf (len bytes of frames, the first being frame first_frame of the log whose
 * header is h; ck is the running checksum before it) and reports the longest prefix
 * that ends at a commit frame with every frame's salts and checksums valid. If
 * commit_frames is not NULL, the index (0-based in buf) of each commit frame is
 * stored there, at most max_commits of them (commits beyond are still counted). */
void wal_scan(const wal_header_t *h, const uint8_t *buf, size_t len, const uint32_t ck[2], wal_scan_t *out,
              size_t *commit_frames, size_t max_commits);

/* Reads frame i of buf (0-based; the caller checked that it is whole). */
wal_frame_t wal_frame_at(const wal_header_t *h, const uint8_t *buf, size_t i);

/* A segment's header. */
typedef struct {
    uint8_t wal_header[WAL_HEADER_SIZE]; /* the header of the log the frames come from */
    wal_header_t hdr;                    /* parsed from wal_header */
    uint32_t wal_index;                  /* which log of the generation (each restart of the WAL: +1) */
    uint32_t first_frame;                /* 1-based frame number of the first frame in that log */
    uint32_t nframes, ntxn;
    uint32_t ck_start[2], ck_end[2];
} wal_seg_t;

typedef struct {
    uint32_t end_frame; /* 1-based, in the log: the frame that commits the transaction */
    uint32_t commit_size;
    int64_t time_ms; /* when it committed (Unix time, ms) */
} wal_seg_txn_t;

/* Size of a segment with these counts. */
size_t wal_seg_size(uint32_t page_size, uint32_t nframes, uint32_t ntxn);
/* Writes the header and transaction table into out (wal_seg_size(..) - frames bytes
 * available); the frames follow at WAL_SEG_HEADER_SIZE + ntxn * WAL_SEG_TXN_SIZE. */
void wal_seg_write_header(uint8_t *out, const wal_seg_t *seg, const wal_seg_txn_t *txns);

/* Parses and fully checks a segment: header, transaction table (increasing, inside
 * the segment, the last one ending it), and every frame's salts and checksums from
 * ck_start to ck_end. On success fills seg, points *txns (valid while buf is) at the
 * raw table (read entries with wal_seg_txn_at) and *frames at the first frame, and
 * returns 0; else -1 with a reason in why (a static string). */
int wal_seg_parse(const uint8_t *buf, size_t len, wal_seg_t *seg, const uint8_t **txns,
                  const uint8_t **frames, const char **why);
wal_seg_txn_t wal_seg_txn_at(const uint8_t *txns, uint32_t i);

uint32_t wal_get32(const uint8_t *p);
void wal_put32(uint8_t *p, uint32_t v);

#endif
