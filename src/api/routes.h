/*
 * routes — the route table's matcher, apart from the dispatcher so that it can be
 * fuzzed with the request paths Basalt accepts (tests/fuzz/fuzz_http.c).
 */
#ifndef BASALT_API_ROUTES_H
#define BASALT_API_ROUTES_H

#include "base/arena.h"

#define API_ROUTE_MAX_PARAMS 4

/* Finds the route for method and path (a decoded path as http/reqcheck.h gives it).
 * Returns its index in the table, or -1; *path_matched tells whether some route
 * has the path under another method (405 rather than 404). params receives the
 * ":name" segments as copies in arena (valid while the arena lives). */
int api_route_find(arena_t *arena, const char *method, const char *path, char **params, int *path_matched);

#endif
