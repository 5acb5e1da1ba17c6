/* The orphan sweep (see files_gc.h). */
#include "app/files_gc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "core/record.h"

typedef struct {
    char **keys;
    size_t n, cap;
    int oom;
} keys_t;

static int collect(void *arg, const char *key)
{
    keys_t *k = arg;
    if (k->n == k->cap) {
        size_t nc = k->cap ? k->cap * 2 : 256;
        char **nk = realloc(k->keys, nc * sizeof(*nk));
        if (nk == NULL) {
            k->oom = 1;
            return 1;
        }
        k->keys = nk;
        k->cap = nc;
    }
    if ((k->keys[k->n] = strdup(key)) == NULL) {
        k->oom = 1;
        return 1;
    }
    k->n++;
    return 0;
}

/* Whether rec's file fields name `name`. */
static int referenced(const collection_t *c, const json_t *rec, const char *name)
{
    for (size_t i = 0; i < c->nfields; i++) {
        if (c->fields[i].type != FIELD_FILE)
            continue;
        const json_t *v = json_object_get(rec, c->fields[i].name);
        if (json_is_string(v) && strcmp(json_string_value(v), name) == 0)
            return 1;
        size_t k;
        json_t *x;
        if (json_is_array(v))
            json_array_foreach(v, k,
                               x) if (json_is_string(x) && strcmp(json_string_value(x), name) == 0) return 1;
    }
    return 0;
}

int files_gc(storage_t *st, store_conn_t *conn, const schema_t *s, int64_t grace_ms, int dry_run,
             files_gc_stats_t *out, bs_error_t *err)
{
    memset(out, 0, sizeof(*out));
    keys_t k = {0};
    int rc = 0;
    if (storage_list(st, "", collect, &k, err) != 0)
        rc = -1;
    if (rc == 0 && k.oom) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        rc = -1;
    }
    int64_t now = util_now_ms();
    char last_rec[256] = "";
    json_t *rec = NULL;
    const collection_t *coll = NULL;
    int rec_missing = 0;
    for (size_t i = 0; i < k.n && rc == 0; i++) {
        const char *key = k.keys[i];
        out->scanned++;
        /* collectionId/recordId/name or collectionId/recordId/thumbs_name/spec_name */
        char cid[128], rid[128], name[256];
        const char *a = strchr(key, '/');
        const char *b = a ? strchr(a + 1, '/') : NULL;
        if (a == NULL || b == NULL || (size_t)(a - key) >= sizeof(cid) ||
            (size_t)(b - a - 1) >= sizeof(rid)) {
            out->kept++; /* not a layout Basalt makes: not ours to judge */
            continue;
        }
        snprintf(cid, sizeof(cid), "%.*s", (int)(a - key), key);
        snprintf(rid, sizeof(rid), "%.*s", (int)(b - a - 1), a + 1);
        const char *rest = b + 1;
        const char *slash = strchr(rest, '/');
        if (slash != NULL && strncmp(rest, "thumbs_", 7) == 0)
            snprintf(name, sizeof(name), "%.*s", (int)(slash - rest - 7), rest + 7);
        else
            snprintf(name, sizeof(name), "%s", rest);
        char rk[256];
        snprintf(rk, sizeof(rk), "%s/%s", cid, rid);
        if (strcmp(rk, last_rec) != 0) {
            json_decref(rec);
            rec = NULL;
            rec_missing = 0;
            snprintf(last_rec, sizeof(last_rec), "%s", rk);
            coll = schema_find(s, cid);
            if (coll != NULL && util_valid_id(rid, strlen(rid))) {
                bs_error_t lerr;
                bs_error_init(&lerr);
                rec = record_load(conn, coll, "id", rid, &lerr);
                if (rec == NULL && lerr.code != BS_ERR_NOT_FOUND) {
                    *err = lerr;
                    rc = -1;
                    break;
                }
            }
            rec_missing = rec == NULL;
        }
        if (!rec_missing && referenced(coll, rec, name)) {
            out->kept++;
            continue;
        }
        storage_stat_t meta;
        bs_error_t serr;
        bs_error_init(&serr);
        int ex = storage_stat(st, key, &meta, &serr);
        if (ex != 1 || (meta.mtime_ms > 0 && now - meta.mtime_ms < grace_ms) ||
            (meta.mtime_ms == 0 && grace_ms > 0)) {
            out->kept++; /* too young (maybe a write in flight), or its age is unknown */
            continue;
        }
        if (dry_run) {
            printf("would remove %s\n", key);
            out->removed++;
        } else if (storage_delete(st, key, &serr) == 0) {
            out->removed++;
        } else {
            fprintf(stderr, "basalt: cannot remove %s: %s\n", key, serr.message);
            out->failed++;
        }
    }
    json_decref(rec);
    for (size_t i = 0; i < k.n; i++)
        free(k.keys[i]);
    free(k.keys);
    return rc;
}
