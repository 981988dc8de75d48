/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "contract.h"
#include "fileio.h"
#include "names.h"
#include "sha256.h"
#include "strv.h"
#include "units.h"
#include "yaml-reader.h"

/* ---- names ---- */

static const char * const type_names[_CONTRACT_TYPE_MAX] = {
        [CONTRACT_DETECTIVE] = "detective",
        [CONTRACT_PREVENTIVE] = "preventive",
};

static const char * const action_names[_CONTRACT_ACTION_MAX] = {
        [CONTRACT_ACTION_NONE] = "",
        [CONTRACT_ACTION_ALERT] = "alert",
        [CONTRACT_ACTION_KILL_SESSION] = "kill_session",
        [CONTRACT_ACTION_QUARANTINE] = "quarantine",
        [CONTRACT_ACTION_HALT_AGENTS] = "halt_agents",
        [CONTRACT_ACTION_HALT_WORKERS] = "halt_workers",
};

static const char * const kind_names[_CHECK_KIND_MAX] = {
        [CHECK_COMMAND] = "command",
        [CHECK_SCRIPT] = "script",
        [CHECK_DISK_FREE] = "disk_free",
        [CHECK_MEMORY_AVAILABLE] = "memory_available",
        [CHECK_LOAD_PER_CORE] = "load_per_core",
        [CHECK_SESSION_DURATION] = "session_duration",
        [CHECK_PATH] = "path",
        [CHECK_AGENTS_MD] = "agents_md",
        [CHECK_AGENT_DIRS] = "agent_dirs",
        [CHECK_AUDIT_CHAIN] = "audit_chain",
        [CHECK_AUDIT_WRITABLE] = "audit_writable",
        [CHECK_ENV_FILE] = "env_file",
        [CHECK_DRIFT] = "drift",
        [CHECK_SKILLS] = "skills",
        [CHECK_POLICY_SYNC] = "policy_sync",
        [CHECK_NETWORK_DRIFT] = "network_drift",
};

const char *contract_type_to_string(ContractType t) {
        return t >= 0 && t < _CONTRACT_TYPE_MAX ? type_names[t] : NULL;
}
const char *contract_action_to_string(ContractAction a) {
        return a >= 0 && a < _CONTRACT_ACTION_MAX ? action_names[a] : NULL;
}
ContractAction contract_action_from_string(const char *s) {
        for (int i = 1; s && i < _CONTRACT_ACTION_MAX; i++)
                if (streq(s, action_names[i]))
                        return (ContractAction) i;
        return _CONTRACT_ACTION_INVALID;
}
const char *check_kind_to_string(CheckKind k) {
        return k >= 0 && k < _CHECK_KIND_MAX ? kind_names[k] : NULL;
}
const char *contract_action_severity(ContractAction a) {
        switch (a) {
        case CONTRACT_ACTION_HALT_AGENTS:
        case CONTRACT_ACTION_HALT_WORKERS:
        case CONTRACT_ACTION_QUARANTINE:
                return "critical";
        case CONTRACT_ACTION_KILL_SESSION:
                return "high";
        default:
                return "warning";
        }
}

/* ---- parsing (the one YAML reader: yaml-reader.h) ---- */

static const char *contract_id_check(const char *s) {
        size_t n = strlen(s);
        bool ok = n > 0 && n <= 64 && isalnum((unsigned char) s[0]);
        for (size_t i = 0; ok && i < n; i++)
                if (!isalnum((unsigned char) s[i]) && !strchr("._-", s[i]))
                        ok = false;
        return ok ? NULL : "is not a contract id; use letters, digits, '.', '_' and '-', up to 64 characters "
                           "(e.g. CON-SYS-001)";
}

static const char *check_name_check(const char *s) {
        return con_identifier_valid(s) ? NULL :
                "is not a check name; use 1 to 64 characters from a-z, 0-9, '.', '_' and '-'";
}

static const char *agent_name_problem(const char *s) {
        return con_agent_name_valid(s) ? NULL : "is not a valid agent name (see docs/AGENT.md for the rules)";
}

static const char *absolute_path_check(const char *s) {
        return s[0] == '/' ? NULL : "is not an absolute path; start it with /";
}

/* Action names with "escalate" (the original's test suite writes `on_fail: escalate`: alert the
 * sysadmin) appended; the index maps back to ContractAction. */
