/*
 * buf — a growable byte string.
 *
 * A buf either lives on the heap (arena == NULL; the owner calls buf_free) or in an
 * arena (grown copies stay in the arena and die with it; buf_free is a no-op). The
 * data is always NUL-terminated after a successful append so it can be used as a C
 * string. Appends report out-of-memory by setting buf->oom; callers check it once at
 * the end instead of after every append.
 */
#ifndef BASALT_BASE_BUF_H
#define BASALT_BASE_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    arena_t *arena; /* borrowed; NULL for heap */
    int oom;
} buf_t;

void buf_init(buf_t *b, arena_t *arena);
void buf_free(buf_t *b);
/* Ensures room for n more bytes; returns 0 or -1 (and sets oom). */
int buf_reserve(buf_t *b, size_t n);
void buf_append(buf_t *b, const void *p, size_t n);
void buf_puts(buf_t *b, const char *s);
void buf_putc(buf_t *b, char c);
void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_put_i64(buf_t *b, int64_t v);
/* Detaches the heap data (caller frees with free()); the buf becomes empty. */
char *buf_detach(buf_t *b);

#endif
