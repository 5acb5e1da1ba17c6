/*
 * outbox — the realtime change log kept in the database (ADR 0006).
 *
 * Why in the database: an event that exists only in the memory of the instance that
 * committed it is lost when that instance dies between its commit and its publish,
 * and other instances never see it. Here the changes of a write job are rows of
 * `_events` inserted by the same transaction as the write, so they exist exactly
 * when the write does, on SQLite and PostgreSQL alike.
 *
 * Why a counter row: the offsets must follow commit order, or a reader that has read
 * up to offset N skips an N-1 that commits after it read (a sequence value taken at
 * insert time, Hasura's streaming-subscription bug). The transaction takes its
 * offsets with `UPDATE _events_seq SET n = n + k RETURNING n` just before it commits:
 * the row lock makes any other committer wait until this one has committed (or rolled
 * back, leaving no gap), so the committed offsets are always a gapless prefix.
 *
 * All state here is the writer thread's: the writer numbers its jobs' events, hands
 * them to the sink after the commit, reads other instances' events between batches
 * and prunes. The sink therefore sees every offset once, in order.
 */
#include <malloc.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "rules/dialect.h"
#include "store/store_backend.h"

#define READ_BATCH 500
#define PRUNE_BATCH 500
#define POLL_NS 1000000000ull

static const char SQL_TAKE[] = "UPDATE _events_seq SET n = n + ?1 WHERE k = 1 RETURNING n";
static const char SQL_INSERT[] =
    "INSERT INTO _events (off, coll, action, record, created) VALUES (?1, ?2, ?3, ?4, ?5)";
static const char SQL_READ[] =
    "SELECT off, coll, action, record, created FROM _events WHERE off > ?1 AND off <= ?2 "
    "ORDER BY off LIMIT 500";
static const char SQL_SEQ[] = "SELECT n, epoch FROM _events_seq WHERE k = 1";
static const char SQL_OLDEST[] = "SELECT off, created FROM _events ORDER BY off LIMIT 500";
static const char SQL_PRUNE[] = "DELETE FROM _events WHERE off <= ?1";
static const char SQL_FIRST_SINCE[] = "SELECT min(off) FROM _events WHERE created >= ?1";

#define OFFSET_MAX ((((uint64_t)1) << STORE_OUTBOX_OFFSET_BITS) - 1)

/* A change the realtime hub can publish (others are skipped by both, so that the
 * offsets stay consecutive). */
static int valid_change(json_t *c, json_t **rec)
{
    *rec = json_object_get(c, "record");
    return json_is_string(json_object_get(c, "action")) &&
           json_is_string(json_object_get(c, "collectionId")) && json_is_object(*rec) &&
           json_is_string(json_object_get(*rec, "id"));
}

int store_outbox_enabled(const store_t *s)
{
    return s->outbox.enabled;
}

void store_outbox_external(store_t *s)
{
    __atomic_store_n(&s->outbox.external, 1, __ATOMIC_RELEASE);
    /* Heard on another thread (PostgreSQL's listener): the writer reads it now, not
     * at its next idle tick. On the writer's own tick (SQLite) it reads it next. */
    if (!store_on_writer(s))
        store_wake_writer(s);
}

/* Numbers job's n valid changes from last, the highest offset the counter gave them. */
static int number_changes(store_job_t *job, int64_t last, size_t n, int64_t now)
{
    if ((uint64_t)last > OFFSET_MAX) {
        bs_error_set(&job->err, BS_ERR_INTERNAL, "The realtime outbox has used every offset of its epoch.");
        return -1;
    }
    int64_t off = last - (int64_t)n + 1;
    json_t *rec, *ch;
    size_t i;
    json_array_foreach(job->events, i, ch)
    {
        if (!valid_change(ch, &rec))
            continue;
        json_object_set_new(ch, "offset", json_integer(off));
        json_object_set_new(ch, "time", json_integer(now));
        off++;
    }
    return 0;
}

/* The valid changes among a job's events. */
static size_t count_changes(store_job_t *job)
{
    json_t *rec, *ch;
    size_t i, n = 0;
    json_array_foreach(job->events, i, ch) n += valid_change(ch, &rec);
    return n;
}

/* The valid changes of a job that succeeded (0 for one that failed). */
static size_t job_changes(store_job_t *job)
{
    return job->status != 0 || job->events == NULL ? 0 : count_changes(job);
}

/* The one row of outbox_append_sql's answer: the last offset taken and the time, once
 * the statement inserted exactly the expected events. */
