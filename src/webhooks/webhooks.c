/* Webhook deliveries; see webhooks.h. */
#include "webhooks/webhooks.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/log.h"
#include "base/util.h"
#include "jobs/jobs.h"
#include "settings/settings.h"

static const char *allow_list = "";
static int timeout_ms_cfg = 10000;

static int in_list(const char *ip, const char *list)
{
    size_t n = strlen(ip);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        while (l > 0 && p[l - 1] == ' ')
            l--;
        if (l == n && l > 0 && memcmp(p, ip, n) == 0)
            return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* Whether v4 (host order) is a public unicast address. */
static int public_v4(uint32_t a)
{
    return !((a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 || (a & 0xffc00000u) == 0x64400000u ||
             (a & 0xffff0000u) == 0xa9fe0000u || (a & 0xfff00000u) == 0xac100000u ||
             (a & 0xffff0000u) == 0xc0a80000u || (a & 0xffffff00u) == 0xc0000000u ||
             (a & 0xfffe0000u) == 0xc6120000u || (a >> 28) >= 14);
}

/* Whether ip is one of this host's own addresses (any interface). */
static int own_address(const char *ip)
{
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0)
        return 0;
    int hit = 0;
    for (struct ifaddrs *i = ifs; i && !hit; i = i->ifa_next) {
        char buf[INET6_ADDRSTRLEN] = "";
        if (i->ifa_addr == NULL)
            continue;
        if (i->ifa_addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf, sizeof(buf));
        else if (i->ifa_addr->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, buf, sizeof(buf));
        hit = buf[0] && strcmp(buf, ip) == 0;
    }
    freeifaddrs(ifs);
    return hit;
}

int webhooks_address_allowed(const char *ip, const char *allow)
{
    if (in_list(ip, allow))
        return 1;
    struct in_addr v4;
    struct in6_addr v6;
    int pub;
    if (inet_pton(AF_INET, ip, &v4) == 1) {
        pub = public_v4(ntohl(v4.s_addr));
    } else if (inet_pton(AF_INET6, ip, &v6) == 1) {
        const uint8_t *b = v6.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        static const uint8_t zero[12] = {0};
        if (memcmp(b, mapped, 12) == 0 || memcmp(b, zero, 12) == 0) {
            /* IPv4-mapped and -compatible (incl. :: and ::1): the IPv4 rules. */
            uint32_t a = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
            pub = memcmp(b, zero, 12) == 0 ? 0 : public_v4(a);
        } else {
            pub = !((b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || b[0] == 0xff ||
                    (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) ||
                    (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b));
        }
    } else {
        return 0;
    }
    return pub && !own_address(ip);
}

int webhooks_sign(const char *secret, const char *msg_id, long long ts, const char *body, size_t len,
                  char *out, size_t cap)
{
    if (strncmp(secret, "whsec_", 6) != 0)
        return -1;
    const char *k64 = secret + 6;
    size_t kn = strlen(k64);
    unsigned char key[128];
    if (kn == 0 || kn > 4 * (sizeof(key) / 3) || kn % 4 != 0)
        return -1;
    int klen = EVP_DecodeBlock(key, (const unsigned char *)k64, (int)kn);
    if (klen < 0)
        return -1;
    /* DecodeBlock counts the padding as zero bytes: take them off. */
    if (kn >= 1 && k64[kn - 1] == '=')
        klen--;
    if (kn >= 2 && k64[kn - 2] == '=')
        klen--;
    char head[160];
    int hn = snprintf(head, sizeof(head), "%s.%lld.", msg_id, ts);
    unsigned char mac[32];
    unsigned int ml = sizeof(mac);
    char *data = malloc((size_t)hn + len);
    int ok = data != NULL;
    if (ok) {
        memcpy(data, head, (size_t)hn);
        memcpy(data + hn, body, len);
        ok = HMAC(EVP_sha256(), key, klen, (const unsigned char *)data, (size_t)hn + len, mac, &ml) != NULL;
        free(data);
    }
    OPENSSL_cleanse(key, sizeof(key));
    if (!ok || cap < 4 + 45)
        return -1;
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac, 32);
    return 0;
}

static int wants(const json_t *w, const char *coll, const char *action)
{
    if (!json_is_true(json_object_get(w, "enabled")) ||
        strcmp(json_string_value(json_object_get(w, "collection")) ?: "", coll) != 0)
        return 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(w, "events"), i,
                       e) if (strcmp(json_string_value(e) ?: "", action) == 0) return 1;
    return 0;
}

