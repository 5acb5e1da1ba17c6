/*
 * The connection and statement layer of the PostgreSQL backend (pg_internal.h):
 * libpq's errors as bs_error_t, connecting and reconnecting (at most once per backoff
 * period), waiting for an answer under the deadline and the time budget, prepared
 * statements, pipelines, and the writer's owed statements (the transaction's BEGIN and
 * time-out, the savepoint between two jobs, the later statement) sent with the next
 * one. How the store uses them: pg_store.c.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "base/log.h"
#include "base/util.h"
#include "metrics/metrics.h"
#include "store/postgres/pg_internal.h"

/* --- errors ------------------------------------------------------------------------ */

int pg_conn_lost(pg_conn_t *c)
{
    return c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK;
}

/* The columns of a unique violation from its detail, "Key (a, lower(b))=(...) already
 * exists.": each term without function calls and casts. */
static void key_columns(const char *detail, bs_error_t *err)
{
    const char *p = detail ? strstr(detail, "Key (") : NULL;
    const char *end = p ? strstr(p, ")=(") : NULL;
    if (p == NULL || end == NULL)
        return;
    p += 5;
    size_t n = 0;
    while (p < end) {
        const char *term_end = p;
        int depth = 0;
        while (term_end < end && (depth > 0 || *term_end != ',')) {
            depth += *term_end == '(' ? 1 : *term_end == ')' ? -1 : 0;
            term_end++;
        }
        /* The innermost identifier: after the last '(' and before ')' or "::". */
        const char *a = p;
        for (const char *q = p; q < term_end; q++)
            if (*q == '(')
                a = q + 1;
        const char *b = a;
        while (b < term_end && *b != ')' && *b != ':' && *b != ' ')
            b++;
        if (*a == '"')
            a++;
        if (b > a && b[-1] == '"')
            b--;
        size_t len = b > a ? (size_t)(b - a) : 0;
        if (len > 0 && n + len + 2 < sizeof(err->columns)) {
            if (n > 0)
                err->columns[n++] = ',';
            memcpy(err->columns + n, a, len);
            n += len;
            err->columns[n] = '\0';
        }
        p = term_end < end ? term_end + 1 : end;
        while (p < end && *p == ' ')
            p++;
    }
}

/* Fills err from a failed result (res may be NULL: then from the connection); sql,
 * when known, is logged with errors that mean a bug (its values are parameters). */
