/*
 * The filter/rule language. Properties checked on every input that compiles:
 *   1. user values never reach the SQL text: no quote character appears in it
 *      except in the compiler's own fixed fragments ('' and '\' and '%');
 *   2. the SQL is valid: SQLite prepares it inside a real statement.
 * Identifiers resolve to columns of a test table; names starting with "m" are
 * multi-valued (json_each), "@request.auth.x" are values.
 */
#include <assert.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/rules.h"

static sqlite3 *db;

static int resolve(void *ud, arena_t *a, const char *name, size_t len, unsigned mods, rules_resolved_t *out,
                   bs_error_t *err)
{
    (void)ud;
    (void)mods;
    if (len > 14 && memcmp(name, "@request.auth.", 14) == 0) {
        out->is_value = 1;
        out->value = bs_val_text(name + 14, len - 14);
        return 0;
    }
    if (name[0] == '@' || len > 40) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "unknown");
        return -1;
    }
    if (name[0] == 'm') {
        out->multi = 1;
        out->from = "json_each(\"_r\".\"m\") AS j";
        out->where = "1";
        out->sql = "j.value";
        return 0;
    }
    out->sql = name[0] == 'n' ? "\"_r\".\"n\"" : "\"_r\".\"t\"";
    (void)a;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    sqlite3_open(":memory:", &db);
    sqlite3_exec(db, "CREATE TABLE t (t TEXT, n NUMERIC, m JSON)", NULL, NULL, NULL);
    return 0;
}

static void check_quotes(const char *sql)
{
    for (const char *p = sql; *p; p++) {
        if (*p != '\'')
            continue;
        if (!strncmp(p, "''", 2) || !strncmp(p, "'\\'", 3) || !strncmp(p, "'%'", 3)) {
            p += p[1] == '\'' ? 1 : 2;
            continue;
        }
        fprintf(stderr, "user text in SQL: %s\n", sql);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    arena_t a;
    arena_init(&a, 4096);
    bs_error_t err;
    bs_error_init(&err);
    rules_node_t *root = rules_parse(&a, (const char *)data, size, NULL, &err);
    if (root != NULL) {
        rules_compiler_t c = {0};
        c.resolve = resolve;
        c.now_ms = 1700000000000;
        buf_t out;
        buf_init(&out, &a);
        if (rules_compile(&c, &a, root, &out, &err) == 0) {
            check_quotes(out.data);
            char *sql = arena_printf(&a, "SELECT 1 FROM t AS \"_r\" WHERE %s", out.data);
            sqlite3_stmt *st = NULL;
            int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
            if (rc != SQLITE_OK) {
                fprintf(stderr, "invalid SQL (%s): %s\n", sqlite3_errmsg(db), sql);
                abort();
            }
            assert((size_t)sqlite3_bind_parameter_count(st) == c.nparams);
            sqlite3_finalize(st);
        }
    } else {
        assert(err.code == BS_ERR_OK || bs_status(err.code) == 400 || err.code == BS_ERR_NOMEM);
    }
    arena_free(&a);
    return 0;
}