int webhooks_wanted(const json_t *s, const char *coll, const char *action)
{
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(s, "webhooks"), i, w) if (wants(w, coll, action)) return 1;
    return 0;
}

int webhooks_note(store_conn_t *conn, const json_t *s, const char *coll, const char *action,
                  const json_t *rec, bs_error_t *err)
{
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(s, "webhooks"), i, w)
    {
        if (!wants(w, coll, action))
            continue;
        json_t *r = json_deep_copy(rec);
        json_object_del(r, "password");
        json_object_del(r, "tokenKey");
        char when[UTIL_TIME_LEN + 1];
        util_format_time(util_now_ms(), when);
        char type[64];
        snprintf(type, sizeof(type), "record.%s", action);
        json_t *body = json_pack("{s:s, s:s, s:{s:s, s:s, s:o}}", "type", type, "timestamp", when, "data",
                                 "collection", coll, "action", action, "record", r);
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        json_t *payload = text ? json_pack("{s:s, s:s, s:s, s:s, s:s}", "webhook",
                                           json_string_value(json_object_get(w, "id")) ?: "", "collection",
                                           coll, "action", action, "recordId",
                                           json_string_value(json_object_get(rec, "id")) ?: "", "body", text)
                               : NULL;
        free(text);
        if (payload == NULL) {
            bs_error_set(err, BS_ERR_NOMEM, NULL);
            return -1;
        }
        jobs_opts_t o = {.timeout_ms = timeout_ms_cfg + 5000};
        int rc = jobs_enqueue(conn, "webhook.deliver", payload, &o, err);
        json_decref(payload);
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ---- delivery ---- */

typedef struct {
    char host[256];
    int port;
    int https;
} target_t;

/* Splits url into host and port; refuses userinfo and anything odd. */
static int parse_url(const char *url, target_t *t)
{
    const char *p;
    if (strncmp(url, "https://", 8) == 0)
        t->https = 1, p = url + 8;
    else if (strncmp(url, "http://", 7) == 0)
        t->https = 0, p = url + 7;
    else
        return -1;
    size_t n = strcspn(p, "/?#");
    if (n == 0 || memchr(p, '@', n) != NULL || memchr(p, '\\', n) != NULL)
        return -1;
    const char *hs = p, *he;
    const char *colon = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', n);
        if (rb == NULL)
            return -1;
        hs = p + 1;
        he = rb;
        if (rb + 1 < p + n) {
            if (rb[1] != ':')
                return -1;
            colon = rb + 1;
        }
    } else {
        colon = memchr(p, ':', n);
        he = colon ? colon : p + n;
    }
    if (he <= hs || (size_t)(he - hs) >= sizeof(t->host))
        return -1;
    memcpy(t->host, hs, (size_t)(he - hs));
    t->host[he - hs] = '\0';
    t->port = t->https ? 443 : 80;
    if (colon) {
        int64_t v;
        if (util_parse_i64(colon + 1, (size_t)(p + n - colon - 1), &v) != 0 || v < 1 || v > 65535)
            return -1;
        t->port = (int)v;
    }
    return 0;
}

typedef struct {
    char ip[INET6_ADDRSTRLEN];
} pin_t;

static curl_socket_t open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    pin_t *pin = arg;
    char buf[INET6_ADDRSTRLEN] = "";
    (void)purpose;
    if (a->family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&a->addr)->sin_addr, buf, sizeof(buf));
    else if (a->family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a->addr)->sin6_addr, buf, sizeof(buf));
    /* Only the address that was checked: the last line against DNS rebinding. */
    if (strcmp(buf, pin->ip) != 0)
        return CURL_SOCKET_BAD;
    return socket(a->family, a->socktype, a->protocol);
}

