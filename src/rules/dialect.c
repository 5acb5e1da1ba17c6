/* The two dialects' tables; see dialect.h. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "rules/dialect.h"

static const dialect_t sqlite_dialect = {
    .id = RULES_DIALECT_SQLITE,
    .name = "sqlite",
    .true_lit = "1",
    .false_lit = "0",
    .is_not_distinct = "IS",
    .is_distinct = "IS NOT",
    .like = "LIKE",
    .not_like = "NOT LIKE",
    .placeholder_fmt = "?%zu",
    .text_param_fmt = "%s",
    .number_param_fmt = "%s",
    .as_text_fmt = "%s",
    .column_param_fmt = "%1$s",
    .empty_cmp_fmt = "(COALESCE(%1$s, '') %2$s '')",
    .like_fmt = "(%1$s LIKE %2$s ESCAPE '\\')",
    .not_like_fmt = "(COALESCE(%1$s, '') NOT LIKE %2$s ESCAPE '\\')",
    .random_order = "RANDOM()",
    .sort_asc = " ASC",
    .sort_desc = " DESC",
    .rowid = "rowid",
    .week_start_fmt = "date(NULLIF(substr(%s, 1, 10), ''), '-6 days', 'weekday 1')",
    .json_elements_fmt = "json_each(%s) AS \"%s\"",
    .json_param_fmt = "%s",
    .json_length_fmt = "json_array_length(%s)",
    .json_agg_fmt = "COALESCE(json_group_array(%s), '[]')",
    .json_wrap_fmt = "json_array(%s)",
    .json_last_fmt = "json_extract(%s, '$[#-1]')",
    .json_text_fmt = "%s",
    .type_text = "TEXT",
    .type_number = "NUMERIC",
    .type_bool = "BOOLEAN",
    .type_json = "JSON",
    .extra_columns = "",
    .to_multi_fmt = "UPDATE %1$s SET %2$s = CASE WHEN %2$s = '' THEN '[]' ELSE json_array(%2$s) END;",
    .to_single_fmt = "UPDATE %1$s SET %2$s = COALESCE(json_extract(%2$s, '$[#-1]'), '');",
    .bootstrap_sql =
        "CREATE TABLE IF NOT EXISTS _collections (id TEXT PRIMARY KEY NOT NULL, name TEXT UNIQUE "
        "NOT NULL COLLATE NOCASE, type TEXT NOT NULL, system BOOLEAN NOT NULL DEFAULT FALSE, data "
        "JSON NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS _params (id TEXT PRIMARY KEY NOT NULL, value JSON);",
    /* off is the rowid: appends at the end of the b-tree, no second index. */
    .outbox_sql = "CREATE TABLE IF NOT EXISTS _events (off INTEGER PRIMARY KEY, coll TEXT NOT NULL, action "
                  "TEXT NOT NULL, record TEXT NOT NULL, created INTEGER NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS _events_seq (k INTEGER PRIMARY KEY CHECK (k = 1), n INTEGER "
                  "NOT NULL, epoch INTEGER NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS _realtime_requests (id TEXT PRIMARY KEY, origin TEXT NOT NULL, "
                  "target TEXT NOT NULL, request TEXT NOT NULL, created INTEGER NOT NULL, status INTEGER, "
                  "answer TEXT);",
    .outbox_seed_sql = "INSERT INTO _events_seq (k, n, epoch) VALUES (1, 0, ?1) ON CONFLICT (k) DO NOTHING",
    .insert_ignore_fmt = " ON CONFLICT (%s) DO NOTHING",
    .snapshot_begin = NULL,
    .cursor_open_fmt = NULL,
    .cursor_fetch_fmt = NULL,
    .cursor_close_fmt = NULL,
    .table_exists_sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
    .column_exists_sql = "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
    .identity_sql = NULL,
    .jobs_bootstrap_sql =
        "CREATE TABLE IF NOT EXISTS _jobs (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, payload TEXT "
        "NOT "
        "NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL, timeout_ms "
        "INTEGER "
        "NOT NULL, run_at INTEGER NOT NULL, lease_until INTEGER NOT NULL, owner TEXT NOT NULL, last_error "
        "TEXT NOT "
        "NULL, uniq TEXT UNIQUE, created INTEGER NOT NULL, updated INTEGER NOT NULL);"
        "CREATE INDEX IF NOT EXISTS _jobs_due ON _jobs (state, run_at);"
        "CREATE TABLE IF NOT EXISTS _otps (id TEXT PRIMARY KEY NOT NULL, collection_id TEXT NOT NULL, "
        "record_id "
        "TEXT NOT NULL, hash TEXT NOT NULL, attempts INTEGER NOT NULL, expires INTEGER NOT NULL, created "
        "INTEGER "
        "NOT NULL);"
        "CREATE INDEX IF NOT EXISTS _otps_record ON _otps (collection_id, record_id);"
        "CREATE TABLE IF NOT EXISTS _webhook_deliveries (id TEXT PRIMARY KEY NOT NULL, job_id TEXT NOT NULL, "
        "webhook TEXT NOT NULL, collection TEXT NOT NULL, action TEXT NOT NULL, record_id TEXT NOT NULL, url "
        "TEXT "
        "NOT NULL, attempt INTEGER NOT NULL, status INTEGER NOT NULL, error TEXT NOT NULL, created INTEGER "
        "NOT "
        "NULL);"
        "CREATE INDEX IF NOT EXISTS _webhook_deliveries_created ON _webhook_deliveries (created);",
    .skip_locked = "",
    /* Debian's SQLite is built with SQLITE_ENABLE_MATH_FUNCTIONS (radians, cos, ...);
     * store/sqlite registers them where a build lacks them. The many-argument min()
     * and max() are NULL when an argument is, so a NULL stays NULL. */
    /* The CASTs give the results a column's affinity, so that a request value such
     * as '500' compares as PostgreSQL compares it (as a number, and as text). */
    .geo_distance_fmt =
        "CAST(6371 * acos(min(1.0, max(-1.0, cos(radians(%2$s)) * cos(radians(%4$s)) * "
        "cos(radians(%3$s) - radians(%1$s)) + sin(radians(%2$s)) * sin(radians(%4$s))))) AS REAL)",
    .geo_member_fmt = "json_extract(%1$s, '$.%2$s')",
    .strftime_native = 1,
    /* Years 1 to 9999 only, as on PostgreSQL: JD 1721425.5 is 0001-01-01. */
    .strftime_fmt =
        "CAST(COALESCE(CASE WHEN julianday(%2$s) >= 1721425.5 THEN strftime(%1$s, %2$s) END, '') AS TEXT)",
    .schema_notify_sql = NULL,
};

