/*
 * The filter functions (rules/rules_func.c): geoDistance and strftime parsed and
 * compiled (SQL and parameters, both dialects), refused inputs, and the functions'
 * own date and distance code checked against SQLite's strftime and math functions
 * over many dates, modifiers and points, both as constants (computed when
 * compiling) and in the in-memory evaluator.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules.h"

/* A pretend collection: "n" a number, "loc" a geoPoint, "at" a date, "title" text,
 * "tags" multi-valued; @request.query.* are the texts after the last dot. */
static int resolve(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_resolved_t *out,
                   bs_error_t *err)
{
    (void)ud;
    char n[64];
    snprintf(n, sizeof(n), "%.*s", (int)len, name);
    if (strcmp(n, "@request.query.date") == 0) {
        out->is_value = 1;
        out->value = bs_val_text("2023-05-06", 10);
        return 0;
    }
    if (strncmp(n, "@request.query.", 15) == 0) {
        out->is_value = 1;
        out->value = strcmp(n + 15, "none") == 0 ? bs_val_null() : bs_val_text(name + 15, len - 15);
        return 0;
    }
    if (n[0] == '@') {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "unknown");
        return -1;
    }
    if (strcmp(n, "tags") == 0) {
        out->multi = 1;
        out->from = "json_each(\"_r\".\"tags\") AS j";
        out->where = "1";
        out->sql = "j.value";
        return 0;
    }
    int numeric =
        strcmp(n, "n") == 0 || strcmp(n, "n2") == 0 || strcmp(n, "loc.lon") == 0 || strcmp(n, "loc.lat") == 0;
    if (((mods & RULES_MOD_NUMERIC) && !numeric) || ((mods & RULES_MOD_DATE) && strcmp(n, "at") != 0)) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid filter: wrong type for \"%s\".", n);
        return -1;
    }
    if (strncmp(n, "loc.", 4) == 0)
        out->sql = arena_printf(a, "\"_r\".\"loc_%s\"", n + 4);
    else
        out->sql = arena_printf(a, "\"_r\".\"%s\"", n);
    return 0;
}

static int compile_in(arena_t *a, const char *text, rules_dialect_t d, buf_t *out, rules_compiler_t *c,
                      bs_error_t *err)
{
    memset(c, 0, sizeof(*c));
    c->resolve = resolve;
    c->now_ms = 1735689600000; /* 2025-01-01 00:00:00 */
    c->dialect = d;
    buf_init(out, a);
    bs_error_init(err);
    rules_node_t *root = rules_parse(a, text, strlen(text), NULL, err);
    if (root == NULL)
        return -1;
    return rules_compile(c, a, root, out, err);
}

static void join_params(const rules_compiler_t *c, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < c->nparams; i++) {
        char one[160];
        const bs_value_t *v = &c->params[i];
        if (v->type == BS_VAL_TEXT)
            snprintf(one, sizeof(one), "%.*s", (int)v->n, v->s);
        else if (v->type == BS_VAL_INT)
            snprintf(one, sizeof(one), "%lld", (long long)v->i);
        else if (v->type == BS_VAL_DOUBLE)
            snprintf(one, sizeof(one), "%.6f", v->d);
        else
            snprintf(one, sizeof(one), "null");
        if (i)
            strncat(out, "|", cap - strlen(out) - 1);
        strncat(out, one, cap - strlen(out) - 1);
    }
}

#define GEO(a, b, c, d)                                                                                      \
    "CAST(6371 * acos(min(1.0, max(-1.0, cos(radians(" b ")) * cos(radians(" d ")) * cos(radians(" c         \
    ") - radians(" a ")) + sin(radians(" b ")) * sin(radians(" d "))))) AS REAL)"

#define SQ(f, t)                                                                                             \
    "CAST(COALESCE(CASE WHEN julianday(" t ") >= 1721425.5 THEN strftime(" f ", " t ") END, '') AS TEXT)"

