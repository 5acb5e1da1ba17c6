/*
 * `basalt db copy`, step 3 (see dbcopy.c's opening): the destination's system tables,
 * then every source collection it lacks or must replace, and the settings, in one
 * destination transaction after every conflict was looked for; and a partitioned
 * collection made plain for a destination without partitions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/dbcopy_int.h"

/* ---- the schema step ---- */

/* Two definitions are the same when their stored forms agree after a round trip
 * through the parser (formatting aside). */
int dbcopy_same_definition(const collection_t *a, const collection_t *b)
{
    buf_t x, y;
    buf_init(&x, NULL);
    buf_init(&y, NULL);
    collection_to_json(a, &x, 1);
    collection_to_json(b, &y, 1);
    int same = !x.oom && !y.oom && x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    buf_free(&x);
    buf_free(&y);
    return same;
}

enum { ACT_NONE, ACT_CREATE, ACT_REPLACE };

typedef struct {
    store_job_t job;
    const schema_t *src_schema, *dst_schema;
    const dbcopy_coll_rows_t *rows;
    const int *action;
    /* For ACT_REPLACE: the destination collections to drop first (by id; NULL). */
    const collection_t *const *drop_a, *const *drop_b;
    const dbcopy_params_t *src_params, *dst_params;
    int force;
} schema_job_t;

static int drop_collection(store_conn_t *c, const collection_t *old, bs_error_t *err)
{
    buf_t b;
    buf_init(&b, NULL);
    buf_puts(&b, "DROP TABLE IF EXISTS ");
    sql_ident(&b, old->name);
    int rc = b.oom ? -1 : store_exec_script(c, b.data, err);
    buf_free(&b);
    if (rc != 0)
        return -1;
    bs_value_t p = bs_val_text(old->id, strlen(old->id));
    return store_exec(c, "DELETE FROM _collections WHERE id = ?1", &p, 1, err) < 0 ? -1 : 0;
}

static int bootstrap_run(store_job_t *job, store_conn_t *c)
{
    return store_exec_script(c, dialect_get(store_conn_dialect(c))->bootstrap_sql, &job->err);
}

static int schema_run(store_job_t *job, store_conn_t *c)
{
    schema_job_t *j = (schema_job_t *)job;
    for (size_t i = 0; i < j->rows->n; i++) {
        if (j->action[i] == ACT_NONE)
            continue;
        const collection_t *nu = schema_find(j->src_schema, j->rows->rows[i].id);
        if (j->action[i] == ACT_REPLACE) {
            if (j->drop_a[i] != NULL && drop_collection(c, j->drop_a[i], &job->err) != 0)
                return -1;
            if (j->drop_b[i] != NULL && j->drop_b[i] != j->drop_a[i] &&
                drop_collection(c, j->drop_b[i], &job->err) != 0)
                return -1;
        }
        if (schema_apply(c, j->dst_schema, NULL, nu, job->arena, &job->err) != 0)
            return -1;
        /* schema_apply wrote the definition as this build serializes it, with
         * created = updated: the row becomes the source's, byte for byte. */
        const dbcopy_coll_row_t *r = &j->rows->rows[i];
        bs_value_t p[7] = {
            bs_val_text(r->id, strlen(r->id)),           bs_val_text(r->name, strlen(r->name)),
            bs_val_text(r->type, strlen(r->type)),       bs_val_int(r->system),
            bs_val_text(r->created, strlen(r->created)), bs_val_text(r->updated, strlen(r->updated)),
            bs_val_text(r->data, strlen(r->data))};
        /* (A collection made plain keeps the definition schema_apply wrote.) */
        const char *sql = r->unpartitioned ? "UPDATE _collections SET name = ?2, type = ?3, system = ?4, "
                                             "created = ?5, updated = ?6 WHERE id = ?1"
                                           : "UPDATE _collections SET name = ?2, type = ?3, system = ?4, "
                                             "created = ?5, updated = ?6, data = ?7 WHERE id = ?1";
        if (store_exec(c, sql, p, r->unpartitioned ? 6 : 7, &job->err) < 0)
            return -1;
    }
    for (size_t i = 0; i < j->src_params->n; i++) {
        const char *id = j->src_params->ids[i], *v = j->src_params->values[i];
        int found;
        const char *have = dbcopy_param_get(j->dst_params, id, &found);
        if (found && dbcopy_same_value(have, v))
            continue;
        bs_value_t p[2] = {bs_val_text(id, strlen(id)), v ? bs_val_text(v, strlen(v)) : bs_val_null()};
        if (store_exec(c,
                       found ? "UPDATE _params SET value = ?2 WHERE id = ?1"
                             : "INSERT INTO _params (id, value) VALUES (?1, ?2)",
                       p, 2, &job->err) < 0)
            return -1;
    }
    return 0;
}

