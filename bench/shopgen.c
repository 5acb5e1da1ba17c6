/*
 * shopgen — the rows of plan 003's shop (examples/shop) written straight into Basalt's
 * tables, fast enough for the plan's sizes (tens of millions of rows): SQLite through
 * one connection and prepared INSERTs, 200,000 rows a transaction; PostgreSQL through
 * COPY (text) over libpq, the order lines and the orders on two connections at once.
 *
 *   shopgen (--sqlite FILE | --pg URL) --scale S [--seed N] [--staff K] --pw-hash H
 *           [--now EPOCH]
 *
 * examples/shop/generate.py runs it (--bulk c) after it has imported the schema
 * through Basalt's API and dropped the secondary indexes, and makes the indexes again
 * and checks Basalt's counts after; this tool only writes rows. The distributions are
 * generate.py's (README.md there): product popularity Zipf s = 1.0, categories s = 0.7,
 * users' orders s = 0.8 over a shuffled ranking, 1 to 6 lines an order (weights
 * 20/20/20/15/15/10), prices lognormal(3.3, 0.9), orders spread over the year before
 * --now in the order they were placed, the ids make_id's (ascending per table). Every
 * value comes from one xoshiro256** stream seeded from --seed, so a run is
 * deterministic for a seed, a scale and --now (not the same values as the Python
 * rows, which use Python's generator).
 *
 * Progress on stderr as generate.py draws it (one line per 10% when stderr is no
 * terminal); on stdout one JSON line: the counts, row_seconds and cpu_s (this
 * process). Exit 1 with a message on any failure of the database.
 */
#include <libpq-fe.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---- the stream of random values ---- */

typedef struct {
    uint64_t s[4];
} rng_t;

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}

