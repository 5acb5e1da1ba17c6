/* The filter language: expression -> SQL + parameters, and rejected inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "core/resolve.h"
#include "rules/rules.h"

/* A resolver for a pretend collection: plain fields map to "_r"."name", "tags" is
 * multi-valued, "secret" is refused, @request.auth.id is "u1". */
static int resolve(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_resolved_t *out,
                   bs_error_t *err)
{
    (void)ud;
    (void)mods;
    char n[64];
    snprintf(n, sizeof(n), "%.*s", (int)len, name);
    if (strcmp(n, "secret") == 0) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "hidden");
        return -1;
    }
    if (strcmp(n, "@request.auth.id") == 0) {
        out->is_value = 1;
        out->value = bs_val_text("u1", 2);
        return 0;
    }
    if (strcmp(n, "@request.body.list") == 0) {
        /* A request array: text (one with a quote), an integer, a null. */
        static bs_value_t vals[4];
        vals[0] = bs_val_text("a", 1);
        vals[1] = bs_val_text("c\"d", 3);
        vals[2] = bs_val_int(3);
        vals[3] = bs_val_null();
        out->is_value = 1;
        out->multi = 1;
        out->values = vals;
        out->nvalues = 4;
        return 0;
    }
    if (strcmp(n, "@many") == 0) {
        /* What a resolver embedding a large joined rule would add to the statement. */
        buf_t b;
        buf_init(&b, a);
        for (int i = 0; i < RULES_MAX_PARAMS + 10; i++)
            if (rules_add_param(ud, a, bs_val_int(i), &b) != 0)
                return -1;
        out->sql = "1";
        return 0;
    }
    if (strcmp(n, "tags") == 0) {
        out->multi = 1;
        out->from = "json_each(\"_r\".\"tags\") AS j";
        out->where = "1";
        out->sql = "j.value";
        return 0;
    }
    if (n[0] == '@') {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "unknown");
        return -1;
    }
    out->sql = arena_printf(a, "\"_r\".\"%s\"", n);
    return 0;
}

typedef struct {
    const char *filter;
    const char *sql;
    const char *params; /* params joined with | ; text as is, ints as digits, NULL as ~ */
} case_t;

static const case_t cases[] = {
    {"title = 'a'", "(\"_r\".\"title\" = ?1)", "a"},
    {"title != \"b\"", "(\"_r\".\"title\" IS NOT ?1)", "b"},
    {"n > 5 && n <= 10.5", "((\"_r\".\"n\" > ?1) AND (\"_r\".\"n\" <= ?2))", "5|10.5"},
    {"a = 1 || b = 2 && c = 3", "((\"_r\".\"a\" = ?1) OR ((\"_r\".\"b\" = ?2) AND (\"_r\".\"c\" = ?3)))",
     "1|2|3"},
    {"(a = 1 || b = 2) && c = 3", "(((\"_r\".\"a\" = ?1) OR (\"_r\".\"b\" = ?2)) AND (\"_r\".\"c\" = ?3))",
     "1|2|3"},
    {"title ~ 'x_y'", "(\"_r\".\"title\" LIKE ?1 ESCAPE '\\')", "%x\\_y%"},
    {"title ~ 'pre%'", "(\"_r\".\"title\" LIKE ?1 ESCAPE '\\')", "pre%"},
    {"title !~ 'z'", "(COALESCE(\"_r\".\"title\", '') NOT LIKE ?1 ESCAPE '\\')", "%z%"},
    {"title = ''", "(COALESCE(\"_r\".\"title\", '') = '')", "~"},
    {"title != null", "(COALESCE(\"_r\".\"title\", '') <> '')", "~"},
    {"done = true", "(\"_r\".\"done\" = ?1)", "1"},
    {"owner = @request.auth.id", "(\"_r\".\"owner\" = ?1)", "u1"},
    {"tags ?= 'a'", "EXISTS (SELECT 1 FROM json_each(\"_r\".\"tags\") AS j WHERE 1 AND (j.value = ?1))", "a"},
    /* Every item, and at least one (an empty list satisfies no positive comparison). */
    {"tags = 'a'",
     "(EXISTS (SELECT 1 FROM json_each(\"_r\".\"tags\") AS j WHERE 1) AND NOT EXISTS (SELECT 1 FROM "
     "json_each(\"_r\".\"tags\") AS j WHERE 1 AND NOT COALESCE((j.value = ?1), 0)))",
     "a"},
    /* A negation: no item equals (an empty list holds none). */
    {"tags != 'a'",
     "NOT EXISTS (SELECT 1 FROM json_each(\"_r\".\"tags\") AS j WHERE 1 AND NOT COALESCE((j.value IS NOT "
     "?1), 0))",
     "a"},
    {"title:lower = 'abc'", "(LOWER(\"_r\".\"title\") = ?1)", "abc"},
    {"t = 'it\\'s' // comment", "(\"_r\".\"t\" = ?1)", "it's"},
    {"t = \"x'; DROP TABLE t; --\"", "(\"_r\".\"t\" = ?1)", "x'; DROP TABLE t; --"},
};

