/*
 * store.c — the backend-independent half of store.h: choosing a backend, dispatching
 * to it, and the job queue helpers every backend shares.
 */
#include <string.h>
#include <time.h>

#include "base/util.h"
#include "metrics/metrics.h"
#include "store/store_backend.h"

int store_is_url(const char *location)
{
    return location != NULL &&
           (strncmp(location, "postgres://", 11) == 0 || strncmp(location, "postgresql://", 13) == 0);
}

store_t *store_open(const store_config_t *cfg, bs_error_t *err)
{
    if (store_is_url(cfg->path))
        return pg_store_open(cfg, err);
    return sqlite_store_open(cfg, err);
}

const char *store_backend_name(const store_t *s)
{
    return s->ops->name;
}

void store_close(store_t *s)
{
    if (s != NULL)
        s->ops->close(s);
}

rules_dialect_t store_dialect(const store_t *s)
{
    return s->ops->sql;
}

rules_dialect_t store_conn_dialect(const store_conn_t *c)
{
    return c->ops->sql;
}

store_conn_t *store_reader(store_t *s, int idx)
{
    return s->ops->reader(s, idx);
}

void store_base_init(store_t *s, const store_ops_t *ops, int max_batch)
{
    s->ops = ops;
    s->max_batch = max_batch > 0 ? max_batch : 1;
    s->idle_tick_ms = 1000;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->head = NULL;
    s->tail = &s->head;
    s->running = s->stopping = s->wake = 0;
    memset(&s->stats, 0, sizeof(s->stats));
    for (int i = 0; i < STORE_MAX_WORKERS; i++)
        store_queue_init(&s->turn_reads[i]);
}

void store_base_destroy(store_t *s)
{
    store_stop_writer(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
}

/* Runs one batch and counts it. */
static void run_counted(store_t *s, store_job_t *jobs)
{
    uint64_t t0 = util_mono_ns(), n = 0, bg = 0;
    int committed = s->ops->run_jobs(s, jobs);
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue)
        n++, bg += j->background ? 1 : 0;
    uint64_t ns = util_mono_ns() - t0;
    metrics_add(committed ? &metrics_g.store_commits : &metrics_g.store_failed_commits, 1);
    metrics_add(&metrics_g.store_jobs, n - bg);
    metrics_add(&metrics_g.store_background_jobs, bg);
    metrics_hist_observe(&metrics_g.store_commit, ns);
    metrics_hist_observe_value(&metrics_g.store_batch, n);
    pthread_mutex_lock(&s->lock);
    s->stats.jobs += n;
    if (committed)
        s->stats.commits++;
    else
        s->stats.failed_commits++;
    s->stats.commit_ns_total += ns;
    if (n > s->stats.max_batch_seen)
        s->stats.max_batch_seen = n;
    pthread_mutex_unlock(&s->lock);
}

/* Runs the committed hooks of the jobs that succeeded and posts every job back. */
static void finish_jobs(store_t *s, store_job_t *jobs)
{
    /* Realtime events first, so that they go out before anyone hears of the commit. */
    store_outbox_committed(s, jobs);
    while (jobs != NULL) {
        store_job_t *next = jobs->next_in_queue;
        if (jobs->status == 0 && jobs->committed != NULL)
            jobs->committed(jobs);
        mailbox_post(jobs->reply_to, &jobs->msg);
        jobs = next;
    }
}

static void tick(store_t *s)
{
    if (s->ops->writer_tick != NULL)
        s->ops->writer_tick(s);
    store_outbox_tick(s);
}

static __thread const store_t *writer_of; /* the store whose writer this thread is */

int store_on_writer(const store_t *s)
{
    return writer_of == s;
}

