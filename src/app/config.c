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
    {"db-writer", T_STRING, offsetof(config_t, db_writer), 1024, "", 0, 0, NULL,
     "PostgreSQL: a direct URL (not through PgBouncer) for the one connection that runs every write, which "
     "then skips PgBouncer's hop on each round trip and prepares its statements once; empty: --db."},
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
    {"db-ddl-timeout-ms", T_INT, offsetof(config_t, db_ddl_timeout_ms), 0, "600000", 0, 86400000, NULL,
     "PostgreSQL: longest a schema change's script may run (a collection's new indexes or search index on a "
     "large table; 0 = no limit); beyond it the change is rolled back and gets 503. Other writes wait behind "
     "it; its wait for a table's lock stays bounded by --db-statement-timeout-ms."},
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
     "Least severe level written to the log (stderr). The access log goes to stdout; its lines are info, so "
     "warn and above turn it off."},
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
    {"count-budget-ms", T_INT, offsetof(config_t, count_budget_ms), 0, "250", 0, 3600000, NULL,
     "Longest a list's total may take to count (0 = no limit). Past it the page comes with totalItems and "
     "totalPages -1, as with skipTotal, and that count is not tried again for --cache-ttl-ms."},
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
    {"realtime-outbox", T_INT, offsetof(config_t, rt_outbox), 0, "1", 0, 1, NULL,
     "1: every record change is written to the `_events` outbox in the write's own transaction, so events "
     "survive a crash and reach every instance on the same database, and resumes work across instances and "
     "restarts; 0: events live in this instance's memory only."},
    {"realtime-idle-timeout-s", T_INT, offsetof(config_t, rt_idle_timeout_s), 0, "300", 1, 86400, NULL,
     "A realtime connection with no event and no client message for this long is closed (clients "
     "reconnect)."},
    {"realtime-ping-interval-s", T_INT, offsetof(config_t, rt_ping_interval_s), 0, "25", 1, 3600, NULL,
     "Seconds between WebSocket pings and SSE keep-alive comments on quiet connections."},
    {"public-dir", T_STRING, offsetof(config_t, public_dir), 1024, "", 0, 0, NULL,
     "Folder served at / (PocketBase's pb_public): static files with their content types, ETags, gzip and "
     "caching; the API's paths come first. Empty: none."},
    {"public-spa", T_INT, offsetof(config_t, public_spa), 0, "0", 0, 1, NULL,
     "1: a path under --public-dir that names no file and has no extension answers index.html (a "
     "single-page app's own routes)."},
    {"admin-dir", T_STRING, offsetof(config_t, admin_dir), 1024, "auto", 0, 0, NULL,
     "Folder of the built admin dashboard served at /_/; auto = web/admin beside the binary (make web "
     "builds it there), empty = no dashboard."},
    {"static-max-file-mb", T_INT, offsetof(config_t, static_max_file_mb), 0, "16", 1, 4096, NULL,
     "Largest file, in MiB, that --public-dir serves (files are held in memory; larger ones answer 404 and "
     "are named in the log)."},
    {"static-cache-mb", T_INT, offsetof(config_t, static_cache_mb), 0, "256", 1, 65536, NULL,
     "Memory, in MiB, for the files of --public-dir (and the dashboard); files past it are not served."},
    {"logs-max-days", T_INT, offsetof(config_t, logs_max_days), 0, "7", 0, 3650, NULL,
     "Days the request log (GET /api/logs) keeps a request; 0 turns the request log off."},
    {"logs-max-rows", T_INT, offsetof(config_t, logs_max_rows), 0, "100000", 100, 100000000, NULL,
     "Most requests the request log keeps; the oldest go first (checked once a minute)."},
    {"backup-dir", T_STRING, offsetof(config_t, backup_dir), 1024, "", 0, 0, NULL,
     "SQLite: continuous backup into this folder (another disk or a mounted volume): a snapshot per "
     "--backup-interval plus every commit within a second; restore with `basalt restore`. Empty: off."},
    {"backup-interval", T_INT, offsetof(config_t, backup_interval_s), 0, "86400", 1, 31536000, NULL,
     "Seconds between snapshots (each starts a new backup generation)."},
    {"backup-verify-interval", T_INT, offsetof(config_t, backup_verify_interval_s), 0, "3600", 1, 31536000,
     NULL,
     "Seconds between verifications: a restore of the latest backup into a temporary folder, checked "
     "(SQLite: also after every snapshot; PostgreSQL: runs --backup-verify-command)."},
    {"backup-retention-days", T_INT, offsetof(config_t, backup_retention_days), 0, "30", 0, 36500, NULL,
     "Backup generations that ended longer ago are deleted (the newest is always kept)."},
    {"backup-retention-seconds", T_INT, offsetof(config_t, backup_retention_s), 0, "0", 0, 2147483647, NULL,
     "When above 0, replaces --backup-retention-days with a retention in seconds."},
    {"backup-key", T_STRING, offsetof(config_t, backup_key), 1024, "", 0, 0, NULL,
     "File holding the backup encryption key (at least 32 random bytes); with it everything written to "
     "--backup-dir is encrypted and authenticated (libsodium secretstream). Empty: not encrypted."},
    {"backup-verify-command", T_STRING, offsetof(config_t, backup_verify_command), 2048, "", 0, 0, NULL,
     "PostgreSQL: a command (run with /bin/sh -c) that restores the latest pgBackRest backup somewhere "
     "temporary and checks it, exiting 0 when it passed (deploy/pgbackrest/verify.sh); one instance of the "
     "cluster runs it every --backup-verify-interval, reported in /metrics as on SQLite. Empty: off."},
    {"backup-verify-timeout", T_INT, offsetof(config_t, backup_verify_timeout_s), 0, "1800", 1, 86400, NULL,
     "Seconds --backup-verify-command may run; then it is stopped (SIGTERM to its process group, SIGKILL "
     "10 s later) and counts as a failed verification."},
    {"trusted-proxies", T_STRING, offsetof(config_t, trusted_proxies), 512, "", 0, 0, NULL,
     "Comma-separated IPs of proxies whose X-Forwarded-For is believed for the client address."},
    {"jobs-threads", T_INT, offsetof(config_t, jobs_threads), 0, "2", 1, 64, NULL,
     "Threads running background jobs (mail, webhooks, reminders, crons); never the event loops."},
    {"jobs-poll-ms", T_INT, offsetof(config_t, jobs_poll_ms), 0, "500", 10, 60000, NULL,
     "How often an idle job runner looks for due jobs (jobs queued on this instance wake it at once)."},
    {"jobs-max-attempts", T_INT, offsetof(config_t, jobs_max_attempts), 0, "5", 1, 100, NULL,
     "Attempts of a job before it goes to the dead letter (a job may ask for its own number)."},
    {"jobs-timeout-ms", T_INT, offsetof(config_t, jobs_timeout_ms), 0, "30000", 100, 3600000, NULL,
     "Default time a job's handler has to finish; beyond it the attempt counts as failed."},
    {"jobs-backoff-ms", T_INT, offsetof(config_t, jobs_backoff_ms), 0, "2000", 10, 3600000, NULL,
     "Delay before a failed job's first retry; it doubles with each attempt (with jitter)."},
    {"jobs-backoff-max-ms", T_INT, offsetof(config_t, jobs_backoff_max_ms), 0, "3600000", 10, 86400000, NULL,
     "Longest delay between two attempts of a job."},
    {"jobs-lease-grace-ms", T_INT, offsetof(config_t, jobs_lease_grace_ms), 0, "30000", 0, 3600000, NULL,
     "A running job's lease is its time-out plus this; an instance that dies mid-job leaves the job to be "
     "claimed again once the lease has run out."},
    {"jobs-keep-hours", T_INT, offsetof(config_t, jobs_keep_hours), 0, "24", 1, 87600, NULL,
     "Finished jobs are deleted after this many hours, dead ones after seven times as long."},
    {"jobs-test-handlers", T_INT, offsetof(config_t, jobs_test_handlers), 0, "0", 0, 1, NULL,
     "1 registers the job handlers test.sleep and test.flaky and the cron __basaltTestTick__ (every minute) "
     "for Basalt's own tests."},
    {"app-name", T_STRING, offsetof(config_t, app_name), 256, "Basalt", 0, 0, NULL,
     "Default of settings meta.appName ({APP_NAME} in mails)."},
    {"app-url", T_STRING, offsetof(config_t, app_url), 512, "http://localhost:8090", 0, 0, NULL,
     "Default of settings meta.appURL ({APP_URL} in mails' links)."},
    {"mail-sender-name", T_STRING, offsetof(config_t, mail_sender_name), 256, "Support", 0, 0, NULL,
     "Default of settings meta.senderName."},
    {"mail-sender-address", T_STRING, offsetof(config_t, mail_sender_address), 256, "support@example.com", 0,
     0, NULL, "Default of settings meta.senderAddress (the From of every mail)."},
    {"smtp-enabled", T_INT, offsetof(config_t, smtp_enabled), 0, "0", 0, 1, NULL,
     "Default of settings smtp.enabled: 1 sends mail through the SMTP server below."},
    {"smtp-host", T_STRING, offsetof(config_t, smtp_host), 256, "", 0, 0, NULL,
     "Default of settings smtp.host."},
    {"smtp-port", T_INT, offsetof(config_t, smtp_port), 0, "587", 1, 65535, NULL,
     "Default of settings smtp.port."},
    {"smtp-username", T_STRING, offsetof(config_t, smtp_username), 256, "", 0, 0, NULL,
     "Default of settings smtp.username (empty: no AUTH)."},
    {"smtp-password", T_STRING, offsetof(config_t, smtp_password), 256, "", 0, 0, NULL,
     "Default of settings smtp.password (never shown by GET /api/settings)."},
    {"smtp-auth-method", T_ENUM, offsetof(config_t, smtp_auth_method), 16, "PLAIN", 0, 0, "PLAIN|LOGIN",
     "Default of settings smtp.authMethod."},
    {"smtp-tls", T_INT, offsetof(config_t, smtp_tls), 0, "0", 0, 1, NULL,
     "Default of settings smtp.tls: 1 connects with TLS (smtps://); 0 upgrades with STARTTLS when the server "
     "offers it."},
    {"smtp-local-name", T_STRING, offsetof(config_t, smtp_local_name), 256, "", 0, 0, NULL,
     "Default of settings smtp.localName, the EHLO name (empty: localhost)."},
    {"mail-rate-limit", T_INT, offsetof(config_t, mail_rate_limit), 0, "5", 0, 1000000, NULL,
     "Mail-sending requests (verification, password reset, OTP...) per period for one email address "
     "(0 = no limit)."},
    {"mail-rate-limit-ip", T_INT, offsetof(config_t, mail_rate_limit_ip), 0, "20", 0, 1000000, NULL,
     "Mail-sending requests per period from one client address (0 = no limit)."},
    {"mail-rate-period-ms", T_INT, offsetof(config_t, mail_rate_period_ms), 0, "600000", 1000, 86400000, NULL,
     "The period of the two mail limits, in milliseconds."},
    {"webhook-allow-hosts", T_STRING, offsetof(config_t, webhook_allow_hosts), 512, "", 0, 0, NULL,
     "Comma-separated IP addresses webhooks may reach although they are loopback, private, link-local or "
     "this "
     "host's own (server-side request forgery is refused otherwise)."},
    {"webhook-timeout-ms", T_INT, offsetof(config_t, webhook_timeout_ms), 0, "10000", 100, 600000, NULL,
     "Time a webhook delivery has to connect and be answered."},
    {"automigrate", T_INT, offsetof(config_t, automigrate), 0, "1", 0, 1, NULL,
     "1: every schema change made through the API is also written as a migration file in DIR/migrations "
     "(basalt migrate applies them elsewhere); 0: no files."},
    {"pid-file", T_STRING, offsetof(config_t, pid_file), 1024, "", 0, 0, NULL,
     "File the server writes its process id to (and rewrites after an upgrade); \"\": none."},
    {"upgrade-binary", T_STRING, offsetof(config_t, upgrade_binary), 1024, "", 0, 0, NULL,
     "The binary that SIGUSR2 (basalt upgrade) starts and hands the listening sockets to; \"\": the running "
     "one's own path."},
    {"upgrade-timeout-ms", T_INT, offsetof(config_t, upgrade_timeout_ms), 0, "30000", 1000, 600000, NULL,
     "How long an upgrade waits for the new process to be ready before it gives up and keeps serving."},
    {"retention-interval-s", T_INT, offsetof(config_t, retention_interval_s), 0, "60", 1, 86400, NULL,
     "Seconds between retention purges (collections with a \"retention\" option)."},
    {"redis", T_STRING, offsetof(config_t, redis), 512, "", 0, 0, NULL,
     "Redis shared by several instances: redis://[:password@]host:port[/db], host an IP address or "
     "localhost. Rate limits hold in total across instances and caches follow other instances' writes "
     "(docs/redis.md). Empty: this instance alone."},
    {"redis-timeout-ms", T_INT, offsetof(config_t, redis_timeout_ms), 0, "50", 5, 10000, NULL,
     "Longest wait for one Redis answer; past it the request is decided locally and the connection is "
     "re-made."},
    {"redis-required", T_INT, offsetof(config_t, redis_required), 0, "0", 0, 1, NULL,
     "1: readiness (/api/health?ready=1) fails while Redis is unreachable; 0: the instance keeps serving "
     "with local limits and short-lived caches."},
    {"cache-l2-ttl", T_INT, offsetof(config_t, cache_l2_ttl_s), 0, "900", 0, 86400, NULL,
     "With --redis and --db (PostgreSQL): seconds a record view stays in the Redis L2 tier shared by the "
     "instances (behind the in-process cache, invalidated by writes on any instance); 0 turns the tier off."},
    {"storage-dir", T_STRING, offsetof(config_t, storage_dir), 1024, "", 0, 0, NULL,
     "Folder of uploaded files (local storage); empty: DIR/storage. Unused when --s3-bucket is set."},
    {"s3-endpoint", T_STRING, offsetof(config_t, s3_endpoint), 512, "", 0, 0, NULL,
     "S3-compatible storage for uploaded files: the endpoint URL (http(s)://host[:port]); empty with a "
     "bucket: "
     "https://s3.REGION.amazonaws.com."},
    {"s3-bucket", T_STRING, offsetof(config_t, s3_bucket), 256, "", 0, 0, NULL,
     "S3 bucket for uploaded files; set, files go to S3 instead of the local folder."},
    {"s3-region", T_STRING, offsetof(config_t, s3_region), 64, "us-east-1", 0, 0, NULL,
     "S3 region (signs the requests, SigV4)."},
    {"s3-access-key", T_STRING, offsetof(config_t, s3_access_key), 256, "", 0, 0, NULL, "S3 access key id."},
    {"s3-secret", T_STRING, offsetof(config_t, s3_secret), 256, "", 0, 0, NULL,
     "S3 secret access key (prefer the BASALT_S3_SECRET variable: flags show in the process list)."},
    {"s3-force-path-style", T_INT, offsetof(config_t, s3_force_path_style), 0, "0", 0, 1, NULL,
     "1: ENDPOINT/BUCKET/KEY URLs (MinIO, most self-hosted servers); 0: BUCKET.HOST/KEY."},
    {"s3-timeout-ms", T_INT, offsetof(config_t, s3_timeout_ms), 0, "30000", 100, 600000, NULL,
     "Longest time one S3 request may take (connecting: at most 5 s of it); then the request fails with "
     "504."},
    {"file-threads", T_INT, offsetof(config_t, file_threads), 0, "4", 1, 256, NULL,
     "Threads for blocking file work (storage reads and writes, thumbnails), off the event loops."},
    {"file-token-seconds", T_INT, offsetof(config_t, file_token_seconds), 0, "180", 1, 86400, NULL,
     "Lifetime of the file tokens POST /api/files/token issues for protected files."},
    {"thumb-max-pixels", T_INT, offsetof(config_t, thumb_max_pixels), 0, "40000000", 1, 1000000000, NULL,
     "Largest image (width x height, read from its header) a thumbnail is made of; larger ones are served "
     "as the original."},
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
