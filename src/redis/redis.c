#include "redis/redis.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>

#include "base/log.h"
#include "base/util.h"
#include "http/server.h"
#include "redis/redis_breaker.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
/* Failures in a row that open a loop's breaker, and how long it stays open before
 * the first probe (doubling after each failed probe). */
#define BREAKER_THRESHOLD 3
#define BREAKER_COOLDOWN_MS 500
#define BREAKER_MAX_COOLDOWN_MS 4000

typedef enum { CONN_DOWN, CONN_CONNECTING, CONN_UP } conn_state_t;

typedef struct rloop rloop_t;
typedef struct conn conn_t;

/* The adapter between one hiredis context and the h2o loop: the h2o socket over a
 * duplicate of hiredis's descriptor, and which readiness hiredis asked for. One per
 * connection attempt, freed by hiredis's cleanup hook (or after the callback that
 * is running when it is called). */
typedef struct {
    conn_t *conn;
    redisAsyncContext *ac;
    h2o_socket_t *sock;
    h2o_timeout_entry_t flush; /* the turn's writes, once, at the end of the turn */
    int reading, writing, notify_pending, in_flush, busy, dead;
} ev_t;

struct conn {
    rloop_t *l;
    int subscriber;
    redisAsyncContext *ac; /* NULL while down */
    ev_t *ev;
    conn_state_t state;
    int64_t next_attempt_ms, backoff_ms;
    int was_up;                    /* to log transitions only */
    int setup_logged;              /* a refused set-up was logged (until the next success) */
    h2o_timeout_entry_t sub_timer; /* the subscriber's deadline for SUBSCRIBE's answer */
};

struct rloop {
    worker_t *w;
    h2o_evloop_t *loop;
    h2o_timeout_t deadline, zero;
    conn_t cmd, sub;
    redis_breaker_t breaker;
    int degraded, up; /* read by gauges on any thread */
    int stopping;
};

typedef struct {
    h2o_timeout_entry_t timer; /* first */
    rloop_t *l;
    redisAsyncContext *ac;
    redis_reply_fn fn;
    void *arg;
    int flags;
    int timed_out;
    /* a script call, kept to be sent again as EVAL after NOSCRIPT */
    int script; /* -1: not a script */
    int nargs, nkeys;
    const char **args;
    size_t *lens;
} cmd_t;

static redis_config_t cfg;
static int enabled;
static rloop_t *loops;
static int nloops;
static __thread rloop_t *current;
static uint64_t n_errors, n_timeouts;
static char script_sha[REDIS__SCRIPTS][41];
/* Worker 0's subscriber for redis_sub_pending on other threads: its descriptor while
 * it is subscribed (-1 otherwise), and 1 while a read of it is being handled or
 * hiredis keeps bytes of it not yet parsed into messages. */
static int sub_fd = -1;
static int sub_busy;

int redis_enabled(void)
{
    return enabled;
}

static void sha1_hex(const char *text, char out[41])
{
    unsigned char d[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)text, strlen(text), d);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

int redis_init(const redis_config_t *c, int nworkers)
{
    cfg = *c;
    loops = calloc((size_t)nworkers, sizeof(*loops));
    if (loops == NULL)
        return -1;
    nloops = nworkers;
    for (int i = 0; i < REDIS__SCRIPTS; i++)
        if (cfg.scripts[i] != NULL)
            sha1_hex(cfg.scripts[i], script_sha[i]);
    enabled = 1;
    return 0;
}

void redis_shutdown(void)
{
    free(loops);
    loops = NULL;
    nloops = 0;
    enabled = 0;
}

/* ---- gauges ---- */

static void update_gauges(rloop_t *l)
{
    int up = l->cmd.state == CONN_UP && (!l->sub.subscriber || l->sub.state == CONN_UP);
    int degraded = l->cmd.state != CONN_UP || l->breaker.state != REDIS_BREAKER_CLOSED;
    __atomic_store_n(&l->up, up, __ATOMIC_RELAXED);
    __atomic_store_n(&l->degraded, degraded, __ATOMIC_RELAXED);
}

