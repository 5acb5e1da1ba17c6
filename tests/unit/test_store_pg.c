/*
 * The PostgreSQL store against a real server (scripts/pg-env.sh starts one for
 * make test): values both ways, jobs in their own transactions, typed failures,
 * PgBouncer's transaction mode, and a lost connection that comes back by itself.
 * BASALT_TEST_PG_URL (direct) and BASALT_TEST_PGB_URL (PgBouncer) name the servers;
 * without them every test is skipped and says so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/schema.h"
#include "store/store.h"

static const char *url(const char *var)
{
    const char *u = getenv(var);
    return u != NULL && u[0] ? u : NULL;
}

static store_t *open_cfg(const store_config_t *cfg)
{
    bs_error_t err;
    bs_error_init(&err);
    store_t *s = store_open(cfg, &err);
    if (s == NULL)
        fail_msg("store_open(%s): %s", cfg->path, err.message);
    assert_string_equal(store_backend_name(s), "postgres");
    assert_int_equal(store_dialect(s), RULES_DIALECT_POSTGRES);
    return s;
}

static store_t *open_pg(const char *u, int prepared, int readers)
{
    store_config_t cfg = {.path = u,
                          .readers = readers,
                          .connect_timeout_ms = 2000,
                          .statement_timeout_ms = 5000,
                          .prepared_statements = prepared};
    return open_cfg(&cfg);
}

/* Runs round on a direct connection (prepared statements) and, when the test has one,
 * through PgBouncer in transaction mode (unnamed statements). */
static void direct_and_pgbouncer(const char *direct, void (*round)(const char *u, int prepared))
{
    round(direct, 1);
    const char *b = getenv("BASALT_TEST_PGB_URL");
    if (b != NULL && b[0])
        round(b, 0);
}

#define NEED(var)                                                                                            \
    const char *u = url(var);                                                                                \
    if (u == NULL) {                                                                                         \
        print_message("skipped: " var " is not set (make test sets it)\n");                                  \
        skip();                                                                                              \
    }

static int run_ddl(store_job_t *j, store_conn_t *c)
{
    return store_exec_script(c,
                             "DROP TABLE IF EXISTS pgt; CREATE TABLE pgt (id text PRIMARY KEY, n bigint, "
                             "d double precision, b boolean, t text, CONSTRAINT pgt_t_unique UNIQUE (t))",
                             &j->err);
}

typedef struct {
    store_job_t job;
    const char *id, *t;
    int fail_after;
    int swallow; /* runs a failing statement and says nothing of it */
    int runs;    /* how many times run_insert ran it */
} ins_t;

static int run_insert(store_job_t *j, store_conn_t *c)
{
    ins_t *in = (ins_t *)j;
    in->runs++;
    bs_value_t p[4] = {bs_val_text(in->id, strlen(in->id)), bs_val_int(42), bs_val_double(0.5),
                       in->t ? bs_val_text(in->t, strlen(in->t)) : bs_val_null()};
    if (store_exec(c, "INSERT INTO pgt (id, n, d, b, t) VALUES (?1, ?2, ?3, true, ?4)", p, 4, &j->err) != 1)
        return -1;
    if (in->swallow) {
        store_exec(c, "SELECT 1 / (n - 42) FROM pgt WHERE id = ?1", p, 1, &j->err);
        bs_error_init(&j->err); /* a job with a bug: it leaves the transaction aborted */
        return 0;
    }
    if (in->fail_after) {
        bs_error_set(&j->err, BS_ERR_BAD_REQUEST, "refused after the insert");
        return -1;
    }
    return 0;
}

static int64_t count_rows(store_t *s)
{
    bs_error_t err;
    bs_error_init(&err);
    store_stmt_t *st = store_query(store_reader(s, 0), "SELECT COUNT(*) FROM pgt", NULL, 0, &err);
    assert_non_null(st);
    assert_int_equal(store_step(st, &err), 1);
    int64_t n = store_col(st, 0).i;
    store_done(st);
    return n;
}

static void with_table(store_t *s)
{
    store_job_t ddl = {.run = run_ddl};
    if (store_write_sync(s, &ddl) != 0)
        fail_msg("ddl: %s", ddl.err.message);
}

/* A store on u (through PgBouncer) with the test table and its writer thread running. */
static store_t *open_writer(const char *u)
{
    store_t *s = open_pg(u, 0, 1);
    with_table(s);
    bs_error_t err;
    bs_error_init(&err);
    if (store_start_writer(s, &err) != 0)
        fail_msg("writer: %s", err.message);
    return s;
}

/* Ints, doubles, booleans, text (with non-ASCII) and NULL come back as they went in,
 * through ?N placeholders written for the SQLite dialect. */
static void values_round_trip(const char *u, int prepared)
{
    store_t *s = open_pg(u, prepared, 1);
    with_table(s);
    ins_t a = {.job = {.run = run_insert}, .id = "a1", .t = "h\xc3\xa9llo 'quoted' ?1"};
    assert_int_equal(store_write_sync(s, &a.job), 0);
    bs_error_t err;
    bs_error_init(&err);
    for (int round = 0; round < 3; round++) { /* again: the prepared statement is reused */
        bs_value_t p = bs_val_text("a1", 2);
        store_stmt_t *st =
            store_query(store_reader(s, 0), "SELECT n, d, b, t, NULL AS z, 'a?1' AS q FROM pgt WHERE id = ?1",
                        &p, 1, &err);
        assert_non_null(st);
        assert_int_equal(store_ncols(st), 6);
        assert_string_equal(store_col_name(st, 3), "t");
        assert_int_equal(store_step(st, &err), 1);
        assert_int_equal(store_col(st, 0).type, BS_VAL_INT);
        assert_int_equal(store_col(st, 0).i, 42);
        assert_true(fabs(store_col(st, 1).d - 0.5) < 1e-12);
        assert_int_equal(store_col(st, 2).i, 1);
        bs_value_t t = store_col(st, 3);
        assert_int_equal(t.n, strlen(a.t));
        assert_memory_equal(t.s, a.t, t.n);
        assert_int_equal(store_col(st, 4).type, BS_VAL_NULL);
        assert_memory_equal(store_col(st, 5).s, "a?1", 3); /* ? inside quotes is left alone */
        assert_int_equal(store_step(st, &err), 0);
        store_done(st);
    }
    /* An empty script is nothing to do, as on SQLite (a schema change of rules only). */
    assert_int_equal(store_exec_script(store_reader(s, 0), NULL, &err), 0);
    assert_int_equal(store_exec_script(store_reader(s, 0), "", &err), 0);
    /* A text with a NUL cannot reach PostgreSQL: a clear 400, not a truncated value. */
    bs_value_t nul = bs_val_text("vip\0junk", 8);
    assert_null(store_query(store_reader(s, 0), "SELECT ?1::text", &nul, 1, &err));
    assert_int_equal(err.code, BS_ERR_BAD_REQUEST);
    store_close(s);
}

static void test_values_direct_prepared(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    values_round_trip(u, 1);
}

static void test_values_through_pgbouncer(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PGB_URL");
    values_round_trip(u, 0);
}

/* One text value of a read: the first column of the only row (copied into out), or -1
 * with err filled. */
static int read_one(store_t *s, const char *sql, const bs_value_t *p, size_t n, char *out, size_t cap,
                    bs_error_t *err)
{
    bs_error_init(err);
    store_stmt_t *st = store_query(store_reader(s, 0), sql, p, n, err);
    if (st == NULL)
        return -1;
    assert_int_equal(store_step(st, err), 1);
    bs_value_t v = store_col(st, 0);
    if (v.type == BS_VAL_NULL)
        snprintf(out, cap, "<null>");
    else if (v.type == BS_VAL_INT)
        snprintf(out, cap, "%lld", (long long)v.i);
    else
        snprintf(out, cap, "%.*s", (int)v.n, v.s);
    assert_int_equal(store_step(st, err), 0);
    store_done(st);
    return 0;
}

/* Through PgBouncer a reader's statement goes as one Query with its values written in
 * as literals (pg_conn.c, inline_params): the server sees the literal, and every
 * value, NULL, repeated placeholder and context-typed number means what it meant as a
 * parameter; texts the scanner is not sure of go out as parameters, as before. */
static void test_reads_as_one_query(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PGB_URL");
    store_t *s = open_pg(u, 0, 1);
    with_table(s);
    ins_t a = {.job = {.run = run_insert}, .id = "q1", .t = "x"};
    assert_int_equal(store_write_sync(s, &a.job), 0);
    bs_error_t err;
    char got[512];
    /* The statement as PostgreSQL received it: the value is in its text, quoted. */
    bs_value_t mark = bs_val_text("it's", 4);
    assert_int_equal(
        read_one(s, "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid() AND ?1::text <> ''",
                 &mark, 1, got, sizeof(got), &err),
        0);
    assert_non_null(strstr(got, "'it''s'"));
    assert_null(strstr(got, "$1"));
    /* Hostile texts come back byte for byte. */
    const char *hostile[] = {"a'b",
                             "'; DROP TABLE pgt; --",
                             "back\\slash \\' end\\",
                             "$1 $$ $q$ ?1",
                             "/* c */ -- d",
                             "h\xc3\xa9llo \"dq\"",
                             ""};
    for (size_t i = 0; i < sizeof(hostile) / sizeof(*hostile); i++) {
        bs_value_t v = bs_val_text(hostile[i], strlen(hostile[i]));
        assert_int_equal(read_one(s, "SELECT ?1::text", &v, 1, got, sizeof(got), &err), 0);
        assert_string_equal(got, hostile[i]);
    }
    assert_int_equal(count_rows(s), 1); /* nothing ran but the reads */
    /* A placeholder twice, NULL, numbers typed by their context, a LIMIT. */
    bs_value_t two[2] = {bs_val_text("ab", 2), bs_val_null()};
    assert_int_equal(read_one(s, "SELECT ?1::text || '-' || ?1::text || coalesce(?2, '!')", two, 2, got,
                              sizeof(got), &err),
                     0);
    assert_string_equal(got, "ab-ab!");
    bs_value_t nums[3] = {bs_val_int(41), bs_val_double(0.25), bs_val_int(1)};
    assert_int_equal(read_one(s, "SELECT id FROM pgt WHERE n > ?1 AND d > ?2 ORDER BY id LIMIT ?3", nums, 3,
                              got, sizeof(got), &err),
                     0);
    assert_string_equal(got, "q1");
    /* A bad value for its context fails as it did as a parameter: 22P02, a 400. */
    bs_value_t word = bs_val_text("many", 4);
    assert_int_equal(read_one(s, "SELECT id FROM pgt WHERE n > ?1", &word, 1, got, sizeof(got), &err), -1);
    assert_int_not_equal(err.code, BS_ERR_OK);
    bs_error_t as_param;
    bs_error_init(&as_param);
    /* A comment sends the statement as before (parameters): same answers. */
    assert_int_equal(read_one(s, "SELECT id FROM pgt WHERE n > ?1 -- the scanner steps aside", &word, 1, got,
                              sizeof(got), &as_param),
                     -1);
    assert_int_equal(as_param.code, err.code);
    assert_int_equal(
        read_one(s, "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid() AND ?1 <> '' -- c",
                 &mark, 1, got, sizeof(got), &err),
        0);
    assert_non_null(strstr(got, "$1"));
    /* A $ inside a name is no placeholder: the column a$1 stays a column. */
    assert_int_equal(read_one(s, "SELECT 'v' AS a$1, ?1::text", &mark, 1, got, sizeof(got), &err), 0);
    assert_string_equal(got, "v");
    /* Invalid UTF-8 is the server's to refuse, as before. */
    bs_value_t bad = bs_val_text("\xff\xfe", 2);
    assert_int_equal(read_one(s, "SELECT ?1::text", &bad, 1, got, sizeof(got), &err), -1);
    assert_int_not_equal(err.code, BS_ERR_OK);
    store_close(s);
}

static int64_t backend_pid(store_conn_t *c)
{
    bs_error_t err;
    bs_error_init(&err);
    store_stmt_t *st = store_query(c, "SELECT pg_backend_pid()", NULL, 0, &err);
    if (st == NULL)
        fail_msg("pg_backend_pid: %s", err.message);
    assert_int_equal(store_step(st, &err), 1);
    int64_t pid = store_col(st, 0).i;
    store_done(st);
    return pid;
}

/* A budget cancels a long statement (BS_ERR_TIMEOUT, the connection kept: the same
 * backend answers next, well before the statement deadline would have dropped it);
 * a statement under a spent budget fails at once; one within its budget is untouched. */
static void budget_round(const char *u, int direct)
{
    store_t *s = open_pg(u, 0, 1);
    store_conn_t *c = store_reader(s, 0);
    int64_t pid = backend_pid(c);
    bs_error_t err;
    for (int round = 0; round < 3; round++) {
        bs_error_init(&err);
        store_set_budget(c, 40);
        store_stmt_t *st =
            store_query(c, "SELECT COUNT(*) FROM generate_series(1, 4000000000)", NULL, 0, &err);
        assert_null(st);
        assert_int_equal(err.code, BS_ERR_TIMEOUT);
        assert_non_null(strstr(err.message, "budget"));
        /* Spent: the next statement does not even start. */
        bs_error_init(&err);
        assert_null(store_query(c, "SELECT 1", NULL, 0, &err));
        assert_int_equal(err.code, BS_ERR_TIMEOUT);
        store_set_budget(c, 0);
        if (direct)
            assert_int_equal(backend_pid(c), pid);
        else
            backend_pid(c);
    }
    store_set_budget(c, 60000);
    assert_true(backend_pid(c) > 0);
    store_set_budget(c, 0);
    store_close(s);
}

static void test_budget_cancels_and_keeps_the_connection(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, budget_round);
}

static void deliver(mailbox_msg_t *m)
{
    (void)m;
}

