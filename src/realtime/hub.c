/*
 * The hub: numbering of events, the resume log, and the local bus that hands
 * events to the workers. Publishing runs on the writer thread (or the bus's
 * receiving thread); the log is shared under a mutex with workers replaying it.
 *
 * An event id is one decimal number: an epoch in the bits above
 * STORE_OUTBOX_OFFSET_BITS and the event's offset below (Centrifugo's offset and
 * epoch, in the one opaque string an SSE id is). With the outbox (ADR 0006) the
 * offset is the event's row in `_events`, the same on every instance and across
 * restarts, and the epoch that of the database's outbox; without it the offsets
 * count from 1 and the epoch is drawn at start-up, so an id from an earlier run
 * (or from another database) never resumes: the client is told to resync.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/mailbox.h"
#include "base/util.h"
#include "http/server.h"
#include "metrics/metrics.h"
#include "realtime/realtime.h"
#include "store/store.h"

#define MAX_WORKERS 256

static realtime_config_t cfg;
static rt_bus_t *bus;

static struct {
    pthread_mutex_t lock;
    rt_event_t **ring;
    size_t cap, head, count; /* oldest at head */
    uint64_t next_id;        /* the id the next event gets */
    uint64_t base;           /* the epoch's first id (offset 0) */
    uint64_t evicted_upto;   /* largest id no longer held (base if none) */
} logq = {.lock = PTHREAD_MUTEX_INITIALIZER};
static int outbox_mode; /* set before the workers start: events come from the store */

static struct {
    worker_t *w;
    rt_deliver_fn deliver;
    int has_clients; /* atomic */
} workers[MAX_WORKERS];
static int nworkers;       /* atomic */
static int ever_connected; /* atomic: a realtime client has connected since start-up */

typedef struct {
    mailbox_msg_t msg;
    worker_t *w;
    rt_deliver_fn deliver;
    size_t n;
    rt_event_t *ev[];
} fanout_msg_t;

const realtime_config_t *rt_config(void)
{
    return &cfg;
}

int realtime_init(const realtime_config_t *c)
{
    cfg = *c;
    logq.cap = cfg.resume_max_events > 0 ? (size_t)cfg.resume_max_events : 1;
    logq.ring = calloc(logq.cap, sizeof(*logq.ring));
    if (logq.ring == NULL)
        return -1;
    uint32_t rnd;
    util_random_bytes(&rnd, sizeof(rnd));
    logq.base = (uint64_t)((rnd % ((1u << 19) - 1)) + 1) << STORE_OUTBOX_OFFSET_BITS;
    logq.next_id = logq.base + 1;
    logq.evicted_upto = logq.base;
    return 0;
}

void realtime_set_bus(rt_bus_t *b)
{
    bus = b;
}

