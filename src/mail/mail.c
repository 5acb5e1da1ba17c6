/* SMTP mail through the job queue, and the flows' templates; see mail.h. */
#include "mail/mail.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/util.h"
#include "jobs/jobs.h"
#include "settings/settings.h"

int mail_valid_address(const char *s, size_t n)
{
    if (n == 0 || n > 254 || strlen(s) != n)
        return 0;
    const char *at = memchr(s, '@', n);
    if (at == NULL || at == s || at == s + n - 1 || memchr(at + 1, '@', (size_t)(s + n - at - 1)) != NULL)
        return 0;
    int dot = 0;
    for (const char *p = s; p < s + n; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch == 0x7f || strchr("<>\",;:()[]\\", ch) != NULL)
            return 0;
        if (p > at && ch == '.')
            dot = 1;
    }
    return dot && at[1] != '.' && s[n - 1] != '.';
}

/* Appends s HTML-escaped. */
static void put_html(buf_t *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            buf_puts(b, "&lt;");
            break;
        case '>':
            buf_puts(b, "&gt;");
            break;
        case '&':
            buf_puts(b, "&amp;");
            break;
        case '"':
            buf_puts(b, "&quot;");
            break;
        case '\'':
            buf_puts(b, "&#39;");
            break;
        default:
            buf_putc(b, *s);
        }
    }
}

/* {RECORD:name}: a field name of at most 64 characters of [A-Za-z0-9_]. Returns the
 * placeholder's length at tpl (0: not one) and the name's bounds. */
static size_t record_placeholder(const char *tpl, const char **name, size_t *nlen)
{
    static const char pre[] = "{RECORD:";
    if (strncmp(tpl, pre, sizeof(pre) - 1) != 0)
        return 0;
    const char *p = tpl + sizeof(pre) - 1, *q = p;
    while ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '_')
        q++;
    if (*q != '}' || q == p || q - p > 64)
        return 0;
    *name = p;
    *nlen = (size_t)(q - p);
    return (size_t)(q - tpl) + 1;
}

/* Whether a template may show field name of c: a field of c, not hidden, not the
 * password hash or the token key (a template is written by a superuser but read by
 * whoever owns the mailbox, and a record's secrets must not reach it). */
static int usable_field(const collection_t *c, const char *name, size_t n)
{
    char buf[65];
    if (n >= sizeof(buf))
        return 0;
    memcpy(buf, name, n);
    buf[n] = '\0';
    if (strcmp(buf, "password") == 0 || strcmp(buf, "tokenKey") == 0)
        return 0;
    const field_t *f = c ? collection_field(c, buf) : NULL;
    return f != NULL && !f->hidden;
}

typedef struct {
    const char *vals[6]; /* APP_NAME, APP_URL, TOKEN, OTP, TEXT, OTP_ID */
    const collection_t *coll;
    const json_t *record;
} render_ctx_t;

static void put_value(buf_t *b, const char *v, int html)
{
    if (html)
        put_html(b, v);
    else
        for (; *v; v++)
            buf_putc(b, (unsigned char)*v < 0x20 || *v == 0x7f ? ' ' : *v); /* no header injection */
}

/* Appends tpl with its placeholders replaced (escaped when html). */
static void render(buf_t *b, const char *tpl, const render_ctx_t *rc, int html)
{
    static const char *names[6] = {"{APP_NAME}", "{APP_URL}", "{TOKEN}", "{OTP}", "{TEXT}", "{OTP_ID}"};
    while (*tpl) {
        int hit = -1;
        const char *fname;
        size_t flen, plen;
        if (*tpl == '{')
            for (int i = 0; i < 6; i++)
                if (strncmp(tpl, names[i], strlen(names[i])) == 0)
                    hit = i;
        if (hit < 0 && *tpl == '{' && (plen = record_placeholder(tpl, &fname, &flen)) > 0) {
            if (rc->record != NULL && usable_field(rc->coll, fname, flen)) {
                char key[65];
                memcpy(key, fname, flen);
                key[flen] = '\0';
                const json_t *v = json_object_get(rc->record, key);
                if (json_is_string(v)) {
                    put_value(b, json_string_value(v), html);
                } else if (v != NULL && !json_is_null(v)) {
                    char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                    put_value(b, d ? d : "", html);
                    free(d);
                }
            }
            tpl += plen;
            continue;
        }
        if (hit < 0) {
            buf_putc(b, *tpl++);
            continue;
        }
        put_value(b, rc->vals[hit] ? rc->vals[hit] : "", html);
        tpl += strlen(names[hit]);
    }
}

