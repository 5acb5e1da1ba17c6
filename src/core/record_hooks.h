/*
 * record_hooks — what a record write queues besides itself, in the same
 * transaction (the outbox): webhook deliveries for the collection's configured
 * webhooks, and the reminders of its "reminders" option (scheduled at the date
 * minus "before", moved when the date changes, dropped with the record).
 *
 * Threads: record_hooks_note on the writer, inside the write (record_write.c calls
 * it for every record a write creates, changes or deletes, cascades included);
 * record_hooks_init at start-up.
 */
#ifndef BASALT_CORE_RECORD_HOOKS_H
#define BASALT_CORE_RECORD_HOOKS_H

#include <jansson.h>

#include "core/schema.h"
#include "store/store.h"

/* Registers the reminder job handler. Start-up. */
int record_hooks_init(void);
/* Whether a change of c's records with action needs the record loaded for hooks. */
int record_hooks_wanted(const collection_t *c, const char *action);
/* Queues the hooks of one change; rec is the record (after a create or update,
 * before a delete). Returns 0 or -1 with err (the write then fails). */
int record_hooks_note(store_conn_t *conn, const schema_t *s, const collection_t *c, const char *action,
                      const json_t *rec, bs_error_t *err);

/* Checks and normalises a "reminders" option (an array) for c into *out (owned;
 * NULL when empty). Field errors under "reminders.N.key". Returns 0 or -1. */
int record_hooks_parse_reminders(const collection_t *c, const json_t *spec, const schema_t *s, json_t **out,
                                 arena_t *a, bs_error_t *err);

#endif
