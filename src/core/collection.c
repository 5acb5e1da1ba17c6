/*
 * The JSON form of collection definitions: parsing a request body (a create, or a
 * PATCH on an existing definition), validating it, serializing it, and parsing the
 * stored form back. Index definitions are parsed and regenerated so that no user
 * SQL reaches the database.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "core/resolve.h"
#include "core/record_hooks.h"
#include "core/schema.h"
#include "files/fileinfo.h"
#include "mail/mail.h"

static const char *rule_keys[RULE__COUNT] = {"listRule",   "viewRule", "createRule", "updateRule",
                                             "deleteRule", "authRule", "manageRule"};

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
        put_str(b, rule_keys[i], c->rules[i], &first);
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

const field_t *collection_field_by_id(const collection_t *c, const char *id)
{
    for (size_t i = 0; id != NULL && i < c->nfields; i++)
        if (c->fields[i].id != NULL && strcmp(c->fields[i].id, id) == 0)
            return &c->fields[i];
    return NULL;
}

/* The "search" option: ["title", "body"], the text fields of a full-text index
 * (Basalt's; the list's ?search= uses it). Hidden fields stay out: a search is a
 * client's question and must not answer from text the client cannot read. */
static void parse_search(collection_t *c, const collection_t *base, const json_t *body, arena_t *arena,
                         bs_error_t *err)
{
    json_t *js = json_object_get(body, "search");
    if (js == NULL && base != NULL) {
        for (size_t i = 0; i < base->nsearch; i++)
            if (collection_field(c, base->search_fields[i]) == NULL) {
                bs_error_field(err, arena, "search", "validation_search_field",
                               "The field \"%s\" is in the search index: take it out of \"search\" first.",
                               base->search_fields[i]);
                return;
            }
        c->search_fields = calloc(base->nsearch + 1, sizeof(char *));
        for (size_t i = 0; i < base->nsearch; i++)
            c->search_fields[c->nsearch++] = strdup(base->search_fields[i]);
        return;
    }
    if (js == NULL || json_is_null(js) || (json_is_array(js) && json_array_size(js) == 0))
        return;
    if (!json_is_array(js) || json_array_size(js) > 8 || c->type == COLL_VIEW) {
        bs_error_field(err, arena, "search", "validation_invalid_search",
                       c->type == COLL_VIEW
                           ? "A view collection has no search index: index the collection it reads."
                           : "\"search\" must be a list of at most 8 text field names.");
        return;
    }
    c->search_fields = calloc(json_array_size(js) + 1, sizeof(char *));
    size_t i;
    json_t *v;
    json_array_foreach(js, i, v)
    {
        const field_t *f = json_is_string(v) ? collection_field(c, json_string_value(v)) : NULL;
        int texty =
            f != NULL && (f->type == FIELD_TEXT || f->type == FIELD_EDITOR || f->type == FIELD_EMAIL ||
                          f->type == FIELD_URL || (f->type == FIELD_SELECT && !field_is_multi(f)));
        if (!texty || f->hidden || strcmp(f->name, "tokenKey") == 0) {
            bs_error_field(
                err, arena, "search", "validation_invalid_search",
                "\"search\" names text fields of the collection that are not hidden (%s is not one).",
                json_is_string(v) ? json_string_value(v) : "an entry");
            return;
        }
        for (size_t k = 0; k < c->nsearch; k++)
            if (strcmp(c->search_fields[k], f->name) == 0) {
                bs_error_field(err, arena, "search", "validation_invalid_search", "\"%s\" is listed twice.",
                               f->name);
                return;
            }
        c->search_fields[c->nsearch++] = strdup(f->name);
    }
}

/* The "partition" option: {"field": <date or autodate field>, "interval":
 * "month"|"quarter"|"year"}, set when the collection is created and kept after. */
static void parse_partition(collection_t *c, const collection_t *base, const json_t *body, arena_t *arena,
                            bs_error_t *err)
{
    json_t *jp = json_object_get(body, "partition");
    if (base != NULL) {
        c->partition_interval = base->partition_interval;
        c->partition_field_id = base->partition_field_id ? strdup(base->partition_field_id) : NULL;
        const field_t *now = collection_field_by_id(c, c->partition_field_id);
        if (c->partition_interval != PART_NONE && now == NULL)
            bs_error_field(err, arena, "fields", "validation_partition_field",
                           "The field the collection is partitioned by cannot be removed.");
        /* Sent back unchanged (the SDK sends the whole definition): fine; changed: no. */
        if (jp != NULL) {
            const char *f = json_string_value(json_object_get(jp, "field"));
            const char *iv = json_string_value(json_object_get(jp, "interval"));
            int same = c->partition_interval == PART_NONE
                           ? json_is_null(jp)
                           : (now != NULL && f != NULL && iv != NULL && strcmp(f, now->name) == 0 &&
                              part_interval_parse(iv) == (int)c->partition_interval);
            if (!same)
                bs_error_field(
                    err, arena, "partition", "validation_partition_change",
                    "The partitioning of a collection is set when it is created and cannot change; "
                    "create a new collection and copy the records.");
        }
        return;
    }
    if (jp == NULL || json_is_null(jp))
        return;
    const char *f = json_string_value(json_object_get(jp, "field"));
    const char *iv = json_string_value(json_object_get(jp, "interval"));
    const field_t *pf = f ? collection_field(c, f) : NULL;
    int interval = iv ? part_interval_parse(iv) : -1;
    if (!json_is_object(jp) || pf == NULL || (pf->type != FIELD_DATE && pf->type != FIELD_AUTODATE)) {
        bs_error_field(err, arena, "partition", "validation_invalid_partition",
                       "\"partition.field\" must name a date or autodate field of the collection.");
        return;
    }
    if (interval < 0) {
        bs_error_field(err, arena, "partition", "validation_invalid_partition",
                       "\"partition.interval\" must be \"month\", \"quarter\" or \"year\".");
        return;
    }
    if (c->type != COLL_BASE) {
        bs_error_field(err, arena, "partition", "validation_invalid_partition",
                       "Only base collections can be partitioned.");
        return;
    }
    c->partition_field_id = strdup(pf->id);
    c->partition_interval = (part_interval_t)interval;
}

