/*
 * backup_obj — reading and writing backup objects, encrypted when a key is set.
 *
 * With a key every object is a libsodium secretstream (XChaCha20-Poly1305): the
 * magic "BSENC001", the stream header, then chunks of at most 64 KiB of plaintext,
 * each as a 4-byte big-endian length and its ciphertext; the last chunk carries the
 * FINAL tag, so a truncated object is detected, and each chunk is authenticated with
 * the object's name as additional data, so objects cannot be swapped or altered
 * unnoticed. Without a key objects are stored as they are (a WAL segment still
 * carries its checksum chain, a snapshot SQLite's own structure).
 *
 * The key file holds a secret of at least 32 bytes (e.g. `head -c 32 /dev/urandom |
 * base64`); the stream key is its BLAKE2b hash, so any text works but only a random
 * one is safe.
 *
 * Threads: any; every call blocks on the target's I/O.
 */
#ifndef BASALT_BACKUP_OBJ_H
#define BASALT_BACKUP_OBJ_H

#include <stddef.h>
#include <stdint.h>

#include "backup/backup_target.h"

typedef struct {
    int set;
    uint8_t key[32];
} backup_key_t;

#define BACKUP_ENC_MAGIC "BSENC001"
#define BACKUP_CHUNK 65536

/* Reads the key from the file at path ("" leaves it unset). 0, or -1 with err. */
int backup_key_load(const char *path, backup_key_t *k, char *err, size_t errlen);

typedef struct backup_out backup_out_t;
typedef struct backup_in backup_in_t;

/* Starts writing object name; the caller owns the result until commit or abort. */
backup_out_t *backup_out_open(backup_target_t *t, const backup_key_t *k, const char *name, char *err,
                              size_t errlen);
int backup_out_write(backup_out_t *o, const void *data, size_t n, char *err, size_t errlen);
/* Finishes the object (it appears whole) and frees o; on failure nothing appears. */
int backup_out_commit(backup_out_t *o, char *err, size_t errlen);
void backup_out_abort(backup_out_t *o);

backup_in_t *backup_in_open(backup_target_t *t, const backup_key_t *k, const char *name, char *err,
                            size_t errlen);
/* Plaintext bytes read (0: the end, reached and authenticated), or -1 with err. */
long backup_in_read(backup_in_t *in, void *buf, size_t n, char *err, size_t errlen);
void backup_in_close(backup_in_t *in);

/* Whole small objects. backup_get returns an owned buffer (free) of at most max bytes. */
int backup_put(backup_target_t *t, const backup_key_t *k, const char *name, const void *data, size_t n,
               char *err, size_t errlen);
int backup_get(backup_target_t *t, const backup_key_t *k, const char *name, size_t max, uint8_t **data,
               size_t *n, char *err, size_t errlen);

/* The object "key-check" proves which key a target was written with. Written once
 * (when absent) by the shipper; checked by restore before anything else:
 * 0 ok, -1 with err (a wrong key, an encrypted target without a key, or the reverse). */
int backup_key_check(backup_target_t *t, const backup_key_t *k, int create, char *err, size_t errlen);

#endif
