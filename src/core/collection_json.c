/*
 * The JSON form of collection definitions: serializing one (the API's and the
 * `_collections.data` column's form), and parsing the stored form back.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "core/collection_int.h"
#include "core/schema.h"
#include "mail/mail.h"

/* ---- JSON form ---- */

static void put_key(buf_t *b, const char *k, int *first)
{
    if (!*first)
        buf_putc(b, ',');
    *first = 0;
    util_json_quote(b, k, strlen(k));
    buf_putc(b, ':');
}

static void put_str(buf_t *b, const char *k, const char *v, int *first)
{
    put_key(b, k, first);
    if (v == NULL)
        buf_puts(b, "null");
    else
        util_json_quote(b, v, strlen(v));
}

static void put_bool(buf_t *b, const char *k, int v, int *first)
{
    put_key(b, k, first);
    buf_puts(b, v ? "true" : "false");
}

static void put_num(buf_t *b, const char *k, double v, int *first)
{
    put_key(b, k, first);
    if (v == floor(v) && fabs(v) < 9e15)
        buf_put_i64(b, (int64_t)v);
    else
        buf_printf(b, "%.17g", v);
}

static int dump_cb(const char *p, size_t n, void *ud)
{
    buf_append(ud, p, n);
    return 0;
}

static void field_to_json(const field_t *f, buf_t *b)
{
    int first = 1;
    buf_putc(b, '{');
    put_str(b, "id", f->id, &first);
    put_str(b, "name", f->name, &first);
    put_str(b, "type", field_type_name(f->type), &first);
    put_bool(b, "system", f->system, &first);
    put_bool(b, "hidden", f->hidden, &first);
    put_bool(b, "presentable", f->presentable, &first);
    put_bool(b, "required", f->required, &first);
    switch (f->type) {
    case FIELD_TEXT:
    case FIELD_EDITOR:
    case FIELD_PASSWORD:
        put_num(b, f->type == FIELD_EDITOR ? "maxSize" : "min", f->type == FIELD_EDITOR ? f->max : f->min,
                &first);
        if (f->type != FIELD_EDITOR)
            put_num(b, "max", f->max, &first);
        if (f->type != FIELD_EDITOR)
            put_str(b, "pattern", f->pattern ? f->pattern : "", &first);
        if (f->type == FIELD_TEXT)
            put_bool(b, "primaryKey", f->primary_key, &first);
        break;
    case FIELD_NUMBER:
        put_key(b, "min", &first);
        if (f->has_min)
            buf_printf(b, "%.17g", f->min);
        else
            buf_puts(b, "null");
        put_key(b, "max", &first);
        if (f->has_max)
            buf_printf(b, "%.17g", f->max);
        else
            buf_puts(b, "null");
        put_bool(b, "onlyInt", f->only_int, &first);
        break;
    case FIELD_DATE:
        put_str(b, "min", f->min_date ? f->min_date : "", &first);
        put_str(b, "max", f->max_date ? f->max_date : "", &first);
        break;
    case FIELD_AUTODATE:
        put_bool(b, "onCreate", f->on_create, &first);
        put_bool(b, "onUpdate", f->on_update, &first);
        break;
    case FIELD_SELECT:
        put_key(b, "values", &first);
        buf_putc(b, '[');
        for (size_t i = 0; i < f->nvalues; i++) {
            if (i)
                buf_putc(b, ',');
            util_json_quote(b, f->values[i], strlen(f->values[i]));
        }
        buf_putc(b, ']');
        put_num(b, "maxSelect", f->max_select, &first);
        break;
    case FIELD_RELATION:
        put_str(b, "collectionId", f->collection_id, &first);
        put_bool(b, "cascadeDelete", f->cascade_delete, &first);
        put_num(b, "minSelect", f->min_select, &first);
        put_num(b, "maxSelect", f->max_select, &first);
        break;
    case FIELD_JSON:
        put_num(b, "maxSize", (double)f->max_size, &first);
        break;
    case FIELD_FILE:
        put_num(b, "maxSelect", f->max_select, &first);
        put_num(b, "maxSize", (double)f->max_size, &first);
        put_key(b, "mimeTypes", &first);
        if (f->mime_types != NULL)
            json_dump_callback(f->mime_types, dump_cb, b, JSON_COMPACT);
        else
            buf_puts(b, "[]");
        put_key(b, "thumbs", &first);
        if (f->thumbs != NULL)
            json_dump_callback(f->thumbs, dump_cb, b, JSON_COMPACT);
        else
            buf_puts(b, "[]");
        put_bool(b, "protected", f->protected_files, &first);
        break;
    default:
        break;
    }
    if (f->extra != NULL) {
        const char *k;
        json_t *v;
        json_object_foreach(f->extra, k, v)
        {
            put_key(b, k, &first);
            json_dump_callback(v, dump_cb, b, JSON_COMPACT | JSON_ENCODE_ANY);
        }
    }
    buf_putc(b, '}');
}

