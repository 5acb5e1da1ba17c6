/*
 * The realtime output's dirty list (realtime/client.c): connections are written in
 * the order deliveries marked them, at most a slice per call, and the worker is told
 * to come back at once while some are left; a connection marked again before its
 * turn keeps its place and takes the new frame in the same write.
 *
 * The clients here have a write in flight (writing = 1), so rt_client_flush leaves
 * their queues alone and no socket is needed: what is observed is the list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "realtime/rt_conn.h"
#include "realtime/rt_frame.h"

#define NCLIENTS 600

static void queue_one(rt_client_t *c)
{
    rt_frame_t *f = rt_frame_new("{}", 2);
    assert_non_null(f);
    assert_int_equal(rt_client_queue(c, f, 1), 0);
}

static int count_dirty(rt_client_t **cs, int from, int to)
{
    int n = 0;
    for (int i = from; i < to; i++)
        n += cs[i]->dirty;
    return n;
}

static void test_slices_oldest_first(void **state)
{
    (void)state;
    worker_t w;
    memset(&w, 0, sizeof(w));
    w.idx = -1; /* not one of the hub's workers */
    rt_worker_t rw;
    memset(&rw, 0, sizeof(rw));
    rw.w = &w;
    w.rt = &rw;
    rt_client_t *cs[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++) {
        cs[i] = rt_client_new(&rw, T_WS);
        assert_non_null(cs[i]);
        cs[i]->writing = 1;
    }
    for (int i = 0; i < NCLIENTS; i++)
        queue_one(cs[i]);
    assert_int_equal(count_dirty(cs, 0, NCLIENTS), NCLIENTS);

    /* The first slice is the first marked, and the loop is asked back. */
    rt_flush_dirty(&rw);
    int slice = NCLIENTS - count_dirty(cs, 0, NCLIENTS);
    assert_true(slice > 0 && slice < NCLIENTS / 2);
    assert_int_equal(count_dirty(cs, 0, slice), 0);
    assert_int_equal(count_dirty(cs, slice, NCLIENTS), NCLIENTS - slice);
    assert_int_equal(w.more, 1);

    /* A written client marked again goes to the end; one still waiting keeps its
     * place and holds both frames for one write. */
    queue_one(cs[0]);
    queue_one(cs[slice + 1]);
    assert_int_equal(cs[slice + 1]->out.n, 2);
    w.more = 0;
    rt_flush_dirty(&rw);
    assert_int_equal(count_dirty(cs, slice, 2 * slice), 0);
    assert_int_equal(cs[0]->dirty, 1);
    assert_int_equal(w.more, 1);

    /* The rest, the re-marked client last, and nothing left: no call back. */
    w.more = 0;
    rt_flush_dirty(&rw);
    assert_int_equal(count_dirty(cs, 0, NCLIENTS), 0);
    assert_int_equal(w.more, 0);
    assert_null(rw.dirty);
    assert_null(rw.dirty_tail);

    /* Freeing a marked client unlinks it from either end of the list. */
    queue_one(cs[5]);
    queue_one(cs[6]);
    queue_one(cs[7]);
    rt_client_free(cs[7]);
    rt_client_free(cs[5]);
    cs[5] = cs[7] = NULL;
    assert_ptr_equal(rw.dirty, cs[6]);
    assert_ptr_equal(rw.dirty_tail, cs[6]);
    for (int i = 0; i < NCLIENTS; i++)
        if (cs[i] != NULL)
            rt_client_free(cs[i]);
    assert_null(rw.dirty);
    assert_null(rw.dirty_tail);
    assert_null(rw.clients);
}

int main(void)
{
    realtime_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.queue_bytes = 1 << 20;
    cfg.resume_max_events = 16;
    if (realtime_init(&cfg) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slices_oldest_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
