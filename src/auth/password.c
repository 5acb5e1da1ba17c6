#include "base/util.h"
#include "auth/password.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    password_req_t *head, **tail;
    pthread_t *threads;
    int nthreads, stopping;
    unsigned long long ops;
    size_t mem;
    char dummy[crypto_pwhash_STRBYTES];
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER, .ops = 2, .mem = 19u << 20};

int password_hash_now(const char *password, char out[crypto_pwhash_STRBYTES])
{
    return crypto_pwhash_str_alg(out, password, strlen(password), pool.ops, pool.mem,
                                 crypto_pwhash_ALG_ARGON2ID13);
}

const char *password_dummy_hash(void)
{
    return pool.dummy;
}

int password_verify_now(const char *hash, const char *password)
{
    return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}

static void run(password_req_t *r)
{
    if (r->op == PASSWORD_HASH) {
        r->ok = password_hash_now(r->password, r->hash) == 0;
    } else {
        const char *h = r->hash[0] ? r->hash : pool.dummy;
        r->ok = password_verify_now(h, r->password) && r->hash[0] != '\0';
    }
    sodium_memzero(r->password, strlen(r->password));
}

static void *worker(void *arg)
{
    util_thread_name("password");
    (void)arg;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (pool.head == NULL && !pool.stopping)
            pthread_cond_wait(&pool.cond, &pool.lock);
        if (pool.head == NULL)
            break;
        password_req_t *r = pool.head;
        pool.head = r->next;
        if (pool.head == NULL)
            pool.tail = &pool.head;
        pthread_mutex_unlock(&pool.lock);
        run(r);
        mailbox_post(r->reply_to, &r->msg);
        pthread_mutex_lock(&pool.lock);
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

int password_start(int threads, unsigned long long opslimit, size_t memlimit)
{
    if (sodium_init() < 0)
        return -1;
    pool.ops = opslimit;
    pool.mem = memlimit;
    pool.tail = &pool.head;
    pool.stopping = 0;
    /* The dummy: an Argon2id string with this cost, a random salt and a random digest.
     * Verifying against it costs what a real hash costs (the cost is read from the
     * string) and matches no password; written out rather than hashed, which cost
     * every process start (the server, each CLI command) one Argon2id run. */
    unsigned char salt[crypto_pwhash_SALTBYTES], digest[32];
    randombytes_buf(salt, sizeof(salt));
    randombytes_buf(digest, sizeof(digest));
    char salt64[sodium_base64_ENCODED_LEN(sizeof(salt), sodium_base64_VARIANT_ORIGINAL_NO_PADDING)];
    char digest64[sodium_base64_ENCODED_LEN(sizeof(digest), sodium_base64_VARIANT_ORIGINAL_NO_PADDING)];
    sodium_bin2base64(salt64, sizeof(salt64), salt, sizeof(salt), sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    sodium_bin2base64(digest64, sizeof(digest64), digest, sizeof(digest),
                      sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    int n = snprintf(pool.dummy, sizeof(pool.dummy), "$argon2id$v=19$m=%zu,t=%llu,p=1$%s$%s", memlimit / 1024,
                     opslimit, salt64, digest64);
    if (n < 0 || (size_t)n >= sizeof(pool.dummy))
        return -1;
    if (threads <= 0)
        return 0;
    pool.threads = calloc((size_t)threads, sizeof(pthread_t));
    if (pool.threads == NULL)
        return -1;
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&pool.threads[i], NULL, worker, NULL) != 0)
            return -1;
        pool.nthreads++;
    }
    return 0;
}

void password_stop(void)
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
}

void password_submit(password_req_t *r)
{
    r->next = NULL;
    pthread_mutex_lock(&pool.lock);
    if (pool.tail == NULL)
        pool.tail = &pool.head;
    *pool.tail = r;
    pool.tail = &r->next;
    pthread_cond_signal(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
}