/* The templates (after PocketBase's defaults: a greeting, the action, a link to the
 * app's confirmation page carrying the token). */
static const struct {
    const char *subject, *body;
} templates[] = {
    [MAIL_VERIFICATION] =
        {"Verify your {APP_NAME} email",
         "<p>Hello,</p><p>Thank you for joining us at {APP_NAME}.</p><p>Click on the button "
         "below to verify your email address.</p><p><a class=\"btn\" "
         "href=\"{APP_URL}/_/#/auth/confirm-verification/{TOKEN}\" target=\"_blank\" "
         "rel=\"noopener\">Verify</a></p><p>Thanks,<br/>{APP_NAME} team</p>"},
    [MAIL_PASSWORD_RESET] =
        {"Reset your {APP_NAME} password",
         "<p>Hello,</p><p>Click on the button below to reset your password.</p><p><a "
         "class=\"btn\" href=\"{APP_URL}/_/#/auth/confirm-password-reset/{TOKEN}\" "
         "target=\"_blank\" rel=\"noopener\">Reset password</a></p><p><i>If you didn't ask "
         "to reset your password, you can ignore this email.</i></p><p>Thanks,<br/>{APP_NAME} "
         "team</p>"},
    [MAIL_EMAIL_CHANGE] =
        {"Confirm your {APP_NAME} new email address",
         "<p>Hello,</p><p>Click on the button below to confirm your new email address.</p><p><a "
         "class=\"btn\" href=\"{APP_URL}/_/#/auth/confirm-email-change/{TOKEN}\" "
         "target=\"_blank\" rel=\"noopener\">Confirm new email</a></p><p><i>If you didn't ask "
         "to change your email address, you can ignore this email.</i></p><p>Thanks,<br/>"
         "{APP_NAME} team</p>"},
    [MAIL_OTP] =
        {"OTP for {APP_NAME}",
         "<p>Hello,</p><p>Your one-time password is: <strong>{OTP}</strong></p><p><i>If you didn't ask "
         "for the one-time password, you can ignore this email.</i></p><p>Thanks,<br/>{APP_NAME} "
         "team</p>"},
    [MAIL_REMINDER] =
        {"Reminder from {APP_NAME}",
         "<p>Hello,</p><p>This is a reminder: {TEXT}</p><p><a href=\"{APP_URL}\">{APP_NAME}</a></p>"},
    [MAIL_TEST] = {"Test email from {APP_NAME}",
                   "<p>Hello,</p><p>This is a test email from {APP_NAME} ({APP_URL}); the SMTP settings "
                   "work.</p><p>Code: {OTP} {TOKEN}</p>"},
    [MAIL_AUTH_ALERT] = {"Login from a new location",
                         "<p>Hello,</p><p>We noticed a login to your {APP_NAME} account from a new "
                         "location:</p><p><em>{ALERT_INFO}</em></p><p><strong>If this wasn't you, you "
                         "should immediately change your {APP_NAME} account password to revoke access "
                         "from all other locations.</strong></p><p>If this was you, you may disregard "
                         "this email.</p><p>Thanks,<br/>{APP_NAME} team</p>"},
};

/* The collection options that hold a flow's template, as the normalised object keys
 * them; nested: PocketBase nests it as {"emailTemplate": {...}} under the key. */
