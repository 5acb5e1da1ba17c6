/*
 * PocketBase's mail flows on auth collections: request/confirm verification,
 * request/confirm password reset, request/confirm email change, request OTP and
 * auth-with-otp (ADR 0009).
 *
 * Every request flow answers the same whether or not the address belongs to an
 * account (204; request-otp: 200 with an otpId, a random one when there is no
 * account) and is limited per address and per client address; the lookup, the
 * token and the queued mail happen in one write job, so that the mail exists
 * exactly when the commit does and the answer never waits on SMTP.
 *
 * Tokens are PocketBase's: JWTs of type verification (3 days), passwordReset and
 * emailChange (30 minutes), carrying the address they were issued for, signed
 * with the record's tokenKey and the collection's secret with the type appended.
 * A password reset and an email change give the record a new tokenKey, which
 * invalidates every token issued before (other reset links included). One-time
 * passwords are 8 digits, valid 3 minutes, 5 tries, one use; only an HMAC of
 * each is stored.
 */
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "auth/password.h"
#include "auth/token.h"
#include "core/record_hooks.h"
#include "base/log.h"
#include "base/util.h"
#include "jobs/jobs.h"
#include "metrics/metrics.h"
#include "mail/mail.h"
#include "ratelimit/ratelimit.h"
#include "redis/redis_shared.h"
#include "rules/dialect.h"
#include "settings/settings.h"

#define VERIFICATION_S 259200
#define PASSWORD_RESET_S 1800
#define EMAIL_CHANGE_S 1800
#define OTP_S 180
#define OTP_MAX_ATTEMPTS 5

static ratelimit_t *mail_rl;
static api_jobs_config_t limits;

static const collection_t *auth_coll(req_ctx_t *ctx, const char *name)
{
    const collection_t *c = api_collection(ctx, name);
    if (c != NULL && c->type != COLL_AUTH) {
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST, "The collection is not an auth collection.");
        return NULL;
    }
    return c;
}

static void mail_refuse(req_ctx_t *ctx, const collection_t *c, int64_t retry_ms)
{
    char ra[32];
    snprintf(ra, sizeof(ra), "%lld", (long long)((retry_ms + 999) / 1000));
    ctx_add_header(ctx, "retry-after", ra);
    api_audit(ctx, "mail_rate_limited", c->name, NULL);
    ctx_send_status(ctx, BS_ERR_RATE_LIMITED,
                    "Too many mail requests for this address or from this client; retry later.");
}

/* The keys of the two limits: one client (whatever address it asks for), one
 * address of one collection (whoever asks), lower-cased. */
