/*
 * Records, the write side (writer thread). Input is worked on as a JSON object of
 * every field (the stored record for an update, defaults for a create): the
 * request's fields and modifiers are applied to it, every field is validated against
 * its definition, and only then is it turned into SQL parameters. Nothing is written
 * when any field fails. Deletes clear or cascade the references to the record.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "core/record.h"
#include "core/record_hooks.h"
#include "rules/dialect.h"
#include "rules/rules.h"

/* ---- input ---- */

void record_new_token_key(char *out)
{
    char id[UTIL_ID_LEN + 1];
    for (int i = 0; i < 50; i += UTIL_ID_LEN) {
        util_random_id(id);
        memcpy(out + i, id, (size_t)(50 - i < UTIL_ID_LEN ? 50 - i : UTIL_ID_LEN));
    }
    out[50] = '\0';
}

static json_t *default_value(const field_t *f)
{
    if (field_is_multi(f))
        return json_array();
    switch (f->type) {
    case FIELD_NUMBER:
        return json_integer(0);
    case FIELD_BOOL:
        return json_false();
    case FIELD_JSON:
        return json_null();
    case FIELD_GEOPOINT:
        return json_pack("{s:i,s:i}", "lon", 0, "lat", 0);
    default:
        return json_string("");
    }
}

static size_t utf8_len(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            c++;
    return c;
}

#define FE(code, ...) bs_error_field(err, a, f->name, code, __VA_ARGS__)

/* A geoPoint as PocketBase takes it: an object {"lon", "lat"} of numbers, or its
 * JSON text (a multipart form sends text); null, "", {} are the zero point (0, 0).
 * A missing member is 0, as Go's decoder leaves it. The ranges are checked in
 * validate_all, with PocketBase's codes. Returns owned or NULL with a field error. */
static json_t *normalize_geopoint(const field_t *f, const json_t *in, arena_t *a, bs_error_t *err)
{
    json_t *parsed = NULL;
    if (json_is_string(in) && json_string_length(in) > 0) {
        parsed = json_loadb(json_string_value(in), json_string_length(in), JSON_DECODE_ANY, NULL);
        in = parsed != NULL ? parsed : json_true(); /* not JSON: refused below as not an object */
    } else if (json_is_null(in) || (json_is_string(in) && json_string_length(in) == 0)) {
        in = NULL;
    }
    json_t *lon = in ? json_object_get(in, "lon") : NULL, *lat = in ? json_object_get(in, "lat") : NULL;
    int bad = (in != NULL && !json_is_object(in)) || (lon != NULL && !json_is_number(lon)) ||
              (lat != NULL && !json_is_number(lat));
    double x = lon ? json_number_value(lon) : 0, y = lat ? json_number_value(lat) : 0;
    json_decref(parsed);
    if (bad || !isfinite(x) || !isfinite(y)) {
        FE("validation_invalid_geopoint", "Must be an object {\"lon\": number, \"lat\": number}.");
        return NULL;
    }
    /* Whole numbers stay integers, so that the JSON reads {"lon":10,"lat":20} as
     * PocketBase writes it rather than 10.0. */
    json_t *o = json_object();
    json_object_set_new(o, "lon",
                        x == floor(x) && fabs(x) < 1e15 ? json_integer((json_int_t)x) : json_real(x));
    json_object_set_new(o, "lat",
                        y == floor(y) && fabs(y) < 1e15 ? json_integer((json_int_t)y) : json_real(y));
    return o;
}

/* Normalizes one input value to the field's stored JSON type. Returns an owned
 * value, or NULL with a field error. */
static json_t *normalize(const field_t *f, const json_t *in, arena_t *a, bs_error_t *err)
{
    switch (f->type) {
    case FIELD_TEXT:
    case FIELD_EDITOR:
    case FIELD_EMAIL:
    case FIELD_URL:
    case FIELD_DATE: {
        char tmp[64];
        const char *s;
        size_t n;
        if (json_is_null(in)) {
            s = "";
            n = 0;
        } else if (json_is_string(in)) {
            s = json_string_value(in);
            n = json_string_length(in);
        } else if (json_is_number(in) && f->type == FIELD_TEXT) {
            n = (size_t)snprintf(tmp, sizeof(tmp), "%.17g", json_number_value(in));
            s = tmp;
        } else {
            FE("validation_invalid_type", "Must be a string.");
            return NULL;
        }
        if (memchr(s, '\0', n) != NULL) {
            FE("validation_invalid_value", "Must not contain NUL characters.");
            return NULL;
        }
        if (f->type == FIELD_DATE && n > 0) {
            int64_t ms;
            if (util_parse_time(s, n, &ms) != 0) {
                FE("validation_invalid_date", "Must be a valid date, such as 2024-01-31 12:00:00.000Z.");
                return NULL;
            }
            char out[UTIL_TIME_LEN + 1];
            util_format_time(ms, out);
            return json_string(out);
        }
        return json_stringn(s, n);
    }
    case FIELD_NUMBER: {
        double d;
        if (json_is_number(in)) {
            d = json_number_value(in);
        } else if (json_is_null(in) || (json_is_string(in) && json_string_length(in) == 0)) {
            d = 0;
        } else if (json_is_string(in)) {
            char *end;
            d = strtod(json_string_value(in), &end);
            if (end != json_string_value(in) + json_string_length(in)) {
                FE("validation_invalid_number", "Must be a number.");
                return NULL;
            }
        } else {
            FE("validation_invalid_number", "Must be a number.");
            return NULL;
        }
        if (!isfinite(d)) {
            FE("validation_invalid_number", "Must be a finite number.");
            return NULL;
        }
        if (d == floor(d) && fabs(d) < 9e15)
            return json_integer((json_int_t)d);
        return json_real(d);
    }
    case FIELD_BOOL:
        if (json_is_boolean(in))
            return json_boolean(json_is_true(in));
        if (json_is_null(in))
            return json_false();
        if (json_is_integer(in))
            return json_boolean(json_integer_value(in) != 0);
        if (json_is_string(in) && memchr(json_string_value(in), '\0', json_string_length(in)) == NULL) {
            const char *s = json_string_value(in);
            if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "on"))
                return json_true();
            if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "") || !strcmp(s, "off"))
                return json_false();
        }
        FE("validation_invalid_bool", "Must be true or false.");
        return NULL;
    case FIELD_SELECT:
    case FIELD_RELATION:
    case FIELD_FILE: {
        json_t *list = json_array();
        if (json_is_array(in)) {
            size_t i;
            json_t *v;
            json_array_foreach(in, i, v)
            {
                if (!json_is_string(v)) {
                    json_decref(list);
                    FE("validation_invalid_value", "Each value must be a string.");
                    return NULL;
                }
                if (memchr(json_string_value(v), '\0', json_string_length(v)) != NULL) {
                    json_decref(list);
                    FE("validation_invalid_value", "Values must not contain NUL characters.");
                    return NULL;
                }
                json_array_append(list, v);
            }
        } else if (json_is_string(in)) {
            if (memchr(json_string_value(in), '\0', json_string_length(in)) != NULL) {
                json_decref(list);
                FE("validation_invalid_value", "Values must not contain NUL characters.");
                return NULL;
            }
            if (json_string_length(in) > 0)
                json_array_append(list, (json_t *)in);
        } else if (!json_is_null(in)) {
            json_decref(list);
            FE("validation_invalid_value", "Must be a string or a list of strings.");
            return NULL;
        }
        if (f->type == FIELD_FILE) {
            /* Names listed twice count once (PocketBase's uniqueFiles); a single
             * file field keeps the last one given (its normalizeValue). */
            json_t *uniq = json_array();
            size_t i;
            json_t *v;
            json_array_foreach(list, i, v)
            {
                size_t k;
                json_t *u;
                int dup = 0;
                json_array_foreach(uniq, k, u) if (json_equal(u, v)) dup = 1;
                if (!dup)
                    json_array_append(uniq, v);
            }
            json_decref(list);
            if (field_is_multi(f))
                return uniq;
            size_t n = json_array_size(uniq);
            json_t *one = n ? json_incref(json_array_get(uniq, n - 1)) : json_string("");
            json_decref(uniq);
            return one;
        }
        if (field_is_multi(f))
            return list;
        if (json_array_size(list) > 1) {
            json_decref(list);
            FE("validation_too_many_values", "Select at most one value.");
            return NULL;
        }
        json_t *one = json_array_size(list) ? json_incref(json_array_get(list, 0)) : json_string("");
        json_decref(list);
        return one;
    }
    case FIELD_JSON:
        return json_deep_copy(in);
    case FIELD_GEOPOINT:
        return normalize_geopoint(f, in, a, err);
    default:
        FE("validation_invalid_value", "This field cannot be set.");
        return NULL;
    }
}

