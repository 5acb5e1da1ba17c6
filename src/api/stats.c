/*
 * stats — grouped aggregates of a collection (GET /api/basalt/collections/{c}/stats):
 * count, sum, avg, min and max of its fields, grouped by up to four fields (date
 * fields also by hour, day, week, month or year), filtered with the filter language
 * and always under the collection's list rule, so a user's statistics count only
 * what that user may list.
 *
 * Query: groupBy=status,due:month,meta.kind  aggregates=count,sum(total),avg(total)
 *        filter=...  sort=-count  maxGroups=100
 * Answer: {"groupBy":[...],"items":[{"group":{"status":"done","due":"2026-11"},
 *          "count":3,"sum":{"total":30},"avg":{"total":10}}],"totalGroups":1}
 *
 * Every name goes through the rule resolver as a client's filter would (hidden
 * fields only for superusers, an auth record's e-mail reads as NULL unless the caller
 * may see it), so statistics reveal nothing a list would not. A JSON field may be
 * grouped by a path into it (meta.kind, meta.a.b, meta.items.0: the resolver's
 * segments, the dialect's views): the group is the JSON value there, so 1, "1" and
 * true are three groups, missing and null one. Bounded: at most
 * STATS_MAX_TERMS groups and aggregates, maxGroups groups (a 400 beyond: no silent
 * truncation), and the store's statement time-out.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/resolve.h"
#include "base/util.h"
#include "rules/dialect.h"
#include "store/store.h"

enum {
    STATS_MAX_GROUP_TERMS = 4,
    STATS_MAX_AGG_TERMS = 8,
    STATS_DEFAULT_GROUPS = 1000,
    STATS_MAX_GROUPS = 10000
};

typedef enum { AGG_COUNT, AGG_SUM, AGG_AVG, AGG_MIN, AGG_MAX } agg_kind_t;
static const char *const agg_names[] = {"count", "sum", "avg", "min", "max"};
static const char *const agg_sql[] = {"COUNT(*)", "SUM", "AVG", "MIN", "MAX"};

typedef enum { BUCKET_NONE, BUCKET_HOUR, BUCKET_DAY, BUCKET_WEEK, BUCKET_MONTH, BUCKET_YEAR } bucket_t;
static const char *const bucket_names[] = {"", "hour", "day", "week", "month", "year"};
/* The prefix of "YYYY-MM-DD HH:MM:SS.sssZ" that names the bucket (week: a function). */
static const int bucket_len[] = {0, 13, 10, 0, 7, 4};

typedef struct {
    const field_t *f;
    bucket_t bucket;
    const char *label; /* as written: "due:month" */
    /* A JSON path group (meta.a.b): the grouped expression and its ORDER BY key, a
     * function of that expression (PostgreSQL orders grouped rows only by those);
     * NULL for a field's own value. Arena text. */
    const char *json_group, *json_sort;
} group_term_t;

typedef struct {
    agg_kind_t kind;
    const field_t *f; /* NULL for count */
} agg_term_t;

typedef struct {
    const collection_t *c;
    buf_t sql;
    const bs_value_t *params;
    size_t nparams;
    group_term_t groups[STATS_MAX_GROUP_TERMS];
    int ngroups;
    agg_term_t aggs[STATS_MAX_AGG_TERMS];
    int naggs;
    int64_t max_groups;
    int too_many;
    buf_t out;
} stats_job_t;

static int bad(bs_error_t *err, const char *fmt, const char *p, size_t n)
{
    bs_error_set(err, BS_ERR_BAD_REQUEST, fmt, (int)(n > 200 ? 200 : n), p);
    return -1;
}

/* Splits list at commas into terms (trimmed); calls fn for each. */
typedef int (*term_fn)(stats_job_t *sj, resolve_ctx_t *rc, arena_t *a, const char *p, size_t n, buf_t *sel,
                       bs_error_t *err);
