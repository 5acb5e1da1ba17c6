/*
 * Scheduled verification of PostgreSQL's backups; see pgverify.h for the contract and
 * ADR 0011 ("PostgreSQL: verification from inside Basalt") for the design.
 *
 * The shared state is one `_params` row, id "backupVerify", value
 *   {"lastAttempt": ms, "lastVerified": ms, "failures": n, "lastError": "...", "lastOutput": "..."}
 * written only by the instance that ran the interval's job, read by every instance's
 * tick. The SQL is the same on both backends (settings.c keeps its row the same way).
 */
#include "backup/pgverify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "jobs/jobs.h"

extern char **environ;

#define PARAM_ID "backupVerify"
#define OUTPUT_KEEP 600 /* bytes of the command's output kept for the log and the state */

static struct {
    char *command; /* owned; NULL: not configured */
    int interval_s, timeout_s;
    /* Published state (relaxed atomics): the shared row as last read or written. */
    int64_t last_verified_ms;
    uint64_t failures;
    uint64_t unrecorded; /* failures this instance could not write to the store */
    int64_t queued_slot; /* scheduler thread only: the interval this instance queued */
} pv;

void pgverify_get_stats(pgverify_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (pv.command == NULL)
        return;
    out->enabled = 1;
    out->last_verified_s = (double)__atomic_load_n(&pv.last_verified_ms, __ATOMIC_RELAXED) / 1000.0;
    out->failures =
        __atomic_load_n(&pv.failures, __ATOMIC_RELAXED) + __atomic_load_n(&pv.unrecorded, __ATOMIC_RELAXED);
}

/* ---- the shared state ---- */

typedef struct {
    int64_t last_attempt_ms, last_verified_ms;
    uint64_t failures;
} state_t;

static int64_t json_i64(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v)
           : json_is_real(v)  ? (int64_t)json_real_value(v)
                              : 0;
}

/* Reads the row: 1 found (st filled), 0 none, -1 error. *raw receives the parsed
 * object when not NULL (the caller's). */
static int state_read(store_conn_t *conn, state_t *st, json_t **raw, bs_error_t *err)
{
    memset(st, 0, sizeof(*st));
    if (raw != NULL)
        *raw = NULL;
    bs_value_t id = bs_val_text(PARAM_ID, strlen(PARAM_ID));
    store_stmt_t *q = store_query(conn, "SELECT value FROM _params WHERE id = ?1", &id, 1, err);
    if (q == NULL)
        return -1;
    int rc = store_step(q, err), found = 0;
    if (rc == 1) {
        bs_value_t v = store_col(q, 0);
        json_error_t jerr;
        json_t *o = v.type == BS_VAL_TEXT ? json_loadb(v.s, v.n, 0, &jerr) : NULL;
        if (json_is_object(o)) {
            found = 1;
            st->last_attempt_ms = json_i64(o, "lastAttempt");
            st->last_verified_ms = json_i64(o, "lastVerified");
            int64_t f = json_i64(o, "failures");
            st->failures = f > 0 ? (uint64_t)f : 0;
            if (raw != NULL) {
                *raw = o;
                o = NULL;
            }
        }
        json_decref(o);
    }
    store_done(q);
    return rc < 0 ? -1 : found;
}

static void publish(const state_t *st)
{
    __atomic_store_n(&pv.last_verified_ms, st->last_verified_ms, __ATOMIC_RELAXED);
    __atomic_store_n(&pv.failures, st->failures, __ATOMIC_RELAXED);
}

/* The scheduler's tick (every instance, every two seconds, inside a write job). */
static void tick(store_conn_t *conn)
{
    bs_error_t err;
    bs_error_init(&err);
    state_t st;
    if (state_read(conn, &st, NULL, &err) < 0)
        return;
    publish(&st);
    int64_t now = util_now_ms(), every = (int64_t)pv.interval_s * 1000;
    int64_t slot = now - now % every;
    if (st.last_attempt_ms >= slot || pv.queued_slot == slot)
        return;
    /* Never two at once: a verification that outlasts the interval takes the
     * intervals it spans (as a cron tick missed while busy, they are not replayed). */
    store_stmt_t *q =
        store_query(conn,
                    "SELECT count(*) FROM _jobs WHERE name = 'backup.verify' AND state IN ('ready', "
                    "'running')",
                    NULL, 0, &err);
    if (q == NULL)
        return;
    int rc = store_step(q, &err);
    bs_value_t busy = rc == 1 ? store_col(q, 0) : bs_val_null();
    int idle = rc == 1 && ((busy.type == BS_VAL_INT && busy.i == 0) ||
                           (busy.type == BS_VAL_TEXT && busy.n == 1 && busy.s[0] == '0'));
    store_done(q);
    if (!idle)
        return;
    char key[64];
    snprintf(key, sizeof(key), "backup.verify:%" PRId64, slot);
    /* One attempt: a failed verification is the next interval's to retry, and the
     * lease covers the command's whole time-out. */
    jobs_opts_t o = {.max_attempts = 1, .timeout_ms = (pv.timeout_s + 15) * 1000, .unique_key = key};
    if (jobs_enqueue(conn, "backup.verify", NULL, &o, &err) == 0)
        pv.queued_slot = slot;
    else
        LOGF(LOG_WARN, "backup", "cannot queue the backup verification: %s", err.message);
}