/* Jobs through the writer thread: each commits or rolls back alone; a unique
 * violation is a validation error naming the constraint. */
static void test_jobs(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PGB_URL");
    store_t *s = open_writer(u);
    bs_error_t err;
    bs_error_init(&err);
    mailbox_t mb;
    assert_int_equal(mailbox_init(&mb), 0);
    ins_t jobs[4] = {
        {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .id = "j1", .t = "one"},
        {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver},
         .id = "j2",
         .t = "two",
         .fail_after = 1},
        {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .id = "j3", .t = "one"},
        {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .id = "j4", .t = "four"},
    };
    store_queue_t q;
    store_queue_init(&q);
    for (int i = 0; i < 4; i++)
        store_queue_add(&q, &jobs[i].job);
    store_submit_queue(s, &q);
    int done = 0;
    while (done < 4) {
        usleep(1000);
        done += mailbox_drain(&mb);
    }
    assert_int_equal(jobs[0].job.status, 0);
    assert_int_equal(jobs[1].job.status, -1);
    assert_int_equal(jobs[1].job.err.code, BS_ERR_BAD_REQUEST);
    assert_int_equal(jobs[2].job.status, -1);
    assert_int_equal(jobs[2].job.err.code, BS_ERR_VALIDATION);
    assert_int_equal(jobs[2].job.err.conflict, BS_CONFLICT_UNIQUE);
    assert_string_equal(jobs[2].job.err.constraint, "pgt_t_unique");
    assert_string_equal(jobs[2].job.err.columns, "t");
    assert_int_equal(jobs[3].job.status, 0);
    assert_int_equal(count_rows(s), 2);
    store_stats_t st;
    store_get_stats(s, &st);
    /* Submitted together, the four ran as one group commit: the DDL's and theirs. */
    assert_int_equal(st.commits, 1 + 1);
    assert_int_equal(st.max_batch_seen, 4);
    store_stop_writer(s);
    mailbox_destroy(&mb);
    store_close(s);
}

/* A job that leaves the transaction aborted without saying so fails alone: the
 * savepoint is rolled back and the jobs before and after it commit; alone, the same
 * job fails at its COMMIT. */
static void test_group_commit_isolates_a_broken_job(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PGB_URL");
    store_t *s = open_writer(u);
    bs_error_t err;
    bs_error_init(&err);
    mailbox_t mb;
    assert_int_equal(mailbox_init(&mb), 0);
    ins_t jobs[3] = {
        {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .id = "g1", .t = "one"},
        {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .id = "g1", .swallow = 1},
        {.job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .id = "g3", .t = "three"},
    };
    store_queue_t q;
    store_queue_init(&q);
    for (int i = 0; i < 3; i++)
        store_queue_add(&q, &jobs[i].job);
    store_submit_queue(s, &q);
    int done = 0;
    while (done < 3) {
        usleep(1000);
        done += mailbox_drain(&mb);
    }
    assert_int_equal(jobs[0].job.status, 0);
    assert_int_equal(jobs[1].job.status, -1);
    assert_int_not_equal(jobs[1].job.err.code, BS_ERR_OK);
    assert_int_equal(jobs[2].job.status, 0);
    assert_int_equal(count_rows(s), 2);
    store_stats_t st;
    store_get_stats(s, &st);
    assert_int_equal(st.max_batch_seen, 3); /* they did run as one group */
    store_stop_writer(s);
    ins_t alone = {.job = {.run = run_insert}, .id = "g1", .swallow = 1};
    assert_int_equal(store_write_sync(s, &alone.job), -1);
    assert_int_equal(count_rows(s), 2);
    mailbox_destroy(&mb);
    store_close(s);
}

/* Ends every Basalt session on this test's database, as a restart would (only its own:
 * make test runs the integration suites on other databases of the same server). */
static void terminate_sessions(const char *u)
{
    store_t *admin = open_pg(u, 0, 1);
    bs_error_t err;
    bs_error_init(&err);
    store_stmt_t *st = store_query(store_reader(admin, 0),
                                   "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE application_name = 'basalt' AND datname = current_database() "
                                   "AND pid <> pg_backend_pid()",
                                   NULL, 0, &err);
    assert_non_null(st);
    while (store_step(st, &err) == 1)
        ;
    store_done(st);
    store_close(admin);
}

/* A connection that the server dropped: a read is run again once on a new
 * connection, and a write job begins again on a new one; nothing hangs. */
static void test_lost_connection_comes_back(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    store_t *s = open_pg(u, 1, 1);
    with_table(s);
    assert_int_equal(count_rows(s), 0);
    terminate_sessions(u);
    usleep(100000);
    assert_int_equal(count_rows(s), 0); /* the read reconnected by itself */
    terminate_sessions(u);
    usleep(100000);
    ins_t a = {.job = {.run = run_insert}, .id = "r1", .t = "x"};
    assert_int_equal(store_write_sync(s, &a.job), 0);
    assert_int_equal(count_rows(s), 1);
    store_close(s);
}

/* An unreachable server stops start-up with a message naming the address, and
 * never the password. */
static void test_unreachable_server(void **state)
{
    (void)state;
    store_config_t cfg = {
        .path = "postgres://basalt:secret-pw@127.0.0.1:1/nowhere", .readers = 1, .connect_timeout_ms = 2000};
    bs_error_t err;
    bs_error_init(&err);
    assert_null(store_open(&cfg, &err));
    assert_int_equal(err.code, BS_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.message, "127.0.0.1:1/nowhere"));
    assert_null(strstr(err.message, "secret-pw"));
}

static int run_bootstrap(store_job_t *j, store_conn_t *c)
{
    return schema_bootstrap(c, &j->err);
}

typedef struct {
    store_job_t job;
    const char *def; /* collection JSON */
    const char *old; /* name of the collection it replaces, or NULL */
} coll_job_t;

static int run_collection(store_job_t *j, store_conn_t *c)
{
    coll_job_t *cj = (coll_job_t *)j;
    schema_t *s = schema_load(c, &j->err);
    if (s == NULL)
        return -1;
    arena_t a;
    arena_init(&a, 4096);
    json_error_t jerr;
    json_t *body = json_loads(cj->def, 0, &jerr);
    const collection_t *old = cj->old ? schema_find(s, cj->old) : NULL;
    collection_t *nu = body ? collection_from_json(body, old, s, &a, &j->err) : NULL;
    int rc = nu != NULL ? schema_apply(c, s, old, nu, &a, &j->err) : -1;
    collection_free(nu);
    json_decref(body);
    arena_free(&a);
    schema_free(s);
    return rc;
}

static void must_write(store_t *s, store_job_t *j)
{
    if (store_write_sync(s, j) != 0)
        fail_msg("job failed: %s", j->err.message);
}

/* The read pool's order: each job notes when it was delivered back. */
typedef struct {
    store_job_t job;
    int *clock;
    int done_at;
} pool_job_t;

static void pool_delivered(mailbox_msg_t *m)
{
    pool_job_t *p = (pool_job_t *)m;
    p->done_at = ++*p->clock;
}

static int run_pool_sleep(store_job_t *j, store_conn_t *c)
{
    return store_exec(c, "SELECT pg_sleep(0.3)", NULL, 0, &j->err) < 0 ? -1 : 0;
}

static int run_pool_point(store_job_t *j, store_conn_t *c)
{
    return store_exec(c, "SELECT 1", NULL, 0, &j->err) < 0 ? -1 : 0;
}

/* Scans never take the whole read pool: with two pool connections and four slow scans
 * queued before a point read, the point read is answered before any scan (the old
 * pool, first come first served, gave both connections scans and kept the point read
 * waiting for one); with one connection (no lane to keep) every job still runs. */
static void test_pool_keeps_a_lane_for_point_reads(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    for (int pool = 2; pool >= 1; pool--) {
        store_config_t cfg = {.path = u,
                              .readers = 1,
                              .pool_size = pool,
                              .connect_timeout_ms = 2000,
                              .statement_timeout_ms = 5000,
                              .prepared_statements = 1};
        store_t *s = open_cfg(&cfg);
        mailbox_t mb;
        assert_int_equal(mailbox_init(&mb), 0);
        int clock = 0;
        pool_job_t jobs[5];
        memset(jobs, 0, sizeof(jobs));
        for (int i = 0; i < 5; i++) {
            jobs[i].job.msg.deliver = pool_delivered;
            jobs[i].job.reply_to = &mb;
            jobs[i].job.run = i < 4 ? run_pool_sleep : run_pool_point;
            jobs[i].job.scan = i < 4;
            jobs[i].clock = &clock;
            store_read(s, 0, &jobs[i].job);
        }
        store_read_flush(s, 0);
        for (int waited = 0; clock < 5; waited++) {
            if (waited > 20000)
                fail_msg("the read pool ran %d of 5 jobs in 20 s", clock);
            usleep(1000);
            mailbox_drain(&mb);
        }
        for (int i = 0; i < 5; i++)
            if (jobs[i].job.status != 0)
                fail_msg("pool job %d: %s", i, jobs[i].job.err.message);
        if (pool == 2)
            assert_int_equal(jobs[4].done_at, 1);
        mailbox_destroy(&mb);
        store_close(s);
    }
}

/* The script: its lock wait held to the write's deadline, then longer than the write's
 * deadline and the client's margin over it (0.5 s); after it, the write's settings are
 * back for the rest of the job. */
typedef struct {
    store_job_t job; /* first */
    int reached_end;
} ddl_job_t;

static int run_sleep_script(store_job_t *j, store_conn_t *c)
{
    if (store_exec_script(c,
                          "DO $$BEGIN IF current_setting('lock_timeout') <> '200ms' THEN RAISE EXCEPTION "
                          "'lock_timeout %', current_setting('lock_timeout'); END IF; END$$;\n"
                          "SELECT pg_sleep(1.0) -- a closing line comment",
                          &j->err) != 0)
        return -1;
    store_stmt_t *st = store_query(
        c, "SELECT current_setting('statement_timeout') || ' ' || current_setting('lock_timeout')", NULL, 0,
        &j->err);
    if (st == NULL || store_step(st, &j->err) != 1) {
        if (st != NULL)
            store_done(st);
        return -1;
    }
    bs_value_t v = store_col(st, 0);
    int ok = v.n == strlen("200ms 0") && memcmp(v.s, "200ms 0", v.n) == 0;
    store_done(st);
    if (!ok) {
        bs_error_set(&j->err, BS_ERR_BAD_REQUEST, "settings after the script: not the write's");
        return -1;
    }
    /* The write's deadline holds again in the same transaction. */
    if (store_exec(c, "SELECT pg_sleep(1.0)", NULL, 0, &j->err) >= 0) {
        bs_error_set(&j->err, BS_ERR_BAD_REQUEST,
                     "a statement after the script ran past the write's deadline");
        return -1;
    }
    ((ddl_job_t *)j)->reached_end = 1; /* the statement after the script timed out */
    return -1;
}

static int run_sleep_statement(store_job_t *j, store_conn_t *c)
{
    return store_exec(c, "SELECT pg_sleep(0.6)", NULL, 0, &j->err);
}

/* A schema change runs under the DDL deadline, a write's statement under the write's:
 * with 200 ms for writes and 5 s for scripts, a script that sleeps 1 s (past the
 * write's deadline and the client's 0.5 s margin over it) runs with its lock wait held
 * to 200 ms, and the statement after it in the same transaction is held to 200 ms
 * again; a lone 0.6 s statement fails (503). With a DDL deadline of 200 ms the script
 * fails too. Direct and through PgBouncer. */
static void ddl_deadline(const char *u, int prepared)
{
    for (int ddl_ms = 5000; ddl_ms >= 200; ddl_ms -= 4800) {
        store_config_t cfg = {.path = u,
                              .readers = 1,
                              .connect_timeout_ms = 2000,
                              .statement_timeout_ms = 200,
                              .ddl_timeout_ms = ddl_ms,
                              .prepared_statements = prepared};
        store_t *s = open_cfg(&cfg);
        ddl_job_t script = {.job = {.run = run_sleep_script}};
        store_job_t statement = {.run = run_sleep_statement};
        int rc = store_write_sync(s, &script.job);
        assert_int_not_equal(rc, 0);
        if (ddl_ms > 600 && !script.reached_end)
            fail_msg("the script under a 5 s DDL deadline: %s", script.job.err.message);
        if (ddl_ms < 600)
            assert_false(script.reached_end);
        assert_int_not_equal(store_write_sync(s, &statement), 0);
        assert_int_equal(statement.err.code, BS_ERR_UNAVAILABLE);
        store_close(s);
    }
}

static void test_ddl_deadline(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, ddl_deadline);
}

/* The schema on PostgreSQL: bootstrap (twice: idempotent), a collection with every
 * column type and a case-insensitive unique index, then the migrations of ADR 0004's
 * types: rename, add and drop fields, single <-> multi relation, rename collection. */
