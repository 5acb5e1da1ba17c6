/* Field validation and record writes, through the real store on a temporary file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/record.h"
#include "core/schema.h"

static store_t *store;
static char path[64];

typedef struct {
    store_job_t job;
    const char *def;  /* collection JSON to create, or NULL */
    const char *body; /* record body */
    const char *id;   /* update this record when set */
    int precheck;     /* 1: only record_precheck (rules do not read the body), 2: they do */
    record_write_t w;
} job_t;

static int run(store_job_t *j, store_conn_t *c)
{
    job_t *t = (job_t *)j;
    schema_t *s = schema_load(c, &j->err);
    if (s == NULL)
        return -1;
    int rc = -1;
    json_error_t jerr;
    if (t->def != NULL) {
        json_t *d = json_loads(t->def, 0, &jerr);
        collection_t *nu = collection_from_json(d, NULL, s, j->arena, &j->err);
        if (nu != NULL)
            rc = schema_apply(c, s, NULL, nu, j->arena, &j->err);
        collection_free(nu);
        json_decref(d);
    } else {
        /* NUL allowed in strings: the multipart and form parsers can produce them. */
        json_t *b = json_loads(t->body, JSON_ALLOW_NUL, &jerr);
        if (b == NULL)
            fail_msg("bad test body %s", t->body);
        t->w.schema = s;
        t->w.coll = schema_find(s, "things");
        t->w.who = &caller_system;
        t->w.body = b;
        if (t->precheck) {
            rc = record_precheck(t->w.coll, b, t->precheck == 2, j->arena, &j->err);
        } else if (t->id != NULL) {
            snprintf(t->w.id, sizeof(t->w.id), "%s", t->id);
            rc = record_update(c, &t->w, j->arena, &j->err);
        } else {
            rc = record_create(c, &t->w, j->arena, &j->err);
        }
        json_decref(b);
    }
    schema_free(s);
    return rc;
}

static int bootstrap(store_job_t *j, store_conn_t *c)
{
    return schema_bootstrap(c, &j->err);
}

/* Runs a write; returns the first field error's "field:code", "" on success. */
static record_touched_t last_touched;

static const char *do_job(const char *body, const char *id, char *id_out, int precheck)
{
    static char result[400];
    arena_t a;
    arena_init(&a, 1024);
    job_t t = {.job = {.run = run, .arena = &a}, .body = body, .id = id, .precheck = precheck};
    int rc = store_write_sync(store, &t.job);
    result[0] = '\0';
    if (rc != 0) {
        if (t.job.err.fields)
            snprintf(result, sizeof(result), "%s:%s", t.job.err.fields->field, t.job.err.fields->code);
        else
            snprintf(result, sizeof(result), "error:%s", t.job.err.message);
    } else if (id_out != NULL) {
        strcpy(id_out, t.w.id);
    }
    last_touched = t.w.touched;
    arena_free(&a);
    return result;
}

static const char *do_write(const char *body, const char *id, char *id_out)
{
    return do_job(body, id, id_out, 0);
}

static int setup(void **state)
{
    record_set_strict_fields(1); /* the validation table below expects the 400 */
    (void)state;
    snprintf(path, sizeof(path), "/tmp/basalt-rec-%d.db", (int)getpid());
    unlink(path);
    store_config_t cfg = {.path = path, .readers = 1};
    bs_error_t err;
    bs_error_init(&err);
    store = store_open(&cfg, &err);
    assert_non_null(store);
    arena_t a;
    arena_init(&a, 1024);
    store_job_t b = {.run = bootstrap, .arena = &a};
    assert_int_equal(store_write_sync(store, &b), 0);
    job_t t = {.job = {.run = run, .arena = &a},
               .def =
                   "{\"name\":\"things\",\"fields\":["
                   "{\"name\":\"title\",\"type\":\"text\",\"required\":true,\"min\":2,\"max\":5,\"pattern\":"
                   "\"^[a-z]+$\"},"
                   "{\"name\":\"n\",\"type\":\"number\",\"min\":0,\"max\":10,\"onlyInt\":true},"
                   "{\"name\":\"ok\",\"type\":\"bool\"},"
                   "{\"name\":\"mail\",\"type\":\"email\"},"
                   "{\"name\":\"link\",\"type\":\"url\"},"
                   "{\"name\":\"when\",\"type\":\"date\",\"min\":\"2020-01-01\"},"
                   "{\"name\":\"one\",\"type\":\"select\",\"values\":[\"x\",\"y\"]},"
                   "{\"name\":\"many\",\"type\":\"select\",\"values\":[\"x\",\"y\",\"z\"],\"maxSelect\":2},"
                   "{\"name\":\"doc\",\"type\":\"json\",\"maxSize\":20},"
                   "{\"name\":\"where\",\"type\":\"geoPoint\"},"
                   "{\"name\":\"big\",\"type\":\"number\"}]}"};
    int rc = store_write_sync(store, &t.job);
    if (rc != 0)
        fail_msg("cannot create the collection: %s", t.job.err.message);
    arena_free(&a);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    store_close(store);
    unlink(path);
    return 0;
}

