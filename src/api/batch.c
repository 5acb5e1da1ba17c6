/*
 * POST /api/batch: many record writes in one transaction, as the SDK's
 * pb.createBatch() sends them (multipart with @jsonPayload, or plain JSON):
 *   {"requests": [{"method": "POST|PUT|PATCH|DELETE", "url": "/api/collections/c/records[/id]", "body":
 * {...}}]} Every item runs with the batch request's authentication and its collection's rule; the first
 * failing item rolls everything back and is reported in PocketBase's shape under data.requests.{i}. Passwords
 * of auth records are hashed on the password pool before the transaction starts.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "auth/password.h"
#include "base/util.h"

typedef enum { B_CREATE, B_UPDATE, B_DELETE, B_UPSERT } batch_op_t;

typedef struct {
    batch_op_t op;
    const collection_t *coll;
    record_write_t w;
    caller_t who; /* w.who: the request's caller with this item's method */
    int created;  /* upsert: whether it created */
    char hash[crypto_pwhash_STRBYTES];
} batch_item_t;

typedef struct {
    password_req_t pw; /* first: posted back from the password pool */
    req_ctx_t *ctx;
    json_t *payload; /* owned */
    batch_item_t *items;
    size_t n;
    size_t hashing; /* index of the item whose password is being hashed */
    size_t failed_at;
    uint64_t deadline_ns;
    json_t *changes;   /* for realtime, shared by the items; NULL when nobody listens */
    record_reader_t r; /* the results' read job */
    buf_t out;
} batch_t;

static void send_item_error(req_ctx_t *ctx, size_t i, const bs_error_t *item_err, const char *what)
{
    buf_t b;
    buf_init(&b, &ctx->arena);
    int status = bs_status(item_err->code);
    buf_printf(&b,
               "{\"status\":400,\"message\":\"Batch transaction failed.\",\"data\":{\"requests\":{\"%zu\":{"
               "\"code\":\"batch_request_failed\",\"message\":",
               i);
    util_json_quote(&b, what, strlen(what));
    buf_printf(&b, ",\"response\":{\"status\":%d,\"message\":", status);
    const char *msg = item_err->message[0] ? item_err->message : bs_default_message(item_err->code);
    util_json_quote(&b, msg, strlen(msg));
    buf_puts(&b, ",\"data\":");
    ctx_write_field_errors(&b, item_err);
    buf_puts(&b, "}}}}}");
    if (b.oom)
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
    else
        ctx_send_json(ctx, 400, b.data, b.len);
}

static int record_exists(store_conn_t *conn, const collection_t *c, const char *id, bs_error_t *err)
{
    json_t *r = record_load(conn, c, "id", id, err);
    if (r != NULL) {
        json_decref(r);
        return 1;
    }
    if (err->code == BS_ERR_NOT_FOUND) {
        bs_error_init(err);
        return 0;
    }
    return -1;
}

static int run_batch(store_job_t *job, store_conn_t *conn)
{
    batch_t *b = ((api_job_t *)job)->data;
    for (size_t i = 0; i < b->n; i++) {
        batch_item_t *it = &b->items[i];
        bs_error_t *err = &job->err;
        if (util_mono_ns() > b->deadline_ns) {
            bs_error_set(err, BS_ERR_BAD_REQUEST, "The batch took longer than its time limit (%d ms).",
                         worker_settings()->batch_timeout_ms);
            b->failed_at = i;
            return -1;
        }
        int rc;
        batch_op_t op = it->op;
        if (op == B_UPSERT) {
            int exists = it->w.id[0] ? record_exists(conn, it->coll, it->w.id, err) : 0;
            if (exists < 0) {
                b->failed_at = i;
                return -1;
            }
            op = exists ? B_UPDATE : B_CREATE;
            it->created = !exists;
        }
        if (op == B_CREATE)
            rc = record_create(conn, &it->w, job->arena, err);
        else if (op == B_UPDATE)
            rc = record_update(conn, &it->w, job->arena, err);
        else
            rc = record_delete(conn, &it->w, job->arena, err);
        if (rc != 0) {
            b->failed_at = i;
            return -1;
        }
    }
    return 0;
}

