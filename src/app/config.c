#include "app/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_STRING, T_INT, T_ENUM } kind_t;

static const struct setting {
    const char *name; /* flag name; the variable is BASALT_ + upper-cased name with _ for - */
    kind_t kind;
    size_t offset;
    size_t size; /* strings: buffer size */
    const char *def;
    long min, max;
    const char *choices; /* enums: "a|b" */
    const char *help;
} settings[] = {
    {"http", T_STRING, offsetof(config_t, http), 128, "127.0.0.1:8090", 0, 0, NULL,
     "Address to listen on, HOST:PORT (port 0 picks a free port)."},
    {"dir", T_STRING, offsetof(config_t, dir), 1024, "./basalt_data", 0, 0, NULL,
     "Directory of the embedded database; created if missing."},
    {"db", T_STRING, offsetof(config_t, db), 1024, "", 0, 0, NULL,
     "PostgreSQL instead of the embedded database: a postgres://user:password@host:port/dbname URL (through "
     "PgBouncer in transaction mode, or direct). Empty: SQLite in --dir."},
    {"db-listen", T_STRING, offsetof(config_t, db_listen), 1024, "", 0, 0, NULL,
     "PostgreSQL: a direct URL (not through PgBouncer) for the session that LISTENs to other instances' "
     "changes; empty: --db."},
    {"db-replicas", T_STRING, offsetof(config_t, db_replicas), 2048, "", 0, 0, NULL,
     "PostgreSQL: read replicas, comma-separated postgres:// URLs. Reads go to them; a client that has just "
     "written reads its own write (from a replica that has replayed it, or from the primary)."},
    {"db-replica-max-lag-ms", T_INT, offsetof(config_t, db_replica_max_lag_ms), 0, "5000", 10, 3600000, NULL,
     "PostgreSQL: a replica further behind the primary than this leaves the rotation until it catches up."},
    {"db-replica-wait-ms", T_INT, offsetof(config_t, db_replica_wait_ms), 0, "50", 0, 10000, NULL,
     "PostgreSQL: how long a read that must see the caller's last write waits for a replica to replay it "
     "before it goes to the primary."},
    {"db-connect-timeout-ms", T_INT, offsetof(config_t, db_connect_timeout_ms), 0, "5000", 1000, 600000, NULL,
     "PostgreSQL: time allowed for one connection attempt (libpq rounds up to whole seconds)."},
    {"db-statement-timeout-ms", T_INT, offsetof(config_t, db_statement_timeout_ms), 0, "10000", 0, 3600000,
     NULL,
     "PostgreSQL: longest a write transaction's statement may run (0 = no limit); beyond it the write gets "
     "503."},
    {"db-pool-size", T_INT, offsetof(config_t, db_pool_size), 0, "4", 1, 256, NULL,
     "PostgreSQL: read threads, each with its own connection; the workers' reads run on them, so that a "
     "slow query never holds up a worker's other connections."},
    {"db-prepared", T_INT, offsetof(config_t, db_prepared), 0, "0", 0, 1, NULL,
     "PostgreSQL: 1 prepares statements once per connection (direct connections only); 0 sends unnamed "
     "statements, which PgBouncer's transaction mode requires."},
    {"threads", T_INT, offsetof(config_t, threads), 0, "0", 0, 256, NULL,
     "Worker threads, each with its own event loop and listener; 0 = one per CPU core."},
    {"max-body", T_INT, offsetof(config_t, max_body), 0, "10485760", 1024, 1073741824, NULL,
     "Largest request body in bytes; larger bodies get 413."},
    {"max-header-bytes", T_INT, offsetof(config_t, max_header_bytes), 0, "32768", 1024, 409600, NULL,
     "Largest request line plus headers in bytes; larger requests get 431 and the connection closes."},
    {"request-timeout-ms", T_INT, offsetof(config_t, request_timeout_ms), 0, "10000", 100, 600000, NULL,
     "Time to receive a whole request (slow senders), and to keep an idle keep-alive connection."},
    {"max-connections", T_INT, offsetof(config_t, max_connections), 0, "100000", 0, 10000000, NULL,
     "Open connections in all (0 = no cap); beyond it new connections get 503 and are closed."},
    {"max-connections-per-ip", T_INT, offsetof(config_t, max_connections_per_ip), 0, "1000", 0, 10000000,
     NULL, "Open connections from one address (0 = no cap; use 0 behind a proxy, which is one address)."},
    {"max-json-depth", T_INT, offsetof(config_t, max_json_depth), 0, "64", 1, 512, NULL,
     "Deepest nesting of arrays and objects accepted in a JSON body."},
    {"shutdown-grace", T_INT, offsetof(config_t, grace_ms), 0, "10000", 0, 600000, NULL,
     "Milliseconds that in-flight requests get to finish after SIGTERM/SIGINT."},
    {"shutdown-drain-delay", T_INT, offsetof(config_t, drain_delay_ms), 0, "0", 0, 600000, NULL,
     "Milliseconds after SIGTERM/SIGINT during which the server keeps serving while readiness "
     "(/api/health?ready=1) answers 503, so that a load balancer stops sending before the listener closes "
     "(0 = close at once)."},
    {"sync", T_ENUM, offsetof(config_t, sync), 16, "normal", 0, 0, "normal|full",
     "SQLite durability: normal survives a process crash (WAL, synchronous=NORMAL); full also survives power "
     "loss."},
    {"tls-cert", T_STRING, offsetof(config_t, tls_cert), 1024, "", 0, 0, NULL,
     "PEM certificate chain; with --tls-key, serves HTTPS (HTTP/1.1)."},
    {"tls-key", T_STRING, offsetof(config_t, tls_key), 1024, "", 0, 0, NULL,
     "PEM private key for --tls-cert."},
    {"log-level", T_ENUM, offsetof(config_t, log_level), 16, "info", 0, 0, "debug|info|warn|error|off",
     "Least severe level written to the log (stderr). The access log goes to stdout."},
    {"hash-threads", T_INT, offsetof(config_t, hash_threads), 0, "2", 1, 64, NULL,
     "Threads hashing passwords; caps concurrent Argon2id work so logins cannot starve other requests."},
    {"argon2-memory-kib", T_INT, offsetof(config_t, argon2_memory_kib), 0, "19456", 19456, 4194304, NULL,
     "Argon2id memory cost in KiB (OWASP minimum: 19456)."},
    {"argon2-ops", T_INT, offsetof(config_t, argon2_ops), 0, "2", 2, 20, NULL,
     "Argon2id time cost (passes)."},
    {"max-filter-length", T_INT, offsetof(config_t, max_filter_length), 0, "3500", 16, 100000, NULL,
     "Longest accepted filter expression in characters."},
    {"writer-batch", T_INT, offsetof(config_t, writer_batch), 0, "256", 1, 100000, NULL,
     "Most writes committed together in one transaction (group commit)."},
    {"strict-fields", T_INT, offsetof(config_t, strict_fields), 0, "0", 0, 1, NULL,
     "1: refuse record bodies with keys that name no field (400); 0: ignore them, as PocketBase does."},
    {"maintenance-interval-s", T_INT, offsetof(config_t, maintenance_interval_s), 0, "3600", 1, 604800, NULL,
     "Seconds between housekeeping rounds (partitions of partitioned collections made ahead)."},
    {"batch-max-requests", T_INT, offsetof(config_t, batch_max_requests), 0, "100", 1, 10000, NULL,
     "Most requests in one POST /api/batch."},
    {"batch-timeout-ms", T_INT, offsetof(config_t, batch_timeout_ms), 0, "3000", 10, 600000, NULL,
     "Longest time a batch may run inside its transaction before it is rolled back."},
    {"rate-limit-anon", T_INT, offsetof(config_t, rl_anon), 0, "20", 0, 1000000, NULL,
     "Requests per period for a client without a token, by IP (0 = no limit)."},
    {"rate-limit-user", T_INT, offsetof(config_t, rl_user), 0, "100", 0, 1000000, NULL,
     "Requests per period for a signed-in user, by user (0 = no limit). Superusers are not limited."},
    {"rate-limit-burst", T_INT, offsetof(config_t, rl_burst), 0, "200", 0, 1000000, NULL,
     "Requests per period from one IP whatever the token, the cap over all classes (0 = no limit)."},
    {"rate-limit-auth", T_INT, offsetof(config_t, rl_auth), 0, "10", 0, 1000000, NULL,
     "Requests per period to auth endpoints (login, sign-in flows) by IP (0 = no limit)."},
    {"rate-limit-collections", T_STRING, offsetof(config_t, rl_collections), 512, "", 0, 0, NULL,
     "Per-collection limits for its record endpoints, replacing the user/anonymous limit: name=N,name2=M."},
    {"rate-limit-period-ms", T_INT, offsetof(config_t, rl_period_ms), 0, "60000", 1000, 86400000, NULL,
     "The period of every rate limit, in milliseconds."},
    {"rate-limit-capacity", T_INT, offsetof(config_t, rl_capacity), 0, "100000", 1024, 100000000, NULL,
     "Most clients tracked at once; memory stays bounded, the stalest are forgotten first."},
    {"audit-log", T_STRING, offsetof(config_t, audit_log), 1024, "auto", 0, 0, NULL,
     "Append-only JSON-lines file of security events; auto = DIR/audit.log, empty = the log (stderr)."},
    {"cache-budget-mb", T_INT, offsetof(config_t, cache_budget_mb), 0, "100", 0, 1048576, NULL,
     "Memory for the in-process cache of record views and signed-in records, in MiB (0 = off)."},
    {"cache-ttl-ms", T_INT, offsetof(config_t, cache_ttl_ms), 0, "300000", 1000, 86400000, NULL,
     "Longest life of a cache entry; writes invalidate entries at once whatever their age."},
    {"gzip-level", T_INT, offsetof(config_t, gzip_level), 0, "1", 0, 9, NULL,
     "gzip level for responses to clients that accept it (0 = off; 1 is fastest)."},
    {"gzip-min-size", T_INT, offsetof(config_t, gzip_min_size), 0, "1024", 0, 104857600, NULL,
     "Smallest response body, in bytes, that is compressed."},
    {"metrics-access", T_ENUM, offsetof(config_t, metrics_access), 16, "loopback", 0, 0,
     "loopback|token|open|off",
     "Who may read GET /metrics: loopback clients or superusers, superusers only, anyone, or nobody."},
    {"realtime-max-connections", T_INT, offsetof(config_t, rt_max_connections), 0, "100000", 1, 10000000,
     NULL, "Most realtime connections (SSE and WebSocket) the instance holds; more are refused with 503."},
    {"realtime-max-subscriptions", T_INT, offsetof(config_t, rt_max_subscriptions), 0, "10", 1, 1000, NULL,
     "Most topics one realtime connection may subscribe to."},
    {"realtime-max-topic-length", T_INT, offsetof(config_t, rt_max_topic_length), 0, "2048", 16, 65536, NULL,
     "Longest topic in bytes, ?options= included."},
    {"realtime-max-messages", T_INT, offsetof(config_t, rt_max_messages), 0, "100", 1, 1000000, NULL,
     "Messages per second a WebSocket client may send; beyond, they are refused, and at twice the rate the "
     "connection is closed."},
    {"realtime-queue-kib", T_INT, offsetof(config_t, rt_queue_kib), 0, "256", 4, 1048576, NULL,
     "Unsent bytes (KiB) one realtime connection may have queued; a slower reader is closed with a reason."},
    {"realtime-max-message-kib", T_INT, offsetof(config_t, rt_max_message_kib), 0, "64", 1, 16384, NULL,
     "Largest WebSocket message (KiB) a client may send."},
    {"realtime-resume-window-s", T_INT, offsetof(config_t, rt_resume_window_s), 0, "120", 0, 86400, NULL,
     "How long events stay replayable for clients that reconnect with their last event id."},
    {"realtime-resume-max-events", T_INT, offsetof(config_t, rt_resume_max_events), 0, "10000", 1, 100000000,
     NULL, "Most events held for resuming clients, whatever their age (bounds memory)."},
    {"realtime-idle-timeout-s", T_INT, offsetof(config_t, rt_idle_timeout_s), 0, "300", 1, 86400, NULL,
     "A realtime connection with no event and no client message for this long is closed (clients "
     "reconnect)."},
    {"realtime-ping-interval-s", T_INT, offsetof(config_t, rt_ping_interval_s), 0, "25", 1, 3600, NULL,
     "Seconds between WebSocket pings and SSE keep-alive comments on quiet connections."},
    {"trusted-proxies", T_STRING, offsetof(config_t, trusted_proxies), 512, "", 0, 0, NULL,
     "Comma-separated IPs of proxies whose X-Forwarded-For is believed for the client address."},
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

static void env_name(const struct setting *s, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "BASALT_");
    for (const char *p = s->name; *p && n + 1 < cap; p++)
        out[n++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    out[n] = '\0';
}

static int set_value(config_t *cfg, const struct setting *s, const char *value, const char *source)
{
    char *field = (char *)cfg + s->offset;
    switch (s->kind) {
    case T_STRING:
        if (strlen(value) >= s->size) {
            fprintf(stderr, "basalt: setting %s (from %s) is too long (at most %zu characters)\n", s->name,
                    source, s->size - 1);
            return -1;
        }
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case T_ENUM: {
        size_t n = strlen(value);
        const char *c = s->choices;
        while (c && *c) {
            const char *e = strchr(c, '|');
            size_t l = e ? (size_t)(e - c) : strlen(c);
            if (l == n && memcmp(c, value, n) == 0) {
                memcpy(field, value, n + 1);
                return 0;
            }
            c = e ? e + 1 : NULL;
        }
        fprintf(stderr, "basalt: setting %s (from %s) must be one of %s, not \"%s\"\n", s->name, source,
                s->choices, value);
        return -1;
    }
    case T_INT: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || v < s->min || v > s->max) {
            fprintf(stderr, "basalt: setting %s (from %s) must be an integer from %ld to %ld, not \"%s\"\n",
                    s->name, source, s->min, s->max, value);
            return -1;
        }
        if (s->offset == offsetof(config_t, max_body))
            *(long *)(void *)field = v;
        else
            *(int *)(void *)field = (int)v;
        return 0;
    }
    }
    return -1;
}