static const struct {
    const char *body;
    const char *expect; /* "" = accepted */
} cases[] = {
    {"{\"title\":\"ab\"}", ""},
    {"{}", "title:validation_required"},
    {"{\"title\":\"a\"}", "title:validation_min_text_constraint"},
    {"{\"title\":\"abcdef\"}", "title:validation_max_text_constraint"},
    {"{\"title\":\"AB\"}", "title:validation_invalid_format"},
    {"{\"title\":\"ab\",\"n\":11}", "n:validation_max_number_constraint"},
    {"{\"title\":\"ab\",\"n\":-1}", "n:validation_min_number_constraint"},
    {"{\"title\":\"ab\",\"n\":1.5}", "n:validation_not_int"},
    {"{\"title\":\"ab\",\"n\":\"3\"}", ""},
    {"{\"title\":\"ab\",\"ok\":\"true\"}", ""},
    {"{\"title\":\"ab\",\"ok\":[]}", "ok:validation_invalid_bool"},
    {"{\"title\":\"ab\",\"mail\":\"a@b\"}", "mail:validation_is_email"},
    {"{\"title\":\"ab\",\"mail\":\"a@b.co\"}", ""},
    {"{\"title\":\"ab\",\"link\":\"javascript:alert(1)\"}", "link:validation_is_url"},
    {"{\"title\":\"ab\",\"when\":\"2019-12-31\"}", "when:validation_min_date_constraint"},
    {"{\"title\":\"ab\",\"when\":\"2021-02-03T04:05:06Z\"}", ""},
    {"{\"title\":\"ab\",\"one\":\"q\"}", "one:validation_invalid_value"},
    {"{\"title\":\"ab\",\"one\":[\"x\",\"y\"]}", "one:validation_too_many_values"},
    {"{\"title\":\"ab\",\"many\":[\"x\",\"y\",\"z\"]}", "many:validation_too_many_values"},
    {"{\"title\":\"ab\",\"many\":\"x\"}", ""},
    {"{\"title\":\"ab\",\"doc\":{\"k\":\"0123456789012345\"}}", "doc:validation_json_size_limit"},
    {"{\"title\":\"ab\",\"where\":{\"lon\":200,\"lat\":0}}", "where:validation_invalid_longitude"},
    {"{\"title\":\"ab\",\"where\":{\"lon\":20,\"lat\":10}}", ""},
    {"{\"title\":\"ab\",\"nope\":1}", "nope:validation_unknown_field"},
    /* A NUL byte never passes: "x\0y" is not the select value "x". */
    {"{\"title\":\"ab\",\"one\":\"x\\u0000y\"}", "one:validation_invalid_value"},
    {"{\"title\":\"ab\",\"many\":[\"x\\u0000\"]}", "many:validation_invalid_value"},
    {"{\"title\":\"ab\",\"n\":\"5\\u0000\"}", "n:validation_invalid_number"},
    {"{\"title\":\"ab\",\"ok\":\"true\\u0000\"}", "ok:validation_invalid_bool"},
    {"{\"title\":\"ab\",\"mail\":\"a\\u0000@b.co\"}", "mail:validation_invalid_value"},
};

static void test_create_validation(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = do_write(cases[i].body, NULL, NULL);
        if (strcmp(got, cases[i].expect) != 0)
            fail_msg("case %zu %s: expected \"%s\", got \"%s\"", i, cases[i].body, cases[i].expect, got);
    }
}

static void test_update_modifiers(void **state)
{
    (void)state;
    char id[128];
    assert_string_equal(do_write("{\"title\":\"ab\",\"n\":5,\"many\":[\"x\"]}", NULL, id), "");
    assert_string_equal(do_write("{\"n+\":3,\"many+\":\"y\"}", id, NULL), "");
    /* n is now 8: another +3 breaks max and must leave the record unchanged. */
    assert_string_equal(do_write("{\"n+\":3}", id, NULL), "n:validation_max_number_constraint");
    assert_string_equal(do_write("{\"many+\":\"z\"}", id, NULL), "many:validation_too_many_values");
    assert_string_equal(do_write("{\"many-\":[\"x\",\"y\"],\"n-\":8}", id, NULL), "");
    assert_string_equal(do_write("{\"title\":\"ab\"}", "missingid", NULL),
                        "error:The requested resource wasn't found.");
}