static int run_results(store_job_t *job, store_conn_t *conn)
{
    batch_t *b = ((api_job_t *)job)->data;
    buf_t *out = &b->out;
    b->r.conn = conn;
    buf_putc(out, '[');
    for (size_t i = 0; i < b->n; i++) {
        batch_item_t *it = &b->items[i];
        if (i)
            buf_putc(out, ',');
        if (it->op == B_DELETE) {
            buf_puts(out, "{\"status\":204,\"body\":null}");
            continue;
        }
        buf_puts(out, "{\"status\":200,\"body\":");
        bs_error_t err;
        bs_error_init(&err);
        size_t mark = out->len;
        int rc = record_fetch(&b->r, it->coll, it->w.id, NULL, NULL, out, &err);
        if (rc <= 0) {
            out->len = mark; /* deleted by a later item of the same batch */
            buf_puts(out, "null");
        }
        buf_putc(out, '}');
    }
    buf_putc(out, ']');
    return 0;
}

static void results_done(api_job_t *j, req_ctx_t *ctx)
{
    batch_t *b = j->data;
    json_decref(b->payload);
    b->payload = NULL;
    if (j->job.status != 0)
        ctx_send_error(ctx, &j->job.err);
    else if (b->out.oom)
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
    else
        ctx_send_json(ctx, 200, b->out.data, b->out.len);
}

static void batch_done(api_job_t *j, req_ctx_t *ctx)
{
    batch_t *b = j->data;
    json_decref(b->changes); /* left only when the job failed */
    b->changes = NULL;
    if (j->job.status != 0) {
        json_decref(b->payload);
        send_item_error(ctx, b->failed_at, &j->job.err, "Batch request failed.");
        return;
    }
    /* The results, read back as the requester may see them: a read job. */
    b->r = api_reader(ctx);
    b->r.skip_view_rule = 1;
    buf_init(&b->out, &ctx->arena);
    api_read(ctx, run_results, results_done, b);
}

static void batch_committed(store_job_t *job)
{
    batch_t *b = ((api_job_t *)job)->data;
    for (size_t i = 0; i < b->n; i++)
        api_bump_written(b->items[i].w.schema, &b->items[i].w.touched);
    api_changes_publish(&b->changes);
}

static void submit(batch_t *b)
{
    b->deadline_ns = util_mono_ns() + (uint64_t)worker_settings()->batch_timeout_ms * 1000000u;
    b->changes = api_changes_new();
    for (size_t i = 0; i < b->n; i++)
        b->items[i].w.changes = b->changes;
    api_submit(b->ctx, run_batch, batch_committed, batch_done, b);
}

static void hash_next(batch_t *b);

static void hashed(mailbox_msg_t *msg)
{
    batch_t *b = (batch_t *)msg;
    req_ctx_t *ctx = b->ctx;
    if (ctx->req == NULL) {
        json_decref(b->payload);
    } else if (!b->pw.ok) {
        json_decref(b->payload);
        ctx_send_status(ctx, BS_ERR_INTERNAL, "A password could not be hashed.");
    } else {
        batch_item_t *it = &b->items[b->hashing];
        memcpy(it->hash, b->pw.hash, sizeof(it->hash));
        it->w.password_hash = it->hash;
        b->hashing++;
        hash_next(b);
    }
    ctx_async_end(ctx);
}

/* Hashes the passwords of the items that set one, one after another, then submits. */
static void hash_next(batch_t *b)
{
    for (; b->hashing < b->n; b->hashing++) {
        batch_item_t *it = &b->items[b->hashing];
        json_t *pw = it->coll->type == COLL_AUTH ? json_object_get(it->w.body, "password") : NULL;
        if (!json_is_string(pw) || json_string_length(pw) == 0)
            continue;
        b->pw.msg.deliver = hashed;
        b->pw.reply_to = &b->ctx->worker->mailbox;
        b->pw.op = PASSWORD_HASH;
        b->pw.password = arena_strdup(&b->ctx->arena, json_string_value(pw));
        ctx_async_begin(b->ctx);
        password_submit(&b->pw);
        return;
    }
    submit(b);
}