/* The "retention" option: {"field": <date or autodate field>, "days": 1..36500}, or
 * null for none. Absent in a PATCH: kept (following a renamed field by its id). */
static void parse_retention(collection_t *c, const collection_t *base, const json_t *body, arena_t *arena,
                            bs_error_t *err)
{
    json_t *jr = json_object_get(body, "retention");
    if (jr == NULL) {
        if (base != NULL && base->retention_days > 0 && collection_field_by_id(c, base->retention_field_id)) {
            c->retention_field_id = strdup(base->retention_field_id);
            c->retention_days = base->retention_days;
        } else if (base != NULL && base->retention_days > 0) {
            bs_error_field(
                err, arena, "fields", "validation_retention_field",
                "The field the retention option reads cannot be removed; set \"retention\" to null "
                "first.");
        }
        return;
    }
    if (json_is_null(jr))
        return;
    if (c->type == COLL_VIEW) {
        bs_error_field(err, arena, "retention", "validation_invalid_retention",
                       "A view holds no records of its own: set retention on the collections it reads.");
        return;
    }
    const char *f = json_string_value(json_object_get(jr, "field"));
    const field_t *rf = f ? collection_field(c, f) : NULL;
    json_t *jd = json_object_get(jr, "days");
    if (!json_is_object(jr) || rf == NULL || (rf->type != FIELD_DATE && rf->type != FIELD_AUTODATE)) {
        bs_error_field(err, arena, "retention", "validation_invalid_retention",
                       "\"retention.field\" must name a date or autodate field of the collection.");
        return;
    }
    if (!json_is_integer(jd) || json_integer_value(jd) < 1 || json_integer_value(jd) > 36500) {
        bs_error_field(err, arena, "retention", "validation_invalid_retention",
                       "\"retention.days\" must be a whole number of days from 1 to 36500.");
        return;
    }
    c->retention_field_id = strdup(rf->id);
    c->retention_days = (int)json_integer_value(jd);
}

/* ---- parsing definitions ---- */

static int valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || isdigit((unsigned char)s[0]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

char *collection_random_id(const char *prefix)
{
    unsigned char r[10];
    util_random_bytes(r, sizeof(r));
    char buf[64];
    int n = snprintf(buf, sizeof(buf), "%s", prefix);
    for (int i = 0; i < 10 && n < 63; i++)
        buf[n++] = (char)('0' + r[i] % 10);
    buf[n] = '\0';
    return strdup(buf);
}

static char *random_secret(void)
{
    char *s = malloc(51);
    if (s == NULL)
        return NULL;
    char id[UTIL_ID_LEN + 1];
    for (int i = 0; i < 50; i += UTIL_ID_LEN) {
        util_random_id(id);
        memcpy(s + i, id, (size_t)(50 - i < UTIL_ID_LEN ? 50 - i : UTIL_ID_LEN));
    }
    s[50] = '\0';
    return s;
}

static char *jdup(const json_t *v)
{
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

static int jbool(const json_t *o, const char *k, int def)
{
    json_t *v = json_object_get(o, k);
    return v == NULL || json_is_null(v) ? def : json_is_true(v);
}

/* Known keys of a field object; others go to `extra`. */
static const char *field_keys[] = {
    "id",        "name",       "type",         "required",      "hidden",    "presentable",
    "system",    "min",        "max",          "pattern",       "onlyInt",   "values",
    "maxSelect", "minSelect",  "collectionId", "cascadeDelete", "onCreate",  "onUpdate",
    "maxSize",   "primaryKey", "mimeTypes",    "thumbs",        "protected", NULL};

static int is_known_field_key(const char *k)
{
    for (int i = 0; field_keys[i]; i++)
        if (strcmp(field_keys[i], k) == 0)
            return 1;
    return 0;
}

#define FERR(code, ...) bs_error_field(err, arena, path, code, __VA_ARGS__)

/* A list option of strings (mimeTypes, thumbs): NULL when absent or empty; each item
 * checked by ok (a NULL ok accepts any short printable string). */
static int string_list(const json_t *v, json_t **out, int (*ok)(const char *), const char *what,
                       const char *nm, const char *path, arena_t *arena, bs_error_t *err)
{
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_array(v) || json_array_size(v) > 100) {
        FERR("validation_invalid_value", "Field \"%s\": \"%s\" must be a list of at most 100 strings.", nm,
             what);
        return -1;
    }
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        const char *s = json_string_value(x);
        int good = s != NULL && json_string_length(x) > 0 && json_string_length(x) < 128 &&
                   strlen(s) == json_string_length(x);
        for (const char *p = s; good && *p; p++)
            if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 127)
                good = 0;
        if (!good || (ok != NULL && !ok(s))) {
            FERR("validation_invalid_value", "Field \"%s\": \"%s\" holds an invalid value \"%s\".", nm, what,
                 s ? s : "");
            return -1;
        }
    }
    if (json_array_size(v) > 0)
        *out = json_deep_copy(v);
    return 0;
}

static int thumb_ok(const char *s)
{
    files_thumb_t t;
    return files_thumb_parse(s, strlen(s), &t) == 0;
}

