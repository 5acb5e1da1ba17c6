#include "backup/wal.h"

#include <string.h>

uint32_t wal_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void wal_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)wal_get32(p) << 32 | wal_get32(p + 4);
}

static void put64(uint8_t *p, uint64_t v)
{
    wal_put32(p, (uint32_t)(v >> 32));
    wal_put32(p + 4, (uint32_t)v);
}

void wal_checksum(int big_endian, const uint8_t *data, size_t n, uint32_t ck[2])
{
    uint32_t s0 = ck[0], s1 = ck[1];
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint32_t x0, x1;
        if (big_endian) {
            x0 = wal_get32(data + i);
            x1 = wal_get32(data + i + 4);
        } else {
            x0 = (uint32_t)data[i] | (uint32_t)data[i + 1] << 8 | (uint32_t)data[i + 2] << 16 |
                 (uint32_t)data[i + 3] << 24;
            x1 = (uint32_t)data[i + 4] | (uint32_t)data[i + 5] << 8 | (uint32_t)data[i + 6] << 16 |
                 (uint32_t)data[i + 7] << 24;
        }
        s0 += x0 + s1;
        s1 += x1 + s0;
    }
    ck[0] = s0;
    ck[1] = s1;
}

int wal_header_parse(const uint8_t *p, size_t n, wal_header_t *h)
{
    if (n < WAL_HEADER_SIZE)
        return -1;
    memset(h, 0, sizeof(*h));
    h->magic = wal_get32(p);
    if (h->magic != 0x377f0682 && h->magic != 0x377f0683)
        return -1;
    h->big_endian = h->magic & 1;
    h->version = wal_get32(p + 4);
    h->page_size = wal_get32(p + 8);
    h->ckpt_seq = wal_get32(p + 12);
    h->salt1 = wal_get32(p + 16);
    h->salt2 = wal_get32(p + 20);
    h->ck[0] = wal_get32(p + 24);
    h->ck[1] = wal_get32(p + 28);
    /* SQLite stores 65536 as 1 in the database header but as itself here. */
    if (h->version != 3007000 || h->page_size < 512 || h->page_size > WAL_MAX_PAGE_SIZE ||
        (h->page_size & (h->page_size - 1)) != 0)
        return -1;
    uint32_t ck[2] = {0, 0};
    wal_checksum(h->big_endian, p, 24, ck);
    if (ck[0] != h->ck[0] || ck[1] != h->ck[1])
        return -1;
    return 0;
}

wal_frame_t wal_frame_at(const wal_header_t *h, const uint8_t *buf, size_t i)
{
    const uint8_t *f = buf + i * (WAL_FRAME_HEADER_SIZE + (size_t)h->page_size);
    wal_frame_t fr = {.pgno = wal_get32(f), .commit_size = wal_get32(f + 4)};
    return fr;
}

void wal_scan(const wal_header_t *h, const uint8_t *buf, size_t len, const uint32_t ck_in[2], wal_scan_t *out,
              size_t *commit_frames, size_t max_commits)
{
    size_t fsz = WAL_FRAME_HEADER_SIZE + (size_t)h->page_size;
    uint32_t ck[2] = {ck_in[0], ck_in[1]};
    out->frames = 0;
    out->ck[0] = ck[0];
    out->ck[1] = ck[1];
    out->commits = 0;
    out->bad_at = SIZE_MAX;
    size_t n = len / fsz;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *f = buf + i * fsz;
        if (wal_get32(f) == 0 || wal_get32(f + 8) != h->salt1 || wal_get32(f + 12) != h->salt2) {
            out->bad_at = i;
            return;
        }
        wal_checksum(h->big_endian, f, 8, ck);
        wal_checksum(h->big_endian, f + WAL_FRAME_HEADER_SIZE, h->page_size, ck);
        if (ck[0] != wal_get32(f + 16) || ck[1] != wal_get32(f + 20)) {
            out->bad_at = i;
            return;
        }
        if (wal_get32(f + 4) != 0) {
            if (commit_frames != NULL && out->commits < max_commits)
                commit_frames[out->commits] = i;
            out->commits++;
            out->frames = i + 1;
            out->ck[0] = ck[0];
            out->ck[1] = ck[1];
        }
    }
}

size_t wal_seg_size(uint32_t page_size, uint32_t nframes, uint32_t ntxn)
{
    return WAL_SEG_HEADER_SIZE + (size_t)ntxn * WAL_SEG_TXN_SIZE +
           (size_t)nframes * (WAL_FRAME_HEADER_SIZE + (size_t)page_size);
}

