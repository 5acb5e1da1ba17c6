#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "http/connlimit.h"
#include "http/context.h"
#include "http/reqcheck.h"

static http_settings_t settings;
static h2o_globalconf_t globalconf;
static SSL_CTX *ssl_ctx;
static worker_t *workers;
static int nworkers;
static int bound_port;
static int first_fd = -1;

const http_settings_t *worker_settings(void)
{
    return &settings;
}

worker_t *server_worker(int idx)
{
    return idx >= 0 && idx < settings.threads ? &workers[idx] : NULL;
}

int server_port(void)
{
    return bound_port;
}

uint64_t server_connections(void)
{
    return connlimit_total();
}

uint64_t server_inflight(void)
{
    uint64_t n = 0;
    for (int i = 0; i < nworkers; i++)
        n += (uint64_t)__atomic_load_n(&workers[i].inflight, __ATOMIC_RELAXED);
    return n;
}

static int refuse_over_cap(h2o_req_t *req);

/* Answers a refusal decided before routing, in PocketBase's error shape, and ends
 * the connection after it. */
static void send_and_close(h2o_req_t *req, int status, const char *reason, const char *body, size_t len)
{
    req->http1_is_persistent = 0;
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

/* Headers larger in all than max-header-bytes: 431, and the connection closes. */
static int refuse_large_headers(h2o_req_t *req)
{
    size_t n = req->path.len + req->method.len;
    for (size_t i = 0; i < req->headers.size; i++)
        n += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
    if (n <= settings.max_header_bytes)
        return 0;
    static const char body[] =
        "{\"status\":431,\"message\":\"The request headers are too large.\",\"data\":{}}";
    send_and_close(req, 431, "Request Header Fields Too Large", body, sizeof(body) - 1);
    return 1;
}

/* Framing and syntax that libh2o accepts or hides but a proxy may read another way
 * (http/reqcheck.h): 400, and the connection closes, so nothing that followed on it
 * (a request smuggled in a body another reader framed differently) is served.
 *
 * libh2o 2.2.5 gives the application neither Content-Length nor Transfer-Encoding,
 * and no trace of bare LFs or folded lines, so the check reads the request head
 * itself: while a request is processed, its head is still at the front of the
 * connection's input buffer (libh2o consumes it only once the response is done;
 * the body, if any, follows it and was decoded in place behind it). The method must
 * open the bytes found, or they are not this request's and it is refused too. */
static int refuse_bad_framing(h2o_req_t *req)
{
    if (req->version >= 0x200)
        return 0; /* no HTTP/2 listener exists (server_start) */
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    reqcheck_head_info_t info;
    reqcheck_head_t r = REQCHECK_INCOMPLETE;
    if (sock != NULL && sock->input != NULL) {
        r = reqcheck_head(sock->input->bytes, sock->input->size, &info);
        if (r == REQCHECK_OK &&
            (info.line_len <= req->method.len ||
             memcmp(sock->input->bytes + info.start, req->method.base, req->method.len) != 0 ||
             sock->input->bytes[info.start + req->method.len] != ' '))
            r = REQCHECK_INCOMPLETE;
    }
    if (r == REQCHECK_OK)
        return 0;
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"status\":400,\"message\":\"%s\",\"data\":{}}",
                     reqcheck_head_message(r));
    send_and_close(req, 400, "Bad Request", body, (size_t)n);
    return 1;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (refuse_over_cap(req) || refuse_bad_framing(req) || refuse_large_headers(req))
        return 0;
    worker_t *w = H2O_STRUCT_FROM_MEMBER(worker_t, ctx, req->conn->ctx);
    req_ctx_t *ctx = ctx_create(w, req);
    if (ctx == NULL) {
        h2o_send_error_503(req, "Service Unavailable", "out of memory", 0);
        return 0;
    }
    ctx_async_begin(ctx); /* the context outlives the handler, whatever it sends */
    settings.dispatch(ctx);
    ctx_async_end(ctx);
    return 0;
}

/* ---- connection caps ---- */

