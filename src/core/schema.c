/*
 * Collections: the field types, lookups, the published snapshot, loading and the
 * bootstrap of the system tables. Definitions are parsed in collection.c (with its
 * collection_*.c parts), their JSON form is in collection_json.c, the DDL in
 * schema_ddl.c.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/util.h"
#include "core/schema.h"
#include "rules/dialect.h"

static const char *type_names[FIELD__COUNT] = {"text",   "number",   "bool",     "email",   "url",
                                               "editor", "date",     "autodate", "select",  "relation",
                                               "json",   "password", "file",     "geoPoint"};

int field_type_parse(const char *name)
{
    for (int i = 0; i < FIELD__COUNT; i++)
        if (strcmp(type_names[i], name) == 0)
            return i;
    return -1;
}

const char *field_type_name(field_type_t t)
{
    return t < FIELD__COUNT ? type_names[t] : "unknown";
}

int field_is_json(const field_t *f)
{
    return f->type == FIELD_JSON || f->type == FIELD_GEOPOINT || field_is_multi(f);
}

int field_is_multi(const field_t *f)
{
    return (f->type == FIELD_SELECT || f->type == FIELD_RELATION || f->type == FIELD_FILE) &&
           f->max_select > 1;
}

const collection_t *schema_find_n(const schema_t *s, const char *id_or_name, size_t n)
{
    for (size_t i = 0; i < s->ncols; i++) {
        const collection_t *c = s->cols[i];
        if ((strlen(c->id) == n && memcmp(c->id, id_or_name, n) == 0) ||
            (strlen(c->name) == n && strncasecmp(c->name, id_or_name, n) == 0))
            return c;
    }
    return NULL;
}

const collection_t *schema_find(const schema_t *s, const char *id_or_name)
{
    return schema_find_n(s, id_or_name, strlen(id_or_name));
}

const field_t *collection_field_n(const collection_t *c, const char *name, size_t n)
{
    for (size_t i = 0; i < c->nfields; i++)
        if (strlen(c->fields[i].name) == n && memcmp(c->fields[i].name, name, n) == 0)
            return &c->fields[i];
    return NULL;
}

const field_t *collection_field(const collection_t *c, const char *name)
{
    return collection_field_n(c, name, strlen(name));
}

/* ---- the published snapshot ---- */

static pthread_mutex_t snap_lock = PTHREAD_MUTEX_INITIALIZER;
static schema_t *current;

schema_t *schema_acquire(void)
{
    pthread_mutex_lock(&snap_lock);
    schema_t *s = current;
    if (s != NULL)
        __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&snap_lock);
    return s;
}