static void join_params(const rules_compiler_t *c, char *out, size_t cap)
{
    out[0] = '\0';
    for (size_t i = 0; i < c->nparams; i++) {
        char one[128];
        const bs_value_t *v = &c->params[i];
        if (v->type == BS_VAL_TEXT)
            snprintf(one, sizeof(one), "%.*s", (int)v->n, v->s);
        else if (v->type == BS_VAL_INT)
            snprintf(one, sizeof(one), "%lld", (long long)v->i);
        else if (v->type == BS_VAL_DOUBLE)
            snprintf(one, sizeof(one), "%g", v->d);
        else
            snprintf(one, sizeof(one), "null");
        if (i)
            strncat(out, "|", cap - strlen(out) - 1);
        strncat(out, one, cap - strlen(out) - 1);
    }
    if (c->nparams == 0)
        snprintf(out, cap, "~");
}

static int compile(arena_t *a, const char *text, buf_t *out, rules_compiler_t *c, bs_error_t *err)
{
    memset(c, 0, sizeof(*c));
    c->resolve = resolve;
    c->now_ms = 1700000000000;
    rules_node_t *root = rules_parse(a, text, strlen(text), NULL, err);
    if (root == NULL && err->code != BS_ERR_OK)
        return -1;
    return rules_compile(c, a, root, out, err);
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        arena_t a;
        arena_init(&a, 1024);
        buf_t out;
        buf_init(&out, &a);
        rules_compiler_t c;
        bs_error_t err;
        bs_error_init(&err);
        int rc = compile(&a, cases[i].filter, &out, &c, &err);
        if (rc != 0)
            fail_msg("case %zu (%s) failed: %s", i, cases[i].filter, err.message);
        assert_string_equal(out.data, cases[i].sql);
        char params[512];
        join_params(&c, params, sizeof(params));
        assert_string_equal(params, cases[i].params);
        /* No user value ever appears in the SQL text. */
        for (size_t k = 0; k < c.nparams; k++)
            if (c.params[k].type == BS_VAL_TEXT && c.params[k].n > 2)
                assert_null(strstr(out.data, c.params[k].s));
        arena_free(&a);
    }
}

/* A list of constants is one JSON parameter read by json_each, however long. */
static void test_list_is_one_json_param(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 1024);
    buf_t out;
    buf_init(&out, &a);
    rules_compiler_t c;
    bs_error_t err;
    bs_error_init(&err);
    assert_int_equal(compile(&a, "@request.body.list ?= title", &out, &c, &err), 0);
    assert_string_equal(out.data,
                        "EXISTS (SELECT 1 FROM json_each(?1) AS \"__v1\" WHERE 1 AND (\"__v1\".\"value\" = "
                        "\"_r\".\"title\"))");
    assert_int_equal(c.nparams, 1);
    assert_int_equal(c.params[0].type, BS_VAL_TEXT);
    assert_string_equal(c.params[0].s, "[\"a\",\"c\\\"d\",3,null]");
    arena_free(&a);
}

