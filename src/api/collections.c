/*
 * /api/collections: superusers list, view, create, update, delete and import
 * collection definitions. Changes run as writer jobs that read the definitions
 * inside the transaction, apply DDL and publish a new schema after the commit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "redis/redis_shared.h"
#include "base/log.h"
#include "base/util.h"
#include "core/migration.h"
#include "rules/dialect.h"

typedef enum { OP_CREATE, OP_UPDATE, OP_DELETE, OP_IMPORT } coll_op_t;

typedef struct {
    coll_op_t op;
    char *target;   /* id or name for update/delete */
    json_t *body;   /* owned */
    buf_t out;      /* the response body (arena) */
    schema_t *next; /* the schema to publish after the commit */
    /* Automigrate (core/migration.h): the change as a migration document, recorded
     * in _migrations inside the job and written to its file after the commit. */
    json_t *changes;    /* owned; the before/after snapshots, in order */
    json_t *migration;  /* owned; NULL when no folder is configured */
    char *mig_name;     /* owned (malloc) */
    json_t *files_gone; /* owned: the folders of deleted collections, emptied after the commit */
    uint64_t notified;  /* schema notifications heard before the commit (ADR 0013) */
    int notifies;       /* the change sends one (a database other instances share) */
} coll_job_t;

/* The collections list takes PocketBase's filter and sort over the definitions'
 * top-level scalar properties, decided in memory (no table holds them as columns). */
static const char *const list_keys[] = {"id",         "name",       "type",       "system",     "listRule",
                                        "viewRule",   "createRule", "updateRule", "deleteRule", "authRule",
                                        "manageRule", "viewQuery",  "created",    "updated"};

static int list_key(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(list_keys) / sizeof(list_keys[0]); i++)
        if (strlen(list_keys[i]) == len && memcmp(list_keys[i], name, len) == 0)
            return (int)i;
    return -1;
}

typedef struct {
    json_t *def;   /* one definition, or NULL while checking the names */
    int bad;       /* a name that is no property */
    char what[64]; /* that name */
} coll_eval_t;

static int coll_lookup(void *ud, arena_t *arena, const char *name, size_t len, unsigned mods,
                       rules_evalue_t *out)
{
    (void)arena;
    (void)mods;
    coll_eval_t *ce = ud;
    memset(out, 0, sizeof(*out));
    if (list_key(name, len) < 0) {
        if (!ce->bad)
            snprintf(ce->what, sizeof(ce->what), "%.*s", (int)(len > 60 ? 60 : len), name);
        ce->bad = 1;
        return -1;
    }
    char key[32];
    snprintf(key, sizeof(key), "%.*s", (int)len, name);
    json_t *v = ce->def ? json_object_get(ce->def, key) : NULL;
    if (json_is_string(v))
        out->value = bs_val_text(json_string_value(v), json_string_length(v));
    else if (json_is_boolean(v))
        out->value = bs_val_int(json_is_true(v));
    else
        out->value = bs_val_null();
    return 0;
}

typedef struct {
    json_t *def;
    const collection_t *c;
    const char *key[8];
    int desc[8];
    int nkeys;
} coll_row_t;

static int cmp_rows(const void *pa, const void *pb)
{
    const coll_row_t *a = pa, *b = pb;
    for (int k = 0; k < a->nkeys; k++) {
        json_t *va = json_object_get(a->def, a->key[k]), *vb = json_object_get(b->def, a->key[k]);
        const char *sa = json_is_string(va)  ? json_string_value(va)
                         : json_is_true(va)  ? "1"
                         : json_is_false(va) ? "0"
                                             : "";
        const char *sb = json_is_string(vb)  ? json_string_value(vb)
                         : json_is_true(vb)  ? "1"
                         : json_is_false(vb) ? "0"
                                             : "";
        int c = strcmp(sa, sb);
        if (c != 0)
            return a->desc[k] ? -c : c;
    }
    return 0;
}

