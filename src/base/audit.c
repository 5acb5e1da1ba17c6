#include "base/audit.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"

static int fd = -1;

int audit_open(const char *path)
{
    if (path == NULL || path[0] == '\0')
        return 0;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    return fd < 0 ? -1 : 0;
}

void audit_close(void)
{
    if (fd >= 0)
        close(fd);
    fd = -1;
}

static void field(buf_t *b, const char *k, const char *v)
{
    buf_printf(b, ",\"%s\":", k);
    if (v == NULL)
        buf_puts(b, "null");
    else
        util_json_quote(b, v, strlen(v));
}

void audit_log(const audit_event_t *e)
{
    char ts[UTIL_TIME_LEN + 1];
    util_format_time(util_now_ms(), ts);
    buf_t b;
    buf_init(&b, NULL);
    buf_printf(&b, "{\"time\":\"%s\"", ts);
    field(&b, "action", e->action);
    field(&b, "actor", e->actor);
    field(&b, "target", e->target);
    field(&b, "ip", e->ip);
    field(&b, "request_id", e->request_id);
    field(&b, "detail", e->detail);
    buf_puts(&b, "}\n");
    if (!b.oom) {
        if (fd >= 0) {
            ssize_t w = write(fd, b.data, b.len);
            (void)w;
        } else {
            LOGF(LOG_INFO, "audit", "%.*s", (int)b.len - 1, b.data);
        }
    }
    buf_free(&b);
}
