/*
 * pg_models: measures the two ways Basalt could drive PostgreSQL from its event
 * loops (ADR 0004), on the same server and the same query (a primary-key read):
 *
 *   blocking  T threads, each with its own connection, PQexecParams in a loop
 *             (unnamed statements: what works through PgBouncer's transaction mode);
 *   prepared  the same with a named prepared statement (direct connections only);
 *   hop       one "loop" thread hands each read to a pool thread and waits for its
 *             completion through a condition variable + eventfd, as a worker would
 *             hand a read job to the pool: the cost of the thread hop itself;
 *   pipeline  one thread, libpq's pipeline mode, D queries in flight on one
 *             connection (a loop with D concurrent requests, no threads).
 *
 * Usage: pg_models CONNINFO [seconds]   (the table is created and filled here)
 * Prints one line per model: queries/s and microseconds of CPU per query.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

static const char *conninfo;
static double seconds = 3;
static const char *SQL = "SELECT data FROM probe WHERE id = $1";
enum { ROWS = 10000 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static PGconn *connect_or_die(void)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "pg_models: %s", PQerrorMessage(c));
        exit(1);
    }
    return c;
}

static void must(PGresult *r, PGconn *c)
{
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fprintf(stderr, "pg_models: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
}

static void key(char *buf, unsigned n)
{
    snprintf(buf, 16, "k%07u", n % ROWS);
}

/* One read with PQexecParams (unnamed) or PQexecPrepared; returns rows. */
static int read_one(PGconn *c, unsigned n, int prepared)
{
    char k[16];
    key(k, n);
    const char *v[1] = {k};
    PGresult *r = prepared ? PQexecPrepared(c, "rd", 1, v, NULL, NULL, 0)
                           : PQexecParams(c, SQL, 1, NULL, v, NULL, NULL, 0);
    int rows = PQntuples(r);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || rows != 1) {
        fprintf(stderr, "pg_models: read failed: %s", PQerrorMessage(c));
        exit(1);
    }
    PQclear(r);
    return rows;
}

typedef struct {
    int prepared;
    long done;
    double until;
} blk_t;

static void *blocking(void *arg)
{
    blk_t *b = arg;
    PGconn *c = connect_or_die();
    if (b->prepared)
        must(PQprepare(c, "rd", SQL, 1, NULL), c);
    unsigned n = (unsigned)(size_t)b * 7919u;
    while (now() < b->until)
        for (int i = 0; i < 64; i++, b->done++)
            read_one(c, n++, b->prepared);
    PQfinish(c);
    return NULL;
}

static void run_blocking(int threads, int prepared)
{
    blk_t b[64];
    pthread_t th[64];
    double t0 = now(), c0 = cpu();
    for (int i = 0; i < threads; i++) {
        b[i] = (blk_t){.prepared = prepared, .until = t0 + seconds};
        pthread_create(&th[i], NULL, blocking, &b[i]);
    }
    long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        total += b[i].done;
    }
    double dt = now() - t0, dc = cpu() - c0;
    printf("%-9s threads=%-2d %9.0f q/s  %6.1f us client CPU/q\n", prepared ? "prepared" : "blocking",
           threads, total / dt, dc * 1e6 / total);
}