static const struct {
    const char *key;
    mail_kind_t kind;
    int nested;
} tpl_keys[] = {
    {"verificationTemplate", MAIL_VERIFICATION, 0},
    {"resetPasswordTemplate", MAIL_PASSWORD_RESET, 0},
    {"confirmEmailChangeTemplate", MAIL_EMAIL_CHANGE, 0},
    {"otp", MAIL_OTP, 1},
    {"authAlert", MAIL_AUTH_ALERT, 1},
};
#define NTPL (sizeof(tpl_keys) / sizeof(tpl_keys[0]))

/* Limits: a subject is one header line; a body of 64 KiB is far more than any
 * template needs and bounds what each queued mail carries. */
#define SUBJECT_MAX 998
#define BODY_MAX 65536

static const json_t *own_template(const json_t *tpls, mail_kind_t kind)
{
    for (size_t i = 0; tpls != NULL && i < NTPL; i++)
        if (tpl_keys[i].kind == kind)
            return json_object_get(tpls, tpl_keys[i].key);
    return NULL;
}

static void compose(mail_kind_t kind, const collection_t *c, const json_t *s, const char *token,
                    const char *otp, const char *otp_id, const char *text, const json_t *record,
                    buf_t *subject, buf_t *html)
{
    const char *url = settings_str(s, "meta", "appURL");
    size_t ul = strlen(url);
    char trimmed[520];
    snprintf(trimmed, sizeof(trimmed), "%.*s", (int)(ul > 0 && url[ul - 1] == '/' ? ul - 1 : ul), url);
    render_ctx_t rc = {.vals = {settings_str(s, "meta", "appName"), trimmed, token, otp, text, otp_id},
                       .coll = c,
                       .record = record};
    const json_t *own = own_template(c ? c->mail_templates : NULL, kind);
    const char *subj = own ? json_string_value(json_object_get(own, "subject")) : NULL;
    const char *body = own ? json_string_value(json_object_get(own, "body")) : NULL;
    render(subject, subj ? subj : templates[kind].subject, &rc, 0);
    render(html, body ? body : templates[kind].body, &rc, 1);
}

void mail_compose(mail_kind_t kind, const json_t *s, const char *token, const char *otp, const char *text,
                  buf_t *subject, buf_t *html)
{
    compose(kind, NULL, s, token, otp, NULL, text, NULL, subject, html);
}

void mail_compose_for(mail_kind_t kind, const collection_t *c, const json_t *s, const char *token,
                      const char *otp, const char *otp_id, const json_t *record, buf_t *subject, buf_t *html)
{
    compose(kind, c, s, token, otp, otp_id, NULL, record, subject, html);
}

/* Checks the {RECORD:x} placeholders of text against c; adds an error for the first
 * one that names no usable field. */
static void check_placeholders(const collection_t *c, const char *text, const char *path, arena_t *arena,
                               bs_error_t *err)
{
    for (const char *p = strchr(text, '{'); p != NULL; p = strchr(p + 1, '{')) {
        const char *name;
        size_t n;
        if (strncmp(p, "{RECORD:", 8) != 0)
            continue;
        if (record_placeholder(p, &name, &n) == 0 || !usable_field(c, name, n)) {
            const char *end = strchr(p, '}');
            int shown = end && end - p < 80 ? (int)(end - p + 1) : 20;
            bs_error_field(err, arena, path, "validation_invalid_placeholder",
                           "%.*s names no field a mail may show: use {RECORD:name} with a field of the "
                           "collection (not password, tokenKey or a hidden field).",
                           shown, p);
            return;
        }
    }
}