static void list_all(req_ctx_t *ctx)
{
    int64_t page = 1, per_page = 30;
    const char *ps = ctx_query(ctx, "page"), *pp = ctx_query(ctx, "perPage");
    if ((ps && (util_parse_i64(ps, strlen(ps), &page) != 0 || page < 1)) ||
        (pp && (util_parse_i64(pp, strlen(pp), &per_page) != 0 || per_page < 1))) {
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST, "page and perPage must be positive integers.");
        return;
    }
    if (per_page > 1000)
        per_page = 1000;
    arena_t *a = &ctx->arena;
    bs_error_t err;
    bs_error_init(&err);
    const char *filter = ctx_query(ctx, "filter");
    rules_node_t *node = filter ? rules_parse(a, filter, strlen(filter), NULL, &err) : NULL;
    if (err.code != BS_ERR_OK) {
        ctx_send_error(ctx, &err);
        return;
    }
    coll_eval_t ce = {0};
    rules_evaluator_t ev = {.lookup = coll_lookup, .ud = &ce, .now_ms = util_now_ms()};
    if (node != NULL) {
        rules_eval(&ev, a, node); /* names first: an unknown one is a 400, not "no match" */
        if (ce.bad) {
            bs_error_set(&err, BS_ERR_BAD_REQUEST,
                         "Invalid filter: \"%s\" is no property of a collection (id, name, type, system, the "
                         "rules, viewQuery, created, updated).",
                         ce.what);
            ctx_send_error(ctx, &err);
            return;
        }
    }
    /* sort: up to 8 of the same properties, '-' for descending */
    coll_row_t proto = {0};
    const char *sort = ctx_query(ctx, "sort");
    for (const char *p = sort; p != NULL && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *q = e;
        while (q > p && q[-1] == ' ')
            q--;
        int desc = *p == '-';
        if (*p == '-' || *p == '+')
            p++;
        int k = list_key(p, (size_t)(q - p));
        if (k < 0 || proto.nkeys == 8) {
            bs_error_set(
                &err, BS_ERR_BAD_REQUEST,
                k < 0 ? "Invalid sort term \"%.*s\": sort collections by id, name, type, system, created "
                        "or updated (and the rules)."
                      : "Invalid sort: at most 8 terms (\"%.*s\").",
                (int)(q - p > 60 ? 60 : q - p), p);
            ctx_send_error(ctx, &err);
            return;
        }
        proto.key[proto.nkeys] = list_keys[k];
        proto.desc[proto.nkeys++] = desc;
        p = e;
    }
    const schema_t *s = ctx->schema;
    coll_row_t *rows = arena_calloc(a, (s->ncols + 1) * sizeof(*rows));
    if (rows == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < s->ncols; i++) {
        buf_t one;
        buf_init(&one, a);
        collection_to_json(s->cols[i], &one, 0);
        json_error_t jerr;
        json_t *def = one.oom ? NULL : json_loadb(one.data, one.len, 0, &jerr);
        if (def == NULL)
            continue;
        ce.def = def;
        if (node != NULL && rules_eval(&ev, a, node) != RULES_TRUE) {
            json_decref(def);
            continue;
        }
        rows[n] = proto;
        rows[n].c = s->cols[i];
        rows[n++].def = def;
    }
    if (proto.nkeys > 0)
        qsort(rows, n, sizeof(*rows), cmp_rows);
    buf_t out;
    buf_init(&out, a);
    int64_t total = (int64_t)n;
    buf_printf(&out, "{\"page\":%lld,\"perPage\":%lld,\"totalItems\":%lld,\"totalPages\":%lld,\"items\":[",
               (long long)page, (long long)per_page, (long long)total,
               (long long)((total + per_page - 1) / per_page));
    int first = 1;
    for (int64_t i = (page - 1) * per_page; i < total && i < page * per_page; i++) {
        if (!first)
            buf_putc(&out, ',');
        first = 0;
        collection_to_json(rows[i].c, &out, 0);
    }
    for (size_t i = 0; i < n; i++)
        json_decref(rows[i].def);
    buf_puts(&out, "]}");
    if (out.oom)
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
    else
        ctx_send_json(ctx, 200, out.data, out.len);
}

void api_collections_list(req_ctx_t *ctx, char **params)
{
    (void)params;
    if (api_require_superuser(ctx) == 0)
        list_all(ctx);
}

