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
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/api.h"
#include "api/logs.h"
#include "api/positions.h"
#include "app/config.h"
#include "app/dbcopy.h"
#include "app/files_gc.h"
#include "app/maintenance.h"
#include "app/migrate.h"
#include "app/upgrade.h"
#include "app/usercli.h"
#include "backup/archive.h"
#include "backup/backup.h"
#include "backup/pgverify.h"
#include "auth/password.h"
#include "base/audit.h"
#include "cache/cache.h"
#include "realtime/realtime.h"
#include "base/log.h"
#include "base/util.h"
#include "core/migration.h"
#include "core/record.h"
#include "core/schema.h"
#include "files/filepool.h"
#include "files/thumb.h"
#include "http/server.h"
#include "http/static.h"
#include "jobs/jobs.h"
#include "mail/mail.h"
#include "ratelimit/ratelimit.h"
#include "settings/settings.h"
#include "redis/redis_shared.h"

#define BASALT_VERSION "0.1.0"

/* The command line and the binary's path as started, for an upgrade that runs the
 * same binary again (its path, so a file replaced there is the one started) and for
 * executing the same command again after a restore through the backups API. */
static char **saved_argv;
static char self_path[PATH_MAX];

static void remember_self(char **argv)
{
    saved_argv = argv;
    if (strchr(argv[0], '/') == NULL || realpath(argv[0], self_path) == NULL) {
        ssize_t n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
        self_path[n > 0 ? n : 0] = '\0';
    }
}

/* Hands the listening sockets to a new process (app/upgrade.h). Returns its pid with
 * the control channel in *ctl once it is ready, or -1 (the caller keeps serving). */
