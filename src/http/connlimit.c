#include "http/connlimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 4096

typedef struct node {
    struct node *next;
    size_t count;
    char ip[48];
} node_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static node_t *buckets[BUCKETS];
static size_t total;

static size_t slot(const char *ip)
{
    size_t h = 5381;
    for (; *ip; ip++)
        h = h * 33 + (unsigned char)*ip;
    return h % BUCKETS;
}

int connlimit_acquire(const char *ip, size_t max_total, size_t max_per_ip)
{
    pthread_mutex_lock(&lock);
    if (max_total && total >= max_total) {
        pthread_mutex_unlock(&lock);
        return 0;
    }
    node_t **pp = &buckets[slot(ip)], *n = *pp;
    while (n != NULL && strcmp(n->ip, ip) != 0)
        n = n->next;
    if (n != NULL && max_per_ip && n->count >= max_per_ip) {
        pthread_mutex_unlock(&lock);
        return 0;
    }
    if (n == NULL) {
        n = calloc(1, sizeof(*n));
        if (n == NULL) {
            pthread_mutex_unlock(&lock);
            return 0; /* out of memory: refusing a connection is the safe answer */
        }
        strncpy(n->ip, ip, sizeof(n->ip) - 1);
        n->next = *pp;
        *pp = n;
    }
    n->count++;
    total++;
    pthread_mutex_unlock(&lock);
    return 1;
}

void connlimit_release(const char *ip)
{
    pthread_mutex_lock(&lock);
    node_t **pp = &buckets[slot(ip)];
    while (*pp != NULL && strcmp((*pp)->ip, ip) != 0)
        pp = &(*pp)->next;
    node_t *n = *pp;
    if (n != NULL) {
        total--;
        if (--n->count == 0) {
            *pp = n->next;
            free(n);
        }
    }
    pthread_mutex_unlock(&lock);
}

size_t connlimit_total(void)
{
    pthread_mutex_lock(&lock);
    size_t t = total;
    pthread_mutex_unlock(&lock);
    return t;
}
