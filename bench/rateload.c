/*
 * rateload — a constant-rate (open-loop) HTTP/1.1 load generator, for benchmarks only.
 *
 *   rateload [-c CONNS] [-r RATE] [-d SECONDS] [-w WARMUP] [-m METHOD] [-b BODY] [-H HEADER]... URL
 *
 * Requests are due at fixed intervals (RATE per second) whatever the server does; each
 * of CONNS keep-alive connections carries one request at a time. A request's latency is
 * measured from the time it was due, not from the time a connection became free, so a
 * server that falls behind shows the whole queueing delay (no coordinated omission, as in
 * wrk2). "{n}" in BODY is replaced by a counter. Responses that arrive during the first
 * WARMUP seconds (default 1) are not counted; every later one is, with its latency from
 * its due time, so a backlog built during the warm-up still shows. Prints one line of
 * key=value pairs: achieved is the rate of responses after the warm-up, all counts every
 * response (for CPU per request).
 *
 * One thread, epoll, non-blocking sockets to 127.0.0.1 (loopback only).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    int busy;       /* a request is in flight */
    int64_t due_us; /* when the in-flight request was due */
    char buf[65536];
    size_t len;
} conn_t;

static int port;
static char host[64] = "127.0.0.1";
static char path[2048] = "/";
static const char *method = "GET", *body_tmpl;
static char headers[4096];
static size_t headers_len;
static int64_t *lat;
static size_t nlat, cap_lat;
static uint64_t ok, bad, conn_errors, all;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int parse_url(const char *url)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7, *colon = strchr(h, ':'), *slash = strchr(h, '/');
    if (colon == NULL || (slash != NULL && slash < colon))
        return -1;
    size_t hl = (size_t)(colon - h);
    if (hl >= sizeof(host))
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    port = atoi(colon + 1);
    if (slash != NULL) {
        if (strlen(slash) >= sizeof(path))
            return -1;
        strcpy(path, slash);
    }
    return port > 0 ? 0 : -1;
}

static int connect_one(int ep, conn_t *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &dst.sin_addr) != 1)
        dst.sin_addr.s_addr = htonl(0x7F000001u);
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->busy = 0;
    c->len = 0;
    struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    return 0;
}

static void drop(int ep, conn_t *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->busy)
        bad++;
    c->busy = 0;
    conn_errors++;
}

static void record(int64_t due, int64_t warm_end, int status)
{
    all++;
    if (now_us() < warm_end)
        return;
    if (status >= 200 && status < 300)
        ok++;
    else
        bad++;
    if (nlat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 1 << 16;
        int64_t *n = realloc(lat, cap_lat * sizeof(*lat));
        if (n == NULL) {
            perror("realloc");
            exit(1);
        }
        lat = n;
    }
    lat[nlat++] = now_us() - due;
}

/* Sends one request on an idle connection (blocking write of a small request). */
static int send_request(conn_t *c, uint64_t n, int64_t due)
{
    char req[8192], body[4096];
    int bl = 0;
    if (body_tmpl != NULL) {
        const char *p = strstr(body_tmpl, "{n}");
        if (p != NULL)
            bl = snprintf(body, sizeof(body), "%.*s%llu%s", (int)(p - body_tmpl), body_tmpl,
                          (unsigned long long)n, p + 3);
        else
            bl = snprintf(body, sizeof(body), "%s", body_tmpl);
    }
    int rl = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%.*s", method, path, host, port,
                      (int)headers_len, headers);
    if (body_tmpl != NULL)
        rl += snprintf(req + rl, sizeof(req) - (size_t)rl, "Content-Length: %d\r\n\r\n%s", bl, body);
    else
        rl += snprintf(req + rl, sizeof(req) - (size_t)rl, "\r\n");
    if (write(c->fd, req, (size_t)rl) != rl)
        return -1;
    c->busy = 1;
    c->due_us = due;
    return 0;
}

