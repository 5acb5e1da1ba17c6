/*
 * The basalt command: serve, superuser management, config-doc. Wires the layers
 * together: settings -> store -> schema -> password pool -> writer -> server, and
 * tears them down in the reverse order on SIGTERM/SIGINT.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "app/config.h"
#include "app/dbcopy.h"
#include "app/maintenance.h"
#include "auth/password.h"
#include "base/audit.h"
#include "cache/cache.h"
#include "realtime/realtime.h"
#include "base/log.h"
#include "base/util.h"
#include "core/record.h"
#include "core/schema.h"
#include "http/server.h"
#include "ratelimit/ratelimit.h"

#define BASALT_VERSION "0.1.0"

static int bootstrap_run(store_job_t *job, store_conn_t *conn)
{
    return schema_bootstrap(conn, &job->err);
}

/* Opens the database in dir, creating the system tables, and publishes the schema. */
static store_t *open_store(const config_t *cfg, int readers, void (*on_external_change)(void))
{
    if (mkdir(cfg->dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "basalt: cannot create the data directory %s: %s\n", cfg->dir, strerror(errno));
        return NULL;
    }
    char path[1100];
    snprintf(path, sizeof(path), "%s/data.db", cfg->dir);
    if (cfg->db_replicas[0] != '\0' && cfg->db[0] == '\0') {
        fprintf(stderr, "basalt: setting db-replicas (--db-replicas) needs --db (PostgreSQL)\n");
        return NULL;
    }
    if (cfg->db[0] != '\0' && !store_is_url(cfg->db)) {
        fprintf(stderr, "basalt: setting db (--db / BASALT_DB) must be a postgres:// or postgresql:// URL\n");
        return NULL;
    }
    store_config_t sc = {.path = cfg->db[0] ? cfg->db : path,
                         .connect_timeout_ms = cfg->db_connect_timeout_ms,
                         .statement_timeout_ms = cfg->db_statement_timeout_ms,
                         .prepared_statements = cfg->db_prepared,
                         .pool_size = cfg->db_pool_size,
                         .replicas = cfg->db_replicas,
                         .replica_max_lag_ms = cfg->db_replica_max_lag_ms,
                         .replica_wait_ms = cfg->db_replica_wait_ms,
                         .listen_url = cfg->db_listen,
                         .readers = readers,
                         .synchronous_full = strcmp(cfg->sync, "full") == 0,
                         .max_batch = cfg->writer_batch,
                         .busy_timeout_ms = 5000,
                         .on_external_change = on_external_change};
    bs_error_t err;
    bs_error_init(&err);
    store_t *s = store_open(&sc, &err);
    if (s == NULL) {
        fprintf(stderr, "basalt: %s%s\n", err.message, cfg->db[0] ? " (setting db: --db / BASALT_DB)" : "");
        return NULL;
    }
    arena_t a;
    arena_init(&a, 1024);
    store_job_t job = {.run = bootstrap_run, .arena = &a};
    if (store_write_sync(s, &job) != 0) {
        fprintf(stderr, "basalt: cannot prepare the database: %s\n", job.err.message);
        arena_free(&a);
        store_close(s);
        return NULL;
    }
    arena_free(&a);
    schema_t *schema = schema_load(store_reader(s, 0), &err);
    if (schema == NULL) {
        fprintf(stderr, "basalt: cannot load the collections: %s\n", err.message);
        store_close(s);
        return NULL;
    }
    schema_publish(schema);
    return s;
}

