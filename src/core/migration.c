/*
 * Migration documents: building them from a schema change, applying them up or down
 * through the same parser and DDL as the collections API (collection_from_json,
 * schema_apply), describing what they change, and refusing a change that would lose
 * records unless asked to. See migration.h for the format.
 */
#include "core/migration.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"

static const char *rule_keys[RULE__COUNT] = {"listRule",   "viewRule", "createRule", "updateRule",
                                             "deleteRule", "authRule", "manageRule"};

static const char *automigrate_dir;

void migration_set_dir(const char *dir)
{
    automigrate_dir = dir;
}

const char *migration_dir(void)
{
    return automigrate_dir;
}

/* The public JSON of c (no token secret), parsed; NULL when c is NULL. */
static json_t *snapshot(const collection_t *c)
{
    if (c == NULL)
        return json_null();
    buf_t b;
    buf_init(&b, NULL);
    collection_to_json(c, &b, 0);
    json_t *o = b.oom ? NULL : json_loadb(b.data, b.len, 0, NULL);
    buf_free(&b);
    return o;
}

json_t *migration_change(const collection_t *old, const collection_t *nu)
{
    json_t *b = snapshot(old), *a = snapshot(nu);
    if (b == NULL || a == NULL) {
        json_decref(b);
        json_decref(a);
        return NULL;
    }
    return json_pack("{s:o, s:o}", "before", b, "after", a);
}

json_t *migration_doc(const char *name, const char *action, json_t *changes)
{
    return json_pack("{s:i, s:s, s:s, s:o}", "basalt_migration", 1, "name", name, "action", action, "changes",
                     changes);
}

char *migration_new_name(const char *action, const char *what)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static int64_t last;
    pthread_mutex_lock(&mu);
    int64_t ms = util_now_ms();
    if (ms <= last)
        ms = last + 1;
    last = ms;
    pthread_mutex_unlock(&mu);
    char clean[64];
    size_t n = 0;
    for (const char *p = what ? what : ""; *p && n < sizeof(clean) - 1; p++)
        clean[n++] = (char)((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                                    (*p >= '0' && *p <= '9') || *p == '_'
                                ? *p
                                : '_');
    clean[n] = '\0';
    char *out = NULL;
    if (asprintf(&out, "%lld_%s%s%s.json", (long long)ms, action, n ? "_" : "", clean) < 0)
        return NULL;
    return out;
}

/* ---- the _migrations table ---- */

int migration_bootstrap(store_conn_t *conn, bs_error_t *err)
{
    /* Portable SQL: both backends take TEXT and BIGINT. */
    return store_exec(
               conn,
               "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied BIGINT NOT NULL)",
               NULL, 0, err) < 0
               ? -1
               : 0;
}

int migration_mark(store_conn_t *conn, const char *name, int applied, bs_error_t *err)
{
    bs_value_t p[2] = {bs_val_text(name, strlen(name)), bs_val_int(util_now_ms())};
    if (applied)
        return store_exec(conn, "INSERT INTO _migrations (name, applied) VALUES (?1, ?2)", p, 2, err) < 0 ? -1
                                                                                                          : 0;
    return store_exec(conn, "DELETE FROM _migrations WHERE name = ?1", p, 1, err) < 0 ? -1 : 0;
}

/* ---- applying ---- */

int migration_validate(const json_t *doc, bs_error_t *err)
{
    json_t *changes = json_object_get(doc, "changes");
    if (!json_is_object(doc) || json_integer_value(json_object_get(doc, "basalt_migration")) != 1 ||
        !json_is_array(changes)) {
        bs_error_set(err, BS_ERR_BAD_REQUEST,
                     "not a Basalt migration: expected {\"basalt_migration\": 1, \"changes\": [...]}");
        return -1;
    }
    size_t i;
    json_t *ch;
    json_array_foreach(changes, i, ch)
    {
        json_t *b = json_object_get(ch, "before"), *a = json_object_get(ch, "after");
        if (!json_is_object(ch) || b == NULL || a == NULL || (!json_is_null(b) && !json_is_object(b)) ||
            (!json_is_null(a) && !json_is_object(a)) || (json_is_null(a) && json_is_null(b))) {
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         "change %zu must be {\"before\": collection or null, \"after\": collection or null} "
                         "with at least one of them a collection",
                         i);
            return -1;
        }
        json_t *some = json_is_object(a) ? a : b;
        if (!json_is_string(json_object_get(some, "id")) && !json_is_string(json_object_get(some, "name"))) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "change %zu: a collection needs an \"id\" or a \"name\"",
                         i);
            return -1;
        }
    }
    return 0;
}

