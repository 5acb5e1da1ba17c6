/* Mail templates: any bytes as a collection's verificationTemplate subject and body
 * (split at the first 0x01 byte, else in the middle) are either refused
 * with a field error or accepted and rendered, with {RECORD:x} placeholders against a
 * record whose values carry markup: the HTML body then holds no '<' from a record
 * value and the subject no control character. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/mail.h"

/* How many times needle occurs in p[0..n). */
static size_t count_of(const char *p, size_t n, const char *needle)
{
    size_t k = 0, m = strlen(needle);
    for (const char *q = p; q != NULL && n >= m && (q = memmem(q, n - (size_t)(q - p), needle, m)) != NULL;
         q++) {
        k++;
        if ((size_t)(q - p) + m > n)
            break;
    }
    return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *cut = memchr(data, 0x01, size);
    size_t ns = cut ? (size_t)(cut - data) : size / 2;
    const char *rest = (const char *)data + ns + (cut ? 1 : 0);
    size_t nb = size - ns - (cut ? 1 : 0);
    json_t *subj = json_stringn_nocheck((const char *)data, ns);
    json_t *bod = json_stringn_nocheck(rest, nb);
    json_t *body = json_pack("{s:{s:o, s:o}}", "verificationTemplate", "subject", subj, "body", bod);
    arena_t a;
    arena_init(&a, 512);
    bs_error_t err;
    bs_error_init(&err);
    /* A collection with a text field "name", a hidden "secretNote" and the password. */
    field_t fields[3] = {{.name = "name", .type = FIELD_TEXT},
                         {.name = "secretNote", .type = FIELD_TEXT, .hidden = 1},
                         {.name = "password", .type = FIELD_PASSWORD, .hidden = 1}};
    collection_t c = {.type = COLL_AUTH, .fields = fields, .nfields = 3};
    json_t *out = NULL;
    mail_templates_parse(&c, body, NULL, &out, &a, &err);
    assert((err.code == BS_ERR_OK) == (err.fields == NULL));
    if (err.code == BS_ERR_OK) {
        c.mail_templates = out;
        json_t *settings = json_pack("{s:{s:s, s:s}}", "meta", "appName", "A<p>", "appURL", "http://x/");
        json_t *rec = json_pack("{s:s, s:s, s:s}", "name", "<script>", "password", "$2a$secret", "secretNote",
                                "$2a$secret");
        buf_t s, h;
        buf_init(&s, NULL);
        buf_init(&h, NULL);
        mail_compose_for(MAIL_VERIFICATION, &c, settings, "tok", "", "", rec, &s, &h);
        for (size_t i = 0; i < s.len; i++)
            assert((unsigned char)s.data[i] >= 0x20 && s.data[i] != 0x7f);
        /* Nothing in the mail came from the record's hidden fields or as its raw
         * markup: the same template rendered for a record with harmless values of
         * the same names has as many "<script>" and "$2a$secret" (a template may
         * spell them itself, also around an empty placeholder: "$2a${OTP_ID}secret"). */
        json_t *plain = json_pack("{s:s, s:s, s:s}", "name", "xscriptx", "password", "$2a$neutral",
                                  "secretNote", "$2a$neutral");
        buf_t s2, h2;
        buf_init(&s2, NULL);
        buf_init(&h2, NULL);
        mail_compose_for(MAIL_VERIFICATION, &c, settings, "tok", "", "", plain, &s2, &h2);
        static const char *const marks[] = {"<script>", "$2a$secret"};
        for (size_t m = 0; m < 2; m++)
            assert(count_of(h.data, h.len, marks[m]) == count_of(h2.data, h2.len, marks[m]));
        /* The subject is plain text (a record's markup is no markup there). */
        assert(count_of(s.data, s.len, marks[1]) == count_of(s2.data, s2.len, marks[1]));
        buf_free(&s2);
        buf_free(&h2);
        json_decref(plain);
        buf_free(&s);
        buf_free(&h);
        json_decref(rec);
        json_decref(settings);
        json_t *j = mail_templates_json(out);
        assert(json_is_object(json_object_get(j, "verificationTemplate")));
        json_decref(j);
        json_decref(out);
    }
    json_decref(body);
    arena_free(&a);
    return 0;
}
