/* Messages name paths; a path long enough to truncate one still leaves it readable. */
#pragma GCC diagnostic ignored "-Wformat-truncation"
#include "backup/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

static int copy_db(const char *src, const char *dst, char *err, size_t errlen)
{
    sqlite3 *s = NULL, *d = NULL;
    int rc = -1;
    unlink(dst);
    if (sqlite3_open_v2(src, &s, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_open_v2(dst, &d, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the database for the backup: %s",
                 d   ? sqlite3_errmsg(d)
                 : s ? sqlite3_errmsg(s)
                     : "out of memory");
        goto out;
    }
    sqlite3_busy_timeout(s, 5000);
    /* A read transaction for the whole copy: one consistent snapshot, and writers go on
     * (WAL mode). The steps only bound how long each call holds the file. */
    if (sqlite3_exec(s, "BEGIN; SELECT count(*) FROM sqlite_schema;", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot read the database: %s", sqlite3_errmsg(s));
        goto out;
    }
    sqlite3_backup *b = sqlite3_backup_init(d, "main", s, "main");
    if (b == NULL) {
        snprintf(err, errlen, "cannot copy the database: %s", sqlite3_errmsg(d));
        goto out;
    }
    int r;
    while ((r = sqlite3_backup_step(b, 1024)) == SQLITE_OK || r == SQLITE_BUSY || r == SQLITE_LOCKED)
        ;
    sqlite3_backup_finish(b);
    if (r != SQLITE_DONE) {
        snprintf(err, errlen, "cannot copy the database: %s", sqlite3_errstr(r));
        goto out;
    }
    rc = 0;
out:
    if (s != NULL)
        sqlite3_exec(s, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(s);
    if (sqlite3_close(d) != SQLITE_OK && rc == 0) {
        snprintf(err, errlen, "cannot write the database copy");
        rc = -1;
    }
    return rc;
}

static int add_file(struct archive *a, const char *path, const char *name, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, st.st_size);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0600);
    archive_entry_set_mtime(e, st.st_mtime, 0);
    int rc = archive_write_header(a, e);
    archive_entry_free(e);
    if (rc != ARCHIVE_OK) {
        snprintf(err, errlen, "cannot write the archive: %s", archive_error_string(a));
        return -1;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(1 << 20);
    size_t n;
    rc = buf ? 0 : -1;
    while (rc == 0 && (n = fread(buf, 1, 1 << 20, f)) > 0)
        if (archive_write_data(a, buf, n) != (la_ssize_t)n) {
            snprintf(err, errlen, "cannot write the archive: %s", archive_error_string(a));
            rc = -1;
        }
    free(buf);
    fclose(f);
    return rc;
}

static int add_tree(struct archive *a, const char *dir, const char *prefix, int depth, char *err,
                    size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX], name[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        snprintf(name, sizeof(name), "%s/%s", prefix, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode) && depth < 16)
            rc = add_tree(a, path, name, depth + 1, err, errlen);
        else if (S_ISREG(st.st_mode))
            rc = add_file(a, path, name, err, errlen);
    }
    closedir(d);
    return rc;
}