static const char * const on_fail_names[] = {
        "none", "alert", "kill_session", "quarantine", "halt_agents", "halt_workers", "escalate", NULL,
};
#define ACTION_HINT "use alert, kill_session, quarantine, halt_agents or halt_workers"

static int parse_action(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest, void *userdata _unused_) {
        ContractAction *a = dest;
        int i = -1, r;

        r = con_yaml_get_enum(y, v, path, on_fail_names + 1, ACTION_HINT " (or escalate, the same as alert)", &i);
        if (r < 0 || i < 0)
                return r;
        i++;    /* on_fail_names + 1 */
        *a = i == 6 ? CONTRACT_ACTION_ALERT : (ContractAction) i;
        return 0;
}

static const ConYamlField on_fail_fields[] = {
        { "action", .type = CON_YAML_CUSTOM, .offset = offsetof(ContractCheck, action), .parse = parse_action },
        { "escalate", .type = CON_YAML_STRING, .offset = offsetof(ContractCheck, escalate), .check = agent_name_problem },
        { "message", .type = CON_YAML_STRING, .offset = offsetof(ContractCheck, message) },
        {}
};

/* on_fail: an action name, or {action, escalate, message} (action defaults to alert). */
static int parse_on_fail(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest, void *userdata) {
        ContractCheck *ch = dest;

        if (v && v->type == YAML_SCALAR_NODE && !con_yaml_node_is_null(v))
                return parse_action(y, v, path, &ch->action, userdata);
        if (!v || v->type != YAML_MAPPING_NODE)
                return con_yaml_fail(y, v, path, "expected an action name or a mapping of action, escalate and "
                                     "message, got %s", con_yaml_node_kind_to_string(v));
        ch->action = CONTRACT_ACTION_ALERT;
        return con_yaml_read_mapping(y, v, path, on_fail_fields, ch, userdata, NULL);
}

static int parse_mode(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest, void *userdata _unused_) {
        _cleanup_free_ char *s = NULL;
        char *end = NULL;
        int r;

        r = con_yaml_get_string(y, v, path, &s);
        if (r < 0 || !s)
                return r;
        unsigned long m = strtoul(s, &end, 8);
        if (!*s || *end || !strchr("01234567", s[0]) || m > 07777) {
                _cleanup_free_ char *q = con_yaml_quote(v);
                return q ? con_yaml_fail(y, v, path, "%s is not an octal mode; write it like \"0644\" (quoted)", q)
                         : -ENOMEM;
        }
        *(int *) dest = (int) m;
        return 0;
}

static int parse_abs_paths(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest,
                           void *userdata _unused_) {
        char ***paths = dest;
        yaml_node_t *it;
        size_t i = 0;
        int r;

        r = con_yaml_get_strv(y, v, path, false, 0, paths);
        if (r < 0 || !v || v->type != YAML_SEQUENCE_NODE)
                return r;
        CON_YAML_SEQUENCE_FOREACH(y->doc, v, it) {
                if ((*paths)[i][0] != '/') {
                        _cleanup_free_ char *ipath = con_yaml_path_index(path, i), *q = con_yaml_quote(it);
                        return ipath && q ? con_yaml_fail(y, it, ipath, "%s %s", q, absolute_path_check((*paths)[i]))
                                          : -ENOMEM;
                }
                i++;
        }
        return 0;
}

static const char * const acl_names[] = { "none", "extended", NULL };

#define F(name, ...) { name, __VA_ARGS__ }
#define PATH_FIELD(key) F(key, .type = CON_YAML_STRING, .offset = offsetof(ContractCheck, path), \
                          .check = absolute_path_check)
#define PCT_FIELD F("min_pct", .type = CON_YAML_DOUBLE, .offset = offsetof(ContractCheck, threshold), .max = 100)

