/* The realtime outbox (store/outbox.c) on SQLite: events written in the job's own
 * savepoint, numbered without gaps, handed to the sink in order after the commit;
 * none from a job that failed; the history at start-up; another process's events
 * read back; pruning by count. */
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

#include "store/store.h"

#define MAXSEEN 4096

static struct {
    pthread_mutex_t lock;
    int64_t offs[MAXSEEN];
    int history[MAXSEEN];
    char text[MAXSEEN][16];
    size_t n;
    uint32_t epoch;
    uint64_t upto;
    int bad_history; /* history events not in their text form */
} seen = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void sink(json_t *changes, int history)
{
    pthread_mutex_lock(&seen.lock);
    size_t i;
    json_t *c;
    json_array_foreach(changes, i, c)
    {
        json_t *off = json_object_get(c, "offset");
        if (!json_is_integer(off) || seen.n == MAXSEEN)
            continue;
        seen.offs[seen.n] = json_integer_value(off);
        seen.history[seen.n] = history;
        /* The history comes as the rows' JSON text with the record's id, parsed by the
         * hub only when a client resumes; live events as objects. */
        json_t *rec = json_object_get(c, "record");
        json_t *parsed = NULL;
        if (history) {
            /* No assert under the lock (a failure would leave it held): counted. */
            const char *text = json_string_value(json_object_get(c, "recordText"));
            parsed = text ? json_loads(text, 0, NULL) : NULL;
            const char *id = json_string_value(json_object_get(parsed, "id"));
            const char *given = json_string_value(json_object_get(c, "recordId"));
            if (rec != NULL || id == NULL || given == NULL || strcmp(id, given) != 0)
                seen.bad_history++;
            rec = parsed;
        }
        const char *t = json_string_value(json_object_get(rec, "v"));
        snprintf(seen.text[seen.n], sizeof(seen.text[0]), "%s", t ? t : "");
        json_decref(parsed);
        seen.n++;
    }
    pthread_mutex_unlock(&seen.lock);
    json_decref(changes);
}

static void position(uint32_t epoch, uint64_t upto)
{
    seen.epoch = epoch;
    seen.upto = upto;
}

static void reset_seen(void)
{
    pthread_mutex_lock(&seen.lock);
    seen.n = 0;
    pthread_mutex_unlock(&seen.lock);
}

static size_t seen_n(void)
{
    pthread_mutex_lock(&seen.lock);
    size_t n = seen.n;
    pthread_mutex_unlock(&seen.lock);
    return n;
}

typedef struct {
    store_job_t job;
    int i, fail;
} ev_job_t;

static int run_ev(store_job_t *j, store_conn_t *c)
{
    ev_job_t *e = (ev_job_t *)j;
    if (e->fail) {
        bs_error_set(&j->err, BS_ERR_BAD_REQUEST, "refused");
        return -1;
    }
    (void)c;
    char v[16];
    snprintf(v, sizeof(v), "v%d", e->i);
    /* Two changes per job, as a create with a cascade would make. */
    json_array_append_new(j->events, json_pack("{s:s, s:s, s:{s:s, s:s}}", "action", "create", "collectionId",
                                               "c1", "record", "id", "r1", "v", v));
    json_array_append_new(j->events, json_pack("{s:s, s:s, s:{s:s, s:s}}", "action", "update", "collectionId",
                                               "c1", "record", "id", "r2", "v", v));
    return 0;
}

static void deliver(mailbox_msg_t *m)
{
    (void)m;
}

static char path[64];

static void fresh_path(void)
{
    snprintf(path, sizeof(path), "/tmp/basalt-outbox-%d.db", (int)getpid());
    char side[80];
    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
}

static int64_t window_ms = 3600000;

static store_t *open_store(int64_t max_events)
{
    store_config_t cfg = {.path = path, .readers = 1, .max_batch = 16};
    bs_error_t err;
    bs_error_init(&err);
    store_t *s = store_open(&cfg, &err);
    assert_non_null(s);
    store_outbox_config_t oc = {
        .window_ms = window_ms, .max_events = max_events, .sink = sink, .position = position};
    uint32_t epoch = 0;
    assert_int_equal(store_outbox_open(s, &oc, &epoch, &err), 0);
    assert_true(epoch > 0 && epoch < (1u << 19));
    assert_int_equal(seen.epoch, epoch);
    assert_int_equal(store_start_writer(s, &err), 0);
    return s;
}

/* Submits n jobs (every third fails) and waits for them all. */
static void write_jobs(store_t *s, int first, int n)
{
    mailbox_t mb;
    assert_int_equal(mailbox_init(&mb), 0);
    ev_job_t *jobs = calloc((size_t)n, sizeof(*jobs));
    for (int i = 0; i < n; i++) {
        jobs[i].job.run = run_ev;
        jobs[i].job.reply_to = &mb;
        jobs[i].job.msg.deliver = deliver;
        jobs[i].job.events = json_array();
        jobs[i].i = first + i;
        jobs[i].fail = i % 3 == 2;
        store_submit(s, &jobs[i].job);
    }
    for (int done = 0; done < n;) {
        usleep(1000);
        done += mailbox_drain(&mb);
    }
    for (int i = 0; i < n; i++) {
        assert_int_equal(jobs[i].job.status, jobs[i].fail ? -1 : 0);
        json_decref(jobs[i].job.events);
    }
    free(jobs);
    mailbox_destroy(&mb);
}

