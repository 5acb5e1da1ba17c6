/* files/: sniffing, stored names, name checks, thumb specs, the storage interface
 * on the local backend (and its key checks), the S3 URL pieces, the thumbnail
 * pixel limit, and the multipart parser's file parts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files/fileinfo.h"
#include "files/storage.h"
#include "files/thumb.h"
#include "http/body.h"

static void test_sniff(void **state)
{
    (void)state;
    assert_string_equal(files_sniff("\x89PNG\r\n\x1a\n....", 12), "image/png");
    assert_string_equal(files_sniff("\xff\xd8\xff\xe0", 4), "image/jpeg");
    assert_string_equal(files_sniff("GIF89a", 6), "image/gif");
    assert_string_equal(files_sniff("RIFF\0\0\0\0WEBPVP8 ", 16), "image/webp");
    assert_string_equal(files_sniff("%PDF-1.7", 8), "application/pdf");
    assert_string_equal(files_sniff("PK\x03\x04", 4), "application/zip");
    assert_string_equal(files_sniff("\0\0\0\x18"
                                    "ftypmp42",
                                    12),
                        "video/mp4");
    assert_string_equal(files_sniff("hello world", 11), "text/plain; charset=utf-8");
    assert_string_equal(files_sniff("<?xml version=\"1.0\"?><svg xmlns=''>", 35), "image/svg+xml");
    assert_string_equal(files_sniff("<!DOCTYPE html><p>", 18), "text/html; charset=utf-8");
    assert_string_equal(files_sniff("\x01\x02\0\x04", 4), "application/octet-stream");
    assert_string_equal(files_sniff("\xc3\x28", 2), "application/octet-stream"); /* invalid UTF-8 */
    assert_string_equal(files_sniff("", 0), "text/plain; charset=utf-8");
    /* A multi-byte character cut by the sniff window is still text. */
    char buf[FILES_SNIFF_BYTES + 10];
    memset(buf, 'a', sizeof(buf));
    memcpy(buf + FILES_SNIFF_BYTES - 1, "\xc3\xa9", 2);
    assert_string_equal(files_sniff(buf, sizeof(buf)), "text/plain; charset=utf-8");
    assert_true(files_is_thumbable("image/png"));
    assert_false(files_is_thumbable("image/svg+xml"));
    const char *list[] = {"image/jpg", "TEXT/PLAIN"};
    assert_true(files_mime_allowed("image/jpeg", list, 2));
    assert_true(files_mime_allowed("text/plain; charset=utf-8", list, 2));
    assert_false(files_mime_allowed("image/png", list, 2));
}