/* More parameters than one statement may take: a 400, not a prepare error. */
static void test_param_bound(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 1024);
    buf_t out;
    buf_init(&out, &a);
    rules_compiler_t c;
    bs_error_t err;
    bs_error_init(&err);
    memset(&c, 0, sizeof(c));
    c.resolve = resolve;
    c.resolve_ud = &c;
    rules_node_t *root = rules_parse(&a, "@many = 1", 9, NULL, &err);
    assert_non_null(root);
    assert_int_equal(rules_compile(&c, &a, root, &out, &err), -1);
    assert_int_equal(err.code, BS_ERR_BAD_REQUEST);
    assert_non_null(strstr(err.message, "too many"));
    arena_free(&a);
}

static void test_rejected(void **state)
{
    (void)state;
    static const char *bad[] = {"title =",      "= 'a'",          "title = 'a",    "(title = 'a'",
                                "title = 'a')", "a = 1 &&",       "a = 1 & b = 2", "a == 1",
                                "a ? 1",        "title:nope = 1", "secret = 1",    "@request.x = 1",
                                "a = 1 b = 2",  "a.b..c = 1",     "a = 1e999",     "$x = 1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        arena_t a;
        arena_init(&a, 1024);
        buf_t out;
        buf_init(&out, &a);
        rules_compiler_t c;
        bs_error_t err;
        bs_error_init(&err);
        int rc = compile(&a, bad[i], &out, &c, &err);
        if (rc == 0)
            fail_msg("accepted bad filter %s", bad[i]);
        assert_int_equal(bs_status(err.code), 400);
        assert_true(strlen(err.message) > 0);
        arena_free(&a);
    }
}

static void test_limits(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 4096);
    bs_error_t err;
    /* Too deep. */
    char deep[300];
    size_t n = 0;
    for (int i = 0; i < 40; i++)
        deep[n++] = '(';
    n += (size_t)snprintf(deep + n, sizeof(deep) - n, "a = 1");
    for (int i = 0; i < 40; i++)
        deep[n++] = ')';
    deep[n] = '\0';
    bs_error_init(&err);
    assert_null(rules_parse(&a, deep, n, NULL, &err));
    assert_non_null(strstr(err.message, "deeply"));
    /* Too many expressions. */
    rules_limits_t lim = {0, 3, 0};
    bs_error_init(&err);
    assert_null(rules_parse(&a, "a=1 && b=2 && c=3 && d=4", 24, &lim, &err));
    assert_non_null(strstr(err.message, "too many"));
    /* Too long. */
    char longf[4000];
    memset(longf, ' ', sizeof(longf));
    bs_error_init(&err);
    assert_null(rules_parse(&a, longf, sizeof(longf), NULL, &err));
    assert_non_null(strstr(err.message, "too long"));
    /* Empty is "no condition", not an error. */
    bs_error_init(&err);
    assert_null(rules_parse(&a, "  // just a comment", 19, NULL, &err));
    assert_int_equal(err.code, BS_ERR_OK);
    arena_free(&a);
}

/* A long chain must not nest: SQLite's parser stack is bounded (fuzz_filter). */
static void test_long_chain_is_flat(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 4096);
    buf_t f;
    buf_init(&f, &a);
    for (int i = 0; i < 150; i++)
        buf_puts(&f, i ? " || n = 1" : "n = 1");
    buf_t out;
    buf_init(&out, &a);
    rules_compiler_t c;
    bs_error_t err;
    bs_error_init(&err);
    assert_int_equal(compile(&a, f.data, &out, &c, &err), 0);
    assert_int_equal(strncmp(out.data, "((", 2), 0);
    assert_int_not_equal(out.data[2], '(');
    int depth = 0, max = 0;
    for (const char *p = out.data; *p; p++) {
        if (*p == '(' && ++depth > max)
            max = depth;
        if (*p == ')')
            depth--;
    }
    assert_true(max <= 3);
    arena_free(&a);
}

/* The evaluator: an empty list against each operator, as the SQL above has it. */
static int eval_lookup(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_evalue_t *out)
{
    (void)ud;
    (void)a;
    (void)mods;
    static const bs_value_t one[1] = {{.type = BS_VAL_TEXT, .s = "a", .n = 1}};
    out->multi = 1;
    out->values = one;
    out->nvalues = len == 5 && memcmp(name, "empty", 5) == 0 ? 0 : 1;
    return 0;
}