int redis_up(void)
{
    if (!enabled || nloops == 0)
        return 0;
    for (int i = 0; i < nloops; i++)
        if (!__atomic_load_n(&loops[i].up, __ATOMIC_RELAXED))
            return 0;
    return 1;
}

int redis_degraded(void)
{
    if (!enabled)
        return 0;
    for (int i = 0; i < nloops; i++)
        if (__atomic_load_n(&loops[i].degraded, __ATOMIC_RELAXED))
            return 1;
    return 0;
}

int redis_ready(void)
{
    return !enabled || !cfg.required || redis_up();
}

uint64_t redis_errors(void)
{
    return __atomic_load_n(&n_errors, __ATOMIC_RELAXED);
}

uint64_t redis_timeouts(void)
{
    return __atomic_load_n(&n_timeouts, __ATOMIC_RELAXED);
}

/* ---- the adapter ---- */

static void ev_release(ev_t *ev)
{
    if (ev->dead && ev->busy == 0)
        free(ev);
}

/* Whether hiredis holds bytes of a reply it has not handed over: unparsed bytes, or
 * a reply begun (it consumes a reply's first bytes into its task stack). A reader
 * that has nothing keeps ridx at 0 with the first task's type unset (-1) after its
 * last, empty, attempt; -1 before any. */
static int reader_holds_part(const redisReader *rd)
{
    if (rd == NULL)
        return 0;
    if (rd->len > rd->pos || rd->ridx > 0)
        return 1;
#if HIREDIS_MAJOR >= 1
    return rd->ridx == 0 && rd->task != NULL && rd->task[0] != NULL && rd->task[0]->type >= 0;
#else
    return rd->ridx == 0 && rd->rstack[0].type >= 0;
#endif
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    (void)err;
    ev_t *ev = sock->data;
    if (ev == NULL || ev->dead)
        return;
    int sub = ev->conn->subscriber;
    if (sub)
        __atomic_store_n(&sub_busy, 1, __ATOMIC_SEQ_CST); /* before the bytes leave the socket */
    ev->busy++;
    redisAsyncHandleRead(ev->ac);
    ev->busy--;
    if (sub) {
        /* Messages are applied (their generations bumped) by now; a partial one stays
         * in hiredis's buffer and keeps the flag up until its rest is read. */
        int left = !ev->dead && reader_holds_part(ev->ac->c.reader);
        __atomic_store_n(&sub_busy, left, __ATOMIC_SEQ_CST);
        if (!left && cfg.on_applied)
            cfg.on_applied();
    }
    ev_release(ev);
}

int redis_sub_pending(void)
{
    int fd = __atomic_load_n(&sub_fd, __ATOMIC_SEQ_CST);
    if (fd < 0)
        return 0;
    /* The socket first, then the flag: bytes that left the socket raised the flag
     * before (on_readable), and it drops only once they are applied. A stale
     * descriptor (the subscriber re-made meanwhile) can only answer "pending". */
    int n = 0;
    if (ioctl(fd, FIONREAD, &n) != 0 || n > 0)
        return 1;
    return __atomic_load_n(&sub_busy, __ATOMIC_SEQ_CST);
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    (void)err;
    ev_t *ev = sock->data;
    if (ev == NULL)
        return;
    ev->notify_pending = 0;
    if (!ev->writing || ev->dead)
        return;
    ev->busy++;
    ev->in_flush = 1;
    redisAsyncHandleWrite(ev->ac);
    ev->in_flush = 0;
    ev->busy--;
    ev_release(ev);
}

static void on_flush(h2o_timeout_entry_t *entry)
{
    ev_t *ev = H2O_STRUCT_FROM_MEMBER(ev_t, flush, entry);
    if (!ev->writing || ev->dead)
        return;
    ev->busy++;
    ev->in_flush = 1;
    redisAsyncHandleWrite(ev->ac);
    ev->in_flush = 0;
    ev->busy--;
    ev_release(ev);
}

