/*
 * usercli — `basalt user export|erase`: a user's data export and erasure from the
 * command line (app/usercli.c, core/privacy.h). Main thread of the CLI only.
 */
#ifndef BASALT_APP_USERCLI_H
#define BASALT_APP_USERCLI_H

#include "app/migrate.h"

/* argv starts after "user". Returns the exit code: 0 done, 1 failed, 2 bad usage. */
int usercli_command(int argc, char **argv, migrate_open_fn open_store);

#endif
