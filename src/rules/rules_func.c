/*
 * The functions of the filter language, as PocketBase has them (its
 * tools/search/token_functions.go):
 *
 *   geoDistance(lonA, latA, lonB, latB)   kilometres between two points (degrees),
 *       by the spherical law of cosines on a sphere of radius 6371 km, as
 *       PocketBase computes it. Arguments: numbers, number fields, a geoPoint's
 *       `field.lon` / `field.lat`, or request values (text that is a number reads as
 *       that number; anything else is NULL, and so is the distance).
 *   strftime(format [, time [, modifier ...]])   SQLite's strftime, NULL read as ''.
 *
 * strftime is the place where the backends could give different answers, so it
 * takes the part of SQLite's language that PostgreSQL can write the same way, and
 * refuses the rest with a 400 on both backends:
 *   format specifiers  %Y %m %d %H %M %S %f %j %w %s %%  (at most RULES_FN_MAX_SPECS)
 *   time               a date or autodate field; or a constant: text
 *                      "YYYY-MM-DD[( |T)HH:MM[:SS[.fff]]][Z]" or "now", a number
 *                      (a Julian day, or Unix seconds with 'unixepoch'), a request
 *                      value; absent means now
 *   modifiers          'start of day|month|year', '[+-]N day(s)|hour(s)|minute(s)|
 *                      second(s)' (|N| < 10^7), 'unixepoch' (first, after a number)
 * A call whose arguments are all constants is computed here (below), once, so a
 * constant never meets either backend's date parser. A field is given to SQLite's
 * strftime as it is, and on PostgreSQL becomes to_char/extract pieces
 * (dialect_date_*); the in-memory evaluator uses the code below, which follows
 * SQLite's date.c for the values Basalt stores.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules/dialect.h"
#include "rules/rules.h"

#define RULES_FN_MAX_SPECS 16
#define MAX_FORMAT 128

static const struct {
    const char *name;
    rules_fn_t fn;
} functions[] = {
    {"geoDistance", RULES_FN_GEO_DISTANCE},
    {"strftime", RULES_FN_STRFTIME},
};

int rules_func_lookup(const char *name, size_t n)
{
    for (size_t i = 0; i < sizeof(functions) / sizeof(functions[0]); i++)
        if (strlen(functions[i].name) == n && memcmp(functions[i].name, name, n) == 0)
            return (int)functions[i].fn;
    return -1;
}

/* ---- dates (milliseconds since 1970 UTC, proleptic Gregorian, as SQLite) ---- */

/* SQLite's range of Julian days: JD 0 (4714-11-24 12:00 BC) to 9999-12-31
 * 23:59:59.999; a date out of it after any modifier is NULL. A result before year 1
 * is NULL too, on both backends (PostgreSQL has no year 0, SQLite's own is written
 * "0000"): strftime answers for the years 1 to 9999. */
