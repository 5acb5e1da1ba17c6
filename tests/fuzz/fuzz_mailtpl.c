/* Mail templates: any bytes as a collection's verificationTemplate subject and body
 * (split at the first 0x01 byte, else in the middle) are either refused
 * with a field error or accepted and rendered, with {RECORD:x} placeholders against a
 * record whose values carry markup: the HTML body then holds no '<' from a record
 * value and the subject no control character. */
#define _GNU_SOURCE
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/mail.h"

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
        /* What the template itself does not say came from the record. */
        int tpl_secret = memmem(data, size, "$2a$secret", 10) != NULL;
        int tpl_script = memmem(data, size, "<script>", 8) != NULL;
        assert(tpl_secret || h.len == 0 || memmem(h.data, h.len, "$2a$secret", 10) == NULL);
        assert(tpl_secret || s.len == 0 || memmem(s.data, s.len, "$2a$secret", 10) == NULL);
        assert(tpl_script || h.len == 0 || memmem(h.data, h.len, "<script>", 8) == NULL);
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