static void test_schema_ddl(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    store_t *s = open_pg(u, 1, 1);
    bs_error_t err;
    bs_error_init(&err);
    assert_int_equal(
        store_exec_script(store_reader(s, 0),
                          "DROP TABLE IF EXISTS _collections, _params, _superusers, users, pgc, pgc2 CASCADE",
                          &err),
        0);
    store_job_t boot = {.run = run_bootstrap};
    must_write(s, &boot);
    store_job_t boot2 = {.run = run_bootstrap};
    must_write(s, &boot2);
    coll_job_t create = {
        .job = {.run = run_collection},
        .def = "{\"name\":\"pgc\",\"type\":\"base\",\"fields\":["
               "{\"name\":\"title\",\"type\":\"text\"},{\"name\":\"n\",\"type\":\"number\"},"
               "{\"name\":\"ok\",\"type\":\"bool\"},{\"name\":\"meta\",\"type\":\"json\"},"
               "{\"name\":\"tags\",\"type\":\"select\",\"maxSelect\":3,\"values\":[\"a\",\"b\"]},"
               "{\"name\":\"at\",\"type\":\"date\"}],"
               "\"indexes\":[\"CREATE UNIQUE INDEX idx_pgc_title ON pgc (title COLLATE NOCASE)\"]}"};
    must_write(s, &create.job);
    store_conn_t *c = store_reader(s, 0);
    assert_int_equal(store_exec(c,
                                "INSERT INTO pgc (id, title, n, ok, meta, tags) VALUES ('r1', 'Hello', 2.5, "
                                "true, '{\"k\":1}', '[\"a\"]')",
                                NULL, 0, &err),
                     1);
    /* The NOCASE index refuses the same title in another case, and says which column. */
    assert_int_equal(store_exec(c, "INSERT INTO pgc (id, title) VALUES ('r2', 'HELLO')", NULL, 0, &err), -1);
    assert_int_equal(err.code, BS_ERR_VALIDATION);
    assert_int_equal(err.conflict, BS_CONFLICT_UNIQUE);
    assert_string_equal(err.constraint, "idx_pgc_title");
    assert_string_equal(err.columns, "title");
    bs_error_init(&err);
    /* Single -> multi and back, rename of the collection and a field. */
    coll_job_t alter = {
        .job = {.run = run_collection},
        .old = "pgc",
        .def =
            "{\"name\":\"pgc2\",\"fields\":[{\"name\":\"title\",\"type\":\"text\"},"
            "{\"name\":\"n\",\"type\":\"number\"},{\"name\":\"ok\",\"type\":\"bool\"},"
            "{\"name\":\"meta2\",\"type\":\"json\"},{\"name\":\"tags\",\"type\":\"select\",\"maxSelect\":1,"
            "\"values\":[\"a\",\"b\"]},{\"name\":\"extra\",\"type\":\"text\"}]}"};
    must_write(s, &alter.job);
    bs_value_t id = bs_val_text("r1", 2);
    store_stmt_t *st = store_query(c, "SELECT tags, n, ok, extra FROM pgc2 WHERE id = ?1", &id, 1, &err);
    assert_non_null(st);
    assert_int_equal(store_step(st, &err), 1);
    assert_memory_equal(store_col(st, 0).s, "a", 1); /* the last element of ["a"] */
    assert_int_equal(store_col(st, 0).n, 1);
    assert_true(fabs(store_col(st, 1).d - 2.5) < 1e-12);
    assert_int_equal(store_col(st, 2).i, 1);
    assert_int_equal(store_col(st, 3).n, 0);
    store_done(st);
    /* The definitions load back. */
    bs_error_init(&err);
    schema_t *sc = schema_load(c, &err);
    if (sc == NULL)
        fail_msg("schema_load: %s", err.message);
    assert_non_null(schema_find(sc, "pgc2"));
    assert_null(schema_find(sc, "pgc"));
    assert_non_null(schema_find(sc, "_superusers"));
    schema_free(sc);
    store_close(s);
}

static volatile int external_seen;
static void on_external(void)
{
    external_seen++;
}

/* A write committed by another store (another instance) reaches this one's
 * on_external_change through NOTIFY; its own writes do not. */
static int run_nothing(store_job_t *j, store_conn_t *c)
{
    bs_value_t p = bs_val_text("nobody", 6);
    store_stmt_t *st = store_query(c, "SELECT COUNT(*) FROM pgt WHERE id = ?1", &p, 1, &j->err);
    if (st == NULL)
        return -1;
    store_done(st);
    return store_exec(c, "UPDATE pgt SET n = n + 1 WHERE id = ?1", &p, 1, &j->err) == 0 ? 0 : -1;
}

static void test_external_changes_are_noticed(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PGB_URL");
    const char *direct = url("BASALT_TEST_PG_URL");
    store_config_t cfg = {.path = u,
                          .readers = 1,
                          .connect_timeout_ms = 2000,
                          .listen_url = direct,
                          .on_external_change = on_external};
    bs_error_t err;
    bs_error_init(&err);
    store_t *me = store_open(&cfg, &err);
    assert_non_null(me);
    store_t *other = open_pg(u, 0, 1);
    with_table(other);
    assert_int_equal(store_start_writer(me, &err), 0);
    for (int i = 0; i < 50 && external_seen == 0; i++) /* the first LISTEN reports once */
        usleep(100000);
    assert_true(external_seen > 0);
    /* The other store's table set-up is an external change too, and may come after
     * that first report: wait until nothing more comes for a second. */
    for (int i = 0, last = -1; i < 20 && external_seen != last; i++) {
        last = external_seen;
        usleep(1000000);
    }
    mailbox_t mb;
    assert_int_equal(mailbox_init(&mb), 0);
    /* My own write: no external change. */
    int before = external_seen;
    ins_t mine = {
        .job = {.run = run_insert, .reply_to = &mb, .msg.deliver = deliver}, .id = "m1", .t = "mine"};
    store_submit(me, &mine.job);
    while (mailbox_drain(&mb) < 1)
        usleep(1000);
    assert_int_equal(mine.job.status, 0);
    usleep(1500000); /* past the writer's idle tick */
    assert_int_equal(external_seen, before);
    /* Another instance's write: noticed. */
    ins_t theirs = {.job = {.run = run_insert}, .id = "o1", .t = "theirs"};
    assert_int_equal(store_write_sync(other, &theirs.job), 0);
    for (int i = 0; i < 50 && external_seen == before; i++)
        usleep(100000);
    assert_true(external_seen > before);
    /* Another instance's transaction that changed nothing (a read, an UPDATE of no
     * row): no NOTIFY, so nothing to notice. */
    usleep(300000);
    before = external_seen;
    store_job_t nothing = {.run = run_nothing};
    assert_int_equal(store_write_sync(other, &nothing), 0);
    usleep(1500000);
    assert_int_equal(external_seen, before);
    store_stop_writer(me);
    mailbox_destroy(&mb);
    store_close(me);
    store_close(other);
}

/* Runs the jobs as one group commit (submitted together) and waits for them. */
static void run_group(store_t *s, store_job_t **jobs, int n)
{
    mailbox_t mb;
    assert_int_equal(mailbox_init(&mb), 0);
    store_queue_t q;
    store_queue_init(&q);
    for (int i = 0; i < n; i++) {
        jobs[i]->reply_to = &mb;
        jobs[i]->msg.deliver = deliver;
        store_queue_add(&q, jobs[i]);
    }
    store_submit_queue(s, &q);
    for (int done = 0; done < n;) {
        usleep(1000);
        done += mailbox_drain(&mb);
    }
    mailbox_destroy(&mb);
}

static int run_refuse_at_once(store_job_t *j, store_conn_t *c)
{
    (void)c;
    bs_error_set(&j->err, BS_ERR_BAD_REQUEST, "refused before any statement");
    return -1;
}

/* ADR 0017: between two jobs of a group commit the savepoint statements ride in the
 * same round trip as the next job's first statement (pipeline mode, through
 * PgBouncer), and (ADR 0018) the BEGIN with the first job's: a batch of four
 * one-statement jobs is four round trips and COMMIT (it was nine with a round trip
 * of its own for each savepoint, six with the BEGIN's own). A job that
 * fails before sending anything has nothing to roll back and leaves the savepoint
 * owed: the job before it keeps its row; a job whose pipelined statement fails is
 * rolled back alone. */
static void test_group_commit_pipelines_the_savepoints(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PGB_URL");
    store_t *s = open_writer(u);
    bs_error_t err;
    bs_error_init(&err);
    ins_t a[4] = {{.job = {.run = run_insert}, .id = "p1", .t = "one"},
                  {.job = {.run = run_insert}, .id = "p2", .t = "two"},
                  {.job = {.run = run_insert}, .id = "p3", .t = "three"},
                  {.job = {.run = run_insert}, .id = "p4", .t = "four"}};
    store_job_t *ja[4] = {&a[0].job, &a[1].job, &a[2].job, &a[3].job};
    store_stats_t before, after;
    store_get_stats(s, &before);
    run_group(s, ja, 4);
    store_get_stats(s, &after);
    for (int i = 0; i < 4; i++)
        assert_int_equal(a[i].job.status, 0);
    assert_int_equal(after.max_batch_seen, 4);
    assert_int_equal(after.round_trips - before.round_trips, 4 + 1);
    assert_int_equal(count_rows(s), 4);

    /* ok, refused at once, ok, unique violation on the pipelined statement, ok. */
    ins_t b[5] = {{.job = {.run = run_insert}, .id = "q1", .t = "q-one"},
                  {.job = {.run = run_refuse_at_once}},
                  {.job = {.run = run_insert}, .id = "q3", .t = "q-three"},
                  {.job = {.run = run_insert}, .id = "q4", .t = "one"},
                  {.job = {.run = run_insert}, .id = "q5", .t = "q-five"}};
    store_job_t *jb[5] = {&b[0].job, &b[1].job, &b[2].job, &b[3].job, &b[4].job};
    run_group(s, jb, 5);
    assert_int_equal(b[0].job.status, 0);
    assert_int_equal(b[1].job.status, -1);
    assert_int_equal(b[1].job.err.code, BS_ERR_BAD_REQUEST);
    assert_int_equal(b[2].job.status, 0);
    assert_int_equal(b[3].job.status, -1);
    assert_int_equal(b[3].job.err.conflict, BS_CONFLICT_UNIQUE);
    assert_int_equal(b[4].job.status, 0);
    assert_int_equal(count_rows(s), 4 + 3);

    /* A refused job first and last: nothing else is lost. */
    ins_t c[3] = {{.job = {.run = run_refuse_at_once}},
                  {.job = {.run = run_insert}, .id = "r1", .t = "r-one"},
                  {.job = {.run = run_refuse_at_once}}};
    store_job_t *jc[3] = {&c[0].job, &c[1].job, &c[2].job};
    run_group(s, jc, 3);
    assert_int_equal(c[0].job.status, -1);
    assert_int_equal(c[1].job.status, 0);
    assert_int_equal(c[2].job.status, -1);
    assert_int_equal(count_rows(s), 4 + 3 + 1);

    /* Every job refused before any statement: nothing is sent, not even a BEGIN. */
    ins_t d[2] = {{.job = {.run = run_refuse_at_once}}, {.job = {.run = run_refuse_at_once}}};
    store_job_t *jd[2] = {&d[0].job, &d[1].job};
    store_get_stats(s, &before);
    run_group(s, jd, 2);
    store_get_stats(s, &after);
    assert_int_equal(d[0].job.status, -1);
    assert_int_equal(d[1].job.status, -1);
    assert_int_equal(d[1].job.err.code, BS_ERR_BAD_REQUEST);
    assert_int_equal(after.round_trips - before.round_trips, 0);
    store_stop_writer(s);
    store_close(s);
}

/* ADR 0018: a lone job's BEGIN and time-out ride with its first statement: one
 * insert is two round trips (BEGIN + INSERT, COMMIT), a job refused before any
 * statement none. */
static void test_lone_job_round_trips(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PGB_URL");
    store_t *s = open_writer(u);
    store_stats_t before, after;
    ins_t a = {.job = {.run = run_insert}, .id = "l1", .t = "lone"};
    store_job_t *ja[1] = {&a.job};
    store_get_stats(s, &before);
    run_group(s, ja, 1);
    store_get_stats(s, &after);
    assert_int_equal(a.job.status, 0);
    assert_int_equal(after.round_trips - before.round_trips, 2);
    assert_int_equal(count_rows(s), 1);
    ins_t b = {.job = {.run = run_refuse_at_once}};
    store_job_t *jb[1] = {&b.job};
    store_get_stats(s, &before);
    run_group(s, jb, 1);
    store_get_stats(s, &after);
    assert_int_equal(b.job.status, -1);
    assert_int_equal(b.job.err.code, BS_ERR_BAD_REQUEST);
    assert_int_equal(after.round_trips - before.round_trips, 0);
    /* A unique violation in the first pipeline: the job fails alone, typed. */
    ins_t c = {.job = {.run = run_insert}, .id = "l2", .t = "lone"};
    store_job_t *jc[1] = {&c.job};
    run_group(s, jc, 1);
    assert_int_equal(c.job.status, -1);
    assert_int_equal(c.job.err.conflict, BS_CONFLICT_UNIQUE);
    assert_int_equal(count_rows(s), 1);
    store_stop_writer(s);
    store_close(s);
}

/* --- ADR 0021: the statements of consecutive pipelinable jobs in one pipeline --------
 * The outcome of a group commit must be that of its jobs run one after another, in
 * order, whatever the writer sends together. The tests below mark their jobs
 * pipelinable and check every job's status and error, which rows are in the table
 * afterwards, and what a job's second statement saw. */

/* A writer store on u with the test table: open_writer, with prepared statements or
 * not (a direct connection prepares them, PgBouncer's transaction mode cannot). */
static store_t *open_writer_on(const char *u, int prepared)
{
    store_t *s = open_pg(u, prepared, 1);
    with_table(s);
    bs_error_t err;
    bs_error_init(&err);
    if (store_start_writer(s, &err) != 0)
        fail_msg("writer: %s", err.message);
    return s;
}

/* The ids in the table, sorted and comma-separated ("" when it is empty). */
static void ids_in_table(store_t *s, char *out, size_t cap)
{
    bs_error_t err;
    if (read_one(s, "SELECT COALESCE(string_agg(id, ',' ORDER BY id COLLATE \"C\"), '') FROM pgt", NULL, 0,
                 out, cap, &err) != 0)
        fail_msg("ids: %s", err.message);
}

static void assert_ids(store_t *s, const char *want)
{
    char got[1024];
    ids_in_table(s, got, sizeof(got));
    assert_string_equal(got, want);
}

