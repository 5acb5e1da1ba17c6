/*
 * pgverify — scheduled verification of PostgreSQL's backups (pgBackRest), run by Basalt
 * itself and reported under the same /metrics names as the embedded store's (ADR 0011).
 *
 * PostgreSQL's backups are pgBackRest's, not Basalt's: what Basalt can do is prove, on a
 * schedule, that the latest one restores. An operator configures a verification command
 * (--backup-verify-command; deploy/pgbackrest/verify.sh restores the latest backup into
 * a temporary folder, starts it on a private socket, checks that it answers and counts
 * the rows of every table, stops it and deletes it). Every --backup-verify-interval
 * seconds one instance of the cluster runs it:
 *
 *  - a tick of the job queue's scheduler (jobs_add_tick: every two seconds, inside a
 *    write job, on every instance) reads the shared state (the `_params` row
 *    "backupVerify") and, when no verification was attempted in the current interval,
 *    queues the job "backup.verify" with the unique key "backup.verify:<interval start>":
 *    however many instances tick, the interval gets one job;
 *  - a job runner thread (never an event loop) runs the command with /bin/sh in a
 *    process group of its own, bounded by --backup-verify-timeout (then the group gets
 *    SIGTERM, and SIGKILL 10 s later), and records the outcome in the shared state;
 *  - every instance publishes the shared state at its next tick, so that each reports
 *    the cluster's last verified time (the alert takes the max over instances) and a
 *    restart does not reset it.
 * A failure (pgbackrest missing, a wrong stanza, the repository gone, a timeout, a
 * command that does not exist) counts in basalt_backup_verify_failures_total and is
 * logged with the command's last output; it never stops the server.
 */
#ifndef BASALT_BACKUP_PGVERIFY_H
#define BASALT_BACKUP_PGVERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

typedef struct {
    const char *command; /* run with /bin/sh -c; copied */
    int interval_s;      /* >= 1 */
    int timeout_s;       /* >= 1 */
} pgverify_config_t;

/* Registers the job handler and the scheduler tick. Start-up only, before jobs_start;
 * 0 or -1 (a full table). */
int pgverify_init(const pgverify_config_t *cfg);

/* The numbers /metrics shows (all 0 and enabled 0 when not configured). Any thread. */
typedef struct {
    int enabled;
    double last_verified_s; /* last verification that passed, cluster-wide (Unix time; 0: never) */
    uint64_t failures;      /* verifications that failed, cluster-wide */
} pgverify_stats_t;
void pgverify_get_stats(pgverify_stats_t *out);

/* Runs command with /bin/sh -c in a new process group, stdin /dev/null, stdout and
 * stderr captured; waits until it exits, until deadline_ms (wall clock), or until
 * stop() returns nonzero (checked a few times a second; may be NULL). Returns 0 when
 * it exited with status 0; otherwise -1 with why (what happened and the end of its
 * output). tail receives the last line of output either way (may be ""). Blocks: a
 * job runner or another non-loop thread only. */
int pgverify_run_command(const char *command, int64_t deadline_ms, int (*stop)(void), char *why,
                         size_t why_cap, char *tail, size_t tail_cap);

#endif
