/* Application settings; see settings.h. */
#include "settings/settings.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *defaults; /* under lock; immutable once set */
static json_t *stored;   /* what the store holds (immutable once published) */
static json_t *effective;

/* A new object: a with b merged over it (objects key by key, the rest replaced). */
static json_t *merged(const json_t *a, const json_t *b)
{
    if (a == NULL && b == NULL)
        return json_object();
    if (!json_is_object(a) || !json_is_object(b))
        return json_deep_copy(b ? b : a);
    json_t *out = json_deep_copy(a);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)b, k, v)
    {
        json_t *have = json_object_get(out, k);
        json_object_set_new(out, k,
                            json_is_object(have) && json_is_object(v) ? merged(have, v) : json_deep_copy(v));
    }
    return out;
}

static void publish_locked(json_t *st)
{
    json_t *eff = merged(defaults, st);
    json_decref(stored);
    json_decref(effective);
    stored = st ? st : json_object();
    effective = eff;
}

void settings_set_defaults(json_t *d)
{
    pthread_mutex_lock(&lock);
    json_decref(defaults);
    defaults = d;
    publish_locked(json_incref(stored));
    pthread_mutex_unlock(&lock);
}

json_t *settings_get(void)
{
    pthread_mutex_lock(&lock);
    if (effective == NULL)
        publish_locked(NULL);
    json_t *e = json_incref(effective);
    pthread_mutex_unlock(&lock);
    return e;
}

const char *settings_str(const json_t *s, const char *section, const char *key)
{
    const char *v = json_string_value(json_object_get(json_object_get(s, section), key));
    return v ? v : "";
}

long long settings_int(const json_t *s, const char *section, const char *key)
{
    json_t *v = json_object_get(json_object_get(s, section), key);
    return json_is_integer(v) ? (long long)json_integer_value(v)
           : json_is_real(v)  ? (long long)json_real_value(v)
                              : 0;
}

int settings_bool(const json_t *s, const char *section, const char *key)
{
    return json_is_true(json_object_get(json_object_get(s, section), key));
}

static json_t *read_stored(store_conn_t *conn, bs_error_t *err)
{
    bs_value_t id = bs_val_text("settings", 8);
    store_stmt_t *st = store_query(conn, "SELECT value FROM _params WHERE id = ?1", &id, 1, err);
    if (st == NULL)
        return NULL;
    json_t *out = NULL;
    int rc = store_step(st, err);
    if (rc == 1) {
        bs_value_t v = store_col(st, 0);
        json_error_t jerr;
        out = v.type == BS_VAL_TEXT ? json_loadb(v.s, v.n, 0, &jerr) : NULL;
        if (!json_is_object(out)) {
            json_decref(out);
            out = json_object();
            LOGF(LOG_WARN, "settings", "the stored settings are not a JSON object; using the defaults");
        }
    }
    store_done(st);
    if (rc < 0)
        return NULL;
    return out ? out : json_object();
}

int settings_load(store_conn_t *conn, bs_error_t *err)
{
    json_t *st = read_stored(conn, err);
    if (st == NULL)
        return -1;
    settings_publish(st);
    return 0;
}

void settings_reload(store_conn_t *conn)
{
    bs_error_t err;
    bs_error_init(&err);
    json_t *st = read_stored(conn, &err);
    if (st == NULL)
        return;
    pthread_mutex_lock(&lock);
    int same = stored != NULL && json_equal(stored, st);
    pthread_mutex_unlock(&lock);
    if (same)
        json_decref(st);
    else
        settings_publish(st);
}

void settings_publish(json_t *st)
{
    pthread_mutex_lock(&lock);
    publish_locked(st);
    pthread_mutex_unlock(&lock);
}

int settings_store(store_conn_t *conn, const json_t *st, bs_error_t *err)
{
    char *text = json_dumps(st, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL) {
        bs_error_set(err, BS_ERR_NOMEM, NULL);
        return -1;
    }
    bs_value_t v[2] = {bs_val_text("settings", 8), bs_val_text(text, strlen(text))};
    int64_t n = store_exec(conn, "UPDATE _params SET value = ?2 WHERE id = ?1", v, 2, err);
    if (n == 0)
        n = store_exec(conn, "INSERT INTO _params (id, value) VALUES (?1, ?2)", v, 2, err);
    free(text);
    return n < 0 ? -1 : 0;
}

/* ---- validation ---- */

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* Checks section.key of s: type "s" (string up to max, no control characters), "b"
 * bool, "i" integer in [0, max]. */
static void check(const json_t *s, const char *section, const char *key, char type, long max, arena_t *a,
                  bs_error_t *err)
{
    json_t *v = json_object_get(json_object_get(s, section), key);
    char path[96];
    snprintf(path, sizeof(path), "%s.%s", section, key);
    if (v == NULL)
        return;
    if (type == 's' &&
        (!json_is_string(v) || json_string_length(v) > (size_t)max ||
         strlen(json_string_value(v)) != json_string_length(v) || has_ctl(json_string_value(v))))
        bs_error_field(err, a, arena_strdup(a, path), "validation_invalid_value",
                       "Must be text of at most %ld characters without control characters.", max);
    else if (type == 'b' && !json_is_boolean(v))
        bs_error_field(err, a, arena_strdup(a, path), "validation_invalid_value", "Must be true or false.");
    else if (type == 'i' && (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max))
        bs_error_field(err, a, arena_strdup(a, path), "validation_invalid_value",
                       "Must be a whole number from 0 to %ld.", max);
}

