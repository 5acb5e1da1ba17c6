/*
 * DDL for collections: the records table of a new collection, the migration of an
 * existing one (rename, add, drop and retype columns, recreate indexes), and the
 * `_collections` row. Runs on the writer connection inside the job's transaction.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/schema.h"
#include "base/util.h"
#include "rules/dialect.h"

/* ---- DDL ---- */

static void column_def(buf_t *b, const dialect_t *d, const field_t *f, int partitioned)
{
    sql_ident(b, f->name);
    if (f->primary_key) {
        /* A partitioned table's key must hold the partition column (below). */
        buf_printf(b, partitioned ? " %s NOT NULL" : " %s PRIMARY KEY NOT NULL", d->type_text);
        return;
    }
    if (field_is_multi(f)) {
        buf_printf(b, " %s NOT NULL DEFAULT '[]'", d->type_json);
        return;
    }
    switch (f->type) {
    case FIELD_NUMBER:
        buf_printf(b, " %s NOT NULL DEFAULT 0", d->type_number);
        break;
    case FIELD_BOOL:
        buf_printf(b, " %s NOT NULL DEFAULT %s", d->type_bool, d->false_lit);
        break;
    case FIELD_JSON:
        buf_printf(b, " %s DEFAULT NULL", d->type_json);
        break;
    case FIELD_GEOPOINT:
        buf_printf(b, " %s NOT NULL DEFAULT '{\"lon\":0,\"lat\":0}'", d->type_json);
        break;
    default:
        buf_printf(b, " %s NOT NULL DEFAULT ''", d->type_text);
    }
}

