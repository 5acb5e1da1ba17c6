/*
 * migration — schema changes as declarative files (ADR 0012).
 *
 * A migration is one JSON document:
 *
 *   {"basalt_migration": 1, "name": "1764590000123_created_posts.json",
 *    "action": "created", "changes": [{"before": <collection>|null,
 *                                      "after":  <collection>|null}, ...]}
 *
 * Each change holds two snapshots of one collection in PocketBase's shape (without the
 * token secret): "before" is how it was, "after" how it became; null means absent.
 * Applying "up" makes every collection of the list look like its "after" (in list
 * order); "down" makes it look like its "before" (in reverse order). Because a step
 * states a target rather than an edit, the same file can be applied and reversed on
 * either backend, and a step that already holds changes nothing.
 *
 * The server writes one such file for every schema change made through the API
 * (migration_set_dir, from the collections API's committed callback, on the writer
 * thread), and records it as applied in the `_migrations` table inside the change's
 * own transaction. `basalt migrate` (app/migrate.c) applies and reverts them.
 *
 * Threads: migration_apply and the table helpers run inside a writer job (or
 * store_write_sync); migration_write_file does file I/O and must never run on an
 * event loop (the writer thread or the CLI).
 */
#ifndef BASALT_CORE_MIGRATION_H
#define BASALT_CORE_MIGRATION_H

#include <jansson.h>

#include "base/buf.h"
#include "core/schema.h"

/* One change of one collection: {"before": old or null, "after": nu or null}. Returns
 * owned JSON (NULL when out of memory). */
json_t *migration_change(const collection_t *old, const collection_t *nu);

/* A new migration document named name (e.g. "1764590000123_created_posts.json");
 * takes changes (a JSON array). Returns owned JSON. */
json_t *migration_doc(const char *name, const char *action, json_t *changes);

/* A fresh file name "<unix-ms>_<action>_<what>.json" (what: letters, digits and _
 * kept, anything else becomes _), strictly later than any this process made before.
 * Returns owned (malloc) text. */
char *migration_new_name(const char *action, const char *what);

/* Options of an application. */
typedef struct {
    int up;                /* 1: towards "after"; 0: towards "before" */
    int allow_destructive; /* drop a field or collection holding records */
    buf_t *plan;           /* when not NULL: a line per change is appended ("+ field ...") */
} migration_opts_t;

/* Applies doc in the given direction on conn (inside the caller's transaction).
 * A destructive step without allow_destructive fails with BS_ERR_BAD_REQUEST and a
 * message naming what would be lost. Returns 0 or -1 with err filled. */
int migration_apply(store_conn_t *conn, const json_t *doc, const migration_opts_t *o, arena_t *arena,
                    bs_error_t *err);

/* Checks the shape of a migration document; returns 0 or -1 with err filled. */
int migration_validate(const json_t *doc, bs_error_t *err);

/* The `_migrations` table (name text primary key, applied ms). */
int migration_bootstrap(store_conn_t *conn, bs_error_t *err);
/* Marks name applied (applied != 0) or not applied. */
int migration_mark(store_conn_t *conn, const char *name, int applied, bs_error_t *err);

/* The folder the server writes migration files to ("" or NULL: none). Borrowed;
 * set once at start-up before the writer starts. */
void migration_set_dir(const char *dir);
const char *migration_dir(void);
/* Writes doc as <dir>/<name> (a temporary file, fsync, rename, fsync of the folder,
 * so a crash leaves the whole file or none). Creates dir if missing. Returns 0 or -1
 * with errno. */
int migration_write_file(const char *dir, const char *name, const json_t *doc);

#endif
