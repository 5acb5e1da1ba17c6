/*
 * maintenance — the server's periodic housekeeping that no request triggers: today,
 * creating the partitions of partitioned collections ahead of time, so a long-running
 * server never writes a new quarter's rows into the default partition.
 *
 * One thread of its own; each round is one write job through the store's writer
 * (waiting for its reply blocks only this thread). A failed round is logged and retried
 * at the next one.
 */
#ifndef BASALT_APP_MAINTENANCE_H
#define BASALT_APP_MAINTENANCE_H

#include "store/store.h"

/* Starts the thread: a round every interval_s seconds. Returns 0 or -1. */
int maintenance_start(store_t *s, int interval_s);
/* Stops it (a round in progress finishes first). Safe when it was never started. */
void maintenance_stop(void);

#endif