/* Runs the jobs as one group commit and checks that they did share one transaction. */
static void run_one_batch(store_t *s, store_job_t **jobs, int n)
{
    store_stats_t before, after;
    store_get_stats(s, &before);
    run_group(s, jobs, n);
    store_get_stats(s, &after);
    assert_int_equal(after.commits + after.failed_commits - before.commits - before.failed_commits, 1);
    assert_int_equal(after.jobs - before.jobs, n);
}

static void run_ins_batch(store_t *s, ins_t *a, int n)
{
    store_job_t *j[64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++)
        j[i] = &a[i].job;
    run_one_batch(s, j, n);
}

/* n pipelinable inserts with id and t "<prefix><i>" (two digits, so they sort), written
 * into names. */
static void fill_inserts(ins_t *a, char (*names)[12], int n, const char *prefix)
{
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "%s%02d", prefix, i);
        a[i] = (ins_t){.job = {.run = run_insert, .pipelinable = 1}, .id = names[i], .t = names[i]};
    }
}

static void assert_ok(const store_job_t *j)
{
    if (j->status != 0)
        fail_msg("job failed: %s", j->err.message);
    assert_int_equal(j->err.code, BS_ERR_OK);
}

/* Failed alone on the unique index of t, typed as a single job's violation is. */
static void assert_unique(const store_job_t *j)
{
    assert_int_equal(j->status, -1);
    assert_int_equal(j->err.code, BS_ERR_VALIDATION);
    assert_int_equal(j->err.conflict, BS_CONFLICT_UNIQUE);
    assert_string_equal(j->err.constraint, "pgt_t_unique");
    assert_string_equal(j->err.columns, "t");
}

/* Failed with its own error, as the job set it. */
static void assert_refused(const store_job_t *j, const char *message)
{
    assert_int_equal(j->status, -1);
    assert_int_equal(j->err.code, BS_ERR_BAD_REQUEST);
    assert_string_equal(j->err.message, message);
}

/* An insert whose job then counts the rows whose id is LIKE its pattern, in the same
 * transaction, and records what it saw: a second statement, which must see the jobs
 * before it in the batch and its own row, never a later job's. */
typedef struct {
    store_job_t job; /* first */
    const char *id, *like;
    int count_first; /* counts before its insert (the count is then its first statement) */
    int fail_after;  /* returns -1 after its count */
    int64_t seen;    /* what the count saw; -1 until it ran */
    int runs;        /* how many times run was called */
} cnt_t;

static int run_insert_count(store_job_t *j, store_conn_t *c)
{
    cnt_t *k = (cnt_t *)j;
    k->runs++;
    k->seen = -1;
    bs_value_t p[4] = {bs_val_text(k->id, strlen(k->id)), bs_val_int(42), bs_val_double(0.5),
                       bs_val_text(k->id, strlen(k->id))};
    for (int step = 0; step < 2; step++) {
        if (step == (k->count_first ? 1 : 0)) {
            if (store_exec(c, "INSERT INTO pgt (id, n, d, b, t) VALUES (?1, ?2, ?3, true, ?4)", p, 4,
                           &j->err) != 1)
                return -1;
            continue;
        }
        bs_value_t like = bs_val_text(k->like, strlen(k->like));
        store_stmt_t *st = store_query(c, "SELECT COUNT(*) FROM pgt WHERE id LIKE ?1", &like, 1, &j->err);
        if (st == NULL)
            return -1;
        int rc = store_step(st, &j->err);
        if (rc == 1)
            k->seen = store_col(st, 0).i;
        store_done(st);
        if (rc != 1)
            return -1;
    }
    if (k->fail_after) {
        bs_error_set(&j->err, BS_ERR_BAD_REQUEST, "refused after its count");
        return -1;
    }
    return 0;
}

static int run_no_statement(store_job_t *j, store_conn_t *c)
{
    (void)j;
    (void)c;
    return 0;
}

/* ADR 0021: a group commit of four pipelinable one-statement jobs is two round trips:
 * one pipeline with the BEGIN, every insert and the savepoints between them, then the
 * COMMIT. One after another (test_group_commit_pipelines_the_savepoints) it is four and
 * the COMMIT. Direct (measured on a second batch: the first prepares the insert) and
 * through PgBouncer; checked after both rounds, so that both are reported. */
static uint64_t pipelined_trips[2];

static void pipelined_round_trips(const char *u, int prepared)
{
    store_t *s = open_writer_on(u, prepared);
    ins_t a[4];
    char names[4][12];
    fill_inserts(a, names, 4, "w");
    run_ins_batch(s, a, 4); /* warms the connection up: the insert is prepared */
    for (int i = 0; i < 4; i++)
        assert_ok(&a[i].job);
    fill_inserts(a, names, 4, "p");
    store_stats_t before, after;
    store_get_stats(s, &before);
    run_ins_batch(s, a, 4);
    store_get_stats(s, &after);
    for (int i = 0; i < 4; i++) {
        assert_ok(&a[i].job);
        assert_int_equal(a[i].runs, 1);
    }
    assert_int_equal(count_rows(s), 8);
    assert_ids(s, "p00,p01,p02,p03,w00,w01,w02,w03");
    pipelined_trips[prepared] = after.round_trips - before.round_trips;
    print_message("pipelinable batch of 4 (%s): %llu round trips\n", prepared ? "direct" : "pgbouncer",
                  (unsigned long long)pipelined_trips[prepared]);
    store_stop_writer(s);
    store_close(s);
}

static void test_pipelined_batch_is_two_round_trips(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    pipelined_trips[0] = pipelined_trips[1] = 2;
    direct_and_pgbouncer(u, pipelined_round_trips);
    assert_int_equal(pipelined_trips[1], 2);
    assert_int_equal(pipelined_trips[0], 2);
}

/* Every kind of failure in one pipelinable batch, each failing alone as it would one
 * after another: a unique violation on an earlier job's value, a job that returns -1
 * after its insert (its row is gone, and its value free again for a later job), a job
 * refused before any statement, a job that leaves the transaction aborted without
 * saying so; the first and the last job failing; a batch in which every job fails. */
static void pipelined_mixed_outcomes(const char *u, int prepared)
{
    store_t *s = open_writer_on(u, prepared);
    ins_t a[7] = {{.job = {.run = run_insert, .pipelinable = 1}, .id = "m1", .t = "m-one"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "m2", .t = "m-one"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "m3", .t = "m-three"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "m4", .t = "m-four", .fail_after = 1},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "m5", .t = "m-five"},
                  {.job = {.run = run_refuse_at_once, .pipelinable = 1}},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "m7", .t = "m-seven"}};
    run_ins_batch(s, a, 7);
    assert_ok(&a[0].job);
    assert_unique(&a[1].job);
    assert_ok(&a[2].job);
    assert_refused(&a[3].job, "refused after the insert");
    assert_ok(&a[4].job);
    assert_refused(&a[5].job, "refused before any statement");
    assert_ok(&a[6].job);
    for (int i = 0; i < 7; i++)
        if (i != 5)
            assert_int_equal(a[i].runs, 1);
    assert_ids(s, "m1,m3,m5,m7");

    /* The first job fails (on a committed row), the last one too; a rolled-back job's
     * value is free for the job after it; a job that left the transaction aborted fails
     * alone and its row is gone. */
    ins_t b[6] = {{.job = {.run = run_insert, .pipelinable = 1}, .id = "n1", .t = "m-one"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "n2", .t = "n-two", .fail_after = 1},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "n3", .t = "n-two"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "n4", .t = "n-four", .swallow = 1},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "n5", .t = "n-four"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "n6", .t = "n-two"}};
    run_ins_batch(s, b, 6);
    assert_unique(&b[0].job);
    assert_refused(&b[1].job, "refused after the insert");
    assert_ok(&b[2].job);
    assert_int_equal(b[3].job.status, -1);
    assert_int_not_equal(b[3].job.err.code, BS_ERR_OK);
    assert_ok(&b[4].job);
    assert_unique(&b[5].job);
    for (int i = 0; i < 6; i++)
        assert_int_equal(b[i].runs, 1);
    assert_ids(s, "m1,m3,m5,m7,n3,n5");

    /* Every job fails, each in its own way: nothing changes, the next batch commits. */
    ins_t c[3] = {{.job = {.run = run_insert, .pipelinable = 1}, .id = "o1", .t = "m-three"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "o2", .t = "o-two", .fail_after = 1},
                  {.job = {.run = run_refuse_at_once, .pipelinable = 1}}};
    run_ins_batch(s, c, 3);
    assert_unique(&c[0].job);
    assert_refused(&c[1].job, "refused after the insert");
    assert_refused(&c[2].job, "refused before any statement");
    assert_ids(s, "m1,m3,m5,m7,n3,n5");
    ins_t d[2] = {{.job = {.run = run_insert, .pipelinable = 1}, .id = "o3", .t = "o-two"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "o4", .t = "o-four"}};
    run_ins_batch(s, d, 2);
    assert_ok(&d[0].job);
    assert_ok(&d[1].job);
    assert_ids(s, "m1,m3,m5,m7,n3,n5,o3,o4");

    /* Jobs that send nothing: one that succeeds without a statement keeps its success,
     * the insert between them commits; a batch of refused jobs sends nothing at all. */
    ins_t e[4] = {{.job = {.run = run_no_statement, .pipelinable = 1}},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "q1", .t = "q-one"},
                  {.job = {.run = run_no_statement, .pipelinable = 1}},
                  {.job = {.run = run_refuse_at_once, .pipelinable = 1}}};
    run_ins_batch(s, e, 4);
    assert_ok(&e[0].job);
    assert_ok(&e[1].job);
    assert_ok(&e[2].job);
    assert_refused(&e[3].job, "refused before any statement");
    assert_ids(s, "m1,m3,m5,m7,n3,n5,o3,o4,q1");
    ins_t f[3] = {{.job = {.run = run_refuse_at_once, .pipelinable = 1}},
                  {.job = {.run = run_refuse_at_once, .pipelinable = 1}},
                  {.job = {.run = run_refuse_at_once, .pipelinable = 1}}};
    store_stats_t before, after;
    store_get_stats(s, &before);
    run_ins_batch(s, f, 3);
    store_get_stats(s, &after);
    for (int i = 0; i < 3; i++)
        assert_refused(&f[i].job, "refused before any statement");
    assert_int_equal(after.round_trips - before.round_trips, 0);
    store_stop_writer(s);
    store_close(s);
}

static void test_pipelined_batch_mixed_outcomes(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, pipelined_mixed_outcomes);
}

/* A job's second statement sees the jobs before it in the batch and its own row, never
 * a later job's, though the later jobs' inserts may have gone out in the same pipeline
 * as its first: job k of five counts k + 1 rows. When it then fails, its row is gone
 * and the others commit; a job that failed before it is not counted. */
static void pipelined_second_statement(const char *u, int prepared)
{
    store_t *s = open_writer_on(u, prepared);
    /* Five jobs, the third counts. */
    ins_t a[5];
    char names[5][12];
    fill_inserts(a, names, 5, "a");
    cnt_t k = {.job = {.run = run_insert_count, .pipelinable = 1}, .id = "a02", .like = "a%"};
    store_job_t *ja[5] = {&a[0].job, &a[1].job, &k.job, &a[3].job, &a[4].job};
    run_one_batch(s, ja, 5);
    for (int i = 0; i < 5; i++)
        assert_ok(ja[i]);
    assert_int_equal(k.seen, 3);
    assert_int_equal(k.runs, 1);
    assert_ids(s, "a00,a01,a02,a03,a04");

    /* The same, the counting job failing after its count: its row alone is gone. */
    fill_inserts(a, names, 5, "b");
    k = (cnt_t){
        .job = {.run = run_insert_count, .pipelinable = 1}, .id = "b02", .like = "b%", .fail_after = 1};
    run_one_batch(s, ja, 5);
    assert_int_equal(k.seen, 3);
    assert_int_equal(k.runs, 1);
    assert_refused(&k.job, "refused after its count");
    for (int i = 0; i < 5; i++)
        if (i != 2)
            assert_ok(ja[i]);
    assert_ids(s, "a00,a01,a02,a03,a04,b00,b01,b03,b04");

    /* Every job counts: job k sees k + 1 rows. */
    cnt_t all[5];
    char ids[5][12];
    store_job_t *jall[5];
    for (int i = 0; i < 5; i++) {
        snprintf(ids[i], sizeof(ids[i]), "c%02d", i);
        all[i] = (cnt_t){.job = {.run = run_insert_count, .pipelinable = 1}, .id = ids[i], .like = "c%"};
        jall[i] = &all[i].job;
    }
    run_one_batch(s, jall, 5);
    for (int i = 0; i < 5; i++) {
        assert_ok(jall[i]);
        assert_int_equal(all[i].seen, i + 1);
        assert_int_equal(all[i].runs, 1);
    }

    /* Failures before the counting job are not counted, nor is a later job: ok, after
     * its insert, unique violation, counts (2), ok. */
    ins_t f[4] = {{.job = {.run = run_insert, .pipelinable = 1}, .id = "d00", .t = "d00"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "d01", .t = "d01", .fail_after = 1},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "d02", .t = "d00"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "d04", .t = "d04"}};
    k = (cnt_t){.job = {.run = run_insert_count, .pipelinable = 1}, .id = "d03", .like = "d%"};
    store_job_t *jf[5] = {&f[0].job, &f[1].job, &f[2].job, &k.job, &f[3].job};
    run_one_batch(s, jf, 5);
    assert_ok(&f[0].job);
    assert_refused(&f[1].job, "refused after the insert");
    assert_unique(&f[2].job);
    assert_ok(&k.job);
    assert_int_equal(k.seen, 2);
    assert_ok(&f[3].job);
    assert_ids(s, "a00,a01,a02,a03,a04,b00,b01,b03,b04,c00,c01,c02,c03,c04,d00,d03,d04");

    /* A job whose first statement is the count (before its insert) sees the jobs before
     * it only, even when one of them fails after its statement had gone out with the
     * count's: ok, after its insert, counts (1), ok, counts (3). */
    ins_t e[3] = {{.job = {.run = run_insert, .pipelinable = 1}, .id = "e00", .t = "e00"},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "e01", .t = "e01", .fail_after = 1},
                  {.job = {.run = run_insert, .pipelinable = 1}, .id = "e03", .t = "e03"}};
    cnt_t first[2] = {
        {.job = {.run = run_insert_count, .pipelinable = 1}, .id = "e02", .like = "e%", .count_first = 1},
        {.job = {.run = run_insert_count, .pipelinable = 1}, .id = "e04", .like = "e%", .count_first = 1}};
    store_job_t *je[5] = {&e[0].job, &e[1].job, &first[0].job, &e[2].job, &first[1].job};
    run_one_batch(s, je, 5);
    assert_ok(&e[0].job);
    assert_refused(&e[1].job, "refused after the insert");
    assert_ok(&first[0].job);
    assert_int_equal(first[0].seen, 1);
    assert_ok(&e[2].job);
    assert_ok(&first[1].job);
    assert_int_equal(first[1].seen, 3);
    assert_int_equal(first[0].runs, 1);
    assert_int_equal(first[1].runs, 1);
    assert_ids(s, "a00,a01,a02,a03,a04,b00,b01,b03,b04,c00,c01,c02,c03,c04,d00,d03,d04,e00,e02,e03,e04");
    /* 40 jobs that each send a second statement: once the first has undone the work
     * sent ahead of it, the rest go one job per pipeline, so the batch costs about as
     * many round trips as one after another (2 per job here), not a resend of every
     * later job per job (quadratic). */
    cnt_t many[40];
    char mids[40][12];
    store_job_t *jmany[40];
    for (int i = 0; i < 40; i++) {
        snprintf(mids[i], sizeof(mids[i]), "g%02d", i);
        many[i] = (cnt_t){.job = {.run = run_insert_count, .pipelinable = 1}, .id = mids[i], .like = "g%"};
        jmany[i] = &many[i].job;
    }
    store_stats_t rt0, rt1;
    store_get_stats(s, &rt0);
    run_one_batch(s, jmany, 40);
    store_get_stats(s, &rt1);
    for (int i = 0; i < 40; i++) {
        assert_ok(jmany[i]);
        assert_int_equal(many[i].seen, i + 1);
    }
    assert_true(rt1.round_trips - rt0.round_trips <= 2 * 40 + 4);

    store_stop_writer(s);
    store_close(s);
}

