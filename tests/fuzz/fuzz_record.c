/* JSON bodies into records: any body either creates a valid record or is refused
 * with a validation error, through the real store (a temporary SQLite file). */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/record.h"
#include "core/schema.h"

static store_t *store;
static schema_t *schema;

static int bootstrap(store_job_t *j, store_conn_t *c)
{
    if (schema_bootstrap(c, &j->err) != 0)
        return -1;
    schema_t *s = schema_load(c, &j->err);
    json_error_t jerr;
    json_t *d = json_loads(
        "{\"name\":\"things\",\"fields\":[{\"name\":\"title\",\"type\":\"text\",\"max\":20,\"pattern\":\"^[a-"
        "z ]*$\"},"
        "{\"name\":\"n\",\"type\":\"number\",\"min\":-5,\"max\":5},{\"name\":\"ok\",\"type\":\"bool\"},"
        "{\"name\":\"mail\",\"type\":\"email\"},{\"name\":\"when\",\"type\":\"date\"},"
        "{\"name\":\"tags\",\"type\":\"select\",\"values\":[\"a\",\"b\"],\"maxSelect\":2},"
        "{\"name\":\"doc\",\"type\":\"json\"},{\"name\":\"pt\",\"type\":\"geoPoint\"}]}",
        0, &jerr);
    collection_t *c2 = collection_from_json(d, NULL, s, j->arena, &j->err);
    int rc = c2 ? schema_apply(c, s, NULL, c2, j->arena, &j->err) : -1;
    collection_free(c2);
    json_decref(d);
    schema_free(s);
    return rc;
}

static char path[64];

/* The database is the driver's own: nothing of it stays in /tmp after a run. */
static void remove_db(void)
{
    char p[80];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", path, suffix[i]);
        unlink(p);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(path, sizeof(path), "/tmp/basalt-fuzz-%d.db", (int)getpid());
    remove_db();
    atexit(remove_db);
    store_config_t cfg = {.path = path, .readers = 1};
    bs_error_t err;
    bs_error_init(&err);
    store = store_open(&cfg, &err);
    arena_t a;
    arena_init(&a, 1024);
    store_job_t b = {.run = bootstrap, .arena = &a};
    if (store == NULL || store_write_sync(store, &b) != 0)
        abort();
    arena_free(&a);
    schema = schema_load(store_reader(store, 0), &err);
    return 0;
}

typedef struct {
    store_job_t job;
    json_t *body;
} job_t;

static int run(store_job_t *j, store_conn_t *c)
{
    job_t *t = (job_t *)j;
    record_write_t w = {
        .schema = schema, .coll = schema_find(schema, "things"), .who = &caller_system, .body = t->body};
    return record_create(c, &w, j->arena, &j->err);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    json_error_t jerr;
    json_t *body = json_loadb((const char *)data, size, 0, &jerr);
    if (!json_is_object(body)) {
        json_decref(body);
        return 0;
    }
    arena_t a;
    arena_init(&a, 1024);
    job_t t = {.job = {.run = run, .arena = &a}, .body = body};
    if (store_write_sync(store, &t.job) != 0)
        assert(bs_status(t.job.err.code) == 400 || t.job.err.code == BS_ERR_NOMEM);
    json_decref(body);
    arena_free(&a);
    return 0;
}
