/*
 * redis — a Redis client on each worker's event loop (hiredis 0.14's async API).
 *
 * Every worker has one command connection of its own, driven by its h2o loop
 * through a small adapter (h2o watches a duplicate of hiredis's descriptor for
 * readiness and hiredis does the reads and writes); worker 0 has a second one, the
 * subscriber, for the one pub/sub channel. Nothing here ever blocks a loop: the
 * connect is non-blocking to a numeric address (redis_url.h refuses names), and
 * every command has a deadline of its own (hiredis 0.14 has no async time-outs):
 * an h2o timer per command. A command that times out is answered
 * REDIS_STATUS_TIMEOUT and its connection is dropped (hiredis answers in order,
 * so every later command would wait behind the late one; a server that does not
 * answer in time is presumed stuck) and re-established with a
 * backoff (100 ms doubling to 2 s); the commands still in flight on it are
 * answered REDIS_STATUS_ERROR. A circuit breaker per loop (redis_breaker.h) says
 * whether a decision should go to Redis at all.
 *
 * Threads: redis_init before server_start and redis_shutdown after server_stop, on
 * the main thread; redis_worker_event from each worker's hook; everything else on a
 * worker's loop, about that loop's connection, except the gauges (any thread).
 */
#ifndef BASALT_REDIS_REDIS_H
#define BASALT_REDIS_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "redis/redis_url.h"

struct worker;
struct redisReply;

typedef enum {
    REDIS_STATUS_OK,      /* a reply (which may be a Redis error reply) */
    REDIS_STATUS_ERROR,   /* the connection failed or was dropped: no reply */
    REDIS_STATUS_TIMEOUT, /* no reply within --redis-timeout-ms */
} redis_status_t;

/* Scripts known by SHA1; loaded with SCRIPT LOAD on every (re)connect and sent
 * as EVALSHA, falling back to EVAL when Redis answers NOSCRIPT. */
typedef enum {
    REDIS_SCRIPT_RATELIMIT,
    REDIS_SCRIPT_HEARTBEAT,
    REDIS_SCRIPT_L2GET,
    REDIS__SCRIPTS
} redis_script_t;

/* A reply: reply is borrowed for the call (NULL unless status is OK). */
typedef void (*redis_reply_fn)(void *arg, struct redisReply *reply, redis_status_t status);

typedef struct {
    redis_url_t url;
    int timeout_ms;
    int required;                                        /* readiness fails while Redis is down */
    const char *channel;                                 /* the channel worker 0 subscribes to; NULL: none */
    void (*on_message)(const char *payload, size_t len); /* worker 0's loop */
    void (*on_subscribed)(void);                         /* after each (re)subscribe, worker 0's loop */
    void (*on_applied)(void); /* the subscriber's bytes are all applied (or it is gone), worker 0's loop */
    void (*on_tick)(struct worker *w, int64_t now_ms); /* every loop turn of every worker */
    void (*on_drain)(struct worker *w);                /* the worker starts draining (SIGTERM) */
    void (*on_end)(struct worker *w);                  /* the worker's loop has stopped */
    const char *scripts[REDIS__SCRIPTS];               /* Lua texts (static), by redis_script_t */
} redis_config_t;

/* Returns 0, or -1 on OOM. Without a call to it everything here is off. */
int redis_init(const redis_config_t *cfg, int nworkers);
void redis_shutdown(void);
int redis_enabled(void);
/* The worker hook's events (http/server.h's SERVER_WORKER_*), on w's thread. */
void redis_worker_event(struct worker *w, int event);

/* With this flag a call first asks the loop's breaker whether it may go to Redis
 * at all (-1 when not: decide locally), and its outcome is reported to it. */
#define REDIS_SEND_BREAKER 1

/* Sends a command on the calling loop's connection. Returns 0 and fn will be
 * called exactly once, later, on this loop (never from inside this call); or -1
 * when the connection is not up, and fn is never called. argv/lens are copied. */
int redis_send(int argc, const char **argv, const size_t *lens, int flags, redis_reply_fn fn, void *arg);
/* The same for a script: EVALSHA sha nkeys args..., EVAL on NOSCRIPT. */
int redis_eval(redis_script_t script, int nargs, int nkeys, const char **args, const size_t *lens, int flags,
               redis_reply_fn fn, void *arg);

/* Gauges and counters (any thread). */
int redis_up(void);       /* every worker's connection (and the subscriber) is up */
int redis_degraded(void); /* some loop decides locally (breaker not closed or down) */
int redis_ready(void);    /* 1 unless --redis-required and Redis is down */
uint64_t redis_errors(void), redis_timeouts(void);

/* Whether worker 0's subscriber holds messages it has not handled yet: bytes in its
 * socket or in hiredis's buffer, or a read being handled now. Any thread; one ioctl.
 * 0 while the subscriber is down (then the degraded bound of redis_shared.h holds).
 * A reader that sees 0 has every invalidation whose PUBLISH Redis answered before
 * the call applied already (ADR 0015). */
int redis_sub_pending(void);

#endif