#define PG_UPPER "'ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
#define PG_LOWER "'abcdefghijklmnopqrstuvwxyz'"

/* JSON fields and multi-value fields are jsonb (ADR 0004); booleans are boolean,
 * numbers double precision; dates stay text in PocketBase's sortable form. An
 * identity column stands in for SQLite's rowid. */
static const dialect_t postgres_dialect = {
    .id = RULES_DIALECT_POSTGRES,
    .name = "postgres",
    .true_lit = "true",
    .false_lit = "false",
    .is_not_distinct = "IS NOT DISTINCT FROM",
    .is_distinct = "IS DISTINCT FROM",
    .like = "ILIKE",
    .not_like = "NOT ILIKE",
    .placeholder_fmt = "$%zu",
    .text_param_fmt = "CAST(%s AS text)",
    .number_param_fmt = "CAST(%s AS double precision)",
    .as_text_fmt = "CAST(%s AS text)",
    .column_param_fmt = "CAST(%1$s AS %2$s)",
    /* Columns are typed: '' is no number, boolean or jsonb, so compare the text form.
     * SQLite's LIKE folds ASCII letters only, ILIKE every letter: both sides are
     * folded with translate() and compared case-sensitively, so that both backends
     * give the same answer; the left side is cast so that numbers match their text
     * as on SQLite. */
    .empty_cmp_fmt = "(COALESCE(CAST(%1$s AS text), '') %2$s '')",
    .like_fmt = "(translate(CAST(%1$s AS text), " PG_UPPER ", " PG_LOWER ") LIKE translate(%2$s, " PG_UPPER
                ", " PG_LOWER ") ESCAPE '\\')",
    .not_like_fmt = "(translate(COALESCE(CAST(%1$s AS text), ''), " PG_UPPER ", " PG_LOWER
                    ") NOT LIKE translate(%2$s, " PG_UPPER ", " PG_LOWER ") ESCAPE '\\')",
    .random_order = "random()",
    .sort_asc = " ASC NULLS FIRST",
    .sort_desc = " DESC NULLS LAST",
    .rowid = "_rowid",
    .week_start_fmt =
        "to_char(date_trunc('week', CAST(NULLIF(substr(%s, 1, 10), '') AS date)), 'YYYY-MM-DD')",
    .json_elements_fmt = "jsonb_array_elements_text(%s) AS \"%s\"(\"value\")",
    .json_param_fmt = "CAST(%s AS jsonb)",
    .json_length_fmt = "jsonb_array_length(%s)",
    .json_agg_fmt = "COALESCE(jsonb_agg(%s), '[]'::jsonb)",
    .json_wrap_fmt = "jsonb_build_array(%s)",
    .json_last_fmt = "(%s->>-1)",
    .json_text_fmt = "CAST(%s AS text)",
    .type_text = "text",
    .type_number = "double precision",
    .type_bool = "boolean",
    .type_json = "jsonb",
    .extra_columns = ", \"_rowid\" bigint GENERATED ALWAYS AS IDENTITY",
    .to_multi_fmt =
        "ALTER TABLE %1$s ALTER COLUMN %2$s DROP DEFAULT, ALTER COLUMN %2$s TYPE jsonb USING (CASE "
        "WHEN %2$s = '' THEN '[]'::jsonb ELSE jsonb_build_array(%2$s) END), ALTER COLUMN %2$s SET "
        "DEFAULT '[]'::jsonb;",
    .to_single_fmt = "ALTER TABLE %1$s ALTER COLUMN %2$s DROP DEFAULT, ALTER COLUMN %2$s TYPE text USING "
                     "COALESCE(%2$s->>-1, ''), ALTER COLUMN %2$s SET DEFAULT '';",
    /* The definitions are kept as text (formatting as written); names are unique
     * regardless of case, as SQLite's NOCASE column makes them. */
    .bootstrap_sql =
        "CREATE TABLE IF NOT EXISTS _collections (id text PRIMARY KEY NOT NULL, name text NOT NULL, "
        "type text NOT NULL, system boolean NOT NULL DEFAULT false, data text NOT NULL, created "
        "text NOT NULL, updated text NOT NULL, _rowid bigint GENERATED ALWAYS AS IDENTITY);"
        "CREATE UNIQUE INDEX IF NOT EXISTS _collections_name ON _collections (lower(name));"
        "CREATE TABLE IF NOT EXISTS _params (id text PRIMARY KEY NOT NULL, value text);",
    /* CREATE ... IF NOT EXISTS races in PostgreSQL's catalogue (a duplicate key in
     * pg_type) and a fresh database's first collections would be made twice. */
    .ddl_lock_sql = "SELECT pg_advisory_xact_lock(7419362001)",
    .outbox_sql = "CREATE TABLE IF NOT EXISTS _events (off bigint PRIMARY KEY, coll text NOT NULL, action "
                  "text NOT NULL, record text NOT NULL, created bigint NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS _events_seq (k integer PRIMARY KEY CHECK (k = 1), n bigint "
                  "NOT NULL, epoch bigint NOT NULL);"
                  "CREATE TABLE IF NOT EXISTS _realtime_requests (id text PRIMARY KEY, origin text NOT NULL, "
                  "target text NOT NULL, request text NOT NULL, created bigint NOT NULL, status integer, "
                  "answer text);",
    .outbox_seed_sql = "INSERT INTO _events_seq (k, n, epoch) VALUES (1, 0, ?1) ON CONFLICT (k) DO NOTHING",
    /* The counter's row lock is taken by the UPDATE as before; the INSERT reads the
     * offsets it returned (a data-modifying CTE runs once, whatever reads it). */
    .outbox_append_sql =
        "WITH s AS (UPDATE _events_seq SET n = n + CAST(?1 AS bigint) WHERE k = 1 RETURNING n), "
        "i AS (INSERT INTO _events (off, coll, action, record, created) SELECT s.n - ?1 + e.ord, e.v->>0, "
        "e.v->>1, e.v->>2, CAST(?3 AS bigint) FROM s, jsonb_array_elements(CAST(?2 AS jsonb)) WITH "
        "ORDINALITY AS e(v, ord) "
        "RETURNING 1) SELECT s.n, (SELECT count(*) FROM i), CAST(?3 AS bigint) FROM s",
    .insert_ignore_fmt = " ON CONFLICT (%s) DO NOTHING",
    .snapshot_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    .cursor_open_fmt = "DECLARE %s NO SCROLL CURSOR FOR %s",
    .cursor_fetch_fmt = "FETCH FORWARD %d FROM %s",
    .cursor_close_fmt = "CLOSE %s",
    .table_exists_sql = "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND "
                        "tablename = ?1",
    .column_exists_sql = "SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                         "current_schema() AND table_name = ?1 AND column_name = ?2",
    /* The cluster's identifier (pg_controldata's) and the database's name. */
    .identity_sql = "SELECT CAST(system_identifier AS text) || '/' || current_database() FROM "
                    "pg_control_system()",
    .partition_key_fmt = ", PRIMARY KEY (\"id\", %s)) PARTITION BY RANGE (%s);",
    .partition_objects_fmt =
        "CREATE TABLE \"_ids_%1$s\" (\"id\" text PRIMARY KEY);"
        "CREATE FUNCTION \"_ids_sync_%1$s\"() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN "
        "IF TG_OP = 'INSERT' THEN INSERT INTO \"_ids_%1$s\" VALUES (NEW.\"id\"); "
        "ELSIF TG_OP = 'DELETE' THEN DELETE FROM \"_ids_%1$s\" WHERE \"id\" = OLD.\"id\"; "
        "ELSIF NEW.\"id\" <> OLD.\"id\" THEN UPDATE \"_ids_%1$s\" SET \"id\" = NEW.\"id\" WHERE \"id\" = "
        "OLD.\"id\"; END IF; RETURN NULL; END $f$;"
        "CREATE TRIGGER \"_ids_%1$s\" AFTER INSERT OR DELETE OR UPDATE OF \"id\" ON %2$s FOR EACH ROW "
        "EXECUTE FUNCTION \"_ids_sync_%1$s\"();"
        "CREATE TABLE \"_p_%1$s_default\" PARTITION OF %2$s DEFAULT;",
    .partition_of_fmt = "CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')",
    .partition_drop_fmt = "DROP TABLE IF EXISTS \"_ids_%1$s\"; DROP FUNCTION IF EXISTS \"_ids_sync_%1$s\"();",
    .jobs_bootstrap_sql =
        "CREATE TABLE IF NOT EXISTS _jobs (id text PRIMARY KEY NOT NULL, name text NOT NULL, payload text "
        "NOT "
        "NULL, state text NOT NULL, attempts integer NOT NULL, max_attempts integer NOT NULL, timeout_ms "
        "bigint "
        "NOT NULL, run_at bigint NOT NULL, lease_until bigint NOT NULL, owner text NOT NULL, last_error text "
        "NOT "
        "NULL, uniq text UNIQUE, created bigint NOT NULL, updated bigint NOT NULL);"
        "CREATE INDEX IF NOT EXISTS _jobs_due ON _jobs (state, run_at);"
        "CREATE TABLE IF NOT EXISTS _otps (id text PRIMARY KEY NOT NULL, collection_id text NOT NULL, "
        "record_id "
        "text NOT NULL, hash text NOT NULL, attempts integer NOT NULL, expires bigint NOT NULL, created "
        "bigint "
        "NOT NULL);"
        "CREATE INDEX IF NOT EXISTS _otps_record ON _otps (collection_id, record_id);"
        "CREATE TABLE IF NOT EXISTS _webhook_deliveries (id text PRIMARY KEY NOT NULL, job_id text NOT NULL, "
        "webhook text NOT NULL, collection text NOT NULL, action text NOT NULL, record_id text NOT NULL, url "
        "text "
        "NOT NULL, attempt integer NOT NULL, status integer NOT NULL, error text NOT NULL, created bigint "
        "NOT "
        "NULL);"
        "CREATE INDEX IF NOT EXISTS _webhook_deliveries_created ON _webhook_deliveries (created);",
    .skip_locked = " FOR UPDATE SKIP LOCKED",
    /* LEAST and GREATEST skip NULLs, so NULL is checked first; acos past 1 is an
     * error here (not NaN), hence the clamp. */
    .geo_distance_fmt =
        "(CASE WHEN %1$s IS NULL OR %2$s IS NULL OR %3$s IS NULL OR %4$s IS NULL THEN NULL "
        "ELSE 6371 * acos(LEAST(1.0, GREATEST(-1.0, cos(radians(%2$s)) * cos(radians(%4$s)) * "
        "cos(radians(%3$s) - radians(%1$s)) + sin(radians(%2$s)) * sin(radians(%4$s))))) END)",
    .geo_member_fmt = "CAST((%1$s)->>'%2$s' AS double precision)",
    .strftime_native = 0,
    .strftime_fmt = NULL,
    .schema_notify_sql = "NOTIFY basalt_schema",
};

