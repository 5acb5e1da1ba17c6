/* maintenance — see maintenance.h. */
#include "app/maintenance.h"

#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/arena.h"
#include "base/log.h"
#include "base/mailbox.h"
#include "base/util.h"
#include "core/schema.h"

/* How often the thread wakes to see whether another process changed the data. */
enum { MAINT_TICK_MS = 250 };

static struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    store_t *store;
    int interval_s;
    int started, stopping;
    int schema_check;      /* atomic: another process wrote; its schema may have changed */
    char fingerprint[160]; /* the collections' count and latest change seen (one refresh job at a time) */
} m = {.lock = PTHREAD_MUTEX_INITIALIZER};

void maintenance_external_change(void)
{
    __atomic_store_n(&m.schema_check, 1, __ATOMIC_RELEASE);
}

static int partitions_run(store_job_t *job, store_conn_t *conn)
{
    /* The schema as the writer sees it now (the job holds it for its run). */
    schema_t *s = schema_acquire();
    if (s == NULL)
        return 0;
    int rc = schema_partitions_maintain(conn, s, job->arena, &job->err);
    schema_release(s);
    return rc;
}

typedef struct {
    store_job_t job; /* first */
    schema_t *fresh; /* loaded when the definitions changed; published after the commit */
    uint64_t base;   /* the snapshot's version when the load started */
} refresh_job_t;

/* Reloads the collections when another instance (or a command-line tool) changed
 * them: their count and latest update time are the fingerprint. */
static int refresh_run(store_job_t *job, store_conn_t *conn)
{
    refresh_job_t *rj = (refresh_job_t *)job;
    store_stmt_t *st =
        store_query(conn, "SELECT count(*), max(updated) FROM _collections", NULL, 0, &job->err);
    if (st == NULL)
        return -1;
    char fp[sizeof(m.fingerprint)] = "";
    if (store_step(st, &job->err) == 1) {
        bs_value_t n = store_col(st, 0), u = store_col(st, 1);
        snprintf(fp, sizeof(fp), "%lld|%.*s", (long long)(n.type == BS_VAL_INT ? n.i : (int64_t)n.d),
                 u.type == BS_VAL_TEXT ? (int)(u.n > 100 ? 100 : u.n) : 0, u.type == BS_VAL_TEXT ? u.s : "");
    }
    store_done(st);
    if (strcmp(fp, m.fingerprint) == 0)
        return 0;
    schema_t *cur = schema_acquire();
    rj->base = cur != NULL ? cur->version : 0;
    schema_release(cur);
    schema_t *s = schema_load(conn, &job->err);
    if (s == NULL)
        return -1;
    snprintf(m.fingerprint, sizeof(m.fingerprint), "%s", fp);
    rj->fresh = s;
    return 0;
}

static void refresh_committed(store_job_t *job)
{
    refresh_job_t *rj = (refresh_job_t *)job;
    if (rj->fresh != NULL) {
        size_t n = rj->fresh->ncols;
        /* Only over the snapshot it started from: a request's reload (api/common.c)
         * may have published a newer one meanwhile, which this must not replace. */
        if (schema_publish_over(rj->fresh, rj->base))
            LOGF(LOG_INFO, "maintenance", "collections changed elsewhere: %zu collections reloaded", n);
        else {
            m.fingerprint[0] = '\0'; /* not what is published: load again at the next tick */
            __atomic_store_n(&m.schema_check, 1, __ATOMIC_RELEASE);
        }
        rj->fresh = NULL;
    }
}

/* Whether some collection of the current schema is partitioned (else no job at all). */
static int any_partitioned(void)
{
    schema_t *s = schema_acquire();
    int any = 0;
    for (size_t i = 0; s != NULL && i < s->ncols && !any; i++)
        any = s->cols[i]->partition_interval != PART_NONE;
    schema_release(s);
    return any;
}

static int job_done;

static void job_back(mailbox_msg_t *msg)
{
    (void)msg;
    job_done = 1;
}

/* Runs job through the writer (which runs while the server does), or with pooled on
 * the store's pool of primary connections when it has one (returns 1 in *on_pool
 * then), and waits for its reply on a mailbox of this thread's own. Returns
 * job->status. */