void schema_release(schema_t *s)
{
    if (s != NULL && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
        schema_free(s);
}

void schema_publish(schema_t *s)
{
    pthread_mutex_lock(&snap_lock);
    schema_t *old = current;
    if (s != NULL)
        s->version = old ? old->version + 1 : 1;
    current = s;
    pthread_mutex_unlock(&snap_lock);
    store_definitions_changed(); /* before any job that uses the new snapshot is queued */
    schema_release(old);
}

int schema_publish_over(schema_t *s, uint64_t base_version)
{
    pthread_mutex_lock(&snap_lock);
    schema_t *old = current;
    if ((old ? old->version : 0) != base_version) {
        pthread_mutex_unlock(&snap_lock);
        schema_free(s);
        return 0;
    }
    s->version = base_version + 1;
    current = s;
    pthread_mutex_unlock(&snap_lock);
    store_definitions_changed();
    schema_release(old);
    return 1;
}

/* Notifications of other instances' schema changes, received and checked. */
static uint64_t remote_gen, remote_checked;

static pthread_mutex_t remote_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t remote_cond = PTHREAD_COND_INITIALIZER;

void schema_remote_changed(void)
{
    pthread_mutex_lock(&remote_lock);
    __atomic_add_fetch(&remote_gen, 1, __ATOMIC_ACQ_REL);
    pthread_cond_broadcast(&remote_cond);
    pthread_mutex_unlock(&remote_lock);
}

uint64_t schema_remote_gen(void)
{
    return __atomic_load_n(&remote_gen, __ATOMIC_ACQUIRE);
}

int schema_remote_wait(uint64_t after, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long ns = until.tv_nsec + (long)timeout_ms * 1000000L;
    until.tv_sec += ns / 1000000000L;
    until.tv_nsec = ns % 1000000000L;
    pthread_mutex_lock(&remote_lock);
    while (__atomic_load_n(&remote_gen, __ATOMIC_ACQUIRE) <= after &&
           pthread_cond_timedwait(&remote_cond, &remote_lock, &until) == 0) {
    }
    int heard = __atomic_load_n(&remote_gen, __ATOMIC_ACQUIRE) > after;
    pthread_mutex_unlock(&remote_lock);
    return heard;
}

uint64_t schema_remote_unchecked(void)
{
    uint64_t g = __atomic_load_n(&remote_gen, __ATOMIC_ACQUIRE);
    return g != __atomic_load_n(&remote_checked, __ATOMIC_ACQUIRE) ? g : 0;
}

void schema_remote_checked(uint64_t gen)
{
    uint64_t cur = __atomic_load_n(&remote_checked, __ATOMIC_ACQUIRE);
    while (cur < gen &&
           !__atomic_compare_exchange_n(&remote_checked, &cur, gen, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
}

/* ---- freeing ---- */

void field_free(field_t *f)
{
    free(f->id);
    free(f->name);
    free(f->pattern);
    free(f->min_date);
    free(f->max_date);
    if (f->re) {
        regfree(f->re);
        free(f->re);
    }
    for (size_t i = 0; i < f->nvalues; i++)
        free(f->values[i]);
    free(f->values);
    free(f->collection_id);
    json_decref(f->extra);
    json_decref(f->mime_types);
    json_decref(f->thumbs);
}

void collection_free(collection_t *c)
{
    if (c == NULL)
        return;
    free(c->id);
    free(c->name);
    json_decref(c->reminders);
    json_decref(c->mail_templates);
    for (size_t i = 0; i < c->nfields; i++)
        field_free(&c->fields[i]);
    free(c->fields);
    for (size_t i = 0; i < c->nindexes; i++)
        free(c->indexes[i]);
    free(c->indexes);
    for (int i = 0; i < RULE__COUNT; i++)
        free(c->rules[i]);
    free(c->token_secret);
    for (size_t i = 0; i < c->nidentity; i++)
        free(c->identity_fields[i]);
    free(c->identity_fields);
    free(c->partition_field_id);
    free(c->retention_field_id);
    free(c->view_query);
    for (size_t i = 0; i < c->nsearch; i++)
        free(c->search_fields[i]);
    free(c->search_fields);
    free(c->created);
    free(c->updated);
    free(c);
}

const char *part_interval_name(part_interval_t i)
{
    return i == PART_MONTH ? "month" : i == PART_QUARTER ? "quarter" : i == PART_YEAR ? "year" : NULL;
}

int part_interval_parse(const char *name)
{
    for (int i = PART_MONTH; i <= PART_YEAR; i++)
        if (strcmp(name, part_interval_name((part_interval_t)i)) == 0)
            return i;
    return -1;
}

void schema_free(schema_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->ncols; i++)
        collection_free(s->cols[i]);
    free(s->cols);
    free(s);
}

/* ---- SQL helpers ---- */

void sql_ident(buf_t *b, const char *name)
{
    buf_putc(b, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"')
            buf_putc(b, '"');
        buf_putc(b, *p);
    }
    buf_putc(b, '"');
}

schema_t *schema_load(store_conn_t *conn, bs_error_t *err)
{
    schema_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    s->refs = 1;
    char sql[64];
    snprintf(sql, sizeof(sql), "SELECT data FROM _collections ORDER BY %s",
             dialect_get(store_conn_dialect(conn))->rowid);
    store_stmt_t *st = store_query(conn, sql, NULL, 0, err);
    if (st == NULL) {
        free(s);
        return NULL;
    }
    size_t cap = 0;
    int rc;
    while ((rc = store_step(st, err)) == 1) {
        bs_value_t v = store_col(st, 0);
        collection_t *c = collection_from_stored(v.s ? v.s : "", err);
        if (c == NULL) {
            rc = -1;
            break;
        }
        if (s->ncols == cap) {
            cap = cap ? cap * 2 : 16;
            collection_t **n = realloc(s->cols, cap * sizeof(*n));
            if (n == NULL) {
                collection_free(c);
                bs_error_set(err, BS_ERR_NOMEM, NULL);
                rc = -1;
                break;
            }
            s->cols = n;
        }
        s->cols[s->ncols++] = c;
        for (int k = 0; k < RULE__COUNT; k++)
            if (c->rules[k] && strstr(c->rules[k], "@request.headers"))
                s->rules_use_headers = 1;
    }
    store_done(st);
    if (rc < 0) {
        schema_free(s);
        return NULL;
    }
    return s;
}

/* The superusers' collection: auth, no fields of its own, day-long tokens. */
static json_t *superusers_def(void)
{
    return json_pack("{s:s, s:s, s:s, s:[]}", "id", "pbc_3142635823", "name", "_superusers", "type", "auth",
                     "fields");
}

/* PocketBase's default users collection, with its id, fields and owner rules, so an
 * app written against a fresh PocketBase finds it here too. */
static json_t *users_def(void)
{
    const char *owner = "id = @request.auth.id";
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:[{s:s, s:s, s:i}, {s:s, s:s, s:i, s:[s,s,s,s,s]}]}", "id",
        SCHEMA_DEFAULT_USERS_ID, "name", "users", "type", "auth", "listRule", owner, "viewRule", owner,
        "createRule", "", "updateRule", owner, "deleteRule", owner, "fields", "name", "name", "type", "text",
        "max", 255, "name", "avatar", "type", "file", "maxSelect", 1, "mimeTypes", "image/jpeg", "image/png",
        "image/svg+xml", "image/gif", "image/webp");
}

