/*
 * shopload — an open-loop (constant-rate) HTTP/1.1 load generator for a mix of
 * requests, for the shop benchmark only (bench/shop.py).
 *
 *   shopload [-c CONNS] [-r RATE] [-d SECONDS] [-w WARMUP] [-n START] -f REQUESTS http://127.0.0.1:PORT
 *
 * REQUESTS holds one request a line, tab-separated: KIND METHOD PATH AUTH BODY, where
 * AUTH and BODY are "-" for none and "{n}" in PATH or BODY is replaced by a counter
 * of 13 digits unique within the run, from START (-n; new record ids for checkouts:
 * "zz{n}" is a 15-character id). The lines are sent in file
 * order, again from the top when the file ends, so the file is the mix (bench/shop.py
 * writes it shuffled, from a seed). Requests are due at fixed intervals (RATE per
 * second) whatever the server does; each of CONNS keep-alive connections (the
 * simulated users' connections) carries one request at a time; latency is measured
 * from the due time (no coordinated omission), as bench/rateload.c does for one URL.
 *
 * Prints one line per KIND and one "kind=all" line of key=value pairs: count, errors
 * (non-2xx or no answer), p50/p90/p99/max in ms. The first failed answer of each kind
 * is shown on stderr (status and the start of the body) so that an error is explained.
 *
 * One thread, epoll, non-blocking sockets to 127.0.0.1 (loopback only).
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MAX_KINDS = 16, BUF = 262144 };

typedef struct {
    char *method, *path, *auth, *body;
    int kind;
} req_t;

typedef struct {
    char name[32];
    int64_t *lat;
    size_t n, cap;
    uint64_t ok, bad;
    int shown; /* the first error was printed */
} kind_t;

typedef struct {
    int fd;
    int busy, kind, used;
    const void *req; /* the request in flight and its counter, to send it again */
    uint64_t n;
    int64_t due_us;
    char *buf; /* BUF bytes, owned */
    size_t len;
} conn_t;

static int port;
static kind_t kinds[MAX_KINDS];
static int nkinds;
static req_t *reqs;
static size_t nreqs;
static uint64_t conn_errors, resent;

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

static int kind_of(const char *name)
{
    for (int i = 0; i < nkinds; i++)
        if (strcmp(kinds[i].name, name) == 0)
            return i;
    if (nkinds == MAX_KINDS || strlen(name) >= sizeof(kinds[0].name))
        return -1;
    snprintf(kinds[nkinds].name, sizeof(kinds[0].name), "%s", name);
    return nkinds++;
}

/* Reads the request file; every string points into the file's buffer (never freed:
 * it lives as long as the process). */
static int load_requests(const char *file)
{
    FILE *f = fopen(file, "rb");
    if (f == NULL)
        return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)size + 1);
    if (data == NULL || fread(data, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        return -1;
    }
    fclose(f);
    data[size] = '\0';
    size_t cap = 1024;
    reqs = malloc(cap * sizeof(*reqs));
    for (char *line = data, *next; line != NULL && *line; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        char *field[5];
        int nf = 0;
        for (char *p = line; nf < 5; nf++) {
            field[nf] = p;
            p = strchr(p, '\t');
            if (p == NULL) {
                nf++;
                break;
            }
            *p++ = '\0';
        }
        if (nf != 5) {
            fprintf(stderr, "shopload: line %zu: want KIND METHOD PATH AUTH BODY, tab-separated\n",
                    nreqs + 1);
            return -1;
        }
        int k = kind_of(field[0]);
        if (k < 0) {
            fprintf(stderr, "shopload: at most %d kinds of 31 characters\n", MAX_KINDS);
            return -1;
        }
        if (nreqs == cap) {
            cap *= 2;
            req_t *n = realloc(reqs, cap * sizeof(*reqs));
            if (n == NULL)
                return -1;
            reqs = n;
        }
        reqs[nreqs++] = (req_t){field[1], field[2], strcmp(field[3], "-") ? field[3] : NULL,
                                strcmp(field[4], "-") ? field[4] : NULL, k};
    }
    return nreqs > 0 ? 0 : -1;
}

/* A loopback connect completes at once, so it is made blocking and the socket then
 * switched to non-blocking: a request can be written right after. */
static int connect_one(int ep, conn_t *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    dst.sin_addr.s_addr = htonl(0x7F000001u);
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof(dst)) != 0 ||
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->busy = 0;
    c->used = 0;
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
        kinds[c->kind].bad++;
    c->busy = 0;
    conn_errors++;
}

