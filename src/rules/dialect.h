/*
 * dialect — the SQL that differs between the backends, in one table (ADR 0004).
 *
 * rules/ and core/ write SQL only through this table: nothing outside
 * store/<backend>/ and dialect.c names a backend's functions or syntax. The store
 * says which dialect its connections speak (store_dialect); dialect_get gives the
 * table. Pure: no I/O, no state; every entry is a constant or writes to a buffer.
 *
 * Format entries are printf formats with the argument order given in their comment;
 * they are written by this module only, never from request text.
 */
#ifndef BASALT_RULES_DIALECT_H
#define BASALT_RULES_DIALECT_H

#include <stddef.h>

#include "base/buf.h"
#include "rules/rules.h"

typedef struct dialect {
    rules_dialect_t id;
    const char *name; /* "sqlite", "postgres" */

    /* Literals and operators. */
    const char *true_lit, *false_lit; /* "1"/"0" or "true"/"false" */
    const char *is_not_distinct;      /* null-safe =:  "IS" or "IS NOT DISTINCT FROM" */
    const char *is_distinct;          /* null-safe !=: "IS NOT" or "IS DISTINCT FROM" */
    const char *like;                 /* ASCII case-insensitive LIKE: "LIKE" or "ILIKE" */
    const char *not_like;
    const char *placeholder_fmt; /* parameter %zu (1-based): "?%zu" or "$%zu" */
    /* A parameter %s whose type nothing around it gives (compared with another
     * parameter, alone in a SELECT list): PostgreSQL needs the type spelled out. */
    const char *text_param_fmt, *number_param_fmt;
    const char *as_text_fmt; /* expression %s as text (numbers, booleans, JSON) */
    /* Parameter %1$s as a value of column type %2$s (one of the type_* below), where
     * nothing else types it (a VALUES row standing in for a table's row). */
    const char *column_param_fmt;
    /* Comparisons of the rules compiler; %1$s left, %2$s right. */
    const char *empty_cmp_fmt; /* %1$s (any type) compared by %2$s ("=" or "<>") with '' (NULL reads as '') */
    const char *like_fmt;      /* %1$s LIKE pattern %2$s, ASCII case-insensitive, ESCAPE '\' */
    const char *not_like_fmt;  /* COALESCE(%1$s, '') NOT LIKE %2$s */
    const char *random_order;  /* ORDER BY term for a random order */
    /* ORDER BY directions; NULL sorts first ascending, as SQLite (and PocketBase) do. */
    const char *sort_asc, *sort_desc;
    const char *rowid; /* a records table's insertion-order column */
    /* The Monday (YYYY-MM-DD) of the week holding date text %s, NULL for NULL or '' */
    const char *week_start_fmt;

    /* JSON arrays (multi-value fields are JSON arrays of text on both backends). */
    /* FROM item: the elements of JSON array %1$s, as text, in column "value" of the
     * table alias %2$s. */
    const char *json_elements_fmt;
    /* A parameter %s that holds a JSON array (text), as the JSON type. */
    const char *json_param_fmt;
    const char *json_length_fmt; /* elements in JSON array %s (NULL for NULL) */
    const char *json_agg_fmt;    /* aggregate of text values %s into a JSON array ([] when none) */
    const char *json_wrap_fmt;   /* JSON array of the single text value %s */
    const char *json_last_fmt;   /* last element of JSON array %s, as text (NULL if empty) */
    const char *json_text_fmt;   /* JSON array %s as text (for comparing with a parameter) */

    /* Column types of the records tables (schema_ddl.c). */
    const char *type_text, *type_number, *type_bool, *type_json;
    /* Extra columns every records table gets (after its fields), "" when none. */
    const char *extra_columns;
    /* Migrations of a column between one value and a JSON array of values, with
     * arguments %1$s table and %2$s column (both quoted): a single value becomes
     * [value] ('' becomes []), and an array keeps its last element. */
    const char *to_multi_fmt, *to_single_fmt;
    /* Bootstrap: the tables of collection definitions and settings. */
    const char *bootstrap_sql;
    /* Taken at the start of a transaction that makes system tables or partitions,
     * so that instances doing it at the same moment take turns; NULL where the
     * store has one writer (SQLite). Held until the transaction ends. */
    const char *ddl_lock_sql;

    /* Copying a database (app/dbcopy*.c). */
    /* The end of an INSERT ... VALUES that skips a row whose key column %s (quoted)
     * already holds its value, instead of failing; a clash on any other unique index
     * still fails. (Not SQLite's INSERT OR IGNORE: that also skips a row whose email
     * clashes with another record's, and the row counts could then match with a
     * record lost.) */
    const char *insert_ignore_fmt;
    /* Starts a read-only transaction that sees one snapshot until it ends; NULL when
     * the store's reader connection already keeps one (SQLite's reader holds its
     * snapshot while the store commits nothing). */
    const char *snapshot_begin;
    /* Streams a large result a batch at a time, inside snapshot_begin's transaction:
     * opens cursor %s over query %s; fetches the next %d rows of cursor %s; closes
     * cursor %s. NULL: the query
     * is stepped, the backend reading rows only as they are asked for. */
    const char *cursor_open_fmt, *cursor_fetch_fmt, *cursor_close_fmt;
    /* Counts the tables named ?1 in the connection's schema (0 or 1). */
    const char *table_exists_sql;
    /* One row, one count: whether table ?1 has column ?2. */
    const char *column_exists_sql;
    /* One text value naming the database the connection reaches, the same through
     * any address or pooler; NULL when the file identifies it. */
    const char *identity_sql;
    /* Partitioned collections (NULL where the backend has none). */
    const char *partition_key_fmt;     /* closes CREATE TABLE: (column, column), quoted */
    const char *partition_objects_fmt; /* id table, trigger, default partition: %1$s id, %2$s table */
    const char *partition_of_fmt;      /* one range partition: name, table, from, to */
    const char *partition_drop_fmt;    /* what partition_objects_fmt made: %1$s id */

    /* The realtime outbox (store/outbox.c, ADR 0006): the `_events` table (offset,
     * collection, action, record JSON, created ms) and its one-row counter
     * `_events_seq` (k = 1, n = the last offset given, epoch), and the realtime client
     * registry's `_realtime_requests` (realtime/sse.c); then the statement
     * that seeds the counter with epoch ?1 unless it exists. */
    const char *outbox_sql;
    const char *outbox_seed_sql;
    /* A job's events in one statement (ADR 0017): takes ?1 offsets from the counter
     * and inserts the rows of ?2, a JSON array of [collection, action, record text],
     * created ?3, numbered in the array's order; returns one row (the last offset
     * given, the rows inserted, ?3), none when the counter row is missing. NULL: the
     * counter's UPDATE and one INSERT per event (SQLite, where a statement is no
     * round trip). */
    const char *outbox_append_sql;
    /* Background jobs, mail and webhooks (src/jobs/, ADR 0009). */
    /* The tables of the job queue, the one-time passwords and the webhook deliveries. */
    const char *jobs_bootstrap_sql;
    /* Ends the subquery that picks due jobs: rows another instance has locked are
     * skipped ("" where one writer excludes every other, as on SQLite). */
    const char *skip_locked;

    /* Filter functions (rules/rules_func.c). */
    /* geoDistance: kilometres between (%1$s lon, %2$s lat) and (%3$s lon, %4$s lat),
     * numbers in degrees, by PocketBase's spherical law of cosines with the cosine
     * clamped to [-1, 1] (rounding may step past 1 for one point twice); NULL when
     * any argument is NULL. */
    const char *geo_distance_fmt;
    /* Member %2$s ("lon" or "lat", never client text) of geoPoint column %1$s, as a
     * number. */
    const char *geo_member_fmt;
    /* strftime over a date column: 1 when the backend has SQLite's own strftime
     * (strftime_fmt: %1$s the format's placeholder, %2$s the time and modifiers,
     * each a placeholder or a column; '' outside the years 1 to 9999); 0 when it
     * is built from the pieces below. */
    int strftime_native;
    const char *strftime_fmt;
    /* Schema changes across instances (ADR 0013): run inside a transaction that
     * changes `_collections`, it tells every other instance at commit that the
     * collections changed (PostgreSQL: NOTIFY basalt_schema); NULL where no other
     * instance shares the database (SQLite). */
    const char *schema_notify_sql;
} dialect_t;

