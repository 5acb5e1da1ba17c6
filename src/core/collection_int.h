/*
 * collection_int — what the parts of a collection definition's parser share
 * (internal to src/core/collection*.c; the public face is schema.h's
 * collection_from_json, collection_to_json and collection_from_stored).
 *
 * Pure code: no I/O, no globals but the constant key table; any thread. Errors are
 * field errors added to err in arena (bs_error_field), so one request reports every
 * problem of its definition at once; a function that fails leaves what it was
 * filling for the caller to free with the collection (collection_free, field_free).
 */
#ifndef BASALT_CORE_COLLECTION_INT_H
#define BASALT_CORE_COLLECTION_INT_H

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/schema.h"

/* The JSON keys of the rules, indexed by RULE_*. */
extern const char *collection_rule_keys[RULE__COUNT];

/* The string value v as an owned copy (free), or NULL when v is not a string. */
static inline char *collection_jdup(const json_t *v)
{
    return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

/* The boolean o.k: def when absent or null. */
static inline int collection_jbool(const json_t *o, const char *k, int def)
{
    json_t *v = json_object_get(o, k);
    return v == NULL || json_is_null(v) ? def : json_is_true(v);
}

/* collection.c: 1 when s is 1..max letters, digits or underscores, not starting with
 * a digit (the names of collections and fields). */
int collection_valid_name(const char *s, size_t max);

/* collection_field.c: parses the field object o into f (zeroed first; its strings
 * owned by f: field_free, also after a failure). path names the field in errors
 * ("fields.3"). Returns 0, or -1 with err filled. */
int collection_parse_field(const json_t *o, field_t *f, const char *path, arena_t *arena, bs_error_t *err);

/* collection_index.c: parses "CREATE [UNIQUE] INDEX [IF NOT EXISTS] name ON table
 * (col [COLLATE NOCASE] [ASC|DESC], ...) [WHERE col != '']" into a normalized
 * statement on c. Returns an owned string (free), or NULL with err filled at path. */
char *collection_parse_index(const collection_t *c, const char *def, bs_error_t *err, arena_t *arena,
                             const char *path);

/* collection_options.c: the "search", "partition" and "retention" options of body
 * into c (whose fields are parsed already); base is the definition a PATCH changes,
 * or NULL. Problems go to err as field errors. */
void collection_parse_search(collection_t *c, const collection_t *base, const json_t *body, arena_t *arena,
                             bs_error_t *err);
void collection_parse_partition(collection_t *c, const collection_t *base, const json_t *body, arena_t *arena,
                                bs_error_t *err);
void collection_parse_retention(collection_t *c, const collection_t *base, const json_t *body, arena_t *arena,
                                bs_error_t *err);

#endif
