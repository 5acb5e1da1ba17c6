/*
 * The PostgreSQL backend of store.h (ADR 0004), over libpq.
 *
 * Connections: one per reader index (one per worker) and one for the writer thread.
 * Each is used by one thread at a time, as store.h requires, and is reconnected by
 * that thread when it breaks: a query on a broken connection tries to reconnect at
 * most once per backoff period (100 ms doubling to 2 s) and otherwise fails at once
 * with 503, so a lost server gives fast errors, never a hang, and service returns by
 * itself when the server does.
 *
 * Statements: a query runs to completion when store_query is called and its rows are
 * read from the result (PQsendQueryParams; reads are short and indexed, results
 * small), waited for with a deadline (await_result, pg_conn.c). With
 * `prepared_statements` set, each connection prepares each distinct SQL text once
 * under a name of its own and runs it with PQsendQueryPrepared; through PgBouncer's
 * transaction mode (1.18 has no protocol-level prepared statements) it must be off,
 * and unnamed statements are used: no session state is ever left on a connection.
 *
 * Writes: the writer thread runs the jobs that queued while its last transaction ran
 * as one group commit (BEGIN, a statement time-out local to it, each job in a
 * savepoint, COMMIT; a lone job needs no savepoint) and answers them only after COMMIT
 * returned, so an acknowledged write is durable on the primary as its
 * synchronous_commit setting defines (on by default). A job that fails is rolled back
 * alone (ROLLBACK TO its savepoint). One writer thread (ADR 0014): the jobs' committed
 * hooks (schema snapshot, cache invalidation) run in commit order on it. Consecutive
 * pipelinable jobs (creates) run as coroutines up to their first statement, and those
 * statements go out in one pipeline; what a later failure or a further statement
 * proves premature is undone and sent again (ADR 0021, pg_pipeline.c).
 *
 * External changes: every write transaction sends NOTIFY basalt_changes with this
 * store's instance id (delivered only if it commits, in commit order); a thread of
 * its own listens on a direct connection (LISTEN needs a session, which PgBouncer's
 * transaction mode does not keep), waiting on its socket, and calls
 * on_external_change for the ids of others, on_schema_change for basalt_schema.
 *
 * Reads (ADR 0004): a pool of --db-pool-size threads, each owning one connection of
 * the same kind (deadline, reconnect with backoff, one safe retry), takes read jobs
 * from one queue. A worker hands over the reads of one loop turn together (one lock,
 * one wake-up); a thread takes a share of what waits (several jobs per wake-up under
 * load; their first statements in one pipeline, ADR 0021), runs them and posts each
 * back to its worker's mailbox. A worker's loop never
 * waits on the network: a read that waits on a lock holds one pool thread, not the
 * worker's other connections. The per-reader connections (store_reader) stay for
 * start-up and the command line, never for a worker's loop.
 *
 * Files (pg_internal.h): this one holds run() and the store_ops_t, the writer, the
 * read pool and the store's open and close; pg_conn.c the connection and statement
 * layer (errors, connections, statements, pipelines); pg_pipeline.c the pipelined
 * jobs; pg_replicas.c the replicas' monitor.
 */
#include <assert.h>
#include <pthread.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "base/coro.h"
#include "base/log.h"
#include "base/util.h"
#include "metrics/metrics.h"
#include "store/postgres/pg_internal.h"
#include "store/postgres/pg_replicas.h"
#include "store/store_backend.h"

/* Type OIDs from PostgreSQL's catalog (pg_type.dat); libpq does not export them. */
enum {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_NUMERIC = 1700
};

/* --- statements: run and the store_ops_t ------------------------------------------- */

/* Whether a statement that succeeded may have changed data: everything but a plain
 * SELECT and an INSERT, UPDATE or DELETE that touched no row (the job runner's claim
 * when nothing is due). Conservative: a text that does not start with SELECT (a WITH
 * may hold an UPDATE) counts as a change. */
static int changes_data(const char *sql, const PGresult *res)
{
    if (PQresultStatus(res) == PGRES_TUPLES_OK && strncmp(sql, "SELECT", 6) == 0)
        return 0;
    const char *cmd = PQcmdStatus((PGresult *)res), *n = PQcmdTuples((PGresult *)res);
    int dml =
        strncmp(cmd, "INSERT", 6) == 0 || strncmp(cmd, "UPDATE", 6) == 0 || strncmp(cmd, "DELETE", 6) == 0;
    return !(dml && strcmp(n, "0") == 0);
}

