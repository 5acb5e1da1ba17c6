/*
 * value — a typed scalar passed between the rules compiler, core and the store
 * (query parameters and result cells). Text is borrowed: valid as long as whatever
 * it points into (an arena, a JSON document, a statement row).
 */
#ifndef BASALT_BASE_VALUE_H
#define BASALT_BASE_VALUE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { BS_VAL_NULL = 0, BS_VAL_INT, BS_VAL_DOUBLE, BS_VAL_TEXT } bs_value_type_t;

typedef struct {
    bs_value_type_t type;
    int64_t i;
    double d;
    const char *s;
    size_t n;
} bs_value_t;

static inline bs_value_t bs_val_null(void)
{
    bs_value_t v = {BS_VAL_NULL, 0, 0, NULL, 0};
    return v;
}
static inline bs_value_t bs_val_int(int64_t i)
{
    bs_value_t v = {BS_VAL_INT, i, 0, NULL, 0};
    return v;
}
static inline bs_value_t bs_val_double(double d)
{
    bs_value_t v = {BS_VAL_DOUBLE, 0, d, NULL, 0};
    return v;
}
static inline bs_value_t bs_val_text(const char *s, size_t n)
{
    bs_value_t v = {BS_VAL_TEXT, 0, 0, s, n};
    return v;
}

#endif
