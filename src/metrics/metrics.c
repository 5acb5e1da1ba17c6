#include "metrics/metrics.h"

#include "backup/backup.h"
#include "backup/pgverify.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/util.h"

metrics_global_t metrics_g;

/* Bucket upper bounds in seconds: from 100 us to 10 s. */
static const double bounds_s[METRICS_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                 0.025,  0.05,    0.1,    0.25,  1,      10};
/* Batch sizes (plain values). */
static const double bounds_v[METRICS_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 65536};

static const int status_codes[METRICS_STATUS_SLOTS - 1] = {200, 204, 304, 400, 401, 403, 404, 405, 408,
                                                           413, 415, 429, 500, 501, 503, 507, 101};

static struct {
    const char *method, *pattern;
    uint64_t status[METRICS_STATUS_SLOTS];
    uint64_t bytes_in, bytes_out;
    metrics_hist_t latency;
} routes[METRICS_MAX_ROUTES];

static metrics_sources_t sources;
static uint64_t http_errors;

void metrics_add(uint64_t *counter, uint64_t n)
{
    __atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

static void hist_observe_bounds(metrics_hist_t *h, uint64_t v, const double *b, double scale)
{
    double x = (double)v * scale;
    int i = 0;
    while (i < METRICS_BUCKETS && x > b[i])
        i++;
    __atomic_add_fetch(&h->counts[i], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&h->sum_ns, v, __ATOMIC_RELAXED);
}

void metrics_hist_observe(metrics_hist_t *h, uint64_t ns)
{
    hist_observe_bounds(h, ns, bounds_s, 1e-9);
}

void metrics_hist_observe_value(metrics_hist_t *h, uint64_t v)
{
    hist_observe_bounds(h, v, bounds_v, 1);
}

void metrics_route_name(int idx, const char *method, const char *pattern)
{
    if (idx >= 0 && idx < METRICS_MAX_ROUTES) {
        routes[idx].method = method;
        routes[idx].pattern = pattern;
    }
}

void metrics_http_observe(int route, int status, uint64_t duration_ns, uint64_t bytes_in, uint64_t bytes_out)
{
    if (route < 0 || route >= METRICS_MAX_ROUTES)
        route = METRICS_MAX_ROUTES - 1;
    int slot = METRICS_STATUS_SLOTS - 1;
    for (int i = 0; i < METRICS_STATUS_SLOTS - 1; i++)
        if (status_codes[i] == status)
            slot = i;
    __atomic_add_fetch(&routes[route].status[slot], 1, __ATOMIC_RELAXED);
    if (status >= 500)
        __atomic_add_fetch(&http_errors, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&routes[route].bytes_in, bytes_in, __ATOMIC_RELAXED);
    __atomic_add_fetch(&routes[route].bytes_out, bytes_out, __ATOMIC_RELAXED);
    hist_observe_bounds(&routes[route].latency, duration_ns, bounds_s, 1e-9);
}

/* ---- active users: five one-minute bitmaps ---- */

#define AU_BITS 32768
static struct {
    int64_t minute;
    uint64_t bits[AU_BITS / 64];
} au[5];

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h ^ (h >> 29);
}

void metrics_active_user(const char *id, int64_t now_ms)
{
    int64_t minute = now_ms / 60000;
    int k = (int)(minute % 5);
    /* A slot from an older minute is cleared by whoever first sees the new minute;
     * a concurrent set bit may be lost, which only under-counts by one. */
    if (__atomic_load_n(&au[k].minute, __ATOMIC_ACQUIRE) != minute) {
        memset(au[k].bits, 0, sizeof(au[k].bits));
        __atomic_store_n(&au[k].minute, minute, __ATOMIC_RELEASE);
    }
    uint64_t h = fnv(id) % AU_BITS;
    __atomic_or_fetch(&au[k].bits[h / 64], 1ull << (h % 64), __ATOMIC_RELAXED);
}