static void test_pipelined_second_statement_sees_only_earlier_jobs(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, pipelined_second_statement);
}

/* Pipelinable and other jobs alternate in one batch, singly and in runs, with failures
 * of every kind in both: the outcome is that of the jobs run one after another (a run
 * of pipelinable jobs is broken up by the others, and a job of either kind sees the
 * ones before it, of either kind). P: pipelinable, N: not. */
static void pipelined_and_not(const char *u, int prepared)
{
    store_t *s = open_writer_on(u, prepared);
    /* P ok, P ok, N unique (on a P's value), P unique, P -1 after its insert, P ok (on
     * that value), N -1 after its insert, P ok (on that value), P refused, N counts, P
     * counts, P ok, N ok, P unique (on that N's value), N refused, P ok. */
    ins_t a[16] = {{.job = {.run = run_insert, .pipelinable = 1}, .id = "x00", .t = "x00"},
                   {.job = {.run = run_insert, .pipelinable = 1}, .id = "x01", .t = "x01"},
                   {.job = {.run = run_insert}, .id = "x02", .t = "x01"},
                   {.job = {.run = run_insert, .pipelinable = 1}, .id = "x03", .t = "x00"},
                   {.job = {.run = run_insert, .pipelinable = 1}, .id = "x04", .t = "x04", .fail_after = 1},
                   {.job = {.run = run_insert, .pipelinable = 1}, .id = "x05", .t = "x04"},
                   {.job = {.run = run_insert}, .id = "x06", .t = "x06", .fail_after = 1},
                   {.job = {.run = run_insert, .pipelinable = 1}, .id = "x07", .t = "x06"},
                   {.job = {.run = run_refuse_at_once, .pipelinable = 1}},
                   {.id = NULL}, /* k[0] */
                   {.id = NULL}, /* k[1] */
                   {.job = {.run = run_insert, .pipelinable = 1}, .id = "x11", .t = "x11"},
                   {.job = {.run = run_insert}, .id = "x12", .t = "x12"},
                   {.job = {.run = run_insert, .pipelinable = 1}, .id = "x13", .t = "x12"},
                   {.job = {.run = run_refuse_at_once}},
                   {.job = {.run = run_insert, .pipelinable = 1}, .id = "x15", .t = "x15"}};
    cnt_t k[2] = {{.job = {.run = run_insert_count}, .id = "x09", .like = "x%"},
                  {.job = {.run = run_insert_count, .pipelinable = 1}, .id = "x10", .like = "x%"}};
    store_job_t *j[16];
    for (int i = 0; i < 16; i++)
        j[i] = &a[i].job;
    j[9] = &k[0].job;
    j[10] = &k[1].job;
    run_one_batch(s, j, 16);
    assert_ok(&a[0].job);
    assert_ok(&a[1].job);
    assert_unique(&a[2].job);
    assert_unique(&a[3].job);
    assert_refused(&a[4].job, "refused after the insert");
    assert_ok(&a[5].job);
    assert_refused(&a[6].job, "refused after the insert");
    assert_ok(&a[7].job);
    assert_refused(&a[8].job, "refused before any statement");
    assert_ok(&k[0].job);
    assert_int_equal(k[0].seen, 5); /* x00 x01 x05 x07 and its own */
    assert_ok(&k[1].job);
    assert_int_equal(k[1].seen, 6);
    assert_ok(&a[11].job);
    assert_ok(&a[12].job);
    assert_unique(&a[13].job);
    assert_refused(&a[14].job, "refused before any statement");
    assert_ok(&a[15].job);
    for (int i = 0; i < 16; i++)
        if (a[i].job.run == run_insert)
            assert_int_equal(a[i].runs, 1);
    assert_int_equal(k[0].runs, 1);
    assert_int_equal(k[1].runs, 1);
    assert_ids(s, "x00,x01,x05,x07,x09,x10,x11,x12,x15");
    store_stop_writer(s);
    store_close(s);
}

static void test_pipelined_and_other_jobs_alternate(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, pipelined_and_not);
}

/* A batch of 64 pipelinable jobs, every seventh a unique violation (on the value of
 * the job before it): exactly the other 55 commit. */
static void pipelined_many(const char *u, int prepared)
{
    store_t *s = open_writer_on(u, prepared);
    static ins_t a[64];
    static char names[64][12];
    fill_inserts(a, names, 64, "v");
    for (int i = 6; i < 64; i += 7)
        a[i].t = names[i - 1];
    run_ins_batch(s, a, 64);
    char want[1024] = "";
    size_t n = 0;
    for (int i = 0; i < 64; i++) {
        if (i % 7 == 6) {
            assert_unique(&a[i].job);
            continue;
        }
        assert_ok(&a[i].job);
        n += (size_t)snprintf(want + n, sizeof(want) - n, "%s%s", n ? "," : "", names[i]);
    }
    for (int i = 0; i < 64; i++)
        assert_int_equal(a[i].runs, 1);
    assert_int_equal(count_rows(s), 64 - 9);
    assert_ids(s, want);
    store_stop_writer(s);
    store_close(s);
}

static void test_pipelined_batch_of_64(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, pipelined_many);
}

/* A unique violation late in a pipelined batch: the jobs before it are not sent again
 * into the transaction it aborted (each such pipeline would fail); after its own
 * rollback the two after it go in one pipeline. A few round trips, not one per job. */
static void pipelined_late_failure(const char *u, int prepared)
{
    store_t *s = open_writer_on(u, prepared);
    static ins_t a[20];
    static char names[20][12];
    for (int round = 0; round < 2; round++) { /* the first prepares the statement (direct) */
        fill_inserts(a, names, 20, round ? "lb" : "la");
        a[17].t = names[3];
        store_stats_t before, after;
        store_get_stats(s, &before);
        run_ins_batch(s, a, 20);
        store_get_stats(s, &after);
        for (int i = 0; i < 20; i++) {
            if (i == 17)
                assert_unique(&a[i].job);
            else
                assert_ok(&a[i].job);
        }
        /* The pipeline, the rollback to its savepoint, the two after it, the COMMIT. */
        if (round == 1)
            assert_true(after.round_trips - before.round_trips <= 5);
    }
    assert_int_equal(count_rows(s), 2 * 19);
    store_stop_writer(s);
    store_close(s);
}

static void test_pipelined_late_failure_costs_few_round_trips(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, pipelined_late_failure);
}

/* A job that ends its own connection in the middle of a pipelinable batch: the batch
 * fails whole, as one after another. No job is acknowledged (the ones before it had
 * succeeded, the ones after it cannot), each says 503, no row is there, and the next
 * batch commits on a new connection. */
static int run_kill_own_backend(store_job_t *j, store_conn_t *c)
{
    return store_exec(c, "SELECT pg_terminate_backend(pg_backend_pid())", NULL, 0, &j->err) < 0 ? -1 : 0;
}

/* Ends its connection the first time the server runs it (a sequence is not rolled
 * back), whether the job's statement is run again or only sent again. */
static int run_kill_once(store_job_t *j, store_conn_t *c)
{
    const char *sql = "SELECT CASE WHEN nextval('pgt_kill') = 1 THEN pg_terminate_backend(pg_backend_pid()) "
                      "ELSE true END";
    return store_exec(c, sql, NULL, 0, &j->err) < 0 ? -1 : 0;
}

static void pipelined_lost(const char *u, int prepared)
{
    store_t *s = open_writer_on(u, prepared);
    ins_t a[5];
    char names[5][12];
    fill_inserts(a, names, 5, "k");
    a[2] = (ins_t){.job = {.run = run_kill_own_backend, .pipelinable = 1}};
    run_ins_batch(s, a, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(a[i].job.status, -1);
        assert_int_equal(a[i].job.err.code, BS_ERR_UNAVAILABLE);
    }
    assert_ids(s, "");
    fill_inserts(a, names, 3, "l");
    run_ins_batch(s, a, 3);
    for (int i = 0; i < 3; i++)
        assert_ok(&a[i].job);
    assert_ids(s, "l00,l01,l02");

    /* A connection lost once, in the middle of the batch: whether or not the backend
     * sends the transaction again on a new connection, it is all or nothing, never a
     * part of the batch acknowledged. */
    fill_inserts(a, names, 5, "m");
    a[2] = (ins_t){.job = {.run = run_kill_once, .pipelinable = 1}};
    bs_error_t err;
    bs_error_init(&err);
    assert_int_equal(store_exec_script(store_reader(s, 0),
                                       "DROP SEQUENCE IF EXISTS pgt_kill; CREATE SEQUENCE pgt_kill", &err),
                     0);
    run_ins_batch(s, a, 5);
    int acked = 0;
    for (int i = 0; i < 5; i++)
        acked += a[i].job.status == 0;
    print_message("a connection lost once in a pipelinable batch (%s): %s\n",
                  prepared ? "direct" : "pgbouncer", acked ? "sent again, committed" : "failed whole");
    if (acked == 0) {
        for (int i = 0; i < 5; i++)
            assert_int_equal(a[i].job.err.code, BS_ERR_UNAVAILABLE);
        assert_ids(s, "l00,l01,l02");
    } else {
        assert_int_equal(acked, 5);
        assert_ids(s, "l00,l01,l02,m00,m01,m03,m04");
    }
    store_stop_writer(s);
    store_close(s);
}

static void test_pipelined_batch_lost_connection(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, pipelined_lost);
}

static int64_t prepared_seen = -1;

static int run_prepared_count(store_job_t *j, store_conn_t *c)
{
    store_stmt_t *st = store_query(c, "SELECT count(*) FROM pg_prepared_statements", NULL, 0, &j->err);
    if (st == NULL)
        return -1;
    if (store_step(st, &j->err) == 1)
        prepared_seen = store_col(st, 0).i;
    store_done(st);
    return 0;
}

/* --db-writer (ADR 0018): reads through PgBouncer, the writer on a direct session of
 * its own, where it prepares its statements (seen in pg_prepared_statements from
 * inside a write job, which only a session that prepared them shows). */
static void test_direct_writer_prepares(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PGB_URL");
    const char *direct = url("BASALT_TEST_PG_URL");
    if (direct == NULL)
        skip();
    store_config_t cfg = {.path = u,
                          .readers = 1,
                          .connect_timeout_ms = 2000,
                          .statement_timeout_ms = 5000,
                          .writer_url = direct};
    store_t *s = open_cfg(&cfg);
    bs_error_t err;
    bs_error_init(&err);
    with_table(s);
    if (store_start_writer(s, &err) != 0)
        fail_msg("writer: %s", err.message);
    ins_t a[3] = {{.job = {.run = run_insert}, .id = "w1", .t = "one"},
                  {.job = {.run = run_insert}, .id = "w2", .t = "two"},
                  {.job = {.run = run_insert}, .id = "w3", .t = "one"}};
    store_job_t *ja[3] = {&a[0].job, &a[1].job, &a[2].job};
    run_group(s, ja, 3);
    assert_int_equal(a[0].job.status, 0);
    assert_int_equal(a[1].job.status, 0);
    assert_int_equal(a[2].job.status, -1);
    assert_int_equal(a[2].job.err.conflict, BS_CONFLICT_UNIQUE);
    assert_int_equal(count_rows(s), 2);
    store_job_t probe = {.run = run_prepared_count};
    store_job_t *jp[1] = {&probe};
    run_group(s, jp, 1);
    assert_int_equal(probe.status, 0);
    assert_true(prepared_seen >= 1);
    store_stop_writer(s);
    store_close(s);
}

