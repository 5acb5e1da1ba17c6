/*
 * thumb — thumbnails with libvips, on the file pool's threads only (decoding is
 * CPU-bound and can take a while).
 *
 * Before anything is decoded, the image's header is read and its pixel count
 * (width x height, every page of an animation counted) compared with the limit: a
 * small file that declares 50,000 x 50,000 pixels (a decompression bomb) is refused
 * without its pixels ever being allocated. libvips' untrusted loaders (those not
 * fuzzed upstream: ImageMagick, PDF, ...) are blocked; only the four formats that
 * get thumbnails (PNG, JPEG, GIF, WebP) are ever given to it.
 */
#ifndef BASALT_FILES_THUMB_H
#define BASALT_FILES_THUMB_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"
#include "files/fileinfo.h"

/* Once, on the main thread, before the pool starts: only notes argv0; libvips itself
 * starts at the first thumb_probe or thumb_make (any thread, once). Returns 0. */
int thumb_init(const char *argv0);
/* 1 once libvips has started (for tests and the shutdown). */
int thumb_started(void);
/* After the pool stopped: libvips' shutdown, if it started. */
void thumb_shutdown(void);

/* Makes the thumbnail of the image in src (n bytes, of sniffed type mime) for spec,
 * encoded in the same format (PNG when libvips cannot write it). Returns 0 with
 * *out (owned, g_free()d by thumb_free) of *out_n bytes, or -1 with err: 422 for an
 * image over max_pixels or that cannot be decoded. */
int thumb_make(const void *src, size_t n, const char *mime, const files_thumb_t *spec, int64_t max_pixels,
               void **out, size_t *out_n, bs_error_t *err);
void thumb_free(void *p);
/* Reads only the header: 0 with *w, *h, *pages filled, or -1. Exposed for tests. */
int thumb_probe(const void *src, size_t n, int *w, int *h, int *pages);

#endif
