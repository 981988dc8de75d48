/* SPDX-License-Identifier: MIT */
/* The pure parts of bus/runtime/authz.c: keys, the cache, decision mapping. The asynchronous path against the
 * real polkitd is tests/integration/test-authz.sh. */
#include <systemd/sd-bus.h>

#include "authz.h"
#include "errors.h"
#include "macro.h"
#include "strv.h"
#include "test-util.h"

#ifndef STRV_MAKE
#define STRV_MAKE(...) ((char **) ((const char *[]) { __VA_ARGS__, NULL }))
#endif
#define STRV_MAKE_EMPTY ((char **) ((const char *[]) { NULL }))

static char *key(const char *sender, const char *action, char * const *details, bool interactive) {
        char *k = NULL;
        g_assert_cmpint(con_authz_key(sender, action, details, interactive, &k), ==, 0);
        g_assert_nonnull(k);
        return k;
}

static void test_key_canonical(void) {
        _cleanup_free_ char *a = key(":1.5", "org.x.send", STRV_MAKE("agent", "x", "verb", "task"), false);
        _cleanup_free_ char *b = key(":1.5", "org.x.send", STRV_MAKE("verb", "task", "agent", "x"), false);
        g_assert_cmpstr(a, ==, b);

        _cleanup_free_ char *none1 = key(":1.5", "org.x.send", NULL, false);
        _cleanup_free_ char *none2 = key(":1.5", "org.x.send", STRV_MAKE_EMPTY, false);
        g_assert_cmpstr(none1, ==, none2);
        g_assert_cmpstr(none1, !=, a);
}

static void test_key_distinct(void) {
        _cleanup_free_ char *base = key(":1.5", "org.x.send", STRV_MAKE("agent", "x"), false);
        /* Every component matters, and no concatenation of components can collide. */
        _cleanup_free_ char *other_sender = key(":1.6", "org.x.send", STRV_MAKE("agent", "x"), false);
        _cleanup_free_ char *other_action = key(":1.5", "org.x.read", STRV_MAKE("agent", "x"), false);
        _cleanup_free_ char *other_value = key(":1.5", "org.x.send", STRV_MAKE("agent", "y"), false);
        _cleanup_free_ char *interactive = key(":1.5", "org.x.send", STRV_MAKE("agent", "x"), true);
        _cleanup_free_ char *split1 = key(":1.5", "org.x.send", STRV_MAKE("ab", "c"), false);
        _cleanup_free_ char *split2 = key(":1.5", "org.x.send", STRV_MAKE("a", "bc"), false);
        _cleanup_free_ char *shift1 = key(":1.5", "a", STRV_MAKE("b", "c"), false);
        _cleanup_free_ char *shift2 = key(":1.5a", "b", STRV_MAKE("c", ""), false);
        _cleanup_free_ char *digits1 = key(":1", "1:2", NULL, false);
        _cleanup_free_ char *digits2 = key(":11", ":2", NULL, false);

        g_assert_cmpstr(base, !=, other_sender);
        g_assert_cmpstr(base, !=, other_action);
        g_assert_cmpstr(base, !=, other_value);
        g_assert_cmpstr(base, !=, interactive);
        g_assert_cmpstr(split1, !=, split2);
        g_assert_cmpstr(shift1, !=, shift2);
        g_assert_cmpstr(digits1, !=, digits2);
}

static void test_key_invalid(void) {
        char *k = NULL;
        g_assert_cmpint(con_authz_key(NULL, "a", NULL, false, &k), ==, -EINVAL);
        g_assert_cmpint(con_authz_key("", "a", NULL, false, &k), ==, -EINVAL);
        g_assert_cmpint(con_authz_key(":1.1", "", NULL, false, &k), ==, -EINVAL);
        g_assert_cmpint(con_authz_key(":1.1", NULL, NULL, false, &k), ==, -EINVAL);
        g_assert_cmpint(con_authz_key(":1.1", "a", STRV_MAKE("agent"), false, &k), ==, -EINVAL);
        g_assert_cmpint(con_authz_key(":1.1", "a", STRV_MAKE("", "x"), false, &k), ==, -EINVAL);
        g_assert_cmpint(con_authz_key(":1.1", "a", STRV_MAKE("a", "1", "a", "2"), false, &k), ==, -EINVAL);
        g_assert_cmpint(con_authz_key(":1.1", "a", STRV_MAKE("a", "1", "b", "1", "a", "1"), false, &k), ==,
                        -EINVAL);
        g_assert_cmpint(con_authz_key(":1.1", "a", STRV_MAKE("polkit.message", "hi"), false, &k), ==, -EINVAL);
        g_assert_null(k);
}

