/*
 * rules — the filter and access-rule language shared by `?filter=` and collection
 * rules: lexer, parser (text -> AST in an arena) and compiler (AST -> a
 * parameterised SQL boolean expression). Pure: no I/O, no globals; any thread.
 *
 *   expr   := and ("||" and)*
 *   and    := unary ("&&" unary)*
 *   unary  := "(" expr ")" | operand op operand
 *   op     := "=" "!=" ">" ">=" "<" "<=" "~" "!~", each also with a leading "?"
 *   operand:= identifier (field path, @request.*, @collection.*, date macro)
 *           | 'string' | "string" | number | true | false | null
 *           | function "(" operand ("," operand)* ")"   (rules_func.c: geoDistance, strftime)
 *   comments: "//" to the end of the line.
 *
 * User values never enter the SQL text: every literal becomes a numbered parameter.
 * What an identifier means (a column, a relation path, a request value) is decided
 * by the caller's resolver, so this module knows nothing of schemas.
 */
#ifndef BASALT_RULES_RULES_H
#define BASALT_RULES_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "base/arena.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/value.h"

typedef enum {
    RULES_EQ,
    RULES_NEQ,
    RULES_GT,
    RULES_GTE,
    RULES_LT,
    RULES_LTE,
    RULES_LIKE,
    RULES_NLIKE
} rules_op_t;

typedef enum { RULES_N_AND, RULES_N_OR, RULES_N_CMP } rules_node_kind_t;

typedef enum {
    RULES_LIT_IDENT, /* field path or @-identifier; `name` holds it without modifiers */
    RULES_LIT_STRING,
    RULES_LIT_NUMBER,
    RULES_LIT_BOOL,
    RULES_LIT_NULL,
    RULES_LIT_FUNC /* a function call: `call` holds it (rules_func.c) */
} rules_operand_kind_t;

typedef enum {
    RULES_MOD_NONE = 0,
    RULES_MOD_LOWER = 1,
    RULES_MOD_LENGTH = 2,
    RULES_MOD_EACH = 4,
    RULES_MOD_ISSET = 8,
    RULES_MOD_CHANGED = 16,
    /* Not written by users: what a function's argument needs from the resolver
     * (rules_func.c). NUMERIC: one number (a number field, a geoPoint's lon/lat);
     * DATE: one date (a date or autodate field). Anything else is a 400. */
    RULES_MOD_NUMERIC = 32,
    RULES_MOD_DATE = 64
} rules_modifier_t;

typedef struct {
    rules_operand_kind_t kind;
    const char *name; /* identifier or string contents (unescaped), NUL-terminated */
    size_t len;
    double num;
    int boolean;
    unsigned mods;                 /* rules_modifier_t bits */
    const struct rules_call *call; /* RULES_LIT_FUNC */
} rules_operand_t;

/* A function call in a filter (rules_func.c). Arguments are plain operands: no
 * nested calls, no modifiers. */
typedef enum { RULES_FN_GEO_DISTANCE, RULES_FN_STRFTIME } rules_fn_t;
#define RULES_MAX_ARGS 10
typedef struct rules_call {
    rules_fn_t fn;
    const rules_operand_t *args;
    size_t nargs;
} rules_call_t;

typedef struct rules_node {
    rules_node_kind_t kind;
    struct rules_node *left, *right; /* AND / OR */
    rules_operand_t lhs, rhs;        /* CMP */
    rules_op_t op;
    int any; /* the "?" form */
} rules_node_t;

typedef struct {
    size_t max_length; /* characters; 0 = 3500 */
    size_t max_exprs;  /* comparisons; 0 = 200 */
    size_t max_depth;  /* parenthesis nesting; 0 = 32 */
} rules_limits_t;

/* Parses text into an AST allocated in arena. Returns NULL and fills err
 * (BS_ERR_BAD_REQUEST with a message naming the position) on any error. An empty
 * or all-whitespace text yields NULL with err untouched: the caller treats it as "no
 * condition". */
rules_node_t *rules_parse(arena_t *arena, const char *text, size_t len, const rules_limits_t *limits,
                          bs_error_t *err);

/* What the resolver tells the compiler an identifier means. */
typedef struct {
    int is_value;       /* 1: a constant (value, or values[] when multi) */
    bs_value_t value;   /* is_value && !multi */
    bs_value_t *values; /* is_value && multi */
    size_t nvalues;
    const char *sql;        /* !is_value: SQL expression of one value */
    const char *from;       /* !is_value && multi: FROM clause of the rows that hold the values */
    const char *where;      /* with from: the correlation condition ("1" if none) */
    int multi;              /* several values: non-"?" operators must hold for all of them */
    const char *length_sql; /* for :length on SQL operands; NULL = not supported */
    /* A value inside a JSON field ("meta.a.b"): its type is the stored value's, so
     * sql is the value as the backend reads it and these are its typed forms
     * (dialect_json_views_t): compared with a number constant the compiler uses
     * json_num, with a text constant json_text (a number never equals a string);
     * sort_sql is the ORDER BY key. All NULL for other operands. */
    const char *json_num, *json_text, *sort_sql;
    /* sql is a column of the collection's own table declared NOT NULL (schema_ddl.c):
     * an ORDER BY on it needs no NULLS FIRST/LAST, which on PostgreSQL would keep it
     * from walking a plain index in order (a sort of every matching row instead). */
    int not_null;
} rules_resolved_t;

