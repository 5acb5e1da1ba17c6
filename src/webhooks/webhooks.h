/*
 * webhooks — HTTP POSTs of record changes to URLs a superuser configured (settings
 * "webhooks": [{"id","collection","events":["create","update","delete"],"url",
 * "secret":"whsec_...","enabled"}]), signed the Standard Webhooks way, sent through
 * the job queue with retries, each attempt written to `_webhook_deliveries`.
 *
 * A delivery job carries the event's body (fixed when the change committed) and
 * the webhook's id; its URL and secret are read from the settings at delivery, so a
 * secret never sits in the queue. Server-side request forgery: the target's host is
 * resolved at delivery and every address that is loopback, private, link-local,
 * multicast, unspecified or one of this host's own is refused unless it is listed in
 * --webhook-allow-hosts; the connection is pinned to the address that was checked
 * (CURLOPT_RESOLVE, and the socket callback refuses any other), so a DNS answer that
 * changes in between cannot slip through. Redirects are not followed; no proxy.
 *
 * Threads: webhooks_init at start-up; webhooks_note on the writer inside a record
 * write; the handler on runner threads.
 */
#ifndef BASALT_WEBHOOKS_WEBHOOKS_H
#define BASALT_WEBHOOKS_WEBHOOKS_H

#include <jansson.h>
#include <stddef.h>

#include "base/error.h"
#include "store/store.h"

/* allow_hosts: comma-separated IP addresses that may be reached although refused
 * otherwise (borrowed: must outlive the process's jobs). Registers the handler and
 * the cleanup cron. Returns 0 or -1. */
int webhooks_init(const char *allow_hosts, int timeout_ms);

/* Queues a delivery for every enabled webhook of collection coll_name and action
 * ("create", "update", "delete") with rec (the record's stored fields; password and
 * tokenKey are left out of the body). Writer thread, inside the write. Returns 0 or
 * -1 with err. */
int webhooks_note(store_conn_t *conn, const json_t *settings, const char *coll_name, const char *action,
                  const json_t *rec, bs_error_t *err);
/* Whether some enabled webhook of settings wants (coll_name, action). */
int webhooks_wanted(const json_t *settings, const char *coll_name, const char *action);

/* Whether address text ip (numeric IPv4 or IPv6) may be reached: 1 yes, 0 no. */
int webhooks_address_allowed(const char *ip, const char *allow_hosts);

/* Appends the Standard Webhooks signature "v1,<base64 HMAC-SHA256 of
 * id.timestamp.body>" for secret "whsec_<base64 key>" to out. Returns 0, or -1 when
 * the secret is not of that form. */
int webhooks_sign(const char *secret, const char *msg_id, long long timestamp, const char *body, size_t len,
                  char *out, size_t cap);

#endif
