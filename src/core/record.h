/*
 * record — records of a collection: validation of input, JSON output (with
 * `fields` projection, hidden fields and nested `expand`), and the SQL that reads
 * and writes them. Reads run inside read jobs (store_read: a worker's reader on
 * SQLite, a read pool thread's connection on PostgreSQL), on the connection they are
 * given and nothing else; the write functions run inside writer jobs. Borrows the schema; allocates in the
 * caller's arena.
 */
#ifndef BASALT_CORE_RECORD_H
#define BASALT_CORE_RECORD_H

#include <jansson.h>

#include "core/resolve.h"
#include "core/schema.h"
#include "store/store.h"

/* A parsed comma list of dotted paths ("title,expand.author.name", "author,tags.owner"). */
typedef struct path_tree {
    char *name;
    struct path_tree *children;
    struct path_tree *next;
    /* fields only: ":excerpt(max[, ellipsis])" on this name, PocketBase's modifier
     * for a short plain-text form of a text value (0: none). */
    int excerpt_max;
    int excerpt_ellipsis;
} path_tree_t;

/* Parses list into a tree (NULL for an empty list). max_depth bounds nesting. */
path_tree_t *path_tree_parse(arena_t *a, const char *list, int max_depth, bs_error_t *err);
const path_tree_t *path_tree_find(const path_tree_t *t, const char *name);

/* Checks an expand tree against the schema: every name must be a relation field
 * the reader may see (hidden ones only for superusers). Returns 0 or -1 (400). */
int record_check_expand(const schema_t *s, const collection_t *c, const path_tree_t *expand, int superuser,
                        bs_error_t *err);

/* Bounds on what one response may hold (OWASP API4): the records expand adds, in all
 * levels together, and the bytes of the records written. A nested expand multiplies
 * (six accounts that list each other, six levels deep, are 117,000 records). */
#define RECORD_MAX_EXPANDED 5000
#define RECORD_MAX_RESPONSE_BYTES (16u << 20)

/* What one response has spent of those bounds; shared by every reader copy that
 * writes into the same response. */
typedef struct {
    size_t expanded;
    size_t bytes;
} record_budget_t;

/* Who is reading: decides hidden fields, email visibility and expand rules. */
typedef struct {
    const schema_t *schema;
    store_conn_t *conn;
    arena_t *arena;
    const caller_t *who; /* who is reading, with the request's facts; never NULL */
    int skip_view_rule;  /* the caller already decided (e.g. the writer's own result) */
    /* The response's budget (arena), or NULL: the output functions then use one of
     * their own per call, so a response is always bounded. */
    record_budget_t *budget;
} record_reader_t;

/* The collection an expand name reaches from c: a relation field's target, or for
 * "coll_via_field" (a back-relation) coll; NULL when it is neither. */
const collection_t *record_expand_target(const schema_t *s, const collection_t *c, const char *name);

/* Whether a body key naming no field is refused (1, --strict-fields) or ignored
 * (0, PocketBase's behaviour, the default). Called once at start-up. */
void record_set_strict_fields(int on);

/* Writes one stored value of field f as the JSON the API shows for it. */
void record_write_value(buf_t *out, const field_t *f, bs_value_t v);

/* Writes the current row of st (a SELECT * of c) as JSON. */
int record_write_row(const record_reader_t *r, const collection_t *c, store_stmt_t *st,
                     const path_tree_t *expand, const path_tree_t *fields, buf_t *out, int depth,
                     bs_error_t *err);

/* Writes a stored record (the JSON of all its fields, as record_load returns it)
 * as reader r may see it. */
int record_write_json(const record_reader_t *r, const collection_t *c, const json_t *rec,
                      const path_tree_t *expand, const path_tree_t *fields, buf_t *out, bs_error_t *err);
/* A stored record's value of f as the database holds it (text of JSON fields in a). */
bs_value_t record_json_cell(const field_t *f, const json_t *v, arena_t *a);

/* Looks up a record by id, applying rule_sql if not NULL (already compiled for the
 * statement: parameters are passed in params). Writes JSON; returns 1 found, 0 not
 * found, -1 error. */
int record_fetch(const record_reader_t *r, const collection_t *c, const char *id, const path_tree_t *expand,
                 const path_tree_t *fields, buf_t *out, bs_error_t *err);

/* Prepares "SELECT what FROM c WHERE id = ? [AND rule]" on r->conn (rule NULL or
 * "" adds nothing); body is @request.body. Returns the statement or NULL with err. */
store_stmt_t *record_select_by_id(const record_reader_t *r, const collection_t *c, const char *what,
                                  const char *id, const char *rule, const json_t *body, bs_error_t *err);

/* Whether record id of c satisfies rule for reader r (NULL rule: only superusers;
 * "": everyone). Returns 1, 0, or -1 with err. */
int record_matches(const record_reader_t *r, const collection_t *c, const char *id, const char *rule,
                   const json_t *body, bs_error_t *err);

/* Reads a record's stored fields into a JSON object (all fields, hidden included):
 * used for the authenticated record and for rules. Returns owned object or NULL. */
json_t *record_load(store_conn_t *conn, const collection_t *c, const char *field, const char *value,
                    bs_error_t *err);

