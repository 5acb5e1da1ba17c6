/* Webhooks and reminders queued with a record's write; see record_hooks.h. */
#include "core/record_hooks.h"

#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "core/record.h"
#include "jobs/jobs.h"
#include "mail/mail.h"
#include "settings/settings.h"
#include "webhooks/webhooks.h"

#define MAX_REMINDERS 8

/* "90s", "30m", "1h", "2d" (or a bare number of seconds) into ms; -1 if not one. */
static int64_t parse_before(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 12)
        return -1;
    int64_t mult = 1000;
    char unit = s[n - 1];
    if (unit == 's' || unit == 'm' || unit == 'h' || unit == 'd') {
        mult = unit == 's' ? 1000 : unit == 'm' ? 60000 : unit == 'h' ? 3600000 : 86400000;
        n--;
    }
    int64_t v;
    if (util_parse_i64(s, n, &v) != 0 || v < 0 || v > 366LL * 86400000 / mult)
        return -1;
    return v * mult;
}

int record_hooks_parse_reminders(const collection_t *c, const json_t *spec, const schema_t *s, json_t **out,
                                 arena_t *a, bs_error_t *err)
{
    *out = NULL;
    if (spec == NULL || json_is_null(spec))
        return 0;
    if (!json_is_array(spec) || json_array_size(spec) > MAX_REMINDERS) {
        bs_error_field(err, a, "reminders", "validation_invalid_reminders",
                       "Must be a list of at most 8 reminders.");
        return -1;
    }
    json_t *norm = json_array();
    size_t i;
    json_t *r;
    int bad = 0;
    json_array_foreach((json_t *)spec, i, r)
    {
        char path[64];
#define RERR(key, msg)                                                                                       \
    do {                                                                                                     \
        snprintf(path, sizeof(path), "reminders.%zu.%s", i, key);                                            \
        bs_error_field(err, a, arena_strdup(a, path), "validation_invalid_reminder", msg);                   \
        bad = 1;                                                                                             \
    } while (0)
        const char *field = json_string_value(json_object_get(r, "field"));
        const char *before = json_string_value(json_object_get(r, "before"));
        const char *mail = json_string_value(json_object_get(r, "mail"));
        const char *text = json_string_value(json_object_get(r, "text"));
        const field_t *f = field ? collection_field(c, field) : NULL;
        if (f == NULL || (f->type != FIELD_DATE && f->type != FIELD_AUTODATE))
            RERR("field", "Must name a date field of the collection.");
        int64_t ms = before ? parse_before(before) : 0;
        if (ms < 0)
            RERR("before", "A duration such as 90s, 30m, 1h or 2d (at most a year).");
        const field_t *m = mail ? collection_field(c, mail) : NULL;
        const collection_t *target = NULL;
        if (m != NULL && m->type == FIELD_RELATION && !field_is_multi(m))
            target = s ? schema_find(s, m->collection_id) : NULL;
        if (m == NULL || !(m->type == FIELD_EMAIL || (target != NULL && target->type == COLL_AUTH)))
            RERR("mail",
                 "Must name an email field, or a single relation to an auth collection, whose address gets "
                 "the reminder.");
        const field_t *tf = text ? collection_field(c, text) : NULL;
        if (text != NULL && (tf == NULL || (tf->type != FIELD_TEXT && tf->type != FIELD_EDITOR)))
            RERR("text", "Must name a text field (its value goes into the mail).");
        if (!bad)
            json_array_append_new(norm, json_pack("{s:s, s:s, s:s, s:s*}", "field", field, "before",
                                                  before ? before : "0s", "mail", mail, "text", text));
#undef RERR
    }
    if (bad || json_array_size(norm) == 0) {
        json_decref(norm);
        return bad ? -1 : 0;
    }
    *out = norm;
    return 0;
}

int record_hooks_wanted(const collection_t *c, const char *action)
{
    if (c->reminders != NULL)
        return 1;
    json_t *s = settings_get();
    int w = webhooks_wanted(s, c->name, action);
    json_decref(s);
    return w;
}

/* Deletes the reminders of record rid of c that have not run yet: every key
 * "reminder:<collection>:<record>:..." (a range, so any index and due time). */
static int cancel_reminders(store_conn_t *conn, const collection_t *c, const char *rid, bs_error_t *err)
{
    char lo[300], hi[300];
    snprintf(lo, sizeof(lo), "reminder:%s:%s:", c->id, rid);
    snprintf(hi, sizeof(hi), "reminder:%s:%s;", c->id, rid); /* ';' follows ':' */
    bs_value_t v[2] = {bs_val_text(lo, strlen(lo)), bs_val_text(hi, strlen(hi))};
    return store_exec(conn, "DELETE FROM _jobs WHERE state = 'ready' AND uniq >= ?1 AND uniq < ?2", v, 2,
                      err) < 0
               ? -1
               : 0;
}