void pg_map_error_sql(pg_conn_t *c, const PGresult *res, const char *sql, bs_error_t *err)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (msg == NULL)
        msg = c->pg != NULL ? PQerrorMessage(c->pg) : "no connection";
    const char *severity = res != NULL ? PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED) : NULL;
    int fatal = severity != NULL && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0);
    if (pg_conn_lost(c) || fatal || state == NULL || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57P", 3) == 0) {
        /* 08: connection exceptions; 57P01-03: the server is shutting down or starting;
         * FATAL or PANIC, whatever the SQLSTATE: the server ended the session (an idle
         * transaction's time-out, a terminated backend), and the connection with it. */
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
        LOGF(LOG_WARN, "store", "PostgreSQL at %s: %s%s%.*s", c->owner->where, state ? state : "no SQLSTATE",
             state ? " " : ": ", (int)strcspn(msg, "\n"), msg);
        return;
    }
    if (strncmp(state, "23", 2) == 0) {
        bs_error_set(err, BS_ERR_VALIDATION, "%s", msg);
        err->conflict = strcmp(state, "23505") == 0   ? BS_CONFLICT_UNIQUE
                        : strcmp(state, "23503") == 0 ? BS_CONFLICT_FOREIGN
                                                      : BS_CONFLICT_OTHER;
        const char *name = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        snprintf(err->constraint, sizeof(err->constraint), "%s", name ? name : "");
        key_columns(PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL), err);
    } else if (pg_stale_plan(res)) {
        /* A prepared statement met a table whose columns changed after it was prepared:
         * another instance's schema change that this connection's job overtook (a
         * reader retried once already, its slot forgotten by run; the writer's
         * transaction is aborted). The statements go before the next job, and the
         * definitions are reloaded. */
        c->defs_gen = DEFS_STALE;
        bs_error_set(err, BS_ERR_UNAVAILABLE,
                     "The collections changed on another instance a moment ago; please retry.");
        LOGF(LOG_INFO, "store", "a prepared statement met collections changed elsewhere: %.*s",
             (int)strcspn(msg, "\n"), msg);
        if (c->owner->cfg.on_schema_change != NULL)
            c->owner->cfg.on_schema_change();
    } else if (strcmp(state, "57014") == 0) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database did not answer within the statement time-out.");
    } else if (strcmp(state, "25006") == 0) {
        /* A write reached a server in recovery: a failover is under way (the new
         * primary's Patroni holds the leader key a moment before promotion ends) or the
         * connection still points at a demoted node. */
        bs_error_set(err, BS_ERR_UNAVAILABLE,
                     "The database is read-only for now (a failover may be under way); please retry.");
        LOGF(LOG_WARN, "store", "PostgreSQL at %s is read-only (in recovery): %.*s", c->owner->where,
             (int)strcspn(msg, "\n"), msg);
    } else if (strcmp(state, "53100") == 0) {
        bs_error_set(err, BS_ERR_STORAGE_FULL, "The database is out of space: %s.", msg);
    } else if (strncmp(state, "53", 2) == 0 || strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0) {
        /* Too many connections, out of memory, serialization failure, deadlock. */
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database is busy (%s); please retry.", msg);
    } else if (strncmp(state, "22", 2) == 0) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The database refused a value: %s.", msg);
    } else if ((c->is_reader || !c->ran_script) &&
               (strcmp(state, "42P01") == 0 || strcmp(state, "42703") == 0)) {
        /* A read or a record write built from this instance's collections met a table
         * or column that is gone: another instance changed them and this request
         * overtook its notification (ADR 0013). The writer's transaction is aborted,
         * nothing of it stays; the next request reloads them. A script's (this
         * instance's own DDL) is an error of the script, below. */
        bs_error_set(err, BS_ERR_UNAVAILABLE,
                     "The collections changed on another instance a moment ago; please retry.");
        LOGF(LOG_INFO, "store", "a read met collections changed elsewhere (%s): %.*s", state,
             (int)strcspn(msg, "\n"), msg);
        if (c->owner->cfg.on_schema_change != NULL)
            c->owner->cfg.on_schema_change();
    } else {
        bs_error_set(err, BS_ERR_INTERNAL, NULL);
        LOGF(LOG_ERROR, "store", "postgres error %s: %s%s%s", state, msg, sql ? " in: " : "", sql ? sql : "");
    }
}

void pg_map_error(pg_conn_t *c, const PGresult *res, bs_error_t *err)
{
    pg_map_error_sql(c, res, NULL, err);
}

/* --- connections ------------------------------------------------------------------- */

void pg_forget_prepared(pg_conn_t *c)
{
    for (int i = 0; i < PREPARED_SLOTS; i++) {
        free(c->prepared[i].sql);
        c->prepared[i].sql = NULL;
    }
}

/* Server notices ("table does not exist, skipping") go to the debug log, not stderr. */
static void on_notice(void *arg, const char *message)
{
    (void)arg;
    LOGF(LOG_DEBUG, "store", "postgres notice: %.*s", (int)strcspn(message, "\n"), message);
}

int pg_connect_conn(pg_conn_t *c, bs_error_t *err)
{
    pg_store_t *s = c->owner;
    const char *url = c->url != NULL ? c->url : c == &s->listener ? s->listen_url : s->url;
    if (c == &s->writer && s->writer_url != NULL)
        url = s->writer_url;
    char timeout[16];
    int secs = (s->cfg.connect_timeout_ms + 999) / 1000;
    snprintf(timeout, sizeof(timeout), "%d", secs < 2 ? 2 : secs); /* libpq's minimum is 2 s */
    /* UTF-8 in the start-up packet: no round trip, and PgBouncer tracks it. */
    const char *keys[] = {"dbname", "connect_timeout", "application_name", "client_encoding", NULL};
    const char *vals[] = {url, timeout, "basalt", "UTF8", NULL};
    if (c->pg != NULL)
        PQfinish(c->pg);
    pg_forget_prepared(c);
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (c->pg == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    if (PQstatus(c->pg) != CONNECTION_OK) {
        char msg[200];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c->pg));
        msg[strcspn(msg, "\n")] = '\0';
        bs_error_set(err, BS_ERR_UNAVAILABLE, "Cannot connect to PostgreSQL at %s: %s.", s->where, msg);
        return -1;
    }
    PQsetNoticeProcessor(c->pg, on_notice, NULL);
    return 0;
}