static size_t discard(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

typedef struct {
    store_job_t job;
    const char *job_id, *webhook, *collection, *action, *record_id, *url, *error;
    int attempt;
    long status;
} log_t;

static int run_log(store_job_t *job, store_conn_t *conn)
{
    log_t *l = (log_t *)job;
    char id[UTIL_ID_LEN + 1];
    util_random_id(id);
#define T(s) bs_val_text((s), strlen(s))
    bs_value_t v[11] = {T(id),
                        T(l->job_id),
                        T(l->webhook),
                        T(l->collection),
                        T(l->action),
                        T(l->record_id),
                        T(l->url),
                        bs_val_int(l->attempt),
                        bs_val_int(l->status),
                        T(l->error),
                        bs_val_int(util_now_ms())};
#undef T
    return store_exec(
               conn,
               "INSERT INTO _webhook_deliveries (id, job_id, webhook, collection, action, record_id, url, "
               "attempt, status, error, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
               v, 11, &job->err) < 0
               ? -1
               : 0;
}

/* webhook.deliver {"webhook","collection","action","recordId","body"}. */
static int deliver(jobs_ctx_t *ctx)
{
    const json_t *p = ctx->payload;
    const char *wid = json_string_value(json_object_get(p, "webhook")) ?: "";
    const char *body = json_string_value(json_object_get(p, "body"));
    if (body == NULL) {
        snprintf(ctx->error, sizeof(ctx->error), "the delivery has no body");
        return JOBS_FAIL;
    }
    json_t *s = settings_get();
    const json_t *w = NULL;
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(s, "webhooks"), i,
                       x) if (strcmp(json_string_value(json_object_get(x, "id")) ?: "", wid) == 0) w = x;
    const char *url = w ? json_string_value(json_object_get(w, "url")) : NULL;
    const char *secret = w ? json_string_value(json_object_get(w, "secret")) : NULL;
    long status = 0;
    int rc = JOBS_RETRY;
    target_t t;
    pin_t pin = {""};
    if (w == NULL || url == NULL || secret == NULL) {
        snprintf(ctx->error, sizeof(ctx->error), "webhook %s is no longer configured", wid);
        rc = JOBS_FAIL;
        goto out;
    }
    if (parse_url(url, &t) != 0) {
        snprintf(ctx->error, sizeof(ctx->error), "the webhook's URL cannot be used");
        rc = JOBS_FAIL;
        goto out;
    }
    /* Resolve now, check every address, keep the first allowed one. */
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(t.host, NULL, &hints, &res);
    if (gai != 0) {
        snprintf(ctx->error, sizeof(ctx->error), "cannot resolve %s: %s", t.host, gai_strerror(gai));
        goto out;
    }
    char refused[INET6_ADDRSTRLEN] = "";
    for (struct addrinfo *a = res; a && !pin.ip[0]; a = a->ai_next) {
        char buf[INET6_ADDRSTRLEN] = "";
        if (a->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, buf, sizeof(buf));
        else if (a->ai_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)a->ai_addr)->sin6_addr, buf, sizeof(buf));
        if (!buf[0])
            continue;
        if (webhooks_address_allowed(buf, allow_list))
            memcpy(pin.ip, buf, sizeof(buf));
        else
            memcpy(refused, buf, sizeof(buf));
    }
    freeaddrinfo(res);
    if (!pin.ip[0]) {
        snprintf(ctx->error, sizeof(ctx->error),
                 "refused: %s resolves to %s, a loopback, private, link-local or own address (allow it with "
                 "--webhook-allow-hosts)",
                 t.host, refused[0] ? refused : "no usable address");
        LOGF(LOG_WARN, "webhooks", "webhook %s: %s", wid, ctx->error);
        rc = JOBS_FAIL;
        goto out;
    }
    char msg_id[64], sig[128], h_id[96], h_ts[64], h_sig[160], resolve[400];
    long long ts = util_now_ms() / 1000;
    snprintf(msg_id, sizeof(msg_id), "msg_%s", ctx->id);
    if (webhooks_sign(secret, msg_id, ts, body, strlen(body), sig, sizeof(sig)) != 0) {
        snprintf(ctx->error, sizeof(ctx->error), "the webhook's secret is not whsec_<base64>");
        rc = JOBS_FAIL;
        goto out;
    }
    snprintf(h_id, sizeof(h_id), "webhook-id: %s", msg_id);
    snprintf(h_ts, sizeof(h_ts), "webhook-timestamp: %lld", ts);
    snprintf(h_sig, sizeof(h_sig), "webhook-signature: %s", sig);
    snprintf(resolve, sizeof(resolve), strchr(pin.ip, ':') ? "%s:%d:[%s]" : "%s:%d:%s", t.host, t.port,
             pin.ip);
    struct curl_slist *hdr = curl_slist_append(NULL, "content-type: application/json");
    hdr = curl_slist_append(hdr, h_id);
    hdr = curl_slist_append(hdr, h_ts);
    hdr = curl_slist_append(hdr, h_sig);
    hdr = curl_slist_append(hdr, "user-agent: Basalt-Webhooks/1");
    struct curl_slist *rs = curl_slist_append(NULL, resolve);
    CURL *c = curl_easy_init();
    char errbuf[CURL_ERROR_SIZE] = "";
    int64_t left = ctx->deadline_ms - util_now_ms() - 1000;
    long tmo = (long)(left < timeout_ms_cfg ? (left > 100 ? left : 100) : timeout_ms_cfg);
    if (c == NULL) {
        snprintf(ctx->error, sizeof(ctx->error), "cannot start libcurl");
    } else {
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(c, CURLOPT_RESOLVE, rs);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &pin);
        curl_easy_setopt(c, CURLOPT_PROXY, "");
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, tmo);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, tmo);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
        CURLcode cr = curl_easy_perform(c);
        if (cr == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (cr != CURLE_OK)
            snprintf(ctx->error, sizeof(ctx->error), "%s", errbuf[0] ? errbuf : curl_easy_strerror(cr));
        else if (status < 200 || status > 299)
            snprintf(ctx->error, sizeof(ctx->error), "the receiver answered %ld", status);
        else
            rc = JOBS_OK;
        curl_easy_cleanup(c);
    }
    curl_slist_free_all(hdr);
    curl_slist_free_all(rs);