/* Values of a select/relation as a list, whatever the arity. */
static json_t *as_list(const json_t *v)
{
    if (json_is_array(v))
        return json_copy((json_t *)v);
    json_t *l = json_array();
    if (json_is_string(v) && json_string_length(v) > 0)
        json_array_append(l, (json_t *)v);
    return l;
}

/* Whether list l holds the string x (compared with lengths: a client's value may
 * hold NUL bytes). */
static int list_has(const json_t *l, const json_t *x)
{
    size_t i;
    json_t *v;
    json_array_foreach(l, i, v) if (json_is_string(v) && json_equal(v, x)) return 1;
    return 0;
}

/* Splits a body key into its field name and modifier: 0 none, 1 append (field+),
 * 2 prepend (+field), 3 remove (field-). Returns -1 when the name is too long. */
static int parse_key(const char *key, char name[128], int *mod)
{
    size_t kl = strlen(key);
    *mod = 0;
    if (kl > 1 && key[kl - 1] == '+') {
        *mod = 1;
        kl--;
    } else if (kl > 1 && key[kl - 1] == '-') {
        *mod = 3;
        kl--;
    } else if (kl > 1 && key[0] == '+') {
        *mod = 2;
        key++;
        kl--;
    }
    if (kl >= 128)
        return -1;
    memcpy(name, key, kl);
    name[kl] = '\0';
    return 0;
}

/* Fields the server sets itself: body keys for them are ignored (password and id
 * are handled by the caller). */
static int server_set(const field_t *f)
{
    return f->type == FIELD_AUTODATE || f->type == FIELD_PASSWORD || strcmp(f->name, "tokenKey") == 0 ||
           strcmp(f->name, "id") == 0;
}

/* 1: a body key that names no field is a 400 (--strict-fields); 0: it is ignored,
 * as PocketBase ignores it. Set once at start-up. */
static int strict_fields;

void record_set_strict_fields(int on)
{
    strict_fields = on;
}

/* Applies one body key (with its modifier) to rec. Returns 0 or -1. */
static int apply_key(const collection_t *c, json_t *rec, const char *key, const json_t *val, arena_t *a,
                     bs_error_t *err)
{
    int mod;
    char name[128];
    if (parse_key(key, name, &mod) != 0) {
        if (!strict_fields)
            return 0;
        bs_error_field(err, a, "body", "validation_unknown_field", "Unknown field.");
        return -1;
    }
    const field_t *f = collection_field(c, name);
    if (f == NULL) {
        if (!strict_fields)
            return 0;
        bs_error_field(err, a, name, "validation_unknown_field",
                       "Unknown field \"%s\" for collection \"%s\".", name, c->name);
        return -1;
    }
    if (server_set(f))
        return 0;
    json_t *cur = json_object_get(rec, f->name);
    json_t *nv = NULL;
    if (mod == 0) {
        nv = normalize(f, val, a, err);
    } else if (f->type == FIELD_NUMBER) {
        if (mod == 2) {
            FE("validation_invalid_modifier", "Numbers support \"%s+\" and \"%s-\" only.", f->name, f->name);
            return -1;
        }
        json_t *delta = normalize(f, val, a, err);
        if (delta == NULL)
            return -1;
        double d = json_number_value(cur) + (mod == 1 ? 1 : -1) * json_number_value(delta);
        json_decref(delta);
        if (!isfinite(d)) {
            /* jansson cannot hold it, and the field could not store it. */
            FE("validation_invalid_number", "The result of \"%s\" is out of range (not a finite number).",
               key);
            return -1;
        }
        nv = (d == floor(d) && fabs(d) < 9e15) ? json_integer((json_int_t)d) : json_real(d);
    } else if (f->type == FIELD_SELECT || f->type == FIELD_RELATION || f->type == FIELD_FILE) {
        json_t *items = as_list(val);
        if (items == NULL || (!json_is_array(val) && !json_is_string(val))) {
            json_decref(items);
            FE("validation_invalid_value", "Must be a string or a list of strings.");
            return -1;
        }
        json_t *list = as_list(cur);
        if (mod == 3) {
            json_t *kept = json_array();
            size_t i;
            json_t *v;
            json_array_foreach(list, i, v) if (!list_has(items, v)) json_array_append(kept, v);
            json_decref(list);
            list = kept;
        } else {
            json_t *merged = json_array();
            if (mod == 2)
                json_array_extend(merged, items);
            json_array_extend(merged, list);
            if (mod == 1)
                json_array_extend(merged, items);
            json_decref(list);
            list = merged;
        }
        json_decref(items);
        nv = normalize(f, list, a, err);
        json_decref(list);
    } else {
        FE("validation_invalid_modifier", "The field \"%s\" does not support modifiers.", f->name);
        return -1;
    }
    if (nv == NULL)
        return -1;
    json_object_set_new(rec, f->name, nv);
    return 0;
}

static int is_empty(const json_t *v)
{
    return v == NULL || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0) ||
           (json_is_array(v) && json_array_size(v) == 0) || (json_is_object(v) && json_object_size(v) == 0) ||
           json_is_false(v) || (json_is_number(v) && json_number_value(v) == 0);
}

