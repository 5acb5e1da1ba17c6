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

#include <sqlite3.h>

#include "metrics/metrics.h"
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

static const char *tmpdb_path(void)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/basalt-test-%d.db", (int)getpid());
    return path;
}

static char *tmpdb(void)
{
    static char path[64];
    snprintf(path, sizeof(path), "%s", tmpdb_path());
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
    /* Typed: core reads the kind and the columns, never the message. */
    assert_int_equal(b.job.err.conflict, BS_CONFLICT_UNIQUE);
    assert_string_equal(b.job.err.columns, "v");
    assert_int_equal(count(s), 1);
    /* Bad SQL is an error, not a crash. */
    assert_null(store_query(store_reader(s, 0), "SELEC nonsense", NULL, 0, &err));
    store_close(s);
}

/* --- A VFS that fails writes on demand: SQLite's own rollback of a whole batch ----- */

typedef struct {
    sqlite3_file base;
    sqlite3_file *real; /* follows this struct in the same allocation */
} ffile_t;

static sqlite3_vfs *real_vfs;
static sqlite3_vfs fault_vfs;
static volatile int fail_writes; /* set by the job that wants its write to fail */

#define REAL(f) (((ffile_t *)(f))->real)
static int f_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int f_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
    return REAL(f)->pMethods->xRead(REAL(f), b, n, o);
}
static int f_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    if (fail_writes)
        return SQLITE_IOERR_WRITE;
    return REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 n)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), n);
}
static int f_sync(sqlite3_file *f, int fl)
{
    return REAL(f)->pMethods->xSync(REAL(f), fl);
}
static int f_size(sqlite3_file *f, sqlite3_int64 *n)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), n);
}
static int f_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int f_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int f_check(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_fcntl(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_devchar(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shmmap(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, pp);
}
static int f_shmlock(sqlite3_file *f, int off, int n, int fl)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, fl);
}
static void f_shmbarrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shmunmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), o, n, pp);
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), o, p);
}
static const sqlite3_io_methods fault_io = {
    3,       f_close,  f_read,    f_write,  f_truncate, f_sync,       f_size,     f_lock,  f_unlock, f_check,
    f_fcntl, f_sector, f_devchar, f_shmmap, f_shmlock,  f_shmbarrier, f_shmunmap, f_fetch, f_unfetch};

static int f_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)v;
    ffile_t *ff = (ffile_t *)f;
    ff->real = (sqlite3_file *)&ff[1];
    int rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out);
    /* SQLite calls xClose only when pMethods is set, so set it only on success. */
    f->pMethods = rc == SQLITE_OK && ff->real->pMethods != NULL ? &fault_io : NULL;
    return rc;
}

static void install_fault_vfs(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    fault_vfs = *real_vfs;
    fault_vfs.zName = "basalt-fault";
    fault_vfs.szOsFile = (int)sizeof(ffile_t) + real_vfs->szOsFile;
    fault_vfs.xOpen = f_open;
    fault_vfs.pNext = NULL;
    sqlite3_vfs_register(&fault_vfs, 1);
}

static void remove_fault_vfs(void)
{
    sqlite3_vfs_unregister(&fault_vfs);
    sqlite3_vfs_register(real_vfs, 1);
}

static int run_big_insert(store_job_t *j, store_conn_t *c)
{
    /* A row of 4 MB: its pages cannot stay in a cache of 8 pages. */
    if (store_exec(c, "CREATE TABLE IF NOT EXISTS big (b BLOB)", NULL, 0, &j->err) < 0)
        return -1;
    return store_exec(c, "INSERT INTO big (b) VALUES (zeroblob(4000000))", NULL, 0, &j->err) < 0 ? -1 : 0;
}

/* Rewrites that row with writes failing: the cache spills to the WAL, the write fails
 * with SQLITE_IOERR, and SQLite rolls back the whole transaction on its own. */
