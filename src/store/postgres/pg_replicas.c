/* The replica monitor; see pg_replicas.h. */
#include "store/postgres/pg_replicas.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "base/log.h"
#include "base/util.h"

#define MAX_REPLICAS 16
#define SAMPLES 1024 /* 100 ms apart: the primary's positions of the last ~100 s */
#define POLL_MS 100
#define ANSWER_MS 1000 /* a replica that takes longer to answer the probe is out */

typedef struct {
    char *url;
    PGconn *pg;
    uint64_t retry_at_ns;
    /* Read by other threads. */
    int healthy;       /* atomic */
    uint64_t replayed; /* atomic */
    int64_t lag_ms;    /* atomic; -1 unknown */
} replica_t;

struct pg_replicas {
    pg_replicas_config_t cfg;
    char *primary_url;
    PGconn *primary;
    uint64_t primary_retry_ns;
    replica_t rep[MAX_REPLICAS];
    size_t n;
    /* The primary's position over time (monitor thread only). */
    struct {
        uint64_t t_ns, lsn;
    } samples[SAMPLES];
    size_t nsamples, next_sample;
    unsigned turn; /* atomic: round robin */
    pthread_t thread;
    int running;
    int stop; /* atomic */
};

uint64_t pg_lsn_parse(const char *text)
{
    unsigned hi, lo;
    if (text == NULL || sscanf(text, "%X/%X", &hi, &lo) != 2)
        return 0;
    return ((uint64_t)hi << 32) | lo;
}

pg_replicas_t *pg_replicas_new(const pg_replicas_config_t *cfg, bs_error_t *err)
{
    pg_replicas_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    r->cfg = *cfg;
    r->primary_url = strdup(cfg->primary_url ? cfg->primary_url : "");
    const char *p = cfg->urls ? cfg->urls : "";
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        if (len > 0) {
            char *url = strndup(p, len);
            if (r->n == MAX_REPLICAS || url == NULL ||
                (strncmp(url, "postgres://", 11) != 0 && strncmp(url, "postgresql://", 13) != 0)) {
                bs_error_set(err, BS_ERR_BAD_REQUEST,
                             r->n == MAX_REPLICAS
                                 ? "At most %d read replicas (--db-replicas)."
                                 : "Each read replica (--db-replicas) must be a postgres:// URL.",
                             MAX_REPLICAS);
                free(url);
                pg_replicas_stop(r);
                return NULL;
            }
            r->rep[r->n].url = url;
            r->rep[r->n].lag_ms = -1;
            r->n++;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return r;
}

static PGconn *connect_url(const pg_replicas_t *r, const char *url)
{
    char timeout[16];
    int secs = (r->cfg.connect_timeout_ms + 999) / 1000;
    snprintf(timeout, sizeof(timeout), "%d", secs < 2 ? 2 : secs);
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {url, timeout, "basalt-replica-monitor", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c != NULL && PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        c = NULL;
    }
    return c;
}

/* Runs sql (one row expected) with a deadline; returns the result or NULL, in which
 * case the connection is closed (*c = NULL). */
static PGresult *probe(PGconn **c, const char *sql)
{
    if (!PQsendQuery(*c, sql))
        goto lost;
    uint64_t deadline = util_mono_ns() + (uint64_t)ANSWER_MS * 1000000u;
    while (PQisBusy(*c)) {
        uint64_t now = util_mono_ns();
        if (now >= deadline)
            goto lost;
        struct pollfd p = {.fd = PQsocket(*c), .events = POLLIN};
        int rc = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
        if ((rc < 0 && errno != EINTR) || (rc > 0 && !PQconsumeInput(*c)))
            goto lost;
    }
    PGresult *res = PQgetResult(*c), *extra;
    while ((extra = PQgetResult(*c)) != NULL)
        PQclear(extra);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        return res;
    PQclear(res);
lost:
    PQfinish(*c);
    *c = NULL;
    return NULL;
}

/* How long ago the primary first stood past lsn (0 when it has not). */
static int64_t lag_behind(const pg_replicas_t *r, uint64_t lsn, uint64_t now)
{
    if (r->nsamples == 0)
        return -1;
    /* Oldest first: the first sample past lsn. */
    size_t start = (r->next_sample + SAMPLES - r->nsamples) % SAMPLES;
    for (size_t k = 0; k < r->nsamples; k++) {
        size_t i = (start + k) % SAMPLES;
        if (r->samples[i].lsn > lsn)
            return (int64_t)((now - r->samples[i].t_ns) / 1000000u);
    }
    return 0;
}

static void check_replica(pg_replicas_t *r, replica_t *rep, uint64_t now)
{
    int healthy = 0;
    int64_t lag = -1;
    if (rep->pg == NULL && now >= rep->retry_at_ns) {
        rep->pg = connect_url(r, rep->url);
        if (rep->pg == NULL)
            rep->retry_at_ns = now + 1000000000u;
    }
    if (rep->pg != NULL) {
        PGresult *res = probe(&rep->pg, "SELECT pg_last_wal_replay_lsn(), pg_is_in_recovery()");
        if (res != NULL) {
            int in_recovery = PQgetvalue(res, 0, 1)[0] == 't';
            uint64_t replayed = PQgetisnull(res, 0, 0) ? 0 : pg_lsn_parse(PQgetvalue(res, 0, 0));
            PQclear(res);
            if (in_recovery && replayed != 0) {
                __atomic_store_n(&rep->replayed, replayed, __ATOMIC_RELEASE);
                lag = lag_behind(r, replayed, now);
                healthy = lag >= 0 && lag <= r->cfg.max_lag_ms;
            }
        }
    }
    int was = __atomic_load_n(&rep->healthy, __ATOMIC_ACQUIRE);
    if (was != healthy)
        LOGF(healthy ? LOG_INFO : LOG_WARN, "store", "read replica %zu %s the rotation (lag %" PRId64 " ms)",
             (size_t)(rep - r->rep), healthy ? "joins" : "leaves", lag);
    __atomic_store_n(&rep->lag_ms, lag, __ATOMIC_RELEASE);
    __atomic_store_n(&rep->healthy, healthy, __ATOMIC_RELEASE);
}

static void *monitor_main(void *arg)
{
    util_thread_name("replicas");
    pg_replicas_t *r = arg;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        uint64_t now = util_mono_ns();
        if (r->primary == NULL && now >= r->primary_retry_ns) {
            r->primary = connect_url(r, r->primary_url);
            if (r->primary == NULL)
                r->primary_retry_ns = now + 1000000000u;
        }
        if (r->primary != NULL) {
            PGresult *res = probe(&r->primary, "SELECT pg_current_wal_lsn()");
            if (res != NULL) {
                r->samples[r->next_sample].t_ns = now;
                r->samples[r->next_sample].lsn = pg_lsn_parse(PQgetvalue(res, 0, 0));
                r->next_sample = (r->next_sample + 1) % SAMPLES;
                if (r->nsamples < SAMPLES)
                    r->nsamples++;
                PQclear(res);
            }
        }
        for (size_t i = 0; i < r->n; i++)
            check_replica(r, &r->rep[i], now);
        usleep(POLL_MS * 1000);
    }
    return NULL;
}

