/*
 * Durable jobs and cron schedules; see jobs.h for the contract and ADR 0009 for the
 * design. Times are wall-clock milliseconds since the epoch, stored as integers, so
 * that instances agree on due times and leases (their clocks must be roughly in
 * step; a lease has a grace of lease_grace_ms for that and for the handler's own
 * overrun).
 */
#include "jobs/jobs.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "base/mailbox.h"
#include "base/util.h"
#include "jobs/cron.h"
#include "rules/dialect.h"

#define MAX_HANDLERS 64
#define MAX_CRONS 32
#define MAX_RUNNERS 64

static struct {
    char name[64];
    jobs_handler_fn fn;
} handlers[MAX_HANDLERS];
static int nhandlers;

static struct {
    char id[64];
    char expr[128];
    char handler[64];
    cron_t sched;
    int64_t next_ms; /* scheduler thread only */
} crons[MAX_CRONS];
static int ncrons;

/* The running service. */
static struct {
    store_t *store;
    jobs_config_t cfg;
    char owner[UTIL_ID_LEN + 1]; /* this instance, in the rows it holds */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* runners and the scheduler wait on it; wake and stop signal it */
    unsigned wakeups;    /* under lock: bumped by jobs_wake */
    int stopping;        /* under lock */
    pthread_t runners[MAX_RUNNERS], scheduler;
    int nrunners, started;
} svc = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

/* Counters (relaxed atomics) and the gauges the scheduler refreshes. */
static struct {
    uint64_t runs, succeeded, failed, dead, lease_expired, lost_lease;
    int64_t ready, running, done, dead_now, oldest_ready_ms; /* gauges */
    int64_t gauges_at_ms;
} stats;

static void add(uint64_t *c, uint64_t n)
{
    __atomic_add_fetch(c, n, __ATOMIC_RELAXED);
}
static void set_gauge(int64_t *g, int64_t v)
{
    __atomic_store_n(g, v, __ATOMIC_RELAXED);
}
static int64_t gauge(const int64_t *g)
{
    return __atomic_load_n(g, __ATOMIC_RELAXED);
}

static jobs_handler_fn find_handler(const char *name)
{
    for (int i = 0; i < nhandlers; i++)
        if (strcmp(handlers[i].name, name) == 0)
            return handlers[i].fn;
    return NULL;
}

int jobs_known(const char *name)
{
    return name != NULL && find_handler(name) != NULL;
}

int jobs_register(const char *name, jobs_handler_fn fn)
{
    if (nhandlers == MAX_HANDLERS || strlen(name) >= sizeof(handlers[0].name) || find_handler(name) != NULL)
        return -1;
    snprintf(handlers[nhandlers].name, sizeof(handlers[0].name), "%s", name);
    handlers[nhandlers++].fn = fn;
    return 0;
}

int jobs_cron_register(const char *id, const char *expr, const char *handler, bs_error_t *err)
{
    char why[160];
    if (ncrons == MAX_CRONS || strlen(id) >= sizeof(crons[0].id) || strlen(expr) >= sizeof(crons[0].expr)) {
        bs_error_set(err, BS_ERR_INTERNAL,
                     "Cannot register cron \"%s\": the table is full or a name too long.", id);
        return -1;
    }
    if (find_handler(handler) == NULL) {
        bs_error_set(err, BS_ERR_INTERNAL, "Cron \"%s\" names no registered job handler (\"%s\").", id,
                     handler);
        return -1;
    }
    for (int i = 0; i < ncrons; i++)
        if (strcmp(crons[i].id, id) == 0) {
            bs_error_set(err, BS_ERR_INTERNAL, "Cron \"%s\" is registered twice.", id);
            return -1;
        }
    if (cron_parse(expr, strlen(expr), &crons[ncrons].sched, why, sizeof(why)) != 0) {
        bs_error_set(err, BS_ERR_INTERNAL, "Cron \"%s\": %s", id, why);
        return -1;
    }
    snprintf(crons[ncrons].id, sizeof(crons[0].id), "%s", id);
    snprintf(crons[ncrons].expr, sizeof(crons[0].expr), "%s", expr);
    snprintf(crons[ncrons].handler, sizeof(crons[0].handler), "%s", handler);
    ncrons++;
    return 0;
}

int jobs_bootstrap(store_conn_t *conn, bs_error_t *err)
{
    return store_exec_script(conn, dialect_get(store_conn_dialect(conn))->jobs_bootstrap_sql, err);
}