static int parse_file_options(const json_t *o, field_t *f, const char *path, arena_t *arena, bs_error_t *err)
{
    const char *nm = f->name;
    json_t *ms = json_object_get(o, "maxSelect"), *sz = json_object_get(o, "maxSize");
    f->max_select = json_is_integer(ms) ? (int)json_integer_value(ms) : 1;
    if (f->max_select < 1)
        f->max_select = 1;
    if (f->max_select > FILES_MAX_SELECT) {
        FERR("validation_max_less_equal_than", "Field \"%s\": maxSelect must be at most %d.", nm,
             FILES_MAX_SELECT);
        return -1;
    }
    f->max_size = json_is_integer(sz) ? json_integer_value(sz) : 0;
    if (f->max_size < 0 || f->max_size > ((int64_t)1 << 53) - 1) {
        FERR("validation_invalid_value", "Field \"%s\": maxSize must be between 0 and 2^53-1 bytes.", nm);
        return -1;
    }
    f->protected_files = jbool(o, "protected", 0);
    if (string_list(json_object_get(o, "mimeTypes"), &f->mime_types, NULL, "mimeTypes", nm, path, arena,
                    err) != 0 ||
        string_list(json_object_get(o, "thumbs"), &f->thumbs, thumb_ok, "thumbs", nm, path, arena, err) != 0)
        return -1;
    return 0;
}

static int parse_field(const json_t *o, field_t *f, const char *path, arena_t *arena, bs_error_t *err)
{
    memset(f, 0, sizeof(*f));
    if (!json_is_object(o)) {
        FERR("validation_invalid_field", "Each field must be an object.");
        return -1;
    }
    json_t *name = json_object_get(o, "name"), *type = json_object_get(o, "type");
    if (!json_is_string(name) || !valid_name(json_string_value(name), 100)) {
        FERR("validation_invalid_name",
             "A field name must be 1-100 letters, digits or underscores and not start with a digit.");
        return -1;
    }
    int t = json_is_string(type) ? field_type_parse(json_string_value(type)) : -1;
    if (t < 0) {
        FERR("validation_invalid_type", "Unknown field type for \"%s\".", json_string_value(name));
        return -1;
    }
    const char *nm = json_string_value(name);
    static const char *reserved[] = {"collectionId", "collectionName", "expand", NULL};
    for (int i = 0; reserved[i]; i++)
        if (strcasecmp(nm, reserved[i]) == 0) {
            FERR("validation_reserved_name", "\"%s\" is a reserved name.", nm);
            return -1;
        }
    f->type = (field_type_t)t;
    f->name = strdup(nm);
    f->id = jdup(json_object_get(o, "id"));
    f->required = jbool(o, "required", 0);
    f->hidden = jbool(o, "hidden", 0);
    f->presentable = jbool(o, "presentable", 0);
    f->primary_key = jbool(o, "primaryKey", 0);
    json_t *min = json_object_get(o, "min"), *max = json_object_get(o, "max");
    switch (f->type) {
    case FIELD_TEXT:
    case FIELD_PASSWORD: {
        f->min = json_is_number(min) ? json_number_value(min) : 0;
        f->max = json_is_number(max) ? json_number_value(max) : 0;
        if (f->min < 0 || f->max < 0 || (f->max > 0 && f->min > f->max)) {
            FERR("validation_invalid_range", "Field \"%s\": min and max must be >= 0 and min <= max.", nm);
            return -1;
        }
        json_t *pat = json_object_get(o, "pattern");
        if (json_is_string(pat) && json_string_length(pat) > 0) {
            f->pattern = strdup(json_string_value(pat));
            f->re = malloc(sizeof(regex_t));
            if (f->re == NULL || regcomp(f->re, f->pattern, REG_EXTENDED | REG_NOSUB) != 0) {
                free(f->re);
                f->re = NULL;
                FERR("validation_invalid_pattern",
                     "Field \"%s\": the pattern is not a valid regular expression.", nm);
                return -1;
            }
        }
        break;
    }
    case FIELD_EDITOR:
        f->max = json_is_number(json_object_get(o, "maxSize"))
                     ? json_number_value(json_object_get(o, "maxSize"))
                     : 0;
        break;
    case FIELD_NUMBER:
        if (json_is_number(min)) {
            f->has_min = 1;
            f->min = json_number_value(min);
        }
        if (json_is_number(max)) {
            f->has_max = 1;
            f->max = json_number_value(max);
        }
        if (f->has_min && f->has_max && f->min > f->max) {
            FERR("validation_invalid_range", "Field \"%s\": min must be <= max.", nm);
            return -1;
        }
        f->only_int = jbool(o, "onlyInt", 0);
        break;
    case FIELD_DATE: {
        int64_t ms;
        if (json_is_string(min) && json_string_length(min) > 0) {
            if (util_parse_time(json_string_value(min), json_string_length(min), &ms) != 0) {
                FERR("validation_invalid_date", "Field \"%s\": min is not a date.", nm);
                return -1;
            }
            f->min_date = malloc(UTIL_TIME_LEN + 1);
            util_format_time(ms, f->min_date);
        }
        if (json_is_string(max) && json_string_length(max) > 0) {
            if (util_parse_time(json_string_value(max), json_string_length(max), &ms) != 0) {
                FERR("validation_invalid_date", "Field \"%s\": max is not a date.", nm);
                return -1;
            }
            f->max_date = malloc(UTIL_TIME_LEN + 1);
            util_format_time(ms, f->max_date);
        }
        break;
    }
    case FIELD_AUTODATE:
        f->on_create = jbool(o, "onCreate", 1);
        f->on_update = jbool(o, "onUpdate", 0);
        break;
    case FIELD_SELECT: {
        json_t *vals = json_object_get(o, "values");
        if (!json_is_array(vals) || json_array_size(vals) == 0) {
            FERR("validation_required", "Field \"%s\": a select field needs a non-empty \"values\" list.",
                 nm);
            return -1;
        }
        f->values = calloc(json_array_size(vals), sizeof(char *));
        size_t i;
        json_t *v;
        json_array_foreach(vals, i, v)
        {
            if (!json_is_string(v) || json_string_length(v) == 0) {
                FERR("validation_invalid_value", "Field \"%s\": select values must be non-empty strings.",
                     nm);
                return -1;
            }
            f->values[f->nvalues++] = strdup(json_string_value(v));
        }
        json_t *ms = json_object_get(o, "maxSelect");
        f->max_select = json_is_integer(ms) ? (int)json_integer_value(ms) : 1;
        if (f->max_select < 1)
            f->max_select = 1;
        break;
    }
    case FIELD_RELATION: {
        f->collection_id = jdup(json_object_get(o, "collectionId"));
        if (f->collection_id == NULL) {
            FERR("validation_required", "Field \"%s\": a relation field needs \"collectionId\".", nm);
            return -1;
        }
        json_t *ms = json_object_get(o, "maxSelect"), *mn = json_object_get(o, "minSelect");
        f->max_select = json_is_integer(ms) ? (int)json_integer_value(ms) : 1;
        if (f->max_select < 1)
            f->max_select = 1;
        f->min_select = json_is_integer(mn) ? (int)json_integer_value(mn) : 0;
        f->cascade_delete = jbool(o, "cascadeDelete", 0);
        break;
    }
    case FIELD_JSON: {
        json_t *ms = json_object_get(o, "maxSize");
        f->max_size = json_is_integer(ms) ? json_integer_value(ms) : 0;
        break;
    }
    case FIELD_FILE:
        if (parse_file_options(o, f, path, arena, err) != 0)
            return -1;
        break;
    default:
        break;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)o, k, v)
    {
        if (is_known_field_key(k))
            continue;
        if (f->extra == NULL)
            f->extra = json_object();
        json_object_set(f->extra, k, v);
    }
    return 0;
}

