/*
 * `basalt db copy`: see dbcopy.h. This file is the command: its flags, its help,
 * and the order of the steps below; the steps live in
 *   dbcopy_end.c      the two ends: opening them, and reading collections and settings
 *   dbcopy_schema.c   step 3, the schema and the settings
 *   dbcopy_records.c  step 4, the records (scan, batches, resume) and the progress bar
 *   dbcopy_verify.c   step 5, the verification
 * and dbcopy_int.h holds what they share.
 *
 * Order of work, each step safe to repeat:
 *   1. Both ends are checked and opened: a source that holds no Basalt data, a
 *      destination that is the source, or a server that cannot be reached stops here
 *      with a message naming the flag and the place (never a password).
 *   2. The source is read in one snapshot (SQLite: the reader's read transaction,
 *      kept since this process commits nothing through it; PostgreSQL: a REPEATABLE
 *      READ transaction), so a `basalt serve` may keep writing to it: the copy is
 *      the state at its start, and the counts it verifies are that state's.
 *   3. Schema: the destination gets the system tables, then every source collection
 *      it lacks, through schema_apply (its table, indexes and `_collections` row),
 *      the row then made byte-identical to the source's (definition, token secret,
 *      dates). A destination collection whose definition differs stops the copy
 *      before anything is written, unless it is a system collection without records
 *      (what `basalt serve` creates on a new database) or --force is given: then it
 *      is dropped with its records and created as the source has it. `_params` rows
 *      are added; one that differs is a conflict too (--force overwrites it).
 *   4. Records: per collection, in the source's insertion order (rowid / _rowid, so
 *      that `@rowid` and unsorted lists keep their order), in batches of --batch rows,
 *      each batch one destination transaction of multi-row INSERTs that skip ids
 *      already there. A re-run resumes after the last row the destination holds when
 *      everything before it is there (else it reads the collection again from the
 *      start, skipping what exists); SIGINT stops after the current batch.
 *   5. Verification: every table's row count, source (same snapshot) against
 *      destination, and every definition and setting compared; a report and exit 1
 *      on any difference.
 *
 * Records already at the destination are never changed: a copy is a move, not a
 * sync. Single-threaded; the stores are used through store.h only (writes as
 * store_write_sync jobs, one transaction each).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/dbcopy.h"
#include "app/dbcopy_int.h"
#include "base/log.h"

#define DEFAULT_BATCH 1000
#define MAX_BATCH 100000

volatile sig_atomic_t dbcopy_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    dbcopy_interrupted = 1;
}

/* ---- messages ---- */