static void record(conn_t *c, int64_t warm_end, int status, const char *resp, size_t len)
{
    kind_t *k = &kinds[c->kind];
    if (now_us() < warm_end)
        return;
    if (status >= 200 && status < 300) {
        k->ok++;
    } else {
        k->bad++;
        if (!k->shown) {
            k->shown = 1;
            fprintf(stderr, "shopload: %s: status %d: %.*s\n", k->name, status, (int)(len < 400 ? len : 400),
                    resp);
        }
    }
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 1 << 14;
        int64_t *n = realloc(k->lat, k->cap * sizeof(*k->lat));
        if (n == NULL) {
            perror("realloc");
            exit(1);
        }
        k->lat = n;
    }
    k->lat[k->n++] = now_us() - c->due_us;
}

/* Copies s into out replacing "{n}" by n; returns the length or -1 when it does not fit. */
static int expand(char *out, size_t cap, const char *s, uint64_t n)
{
    size_t o = 0;
    while (*s) {
        if (strncmp(s, "{n}", 3) == 0) {
            int w = snprintf(out + o, cap - o, "%013llu", (unsigned long long)n);
            if (w < 0 || (size_t)w >= cap - o)
                return -1;
            o += (size_t)w;
            s += 3;
        } else {
            if (o + 1 >= cap)
                return -1;
            out[o++] = *s++;
        }
    }
    out[o] = '\0';
    return (int)o;
}

/* Sends one request on an idle connection (a blocking write of a small request). */
static int send_request(conn_t *c, const req_t *r, uint64_t n, int64_t due)
{
    char req[16384], p[4096], body[8192];
    int bl = 0;
    if (expand(p, sizeof(p), r->path, n) < 0 ||
        (r->body && (bl = expand(body, sizeof(body), r->body, n)) < 0))
        return -2;
    int rl = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", r->method, p, port);
    if (r->auth != NULL)
        rl += snprintf(req + rl, sizeof(req) - (size_t)rl, "Authorization: %s\r\n", r->auth);
    if (r->body != NULL)
        rl += snprintf(req + rl, sizeof(req) - (size_t)rl,
                       "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", bl, body);
    else
        rl += snprintf(req + rl, sizeof(req) - (size_t)rl, "\r\n");
    if (rl >= (int)sizeof(req))
        return -2;
    if (write(c->fd, req, (size_t)rl) != rl)
        return -1;
    c->busy = 1;
    c->used++;
    c->kind = r->kind;
    c->req = r;
    c->n = n;
    c->due_us = due;
    return 0;
}

/* The server closed a kept-alive connection (its idle timeout) just as a request went
 * out on it, before any byte of the answer: as a browser does, the request is sent
 * again on a new connection, its latency still counted from its due time. Returns 0
 * when it took the connection over (sent again, or counted as failed), -1 when the
 * caller should drop it. */
static int resend(int ep, conn_t *c)
{
    if (!c->busy || c->len != 0 || c->used < 2)
        return -1;
    const req_t *r = c->req;
    uint64_t n = c->n;
    int64_t due = c->due_us;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->busy = 0;
    resent++;
    if (connect_one(ep, c) == 0 && send_request(c, r, n, due) == 0) {
        c->used = 1; /* once: a second close before an answer is an error */
        return 0;
    }
    kinds[r->kind].bad++;
    conn_errors++;
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    c->busy = 0;
    return 0;
}

static char *find_ci(char *hay, size_t n, const char *needle)
{
    size_t l = strlen(needle);
    for (size_t i = 0; i + l <= n; i++)
        if (strncasecmp(hay + i, needle, l) == 0)
            return hay + i;
    return NULL;
}

/* Consumes one complete response from c->buf if there is one; returns its status or 0. */
static int take_response(conn_t *c, int64_t warm_end)
{
    char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (e == NULL)
        return 0;
    size_t hl = (size_t)(e + 4 - c->buf), total;
    int status = c->len > 12 ? atoi(c->buf + 9) : 0;
    char *cl = find_ci(c->buf, hl, "\r\ncontent-length:");
    if (status == 204 || status == 304) {
        total = hl;
    } else if (cl != NULL) {
        total = hl + strtoul(cl + 17, NULL, 10);
    } else {
        char *end = memmem(c->buf + hl, c->len - hl, "0\r\n\r\n", 5);
        if (end == NULL)
            return 0;
        total = (size_t)(end + 5 - c->buf);
    }
    if (c->len < total)
        return 0;
    record(c, warm_end, status, c->buf + hl, total - hl);
    memmove(c->buf, c->buf + total, c->len - total);
    c->len -= total;
    return status > 0 ? status : 1;
}

static void report(const char *name, int64_t *lat, size_t n, uint64_t ok, uint64_t bad, double secs)
{
    qsort(lat, n, sizeof(*lat), cmp_i64);
    double pct[] = {50, 90, 99};
    printf("kind=%s count=%llu rate=%.1f errors=%llu", name, (unsigned long long)(ok + bad),
           (double)(ok + bad) / secs, (unsigned long long)bad);
    for (int i = 0; i < 3; i++)
        printf(" p%g=%.3f", pct[i], n ? (double)lat[(size_t)((double)(n - 1) * pct[i] / 100)] / 1000 : 0);
    printf(" max=%.3f\n", n ? (double)lat[n - 1] / 1000 : 0);
}