/* Parses one item; on error sends the response and returns -1. */
static int parse_item(req_ctx_t *ctx, batch_t *b, size_t i, json_t *req)
{
    batch_item_t *it = &b->items[i];
    bs_error_t err;
    bs_error_init(&err);
    const char *method = json_string_value(json_object_get(req, "method"));
    const char *url = json_string_value(json_object_get(req, "url"));
    json_t *body = json_object_get(req, "body");
    if (method == NULL || url == NULL) {
        bs_error_set(&err, BS_ERR_BAD_REQUEST, "Each batch request needs a method and a url.");
        send_item_error(ctx, i, &err, "Invalid batch request.");
        return -1;
    }
    /* /api/collections/{c}/records[/{id}][?query] */
    char coll[128] = "", id[128] = "";
    const char *q = strchr(url, '?');
    size_t ulen = q ? (size_t)(q - url) : strlen(url);
    char path[512];
    if (ulen >= sizeof(path)) {
        bs_error_set(&err, BS_ERR_BAD_REQUEST, "The batch request url is too long.");
        send_item_error(ctx, i, &err, "Invalid batch request.");
        return -1;
    }
    memcpy(path, url, ulen);
    path[ulen] = '\0';
    int n = 0;
    char tail[8] = "";
    if (sscanf(path, "/api/collections/%127[^/]/records%n", coll, &n) == 1 && n > 0 &&
        (path[n] == '\0' || (sscanf(path + n, "/%127[^/]%7s", id, tail) == 1))) {
    } else {
        coll[0] = '\0';
    }
    if (coll[0] == '\0') {
        bs_error_set(&err, BS_ERR_BAD_REQUEST,
                     "Batch requests may only write records: \"%s\" is not a records url.", path);
        send_item_error(ctx, i, &err, "Invalid batch request.");
        return -1;
    }
    int has_id = id[0] != '\0';
    if (!strcmp(method, "POST") && !has_id)
        it->op = B_CREATE;
    else if (!strcmp(method, "PUT") && !has_id)
        it->op = B_UPSERT;
    else if (!strcmp(method, "PATCH") && has_id)
        it->op = B_UPDATE;
    else if (!strcmp(method, "DELETE") && has_id)
        it->op = B_DELETE;
    else {
        bs_error_set(&err, BS_ERR_BAD_REQUEST,
                     "Unsupported batch request %s %s: use POST or PUT on .../records, PATCH or DELETE on "
                     ".../records/{id}.",
                     method, path);
        send_item_error(ctx, i, &err, "Invalid batch request.");
        return -1;
    }
    it->coll = schema_find(ctx->schema, coll);
    if (it->coll == NULL) {
        bs_error_set(&err, BS_ERR_NOT_FOUND, "Missing collection \"%s\".", coll);
        send_item_error(ctx, i, &err, "Batch request failed.");
        return -1;
    }
    int which = it->op == B_DELETE ? RULE_DELETE : it->op == B_UPDATE ? RULE_UPDATE : RULE_CREATE;
    if (!ctx->who.superuser &&
        (it->coll->rules[which] == NULL || (it->op == B_UPSERT && it->coll->rules[RULE_UPDATE] == NULL))) {
        bs_error_set(&err, BS_ERR_FORBIDDEN, "Only superusers can perform this action.");
        send_item_error(ctx, i, &err, "Batch request failed.");
        return -1;
    }
    if (body != NULL && !json_is_object(body) && !json_is_null(body)) {
        bs_error_set(&err, BS_ERR_BAD_REQUEST, "A batch request body must be an object.");
        send_item_error(ctx, i, &err, "Invalid batch request.");
        return -1;
    }
    if (it->op == B_UPSERT) {
        const char *bid = json_string_value(json_object_get(body, "id"));
        if (bid != NULL)
            snprintf(id, sizeof(id), "%s", bid);
    }
    if (id[0] && !util_valid_id(id, strlen(id))) {
        bs_error_set(&err, BS_ERR_NOT_FOUND, NULL);
        send_item_error(ctx, i, &err, "Batch request failed.");
        return -1;
    }
    json_t *pw = it->coll->type == COLL_AUTH ? json_object_get(body, "password") : NULL;
    if (json_is_string(pw) && json_string_length(pw) > 0) {
        json_t *confirm = json_object_get(body, "passwordConfirm");
        if (!json_equal(pw, confirm) || json_string_length(pw) < 8 || json_string_length(pw) > 71 ||
            api_has_nul(pw)) {
            bs_error_field(
                &err, &ctx->arena, "passwordConfirm", "validation_values_mismatch",
                "The password must be 8-71 characters without NUL bytes and match passwordConfirm.");
            send_item_error(ctx, i, &err, "Batch request failed.");
            return -1;
        }
        if (!ctx->who.superuser && it->op != B_CREATE) {
            bs_error_set(
                &err, BS_ERR_BAD_REQUEST,
                "Change a password through PATCH /api/collections/{c}/records/{id}, not in a batch.");
            send_item_error(ctx, i, &err, "Batch request failed.");
            return -1;
        }
    }
    if (it->op != B_DELETE && json_is_object(body) &&
        record_precheck(it->coll, body, api_rules_read_body(it->coll), &ctx->arena, &err) != 0) {
        send_item_error(ctx, i, &err, "Batch request failed.");
        return -1;
    }
    it->w.schema = ctx->schema;
    it->w.coll = it->coll;
    /* The request's caller, with this item's method for @request.method. */
    it->who = ctx->who;
    it->who.method = method;
    it->w.who = &it->who;
    if (!json_is_object(body)) {
        /* The empty body lives in the payload, so it is freed with it. */
        json_object_set_new(req, "body", json_object());
        body = json_object_get(req, "body");
    }
    it->w.body = body;
    it->w.check_rule = 1;
    size_t idlen = strlen(id); /* at most 100: checked by util_valid_id above */
    if (idlen >= sizeof(it->w.id))
        idlen = 0;
    memcpy(it->w.id, id, idlen);
    it->w.id[idlen] = '\0';
    return 0;
}

