/*
 * privacy — what a user's data is, for export and erasure (GDPR articles 15, 17 and
 * 20; CCPA), and retention purging (docs/privacy.md).
 *
 * A user's data is their auth record and every record that points at it: the records
 * of any collection with a relation field whose target is the user's collection and
 * whose value holds the user's id (single or multiple). Records that point at those
 * records are not included: they are someone else's (a comment by another user on the
 * user's post), and the ones that are the user's own point at the user themselves.
 *
 * Erasure deletes the user's record and every record they own, through the record
 * writer (so cascades, cleared references, realtime events and cache invalidation are
 * the same as for any delete): owned means pointing at the user through a
 * single-valued relation (author, owner); a multi-valued one (members of a group) only
 * loses the user's id, as any delete of a referenced record does.
 *
 * Threads: all of it runs inside store jobs: export in a read job, erasure and purging
 * in writer jobs (or store_write_sync from the CLI).
 */
#ifndef BASALT_CORE_PRIVACY_H
#define BASALT_CORE_PRIVACY_H

#include "core/record.h"

/* Most records one export may hold; more is refused (413-like 400) rather than
 * building an unbounded archive in memory. */
#define PRIVACY_MAX_EXPORT_RECORDS 100000
/* Most bytes of JSON one export may hold (the archive is built in memory, and on
 * SQLite on the worker's reader: larger exports go through the CLI). */
#define PRIVACY_MAX_EXPORT_BYTES (32u << 20)

typedef struct {
    size_t records;     /* related records written (the user's own record not counted) */
    size_t collections; /* collections that had some */
} privacy_counts_t;

/* Writes a zip archive of user id of collection uc into out (a heap or arena buf):
 * user.json (the record without password hash and tokenKey), records/<collection>.json
 * (an array per collection with related records) and manifest.json. bounded: refuse
 * more than PRIVACY_MAX_EXPORT_RECORDS / _BYTES (the API; the CLI is not). Returns 0, or -1
 * with err (404 when the user does not exist). */
int privacy_export_zip(store_conn_t *conn, const schema_t *s, const collection_t *uc, const char *id,
                       int bounded, buf_t *out, privacy_counts_t *counts, arena_t *a, bs_error_t *err);

/* Erases user id of collection uc and what they own (see above), through record_delete
 * with w's changes and touched collections (w->schema must be s; the rest is set
 * here). *deleted counts the records deleted by name (cascades not included). Returns
 * 0 or -1 with err (404 when the user does not exist). */
int privacy_erase(store_conn_t *conn, record_write_t *w, const collection_t *uc, const char *id, int *deleted,
                  arena_t *a, bs_error_t *err);

/* Deletes up to limit records of c whose retention field is older than now_ms minus
 * the collection's retention days, oldest first, through record_delete with w (as
 * above). *deleted is how many. Returns 0 or -1 with err. */
int privacy_purge(store_conn_t *conn, record_write_t *w, const collection_t *c, int64_t now_ms, int limit,
                  int *deleted, arena_t *a, bs_error_t *err);

#endif