/* The hop: the loop thread posts a job and waits on its eventfd, like a worker that
 * hands a read to the pool and is woken by the completion. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pending, stop;
    unsigned arg;
    int efd;
} hop = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, -1};

static void *hop_pool(void *arg)
{
    PGconn *c = arg;
    for (;;) {
        pthread_mutex_lock(&hop.lock);
        while (!hop.pending && !hop.stop)
            pthread_cond_wait(&hop.cond, &hop.lock);
        if (hop.stop) {
            pthread_mutex_unlock(&hop.lock);
            return NULL;
        }
        unsigned n = hop.arg;
        hop.pending = 0;
        pthread_mutex_unlock(&hop.lock);
        read_one(c, n, 1);
        uint64_t one = 1;
        if (write(hop.efd, &one, 8) != 8)
            exit(1);
    }
}

static void run_hop(void)
{
    PGconn *c = connect_or_die();
    must(PQprepare(c, "rd", SQL, 1, NULL), c);
    hop.efd = eventfd(0, 0);
    pthread_t th;
    pthread_create(&th, NULL, hop_pool, c);
    long done = 0;
    double t0 = now(), c0 = cpu();
    while (now() < t0 + seconds) {
        pthread_mutex_lock(&hop.lock);
        hop.arg = (unsigned)done;
        hop.pending = 1;
        pthread_cond_signal(&hop.cond);
        pthread_mutex_unlock(&hop.lock);
        struct pollfd p = {.fd = hop.efd, .events = POLLIN};
        poll(&p, 1, -1);
        uint64_t v;
        if (read(hop.efd, &v, 8) != 8)
            exit(1);
        done++;
    }
    double dt = now() - t0, dc = cpu() - c0;
    pthread_mutex_lock(&hop.lock);
    hop.stop = 1;
    pthread_cond_signal(&hop.cond);
    pthread_mutex_unlock(&hop.lock);
    pthread_join(th, NULL);
    PQfinish(c);
    printf("%-9s threads=1+1 %8.0f q/s  %6.1f us client CPU/q (serial: one read at a time)\n", "hop",
           done / dt, dc * 1e6 / done);
}

/* Pipeline mode: depth queries in flight on one connection from one thread. */
static void run_pipeline(int depth)
{
    PGconn *c = connect_or_die();
    if (!PQenterPipelineMode(c)) {
        fprintf(stderr, "pg_models: no pipeline mode\n");
        exit(1);
    }
    PQsetnonblocking(c, 1);
    long sent = 0, done = 0;
    int inflight = 0;
    char k[16];
    double t0 = now(), c0 = cpu(), until = t0 + seconds;
    while (now() < until || inflight > 0) {
        while (inflight < depth && now() < until) {
            key(k, (unsigned)sent);
            const char *v[1] = {k};
            if (!PQsendQueryParams(c, SQL, 1, NULL, v, NULL, NULL, 0) || !PQpipelineSync(c))
                exit(1);
            sent++;
            inflight++;
        }
        while (PQflush(c) == 1) {
            struct pollfd p = {.fd = PQsocket(c), .events = POLLOUT | POLLIN};
            poll(&p, 1, -1);
            PQconsumeInput(c);
        }
        struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
        poll(&p, 1, -1);
        if (!PQconsumeInput(c))
            exit(1);
        while (!PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (r == NULL)
                continue; /* end of one query's results */
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_PIPELINE_SYNC) {
                inflight--;
                done++;
            } else if (st != PGRES_TUPLES_OK) {
                fprintf(stderr, "pg_models: %s", PQerrorMessage(c));
                exit(1);
            }
            PQclear(r);
            if (inflight == 0)
                break;
        }
    }
    double dt = now() - t0, dc = cpu() - c0;
    printf("%-9s depth=%-4d %9.0f q/s  %6.1f us client CPU/q\n", "pipeline", depth, done / dt,
           dc * 1e6 / done);
    PQfinish(c);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pg_models CONNINFO [seconds]\n");
        return 2;
    }
    conninfo = argv[1];
    if (argc > 2)
        seconds = atof(argv[2]);
    PGconn *c = connect_or_die();
    must(PQexec(c,
                "DROP TABLE IF EXISTS probe; CREATE TABLE probe (id text PRIMARY KEY, data jsonb);"
                "INSERT INTO probe SELECT 'k' || lpad(g::text, 7, '0'), jsonb_build_object('n', g, 'title', "
                "repeat('x', 40)) FROM generate_series(0, 9999) g; ANALYZE probe;"),
         c);
    PQfinish(c);
    run_blocking(1, 0);
    run_blocking(1, 1);
    run_hop();
    run_blocking(2, 0);
    run_blocking(8, 0);
    run_blocking(8, 1);
    run_pipeline(1);
    run_pipeline(8);
    run_pipeline(64);
    return 0;
}
