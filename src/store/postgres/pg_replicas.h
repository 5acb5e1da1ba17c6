/*
 * pg_replicas — the read replicas of a PostgreSQL primary: which of them may serve a
 * read, judged by a monitor thread (ADR 0004, decision 9).
 *
 * Every 100 ms the monitor asks the primary for its current WAL position and each
 * replica for the position it has replayed. A replica is in the rotation while it
 * answers and its lag stays within max_lag_ms; it leaves when it stops answering or
 * falls behind, and comes back by itself when it catches up. A read that must see a
 * given commit (read-your-writes: the LSN of the caller's last commit) is given a
 * replica whose replayed position has reached it, or none (the primary then serves).
 *
 * Threads: pg_replicas_start/stop from the owner's thread; pg_replicas_pick and the
 * accessors from any thread (atomics, no lock); the monitor owns its connections.
 */
#ifndef BASALT_STORE_PG_REPLICAS_H
#define BASALT_STORE_PG_REPLICAS_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

typedef struct pg_replicas pg_replicas_t;

typedef struct {
    const char *primary_url; /* where the monitor reads the primary's position */
    const char *urls;        /* the replicas, comma-separated postgres:// URLs */
    int max_lag_ms;          /* a replica further behind leaves the rotation */
    int connect_timeout_ms;
} pg_replicas_config_t;

/* Parses the configuration (no connection yet); NULL with err filled on a bad URL
 * list. Returns owned; free with pg_replicas_stop. */
pg_replicas_t *pg_replicas_new(const pg_replicas_config_t *cfg, bs_error_t *err);
/* Starts the monitor thread. Returns 0 or -1. */
int pg_replicas_start(pg_replicas_t *r, bs_error_t *err);
/* Stops the monitor, closes its connections and frees r. NULL is fine. */
void pg_replicas_stop(pg_replicas_t *r);

size_t pg_replicas_count(const pg_replicas_t *r);
/* The URL of replica i (borrowed, valid until pg_replicas_stop). */
const char *pg_replicas_url(const pg_replicas_t *r, size_t i);
/* A replica in the rotation whose replayed position is at least min_lsn (0: any),
 * taken in turn; -1 when none. */
int pg_replicas_pick(pg_replicas_t *r, uint64_t min_lsn);
/* pg_replicas_pick, waiting up to wait_ms (in steps of a few ms) for a replica to
 * reach min_lsn; -1 then. Blocks: pool threads only, never a loop. */
int pg_replicas_wait(pg_replicas_t *r, uint64_t min_lsn, int wait_ms);
/* Replica i's state as last seen: in rotation, replayed LSN, lag in milliseconds
 * (-1 when unknown). */
int pg_replicas_healthy(const pg_replicas_t *r, size_t i);
uint64_t pg_replicas_replayed(const pg_replicas_t *r, size_t i);
int64_t pg_replicas_lag_ms(const pg_replicas_t *r, size_t i);

/* Parses "16/B374D848" (pg_lsn's text form) to a number; 0 on error. */
uint64_t pg_lsn_parse(const char *text);

#endif
