/* pgverify_run_command: exit codes, output, a time-out that reaches the whole process
 * group, a stop request, a command that does not exist. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backup/pgverify.h"
#include "base/util.h"

static char why[1024], tail[256];

static int run(const char *cmd, int64_t ms, int (*stop)(void))
{
    why[0] = tail[0] = '\0';
    return pgverify_run_command(cmd, util_now_ms() + ms, stop, why, sizeof(why), tail, sizeof(tail));
}

static void test_success_and_last_line(void **state)
{
    (void)state;
    assert_int_equal(run("echo one; echo two >&2; echo 'verified: all good'", 10000, NULL), 0);
    assert_string_equal(tail, "verified: all good");
}

static void test_failure_says_why(void **state)
{
    (void)state;
    assert_int_equal(run("echo 'FAIL: no stanza' >&2; exit 3", 10000, NULL), -1);
    assert_non_null(strstr(why, "status 3"));
    assert_non_null(strstr(why, "FAIL: no stanza"));
    assert_int_equal(run("/nonexistent/verify", 10000, NULL), -1);
    assert_non_null(strstr(why, "status 127"));
    assert_int_equal(run("kill -9 $$", 10000, NULL), -1);
    assert_non_null(strstr(why, "signal 9"));
}

static void test_long_output_keeps_the_end(void **state)
{
    (void)state;
    assert_int_equal(
        run("i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done; echo last", 20000, NULL), 0);
    assert_string_equal(tail, "last");
}

/* Gone, or a zombie nobody reaped yet (a container's init may not). */
static int dead(int pid)
{
    if (kill(pid, 0) != 0)
        return 1;
    char p[64], buf[256];
    snprintf(p, sizeof(p), "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (f == NULL)
        return 1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *e = strrchr(buf, ')');
    return e != NULL && e[1] == ' ' && e[2] == 'Z';
}

static void test_timeout_stops_the_group(void **state)
{
    (void)state;
    char pidfile[] = "/tmp/basalt-pgverify-test-XXXXXX";
    int fd = mkstemp(pidfile);
    assert_true(fd >= 0);
    close(fd);
    char cmd[256];
    /* A child in the background, holding no output: the time-out must reach it too. */
    snprintf(cmd, sizeof(cmd), "sleep 60 >/dev/null 2>&1 & echo $! > %s; sleep 60", pidfile);
    int64_t t0 = util_now_ms();
    assert_int_equal(run(cmd, 500, NULL), -1);
    assert_true(util_now_ms() - t0 < 20000);
    assert_non_null(strstr(why, "timed out"));
    FILE *f = fopen(pidfile, "r");
    int child = 0;
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%d", &child), 1);
    fclose(f);
    unlink(pidfile);
    for (int i = 0; i < 100 && !dead(child); i++)
        usleep(20000);
    assert_true(dead(child));
}

static int stop_now(void)
{
    return 1;
}

static void test_stop_request(void **state)
{
    (void)state;
    int64_t t0 = util_now_ms();
    assert_int_equal(run("sleep 60", 60000, stop_now), -1);
    assert_true(util_now_ms() - t0 < 20000);
    assert_non_null(strstr(why, "shutdown"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_success_and_last_line),
        cmocka_unit_test(test_failure_says_why),
        cmocka_unit_test(test_long_output_keeps_the_end),
        cmocka_unit_test(test_timeout_stops_the_group),
        cmocka_unit_test(test_stop_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
