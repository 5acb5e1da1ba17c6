/*
 * DDL for collections: the records table of a new collection, the migration of an
 * existing one (rename, add, drop and retype columns, recreate indexes), and the
 * `_collections` row. Runs on the writer connection inside the job's transaction.
 */
#include <stdlib.h>
#include <string.h>

#include "core/schema.h"
#include "rules/dialect.h"

/* ---- DDL ---- */

static void column_def(buf_t *b, const dialect_t *d, const field_t *f)
{
    sql_ident(b, f->name);
    if (f->primary_key) {
        buf_printf(b, " %s PRIMARY KEY NOT NULL", d->type_text);
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

int schema_apply(store_conn_t *conn, const schema_t *cur, const collection_t *old, const collection_t *nu,
                 arena_t *arena, bs_error_t *err)
{
    const dialect_t *d = dialect_get(store_conn_dialect(conn));
    buf_t b;
    buf_init(&b, arena);
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
        buf_puts(&b, "DROP TABLE IF EXISTS ");
        sql_ident(&b, old->name);
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
            column_def(&b, d, &nu->fields[i]);
        }
        buf_puts(&b, d->extra_columns);
        buf_puts(&b, ");");
    } else {
        /* Drop the old indexes; they are recreated from the new definition. */
        char iname[128];
        for (size_t i = 0; i < old->nindexes; i++)
            if (collection_index_name(old->indexes[i], iname, sizeof(iname)) == 0) {
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
                column_def(&b, d, nf);
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
        dialect_index(d, &b, nu->indexes[i]);
        buf_puts(&b, ";");
    }
    if (exec_sql(conn, &b, err) != 0) {
        if (err->code == BS_ERR_VALIDATION)
            bs_error_set(err, BS_ERR_BAD_REQUEST, "The change conflicts with existing records: %s",
                         err->message);
        return -1;
    }
    return store_definition(conn, nu, old == NULL, err);
}