static const ConYamlField no_fields[] = { {} };
static const ConYamlField disk_free_fields[] = { PCT_FIELD, PATH_FIELD("path"), {} };
static const ConYamlField memory_fields[] = { PCT_FIELD, {} };
static const ConYamlField load_fields[] = {
        F("max", .type = CON_YAML_DOUBLE, .offset = offsetof(ContractCheck, threshold), .max = 1e6), {}
};
static const ConYamlField session_fields[] = {
        F("max", .type = CON_YAML_DURATION, .offset = offsetof(ContractCheck, max_usec)), {}
};
static const ConYamlField path_fields[] = {
        F("path", .type = CON_YAML_STRING, .offset = offsetof(ContractCheck, path), .check = absolute_path_check,
          .flags = CON_YAML_REQUIRED, .hint = "the absolute path to check"),
        F("owner", .type = CON_YAML_STRING, .offset = offsetof(ContractCheck, owner)),
        F("group", .type = CON_YAML_STRING, .offset = offsetof(ContractCheck, group)),
        F("mode", .type = CON_YAML_CUSTOM, .offset = offsetof(ContractCheck, mode), .parse = parse_mode),
        F("acl", .type = CON_YAML_ENUM, .offset = offsetof(ContractCheck, acl), .names = acl_names,
          .hint = "use none or extended"),
        F("missing_ok", .type = CON_YAML_BOOL, .offset = offsetof(ContractCheck, missing_ok)),
        {}
};
static const ConYamlField dir_fields[] = { PATH_FIELD("dir"), {} };
static const ConYamlField env_file_fields[] = { PATH_FIELD("path"), {} };
static const ConYamlField drift_fields[] = {
        F("paths", .type = CON_YAML_CUSTOM, .offset = offsetof(ContractCheck, paths), .parse = parse_abs_paths), {}
};
static const ConYamlField command_fields[] = {
        F("run", .type = CON_YAML_STRING, .offset = offsetof(ContractCheck, run), .flags = CON_YAML_REQUIRED,
          .hint = "the shell command to run"),
        F("test", .type = CON_YAML_STRING, .offset = offsetof(ContractCheck, test)),
        F("timeout", .type = CON_YAML_DURATION, .offset = offsetof(ContractCheck, timeout_usec)),
        {}
};
static const ConYamlField script_fields[] = {
        F("path", .type = CON_YAML_STRING, .offset = offsetof(ContractCheck, script), .flags = CON_YAML_REQUIRED,
          .hint = "the script, relative to the contracts directory"),
        F("timeout", .type = CON_YAML_DURATION, .offset = offsetof(ContractCheck, timeout_usec)),
        {}
};

static const ConYamlField * const kind_fields[_CHECK_KIND_MAX] = {
        [CHECK_COMMAND] = command_fields,
        [CHECK_SCRIPT] = script_fields,
        [CHECK_DISK_FREE] = disk_free_fields,
        [CHECK_MEMORY_AVAILABLE] = memory_fields,
        [CHECK_LOAD_PER_CORE] = load_fields,
        [CHECK_SESSION_DURATION] = session_fields,
        [CHECK_PATH] = path_fields,
        [CHECK_AGENTS_MD] = no_fields,
        [CHECK_AGENT_DIRS] = no_fields,
        [CHECK_AUDIT_CHAIN] = dir_fields,
        [CHECK_AUDIT_WRITABLE] = dir_fields,
        [CHECK_ENV_FILE] = env_file_fields,
        [CHECK_DRIFT] = drift_fields,
        [CHECK_SKILLS] = no_fields,
        [CHECK_POLICY_SYNC] = no_fields,
        [CHECK_NETWORK_DRIFT] = no_fields,
};

static int parse_kind(ConYamlReader *y, const yaml_node_t *v, const char *path, ContractCheck *ch, CheckKind kind) {
        ch->kind = kind;
        /* command and script take a mapping; the native kinds may be left empty (`agents_md:`). */
        if (con_yaml_node_is_null(v) && (kind == CHECK_COMMAND || kind == CHECK_SCRIPT))
                return con_yaml_fail(y, v, path, "expected a mapping of %s", kind == CHECK_COMMAND ?
                                     "run, test and timeout" : "path and timeout");
        return con_yaml_read_mapping(y, v, path, kind_fields[kind], ch, NULL, NULL);
}

#define KIND_PARSER(name, kind)                                                                            \
        static int parse_##name(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest,     \
                                void *userdata _unused_) {                                                 \
                return parse_kind(y, v, path, dest, kind);                                                 \
        }