#define MS_MIN (-210866760000000LL)
#define MS_MAX (253402300799999LL)
#define MS_YEAR1 (-62135596800000LL)
#define DAY_MS 86400000LL

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 of y-m-d (H. Hinnant's algorithm); m and d may overflow
 * their month as SQLite lets them (2024-02-31 is 2024-03-02). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = floor_div(y, 400);
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static int digits(const char *s, size_t n, size_t at, size_t k, int lo, int hi, int *out)
{
    if (at + k > n)
        return -1;
    int v = 0;
    for (size_t i = 0; i < k; i++) {
        if (s[at + i] < '0' || s[at + i] > '9')
            return -1;
        v = v * 10 + (s[at + i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Text time value: "now" or YYYY-MM-DD[( |T)HH:MM[:SS[.fff...]]][Z]. Returns 0 and
 * *ms, or -1 (SQLite would read some other forms too; a constant in another form
 * is NULL here on both backends, and a stored date is always of this form). */
static int parse_time_text(const char *s, size_t n, int64_t now_ms, int64_t *ms)
{
    if (n == 3 && (s[0] | 32) == 'n' && (s[1] | 32) == 'o' && (s[2] | 32) == 'w') {
        *ms = now_ms;
        return 0;
    }
    int y, mo, d, h = 0, mi = 0, sec = 0;
    double frac = 0;
    if (digits(s, n, 0, 4, 0, 9999, &y) || n < 10 || s[4] != '-' || digits(s, n, 5, 2, 1, 12, &mo) ||
        s[7] != '-' || digits(s, n, 8, 2, 1, 31, &d))
        return -1;
    size_t i = 10;
    if (i < n && (s[i] == ' ' || s[i] == 'T')) {
        if (digits(s, n, i + 1, 2, 0, 24, &h) || i + 3 >= n || s[i + 3] != ':' ||
            digits(s, n, i + 4, 2, 0, 59, &mi))
            return -1;
        i += 6;
        if (i < n && s[i] == ':') {
            if (digits(s, n, i + 1, 2, 0, 59, &sec))
                return -1;
            i += 3;
            if (i < n && s[i] == '.') {
                double scale = 0.1;
                size_t k = ++i;
                while (i < n && s[i] >= '0' && s[i] <= '9' && i - k < 20) {
                    frac += (s[i] - '0') * scale;
                    scale /= 10;
                    i++;
                }
                if (i == k)
                    return -1;
            }
        }
    }
    if (i < n && (s[i] == 'Z' || s[i] == 'z'))
        i++;
    if (i != n)
        return -1;
    int64_t t = days_from_civil(y, mo, d) * DAY_MS + (int64_t)h * 3600000 + (int64_t)mi * 60000 +
                (int64_t)((sec + frac) * 1000 + 0.5);
    if (t < MS_YEAR1 || t > MS_MAX)
        return -1;
    *ms = t;
    return 0;
}

/* Whether valid time text t (parse_time_text accepted it) holds a day past its
 * month's end or hour 24: SQLite prints such a date as written when it needs no
 * Julian day ("2024-02-30") and normalises it when it does, which this file does
 * not mirror (Basalt never stores one). */
static int time_text_overflows(const char *t, size_t n)
{
    if (n < 10 || t[4] != '-')
        return 1; /* "now" in a column: SQLite reads its own clock */
    int y = atoi(t), m = (t[5] - '0') * 10 + (t[6] - '0'), d = (t[8] - '0') * 10 + (t[9] - '0');
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > dim[m - 1] + (m == 2 && leap))
        return 1;
    return n >= 13 && t[11] == '2' && t[12] == '4';
}

/* A parsed modifier. */
typedef struct {
    enum { MOD_START, MOD_ADD, MOD_UNIXEPOCH } kind;
    const char *unit; /* START: "day"/"month"/"year"; ADD: "days"/"hours"/... */
    long long n;
    int64_t unit_ms;
} modifier_t;

static int parse_modifier(const char *s, size_t n, modifier_t *m)
{
    memset(m, 0, sizeof(*m));
    if (n == 9 && memcmp(s, "unixepoch", 9) == 0) {
        m->kind = MOD_UNIXEPOCH;
        return 0;
    }
    static const char *const starts[] = {"day", "month", "year"};
    for (size_t k = 0; k < 3; k++)
        if (n == 9 + strlen(starts[k]) && memcmp(s, "start of ", 9) == 0 &&
            memcmp(s + 9, starts[k], n - 9) == 0) {
            m->kind = MOD_START;
            m->unit = starts[k];
            return 0;
        }
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    size_t d0 = i;
    long long v = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9' && i - d0 < 7)
        v = v * 10 + (s[i++] - '0');
    if (i == d0 || i >= n || s[i] != ' ')
        return -1;
    i++;
    static const struct {
        const char *word, *unit;
        int64_t ms;
    } units[] = {{"day", "days", DAY_MS},
                 {"hour", "hours", 3600000},
                 {"minute", "minutes", 60000},
                 {"second", "seconds", 1000}};
    for (size_t k = 0; k < 4; k++) {
        size_t w = strlen(units[k].word);
        if ((n - i == w || (n - i == w + 1 && s[n - 1] == 's')) && memcmp(s + i, units[k].word, w) == 0) {
            m->kind = MOD_ADD;
            m->n = neg ? -v : v;
            m->unit = units[k].unit;
            m->unit_ms = units[k].ms;
            return 0;
        }
    }
    return -1;
}

/* Applies modifiers to a valid time; returns 0 or -1 (NULL: out of range). Sets
 * *ancient when a step went before year 1, where SQLite's calendar (Meeus's
 * algorithm in int arithmetic) and this file's may part. */
static int apply_modifiers(int64_t *ms, const modifier_t *mods, size_t n, int *ancient)
{
    int64_t t = *ms;
    *ancient = t < MS_YEAR1;
    for (size_t i = 0; i < n; i++) {
        const modifier_t *m = &mods[i];
        if (m->kind == MOD_ADD)
            t += m->n * m->unit_ms; /* |n| < 10^7 units: no overflow */
        /* SQLite gives up on a date out of its range after any modifier, even if a
         * later one would bring it back. */
        if (t < MS_MIN || t > MS_MAX)
            return -1;
        *ancient |= t < MS_YEAR1;
        if (m->kind != MOD_START)
            continue;
        int64_t days = floor_div(t, DAY_MS);
        int y, mo, d;
        civil_from_days(days, &y, &mo, &d);
        if (m->unit[0] == 'd')
            t = days * DAY_MS;
        else if (m->unit[0] == 'm')
            t = days_from_civil(y, mo, 1) * DAY_MS;
        else
            t = days_from_civil(y, 1, 1) * DAY_MS;
    }
    if (t < MS_YEAR1 || t > MS_MAX)
        return -1;
    *ms = t;
    return 0;
}

/* Whether fmt[0..n) uses only the specifiers both backends write alike. */
static const char *check_format(const char *fmt, size_t n)
{
    if (n > MAX_FORMAT)
        return "strftime's format is too long (limit 128 characters)";
    size_t specs = 0;
    for (size_t i = 0; i < n; i++) {
        if (fmt[i] != '%')
            continue;
        if (i + 1 >= n || strchr("YmdHMSfjws%", fmt[i + 1]) == NULL || fmt[i + 1] == '\0')
            return "strftime's format may use only %Y %m %d %H %M %S %f %j %w %s and %%";
        if (fmt[++i] != '%' && ++specs > RULES_FN_MAX_SPECS)
            return "strftime's format has too many specifiers (limit 16)";
    }
    return NULL;
}

/* Writes strftime(fmt) of t into b. */
static void format_time(buf_t *b, const char *fmt, size_t n, int64_t t)
{
    int64_t days = floor_div(t, DAY_MS), in_day = t - days * DAY_MS;
    int y, mo, d;
    civil_from_days(days, &y, &mo, &d);
    int h = (int)(in_day / 3600000), mi = (int)(in_day / 60000 % 60), s = (int)(in_day / 1000 % 60);
    int msec = (int)(in_day % 1000);
    for (size_t i = 0; i < n; i++) {
        if (fmt[i] != '%') {
            buf_putc(b, fmt[i]);
            continue;
        }
        switch (fmt[++i]) {
        case 'Y':
            buf_printf(b, "%04d", y);
            break;
        case 'm':
            buf_printf(b, "%02d", mo);
            break;
        case 'd':
            buf_printf(b, "%02d", d);
            break;
        case 'H':
            buf_printf(b, "%02d", h);
            break;
        case 'M':
            buf_printf(b, "%02d", mi);
            break;
        case 'S':
            buf_printf(b, "%02d", s);
            break;
        case 'f':
            buf_printf(b, "%02d.%03d", s, msec);
            break;
        case 'j':
            buf_printf(b, "%03d", (int)(days - days_from_civil(y, 1, 1) + 1));
            break;
        case 'w': /* 1970-01-01 was a Thursday */
            buf_printf(b, "%d", (int)(((days + 4) % 7 + 7) % 7));
            break;
        case 's':
            buf_printf(b, "%lld", (long long)floor_div(t, 1000));
            break;
        default:
            buf_putc(b, '%');
        }
    }
}

/* ---- checking a parsed call ---- */

const char *rules_func_check(const rules_call_t *call)
{
    for (size_t i = 0; i < call->nargs; i++) {
        if (call->args[i].mods != 0)
            return "a function's argument takes no modifiers";
        if (call->args[i].kind == RULES_LIT_FUNC)
            return "a function's argument cannot be another function";
    }
    if (call->fn == RULES_FN_GEO_DISTANCE) {
        if (call->nargs != 4)
            return "geoDistance takes 4 arguments (lonA, latA, lonB, latB)";
        for (size_t i = 0; i < 4; i++)
            if (call->args[i].kind != RULES_LIT_NUMBER && call->args[i].kind != RULES_LIT_IDENT)
                return "geoDistance's arguments must be numbers or fields";
        return NULL;
    }
    if (call->nargs < 1)
        return "strftime takes a format and an optional time and modifiers";
    const rules_operand_t *a = call->args;
    if (a[0].kind != RULES_LIT_STRING)
        return "strftime's first argument must be a format text";
    const char *bad = check_format(a[0].name, a[0].len);
    if (bad != NULL)
        return bad;
    if (call->nargs > 1 && a[1].kind != RULES_LIT_STRING && a[1].kind != RULES_LIT_NUMBER &&
        a[1].kind != RULES_LIT_IDENT)
        return "strftime's time must be a date field, a date text or a number";
    for (size_t i = 2; i < call->nargs; i++) {
        modifier_t m;
        if (a[i].kind != RULES_LIT_STRING || parse_modifier(a[i].name, a[i].len, &m) != 0)
            return "strftime's modifiers may be only 'start of day|month|year', '+N days|hours|minutes|"
                   "seconds' and 'unixepoch'";
        if (m.kind == MOD_UNIXEPOCH && (i != 2 || a[1].kind != RULES_LIT_NUMBER))
            return "strftime's 'unixepoch' must follow a number time value";
    }
    return NULL;
}

/* ---- arguments ---- */

typedef struct {
    int is_value;
    bs_value_t value;
    const char *sql;
} arg_t;

/* A constant as a number for geoDistance: numbers as they are, text that is all a
 * finite number as that number, anything else NULL. */
static int const_number(bs_value_t v, double *out)
{
    if (v.type == BS_VAL_INT) {
        *out = (double)v.i;
        return 1;
    }
    if (v.type == BS_VAL_DOUBLE) {
        *out = v.d;
        return isfinite(v.d);
    }
    if (v.type != BS_VAL_TEXT || v.n == 0 || v.n > 64)
        return 0;
    char tmp[72], *end;
    memcpy(tmp, v.s, v.n);
    tmp[v.n] = '\0';
    if (tmp[0] == ' ' || tmp[0] == '\t' || tmp[0] == '\n')
        return 0;
    double d = strtod(tmp, &end);
    /* strtod also reads "nan", "inf" and hexadecimal: refused. */
    for (size_t i = 0; i < v.n; i++)
        if (!((tmp[i] >= '0' && tmp[i] <= '9') || strchr("+-.eE", tmp[i]) != NULL))
            return 0;
    if (*end != '\0' || !isfinite(d))
        return 0;
    *out = d;
    return 1;
}

/* A constant time value (text, number, NULL) with its modifiers: returns 1 and
 * *ms, or 0 for NULL. */
static int const_time(bs_value_t v, const modifier_t *mods, size_t nmods, int64_t now_ms, int64_t *ms,
                      int *ancient)
{
    *ancient = 0;
    int64_t t;
    if (v.type == BS_VAL_TEXT) {
        if (parse_time_text(v.s, v.n, now_ms, &t) != 0)
            return 0;
    } else if (v.type == BS_VAL_INT || v.type == BS_VAL_DOUBLE) {
        double r = v.type == BS_VAL_INT ? (double)v.i : v.d;
        if (!isfinite(r))
            return 0;
        /* As SQLite: a Julian day number, or with 'unixepoch' seconds since 1970. */
        double jd_ms = nmods > 0 && mods[0].kind == MOD_UNIXEPOCH ? r * 1000.0 + 210866760000000.0
                                                                  : r * 86400000.0 + 0.5;
        if (nmods > 0 && mods[0].kind == MOD_UNIXEPOCH)
            jd_ms += 0.5;
        if (!(jd_ms >= 0 && jd_ms <= 464269060799999.0))
            return 0;
        t = (int64_t)jd_ms - 210866760000000LL;
    } else {
        return 0;
    }
    if (apply_modifiers(&t, mods, nmods, ancient) != 0)
        return 0;
    *ms = t;
    return 1;
}

static int nomem(bs_error_t *err)
{
    bs_error_set(err, BS_ERR_NOMEM, NULL);
    return -1;
}

/* 1 and its value in *v when o is a constant argument (a number, text, null, a date
 * macro); 0 when it names a field or a request value. The compiler and the
 * in-memory evaluator read constants alike through it. */
static int const_operand(arena_t *a, int64_t now_ms, const rules_operand_t *o, bs_value_t *v)
{
    switch (o->kind) {
    case RULES_LIT_NUMBER:
        *v = bs_val_double(o->num);
        return 1;
    case RULES_LIT_STRING:
        *v = bs_val_text(o->name, o->len);
        return 1;
    case RULES_LIT_IDENT:
        return o->name[0] == '@' && rules_macro(a, now_ms, o->name, o->len, v) == 0;
    default:
        *v = bs_val_null();
        return 1;
    }
}

/* Compiles one argument: a constant (numbers, text, a date macro, a request value)
 * or the SQL of one value, asking the resolver with `need`. */
static int compile_arg(rules_compiler_t *c, arena_t *a, const rules_operand_t *o, unsigned need,
                       const char *fn, arg_t *out, bs_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->is_value = 1;
    if (const_operand(a, c->now_ms, o, &out->value))
        return 0;
    if (c->resolve == NULL) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid filter: unknown field \"%s\".", o->name);
        return -1;
    }
    rules_resolved_t r;
    memset(&r, 0, sizeof(r));
    if (c->resolve(c->resolve_ud, a, o->name, o->len, need, &r, err) != 0)
        return -1;
    if (r.multi) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "Invalid filter: %s's argument \"%s\" must be a single value.",
                     fn, o->name);
        return -1;
    }
    if (r.is_value) {
        out->value = r.value;
        return 0;
    }
    out->is_value = 0;
    out->sql = r.sql;
    return 0;
}