const dialect_t *dialect_get(rules_dialect_t id)
{
    return id == RULES_DIALECT_POSTGRES ? &postgres_dialect : &sqlite_dialect;
}

void dialect_placeholder(const dialect_t *d, buf_t *b, size_t n)
{
    buf_printf(b, d->placeholder_fmt, n);
}

void dialect_typed_placeholder(const dialect_t *d, buf_t *b, size_t n, int number)
{
    char ph[32];
    snprintf(ph, sizeof(ph), d->placeholder_fmt, n);
    buf_printf(b, number ? d->number_param_fmt : d->text_param_fmt, ph);
}

void dialect_json_elements(const dialect_t *d, buf_t *b, const char *expr, const char *alias)
{
    buf_printf(b, d->json_elements_fmt, expr, alias);
}

void dialect_index(const dialect_t *d, buf_t *b, const char *stmt)
{
    static const char nocase[] = " COLLATE NOCASE";
    if (d->id != RULES_DIALECT_POSTGRES) {
        buf_puts(b, stmt);
        return;
    }
    /* The normalized form quotes every column and writes COLLATE NOCASE right after
     * it; field names are [A-Za-z0-9_] (core/collection_field.c), so no quote inside. */
    const char *p = stmt;
    for (;;) {
        const char *hit = strstr(p, nocase);
        if (hit == NULL) {
            buf_puts(b, p);
            return;
        }
        /* Find the opening quote of the identifier that ends at hit. */
        const char *open = hit - 1;
        if (open < p || *open != '"') {
            buf_append(b, p, (size_t)(hit - p) + sizeof(nocase) - 1);
            p = hit + sizeof(nocase) - 1;
            continue;
        }
        for (open--; open > p && *open != '"'; open--)
            ;
        buf_append(b, p, (size_t)(open - p));
        buf_puts(b, "lower(");
        buf_append(b, open, (size_t)(hit - open));
        buf_putc(b, ')');
        p = hit + sizeof(nocase) - 1;
    }
}

