/*
 * `basalt db copy`, step 4 (see dbcopy.c's opening): the records of one collection,
 * read from the source's snapshot in insertion order a batch at a time (a stepped
 * statement or a cursor), written as one destination transaction of multi-row
 * INSERTs that skip ids already there, resumed after an interruption; and the
 * progress bar or lines it shows meanwhile.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/dbcopy_int.h"
#include "base/util.h"

/* Rows per INSERT statement: SQLite allows 32,766 parameters, PostgreSQL 65,535. */
#define MAX_STMT_ROWS 500
#define MAX_STMT_PARAMS 30000

/* ---- progress ---- */

typedef struct {
    int mode;
    const char *name;
    int64_t done, total;
    uint64_t started_ns, last_ns;
    int drawn; /* the bar is on the terminal's current line */
} progress_t;

static void progress_start(progress_t *p, int mode, const char *name, int64_t done, int64_t total)
{
    p->mode = mode;
    p->name = name;
    p->done = done;
    p->total = total;
    p->started_ns = p->last_ns = util_mono_ns();
    p->drawn = 0;
}

static double rate(const progress_t *p, int64_t copied)
{
    double s = (double)(util_mono_ns() - p->started_ns) / 1e9;
    return s > 1e-6 ? (double)copied / s : 0;
}

