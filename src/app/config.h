/*
 * config — the one table of Basalt's settings.
 *
 * Every setting has a flag (--name=value), an environment variable (BASALT_NAME),
 * a default, a range and a description. Flags win over the environment, which wins
 * over defaults. `basalt serve --help` and docs/configuration.md are generated from
 * the table. Invalid values stop start-up with a message naming the setting.
 */
#ifndef BASALT_APP_CONFIG_H
#define BASALT_APP_CONFIG_H

#include <stdio.h>

typedef struct {
    char http[128];
    char dir[1024];
    char db[1024];
    char db_listen[1024];
    char db_writer[1024];
    char db_replicas[2048];
    int db_replica_max_lag_ms;
    int db_replica_wait_ms;
    int db_connect_timeout_ms;
    int db_statement_timeout_ms;
    int db_ddl_timeout_ms;
    int db_prepared;
    int db_pool_size;
    int threads;
    long max_body;
    int max_json_depth;
    int grace_ms;
    int drain_delay_ms;
    char sync[16];
    char tls_cert[1024];
    char tls_key[1024];
    char log_level[16];
    int hash_threads;
    int argon2_memory_kib;
    int argon2_ops;
    int max_filter_length;
    int writer_batch;
    int maintenance_interval_s;
    int strict_fields;
    int batch_max_requests;
    int batch_timeout_ms;
    int rl_anon, rl_user, rl_burst, rl_auth;
    int rl_period_ms;
    int rl_capacity;
    char trusted_proxies[512];
    char rl_collections[512];
    char metrics_access[16];
    int gzip_level;
    int cache_budget_mb;
    int cache_ttl_ms;
    int count_budget_ms;
    int max_header_bytes;
    int request_timeout_ms;
    int max_connections;
    int max_connections_per_ip;
    char audit_log[1024];
    int gzip_min_size;
    int rt_max_connections;
    int rt_max_subscriptions;
    int rt_max_topic_length;
    int rt_max_messages;
    int rt_queue_kib;
    int rt_max_message_kib;
    int rt_resume_window_s;
    int rt_resume_max_events;
    int rt_outbox;
    int rt_idle_timeout_s;
    int rt_ping_interval_s;
    /* Background jobs, mail, webhooks (src/jobs/, src/mail/; ADR 0009). */
    int jobs_threads;
    int jobs_poll_ms;
    int jobs_max_attempts;
    int jobs_timeout_ms;
    int jobs_backoff_ms;
    int jobs_backoff_max_ms;
    int jobs_lease_grace_ms;
    int jobs_keep_hours;
    int jobs_test_handlers;
    char app_name[256];
    char app_url[512];
    char mail_sender_name[256];
    char mail_sender_address[256];
    int smtp_enabled;
    char smtp_host[256];
    int smtp_port;
    char smtp_username[256];
    char smtp_password[256];
    char smtp_auth_method[16];
    int smtp_tls;
    char smtp_local_name[256];
    int mail_rate_limit;
    int mail_rate_limit_ip;
    int mail_rate_period_ms;
    char webhook_allow_hosts[512];
    int webhook_timeout_ms;
    int automigrate;
    char pid_file[1024];
    char upgrade_binary[1024];
    int upgrade_timeout_ms;
    int retention_interval_s;
    char redis[512];
    int redis_timeout_ms;
    int redis_required;
    int cache_l2_ttl_s;
    char public_dir[1024];
    int public_spa;
    char admin_dir[1024];
    int static_max_file_mb;
    int static_cache_mb;
    int logs_max_days;
    int logs_max_rows;
    char backup_dir[1024];
    int backup_interval_s;
    int backup_verify_interval_s;
    int backup_retention_days;
    int backup_retention_s;
    char backup_key[1024];
    char backup_verify_command[2048];
    int backup_verify_timeout_s;
    char storage_dir[1024];
    char s3_endpoint[512];
    char s3_bucket[256];
    char s3_region[64];
    char s3_access_key[256];
    char s3_secret[256];
    int s3_force_path_style;
    int s3_timeout_ms;
    int file_threads;
    int thumb_max_pixels;
    int file_token_seconds;
} config_t;

/* Fills cfg with defaults, then the environment, then argv (flags of the form
 * --name=value or --name value; positional arguments are returned in rest[] in
 * order, at most max_rest). Returns 0, or -1 after printing the reason to stderr. */
int config_parse(config_t *cfg, int argc, char **argv, char **rest, int max_rest, int *nrest);
/* Prints the settings as --help text or as the Markdown reference. */
void config_print_help(FILE *out);
void config_print_markdown(FILE *out);

#endif