static int valid_email(const char *s)
{
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || strchr(at + 1, '@') != NULL || strlen(s) > 255)
        return 0;
    const char *dot = strrchr(at, '.');
    if (dot == NULL || dot == at + 1 || dot[1] == '\0')
        return 0;
    for (const char *p = s; *p; p++)
        if (*p <= ' ' || *p == ',' || *p == ';' || *p == '<' || *p == '>' || *p == '"')
            return 0;
    return 1;
}

static int valid_url(const char *s)
{
    const char *p;
    if (strncmp(s, "http://", 7) == 0)
        p = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        p = s + 8;
    else
        return 0;
    if (*p == '\0' || *p == '/' || strlen(s) > 2048)
        return 0;
    for (; *p; p++)
        if (*p <= ' ')
            return 0;
    return 1;
}

/* Checks every field's constraints on the final record. */
static void validate_all(const collection_t *c, json_t *rec, arena_t *a, bs_error_t *err)
{
    for (size_t i = 0; i < c->nfields; i++) {
        const field_t *f = &c->fields[i];
        json_t *v = json_object_get(rec, f->name);
        if (f->type == FIELD_AUTODATE || f->type == FIELD_PASSWORD || strcmp(f->name, "tokenKey") == 0)
            continue;
        /* A geoPoint is "blank" at (0, 0), "Null Island", as in PocketBase. */
        int geo_zero = f->type == FIELD_GEOPOINT && json_number_value(json_object_get(v, "lon")) == 0 &&
                       json_number_value(json_object_get(v, "lat")) == 0;
        if (f->required && (is_empty(v) || geo_zero) &&
            !(f->type == FIELD_BOOL && c->type == COLL_AUTH && f->system)) {
            FE("validation_required", "Cannot be blank.");
            continue;
        }
        if (is_empty(v))
            continue;
        switch (f->type) {
        case FIELD_TEXT:
        case FIELD_EDITOR: {
            size_t n = utf8_len(json_string_value(v), json_string_length(v));
            if (f->type == FIELD_TEXT && f->min > 0 && (double)n < f->min)
                FE("validation_min_text_constraint", "Must be at least %g character(s).", f->min);
            else if (f->type == FIELD_TEXT && f->max > 0 && (double)n > f->max)
                FE("validation_max_text_constraint", "Must be less than %g character(s).", f->max);
            else if (f->type == FIELD_TEXT && f->max == 0 && json_string_length(v) > 5000 && !f->primary_key)
                FE("validation_max_text_constraint", "Must be less than 5000 characters.");
            else if (f->type == FIELD_EDITOR &&
                     json_string_length(v) > (f->max > 0 ? (size_t)f->max : 5u << 20))
                FE("validation_max_size_constraint", "The text is too large.");
            else if (f->re != NULL && regexec(f->re, json_string_value(v), 0, NULL, 0) != 0)
                FE("validation_invalid_format", "Invalid value format.");
            break;
        }
        case FIELD_EMAIL:
            if (!valid_email(json_string_value(v)))
                FE("validation_is_email", "Must be a valid email address.");
            break;
        case FIELD_URL:
            if (!valid_url(json_string_value(v)))
                FE("validation_is_url", "Must be a valid http(s) URL.");
            break;
        case FIELD_NUMBER: {
            double d = json_number_value(v);
            if (f->only_int && d != floor(d))
                FE("validation_not_int", "Must be an integer.");
            else if (f->has_min && d < f->min)
                FE("validation_min_number_constraint", "Must be larger than %g.", f->min);
            else if (f->has_max && d > f->max)
                FE("validation_max_number_constraint", "Must be less than %g.", f->max);
            break;
        }
        case FIELD_DATE:
            if (f->min_date && strcmp(json_string_value(v), f->min_date) < 0)
                FE("validation_min_date_constraint", "Must be on or after %s.", f->min_date);
            else if (f->max_date && strcmp(json_string_value(v), f->max_date) > 0)
                FE("validation_max_date_constraint", "Must be on or before %s.", f->max_date);
            break;
        case FIELD_SELECT:
        case FIELD_RELATION: {
            json_t *l = as_list(v);
            size_t i2;
            json_t *x;
            int bad = 0;
            json_array_foreach(l, i2, x)
            {
                const char *s = json_string_value(x);
                size_t sn = json_string_length(x);
                if (f->type == FIELD_SELECT) {
                    /* With lengths: "vip\u0000junk" is not "vip". */
                    int ok = 0;
                    for (size_t k = 0; k < f->nvalues; k++)
                        if (strlen(f->values[k]) == sn && memcmp(f->values[k], s, sn) == 0)
                            ok = 1;
                    if (!ok) {
                        FE("validation_invalid_value", "Invalid value \"%s\".", s);
                        bad = 1;
                        break;
                    }
                } else if (!util_valid_id(s, sn)) {
                    FE("validation_invalid_value", "\"%s\" is not a valid record id.", s);
                    bad = 1;
                    break;
                }
                for (size_t k = 0; k < i2; k++)
                    if (json_equal(json_array_get(l, k), x)) {
                        FE("validation_duplicate_value", "Duplicate value \"%s\".", s);
                        bad = 1;
                    }
                if (bad)
                    break;
            }
            if (!bad && f->max_select > 1 && json_array_size(l) > (size_t)f->max_select)
                FE("validation_too_many_values", "Select no more than %d.", f->max_select);
            else if (!bad && f->min_select > 0 && json_array_size(l) < (size_t)f->min_select)
                FE("validation_not_enough_values", "Select at least %d.", f->min_select);
            json_decref(l);
            break;
        }
        case FIELD_FILE: {
            json_t *l = as_list(v);
            if (f->max_select > 0 && json_array_size(l) > (size_t)f->max_select)
                FE("validation_too_many_files", "The maximum allowed files is %d.", f->max_select);
            json_decref(l);
            break;
        }
        case FIELD_GEOPOINT: {
            double lon = json_number_value(json_object_get(v, "lon"));
            double lat = json_number_value(json_object_get(v, "lat"));
            if (lat < -90 || lat > 90)
                FE("validation_invalid_latitude", "Latitude must be between -90 and 90 degrees.");
            else if (lon < -180 || lon > 180)
                FE("validation_invalid_longitude", "Longitude must be between -180 and 180 degrees.");
            break;
        }
        case FIELD_JSON: {
            char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            size_t n = d ? strlen(d) : 0;
            free(d);
            if (n > (size_t)(f->max_size > 0 ? f->max_size : 1 << 20))
                FE("validation_json_size_limit", "The maximum allowed JSON size is %lld bytes.",
                   (long long)(f->max_size > 0 ? f->max_size : 1 << 20));
            break;
        }
        default:
            break;
        }
    }
}