static void test_unique_names(void **state)
{
    (void)state;
    const char *rnd = "abcdefghij0123456789";
    char out[FILES_MAX_NAME + 2];
    static const struct {
        const char *in, *mime, *want;
    } cases[] = {
        {"My Photo.PNG", "image/png", "my_photo_abcdefghij.PNG"},
        {"archive.tar.gz", "application/gzip", "archive_abcdefghij.tar.gz"},
        {"a.txt", "text/plain", "a0123456789_abcdefghij.txt"},
        {"noext", "image/png", "noext_abcdefghij.png"},
        {"CamelCaseName.jpg", "image/jpeg", "camel_case_name_abcdefghij.jpg"},
        {"../../etc/passwd", "text/plain; charset=utf-8", "passwd_abcdefghij.txt"},
        {"..\\..\\x.bat", "text/plain", "x0123456789_abcdefghij.bat"},
        {"évil name!.p\"n<g", "image/png", "vil_name_abcdefghij.png"},
        {".hidden", "text/plain; charset=utf-8", "0123456789_abcdefghij.hidden"},
        {"", "application/octet-stream", "0123456789_abcdefghij"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = files_unique_name(cases[i].in, strlen(cases[i].in), cases[i].mime, rnd, out);
        assert_int_equal(n, strlen(out));
        assert_string_equal(out, cases[i].want);
        assert_true(files_name_ok(out, n));
    }
    /* Long names are cut: at most 100 chars of base and 20 of extension. */
    char longn[400];
    memset(longn, 'x', sizeof(longn));
    memcpy(longn + 350, ".verylongextensionthatgoesonandon", 33);
    files_unique_name(longn, 383, "text/plain", rnd, out);
    assert_true(strlen(out) <= FILES_MAX_NAME);
    assert_true(files_name_ok(out, strlen(out)));
}

static void test_name_checks(void **state)
{
    (void)state;
    assert_true(files_name_ok("a_b-c.d+e=f#g*h.png", 19));
    const char *bad[] = {"",     ".",   "..",    ".x",  "a/b",      "a\\b",
                         "a..b", "a b", "a%2Fb", "a;b", "\xc3\xa9", "a\nb"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(files_name_ok(bad[i], strlen(bad[i])));
    assert_false(files_name_ok("a\0b", 3));
    char l[FILES_MAX_NAME + 2];
    memset(l, 'a', sizeof(l));
    assert_false(files_name_ok(l, FILES_MAX_NAME + 1));
    assert_true(files_name_ok(l, FILES_MAX_NAME));
}

static void test_thumb_specs(void **state)
{
    (void)state;
    files_thumb_t t;
    assert_int_equal(files_thumb_parse("100x50", 6, &t), 0);
    assert_int_equal(t.w, 100);
    assert_int_equal(t.h, 50);
    assert_int_equal(t.mode, 'c');
    assert_int_equal(files_thumb_parse("100x50t", 7, &t), 0);
    assert_int_equal(t.mode, 't');
    assert_int_equal(files_thumb_parse("100x50b", 7, &t), 0);
    assert_int_equal(files_thumb_parse("100x50f", 7, &t), 0);
    assert_int_equal(t.mode, 'f');
    assert_int_equal(files_thumb_parse("0x50", 4, &t), 0);
    assert_int_equal(files_thumb_parse("50x0", 4, &t), 0);
    const char *bad[] = {"",     "x",       "0x0",      "0x0t",           "100",  "100x",
                         "x100", "100x50x", "100x50tt", "100X50",         "-1x5", "1x-5",
                         " 1x5", "1x5 ",    "10001x5",  "999999999999x1", "1x5z", "123456x1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(files_thumb_parse(bad[i], strlen(bad[i]), &t), -1);
}

static void test_storage_keys(void **state)
{
    (void)state;
    assert_true(storage_key_ok("c/r/name.png", 0));
    assert_true(storage_key_ok("c/r/thumbs_a.png/10x10_a.png", 0));
    assert_true(storage_key_ok("c/r/", 1));
    assert_false(storage_key_ok("c/r/", 0));
    assert_false(storage_key_ok("", 0));
    assert_true(storage_key_ok("", 1)); /* the whole storage, for listing */
    const char *bad[] = {"/abs", "c//r", "c/../r", "c/./r", "c/r/..", "c/r/a b", "c\\r", "c/r/\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(storage_key_ok(bad[i], 0));
        assert_false(storage_key_ok(bad[i], 1));
    }
}

static int count_cb(void *arg, const char *key)
{
    (void)key;
    (*(int *)arg)++;
    return 0;
}

static void test_local_storage(void **state)
{
    (void)state;
    char root[] = "/tmp/basalt-storage-XXXXXX";
    assert_non_null(mkdtemp(root));
    bs_error_t err;
    bs_error_init(&err);
    storage_t *s = storage_local_open(root, &err);
    assert_non_null(s);
    assert_int_equal(storage_put(s, "c/r/a.txt", "hello world", 11, "text/plain", &err), 0);
    assert_int_equal(storage_put(s, "c/r/thumbs_a.txt/1x1_a.txt", "t", 1, "text/plain", &err), 0);
    assert_int_equal(storage_put(s, "c/r2/b.txt", "b", 1, "text/plain", &err), 0);
    storage_stat_t st;
    assert_int_equal(storage_stat(s, "c/r/a.txt", &st, &err), 1);
    assert_int_equal(st.size, 11);
    assert_true(st.etag[0] == '"');
    assert_int_equal(storage_stat(s, "c/r/none.txt", &st, &err), 0);
    char *data;
    size_t n;
    assert_int_equal(storage_get(s, "c/r/a.txt", 6, 5, &data, &n, &err), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(data, "world", 5);
    free(data);
    assert_int_equal(storage_get(s, "c/r/a.txt", 0, -1, &data, &n, &err), 0);
    assert_int_equal(n, 11);
    free(data);
    /* Past the end: nothing. */
    assert_int_equal(storage_get(s, "c/r/a.txt", 50, 5, &data, &n, &err), 0);
    assert_int_equal(n, 0);
    free(data);
    bs_error_init(&err);
    assert_int_equal(storage_get(s, "c/r/none.txt", 0, -1, &data, &n, &err), -1);
    assert_int_equal(err.code, BS_ERR_NOT_FOUND);
    /* Replacing is atomic and leaves no temporary file. */
    assert_int_equal(storage_put(s, "c/r/a.txt", "new", 3, NULL, &err), 0);
    assert_int_equal(storage_stat(s, "c/r/a.txt", &st, &err), 1);
    assert_int_equal(st.size, 3);
    int count = 0;
    assert_int_equal(storage_list(s, "c/r/", count_cb, &count, &err), 0);
    assert_int_equal(count, 2);
    count = 0;
    assert_int_equal(storage_list(s, "c/", count_cb, &count, &err), 0);
    assert_int_equal(count, 3);
    count = 0;
    assert_int_equal(storage_list(s, "c/r/thumbs_", count_cb, &count, &err), 0);
    assert_int_equal(count, 1);
    /* Bad keys never reach the disk. */
    bs_error_init(&err);
    assert_int_equal(storage_put(s, "../escape.txt", "x", 1, NULL, &err), -1);
    assert_int_equal(err.code, BS_ERR_BAD_REQUEST);
    char esc[300];
    snprintf(esc, sizeof(esc), "%s/../escape.txt", root);
    assert_int_not_equal(access(esc, F_OK), 0);
    /* Deleting a folder's keys removes the emptied folders too. */
    assert_int_equal(storage_delete_prefix(s, "c/r/", &err), 0);
    count = 0;
    assert_int_equal(storage_list(s, "c/", count_cb, &count, &err), 0);
    assert_int_equal(count, 1);
    char rdir[300];
    snprintf(rdir, sizeof(rdir), "%s/c/r", root);
    assert_int_not_equal(access(rdir, F_OK), 0);
    assert_int_equal(storage_delete(s, "c/r/a.txt", &err), 0); /* missing: fine */
    assert_int_equal(storage_delete(s, "c/r2/b.txt", &err), 0);
    storage_close(s);
    assert_int_equal(rmdir(root), 0); /* everything went, folders included */
}

static void test_s3_urls(void **state)
{
    (void)state;
    storage_s3_config_t c = {.endpoint = "http://127.0.0.1:9000/", .bucket = "files", .force_path_style = 1};
    char out[512];
    assert_true(storage_s3_url(&c, "a/b c+d=e#f*g.txt", NULL, out, sizeof(out)) > 0);
    assert_string_equal(out, "http://127.0.0.1:9000/files/a/b%20c%2Bd%3De%23f%2Ag.txt");
    c.force_path_style = 0;
    c.endpoint = "https://s3.eu-west-1.amazonaws.com";
    assert_true(storage_s3_url(&c, "k", "list-type=2", out, sizeof(out)) > 0);
    assert_string_equal(out, "https://files.s3.eu-west-1.amazonaws.com/k?list-type=2");
    assert_int_equal(storage_s3_url(&c, "k", NULL, out, 10), -1);
    bs_error_t err;
    bs_error_init(&err);
    storage_s3_config_t bad = {.endpoint = "ftp://x", .bucket = "b"};
    assert_null(storage_s3_open(&bad, &err));
    bad.endpoint = "http://x";
    bad.bucket = "a/b";
    assert_null(storage_s3_open(&bad, &err));
}

static unsigned long crc32_of(const unsigned char *p, size_t n)
{
    unsigned long c = 0xffffffffUL;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320UL & (0UL - (c & 1)));
    }
    return c ^ 0xffffffffUL;
}

/* A PNG declaring w x h with almost no data. */
static size_t fake_png(unsigned char *out, uint32_t w, uint32_t h)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t o = 0;
    memcpy(out, sig, 8);
    o = 8;
    unsigned char ihdr[13] = {(unsigned char)(w >> 24),
                              (unsigned char)(w >> 16),
                              (unsigned char)(w >> 8),
                              (unsigned char)w,
                              (unsigned char)(h >> 24),
                              (unsigned char)(h >> 16),
                              (unsigned char)(h >> 8),
                              (unsigned char)h,
                              8,
                              2,
                              0,
                              0,
                              0};
    unsigned char chunk[4 + 4 + 13 + 4];
    chunk[0] = 0, chunk[1] = 0, chunk[2] = 0, chunk[3] = 13;
    memcpy(chunk + 4, "IHDR", 4);
    memcpy(chunk + 8, ihdr, 13);
    unsigned long crc = crc32_of(chunk + 4, 17);
    chunk[21] = (unsigned char)(crc >> 24), chunk[22] = (unsigned char)(crc >> 16);
    chunk[23] = (unsigned char)(crc >> 8), chunk[24] = (unsigned char)crc;
    memcpy(out + o, chunk, 25);
    o += 25;
    /* An IDAT of one zero byte (a stored deflate block), so the loader reaches the header's end. */
    static const unsigned char z[12] = {0x78, 0x01, 0x01, 0x01, 0x00, 0xfe,
                                        0xff, 0x00, 0x00, 0x01, 0x00, 0x01};
    unsigned char idat[4 + 4 + 12 + 4] = {0, 0, 0, 12, 'I', 'D', 'A', 'T'};
    memcpy(idat + 8, z, 12);
    crc = crc32_of(idat + 4, 16);
    idat[20] = (unsigned char)(crc >> 24), idat[21] = (unsigned char)(crc >> 16);
    idat[22] = (unsigned char)(crc >> 8), idat[23] = (unsigned char)crc;
    memcpy(out + o, idat, 24);
    o += 24;
    static const unsigned char iend[12] = {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xae, 0x42, 0x60, 0x82};
    memcpy(out + o, iend, 12);
    return o + 12;
}

static void test_thumb_limits(void **state)
{
    (void)state;
    assert_int_equal(thumb_init("test_files"), 0);
    assert_false(thumb_started()); /* libvips starts at the first use */
    unsigned char png[96];
    size_t n = fake_png(png, 50000, 50000);
    int w, h, pages;
    assert_int_equal(thumb_probe(png, n, &w, &h, &pages), 0);
    assert_true(thumb_started());
    assert_int_equal(w, 50000);
    assert_int_equal(h, 50000);
    files_thumb_t spec = {100, 100, 'c'};
    void *out = NULL;
    size_t on = 0;
    bs_error_t err;
    bs_error_init(&err);
    assert_int_equal(thumb_make(png, n, "image/png", &spec, 40000000, &out, &on, &err), -1);
    assert_non_null(strstr(err.message, "too large"));
    assert_null(out);
    /* Not an image libvips is given at all. */
    bs_error_init(&err);
    assert_int_equal(thumb_make("GIF89a", 6, "image/svg+xml", &spec, 40000000, &out, &on, &err), -1);
    bs_error_init(&err);
    assert_int_equal(thumb_make("\x89PNG\r\n\x1a\nxx", 10, "image/png", &spec, 40000000, &out, &on, &err),
                     -1);
}

static void test_multipart_files(void **state)
{
    (void)state;
    arena_t a;
    arena_init(&a, 4096);
    static const char body[] =
        "--XB\r\n"
        "Content-Disposition: form-data; name=\"title\"\r\n\r\n"
        "hi\r\n"
        "--XB\r\n"
        "Content-Disposition: form-data; name=\"doc+\"; filename=\"a b.txt\"\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "file\r\nbody\r\n"
        "--XB\r\n"
        "Content-Disposition: form-data; name=\"doc\"; filename*=UTF-8''%C3%A9t%C3%A9.txt; "
        "filename=\"fallback.txt\"\r\n\r\n"
        "\x00\x01\r\n"
        "--XB\r\n"
        "Content-Disposition: form-data; name=\"empty\"; filename=\"\"\r\n\r\n"
        "\r\n"
        "--XB--\r\n";
    const char *ct = "multipart/form-data; boundary=XB";
    body_file_t *files = NULL;
    bs_error_t err;
    bs_error_init(&err);
    json_t *o = body_parse_upload(&a, ct, strlen(ct), body, sizeof(body) - 1, 16, 10, &files, &err);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "title")), "hi");
    assert_string_equal(json_string_value(json_object_get(o, "empty")), ""); /* no file name: a value */
    assert_non_null(files);
    assert_string_equal(files->field, "doc+");
    assert_string_equal(files->filename, "a b.txt");
    assert_int_equal(files->len, 10);
    assert_memory_equal(files->data, "file\r\nbody", 10);
    assert_non_null(files->next);
    assert_string_equal(files->next->filename, "\xc3\xa9t\xc3\xa9.txt"); /* filename* wins */
    assert_int_equal(files->next->len, 2);
    assert_null(files->next->next);
    json_decref(o);
    /* The limit on files per request. */
    bs_error_init(&err);
    assert_null(body_parse_upload(&a, ct, strlen(ct), body, sizeof(body) - 1, 16, 1, &files, &err));
    assert_int_equal(err.code, BS_ERR_BAD_REQUEST);
    /* Where files are not accepted (body_parse), a file part is refused. */
    bs_error_init(&err);
    assert_null(body_parse(&a, ct, strlen(ct), body, sizeof(body) - 1, 16, &err));
    arena_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),           cmocka_unit_test(test_unique_names),
        cmocka_unit_test(test_name_checks),     cmocka_unit_test(test_thumb_specs),
        cmocka_unit_test(test_storage_keys),    cmocka_unit_test(test_local_storage),
        cmocka_unit_test(test_s3_urls),         cmocka_unit_test(test_thumb_limits),
        cmocka_unit_test(test_multipart_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
