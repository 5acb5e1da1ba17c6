/*
 * The WAL segment parser (what restore reads from a backup target, which an attacker
 * with access to the backup folder controls) and the WAL frame scanner. Properties:
 *   1. neither reads past its input (ASan), whatever the counts claim;
 *   2. a segment that parses is consistent: its transactions are in order, inside the
 *      segment, each ends on a commit frame, and rescanning its frames from ck_start
 *      reaches ck_end with exactly ntxn commits;
 *   3. the scanner's answer never exceeds its input, and ends on a commit frame.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "backup/wal.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    wal_seg_t seg;
    const uint8_t *txns, *frames;
    const char *why = NULL;
    if (wal_seg_parse(data, size, &seg, &txns, &frames, &why) == 0) {
        size_t fsz = WAL_FRAME_HEADER_SIZE + (size_t)seg.hdr.page_size;
        assert(wal_seg_size(seg.hdr.page_size, seg.nframes, seg.ntxn) == size);
        uint32_t prev = seg.first_frame - 1;
        for (uint32_t i = 0; i < seg.ntxn; i++) {
            wal_seg_txn_t t = wal_seg_txn_at(txns, i);
            assert(t.end_frame > prev && t.end_frame < seg.first_frame + seg.nframes);
            assert(wal_frame_at(&seg.hdr, frames, t.end_frame - seg.first_frame).commit_size != 0);
            prev = t.end_frame;
        }
        wal_scan_t sc;
        wal_scan(&seg.hdr, frames, (size_t)seg.nframes * fsz, seg.ck_start, &sc, NULL, 0);
        assert(sc.frames == seg.nframes && sc.commits == seg.ntxn);
        assert(sc.ck[0] == seg.ck_end[0] && sc.ck[1] == seg.ck_end[1]);
    } else
        assert(why != NULL);
    /* The same bytes as a WAL file: a header, then frames. */
    wal_header_t h;
    if (wal_header_parse(data, size, &h) == 0) {
        size_t commits[16];
        wal_scan_t sc;
        wal_scan(&h, data + WAL_HEADER_SIZE, size - WAL_HEADER_SIZE, h.ck, &sc, commits, 16);
        size_t fsz = WAL_FRAME_HEADER_SIZE + (size_t)h.page_size;
        assert(sc.frames * fsz <= size - WAL_HEADER_SIZE);
        if (sc.frames > 0)
            assert(wal_frame_at(&h, data + WAL_HEADER_SIZE, sc.frames - 1).commit_size != 0);
        for (size_t i = 0; i < sc.commits && i < 16; i++)
            assert(commits[i] < sc.frames);
    }
    return 0;
}
