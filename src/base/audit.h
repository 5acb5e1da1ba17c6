/*
 * audit — the append-only log of security-relevant actions: logins and failures,
 * token refreshes, impersonation, token revocation, collection and rule changes,
 * rate-limit refusals. One JSON object per line, written with one write(2) on a file
 * opened O_APPEND, so lines from all threads stay whole. Never a password or token.
 */
#ifndef BASALT_BASE_AUDIT_H
#define BASALT_BASE_AUDIT_H

typedef struct {
    const char *action; /* e.g. "login", "login_failed", "collection_update" */
    const char *actor;  /* "collection/id", or NULL for anonymous */
    const char *target; /* what was acted on, or NULL */
    const char *ip;
    const char *request_id;
    const char *detail; /* free text, or NULL */
} audit_event_t;

/* Opens (creating, mode 0600) the audit file; "" means no file (events go to the
 * log as module "audit"). Returns 0 or -1 with errno. */
int audit_open(const char *path);
void audit_close(void);
void audit_log(const audit_event_t *e);

#endif
