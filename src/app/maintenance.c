/* maintenance — see maintenance.h. */
#include "app/maintenance.h"

#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "base/arena.h"
#include "base/log.h"
#include "base/mailbox.h"
#include "core/schema.h"

static struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    store_t *store;
    int interval_s;
    int started, stopping;
} m = {.lock = PTHREAD_MUTEX_INITIALIZER};

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

static int round_done;

static void job_back(mailbox_msg_t *msg)
{
    (void)msg;
    round_done = 1;
}

/* One round: a write job through the writer (which runs while the server does), and
 * this thread waits for its reply on a mailbox of its own. */
static void round_once(void)
{
    if (!any_partitioned())
        return;
    mailbox_t mb;
    if (mailbox_init(&mb) != 0) {
        LOGF(LOG_WARN, "maintenance", "no mailbox for the round (retried in %d s)", m.interval_s);
        return;
    }
    arena_t a;
    arena_init(&a, 4096);
    store_job_t job = {.run = partitions_run, .arena = &a, .reply_to = &mb};
    job.msg.deliver = job_back;
    round_done = 0;
    store_submit(m.store, &job);
    while (!round_done) {
        struct pollfd p = {.fd = mb.efd, .events = POLLIN};
        if (poll(&p, 1, -1) > 0) {
            uint64_t n;
            if (read(mb.efd, &n, sizeof(n)) < 0) {
                /* woken with nothing to read: drain anyway */
            }
        }
        mailbox_drain(&mb);
    }
    if (job.status != 0)
        LOGF(LOG_WARN, "maintenance", "partitions ahead not made (retried in %d s): %s", m.interval_s,
             job.err.message);
    arena_free(&a);
    mailbox_destroy(&mb);
}

static void *maintenance_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&m.lock);
    while (!m.stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += m.interval_s;
        while (!m.stopping && pthread_cond_timedwait(&m.cond, &m.lock, &until) == 0) {
        }
        if (m.stopping)
            break;
        pthread_mutex_unlock(&m.lock);
        round_once();
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
