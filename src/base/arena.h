/*
 * arena — a bump allocator for memory that dies all at once.
 *
 * Every request owns one arena: everything the request allocates comes from it and
 * is released by arena_free() when the request ends. An arena belongs to one thread
 * at a time; it does no locking. Allocation never fails silently: on out-of-memory
 * arena_alloc() returns NULL and callers report BS_ERR_NOMEM.
 */
#ifndef BASALT_BASE_ARENA_H
#define BASALT_BASE_ARENA_H

#include <stddef.h>

typedef struct arena_chunk arena_chunk_t;

typedef struct {
    arena_chunk_t *head; /* newest chunk first */
    size_t chunk_size;   /* size of the next ordinary chunk */
    size_t total;        /* bytes obtained from malloc, for metrics and limits */
} arena_t;

/* Prepares an empty arena; allocates nothing until the first arena_alloc(). */
void arena_init(arena_t *a, size_t chunk_size);
/* Releases every chunk; the arena may be reused afterwards. */
void arena_free(arena_t *a);
/* Returns owned-by-arena memory, 16-byte aligned, or NULL on out of memory. */
void *arena_alloc(arena_t *a, size_t n);
/* Like arena_alloc, zero-filled. */
void *arena_calloc(arena_t *a, size_t n);
/* Copies n bytes and appends a NUL; returns NULL on out of memory. */
char *arena_strndup(arena_t *a, const char *s, size_t n);
char *arena_strdup(arena_t *a, const char *s);
/* printf into the arena; returns NULL on out of memory. */
char *arena_printf(arena_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
