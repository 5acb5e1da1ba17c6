#include "auth/token.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "base/util.h"

static const char header_b64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; /* {"alg":"HS256","typ":"JWT"} */

static void hmac(const char *key1, const char *key2, const char *data, size_t n, unsigned char out[32])
{
    char key[512];
    size_t k1 = strlen(key1), k2 = strlen(key2);
    if (k1 + k2 > sizeof(key)) {
        k1 = k1 > sizeof(key) ? sizeof(key) : k1;
        k2 = sizeof(key) - k1;
    }
    memcpy(key, key1, k1);
    memcpy(key + k1, key2, k2);
    unsigned int len = 32;
    HMAC(EVP_sha256(), key, (int)(k1 + k2), (const unsigned char *)data, n, out, &len);
    OPENSSL_cleanse(key, sizeof(key));
}

void token_sign(buf_t *out, const token_claims_t *c, const char *token_key, const char *secret)
{
    size_t start = out->len;
    buf_puts(out, header_b64);
    buf_putc(out, '.');
    buf_t payload;
    buf_init(&payload, NULL);
    buf_puts(&payload, "{\"collectionId\":");
    util_json_quote(&payload, c->collection_id, strlen(c->collection_id));
    if (c->email[0]) {
        buf_puts(&payload, ",\"email\":");
        util_json_quote(&payload, c->email, strlen(c->email));
    }
    buf_printf(&payload, ",\"exp\":%lld,\"id\":", (long long)c->exp);
    util_json_quote(&payload, c->id, strlen(c->id));
    if (c->new_email[0]) {
        buf_puts(&payload, ",\"newEmail\":");
        util_json_quote(&payload, c->new_email, strlen(c->new_email));
    }
    buf_printf(&payload, ",\"refreshable\":%s,\"type\":", c->refreshable ? "true" : "false");
    util_json_quote(&payload, c->type, strlen(c->type));
    buf_putc(&payload, '}');
    util_b64url_encode(out, (const unsigned char *)payload.data, payload.len);
    buf_free(&payload);
    if (out->oom)
        return;
    unsigned char sig[32];
    hmac(token_key, secret, out->data + start, out->len - start, sig);
    buf_putc(out, '.');
    util_b64url_encode(out, sig, sizeof(sig));
}

static int fail(bs_error_t *err, const char *why)
{
    bs_error_set(err, BS_ERR_UNAUTHORIZED, "%s", why);
    return -1;
}

/* Splits tok into its three parts; returns 0 if there are exactly three. */
static int split(const char *tok, size_t len, size_t *d1, size_t *d2)
{
    const char *a = memchr(tok, '.', len);
    if (a == NULL)
        return -1;
    const char *b = memchr(a + 1, '.', len - (size_t)(a + 1 - tok));
    if (b == NULL || memchr(b + 1, '.', len - (size_t)(b + 1 - tok)) != NULL)
        return -1;
    *d1 = (size_t)(a - tok);
    *d2 = (size_t)(b - tok);
    return 0;
}

static void copy_str(char *dst, size_t cap, const json_t *v)
{
    dst[0] = '\0';
    if (json_is_string(v) && json_string_length(v) < cap)
        memcpy(dst, json_string_value(v), json_string_length(v) + 1);
}

int token_peek(const char *tok, size_t len, token_claims_t *c, bs_error_t *err)
{
    size_t d1, d2;
    if (len > 4096 || split(tok, len, &d1, &d2) != 0)
        return fail(err, "The authorization token is malformed.");
    unsigned char payload[4096];
    long n = util_b64url_decode(tok + d1 + 1, d2 - d1 - 1, payload, sizeof(payload) - 1);
    if (n < 0)
        return fail(err, "The authorization token is malformed.");
    json_error_t jerr;
    json_t *o = json_loadb((const char *)payload, (size_t)n, 0, &jerr);
    if (!json_is_object(o)) {
        json_decref(o);
        return fail(err, "The authorization token is malformed.");
    }
    memset(c, 0, sizeof(*c));
    copy_str(c->id, sizeof(c->id), json_object_get(o, "id"));
    copy_str(c->collection_id, sizeof(c->collection_id), json_object_get(o, "collectionId"));
    copy_str(c->type, sizeof(c->type), json_object_get(o, "type"));
    copy_str(c->email, sizeof(c->email), json_object_get(o, "email"));
    copy_str(c->new_email, sizeof(c->new_email), json_object_get(o, "newEmail"));
    json_t *exp = json_object_get(o, "exp");
    c->exp = json_is_integer(exp) ? json_integer_value(exp)
             : json_is_real(exp)  ? (int64_t)json_real_value(exp)
                                  : 0;
    c->refreshable = json_is_true(json_object_get(o, "refreshable"));
    json_decref(o);
    if (c->id[0] == '\0' || c->collection_id[0] == '\0' || c->type[0] == '\0' || c->exp == 0)
        return fail(err, "The authorization token is missing required claims.");
    return 0;
}

int token_verify(const char *tok, size_t len, const char *token_key, const char *secret, int64_t now_s,
                 const char *want_type, bs_error_t *err)
{
    size_t d1, d2;
    token_claims_t c;
    if (token_peek(tok, len, &c, err) != 0 || split(tok, len, &d1, &d2) != 0)
        return -1;
    /* Only HS256: "none", RS*, HS384/512 and anything else are refused. */
    unsigned char hdr[512];
    long hn = util_b64url_decode(tok, d1, hdr, sizeof(hdr) - 1);
    json_error_t jerr;
    json_t *h = hn > 0 ? json_loadb((const char *)hdr, (size_t)hn, 0, &jerr) : NULL;
    const char *alg = json_string_value(json_object_get(h, "alg"));
    int alg_ok = alg != NULL && strcmp(alg, "HS256") == 0;
    json_decref(h);
    if (!alg_ok)
        return fail(err, "The authorization token uses an algorithm other than HS256.");
    unsigned char want[32], got[64];
    hmac(token_key, secret, tok, d2, want);
    long sn = util_b64url_decode(tok + d2 + 1, len - d2 - 1, got, sizeof(got));
    if (sn != 32 || !util_ct_equal(want, got, 32))
        return fail(err, "The authorization token signature is invalid.");
    if (c.exp <= now_s)
        return fail(err, "The authorization token has expired.");
    if (want_type != NULL && strcmp(c.type, want_type) != 0)
        return fail(err, "The authorization token is of the wrong type.");
    return 0;
}