/* The text of a parameter placeholder for v, typed (number or text). */
static const char *typed_param(rules_compiler_t *c, arena_t *a, bs_value_t v, int number)
{
    buf_t ph;
    buf_init(&ph, a);
    if (rules_add_param(c, a, v, &ph) != 0)
        return NULL;
    const dialect_t *d = dialect_get(c->dialect);
    return arena_printf(a, number ? d->number_param_fmt : d->text_param_fmt, ph.data);
}

static double rad(double x)
{
    return x * (M_PI / 180.0); /* as SQLite's radians() */
}

static double geo_distance(const double v[4])
{
    double x = cos(rad(v[1])) * cos(rad(v[3])) * cos(rad(v[2]) - rad(v[0])) + sin(rad(v[1])) * sin(rad(v[3]));
    x = x > 1.0 ? 1.0 : x < -1.0 ? -1.0 : x;
    return 6371 * acos(x);
}

static int compile_geo(rules_compiler_t *c, arena_t *a, const rules_call_t *call, const char **sql,
                       bs_value_t *value, int *is_value, bs_error_t *err)
{
    arg_t args[4];
    double nums[4];
    int all_const = 1, has_null = 0;
    for (size_t i = 0; i < 4; i++) {
        if (compile_arg(c, a, &call->args[i], RULES_MOD_NUMERIC, "geoDistance", &args[i], err) != 0)
            return -1;
        if (args[i].is_value) {
            if (!const_number(args[i].value, &nums[i])) {
                has_null = 1;
                args[i].value = bs_val_null();
            } else
                args[i].value = bs_val_double(nums[i]);
        } else
            all_const = 0;
    }
    if (all_const || has_null) {
        /* A NULL argument makes the distance NULL whatever the fields hold. */
        *is_value = 1;
        *value = has_null ? bs_val_null() : bs_val_double(geo_distance(nums));
        return 0;
    }
    const char *s[4];
    for (size_t i = 0; i < 4; i++) {
        s[i] = args[i].is_value ? typed_param(c, a, args[i].value, 1) : args[i].sql;
        if (s[i] == NULL)
            return nomem(err);
    }
    *is_value = 0;
    *sql = arena_printf(a, dialect_get(c->dialect)->geo_distance_fmt, s[0], s[1], s[2], s[3]);
    return *sql == NULL ? nomem(err) : 0;
}