/* Records in c's table, or -1 with err. */
static int64_t count_records(store_conn_t *conn, const collection_t *c, arena_t *arena, bs_error_t *err)
{
    buf_t sql;
    buf_init(&sql, arena);
    buf_puts(&sql, "SELECT COUNT(*) FROM ");
    sql_ident(&sql, c->name);
    store_stmt_t *st = store_query(conn, sql.data, NULL, 0, err);
    if (st == NULL)
        return -1;
    int64_t n = -1;
    if (store_step(st, err) == 1) {
        bs_value_t v = store_col(st, 0);
        n = v.type == BS_VAL_INT      ? v.i
            : v.type == BS_VAL_DOUBLE ? (int64_t)v.d
            : v.type == BS_VAL_TEXT   ? atoll(v.s)
                                      : 0;
    }
    store_done(st);
    return n;
}

static const char *str_or(const json_t *o, const char *k, const char *def)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : def;
}

static json_t *find_by_id(json_t *arr, const char *id)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *vid = json_string_value(json_object_get(v, "id"));
        if (vid && id && strcmp(vid, id) == 0)
            return v;
    }
    return NULL;
}

static int in_strings(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) if (json_is_string(v) && strcmp(json_string_value(v), s) == 0) return 1;
    return 0;
}

/* Describes old -> nu into o->plan and refuses dropped fields of a table with records.
 * Returns 0 or -1 with err. */
static int describe_update(store_conn_t *conn, const collection_t *old, const collection_t *nu,
                           const migration_opts_t *o, arena_t *arena, bs_error_t *err)
{
    json_t *jo = snapshot(old), *jn = snapshot(nu);
    int rc = 0;
    if (jo == NULL || jn == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        rc = -1;
        goto out;
    }
    json_t *fo = json_object_get(jo, "fields"), *fn = json_object_get(jn, "fields");
    buf_t dropped;
    buf_init(&dropped, arena);
    size_t i;
    json_t *f;
    json_array_foreach(fo, i, f)
    {
        if (find_by_id(fn, str_or(f, "id", "")) != NULL)
            continue;
        if (dropped.len)
            buf_puts(&dropped, ", ");
        buf_puts(&dropped, str_or(f, "name", "?"));
        if (o->plan)
            buf_printf(o->plan, "  - field %s.%s (%s)\n", old->name, str_or(f, "name", "?"),
                       str_or(f, "type", "?"));
    }
    /* A view's fields come from its query: it holds no records of its own. */
    if (dropped.len && !o->allow_destructive && old->type != COLL_VIEW) {
        int64_t n = count_records(conn, old, arena, err);
        if (n < 0) {
            rc = -1;
            goto out;
        }
        if (n > 0) {
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         "refused: dropping field(s) %s of collection %s would lose their values in %lld "
                         "record(s); run again with --allow-destructive to accept",
                         dropped.data, old->name, (long long)n);
            rc = -1;
            goto out;
        }
    }
    if (o->plan == NULL)
        goto out;
    if (strcmp(old->name, nu->name) != 0)
        buf_printf(o->plan, "  ~ collection %s renamed to %s\n", old->name, nu->name);
    json_array_foreach(fn, i, f)
    {
        json_t *was = find_by_id(fo, str_or(f, "id", ""));
        if (was == NULL)
            buf_printf(o->plan, "  + field %s.%s (%s)\n", nu->name, str_or(f, "name", "?"),
                       str_or(f, "type", "?"));
        else if (!json_equal(was, f)) {
            if (strcmp(str_or(was, "name", ""), str_or(f, "name", "")) != 0)
                buf_printf(o->plan, "  ~ field %s.%s renamed to %s\n", nu->name, str_or(was, "name", "?"),
                           str_or(f, "name", "?"));
            else
                buf_printf(o->plan, "  ~ field %s.%s options changed\n", nu->name, str_or(f, "name", "?"));
        }
    }
    json_t *io = json_object_get(jo, "indexes"), *in = json_object_get(jn, "indexes"), *v;
    json_array_foreach(io, i, v) if (!in_strings(in, json_string_value(v)))
        buf_printf(o->plan, "  - index %s\n", json_string_value(v));
    json_array_foreach(in, i, v) if (!in_strings(io, json_string_value(v)))
        buf_printf(o->plan, "  + index %s\n", json_string_value(v));
    for (int r = 0; r < RULE__COUNT; r++) {
        json_t *a = json_object_get(jo, rule_keys[r]), *b = json_object_get(jn, rule_keys[r]);
        if ((a || b) && !(a && b && json_equal(a, b)))
            buf_printf(o->plan, "  ~ rule %s.%s changed\n", nu->name, rule_keys[r]);
    }
out:
    json_decref(jo);
    json_decref(jn);
    return rc;
}

