/*
 * Pipelined jobs (ADR 0021): the first statements of several jobs in one round trip.
 *
 * The writer: consecutive pipelinable jobs of a group commit (pg_segment_len) run as
 * coroutines up to their first statement, which each holds instead of sending it
 * (pg_spec_defer, from run()); those statements go out in one pipeline, a savepoint
 * before each (spec_send), and the jobs are resumed in order with their results
 * (pg_run_segment). What a later failure or a further statement proves premature is
 * undone (ROLLBACK TO the savepoint of the first job done ahead, spec_undo) and sent
 * again, so that every statement sees exactly the jobs before it, as if they had run
 * one after another.
 *
 * The read pool: a pool thread's share of point reads, their first statements in one
 * BEGIN ... COMMIT pipeline (pg_run_reads_pipelined): no savepoints, nothing to undo;
 * a read after a failed one goes again, a pipeline lost with its connection is sent
 * again on a new one (spec_reads_lost), and past that each read sends its own.
 *
 * A run's state is a spec_t (pg_internal.h), on its connection while it runs
 * (pg_conn_t.spec); run() in pg_store.c hands each job's statements to it.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "base/coro.h"
#include "base/log.h"
#include "store/postgres/pg_internal.h"

/* The batch cannot go on: every job of it fails with why (the first reason kept). */
void pg_spec_break(spec_t *sp, const bs_error_t *why)
{
    if (sp->broken)
        return;
    sp->broken = 1;
    sp->err = *why;
    sp->err.fields = NULL; /* they belong to an arena */
    if (sp->err.code == BS_ERR_OK)
        bs_error_set(&sp->err, BS_ERR_UNAVAILABLE,
                     "The database rolled back the transaction this write was part of; please retry.");
}

/* ROLLBACK TO job j's savepoint: its work and everything sent after it goes, and the
 * jobs from j on still waiting for a result are to be sent again. Returns 0, or -1
 * with the run broken. */
static int spec_undo(pg_conn_t *c, spec_t *sp, int j)
{
    bs_error_t e;
    bs_error_init(&e);
    if (pg_simple(c, sp->undo[j], &e) != 0) {
        pg_spec_break(sp, &e);
        return -1;
    }
    for (int m = j; m < sp->n; m++) {
        spec_job_t *sj = &sp->jobs[m];
        if (!sj->waiting)
            continue;
        PQclear(sj->res);
        sj->res = NULL;
        sj->resend = 1;
        sj->sent = 0;
    }
    return 0;
}

/* Undoes, on the server, the first statements of the jobs after the running one (k)
 * that were done ahead of it: k is about to send another statement, which must see
 * the jobs before it only, as if they had run one after another. They are sent
 * again once k has finished. */
void pg_spec_undo_after(pg_conn_t *c, spec_t *sp, int k)
{
    sp->jobs[k].second = 1;
    int j = k + 1;
    while (j < sp->n && !(sp->jobs[j].waiting && !sp->jobs[j].resend))
        j++;
    if (j == sp->n || sp->broken)
        return;
    if (spec_undo(c, sp, j) == 0)
        sp->sequential = 1; /* jobs with further statements come in runs: stop guessing */
}

/* In the running job's coroutine, at its first statement: holds it and suspends the
 * job; the writer sends it with the others' and resumes the job with its result (or
 * NULL with err, when the batch broke). text and vals stay run()'s. */
PGresult *pg_spec_defer(pg_conn_t *c, const char *text, int nparams, const char *const *vals, bs_error_t *err)
{
    spec_t *sp = c->spec;
    spec_job_t *sj = &sp->jobs[sp->cur];
    sj->text = text;
    sj->nparams = nparams;
    sj->vals = vals;
    sj->waiting = 1;
    sj->resend = 1;
    coro_yield(sj->co);
    PGresult *r = sj->res;
    sj->res = NULL;
    sj->waiting = 0;
    if (r == NULL) {
        *err = sj->gave_up ? sj->why : sp->err;
        return NULL;
    }
    if (c->prepare && sj->name == NULL && !pg_result_failed(r) && sp->nprepare < SPEC_PREPARE) {
        int known = 0;
        for (int i = 0; i < sp->nprepare; i++)
            known |= strcmp(sp->prepare[i], text) == 0;
        if (!known && (sp->prepare[sp->nprepare] = strdup(text)) != NULL)
            sp->nprepare++;
    }
    return r;
}

/* A result that says the session ended (an error of severity FATAL or PANIC, or
 * libpq's own for a lost connection, which has no SQLSTATE): not the statement's
 * answer, which a read may then ask for again. */
static int session_ended(const PGresult *r)
{
    if (PQresultStatus(r) != PGRES_FATAL_ERROR)
        return 0;
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    return PQresultErrorField(r, PG_DIAG_SQLSTATE) == NULL ||
           (sev != NULL && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0));
}