/* copied: rows handled by this run (for the rate). final: the collection is done. */
static void progress_show(progress_t *p, int64_t copied, int final)
{
    if (p->mode == DBCOPY_PROGRESS_OFF)
        return;
    uint64_t now = util_mono_ns();
    uint64_t every = p->mode == DBCOPY_PROGRESS_BAR ? 100000000u : 2000000000u;
    if (!final && now - p->last_ns < every)
        return;
    p->last_ns = now;
    char a[32], b[32], r[32];
    int pct = p->total > 0 ? (int)(p->done * 100 / p->total) : 100;
    if (pct > 100)
        pct = 100;
    dbcopy_fmt_n(p->done, a);
    dbcopy_fmt_n(p->total, b);
    dbcopy_fmt_n((int64_t)rate(p, copied), r);
    if (p->mode == DBCOPY_PROGRESS_BAR) {
        char bar[31];
        int fill = pct * 30 / 100;
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r\033[K%-24.24s [%s] %3d%%  %s/%s rows  %s rows/s", p->name, bar, pct, a, b, r);
        if (final)
            fputc('\n', stderr);
        p->drawn = !final;
    } else {
        fprintf(stderr, "%s: %s/%s rows (%d%%), %s rows/s%s\n", p->name, a, b, pct, r, final ? ", done" : "");
    }
    fflush(stderr);
}

/* Ends the bar's line before another message. */
static void progress_break(progress_t *p)
{
    if (p->mode == DBCOPY_PROGRESS_BAR && p->drawn) {
        fputc('\n', stderr);
        p->drawn = 0;
    }
}

/* ---- the records step ---- */

typedef struct {
    store_job_t job;
    const collection_t *c;
    const char *key_col; /* quoted "id" */
    bs_value_t *vals;    /* nrows * ncols, text in the batch's arena */
    size_t nrows, ncols;
    int64_t inserted;
} batch_job_t;

static void insert_sql(buf_t *b, const dialect_t *d, const collection_t *c, size_t rows)
{
    buf_puts(b, "INSERT INTO ");
    sql_ident(b, c->name);
    buf_puts(b, " (");
    for (size_t i = 0; i < c->nfields; i++) {
        if (i)
            buf_puts(b, ", ");
        sql_ident(b, c->fields[i].name);
    }
    buf_puts(b, ") VALUES ");
    size_t n = 1;
    for (size_t r = 0; r < rows; r++) {
        buf_puts(b, r ? ", (" : "(");
        for (size_t i = 0; i < c->nfields; i++) {
            if (i)
                buf_puts(b, ", ");
            dialect_placeholder(d, b, n++);
        }
        buf_putc(b, ')');
    }
    /* A partitioned table's key is (id, partition field): the only unique index an
     * ON CONFLICT can name there (ids stay unique through the id table's trigger). */
    const field_t *pf =
        c->partition_interval != PART_NONE ? collection_field_by_id(c, c->partition_field_id) : NULL;
    buf_t key;
    buf_init(&key, b->arena);
    buf_puts(&key, "\"id\"");
    if (pf != NULL) {
        buf_puts(&key, ", ");
        sql_ident(&key, pf->name);
    }
    buf_printf(b, d->insert_ignore_fmt, key.oom ? "\"id\"" : key.data);
    if (b->arena == NULL)
        buf_free(&key);
}

static int batch_run(store_job_t *job, store_conn_t *conn)
{
    batch_job_t *j = (batch_job_t *)job;
    const dialect_t *d = dialect_get(store_conn_dialect(conn));
    size_t per = MAX_STMT_PARAMS / (j->ncols ? j->ncols : 1);
    if (per > MAX_STMT_ROWS)
        per = MAX_STMT_ROWS;
    if (per < 1)
        per = 1;
    j->inserted = 0;
    for (size_t at = 0; at < j->nrows; at += per) {
        size_t n = j->nrows - at < per ? j->nrows - at : per;
        buf_t sql;
        buf_init(&sql, job->arena);
        insert_sql(&sql, d, j->c, n);
        if (sql.oom) {
            bs_error_set(&job->err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        int64_t k = store_exec(conn, sql.data, j->vals + at * j->ncols, n * j->ncols, &job->err);
        if (k < 0)
            return -1;
        j->inserted += k;
    }
    return 0;
}

/* The source's rows of one collection after insertion-order key `after`, a batch at
 * a time: a stepped statement (SQLite) or a cursor (PostgreSQL). */
typedef struct {
    dbcopy_end_t *e;
    store_stmt_t *st; /* stepped statement, or NULL */
    int cursor_open;
    char fetch[128];
    int done;
} scan_t;

static int scan_open(scan_t *s, dbcopy_end_t *e, const collection_t *c, int64_t after, int batch,
                     bs_error_t *err)
{
    memset(s, 0, sizeof(*s));
    s->e = e;
    buf_t q;
    buf_init(&q, NULL);
    buf_printf(&q, "SELECT %s", e->d->rowid);
    for (size_t i = 0; i < c->nfields; i++) {
        buf_puts(&q, ", ");
        sql_ident(&q, c->fields[i].name);
    }
    buf_puts(&q, " FROM ");
    sql_ident(&q, c->name);
    buf_printf(&q, " WHERE %s > %lld ORDER BY %s", e->d->rowid, (long long)after, e->d->rowid);
    int rc = 0;
    if (q.oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        rc = -1;
    } else if (e->d->cursor_open_fmt != NULL) {
        buf_t open;
        buf_init(&open, NULL);
        buf_printf(&open, e->d->cursor_open_fmt, "\"_dbcopy\"", q.data);
        rc = open.oom ? -1 : store_exec_script(e->rd, open.data, err);
        buf_free(&open);
        s->cursor_open = rc == 0;
        snprintf(s->fetch, sizeof(s->fetch), e->d->cursor_fetch_fmt, batch, "\"_dbcopy\"");
    } else {
        s->st = store_query(e->rd, q.data, NULL, 0, err);
        rc = s->st == NULL ? -1 : 0;
    }
    buf_free(&q);
    return rc;
}

static void scan_close(scan_t *s)
{
    store_done(s->st);
    s->st = NULL;
    if (s->cursor_open) {
        char sql[64];
        snprintf(sql, sizeof(sql), s->e->d->cursor_close_fmt, "\"_dbcopy\"");
        bs_error_t ignored;
        bs_error_init(&ignored);
        store_exec_script(s->e->rd, sql, &ignored);
        s->cursor_open = 0;
    }
}

/* Copies one row's cells (after the key in column 0) into vals, text into a. */
static int take_row(store_stmt_t *st, size_t ncols, bs_value_t *vals, int64_t *key, arena_t *a)
{
    bs_value_t k = store_col(st, 0);
    *key = k.type == BS_VAL_INT ? k.i : k.type == BS_VAL_DOUBLE ? (int64_t)k.d : 0;
    for (size_t i = 0; i < ncols; i++) {
        bs_value_t v = store_col(st, (int)i + 1);
        if (v.type == BS_VAL_TEXT) {
            char *copy = arena_alloc(a, v.n + 1);
            if (copy == NULL)
                return -1;
            if (v.n)
                memcpy(copy, v.s, v.n);
            copy[v.n] = '\0';
            v.s = copy;
        }
        vals[i] = v;
    }
    return 0;
}

/* Reads up to max rows into vals; returns the count, or -1 (err filled). */
static long scan_next(scan_t *s, size_t ncols, size_t max, bs_value_t *vals, int64_t *last_key, arena_t *a,
                      bs_error_t *err)
{
    if (s->done)
        return 0;
    size_t n = 0;
    if (s->st != NULL) {
        while (n < max) {
            int rc = store_step(s->st, err);
            if (rc < 0)
                return -1;
            if (rc == 0) {
                s->done = 1;
                break;
            }
            if (take_row(s->st, ncols, vals + n * ncols, last_key, a) != 0) {
                bs_error_set(err, BS_ERR_NOMEM, NULL);
                return -1;
            }
            n++;
        }
        return (long)n;
    }
    store_stmt_t *st = store_query(s->e->rd, s->fetch, NULL, 0, err);
    if (st == NULL)
        return -1;
    int rc;
    while (n < max && (rc = store_step(st, err)) == 1) {
        if (take_row(st, ncols, vals + n * ncols, last_key, a) != 0) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            store_done(st);
            return -1;
        }
        n++;
    }
    store_done(st);
    if (n < max)
        s->done = 1;
    return (long)n;
}

/* Where to resume: the source's insertion-order key of the last row the destination
 * holds, when every source row up to it is there (then *have is their number);
 * otherwise 0 and the collection is read from the start. */
static int64_t resume_point(dbcopy_end_t *src, dbcopy_end_t *dst, const collection_t *c, int64_t dst_rows,
                            int64_t *have, bs_error_t *err)
{
    *have = 0;
    if (dst_rows <= 0)
        return 0;
    buf_t b;
    buf_init(&b, NULL);
    buf_puts(&b, "SELECT id FROM ");
    sql_ident(&b, c->name);
    buf_printf(&b, " ORDER BY %s DESC LIMIT 1", dst->d->rowid);
    char id[256] = "";
    store_stmt_t *st = b.oom ? NULL : store_query(dst->rd, b.data, NULL, 0, err);
    buf_free(&b);
    if (st == NULL)
        return -1;
    if (store_step(st, err) == 1) {
        bs_value_t v = store_col(st, 0);
        if (v.type == BS_VAL_TEXT && v.n < sizeof(id))
            snprintf(id, sizeof(id), "%.*s", (int)v.n, v.s);
    }
    store_done(st);
    if (id[0] == '\0')
        return 0;
    buf_init(&b, NULL);
    buf_printf(&b, "SELECT %s FROM ", src->d->rowid);
    sql_ident(&b, c->name);
    buf_puts(&b, " WHERE id = ?1");
    bs_value_t p = bs_val_text(id, strlen(id));
    bs_error_t nf;
    bs_error_init(&nf);
    int64_t key = b.oom ? -1 : dbcopy_query_int(src->rd, b.data, &p, 1, &nf);
    buf_free(&b);
    if (key < 0)
        return 0; /* not in the source: read everything again */
    buf_init(&b, NULL);
    buf_puts(&b, "SELECT count(*) FROM ");
    sql_ident(&b, c->name);
    buf_printf(&b, " WHERE %s <= ?1", src->d->rowid);
    bs_value_t k = bs_val_int(key);
    int64_t before = b.oom ? -1 : dbcopy_query_int(src->rd, b.data, &k, 1, err);
    buf_free(&b);
    if (before < 0)
        return -1;
    if (before != dst_rows)
        return 0;
    *have = before;
    return key;
}

/* Copies the records of c. Returns 0, 1 when interrupted, -1 after printing why. */
int dbcopy_copy_records(dbcopy_end_t *src, dbcopy_end_t *dst, const dbcopy_opts_t *o, const collection_t *c,
                        int64_t *inserted_out)
{
    bs_error_t err;
    bs_error_init(&err);
    int64_t total = dbcopy_count_rows(src, c->name, &err);
    if (total < 0) {
        dbcopy_fail("%s=%s: cannot count the records of \"%s\": %s", src->flag, src->where, c->name,
                    err.message);
        return -1;
    }
    int64_t dst_rows = dbcopy_count_rows(dst, c->name, &err);
    if (dst_rows < 0) {
        dbcopy_fail("%s=%s: cannot count the records of \"%s\": %s", dst->flag, dst->where, c->name,
                    err.message);
        return -1;
    }
    int64_t have = 0;
    int64_t after = resume_point(src, dst, c, dst_rows, &have, &err);
    if (after < 0) {
        dbcopy_fail("cannot find where to resume \"%s\": %s", c->name, err.message);
        return -1;
    }
    if (dst_rows > 0 && o->progress != DBCOPY_PROGRESS_OFF) {
        char a[32], b[32];
        if (after > 0)
            fprintf(stderr, "%s: resuming after %s rows already at the destination\n", c->name,
                    dbcopy_fmt_n(have, a));
        else if (dst_rows > 0)
            fprintf(
                stderr,
                "%s: the destination holds %s rows already; reading all %s again (existing ids are kept)\n",
                c->name, dbcopy_fmt_n(dst_rows, a), dbcopy_fmt_n(total, b));
    }
    progress_t pr;
    progress_start(&pr, o->progress, c->name, have, total);
    scan_t scan;
    if (scan_open(&scan, src, c, after, o->batch, &err) != 0) {
        dbcopy_fail("%s=%s: cannot read the records of \"%s\": %s", src->flag, src->where, c->name,
                    err.message);
        return -1;
    }
    size_t ncols = c->nfields;
    bs_value_t *vals = malloc((size_t)o->batch * (ncols ? ncols : 1) * sizeof(*vals));
    int rc = 0;
    int64_t copied = 0, inserted = 0;
    if (vals == NULL) {
        dbcopy_fail("out of memory for a batch of %d rows", o->batch);
        rc = -1;
    }
    while (rc == 0) {
        if (dbcopy_interrupted) {
            rc = 1;
            break;
        }
        arena_t a;
        arena_init(&a, 64 * 1024);
        int64_t last_key = after;
        long n = scan_next(&scan, ncols, (size_t)o->batch, vals, &last_key, &a, &err);
        if (n < 0) {
            progress_break(&pr);
            dbcopy_fail("%s=%s: cannot read the records of \"%s\": %s", src->flag, src->where, c->name,
                        err.message);
            arena_free(&a);
            rc = -1;
            break;
        }
        if (n == 0) {
            arena_free(&a);
            break;
        }
        batch_job_t job = {
            .job = {.run = batch_run, .arena = &a}, .c = c, .vals = vals, .nrows = (size_t)n, .ncols = ncols};
        if (store_write_sync(dst->store, &job.job) != 0) {
            progress_break(&pr);
            dbcopy_fail("%s=%s: cannot write the records of \"%s\" (none of this batch of %ld was kept): %s",
                        dst->flag, dst->where, c->name, n, job.job.err.message);
            arena_free(&a);
            rc = -1;
            break;
        }
        arena_free(&a);
        after = last_key;
        copied += n;
        inserted += job.inserted;
        pr.done += n;
        progress_show(&pr, copied, 0);
    }
    free(vals);
    scan_close(&scan);
    if (rc == 0) {
        pr.done = pr.done > total ? total : pr.done;
        progress_show(&pr, copied, 1);
    } else {
        progress_break(&pr);
    }
    if (rc == 1) {
        char a[32], b[32];
        fprintf(stderr,
                "basalt db copy: interrupted: %s of %s rows of \"%s\" copied; run the same command again "
                "to finish\n",
                dbcopy_fmt_n(pr.done, a), dbcopy_fmt_n(total, b), c->name);
    }
    *inserted_out += inserted;
    return rc;
}