int backup_zip_create(const char *db_path, const char *storage_dir, const char *zip_path, char *err,
                      size_t errlen)
{
    char tmpdb[PATH_MAX], tmpzip[PATH_MAX];
    snprintf(tmpdb, sizeof(tmpdb), "%s.db.tmp", zip_path);
    snprintf(tmpzip, sizeof(tmpzip), "%s.tmp", zip_path);
    if (copy_db(db_path, tmpdb, err, errlen) != 0) {
        unlink(tmpdb);
        return -1;
    }
    struct archive *a = archive_write_new();
    int rc = -1;
    if (archive_write_set_format_zip(a) != ARCHIVE_OK ||
        archive_write_open_filename(a, tmpzip) != ARCHIVE_OK) {
        snprintf(err, errlen, "cannot create %s: %s", tmpzip, archive_error_string(a));
        archive_write_free(a);
        unlink(tmpdb);
        return -1;
    }
    if (add_file(a, tmpdb, "data.db", err, errlen) == 0 &&
        (storage_dir == NULL || add_tree(a, storage_dir, "storage", 0, err, errlen) == 0))
        rc = 0;
    if (archive_write_close(a) != ARCHIVE_OK && rc == 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmpzip, archive_error_string(a));
        rc = -1;
    }
    archive_write_free(a);
    unlink(tmpdb);
    if (rc == 0) {
        int fd = open(tmpzip, O_RDONLY);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
        if (rename(tmpzip, zip_path) != 0) {
            snprintf(err, errlen, "cannot rename %s: %s", tmpzip, strerror(errno));
            rc = -1;
        }
    }
    if (rc != 0)
        unlink(tmpzip);
    return rc;
}

/* 1 when name is an entry we restore: "data.db" or storage/<parts> with no empty,
 * "." or ".." part. */
static int entry_ok(const char *name)
{
    if (strcmp(name, "data.db") == 0)
        return 1;
    if (strncmp(name, "storage/", 8) != 0)
        return 0;
    const char *p = name + 8;
    if (*p == '\0')
        return 0;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        p += n;
        if (*p == '/')
            p++;
    }
    return strchr(name, '\\') == NULL;
}

/* What a restore may write: the free space of out_dir's file system less a reserve
 * (a twentieth, at least 64 MiB), so that an archive that expands far beyond its own
 * size (a zip bomb, or a backup of a database bigger than the disk) is refused instead
 * of filling the disk the server runs on. BASALT_RESTORE_MAX_BYTES lowers it (tests). */
static uint64_t extract_budget(const char *out_dir)
{
    struct statvfs vf;
    uint64_t avail = UINT64_MAX;
    if (statvfs(out_dir, &vf) == 0) {
        uint64_t total = (uint64_t)vf.f_blocks * vf.f_frsize, free_b = (uint64_t)vf.f_bavail * vf.f_frsize;
        uint64_t reserve = total / 20 > (64u << 20) ? total / 20 : (64u << 20);
        avail = free_b > reserve ? free_b - reserve : 0;
    }
    const char *cap = getenv("BASALT_RESTORE_MAX_BYTES");
    if (cap != NULL && *cap) {
        uint64_t c = strtoull(cap, NULL, 10);
        if (c > 0 && c < avail)
            avail = c;
    }
    return avail;
}

/* Walks the archive; with out_dir, extracts what entry_ok accepts. */
static int walk_zip(const char *zip_path, const char *out_dir, char *err, size_t errlen)
{
    uint64_t budget = out_dir != NULL ? extract_budget(out_dir) : UINT64_MAX, written = 0;
    struct archive *a = archive_read_new();
    archive_read_support_format_zip(a);
    if (archive_read_open_filename(a, zip_path, 1 << 16) != ARCHIVE_OK) {
        snprintf(err, errlen, "the backup is not a readable zip archive: %s", archive_error_string(a));
        archive_read_free(a);
        return -1;
    }
    struct archive_entry *e;
    int have_db = 0, rc = 0, r;
    char *buf = malloc(1 << 16);
    while (rc == 0 && buf != NULL && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        if (name == NULL)
            continue;
        if (archive_entry_filetype(e) == AE_IFDIR)
            continue;
        if (archive_entry_filetype(e) != AE_IFREG || !entry_ok(name))
            continue; /* links and anything outside data.db and storage/ are ignored */
        if (strcmp(name, "data.db") == 0)
            have_db = 1;
        if (out_dir == NULL)
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", out_dir, name);
        for (char *s = path + strlen(out_dir) + 1; (s = strchr(s, '/')) != NULL; s++) {
            *s = '\0';
            mkdir(path, 0700);
            *s = '/';
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
            snprintf(err, errlen, "cannot extract %s: %s", name, strerror(errno));
            rc = -1;
            break;
        }
        la_ssize_t n;
        while ((n = archive_read_data(a, buf, 1 << 16)) > 0) {
            written += (uint64_t)n;
            if (written > budget) {
                snprintf(
                    err, errlen,
                    "the archive expands to more than the %llu MiB this disk can take (free space less a "
                    "reserve); nothing was restored",
                    (unsigned long long)(budget >> 20));
                rc = -1;
                break;
            }
            if (write(fd, buf, (size_t)n) != n) {
                snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
                rc = -1;
                break;
            }
        }
        if (n < 0 && rc == 0) {
            snprintf(err, errlen, "the archive is damaged at %s: %s", name, archive_error_string(a));
            rc = -1;
        }
        if (fsync(fd) != 0 && rc == 0) {
            snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
            rc = -1;
        }
        close(fd);
    }
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    } else if (rc == 0 && r != ARCHIVE_EOF) {
        snprintf(err, errlen, "the archive is damaged: %s", archive_error_string(a));
        rc = -1;
    }
    free(buf);
    archive_read_free(a);
    if (rc == 0 && !have_db) {
        snprintf(err, errlen, "the archive holds no data.db");
        rc = -1;
    }
    return rc;
}

