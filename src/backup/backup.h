/*
 * backup — continuous backup of the embedded SQLite store (ADR 0011).
 *
 * A generation is a snapshot of the database plus the WAL segments that follow it,
 * an unbroken chain: every segment starts where the one before ended (same WAL
 * header salts, the next frame, the running checksum continuing), or starts a new
 * log (the WAL restarted after a checkpoint Basalt itself did once everything had
 * been shipped). Whenever continuity cannot be proven (the process starts, the WAL
 * was reset by someone else, a checkpoint ran that Basalt did not make after
 * shipping) a new generation begins with a new snapshot.
 *
 * Threads:
 *  - the writer thread (store) calls the three hooks backup_store_hooks installs: every
 *    commit is reported (with the WAL's frame count, and the time), and at its ticks
 *    the writer asks whether to checkpoint and reports the result. Registering the WAL
 *    hook turns SQLite's automatic checkpoints off: only these checkpoints happen.
 *  - the shipper thread (backup_start) copies committed frames to the target within a
 *    second of commit (woken by each commit), takes snapshots in steps between rounds
 *    from its own read connection, and starts generations.
 *  - the schedule thread asks for a new generation every interval, runs retention and
 *    verification (a restore into a temporary folder, checked).
 * None of them is an event loop; the entry points backup_snapshot_now,
 * backup_retention_run and backup_verify_run are callable from any thread (a job
 * queue can take them over) and block on disk I/O.
 *
 * Layout in the target:
 *   key-check                                 proves which key the target was written with
 *   generations/<id>/generation.json          written last: the generation is complete
 *   generations/<id>/snapshot.db              the database at the generation's start
 *   generations/<id>/wal/<index>-<frame>.seg  segments (wal.h), whole transactions
 * <id> is 16 hex digits of the start time in ms and 8 random ones: names sort by time.
 */
#ifndef BASALT_BACKUP_BACKUP_H
#define BASALT_BACKUP_BACKUP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backup/backup_obj.h"
#include "backup/backup_target.h"
#include "store/store.h"

typedef struct backup backup_t;

typedef struct {
    const char *target_dir; /* --backup-dir */
    const char *data_dir;   /* temporary files (snapshots in progress, verification) */
    const char *db_path;    /* the live database */
    const char *key_file;   /* "" : no encryption */
    int interval_s;         /* a new generation (snapshot) this often */
    int verify_interval_s;  /* a verification restore this often (and after each snapshot) */
    int64_t retention_s;    /* generations that ended longer ago are deleted */
} backup_config_t;

/* Opens the target, loads the key and checks it against the target. NULL with err. */
backup_t *backup_new(const backup_config_t *cfg, char *err, size_t errlen);
/* Installs the writer-thread hooks into sc (before store_open). */
void backup_store_hooks(backup_t *b, store_config_t *sc);
/* Starts the shipper and the schedule (after the store is open). 0 or -1. */
int backup_start(backup_t *b, char *err, size_t errlen);
/* Ships what is left (call after the writer stopped, before the store closes), stops
 * the threads. Idempotent. */
void backup_stop(backup_t *b);
void backup_free(backup_t *b);

/* Asks the shipper for a new generation; returns at once. */
void backup_snapshot_now(backup_t *b);
/* Deletes generations past retention unless a restore holds the target's lock.
 * Returns the number deleted, or -1 (err), or -2 when deferred by a restore. */
int backup_retention_run(backup_t *b, char *err, size_t errlen);
/* Restores the latest state into a temporary folder and checks it. 0 or -1 (err). */
int backup_verify_run(backup_t *b, char *err, size_t errlen);

/* The numbers /metrics shows; all 0 without backups. */
typedef struct {
    int enabled;
    double last_success_s;  /* last segment or snapshot written (Unix time) */
    double last_verified_s; /* last verification that passed */
    uint64_t verify_failures;
    double lag_s;        /* age of the oldest commit not yet shipped (0: caught up) */
    uint64_t generation; /* generations started by this process (the current one's number) */
} backup_stats_t;
/* The process's backup, for /metrics (NULL: none). Set by backup_start. */
void backup_get_stats(backup_stats_t *out);

/* --- restore (restore.c) --- */
typedef struct {
    const char *from;     /* target folder */
    const char *to;       /* "latest" or an RFC 3339 time */
    const char *dir;      /* the new data folder: must be missing or empty */
    const char *key_file; /* "" : none */
    int quiet;            /* no progress, no report (verification) */
    FILE *out;            /* progress and report; NULL: stderr */
} backup_restore_opts_t;

/* Rebuilds the database as it was at opts->to into opts->dir/data.db and checks it
 * (integrity_check, row counts per collection). 0, or -1 with a message in err. */
int backup_restore(const backup_restore_opts_t *opts, char *err, size_t errlen);
/* `basalt restore ...`: parses argv, runs backup_restore, prints. Exit code. */
int backup_restore_command(int argc, char **argv);

/* Parses "latest" (-> INT64_MAX) or an RFC 3339 time into Unix ms. 0 or -1. */
int backup_parse_time(const char *s, int64_t *ms);

#endif