static int read_appended(store_stmt_t *st, size_t expected, int64_t *last, int64_t *now, bs_error_t *err)
{
    int rc = store_step(st, err);
    if (rc != 1) {
        if (rc == 0)
            bs_error_set(err, BS_ERR_INTERNAL, "The realtime outbox's counter row (_events_seq) is missing.");
        return -1;
    }
    int64_t inserted = store_col(st, 1).i;
    *last = store_col(st, 0).i;
    *now = store_col(st, 2).i;
    if (inserted != (int64_t)expected) {
        bs_error_set(err, BS_ERR_INTERNAL, "The realtime outbox stored %lld of %zu events.",
                     (long long)inserted, expected);
        return -1;
    }
    return 0;
}

/* The answer of outbox_append_sql (store_exec_later) for one job: the offsets given,
 * numbered onto the job's changes. */
static int appended(void *arg, store_stmt_t *st, bs_error_t *err)
{
    store_job_t *job = arg;
    size_t n = count_changes(job);
    int64_t last, now;
    if (read_appended(st, n, &last, &now, err) != 0)
        return -1;
    return number_changes(job, last, n, now);
}

/* The answer of the batch's one outbox statement: the offsets numbered onto each
 * succeeded job's changes, in job order. */
static int appended_jobs(void *arg, store_stmt_t *st, bs_error_t *err)
{
    store_job_t *jobs = arg;
    size_t total = 0;
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue)
        total += job_changes(j);
    int64_t last, now;
    if (read_appended(st, total, &last, &now, err) != 0)
        return -1;
    int64_t first = last - (int64_t)total + 1;
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue) {
        size_t n = job_changes(j);
        if (n == 0)
            continue;
        if (number_changes(j, first + (int64_t)n - 1, n, now) != 0) {
            *err = j->err;
            return -1;
        }
        first += (int64_t)n;
    }
    return 0;
}

/* Appends job's valid changes to rows as outbox_append_sql's [collectionId, action,
 * record JSON] triples; returns -1 when out of memory. */
static int add_rows(json_t *rows, store_job_t *job)
{
    json_t *rec, *ch;
    size_t i;
    json_array_foreach(job->events, i, ch)
    {
        if (!valid_change(ch, &rec))
            continue;
        char *text = json_dumps(rec, JSON_COMPACT);
        json_t *row = text ? json_pack("[O, O, s]", json_object_get(ch, "collectionId"),
                                       json_object_get(ch, "action"), text)
                           : NULL;
        free(text);
        if (row == NULL || json_array_append_new(rows, row) != 0)
            return -1;
    }
    return 0;
}

/* The offsets and the rows in one statement (the dialect's outbox_append_sql), sent
 * with the writer's next statement or before its COMMIT (store_exec_later): on
 * PostgreSQL each statement of the one writer is a round trip, and a create's events
 * took two. The counter row's lock is taken as before, so offsets still follow
 * commit order; the offsets are on the changes before the commit's hooks read them.
 * Takes rows (n of them; NULL when building them failed). */
static int send_rows(store_conn_t *c, const dialect_t *d, json_t *rows, size_t n, store_later_fn done,
                     void *arg, bs_error_t *err)
{
    char *payload = rows != NULL ? json_dumps(rows, JSON_COMPACT) : NULL;
    json_decref(rows);
    if (payload == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    bs_value_t p[3] = {bs_val_int((int64_t)n), bs_val_text(payload, strlen(payload)),
                       bs_val_int(util_now_ms())};
    int rc = store_exec_later(c, d->outbox_append_sql, p, 3, done, arg, err);
    free(payload);
    return rc;
}

static int append_one(store_conn_t *c, const dialect_t *d, store_job_t *job, size_t n)
{
    json_t *rows = json_array();
    if (rows != NULL && add_rows(rows, job) != 0) {
        json_decref(rows);
        rows = NULL;
    }
    return send_rows(c, d, rows, n, appended, job, &job->err);
}

int store_outbox_append_jobs(store_t *s, store_conn_t *c, store_job_t *jobs, bs_error_t *err)
{
    const dialect_t *d = dialect_get(store_conn_dialect(c));
    if (!s->outbox.enabled)
        return 0;
    if (d->outbox_append_sql == NULL) {
        for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue)
            if (j->status == 0 && store_outbox_append(s, c, j) != 0) {
                *err = j->err;
                return -1;
            }
        return 0;
    }
    size_t total = 0;
    json_t *rows = json_array();
    for (store_job_t *j = jobs; j != NULL && rows != NULL; j = j->next_in_queue) {
        size_t n = job_changes(j);
        if (n == 0)
            continue;
        if (add_rows(rows, j) != 0) {
            json_decref(rows);
            rows = NULL;
        }
        total += n;
    }
    if (rows != NULL && total == 0) {
        json_decref(rows);
        return 0;
    }
    return send_rows(c, d, rows, total, appended_jobs, jobs, err);
}

