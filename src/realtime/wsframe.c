#include "realtime/wsframe.h"

#include <openssl/evp.h>
#include <string.h>

int ws_parse_header(const uint8_t *p, size_t n, ws_frame_t *f, int *close_code, const char **why)
{
    if (n < 2)
        return 0;
    f->fin = (p[0] & 0x80) != 0;
    f->opcode = p[0] & 0x0F;
    f->masked = (p[1] & 0x80) != 0;
    uint64_t len = p[1] & 0x7F;
    size_t h = 2;
    if (p[0] & 0x70) {
        *close_code = 1002;
        *why = "reserved bits set (no extension was negotiated)";
        return -1;
    }
    switch (f->opcode) {
    case 0x0:
    case 0x1:
    case 0x2:
        break;
    case 0x8:
    case 0x9:
    case 0xA:
        if (!f->fin || len > 125) {
            *close_code = 1002;
            *why = "control frames must be final and at most 125 bytes";
            return -1;
        }
        break;
    default:
        *close_code = 1002;
        *why = "unknown opcode";
        return -1;
    }
    if (!f->masked) {
        *close_code = 1002;
        *why = "client frames must be masked";
        return -1;
    }
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        h = 4;
        if (len < 126) {
            *close_code = 1002;
            *why = "length not in its shortest form";
            return -1;
        }
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        h = 10;
        if (len >> 63 || len < 65536) {
            *close_code = 1002;
            *why = "bad 64-bit length";
            return -1;
        }
    }
    if (n < h + 4)
        return 0;
    memcpy(f->mask, p + h, 4);
    f->len = len;
    f->header_len = h + 4;
    return 1;
}

void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t at)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= mask[(at + i) & 3];
}

size_t ws_write_header(uint8_t *out, int opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

int ws_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + k >= n)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

void ws_accept_key(const char *key, size_t key_len, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[EVP_MAX_MD_SIZE], src[128 + sizeof(guid)];
    unsigned int dlen = 0;
    if (key_len > 128)
        key_len = 128;
    memcpy(src, key, key_len);
    memcpy(src + key_len, guid, sizeof(guid) - 1);
    EVP_Digest(src, key_len + sizeof(guid) - 1, digest, &dlen, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, digest, 20);
    out[28] = '\0';
}

int ws_close_code_valid(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}