KIND_PARSER(command, CHECK_COMMAND)
KIND_PARSER(script, CHECK_SCRIPT)
KIND_PARSER(disk_free, CHECK_DISK_FREE)
KIND_PARSER(memory_available, CHECK_MEMORY_AVAILABLE)
KIND_PARSER(load_per_core, CHECK_LOAD_PER_CORE)
KIND_PARSER(session_duration, CHECK_SESSION_DURATION)
KIND_PARSER(path, CHECK_PATH)
KIND_PARSER(agents_md, CHECK_AGENTS_MD)
KIND_PARSER(agent_dirs, CHECK_AGENT_DIRS)
KIND_PARSER(audit_chain, CHECK_AUDIT_CHAIN)
KIND_PARSER(audit_writable, CHECK_AUDIT_WRITABLE)
KIND_PARSER(env_file, CHECK_ENV_FILE)
KIND_PARSER(drift, CHECK_DRIFT)
KIND_PARSER(skills, CHECK_SKILLS)
KIND_PARSER(policy_sync, CHECK_POLICY_SYNC)
KIND_PARSER(network_drift, CHECK_NETWORK_DRIFT)

#define KIND_FIELD(name) F(#name, .type = CON_YAML_CUSTOM, .offset = 0, .parse = parse_##name)
#define N_CHECK_FIELDS_BEFORE_KINDS 2

static const ConYamlField check_fields[] = {
        F("name", .type = CON_YAML_STRING, .offset = offsetof(ContractCheck, name), .check = check_name_check,
          .flags = CON_YAML_REQUIRED, .hint = "a name for the check, unique in the contract"),
        F("on_fail", .type = CON_YAML_CUSTOM, .offset = 0, .parse = parse_on_fail),
        KIND_FIELD(command),
        KIND_FIELD(script),
        KIND_FIELD(disk_free),
        KIND_FIELD(memory_available),
        KIND_FIELD(load_per_core),
        KIND_FIELD(session_duration),
        KIND_FIELD(path),
        KIND_FIELD(agents_md),
        KIND_FIELD(agent_dirs),
        KIND_FIELD(audit_chain),
        KIND_FIELD(audit_writable),
        KIND_FIELD(env_file),
        KIND_FIELD(drift),
        KIND_FIELD(skills),
        KIND_FIELD(policy_sync),
        KIND_FIELD(network_drift),
        {}
};

static int parse_check(ConYamlReader *y, const yaml_node_t *v, const char *path, const Contract *c,
                       ContractCheck *ch) {
        bool seen[ELEMENTSOF(check_fields)] = {};
        unsigned kinds = 0;
        int r;

        *ch = (ContractCheck) { .threshold = -1, .mode = -1, .acl = -1, .line = con_yaml_node_line(v),
                                .timeout_usec = CONTRACT_SCRIPT_TIMEOUT_DEFAULT_USEC };
        if (!v || v->type != YAML_MAPPING_NODE)
                return con_yaml_fail(y, v, path, "expected a mapping (name, on_fail and one check), got %s",
                                     con_yaml_node_kind_to_string(v));
        r = con_yaml_read_mapping(y, v, path, check_fields, ch, NULL, seen);
        if (r < 0)
                return r;
        for (size_t i = N_CHECK_FIELDS_BEFORE_KINDS; i + 1 < ELEMENTSOF(check_fields); i++)
                kinds += seen[i];
        if (kinds != 1)
                return con_yaml_fail(y, v, path, "needs exactly one check, found %u (give one of command, script, "
                                     "disk_free, memory_available, load_per_core, session_duration, path, agents_md, "
                                     "agent_dirs, audit_chain, audit_writable, env_file, drift, skills, policy_sync or network_drift)",
                                     kinds);
        /* test: exit_code_zero (the original's spelling) or empty means: pass iff run exits 0. */
        if (ch->test && (streq(ch->test, "exit_code_zero") || !*ch->test)) {
                free(ch->test);
                ch->test = NULL;
        }
        if (ch->action == CONTRACT_ACTION_QUARANTINE && !c->scope_agent) {
                _cleanup_free_ char *p = con_yaml_path_child(path, "on_fail");
                return p ? con_yaml_fail(y, con_yaml_mapping_get(y->doc, v, "on_fail", NULL), p, "quarantine needs a contract with scope: agent:NAME "
                                         "(set scope, or use another action)") : -ENOMEM;
        }
        return 0;
}