/* ---- full-text search ---- */

/* SQLite: an FTS5 table over the columns, kept by triggers from the records table
 * (external content: the text is stored once). PostgreSQL: a GIN index on the
 * tsvector of the columns, and queries use the same expression so they can use it. */
static void fts_cols(buf_t *b, const char *prefix, const char *const *cols, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "%s%s\"%s\"", i ? ", " : "", prefix, cols[i]);
}

static void pg_tsvector(buf_t *b, const char *alias, const char *const *cols, size_t n)
{
    buf_puts(b, "to_tsvector('simple', ");
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "%scoalesce(%s%s\"%s\", '')", i ? " || ' ' || " : "", alias ? alias : "",
                   alias ? "." : "", cols[i]);
    buf_putc(b, ')');
}

void dialect_fts_create(const dialect_t *d, buf_t *b, const char *id, const char *table,
                        const char *const *cols, size_t n)
{
    if (d->id == RULES_DIALECT_POSTGRES) {
        buf_printf(b, "CREATE INDEX \"_fts_%s\" ON %s USING GIN (", id, table);
        pg_tsvector(b, NULL, cols, n);
        buf_puts(b, ");");
        return;
    }
    buf_printf(b, "CREATE VIRTUAL TABLE \"_fts_%s\" USING fts5(", id);
    fts_cols(b, "", cols, n);
    buf_printf(b, ", content=%s, content_rowid='rowid', tokenize='unicode61 remove_diacritics 0');", table);
    buf_printf(b, "CREATE TRIGGER \"_fts_%s_ai\" AFTER INSERT ON %s BEGIN INSERT INTO \"_fts_%s\"(rowid, ",
               id, table, id);
    fts_cols(b, "", cols, n);
    buf_puts(b, ") VALUES (new.rowid, ");
    fts_cols(b, "new.", cols, n);
    buf_puts(b, "); END;");
    buf_printf(
        b,
        "CREATE TRIGGER \"_fts_%s_ad\" AFTER DELETE ON %s BEGIN INSERT INTO \"_fts_%s\"(\"_fts_%s\", rowid, ",
        id, table, id, id);
    fts_cols(b, "", cols, n);
    buf_puts(b, ") VALUES ('delete', old.rowid, ");
    fts_cols(b, "old.", cols, n);
    buf_puts(b, "); END;");
    buf_printf(
        b,
        "CREATE TRIGGER \"_fts_%s_au\" AFTER UPDATE ON %s BEGIN INSERT INTO \"_fts_%s\"(\"_fts_%s\", rowid, ",
        id, table, id, id);
    fts_cols(b, "", cols, n);
    buf_puts(b, ") VALUES ('delete', old.rowid, ");
    fts_cols(b, "old.", cols, n);
    buf_printf(b, "); INSERT INTO \"_fts_%s\"(rowid, ", id);
    fts_cols(b, "", cols, n);
    buf_puts(b, ") VALUES (new.rowid, ");
    fts_cols(b, "new.", cols, n);
    buf_puts(b, "); END;");
    buf_printf(b, "INSERT INTO \"_fts_%s\"(\"_fts_%s\") VALUES ('rebuild');", id, id);
}

