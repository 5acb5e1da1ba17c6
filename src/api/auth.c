/*
 * Auth endpoints of auth collections: password login, token refresh, the list of
 * methods, and the mail-based flows (which answer a clear error until mail is
 * configured). The password check runs on the password pool; an unknown identity
 * is checked against a dummy hash so that both cases take the same time.
 */
#include <string.h>

#include "api/api.h"
#include "auth/password.h"
#include "base/log.h"
#include "base/util.h"
#include "metrics/metrics.h"

static const collection_t *auth_collection(req_ctx_t *ctx, const char *name)
{
    const collection_t *c = api_collection(ctx, name);
    if (c != NULL && c->type != COLL_AUTH) {
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST, "The collection is not an auth collection.");
        return NULL;
    }
    return c;
}

typedef struct {
    password_req_t pw; /* first */
    req_ctx_t *ctx;
    const collection_t *coll;
    json_t *rec;               /* owned; NULL when the identity is unknown */
    const char *field, *ident; /* the lookup (arena) */
    record_reader_t r;         /* the authRule's reader */
    caller_t who;              /* its caller: the record signing in */
    int allowed;
} login_t;

static void login_finish(login_t *l, req_ctx_t *ctx);
static void login_done(mailbox_msg_t *msg);

static int run_auth_rule(store_job_t *job, store_conn_t *conn)
{
    login_t *l = ((api_job_t *)job)->data;
    l->r.conn = conn;
    const char *rid = json_string_value(json_object_get(l->rec, "id"));
    l->allowed = record_matches(&l->r, l->coll, rid ? rid : "", l->coll->rules[RULE_AUTH], NULL, &job->err);
    return l->allowed < 0 ? -1 : 0;
}

static void auth_rule_done(api_job_t *j, req_ctx_t *ctx)
{
    login_t *l = j->data;
    const char *rid = json_string_value(json_object_get(l->rec, "id"));
    if (j->job.status != 0 || l->allowed != 1 || ctx->req == NULL) {
        if (j->job.status == 0 && ctx->req != NULL) {
            char target[160];
            snprintf(target, sizeof(target), "%s/%s", l->coll->name, rid ? rid : "");
            api_audit(ctx, "login_refused", target, "the collection's authRule does not allow it");
        }
        json_decref(l->rec); /* rid pointed into it */
        if (j->job.status != 0)
            ctx_send_error(ctx, &j->job.err);
        else
            ctx_send_status(ctx, BS_ERR_BAD_REQUEST, "Failed to authenticate.");
        return;
    }
    metrics_add(&metrics_g.logins_ok, 1);
    {
        char target[160];
        snprintf(target, sizeof(target), "%s/%s", l->coll->name, rid ? rid : "");
        api_audit(ctx, "login", target, NULL);
    }
    api_send_auth(ctx, l->coll, l->rec, 1, 0);
    json_decref(l->rec);
}

/* The identity lookup: each identity field (or the one asked for) in turn. */
static int run_identity(store_job_t *job, store_conn_t *conn)
{
    login_t *l = ((api_job_t *)job)->data;
    const collection_t *c = l->coll;
    for (size_t i = 0; i < c->nidentity && l->rec == NULL; i++) {
        if (l->field != NULL && strcmp(l->field, c->identity_fields[i]) != 0)
            continue;
        bs_error_init(&job->err);
        l->rec = record_load(conn, c, c->identity_fields[i], l->ident, &job->err);
        if (l->rec == NULL && job->err.code != BS_ERR_NOT_FOUND)
            return -1;
    }
    bs_error_init(&job->err);
    return 0;
}

static void identity_done(api_job_t *j, req_ctx_t *ctx)
{
    login_t *l = j->data;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (ctx->req == NULL) {
        json_decref(l->rec);
        return;
    }
    /* An unknown identity is checked against a dummy hash: the same time either way. */
    const char *hash = l->rec ? json_string_value(json_object_get(l->rec, "password")) : NULL;
    if (hash != NULL && strlen(hash) < sizeof(l->pw.hash))
        memcpy(l->pw.hash, hash, strlen(hash) + 1);
    l->pw.msg.deliver = login_done;
    l->pw.reply_to = &ctx->worker->mailbox;
    l->pw.op = PASSWORD_VERIFY;
    ctx_async_begin(ctx);
    password_submit(&l->pw);
}

static void login_done(mailbox_msg_t *msg)
{
    login_t *l = (login_t *)msg;
    req_ctx_t *ctx = l->ctx;
    login_finish(l, ctx);
    ctx_async_end(ctx);
}

