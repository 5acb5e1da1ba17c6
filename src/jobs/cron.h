/*
 * cron — five-field cron expressions, as PocketBase's tools/cron accepts them.
 *
 * "minute hour day-of-month month day-of-week" (0-59, 0-23, 1-31, 1-12, 0-6 with 0
 * Sunday), each field a comma list of "*", "N", "A-B", "* /S" or "A-B/S" (a step
 * only with the wildcard or a range), separated by single spaces; or a macro
 * (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly). A minute is
 * due when every field matches (day of month AND day of week, as PocketBase does,
 * not Vixie cron's OR). Times are UTC. Pure: no I/O, no state; any thread.
 */
#ifndef BASALT_JOBS_CRON_H
#define BASALT_JOBS_CRON_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t minutes; /* bit m: minute m */
    uint32_t hours;   /* bit h */
    uint32_t days;    /* bit d, 1..31 */
    uint16_t months;  /* bit m, 1..12 */
    uint8_t weekdays; /* bit w, 0..6 */
} cron_t;

/* Parses expr (len bytes, need not be NUL-terminated) into out. Returns 0, or -1
 * with a message a person can act on in why (at least 128 bytes). */
int cron_parse(const char *expr, size_t len, cron_t *out, char *why, size_t why_cap);
/* Whether the minute starting at ms since the epoch (UTC) is due. */
int cron_due(const cron_t *c, int64_t ms);
/* The start (ms since the epoch) of the first due minute strictly after after_ms,
 * or -1 when none comes within the next five years (e.g. "0 0 31 2 *"). */
int64_t cron_next(const cron_t *c, int64_t after_ms);

#endif