void dialect_fts_drop(const dialect_t *d, buf_t *b, const char *id)
{
    if (d->id == RULES_DIALECT_POSTGRES) {
        buf_printf(b, "DROP INDEX IF EXISTS \"_fts_%s\";", id);
        return;
    }
    buf_printf(b,
               "DROP TRIGGER IF EXISTS \"_fts_%1$s_ai\"; DROP TRIGGER IF EXISTS \"_fts_%1$s_ad\"; "
               "DROP TRIGGER IF EXISTS \"_fts_%1$s_au\"; DROP TABLE IF EXISTS \"_fts_%1$s\";",
               id);
}

/* SQLite: the row's rowid among the index's matches (prefix "+": not usable by the
 * planner to drive the read). */
static void fts_rowid_in(buf_t *b, const char *prefix, const char *alias, const char *id, const char *param)
{
    buf_printf(b, "%s%s.rowid IN (SELECT rowid FROM \"_fts_%s\" WHERE \"_fts_%s\" MATCH %s)", prefix, alias,
               id, id, param);
}

void dialect_fts_match(const dialect_t *d, buf_t *b, const char *id, const char *alias,
                       const char *const *cols, size_t n, const char *param)
{
    if (d->id == RULES_DIALECT_POSTGRES) {
        pg_tsvector(b, alias, cols, n);
        buf_printf(b, " @@ to_tsquery('simple', %s)", param);
        return;
    }
    fts_rowid_in(b, "", alias, id, param);
}

