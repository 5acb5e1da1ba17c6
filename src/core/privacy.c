/*
 * A user's data: found through relation fields, written as a zip (libarchive),
 * erased and purged through the record writer. See privacy.h for what counts.
 */
#include "core/privacy.h"

#include <archive.h>
#include <archive_entry.h>
#include <string.h>
#include <time.h>

#include "base/util.h"

/* Appends "(f1 = "id") OR (f2 ?= "id") ..." for the relation fields of x that point
 * at uc (only single-valued ones when only_single); returns how many fields. */
static int related_where(const record_reader_t *r, const collection_t *x, const collection_t *uc,
                         const char *id, int only_single, rules_compiler_t *comp, buf_t *sql, bs_error_t *err)
{
    int n = 0;
    for (size_t i = 0; i < x->nfields; i++) {
        const field_t *f = &x->fields[i];
        if (f->type != FIELD_RELATION || f->collection_id == NULL || strcmp(f->collection_id, uc->id) != 0 ||
            (only_single && field_is_multi(f)))
            continue;
        /* The id is checked by the caller (letters, digits, _ and -): safe between quotes. */
        char *text = arena_printf(r->arena, "%s %s \"%s\"", f->name, field_is_multi(f) ? "?=" : "=", id);
        if (text == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        buf_puts(sql, n ? " OR (" : "(");
        if (record_compile_rule(r, x, comp, text, NULL, sql, err) != 0)
            return -1;
        buf_putc(sql, ')');
        n++;
    }
    return n;
}

/* SELECT what FROM x WHERE <related>; NULL with err OK when x has no such field. */
static store_stmt_t *select_related(const record_reader_t *r, const collection_t *x, const collection_t *uc,
                                    const char *id, int only_single, const char *what, bs_error_t *err)
{
    rules_compiler_t comp = {0};
    comp.now_ms = util_now_ms();
    comp.dialect = store_conn_dialect(r->conn);
    buf_t sql;
    buf_init(&sql, r->arena);
    buf_printf(&sql, "SELECT %s FROM ", what);
    sql_ident(&sql, x->name);
    buf_puts(&sql, " AS \"_r\" WHERE ");
    int n = related_where(r, x, uc, id, only_single, &comp, &sql, err);
    if (n <= 0)
        return NULL;
    buf_puts(&sql, " ORDER BY \"_r\".\"id\"");
    if (sql.oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    return store_query(r->conn, sql.data, comp.params, comp.nparams, err);
}

/* The current row as JSON text without the password hash and the token key. */
static int row_json(const record_reader_t *r, const collection_t *c, store_stmt_t *st, buf_t *out,
                    bs_error_t *err)
{
    buf_t one;
    buf_init(&one, r->arena);
    if (record_write_row(r, c, st, NULL, NULL, &one, 0, err) != 0)
        return -1;
    json_t *o = json_loadb(one.data, one.len, 0, NULL);
    if (o == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    json_object_del(o, "password");
    json_object_del(o, "tokenKey");
    char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (text == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    buf_puts(out, text);
    free(text);
    return 0;
}

static la_ssize_t zip_write(struct archive *ar, void *ud, const void *p, size_t n)
{
    (void)ar;
    buf_t *b = ud;
    buf_append(b, p, n);
    return b->oom ? -1 : (la_ssize_t)n;
}

static int zip_add(struct archive *ar, const char *name, const char *data, size_t len, bs_error_t *err)
{
    struct archive_entry *e = archive_entry_new();
    if (e == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0600);
    archive_entry_set_mtime(e, time(NULL), 0);
    int rc = archive_write_header(ar, e) == ARCHIVE_OK &&
                     (len == 0 || archive_write_data(ar, data, len) == (la_ssize_t)len)
                 ? 0
                 : -1;
    archive_entry_free(e);
    if (rc != 0)
        bs_error_set(err, BS_ERR_INTERNAL, "Cannot build the export archive: %s", archive_error_string(ar));
    return rc;
}

int privacy_export_zip(store_conn_t *conn, const schema_t *s, const collection_t *uc, const char *id,
                       int bounded, buf_t *out, privacy_counts_t *counts, arena_t *a, bs_error_t *err)
{
    record_reader_t r = {.schema = s, .conn = conn, .arena = a, .who = &caller_system, .skip_view_rule = 1};
    counts->records = counts->collections = 0;
    buf_t user;
    buf_init(&user, a);
    store_stmt_t *st = record_select_by_id(&r, uc, "*", id, NULL, NULL, err);
    if (st == NULL)
        return -1;
    int step = store_step(st, err);
    if (step == 1 && row_json(&r, uc, st, &user, err) != 0)
        step = -1;
    store_done(st);
    if (step < 0)
        return -1;
    if (step == 0) {
        bs_error_set(err, BS_ERR_NOT_FOUND, "The user was not found.");
        return -1;
    }
    struct archive *ar = archive_write_new();
    if (ar == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    int rc = -1;
    json_t *manifest = json_pack("{s:s, s:s, s:s, s:{}}", "collection", uc->name, "id", id, "format",
                                 "basalt-user-export/1", "records");
    char ts[UTIL_TIME_LEN + 1];
    util_format_time(util_now_ms(), ts);
    json_object_set_new(manifest, "exportedAt", json_string(ts));
    /* No padding after the last block: the archive ends where the zip does. */
    if (archive_write_set_format_zip(ar) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(ar, 1) != ARCHIVE_OK ||
        archive_write_open(ar, out, NULL, zip_write, NULL) != ARCHIVE_OK) {
        bs_error_set(err, BS_ERR_INTERNAL, "Cannot start the export archive: %s", archive_error_string(ar));
        goto out;
    }
    if (zip_add(ar, "user.json", user.data, user.len, err) != 0)
        goto out;
    for (size_t k = 0; k < s->ncols; k++) {
        const collection_t *x = s->cols[k];
        /* Auth collections hold other people's accounts, never the user's data. */
        if (x->type != COLL_BASE)
            continue;
        bs_error_init(err);
        st = select_related(&r, x, uc, id, 0, "*", err);
        if (st == NULL) {
            if (err->code != BS_ERR_OK)
                goto out;
            continue;
        }
        buf_t arr;
        buf_init(&arr, a);
        buf_putc(&arr, '[');
        size_t n = 0;
        while ((step = store_step(st, err)) == 1) {
            if (++counts->records > PRIVACY_MAX_EXPORT_RECORDS && bounded) {
                bs_error_set(err, BS_ERR_BAD_REQUEST, "The user has more than %d related records.",
                             PRIVACY_MAX_EXPORT_RECORDS);
                step = -1;
                break;
            }
            if (n++)
                buf_putc(&arr, ',');
            if (row_json(&r, x, st, &arr, err) != 0) {
                step = -1;
                break;
            }
            if (bounded && out->len + arr.len > PRIVACY_MAX_EXPORT_BYTES) {
                bs_error_set(
                    err, BS_ERR_BAD_REQUEST,
                    "The user's data is larger than %u MiB; export it with the CLI (basalt user export).",
                    PRIVACY_MAX_EXPORT_BYTES >> 20);
                step = -1;
                break;
            }
        }
        store_done(st);
        if (step < 0)
            goto out;
        if (n == 0)
            continue;
        buf_putc(&arr, ']');
        counts->collections++;
        json_object_set_new(json_object_get(manifest, "records"), x->name, json_integer((json_int_t)n));
        char name[128];
        snprintf(name, sizeof(name), "records/%s.json", x->name);
        if (arr.oom) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            goto out;
        }
        if (zip_add(ar, name, arr.data, arr.len, err) != 0)
            goto out;
    }
    char *mt = json_dumps(manifest, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (mt == NULL || zip_add(ar, "manifest.json", mt, strlen(mt), err) != 0) {
        free(mt);
        if (err->code == BS_ERR_OK)
            bs_error_set(err, BS_ERR_NOMEM, NULL);
        goto out;
    }
    free(mt);
    if (archive_write_close(ar) != ARCHIVE_OK || out->oom) {
        bs_error_set(err, BS_ERR_INTERNAL, "Cannot finish the export archive: %s", archive_error_string(ar));
        goto out;
    }
    rc = 0;
out:
    archive_write_free(ar);
    json_decref(manifest);
    return rc;
}

/* Deletes record id of c through the writer's path; one already gone (an earlier
 * cascade took it) is not an error. Returns 1 deleted, 0 gone, -1 error. */
static int delete_one(store_conn_t *conn, record_write_t *w, const collection_t *c, const char *id,
                      arena_t *a, bs_error_t *err)
{
    w->coll = c;
    snprintf(w->id, sizeof(w->id), "%s", id);
    if (record_delete(conn, w, a, err) == 0)
        return 1;
    if (err->code == BS_ERR_NOT_FOUND) {
        bs_error_init(err);
        return 0;
    }
    return -1;
}

/* Collects the ids the statement yields (column 0) into an arena array. */
static char **collect_ids(store_stmt_t *st, arena_t *a, size_t *n, bs_error_t *err)
{
    size_t cap = 64;
    char **ids = arena_alloc(a, cap * sizeof(char *));
    *n = 0;
    int step;
    while (ids != NULL && (step = store_step(st, err)) == 1) {
        if (*n == cap) {
            char **more = arena_alloc(a, cap * 2 * sizeof(char *));
            if (more == NULL) {
                ids = NULL;
                break;
            }
            memcpy(more, ids, cap * sizeof(char *));
            ids = more;
            cap *= 2;
        }
        bs_value_t v = store_col(st, 0);
        ids[(*n)++] = arena_strndup(a, v.s ? v.s : "", v.s ? v.n : 0);
    }
    store_done(st);
    if (ids == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    return step < 0 ? NULL : ids;
}

int privacy_erase(store_conn_t *conn, record_write_t *w, const collection_t *uc, const char *id, int *deleted,
                  arena_t *a, bs_error_t *err)
{
    const schema_t *s = w->schema;
    record_reader_t r = {.schema = s, .conn = conn, .arena = a, .who = &caller_system, .skip_view_rule = 1};
    w->who = &caller_system;
    w->check_rule = 0;
    *deleted = 0;
    json_t *user = record_load(conn, uc, "id", id, err);
    if (user == NULL) {
        if (err->code == BS_ERR_NOT_FOUND)
            bs_error_set(err, BS_ERR_NOT_FOUND, "The user was not found.");
        return -1;
    }
    json_decref(user);
    for (size_t k = 0; k < s->ncols; k++) {
        const collection_t *x = s->cols[k];
        if (x->type != COLL_BASE)
            continue;
        bs_error_init(err);
        store_stmt_t *st = select_related(&r, x, uc, id, 1, "\"_r\".\"id\"", err);
        if (st == NULL) {
            if (err->code != BS_ERR_OK)
                return -1;
            continue;
        }
        size_t n;
        char **ids = collect_ids(st, a, &n, err);
        if (ids == NULL)
            return -1;
        for (size_t i = 0; i < n; i++) {
            int d = delete_one(conn, w, x, ids[i], a, err);
            if (d < 0)
                return -1;
            *deleted += d;
        }
    }
    int d = delete_one(conn, w, uc, id, a, err);
    if (d < 0)
        return -1;
    *deleted += d;
    return 0;
}

int privacy_purge(store_conn_t *conn, record_write_t *w, const collection_t *c, int64_t now_ms, int limit,
                  int *deleted, arena_t *a, bs_error_t *err)
{
    *deleted = 0;
    const field_t *f = collection_field_by_id(c, c->retention_field_id);
    if (c->retention_days <= 0 || f == NULL)
        return 0;
    w->who = &caller_system;
    w->check_rule = 0;
    char cutoff[UTIL_TIME_LEN + 1];
    util_format_time(now_ms - (int64_t)c->retention_days * 86400000, cutoff);
    /* Dates are text in one sortable form on both backends; '' is "no date". */
    buf_t sql;
    buf_init(&sql, a);
    buf_puts(&sql, "SELECT \"id\" FROM ");
    sql_ident(&sql, c->name);
    buf_puts(&sql, " WHERE ");
    sql_ident(&sql, f->name);
    buf_puts(&sql, " <> '' AND ");
    sql_ident(&sql, f->name);
    buf_puts(&sql, " < ?1 ORDER BY ");
    sql_ident(&sql, f->name);
    buf_printf(&sql, " LIMIT %d", limit);
    if (sql.oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    bs_value_t p = bs_val_text(cutoff, strlen(cutoff));
    store_stmt_t *st = store_query(conn, sql.data, &p, 1, err);
    if (st == NULL)
        return -1;
    size_t n;
    char **ids = collect_ids(st, a, &n, err);
    if (ids == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int d = delete_one(conn, w, c, ids[i], a, err);
        if (d < 0)
            return -1;
        *deleted += d;
    }
    return 0;
}