static void test_cache_hit_and_expiry(void) {
        _cleanup_(con_authz_cache_freep) ConAuthzCache *c = NULL;
        ConAuthzDecision d = _CON_AUTHZ_DECISION_MAX;

        g_assert_cmpint(con_authz_cache_new(0, 10, &c), ==, -EINVAL);
        g_assert_cmpint(con_authz_cache_new(4, 0, &c), ==, -EINVAL);
        g_assert_cmpint(con_authz_cache_new(4, 1000, &c), ==, 0);

        g_assert_cmpint(con_authz_cache_get(c, "k1", 100, &d), ==, 0);
        g_assert_cmpint(con_authz_cache_put(c, "k1", ":1.1", CON_AUTHZ_ALLOWED, 100), ==, 0);
        g_assert_cmpint(con_authz_cache_put(c, "k2", ":1.1", CON_AUTHZ_DENIED, 100), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, "k1", 1099, &d), ==, 1);
        g_assert_cmpint(d, ==, CON_AUTHZ_ALLOWED);
        g_assert_cmpint(con_authz_cache_get(c, "k2", 500, &d), ==, 1);
        g_assert_cmpint(d, ==, CON_AUTHZ_DENIED);
        /* Exactly at the TTL the entry is gone, and removed. */
        g_assert_cmpint(con_authz_cache_get(c, "k1", 1100, &d), ==, 0);
        g_assert_cmpuint(con_authz_cache_size(c), ==, 1);
        /* A replacement refreshes the time. */
        g_assert_cmpint(con_authz_cache_put(c, "k2", ":1.1", CON_AUTHZ_ALLOWED, 1000), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, "k2", 1999, &d), ==, 1);
        g_assert_cmpint(d, ==, CON_AUTHZ_ALLOWED);
        g_assert_cmpuint(con_authz_cache_size(c), ==, 1);
        g_assert_cmpint(con_authz_cache_put(c, "k3", ":1.1", _CON_AUTHZ_DECISION_MAX, 1), ==, -EINVAL);
}

static void test_cache_lru(void) {
        _cleanup_(con_authz_cache_freep) ConAuthzCache *c = NULL;
        g_assert_cmpint(con_authz_cache_new(3, 1000000, &c), ==, 0);

        g_assert_cmpint(con_authz_cache_put(c, "a", ":1.1", CON_AUTHZ_ALLOWED, 1), ==, 0);
        g_assert_cmpint(con_authz_cache_put(c, "b", ":1.1", CON_AUTHZ_ALLOWED, 2), ==, 0);
        g_assert_cmpint(con_authz_cache_put(c, "c", ":1.1", CON_AUTHZ_ALLOWED, 3), ==, 0);
        /* Touch "a": "b" is now the least recently used and goes first. */
        g_assert_cmpint(con_authz_cache_get(c, "a", 4, NULL), ==, 1);
        g_assert_cmpint(con_authz_cache_put(c, "d", ":1.1", CON_AUTHZ_ALLOWED, 5), ==, 0);
        g_assert_cmpuint(con_authz_cache_size(c), ==, 3);
        g_assert_cmpint(con_authz_cache_get(c, "b", 6, NULL), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, "a", 6, NULL), ==, 1);
        g_assert_cmpint(con_authz_cache_get(c, "c", 6, NULL), ==, 1);
        g_assert_cmpint(con_authz_cache_get(c, "d", 6, NULL), ==, 1);
}

static void test_cache_drop(void) {
        _cleanup_(con_authz_cache_freep) ConAuthzCache *c = NULL;
        g_assert_cmpint(con_authz_cache_new(100, 1000000, &c), ==, 0);

        for (int i = 0; i < 50; i++) {
                char k[32];
                snprintf(k, sizeof k, "key-%d", i);
                g_assert_cmpint(con_authz_cache_put(c, k, i % 2 ? ":1.7" : ":1.8", CON_AUTHZ_DENIED, 1), ==, 0);
        }
        g_assert_cmpuint(con_authz_cache_size(c), ==, 50);
        g_assert_cmpuint(con_authz_cache_drop_sender(c, ":1.7"), ==, 25);
        g_assert_cmpuint(con_authz_cache_drop_sender(c, ":1.7"), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, "key-1", 2, NULL), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, "key-2", 2, NULL), ==, 1);
        g_assert_cmpuint(con_authz_cache_flush(c), ==, 25);
        g_assert_cmpuint(con_authz_cache_size(c), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, "key-2", 2, NULL), ==, 0);
        /* Usable after a flush. */
        g_assert_cmpint(con_authz_cache_put(c, "x", ":1.9", CON_AUTHZ_ALLOWED, 3), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, "x", 3, NULL), ==, 1);
}