/* PostgreSQL: strftime over a date column, as layers of derived tables each with
 * the timestamp in column "t" (a value used several times is written once, and the
 * SQL grows with the modifiers, not as a power of them):
 *   (SELECT <op(ref)> AS "t" FROM (SELECT ... ) AS "__tN")
 * Nothing here is used as a format string: the pieces hold client text only as
 * parameters, but a column's SQL may hold a '%'. */
static int compile_strftime_pg(rules_compiler_t *c, arena_t *a, const rules_call_t *call, const char *col,
                               const modifier_t *mods, size_t nmods, const char **sql, bs_error_t *err)
{
    const dialect_t *d = dialect_get(c->dialect);
    buf_t b;
    buf_init(&b, a);
    dialect_date_cast(d, &b, col);
    if (b.oom)
        return nomem(err);
    const char *from = arena_printf(a, "(SELECT %s AS \"t\")", b.data);
    char *ref = NULL;
    int alias = 0;
    for (size_t i = 0; i < nmods && from != NULL; i++) {
        /* Each modifier reads the previous layer; its result is NULL out of SQLite's
         * range, as SQLite's is after any modifier. */
        alias = ++c->alias_seq;
        ref = arena_printf(a, "\"__t%d\".\"t\"", alias);
        if (ref == NULL)
            return nomem(err);
        buf_t e, g;
        buf_init(&e, a);
        buf_init(&g, a);
        if (mods[i].kind == MOD_ADD)
            dialect_date_add(d, &e, ref, mods[i].n, mods[i].unit);
        else
            dialect_date_start(d, &e, ref, mods[i].unit);
        if (e.oom)
            return nomem(err);
        dialect_date_guard(d, &g, e.data);
        if (g.oom)
            return nomem(err);
        from = arena_printf(a, "(SELECT %s AS \"t\" FROM %s AS \"__t%d\")", g.data, from, alias);
    }
    alias = ++c->alias_seq;
    ref = from ? arena_printf(a, "\"__t%d\".\"t\"", alias) : NULL;
    if (ref == NULL)
        return nomem(err);
    /* The format: literal runs as text parameters, specifiers as pieces. */
    const char *fmt = call->args[0].name;
    size_t n = call->args[0].len;
    buf_t pieces;
    buf_init(&pieces, a);
    int count = 0;
    for (size_t i = 0; i < n;) {
        if (count++)
            buf_puts(&pieces, " || ");
        if (fmt[i] == '%' && fmt[i + 1] != '%') {
            dialect_date_piece(d, &pieces, ref, fmt[i + 1]);
            i += 2;
            continue;
        }
        buf_t lit;
        buf_init(&lit, a);
        buf_puts(&lit, "");
        while (i < n && !(fmt[i] == '%' && fmt[i + 1] != '%')) {
            buf_putc(&lit, fmt[i]);
            i += fmt[i] == '%' ? 2 : 1;
        }
        const char *p = lit.oom ? NULL : typed_param(c, a, bs_val_text(lit.data, lit.len), 0);
        if (p == NULL)
            return nomem(err);
        buf_puts(&pieces, p);
    }
    if (count == 0)
        buf_puts(&pieces, "''");
    if (pieces.oom)
        return nomem(err);
    *sql = arena_printf(
        a, "COALESCE((SELECT CASE WHEN %s IS NULL THEN NULL ELSE %s END FROM %s AS \"__t%d\"), '')", ref,
        pieces.data, from, alias);
    return *sql == NULL ? nomem(err) : 0;
}