static int valid_host(const char *h)
{
    if (*h == '\0' || strlen(h) > 253)
        return 0;
    for (const char *p = h; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '-' || *p == ':' || *p == '_'))
            return 0;
    return 1;
}

static int valid_email(const char *e)
{
    const char *at = strchr(e, '@');
    return at && at != e && strchr(at + 1, '@') == NULL && valid_host(at + 1) && strchr(at + 1, '.') &&
           strlen(e) <= 254 && !has_ctl(e) && strpbrk(e, " <>\",;()[]\\") == NULL;
}

static void validate(const json_t *eff, arena_t *a, bs_error_t *err)
{
    static const struct {
        const char *section, *key;
        char type;
        long max;
    } rules[] = {
        {"meta", "appName", 's', 255},    {"meta", "appURL", 's', 500},
        {"meta", "senderName", 's', 255}, {"meta", "senderAddress", 's', 254},
        {"meta", "hideControls", 'b', 0}, {"smtp", "enabled", 'b', 0},
        {"smtp", "host", 's', 253},       {"smtp", "port", 'i', 65535},
        {"smtp", "username", 's', 255},   {"smtp", "password", 's', 255},
        {"smtp", "authMethod", 's', 16},  {"smtp", "tls", 'b', 0},
        {"smtp", "localName", 's', 253},  {"s3", "enabled", 'b', 0},
        {"s3", "bucket", 's', 255},       {"s3", "region", 's', 255},
        {"s3", "endpoint", 's', 500},     {"s3", "accessKey", 's', 255},
        {"s3", "secret", 's', 255},       {"s3", "forcePathStyle", 'b', 0},
    };
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        check(eff, rules[i].section, rules[i].key, rules[i].type, rules[i].max, a, err);
    if (err->code != BS_ERR_OK)
        return;
    const char *url = settings_str(eff, "meta", "appURL");
    if (url[0] && strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        bs_error_field(err, a, "meta.appURL", "validation_invalid_url",
                       "Must be an http:// or https:// URL.");
    const char *sender = settings_str(eff, "meta", "senderAddress");
    if (sender[0] && !valid_email(sender))
        bs_error_field(err, a, "meta.senderAddress", "validation_is_email", "Must be a valid email address.");
    const char *am = settings_str(eff, "smtp", "authMethod");
    if (am[0] && strcmp(am, "PLAIN") != 0 && strcmp(am, "LOGIN") != 0)
        bs_error_field(err, a, "smtp.authMethod", "validation_in_invalid", "Must be PLAIN or LOGIN.");
    const char *ln = settings_str(eff, "smtp", "localName");
    if (ln[0] && !valid_host(ln))
        bs_error_field(err, a, "smtp.localName", "validation_is_host", "Must be a host name or IP address.");
    const char *host = settings_str(eff, "smtp", "host");
    if (host[0] && !valid_host(host))
        bs_error_field(err, a, "smtp.host", "validation_is_host", "Must be a host name or IP address.");
    if (settings_bool(eff, "smtp", "enabled")) {
        if (!host[0])
            bs_error_field(err, a, "smtp.host", "validation_required",
                           "Cannot be blank when SMTP is enabled.");
        if (settings_int(eff, "smtp", "port") < 1)
            bs_error_field(err, a, "smtp.port", "validation_required",
                           "Cannot be blank when SMTP is enabled.");
    }
}

json_t *settings_merge(const json_t *patch, arena_t *a, bs_error_t *err)
{
    if (!json_is_object(patch)) {
        bs_error_set(err, BS_ERR_BAD_REQUEST, "The settings must be a JSON object.");
        return NULL;
    }
    static const char *known[] = {"meta", "smtp", "s3", "webhooks"};
    json_t *clean = json_object();
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        json_t *v = json_object_get(patch, known[i]);
        if (v == NULL)
            continue;
        if (i < 3 && !json_is_object(v))
            bs_error_field(err, a, known[i], "validation_invalid_value", "Must be an object.");
        else
            json_object_set(clean, known[i], v);
    }
    /* Other PocketBase sections (logs, backups, batch, rateLimits, trustedProxy) are
     * Basalt flags, not settings: ignored, as PocketBase ignores unknown keys. */
    pthread_mutex_lock(&lock);
    json_t *st = merged(stored, clean);
    json_t *eff = merged(defaults, st);
    pthread_mutex_unlock(&lock);
    json_decref(clean);
    if (err->code == BS_ERR_OK)
        validate(eff, a, err);
    json_decref(eff);
    if (err->code != BS_ERR_OK) {
        if (err->code == BS_ERR_VALIDATION || err->fields != NULL)
            err->code = BS_ERR_VALIDATION;
        json_decref(st);
        return NULL;
    }
    return st;
}

void settings_public(buf_t *out)
{
    json_t *e = settings_get();
    json_t *c = json_deep_copy(e);
    json_decref(e);
    /* As PocketBase: a secret that is set is left out, not shown. */
    json_object_del(json_object_get(c, "smtp"), "password");
    json_object_del(json_object_get(c, "s3"), "secret");
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(c, "webhooks"), i, w) json_object_del(w, "secret");
    char *text = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    if (text == NULL) {
        out->oom = 1;
        return;
    }
    buf_puts(out, text);
    free(text);
}

void settings_shutdown(void)
{
    pthread_mutex_lock(&lock);
    json_decref(defaults);
    json_decref(stored);
    json_decref(effective);
    defaults = stored = effective = NULL;
    pthread_mutex_unlock(&lock);
}