/* Makes sure c has a working connection: reconnects a broken one, at most once per
 * backoff period. Returns 0 or -1 (err filled: 503). */
int pg_ensure_conn(pg_conn_t *c, bs_error_t *err)
{
    if (!pg_conn_lost(c))
        return 0;
    uint64_t now = util_mono_ns();
    if (now < c->retry_at_ns) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
        return -1;
    }
    if (pg_connect_conn(c, err) == 0) {
        c->backoff_ns = 0;
        if (c->connected_once)
            LOGF(LOG_INFO, "store", "reconnected to PostgreSQL at %s", c->owner->where);
        c->connected_once = 1;
        return 0;
    }
    c->backoff_ns = c->backoff_ns == 0 ? 100000000u : c->backoff_ns * 2;
    if (c->backoff_ns > 2000000000u)
        c->backoff_ns = 2000000000u;
    c->retry_at_ns = now + c->backoff_ns;
    return -1;
}

void pg_close_conn(pg_conn_t *c)
{
    pg_later_discard(c);
    pg_forget_prepared(c);
    if (c->pg != NULL)
        PQfinish(c->pg);
    c->pg = NULL;
}

int pg_result_failed(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY;
}

/* The deadline of c's next statement: a script's on the writer, else a write's. */
static int limit_ms(const pg_conn_t *c)
{
    return c->in_script ? c->owner->cfg.ddl_timeout_ms : c->owner->cfg.statement_timeout_ms;
}

/* Waits for the whole answer to the statement just sent on c, until the deadline
 * (statement_timeout_ms, plus a little so that the server's own time-out of a write
 * transaction speaks first). Returns the last result (owned; the first failed one if
 * any failed), or NULL with err filled: on a lost connection, or past the deadline,
 * when the statement is cancelled and the connection dropped, so that a server that
 * stopped answering (or a PgBouncer waiting for one) gives a fast 503, never a hang. */
static uint64_t answer_deadline(pg_conn_t *c)
{
    int limit = limit_ms(c);
    return limit > 0 ? util_mono_ns() + (uint64_t)(limit + 500) * 1000000u : 0;
}

/* Waits until PQgetResult will not block, or past deadline (0: none) cancels the
 * statement and drops the connection (c->pg NULL, err filled, -1). */
static int await_ready(pg_conn_t *c, uint64_t deadline, bs_error_t *err)
{
    int limit = limit_ms(c);
    c->timed_out = 0;
    while (PQisBusy(c->pg)) {
        int wait = -1;
        if (c->budget_ns != 0 && !c->budget_cancelled) {
            uint64_t now = util_mono_ns();
            if (now >= c->budget_ns) {
                /* Past the budget: the server stops the statement, whose error then
                 * comes as its answer (the deadline still holds if none comes). */
                char why[128];
                PGcancel *cn = PQgetCancel(c->pg);
                if (cn != NULL) {
                    PQcancel(cn, why, sizeof(why));
                    PQfreeCancel(cn);
                }
                c->budget_cancelled = 1;
                continue;
            }
            wait = (int)((c->budget_ns - now) / 1000000u) + 1;
        }
        if (deadline != 0) {
            uint64_t now = util_mono_ns();
            if (now >= deadline) {
                char why[128];
                PGcancel *cn = PQgetCancel(c->pg);
                if (cn != NULL) {
                    PQcancel(cn, why, sizeof(why));
                    PQfreeCancel(cn);
                }
                PQfinish(c->pg);
                c->pg = NULL;
                pg_forget_prepared(c);
                c->timed_out = 1;
                LOGF(LOG_WARN, "store", "PostgreSQL at %s did not answer within %d ms", c->owner->where,
                     limit);
                bs_error_set(err, BS_ERR_UNAVAILABLE,
                             "The database did not answer within %d ms; please retry.", limit);
                return -1;
            }
            int left = (int)((deadline - now) / 1000000u) + 1;
            if (wait < 0 || left < wait)
                wait = left;
        }
        struct pollfd p = {.fd = PQsocket(c->pg), .events = POLLIN};
        int rc = poll(&p, 1, wait);
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0 && !PQconsumeInput(c->pg))
            break;
    }
    return 0;
}