/* The SQL parameter for a field's value; JSON text is copied into the arena. */
static int to_param(const field_t *f, const json_t *v, arena_t *a, bs_value_t *out)
{
    if (field_is_json(f)) {
        if (json_is_null(v) && !field_is_multi(f)) {
            *out = bs_val_null();
            return 0;
        }
        char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (d == NULL)
            return -1;
        char *s = arena_strdup(a, d);
        free(d);
        if (s == NULL)
            return -1;
        *out = bs_val_text(s, strlen(s));
        return 0;
    }
    if (json_is_integer(v))
        *out = bs_val_int(json_integer_value(v));
    else if (json_is_real(v))
        *out = bs_val_double(json_real_value(v));
    else if (json_is_boolean(v))
        *out = bs_val_int(json_is_true(v));
    else if (json_is_string(v))
        *out = bs_val_text(json_string_value(v), json_string_length(v));
    else
        *out = f->type == FIELD_NUMBER || f->type == FIELD_BOOL ? bs_val_int(0) : bs_val_text("", 0);
    return 0;
}

/* A unique violation the store reported (typed: its columns, or the name of the
 * index) becomes PocketBase's field error on the field it is about. */
static void map_constraint(const collection_t *c, arena_t *a, bs_error_t *err)
{
    if (err->conflict != BS_CONFLICT_UNIQUE)
        return;
    char field[128] = "";
    snprintf(field, sizeof(field), "%.*s", (int)strcspn(err->columns, ","), err->columns);
    if (field[0] == '\0' && err->constraint[0] != '\0') {
        /* Only the index's name: its first column, from the collection's definition. */
        char name[128];
        for (size_t i = 0; i < c->nindexes; i++)
            if (collection_index_name(c->indexes[i], name, sizeof(name)) == 0 &&
                strcmp(name, err->constraint) == 0) {
                const char *open = strchr(c->indexes[i], '(');
                const char *q = open ? strchr(open, '"') : NULL;
                if (q != NULL)
                    snprintf(field, sizeof(field), "%.*s", (int)strcspn(q + 1, "\""), q + 1);
            }
        if (field[0] == '\0' && strstr(err->constraint, "_pkey") != NULL)
            snprintf(field, sizeof(field), "id");
    }
    bs_error_init(err);
    if (field[0] != '\0' && collection_field(c, field) != NULL)
        bs_error_field(err, a, field, "validation_not_unique", "Value must be unique.");
    else
        bs_error_set(err, BS_ERR_BAD_REQUEST, "A record with the same unique values already exists.");
}

/* The collection a relation field points at (its own collection for a self-relation
 * being created with it), or NULL when it no longer exists. */
static const collection_t *relation_target(const schema_t *s, const collection_t *c, const field_t *f)
{
    const collection_t *t = schema_find(s, f->collection_id);
    return t == NULL && strcmp(f->collection_id, c->id) == 0 ? c : t;
}

/* "(SELECT COUNT(*) FROM t WHERE id IN the JSON array ?param)": how many of the ids
 * exist, the ids as one JSON parameter (one statement text whatever their number). */
static void relation_count_sql(buf_t *b, const dialect_t *d, const collection_t *t, size_t param, arena_t *a)
{
    buf_puts(b, "(SELECT COUNT(*) FROM ");
    sql_ident(b, t->name);
    buf_puts(b, " WHERE \"id\" IN (SELECT \"_v\".\"value\" FROM ");
    dialect_json_elements(d, b, arena_printf(a, d->json_param_fmt, arena_printf(a, "?%zu", param)), "_v");
    buf_puts(b, "))");
}

/* Checks that every relation value points at an existing record. */
static int check_relations(store_conn_t *conn, const schema_t *s, const collection_t *c, json_t *rec,
                           arena_t *a, bs_error_t *err)
{
    for (size_t i = 0; i < c->nfields; i++) {
        const field_t *f = &c->fields[i];
        if (f->type != FIELD_RELATION)
            continue;
        json_t *l = as_list(json_object_get(rec, f->name));
        size_t n = json_array_size(l);
        if (n == 0) {
            json_decref(l);
            continue;
        }
        const collection_t *t = relation_target(s, c, f);
        char *ids = json_dumps(l, JSON_COMPACT);
        json_decref(l);
        if (t == NULL || ids == NULL) {
            free(ids);
            FE("validation_missing_rel_records", "The related collection no longer exists.");
            return -1;
        }
        buf_t sql;
        buf_init(&sql, a);
        buf_puts(&sql, "SELECT ");
        relation_count_sql(&sql, dialect_get(store_conn_dialect(conn)), t, 1, a);
        bs_value_t p = bs_val_text(ids, strlen(ids));
        store_stmt_t *st = sql.oom ? NULL : store_query(conn, sql.data, &p, 1, err);
        int64_t found = -1;
        if (st != NULL) {
            if (store_step(st, err) == 1)
                found = store_col(st, 0).i;
            store_done(st);
        }
        free(ids);
        if (found < 0)
            return -1;
        if ((size_t)found != n) {
            FE("validation_missing_rel_records",
               "Failed to find all relation records with the provided ids.");
            return -1;
        }
    }
    return 0;
}

/* check_relations as one condition of the INSERT (ADR 0017): every relation field's
 * values counted in its target, appended to cond with their parameters after the
 * np already in params (room for one per field). Returns 1 when written (cond may
 * stay empty: no relation values), 0 when check_relations must decide on its own (a
 * target gone: it gives the field's error), -1 on no memory. */
static int relations_cond(store_conn_t *conn, const schema_t *s, const collection_t *c, json_t *rec,
                          arena_t *a, buf_t *cond, bs_value_t *params, size_t *np)
{
    const dialect_t *d = dialect_get(store_conn_dialect(conn));
    for (size_t i = 0; i < c->nfields; i++) {
        const field_t *f = &c->fields[i];
        if (f->type != FIELD_RELATION)
            continue;
        json_t *l = as_list(json_object_get(rec, f->name));
        size_t n = json_array_size(l);
        const collection_t *t = n > 0 ? relation_target(s, c, f) : NULL;
        char *ids = n > 0 && t != NULL ? json_dumps(l, JSON_COMPACT) : NULL;
        json_decref(l);
        if (n == 0)
            continue;
        if (t == NULL || ids == NULL) {
            free(ids);
            return t == NULL ? 0 : -1;
        }
        char *copy = arena_strdup(a, ids);
        free(ids);
        if (copy == NULL)
            return -1;
        params[(*np)++] = bs_val_text(copy, strlen(copy));
        if (cond->len)
            buf_puts(cond, " AND ");
        relation_count_sql(cond, d, t, *np, a);
        buf_printf(cond, " = %zu", n);
    }
    return cond->oom ? -1 : 1;
}

/* Whether the record w->id passes rule in conn's transaction, with body as
 * @request.body: 1, 0, or -1. */
static int rule_holds(store_conn_t *conn, record_write_t *w, const char *rule, const json_t *body, arena_t *a,
                      bs_error_t *err)
{
    record_reader_t r = {.schema = w->schema, .conn = conn, .arena = a, .who = w->who};
    store_stmt_t *st = record_select_by_id(&r, w->coll, "1", w->id, rule, body, err);
    if (st == NULL)
        return -1;
    int rc = store_step(st, err);
    store_done(st);
    return rc;
}