static const struct {
    const char *filter, *sql, *params;
} cases[] = {
    {"geoDistance(loc.lon, loc.lat, 2.35, 48.85) < 500",
     "(" GEO("\"_r\".\"loc_lon\"", "\"_r\".\"loc_lat\"", "?1", "?2") " < ?3)", "2.350000|48.850000|500"},
    {"geoDistance(n, 1, @request.query.7.5, n) > 0",
     "(" GEO("\"_r\".\"n\"", "?1", "?2", "\"_r\".\"n\"") " > ?3)", "1.000000|7.500000|0"},
    /* Constants: computed once (Paris-London 343.5 km). */
    {"geoDistance(2.3522, 48.8566, -0.1276, 51.5072) < 344", "(?1 < ?2)", "343.529865|344"},
    /* A request value that is no number makes the distance NULL. */
    {"geoDistance(loc.lon, loc.lat, @request.query.abc, 1) < 5", "(?1 < ?2)", "null|5"},
    {"geoDistance(loc.lon, loc.lat, @request.query.none, 1) = null", "(COALESCE(?1, '') = '')", "null"},
    {"strftime('%Y', at) = '2024'", "(" SQ("?1", "\"_r\".\"at\"") " = ?2)", "%Y|2024"},
    {"strftime('%Y-%m', at, 'start of month', '-1 day') = '2024-01'",
     "(" SQ("?1", "\"_r\".\"at\", ?2, ?3") " = ?4)", "%Y-%m|start of month|-1 day|2024-01"},
    {"'x' < strftime('%H:%M', at)", "(?2 < " SQ("?1", "\"_r\".\"at\"") ")", "%H:%M|x"},
    {"strftime('%Y-%m-%d', '2024-02-29', '+1 days') = '2024-03-01'", "(?1 = ?2)", "2024-03-01|2024-03-01"},
    {"strftime('%Y') = '2025'", "(?1 = ?2)", "2025|2025"},
    {"strftime('%s', 86400.5, 'unixepoch') = '86400'", "(?1 = ?2)", "86400|86400"},
    {"strftime('%Y', 'junk') = ''", "(COALESCE(?1, '') = '')", ""},
    {"strftime('%Y', @request.query.date) = '2023'", "(?1 = ?2)", "2023|2023"},
    {"geoDistance( n , n , n , n )<1",
     "(" GEO("\"_r\".\"n\"", "\"_r\".\"n\"", "\"_r\".\"n\"", "\"_r\".\"n\"") " < ?1)", "1"},
};

static void test_compile_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        arena_t a;
        arena_init(&a, 4096);
        buf_t out;
        rules_compiler_t c;
        bs_error_t err;
        if (compile_in(&a, cases[i].filter, RULES_DIALECT_SQLITE, &out, &c, &err) != 0)
            fail_msg("%s: %s", cases[i].filter, err.message);
        char params[512];
        join_params(&c, params, sizeof(params));
        if (strcmp(out.data, cases[i].sql) != 0 || strcmp(params, cases[i].params) != 0)
            fail_msg("%s\n  got      %s [%s]\n  expected %s [%s]", cases[i].filter, out.data, params,
                     cases[i].sql, cases[i].params);
        arena_free(&a);
    }
}

static void test_postgres_shape(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 4096);
    buf_t out;
    rules_compiler_t c;
    bs_error_t err;
    assert_int_equal(
        compile_in(&a, "geoDistance(loc.lon, loc.lat, 1, 2) < 5", RULES_DIALECT_POSTGRES, &out, &c, &err), 0);
    assert_non_null(strstr(out.data, "CASE WHEN \"_r\".\"loc_lon\" IS NULL OR"));
    assert_non_null(strstr(out.data, "LEAST(1.0, GREATEST(-1.0,"));
    assert_non_null(strstr(out.data, "CAST($1 AS double precision)"));
    assert_int_equal(compile_in(&a, "strftime('%Y-%w %s', at, 'start of month', '+2 hours') = 'x'",
                                RULES_DIALECT_POSTGRES, &out, &c, &err),
                     0);
    const char *want[] = {"CAST(NULLIF(\"_r\".\"at\", '') AS timestamp)",
                          "(CASE WHEN extract(year from date_trunc('month', \"__t",
                          "+ interval '2 hours')",
                          "to_char(\"__t",
                          "'YYYY')",
                          "extract(dow from",
                          "extract(epoch from",
                          "COALESCE((SELECT CASE WHEN"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (strstr(out.data, want[i]) == NULL)
            fail_msg("missing %s in %s", want[i], out.data);
    /* The literal runs of the format are parameters: "-" and " ", then 'x'. */
    char params[256];
    join_params(&c, params, sizeof(params));
    assert_string_equal(params, "-| |x");
    arena_free(&a);
}