/* Counts a round trip of the writer's connection (store_stats_t.round_trips). */
static void count_round_trip(pg_conn_t *c)
{
    if (c == &c->owner->writer) {
        __atomic_add_fetch(&c->owner->writer_round_trips, 1, __ATOMIC_RELAXED);
        metrics_add(&metrics_g.store_round_trips, 1);
    }
}

static PGresult *await_result(pg_conn_t *c, bs_error_t *err)
{
    count_round_trip(c);
    if (await_ready(c, answer_deadline(c), err) != 0)
        return NULL;
    PGresult *keep = NULL, *r;
    while ((r = PQgetResult(c->pg)) != NULL) {
        /* The first failure wins; otherwise the last statement's result. */
        if (keep != NULL && (pg_result_failed(keep) || PQresultStatus(r) == PGRES_EMPTY_QUERY)) {
            PQclear(r);
            continue;
        }
        PQclear(keep);
        keep = r;
    }
    if (keep == NULL) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
        return NULL;
    }
    return keep;
}

/* PQexec with the deadline: sends sql (no parameters; may hold several statements)
 * and returns the last result (or the first failed one), or NULL with err filled. */
PGresult *pg_exec_simple(pg_conn_t *c, const char *sql, bs_error_t *err)
{
    if (!PQsendQuery(c->pg, sql)) {
        pg_map_error(c, NULL, err);
        return NULL;
    }
    return await_result(c, err);
}

/* --- statements -------------------------------------------------------------------- */

/* PostgreSQL takes ?N as an operator character: the SQLite dialect's placeholders
 * are rewritten to $N, so SQL written for store.h runs on both while the callers
 * move to the dialect table. Quoted strings and identifiers are left alone. */
char *pg_sql(const char *sql)
{
    size_t n = strlen(sql);
    char *out = malloc(n + 1);
    if (out == NULL)
        return NULL;
    char quote = 0;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = sql[i];
        if (quote) {
            if (ch == quote)
                quote = 0;
        } else if (ch == '\'' || ch == '"') {
            quote = ch;
        } else if (ch == '?' && i + 1 < n && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
            ch = '$';
        }
        out[j++] = ch;
    }
    out[j] = '\0';
    return out;
}

uint64_t pg_hash_sql(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The name under which sql is prepared on c, preparing it first if needed; NULL on
 * failure (err filled). */
const char *pg_prepared_name(pg_conn_t *c, const char *sql, bs_error_t *err)
{
    prepared_t *p = &c->prepared[pg_hash_sql(sql) % PREPARED_SLOTS];
    if (p->sql != NULL && strcmp(p->sql, sql) == 0)
        return p->name;
    char name[16];
    snprintf(name, sizeof(name), "b%u", c->next_name++);
    PGresult *r = PQsendPrepare(c->pg, name, sql, 0, NULL) ? await_result(c, err) : NULL;
    if (r == NULL && err->code == BS_ERR_OK)
        pg_map_error(c, NULL, err);
    if (r == NULL)
        return NULL;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        pg_map_error(c, r, err);
        PQclear(r);
        return NULL;
    }
    PQclear(r);
    if (p->sql != NULL) {
        /* The slot is taken by another text: free the old statement on the server. */
        char dealloc[48];
        snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", p->name);
        bs_error_t ignored;
        bs_error_init(&ignored);
        PQclear(pg_exec_simple(c, dealloc, &ignored));
        free(p->sql);
    }
    p->sql = strdup(sql);
    if (p->sql == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    memcpy(p->name, name, sizeof(name));
    return p->name;
}

/* PostgreSQL refuses to run a prepared statement whose result columns changed since it
 * was prepared ("cached plan must not change result type", SQLSTATE 0A000). */
int pg_stale_plan(const PGresult *res)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    return state != NULL && strcmp(state, "0A000") == 0 && msg != NULL && strstr(msg, "cached plan") != NULL;
}