static int compile_strftime(rules_compiler_t *c, arena_t *a, const rules_call_t *call, const char **sql,
                            bs_value_t *value, int *is_value, bs_error_t *err)
{
    modifier_t mods[RULES_MAX_ARGS];
    size_t nmods = call->nargs > 2 ? call->nargs - 2 : 0;
    for (size_t i = 0; i < nmods; i++)
        parse_modifier(call->args[i + 2].name, call->args[i + 2].len, &mods[i]); /* checked when parsed */
    arg_t t;
    if (call->nargs < 2) {
        t.is_value = 1;
        t.value = bs_val_text("now", 3);
    } else if (compile_arg(c, a, &call->args[1], RULES_MOD_DATE, "strftime", &t, err) != 0) {
        return -1;
    }
    const char *fmt = call->args[0].name;
    size_t fn = call->args[0].len;
    if (t.is_value) {
        int64_t ms;
        buf_t b;
        buf_init(&b, a);
        buf_puts(&b, "");
        int ancient;
        if (const_time(t.value, mods, nmods, c->now_ms, &ms, &ancient))
            format_time(&b, fmt, fn, ms);
        if (b.oom)
            return nomem(err);
        *is_value = 1;
        *value = bs_val_text(b.data, b.len);
        return 0;
    }
    *is_value = 0;
    const dialect_t *d = dialect_get(c->dialect);
    if (!d->strftime_native)
        return compile_strftime_pg(c, a, call, t.sql, mods, nmods, sql, err);
    buf_t f, args;
    buf_init(&f, a);
    buf_init(&args, a);
    if (rules_add_param(c, a, bs_val_text(fmt, fn), &f) != 0)
        return nomem(err);
    buf_puts(&args, t.sql);
    for (size_t i = 2; i < call->nargs; i++) {
        buf_puts(&args, ", ");
        if (rules_add_param(c, a, bs_val_text(call->args[i].name, call->args[i].len), &args) != 0)
            return nomem(err);
    }
    if (args.oom)
        return nomem(err);
    *sql = arena_printf(a, d->strftime_fmt, f.data, args.data);
    return *sql == NULL ? nomem(err) : 0;
}