static int run_failing_blob(store_job_t *j, store_conn_t *c)
{
    bs_error_t ignored;
    bs_error_init(&ignored);
    store_exec_script(c, "PRAGMA cache_size=8", &ignored);
    fail_writes = 1;
    int64_t rc = store_exec(c, "UPDATE big SET b = randomblob(4000000)", NULL, 0, &j->err);
    fail_writes = 0;
    store_exec_script(c, "PRAGMA cache_size=-16000", &ignored);
    return rc < 0 ? -1 : 0;
}

/* A job that fails with an I/O error in the middle of a batch makes SQLite roll the
 * batch's transaction back: the jobs before it lost their rows, the jobs after it
 * must not run in autocommit mode (their rows would be on disk while they report a
 * failure), and the writer goes on working afterwards. */
static void test_batch_rolled_back_by_sqlite(void **state)
{
    (void)state;
    install_fault_vfs();
    store_t *s = started_store();
    mailbox_t mb;
    assert_int_equal(mailbox_init(&mb), 0);
    store_job_t setup = {.run = run_big_insert, .reply_to = &mb, .msg.deliver = deliver};
    store_submit(s, &setup);
    while (mailbox_drain(&mb) < 1)
        usleep(1000);
    assert_int_equal(setup.status, 0);

    ins_job_t before = {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .value = 1};
    store_job_t bad = {.run = run_failing_blob, .reply_to = &mb, .msg.deliver = deliver};
    ins_job_t after1 = {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .value = 2};
    ins_job_t after2 = {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .value = 3};
    store_queue_t q;
    store_queue_init(&q);
    store_queue_add(&q, &before.job);
    store_queue_add(&q, &bad);
    store_queue_add(&q, &after1.job);
    store_queue_add(&q, &after2.job);
    store_submit_queue(s, &q);
    int done = 0;
    while (done < 4) {
        usleep(1000);
        done += mailbox_drain(&mb);
    }
    assert_int_equal(bad.status, -1);
    assert_int_equal(bad.err.code, BS_ERR_UNAVAILABLE);
    /* Every other job of the batch reports the failure... */
    assert_int_equal(before.job.status, -1);
    assert_int_equal(after1.job.status, -1);
    assert_int_equal(after2.job.status, -1);
    /* Nothing of the batch is on disk: what reports failure left no row. */
    assert_int_equal(count(s), 0);
    assert_int_equal(before.job.err.code, BS_ERR_UNAVAILABLE);
    assert_int_equal(after2.job.err.code, BS_ERR_UNAVAILABLE);
    assert_non_null(strstr(after2.job.err.message, "I/O error"));

    /* The writer recovers: the next write commits. */
    ins_job_t next = {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .value = 4};
    store_submit(s, &next.job);
    while (mailbox_drain(&mb) < 1)
        usleep(1000);
    assert_int_equal(next.job.status, 0);
    assert_int_equal(count(s), 1);
    store_stop_writer(s);
    mailbox_destroy(&mb);
    store_close(s);
    remove_fault_vfs();
}

typedef struct {
    store_job_t job;
} blob_job_t;

static int run_blob(store_job_t *j, store_conn_t *c)
{
    if (store_exec_script(c, "CREATE TABLE IF NOT EXISTS b (x BLOB)", &j->err) != 0)
        return -1;
    return store_exec(c, "INSERT INTO b (x) VALUES (randomblob(100000))", NULL, 0, &j->err) < 0 ? -1 : 0;
}

static int run_small(store_job_t *j, store_conn_t *c)
{
    return store_exec(c, "INSERT INTO b (x) VALUES (1)", NULL, 0, &j->err) < 0 ? -1 : 0;
}

/* The log's salt-1 (bytes 16..19 of the WAL header, big-endian): SQLite changes it
 * each time the log restarts from its start. Read from the file, so that the test
 * itself checkpoints nothing. */
static uint32_t wal_salt1(void)
{
    char wal[80];
    snprintf(wal, sizeof(wal), "%s-wal", tmpdb_path());
    FILE *f = fopen(wal, "rb");
    assert_non_null(f);
    unsigned char h[32];
    assert_int_equal(fread(h, 1, sizeof(h), f), sizeof(h));
    fclose(f);
    return (uint32_t)h[16] << 24 | (uint32_t)h[17] << 16 | (uint32_t)h[18] << 8 | h[19];
}