static int each_term(stats_job_t *sj, resolve_ctx_t *rc, arena_t *a, const char *list, term_fn fn, buf_t *sel,
                     bs_error_t *err)
{
    const char *p = list;
    while (p != NULL && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = p;
        int depth = 0;
        while (*e && (depth > 0 || *e != ',')) {
            depth += *e == '(' ? 1 : *e == ')' ? -1 : 0;
            e++;
        }
        const char *q = e;
        while (q > p && q[-1] == ' ')
            q--;
        if (fn(sj, rc, a, p, (size_t)(q - p), sel, err) != 0)
            return -1;
        p = e;
    }
    return 0;
}

/* The SQL of one of c's own fields, through the resolver (so a client sees only
 * what its filter could see); refuses multi-valued fields and anything but a field. */
static int field_sql(resolve_ctx_t *rc, arena_t *a, const char *name, size_t n, const field_t **f,
                     const char **sql, bs_error_t *err)
{
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return bad(err, "Invalid statistics term \"%.*s\": name one field of the collection.", name, n);
    }
    char *nm = arena_strndup(a, name, n);
    *f = nm ? collection_field(rc->coll, nm) : NULL;
    if (*f == NULL)
        return bad(err, "Invalid statistics term: the collection has no field \"%.*s\".", name, n);
    rules_resolved_t r;
    memset(&r, 0, sizeof(r));
    if (resolve_identifier(rc, a, name, n, 0, &r, err) != 0)
        return -1;
    if (r.multi || r.is_value || r.sql == NULL)
        return bad(err, "Cannot compute statistics over the multi-valued field \"%.*s\".", name, n);
    *sql = r.sql;
    return 0;
}

/* A group by the path [path, path + n) into JSON column col: the dialect's group
 * view, and its sort view read back from that expression. The resolver's segment
 * rules (and bounds) apply, so keys reach the statement only as parameters. */
static int json_group(resolve_ctx_t *rc, arena_t *a, const dialect_t *d, group_term_t *g, const char *col,
                      const char *path, size_t n, bs_error_t *err)
{
    dialect_json_seg_t segs[RESOLVE_MAX_JSON_SEGS];
    size_t nseg;
    if (resolve_json_segments(path, n, segs, &nseg, g->label, err) != 0) {
        /* The resolver speaks of filters; this is a groupBy term (one byte longer:
         * the message's last byte goes if it is full). */
        static const char from[] = "Invalid filter:", to[] = "Invalid groupBy:";
        size_t len = strlen(err->message), lf = sizeof(from) - 1, lt = sizeof(to) - 1;
        if (strncmp(err->message, from, lf) == 0) {
            if (len + lt - lf >= sizeof(err->message)) {
                len = sizeof(err->message) - 1 - (lt - lf);
                err->message[len] = '\0';
            }
            memmove(err->message + lt, err->message + lf, len - lf + 1);
            memcpy(err->message, to, lt);
        }
        return -1;
    }
    dialect_json_views_t v, back;
    if (dialect_json_path(d, rc->compiler, a, col, segs, nseg, &v) != 0 ||
        dialect_json_path(d, rc->compiler, a, v.group, NULL, 0, &back) != 0) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    g->json_group = v.group;
    g->json_sort = back.sort;
    return 0;
}

