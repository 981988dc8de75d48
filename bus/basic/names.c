/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "names.h"

/* Names the fabric keeps for itself: its own services' bus names (router -> org.conspiracy.Router)
 * and words that would be confusing as an agent or a Linux user. */
static const char * const reserved[] = {
        "router", "contracts", "models", "provisioner", "mesh", "status", "web", "gateway", "fabric",
        "con", "root", "all", "system", "inbox", "agents", "agent", "human", "humans", "nobody",
        "trusted", "officers", "operators", "workers", "daemon", "dbus", "polkit",
        NULL,
};

const char * const *con_reserved_names(void) {
        return reserved;
}

ConNameProblem con_agent_name_check(const char *name) {
        if (isempty(name))
                return CON_NAME_EMPTY;
        size_t l = strlen(name);
        if (l > CON_AGENT_NAME_MAX)
                return CON_NAME_TOO_LONG;
        if (!(name[0] >= 'a' && name[0] <= 'z'))
                return CON_NAME_BAD_FIRST_CHAR;
        for (size_t i = 0; i < l; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
                        return CON_NAME_BAD_CHAR;
                if (c == '-' && (i + 1 == l || name[i + 1] == '-'))
                        return CON_NAME_BAD_HYPHEN;
        }
        for (const char * const *r = reserved; *r; r++)
                if (streq(*r, name))
                        return CON_NAME_RESERVED;
        return CON_NAME_OK;
}

const char *con_name_problem_to_string(ConNameProblem p) {
        switch (p) {
        case CON_NAME_OK:
                return "valid";
        case CON_NAME_EMPTY:
                return "the name is empty; use 1 to 29 characters from a-z, 0-9 and '-'";
        case CON_NAME_TOO_LONG:
                return "the name is longer than 29 characters (the Linux user a-<name> may have at most 31)";
        case CON_NAME_BAD_FIRST_CHAR:
                return "the name must start with a lower-case letter a-z";
        case CON_NAME_BAD_CHAR:
                return "the name may only contain lower-case letters a-z, digits 0-9 and '-'";
        case CON_NAME_BAD_HYPHEN:
                return "the name may not end with '-' or contain '--'";
        case CON_NAME_RESERVED:
                return "the name is reserved by the fabric (see con_reserved_names in bus/basic/names.c)";
        }
        return "invalid";
}

int con_agent_camel(const char *name, char **ret) {
        if (!con_agent_name_valid(name))
                return -EINVAL;
        char *s = malloc(strlen(name) + 1), *p = s;
        if (!s)
                return -ENOMEM;
        bool up = true;
        for (const char *c = name; *c; c++) {
                if (*c == '-') {
                        up = true;
                        continue;
                }
                *p++ = up ? (char) toupper((unsigned char) *c) : *c;
                up = false;
        }
        *p = 0;
        *ret = s;
        return 0;
}

int con_agent_bus_name(const char *name, char **ret) {
        _cleanup_free_ char *camel = NULL;
        int r = con_agent_camel(name, &camel);
        if (r < 0)
                return r;
        if (asprintf(ret, CON_BUS_PREFIX "%s", camel) < 0)
                return -ENOMEM;
        return 0;
}

int con_agent_from_bus_name(const char *bus_name, char **ret) {
        const char *camel = startswith(bus_name, CON_BUS_PREFIX);
        if (!camel || !(camel[0] >= 'A' && camel[0] <= 'Z') || strlen(camel) > CON_AGENT_NAME_MAX)
                return -EINVAL;
        _cleanup_free_ char *s = malloc(strlen(camel) * 2 + 1);
        if (!s)
                return -ENOMEM;
        char *p = s;
        for (const char *c = camel; *c; c++) {
                if (*c >= 'A' && *c <= 'Z') {
                        if (c != camel)
                                *p++ = '-';
                        *p++ = (char) tolower((unsigned char) *c);
                } else if ((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9'))
                        *p++ = *c;
                else
                        return -EINVAL;
        }
        *p = 0;
        /* Must round-trip: "CodeReviewer" <-> "code-reviewer". */
        _cleanup_free_ char *back = NULL;
        if (con_agent_camel(s, &back) < 0 || !streq(back, camel))
                return -EINVAL;
        *ret = TAKE_PTR(s);
        return 0;
}

int con_agent_user(const char *name, char **ret) {
        if (!con_agent_name_valid(name))
                return -EINVAL;
        if (asprintf(ret, CON_USER_PREFIX "%s", name) < 0)
                return -ENOMEM;
        return 0;
}

int con_agent_from_user(const char *user, char **ret) {
        const char *n = startswith(user, CON_USER_PREFIX);
        if (!n || !con_agent_name_valid(n))
                return -EINVAL;
        char *s = strdup(n);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

bool con_unix_name_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > CON_UNIX_NAME_MAX || !(*s == '_' || (*s >= 'a' && *s <= 'z')))
                return false;
        for (; *s; s++)
                if (!(*s == '_' || *s == '-' || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')))
                        return false;
        return true;
}

bool con_identifier_valid(const char *s) {
        if (isempty(s) || strlen(s) > 64 || streq(s, ".") || streq(s, ".."))
                return false;
        if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
                return false;
        for (const char *c = s; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || strchr("._-", *c)))
                        return false;
        return true;
}

bool con_mesh_target_valid(const char *to) {
        char agent[CON_AGENT_NAME_MAX + 1];
        const char *at = to ? strrchr(to, '@') : NULL;
        if (!at || at == to || (size_t) (at - to) > CON_AGENT_NAME_MAX)
                return false;   /* no agent part, or one too long (con_agent_name_check) */
        memcpy(agent, to, (size_t) (at - to));
        agent[at - to] = 0;
        return con_agent_name_valid(agent) && con_mesh_host_valid(at + 1);
}

int con_mesh_target_split(const char *to, char **ret_agent, char **ret_host) {
        if (!con_mesh_target_valid(to))
                return -EINVAL;
        const char *at = strrchr(to, '@');
        _cleanup_free_ char *agent = strndup(to, (size_t) (at - to)), *host = strdup(at + 1);
        if (!agent || !host)
                return -ENOMEM;
        *ret_agent = TAKE_PTR(agent);
        *ret_host = TAKE_PTR(host);
        return 0;
}

bool con_mesh_host_valid(const char *s) {
        size_t n;

        if (!s || !(s[0] >= 'a' && s[0] <= 'z'))
                return false;
        n = strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-");
        return s[n] == 0 && n <= CON_MESH_HOST_MAX && s[n - 1] != '-';
}