/* A read pipeline lost its connection after `got` results (BEGIN first): the reads
 * answered keep their results; the one it was waiting for, when past its deadline,
 * fails with that (as alone; not run again); the others are sent again on a new
 * connection, at most twice without progress, then each sends its own. */
static void spec_reads_lost(pg_conn_t *c, spec_t *sp, const int *idx, int m, PGresult **res, int got,
                            const bs_error_t *why)
{
    int progress = 0;
    if (got > 0)
        PQclear(res[0]); /* the BEGIN */
    for (int i = 0; i < m; i++) {
        spec_job_t *sj = &sp->jobs[idx[i]];
        int qi = 1 + i;
        if (qi < got && PQresultStatus(res[qi]) != PGRES_PIPELINE_ABORTED && !session_ended(res[qi])) {
            PQclear(sj->res);
            sj->res = res[qi];
            sj->resend = 0;
            sj->failed = pg_result_failed(res[qi]);
            progress = 1;
            continue;
        }
        if (qi < got)
            PQclear(res[qi]);
        if (qi == got && c->timed_out) {
            sj->gave_up = 1;
            sj->why = *why;
            sj->why.fields = NULL;
            sj->resend = 0;
            progress = 1;
        }
    }
    for (int q = 1 + m; q < got; q++)
        PQclear(res[q]); /* the COMMIT's place */
    if (!progress && ++sp->failures >= 2)
        pg_spec_break(sp, why);
}

/* Sends, in one pipeline, what the transaction owes (its BEGIN, the savepoint after
 * the job before the run) and, for every job from `from` on whose statement is to be
 * sent, its savepoint and its statement; hands each job its result. A statement after
 * a failed one is not done (PostgreSQL skips to the Sync): it stays to be sent. */
static void spec_send(pg_conn_t *c, spec_t *sp, int from)
{
    pipe_q_t qs[6 + 2 * SPEC_MAX];
    PGresult *res[6 + 2 * SPEC_MAX];
    int idx[SPEC_MAX];
    if (sp->broken)
        return;
    int n = 0, m = 0, began = c->begin_due, owed_savepoint = c->savepoint_due;
    if (sp->reads) {
        began = 1;
        owed_savepoint = 0;
        qs[n++] = (pipe_q_t){.text = "BEGIN"};
    } else if (began) {
        qs[n++] = (pipe_q_t){.text = "BEGIN"};
        qs[n++] = (pipe_q_t){.text = c->begin_timeout};
        if (c->begin_savepoint)
            qs[n++] = (pipe_q_t){.text = "SAVEPOINT job"};
    }
    if (owed_savepoint) {
        qs[n++] = (pipe_q_t){.text = "RELEASE SAVEPOINT job"};
        qs[n++] = (pipe_q_t){.text = "SAVEPOINT job"};
    }
    int front = n;
    for (int j = from; j < sp->n && !(sp->sequential && m > 0); j++) {
        spec_job_t *sj = &sp->jobs[j];
        if (!sj->waiting || !sj->resend)
            continue;
        idx[m++] = j;
        sj->name = NULL;
        if (c->prepare) {
            /* By name only when prepared before on this session: a Parse that failed
             * inside the transaction would abort it under every job of the pipeline. */
            prepared_t *p = &c->prepared[pg_hash_sql(sj->text) % PREPARED_SLOTS];
            if (p->sql != NULL && strcmp(p->sql, sj->text) == 0)
                sj->name = p->name;
        }
        if (!sp->reads)
            qs[n++] = (pipe_q_t){.text = sp->set[j]};
        qs[n++] = (pipe_q_t){.text = sj->text, .name = sj->name, .nparams = sj->nparams, .vals = sj->vals};
    }
    if (m == 0)
        return; /* what is owed goes with the next statement */
    if (sp->reads && pg_ensure_conn(c, &sp->err) != 0) {
        sp->broken = 1; /* each read then sends its own statement (run) */
        return;
    }
    int per = sp->reads ? 1 : 2; /* pipeline entries per job */
    if (sp->reads)
        qs[n++] = (pipe_q_t){.text = "COMMIT"};
    else
        c->begin_due = c->savepoint_due = 0;
    sp->sent_any = 1;
    bs_error_t e;
    bs_error_init(&e);
    int got = 0;
    if (pg_pipeline_got(c, qs, n, res, &e, sp->reads ? &got : NULL) != 0) {
        if (sp->reads) {
            spec_reads_lost(c, sp, idx, m, res, got, &e);
            return;
        }
        /* The transaction's first pipeline met a connection found dead: nothing of the
         * transaction reached a server, so it is sent once more on a new one. */
        if (began && !sp->retried && !c->timed_out) {
            bs_error_t again;
            bs_error_init(&again);
            sp->retried = 1;
            if (pg_ensure_conn(c, &again) == 0) {
                c->begin_due = !sp->reads;
                spec_send(c, sp, from);
                return;
            }
        }
        pg_spec_break(sp, &e);
        return;
    }
    int failed = 0;
    for (int q = 0; q < front; q++) {
        if (!failed && pg_result_failed(res[q])) {
            failed = 1;
            pg_map_error(c, res[q], &e);
        }
        PQclear(res[q]);
    }
    for (int i = 0; i < m; i++) {
        spec_job_t *sj = &sp->jobs[idx[i]];
        PGresult *sv = per == 2 ? res[front + 2 * i] : NULL, *st = res[front + per * i + per - 1];
        if (failed || (sv != NULL && pg_result_failed(sv)) || PQresultStatus(st) == PGRES_PIPELINE_ABORTED) {
            PQclear(sv);
            PQclear(st);
            continue; /* not done: still to be sent */
        }
        PQclear(sv);
        sj->sent = 1;
        sj->resend = 0;
        sj->failed = pg_result_failed(st);
        PQclear(sj->res);
        sj->res = st;
    }
    if (sp->reads) {
        PQclear(res[front + per * m]); /* the COMMIT, skipped after a failed read */
        if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
            /* A read failed: the rest, COMMIT included, was skipped and the
             * transaction stands aborted; it ends here, or the connection goes. */
            bs_error_t ignored;
            bs_error_init(&ignored);
            if (pg_simple(c, "ROLLBACK", &ignored) != 0 || PQtransactionStatus(c->pg) != PQTRANS_IDLE)
                pg_close_conn(c);
        }
    }
    if (failed)
        pg_spec_break(sp, &e);
}

