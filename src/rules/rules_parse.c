/*
 * The lexer and recursive-descent parser of the rules language. The lexer works on
 * the caller's text without copying until a token is kept in the AST.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules.h"

typedef enum {
    T_EOF,
    T_LPAREN,
    T_RPAREN,
    T_AND,
    T_OR,
    T_OP,
    T_IDENT,
    T_STRING,
    T_NUMBER,
    T_COMMA
} tok_kind_t;

typedef struct {
    tok_kind_t kind;
    const char *p; /* start in the source */
    size_t n;
    rules_op_t op;
    int any;
} tok_t;

typedef struct {
    arena_t *arena;
    const char *src;
    size_t len, pos;
    tok_t tok;
    size_t depth, exprs;
    const rules_limits_t *lim;
    bs_error_t *err;
    int failed;
} parser_t;

static void fail(parser_t *ps, size_t at, const char *what)
{
    if (ps->failed)
        return;
    ps->failed = 1;
    bs_error_set(ps->err, BS_ERR_BAD_REQUEST, "Invalid filter at character %zu: %s.", at + 1, what);
}

static int is_ident_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '@' || c == '#';
}

static int is_ident_char(char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '.' || c == ':';
}

static void next(parser_t *ps)
{
    const char *s = ps->src;
    size_t n = ps->len;
    for (;;) {
        while (ps->pos < n &&
               (s[ps->pos] == ' ' || s[ps->pos] == '\t' || s[ps->pos] == '\n' || s[ps->pos] == '\r'))
            ps->pos++;
        if (ps->pos + 1 < n && s[ps->pos] == '/' && s[ps->pos + 1] == '/') {
            while (ps->pos < n && s[ps->pos] != '\n')
                ps->pos++;
            continue;
        }
        break;
    }
    tok_t *t = &ps->tok;
    t->p = s + ps->pos;
    t->n = 0;
    t->any = 0;
    if (ps->pos >= n) {
        t->kind = T_EOF;
        return;
    }
    size_t start = ps->pos;
    char c = s[ps->pos];
    if (c == '(' || c == ')') {
        t->kind = c == '(' ? T_LPAREN : T_RPAREN;
        t->n = 1;
        ps->pos++;
        return;
    }
    if (c == ',') { /* only between a function's arguments */
        t->kind = T_COMMA;
        t->n = 1;
        ps->pos++;
        return;
    }
    if (c == '&' || c == '|') {
        if (ps->pos + 1 < n && s[ps->pos + 1] == c) {
            t->kind = c == '&' ? T_AND : T_OR;
            t->n = 2;
            ps->pos += 2;
            return;
        }
        fail(ps, start, c == '&' ? "expected '&&'" : "expected '||'");
        t->kind = T_EOF;
        return;
    }
    if (c == '?' || c == '=' || c == '!' || c == '<' || c == '>' || c == '~') {
        size_t i = ps->pos;
        if (s[i] == '?') {
            t->any = 1;
            i++;
        }
        const char *o = s + i;
        size_t rem = n - i;
#define OPIS(str) (rem >= sizeof(str) - 1 && memcmp(o, str, sizeof(str) - 1) == 0)
        if (OPIS("!=")) {
            t->op = RULES_NEQ;
            i += 2;
        } else if (OPIS("!~")) {
            t->op = RULES_NLIKE;
            i += 2;
        } else if (OPIS(">=")) {
            t->op = RULES_GTE;
            i += 2;
        } else if (OPIS("<=")) {
            t->op = RULES_LTE;
            i += 2;
        } else if (OPIS("=")) {
            t->op = RULES_EQ;
            i += 1;
        } else if (OPIS(">")) {
            t->op = RULES_GT;
            i += 1;
        } else if (OPIS("<")) {
            t->op = RULES_LT;
            i += 1;
        } else if (OPIS("~")) {
            t->op = RULES_LIKE;
            i += 1;
        } else {
            fail(ps, start, "unknown operator");
            t->kind = T_EOF;
            return;
        }
#undef OPIS
        t->kind = T_OP;
        t->n = i - start;
        ps->pos = i;
        return;
    }
    if (c == '\'' || c == '"') {
        size_t i = ps->pos + 1;
        while (i < n && s[i] != c) {
            if (s[i] == '\\' && i + 1 < n)
                i++;
            i++;
        }
        if (i >= n) {
            fail(ps, start, "unterminated string");
            t->kind = T_EOF;
            return;
        }
        t->kind = T_STRING;
        t->p = s + start + 1;
        t->n = i - start - 1;
        ps->pos = i + 1;
        return;
    }
    if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.') {
        size_t i = ps->pos + 1;
        while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == 'e' || s[i] == 'E' ||
                         ((s[i] == '-' || s[i] == '+') && (s[i - 1] == 'e' || s[i - 1] == 'E'))))
            i++;
        t->kind = T_NUMBER;
        t->n = i - start;
        ps->pos = i;
        return;
    }
    if (is_ident_start(c)) {
        size_t i = ps->pos + 1;
        while (i < n && is_ident_char(s[i]))
            i++;
        t->kind = T_IDENT;
        t->n = i - start;
        ps->pos = i;
        return;
    }
    fail(ps, start, "unexpected character");
    t->kind = T_EOF;
}