void collection_to_json(const collection_t *c, buf_t *b, int with_secret)
{
    int first = 1;
    buf_putc(b, '{');
    put_str(b, "id", c->id, &first);
    put_str(b, "name", c->name, &first);
    put_str(b, "type", c->type == COLL_AUTH ? "auth" : c->type == COLL_VIEW ? "view" : "base", &first);
    put_bool(b, "system", c->system, &first);
    for (int i = 0; i < RULE__COUNT; i++) {
        if (c->type != COLL_AUTH && i >= RULE_AUTH)
            continue;
        put_str(b, collection_rule_keys[i], c->rules[i], &first);
    }
    put_key(b, "fields", &first);
    buf_putc(b, '[');
    for (size_t i = 0; i < c->nfields; i++) {
        if (i)
            buf_putc(b, ',');
        field_to_json(&c->fields[i], b);
    }
    buf_putc(b, ']');
    put_key(b, "indexes", &first);
    buf_putc(b, '[');
    for (size_t i = 0; i < c->nindexes; i++) {
        if (i)
            buf_putc(b, ',');
        util_json_quote(b, c->indexes[i], strlen(c->indexes[i]));
    }
    buf_putc(b, ']');
    if (c->type == COLL_AUTH) {
        put_key(b, "passwordAuth", &first);
        buf_printf(b, "{\"enabled\":%s,\"identityFields\":[", c->password_auth ? "true" : "false");
        for (size_t i = 0; i < c->nidentity; i++) {
            if (i)
                buf_putc(b, ',');
            util_json_quote(b, c->identity_fields[i], strlen(c->identity_fields[i]));
        }
        buf_puts(b, "]}");
        put_key(b, "authToken", &first);
        buf_printf(b, "{\"duration\":%lld", (long long)c->token_duration);
        if (with_secret && c->token_secret) {
            buf_puts(b, ",\"secret\":");
            util_json_quote(b, c->token_secret, strlen(c->token_secret));
        }
        buf_putc(b, '}');
        /* PocketBase's template options, the defaults filled in. */
        json_t *tpl = mail_templates_json(c->mail_templates);
        const char *k;
        json_t *v;
        json_object_foreach(tpl, k, v)
        {
            put_key(b, k, &first);
            json_dump_callback(v, dump_cb, b, JSON_COMPACT);
        }
        json_decref(tpl);
    }
    if (c->type == COLL_VIEW)
        put_str(b, "viewQuery", c->view_query ? c->view_query : "", &first);
    if (c->nsearch > 0) {
        put_key(b, "search", &first);
        buf_putc(b, '[');
        for (size_t i = 0; i < c->nsearch; i++) {
            buf_puts(b, i ? "," : "");
            util_json_quote(b, c->search_fields[i], strlen(c->search_fields[i]));
        }
        buf_putc(b, ']');
    }
    if (c->partition_interval != PART_NONE) {
        const field_t *pf = collection_field_by_id(c, c->partition_field_id);
        put_key(b, "partition", &first);
        buf_puts(b, "{\"field\":");
        util_json_quote(b, pf ? pf->name : "", pf ? strlen(pf->name) : 0);
        buf_printf(b, ",\"interval\":\"%s\"}", part_interval_name(c->partition_interval));
    }
    if (c->reminders != NULL) {
        char *r = json_dumps(c->reminders, JSON_COMPACT);
        put_key(b, "reminders", &first);
        buf_puts(b, r ? r : "[]");
        free(r);
    }
    if (c->retention_days > 0) {
        const field_t *rf = collection_field_by_id(c, c->retention_field_id);
        put_key(b, "retention", &first);
        buf_puts(b, "{\"field\":");
        util_json_quote(b, rf ? rf->name : "", rf ? strlen(rf->name) : 0);
        buf_printf(b, ",\"days\":%d}", c->retention_days);
    }
    put_str(b, "created", c->created ? c->created : "", &first);
    put_str(b, "updated", c->updated ? c->updated : "", &first);
    buf_putc(b, '}');
}

/* ---- loading ---- */

