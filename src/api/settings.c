/*
 * PocketBase's settings API: GET/PATCH /api/settings and POST
 * /api/settings/test/email, superusers only. The settings themselves (merge,
 * validation, persistence, secrets left out) are settings/settings.c's; this file
 * adds what needs the schema (webhooks name collections) and the test mail, which
 * is sent on a thread of its own and answered on the worker's loop.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "redis/redis_shared.h"
#include "base/log.h"
#include "base/util.h"
#include "mail/mail.h"
#include "settings/settings.h"

void api_settings_get(req_ctx_t *ctx, char **params)
{
    (void)params;
    if (api_require_superuser(ctx) != 0)
        return;
    buf_t out;
    buf_init(&out, &ctx->arena);
    settings_public(&out);
    if (out.oom) {
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    ctx_add_header(ctx, "cache-control", "no-store");
    ctx_send_json(ctx, 200, out.data, out.len);
}

/* Whether s is a Standard Webhooks secret: "whsec_" and the base64 of 24 to 64
 * bytes. */
static int valid_secret(const char *s)
{
    if (strncmp(s, "whsec_", 6) != 0)
        return 0;
    size_t n = strlen(s + 6);
    if (n < 32 || n > 88 || n % 4 != 0)
        return 0;
    for (const char *p = s + 6; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '+' ||
              *p == '/' || (*p == '=' && (p[1] == '\0' || (p[1] == '=' && p[2] == '\0')))))
            return 0;
    return 1;
}

/* Checks and completes the webhooks of a patch in place: each gets an id, its
 * collection's id, and its old secret when it names an existing webhook and gives
 * none. */
static void check_webhooks(req_ctx_t *ctx, json_t *list, bs_error_t *err)
{
    if (!json_is_array(list)) {
        bs_error_field(err, &ctx->arena, "webhooks", "validation_invalid_value", "Must be an array.");
        return;
    }
    if (json_array_size(list) > 100) {
        bs_error_field(err, &ctx->arena, "webhooks", "validation_too_many_values", "At most 100 webhooks.");
        return;
    }
    json_t *cur = settings_get();
    json_t *old = json_object_get(cur, "webhooks");
    size_t i;
    json_t *w;
    json_array_foreach(list, i, w)
    {
        char path[64];
#define WERR(key, code, msg)                                                                                 \
    do {                                                                                                     \
        snprintf(path, sizeof(path), "webhooks.%zu.%s", i, key);                                             \
        bs_error_field(err, &ctx->arena, arena_strdup(&ctx->arena, path), code, msg);                        \
    } while (0)
        if (!json_is_object(w)) {
            snprintf(path, sizeof(path), "webhooks.%zu", i);
            bs_error_field(err, &ctx->arena, arena_strdup(&ctx->arena, path), "validation_invalid_value",
                           "Must be an object.");
            continue;
        }
        const char *id = json_string_value(json_object_get(w, "id"));
        if (id == NULL || !util_valid_id(id, strlen(id))) {
            if (json_object_get(w, "id") != NULL) {
                WERR("id", "validation_invalid_id", "1-100 letters, digits, _ or -.");
                continue;
            }
            char nid[UTIL_ID_LEN + 1];
            util_random_id(nid);
            json_object_set_new(w, "id", json_string(nid));
            id = json_string_value(json_object_get(w, "id"));
        }
        const char *coll = json_string_value(json_object_get(w, "collection"));
        const collection_t *c = coll ? schema_find(ctx->schema, coll) : NULL;
        if (c == NULL)
            WERR("collection", "validation_missing_collection", "Must name an existing collection.");
        else
            json_object_set_new(w, "collection", json_string(c->name));
        json_t *events = json_object_get(w, "events");
        size_t k;
        json_t *ev;
        int bad = !json_is_array(events) || json_array_size(events) == 0 || json_array_size(events) > 3;
        json_array_foreach(events, k, ev)
        {
            const char *e = json_string_value(ev);
            if (e == NULL ||
                (strcmp(e, "create") != 0 && strcmp(e, "update") != 0 && strcmp(e, "delete") != 0))
                bad = 1;
        }
        if (bad)
            WERR("events", "validation_invalid_value", "A list of create, update and/or delete.");
        const char *url = json_string_value(json_object_get(w, "url"));
        if (url == NULL || strlen(url) > 2000 || strpbrk(url, " \r\n\t") != NULL ||
            (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) ||
            strlen(url) < (size_t)(url[4] == 's' ? 9 : 8))
            WERR("url", "validation_invalid_url", "Must be an http:// or https:// URL.");
        json_t *en = json_object_get(w, "enabled");
        if (en == NULL)
            json_object_set_new(w, "enabled", json_true());
        else if (!json_is_boolean(en))
            WERR("enabled", "validation_invalid_value", "Must be true or false.");
        const char *secret = json_string_value(json_object_get(w, "secret"));
        if (secret == NULL && json_object_get(w, "secret") == NULL) {
            size_t j;
            json_t *o;
            json_array_foreach(old, j, o) if (strcmp(json_string_value(json_object_get(o, "id")) ?: "", id) ==
                                              0) secret = json_string_value(json_object_get(o, "secret"));
            if (secret != NULL)
                json_object_set_new(w, "secret", json_string(secret));
        }
        if (secret == NULL || !valid_secret(secret))
            WERR("secret", "validation_invalid_secret",
                 "Must be whsec_ followed by the base64 of 24 to 64 random bytes (the receiver verifies with "
                 "it).");
#undef WERR
    }
    json_decref(cur);
}

typedef struct {
    json_t *stored; /* owned until committed publishes it */
} patch_t;

static int run_patch(store_job_t *job, store_conn_t *conn)
{
    return settings_store(conn, ((patch_t *)((api_job_t *)job)->data)->stored, &job->err);
}

