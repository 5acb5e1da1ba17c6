/* Thumbnails with libvips (see thumb.h). */
#include "files/thumb.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <vips/vips.h>

/* libvips starts at the first thumbnail, not at start-up: its init loads its modules
 * and the codecs they link (PSS at start-up, for a server that may never make one).
 * pthread_once: the file pool's threads may ask together. */
static char vips_argv0[256] = "basalt";
static pthread_once_t vips_once = PTHREAD_ONCE_INIT;
static int vips_state; /* 0 not tried, 1 running, -1 failed (once, then every call fails) */

static void vips_start(void)
{
    if (VIPS_INIT(vips_argv0) != 0) {
        vips_state = -1;
        return;
    }
    /* One thread per thumbnail (the pool bounds how many run at once), no operation
     * cache (each thumbnail is made once and stored), untrusted loaders off. */
    vips_concurrency_set(1);
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_block_untrusted_set(TRUE);
    vips_state = 1;
}

static int vips_ready(void)
{
    pthread_once(&vips_once, vips_start);
    return vips_state == 1;
}

int thumb_init(const char *argv0)
{
    if (argv0 != NULL)
        snprintf(vips_argv0, sizeof(vips_argv0), "%s", argv0);
    return 0;
}

int thumb_started(void)
{
    return __atomic_load_n(&vips_state, __ATOMIC_ACQUIRE) == 1;
}

void thumb_shutdown(void)
{
    if (thumb_started())
        vips_shutdown();
}

int thumb_probe(const void *src, size_t n, int *w, int *h, int *pages)
{
    if (!vips_ready())
        return -1;
    /* The loaders read the header only until pixels are asked for. */
    VipsImage *img = vips_image_new_from_buffer(src, n, "", "access", VIPS_ACCESS_SEQUENTIAL, NULL);
    if (img == NULL) {
        vips_error_clear();
        return -1;
    }
    *w = vips_image_get_width(img);
    *h = vips_image_get_height(img);
    int np = 1;
    if (vips_image_get_typeof(img, "n-pages") && vips_image_get_int(img, "n-pages", &np) != 0)
        np = 1;
    *pages = np < 1 ? 1 : np;
    g_object_unref(img);
    return 0;
}

static const char *suffix_of(const char *mime)
{
    if (strcmp(mime, "image/jpeg") == 0)
        return ".jpg";
    if (strcmp(mime, "image/gif") == 0)
        return ".gif";
    if (strcmp(mime, "image/webp") == 0)
        return ".webp";
    return ".png";
}

int thumb_make(const void *src, size_t n, const char *mime, const files_thumb_t *spec, int64_t max_pixels,
               void **out, size_t *out_n, bs_error_t *err)
{
    *out = NULL;
    *out_n = 0;
    if (!files_is_thumbable(mime)) {
        bs_error_set(err, BS_ERR_VALIDATION, "Thumbnails are made of PNG, JPEG, GIF and WebP images only.");
        return -1;
    }
    int w, h, pages;
    if (!vips_ready()) {
        bs_error_set(err, BS_ERR_INTERNAL, "libvips, which makes thumbnails, could not start.");
        return -1;
    }
    if (thumb_probe(src, n, &w, &h, &pages) != 0) {
        bs_error_set(err, BS_ERR_VALIDATION, "The image cannot be decoded.");
        return -1;
    }
    /* The first page is what a thumbnail shows, but a loader may allocate frames:
     * every page counts against the limit. */
    if ((int64_t)w * (int64_t)h > max_pixels || (int64_t)w * (int64_t)h * pages > max_pixels * 4) {
        bs_error_set(err, BS_ERR_VALIDATION,
                     "The image is too large for a thumbnail (%d x %d pixels, limit %lld pixels).", w, h,
                     (long long)max_pixels);
        return -1;
    }
    int tw = spec->w, th = spec->h;
    VipsInteresting crop = VIPS_INTERESTING_NONE;
    VipsSize size = VIPS_SIZE_BOTH;
    if (tw == 0) {
        tw = VIPS_MAX_COORD;
    } else if (th == 0) {
        th = VIPS_MAX_COORD;
    } else if (spec->mode == 'f') {
        size = VIPS_SIZE_DOWN; /* fit inside, never enlarged */
    } else {
        crop = spec->mode == 't'   ? VIPS_INTERESTING_LOW
               : spec->mode == 'b' ? VIPS_INTERESTING_HIGH
                                   : VIPS_INTERESTING_CENTRE;
    }
    VipsImage *img = NULL;
    /* A truncated or damaged image is an error, not a picture padded with black. */
    if (vips_thumbnail_buffer((void *)src, n, &img, tw, "height", th, "crop", crop, "size", size,
                              "option_string", "fail_on=truncated", NULL) != 0) {
        bs_error_set(err, BS_ERR_VALIDATION, "The image cannot be decoded: %.200s", vips_error_buffer());
        vips_error_clear();
        return -1;
    }
    void *buf = NULL;
    size_t len = 0;
    int rc = vips_image_write_to_buffer(img, suffix_of(mime), &buf, &len, NULL);
    if (rc != 0) {
        /* A format libvips reads but cannot write here (GIF without cgif). */
        vips_error_clear();
        rc = vips_image_write_to_buffer(img, ".png", &buf, &len, NULL);
    }
    g_object_unref(img);
    if (rc != 0) {
        bs_error_set(err, BS_ERR_INTERNAL, "The thumbnail cannot be encoded: %.200s", vips_error_buffer());
        vips_error_clear();
        return -1;
    }
    *out = buf;
    *out_n = len;
    return 0;
}

void thumb_free(void *p)
{
    g_free(p);
}