static void mail_keys(req_ctx_t *ctx, const collection_t *c, const char *email, char *ikey, int *ilen,
                      char *ekey, int *elen, size_t cap)
{
    *ilen = snprintf(ikey, cap, "m:i:%s", ctx->client_ip);
    int n = snprintf(ekey, cap, "m:e:%s:", c->id);
    for (const char *p = email; *p && (size_t)n < cap - 1; p++)
        ekey[n++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    ekey[n] = '\0';
    *elen = n;
}

/* The limits decided in this process; divisor > 1 keeps this instance's share of each
 * (Redis unreachable). Returns 0, or -1 after answering 429. */
static int mail_limited(req_ctx_t *ctx, const collection_t *c, const char *email, int64_t divisor)
{
    if (mail_rl == NULL)
        return 0;
    int64_t now = util_now_ms();
    int64_t lim_ip = limits.mail_rate_limit_ip, lim = limits.mail_rate_limit;
    if (divisor > 1) {
        lim_ip = lim_ip > 0 ? (lim_ip / divisor > 0 ? lim_ip / divisor : 1) : lim_ip;
        lim = lim > 0 ? (lim / divisor > 0 ? lim / divisor : 1) : lim;
    }
    ratelimit_result_t r;
    char ikey[400], ekey[400];
    int ilen, elen;
    mail_keys(ctx, c, email, ikey, &ilen, ekey, &elen, sizeof(ikey));
    ratelimit_take(mail_rl, ikey, (size_t)ilen, lim_ip, limits.mail_rate_period_ms, now, &r);
    if (r.allowed)
        ratelimit_take(mail_rl, ekey, (size_t)elen, lim, limits.mail_rate_period_ms, now, &r);
    if (r.allowed)
        return 0;
    mail_refuse(ctx, c, r.retry_ms);
    return -1;
}

/* A mail request waiting for Redis's decision (in its arena). */
typedef struct {
    req_ctx_t *ctx;
    const collection_t *c;
    const char *email;
    void (*next)(req_ctx_t *ctx, void *arg);
    void *arg;
} mail_wait_t;

static void mail_decided(void *arg, int ok, const ratelimit_result_t *ip, const ratelimit_result_t *addr,
                         int addr_taken)
{
    mail_wait_t *w = arg;
    req_ctx_t *ctx = w->ctx;
    if (ctx->req != NULL) {
        if (!ok) {
            redis_rl_count_local();
            if (mail_limited(ctx, w->c, w->email, redis_live_instances()) == 0)
                w->next(ctx, w->arg);
        } else if (!ip->allowed || (addr_taken && !addr->allowed)) {
            mail_refuse(ctx, w->c, !ip->allowed ? ip->retry_ms : addr->retry_ms);
        } else {
            w->next(ctx, w->arg);
        }
    }
    ctx_async_end(ctx);
}

/* The limits of mail-sending requests, then next(ctx, arg) unless it answered 429.
 * With --redis they hold in total across the instances: one decision in Redis, as
 * the request limits (api/limits.c); the request waits for it, its loop does not. */
static void mail_limited_then(req_ctx_t *ctx, const collection_t *c, const char *email,
                              void (*next)(req_ctx_t *ctx, void *arg), void *arg)
{
    if (mail_rl == NULL) {
        next(ctx, arg);
        return;
    }
    if (!redis_enabled()) {
        if (mail_limited(ctx, c, email, 1) == 0)
            next(ctx, arg);
        return;
    }
    mail_wait_t *w = arena_calloc(&ctx->arena, sizeof(*w));
    if (w == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    *w = (mail_wait_t){.ctx = ctx, .c = c, .email = email, .next = next, .arg = arg};
    char ikey[400], ekey[400];
    int ilen, elen;
    mail_keys(ctx, c, email, ikey, &ilen, ekey, &elen, sizeof(ikey));
    ctx_async_begin(ctx);
    if (redis_rl_take(ikey, (size_t)ilen, limits.mail_rate_limit_ip, ekey, (size_t)elen,
                      limits.mail_rate_limit, limits.mail_rate_period_ms, mail_decided, w) == 0)
        return;
    /* Redis cannot be asked now: this instance's share, decided here. */
    ctx_async_end(ctx);
    redis_rl_count_local();
    if (mail_limited(ctx, c, email, redis_live_instances()) == 0)
        next(ctx, arg);
}

/* The collection's secret for tokens of type (never the auth tokens' own). */
static void flow_secret(const collection_t *c, const char *type, char *out, size_t cap)
{
    snprintf(out, cap, "%s:%s", c->token_secret ? c->token_secret : "", type);
}

static void sign_flow(buf_t *out, const collection_t *c, const json_t *rec, const char *type, int64_t dur,
                      const char *new_email)
{
    token_claims_t cl;
    memset(&cl, 0, sizeof(cl));
    snprintf(cl.id, sizeof(cl.id), "%s", json_string_value(json_object_get(rec, "id")));
    snprintf(cl.collection_id, sizeof(cl.collection_id), "%s", c->id);
    snprintf(cl.type, sizeof(cl.type), "%s", type);
    snprintf(cl.email, sizeof(cl.email), "%s", json_string_value(json_object_get(rec, "email")) ?: "");
    if (new_email)
        snprintf(cl.new_email, sizeof(cl.new_email), "%s", new_email);
    cl.exp = util_now_ms() / 1000 + dur;
    char secret[600];
    flow_secret(c, type, secret, sizeof(secret));
    const char *key = json_string_value(json_object_get(rec, "tokenKey"));
    token_sign(out, &cl, key ? key : "", secret);
}

/* Checks tok (a flow token of type) against rec as stored now. Returns 0 with the
 * claims, or -1. */
static int check_flow(const char *tok, const collection_t *c, const json_t *rec, const char *type,
                      token_claims_t *cl)
{
    bs_error_t err;
    bs_error_init(&err);
    char secret[600];
    flow_secret(c, type, secret, sizeof(secret));
    const char *key = json_string_value(json_object_get(rec, "tokenKey"));
    const char *email = json_string_value(json_object_get(rec, "email"));
    if (token_peek(tok, strlen(tok), cl, &err) != 0 ||
        token_verify(tok, strlen(tok), key ? key : "", secret, util_now_ms() / 1000, type, &err) != 0) {
        LOGF(LOG_DEBUG, "auth", "a %s token is refused: %s", type, err.message);
        return -1;
    }
    /* Issued for the address the record has now (an email change since voids it). */
    if (strcmp(cl->collection_id, c->id) != 0 || email == NULL || strcmp(cl->email, email) != 0)
        return -1;
    return 0;
}

/* The email of a JSON body, checked; NULL after a 400. */
static const char *body_email(req_ctx_t *ctx, json_t *body, const char *key)
{
    json_t *v = json_object_get(body, key);
    if (!json_is_string(v) || !mail_valid_address(json_string_value(v), json_string_length(v))) {
        bs_error_t err;
        bs_error_init(&err);
        bs_error_field(&err, &ctx->arena, key,
                       json_is_string(v) && json_string_length(v) ? "validation_is_email"
                                                                  : "validation_required",
                       "Must be a valid email address.");
        err.code = BS_ERR_VALIDATION;
        ctx_send_error(ctx, &err);
        return NULL;
    }
    return arena_strdup(&ctx->arena, json_string_value(v));
}

/* The request body as an object, or NULL after answering. */
static json_t *object_body(req_ctx_t *ctx)
{
    bs_error_t err;
    bs_error_init(&err);
    json_t *body = ctx_body(ctx, &err);
    if (body == NULL) {
        ctx_send_error(ctx, &err);
        return NULL;
    }
    if (!json_is_object(body)) {
        json_decref(body);
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST, "The body must be a JSON object.");
        return NULL;
    }
    return body;
}

/* ---- the request flows ---- */

typedef enum { FLOW_VERIFY, FLOW_RESET, FLOW_CHANGE, FLOW_OTP } flow_t;

typedef struct {
    flow_t flow;
    const collection_t *coll;
    const char *email;     /* the address asked for (request-email-change: the new one) */
    const char *record_id; /* request-email-change: the signed-in record */
    char otp_id[UTIL_ID_LEN + 1];
    int queued;
} request_t;

static void otp_hash(const collection_t *c, const char *otp_id, const char *code, char out[65])
{
    unsigned char mac[32];
    unsigned int len = sizeof(mac);
    char data[64];
    int n = snprintf(data, sizeof(data), "%s:%s", otp_id, code);
    const char *key = c->token_secret ? c->token_secret : "";
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)data, (size_t)n, mac, &len);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