static void add_system_field(collection_t *c, const char *name, field_type_t type, int hidden)
{
    field_t *f = &c->fields[c->nfields++];
    memset(f, 0, sizeof(*f));
    f->name = strdup(name);
    f->type = type;
    f->system = 1;
    f->hidden = hidden;
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "%s", field_type_name(type));
    f->id = collection_random_id(prefix);
    if (strcmp(name, "id") == 0) {
        f->primary_key = 1;
        f->required = 1;
        f->min = 1;
        f->max = 100;
        f->pattern = strdup("^[a-zA-Z0-9_-]+$");
        f->re = malloc(sizeof(regex_t));
        regcomp(f->re, f->pattern, REG_EXTENDED | REG_NOSUB);
    } else if (type == FIELD_PASSWORD) {
        f->required = 1;
        f->min = 8;
        f->max = 71;
    } else if (type == FIELD_AUTODATE) {
        f->on_create = 1;
        f->on_update = strcmp(name, "updated") == 0;
    } else if (strcmp(name, "tokenKey") == 0) {
        f->required = 1;
        f->min = 30;
        f->max = 60;
    } else if (strcmp(name, "email") == 0) {
        f->required = 1;
    }
}

/* Names of the system fields each collection type has, in order. */
static const struct {
    const char *name;
    field_type_t type;
    int hidden;
    int auth_only;
} system_fields[] = {
    {"id", FIELD_TEXT, 0, 0},          {"password", FIELD_PASSWORD, 1, 1},    {"tokenKey", FIELD_TEXT, 1, 1},
    {"email", FIELD_EMAIL, 0, 1},      {"emailVisibility", FIELD_BOOL, 0, 1}, {"verified", FIELD_BOOL, 0, 1},
    {"created", FIELD_AUTODATE, 0, 1}, {"updated", FIELD_AUTODATE, 0, 1},
};

static int is_system_name(const char *name, coll_type_t type)
{
    for (size_t i = 0; i < sizeof(system_fields) / sizeof(system_fields[0]); i++)
        if (strcmp(system_fields[i].name, name) == 0 && (!system_fields[i].auth_only || type == COLL_AUTH))
            return 1;
    return 0;
}

int field_copy(field_t *dst, const field_t *src)
{
    *dst = *src;
    dst->id = src->id ? strdup(src->id) : NULL;
    dst->name = strdup(src->name);
    dst->pattern = src->pattern ? strdup(src->pattern) : NULL;
    dst->min_date = src->min_date ? strdup(src->min_date) : NULL;
    dst->max_date = src->max_date ? strdup(src->max_date) : NULL;
    dst->collection_id = src->collection_id ? strdup(src->collection_id) : NULL;
    dst->extra = src->extra ? json_deep_copy(src->extra) : NULL;
    dst->mime_types = src->mime_types ? json_deep_copy(src->mime_types) : NULL;
    dst->thumbs = src->thumbs ? json_deep_copy(src->thumbs) : NULL;
    dst->re = NULL;
    if (src->pattern) {
        dst->re = malloc(sizeof(regex_t));
        if (dst->re == NULL || regcomp(dst->re, src->pattern, REG_EXTENDED | REG_NOSUB) != 0) {
            free(dst->re);
            dst->re = NULL;
        }
    }
    dst->values = NULL;
    dst->nvalues = 0;
    if (src->nvalues) {
        dst->values = calloc(src->nvalues, sizeof(char *));
        for (size_t i = 0; i < src->nvalues; i++)
            dst->values[dst->nvalues++] = strdup(src->values[i]);
    }
    return 0;
}

/* Parses "CREATE [UNIQUE] INDEX [IF NOT EXISTS] name ON table (col [COLLATE NOCASE]
 * [ASC|DESC], ...) [WHERE col != '']" into a normalized statement on c. Returns an
 * owned string or NULL (err filled). User text never reaches the database as is. */
typedef struct {
    const char *p;
} lex_t;

static void skip_ws(lex_t *l)
{
    while (*l->p && isspace((unsigned char)*l->p))
        l->p++;
}

static int kw(lex_t *l, const char *word)
{
    skip_ws(l);
    size_t n = strlen(word);
    if (strncasecmp(l->p, word, n) == 0 && !(isalnum((unsigned char)l->p[n]) || l->p[n] == '_')) {
        l->p += n;
        return 1;
    }
    return 0;
}