/* [0, 1) */
static double rng_unit(rng_t *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* [a, b): Lemire's multiply (a bias below 2^-40 for these ranges). */
static int64_t rng_range(rng_t *r, int64_t a, int64_t b)
{
    return a + (int64_t)(((unsigned __int128)rng_next(r) * (uint64_t)(b - a)) >> 64);
}

static double rng_gauss(rng_t *r)
{
    double u1 = 1.0 - rng_unit(r), u2 = rng_unit(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---- the shapes of generate.py ---- */

static const char *const WORDS[] = {
    "red",      "blue",  "green", "black",   "white",   "steel",  "oak",     "linen",  "wool",   "cotton",
    "compact",  "large", "small", "classic", "modern",  "travel", "kitchen", "garden", "office", "outdoor",
    "wireless", "solar", "quiet", "fast",    "light",   "heavy",  "soft",    "warm",   "cool",   "smart",
    "mini",     "pro",   "lamp",  "chair",   "table",   "mug",    "bottle",  "bag",    "jacket", "shoe",
    "sock",     "hat",   "cable", "charger", "speaker", "book",   "pen",     "desk",   "shelf",  "pillow",
    "blanket",  "knife", "pan",   "kettle",  "bike",    "helmet", "tent",    "rope",   "map",    "clock"};
enum { NWORDS = sizeof(WORDS) / sizeof(WORDS[0]), N_CATEGORIES = 40, TX_ROWS = 200000 };
static const char *const STATUS[] = {"new", "paid", "shipped", "cancelled"};

static const char HEX[] = "0123456789abcdef";

/* n digits of v in base 10 (zero-padded) at p. */
static char *put_dec(char *p, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    return p + n;
}

/* generate.py's make_id: a table letter, the row number in hex (9 digits), a
 * scrambled tail (5). By hand: snprintf was an eighth of the generator's time. */
static void make_id(char out[32], char letter, uint64_t i)
{
    uint64_t tail = (i * 2654435761ULL) & 0xfffff;
    out[0] = letter;
    for (int k = 0; k < 9; k++)
        out[9 - k] = HEX[(i >> (4 * k)) & 15];
    for (int k = 0; k < 5; k++)
        out[14 - k] = HEX[(tail >> (4 * k)) & 15];
    out[15] = '\0';
}

/* "YYYY-MM-DD HH:MM:SS.000Z" of a Unix time (UTC, years 0..9999), without gmtime's
 * locking. */
static void ts(char out[48], int64_t t)
{
    int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400, sec = t - days * 86400;
    /* civil_from_days (H. Hinnant) */
    int64_t z = days + 719468, era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097, yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400, doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    char *p = put_dec(out, (unsigned)y, 4);
    *p++ = '-';
    p = put_dec(p, (unsigned)m, 2);
    *p++ = '-';
    p = put_dec(p, (unsigned)d, 2);
    *p++ = ' ';
    p = put_dec(p, (unsigned)(sec / 3600), 2);
    *p++ = ':';
    p = put_dec(p, (unsigned)(sec / 60 % 60), 2);
    *p++ = ':';
    p = put_dec(p, (unsigned)(sec % 60), 2);
    memcpy(p, ".000Z", 6);
}

/* Cumulative weights of ranks 1..n with weight 1/rank^s (generate.zipf_cum). */
static double *zipf_cum(int64_t n, double s)
{
    double *c = malloc((size_t)n * sizeof(double)), acc = 0;
    if (c == NULL)
        return NULL;
    for (int64_t k = 0; k < n; k++)
        c[k] = acc += 1.0 / pow((double)(k + 1), s);
    return c;
}

/* bisect.bisect(cum, u * cum[-1]), at most n - 1. */
static int64_t zipf_pick(const double *cum, int64_t n, rng_t *r)
{
    double x = rng_unit(r) * cum[n - 1];
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (x < cum[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo < n ? lo : n - 1;
}

static double round2(double x)
{
    return round(x * 100.0) / 100.0;
}

/* ---- the sinks ---- */

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("shopgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

typedef enum { V_TEXT, V_INT, V_DOUBLE, V_BOOL } vtype_t;
typedef struct {
    vtype_t type;
    int64_t i;
    double d;
    const char *s; /* borrowed for the row */
} cell_t;

enum { MAX_COLS = 24 };

typedef struct {
    const char *name;
    const char *const *fields; /* the names the generator fills, NULL-terminated */
    int ncols;
    char *cols[MAX_COLS];
    int slot[MAX_COLS]; /* index into fields, or -1: Basalt's empty default */
    sqlite3_stmt *st;
    PGconn *pc;
    char *buf;
    size_t len, cap;
    int64_t rows;
} table_t;

typedef struct {
    sqlite3 *db;
    PGconn *pg[2];
    int64_t in_tx;
} sink_t;

static void sq_exec(sink_t *k, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(k->db, sql, NULL, NULL, &err) != SQLITE_OK)
        die("%s: %s", sql, err ? err : sqlite3_errmsg(k->db));
}

static void pg_exec(PGconn *c, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != want)
        die("%.80s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

/* The table's columns as Basalt made them, each mapped to a generated field or to
 * the empty default (generate.py fills every column: NOT NULL). */
static void table_open(sink_t *k, table_t *t, int conn)
{
    if (k->db != NULL) {
        char sql[160];
        snprintf(sql, sizeof(sql), "PRAGMA table_info(\"%s\")", t->name);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(k->db, sql, -1, &st, NULL) != SQLITE_OK)
            die("%s: %s", sql, sqlite3_errmsg(k->db));
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *c = (const char *)sqlite3_column_text(st, 1);
            if (strcmp(c, "_rowid") == 0)
                continue;
            if (t->ncols == MAX_COLS)
                die("%s has more than %d columns", t->name, MAX_COLS);
            t->cols[t->ncols++] = strdup(c);
        }
        sqlite3_finalize(st);
    } else {
        t->pc = k->pg[conn];
        const char *params[1] = {t->name};
        PGresult *r = PQexecParams(t->pc,
                                   "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
                                   "AND table_schema = current_schema() AND is_identity = 'NO' ORDER BY "
                                   "ordinal_position",
                                   1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            die("the columns of %s: %s", t->name, PQerrorMessage(t->pc));
        for (int i = 0; i < PQntuples(r); i++) {
            if (t->ncols == MAX_COLS)
                die("%s has more than %d columns", t->name, MAX_COLS);
            t->cols[t->ncols++] = strdup(PQgetvalue(r, i, 0));
        }
        PQclear(r);
    }
    if (t->ncols == 0)
        die("no table %s: import the schema first (generate.py does)", t->name);
    char sql[2048];
    size_t n = (size_t)snprintf(sql, sizeof(sql), k->db ? "INSERT INTO \"%s\" (" : "COPY \"%s\" (", t->name);
    for (int i = 0; i < t->ncols; i++) {
        t->slot[i] = -1;
        for (int f = 0; t->fields[f] != NULL; f++)
            if (strcmp(t->fields[f], t->cols[i]) == 0)
                t->slot[i] = f;
        n += (size_t)snprintf(sql + n, sizeof(sql) - n, "%s\"%s\"", i ? ", " : "", t->cols[i]);
    }
    if (k->db != NULL) {
        n += (size_t)snprintf(sql + n, sizeof(sql) - n, ") VALUES (");
        for (int i = 0; i < t->ncols; i++)
            n += (size_t)snprintf(sql + n, sizeof(sql) - n, "%s?", i ? ", " : "");
        snprintf(sql + n, sizeof(sql) - n, ")");
        if (sqlite3_prepare_v2(k->db, sql, -1, &t->st, NULL) != SQLITE_OK)
            die("%s: %s", sql, sqlite3_errmsg(k->db));
    } else {
        snprintf(sql + n, sizeof(sql) - n, ") FROM STDIN");
        pg_exec(t->pc, sql, PGRES_COPY_IN);
        t->cap = 1 << 20;
        t->buf = malloc(t->cap + 4096);
        if (t->buf == NULL)
            die("out of memory");
    }
}

static void pg_flush(table_t *t)
{
    if (t->len > 0 && PQputCopyData(t->pc, t->buf, (int)t->len) != 1)
        die("COPY into %s: %s", t->name, PQerrorMessage(t->pc));
    t->len = 0;
}

/* COPY's text form: backslash, tab, newline and carriage return escaped. */
static void pg_put(table_t *t, const char *s)
{
    for (; *s; s++) {
        if (t->len + 2 > t->cap + 4096)
            pg_flush(t);
        char c = *s;
        if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
            t->buf[t->len++] = '\\';
            c = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
        }
        t->buf[t->len++] = c;
    }
}

/* A separator (tab, newline) as it is. */
static void pg_sep(table_t *t, char c)
{
    if (t->len + 1 > t->cap + 4096)
        pg_flush(t);
    t->buf[t->len++] = c;
}

static void emit(sink_t *k, table_t *t, const cell_t *cells)
{
    static const cell_t empty = {V_TEXT, 0, 0, ""};
    if (k->db != NULL) {
        for (int i = 0; i < t->ncols; i++) {
            const cell_t *c = t->slot[i] >= 0 ? &cells[t->slot[i]] : &empty;
            int rc = c->type == V_TEXT     ? sqlite3_bind_text(t->st, i + 1, c->s, -1, SQLITE_STATIC)
                     : c->type == V_DOUBLE ? sqlite3_bind_double(t->st, i + 1, c->d)
                                           : sqlite3_bind_int64(t->st, i + 1, c->i);
            if (rc != SQLITE_OK)
                die("binding %s.%s: %s", t->name, t->cols[i], sqlite3_errmsg(k->db));
        }
        if (sqlite3_step(t->st) != SQLITE_DONE)
            die("INSERT into %s: %s", t->name, sqlite3_errmsg(k->db));
        sqlite3_reset(t->st);
        if (++k->in_tx == TX_ROWS) {
            sq_exec(k, "COMMIT");
            sq_exec(k, "BEGIN IMMEDIATE");
            k->in_tx = 0;
        }
    } else {
        char num[40];
        for (int i = 0; i < t->ncols; i++) {
            const cell_t *c = t->slot[i] >= 0 ? &cells[t->slot[i]] : &empty;
            if (i)
                pg_sep(t, '\t');
            if (c->type == V_TEXT) {
                pg_put(t, c->s);
                continue;
            }
            if (c->type == V_DOUBLE)
                snprintf(num, sizeof(num), "%.15g", c->d);
            else if (c->type == V_BOOL)
                snprintf(num, sizeof(num), "%s", c->i ? "true" : "false");
            else
                snprintf(num, sizeof(num), "%lld", (long long)c->i);
            pg_put(t, num);
        }
        pg_sep(t, '\n');
        if (t->len >= t->cap)
            pg_flush(t);
    }
    t->rows++;
}

static void table_close(sink_t *k, table_t *t)
{
    if (k->db != NULL) {
        sqlite3_finalize(t->st);
    } else {
        pg_flush(t);
        if (PQputCopyEnd(t->pc, NULL) != 1)
            die("COPY into %s: %s", t->name, PQerrorMessage(t->pc));
        PGresult *r;
        while ((r = PQgetResult(t->pc)) != NULL) {
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                die("COPY into %s: %s", t->name, PQresultErrorMessage(r));
            PQclear(r);
        }
        free(t->buf);
    }
    for (int i = 0; i < t->ncols; i++)
        free(t->cols[i]);
}

/* ---- the progress bar (generate.py's Progress) ---- */

typedef struct {
    int64_t total, done, last_tenth;
    double t0, last;
    int tty;
} progress_t;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void progress(progress_t *p, int64_t n, const char *what)
{
    p->done += n;
    double now = now_s();
    if (now - p->last < 0.5 && p->done < p->total)
        return;
    p->last = now;
    double frac = p->done >= p->total ? 1.0 : (double)p->done / (double)p->total;
    double rate = (double)p->done / (now - p->t0 > 1e-6 ? now - p->t0 : 1e-6);
    double eta = (double)(p->total - p->done) / (rate > 1e-6 ? rate : 1e-6);
    int tenth = (int)(frac * 10);
    if (!p->tty && p->done < p->total && tenth == p->last_tenth)
        return;
    p->last_tenth = tenth;
    char bar[31];
    int k = (int)(frac * 30);
    memset(bar, '#', (size_t)k);
    memset(bar + k, ' ', (size_t)(30 - k));
    bar[30] = '\0';
    fprintf(stderr, "%s[%s] %5.1f%% %-12s %lld/%lld rows, %.0f/s, %.0f s left%s", p->tty ? "\r" : "", bar,
            frac * 100, what, (long long)p->done, (long long)p->total, rate, eta < 0 ? 0 : eta,
            p->tty ? "" : "\n");
    fflush(stderr);
}

/* ---- the shop ---- */

static const char *const F_CATEGORY[] = {"id", "name", "slug", NULL};
static const char *const F_PRODUCT[] = {"id",          "name",     "sku",     "price",
                                        "description", "category", "created", NULL};
static const char *const F_INVENTORY[] = {"id", "product", "stock", "updated", NULL};
static const char *const F_USER[] = {"id",   "email", "emailVisibility", "verified", "password", "tokenKey",
                                     "name", "staff", "created",         "updated",  NULL};
static const char *const F_CART[] = {"id", "user", "items", "updated", NULL};
static const char *const F_ITEM[] = {"id", "purchase", "product", "qty", "price", NULL};
static const char *const F_ORDER[] = {"id", "user", "status", "total", "placed", NULL};

static cell_t text(const char *s)
{
    return (cell_t){V_TEXT, 0, 0, s};
}
static cell_t num_i(int64_t i)
{
    return (cell_t){V_INT, i, 0, NULL};
}
static cell_t num_d(double d)
{
    return (cell_t){V_DOUBLE, 0, d, NULL};
}
static cell_t boolean(int b)
{
    return (cell_t){V_BOOL, b != 0, 0, NULL};
}

static double cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
           (double)u.ru_stime.tv_usec / 1e6;
}

__attribute__((noreturn)) static void usage(void)
{
    fputs("usage: shopgen (--sqlite FILE | --pg URL) --scale S [--seed N] [--staff K] --pw-hash HASH "
          "[--now EPOCH]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *sqlite_path = NULL, *pg_url = NULL, *pw_hash = NULL;
    double scale = -1;
    uint64_t seed = 3;
    int64_t staff = 5, now = (int64_t)time(NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            usage();
        if (strcmp(a, "--sqlite") == 0)
            sqlite_path = v;
        else if (strcmp(a, "--pg") == 0)
            pg_url = v;
        else if (strcmp(a, "--scale") == 0)
            scale = strtod(v, NULL);
        else if (strcmp(a, "--seed") == 0)
            seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--staff") == 0)
            staff = strtoll(v, NULL, 10);
        else if (strcmp(a, "--pw-hash") == 0)
            pw_hash = v;
        else if (strcmp(a, "--now") == 0)
            now = strtoll(v, NULL, 10);
        else
            usage();
        i++;
    }
    if ((sqlite_path == NULL) == (pg_url == NULL) || pw_hash == NULL)
        usage();
    if (!(scale > 0 && scale <= 100000))
        die("--scale must be above 0 and at most 100000 (units of 1,000 orders)");
    int64_t n_orders = (int64_t)(scale * 1000) > 20 ? (int64_t)(scale * 1000) : 20;
    int64_t n_users = n_orders / 20 > 5 ? n_orders / 20 : 5;
    int64_t n_products = n_orders / 50 > 50 ? n_orders / 50 : 50;
    const int64_t year = 365 * 86400, year_ago = now - year;

    sink_t k = {0};
    if (sqlite_path != NULL) {
        /* The running server has the file open (WAL): no exclusive journal mode, but
         * no fsync either: a failed generation is run again, never resumed. */
        if (sqlite3_open_v2(sqlite_path, &k.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK)
            die("%s: %s", sqlite_path, k.db ? sqlite3_errmsg(k.db) : "cannot open");
        sqlite3_busy_timeout(k.db, 60000);
        sq_exec(&k, "PRAGMA synchronous = OFF");
        sq_exec(&k, "PRAGMA cache_size = -65536");
    } else {
        for (int i = 0; i < 2; i++) {
            k.pg[i] = PQconnectdb(pg_url);
            if (PQstatus(k.pg[i]) != CONNECTION_OK)
                die("connecting to PostgreSQL: %s", PQerrorMessage(k.pg[i]));
            pg_exec(k.pg[i], "SET synchronous_commit = off", PGRES_COMMAND_OK);
        }
    }
    rng_t r;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r.s[i] = splitmix(&x);
    progress_t prog = {.total =
                           N_CATEGORIES + 2 * n_products + 2 * n_users + (int64_t)((double)n_orders * 4.15),
                       .t0 = now_s(),
                       .last_tenth = -1,
                       .tty = isatty(2)};
    double t0 = now_s();
    if (k.db != NULL)
        sq_exec(&k, "BEGIN IMMEDIATE");
    char id[32], id2[32], name[64], slug[64], stamp[48], tsbuf[48];
    ts(stamp, now);

    table_t cats = {.name = "categories", .fields = F_CATEGORY};
    table_open(&k, &cats, 0);
    for (int i = 0; i < N_CATEGORIES; i++) {
        make_id(id, 'c', (uint64_t)i);
        snprintf(name, sizeof(name), "Category %d", i);
        snprintf(slug, sizeof(slug), "cat-%d", i);
        cell_t row[] = {text(id), text(name), text(slug)};
        emit(&k, &cats, row);
    }
    table_close(&k, &cats);
    progress(&prog, N_CATEGORIES, "categories");

    double *cat_cum = zipf_cum(N_CATEGORIES, 0.7), *prod_cum = zipf_cum(n_products, 1.0);
    double *user_cum = zipf_cum(n_users, 0.8), *prices = malloc((size_t)n_products * sizeof(double));
    int64_t *user_rank = malloc((size_t)n_users * sizeof(int64_t));
    if (!cat_cum || !prod_cum || !user_cum || !prices || !user_rank)
        die("out of memory");
    for (int64_t i = 0; i < n_products; i++)
        prices[i] = round2(exp(3.3 + 0.9 * rng_gauss(&r)));

    table_t prods = {.name = "products", .fields = F_PRODUCT};
    table_open(&k, &prods, 0);
    char desc[512], sku[32];
    for (int64_t i = 0; i < n_products; i++) {
        int w[NWORDS];
        for (int j = 0; j < NWORDS; j++)
            w[j] = j;
        for (int j = 0; j < 15; j++) { /* rng.sample(WORDS, 15) */
            int s = j + (int)rng_range(&r, 0, NWORDS - j), tmp = w[j];
            w[j] = w[s];
            w[s] = tmp;
        }
        snprintf(name, sizeof(name), "%s %s %s", WORDS[w[0]], WORDS[w[1]], WORDS[w[2]]);
        for (char *p = name; *p; p++) /* str.title() */
            if (p == name || p[-1] == ' ')
                *p = (char)(*p - 'a' + 'A');
        size_t n = (size_t)snprintf(desc, sizeof(desc), "<p>A %s %s %s for every day.", WORDS[w[0]],
                                    WORDS[w[1]], WORDS[w[2]]);
        for (int j = 3; j < 15; j++)
            n += (size_t)snprintf(desc + n, sizeof(desc) - n, " %s", WORDS[w[j]]);
        snprintf(desc + n, sizeof(desc) - n, ".</p>");
        snprintf(sku, sizeof(sku), "SKU-%08lld", (long long)i);
        make_id(id, 'p', (uint64_t)i);
        make_id(id2, 'c', (uint64_t)zipf_pick(cat_cum, N_CATEGORIES, &r));
        ts(tsbuf, year_ago + i * year / n_products);
        cell_t row[] = {text(id),   text(name), text(sku),  num_d(prices[i]),
                        text(desc), text(id2),  text(tsbuf)};
        emit(&k, &prods, row);
        if ((i & 4095) == 4095)
            progress(&prog, 4096, "products");
    }
    table_close(&k, &prods);
    progress(&prog, n_products % 4096, "products");

    table_t inv = {.name = "inventory", .fields = F_INVENTORY};
    table_open(&k, &inv, 0);
    for (int64_t i = 0; i < n_products; i++) {
        make_id(id, 'i', (uint64_t)i);
        make_id(id2, 'p', (uint64_t)i);
        cell_t row[] = {text(id), text(id2), num_i(rng_range(&r, 200, 5000)), text(stamp)};
        emit(&k, &inv, row);
        if ((i & 4095) == 4095)
            progress(&prog, 4096, "inventory");
    }
    table_close(&k, &inv);
    progress(&prog, n_products % 4096, "inventory");

    table_t users = {.name = "shop_users", .fields = F_USER};
    table_open(&k, &users, 0);
    char email[64], token[51];
    for (int64_t i = 0; i < n_users; i++) {
        make_id(id, 'u', (uint64_t)i);
        snprintf(email, sizeof(email), "user%lld@shop.example", (long long)i);
        snprintf(name, sizeof(name), "User %lld", (long long)i);
        for (int j = 0; j < 50; j += 10) { /* 200 random bits as 50 hex digits */
            uint64_t b = rng_next(&r);
            for (int h = 0; h < 10; h++)
                token[j + h] = HEX[(b >> (4 * h)) & 15];
        }
        token[50] = '\0';
        ts(tsbuf, year_ago + i * year / n_users);
        cell_t row[] = {text(id),    text(email), boolean(0),         boolean(1),  text(pw_hash),
                        text(token), text(name),  boolean(i < staff), text(tsbuf), text(tsbuf)};
        emit(&k, &users, row);
        if ((i & 4095) == 4095)
            progress(&prog, 4096, "users");
    }
    table_close(&k, &users);
    progress(&prog, n_users % 4096, "users");

    /* One cart per user; a third hold something (generate.py's JSON, spaces and all). */
    table_t carts = {.name = "carts", .fields = F_CART};
    table_open(&k, &carts, 0);
    char items[256];
    for (int64_t i = 0; i < n_users; i++) {
        size_t n = (size_t)snprintf(items, sizeof(items), "[");
        if (i % 3 == 0) {
            int64_t cnt = rng_range(&r, 1, 4);
            for (int64_t j = 0; j < cnt; j++) {
                make_id(id2, 'p', (uint64_t)zipf_pick(prod_cum, n_products, &r));
                n += (size_t)snprintf(items + n, sizeof(items) - n, "%s{\"product\": \"%s\", \"qty\": %lld}",
                                      j ? ", " : "", id2, (long long)rng_range(&r, 1, 4));
            }
        }
        snprintf(items + n, sizeof(items) - n, "]");
        make_id(id, 'k', (uint64_t)i);
        make_id(id2, 'u', (uint64_t)i);
        cell_t row[] = {text(id), text(id2), text(items), text(stamp)};
        emit(&k, &carts, row);
        if ((i & 4095) == 4095)
            progress(&prog, 4096, "carts");
    }
    table_close(&k, &carts);
    progress(&prog, n_users % 4096, "carts");

    /* Users' order counts: ranks over a shuffled order (random.shuffle's walk). */
    for (int64_t i = 0; i < n_users; i++)
        user_rank[i] = i;
    for (int64_t i = n_users - 1; i > 0; i--) {
        int64_t j = rng_range(&r, 0, i + 1), tmp = user_rank[i];
        user_rank[i] = user_rank[j];
        user_rank[j] = tmp;
    }

    /* Orders and their lines together, in the order they were placed: the lines on
     * one connection (PostgreSQL) or statement, the orders on the other, so that an
     * order's total is known when it is written and nothing is held for the year. */
    table_t lines = {.name = "order_items", .fields = F_ITEM}, orders = {.name = "orders", .fields = F_ORDER};
    table_open(&k, &lines, 0);
    table_open(&k, &orders, 1);
    int64_t n_items = 0, pending = 0;
    char uid[32];
    for (int64_t o = 0; o < n_orders; o++) {
        make_id(id, 'o', (uint64_t)o);
        int64_t w = rng_range(&r, 0, 100);
        int nl = w < 20 ? 1 : w < 40 ? 2 : w < 60 ? 3 : w < 75 ? 4 : w < 90 ? 5 : 6;
        double total = 0;
        for (int l = 0; l < nl; l++) {
            int64_t p = zipf_pick(prod_cum, n_products, &r), q = rng_range(&r, 1, 4);
            total += (double)q * prices[p];
            make_id(id2, 'l', (uint64_t)(o * 8 + l));
            char pid[32];
            make_id(pid, 'p', (uint64_t)p);
            cell_t row[] = {text(id2), text(id), text(pid), num_i(q), num_d(prices[p])};
            emit(&k, &lines, row);
        }
        n_items += nl;
        int64_t placed = year_ago + o * year / n_orders + rng_range(&r, 0, 60);
        int64_t age = now - placed, rs = rng_range(&r, 0, 100);
        int st = age < 3 * 86400    ? (rs < 60 ? 0 : 1)
                 : age < 14 * 86400 ? (rs < 50 ? 1 : 2)
                                    : (rs < 93 ? 2 : 3);
        make_id(uid, 'u', (uint64_t)user_rank[zipf_pick(user_cum, n_users, &r)]);
        ts(tsbuf, placed);
        cell_t row[] = {text(id), text(uid), text(STATUS[st]), num_d(round2(total)), text(tsbuf)};
        emit(&k, &orders, row);
        pending += nl + 1;
        if (pending >= 8192) {
            progress(&prog, pending, "orders");
            pending = 0;
        }
    }
    table_close(&k, &lines);
    table_close(&k, &orders);
    if (k.db != NULL) {
        sq_exec(&k, "COMMIT");
        sqlite3_close(k.db);
    } else {
        PQfinish(k.pg[0]);
        PQfinish(k.pg[1]);
    }
    prog.total = prog.done + pending; /* the estimate of the lines was one */
    progress(&prog, pending, "orders");
    if (prog.tty)
        fputc('\n', stderr);
    double secs = now_s() - t0;
    int64_t rows = N_CATEGORIES + 2 * n_products + 2 * n_users + n_orders + n_items;
    printf(
        "{\"users\": %lld, \"categories\": %d, \"products\": %lld, \"inventory\": %lld, \"carts\": %lld, "
        "\"orders\": %lld, \"order_items\": %lld, \"rows\": %lld, \"row_seconds\": %.1f, \"cpu_s\": %.1f}\n",
        (long long)n_users, N_CATEGORIES, (long long)n_products, (long long)n_products, (long long)n_users,
        (long long)n_orders, (long long)n_items, (long long)rows, secs, cpu_s());
    free(cat_cum);
    free(prod_cum);
    free(user_cum);
    free(prices);
    free(user_rank);
    return 0;
}
