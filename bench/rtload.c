/*
 * rtload — Basalt's realtime load generator (WebSocket), for benchmarks only.
 *
 *   rtload idle   PORT N                 hold N idle subscribed connections, print when all
 *                                        are up, then wait for SIGTERM/SIGINT
 *   rtload fanout PORT N EVENTS RATE TOKEN
 *                                        N subscribers of bench/<all>; EVENTS records created at
 *                                        RATE per second through the API with TOKEN (a
 *                                        superuser's); prints deliveries per second and the
 *                                        publish-to-deliver latency p50/p99
 *   RTLOAD_PORTS=P1,P2,... (fanout)      subscriber i connects to the (i mod n)-th of these ports
 *                                        (instances of one cluster); the writes still go to PORT
 *
 * The creates go, by default, one at a time on one connection, each waiting for its
 * answer (a closed loop: a server busy with a fan-out receives the next create only
 * after answering the last, so it never has two events at once). RTLOAD_WRITERS=W
 * (W > 0) sends them open loop instead, at their due times whatever the answers, over
 * W keep-alive connections in turn (pipelined when one has not answered yet): several
 * writers, as an application has, so events may reach the server faster than it
 * fans them out, and the backlog shows in the latency.
 *
 * Connections come from 127.0.0.2, .3, ... (20,000 each; 127.0.0.1 is left to the tests) so that more than
 * one source port range is available. One thread, epoll, non-blocking sockets. The latency is measured from
 * the wall-clock time the writer put into the record (field "t", microseconds) to the time the subscriber
 * parsed the event.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    int state; /* 0 handshake, 1 waiting for "subscribed", 2 ready */
    char buf[8192];
    size_t len;
} conn_t;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static volatile sig_atomic_t stop;
static void on_signal(int s)
{
    (void)s;
    stop = 1;
}