/* A subject is one header line: no line break, no other control character. */
static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* Validates one {subject, body}; returns a copy (new reference) or NULL with err. */
static json_t *parse_one(const collection_t *c, const json_t *t, const char *path, arena_t *arena,
                         bs_error_t *err)
{
    char fp[96];
    const json_t *sj = json_object_get(t, "subject"), *bj = json_object_get(t, "body");
    if (!json_is_object(t)) {
        bs_error_field(err, arena, path, "validation_invalid_template",
                       "A mail template must be an object {\"subject\": \"...\", \"body\": \"...\"}.");
        return NULL;
    }
    int bad = 0;
    snprintf(fp, sizeof(fp), "%s.subject", path);
    if (!json_is_string(sj) || json_string_length(sj) == 0) {
        bs_error_field(err, arena, fp, "validation_required", "The subject must be a non-empty string.");
        bad = 1;
    } else if (json_string_length(sj) > SUBJECT_MAX || has_control(json_string_value(sj)) ||
               strlen(json_string_value(sj)) != json_string_length(sj)) {
        bs_error_field(err, arena, fp, "validation_invalid",
                       "The subject must be one line of at most %d characters, without control "
                       "characters.",
                       SUBJECT_MAX);
        bad = 1;
    } else {
        check_placeholders(c, json_string_value(sj), fp, arena, err);
    }
    snprintf(fp, sizeof(fp), "%s.body", path);
    if (!json_is_string(bj) || json_string_length(bj) == 0) {
        bs_error_field(err, arena, fp, "validation_required", "The body must be a non-empty string.");
        bad = 1;
    } else if (json_string_length(bj) > BODY_MAX || strlen(json_string_value(bj)) != json_string_length(bj)) {
        bs_error_field(err, arena, fp, "validation_invalid", "The body must be at most %d bytes of text.",
                       BODY_MAX);
        bad = 1;
    } else {
        check_placeholders(c, json_string_value(bj), fp, arena, err);
    }
    if (bad || err->code != BS_ERR_OK)
        return NULL;
    return json_pack("{s:O, s:O}", "subject", sj, "body", bj);
}

static int is_default(size_t i, const json_t *t)
{
    const char *sj = json_string_value(json_object_get(t, "subject"));
    const char *bj = json_string_value(json_object_get(t, "body"));
    mail_kind_t k = tpl_keys[i].kind;
    return sj && bj && strcmp(sj, templates[k].subject) == 0 && strcmp(bj, templates[k].body) == 0;
}

void mail_templates_parse(const collection_t *c, const json_t *body, const json_t *base, json_t **out,
                          arena_t *arena, bs_error_t *err)
{
    json_t *res = json_object();
    for (size_t i = 0; res != NULL && i < NTPL; i++) {
        const char *key = tpl_keys[i].key;
        const json_t *given = json_object_get(body, key);
        char path[64];
        snprintf(path, sizeof(path), "%s", key);
        if (tpl_keys[i].nested && given != NULL && !json_is_null(given)) {
            if (!json_is_object(given)) {
                bs_error_field(err, arena, key, "validation_invalid", "%s must be an object.", key);
                continue;
            }
            given = json_object_get(given, "emailTemplate");
            snprintf(path, sizeof(path), "%s.emailTemplate", key);
        }
        if (given == NULL) { /* left out: keeps base's */
            json_t *b = base ? json_object_get(base, key) : NULL;
            if (b != NULL)
                json_object_set(res, key, b);
            continue;
        }
        if (json_is_null(given))
            continue; /* the default */
        json_t *t = parse_one(c, given, path, arena, err);
        if (t != NULL && !is_default(i, t))
            json_object_set(res, key, t);
        json_decref(t);
    }
    if (res == NULL)
        bs_error_set(err, BS_ERR_NOMEM, NULL);
    if (res != NULL && json_object_size(res) == 0) {
        json_decref(res);
        res = NULL;
    }
    *out = res;
}