/* rule_holds for a record whose stored row the write already holds (stored, from its
 * RETURNING): decided in memory when the rule reads only the record's own fields and
 * request values, as realtime decides deliveries (core/record_eval.c), so that the
 * common create rule ("owner = @request.auth.id") costs no statement; otherwise the
 * same query as rule_holds, in conn's transaction. */
static int rule_holds_stored(store_conn_t *conn, record_write_t *w, const char *rule, const json_t *body,
                             const json_t *stored, arena_t *a, bs_error_t *err)
{
    if (stored == NULL)
        return rule_holds(conn, w, rule, body, a, err);
    rules_node_t *node = rules_parse(a, rule, strlen(rule), NULL, err);
    if (node == NULL)
        return err->code == BS_ERR_OK ? rule_holds(conn, w, rule, body, a, err) : -1;
    record_reader_t r = {.schema = w->schema, .conn = conn, .arena = a, .who = w->who};
    return record_check_body(&r, w->coll, stored, node, rule, body, err);
}

static int needs_rule(const record_write_t *w, int which)
{
    const char *rule = w->coll->rules[which];
    return w->check_rule && !w->who->superuser && rule != NULL && rule[0] != '\0';
}

static int skipped_key(const char *k)
{
    return !strcmp(k, "collectionId") || !strcmp(k, "collectionName") || !strcmp(k, "expand") ||
           !strcmp(k, "passwordConfirm") || !strcmp(k, "oldPassword");
}

static int apply_body(record_write_t *w, json_t *rec, arena_t *a, bs_error_t *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)w->body, k, v)
    {
        if (!skipped_key(k))
            apply_key(w->coll, rec, k, v, a, err);
    }
    return err->code == BS_ERR_OK ? 0 : -1;
}

/* @request.body as the rules see it: every key that names a field the client may
 * set ("role", "role+", "+role", "role-") is replaced by that field's final value in
 * rec, under the plain name, as PocketBase does; so a rule on a field judges what
 * will be stored, whatever modifier produced it. Other keys stay as sent. Returns
 * an owned object. */
static json_t *rule_body(const record_write_t *w, const json_t *rec)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)w->body, k, v)
    {
        int mod;
        char name[128];
        const field_t *f = parse_key(k, name, &mod) == 0 ? collection_field(w->coll, name) : NULL;
        if (f == NULL || server_set(f) || skipped_key(k)) {
            if (json_object_get(out, k) == NULL)
                json_object_set(out, k, v);
            continue;
        }
        json_t *final = json_object_get(rec, f->name);
        json_object_set(out, f->name, final ? final : json_null());
    }
    return out;
}

/* The body holds key name, with or without a modifier. */
static int body_sets(const json_t *body, const char *field)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v)
    {
        int mod;
        char name[128];
        if (parse_key(k, name, &mod) == 0 && strcmp(name, field) == 0)
            return 1;
    }
    return 0;
}

/* The auth fields only a manager may set (PocketBase's manage access): verified,
 * and on update the e-mail, which otherwise changes only through the
 * confirm-email-change flow. A manager's e-mail change makes the record unverified
 * unless the same request sets verified. stored is the record before the write
 * (NULL on create). */
static void check_auth_fields(const record_write_t *w, const json_t *stored, json_t *rec, int privileged,
                              arena_t *a, bs_error_t *err)
{
    if (w->coll->type != COLL_AUTH)
        return;
    int sets_verified = body_sets(w->body, "verified");
    if (sets_verified && !privileged && collection_field(w->coll, "verified") != NULL)
        bs_error_field(err, a, "verified", "validation_forbidden",
                       "Only superusers and managers (manageRule) can change the verified state.");
    if (stored == NULL)
        return;
    const json_t *was = json_object_get(stored, "email"), *now = json_object_get(rec, "email");
    if (was == NULL || now == NULL || json_equal(was, now))
        return;
    if (!privileged)
        bs_error_field(err, a, "email", "validation_values_mismatch",
                       "The email can only be changed through request-email-change and "
                       "confirm-email-change.");
    else if (!sets_verified && collection_field(w->coll, "verified") != NULL)
        json_object_set_new(rec, "verified", json_false());
}

/* Inserts or updates rec's row. stored, when not NULL, receives the row as stored
 * (RETURNING *, the JSON record_load gives; owned), so that the write needs no
 * statement to read it back: on PostgreSQL every statement of the writer is a round
 * trip. */
static int write_row(store_conn_t *conn, record_write_t *w, json_t *rec, int insert, json_t **stored,
                     arena_t *a, bs_error_t *err)
{
    const collection_t *c = w->coll;
    bs_value_t *params = arena_alloc(a, (2 * c->nfields + 1) * sizeof(*params));
    buf_t sql, cond;
    buf_init(&sql, a);
    buf_init(&cond, a);
    if (params == NULL)
        goto oom;
    size_t np = 0;
    int checked = 0; /* the relations are checked by the INSERT itself */
    if (insert) {
        buf_puts(&sql, "INSERT INTO ");
        sql_ident(&sql, c->name);
        buf_puts(&sql, " (");
        for (size_t i = 0; i < c->nfields; i++) {
            if (i)
                buf_puts(&sql, ", ");
            sql_ident(&sql, c->fields[i].name);
        }
        for (size_t i = 0; i < c->nfields; i++)
            if (to_param(&c->fields[i], json_object_get(rec, c->fields[i].name), a, &params[np++]) != 0)
                goto oom;
        int rel = stored != NULL ? relations_cond(conn, w->schema, c, rec, a, &cond, params, &np) : 0;
        if (rel < 0)
            goto oom;
        if (rel == 0 && check_relations(conn, w->schema, c, rec, a, err) != 0)
            return -1;
        if (rel == 1 && cond.len > 0) {
            /* INSERT ... SELECT ... WHERE: no row when a related record is missing
             * (then check_relations names the field), and a unique violation only
             * when the relations hold, as when the check ran first. The values are
             * typed as the columns are (PostgreSQL infers no type in a SELECT list). */
            const dialect_t *d = dialect_get(store_conn_dialect(conn));
            checked = 1;
            buf_puts(&sql, ") SELECT ");
            for (size_t i = 0; i < c->nfields; i++) {
                const field_t *f = &c->fields[i];
                const char *type = field_is_json(f)          ? d->type_json
                                   : f->type == FIELD_NUMBER ? d->type_number
                                   : f->type == FIELD_BOOL   ? d->type_bool
                                                             : d->type_text;
                if (i)
                    buf_puts(&sql, ", ");
                buf_printf(&sql, d->column_param_fmt, arena_printf(a, "?%zu", i + 1), type);
            }
            buf_printf(&sql, " WHERE %s", cond.data);
        } else {
            buf_puts(&sql, ") VALUES (");
            for (size_t i = 0; i < c->nfields; i++)
                buf_printf(&sql, i ? ", ?%zu" : "?%zu", i + 1);
            buf_puts(&sql, ")");
        }
    } else {
        buf_puts(&sql, "UPDATE ");
        sql_ident(&sql, c->name);
        buf_puts(&sql, " SET ");
        int first = 1;
        for (size_t i = 0; i < c->nfields; i++) {
            if (c->fields[i].primary_key)
                continue;
            if (to_param(&c->fields[i], json_object_get(rec, c->fields[i].name), a, &params[np++]) != 0)
                goto oom;
            if (!first)
                buf_puts(&sql, ", ");
            first = 0;
            sql_ident(&sql, c->fields[i].name);
            buf_printf(&sql, " = ?%zu", np);
        }
        params[np++] = bs_val_text(w->id, strlen(w->id));
        buf_printf(&sql, " WHERE \"id\" = ?%zu", np);
    }
    if (stored != NULL)
        buf_puts(&sql, " RETURNING *");
    if (sql.oom)
        goto oom;
    if (stored == NULL) {
        if (store_exec(conn, sql.data, params, np, err) < 0)
            goto failed;
        return 0;
    }
    store_stmt_t *st = store_query(conn, sql.data, params, np, err);
    if (st == NULL)
        goto failed;
    int rc = store_step(st, err);
    if (rc == 1)
        *stored = record_row_json(c, st);
    store_done(st);
    if (rc < 0)
        goto failed;
    if (rc == 0 && checked) {
        /* Nothing inserted: a related record is missing; the check says which. */
        if (check_relations(conn, w->schema, c, rec, a, err) == 0)
            bs_error_set(err, BS_ERR_BAD_REQUEST,
                         "Failed to find all relation records with the provided ids.");
        return -1;
    }
    /* No row: an UPDATE of a record deleted meanwhile (no other writer runs between
     * its load and this, so not expected); the caller loads as before. */
    return 0;
failed:
    if (err->code == BS_ERR_VALIDATION)
        map_constraint(c, a, err);
    return -1;
oom:
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return -1;
}

