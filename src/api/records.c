/*
 * /api/collections/{c}/records: list, view, create, update, delete, with the
 * collection's rules. Every read is a read job (api_read: inline on SQLite, on the
 * read pool on PostgreSQL): a handler prepares on the loop, the job runs core/ code
 * against the job's connection, and its done answers on the loop; writes run on the
 * writer. Passwords of auth records are hashed on the password
 * pool before the write is submitted.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/record_hooks.h"
#include "rules/dialect.h"
#include "auth/password.h"
#include "base/log.h"
#include "base/util.h"
#include "api/cursor.h"
#include "cache/cache.h"
#include "metrics/metrics.h"
#include "redis/redis_shared.h"

/* Sends 403 when the rule is locked (null) and the caller is not a superuser. */
static int rule_open(req_ctx_t *ctx, const collection_t *c, int which)
{
    if (ctx->who.superuser || c->rules[which] != NULL)
        return 1;
    /* Locked here: perhaps opened or deleted on another instance a moment ago. */
    if (api_collection_recheck(ctx, c))
        return 0;
    if (ctx->auth == NULL && ctx->auth_err.code != BS_ERR_OK)
        ctx_send_error(ctx, &ctx->auth_err);
    else
        ctx_send_status(ctx, BS_ERR_FORBIDDEN, "Only superusers can perform this action.");
    return 0;
}

static int query_int(req_ctx_t *ctx, const char *name, int64_t def, int64_t min, int64_t *out)
{
    const char *s = ctx_query(ctx, name);
    *out = def;
    if (s == NULL || s[0] == '\0')
        return 0;
    if (util_parse_i64(s, strlen(s), out) != 0 || *out < min) {
        bs_error_t err;
        bs_error_init(&err);
        bs_error_set(&err, BS_ERR_BAD_REQUEST, "The query parameter \"%s\" must be an integer >= %lld.", name,
                     (long long)min);
        ctx_send_error(ctx, &err);
        return -1;
    }
    return 0;
}

static int query_bool(req_ctx_t *ctx, const char *name)
{
    const char *s = ctx_query(ctx, name);
    return s != NULL && (strcmp(s, "1") == 0 || strcmp(s, "true") == 0);
}

/* What compile_sort found besides the ORDER BY: whether a term is the search's rank,
 * and the first term's field when it is one of the collection's own columns. */
typedef struct {
    int ranked;
    const char *first_field;
} sort_info_t;

/* Appends the ORDER BY terms of sort to out; keys (or NULL) gets each term's
 * expression and direction, for a cursor; info what else the sort says. */
static int compile_sort(resolve_ctx_t *rc, arena_t *a, const char *sort, const char *rank, buf_t *out,
                        cursor_keys_t *keys, sort_info_t *info, bs_error_t *err)
{
    *info = (sort_info_t){0};
    int terms = 0;
    const char *p = sort;
    while (p && *p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *q = e;
        while (q > p && q[-1] == ' ')
            q--;
        int desc = 0;
        if (*p == '-' || *p == '+') {
            desc = *p == '-';
            p++;
        }
        size_t n = (size_t)(q - p);
        if (n == 0 || ++terms > 8) {
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         n == 0 ? "Invalid sort: an empty term." : "Invalid sort: at most 8 terms.");
            return -1;
        }
        buf_puts(out, terms == 1 ? " ORDER BY " : ", ");
        const dialect_t *d = dialect_get(rc->compiler->dialect);
        size_t term_at = out->len;
        int not_null = 0;
        if (n == 7 && memcmp(p, "@random", 7) == 0) {
            buf_puts(out, d->random_order);
            if (keys != NULL)
                keys->random = 1;
        } else if (n == 6 && memcmp(p, "@rowid", 6) == 0) {
            buf_printf(out, "\"_r\".%s", d->rowid);
            not_null = 1;
        } else if (n == 5 && memcmp(p, "@rank", 5) == 0) {
            if (rank == NULL) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "Sorting by @rank needs a search (?search=words).");
                return -1;
            }
            buf_puts(out, rank);
            info->ranked = 1;
        } else {
            for (size_t i = 0; i < n; i++) {
                char ch = p[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                      ch == '_' || ch == '.')) {
                    bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid sort term \"%.*s\".", (int)n, p);
                    return -1;
                }
            }
            rules_resolved_t r;
            memset(&r, 0, sizeof(r));
            if (resolve_identifier(rc, a, p, n, 0, &r, err) != 0)
                return -1;
            if (r.multi || r.is_value) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "Cannot sort by the multi-valued field \"%.*s\".",
                             (int)n, p);
                return -1;
            }
            if (r.sort_sql != NULL && keys != NULL) {
                bs_error_set(err, BS_ERR_BAD_REQUEST,
                             "A cursor cannot follow a sort by a value inside a JSON field (\"%.*s\"); use "
                             "page instead.",
                             (int)n, p);
                return -1;
            }
            buf_puts(out, r.sort_sql ? r.sort_sql : r.sql);
            not_null = r.not_null && r.sort_sql == NULL;
            if (terms == 1 && r.sort_sql == NULL && memchr(p, '.', n) == NULL)
                info->first_field = arena_strndup(a, p, n);
        }
        if (keys != NULL && keys->n < CURSOR_MAX_KEYS - 1) {
            keys->sql[keys->n] = arena_strndup(a, out->data + term_at, out->len - term_at);
            keys->desc[keys->n++] = desc;
        }
        if (not_null)
            buf_puts(out, desc ? " DESC" : " ASC");
        else
            buf_puts(out, desc ? d->sort_desc : d->sort_asc);
        p = e;
    }
    return 0;
}

static int expand_deps(const schema_t *s, const collection_t *c, const path_tree_t *e, cache_deps_t *d);

/* A list's read: prepared on the loop (SQL, parameters, trees), run in the job (the
 * count, then the page), answered on the loop (cache, response). */
typedef struct {
    record_reader_t r;
    const collection_t *c;
    buf_t count_sql, sql;
    const bs_value_t *params;
    size_t nparams, nwhere;
    int skip_total;
    int64_t page, per_page;
    const path_tree_t *expand, *fields;
    char *ckey; /* NULL: not to be cached */
    cache_deps_t deps;
    /* The total from the count cache (-1: count in the job), and the count's cache
     * key when it may be cached (NULL: not). */
    int64_t known_total;
    char *count_key;
    cache_deps_t count_deps; /* taken before the job: a write meanwhile makes it stale */
    /* No total (-1, as skipTotal): its count ran past the budget in this job, or an
     * earlier one did (the verdict's cache key: the count's, 'b' for 'n'). */
    int over_budget, known_over;
    /* Cursor mode: the key columns follow the record's ("_k0".."_kN"); the page
     * is read one row long to know whether another follows. */
    int cursor;
    int nkeys;
    /* A search sorted by an indexed field (SQLite): the page read along that index
     * with the search as a filter (scan_sql; data NULL when there is none), the
     * statement of the table's largest rowid, and how many rows of the order the
     * page reads to its end (offset, page and one). */
    buf_t scan_sql, rows_sql;
    int64_t rows_ahead;
    const char *sort; /* as the client wrote it ("" for none) */
    buf_t out;
} list_job_t;

