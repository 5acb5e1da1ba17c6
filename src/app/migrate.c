#include "app/migrate.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "core/migration.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: basalt migrate up [N]      apply the pending migrations (the first N)\n"
            "       basalt migrate down [N]    revert the last N applied migrations (1)\n"
            "       basalt migrate status      list the migrations, applied or pending\n"
            "       basalt migrate create NAME write an empty migration to fill in\n"
            "Options: --dir=DIR or --db=URL (the database), --migrations-dir=DIR (default DIR/migrations),\n"
            "         --dry-run (print what would change, change nothing),\n"
            "         --allow-destructive (drop fields or collections that hold records)\n");
}

typedef struct {
    char **v;
    size_t n, cap;
} names_t;

static int names_add(names_t *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    if ((l->v[l->n] = strdup(s)) == NULL)
        return -1;
    l->n++;
    return 0;
}

static void names_free(names_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int names_has(const names_t *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return 1;
    return 0;
}

/* The *.json files of dir, sorted (their names start with the time they were made). */
static int list_files(const char *dir, names_t *out)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n > 5 && e->d_name[0] != '.' && strcmp(e->d_name + n - 5, ".json") == 0 &&
            names_add(out, e->d_name) != 0)
            rc = -1;
    }
    closedir(d);
    qsort(out->v, out->n, sizeof(char *), cmp_names);
    return rc;
}

typedef struct {
    store_job_t job;
    names_t *applied;
    int64_t *applied_at;
} applied_job_t;

static int read_applied(store_job_t *job, store_conn_t *conn)
{
    applied_job_t *j = (applied_job_t *)job;
    store_stmt_t *st =
        store_query(conn, "SELECT name, applied FROM _migrations ORDER BY name", NULL, 0, &job->err);
    if (st == NULL)
        return -1;
    int r;
    while ((r = store_step(st, &job->err)) == 1) {
        bs_value_t v = store_col(st, 0);
        if (v.type == BS_VAL_TEXT && names_add(j->applied, v.s) != 0) {
            bs_error_set(&job->err, BS_ERR_NOMEM, NULL);
            r = -1;
            break;
        }
    }
    store_done(st);
    return r < 0 ? -1 : 0;
}

/* Reads a migration file; returns owned JSON or NULL after a message. */
static json_t *load_file(const char *dir, const char *name)
{
    char path[2048];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    if (doc == NULL) {
        fprintf(stderr, "basalt migrate: %s: %s (line %d)\n", path, jerr.text, jerr.line);
        return NULL;
    }
    bs_error_t err;
    bs_error_init(&err);
    if (migration_validate(doc, &err) != 0) {
        fprintf(stderr, "basalt migrate: %s: %s\n", path, err.message);
        json_decref(doc);
        return NULL;
    }
    return doc;
}

typedef struct {
    store_job_t job;
    json_t **docs;
    char **names;
    size_t n;
    int up, allow_destructive, dry_run;
    buf_t plan;
    size_t failed_at;
} apply_job_t;

static int apply_run(store_job_t *job, store_conn_t *conn)
{
    apply_job_t *j = (apply_job_t *)job;
    for (size_t i = 0; i < j->n; i++) {
        j->failed_at = i;
        buf_printf(&j->plan, "%s %s:\n", j->up ? "apply" : "revert", j->names[i]);
        migration_opts_t o = {.up = j->up, .allow_destructive = j->allow_destructive, .plan = &j->plan};
        if (migration_apply(conn, j->docs[i], &o, job->arena, &job->err) != 0 ||
            migration_mark(conn, j->names[i], j->up, &job->err) != 0)
            return -1;
    }
    j->failed_at = j->n;
    if (j->dry_run) {
        /* The whole run, checks included, then rolled back. */
        bs_error_set(&job->err, BS_ERR_OK, "dry run");
        return -1;
    }
    return 0;
}

static int write_template(const char *mdir, const char *name)
{
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            fprintf(stderr,
                    "basalt migrate: a migration name is lowercase letters, digits and _, not \"%s\"\n",
                    name);
            return 2;
        }
    char *file = migration_new_name(name, NULL);
    json_t *changes = json_array(); /* taken by migration_doc, even when it fails */
    json_t *doc = NULL;
    if (file != NULL && changes != NULL)
        doc = migration_doc(file, "custom", changes);
    else
        json_decref(changes);
    int rc = 1;
    if (doc != NULL && migration_write_file(mdir, file, doc) == 0) {
        printf(
            "Created %s/%s: add {\"before\": collection or null, \"after\": collection or null} entries to "
            "\"changes\"\n",
            mdir, file);
        rc = 0;
    } else {
        fprintf(stderr, "basalt migrate: cannot write %s/%s: %s\n", mdir, file ? file : "?", strerror(errno));
    }
    json_decref(doc);
    free(file);
    return rc;
}