static int run_request(store_job_t *job, store_conn_t *conn)
{
    request_t *r = ((api_job_t *)job)->data;
    const collection_t *c = r->coll;
    bs_error_t lerr;
    bs_error_init(&lerr);
    json_t *rec = r->flow == FLOW_CHANGE ? record_load(conn, c, "id", r->record_id, &lerr)
                                         : record_load(conn, c, "email", r->email, &lerr);
    if (rec == NULL && lerr.code != BS_ERR_NOT_FOUND) {
        job->err = lerr;
        return -1;
    }
    if (r->flow == FLOW_CHANGE) {
        if (rec == NULL) {
            bs_error_set(&job->err, BS_ERR_UNAUTHORIZED, NULL);
            return -1;
        }
        json_t *taken = record_load(conn, c, "email", r->email, &lerr);
        if (taken != NULL) {
            json_decref(taken);
            json_decref(rec);
            bs_error_field(&job->err, job->arena, "newEmail", "validation_invalid_new_email",
                           "Invalid new email address.");
            job->err.code = BS_ERR_VALIDATION;
            return -1;
        }
    }
    if (r->flow == FLOW_OTP)
        util_random_id(r->otp_id); /* the same answer without an account */
    if (rec == NULL || (r->flow == FLOW_VERIFY && json_is_true(json_object_get(rec, "verified")))) {
        json_decref(rec);
        return 0;
    }
    json_t *s = settings_get();
    buf_t tok, subject, html;
    buf_init(&tok, job->arena);
    buf_init(&subject, job->arena);
    buf_init(&html, job->arena);
    char code[9] = "";
    mail_kind_t kind = MAIL_VERIFICATION;
    const char *to = json_string_value(json_object_get(rec, "email"));
    int rc = 0;
    switch (r->flow) {
    case FLOW_VERIFY:
        sign_flow(&tok, c, rec, "verification", VERIFICATION_S, NULL);
        break;
    case FLOW_RESET:
        kind = MAIL_PASSWORD_RESET;
        sign_flow(&tok, c, rec, "passwordReset", PASSWORD_RESET_S, NULL);
        break;
    case FLOW_CHANGE:
        kind = MAIL_EMAIL_CHANGE;
        to = r->email; /* the new address proves itself */
        sign_flow(&tok, c, rec, "emailChange", EMAIL_CHANGE_S, r->email);
        break;
    case FLOW_OTP: {
        kind = MAIL_OTP;
        uint32_t v;
        util_random_bytes(&v, sizeof(v));
        snprintf(code, sizeof(code), "%08u", (unsigned)(v % 100000000u));
        char hash[65];
        otp_hash(c, r->otp_id, code, hash);
        int64_t now = util_now_ms();
        const char *rid = json_string_value(json_object_get(rec, "id"));
        bs_value_t p[6] = {bs_val_text(r->otp_id, strlen(r->otp_id)),
                           bs_val_text(c->id, strlen(c->id)),
                           bs_val_text(rid, strlen(rid)),
                           bs_val_text(hash, strlen(hash)),
                           bs_val_int(now + OTP_S * 1000),
                           bs_val_int(now)};
        if (store_exec(
                conn,
                "INSERT INTO _otps (id, collection_id, record_id, hash, attempts, expires, created) VALUES "
                "(?1, ?2, ?3, ?4, 0, ?5, ?6)",
                p, 6, &job->err) < 0)
            rc = -1;
        break;
    }
    }
    if (rc == 0) {
        mail_compose_for(kind, c, s, tok.data ? tok.data : "", code, r->flow == FLOW_OTP ? r->otp_id : "",
                         rec, &subject, &html);
        if (tok.oom || subject.oom || html.oom)
            bs_error_set(&job->err, BS_ERR_NOMEM, NULL), rc = -1;
        else
            rc = mail_enqueue(conn, to ? to : "", subject.data, html.data, &job->err);
    }
    r->queued = rc == 0;
    json_decref(s);
    json_decref(rec);
    return rc;
}