/* The longest a list's count may run (api_set_count_budget; 0: no limit). */
static int count_budget_ms = 250;

void api_set_count_budget(int ms)
{
    count_budget_ms = ms;
}

/* Whether a search's page is cheaper read along the sort's index, the search a
 * filter of each row (scan_sql), than from its matches, every one read and sorted
 * (sql): with m of the table's N rows matching, reading k rows of the order takes
 * about k * N / m index steps against m row reads and a sort. The second costs
 * several times more per row (measured on the 50 GB shop: a one-word search, 440,000
 * of 1.76 M products, docs/performance.md), so the scan is taken when k * N < 2 m^2;
 * with few matches (a rare word) it would walk most of the index for nothing. */
static int scan_pays(store_conn_t *conn, list_job_t *lj, int64_t m)
{
    bs_error_t e;
    bs_error_init(&e);
    int64_t rows = -1;
    store_stmt_t *st = store_query(conn, lj->rows_sql.data, NULL, 0, &e);
    if (st != NULL) {
        if (store_step(st, &e) == 1)
            rows = store_col(st, 0).i;
        store_done(st);
    }
    return rows > 0 && (double)lj->rows_ahead * (double)rows < 2.0 * (double)m * (double)m;
}

static int run_list(store_job_t *job, store_conn_t *conn)
{
    list_job_t *lj = ((api_job_t *)job)->data;
    bs_error_t *err = &job->err;
    lj->r.conn = conn;
    int64_t total = lj->known_total;
    if (!lj->skip_total && total < 0 && !lj->known_over) {
        int budget = count_budget_ms;
        if (budget > 0)
            store_set_budget(conn, budget);
        store_stmt_t *st = store_query(conn, lj->count_sql.data, lj->params, lj->nwhere, err);
        if (st != NULL) {
            if (store_step(st, err) == 1)
                total = store_col(st, 0).i;
            store_done(st);
        }
        if (budget > 0)
            store_set_budget(conn, 0);
        if (total < 0 && budget > 0 && err->code == BS_ERR_TIMEOUT) {
            /* Not cheap: the page goes without its total, as with skipTotal. */
            bs_error_init(err);
            lj->over_budget = 1;
            metrics_add(&metrics_g.list_counts_over_budget, 1);
        } else if (total < 0) {
            if (err->code == BS_ERR_OK)
                bs_error_set(err, BS_ERR_INTERNAL, NULL);
            return -1;
        }
    } else if (lj->known_over) {
        metrics_add(&metrics_g.list_counts_skipped, 1);
    }
    buf_t *out = &lj->out;
    if (lj->skip_total || lj->over_budget || lj->known_over)
        buf_printf(out, "{\"page\":%lld,\"perPage\":%lld,\"totalItems\":-1,\"totalPages\":-1,\"items\":[",
                   (long long)lj->page, (long long)lj->per_page);
    else
        buf_printf(out, "{\"page\":%lld,\"perPage\":%lld,\"totalItems\":%lld,\"totalPages\":%lld,\"items\":[",
                   (long long)lj->page, (long long)lj->per_page, (long long)total,
                   (long long)((total + lj->per_page - 1) / lj->per_page));
    const char *sql = lj->sql.data;
    if (lj->scan_sql.data != NULL && total > 0 && scan_pays(conn, lj, total)) {
        sql = lj->scan_sql.data;
        metrics_add(&metrics_g.list_search_scans, 1);
    }
    store_stmt_t *st = store_query(conn, sql, lj->params, lj->nparams, err);
    if (st == NULL)
        return -1;
    int rc2, n = 0, more = 0;
    bs_value_t keys[CURSOR_MAX_KEYS];
    while ((rc2 = store_step(st, err)) == 1) {
        if (lj->cursor && n == lj->per_page) {
            more = 1; /* the row after the page: only its existence counts */
            break;
        }
        if (n++)
            buf_putc(out, ',');
        if (record_write_row(&lj->r, lj->c, st, lj->expand, lj->fields, out, 0, err) != 0) {
            rc2 = -1;
            break;
        }
        if (lj->cursor && n == lj->per_page) {
            /* The page's last record: its key values make the next cursor. */
            int first = store_ncols(st) - lj->nkeys;
            for (int k = 0; k < lj->nkeys; k++) {
                keys[k] = store_col(st, first + k);
                if (keys[k].type == BS_VAL_TEXT) {
                    char *c = arena_strndup(lj->r.arena, keys[k].s, keys[k].n);
                    keys[k] = c ? bs_val_text(c, keys[k].n) : bs_val_null();
                }
            }
        }
    }
    store_done(st);
    if (rc2 < 0)
        return -1;
    if (lj->cursor) {
        buf_puts(out, "],\"nextCursor\":");
        if (more)
            cursor_encode(out, lj->sort, keys, lj->nkeys);
        else
            buf_puts(out, "null");
        buf_putc(out, '}');
    } else {
        buf_puts(out, "]}");
    }
    lj->known_total = total;
    return 0;
}

