/* Messages name paths; a path long enough to truncate one still leaves it readable. */
#pragma GCC diagnostic ignored "-Wformat-truncation"
#include "backup/backup_obj.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "backup/wal.h"

#define SS_HEADER crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define SS_ABYTES crypto_secretstream_xchacha20poly1305_ABYTES

int backup_key_load(const char *path, backup_key_t *k, char *err, size_t errlen)
{
    memset(k, 0, sizeof(*k));
    if (path == NULL || path[0] == '\0')
        return 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read the backup key file %s: %s", path, strerror(errno));
        return -1;
    }
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    if (n < 32) {
        snprintf(err, errlen,
                 "the backup key in %s is too short (%zu bytes; at least 32, e.g. head -c 32 /dev/urandom | "
                 "base64)",
                 path, n);
        sodium_memzero(buf, sizeof(buf));
        return -1;
    }
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium failed to start");
        return -1;
    }
    crypto_generichash(k->key, sizeof(k->key), buf, n, (const uint8_t *)"basalt-backup-key-v1", 20);
    sodium_memzero(buf, sizeof(buf));
    k->set = 1;
    return 0;
}

struct backup_out {
    backup_target_t *t;
    backup_writer_t *w;
    int enc;
    crypto_secretstream_xchacha20poly1305_state st;
    char name[600];
    uint8_t *buf; /* plaintext waiting for a full chunk */
    size_t n;
};

backup_out_t *backup_out_open(backup_target_t *t, const backup_key_t *k, const char *name, char *err,
                              size_t errlen)
{
    backup_out_t *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    o->t = t;
    o->enc = k != NULL && k->set;
    snprintf(o->name, sizeof(o->name), "%s", name);
    o->w = t->ops->open_write(t, name, err, errlen);
    if (o->w == NULL) {
        free(o);
        return NULL;
    }
    if (o->enc) {
        uint8_t hdr[8 + SS_HEADER];
        memcpy(hdr, BACKUP_ENC_MAGIC, 8);
        o->buf = malloc(BACKUP_CHUNK);
        if (o->buf == NULL || crypto_secretstream_xchacha20poly1305_init_push(&o->st, hdr + 8, k->key) != 0 ||
            t->ops->write(o->w, hdr, sizeof(hdr), err, errlen) != 0) {
            if (o->buf == NULL)
                snprintf(err, errlen, "out of memory");
            t->ops->abort(o->w);
            free(o->buf);
            free(o);
            return NULL;
        }
    }
    return o;
}

