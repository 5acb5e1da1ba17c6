/*
 * schema — collections and their fields, and the snapshot of all of them.
 *
 * A schema_t is immutable once published: workers take a reference for the length
 * of a request (schema_acquire / schema_release) and never see it change. Schema
 * changes run as writer jobs that read the current definitions from the
 * `_collections` table inside the transaction, apply DDL, and publish a new
 * snapshot after the commit (schema_publish). Definitions round-trip through JSON in
 * PocketBase's shape.
 */
#ifndef BASALT_CORE_SCHEMA_H
#define BASALT_CORE_SCHEMA_H

#include <jansson.h>
#include <regex.h>
#include <stdint.h>

#include "base/error.h"
#include "store/store.h"

typedef enum {
    FIELD_TEXT,
    FIELD_NUMBER,
    FIELD_BOOL,
    FIELD_EMAIL,
    FIELD_URL,
    FIELD_EDITOR,
    FIELD_DATE,
    FIELD_AUTODATE,
    FIELD_SELECT,
    FIELD_RELATION,
    FIELD_JSON,
    FIELD_PASSWORD,
    FIELD_FILE,
    FIELD_GEOPOINT,
    FIELD__COUNT
} field_type_t;

typedef struct {
    char *id;
    char *name;
    field_type_t type;
    int required, hidden, presentable, system, primary_key;
    /* text/editor/password: min/max length; number: min/max value; date: as text */
    double min, max;
    int has_min, has_max;
    char *min_date, *max_date;
    int only_int;  /* number */
    char *pattern; /* text/password */
    regex_t *re;   /* compiled pattern, or NULL */
    char **values; /* select */
    size_t nvalues;
    int max_select; /* select/relation/file: > 1 means multiple values */
    int min_select;
    char *collection_id; /* relation target */
    int cascade_delete;
    int on_create, on_update; /* autodate */
    int64_t max_size;         /* json, file: bytes (file: of each file; 0 = 5 MiB) */
    /* file: allowed sniffed MIME types and thumb sizes (arrays of strings, owned,
     * NULL when empty), and whether serving needs a file token */
    json_t *mime_types, *thumbs;
    int protected_files;
    json_t *extra; /* unknown options kept for round-trip (owned) */
} field_t;

typedef enum { COLL_BASE, COLL_AUTH, COLL_VIEW } coll_type_t;

/* Range partitioning of a collection's table by a date field (PostgreSQL only; a
 * Basalt option that PocketBase clients ignore). */
typedef enum { PART_NONE = 0, PART_MONTH, PART_QUARTER, PART_YEAR } part_interval_t;

enum { RULE_LIST, RULE_VIEW, RULE_CREATE, RULE_UPDATE, RULE_DELETE, RULE_AUTH, RULE_MANAGE, RULE__COUNT };

typedef struct {
    char *id;
    char *name;
    coll_type_t type;
    int system;
    field_t *fields;
    size_t nfields;
    char **indexes; /* normalized CREATE INDEX statements */
    size_t nindexes;
    char *rules[RULE__COUNT]; /* NULL = superusers only */
    /* auth options */
    int64_t token_duration; /* seconds */
    char *token_secret;     /* never leaves the server */
    char **identity_fields;
    size_t nidentity;
    int password_auth;
    /* partitioning: the date field's id (stable across renames) and the interval */
    char *partition_field_id;
    part_interval_t partition_interval;
    /* retention (a Basalt option): records whose date field (its id) is older than
     * retention_days are purged on a schedule (api/privacy.c); 0 days: none */
    char *retention_field_id;
    int retention_days;
    char *view_query; /* views: the SELECT their records come from */
    /* full-text search: the text fields of the search index, by name */
    char **search_fields;
    size_t nsearch;
    char *created, *updated;
    /* Reminders (record_hooks.h): the normalised "reminders" option, or NULL. Owned. */
    json_t *reminders;
    /* Auth collections: the mail templates that differ from the defaults
     * (mail/mail.h, mail_templates_parse), or NULL. Owned. */
    json_t *mail_templates;
} collection_t;

typedef struct schema {
    int refs; /* atomic */
    uint64_t version;
    collection_t **cols;
    size_t ncols;
    int rules_use_headers; /* some rule reads @request.headers: requests build them */
} schema_t;

/* Field types by name ("text", ...); returns -1 if unknown. */
int field_type_parse(const char *name);
const char *field_type_name(field_type_t t);
/* "month", "quarter", "year" (NULL for PART_NONE), and back (-1 if unknown). */
const char *part_interval_name(part_interval_t i);
int part_interval_parse(const char *name);
/* True if the field holds several values (multi select / relation / file). */
int field_is_multi(const field_t *f);
/* True if the column holds JSON text (json, geoPoint, multi-valued fields). */
int field_is_json(const field_t *f);

const collection_t *schema_find(const schema_t *s, const char *id_or_name);
const collection_t *schema_find_n(const schema_t *s, const char *id_or_name, size_t n);
const field_t *collection_field(const collection_t *c, const char *name);
const field_t *collection_field_n(const collection_t *c, const char *name, size_t n);
/* The field with this id (NULL id or none: NULL). */
const field_t *collection_field_by_id(const collection_t *c, const char *id);