/* Makes coros[0..n) where missing; 0 (and *failed set, for good) when memory lacks:
 * the jobs then run one after another. */
int pg_coros_ready(coro_t **coros, int n, int *failed)
{
    if (*failed)
        return 0;
    for (int i = 0; i < n; i++) {
        if (coros[i] == NULL && (coros[i] = coro_new(SPEC_STACK)) == NULL) {
            LOGF(LOG_WARN, "store", "no memory for coroutines: statements go one round trip at a time");
            *failed = 1;
            return 0;
        }
    }
    return 1;
}

/* The number of jobs from j on that run_batch may run as one pipelined run (ADR
 * 0021): consecutive pipelinable jobs, at most SPEC_MAX; with their coroutines made. */
int pg_segment_len(pg_store_t *s, const store_job_t *j)
{
    int n = 0;
    while (j != NULL && n < SPEC_MAX && j->pipelinable && !j->unshared) {
        n++;
        j = j->next_in_queue;
    }
    return n >= 2 && pg_coros_ready(s->coros, n, &s->coros_failed) ? n : 0;
}

static void spec_entry(void *arg)
{
    spec_job_t *sj = arg;
    sj->status = sj->job->run(sj->job, &sj->conn->base);
}

/* Sets sp up for jobs first.. (n of them, on c, coroutines coros[0..n)) and runs each
 * up to its first statement (held, not sent) or its end. */
static void spec_start(spec_t *sp, pg_conn_t *c, store_job_t *first, int n, coro_t **coros, int reads)
{
    sp->n = n;
    sp->cur = -1;
    sp->broken = sp->retried = sp->sent_any = sp->failures = sp->sequential = 0;
    sp->reads = reads;
    bs_error_init(&sp->err);
    store_job_t *j = first;
    for (int i = 0; i < n; i++, j = j->next_in_queue) {
        sp->jobs[i] = (spec_job_t){.job = j, .conn = c, .co = coros[i], .status = -1};
        snprintf(sp->set[i], sizeof(sp->set[i]), "SAVEPOINT sp%d", i);
        snprintf(sp->undo[i], sizeof(sp->undo[i]), "ROLLBACK TO SAVEPOINT sp%d", i);
    }
    c->spec = sp;
    sp->deferring = 1;
    for (int i = 0; i < n; i++) {
        spec_job_t *sj = &sp->jobs[i];
        coro_start(sj->co, spec_entry, sj);
        sp->cur = i;
        sj->done = coro_resume(sj->co);
        sp->cur = -1;
    }
    sp->deferring = 0;
}

/* Runs jobs first.. (n of them, pipelinable) inside run_batch's transaction as if one
 * after another (ADR 0021): each as a coroutine up to its first statement, those
 * statements in one pipeline (a savepoint before each), then each job resumed in
 * order with its result. A job that fails after its statement ran, or sends another
 * statement, undoes the statements done ahead of it (ROLLBACK TO the next job's
 * savepoint), which are then sent again: every statement sees exactly the jobs
 * before it. Leaves each job's status and err; returns 0, or -1 with err when the
 * transaction cannot commit. */
