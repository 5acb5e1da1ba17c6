/* Migration documents (core/migration.h) through a real SQLite store, and the upgrade
 * helpers that parse what an old process hands over (app/upgrade.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/upgrade.h"
#include "core/migration.h"

static store_t *store;
static char dir[64], dbpath[96];

static int boot(store_job_t *j, store_conn_t *c)
{
    if (schema_bootstrap(c, &j->err) != 0)
        return -1;
    return migration_bootstrap(c, &j->err);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/basalt-unit-mig-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(dbpath, sizeof(dbpath), "%s/data.db", dir);
    store_config_t cfg = {.path = dbpath, .readers = 1};
    bs_error_t err;
    bs_error_init(&err);
    store = store_open(&cfg, &err);
    arena_t a;
    arena_init(&a, 1024);
    store_job_t b = {.run = boot, .arena = &a};
    int rc = store == NULL || store_write_sync(store, &b) != 0 ? -1 : 0;
    arena_free(&a);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    store_close(store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct {
    store_job_t job;
    const char *doc;
    const char *sql; /* run after applying, when not NULL */
    migration_opts_t o;
} apply_job_t;

static int apply_run(store_job_t *j, store_conn_t *c)
{
    apply_job_t *t = (apply_job_t *)j;
    json_t *doc = json_loads(t->doc, 0, NULL);
    int rc = doc ? migration_apply(c, doc, &t->o, j->arena, &j->err) : -1;
    json_decref(doc);
    if (rc == 0 && t->sql != NULL && store_exec(c, t->sql, NULL, 0, &j->err) < 0)
        rc = -1;
    return rc;
}

static int apply(const char *doc, int up, int allow, const char *sql, char *msg, size_t cap)
{
    arena_t a;
    arena_init(&a, 1024);
    apply_job_t t = {.job = {.run = apply_run, .arena = &a},
                     .doc = doc,
                     .sql = sql,
                     .o = {.up = up, .allow_destructive = allow}};
    int rc = store_write_sync(store, &t.job);
    if (msg)
        snprintf(msg, cap, "%s", t.job.err.message);
    arena_free(&a);
    return rc;
}

static int has_collection(const char *name)
{
    bs_error_t err;
    bs_error_init(&err);
    schema_t *s = schema_load(store_reader(store, 0), &err);
    int found = s != NULL && schema_find(s, name) != NULL;
    schema_free(s);
    store_reader_release(store_reader(store, 0));
    return found;
}

static const char *CREATE = "{\"basalt_migration\":1,\"changes\":[{\"before\":null,\"after\":{\"id\":\"pbc_"
                            "notes0001\",\"name\":\"notes\","
                            "\"fields\":[{\"id\":\"text1\",\"name\":\"body\",\"type\":\"text\"}]}}]}";

static void test_up_down_and_destructive(void **state)
{
    (void)state;
    char msg[512];
    assert_int_equal(apply(CREATE, 1, 0, NULL, msg, sizeof(msg)), 0);
    assert_true(has_collection("notes"));
    /* Applying the same target again changes nothing and succeeds. */
    assert_int_equal(
        apply(CREATE, 1, 0, "INSERT INTO notes (id, body) VALUES ('n1', 'kept')", msg, sizeof(msg)), 0);
    /* Down would drop a collection holding a record: refused, naming it. */
    assert_int_equal(apply(CREATE, 0, 0, NULL, msg, sizeof(msg)), -1);
    assert_non_null(strstr(msg, "dropping collection notes would delete its 1 record"));
    assert_true(has_collection("notes"));
    assert_int_equal(apply(CREATE, 0, 1, NULL, msg, sizeof(msg)), 0);
    assert_false(has_collection("notes"));
}

static void test_validate(void **state)
{
    (void)state;
    const char *bad[] = {
        "[]",
        "{\"changes\":[]}",
        "{\"basalt_migration\":2,\"changes\":[]}",
        "{\"basalt_migration\":1,\"changes\":{}}",
        "{\"basalt_migration\":1,\"changes\":[{\"before\":null,\"after\":null}]}",
        "{\"basalt_migration\":1,\"changes\":[{\"before\":1,\"after\":null}]}",
        "{\"basalt_migration\":1,\"changes\":[{\"after\":{\"name\":\"x\"}}]}",
        "{\"basalt_migration\":1,\"changes\":[{\"before\":null,\"after\":{\"fields\":[]}}]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *d = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        bs_error_t err;
        bs_error_init(&err);
        assert_int_equal(migration_validate(d, &err), -1);
        assert_int_equal(err.code, BS_ERR_BAD_REQUEST);
        json_decref(d);
    }
}

static void test_names_and_files(void **state)
{
    (void)state;
    char *a = migration_new_name("created", "posts"), *b = migration_new_name("created", "a/../b c");
    assert_non_null(strstr(a, "_created_posts.json"));
    assert_non_null(strstr(b, "_created_a____b_c.json"));
    assert_true(strcmp(a, b) < 0); /* later names sort later, even within one millisecond */
    char mdir[128];
    snprintf(mdir, sizeof(mdir), "%s/migrations", dir);
    json_t *doc = migration_doc(a, "created", json_array());
    assert_int_equal(migration_write_file(mdir, a, doc), 0);
    char p[300];
    snprintf(p, sizeof(p), "%s/%s", mdir, a);
    json_t *back = json_load_file(p, 0, NULL);
    assert_true(json_equal(doc, back));
    json_decref(back);
    json_decref(doc);
    free(a);
    free(b);
}

static void test_upgrade_env(void **state)
{
    (void)state;
    int fds[4];
    unsetenv("BASALT_LISTEN_FDS");
    assert_int_equal(upgrade_inherited_fds(fds, 4), 0);
    setenv("BASALT_LISTEN_FDS", "3,4,10", 1);
    assert_int_equal(upgrade_inherited_fds(fds, 4), 3);
    assert_int_equal(fds[2], 10);
    assert_null(getenv("BASALT_LISTEN_FDS")); /* not passed on to a later upgrade by mistake */
    const char *bad[] = {"x", "3,", "2", "3,,4", "3;4", "1,2,3,4,5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv("BASALT_LISTEN_FDS", bad[i], 1);
        assert_int_equal(upgrade_inherited_fds(fds, 4), -1);
    }
    unsetenv("BASALT_LISTEN_FDS");
    setenv("BASALT_UPGRADE_FD", "999", 1); /* not open */
    assert_int_equal(upgrade_control_fd(), -1);
    char pf[128];
    snprintf(pf, sizeof(pf), "%s/basalt.pid", dir);
    assert_int_equal(upgrade_write_pid_file(pf), 0);
    assert_int_equal(upgrade_read_pid_file(pf), getpid());
    upgrade_remove_pid_file(pf);
    assert_int_equal(upgrade_read_pid_file(pf), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_up_down_and_destructive),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_names_and_files),
        cmocka_unit_test(test_upgrade_env),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
