/*
 * The replica monitor against a real primary and a streaming replica (make test makes
 * one with scripts/pg-env.sh replica-up): it joins the rotation, a read that must see
 * a commit the replica has not replayed gets no replica while replay is paused (and
 * the lag grows), it returns when replay resumes, and a replica that stops answering
 * leaves the rotation and comes back when it is started again.
 * BASALT_TEST_PG_URL, BASALT_TEST_PG_REPLICA_URL and BASALT_TEST_PG_DIR name them;
 * without them every test is skipped and says so.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "store/postgres/pg_replicas.h"

static const char *env(const char *var)
{
    const char *u = getenv(var);
    return u != NULL && u[0] ? u : NULL;
}

/* One value of one row, as text (owned), from url. */
static char *one(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    char *v = strdup(st == PGRES_TUPLES_OK && PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    PQfinish(c);
    return v;
}

static uint64_t primary_lsn(const char *primary)
{
    char *v = one(primary, "SELECT pg_current_wal_lsn()");
    uint64_t lsn = pg_lsn_parse(v);
    free(v);
    return lsn;
}

static void ctl(const char *what)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "%s/scripts/pg-env.sh %s %s >/dev/null", BASALT_SOURCE_DIR, what,
             env("BASALT_TEST_PG_DIR"));
    assert_int_equal(system(cmd), 0);
}

/* Waits (up to 10 s) until cond(r) holds; returns whether it did. */
static int eventually(pg_replicas_t *r, int (*cond)(pg_replicas_t *, uint64_t), uint64_t arg)
{
    for (int i = 0; i < 200; i++) {
        if (cond(r, arg))
            return 1;
        usleep(50000);
    }
    return 0;
}

static int serves(pg_replicas_t *r, uint64_t lsn)
{
    return pg_replicas_pick(r, lsn) == 0;
}

static int serves_not(pg_replicas_t *r, uint64_t lsn)
{
    return pg_replicas_pick(r, lsn) == -1;
}

static void test_lsn_parse(void **state)
{
    (void)state;
    assert_true(pg_lsn_parse("16/B374D848") == ((uint64_t)0x16 << 32 | 0xB374D848u));
    assert_true(pg_lsn_parse("0/0") == 0);
    assert_true(pg_lsn_parse("junk") == 0);
    assert_true(pg_lsn_parse(NULL) == 0);
    bs_error_t err;
    bs_error_init(&err);
    pg_replicas_config_t bad = {.primary_url = "postgres://x/y", .urls = "postgres://a/b,mysql://c/d"};
    assert_null(pg_replicas_new(&bad, &err));
    assert_non_null(strstr(err.message, "--db-replicas"));
}

static void test_rotation(void **state)
{
    (void)state;
    const char *primary = env("BASALT_TEST_PG_URL"), *replica = env("BASALT_TEST_PG_REPLICA_URL");
    if (primary == NULL || replica == NULL || env("BASALT_TEST_PG_DIR") == NULL) {
        print_message(
            "skipped: BASALT_TEST_PG_URL / _REPLICA_URL / _DIR are not set (make test sets them)\n");
        skip();
    }
    pg_replicas_config_t cfg = {
        .primary_url = primary, .urls = replica, .max_lag_ms = 2000, .connect_timeout_ms = 2000};
    bs_error_t err;
    bs_error_init(&err);
    pg_replicas_t *r = pg_replicas_new(&cfg, &err);
    assert_non_null(r);
    assert_int_equal(pg_replicas_count(r), 1);
    assert_int_equal(pg_replicas_start(r, &err), 0);
    assert_true(eventually(r, serves, 0));
    free(one(primary, "CREATE TABLE IF NOT EXISTS rep_t (n int)"));
    /* A commit the replica has replayed: served by it. */
    free(one(primary, "INSERT INTO rep_t VALUES (1)"));
    uint64_t seen = primary_lsn(primary);
    assert_true(eventually(r, serves, seen));
    /* Replay paused: a read that must see the next commit gets no replica, and the
     * wait gives up after its bound. */
    free(one(replica, "SELECT pg_wal_replay_pause()"));
    usleep(300000);
    free(one(primary, "INSERT INTO rep_t VALUES (2)"));
    uint64_t later = primary_lsn(primary);
    assert_true(eventually(r, serves_not, later));
    assert_int_equal(pg_replicas_wait(r, later, 200), -1);
    /* Past max_lag_ms the replica leaves the rotation altogether. */
    for (int i = 0; i < 60 && pg_replicas_healthy(r, 0); i++) {
        free(one(primary, "INSERT INTO rep_t VALUES (3)"));
        usleep(100000);
    }
    assert_false(pg_replicas_healthy(r, 0));
    assert_true(pg_replicas_lag_ms(r, 0) > 2000);
    /* Replay resumes: back, with the later commit. */
    free(one(replica, "SELECT pg_wal_replay_resume()"));
    assert_true(eventually(r, serves, later));
    assert_true(pg_replicas_lag_ms(r, 0) >= 0 && pg_replicas_lag_ms(r, 0) <= 2000);
    /* Stopped: leaves the rotation; started: comes back by itself. */
    ctl("replica-down");
    assert_true(eventually(r, serves_not, 0));
    ctl("replica-start");
    assert_true(eventually(r, serves, 0));
    pg_replicas_stop(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_lsn_parse), cmocka_unit_test(test_rotation)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