/* Plans and applies the schema step. Returns 0, or -1 after printing why. */
int dbcopy_copy_schema(dbcopy_end_t *src, dbcopy_end_t *dst, const dbcopy_opts_t *o, const schema_t *ss,
                       const dbcopy_coll_rows_t *rows, const dbcopy_params_t *sp)
{
    bs_error_t err;
    bs_error_init(&err);
    arena_t a;
    arena_init(&a, 4096);
    store_job_t boot = {.run = bootstrap_run, .arena = &a};
    if (store_write_sync(dst->store, &boot) != 0) {
        dbcopy_fail("%s=%s: cannot create the system tables: %s", dst->flag, dst->where, boot.err.message);
        arena_free(&a);
        return -1;
    }
    schema_t *ds = schema_load(dst->rd, &err);
    dbcopy_params_t dp = {0};
    int rc = -1;
    int *action = calloc(rows->n + 1, sizeof(*action));
    const collection_t **drop_a = calloc(rows->n + 1, sizeof(*drop_a));
    const collection_t **drop_b = calloc(rows->n + 1, sizeof(*drop_b));
    if (ds == NULL || action == NULL || drop_a == NULL || drop_b == NULL) {
        dbcopy_fail("%s=%s: cannot read the collections: %s", dst->flag, dst->where, err.message);
        goto out;
    }
    if (dbcopy_load_params(dst, &dp, &err) != 0) {
        dbcopy_fail("%s=%s: cannot read the settings (_params): %s", dst->flag, dst->where, err.message);
        goto out;
    }
    int conflicts = 0;
    for (size_t i = 0; i < rows->n; i++) {
        const collection_t *c = schema_find(ss, rows->rows[i].id);
        const collection_t *by_id = NULL, *by_name = NULL;
        for (size_t k = 0; k < ds->ncols; k++) {
            if (strcmp(ds->cols[k]->id, c->id) == 0)
                by_id = ds->cols[k];
            if (strcasecmp(ds->cols[k]->name, c->name) == 0)
                by_name = ds->cols[k];
        }
        if (by_id != NULL && by_id == by_name && dbcopy_same_definition(by_id, c)) {
            action[i] = ACT_NONE;
            continue;
        }
        if (by_id == NULL && by_name == NULL) {
            action[i] = ACT_CREATE;
            continue;
        }
        /* A differing collection: replaceable when forced, or when it is one that a new
         * database gets at its first start (a system collection, or the default users
         * by its id) holding no records: a database that `basalt serve` opened once. */
        int replaceable = 1;
        for (int k = 0; k < 2; k++) {
            const collection_t *x = k ? by_name : by_id;
            int first_start = (x != NULL && x->system && c->system) ||
                              (x != NULL && strcmp(x->id, SCHEMA_DEFAULT_USERS_ID) == 0);
            if (x != NULL && !(first_start && dbcopy_count_rows(dst, x->name, &err) == 0))
                replaceable = 0;
        }
        replaceable |= o->force;
        if (!replaceable) {
            const collection_t *x = by_id ? by_id : by_name;
            dbcopy_fail(
                "%s=%s: collection \"%s\" (id %s) exists with a different definition than the source's "
                "\"%s\" (id %s); nothing was copied. Give --force to replace it (its records at the "
                "destination are deleted), or copy into another database.",
                dst->flag, dst->where, x->name, x->id, c->name, c->id);
            conflicts++;
            continue;
        }
        action[i] = ACT_REPLACE;
        drop_a[i] = by_id;
        drop_b[i] = by_name;
    }
    for (size_t i = 0; i < sp->n; i++) {
        int found;
        const char *have = dbcopy_param_get(&dp, sp->ids[i], &found);
        if (found && !dbcopy_same_value(have, sp->values[i]) && !o->force) {
            dbcopy_fail(
                "%s=%s: setting \"%s\" (_params) differs from the source's; nothing was copied. Give --force "
                "to overwrite it.",
                dst->flag, dst->where, sp->ids[i]);
            conflicts++;
        }
    }
    if (conflicts > 0)
        goto out;
    schema_job_t job = {.job = {.run = schema_run, .arena = &a},
                        .src_schema = ss,
                        .dst_schema = ds,
                        .rows = rows,
                        .action = action,
                        .drop_a = drop_a,
                        .drop_b = drop_b,
                        .src_params = sp,
                        .dst_params = &dp,
                        .force = o->force};
    if (store_write_sync(dst->store, &job.job) != 0) {
        dbcopy_fail("%s=%s: cannot create the collections: %s", dst->flag, dst->where, job.job.err.message);
        goto out;
    }
    size_t created = 0, replaced = 0;
    for (size_t i = 0; i < rows->n; i++) {
        created += action[i] == ACT_CREATE;
        replaced += action[i] == ACT_REPLACE;
        if (action[i] == ACT_REPLACE && (o->force || o->progress != DBCOPY_PROGRESS_OFF))
            fprintf(stderr, "replaced collection \"%s\" at the destination\n", rows->rows[i].name);
    }
    if (o->progress != DBCOPY_PROGRESS_OFF)
        fprintf(stderr,
                "schema: %zu collections (%zu created, %zu replaced, %zu already there), %zu settings\n",
                rows->n, created, replaced, rows->n - created - replaced, sp->n);
    rc = 0;
out:
    free(action);
    free(drop_a);
    free(drop_b);
    dbcopy_params_free(&dp);
    schema_free(ds);
    arena_free(&a);
    return rc;
}

/* A destination without partitions (SQLite refuses the option) takes a partitioned
 * collection as a plain one: same fields, indexes and records, its definition
 * without "partition". Changes the source's parsed definitions in ss (the caller's). */
void dbcopy_strip_partitions(const dbcopy_end_t *dst, schema_t *ss, dbcopy_coll_rows_t *rows,
                             const dbcopy_opts_t *o)
{
    if (store_dialect(dst->store) == RULES_DIALECT_POSTGRES)
        return;
    for (size_t i = 0; i < rows->n; i++) {
        collection_t *c = (collection_t *)schema_find(ss, rows->rows[i].id);
        if (c == NULL || c->partition_interval == PART_NONE)
            continue;
        c->partition_interval = PART_NONE;
        free(c->partition_field_id);
        c->partition_field_id = NULL;
        rows->rows[i].unpartitioned = 1;
        if (o->progress != DBCOPY_PROGRESS_OFF)
            fprintf(stderr,
                    "%s: partitioned at the source; %s has no partitions, so it becomes a plain collection\n",
                    c->name, dst->where);
    }
}