static void set_auth_fields(record_write_t *w, json_t *rec, int creating)
{
    if (w->coll->type != COLL_AUTH)
        return;
    if (w->password_hash != NULL) {
        json_object_set_new(rec, "password", json_string(w->password_hash));
        char key[51];
        record_new_token_key(key);
        json_object_set_new(rec, "tokenKey", json_string(key));
    } else if (creating) {
        char key[51];
        record_new_token_key(key);
        json_object_set_new(rec, "tokenKey", json_string(key));
    }
}

static void set_autodates(const collection_t *c, json_t *rec, int creating)
{
    char now[UTIL_TIME_LEN + 1];
    util_format_time(util_now_ms(), now);
    for (size_t i = 0; i < c->nfields; i++) {
        const field_t *f = &c->fields[i];
        if (f->type == FIELD_AUTODATE && ((creating && f->on_create) || f->on_update))
            json_object_set_new(rec, f->name, json_string(now));
    }
}

/* ---- file fields ---- */

static int has_file_fields(const collection_t *c)
{
    for (size_t i = 0; i < c->nfields; i++)
        if (c->fields[i].type == FIELD_FILE)
            return 1;
    return 0;
}

static void add_gone(record_write_t *w, const collection_t *c, const char *id, const char *name)
{
    if (w->files_gone == NULL)
        return;
    char key[512];
    if (name == NULL) {
        snprintf(key, sizeof(key), "%s/%s/", c->id, id);
    } else {
        /* The file and the thumbnails made of it. */
        snprintf(key, sizeof(key), "%s/%s/%s", c->id, id, name);
        json_array_append_new(w->files_gone, json_string(key));
        snprintf(key, sizeof(key), "%s/%s/thumbs_%s/", c->id, id, name);
    }
    json_array_append_new(w->files_gone, json_string(key));
}

/* A file field's value may name only files it held before (stored, NULL on create)
 * and this request's uploads: a client cannot claim another record's file by its
 * name. Then what was held or uploaded and is no longer referenced is noted for
 * deletion after the commit. Field errors into err. */
static void check_files(record_write_t *w, const json_t *stored, const json_t *rec, arena_t *a,
                        bs_error_t *err)
{
    const collection_t *c = w->coll;
    for (size_t i = 0; i < c->nfields; i++) {
        const field_t *f = &c->fields[i];
        if (f->type != FIELD_FILE)
            continue;
        json_t *now = as_list(json_object_get(rec, f->name));
        json_t *was = as_list(stored ? json_object_get(stored, f->name) : NULL);
        size_t k;
        json_t *x;
        json_array_foreach(now, k, x)
        {
            if (!list_has(was, x) && !(w->uploads != NULL && list_has(w->uploads, x))) {
                FE("validation_invalid_file", "Invalid new files: [%.250s].", json_string_value(x));
                break;
            }
        }
        json_array_foreach(was, k, x) if (!list_has(now, x)) add_gone(w, c, w->id, json_string_value(x));
        json_decref(now);
        json_decref(was);
    }
    /* Uploads that no field kept (a single field given two, one removed with "-"). */
    if (w->uploads != NULL) {
        size_t k;
        json_t *x;
        json_array_foreach(w->uploads, k, x)
        {
            int kept = 0;
            for (size_t i = 0; i < c->nfields && !kept; i++) {
                if (c->fields[i].type != FIELD_FILE)
                    continue;
                json_t *now = as_list(json_object_get(rec, c->fields[i].name));
                kept = list_has(now, x);
                json_decref(now);
            }
            if (!kept)
                add_gone(w, c, w->id, json_string_value(x));
        }
    }
}

void record_touch(record_touched_t *t, const collection_t *c)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->ids[i], c->id) == 0)
            return;
    if (t->n == RECORD_MAX_TOUCHED) {
        t->overflow = 1;
        return;
    }
    t->ids[t->n++] = c->id;
}

/* Notes that the write changed record id of c: always in w->touched (for the
 * cache); for realtime (see record_write_t.changes) the stored record, loaded
 * inside the transaction (a record that cannot be loaded is left out there); and
 * the webhooks and reminders it queues (record_hooks.h), in the same transaction.
 * Returns 0, or -1 with err when a hook cannot be queued (the write fails). */
static int note_change_stored(store_conn_t *conn, record_write_t *w, const collection_t *c, const char *id,
                              const char *action, json_t *stored, bs_error_t *err);

static int note_change(store_conn_t *conn, record_write_t *w, const collection_t *c, const char *id,
                       const char *action, bs_error_t *err)
{
    return note_change_stored(conn, w, c, id, action, NULL, err);
}

/* note_change with the stored record already read (stored, owned, taken; NULL: it is
 * loaded here). */
