/*
 * The WebSocket frame reader, fed a client's byte stream. Properties:
 *   1. it never reads past what it was given (ASan) and never reports a header
 *      longer than the input;
 *   2. a header it accepts describes the frame exactly: writing a header for the
 *      same opcode and length (and setting the mask) parses back to the same;
 *   3. unmasking twice is the identity; the UTF-8 check never reads out of bounds.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "realtime/wsframe.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        ws_frame_t f;
        int code = 0;
        const char *why = NULL;
        int rc = ws_parse_header(data + off, size - off, &f, &code, &why);
        if (rc <= 0) {
            assert(rc == 0 || (code >= 1000 && why != NULL));
            break;
        }
        assert(f.header_len <= size - off);
        if (f.fin) {
            uint8_t h[14];
            size_t hl = ws_write_header(h, f.opcode, f.len);
            h[1] |= 0x80;
            memcpy(h + hl, f.mask, 4);
            ws_frame_t g;
            assert(ws_parse_header(h, hl + 4, &g, &code, &why) == 1);
            assert(g.len == f.len && g.opcode == f.opcode && g.header_len == hl + 4);
        }
        size_t avail = size - off - f.header_len;
        size_t n = f.len < avail ? (size_t)f.len : avail;
        unsigned char *p = malloc(n ? n : 1);
        memcpy(p, data + off + f.header_len, n);
        ws_unmask(p, n, f.mask, 0);
        (void)ws_utf8_valid(p, n);
        ws_unmask(p, n, f.mask, 0);
        assert(memcmp(p, data + off + f.header_len, n) == 0);
        free(p);
        if (n < f.len)
            break;
        off += f.header_len + n;
    }
    return 0;
}
