/*
 * settings — PocketBase's application settings that Basalt has (meta, smtp, s3)
 * and Basalt's webhooks, persisted in the store (`_params`, id "settings").
 *
 * What is in effect is the defaults (from flags and BASALT_* variables) with the
 * stored settings over them: a key a superuser never set follows its flag. The
 * effective settings are an immutable JSON snapshot: settings_get returns a
 * reference any thread may read and must release with json_decref. A change is
 * written in a write job and published after its commit; other instances pick it
 * up within a few seconds (settings_reload, from the job scheduler's tick).
 *
 * The s3 section is stored and validated only (as PocketBase's shape); the file
 * storage module wires it. Secrets (smtp.password, s3.secret, webhooks[].secret)
 * never leave through settings_public.
 */
#ifndef BASALT_SETTINGS_SETTINGS_H
#define BASALT_SETTINGS_SETTINGS_H

#include <jansson.h>

#include "base/buf.h"
#include "base/error.h"
#include "store/store.h"

/* Takes defaults (an object of sections); start-up, before anything reads. */
void settings_set_defaults(json_t *defaults);
/* Reads the stored settings on conn and publishes the effective ones. Returns 0 or
 * -1 with err. */
int settings_load(store_conn_t *conn, bs_error_t *err);
/* A reference to the effective settings (never NULL); the caller json_decrefs it. */
json_t *settings_get(void);
/* A string setting "section.key" of s ("" when missing); valid while s is held. */
const char *settings_str(const json_t *s, const char *section, const char *key);
long long settings_int(const json_t *s, const char *section, const char *key);
int settings_bool(const json_t *s, const char *section, const char *key);

/* The stored settings with patch merged over them (objects merged key by key,
 * anything else replaced), validated: returns the new stored object (owned) or NULL
 * with field errors in err (keys like "smtp.port"). Secrets a patch leaves out are
 * kept. Any thread. */
json_t *settings_merge(const json_t *patch, arena_t *a, bs_error_t *err);
/* Writes stored (the object settings_merge returned) on the writer's conn. */
int settings_store(store_conn_t *conn, const json_t *stored, bs_error_t *err);
/* After the commit: makes stored (taken) the settings in effect. */
void settings_publish(json_t *stored);
/* Rereads the stored settings (another instance may have changed them). */
void settings_reload(store_conn_t *conn);
/* Appends the effective settings without their secrets, as GET /api/settings
 * answers. */
void settings_public(buf_t *out);

/* Releases everything (at exit, after every reader has stopped). */
void settings_shutdown(void);

#endif