static int serve(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            config_print_help(stdout);
            return 0;
        }
    config_t cfg;
    char *rest[1];
    int nrest;
    if (config_parse(&cfg, argc, argv, rest, 0, &nrest) != 0)
        return 2;
    log_level_t level;
    log_parse_level(cfg.log_level, &level);
    log_set_level(level);
    http_settings_t hs = {0};
    const char *colon = strrchr(cfg.http, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (colon == NULL || end == colon + 1 || *end != '\0' || port < 0 || port > 65535 ||
        (size_t)(colon - cfg.http) >= sizeof(hs.host)) {
        fprintf(stderr, "basalt: setting http must be HOST:PORT, not \"%s\"\n", cfg.http);
        return 2;
    }
    memcpy(hs.host, cfg.http, (size_t)(colon - cfg.http));
    hs.port = (int)port;
    hs.threads = cfg.threads > 0 ? cfg.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (hs.threads < 1)
        hs.threads = 1;
    hs.max_body = (size_t)cfg.max_body;
    hs.max_json_depth = (size_t)cfg.max_json_depth;
    hs.grace_ms = cfg.grace_ms;
    hs.tls_cert = cfg.tls_cert;
    hs.tls_key = cfg.tls_key;
    hs.max_filter_length = (size_t)cfg.max_filter_length;
    hs.batch_max_requests = cfg.batch_max_requests;
    hs.batch_timeout_ms = cfg.batch_timeout_ms;
    hs.rl_anon = cfg.rl_anon;
    hs.rl_user = cfg.rl_user;
    hs.rl_burst = cfg.rl_burst;
    hs.rl_auth = cfg.rl_auth;
    hs.rl_period_ms = cfg.rl_period_ms;
    memcpy(hs.trusted_proxies, cfg.trusted_proxies, sizeof(hs.trusted_proxies));
    memcpy(hs.rl_collections, cfg.rl_collections, sizeof(hs.rl_collections));
    /* Validate "name=N,..." now, naming the setting. */
    for (const char *p = cfg.rl_collections; *p;) {
        const char *eq = strchr(p, '='), *comma = strchr(p, ',');
        char *num_end = NULL;
        long v = eq ? strtol(eq + 1, &num_end, 10) : -1;
        if (eq == NULL || eq == p || (comma && comma < eq) || num_end == eq + 1 || v < 0 ||
            (*num_end != ',' && *num_end != '\0')) {
            fprintf(stderr, "basalt: setting rate-limit-collections must look like posts=300,users=20\n");
            return 2;
        }
        p = *num_end == ',' ? num_end + 1 : num_end;
    }
    if (cfg.rl_anon || cfg.rl_user || cfg.rl_burst || cfg.rl_auth || cfg.rl_collections[0]) {
        hs.ratelimit = ratelimit_new((size_t)cfg.rl_capacity);
        if (hs.ratelimit == NULL) {
            fprintf(stderr, "basalt: out of memory for the rate limiter\n");
            return 1;
        }
    }
    hs.max_header_bytes = (size_t)cfg.max_header_bytes;
    hs.request_timeout_ms = cfg.request_timeout_ms;
    hs.max_connections = (size_t)cfg.max_connections;
    hs.max_connections_per_ip = (size_t)cfg.max_connections_per_ip;
    hs.gzip_level = cfg.gzip_level;
    hs.gzip_min_size = (size_t)cfg.gzip_min_size;
    hs.metrics_access = !strcmp(cfg.metrics_access, "off")     ? 0
                        : !strcmp(cfg.metrics_access, "token") ? 2
                        : !strcmp(cfg.metrics_access, "open")  ? 3
                                                               : 1;
    if (cfg.cache_budget_mb > 0) {
        hs.cache = cache_new((size_t)cfg.cache_budget_mb << 20, cfg.cache_ttl_ms);
        if (hs.cache == NULL) {
            fprintf(stderr, "basalt: out of memory for the cache\n");
            return 1;
        }
    }
    hs.dispatch = api_dispatch;
    hs.worker_hook = api_worker_event;
    hs.worker_busy = realtime_worker_clients;
    api_init();
    record_set_strict_fields(cfg.strict_fields);
    realtime_config_t rc = {.max_connections = cfg.rt_max_connections,
                            .max_subscriptions = cfg.rt_max_subscriptions,
                            .max_topic_length = cfg.rt_max_topic_length,
                            .max_messages_per_s = cfg.rt_max_messages,
                            .queue_bytes = (size_t)cfg.rt_queue_kib * 1024,
                            .max_message = (size_t)cfg.rt_max_message_kib * 1024,
                            .resume_window_ms = cfg.rt_resume_window_s * 1000,
                            .resume_max_events = cfg.rt_resume_max_events,
                            .idle_timeout_ms = cfg.rt_idle_timeout_s * 1000,
                            .ping_interval_ms = cfg.rt_ping_interval_s * 1000,
                            .reconnect_hint_ms = 2000};
    if (realtime_init(&rc) != 0) {
        fprintf(stderr, "basalt: out of memory for the realtime log\n");
        return 1;
    }
    realtime_set_authenticator(api_check_token);

    /* Every connection is a descriptor: allow as many as the hard limit. */
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }

    /* Signals are taken by sigwait in this thread only. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    store_t *store = open_store(&cfg, hs.threads, cache_gen_bump_external);
    if (store == NULL)
        return 1;
    char audit_path[1100];
    if (strcmp(cfg.audit_log, "auto") == 0)
        snprintf(audit_path, sizeof(audit_path), "%s/audit.log", cfg.dir);
    else
        snprintf(audit_path, sizeof(audit_path), "%s", cfg.audit_log);
    if (audit_open(audit_path) != 0) {
        fprintf(stderr, "basalt: cannot open the audit log %s: %s\n", audit_path, strerror(errno));
        store_close(store);
        return 1;
    }
    hs.store = store;
    bs_error_t err;
    bs_error_init(&err);
    if (password_start(cfg.hash_threads, (unsigned long long)cfg.argon2_ops,
                       (size_t)cfg.argon2_memory_kib * 1024) != 0 ||
        store_start_writer(store, &err) != 0) {
        fprintf(stderr, "basalt: cannot start the worker pools\n");
        return 1;
    }
    if (server_start(&hs) != 0) {
        store_close(store);
        return 1;
    }
    if (maintenance_start(store, cfg.maintenance_interval_s) != 0)
        LOGF(LOG_WARN, "app", "the maintenance thread did not start: partitions are made only at start-up");
    LOGF(LOG_INFO, "app", "Basalt %s serving http%s://%s:%d with %d threads, data in %s", BASALT_VERSION,
         cfg.tls_cert[0] ? "s" : "", hs.host, server_port(), hs.threads, cfg.dir);
    fprintf(stderr, "Basalt %s listening on http%s://%s:%d\n", BASALT_VERSION, cfg.tls_cert[0] ? "s" : "",
            hs.host, server_port());
    int sig = 0;
    sigwait(&sigs, &sig);
    if (cfg.drain_delay_ms > 0) {
        /* Readiness fails first while everything is still served, so that the load
         * balancer's checks take the instance out before the listener closes; a second
         * signal ends the wait. This is the main thread: no loop waits on it. */
        LOGF(LOG_INFO, "app", "received %s: readiness fails for %d ms before draining",
             sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg.drain_delay_ms);
        server_set_draining();
        struct timespec ts = {.tv_sec = cfg.drain_delay_ms / 1000,
                              .tv_nsec = (long)(cfg.drain_delay_ms % 1000) * 1000000L};
        sigtimedwait(&sigs, NULL, &ts);
    }
    LOGF(LOG_INFO, "app", "received %s: draining for up to %d ms", sig == SIGTERM ? "SIGTERM" : "SIGINT",
         cfg.grace_ms);
    server_stop();
    maintenance_stop();
    store_stop_writer(store);
    password_stop();
    store_close(store);
    schema_publish(NULL);
    realtime_shutdown();
    ratelimit_free(hs.ratelimit);
    cache_free(hs.cache);
    audit_close();
    LOGF(LOG_INFO, "app", "stopped cleanly");
    return 0;
}