void api_collections_view(req_ctx_t *ctx, char **params)
{
    if (api_require_superuser(ctx) != 0)
        return;
    const collection_t *c = api_collection(ctx, params[0]);
    if (c == NULL)
        return;
    buf_t out;
    buf_init(&out, &ctx->arena);
    collection_to_json(c, &out, 0);
    ctx_send_json(ctx, 200, out.data, out.len);
}

static int apply_one(coll_job_t *cj, store_conn_t *conn, const json_t *body, const char *target, coll_op_t op,
                     arena_t *a, bs_error_t *err)
{
    schema_t *cur = schema_load(conn, err);
    if (cur == NULL)
        return -1;
    const collection_t *old = NULL;
    if (target != NULL) {
        old = schema_find(cur, target);
        if (old == NULL && op != OP_IMPORT) {
            bs_error_set(err, BS_ERR_NOT_FOUND, "Missing collection \"%s\".", target);
            schema_free(cur);
            return -1;
        }
    }
    if (op == OP_DELETE && old->system) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "System collection \"%s\" cannot be deleted.", old->name);
        schema_free(cur);
        return -1;
    }
    collection_t *nu = NULL;
    if (op != OP_DELETE) {
        nu = collection_from_json(body, old, cur, a, err);
        if (nu == NULL) {
            schema_free(cur);
            return -1;
        }
        /* A view's fields come from its query, run here in the job. */
        if (nu->type == COLL_VIEW && view_infer(conn, cur, nu, a, err) != 0) {
            collection_free(nu);
            schema_free(cur);
            return -1;
        }
    }
    int rc = schema_apply(conn, cur, old, nu, a, err);
    if (rc == 0 && cj->changes != NULL) {
        json_t *ch = migration_change(old, nu);
        if (ch == NULL || json_array_append_new(cj->changes, ch) != 0) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            rc = -1;
        }
    }
    if (rc == 0 && op == OP_DELETE && old != NULL) {
        /* Its files go with it, as in PocketBase (after the commit). */
        if (cj->files_gone == NULL)
            cj->files_gone = json_array();
        json_array_append_new(cj->files_gone, json_pack("s+", old->id, "/"));
    }
    if (rc == 0 && nu != NULL && cj->op != OP_IMPORT)
        collection_to_json(nu, &cj->out, 0);
    collection_free(nu);
    schema_free(cur);
    return rc;
}

/* Names the change's migration and marks it applied in this transaction, so that
 * `basalt migrate up` on this database skips the file the commit writes. */
