/*
 * maintenance — the server's housekeeping that no request triggers: creating the
 * partitions of partitioned collections ahead of time, so a long-running server never
 * writes a new quarter's rows into the default partition; and reloading the
 * collections when another instance (or a command-line tool) changed them.
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
/* Another process wrote to the database (the store's on_external_change: another
 * instance's NOTIFY, SQLite's data version): the next tick checks whether the
 * collections changed and, if so, loads and publishes them, so an instance follows
 * schema changes made through another one. Any thread; cheap. */
void maintenance_external_change(void);
/* Stops it (a round in progress finishes first). Safe when it was never started. */
void maintenance_stop(void);

#endif
