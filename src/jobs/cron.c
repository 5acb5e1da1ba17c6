/* Five-field cron expressions; see cron.h. */
#include "jobs/cron.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const struct {
    const char *name, *expr;
} macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
    {"@daily", "0 0 * * *"},  {"@midnight", "0 0 * * *"}, {"@hourly", "0 * * * *"},
};

/* Parses a decimal number of s[0..n) (1-3 digits); -1 when it is not one. */
static int number(const char *s, size_t n)
{
    if (n == 0 || n > 3)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* One field s[0..n) with values min..max into *bits. */
static int field(const char *s, size_t n, int min, int max, uint64_t *bits, const char *label, char *why,
                 size_t cap)
{
    *bits = 0;
    if (n == 0) {
        snprintf(why, cap, "The %s field is empty.", label);
        return -1;
    }
    size_t i = 0;
    while (i <= n) {
        size_t e = i;
        while (e < n && s[e] != ',')
            e++;
        const char *p = s + i;
        size_t pn = e - i;
        const char *slash = memchr(p, '/', pn);
        int step = 1;
        size_t rn = pn;
        if (slash != NULL) {
            rn = (size_t)(slash - p);
            step = number(slash + 1, pn - rn - 1);
            if (step < 1 || step > max) {
                snprintf(why, cap, "The %s field's step must be a number from 1 to %d.", label, max);
                return -1;
            }
        }
        int lo, hi;
        if (rn == 1 && p[0] == '*') {
            lo = min;
            hi = max;
        } else {
            const char *dash = memchr(p, '-', rn);
            if (dash == NULL) {
                if (slash != NULL) {
                    snprintf(why, cap, "In the %s field a step needs \"*\" or a range (A-B/S).", label);
                    return -1;
                }
                lo = hi = number(p, rn);
            } else {
                lo = number(p, (size_t)(dash - p));
                hi = number(dash + 1, rn - (size_t)(dash - p) - 1);
            }
            if (lo < min || lo > max || hi < min || hi > max) {
                snprintf(why, cap, "The %s field must hold numbers from %d to %d (or *).", label, min, max);
                return -1;
            }
            if (lo > hi) {
                snprintf(why, cap, "The %s field has a range whose start is after its end.", label);
                return -1;
            }
        }
        for (int v = lo; v <= hi; v += step)
            *bits |= 1ull << v;
        i = e + 1;
    }
    return 0;
}

int cron_parse(const char *expr, size_t len, cron_t *out, char *why, size_t cap)
{
    memset(out, 0, sizeof(*out));
    if (len > 0 && expr[0] == '@') {
        for (size_t i = 0; i < sizeof(macros) / sizeof(macros[0]); i++)
            if (strlen(macros[i].name) == len && memcmp(macros[i].name, expr, len) == 0)
                return cron_parse(macros[i].expr, strlen(macros[i].expr), out, why, cap);
        snprintf(why, cap,
                 "Unknown cron macro; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or "
                 "@hourly.");
        return -1;
    }
    static const struct {
        int min, max;
        const char *label;
    } f[5] = {
        {0, 59, "minute"}, {0, 23, "hour"}, {1, 31, "day-of-month"}, {1, 12, "month"}, {0, 6, "day-of-week"}};
    uint64_t bits[5];
    size_t start = 0;
    int k = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && expr[i] != ' ')
            continue;
        if (k == 5) {
            k = 6;
            break;
        }
        if (field(expr + start, i - start, f[k].min, f[k].max, &bits[k], f[k].label, why, cap) != 0)
            return -1;
        k++;
        start = i + 1;
    }
    if (k != 5) {
        snprintf(why, cap,
                 "A cron expression has exactly 5 fields separated by single spaces (minute hour day month "
                 "weekday), or is a macro such as @daily.");
        return -1;
    }
    out->minutes = bits[0];
    out->hours = (uint32_t)bits[1];
    out->days = (uint32_t)bits[2];
    out->months = (uint16_t)bits[3];
    out->weekdays = (uint8_t)bits[4];
    return 0;
}

int cron_due(const cron_t *c, int64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL)
        return 0;
    return (c->minutes >> tm.tm_min & 1) && (c->hours >> tm.tm_hour & 1) && (c->days >> tm.tm_mday & 1) &&
           (c->months >> (tm.tm_mon + 1) & 1) && (c->weekdays >> tm.tm_wday & 1);
}

int64_t cron_next(const cron_t *c, int64_t after_ms)
{
    if (after_ms < 0)
        after_ms = 0;
    /* Whole minutes; skips a month, a day or an hour at a time where it cannot
     * match, so the loop is bounded by about 5 * (12 + 366 + 24 + 60) steps a year. */
    time_t t = (time_t)(after_ms / 60000 + 1) * 60;
    time_t limit = t + (time_t)5 * 366 * 86400;
    while (t < limit) {
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL)
            return -1;
        if (!(c->months >> (tm.tm_mon + 1) & 1)) {
            tm.tm_mon++;
            tm.tm_mday = 1;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
            t = timegm(&tm);
            continue;
        }
        if (!(c->days >> tm.tm_mday & 1) || !(c->weekdays >> tm.tm_wday & 1)) {
            tm.tm_mday++;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
            t = timegm(&tm);
            continue;
        }
        if (!(c->hours >> tm.tm_hour & 1)) {
            tm.tm_hour++;
            tm.tm_min = tm.tm_sec = 0;
            t = timegm(&tm);
            continue;
        }
        if (!(c->minutes >> tm.tm_min & 1)) {
            t += 60;
            continue;
        }
        return (int64_t)t * 1000;
    }
    return -1;
}