uint64_t metrics_active_users(int64_t now_ms)
{
    int64_t minute = now_ms / 60000;
    uint64_t zeros = 0;
    for (int w = 0; w < AU_BITS / 64; w++) {
        uint64_t u = 0;
        for (int k = 0; k < 5; k++)
            if (minute - __atomic_load_n(&au[k].minute, __ATOMIC_ACQUIRE) < 5)
                u |= __atomic_load_n(&au[k].bits[w], __ATOMIC_RELAXED);
        zeros += 64 - (uint64_t)__builtin_popcountll(u);
    }
    if (zeros == 0)
        return AU_BITS;
    /* Linear counting: n = -m ln(zeros / m). */
    double m = AU_BITS;
    double n = -m * __builtin_log((double)zeros / m);
    return (uint64_t)(n + 0.5);
}

static void (*writers[8])(buf_t *out);
static int nwriters;

void metrics_add_writer(void (*fn)(buf_t *out))
{
    if (nwriters < (int)(sizeof(writers) / sizeof(writers[0])))
        writers[nwriters++] = fn;
}

void metrics_set_sources(const metrics_sources_t *src)
{
    sources = *src;
}

/* ---- exposition ---- */

static void header(buf_t *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static unsigned long long load(const uint64_t *v)
{
    return (unsigned long long)__atomic_load_n(v, __ATOMIC_RELAXED);
}

/* A counter of one value. */
static void counter(buf_t *b, const char *name, const char *help, const uint64_t *v)
{
    header(b, name, "counter", help);
    buf_printf(b, "%s %llu\n", name, load(v));
}

/* A counter split by one label of two values (label="a" va, label="b" vb). */
static void counter2(buf_t *b, const char *name, const char *help, const char *label, const char *a,
                     const uint64_t *va, const char *c, const uint64_t *vc)
{
    header(b, name, "counter", help);
    buf_printf(b, "%1$s{%2$s=\"%3$s\"} %4$llu\n%1$s{%2$s=\"%5$s\"} %6$llu\n", name, label, a, load(va), c,
               load(vc));
}

static void write_hist(buf_t *b, const char *name, const char *labels, const metrics_hist_t *h, int values)
{
    const double *bounds = values ? bounds_v : bounds_s;
    uint64_t cum = 0;
    for (int i = 0; i <= METRICS_BUCKETS; i++) {
        cum += __atomic_load_n(&h->counts[i], __ATOMIC_RELAXED);
        if (i < METRICS_BUCKETS)
            buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, labels[0] ? "," : "", bounds[i],
                       (unsigned long long)cum);
        else
            buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, labels[0] ? "," : "",
                       (unsigned long long)cum);
    }
    uint64_t sum = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    if (values)
        buf_printf(b, "%s_sum%s%s%s %llu\n", name, open, labels, close, (unsigned long long)sum);
    else
        buf_printf(b, "%s_sum%s%s%s %.9f\n", name, open, labels, close, (double)sum / 1e9);
    buf_printf(b, "%s_count%s%s%s %llu\n", name, open, labels, close, (unsigned long long)cum);
}