static void list_done(api_job_t *j, req_ctx_t *ctx)
{
    list_job_t *lj = j->data;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (lj->out.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    if (lj->ckey != NULL)
        cache_put(worker_settings()->cache, lj->ckey, strlen(lj->ckey), lj->out.data, lj->out.len, &lj->deps,
                  util_now_ms());
    if (lj->count_key != NULL && lj->over_budget) {
        /* Too slow to count: the verdict stands until the cache's TTL, whatever is
         * written meanwhile (a few writes do not make a large count cheap). */
        cache_deps_t vd;
        cache_deps_init(&vd, lj->count_deps.schema_version);
        lj->count_key[0] = 'b';
        cache_put(worker_settings()->cache, lj->count_key, strlen(lj->count_key), "1", 1, &vd, util_now_ms());
    } else if (lj->count_key != NULL && lj->known_total >= 0) {
        char num[24];
        int nl = snprintf(num, sizeof(num), "%lld", (long long)lj->known_total);
        cache_put(worker_settings()->cache, lj->count_key, strlen(lj->count_key), num, (size_t)nl,
                  &lj->count_deps, util_now_ms());
    }
    api_send_cacheable(ctx, lj->out.data, lj->out.len);
}

void api_records_list(req_ctx_t *ctx, char **params)
{
    const collection_t *c = api_collection(ctx, params[0]);
    if (c == NULL || !rule_open(ctx, c, RULE_LIST))
        return;
    int64_t page, per_page;
    if (query_int(ctx, "page", 1, 1, &page) != 0 || query_int(ctx, "perPage", 30, 1, &per_page) != 0)
        return;
    /* A page may come from the cache when what decides it depends only on the
     * records and the requester's id: the rule, the filter and the sort (no other
     * request data, no time macros, no relations), keyed by the whole query. */
    struct cache *cache = worker_settings()->cache;
    char *ckey = NULL;
    cache_deps_t deps = {.schema_version = ctx->schema->version};
    /* The same test decides whether the total may be cached by its statement. */
    int count_cacheable = cache != NULL && c->type != COLL_VIEW && !ctx->schema->rules_use_headers &&
                          api_rule_cacheable(c->rules[RULE_LIST]) &&
                          api_rule_cacheable(ctx_query(ctx, "filter"));
    if (count_cacheable && api_rule_cacheable(ctx_query(ctx, "sort")) && ctx->req != NULL) {
        const h2o_req_t *hr = ctx->req;
        const char *q = hr->query_at != SIZE_MAX ? hr->path.base + hr->query_at : "";
        size_t ql = hr->query_at != SIZE_MAX ? hr->path.len - hr->query_at : 0;
        const char *who = ctx->who.superuser ? "su"
                          : ctx->auth        ? json_string_value(json_object_get(ctx->auth, "id"))
                                             : "-";
        ckey = arena_printf(&ctx->arena, "l:%s:%.*s|%s:%s", c->id, (int)ql, q,
                            ctx->who.auth_coll ? ctx->who.auth_coll->id : "", who ? who : "");
        size_t vlen;
        char *hit = ckey ? cache_get(cache, ckey, strlen(ckey), ctx->schema->version, &ctx->arena, &vlen,
                                     util_now_ms())
                         : NULL;
        if (hit != NULL) {
            api_send_cacheable(ctx, hit, vlen);
            return;
        }
        cache_deps_add(&deps, c->id);
        bs_error_t perr;
        bs_error_init(&perr);
        path_tree_t *ex = path_tree_parse(&ctx->arena, ctx_query(ctx, "expand"), 6, &perr);
        if (perr.code != BS_ERR_OK || !expand_deps(ctx->schema, c, ex, &deps))
            ckey = NULL;
    }
    if (per_page > 1000)
        per_page = 1000;
    if (page - 1 > INT64_MAX / per_page) {
        /* (page - 1) * perPage would overflow the OFFSET. */
        bs_error_t perr;
        bs_error_init(&perr);
        bs_error_set(&perr, BS_ERR_BAD_REQUEST,
                     "The query parameter \"page\" is too large (at most %lld with perPage=%lld).",
                     (long long)(INT64_MAX / per_page + 1), (long long)per_page);
        ctx_send_error(ctx, &perr);
        return;
    }
    int skip_total = query_bool(ctx, "skipTotal");
    bs_error_t err;
    bs_error_init(&err);
    arena_t *a = &ctx->arena;
    rules_compiler_t comp = {0};
    comp.now_ms = util_now_ms();
    comp.dialect = store_dialect(worker_settings()->store);
    resolve_ctx_t rc = {.schema = ctx->schema,
                        .coll = c,
                        .alias = "_r",
                        .trusted = ctx->who.superuser,
                        .who = &ctx->who,
                        .compiler = &comp};
    buf_t where;
    buf_init(&where, a);
    if (api_list_where(ctx, c, &rc, &where, &err) != 0) {
        ctx_send_error(ctx, &err);
        return;
    }
    /* ?search=words: the collection's full-text index, ranked (@rank). */
    const char *rank = NULL, *rank_join = "";
    buf_t fts_count = {0}; /* data set: the count of a list that only searches */
    /* The search's parameter, and how much of where comes before its condition
     * (for the page read along the sort's index; see run_list). */
    const char *search_ph = NULL;
    size_t where_before_search = 0;
    const char *search = ctx_query(ctx, "search");
    if (search != NULL && search[0] != '\0') {
        const dialect_t *d = dialect_get(comp.dialect);
        buf_t q, ph, rk, rj;
        buf_init(&q, a);
        buf_init(&ph, a);
        buf_init(&rk, a);
        buf_init(&rj, a);
        int words = c->nsearch > 0 ? dialect_fts_query(d, &q, search) : -2;
        if (words < 0) {
            bs_error_set(&err, BS_ERR_BAD_REQUEST,
                         words == -2 ? "The collection \"%s\" has no search index: list its text fields in "
                                       "\"search\" (a collection option) first."
                                     : "The search has too many words (at most 32)%.0s.",
                         c->name);
            ctx_send_error(ctx, &err);
            return;
        }
        if (words > 0) {
            /* Nothing but the search filters the rows (no filter, no list rule that
             * applies): the index alone can count them. */
            int only_search = comp.nparams == 0 && strcmp(where.data, d->true_lit) == 0;
            rules_add_param(&comp, a, bs_val_text(q.data, q.len), &ph);
            if (only_search) {
                buf_init(&fts_count, a);
                if (dialect_fts_count(d, &fts_count, c->id, ph.data) == 0 || fts_count.oom)
                    fts_count.data = NULL;
            }
            const char *const *cols = (const char *const *)c->search_fields;
            where_before_search = where.len;
            search_ph = ph.data;
            buf_puts(&where, " AND ");
            dialect_fts_match(d, &where, c->id, "\"_r\"", cols, c->nsearch, ph.data);
            dialect_fts_rank(d, &rk, c->id, "\"_r\"", cols, c->nsearch, ph.data);
            dialect_fts_join(d, &rj, c->id, "\"_r\"", ph.data);
            buf_puts(&rj, ""); /* data never NULL, also when empty (PostgreSQL) */
            if (q.oom || ph.oom || rk.oom || rj.oom) {
                ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
                return;
            }
            rank = rk.data;
            rank_join = rj.data;
        }
    }
    /* The count statement takes the WHERE's parameters only: the sort's (a joined
     * collection's rule, an e-mail guard) come after them. */
    size_t nwhere = comp.nparams;
    buf_t order;
    buf_init(&order, a);
    cursor_keys_t keys = {0};
    const char *cursor = ctx_query(ctx, "cursor");
    const char *sort = ctx_query(ctx, "sort");
    sort_info_t sorted;
    if (compile_sort(&rc, a,
                     sort && sort[0] ? sort
                     : rank          ? "@rank"
                                     : sort,
                     rank, &order, cursor ? &keys : NULL, &sorted, &err) != 0) {
        ctx_send_error(ctx, &err);
        return;
    }
    /* The rank's join only where the order reads it: otherwise it is a second
     * full-text query over every match. */
    if (!sorted.ranked)
        rank_join = "";
    bs_value_t after[CURSOR_MAX_KEYS];
    int have_after = 0;
    if (cursor != NULL) {
        if (keys.random || page != 1) {
            bs_error_set(&err, BS_ERR_BAD_REQUEST,
                         keys.random ? "A cursor cannot follow a random order (sort=@random)."
                                     : "Use either page or cursor, not both.");
            ctx_send_error(ctx, &err);
            return;
        }
        /* The id last makes the order total, so "after" is one place (the key is NOT
         * NULL: no NULLS clause, which would keep PostgreSQL off the index's order). */
        keys.sql[keys.n] = "\"_r\".\"id\"";
        keys.desc[keys.n++] = 0;
        buf_printf(&order, "%s\"_r\".\"id\" ASC", order.len ? ", " : " ORDER BY ");
        if (cursor_decode(a, cursor, sort ? sort : "", keys.n, after, &have_after, &err) != 0) {
            ctx_send_error(ctx, &err);
            return;
        }
    }
    path_tree_t *expand = path_tree_parse(a, ctx_query(ctx, "expand"), 6, &err);
    path_tree_t *fields =
        err.code == BS_ERR_OK ? path_tree_parse(a, ctx_query(ctx, "fields"), 8, &err) : NULL;
    if (err.code == BS_ERR_OK)
        record_check_expand(ctx->schema, c, expand, ctx->who.superuser, &err);
    if (err.code != BS_ERR_OK) {
        ctx_send_error(ctx, &err);
        return;
    }
    list_job_t *lj = arena_calloc(a, sizeof(*lj));
    if (lj == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    if (!skip_total) {
        buf_init(&lj->count_sql, a);
        if (fts_count.data != NULL) {
            buf_puts(&lj->count_sql, fts_count.data);
        } else {
            buf_puts(&lj->count_sql, "SELECT COUNT(*) FROM ");
            sql_ident(&lj->count_sql, c->name);
            buf_printf(&lj->count_sql, " AS \"_r\" WHERE %s", where.data);
        }
    }
    buf_t head, tail;
    buf_init(&head, a);
    buf_init(&tail, a);
    buf_puts(&head, "SELECT \"_r\".*");
    for (int k = 0; cursor != NULL && k < keys.n; k++)
        buf_printf(&head, ", %s AS \"_k%d\"", keys.sql[k], k);
    buf_puts(&head, " FROM ");
    sql_ident(&head, c->name);
    buf_printf(&head, " AS \"_r\"%s WHERE ", rank_join);
    if (have_after)
        cursor_where(&comp, a, &keys, after, &tail);
    buf_printf(&tail, "%s LIMIT ", order.len ? order.data : "");
    if (cursor != NULL) {
        rules_add_param(&comp, a, bs_val_int(per_page + 1), &tail);
    } else {
        rules_add_param(&comp, a, bs_val_int(per_page), &tail);
        buf_puts(&tail, " OFFSET ");
        rules_add_param(&comp, a, bs_val_int((page - 1) * per_page), &tail);
    }
    buf_init(&lj->sql, a);
    buf_printf(&lj->sql, "%s%s%s", head.data, where.data, tail.data);
    lj->rows_ahead = (cursor != NULL ? 0 : (page - 1) * per_page) + per_page + 1;
    if (search_ph != NULL && !sorted.ranked && sorted.first_field != NULL &&
        collection_index_leads(c, sorted.first_field)) {
        /* The same page read along the sort's index, the search a filter of each
         * row: run_list takes it when the matches are many (scan_pays). */
        buf_init(&lj->scan_sql, a);
        buf_printf(&lj->scan_sql, "%s%.*s AND ", head.data, (int)where_before_search, where.data);
        if (dialect_fts_filter(dialect_get(comp.dialect), &lj->scan_sql, c->id, "\"_r\"", search_ph) == 0)
            lj->scan_sql.data = NULL;
        else
            buf_puts(&lj->scan_sql, tail.data);
        buf_init(&lj->rows_sql, a);
        buf_puts(&lj->rows_sql, "SELECT MAX(rowid) FROM ");
        sql_ident(&lj->rows_sql, c->name);
        if (lj->scan_sql.oom || lj->rows_sql.oom)
            lj->scan_sql.data = NULL;
    }
    lj->known_total = -1;
    if (count_cacheable && !skip_total) {
        /* The count is decided by its statement and parameters alone: the same text
         * and values count the same rows until c is written (deps taken now). */
        buf_t key;
        buf_init(&key, a);
        buf_printf(&key, "n:%s:%s", c->id, where.data);
        for (size_t i = 0; i < nwhere; i++) {
            const bs_value_t *v = &comp.params[i];
            if (v->type == BS_VAL_INT)
                buf_printf(&key, "|i%lld", (long long)v->i);
            else if (v->type == BS_VAL_DOUBLE)
                buf_printf(&key, "|d%.17g", v->d);
            else if (v->type == BS_VAL_TEXT)
                buf_printf(&key, "|t%zu:%.*s", v->n, (int)v->n, v->s);
            else
                buf_puts(&key, "|n");
        }
        size_t vlen;
        char *hit = key.oom
                        ? NULL
                        : cache_get(cache, key.data, key.len, ctx->schema->version, a, &vlen, util_now_ms());
        int64_t t;
        if (hit == NULL && !key.oom) {
            key.data[0] = 'b'; /* the verdict that this count outlasts the budget */
            lj->known_over = count_budget_ms > 0 && cache_get(cache, key.data, key.len, ctx->schema->version,
                                                              a, &vlen, util_now_ms()) != NULL;
            key.data[0] = 'n';
        }
        if (hit != NULL && util_parse_i64(hit, vlen, &t) == 0 && t >= 0) {
            lj->known_total = t;
        } else if (!lj->known_over && !key.oom && memchr(key.data, '\0', key.len) == NULL) {
            lj->count_key = key.data;
            lj->count_deps = (cache_deps_t){.schema_version = ctx->schema->version};
            cache_deps_add(&lj->count_deps, c->id);
        }
    }
    lj->cursor = cursor != NULL;
    lj->nkeys = keys.n;
    lj->sort = sort ? sort : "";
    if (head.oom || tail.oom || lj->sql.oom || (!skip_total && lj->count_sql.oom)) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    lj->r = api_reader(ctx);
    lj->c = c;
    lj->params = comp.params;
    lj->nparams = comp.nparams;
    lj->nwhere = nwhere;
    lj->skip_total = skip_total;
    lj->page = page;
    lj->per_page = per_page;
    lj->expand = expand;
    lj->fields = fields;
    lj->ckey = ckey;
    lj->deps = deps;
    buf_init(&lj->out, a);
    api_read_scan(ctx, run_list, list_done, lj);
}

/* Sends the record as the requester may see it: 200 with it, or 404. After a
 * write the view rule is not applied: the writer's own rule already admitted the
 * caller, and the SDK expects the record back (hidden fields stay hidden). */
typedef struct {
    record_reader_t r;
    const collection_t *c;
    const char *id;
    int after_write;
    const path_tree_t *expand, *fields;
    const char *ckey;
    const char *l2key; /* where to store the view in the Redis L2 tier, or NULL */
    size_t l2len;
    cache_deps_t deps;
    buf_t out;
    int found;
} view_job_t;

static int run_view(store_job_t *job, store_conn_t *conn)
{
    view_job_t *v = ((api_job_t *)job)->data;
    v->r.conn = conn;
    v->found = record_fetch(&v->r, v->c, v->id, v->expand, v->fields, &v->out, &job->err);
    return v->found < 0 ? -1 : 0;
}

static void view_done(api_job_t *j, req_ctx_t *ctx)
{
    view_job_t *v = j->data;
    if (j->job.status != 0)
        ctx_send_error(ctx, &j->job.err);
    else if (v->found == 0)
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
    else if (v->out.oom)
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
    else if (v->after_write)
        ctx_send_json(ctx, 200, v->out.data, v->out.len);
    else {
        if (v->ckey != NULL)
            cache_put(worker_settings()->cache, v->ckey, strlen(v->ckey), v->out.data, v->out.len, &v->deps,
                      util_now_ms());
        if (v->l2key != NULL)
            redis_l2_put(v->l2key, v->l2len, v->out.data, v->out.len);
        api_send_cacheable(ctx, v->out.data, v->out.len);
    }
}

static void send_record_l2(req_ctx_t *ctx, const collection_t *c, const char *id, int after_write,
                           const char *ckey, const cache_deps_t *deps, const char *l2key, size_t l2len);

static void send_record(req_ctx_t *ctx, const collection_t *c, const char *id, int after_write,
                        const char *ckey, const cache_deps_t *deps)
{
    send_record_l2(ctx, c, id, after_write, ckey, deps, NULL, 0);
}

static void send_record_l2(req_ctx_t *ctx, const collection_t *c, const char *id, int after_write,
                           const char *ckey, const cache_deps_t *deps, const char *l2key, size_t l2len)
{
    bs_error_t err;
    bs_error_init(&err);
    path_tree_t *expand = path_tree_parse(&ctx->arena, ctx_query(ctx, "expand"), 6, &err);
    path_tree_t *fields =
        err.code == BS_ERR_OK ? path_tree_parse(&ctx->arena, ctx_query(ctx, "fields"), 8, &err) : NULL;
    if (err.code == BS_ERR_OK)
        record_check_expand(ctx->schema, c, expand, ctx->who.superuser, &err);
    if (err.code != BS_ERR_OK) {
        ctx_send_error(ctx, &err);
        return;
    }
    /* Every field set below (not zeroed: this is the hottest read). id lives in the
     * arena (the route's parameter, or the write's state) as long as the job. */
    view_job_t *v = arena_alloc(&ctx->arena, sizeof(*v));
    if (v == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    v->r = api_reader(ctx);
    v->r.skip_view_rule = after_write;
    v->c = c;
    v->id = id;
    v->after_write = after_write;
    v->expand = expand;
    v->fields = fields;
    v->ckey = ckey;
    v->l2key = NULL;
    v->l2len = 0;
    if (deps != NULL)
        v->deps = *deps;
    v->found = 0;
    buf_init(&v->out, &ctx->arena);
    v->l2key = l2key;
    v->l2len = l2len;
    if (c->type == COLL_VIEW)
        api_read_scan(ctx, run_view, view_done, v); /* its query may aggregate a table */
    else
        api_read(ctx, run_view, view_done, v);
}

/* Adds the collections an expand tree reads; returns 0 if one of them has a view
 * rule that makes the result uncacheable. */
static int expand_deps(const schema_t *s, const collection_t *c, const path_tree_t *e, cache_deps_t *d)
{
    for (; e != NULL; e = e->next) {
        const collection_t *t = record_expand_target(s, c, e->name);
        if (t == NULL)
            continue;
        if (t->type == COLL_VIEW)
            return 0; /* a view's rows follow collections the cache does not track for it */
        if (!api_rule_cacheable(t->rules[RULE_VIEW]))
            return 0;
        cache_deps_add(d, t->id);
        if (!expand_deps(s, t, e->children, d))
            return 0;
    }
    return 1;
}

/* A hash of the definitions a view's body depends on (the collection and those
 * its expand reads, by their `updated` time, which every change of a collection
 * moves and every instance reads from the same database): L2 entries of one
 * definition are never served under another, whatever schema each instance holds. */
static uint64_t definitions_tag(const schema_t *s, const collection_t *c, const path_tree_t *e, uint64_t h)
{
    for (const char *p = c->updated ? c->updated : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ '|') * 1099511628211ull;
    for (; e != NULL; e = e->next) {
        const collection_t *t = record_expand_target(s, c, e->name); /* as expand_deps walks */
        if (t != NULL)
            h = definitions_tag(s, t, e->children, h);
    }
    return h;
}

/* A view waiting for the Redis L2 tier (in the request's arena). */
typedef struct {
    req_ctx_t *ctx;
    const collection_t *c;
    const char *id, *key;
    cache_deps_t deps;
} l2_view_t;

static void l2_view_done(void *arg, int ok, const char *val, size_t vlen, const char *l2key, size_t klen)
{
    l2_view_t *lv = arg;
    req_ctx_t *ctx = lv->ctx;
    if (ctx->req != NULL) {
        if (val != NULL) {
            /* Another instance computed it: this instance keeps a copy too. */
            cache_put(worker_settings()->cache, lv->key, strlen(lv->key), val, vlen, &lv->deps,
                      util_now_ms());
            api_send_cacheable(ctx, val, vlen);
        } else {
            char *k = ok ? arena_strndup(&ctx->arena, l2key, klen) : NULL;
            send_record_l2(ctx, lv->c, lv->id, 0, lv->key, &lv->deps, k, k ? klen : 0);
        }
    }
    ctx_async_end(ctx);
}

void api_records_view(req_ctx_t *ctx, char **params)
{
    const collection_t *c = api_collection(ctx, params[0]);
    if (c == NULL || !rule_open(ctx, c, RULE_VIEW))
        return;
    if (!util_valid_id(params[1], strlen(params[1]))) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
        return;
    }
    struct cache *cache = worker_settings()->cache;
    if (cache == NULL || c->type == COLL_VIEW || !api_rule_cacheable(c->rules[RULE_VIEW]) ||
        ctx->schema->rules_use_headers) {
        send_record(ctx, c, params[1], 0, NULL, NULL);
        return;
    }
    /* The same view for the same requester: its key names both. */
    const char *expand = ctx_query(ctx, "expand"), *fields = ctx_query(ctx, "fields");
    const char *who = ctx->who.superuser ? "su"
                      : ctx->auth        ? json_string_value(json_object_get(ctx->auth, "id"))
                                         : "-";
    char *key =
        arena_printf(&ctx->arena, "v:%s:%s|%s|%s|%s:%s", c->id, params[1], expand ? expand : "",
                     fields ? fields : "", ctx->who.auth_coll ? ctx->who.auth_coll->id : "", who ? who : "");
    size_t vlen;
    char *hit =
        key ? cache_get(cache, key, strlen(key), ctx->schema->version, &ctx->arena, &vlen, util_now_ms())
            : NULL;
    if (hit != NULL) {
        api_send_cacheable(ctx, hit, vlen);
        return;
    }
    /* Dependencies are taken before the read, so a write that lands meanwhile
     * makes the entry stale rather than wrong. */
    cache_deps_t deps = {.schema_version = ctx->schema->version};
    cache_deps_add(&deps, c->id);
    bs_error_t err;
    bs_error_init(&err);
    path_tree_t *ex = path_tree_parse(&ctx->arena, expand, 6, &err);
    int cacheable = key != NULL && err.code == BS_ERR_OK && expand_deps(ctx->schema, c, ex, &deps);
    if (cacheable && deps.n <= CACHE_MAX_DEPS && redis_l2_usable(deps.slot, deps.n)) {
        /* L1 missed: the Redis L2 tier, then the database. */
        l2_view_t *lv = arena_alloc(&ctx->arena, sizeof(*lv));
        char *base =
            lv ? arena_printf(&ctx->arena, "%s|%016llx", key,
                              (unsigned long long)definitions_tag(ctx->schema, c, ex, 1469598103934665603ull))
               : NULL;
        if (base != NULL) {
            lv->ctx = ctx;
            lv->c = c;
            lv->id = params[1];
            lv->key = key;
            lv->deps = deps;
            ctx_async_begin(ctx);
            if (redis_l2_get(base, strlen(base), deps.slot, deps.n, l2_view_done, lv) == 0)
                return;
            ctx_async_end(ctx); /* the caller holds the context */
        }
    }
    send_record(ctx, c, params[1], 0, cacheable ? key : NULL, &deps);
}

/* ---- writes ---- */

typedef enum { W_CREATE, W_UPDATE, W_DELETE } write_op_t;

typedef struct {
    password_req_t pw; /* first: posted back from the password pool */
    req_ctx_t *ctx;
    write_op_t op;
    record_write_t w;
    json_t *body; /* owned */
    char *new_password;
    int verifying_old; /* the current step checks oldPassword */
    /* Read jobs before the write (the requester as a reader; their answers). */
    record_reader_t rr;
    int want_manage;
    enum { OLD_HIDDEN, OLD_BAD, OLD_HASH } old_state;
    api_uploads_t *uploads; /* the request's files, or NULL */
    int files_stored;
    /* The answer rendered in the write job from the record as stored (no expand
     * asked): the write needs no read job after its commit (ADR 0017). */
    const path_tree_t *answer_fields;
    int answer_wanted, answered;
    buf_t answer; /* in the request's arena */
} write_state_t;

/* Releases what a write holds when it ends without being written: the body, and the
 * uploads (deleted from the storage if they were stored). */
static void ws_release(write_state_t *ws)
{
    json_decref(ws->body);
    ws->body = NULL;
    api_files_finish(ws->uploads, 0, ws->w.files_gone);
    ws->uploads = NULL;
    ws->w.files_gone = NULL;
}

/* A password change whose old password is missing or wrong: PocketBase's field error;
 * the body is released. */
static void refuse_old_password(req_ctx_t *ctx, write_state_t *ws)
{
    ws_release(ws);
    bs_error_t err;
    bs_error_init(&err);
    bs_error_field(&err, &ctx->arena, "oldPassword", "validation_invalid_old_password",
                   "Missing or invalid old password.");
    ctx_send_error(ctx, &err);
}

static void write_continue(write_state_t *ws, req_ctx_t *ctx);

/* In the write job, after a create or update succeeded: the answer from the record
 * the write stored (the last change of w->changes naming it), as send_record after
 * the commit would read it (hidden fields hidden, `fields` applied, no view rule).
 * Left unanswered (the read after the commit does it) when there is no such change. */
static void render_answer(write_state_t *ws, store_conn_t *conn)
{
    json_t *ch;
    size_t i = json_array_size(ws->w.changes);
    while (i-- > 0) {
        ch = json_array_get(ws->w.changes, i);
        json_t *rec = json_object_get(ch, "record");
        const char *cid = json_string_value(json_object_get(ch, "collectionId"));
        const char *rid = json_string_value(json_object_get(rec, "id"));
        if (cid == NULL || rid == NULL || strcmp(cid, ws->w.coll->id) != 0 || strcmp(rid, ws->w.id) != 0)
            continue;
        bs_error_t err;
        bs_error_init(&err);
        ws->rr.conn = conn;
        ws->rr.skip_view_rule = 1;
        ws->answer.len = 0;
        ws->answered =
            record_write_json(&ws->rr, ws->w.coll, rec, NULL, ws->answer_fields, &ws->answer, &err) == 0 &&
            !ws->answer.oom;
        return;
    }
}

static int run_write(store_job_t *job, store_conn_t *conn)
{
    write_state_t *ws = ((api_job_t *)job)->data;
    int rc;
    switch (ws->op) {
    case W_CREATE:
        rc = record_create(conn, &ws->w, job->arena, &job->err);
        break;
    case W_UPDATE:
        rc = record_update(conn, &ws->w, job->arena, &job->err);
        break;
    default:
        return record_delete(conn, &ws->w, job->arena, &job->err);
    }
    if (rc == 0 && ws->answer_wanted)
        render_answer(ws, conn);
    return rc;
}

static void write_done(api_job_t *j, req_ctx_t *ctx)
{
    write_state_t *ws = j->data;
    json_decref(ws->body);
    ws->body = NULL;
    json_decref(ws->w.changes); /* left only when the job failed */
    ws->w.changes = NULL;
    /* After the commit: what the write left unreferenced goes; after a failure, the
     * uploads go. */
    api_files_finish(ws->uploads, j->job.status == 0, ws->w.files_gone);
    ws->uploads = NULL;
    ws->w.files_gone = NULL;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (ctx->who.superuser || ws->w.manage || ws->w.password_hash != NULL) {
        /* Superusers' writes, managed accounts and password changes are audited. */
        static const char *actions[] = {"record_create", "record_update", "record_delete"};
        char target[160];
        snprintf(target, sizeof(target), "%s/%s", ws->w.coll->name, ws->w.id);
        api_audit(ctx, actions[ws->op], target, ws->w.password_hash ? "password set" : NULL);
    }
    if (ws->op == W_DELETE) {
        ctx_send_empty(ctx, 204);
        return;
    }
    if (ws->answered) {
        ctx_send_json(ctx, 200, ws->answer.data, ws->answer.len);
        return;
    }
    send_record(ctx, ws->w.coll, ws->w.id, 1, NULL, NULL);
}

static void write_committed(store_job_t *job)
{
    write_state_t *ws = ((api_job_t *)job)->data;
    api_bump_written(ws->w.schema, &ws->w.touched);
    api_changes_publish(&ws->w.changes);
}

static void submit_write(write_state_t *ws);

static void files_stored(req_ctx_t *ctx, void *arg, const bs_error_t *err)
{
    write_state_t *ws = arg;
    ws->files_stored = 1;
    if (err != NULL) {
        ws->uploads = NULL; /* api_files_store already released them */
        ws_release(ws);
        ctx_send_error(ctx, err);
        return;
    }
    submit_write(ws);
}

static void submit_write(write_state_t *ws)
{
    if (ws->uploads != NULL && !ws->files_stored) {
        /* The files first, under names nothing references yet; then the record. */
        api_files_store(ws->ctx, ws->uploads, files_stored, ws);
        return;
    }
    ws->w.changes = api_changes_new();
    /* Without an expand the answer needs nothing the write does not hold already. */
    const char *expand = ctx_query(ws->ctx, "expand");
    ws->answered = 0;
    ws->answer_wanted = ws->op != W_DELETE && ws->w.changes != NULL && (expand == NULL || expand[0] == '\0');
    if (ws->answer_wanted) {
        bs_error_t err;
        bs_error_init(&err);
        ws->answer_fields = path_tree_parse(&ws->ctx->arena, ctx_query(ws->ctx, "fields"), 8, &err);
        ws->answer_wanted = err.code == BS_ERR_OK; /* else send_record reports it */
        ws->rr = api_reader(ws->ctx);
        buf_init(&ws->answer, &ws->ctx->arena);
    }
    store_job_t *job = api_submit(ws->ctx, run_write, write_committed, write_done, ws);
    if (job != NULL) {
        job->events = ws->w.changes; /* the outbox writes them with the job */
        /* A create is one INSERT ... RETURNING (relations checked in it, the rule
         * decided in memory when it can be): the writer may pipeline it with the
         * creates beside it (ADR 0021). Not when its collection's hooks (webhooks,
         * reminders) add statements to every create. */
        job->pipelinable = ws->op == W_CREATE && !record_hooks_wanted(ws->w.coll, "create");
    }
}

static void password_step(write_state_t *ws, req_ctx_t *ctx);

static void password_done(mailbox_msg_t *msg)
{
    write_state_t *ws = (write_state_t *)msg;
    req_ctx_t *ctx = ws->ctx;
    password_step(ws, ctx);
    ctx_async_end(ctx);
}

static void password_step(write_state_t *ws, req_ctx_t *ctx)
{
    if (ctx->req == NULL) {
        ws_release(ws);
        return;
    }
    if (ws->verifying_old) {
        ws->verifying_old = 0;
        if (!ws->pw.ok) {
            refuse_old_password(ctx, ws);
            return;
        }
        ws->w.old_password_ok = 1;
        ws->pw.op = PASSWORD_HASH;
        ws->pw.password = ws->new_password;
        ctx_async_begin(ctx);
        password_submit(&ws->pw);
        return;
    }
    if (!ws->pw.ok) {
        ws_release(ws);
        ctx_send_status(ctx, BS_ERR_INTERNAL, "The password could not be hashed.");
        return;
    }
    ws->w.password_hash = arena_strdup(&ctx->arena, ws->pw.hash);
    submit_write(ws);
}

/* Checks password/passwordConfirm of an auth record write; returns the new
 * password (arena) or NULL; sends the error and returns NULL with *failed set. */
static char *take_password(req_ctx_t *ctx, const collection_t *c, json_t *body, int *failed)
{
    *failed = 0;
    if (c->type != COLL_AUTH)
        return NULL;
    json_t *pw = json_object_get(body, "password");
    if (pw == NULL || (json_is_string(pw) && json_string_length(pw) == 0))
        return NULL;
    bs_error_t err;
    bs_error_init(&err);
    const field_t *f = collection_field(c, "password");
    size_t min = f && f->min > 0 ? (size_t)f->min : 8, max = f && f->max > 0 ? (size_t)f->max : 71;
    if (!json_is_string(pw))
        bs_error_field(&err, &ctx->arena, "password", "validation_invalid_type", "Must be a string.");
    else if (api_has_nul(pw) || api_has_nul(json_object_get(body, "oldPassword")))
        /* It would be hashed only up to the NUL: "ab\u0000xxxxxx" passes the length
         * check and sets the password "ab". */
        bs_error_field(&err, &ctx->arena, api_has_nul(pw) ? "password" : "oldPassword",
                       "validation_invalid_value", "Must not contain NUL characters.");
    else if (json_string_length(pw) < min)
        bs_error_field(&err, &ctx->arena, "password", "validation_min_text_constraint",
                       "Must be at least %zu character(s).", min);
    else if (json_string_length(pw) > max)
        bs_error_field(&err, &ctx->arena, "password", "validation_max_text_constraint",
                       "Must be less than %zu character(s).", max);
    json_t *confirm = json_object_get(body, "passwordConfirm");
    if (!json_is_string(confirm) || !json_equal(confirm, pw))
        bs_error_field(&err, &ctx->arena, "passwordConfirm", "validation_values_mismatch",
                       "Values don't match.");
    if (err.code != BS_ERR_OK) {
        ctx_send_error(ctx, &err);
        *failed = 1;
        return NULL;
    }
    return arena_strdup(&ctx->arena, json_string_value(pw));
}

/* In the preload job: the record exists; the manageRule's answer when asked. */
static int run_preload(store_job_t *job, store_conn_t *conn)
{
    write_state_t *ws = ((api_job_t *)job)->data;
    const collection_t *c = ws->w.coll;
    json_t *cur = record_load(conn, c, "id", ws->w.id, &job->err);
    if (cur == NULL)
        return -1;
    json_decref(cur);
    if (ws->want_manage) {
        ws->rr.conn = conn;
        int m = record_matches(&ws->rr, c, ws->w.id, c->rules[RULE_MANAGE], ws->body, &job->err);
        if (m < 0)
            return -1;
        ws->w.manage = m;
    }
    return 0;
}

static void preload_done(api_job_t *j, req_ctx_t *ctx)
{
    write_state_t *ws = j->data;
    if (j->job.status != 0) {
        ws_release(ws);
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (ctx->req == NULL) {
        ws_release(ws); /* the client left: nothing more to do */
        return;
    }
    write_continue(ws, ctx);
}

/* In the job for a change of one's own password: the update rule first (a caller who
 * may not update the record learns nothing about it, and no hash is spent on it),
 * then the stored hash. */
static int run_old_check(store_job_t *job, store_conn_t *conn)
{
    write_state_t *ws = ((api_job_t *)job)->data;
    const collection_t *c = ws->w.coll;
    ws->rr.conn = conn;
    int allowed = record_matches(&ws->rr, c, ws->w.id, c->rules[RULE_UPDATE], ws->body, &job->err);
    if (allowed < 0)
        return -1;
    ws->old_state = allowed == 1 ? OLD_BAD : OLD_HIDDEN;
    if (allowed != 1)
        return 0;
    json_t *cur = record_load(conn, c, "id", ws->w.id, &job->err);
    const char *hash = cur ? json_string_value(json_object_get(cur, "password")) : NULL;
    if (hash != NULL && strlen(hash) < sizeof(ws->pw.hash)) {
        memcpy(ws->pw.hash, hash, strlen(hash) + 1);
        ws->old_state = OLD_HASH;
    }
    json_decref(cur);
    bs_error_init(&job->err);
    return 0;
}

static void old_check_done(api_job_t *j, req_ctx_t *ctx)
{
    write_state_t *ws = j->data;
    if (j->job.status != 0 || ws->old_state == OLD_HIDDEN || ctx->req == NULL) {
        ws_release(ws);
        if (j->job.status != 0)
            ctx_send_error(ctx, &j->job.err);
        else
            ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
        return;
    }
    json_t *old = json_object_get(ws->body, "oldPassword");
    if (!json_is_string(old) || ws->old_state != OLD_HASH) {
        refuse_old_password(ctx, ws);
        return;
    }
    ws->pw.op = PASSWORD_VERIFY;
    ws->pw.password = arena_strdup(&ctx->arena, json_string_value(old));
    ws->verifying_old = 1;
    ctx_async_begin(ctx);
    password_submit(&ws->pw);
}

/* After the preload (or at once for a create): the password, then the write. */
static void write_continue(write_state_t *ws, req_ctx_t *ctx)
{
    const collection_t *c = ws->w.coll;
    write_op_t op = ws->op;
    json_t *body = ws->body;
    int failed;
    char *password = op == W_DELETE ? NULL : take_password(ctx, c, body, &failed);
    if (op != W_DELETE && failed) {
        (void)body;
        ws_release(ws);
        return;
    }
    if (password == NULL) {
        submit_write(ws);
        return;
    }
    ws->pw.msg.deliver = password_done;
    ws->pw.reply_to = &ctx->worker->mailbox;
    ws->new_password = password;
    /* Changing one's own password needs the old one; superusers, and whoever passes
     * the collection's manageRule, may reset any. */
    if (op == W_UPDATE && !ctx->who.superuser && !ws->w.manage) {
        ws->rr = api_reader(ctx);
        api_read(ctx, run_old_check, old_check_done, ws);
        return;
    }
    ws->pw.op = PASSWORD_HASH;
    ws->pw.password = password;
    ctx_async_begin(ctx);
    password_submit(&ws->pw);
}

static void start_write(req_ctx_t *ctx, write_op_t op, const char *coll, const char *id)
{
    const collection_t *c = api_collection(ctx, coll);
    int which = op == W_CREATE ? RULE_CREATE : op == W_UPDATE ? RULE_UPDATE : RULE_DELETE;
    if (c == NULL || !rule_open(ctx, c, which))
        return;
    if (id != NULL && !util_valid_id(id, strlen(id))) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
        return;
    }
    bs_error_t err;
    bs_error_init(&err);
    body_file_t *files = NULL;
    json_t *body = op == W_DELETE ? json_object() : ctx_body_upload(ctx, &files, &err);
    if (body == NULL) {
        ctx_send_error(ctx, &err);
        return;
    }
    /* What can be refused without the single writer is refused here: values that
     * fail whatever the record holds, then a record that does not exist. */
    if (op != W_DELETE && record_precheck(c, body, api_rules_read_body(c), &ctx->arena, &err) != 0) {
        json_decref(body);
        ctx_send_error(ctx, &err);
        return;
    }
    write_state_t *ws = arena_calloc(&ctx->arena, sizeof(*ws));
    if (ws == NULL) {
        json_decref(body);
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    ws->ctx = ctx;
    ws->op = op;
    ws->body = body;
    ws->w.schema = ctx->schema;
    ws->w.coll = c;
    ws->w.who = &ctx->who;
    ws->w.body = body;
    ws->w.check_rule = 1;
    const json_t *names = NULL;
    if (files != NULL && api_files_prepare(ctx, &ws->uploads, c, body, id, files, "", &names, &err) != 0) {
        ws_release(ws);
        ctx_send_error(ctx, &err);
        return;
    }
    ws->w.uploads = names;
    ws->w.files_gone = api_files_gone_new(ws->uploads, c, op == W_DELETE);
    if (id == NULL) {
        write_continue(ws, ctx);
        return;
    }
    snprintf(ws->w.id, sizeof(ws->w.id), "%s", id);
    /* The record must exist (and, for an auth record's update, the manageRule is
     * asked): one read job. */
    ws->rr = api_reader(ctx);
    ws->want_manage =
        c->type == COLL_AUTH && op == W_UPDATE && !ctx->who.superuser && c->rules[RULE_MANAGE] != NULL;
    api_read(ctx, run_preload, preload_done, ws);
}

void api_records_create(req_ctx_t *ctx, char **params)
{
    start_write(ctx, W_CREATE, params[0], NULL);
}

void api_records_update(req_ctx_t *ctx, char **params)
{
    start_write(ctx, W_UPDATE, params[0], params[1]);
}

void api_records_delete(req_ctx_t *ctx, char **params)
{
    start_write(ctx, W_DELETE, params[0], params[1]);
}
