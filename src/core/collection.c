/*
 * Collection definitions from a request body (schema.h's collection_from_json): a
 * create, or a PATCH on an existing definition; every key checked, the system fields
 * a type has put first, rules compiled against the result. The pieces live beside
 * this file, and collection_int.h holds what they share:
 *   collection_field.c    one field object: its type, its options, its flags
 *   collection_index.c    index definitions, parsed and regenerated so that no user
 *                         SQL reaches the database
 *   collection_options.c  the "search", "partition" and "retention" options
 *   collection_json.c     the JSON form: serializing, and parsing the stored form back
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "core/collection_int.h"
#include "core/record_hooks.h"
#include "core/resolve.h"
#include "core/schema.h"
#include "mail/mail.h"

const char *collection_rule_keys[RULE__COUNT] = {"listRule",   "viewRule", "createRule", "updateRule",
                                                 "deleteRule", "authRule", "manageRule"};

const field_t *collection_field_by_id(const collection_t *c, const char *id)
{
    for (size_t i = 0; id != NULL && i < c->nfields; i++)
        if (c->fields[i].id != NULL && strcmp(c->fields[i].id, id) == 0)
            return &c->fields[i];
    return NULL;
}

/* ---- parsing definitions ---- */

int collection_valid_name(const char *s, size_t max)
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
            if (!collection_valid_name(json_string_value(jid), 100) &&
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
        if (!json_is_string(jname) || !collection_valid_name(json_string_value(jname), 55)) {
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
            if (collection_parse_field(jf, &f, fpath, arena, err) != 0) {
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
        json_t *jr = json_object_get(body, collection_rule_keys[r]);
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
            bs_error_field(err, arena, collection_rule_keys[r], "validation_invalid_rule",
                           "A rule must be a string or null.");
            continue;
        }
        c->rules[r] = strdup(json_string_value(jr));
    }
    if (c->type == COLL_VIEW)
        for (int r = RULE_CREATE; r <= RULE_DELETE; r++)
            if (c->rules[r] != NULL)
                bs_error_field(
                    err, arena, collection_rule_keys[r], "validation_view_rule",
                    "View collections are read-only: createRule, updateRule and deleteRule must be "
                    "null.");
    /* auth options */
    if (c->type == COLL_AUTH) {
        json_t *pa = json_object_get(body, "passwordAuth"), *at = json_object_get(body, "authToken");
        c->password_auth = base ? base->password_auth : 1;
        json_t *idf = pa ? json_object_get(pa, "identityFields") : NULL;
        if (pa && json_object_get(pa, "enabled"))
            c->password_auth = collection_jbool(pa, "enabled", 1);
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
            char *norm = collection_parse_index(c, json_string_value(v), err, arena, ipath);
            if (norm != NULL)
                c->indexes[c->nindexes++] = norm;
        }
    } else if (base != NULL) {
        /* Re-normalize on the (maybe renamed) collection; drop indexes whose field is gone. */
        for (size_t i = 0; i < base->nindexes; i++) {
            bs_error_t ignored;
            bs_error_init(&ignored);
            char *norm = collection_parse_index(c, base->indexes[i], &ignored, arena, "indexes");
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
    collection_parse_partition(c, base, body, arena, err);
    /* Reminders (record_hooks.h): a patch without the key keeps them. */
    json_t *rem = json_object_get(body, "reminders");
    if (rem == NULL && base != NULL && base->reminders != NULL)
        rem = base->reminders;
    if (err->code == BS_ERR_OK || rem != NULL)
        record_hooks_parse_reminders(c, rem, schema, &c->reminders, arena, err);
    if (c->type == COLL_AUTH)
        mail_templates_parse(c, body, base ? base->mail_templates : NULL, &c->mail_templates, arena, err);
    collection_parse_retention(c, base, body, arena, err);
    collection_parse_search(c, base, body, arena, err);
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
                bs_error_field(err, arena, collection_rule_keys[r], "validation_invalid_rule", "%s",
                               rerr.message);
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