/* Resolves one identifier (name without modifiers, e.g. "author.name",
 * "@request.auth.id", "@collection.posts.title"). Returns 0, or -1 with err filled
 * (e.g. unknown field, hidden field). Strings it returns must live in arena. */
typedef int (*rules_resolve_fn)(void *ud, arena_t *arena, const char *name, size_t len, unsigned mods,
                                rules_resolved_t *out, bs_error_t *err);

typedef enum { RULES_DIALECT_SQLITE, RULES_DIALECT_POSTGRES } rules_dialect_t;

typedef struct {
    rules_resolve_fn resolve;
    void *resolve_ud;
    int64_t now_ms;          /* what @now means; also the base of the other macros */
    rules_dialect_t dialect; /* the SQL written: rules/dialect.h (placeholders, literals, ...) */
    /* Parameters: the compiler appends to params and numbers them from
     * param_base + 1 on, so that several compiled parts can share one statement. */
    bs_value_t *params;
    size_t nparams, cap_params;
    int alias_seq; /* shared with the resolver so aliases stay unique in a statement */
    int joins;     /* relation hops the resolver added to the statement (it bounds them) */
} rules_compiler_t;

/* Parameters one statement may take from compiled text: well under SQLite's limit
 * (32766), so that no client input reaches it; more is a 400. */
#define RULES_MAX_PARAMS 2000

/* Appends a SQL boolean expression for node to out; returns 0 or -1 with err
 * (BS_ERR_BAD_REQUEST for semantic errors, BS_ERR_NOMEM). node may be NULL (the dialect's true). */
int rules_compile(rules_compiler_t *c, arena_t *arena, const rules_node_t *node, buf_t *out, bs_error_t *err);

/* Appends one parameter placeholder for v; returns -1 on out of memory. Used by
 * callers that add their own parameters to the same statement. */
int rules_add_param(rules_compiler_t *c, arena_t *arena, bs_value_t v, buf_t *out);

/* Date macro value: returns 0 and fills out (text in arena) if name is a macro
 * (@now, @todayStart, @year, ...), else -1. */
int rules_macro(arena_t *arena, int64_t now_ms, const char *name, size_t len, bs_value_t *out);

/* ---- evaluation in memory ----
 * The same semantics as the SQL the compiler writes (SQLite's comparison of values
 * of one class, NULL handling, LIKE with ESCAPE '\\', ASCII case folding), for
 * operands whose values are known without a database: the realtime fan-out checks
 * rules this way. What cannot be decided (an operand the lookup does not know,
 * values of different classes) is RULES_UNKNOWN, and the caller asks the database.
 */
typedef enum { RULES_FALSE = 0, RULES_TRUE = 1, RULES_UNKNOWN = 2 } rules_truth_t;

typedef struct {
    int unknown;              /* needs the database */
    int is_const;             /* a request value, not a column (matters for `= ''`) */
    int multi;                /* values[] holds the values */
    bs_value_t value;         /* !multi */
    const bs_value_t *values; /* multi */
    size_t nvalues;
    int json; /* a value inside a JSON field: typed as stored (see rules_resolved_t) */
} rules_evalue_t;

/* Fills out for an identifier (name without modifiers; mods given). Returns 0, or
 * -1 when the identifier is invalid (the rule is then false). Text may live in
 * arena. */
typedef int (*rules_lookup_fn)(void *ud, arena_t *arena, const char *name, size_t len, unsigned mods,
                               rules_evalue_t *out);

typedef struct {
    rules_lookup_fn lookup;
    void *ud;
    int64_t now_ms; /* for the date macros */
} rules_evaluator_t;

/* Evaluates node (NULL: true). */
rules_truth_t rules_eval(const rules_evaluator_t *ev, arena_t *arena, const rules_node_t *node);

/* SQLite's LIKE with ESCAPE '\\': % and _ wildcards, ASCII case-insensitive. */
int rules_like(const char *s, size_t sn, const char *p, size_t pn);

/* Whether the plain (non-"?") form of op over a multi-valued operand needs at least
 * one value: the positive operators do (an empty list satisfies none of them), the
 * negations != and !~ do not (an empty list has no value that equals or matches).
 * The compiler and the evaluator share this. */
static inline int rules_op_needs_item(rules_op_t op)
{
    return op != RULES_NEQ && op != RULES_NLIKE;
}

/* ---- functions (rules_func.c) ---- */
/* The function named name[0..n), or -1. */
int rules_func_lookup(const char *name, size_t n);
/* Checks a parsed call (argument count and kinds, strftime's format and
 * modifiers); returns NULL, or a message for the parser's error (static text). */
const char *rules_func_check(const rules_call_t *call);
/* Compiles a call: either *is_value = 1 and *value holds its result (every argument
 * was a constant: the call is computed here, text in arena), or *sql its SQL
 * expression. Returns 0 or -1 with err (BS_ERR_BAD_REQUEST, BS_ERR_NOMEM). */
int rules_func_compile(rules_compiler_t *c, arena_t *arena, const rules_call_t *call, const char **sql,
                       bs_value_t *value, int *is_value, bs_error_t *err);
/* Evaluates a call in memory as the compiled SQL would; fills out (unknown when an
 * argument is). Returns 0, or -1 when an argument is invalid (the rule is false). */
int rules_func_eval(const rules_evaluator_t *ev, arena_t *arena, const rules_call_t *call,
                    rules_evalue_t *out);

/* Counts comparisons in the tree (for limits and tests). */
size_t rules_count(const rules_node_t *node);

#endif