static int connect_from(int port, int i)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7F000002u + (uint32_t)(i / 20000));
    /* The port is chosen at connect (unique per destination), not reserved by bind for
     * every address: thousands of bound ports, and their TIME_WAIT after the run, would
     * otherwise leave the machine's other clients (curl, psql) without a port. */
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
        close(fd);
        return -1;
    }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    dst.sin_addr.s_addr = htonl(0x7F000001u);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The port subscriber i connects to: PORT, or one of RTLOAD_PORTS in turn
 * (bench/harness.py: subscribers spread over a cluster's instances). */
static int sub_port(int port, int i)
{
    static int ports[16], nports = -1;
    if (nports < 0) {
        nports = 0;
        const char *e = getenv("RTLOAD_PORTS");
        while (e != NULL && *e && nports < 16) {
            char *end;
            long v = strtol(e, &end, 10);
            if (end == e || v <= 0 || v > 65535)
                break;
            ports[nports++] = (int)v;
            e = *end == ',' ? end + 1 : end;
        }
    }
    return nports > 0 ? ports[i % nports] : port;
}

/* A masked text frame. */
static void send_text(int fd, const char *s)
{
    size_t n = strlen(s);
    unsigned char f[512];
    f[0] = 0x81;
    f[1] = (unsigned char)(0x80 | n);
    memset(f + 2, 0, 4); /* a zero mask: the payload goes as it is */
    memcpy(f + 6, s, n);
    if (write(fd, f, n + 6) < 0)
        perror("write");
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t *lat;
static size_t nlat, cap_lat;
static uint64_t deliveries;

/* Consumes complete frames; returns 1 when the handshake/subscription advanced. */
static void on_data(conn_t *c)
{
    for (;;) {
        if (c->state == 0) {
            char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (e == NULL)
                return;
            size_t hl = (size_t)(e + 4 - c->buf);
            memmove(c->buf, c->buf + hl, c->len - hl);
            c->len -= hl;
            /* RTLOAD_TOPIC (bench/shop.py: the inventory collection) replaces the default topic. */
            const char *topic = getenv("RTLOAD_TOPIC");
            char msg[256];
            snprintf(msg, sizeof(msg), "{\"type\":\"subscribe\",\"topics\":[\"%s\"]}",
                     topic != NULL && strlen(topic) < 128 && strchr(topic, '"') == NULL ? topic : "bench/*");
            send_text(c->fd, msg);
            c->state = 1;
            continue;
        }
        if (c->len < 2)
            return;
        size_t n = c->buf[1] & 0x7F, h = 2;
        if (n == 126) {
            if (c->len < 4)
                return;
            n = (size_t)((unsigned char)c->buf[2] << 8 | (unsigned char)c->buf[3]);
            h = 4;
        } else if (n == 127) {
            return; /* not expected here */
        }
        if (c->len < h + n)
            return;
        int op = c->buf[0] & 0x0F;
        char *p = c->buf + h;
        if (op == 0x9) { /* ping: pong with a zero mask */
            unsigned char f[6] = {0x8A, 0x80, 0, 0, 0, 0};
            if (write(c->fd, f, 6) < 0)
                perror("write");
        } else if (op == 0x1) {
            if (c->state == 1 && memmem(p, n, "\"subscribed\"", 12))
                c->state = 2;
            char *t = memmem(p, n, "\"t\":", 4);
            if (t != NULL && memmem(p, n, "\"event\"", 7)) {
                int64_t sent = strtoll(t + 4, NULL, 10);
                if (nlat == cap_lat) {
                    cap_lat = cap_lat ? cap_lat * 2 : 1 << 20;
                    lat = realloc(lat, cap_lat * sizeof(*lat));
                }
                lat[nlat++] = now_us() - sent;
                deliveries++;
            }
        }
        memmove(c->buf, c->buf + h + n, c->len - h - n);
        c->len -= h + n;
    }
}

/* Reads what is ready on the connections; returns how many had data. */
static int pump(int ep, int timeout_ms)
{
    struct epoll_event evs[512];
    int k = epoll_wait(ep, evs, 512, timeout_ms), got = 0;
    for (int j = 0; j < k; j++) {
        conn_t *c = evs[j].data.ptr;
        ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (r > 0) {
            c->len += (size_t)r;
            on_data(c);
            got++;
        }
    }
    return got;
}

static void raise_nofile(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
}

/* One blocking keep-alive HTTP connection for the writes. */
static int http_fd(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    /* From an address of its own, like the subscribers: the ports of 127.0.0.1 may all
     * be taken (TIME_WAIT) right after a closed-loop benchmark. */
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7F0000FEu); /* 127.0.0.254 */
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    dst.sin_addr.s_addr = htonl(0x7F000001u);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof(src)) != 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
        perror("rtload: connecting for writes");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Sends one create without waiting for the answer (open loop, RTLOAD_WRITERS). */
static void http_create_nowait(int fd, const char *token)
{
    char body[128], req[1024];
    int bl = snprintf(body, sizeof(body), "{\"t\":%lld}", (long long)now_us());
    int rl = snprintf(req, sizeof(req),
                      "POST /api/collections/bench/records HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                      token, bl, body);
    /* Blocking socket: a request is small, it waits only if the server stops reading. */
    if (write(fd, req, (size_t)rl) < 0)
        perror("write");
}

/* Reads and drops whatever answers arrived on the writers' connections. */
static void drain_answers(const int *fds, int n)
{
    char resp[16384];
    for (int i = 0; i < n; i++)
        while (recv(fds[i], resp, sizeof(resp), MSG_DONTWAIT) > 0)
            ;
}

static void http_create(int fd, const char *token)
{
    char body[128], req[1024], resp[4096];
    int bl = snprintf(body, sizeof(body), "{\"t\":%lld}", (long long)now_us());
    int rl = snprintf(req, sizeof(req),
                      "POST /api/collections/bench/records HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                      token, bl, body);
    if (write(fd, req, (size_t)rl) < 0)
        perror("write");
    ssize_t r = read(fd, resp, sizeof(resp)); /* small answers: one read */
    (void)r;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: rtload idle PORT N | rtload fanout PORT N EVENTS RATE TOKEN\n");
        return 2;
    }
    int fanout = strcmp(argv[1], "fanout") == 0;
    int port = atoi(argv[2]), n = atoi(argv[3]);
    raise_nofile();
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    int ep = epoll_create1(0);
    conn_t *cs = calloc((size_t)n, sizeof(*cs));
    int up = 0, failed = 0;
    int64_t t0 = now_us();
    struct epoll_event evs[512];
    /* Connections open in waves of 1000, each finishing its handshake and
     * subscription before the next, so that the listen backlog never overflows. */
    const char *hs =
        "GET /api/realtime/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    int ready = 0;
    for (int base = 0; base < n && !stop; base += 1000) {
        int end = base + 1000 < n ? base + 1000 : n;
        for (int i = base; i < end; i++) {
            /* fan-out runs take other source addresses than idle runs, away from
             * the ports an idle run left in TIME_WAIT */
            cs[i].fd = connect_from(fanout ? sub_port(port, i) : port, fanout ? i + 100000 : i);
            if (cs[i].fd < 0) {
                failed++;
                continue;
            }
            struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.ptr = &cs[i]};
            epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &e);
        }
        int64_t wave_start = now_us();
        while (!stop && ready + failed < end && now_us() - wave_start < 30 * 1000000LL) {
            int k = epoll_wait(ep, evs, 512, 1000);
            for (int j = 0; j < k; j++) {
                conn_t *c = evs[j].data.ptr;
                if (evs[j].events & (EPOLLERR | EPOLLHUP)) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    c->fd = -1;
                    failed++;
                    continue;
                }
                if (evs[j].events & EPOLLOUT) {
                    if (write(c->fd, hs, strlen(hs)) < 0)
                        perror("write");
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
                    up++;
                }
                if (evs[j].events & EPOLLIN) {
                    ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
                    if (r <= 0)
                        continue;
                    c->len += (size_t)r;
                    int before = c->state;
                    on_data(c);
                    if (before != 2 && c->state == 2)
                        ready++;
                }
            }
        }
    }
    printf("connected %d subscribed %d failed %d in %.1f s\n", up, ready, failed,
           (double)(now_us() - t0) / 1e6);
    fflush(stdout);
    if (!fanout) {
        /* Idle: answer pings until told to stop. */
        while (!stop)
            pump(ep, 1000);
        return 0;
    }
    int events = atoi(argv[4]);
    double rate = atof(argv[5]);
    const char *token = argv[6];
    int hfd = http_fd(port);
    if (hfd < 0) {
        return 1;
    }
    const char *wenv = getenv("RTLOAD_WRITERS");
    int writers = wenv != NULL ? atoi(wenv) : 0;
    if (writers > 64)
        writers = 64;
    int wfds[64];
    for (int i = 0; i < writers; i++)
        if ((wfds[i] = i == 0 ? hfd : http_fd(port)) < 0)
            return 1;
    int64_t start = now_us(), interval = (int64_t)(1e6 / rate);
    int sent = 0;
    uint64_t want = (uint64_t)events * (uint64_t)ready;
    int64_t last_delivery = now_us();
    while (!stop && (deliveries < want) && now_us() - last_delivery < 5000000) {
        if (sent < events && now_us() >= start + sent * interval) {
            if (writers > 0)
                http_create_nowait(wfds[sent % writers], token);
            else
                http_create(hfd, token);
            sent++;
            /* A server slow to answer is measured (its latency shows it), not cut off:
             * the 5 s of silence count from the last answer or delivery. */
            last_delivery = now_us();
        }
        if (writers > 0)
            drain_answers(wfds, writers);
        if (pump(ep, 0) > 0)
            last_delivery = now_us();
    }
    double secs = (double)(last_delivery - start) / 1e6;
    qsort(lat, nlat, sizeof(*lat), cmp_i64);
    printf("events %d (%s) subscribers %d deliveries %llu of %llu in %.2f s = %.0f deliveries/s; latency p50 "
           "%.2f ms "
           "p99 %.2f ms\n",
           sent, writers > 0 ? "open loop" : "closed loop", ready, (unsigned long long)deliveries,
           (unsigned long long)want, secs, (double)deliveries / secs, nlat ? (double)lat[nlat / 2] / 1000 : 0,
           nlat ? (double)lat[nlat * 99 / 100] / 1000 : 0);
    return 0;
}
