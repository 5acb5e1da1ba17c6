/*
 * The filter/rule language. Properties checked on every input that compiles:
 *   1. user values never reach the SQL text: no quote character appears in it
 *      except in the compiler's own fixed fragments ('' and '\' and '%');
 *   2. the SQL is valid: SQLite prepares it inside a real statement;
 *   3. the in-memory evaluator agrees with SQLite: on every row of a small table,
 *      whenever rules_eval decides (true or false), SQLite's answer is the same.
 * Identifiers resolve to columns of a test table; names starting with "m" are
 * multi-valued (json_each), "@request.auth.x" are values, "@request.body.l" is a
 * list of constants (one JSON parameter read by json_each), "@request.body.e" an
 * empty one; "j.<path>" is a path into the JSON column j (the real resolver's
 * dialect_json_path, and the evaluator reads it as core/record_eval.c does).
 * Function arguments (geoDistance, strftime) resolve as the real resolver does: a
 * number is "n" or the columns "x" and "y" (a point's lon and lat), a date is "d..."
 * (date text, some of it not in Basalt's stored form); other fields are refused.
 */
#include <assert.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/resolve.h"
#include "rules/dialect.h"
#include "rules/rules.h"

static sqlite3 *db;

/* The list "@request.body.l" stands for: text (with LIKE wildcards), empty, numbers. */
static bs_value_t list_vals[5];
static void list_init(void)
{
    list_vals[0] = bs_val_text("abc", 3);
    list_vals[1] = bs_val_text("", 0);
    list_vals[2] = bs_val_int(5);
    list_vals[3] = bs_val_text("A_b%c\\", 6);
    list_vals[4] = bs_val_double(2.5);
}

static int resolve(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_resolved_t *out,
                   bs_error_t *err)
{
    (void)mods;
    if (len > 14 && memcmp(name, "@request.auth.", 14) == 0) {
        out->is_value = 1;
        out->value = bs_val_text(name + 14, len - 14);
        return 0;
    }
    if (len == 15 && memcmp(name, "@request.body.l", 15) == 0 &&
        !(mods & (RULES_MOD_LENGTH | RULES_MOD_ISSET))) {
        out->is_value = 1;
        out->multi = 1;
        out->values = list_vals;
        out->nvalues = 5;
        return 0;
    }
    if (len == 15 && memcmp(name, "@request.body.e", 15) == 0 &&
        !(mods & (RULES_MOD_LENGTH | RULES_MOD_ISSET))) {
        /* An empty list: no positive comparison holds over it, every negation does. */
        out->is_value = 1;
        out->multi = 1;
        out->values = list_vals;
        out->nvalues = 0;
        return 0;
    }
    if (len > 2 && memcmp(name, "j.", 2) == 0) {
        dialect_json_seg_t segs[RESOLVE_MAX_JSON_SEGS];
        size_t n;
        dialect_json_views_t v;
        if (mods != 0) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "no modifiers on JSON paths");
            return -1;
        }
        if (resolve_json_segments(name + 2, len - 2, segs, &n, "", err) != 0)
            return -1;
        if (dialect_json_path(dialect_get(RULES_DIALECT_SQLITE), ud, a, "\"_r\".\"j\"", segs, n, &v) != 0) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        out->sql = v.value;
        out->json_num = v.num;
        out->json_text = v.text;
        out->sort_sql = v.sort;
        return 0;
    }
    if (name[0] == '@' || len > 40) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "unknown");
        return -1;
    }
    if (((mods & RULES_MOD_NUMERIC) && name[0] != 'n' && name[0] != 'x' && name[0] != 'y') ||
        ((mods & RULES_MOD_DATE) && name[0] != 'd')) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "not a number / date field");
        return -1;
    }
    if (name[0] == 'x' || name[0] == 'y' || name[0] == 'd') {
        out->sql = name[0] == 'x' ? "\"_r\".\"x\"" : name[0] == 'y' ? "\"_r\".\"y\"" : "\"_r\".\"d\"";
        return 0;
    }
    if (name[0] == 'm') {
        /* A fresh alias each time, as the real resolver does. */
        static int seq;
        seq++;
        out->multi = 1;
        out->from = arena_printf(a, "json_each(\"_r\".\"m\") AS j%d", seq);
        out->where = "1";
        out->sql = arena_printf(a, "j%d.value", seq);
        return 0;
    }
    out->sql = name[0] == 'n' ? "\"_r\".\"n\"" : "\"_r\".\"t\"";
    return 0;
}