static int parse_checks(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest,
                        void *userdata _unused_) {
        Contract *c = dest;
        yaml_node_t *it;
        int r;

        if (con_yaml_node_is_null(v))
                return 0;
        if (v->type != YAML_SEQUENCE_NODE)
                return con_yaml_fail(y, v, path, "expected a list of checks, got %s", con_yaml_node_kind_to_string(v));
        size_t n = con_yaml_sequence_length(v);
        c->checks = calloc(n ?: 1, sizeof *c->checks);
        if (!c->checks)
                return -ENOMEM;
        CON_YAML_SEQUENCE_FOREACH(y->doc, v, it) {
                ContractCheck *ch = &c->checks[c->n_checks];
                _cleanup_free_ char *ipath = con_yaml_path_index(path, c->n_checks);
                if (!ipath)
                        return -ENOMEM;
                r = parse_check(y, it, ipath, c, ch);
                c->n_checks++;  /* counted even on failure, so it is freed */
                if (r < 0)
                        return r;
                for (size_t j = 0; j + 1 < c->n_checks; j++)
                        if (streq(c->checks[j].name, ch->name)) {
                                _cleanup_free_ char *npath = con_yaml_path_child(ipath, "name");
                                return npath ? con_yaml_fail(y, it, npath, "'%s' is already the name of checks[%zu] "
                                                             "(line %u); check names must be unique in a contract",
                                                             ch->name, j, c->checks[j].line) : -ENOMEM;
                        }
        }
        return 0;
}

/* scope: system or agent:NAME. */
static int parse_scope(ConYamlReader *y, const yaml_node_t *v, const char *path, void *dest, void *userdata _unused_) {
        Contract *c = dest;
        _cleanup_free_ char *s = NULL;
        int r;

        r = con_yaml_get_string(y, v, path, &s);
        if (r < 0 || !s)
                return r;
        const char *a = startswith(s, "agent:");
        if (a && con_agent_name_valid(a))
                return (c->scope_agent = strdup(a)) ? 0 : -ENOMEM;
        if (streq(s, "system"))
                return 0;
        _cleanup_free_ char *q = con_yaml_quote(v);
        if (!q)
                return -ENOMEM;
        if (a)
                return con_yaml_fail(y, v, path, "%s names no valid agent: %s", q,
                                     con_name_problem_to_string(con_agent_name_check(a)));
        return con_yaml_fail(y, v, path, "%s is not allowed; use system or agent:NAME", q);
}

static const char * const type_hint_names[] = { "detective", "preventive", NULL };

static const ConYamlField contract_fields[] = {
        F("id", .type = CON_YAML_STRING, .offset = offsetof(Contract, id), .check = contract_id_check,
          .flags = CON_YAML_REQUIRED, .hint = "e.g. id: CON-SYS-001"),
        F("description", .type = CON_YAML_STRING, .offset = offsetof(Contract, description)),
        F("type", .type = CON_YAML_ENUM, .offset = offsetof(Contract, type), .names = type_hint_names,
          .hint = "use detective or preventive", .flags = CON_YAML_REQUIRED),
        F("frequency", .type = CON_YAML_DURATION, .offset = offsetof(Contract, frequency_usec)),
        F("scope", .type = CON_YAML_IGNORE),   /* read first, by contract_parse() */
        F("checks", .type = CON_YAML_CUSTOM, .offset = 0, .parse = parse_checks),
        /* The registry fields of preventive contracts: kept in the file, not used here. */
        F("mechanism", .type = CON_YAML_IGNORE),
        F("agent", .type = CON_YAML_IGNORE),
        F("enforcement", .type = CON_YAML_IGNORE),
        {}
};

int contract_parse(const char *text, size_t len, const char *file, Contract **ret, ConErrorDetail *err) {
        _cleanup_(con_yaml_reader_done) ConYamlReader y = { .file = file, .err = err };
        _cleanup_(contract_freep) Contract *c = NULL;
        int r;

        if (err)
                con_error_detail_done(err);
        r = con_yaml_open(&y, text, len, "the file holds no contract (write id:, type: and checks:)");
        if (r == -ENODATA)
                return -EINVAL;
        if (r < 0)
                return r;

        c = calloc(1, sizeof *c);
        if (!c || (file && !(c->file = strdup(file))))
                return -ENOMEM;
        c->type = _CONTRACT_TYPE_INVALID;

        yaml_node_t *root = yaml_document_get_root_node(y.doc);
        if (root->type != YAML_MAPPING_NODE)
                return con_yaml_fail(&y, root, NULL, "expected a mapping (id, type, checks, ...), got %s",
                                     con_yaml_node_kind_to_string(root));
        /* scope first: whether a check may quarantine depends on it. */
        yaml_node_t *scope = con_yaml_mapping_get(y.doc, root, "scope", NULL);
        if (scope) {
                r = con_yaml_check_mapping(&y, root, NULL);
                if (r >= 0)
                        r = parse_scope(&y, scope, "scope", c, NULL);
                if (r < 0)
                        return r;
        }
        r = con_yaml_read_mapping(&y, root, NULL, contract_fields, c, NULL, NULL);
        if (r < 0)
                return r;
        if (c->frequency_usec > 0 && c->frequency_usec < CONTRACT_FREQUENCY_MIN_USEC)
                return con_yaml_fail(&y, con_yaml_mapping_get(y.doc, root, "frequency", NULL), "frequency",
                                     "is shorter than 1s; contracts run at most once a second");
        if (c->type == CONTRACT_DETECTIVE && c->n_checks == 0) {
                yaml_node_t *checks = con_yaml_mapping_get(y.doc, root, "checks", NULL);
                return con_yaml_fail(&y, checks ?: root, "checks",
                                     "a detective contract needs a list of at least one check");
        }
        *ret = TAKE_PTR(c);
        return 0;
}