/* Makes the collection of one change look like target (NULL: absent). */
static int apply_change(store_conn_t *conn, const json_t *target, const json_t *other,
                        const migration_opts_t *o, arena_t *arena, bs_error_t *err)
{
    const json_t *some = json_is_object(target) ? target : other;
    const char *id = json_string_value(json_object_get(some, "id"));
    const char *name = json_string_value(json_object_get(some, "name"));
    schema_t *cur = schema_load(conn, err);
    if (cur == NULL)
        return -1;
    const collection_t *old = id ? schema_find(cur, id) : NULL;
    if (old == NULL && name != NULL && (old = schema_find(cur, name)) != NULL && id != NULL &&
        json_is_object(target)) {
        /* Another collection holds the name: a create would clash, an update would
         * rewrite a collection that is not this one. */
        bs_error_set(err, BS_ERR_BAD_REQUEST, "collection %s exists with another id (%s, not %s)", name,
                     old->id, id);
        schema_free(cur);
        return -1;
    }
    int rc = 0;
    collection_t *nu = NULL;
    if (!json_is_object(target)) {
        if (old == NULL) {
            if (o->plan)
                buf_printf(o->plan, "  = collection %s is already absent\n", name ? name : id);
            goto out;
        }
        if (old->system) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "system collection %s cannot be dropped", old->name);
            rc = -1;
            goto out;
        }
        int64_t n = old->type == COLL_VIEW ? 0 : count_records(conn, old, arena, err);
        if (n < 0) {
            rc = -1;
            goto out;
        }
        if (n > 0 && !o->allow_destructive) {
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         "refused: dropping collection %s would delete its %lld record(s); run again with "
                         "--allow-destructive to accept",
                         old->name, (long long)n);
            rc = -1;
            goto out;
        }
        if (o->plan)
            buf_printf(o->plan, "  - collection %s (%lld records)\n", old->name, (long long)n);
    } else {
        nu = collection_from_json(target, old, cur, arena, err);
        if (nu == NULL) {
            char msg[400];
            snprintf(msg, sizeof(msg), "%s", err->message);
            buf_t fields;
            buf_init(&fields, arena);
            for (const bs_field_error_t *fe = err->fields; fe; fe = fe->next)
                buf_printf(&fields, "; %s: %s", fe->field, fe->message);
            bs_error_set(err, BS_ERR_BAD_REQUEST, "collection %s: %s%s", name ? name : id, msg,
                         fields.data ? fields.data : "");
            rc = -1;
            goto out;
        }
        /* A view's fields come from its query, as the API makes them. */
        if (nu->type == COLL_VIEW) {
            if (view_infer(conn, cur, nu, arena, err) != 0) {
                rc = -1;
                goto out;
            }
            /* Inferred fields get new ids; the snapshot's (same name and type) are kept,
             * so a replayed view is the one the file describes. */
            json_t *tf = json_object_get(target, "fields");
            for (size_t i = 0; i < nu->nfields; i++) {
                size_t k;
                json_t *f;
                json_array_foreach(tf, k, f)
                {
                    const char *fid = json_string_value(json_object_get(f, "id"));
                    if (fid != NULL && strcmp(str_or(f, "name", ""), nu->fields[i].name) == 0 &&
                        strcmp(str_or(f, "type", ""), field_type_name(nu->fields[i].type)) == 0) {
                        free(nu->fields[i].id);
                        nu->fields[i].id = strdup(fid);
                        break;
                    }
                }
            }
        }
        if (old == NULL) {
            if (o->plan) {
                buf_printf(o->plan, "  + collection %s (%s, %zu fields, %zu indexes)\n", nu->name,
                           nu->type == COLL_AUTH   ? "auth"
                           : nu->type == COLL_VIEW ? "view"
                                                   : "base",
                           nu->nfields, nu->nindexes);
                for (size_t i = 0; i < nu->nindexes; i++)
                    buf_printf(o->plan, "  + index %s\n", nu->indexes[i]);
            }
        } else if (describe_update(conn, old, nu, o, arena, err) != 0) {
            rc = -1;
            goto out;
        }
    }
    rc = schema_apply(conn, cur, old, nu, arena, err);
out:
    collection_free(nu);
    schema_free(cur);
    return rc;
}

int migration_apply(store_conn_t *conn, const json_t *doc, const migration_opts_t *o, arena_t *arena,
                    bs_error_t *err)
{
    if (migration_validate(doc, err) != 0)
        return -1;
    json_t *changes = json_object_get(doc, "changes");
    size_t n = json_array_size(changes);
    for (size_t k = 0; k < n; k++) {
        json_t *ch = json_array_get(changes, o->up ? k : n - 1 - k);
        json_t *target = json_object_get(ch, o->up ? "after" : "before");
        json_t *other = json_object_get(ch, o->up ? "before" : "after");
        if (apply_change(conn, target, other, o, arena, err) != 0)
            return -1;
    }
    return 0;
}

/* ---- files ---- */

int migration_write_file(const char *dir, const char *name, const json_t *doc)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -1;
    char path[2048], tmp[2100];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = -1;
    if (fd >= 0) {
        size_t len = strlen(text), off = 0;
        while (off < len) {
            ssize_t w = write(fd, text + off, len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        if (off == len && write(fd, "\n", 1) == 1 && fsync(fd) == 0)
            rc = 0;
        close(fd);
    }
    free(text);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -1;
    if (rc != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}