static const struct setting *find(const char *name, size_t n)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strlen(settings[i].name) == n && memcmp(settings[i].name, name, n) == 0)
            return &settings[i];
    return NULL;
}

int config_parse(config_t *cfg, int argc, char **argv, char **rest, int max_rest, int *nrest)
{
    memset(cfg, 0, sizeof(*cfg));
    *nrest = 0;
    for (size_t i = 0; i < NSETTINGS; i++)
        if (set_value(cfg, &settings[i], settings[i].def, "default") != 0)
            return -1;
    for (size_t i = 0; i < NSETTINGS; i++) {
        char env[64];
        env_name(&settings[i], env, sizeof(env));
        const char *v = getenv(env);
        if (v != NULL && set_value(cfg, &settings[i], v, env) != 0)
            return -1;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (*nrest >= max_rest) {
                fprintf(stderr, "basalt: unexpected argument \"%s\"\n", a);
                return -1;
            }
            rest[(*nrest)++] = argv[i];
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        const struct setting *s = find(name, n);
        if (s == NULL) {
            fprintf(stderr, "basalt: unknown flag --%.*s (see basalt serve --help)\n", (int)n, name);
            return -1;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (value == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "basalt: flag --%s needs a value\n", s->name);
                return -1;
            }
            value = argv[++i];
        }
        char src[80];
        snprintf(src, sizeof(src), "--%s", s->name);
        if (set_value(cfg, s, value, src) != 0)
            return -1;
    }
    if ((cfg->tls_cert[0] != '\0') != (cfg->tls_key[0] != '\0')) {
        fprintf(stderr, "basalt: settings tls-cert and tls-key must be given together\n");
        return -1;
    }
    return 0;
}