static void *writer_main(void *arg)
{
    util_thread_name("writer");
    store_t *s = arg;
    writer_of = s;
    tick(s); /* a baseline before anything is written */
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->head == NULL && !s->stopping) {
            if (s->wake) {
                s->wake = 0;
                pthread_mutex_unlock(&s->lock);
                tick(s);
                pthread_mutex_lock(&s->lock);
                continue;
            }
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            long ns = until.tv_nsec + (long)s->idle_tick_ms * 1000000L;
            until.tv_sec += ns / 1000000000L;
            until.tv_nsec = ns % 1000000000L;
            if (pthread_cond_timedwait(&s->cond, &s->lock, &until) != 0) {
                pthread_mutex_unlock(&s->lock);
                tick(s);
                pthread_mutex_lock(&s->lock);
            }
        }
        if (s->head == NULL && s->stopping)
            break;
        /* Take up to max_batch jobs: everything that queued while the last batch ran. */
        store_job_t *batch = s->head, *last = s->head;
        int n = 1;
        while (last->next_in_queue != NULL && n < s->max_batch) {
            last = last->next_in_queue;
            n++;
        }
        s->head = last->next_in_queue;
        if (s->head == NULL)
            s->tail = &s->head;
        last->next_in_queue = NULL;
        s->wake = 0; /* the tick before the batch is the one it asked for */
        pthread_mutex_unlock(&s->lock);
        tick(s);
        run_counted(s, batch);
        finish_jobs(s, batch);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

void store_wake_writer(store_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->wake = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

int store_start_writer(store_t *s, bs_error_t *err)
{
    s->stopping = 0;
    if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
        bs_error_set(err, BS_ERR_INTERNAL, "Cannot start the writer thread.");
        return -1;
    }
    s->running = 1;
    return 0;
}

void store_stop_writer(store_t *s)
{
    if (!s->running)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    s->running = 0;
}

void store_queue_init(store_queue_t *q)
{
    q->head = NULL;
    q->tail = &q->head;
    q->n = 0;
}

void store_queue_add(store_queue_t *q, store_job_t *job)
{
    job->next_in_queue = NULL;
    job->status = 0;
    job->commit_lsn = 0;
    *q->tail = job;
    q->tail = &job->next_in_queue;
    q->n++;
}

void store_submit_queue(store_t *s, store_queue_t *q)
{
    if (q->head == NULL)
        return;
    size_t bg = 0;
    for (store_job_t *j = q->head; j != NULL; j = j->next_in_queue)
        bg += j->background ? 1 : 0;
    metrics_add(&metrics_g.store_submitted, q->n - bg);
    pthread_mutex_lock(&s->lock);
    *s->tail = q->head;
    s->tail = q->tail;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    store_queue_init(q);
}

void store_submit(store_t *s, store_job_t *job)
{
    store_queue_t q;
    store_queue_init(&q);
    store_queue_add(&q, job);
    store_submit_queue(s, &q);
}

int store_write_sync(store_t *s, store_job_t *job)
{
    if (s->running) {
        bs_error_set(&job->err, BS_ERR_INTERNAL, "store_write_sync while the writer runs");
        return job->status = -1;
    }
    metrics_add(&metrics_g.store_submitted, 1);
    job->next_in_queue = NULL;
    job->status = 0;
    run_counted(s, job);
    store_outbox_committed(s, job);
    if (job->status == 0 && job->committed != NULL)
        job->committed(job);
    return job->status;
}

int store_ping(store_conn_t *conn)
{
    bs_error_t err;
    bs_error_init(&err);
    store_stmt_t *st = store_query(conn, "SELECT 1", NULL, 0, &err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, &err);
    store_done(st);
    return rc == 1 ? 0 : -1;
}

int store_reads_inline(const store_t *s)
{
    return s->ops->read_submit == NULL;
}

void store_read(store_t *s, int worker_idx, store_job_t *job)
{
    store_read_after(s, worker_idx, job, 0);
}

int store_has_replicas(const store_t *s)
{
    int up;
    int64_t lag;
    return s->ops->replica_state != NULL && s->ops->replica_state((store_t *)s, 0, &up, &lag) == 0;
}

