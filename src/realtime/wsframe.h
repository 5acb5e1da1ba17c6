/*
 * wsframe — the WebSocket wire format (RFC 6455) as pure functions: frame headers
 * in and out, unmasking, UTF-8 validation, the handshake's accept key. No I/O: the
 * realtime transport feeds bytes in and writes what these produce.
 */
#ifndef BASALT_REALTIME_WSFRAME_H
#define BASALT_REALTIME_WSFRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA
};

/* Close codes Basalt sends. */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_BAD_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_RESTART = 1012
};

/* Whether a close code may travel in a close frame (RFC 6455 7.4, the IANA
 * registry): 1000-1003, 1007-1014 and the application range 3000-4999. 1005, 1006
 * and 1015 only stand for "no code", "no close frame" and "TLS failure" locally and
 * must never be sent; the rest of 1000-2999 is reserved. */
int ws_close_code_valid(int code);

typedef struct {
    int fin;
    int opcode;
    int masked;
    uint8_t mask[4];
    uint64_t len;      /* payload length */
    size_t header_len; /* bytes before the payload */
} ws_frame_t;

/* Parses the header of a frame a client sent (it must be masked, with no reserved
 * bits; control frames short and final). Returns 1 with f filled, 0 if more bytes
 * are needed, or -1 with *close_code and *why set. */
int ws_parse_header(const uint8_t *p, size_t n, ws_frame_t *f, int *close_code, const char **why);

/* XORs n bytes with the mask, the first byte being at offset `at` of the payload. */
void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t at);

/* Writes an unmasked (server) frame header for a final frame; returns its length
 * (2, 4 or 10). out must hold 10 bytes. */
size_t ws_write_header(uint8_t *out, int opcode, uint64_t len);

/* 1 if p[0..n) is valid UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
int ws_utf8_valid(const uint8_t *p, size_t n);

/* The Sec-WebSocket-Accept value for a client's key: 28 characters and a NUL. */
void ws_accept_key(const char *key, size_t key_len, char out[29]);

#endif
