/* cron: the expressions PocketBase's tools/cron accepts, what each means, the next
 * tick, and the refusals. Plus the webhooks' address checks and signature. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "jobs/cron.h"
#include "webhooks/webhooks.h"

static int parse(const char *e, cron_t *c)
{
    char why[160];
    return cron_parse(e, strlen(e), c, why, sizeof(why));
}

/* ms of a UTC date. */
static int64_t at(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
    return (int64_t)timegm(&tm) * 1000;
}

static void test_fields(void **state)
{
    (void)state;
    cron_t c;
    assert_int_equal(parse("* * * * *", &c), 0);
    assert_true(c.minutes == (1ull << 60) - 1 && c.hours == (1u << 24) - 1);
    assert_int_equal(parse("*/15 * * * *", &c), 0);
    assert_true(c.minutes == (1ull << 0 | 1ull << 15 | 1ull << 30 | 1ull << 45));
    assert_int_equal(parse("1-10/3 0 * * *", &c), 0);
    assert_true(c.minutes == (1ull << 1 | 1ull << 4 | 1ull << 7 | 1ull << 10));
    assert_int_equal(parse("5,10,59 1,23 1,31 2,12 0,6", &c), 0);
    assert_true(c.minutes == (1ull << 5 | 1ull << 10 | 1ull << 59));
    assert_true(c.days == (1u << 1 | 1u << 31) && c.months == (1u << 2 | 1u << 12) &&
                c.weekdays == (1u | 1u << 6));
}

static void test_macros(void **state)
{
    (void)state;
    cron_t a, b;
    const char *pairs[][2] = {{"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
                              {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
                              {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
                              {"@hourly", "0 * * * *"}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        assert_int_equal(parse(pairs[i][0], &a), 0);
        assert_int_equal(parse(pairs[i][1], &b), 0);
        assert_memory_equal(&a, &b, sizeof(a));
    }
}

static void test_refusals(void **state)
{
    (void)state;
    cron_t c;
    const char *bad[] = {"",
                         "* * * *",
                         "* * * * * *",
                         "*  * * * *",
                         "60 * * * *",
                         "* 24 * * *",
                         "* * 0 * *",
                         "* * 32 * *",
                         "* * * 13 *",
                         "* * * * 7",
                         "5/2 * * * *",
                         "*/0 * * * *",
                         "*/61 * * * *",
                         "1,,2 * * * *",
                         "1, * * * *",
                         "a * * * *",
                         "10-5 * * * *",
                         "@often",
                         "-1 * * * *",
                         "1-2-3 * * * *",
                         "1/2/3 * * * *",
                         " * * * * *",
                         "* * * * * "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char why[160] = "";
        assert_int_not_equal(cron_parse(bad[i], strlen(bad[i]), &c, why, sizeof(why)), 0);
        assert_true(why[0] != '\0');
    }
}

static void test_next(void **state)
{
    (void)state;
    cron_t c;
    parse("*/15 * * * *", &c);
    assert_true(cron_next(&c, at(2026, 12, 1, 10, 7)) == at(2026, 12, 1, 10, 15));
    assert_true(cron_next(&c, at(2026, 12, 1, 10, 15)) == at(2026, 12, 1, 10, 30)); /* strictly after */
    parse("@daily", &c);
    assert_true(cron_next(&c, at(2026, 12, 31, 23, 59)) == at(2027, 1, 1, 0, 0));
    parse("0 12 29 2 *", &c); /* a leap day */
    assert_true(cron_next(&c, at(2026, 3, 1, 0, 0)) == at(2028, 2, 29, 12, 0));
    /* day of month AND day of week, as PocketBase: the 13th that is a Friday */
    parse("0 0 13 * 5", &c);
    assert_true(cron_next(&c, at(2026, 1, 1, 0, 0)) == at(2026, 2, 13, 0, 0));
    assert_true(cron_due(&c, at(2026, 2, 13, 0, 0)));
    assert_false(cron_due(&c, at(2026, 2, 13, 0, 1)));
    parse("0 0 31 2 *", &c); /* never */
    assert_true(cron_next(&c, at(2026, 1, 1, 0, 0)) == -1);
}

static void test_webhook_addresses(void **state)
{
    (void)state;
    const char *refused[] = {"127.0.0.1",
                             "127.1.2.3",
                             "10.0.0.1",
                             "172.16.5.4",
                             "192.168.1.1",
                             "169.254.169.254",
                             "0.0.0.0",
                             "100.64.0.1",
                             "224.0.0.1",
                             "::1",
                             "::",
                             "fe80::1",
                             "fd00::1",
                             "::ffff:127.0.0.1",
                             "::ffff:10.1.2.3",
                             "ff02::1",
                             "255.255.255.255"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        assert_int_equal(webhooks_address_allowed(refused[i], ""), 0);
    assert_int_equal(webhooks_address_allowed("93.184.216.34", ""), 1);
    assert_int_equal(webhooks_address_allowed("2606:2800:220:1:248:1893:25c8:1946", ""), 1);
    assert_int_equal(webhooks_address_allowed("::ffff:93.184.216.34", ""), 1);
    assert_int_equal(webhooks_address_allowed("127.0.0.1", "10.0.0.1, 127.0.0.1"), 1);
    assert_int_equal(webhooks_address_allowed("127.0.0.2", "127.0.0.1"), 0);
    assert_int_equal(webhooks_address_allowed("not-an-ip", ""), 0);
}

static void test_webhook_signature(void **state)
{
    (void)state;
    /* The Standard Webhooks specification's example. */
    char sig[128];
    assert_int_equal(webhooks_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                                   1614265330, "{\"test\": 2432232314}", 20, sig, sizeof(sig)),
                     0);
    assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    assert_int_not_equal(webhooks_sign("plain", "m", 1, "x", 1, sig, sizeof(sig)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_macros),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_next),
        cmocka_unit_test(test_webhook_addresses),
        cmocka_unit_test(test_webhook_signature),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