/* Runs sql with params as text values; returns the result (owned) or NULL. */
static PGresult *run(pg_conn_t *c, const char *sql, const bs_value_t *params, size_t nparams, bs_error_t *err)
{
    assert(!c->bound || pthread_equal(c->thread, pthread_self()));
    spec_t *sp = c->spec != NULL && c->spec->cur >= 0 ? c->spec : NULL;
    if (sp != NULL && !sp->deferring && !sp->reads)
        pg_spec_undo_after(c, sp, sp->cur); /* a job's further statement */
    if (sp != NULL && !sp->reads && sp->sent_any && pg_conn_lost(c)) {
        bs_error_t e;
        bs_error_init(&e);
        bs_error_set(&e, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                     c->owner->where);
        pg_spec_break(sp, &e);
    }
    if (sp != NULL && sp->broken && !sp->reads) {
        *err = sp->err; /* never on a new connection: the transaction is gone */
        return NULL;
    }
    if (pg_ensure_conn(c, err) != 0)
        return NULL;
    char *text = pg_sql(sql);
    const char **vals = NULL;
    char *buf = NULL;
    PGresult *res = NULL;
    if (text == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        goto out;
    }
    if (pg_make_params(params, nparams, &vals, &buf, err) != 0)
        goto out;
    /* A reader's statement is a read in a transaction of its own: when the connection
     * turns out to be gone (a restarted server or PgBouncer), it is safe to run it
     * again once on a new one. The writer's statements belong to a transaction that
     * died with the connection, so they fail. */
    if (c->budget_ns != 0 && util_mono_ns() >= c->budget_ns) {
        bs_error_set(err, BS_ERR_TIMEOUT, "The statement ran past its time budget.");
        goto out;
    }
    for (int attempt = 0;; attempt++) {
        int owed = c->savepoint_due || c->later.text != NULL || c->begin_due, began = c->begin_due;
        int deferred = sp != NULL && sp->deferring && !(sp->reads && c->budget_ns != 0);
        if (deferred) {
            res = pg_spec_defer(c, text, (int)nparams, vals, err);
            began = 0;
            if (res == NULL && sp->reads && !sp->jobs[sp->cur].gave_up) {
                /* The reads' pipeline broke: this read sends its own statement. */
                bs_error_init(err);
                deferred = 0;
                if (pg_ensure_conn(c, err) != 0)
                    break;
            }
        }
        if (!deferred)
            res = pg_send_now(c, text, (int)nparams, vals, owed, err);
        ExecStatusType st = PQresultStatus(res);
        const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        int cancelled = state != NULL && strcmp(state, "57014") == 0; /* query_canceled */
        int stale = c->cancel_stale;
        c->cancel_stale = c->budget_cancelled && !cancelled;
        if (res != NULL && (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)) {
            if (!c->is_reader && !c->wrote)
                c->wrote = changes_data(text, res);
            break;
        }
        if (cancelled && c->budget_cancelled) {
            bs_error_set(err, BS_ERR_TIMEOUT, "The statement ran past its time budget.");
            PQclear(res);
            res = NULL;
            break;
        }
        if (cancelled && stale && c->is_reader && attempt == 0) {
            /* The cancel meant for the budgeted statement before this one. */
            PQclear(res);
            res = NULL;
            bs_error_init(err);
            continue;
        }
        /* The writer's first statement of a transaction, with the BEGIN, met a
         * connection found dead (a restarted server or PgBouncer): nothing of the
         * transaction reached a server, so it begins again once on a new one. */
        int begin_again = !c->is_reader && began && c->begin_due && pg_conn_lost(c) && !c->timed_out;
        if ((c->is_reader || begin_again) && attempt == 0 && pg_conn_lost(c) && !c->timed_out) {
            PQclear(res);
            res = NULL;
            bs_error_init(err);
            if (pg_ensure_conn(c, err) == 0)
                continue;
            goto out;
        }
        if (c->prepare && pg_stale_plan(res)) {
            /* The table changed under a prepared SELECT * (a schema change, maybe by
             * another instance): prepare the text again. A reader's statement runs
             * alone, so it is retried once; the writer's aborted its transaction. */
            prepared_t *slot = &c->prepared[pg_hash_sql(text) % PREPARED_SLOTS];
            if (slot->sql != NULL && strcmp(slot->sql, text) == 0) {
                free(slot->sql);
                slot->sql = NULL; /* the old name stays unused on the server: names are never reused */
            }
            if (c->is_reader && attempt == 0) {
                PQclear(res);
                res = NULL;
                bs_error_init(err);
                continue;
            }
        }
        if (res != NULL || err->code == BS_ERR_OK)
            pg_map_error_sql(c, res, text, err);
        PQclear(res);
        res = NULL;
        break;
    }
out:
    free(text);
    free(vals);
    free(buf);
    return res;
}

static store_stmt_t *op_query(store_conn_t *base, const char *sql, const bs_value_t *params, size_t nparams,
                              bs_error_t *err)
{
    pg_conn_t *c = (pg_conn_t *)base;
    uint64_t t0 = util_mono_ns();
    pg_stmt_t *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    st->res = run(c, sql, params, nparams, err);
    if (st->res == NULL) {
        free(st);
        return NULL;
    }
    st->base.ops = &pg_ops;
    st->conn = c;
    st->row = -1;
    st->nrows = PQntuples(st->res);
    st->ncols = PQnfields(st->res);
    st->started_ns = t0;
    return &st->base;
}

static int op_step(store_stmt_t *base, bs_error_t *err)
{
    (void)err;
    pg_stmt_t *st = (pg_stmt_t *)base;
    if (st->row + 1 >= st->nrows) {
        st->row = st->nrows;
        return 0;
    }
    st->row++;
    return 1;
}

static int op_ncols(store_stmt_t *base)
{
    return ((pg_stmt_t *)base)->ncols;
}

static const char *op_col_name(store_stmt_t *base, int i)
{
    return PQfname(((pg_stmt_t *)base)->res, i);
}

static bs_value_t op_col(store_stmt_t *base, int i)
{
    pg_stmt_t *st = (pg_stmt_t *)base;
    if (st->row < 0 || st->row >= st->nrows || PQgetisnull(st->res, st->row, i))
        return bs_val_null();
    const char *v = PQgetvalue(st->res, st->row, i);
    switch (PQftype(st->res, i)) {
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
        return bs_val_int(strtoll(v, NULL, 10));
    case OID_FLOAT4:
    case OID_FLOAT8:
    case OID_NUMERIC:
        return bs_val_double(strtod(v, NULL));
    case OID_BOOL:
        return bs_val_int(v[0] == 't');
    default:
        return bs_val_text(v, (size_t)PQgetlength(st->res, st->row, i));
    }
}

static void op_done(store_stmt_t *base)
{
    pg_stmt_t *st = (pg_stmt_t *)base;
    if (st->conn->is_reader)
        metrics_hist_observe(&metrics_g.store_query, util_mono_ns() - st->started_ns);
    PQclear(st->res);
    free(st);
}

static int64_t op_exec(store_conn_t *base, const char *sql, const bs_value_t *params, size_t nparams,
                       bs_error_t *err)
{
    PGresult *res = run((pg_conn_t *)base, sql, params, nparams, err);
    if (res == NULL)
        return -1;
    const char *n = PQcmdTuples(res);
    int64_t changed = n != NULL && n[0] ? strtoll(n, NULL, 10) : 0;
    PQclear(res);
    return changed;
}