static void login_finish(login_t *l, req_ctx_t *ctx)
{
    if (ctx->req == NULL) {
        json_decref(l->rec);
        return;
    }
    if (!l->pw.ok || l->rec == NULL) {
        metrics_add(&metrics_g.logins_failed, 1);
        json_decref(l->rec);
        api_audit(ctx, "login_failed", l->coll->name, "wrong identity or password");
        ctx_send_status(ctx, BS_ERR_BAD_REQUEST, "Failed to authenticate.");
        return;
    }
    /* The collection's authRule decides who may sign in (null: nobody but
     * through impersonation; "": everyone with the password): a read job. */
    l->who = caller_as(&ctx->who, l->coll, l->rec, 0);
    l->r = api_reader(ctx);
    l->r.who = &l->who;
    api_read(ctx, run_auth_rule, auth_rule_done, l);
}

void api_auth_with_password(req_ctx_t *ctx, char **params)
{
    const collection_t *c = auth_collection(ctx, params[0]);
    if (c == NULL)
        return;
    if (!c->password_auth) {
        ctx_send_status(ctx, BS_ERR_FORBIDDEN, "Password authentication is not enabled for this collection.");
        return;
    }
    bs_error_t err;
    bs_error_init(&err);
    json_t *body = ctx_body(ctx, &err);
    if (body == NULL) {
        ctx_send_error(ctx, &err);
        return;
    }
    json_t *identity = json_object_get(body, "identity"), *password = json_object_get(body, "password");
    const char *field = json_string_value(json_object_get(body, "identityField"));
    if (!json_is_string(identity) || json_string_length(identity) == 0)
        bs_error_field(&err, &ctx->arena, "identity", "validation_required", "Cannot be blank.");
    if (!json_is_string(password) || json_string_length(password) == 0)
        bs_error_field(&err, &ctx->arena, "password", "validation_required", "Cannot be blank.");
    else if (json_string_length(password) > 1024)
        bs_error_field(&err, &ctx->arena, "password", "validation_length_out_of_range",
                       "The password is too long.");
    if (api_has_nul(identity))
        bs_error_field(&err, &ctx->arena, "identity", "validation_invalid_value",
                       "Must not contain NUL characters.");
    if (api_has_nul(password))
        bs_error_field(&err, &ctx->arena, "password", "validation_invalid_value",
                       "Must not contain NUL characters.");
    if (api_has_nul(json_object_get(body, "identityField")))
        field = "";
    if (field != NULL) {
        int ok = 0;
        for (size_t i = 0; i < c->nidentity; i++)
            if (strcmp(c->identity_fields[i], field) == 0)
                ok = 1;
        if (!ok)
            bs_error_field(&err, &ctx->arena, "identityField", "validation_invalid",
                           "Not an identity field.");
    }
    if (err.code != BS_ERR_OK) {
        json_decref(body);
        ctx_send_error(ctx, &err);
        return;
    }
    login_t *l = arena_calloc(&ctx->arena, sizeof(*l));
    if (l == NULL) {
        json_decref(body);
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    l->ctx = ctx;
    l->coll = c;
    l->ident = arena_strdup(&ctx->arena, json_string_value(identity));
    l->field = field ? arena_strdup(&ctx->arena, field) : NULL;
    l->pw.password = arena_strdup(&ctx->arena, json_string_value(password));
    json_decref(body);
    if (l->ident == NULL || l->pw.password == NULL || (field != NULL && l->field == NULL)) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    api_read(ctx, run_identity, identity_done, l);
}

typedef struct {
    const collection_t *coll;
    record_reader_t r; /* the authRule's reader, as the signed-in record */
    caller_t who;      /* that record, with the request's facts */
    int allowed;
} refresh_t;

static int run_refresh_rule(store_job_t *job, store_conn_t *conn)
{
    refresh_t *f = ((api_job_t *)job)->data;
    f->r.conn = conn;
    const char *rid = json_string_value(json_object_get(f->who.auth, "id"));
    f->allowed = record_matches(&f->r, f->coll, rid ? rid : "", f->coll->rules[RULE_AUTH], NULL, &job->err);
    return f->allowed < 0 ? -1 : 0;
}

static void refresh_rule_done(api_job_t *j, req_ctx_t *ctx)
{
    refresh_t *f = j->data;
    if (ctx->req == NULL)
        return;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    if (f->allowed != 1) {
        const char *rid = json_string_value(json_object_get(ctx->auth, "id"));
        char target[160];
        snprintf(target, sizeof(target), "%s/%s", f->coll->name, rid ? rid : "");
        api_audit(ctx, "token_refresh_refused", target, "the collection's authRule does not allow it");
        ctx_send_status(ctx, BS_ERR_FORBIDDEN,
                        "The request doesn't satisfy the collection requirements to authenticate.");
        return;
    }
    api_audit(ctx, "token_refresh", f->coll->name, NULL);
    api_send_auth(ctx, f->coll, ctx->auth, 1, 0);
}

void api_auth_refresh(req_ctx_t *ctx, char **params)
{
    const collection_t *c = auth_collection(ctx, params[0]);
    if (c == NULL)
        return;
    if (ctx->auth == NULL || ctx->who.auth_coll != c) {
        if (ctx->auth_err.code != BS_ERR_OK)
            ctx_send_error(ctx, &ctx->auth_err);
        else
            ctx_send_status(ctx, BS_ERR_UNAUTHORIZED,
                            "The request requires a valid auth token of a record of this collection.");
        return;
    }
    if (!ctx->auth_refreshable) {
        ctx_send_status(ctx, BS_ERR_FORBIDDEN,
                        "This token cannot be refreshed (an impersonation token); sign in again.");
        return;
    }
    /* The authRule decides every new token, not only the first (PocketBase checks
     * it on refresh too): otherwise an account the rule no longer admits (banned,
     * unverified) renews its session forever. Decided as the record itself, in a
     * read job like the sign-in's. */
    refresh_t *f = arena_calloc(&ctx->arena, sizeof(*f));
    if (f == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    f->coll = c;
    f->who = caller_as(&ctx->who, c, ctx->auth, 0);
    f->r = api_reader(ctx);
    f->r.who = &f->who;
    api_read(ctx, run_refresh_rule, refresh_rule_done, f);
}

typedef struct {
    const collection_t *coll;
    const char *id; /* the route's parameter, in the arena */
    int64_t duration;
    json_t *rec; /* owned, from the job */
} impersonate_t;

static int run_impersonate(store_job_t *job, store_conn_t *conn)
{
    impersonate_t *im = ((api_job_t *)job)->data;
    im->rec = record_load(conn, im->coll, "id", im->id, &job->err);
    bs_error_init(&job->err);
    return 0;
}

static void impersonate_done(api_job_t *j, req_ctx_t *ctx)
{
    impersonate_t *im = j->data;
    if (im->rec == NULL) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
        return;
    }
    char target[160];
    snprintf(target, sizeof(target), "%s/%s", im->coll->name, im->id);
    api_audit(ctx, "impersonate", target, NULL);
    /* The record is shown as a superuser sees it; the token itself is the user's. */
    api_send_auth(ctx, im->coll, im->rec, 0, im->duration);
    json_decref(im->rec);
}

void api_impersonate(req_ctx_t *ctx, char **params)
{
    if (api_require_superuser(ctx) != 0)
        return;
    const collection_t *c = auth_collection(ctx, params[0]);
    if (c == NULL)
        return;
    bs_error_t err;
    bs_error_init(&err);
    json_t *body = ctx_body(ctx, &err);
    if (body == NULL) {
        ctx_send_error(ctx, &err);
        return;
    }
    json_t *dur = json_object_get(body, "duration");
    int64_t duration = json_is_integer(dur) ? json_integer_value(dur) : 0;
    int bad = dur != NULL && (!json_is_integer(dur) || duration < 0 || duration > 31536000);
    json_decref(body); /* dur pointed into body: not used past this line */
    if (bad) {
        bs_error_field(&err, &ctx->arena, "duration", "validation_invalid", "Seconds from 0 to 31536000.");
        ctx_send_error(ctx, &err);
        return;
    }
    if (!util_valid_id(params[1], strlen(params[1]))) {
        ctx_send_status(ctx, BS_ERR_NOT_FOUND, NULL);
        return;
    }
    impersonate_t *im = arena_calloc(&ctx->arena, sizeof(*im));
    if (im == NULL) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    im->coll = c;
    im->id = params[1];
    im->duration = duration;
    api_read(ctx, run_impersonate, impersonate_done, im);
}

void api_auth_methods(req_ctx_t *ctx, char **params)
{
    const collection_t *c = auth_collection(ctx, params[0]);
    if (c == NULL)
        return;
    buf_t out;
    buf_init(&out, &ctx->arena);
    buf_printf(&out, "{\"password\":{\"enabled\":%s,\"identityFields\":[",
               c->password_auth ? "true" : "false");
    for (size_t i = 0; i < c->nidentity; i++) {
        if (i)
            buf_putc(&out, ',');
        buf_printf(&out, "\"%s\"", c->identity_fields[i]);
    }
    buf_puts(&out,
             "]},\"oauth2\":{\"enabled\":false,\"providers\":[]},\"mfa\":{\"enabled\":false,\"duration\":0},"
             "\"otp\":{\"enabled\":false,\"duration\":0}}");
    ctx_send_json(ctx, 200, out.data, out.len);
}

void api_auth_mail_flow(req_ctx_t *ctx, char **params)
{
    if (auth_collection(ctx, params[0]) == NULL)
        return;
    ctx_send_status(
        ctx, BS_ERR_NOT_IMPLEMENTED,
        "Sending mail is not configured on this server yet, so verification, password reset, email "
        "change and OTP flows are unavailable.");
}

/* POST /api/basalt/collections/{c}/revoke-tokens/{id}: logs a record out
 * everywhere by giving it a new tokenKey. The record itself or a superuser. */
typedef struct {
    const collection_t *coll;
    char id[101];
    json_t *changes; /* for realtime: the record with its new tokenKey; NULL when nobody listens */
} revoke_t;

static int run_revoke(store_job_t *job, store_conn_t *conn)
{
    revoke_t *rv = ((api_job_t *)job)->data;
    char key[51];
    record_new_token_key(key);
    buf_t sql;
    buf_init(&sql, job->arena);
    buf_puts(&sql, "UPDATE ");
    sql_ident(&sql, rv->coll->name);
    buf_puts(&sql, " SET \"tokenKey\" = ?1 WHERE \"id\" = ?2");
    bs_value_t p[2] = {bs_val_text(key, strlen(key)), bs_val_text(rv->id, strlen(rv->id))};
    int64_t n = sql.oom ? -1 : store_exec(conn, sql.data, p, 2, &job->err);
    if (n == 0)
        bs_error_set(&job->err, BS_ERR_NOT_FOUND, NULL);
    if (n == 1 && rv->changes != NULL) {
        /* Realtime connections signed in as this record learn of the new tokenKey
         * (and lose their identity) from this change, like from any other write. */
        bs_error_t lerr;
        bs_error_init(&lerr);
        json_t *rec = record_load(conn, rv->coll, "id", rv->id, &lerr);
        if (rec != NULL)
            json_array_append_new(rv->changes, json_pack("{s:s, s:s, s:o}", "action", "update",
                                                         "collectionId", rv->coll->id, "record", rec));
    }
    return n == 1 ? 0 : -1;
}

static void revoke_committed(store_job_t *job)
{
    revoke_t *rv = ((api_job_t *)job)->data;
    api_bump_for_write(((api_job_t *)job)->ctx->schema, rv->coll);
    api_changes_publish(&rv->changes);
}

static void revoke_done(api_job_t *j, req_ctx_t *ctx)
{
    json_decref(((revoke_t *)j->data)->changes); /* left only when the job failed */
    ((revoke_t *)j->data)->changes = NULL;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    char target[160];
    snprintf(target, sizeof(target), "%s/%s", ((revoke_t *)j->data)->coll->name, ((revoke_t *)j->data)->id);
    api_audit(ctx, "tokens_revoked", target, NULL);
    ctx_send_empty(ctx, 204);
}

void api_revoke_tokens(req_ctx_t *ctx, char **params)
{
    const collection_t *c = auth_collection(ctx, params[0]);
    if (c == NULL)
        return;
    const char *self = ctx->who.auth_coll == c ? json_string_value(json_object_get(ctx->auth, "id")) : NULL;
    if (!ctx->who.superuser && (self == NULL || strcmp(self, params[1]) != 0)) {
        if (ctx->auth == NULL)
            ctx_send_error(ctx, ctx->auth_err.code != BS_ERR_OK
                                    ? &ctx->auth_err
                                    : &(bs_error_t){BS_ERR_UNAUTHORIZED, "", NULL});
        else
            ctx_send_status(ctx, BS_ERR_FORBIDDEN,
                            "Only the record itself or a superuser can revoke its tokens.");
        return;
    }
    revoke_t *rv = arena_calloc(&ctx->arena, sizeof(*rv));
    if (rv == NULL || strlen(params[1]) >= sizeof(rv->id) || !util_valid_id(params[1], strlen(params[1]))) {
        ctx_send_status(ctx, rv ? BS_ERR_NOT_FOUND : BS_ERR_NOMEM, NULL);
        return;
    }
    rv->coll = c;
    memcpy(rv->id, params[1], strlen(params[1]) + 1);
    rv->changes = api_changes_new();
    api_submit(ctx, run_revoke, revoke_committed, revoke_done, rv);
}
