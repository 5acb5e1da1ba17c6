/*
 * `basalt user export COLLECTION ID --out=FILE` and `basalt user erase COLLECTION ID`
 * (core/privacy.h, docs/privacy.md): the same export and erasure as the API, on a
 * data folder or a --db database, for an operator answering a request by mail. Each
 * runs as one store_write_sync transaction; the erasure is written to the audit log.
 * A running server notices the erasure (its cache through the database's change
 * counter or NOTIFY), but its realtime clients get no delete events: while a server
 * runs, prefer the API.
 */
#include "app/usercli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/logs.h"
#include "base/audit.h"
#include "base/log.h"
#include "base/util.h"
#include "core/privacy.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: basalt user export COLLECTION ID --out=FILE.zip [--dir=DIR | --db=URL]\n"
                 "       basalt user erase COLLECTION ID [--dir=DIR | --db=URL]\n");
}

typedef struct {
    store_job_t job;
    const char *coll, *id;
    int erase;
    buf_t zip;
    privacy_counts_t counts;
    int deleted;
} user_job_t;

static int user_run(store_job_t *job, store_conn_t *conn)
{
    user_job_t *j = (user_job_t *)job;
    schema_t *s = schema_load(conn, &job->err);
    if (s == NULL)
        return -1;
    const collection_t *c = schema_find(s, j->coll);
    int rc = -1;
    if (c == NULL || c->type != COLL_AUTH) {
        bs_error_set(&job->err, BS_ERR_NOT_FOUND, "%s is not an auth collection", j->coll);
    } else if (j->erase) {
        record_write_t w = {.schema = s};
        rc = privacy_erase(conn, &w, c, j->id, &j->deleted, job->arena, &job->err);
        if (rc == 0)
            rc = logs_forget(conn, j->id, &job->err); /* a running server's later pass: see logs.h */
    } else {
        rc = privacy_export_zip(conn, s, c, j->id, 0, &j->zip, &j->counts, job->arena, &job->err);
    }
    schema_free(s);
    return rc;
}

int usercli_command(int argc, char **argv, migrate_open_fn open_store)
{
    const char *out_path = NULL;
    char **rest_argv = calloc((size_t)argc + 1, sizeof(char *));
    int rest_argc = 0;
    if (rest_argv == NULL)
        return 1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            free(rest_argv);
            return 0;
        }
        if (strncmp(argv[i], "--out=", 6) == 0)
            out_path = argv[i] + 6;
        else
            rest_argv[rest_argc++] = argv[i];
    }
    config_t cfg;
    char *rest[3];
    int nrest;
    int rc = config_parse(&cfg, rest_argc, rest_argv, rest, 3, &nrest);
    free(rest_argv);
    if (rc != 0)
        return 2;
    int erase = nrest == 3 && strcmp(rest[0], "erase") == 0,
        export = nrest == 3 && strcmp(rest[0], "export") == 0;
    if (!(erase || export) || (export && (out_path == NULL || out_path[0] == '\0'))) {
        usage(stderr);
        return 2;
    }
    if (!util_valid_id(rest[2], strlen(rest[2]))) {
        fprintf(stderr, "basalt user: \"%s\" is not a record id\n", rest[2]);
        return 2;
    }
    log_set_level(LOG_WARN);
    store_t *store = open_store(&cfg);
    if (store == NULL)
        return 1;
    arena_t a;
    arena_init(&a, 1 << 16);
    user_job_t j = {.job = {.run = user_run, .arena = &a}, .coll = rest[1], .id = rest[2], .erase = erase};
    buf_init(&j.zip, NULL);
    rc = 0;
    if (store_write_sync(store, &j.job) != 0) {
        fprintf(stderr, "basalt user: %s\n", j.job.err.message);
        rc = 1;
    } else if (export) {
        FILE *f = fopen(out_path, "wb");
        if (f == NULL || fwrite(j.zip.data, 1, j.zip.len, f) != j.zip.len || fclose(f) != 0) {
            fprintf(stderr, "basalt user: cannot write %s: %s\n", out_path, strerror(errno));
            rc = 1;
        } else {
            printf("Exported %s/%s with %zu related records in %zu collections to %s\n", rest[1], rest[2],
                   j.counts.records, j.counts.collections, out_path);
        }
    } else {
        char audit_path[1100], target[200], detail[64];
        if (strcmp(cfg.audit_log, "auto") == 0)
            snprintf(audit_path, sizeof(audit_path), "%s/audit.log", cfg.dir);
        else
            snprintf(audit_path, sizeof(audit_path), "%s", cfg.audit_log);
        snprintf(target, sizeof(target), "%s/%s", rest[1], rest[2]);
        snprintf(detail, sizeof(detail), "%d records deleted (cascades not counted)", j.deleted);
        if (audit_open(audit_path) == 0) {
            audit_event_t e = {.action = "user_erase", .actor = "cli", .target = target, .detail = detail};
            audit_log(&e);
            audit_close();
        } else {
            fprintf(stderr, "basalt user: warning: cannot open the audit log %s: %s\n", audit_path,
                    strerror(errno));
        }
        printf("Erased %s: %s\n", target, detail);
    }
    buf_free(&j.zip);
    arena_free(&a);
    store_close(store);
    schema_publish(NULL);
    return rc;
}