int backup_zip_check(const char *zip_path, char *err, size_t errlen)
{
    return walk_zip(zip_path, NULL, err, errlen);
}

int backup_zip_extract(const char *zip_path, const char *out_dir, char *err, size_t errlen)
{
    if (walk_zip(zip_path, out_dir, err, errlen) != 0)
        return -1;
    char db[PATH_MAX];
    snprintf(db, sizeof(db), "%s/data.db", out_dir);
    sqlite3 *d = NULL;
    int rc = -1;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(db, &d, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(d, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const char *r = (const char *)sqlite3_column_text(st, 0);
        if (r != NULL && strcmp(r, "ok") == 0)
            rc = 0;
        else
            snprintf(err, errlen, "the backup's database fails integrity_check: %s", r ? r : "?");
    } else
        snprintf(err, errlen, "the backup's data.db is not a database: %s", d ? sqlite3_errmsg(d) : "?");
    sqlite3_finalize(st);
    sqlite3_close(d);
    return rc;
}

int backup_apply_pending_restore(const char *dir, char *err, size_t errlen)
{
    char pending[PATH_MAX], pdb[PATH_MAX];
    snprintf(pending, sizeof(pending), "%s/.pending-restore", dir);
    snprintf(pdb, sizeof(pdb), "%s/data.db", pending);
    struct stat st;
    if (stat(pdb, &st) != 0)
        return 0;
    char aside[PATH_MAX];
    snprintf(aside, sizeof(aside), "%s/.pre-restore-%lld", dir, (long long)time(NULL));
    if (mkdir(aside, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", aside, strerror(errno));
        return -1;
    }
    static const char *names[] = {"data.db", "data.db-wal", "data.db-shm", "storage", NULL};
    for (int i = 0; names[i]; i++) {
        char from[PATH_MAX], to[PATH_MAX];
        snprintf(from, sizeof(from), "%s/%s", dir, names[i]);
        snprintf(to, sizeof(to), "%s/%s", aside, names[i]);
        if (rename(from, to) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot move %s aside: %s", from, strerror(errno));
            return -1;
        }
    }
    for (int i = 0; names[i]; i++) {
        if (i == 1 || i == 2)
            continue;
        char from[PATH_MAX], to[PATH_MAX];
        snprintf(from, sizeof(from), "%s/%s", pending, names[i]);
        snprintf(to, sizeof(to), "%s/%s", dir, names[i]);
        if (rename(from, to) != 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot move the restored %s into place: %s", names[i], strerror(errno));
            return -1;
        }
    }
    rmdir(pending);
    return 1;
}