static void test_eval_empty_list(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        rules_truth_t want;
    } t[] = {
        {"empty = 'a'", RULES_FALSE},  {"empty = ''", RULES_FALSE},    {"empty = null", RULES_FALSE},
        {"empty > ''", RULES_FALSE},   {"empty <= 'z'", RULES_FALSE},  {"empty ~ ''", RULES_FALSE},
        {"empty ?= 'a'", RULES_FALSE}, {"empty ?!= 'a'", RULES_FALSE}, {"empty != 'a'", RULES_TRUE},
        {"empty != ''", RULES_TRUE},   {"empty !~ 'a'", RULES_TRUE},   {"'a' = empty", RULES_FALSE},
        {"'a' != empty", RULES_TRUE},  {"one = empty", RULES_FALSE},   {"empty = one", RULES_FALSE},
        {"one != empty", RULES_TRUE},  {"empty != one", RULES_TRUE},   {"one = 'a'", RULES_TRUE},
        {"one ?= 'a'", RULES_TRUE},    {"one != 'a'", RULES_FALSE},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        arena_t arena;
        arena_init(&arena, 4096);
        arena_t *a = &arena;
        bs_error_t err;
        bs_error_init(&err);
        rules_node_t *n = rules_parse(a, t[i].text, strlen(t[i].text), NULL, &err);
        assert_non_null(n);
        rules_evaluator_t ev = {.lookup = eval_lookup};
        if (rules_eval(&ev, a, n) != t[i].want)
            fail_msg("%s: expected %d", t[i].text, (int)t[i].want);
        arena_free(a);
    }
}

/* Values inside a JSON field: typed as stored, as the SQL's typed forms read them
 * (rules_sql.c json_form): jn is the number 5, js the string "5", jt true, jnull
 * null; title is an ordinary column. */
static int json_lookup(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_evalue_t *out)
{
    (void)ud;
    (void)a;
    (void)mods;
    char n[16];
    snprintf(n, sizeof(n), "%.*s", (int)len, name);
    out->json = n[0] == 'j';
    if (strcmp(n, "jn") == 0)
        out->value = bs_val_int(5);
    else if (strcmp(n, "js") == 0)
        out->value = bs_val_text("5", 1);
    else if (strcmp(n, "jt") == 0)
        out->value = bs_val_int(1);
    else if (strcmp(n, "jnull") == 0)
        out->value = bs_val_null();
    else
        out->value = bs_val_text("abc", 3);
    return 0;
}

static void test_eval_json_typed(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        rules_truth_t want;
    } t[] = {
        {"jn = 5", RULES_TRUE},        {"jn = '5'", RULES_FALSE},   {"jn != '5'", RULES_TRUE},
        {"js = '5'", RULES_TRUE},      {"js = 5", RULES_FALSE},     {"js > 4", RULES_FALSE},
        {"jn ~ '5'", RULES_FALSE},     {"jn !~ '5'", RULES_TRUE},   {"js ~ '5'", RULES_TRUE},
        {"jt = true", RULES_TRUE},     {"jt = 1", RULES_TRUE},      {"jt != false", RULES_TRUE},
        {"jnull = null", RULES_TRUE},  {"jnull = ''", RULES_TRUE},  {"jnull != 5", RULES_TRUE},
        {"jn = ''", RULES_FALSE},      {"jn > 'a'", RULES_FALSE},   {"5 = jn", RULES_TRUE},
        {"jn = title", RULES_UNKNOWN}, {"'5' ~ js", RULES_UNKNOWN}, {"jn = js", RULES_UNKNOWN},
        {"title = 'abc'", RULES_TRUE},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        arena_t arena;
        arena_init(&arena, 4096);
        arena_t *a = &arena;
        bs_error_t err;
        bs_error_init(&err);
        rules_node_t *n = rules_parse(a, t[i].text, strlen(t[i].text), NULL, &err);
        assert_non_null(n);
        rules_evaluator_t ev = {.lookup = json_lookup};
        if (rules_eval(&ev, a, n) != t[i].want)
            fail_msg("%s: expected %d", t[i].text, (int)t[i].want);
        arena_free(a);
    }
}