out:;
    arena_t a;
    arena_init(&a, 256);
    log_t l = {.job = {.run = run_log, .arena = &a},
               .job_id = ctx->id,
               .webhook = wid,
               .collection = json_string_value(json_object_get(p, "collection")) ?: "",
               .action = json_string_value(json_object_get(p, "action")) ?: "",
               .record_id = json_string_value(json_object_get(p, "recordId")) ?: "",
               .url = url ? url : "",
               .error = rc == JOBS_OK ? "" : ctx->error,
               .attempt = ctx->attempt,
               .status = status};
    bs_error_init(&l.job.err);
    if (jobs_store_run(ctx->store, &l.job) != 0)
        LOGF(LOG_WARN, "webhooks", "cannot log a delivery: %s", l.job.err.message);
    arena_free(&a);
    json_decref(s);
    return rc;
}

static int run_log_cleanup(store_job_t *job, store_conn_t *conn)
{
    bs_value_t before = bs_val_int(util_now_ms() - 7LL * 86400000);
    return store_exec(conn, "DELETE FROM _webhook_deliveries WHERE created < ?1", &before, 1, &job->err) < 0
               ? -1
               : 0;
}

/* __basaltWebhookLogCleanup__: the delivery log keeps seven days. */
static int log_cleanup(jobs_ctx_t *ctx)
{
    arena_t a;
    arena_init(&a, 256);
    store_job_t j = {.run = run_log_cleanup, .arena = &a};
    bs_error_init(&j.err);
    int rc = jobs_store_run(ctx->store, &j);
    if (rc != 0)
        snprintf(ctx->error, sizeof(ctx->error), "%s", j.err.message);
    arena_free(&a);
    return rc == 0 ? JOBS_OK : JOBS_RETRY;
}

int webhooks_init(const char *allow, int timeout_ms)
{
    allow_list = allow ? allow : "";
    timeout_ms_cfg = timeout_ms > 0 ? timeout_ms : 10000;
    if (jobs_known("webhook.deliver"))
        return 0;
    bs_error_t err;
    bs_error_init(&err);
    if (jobs_register("webhook.deliver", deliver) != 0 ||
        jobs_register("webhook.log_cleanup", log_cleanup) != 0 ||
        jobs_cron_register("__basaltWebhookLogCleanup__", "30 3 * * *", "webhook.log_cleanup", &err) != 0)
        return -1;
    return 0;
}
