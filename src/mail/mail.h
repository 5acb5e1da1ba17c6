/*
 * mail — mail over SMTP with libcurl, sent through the job queue, and the
 * templates of PocketBase's auth flows.
 *
 * A mail is queued (mail_enqueue, inside the write job that decides to send it, so
 * that it is sent exactly when that transaction commits) as a "mail.send" job; a
 * runner thread sends it with the SMTP settings in effect at that moment (settings
 * smtp.*: smtps:// when tls, else smtp:// with STARTTLS when the server offers it;
 * AUTH PLAIN or LOGIN when a username is set). A server that is down or not
 * configured fails the attempt: the job is retried with back-off and ends in the
 * dead letter, visible in /metrics and the log; nothing waits on it.
 *
 * Threads: mail_init at start-up; mail_enqueue on the writer inside a job;
 * mail_send_now on any thread that may block (runners, a test-email thread).
 */
#ifndef BASALT_MAIL_MAIL_H
#define BASALT_MAIL_MAIL_H

#include <jansson.h>

#include "base/buf.h"
#include "base/error.h"
#include "core/schema.h"
#include "store/store.h"

typedef enum {
    MAIL_VERIFICATION,
    MAIL_PASSWORD_RESET,
    MAIL_EMAIL_CHANGE,
    MAIL_OTP,
    MAIL_REMINDER,
    MAIL_TEST,
    MAIL_AUTH_ALERT
} mail_kind_t;

/* Registers the "mail.send" job handler and initialises libcurl. Start-up, once. */
int mail_init(void);

/* Fills subject and html (heap bufs the caller frees) for kind with the settings'
 * meta: {APP_NAME}, {APP_URL}, {TOKEN}, {OTP} and, for reminders, {TEXT} (the
 * reminder's description) are replaced, each HTML-escaped in the body. */
void mail_compose(mail_kind_t kind, const json_t *settings, const char *token, const char *otp,
                  const char *text, buf_t *subject, buf_t *html);

/* mail_compose for an auth collection's flow: c's own template for kind when it has
 * one (its verificationTemplate, resetPasswordTemplate, confirmEmailChangeTemplate,
 * otp.emailTemplate, authAlert.emailTemplate), else the default; besides the
 * placeholders above, {OTP_ID} and {RECORD:field} (record's value of a field of c;
 * never the password, tokenKey or a hidden field, which render empty), every value
 * HTML-escaped in the body and stripped of control characters in the subject. */
void mail_compose_for(mail_kind_t kind, const collection_t *c, const json_t *settings, const char *token,
                      const char *otp, const char *otp_id, const json_t *record, buf_t *subject, buf_t *html);

/* An auth collection's mail templates, PocketBase's options: body's
 * verificationTemplate, resetPasswordTemplate, confirmEmailChangeTemplate
 * ({subject, body}), otp.emailTemplate and authAlert.emailTemplate. A key the body
 * leaves out keeps base's template (base: the collection's current normalised ones,
 * or NULL); null resets it to the default. *out: the templates that differ from the
 * defaults, keyed by option name ("otp", "authAlert" for the nested two), or NULL
 * when none do. A bad template (not {subject, body} strings, empty, too long, a
 * subject with a line break, a {RECORD:x} that names no usable field of c) adds a
 * field error to err (arena holds its list). */
void mail_templates_parse(const collection_t *c, const json_t *body, const json_t *base, json_t **out,
                          arena_t *arena, bs_error_t *err);
/* The same from a stored collection (its JSON as written by mail_templates_json);
 * not validated again. NULL when every template is the default. */
json_t *mail_templates_from_stored(const json_t *stored);
/* The options in PocketBase's shape, the defaults filled in: {"verificationTemplate":
 * {subject, body}, "resetPasswordTemplate", "confirmEmailChangeTemplate", "otp":
 * {"emailTemplate"}, "authAlert": {"emailTemplate"}} (a new reference). */
json_t *mail_templates_json(const json_t *tpls);

/* Queues a mail to `to` inside the caller's write job. Returns 0 or -1 with err. */
int mail_enqueue(store_conn_t *conn, const char *to, const char *subject, const char *html, bs_error_t *err);

/* Sends one mail now with settings' smtp and meta, taking at most timeout_ms.
 * Returns 0, or -1 with a reason (no secret in it) in why. Blocks: never on a loop. */
int mail_send_now(const json_t *settings, const char *to, const char *subject, const char *html,
                  int timeout_ms, char *why, size_t why_cap);

/* Whether s is an acceptable email address (the shape PocketBase accepts; no
 * characters that could start a new header or SMTP command). */
int mail_valid_address(const char *s, size_t n);

#endif
