/*
 * The realtime layer's own declarations, shared by client.c (connections, their
 * output, identities, worker life), rt_sub.c (subscriptions and the index),
 * rt_deliver.c (delivery with rule checks, read jobs, replay), sse.c (PocketBase's
 * SSE endpoints) and ws.c (the WebSocket endpoint and protocol). Not for other
 * layers: they use realtime.h. Everything here runs on the worker thread that owns
 * the connection.
 */
#ifndef BASALT_REALTIME_RT_CONN_H
#define BASALT_REALTIME_RT_CONN_H

#define H2O_USE_LIBUV 0
#include <h2o.h>
#include <jansson.h>

#include "core/record.h"
#include "http/server.h"
#include "realtime/realtime.h"
#include "realtime/rt_frame.h"

#define CLIENT_ID_LEN 40
#define RT_AUTH_SLOTS 1024

typedef struct rt_client rt_client_t;
typedef struct rt_worker rt_worker_t;

typedef struct {
    rt_client_t *client;
    char *topic; /* as subscribed: the event name */
    char coll_id[64];
    char *record_id; /* NULL: every record (the "coll/STAR" topic) */
    char *filter;    /* options.query.filter, or NULL */
    rules_node_t *filter_node;
    path_tree_t *expand, *fields;
    json_t *query, *headers; /* options, for @request.query / @request.headers */
    arena_t arena;           /* filter AST, trees, strings */
    size_t slot;             /* position in its bucket */
    /* Read jobs holding it (PostgreSQL delivery): freed by the last one once dead. */
    int refs;
    int dead; /* unsubscribed or its client gone: client is NULL then */
} rt_sub_t;

typedef struct {
    char coll_id[64];
    rt_sub_t **subs;
    size_t n, cap;
} bucket_t;

enum { T_SSE, T_WS };

/* Lives in an SSE request's pool: h2o disposing of it tells the client. */
typedef struct sse_guard {
    rt_client_t *c;
} sse_guard_t;

struct rt_client {
    rt_client_t *prev, *next;
    rt_worker_t *rw;
    int transport;
    char id[CLIENT_ID_LEN + 1];
    /* who */
    json_t *auth; /* the authenticated record, or NULL */
    char auth_coll_id[64];
    /* auth_coll_id resolved in the schema seen last (see rt_client_auth_coll) */
    const collection_t *auth_coll;
    uint64_t auth_coll_version; /* 0: not looked up */
    /* A hash of the auth collection's token secret when the identity was set: a new
     * secret (or the collection's deletion) ends the identity like a revocation. */
    uint64_t auth_secret_hash;
    /* The worker's index of signed-in clients by record (auth_index). */
    rt_client_t *auth_prev, *auth_next;
    size_t auth_slot;
    int auth_linked;
    int superuser;
    int auth_set;     /* SSE: the first subscription request fixed the identity */
    int auth_pending; /* WebSocket: an "auth" message's token check runs (a read job) */
    rt_sub_t **subs;
    int nsubs;
    /* output: frames queued, the first `inflight` of them in the write in flight */
    rt_outq_t out;
    uint32_t inflight;
    int writing;
    /* Deliveries queued in this loop turn, written once at its end (rw->dirty). */
    int dirty;
    rt_client_t *dirty_prev, *dirty_next;
    int closing; /* no more deliveries; close after the queue is written */
    int dead;    /* the peer is gone; freed when nothing references it */
    /* SSE */
    h2o_req_t *req;
    h2o_generator_t gen;
    struct sse_guard *guard; /* in the request's pool; tells us when h2o disposes of it */
    /* WebSocket */
    h2o_socket_t *sock;
    buf_t msg; /* a fragmented message being assembled */
    int msg_op;
    /* resume: events up to this id were replayed or are not wanted */
    uint64_t min_id;
    uint64_t resume_from; /* SSE: Last-Event-ID, applied with the first subscriptions */
    /* limits and timers */
    int64_t last_activity_ms, last_ping_ms, closing_since_ms;
    int64_t rate_window_ms;
    int rate_count, rate_refused;
};

struct rt_worker {
    worker_t *w;
    rt_client_t *clients;
    size_t nclients;
    bucket_t *buckets;
    size_t nbuckets, cap_buckets;
    int64_t last_sweep_ms;
    int draining;
    /* Signed-in clients by (auth collection, record id), RT_AUTH_SLOTS chains: a
     * change of a record finds the connections signed in as it without a scan. */
    rt_client_t **auth_index;
    uint64_t auth_schema_version; /* the schema the identities were last checked in */
    /* parsed rules of the current schema: [collection][list/view] */
    uint64_t rules_version;
    arena_t rules_arena;
    struct rule_cache {
        const collection_t *coll;
        rules_node_t *node[2];
        int parsed[2];
    } * rules;
    size_t nrules, cap_rules;
    /* PostgreSQL: deliveries decided in read jobs, one at a time per worker so that
     * events keep their order; the ones made meanwhile wait here. */
    struct rt_job *jobs_head, **jobs_tail;
    struct rt_job *job_running; /* the one in flight, or NULL */
    /* Clients with deliveries to write at the end of the turn, oldest first. */
    rt_client_t *dirty, *dirty_tail;
};

extern realtime_auth_fn rt_authenticate;