static void test_modifier_overflow(void **state)
{
    (void)state;
    char id[128];
    assert_string_equal(do_write("{\"title\":\"ab\",\"big\":1.5e308}", NULL, id), "");
    assert_string_equal(do_write("{\"big+\":1.5e308}", id, NULL), "big:validation_invalid_number");
    assert_string_equal(do_write("{\"big-\":1e308}", id, NULL), "");
    assert_string_equal(do_write("{\"big-\":1e308,\"big-\":1e308}", id, NULL), "");
}

static void test_precheck(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        int rules_read_body;
        const char *expect;
    } pc[] = {
        {"{\"one\":[\"x\",\"y\"]}", 0, "one:validation_too_many_values"},
        {"{\"one+\":[\"x\",\"y\"]}", 0, "one:validation_too_many_values"},
        {"{\"many\":[\"x\",\"y\",\"z\"]}", 0, "many:validation_too_many_values"},
        {"{\"+many\":[\"x\",\"y\",\"z\"]}", 0, "many:validation_too_many_values"},
        {"{\"many-\":[\"x\",\"y\",\"z\"]}", 0, ""},
        {"{\"many\":[\"x\",\"y\"],\"one\":\"x\"}", 0, ""},
        {"{\"doc\":{\"k\":\"0123456789012345\"}}", 0, "doc:validation_json_size_limit"},
        {"{\"nope\":1}", 0, ""}, /* the writer reports unknown fields */
    };
    for (size_t i = 0; i < sizeof(pc) / sizeof(pc[0]); i++) {
        const char *got = do_job(pc[i].body, NULL, NULL, pc[i].rules_read_body ? 2 : 1);
        if (strcmp(got, pc[i].expect) != 0)
            fail_msg("precheck %zu %s: expected \"%s\", got \"%s\"", i, pc[i].body, pc[i].expect, got);
    }
    /* A long array where a rule reads the body, or under a modifier. */
    static char big[8 * (RECORD_MAX_BODY_ARRAY + 10) + 32];
    for (int k = 0; k < 2; k++) {
        size_t n = (size_t)snprintf(big, sizeof(big), k ? "{\"many-\":[" : "{\"title\":[");
        for (int i = 0; i <= RECORD_MAX_BODY_ARRAY; i++)
            n += (size_t)snprintf(big + n, sizeof(big) - n, i ? ",\"a\"" : "\"a\"");
        snprintf(big + n, sizeof(big) - n, "]}");
        if (k == 0) {
            assert_string_equal(do_job(big, NULL, NULL, 2), "title:validation_too_many_values");
            assert_string_equal(do_job(big, NULL, NULL, 1), "");
        } else {
            assert_string_equal(do_job(big, NULL, NULL, 1), "many:validation_too_many_values");
        }
    }
}

static void test_touched(void **state)
{
    (void)state;
    char id[128];
    assert_string_equal(do_write("{\"title\":\"ab\"}", NULL, id), "");
    assert_int_equal(last_touched.n, 1);
    assert_int_equal(last_touched.overflow, 0);
}

/* Which sort fields an index holds in order (the search's read along an index). */
static void test_index_leads(void **state)
{
    (void)state;
    char *defs[] = {"CREATE INDEX \"i1\" ON \"t\" (\"price\")",
                    "CREATE INDEX \"i2\" ON \"t\" (\"category\", \"created\" DESC)",
                    "CREATE UNIQUE INDEX \"i3\" ON \"t\" (\"sku\" DESC)",
                    "CREATE INDEX \"i4\" ON \"t\" (\"email\" COLLATE NOCASE)",
                    "CREATE INDEX \"i5\" ON \"t\" (\"code\") WHERE \"code\" != ''",
                    "CREATE INDEX \"i6\" ON \"t\" (\"pricey\")"};
    collection_t c;
    memset(&c, 0, sizeof(c));
    c.indexes = defs;
    c.nindexes = sizeof(defs) / sizeof(defs[0]);
    assert_int_equal(collection_index_leads(&c, "price"), 1);
    assert_int_equal(collection_index_leads(&c, "category"), 1);
    assert_int_equal(collection_index_leads(&c, "sku"), 1);
    assert_int_equal(collection_index_leads(&c, "pricey"), 1);
    assert_int_equal(collection_index_leads(&c, "created"), 0); /* second column */
    assert_int_equal(collection_index_leads(&c, "email"), 0);   /* another collation */
    assert_int_equal(collection_index_leads(&c, "code"), 0);    /* partial */
    assert_int_equal(collection_index_leads(&c, "pric"), 0);
    assert_int_equal(collection_index_leads(&c, "title"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_validation), cmocka_unit_test(test_update_modifiers),
        cmocka_unit_test(test_modifier_overflow), cmocka_unit_test(test_precheck),
        cmocka_unit_test(test_touched),           cmocka_unit_test(test_index_leads)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