/* The realtime outbox on PostgreSQL: a job's events take their offsets and rows in
 * one statement (ADR 0017), numbered without gaps across a group commit in which
 * some jobs fail (before any statement, or after theirs), and handed to the sink in
 * order with the records as written. */
static struct {
    int64_t offs[64];
    char ids[64][8];
    size_t n;
} ob_seen;

static void ob_sink(json_t *changes, int history)
{
    size_t i;
    json_t *ch;
    json_array_foreach(changes, i, ch)
    {
        if (history || ob_seen.n == 64)
            continue;
        ob_seen.offs[ob_seen.n] = json_integer_value(json_object_get(ch, "offset"));
        const char *id = json_string_value(json_object_get(json_object_get(ch, "record"), "id"));
        snprintf(ob_seen.ids[ob_seen.n], sizeof(ob_seen.ids[0]), "%s", id ? id : "");
        ob_seen.n++;
    }
    json_decref(changes);
}

typedef struct {
    store_job_t job;
    const char *id;
    int fail; /* 1: before any statement; 2: after its insert */
} obj_t;

static int run_ob(store_job_t *j, store_conn_t *c)
{
    obj_t *o = (obj_t *)j;
    if (o->fail == 1) {
        bs_error_set(&j->err, BS_ERR_BAD_REQUEST, "refused");
        return -1;
    }
    bs_value_t p[4] = {bs_val_text(o->id, strlen(o->id)), bs_val_int(1), bs_val_double(1), bs_val_null()};
    if (store_exec(c, "INSERT INTO pgt (id, n, d, b, t) VALUES (?1, ?2, ?3, true, ?4)", p, 4, &j->err) != 1)
        return -1;
    if (o->fail == 2) {
        bs_error_set(&j->err, BS_ERR_BAD_REQUEST, "refused after the insert");
        return -1;
    }
    /* Two changes, one with text that needs escaping in the statement's JSON. */
    json_array_append_new(j->events, json_pack("{s:s, s:s, s:{s:s, s:s}}", "action", "create", "collectionId",
                                               "c1", "record", "id", o->id, "v", "a \"q\" \\ \u00e9"));
    json_array_append_new(j->events, json_pack("{s:s, s:s, s:{s:s}}", "action", "update", "collectionId",
                                               "c1", "record", "id", o->id));
    return 0;
}

static void test_outbox_events_in_one_statement(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PGB_URL");
    store_t *s = open_pg(u, 0, 1);
    with_table(s);
    bs_error_t err;
    bs_error_init(&err);
    store_outbox_config_t oc = {.window_ms = 3600000, .max_events = 100000, .sink = ob_sink};
    uint32_t epoch = 0;
    assert_int_equal(store_outbox_open(s, &oc, &epoch, &err), 0);
    assert_int_equal(store_start_writer(s, &err), 0);
    ob_seen.n = 0;
    obj_t o[5] = {{.job = {.run = run_ob}, .id = "e1"},
                  {.job = {.run = run_ob}, .id = "e2", .fail = 1},
                  {.job = {.run = run_ob}, .id = "e3"},
                  {.job = {.run = run_ob}, .id = "e4", .fail = 2},
                  {.job = {.run = run_ob}, .id = "e5"}};
    store_job_t *jo[5];
    for (int i = 0; i < 5; i++) {
        o[i].job.events = json_array();
        jo[i] = &o[i].job;
    }
    store_stats_t before, after;
    /* The listener's first LISTEN makes the writer read others' events once at an idle
     * tick (a round trip of its own): let it pass before counting. */
    usleep(300000);
    store_get_stats(s, &before);
    run_group(s, jo, 5);
    store_get_stats(s, &after);
    for (int i = 0; i < 5; i++)
        assert_int_equal(o[i].job.status, o[i].fail ? -1 : 0);
    /* ADR 0018: e1 with the BEGIN, e3 and e4 with their savepoints, e4's ROLLBACK TO,
     * e5, then the one outbox statement for every event of the batch, and COMMIT. */
    assert_int_equal(after.round_trips - before.round_trips, 7);
    assert_int_equal(ob_seen.n, 6);
    const char *want[6] = {"e1", "e1", "e3", "e3", "e5", "e5"};
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(ob_seen.ids[i], want[i]);
        if (i > 0)
            assert_int_equal(ob_seen.offs[i], ob_seen.offs[i - 1] + 1);
    }
    /* The rows as stored: read back by another store, text intact. */
    store_t *other = open_pg(u, 0, 1);
    bs_value_t p = bs_val_int(ob_seen.offs[0]);
    store_stmt_t *st = store_query(
        store_reader(other, 0), "SELECT off, record FROM _events WHERE off >= ?1 ORDER BY off", &p, 1, &err);
    assert_non_null(st);
    assert_int_equal(store_step(st, &err), 1);
    assert_int_equal(store_col(st, 0).i, ob_seen.offs[0]);
    bs_value_t rec = store_col(st, 1);
    json_t *r = json_loadb(rec.s, rec.n, 0, NULL);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(r, "v")), "a \"q\" \\ \u00e9");
    json_decref(r);
    store_done(st);
    for (int i = 0; i < 5; i++)
        json_decref(o[i].job.events);
    store_stop_writer(s);
    store_close(other);
    store_close(s);
}

/* The outbox with a pipelinable batch (ADR 0021): the events are those of the jobs
 * that succeeded, each job's once and in job order, numbered without gaps, as one
 * after another; a job that failed before, after or in its insert (a duplicate id)
 * adds none. */
static void pipelined_outbox(const char *u, int prepared)
{
    store_t *s = open_pg(u, prepared, 1);
    with_table(s);
    bs_error_t err;
    bs_error_init(&err);
    store_outbox_config_t oc = {.window_ms = 3600000, .max_events = 100000, .sink = ob_sink};
    uint32_t epoch = 0;
    assert_int_equal(store_outbox_open(s, &oc, &epoch, &err), 0);
    assert_int_equal(store_start_writer(s, &err), 0);
    usleep(300000); /* the listener's first LISTEN and the idle tick it brings */
    ob_seen.n = 0;
    obj_t o[6] = {{.job = {.run = run_ob, .pipelinable = 1}, .id = "e1"},
                  {.job = {.run = run_ob, .pipelinable = 1}, .id = "e2", .fail = 1},
                  {.job = {.run = run_ob, .pipelinable = 1}, .id = "e3"},
                  {.job = {.run = run_ob, .pipelinable = 1}, .id = "e4", .fail = 2},
                  {.job = {.run = run_ob, .pipelinable = 1}, .id = "e1"},
                  {.job = {.run = run_ob, .pipelinable = 1}, .id = "e5"}};
    store_job_t *jo[6];
    for (int i = 0; i < 6; i++) {
        o[i].job.events = json_array();
        jo[i] = &o[i].job;
    }
    run_one_batch(s, jo, 6);
    assert_int_equal(o[0].job.status, 0);
    assert_refused(&o[1].job, "refused");
    assert_int_equal(o[2].job.status, 0);
    assert_refused(&o[3].job, "refused after the insert");
    assert_int_equal(o[4].job.status, -1);
    assert_int_equal(o[4].job.err.conflict, BS_CONFLICT_UNIQUE);
    assert_int_equal(o[5].job.status, 0);
    assert_int_equal(ob_seen.n, 6);
    const char *want[6] = {"e1", "e1", "e3", "e3", "e5", "e5"};
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(ob_seen.ids[i], want[i]);
        if (i > 0)
            assert_int_equal(ob_seen.offs[i], ob_seen.offs[i - 1] + 1);
    }
    assert_ids(s, "e1,e3,e5");
    for (int i = 0; i < 6; i++)
        json_decref(o[i].job.events);
    store_stop_writer(s);
    store_close(s);
}

static void test_pipelined_batch_outbox_events(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, pipelined_outbox);
}

typedef struct {
    store_t *s;
    int who;
    obj_t o[40];
    char ids[40][12];
} ob_thread_t;

/* One instance's writes: eight group commits of five event-carrying jobs, one of
 * which fails after its insert. */
static void *ob_writes(void *arg)
{
    ob_thread_t *t = arg;
    for (int g = 0; g < 8; g++) {
        store_job_t *jo[5];
        for (int i = 0; i < 5; i++) {
            int k = g * 5 + i;
            snprintf(t->ids[k], sizeof(t->ids[k]), "c%d-%d", t->who, k);
            t->o[k] = (obj_t){.job = {.run = run_ob}, .id = t->ids[k], .fail = i == 2 ? 2 : 0};
            t->o[k].job.events = json_array();
            jo[i] = &t->o[k].job;
        }
        run_group(t->s, jo, 5);
    }
    return NULL;
}

/* Two instances (two stores on one database) commit event-carrying group commits at
 * the same time: the offsets in _events are gap-free and every committed job's two
 * events are there, in its order (ADR 0006: the counter row, taken once per
 * transaction since ADR 0018, orders the committers). */
