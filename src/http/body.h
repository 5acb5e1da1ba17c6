/*
 * body — request bodies into JSON objects. Pure (no I/O, no globals); any thread.
 * Strings are allocated in the caller's arena; returned JSON is owned by the caller.
 */
#ifndef BASALT_HTTP_BODY_H
#define BASALT_HTTP_BODY_H

#include <jansson.h>
#include <stddef.h>

#include "base/arena.h"
#include "base/error.h"

/* Parses a body by its Content-Type (JSON when absent): JSON (an object, at most
 * max_depth deep), multipart/form-data (@jsonPayload merged, other parts as strings,
 * repeated names as arrays, files refused) or urlencoded. Returns an owned object
 * (empty for an empty body) or NULL with err (400/415). */
json_t *body_parse(arena_t *arena, const char *ctype, size_t ctype_len, const char *body, size_t n,
                   size_t max_depth, bs_error_t *err);
/* A file part of a multipart body: its part name (the field, maybe with a modifier
 * or a batch prefix: "avatar", "documents+", "requests.0.avatar"), its original
 * file name (never used as a path: only its base and extension inform the stored
 * name) and its bytes, borrowed from the body. Arena-allocated, in body order. */
typedef struct body_file {
    const char *field;
    const char *filename;
    const char *data;
    size_t len;
    struct body_file *next;
} body_file_t;

/* body_parse that also accepts file parts (at most max_files; more is a 400): they
 * are returned in *files, not in the object. A file part without a file name is a
 * plain value. */
json_t *body_parse_upload(arena_t *arena, const char *ctype, size_t ctype_len, const char *body, size_t n,
                          size_t max_depth, size_t max_files, body_file_t **files, bs_error_t *err);
/* Parses a=b&c=d into obj; with arrays, repeated keys become arrays. Returns how
 * many pairs were left out because a key or value is not valid UTF-8 or holds a NUL
 * byte (callers refuse the request rather than act without them). */
int body_parse_pairs(arena_t *a, json_t *obj, const char *s, size_t n, int arrays);

#endif