static int64_t col_i64(store_stmt_t *st, int i)
{
    bs_value_t v = store_col(st, i);
    if (v.type == BS_VAL_INT)
        return v.i;
    if (v.type == BS_VAL_DOUBLE)
        return (int64_t)v.d;
    if (v.type == BS_VAL_TEXT) {
        int64_t out = 0;
        return util_parse_i64(v.s, v.n, &out) == 0 ? out : 0;
    }
    return 0;
}

static char *col_dup(store_stmt_t *st, int i)
{
    bs_value_t v = store_col(st, i);
    if (v.type != BS_VAL_TEXT)
        return strdup("");
    char *s = malloc(v.n + 1);
    if (s != NULL) {
        memcpy(s, v.s, v.n);
        s[v.n] = '\0';
    }
    return s;
}

int jobs_enqueue(store_conn_t *conn, const char *name, const json_t *payload, const jobs_opts_t *opts,
                 bs_error_t *err)
{
    jobs_opts_t o = opts ? *opts : (jobs_opts_t){0};
    const dialect_t *d = dialect_get(store_conn_dialect(conn));
    int64_t now = util_now_ms();
    char id[UTIL_ID_LEN + 1];
    util_random_id(id);
    char *text = payload ? json_dumps(payload, JSON_COMPACT) : NULL;
    const char *p = text ? text : "{}";
    int max_attempts = o.max_attempts > 0         ? o.max_attempts
                       : svc.cfg.max_attempts > 0 ? svc.cfg.max_attempts
                                                  : 5;
    int timeout = o.timeout_ms > 0 ? o.timeout_ms : svc.cfg.timeout_ms > 0 ? svc.cfg.timeout_ms : 30000;
    bs_value_t v[8] = {bs_val_text(id, strlen(id)),
                       bs_val_text(name, strlen(name)),
                       bs_val_text(p, strlen(p)),
                       bs_val_int(max_attempts),
                       bs_val_int(timeout),
                       bs_val_int(o.run_at_ms > 0 ? o.run_at_ms : now),
                       o.unique_key ? bs_val_text(o.unique_key, strlen(o.unique_key)) : bs_val_null(),
                       bs_val_int(now)};
    char sql[512];
    int n = snprintf(
        sql, sizeof(sql),
        "INSERT INTO _jobs (id, name, payload, state, attempts, max_attempts, timeout_ms, run_at, "
        "lease_until, owner, last_error, uniq, created, updated) VALUES (?1, ?2, ?3, 'ready', 0, ?4, "
        "?5, ?6, 0, '', '', ?7, ?8, ?8)");
    if (o.unique_key != NULL)
        snprintf(sql + n, sizeof(sql) - (size_t)n, d->insert_ignore_fmt, "uniq");
    int64_t rc = store_exec(conn, sql, v, 8, err);
    free(text);
    if (rc >= 0 && o.id_out != NULL)
        memcpy(o.id_out, id, sizeof(id));
    return rc < 0 ? -1 : 0;
}

int jobs_cancel_unique(store_conn_t *conn, const char *unique_key, bs_error_t *err)
{
    bs_value_t v = bs_val_text(unique_key, strlen(unique_key));
    return store_exec(conn, "DELETE FROM _jobs WHERE uniq = ?1 AND state = 'ready'", &v, 1, err) < 0 ? -1 : 0;
}

void jobs_wake(void)
{
    pthread_mutex_lock(&svc.lock);
    svc.wakeups++;
    pthread_cond_broadcast(&svc.cond);
    pthread_mutex_unlock(&svc.lock);
}

/* ---- a runner's own store jobs ---- */

static __thread mailbox_t *tl_mailbox;
static __thread int tl_delivered;

static void sync_delivered(mailbox_msg_t *msg)
{
    (void)msg;
    tl_delivered = 1;
}

/* Submits job (to the writer, or with try_pooled to store_run_pooled when the
 * backend has that pool) and waits for it on this thread's mailbox. */
static int store_wait(store_t *s, store_job_t *job, int try_pooled)
{
    mailbox_t own;
    int temporary = tl_mailbox == NULL;
    if (temporary) {
        if (mailbox_init(&own) != 0) {
            bs_error_set(&job->err, BS_ERR_NOMEM, NULL);
            return job->status = -1;
        }
        tl_mailbox = &own;
    }
    job->msg.next = NULL;
    job->msg.deliver = sync_delivered;
    job->reply_to = tl_mailbox;
    job->next_in_queue = NULL;
    job->background = 1;
    tl_delivered = 0;
    job->primary = 0;
    if (!try_pooled || store_run_pooled(s, job) != 0)
        store_submit(s, job);
    while (!tl_delivered) {
        struct pollfd p = {.fd = tl_mailbox->efd, .events = POLLIN};
        poll(&p, 1, 1000);
        mailbox_drain(tl_mailbox);
    }
    if (temporary) {
        mailbox_destroy(&own);
        tl_mailbox = NULL;
    }
    return job->status;
}