static pid_t start_upgrade(const config_t *cfg, int *ctl)
{
    const char *bin = cfg->upgrade_binary[0] ? cfg->upgrade_binary : self_path;
    int fds[UPGRADE_MAX_FDS];
    int n = server_listen_fds(fds, UPGRADE_MAX_FDS);
    if (bin[0] == '\0' || access(bin, X_OK) != 0) {
        LOGF(LOG_ERROR, "upgrade", "cannot run the new binary \"%s\": %s; still serving", bin,
             strerror(errno));
        return -1;
    }
    LOGF(LOG_INFO, "upgrade", "starting %s with %d listening sockets", bin, n);
    pid_t pid = upgrade_spawn(bin, saved_argv, fds, n, ctl);
    if (pid < 0)
        return -1;
    if (upgrade_wait_line(*ctl, "ready\n", cfg->upgrade_timeout_ms) == 0) {
        LOGF(LOG_INFO, "upgrade", "process %d is ready: this one (%d) stops accepting and drains", (int)pid,
             (int)getpid());
        return pid;
    }
    LOGF(LOG_ERROR, "upgrade", "process %d did not become ready within %d ms (see its log); still serving",
         (int)pid, cfg->upgrade_timeout_ms);
    close(*ctl);
    /* It may already accept: SIGTERM lets it drain what it took. */
    kill(pid, SIGTERM);
    for (int i = 0; i < 3000 && waitpid(pid, NULL, WNOHANG) == 0; i++)
        usleep(10000);
    if (waitpid(pid, NULL, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

static int bootstrap_run(store_job_t *job, store_conn_t *conn)
{
    if (schema_bootstrap(conn, &job->err) != 0 || jobs_bootstrap(conn, &job->err) != 0 ||
        migration_bootstrap(conn, &job->err) != 0 || logs_bootstrap(conn, &job->err) != 0)
        return -1;
    return settings_load(conn, &job->err);
}

/* The settings' defaults, from the flags (settings.h: stored settings win). */
static void settings_defaults(const config_t *cfg)
{
    settings_set_defaults(json_pack(
        "{s:{s:s, s:s, s:s, s:s, s:b}, s:{s:b, s:s, s:i, s:s, s:s, s:s, s:b, s:s}, s:{s:b, s:s, s:s, s:s, "
        "s:s, "
        "s:s, s:b}, s:[]}",
        "meta", "appName", cfg->app_name, "appURL", cfg->app_url, "senderName", cfg->mail_sender_name,
        "senderAddress", cfg->mail_sender_address, "hideControls", 0, "smtp", "enabled", cfg->smtp_enabled,
        "host", cfg->smtp_host, "port", cfg->smtp_port, "username", cfg->smtp_username, "password",
        cfg->smtp_password, "authMethod", cfg->smtp_auth_method, "tls", cfg->smtp_tls, "localName",
        cfg->smtp_local_name, "s3", "enabled", 0, "bucket", "", "region", "", "endpoint", "", "accessKey", "",
        "secret", "", "forcePathStyle", 0, "webhooks"));
}

/* Opens the database in dir, creating the system tables, and publishes the schema. */
static void on_schema_change(void);

static store_t *open_store(const config_t *cfg, int readers, void (*on_external_change)(void), backup_t *bk)
{
    if (mkdir(cfg->dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "basalt: cannot create the data directory %s: %s\n", cfg->dir, strerror(errno));
        return NULL;
    }
    char path[1100];
    snprintf(path, sizeof(path), "%s/data.db", cfg->dir);
    logs_set_dir(cfg->dir); /* logs.db beside data.db (SQLite) */
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
                         .ddl_timeout_ms = cfg->db_ddl_timeout_ms,
                         .prepared_statements = cfg->db_prepared,
                         .pool_size = cfg->db_pool_size,
                         .replicas = cfg->db_replicas,
                         .replica_max_lag_ms = cfg->db_replica_max_lag_ms,
                         .replica_wait_ms = cfg->db_replica_wait_ms,
                         .listen_url = cfg->db_listen,
                         .writer_url = cfg->db_writer,
                         .readers = readers,
                         .synchronous_full = strcmp(cfg->sync, "full") == 0,
                         .max_batch = cfg->writer_batch,
                         .busy_timeout_ms = 5000,
                         .on_external_change = on_external_change,
                         /* The server's, not the command line's (which serves no requests). */
                         .on_schema_change = on_external_change != NULL ? on_schema_change : NULL};
    if (bk != NULL)
        backup_store_hooks(bk, &sc);
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

/* Every worker's life: Redis's connections first (so a request never finds them
 * missing), then the API's state. */
static void worker_event(worker_t *w, int event)
{
    if (event != SERVER_WORKER_END)
        redis_worker_event(w, event);
    api_worker_event(w, event);
    if (event == SERVER_WORKER_END)
        redis_worker_event(w, event);
}

/* The dashboard's folder for --admin-dir=auto: web/admin beside the binary (where
 * `make web` installs it, build/web/admin), else ../share/basalt/admin. */
static int admin_dir_auto(char *out, size_t cap)
{
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    const char *tries[] = {"%s/web/admin", "%s/../share/basalt/admin"};
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        snprintf(out, cap, tries[i], exe);
        char idx[1200];
        snprintf(idx, sizeof(idx), "%s/index.html", out);
        if (access(idx, R_OK) == 0)
            return 0;
    }
    return -1;
}

static const char admin_missing_html[] =
    "<!doctype html><meta charset=utf-8><title>Basalt</title><h1>The dashboard is not built</h1>"
    "<p>Run <code>make web</code> (or <code>make build</code>, which includes it) in Basalt's source folder, "
    "or start Basalt with <code>--admin-dir=FOLDER</code> naming a built dashboard.</p>";

/* The dashboard's answers may not be framed, and load nothing from elsewhere. */
static const char admin_headers[] =
    "content-security-policy: default-src 'self'; img-src 'self' data: blob:; style-src 'self' "
    "'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'\n"
    "x-frame-options: DENY\n"
    "referrer-policy: same-origin\n";

/* Mounts the dashboard and the public folder. Returns 0, or -1 after a message. */
static int mount_static(const config_t *cfg)
{
    static_opts_t o = {.max_file_bytes = (size_t)cfg->static_max_file_mb << 20,
                       .max_total_bytes = (size_t)cfg->static_cache_mb << 20,
                       .refresh_ms = 2000};
    char err[1200], dir[1024];
    if (cfg->admin_dir[0] != '\0') {
        int found = 1;
        if (strcmp(cfg->admin_dir, "auto") == 0)
            found = admin_dir_auto(dir, sizeof(dir)) == 0;
        else
            snprintf(dir, sizeof(dir), "%s", cfg->admin_dir);
        static_site_t *site = NULL;
        if (found) {
            static_opts_t ao = o;
            ao.extra_headers = admin_headers;
            ao.spa = 1;
            site = static_open(dir, &ao, err, sizeof(err));
            if (site == NULL && strcmp(cfg->admin_dir, "auto") != 0) {
                fprintf(stderr, "basalt: setting admin-dir (--admin-dir): %s\n", err);
                return -1;
            }
        }
        if (site == NULL)
            LOGF(LOG_WARN, "app", "the dashboard is not built (run make web): /_/ explains");
        static_mount("/_/", site, admin_missing_html);
    }
    if (cfg->public_dir[0] != '\0') {
        o.spa = cfg->public_spa;
        static_site_t *site = static_open(cfg->public_dir, &o, err, sizeof(err));
        if (site == NULL) {
            fprintf(stderr, "basalt: setting public-dir (--public-dir): %s\n", err);
            return -1;
        }
        LOGF(LOG_INFO, "app", "serving %zu files of %s at /", static_file_count(site), cfg->public_dir);
        static_mount("/", site, NULL);
    }
    return 0;
}

/* Superusers in the database (-1 unknown): start-up says how to make the first. */
static long superuser_count(store_t *store)
{
    bs_error_t err;
    bs_error_init(&err);
    store_stmt_t *st =
        store_query(store_reader(store, 0), "SELECT count(*) FROM \"_superusers\"", NULL, 0, &err);
    if (st == NULL)
        return -1;
    long n = -1;
    if (store_step(st, &err) == 1)
        n = (long)store_col(st, 0).i;
    store_done(st);
    return n;
}

/* The file storage: S3 when a bucket is set, else the local folder. Returns it
 * owned, or NULL after a message. */
static storage_t *open_storage(const config_t *cfg)
{
    bs_error_t err;
    bs_error_init(&err);
    storage_t *st = NULL;
    if (cfg->s3_bucket[0]) {
        char endpoint[600];
        if (cfg->s3_endpoint[0])
            snprintf(endpoint, sizeof(endpoint), "%s", cfg->s3_endpoint);
        else
            snprintf(endpoint, sizeof(endpoint), "https://s3.%s.amazonaws.com", cfg->s3_region);
        storage_s3_config_t sc = {.endpoint = endpoint,
                                  .bucket = cfg->s3_bucket,
                                  .region = cfg->s3_region,
                                  .access_key = cfg->s3_access_key,
                                  .secret = cfg->s3_secret,
                                  .force_path_style = cfg->s3_force_path_style,
                                  .connect_timeout_ms = cfg->s3_timeout_ms < 5000 ? cfg->s3_timeout_ms : 5000,
                                  .timeout_ms = cfg->s3_timeout_ms};
        st = storage_s3_open(&sc, &err);
    } else {
        char dir[1100];
        if (cfg->storage_dir[0])
            snprintf(dir, sizeof(dir), "%s", cfg->storage_dir);
        else
            snprintf(dir, sizeof(dir), "%s/storage", cfg->dir);
        st = storage_local_open(dir, &err);
    }
    if (st == NULL)
        fprintf(stderr, "basalt: cannot open the file storage: %s\n", err.message);
    return st;
}

/* The file storage, libvips and the file pool. Returns 0, or -1 after a message. */
static int start_files(const config_t *cfg, const char *argv0)
{
    storage_t *st = open_storage(cfg);
    if (st == NULL)
        return -1;
    if (thumb_init(argv0) != 0) {
        fprintf(stderr, "basalt: cannot start libvips for thumbnails\n");
        storage_close(st);
        return -1;
    }
    files_settings_t fs = {.storage = st,
                           .threads = cfg->file_threads,
                           .thumb_max_pixels = cfg->thumb_max_pixels,
                           .max_queue = 10000,
                           .file_token_seconds = cfg->file_token_seconds};
    if (filepool_start(&fs) != 0) {
        fprintf(stderr, "basalt: cannot start the file threads\n");
        return -1;
    }
    LOGF(LOG_INFO, "files", "file storage: %s", st->kind);
    return 0;
}

/* The writer thread hands the outbox's events to realtime (its own after their
 * commit, other instances' as it reads them): each event's collection loses its cached
 * answers first, so that a client who reloads on hearing of the change never gets the
 * answer from before it. The committed hook's bump (api_bump_written) and the
 * listener's (on_external_change) may run a moment later, on a thread that was
 * preempted in between. The start-up history is no change to hear of. */
static void outbox_sink(json_t *changes, int history)
{
    if (!history) {
        size_t i;
        json_t *ch;
        json_array_foreach(changes, i, ch)
        {
            const char *cid = json_string_value(json_object_get(ch, "collectionId"));
            if (cid != NULL)
                cache_gen_bump_local(cid);
        }
    }
    realtime_outbox_sink(changes, history);
}

/* Another process wrote to the database: cached answers may be stale, and its
 * collections may have changed (app/maintenance.h). The store's thread; atomics. */
static void on_external_change(void)
{
    cache_gen_bump_external();
    maintenance_external_change();
}

/* Another instance changed the collections: the next request reloads them before it
 * runs (api/common.c), and the maintenance thread does at its next tick. */
static void on_schema_change(void)
{
    schema_remote_changed();
    maintenance_external_change();
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
    redis_url_t ru;
    char why[256];
    if (cfg.redis[0] != '\0' && redis_url_parse(cfg.redis, &ru, why, sizeof(why)) != 0) {
        fprintf(stderr, "basalt: setting redis (--redis / BASALT_REDIS) %s\n", why);
        return 2;
    }
    memcpy(hs.host, cfg.http, (size_t)(colon - cfg.http));
    hs.port = (int)port;
    hs.threads = cfg.threads > 0 ? cfg.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (hs.threads < 1)
        hs.threads = 1;
    /* Started by an upgrade: the old process's listening sockets, one per worker (at
     * least as many workers as sockets: one left without a worker would hold
     * connections nobody accepts). */
    static int inherited[UPGRADE_MAX_FDS];
    int ninherited = upgrade_inherited_fds(inherited, UPGRADE_MAX_FDS);
    if (ninherited < 0)
        return 2;
    int upgrade_ctl = upgrade_control_fd();
    if (hs.threads < ninherited)
        hs.threads = ninherited;
    hs.inherit_fds = inherited;
    hs.ninherit = ninherited;
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
    /* Settings that contradict each other stop the start here, before anything is made. */
    if (cfg.backup_verify_command[0] != '\0' && cfg.db[0] == '\0') {
        fprintf(stderr, "basalt: setting backup-verify-command is for PostgreSQL (pgBackRest's backups); the "
                        "embedded database's backups (--backup-dir) are verified by Basalt itself\n");
        return 2;
    }
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
    hs.worker_hook = worker_event;
    hs.worker_busy = api_worker_busy;
    hs.on_response = logs_note;
    logs_configure(cfg.logs_max_days, cfg.logs_max_rows);
    api_init();
    record_set_strict_fields(cfg.strict_fields);
    api_set_count_budget(cfg.count_budget_ms);
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
    if (cfg.redis[0] != '\0') {
        /* L2 only in front of PostgreSQL: a local SQLite read is cheaper than a round
         * trip to Redis, and no two instances share an SQLite file. */
        if (redis_shared_start(&ru, cfg.redis_timeout_ms, cfg.redis_required, hs.threads,
                               cfg.db[0] ? cfg.cache_l2_ttl_s : 0) != 0) {
            fprintf(stderr, "basalt: out of memory for the Redis client\n");
            return 1;
        }
        /* Another instance's acknowledged write is never overtaken (ADR 0015). */
        cache_set_pending_hook(redis_sub_pending);
        redis_shared_set_definitions_hook(on_schema_change);
        /* Read-your-writes with replicas holds across instances (docs/redis.md). */
        redis_shared_set_position_hook(api_note_remote_position);
    }

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
    sigaddset(&sigs, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    /* A restore through the backups API left the restored database: it takes the
     * place of the current one (which is kept aside) before anything opens it. */
    if (cfg.db[0] == '\0') {
        char rerr[1024];
        int applied = backup_apply_pending_restore(cfg.dir, rerr, sizeof(rerr));
        if (applied < 0) {
            fprintf(stderr, "basalt: cannot apply the pending restore: %s\n", rerr);
            return 1;
        }
        if (applied > 0)
            LOGF(LOG_WARN, "app",
                 "restored the database from a backup; the previous one is in %s/.pre-restore-*", cfg.dir);
    }
    api_backups_configure(cfg.dir, cfg.db[0] == '\0');
    /* Continuous backup (SQLite): its hooks go into the store before it opens. */
    backup_t *backup = NULL;
    if (cfg.backup_dir[0] != '\0') {
        if (cfg.db[0] != '\0') {
            fprintf(stderr,
                    "basalt: setting backup-dir is for the embedded database; PostgreSQL is backed up "
                    "with pgBackRest (docs/backups.md)\n");
            return 2;
        }
        char dbp[1100], berr[1024];
        snprintf(dbp, sizeof(dbp), "%s/data.db", cfg.dir);
        if (mkdir(cfg.dir, 0700) != 0 && errno != EEXIST) {
            fprintf(stderr, "basalt: cannot create the data directory %s: %s\n", cfg.dir, strerror(errno));
            return 1;
        }
        backup_config_t bc = {.target_dir = cfg.backup_dir,
                              .data_dir = cfg.dir,
                              .db_path = dbp,
                              .key_file = cfg.backup_key,
                              .interval_s = cfg.backup_interval_s,
                              .verify_interval_s = cfg.backup_verify_interval_s,
                              .retention_s = cfg.backup_retention_s > 0
                                                 ? (int64_t)cfg.backup_retention_s
                                                 : (int64_t)cfg.backup_retention_days * 86400};
        backup = backup_new(&bc, berr, sizeof(berr));
        if (backup == NULL) {
            fprintf(stderr, "basalt: backup (setting backup-dir): %s\n", berr);
            return 1;
        }
    }
    settings_defaults(&cfg);
    api_jobs_config_t ajc = {.mail_rate_limit = cfg.mail_rate_limit,
                             .mail_rate_limit_ip = cfg.mail_rate_limit_ip,
                             .mail_rate_period_ms = cfg.mail_rate_period_ms,
                             .webhook_allow_hosts = cfg.webhook_allow_hosts,
                             .webhook_timeout_ms = cfg.webhook_timeout_ms};
    if (mail_init() != 0 || api_jobs_init(&ajc) != 0 || logs_register_jobs() != 0) {
        fprintf(stderr, "basalt: cannot set up mail and background jobs\n");
        return 1;
    }
    if (cfg.backup_verify_command[0] != '\0') {
        pgverify_config_t pvc = {.command = cfg.backup_verify_command,
                                 .interval_s = cfg.backup_verify_interval_s,
                                 .timeout_s = cfg.backup_verify_timeout_s};
        if (pgverify_init(&pvc) != 0) {
            fprintf(stderr, "basalt: cannot set up the backup verification\n");
            return 1;
        }
    }
    store_t *store = open_store(&cfg, hs.threads, on_external_change, backup);
    if (store == NULL) {
        backup_free(backup);
        return 1;
    }
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
    char migrations_dir[1100];
    snprintf(migrations_dir, sizeof(migrations_dir), "%s/migrations", cfg.dir);
    if (cfg.automigrate)
        migration_set_dir(migrations_dir);
    if (mount_static(&cfg) != 0) {
        store_close(store);
        return 1;
    }
    long superusers = superuser_count(store);
    schema_t *cur = schema_acquire();
    logs_init(cur);
    schema_release(cur);
    bs_error_t err;
    bs_error_init(&err);
    if (logs_open_file(store, hs.threads, &err) != 0) {
        fprintf(stderr, "basalt: cannot open the request log %s/logs.db: %s\n", cfg.dir, err.message);
        store_close(store);
        return 1;
    }
    if (cfg.rt_outbox) {
        /* Before the writer starts: the retained events become the resume history. */
        store_outbox_config_t oc = {.window_ms = (int64_t)cfg.rt_resume_window_s * 1000,
                                    .max_events = cfg.rt_resume_max_events,
                                    .sink = outbox_sink,
                                    .position = realtime_outbox_position,
                                    .tick = realtime_registry_tick};
        if (strcmp(store_backend_name(store), "postgres") == 0)
            realtime_registry_enable(); /* instances share the database: streams may be elsewhere */
        uint32_t epoch;
        if (store_outbox_open(store, &oc, &epoch, &err) != 0) {
            fprintf(stderr, "basalt: cannot open the realtime outbox: %s (setting realtime-outbox)\n",
                    err.message);
            store_close(store);
            return 1;
        }
    }
    /* After an upgrade on SQLite, the writer starts once the old process has
     * finished its writes (below): one writer at a time. */
    int defer_writer = upgrade_ctl >= 0 && strcmp(store_backend_name(store), "sqlite") == 0;
    if (password_start(cfg.hash_threads, (unsigned long long)cfg.argon2_ops,
                       (size_t)cfg.argon2_memory_kib * 1024) != 0 ||
        (!defer_writer && store_start_writer(store, &err) != 0)) {
        fprintf(stderr, "basalt: cannot start the worker pools\n");
        return 1;
    }
    if (backup != NULL) {
        char berr[512];
        if (backup_start(backup, berr, sizeof(berr)) != 0) {
            fprintf(stderr, "basalt: %s\n", berr);
            return 1;
        }
    }
    if (start_files(&cfg, argc > 0 ? argv[0] : NULL) != 0) {
        store_close(store);
        return 1;
    }
    if (server_start(&hs) != 0) {
        store_close(store);
        return 1;
    }
    if (cfg.pid_file[0] && upgrade_write_pid_file(cfg.pid_file) != 0)
        LOGF(LOG_ERROR, "app", "cannot write the pid file %s: %s", cfg.pid_file, strerror(errno));
    if (upgrade_ctl >= 0) {
        upgrade_send(upgrade_ctl, "ready\n");
        if (defer_writer &&
            upgrade_wait_line(upgrade_ctl, "released\n", cfg.upgrade_timeout_ms + cfg.grace_ms) != 0)
            LOGF(LOG_WARN, "upgrade",
                 "the old process did not say it finished writing; starting the writer "
                 "anyway (SQLite's lock keeps the two apart)");
        close(upgrade_ctl);
        if (defer_writer && store_start_writer(store, &err) != 0) {
            fprintf(stderr, "basalt: cannot start the writer\n");
            return 1;
        }
        LOGF(LOG_INFO, "upgrade", "took over the listening sockets from the previous process");
    }
    /* After the writer (an upgrade on SQLite defers it): the runners claim through it. */
    jobs_config_t jc = {.threads = cfg.jobs_threads,
                        .poll_ms = cfg.jobs_poll_ms,
                        .max_attempts = cfg.jobs_max_attempts,
                        .timeout_ms = cfg.jobs_timeout_ms,
                        .backoff_ms = cfg.jobs_backoff_ms,
                        .backoff_max_ms = cfg.jobs_backoff_max_ms,
                        .lease_grace_ms = cfg.jobs_lease_grace_ms,
                        .keep_done_hours = cfg.jobs_keep_hours,
                        .test_handlers = cfg.jobs_test_handlers};
    jobs_add_tick(settings_reload);
    if (jobs_start(store, &jc) != 0) {
        fprintf(stderr, "basalt: cannot start the job runners\n");
        server_stop();
        store_close(store);
        return 1;
    }
    if (maintenance_start(store, cfg.maintenance_interval_s) != 0)
        LOGF(LOG_WARN, "app", "the maintenance thread did not start: partitions are made only at start-up");
    LOGF(LOG_INFO, "app", "Basalt %s serving http%s://%s:%d with %d threads, data in %s", BASALT_VERSION,
         cfg.tls_cert[0] ? "s" : "", hs.host, server_port(), hs.threads, cfg.dir);
    fprintf(stderr, "Basalt %s listening on http%s://%s:%d\n", BASALT_VERSION, cfg.tls_cert[0] ? "s" : "",
            hs.host, server_port());
    if (cfg.admin_dir[0] != '\0')
        fprintf(stderr, "Dashboard: http%s://%s:%d/_/\n", cfg.tls_cert[0] ? "s" : "", hs.host, server_port());
    if (superusers == 0)
        fprintf(stderr,
                "No superuser yet. Create the first one (in another terminal, while this server runs):\n"
                "  ./build/basalt superuser upsert EMAIL PASSWORD %s%s\n"
                "then sign in to the dashboard with it.\n",
                cfg.db[0] ? "--db=" : "--dir=", cfg.db[0] ? "<the same --db URL>" : cfg.dir);
    if (api_retention_start(store, cfg.retention_interval_s) != 0)
        LOGF(LOG_ERROR, "app", "cannot start the retention purger; records past their retention stay");
    int sig = 0, ctl = -1;
    pid_t successor = -1;
    for (;;) {
        sigwait(&sigs, &sig);
        if (sig != SIGUSR2)
            break;
        if ((successor = start_upgrade(&cfg, &ctl)) > 0)
            break;
    }
    if (successor > 0) {
        /* Stop accepting (the sockets stay open in the successor), end keep-alive,
         * tell realtime clients to reconnect; once no request is in flight, every
         * write of ours has committed: the successor may start its writer. */
        LOGF(LOG_INFO, "app", "handed over to process %d: draining for up to %d ms", (int)successor,
             cfg.grace_ms);
        api_retention_stop();
        api_backups_drain();
        maintenance_stop();
        server_stop_begin(1);
        uint64_t until = util_mono_ns() + (uint64_t)cfg.grace_ms * 1000000u;
        while (server_inflight() > 0 && util_mono_ns() < until)
            usleep(2000);
        /* Our runners' last outcomes are written before the successor's writer starts. */
        jobs_stop();
        upgrade_send(ctl, "released\n");
        close(ctl);
        server_stop_finish();
    } else {
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
        api_retention_stop();
        api_backups_drain();
        server_stop();
        maintenance_stop();
        /* Running jobs finish (each within its time-out) and record their outcome
         * through the writer, which is still running. */
        jobs_stop();
    }
    store_stop_writer(store);
    backup_stop(backup); /* ships the last commits before the store closes */
    password_stop();
    filepool_stop();
    thumb_shutdown();
    store_close(store);
    backup_free(backup);
    schema_publish(NULL);
    realtime_shutdown();
    redis_shutdown();
    ratelimit_free(hs.ratelimit);
    cache_free(hs.cache);
    static_unmount_all();
    logs_shutdown();
    audit_close();
    settings_shutdown();
    upgrade_remove_pid_file(cfg.pid_file);
    LOGF(LOG_INFO, "app", "stopped cleanly");
    if (api_backups_restart_requested()) {
        /* Everything is closed: the same command again, which applies the restore. */
        LOGF(LOG_WARN, "app", "restarting to apply the restored backup");
        pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
        execv("/proc/self/exe", saved_argv);
        fprintf(stderr, "basalt: cannot restart after the restore (%s): start basalt again to apply it\n",
                strerror(errno));
        return 1;
    }
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
    store_t *store = open_store(&cfg, 1, NULL, NULL);
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
    settings_shutdown();
    return rc == 0 ? 0 : 1;
}

static store_t *migrate_open(const config_t *cfg)
{
    return open_store(cfg, 1, NULL, NULL);
}

/* basalt files cleanup [--dry-run] [--grace-seconds=N] [settings]: the orphan sweep. */
static int files_command(int argc, char **argv)
{
    int dry = 0;
    long grace = 3600;
    char **args = calloc((size_t)argc + 1, sizeof(char *));
    int n = 0;
    if (args == NULL)
        return 1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--dry-run") == 0)
            dry = 1;
        else if (strncmp(argv[i], "--grace-seconds=", 16) == 0)
            grace = strtol(argv[i] + 16, NULL, 10);
        else
            args[n++] = argv[i];
    }
    config_t cfg;
    char *rest[2];
    int nrest;
    int prc = config_parse(&cfg, n, args, rest, 2, &nrest);
    free(args);
    if (prc != 0)
        return 2;
    if (nrest != 1 || strcmp(rest[0], "cleanup") != 0 || grace < 0) {
        fprintf(stderr,
                "Usage: basalt files cleanup [--dry-run] [--grace-seconds=3600] [--dir=DIR | --db=URL] "
                "[--s3-...]\n"
                "Removes stored files no record references, older than the grace period.\n");
        return 2;
    }
    store_t *store = open_store(&cfg, 1, NULL, NULL);
    if (store == NULL)
        return 1;
    storage_t *st = open_storage(&cfg);
    if (st == NULL) {
        store_close(store);
        return 1;
    }
    schema_t *s = schema_acquire();
    bs_error_t err;
    bs_error_init(&err);
    files_gc_stats_t stats;
    int rc = files_gc(st, store_reader(store, 0), s, (int64_t)grace * 1000, dry, &stats, &err);
    schema_release(s);
    if (rc != 0)
        fprintf(stderr, "basalt: the sweep stopped: %s\n", err.message);
    printf("%lld files scanned, %lld %s, %lld kept, %lld failed\n", (long long)stats.scanned,
           (long long)stats.removed, dry ? "would be removed" : "removed", (long long)stats.kept,
           (long long)stats.failed);
    storage_close(st);
    store_close(store);
    schema_publish(NULL);
    return rc == 0 && stats.failed == 0 ? 0 : 1;
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
        "  basalt migrate up [N]|down [N]|status|create NAME [--dry-run] [--allow-destructive]  schema "
        "migrations (--help)\n"
        "  basalt user export COLLECTION ID --out=FILE | erase COLLECTION ID    a user's data export or "
        "erasure\n"
        "  basalt upgrade --pid-file=FILE                                       hand a running server's "
        "sockets to a new binary\n"
        "  basalt restore --from=BACKUP_DIR --dir=NEW_DIR [--to=latest|TIME]      point-in-time restore "
        "(--help)\n"
        "  basalt files cleanup [--dry-run] [--grace-seconds=3600]              remove stored files no "
        "record "
        "references\n"
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
    remember_self(argv);
    if (strcmp(cmd, "upgrade") == 0)
        return upgrade_command(argc - 2, argv + 2);
    if (strcmp(cmd, "serve") == 0)
        return serve(argc - 2, argv + 2);
    if (strcmp(cmd, "superuser") == 0)
        return superuser(argc - 2, argv + 2);
    if (strcmp(cmd, "user") == 0)
        return usercli_command(argc - 2, argv + 2, migrate_open);
    if (strcmp(cmd, "migrate") == 0)
        return migrate_command(argc - 2, argv + 2, migrate_open);
    if (strcmp(cmd, "restore") == 0)
        return backup_restore_command(argc - 2, argv + 2);
    if (strcmp(cmd, "db") == 0)
        return dbcopy_command(argc - 2, argv + 2);
    if (strcmp(cmd, "files") == 0)
        return files_command(argc - 2, argv + 2);
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
