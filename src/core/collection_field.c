/*
 * One field of a collection definition (collection_int.h): parsing a field object of
 * a request body or of the stored form, its type's options checked (ranges, patterns,
 * select values, relations, file limits), unknown keys kept in `extra`; and
 * field_copy (schema.h).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "core/collection_int.h"
#include "core/schema.h"
#include "files/fileinfo.h"

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
    f->protected_files = collection_jbool(o, "protected", 0);
    if (string_list(json_object_get(o, "mimeTypes"), &f->mime_types, NULL, "mimeTypes", nm, path, arena,
                    err) != 0 ||
        string_list(json_object_get(o, "thumbs"), &f->thumbs, thumb_ok, "thumbs", nm, path, arena, err) != 0)
        return -1;
    return 0;
}

int collection_parse_field(const json_t *o, field_t *f, const char *path, arena_t *arena, bs_error_t *err)
{
    memset(f, 0, sizeof(*f));
    if (!json_is_object(o)) {
        FERR("validation_invalid_field", "Each field must be an object.");
        return -1;
    }
    json_t *name = json_object_get(o, "name"), *type = json_object_get(o, "type");
    if (!json_is_string(name) || !collection_valid_name(json_string_value(name), 100)) {
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
    f->id = collection_jdup(json_object_get(o, "id"));
    f->required = collection_jbool(o, "required", 0);
    f->hidden = collection_jbool(o, "hidden", 0);
    f->presentable = collection_jbool(o, "presentable", 0);
    f->primary_key = collection_jbool(o, "primaryKey", 0);
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
        f->only_int = collection_jbool(o, "onlyInt", 0);
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
        f->on_create = collection_jbool(o, "onCreate", 1);
        f->on_update = collection_jbool(o, "onUpdate", 0);
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
        f->collection_id = collection_jdup(json_object_get(o, "collectionId"));
        if (f->collection_id == NULL) {
            FERR("validation_required", "Field \"%s\": a relation field needs \"collectionId\".", nm);
            return -1;
        }
        json_t *ms = json_object_get(o, "maxSelect"), *mn = json_object_get(o, "minSelect");
        f->max_select = json_is_integer(ms) ? (int)json_integer_value(ms) : 1;
        if (f->max_select < 1)
            f->max_select = 1;
        f->min_select = json_is_integer(mn) ? (int)json_integer_value(mn) : 0;
        f->cascade_delete = collection_jbool(o, "cascadeDelete", 0);
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