int record_hooks_note(store_conn_t *conn, const schema_t *s, const collection_t *c, const char *action,
                      const json_t *rec, bs_error_t *err)
{
    (void)s;
    json_t *st = settings_get();
    int rc = webhooks_note(conn, st, c->name, action, rec, err);
    json_decref(st);
    if (rc != 0 || c->reminders == NULL)
        return rc;
    const char *rid = json_string_value(json_object_get(rec, "id"));
    if (rid == NULL)
        return 0;
    /* Moved or dropped: what was pending goes, what is due now is queued afresh. A
     * reminder already sent keeps its key (its due time is in it), so an update that
     * leaves the date alone sends nothing twice. */
    if (cancel_reminders(conn, c, rid, err) != 0)
        return -1;
    if (strcmp(action, "delete") == 0)
        return 0;
    int64_t now = util_now_ms();
    size_t i;
    json_t *r;
    json_array_foreach(c->reminders, i, r)
    {
        const char *date =
            json_string_value(json_object_get(rec, json_string_value(json_object_get(r, "field"))));
        int64_t due;
        if (date == NULL || date[0] == '\0' || util_parse_time(date, strlen(date), &due) != 0 || due <= now)
            continue; /* no date, or already past: nothing to remind of */
        int64_t at = due - parse_before(json_string_value(json_object_get(r, "before")));
        char key[320];
        snprintf(key, sizeof(key), "reminder:%s:%s:%zu:%lld", c->id, rid, i, (long long)due);
        json_t *p = json_pack("{s:s, s:s, s:i, s:I}", "collection", c->id, "record", rid, "index", (int)i,
                              "due", (json_int_t)due);
        jobs_opts_t o = {.run_at_ms = at > now ? at : now, .unique_key = key};
        rc = jobs_enqueue(conn, "reminder.send", p, &o, err);
        json_decref(p);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- the reminder job ---- */

typedef struct {
    store_job_t job;
    const json_t *payload;
    char error[256];
    int skipped;
} remind_t;

static int run_remind(store_job_t *job, store_conn_t *conn)
{
    remind_t *r = (remind_t *)job;
    schema_t *s = schema_acquire();
    const collection_t *c =
        s ? schema_find(s, json_string_value(json_object_get(r->payload, "collection")) ?: "") : NULL;
    json_t *spec =
        c && c->reminders
            ? json_array_get(c->reminders, (size_t)json_integer_value(json_object_get(r->payload, "index")))
            : NULL;
    json_t *rec = NULL, *to_rec = NULL;
    int rc = 0;
    if (spec == NULL) {
        r->skipped = 1; /* the collection or its reminder is gone */
        goto out;
    }
    bs_error_t lerr;
    bs_error_init(&lerr);
    rec = record_load(conn, c, "id", json_string_value(json_object_get(r->payload, "record")) ?: "", &lerr);
    const char *date =
        rec ? json_string_value(json_object_get(rec, json_string_value(json_object_get(spec, "field"))))
            : NULL;
    int64_t due;
    if (rec == NULL || date == NULL || util_parse_time(date, strlen(date), &due) != 0 ||
        due != json_integer_value(json_object_get(r->payload, "due"))) {
        r->skipped = 1; /* deleted or moved since (its new reminder is queued) */
        goto out;
    }
    const field_t *m = collection_field(c, json_string_value(json_object_get(spec, "mail")));
    const char *to = NULL;
    if (m != NULL && m->type == FIELD_EMAIL) {
        to = json_string_value(json_object_get(rec, m->name));
    } else if (m != NULL && m->type == FIELD_RELATION) {
        const collection_t *t = schema_find(s, m->collection_id);
        const char *ref = json_string_value(json_object_get(rec, m->name));
        to_rec = t && ref && ref[0] ? record_load(conn, t, "id", ref, &lerr) : NULL;
        to = to_rec ? json_string_value(json_object_get(to_rec, "email")) : NULL;
    }
    if (to == NULL || !mail_valid_address(to, strlen(to))) {
        r->skipped = 1;
        snprintf(r->error, sizeof(r->error), "the record has no address to remind");
        goto out;
    }
    const char *tf = json_string_value(json_object_get(spec, "text"));
    const char *text = tf ? json_string_value(json_object_get(rec, tf)) : NULL;
    char fallback[160];
    snprintf(fallback, sizeof(fallback), "%s is due at %s", c->name, date);
    json_t *st = settings_get();
    buf_t subject, html;
    buf_init(&subject, job->arena);
    buf_init(&html, job->arena);
    mail_compose(MAIL_REMINDER, st, "", "", text && text[0] ? text : fallback, &subject, &html);
    json_decref(st);
    rc = subject.oom || html.oom ? -1 : mail_enqueue(conn, to, subject.data, html.data, &job->err);
out:
    json_decref(rec);
    json_decref(to_rec);
    schema_release(s);
    return rc;
}

/* reminder.send {"collection","record","index","due"}: queues the reminder's mail
 * if the record still has that date. */
static int remind_handler(jobs_ctx_t *ctx)
{
    arena_t a;
    arena_init(&a, 1024);
    remind_t r = {.job = {.run = run_remind, .arena = &a}, .payload = ctx->payload};
    bs_error_init(&r.job.err);
    int rc = jobs_store_run(ctx->store, &r.job);
    if (rc != 0)
        snprintf(ctx->error, sizeof(ctx->error), "%s", r.job.err.message);
    else if (r.error[0])
        LOGF(LOG_INFO, "reminders", "job %s: %s", ctx->id, r.error);
    else if (!r.skipped)
        jobs_wake();
    arena_free(&a);
    return rc == 0 ? JOBS_OK : JOBS_RETRY;
}

int record_hooks_init(void)
{
    return jobs_known("reminder.send") ? 0 : jobs_register("reminder.send", remind_handler);
}
