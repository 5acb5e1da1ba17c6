/*
 * caller — who is asking, and the facts of the request the rules may read.
 *
 * One value per request (or per realtime subscription, or per batch item), built
 * once where the request is known and then passed by pointer, read-only, to every
 * reader, writer and rule compiler that works for it: identity is never copied
 * field by field, so the copies cannot drift apart. Everything it points to is
 * owned by whoever built it (the request context, the realtime client) and lives at
 * least as long as the jobs that hold the pointer.
 */
#ifndef BASALT_CORE_CALLER_H
#define BASALT_CORE_CALLER_H

#include <jansson.h>

#include "core/schema.h"

typedef struct caller {
    int superuser;                 /* a _superusers record (or the server itself) */
    const collection_t *auth_coll; /* the authenticated record's collection, or NULL */
    const json_t *auth;            /* its stored fields, or NULL: anonymous */
    const json_t *query;           /* @request.query: an object of strings, or NULL */
    const json_t *headers;         /* @request.headers (lower-cased, '-' as '_'), or NULL */
    const char *method;            /* @request.method, upper case; NULL is "GET" */
    const char *context;           /* @request.context; NULL is "default" */
} caller_t;

/* The same request facts with another identity: the record a sign-in is deciding
 * about, say. rec and c stay the caller's to own. */
caller_t caller_as(const caller_t *base, const collection_t *c, const json_t *rec, int superuser);

/* The server acting on its own behalf (command-line tools, maintenance jobs). */
extern const caller_t caller_system;
/* Nobody: no identity and no request facts. */
extern const caller_t caller_anonymous;

#endif