/* Consumes one complete response from c->buf if there is one; returns its status or 0. */
static int take_response(conn_t *c)
{
    char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (e == NULL)
        return 0;
    size_t hl = (size_t)(e + 4 - c->buf), total;
    int status = c->len > 12 ? atoi(c->buf + 9) : 0;
    char *cl = memmem(c->buf, hl, "\r\ncontent-length:", 17);
    if (cl == NULL)
        cl = memmem(c->buf, hl, "\r\nContent-Length:", 17);
    if (status == 204 || status == 304) {
        total = hl; /* never a body */
    } else if (cl != NULL) {
        total = hl + strtoul(cl + 17, NULL, 10);
    } else {
        /* chunked: the response ends with the last chunk */
        char *end = memmem(c->buf + hl, c->len - hl, "0\r\n\r\n", 5);
        if (end == NULL)
            return 0;
        total = (size_t)(end + 5 - c->buf);
    }
    if (c->len < total)
        return 0;
    memmove(c->buf, c->buf + total, c->len - total);
    c->len -= total;
    return status > 0 ? status : 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: rateload [-c CONNS] [-r RATE] [-d SECONDS] [-w WARMUP] [-m METHOD] [-b BODY] "
                    "[-H 'Name: value']... http://127.0.0.1:PORT/PATH\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int conns = 64, opt;
    double rate = 1000, secs = 10, warm = 1;
    while ((opt = getopt(argc, argv, "c:r:d:w:m:b:H:")) != -1) {
        switch (opt) {
        case 'c':
            conns = atoi(optarg);
            break;
        case 'r':
            rate = atof(optarg);
            break;
        case 'd':
            secs = atof(optarg);
            break;
        case 'w':
            warm = atof(optarg);
            break;
        case 'm':
            method = optarg;
            break;
        case 'b':
            body_tmpl = optarg;
            break;
        case 'H': {
            size_t l = strlen(optarg);
            if (headers_len + l + 2 >= sizeof(headers))
                usage();
            memcpy(headers + headers_len, optarg, l);
            memcpy(headers + headers_len + l, "\r\n", 2);
            headers_len += l + 2;
            break;
        }
        default:
            usage();
        }
    }
    if (optind != argc - 1 || parse_url(argv[optind]) != 0 || conns < 1 || rate <= 0 || secs <= 0)
        usage();
    signal(SIGPIPE, SIG_IGN);
    int ep = epoll_create1(0);
    conn_t *cs = calloc((size_t)conns, sizeof(*cs));
    if (ep < 0 || cs == NULL) {
        perror("rateload");
        return 1;
    }
    for (int i = 0; i < conns; i++)
        if (connect_one(ep, &cs[i]) != 0)
            conn_errors++;
    int64_t start = now_us() + 100000; /* let the connections finish */
    int64_t end = start + (int64_t)(secs * 1e6), warm_end = start + (int64_t)(warm * 1e6);
    double interval = 1e6 / rate;
    uint64_t sent = 0;
    struct epoll_event evs[256];
    int next_free = 0;
    for (;;) {
        int64_t now = now_us();
        int inflight = 0;
        for (int i = 0; i < conns; i++)
            inflight += cs[i].busy;
        if (now >= end + 2000000 || (now >= end && inflight == 0))
            break;
        /* Send every request that is due, as long as a connection is free. */
        while (now < end) {
            int64_t due = start + (int64_t)((double)sent * interval);
            if (due > now)
                break;
            int found = -1;
            for (int k = 0; k < conns; k++) {
                int i = (next_free + k) % conns;
                if (cs[i].fd < 0)
                    connect_one(ep, &cs[i]);
                if (cs[i].fd >= 0 && !cs[i].busy) {
                    found = i;
                    break;
                }
            }
            if (found < 0)
                break; /* all connections busy: the request waits, its latency grows */
            next_free = (found + 1) % conns;
            if (send_request(&cs[found], sent, due) != 0) {
                drop(ep, &cs[found]);
                continue;
            }
            sent++;
        }
        int64_t next_due = start + (int64_t)((double)sent * interval);
        int timeout = now >= end ? 10 : (int)((next_due - now_us()) / 1000);
        if (timeout < 0)
            timeout = 0;
        int k = epoll_wait(ep, evs, 256, timeout);
        for (int j = 0; j < k; j++) {
            conn_t *c = evs[j].data.ptr;
            if (c->fd < 0)
                continue;
            ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                drop(ep, c);
                continue;
            }
            c->len += (size_t)r;
            int status;
            while (c->busy && (status = take_response(c)) != 0) {
                record(c->due_us, warm_end, status);
                c->busy = 0;
            }
            if (c->len == sizeof(c->buf)) /* a response larger than the buffer */
                drop(ep, c);
        }
    }
    for (int i = 0; i < conns; i++)
        if (cs[i].fd >= 0) {
            if (cs[i].busy)
                bad++; /* no answer within 2 s of the end */
            close(cs[i].fd);
        }
    qsort(lat, nlat, sizeof(*lat), cmp_i64);
    double measured = secs - warm;
    double pct[] = {50, 90, 99, 99.9};
    printf("target=%.0f achieved=%.0f ok=%llu errors=%llu conn_errors=%llu all=%llu", rate,
           (double)(ok + bad) / (measured > 0 ? measured : secs), (unsigned long long)ok,
           (unsigned long long)bad, (unsigned long long)conn_errors, (unsigned long long)all);
    for (int i = 0; i < 4; i++) {
        double v = nlat ? (double)lat[(size_t)((double)(nlat - 1) * pct[i] / 100)] / 1000 : 0;
        printf(" p%g=%.3f", pct[i], v);
    }
    printf(" max=%.3f\n", nlat ? (double)lat[nlat - 1] / 1000 : 0);
    free(lat);
    free(cs);
    close(ep);
    return 0;
}
