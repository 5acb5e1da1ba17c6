/*
 * dbcopy_int — what the parts of `basalt db copy` share (internal to src/app/dbcopy*.c;
 * the command's public face is dbcopy.h).
 *
 * The command (dbcopy.c) parses the flags into a dbcopy_opts_t, opens the two ends
 * (dbcopy_end.c), reads the source's collections and settings once, and hands them to
 * the steps: the schema (dbcopy_schema.c), the records (dbcopy_records.c) and the
 * verification (dbcopy_verify.c). Single-threaded: everything runs on the command's
 * thread; the only value shared with a signal handler is dbcopy_interrupted. Functions
 * that return -1 "after printing why" have printed a message naming the flag and the
 * place (never a password) through dbcopy_fail.
 */
#ifndef BASALT_APP_DBCOPY_INT_H
#define BASALT_APP_DBCOPY_INT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "core/schema.h"
#include "rules/dialect.h"
#include "store/store.h"

enum { DBCOPY_PROGRESS_OFF, DBCOPY_PROGRESS_LINES, DBCOPY_PROGRESS_BAR };

typedef struct {
    const char *from, *to;
    int force;
    int batch;
    int progress;
    int connect_timeout_ms;
} dbcopy_opts_t;

/* One end of the copy. */
typedef struct {
    const char *flag; /* "--from" / "--to" */
    const char *arg;  /* as given */
    int is_url;
    char where[1200]; /* for messages: the URL without its password, or the file */
    char path[1200];  /* SQLite: DIR/data.db */
    store_t *store;
    store_conn_t *rd; /* reader 0 */
    const dialect_t *d;
    int in_snapshot; /* snapshot_begin ran */
} dbcopy_end_t;

typedef struct {
    char *id, *name, *type, *data, *created, *updated;
    int64_t system;
    int unpartitioned; /* a partitioned collection copied as a plain one (see dbcopy_strip_partitions) */
} dbcopy_coll_row_t;

typedef struct {
    dbcopy_coll_row_t *rows;
    size_t n;
} dbcopy_coll_rows_t;

/* The settings: ids and values (text). */
typedef struct {
    char **ids, **values; /* values[i] NULL for SQL NULL */
    size_t n;
} dbcopy_params_t;

/* Set by the SIGINT/SIGTERM handler (dbcopy.c); the records step stops after the
 * current batch once it is set. */
extern volatile sig_atomic_t dbcopy_interrupted;

/* ---- messages (dbcopy.c) ---- */

/* Prints "basalt db copy: " and the message on stderr. */
void dbcopy_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints n with thousands separators into out (at least 32 bytes); returns out. */
const char *dbcopy_fmt_n(int64_t n, char *out);

/* ---- the ends (dbcopy_end.c) ---- */

/* Resolves e's place (e->flag and e->arg set); for a SQLite source, checks the data is
 * there. 0, or -1 after printing why. */
int dbcopy_end_locate(dbcopy_end_t *e, int is_source);
/* Opens e's store (a SQLite destination's folder created first). 0, or -1 after
 * printing why. */
int dbcopy_end_open(dbcopy_end_t *e, const dbcopy_opts_t *o);
/* Ends e's snapshot if one is open and closes its store; idempotent. */
void dbcopy_end_close(dbcopy_end_t *e);
/* The identity text of e's database into out; "" when the file identifies it. 0 or -1 (err). */
int dbcopy_end_identity(dbcopy_end_t *e, char *out, size_t cap, bs_error_t *err);
/* 1 when the two ends are one SQLite file. */
int dbcopy_same_files(const dbcopy_end_t *a, const dbcopy_end_t *b);
/* One integer from sql on c; -1 with err filled on failure (BS_ERR_NOT_FOUND: no row). */
int64_t dbcopy_query_int(store_conn_t *c, const char *sql, const bs_value_t *p, size_t np, bs_error_t *err);
/* 1 if table exists at e, 0 if not, -1 on error. */
int dbcopy_table_exists(dbcopy_end_t *e, const char *table, bs_error_t *err);
/* The row count of table at e, or -1 (err). */
int64_t dbcopy_count_rows(dbcopy_end_t *e, const char *table, bs_error_t *err);
/* Appends e's raw `_collections` rows, in its insertion order, to out (owned by the
 * caller: dbcopy_coll_rows_free). 0 or -1 (err). */
int dbcopy_load_coll_rows(dbcopy_end_t *e, dbcopy_coll_rows_t *out, bs_error_t *err);
void dbcopy_coll_rows_free(dbcopy_coll_rows_t *r);
/* Appends e's `_params` rows to out (owned by the caller: dbcopy_params_free). 0 or -1 (err). */
int dbcopy_load_params(dbcopy_end_t *e, dbcopy_params_t *out, bs_error_t *err);
void dbcopy_params_free(dbcopy_params_t *p);
/* The value of setting id (borrowed from p; NULL for SQL NULL); *found says whether
 * p has it. */
const char *dbcopy_param_get(const dbcopy_params_t *p, const char *id, int *found);
/* 1 when two setting values (NULL for SQL NULL) are equal. */
int dbcopy_same_value(const char *a, const char *b);

/* ---- the steps ---- */

/* dbcopy_schema.c: 1 when two definitions' stored forms agree after a round trip
 * through the parser (formatting aside). */
int dbcopy_same_definition(const collection_t *a, const collection_t *b);
/* dbcopy_schema.c: plans and applies the schema step. 0, or -1 after printing why. */
int dbcopy_copy_schema(dbcopy_end_t *src, dbcopy_end_t *dst, const dbcopy_opts_t *o, const schema_t *ss,
                       const dbcopy_coll_rows_t *rows, const dbcopy_params_t *sp);
/* dbcopy_schema.c: makes the source's partitioned collections plain when dst has no
 * partitions (changes ss and rows, both owned by the caller). */
void dbcopy_strip_partitions(const dbcopy_end_t *dst, schema_t *ss, dbcopy_coll_rows_t *rows,
                             const dbcopy_opts_t *o);
/* dbcopy_records.c: copies the records of c, adding the rows written to *inserted_out.
 * 0, 1 when interrupted, -1 after printing why. */
int dbcopy_copy_records(dbcopy_end_t *src, dbcopy_end_t *dst, const dbcopy_opts_t *o, const collection_t *c,
                        int64_t *inserted_out);
/* dbcopy_verify.c: compares counts, definitions and settings. 0 all match, -1 after
 * printing the differences. */
int dbcopy_verify(dbcopy_end_t *src, dbcopy_end_t *dst, const schema_t *ss, const dbcopy_coll_rows_t *rows,
                  const dbcopy_params_t *sp);

#endif