void dbcopy_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("basalt db copy: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Prints n with thousands separators into out (at least 32 bytes). */
const char *dbcopy_fmt_n(int64_t n, char *out)
{
    char digits[32];
    int len = snprintf(digits, sizeof(digits), "%lld", (long long)(n < 0 ? -n : n));
    char *w = out;
    if (n < 0)
        *w++ = '-';
    for (int i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            *w++ = ',';
        *w++ = digits[i];
    }
    *w = '\0';
    return out;
}

/* ---- the command ---- */

void dbcopy_print_help(FILE *out)
{
    fprintf(out,
            "Usage: basalt db copy --from=DIR|URL --to=URL|DIR [--force] [--batch=N] [--progress=MODE]\n"
            "\n"
            "Copies a Basalt deployment between an embedded data directory (SQLite) and a PostgreSQL\n"
            "database, either way (or between two of a kind): every collection definition (system ones\n"
            "too, with their indexes and token secrets), every record as stored (password hashes and\n"
            "token keys included, so users keep their passwords and issued tokens stay valid), and\n"
            "the settings (_params). Then it compares the row counts of every table and exits 1 with\n"
            "a report if any differs.\n"
            "\n"
            "  --from=DIR|URL    the source: a data directory (basalt serve's --dir, holding data.db)\n"
            "                    or a postgres:// URL. A server may keep serving it: the copy reads\n"
            "                    one snapshot (what was committed when it started).\n"
            "  --to=URL|DIR      the destination: a postgres:// URL (the database must exist) or a\n"
            "                    data directory (created if missing). Must not be the source.\n"
            "                    Do not serve it while copying; start basalt on it afterwards.\n"
            "  --force           replace destination collections whose definition differs from the\n"
            "                    source's (they are dropped with their records, then copied), and\n"
            "                    overwrite differing settings. Without it such a difference stops the\n"
            "                    copy before anything is written. Records already at the destination\n"
            "                    are never changed.\n"
            "  --batch=N         rows per destination transaction (default %d, 1..%d).\n"
            "  --progress=MODE   auto (a bar when stderr is a terminal, else lines), bar, lines or off.\n"
            "  --connect-timeout-ms=N  PostgreSQL connection time-out (default 5000).\n"
            "\n"
            "Interrupted (Ctrl-C stops after the current batch; a kill or a crash loses at most the\n"
            "batch in flight), run the same command again: it resumes and never duplicates a record.\n"
            "Exit status: 0 copied and verified, 1 failed or a count differs, 2 bad usage,\n"
            "130 interrupted.\n",
            DEFAULT_BATCH, MAX_BATCH);
}

static int parse_int_flag(const char *name, const char *v, long lo, long hi, int *out)
{
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (v[0] == '\0' || *end != '\0' || errno != 0 || n < lo || n > hi) {
        dbcopy_fail("--%s must be a whole number from %ld to %ld, not \"%s\"", name, lo, hi, v);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int parse_opts(int argc, char **argv, dbcopy_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->batch = DEFAULT_BATCH;
    o->connect_timeout_ms = 5000;
    const char *progress = "auto";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--from=", 7) == 0)
            o->from = a + 7;
        else if (strncmp(a, "--to=", 5) == 0)
            o->to = a + 5;
        else if (strcmp(a, "--force") == 0)
            o->force = 1;
        else if (strncmp(a, "--batch=", 8) == 0) {
            if (parse_int_flag("batch", a + 8, 1, MAX_BATCH, &o->batch) != 0)
                return -1;
        } else if (strncmp(a, "--connect-timeout-ms=", 21) == 0) {
            if (parse_int_flag("connect-timeout-ms", a + 21, 1, 600000, &o->connect_timeout_ms) != 0)
                return -1;
        } else if (strncmp(a, "--progress=", 11) == 0)
            progress = a + 11;
        else if (strcmp(a, "--from") == 0 || strcmp(a, "--to") == 0) {
            dbcopy_fail("%s needs a value: %s=DIR or %s=postgres://...", a, a, a);
            return -1;
        } else {
            dbcopy_fail("unknown argument \"%s\" (see basalt db copy --help)", a);
            return -1;
        }
    }
    if (o->from == NULL || o->from[0] == '\0' || o->to == NULL || o->to[0] == '\0') {
        dbcopy_fail(
            "--from and --to are both required: basalt db copy --from=DIR|URL --to=URL|DIR (see --help)");
        return -1;
    }
    if (strcmp(progress, "auto") == 0)
        o->progress = isatty(STDERR_FILENO) ? DBCOPY_PROGRESS_BAR : DBCOPY_PROGRESS_LINES;
    else if (strcmp(progress, "bar") == 0)
        o->progress = DBCOPY_PROGRESS_BAR;
    else if (strcmp(progress, "lines") == 0)
        o->progress = DBCOPY_PROGRESS_LINES;
    else if (strcmp(progress, "off") == 0)
        o->progress = DBCOPY_PROGRESS_OFF;
    else {
        dbcopy_fail("--progress must be auto, bar, lines or off, not \"%s\"", progress);
        return -1;
    }
    return 0;
}

static int run_copy(const dbcopy_opts_t *o)
{
    dbcopy_end_t src = {.flag = "--from", .arg = o->from}, dst = {.flag = "--to", .arg = o->to};
    schema_t *ss = NULL;
    dbcopy_coll_rows_t rows = {0};
    dbcopy_params_t sp = {0};
    int rc = 1;
    bs_error_t err;
    bs_error_init(&err);
    if (dbcopy_end_locate(&src, 1) != 0 || dbcopy_end_locate(&dst, 0) != 0)
        return 1;
    if (strcmp(o->from, o->to) == 0 || dbcopy_same_files(&src, &dst)) {
        dbcopy_fail("--from and --to are the same database (%s); copy into another one", src.where);
        return 1;
    }
    if (dbcopy_end_open(&src, o) != 0 || dbcopy_end_open(&dst, o) != 0)
        goto out;
    char ida[256], idb[256];
    if (src.is_url && dst.is_url) {
        if (dbcopy_end_identity(&src, ida, sizeof(ida), &err) != 0 ||
            dbcopy_end_identity(&dst, idb, sizeof(idb), &err) != 0) {
            dbcopy_fail("cannot tell whether --from and --to are the same database: %s", err.message);
            goto out;
        }
        if (ida[0] && strcmp(ida, idb) == 0) {
            dbcopy_fail("--from=%s and --to=%s are the same database; copy into another one", src.where,
                        dst.where);
            goto out;
        }
    }
    int has = dbcopy_table_exists(&src, "_collections", &err);
    if (has <= 0) {
        if (has < 0)
            dbcopy_fail("%s=%s: cannot read it: %s", src.flag, src.where, err.message);
        else
            dbcopy_fail("%s=%s holds no Basalt data (no _collections table)", src.flag, src.where);
        goto out;
    }
    int has_params = dbcopy_table_exists(&src, "_params", &err);
    if (has_params < 0) {
        dbcopy_fail("%s=%s: cannot read it: %s", src.flag, src.where, err.message);
        goto out;
    }
    /* One snapshot of the source from here on (see the top of the file). */
    if (src.d->snapshot_begin != NULL) {
        if (store_exec_script(src.rd, src.d->snapshot_begin, &err) != 0) {
            dbcopy_fail("%s=%s: cannot start a read transaction: %s", src.flag, src.where, err.message);
            goto out;
        }
        src.in_snapshot = 1;
    }
    ss = schema_load(src.rd, &err);
    if (ss == NULL || dbcopy_load_coll_rows(&src, &rows, &err) != 0 ||
        (has_params && dbcopy_load_params(&src, &sp, &err) != 0)) {
        dbcopy_fail("%s=%s: cannot read the collections and settings: %s", src.flag, src.where, err.message);
        goto out;
    }
    for (size_t i = 0; i < rows.n; i++)
        if (schema_find(ss, rows.rows[i].id) == NULL) {
            dbcopy_fail("%s=%s: collection row %s cannot be read", src.flag, src.where, rows.rows[i].id);
            goto out;
        }
    if (o->progress != DBCOPY_PROGRESS_OFF)
        fprintf(stderr, "copying %s -> %s\n", src.where, dst.where);
    dbcopy_strip_partitions(&dst, ss, &rows, o);
    if (dbcopy_copy_schema(&src, &dst, o, ss, &rows, &sp) != 0)
        goto out;
    int64_t inserted = 0;
    for (size_t i = 0; i < rows.n; i++) {
        int r = dbcopy_copy_records(&src, &dst, o, schema_find(ss, rows.rows[i].id), &inserted);
        if (r != 0) {
            rc = r == 1 ? 130 : 1;
            goto out;
        }
    }
    rc = dbcopy_verify(&src, &dst, ss, &rows, &sp) == 0 ? 0 : 1;
    if (rc == 0) {
        char n[32];
        fprintf(stderr, "done: %s records written by this run\n", dbcopy_fmt_n(inserted, n));
    }
out:
    dbcopy_coll_rows_free(&rows);
    dbcopy_params_free(&sp);
    schema_free(ss);
    dbcopy_end_close(&src);
    dbcopy_end_close(&dst);
    return rc;
}

int dbcopy_command(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "copy") != 0) {
        if (argc >= 1 &&
            (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "help") == 0)) {
            dbcopy_print_help(stdout);
            return 0;
        }
        fprintf(stderr, "basalt db: unknown or missing subcommand%s%s%s\n\n", argc ? " \"" : "",
                argc ? argv[0] : "", argc ? "\"" : "");
        dbcopy_print_help(stderr);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            dbcopy_print_help(stdout);
            return 0;
        }
    dbcopy_opts_t o;
    if (parse_opts(argc - 1, argv + 1, &o) != 0)
        return 2;
    /* The stores' own log lines (a reconnection, a failed statement's detail) only
     * when they matter. */
    log_set_level(LOG_WARN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return run_copy(&o);
}