int store_replica_state(store_t *s, size_t i, int *up, int64_t *lag_ms)
{
    return s->ops->replica_state != NULL ? s->ops->replica_state(s, i, up, lag_ms) : -1;
}

void store_read_after(store_t *s, int worker_idx, store_job_t *job, uint64_t min_lsn)
{
    job->min_lsn = min_lsn;
    bs_error_init(&job->err);
    job->status = 0;
    if (s->ops->read_submit == NULL) {
        /* SQLite: on the worker's own reader, now; the completion before we return. */
        job->status = job->run(job, s->ops->reader(s, worker_idx)) == 0 ? 0 : -1;
        if (job->status != 0 && job->err.code == BS_ERR_OK)
            bs_error_set(&job->err, BS_ERR_INTERNAL, NULL);
        job->msg.deliver(&job->msg);
        return;
    }
    store_queue_add(&s->turn_reads[(unsigned)worker_idx % STORE_MAX_WORKERS], job);
}

void store_read_flush(store_t *s, int worker_idx)
{
    store_queue_t *q = &s->turn_reads[(unsigned)worker_idx % STORE_MAX_WORKERS];
    if (q->head == NULL)
        return;
    s->ops->read_submit(s, q->head, q->tail, q->n);
    store_queue_init(q);
}

int store_run_pooled(store_t *s, store_job_t *job)
{
    if (s->ops->read_submit == NULL)
        return -1;
    job->primary = 1;
    job->min_lsn = 0;
    job->next_in_queue = NULL;
    s->ops->read_submit(s, job, &job->next_in_queue, 1);
    return 0;
}

void store_get_stats(store_t *s, store_stats_t *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
    out->round_trips = s->ops->round_trips != NULL ? s->ops->round_trips(s) : 0;
}

int store_exec_later(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                     store_later_fn done, void *arg, bs_error_t *err)
{
    if (c->ops->exec_later != NULL)
        return c->ops->exec_later(c, sql, params, nparams, done, arg, err);
    store_stmt_t *st = store_query(c, sql, params, nparams, err);
    if (st == NULL)
        return -1;
    int rc = done(arg, st, err);
    store_done(st);
    return rc;
}

store_stmt_t *store_query(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                          bs_error_t *err)
{
    return c->ops->query(c, sql, params, nparams, err);
}

int store_step(store_stmt_t *st, bs_error_t *err)
{
    return st->ops->step(st, err);
}

int store_ncols(store_stmt_t *st)
{
    return st->ops->ncols(st);
}

const char *store_col_name(store_stmt_t *st, int i)
{
    return st->ops->col_name(st, i);
}

bs_value_t store_col(store_stmt_t *st, int i)
{
    return st->ops->col(st, i);
}

void store_done(store_stmt_t *st)
{
    if (st != NULL)
        st->ops->done(st);
}

int64_t store_exec(store_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams,
                   bs_error_t *err)
{
    return c->ops->exec(c, sql, params, nparams, err);
}

int store_exec_script(store_conn_t *c, const char *sql, bs_error_t *err)
{
    return c->ops->exec_script(c, sql, err);
}

void store_reader_release(store_conn_t *c)
{
    c->ops->reader_release(c);
}

void store_set_budget(store_conn_t *c, int budget_ms)
{
    c->ops->set_budget(c, budget_ms);
}

void store_clear_cache(store_conn_t *c)
{
    c->ops->clear_cache(c);
}

static uint64_t definitions_gen;

void store_definitions_changed(void)
{
    /* Release: a job queued after the publish sees the new generation. */
    __atomic_add_fetch(&definitions_gen, 1, __ATOMIC_ACQ_REL);
}

uint64_t store_definitions_gen(void)
{
    return __atomic_load_n(&definitions_gen, __ATOMIC_ACQUIRE);
}
