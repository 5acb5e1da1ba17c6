/* The SQLite store: group commit from many threads, per-job savepoints, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"

typedef struct {
    store_job_t job;
    int64_t value;
    int fail;
} ins_job_t;

static int run_insert(store_job_t *j, store_conn_t *c)
{
    ins_job_t *ij = (ins_job_t *)j;
    bs_value_t p = bs_val_int(ij->value);
    if (store_exec(c, "INSERT INTO t (v) VALUES (?1)", &p, 1, &j->err) < 0)
        return -1;
    if (ij->fail) {
        bs_error_set(&j->err, BS_ERR_BAD_REQUEST, "refused");
        return -1;
    }
    return 0;
}

static int run_ddl(store_job_t *j, store_conn_t *c)
{
    return store_exec_script(c, "CREATE TABLE t (v INTEGER UNIQUE)", &j->err);
}

static void deliver(mailbox_msg_t *m)
{
    (void)m;
}

static char *tmpdb(void)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/basalt-test-%d.db", (int)getpid());
    unlink(path);
    char side[80];
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
    return path;
}

static int64_t count(store_t *s)
{
    bs_error_t err;
    bs_error_init(&err);
    store_stmt_t *st = store_query(store_reader(s, 0), "SELECT COUNT(*) FROM t", NULL, 0, &err);
    assert_non_null(st);
    assert_int_equal(store_step(st, &err), 1);
    int64_t n = store_col(st, 0).i;
    store_done(st);
    return n;
}

#define THREADS 4
#define PER_THREAD 500

typedef struct {
    store_t *s;
    mailbox_t mb;
    int base;
    int ok, failed;
} producer_t;

static void *produce(void *arg)
{
    producer_t *p = arg;
    ins_job_t *jobs = calloc(PER_THREAD, sizeof(*jobs));
    for (int i = 0; i < PER_THREAD; i++) {
        jobs[i].job.run = run_insert;
        jobs[i].job.reply_to = &p->mb;
        jobs[i].job.msg.deliver = deliver;
        jobs[i].value = p->base + i;
        jobs[i].fail = (i % 10) == 9; /* every tenth job rolls back its own savepoint */
        store_submit(p->s, &jobs[i].job);
    }
    int done = 0;
    while (done < PER_THREAD) {
        usleep(1000);
        done += mailbox_drain(&p->mb);
    }
    for (int i = 0; i < PER_THREAD; i++)
        if (jobs[i].job.status == 0)
            p->ok++;
        else
            p->failed++;
    free(jobs);
    return NULL;
}

/* A fresh database with table t (one DDL job, one commit) and its writer running. */
static store_t *started_store(void)
{
    store_config_t cfg = {.path = tmpdb(), .readers = 1, .max_batch = 64};
    bs_error_t err;
    bs_error_init(&err);
    store_t *s = store_open(&cfg, &err);
    assert_non_null(s);
    store_job_t ddl = {.run = run_ddl};
    assert_int_equal(store_write_sync(s, &ddl), 0);
    assert_int_equal(store_start_writer(s, &err), 0);
    return s;
}

static void test_group_commit(void **state)
{
    (void)state;
    store_t *s = started_store();
    producer_t p[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        memset(&p[i], 0, sizeof(p[i]));
        p[i].s = s;
        p[i].base = i * 100000;
        assert_int_equal(mailbox_init(&p[i].mb), 0);
        pthread_create(&th[i], NULL, produce, &p[i]);
    }
    int ok = 0, failed = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ok += p[i].ok;
        failed += p[i].failed;
        mailbox_destroy(&p[i].mb);
    }
    store_stop_writer(s);
    assert_int_equal(ok, THREADS * PER_THREAD * 9 / 10);
    assert_int_equal(failed, THREADS * PER_THREAD / 10);
    /* Exactly the acknowledged rows are there: failed jobs left nothing behind. */
    assert_int_equal(count(s), ok);
    store_stats_t st;
    store_get_stats(s, &st);
    assert_int_equal(st.jobs, THREADS * PER_THREAD + 1); /* + the DDL job */
    assert_true(st.commits < st.jobs);                   /* batching happened */
    store_close(s);
}

/* A queue of held-back jobs goes to the writer in one piece: its jobs share one
 * commit, keep their order, and each still succeeds or fails on its own. */
static void test_submit_queue(void **state)
{
    (void)state;
    store_t *s = started_store();
    mailbox_t mb;
    assert_int_equal(mailbox_init(&mb), 0);
    enum { N = 40 };
    ins_job_t jobs[N];
    memset(jobs, 0, sizeof(jobs));
    store_queue_t q;
    store_queue_init(&q);
    store_submit_queue(s, &q); /* an empty queue is a no-op */
    for (int i = 0; i < N; i++) {
        jobs[i].job.run = run_insert;
        jobs[i].job.reply_to = &mb;
        jobs[i].job.msg.deliver = deliver;
        jobs[i].value = i % 30; /* the last ten repeat earlier values: UNIQUE refuses them */
        store_queue_add(&q, &jobs[i].job);
    }
    assert_int_equal(q.n, N);
    store_submit_queue(s, &q);
    assert_null(q.head);
    assert_int_equal(q.n, 0);
    int done = 0;
    while (done < N) {
        usleep(1000);
        done += mailbox_drain(&mb);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(jobs[i].job.status, i < 30 ? 0 : -1);
    store_stats_t st;
    store_get_stats(s, &st);
    assert_int_equal(st.jobs, N + 1);
    assert_int_equal(st.commits, 2); /* the DDL, then the whole queue at once */
    store_stop_writer(s);
    assert_int_equal(count(s), 30);
    mailbox_destroy(&mb);
    store_close(s);
}

static void test_constraint_error(void **state)
{
    (void)state;
    store_config_t cfg = {.path = tmpdb(), .readers = 1};
    bs_error_t err;
    bs_error_init(&err);
    store_t *s = store_open(&cfg, &err);
    store_job_t ddl = {.run = run_ddl};
    assert_int_equal(store_write_sync(s, &ddl), 0);
    ins_job_t a = {.job = {.run = run_insert}, .value = 7};
    ins_job_t b = {.job = {.run = run_insert}, .value = 7};
    assert_int_equal(store_write_sync(s, &a.job), 0);
    assert_int_equal(store_write_sync(s, &b.job), -1);
    assert_int_equal(b.job.err.code, BS_ERR_VALIDATION);
    assert_non_null(strstr(b.job.err.message, "UNIQUE"));
    assert_int_equal(count(s), 1);
    /* Bad SQL is an error, not a crash. */
    assert_null(store_query(store_reader(s, 0), "SELEC nonsense", NULL, 0, &err));
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_group_commit),
                                       cmocka_unit_test(test_submit_queue),
                                       cmocka_unit_test(test_constraint_error)};
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    tmpdb(); /* removes the last test's database: nothing is left in /tmp */
    return failed;
}
