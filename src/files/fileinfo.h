/*
 * fileinfo — what Basalt decides about an uploaded file from its name and bytes:
 * the content type sniffed from the first bytes (never the client's claim), the
 * unique stored name, whether a name is one Basalt could have made (the guard
 * against path tricks on every download), and the thumb size specs (`100x100`,
 * `100x100t`, `0x50`...). Pure: no I/O, no globals; any thread; fuzzed.
 *
 * Sniffing uses a small signature table rather than libmagic: the types that decide
 * anything here (images for thumbnails, the field's mimeTypes list) all have fixed
 * signatures; a table is a few hundred bytes of code that the fuzzer covers whole,
 * gives the same answer on every machine, and needs no database file loaded per
 * thread (see docs/adr/0008-files-and-storage.md).
 */
#ifndef BASALT_FILES_FILEINFO_H
#define BASALT_FILES_FILEINFO_H

#include <stddef.h>
#include <stdint.h>

/* PocketBase's default maxSize of a file field (5 MiB), and Basalt's cap on maxSelect. */
#define FILES_DEFAULT_MAX_SIZE ((int64_t)5 << 20)
#define FILES_MAX_SELECT 100
/* Longest stored name: PocketBase's cut (100 chars of base, 20 of extension) plus
 * the random part. */
#define FILES_MAX_NAME 150
/* Bytes the sniffer looks at. */
#define FILES_SNIFF_BYTES 512

/* The content type of the data (n bytes, only the first FILES_SNIFF_BYTES read):
 * a static string such as "image/png", "text/plain; charset=utf-8" or
 * "application/octet-stream". */
const char *files_sniff(const void *data, size_t n);
/* Whether the sniffed type is an image Basalt makes thumbnails of (PNG, JPEG, GIF,
 * WebP), as PocketBase does. */
int files_is_thumbable(const char *mime);
/* Whether mime (a sniffed type) is in the list: compared without parameters, case
 * insensitive, with image/jpg as image/jpeg. list holds n strings. */
int files_mime_allowed(const char *mime, const char *const *list, size_t n);

/* The stored name for an upload (PocketBase's way): the original name's base in
 * snake_case (at most 100 chars, padded with 10 random chars when shorter than 3),
 * "_", 10 random chars of [a-z0-9], and its cleaned extension (double extensions
 * such as .tar.gz kept, at most 20 chars; from the sniffed type when there is none).
 * rnd20 holds 20 random chars of [a-z0-9] (the caller's randomness, so this stays
 * pure). Writes at most FILES_MAX_NAME + 1 bytes to out. Returns the length. */
size_t files_unique_name(const char *original, size_t n, const char *mime, const char *rnd20, char *out);

/* Whether name could be a stored name: 1..FILES_MAX_NAME chars of
 * [A-Za-z0-9_.*+=#-], not starting with '.', no "..". Everything else (slashes,
 * backslashes, NUL, percent-encodings, spaces) is refused before any storage call. */
int files_name_ok(const char *name, size_t n);

/* A thumb spec: WxH (crop to fill from the centre), WxHt (from the top), WxHb (from
 * the bottom), WxHf (fit inside, no crop), 0xH and Wx0 (resize keeping the ratio).
 * Each side at most FILES_THUMB_MAX_SIDE; 0x0 is refused. */
#define FILES_THUMB_MAX_SIDE 10000
typedef struct {
    int w, h;
    char mode; /* 'c' centre, 't', 'b', 'f' */
} files_thumb_t;
/* Parses s (n bytes); returns 0 or -1. */
int files_thumb_parse(const char *s, size_t n, files_thumb_t *out);

#endif
