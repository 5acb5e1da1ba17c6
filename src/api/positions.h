/*
 * Read-your-writes with read replicas: the WAL position of each caller's last commit,
 * kept for the next reads of that caller (which wait for a replica that has replayed
 * it, or go to the primary), and, through Redis, the positions of other instances'
 * callers (docs/redis.md). Any thread.
 */
#ifndef BASALT_API_POSITIONS_H
#define BASALT_API_POSITIONS_H

#include <stddef.h>
#include <stdint.h>

#include "http/context.h"

/* The caller's slot in the table: the same on every instance for the same caller. */
size_t api_caller_slot(const req_ctx_t *ctx);
/* The caller of ctx committed at WAL position lsn. */
void api_position_note(const req_ctx_t *ctx, uint64_t lsn);
/* The position the caller's reads must see (0: any replica will do). */
uint64_t api_position_wanted(const req_ctx_t *ctx);
/* Another instance's caller of slot (UINT32_MAX: every slot) committed at WAL position
 * lsn: that caller's reads here wait for it (redis_shared's hook). */
void api_note_remote_position(uint32_t slot, uint64_t lsn);

#endif