static void test_rejected(void **state)
{
    (void)state;
    static const struct {
        const char *filter, *msg;
    } bad[] = {
        {"geoDistance(1, 2, 3) < 1", "4 arguments"},
        {"geoDistance() < 1", "4 arguments"},
        {"geoDistance(1, 2, 3, 4, 5) < 1", "4 arguments"},
        {"geoDistance('a', 2, 3, 4) < 1", "numbers or fields"},
        {"geoDistance(true, 2, 3, 4) < 1", "numbers or fields"},
        {"geoDistance(title, 2, 3, 4) < 1", "wrong type"},
        {"geoDistance(tags, 2, 3, 4) < 1", "single value"},
        {"geoDistance(n:lower, 2, 3, 4) < 1", "modifiers"},
        {"geoDistance(geoDistance(1, 2, 3, 4), 2, 3, 4) < 1", "another function"},
        {"geoDistance (1, 2, 3, 4) < 1", "operator"},
        {"geoDistance(1, 2, 3, 4", "expected ',' or ')'"},
        {"geoDistance(1 2, 3, 4) < 1", "expected ',' or ')'"},
        {"geoDistance(1, 2, 3, 4,) < 1", "after ','"},
        {"geoDistance(1, 2, 3, 1e999) < 1", "invalid number"},
        {"nope(1) = 1", "unknown function"},
        {"a.geoDistance(1) = 1", "unknown function"},
        {"geodistance(1, 2, 3, 4) = 1", "unknown function"},
        {"n = 1, n = 2", "expected '&&'"},
        {"strftime() = ''", "takes a format"},
        {"strftime(at) = ''", "format text"},
        {"strftime('%Y', title) = ''", "wrong type"},
        {"strftime('%Y', tags) = ''", "single value"},
        {"strftime('%Y', 'now', 'start of week') = ''", "modifiers"},
        {"strftime('%Y', 'now', '+1 month') = ''", "modifiers"},
        {"strftime('%Y', 'now', '+1.5 days') = ''", "modifiers"},
        {"strftime('%Y', 'now', '+ 1 days') = ''", "modifiers"},
        {"strftime('%Y', 'now', '+12345678 days') = ''", "modifiers"},
        {"strftime('%Y', 'now', 'START OF DAY') = ''", "modifiers"},
        {"strftime('%Y', 'now', 'unixepoch') = ''", "unixepoch"},
        {"strftime('%Y', 5, 'start of day', 'unixepoch') = ''", "unixepoch"},
        {"strftime('%Y', at, n) = ''", "modifiers"},
        {"strftime('%Y', null) = ''", "time must be"},
        {"strftime('%e', at) = ''", "may use only"},
        {"strftime('%', at) = ''", "may use only"},
        {"strftime('%Y%m%d%H%M%S%f%j%w%s%Y%m%d%H%M%S%f', at) = ''", "too many specifiers"},
        {"strftime('1', 2, 'start of day', 'start of day', 'start of day', 'start of day', 'start of day', "
         "'start of day', 'start of day', 'start of day', 'start of day') = ''",
         "too many arguments"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        arena_t a;
        arena_init(&a, 4096);
        buf_t out;
        rules_compiler_t c;
        bs_error_t err;
        if (compile_in(&a, bad[i].filter, RULES_DIALECT_SQLITE, &out, &c, &err) == 0)
            fail_msg("accepted %s", bad[i].filter);
        assert_int_equal(bs_status(err.code), 400);
        if (strstr(err.message, bad[i].msg) == NULL)
            fail_msg("%s: message \"%s\" lacks \"%s\"", bad[i].filter, err.message, bad[i].msg);
        arena_free(&a);
    }
}

/* ---- against SQLite ---- */

static sqlite3 *db;

/* SQLite's strftime(fmt, date, mods...) as text ('' for NULL). */
static void sqlite_strftime(const char *fmt, const char *date, const char *const *mods, size_t nmods,
                            int number, char *out, size_t cap)
{
    /* Years 1 to 9999, as the compiled SQL answers (see dialect.c). */
    char targs[64] = "?2";
    for (size_t i = 0; i < nmods; i++)
        snprintf(targs + strlen(targs), sizeof(targs) - strlen(targs), ", ?%zu", i + 3);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT COALESCE(CASE WHEN julianday(%s) >= 1721425.5 THEN strftime(?1, %s) END, '')", targs,
             targs);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, fmt, -1, SQLITE_STATIC);
    if (number)
        sqlite3_bind_double(st, 2, atof(date));
    else
        sqlite3_bind_text(st, 2, date, -1, SQLITE_STATIC);
    for (size_t i = 0; i < nmods; i++)
        sqlite3_bind_text(st, (int)i + 3, mods[i], -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

static const char *eval_date;
static int eval_lookup(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_evalue_t *out)
{
    (void)ud;
    (void)a;
    (void)mods;
    if (len == 2 && memcmp(name, "at", 2) == 0) {
        out->value = bs_val_text(eval_date, strlen(eval_date));
        return 0;
    }
    return -1;
}

static void test_strftime_matches_sqlite(void **state)
{
    (void)state;
    static const char *dates[] = {
        "2024-02-29 12:34:56.789Z", "2023-12-31 23:59:59.999Z",
        "1970-01-01 00:00:00.000Z", "1969-12-31 23:59:59.999Z",
        "2000-02-29 00:00:00.000Z", "1900-03-01 06:07:08.009Z",
        "0000-01-01 00:00:00.000Z", "9999-12-31 23:59:59.999Z",
        "2024-07-04 00:00:00.000Z", "2024-01-15",
        "2024-01-15 10:20",         "2024-01-15T10:20:30",
        "2021-03-28 01:30:00.5Z",   "0001-01-01 00:00:00.000Z",
        "1582-10-10 10:10:10.100Z",
    };
    static const char *fmts[] = {"%Y-%m-%d %H:%M:%S", "%f|%j|%w", "%s", "%%%Y%%", "at %H h", ""};
    static const char *mods[][3] = {
        {NULL},
        {"start of day"},
        {"start of month"},
        {"start of year"},
        {"+1 days"},
        {"-36 hours"},
        {"+90 minutes"},
        {"-1 seconds"},
        {"+1 second"},
        {"+9999999 days"},
        {"-9999999 days", "+9999999 days"},
        {"start of month", "-1 day"},
        {"+1 days", "start of year", "-1 hour"},
        {"-0 days"},
        {"+1 minute", "start of day"},
    };
    int checked = 0;
    for (size_t di = 0; di < sizeof(dates) / sizeof(dates[0]); di++)
        for (size_t fi = 0; fi < sizeof(fmts) / sizeof(fmts[0]); fi++)
            for (size_t mi = 0; mi < sizeof(mods) / sizeof(mods[0]); mi++) {
                size_t nm = 0;
                while (nm < 3 && mods[mi][nm] != NULL)
                    nm++;
                char want[128];
                sqlite_strftime(fmts[fi], dates[di], mods[mi], nm, 0, want, sizeof(want));
                /* As a constant: computed when compiling. */
                char filter[256];
                snprintf(filter, sizeof(filter), "strftime('%s', '%s'", fmts[fi], dates[di]);
                for (size_t k = 0; k < nm; k++)
                    snprintf(filter + strlen(filter), sizeof(filter) - strlen(filter), ", '%s'", mods[mi][k]);
                strcat(filter, ") < 'zz'"); /* not = '': that compares without the value */
                arena_t a;
                arena_init(&a, 4096);
                buf_t out;
                rules_compiler_t c;
                bs_error_t err;
                if (compile_in(&a, filter, RULES_DIALECT_SQLITE, &out, &c, &err) != 0)
                    fail_msg("%s: %s", filter, err.message);
                assert_int_equal(c.params[0].type, BS_VAL_TEXT);
                if (strlen(want) != c.params[0].n || memcmp(want, c.params[0].s, c.params[0].n) != 0)
                    fail_msg("%s: computed '%.*s', SQLite '%s'", filter, (int)c.params[0].n, c.params[0].s,
                             want);
                /* In the evaluator, over a column holding the date. */
                snprintf(filter, sizeof(filter), "strftime('%s', at", fmts[fi]);
                for (size_t k = 0; k < nm; k++)
                    snprintf(filter + strlen(filter), sizeof(filter) - strlen(filter), ", '%s'", mods[mi][k]);
                snprintf(filter + strlen(filter), sizeof(filter) - strlen(filter), ") = '%s'", want);
                rules_node_t *root = rules_parse(&a, filter, strlen(filter), NULL, &err);
                assert_non_null(root);
                eval_date = dates[di];
                rules_evaluator_t ev = {.lookup = eval_lookup, .now_ms = 1735689600000};
                rules_truth_t truth = rules_eval(&ev, &a, root);
                /* Before year 1 (at any step) the evaluator leaves the answer to the database. */
                if (truth != RULES_TRUE &&
                    !(truth == RULES_UNKNOWN && (want[0] == 0 || strncmp(dates[di], "0000", 4) == 0)))
                    fail_msg("evaluator: %s on %s", filter, dates[di]);
                arena_free(&a);
                checked++;
            }
    /* Numbers: Julian days, and Unix seconds. */
    static const char *numbers[] = {"2460000.5", "2440587.5", "0", "1721059.5",
                                    "5373484.4", "5373484.6", "-1"};
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++)
        for (int as_unix = 0; as_unix < 2; as_unix++) {
            const char *m[] = {"unixepoch"};
            char want[128];
            sqlite_strftime("%Y-%m-%d %H:%M:%f", numbers[i], m, (size_t)as_unix, 1, want, sizeof(want));
            char filter[160];
            snprintf(filter, sizeof(filter), "strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s%s) < 'zz'", numbers[i],
                     as_unix ? ", 'unixepoch'" : "");
            arena_t a;
            arena_init(&a, 4096);
            buf_t out;
            rules_compiler_t c;
            bs_error_t err;
            if (compile_in(&a, filter, RULES_DIALECT_SQLITE, &out, &c, &err) != 0)
                fail_msg("%s: %s", filter, err.message);
            if (strlen(want) != c.params[0].n || memcmp(want, c.params[0].s, c.params[0].n) != 0)
                fail_msg("%s: computed '%.*s', SQLite '%s'", filter, (int)c.params[0].n, c.params[0].s, want);
            arena_free(&a);
            checked++;
        }
    print_message("%d strftime results agree with SQLite\n", checked);
}

