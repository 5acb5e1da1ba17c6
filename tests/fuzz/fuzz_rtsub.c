/*
 * Realtime subscription bodies: a JSON body {"clientId", "subscriptions": [...]} as
 * POST /api/realtime gets it (or, when the input is not such a body, the input as
 * one topic) through rt_topic_parse. Properties:
 *   1. no crash, leak or read past the input (ASan, LeakSanitizer);
 *   2. an accepted topic has no control character (it becomes the SSE "event:"
 *      line), a non-empty collection without '/' or '?' (the whole topic when it is
 *      a custom one), a valid record id or none,
 *      and options whose keys and string values hold no control character (tab, LF
 *      and CR only in query.filter), header names in @request.headers form;
 *   3. a refused one has a 400 (or out-of-memory) error whose message holds no
 *      control character either, since it is sent back and may be logged;
 *   4. parsing is deterministic: the same topic gives the same result again.
 */
#include <assert.h>
#include <jansson.h>
#include <string.h>

#include "base/util.h"
#include "realtime/rt_topic.h"

static void check_object(const json_t *o, int headers)
{
    const char *k;
    json_t *v;
    assert(json_is_object(o));
    json_object_foreach((json_t *)o, k, v)
    {
        assert(rt_find_control(k, strlen(k), 0) < 0);
        assert(json_is_string(v));
        assert(rt_find_control(json_string_value(v), json_string_length(v),
                               !headers && strcmp(k, "filter") == 0) < 0);
        if (headers)
            for (const char *p = k; *p; p++)
                assert(*p != '-' && !(*p >= 'A' && *p <= 'Z'));
    }
}

static void one_topic(const char *t, size_t n)
{
    arena_t a;
    arena_init(&a, 1024);
    bs_error_t err;
    bs_error_init(&err);
    rt_topic_t out;
    int rc = rt_topic_parse(&a, t, n, 2048, &out, &err);
    if (rc == 0) {
        assert(rt_find_control(t, n, 0) < 0);
        if (out.custom)
            assert(out.coll == t && out.coll_len == n && out.record_id == NULL && out.query == NULL);
        else
            assert(out.coll == t && out.coll_len > 0 && out.coll_len < n);
        assert(memchr(out.coll, '/', out.coll_len) == NULL && memchr(out.coll, '?', out.coll_len) == NULL);
        assert(out.record_id == NULL || util_valid_id(out.record_id, strlen(out.record_id)));
        assert((out.query == NULL) == (out.headers == NULL));
        if (out.query != NULL) {
            check_object(out.query, 0);
            check_object(out.headers, 1);
        }
        /* Deterministic. */
        bs_error_t err2;
        bs_error_init(&err2);
        rt_topic_t again;
        assert(rt_topic_parse(&a, t, n, 2048, &again, &err2) == 0);
        assert(again.coll_len == out.coll_len && (again.record_id == NULL) == (out.record_id == NULL));
        assert(out.record_id == NULL || strcmp(again.record_id, out.record_id) == 0);
        assert(json_equal(again.query, out.query) || (again.query == NULL && out.query == NULL));
        assert(json_equal(again.headers, out.headers) || (again.headers == NULL && out.headers == NULL));
        rt_topic_clear(&again);
        rt_topic_clear(&out);
    } else {
        assert(rc == -1);
        assert(err.code == BS_ERR_BAD_REQUEST || err.code == BS_ERR_NOMEM);
        assert(err.message[0] != '\0' || err.code == BS_ERR_NOMEM);
        assert(rt_find_control(err.message, strlen(err.message), 0) < 0);
        assert(out.query == NULL && out.headers == NULL);
    }
    arena_free(&a);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    json_error_t jerr;
    /* JSON_ALLOW_NUL: topics may carry a NUL here, the parser must refuse it. */
    json_t *body = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &jerr);
    json_t *subs = json_object_get(body, "subscriptions");
    if (json_is_array(subs)) {
        size_t i;
        json_t *t;
        json_array_foreach(subs, i, t)
        {
            if (json_is_string(t))
                one_topic(json_string_value(t), json_string_length(t));
        }
    } else {
        one_topic((const char *)data, size);
    }
    json_decref(body);
    return 0;
}