json_t *mail_templates_from_stored(const json_t *stored)
{
    json_t *res = json_object();
    for (size_t i = 0; res != NULL && i < NTPL; i++) {
        const json_t *t = json_object_get(stored, tpl_keys[i].key);
        if (tpl_keys[i].nested)
            t = json_object_get(t, "emailTemplate");
        if (json_is_string(json_object_get(t, "subject")) && json_is_string(json_object_get(t, "body")) &&
            !is_default(i, t))
            json_object_set_new(res, tpl_keys[i].key,
                                json_pack("{s:O, s:O}", "subject", json_object_get(t, "subject"), "body",
                                          json_object_get(t, "body")));
    }
    if (res != NULL && json_object_size(res) == 0) {
        json_decref(res);
        res = NULL;
    }
    return res;
}

json_t *mail_templates_json(const json_t *tpls)
{
    json_t *o = json_object();
    for (size_t i = 0; o != NULL && i < NTPL; i++) {
        const json_t *own = tpls ? json_object_get(tpls, tpl_keys[i].key) : NULL;
        json_t *t = own ? json_incref((json_t *)own)
                        : json_pack("{s:s, s:s}", "subject", templates[tpl_keys[i].kind].subject, "body",
                                    templates[tpl_keys[i].kind].body);
        if (tpl_keys[i].nested)
            t = json_pack("{s:o}", "emailTemplate", t);
        json_object_set_new(o, tpl_keys[i].key, t);
    }
    return o;
}