/* Copies a quoted string's contents, resolving backslash escapes of the quote and
 * of the backslash itself (other escapes are kept literally, as PocketBase does). */
static char *unescape(arena_t *a, const char *p, size_t n, size_t *out_len)
{
    char *o = arena_alloc(a, n + 1);
    if (o == NULL)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n && (p[i + 1] == '\'' || p[i + 1] == '"' || p[i + 1] == '\\'))
            i++;
        o[j++] = p[i];
    }
    o[j] = '\0';
    *out_len = j;
    return o;
}

static const struct {
    const char *name;
    unsigned bit;
} modifiers[] = {
    {"lower", RULES_MOD_LOWER}, {"length", RULES_MOD_LENGTH},   {"each", RULES_MOD_EACH},
    {"isset", RULES_MOD_ISSET}, {"changed", RULES_MOD_CHANGED},
};

static int parse_call(parser_t *ps, rules_operand_t *o);

/* An identifier directly followed by "(" names a function. */
static int at_call(const parser_t *ps)
{
    return ps->tok.kind == T_IDENT && ps->pos < ps->len && ps->src[ps->pos] == '(';
}

static int parse_operand(parser_t *ps, rules_operand_t *o)
{
    tok_t t = ps->tok;
    size_t at = (size_t)(t.p - ps->src);
    memset(o, 0, sizeof(*o));
    if (at_call(ps))
        return parse_call(ps, o);
    switch (t.kind) {
    case T_STRING:
        o->kind = RULES_LIT_STRING;
        o->name = unescape(ps->arena, t.p, t.n, &o->len);
        if (o->name == NULL) {
            bs_error_set(ps->err, BS_ERR_NOMEM, NULL);
            ps->failed = 1;
            return -1;
        }
        break;
    case T_NUMBER: {
        char tmp[64];
        if (t.n >= sizeof(tmp)) {
            fail(ps, at, "number too long");
            return -1;
        }
        memcpy(tmp, t.p, t.n);
        tmp[t.n] = '\0';
        char *end;
        double v = strtod(tmp, &end);
        if (*end != '\0' || !isfinite(v)) {
            fail(ps, at, "invalid number");
            return -1;
        }
        o->kind = RULES_LIT_NUMBER;
        o->num = v;
        o->name = arena_strndup(ps->arena, t.p, t.n);
        o->len = t.n;
        break;
    }
    case T_IDENT: {
        /* Split "name:mod1:mod2" into the name and its modifiers. Modifiers follow
         * the last segment only, so "@collection.posts:alias.title" keeps its alias. */
        size_t last_dot = 0;
        for (size_t i = 0; i < t.n; i++)
            if (t.p[i] == '.')
                last_dot = i;
        size_t base = last_dot;
        while (base < t.n && t.p[base] != ':')
            base++;
        if (base == t.n && t.n == 4 && memcmp(t.p, "true", 4) == 0) {
            o->kind = RULES_LIT_BOOL;
            o->boolean = 1;
        } else if (base == t.n && t.n == 5 && memcmp(t.p, "false", 5) == 0) {
            o->kind = RULES_LIT_BOOL;
        } else if (base == t.n && t.n == 4 && memcmp(t.p, "null", 4) == 0) {
            o->kind = RULES_LIT_NULL;
        } else {
            if (base == 0 || t.p[base - 1] == '.' || t.p[0] == '.') {
                fail(ps, at, "invalid identifier");
                return -1;
            }
            for (size_t i = 1; i < base; i++)
                if (t.p[i] == '.' && t.p[i - 1] == '.') {
                    fail(ps, at, "invalid identifier");
                    return -1;
                }
            o->kind = RULES_LIT_IDENT;
            o->name = arena_strndup(ps->arena, t.p, base);
            o->len = base;
            size_t i = base;
            while (i < t.n) {
                size_t s = ++i;
                while (i < t.n && t.p[i] != ':')
                    i++;
                unsigned bit = 0;
                for (size_t k = 0; k < sizeof(modifiers) / sizeof(modifiers[0]); k++)
                    if (strlen(modifiers[k].name) == i - s && memcmp(modifiers[k].name, t.p + s, i - s) == 0)
                        bit = modifiers[k].bit;
                if (bit == 0) {
                    fail(ps, at + s, "unknown modifier");
                    return -1;
                }
                o->mods |= bit;
            }
        }
        break;
    }
    default:
        fail(ps, at, t.kind == T_EOF ? "expected a value, found the end" : "expected a field or a value");
        return -1;
    }
    if ((o->kind == RULES_LIT_IDENT || o->kind == RULES_LIT_NUMBER) && o->name == NULL) {
        bs_error_set(ps->err, BS_ERR_NOMEM, NULL);
        ps->failed = 1;
        return -1;
    }
    next(ps);
    return ps->failed ? -1 : 0;
}