/* The next result of a pipeline (the trailing NULL of its statement consumed), or
 * NULL with err filled. */
static PGresult *pipeline_result(pg_conn_t *c, uint64_t deadline, int is_sync, bs_error_t *err)
{
    if (await_ready(c, deadline, err) != 0)
        return NULL;
    PGresult *r = PQgetResult(c->pg);
    if (r == NULL) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
        return NULL;
    }
    if (!is_sync) {
        /* Each statement's results end with NULL, which PQgetResult gives without waiting. */
        PGresult *extra;
        while ((extra = PQgetResult(c->pg)) != NULL)
            PQclear(extra);
    }
    return r;
}

/* Sends qs[0..n) in one pipeline with one Sync (one round trip) and fills res[]
 * (owned; a statement after a failed one gets PGRES_PIPELINE_ABORTED). Each result
 * must come within the deadline of one statement from the one before. Only ever
 * inside a transaction: PgBouncer's transaction mode then keeps the one server
 * connection for the client, to the Sync at the earliest (a read pipeline ends with
 * its COMMIT before the Sync). Returns 0, or -1 with err and the connection dropped
 * (a pipeline left half read cannot be resumed): every result is freed, or with got
 * set, the first *got are kept (the ones that came). */
int pg_pipeline(pg_conn_t *c, const pipe_q_t *qs, int n, PGresult **res, bs_error_t *err)
{
    return pg_pipeline_got(c, qs, n, res, err, NULL);
}

int pg_pipeline_got(pg_conn_t *c, const pipe_q_t *qs, int n, PGresult **res, bs_error_t *err, int *got)
{
    int came = 0;
    PGresult *sync = NULL;
    for (int q = 0; q < n; q++)
        res[q] = NULL;
    if (!PQenterPipelineMode(c->pg)) {
        pg_map_error(c, NULL, err);
        goto broken;
    }
    int sent = 1;
    for (int q = 0; q < n && sent; q++)
        sent = qs[q].name != NULL
                   ? PQsendQueryPrepared(c->pg, qs[q].name, qs[q].nparams, qs[q].vals, NULL, NULL, 0)
                   : PQsendQueryParams(c->pg, qs[q].text, qs[q].nparams, NULL, qs[q].vals, NULL, NULL, 0);
    if (!sent || !PQpipelineSync(c->pg)) {
        pg_map_error(c, NULL, err);
        goto broken;
    }
    count_round_trip(c);
    for (int q = 0; q < n; q++, came++)
        if ((res[q] = pipeline_result(c, answer_deadline(c), 0, err)) == NULL)
            goto broken;
    if ((sync = pipeline_result(c, answer_deadline(c), 1, err)) == NULL)
        goto broken;
    if (PQresultStatus(sync) != PGRES_PIPELINE_SYNC || !PQexitPipelineMode(c->pg)) {
        /* Where the Sync's answer should be, libpq gives the connection's loss when it
         * closed after the statements' answers and before ReadyForQuery (a server or
         * PgBouncer gone between two messages): that is a lost database (503), as
         * anywhere else. Only a connection still up that answers out of order is a
         * fault of ours. */
        if (pg_conn_lost(c) || pg_result_failed(sync))
            pg_map_error(c, sync, err);
        else
            bs_error_set(err, BS_ERR_INTERNAL, "The database connection's pipeline went out of step.");
        goto broken;
    }
    PQclear(sync);
    return 0;
broken:
    if (got != NULL)
        *got = came;
    for (int q = got != NULL ? came : 0; q < n; q++) {
        PQclear(res[q]);
        res[q] = NULL;
    }
    PQclear(sync);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
        pg_forget_prepared(c);
    }
    if (err->code == BS_ERR_OK)
        bs_error_set(err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
    return -1;
}

void pg_later_discard(pg_conn_t *c)
{
    free(c->later.text);
    free(c->later.vals);
    free(c->later.buf);
    memset(&c->later, 0, sizeof(c->later));
}