static void test_geo_distance_matches_sqlite(void **state)
{
    (void)state;
    srand(18);
    int checked = 0;
    for (int i = 0; i < 300; i++) {
        double p[4];
        for (int k = 0; k < 4; k++)
            p[k] = (k % 2 == 0 ? 360.0 : 180.0) * ((double)rand() / RAND_MAX - 0.5);
        if (i < 4) /* the same point, the antipode, the poles */
            p[2] = i == 0   ? p[0]
                   : i == 1 ? p[0] + 180
                            : 0,
            p[3] = i == 0   ? p[1]
                   : i == 1 ? -p[1]
                            : (i == 2 ? 90 : -90);
        char filter[256];
        snprintf(filter, sizeof(filter), "geoDistance(%.17g, %.17g, %.17g, %.17g) = 0", p[0], p[1], p[2],
                 p[3]);
        arena_t a;
        arena_init(&a, 4096);
        buf_t out;
        rules_compiler_t c;
        bs_error_t err;
        if (compile_in(&a, filter, RULES_DIALECT_SQLITE, &out, &c, &err) != 0)
            fail_msg("%s: %s", filter, err.message);
        assert_int_equal(c.params[0].type, BS_VAL_DOUBLE);
        double ours = c.params[0].d;
        /* The SQL the compiler writes for columns, run by SQLite on a row holding the
         * same numbers, must put the distance within a hair of ours. */
        arena_t b;
        arena_init(&b, 4096);
        rules_compiler_t c2;
        char range[512];
        snprintf(
            range, sizeof(range),
            "geoDistance(loc.lon, loc.lat, n, n2) > %.17g && geoDistance(loc.lon, loc.lat, n, n2) < %.17g",
            ours - 1e-7 * (1 + ours), ours + 1e-7 * (1 + ours));
        if (compile_in(&b, range, RULES_DIALECT_SQLITE, &out, &c2, &err) != 0)
            fail_msg("%s: %s", range, err.message);
        char *sql = arena_printf(&b, "SELECT count(*) FROM t AS \"_r\" WHERE %s", out.data);
        sqlite3_stmt *st;
        sqlite3_exec(db, "DELETE FROM t", NULL, NULL, NULL);
        /* Bound, not text: SQLite's own decimal reader may differ from strtod by an ulp. */
        sqlite3_stmt *ins;
        assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?, ?, ?, ?)", -1, &ins, NULL),
                         SQLITE_OK);
        for (int k = 0; k < 4; k++)
            sqlite3_bind_double(ins, k + 1, p[k]);
        assert_int_equal(sqlite3_step(ins), SQLITE_DONE);
        sqlite3_finalize(ins);
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
            fail_msg("%s: %s", sqlite3_errmsg(db), sql);
        for (size_t k = 0; k < c2.nparams; k++)
            sqlite3_bind_double(st, (int)k + 1,
                                c2.params[k].type == BS_VAL_INT ? (double)c2.params[k].i : c2.params[k].d);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        if (sqlite3_column_int(st, 0) != 1)
            fail_msg("%s: SQLite's distance is not %.17g", filter, ours);
        sqlite3_finalize(st);
        assert_true(ours >= 0 && ours <= 20015.1);
        arena_free(&b);
        arena_free(&a);
        checked++;
    }
    print_message("%d distances agree with SQLite\n", checked);
}