static void request_committed(store_job_t *job)
{
    if (((request_t *)((api_job_t *)job)->data)->queued)
        jobs_wake();
}

static void request_done(api_job_t *j, req_ctx_t *ctx)
{
    request_t *r = j->data;
    static const char *actions[] = {"verification_requested", "password_reset_requested",
                                    "email_change_requested", "otp_requested"};
    if (j->job.status != 0) {
        /* Only a store failure, or request-email-change's own checks: the answer
         * tells nothing about whether another address has an account. */
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    api_audit(ctx, actions[r->flow], r->coll->name, NULL);
    if (r->flow == FLOW_OTP) {
        char out[64];
        int n = snprintf(out, sizeof(out), "{\"otpId\":\"%s\"}", r->otp_id);
        ctx_send_json(ctx, 200, out, (size_t)n);
        return;
    }
    ctx_send_empty(ctx, 204);
}

static void request_go(req_ctx_t *ctx, void *arg);

static void request_flow(req_ctx_t *ctx, char **params, flow_t flow)
{
    const collection_t *c = auth_coll(ctx, params[0]);
    if (c == NULL)
        return;
    if (flow == FLOW_CHANGE && (ctx->auth == NULL || ctx->who.auth_coll != c)) {
        if (ctx->auth_err.code != BS_ERR_OK)
            ctx_send_error(ctx, &ctx->auth_err);
        else
            ctx_send_status(ctx, BS_ERR_UNAUTHORIZED,
                            "The request requires a valid auth token of a record of this collection.");
        return;
    }
    json_t *body = object_body(ctx);
    if (body == NULL)
        return;
    const char *email = body_email(ctx, body, flow == FLOW_CHANGE ? "newEmail" : "email");
    json_decref(body);
    if (email == NULL)
        return;
    request_t *r = arena_calloc(&ctx->arena, sizeof(*r));
    if (r == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    r->flow = flow;
    r->coll = c;
    r->email = email;
    mail_limited_then(ctx, c, email, request_go, r);
}

static void request_go(req_ctx_t *ctx, void *arg)
{
    request_t *r = arg;
    if (r->flow == FLOW_CHANGE) {
        r->record_id = arena_strdup(&ctx->arena, json_string_value(json_object_get(ctx->auth, "id")) ?: "");
        const char *cur = json_string_value(json_object_get(ctx->auth, "email"));
        if (cur != NULL && strcmp(cur, r->email) == 0) {
            bs_error_t err;
            bs_error_init(&err);
            bs_error_field(&err, &ctx->arena, "newEmail", "validation_invalid_new_email",
                           "The new email must differ from the current one.");
            err.code = BS_ERR_VALIDATION;
            ctx_send_error(ctx, &err);
            return;
        }
    }
    api_submit(ctx, run_request, request_committed, request_done, r);
}

void api_request_verification(req_ctx_t *ctx, char **params)
{
    request_flow(ctx, params, FLOW_VERIFY);
}
void api_request_password_reset(req_ctx_t *ctx, char **params)
{
    request_flow(ctx, params, FLOW_RESET);
}
void api_request_email_change(req_ctx_t *ctx, char **params)
{
    request_flow(ctx, params, FLOW_CHANGE);
}
void api_request_otp(req_ctx_t *ctx, char **params)
{
    request_flow(ctx, params, FLOW_OTP);
}

/* ---- the confirm flows ---- */

typedef struct {
    password_req_t pw; /* first: back from the password pool */
    req_ctx_t *ctx;
    flow_t flow;
    const collection_t *coll;
    const char *token;
    char id[101];
    char *password;  /* reset: the new one; change: the current one (arena) */
    json_t *changes; /* realtime: the record after the change */
    int invalid;     /* the token (or OTP) was refused */
    const char *why; /* what the 400 says */
    json_t *rec;     /* auth-with-otp: the record signed in (owned) */
    const char *otp_id, *otp;
} confirm_t;

static const char *true_sql(store_conn_t *conn)
{
    return dialect_get(store_conn_dialect(conn))->true_lit;
}

static void note_update(store_conn_t *conn, confirm_t *k)
{
    if (k->changes == NULL)
        return;
    bs_error_t err;
    bs_error_init(&err);
    json_t *rec = record_load(conn, k->coll, "id", k->id, &err);
    if (rec != NULL)
        json_array_append_new(k->changes, json_pack("{s:s, s:s, s:o}", "action", "update", "collectionId",
                                                    k->coll->id, "record", rec));
}

static int run_confirm(store_job_t *job, store_conn_t *conn)
{
    confirm_t *k = ((api_job_t *)job)->data;
    const collection_t *c = k->coll;
    bs_error_t lerr;
    bs_error_init(&lerr);
    json_t *rec = record_load(conn, c, "id", k->id, &lerr);
    if (rec == NULL && lerr.code != BS_ERR_NOT_FOUND) {
        job->err = lerr;
        return -1;
    }
    static const char *types[] = {"verification", "passwordReset", "emailChange"};
    token_claims_t cl;
    if (rec == NULL || check_flow(k->token, c, rec, types[k->flow], &cl) != 0) {
        json_decref(rec);
        k->invalid = 1;
        return 0;
    }
    buf_t sql;
    buf_init(&sql, job->arena);
    buf_puts(&sql, "UPDATE ");
    sql_ident(&sql, c->name);
    char key[51];
    record_new_token_key(key);
    const char *old_key = json_string_value(json_object_get(rec, "tokenKey"));
    bs_value_t p[4] = {bs_val_text(k->id, strlen(k->id)), bs_val_text(old_key ?: "", strlen(old_key ?: "")),
                       bs_val_text(key, strlen(key)), bs_val_null()};
    int np = 2;
    if (k->flow == FLOW_VERIFY) {
        buf_printf(&sql, " SET \"verified\" = %s WHERE \"id\" = ?1", true_sql(conn));
        np = 1;
    } else if (k->flow == FLOW_RESET) {
        /* The new tokenKey ends every session and every other reset link. */
        buf_printf(&sql,
                   " SET \"password\" = ?4, \"tokenKey\" = ?3, \"verified\" = %s WHERE \"id\" = ?1 AND "
                   "\"tokenKey\" = ?2",
                   true_sql(conn));
        p[3] = bs_val_text(k->pw.hash, strlen(k->pw.hash));
        np = 4;
    } else {
        json_t *taken = record_load(conn, c, "email", cl.new_email, &lerr);
        if (taken != NULL || cl.new_email[0] == '\0') {
            json_decref(taken);
            json_decref(rec);
            k->invalid = 1;
            k->why = "The new email address is already in use.";
            return 0;
        }
        buf_printf(&sql,
                   " SET \"email\" = ?4, \"tokenKey\" = ?3, \"verified\" = %s WHERE \"id\" = ?1 AND "
                   "\"tokenKey\" = ?2",
                   true_sql(conn));
        p[3] = bs_val_text(cl.new_email, strlen(cl.new_email));
        np = 4;
    }
    /* old_key points into rec: released after the statement ran. */
    int64_t n = sql.oom ? -1 : store_exec(conn, sql.data, p, (size_t)np, &job->err);
    json_decref(rec);
    if (n < 0)
        return -1;
    if (n == 0) { /* used twice at once: the other use won */
        k->invalid = 1;
        return 0;
    }
    note_update(conn, k);
    return 0;
}

static void confirm_committed(store_job_t *job)
{
    confirm_t *k = ((api_job_t *)job)->data;
    if (k->invalid)
        return;
    api_bump_for_write(((api_job_t *)job)->ctx->schema, k->coll);
    api_changes_publish(&k->changes);
}

static void confirm_done(api_job_t *j, req_ctx_t *ctx)
{
    confirm_t *k = j->data;
    json_decref(k->changes);
    k->changes = NULL;
    static const char *names[] = {"verification", "password reset", "email change"};
    static const char *actions[] = {"verification_confirmed", "password_reset", "email_changed"};
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (k->invalid) {
        bs_error_t err;
        bs_error_init(&err);
        if (k->why)
            bs_error_set(&err, BS_ERR_BAD_REQUEST, "%s", k->why);
        else
            bs_error_field(&err, &ctx->arena, "token", "validation_invalid_token",
                           "Invalid or expired token.");
        if (!k->why) {
            err.code = BS_ERR_VALIDATION;
            snprintf(err.message, sizeof(err.message), "Invalid or expired %s token.", names[k->flow]);
        }
        ctx_send_error(ctx, &err);
        return;
    }
    char target[160];
    snprintf(target, sizeof(target), "%s/%s", k->coll->name, k->id);
    api_audit(ctx, actions[k->flow], target, NULL);
    ctx_send_empty(ctx, 204);
}

static void submit_confirm(confirm_t *k)
{
    k->changes = api_changes_new();
    store_job_t *job = api_submit(k->ctx, run_confirm, confirm_committed, confirm_done, k);
    if (job != NULL)
        job->events = k->changes; /* the outbox writes them with the job */
}

static void pw_back(mailbox_msg_t *msg)
{
    confirm_t *k = (confirm_t *)msg;
    req_ctx_t *ctx = k->ctx;
    if (ctx->req != NULL) {
        if (k->pw.op == PASSWORD_HASH && !k->pw.ok)
            ctx_send_status(ctx, BS_ERR_INTERNAL, "The password could not be hashed.");
        else if (k->pw.op == PASSWORD_VERIFY && !k->pw.ok)
            ctx_send_status(ctx, BS_ERR_BAD_REQUEST,
                            "Invalid or expired email change token, or wrong password.");
        else
            submit_confirm(k);
    }
    ctx_async_end(ctx);
}

/* confirm-email-change: the record's current hash, for the password check. */
static int run_load_hash(store_job_t *job, store_conn_t *conn)
{
    confirm_t *k = ((api_job_t *)job)->data;
    json_t *rec = record_load(conn, k->coll, "id", k->id, &job->err);
    bs_error_init(&job->err);
    const char *h = rec ? json_string_value(json_object_get(rec, "password")) : NULL;
    if (h != NULL && strlen(h) < sizeof(k->pw.hash))
        memcpy(k->pw.hash, h, strlen(h) + 1);
    json_decref(rec);
    return 0;
}

static void hash_loaded(api_job_t *j, req_ctx_t *ctx)
{
    confirm_t *k = j->data;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (ctx->req == NULL)
        return;
    /* An unknown record is checked against the dummy hash: the same time. */
    k->pw.op = PASSWORD_VERIFY;
    ctx_async_begin(ctx);
    password_submit(&k->pw);
}

static void confirm_flow(req_ctx_t *ctx, char **params, flow_t flow)
{
    const collection_t *c = auth_coll(ctx, params[0]);
    if (c == NULL)
        return;
    json_t *body = object_body(ctx);
    if (body == NULL)
        return;
    bs_error_t err;
    bs_error_init(&err);
    json_t *tok = json_object_get(body, "token");
    json_t *pw = json_object_get(body, "password");
    if (!json_is_string(tok) || json_string_length(tok) == 0 || json_string_length(tok) > 4096 ||
        api_has_nul(tok))
        bs_error_field(&err, &ctx->arena, "token", "validation_required", "Cannot be blank.");
    if (flow != FLOW_VERIFY) {
        const field_t *pf = collection_field(c, "password");
        size_t min = pf && pf->has_min ? (size_t)pf->min : 8, max = pf && pf->has_max ? (size_t)pf->max : 71;
        if (!json_is_string(pw) || json_string_length(pw) == 0)
            bs_error_field(&err, &ctx->arena, "password", "validation_required", "Cannot be blank.");
        else if (api_has_nul(pw))
            bs_error_field(&err, &ctx->arena, "password", "validation_invalid_value",
                           "Must not contain NUL characters.");
        else if (flow == FLOW_RESET && (json_string_length(pw) < min || json_string_length(pw) > max))
            bs_error_field(&err, &ctx->arena, "password", "validation_length_out_of_range",
                           "Must be between %zu and %zu characters.", min, max);
        else if (json_string_length(pw) > 1024)
            bs_error_field(&err, &ctx->arena, "password", "validation_length_out_of_range", "Too long.");
        if (flow == FLOW_RESET && !json_equal(pw, json_object_get(body, "passwordConfirm")))
            bs_error_field(&err, &ctx->arena, "passwordConfirm", "validation_values_mismatch",
                           "Values don't match.");
    }
    token_claims_t cl;
    bs_error_t terr;
    bs_error_init(&terr);
    if (err.code == BS_ERR_OK &&
        (token_peek(json_string_value(tok), json_string_length(tok), &cl, &terr) != 0 ||
         strcmp(cl.collection_id, c->id) != 0))
        bs_error_field(&err, &ctx->arena, "token", "validation_invalid_token", "Invalid or expired token.");
    confirm_t *k = err.code == BS_ERR_OK ? arena_calloc(&ctx->arena, sizeof(*k)) : NULL;
    if (k == NULL) {
        json_decref(body);
        if (err.code == BS_ERR_OK)
            bs_error_set(&err, BS_ERR_NOMEM, NULL);
        else
            err.code = BS_ERR_VALIDATION;
        ctx_send_error(ctx, &err);
        return;
    }
    k->ctx = ctx;
    k->flow = flow;
    k->coll = c;
    k->token = arena_strdup(&ctx->arena, json_string_value(tok));
    memcpy(k->id, cl.id, sizeof(k->id));
    k->password = pw ? arena_strdup(&ctx->arena, json_string_value(pw)) : NULL;
    json_decref(body);
    if (k->token == NULL || (pw && k->password == NULL)) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    k->pw.msg.deliver = pw_back;
    k->pw.reply_to = &ctx->worker->mailbox;
    k->pw.password = k->password;
    if (flow == FLOW_VERIFY) {
        submit_confirm(k);
    } else if (flow == FLOW_RESET) {
        k->pw.op = PASSWORD_HASH;
        ctx_async_begin(ctx);
        password_submit(&k->pw);
    } else {
        api_read(ctx, run_load_hash, hash_loaded, k);
    }
}

void api_confirm_verification(req_ctx_t *ctx, char **params)
{
    confirm_flow(ctx, params, FLOW_VERIFY);
}
void api_confirm_password_reset(req_ctx_t *ctx, char **params)
{
    confirm_flow(ctx, params, FLOW_RESET);
}
void api_confirm_email_change(req_ctx_t *ctx, char **params)
{
    confirm_flow(ctx, params, FLOW_CHANGE);
}

/* ---- auth-with-otp ---- */

static int run_otp(store_job_t *job, store_conn_t *conn)
{
    confirm_t *k = ((api_job_t *)job)->data;
    const collection_t *c = k->coll;
    bs_value_t id = bs_val_text(k->otp_id, strlen(k->otp_id));
    store_stmt_t *st = store_query(conn,
                                   "SELECT record_id, hash, attempts, expires FROM _otps WHERE id = ?1 AND "
                                   "collection_id = ?2",
                                   (bs_value_t[]){id, bs_val_text(c->id, strlen(c->id))}, 2, &job->err);
    if (st == NULL)
        return -1;
    char hash[65] = "";
    int64_t attempts = 0, expires = 0;
    int rc = store_step(st, &job->err);
    if (rc == 1) {
        bs_value_t r = store_col(st, 0), h = store_col(st, 1), a = store_col(st, 2), e = store_col(st, 3);
        if (r.type == BS_VAL_TEXT && r.n < sizeof(k->id))
            memcpy(k->id, r.s, r.n), k->id[r.n] = '\0';
        if (h.type == BS_VAL_TEXT && h.n < sizeof(hash))
            memcpy(hash, h.s, h.n), hash[h.n] = '\0';
        attempts = a.type == BS_VAL_INT ? a.i : 0;
        expires = e.type == BS_VAL_INT ? e.i : 0;
    }
    store_done(st);
    if (rc < 0)
        return -1;
    k->invalid = 1;
    if (rc == 0)
        return 0;
    if (expires <= util_now_ms() || attempts >= OTP_MAX_ATTEMPTS) {
        store_exec(conn, "DELETE FROM _otps WHERE id = ?1", &id, 1, &job->err);
        return 0;
    }
    char want[65];
    otp_hash(c, k->otp_id, k->otp, want);
    if (strlen(hash) != 64 || !util_ct_equal(want, hash, 64)) {
        /* Counted (and committed: this job succeeds) so that guessing runs out. */
        return store_exec(conn, "UPDATE _otps SET attempts = attempts + 1 WHERE id = ?1", &id, 1, &job->err) <
                       0
                   ? -1
                   : 0;
    }
    /* One use: whoever deletes the row signs in. */
    int64_t n = store_exec(conn, "DELETE FROM _otps WHERE id = ?1", &id, 1, &job->err);
    if (n < 0)
        return -1;
    if (n == 0)
        return 0;
    bs_error_t lerr;
    bs_error_init(&lerr);
    json_t *rec = record_load(conn, c, "id", k->id, &lerr);
    if (rec == NULL)
        return 0;
    /* The collection's authRule decides, as for a password sign-in. */
    caller_t who = caller_as(&((api_job_t *)job)->ctx->who, c, rec, 0);
    record_reader_t rr = {
        .schema = ((api_job_t *)job)->ctx->schema, .conn = conn, .arena = job->arena, .who = &who};
    int ok = record_matches(&rr, c, k->id, c->rules[RULE_AUTH], NULL, &lerr);
    if (ok != 1) {
        json_decref(rec);
        k->why = "The request doesn't satisfy the collection requirements to authenticate.";
        return 0;
    }
    /* The code came by mail: the address is proven. */
    if (!json_is_true(json_object_get(rec, "verified")) && collection_field(c, "verified") != NULL) {
        buf_t sql;
        buf_init(&sql, job->arena);
        buf_puts(&sql, "UPDATE ");
        sql_ident(&sql, c->name);
        buf_printf(&sql, " SET \"verified\" = %s WHERE \"id\" = ?1", true_sql(conn));
        bs_value_t rid = bs_val_text(k->id, strlen(k->id));
        if (store_exec(conn, sql.data, &rid, 1, &job->err) < 0) {
            json_decref(rec);
            return -1;
        }
        json_object_set_new(rec, "verified", json_true());
        note_update(conn, k);
    }
    k->rec = rec;
    k->invalid = 0;
    return 0;
}

static void otp_committed(store_job_t *job)
{
    confirm_t *k = ((api_job_t *)job)->data;
    if (k->rec != NULL) {
        api_bump_for_write(((api_job_t *)job)->ctx->schema, k->coll);
        api_changes_publish(&k->changes);
    }
}

static void otp_done(api_job_t *j, req_ctx_t *ctx)
{
    confirm_t *k = j->data;
    json_decref(k->changes);
    k->changes = NULL;
    if (j->job.status != 0) {
        json_decref(k->rec);
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (k->rec == NULL) {
        api_audit(ctx, "otp_failed", k->coll->name, NULL);
        metrics_add(&metrics_g.logins_failed, 1);
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST, k->why ? k->why : "Invalid or expired OTP.");
        return;
    }
    char target[160];
    snprintf(target, sizeof(target), "%s/%s", k->coll->name, k->id);
    api_audit(ctx, "login_otp", target, NULL);
    metrics_add(&metrics_g.logins_ok, 1);
    api_send_auth(ctx, k->coll, k->rec, 1, 0);
    json_decref(k->rec);
    k->rec = NULL;
}

void api_auth_with_otp(req_ctx_t *ctx, char **params)
{
    const collection_t *c = auth_coll(ctx, params[0]);
    if (c == NULL)
        return;
    json_t *body = object_body(ctx);
    if (body == NULL)
        return;
    bs_error_t err;
    bs_error_init(&err);
    json_t *id = json_object_get(body, "otpId"), *pw = json_object_get(body, "password");
    if (!json_is_string(id) || !util_valid_id(json_string_value(id), json_string_length(id)))
        bs_error_field(&err, &ctx->arena, "otpId", "validation_required", "Cannot be blank.");
    if (!json_is_string(pw) || json_string_length(pw) == 0 || json_string_length(pw) > 64 || api_has_nul(pw))
        bs_error_field(&err, &ctx->arena, "password", "validation_required", "Cannot be blank.");
    confirm_t *k = err.code == BS_ERR_OK ? arena_calloc(&ctx->arena, sizeof(*k)) : NULL;
    if (k == NULL) {
        json_decref(body);
        if (err.code == BS_ERR_OK)
            bs_error_set(&err, BS_ERR_NOMEM, NULL);
        else
            err.code = BS_ERR_VALIDATION;
        ctx_send_error(ctx, &err);
        return;
    }
    k->ctx = ctx;
    k->flow = FLOW_OTP;
    k->coll = c;
    k->otp_id = arena_strdup(&ctx->arena, json_string_value(id));
    k->otp = arena_strdup(&ctx->arena, json_string_value(pw));
    json_decref(body);
    if (k->otp_id == NULL || k->otp == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    k->changes = api_changes_new();
    store_job_t *job = api_submit(ctx, run_otp, otp_committed, otp_done, k);
    if (job != NULL)
        job->events = k->changes; /* the outbox writes them with the job */
}

/* ---- cleanup and start-up ---- */

static int run_otp_cleanup(store_job_t *job, store_conn_t *conn)
{
    bs_value_t now = bs_val_int(util_now_ms());
    return store_exec(conn, "DELETE FROM _otps WHERE expires < ?1", &now, 1, &job->err) < 0 ? -1 : 0;
}

static int otp_cleanup(jobs_ctx_t *ctx)
{
    arena_t a;
    arena_init(&a, 256);
    store_job_t j = {.run = run_otp_cleanup, .arena = &a};
    bs_error_init(&j.err);
    int rc = jobs_store_run(ctx->store, &j);
    if (rc != 0)
        snprintf(ctx->error, sizeof(ctx->error), "%s", j.err.message);
    arena_free(&a);
    return rc == 0 ? JOBS_OK : JOBS_RETRY;
}

int api_webhooks_init(const api_jobs_config_t *c);

int api_jobs_init(const api_jobs_config_t *c)
{
    limits = *c;
    if (c->mail_rate_limit > 0 || c->mail_rate_limit_ip > 0) {
        mail_rl = ratelimit_new(65536);
        if (mail_rl == NULL)
            return -1;
    }
    bs_error_t err;
    bs_error_init(&err);
    if (!jobs_known("otp.cleanup") &&
        (jobs_register("otp.cleanup", otp_cleanup) != 0 ||
         jobs_cron_register("__basaltOTPCleanup__", "0 * * * *", "otp.cleanup", &err) != 0))
        return -1;
    if (record_hooks_init() != 0)
        return -1;
    return api_webhooks_init(c);
}