/* The rows the evaluator is compared on, as the database and as values. */
#define NROWS 5
static const struct {
    const char *t; /* NULL: SQL NULL */
    int n_null;
    double n;
    const char *m[3];
    size_t nm;
    const char *j; /* the JSON column's text (NULL: SQL NULL; it may be no JSON) */
    double x, y;   /* a point: lon, lat */
    const char *d; /* a date column */
} rows[NROWS] = {
    {"abc",
     0,
     5,
     {"x", "y"},
     2,
     "{\"a\":1,\"b\":{\"c\":\"x\",\"0\":1},\"l\":[1,\"2\",true],\"s\":\"5\",\"t\":\"abc\"}",
     2.35,
     48.85,
     "2024-03-10 08:30:00.000Z"},
    {"", 0, 0, {0}, 0, "{\"a\":\"1\",\"b\":{\"c\":\"X\"},\"l\":[],\"e\":\"\",\"t\":\"A_b%c\\\\\"}", 0, 0, ""},
    {NULL, 1, 0, {"abc"}, 1, "oops", -180, -90, "2024-02-30 23:59:59.999Z"},
    {"A_b%c\\",
     0,
     2.5,
     {"", "A"},
     2,
     "{\"a\":2.5,\"b\":null,\"l\":[null,{\"k\":1}],\"s\":5,\"f\":false,\"e\":0}",
     180,
     90,
     "0000-01-01 00:00:00.000Z"},
    {"\xc3\xa9t\xc3\xa9 X",
     0,
     -7,
     {"x", "x", "z"},
     3,
     "[1,\"a\",[2],-7]",
     -74.006,
     40.7128,
     "9999-12-31 23:59:59.999Z"},
};
static int cur_row;

static int lookup(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_evalue_t *out)
{
    (void)ud;
    (void)mods;
    if (len > 14 && memcmp(name, "@request.auth.", 14) == 0) {
        out->is_const = 1;
        out->value = bs_val_text(name + 14, len - 14);
        return 0;
    }
    if (len == 15 && memcmp(name, "@request.body.l", 15) == 0 &&
        !(mods & (RULES_MOD_LENGTH | RULES_MOD_ISSET))) {
        out->is_const = 1;
        out->multi = 1;
        out->values = list_vals;
        out->nvalues = 5;
        return 0;
    }
    if (len == 15 && memcmp(name, "@request.body.e", 15) == 0 &&
        !(mods & (RULES_MOD_LENGTH | RULES_MOD_ISSET))) {
        out->is_const = 1;
        out->multi = 1;
        out->values = list_vals;
        out->nvalues = 0;
        return 0;
    }
    if (len > 2 && memcmp(name, "j.", 2) == 0) {
        /* As core/record_eval.c's lookup_json_path reads the record's JSON. */
        dialect_json_seg_t segs[RESOLVE_MAX_JSON_SEGS];
        size_t n;
        bs_error_t err;
        bs_error_init(&err);
        if (mods != 0 || resolve_json_segments(name + 2, len - 2, segs, &n, "", &err) != 0)
            return -1;
        json_t *doc = rows[cur_row].j ? json_loads(rows[cur_row].j, JSON_DECODE_ANY, NULL) : NULL;
        const json_t *v = resolve_json_walk(doc, segs, n);
        if (json_is_array(v) || json_is_object(v)) {
            out->unknown = 1;
        } else {
            out->json = 1;
            out->value = resolve_json_scalar(v);
            if (out->value.type == BS_VAL_TEXT) {
                char *copy = arena_strndup(a, out->value.s, out->value.n);
                out->value.s = copy;
            }
        }
        json_decref(doc);
        return 0;
    }
    if (name[0] == '@' || len > 40)
        return -1;
    if (name[0] == 'x' || name[0] == 'y') {
        out->value = bs_val_double(name[0] == 'x' ? rows[cur_row].x : rows[cur_row].y);
        return 0;
    }
    if (name[0] == 'd') {
        out->value = bs_val_text(rows[cur_row].d, strlen(rows[cur_row].d));
        return 0;
    }
    if (name[0] == 'm') {
        bs_value_t *v = arena_alloc(a, 3 * sizeof(*v));
        for (size_t i = 0; i < rows[cur_row].nm; i++)
            v[i] = bs_val_text(rows[cur_row].m[i], strlen(rows[cur_row].m[i]));
        out->multi = 1;
        out->values = v;
        out->nvalues = rows[cur_row].nm;
        return 0;
    }
    if (name[0] == 'n') {
        double n = rows[cur_row].n;
        out->value = rows[cur_row].n_null      ? bs_val_null()
                     : n == (double)(int64_t)n ? bs_val_int((int64_t)n)
                                               : bs_val_double(n);
        return 0;
    }
    out->value = rows[cur_row].t ? bs_val_text(rows[cur_row].t, strlen(rows[cur_row].t)) : bs_val_null();
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    list_init();
    sqlite3_open(":memory:", &db);
    sqlite3_exec(
        db,
        "CREATE TABLE t (k INTEGER PRIMARY KEY, t TEXT, n NUMERIC, m JSON, j JSON, x REAL, y REAL, d "
        "TEXT)",
        NULL, NULL, NULL);
    for (int i = 0; i < NROWS; i++) {
        sqlite3_stmt *st;
        sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)", -1, &st, NULL);
        if (rows[i].j)
            sqlite3_bind_text(st, 5, rows[i].j, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 6, rows[i].x);
        sqlite3_bind_double(st, 7, rows[i].y);
        sqlite3_bind_text(st, 8, rows[i].d, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 1, i);
        if (rows[i].t)
            sqlite3_bind_text(st, 2, rows[i].t, -1, SQLITE_STATIC);
        if (!rows[i].n_null)
            sqlite3_bind_double(st, 3, rows[i].n);
        char m[128] = "[";
        for (size_t k = 0; k < rows[i].nm; k++)
            snprintf(m + strlen(m), sizeof(m) - strlen(m), "%s\"%s\"", k ? "," : "", rows[i].m[k]);
        strcat(m, "]");
        sqlite3_bind_text(st, 4, m, -1, SQLITE_TRANSIENT);
        sqlite3_step(st);
        sqlite3_finalize(st);
    }
    return 0;
}

