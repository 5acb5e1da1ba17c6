/* rt_frame: shared realtime wire frames, the per-event frame cache and the output
 * queue of frame references. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "realtime/rt_frame.h"
#include "realtime/wsframe.h"

static void assert_frame(const rt_frame_t *f, const char *want)
{
    assert_non_null(f);
    assert_int_equal(f->len, strlen(want));
    assert_memory_equal(f->data, want, f->len);
}

/* The payload of a server (unmasked) WebSocket frame, checked against its header. */
static void assert_ws_text(const rt_frame_t *f, const char *want)
{
    assert_non_null(f);
    assert_true(f->len >= 2);
    assert_int_equal((uint8_t)f->data[0], 0x80 | WS_OP_TEXT);
    size_t n = (uint8_t)f->data[1] & 0x7F, h = 2;
    if (n == 126) {
        n = (size_t)((uint8_t)f->data[2] << 8 | (uint8_t)f->data[3]);
        h = 4;
    } else if (n == 127) {
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | (uint8_t)f->data[2 + i];
        h = 10;
    }
    assert_int_equal(h + n, f->len);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(f->data + h, want, n);
}

static void test_sse_frames(void **state)
{
    (void)state;
    rt_frame_t *f = rt_frame_event(0, "posts/*", 42, "{\"a\":1}", 7);
    assert_frame(f, "id:42\nevent:posts/*\ndata:{\"a\":1}\n\n");
    assert_int_equal(f->refs, 1);
    rt_frame_unref(f);
    f = rt_frame_message(0, "PB_CONNECT", "abc", "{\"clientId\":\"abc\"}", 18);
    assert_frame(f, "id:abc\nevent:PB_CONNECT\ndata:{\"clientId\":\"abc\"}\n\n");
    rt_frame_unref(f);
    f = rt_frame_message(0, "PB_RESYNC", NULL, "{}", 2);
    assert_frame(f, "event:PB_RESYNC\ndata:{}\n\n");
    rt_frame_unref(f);
}

static void test_ws_frames(void **state)
{
    (void)state;
    rt_frame_t *f = rt_frame_event(1, "posts/*", 7, "{\"a\":1}", 7);
    assert_ws_text(f, "{\"type\":\"event\",\"id\":\"7\",\"topic\":\"posts/*\",\"data\":{\"a\":1}}");
    rt_frame_unref(f);
    /* A topic with characters JSON escapes: the header counts the escaped length. */
    f = rt_frame_event(1, "a\"b\\c", 1, "{}", 2);
    assert_ws_text(f, "{\"type\":\"event\",\"id\":\"1\",\"topic\":\"a\\\"b\\\\c\",\"data\":{}}");
    rt_frame_unref(f);
    /* Lengths around the 7-bit and 16-bit header forms. */
    static char big[70000];
    static const size_t lens[] = {2, 125, 126, 127, 65535, 65536, 69999};
    for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
        size_t len = lens[k];
        memset(big, 'x', len);
        big[0] = '"';
        big[len - 1] = '"';
        big[len] = '\0';
        f = rt_frame_message(1, NULL, NULL, big, len);
        assert_ws_text(f, big);
        rt_frame_unref(f);
    }
    f = rt_frame_ws(WS_OP_CLOSE, "\x03\xe8", 2);
    assert_int_equal(f->len, 4);
    assert_int_equal((uint8_t)f->data[0], 0x80 | WS_OP_CLOSE);
    assert_int_equal((uint8_t)f->data[1], 2);
    rt_frame_unref(f);
}

static void test_cache_shares(void **state)
{
    (void)state;
    rt_frame_cache_t fc;
    rt_frame_cache_init(&fc);
    static const char plain[] = "{\"p\":1}", super[] = "{\"s\":1}";
    rt_frame_t *a = rt_frame_cache_event(&fc, 0, "posts/*", 5, plain, 7);
    rt_frame_t *b = rt_frame_cache_event(&fc, 0, "posts/*", 5, plain, 7);
    assert_ptr_equal(a, b);       /* same payload, topic, transport: one frame */
    assert_int_equal(a->refs, 1); /* held by the cache only */
    assert_ptr_not_equal(a, rt_frame_cache_event(&fc, 1, "posts/*", 5, plain, 7));  /* transport */
    assert_ptr_not_equal(a, rt_frame_cache_event(&fc, 0, "posts/r1", 5, plain, 7)); /* topic */
    assert_ptr_not_equal(a, rt_frame_cache_event(&fc, 0, "posts/*", 5, super, 7));  /* class */
    assert_ptr_not_equal(a, rt_frame_cache_event(&fc, 0, "posts/*", 6, plain, 7));  /* event */
    assert_int_equal(fc.n, 5);
    /* A queue's reference outlives the cache. */
    rt_outq_t q = {0};
    assert_int_equal(rt_outq_push(&q, rt_frame_ref(a)), 0);
    assert_int_equal(a->refs, 2);
    /* Past RT_FRAME_CACHE entries the oldest is replaced: still correct bytes. */
    char topic[32];
    for (int i = 0; i < 3 * RT_FRAME_CACHE; i++) {
        snprintf(topic, sizeof(topic), "t%d/*", i);
        rt_frame_t *f = rt_frame_cache_event(&fc, 0, topic, 9, plain, 7);
        char want[96];
        snprintf(want, sizeof(want), "id:9\nevent:%s\ndata:%s\n\n", topic, plain);
        assert_frame(f, want);
    }
    assert_int_equal(fc.n, RT_FRAME_CACHE);
    rt_frame_cache_clear(&fc);
    assert_int_equal(fc.n, 0);
    assert_int_equal(a->refs, 1); /* the queue's */
    assert_frame(a, "id:5\nevent:posts/*\ndata:{\"p\":1}\n\n");
    rt_outq_free(&q);
}

static void test_outq(void **state)
{
    (void)state;
    rt_outq_t q = {0};
    rt_frame_t *shared = rt_frame_new("0123456789", 10);
    for (int i = 0; i < 100; i++)
        assert_int_equal(rt_outq_push(&q, rt_frame_ref(shared)), 0);
    assert_int_equal(shared->refs, 101);
    assert_int_equal(q.n, 100);
    assert_int_equal(q.bytes, 1000);
    rt_frame_t *own = rt_frame_new("abc", 3);
    assert_int_equal(rt_outq_push(&q, own), 0);
    assert_int_equal(q.bytes, 1003);
    /* The first 64 written: they leave, the order of the rest is kept. */
    rt_outq_drop_front(&q, 64);
    assert_int_equal(q.n, 37);
    assert_int_equal(q.bytes, 363);
    assert_int_equal(shared->refs, 37);
    assert_ptr_equal(q.v[36], own);
    rt_outq_drop_front(&q, 1000); /* more than held: all */
    assert_int_equal(q.n, 0);
    assert_int_equal(q.bytes, 0);
    assert_int_equal(shared->refs, 1);
    /* A drained queue gives its array back: an idle connection holds none. */
    assert_null(q.v);
    assert_int_equal(q.cap, 0);
    assert_int_equal(rt_outq_push(&q, rt_frame_ref(shared)), 0);
    assert_int_equal(rt_outq_push(&q, rt_frame_ref(shared)), 0);
    rt_outq_drop_front(&q, 1);
    assert_non_null(q.v); /* not drained yet */
    assert_int_equal(q.n, 1);
    rt_outq_free(&q);
    assert_null(q.v);
    rt_frame_unref(shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_frames),
        cmocka_unit_test(test_ws_frames),
        cmocka_unit_test(test_cache_shares),
        cmocka_unit_test(test_outq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