static int op_exec_later(store_conn_t *base, const char *sql, const bs_value_t *params, size_t nparams,
                         store_later_fn done, void *arg, bs_error_t *err)
{
    pg_conn_t *c = (pg_conn_t *)base;
    if (c != &c->owner->writer || c->later.text != NULL || pg_conn_lost(c) || c->spec != NULL ||
        (PQtransactionStatus(c->pg) != PQTRANS_INTRANS && !c->begin_due)) {
        store_stmt_t *st = op_query(base, sql, params, nparams, err);
        if (st == NULL)
            return -1;
        int rc = done(arg, st, err);
        op_done(st);
        return rc;
    }
    char *text = pg_sql(sql);
    if (text == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    if (pg_make_params(params, nparams, &c->later.vals, &c->later.buf, err) != 0) {
        free(text);
        return -1;
    }
    c->later.text = text;
    c->later.nparams = (int)nparams;
    c->later.done = done;
    c->later.arg = arg;
    c->later.err = err;
    c->wrote = 1;
    return 0;
}

static int op_exec_script(store_conn_t *base, const char *sql, bs_error_t *err)
{
    if (((pg_conn_t *)base)->spec != NULL) {
        /* Not in a pipelined job (ADR 0021): it would run ahead of the jobs before it. */
        bs_error_set(err, BS_ERR_INTERNAL, "A script cannot run in a pipelined job.");
        return -1;
    }
    pg_conn_t *c = (pg_conn_t *)base;
    if (sql == NULL || sql[strspn(sql, " \t\n;")] == '\0')
        return 0; /* nothing to run (as sqlite3_exec with an empty script) */
    if (pg_ensure_conn(c, err) != 0)
        return -1;
    c->wrote = 1; /* a script is DDL or a change */
    c->ran_script = 1;
    if (pg_later_flush(c, err) != 0 || (c->begin_due && pg_begin_now(c, err) != 0)) {
        c->savepoint_failed = 1;
        return -1;
    }
    if (c->savepoint_due) {
        /* Simple-query scripts cannot join a pipeline: the owed savepoint on its own. */
        c->savepoint_due = 0;
        if (pg_simple(c, "RELEASE SAVEPOINT job; SAVEPOINT job", err) != 0) {
            c->savepoint_failed = 1;
            return -1;
        }
    }
    PGresult *res;
    if (c->is_reader) {
        res = pg_exec_simple(c, sql, err);
    } else {
        /* A schema change on a large table (CREATE INDEX, the search index) takes longer
         * than a write's statement may: the script runs under the DDL deadline, set and
         * given back with SET LOCAL in the same round trip (outside a transaction SET
         * LOCAL only warns). Its wait for a table's lock stays bounded by the write's
         * deadline: while an ALTER TABLE waits for a lock, every later read of that
         * table queues behind it. The script's end goes on a line of its own, so that a
         * closing line comment cannot swallow what follows. */
        static const char wrap[] = "SET LOCAL statement_timeout = %d; SET LOCAL lock_timeout = %d;\n%s\n;\n"
                                   "SET LOCAL statement_timeout = %d; SET LOCAL lock_timeout = DEFAULT";
        int write_ms = c->owner->cfg.statement_timeout_ms;
        size_t size = strlen(sql) + sizeof(wrap) + 3 * 12; /* three ints in place of their %d */
        char *wrapped = malloc(size);
        if (wrapped == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        snprintf(wrapped, size, wrap, c->owner->cfg.ddl_timeout_ms, write_ms, sql, write_ms);
        c->in_script = 1;
        res = pg_exec_simple(c, wrapped, err);
        c->in_script = 0;
        free(wrapped);
    }
    if (res == NULL)
        return -1;
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state != NULL && strncmp(state, "42", 2) == 0)
            bs_error_set(err, BS_ERR_BAD_REQUEST, "The database rejected the change: %s.",
                         PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
        else
            pg_map_error(c, res, err);
        rc = -1;
    }
    PQclear(res);
    return rc;
}

static void op_set_budget(store_conn_t *base, int budget_ms)
{
    pg_conn_t *c = (pg_conn_t *)base;
    c->budget_cancelled = 0;
    c->budget_ns = budget_ms > 0 ? util_mono_ns() + (uint64_t)budget_ms * 1000000u : 0;
}

/* Each query is its own snapshot here (autocommit reads): nothing to release. */
static void op_reader_release(store_conn_t *base)
{
    (void)base;
}

static void op_clear_cache(store_conn_t *base)
{
    pg_conn_t *c = (pg_conn_t *)base;
    if (c->prepare && !pg_conn_lost(c)) {
        bs_error_t ignored;
        bs_error_init(&ignored);
        PQclear(pg_exec_simple(c, "DEALLOCATE ALL", &ignored));
    }
    pg_forget_prepared(c);
}

/* --- the writer -------------------------------------------------------------------- */

/* Commits the open transaction (sql ends with COMMIT). A transaction that an error
 * had already aborted answers COMMIT with "ROLLBACK": that is a failure too. */
static int commit(pg_conn_t *c, const char *sql, bs_error_t *err)
{
    if (pg_later_flush(c, err) != 0)
        return -1;
    if (c->begin_due) {
        c->begin_due = 0; /* nothing of the transaction was sent: nothing to commit */
        return 0;
    }
    PGresult *r = pg_exec_simple(c, sql, err);
    if (r == NULL)
        return -1;
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
    if (!ok) {
        if (PQresultStatus(r) == PGRES_COMMAND_OK)
            bs_error_set(err, BS_ERR_INTERNAL, "The database rolled the write back.");
        else
            pg_map_error(c, r, err);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* Where the last commit stands in the WAL, for read-your-writes on replicas; 0 when
 * unknown (then reads of that caller wait for no replica: they go to the primary). */
static uint64_t wal_lsn_now(pg_store_t *s)
{
    if (s->replicas == NULL)
        return 0;
    bs_error_t ignored;
    bs_error_init(&ignored);
    uint64_t lsn = 0;
    PGresult *r = pg_exec_simple(&s->writer, "SELECT pg_current_wal_lsn()", &ignored);
    if (r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        lsn = pg_lsn_parse(PQgetvalue(r, 0, 0));
    PQclear(r);
    return lsn;
}

/* The end of a write transaction: NOTIFY (other instances drop their caches and read
 * the outbox) only when it may have changed data; a NOTIFY assigns a transaction id,
 * so an empty transaction with one would flush the WAL at its COMMIT, and wake every
 * instance, for nothing (the job runner's claim polls when no job is due). */
static const char *commit_sql(const pg_store_t *s)
{
    return s->writer.wrote ? s->notify_commit : "COMMIT";
}

static void op_clear_cache(store_conn_t *base);

/* Before a job on c: when the collections' definitions changed since c's prepared
 * statements were made (a snapshot published after this instance's DDL or another
 * instance's), they are dropped, so that no statement prepared over the old columns
 * runs (one DEALLOCATE ALL per connection per change). */
static void drop_stale_prepared(pg_conn_t *c)
{
    if (!c->prepare)
        return;
    uint64_t gen = store_definitions_gen();
    if (c->defs_gen == gen)
        return;
    op_clear_cache(&c->base);
    c->defs_gen = gen;
}

/* After the writer's transaction ended: if it ran DDL, its prepared statements may
 * name columns that changed; they are dropped before the next job prepares any. */
static void after_transaction(pg_conn_t *c)
{
    if (c->ran_script && c->prepare)
        op_clear_cache(&c->base);
    c->ran_script = 0;
}

/* Runs one job in its own transaction; returns its status. */
static int run_job(pg_store_t *s, store_job_t *j)
{
    pg_conn_t *c = &s->writer;
    bs_error_init(&j->err);
    j->status = -1;
    if (pg_ensure_conn(c, &j->err) != 0)
        goto out;
    drop_stale_prepared(c);
    /* BEGIN and the time-out go out with the job's first statement (ADR 0018); SET
     * LOCAL ends with the transaction, so no setting outlives it on a pooled
     * connection. */
    snprintf(c->begin_timeout, sizeof(c->begin_timeout), "SET LOCAL statement_timeout = %d",
             s->cfg.statement_timeout_ms > 0 ? s->cfg.statement_timeout_ms : 0);
    c->begin_due = 1;
    c->begin_savepoint = 0;
    c->wrote = 0;
    j->status = j->run(j, &c->base);
    if (j->unshared)
        c->wrote = 0;
    /* The job's realtime events, last, so that the outbox counter's row lock (which
     * orders the committers of every instance) is held only until the COMMIT. */
    if (j->status == 0 && store_outbox_append_jobs(&s->base, &c->base, j, &j->err) != 0)
        j->status = -1;
    if (j->status != 0) {
        if (j->err.code == BS_ERR_OK)
            bs_error_set(&j->err, BS_ERR_INTERNAL, NULL);
        bs_error_t ignored;
        bs_error_init(&ignored);
        if (!pg_conn_lost(c) && !c->begin_due)
            pg_simple(c, "ROLLBACK", &ignored);
        j->status = -1;
        goto out;
    }
    if (commit(c, commit_sql(s), &j->err) != 0) {
        /* Lost during COMMIT: the outcome is unknown to us, and we say it failed.
         * PostgreSQL either committed it or not; a retry of a create gets a new id. */
        j->status = -1;
        goto out;
    }
    /* Where the commit stands in the WAL (at or past it): the caller's next reads
     * must come from a replica that has replayed that far. */
    j->commit_lsn = wal_lsn_now(s);
out:
    c->begin_due = 0;
    pg_later_discard(c);
    after_transaction(c);
    return j->status;
}

/* Listener thread: reads the notifications that arrived on the listener connection
 * (without waiting) and reports other instances' commits and schema changes;
 * (re)connects and LISTENs when needed, at most once per backoff period. */
static void listen_round(pg_store_t *s)
{
    store_t *base = &s->base;
    pg_conn_t *c = &s->listener;
    bs_error_t err;
    bs_error_init(&err);
    if (pg_conn_lost(c))
        s->listening = 0;
    if (!s->listening) {
        if (pg_ensure_conn(c, &err) != 0)
            return;
        if (pg_simple(c, "LISTEN basalt_changes; LISTEN basalt_schema", &err) != 0)
            return;
        s->listening = 1;
        /* Changes made while no one listened are unknown: treat them as made (the
         * cached answers go before the writer reads the events, below too). */
        if (s->cfg.on_external_change != NULL)
            s->cfg.on_external_change();
        store_outbox_external(base);
        if (s->cfg.on_schema_change != NULL)
            s->cfg.on_schema_change();
    }
    if (!PQconsumeInput(c->pg)) {
        s->listening = 0;
        return;
    }
    int external = 0, schema = 0;
    PGnotify *n;
    while ((n = PQnotifies(c->pg)) != NULL) {
        if (strcmp(n->relname, "basalt_schema") == 0)
            schema = 1; /* this instance's own too: harmless, its next request checks */
        else if (strcmp(n->extra, s->instance) != 0)
            external = 1;
        PQfreemem(n);
    }
    /* The schema first: a request that runs after hearing of the commit reloads. */
    if (schema && s->cfg.on_schema_change != NULL)
        s->cfg.on_schema_change();
    if (external && s->cfg.on_external_change != NULL)
        s->cfg.on_external_change();
    if (external)
        store_outbox_external(base);
}

/* The listener's own thread, waiting on its socket (ADR 0013): another instance's
 * commit is known within the notification's network delay, not at the writer's next
 * idle tick, so the request that follows it on this instance already sees it. */
static void *listen_main(void *arg)
{
    util_thread_name("pglisten");
    pg_store_t *s = arg;
    while (!__atomic_load_n(&s->listen_stopping, __ATOMIC_ACQUIRE)) {
        listen_round(s);
        struct pollfd p[2] = {{.fd = s->listen_wake, .events = POLLIN}, {.fd = -1}};
        nfds_t np = 1;
        if (s->listening && s->listener.pg != NULL && PQsocket(s->listener.pg) >= 0) {
            p[1].fd = PQsocket(s->listener.pg);
            p[1].events = POLLIN;
            np = 2;
        }
        /* Bounded: a lost connection is retried (after its backoff) without a wake-up. */
        if (poll(p, np, 200) > 0 && (p[0].revents & POLLIN)) {
            uint64_t v;
            if (read(s->listen_wake, &v, sizeof(v)) < 0) {
                /* nothing to drain */
            }
        }
    }
    return NULL;
}

static void listen_stop(pg_store_t *s)
{
    if (!s->listen_started)
        return;
    __atomic_store_n(&s->listen_stopping, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(s->listen_wake, &one, sizeof(one)) < 0) {
        /* the poll's time-out ends the thread anyway */
    }
    pthread_join(s->listen_thread, NULL);
    s->listen_started = 0;
}

static store_conn_t *op_writer(store_t *base)
{
    return &((pg_store_t *)base)->writer.base;
}

/* Group commit (ADR 0014): the jobs that queued while the last batch ran, in one
 * transaction, each in a savepoint of its own, so that one job's failure rolls back
 * that job alone, and one COMMIT (one WAL flush) answers all of them. Savepoint
 * "job" is reused: after a failure ROLLBACK TO keeps it, after a success it is
 * released and set again in one round trip; COMMIT releases the last one.
 *
 * Order: the jobs' statements run in queue order on one connection, so the batch
 * sees each job's writes as a single writer would; the outbox counter row is taken
 * once for the events of every job that succeeded, just before the COMMIT, and held
 * until it (ADR 0018), so event offsets follow commit order across instances as
 * before (ADR 0006).
 *
 * A failure outside a job (the connection lost, a savepoint statement or the COMMIT
 * refused) fails every job of the batch that had succeeded: none of them is
 * acknowledged, as with a single job whose COMMIT failed. Returns 1 if it committed. */
static int run_batch(pg_store_t *s, store_job_t *jobs)
{
    pg_conn_t *c = &s->writer;
    bs_error_t err;
    bs_error_init(&err);
    int committed = 0;
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue) {
        bs_error_init(&j->err);
        j->status = -1;
    }
    if (pg_ensure_conn(c, &err) != 0)
        goto out;
    /* BEGIN, the time-out and the first savepoint go out with the first job's first
     * statement (ADR 0018). */
    snprintf(c->begin_timeout, sizeof(c->begin_timeout), "SET LOCAL statement_timeout = %d",
             s->cfg.statement_timeout_ms > 0 ? s->cfg.statement_timeout_ms : 0);
    c->begin_due = 1;
    c->begin_savepoint = 1;
    c->wrote = 0;
    c->savepoint_due = c->savepoint_failed = 0;
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue) {
        int seg = pg_segment_len(s, j);
        if (seg > 0) {
            if (pg_run_segment(s, j, seg, &err) != 0)
                goto out;
            for (int i = 1; i < seg; i++)
                j = j->next_in_queue;
            continue;
        }
        int wrote = c->wrote;
        j->status = j->run(j, &c->base);
        if (j->unshared)
            c->wrote = wrote;
        if (c->savepoint_failed) {
            /* The savepoint owed before this job was refused: the transaction is
             * aborted under every job of the batch. */
            if (err.code == BS_ERR_OK)
                bs_error_set(
                    &err, BS_ERR_UNAVAILABLE,
                    "The database rolled back the transaction this write was part of; please retry.");
            if (j->err.code == BS_ERR_OK)
                j->err = err;
            j->status = -1;
            goto out;
        }
        if (pg_conn_lost(c)) {
            if (j->status == 0 || j->err.code == BS_ERR_OK)
                bs_error_set(&j->err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                             s->where);
            j->status = -1;
            err = j->err;
            err.fields = NULL; /* they belong to the arena of that job */
            goto out;
        }
        if (j->status == 0 && PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
            /* The job left the transaction aborted (a statement failed that it did not
             * report): libpq knows it from the last ReadyForQuery, no round trip needed.
             * The job fails, its savepoint stands. */
            LOGF(LOG_ERROR, "store", "a write job succeeded on a failed transaction; it is rolled back");
            j->status = -1;
        }
        if (j->status == 0) {
            /* Released and set again with the next job's first statement (if it has one). */
            c->savepoint_due = j->next_in_queue != NULL;
        } else if (c->savepoint_due || c->begin_due) {
            /* It failed before sending a statement: nothing of it to undo, and the
             * savepoint still stands before the previous job (or the transaction is
             * still to begin); still owed. */
            if (j->err.code == BS_ERR_OK)
                bs_error_set(&j->err, BS_ERR_INTERNAL, NULL);
            j->status = -1;
        } else {
            if (j->err.code == BS_ERR_OK)
                bs_error_set(&j->err, BS_ERR_INTERNAL, NULL);
            j->status = -1;
            if (pg_conn_lost(c) || pg_simple(c, "ROLLBACK TO SAVEPOINT job", &err) != 0) {
                if (err.code == BS_ERR_OK)
                    bs_error_set(&err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                                 s->where);
                goto out;
            }
        }
    }
    c->savepoint_due = 0; /* COMMIT releases the savepoint */
    /* The events of every job that succeeded, in one statement sent before the COMMIT
     * (ADR 0018): one counter UPDATE per transaction, not one per job, and its row
     * lock held from there to the COMMIT only. */
    if (store_outbox_append_jobs(&s->base, &c->base, jobs, &err) != 0)
        goto out;
    if (commit(c, commit_sql(s), &err) == 0)
        committed = 1;
out:
    c->savepoint_due = c->savepoint_failed = 0;
    if (!committed && !pg_conn_lost(c) && !c->begin_due) {
        bs_error_t ignored;
        bs_error_init(&ignored);
        PGresult *r = pg_exec_simple(c, "ROLLBACK", &ignored);
        PQclear(r);
    }
    c->begin_due = 0;
    pg_later_discard(c); /* a batch that failed may leave one unsent */
    uint64_t lsn = committed ? wal_lsn_now(s) : 0;
    after_transaction(c);
    pg_spec_prepare_sent(c, &s->spec);
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue) {
        if (!committed && j->status == 0) {
            /* Its own part went well; the transaction it was part of did not commit. */
            j->status = -1;
            j->err = err;
            if (j->err.code == BS_ERR_OK || j->err.code == BS_ERR_VALIDATION ||
                j->err.code == BS_ERR_BAD_REQUEST)
                bs_error_set(
                    &j->err, BS_ERR_UNAVAILABLE,
                    "The database rolled back the transaction this write was part of; please retry.");
        } else if (!committed && j->err.code == BS_ERR_OK) {
            j->err = err;
            if (j->err.code == BS_ERR_OK)
                bs_error_set(&j->err, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                             s->where);
        }
        if (j->status == 0)
            j->commit_lsn = lsn;
    }
    return committed;
}

/* store_ops_t.run_jobs: one job runs in a transaction of its own (no savepoint); more
 * run as a group commit. */
static int op_run_jobs(store_t *base, store_job_t *jobs)
{
    pg_store_t *s = (pg_store_t *)base;
    if (jobs != NULL && jobs->next_in_queue == NULL)
        return run_job(s, jobs) == 0;
    return run_batch(s, jobs);
}

/* --- the read pool ----------------------------------------------------------------- */

enum { READS_POINT = 0, READS_SCAN = 1 };

/* Where a read goes: a replica in the rotation that has replayed min_lsn (waiting up
 * to replica_wait_ms for one when min_lsn is set), connected; else the primary. */
static pg_conn_t *read_target(pool_thread_t *t, uint64_t min_lsn)
{
    pg_store_t *s = t->s;
    if (s->replicas == NULL)
        return &t->conn;
    int i = min_lsn != 0 ? pg_replicas_wait(s->replicas, min_lsn, s->cfg.replica_wait_ms)
                         : pg_replicas_pick(s->replicas, 0);
    if (i < 0)
        return &t->conn;
    pg_conn_t *rc = &t->replicas[i];
    bs_error_t err;
    bs_error_init(&err);
    if (pg_ensure_conn(rc, &err) != 0)
        return &t->conn; /* the monitor will take it out of the rotation */
    return rc;
}

/* Under pool_lock: which queue a free pool thread serves next, or -1 (nothing it may
 * take). Oldest first between the two; a scan only while fewer than scan_cap run, so
 * that one thread at least stays for point reads. */
static int pool_next_kind(const pg_store_t *s)
{
    const store_job_t *p = s->rq[READS_POINT].head, *q = s->rq[READS_SCAN].head;
    if (q != NULL && s->scans_running >= s->scan_cap)
        q = NULL;
    if (p == NULL)
        return q != NULL ? READS_SCAN : -1;
    return q != NULL && q->queued_seq < p->queued_seq ? READS_SCAN : READS_POINT;
}

/* Under pool_lock: takes the next batch of kind off its queue: one scan, or a share
 * of the point reads that wait (so that a burst spreads over the threads). */
static store_job_t *pool_take(pg_store_t *s, int kind)
{
    size_t take = 1, n = 1;
    if (kind == READS_POINT) {
        take = (s->rq[kind].n + (size_t)s->npool - 1) / (size_t)s->npool;
        if (take > POOL_TAKE_MAX)
            take = POOL_TAKE_MAX;
    }
    store_job_t *batch = s->rq[kind].head, *last = batch;
    while (n < take && last->next_in_queue != NULL) {
        last = last->next_in_queue;
        n++;
    }
    s->rq[kind].head = last->next_in_queue;
    if (s->rq[kind].head == NULL)
        s->rq[kind].tail = &s->rq[kind].head;
    s->rq[kind].n -= n;
    last->next_in_queue = NULL;
    return batch;
}

/* Posts a share of reads back, after the whole share ran: the worker may free a job
 * at once. */
static void batch_posted(store_job_t *batch)
{
    for (store_job_t *j = batch, *next; j != NULL; j = next) {
        next = j->next_in_queue;
        mailbox_post(j->reply_to, &j->msg);
    }
}

static void *pool_main(void *arg)
{
    util_thread_name("pgpool");
    pool_thread_t *t = arg;
    pg_store_t *s = t->s;
    t->conn.thread = pthread_self();
    t->conn.bound = 1;
    for (size_t i = 0; s->replicas != NULL && i < pg_replicas_count(s->replicas); i++) {
        t->replicas[i].thread = pthread_self();
        t->replicas[i].bound = 1;
    }
    pthread_mutex_lock(&s->pool_lock);
    for (;;) {
        int kind;
        while ((kind = pool_next_kind(s)) < 0 && !s->pool_stopping)
            pthread_cond_wait(&s->pool_cond, &s->pool_lock);
        if (kind < 0) {
            if (s->rq[READS_POINT].n + s->rq[READS_SCAN].n == 0)
                break;                                       /* stopping, and every queued job done */
            pthread_cond_wait(&s->pool_cond, &s->pool_lock); /* scans wait for a slot */
            continue;
        }
        store_job_t *batch = pool_take(s, kind);
        if (kind == READS_SCAN)
            s->scans_running++;
        if (pool_next_kind(s) >= 0)
            pthread_cond_signal(&s->pool_cond); /* the rest for another thread */
        pthread_mutex_unlock(&s->pool_lock);
        /* Point reads in one pipeline when there are no replicas to choose among and
         * none is a write on the pool (store_run_pooled: its statements commit alone). */
        int n = 0, pooled_write = 0;
        for (store_job_t *j = batch; j != NULL; j = j->next_in_queue) {
            n++;
            pooled_write |= j->primary;
        }
        if (kind == READS_POINT && n >= 2 && !pooled_write && s->replicas == NULL &&
            pg_coros_ready(t->coros, n, &t->coros_failed)) {
            drop_stale_prepared(&t->conn);
            pg_run_reads_pipelined(t, batch, n);
            batch_posted(batch);
            pthread_mutex_lock(&s->pool_lock);
            continue;
        }
        for (store_job_t *j = batch; j != NULL; j = j->next_in_queue) {
            pg_conn_t *c = j->primary ? &t->conn : read_target(t, j->min_lsn);
            drop_stale_prepared(c);
            j->status = j->run(j, &c->base) == 0 ? 0 : -1;
            /* A replica lost in the middle of a read (stopped, failed over): the read
             * runs again on the primary instead of answering 503 while the monitor
             * takes the replica out of the rotation. A read has no effect to repeat. */
            if (j->status != 0 && c != &t->conn && j->err.code == BS_ERR_UNAVAILABLE && pg_conn_lost(c)) {
                bs_error_init(&j->err);
                j->status = j->run(j, &t->conn.base) == 0 ? 0 : -1;
            }
            if (j->status != 0 && j->err.code == BS_ERR_OK)
                bs_error_set(&j->err, BS_ERR_INTERNAL, NULL);
        }
        batch_posted(batch);
        pthread_mutex_lock(&s->pool_lock);
        if (kind == READS_SCAN && --s->scans_running < s->scan_cap && s->rq[READS_SCAN].n > 0)
            pthread_cond_signal(&s->pool_cond); /* a slot for a waiting scan */
    }
    pthread_mutex_unlock(&s->pool_lock);
    return NULL;
}

static void op_read_submit(store_t *base, store_job_t *head, store_job_t **tail, size_t n)
{
    pg_store_t *s = (pg_store_t *)base;
    (void)tail;
    (void)n;
    pthread_mutex_lock(&s->pool_lock);
    for (store_job_t *j = head, *next; j != NULL; j = next) {
        next = j->next_in_queue;
        int kind = j->scan ? READS_SCAN : READS_POINT;
        j->next_in_queue = NULL;
        j->queued_seq = ++s->rseq;
        *s->rq[kind].tail = j;
        s->rq[kind].tail = &j->next_in_queue;
        s->rq[kind].n++;
    }
    pthread_cond_signal(&s->pool_cond); /* the taker passes the rest on */
    pthread_mutex_unlock(&s->pool_lock);
}

/* Finishes the queued reads and joins the pool threads. */
static void pool_stop(pg_store_t *s)
{
    if (s->pool == NULL)
        return;
    pthread_mutex_lock(&s->pool_lock);
    s->pool_stopping = 1;
    pthread_cond_broadcast(&s->pool_cond);
    pthread_mutex_unlock(&s->pool_lock);
    for (int i = 0; i < s->npool; i++) {
        if (s->pool[i].started)
            pthread_join(s->pool[i].thread, NULL);
        pg_close_conn(&s->pool[i].conn);
        for (size_t k = 0; s->pool[i].replicas != NULL && k < pg_replicas_count(s->replicas); k++)
            pg_close_conn(&s->pool[i].replicas[k]);
        free(s->pool[i].replicas);
        for (int k = 0; k < POOL_TAKE_MAX; k++)
            coro_free(s->pool[i].coros[k]);
    }
    free(s->pool);
    s->pool = NULL;
}

/* --- the store --------------------------------------------------------------------- */

static void op_close(store_t *base)
{
    pg_store_t *s = (pg_store_t *)base;
    listen_stop(s);
    if (s->listen_wake >= 0)
        close(s->listen_wake);
    pool_stop(s);
    pg_replicas_stop(s->replicas);
    s->replicas = NULL;
    store_base_destroy(base);
    for (int i = 0; s->readers != NULL && i < s->nreaders; i++)
        pg_close_conn(&s->readers[i]);
    pg_close_conn(&s->writer);
    pg_close_conn(&s->listener);
    for (int i = 0; i < SPEC_MAX; i++)
        coro_free(s->coros[i]);
    pthread_mutex_destroy(&s->pool_lock);
    pthread_cond_destroy(&s->pool_cond);
    free(s->readers);
    free(s->url);
    free(s->listen_url);
    free(s->writer_url);
    free(s);
}

static store_conn_t *op_reader(store_t *base, int idx)
{
    pg_store_t *s = (pg_store_t *)base;
    return &s->readers[idx % s->nreaders].base;
}

static void init_conn(pg_store_t *s, pg_conn_t *c)
{
    memset(c, 0, sizeof(*c));
    c->base.ops = &pg_ops;
    c->owner = s;
    c->prepare = s->cfg.prepared_statements;
}

/* "host:port/dbname" of a URL, for messages (libpq parses it; no password). */
static void describe(pg_store_t *s)
{
    PQconninfoOption *opts = PQconninfoParse(s->url, NULL);
    const char *host = "localhost", *port = "5432", *db = "";
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
    }
    snprintf(s->where, sizeof(s->where), "%s:%s/%s", host, port, db);
    PQconninfoFree(opts);
}