static int ident(lex_t *l, char *out, size_t cap)
{
    skip_ws(l);
    char close = 0;
    if (*l->p == '`' || *l->p == '"' || *l->p == '[') {
        close = *l->p == '[' ? ']' : *l->p;
        l->p++;
    }
    size_t n = 0;
    while (*l->p && (isalnum((unsigned char)*l->p) || *l->p == '_')) {
        if (n + 1 >= cap)
            return -1;
        out[n++] = *l->p++;
    }
    out[n] = '\0';
    if (close) {
        if (*l->p != close)
            return -1;
        l->p++;
    }
    return n > 0 ? 0 : -1;
}

static char *parse_index(const collection_t *c, const char *def, bs_error_t *err, arena_t *arena,
                         const char *path)
{
    lex_t l = {def};
    char name[128], table[128], col[128];
    buf_t out;
    buf_init(&out, NULL);
    if (!kw(&l, "CREATE"))
        goto bad;
    int unique = kw(&l, "UNIQUE");
    if (!kw(&l, "INDEX"))
        goto bad;
    if (kw(&l, "IF")) {
        if (!kw(&l, "NOT") || !kw(&l, "EXISTS"))
            goto bad;
    }
    if (ident(&l, name, sizeof(name)) != 0 || !kw(&l, "ON") || ident(&l, table, sizeof(table)) != 0)
        goto bad;
    skip_ws(&l);
    if (*l.p++ != '(')
        goto bad;
    buf_printf(&out, "CREATE %sINDEX ", unique ? "UNIQUE " : "");
    sql_ident(&out, name);
    buf_puts(&out, " ON ");
    sql_ident(&out, c->name);
    buf_puts(&out, " (");
    for (int i = 0;; i++) {
        if (ident(&l, col, sizeof(col)) != 0)
            goto bad;
        if (collection_field(c, col) == NULL) {
            bs_error_field(err, arena, path, "validation_invalid_index",
                           "The index refers to an unknown field \"%s\".", col);
            buf_free(&out);
            return NULL;
        }
        if (i)
            buf_puts(&out, ", ");
        sql_ident(&out, col);
        if (kw(&l, "COLLATE")) {
            if (!kw(&l, "NOCASE"))
                goto bad;
            buf_puts(&out, " COLLATE NOCASE");
        }
        if (kw(&l, "ASC"))
            buf_puts(&out, " ASC");
        else if (kw(&l, "DESC"))
            buf_puts(&out, " DESC");
        skip_ws(&l);
        if (*l.p == ',') {
            l.p++;
            continue;
        }
        if (*l.p == ')') {
            l.p++;
            break;
        }
        goto bad;
    }
    buf_putc(&out, ')');
    if (kw(&l, "WHERE")) {
        if (ident(&l, col, sizeof(col)) != 0 || collection_field(c, col) == NULL)
            goto bad;
        skip_ws(&l);
        if (strncmp(l.p, "!= ''", 5) == 0 || strncmp(l.p, "<> ''", 5) == 0) {
            l.p += 5;
            buf_puts(&out, " WHERE ");
            sql_ident(&out, col);
            buf_puts(&out, " != ''");
        } else if (kw(&l, "IS")) {
            if (!kw(&l, "NOT") || !kw(&l, "NULL"))
                goto bad;
            buf_puts(&out, " WHERE ");
            sql_ident(&out, col);
            buf_puts(&out, " IS NOT NULL");
        } else {
            goto bad;
        }
    }
    skip_ws(&l);
    if (*l.p == ';')
        l.p++;
    skip_ws(&l);
    if (*l.p != '\0' || out.oom)
        goto bad;
    return buf_detach(&out);
bad:
    buf_free(&out);
    bs_error_field(
        err, arena, path, "validation_invalid_index",
        "Invalid index. Expected: CREATE [UNIQUE] INDEX name ON table (field [COLLATE NOCASE] [ASC|DESC], "
        "...) [WHERE field != ''].");
    return NULL;
}

int collection_index_name(const char *stmt, char *out, size_t cap)
{
    const char *q = strchr(stmt, '"');
    if (q == NULL)
        return -1;
    const char *e = strchr(q + 1, '"');
    if (e == NULL || (size_t)(e - q - 1) >= cap)
        return -1;
    memcpy(out, q + 1, (size_t)(e - q - 1));
    out[e - q - 1] = '\0';
    return 0;
}

