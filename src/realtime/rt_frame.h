/*
 * rt_frame — realtime messages as they go on the wire, built once and shared.
 *
 * A frame is the exact bytes of one message (an SSE event with its id:/event:/data:
 * lines, or a WebSocket frame with its header), immutable once built and counted by
 * reference. A connection's output queue (rt_outq_t) holds references to frames, not
 * copies: an event that 5,000 subscribers see the same way is formatted once, stored
 * once, and each subscriber's queue gains a pointer. The write of a queue is one
 * writev of its frames (client.c), so nothing is copied between the event and the
 * kernel.
 *
 * Frames belong to the worker thread that built them (the counts are not atomic):
 * they never cross threads, unlike the rt_event_t they are made from. No I/O here,
 * so that the module is unit-tested on its own (tests/unit/test_rt_frame.c).
 */
#ifndef BASALT_REALTIME_RT_FRAME_H
#define BASALT_REALTIME_RT_FRAME_H

#include <stddef.h>
#include <stdint.h>

typedef struct rt_frame {
    uint32_t refs;
    uint32_t len;
    char data[]; /* len bytes */
} rt_frame_t;

/* Every constructor returns a frame with one reference (the caller's), or NULL when
 * memory ran out or the message would be over 4 GiB. */

/* A copy of p[0..n). */
rt_frame_t *rt_frame_new(const void *p, size_t n);
/* A final, unmasked WebSocket frame of opcode op around p[0..n). */
rt_frame_t *rt_frame_ws(int op, const void *p, size_t n);
/* One JSON message: for SSE "id:<sse_id>\n" (when not NULL) "event:<sse_event>\ndata:<json>\n\n",
 * for WebSocket a text frame of json. */
rt_frame_t *rt_frame_message(int ws, const char *sse_event, const char *sse_id, const char *json, size_t n);
/* A record event for a subscription of `topic`: SSE "id:<id>\nevent:<topic>\ndata:<payload>\n\n";
 * WebSocket a text frame {"type":"event","id":"<id>","topic":<topic quoted>,"data":<payload>}. */
rt_frame_t *rt_frame_event(int ws, const char *topic, uint64_t id, const char *payload, size_t n);

static inline rt_frame_t *rt_frame_ref(rt_frame_t *f)
{
    f->refs++;
    return f;
}
void rt_frame_unref(rt_frame_t *f);

/* A connection's output: frames in the order they are sent, and their total size
 * (what --realtime-queue-kib bounds). The first frames may be in a write (client.c
 * counts them); they leave the queue when the write completes. A queue that drains
 * gives its array back, so an idle connection holds no output memory. */
typedef struct {
    rt_frame_t **v;
    uint32_t n, cap;
    size_t bytes;
} rt_outq_t;

/* Appends f, taking the caller's reference. Returns 0, or -1 when memory ran out (the
 * reference is released then and the queue is unchanged). */
int rt_outq_push(rt_outq_t *q, rt_frame_t *f);
/* Releases the first k frames (they were written). */
void rt_outq_drop_front(rt_outq_t *q, uint32_t k);
/* Releases everything, the array too. */
void rt_outq_free(rt_outq_t *q);

/* The frames already built for one event on one worker, by what they depend on: the
 * payload (its address: the worker's visibility classes share one buffer each), the
 * subscription's topic and the transport. Holds a reference to each frame it keeps;
 * a miss beyond RT_FRAME_CACHE entries replaces the oldest. */
#define RT_FRAME_CACHE 8
typedef struct {
    struct {
        const void *payload;
        uint64_t id;
        char *topic; /* a copy: subscriptions may end while the cache lives */
        int ws;
        rt_frame_t *f;
    } e[RT_FRAME_CACHE];
    int n, next;
} rt_frame_cache_t;

void rt_frame_cache_init(rt_frame_cache_t *fc);
/* The event frame for (payload, id, topic, ws): borrowed from the cache, or built and
 * kept. NULL when memory ran out. */
rt_frame_t *rt_frame_cache_event(rt_frame_cache_t *fc, int ws, const char *topic, uint64_t id,
                                 const char *payload, size_t n);
void rt_frame_cache_clear(rt_frame_cache_t *fc);

#endif
