/*
 * log — structured JSON log lines on stderr (access log on stdout).
 *
 * Any thread may log. Each line is built in a local buffer and written with one
 * write(2), so lines from different threads never interleave. Check log_enabled()
 * before formatting anything expensive. Never pass a password, token or secret.
 */
#ifndef BASALT_BASE_LOG_H
#define BASALT_BASE_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF } log_level_t;

void log_set_level(log_level_t level);
/* Parses "debug|info|warn|error|off"; returns -1 if unknown. */
int log_parse_level(const char *s, log_level_t *out);
int log_enabled(log_level_t level);
/* Emits {"time":..,"level":..,"module":..,"msg":..}; msg is printf-style. */
void log_msg(log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes one already-formatted line (newline appended) to stdout, the access log. */
void log_access_line(const char *line, unsigned long len);

#define LOGF(level, module, ...)                                                                             \
    do {                                                                                                     \
        if (log_enabled(level))                                                                              \
            log_msg(level, module, __VA_ARGS__);                                                             \
    } while (0)

#endif
