/*
 * The ceiling of our HTTP stack: libh2o-evloop answering a fixed JSON body, with
 * the same thread/listener layout as basalt (one loop and SO_REUSEPORT listener
 * per thread). Benchmarks compare Basalt's routes with this.
 * Usage: h2o_bare PORT THREADS
 */
#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

static h2o_globalconf_t config;
static int port;
static const char body[] = "{\"message\":\"API is healthy.\",\"code\":200,\"data\":{}}";

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    req->res.content_length = sizeof(body) - 1;
    h2o_send_inline(req, body, sizeof(body) - 1);
    return 0;
}

typedef struct {
    h2o_evloop_t *loop;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept;
} worker_t;

static void on_accept(h2o_socket_t *listener, const char *err)
{
    worker_t *w = listener->data;
    h2o_socket_t *sock;
    if (err == NULL)
        while ((sock = h2o_evloop_socket_accept(listener)) != NULL)
            h2o_accept(&w->accept, sock);
}

static void *run(void *arg)
{
    worker_t *w = arg;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), on = 1;
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(0x7f000001)};
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 4096) != 0) {
        perror("listen");
        exit(1);
    }
    w->loop = h2o_evloop_create();
    h2o_context_init(&w->ctx, w->loop, &config);
    w->accept.ctx = &w->ctx;
    w->accept.hosts = config.hosts;
    h2o_socket_t *ls = h2o_evloop_socket_create(w->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    ls->data = w;
    h2o_socket_read_start(ls, on_accept);
    while (h2o_evloop_run(w->loop, INT32_MAX) == 0)
        ;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: h2o_bare PORT THREADS\n");
        return 2;
    }
    port = atoi(argv[1]);
    int n = atoi(argv[2]);
    signal(SIGPIPE, SIG_IGN);
    h2o_config_init(&config);
    h2o_hostconf_t *host = h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_create_handler(path, sizeof(h2o_handler_t))->on_req = on_req;
    pthread_t t[64];
    worker_t w[64] = {0};
    for (int i = 0; i < n && i < 64; i++)
        pthread_create(&t[i], NULL, run, &w[i]);
    for (int i = 0; i < n && i < 64; i++)
        pthread_join(t[i], NULL);
    return 0;
}