/* The pending later statement as the first of a pipeline (qs[0]); 1 if there is one. */
static int later_q(pg_conn_t *c, pipe_q_t *q)
{
    if (c->later.text == NULL)
        return 0;
    *q = (pipe_q_t){.text = c->later.text, .nparams = c->later.nparams, .vals = c->later.vals};
    return 1;
}

/* Hands the later statement's result to its callback (and forgets the statement).
 * Returns 0, or -1 when it failed or its callback refused it (the job's err says
 * why): the transaction cannot commit. */
static int later_finish(pg_conn_t *c, PGresult *r)
{
    store_later_fn done = c->later.done;
    void *arg = c->later.arg;
    bs_error_t *err = c->later.err;
    pg_later_discard(c);
    if (r == NULL || pg_result_failed(r)) {
        if (err->code == BS_ERR_OK)
            pg_map_error(c, r, err);
        return -1;
    }
    pg_stmt_t st = {.base.ops = &pg_ops,
                    .conn = c,
                    .res = r,
                    .row = -1,
                    .nrows = PQntuples(r),
                    .ncols = PQnfields(r),
                    .started_ns = util_mono_ns()};
    return done(arg, &st.base, err);
}

/* The writer's owed statements with the next one, in one round trip: the
 * transaction's BEGIN and time-out when nothing of it was sent yet (ADR 0018), the
 * pending later statement (the previous job's outbox row) and "RELEASE SAVEPOINT
 * job; SAVEPOINT job" between two jobs (ADR 0017). Returns the statement's result, or
 * NULL with err; when a statement ahead of it was refused, savepoint_failed is set
 * (the transaction is aborted and the batch fails). A pipeline that opened the
 * transaction and carried nothing else of it, lost with its connection, leaves
 * begin_due set: nothing of the transaction reached a server, and run() may send
 * it again on a new connection. */
static PGresult *send_savepoint(pg_conn_t *c, const char *text, const char *name, int nparams,
                                const char *const *vals, bs_error_t *err)
{
    pipe_q_t qs[8];
    PGresult *res[8];
    int n = 0, began = c->begin_due;
    if (began) {
        qs[n++] = (pipe_q_t){.text = "BEGIN"};
        qs[n++] = (pipe_q_t){.text = c->begin_timeout};
        if (c->begin_savepoint)
            qs[n++] = (pipe_q_t){.text = "SAVEPOINT job"};
    }
    int later_at = c->later.text != NULL ? n : -1;
    n += later_q(c, &qs[n]);
    int alone = later_at < 0 && !c->savepoint_due; /* the BEGIN and this statement only */
    if (c->savepoint_due) {
        qs[n++] = (pipe_q_t){.text = "RELEASE SAVEPOINT job"};
        qs[n++] = (pipe_q_t){.text = "SAVEPOINT job"};
    }
    int ahead = n;
    qs[n++] = (pipe_q_t){.text = text, .name = name, .nparams = nparams, .vals = vals};
    c->savepoint_due = 0;
    c->begin_due = 0;
    if (pg_pipeline(c, qs, n, res, err) != 0) {
        pg_later_discard(c);
        if (began && alone && pg_conn_lost(c) && !c->timed_out)
            c->begin_due = 1; /* run() may begin again once on a new connection */
        else
            c->savepoint_failed = 1;
        return NULL;
    }
    int failed = 0;
    for (int q = 0; q < ahead; q++) {
        if (q == later_at) {
            if (later_finish(c, res[q]) != 0)
                failed = 1;
        } else if (!failed && pg_result_failed(res[q])) {
            failed = 1;
            pg_map_error(c, res[q], err);
        }
        PQclear(res[q]);
    }
    if (failed) {
        c->savepoint_failed = 1;
        if (err->code == BS_ERR_OK)
            bs_error_set(err, BS_ERR_UNAVAILABLE,
                         "The database rolled back the transaction this write was part of; please retry.");
        PQclear(res[ahead]);
        return NULL;
    }
    return res[ahead];
}

/* Runs sql (no parameters; may hold several statements) that returns no rows: 0, or
 * -1 with err. */
int pg_simple(pg_conn_t *c, const char *sql, bs_error_t *err)
{
    PGresult *r = pg_exec_simple(c, sql, err);
    if (r == NULL)
        return -1;
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        pg_map_error(c, r, err);
    PQclear(r);
    return ok ? 0 : -1;
}