void dialect_fts_rank(const dialect_t *d, buf_t *b, const char *id, const char *alias,
                      const char *const *cols, size_t n, const char *param)
{
    /* Best first in ascending order: bm25 is lower for better matches; ts_rank higher. */
    if (d->id == RULES_DIALECT_POSTGRES) {
        buf_puts(b, "(0 - ts_rank(");
        pg_tsvector(b, alias, cols, n);
        buf_printf(b, ", to_tsquery('simple', %s)))", param);
        return;
    }
    (void)id;
    (void)alias;
    (void)param;
    buf_puts(b, "\"_fts\".\"_score\"");
}

void dialect_fts_join(const dialect_t *d, buf_t *b, const char *id, const char *alias, const char *param)
{
    if (d->id == RULES_DIALECT_POSTGRES)
        return;
    buf_printf(b,
               " JOIN (SELECT rowid AS \"_row\", bm25(\"_fts_%s\") AS \"_score\" FROM \"_fts_%s\" WHERE "
               "\"_fts_%s\" MATCH %s) AS \"_fts\" ON \"_fts\".\"_row\" = %s.rowid",
               id, id, id, param, alias);
}

int dialect_fts_count(const dialect_t *d, buf_t *b, const char *id, const char *param)
{
    if (d->id == RULES_DIALECT_POSTGRES)
        return 0;
    buf_printf(b, "SELECT COUNT(*) FROM \"_fts_%s\" WHERE \"_fts_%s\" MATCH %s", id, id, param);
    return 1;
}