collection_t *collection_from_stored(const char *text, bs_error_t *err)
{
    json_error_t jerr;
    json_t *o = json_loads(text, 0, &jerr);
    if (o == NULL) {
        bs_error_set(err, BS_ERR_INTERNAL, "A stored collection definition is not valid JSON.");
        return NULL;
    }
    collection_t *c = calloc(1, sizeof(*c));
    c->id = collection_jdup(json_object_get(o, "id"));
    c->name = collection_jdup(json_object_get(o, "name"));
    const char *t = json_string_value(json_object_get(o, "type"));
    c->type = t && strcmp(t, "auth") == 0 ? COLL_AUTH : t && strcmp(t, "view") == 0 ? COLL_VIEW : COLL_BASE;
    c->view_query = collection_jdup(json_object_get(o, "viewQuery"));
    json_t *srch = json_object_get(o, "search");
    c->search_fields = calloc(json_array_size(srch) + 1, sizeof(char *));
    for (size_t k = 0; k < json_array_size(srch); k++)
        if (json_is_string(json_array_get(srch, k)))
            c->search_fields[c->nsearch++] = strdup(json_string_value(json_array_get(srch, k)));
    c->system = collection_jbool(o, "system", 0);
    c->created = collection_jdup(json_object_get(o, "created"));
    c->updated = collection_jdup(json_object_get(o, "updated"));
    json_t *fs = json_object_get(o, "fields");
    c->fields = calloc(json_array_size(fs) + 1, sizeof(field_t));
    arena_t a;
    arena_init(&a, 1024);
    size_t i;
    json_t *jf;
    json_array_foreach(fs, i, jf)
    {
        field_t *f = &c->fields[c->nfields];
        if (collection_parse_field(jf, f, "fields", &a, err) != 0) {
            field_free(f);
            continue;
        }
        f->system = collection_jbool(jf, "system", 0);
        c->nfields++;
    }
    for (int r = 0; r < RULE__COUNT; r++)
        c->rules[r] = collection_jdup(json_object_get(o, collection_rule_keys[r]));
    json_t *idx = json_object_get(o, "indexes");
    c->indexes = calloc(json_array_size(idx) + 1, sizeof(char *));
    json_t *v;
    json_array_foreach(idx, i, v) c->indexes[c->nindexes++] = collection_jdup(v);
    json_t *pa = json_object_get(o, "passwordAuth"), *at = json_object_get(o, "authToken");
    c->password_auth = collection_jbool(pa, "enabled", 1);
    json_t *idf = json_object_get(pa, "identityFields");
    c->identity_fields = calloc(json_array_size(idf) + 1, sizeof(char *));
    json_array_foreach(idf, i, v) c->identity_fields[c->nidentity++] = collection_jdup(v);
    c->token_duration = json_integer_value(json_object_get(at, "duration"));
    c->token_secret = collection_jdup(json_object_get(at, "secret"));
    if (c->type == COLL_AUTH)
        c->mail_templates = mail_templates_from_stored(o);
    if (json_object_get(o, "reminders") != NULL) {
        bs_error_t rerr;
        bs_error_init(&rerr);
        /* Checked when it was saved; the schema is not at hand here, so it is taken
         * as stored. */
        json_t *r = json_object_get(o, "reminders");
        c->reminders = json_is_array(r) && json_array_size(r) > 0 ? json_incref(r) : NULL;
    }
    json_t *part = json_object_get(o, "partition");
    if (part != NULL) {
        const char *pfn = json_string_value(json_object_get(part, "field"));
        const field_t *pf = pfn ? collection_field(c, pfn) : NULL;
        int iv = part_interval_parse(json_string_value(json_object_get(part, "interval")) ?: "");
        if (pf != NULL && iv > 0) {
            c->partition_field_id = strdup(pf->id);
            c->partition_interval = (part_interval_t)iv;
        }
    }
    json_t *ret = json_object_get(o, "retention");
    if (ret != NULL) {
        const char *rfn = json_string_value(json_object_get(ret, "field"));
        const field_t *rf = rfn ? collection_field(c, rfn) : NULL;
        json_int_t days = json_integer_value(json_object_get(ret, "days"));
        if (rf != NULL && days > 0 && days <= 36500) {
            c->retention_field_id = strdup(rf->id);
            c->retention_days = (int)days;
        }
    }
    arena_free(&a);
    json_decref(o);
    if (err->code != BS_ERR_OK || c->id == NULL || c->name == NULL) {
        collection_free(c);
        if (err->code == BS_ERR_OK)
            bs_error_set(err, BS_ERR_INTERNAL, "A stored collection definition is incomplete.");
        return NULL;
    }
    return c;
}