static int group_term(stats_job_t *sj, resolve_ctx_t *rc, arena_t *a, const char *p, size_t n, buf_t *sel,
                      bs_error_t *err)
{
    if (sj->ngroups == STATS_MAX_GROUP_TERMS)
        return bad(err, "Invalid groupBy: at most 4 fields (\"%.*s\" is one too many).", p, n);
    const char *colon = memchr(p, ':', n);
    size_t fn = colon ? (size_t)(colon - p) : n;
    bucket_t b = BUCKET_NONE;
    if (colon != NULL) {
        const char *bn = colon + 1;
        size_t bl = n - fn - 1;
        for (int i = 1; i <= BUCKET_YEAR; i++)
            if (strlen(bucket_names[i]) == bl && memcmp(bucket_names[i], bn, bl) == 0)
                b = (bucket_t)i;
        if (b == BUCKET_NONE)
            return bad(
                err, "Invalid groupBy term \"%.*s\": the date bucket must be hour, day, week, month or year.",
                p, n);
    }
    group_term_t *g = &sj->groups[sj->ngroups];
    g->json_group = g->json_sort = NULL;
    const char *sql;
    const char *dot = memchr(p, '.', fn);
    if (field_sql(rc, a, p, dot ? (size_t)(dot - p) : fn, &g->f, &sql, err) != 0)
        return -1;
    if (dot != NULL && g->f->type != FIELD_JSON)
        return bad(err,
                   "Invalid statistics term \"%.*s\": name one field of the collection (only a JSON field "
                   "takes a path: meta.a.b).",
                   p, fn);
    if (b != BUCKET_NONE && (dot != NULL || (g->f->type != FIELD_DATE && g->f->type != FIELD_AUTODATE)))
        return bad(err, "Invalid groupBy term \"%.*s\": only date fields have date buckets.", p, n);
    if (dot == NULL && (g->f->type == FIELD_JSON || g->f->type == FIELD_EDITOR || g->f->type == FIELD_FILE ||
                        g->f->type == FIELD_GEOPOINT))
        return bad(
            err,
            g->f->type == FIELD_JSON
                ? "Cannot group by the JSON field \"%.*s\" itself: group by a path into it (meta.kind)."
                : "Cannot group by the field \"%.*s\": its type has no group value.",
            p, fn);
    g->bucket = b;
    g->label = arena_strndup(a, p, n);
    const dialect_t *d = dialect_get(rc->compiler->dialect);
    if (dot != NULL && json_group(rc, a, d, g, sql, dot + 1, (size_t)(p + fn - dot - 1), err) != 0)
        return -1;
    buf_puts(sel, sj->ngroups ? ", " : "");
    if (g->json_group != NULL)
        buf_puts(sel, g->json_group);
    else if (b == BUCKET_WEEK)
        buf_printf(sel, d->week_start_fmt, sql);
    else if (b != BUCKET_NONE)
        buf_printf(sel, "NULLIF(substr(%s, 1, %d), '')", sql, bucket_len[b]);
    else
        buf_puts(sel, sql);
    buf_printf(sel, " AS \"g%d\"", sj->ngroups);
    sj->ngroups++;
    return 0;
}

static int agg_term(stats_job_t *sj, resolve_ctx_t *rc, arena_t *a, const char *p, size_t n, buf_t *sel,
                    bs_error_t *err)
{
    if (sj->naggs == STATS_MAX_AGG_TERMS)
        return bad(err, "Invalid aggregates: at most 8 terms (\"%.*s\" is one too many).", p, n);
    agg_term_t *t = &sj->aggs[sj->naggs];
    if (n == 5 && memcmp(p, "count", 5) == 0) {
        t->kind = AGG_COUNT;
        t->f = NULL;
        buf_printf(sel, ", COUNT(*) AS \"a%d\"", sj->naggs++);
        return 0;
    }
    const char *open = memchr(p, '(', n);
    if (open == NULL || p[n - 1] != ')')
        return bad(err,
                   "Invalid aggregate \"%.*s\": use count, sum(field), avg(field), min(field) or max(field).",
                   p, n);
    size_t kl = (size_t)(open - p);
    int kind = -1;
    for (int i = AGG_SUM; i <= AGG_MAX; i++)
        if (strlen(agg_names[i]) == kl && memcmp(agg_names[i], p, kl) == 0)
            kind = i;
    if (kind < 0)
        return bad(err,
                   "Invalid aggregate \"%.*s\": use count, sum(field), avg(field), min(field) or max(field).",
                   p, n);
    const char *sql;
    const char *fname = open + 1;
    size_t fl = (size_t)(p + n - 1 - fname);
    while (fl > 0 && *fname == ' ')
        fname++, fl--;
    while (fl > 0 && fname[fl - 1] == ' ')
        fl--;
    if (field_sql(rc, a, fname, fl, &t->f, &sql, err) != 0)
        return -1;
    int numeric = t->f->type == FIELD_NUMBER;
    int ordered = numeric || t->f->type == FIELD_DATE || t->f->type == FIELD_AUTODATE;
    if ((kind == AGG_SUM || kind == AGG_AVG) ? !numeric : !ordered)
        return bad(err,
                   (kind == AGG_SUM || kind == AGG_AVG)
                       ? "Invalid aggregate \"%.*s\": sum and avg take a number field."
                       : "Invalid aggregate \"%.*s\": min and max take a number or date field.",
                   p, n);
    t->kind = (agg_kind_t)kind;
    /* Empty dates are stored as '': not the minimum of anything. */
    if (numeric)
        buf_printf(sel, ", %s(%s) AS \"a%d\"", agg_sql[kind], sql, sj->naggs);
    else
        buf_printf(sel, ", %s(NULLIF(%s, '')) AS \"a%d\"", agg_sql[kind], sql, sj->naggs);
    sj->naggs++;
    return 0;
}