static void test_outbox_offsets_gap_free_across_writers(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PGB_URL");
    store_t *s[2];
    static ob_thread_t t[2];
    pthread_t th[2];
    bs_error_t err;
    bs_error_init(&err);
    store_outbox_config_t oc = {.window_ms = 3600000, .max_events = 100000, .sink = ob_sink};
    for (int i = 0; i < 2; i++) {
        s[i] = open_pg(u, 0, 1);
        if (i == 0)
            with_table(s[i]);
        uint32_t epoch = 0;
        assert_int_equal(store_outbox_open(s[i], &oc, &epoch, &err), 0);
        assert_int_equal(store_start_writer(s[i], &err), 0);
    }
    store_stmt_t *st =
        store_query(store_reader(s[0], 0), "SELECT COALESCE(MAX(off), 0) FROM _events", NULL, 0, &err);
    assert_non_null(st);
    assert_int_equal(store_step(st, &err), 1);
    int64_t base = store_col(st, 0).i;
    store_done(st);
    for (int i = 0; i < 2; i++) {
        t[i].s = s[i];
        t[i].who = i;
        assert_int_equal(pthread_create(&th[i], NULL, ob_writes, &t[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    int committed = 0;
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 40; k++) {
            assert_int_equal(t[i].o[k].job.status, t[i].o[k].fail ? -1 : 0);
            committed += t[i].o[k].job.status == 0;
        }
    bs_value_t p = bs_val_int(base);
    st = store_query(store_reader(s[0], 0),
                     "SELECT COUNT(*), MIN(off), MAX(off), COUNT(DISTINCT record::jsonb->>'id') FROM _events "
                     "WHERE off > ?1",
                     &p, 1, &err);
    assert_non_null(st);
    assert_int_equal(store_step(st, &err), 1);
    assert_int_equal(store_col(st, 0).i, 2 * committed);
    assert_int_equal(store_col(st, 1).i, base + 1);
    assert_int_equal(store_col(st, 2).i, base + 2 * committed);
    assert_int_equal(store_col(st, 3).i, committed);
    store_done(st);
    /* Each job's two events are consecutive, create before update. */
    st =
        store_query(store_reader(s[0], 0),
                    "SELECT COUNT(*) FROM _events a JOIN _events b ON b.off = a.off + 1 WHERE a.off > ?1 AND "
                    "a.action = 'create' AND (b.action <> 'update' OR b.record::jsonb->>'id' <> "
                    "a.record::jsonb->>'id')",
                    &p, 1, &err);
    assert_non_null(st);
    assert_int_equal(store_step(st, &err), 1);
    assert_int_equal(store_col(st, 0).i, 0);
    store_done(st);
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < 40; k++)
            json_decref(t[i].o[k].job.events);
        store_stop_writer(s[i]);
        store_close(s[i]);
    }
}

/* --- ADR 0021: a pool thread's point reads in one pipeline ------------------------------
 * A pool thread that takes a share of 2..8 point reads (no replicas, none a pooled
 * write) runs them as coroutines up to their first statement and sends those in one
 * BEGIN ... COMMIT pipeline. Whatever goes out together, every read's outcome must be
 * the one it has alone. The reads below each read a row of their own and check what
 * they got; each burst's outcomes are compared with the same reads run one at a time
 * (a share of one never goes through the pipeline). */

/* What a read does: its row (n = 7 * key) through rd_sql; RD_TWO then finds the next
 * row's id by a second statement on that value; RD_TWO_FAIL's second statement divides
 * by zero on it; RD_DIV0 and RD_MISSING fail on their first statement (a value the
 * database refuses, a table that is not there); RD_REFUSE fails after its read;
 * RD_NONE sends nothing; RD_RECOVER's first statement fails, it lets that go and reads
 * its row; RD_BUDGET reads its row under store_set_budget; RD_KILL ends its own
 * connection; RD_WRITE (a pooled write, store_run_pooled) inserts row "w<key>". */
enum {
    RD_ROW,
    RD_TWO,
    RD_TWO_FAIL,
    RD_DIV0,
    RD_MISSING,
    RD_REFUSE,
    RD_NONE,
    RD_RECOVER,
    RD_BUDGET,
    RD_KILL,
    RD_WRITE
};

typedef struct {
    store_job_t job; /* first */
    int kind;
    int key;
    double sleep;  /* seconds its first statement sleeps (0: none) */
    int64_t n;     /* the n it read; -1 until read */
    char next[12]; /* RD_TWO: the id its second statement found */
    int64_t pid;   /* the backend that answered its first statement */
    char xact[48]; /* and that statement's transaction_timestamp() */
    int runs;      /* how many times run_rd ran it */
    int *started;  /* optional: set when it starts */
} rd_t;

static const char rd_sql[] =
    "SELECT n, pg_backend_pid(), transaction_timestamp()::text FROM pgt WHERE id = ?1";
static const char rd_sleep_sql[] =
    "SELECT n, pg_backend_pid(), transaction_timestamp()::text FROM pg_sleep(?2), pgt WHERE id = ?1";

/* The read of r's row: n, pid and xact filled; 0, or -1 with err. */
static int rd_read(rd_t *r, store_conn_t *c)
{
    char id[12];
    snprintf(id, sizeof(id), "r%02d", r->key);
    bs_value_t p[2] = {bs_val_text(id, strlen(id)), bs_val_double(r->sleep)};
    store_stmt_t *st =
        store_query(c, r->sleep > 0 ? rd_sleep_sql : rd_sql, p, r->sleep > 0 ? 2 : 1, &r->job.err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, &r->job.err);
    if (rc == 1) {
        r->n = store_col(st, 0).i;
        r->pid = store_col(st, 1).i;
        bs_value_t x = store_col(st, 2);
        snprintf(r->xact, sizeof(r->xact), "%.*s", (int)x.n, x.s);
    } else if (rc == 0) {
        bs_error_set(&r->job.err, BS_ERR_NOT_FOUND, "no row %s", id);
    }
    store_done(st);
    return rc == 1 ? 0 : -1;
}

static int run_rd(store_job_t *j, store_conn_t *c)
{
    rd_t *r = (rd_t *)j;
    r->runs++;
    r->n = -1;
    r->next[0] = '\0';
    if (r->started != NULL)
        __atomic_store_n(r->started, 1, __ATOMIC_SEQ_CST);
    char id[12];
    snprintf(id, sizeof(id), "r%02d", r->key);
    bs_value_t key = bs_val_text(id, strlen(id));
    switch (r->kind) {
    case RD_ROW:
        return rd_read(r, c);
    case RD_TWO:
    case RD_TWO_FAIL: {
        if (rd_read(r, c) != 0)
            return -1;
        bs_value_t v = bs_val_int(r->n + (r->kind == RD_TWO ? 7 : 0));
        store_stmt_t *st = store_query(c,
                                       r->kind == RD_TWO ? "SELECT id FROM pgt WHERE n = ?1"
                                                         : "SELECT n / (n - ?1) FROM pgt WHERE n = ?1",
                                       &v, 1, &j->err);
        if (st == NULL)
            return -1;
        int rc = store_step(st, &j->err);
        if (rc == 1) {
            bs_value_t t = store_col(st, 0);
            snprintf(r->next, sizeof(r->next), "%.*s", (int)t.n, t.s);
        } else if (rc == 0) {
            bs_error_set(&j->err, BS_ERR_NOT_FOUND, "no row after %s", id);
        }
        store_done(st);
        return rc == 1 ? 0 : -1;
    }
    case RD_DIV0:
        return store_exec(c, "SELECT n / (n - n) FROM pgt WHERE id = ?1", &key, 1, &j->err) < 0 ? -1 : 0;
    case RD_MISSING:
        return store_exec(c, "SELECT n FROM pgt_missing WHERE id = ?1", &key, 1, &j->err) < 0 ? -1 : 0;
    case RD_REFUSE:
        if (rd_read(r, c) != 0)
            return -1;
        bs_error_set(&j->err, BS_ERR_BAD_REQUEST, "refused after its read");
        return -1;
    case RD_NONE:
        return 0;
    case RD_RECOVER:
        if (store_exec(c, "SELECT n FROM pgt_missing WHERE id = ?1", &key, 1, &j->err) >= 0) {
            bs_error_set(&j->err, BS_ERR_BAD_REQUEST, "pgt_missing is there");
            return -1;
        }
        bs_error_init(&j->err); /* it does without that one */
        return rd_read(r, c);
    case RD_BUDGET: {
        store_set_budget(c, 150);
        int rc = rd_read(r, c);
        store_set_budget(c, 0);
        return rc;
    }
    case RD_KILL:
        return store_exec(c, "SELECT pg_terminate_backend(pg_backend_pid())", NULL, 0, &j->err) < 0 ? -1 : 0;
    case RD_WRITE: {
        char wid[12];
        snprintf(wid, sizeof(wid), "w%02d", r->key);
        bs_value_t p[2] = {bs_val_text(wid, strlen(wid)), bs_val_int(r->key)};
        return store_exec(c, "INSERT INTO pgt (id, n, d, b, t) VALUES (?1, ?2, 0.5, true, ?1)", p, 2,
                          &j->err) == 1
                   ? 0
                   : -1;
    }
    }
    return -1;
}

/* A store on u with pool_size pool threads and the test table, rows r00..r63 (n = 7 *
 * key); statement_timeout_ms as given (the read deadline is it plus 0.5 s). */
static store_t *open_reads(const char *u, int prepared, int pool, int statement_timeout_ms)
{
    store_config_t cfg = {.path = u,
                          .readers = 1,
                          .pool_size = pool,
                          .connect_timeout_ms = 2000,
                          .statement_timeout_ms = statement_timeout_ms,
                          .prepared_statements = prepared};
    store_t *s = open_cfg(&cfg);
    with_table(s);
    bs_error_t err;
    bs_error_init(&err);
    if (store_exec(store_reader(s, 0),
                   "INSERT INTO pgt (id, n, d, b, t) SELECT 'r' || lpad(g::text, 2, '0'), 7 * g, 0.5, true, "
                   "'r' || g FROM generate_series(0, 63) g",
                   NULL, 0, &err) != 64)
        fail_msg("rows: %s", err.message);
    return s;
}

/* Submits the jobs in order as one burst and waits for every one: reads with
 * store_read (handed over together by store_read_flush), RD_WRITE with
 * store_run_pooled (handed over at once: the reads before it are flushed first, so
 * that the pool's queue holds them all in order). */
static void run_burst(store_t *s, rd_t **r, int n)
{
    mailbox_t mb;
    assert_int_equal(mailbox_init(&mb), 0);
    for (int i = 0; i < n; i++) {
        r[i]->job.reply_to = &mb;
        r[i]->job.msg.deliver = deliver;
        r[i]->job.run = run_rd;
        if (r[i]->kind == RD_WRITE) {
            store_read_flush(s, 0);
            r[i]->job.status = 0;
            bs_error_init(&r[i]->job.err);
            assert_int_equal(store_run_pooled(s, &r[i]->job), 0);
        } else {
            store_read(s, 0, &r[i]->job);
        }
    }
    store_read_flush(s, 0);
    for (int done = 0, waited = 0; done < n; waited++) {
        if (waited > 20000)
            fail_msg("the read pool answered %d of %d reads in 20 s", done, n);
        usleep(1000);
        done += mailbox_drain(&mb);
    }
    mailbox_destroy(&mb);
}

static void run_burst_of(store_t *s, rd_t *r, int n)
{
    rd_t *p[64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++)
        p[i] = &r[i];
    run_burst(s, p, n);
}

/* The burst's read r compared with the same read run alone, after it: the same status,
 * error code and message, the same values read. */
static void assert_as_alone(store_t *s, const rd_t *r, int i)
{
    rd_t alone = {.kind = r->kind, .key = r->key, .sleep = r->sleep};
    rd_t *p = &alone;
    run_burst(s, &p, 1);
    if (r->job.status != alone.job.status || r->job.err.code != alone.job.err.code ||
        strcmp(r->job.err.message, alone.job.err.message) != 0)
        fail_msg("read %d (kind %d, key %d): status %d \"%s\" in the burst, %d \"%s\" alone", i, r->kind,
                 r->key, r->job.status, r->job.err.message, alone.job.status, alone.job.err.message);
    assert_int_equal(r->n, alone.n);
    assert_string_equal(r->next, alone.next);
}

static void assert_burst_as_alone(store_t *s, const rd_t *r, int n)
{
    for (int i = 0; i < n; i++)
        assert_as_alone(s, &r[i], i);
}

/* Read r got its own row (and, for RD_TWO, the next one's id by its second statement). */
static void assert_row(const rd_t *r, int i)
{
    if (r->job.status != 0)
        fail_msg("read %d (kind %d, key %d) failed: %s", i, r->kind, r->key, r->job.err.message);
    assert_int_equal(r->job.err.code, BS_ERR_OK);
    assert_int_equal(r->n, 7 * r->key);
    assert_int_equal(r->runs, 1);
    if (r->kind == RD_TWO) {
        char want[16];
        snprintf(want, sizeof(want), "r%02d", r->key + 1);
        assert_string_equal(r->next, want);
    }
}

/* Read r failed with an error (its run called once). */
static void assert_failed(const rd_t *r, int i)
{
    if (r->job.status != -1 || r->job.err.code == BS_ERR_OK)
        fail_msg("read %d (kind %d, key %d): status %d, error %d, n %lld; a failure was due", i, r->kind,
                 r->key, r->job.status, (int)r->job.err.code, (long long)r->n);
    assert_int_equal(r->runs, 1);
}

/* n reads of rows key0, key0 + 1, ... (of kind, RD_ROW when 0). */
static void fill_reads(rd_t *r, int n, int key0, int kind)
{
    for (int i = 0; i < n; i++)
        r[i] = (rd_t){.kind = kind, .key = key0 + i};
}

/* 32 point reads in one burst, on a pool of 1 and of 2 (shares of up to 8 go out as one
 * pipeline): every read gets its own row, once, as it does alone; so does the next
 * burst on the same connections. */
static void reads_burst(const char *u, int prepared)
{
    for (int pool = 1; pool <= 2; pool++) {
        store_t *s = open_reads(u, prepared, pool, 5000);
        rd_t r[32];
        for (int round = 0; round < 2; round++) {
            fill_reads(r, 32, round * 32, RD_ROW);
            run_burst_of(s, r, 32);
            for (int i = 0; i < 32; i++)
                assert_row(&r[i], i);
        }
        assert_burst_as_alone(s, r, 32);
        store_close(s);
    }
}

static void test_pooled_reads_burst_each_gets_its_row(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, reads_burst);
}

/* Reads that fail on their first statement (a value the database refuses, a missing
 * table: each an error of its own) between good ones, first and last in a share, and a
 * read that fails after its read: each fails as it does alone, and every other read
 * (one with a second statement among them) still gets its row, though PostgreSQL skips
 * whatever follows a failed statement in a pipeline. The next burst on the same
 * connections is untouched. */
static void reads_with_failures(const char *u, int prepared)
{
    for (int pool = 1; pool <= 2; pool++) {
        store_t *s = open_reads(u, prepared, pool, 5000);
        static const int kinds[16] = {RD_ROW,     RD_DIV0, RD_ROW,  RD_ROW, RD_MISSING, RD_TWO,
                                      RD_REFUSE,  RD_ROW,  RD_DIV0, RD_ROW, RD_NONE,    RD_ROW,
                                      RD_MISSING, RD_ROW,  RD_ROW,  RD_DIV0};
        rd_t r[16];
        for (int i = 0; i < 16; i++)
            r[i] = (rd_t){.kind = kinds[i], .key = i};
        run_burst_of(s, r, 16);
        for (int i = 0; i < 16; i++) {
            if (kinds[i] == RD_ROW || kinds[i] == RD_TWO) {
                assert_row(&r[i], i);
            } else if (kinds[i] == RD_NONE) {
                assert_int_equal(r[i].job.status, 0);
                assert_int_equal(r[i].runs, 1);
            } else {
                assert_failed(&r[i], i);
            }
        }
        assert_int_equal(r[1].job.err.code, BS_ERR_BAD_REQUEST); /* division by zero: 22012 */
        assert_string_equal(r[6].job.err.message, "refused after its read");
        assert_burst_as_alone(s, r, 16);
        /* Every read of the next burst gets its row: no connection was left in a failed
         * transaction. */
        rd_t again[16];
        fill_reads(again, 16, 16, RD_ROW);
        run_burst_of(s, again, 16);
        for (int i = 0; i < 16; i++)
            assert_row(&again[i], i);
        store_close(s);
    }
}

static void test_pooled_reads_failures_fail_alone(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, reads_with_failures);
}

/* A read that fails last in its share (nothing after it to send again) leaves its
 * connection as it found it: PostgreSQL skips the pipeline's COMMIT after a failed
 * statement, and the transaction it opened must not outlive the share. The reads that
 * come next on the same pool thread, alone and in a share, get their rows. */
static void read_failure_leaves_clean(const char *u, int prepared)
{
    store_t *s = open_reads(u, prepared, 1, 5000);
    rd_t r[2] = {{.kind = RD_ROW, .key = 0}, {.kind = RD_DIV0, .key = 1}};
    run_burst_of(s, r, 2);
    assert_row(&r[0], 0);
    assert_failed(&r[1], 1);
    assert_int_equal(r[1].job.err.code, BS_ERR_BAD_REQUEST);
    rd_t one = {.kind = RD_ROW, .key = 2};
    rd_t *p = &one;
    run_burst(s, &p, 1);
    assert_row(&one, 0);
    rd_t again[8];
    fill_reads(again, 8, 3, RD_ROW);
    run_burst_of(s, again, 8);
    for (int i = 0; i < 8; i++)
        assert_row(&again[i], i);
    store_close(s);
}

static void test_pooled_read_failure_leaves_the_connection_clean(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, read_failure_leaves_clean);
}

/* A read whose first statement fails and which goes on without it (its next statement
 * reads its row) succeeds, as alone, beside reads that went out in the same pipeline. */
static void reads_recover(const char *u, int prepared)
{
    store_t *s = open_reads(u, prepared, 1, 5000);
    rd_t r[4] = {{.kind = RD_ROW, .key = 0},
                 {.kind = RD_RECOVER, .key = 1},
                 {.kind = RD_ROW, .key = 2},
                 {.kind = RD_RECOVER, .key = 3}};
    run_burst_of(s, r, 4);
    for (int i = 0; i < 4; i++)
        assert_row(&r[i], i);
    assert_burst_as_alone(s, r, 4);
    store_close(s);
}

static void test_pooled_read_goes_on_after_its_failed_statement(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, reads_recover);
}

/* Reads of two statements, the second on the value the first read (it is sent after
 * the pipeline, one round trip each): every one finds the right next row; one whose
 * second statement fails fails alone; one-statement reads beside them are untouched. */