static int note_change_stored(store_conn_t *conn, record_write_t *w, const collection_t *c, const char *id,
                              const char *action, json_t *stored, bs_error_t *err)
{
    record_touch(&w->touched, c);
    if (strcmp(action, "delete") == 0 && has_file_fields(c))
        add_gone(w, c, id, NULL);
    int hooks = record_hooks_wanted(c, action);
    if (w->changes == NULL && !hooks) {
        json_decref(stored);
        return 0;
    }
    bs_error_t lerr;
    bs_error_init(&lerr);
    json_t *rec = stored != NULL ? stored : record_load(conn, c, "id", id, &lerr);
    if (rec == NULL)
        return 0;
    if (hooks && record_hooks_note(conn, w->schema, c, action, rec, err) != 0) {
        json_decref(rec);
        return -1;
    }
    if (w->changes == NULL) {
        json_decref(rec);
        return 0;
    }
    json_array_append_new(
        w->changes, json_pack("{s:s, s:s, s:o}", "action", action, "collectionId", c->id, "record", rec));
    return 0;
}

/* A view collection's records are its query's rows: they are read, never written. */
static int view_refused(const collection_t *c, bs_error_t *err)
{
    if (c->type != COLL_VIEW)
        return 0;
    bs_error_set(err, BS_ERR_BAD_REQUEST, "The records of view collection \"%s\" are read-only.", c->name);
    return 1;
}

int record_create(store_conn_t *conn, record_write_t *w, arena_t *a, bs_error_t *err)
{
    const collection_t *c = w->coll;
    if (view_refused(c, err))
        return -1;
    json_t *rec = json_object();
    for (size_t i = 0; i < c->nfields; i++)
        json_object_set_new(rec, c->fields[i].name, default_value(&c->fields[i]));
    json_t *jid = json_object_get(w->body, "id");
    if (jid != NULL && !json_is_null(jid) && !(json_is_string(jid) && json_string_length(jid) == 0)) {
        const field_t *idf = collection_field(c, "id");
        if (!json_is_string(jid) || !util_valid_id(json_string_value(jid), json_string_length(jid)) ||
            (idf && idf->re && regexec(idf->re, json_string_value(jid), 0, NULL, 0) != 0)) {
            bs_error_field(err, a, "id", "validation_invalid_id",
                           "The id must be 1-100 characters of letters, digits, _ or -.");
        } else {
            snprintf(w->id, sizeof(w->id), "%s", json_string_value(jid));
        }
    } else {
        util_random_id(w->id);
    }
    json_object_set_new(rec, "id", json_string(w->id));
    apply_body(w, rec, a, err);
    check_auth_fields(w, NULL, rec, w->who->superuser, a, err);
    if (c->type == COLL_AUTH && w->password_hash == NULL)
        bs_error_field(err, a, "password", "validation_required", "Cannot be blank.");
    set_auth_fields(w, rec, 1);
    set_autodates(c, rec, 1);
    validate_all(c, rec, a, err);
    check_files(w, NULL, rec, a, err);
    int rc = -1;
    json_t *stored = NULL;
    /* write_row checks the relations (in the INSERT's own statement). */
    if (err->code == BS_ERR_OK && write_row(conn, w, rec, 1, &stored, a, err) == 0) {
        rc = 0;
        if (needs_rule(w, RULE_CREATE)) {
            /* The rule sees the stored row and the request's final values. */
            json_t *body = rule_body(w, rec);
            int ok = rule_holds_stored(conn, w, c->rules[RULE_CREATE], body, stored, a, err);
            json_decref(body);
            if (ok == 0)
                bs_error_set(err, BS_ERR_BAD_REQUEST,
                             "Failed to create record: the create rule does not allow it.");
            if (ok != 1)
                rc = -1;
        }
        if (rc == 0 && note_change_stored(conn, w, c, w->id, "create", stored, err) != 0)
            rc = -1;
        else if (rc != 0)
            json_decref(stored);
        stored = NULL;
    }
    json_decref(rec);
    return rc;
}

int record_update(store_conn_t *conn, record_write_t *w, arena_t *a, bs_error_t *err)
{
    const collection_t *c = w->coll;
    if (view_refused(c, err))
        return -1;
    json_t *stored = record_load(conn, c, "id", w->id, err);
    if (stored == NULL)
        return -1;
    /* The request is applied first, its validation errors kept aside: the rule must
     * judge the final values (a modifier's result), and a caller the rule refuses
     * learns nothing about the record, not even that the values were invalid. */
    json_t *rec = json_copy(stored);
    bs_error_t verr;
    bs_error_init(&verr);
    json_t *jid = json_object_get(w->body, "id");
    if (jid != NULL && !(json_is_string(jid) && json_string_length(jid) == strlen(w->id) &&
                         strcmp(json_string_value(jid), w->id) == 0))
        bs_error_field(&verr, a, "id", "validation_readonly", "The id of a record cannot change.");
    apply_body(w, rec, a, &verr);
    json_t *body = rule_body(w, rec);
    int rc = -1;
    if (needs_rule(w, RULE_UPDATE)) {
        int ok = rule_holds(conn, w, c->rules[RULE_UPDATE], body, a, err);
        if (ok == 0)
            bs_error_set(err, BS_ERR_NOT_FOUND, NULL);
        if (ok != 1)
            goto out;
    }
    if (c->type == COLL_AUTH && !w->who->superuser) {
        const char *mr = c->rules[RULE_MANAGE];
        int m = mr == NULL ? 0 : mr[0] == '\0' ? 1 : rule_holds(conn, w, mr, body, a, err);
        if (m < 0)
            goto out;
        w->manage = m;
        if (w->password_hash != NULL && !m && !w->old_password_ok)
            bs_error_field(&verr, a, "oldPassword", "validation_invalid_old_password",
                           "Missing or invalid old password.");
    }
    check_auth_fields(w, stored, rec, w->who->superuser || w->manage, a, &verr);
    if (verr.code != BS_ERR_OK) {
        *err = verr;
        goto out;
    }
    set_auth_fields(w, rec, 0);
    set_autodates(c, rec, 0);
    validate_all(c, rec, a, err);
    check_files(w, stored, rec, a, err);
    json_t *now = NULL;
    if (err->code == BS_ERR_OK && check_relations(conn, w->schema, c, rec, a, err) == 0 &&
        write_row(conn, w, rec, 0, &now, a, err) == 0) {
        rc = note_change_stored(conn, w, c, w->id, "update", now, err);
    }
out:
    json_decref(body);
    json_decref(rec);
    json_decref(stored);
    return rc;
}