int pg_run_segment(pg_store_t *s, store_job_t *first, int n, bs_error_t *err)
{
    pg_conn_t *c = &s->writer;
    spec_t *sp = &s->spec;
    if (pg_later_flush(c, err) != 0)
        return -1;
    spec_start(sp, c, first, n, s->coros, 0);
    spec_send(c, sp, 0);
    for (int k = 0; k < n; k++) {
        spec_job_t *sj = &sp->jobs[k];
        store_job_t *jb = sj->job;
        if (!sj->done) {
            sp->cur = k;
            sj->done = coro_resume(sj->co);
            sp->cur = -1;
            assert(sj->done); /* its further statements ran at once */
        }
        jb->status = sj->status;
        if (!sp->broken && pg_conn_lost(c)) {
            bs_error_t e;
            bs_error_init(&e);
            bs_error_set(&e, BS_ERR_UNAVAILABLE, "The database at %s is unreachable; please retry.",
                         s->where);
            pg_spec_break(sp, &e);
        }
        if (sp->broken) {
            if (jb->status == 0 || jb->err.code == BS_ERR_OK) {
                jb->err = sp->err;
                jb->status = -1;
            }
            continue;
        }
        int aborted = sj->failed || (sj->second && PQtransactionStatus(c->pg) == PQTRANS_INERROR);
        if (jb->status == 0 && aborted) {
            LOGF(LOG_ERROR, "store", "a write job succeeded on a failed transaction; it is rolled back");
            jb->status = -1;
        }
        if (jb->status != 0) {
            if (jb->err.code == BS_ERR_OK)
                bs_error_set(&jb->err, BS_ERR_INTERNAL, NULL);
            jb->status = -1;
            if (sj->sent) {
                /* Its work goes, and with it what was done after its savepoint. */
                if (spec_undo(c, sp, k) != 0)
                    continue;
                sp->sequential |= !sj->failed; /* a late refusal undid work done ahead */
            }
        }
        /* Not into a transaction a later job's failed statement aborted: that job's
         * own rollback comes first. */
        for (int m = k + 1; m < n && PQtransactionStatus(c->pg) != PQTRANS_INERROR; m++)
            if (sp->jobs[m].waiting && sp->jobs[m].resend) {
                spec_send(c, sp, k + 1);
                break;
            }
    }
    c->spec = NULL;
    if (sp->sent_any)
        c->savepoint_due = 1; /* the next job gets a savepoint of its own */
    if (sp->broken) {
        *err = sp->err;
        return -1;
    }
    return 0;
}

/* After the writer's transaction: prepares the statements that pipelined jobs sent
 * unnamed, so that the next ones go by name. */
void pg_spec_prepare_sent(pg_conn_t *c, spec_t *sp)
{
    for (int i = 0; i < sp->nprepare; i++) {
        bs_error_t ignored;
        bs_error_init(&ignored);
        if (!pg_conn_lost(c) && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
            pg_prepared_name(c, sp->prepare[i], &ignored);
        free(sp->prepare[i]);
        sp->prepare[i] = NULL;
    }
    sp->nprepare = 0;
}

/* Runs a pool thread's share of point reads (n >= 2, on its primary connection) with
 * their first statements in one pipeline (ADR 0021): each job as a coroutine up to its
 * first statement; one BEGIN ... COMMIT round trip for all; each resumed in order with
 * its result, its further statements sent one by one. A read after a failed one was
 * not done (PostgreSQL skips to the Sync) and goes again; a lost connection is retried
 * once, then each read retries its statement itself as a read always may. */
void pg_run_reads_pipelined(pool_thread_t *t, store_job_t *batch, int n)
{
    pg_conn_t *c = &t->conn;
    spec_t *sp = &t->spec;
    bs_error_t ignored;
    bs_error_init(&ignored);
    pg_ensure_conn(c, &ignored); /* here, not on a coroutine's stack (a failure shows below) */
    spec_start(sp, c, batch, n, t->coros, 1);
    spec_send(c, sp, 0);
    for (int k = 0; k < n; k++) {
        spec_job_t *sj = &sp->jobs[k];
        if (!sj->done) {
            if (sj->resend && !sp->broken)
                spec_send(c, sp, k); /* it came after a read that failed */
            sp->cur = k;
            sj->done = coro_resume(sj->co);
            sp->cur = -1;
            assert(sj->done);
        }
        store_job_t *jb = sj->job;
        jb->status = sj->status == 0 ? 0 : -1;
        if (jb->status != 0 && jb->err.code == BS_ERR_OK)
            bs_error_set(&jb->err, BS_ERR_INTERNAL, NULL);
    }
    c->spec = NULL;
    pg_spec_prepare_sent(c, sp);
}