/* The callers' uids are kept with no time limit (a unique name's uid never changes): only the LRU
 * bound and the disconnect drop them. */
static void test_cache_no_expiry(void) {
        _cleanup_(con_authz_cache_freep) ConAuthzCache *c = NULL;
        g_assert_cmpint(con_authz_cache_new(2, UINT64_MAX, &c), ==, 0);

        g_assert_cmpint(con_authz_cache_put(c, ":1.1", ":1.1", CON_AUTHZ_ALLOWED, 5), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, ":1.1", UINT64_MAX - 1, NULL), ==, 1);
        g_assert_cmpint(con_authz_cache_put(c, ":1.2", ":1.2", CON_AUTHZ_ALLOWED, 6), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, ":1.1", 7, NULL), ==, 1);
        g_assert_cmpint(con_authz_cache_put(c, ":1.3", ":1.3", CON_AUTHZ_ALLOWED, 7), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, ":1.2", 8, NULL), ==, 0);  /* least recently used */
        g_assert_cmpint(con_authz_cache_get(c, ":1.1", 8, NULL), ==, 1);
        g_assert_cmpuint(con_authz_cache_drop_sender(c, ":1.1"), ==, 1);
        g_assert_cmpint(con_authz_cache_get(c, ":1.1", 9, NULL), ==, 0);
        g_assert_cmpint(con_authz_cache_get(c, ":1.3", 9, NULL), ==, 1);
}

static void test_decision_mapping(void) {
        g_assert_cmpint(con_authz_decision_from_result(true, false), ==, CON_AUTHZ_ALLOWED);
        g_assert_cmpint(con_authz_decision_from_result(true, true), ==, CON_AUTHZ_ALLOWED);
        g_assert_cmpint(con_authz_decision_from_result(false, true), ==, CON_AUTHZ_CHALLENGE);
        g_assert_cmpint(con_authz_decision_from_result(false, false), ==, CON_AUTHZ_DENIED);

        g_assert_cmpint(con_authz_decision_from_error(SD_BUS_ERROR_SERVICE_UNKNOWN, true), ==,
                        CON_AUTHZ_UNAVAILABLE);
        g_assert_cmpint(con_authz_decision_from_error(SD_BUS_ERROR_NAME_HAS_NO_OWNER, true), ==,
                        CON_AUTHZ_UNAVAILABLE);
        g_assert_cmpint(con_authz_decision_from_error("org.freedesktop.DBus.Error.Spawn.ChildExited", true), ==,
                        CON_AUTHZ_UNAVAILABLE);
        g_assert_cmpint(con_authz_decision_from_error("org.freedesktop.PolicyKit1.Error.NotAuthorized", true),
                        ==, CON_AUTHZ_UNTRUSTED);
        g_assert_cmpint(con_authz_decision_from_error("org.freedesktop.PolicyKit1.Error.Failed", true), ==,
                        CON_AUTHZ_FAILED);
        g_assert_cmpint(con_authz_decision_from_error(NULL, true), ==, CON_AUTHZ_FAILED);
        /* The uid lookup: no owner means the caller has gone, anything else is a failure. */
        g_assert_cmpint(con_authz_decision_from_error(SD_BUS_ERROR_NAME_HAS_NO_OWNER, false), ==,
                        CON_AUTHZ_CALLER_GONE);
        g_assert_cmpint(con_authz_decision_from_error(SD_BUS_ERROR_SERVICE_UNKNOWN, false), ==,
                        CON_AUTHZ_FAILED);

        g_assert_true(con_authz_decision_cacheable(CON_AUTHZ_ALLOWED));
        g_assert_true(con_authz_decision_cacheable(CON_AUTHZ_DENIED));
        g_assert_true(con_authz_decision_cacheable(CON_AUTHZ_ROOT));
        g_assert_false(con_authz_decision_cacheable(CON_AUTHZ_TIMEOUT));
        g_assert_false(con_authz_decision_cacheable(CON_AUTHZ_UNAVAILABLE));
        g_assert_false(con_authz_decision_cacheable(CON_AUTHZ_UNTRUSTED));
        g_assert_false(con_authz_decision_cacheable(CON_AUTHZ_FAILED));
        g_assert_false(con_authz_decision_cacheable(CON_AUTHZ_CALLER_GONE));

        for (int d = 0; d < _CON_AUTHZ_DECISION_MAX; d++)
                g_assert_nonnull(con_authz_decision_to_string(d));
        g_assert_null(con_authz_decision_to_string(_CON_AUTHZ_DECISION_MAX));
}