/* The current row of st (a SELECT * or RETURNING * of c) as record_load's JSON. */
json_t *record_row_json(const collection_t *c, store_stmt_t *st);

/* Compiles rule text (or filter) for reader r into out, with parameters appended
 * to comp. */
int record_compile_rule(const record_reader_t *r, const collection_t *c, rules_compiler_t *comp,
                        const char *text, const json_t *body, buf_t *out, bs_error_t *err);

/* The same for a client's filter (not trusted): compiled with r's rights, so that
 * hidden fields are refused, private e-mails read as NULL and every collection
 * reached through a relation applies its list rule for r (see resolve_ctx_t). */
int record_compile_filter(const record_reader_t *r, const collection_t *c, rules_compiler_t *comp,
                          const char *text, buf_t *out, bs_error_t *err);

/* Whether the stored record rec of c (the JSON of all its fields) satisfies a rule
 * or filter for reader r: node is text parsed (NULL when text is empty). Decided in
 * memory when the rule reads only the record's own fields and request values;
 * otherwise with one query: against the row in the database when live, or, for a
 * record already deleted, against rec's fields standing in for its row. Superusers
 * are not special here (callers decide). Returns 1, 0 or -1 with err. */
int record_check(const record_reader_t *r, const collection_t *c, const json_t *rec, const rules_node_t *node,
                 const char *text, int live, bs_error_t *err);

/* record_check of a live record for a rule that may read @request.body (body, as the
 * SQL compiler would be given it; NULL: none): a write's rule against the row it just
 * stored, in the write's transaction. */
int record_check_body(const record_reader_t *r, const collection_t *c, const json_t *rec,
                      const rules_node_t *node, const char *text, const json_t *body, bs_error_t *err);

/* record_check for a client's filter (a realtime subscription's): evaluated with r's
 * rights as record_compile_filter compiles it, in memory and in the database. */
int record_check_filter(const record_reader_t *r, const collection_t *c, const json_t *rec,
                        const rules_node_t *node, const char *text, int live, bs_error_t *err);

/* ---- writes (writer thread) ---- */

/* Most items a body array may hold where a rule may read it (each item becomes an
 * SQL operand) or a modifier applies it. */
#define RECORD_MAX_BODY_ARRAY 1000

/* Collections a write touched (see record_write_t.touched). */
#define RECORD_MAX_TOUCHED 32
typedef struct {
    const char *ids[RECORD_MAX_TOUCHED]; /* collection ids, borrowed from the schema */
    int n;
    int overflow; /* more than fit: treat every collection as touched */
} record_touched_t;

typedef struct {
    const schema_t *schema;
    const collection_t *coll;
    const caller_t *who;       /* who is writing, with the request's facts; never NULL */
    const json_t *body;        /* the request's fields */
    const char *password_hash; /* auth collections: the new hash, or NULL */
    char id[101];              /* in: the record to update/delete; out: the created id */
    int check_rule;            /* apply the collection's rule for the action */
    /* in: a hint from the worker (decides whether oldPassword is asked for); out:
     * whether the requester passed the auth collection's manageRule, decided by the
     * writer with the request's final values. */
    int manage;
    int old_password_ok; /* the worker verified oldPassword for this password change */
    /* When not NULL, every record the write creates, changes or deletes (cascades
     * included) is appended as {"action","collectionId","record"} with all its stored
     * fields: the record after a create or update, before a delete. */
    json_t *changes;
    /* Always filled: every collection whose records the write created, changed or
     * deleted, cascades and cleared references at any depth included. The cache is
     * invalidated from it. Accumulates over the writes given the same w. */
    record_touched_t touched;
    /* File fields: the stored names of the files this request uploaded (an array,
     * borrowed; NULL for none). A file field's value may hold only these and the
     * names it held before. */
    const json_t *uploads;
    /* When not NULL, what the write leaves unreferenced in the file storage is
     * appended as storage keys (a name a field dropped, an upload no field kept) or
     * folder prefixes ending in '/' (a deleted record's): the caller deletes them
     * after the commit, and on failure deletes the uploads instead. */
    json_t *files_gone;
} record_write_t;

/* Checks a write's body against c's field definitions where no stored record is
 * needed (so the answer tells nothing about any record): value shapes, single-valued
 * fields given several values, maxSelect, JSON size, and array sizes a rule or a
 * modifier would work through. Run by the worker before the job goes to the single
 * writer, so a huge body never occupies it. Returns 0, or -1 with field errors. */
int record_precheck(const collection_t *c, const json_t *body, int rules_read_body, arena_t *a,
                    bs_error_t *err);

/* Notes collection c in t (no duplicates). */
void record_touch(record_touched_t *t, const collection_t *c);

/* Each returns 0 or -1 with err (validation field errors in arena; 404 when the
 * record is missing or the rule hides it; 400 when a create rule fails). */
int record_create(store_conn_t *conn, record_write_t *w, arena_t *arena, bs_error_t *err);
int record_update(store_conn_t *conn, record_write_t *w, arena_t *arena, bs_error_t *err);
int record_delete(store_conn_t *conn, record_write_t *w, arena_t *arena, bs_error_t *err);

/* A new random tokenKey (50 chars) into out (51 bytes). */
void record_new_token_key(char *out);

#endif