int jobs_store_run(store_t *s, store_job_t *job)
{
    return store_wait(s, job, 0);
}

/* The queue's own claims and outcomes: on PostgreSQL on the pool's connections, each
 * statement its own short transaction (FOR UPDATE SKIP LOCKED keeps the claimers of
 * every thread and instance apart), so that they neither queue behind the request
 * writes nor make them wait; on SQLite through the single writer (one connection
 * writes there anyway, and its group commit batches them). */
static int queue_pooled(void)
{
    return !store_reads_inline(svc.store);
}

static int queue_run(store_job_t *job)
{
    return store_wait(svc.store, job, queue_pooled());
}

/* ---- claiming and completing ---- */

typedef struct {
    store_job_t job;
    char *id, *name, *payload;
    int attempts, max_attempts, timeout_ms;
    int found;
    int lease_expired; /* it was running elsewhere and that runner's lease ran out */
} claim_t;

/* What a claim of a job whose lease ran out writes as its last error. */
#define LEASE_MSG "the instance running it stopped before it finished (lease expired)"

static int run_claim(store_job_t *job, store_conn_t *conn)
{
    claim_t *c = (claim_t *)job;
    const dialect_t *d = dialect_get(store_conn_dialect(conn));
    char sql[768];
    snprintf(
        sql, sizeof(sql),
        "UPDATE _jobs SET state = 'running', attempts = attempts + 1, owner = ?2, lease_until = ?1 + "
        "timeout_ms + ?3, updated = ?1, last_error = CASE WHEN state = 'running' THEN '" LEASE_MSG
        "' ELSE last_error END WHERE id IN (SELECT id FROM _jobs WHERE (state = 'ready' AND run_at "
        "<= ?1) OR (state = 'running' AND lease_until <= ?1) ORDER BY run_at LIMIT 1%s) RETURNING id, name, "
        "payload, attempts, max_attempts, timeout_ms, last_error",
        d->skip_locked);
    int64_t now = util_now_ms();
    bs_value_t v[3] = {bs_val_int(now), bs_val_text(svc.owner, strlen(svc.owner)),
                       bs_val_int(svc.cfg.lease_grace_ms)};
    store_stmt_t *st = store_query(conn, sql, v, 3, &job->err);
    if (st == NULL)
        return -1;
    int rc;
    while ((rc = store_step(st, &job->err)) == 1) {
        if (c->found)
            continue;
        c->found = 1;
        c->id = col_dup(st, 0);
        c->name = col_dup(st, 1);
        c->payload = col_dup(st, 2);
        c->attempts = (int)col_i64(st, 3);
        c->max_attempts = (int)col_i64(st, 4);
        c->timeout_ms = (int)col_i64(st, 5);
        bs_value_t le = store_col(st, 6);
        c->lease_expired =
            le.type == BS_VAL_TEXT && le.n == strlen(LEASE_MSG) && memcmp(le.s, LEASE_MSG, le.n) == 0;
    }
    store_done(st);
    if (rc < 0 || (c->found && (c->id == NULL || c->name == NULL || c->payload == NULL)))
        return -1;
    return 0;
}

typedef struct {
    store_job_t job;
    const claim_t *c;
    const char *state; /* done, ready, dead */
    int64_t run_at;    /* ready: the back-off, from the moment the outcome is recorded */
    const char *error;
    int64_t changed;
    /* When not NULL: the next due job is claimed in the same job (on the writer, in
     * the same transaction, which halves the runner's transactions on a busy queue;
     * on the pool, as a second statement right after). */
    claim_t *next;
    int pooled; /* it runs on the pool (each statement commits by itself) */
} finish_t;

