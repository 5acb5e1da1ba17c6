/*
 * archive — PocketBase-style backup archives: a zip of the data folder's database
 * (a consistent online copy, never the live file) and its storage/ folder if there is
 * one, made and opened with libarchive. Used by the backups API (api/backups*.c).
 *
 * Every function blocks on disk I/O and runs on a background thread, never on an
 * event loop. Archive entries are validated before anything is written: only
 * "data.db" and plain files under "storage/", no "..", no absolute names, no links.
 */
#ifndef BASALT_BACKUP_ARCHIVE_H
#define BASALT_BACKUP_ARCHIVE_H

#include <stddef.h>

/* Writes zip_path (atomically: a temporary file renamed) with a copy of db_path
 * taken through SQLite's backup API in steps, and storage_dir's files when it exists.
 * 0, or -1 with err. */
int backup_zip_create(const char *db_path, const char *storage_dir, const char *zip_path, char *err,
                      size_t errlen);
/* Checks that zip_path is a zip holding a data.db and only acceptable entries. */
int backup_zip_check(const char *zip_path, char *err, size_t errlen);
/* Extracts zip_path into out_dir (which must exist and be empty) and checks the
 * database (integrity_check). 0, or -1 with err. */
int backup_zip_extract(const char *zip_path, const char *out_dir, char *err, size_t errlen);

/* At start-up, before the store opens: if dir/.pending-restore holds a restored
 * data.db (left by a restore through the API), moves the current database and
 * storage aside into dir/.pre-restore-<time>/ and the restored ones into place.
 * Returns 1 applied, 0 nothing pending, -1 error (err). */
int backup_apply_pending_restore(const char *dir, char *err, size_t errlen);

#endif