int mail_enqueue(store_conn_t *conn, const char *to, const char *subject, const char *html, bs_error_t *err)
{
    json_t *p = json_pack("{s:s, s:s, s:s}", "to", to, "subject", subject, "html", html);
    if (p == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    jobs_opts_t o = {0};
    int rc = jobs_enqueue(conn, "mail.send", p, &o, err);
    json_decref(p);
    return rc;
}

/* Appends n bytes of p as standard base64, in lines of 76. */
static void put_b64(buf_t *b, const unsigned char *p, size_t n, int wrap)
{
    unsigned char out[80];
    for (size_t i = 0; i < n; i += 57) {
        size_t k = n - i < 57 ? n - i : 57;
        int len = EVP_EncodeBlock(out, p + i, (int)k);
        buf_append(b, out, (size_t)len);
        if (wrap)
            buf_puts(b, "\r\n");
    }
}

/* An RFC 2047 encoded word for a header value (one per 45 bytes of text). */
static void put_word(buf_t *b, const char *s)
{
    size_t n = strlen(s);
    if (n == 0)
        return;
    for (size_t i = 0; i < n;) {
        size_t k = n - i < 45 ? n - i : 45;
        /* Not in the middle of a UTF-8 sequence. */
        while (i + k < n && k > 1 && ((unsigned char)s[i + k] & 0xc0) == 0x80)
            k--;
        if (i)
            buf_puts(b, "\r\n ");
        buf_puts(b, "=?UTF-8?B?");
        put_b64(b, (const unsigned char *)s + i, k, 0);
        buf_puts(b, "?=");
        i += k;
    }
}

typedef struct {
    const char *data;
    size_t len, off;
} reader_t;

static size_t read_cb(char *out, size_t size, size_t nmemb, void *arg)
{
    reader_t *r = arg;
    size_t room = size * nmemb, left = r->len - r->off, n = left < room ? left : room;
    memcpy(out, r->data + r->off, n);
    r->off += n;
    return n;
}

int mail_send_now(const json_t *s, const char *to, const char *subject, const char *html, int timeout_ms,
                  char *why, size_t cap)
{
    if (!settings_bool(s, "smtp", "enabled")) {
        snprintf(why, cap, "SMTP is not enabled (settings smtp.enabled; flag --smtp-enabled)");
        return -1;
    }
    const char *host = settings_str(s, "smtp", "host"), *sender = settings_str(s, "meta", "senderAddress");
    if (!host[0] || !mail_valid_address(sender, strlen(sender)) || !mail_valid_address(to, strlen(to))) {
        snprintf(why, cap,
                 "SMTP host, sender address (meta.senderAddress) or recipient is missing or invalid");
        return -1;
    }
    const char *local = settings_str(s, "smtp", "localName");
    int tls = settings_bool(s, "smtp", "tls");
    char url[600];
    snprintf(url, sizeof(url), "%s://%s:%lld/%s", tls ? "smtps" : "smtp", host,
             settings_int(s, "smtp", "port"), local[0] ? local : "localhost");
    buf_t msg;
    buf_init(&msg, NULL);
    char date[64], mid[UTIL_ID_LEN + 1];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    util_random_id(mid);
    buf_printf(&msg, "Date: %s\r\nFrom: ", date);
    put_word(&msg, settings_str(s, "meta", "senderName"));
    buf_printf(&msg, " <%s>\r\nTo: <%s>\r\nSubject: ", sender, to);
    put_word(&msg, subject);
    buf_printf(&msg,
               "\r\nMessage-ID: <%s@%s>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=UTF-8\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\n",
               mid, local[0] ? local : "localhost");
    put_b64(&msg, (const unsigned char *)html, strlen(html), 1);
    if (msg.oom) {
        buf_free(&msg);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    CURL *c = curl_easy_init();
    if (c == NULL) {
        buf_free(&msg);
        snprintf(why, cap, "cannot start libcurl");
        return -1;
    }
    char from[300], rcpt[300];
    snprintf(from, sizeof(from), "<%s>", sender);
    snprintf(rcpt, sizeof(rcpt), "<%s>", to);
    struct curl_slist *rcpts = curl_slist_append(NULL, rcpt);
    reader_t rd = {msg.data, msg.len, 0};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpts);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(c, CURLOPT_READDATA, &rd);
    curl_easy_setopt(c, CURLOPT_INFILESIZE, (long)msg.len);
    /* smtps:// is TLS from the start; smtp:// upgrades with STARTTLS when offered
     * (PocketBase's tls=false: "leaving the server to decide"). */
    curl_easy_setopt(c, CURLOPT_USE_SSL, tls ? (long)CURLUSESSL_ALL : (long)CURLUSESSL_TRY);
    const char *user = settings_str(s, "smtp", "username");
    if (user[0]) {
        curl_easy_setopt(c, CURLOPT_USERNAME, user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, settings_str(s, "smtp", "password"));
        curl_easy_setopt(c, CURLOPT_LOGIN_OPTIONS,
                         strcmp(settings_str(s, "smtp", "authMethod"), "LOGIN") == 0 ? "AUTH=LOGIN"
                                                                                     : "AUTH=PLAIN");
    }
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 100 ? timeout_ms : 100));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms > 100 ? timeout_ms : 100));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        snprintf(why, cap, "SMTP %s:%lld: %s", host, settings_int(s, "smtp", "port"),
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
    curl_slist_free_all(rcpts);
    curl_easy_cleanup(c);
    buf_free(&msg);
    return rc == CURLE_OK ? 0 : -1;
}

/* mail.send {"to","subject","html"}: one attempt with the settings in effect now. */
static int send_handler(jobs_ctx_t *ctx)
{
    const char *to = json_string_value(json_object_get(ctx->payload, "to"));
    const char *subject = json_string_value(json_object_get(ctx->payload, "subject"));
    const char *html = json_string_value(json_object_get(ctx->payload, "html"));
    if (to == NULL || subject == NULL || html == NULL) {
        snprintf(ctx->error, sizeof(ctx->error), "the mail job lacks to, subject or html");
        return JOBS_FAIL;
    }
    json_t *s = settings_get();
    int64_t left = ctx->deadline_ms - util_now_ms();
    int rc = mail_send_now(s, to, subject, html, (int)(left > 0 ? left : 1), ctx->error, sizeof(ctx->error));
    json_decref(s);
    if (rc == 0)
        LOGF(LOG_INFO, "mail", "sent \"%s\" (job %s)", subject, ctx->id);
    return rc == 0 ? JOBS_OK : JOBS_RETRY;
}

int mail_init(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    return jobs_known("mail.send") ? 0 : jobs_register("mail.send", send_handler);
}