static int64_t rows(void)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM _events", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void test_offsets_in_order_without_gaps_and_history(void **state)
{
    (void)state;
    fresh_path();
    reset_seen();
    store_t *s = open_store(100000);
    assert_int_equal(seen.upto, 0);
    write_jobs(s, 0, 30); /* 20 succeed, 2 events each */
    store_stop_writer(s);
    assert_int_equal(seen_n(), 40);
    for (size_t i = 0; i < 40; i++) {
        assert_int_equal(seen.offs[i], (int64_t)i + 1);
        assert_int_equal(seen.history[i], 0);
    }
    /* Job order: v0, v0, v1, v1, (v2 failed) v3, ... */
    assert_string_equal(seen.text[0], "v0");
    assert_string_equal(seen.text[3], "v1");
    assert_string_equal(seen.text[4], "v3");
    assert_int_equal(rows(), 40);
    uint32_t epoch = seen.epoch;
    store_close(s);
    /* Reopened: the same epoch, and every event comes back as history. */
    reset_seen();
    s = open_store(100000);
    assert_int_equal(seen.epoch, epoch);
    assert_int_equal(seen.upto, 40);
    assert_int_equal(seen_n(), 40);
    assert_int_equal(seen.offs[39], 40);
    assert_int_equal(seen.history[0], 1);
    assert_int_equal(seen.bad_history, 0);
    assert_string_equal(seen.text[39], "v28");
    /* New events continue the numbering. */
    reset_seen();
    write_jobs(s, 100, 1);
    store_stop_writer(s);
    assert_int_equal(seen_n(), 2);
    assert_int_equal(seen.offs[0], 41);
    store_close(s);
}

/* Another process (another instance, on PostgreSQL) commits an event: read back and
 * handed over live, numbered after ours. */
static void test_events_of_another_process_are_read(void **state)
{
    (void)state;
    fresh_path();
    reset_seen();
    store_t *s = open_store(100000);
    write_jobs(s, 0, 1);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(
        sqlite3_exec(db,
                     "BEGIN IMMEDIATE; UPDATE _events_seq SET n = n + 1; INSERT INTO _events (off, "
                     "coll, action, record, created) SELECT n, 'c1', 'create', '{\"id\":\"x\",\"v\":"
                     "\"other\"}', 0 FROM _events_seq; COMMIT;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    for (int i = 0; i < 300 && seen_n() < 3; i++)
        usleep(10000);
    assert_int_equal(seen_n(), 3);
    assert_int_equal(seen.offs[2], 3);
    assert_string_equal(seen.text[2], "other");
    assert_int_equal(seen.history[2], 0);
    /* And ours after it go on from there, with nothing handed over twice. */
    write_jobs(s, 10, 1);
    store_stop_writer(s);
    assert_int_equal(seen_n(), 5);
    assert_int_equal(seen.offs[3], 4);
    assert_int_equal(seen.offs[4], 5);
    store_close(s);
}

static void test_pruned_to_the_count(void **state)
{
    (void)state;
    fresh_path();
    reset_seen();
    store_t *s = open_store(5);
    write_jobs(s, 0, 30);
    /* The writer prunes about once a second, a batch at a time, when idle too. */
    for (int i = 0; i < 400 && rows() > 5; i++)
        usleep(10000);
    assert_int_equal(rows(), 5);
    store_stop_writer(s);
    store_close(s);
    reset_seen();
    s = open_store(5);
    assert_int_equal(seen_n(), 5);
    assert_int_equal(seen.offs[0], 36);
    store_stop_writer(s);
    store_close(s);
    fresh_path();
}

static void exec_sql(const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* Events older than the resume window stay in the table for a while but are not
 * loaded: nobody resumes from them. */
static void test_history_only_within_the_window(void **state)
{
    (void)state;
    fresh_path();
    reset_seen();
    store_t *s = open_store(100000);
    write_jobs(s, 0, 30); /* 20 jobs succeed: offsets 1..40 */
    store_stop_writer(s);
    store_close(s);
    /* The first 30 an hour and a minute old. */
    exec_sql("UPDATE _events SET created = created - 3660000 WHERE off <= 30");
    reset_seen();
    s = open_store(100000);
    assert_int_equal(seen_n(), 10);
    assert_int_equal(seen.offs[0], 31);
    assert_int_equal(seen.history[0], 1);
    assert_int_equal(seen.upto, 40);
    store_stop_writer(s);
    store_close(s);
    /* All of them old: none loaded, the numbering goes on. */
    exec_sql("UPDATE _events SET created = created - 3660000");
    reset_seen();
    s = open_store(100000);
    assert_int_equal(seen_n(), 0);
    assert_int_equal(seen.upto, 40);
    write_jobs(s, 100, 1);
    store_stop_writer(s);
    assert_int_equal(seen_n(), 2);
    assert_int_equal(seen.offs[0], 41);
    store_close(s);
    /* A window of 0 (no resume): nothing loaded. */
    window_ms = 0;
    reset_seen();
    s = open_store(100000);
    assert_int_equal(seen_n(), 0);
    store_stop_writer(s);
    store_close(s);
    window_ms = 3600000;
    fresh_path();
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_offsets_in_order_without_gaps_and_history),
                                       cmocka_unit_test(test_events_of_another_process_are_read),
                                       cmocka_unit_test(test_pruned_to_the_count),
                                       cmocka_unit_test(test_history_only_within_the_window)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
