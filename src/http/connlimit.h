/*
 * connlimit — open connections per client address and in total, for the caps on
 * connections. Any thread; one lock (connections open and close far less often
 * than requests arrive). Memory: one small node per address with open connections.
 */
#ifndef BASALT_HTTP_CONNLIMIT_H
#define BASALT_HTTP_CONNLIMIT_H

#include <stddef.h>

/* Counts a new connection from ip. Returns 1 if it is within max_total and
 * max_per_ip (0 = no cap) and was counted, 0 if refused (nothing counted). */
int connlimit_acquire(const char *ip, size_t max_total, size_t max_per_ip);
/* Uncounts a connection counted by connlimit_acquire. */
void connlimit_release(const char *ip);
size_t connlimit_total(void);

#endif