/* ---- superuser management ---- */

typedef struct {
    store_job_t job;
    const char *email;
    const char *hash;
    int remove;
    int created;
} su_job_t;

static int su_run(store_job_t *job, store_conn_t *conn)
{
    su_job_t *j = (su_job_t *)job;
    schema_t *s = schema_load(conn, &job->err);
    if (s == NULL)
        return -1;
    const collection_t *c = schema_find(s, "_superusers");
    json_t *existing = record_load(conn, c, "email", j->email, &job->err);
    if (existing == NULL && job->err.code != BS_ERR_NOT_FOUND) {
        schema_free(s);
        return -1;
    }
    bs_error_init(&job->err);
    json_t *body = json_pack("{s:s}", "email", j->email);
    record_write_t w = {
        .schema = s, .coll = c, .who = &caller_system, .body = body, .password_hash = j->hash};
    int rc;
    if (existing != NULL) {
        snprintf(w.id, sizeof(w.id), "%s", json_string_value(json_object_get(existing, "id")));
        rc = j->remove ? record_delete(conn, &w, job->arena, &job->err)
                       : record_update(conn, &w, job->arena, &job->err);
    } else if (j->remove) {
        bs_error_set(&job->err, BS_ERR_NOT_FOUND, "There is no superuser with the email %s.", j->email);
        rc = -1;
    } else {
        rc = record_create(conn, &w, job->arena, &job->err);
        j->created = 1;
    }
    json_decref(existing);
    json_decref(body);
    schema_free(s);
    return rc;
}