void api_batch(req_ctx_t *ctx, char **params)
{
    (void)params;
    bs_error_t err;
    bs_error_init(&err);
    json_t *payload = ctx_body(ctx, &err);
    if (payload == NULL) {
        ctx_send_error(ctx, &err);
        return;
    }
    json_t *reqs = json_object_get(payload, "requests");
    size_t max = (size_t)worker_settings()->batch_max_requests;
    if (!json_is_array(reqs) || json_array_size(reqs) == 0) {
        json_decref(payload);
        bs_error_field(&err, &ctx->arena, "requests", "validation_required",
                       "Send {\"requests\": [{\"method\", \"url\", \"body\"}, ...]}.");
        ctx_send_error(ctx, &err);
        return;
    }
    if (json_array_size(reqs) > max) {
        json_decref(payload);
        bs_error_field(&err, &ctx->arena, "requests", "validation_length_too_long",
                       "A batch may hold at most %zu requests (setting batch-max-requests).", max);
        ctx_send_error(ctx, &err);
        return;
    }
    batch_t *b = arena_calloc(&ctx->arena, sizeof(*b));
    if (b != NULL)
        b->items = arena_calloc(&ctx->arena, json_array_size(reqs) * sizeof(batch_item_t));
    if (b == NULL || b->items == NULL) {
        json_decref(payload);
        ctx_send_status(ctx, BS_ERR_NOMEM, NULL);
        return;
    }
    b->ctx = ctx;
    b->payload = payload;
    b->n = json_array_size(reqs);
    for (size_t i = 0; i < b->n; i++)
        if (parse_item(ctx, b, i, json_array_get(reqs, i)) != 0) {
            json_decref(payload);
            return;
        }
    hash_next(b);
}