int store_outbox_append(store_t *s, store_conn_t *c, store_job_t *job)
{
    if (!s->outbox.enabled || job->events == NULL)
        return 0;
    size_t n = count_changes(job);
    if (n == 0)
        return 0;
    const dialect_t *d = dialect_get(store_conn_dialect(c));
    if (d->outbox_append_sql != NULL)
        return append_one(c, d, job, n);
    bs_value_t k = bs_val_int((int64_t)n);
    store_stmt_t *st = store_query(c, SQL_TAKE, &k, 1, &job->err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, &job->err);
    int64_t last = rc == 1 ? store_col(st, 0).i : -1;
    store_done(st);
    if (rc != 1) {
        if (rc == 0)
            bs_error_set(&job->err, BS_ERR_INTERNAL,
                         "The realtime outbox's counter row (_events_seq) is missing.");
        return -1;
    }
    int64_t now = util_now_ms();
    if (number_changes(job, last, n, now) != 0)
        return -1;
    json_t *rec, *ch;
    size_t i;
    json_array_foreach(job->events, i, ch)
    {
        if (!valid_change(ch, &rec))
            continue;
        char *text = json_dumps(rec, JSON_COMPACT);
        if (text == NULL) {
            bs_error_set(&job->err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        const char *coll = json_string_value(json_object_get(ch, "collectionId"));
        const char *act = json_string_value(json_object_get(ch, "action"));
        bs_value_t p[5] = {bs_val_int(json_integer_value(json_object_get(ch, "offset"))),
                           bs_val_text(coll, strlen(coll)), bs_val_text(act, strlen(act)),
                           bs_val_text(text, strlen(text)), bs_val_int(now)};
        int64_t r = store_exec(c, SQL_INSERT, p, 5, &job->err);
        free(text);
        if (r < 0)
            return -1; /* the transaction rolls back: the offsets set above go with the job */
    }
    return 0;
}

/* Reads the events after s->outbox.delivered up to upto and hands them to the sink.
 * Returns 0, or -1 when the database could not be read (the next tick tries again). */
static int read_events(store_t *s, store_conn_t *c, uint64_t upto, int history)
{
    while (s->outbox.delivered < upto) {
        bs_error_t err;
        bs_error_init(&err);
        bs_value_t p[2] = {bs_val_int((int64_t)s->outbox.delivered), bs_val_int((int64_t)upto)};
        store_stmt_t *st = store_query(c, SQL_READ, p, 2, &err);
        if (st == NULL) {
            LOGF(LOG_WARN, "outbox", "cannot read the realtime outbox: %s", err.message);
            return -1;
        }
        json_t *arr = json_array();
        size_t rows = 0;
        uint64_t last = s->outbox.delivered;
        int rc;
        while ((rc = store_step(st, &err)) == 1) {
            rows++;
            uint64_t off = (uint64_t)store_col(st, 0).i;
            bs_value_t coll = store_col(st, 1), act = store_col(st, 2), text = store_col(st, 3);
            int64_t created = store_col(st, 4).i;
            json_t *rec = text.type == BS_VAL_TEXT ? json_loadb(text.s, text.n, 0, NULL) : NULL;
            if (off != last + 1 && !history)
                LOGF(LOG_WARN, "outbox",
                     "realtime events %llu to %llu were pruned before this instance read them; clients that "
                     "resume from before them are told to resync",
                     (unsigned long long)last + 1, (unsigned long long)off - 1);
            last = off;
            json_t *rid = json_object_get(rec, "id");
            if (rec == NULL || coll.type != BS_VAL_TEXT || act.type != BS_VAL_TEXT || !json_is_string(rid)) {
                json_decref(rec);
                continue; /* unreadable: the hub sees a hole, resuming clients resync */
            }
            if (history) {
                /* The resume history stays text until a resuming client needs it
                 * (rt_event_record): parsed here only to check it and for its id,
                 * 10,000 retained events held as objects were about 16 MiB. */
                json_t *ch =
                    json_pack("{s:s%, s:s%, s:s%, s:O, s:I, s:I}", "action", act.s, act.n, "collectionId",
                              coll.s, coll.n, "recordText", text.s, text.n, "recordId", rid, "offset",
                              (json_int_t)off, "time", (json_int_t)created);
                json_decref(rec);
                json_array_append_new(arr, ch);
                continue;
            }
            json_array_append_new(arr, json_pack("{s:s%, s:s%, s:o, s:I, s:I}", "action", act.s, act.n,
                                                 "collectionId", coll.s, coll.n, "record", rec, "offset",
                                                 (json_int_t)off, "time", (json_int_t)created));
        }
        store_done(st);
        if (rc < 0) {
            LOGF(LOG_WARN, "outbox", "cannot read the realtime outbox: %s", err.message);
            json_decref(arr);
            return -1;
        }
        s->outbox.delivered = last;
        if (json_array_size(arr) > 0 && s->outbox.cfg.sink != NULL)
            s->outbox.cfg.sink(arr, history);
        else
            json_decref(arr);
        if (rows < READ_BATCH)
            break;
    }
    return 0;
}

/* The offset of the first numbered change of events, or 0. */
static uint64_t first_offset(json_t *events, uint64_t *lastp)
{
    uint64_t first = 0, last = 0;
    json_t *ch;
    size_t i;
    json_array_foreach(events, i, ch)
    {
        json_t *o = json_object_get(ch, "offset");
        if (!json_is_integer(o))
            continue;
        uint64_t v = (uint64_t)json_integer_value(o);
        if (first == 0)
            first = v;
        last = v;
    }
    *lastp = last;
    return first;
}

void store_outbox_committed(store_t *s, store_job_t *jobs)
{
    if (!s->outbox.enabled)
        return;
    for (store_job_t *j = jobs; j != NULL; j = j->next_in_queue) {
        uint64_t last, first = j->status == 0 && j->events ? first_offset(j->events, &last) : 0;
        if (first == 0 || last <= s->outbox.delivered)
            continue;
        /* Other instances committed in between: theirs first, in order. Should that
         * read fail, ours still go out; the hub sees a hole (resumes across it resync). */
        if (first > s->outbox.delivered + 1 && read_events(s, s->ops->writer(s), first - 1, 0) != 0)
            LOGF(LOG_WARN, "outbox",
                 "realtime events %llu to %llu of other instances were not delivered here",
                 (unsigned long long)s->outbox.delivered + 1, (unsigned long long)first - 1);
        s->outbox.delivered = last;
        if (s->outbox.cfg.sink != NULL)
            s->outbox.cfg.sink(json_incref(j->events), 0);
    }
}

/* Deletes the oldest events that are past the window or the count, a batch at a
 * time and only as a prefix (offsets stay consecutive for readers). */
static void prune(store_t *s, store_conn_t *c)
{
    bs_error_t err;
    bs_error_init(&err);
    uint64_t count_cut = s->outbox.delivered > (uint64_t)s->outbox.cfg.max_events
                             ? s->outbox.delivered - (uint64_t)s->outbox.cfg.max_events
                             : 0;
    /* At least 10 s whatever the resume window: other instances must read a row before
     * it goes, or their live subscribers miss it (a window of 0 means no resume, not
     * no delivery). */
    int64_t keep_ms = s->outbox.cfg.window_ms > 10000 ? s->outbox.cfg.window_ms : 10000;
    int64_t time_cut = util_now_ms() - keep_ms;
    store_stmt_t *st = store_query(c, SQL_OLDEST, NULL, 0, &err);
    if (st == NULL)
        return;
    uint64_t cut = 0;
    size_t n = 0;
    int stop = 0;
    while (store_step(st, &err) == 1) {
        if (stop)
            continue;
        uint64_t off = (uint64_t)store_col(st, 0).i;
        int64_t created = store_col(st, 1).i;
        if (off <= count_cut || created < time_cut) {
            cut = off;
            n++;
        } else {
            stop = 1;
        }
    }
    store_done(st);
    s->outbox.prune_again = n == PRUNE_BATCH;
    if (cut == 0)
        return;
    bs_value_t p = bs_val_int((int64_t)cut);
    if (store_exec(c, SQL_PRUNE, &p, 1, &err) < 0)
        LOGF(LOG_WARN, "outbox", "cannot prune the realtime outbox: %s", err.message);
}

void store_outbox_tick(store_t *s)
{
    if (!s->outbox.enabled)
        return;
    uint64_t now = util_mono_ns();
    store_conn_t *c = s->ops->writer(s);
    int external = __atomic_exchange_n(&s->outbox.external, 0, __ATOMIC_ACQ_REL);
    if (external || now - s->outbox.last_poll_ns >= POLL_NS) {
        s->outbox.last_poll_ns = now;
        read_events(s, c, OFFSET_MAX, 0);
    }
    if (s->outbox.cfg.tick != NULL)
        s->outbox.cfg.tick(c, external);
    if (s->outbox.prune_again || now - s->outbox.last_prune_ns >= POLL_NS) {
        s->outbox.last_prune_ns = now;
        prune(s, c);
    }
}

typedef struct {
    store_job_t job;
    int64_t new_epoch;
    int64_t n, epoch;
    int64_t since_ms;        /* the resume window's start */
    int64_t first_in_window; /* the oldest retained event no older than since_ms; 0: none */
} open_job_t;

static int run_open(store_job_t *job, store_conn_t *c)
{
    open_job_t *o = (open_job_t *)job;
    const dialect_t *d = dialect_get(store_conn_dialect(c));
    /* Instances opening a fresh database's outbox together take turns (dialect.h). */
    if (d->ddl_lock_sql != NULL && store_exec_script(c, d->ddl_lock_sql, &job->err) != 0)
        return -1;
    if (store_exec_script(c, d->outbox_sql, &job->err) != 0)
        return -1;
    bs_value_t p = bs_val_int(o->new_epoch);
    if (store_exec(c, d->outbox_seed_sql, &p, 1, &job->err) < 0)
        return -1;
    store_stmt_t *st = store_query(c, SQL_SEQ, NULL, 0, &job->err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, &job->err);
    if (rc == 1) {
        o->n = store_col(st, 0).i;
        o->epoch = store_col(st, 1).i;
    }
    store_done(st);
    if (rc == 0)
        bs_error_set(&job->err, BS_ERR_INTERNAL,
                     "The realtime outbox's counter row (_events_seq) is missing.");
    if (rc != 1)
        return -1;
    /* Events older than the resume window are kept for other instances a while, but
     * no client resumes from them: they are not loaded (the hub would drop them). */
    bs_value_t since = bs_val_int(o->since_ms);
    st = store_query(c, SQL_FIRST_SINCE, &since, 1, &job->err);
    if (st == NULL)
        return -1;
    rc = store_step(st, &job->err);
    bs_value_t v = rc == 1 ? store_col(st, 0) : bs_val_null();
    o->first_in_window = v.type == BS_VAL_INT ? v.i : 0;
    store_done(st);
    return rc < 0 ? -1 : 0;
}

int store_outbox_open(store_t *s, const store_outbox_config_t *cfg, uint32_t *epoch, bs_error_t *err)
{
    arena_t a;
    arena_init(&a, 1024);
    uint32_t rnd;
    util_random_bytes(&rnd, sizeof(rnd));
    /* 19 bits: with 44 bits of offset an event id stays below 2^63 (a JSON-safe
     * decimal for every client that parses it as a signed 64-bit integer). */
    open_job_t o = {.job = {.arena = &a, .run = run_open},
                    .new_epoch = (rnd % ((1u << 19) - 1)) + 1,
                    .since_ms = util_now_ms() - cfg->window_ms};
    int rc = store_write_sync(s, &o.job);
    if (rc != 0) {
        *err = o.job.err;
        err->fields = NULL;
        arena_free(&a);
        return -1;
    }
    arena_free(&a);
    if (o.epoch <= 0 || o.epoch >= (1 << 19) || o.n < 0) {
        bs_error_set(err, BS_ERR_INTERNAL,
                     "The realtime outbox's counter row (_events_seq) holds bad values.");
        return -1;
    }
    s->outbox.cfg = *cfg;
    s->outbox.epoch = (uint32_t)o.epoch;
    *epoch = s->outbox.epoch;
    /* The retained events become the resume history; none is delivered live. */
    uint64_t n = (uint64_t)o.n;
    s->outbox.delivered =
        cfg->max_events > 0 && n > (uint64_t)cfg->max_events ? n - (uint64_t)cfg->max_events : 0;
    /* Nothing in the window: none loaded; else from the first event in it. */
    uint64_t from = o.first_in_window > 0 ? (uint64_t)o.first_in_window - 1 : n;
    if (from > s->outbox.delivered)
        s->outbox.delivered = from;
    if (cfg->position != NULL)
        cfg->position(s->outbox.epoch, s->outbox.delivered);
    if (read_events(s, s->ops->writer(s), OFFSET_MAX, 1) != 0) {
        bs_error_set(err, BS_ERR_UNAVAILABLE, "Cannot read the realtime outbox (_events).");
        return -1;
    }
    if (s->outbox.delivered < n)
        s->outbox.delivered = n;
    if (cfg->position != NULL)
        cfg->position(s->outbox.epoch, s->outbox.delivered);
    s->outbox.last_poll_ns = s->outbox.last_prune_ns = util_mono_ns();
    s->outbox.enabled = 1;
    /* Each row was parsed (its check, its id) and freed at once: give the heap those
     * pages back rather than hold them for the server's life. */
    malloc_trim(0);
    return 0;
}