static int store_definition(store_conn_t *conn, const collection_t *c, int insert, bs_error_t *err)
{
    buf_t def;
    buf_init(&def, NULL);
    collection_to_json(c, &def, 1);
    if (def.oom) {
        buf_free(&def);
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    bs_value_t p[6] = {bs_val_text(c->id, strlen(c->id)),
                       bs_val_text(c->name, strlen(c->name)),
                       bs_val_text(c->type == COLL_AUTH ? "auth" : "base", 4),
                       bs_val_int(c->system),
                       bs_val_text(def.data, def.len),
                       bs_val_text(c->updated ? c->updated : "", c->updated ? strlen(c->updated) : 0)};
    int64_t r = insert
                    ? store_exec(conn,
                                 "INSERT INTO _collections (id, name, type, system, data, created, updated) "
                                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                                 p, 6, err)
                    : store_exec(conn,
                                 "UPDATE _collections SET name = ?2, type = ?3, system = ?4, data = ?5, "
                                 "updated = ?6 WHERE id = ?1",
                                 p, 6, err);
    buf_free(&def);
    return r < 0 ? -1 : 0;
}

static int exec_sql(store_conn_t *conn, buf_t *b, bs_error_t *err)
{
    if (b->oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    int rc = store_exec_script(conn, b->data, err);
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
    return rc;
}

static const field_t *field_by_id(const collection_t *c, const char *id)
{
    for (size_t i = 0; i < c->nfields; i++)
        if (c->fields[i].id && strcmp(c->fields[i].id, id) == 0)
            return &c->fields[i];
    return NULL;
}

/* ---- partitioned collections (PostgreSQL) ----
 *
 * The records table is range-partitioned by a date field, one partition per month,
 * quarter or year, plus a default partition for the dates outside the ones made.
 * PostgreSQL enforces a unique key only within a partition, so the record ids also
 * go to a table of their own ("_ids_<collection id>"), kept by a trigger in the same
 * transaction: a duplicate id is refused as a unique violation of that table's key.
 * Names derive from the collection's id, which never changes, so renaming the
 * collection or the field renames nothing else. */

enum { PART_BACK = 4, PART_AHEAD = 12 }; /* intervals made before and after today */

/* The first day of the interval that holds (year, month) and of the next one. */
static void interval_bounds(part_interval_t iv, int year, int month, int *y0, int *m0, int *y1, int *m1)
{
    int span = iv == PART_MONTH ? 1 : iv == PART_QUARTER ? 3 : 12;
    *y0 = year;
    *m0 = iv == PART_YEAR ? 1 : ((month - 1) / span) * span + 1;
    *y1 = *y0 + (*m0 - 1 + span) / 12;
    *m1 = (*m0 - 1 + span) % 12 + 1;
}

static void partition_name(buf_t *b, const collection_t *c, part_interval_t iv, int y, int m)
{
    if (iv == PART_MONTH)
        buf_printf(b, "\"_p_%s_%04dm%02d\"", c->id, y, m);
    else if (iv == PART_QUARTER)
        buf_printf(b, "\"_p_%s_%04dq%d\"", c->id, y, (m - 1) / 3 + 1);
    else
        buf_printf(b, "\"_p_%s_%04d\"", c->id, y);
}

/* Makes the partitions from PART_BACK intervals before now to PART_AHEAD after, where
 * missing; one whose range already has rows in the default partition is left out
 * (those rows stay where they are and remain correct). */
int schema_partitions_ahead(store_conn_t *conn, const collection_t *c, arena_t *arena, bs_error_t *err)
{
    const dialect_t *d = dialect_get(store_conn_dialect(conn));
    if (c->partition_interval == PART_NONE || d->partition_of_fmt == NULL)
        return 0;
    const field_t *pf = collection_field_by_id(c, c->partition_field_id);
    if (pf == NULL)
        return 0;
    char today[UTIL_TIME_LEN + 1];
    util_format_time(util_now_ms(), today);
    int year = atoi(today), month = atoi(today + 5);
    int y0, m0, y1, m1;
    interval_bounds(c->partition_interval, year, month, &y0, &m0, &y1, &m1);
    int span = c->partition_interval == PART_MONTH ? 1 : c->partition_interval == PART_QUARTER ? 3 : 12;
    /* Step back PART_BACK intervals. */
    int idx = y0 * 12 + (m0 - 1) - PART_BACK * span;
    for (int k = 0; k < PART_BACK + PART_AHEAD + 1; k++, idx += span) {
        int y = idx / 12, m = idx % 12 + 1;
        interval_bounds(c->partition_interval, y, m, &y0, &m0, &y1, &m1);
        char from[32], to[32];
        snprintf(from, sizeof(from), "%04d-%02d-01", y0, m0);
        snprintf(to, sizeof(to), "%04d-%02d-01", y1, m1);
        buf_t b;
        buf_init(&b, arena);
        buf_puts(&b, "SELECT 1 FROM ");
        buf_printf(&b, "\"_p_%s_default\" WHERE ", c->id);
        sql_ident(&b, pf->name);
        buf_puts(&b, " >= ?1 AND ");
        sql_ident(&b, pf->name);
        buf_puts(&b, " < ?2 LIMIT 1");
        bs_value_t p[2] = {bs_val_text(from, strlen(from)), bs_val_text(to, strlen(to))};
        if (b.oom) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        store_stmt_t *st = store_query(conn, b.data, p, 2, err);
        if (st == NULL)
            return -1;
        int taken = store_step(st, err);
        store_done(st);
        if (taken < 0)
            return -1;
        if (taken == 1)
            continue;
        buf_t name, table, ddl;
        buf_init(&name, arena);
        buf_init(&table, arena);
        buf_init(&ddl, arena);
        partition_name(&name, c, c->partition_interval, y0, m0);
        sql_ident(&table, c->name);
        if (name.oom || table.oom) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        buf_printf(&ddl, d->partition_of_fmt, name.data, table.data, from, to);
        if (exec_sql(conn, &ddl, err) != 0)
            return -1;
    }
    return 0;
}

int schema_partitions_maintain(store_conn_t *conn, const schema_t *s, arena_t *arena, bs_error_t *err)
{
    /* Every instance's maintenance makes the same partitions ahead: one at a time. */
    if (schema_ddl_lock(conn, err) != 0)
        return -1;
    for (size_t i = 0; i < s->ncols; i++)
        if (schema_partitions_ahead(conn, s->cols[i], arena, err) != 0)
            return -1;
    return 0;
}

/* Whether an update leaves every column as it was (same ids, names, types and
 * multiplicity, the table not renamed, no new field taking an old one's name): then
 * an index or search index whose definition is unchanged still holds and is kept.
 * Rebuilding them all on every change (a rule, one new index) took longer than the
 * statement deadline on a collection of a million rows (the 50 GB shop). */
static int columns_stable(const collection_t *old, const collection_t *nu)
{
    if (strcmp(old->name, nu->name) != 0)
        return 0;
    for (size_t i = 0; i < old->nfields; i++) {
        const field_t *of = &old->fields[i], *nf = field_by_id(nu, of->id);
        if (nf == NULL || strcmp(of->name, nf->name) != 0 || of->type != nf->type ||
            field_is_multi(of) != field_is_multi(nf))
            return 0;
    }
    for (size_t i = 0; i < nu->nfields; i++)
        if (field_by_id(old, nu->fields[i].id) == NULL && collection_field(old, nu->fields[i].name) != NULL)
            return 0;
    return 1;
}

static int has_index(const collection_t *c, const char *stmt)
{
    for (size_t i = 0; i < c->nindexes; i++)
        if (strcmp(c->indexes[i], stmt) == 0)
            return 1;
    return 0;
}

static int same_search(const collection_t *old, const collection_t *nu)
{
    if (old->nsearch != nu->nsearch)
        return 0;
    for (size_t i = 0; i < old->nsearch; i++)
        if (strcmp(old->search_fields[i], nu->search_fields[i]) != 0)
            return 0;
    return 1;
}

int schema_apply(store_conn_t *conn, const schema_t *cur, const collection_t *old, const collection_t *nu,
                 arena_t *arena, bs_error_t *err)
{
    const dialect_t *d = dialect_get(store_conn_dialect(conn));
    /* Delivered at the commit, to the instances that share the database: their next
     * request sees this change (ADR 0013). Nothing is sent if the change rolls back. */
    if (d->schema_notify_sql != NULL && store_exec(conn, d->schema_notify_sql, NULL, 0, err) < 0)
        return -1;
    buf_t b;
    buf_init(&b, arena);
    int stable = 0, keep_search = 0; /* an update that keeps indexes (columns_stable) */
    if (nu != NULL && nu->partition_interval != PART_NONE && d->partition_key_fmt == NULL) {
        bs_error_field(err, arena, "partition", "validation_partition_backend",
                       "Partitioned collections need PostgreSQL (--db); the embedded SQLite database keeps "
                       "one table per collection.");
        return -1;
    }
    /* A collection a view reads keeps its name while the view exists. */
    if (old != NULL && (nu == NULL || strcmp(old->name, nu->name) != 0))
        for (size_t i = 0; i < cur->ncols; i++) {
            const collection_t *v = cur->cols[i];
            if (v->type == COLL_VIEW && strcmp(v->id, old->id) != 0 && view_reads(v, old->name)) {
                bs_error_set(
                    err, BS_ERR_BAD_REQUEST,
                    "Cannot %s collection \"%s\": the view collection \"%s\" reads it; change or delete "
                    "the view first.",
                    nu == NULL ? "delete" : "rename", old->name, v->name);
                return -1;
            }
        }
    if ((nu != NULL && nu->type == COLL_VIEW) || (nu == NULL && old->type == COLL_VIEW)) {
        /* A view: (re)made from its query; its records are the query's rows. */
        if (old != NULL) {
            buf_puts(&b, "DROP VIEW IF EXISTS ");
            sql_ident(&b, old->name);
            buf_puts(&b, ";");
        }
        if (nu != NULL) {
            buf_puts(&b, "CREATE VIEW ");
            sql_ident(&b, nu->name);
            buf_printf(&b, " AS %s;", nu->view_query);
        }
        if (exec_sql(conn, &b, err) != 0) {
            bs_error_field(err, arena, "viewQuery", "validation_invalid_view_query",
                           "The view cannot be made: %s", err->message);
            return -1;
        }
        if (nu == NULL) {
            bs_value_t p = bs_val_text(old->id, strlen(old->id));
            return store_exec(conn, "DELETE FROM _collections WHERE id = ?1", &p, 1, err) < 0 ? -1 : 0;
        }
        return store_definition(conn, nu, old == NULL, err);
    }
    if (nu == NULL) {
        /* Delete: refuse while other collections point at this one. */
        for (size_t i = 0; i < cur->ncols; i++) {
            const collection_t *o = cur->cols[i];
            if (strcmp(o->id, old->id) == 0)
                continue;
            for (size_t k = 0; k < o->nfields; k++)
                if (o->fields[k].type == FIELD_RELATION && strcmp(o->fields[k].collection_id, old->id) == 0) {
                    bs_error_set(
                        err, BS_ERR_BAD_REQUEST,
                        "Cannot delete collection \"%s\": field \"%s\" of collection \"%s\" refers to it.",
                        old->name, o->fields[k].name, o->name);
                    return -1;
                }
        }
        if (old->nsearch > 0)
            dialect_fts_drop(d, &b, old->id);
        buf_puts(&b, "DROP TABLE IF EXISTS ");
        sql_ident(&b, old->name);
        buf_puts(&b, ";");
        if (old->partition_interval != PART_NONE && d->partition_drop_fmt != NULL)
            buf_printf(&b, d->partition_drop_fmt, old->id);
        if (exec_sql(conn, &b, err) != 0)
            return -1;
        bs_value_t p = bs_val_text(old->id, strlen(old->id));
        return store_exec(conn, "DELETE FROM _collections WHERE id = ?1", &p, 1, err) < 0 ? -1 : 0;
    }
    if (old == NULL) {
        buf_puts(&b, "CREATE TABLE ");
        sql_ident(&b, nu->name);
        buf_puts(&b, " (");
        for (size_t i = 0; i < nu->nfields; i++) {
            if (i)
                buf_puts(&b, ", ");
            column_def(&b, d, &nu->fields[i], nu->partition_interval != PART_NONE);
        }
        buf_puts(&b, d->extra_columns);
        const field_t *pf = collection_field_by_id(nu, nu->partition_field_id);
        if (nu->partition_interval != PART_NONE && pf != NULL) {
            buf_t table, col;
            buf_init(&table, arena);
            buf_init(&col, arena);
            sql_ident(&table, nu->name);
            sql_ident(&col, pf->name);
            if (table.oom || col.oom) {
                bs_error_set(err, BS_ERR_NOMEM, NULL);
                return -1;
            }
            buf_printf(&b, d->partition_key_fmt, col.data, col.data);
            buf_printf(&b, d->partition_objects_fmt, nu->id, table.data);
        } else {
            buf_puts(&b, ");");
        }
    } else {
        /* The search index and the indexes are made again from the new definition
         * (names and columns may change under them), unless the columns stay as
         * they were and the definition is the same: those are kept. */
        stable = columns_stable(old, nu);
        keep_search = stable && same_search(old, nu);
        if (old->nsearch > 0 && !keep_search)
            dialect_fts_drop(d, &b, old->id);
        char iname[128];
        for (size_t i = 0; i < old->nindexes; i++)
            if (!(stable && has_index(nu, old->indexes[i])) &&
                collection_index_name(old->indexes[i], iname, sizeof(iname)) == 0) {
                buf_puts(&b, "DROP INDEX IF EXISTS ");
                sql_ident(&b, iname);
                buf_puts(&b, ";");
            }
        if (strcmp(old->name, nu->name) != 0) {
            buf_puts(&b, "ALTER TABLE ");
            sql_ident(&b, old->name);
            buf_puts(&b, " RENAME TO ");
            sql_ident(&b, nu->name);
            buf_puts(&b, ";");
        }
        for (size_t i = 0; i < old->nfields; i++) {
            const field_t *of = &old->fields[i];
            if (field_by_id(nu, of->id) == NULL) {
                buf_puts(&b, "ALTER TABLE ");
                sql_ident(&b, nu->name);
                buf_puts(&b, " DROP COLUMN ");
                sql_ident(&b, of->name);
                buf_puts(&b, ";");
            }
        }
        for (size_t i = 0; i < nu->nfields; i++) {
            const field_t *nf = &nu->fields[i];
            const field_t *of = field_by_id(old, nf->id);
            if (of == NULL) {
                buf_puts(&b, "ALTER TABLE ");
                sql_ident(&b, nu->name);
                buf_puts(&b, " ADD COLUMN ");
                column_def(&b, d, nf, 0);
                buf_puts(&b, ";");
                continue;
            }
            if (strcmp(of->name, nf->name) != 0) {
                buf_puts(&b, "ALTER TABLE ");
                sql_ident(&b, nu->name);
                buf_puts(&b, " RENAME COLUMN ");
                sql_ident(&b, of->name);
                buf_puts(&b, " TO ");
                sql_ident(&b, nf->name);
                buf_puts(&b, ";");
            }
            if (field_is_multi(of) != field_is_multi(nf)) {
                /* Existing values migrate between one value and a list of values. */
                buf_t t, col;
                buf_init(&t, arena);
                buf_init(&col, arena);
                sql_ident(&t, nu->name);
                sql_ident(&col, nf->name);
                if (t.oom || col.oom) {
                    bs_error_set(err, BS_ERR_NOMEM, NULL);
                    return -1;
                }
                buf_printf(&b, field_is_multi(nf) ? d->to_multi_fmt : d->to_single_fmt, t.data, col.data);
            }
        }
    }
    for (size_t i = 0; i < nu->nindexes; i++) {
        if (stable && has_index(old, nu->indexes[i]))
            continue;
        dialect_index(d, &b, nu->indexes[i]);
        buf_puts(&b, ";");
    }
    if (nu->nsearch > 0 && !keep_search) {
        buf_t table;
        buf_init(&table, arena);
        sql_ident(&table, nu->name);
        if (table.oom) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        dialect_fts_create(d, &b, nu->id, table.data, (const char *const *)nu->search_fields, nu->nsearch);
    }
    if (exec_sql(conn, &b, err) != 0) {
        if (err->code == BS_ERR_VALIDATION)
            bs_error_set(err, BS_ERR_BAD_REQUEST, "The change conflicts with existing records: %s",
                         err->message);
        return -1;
    }
    if (store_definition(conn, nu, old == NULL, err) != 0)
        return -1;
    return schema_partitions_ahead(conn, nu, arena, err);
}
