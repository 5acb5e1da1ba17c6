/*
 * `basalt db copy`, step 5 (see dbcopy.c's opening): every table's row count, the
 * source's snapshot against the destination, and every definition and setting
 * compared; a report on stderr of each difference.
 */
#include <stdio.h>
#include <string.h>

#include "app/dbcopy_int.h"

/* ---- verification ---- */

int dbcopy_verify(dbcopy_end_t *src, dbcopy_end_t *dst, const schema_t *ss, const dbcopy_coll_rows_t *rows,
                  const dbcopy_params_t *sp)
{
    bs_error_t err;
    bs_error_init(&err);
    int bad = 0;
    int64_t total = 0;
    for (size_t i = 0; i < rows->n; i++) {
        const collection_t *c = schema_find(ss, rows->rows[i].id);
        int64_t a = dbcopy_count_rows(src, c->name, &err), b = dbcopy_count_rows(dst, c->name, &err);
        total += a > 0 ? a : 0;
        if (a < 0 || b < 0 || a != b) {
            char x[32], y[32];
            if (!bad)
                fprintf(stderr, "basalt db copy: verification FAILED:\n");
            fprintf(stderr, "  %-24s source %s rows, destination %s rows%s\n", c->name,
                    a < 0 ? "?" : dbcopy_fmt_n(a, x), b < 0 ? "?" : dbcopy_fmt_n(b, y),
                    a >= 0 && b > a ? " (the destination holds records the source has not)" : "");
            bad++;
        }
    }
    /* Definitions and settings, as the source has them. */
    dbcopy_coll_rows_t dr = {0};
    dbcopy_params_t dp = {0};
    if (dbcopy_load_coll_rows(dst, &dr, &err) != 0 || dbcopy_load_params(dst, &dp, &err) != 0) {
        fprintf(stderr,
                "basalt db copy: verification FAILED: cannot read the destination's definitions: %s\n",
                err.message);
        bad++;
    } else {
        for (size_t i = 0; i < rows->n; i++) {
            const dbcopy_coll_row_t *r = &rows->rows[i], *m = NULL;
            for (size_t k = 0; k < dr.n && m == NULL; k++)
                if (strcmp(dr.rows[k].id, r->id) == 0)
                    m = &dr.rows[k];
            int same = m != NULL && strcmp(m->name, r->name) == 0;
            if (same && r->unpartitioned) {
                bs_error_t perr;
                bs_error_init(&perr);
                collection_t *have = collection_from_stored(m->data, &perr);
                same = have != NULL && dbcopy_same_definition(have, schema_find(ss, r->id));
                collection_free(have);
            } else if (same) {
                same = strcmp(m->data, r->data) == 0;
            }
            if (!same) {
                if (!bad)
                    fprintf(stderr, "basalt db copy: verification FAILED:\n");
                fprintf(stderr, "  collection \"%s\": the destination's definition %s\n", r->name,
                        m == NULL ? "is missing" : "differs");
                bad++;
            }
        }
        for (size_t i = 0; i < sp->n; i++) {
            int found;
            const char *v = dbcopy_param_get(&dp, sp->ids[i], &found);
            if (!found || !dbcopy_same_value(v, sp->values[i])) {
                if (!bad)
                    fprintf(stderr, "basalt db copy: verification FAILED:\n");
                fprintf(stderr, "  setting \"%s\": %s at the destination\n", sp->ids[i],
                        found ? "differs" : "missing");
                bad++;
            }
        }
    }
    dbcopy_coll_rows_free(&dr);
    dbcopy_params_free(&dp);
    if (bad)
        return -1;
    char t[32];
    fprintf(stderr,
            "verified: %zu collections, %s records and %zu settings match (source %s, destination %s)\n",
            rows->n, dbcopy_fmt_n(total, t), sp->n, src->where, dst->where);
    return 0;
}
