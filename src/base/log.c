#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/util.h"

static volatile log_level_t current = LOG_INFO;
static const char *names[] = {"debug", "info", "warn", "error", "off"};

void log_set_level(log_level_t level)
{
    current = level;
}

int log_parse_level(const char *s, log_level_t *out)
{
    for (int i = 0; i <= LOG_OFF; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    return -1;
}

int log_enabled(log_level_t level)
{
    return level >= current && current != LOG_OFF;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

void log_msg(log_level_t level, const char *module, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char ts[32];
    util_format_time(util_now_ms(), ts);
    buf_t b;
    buf_init(&b, NULL);
    buf_printf(&b, "{\"time\":\"%s\",\"level\":\"%s\",\"module\":\"%s\",\"msg\":", ts, names[level], module);
    util_json_quote(&b, msg, strlen(msg));
    buf_puts(&b, "}\n");
    if (!b.oom)
        write_all(STDERR_FILENO, b.data, b.len);
    buf_free(&b);
}

void log_access_line(const char *line, unsigned long len)
{
    write_all(STDOUT_FILENO, line, len);
}