/* Without a backup the checkpoints run on a thread of their own, not in the writer's
 * COMMIT: they must still happen, and the log must still restart from its start (it
 * restarts only at a write that finds it checkpointed to its end). 240 commits of
 * 100 KB are about 6,000 pages: 24 MB of log if nothing checkpointed it. */
static void test_checkpoints_off_the_writer_keep_the_log_bounded(void **state)
{
    (void)state;
    store_config_t cfg = {.path = tmpdb(), .readers = 1, .max_batch = 64};
    bs_error_t err;
    bs_error_init(&err);
    store_t *s = store_open(&cfg, &err);
    assert_non_null(s);
    uint64_t before = __atomic_load_n(&metrics_g.store_ckpt_thread, __ATOMIC_RELAXED);
    blob_job_t first = {.job = {.run = run_blob}};
    assert_int_equal(store_write_sync(s, &first.job), 0);
    uint32_t salt = wal_salt1();
    for (int i = 0; i < 240; i++) {
        blob_job_t j = {.job = {.run = run_blob}};
        assert_int_equal(store_write_sync(s, &j.job), 0);
    }
    /* The thread did checkpoints (it is woken at 1,000 pages)... */
    for (int i = 0; i < 1000 && __atomic_load_n(&metrics_g.store_ckpt_thread, __ATOMIC_RELAXED) == before;
         i++)
        usleep(10000);
    assert_true(__atomic_load_n(&metrics_g.store_ckpt_thread, __ATOMIC_RELAXED) > before);
    /* ... and the log restarted from its start: at once while the writer ran, or at the
     * latest at the small writes after. */
    int restarted = 0;
    for (int i = 0; i < 1000 && !restarted; i++) {
        restarted = wal_salt1() != salt;
        if (!restarted) {
            blob_job_t j = {.job = {.run = run_small}};
            assert_int_equal(store_write_sync(s, &j.job), 0);
            usleep(10000);
        }
    }
    assert_true(restarted);
    store_close(s);
}

/* A budget stops a long statement with BS_ERR_TIMEOUT, and the connection then runs
 * the next statement as usual; without one the same kind of statement completes. */
static void test_budget_stops_a_long_read(void **state)
{
    (void)state;
    store_t *s = started_store();
    store_conn_t *c = store_reader(s, 0);
    bs_error_t err;
    bs_error_init(&err);
    const char *endless =
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 4000000000) "
        "SELECT COUNT(*) FROM r";
    store_set_budget(c, 30);
    store_stmt_t *st = store_query(c, endless, NULL, 0, &err);
    assert_non_null(st);
    assert_int_equal(store_step(st, &err), -1);
    assert_int_equal(err.code, BS_ERR_TIMEOUT);
    assert_non_null(strstr(err.message, "budget"));
    store_done(st);
    store_set_budget(c, 0);
    assert_int_equal(count(s), 0);
    /* No budget: a count of 200,000 generated rows runs to its end. */
    bs_error_init(&err);
    st = store_query(c,
                     "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 200000) "
                     "SELECT COUNT(*) FROM r",
                     NULL, 0, &err);
    assert_non_null(st);
    assert_int_equal(store_step(st, &err), 1);
    assert_int_equal(store_col(st, 0).i, 200000);
    store_done(st);
    /* A budget that a short statement stays under changes nothing. */
    store_set_budget(c, 60000);
    assert_int_equal(count(s), 0);
    store_set_budget(c, 0);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_group_commit),
                                       cmocka_unit_test(test_submit_queue),
                                       cmocka_unit_test(test_constraint_error),
                                       cmocka_unit_test(test_batch_rolled_back_by_sqlite),
                                       cmocka_unit_test(test_checkpoints_off_the_writer_keep_the_log_bounded),
                                       cmocka_unit_test(test_budget_stops_a_long_read)};
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    tmpdb(); /* removes the last test's database: nothing is left in /tmp */
    return failed;
}