/* A connection over a cap is still accepted, tagged "refused", and its first
 * request answered 503 with Connection: close: answering after reading lets libh2o
 * close it cleanly (closing with an unread request would reset the connection and
 * could lose the answer). At most REFUSED_MAX such connections are held, each for at
 * most the request timeout; beyond that new ones are closed at once. */
#define REFUSED_MAX 256

typedef struct {
    char ip[48];
    int counted; /* holds a place in connlimit */
    worker_t *w; /* whose loop the connection lives on */
} conn_tag_t;

static int refused_pending;

static void on_socket_close(void *data)
{
    conn_tag_t *t = data;
    t->w->conns--;
    if (t->counted)
        connlimit_release(t->ip);
    else
        __atomic_sub_fetch(&refused_pending, 1, __ATOMIC_RELAXED);
    free(t);
}

static void peer_address(h2o_socket_t *sock, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = h2o_socket_getpeername(sock, (struct sockaddr *)&ss);
    out[0] = '\0';
    if (sl > 0 && ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)cap);
    else if (sl > 0 && ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)cap);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    worker_t *w = listener->data;
    if (err != NULL)
        return;
    for (int i = 0; i < 64 && !w->stop; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        conn_tag_t *tag = malloc(sizeof(*tag));
        if (tag == NULL) {
            h2o_socket_close(sock);
            continue;
        }
        peer_address(sock, tag->ip, sizeof(tag->ip));
        tag->counted = connlimit_acquire(tag->ip, settings.max_connections, settings.max_connections_per_ip);
        if (!tag->counted && __atomic_add_fetch(&refused_pending, 1, __ATOMIC_RELAXED) > REFUSED_MAX) {
            __atomic_sub_fetch(&refused_pending, 1, __ATOMIC_RELAXED);
            free(tag);
            h2o_socket_close(sock);
            continue;
        }
        sock->on_close.cb = on_socket_close;
        sock->on_close.data = tag;
        tag->w = w;
        w->conns++;
        h2o_accept(&w->accept_ctx, sock);
    }
}

/* Answers 503 and closes when the request came on a connection over a cap. */
static int refuse_over_cap(h2o_req_t *req)
{
    h2o_socket_t *sock =
        req->conn->callbacks->get_socket ? req->conn->callbacks->get_socket(req->conn) : NULL;
    if (sock == NULL || sock->on_close.cb != on_socket_close || ((conn_tag_t *)sock->on_close.data)->counted)
        return 0;
    static const char body[] =
        "{\"status\":503,\"message\":\"Too many connections; retry, or close idle ones.\","
        "\"data\":{}}";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("1"));
    send_and_close(req, 503, "Service Unavailable", body, sizeof(body) - 1);
    return 1;
}

static void on_mailbox(h2o_socket_t *sock, const char *err)
{
    worker_t *w = sock->data;
    if (err == NULL) {
        mailbox_drain(&w->mailbox);
        if (settings.worker_hook)
            settings.worker_hook(w, SERVER_WORKER_MAILBOX);
    }
}