/* Sends the writer's owed BEGIN on its own (before a script or a lone later
 * statement, which cannot carry it). Returns 0 or -1 (err). */
int pg_begin_now(pg_conn_t *c, bs_error_t *err)
{
    char sql[112];
    snprintf(sql, sizeof(sql), "BEGIN; %s%s", c->begin_timeout, c->begin_savepoint ? "; SAVEPOINT job" : "");
    c->begin_due = 0;
    return pg_simple(c, sql, err);
}

/* Sends the pending later statement on its own (one round trip) and hands its result
 * over: before a COMMIT, whose outcome must not precede the statement's check, and
 * before a script. Returns 0, or -1 (the transaction must not commit). */
int pg_later_flush(pg_conn_t *c, bs_error_t *err)
{
    if (c->later.text == NULL)
        return 0;
    pipe_q_t q;
    PGresult *r;
    bs_error_t *jerr = c->later.err;
    if (c->begin_due && pg_begin_now(c, err) != 0) {
        pg_later_discard(c);
        return -1;
    }
    if (!later_q(c, &q))
        return 0;
    if (pg_pipeline(c, &q, 1, &r, err) != 0) {
        pg_later_discard(c);
        return -1;
    }
    int rc = later_finish(c, r);
    PQclear(r);
    if (rc != 0 && err != jerr && err->code == BS_ERR_OK)
        bs_error_set(err, BS_ERR_UNAVAILABLE,
                     "The database rolled back the transaction this write was part of; please retry.");
    return rc;
}

/* The values as the text libpq sends: *vals (owned) points into *buf (owned).
 * Returns 0, or -1 with err (both freed). */
int pg_make_params(const bs_value_t *params, size_t nparams, const char ***valsp, char **bufp,
                   bs_error_t *err)
{
    size_t space = 0;
    for (size_t i = 0; i < nparams; i++)
        space += params[i].type == BS_VAL_TEXT ? params[i].n + 1 : 32;
    const char **vals = calloc(nparams + 1, sizeof(*vals));
    char *buf = malloc(space + 1);
    *valsp = NULL;
    *bufp = NULL;
    if (vals == NULL || buf == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        goto fail;
    }
    char *w = buf;
    for (size_t i = 0; i < nparams; i++) {
        const bs_value_t *v = &params[i];
        switch (v->type) {
        case BS_VAL_INT:
            vals[i] = w;
            w += snprintf(w, 32, "%lld", (long long)v->i) + 1;
            break;
        case BS_VAL_DOUBLE:
            vals[i] = w;
            w += snprintf(w, 32, "%.17g", v->d) + 1;
            break;
        case BS_VAL_TEXT:
            if (v->n > 0 && memchr(v->s, '\0', v->n) != NULL) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "Text values cannot contain NUL characters.");
                goto fail;
            }
            vals[i] = w;
            if (v->n > 0)
                memcpy(w, v->s, v->n);
            w[v->n] = '\0';
            w += v->n + 1;
            break;
        default:
            vals[i] = NULL;
        }
    }
    *valsp = vals;
    *bufp = buf;
    return 0;
fail:
    free(vals);
    free(buf);
    return -1;
}

/*
 * A pool reader's statement as one simple-protocol Query, its parameters written in
 * as quoted literals, when no prepared statement can be used (PgBouncer's transaction
 * mode). An unnamed extended-protocol statement is five messages (Parse, Bind,
 * Describe, Execute, Sync) that PostgreSQL and PgBouncer each handle one by one; one
 * Query message costs PostgreSQL about a tenth less CPU for the same primary-key
 * read (docs/performance.md, "The cache-off view on PostgreSQL"), and the plan is the
 * same: an unnamed statement is planned for its values every time anyway.
 *
 * The meaning does not change: pg_make_params sends every value as text of no declared
 * type, which PostgreSQL resolves exactly as it resolves a quoted literal (both are
 * "unknown" until their context types them), and NULL stays NULL. Values are escaped
 * by libpq for the connection's encoding (UTF8, set at connect) and its
 * standard_conforming_strings. Anything this scanner is not sure of gives NULL and the
 * statement goes out as before: a comment, a backslash or dollar quote in the text,
 * a second statement, a placeholder with no value, a value libpq will not escape
 * (invalid UTF-8: the server's own error then speaks). Returns the text (owned).
 */