static int run_finish(store_job_t *job, store_conn_t *conn)
{
    finish_t *f = (finish_t *)job;
    /* The back-off counts from the moment the outcome is recorded (updated). */
    int64_t now = util_now_ms();
    bs_value_t v[7] = {bs_val_int(now),
                       bs_val_text(f->c->id, strlen(f->c->id)),
                       bs_val_text(svc.owner, strlen(svc.owner)),
                       bs_val_int(f->c->attempts),
                       bs_val_text(f->state, strlen(f->state)),
                       bs_val_int(now + f->run_at),
                       bs_val_text(f->error, strlen(f->error))};
    /* Only while this instance still holds the lease: a job reclaimed elsewhere
     * after our lease ran out belongs to its new runner. */
    f->changed = store_exec(conn,
                            "UPDATE _jobs SET state = ?5, run_at = CASE WHEN ?5 = 'ready' THEN ?6 ELSE "
                            "run_at END, lease_until = 0, last_error = ?7, updated = ?1 "
                            "WHERE id = ?2 AND owner = ?3 AND attempts = ?4 AND state = 'running'",
                            v, 7, &job->err);
    if (f->changed < 0)
        return -1;
    if (f->next != NULL && run_claim(&f->next->job, conn) != 0) {
        if (f->pooled) {
            /* The outcome has committed on its own: claim nothing now (the runner
             * claims again at once) rather than record the outcome twice. */
            free(f->next->id), free(f->next->name), free(f->next->payload);
            *f->next = (claim_t){.job = f->next->job};
            return 0;
        }
        job->err = f->next->job.err;
        return -1;
    }
    return 0;
}

/* Back-off before attempt n+1: base * 2^(n-1), capped, with jitter in [d/2, d]. */
static int64_t backoff_ms(int attempts)
{
    int64_t base = svc.cfg.backoff_ms > 0 ? svc.cfg.backoff_ms : 1000;
    int64_t cap = svc.cfg.backoff_max_ms > 0 ? svc.cfg.backoff_max_ms : 3600000;
    int64_t d = base;
    for (int i = 1; i < attempts && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    uint32_t r;
    util_random_bytes(&r, sizeof(r));
    return d / 2 + (int64_t)(r % (uint32_t)(d / 2 + 1));
}

static void claim_clear(claim_t *c)
{
    free(c->id), free(c->name), free(c->payload);
    c->id = c->name = c->payload = NULL;
    c->found = 0;
}

/* Records c's outcome and, with next, claims the next job (next->found says). */
static void finish(claim_t *c, const char *state, int64_t run_at, const char *error, claim_t *next)
{
    arena_t a;
    arena_init(&a, 256);
    finish_t f = {.job = {.run = run_finish, .arena = &a},
                  .c = c,
                  .state = state,
                  .run_at = run_at,
                  .error = error,
                  .next = next,
                  .pooled = queue_pooled()};
    /* The outcome must reach the database: a store that is briefly down is retried
     * until the lease would end anyway (then the job runs again elsewhere). */
    for (int tries = 0; tries < 10; tries++) {
        bs_error_init(&f.job.err);
        if (queue_run(&f.job) == 0)
            break;
        if (f.next != NULL) { /* rolled back: claim nothing, record the outcome alone */
            claim_clear(f.next);
            f.next = NULL;
        }
        LOGF(LOG_WARN, "jobs", "cannot record the outcome of job %s (%s): %s", c->id, c->name,
             f.job.err.message);
        usleep(200000);
    }
    if (f.changed == 0) {
        add(&stats.lost_lease, 1);
        LOGF(LOG_WARN, "jobs", "job %s (%s) finished after its lease ran out; its new runner decides", c->id,
             c->name);
    }
    arena_free(&a);
}

static void run_one(claim_t *c, claim_t *next)
{
    char msg[600];
    if (c->lease_expired) {
        add(&stats.lease_expired, 1);
        LOGF(LOG_WARN, "jobs", "job %s (%s): attempt %d %s", c->id, c->name, c->attempts - 1, LEASE_MSG);
    }
    if (c->attempts > c->max_attempts) {
        /* Claimed again after a lease ran out on its last attempt (the instance died). */
        add(&stats.dead, 1);
        snprintf(msg, sizeof(msg),
                 "the instance running attempt %d stopped before it finished (lease expired)",
                 c->attempts - 1);
        LOGF(LOG_WARN, "jobs", "job %s (%s) is dead: %s", c->id, c->name, msg);
        c->attempts--; /* the row's count stays at what was tried */
        finish(c, "dead", 0, msg, next);
        return;
    }
    jobs_handler_fn fn = find_handler(c->name);
    json_error_t jerr;
    json_t *payload = json_loads(c->payload, 0, &jerr);
    jobs_ctx_t ctx = {.id = c->id,
                      .name = c->name,
                      .payload = payload,
                      .attempt = c->attempts,
                      .max_attempts = c->max_attempts,
                      .deadline_ms = util_now_ms() + c->timeout_ms,
                      .store = svc.store};
    int rc;
    add(&stats.runs, 1);
    if (fn == NULL) {
        snprintf(ctx.error, sizeof(ctx.error), "no handler named \"%s\" is registered on this instance",
                 c->name);
        rc = JOBS_RETRY;
    } else if (payload == NULL) {
        snprintf(ctx.error, sizeof(ctx.error), "the payload is not JSON");
        rc = JOBS_FAIL;
    } else {
        rc = fn(&ctx);
        if (util_now_ms() > ctx.deadline_ms && rc != JOBS_OK) {
            snprintf(ctx.error + strlen(ctx.error), sizeof(ctx.error) - strlen(ctx.error),
                     "%stimed out after %d ms", ctx.error[0] ? "; " : "", c->timeout_ms);
        } else if (util_now_ms() > ctx.deadline_ms) {
            snprintf(ctx.error, sizeof(ctx.error), "timed out after %d ms", c->timeout_ms);
            rc = JOBS_RETRY;
        }
    }
    json_decref(payload);
    if (rc == JOBS_OK) {
        add(&stats.succeeded, 1);
        finish(c, "done", 0, "", next);
        return;
    }
    add(&stats.failed, 1);
    if (ctx.error[0] == '\0')
        snprintf(ctx.error, sizeof(ctx.error), "the handler failed");
    if (rc == JOBS_FAIL || c->attempts >= c->max_attempts) {
        add(&stats.dead, 1);
        LOGF(LOG_WARN, "jobs", "job %s (%s) is dead after %d attempt(s): %s", c->id, c->name, c->attempts,
             ctx.error);
        finish(c, "dead", 0, ctx.error, next);
        return;
    }
    int64_t delay = backoff_ms(c->attempts);
    LOGF(LOG_INFO, "jobs", "job %s (%s) attempt %d of %d failed, retry in %lld ms: %s", c->id, c->name,
         c->attempts, c->max_attempts, (long long)delay, ctx.error);
    finish(c, "ready", delay, ctx.error, next);
}

static int stopping(void)
{
    pthread_mutex_lock(&svc.lock);
    int s = svc.stopping;
    pthread_mutex_unlock(&svc.lock);
    return s;
}

int jobs_stopping(void)
{
    return stopping();
}

/* Waits up to ms for a wake-up or the stop; returns at once if one came since seen. */
static void idle_wait(unsigned seen, int ms, int wakeable)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&svc.lock);
    while (!svc.stopping && (!wakeable || svc.wakeups == seen))
        if (pthread_cond_timedwait(&svc.cond, &svc.lock, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&svc.lock);
}