/* A JSON path group in ORDER BY: its sort key (missing first, then numbers, strings,
 * arrays, objects, alike on both backends), then the JSON value itself, which puts a
 * number before the boolean that sorts as it (1, true). */
static void order_json(const group_term_t *g, const dialect_t *d, int desc, buf_t *out, int terms)
{
    const char *dir = desc ? d->sort_desc : d->sort_asc;
    buf_printf(out, "%s%s%s, %s%s", terms ? ", " : " ORDER BY ", g->json_sort, dir, g->json_group, dir);
}

/* sort: "count", a groupBy term or an aggregate term as written, each with an
 * optional leading '-' (descending) or '+'. */
static int compile_order(stats_job_t *sj, const dialect_t *d, const char *sort, buf_t *out, bs_error_t *err)
{
    int terms = 0;
    const char *p = sort;
    while (p != NULL && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = p;
        int depth = 0;
        while (*e && (depth > 0 || *e != ',')) {
            depth += *e == '(' ? 1 : *e == ')' ? -1 : 0;
            e++;
        }
        const char *q = e;
        while (q > p && q[-1] == ' ')
            q--;
        int desc = 0;
        if (*p == '-' || *p == '+')
            desc = *p++ == '-';
        size_t n = (size_t)(q - p);
        char col[24] = "";
        for (int i = 0; i < sj->ngroups && !col[0]; i++)
            if (strlen(sj->groups[i].label) == n && memcmp(sj->groups[i].label, p, n) == 0) {
                if (sj->groups[i].json_group != NULL) {
                    order_json(&sj->groups[i], d, desc, out, terms++);
                    col[0] = '-'; /* written */
                } else {
                    snprintf(col, sizeof(col), "g%d", i);
                }
            }
        for (int i = 0; i < sj->naggs && !col[0]; i++) {
            const agg_term_t *t = &sj->aggs[i];
            char label[160];
            if (t->kind == AGG_COUNT)
                snprintf(label, sizeof(label), "count");
            else
                snprintf(label, sizeof(label), "%s(%s)", agg_names[t->kind], t->f->name);
            if (strlen(label) == n && memcmp(label, p, n) == 0)
                snprintf(col, sizeof(col), "a%d", i);
        }
        if (!col[0])
            return bad(err,
                       "Invalid sort term \"%.*s\": sort by a groupBy term or an aggregate as requested.", p,
                       n);
        if (col[0] != '-')
            buf_printf(out, "%s\"%s\"%s", terms++ ? ", " : " ORDER BY ", col,
                       desc ? d->sort_desc : d->sort_asc);
        p = e;
    }
    if (terms == 0)
        for (int i = 0; i < sj->ngroups; i++) {
            if (sj->groups[i].json_group != NULL)
                order_json(&sj->groups[i], d, 0, out, i);
            else
                buf_printf(out, "%s\"g%d\"%s", i ? ", " : " ORDER BY ", i, d->sort_asc);
        }
    return 0;
}

static void write_agg(buf_t *out, const agg_term_t *t, bs_value_t v)
{
    if (v.type == BS_VAL_NULL) {
        buf_puts(out, "null");
    } else if (t->kind == AGG_COUNT) {
        buf_put_i64(out, v.type == BS_VAL_INT ? v.i : (int64_t)v.d);
    } else if (t->kind == AGG_AVG || t->f->type == FIELD_NUMBER) {
        if (v.type == BS_VAL_INT)
            buf_put_i64(out, v.i);
        else if (v.type == BS_VAL_DOUBLE)
            buf_printf(out, "%.17g", v.d);
        else
            buf_printf(out, "%.17g", strtod(v.s, NULL));
    } else {
        record_write_value(out, t->f, v);
    }
}

