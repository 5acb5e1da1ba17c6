/*
 * mailbox — a multi-producer queue into one event loop.
 *
 * Any thread may post; the owning loop drains. Posting writes to an eventfd that the
 * loop watches, so a sleeping loop wakes. Messages are intrusive (mailbox_msg_t is
 * embedded first in the sender's struct) and their ownership passes to the receiver.
 */
#ifndef BASALT_BASE_MAILBOX_H
#define BASALT_BASE_MAILBOX_H

#include <pthread.h>

typedef struct mailbox_msg {
    struct mailbox_msg *next;
    void (*deliver)(struct mailbox_msg *msg); /* runs on the owning loop's thread */
} mailbox_msg_t;

typedef struct {
    pthread_mutex_t lock;
    mailbox_msg_t *head, **tail;
    int efd;
} mailbox_t;

/* Returns 0 or -1 (errno set) if the eventfd cannot be created. */
int mailbox_init(mailbox_t *mb);
void mailbox_destroy(mailbox_t *mb);
/* Takes msg; thread-safe. */
void mailbox_post(mailbox_t *mb, mailbox_msg_t *msg);
/* Runs deliver() for every queued message, in order; owner thread only. Returns count. */
int mailbox_drain(mailbox_t *mb);

#endif
