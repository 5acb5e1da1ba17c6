/*
 * error — the one table of Basalt's errors.
 *
 * Each error has an HTTP status and a public-safe default message, declared once in
 * BS_ERRORS. Functions that can fail take a `bs_error_t *err` and return -1 (or NULL)
 * after filling it; on success they leave it untouched. Validation errors carry a
 * list of per-field errors (PocketBase's `data` object), allocated in an arena the
 * caller supplies.
 */
#ifndef BASALT_BASE_ERROR_H
#define BASALT_BASE_ERROR_H

#include "base/arena.h"

#define BS_ERRORS(X)                                                                                         \
    X(OK, 200, "OK.")                                                                                        \
    X(BAD_REQUEST, 400, "Something went wrong while processing your request.")                               \
    X(VALIDATION, 400, "Failed to validate the submitted data.")                                             \
    X(UNAUTHORIZED, 401, "The request requires valid record authorization token.")                           \
    X(FORBIDDEN, 403, "The authorized record is not allowed to perform this action.")                        \
    X(NOT_FOUND, 404, "The requested resource wasn't found.")                                                \
    X(METHOD_NOT_ALLOWED, 405, "Method not allowed.")                                                        \
    X(TIMEOUT, 408, "The request took too long.")                                                            \
    X(TOO_LARGE, 413, "The request body is too large.")                                                      \
    X(UNSUPPORTED_MEDIA, 415, "Unsupported content type.")                                                   \
    X(RANGE, 416, "The requested range cannot be satisfied.")                                                \
    X(RATE_LIMITED, 429, "Too many requests.")                                                               \
    X(INTERNAL, 500, "Something went wrong while processing your request.")                                  \
    X(NOT_IMPLEMENTED, 501, "This feature is not available.")                                                \
    X(NOMEM, 503, "The server is out of memory; please retry.")                                              \
    X(UNAVAILABLE, 503, "The service is temporarily unavailable; please retry.")                             \
    X(STORAGE_FULL, 507, "The server has no space left to store the data.")                                  \
    X(RANGE_NOT_SATISFIABLE, 416, "The requested range is not satisfiable.")                                 \
    X(BAD_GATEWAY, 502, "The file storage answered with an error.")                                          \
    X(GATEWAY_TIMEOUT, 504, "The file storage did not answer in time.")

typedef enum {
#define BS_ERR_ENUM(name, status, msg) BS_ERR_##name,
    BS_ERRORS(BS_ERR_ENUM)
#undef BS_ERR_ENUM
        BS_ERR__COUNT
} bs_code_t;

typedef struct bs_field_error {
    const char *field; /* dotted path, e.g. "title" or "requests.2" */
    const char *code;  /* e.g. "validation_required" */
    const char *message;
    struct bs_field_error *next;
} bs_field_error_t;

/* A constraint the database refused a write for, as the store reports it (typed, so
 * that core/ never reads a backend's message text). */
typedef enum {
    BS_CONFLICT_NONE = 0,
    BS_CONFLICT_UNIQUE,
    BS_CONFLICT_FOREIGN,
    BS_CONFLICT_OTHER
} bs_conflict_t;

typedef struct {
    bs_code_t code;
    char message[256];
    bs_field_error_t *fields; /* newest first; owned by the arena given to bs_error_field */
    bs_conflict_t conflict;   /* with code BS_ERR_VALIDATION from the store */
    char constraint[64];      /* the constraint's or index's name, when the backend says it */
    char columns[128];        /* the columns it covers, comma-separated, when the backend says them */
} bs_error_t;

void bs_error_init(bs_error_t *err);
/* Sets code and message (printf-style); NULL fmt uses the table's default message. */
void bs_error_set(bs_error_t *err, bs_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Adds a field error (code BS_ERR_VALIDATION unless already set otherwise). Strings are
 * copied into the arena; on out of memory the field error is dropped but the code stays. */
void bs_error_field(bs_error_t *err, arena_t *arena, const char *field, const char *code, const char *fmt,
                    ...) __attribute__((format(printf, 5, 6)));
int bs_status(bs_code_t code);
const char *bs_default_message(bs_code_t code);
const char *bs_code_name(bs_code_t code);

#endif