/* The table for id; never NULL. */
const dialect_t *dialect_get(rules_dialect_t id);

/* Appends the placeholder for parameter n (1-based): ?n or $n. */
void dialect_placeholder(const dialect_t *d, buf_t *b, size_t n);

/* Appends the placeholder of parameter n typed as a number (number_param_fmt) or
 * as text (text_param_fmt). */
void dialect_typed_placeholder(const dialect_t *d, buf_t *b, size_t n, int number);

/* Appends the FROM item for the elements of JSON array expr as alias."value". */
void dialect_json_elements(const dialect_t *d, buf_t *b, const char *expr, const char *alias);

/* Rewrites a normalized index statement (core/collection_index.c's form, with
 * `"col" COLLATE NOCASE` terms) for d into b: PostgreSQL has no NOCASE collation, so
 * such a term becomes an expression index on lower("col"). */
/* Full-text search over columns cols of a records table (table: quoted name; id:
 * the collection's id, naming the index objects). create/drop write DDL; match a
 * condition and rank an expression (ascending: best first) on the row alias, for
 * the search parameter param (a placeholder); fts_query writes the parameter's
 * value from a user's text (its words, the last as a prefix) and returns the number
 * of words (0: nothing to search) or -1 (too many). */
void dialect_fts_create(const dialect_t *d, buf_t *b, const char *id, const char *table,
                        const char *const *cols, size_t n);
