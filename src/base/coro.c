/* Stackful coroutines over ucontext; see coro.h. */
#include "base/coro.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define CORO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORO_ASAN 1
#endif
#endif
#ifdef CORO_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

/* Below each stack: a frame larger than one page cannot jump the guard into the
 * stack mapped below it. */
#define CORO_GUARD_PAGES 16

struct coro {
    ucontext_t uc, caller;
    void *map; /* the guard page and the stack */
    size_t map_size;
    char *stack;
    size_t stack_size;
    coro_fn fn;
    void *arg;
    int finished;
#ifdef CORO_ASAN
    void *caller_fake, *coro_fake; /* ASan's fake stacks of each side while switched away */
    const void *caller_bottom;     /* the resumer's stack, to switch back to */
    size_t caller_size;
#endif
};

/* Before leaving a stack: for the coroutine's (to_coro) or back to the resumer's;
 * exiting: the coroutine's fn has returned, its fake stack goes. */
static void switch_begin(coro_t *co, int to_coro, int exiting)
{
#ifdef CORO_ASAN
    if (to_coro)
        __sanitizer_start_switch_fiber(&co->caller_fake, co->stack, co->stack_size);
    else
        __sanitizer_start_switch_fiber(exiting ? NULL : &co->coro_fake, co->caller_bottom, co->caller_size);
#else
    (void)co;
    (void)to_coro;
    (void)exiting;
#endif
}

/* On arrival on a stack: in the coroutine (in_coro; first: its first entry), learning
 * the resumer's stack, or back in the resumer. */
static void switch_end(coro_t *co, int in_coro, int first)
{
#ifdef CORO_ASAN
    if (in_coro)
        __sanitizer_finish_switch_fiber(first ? NULL : co->coro_fake, &co->caller_bottom, &co->caller_size);
    else
        __sanitizer_finish_switch_fiber(co->caller_fake, NULL, NULL);
#else
    (void)co;
    (void)in_coro;
    (void)first;
#endif
}

static void trampoline(unsigned hi, unsigned lo)
{
    coro_t *co = (coro_t *)(((uintptr_t)hi << 32) | (uintptr_t)lo);
    switch_end(co, 1, 1);
    co->fn(co->arg);
    co->finished = 1;
    switch_begin(co, 0, 1);
    setcontext(&co->caller);
    abort(); /* not reached */
}

coro_t *coro_new(size_t stack_size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t size = (stack_size + page - 1) / page * page;
    coro_t *co = calloc(1, sizeof(*co));
    if (co == NULL)
        return NULL;
    size_t guard = CORO_GUARD_PAGES * page;
    co->map_size = size + guard;
    co->map =
        mmap(NULL, co->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (co->map == MAP_FAILED) {
        free(co);
        return NULL;
    }
    if (mprotect(co->map, guard, PROT_NONE) != 0) { /* an overflow faults instead of writing on */
        munmap(co->map, co->map_size);
        free(co);
        return NULL;
    }
    co->stack = (char *)co->map + guard;
    co->stack_size = size;
    co->finished = 1;
    return co;
}

void coro_free(coro_t *co)
{
    if (co == NULL)
        return;
    munmap(co->map, co->map_size);
    free(co);
}

void coro_start(coro_t *co, coro_fn fn, void *arg)
{
    co->fn = fn;
    co->arg = arg;
    co->finished = 0;
    getcontext(&co->uc);
    co->uc.uc_stack.ss_sp = co->stack;
    co->uc.uc_stack.ss_size = co->stack_size;
    co->uc.uc_link = NULL;
    uintptr_t p = (uintptr_t)co;
    makecontext(&co->uc, (void (*)(void))trampoline, 2, (unsigned)(p >> 32), (unsigned)(p & 0xffffffffu));
}

int coro_resume(coro_t *co)
{
    if (co->finished)
        return 1;
    switch_begin(co, 1, 0);
    swapcontext(&co->caller, &co->uc);
    switch_end(co, 0, 0);
    return co->finished;
}

void coro_yield(coro_t *co)
{
    switch_begin(co, 0, 0);
    swapcontext(&co->uc, &co->caller);
    switch_end(co, 1, 0);
}
