/*
 * resolve — what identifiers in filters and rules mean for one collection: fields,
 * relation paths ("author.team.name", through single and multi relations),
 * @request.* values. It is the rules compiler's resolver (rules_resolve_fn).
 * Borrows everything; strings it makes live in the caller's arena.
 */
#ifndef BASALT_CORE_RESOLVE_H
#define BASALT_CORE_RESOLVE_H

#include <jansson.h>

#include "core/caller.h"
#include "core/schema.h"
#include "rules/dialect.h"
#include "rules/rules.h"

typedef struct {
    const schema_t *schema;
    const collection_t *coll;
    const char *alias; /* the records table's alias in the statement, e.g. "_r" */
    /* trusted, 1: a rule (written by a superuser) or a superuser's filter: hidden
     * fields, e-mails and every related collection are usable as stored. 0: a client's
     * filter or sort: hidden and secret fields (also through @request.auth) are
     * refused, an auth record's e-mail reads as NULL unless it is public or the
     * caller's own, and every collection reached through a relation shows only the
     * records its list rule lets the caller list (a null rule: 400). */
    int trusted;
    const caller_t *who; /* who is asking, with the request's facts; never NULL */
    const json_t *body;  /* request body object, or NULL */
    rules_compiler_t *compiler;
    /* Named @collection aliases ("@collection.posts:p.x"): the same alias is the same
     * row across the whole expression, which resolve_compile wraps in one EXISTS. */
    struct {
        const char *name; /* the alias as written */
        const collection_t *coll;
    } aliases[8];
    int naliases;
    int cal_base; /* makes the SQL names of those aliases unique per compiled text */
} resolve_ctx_t;

/* Bounds on what a client's filter or sort may make of one statement (each a 400
 * when exceeded, before the statement is prepared). */
#define RESOLVE_MAX_ARRAY 1000       /* values of one array from the request (body, query) */
#define RESOLVE_MAX_JOINS 32         /* relation hops of a client filter and sort together */
#define RESOLVE_MAX_SQL (512 * 1024) /* bytes of compiled SQL of one text */

/* JSON field paths ("meta.a.0"): at most this many segments after the field, each
 * at most this many bytes of [A-Za-z0-9_@#-]; a segment of digits only (at most 9)
 * is an array index. Anything else is a 400. */
#define RESOLVE_MAX_JSON_SEGS 16
#define RESOLVE_MAX_JSON_KEY 100

/* Splits path (the text after "field.") into segs (RESOLVE_MAX_JSON_SEGS of them),
 * setting *n. Returns 0, or -1 with a 400 naming full (the whole identifier). The
 * SQL compiler and the in-memory evaluator read a path the same way through it. */
int resolve_json_segments(const char *path, size_t len, dialect_json_seg_t *segs, size_t *n, const char *full,
                          bs_error_t *err);

/* The value at segs inside v (a key reads an object's member, an index an array's
 * item; anything else is missing): NULL when missing. Borrowed from v. */
const json_t *resolve_json_walk(const json_t *v, const dialect_json_seg_t *segs, size_t n);

/* A JSON scalar as a value (booleans as 0/1; arrays, objects and null as NULL);
 * text is borrowed from v. */
bs_value_t resolve_json_scalar(const json_t *v);

int resolve_identifier(void *ud, arena_t *arena, const char *name, size_t len, unsigned mods,
                       rules_resolved_t *out, bs_error_t *err);

/* Parses and compiles text against coll to check it; returns 0 or -1 (err filled). */
int resolve_check_rule(const schema_t *schema, const collection_t *coll, const char *text, arena_t *arena,
                       bs_error_t *err);

/* Parses and compiles text (a filter or rule) for ctx, appending SQL to out. An
 * empty text appends the dialect's true. */
int resolve_compile(resolve_ctx_t *ctx, arena_t *arena, const char *text, size_t len, buf_t *out,
                    bs_error_t *err);

#endif