static void *runner_main(void *arg)
{
    util_thread_name("jobs");
    (void)arg;
    mailbox_t mb;
    if (mailbox_init(&mb) != 0) {
        LOGF(LOG_ERROR, "jobs", "a runner cannot start: %s", strerror(errno));
        return NULL;
    }
    tl_mailbox = &mb;
    arena_t a;
    arena_init(&a, 512);
    int failures = 0;
    claim_t next = {.job = {.run = run_claim, .arena = &a}};
    while (!stopping() || next.found) {
        pthread_mutex_lock(&svc.lock);
        unsigned seen = svc.wakeups;
        pthread_mutex_unlock(&svc.lock);
        claim_t c = {.job = {.run = run_claim, .arena = &a}};
        if (next.found) {
            c = next; /* claimed with the last outcome: run it even when stopping */
            next.found = 0;
            next.id = next.name = next.payload = NULL;
        } else {
            bs_error_init(&c.job.err);
            if (queue_run(&c.job) != 0) {
                /* The store is down: log once in a while, keep polling. */
                if (failures++ % 50 == 0)
                    LOGF(LOG_WARN, "jobs", "cannot claim jobs: %s", c.job.err.message);
                claim_clear(&c);
                idle_wait(seen, svc.cfg.poll_ms, 1);
                continue;
            }
        }
        failures = 0;
        if (c.found) {
            next = (claim_t){.job = {.run = run_claim, .arena = &a}};
            run_one(&c, stopping() ? NULL : &next);
            claim_clear(&c);
            continue; /* the next one at once */
        }
        idle_wait(seen, svc.cfg.poll_ms, 1);
    }
    arena_free(&a);
    tl_mailbox = NULL;
    mailbox_destroy(&mb);
    return NULL;
}

/* ---- the scheduler: cron ticks and the gauges ---- */

typedef struct {
    store_job_t job;
    int cron;     /* index */
    int64_t tick; /* 0: a manual run (no unique key) */
} tick_t;