/* name "(" operand ("," operand)* ")": the arguments are plain operands (a call in
 * a call is refused, as in PocketBase), at most RULES_MAX_ARGS of them; rules_func.c
 * checks their count and kinds. A call counts as an expression towards the limit. */
static int parse_call(parser_t *ps, rules_operand_t *o)
{
    size_t at = (size_t)(ps->tok.p - ps->src);
    int fn = rules_func_lookup(ps->tok.p, ps->tok.n);
    if (fn < 0) {
        fail(ps, at, "unknown function");
        return -1;
    }
    if (++ps->exprs > ps->lim->max_exprs) {
        fail(ps, at, "too many expressions");
        return -1;
    }
    rules_operand_t args[RULES_MAX_ARGS];
    size_t n = 0;
    next(ps); /* "(" */
    next(ps);
    while (!ps->failed && ps->tok.kind != T_RPAREN) {
        size_t arg_at = (size_t)(ps->tok.p - ps->src);
        if (n == RULES_MAX_ARGS) {
            fail(ps, arg_at, "too many arguments");
            return -1;
        }
        if (at_call(ps)) {
            fail(ps, arg_at, "a function's argument cannot be another function");
            return -1;
        }
        if (parse_operand(ps, &args[n++]) != 0)
            return -1;
        if (ps->tok.kind == T_COMMA) {
            next(ps);
            if (ps->tok.kind == T_RPAREN) {
                fail(ps, (size_t)(ps->tok.p - ps->src), "expected an argument after ','");
                return -1;
            }
        } else if (ps->tok.kind != T_RPAREN) {
            fail(ps, (size_t)(ps->tok.p - ps->src), "expected ',' or ')'");
            return -1;
        }
    }
    if (ps->failed)
        return -1;
    rules_call_t *call = arena_calloc(ps->arena, sizeof(*call));
    rules_operand_t *copy = arena_alloc(ps->arena, (n ? n : 1) * sizeof(*copy));
    if (call == NULL || copy == NULL) {
        bs_error_set(ps->err, BS_ERR_NOMEM, NULL);
        ps->failed = 1;
        return -1;
    }
    memcpy(copy, args, n * sizeof(*copy));
    call->fn = (rules_fn_t)fn;
    call->args = copy;
    call->nargs = n;
    const char *bad = rules_func_check(call);
    if (bad != NULL) {
        fail(ps, at, bad);
        return -1;
    }
    o->kind = RULES_LIT_FUNC;
    o->call = call;
    o->name = ""; /* operands always have a name; a call's is empty */
    next(ps);     /* past ")" */
    return ps->failed ? -1 : 0;
}

static rules_node_t *parse_or(parser_t *ps);

