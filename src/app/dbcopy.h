/*
 * dbcopy — `basalt db copy`: moves a deployment between an embedded data directory
 * (SQLite) and a PostgreSQL database, either way (issue 13, "Moving house").
 *
 * It copies every collection definition (system ones included, with their indexes
 * and token secrets), every record as its raw column values (password hashes, token
 * keys, JSON, dates), and the `_params` settings; shows progress; can be run again
 * after an interruption and finishes the job without duplicates; and checks the
 * row counts of every table at the end. README.md ("Moving to PostgreSQL") and
 * `basalt db copy --help` describe it for users.
 */
#ifndef BASALT_APP_DBCOPY_H
#define BASALT_APP_DBCOPY_H

#include <stdio.h>

/* `basalt db ARGS...` (argv starts after "db"). Returns the process exit code:
 * 0 copied and verified, 1 failed or a count differs, 2 bad usage, 130 interrupted. */
int dbcopy_command(int argc, char **argv);

/* The help text of `basalt db copy`. */
void dbcopy_print_help(FILE *out);

#endif
