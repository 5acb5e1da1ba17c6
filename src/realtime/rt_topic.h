/*
 * rt_topic — a realtime subscription topic as a client writes it, parsed without
 * the schema: "collection/STAR" or "collection/recordId", with an optional
 * "?options=" + URL-encoded JSON {"query": {...}, "headers": {...}}, or a custom
 * topic (no '/' and no '?', see `custom`). Pure (no
 * I/O, no globals) so that it can be fuzzed (tests/fuzz/fuzz_rtsub.c); client.c
 * checks the result against the schema and the client's rights.
 *
 * Control characters (U+0000-U+001F, U+007F) are refused in the topic and in every
 * option key and value: the topic is written as the SSE `event:` line, so a CR or LF
 * in it would forge events, and a NUL would cut a value short where C strings are
 * used. The one exception is tab, LF and CR inside `query.filter`, which the filter
 * language reads as white space and which are never written out raw.
 */
#ifndef BASALT_REALTIME_RT_TOPIC_H
#define BASALT_REALTIME_RT_TOPIC_H

#include <jansson.h>
#include <stddef.h>

#include "base/arena.h"
#include "base/error.h"

typedef struct {
    const char *coll; /* the collection's name or id: coll_len bytes, not terminated */
    size_t coll_len;
    const char *record_id; /* in the arena; NULL: every record ("coll/STAR") */
    /* The options (each NULL when the topic has none), owned by the caller: query
     * values are strings (other JSON values as their JSON text), header names are
     * lower case with '-' as '_', as @request.headers.* names them. */
    json_t *query, *headers;
    /* 1: a topic without '/' or '?' ("PB_CONNECT", an app's own name): PocketBase
     * takes any string as a subscription, and its SDK subscribes to "PB_CONNECT" to
     * hear of reconnections. coll is then the whole topic; no record event reaches
     * it. */
    int custom;
} rt_topic_t;

/* Parses topic[0..tlen) (at most max_len bytes) into *out. Returns 0, or -1 with err
 * set (BS_ERR_BAD_REQUEST, a message naming the problem) and nothing to free. */
int rt_topic_parse(arena_t *a, const char *topic, size_t tlen, size_t max_len, rt_topic_t *out,
                   bs_error_t *err);

/* Releases what rt_topic_parse left in *t (the options). */
void rt_topic_clear(rt_topic_t *t);

/* The offset of the first control character in p[0..n) (tab, LF and CR allowed when
 * allow_space), or -1 if there is none. */
long rt_find_control(const char *p, size_t n, int allow_space);

#endif