store_t *pg_store_open(const store_config_t *cfg, bs_error_t *err)
{
    pg_store_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    store_base_init(&s->base, &pg_ops, cfg->max_batch > 0 ? cfg->max_batch : 256);
    /* The listener thread wakes the writer to read the outbox when another instance
     * commits (store_wake_writer); this bounds what a lost notification would delay. */
    s->base.idle_tick_ms = 50;
    s->listen_wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_mutex_init(&s->pool_lock, NULL);
    pthread_cond_init(&s->pool_cond, NULL);
    for (int k = 0; k < 2; k++)
        s->rq[k].tail = &s->rq[k].head;
    s->cfg = *cfg;
    s->url = strdup(cfg->path);
    s->listen_url = strdup(cfg->listen_url != NULL && cfg->listen_url[0] ? cfg->listen_url : cfg->path);
    int direct_writer = cfg->writer_url != NULL && cfg->writer_url[0] != '\0';
    s->writer_url = direct_writer ? strdup(cfg->writer_url) : NULL;
    unsigned char rnd[16];
    util_random_bytes(rnd, sizeof(rnd));
    for (int i = 0; i < 16; i++)
        snprintf(s->instance + 2 * i, 3, "%02x", rnd[i]);
    snprintf(s->notify_commit, sizeof(s->notify_commit), "NOTIFY basalt_changes, '%s'; COMMIT", s->instance);
    /* One reader connection: workers read through the pool; store_reader serves
     * start-up and the command line only. */
    s->nreaders = 1;
    s->readers = calloc((size_t)s->nreaders, sizeof(*s->readers));
    if (s->url == NULL || s->listen_url == NULL || s->readers == NULL ||
        (direct_writer && s->writer_url == NULL)) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        op_close(&s->base);
        return NULL;
    }
    describe(s);
    init_conn(s, &s->writer);
    /* Its own session: the writer may keep prepared statements there (ADR 0018). */
    s->writer.prepare = s->cfg.prepared_statements || s->writer_url != NULL;
    init_conn(s, &s->listener);
    for (int i = 0; i < s->nreaders; i++) {
        init_conn(s, &s->readers[i]);
        s->readers[i].is_reader = 1;
    }
    /* Every connection at start-up: an unreachable server stops start-up here. */
    if (pg_connect_conn(&s->writer, err) != 0) {
        op_close(&s->base);
        return NULL;
    }
    s->writer.connected_once = 1;
    for (int i = 0; i < s->nreaders; i++) {
        if (pg_connect_conn(&s->readers[i], err) != 0) {
            op_close(&s->base);
            return NULL;
        }
        s->readers[i].connected_once = 1;
    }
    s->npool = cfg->pool_size > 0 ? cfg->pool_size : 4;
    s->scan_cap = s->npool > 1 ? s->npool - 1 : 1;
    s->pool = calloc((size_t)s->npool, sizeof(*s->pool));
    if (s->pool == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        op_close(&s->base);
        return NULL;
    }
    if (cfg->replicas != NULL && cfg->replicas[0] != '\0') {
        pg_replicas_config_t rc = {.primary_url = s->listen_url,
                                   .urls = cfg->replicas,
                                   .max_lag_ms = cfg->replica_max_lag_ms > 0 ? cfg->replica_max_lag_ms : 5000,
                                   .connect_timeout_ms = cfg->connect_timeout_ms};
        s->replicas = pg_replicas_new(&rc, err);
        if (s->replicas == NULL || pg_replicas_start(s->replicas, err) != 0) {
            op_close(&s->base);
            return NULL;
        }
    }
    for (int i = 0; i < s->npool; i++) {
        pool_thread_t *t = &s->pool[i];
        t->s = s;
        init_conn(s, &t->conn);
        t->conn.is_reader = 1;
        size_t nr = pg_replicas_count(s->replicas);
        t->replicas = nr > 0 ? calloc(nr, sizeof(*t->replicas)) : NULL;
        if (nr > 0 && t->replicas == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            op_close(&s->base);
            return NULL;
        }
        for (size_t k = 0; k < nr; k++) {
            init_conn(s, &t->replicas[k]);
            t->replicas[k].is_reader = 1;
            t->replicas[k].url = pg_replicas_url(s->replicas, k);
        }
        if (pg_connect_conn(&t->conn, err) != 0) {
            op_close(&s->base);
            return NULL;
        }
        t->conn.connected_once = 1;
    }
    for (int i = 0; i < s->npool; i++) {
        if (pthread_create(&s->pool[i].thread, NULL, pool_main, &s->pool[i]) != 0) {
            bs_error_set(err, BS_ERR_INTERNAL, "Cannot start the database read threads.");
            op_close(&s->base);
            return NULL;
        }
        s->pool[i].started = 1;
    }
    if (s->listen_wake < 0 || pthread_create(&s->listen_thread, NULL, listen_main, s) != 0) {
        bs_error_set(err, BS_ERR_INTERNAL, "Cannot start the database notifications thread.");
        op_close(&s->base);
        return NULL;
    }
    s->listen_started = 1;
    return &s->base;
}