typedef struct {
    store_job_t job;
    int64_t attempt_ms;
    int ok;
    const char *error, *output;
    state_t result;
} record_t;

static int run_record(store_job_t *job, store_conn_t *conn)
{
    record_t *r = (record_t *)job;
    json_t *o = NULL;
    state_t st;
    int found = state_read(conn, &st, &o, &job->err);
    if (found < 0)
        return -1;
    if (o == NULL)
        o = json_object();
    st.last_attempt_ms = r->attempt_ms;
    if (r->ok)
        st.last_verified_ms = util_now_ms();
    else
        st.failures++;
    json_object_set_new(o, "lastAttempt", json_integer(st.last_attempt_ms));
    json_object_set_new(o, "lastVerified", json_integer(st.last_verified_ms));
    json_object_set_new(o, "failures", json_integer((json_int_t)st.failures));
    json_object_set_new(o, "lastError", json_string(r->ok ? "" : r->error));
    json_object_set_new(o, "lastOutput", json_string(r->output));
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (text == NULL) {
        bs_error_set(&job->err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    bs_value_t v[2] = {bs_val_text(PARAM_ID, strlen(PARAM_ID)), bs_val_text(text, strlen(text))};
    int64_t n = found ? store_exec(conn, "UPDATE _params SET value = ?2 WHERE id = ?1", v, 2, &job->err)
                      : store_exec(conn, "INSERT INTO _params (id, value) VALUES (?1, ?2)", v, 2, &job->err);
    free(text);
    if (n < 0)
        return -1;
    r->result = st;
    return 0;
}

/* Keeps valid UTF-8-ish printable text for JSON and the log: control bytes become
 * spaces (the command's output is not trusted to be clean). */
static void clean(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = ' ';
}

/* "backup.verify": runs the command, records the outcome. */
static int verify_handler(jobs_ctx_t *ctx)
{
    int64_t start = util_now_ms();
    int64_t deadline = start + (int64_t)pv.timeout_s * 1000;
    if (deadline > ctx->deadline_ms - 5000)
        deadline = ctx->deadline_ms - 5000;
    char why[OUTPUT_KEEP + 200], tail[OUTPUT_KEEP];
    LOGF(LOG_INFO, "backup", "verifying the latest PostgreSQL backup (--backup-verify-command)");
    int rc = pgverify_run_command(pv.command, deadline, jobs_stopping, why, sizeof(why), tail, sizeof(tail));
    if (rc != 0 && jobs_stopping()) {
        /* Not the backup's fault: nothing is counted, the next interval tries again. */
        LOGF(LOG_WARN, "backup", "backup verification interrupted by the shutdown");
        snprintf(ctx->error, sizeof(ctx->error), "interrupted by the shutdown");
        return JOBS_FAIL;
    }
    clean(why);
    clean(tail);
    double took = (double)(util_now_ms() - start) / 1000.0;
    if (rc == 0)
        LOGF(LOG_INFO, "backup", "backup verification passed in %.1f s: %s", took, tail);
    else
        LOGF(LOG_ERROR, "backup", "backup verification failed after %.1f s: %s", took, why);
    arena_t a;
    arena_init(&a, 256);
    record_t r = {.job = {.run = run_record, .arena = &a},
                  .attempt_ms = start,
                  .ok = rc == 0,
                  .error = why,
                  .output = tail};
    bs_error_init(&r.job.err);
    if (jobs_store_run(ctx->store, &r.job) == 0) {
        publish(&r.result);
    } else {
        LOGF(LOG_ERROR, "backup", "cannot record the backup verification's outcome: %s", r.job.err.message);
        if (rc == 0)
            __atomic_store_n(&pv.last_verified_ms, util_now_ms(), __ATOMIC_RELAXED);
        else
            __atomic_add_fetch(&pv.unrecorded, 1, __ATOMIC_RELAXED);
    }
    arena_free(&a);
    if (rc != 0) {
        snprintf(ctx->error, sizeof(ctx->error), "%.500s", why);
        return JOBS_FAIL;
    }
    return JOBS_OK;
}

int pgverify_init(const pgverify_config_t *cfg)
{
    if (cfg->command == NULL || cfg->command[0] == '\0')
        return 0;
    pv.command = strdup(cfg->command);
    pv.interval_s = cfg->interval_s > 0 ? cfg->interval_s : 3600;
    pv.timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 1800;
    pv.queued_slot = -1;
    if (pv.command == NULL || jobs_register("backup.verify", verify_handler) != 0 || jobs_add_tick(tick) != 0)
        return -1;
    return 0;
}

/* ---- running the command ---- */

/* Appends n bytes to the ring of the last cap-1 bytes of output in keep. */
static void keep_tail(char *keep, size_t cap, size_t *len, const char *p, size_t n)
{
    if (n >= cap - 1) {
        memcpy(keep, p + n - (cap - 1), cap - 1);
        *len = cap - 1;
    } else {
        if (*len + n > cap - 1) {
            size_t drop = *len + n - (cap - 1);
            memmove(keep, keep + drop, *len - drop);
            *len -= drop;
        }
        memcpy(keep + *len, p, n);
        *len += n;
    }
    keep[*len] = '\0';
}

static void last_line(const char *out, char *tail, size_t cap)
{
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' '))
        n--;
    size_t s = n;
    while (s > 0 && out[s - 1] != '\n')
        s--;
    snprintf(tail, cap, "%.*s", (int)(n - s), out + s);
}

