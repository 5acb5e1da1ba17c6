/*
 * The collection options of a definition that are Basalt's own (collection_int.h):
 * "search" (a full-text index), "partition" (range partitioning by a date field) and
 * "retention" (records deleted after so many days). Each is checked against the
 * fields the definition has after its fields were parsed, and a PATCH without the key
 * keeps the base's value.
 */
#include <stdlib.h>
#include <string.h>

#include "core/collection_int.h"
#include "core/schema.h"

/* The "search" option: ["title", "body"], the text fields of a full-text index
 * (Basalt's; the list's ?search= uses it). Hidden fields stay out: a search is a
 * client's question and must not answer from text the client cannot read. */
void collection_parse_search(collection_t *c, const collection_t *base, const json_t *body, arena_t *arena,
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
void collection_parse_partition(collection_t *c, const collection_t *base, const json_t *body, arena_t *arena,
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
void collection_parse_retention(collection_t *c, const collection_t *base, const json_t *body, arena_t *arena,
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