void dialect_fts_drop(const dialect_t *d, buf_t *b, const char *id);
void dialect_fts_match(const dialect_t *d, buf_t *b, const char *id, const char *alias,
                       const char *const *cols, size_t n, const char *param);
/* The rank of a matching row, best first in ascending order. On SQLite it reads the
 * join that dialect_fts_join writes (appended after the list's FROM table): one
 * full-text query for the whole list, not one per row (that made ranking quadratic
 * in the matches); on PostgreSQL the join is empty. */
void dialect_fts_rank(const dialect_t *d, buf_t *b, const char *id, const char *alias,
                      const char *const *cols, size_t n, const char *param);
void dialect_fts_join(const dialect_t *d, buf_t *b, const char *id, const char *alias, const char *param);
/* A statement counting the rows that match param when nothing else filters them,
 * from the search index alone; returns 1, or 0 where the dialect has none (the
 * count then reads the table as any other). On SQLite the index is kept row for row
 * with the table by its triggers, so its matches are the table's matching rows; the
 * index alone counts 440,000 matches in about 22 ms where the join to the table
 * took 262 ms (docs/performance.md, the 50 GB shop). */
int dialect_fts_count(const dialect_t *d, buf_t *b, const char *id, const char *param);
/* The match condition as a filter that cannot drive the plan, so that an index of
 * the list's sort can (SQLite: the rowid test behind a unary +; one full-text query
 * for the list, probed per row); returns 1, or 0 where the dialect's planner
 * chooses by itself (PostgreSQL). */
int dialect_fts_filter(const dialect_t *d, buf_t *b, const char *id, const char *alias, const char *param);
int dialect_fts_query(const dialect_t *d, buf_t *b, const char *text);

void dialect_index(const dialect_t *d, buf_t *b, const char *stmt);

/* ---- JSON field paths ("meta.a.0", PocketBase's json_extract paths) ----
 * One segment after the JSON column: an object key, or (all digits) an array index.
 * Keys reach the statement only as bound parameters, never as SQL text. */
typedef struct {
    const char *key; /* the segment as written (letters, digits, _ - @ #) */
    size_t n;
    int is_index; /* all digits: an array index (never an object key, as in SQLite) */
} dialect_json_seg_t;

/* The value at a path, in the forms the rules compiler picks from (each NULL when the
 * path is missing or holds JSON null):
 *   value  the value as the backend reads it (SQLite json_extract; PostgreSQL its text),
 *          for comparisons with '' or null and with other fields;
 *   num    the value when it is a number (booleans as 1/0), else NULL;
 *   text   the value when it is a string, else NULL;
 *   sort   an ORDER BY key that orders both backends alike: missing and null first,
 *          then numbers (and booleans) numerically, then strings, arrays, objects;
 *   group  the value as JSON (SQLite: its JSON text; PostgreSQL: jsonb), NULL when
 *          missing or null: a GROUP BY key that keeps types apart (1, "1" and true
 *          are three groups) and that the statistics answer as the JSON it is. */
typedef struct {
    const char *value, *num, *text, *sort, *group;
} dialect_json_views_t;

/* Writes the views of path segs into JSON column col (an SQL expression), adding the
 * path's parameters to c. n == 0 views col itself as a JSON value (the statistics
 * order a group column this way: every view is then a function of col alone, which
 * PostgreSQL asks of an ORDER BY over grouped rows). Returns 0 or -1 (out of memory). */
int dialect_json_path(const dialect_t *d, rules_compiler_t *c, arena_t *a, const char *col,
                      const dialect_json_seg_t *segs, size_t n, dialect_json_views_t *out);

/* strftime where the backend lacks it (strftime_native == 0): appends a timestamp
 * expression: date text column col as a timestamp (NULL for ''); start of "day",
 * "month" or "year" of timestamp t; t plus n units ("days", "hours", "minutes",
 * "seconds"); t, or NULL outside years 1..9999 (SQLite's range). Then the text of
 * one format specifier (Y m d H M S f j w s) of timestamp t. Each returns -1 for an
 * unknown unit or specifier. */
void dialect_date_cast(const dialect_t *d, buf_t *b, const char *col);
int dialect_date_start(const dialect_t *d, buf_t *b, const char *t, const char *unit);
int dialect_date_add(const dialect_t *d, buf_t *b, const char *t, long long n, const char *unit);
void dialect_date_guard(const dialect_t *d, buf_t *b, const char *t);
int dialect_date_piece(const dialect_t *d, buf_t *b, const char *t, char spec);

#endif