static int run_tick(store_job_t *job, store_conn_t *conn)
{
    tick_t *t = (tick_t *)job;
    char key[160];
    snprintf(key, sizeof(key), "cron:%s:%lld", crons[t->cron].id, (long long)t->tick);
    json_t *payload = json_pack("{s:s, s:I}", "cron", crons[t->cron].id, "tick", (json_int_t)t->tick);
    jobs_opts_t o = {.unique_key = t->tick ? key : NULL, .max_attempts = 3};
    int rc = jobs_enqueue(conn, crons[t->cron].handler, payload, &o, &job->err);
    json_decref(payload);
    return rc;
}

static void (*ticks[8])(store_conn_t *conn);
static int nticks;

int jobs_add_tick(void (*fn)(store_conn_t *conn))
{
    if (nticks == 8)
        return -1;
    ticks[nticks++] = fn;
    return 0;
}

static int run_gauges(store_job_t *job, store_conn_t *conn)
{
    for (int i = 0; i < nticks; i++)
        ticks[i](conn);
    store_stmt_t *st = store_query(conn, "SELECT state, count(*), min(run_at) FROM _jobs GROUP BY state",
                                   NULL, 0, &job->err);
    if (st == NULL)
        return -1;
    int64_t ready = 0, running = 0, done = 0, dead = 0, oldest = 0;
    int rc;
    while ((rc = store_step(st, &job->err)) == 1) {
        bs_value_t s = store_col(st, 0);
        int64_t n = col_i64(st, 1);
        if (s.type != BS_VAL_TEXT)
            continue;
        if (s.n == 5 && memcmp(s.s, "ready", 5) == 0) {
            ready = n;
            oldest = col_i64(st, 2);
        } else if (s.n == 7 && memcmp(s.s, "running", 7) == 0) {
            running = n;
        } else if (s.n == 4 && memcmp(s.s, "done", 4) == 0) {
            done = n;
        } else if (s.n == 4 && memcmp(s.s, "dead", 4) == 0) {
            dead = n;
        }
    }
    store_done(st);
    if (rc < 0)
        return -1;
    set_gauge(&stats.ready, ready);
    set_gauge(&stats.running, running);
    set_gauge(&stats.done, done);
    set_gauge(&stats.dead_now, dead);
    set_gauge(&stats.oldest_ready_ms, ready ? oldest : 0);
    set_gauge(&stats.gauges_at_ms, util_now_ms());
    return 0;
}

static void *scheduler_main(void *arg)
{
    util_thread_name("cron");
    (void)arg;
    mailbox_t mb;
    if (mailbox_init(&mb) != 0)
        return NULL;
    tl_mailbox = &mb;
    arena_t a;
    arena_init(&a, 512);
    int64_t now = util_now_ms();
    for (int i = 0; i < ncrons; i++)
        crons[i].next_ms = cron_next(&crons[i].sched, now);
    int64_t next_gauges = 0;
    while (!stopping()) {
        now = util_now_ms();
        for (int i = 0; i < ncrons; i++) {
            if (crons[i].next_ms < 0 || now < crons[i].next_ms)
                continue;
            tick_t t = {.job = {.run = run_tick, .arena = &a}, .cron = i, .tick = crons[i].next_ms};
            bs_error_init(&t.job.err);
            if (jobs_store_run(svc.store, &t.job) != 0) {
                LOGF(LOG_WARN, "jobs", "cannot queue cron %s: %s (retrying)", crons[i].id, t.job.err.message);
                continue; /* the same tick again next turn */
            }
            /* Ticks missed while the instance was down or stuck are not replayed. */
            crons[i].next_ms = cron_next(&crons[i].sched, now);
            jobs_wake();
        }
        if (now >= next_gauges) {
            store_job_t g = {.run = run_gauges, .arena = &a};
            bs_error_init(&g.err);
            jobs_store_run(svc.store, &g);
            next_gauges = now + 2000;
        }
        /* Up to the next whole second (ticks are whole minutes). */
        idle_wait(0, (int)(1000 - util_now_ms() % 1000), 0);
    }
    arena_free(&a);
    tl_mailbox = NULL;
    mailbox_destroy(&mb);
    return NULL;
}

/* ---- built-in handlers ---- */

typedef struct {
    store_job_t job;
    int64_t done_before, dead_before;
} cleanup_t;

