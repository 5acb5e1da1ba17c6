#include "api/api.h"
#define STUB(n) void n(req_ctx_t *ctx, char **params) { (void)params; ctx_send_status(ctx, BS_ERR_NOT_IMPLEMENTED, NULL); }
STUB(api_request_verification)
STUB(api_confirm_verification)
STUB(api_request_password_reset)
STUB(api_confirm_password_reset)
STUB(api_request_email_change)
STUB(api_confirm_email_change)
STUB(api_request_otp)
STUB(api_auth_with_otp)
STUB(api_webhook_deliveries)
int api_jobs_init(const api_jobs_config_t *c) { (void)c; return 0; }
