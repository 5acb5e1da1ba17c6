/* The file pool (see filepool.h): a mutex-protected FIFO and a few threads. */
#include "base/util.h"
#include "files/filepool.h"

#include <pthread.h>
#include <stdlib.h>

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    files_work_t *head, **tail;
    pthread_t *threads;
    int nthreads, stopping, running, queued;
    files_settings_t settings;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *worker(void *arg)
{
    util_thread_name("files");
    (void)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (pool.head == NULL && !pool.stopping)
            pthread_cond_wait(&pool.cond, &pool.lock);
        if (pool.head == NULL)
            break;
        files_work_t *w = pool.head;
        pool.head = w->next;
        if (pool.head == NULL)
            pool.tail = &pool.head;
        pthread_mutex_unlock(&pool.lock);
        w->run(w);
        if (w->reply_to != NULL)
            mailbox_post(w->reply_to, &w->msg);
        else if (w->release != NULL)
            w->release(w);
        pthread_mutex_lock(&pool.lock);
        pool.queued--;
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

int filepool_start(const files_settings_t *s)
{
    pool.settings = *s;
    if (pool.settings.threads < 1)
        pool.settings.threads = 1;
    if (pool.settings.max_queue < 1)
        pool.settings.max_queue = 10000;
    pool.tail = &pool.head;
    pool.stopping = 0;
    pool.threads = calloc((size_t)pool.settings.threads, sizeof(pthread_t));
    if (pool.threads == NULL)
        return -1;
    for (int i = 0; i < pool.settings.threads; i++) {
        if (pthread_create(&pool.threads[i], NULL, worker, NULL) != 0)
            break;
        pool.nthreads++;
    }
    pool.running = pool.nthreads > 0;
    return pool.running ? 0 : -1;
}

void filepool_stop(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.stopping = 1;
    pthread_cond_broadcast(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < pool.nthreads; i++)
        pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.nthreads = 0;
    pool.running = 0;
    storage_close(pool.settings.storage);
    pool.settings.storage = NULL;
}

int filepool_submit(files_work_t *w)
{
    pthread_mutex_lock(&pool.lock);
    if (!pool.running || pool.stopping || pool.queued >= pool.settings.max_queue) {
        pthread_mutex_unlock(&pool.lock);
        return -1;
    }
    w->next = NULL;
    *pool.tail = w;
    pool.tail = &w->next;
    pool.queued++;
    pthread_cond_signal(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
    return 0;
}

storage_t *filepool_storage(void)
{
    return pool.running ? pool.settings.storage : NULL;
}

const files_settings_t *filepool_settings(void)
{
    return &pool.settings;
}

int filepool_queued(void)
{
    pthread_mutex_lock(&pool.lock);
    int n = pool.queued;
    pthread_mutex_unlock(&pool.lock);
    return n;
}