/* Waits for pid until deadline; 1 reaped (status set), 0 not yet. */
static int reap(pid_t pid, int *status, int64_t deadline)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return 1;
        if (util_now_ms() >= deadline)
            return 0;
        usleep(20000);
    }
}

int pgverify_run_command(const char *command, int64_t deadline_ms, int (*stop)(void), char *why,
                         size_t why_cap, char *tail, size_t tail_cap)
{
    if (tail_cap)
        tail[0] = '\0';
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        snprintf(why, why_cap, "cannot make a pipe: %s", strerror(errno));
        return -1;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Nothing of the server's (listening sockets, database connections) goes to a
     * command that may start a PostgreSQL of its own. */
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    /* The server blocks its signals in every thread (sigwait); the command gets the
     * defaults, and a group of its own so that a time-out reaches its children. */
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGUSR2);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dfl);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    char *argv[] = {"sh", "-c", (char *)command, NULL};
    pid_t pid;
    int e = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(pfd[1]);
    if (e != 0) {
        close(pfd[0]);
        snprintf(why, why_cap, "cannot run /bin/sh: %s", strerror(e));
        return -1;
    }
    char out[OUTPUT_KEEP];
    size_t outlen = 0;
    out[0] = '\0';
    int timed_out = 0, stopped = 0, eof = 0;
    while (!eof) {
        int64_t left = deadline_ms - util_now_ms();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        if (stop != NULL && stop()) {
            stopped = 1;
            break;
        }
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        int r = poll(&p, 1, left < 250 ? (int)left : 250);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        char buf[4096];
        ssize_t k = read(pfd[0], buf, sizeof(buf));
        if (k > 0)
            keep_tail(out, sizeof(out), &outlen, buf, (size_t)k);
        else if (k == 0 || (errno != EINTR && errno != EAGAIN))
            eof = 1;
    }
    close(pfd[0]);
    int status = 0, reaped = 0;
    if (!timed_out && !stopped) {
        /* Output closed: the command is ending (or left a child holding nothing). */
        reaped = reap(pid, &status, deadline_ms);
        timed_out = !reaped;
    }
    if (!reaped) {
        kill(-pid, SIGTERM);
        if (!reap(pid, &status, util_now_ms() + 10000)) {
            kill(-pid, SIGKILL);
            reap(pid, &status, util_now_ms() + 5000);
        }
    }
    last_line(out, tail, tail_cap);
    if (timed_out) {
        snprintf(why, why_cap, "timed out (--backup-verify-timeout); its last output: %s", out);
        return -1;
    }
    if (stopped) {
        snprintf(why, why_cap, "stopped by the shutdown");
        return -1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status))
        snprintf(why, why_cap, "the command exited with status %d: %s", WEXITSTATUS(status), out);
    else if (WIFSIGNALED(status))
        snprintf(why, why_cap, "the command was killed by signal %d: %s", WTERMSIG(status), out);
    else
        snprintf(why, why_cap, "the command failed: %s", out);
    return -1;
}
