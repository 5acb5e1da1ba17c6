/* Migration documents (core/migration.h), applied up and then down through the real
 * store (a temporary SQLite file) in a transaction that is always rolled back: any
 * document is either applied or refused with an error, never a crash, a leak or an
 * internal error. The "things" collection holds a record, so destructive changes
 * are refused unless the document's first byte asks for --allow-destructive. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/migration.h"
#include "core/record.h"

static store_t *store;
static char path[64];

static int bootstrap(store_job_t *j, store_conn_t *c)
{
    if (schema_bootstrap(c, &j->err) != 0 || migration_bootstrap(c, &j->err) != 0)
        return -1;
    schema_t *s = schema_load(c, &j->err);
    json_t *d =
        json_loads("{\"id\":\"pbc_things0001\",\"name\":\"things\",\"fields\":[{\"id\":\"text1\",\"name\":"
                   "\"title\",\"type\":\"text\"},{\"id\":\"date1\",\"name\":\"when\",\"type\":\"date\"}]}",
                   0, NULL);
    collection_t *c2 = collection_from_json(d, NULL, s, j->arena, &j->err);
    int rc = c2 ? schema_apply(c, s, NULL, c2, j->arena, &j->err) : -1;
    collection_free(c2);
    json_decref(d);
    schema_free(s);
    if (rc == 0)
        rc = store_exec(c, "INSERT INTO things (id, title, \"when\") VALUES ('r1', 'x', '')", NULL, 0,
                        &j->err) < 0
                 ? -1
                 : 0;
    return rc;
}

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
    snprintf(path, sizeof(path), "/tmp/basalt-fuzz-mig-%d.db", (int)getpid());
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
    return 0;
}

typedef struct {
    store_job_t job;
    json_t *doc;
    int allow;
    int applied;
} job_t;

static int run(store_job_t *j, store_conn_t *c)
{
    job_t *t = (job_t *)j;
    buf_t plan;
    buf_init(&plan, j->arena);
    migration_opts_t up = {.up = 1, .allow_destructive = t->allow, .plan = &plan};
    migration_opts_t down = {.up = 0, .allow_destructive = t->allow, .plan = &plan};
    if (migration_apply(c, t->doc, &up, j->arena, &j->err) != 0 ||
        migration_apply(c, t->doc, &down, j->arena, &j->err) != 0)
        return -1;
    t->applied = 1;
    return -1; /* always rolled back: every input starts from the same database */
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size < 1)
        return 0;
    json_t *doc = json_loadb((const char *)data + 1, size - 1, 0, NULL);
    if (doc == NULL)
        return 0;
    arena_t a;
    arena_init(&a, 1024);
    job_t t = {.job = {.run = run, .arena = &a}, .doc = doc, .allow = data[0] & 1};
    store_write_sync(store, &t.job);
    assert(t.applied || t.job.err.code == BS_ERR_BAD_REQUEST || t.job.err.code == BS_ERR_NOT_FOUND ||
           t.job.err.code == BS_ERR_VALIDATION || t.job.err.code == BS_ERR_NOMEM);
    json_decref(doc);
    arena_free(&a);
    return 0;
}