static void usage(void)
{
    fprintf(stderr, "usage: shopload [-c CONNS] [-r RATE] [-d SECONDS] [-w WARMUP] [-n START] -f REQUESTS "
                    "http://127.0.0.1:PORT\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int conns = 64, opt;
    double rate = 100, secs = 10, warm = 1;
    const char *file = NULL;
    uint64_t first = 0;
    while ((opt = getopt(argc, argv, "c:r:d:w:f:n:")) != -1) {
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
        case 'f':
            file = optarg;
            break;
        case 'n':
            first = strtoull(optarg, NULL, 10);
            break;
        default:
            usage();
        }
    }
    if (optind != argc - 1 || file == NULL || strncmp(argv[optind], "http://127.0.0.1:", 17) != 0 ||
        conns < 1 || conns > 100000 || rate <= 0 || secs <= 0 || secs > 3600 || warm < 0 || warm >= secs)
        usage();
    port = atoi(argv[optind] + 17);
    if (port <= 0 || load_requests(file) != 0) {
        fprintf(stderr, "shopload: cannot read %s\n", file);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int ep = epoll_create1(0);
    conn_t *cs = calloc((size_t)conns, sizeof(*cs));
    if (ep < 0 || cs == NULL) {
        perror("shopload");
        return 1;
    }
    for (int i = 0; i < conns; i++) {
        cs[i].buf = malloc(BUF);
        if (cs[i].buf == NULL || connect_one(ep, &cs[i]) != 0)
            conn_errors++;
    }
    int64_t start = now_us() + 200000; /* let the connections finish */
    int64_t end = start + (int64_t)(secs * 1e6), warm_end = start + (int64_t)(warm * 1e6);
    double interval = 1e6 / rate;
    uint64_t sent = 0, too_long = 0;
    struct epoll_event evs[256];
    int next_free = 0;
    for (;;) {
        int64_t now = now_us();
        int inflight = 0;
        for (int i = 0; i < conns; i++)
            inflight += cs[i].busy;
        if (now >= end + 5000000 || (now >= end && inflight == 0))
            break;
        while (now < end) {
            int64_t due = start + (int64_t)((double)sent * interval);
            if (due > now)
                break;
            int found = -1;
            for (int k = 0; k < conns; k++) {
                int i = (next_free + k) % conns;
                if (cs[i].fd < 0 && cs[i].buf != NULL)
                    connect_one(ep, &cs[i]);
                if (cs[i].fd >= 0 && !cs[i].busy) {
                    found = i;
                    break;
                }
            }
            if (found < 0)
                break; /* every connection busy: the request waits, its latency grows */
            next_free = (found + 1) % conns;
            int rc = send_request(&cs[found], &reqs[sent % nreqs], first + sent, due);
            if (rc == -1) {
                drop(ep, &cs[found]);
                continue;
            }
            if (rc == -2)
                too_long++;
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
            ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                if (resend(ep, c) != 0)
                    drop(ep, c);
                continue;
            }
            c->len += (size_t)r;
            while (c->busy && take_response(c, warm_end) != 0)
                c->busy = 0;
            if (c->len == BUF) /* a response larger than the buffer */
                drop(ep, c);
        }
    }
    for (int i = 0; i < conns; i++) {
        if (cs[i].fd >= 0) {
            if (cs[i].busy)
                kinds[cs[i].kind].bad++; /* no answer within 5 s of the end */
            close(cs[i].fd);
        }
        free(cs[i].buf);
    }
    double measured = secs - warm;
    size_t total = 0;
    uint64_t ok = 0, bad = 0;
    for (int i = 0; i < nkinds; i++)
        total += kinds[i].n;
    int64_t *all = malloc((total + 1) * sizeof(*all));
    size_t at = 0;
    for (int i = 0; i < nkinds; i++) {
        if (kinds[i].n)
            memcpy(all + at, kinds[i].lat, kinds[i].n * sizeof(*all));
        at += kinds[i].n;
        ok += kinds[i].ok;
        bad += kinds[i].bad;
        report(kinds[i].name, kinds[i].lat, kinds[i].n, kinds[i].ok, kinds[i].bad, measured);
        free(kinds[i].lat);
    }
    printf("target=%.0f conn_errors=%llu resent=%llu too_long=%llu ", rate, (unsigned long long)conn_errors,
           (unsigned long long)resent, (unsigned long long)too_long);
    report("all", all, total, ok, bad, measured);
    free(all);
    free(cs);
    close(ep);
    return 0;
}