static int run_cleanup(store_job_t *job, store_conn_t *conn)
{
    cleanup_t *c = (cleanup_t *)job;
    bs_value_t v[2] = {bs_val_int(c->done_before), bs_val_int(c->dead_before)};
    return store_exec(conn,
                      "DELETE FROM _jobs WHERE (state = 'done' AND updated < ?1) OR (state = 'dead' AND "
                      "updated < ?2)",
                      v, 2, &job->err) < 0
               ? -1
               : 0;
}

/* __basaltJobsCleanup__: deletes finished jobs after keep_done_hours, dead ones
 * after seven times that (they are the evidence of a failure). */
static int cleanup_handler(jobs_ctx_t *ctx)
{
    arena_t a;
    arena_init(&a, 256);
    int64_t keep = (int64_t)(svc.cfg.keep_done_hours > 0 ? svc.cfg.keep_done_hours : 24) * 3600000;
    cleanup_t c = {.job = {.run = run_cleanup, .arena = &a},
                   .done_before = util_now_ms() - keep,
                   .dead_before = util_now_ms() - 7 * keep};
    bs_error_init(&c.job.err);
    int rc = jobs_store_run(ctx->store, &c.job);
    if (rc != 0)
        snprintf(ctx->error, sizeof(ctx->error), "%s", c.job.err.message);
    arena_free(&a);
    return rc == 0 ? JOBS_OK : JOBS_RETRY;
}

/* test.sleep {"ms": N, "first_ms": M}: sleeps M ms on the first attempt (default
 * N) and N after, in slices, giving up at the deadline. For the tests only. */
static int test_sleep(jobs_ctx_t *ctx)
{
    json_int_t ms = json_integer_value(json_object_get(ctx->payload, "ms"));
    json_t *first = json_object_get(ctx->payload, "first_ms");
    if (ctx->attempt == 1 && json_is_integer(first))
        ms = json_integer_value(first);
    int64_t until = util_now_ms() + ms;
    while (util_now_ms() < until) {
        if (util_now_ms() > ctx->deadline_ms) {
            snprintf(ctx->error, sizeof(ctx->error), "slept past the deadline");
            return JOBS_RETRY;
        }
        usleep(10000);
    }
    return JOBS_OK;
}

/* test.flaky {"failures": N}: fails its first N attempts, then succeeds. */
static int test_flaky(jobs_ctx_t *ctx)
{
    json_int_t n = json_integer_value(json_object_get(ctx->payload, "failures"));
    if (ctx->attempt <= n) {
        snprintf(ctx->error, sizeof(ctx->error), "planned failure %d of %lld", ctx->attempt, (long long)n);
        return JOBS_RETRY;
    }
    return JOBS_OK;
}

int jobs_start(store_t *s, const jobs_config_t *cfg)
{
    svc.store = s;
    svc.cfg = *cfg;
    if (svc.cfg.poll_ms < 10)
        svc.cfg.poll_ms = 500;
    if (svc.cfg.lease_grace_ms < 0)
        svc.cfg.lease_grace_ms = 30000;
    util_random_id(svc.owner);
    int n = cfg->threads > 0 ? cfg->threads : 2;
    if (n > MAX_RUNNERS)
        n = MAX_RUNNERS;
    if (cfg->test_handlers && !jobs_known("test.sleep")) {
        jobs_register("test.sleep", test_sleep);
        jobs_register("test.flaky", test_flaky);
        bs_error_t err;
        bs_error_init(&err);
        /* Every minute: the tests' view of the once-per-tick scheduling. */
        jobs_cron_register("__basaltTestTick__", "* * * * *", "test.flaky", &err);
    }
    for (int i = 0; i < n; i++) {
        if (pthread_create(&svc.runners[i], NULL, runner_main, NULL) != 0) {
            jobs_stop();
            return -1;
        }
        svc.nrunners++;
    }
    if (pthread_create(&svc.scheduler, NULL, scheduler_main, NULL) != 0) {
        jobs_stop();
        return -1;
    }
    svc.started = 1;
    return 0;
}

/* Registered before anything else registers (a constructor), so that every
 * instance has the cleanup cron whatever the start-up order. */
__attribute__((constructor)) static void register_builtins(void)
{
    bs_error_t err;
    bs_error_init(&err);
    jobs_register("jobs.cleanup", cleanup_handler);
    jobs_cron_register("__basaltJobsCleanup__", "0 * * * *", "jobs.cleanup", &err);
}

