/*
 * cursor — keyset pagination for record lists: `?cursor=` (empty for the first page)
 * answers with "nextCursor", an opaque token for the page after the last record,
 * valid for the same sort. Unlike page/OFFSET it costs the same on page 10,000 as on
 * page 1, and a record added or removed behind the cursor neither skips nor repeats
 * another one.
 *
 * The token is base64url of {"s": sort, "k": [key values of the last record, id
 * last]}: values the caller could already sort by (read from the same expressions),
 * bound as parameters when it comes back, so a forged token can only move the page.
 */
#ifndef BASALT_API_CURSOR_H
#define BASALT_API_CURSOR_H

#include "base/arena.h"
#include "base/buf.h"
#include "base/error.h"
#include "base/value.h"
#include "rules/rules.h"

/* At most 8 sort terms, plus the id that makes the order total. */
#define CURSOR_MAX_KEYS 9

typedef struct {
    const char *sql[CURSOR_MAX_KEYS]; /* the sort expressions, in order */
    int desc[CURSOR_MAX_KEYS];
    int n;
    int random; /* @random was asked for: no cursor can follow that order */
} cursor_keys_t;

/* Decodes text (the query parameter) made for sort into vals (n of them, strings in
 * a). An empty text is the first page: *have = 0. Returns 0, or -1 with a 400. */
int cursor_decode(arena_t *a, const char *text, const char *sort, int n, bs_value_t *vals, int *have,
                  bs_error_t *err);
/* Appends the condition "comes after vals in the order of keys" (NULLs first when
 * ascending and last when descending, as both dialects sort). */
void cursor_where(rules_compiler_t *comp, arena_t *a, const cursor_keys_t *keys, const bs_value_t *vals,
                  buf_t *out);
/* Appends the token for the record whose key values are vals. */
void cursor_encode(buf_t *out, const char *sort, const bs_value_t *vals, int n);

#endif
