/*
 * migrate — `basalt migrate up [N] | down [N] | status | create NAME` over the
 * migration files of a data folder (core/migration.h, ADR 0012, docs/migrations.md).
 *
 * Runs on the main thread of the CLI, with the store's writer thread not running:
 * every application is one store_write_sync transaction, so a failing migration
 * leaves the database as it was, and --dry-run is the same transaction rolled back.
 */
#ifndef BASALT_APP_MIGRATE_H
#define BASALT_APP_MIGRATE_H

#include "app/config.h"
#include "store/store.h"

/* Opens the store of cfg (bootstrapped; the caller closes it), or NULL after a message. */
typedef store_t *(*migrate_open_fn)(const config_t *cfg);

/* argv starts after "migrate". Returns the exit code: 0 done, 1 failed or refused,
 * 2 bad usage. */
int migrate_command(int argc, char **argv, migrate_open_fn open_store);

#endif
