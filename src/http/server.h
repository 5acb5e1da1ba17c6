/*
 * server — the HTTP/1.1 (+TLS) server on libh2o-evloop.
 *
 * N worker threads, each with its own event loop, its own SO_REUSEPORT listener,
 * its own store reader and a mailbox through which other threads (the writer, the
 * password pool, the main thread) hand it work. Requests are passed to one dispatch
 * function (the API's route table). server_stop() drains: listeners close,
 * keep-alive ends, in-flight requests finish until the grace period runs out.
 */
#ifndef BASALT_HTTP_SERVER_H
#define BASALT_HTTP_SERVER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <pthread.h>

#include "base/mailbox.h"
#include "store/store.h"

typedef struct req_ctx req_ctx_t;
struct worker;

typedef struct {
    char host[64];
    int port;
    int threads;
    size_t max_body;
    size_t max_json_depth;
    int grace_ms;
    const char *tls_cert, *tls_key;
    int batch_max_requests;
    int batch_timeout_ms;
    size_t max_filter_length;
    struct ratelimit *ratelimit; /* NULL: no rate limiting */
    struct cache *cache;         /* NULL: no cache */
    size_t max_header_bytes;
    int request_timeout_ms;
    size_t max_connections, max_connections_per_ip; /* 0: no cap */
    int gzip_level;                                 /* 0: no compression */
    size_t gzip_min_size;
    int metrics_access; /* 0 off, 1 loopback (or a superuser), 2 superusers only, 3 open */
    int rl_anon, rl_user, rl_burst, rl_auth;
    int64_t rl_period_ms;
    char trusted_proxies[512];
    char rl_collections[512];         /* "name=N,..." */
    void (*dispatch)(req_ctx_t *ctx); /* answers, or takes ownership via ctx_async_begin */
    /* Optional: told of each worker's life on its own thread (SERVER_WORKER_*), and
     * asked how many long-lived connections it still holds (drain waits for them). */
    void (*worker_hook)(struct worker *w, int event);
    size_t (*worker_busy)(struct worker *w);
    /* Optional: told of every response as it is sent (the request log), on the worker. */
    void (*on_response)(req_ctx_t *ctx);
    store_t *store;
    /* Listening sockets inherited from the process that handed over to this one (a
     * zero-downtime upgrade, app/upgrade.h): worker i takes inherit_fds[i] instead of
     * opening a socket, so no connection waiting in an accept queue is lost. threads
     * must be at least ninherit. */
    const int *inherit_fds;
    int ninherit;
} http_settings_t;

enum { SERVER_WORKER_START, SERVER_WORKER_TICK, SERVER_WORKER_DRAIN, SERVER_WORKER_END };
/* Also told: the worker's mailbox was drained (one loop turn's messages handled). */
enum { SERVER_WORKER_MAILBOX = SERVER_WORKER_END + 1 };

typedef struct worker {
    int idx;
    pthread_t thread;
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    mailbox_t mailbox;
    h2o_socket_t *mailbox_sock;
    store_conn_t *reader;
    int inflight;
    int conns;     /* client connections open on this loop (its thread only) */
    int listen_fd; /* the listener's descriptor while it is open, else -1 */
    int stop;
    uint64_t stop_deadline_ns;
    void *rt;             /* the realtime layer's state for this worker */
    void *auth_memo;      /* the API layer's verified tokens (api_check_token) */
    store_queue_t writes; /* jobs of this loop turn, submitted together after it */
    /* Set by a layer during a turn when it left work for the next one (a fan-out
     * written in slices): the next turn polls the sockets without waiting. */
    int more;
} worker_t;

/* The worker whose loop runs on the calling thread, or NULL (the main thread, the
 * writer, a read pool thread): for assertions that loop-owned state is touched only
 * on its loop. */
worker_t *server_current_worker(void);

/* Binds the listeners (so errors show before start-up completes) and starts the
 * workers. Returns 0 or -1 with a message on stderr. */
int server_start(const http_settings_t *settings);
/* Drains and joins the workers. */
void server_stop(void);
/* server_stop in two steps, for an upgrade: begin tells every worker to stop
 * accepting, to end keep-alive and to tell realtime clients to reconnect, and returns
 * at once; with wait_connections the workers then also wait (up to the grace period)
 * for every client connection to close after its last response, so no idle
 * keep-alive connection is cut while its client may be sending. finish joins them. */
void server_stop_begin(int wait_connections);
void server_stop_finish(void);
/* The listening descriptors (one per worker, while serving); returns their number. */
int server_listen_fds(int *out, int max);
const http_settings_t *worker_settings(void);
/* Open client connections counted against the caps. */
uint64_t server_connections(void);
/* Requests in flight over all workers (a racy read, for metrics). */
uint64_t server_inflight(void);
/* Worker idx, or NULL if there is none such. */
worker_t *server_worker(int idx);
/* The port actually bound (for --http=127.0.0.1:0). */
int server_port(void);
/* Draining (SIGTERM with --shutdown-drain-delay): readiness answers 503 while every
 * request is still served. Set once from the main thread; read by any worker. */
void server_set_draining(void);
int server_draining(void);

#endif