static int record_migration(coll_job_t *cj, store_conn_t *conn, bs_error_t *err)
{
    static const char *verbs[] = {"created", "updated", "deleted", "imported"};
    const char *what = "collections";
    json_t *first = json_array_get(cj->changes, 0);
    json_t *snap = json_object_get(first, json_is_null(json_object_get(first, "after")) ? "before" : "after");
    if (cj->op != OP_IMPORT)
        what = json_string_value(json_object_get(snap, "name"));
    cj->mig_name = migration_new_name(verbs[cj->op], what);
    if (cj->mig_name == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    cj->migration = migration_doc(cj->mig_name, verbs[cj->op], cj->changes);
    cj->changes = NULL; /* taken by the document (or freed with it on failure) */
    if (cj->migration == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    return migration_mark(conn, cj->mig_name, 1, err);
}

static int run_job(store_job_t *job, store_conn_t *conn)
{
    api_job_t *aj = (api_job_t *)job;
    coll_job_t *cj = aj->data;
    arena_t *a = job->arena;
    bs_error_t *err = &job->err;
    const char *mdir = migration_dir();
    /* From scratch, in case a backend runs the job again after a lost connection. */
    json_decref(cj->changes);
    json_decref(cj->migration);
    free(cj->mig_name);
    cj->changes = cj->migration = NULL;
    cj->mig_name = NULL;
    if (mdir != NULL && mdir[0] != '\0' && (cj->changes = json_array()) == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    if (cj->op == OP_IMPORT) {
        json_t *list = json_object_get(cj->body, "collections");
        if (!json_is_array(list)) {
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         "The body must be {\"collections\": [...], \"deleteMissing\": bool}.");
            return -1;
        }
        /* In list order, each in the same transaction: a relation may point at a
         * collection that already exists or comes earlier in the list. */
        size_t i;
        json_t *def;
        json_array_foreach(list, i, def)
        {
            const char *id = json_string_value(json_object_get(def, "id"));
            const char *name = json_string_value(json_object_get(def, "name"));
            schema_t *cur = schema_load(conn, err);
            if (cur == NULL)
                return -1;
            const collection_t *old = id ? schema_find(cur, id) : NULL;
            if (old == NULL && name)
                old = schema_find(cur, name);
            char *target = old ? arena_strdup(a, old->id) : NULL;
            schema_free(cur);
            if (apply_one(cj, conn, def, target, target ? OP_UPDATE : OP_CREATE, a, err) != 0) {
                char msg[600];
                snprintf(msg, sizeof(msg), "Failed to import collection %zu (%s): %s", i, name ? name : "?",
                         err->message);
                bs_error_set(err, err->code == BS_ERR_VALIDATION ? BS_ERR_BAD_REQUEST : err->code, "%s", msg);
                return -1;
            }
        }
        if (json_is_true(json_object_get(cj->body, "deleteMissing"))) {
            schema_t *cur = schema_load(conn, err);
            if (cur == NULL)
                return -1;
            for (size_t k = 0; k < cur->ncols; k++) {
                const collection_t *c = cur->cols[k];
                int keep = c->system;
                json_array_foreach(list, i, def)
                {
                    const char *id = json_string_value(json_object_get(def, "id"));
                    const char *name = json_string_value(json_object_get(def, "name"));
                    if ((id && !strcmp(id, c->id)) || (name && !strcasecmp(name, c->name)))
                        keep = 1;
                }
                if (!keep && apply_one(cj, conn, NULL, c->id, OP_DELETE, a, err) != 0) {
                    schema_free(cur);
                    return -1;
                }
            }
            schema_free(cur);
        }
    } else if (apply_one(cj, conn, cj->body, cj->target, cj->op, a, err) != 0) {
        return -1;
    }
    if (cj->changes != NULL && json_array_size(cj->changes) > 0 && record_migration(cj, conn, err) != 0)
        return -1;
    cj->next = schema_load(conn, err);
    /* Before the commit: this change's own notification cannot have arrived yet. */
    cj->notified = schema_remote_gen();
    cj->notifies = dialect_get(store_conn_dialect(conn))->schema_notify_sql != NULL;
    return cj->next ? 0 : -1;
}

static void committed(store_job_t *job)
{
    coll_job_t *cj = ((api_job_t *)job)->data;
    /* Every cached entry carries the schema version it was computed under; the new
     * snapshot has a new version, so nothing cached before survives. */
    schema_publish(cj->next);
    cj->next = NULL;
    /* Through Redis too: the answer waits until it is published (ADR 0015). */
    redis_shared_definitions_changed();
    /* The writer thread may wait (never a loop): the answer goes out once this
     * change's NOTIFY came back to this instance's listener, which PostgreSQL signals
     * together with every other instance's, so that a client's next request, on any
     * instance, finds it there already (ADR 0013). Bounded: a lost LISTEN costs 200 ms. */
    if (cj->notifies)
        schema_remote_wait(cj->notified, 200);
    /* The writer thread, not an event loop: the file's fsyncs may wait here. A write
     * that fails leaves the change in the database and marked applied; the log says
     * which file is missing so it can be re-exported. */
    if (cj->migration != NULL && migration_write_file(migration_dir(), cj->mig_name, cj->migration) != 0)
        LOGF(LOG_ERROR, "migrate", "cannot write the migration file %s/%s: %s", migration_dir(), cj->mig_name,
             strerror(errno));
}

static void done(api_job_t *j, req_ctx_t *ctx)
{
    coll_job_t *cj = j->data;
    json_decref(cj->body);
    cj->body = NULL;
    json_decref(cj->changes);
    cj->changes = NULL;
    json_decref(cj->migration);
    cj->migration = NULL;
    free(cj->mig_name);
    cj->mig_name = NULL;
    if (cj->next) {
        schema_free(cj->next);
        cj->next = NULL;
    }
    api_files_finish(NULL, j->job.status == 0, cj->files_gone);
    cj->files_gone = NULL;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    static const char *actions[] = {"collection_create", "collection_update", "collection_delete",
                                    "collections_import"};
    api_audit(ctx, actions[cj->op], cj->target ? cj->target : NULL, NULL);
    if (cj->op == OP_DELETE || cj->op == OP_IMPORT)
        ctx_send_empty(ctx, 204);
    else
        ctx_send_json(ctx, 200, cj->out.data, cj->out.len);
}

static void start(req_ctx_t *ctx, coll_op_t op, const char *target)
{
    if (api_require_superuser(ctx) != 0)
        return;
    bs_error_t err;
    bs_error_init(&err);
    json_t *body = op == OP_DELETE ? json_object() : ctx_body(ctx, &err);
    if (body == NULL) {
        ctx_send_error(ctx, &err);
        return;
    }
    if (target != NULL && schema_find(ctx->schema, target) == NULL) {
        json_decref(body);
        api_collection(ctx, target); /* sends the 404 */
        return;
    }
    coll_job_t *cj = arena_calloc(&ctx->arena, sizeof(*cj));
    if (cj == NULL) {
        json_decref(body);
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    cj->op = op;
    cj->target = target ? arena_strdup(&ctx->arena, target) : NULL;
    cj->body = body;
    buf_init(&cj->out, &ctx->arena);
    api_submit(ctx, run_job, committed, done, cj);
}

void api_collections_create(req_ctx_t *ctx, char **params)
{
    (void)params;
    start(ctx, OP_CREATE, NULL);
}

void api_collections_update(req_ctx_t *ctx, char **params)
{
    start(ctx, OP_UPDATE, params[0]);
}

void api_collections_delete(req_ctx_t *ctx, char **params)
{
    start(ctx, OP_DELETE, params[0]);
}

void api_collections_import(req_ctx_t *ctx, char **params)
{
    (void)params;
    start(ctx, OP_IMPORT, NULL);
}

/* POST /api/basalt/collections/dry-run-view {"viewQuery": "..."}: the fields a view
 * collection with that query would have, or the error it would get, with nothing
 * made (a read job: the query runs once with LIMIT 1). */
typedef struct {
    json_t *body; /* owned */
    schema_t *schema;
    buf_t out;
} dry_run_t;

static int run_dry_run(store_job_t *job, store_conn_t *conn)
{
    dry_run_t *d = ((api_job_t *)job)->data;
    json_t *def = json_pack("{s:s, s:s, s:O?}", "name", "dry_run_view", "type", "view", "viewQuery",
                            json_object_get(d->body, "viewQuery"));
    if (def == NULL) {
        bs_error_set(&job->err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    json_t *lr = json_object_get(d->body, "listRule"), *vr = json_object_get(d->body, "viewRule");
    if (lr != NULL)
        json_object_set(def, "listRule", lr);
    if (vr != NULL)
        json_object_set(def, "viewRule", vr);
    collection_t *c = collection_from_json(def, NULL, d->schema, job->arena, &job->err);
    json_decref(def);
    if (c == NULL)
        return -1;
    int rc = view_infer(conn, d->schema, c, job->arena, &job->err);
    if (rc == 0)
        collection_to_json(c, &d->out, 0);
    collection_free(c);
    return rc;
}

static void dry_run_done(api_job_t *j, req_ctx_t *ctx)
{
    dry_run_t *d = j->data;
    json_decref(d->body);
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    ctx_send_json(ctx, 200, d->out.data, d->out.len);
}

void api_collections_dry_run_view(req_ctx_t *ctx, char **params)
{
    (void)params;
    json_t *body = api_superuser_body(ctx);
    if (body == NULL)
        return;
    dry_run_t *d = arena_calloc(&ctx->arena, sizeof(*d));
    if (d == NULL) {
        json_decref(body);
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    d->body = body;
    d->schema = ctx->schema;
    buf_init(&d->out, &ctx->arena);
    api_read_scan(ctx, run_dry_run, dry_run_done, d);
}