void wal_seg_write_header(uint8_t *out, const wal_seg_t *seg, const wal_seg_txn_t *txns)
{
    memset(out, 0, WAL_SEG_HEADER_SIZE);
    memcpy(out, WAL_SEG_MAGIC, 8);
    memcpy(out + 8, seg->wal_header, WAL_HEADER_SIZE);
    wal_put32(out + 40, seg->wal_index);
    wal_put32(out + 44, seg->first_frame);
    wal_put32(out + 48, seg->nframes);
    wal_put32(out + 52, seg->ntxn);
    wal_put32(out + 56, seg->ck_start[0]);
    wal_put32(out + 60, seg->ck_start[1]);
    wal_put32(out + 64, seg->ck_end[0]);
    wal_put32(out + 68, seg->ck_end[1]);
    uint8_t *t = out + WAL_SEG_HEADER_SIZE;
    for (uint32_t i = 0; i < seg->ntxn; i++, t += WAL_SEG_TXN_SIZE) {
        wal_put32(t, txns[i].end_frame);
        wal_put32(t + 4, txns[i].commit_size);
        put64(t + 8, (uint64_t)txns[i].time_ms);
    }
}

wal_seg_txn_t wal_seg_txn_at(const uint8_t *txns, uint32_t i)
{
    const uint8_t *t = txns + (size_t)i * WAL_SEG_TXN_SIZE;
    wal_seg_txn_t x = {
        .end_frame = wal_get32(t), .commit_size = wal_get32(t + 4), .time_ms = (int64_t)get64(t + 8)};
    return x;
}

#define FAIL(msg)                                                                                            \
    do {                                                                                                     \
        *why = msg;                                                                                          \
        return -1;                                                                                           \
    } while (0)

int wal_seg_parse(const uint8_t *buf, size_t len, wal_seg_t *seg, const uint8_t **txns,
                  const uint8_t **frames, const char **why)
{
    if (len < WAL_SEG_HEADER_SIZE || memcmp(buf, WAL_SEG_MAGIC, 8) != 0)
        FAIL("not a WAL segment");
    memset(seg, 0, sizeof(*seg));
    memcpy(seg->wal_header, buf + 8, WAL_HEADER_SIZE);
    if (wal_header_parse(seg->wal_header, WAL_HEADER_SIZE, &seg->hdr) != 0)
        FAIL("the segment's WAL header is damaged");
    seg->wal_index = wal_get32(buf + 40);
    seg->first_frame = wal_get32(buf + 44);
    seg->nframes = wal_get32(buf + 48);
    seg->ntxn = wal_get32(buf + 52);
    seg->ck_start[0] = wal_get32(buf + 56);
    seg->ck_start[1] = wal_get32(buf + 60);
    seg->ck_end[0] = wal_get32(buf + 64);
    seg->ck_end[1] = wal_get32(buf + 68);
    if (seg->first_frame == 0 || seg->nframes == 0 || seg->ntxn == 0 || seg->ntxn > seg->nframes ||
        seg->first_frame > UINT32_MAX - seg->nframes)
        FAIL("the segment's counts are inconsistent");
    /* Sizes in 64 bits: nframes * 65560 cannot overflow. */
    uint64_t want = WAL_SEG_HEADER_SIZE + (uint64_t)seg->ntxn * WAL_SEG_TXN_SIZE +
                    (uint64_t)seg->nframes * (WAL_FRAME_HEADER_SIZE + (uint64_t)seg->hdr.page_size);
    if (want != len)
        FAIL("the segment's size does not match its header (truncated?)");
    *txns = buf + WAL_SEG_HEADER_SIZE;
    *frames = *txns + (size_t)seg->ntxn * WAL_SEG_TXN_SIZE;
    uint32_t last = seg->first_frame + seg->nframes - 1, prev = seg->first_frame - 1;
    for (uint32_t i = 0; i < seg->ntxn; i++) {
        wal_seg_txn_t t = wal_seg_txn_at(*txns, i);
        if (t.end_frame <= prev || t.end_frame > last)
            FAIL("the segment's transaction table is out of order");
        wal_frame_t fr = wal_frame_at(&seg->hdr, *frames, t.end_frame - seg->first_frame);
        if (fr.commit_size == 0 || fr.commit_size != t.commit_size)
            FAIL("the segment's transaction table does not match its commit frames");
        prev = t.end_frame;
    }
    if (prev != last)
        FAIL("the segment does not end with a whole transaction");
    wal_scan_t sc;
    size_t fsz = WAL_FRAME_HEADER_SIZE + (size_t)seg->hdr.page_size;
    wal_scan(&seg->hdr, *frames, (size_t)seg->nframes * fsz, seg->ck_start, &sc, NULL, 0);
    if (sc.frames != seg->nframes || sc.commits != seg->ntxn)
        FAIL("a frame's checksum or salt is wrong (the segment was altered)");
    if (sc.ck[0] != seg->ck_end[0] || sc.ck[1] != seg->ck_end[1])
        FAIL("the segment's final checksum does not match its frames");
    return 0;
}