/* Removes references to (c, id) from other records, cascading where asked. */
static int unlink_references(store_conn_t *conn, const schema_t *s, const collection_t *c, const char *id,
                             int depth, record_write_t *w, arena_t *a, bs_error_t *err)
{
    const dialect_t *d = dialect_get(store_conn_dialect(conn));
    if (depth > 16) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Cascading delete goes too deep (more than 16 levels).");
        return -1;
    }
    for (size_t k = 0; k < s->ncols; k++) {
        const collection_t *o = s->cols[k];
        for (size_t i = 0; i < o->nfields; i++) {
            const field_t *f = &o->fields[i];
            if (f->type != FIELD_RELATION || strcmp(f->collection_id, c->id) != 0)
                continue;
            buf_t sql;
            buf_init(&sql, a);
            bs_value_t p = bs_val_text(id, strlen(id));
            buf_puts(&sql, "SELECT \"id\" FROM ");
            sql_ident(&sql, o->name);
            if (field_is_multi(f)) {
                buf_t col;
                buf_init(&col, a);
                buf_puts(&col, "\"_o\".");
                sql_ident(&col, f->name);
                buf_puts(&sql, " AS \"_o\" WHERE EXISTS (SELECT 1 FROM ");
                dialect_json_elements(d, &sql, col.data, "_e");
                buf_puts(&sql, " WHERE \"_e\".\"value\" = ?1)");
            } else {
                buf_puts(&sql, " WHERE ");
                sql_ident(&sql, f->name);
                buf_puts(&sql, " = ?1");
            }
            store_stmt_t *st = store_query(conn, sql.data, &p, 1, err);
            if (st == NULL)
                return -1;
            json_t *ids = json_array();
            int rc;
            while ((rc = store_step(st, err)) == 1) {
                bs_value_t v = store_col(st, 0);
                json_array_append_new(ids, json_stringn(v.s, v.n));
            }
            store_done(st);
            if (rc < 0) {
                json_decref(ids);
                return -1;
            }
            size_t n = json_array_size(ids);
            if (n > 0 && !f->cascade_delete && f->required && !field_is_multi(f)) {
                json_decref(ids);
                bs_error_set(
                    err, BS_ERR_BAD_REQUEST,
                    "The record is referenced by the required relation field \"%s\" of %zu record(s) in "
                    "\"%s\"; delete or change those first.",
                    f->name, n, o->name);
                return -1;
            }
            for (size_t j = 0; j < n; j++) {
                const char *rid = json_string_value(json_array_get(ids, j));
                if (f->cascade_delete) {
                    if (o == c && strcmp(rid, id) == 0)
                        continue;
                    if (unlink_references(conn, s, o, rid, depth + 1, w, a, err) != 0) {
                        json_decref(ids);
                        return -1;
                    }
                    buf_t del;
                    buf_init(&del, a);
                    buf_puts(&del, "DELETE FROM ");
                    sql_ident(&del, o->name);
                    buf_puts(&del, " WHERE \"id\" = ?1");
                    bs_value_t q = bs_val_text(rid, strlen(rid));
                    if (note_change(conn, w, o, rid, "delete", err) != 0 ||
                        store_exec(conn, del.data, &q, 1, err) < 0) {
                        json_decref(ids);
                        return -1;
                    }
                } else {
                    buf_t u;
                    buf_init(&u, a);
                    buf_puts(&u, "UPDATE ");
                    sql_ident(&u, o->name);
                    buf_puts(&u, " SET ");
                    sql_ident(&u, f->name);
                    if (field_is_multi(f)) {
                        /* The list without the deleted id, in its order. */
                        buf_t col;
                        buf_init(&col, a);
                        sql_ident(&col, f->name);
                        buf_puts(&u, " = (SELECT ");
                        buf_printf(&u, d->json_agg_fmt, "\"_e\".\"value\"");
                        buf_puts(&u, " FROM ");
                        dialect_json_elements(d, &u, col.data, "_e");
                        buf_puts(&u, " WHERE \"_e\".\"value\" <> ?1)");
                    } else {
                        buf_puts(&u, " = ''");
                    }
                    buf_puts(&u, field_is_multi(f) ? " WHERE \"id\" = ?2" : " WHERE \"id\" = ?1");
                    bs_value_t q[2] = {p, bs_val_text(rid, strlen(rid))};
                    if (field_is_multi(f) ? store_exec(conn, u.data, q, 2, err) < 0
                                          : store_exec(conn, u.data, q + 1, 1, err) < 0) {
                        json_decref(ids);
                        return -1;
                    }
                    if (note_change(conn, w, o, rid, "update", err) != 0) {
                        json_decref(ids);
                        return -1;
                    }
                }
            }
            json_decref(ids);
        }
    }
    return 0;
}

int record_delete(store_conn_t *conn, record_write_t *w, arena_t *a, bs_error_t *err)
{
    const collection_t *c = w->coll;
    if (view_refused(c, err))
        return -1;
    int ok = needs_rule(w, RULE_DELETE) ? rule_holds(conn, w, c->rules[RULE_DELETE], w->body, a, err) : 1;
    if (ok < 0)
        return -1;
    buf_t sql;
    buf_init(&sql, a);
    buf_puts(&sql, "DELETE FROM ");
    sql_ident(&sql, c->name);
    buf_puts(&sql, " WHERE \"id\" = ?1");
    bs_value_t p = bs_val_text(w->id, strlen(w->id));
    if (ok == 1 && unlink_references(conn, w->schema, c, w->id, 0, w, a, err) != 0)
        return -1;
    if (ok == 1 && note_change(conn, w, c, w->id, "delete", err) != 0)
        return -1;
    int64_t n = ok == 1 ? store_exec(conn, sql.data, &p, 1, err) : 0;
    if (n < 0)
        return -1;
    if (n == 0) { /* the job fails: its changes are never published */
        bs_error_set(err, BS_ERR_NOT_FOUND, NULL);
        return -1;
    }
    return 0;
}

int record_precheck(const collection_t *c, const json_t *body, int rules_read_body, arena_t *a,
                    bs_error_t *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v)
    {
        size_t n = json_is_array(v) ? json_array_size(v) : 0;
        int mod;
        char name[128];
        const field_t *f =
            parse_key(k, name, &mod) == 0 && !skipped_key(k) ? collection_field(c, name) : NULL;
        if (f != NULL && !server_set(f) && (f->type == FIELD_SELECT || f->type == FIELD_RELATION) &&
            mod != 3) {
            /* A plain value, or the items a modifier adds: more than the field holds
             * fails whatever the record holds now. */
            if (!field_is_multi(f) && n > 1) {
                FE("validation_too_many_values", "Select at most one value.");
                continue;
            }
            if (field_is_multi(f) && n > (size_t)f->max_select) {
                FE("validation_too_many_values", "Select no more than %d.", f->max_select);
                continue;
            }
        }
        if (f != NULL && f->type == FIELD_JSON) {
            size_t max = (size_t)(f->max_size > 0 ? f->max_size : 1 << 20);
            char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            size_t len = d ? strlen(d) : 0;
            free(d);
            if (len > max) {
                FE("validation_json_size_limit", "The maximum allowed JSON size is %zu bytes.", max);
                continue;
            }
        }
        /* Each item of an array a rule reads becomes an SQL operand, and a modifier
         * works through every item: neither may grow without bound. */
        if (n > RECORD_MAX_BODY_ARRAY && (rules_read_body || mod != 0))
            bs_error_field(err, a, f ? f->name : k, "validation_too_many_values",
                           "At most %d values may be sent here (a rule of the collection reads the request "
                           "body, or a modifier applies them).",
                           RECORD_MAX_BODY_ARRAY);
    }
    return err->code == BS_ERR_OK ? 0 : -1;
}