/* Connections. */
rt_worker_t *rt_rw_of(worker_t *w);
/* This process's tag in its client ids (characters 3 to 10), drawn at start-up. */
#define RT_INSTANCE_TAG_LEN 8
const char *rt_instance_tag(void);
rt_client_t *rt_client_new(rt_worker_t *rw, int transport);
/* Unlinks and frees; the transport is finished with the client. */
void rt_client_free(rt_client_t *c);
/* The peer is gone (or the WebSocket finished closing). */
void rt_client_teardown(rt_client_t *c);
rt_client_t *rt_client_find(rt_worker_t *rw, const char *id);
/* Takes auth (the record, or NULL; owned from now on) of collection coll (in the
 * caller's schema) as the client's identity. */
void rt_client_set_auth(rt_client_t *c, json_t *auth, const collection_t *coll, int superuser);
/* The client's auth collection in schema s, or NULL (anonymous, or it is gone). */
const collection_t *rt_client_auth_coll(rt_client_t *c, const schema_t *s);
uint64_t rt_total_connections(void);
/* Sends 503 (and returns -1) when the instance holds its most connections or drains. */
int rt_refuse_if_full(req_ctx_t *ctx);
/* A decimal event id, or 0. */
uint64_t rt_parse_event_id(const char *s, size_t n);

/* Output: one write in flight, the rest queued, the sum bounded by queue_bytes. */
void rt_client_flush(rt_client_t *c);
/* The write in flight completed (the transport's callback, before rt_client_continue). */
void rt_client_written(rt_client_t *c);
/* After rt_client_written: writes what is queued, unless deliveries marked the
 * connection, which then waits for its turn on the worker's list. */
void rt_client_continue(rt_client_t *c);
/* Queues frame f (taking the caller's reference) under the queue bound; over it the
 * connection is closed as a slow consumer and -1 returned. deferred: written at the
 * end of the loop turn (rt_flush_dirty) with whatever else the turn queued; else now. */
int rt_client_queue(rt_client_t *c, rt_frame_t *f, int deferred);
/* Writes the connections that deliveries marked, oldest first, up to a slice per
 * call; with more left it sets rw->w->more so that the loop comes back at once. */
void rt_flush_dirty(rt_worker_t *rw);
/* Appends one message (JSON text): an SSE event (with id if not NULL) or a
 * WebSocket text frame; over the bound the connection is closed as a slow consumer. */
void rt_client_send(rt_client_t *c, const char *sse_event, const char *sse_id, const char *json, size_t n);
/* Ends with a reason: SSE a last PB_ERROR event, WebSocket a close frame. */
void rt_client_close(rt_client_t *c, int code, const char *reason);
/* Queues a WebSocket frame (no bound: the server's own close and ping frames). */
void rt_ws_frame(rt_client_t *c, int op, const char *p, size_t n);
/* Queues a control frame answering the client (a pong) within the queue bound;
 * -1 when the connection was closed as a slow consumer instead. */
int rt_ws_control(rt_client_t *c, int op, const char *p, size_t n);

/* Subscriptions (rt_sub.c). The gauge of all workers' subscriptions (atomic). */
extern uint64_t rt_n_subs;
/* The worker's bucket of subscriptions of a collection (created when asked), or NULL. */
bucket_t *rt_bucket_find(rt_worker_t *rw, const char *coll_id, int create);
/* Frees a subscription, or marks it dead while read jobs hold it (the last frees it). */
void rt_sub_free(rt_sub_t *s);
void rt_client_clear_subs(rt_client_t *c);
/* Who a subscription reads as: the identity given, with the subscription's options
 * as @request.query / @request.headers, in the "realtime" context. */
caller_t rt_sub_caller(const rt_sub_t *sub, int superuser, const collection_t *ac, const json_t *auth);
/* After a lost identity (SSE): drops the subscriptions the client may no longer hold. */
void rt_client_recheck_subs(rt_client_t *c, const schema_t *s);
/* Identities follow their records (client.c): a change of an auth record, before it is
 * delivered; a schema change (new token secret, collection gone). May remove
 * subscriptions: never called while a bucket is walked. */
void rt_auth_record_changed(rt_worker_t *rw, const schema_t *s, const rt_event_t *ev);
void rt_auth_check_schema(rt_worker_t *rw, const schema_t *s);
/* Delivery (rt_deliver.c): the hub's callback with events in id order, and the end of
 * the worker (delivery jobs dropped or waited for). */
void rt_deliver_events(worker_t *w, rt_event_t **evs, size_t n);
void rt_deliver_end(rt_worker_t *rw);

/* Subscriptions: replace (SSE) or extend (WebSocket), all checked before any
 * applies; remove one topic or (NULL) all. */
int rt_client_subscribe(rt_client_t *c, const schema_t *schema, const json_t *topics, int replace,
                        bs_error_t *err);
void rt_client_unsubscribe(rt_client_t *c, const char *topic);
/* Replays the logged events after `after`; -1 when the client was told to resync. */
int rt_client_replay(rt_client_t *c, uint64_t after);
/* rt_client_send of a WebSocket message after every delivery already decided for the
 * client's worker (PostgreSQL: after the delivery jobs in flight or waiting), so that
 * it follows the events it speaks of (e.g. "resumed" after a replay). */
void rt_client_send_ordered(rt_client_t *c, const char *json, size_t n);

#endif