static void patch_committed(store_job_t *job)
{
    patch_t *p = ((api_job_t *)job)->data;
    settings_publish(p->stored);
    p->stored = NULL;
    /* Every other instance rereads them before its next request; the answer waits
     * until that is published (ADR 0015). */
    redis_shared_definitions_changed();
}

static void patch_done(api_job_t *j, req_ctx_t *ctx)
{
    patch_t *p = j->data;
    json_decref(p->stored); /* left only when the job failed */
    p->stored = NULL;
    if (j->job.status != 0) {
        ctx_send_error(ctx, &j->job.err);
        return;
    }
    api_audit(ctx, "settings_updated", "settings", NULL);
    api_settings_get(ctx, NULL);
}

void api_settings_patch(req_ctx_t *ctx, char **params)
{
    (void)params;
    json_t *body = api_superuser_body(ctx);
    if (body == NULL)
        return;
    bs_error_t err;
    bs_error_init(&err);
    if (json_is_object(body) && json_object_get(body, "webhooks") != NULL)
        check_webhooks(ctx, json_object_get(body, "webhooks"), &err);
    if (err.code != BS_ERR_OK) {
        err.code = BS_ERR_VALIDATION;
        json_decref(body);
        ctx_send_error(ctx, &err);
        return;
    }
    json_t *st = settings_merge(body, &ctx->arena, &err);
    json_decref(body);
    if (st == NULL) {
        ctx_send_error(ctx, &err);
        return;
    }
    patch_t *p = arena_calloc(&ctx->arena, sizeof(*p));
    if (p == NULL) {
        json_decref(st);
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    p->stored = st;
    api_submit(ctx, run_patch, patch_committed, patch_done, p);
}

/* ---- the test mail ---- */

typedef struct {
    mailbox_msg_t msg; /* first: posted back to the worker */
    req_ctx_t *ctx;
    char to[256];
    mail_kind_t kind;
    int ok;
    char why[512];
} test_mail_t;

static void test_mail_done(mailbox_msg_t *msg)
{
    test_mail_t *t = (test_mail_t *)msg;
    req_ctx_t *ctx = t->ctx;
    if (ctx->req != NULL) {
        if (t->ok) {
            ctx_send_empty(ctx, 204);
        } else {
            bs_error_t err;
            bs_error_init(&err);
            bs_error_set(&err, BS_ERR_BAD_REQUEST, "Failed to send the test email: %s", t->why);
            ctx_send_error(ctx, &err);
        }
    }
    free(t);
    ctx_async_end(ctx);
}

static void *test_mail_thread(void *arg)
{
    test_mail_t *t = arg;
    json_t *s = settings_get();
    buf_t subject, html;
    buf_init(&subject, NULL);
    buf_init(&html, NULL);
    mail_compose(t->kind, s, "TEST-TOKEN", "12345678", "a test", &subject, &html);
    t->ok = !subject.oom && !html.oom &&
            mail_send_now(s, t->to, subject.data, html.data, 8000, t->why, sizeof(t->why)) == 0;
    buf_free(&subject);
    buf_free(&html);
    json_decref(s);
    mailbox_post(&t->ctx->worker->mailbox, &t->msg);
    return NULL;
}

/* POST /api/settings/test/email {"email", "template"?}: sends one mail now and says
 * whether the SMTP server took it (at most 8 s, within the shutdown grace; off the loop). */
void api_settings_test_email(req_ctx_t *ctx, char **params)
{
    (void)params;
    json_t *body = api_superuser_body(ctx);
    if (body == NULL)
        return;
    bs_error_t err;
    bs_error_init(&err);
    const char *email = json_string_value(json_object_get(body, "email"));
    const char *tpl = json_string_value(json_object_get(body, "template"));
    mail_kind_t kind = MAIL_TEST;
    if (tpl == NULL || strcmp(tpl, "test") == 0)
        kind = MAIL_TEST;
    else if (strcmp(tpl, "verification") == 0)
        kind = MAIL_VERIFICATION;
    else if (strcmp(tpl, "password-reset") == 0)
        kind = MAIL_PASSWORD_RESET;
    else if (strcmp(tpl, "email-change") == 0)
        kind = MAIL_EMAIL_CHANGE;
    else if (strcmp(tpl, "otp") == 0)
        kind = MAIL_OTP;
    else
        bs_error_field(&err, &ctx->arena, "template", "validation_in_invalid",
                       "Must be verification, password-reset, email-change or otp.");
    if (email == NULL || !mail_valid_address(email, json_string_length(json_object_get(body, "email"))))
        bs_error_field(&err, &ctx->arena, "email", "validation_is_email", "Must be a valid email address.");
    test_mail_t *t = err.code == BS_ERR_OK ? calloc(1, sizeof(*t)) : NULL;
    if (t == NULL) {
        json_decref(body);
        if (err.code == BS_ERR_OK)
            bs_error_set(&err, BS_ERR_NOMEM, NULL);
        else
            err.code = BS_ERR_VALIDATION;
        ctx_send_error(ctx, &err);
        return;
    }
    snprintf(t->to, sizeof(t->to), "%s", email);
    json_decref(body);
    t->msg.deliver = test_mail_done;
    t->ctx = ctx;
    t->kind = kind;
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    ctx_async_begin(ctx);
    if (pthread_create(&th, &attr, test_mail_thread, t) != 0) {
        pthread_attr_destroy(&attr);
        free(t);
        ctx_send_status(ctx, BS_ERR_UNAVAILABLE, NULL);
        ctx_async_end(ctx);
        return;
    }
    pthread_attr_destroy(&attr);
    api_audit(ctx, "settings_test_email", "settings", NULL);
}