static int geo_lookup(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_evalue_t *out)
{
    (void)ud;
    (void)a;
    (void)mods;
    if (len == 7 && memcmp(name, "loc.lon", 7) == 0)
        out->value = bs_val_double(2.3522);
    else if (len == 7 && memcmp(name, "loc.lat", 7) == 0)
        out->value = bs_val_double(48.8566);
    else if (len > 15 && memcmp(name, "@request.query.", 15) == 0) {
        out->is_const = 1;
        out->value = bs_val_text(name + 15, len - 15);
    } else
        return -1;
    return 0;
}

static void test_eval_geo(void **state)
{
    (void)state;
    static const struct {
        const char *filter;
        rules_truth_t want;
    } evals[] = {
        {"geoDistance(loc.lon, loc.lat, -0.1276, 51.5072) < 344", RULES_TRUE},
        {"geoDistance(loc.lon, loc.lat, -0.1276, 51.5072) < 343", RULES_FALSE},
        {"geoDistance(loc.lon, loc.lat, loc.lon, loc.lat) < 0.000001", RULES_TRUE},
        {"geoDistance(loc.lon, loc.lat, @request.query.2.3522, 48.8566) < 0.001", RULES_TRUE},
        {"geoDistance(loc.lon, loc.lat, @request.query.x, 48.85) < 99999", RULES_FALSE},
        {"geoDistance(loc.lon, loc.lat, @request.query.x, 48.85) = null", RULES_TRUE},
        {"geoDistance(loc.lon, loc.lat, @request.query.nan, 48.85) = ''", RULES_TRUE},
        {"geoDistance(loc.lon, loc.lat, 1, 1) > 0 && strftime('%Y', '2024-01-01') = '2024'", RULES_TRUE},
        {"strftime('%Y', @request.query.junk) = ''", RULES_TRUE},
    };
    for (size_t i = 0; i < sizeof(evals) / sizeof(evals[0]); i++) {
        arena_t a;
        arena_init(&a, 4096);
        bs_error_t err;
        bs_error_init(&err);
        rules_node_t *root = rules_parse(&a, evals[i].filter, strlen(evals[i].filter), NULL, &err);
        if (root == NULL)
            fail_msg("%s: %s", evals[i].filter, err.message);
        rules_evaluator_t ev = {.lookup = geo_lookup, .now_ms = 1735689600000};
        rules_truth_t t = rules_eval(&ev, &a, root);
        if (t != evals[i].want)
            fail_msg("%s: %d, expected %d", evals[i].filter, t, evals[i].want);
        arena_free(&a);
    }
}

static int setup(void **state)
{
    (void)state;
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
        return -1;
    return sqlite3_exec(db, "CREATE TABLE t (loc_lon REAL, loc_lat REAL, n REAL, n2 REAL)", NULL, NULL, NULL);
}

static int teardown(void **state)
{
    (void)state;
    sqlite3_close(db);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compile_table),
        cmocka_unit_test(test_postgres_shape),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_strftime_matches_sqlite),
        cmocka_unit_test(test_geo_distance_matches_sqlite),
        cmocka_unit_test(test_eval_geo),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