void config_print_help(FILE *out)
{
    fprintf(out,
            "Usage: basalt serve [--setting=value ...]\n\nSettings (flag, environment variable, default):\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        char env[64];
        env_name(&settings[i], env, sizeof(env));
        fprintf(out, "  --%-20s %-26s default %s\n      %s", settings[i].name, env,
                settings[i].def[0] ? settings[i].def : "(empty)", settings[i].help);
        if (settings[i].kind == T_INT)
            fprintf(out, " Range %ld..%ld.", settings[i].min, settings[i].max);
        if (settings[i].kind == T_ENUM)
            fprintf(out, " One of %s.", settings[i].choices);
        fputc('\n', out);
    }
}

void config_print_markdown(FILE *out)
{
    fprintf(out, "# Configuration reference\n\n"
                 "Generated by `basalt config-doc` from the settings table in `src/app/config.c`; "
                 "a test keeps this file equal to its output.\n\n"
                 "Each setting is a flag (`--name=value`) and an environment variable; a flag wins over the "
                 "environment, which wins over the default.\n\n"
                 "| flag | environment | default | range | description |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        char env[64];
        env_name(&settings[i], env, sizeof(env));
        fprintf(out, "| `--%s` | `%s` | `%s` | ", settings[i].name, env, settings[i].def);
        if (settings[i].kind == T_INT)
            fprintf(out, "%ld..%ld", settings[i].min, settings[i].max);
        else if (settings[i].kind == T_ENUM)
            for (const char *c = settings[i].choices; *c; c++)
                fputs(*c == '|' ? ", " : (char[2]){*c, 0}, out);
        else
            fprintf(out, "text");
        fprintf(out, " | %s |\n", settings[i].help);
    }
}