static void process_metrics(buf_t *b)
{
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/stat", "r");
    unsigned long utime = 0, stime = 0;
    unsigned long long start = 0;
    if (f != NULL) {
        /* Fields 14, 15 (utime, stime) and 22 (starttime); the name (2) may hold spaces. */
        char line[1024];
        if (fgets(line, sizeof(line), f) != NULL) {
            char *p = strrchr(line, ')');
            if (p != NULL)
                sscanf(p + 2,
                       "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %llu",
                       &utime, &stime, &start);
        }
        fclose(f);
    }
    long rss = 0;
    f = fopen("/proc/self/statm", "r");
    if (f != NULL) {
        if (fscanf(f, "%*s %ld", &rss) != 1)
            rss = 0;
        fclose(f);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
    }
    double boot = 0;
    f = fopen("/proc/stat", "r");
    if (f != NULL) {
        char line[256];
        while (fgets(line, sizeof(line), f) != NULL)
            if (sscanf(line, "btime %lf", &boot) == 1)
                break;
        fclose(f);
    }
    /* The capacity the alerts compare with: cores, and the memory limit (the cgroup's,
     * else the machine's). */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    double mem_limit = 0;
    f = fopen("/sys/fs/cgroup/memory.max", "r");
    if (f != NULL) {
        if (fscanf(f, "%lf", &mem_limit) != 1)
            mem_limit = 0;
        fclose(f);
    }
    if (mem_limit <= 0)
        mem_limit = (double)sysconf(_SC_PHYS_PAGES) * (double)page;
    header(b, "basalt_cpu_cores", "gauge", "CPU cores available to the process.");
    buf_printf(b, "basalt_cpu_cores %ld\n", cores);
    header(b, "basalt_memory_limit_bytes", "gauge",
           "Memory the process may use (cgroup limit or physical memory).");
    buf_printf(b, "basalt_memory_limit_bytes %.0f\n", mem_limit);
    header(b, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    buf_printf(b, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tck);
    header(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    buf_printf(b, "process_resident_memory_bytes %ld\n", rss * page);
    header(b, "process_open_fds", "gauge", "Number of open file descriptors.");
    buf_printf(b, "process_open_fds %d\n", fds - 1 /* the directory itself */);
    header(b, "process_start_time_seconds", "gauge", "Start time of the process since the epoch in seconds.");
    buf_printf(b, "process_start_time_seconds %.2f\n", boot + (double)start / (double)tck);
}

void metrics_write(buf_t *b, int64_t now_ms)
{
    header(b, "basalt_http_requests_total", "counter", "HTTP requests by route, method and status.");
    for (int r = 0; r < METRICS_MAX_ROUTES; r++) {
        const char *pattern = r == METRICS_MAX_ROUTES - 1 ? "unmatched" : routes[r].pattern;
        const char *method = r == METRICS_MAX_ROUTES - 1 ? "any" : routes[r].method;
        if (pattern == NULL)
            continue;
        for (int s = 0; s < METRICS_STATUS_SLOTS; s++) {
            uint64_t v = __atomic_load_n(&routes[r].status[s], __ATOMIC_RELAXED);
            if (v == 0)
                continue;
            if (s < METRICS_STATUS_SLOTS - 1)
                buf_printf(b, "basalt_http_requests_total{route=\"%s\",method=\"%s\",status=\"%d\"} %llu\n",
                           pattern, method, status_codes[s], (unsigned long long)v);
            else
                buf_printf(b,
                           "basalt_http_requests_total{route=\"%s\",method=\"%s\",status=\"other\"} %llu\n",
                           pattern, method, (unsigned long long)v);
        }
    }
    header(b, "basalt_http_request_duration_seconds", "histogram",
           "Time from request to response, by route.");
    for (int r = 0; r < METRICS_MAX_ROUTES; r++) {
        const char *pattern = r == METRICS_MAX_ROUTES - 1 ? "unmatched" : routes[r].pattern;
        if (pattern == NULL)
            continue;
        uint64_t seen = 0;
        for (int i = 0; i <= METRICS_BUCKETS; i++)
            seen += __atomic_load_n(&routes[r].latency.counts[i], __ATOMIC_RELAXED);
        if (seen == 0)
            continue; /* routes never requested are left out to keep scrapes small */
        char labels[200];
        snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\"", pattern,
                 r == METRICS_MAX_ROUTES - 1 ? "any" : routes[r].method);
        write_hist(b, "basalt_http_request_duration_seconds", labels, &routes[r].latency, 0);
    }
    uint64_t in = 0, out = 0;
    for (int r = 0; r < METRICS_MAX_ROUTES; r++) {
        in += __atomic_load_n(&routes[r].bytes_in, __ATOMIC_RELAXED);
        out += __atomic_load_n(&routes[r].bytes_out, __ATOMIC_RELAXED);
    }
    header(b, "basalt_http_errors_total", "counter", "Responses with a 5xx status.");
    buf_printf(b, "basalt_http_errors_total %llu\n",
               (unsigned long long)__atomic_load_n(&http_errors, __ATOMIC_RELAXED));
    header(b, "basalt_http_request_bytes_total", "counter", "Bytes of request bodies received.");
    buf_printf(b, "basalt_http_request_bytes_total %llu\n", (unsigned long long)in);
    header(b, "basalt_http_response_bytes_total", "counter", "Bytes of response bodies sent.");
    buf_printf(b, "basalt_http_response_bytes_total %llu\n", (unsigned long long)out);
    if (sources.inflight) {
        header(b, "basalt_http_requests_in_flight", "gauge", "Requests being served right now.");
        buf_printf(b, "basalt_http_requests_in_flight %llu\n", (unsigned long long)sources.inflight());
    }
    if (sources.connections) {
        header(b, "basalt_http_connections", "gauge", "Open client connections (counted against the caps).");
        buf_printf(b, "basalt_http_connections %llu\n", (unsigned long long)sources.connections());
    }
    if (sources.rate_limited) {
        header(b, "basalt_ratelimit_rejections_total", "counter",
               "Requests refused with 429, by limit class.");
        const char *name;
        for (int c = 0;; c++) {
            uint64_t v = sources.rate_limited(c, &name);
            if (name == NULL)
                break;
            if (name[0])
                buf_printf(b, "basalt_ratelimit_rejections_total{class=\"%s\"} %llu\n", name,
                           (unsigned long long)v);
        }
    }
    if (sources.cache) {
        uint64_t cs[5];
        sources.cache(cs);
        header(b, "basalt_cache_hits_total", "counter", "Cache lookups that found a fresh entry.");
        buf_printf(b, "basalt_cache_hits_total %llu\n", (unsigned long long)cs[0]);
        header(b, "basalt_cache_misses_total", "counter", "Cache lookups that found nothing fresh.");
        buf_printf(b, "basalt_cache_misses_total %llu\n", (unsigned long long)cs[1]);
        header(b, "basalt_cache_evictions_total", "counter", "Entries dropped to stay within the budget.");
        buf_printf(b, "basalt_cache_evictions_total %llu\n", (unsigned long long)cs[2]);
        header(b, "basalt_cache_bytes", "gauge", "Memory held by cache entries.");
        buf_printf(b, "basalt_cache_bytes %llu\n", (unsigned long long)cs[3]);
        header(b, "basalt_cache_entries", "gauge", "Entries in the cache.");
        buf_printf(b, "basalt_cache_entries %llu\n", (unsigned long long)cs[4]);
    }
    if (sources.realtime) {
        uint64_t rt[4];
        sources.realtime(rt);
        header(b, "basalt_realtime_connections", "gauge", "Open realtime connections, by transport.");
        buf_printf(b,
                   "basalt_realtime_connections{transport=\"sse\"} %llu\n"
                   "basalt_realtime_connections{transport=\"websocket\"} %llu\n",
                   (unsigned long long)rt[0], (unsigned long long)rt[1]);
        header(b, "basalt_realtime_subscriptions", "gauge", "Subscriptions of the open connections.");
        buf_printf(b, "basalt_realtime_subscriptions %llu\n", (unsigned long long)rt[2]);
        header(b, "basalt_realtime_resume_log_events", "gauge", "Events held for clients that resume.");
        buf_printf(b, "basalt_realtime_resume_log_events %llu\n", (unsigned long long)rt[3]);
    }
    counter(b, "basalt_realtime_events_total", "Record changes published to realtime subscribers.",
            &metrics_g.rt_published);
    counter(b, "basalt_realtime_deliveries_total", "Events queued on subscribers' connections.",
            &metrics_g.rt_deliveries);
    counter(b, "basalt_realtime_resumes_total", "Reconnects that replayed missed events.",
            &metrics_g.rt_resumes);
    counter(b, "basalt_realtime_resyncs_total", "Reconnects told to resync (missed events no longer held).",
            &metrics_g.rt_resyncs);
    counter2(b, "basalt_realtime_closed_total", "Realtime connections the server closed, by reason.",
             "reason", "slow_consumer", &metrics_g.rt_closed_slow, "idle", &metrics_g.rt_closed_idle);
    counter2(b, "basalt_realtime_refused_total",
             "Realtime requests refused by a limit (connections, subscriptions, message rate).", "limit",
             "connections", &metrics_g.rt_refused, "message_rate", &metrics_g.rt_rate_limited);
    header(b, "basalt_realtime_delivery_seconds", "histogram",
           "Time from the commit of a change to its payload queued on a subscriber's connection.");
    write_hist(b, "basalt_realtime_delivery_seconds", "", &metrics_g.rt_latency, 0);
    header(b, "basalt_logins_total", "counter", "Password logins by result.");
    buf_printf(b,
               "basalt_logins_total{result=\"success\"} %llu\nbasalt_logins_total{result=\"failure\"} %llu\n",
               (unsigned long long)__atomic_load_n(&metrics_g.logins_ok, __ATOMIC_RELAXED),
               (unsigned long long)__atomic_load_n(&metrics_g.logins_failed, __ATOMIC_RELAXED));
    header(b, "basalt_active_users", "gauge",
           "Distinct signed-in users seen in the last 5 minutes (estimate).");
    buf_printf(b, "basalt_active_users %llu\n", (unsigned long long)metrics_active_users(now_ms));
    header(b, "basalt_store_query_duration_seconds", "histogram",
           "Time of reader statements (prepare to done).");
    write_hist(b, "basalt_store_query_duration_seconds", "", &metrics_g.store_query, 0);
    header(b, "basalt_store_commit_duration_seconds", "histogram",
           "Time of writer transactions (group commits).");
    write_hist(b, "basalt_store_commit_duration_seconds", "", &metrics_g.store_commit, 0);
    header(b, "basalt_store_batch_size", "histogram", "Writes per group commit.");
    write_hist(b, "basalt_store_batch_size", "", &metrics_g.store_batch, 1);
    header(b, "basalt_store_commits_total", "counter", "Group commits, by result.");
    buf_printf(b,
               "basalt_store_commits_total{result=\"ok\"} "
               "%llu\nbasalt_store_commits_total{result=\"failed\"} %llu\n",
               (unsigned long long)__atomic_load_n(&metrics_g.store_commits, __ATOMIC_RELAXED),
               (unsigned long long)__atomic_load_n(&metrics_g.store_failed_commits, __ATOMIC_RELAXED));
    header(b, "basalt_store_writer_round_trips_total", "counter",
           "Round trips of the writer's database connection (PostgreSQL; a pipeline counts once).");
    buf_printf(b, "basalt_store_writer_round_trips_total %llu\n",
               (unsigned long long)__atomic_load_n(&metrics_g.store_round_trips, __ATOMIC_RELAXED));
    counter2(b, "basalt_list_totals_skipped_total",
             "Lists answered with totalItems -1 because counting them would outlast --count-budget-ms: "
             "counted past it (reason=\"budget\"), or known to from an earlier count (reason=\"known\").",
             "reason", "budget", &metrics_g.list_counts_over_budget, "known", &metrics_g.list_counts_skipped);
    counter(b, "basalt_list_search_scans_total",
            "Searches sorted by an indexed field whose page was read along that index, the search a filter "
            "of each row, because most rows match (SQLite).",
            &metrics_g.list_search_scans);
    header(b, "basalt_store_checkpoints_total", "counter",
           "SQLite WAL checkpoints: by the checkpoint thread, or by the writer (the pages added while the "
           "thread copied, or a log past its hard size).");
    buf_printf(
        b,
        "basalt_store_checkpoints_total{by=\"thread\"} %llu\nbasalt_store_checkpoints_total{by=\"writer\"} "
        "%llu\n",
        (unsigned long long)__atomic_load_n(&metrics_g.store_ckpt_thread, __ATOMIC_RELAXED),
        (unsigned long long)__atomic_load_n(&metrics_g.store_ckpt_writer, __ATOMIC_RELAXED));
    uint64_t sub = __atomic_load_n(&metrics_g.store_submitted, __ATOMIC_RELAXED);
    uint64_t done = __atomic_load_n(&metrics_g.store_jobs, __ATOMIC_RELAXED);
    header(b, "basalt_store_queue_depth", "gauge", "Writes waiting for the writer.");
    buf_printf(b, "basalt_store_queue_depth %llu\n", (unsigned long long)(sub > done ? sub - done : 0));
    if (sources.db_replica != NULL) {
        int up;
        int64_t lag;
        header(b, "basalt_db_replica_up", "gauge", "1 while a read replica is in the rotation.");
        for (size_t i = 0; sources.db_replica(i, &up, &lag) == 0; i++)
            buf_printf(b, "basalt_db_replica_up{replica=\"%zu\"} %d\n", i, up);
        header(b, "basalt_db_replica_lag_seconds", "gauge",
               "How far a read replica's replay is behind the primary (-1: unknown, not answering).");
        for (size_t i = 0; sources.db_replica(i, &up, &lag) == 0; i++)
            buf_printf(b, "basalt_db_replica_lag_seconds{replica=\"%zu\"} %.3f\n", i,
                       lag < 0 ? -1.0 : (double)lag / 1000.0);
    }
    if (sources.logs_dropped != NULL) {
        header(b, "basalt_request_log_dropped_total", "counter",
               "Request log entries dropped because the writer fell behind (the requests were served).");
        buf_printf(b, "basalt_request_log_dropped_total %llu\n", (unsigned long long)sources.logs_dropped());
    }
    backup_stats_t bk;
    backup_get_stats(&bk);
    if (bk.enabled) {
        header(b, "basalt_backup_last_success_timestamp_seconds", "gauge",
               "When the backup last wrote WAL frames or a snapshot to its target (Unix time).");
        buf_printf(b, "basalt_backup_last_success_timestamp_seconds %.3f\n", bk.last_success_s);
        header(b, "basalt_backup_last_verified_timestamp_seconds", "gauge",
               "When a verification restore of the latest backup last passed (Unix time; 0: never).");
        buf_printf(b, "basalt_backup_last_verified_timestamp_seconds %.3f\n", bk.last_verified_s);
        header(b, "basalt_backup_verify_failures_total", "counter", "Verification restores that failed.");
        buf_printf(b, "basalt_backup_verify_failures_total %llu\n", (unsigned long long)bk.verify_failures);
        header(b, "basalt_backup_lag_seconds", "gauge",
               "Age of the oldest commit not yet shipped to the backup target (0: caught up).");
        buf_printf(b, "basalt_backup_lag_seconds %.3f\n", bk.lag_s);
        header(b, "basalt_backup_generation", "gauge",
               "Number of the current backup generation among those this process started.");
        buf_printf(b, "basalt_backup_generation %llu\n", (unsigned long long)bk.generation);
    }
    pgverify_stats_t pvs;
    pgverify_get_stats(&pvs);
    if (!bk.enabled && pvs.enabled) {
        /* PostgreSQL: pgBackRest ships the WAL; Basalt verifies its backups (the
         * cluster's last verification, as every instance reads it from the store). */
        header(b, "basalt_backup_last_verified_timestamp_seconds", "gauge",
               "When a verification restore of the latest backup last passed (Unix time; 0: never).");
        buf_printf(b, "basalt_backup_last_verified_timestamp_seconds %.3f\n", pvs.last_verified_s);
        header(b, "basalt_backup_verify_failures_total", "counter", "Verification restores that failed.");
        buf_printf(b, "basalt_backup_verify_failures_total %llu\n", (unsigned long long)pvs.failures);
    }
    header(b, "basalt_store_background_jobs_total", "counter",
           "Write jobs of the server's own upkeep (the job queue's claims and polls).");
    buf_printf(b, "basalt_store_background_jobs_total %llu\n",
               (unsigned long long)__atomic_load_n(&metrics_g.store_background_jobs, __ATOMIC_RELAXED));
    header(b, "basalt_store_jobs_total", "counter", "Write jobs run by the writer.");
    buf_printf(b, "basalt_store_jobs_total %llu\n",
               (unsigned long long)__atomic_load_n(&metrics_g.store_jobs, __ATOMIC_RELAXED));
    process_metrics(b);
    if (sources.extra != NULL)
        sources.extra(b, now_ms);
    for (int i = 0; i < nwriters; i++)
        writers[i](b);
}
