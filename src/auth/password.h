/*
 * password — Argon2id hashing off the event loops.
 *
 * Hashing costs tens of milliseconds by design, so it never runs on a worker loop:
 * password_submit() hands a request to a small pool of hashing threads (the pool
 * size caps concurrent hashing, so logins cannot starve other work) and the result
 * comes back through the caller's mailbox. A verification against an unknown
 * identity runs against a dummy hash, so it takes the same time as a real one.
 */
#ifndef BASALT_AUTH_PASSWORD_H
#define BASALT_AUTH_PASSWORD_H

#include <sodium.h>

#include "base/mailbox.h"

typedef enum { PASSWORD_HASH, PASSWORD_VERIFY } password_op_t;

typedef struct password_req {
    mailbox_msg_t msg; /* first: posted back to reply_to */
    mailbox_t *reply_to;
    password_op_t op;
    char *password;                    /* owned by the request's creator; wiped after use */
    char hash[crypto_pwhash_STRBYTES]; /* in for VERIFY (empty = dummy), out for HASH */
    int ok;                            /* out: VERIFY matched / HASH succeeded */
    struct password_req *next;
} password_req_t;

/* Starts the pool with `threads` workers and the given cost. Returns 0 or -1. */
int password_start(int threads, unsigned long long opslimit, size_t memlimit);
void password_stop(void);
/* Takes req until it is posted back. */
void password_submit(password_req_t *req);
/* Synchronous variants for the CLI and tests. */
int password_hash_now(const char *password, char out[crypto_pwhash_STRBYTES]);
int password_verify_now(const char *hash, const char *password);
/* The hash an unknown identity is verified against (set by password_start; for tests). */
const char *password_dummy_hash(void);

#endif