static rules_node_t *new_node(parser_t *ps, rules_node_kind_t kind)
{
    rules_node_t *n = arena_calloc(ps->arena, sizeof(*n));
    if (n == NULL && !ps->failed) {
        ps->failed = 1;
        bs_error_set(ps->err, BS_ERR_NOMEM, NULL);
    }
    if (n != NULL)
        n->kind = kind;
    return n;
}

static rules_node_t *parse_unary(parser_t *ps)
{
    if (ps->failed)
        return NULL;
    if (ps->tok.kind == T_LPAREN) {
        size_t at = (size_t)(ps->tok.p - ps->src);
        if (++ps->depth > ps->lim->max_depth) {
            fail(ps, at, "too deeply nested");
            return NULL;
        }
        next(ps);
        rules_node_t *inner = parse_or(ps);
        if (ps->failed)
            return NULL;
        if (ps->tok.kind != T_RPAREN) {
            fail(ps, (size_t)(ps->tok.p - ps->src), "expected ')'");
            return NULL;
        }
        ps->depth--;
        next(ps);
        return inner;
    }
    rules_node_t *n = new_node(ps, RULES_N_CMP);
    if (n == NULL || parse_operand(ps, &n->lhs) != 0)
        return NULL;
    if (ps->tok.kind != T_OP) {
        fail(ps, (size_t)(ps->tok.p - ps->src), "expected an operator such as '=' or '~'");
        return NULL;
    }
    n->op = ps->tok.op;
    n->any = ps->tok.any;
    next(ps);
    if (ps->failed || parse_operand(ps, &n->rhs) != 0)
        return NULL;
    if (++ps->exprs > ps->lim->max_exprs) {
        fail(ps, (size_t)(ps->tok.p - ps->src), "too many expressions");
        return NULL;
    }
    return n;
}

static rules_node_t *parse_and(parser_t *ps)
{
    rules_node_t *left = parse_unary(ps);
    while (!ps->failed && ps->tok.kind == T_AND) {
        next(ps);
        rules_node_t *right = parse_unary(ps);
        rules_node_t *n = new_node(ps, RULES_N_AND);
        if (ps->failed || n == NULL)
            return NULL;
        n->left = left;
        n->right = right;
        left = n;
    }
    return ps->failed ? NULL : left;
}

static rules_node_t *parse_or(parser_t *ps)
{
    rules_node_t *left = parse_and(ps);
    while (!ps->failed && ps->tok.kind == T_OR) {
        next(ps);
        rules_node_t *right = parse_and(ps);
        rules_node_t *n = new_node(ps, RULES_N_OR);
        if (ps->failed || n == NULL)
            return NULL;
        n->left = left;
        n->right = right;
        left = n;
    }
    return ps->failed ? NULL : left;
}

rules_node_t *rules_parse(arena_t *arena, const char *text, size_t len, const rules_limits_t *limits,
                          bs_error_t *err)
{
    rules_limits_t lim = {3500, 200, 32};
    if (limits != NULL) {
        if (limits->max_length)
            lim.max_length = limits->max_length;
        if (limits->max_exprs)
            lim.max_exprs = limits->max_exprs;
        if (limits->max_depth)
            lim.max_depth = limits->max_depth;
    }
    if (len > lim.max_length) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The filter is too long (%zu characters; the limit is %zu).",
                     len, lim.max_length);
        return NULL;
    }
    if (memchr(text, '\0', len) != NULL) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid filter: it contains a NUL character.");
        return NULL;
    }
    parser_t ps = {.arena = arena, .src = text, .len = len, .lim = &lim, .err = err};
    next(&ps);
    if (ps.failed)
        return NULL;
    if (ps.tok.kind == T_EOF)
        return NULL;
    rules_node_t *root = parse_or(&ps);
    if (!ps.failed && ps.tok.kind != T_EOF)
        fail(&ps, (size_t)(ps.tok.p - ps.src),
             ps.tok.kind == T_RPAREN ? "unbalanced ')'" : "expected '&&', '||' or the end");
    return ps.failed ? NULL : root;
}

size_t rules_count(const rules_node_t *node)
{
    if (node == NULL)
        return 0;
    if (node->kind == RULES_N_CMP)
        return 1;
    return rules_count(node->left) + rules_count(node->right);
}