/* Global snapshot. acquire returns a referenced snapshot; release drops it. */
schema_t *schema_acquire(void);
void schema_release(schema_t *s);
/* Takes s (refs must be 1) and makes it the current snapshot. */
void schema_publish(schema_t *s);
/* Takes s and publishes it only if the current snapshot still has base_version (so
 * a load that raced with the writer's own publish never replaces a newer snapshot);
 * otherwise frees it. Returns 1 if published, 0 if not. Any thread. */
int schema_publish_over(schema_t *s, uint64_t base_version);
/* Read-your-writes for the schema across instances (ADR 0013). Another instance
 * committed a change of the collections (the store's on_schema_change: its NOTIFY
 * basalt_schema arrived): a generation goes up. Any thread; cheap. */
void schema_remote_changed(void);
/* The generation now, and a wait (up to timeout_ms) until it passes after; returns
 * whether it did. Blocks: the writer thread only, never a loop. */
uint64_t schema_remote_gen(void);
int schema_remote_wait(uint64_t after, int timeout_ms);
/* The generation a request must see checked before it runs (the collections loaded
 * after that notification arrived), or 0 when every notification has been. */
uint64_t schema_remote_unchecked(void);
/* The collections were loaded after notification gen arrived. Any thread. */
void schema_remote_checked(uint64_t gen);

/* Loads every collection from the `_collections` table; returns owned schema or NULL. */
schema_t *schema_load(store_conn_t *c, bs_error_t *err);
void schema_free(schema_t *s);
void collection_free(collection_t *c);

/* Creates the system tables and, on a fresh database, the `_superusers` and default
 * `users` collections. Runs on the writer connection inside a transaction. */
int schema_bootstrap(store_conn_t *c, bs_error_t *err);
/* The id of the default users collection (PocketBase's). */
#define SCHEMA_DEFAULT_USERS_ID "_pb_users_auth_"

/* Takes the store's DDL lock (dialect.h ddl_lock_sql) until the transaction ends, so
 * that instances making the same system tables or partitions take turns; nothing on
 * SQLite. */
int schema_ddl_lock(store_conn_t *c, bs_error_t *err);

/* Parses a collection definition from a request body. With `base` (an existing
 * collection), it is a PATCH: absent keys keep base's values; fields are matched by
 * id (a changed name is a rename). Validates everything it can without the
 * database, including rule syntax. Returns owned collection or NULL with err
 * (field errors under arena). */
collection_t *collection_from_json(const json_t *body, const collection_t *base, const schema_t *schema,
                                   arena_t *arena, bs_error_t *err);
/* Serializes c in PocketBase's shape; the token secret only when with_secret
 * (for the stored form, never for responses). */
void collection_to_json(const collection_t *c, buf_t *out, int with_secret);
/* Parses the stored form (from `_collections.data`); returns owned or NULL. */
collection_t *collection_from_stored(const char *text, bs_error_t *err);
/* Copies the (quoted) index name of a normalized CREATE INDEX statement. */
int collection_index_name(const char *stmt, char *out, size_t cap);
/* 1 when one of c's indexes holds every row in the order of field (its first column,
 * compared as the ORDER BY compares: no COLLATE, not partial), else 0. */
int collection_index_leads(const collection_t *c, const char *field);
void field_free(field_t *f);
/* Deep copy of src into dst (owned by dst after). Returns 0. */
int field_copy(field_t *dst, const field_t *src);
/* A new id: prefix and 10 random digits (owned by the caller). */
char *collection_random_id(const char *prefix);

/* View collections (core/view.c). The query must be one read-only SELECT (or WITH
 * ... SELECT): no statement separator, comment, write, schema change, attached
 * database, setting or function that reaches files, other databases or the server;
 * no internal table (names starting with _). Returns 0 or -1 with a field error on
 * "viewQuery". */
int view_check_query(const char *q, arena_t *arena, bs_error_t *err);
/* In the write job: runs c's query (LIMIT 1) on conn and makes c's fields from its
 * columns (a column named as a field of a collection the query reads takes that
 * field's definition; others a number, text or json field from their first value),
 * then checks c's rules against them. Returns 0 or -1 with err. */
int view_reads(const collection_t *view, const char *name);
int view_infer(store_conn_t *conn, const schema_t *s, collection_t *c, arena_t *arena, bs_error_t *err);

/* PostgreSQL, partitioned collections: makes the partitions from a few intervals before
 * today to a year or more ahead where missing (at start-up and on schema changes).
 * No-op elsewhere. Returns 0 or -1 with err filled. */
int schema_partitions_ahead(store_conn_t *conn, const collection_t *c, arena_t *arena, bs_error_t *err);
int schema_partitions_maintain(store_conn_t *conn, const schema_t *s, arena_t *arena, bs_error_t *err);
/* Applies a create (old == NULL), update or delete (new == NULL) to the database:
 * DDL for the records table, indexes, and the `_collections` row. Runs on the writer.
 * A partitioned collection on SQLite is refused (a field error on "partition"). */
int schema_apply(store_conn_t *c, const schema_t *current, const collection_t *old, const collection_t *nu,
                 arena_t *arena, bs_error_t *err);

/* Appends "name" quoted as an SQL identifier. */
void sql_ident(buf_t *b, const char *name);

#endif