static int push_chunk(backup_out_t *o, int final, char *err, size_t errlen)
{
    uint8_t *ct = malloc(o->n + SS_ABYTES + 4);
    if (ct == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    unsigned long long clen = 0;
    crypto_secretstream_xchacha20poly1305_push(&o->st, ct + 4, &clen, o->buf, o->n, (const uint8_t *)o->name,
                                               strlen(o->name),
                                               final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                                                     : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
    wal_put32(ct, (uint32_t)clen);
    int rc = o->t->ops->write(o->w, ct, (size_t)clen + 4, err, errlen);
    free(ct);
    o->n = 0;
    return rc;
}

int backup_out_write(backup_out_t *o, const void *data, size_t n, char *err, size_t errlen)
{
    if (!o->enc)
        return o->t->ops->write(o->w, data, n, err, errlen);
    const uint8_t *p = data;
    while (n > 0) {
        size_t k = BACKUP_CHUNK - o->n < n ? BACKUP_CHUNK - o->n : n;
        memcpy(o->buf + o->n, p, k);
        o->n += k;
        p += k;
        n -= k;
        if (o->n == BACKUP_CHUNK && push_chunk(o, 0, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int backup_out_commit(backup_out_t *o, char *err, size_t errlen)
{
    int rc = 0;
    if (o->enc && push_chunk(o, 1, err, errlen) != 0) {
        o->t->ops->abort(o->w);
        rc = -1;
    } else
        rc = o->t->ops->commit(o->w, err, errlen);
    if (o->buf != NULL)
        sodium_memzero(o->buf, BACKUP_CHUNK);
    free(o->buf);
    sodium_memzero(&o->st, sizeof(o->st));
    free(o);
    return rc;
}

void backup_out_abort(backup_out_t *o)
{
    if (o == NULL)
        return;
    o->t->ops->abort(o->w);
    free(o->buf);
    free(o);
}

struct backup_in {
    backup_target_t *t;
    backup_reader_t *r;
    int enc, done;
    crypto_secretstream_xchacha20poly1305_state st;
    char name[600];
    uint8_t *ct;
    uint8_t *pt; /* decrypted bytes not yet returned */
    size_t pt_n, pt_off;
    uint8_t lead[8]; /* plain objects: the bytes read to look for the magic */
    size_t lead_n, lead_off;
};

/* Reads exactly n bytes; returns n, or fewer at the end, or -1. */
static long read_full(backup_in_t *in, uint8_t *buf, size_t n, char *err, size_t errlen)
{
    size_t got = 0;
    while (got < n) {
        long k = in->t->ops->read(in->r, buf + got, n - got, err, errlen);
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (long)got;
}

backup_in_t *backup_in_open(backup_target_t *t, const backup_key_t *k, const char *name, char *err,
                            size_t errlen)
{
    backup_in_t *in = calloc(1, sizeof(*in));
    if (in == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    in->t = t;
    snprintf(in->name, sizeof(in->name), "%s", name);
    in->r = t->ops->open_read(t, name, err, errlen);
    if (in->r == NULL) {
        free(in);
        return NULL;
    }
    long n = read_full(in, in->lead, 8, err, errlen);
    if (n < 0)
        goto fail;
    int magic = n == 8 && memcmp(in->lead, BACKUP_ENC_MAGIC, 8) == 0;
    if (magic && (k == NULL || !k->set)) {
        snprintf(err, errlen, "%s is encrypted: give the key with --backup-key (or BASALT_BACKUP_KEY)", name);
        goto fail;
    }
    if (!magic && k != NULL && k->set) {
        snprintf(err, errlen,
                 "%s is not encrypted although a key is set: it was written without a key, or replaced",
                 name);
        goto fail;
    }
    if (!magic) {
        in->lead_n = (size_t)n;
        return in;
    }
    in->enc = 1;
    uint8_t hdr[SS_HEADER];
    if (read_full(in, hdr, SS_HEADER, err, errlen) != SS_HEADER) {
        snprintf(err, errlen, "%s is truncated (no encryption header)", name);
        goto fail;
    }
    in->ct = malloc(BACKUP_CHUNK + SS_ABYTES);
    in->pt = malloc(BACKUP_CHUNK);
    if (in->ct == NULL || in->pt == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (crypto_secretstream_xchacha20poly1305_init_pull(&in->st, hdr, k->key) != 0) {
        snprintf(err, errlen, "%s has a damaged encryption header", name);
        goto fail;
    }
    return in;
fail:
    backup_in_close(in);
    return NULL;
}

long backup_in_read(backup_in_t *in, void *buf, size_t n, char *err, size_t errlen)
{
    if (!in->enc) {
        if (in->lead_off < in->lead_n) {
            size_t k = in->lead_n - in->lead_off < n ? in->lead_n - in->lead_off : n;
            memcpy(buf, in->lead + in->lead_off, k);
            in->lead_off += k;
            return (long)k;
        }
        return in->t->ops->read(in->r, buf, n, err, errlen);
    }
    while (in->pt_off == in->pt_n) {
        if (in->done)
            return 0;
        uint8_t lb[4];
        long k = read_full(in, lb, 4, err, errlen);
        if (k < 0)
            return -1;
        if (k != 4) {
            snprintf(err, errlen, "%s is truncated (its encrypted stream ends before its final chunk)",
                     in->name);
            return -1;
        }
        uint32_t clen = wal_get32(lb);
        if (clen < SS_ABYTES || clen > BACKUP_CHUNK + SS_ABYTES) {
            snprintf(err, errlen, "%s was altered (a chunk has an impossible length)", in->name);
            return -1;
        }
        if (read_full(in, in->ct, clen, err, errlen) != (long)clen) {
            snprintf(err, errlen, "%s is truncated (a chunk is cut short)", in->name);
            return -1;
        }
        unsigned long long plen = 0;
        unsigned char tag = 0;
        if (crypto_secretstream_xchacha20poly1305_pull(&in->st, in->pt, &plen, &tag, in->ct, clen,
                                                       (const uint8_t *)in->name, strlen(in->name)) != 0) {
            snprintf(err, errlen, "%s cannot be decrypted: wrong backup key, or the file was altered",
                     in->name);
            return -1;
        }
        in->pt_n = (size_t)plen;
        in->pt_off = 0;
        if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL) {
            uint8_t extra;
            long e = read_full(in, &extra, 1, err, errlen);
            if (e != 0) {
                snprintf(err, errlen, "%s was altered (bytes after its final chunk)", in->name);
                return -1;
            }
            in->done = 1;
        }
    }
    size_t k = in->pt_n - in->pt_off < n ? in->pt_n - in->pt_off : n;
    memcpy(buf, in->pt + in->pt_off, k);
    in->pt_off += k;
    return (long)k;
}

void backup_in_close(backup_in_t *in)
{
    if (in == NULL)
        return;
    in->t->ops->close_read(in->r);
    if (in->pt != NULL)
        sodium_memzero(in->pt, BACKUP_CHUNK);
    free(in->pt);
    free(in->ct);
    sodium_memzero(&in->st, sizeof(in->st));
    free(in);
}

int backup_put(backup_target_t *t, const backup_key_t *k, const char *name, const void *data, size_t n,
               char *err, size_t errlen)
{
    backup_out_t *o = backup_out_open(t, k, name, err, errlen);
    if (o == NULL)
        return -1;
    if (backup_out_write(o, data, n, err, errlen) != 0) {
        backup_out_abort(o);
        return -1;
    }
    return backup_out_commit(o, err, errlen);
}

int backup_get(backup_target_t *t, const backup_key_t *k, const char *name, size_t max, uint8_t **data,
               size_t *n, char *err, size_t errlen)
{
    *data = NULL;
    *n = 0;
    backup_in_t *in = backup_in_open(t, k, name, err, errlen);
    if (in == NULL)
        return -1;
    size_t cap = 65536, len = 0;
    uint8_t *buf = malloc(cap);
    int rc = -1;
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (;;) {
        if (len == cap) {
            if (cap >= max) {
                snprintf(err, errlen, "%s is larger than %zu bytes", name, max);
                goto out;
            }
            cap = cap * 2 > max ? max : cap * 2;
            uint8_t *p = realloc(buf, cap);
            if (p == NULL) {
                snprintf(err, errlen, "out of memory");
                goto out;
            }
            buf = p;
        }
        long r = backup_in_read(in, buf + len, cap - len, err, errlen);
        if (r < 0)
            goto out;
        if (r == 0)
            break;
        len += (size_t)r;
    }
    *data = buf;
    *n = len;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    backup_in_close(in);
    return rc;
}

#define KEY_CHECK_TEXT "basalt backup key check v1"

int backup_key_check(backup_target_t *t, const backup_key_t *k, int create, char *err, size_t errlen)
{
    backup_list_t l;
    if (t->ops->list(t, "key-check", &l, err, errlen) != 0)
        return -1;
    int exists = 0;
    for (size_t i = 0; i < l.n; i++)
        exists |= strcmp(l.items[i].name, "key-check") == 0;
    backup_list_free(&l);
    if (!exists) {
        if (!create)
            return 0; /* an older or empty target: each object still authenticates itself */
        return backup_put(t, k, "key-check", KEY_CHECK_TEXT, strlen(KEY_CHECK_TEXT), err, errlen);
    }
    uint8_t *data;
    size_t n;
    char why[512];
    if (backup_get(t, k, "key-check", 4096, &data, &n, why, sizeof(why)) != 0) {
        if (strstr(why, "cannot be decrypted") != NULL)
            snprintf(err, errlen, "wrong backup key: the backups in %s were written with another key",
                     t->ops->describe(t));
        else if (strstr(why, "is encrypted") != NULL)
            snprintf(err, errlen, "the backups in %s are encrypted: give the key with --backup-key",
                     t->ops->describe(t));
        else if (strstr(why, "not encrypted") != NULL)
            snprintf(err, errlen, "the backups in %s are not encrypted, but a backup key is set",
                     t->ops->describe(t));
        else
            snprintf(err, errlen, "%s", why);
        return -1;
    }
    int ok = n == strlen(KEY_CHECK_TEXT) && memcmp(data, KEY_CHECK_TEXT, n) == 0;
    free(data);
    if (!ok) {
        snprintf(err, errlen, "the key check object in %s was altered", t->ops->describe(t));
        return -1;
    }
    return 0;
}
