#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
    int status;
    const char *name;
    const char *message;
} table[] = {
#define BS_ERR_ROW(name, status, msg) {status, #name, msg},
    BS_ERRORS(BS_ERR_ROW)
#undef BS_ERR_ROW
};

void bs_error_init(bs_error_t *err)
{
    err->code = BS_ERR_OK;
    err->message[0] = '\0';
    err->fields = NULL;
    err->conflict = BS_CONFLICT_NONE;
    err->constraint[0] = '\0';
    err->columns[0] = '\0';
}

void bs_error_set(bs_error_t *err, bs_code_t code, const char *fmt, ...)
{
    err->code = code;
    if (fmt == NULL) {
        snprintf(err->message, sizeof(err->message), "%s", table[code].message);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

void bs_error_field(bs_error_t *err, arena_t *arena, const char *field, const char *code, const char *fmt,
                    ...)
{
    if (err->code == BS_ERR_OK) {
        err->code = BS_ERR_VALIDATION;
        snprintf(err->message, sizeof(err->message), "%s", table[BS_ERR_VALIDATION].message);
    }
    bs_field_error_t *fe = arena_alloc(arena, sizeof(*fe));
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (fe == NULL)
        return;
    fe->field = arena_strdup(arena, field);
    fe->code = arena_strdup(arena, code);
    fe->message = arena_strdup(arena, msg);
    if (fe->field == NULL || fe->code == NULL || fe->message == NULL)
        return;
    fe->next = err->fields;
    err->fields = fe;
}

int bs_status(bs_code_t code)
{
    return code < BS_ERR__COUNT ? table[code].status : 500;
}

const char *bs_default_message(bs_code_t code)
{
    return code < BS_ERR__COUNT ? table[code].message : table[BS_ERR_INTERNAL].message;
}

const char *bs_code_name(bs_code_t code)
{
    return code < BS_ERR__COUNT ? table[code].name : "INTERNAL";
}