static int op_replica_state(store_t *base, size_t i, int *up, int64_t *lag_ms)
{
    pg_store_t *s = (pg_store_t *)base;
    if (s->replicas == NULL || i >= pg_replicas_count(s->replicas))
        return -1;
    *up = pg_replicas_healthy(s->replicas, i);
    *lag_ms = pg_replicas_lag_ms(s->replicas, i);
    return 0;
}

static uint64_t op_round_trips(store_t *base)
{
    return __atomic_load_n(&((pg_store_t *)base)->writer_round_trips, __ATOMIC_RELAXED);
}

const store_ops_t pg_ops = {
    .replica_state = op_replica_state,
    .round_trips = op_round_trips,
    .exec_later = op_exec_later,
    .name = "postgres",
    .close = op_close,
    .sql = RULES_DIALECT_POSTGRES,
    .reader = op_reader,
    .run_jobs = op_run_jobs,
    .writer = op_writer,
    .read_submit = op_read_submit,
    .query = op_query,
    .step = op_step,
    .ncols = op_ncols,
    .col_name = op_col_name,
    .col = op_col,
    .done = op_done,
    .exec = op_exec,
    .exec_script = op_exec_script,
    .reader_release = op_reader_release,
    .set_budget = op_set_budget,
    .clear_cache = op_clear_cache,
};