/* JSON paths split into keys and indexes, bounded, with a 400 for anything else. */
static void test_json_segments(void **state)
{
    (void)state;
    dialect_json_seg_t segs[RESOLVE_MAX_JSON_SEGS];
    size_t n;
    bs_error_t err;
    bs_error_init(&err);
    assert_int_equal(resolve_json_segments("a.0.b_c.@x.#1.-", 15, segs, &n, "m", &err), 0);
    assert_int_equal(n, 6);
    assert_int_equal(segs[1].is_index, 1);
    assert_int_equal(segs[0].is_index, 0);
    assert_int_equal(segs[4].is_index, 0);
    assert_int_equal(segs[5].n, 1);
    char deep[64] = "k";
    for (int i = 1; i < RESOLVE_MAX_JSON_SEGS; i++)
        strcat(deep, ".k");
    assert_int_equal(resolve_json_segments(deep, strlen(deep), segs, &n, "m", &err), 0);
    strcat(deep, ".k");
    static const char *const bad[] = {"a..b", "a.", "",    "a\"b",     "a'b",
                                      "a[0]", "$",  "a b", "\xc3\xa9", "1234567890"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bs_error_init(&err);
        if (resolve_json_segments(bad[i], strlen(bad[i]), segs, &n, "m", &err) != -1 ||
            bs_status(err.code) != 400)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    bs_error_init(&err);
    assert_int_equal(resolve_json_segments(deep, strlen(deep), segs, &n, "m", &err), -1);
    char longkey[RESOLVE_MAX_JSON_KEY + 2];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    bs_error_init(&err);
    assert_int_equal(resolve_json_segments(longkey, strlen(longkey), segs, &n, "m", &err), -1);
    assert_int_equal(resolve_json_segments(longkey, strlen(longkey) - 1, segs, &n, "m", &err), 0);
    /* The walk: an index reads only arrays, a key only objects. */
    json_t *doc = json_loads("{\"0\":\"key\",\"l\":[1,{\"k\":\"v\"}]}", 0, NULL);
    assert_int_equal(resolve_json_segments("0", 1, segs, &n, "m", &err), 0);
    assert_null(resolve_json_walk(doc, segs, n));
    assert_int_equal(resolve_json_segments("l.1.k", 5, segs, &n, "m", &err), 0);
    assert_string_equal(json_string_value(resolve_json_walk(doc, segs, n)), "v");
    assert_int_equal(resolve_json_segments("l.k", 3, segs, &n, "m", &err), 0);
    assert_null(resolve_json_walk(doc, segs, n));
    json_decref(doc);
}

static void test_macros(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 1024);
    bs_value_t v;
    int64_t now = 1700000000123; /* 2023-11-14 22:13:20.123Z, a Tuesday */
    assert_int_equal(rules_macro(&a, now, "@now", 4, &v), 0);
    assert_string_equal(v.s, "2023-11-14 22:13:20.123Z");
    assert_int_equal(rules_macro(&a, now, "@todayStart", 11, &v), 0);
    assert_string_equal(v.s, "2023-11-14 00:00:00.000Z");
    assert_int_equal(rules_macro(&a, now, "@monthEnd", 9, &v), 0);
    assert_string_equal(v.s, "2023-11-30 23:59:59.999Z");
    assert_int_equal(rules_macro(&a, now, "@yearStart", 10, &v), 0);
    assert_string_equal(v.s, "2023-01-01 00:00:00.000Z");
    assert_int_equal(rules_macro(&a, now, "@weekday", 8, &v), 0);
    assert_int_equal(v.i, 2);
    assert_int_equal(rules_macro(&a, now, "@year", 5, &v), 0);
    assert_int_equal(v.i, 2023);
    assert_int_equal(rules_macro(&a, now, "@nope", 5, &v), -1);
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_rejected),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_macros),
        cmocka_unit_test(test_eval_empty_list),
        cmocka_unit_test(test_eval_json_typed),
        cmocka_unit_test(test_json_segments),
        cmocka_unit_test(test_long_chain_is_flat),
        cmocka_unit_test(test_list_is_one_json_param),
        cmocka_unit_test(test_param_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