int migrate_command(int argc, char **argv, migrate_open_fn open_store)
{
    int dry_run = 0, allow = 0;
    const char *mdir_flag = NULL;
    char **rest_argv = calloc((size_t)argc + 1, sizeof(char *));
    int rest_argc = 0;
    if (rest_argv == NULL)
        return 1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            free(rest_argv);
            return 0;
        } else if (strcmp(argv[i], "--dry-run") == 0)
            dry_run = 1;
        else if (strcmp(argv[i], "--allow-destructive") == 0)
            allow = 1;
        else if (strncmp(argv[i], "--migrations-dir=", 17) == 0)
            mdir_flag = argv[i] + 17;
        else
            rest_argv[rest_argc++] = argv[i];
    }
    config_t cfg;
    char *rest[2];
    int nrest;
    int rc = config_parse(&cfg, rest_argc, rest_argv, rest, 2, &nrest);
    free(rest_argv);
    if (rc != 0)
        return 2;
    const char *verb = nrest > 0 ? rest[0] : "";
    int up = !strcmp(verb, "up"), down = !strcmp(verb, "down"), status = !strcmp(verb, "status"),
        create = !strcmp(verb, "create");
    long count = -1;
    if (nrest == 2 && (up || down)) {
        char *end;
        count = strtol(rest[1], &end, 10);
        if (*end != '\0' || count < 1) {
            fprintf(stderr, "basalt migrate: N must be a positive number, not \"%s\"\n", rest[1]);
            return 2;
        }
    }
    if (!(up || down || status || create) || (create && nrest != 2) || (status && nrest != 1)) {
        usage(stderr);
        return 2;
    }
    char mdir[1100];
    snprintf(mdir, sizeof(mdir), "%s", mdir_flag ? mdir_flag : "");
    if (mdir_flag == NULL)
        snprintf(mdir, sizeof(mdir), "%s/migrations", cfg.dir);
    if (create)
        return write_template(mdir, rest[1]);

    log_set_level(LOG_WARN);
    names_t files = {0}, applied = {0};
    if (list_files(mdir, &files) != 0) {
        fprintf(stderr, "basalt migrate: cannot read the folder %s: %s\n", mdir, strerror(errno));
        return 1;
    }
    store_t *store = open_store(&cfg);
    if (store == NULL) {
        names_free(&files);
        return 1;
    }
    arena_t a;
    arena_init(&a, 4096);
    applied_job_t aj = {.job = {.run = read_applied, .arena = &a}, .applied = &applied};
    rc = 0;
    if (store_write_sync(store, &aj.job) != 0) {
        fprintf(stderr, "basalt migrate: cannot read the table _migrations: %s\n", aj.job.err.message);
        rc = 1;
        goto out;
    }
    if (status) {
        size_t pending = 0;
        for (size_t i = 0; i < files.n; i++) {
            int on = names_has(&applied, files.v[i]);
            pending += !on;
            printf("%-8s %s\n", on ? "applied" : "pending", files.v[i]);
        }
        for (size_t i = 0; i < applied.n; i++)
            if (!names_has(&files, applied.v[i]))
                printf("%-8s %s (its file is not in %s)\n", "applied", applied.v[i], mdir);
        printf("%zu applied, %zu pending (%s, %s)\n", applied.n, pending, mdir, store_backend_name(store));
        goto out;
    }
    /* What to run, in order: pending files oldest first, or applied ones newest first. */
    names_t todo = {0};
    if (up) {
        for (size_t i = 0; i < files.n && (count < 0 || (long)todo.n < count); i++)
            if (!names_has(&applied, files.v[i]))
                names_add(&todo, files.v[i]);
    } else {
        if (count < 0)
            count = 1;
        for (size_t i = applied.n; i > 0 && (long)todo.n < count; i--) {
            if (!names_has(&files, applied.v[i - 1])) {
                fprintf(stderr, "basalt migrate: cannot revert %s: its file is not in %s\n", applied.v[i - 1],
                        mdir);
                rc = 1;
                break;
            }
            names_add(&todo, applied.v[i - 1]);
        }
    }
    if (rc != 0 || todo.n == 0) {
        if (rc == 0)
            printf("Nothing to %s.\n", up ? "apply" : "revert");
        names_free(&todo);
        goto out;
    }
    json_t **docs = calloc(todo.n, sizeof(json_t *));
    for (size_t i = 0; docs && i < todo.n; i++)
        if ((docs[i] = load_file(mdir, todo.v[i])) == NULL)
            rc = 1;
    if (docs == NULL)
        rc = 1;
    if (rc == 0) {
        apply_job_t j = {.job = {.run = apply_run, .arena = &a},
                         .docs = docs,
                         .names = todo.v,
                         .n = todo.n,
                         .up = up,
                         .allow_destructive = allow,
                         .dry_run = dry_run};
        buf_init(&j.plan, NULL);
        int r = store_write_sync(store, &j.job);
        if (dry_run && j.failed_at == j.n) {
            fputs(j.plan.data ? j.plan.data : "", stdout);
            printf("Dry run: %zu migration(s) would be %s; nothing was changed.\n", j.n,
                   up ? "applied" : "reverted");
        } else if (r != 0) {
            fputs(j.plan.data ? j.plan.data : "", stdout);
            fprintf(stderr, "basalt migrate: %s: %s\nNothing was changed.\n", j.names[j.failed_at],
                    j.job.err.message);
            rc = 1;
        } else {
            fputs(j.plan.data ? j.plan.data : "", stdout);
            printf("%s %zu migration(s) on %s.\n", up ? "Applied" : "Reverted", j.n,
                   store_backend_name(store));
        }
        buf_free(&j.plan);
    }
    for (size_t i = 0; docs && i < todo.n; i++)
        json_decref(docs[i]);
    free(docs);
    names_free(&todo);
out:
    arena_free(&a);
    names_free(&files);
    names_free(&applied);
    store_close(store);
    schema_publish(NULL);
    return rc;
}
