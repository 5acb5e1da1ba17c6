/* The realtime endpoints: thin handlers over the realtime layer. */
#include "api/api.h"
#include "realtime/realtime.h"

void api_realtime_sse(req_ctx_t *ctx, char **params)
{
    (void)params;
    realtime_sse_open(ctx);
}

void api_realtime_subscribe(req_ctx_t *ctx, char **params)
{
    (void)params;
    realtime_sse_subscribe(ctx);
}

void api_realtime_ws(req_ctx_t *ctx, char **params)
{
    (void)params;
    realtime_ws_open(ctx);
}