/* Creates one built-in collection from def (taken) through the same parser as any
 * collection; system marks it as PocketBase's system collections are marked. */
static int bootstrap_collection(store_conn_t *conn, const schema_t *s, json_t *def, int system,
                                bs_error_t *err)
{
    if (def == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, "out of memory");
        return -1;
    }
    arena_t a;
    arena_init(&a, 4096);
    collection_t *c = collection_from_json(def, NULL, s, &a, err);
    json_decref(def);
    int rc = -1;
    if (c != NULL) {
        if (system) {
            c->system = 1;
            c->token_duration = 86400;
        }
        rc = schema_apply(conn, s, NULL, c, &a, err);
        collection_free(c);
    }
    arena_free(&a);
    return rc;
}

int schema_ddl_lock(store_conn_t *conn, bs_error_t *err)
{
    const char *sql = dialect_get(store_conn_dialect(conn))->ddl_lock_sql;
    return sql != NULL ? store_exec_script(conn, sql, err) : 0;
}

int schema_bootstrap(store_conn_t *conn, bs_error_t *err)
{
    /* Instances starting together on a fresh PostgreSQL database take turns. */
    if (schema_ddl_lock(conn, err) != 0)
        return -1;
    if (store_exec_script(conn, dialect_get(store_conn_dialect(conn))->bootstrap_sql, err) != 0)
        return -1;
    schema_t *s = schema_load(conn, err);
    if (s == NULL)
        return -1;
    int rc = 0;
    /* No _superusers: a fresh database. It gets PocketBase's two first collections;
     * a users collection deleted later is not made again. */
    if (schema_find(s, "_superusers") == NULL) {
        rc = bootstrap_collection(conn, s, superusers_def(), 1, err);
        if (rc == 0) {
            schema_free(s);
            s = schema_load(conn, err);
            if (s == NULL)
                return -1;
            if (schema_find(s, "users") == NULL)
                rc = bootstrap_collection(conn, s, users_def(), 0, err);
        }
    }
    if (rc == 0) {
        /* Each start extends the partitions of partitioned collections ahead. */
        arena_t a;
        arena_init(&a, 4096);
        rc = schema_partitions_maintain(conn, s, &a, err);
        arena_free(&a);
    }
    schema_free(s);
    return rc;
}
