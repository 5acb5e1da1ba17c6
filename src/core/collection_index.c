/*
 * Index definitions of a collection (collection_int.h): a user's CREATE INDEX is
 * parsed and regenerated on the collection's own names, so that no user SQL reaches
 * the database; and collection_index_name (schema.h).
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "base/util.h"
#include "core/collection_int.h"
#include "core/schema.h"

/* Parses "CREATE [UNIQUE] INDEX [IF NOT EXISTS] name ON table (col [COLLATE NOCASE]
 * [ASC|DESC], ...) [WHERE col != '']" into a normalized statement on c. Returns an
 * owned string or NULL (err filled). User text never reaches the database as is. */
typedef struct {
    const char *p;
} lex_t;

static void skip_ws(lex_t *l)
{
    while (*l->p && isspace((unsigned char)*l->p))
        l->p++;
}

static int kw(lex_t *l, const char *word)
{
    skip_ws(l);
    size_t n = strlen(word);
    if (strncasecmp(l->p, word, n) == 0 && !(isalnum((unsigned char)l->p[n]) || l->p[n] == '_')) {
        l->p += n;
        return 1;
    }
    return 0;
}

static int ident(lex_t *l, char *out, size_t cap)
{
    skip_ws(l);
    char close = 0;
    if (*l->p == '`' || *l->p == '"' || *l->p == '[') {
        close = *l->p == '[' ? ']' : *l->p;
        l->p++;
    }
    size_t n = 0;
    while (*l->p && (isalnum((unsigned char)*l->p) || *l->p == '_')) {
        if (n + 1 >= cap)
            return -1;
        out[n++] = *l->p++;
    }
    out[n] = '\0';
    if (close) {
        if (*l->p != close)
            return -1;
        l->p++;
    }
    return n > 0 ? 0 : -1;
}

char *collection_parse_index(const collection_t *c, const char *def, bs_error_t *err, arena_t *arena,
                             const char *path)
{
    lex_t l = {def};
    char name[128], table[128], col[128];
    buf_t out;
    buf_init(&out, NULL);
    if (!kw(&l, "CREATE"))
        goto bad;
    int unique = kw(&l, "UNIQUE");
    if (!kw(&l, "INDEX"))
        goto bad;
    if (kw(&l, "IF")) {
        if (!kw(&l, "NOT") || !kw(&l, "EXISTS"))
            goto bad;
    }
    if (ident(&l, name, sizeof(name)) != 0 || !kw(&l, "ON") || ident(&l, table, sizeof(table)) != 0)
        goto bad;
    skip_ws(&l);
    if (*l.p++ != '(')
        goto bad;
    buf_printf(&out, "CREATE %sINDEX ", unique ? "UNIQUE " : "");
    sql_ident(&out, name);
    buf_puts(&out, " ON ");
    sql_ident(&out, c->name);
    buf_puts(&out, " (");
    for (int i = 0;; i++) {
        if (ident(&l, col, sizeof(col)) != 0)
            goto bad;
        if (collection_field(c, col) == NULL) {
            bs_error_field(err, arena, path, "validation_invalid_index",
                           "The index refers to an unknown field \"%s\".", col);
            buf_free(&out);
            return NULL;
        }
        if (i)
            buf_puts(&out, ", ");
        sql_ident(&out, col);
        if (kw(&l, "COLLATE")) {
            if (!kw(&l, "NOCASE"))
                goto bad;
            buf_puts(&out, " COLLATE NOCASE");
        }
        if (kw(&l, "ASC"))
            buf_puts(&out, " ASC");
        else if (kw(&l, "DESC"))
            buf_puts(&out, " DESC");
        skip_ws(&l);
        if (*l.p == ',') {
            l.p++;
            continue;
        }
        if (*l.p == ')') {
            l.p++;
            break;
        }
        goto bad;
    }
    buf_putc(&out, ')');
    if (kw(&l, "WHERE")) {
        if (ident(&l, col, sizeof(col)) != 0 || collection_field(c, col) == NULL)
            goto bad;
        skip_ws(&l);
        if (strncmp(l.p, "!= ''", 5) == 0 || strncmp(l.p, "<> ''", 5) == 0) {
            l.p += 5;
            buf_puts(&out, " WHERE ");
            sql_ident(&out, col);
            buf_puts(&out, " != ''");
        } else if (kw(&l, "IS")) {
            if (!kw(&l, "NOT") || !kw(&l, "NULL"))
                goto bad;
            buf_puts(&out, " WHERE ");
            sql_ident(&out, col);
            buf_puts(&out, " IS NOT NULL");
        } else {
            goto bad;
        }
    }
    skip_ws(&l);
    if (*l.p == ';')
        l.p++;
    skip_ws(&l);
    if (*l.p != '\0' || out.oom)
        goto bad;
    return buf_detach(&out);
bad:
    buf_free(&out);
    bs_error_field(
        err, arena, path, "validation_invalid_index",
        "Invalid index. Expected: CREATE [UNIQUE] INDEX name ON table (field [COLLATE NOCASE] [ASC|DESC], "
        "...) [WHERE field != ''].");
    return NULL;
}

int collection_index_leads(const collection_t *c, const char *field)
{
    /* Field names are identifiers (letters, digits, _): quoted as sql_ident does. */
    char col[160];
    int cl = snprintf(col, sizeof(col), "(\"%s\"", field);
    if (cl < 0 || (size_t)cl >= sizeof(col))
        return 0;
    int found = 0;
    for (size_t i = 0; !found && i < c->nindexes; i++) {
        /* Normalized: CREATE [UNIQUE ]INDEX "name" ON "table" ("col"[ ASC|DESC], ...)[ WHERE ...] */
        const char *s = c->indexes[i], *p = strstr(s, " ON ");
        p = p != NULL ? strstr(p, " (") : NULL;
        if (p == NULL || strstr(p, ") WHERE ") != NULL || strncmp(p + 1, col, (size_t)cl) != 0)
            continue;
        const char *after = p + 1 + cl;
        found = *after == ',' || *after == ')' || strncmp(after, " ASC", 4) == 0 ||
                strncmp(after, " DESC", 5) == 0;
    }
    return found;
}

int collection_index_name(const char *stmt, char *out, size_t cap)
{
    const char *q = strchr(stmt, '"');
    if (q == NULL)
        return -1;
    const char *e = strchr(q + 1, '"');
    if (e == NULL || (size_t)(e - q - 1) >= cap)
        return -1;
    memcpy(out, q + 1, (size_t)(e - q - 1));
    out[e - q - 1] = '\0';
    return 0;
}