collection_t *collection_from_json(const json_t *body, const collection_t *base, const schema_t *schema,
                                   arena_t *arena, bs_error_t *err)
{
    if (!json_is_object(body)) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The request body must be a JSON object.");
        return NULL;
    }
    collection_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return NULL;
    }
    json_t *jname = json_object_get(body, "name"), *jtype = json_object_get(body, "type");
    /* identity and type */
    if (base != NULL) {
        c->id = strdup(base->id);
        c->type = base->type;
        c->system = base->system;
        c->created = base->created ? strdup(base->created) : NULL;
        if (jtype != NULL && json_is_string(jtype) &&
            strcmp(json_string_value(jtype), base->type == COLL_AUTH   ? "auth"
                                             : base->type == COLL_VIEW ? "view"
                                                                       : "base") != 0)
            bs_error_field(err, arena, "type", "validation_type_change",
                           "The type of a collection cannot change.");
    } else {
        json_t *jid = json_object_get(body, "id");
        if (json_is_string(jid) && json_string_length(jid) > 0) {
            if (!valid_name(json_string_value(jid), 100) &&
                !util_valid_id(json_string_value(jid), json_string_length(jid)))
                bs_error_field(err, arena, "id", "validation_invalid_id",
                               "The id must be letters, digits or _.");
            else if (schema_find(schema, json_string_value(jid)) != NULL)
                bs_error_field(err, arena, "id", "validation_not_unique", "The id is already in use.");
            c->id = strdup(json_string_value(jid));
        } else {
            c->id = collection_random_id("pbc_");
        }
        const char *ts = jtype == NULL ? "base" : json_is_string(jtype) ? json_string_value(jtype) : "";
        if (strcmp(ts, "base") == 0)
            c->type = COLL_BASE;
        else if (strcmp(ts, "auth") == 0)
            c->type = COLL_AUTH;
        else if (strcmp(ts, "view") == 0)
            c->type = COLL_VIEW;
        else
            bs_error_field(err, arena, "type", "validation_invalid_type",
                           "The type must be \"base\", \"auth\" or \"view\".");
    }
    /* name */
    if (jname != NULL || base == NULL) {
        if (!json_is_string(jname) || !valid_name(json_string_value(jname), 55)) {
            bs_error_field(
                err, arena, "name", "validation_invalid_name",
                "The name must be 1-55 letters, digits or underscores and not start with a digit.");
        } else {
            const char *nm = json_string_value(jname);
            const collection_t *other = schema_find(schema, nm);
            if (other != NULL && (base == NULL || strcmp(other->id, base->id) != 0))
                bs_error_field(err, arena, "name", "validation_not_unique",
                               "A collection with this name exists.");
            else if (nm[0] == '_' && (base == NULL ? strcmp(nm, "_superusers") != 0 : !base->system))
                bs_error_field(err, arena, "name", "validation_invalid_name",
                               "Names starting with _ are reserved.");
            else if (base != NULL && base->system && strcmp(nm, base->name) != 0)
                bs_error_field(err, arena, "name", "validation_system",
                               "A system collection cannot be renamed.");
            else if (strncasecmp(nm, "sqlite_", 7) == 0)
                bs_error_field(err, arena, "name", "validation_invalid_name",
                               "Names starting with sqlite_ are reserved.");
            c->name = strdup(nm);
        }
    } else {
        c->name = strdup(base->name);
    }
    /* A refused name is an error already; what follows (indexes name the table)
     * still needs one. */
    if (c->name == NULL)
        c->name = strdup(base ? base->name : "_");
    /* A view's query; its fields come from the query (view_infer, in the write job). */
    if (c->type == COLL_VIEW) {
        json_t *jq = json_object_get(body, "viewQuery");
        const char *q = json_is_string(jq) ? json_string_value(jq) : base ? base->view_query : NULL;
        if (jq != NULL && !json_is_string(jq))
            bs_error_field(err, arena, "viewQuery", "validation_invalid", "\"viewQuery\" must be a string.");
        else if (q == NULL || q[0] == '\0')
            bs_error_field(err, arena, "viewQuery", "validation_required",
                           "A view collection needs a \"viewQuery\": one SELECT statement.");
        else if (view_check_query(q, arena, err) == 0)
            c->view_query = strdup(q);
    }
    /* fields */
    json_t *jfields = c->type == COLL_VIEW ? NULL : json_object_get(body, "fields");
    if (jfields != NULL && !json_is_array(jfields)) {
        bs_error_field(err, arena, "fields", "validation_invalid", "\"fields\" must be an array.");
        jfields = NULL;
    }
    size_t cap = (jfields ? json_array_size(jfields) : 0) + (base ? base->nfields : 0) + 16;
    c->fields = calloc(cap, sizeof(field_t));
    if (jfields == NULL && base != NULL) {
        for (size_t i = 0; i < base->nfields; i++)
            field_copy(&c->fields[c->nfields++], &base->fields[i]);
    } else {
        /* System fields first, carried over from base so their ids stay stable. */
        for (size_t i = 0; i < sizeof(system_fields) / sizeof(system_fields[0]); i++) {
            if (system_fields[i].auth_only && c->type != COLL_AUTH)
                continue;
            const field_t *old = base ? collection_field(base, system_fields[i].name) : NULL;
            if (old != NULL)
                field_copy(&c->fields[c->nfields++], old);
            else
                add_system_field(c, system_fields[i].name, system_fields[i].type, system_fields[i].hidden);
        }
        size_t i;
        json_t *jf;
        json_array_foreach(jfields, i, jf)
        {
            char fpath[32];
            snprintf(fpath, sizeof(fpath), "fields.%zu", i);
            field_t f;
            if (parse_field(jf, &f, fpath, arena, err) != 0) {
                field_free(&f);
                continue;
            }
            if (is_system_name(f.name, c->type)) {
                /* A system field may appear in the list (the SDK sends the whole
                 * definition back); only its visibility flags can change. */
                field_t *sys = (field_t *)collection_field(c, f.name);
                if (sys != NULL && sys->type == f.type) {
                    /* A new collection keeps the ids its definition gives its system
                     * fields, so a definition replayed elsewhere (a migration file,
                     * an import) gives the same schema. */
                    if (base == NULL && f.id != NULL && f.id[0] != '\0') {
                        free(sys->id);
                        sys->id = strdup(f.id);
                    }
                    if (strcmp(f.name, "id") != 0 && f.type != FIELD_PASSWORD &&
                        strcmp(f.name, "tokenKey") != 0)
                        sys->hidden = f.hidden;
                    sys->presentable = f.presentable;
                } else {
                    bs_error_field(err, arena, fpath, "validation_system",
                                   "\"%s\" is a system field of another type.", f.name);
                }
                field_free(&f);
                continue;
            }
            if (collection_field(c, f.name) != NULL) {
                bs_error_field(err, arena, fpath, "validation_duplicate", "Duplicate field name \"%s\".",
                               f.name);
                field_free(&f);
                continue;
            }
            const field_t *old = NULL;
            if (base != NULL && f.id != NULL)
                for (size_t k = 0; k < base->nfields; k++)
                    if (base->fields[k].id && strcmp(base->fields[k].id, f.id) == 0)
                        old = &base->fields[k];
            if (base != NULL && old == NULL && f.id == NULL)
                old = collection_field(base, f.name); /* matched by name when no id was sent */
            if (old != NULL && old->system) {
                bs_error_field(err, arena, fpath, "validation_system",
                               "System field \"%s\" cannot be renamed.", old->name);
                field_free(&f);
                continue;
            }
            if (old != NULL && old->type != f.type) {
                bs_error_field(err, arena, fpath, "validation_type_change",
                               "The type of field \"%s\" cannot change (%s to %s); add a new field instead.",
                               old->name, field_type_name(old->type), field_type_name(f.type));
                field_free(&f);
                continue;
            }
            if (old != NULL && f.id == NULL)
                f.id = strdup(old->id);
            if (f.id == NULL)
                f.id = collection_random_id(field_type_name(f.type));
            if (f.type == FIELD_RELATION) {
                const collection_t *target = schema_find(schema, f.collection_id);
                if (target == NULL && strcmp(f.collection_id, c->id) != 0) {
                    bs_error_field(err, arena, fpath, "validation_missing_collection",
                                   "The relation's collectionId \"%s\" is not a collection.",
                                   f.collection_id);
                } else if (target != NULL) {
                    free(f.collection_id);
                    f.collection_id = strdup(target->id);
                }
            }
            c->fields[c->nfields++] = f;
        }
    }
    /* rules */
    for (int r = 0; r < RULE__COUNT; r++) {
        if (c->type != COLL_AUTH && r >= RULE_AUTH)
            continue;
        json_t *jr = json_object_get(body, rule_keys[r]);
        if (jr == NULL) {
            if (base != NULL && base->rules[r])
                c->rules[r] = strdup(base->rules[r]);
            else if (base == NULL && r == RULE_AUTH)
                c->rules[r] = strdup("");
            continue;
        }
        if (json_is_null(jr))
            continue;
        if (!json_is_string(jr)) {
            bs_error_field(err, arena, rule_keys[r], "validation_invalid_rule",
                           "A rule must be a string or null.");
            continue;
        }
        c->rules[r] = strdup(json_string_value(jr));
    }
    if (c->type == COLL_VIEW)
        for (int r = RULE_CREATE; r <= RULE_DELETE; r++)
            if (c->rules[r] != NULL)
                bs_error_field(
                    err, arena, rule_keys[r], "validation_view_rule",
                    "View collections are read-only: createRule, updateRule and deleteRule must be "
                    "null.");
    /* auth options */
    if (c->type == COLL_AUTH) {
        json_t *pa = json_object_get(body, "passwordAuth"), *at = json_object_get(body, "authToken");
        c->password_auth = base ? base->password_auth : 1;
        json_t *idf = pa ? json_object_get(pa, "identityFields") : NULL;
        if (pa && json_object_get(pa, "enabled"))
            c->password_auth = jbool(pa, "enabled", 1);
        if (json_is_array(idf)) {
            c->identity_fields = calloc(json_array_size(idf) + 1, sizeof(char *));
            size_t i;
            json_t *v;
            json_array_foreach(idf, i, v)
            {
                if (!json_is_string(v) || collection_field(c, json_string_value(v)) == NULL) {
                    bs_error_field(err, arena, "passwordAuth.identityFields", "validation_invalid",
                                   "Identity fields must name fields of the collection.");
                    break;
                }
                c->identity_fields[c->nidentity++] = strdup(json_string_value(v));
            }
        } else if (base != NULL && base->nidentity) {
            c->identity_fields = calloc(base->nidentity, sizeof(char *));
            for (size_t i = 0; i < base->nidentity; i++)
                c->identity_fields[c->nidentity++] = strdup(base->identity_fields[i]);
        } else {
            c->identity_fields = calloc(1, sizeof(char *));
            c->identity_fields[c->nidentity++] = strdup("email");
        }
        json_t *dur = at ? json_object_get(at, "duration") : NULL;
        c->token_duration = json_is_integer(dur) ? json_integer_value(dur)
                            : base               ? base->token_duration
                                                 : 604800;
        if (c->token_duration < 10 || c->token_duration > 31536000 * 10)
            bs_error_field(err, arena, "authToken.duration", "validation_invalid",
                           "The token duration must be between 10 seconds and 10 years.");
        json_t *sec = at ? json_object_get(at, "secret") : NULL;
        if (json_is_string(sec) && json_string_length(sec) >= 30)
            c->token_secret = strdup(json_string_value(sec));
        else if (base != NULL && base->token_secret)
            c->token_secret = strdup(base->token_secret);
        else
            c->token_secret = random_secret();
    }
    /* indexes (after fields, they refer to them) */
    json_t *jidx = json_object_get(body, "indexes");
    if (c->type == COLL_VIEW && json_array_size(jidx) > 0) {
        bs_error_field(err, arena, "indexes", "validation_view_indexes",
                       "A view collection has no indexes of its own: index the collections it reads.");
        jidx = NULL;
    }
    if (jidx != NULL && !json_is_array(jidx))
        bs_error_field(err, arena, "indexes", "validation_invalid",
                       "\"indexes\" must be an array of strings.");
    size_t nidx = json_is_array(jidx) ? json_array_size(jidx) : base ? base->nindexes : 0;
    c->indexes = calloc(nidx + 3, sizeof(char *));
    if (json_is_array(jidx)) {
        size_t i;
        json_t *v;
        json_array_foreach(jidx, i, v)
        {
            char ipath[32];
            snprintf(ipath, sizeof(ipath), "indexes.%zu", i);
            if (!json_is_string(v)) {
                bs_error_field(err, arena, ipath, "validation_invalid", "An index must be a string.");
                continue;
            }
            char *norm = parse_index(c, json_string_value(v), err, arena, ipath);
            if (norm != NULL)
                c->indexes[c->nindexes++] = norm;
        }
    } else if (base != NULL) {
        /* Re-normalize on the (maybe renamed) collection; drop indexes whose field is gone. */
        for (size_t i = 0; i < base->nindexes; i++) {
            bs_error_t ignored;
            bs_error_init(&ignored);
            char *norm = parse_index(c, base->indexes[i], &ignored, arena, "indexes");
            if (norm != NULL)
                c->indexes[c->nindexes++] = norm;
        }
    }
    if (c->type == COLL_AUTH) {
        /* Auth collections always have unique tokenKey and email indexes. */
        const char *need[2] = {"tokenKey", "email"};
        for (int k = 0; k < 2; k++) {
            char want[160];
            snprintf(want, sizeof(want), "CREATE UNIQUE INDEX \"idx_%s_%s\" ON \"%s\" (\"%s\")%s", need[k],
                     c->id, c->name, need[k], k == 1 ? " WHERE \"email\" != ''" : "");
            int have = 0;
            for (size_t i = 0; i < c->nindexes; i++)
                if (strcmp(c->indexes[i], want) == 0)
                    have = 1;
            if (!have)
                c->indexes[c->nindexes++] = strdup(want);
        }
    }
    for (size_t i = 0; i < c->nindexes; i++) {
        char ni[128], nj[128];
        for (size_t j = i + 1; j < c->nindexes; j++)
            if (collection_index_name(c->indexes[i], ni, sizeof(ni)) == 0 &&
                collection_index_name(c->indexes[j], nj, sizeof(nj)) == 0 && strcasecmp(ni, nj) == 0)
                bs_error_field(err, arena, "indexes", "validation_duplicate", "Duplicate index name \"%s\".",
                               ni);
        if (collection_index_name(c->indexes[i], ni, sizeof(ni)) == 0)
            for (size_t k = 0; k < schema->ncols; k++) {
                const collection_t *o = schema->cols[k];
                if (strcmp(o->id, c->id) == 0)
                    continue;
                for (size_t j = 0; j < o->nindexes; j++)
                    if (collection_index_name(o->indexes[j], nj, sizeof(nj)) == 0 && strcasecmp(ni, nj) == 0)
                        bs_error_field(err, arena, "indexes", "validation_not_unique",
                                       "Index name \"%s\" is used by collection \"%s\".", ni, o->name);
            }
    }
    parse_partition(c, base, body, arena, err);
    /* Reminders (record_hooks.h): a patch without the key keeps them. */
    json_t *rem = json_object_get(body, "reminders");
    if (rem == NULL && base != NULL && base->reminders != NULL)
        rem = base->reminders;
    if (err->code == BS_ERR_OK || rem != NULL)
        record_hooks_parse_reminders(c, rem, schema, &c->reminders, arena, err);
    if (c->type == COLL_AUTH)
        mail_templates_parse(c, body, base ? base->mail_templates : NULL, &c->mail_templates, arena, err);
    parse_retention(c, base, body, arena, err);
    parse_search(c, base, body, arena, err);
    if (c->partition_interval != PART_NONE)
        for (size_t i = 0; i < c->nindexes; i++)
            if (strncmp(c->indexes[i], "CREATE UNIQUE", 13) == 0)
                bs_error_field(err, arena, "indexes", "validation_partition_unique",
                               "A partitioned collection cannot have unique indexes (PostgreSQL can only "
                               "enforce uniqueness within one partition); the record id stays unique.");
    /* Rules compile against the new definition (a view's once its fields are known:
     * view_infer). */
    if (err->code == BS_ERR_OK && c->type != COLL_VIEW) {
        for (int r = 0; r < RULE__COUNT; r++) {
            if (c->rules[r] == NULL || c->rules[r][0] == '\0')
                continue;
            bs_error_t rerr;
            bs_error_init(&rerr);
            if (resolve_check_rule(schema, c, c->rules[r], arena, &rerr) != 0)
                bs_error_field(err, arena, rule_keys[r], "validation_invalid_rule", "%s", rerr.message);
        }
    }
    if (err->code != BS_ERR_OK) {
        collection_free(c);
        return NULL;
    }
    char ts[UTIL_TIME_LEN + 1];
    util_format_time(util_now_ms(), ts);
    if (c->created == NULL)
        c->created = strdup(ts);
    c->updated = strdup(ts);
    return c;
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
    c->id = jdup(json_object_get(o, "id"));
    c->name = jdup(json_object_get(o, "name"));
    const char *t = json_string_value(json_object_get(o, "type"));
    c->type = t && strcmp(t, "auth") == 0 ? COLL_AUTH : t && strcmp(t, "view") == 0 ? COLL_VIEW : COLL_BASE;
    c->view_query = jdup(json_object_get(o, "viewQuery"));
    json_t *srch = json_object_get(o, "search");
    c->search_fields = calloc(json_array_size(srch) + 1, sizeof(char *));
    for (size_t k = 0; k < json_array_size(srch); k++)
        if (json_is_string(json_array_get(srch, k)))
            c->search_fields[c->nsearch++] = strdup(json_string_value(json_array_get(srch, k)));
    c->system = jbool(o, "system", 0);
    c->created = jdup(json_object_get(o, "created"));
    c->updated = jdup(json_object_get(o, "updated"));
    json_t *fs = json_object_get(o, "fields");
    c->fields = calloc(json_array_size(fs) + 1, sizeof(field_t));
    arena_t a;
    arena_init(&a, 1024);
    size_t i;
    json_t *jf;
    json_array_foreach(fs, i, jf)
    {
        field_t *f = &c->fields[c->nfields];
        if (parse_field(jf, f, "fields", &a, err) != 0) {
            field_free(f);
            continue;
        }
        f->system = jbool(jf, "system", 0);
        c->nfields++;
    }
    for (int r = 0; r < RULE__COUNT; r++)
        c->rules[r] = jdup(json_object_get(o, rule_keys[r]));
    json_t *idx = json_object_get(o, "indexes");
    c->indexes = calloc(json_array_size(idx) + 1, sizeof(char *));
    json_t *v;
    json_array_foreach(idx, i, v) c->indexes[c->nindexes++] = jdup(v);
    json_t *pa = json_object_get(o, "passwordAuth"), *at = json_object_get(o, "authToken");
    c->password_auth = jbool(pa, "enabled", 1);
    json_t *idf = json_object_get(pa, "identityFields");
    c->identity_fields = calloc(json_array_size(idf) + 1, sizeof(char *));
    json_array_foreach(idf, i, v) c->identity_fields[c->nidentity++] = jdup(v);
    c->token_duration = json_integer_value(json_object_get(at, "duration"));
    c->token_secret = jdup(json_object_get(at, "secret"));
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