static void print_field_errors(const bs_error_t *err)
{
    fprintf(stderr, "basalt: %s\n", err->message);
    for (const bs_field_error_t *f = err->fields; f; f = f->next)
        fprintf(stderr, "  %s: %s\n", f->field, f->message);
}

static int superuser(int argc, char **argv)
{
    config_t cfg;
    char *rest[3];
    int nrest;
    if (config_parse(&cfg, argc, argv, rest, 3, &nrest) != 0)
        return 2;
    const char *verb = nrest > 0 ? rest[0] : "";
    int upsert = strcmp(verb, "upsert") == 0, create = strcmp(verb, "create") == 0,
        del = strcmp(verb, "delete") == 0, update = strcmp(verb, "update") == 0;
    if (!((upsert || create || update) && nrest == 3) && !(del && nrest == 2)) {
        fprintf(stderr, "Usage: basalt superuser upsert|create|update EMAIL PASSWORD [--dir=DIR]\n"
                        "       basalt superuser delete EMAIL [--dir=DIR]\n");
        return 2;
    }
    if (!del && strlen(rest[2]) < 8) {
        fprintf(stderr, "basalt: the password must be at least 8 characters\n");
        return 2;
    }
    if (password_start(0, (unsigned long long)cfg.argon2_ops, (size_t)cfg.argon2_memory_kib * 1024) != 0)
        return 1;
    store_t *store = open_store(&cfg, 1, NULL);
    if (store == NULL)
        return 1;
    char hash[crypto_pwhash_STRBYTES] = "";
    if (!del && password_hash_now(rest[2], hash) != 0) {
        fprintf(stderr, "basalt: out of memory while hashing the password\n");
        store_close(store);
        return 1;
    }
    /* create refuses an existing email and update a missing one; upsert does either. */
    schema_t *s = schema_acquire();
    bs_error_t err;
    bs_error_init(&err);
    json_t *existing =
        record_load(store_reader(store, 0), schema_find(s, "_superusers"), "email", rest[1], &err);
    schema_release(s);
    if ((create && existing) || (update && !existing)) {
        fprintf(stderr, "basalt: %s\n",
                create ? "a superuser with this email already exists"
                       : "there is no superuser with this email");
        json_decref(existing);
        store_close(store);
        return 1;
    }
    json_decref(existing);
    arena_t a;
    arena_init(&a, 1024);
    su_job_t job = {
        .job = {.run = su_run, .arena = &a}, .email = rest[1], .hash = del ? NULL : hash, .remove = del};
    int rc = store_write_sync(store, &job.job);
    if (rc != 0)
        print_field_errors(&job.job.err);
    else
        printf("%s superuser %s\n", del ? "Deleted" : job.created ? "Created" : "Updated", rest[1]);
    arena_free(&a);
    store_close(store);
    schema_publish(NULL);
    return rc == 0 ? 0 : 1;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "Basalt %s — a scalable realtime backend speaking PocketBase's API\n\n"
        "Usage:\n"
        "  basalt serve [--http=127.0.0.1:8090] [--dir=./basalt_data] [...]   start the server (--help lists "
        "every setting)\n"
        "  basalt superuser upsert|create|update EMAIL PASSWORD [--dir=DIR]\n"
        "  basalt superuser delete EMAIL [--dir=DIR]\n"
        "  basalt db copy --from=DIR|URL --to=URL|DIR [--force]                copy a deployment to or from "
        "PostgreSQL (--help)\n"
        "  basalt config-doc                                                    print the settings reference "
        "(Markdown)\n"
        "  basalt version\n",
        BASALT_VERSION);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return serve(argc - 2, argv + 2);
    if (strcmp(cmd, "superuser") == 0)
        return superuser(argc - 2, argv + 2);
    if (strcmp(cmd, "db") == 0)
        return dbcopy_command(argc - 2, argv + 2);
    if (strcmp(cmd, "config-doc") == 0) {
        config_print_markdown(stdout);
        return 0;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("basalt %s\n", BASALT_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "basalt: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}