typedef struct ErrorCase {
        ConAuthzDecision decision;
        int ret;
        const char *name;
        const char *needle;
} ErrorCase;

static void test_decision_errors(void) {
        static const ErrorCase cases[] = {
                { CON_AUTHZ_DENIED, -EACCES, CON_ERROR_ACCESS_DENIED,
                  "does not allow this caller to perform org.x.send (agent=x, verb=task)" },
                { CON_AUTHZ_CHALLENGE, -EACCES, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                  "needs interactive authentication" },
                { CON_AUTHZ_UNAVAILABLE, -EACCES, CON_ERROR_ACCESS_DENIED,
                  "authorization service (polkit) unavailable" },
                { CON_AUTHZ_UNTRUSTED, -EACCES, CON_ERROR_ACCESS_DENIED, "org.freedesktop.policykit.owner" },
                { CON_AUTHZ_TIMEOUT, -ETIMEDOUT, CON_ERROR_POLICY_TIMEOUT, "did not answer within 1.5 s" },
                { CON_AUTHZ_CALLER_GONE, -EACCES, CON_ERROR_ACCESS_DENIED, "caller disconnected" },
                { CON_AUTHZ_FAILED, -EACCES, CON_ERROR_ACCESS_DENIED, "failed: boom" },
                { CON_AUTHZ_ROOT, -EACCES, CON_ERROR_ACCESS_DENIED, "failed" },
        };

        g_assert_cmpint(con_bus_errors_register(), >=, 0);
        g_assert_cmpint(con_authz_decision_to_error(CON_AUTHZ_ALLOWED, "org.x.send", NULL, NULL, 0, NULL),
                        ==, 1);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                int r = con_authz_decision_to_error(cases[i].decision, "org.x.send",
                                                    STRV_MAKE("agent", "x", "verb", "task"), "boom",
                                                    1500 * USEC_PER_MSEC, &e);
                g_test_message("%s: %s: %s", con_authz_decision_to_string(cases[i].decision), e.name,
                               e.message);
                g_assert_cmpint(r, ==, cases[i].ret);
                g_assert_cmpstr(e.name, ==, cases[i].name);
                g_assert_nonnull(strstr(e.message, cases[i].needle));
                g_assert_cmpint(sd_bus_error_get_errno(&e), ==, -cases[i].ret);
        }
}

static void test_decision_error_long_details(void) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        char v[300];
        memset(v, 'v', sizeof v - 1);
        v[sizeof v - 1] = 0;
        g_assert_cmpint(con_authz_decision_to_error(CON_AUTHZ_DENIED, "org.x.send",
                                                    STRV_MAKE("a", "b", "verb", "slowish", "k", v), NULL, 0,
                                                    &e),
                        ==, -EACCES);
        g_autofree char *want = g_strdup_printf("(a=b, verb=slowish, k=%s)", v);
        g_assert_true(g_str_has_suffix(e.message, want));
}

static void test_new_needs_root_policy(void) {
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        _cleanup_authz_ ConAuthz *a = NULL;

        g_assert_cmpint(sd_bus_new(&bus), >=, 0);
        /* No root policy: refused, the service has to decide what uid 0 may do. */
        g_assert_cmpint(con_authz_new(bus, NULL, &(ConAuthzOptions) {}, &a), ==, -EINVAL);
        g_assert_cmpint(con_authz_new(bus, NULL, &(ConAuthzOptions) { .root_policy = CON_AUTHZ_ROOT_ASK_TABLE },
                                      &a), ==, -EINVAL);
        /* A bus not attached to an event loop cannot re-dispatch. */
        g_assert_cmpint(con_authz_new(bus, NULL, &(ConAuthzOptions) { .root_policy = CON_AUTHZ_ROOT_ALLOW },
                                      &a), ==, -EINVAL);
        g_assert_null(a);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/authz/key/canonical", test_key_canonical);
        g_test_add_func("/authz/key/distinct", test_key_distinct);
        g_test_add_func("/authz/key/invalid", test_key_invalid);
        g_test_add_func("/authz/cache/hit-and-expiry", test_cache_hit_and_expiry);
        g_test_add_func("/authz/cache/lru", test_cache_lru);
        g_test_add_func("/authz/cache/drop", test_cache_drop);
        g_test_add_func("/authz/cache/no-expiry", test_cache_no_expiry);
        g_test_add_func("/authz/decision/mapping", test_decision_mapping);
        g_test_add_func("/authz/decision/errors", test_decision_errors);
        g_test_add_func("/authz/decision/long-details", test_decision_error_long_details);
        g_test_add_func("/authz/new/needs-root-policy", test_new_needs_root_policy);
        return con_test_run();
}
