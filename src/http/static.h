/*
 * static — files served from a folder: the public folder (--public-dir, PocketBase's
 * pb_public) at "/" and the admin dashboard at "/_/".
 *
 * Cache policy: a site's files live in memory. When the site opens (start-up, main
 * thread) its folder is read whole into a snapshot: every regular file up to
 * max_file_bytes, in all at most max_total_bytes (files past either bound are left
 * out, with a warning in the log, and answer 404), each text file also gzip-compressed
 * once (or taken from a precompressed NAME.gz beside it). A refresher thread of the
 * site looks at the folder every refresh_ms (names, sizes, modification times) and,
 * when anything changed, reads a new snapshot and swaps it in; requests hold a
 * reference to the snapshot they answer from until libh2o has sent the bytes. So a
 * worker's loop never touches the disk: it looks a name up in memory and sends.
 *
 * Only files found by scanning the folder can be served, so no path can leave it:
 * names that start with '.' are skipped, a symbolic link is followed only when its
 * target is inside the folder, and request paths holding "..", ".", NUL or an
 * encoded separator are refused before they get here (http/reqcheck.h).
 *
 * Threads: static_open/static_close on the main thread; static_dispatch on workers.
 */
#ifndef BASALT_HTTP_STATIC_H
#define BASALT_HTTP_STATIC_H

#include <stddef.h>

struct req_ctx;
typedef struct static_site static_site_t;

typedef struct {
    size_t max_file_bytes;     /* larger files are not served */
    size_t max_total_bytes;    /* the snapshot's bound (identity bytes) */
    int refresh_ms;            /* how often the folder is looked at; 0: never */
    int spa;                   /* unknown paths without an extension answer index.html */
    const char *extra_headers; /* "name: value\n..." added to every answer, or NULL */
} static_opts_t;

/* Reads root into memory and starts its refresher. Returns the site, or NULL with a
 * message in errbuf (root missing or not a folder). */
static_site_t *static_open(const char *root, const static_opts_t *opts, char *errbuf, size_t errlen);
/* Stops the refresher and frees the site once no request holds a snapshot. */
void static_close(static_site_t *s);
/* Files in the current snapshot (tests, start-up log). */
size_t static_file_count(static_site_t *s);

/* Mounts site at prefix ("/" or "/_/": ends with '/'); missing_html, when site is
 * NULL, is the body of a 404 page saying why (e.g. the dashboard was not built).
 * Before the workers start; at most 8 mounts, the longest prefix wins. */
void static_mount(const char *prefix, static_site_t *site, const char *missing_html);
/* Answers a GET or HEAD whose path is under a mount (the API's routes come first).
 * Returns 1 when answered, 0 when no mount claims the path (the caller answers). */
int static_dispatch(struct req_ctx *ctx);
/* Unmounts and closes every mounted site (main thread, after the workers stopped). */
void static_unmount_all(void);

/* Pure helpers, exposed for the unit tests. */
const char *static_content_type(const char *path, int *compressible);
/* 1 when the file name carries a content hash (app-LQ5M3KZE.js, main.8f3a2b1c.css):
 * such a file never changes and is cached for a year. */
int static_is_hashed_name(const char *path);
/* Parses a Range header for a body of len bytes: 1 with [*start, *end] (inclusive)
 * for one satisfiable range, 0 to send the whole body (no range, several ranges, or
 * a form not understood), -1 when unsatisfiable (416). */
/* 1 when the header (Accept-Encoding) lists tok without q=0. */
int static_header_has_token(const char *h, size_t hl, const char *tok);
/* If-None-Match h (hl bytes) names etag (weak comparison; "*" matches). */
int static_etag_matches(const char *h, size_t hl, const char *etag);
int static_parse_range(const char *h, size_t hl, size_t len, size_t *start, size_t *end);

#endif