/* A JSON path group's value, the backend's JSON text (SQLite's as stored, PostgreSQL's
 * jsonb with its spaces), written again compactly so both backends answer alike. */
static void write_json_group(buf_t *out, bs_value_t v)
{
    if (v.type == BS_VAL_NULL) {
        buf_puts(out, "null");
        return;
    }
    if (v.type != BS_VAL_TEXT) { /* not what the dialect's view gives; a number at most */
        if (v.type == BS_VAL_INT)
            buf_put_i64(out, v.i);
        else
            buf_printf(out, "%.17g", v.d);
        return;
    }
    json_error_t jerr;
    json_t *j = json_loadb(v.s, v.n, JSON_DECODE_ANY, &jerr);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (text != NULL)
        buf_puts(out, text);
    else /* JSON jansson cannot hold (an integer beyond 64 bits): the database's text */
        buf_append(out, v.s, v.n);
    free(text);
    json_decref(j);
}

static int run_stats(store_job_t *job, store_conn_t *conn)
{
    stats_job_t *sj = ((api_job_t *)job)->data;
    store_stmt_t *st = store_query(conn, sj->sql.data, sj->params, sj->nparams, &job->err);
    if (st == NULL)
        return -1;
    buf_puts(&sj->out, "{\"groupBy\":[");
    for (int i = 0; i < sj->ngroups; i++) {
        buf_puts(&sj->out, i ? "," : "");
        util_json_quote(&sj->out, sj->groups[i].label, strlen(sj->groups[i].label));
    }
    buf_puts(&sj->out, "],\"items\":[");
    int64_t n = 0;
    int rc;
    while ((rc = store_step(st, &job->err)) == 1) {
        if (n == sj->max_groups) {
            sj->too_many = 1;
            break;
        }
        buf_puts(&sj->out, n++ ? ",{\"group\":{" : "{\"group\":{");
        for (int i = 0; i < sj->ngroups; i++) {
            const group_term_t *g = &sj->groups[i];
            buf_puts(&sj->out, i ? "," : "");
            util_json_quote(&sj->out, g->label, strlen(g->label));
            buf_putc(&sj->out, ':');
            bs_value_t v = store_col(st, i);
            if (g->json_group != NULL)
                write_json_group(&sj->out, v);
            else if (v.type == BS_VAL_NULL && g->f->type != FIELD_NUMBER && g->f->type != FIELD_BOOL)
                buf_puts(&sj->out, g->bucket != BUCKET_NONE ? "null" : "\"\"");
            else
                record_write_value(&sj->out, g->f, v);
        }
        buf_putc(&sj->out, '}');
        /* count first, then each kind as an object by field */
        for (int k = AGG_COUNT; k <= AGG_MAX; k++) {
            int opened = 0;
            for (int i = 0; i < sj->naggs; i++) {
                const agg_term_t *t = &sj->aggs[i];
                if ((int)t->kind != k)
                    continue;
                bs_value_t v = store_col(st, sj->ngroups + i);
                if (k == AGG_COUNT) {
                    if (!opened)
                        buf_puts(&sj->out, ",\"count\":");
                    if (!opened)
                        write_agg(&sj->out, t, v);
                    opened = 1;
                    continue;
                }
                buf_printf(&sj->out, opened ? "," : ",\"%s\":{", agg_names[k]);
                opened = 1;
                util_json_quote(&sj->out, t->f->name, strlen(t->f->name));
                buf_putc(&sj->out, ':');
                write_agg(&sj->out, t, v);
            }
            if (opened && k != AGG_COUNT)
                buf_putc(&sj->out, '}');
        }
        buf_putc(&sj->out, '}');
    }
    store_done(st);
    if (rc < 0)
        return -1;
    buf_printf(&sj->out, "],\"totalGroups\":%lld}", (long long)n);
    return 0;
}