static void ev_add_read(void *p)
{
    ev_t *ev = p;
    if (!ev->reading && !ev->dead) {
        ev->reading = 1;
        h2o_socket_read_start(ev->sock, on_readable);
    }
}

static void ev_del_read(void *p)
{
    ev_t *ev = p;
    if (ev->reading && !ev->dead) {
        ev->reading = 0;
        h2o_socket_read_stop(ev->sock);
    }
}

/* Writes wait for the end of the loop turn (so a turn's commands go out in one
 * write), except while connecting or when a write did not finish: then h2o tells
 * when the socket is writable. */
static void ev_add_write(void *p)
{
    ev_t *ev = p;
    if (ev->dead)
        return;
    ev->writing = 1;
    if (!(ev->ac->c.flags & REDIS_CONNECTED) || ev->in_flush) {
        if (!ev->notify_pending) {
            ev->notify_pending = 1;
            h2o_socket_notify_write(ev->sock, on_writable);
        }
    } else if (!h2o_timeout_is_linked(&ev->flush)) {
        h2o_timeout_link(ev->conn->l->loop, &ev->conn->l->zero, &ev->flush);
    }
}

static void ev_del_write(void *p)
{
    ev_t *ev = p;
    ev->writing = 0;
}

static void ev_cleanup(void *p)
{
    ev_t *ev = p;
    if (h2o_timeout_is_linked(&ev->flush))
        h2o_timeout_unlink(&ev->flush);
    if (ev->reading)
        h2o_socket_read_stop(ev->sock);
    ev->sock->data = NULL; /* nothing h2o may still report reaches the freed adapter */
    h2o_socket_close(ev->sock);
    ev->sock = NULL;
    ev->dead = 1;
    if (ev->conn->ev == ev)
        ev->conn->ev = NULL;
    ev_release(ev);
}

/* ---- connections ---- */

static void conn_mark_down(conn_t *c, const char *why)
{
    rloop_t *l = c->l;
    if (c->subscriber) {
        __atomic_store_n(&sub_fd, -1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&sub_busy, 0, __ATOMIC_SEQ_CST);
        if (cfg.on_applied)
            cfg.on_applied(); /* nothing is pending any more: whoever waited goes on */
    }
    c->ac = NULL;
    c->state = CONN_DOWN;
    if (h2o_timeout_is_linked(&c->sub_timer))
        h2o_timeout_unlink(&c->sub_timer);
    int64_t now = util_now_ms();
    c->next_attempt_ms = now + c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    if (!c->subscriber)
        redis_breaker_trip(&l->breaker, now);
    if (c->was_up && !l->stopping) {
        LOGF(LOG_WARN, "redis", "worker %d: the %s connection to Redis %s:%d is down (%s); %s", l->w->idx,
             c->subscriber ? "subscriber" : "command", cfg.url.host, cfg.url.port, why ? why : "closed",
             c->subscriber ? "local caches keep entries for 1 s until it is back"
                           : "rate limits are decided locally until it is back");
        c->was_up = 0;
    }
    update_gauges(l);
}

/* Drops the connection at once (a time-out, a refused AUTH): every command still
 * on it is answered REDIS_STATUS_ERROR (or TIMEOUT, for the one that timed out). */
