/*
 * coro — stackful coroutines on one thread (ucontext), for code written as plain
 * blocking calls that a driver wants to suspend at a known point and resume later
 * (the PostgreSQL writer's pipelined group commit, ADR 0021).
 *
 * A coroutine runs fn(arg) on a stack of its own (mmap'd, with guard pages below it)
 * when first resumed, until it calls coro_yield or fn returns. Only the thread that
 * resumes a coroutine may run it; a coroutine is reusable once finished
 * (coro_start again). Under AddressSanitizer the switches are announced to it, so
 * that it follows which stack runs.
 */
#ifndef BASALT_BASE_CORO_H
#define BASALT_BASE_CORO_H

#include <stddef.h>

typedef struct coro coro_t;
typedef void (*coro_fn)(void *arg);

/* A coroutine with a stack of stack_size bytes (rounded up to pages); NULL when
 * memory cannot be had. */
coro_t *coro_new(size_t stack_size);
void coro_free(coro_t *co);
/* Sets co (new or finished) to run fn(arg) at its next coro_resume. */
void coro_start(coro_t *co, coro_fn fn, void *arg);
/* Runs co until it yields or fn returns; returns 1 once fn has returned, else 0. */
int coro_resume(coro_t *co);
/* Inside co's fn: back to the coro_resume that ran it. */
void coro_yield(coro_t *co);

#endif