static void bind_all(sqlite3_stmt *st, const rules_compiler_t *c)
{
    for (size_t i = 0; i < c->nparams; i++) {
        bs_value_t v = c->params[i];
        int k = (int)i + 1;
        if (v.type == BS_VAL_INT)
            sqlite3_bind_int64(st, k, v.i);
        else if (v.type == BS_VAL_DOUBLE)
            sqlite3_bind_double(st, k, v.d);
        else if (v.type == BS_VAL_TEXT)
            sqlite3_bind_text(st, k, v.s, (int)v.n, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, k);
    }
}

/* Property 3, on every row. */
static void check_eval(arena_t *a, const rules_node_t *root, const char *where, const rules_compiler_t *c)
{
    char *sql = arena_printf(a, "SELECT 1 FROM t AS \"_r\" WHERE k = ?%zu AND (%s)", c->nparams + 1, where);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return;
    rules_evaluator_t ev = {.lookup = lookup, .now_ms = 1700000000000};
    for (cur_row = 0; cur_row < NROWS; cur_row++) {
        sqlite3_reset(st);
        bind_all(st, c);
        sqlite3_bind_int(st, (int)c->nparams + 1, cur_row);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            continue; /* e.g. a LIKE pattern SQLite refuses: not the evaluator's business */
        int sql_true = rc == SQLITE_ROW;
        rules_truth_t t = rules_eval(&ev, a, root);
        if (t != RULES_UNKNOWN && (t == RULES_TRUE) != sql_true) {
            fprintf(stderr, "evaluator says %d, SQLite %d, on row %d: %s\n", t, sql_true, cur_row, sql);
            abort();
        }
    }
    sqlite3_finalize(st);
}

static void check_quotes(const char *sql)
{
    for (const char *p = sql; *p; p++) {
        if (*p != '\'')
            continue;
        if (!strncmp(p, "''", 2) || !strncmp(p, "'\\'", 3) || !strncmp(p, "'%'", 3)) {
            p += p[1] == '\'' ? 1 : 2;
            continue;
        }
        /* dialect_json_path's own type names. */
        static const char *const fixed[] = {"'integer'", "'real'", "'true'", "'false'", "'text'"};
        size_t k;
        for (k = 0; k < sizeof(fixed) / sizeof(fixed[0]); k++)
            if (!strncmp(p, fixed[k], strlen(fixed[k])))
                break;
        if (k < sizeof(fixed) / sizeof(fixed[0])) {
            p += strlen(fixed[k]) - 1;
            continue;
        }
        fprintf(stderr, "user text in SQL: %s\n", sql);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    arena_t a;
    arena_init(&a, 4096);
    bs_error_t err;
    bs_error_init(&err);
    rules_node_t *root = rules_parse(&a, (const char *)data, size, NULL, &err);
    if (root != NULL) {
        rules_compiler_t c = {0};
        c.resolve = resolve;
        c.resolve_ud = &c;
        c.now_ms = 1700000000000;
        buf_t out;
        buf_init(&out, &a);
        if (rules_compile(&c, &a, root, &out, &err) == 0) {
            check_quotes(out.data);
            char *sql = arena_printf(&a, "SELECT 1 FROM t AS \"_r\" WHERE %s", out.data);
            sqlite3_stmt *st = NULL;
            int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
            if (rc != SQLITE_OK) {
                fprintf(stderr, "invalid SQL (%s): %s\n", sqlite3_errmsg(db), sql);
                abort();
            }
            assert((size_t)sqlite3_bind_parameter_count(st) == c.nparams);
            sqlite3_finalize(st);
            check_eval(&a, root, out.data, &c);
        }
    } else {
        assert(err.code == BS_ERR_OK || bs_status(err.code) == 400 || err.code == BS_ERR_NOMEM);
    }
    arena_free(&a);
    return 0;
}
