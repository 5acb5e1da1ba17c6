/* Shared wire frames and the output queues that hold them (see rt_frame.h). */
#include "realtime/rt_frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/util.h"
#include "realtime/wsframe.h"

/* A frame of hl header bytes followed by n payload bytes, in one allocation. */
static rt_frame_t *frame_of(const void *h, size_t hl, const void *p, size_t n)
{
    if (n > UINT32_MAX - 16)
        return NULL;
    rt_frame_t *f = malloc(sizeof(*f) + hl + n);
    if (f == NULL)
        return NULL;
    f->refs = 1;
    f->len = (uint32_t)(hl + n);
    if (hl > 0)
        memcpy(f->data, h, hl);
    if (n > 0)
        memcpy(f->data + hl, p, n);
    return f;
}

rt_frame_t *rt_frame_new(const void *p, size_t n)
{
    return frame_of(NULL, 0, p, n);
}

rt_frame_t *rt_frame_ws(int op, const void *p, size_t n)
{
    uint8_t h[10];
    size_t hl = ws_write_header(h, op, n);
    return frame_of(h, hl, p, n);
}

/* The frame of a message built in b (heap), which is freed. */
static rt_frame_t *frame_from_buf(buf_t *b, int ws)
{
    rt_frame_t *f = b->oom ? NULL
                    : ws   ? rt_frame_ws(WS_OP_TEXT, b->data, b->len)
                           : rt_frame_new(b->data, b->len);
    buf_free(b);
    return f;
}

rt_frame_t *rt_frame_message(int ws, const char *sse_event, const char *sse_id, const char *json, size_t n)
{
    if (ws)
        return rt_frame_ws(WS_OP_TEXT, json, n);
    buf_t b;
    buf_init(&b, NULL);
    if (sse_id != NULL)
        buf_printf(&b, "id:%s\n", sse_id);
    buf_printf(&b, "event:%s\ndata:", sse_event ? sse_event : "message");
    buf_append(&b, json, n);
    buf_puts(&b, "\n\n");
    return frame_from_buf(&b, 0);
}

rt_frame_t *rt_frame_event(int ws, const char *topic, uint64_t id, const char *payload, size_t n)
{
    char idbuf[24];
    snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long)id);
    buf_t b;
    buf_init(&b, NULL);
    if (!ws) {
        buf_printf(&b, "id:%s\nevent:%s\ndata:", idbuf, topic);
        buf_append(&b, payload, n);
        buf_puts(&b, "\n\n");
        return frame_from_buf(&b, 0);
    }
    buf_printf(&b, "{\"type\":\"event\",\"id\":\"%s\",\"topic\":", idbuf);
    util_json_quote(&b, topic, strlen(topic));
    buf_puts(&b, ",\"data\":");
    buf_append(&b, payload, n);
    buf_putc(&b, '}');
    return frame_from_buf(&b, 1);
}

void rt_frame_unref(rt_frame_t *f)
{
    if (f != NULL && --f->refs == 0)
        free(f);
}

int rt_outq_push(rt_outq_t *q, rt_frame_t *f)
{
    if (q->n == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 4;
        rt_frame_t **v = cap > q->cap ? realloc(q->v, cap * sizeof(*v)) : NULL;
        if (v == NULL) {
            rt_frame_unref(f);
            return -1;
        }
        q->v = v;
        q->cap = cap;
    }
    q->v[q->n++] = f;
    q->bytes += f->len;
    return 0;
}

void rt_outq_drop_front(rt_outq_t *q, uint32_t k)
{
    if (k > q->n)
        k = q->n;
    for (uint32_t i = 0; i < k; i++) {
        q->bytes -= q->v[i]->len;
        rt_frame_unref(q->v[i]);
    }
    q->n -= k;
    if (q->n > 0) {
        memmove(q->v, q->v + k, q->n * sizeof(*q->v));
        return;
    }
    /* Drained: the array goes too, so an idle connection holds no output memory (a
     * malloc per write of a busy one costs far less than the write). */
    q->bytes = 0;
    free(q->v);
    q->v = NULL;
    q->cap = 0;
}

void rt_outq_free(rt_outq_t *q)
{
    rt_outq_drop_front(q, q->n);
    free(q->v);
    q->v = NULL;
    q->cap = 0;
}

void rt_frame_cache_init(rt_frame_cache_t *fc)
{
    memset(fc, 0, sizeof(*fc));
}

rt_frame_t *rt_frame_cache_event(rt_frame_cache_t *fc, int ws, const char *topic, uint64_t id,
                                 const char *payload, size_t n)
{
    for (int i = 0; i < fc->n; i++)
        if (fc->e[i].payload == payload && fc->e[i].id == id && fc->e[i].ws == ws &&
            strcmp(fc->e[i].topic, topic) == 0)
            return fc->e[i].f;
    rt_frame_t *f = rt_frame_event(ws, topic, id, payload, n);
    char *t = f != NULL ? strdup(topic) : NULL;
    if (t == NULL) {
        rt_frame_unref(f);
        return NULL;
    }
    int slot;
    if (fc->n < RT_FRAME_CACHE) {
        slot = fc->n++;
    } else {
        /* Full: the oldest entry goes (queues that took it keep their references). */
        slot = fc->next;
        fc->next = (fc->next + 1) % RT_FRAME_CACHE;
        rt_frame_unref(fc->e[slot].f);
        free(fc->e[slot].topic);
    }
    fc->e[slot].payload = payload;
    fc->e[slot].id = id;
    fc->e[slot].topic = t;
    fc->e[slot].ws = ws;
    fc->e[slot].f = f;
    return f;
}

void rt_frame_cache_clear(rt_frame_cache_t *fc)
{
    for (int i = 0; i < fc->n; i++) {
        rt_frame_unref(fc->e[i].f);
        free(fc->e[i].topic);
    }
    fc->n = 0;
    fc->next = 0;
}