int rules_func_compile(rules_compiler_t *c, arena_t *arena, const rules_call_t *call, const char **sql,
                       bs_value_t *value, int *is_value, bs_error_t *err)
{
    *sql = NULL;
    *is_value = 0;
    if (call->fn == RULES_FN_GEO_DISTANCE)
        return compile_geo(c, arena, call, sql, value, is_value, err);
    return compile_strftime(c, arena, call, sql, value, is_value, err);
}

/* ---- evaluation in memory ---- */

/* One argument's value: is_const as the compiler would fold it; -1 invalid. */
static int eval_arg(const rules_evaluator_t *ev, arena_t *a, const rules_operand_t *o, unsigned need,
                    rules_evalue_t *out)
{
    memset(out, 0, sizeof(*out));
    out->is_const = 1;
    if (const_operand(a, ev->now_ms, o, &out->value))
        return 0;
    out->is_const = 0;
    if (ev->lookup == NULL || ev->lookup(ev->ud, a, o->name, o->len, need, out) != 0)
        return -1;
    if (out->multi)
        out->unknown = 1; /* the compiler refuses it */
    return 0;
}

int rules_func_eval(const rules_evaluator_t *ev, arena_t *arena, const rules_call_t *call,
                    rules_evalue_t *out)
{
    memset(out, 0, sizeof(*out));
    if (call->fn == RULES_FN_GEO_DISTANCE) {
        double nums[4];
        int all_const = 1, const_null = 0, col_null = 0;
        for (size_t i = 0; i < 4; i++) {
            rules_evalue_t v;
            if (eval_arg(ev, arena, &call->args[i], RULES_MOD_NUMERIC, &v) != 0)
                return -1;
            if (v.unknown) {
                out->unknown = 1;
                return 0;
            }
            all_const &= v.is_const;
            if (v.is_const) {
                if (!const_number(v.value, &nums[i]))
                    const_null = 1; /* the compiler folds the call to NULL */
            } else if (v.value.type == BS_VAL_INT || v.value.type == BS_VAL_DOUBLE) {
                nums[i] = v.value.type == BS_VAL_INT ? (double)v.value.i : v.value.d;
            } else if (v.value.type == BS_VAL_NULL) {
                col_null = 1; /* NULL from the SQL, not folded */
            } else {
                out->unknown = 1; /* a column holding text: its SQL meaning is SQLite's */
                return 0;
            }
        }
        out->is_const = all_const || const_null;
        out->value = const_null || col_null ? bs_val_null() : bs_val_double(geo_distance(nums));
        return 0;
    }
    modifier_t mods[RULES_MAX_ARGS];
    size_t nmods = call->nargs > 2 ? call->nargs - 2 : 0;
    for (size_t i = 0; i < nmods; i++)
        parse_modifier(call->args[i + 2].name, call->args[i + 2].len, &mods[i]);
    rules_evalue_t t;
    if (call->nargs < 2) {
        memset(&t, 0, sizeof(t));
        t.is_const = 1;
        t.value = bs_val_text("now", 3);
    } else if (eval_arg(ev, arena, &call->args[1], RULES_MOD_DATE, &t) != 0) {
        return -1;
    }
    if (t.unknown) {
        out->unknown = 1;
        return 0;
    }
    if (!t.is_const && t.value.type != BS_VAL_TEXT && t.value.type != BS_VAL_NULL) {
        out->unknown = 1; /* a date column holds text; anything else is SQLite's to read */
        return 0;
    }
    int64_t ms;
    buf_t b;
    buf_init(&b, arena);
    buf_puts(&b, "");
    if (!t.is_const && t.value.type == BS_VAL_TEXT && t.value.n > 0 &&
        (parse_time_text(t.value.s, t.value.n, ev->now_ms, &ms) != 0 ||
         time_text_overflows(t.value.s, t.value.n))) {
        out->unknown = 1; /* not Basalt's stored form: SQLite reads more forms than this file */
        return 0;
    }
    int ancient = 0, ok = const_time(t.value, mods, nmods, ev->now_ms, &ms, &ancient);
    if (ancient && !t.is_const) {
        out->unknown = 1;
        return 0;
    }
    if (ok)
        format_time(&b, call->args[0].name, call->args[0].len, ms);
    if (b.oom)
        return -1;
    out->is_const = t.is_const;
    out->value = bs_val_text(b.data, b.len);
    return 0;
}