static void conn_drop(conn_t *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    if (ac == NULL)
        return;
    conn_mark_down(c, why);
    redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;
    if (status != REDIS_OK && c->ac == ac) {
        __atomic_add_fetch(&n_errors, 1, __ATOMIC_RELAXED);
        conn_mark_down(c, ac->errstr);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    conn_t *c = ac->data;
    (void)status;
    if (c->ac == ac) {
        __atomic_add_fetch(&n_errors, 1, __ATOMIC_RELAXED);
        conn_mark_down(c, ac->errstr[0] ? ac->errstr : "closed by the server");
    }
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    cmd_t *cmd = (cmd_t *)entry;
    rloop_t *l = cmd->l;
    cmd->timed_out = 1;
    __atomic_add_fetch(&n_timeouts, 1, __ATOMIC_RELAXED);
    /* Replies come in order: every later command waits behind this one, on a
     * server presumed stuck. The connection goes; the commands on it fall back. */
    if (l->sub.subscriber && l->sub.ac == cmd->ac) {
        conn_drop(&l->sub, "a command timed out");
    } else if (l->cmd.ac == cmd->ac) {
        conn_drop(&l->cmd, "a command timed out");
        /* The subscriber shares the server's fate: if Redis stopped answering, the
         * subscriber may be dead too without knowing it. */
        if (l->sub.subscriber)
            conn_drop(&l->sub, "the command connection timed out");
    }
}

static int is_noscript(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ERROR && r->len >= 8 && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

static int send_cmd(conn_t *c, cmd_t *cmd, int argc, const char **argv, const size_t *lens);

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    cmd_t *cmd = privdata;
    redisReply *reply = r;
    rloop_t *l = cmd->l;
    if (h2o_timeout_is_linked(&cmd->timer))
        h2o_timeout_unlink(&cmd->timer);
    if (reply != NULL && cmd->script >= 0 && is_noscript(reply) && l->cmd.state == CONN_UP) {
        /* Redis lost its script cache (a restart, SCRIPT FLUSH): EVAL loads it. */
        const char **argv = malloc(sizeof(char *) * (size_t)(cmd->nargs + 3));
        size_t *lens = malloc(sizeof(size_t) * (size_t)(cmd->nargs + 3));
        if (argv != NULL && lens != NULL) {
            char nk[16];
            argv[0] = "EVAL";
            lens[0] = 4;
            argv[1] = cfg.scripts[cmd->script];
            lens[1] = strlen(argv[1]);
            lens[2] = (size_t)snprintf(nk, sizeof(nk), "%d", cmd->nkeys);
            argv[2] = nk;
            for (int i = 0; i < cmd->nargs; i++) {
                argv[3 + i] = cmd->args[i];
                lens[3 + i] = cmd->lens[i];
            }
            cmd->script = -1; /* once */
            int rc = send_cmd(&l->cmd, cmd, cmd->nargs + 3, argv, lens);
            free(argv);
            free(lens);
            if (rc == 0)
                return; /* answered by the EVAL's reply */
        } else {
            free(argv);
            free(lens);
        }
    }
    redis_status_t st = cmd->timed_out  ? REDIS_STATUS_TIMEOUT
                        : reply == NULL ? REDIS_STATUS_ERROR
                                        : REDIS_STATUS_OK;
    if (st == REDIS_STATUS_ERROR)
        __atomic_add_fetch(&n_errors, 1, __ATOMIC_RELAXED);
    if (cmd->flags & REDIS_SEND_BREAKER) {
        int64_t now = util_now_ms();
        if (st == REDIS_STATUS_OK)
            redis_breaker_success(&l->breaker);
        else
            redis_breaker_failure(&l->breaker, now);
        update_gauges(l);
    }
    if (cmd->fn != NULL)
        cmd->fn(cmd->arg, st == REDIS_STATUS_OK ? reply : NULL, st);
    free(cmd);
}

/* Queues argv on c's context with cmd's deadline; 0, or -1 (cmd not taken). */
static int send_cmd(conn_t *c, cmd_t *cmd, int argc, const char **argv, const size_t *lens)
{
    if (c->ac == NULL)
        return -1;
    if (redisAsyncCommandArgv(c->ac, on_reply, cmd, argc, argv, lens) != REDIS_OK)
        return -1;
    cmd->ac = c->ac;
    h2o_timeout_link(c->l->loop, &c->l->deadline, &cmd->timer);
    return 0;
}

static cmd_t *cmd_new(rloop_t *l, int flags, redis_reply_fn fn, void *arg, size_t extra)
{
    cmd_t *cmd = calloc(1, sizeof(*cmd) + extra);
    if (cmd == NULL)
        return NULL;
    cmd->timer.cb = on_deadline;
    cmd->l = l;
    cmd->fn = fn;
    cmd->arg = arg;
    cmd->flags = flags;
    cmd->script = -1;
    return cmd;
}

/* The handshake's replies: AUTH and SELECT must succeed; the last one (PING, after
 * the scripts are loaded) makes the connection usable. */
static void on_handshake(void *arg, redisReply *reply, redis_status_t st)
{
    conn_t *c = arg;
    if (st != REDIS_STATUS_OK || c->ac == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        if (!c->setup_logged)
            LOGF(LOG_ERROR, "redis",
                 "Redis %s:%d refused the connection's set-up: %s (check the password and "
                 "database of --redis)",
                 cfg.url.host, cfg.url.port, reply->str);
        c->setup_logged = 1;
        conn_drop(c, "set-up refused");
    }
}

static void on_ready(void *arg, redisReply *reply, redis_status_t st)
{
    conn_t *c = arg;
    if (st != REDIS_STATUS_OK || c->ac == NULL || reply->type == REDIS_REPLY_ERROR)
        return;
    c->state = CONN_UP;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->setup_logged = 0;
    /* Decisions come back to Redis only through the breaker's probe (on_probe). */
    if (!c->was_up)
        LOGF(LOG_INFO, "redis", "worker %d: connected to Redis %s:%d", c->l->w->idx, cfg.url.host,
             cfg.url.port);
    c->was_up = 1;
    update_gauges(c->l);
}

static void handshake(conn_t *c, redis_reply_fn fn, int argc, const char **argv)
{
    size_t lens[4];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    cmd_t *cmd = cmd_new(c->l, 0, fn, c, 0);
    if (cmd != NULL && send_cmd(c, cmd, argc, argv, lens) != 0)
        free(cmd);
}

static void on_sub_deadline(h2o_timeout_entry_t *entry)
{
    conn_t *c = H2O_STRUCT_FROM_MEMBER(conn_t, sub_timer, entry);
    __atomic_add_fetch(&n_timeouts, 1, __ATOMIC_RELAXED);
    conn_drop(c, "SUBSCRIBE timed out");
}

static void on_sub_message(redisAsyncContext *ac, void *r, void *privdata)
{
    conn_t *c = privdata;
    redisReply *reply = r;
    if (reply == NULL || c->ac != ac || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        if (h2o_timeout_is_linked(&c->sub_timer))
            h2o_timeout_unlink(&c->sub_timer);
        c->state = CONN_UP;
        c->backoff_ms = BACKOFF_MIN_MS;
        c->was_up = 1;
        update_gauges(c->l);
        if (cfg.on_subscribed)
            cfg.on_subscribed();
        __atomic_store_n(&sub_fd, ac->c.fd, __ATOMIC_SEQ_CST);
    } else if (strcmp(kind, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING) {
        if (cfg.on_message)
            cfg.on_message(reply->element[2]->str, reply->element[2]->len);
    }
}

static void conn_connect(conn_t *c)
{
    rloop_t *l = c->l;
    redisAsyncContext *ac = redisAsyncConnect(cfg.url.host, cfg.url.port);
    if (ac == NULL || ac->err) {
        if (ac != NULL)
            redisAsyncFree(ac);
        c->next_attempt_ms = util_now_ms() + c->backoff_ms;
        return;
    }
    ev_t *ev = calloc(1, sizeof(*ev));
    int fd = ev ? dup(ac->c.fd) : -1;
    if (fd < 0) {
        free(ev);
        redisAsyncFree(ac);
        c->next_attempt_ms = util_now_ms() + c->backoff_ms;
        return;
    }
    ev->conn = c;
    ev->ac = ac;
    ev->flush.cb = on_flush;
    ev->sock = h2o_evloop_socket_create(l->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    ev->sock->data = ev;
    ac->data = c;
    ac->ev.data = ev;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    c->ac = ac;
    c->ev = ev;
    c->state = CONN_CONNECTING;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* The set-up, pipelined behind the connect; each has the usual deadline, so a
     * server that accepts but never answers (stopped) is given up on in time. */
    if (cfg.url.password[0]) {
        const char *a3[] = {"AUTH", cfg.url.user, cfg.url.password};
        const char *a2[] = {"AUTH", cfg.url.password};
        if (cfg.url.user[0])
            handshake(c, on_handshake, 3, a3);
        else
            handshake(c, on_handshake, 2, a2);
    }
    if (c->subscriber) {
        if (c->ac != NULL && cfg.channel != NULL &&
            redisAsyncCommand(c->ac, on_sub_message, c, "SUBSCRIBE %s", cfg.channel) == REDIS_OK) {
            c->sub_timer.cb = on_sub_deadline;
            h2o_timeout_link(l->loop, &l->deadline, &c->sub_timer);
        }
        return;
    }
    if (cfg.url.db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", cfg.url.db);
        const char *a[] = {"SELECT", db};
        handshake(c, on_handshake, 2, a);
    }
    for (int i = 0; i < REDIS__SCRIPTS; i++)
        if (cfg.scripts[i] != NULL) {
            const char *a[] = {"SCRIPT", "LOAD", cfg.scripts[i]};
            handshake(c, on_handshake, 3, a);
        }
    const char *ping[] = {"PING"};
    handshake(c, on_ready, 1, ping);
}

/* ---- the loops ---- */

static void on_probe(void *arg, redisReply *reply, redis_status_t st)
{
    (void)arg;
    (void)reply;
    (void)st; /* reported to the breaker by on_reply */
}

void redis_worker_event(worker_t *w, int event)
{
    if (!enabled || w->idx >= nloops)
        return;
    rloop_t *l = &loops[w->idx];
    if (event == SERVER_WORKER_START) {
        l->w = w;
        l->loop = w->loop;
        h2o_timeout_init(l->loop, &l->deadline, (uint64_t)(cfg.timeout_ms > 0 ? cfg.timeout_ms : 50));
        h2o_timeout_init(l->loop, &l->zero, 0);
        redis_breaker_init(&l->breaker, BREAKER_THRESHOLD, BREAKER_COOLDOWN_MS, BREAKER_MAX_COOLDOWN_MS);
        l->cmd.l = l;
        l->cmd.backoff_ms = BACKOFF_MIN_MS;
        l->sub.l = l;
        l->sub.subscriber = w->idx == 0 && cfg.channel != NULL;
        l->sub.backoff_ms = BACKOFF_MIN_MS;
        /* Up until proven down: the first connect logs nothing unless it fails... */
        l->cmd.was_up = l->sub.was_up = 1;
        current = l;
        conn_connect(&l->cmd);
        if (l->sub.subscriber)
            conn_connect(&l->sub);
        /* ...but until the handshake is answered, decisions are local. */
        update_gauges(l);
    } else if (event == SERVER_WORKER_TICK) {
        int64_t now = util_now_ms();
        if (l->cmd.state == CONN_DOWN && now >= l->cmd.next_attempt_ms)
            conn_connect(&l->cmd);
        if (l->sub.subscriber && l->sub.state == CONN_DOWN && now >= l->sub.next_attempt_ms)
            conn_connect(&l->sub);
        /* An open breaker is probed with a PING once its cooldown has passed, so that
         * it closes (or backs off) whether or not requests come. */
        if (l->cmd.state == CONN_UP && l->breaker.state != REDIS_BREAKER_CLOSED) {
            const char *ping[] = {"PING"};
            size_t len[] = {4};
            redis_send(1, ping, len, REDIS_SEND_BREAKER, on_probe, NULL);
        }
        if (cfg.on_tick)
            cfg.on_tick(w, now);
        update_gauges(l);
    } else if (event == SERVER_WORKER_DRAIN) {
        if (cfg.on_drain)
            cfg.on_drain(w);
    } else if (event == SERVER_WORKER_END) {
        if (cfg.on_end)
            cfg.on_end(w);
        l->stopping = 1;
        conn_drop(&l->cmd, "shutting down");
        if (l->sub.subscriber)
            conn_drop(&l->sub, "shutting down");
        current = NULL;
    }
}

/* Whether a call with flags may go out now on l's command connection. A call the
 * breaker let through that cannot be sent is reported as failed, so that a
 * half-open breaker is never left waiting for a probe that never went. */
static int may_send(rloop_t *l, int flags)
{
    if (l == NULL || l->cmd.state != CONN_UP)
        return 0;
    if ((flags & REDIS_SEND_BREAKER) && !redis_breaker_allow(&l->breaker, util_now_ms())) {
        update_gauges(l);
        return 0;
    }
    return 1;
}

static void send_failed(rloop_t *l, int flags)
{
    if (flags & REDIS_SEND_BREAKER) {
        redis_breaker_failure(&l->breaker, util_now_ms());
        update_gauges(l);
    }
}

int redis_send(int argc, const char **argv, const size_t *lens, int flags, redis_reply_fn fn, void *arg)
{
    rloop_t *l = current;
    if (!may_send(l, flags))
        return -1;
    cmd_t *cmd = cmd_new(l, flags, fn, arg, 0);
    if (cmd == NULL || send_cmd(&l->cmd, cmd, argc, argv, lens) != 0) {
        free(cmd);
        send_failed(l, flags);
        return -1;
    }
    return 0;
}

int redis_eval(redis_script_t script, int nargs, int nkeys, const char **args, const size_t *lens, int flags,
               redis_reply_fn fn, void *arg)
{
    rloop_t *l = current;
    if (nargs > 16 || cfg.scripts[script] == NULL || !may_send(l, flags))
        return -1;
    /* One block: the command, then the arguments' pointers, lengths and bytes (kept
     * for the EVAL that follows a NOSCRIPT). */
    size_t bytes = 0;
    for (int i = 0; i < nargs; i++)
        bytes += lens[i] + 1;
    size_t extra = sizeof(char *) * (size_t)nargs + sizeof(size_t) * (size_t)nargs + bytes;
    cmd_t *cmd = cmd_new(l, flags, fn, arg, extra);
    if (cmd == NULL) {
        send_failed(l, flags);
        return -1;
    }
    cmd->script = (int)script;
    cmd->nargs = nargs;
    cmd->nkeys = nkeys;
    cmd->args = (const char **)(cmd + 1);
    cmd->lens = (size_t *)(cmd->args + nargs);
    char *p = (char *)(cmd->lens + nargs);
    for (int i = 0; i < nargs; i++) {
        memcpy(p, args[i], lens[i]);
        p[lens[i]] = '\0';
        cmd->args[i] = p;
        cmd->lens[i] = lens[i];
        p += lens[i] + 1;
    }
    const char *argv[19];
    size_t alen[19];
    char nk[16];
    argv[0] = "EVALSHA";
    alen[0] = 7;
    argv[1] = script_sha[script];
    alen[1] = 40;
    alen[2] = (size_t)snprintf(nk, sizeof(nk), "%d", nkeys);
    argv[2] = nk;
    for (int i = 0; i < nargs; i++) {
        argv[3 + i] = cmd->args[i];
        alen[3 + i] = cmd->lens[i];
    }
    if (send_cmd(&l->cmd, cmd, nargs + 3, argv, alen) != 0) {
        free(cmd);
        send_failed(l, flags);
        return -1;
    }
    return 0;
}
