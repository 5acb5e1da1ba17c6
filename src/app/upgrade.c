#include "app/upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"

extern char **environ;

int upgrade_inherited_fds(int *out, int max)
{
    const char *v = getenv("BASALT_LISTEN_FDS");
    if (v == NULL || v[0] == '\0')
        return 0;
    int n = 0;
    for (const char *p = v; *p;) {
        char *end;
        long fd = strtol(p, &end, 10);
        if (end == p || fd < 3 || fd > 1 << 20 || (*end != ',' && *end != '\0') ||
            (*end == ',' && end[1] == '\0') || n == max) {
            fprintf(stderr,
                    "basalt: BASALT_LISTEN_FDS must be a list of descriptors like 3,4 (at most %d), not "
                    "\"%s\"\n",
                    max, v);
            return -1;
        }
        out[n++] = (int)fd;
        p = *end == ',' ? end + 1 : end;
    }
    unsetenv("BASALT_LISTEN_FDS");
    return n;
}

int upgrade_control_fd(void)
{
    const char *v = getenv("BASALT_UPGRADE_FD");
    if (v == NULL || v[0] == '\0')
        return -1;
    char *end;
    long fd = strtol(v, &end, 10);
    unsetenv("BASALT_UPGRADE_FD");
    if (*end != '\0' || fd < 3 || fcntl((int)fd, F_GETFD) < 0)
        return -1;
    fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return (int)fd;
}

pid_t upgrade_spawn(const char *binary, char *const argv[], const int *fds, int n, int *ctl)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        LOGF(LOG_ERROR, "upgrade", "cannot create the control channel: %s", strerror(errno));
        return -1;
    }
    /* Everything the child needs is built before fork: between fork and exec only
     * async-signal-safe calls are allowed in a threaded process. */
    char fdlist[UPGRADE_MAX_FDS * 8 + 32], ctlvar[64];
    size_t off = (size_t)snprintf(fdlist, sizeof(fdlist), "BASALT_LISTEN_FDS=");
    for (int i = 0; i < n && off < sizeof(fdlist) - 12; i++)
        off += (size_t)snprintf(fdlist + off, sizeof(fdlist) - off, "%s%d", i ? "," : "", fds[i]);
    snprintf(ctlvar, sizeof(ctlvar), "BASALT_UPGRADE_FD=%d", sv[1]);
    size_t nenv = 0;
    while (environ[nenv] != NULL)
        nenv++;
    char **envp = calloc(nenv + 3, sizeof(char *));
    if (envp == NULL) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < nenv; i++)
        if (strncmp(environ[i], "BASALT_LISTEN_FDS=", 18) != 0 &&
            strncmp(environ[i], "BASALT_UPGRADE_FD=", 18) != 0)
            envp[k++] = environ[i];
    envp[k++] = fdlist;
    envp[k++] = ctlvar;
    envp[k] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        /* The child: every other descriptor closes on exec (the parent's database
         * files, eventfds, client connections); these survive it. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
        for (int i = 0; i < n; i++)
            fcntl(fds[i], F_SETFD, 0);
        fcntl(sv[1], F_SETFD, 0);
        execve(binary, argv, envp);
        _exit(127);
    }
    int e = errno;
    free(envp);
    close(sv[1]);
    if (pid < 0) {
        LOGF(LOG_ERROR, "upgrade", "cannot fork: %s", strerror(e));
        close(sv[0]);
        return -1;
    }
    *ctl = sv[0];
    return pid;
}

int upgrade_wait_line(int fd, const char *want, int timeout_ms)
{
    char buf[64];
    size_t have = 0, wlen = strlen(want);
    uint64_t deadline = util_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (have < wlen) {
        uint64_t now = util_mono_ns();
        if (now >= deadline)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)((deadline - now) / 1000000u) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        ssize_t got = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        have += (size_t)got;
        if (have >= wlen && memcmp(buf, want, wlen) != 0)
            return -1;
    }
    return 0;
}

void upgrade_send(int fd, const char *line)
{
    size_t len = strlen(line);
    ssize_t w;
    do
        w = send(fd, line, len, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
}

int upgrade_write_pid_file(const char *path)
{
    char tmp[1100], text[32];
    snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
    int n = snprintf(text, sizeof(text), "%d\n", (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    int ok = write(fd, text, (size_t)n) == n;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

pid_t upgrade_read_pid_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long pid = -1;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = -1;
    fclose(f);
    return pid > 0 ? (pid_t)pid : -1;
}

void upgrade_remove_pid_file(const char *path)
{
    if (path != NULL && path[0] != '\0' && upgrade_read_pid_file(path) == getpid())
        unlink(path);
}

int upgrade_command(int argc, char **argv)
{
    const char *pid_file = NULL;
    long timeout_ms = 60000;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "--pid-file=", 11) == 0)
            pid_file = argv[i] + 11;
        else if (strncmp(argv[i], "--timeout-ms=", 13) == 0)
            timeout_ms = strtol(argv[i] + 13, NULL, 10);
        else {
            fprintf(stderr,
                    "Usage: basalt upgrade --pid-file=FILE [--timeout-ms=60000]\n"
                    "Signals the server whose pid FILE holds to hand its sockets to a new process (the "
                    "binary given by its --upgrade-binary, or its own path) and waits until it has.\n");
            return 2;
        }
    }
    if (pid_file == NULL || timeout_ms < 1) {
        fprintf(stderr, "basalt upgrade: --pid-file=FILE is needed (the server's --pid-file)\n");
        return 2;
    }
    pid_t old = upgrade_read_pid_file(pid_file);
    if (old <= 0 || kill(old, 0) != 0) {
        fprintf(stderr, "basalt upgrade: %s does not name a running server\n", pid_file);
        return 1;
    }
    if (kill(old, SIGUSR2) != 0) {
        fprintf(stderr, "basalt upgrade: cannot signal process %d: %s\n", (int)old, strerror(errno));
        return 1;
    }
    uint64_t deadline = util_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    while (util_mono_ns() < deadline) {
        pid_t now = upgrade_read_pid_file(pid_file);
        if (now > 0 && now != old && kill(now, 0) == 0) {
            printf("Upgraded: process %d now serves; process %d is draining and will exit.\n", (int)now,
                   (int)old);
            return 0;
        }
        usleep(20000);
    }
    fprintf(stderr,
            "basalt upgrade: no new process took over within %ld ms; the old one (%d) keeps serving (see "
            "its log)\n",
            timeout_ms, (int)old);
    return 1;
}