int dialect_fts_filter(const dialect_t *d, buf_t *b, const char *id, const char *alias, const char *param)
{
    if (d->id == RULES_DIALECT_POSTGRES)
        return 0;
    fts_rowid_in(b, "+", alias, id, param);
    return 1;
}

int dialect_fts_query(const dialect_t *d, buf_t *b, const char *text)
{
    /* Words of letters and digits (any non-ASCII byte counts as a letter); each must
     * appear, the last one also as a prefix of a word. Nothing of the text's own
     * syntax reaches the query language. */
    int words = 0;
    const unsigned char *p = (const unsigned char *)text;
    while (*p) {
        while (*p && !(isalnum(*p) || *p >= 0x80))
            p++;
        if (!*p)
            break;
        const unsigned char *s = p;
        while (*p && (isalnum(*p) || *p >= 0x80))
            p++;
        if (++words > 32)
            return -1;
        if (d->id == RULES_DIALECT_POSTGRES)
            buf_printf(b, "%s%.*s", words > 1 ? " & " : "", (int)(p - s), (const char *)s);
        else
            buf_printf(b, "%s\"%.*s\"", words > 1 ? " " : "", (int)(p - s), (const char *)s);
    }
    if (words > 0)
        buf_puts(b, d->id == RULES_DIALECT_POSTGRES ? ":*" : "*");
    return words;
}

/* ---- JSON field paths ---- */

/* SQLite: one parameter, the path "$.\"key\"[0]" (keys are quoted labels; the
 * resolver lets no '"' or '\\' into a key). json_valid guards text that is no
 * JSON (json_extract would fail the statement). PostgreSQL: one -> per segment, a
 * key as text and an index as integer, so that an index never reads an object's key
 * and a key never an array's item: what SQLite's path does. */
int dialect_json_path(const dialect_t *d, rules_compiler_t *c, arena_t *a, const char *col,
                      const dialect_json_seg_t *segs, size_t n, dialect_json_views_t *out)
{
    buf_t b;
    buf_init(&b, a);
    if (d->id != RULES_DIALECT_POSTGRES) {
        buf_t path, ph;
        buf_init(&path, a);
        buf_init(&ph, a);
        buf_putc(&path, '$');
        for (size_t i = 0; i < n; i++) {
            if (segs[i].is_index)
                buf_printf(&path, "[%.*s]", (int)segs[i].n, segs[i].key);
            else
                buf_printf(&path, ".\"%.*s\"", (int)segs[i].n, segs[i].key);
        }
        if (path.oom || rules_add_param(c, a, bs_val_text(path.data, path.len), &ph) != 0)
            return -1;
        const char *p = ph.data;
        out->value = arena_printf(a, "(CASE WHEN json_valid(%s) THEN json_extract(%s, %s) END)", col, col, p);
        out->num =
            arena_printf(a,
                         "(CASE WHEN json_valid(%s) AND json_type(%s, %s) IN ('integer', 'real', 'true', "
                         "'false') THEN json_extract(%s, %s) END)",
                         col, col, p, col, p);
        out->text = arena_printf(
            a, "(CASE WHEN json_valid(%s) AND json_type(%s, %s) = 'text' THEN json_extract(%s, %s) END)", col,
            col, p, col, p);
        /* SQLite orders NULL, numbers, text already; arrays and objects read as text. */
        out->sort = out->value;
        /* -> keeps a JSON true a boolean (json_extract reads it as 1). */
        out->group =
            arena_printf(a, "(CASE WHEN json_valid(%s) AND json_type(%s, %s) <> 'null' THEN %s -> %s END)",
                         col, col, p, col, p);
        return out->value && out->num && out->text && out->group ? 0 : -1;
    }
    /* to_jsonb: a jsonb column as it is; a view's column of another type (text, a
     * number) becomes a JSON scalar that no path enters, rather than an error. */
    buf_printf(&b, "(to_jsonb(%s)", col);
    for (size_t i = 0; i < n; i++) {
        buf_puts(&b, " -> ");
        if (segs[i].is_index)
            buf_puts(&b, "CAST(");
        if (rules_add_param(c, a, bs_val_text(segs[i].key, segs[i].n), &b) != 0)
            return -1;
        buf_puts(&b, segs[i].is_index ? " AS integer)" : "::text");
    }
    buf_putc(&b, ')');
    if (b.oom)
        return -1;
    const char *v = b.data;
    out->value = arena_printf(a, "(%s #>> '{}')", v);
    out->num =
        arena_printf(a,
                     "(CASE jsonb_typeof(%s) WHEN 'number' THEN CAST(%s #>> '{}' AS double precision) "
                     "WHEN 'boolean' THEN CAST(CASE WHEN %s = 'true'::jsonb THEN 1 ELSE 0 END AS double "
                     "precision) END)",
                     v, v, v);
    out->text = arena_printf(a, "(CASE WHEN jsonb_typeof(%s) = 'string' THEN %s #>> '{}' END)", v, v);
    out->sort =
        arena_printf(a,
                     "ROW(CASE COALESCE(jsonb_typeof(%s), 'null') WHEN 'null' THEN 0 WHEN 'number' THEN 1 "
                     "WHEN 'boolean' THEN 1 ELSE 2 END, COALESCE(%s, 0), COALESCE(%s #>> '{}', ''))",
                     v, out->num ? out->num : "0", v);
    out->group = arena_printf(a, "NULLIF(%s, CAST('null' AS jsonb))", v);
    return out->value && out->num && out->text && out->sort && out->group ? 0 : -1;
}