void jobs_stop(void)
{
    pthread_mutex_lock(&svc.lock);
    if (svc.stopping) {
        pthread_mutex_unlock(&svc.lock);
        return;
    }
    svc.stopping = 1;
    pthread_cond_broadcast(&svc.cond);
    pthread_mutex_unlock(&svc.lock);
    for (int i = 0; i < svc.nrunners; i++)
        pthread_join(svc.runners[i], NULL);
    if (svc.started)
        pthread_join(svc.scheduler, NULL);
    svc.nrunners = 0;
    svc.started = 0;
}

/* ---- the API's view ---- */

void jobs_crons_json(buf_t *out)
{
    /* As PocketBase lists them: its own ("__"-prefixed) last, the rest by id. */
    int order[MAX_CRONS], n = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < ncrons; i++)
            if ((strncmp(crons[i].id, "__", 2) == 0) == (pass == 1))
                order[n++] = i;
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if ((strncmp(crons[order[a]].id, "__", 2) == 0) == (strncmp(crons[order[b]].id, "__", 2) == 0) &&
                strcmp(crons[order[a]].id, crons[order[b]].id) > 0) {
                int t = order[a];
                order[a] = order[b];
                order[b] = t;
            }
    buf_putc(out, '[');
    for (int k = 0; k < n; k++) {
        int i = order[k];
        if (k)
            buf_putc(out, ',');
        buf_puts(out, "{\"id\":");
        util_json_quote(out, crons[i].id, strlen(crons[i].id));
        buf_puts(out, ",\"expression\":");
        util_json_quote(out, crons[i].expr, strlen(crons[i].expr));
        buf_putc(out, '}');
    }
    buf_putc(out, ']');
}

int jobs_cron_index(const char *id)
{
    for (int i = 0; i < ncrons; i++)
        if (strcmp(crons[i].id, id) == 0)
            return i;
    return -1;
}

int jobs_cron_enqueue_now(store_conn_t *conn, int idx, bs_error_t *err)
{
    tick_t t = {.cron = idx, .tick = 0};
    t.job.err = *err;
    int rc = run_tick(&t.job, conn);
    *err = t.job.err;
    return rc;
}

void jobs_metrics_write(buf_t *out, int64_t now_ms)
{
    buf_puts(
        out,
        "# HELP basalt_jobs Jobs in the queue by state (refreshed every 2 s).\n# TYPE basalt_jobs gauge\n");
    buf_printf(out, "basalt_jobs{state=\"ready\"} %lld\n", (long long)gauge(&stats.ready));
    buf_printf(out, "basalt_jobs{state=\"running\"} %lld\n", (long long)gauge(&stats.running));
    buf_printf(out, "basalt_jobs{state=\"done\"} %lld\n", (long long)gauge(&stats.done));
    buf_printf(out, "basalt_jobs{state=\"dead\"} %lld\n", (long long)gauge(&stats.dead_now));
    int64_t oldest = gauge(&stats.oldest_ready_ms);
    buf_puts(out, "# HELP basalt_jobs_oldest_ready_seconds Age of the oldest ready job past its due time.\n"
                  "# TYPE basalt_jobs_oldest_ready_seconds gauge\n");
    buf_printf(out, "basalt_jobs_oldest_ready_seconds %.3f\n",
               oldest > 0 && now_ms > oldest ? (double)(now_ms - oldest) / 1000.0 : 0.0);
    buf_puts(out, "# HELP basalt_job_runs_total Handler runs on this instance.\n# TYPE basalt_job_runs_total "
                  "counter\n");
    buf_printf(out, "basalt_job_runs_total %llu\n",
               (unsigned long long)__atomic_load_n(&stats.runs, __ATOMIC_RELAXED));
    buf_puts(out, "# HELP basalt_job_failures_total Failed runs (retried or dead).\n"
                  "# TYPE basalt_job_failures_total counter\n");
    buf_printf(out, "basalt_job_failures_total %llu\n",
               (unsigned long long)__atomic_load_n(&stats.failed, __ATOMIC_RELAXED));
    buf_puts(out, "# HELP basalt_job_dead_total Jobs that went to the dead letter on this instance.\n"
                  "# TYPE basalt_job_dead_total counter\n");
    buf_printf(out, "basalt_job_dead_total %llu\n",
               (unsigned long long)__atomic_load_n(&stats.dead, __ATOMIC_RELAXED));
    buf_puts(out,
             "# HELP basalt_job_lease_expired_total Jobs claimed again after their runner's lease ran out.\n"
             "# TYPE basalt_job_lease_expired_total counter\n");
    buf_printf(out, "basalt_job_lease_expired_total %llu\n",
               (unsigned long long)__atomic_load_n(&stats.lease_expired, __ATOMIC_RELAXED));
}