static int open_listener(void)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof(port), "%d", bound_port ? bound_port : settings.port);
    int rc = getaddrinfo(settings.host[0] ? settings.host : NULL, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "basalt: cannot resolve --http address %s: %s\n", settings.host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        fprintf(stderr, "basalt: cannot listen on %s:%s: %s\n", settings.host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    if (bound_port == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                    : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

/* Takes over a listening socket inherited from the process that upgraded to this
 * one: it must be a listening stream socket; its port becomes the bound port (the
 * workers beyond the inherited ones open theirs on it, in the same SO_REUSEPORT
 * group). Returns fd or -1 with a message. */
static int adopt_listener(int fd)
{
    int on = 0;
    socklen_t len = sizeof(on);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) != 0 || !on) {
        fprintf(stderr, "basalt: inherited descriptor %d is not a listening socket\n", fd);
        return -1;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        fprintf(stderr, "basalt: cannot adopt inherited socket %d: %s\n", fd, strerror(errno));
        return -1;
    }
    if (bound_port == 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                    : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return fd;
}

static __thread worker_t *current_worker;
/* Set by server_stop_begin(1): drain waits for client connections to close too. */
static int drain_connections;

worker_t *server_current_worker(void)
{
    return current_worker;
}

static void *worker_main(void *arg)
{
    util_thread_name("worker");
    worker_t *w = arg;
    current_worker = w;
    if (settings.worker_hook)
        settings.worker_hook(w, SERVER_WORKER_START);
    while (!w->stop || ((w->inflight > 0 || (settings.worker_busy && settings.worker_busy(w) > 0) ||
                         (__atomic_load_n(&drain_connections, __ATOMIC_RELAXED) && w->conns > 0)) &&
                        util_mono_ns() < w->stop_deadline_ns)) {
        int32_t wait_ms = w->more ? 0 : 50;
        w->more = 0;
        h2o_evloop_run(w->loop, wait_ms);
        if (settings.worker_hook)
            settings.worker_hook(w, SERVER_WORKER_TICK);
        /* The turn's writes go to the writer together: one wake-up, one commit. Every
         * turn ends here, so no job is left behind when the loop stops (the loop runs
         * on while jobs are in flight). */
        if (w->writes.head != NULL)
            store_submit_queue(settings.store, &w->writes);
        /* The same for reads that go to a pool (PostgreSQL): one hand-over per turn. */
        store_read_flush(settings.store, w->idx);
        ctx_flush_access_log(0);
        store_reader_release(w->reader);
    }
    if (settings.worker_hook)
        settings.worker_hook(w, SERVER_WORKER_END);
    ctx_flush_access_log(1);
    return NULL;
}

typedef struct {
    mailbox_msg_t msg;
    worker_t *w;
} stop_msg_t;

static void deliver_stop(mailbox_msg_t *m)
{
    stop_msg_t *sm = (stop_msg_t *)m;
    worker_t *w = sm->w;
    free(sm);
    if (w->listener != NULL) {
        h2o_socket_read_stop(w->listener);
        h2o_socket_close(w->listener);
        w->listener = NULL;
        w->listen_fd = -1;
    }
    /* Keep-alive ends with the next response of each connection. */
    h2o_context_request_shutdown(&w->ctx);
    w->stop_deadline_ns = util_mono_ns() + (uint64_t)settings.grace_ms * 1000000u;
    w->stop = 1;
    if (settings.worker_hook)
        settings.worker_hook(w, SERVER_WORKER_DRAIN);
}

int server_start(const http_settings_t *s)
{
    settings = *s;
    signal(SIGPIPE, SIG_IGN);
    /* Past a file-size limit, writes must fail with EFBIG (answered as an error),
     * not kill the process. */
    signal(SIGXFSZ, SIG_IGN);
    h2o_config_init(&globalconf);
    /* HTTP/2 is off on every listener: libh2o 2.2 has no defence against Rapid
     * Reset (CVE-2023-44487) and gets no fixes. This refuses the "PRI * HTTP/2.0"
     * preface (400) and ignores "Upgrade: h2c"; ALPN offers http/1.1 only (below).
     * HTTP/2 belongs at the proxy in front. */
    globalconf.http1.upgrade_to_http2 = 0;
    /* No "Server: h2o/2.2.5": the answers do not tell the library and its version
     * (an empty name makes libh2o leave the header out). */
    globalconf.server_name = h2o_iovec_init(H2O_STRLIT(""));
    globalconf.max_request_entity_size = settings.max_body;
    /* Reading a request (slow senders) and waiting on an idle keep-alive connection
     * share libh2o's request timeout. */
    globalconf.http1.req_timeout = (uint64_t)settings.request_timeout_ms;
    h2o_hostconf_t *host =
        h2o_config_register_host(&globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = on_req;
    if (settings.gzip_level > 0) {
        /* libh2o's output filter: gzip for clients that accept it, above a size
         * (this libh2o is built without brotli). */
        h2o_compress_args_t ca = {.min_size = settings.gzip_min_size};
        ca.gzip.quality = settings.gzip_level;
        ca.brotli.quality = -1;
        h2o_compress_register(path, &ca);
    }
    if (settings.tls_cert && settings.tls_cert[0]) {
        ssl_ctx = SSL_CTX_new(TLS_server_method());
        SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
        SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_COMPRESSION);
        if (SSL_CTX_use_certificate_chain_file(ssl_ctx, settings.tls_cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(ssl_ctx, settings.tls_key, SSL_FILETYPE_PEM) != 1) {
            fprintf(stderr, "basalt: cannot load the TLS certificate %s or key %s\n", settings.tls_cert,
                    settings.tls_key ? settings.tls_key : "(none)");
            return -1;
        }
        /* HTTP/2 stays off: only http/1.1 is offered through ALPN, so "h2" is never
         * selected (a client offering only h2 gets no protocol and HTTP/1.1). */
        static const h2o_iovec_t alpn[] = {{H2O_STRLIT("http/1.1")}, {NULL, 0}};
        h2o_ssl_register_alpn_protocols(ssl_ctx, alpn);
    }
    nworkers = settings.threads > 0 ? settings.threads : 1;
    workers = calloc((size_t)nworkers, sizeof(*workers));
    if (workers == NULL)
        return -1;
    for (int i = 0; i < nworkers; i++) {
        worker_t *w = &workers[i];
        w->idx = i;
        int fd = i < settings.ninherit ? adopt_listener(settings.inherit_fds[i]) : open_listener();
        if (fd < 0)
            return -1;
        w->listen_fd = fd;
        if (first_fd < 0)
            first_fd = fd;
        w->loop = h2o_evloop_create();
        store_queue_init(&w->writes);
        h2o_context_init(&w->ctx, w->loop, &globalconf);
        w->accept_ctx.ctx = &w->ctx;
        w->accept_ctx.hosts = globalconf.hosts;
        w->accept_ctx.ssl_ctx = ssl_ctx;
        w->listener = h2o_evloop_socket_create(w->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        w->listener->data = w;
        h2o_socket_read_start(w->listener, on_accept);
        if (mailbox_init(&w->mailbox) != 0) {
            fprintf(stderr, "basalt: cannot create an eventfd: %s\n", strerror(errno));
            return -1;
        }
        w->mailbox_sock = h2o_evloop_socket_create(w->loop, dup(w->mailbox.efd), H2O_SOCKET_FLAG_DONT_READ);
        w->mailbox_sock->data = w;
        h2o_socket_read_start(w->mailbox_sock, on_mailbox);
        w->reader = store_reader(settings.store, i);
    }
    for (int i = 0; i < nworkers; i++)
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0)
            return -1;
    return 0;
}

int server_listen_fds(int *out, int max)
{
    int n = 0;
    for (int i = 0; i < nworkers && n < max; i++)
        if (workers[i].listen_fd >= 0)
            out[n++] = workers[i].listen_fd;
    return n;
}

static int draining;

void server_set_draining(void)
{
    __atomic_store_n(&draining, 1, __ATOMIC_RELEASE);
}

int server_draining(void)
{
    return __atomic_load_n(&draining, __ATOMIC_ACQUIRE);
}

void server_stop(void)
{
    server_stop_begin(0);
    server_stop_finish();
}

void server_stop_begin(int wait_connections)
{
    __atomic_store_n(&drain_connections, wait_connections, __ATOMIC_RELAXED);
    for (int i = 0; i < nworkers; i++) {
        stop_msg_t *m = calloc(1, sizeof(*m));
        if (m == NULL)
            continue;
        m->msg.deliver = deliver_stop;
        m->w = &workers[i];
        mailbox_post(&workers[i].mailbox, &m->msg);
    }
}

void server_stop_finish(void)
{
    for (int i = 0; i < nworkers; i++)
        pthread_join(workers[i].thread, NULL);
    for (int i = 0; i < nworkers; i++) {
        worker_t *w = &workers[i];
        if (w->inflight > 0)
            LOGF(LOG_WARN, "http", "worker %d stopped with %d requests unfinished after the grace period", i,
                 w->inflight);
        /* Connections still open are dropped with the process; the loops are not
         * destroyed because libh2o 2.2 has no safe teardown for live connections. */
        mailbox_destroy(&w->mailbox);
    }
}
