/* cursor — see cursor.h. */
#include "api/cursor.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

#include "base/util.h"

enum { CURSOR_MAX_TEXT = 8192 };

static int refuse(bs_error_t *err, const char *why)
{
    bs_error_set(err, BS_ERR_BAD_REQUEST,
                 "Invalid cursor: %s Start again with cursor= (empty) for the first page.", why);
    return -1;
}

int cursor_decode(arena_t *a, const char *text, const char *sort, int n, bs_value_t *vals, int *have,
                  bs_error_t *err)
{
    *have = 0;
    size_t len = strlen(text);
    if (len == 0)
        return 0;
    if (len > CURSOR_MAX_TEXT)
        return refuse(err, "it is too long.");
    unsigned char *raw = arena_alloc(a, len + 1);
    if (raw == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    long m = util_b64url_decode(text, len, raw, len);
    if (m <= 0)
        return refuse(err, "it is not a cursor this server made.");
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)raw, (size_t)m, JSON_REJECT_DUPLICATES, &jerr);
    const char *s = json_string_value(json_object_get(doc, "s"));
    json_t *k = json_object_get(doc, "k");
    int rc = 0;
    if (s == NULL || !json_is_array(k)) {
        rc = refuse(err, "it is not a cursor this server made.");
    } else if (strcmp(s, sort) != 0) {
        rc = refuse(err, "it was made for another sort; a cursor is valid only for the sort it came with.");
    } else if ((int)json_array_size(k) != n) {
        rc = refuse(err, "it does not match the sort.");
    } else {
        for (int i = 0; i < n && rc == 0; i++) {
            json_t *v = json_array_get(k, (size_t)i);
            if (json_is_null(v)) {
                vals[i] = bs_val_null();
            } else if (json_is_integer(v)) {
                vals[i] = bs_val_int(json_integer_value(v));
            } else if (json_is_real(v)) {
                vals[i] = bs_val_double(json_real_value(v));
            } else if (json_is_string(v)) {
                char *c = arena_strndup(a, json_string_value(v), json_string_length(v));
                if (c == NULL) {
                    bs_error_set(err, BS_ERR_NOMEM, NULL);
                    rc = -1;
                } else {
                    vals[i] = bs_val_text(c, json_string_length(v));
                }
            } else {
                rc = refuse(err, "it is not a cursor this server made.");
            }
        }
        if (rc == 0 && vals[n - 1].type != BS_VAL_TEXT)
            rc = refuse(err, "it does not end with a record id.");
    }
    json_decref(doc);
    if (rc == 0)
        *have = 1;
    return rc;
}

void cursor_where(rules_compiler_t *comp, arena_t *a, const cursor_keys_t *keys, const bs_value_t *vals,
                  buf_t *out)
{
    /* (k0 after v0) OR (k0 = v0 AND k1 after v1) OR ... */
    buf_puts(out, " AND (");
    for (int i = 0; i < keys->n; i++) {
        buf_puts(out, i ? " OR (" : "(");
        for (int j = 0; j < i; j++) {
            if (vals[j].type == BS_VAL_NULL) {
                buf_printf(out, "%s IS NULL AND ", keys->sql[j]);
            } else {
                buf_printf(out, "%s = ", keys->sql[j]);
                rules_add_param(comp, a, vals[j], out);
                buf_puts(out, " AND ");
            }
        }
        const char *k = keys->sql[i];
        if (vals[i].type == BS_VAL_NULL) {
            /* NULL is the smallest value: after it when ascending is any value, and
             * nothing comes after it when descending. */
            buf_printf(out, keys->desc[i] ? "1 = 0" : "%s IS NOT NULL", k);
        } else if (keys->desc[i]) {
            buf_printf(out, "(%s < ", k);
            rules_add_param(comp, a, vals[i], out);
            buf_printf(out, " OR %s IS NULL)", k);
        } else {
            buf_printf(out, "%s > ", k);
            rules_add_param(comp, a, vals[i], out);
        }
        buf_putc(out, ')');
    }
    buf_putc(out, ')');
}

void cursor_encode(buf_t *out, const char *sort, const bs_value_t *vals, int n)
{
    json_t *k = json_array();
    for (int i = 0; i < n; i++) {
        const bs_value_t *v = &vals[i];
        json_t *j = v->type == BS_VAL_INT                        ? json_integer(v->i)
                    : v->type == BS_VAL_DOUBLE && isfinite(v->d) ? json_real(v->d)
                    : v->type == BS_VAL_TEXT                     ? json_stringn(v->s, v->n)
                                                                 : json_null();
        json_array_append_new(k, j);
    }
    json_t *doc = json_pack("{s:s, s:o}", "s", sort, "k", k);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    if (text != NULL) {
        buf_putc(out, '"');
        util_b64url_encode(out, (const unsigned char *)text, strlen(text));
        buf_putc(out, '"');
    } else {
        buf_puts(out, "null");
        out->oom = 1;
    }
    free(text);
    json_decref(doc);
}
