/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contract-util.h"
#include "names.h"
#include "strv.h"

/* ---- violations ---- */

ViolationTransition violation_update(Violation *v, bool passed, uint64_t now_usec) {
        if (!passed && !v->failing) {
                *v = (Violation) { .failing = true, .since_usec = now_usec };
                return VIOLATION_DETECTED;
        }
        if (passed && v->failing) {
                *v = (Violation) {};
                return VIOLATION_CLEARED;
        }
        return VIOLATION_NONE;
}

bool violation_take_escalation(Violation *v) {
        if (!v->failing || v->escalated)
                return false;
        v->escalated = true;
        return true;
}

int contract_escalation_id(const char *id, const char *check, uint64_t since_usec, char **ret) {
        char *s;
        if (asprintf(&s, "contract-%s-%s-%" PRIu64, id, check, since_usec / USEC_PER_SEC) < 0)
                return -ENOMEM;
        for (char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && *p != '-' && *p != '_' && *p != '.')
                        *p = '-';
        if (strlen(s) > 128)
                s[128] = 0;
        *ret = s;
        return 0;
}

int contract_escalation_retry_id(const char *tid, uint64_t random, char **ret) {
        /* 128 characters at most: the tid, '-', 16 hex digits. */
        if (asprintf(ret, "%.111s-%016" PRIx64, tid, random) < 0)
                return -ENOMEM;
        return 0;
}

/* ---- quarantine files ---- */

int contract_quarantine_bus_policy(char * const *agents, char **ret) {
        _cleanup_free_ char *body = NULL;
        if (strv_length(agents) == 0) {
                *ret = NULL;
                return 0;
        }
        STRV_FOREACH(a, agents) {
                _cleanup_free_ char *camel = NULL, *old = TAKE_PTR(body);
                if (con_agent_camel(*a, &camel) < 0)
                        return -EINVAL;
                if (asprintf(&body, "%s    <deny own=\"org.conspiracy.%s\"/>\n", strempty(old), camel) < 0)
                        return -ENOMEM;
        }
        if (asprintf(ret, "<?xml version=\"1.0\"?>\n"
                     "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n"
                     " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                     "<!-- Written by con-contractd: quarantined agents may not own their bus names\n"
                     "     (their services run as root; agent users own no name at all).\n"
                     "     Do not edit; run 'con release AGENT'. -->\n"
                     "<busconfig>\n  <policy user=\"root\">\n%s  </policy>\n</busconfig>\n", body) < 0)
                return -ENOMEM;
        return 0;
}

int contract_quarantine_polkit_rules(char * const *agents, char **ret) {
        _cleanup_free_ char *list = NULL;
        if (strv_length(agents) == 0) {
                *ret = NULL;
                return 0;
        }
        STRV_FOREACH(a, agents) {
                _cleanup_free_ char *old = TAKE_PTR(list);
                if (!con_agent_name_valid(*a))
                        return -EINVAL;
                if (asprintf(&list, "%s%s\"a-%s\"", strempty(old), old ? ", " : "", *a) < 0)
                        return -ENOMEM;
        }
        if (asprintf(ret, "// Written by con-contractd: quarantined agents are denied every ConspiracyOS action.\n"
                     "// Runs before 50-conspiracy.rules. Do not edit; run 'con release AGENT'.\n"
                     "(function () {\n"
                     "    var quarantined = [%s];\n"
                     "    polkit.addRule(function (action, subject) {\n"
                     "        if (action.id.indexOf(\"org.conspiracy.\") === 0 &&\n"
                     "            quarantined.indexOf(subject.user) >= 0)\n"
                     "            return polkit.Result.NO;\n"
                     "    });\n"
                     "}());\n", list) < 0)
                return -ENOMEM;
        return 0;
}