static int run_job_on(store_job_t *job, int pooled, int *on_pool)
{
    mailbox_t mb;
    if (mailbox_init(&mb) != 0) {
        bs_error_set(&job->err, BS_ERR_NOMEM, "no mailbox for the maintenance job");
        return -1;
    }
    job->reply_to = &mb;
    job->msg.deliver = job_back;
    job_done = 0;
    *on_pool = pooled && store_run_pooled(m.store, job) == 0;
    if (!*on_pool)
        store_submit(m.store, job);
    while (!job_done) {
        struct pollfd p = {.fd = mb.efd, .events = POLLIN};
        if (poll(&p, 1, -1) > 0) {
            uint64_t n;
            if (read(mb.efd, &n, sizeof(n)) < 0) {
                /* woken with nothing to read: drain anyway */
            }
        }
        mailbox_drain(&mb);
    }
    mailbox_destroy(&mb);
    return job->status;
}

static int run_job(store_job_t *job)
{
    int on_pool;
    return run_job_on(job, 0, &on_pool);
}

static void partitions_round(void)
{
    if (!any_partitioned())
        return;
    arena_t a;
    arena_init(&a, 4096);
    store_job_t job = {.run = partitions_run, .arena = &a, .background = 1};
    if (run_job(&job) != 0)
        LOGF(LOG_WARN, "maintenance", "partitions ahead not made (retried in %d s): %s", m.interval_s,
             job.err.message);
    arena_free(&a);
}

static void refresh_round(void)
{
    arena_t a;
    arena_init(&a, 1024);
    refresh_job_t rj = {
        .job = {.run = refresh_run, .committed = refresh_committed, .arena = &a, .background = 1}};
    /* A read: on PostgreSQL on the pool, not as a job of the single writer. Another
     * instance's every commit asks for this check (on_external_change), so on the
     * writer a busy neighbour kept four upkeep jobs a second in the write queue. The
     * pool runs no committed hook: the publish follows here, over the snapshot the
     * load started from, as a request's reload does (api/common.c). */
    int on_pool;
    int rc = run_job_on(&rj.job, !store_reads_inline(m.store), &on_pool);
    if (rc == 0 && on_pool)
        refresh_committed(&rj.job);
    if (rc != 0) {
        LOGF(LOG_WARN, "maintenance", "could not check for collections changed elsewhere: %s",
             rj.job.err.message);
        __atomic_store_n(&m.schema_check, 1, __ATOMIC_RELEASE); /* again at the next tick */
    }
    schema_free(rj.fresh); /* only when the commit did not happen */
    arena_free(&a);
}

static void *maintenance_main(void *arg)
{
    util_thread_name("maintenance");
    (void)arg;
    uint64_t next_partitions = util_mono_ns() + (uint64_t)m.interval_s * 1000000000u;
    pthread_mutex_lock(&m.lock);
    while (!m.stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += MAINT_TICK_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!m.stopping && pthread_cond_timedwait(&m.cond, &m.lock, &until) == 0) {
        }
        if (m.stopping)
            break;
        pthread_mutex_unlock(&m.lock);
        if (__atomic_exchange_n(&m.schema_check, 0, __ATOMIC_ACQ_REL))
            refresh_round();
        if (util_mono_ns() >= next_partitions) {
            partitions_round();
            next_partitions = util_mono_ns() + (uint64_t)m.interval_s * 1000000000u;
        }
        pthread_mutex_lock(&m.lock);
    }
    pthread_mutex_unlock(&m.lock);
    return NULL;
}

int maintenance_start(store_t *s, int interval_s)
{
    m.store = s;
    m.interval_s = interval_s > 0 ? interval_s : 3600;
    m.stopping = 0;
    __atomic_store_n(&m.schema_check, 0, __ATOMIC_RELEASE);
    pthread_cond_init(&m.cond, NULL);
    if (pthread_create(&m.thread, NULL, maintenance_main, NULL) != 0)
        return -1;
    m.started = 1;
    return 0;
}

void maintenance_stop(void)
{
    if (!m.started)
        return;
    pthread_mutex_lock(&m.lock);
    m.stopping = 1;
    pthread_cond_signal(&m.cond);
    pthread_mutex_unlock(&m.lock);
    pthread_join(m.thread, NULL);
    pthread_cond_destroy(&m.cond);
    m.started = 0;
}
