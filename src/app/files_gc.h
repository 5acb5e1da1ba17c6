/*
 * files_gc — `basalt files cleanup`: removes stored files that no record references.
 *
 * Uploads are stored before their record is written, and removed after a failed
 * write; a process killed between the two leaves files that nothing references
 * (never a reference to a missing file). This sweep lists the storage, and deletes
 * every object older than the grace period whose collection, record or field value
 * no longer names it (thumbnails follow their original). The grace period keeps it
 * away from uploads whose write is still in flight on a running instance, so it is
 * safe to run beside live servers (from cron). Blocking: a CLI command.
 */
#ifndef BASALT_APP_FILES_GC_H
#define BASALT_APP_FILES_GC_H

#include <stdint.h>

#include "core/schema.h"
#include "files/storage.h"

typedef struct {
    int64_t scanned, removed, kept, failed;
} files_gc_stats_t;

/* Sweeps st against the records read through conn (schema s). Objects modified less
 * than grace_ms ago are kept; with dry_run nothing is deleted (the would-be removals
 * are printed). Returns 0, or -1 with err when the listing or a read fails. */
int files_gc(storage_t *st, store_conn_t *conn, const schema_t *s, int64_t grace_ms, int dry_run,
             files_gc_stats_t *out, bs_error_t *err);

#endif