static int ident_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '$' || (unsigned char)ch >= 0x80;
}

static char *inline_params(pg_conn_t *c, const char *sql, const char *const *vals, size_t nparams)
{
    size_t n = strlen(sql), space = n + 1;
    for (size_t i = 0; i < nparams; i++)
        space += vals[i] != NULL ? 2 * strlen(vals[i]) + 2 : 4;
    /* A value may be written more than once ($1 twice): counted as we go. */
    char *out = malloc(space);
    if (out == NULL)
        return NULL;
    size_t j = 0;
    char quote = 0;
    int ended = 0; /* a ';' outside quotes was seen: only blanks may follow */
    for (size_t i = 0; i < n; i++) {
        char ch = sql[i];
        if (quote) {
            if (ch == '\\')
                goto refuse; /* E'...' or standard_conforming_strings off: not guessed */
            if (ch == quote)
                quote = 0;
        } else if (ended && ch != ' ' && ch != '\n' && ch != '\t' && ch != '\r') {
            goto refuse; /* several statements: the extended protocol refuses them */
        } else if (ch == '\'' || ch == '"') {
            quote = ch;
        } else if (ch == ';') {
            ended = 1;
        } else if ((ch == '-' && sql[i + 1] == '-') || (ch == '/' && sql[i + 1] == '*')) {
            goto refuse;
        } else if (ch == '$') {
            size_t k = i + 1, num = 0;
            while (k < n && sql[k] >= '0' && sql[k] <= '9' && num <= nparams)
                num = num * 10 + (size_t)(sql[k++] - '0');
            if (k == i + 1 || num == 0 || num > nparams)
                goto refuse; /* a dollar quote, or no such value */
            if ((i > 0 && ident_char(sql[i - 1])) || (k < n && ident_char(sql[k])))
                goto refuse; /* part of a word (a$1 is a name), not a placeholder */
            const char *v = vals[num - 1];
            size_t need = v != NULL ? 2 * strlen(v) + 2 : 4;
            if (j + need + (n - k) + 1 > space) {
                space = j + need + (n - k) + 1 + space / 2;
                char *grown = realloc(out, space);
                if (grown == NULL)
                    goto refuse;
                out = grown;
            }
            if (v == NULL) {
                memcpy(out + j, "NULL", 4);
                j += 4;
            } else {
                int bad = 0;
                out[j++] = '\'';
                j += PQescapeStringConn(c->pg, out + j, v, strlen(v), &bad);
                if (bad)
                    goto refuse;
                out[j++] = '\'';
            }
            i = k - 1;
            continue;
        }
        if (j + 1 >= space)
            goto refuse; /* cannot happen: counted above */
        out[j++] = ch;
    }
    if (quote)
        goto refuse;
    out[j] = '\0';
    return out;
refuse:
    free(out);
    return NULL;
}

/* Sends one statement of run() and waits for its result: by name when c prepares,
 * with what the writer owes (owed: send_savepoint), else alone (a pool reader as one
 * Query where it can, inline_params). NULL with err on failure. */
PGresult *pg_send_now(pg_conn_t *c, const char *text, int nparams, const char *const *vals, int owed,
                      bs_error_t *err)
{
    PGresult *res = NULL;
    if (c->prepare) {
        const char *name = pg_prepared_name(c, text, err);
        if (name != NULL && owed)
            res = send_savepoint(c, text, name, nparams, vals, err);
        else if (name != NULL && PQsendQueryPrepared(c->pg, name, nparams, vals, NULL, NULL, 0))
            res = await_result(c, err);
    } else if (owed) {
        res = send_savepoint(c, text, NULL, nparams, vals, err);
    } else {
        char *q = c->is_reader ? inline_params(c, text, vals, (size_t)nparams) : NULL;
        if (q != NULL ? PQsendQuery(c->pg, q)
                      : PQsendQueryParams(c->pg, text, nparams, NULL, vals, NULL, NULL, 0))
            res = await_result(c, err);
        free(q);
    }
    return res;
}
