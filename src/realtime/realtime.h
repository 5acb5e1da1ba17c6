/*
 * realtime — record change events to subscribers over SSE (PocketBase's protocol)
 * and WebSocket (Basalt's), with rules checked per subscriber.
 *
 * Flow: a write job collects the records it changed (record_write_t.changes); after
 * the commit the writer thread calls realtime_publish(), which numbers the events,
 * keeps them in the resume log and hands them to the bus. The local bus posts one
 * message per worker that has clients; each worker checks its own subscribers and
 * queues the payloads on their connections. Every connection belongs to one worker
 * and is touched only by it. A cross-instance bus (Redis pub/sub) plugs in at
 * rt_bus_t: it sends what this instance publishes and injects what others did.
 */
#ifndef BASALT_REALTIME_REALTIME_H
#define BASALT_REALTIME_REALTIME_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/schema.h"
#include "http/context.h"

struct worker;

typedef struct {
    int max_connections;    /* realtime connections of the instance */
    int max_subscriptions;  /* per connection */
    int max_topic_length;   /* bytes, options included */
    int max_messages_per_s; /* client messages per connection */
    size_t queue_bytes;     /* unsent bytes per connection before it is closed */
    size_t max_message;     /* largest WebSocket message a client may send */
    int resume_window_ms;   /* how long events stay replayable */
    int resume_max_events;  /* and at most this many */
    int idle_timeout_ms;    /* a connection with no traffic for this long is closed */
    int ping_interval_ms;   /* WebSocket pings and SSE keep-alive comments */
    int reconnect_hint_ms;  /* the retry hint sent when the server drains */
} realtime_config_t;

/* One published change. Immutable once published; shared by reference. */
typedef struct rt_event {
    uint64_t id;
    int64_t time_ms;
    uint64_t mono_ns; /* when it was published, for the delivery latency metric */
    int action;       /* RT_CREATE, RT_UPDATE, RT_DELETE */
    char *coll_id;
    char *rec_id;
    /* Every stored field, hidden ones included. NULL for an event of the resume history
     * loaded at start-up until a resuming client needs it: that keeps record_text, the
     * outbox row's JSON (a tenth of the memory of its parsed form), and parses it at
     * the first use (rt_event_record). Read it through rt_event_record. */
    json_t *record;
    char *record_text; /* owned; NULL when record was given */
    size_t record_len;
    int refs; /* atomic */
} rt_event_t;

/* ev's record, parsed on first use from record_text (any thread; the first parse
 * wins); NULL only when that text is not JSON or memory ran out. */
json_t *rt_event_record(const rt_event_t *ev);

enum { RT_CREATE, RT_UPDATE, RT_DELETE };

/* The seam for a cross-instance bus. */
typedef struct rt_bus {
    /* Called on the writer thread with the events this instance committed. */
    void (*publish)(struct rt_bus *bus, rt_event_t *const *events, size_t n);
    void *data;
} rt_bus_t;

int realtime_init(const realtime_config_t *cfg);
void realtime_shutdown(void);
/* Installs a cross-instance bus (NULL: this instance only). */
void realtime_set_bus(rt_bus_t *bus);
/* Whether any client is connected: writes collect changes only then. */
int realtime_listening(void);
/* Writer thread, after a commit: takes changes (from record_write_t.changes). */
void realtime_publish(json_t *changes);
/* Events from another instance (the bus's receiving side), any thread. */
void realtime_inject(json_t *changes);
/* The store's outbox (store_outbox_config_t, ADR 0006), on the writer thread: the
 * epoch and position (which turn on outbox mode: realtime_publish then leaves the
 * changes to the outbox), and the events in offset order. */
void realtime_outbox_position(uint32_t epoch, uint64_t upto);
void realtime_outbox_sink(json_t *changes, int history);
/* The client registry across instances (sse.c, ADR 0006): a subscription POST for a
 * stream that another instance holds is handed to it through the database. Enabled
 * on PostgreSQL with the outbox, before the workers start; the tick is the outbox's
 * (store_outbox_config_t.tick). */
struct store_conn;
void realtime_registry_enable(void);
void realtime_registry_tick(struct store_conn *writer, int external);

/* Worker lifecycle (SERVER_WORKER_* events), on the worker's thread. */
void realtime_worker_event(struct worker *w, int event);
/* Realtime connections the worker still holds (drain waits for them). */
size_t realtime_worker_clients(struct worker *w);

/* The endpoints. */
void realtime_sse_open(req_ctx_t *ctx);      /* GET /api/realtime */
void realtime_sse_subscribe(req_ctx_t *ctx); /* POST /api/realtime */
void realtime_ws_open(req_ctx_t *ctx);       /* GET /api/realtime/ws */

/* Authenticates a WebSocket "auth" message's token; set by the API layer. */
/* The outcome of a token check: status 0 with the record (owned by the receiver),
 * its collection, the superuser flag and whether it may be refreshed; or -1 and err. */
typedef struct {
    int status;
    json_t *auth;
    const collection_t *coll;
    int superuser, refreshable;
    int coll_unknown; /* refused because it names a collection this instance does not know */
    bs_error_t err;
} api_token_result_t;
typedef void (*api_token_cb)(void *arg, api_token_result_t *res);
/* Checks a token and calls cb once, on the worker (at once, or after a read job). */
typedef void (*realtime_auth_fn)(struct worker *w, schema_t *s, const char *token, size_t len,
                                 api_token_cb cb, void *arg);
void realtime_set_authenticator(realtime_auth_fn fn);

/* Gauges for /metrics: SSE connections, WebSocket connections, subscriptions,
 * events held for resume. */
void realtime_gauges(uint64_t out[4]);

/* ---- used between hub.c and client.c ---- */
void rt_event_unref(rt_event_t *ev);
/* Copies (with a reference each) the logged events after after_id into out (malloc'd,
 * *n of them). Returns 0; 1 (nothing copied) when after_id is an outbox id this
 * instance has not read yet (another instance gave it; the events up to it arrive
 * here later and the client has them), or -1 when events after after_id are no
 * longer held (or the id is of another epoch): the client must resync. */
int rt_log_since(uint64_t after_id, rt_event_t ***out, size_t *n);
uint64_t rt_log_last_id(void);
size_t rt_log_count(void);
const realtime_config_t *rt_config(void);
/* Worker registration for the local bus. */
typedef void (*rt_deliver_fn)(struct worker *w, rt_event_t **events, size_t n);
void rt_register_worker(struct worker *w, rt_deliver_fn deliver);
void rt_worker_has_clients(struct worker *w, int yes);

#endif
