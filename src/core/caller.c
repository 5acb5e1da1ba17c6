/* caller — the two callers that are not a request. */
#include "core/caller.h"

const caller_t caller_system = {.superuser = 1};
const caller_t caller_anonymous = {0};

caller_t caller_as(const caller_t *base, const collection_t *c, const json_t *rec, int superuser)
{
    caller_t who = *base;
    who.auth_coll = rec != NULL ? c : NULL;
    who.auth = rec;
    who.superuser = superuser;
    return who;
}