int pg_replicas_start(pg_replicas_t *r, bs_error_t *err)
{
    if (pthread_create(&r->thread, NULL, monitor_main, r) != 0) {
        bs_error_set(err, BS_ERR_INTERNAL, "Cannot start the replica monitor.");
        return -1;
    }
    r->running = 1;
    return 0;
}

void pg_replicas_stop(pg_replicas_t *r)
{
    if (r == NULL)
        return;
    if (r->running) {
        __atomic_store_n(&r->stop, 1, __ATOMIC_RELEASE);
        pthread_join(r->thread, NULL);
    }
    for (size_t i = 0; i < r->n; i++) {
        if (r->rep[i].pg != NULL)
            PQfinish(r->rep[i].pg);
        free(r->rep[i].url);
    }
    if (r->primary != NULL)
        PQfinish(r->primary);
    free(r->primary_url);
    free(r);
}

size_t pg_replicas_count(const pg_replicas_t *r)
{
    return r != NULL ? r->n : 0;
}

const char *pg_replicas_url(const pg_replicas_t *r, size_t i)
{
    return i < r->n ? r->rep[i].url : NULL;
}

int pg_replicas_pick(pg_replicas_t *r, uint64_t min_lsn)
{
    if (r == NULL || r->n == 0)
        return -1;
    unsigned start = __atomic_fetch_add(&r->turn, 1, __ATOMIC_RELAXED);
    for (size_t k = 0; k < r->n; k++) {
        size_t i = (start + k) % r->n;
        if (__atomic_load_n(&r->rep[i].healthy, __ATOMIC_ACQUIRE) &&
            __atomic_load_n(&r->rep[i].replayed, __ATOMIC_ACQUIRE) >= min_lsn)
            return (int)i;
    }
    return -1;
}

int pg_replicas_wait(pg_replicas_t *r, uint64_t min_lsn, int wait_ms)
{
    uint64_t deadline = util_mono_ns() + (uint64_t)(wait_ms > 0 ? wait_ms : 0) * 1000000u;
    for (;;) {
        int i = pg_replicas_pick(r, min_lsn);
        if (i >= 0 || util_mono_ns() >= deadline)
            return i;
        usleep(2000);
    }
}

int pg_replicas_healthy(const pg_replicas_t *r, size_t i)
{
    return i < r->n && __atomic_load_n(&r->rep[i].healthy, __ATOMIC_ACQUIRE);
}

uint64_t pg_replicas_replayed(const pg_replicas_t *r, size_t i)
{
    return i < r->n ? __atomic_load_n(&r->rep[i].replayed, __ATOMIC_ACQUIRE) : 0;
}

int64_t pg_replicas_lag_ms(const pg_replicas_t *r, size_t i)
{
    return i < r->n ? __atomic_load_n(&r->rep[i].lag_ms, __ATOMIC_ACQUIRE) : -1;
}