static void stats_done(api_job_t *j, req_ctx_t *ctx)
{
    stats_job_t *sj = j->data;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (sj->too_many) {
        bs_error_t err;
        bs_error_init(&err);
        bs_error_set(
            &err, BS_ERR_BAD_REQUEST,
            "The statistics have more than %lld groups: narrow the filter, use a coarser date bucket "
            "or raise maxGroups (at most %d).",
            (long long)sj->max_groups, STATS_MAX_GROUPS);
        ctx_send_error(ctx, &err);
        return;
    }
    if (sj->out.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    ctx_add_header(ctx, "cache-control", "no-store");
    ctx_send_json(ctx, 200, sj->out.data, sj->out.len);
}

void api_collection_stats(req_ctx_t *ctx, char **params)
{
    const collection_t *c = api_collection(ctx, params[0]);
    if (c == NULL)
        return;
    if (!ctx->who.superuser && c->rules[RULE_LIST] == NULL) {
        if (ctx->auth == NULL && ctx->auth_err.code != BS_ERR_OK)
            ctx_send_error(ctx, &ctx->auth_err);
        else
            ctx_send_status(ctx, BS_ERR_FORBIDDEN, "Only superusers can perform this action.");
        return;
    }
    bs_error_t err;
    bs_error_init(&err);
    arena_t *a = &ctx->arena;
    stats_job_t *sj = arena_calloc(a, sizeof(*sj));
    if (sj == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    sj->c = c;
    sj->max_groups = STATS_DEFAULT_GROUPS;
    const char *mg = ctx_query(ctx, "maxGroups");
    if (mg != NULL && mg[0] != '\0' &&
        (util_parse_i64(mg, strlen(mg), &sj->max_groups) != 0 || sj->max_groups < 1 ||
         sj->max_groups > STATS_MAX_GROUPS)) {
        bs_error_set(&err, BS_ERR_BAD_REQUEST,
                     "The query parameter \"maxGroups\" must be an integer from 1 to %d.", STATS_MAX_GROUPS);
        ctx_send_error(ctx, &err);
        return;
    }
    rules_compiler_t comp = {0};
    comp.now_ms = util_now_ms();
    comp.dialect = store_dialect(worker_settings()->store);
    const dialect_t *d = dialect_get(comp.dialect);
    resolve_ctx_t rc = {.schema = ctx->schema,
                        .coll = c,
                        .alias = "_r",
                        .trusted = ctx->who.superuser,
                        .who = &ctx->who,
                        .compiler = &comp};
    buf_t sel, where, order;
    buf_init(&sel, a);
    buf_init(&where, a);
    buf_init(&order, a);
    const char *aggs = ctx_query(ctx, "aggregates");
    if (each_term(sj, &rc, a, ctx_query(ctx, "groupBy"), group_term, &sel, &err) != 0 ||
        each_term(sj, &rc, a, aggs != NULL && aggs[0] ? aggs : "count", agg_term, &sel, &err) != 0) {
        ctx_send_error(ctx, &err);
        return;
    }
    if (api_list_where(ctx, c, &rc, &where, &err) != 0) {
        ctx_send_error(ctx, &err);
        return;
    }
    if (compile_order(sj, d, ctx_query(ctx, "sort"), &order, &err) != 0) {
        ctx_send_error(ctx, &err);
        return;
    }
    buf_init(&sj->sql, a);
    buf_printf(&sj->sql, "SELECT %s FROM ", sj->ngroups ? sel.data : sel.data + 2);
    sql_ident(&sj->sql, c->name);
    buf_printf(&sj->sql, " AS \"_r\" WHERE %s", where.data);
    if (sj->ngroups) {
        buf_puts(&sj->sql, " GROUP BY ");
        for (int i = 0; i < sj->ngroups; i++)
            buf_printf(&sj->sql, "%s%d", i ? ", " : "", i + 1);
    }
    buf_printf(&sj->sql, "%s LIMIT ", order.len ? order.data : "");
    rules_add_param(&comp, a, bs_val_int(sj->max_groups + 1), &sj->sql);
    if (sel.oom || where.oom || order.oom || sj->sql.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    sj->params = comp.params;
    sj->nparams = comp.nparams;
    buf_init(&sj->out, a);
    api_read_scan(ctx, run_stats, stats_done, sj);
}