int contract_load_file(const char *path, Contract **ret, ConErrorDetail *err) {
        _cleanup_free_ char *text = NULL;
        size_t len;
        int r;

        if (path[0] == '/')
                r = read_file_nofollow(path, CONTRACT_FILE_MAX, &text, &len);
        else {
                _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                r = fd < 0 ? -errno : read_fd(fd, CONTRACT_FILE_MAX, &text, &len);
        }
        if (r < 0) {
                int k = con_error_detail_set(err, path, 0, 0, NULL, "cannot read it: %s",
                                             r == -EFBIG ? "larger than 256 KiB" : strerror(-r));
                return k == -ENOMEM ? k : r;
        }
        return contract_parse(text, len, path, ret, err);
}

static void check_done(ContractCheck *ch) {
        free(ch->name);
        free(ch->run);
        free(ch->test);
        free(ch->script);
        free(ch->path);
        free(ch->owner);
        free(ch->group);
        strv_free(ch->paths);
        free(ch->escalate);
        free(ch->message);
}

Contract *contract_free(Contract *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_checks; i++)
                check_done(&c->checks[i]);
        free(c->checks);
        free(c->file);
        free(c->id);
        free(c->description);
        free(c->scope_agent);
        free(c);
        return NULL;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char * const *) a, *(char * const *) b);
}

int contract_dir_list(const char *dir, char ***ret) {
        _cleanup_closedir_ DIR *d = opendir(dir);
        _cleanup_strv_free_ char **l = NULL;
        struct dirent *de;
        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                struct stat st;
                char *p;
                if (de->d_name[0] == '.' || !endswith(de->d_name, ".yaml"))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                        continue;
                if (asprintf(&p, "%s/%s", dir, de->d_name) < 0 || strv_consume(&l, p) < 0)
                        return -ENOMEM;
        }
        if (l)
                qsort(l, strv_length(l), sizeof(char *), cmp_str);
        *ret = TAKE_PTR(l);
        return 0;
}

static void fingerprint_file(ConSha256 *h, const char *path, size_t max) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r = read_file_nofollow(path, max, &text, &len);
        uint64_t hdr[2] = { (uint64_t) (int64_t) r, len };
        /* The name with its NUL, the outcome and the length, then the bytes: no two different
         * sets of files hash the same input. */
        con_sha256_update(h, path, strlen(path) + 1);
        con_sha256_update(h, hdr, sizeof hdr);
        if (r >= 0)
                con_sha256_update(h, text, len);
}

int contract_dir_fingerprint(const char *dir, const char *config_path, uint8_t ret[CONTRACT_FINGERPRINT_SIZE]) {
        _cleanup_strv_free_ char **files = NULL;
        ConSha256 h;
        int r;

        r = con_sha256_init(&h);
        if (r < 0)
                return r;
        r = contract_dir_list(dir, &files);
        if (r == -ENOMEM) {
                (void) con_sha256_final(&h, ret);
                return r;
        }
        if (r < 0) {
                uint64_t e = (uint64_t) (int64_t) r;
                con_sha256_update(&h, &e, sizeof e);
        }
        STRV_FOREACH(f, files)
                fingerprint_file(&h, *f, CONTRACT_FILE_MAX);
        con_sha256_update(&h, "", 1);  /* end of the list */
        if (config_path)
                fingerprint_file(&h, config_path, 16U * 1024U * 1024U);
        return con_sha256_final(&h, ret);
}

