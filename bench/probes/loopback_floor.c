/*
 * loopback_floor: the kernel's floor for realtime fan-out on this machine.
 *
 * Opens N TCP connections over loopback, a receiver thread reading them all (epoll,
 * as a load generator does), and a sender that writes one frame of B bytes to every
 * connection per event, E events, K frames per write (K > 1: events that met in one
 * loop turn), one write(2) per connection per event as Basalt's loop does. Prints
 * the sender's CPU time (user + system, RUSAGE_THREAD) per delivered frame and the
 * deliveries per second: what one core can do with nothing but the system calls and
 * the loopback TCP work (the receiver's softirq work is billed to the sender on
 * loopback, as it is for Basalt's writes). No Basalt code runs here.
 *
 * Build: cc -O2 -pthread -o loopback_floor bench/probes/loopback_floor.c
 * Run:   taskset -c 0 ./loopback_floor [N=5000] [E=200] [B=120] [K=1] [RECV_CORE=1] [RATE=0]
 * RATE > 0: writes per connection start at that many per second (the sender sleeps
 * between them, as a server between events), else back to back.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int n_conns, recv_core;
static int *rfd;
static volatile long received_bytes;
static volatile int stop;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double thread_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void *receiver(void *arg)
{
    (void)arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(recv_core, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    int ep = epoll_create1(0);
    for (int i = 0; i < n_conns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = rfd[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, rfd[i], &ev);
    }
    struct epoll_event evs[256];
    char buf[65536];
    while (!stop) {
        int k = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            ssize_t r;
            while ((r = read(evs[i].data.fd, buf, sizeof(buf))) > 0)
                __atomic_add_fetch(&received_bytes, r, __ATOMIC_RELAXED);
        }
    }
    close(ep);
    return NULL;
}

int main(int argc, char **argv)
{
    n_conns = argc > 1 ? atoi(argv[1]) : 5000;
    int events = argc > 2 ? atoi(argv[2]) : 200;
    int bytes = argc > 3 ? atoi(argv[3]) : 120;
    int per_write = argc > 4 ? atoi(argv[4]) : 1;
    recv_core = argc > 5 ? atoi(argv[5]) : 1;
    int rate = argc > 6 ? atoi(argv[6]) : 0;
    struct rlimit rl = {.rlim_cur = 2 * (rlim_t)n_conns + 64, .rlim_max = 2 * (rlim_t)n_conns + 64};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        perror("setrlimit");
        return 1;
    }
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(ls, 4096) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) != 0) {
        perror("listen");
        return 1;
    }
    int *sfd = calloc((size_t)n_conns, sizeof(int));
    rfd = calloc((size_t)n_conns, sizeof(int));
    for (int i = 0; i < n_conns; i++) {
        rfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(rfd[i], (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EINPROGRESS) {
            perror("connect");
            return 1;
        }
        sfd[i] = accept(ls, NULL, NULL);
        if (sfd[i] < 0) {
            perror("accept");
            return 1;
        }
        int one = 1;
        setsockopt(sfd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    pthread_t rt;
    pthread_create(&rt, NULL, receiver, NULL);
    usleep(200000);
    char *frame = malloc((size_t)bytes * (size_t)per_write);
    memset(frame, 'x', (size_t)bytes * (size_t)per_write);
    int writes = events / per_write;
    double c0 = thread_cpu_s(), t0 = now_s();
    for (int e = 0; e < writes; e++) {
        if (rate > 0) {
            double due = t0 + (double)e / rate, at = now_s();
            if (due > at)
                usleep((useconds_t)((due - at) * 1e6));
        }
        for (int i = 0; i < n_conns; i++)
            if (write(sfd[i], frame, (size_t)bytes * (size_t)per_write) < 0 && errno != EAGAIN) {
                perror("write");
                return 1;
            }
    }
    double c1 = thread_cpu_s(), t1 = now_s();
    long want = (long)writes * per_write * n_conns * bytes;
    while (__atomic_load_n(&received_bytes, __ATOMIC_RELAXED) < want && now_s() - t1 < 30)
        usleep(1000);
    double t2 = now_s();
    stop = 1;
    pthread_join(rt, NULL);
    double deliveries = (double)writes * per_write * n_conns;
    printf("connections %d, frames %d x %d bytes, %d per write: sender CPU %.2f us per delivery "
           "(%.2f us per write), %.0f deliveries/s sent, all received after %.2f s, received %s\n",
           n_conns, writes * per_write, bytes, per_write, (c1 - c0) / deliveries * 1e6,
           (c1 - c0) / (writes * (double)n_conns) * 1e6, deliveries / (t1 - t0), t2 - t0,
           __atomic_load_n(&received_bytes, __ATOMIC_RELAXED) >= want ? "all" : "NOT ALL");
    return 0;
}