/* PostgreSQL's pieces of strftime (see dialect.h). Dates are text in PocketBase's
 * form ("2024-01-02 10:00:00.000Z"); as timestamp without time zone the Z is read
 * and dropped, which is right for UTC. */
void dialect_date_cast(const dialect_t *d, buf_t *b, const char *col)
{
    (void)d;
    buf_printf(b, "CAST(NULLIF(%s, '') AS timestamp)", col);
}

int dialect_date_start(const dialect_t *d, buf_t *b, const char *t, const char *unit)
{
    (void)d;
    if (strcmp(unit, "day") != 0 && strcmp(unit, "month") != 0 && strcmp(unit, "year") != 0)
        return -1;
    buf_printf(b, "date_trunc('%s', %s)", unit, t);
    return 0;
}

int dialect_date_add(const dialect_t *d, buf_t *b, const char *t, long long n, const char *unit)
{
    (void)d;
    if (strcmp(unit, "days") != 0 && strcmp(unit, "hours") != 0 && strcmp(unit, "minutes") != 0 &&
        strcmp(unit, "seconds") != 0)
        return -1;
    buf_printf(b, "(%s + interval '%lld %s')", t, n, unit);
    return 0;
}

void dialect_date_guard(const dialect_t *d, buf_t *b, const char *t)
{
    (void)d;
    buf_printf(b, "(CASE WHEN extract(year from %s) BETWEEN 1 AND 9999 THEN %s END)", t, t);
}

int dialect_date_piece(const dialect_t *d, buf_t *b, const char *t, char spec)
{
    (void)d;
    const char *pat = NULL;
    switch (spec) {
    case 'Y':
        pat = "YYYY";
        break;
    case 'm':
        pat = "MM";
        break;
    case 'd':
        pat = "DD";
        break;
    case 'H':
        pat = "HH24";
        break;
    case 'M':
        pat = "MI";
        break;
    case 'S':
        pat = "SS";
        break;
    case 'f':
        pat = "SS.MS";
        break;
    case 'j':
        pat = "DDD";
        break;
    case 'w': /* 0 = Sunday, as SQLite */
        buf_printf(b, "CAST(CAST(extract(dow from %s) AS integer) AS text)", t);
        return 0;
    case 's':
        buf_printf(b, "CAST(CAST(floor(extract(epoch from %s)) AS bigint) AS text)", t);
        return 0;
    default:
        return -1;
    }
    buf_printf(b, "to_char(%s, '%s')", t, pat);
    return 0;
}
