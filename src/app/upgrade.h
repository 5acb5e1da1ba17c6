/*
 * upgrade — the zero-downtime binary upgrade of one instance (ADR 0012,
 * docs/upgrade.md), as nginx and HAProxy do it: the running process hands its
 * listening sockets to a new process, which starts, takes them over, and says it is
 * ready; the old one then stops accepting, drains and exits.
 *
 * The sockets pass as inherited descriptors: the old process forks, and the child
 * clears close-on-exec on exactly the listening descriptors and execs the new binary
 * with BASALT_LISTEN_FDS=3,4,... naming them (and BASALT_UPGRADE_FD naming one end of
 * a socketpair, the control channel). The child keeps the same open file
 * descriptions, so the kernel's accept queues are shared, never closed: a connection
 * waiting in a queue is accepted by whichever process calls accept first.
 *
 * The control channel carries two lines: "ready\n" from the new process once it
 * serves, and "released\n" from the old once its in-flight requests (and so its
 * writes) are done; on SQLite the new process starts its writer only then, so the
 * two never contend for the write lock in the common case.
 *
 * Threads: the main thread only (it blocks, with time-outs, in poll).
 */
#ifndef BASALT_APP_UPGRADE_H
#define BASALT_APP_UPGRADE_H

#include <sys/types.h>

#define UPGRADE_MAX_FDS 256

/* The listening descriptors this process inherited (BASALT_LISTEN_FDS), at most max;
 * returns their number (0: a normal start) or -1 after a message when the variable
 * is malformed. The variable is removed from the environment. */
int upgrade_inherited_fds(int *out, int max);
/* The control channel inherited from the old process (BASALT_UPGRADE_FD), or -1. */
int upgrade_control_fd(void);

/* Starts binary with argv (NULL-terminated) and the environment, handing it fds[n].
 * Returns the child's pid and the old side of the control channel in *ctl, or -1
 * after logging why. */
pid_t upgrade_spawn(const char *binary, char *const argv[], const int *fds, int n, int *ctl);
/* Waits up to timeout_ms for the line want on fd. Returns 0 when it came, -1 on
 * time-out, end of file or error. */
int upgrade_wait_line(int fd, const char *want, int timeout_ms);
/* Writes line on fd (best effort: the peer may have gone). */
void upgrade_send(int fd, const char *line);

/* Writes this process's pid to path, atomically (a temporary file renamed). Returns
 * 0 or -1 with errno. */
int upgrade_write_pid_file(const char *path);
/* Removes path if it still names this process (after an upgrade it names the new
 * one, which must keep it). */
void upgrade_remove_pid_file(const char *path);
/* The pid in path, or -1. */
pid_t upgrade_read_pid_file(const char *path);

/* `basalt upgrade --pid-file=FILE [--timeout-ms=N]`: signals the server named by the
 * file with SIGUSR2 and waits until the file names a new, running process. Returns
 * the exit code. */
int upgrade_command(int argc, char **argv);

#endif