json_t *rt_event_record(const rt_event_t *cev)
{
    rt_event_t *ev = (rt_event_t *)cev; /* the parse fills the cache of a shared event */
    json_t *r = __atomic_load_n(&ev->record, __ATOMIC_ACQUIRE);
    if (r != NULL || ev->record_text == NULL)
        return r;
    json_t *parsed = json_loadb(ev->record_text, ev->record_len, 0, NULL);
    if (parsed == NULL)
        return NULL;
    json_t *expected = NULL;
    if (!__atomic_compare_exchange_n(&ev->record, &expected, parsed, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        json_decref(parsed); /* another thread parsed it first */
        return expected;
    }
    return parsed;
}

void rt_event_unref(rt_event_t *ev)
{
    if (ev == NULL || __atomic_sub_fetch(&ev->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    json_decref(ev->record);
    free(ev->record_text);
    free(ev->coll_id);
    free(ev->rec_id);
    free(ev);
}

void realtime_shutdown(void)
{
    pthread_mutex_lock(&logq.lock);
    for (size_t i = 0; i < logq.count; i++)
        rt_event_unref(logq.ring[(logq.head + i) % logq.cap]);
    logq.count = 0;
    free(logq.ring);
    logq.ring = NULL;
    pthread_mutex_unlock(&logq.lock);
}

void rt_register_worker(worker_t *w, rt_deliver_fn deliver)
{
    if (w->idx < 0 || w->idx >= MAX_WORKERS)
        return;
    workers[w->idx].w = w;
    workers[w->idx].deliver = deliver;
    int n = w->idx + 1;
    int cur = __atomic_load_n(&nworkers, __ATOMIC_ACQUIRE);
    while (cur < n && !__atomic_compare_exchange_n(&nworkers, &cur, n, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        ;
}

void rt_worker_has_clients(worker_t *w, int yes)
{
    if (w->idx >= 0 && w->idx < MAX_WORKERS)
        __atomic_store_n(&workers[w->idx].has_clients, yes, __ATOMIC_RELEASE);
    if (yes)
        __atomic_store_n(&ever_connected, 1, __ATOMIC_RELEASE);
}

/* Once realtime is in use, changes are logged even while no client is connected,
 * so that clients reconnecting within the window miss nothing; a server that never
 * had a realtime client does not pay for it. */
int realtime_listening(void)
{
    if (outbox_mode)
        return 1; /* every change goes to the outbox, for every instance */
    if (cfg.resume_window_ms > 0 && __atomic_load_n(&ever_connected, __ATOMIC_ACQUIRE))
        return 1;
    int n = __atomic_load_n(&nworkers, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n; i++)
        if (__atomic_load_n(&workers[i].has_clients, __ATOMIC_ACQUIRE))
            return 1;
    return 0;
}

static void fanout_deliver(mailbox_msg_t *m)
{
    fanout_msg_t *f = (fanout_msg_t *)m;
    f->deliver(f->w, f->ev, f->n);
    for (size_t i = 0; i < f->n; i++)
        rt_event_unref(f->ev[i]);
    free(f);
}

/* Appends to the log (taking a reference each), dropping what is too old. Called
 * with the lock held, in the same hold that numbered the events, so that the ring
 * holds consecutive ids. */
static void log_append_locked(rt_event_t **evs, size_t n, int64_t now_ms)
{
    if (logq.ring == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        if (logq.count == logq.cap) {
            rt_event_t *old = logq.ring[logq.head];
            logq.evicted_upto = old->id;
            rt_event_unref(old);
            logq.head = (logq.head + 1) % logq.cap;
            logq.count--;
        }
        __atomic_add_fetch(&evs[i]->refs, 1, __ATOMIC_RELAXED);
        logq.ring[(logq.head + logq.count) % logq.cap] = evs[i];
        logq.count++;
    }
    while (logq.count > 0) {
        rt_event_t *old = logq.ring[logq.head];
        if (old->time_ms >= now_ms - cfg.resume_window_ms)
            break;
        logq.evicted_upto = old->id;
        rt_event_unref(old);
        logq.head = (logq.head + 1) % logq.cap;
        logq.count--;
    }
}

/* Drops every logged event: what follows is not consecutive with them. Lock held. */
static void log_clear_locked(void)
{
    for (size_t i = 0; i < logq.count; i++)
        rt_event_unref(logq.ring[(logq.head + i) % logq.cap]);
    logq.head = logq.count = 0;
}

static int action_of(const char *s)
{
    return strcmp(s, "create") == 0 ? RT_CREATE : strcmp(s, "update") == 0 ? RT_UPDATE : RT_DELETE;
}

/* Numbers the changes, logs them and posts them to the workers with clients. */
static void publish(json_t *changes, int local, int history)
{
    size_t n = json_array_size(changes);
    if (n == 0) {
        json_decref(changes);
        return;
    }
    rt_event_t **evs = calloc(n, sizeof(*evs));
    if (evs == NULL) {
        json_decref(changes);
        return;
    }
    int64_t now_ms = util_now_ms();
    uint64_t now_ns = util_mono_ns();
    size_t k = 0, logged = 0;
    pthread_mutex_lock(&logq.lock); /* ids in order, also with several publishers */
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(changes, i);
        json_t *rec = json_object_get(c, "record");
        /* The outbox's history comes as text with its record's id (store/outbox.c). */
        json_t *text = rec == NULL ? json_object_get(c, "recordText") : NULL;
        const char *cid = json_string_value(json_object_get(c, "collectionId"));
        const char *rid =
            json_string_value(rec != NULL ? json_object_get(rec, "id") : json_object_get(c, "recordId"));
        if (rec == NULL && !json_is_string(text))
            continue;
        const char *act = json_string_value(json_object_get(c, "action"));
        if (cid == NULL || rid == NULL || act == NULL)
            continue;
        json_t *off = json_object_get(c, "offset"), *t = json_object_get(c, "time");
        if (json_is_integer(off)) {
            /* From the outbox: the id is given, consecutive unless events were lost
             * to this instance, after which nobody resumes across the hole. */
            uint64_t id = logq.base + (uint64_t)json_integer_value(off);
            if (id < logq.next_id)
                continue; /* already published */
            if (id > logq.next_id) {
                log_append_locked(evs + logged, k - logged, now_ms);
                logged = k;
                log_clear_locked();
                logq.evicted_upto = id - 1;
                logq.next_id = id;
            }
        }
        rt_event_t *ev = calloc(1, sizeof(*ev));
        if (ev == NULL)
            break;
        ev->coll_id = strdup(cid);
        ev->rec_id = strdup(rid);
        if (ev->coll_id == NULL || ev->rec_id == NULL) {
            free(ev->coll_id);
            free(ev->rec_id);
            free(ev);
            break;
        }
        ev->time_ms = json_is_integer(off) && json_is_integer(t) ? json_integer_value(t) : now_ms;
        ev->id = logq.next_id++;
        ev->mono_ns = now_ns;
        ev->action = action_of(act);
        ev->refs = 1;
        if (rec != NULL) {
            ev->record = json_incref(rec);
        } else {
            ev->record_len = json_string_length(text);
            ev->record_text = malloc(ev->record_len + 1);
            if (ev->record_text == NULL) {
                free(ev->coll_id);
                free(ev->rec_id);
                free(ev);
                break;
            }
            memcpy(ev->record_text, json_string_value(text), ev->record_len + 1);
        }
        evs[k++] = ev;
    }
    log_append_locked(evs + logged, k - logged, now_ms);
    pthread_mutex_unlock(&logq.lock);
    json_decref(changes);
    if (history) {
        for (size_t j = 0; j < k; j++)
            rt_event_unref(evs[j]);
        free(evs);
        return;
    }
    metrics_add(&metrics_g.rt_published, k);
    if (local && bus != NULL && k > 0)
        bus->publish(bus, evs, k);
    int nw = __atomic_load_n(&nworkers, __ATOMIC_ACQUIRE);
    for (int i = 0; i < nw && k > 0; i++) {
        if (!__atomic_load_n(&workers[i].has_clients, __ATOMIC_ACQUIRE) || workers[i].deliver == NULL)
            continue;
        fanout_msg_t *f = malloc(sizeof(*f) + k * sizeof(rt_event_t *));
        if (f == NULL)
            continue;
        f->msg.deliver = fanout_deliver;
        f->w = workers[i].w;
        f->deliver = workers[i].deliver;
        f->n = k;
        for (size_t j = 0; j < k; j++) {
            __atomic_add_fetch(&evs[j]->refs, 1, __ATOMIC_RELAXED);
            f->ev[j] = evs[j];
        }
        mailbox_post(&workers[i].w->mailbox, &f->msg);
    }
    for (size_t j = 0; j < k; j++)
        rt_event_unref(evs[j]);
    free(evs);
}

void realtime_publish(json_t *changes)
{
    if (outbox_mode) {
        json_decref(changes); /* the store's outbox hands them over (realtime_outbox_sink) */
        return;
    }
    publish(changes, 1, 0);
}

void realtime_inject(json_t *changes)
{
    publish(changes, 0, 0);
}

void realtime_outbox_sink(json_t *changes, int history)
{
    publish(changes, 0, history);
}

void realtime_outbox_position(uint32_t epoch, uint64_t upto)
{
    pthread_mutex_lock(&logq.lock);
    uint64_t base = (uint64_t)epoch << STORE_OUTBOX_OFFSET_BITS;
    if (!outbox_mode || base != logq.base) {
        log_clear_locked();
        logq.base = base;
        logq.next_id = base + upto + 1;
        logq.evicted_upto = base + upto;
    } else if (base + upto >= logq.next_id) {
        log_clear_locked();
        logq.next_id = base + upto + 1;
        logq.evicted_upto = base + upto;
    }
    outbox_mode = 1;
    pthread_mutex_unlock(&logq.lock);
}

int rt_log_since(uint64_t after_id, rt_event_t ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&logq.lock);
    int rc = 0;
    if (outbox_mode && after_id >= logq.next_id && after_id - logq.next_id < logq.cap &&
        after_id >> STORE_OUTBOX_OFFSET_BITS == logq.base >> STORE_OUTBOX_OFFSET_BITS) {
        /* Another instance gave this id and this one has not read that far yet: the
         * events up to it will come, and the client has them already. */
        rc = 1;
    } else if (after_id < logq.base || after_id < logq.evicted_upto || after_id >= logq.next_id ||
               after_id >> STORE_OUTBOX_OFFSET_BITS != logq.base >> STORE_OUTBOX_OFFSET_BITS) {
        rc = -1;
    } else {
        size_t first = logq.count;
        /* Ids in the ring are consecutive: the position follows from the id. */
        if (logq.count > 0) {
            uint64_t oldest = logq.ring[logq.head]->id;
            first = after_id + 1 <= oldest ? 0 : (size_t)(after_id + 1 - oldest);
            if (first > logq.count)
                first = logq.count;
        }
        size_t cnt = logq.count - first;
        if (cnt > 0) {
            *out = malloc(cnt * sizeof(**out));
            if (*out == NULL) {
                rc = -1;
            } else {
                for (size_t i = 0; i < cnt; i++) {
                    rt_event_t *ev = logq.ring[(logq.head + first + i) % logq.cap];
                    __atomic_add_fetch(&ev->refs, 1, __ATOMIC_RELAXED);
                    (*out)[i] = ev;
                }
                *n = cnt;
            }
        }
    }
    pthread_mutex_unlock(&logq.lock);
    return rc;
}

uint64_t rt_log_last_id(void)
{
    pthread_mutex_lock(&logq.lock);
    uint64_t id = logq.next_id - 1;
    pthread_mutex_unlock(&logq.lock);
    return id;
}

size_t rt_log_count(void)
{
    pthread_mutex_lock(&logq.lock);
    size_t n = logq.count;
    pthread_mutex_unlock(&logq.lock);
    return n;
}