static void reads_two_statements(const char *u, int prepared)
{
    for (int pool = 1; pool <= 2; pool++) {
        store_t *s = open_reads(u, prepared, pool, 5000);
        rd_t r[24];
        for (int i = 0; i < 24; i++)
            r[i] = (rd_t){.kind = i % 3 == 2 ? RD_ROW : RD_TWO, .key = i * 2};
        r[10].kind = RD_TWO_FAIL;
        run_burst_of(s, r, 24);
        for (int i = 0; i < 24; i++) {
            if (i == 10) {
                assert_failed(&r[i], i);
                assert_int_equal(r[i].job.err.code, BS_ERR_BAD_REQUEST);
                assert_int_equal(r[i].n, 7 * r[i].key); /* its first statement's value */
            } else {
                assert_row(&r[i], i);
            }
        }
        assert_burst_as_alone(s, r, 24);
        store_close(s);
    }
}

static void test_pooled_reads_with_second_statements(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, reads_two_statements);
}

/* The transactions a burst used: distinct (backend, transaction start) pairs among its
 * reads' first statements. */
static int transactions_of(const rd_t *r, int n)
{
    int count = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int k = 0; k < i && !seen; k++)
            seen = r[k].pid == r[i].pid && strcmp(r[k].xact, r[i].xact) == 0;
        count += !seen;
    }
    return count;
}

/* Fewer round trips: eight point reads taken together by a pool of one thread share one
 * transaction (the pipeline's BEGIN ... COMMIT), seen from inside as one backend and one
 * transaction_timestamp() (one after another, each read is a transaction of its own;
 * the writer's round_trips counter does not count the pool). Direct (twice: the first
 * burst prepares the statement) and through PgBouncer; checked after both rounds. */
static int pipelined_read_xacts[2][2];

static void reads_share_a_transaction(const char *u, int prepared)
{
    store_t *s = open_reads(u, prepared, 1, 5000);
    rd_t r[8];
    for (int round = 0; round < 2; round++) {
        fill_reads(r, 8, round * 8, RD_ROW);
        run_burst_of(s, r, 8);
        for (int i = 0; i < 8; i++)
            assert_row(&r[i], i);
        pipelined_read_xacts[prepared][round] = transactions_of(r, 8);
        print_message("8 point reads on one pool thread (%s, burst %d): %d transaction(s)\n",
                      prepared ? "direct" : "pgbouncer", round + 1, pipelined_read_xacts[prepared][round]);
    }
    store_close(s);
}

static void test_pooled_reads_share_one_transaction(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    memset(pipelined_read_xacts, 0, sizeof(pipelined_read_xacts));
    direct_and_pgbouncer(u, reads_share_a_transaction);
    for (int p = 0; p < 2; p++)
        for (int round = 0; round < 2; round++)
            if (pipelined_read_xacts[p][round] != 0)
                assert_true(pipelined_read_xacts[p][round] < 8);
    assert_true(pipelined_read_xacts[1][0] > 0);
}

/* Ends every Basalt session on the test's database but this one's, PgBouncer's server
 * connections included (they carry the client's application_name); never the other
 * suites' sessions that make test runs beside it (their psql creating databases). */
static void terminate_all_sessions(const char *u)
{
    store_t *admin = open_pg(u, 0, 1);
    bs_error_t err;
    bs_error_init(&err);
    store_stmt_t *st = store_query(store_reader(admin, 0),
                                   "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE backend_type = 'client backend' AND datname = current_database() "
                                   "AND application_name = 'basalt' AND pid <> pg_backend_pid()",
                                   NULL, 0, &err);
    assert_non_null(st);
    while (store_step(st, &err) == 1)
        ;
    store_done(st);
    store_close(admin);
}

/* The pool's connections ended between two bursts (as a restart would): every read of
 * the next burst gets its row, from new backends (the pipeline is sent again on a new
 * connection). A read that ends its own connection in a burst fails as it does alone
 * (run again once, it ends the new one too), and every other read of the burst still
 * gets its row. */
static void reads_after_lost_connections(const char *u, int prepared)
{
    const char *direct = url("BASALT_TEST_PG_URL");
    for (int pool = 1; pool <= 2; pool++) {
        store_t *s = open_reads(u, prepared, pool, 5000);
        rd_t r[16];
        fill_reads(r, 16, 0, RD_ROW);
        run_burst_of(s, r, 16);
        int64_t before[16];
        for (int i = 0; i < 16; i++) {
            assert_row(&r[i], i);
            before[i] = r[i].pid;
        }
        if (prepared)
            terminate_sessions(direct);
        else
            terminate_all_sessions(direct);
        usleep(100000);
        fill_reads(r, 16, 16, RD_ROW);
        run_burst_of(s, r, 16);
        for (int i = 0; i < 16; i++) {
            assert_row(&r[i], i);
            for (int k = 0; k < 16; k++)
                assert_true(r[i].pid != before[k]); /* a backend that was ended cannot answer */
        }
        /* A read that ends its connection, among others. */
        fill_reads(r, 16, 32, RD_ROW);
        r[3].kind = RD_KILL;
        r[12].kind = RD_KILL;
        run_burst_of(s, r, 16);
        for (int i = 0; i < 16; i++) {
            if (i == 3 || i == 12) {
                assert_int_equal(r[i].job.status, -1);
                assert_int_equal(r[i].job.err.code, BS_ERR_UNAVAILABLE);
            } else {
                assert_row(&r[i], i);
            }
        }
        assert_burst_as_alone(s, r, 16);
        store_close(s);
    }
}

static void test_pooled_reads_after_lost_connections(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, reads_after_lost_connections);
}

/* The number of rows with this id (any connection: a committed row only). */
static int64_t rows_with_id(store_t *s, const char *id)
{
    char got[32];
    bs_error_t err;
    bs_value_t p = bs_val_text(id, strlen(id));
    if (read_one(s, "SELECT COUNT(*) FROM pgt WHERE id = ?1", &p, 1, got, sizeof(got), &err) != 0)
        fail_msg("count %s: %s", id, err.message);
    return strtoll(got, NULL, 10);
}

/* A pooled write (store_run_pooled: primary) taken in one share with point reads, a
 * read that fails right before it: it commits on its own (its row is there, seen from
 * another connection), one that fails (a duplicate) fails alone, and every read gets
 * its row. The pool thread is kept busy by a slow read meanwhile, so that the write and
 * the reads queue up and are taken together. */
static void reads_beside_a_pooled_write(const char *u, int prepared)
{
    for (int pool = 1; pool <= 2; pool++) {
        store_t *s = open_reads(u, prepared, pool, 5000);
        int started = 0;
        rd_t slow = {.kind = RD_ROW, .key = 63, .sleep = 0.3, .started = &started};
        mailbox_t mb;
        assert_int_equal(mailbox_init(&mb), 0);
        slow.job.reply_to = &mb;
        slow.job.msg.deliver = deliver;
        slow.job.run = run_rd;
        store_read(s, 0, &slow.job);
        store_read_flush(s, 0);
        for (int waited = 0; !__atomic_load_n(&started, __ATOMIC_SEQ_CST); waited++) {
            if (waited > 5000)
                fail_msg("the slow read did not start in 5 s");
            usleep(1000);
        }
        rd_t r[12];
        fill_reads(r, 12, 0, RD_ROW);
        r[2].kind = RD_DIV0;
        r[3] = (rd_t){.kind = RD_WRITE, .key = 1};
        r[6] = (rd_t){.kind = RD_WRITE, .key = 1}; /* the same row again: a unique violation */
        r[9] = (rd_t){.kind = RD_WRITE, .key = 2};
        run_burst_of(s, r, 12);
        while (mailbox_drain(&mb) < 1)
            usleep(1000);
        mailbox_destroy(&mb);
        assert_row(&slow, -1);
        for (int i = 0; i < 12; i++) {
            if (i == 2 || i == 6)
                assert_failed(&r[i], i);
            else if (r[i].kind == RD_WRITE)
                assert_int_equal(r[i].job.status, 0);
            else
                assert_row(&r[i], i);
        }
        assert_int_equal(r[6].job.err.code, BS_ERR_VALIDATION);
        assert_int_equal(r[6].job.err.conflict, BS_CONFLICT_UNIQUE);
        assert_int_equal(rows_with_id(s, "w01"), 1);
        assert_int_equal(rows_with_id(s, "w02"), 1);
        /* Reads alone after it: the connections are fine. */
        rd_t again[8];
        fill_reads(again, 8, 20, RD_ROW);
        run_burst_of(s, again, 8);
        for (int i = 0; i < 8; i++)
            assert_row(&again[i], i);
        store_close(s);
    }
}

static void test_pooled_write_beside_point_reads(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, reads_beside_a_pooled_write);
}

/* A read that bounds its statement with store_set_budget (150 ms) bounds only its own:
 * a 0.4 s read without a budget taken in the same share, before it or after it, still
 * gets its row, as both do alone. */
static void reads_beside_a_budget(const char *u, int prepared)
{
    store_t *s = open_reads(u, prepared, 1, 5000);
    for (int order = 0; order < 2; order++) {
        rd_t r[3] = {{.kind = RD_ROW, .key = 0}, {.kind = RD_ROW, .key = 1}, {.kind = RD_ROW, .key = 2}};
        r[order == 0 ? 0 : 2].kind = RD_BUDGET;
        r[1].sleep = 0.4;
        run_burst_of(s, r, 3);
        for (int i = 0; i < 3; i++)
            assert_row(&r[i], i);
        assert_burst_as_alone(s, r, 3);
    }
    store_close(s);
}

static void test_pooled_read_budget_is_its_own(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, reads_beside_a_budget);
}

/* The read deadline (statement_timeout_ms + 0.5 s, here 0.7 s) holds for each read: four
 * reads of 0.3 s taken in one share, 1.2 s in all, each get their row, as alone. */
static void reads_each_within_the_deadline(const char *u, int prepared)
{
    store_t *s = open_reads(u, prepared, 1, 200);
    rd_t r[4];
    fill_reads(r, 4, 0, RD_ROW);
    for (int i = 0; i < 4; i++)
        r[i].sleep = 0.3;
    run_burst_of(s, r, 4);
    for (int i = 0; i < 4; i++)
        assert_row(&r[i], i);
    assert_burst_as_alone(s, r, 4);
    store_close(s);
}

static void test_pooled_reads_each_within_the_deadline(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, reads_each_within_the_deadline);
}

/* A read that passes the read deadline (0.9 s against 0.7 s) fails alone, as it does
 * alone (503, its connection dropped); the reads taken in the same share, before it and
 * after it, get their rows. */
static void read_past_the_deadline(const char *u, int prepared)
{
    store_t *s = open_reads(u, prepared, 1, 200);
    rd_t r[4];
    fill_reads(r, 4, 0, RD_ROW);
    r[1].sleep = 0.9;
    run_burst_of(s, r, 4);
    for (int i = 0; i < 4; i++) {
        if (i == 1) {
            assert_failed(&r[i], i);
            assert_int_equal(r[i].job.err.code, BS_ERR_UNAVAILABLE);
        } else {
            assert_row(&r[i], i);
        }
    }
    assert_burst_as_alone(s, r, 4);
    store_close(s);
}

static void test_pooled_read_past_the_deadline_fails_alone(void **state)
{
    (void)state;
    NEED("BASALT_TEST_PG_URL");
    direct_and_pgbouncer(u, read_past_the_deadline);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unreachable_server),
        cmocka_unit_test(test_values_direct_prepared),
        cmocka_unit_test(test_values_through_pgbouncer),
        cmocka_unit_test(test_reads_as_one_query),
        cmocka_unit_test(test_budget_cancels_and_keeps_the_connection),
        cmocka_unit_test(test_jobs),
        cmocka_unit_test(test_group_commit_isolates_a_broken_job),
        cmocka_unit_test(test_group_commit_pipelines_the_savepoints),
        cmocka_unit_test(test_lone_job_round_trips),
        cmocka_unit_test(test_pipelined_batch_is_two_round_trips),
        cmocka_unit_test(test_pipelined_batch_mixed_outcomes),
        cmocka_unit_test(test_pipelined_second_statement_sees_only_earlier_jobs),
        cmocka_unit_test(test_pipelined_and_other_jobs_alternate),
        cmocka_unit_test(test_pipelined_batch_of_64),
        cmocka_unit_test(test_pipelined_late_failure_costs_few_round_trips),
        cmocka_unit_test(test_pipelined_batch_lost_connection),
        cmocka_unit_test(test_direct_writer_prepares),
        cmocka_unit_test(test_outbox_events_in_one_statement),
        cmocka_unit_test(test_pipelined_batch_outbox_events),
        cmocka_unit_test(test_outbox_offsets_gap_free_across_writers),
        cmocka_unit_test(test_lost_connection_comes_back),
        cmocka_unit_test(test_schema_ddl),
        cmocka_unit_test(test_ddl_deadline),
        cmocka_unit_test(test_pool_keeps_a_lane_for_point_reads),
        cmocka_unit_test(test_pooled_reads_burst_each_gets_its_row),
        cmocka_unit_test(test_pooled_reads_failures_fail_alone),
        cmocka_unit_test(test_pooled_read_failure_leaves_the_connection_clean),
        cmocka_unit_test(test_pooled_read_goes_on_after_its_failed_statement),
        cmocka_unit_test(test_pooled_reads_with_second_statements),
        cmocka_unit_test(test_pooled_reads_share_one_transaction),
        cmocka_unit_test(test_pooled_reads_after_lost_connections),
        cmocka_unit_test(test_pooled_write_beside_point_reads),
        cmocka_unit_test(test_pooled_read_budget_is_its_own),
        cmocka_unit_test(test_pooled_reads_each_within_the_deadline),
        cmocka_unit_test(test_pooled_read_past_the_deadline_fails_alone),
        cmocka_unit_test(test_external_changes_are_noticed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
