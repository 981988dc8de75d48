/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/acl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>

#include "acl-util.h"
#include "audit.h"
#include "contract-util.h"
#include "fileio.h"
#include "names.h"
#include "policy-check.h"
#include "provision.h"
#include "sha256.h"
#include "strv.h"
#include "user-util.h"
#include "yaml-util.h"

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

/* ---- errors ---- */

void contract_error_done(ContractError *e) {
        if (!e)
                return;
        free(e->file);
        free(e->message);
        *e = (ContractError) {};
}

char *contract_error_format(const ContractError *e) {
        char *s = NULL;
        int r;
        if (e->file && e->line > 0)
                r = asprintf(&s, "%s:%u:%u: %s", e->file, e->line, e->column, strempty(e->message));
        else if (e->file)
                r = asprintf(&s, "%s: %s", e->file, strempty(e->message));
        else
                r = asprintf(&s, "%s", strempty(e->message));
        return r < 0 ? NULL : s;
}

static int set_error(ContractError *err, const char *file, const yaml_node_t *n, const char *fmt, ...) _printf_(4, 5);
static int set_error(ContractError *err, const char *file, const yaml_node_t *n, const char *fmt, ...) {
        va_list ap;
        if (!err)
                return -EINVAL;
        contract_error_done(err);
        err->file = file ? strdup(file) : NULL;
        err->line = con_yaml_node_line(n);
        err->column = con_yaml_node_column(n);
        va_start(ap, fmt);
        if (vasprintf(&err->message, fmt, ap) < 0)
                err->message = NULL;
        va_end(ap);
        return -EINVAL;
}

/* ---- parsing ---- */

static bool contract_id_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 64 || !isalnum((unsigned char) s[0]))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char) s[i]) && !strchr("._-", s[i]))
                        return false;
        return true;
}

typedef struct Parser {
        yaml_document_t *doc;
        const char *file;
        ContractError *err;
} Parser;

static int get_string(Parser *p, const yaml_node_t *v, const char *key, char **ret) {
        const char *s = con_yaml_scalar(v);
        if (!s)
                return set_error(p->err, p->file, v, "%s: expected a string, got %s", key, con_yaml_node_kind_to_string(v));
        if (con_yaml_scalar_has_nul(v))
                return set_error(p->err, p->file, v, "%s: contains a NUL byte", key);
        char *c = strdup(s);
        if (!c)
                return -ENOMEM;
        free(*ret);
        *ret = c;
        return 0;
}

static int get_number(Parser *p, const yaml_node_t *v, const char *key, double lo, double hi, double *ret) {
        const char *s = con_yaml_scalar(v);
        char *end;
        if (!s || !*s)
                return set_error(p->err, p->file, v, "%s: expected a number, got %s", key, con_yaml_node_kind_to_string(v));
        errno = 0;
        double d = strtod(s, &end);
        if (errno || *end || !isfinite(d) || d < lo || d > hi)
                return set_error(p->err, p->file, v, "%s: '%s' is not a number from %g to %g", key, s, lo, hi);
        *ret = d;
        return 0;
}

static int get_duration(Parser *p, const yaml_node_t *v, const char *key, bool allow_zero, uint64_t *ret) {
        const char *s = con_yaml_scalar(v);
        uint64_t u;
        if (!s || con_parse_duration(s, &u) < 0 || (!allow_zero && u == 0))
                return set_error(p->err, p->file, v,
                                 "%s: '%s' is not a duration (e.g. 90s, 5m, 1h, or a number of seconds)%s", key,
                                 strempty(s), allow_zero ? "" : " greater than zero");
        *ret = u;
        return 0;
}

static int get_bool(Parser *p, const yaml_node_t *v, const char *key, bool *ret) {
        const char *s = con_yaml_scalar(v);
        if (s && (streq(s, "true") || streq(s, "yes")))
                *ret = true;
        else if (s && (streq(s, "false") || streq(s, "no")))
                *ret = false;
        else
                return set_error(p->err, p->file, v, "%s: expected true or false", key);
        return 0;
}

static int check_keys(Parser *p, const yaml_node_t *map, const char *what) {
        yaml_node_t *bad = NULL, *first = NULL;
        int r = con_yaml_mapping_check_keys(p->doc, map, &bad, &first);
        if (r == -ENOTUNIQ)
                return set_error(p->err, p->file, bad, "%s: key '%s' appears twice (first on line %u)", what,
                                 con_yaml_scalar(bad), con_yaml_node_line(first));
        if (r < 0)
                return set_error(p->err, p->file, bad, "%s: keys must be strings", what);
        return 0;
}

static int parse_on_fail(Parser *p, ContractCheck *ch, const yaml_node_t *v, const char *what) {
        int r;
        if (v->type == YAML_SCALAR_NODE) {
                /* The original's own test suite writes `on_fail: escalate`: alert the sysadmin. */
                const char *s = con_yaml_scalar(v);
                if (streq(s, "escalate")) {
                        ch->action = CONTRACT_ACTION_ALERT;
                        return 0;
                }
                ch->action = contract_action_from_string(s);
                if (ch->action < 0)
                        return set_error(p->err, p->file, v,
                                         "%s.on_fail: '%s' is not an action (alert, kill_session, quarantine, "
                                         "halt_agents, halt_workers, or escalate)", what, s);
                return 0;
        }
        if (v->type != YAML_MAPPING_NODE)
                return set_error(p->err, p->file, v, "%s.on_fail: expected a mapping or an action name, got %s", what,
                                 con_yaml_node_kind_to_string(v));
        r = check_keys(p, v, "on_fail");
        if (r < 0)
                return r;
        ch->action = CONTRACT_ACTION_ALERT;
        yaml_node_t *kn, *vn;
        CON_YAML_MAPPING_FOREACH(p->doc, v, kn, vn) {
                const char *k = con_yaml_scalar(kn);
                if (streq(k, "action")) {
                        const char *s = con_yaml_scalar(vn);
                        ch->action = contract_action_from_string(s);
                        if (ch->action < 0)
                                return set_error(p->err, p->file, vn,
                                                 "%s.on_fail.action: '%s' is not one of alert, kill_session, "
                                                 "quarantine, halt_agents, halt_workers", what, strempty(s));
                } else if (streq(k, "escalate")) {
                        r = get_string(p, vn, "on_fail.escalate", &ch->escalate);
                        if (r < 0)
                                return r;
                        if (!con_agent_name_valid(ch->escalate))
                                return set_error(p->err, p->file, vn, "%s.on_fail.escalate: '%s': %s", what,
                                                 ch->escalate, con_name_problem_to_string(con_agent_name_check(ch->escalate)));
                } else if (streq(k, "message")) {
                        r = get_string(p, vn, "on_fail.message", &ch->message);
                        if (r < 0)
                                return r;
                } else
                        return set_error(p->err, p->file, kn,
                                         "%s.on_fail: unknown key '%s' (allowed: action, escalate, message)", what, k);
        }
        return 0;
}

static int parse_native(Parser *p, ContractCheck *ch, CheckKind kind, const yaml_node_t *v, const char *what) {
        int r;
        ch->kind = kind;
        if (con_yaml_node_is_null(v))
                return 0;
        if (v->type != YAML_MAPPING_NODE)
                return set_error(p->err, p->file, v, "%s.%s: expected a mapping (or nothing), got %s", what,
                                 kind_names[kind], con_yaml_node_kind_to_string(v));
        r = check_keys(p, v, kind_names[kind]);
        if (r < 0)
                return r;
        yaml_node_t *kn, *vn;
        CON_YAML_MAPPING_FOREACH(p->doc, v, kn, vn) {
                const char *k = con_yaml_scalar(kn);
                bool ok = false;
                switch (kind) {
                case CHECK_DISK_FREE:
                case CHECK_MEMORY_AVAILABLE:
                        if (streq(k, "min_pct")) {
                                r = get_number(p, vn, "min_pct", 0, 100, &ch->threshold);
                                ok = true;
                        } else if (kind == CHECK_DISK_FREE && streq(k, "path")) {
                                r = get_string(p, vn, "path", &ch->path);
                                ok = true;
                        }
                        break;
                case CHECK_LOAD_PER_CORE:
                        if (streq(k, "max")) {
                                r = get_number(p, vn, "max", 0, 1e6, &ch->threshold);
                                ok = true;
                        }
                        break;
                case CHECK_SESSION_DURATION:
                        if (streq(k, "max")) {
                                r = get_duration(p, vn, "max", false, &ch->max_usec);
                                ok = true;
                        }
                        break;
                case CHECK_PATH:
                        ok = true;
                        if (streq(k, "path"))
                                r = get_string(p, vn, "path", &ch->path);
                        else if (streq(k, "owner"))
                                r = get_string(p, vn, "owner", &ch->owner);
                        else if (streq(k, "group"))
                                r = get_string(p, vn, "group", &ch->group);
                        else if (streq(k, "missing_ok"))
                                r = get_bool(p, vn, "missing_ok", &ch->missing_ok);
                        else if (streq(k, "mode")) {
                                const char *s = con_yaml_scalar(vn);
                                char *end;
                                unsigned long m = s ? strtoul(s, &end, 8) : 0;
                                if (!s || !*s || *end || m > 07777)
                                        return set_error(p->err, p->file, vn, "%s.path.mode: '%s' is not an octal mode "
                                                         "like \"0644\" (quote it)", what, strempty(s));
                                ch->mode = (int) m;
                        } else if (streq(k, "acl")) {
                                const char *s = con_yaml_scalar(vn);
                                if (s && streq(s, "none"))
                                        ch->acl = 0;
                                else if (s && streq(s, "extended"))
                                        ch->acl = 1;
                                else
                                        return set_error(p->err, p->file, vn, "%s.path.acl: '%s' is not none or extended",
                                                         what, strempty(s));
                        } else
                                ok = false;
                        break;
                case CHECK_AUDIT_CHAIN:
                case CHECK_AUDIT_WRITABLE:
                        if (streq(k, "dir")) {
                                r = get_string(p, vn, "dir", &ch->path);
                                ok = true;
                        }
                        break;
                case CHECK_ENV_FILE:
                        if (streq(k, "path")) {
                                r = get_string(p, vn, "path", &ch->path);
                                ok = true;
                        }
                        break;
                case CHECK_DRIFT:
                        if (streq(k, "paths")) {
                                yaml_node_t *it;
                                ok = true;
                                if (vn->type != YAML_SEQUENCE_NODE)
                                        return set_error(p->err, p->file, vn, "%s.drift.paths: expected a list of paths", what);
                                CON_YAML_SEQUENCE_FOREACH(p->doc, vn, it) {
                                        _cleanup_free_ char *s = NULL;
                                        r = get_string(p, it, "drift.paths[]", &s);
                                        if (r < 0)
                                                return r;
                                        if (s[0] != '/')
                                                return set_error(p->err, p->file, it, "%s.drift.paths: '%s' is not an absolute path", what, s);
                                        if (strv_consume(&ch->paths, TAKE_PTR(s)) < 0)
                                                return -ENOMEM;
                                }
                        }
                        break;
                default:
                        break;
                }
                if (!ok)
                        return set_error(p->err, p->file, kn, "%s.%s: unknown key '%s' (see docs/CONTRACTS.md)", what,
                                         kind_names[kind], k);
                if (r < 0)
                        return r;
        }
        if ((kind == CHECK_PATH) && !ch->path)
                return set_error(p->err, p->file, v, "%s.path: 'path' is required", what);
        if (ch->path && ch->path[0] != '/')
                return set_error(p->err, p->file, v, "%s.%s: '%s' is not an absolute path", what, kind_names[kind], ch->path);
        return 0;
}

static int parse_check(Parser *p, Contract *c, ContractCheck *ch, const yaml_node_t *v, size_t idx) {
        char what[32];
        int r, kinds = 0;
        snprintf(what, sizeof what, "checks[%zu]", idx);
        *ch = (ContractCheck) { .threshold = -1, .mode = -1, .acl = -1, .line = con_yaml_node_line(v),
                                .timeout_usec = CONTRACT_SCRIPT_TIMEOUT_DEFAULT_USEC };
        if (v->type != YAML_MAPPING_NODE)
                return set_error(p->err, p->file, v, "%s: expected a mapping, got %s", what, con_yaml_node_kind_to_string(v));
        r = check_keys(p, v, what);
        if (r < 0)
                return r;
        yaml_node_t *kn, *vn;
        CON_YAML_MAPPING_FOREACH(p->doc, v, kn, vn) {
                const char *k = con_yaml_scalar(kn);
                if (streq(k, "name")) {
                        r = get_string(p, vn, "name", &ch->name);
                        if (r >= 0 && !con_identifier_valid(ch->name))
                                return set_error(p->err, p->file, vn, "%s.name: '%s' is not a check name "
                                                 "(lower-case letters, digits, '.', '_', '-')", what, ch->name);
                } else if (streq(k, "on_fail"))
                        r = parse_on_fail(p, ch, vn, what);
                else if (streq(k, "command")) {
                        kinds++;
                        ch->kind = CHECK_COMMAND;
                        if (vn->type != YAML_MAPPING_NODE)
                                return set_error(p->err, p->file, vn, "%s.command: expected a mapping with run and test", what);
                        r = check_keys(p, vn, "command");
                        yaml_node_t *k2, *v2;
                        CON_YAML_MAPPING_FOREACH(p->doc, vn, k2, v2) {
                                if (r < 0)
                                        break;
                                const char *kk = con_yaml_scalar(k2);
                                if (streq(kk, "run"))
                                        r = get_string(p, v2, "command.run", &ch->run);
                                else if (streq(kk, "test"))
                                        r = get_string(p, v2, "command.test", &ch->test);
                                else if (streq(kk, "timeout"))
                                        r = get_duration(p, v2, "command.timeout", false, &ch->timeout_usec);
                                else
                                        return set_error(p->err, p->file, k2, "%s.command: unknown key '%s' (allowed: run, test, timeout)",
                                                         what, kk);
                        }
                        if (r >= 0 && isempty(ch->run))
                                return set_error(p->err, p->file, vn, "%s.command: 'run' is required", what);
                        if (r >= 0 && ch->test && (streq(ch->test, "exit_code_zero") || !*ch->test))
                                { free(ch->test); ch->test = NULL; }
                } else if (streq(k, "script")) {
                        kinds++;
                        ch->kind = CHECK_SCRIPT;
                        if (vn->type != YAML_MAPPING_NODE)
                                return set_error(p->err, p->file, vn, "%s.script: expected a mapping with path and timeout", what);
                        r = check_keys(p, vn, "script");
                        yaml_node_t *k2, *v2;
                        CON_YAML_MAPPING_FOREACH(p->doc, vn, k2, v2) {
                                if (r < 0)
                                        break;
                                const char *kk = con_yaml_scalar(k2);
                                if (streq(kk, "path"))
                                        r = get_string(p, v2, "script.path", &ch->script);
                                else if (streq(kk, "timeout"))
                                        r = get_duration(p, v2, "script.timeout", false, &ch->timeout_usec);
                                else
                                        return set_error(p->err, p->file, k2, "%s.script: unknown key '%s' (allowed: path, timeout)",
                                                         what, kk);
                        }
                        if (r >= 0 && isempty(ch->script))
                                return set_error(p->err, p->file, vn, "%s.script: 'path' is required", what);
                } else {
                        CheckKind kind = _CHECK_KIND_INVALID;
                        for (int i = CHECK_DISK_FREE; i < _CHECK_KIND_MAX; i++)
                                if (streq(k, kind_names[i]))
                                        kind = (CheckKind) i;
                        if (kind < 0)
                                return set_error(p->err, p->file, kn,
                                                 "%s: unknown key '%s' (allowed: name, on_fail, and one check: command, "
                                                 "script, disk_free, memory_available, load_per_core, session_duration, "
                                                 "path, agents_md, agent_dirs, audit_chain, audit_writable, env_file, "
                                                 "drift, skills, policy_sync)", what, k);
                        kinds++;
                        r = parse_native(p, ch, kind, vn, what);
                }
                if (r < 0)
                        return r;
        }
        if (!ch->name)
                return set_error(p->err, p->file, v, "%s: 'name' is required", what);
        if (kinds != 1)
                return set_error(p->err, p->file, v, "%s (%s): needs exactly one check (command, script or a native kind), "
                                 "found %d", what, ch->name, kinds);
        if (ch->action == CONTRACT_ACTION_QUARANTINE && !c->scope_agent)
                return set_error(p->err, p->file, v, "%s (%s): on_fail action quarantine needs 'scope: agent:NAME'",
                                 what, ch->name);
        return 0;
}

int contract_parse(const char *text, size_t len, const char *file, Contract **ret, ContractError *err) {
        _cleanup_(con_yaml_document_freep) yaml_document_t *doc = NULL;
        _cleanup_(con_yaml_problem_done) ConYamlProblem problem = {};
        _cleanup_(contract_freep) Contract *c = NULL;
        Parser p = { .file = file, .err = err };
        int r;

        r = con_yaml_load(text, len, &doc, &problem);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                contract_error_done(err);
                if (err) {
                        err->file = file ? strdup(file) : NULL;
                        err->line = problem.line;
                        err->column = problem.column;
                        err->message = strdup(r == -ENODATA ? "the file holds no contract" : strempty(problem.message));
                }
                return -EINVAL;
        }
        p.doc = doc;
        yaml_node_t *root = yaml_document_get_root_node(doc);
        if (root->type != YAML_MAPPING_NODE)
                return set_error(err, file, root, "expected a mapping (id, type, checks, ...), got %s",
                                 con_yaml_node_kind_to_string(root));
        r = check_keys(&p, root, "contract");
        if (r < 0)
                return r;
        c = calloc(1, sizeof *c);
        if (!c || (file && !(c->file = strdup(file))))
                return -ENOMEM;
        c->type = _CONTRACT_TYPE_INVALID;

        /* scope first: check validation depends on it. */
        yaml_node_t *scope = con_yaml_mapping_get(doc, root, "scope", NULL);
        if (scope) {
                _cleanup_free_ char *s = NULL;
                r = get_string(&p, scope, "scope", &s);
                if (r < 0)
                        return r;
                const char *a = startswith(s, "agent:");
                if (a) {
                        if (!con_agent_name_valid(a))
                                return set_error(err, file, scope, "scope: '%s': %s", a,
                                                 con_name_problem_to_string(con_agent_name_check(a)));
                        if (!(c->scope_agent = strdup(a)))
                                return -ENOMEM;
                } else if (!streq(s, "system"))
                        return set_error(err, file, scope, "scope: '%s' is not 'system' or 'agent:NAME'", s);
        }

        yaml_node_t *kn, *vn, *checks = NULL, *typen = NULL;
        CON_YAML_MAPPING_FOREACH(doc, root, kn, vn) {
                const char *k = con_yaml_scalar(kn);
                r = 0;
                if (streq(k, "id")) {
                        r = get_string(&p, vn, "id", &c->id);
                        if (r >= 0 && !contract_id_valid(c->id))
                                return set_error(err, file, vn, "id: '%s' is not a contract id (letters, digits, '.', "
                                                 "'_', '-', up to 64 characters, e.g. CON-SYS-001)", c->id);
                } else if (streq(k, "description"))
                        r = get_string(&p, vn, "description", &c->description);
                else if (streq(k, "type")) {
                        typen = vn;
                        const char *s = con_yaml_scalar(vn);
                        c->type = s && streq(s, "detective") ? CONTRACT_DETECTIVE :
                                  s && streq(s, "preventive") ? CONTRACT_PREVENTIVE : _CONTRACT_TYPE_INVALID;
                        if (c->type < 0)
                                return set_error(err, file, vn, "type: '%s' is not detective or preventive", strempty(s));
                } else if (streq(k, "frequency")) {
                        if (!con_yaml_node_is_null(vn))
                                r = get_duration(&p, vn, "frequency", false, &c->frequency_usec);
                        if (r >= 0 && c->frequency_usec > 0 && c->frequency_usec < CONTRACT_FREQUENCY_MIN_USEC)
                                return set_error(err, file, vn, "frequency: at least 1s");
                } else if (streq(k, "checks"))
                        checks = vn;
                else if (streq(k, "scope") || streq(k, "mechanism") || streq(k, "agent") || streq(k, "enforcement"))
                        ;       /* scope: above; the rest: registry fields of preventive contracts */
                else
                        return set_error(err, file, kn, "unknown key '%s' (allowed: id, description, type, frequency, "
                                         "scope, checks; mechanism, agent, enforcement for preventive contracts)", k);
                if (r < 0)
                        return r;
        }
        if (isempty(c->id))
                return set_error(err, file, root, "'id' is required");
        if (!typen)
                return set_error(err, file, root, "'type' is required (detective or preventive)");
        if (c->type == CONTRACT_PREVENTIVE) {
                *ret = TAKE_PTR(c);
                return 0;
        }
        if (!checks || checks->type != YAML_SEQUENCE_NODE || con_yaml_sequence_length(checks) == 0)
                return set_error(err, file, checks ?: root, "'checks': a detective contract needs a list of at least one check");
        size_t n = con_yaml_sequence_length(checks);
        c->checks = calloc(n, sizeof *c->checks);
        if (!c->checks)
                return -ENOMEM;
        yaml_node_t *it;
        CON_YAML_SEQUENCE_FOREACH(doc, checks, it) {
                ContractCheck *ch = &c->checks[c->n_checks];
                r = parse_check(&p, c, ch, it, c->n_checks);
                c->n_checks++;
                if (r < 0)
                        return r;
                for (size_t j = 0; j + 1 < c->n_checks; j++)
                        if (streq(c->checks[j].name, ch->name))
                                return set_error(err, file, it, "checks[%zu]: the name '%s' is used twice in this contract",
                                                 c->n_checks - 1, ch->name);
        }
        *ret = TAKE_PTR(c);
        return 0;
}

int contract_load_file(const char *path, Contract **ret, ContractError *err) {
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
                contract_error_done(err);
                if (err) {
                        err->file = strdup(path);
                        (void) asprintf(&err->message, "cannot read it: %s", r == -EFBIG ? "larger than 256 KiB" : strerror(-r));
                }
                return r;
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

/* ---- native checks ---- */

static const ConContractThresholds default_thresholds = {
        .disk_min_free_pct = 15, .mem_min_free_pct = 10, .max_load_factor = 2.0, .max_session_min = 30,
        .healthcheck_interval_usec = 60 * USEC_PER_SEC,
};

static const ConContractThresholds *thresholds(const CheckContext *ctx) {
        return ctx->config ? &ctx->config->contracts : &default_thresholds;
}

#define SRV(ctx) ((ctx)->srv_dir ?: "/srv/con")
#define HOME(ctx) ((ctx)->home_root ?: "/home")

static int msg(char **ret, const char *fmt, ...) _printf_(2, 3);
static int msg(char **ret, const char *fmt, ...) {
        va_list ap;
        char *s;
        va_start(ap, fmt);
        int r = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        free(*ret);
        *ret = s;
        return 0;
}

static int check_disk_free(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        const char *path = ch->path ?: SRV(ctx);
        double min = ch->threshold >= 0 ? ch->threshold : thresholds(ctx)->disk_min_free_pct;
        struct statvfs sv;
        if (statvfs(path, &sv) < 0) {
                int r = -errno;
                (void) msg(m, "cannot statvfs %s: %s", path, strerror(errno));
                return r;
        }
        /* As df: available to unprivileged users over what they could use. */
        double used = (double) (sv.f_blocks - sv.f_bfree), avail = (double) sv.f_bavail;
        double pct = used + avail > 0 ? avail * 100.0 / (used + avail) : 100.0;
        if (msg(m, "%.0f%% free on %s (minimum %g%%)", floor(pct), path, min) < 0)
                return -ENOMEM;
        return pct >= min;
}

static int check_memory(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        double min = ch->threshold >= 0 ? ch->threshold : thresholds(ctx)->mem_min_free_pct;
        char buf[4096];
        unsigned long long total = 0, avail = 0;
        _cleanup_close_ int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return (void) msg(m, "cannot read /proc/meminfo: %s", strerror(errno)), -errno;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        if (n <= 0)
                return (void) msg(m, "cannot read /proc/meminfo"), -EIO;
        buf[n] = 0;
        const char *t = strstr(buf, "MemTotal:"), *a = strstr(buf, "MemAvailable:");
        if (!t || !a || sscanf(t, "MemTotal: %llu", &total) != 1 || sscanf(a, "MemAvailable: %llu", &avail) != 1 || !total)
                return (void) msg(m, "/proc/meminfo has no MemTotal/MemAvailable"), -EBADMSG;
        double pct = (double) avail * 100.0 / (double) total;
        if (msg(m, "%.0f%% of memory available (minimum %g%%)", floor(pct), min) < 0)
                return -ENOMEM;
        return pct >= min;
}

static int check_load(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        double max = ch->threshold >= 0 ? ch->threshold : thresholds(ctx)->max_load_factor, load;
        char buf[256];
        _cleanup_close_ int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return (void) msg(m, "cannot read /proc/loadavg: %s", strerror(errno)), -errno;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        if (n <= 0)
                return -EIO;
        buf[n] = 0;
        if (sscanf(buf, "%lf", &load) != 1)
                return (void) msg(m, "/proc/loadavg is unreadable"), -EBADMSG;
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (cpus < 1)
                cpus = 1;
        double f = load / (double) cpus;
        if (msg(m, "load %.2f on %ld CPUs = %.2f per CPU (maximum %g)", load, cpus, f, max) < 0)
                return -ENOMEM;
        return f <= max;
}

static bool user_is_agent(uid_t uid, const char *only, char name[static 64]) {
        _cleanup_free_ char *user = NULL;
        if (con_user_by_uid(uid, &user, NULL) < 0 || !startswith(user, CON_USER_PREFIX) || strlen(user) >= 64)
                return false;
        if (only && !streq(user + strlen(CON_USER_PREFIX), only))
                return false;
        strcpy(name, user);
        return true;
}

static int check_sessions(const Contract *c, const ContractCheck *ch, const CheckContext *ctx, char **m) {
        uint64_t max = ch->max_usec ?: (uint64_t) thresholds(ctx)->max_session_min * 60 * USEC_PER_SEC;
        _cleanup_closedir_ DIR *d = opendir("/proc");
        struct dirent *de;
        double uptime = 0;
        long hz = sysconf(_SC_CLK_TCK);
        unsigned found = 0;
        struct { uid_t uid; bool agent; char user[64]; } cache[32];
        size_t n_cache = 0;
        _cleanup_fclose_ FILE *u = fopen("/proc/uptime", "re");
        if (!d || !u || fscanf(u, "%lf", &uptime) != 1)
                return (void) msg(m, "cannot read /proc"), -EIO;
        if (msg(m, "no agent process older than %" PRIu64 " s", max / USEC_PER_SEC) < 0)
                return -ENOMEM;
        while ((de = readdir(d))) {
                char path[300], buf[1024], comm[64] = "", user[64];
                struct stat st;
                if (!isdigit((unsigned char) de->d_name[0]))
                        continue;
                if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || st.st_uid == 0)
                        continue;
                /* One user database lookup per uid, not per process. */
                size_t ci;
                for (ci = 0; ci < n_cache && cache[ci].uid != st.st_uid; ci++)
                        ;
                if (ci == n_cache) {
                        if (n_cache == ELEMENTSOF(cache))
                                n_cache = 0;
                        ci = n_cache++;
                        cache[ci].uid = st.st_uid;
                        cache[ci].agent = user_is_agent(st.st_uid, c->scope_agent, cache[ci].user);
                }
                if (!cache[ci].agent)
                        continue;
                strcpy(user, cache[ci].user);
                snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
                _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
                ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
                if (n <= 0)
                        continue;
                buf[n] = 0;
                /* pid (comm) state ppid ... field 22 starttime; comm may contain spaces and ')'. */
                char *lp = strchr(buf, '('), *rp = strrchr(buf, ')');
                if (!lp || !rp || rp < lp)
                        continue;
                snprintf(comm, sizeof comm, "%.*s", (int) (rp - lp - 1), lp + 1);
                unsigned long long start = 0;
                char *f = rp + 2;
                for (int i = 3; i < 22 && f; i++) {
                        f = strchr(f, ' ');
                        if (f)
                                f++;
                }
                if (!f || sscanf(f, "%llu", &start) != 1)
                        continue;
                double age = uptime - (double) start / (double) hz;
                if (age * USEC_PER_SEC <= (double) max)
                        continue;
                if (found++ == 0 && msg(m, "%s: pid %s (%s) running for %.0f s (maximum %" PRIu64 " s)", user,
                                        de->d_name, comm, age, max / USEC_PER_SEC) < 0)
                        return -ENOMEM;
        }
        if (found > 1) {
                _cleanup_free_ char *first = TAKE_PTR(*m);
                if (msg(m, "%s, and %u more", first, found - 1) < 0)
                        return -ENOMEM;
        }
        return found == 0;
}

/* Owner/group/mode/ACL of one path, appending problems to *problems. 1 good, 0 not. */
static int path_matches(int fd, const char *path, const char *owner, const char *group, int mode, int acl,
                        char **problems) {
        struct stat st;
        int good = 1;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (owner) {
                struct passwd *pw = getpwnam(owner);
                if (!pw || pw->pw_uid != st.st_uid) {
                        _cleanup_free_ char *p = TAKE_PTR(*problems);
                        if (msg(problems, "%s%s%s is owned by uid %u, not %s", strempty(p), p ? "; " : "", path,
                                (unsigned) st.st_uid, owner) < 0)
                                return -ENOMEM;
                        good = 0;
                }
        }
        if (group) {
                struct group *gr = getgrnam(group);
                if (!gr || gr->gr_gid != st.st_gid) {
                        _cleanup_free_ char *p = TAKE_PTR(*problems);
                        if (msg(problems, "%s%s%s has gid %u, not group %s", strempty(p), p ? "; " : "", path,
                                (unsigned) st.st_gid, group) < 0)
                                return -ENOMEM;
                        good = 0;
                }
        }
        if (mode >= 0 && (int) (st.st_mode & 07777) != mode) {
                _cleanup_free_ char *p = TAKE_PTR(*problems);
                if (msg(problems, "%s%s%s has mode %04o, not %04o", strempty(p), p ? "; " : "", path,
                        (unsigned) (st.st_mode & 07777), (unsigned) mode) < 0)
                        return -ENOMEM;
                good = 0;
        }
        if (acl >= 0 && !S_ISLNK(st.st_mode)) {
                _cleanup_acl_free_ acl_t a = acl_get_fd(fd);
                int extended = 0;
                if (a) {
                        acl_entry_t e;
                        for (int k = acl_get_entry(a, ACL_FIRST_ENTRY, &e); k > 0; k = acl_get_entry(a, ACL_NEXT_ENTRY, &e)) {
                                acl_tag_t tag;
                                if (acl_get_tag_type(e, &tag) == 0 && (tag == ACL_USER || tag == ACL_GROUP || tag == ACL_MASK))
                                        extended = 1;
                        }
                }
                if (extended != acl) {
                        _cleanup_free_ char *p = TAKE_PTR(*problems);
                        if (msg(problems, "%s%s%s %s", strempty(p), p ? "; " : "", path,
                                extended ? "carries an extended ACL" : "has no extended ACL") < 0)
                                return -ENOMEM;
                        good = 0;
                }
        }
        return good;
}

static int check_path(const ContractCheck *ch, char **m) {
        _cleanup_free_ char *problems = NULL;
        _cleanup_close_ int fd = open_nofollow(ch->path, O_RDONLY | O_PATH, 0);
        if (fd == -ENOENT && ch->missing_ok)
                return msg(m, "%s is absent", ch->path) < 0 ? -ENOMEM : 1;
        if (fd < 0) {
                (void) msg(m, "%s: %s", ch->path, fd == -ELOOP ? "a symbolic link is on the way" : strerror(-fd));
                return 0;
        }
        if (ch->acl >= 0) {
                /* ACLs need a real descriptor; reopen (still no symlinks). */
                int fd2 = open_nofollow(ch->path, O_RDONLY | O_NONBLOCK, 0);
                if (fd2 >= 0) {
                        safe_close(fd);
                        fd = fd2;
                }
        }
        int r = path_matches(fd, ch->path, ch->owner, ch->group, ch->mode, ch->acl, &problems);
        if (r < 0)
                return r;
        if (r == 0) {
                free(*m);
                *m = TAKE_PTR(problems);
                return 0;
        }
        return msg(m, "%s as required", ch->path) < 0 ? -ENOMEM : 1;
}

/* Exactly what con bootstrap sets (bus/provision/provision.c): root:con-models 0640, no ACL entries, so the
 * model gateway reads the keys and no agent can. Absent is fine (no provider keys). */
static int check_env_file(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        ContractCheck p = { .path = (char *) (ch->path ?: ctx->env_path ?: "/etc/con/env"), .owner = (char *) "root",
                            .group = (char *) "con-models", .mode = 0640, .acl = 0, .missing_ok = true };
        return check_path(&p, m);
}

static bool agent_in_scope(const Contract *c, const char *name) {
        return !c->scope_agent || streq(c->scope_agent, name);
}

static int append(char **problems, const char *fmt, ...) _printf_(2, 3);
static int append(char **problems, const char *fmt, ...) {
        va_list ap;
        _cleanup_free_ char *add = NULL, *old = TAKE_PTR(*problems);
        va_start(ap, fmt);
        int r = vasprintf(&add, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        return msg(problems, "%s%s%s", strempty(old), old ? "; " : "", add);
}

static int check_agents_md(const Contract *c, const CheckContext *ctx, char **m) {
        _cleanup_free_ char *problems = NULL;
        unsigned n = 0;
        for (size_t i = 0; ctx->config && i < ctx->config->n_agents; i++) {
                const char *name = ctx->config->agents[i].name;
                _cleanup_free_ char *path = NULL, *sumpath = NULL, *text = NULL, *sum = NULL;
                size_t len;
                if (!agent_in_scope(c, name))
                        continue;
                n++;
                if (asprintf(&path, "%s/a-%s/AGENTS.md", HOME(ctx), name) < 0 || asprintf(&sumpath, "%s.sha256", path) < 0)
                        return -ENOMEM;
                _cleanup_close_ int fd = open_nofollow(path, O_RDONLY, 0);
                if (fd < 0) {
                        if (append(&problems, "%s: %s", path, strerror(-fd)) < 0)
                                return -ENOMEM;
                        continue;
                }
                int r = path_matches(fd, path, "root", "root", 0444, -1, &problems);
                if (r < 0)
                        return r;
                r = read_fd(fd, CON_FILE_MAX, &text, &len);
                if (r >= 0)
                        r = read_file_nofollow(sumpath, 4096, &sum, NULL);
                if (r < 0) {
                        if (append(&problems, "%s: cannot read it or its .sha256: %s", path, strerror(-r)) < 0)
                                return -ENOMEM;
                        continue;
                }
                char hex[CON_SHA256_HEX_SIZE];
                r = con_sha256_hex(text, len, hex);
                if (r < 0)
                        return r;
                if (strncmp(sum, hex, 64) != 0 && append(&problems, "%s does not match %s", path, sumpath) < 0)
                        return -ENOMEM;
        }
        if (problems) {
                free(*m);
                *m = TAKE_PTR(problems);
                return 0;
        }
        return msg(m, "%u AGENTS.md files intact", n) < 0 ? -ENOMEM : 1;
}

/* The keeper's layout (docs/SECURITY.md): the agent folder and the service's state are root's and
 * not writable by the agent; only the workspace is the agent user's. */
static int check_agent_dirs(const Contract *c, const CheckContext *ctx, char **m) {
        static const struct {
                const char *sub;
                mode_t forbidden;       /* the inbox's group bits are the peers' -wx ACL mask */
                bool optional;          /* created by the service on first use */
        } root_dirs[] = {
                { "inbox", 002, false }, { "outbox", 022, false }, { "processed", 022, false },
                { "queue", 077, true }, { "failed", 022, true }, { "skills", 022, true },
        };
        _cleanup_free_ char *problems = NULL;
        unsigned n = 0;
        for (size_t i = 0; ctx->config && i < ctx->config->n_agents; i++) {
                const char *name = ctx->config->agents[i].name;
                _cleanup_free_ char *user = NULL, *base = NULL, *ws = NULL;
                struct stat st;
                if (!agent_in_scope(c, name))
                        continue;
                n++;
                if (con_agent_user(name, &user) < 0 || asprintf(&base, "%s/agents/%s", SRV(ctx), name) < 0 ||
                    asprintf(&ws, "%s/workspace", base) < 0)
                        return -ENOMEM;
                struct passwd *pw = getpwnam(user);
                if (!pw) {
                        if (append(&problems, "user %s does not exist", user) < 0)
                                return -ENOMEM;
                        continue;
                }
                if (lstat(base, &st) < 0 || !S_ISDIR(st.st_mode)) {
                        if (append(&problems, "%s is missing or not a folder", base) < 0)
                                return -ENOMEM;
                        continue;
                }
                if (st.st_uid != 0 && append(&problems, "%s is not owned by root (its keeper, the agent service)",
                                             base) < 0)
                        return -ENOMEM;
                if ((st.st_mode & 066) && append(&problems, "%s has group/other read or write bits (%04o)", base,
                                                 (unsigned) (st.st_mode & 07777)) < 0)
                        return -ENOMEM;
                for (size_t j = 0; j < ELEMENTSOF(root_dirs); j++) {
                        _cleanup_free_ char *sub = NULL;
                        if (asprintf(&sub, "%s/%s", base, root_dirs[j].sub) < 0)
                                return -ENOMEM;
                        if (lstat(sub, &st) < 0 && errno == ENOENT && root_dirs[j].optional)
                                continue;
                        if (lstat(sub, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0 ||
                            (st.st_mode & root_dirs[j].forbidden))
                                if (append(&problems, "%s is missing, not owned by root or writable by others",
                                           sub) < 0)
                                        return -ENOMEM;
                }
                if (lstat(ws, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != pw->pw_uid)
                        if (append(&problems, "%s is missing or not owned by %s", ws, user) < 0)
                                return -ENOMEM;
        }
        if (problems) {
                free(*m);
                *m = TAKE_PTR(problems);
                return 0;
        }
        return msg(m, "%u agent folders as provisioned", n) < 0 ? -ENOMEM : 1;
}

static int check_audit_chain(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        _cleanup_free_ char *dflt = NULL;
        ConAuditVerify v = {};
        if (!ch->path && asprintf(&dflt, "%s/logs/audit", SRV(ctx)) < 0)
                return -ENOMEM;
        const char *dir = ch->path ?: dflt;
        int r = con_audit_verify(dir, &v);
        if (r == -ENOENT)
                return msg(m, "no audit log in %s yet", dir) < 0 ? -ENOMEM : 1;
        if (r == -EBADMSG)
                return msg(m, "audit chain in %s broken at line %" PRIu64 ": %s", dir, v.bad_line, v.reason) < 0 ? -ENOMEM : 0;
        if (r < 0)
                return (void) msg(m, "cannot verify the audit log in %s: %s", dir, strerror(-r)), r;
        return msg(m, "audit chain intact (%" PRIu64 " records)", v.records) < 0 ? -ENOMEM : 1;
}

static int check_audit_writable(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        _cleanup_free_ char *dflt = NULL;
        if (!ch->path && asprintf(&dflt, "%s/logs/audit", SRV(ctx)) < 0)
                return -ENOMEM;
        const char *dir = ch->path ?: dflt;
        _cleanup_close_ int dfd = open_nofollow(dir, O_RDONLY | O_DIRECTORY, 0);
        if (dfd < 0)
                return msg(m, "%s: %s", dir, strerror(-dfd)) < 0 ? -ENOMEM : 0;
        /* An unnamed file in the folder: proves the file system accepts writes there. */
        _cleanup_close_ int fd = openat(dfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0 && errno == EOPNOTSUPP) {
                fd = openat(dfd, ".healthcheck-probe", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd >= 0)
                        (void) unlinkat(dfd, ".healthcheck-probe", 0);
        }
        if (fd < 0 || write(fd, "ok\n", 3) != 3)
                return msg(m, "%s is not writable: %s", dir, strerror(errno)) < 0 ? -ENOMEM : 0;
        return msg(m, "%s is writable", dir) < 0 ? -ENOMEM : 1;
}

/* The first five changes, joined, for a message. */
static int drift_scan(const CheckContext *ctx, char * const *paths, char ***ret_changes, char **m) {
        _cleanup_free_ char *error = NULL;
        int r = con_drift_scan(ctx->config_path ?: "/etc/con/con.yaml", paths, ctx->quarantined, ret_changes, &error);
        if (r < 0)
                (void) msg(m, "cannot compare with the provisioned state: %s", error ?: strerror(-r));
        return r;
}

static int drift_text(char * const *changes, char **ret) {
        size_t n = strv_length(changes);
        _cleanup_free_ char *t = NULL;
        for (size_t i = 0; i < n && i < 5; i++)
                if (append(&t, "%s", changes[i]) < 0)
                        return -ENOMEM;
        *ret = TAKE_PTR(t);
        return 0;
}

static int check_drift(const ContractCheck *ch, const CheckContext *ctx, char **m) {
        _cleanup_strv_free_ char **changes = NULL;
        _cleanup_free_ char *text = NULL;
        int r = drift_scan(ctx, ch->paths, &changes, m);
        if (r < 0)
                return r;
        size_t n = strv_length(changes);
        if (n > 0) {
                if (drift_text(changes, &text) < 0)
                        return -ENOMEM;
                r = msg(m, "%zu difference%s from what con bootstrap provisions: %s%s", n, n == 1 ? "" : "s", text,
                        n > 5 ? "; ..." : "");
                return r < 0 ? r : 0;
        }
        return msg(m, "in sync with con bootstrap") < 0 ? -ENOMEM : 1;
}

static int check_skills(const Contract *c, const CheckContext *ctx, char **m) {
        _cleanup_free_ char *problems = NULL;
        unsigned files = 0;
        /* Extra or changed files: everything in the agent's skills folder is root:root 0444. */
        for (size_t i = 0; ctx->config && i < ctx->config->n_agents; i++) {
                const char *name = ctx->config->agents[i].name;
                _cleanup_free_ char *dir = NULL;
                if (!agent_in_scope(c, name))
                        continue;
                if (asprintf(&dir, "%s/agents/%s/skills", SRV(ctx), name) < 0)
                        return -ENOMEM;
                _cleanup_close_ int dfd = open_nofollow(dir, O_RDONLY | O_DIRECTORY, 0);
                if (dfd == -ENOENT)
                        continue;
                if (dfd < 0) {
                        if (append(&problems, "%s: %s", dir, dfd == -ELOOP ? "a symbolic link" : strerror(-dfd)) < 0)
                                return -ENOMEM;
                        continue;
                }
                int r = path_matches(dfd, dir, "root", "root", 0755, -1, &problems);
                if (r < 0)
                        return r;
                _cleanup_closedir_ DIR *d = fdopendir(dup(dfd));
                struct dirent *de;
                while (d && (de = readdir(d))) {
                        struct stat st;
                        if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                                continue;
                        files++;
                        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
                            st.st_uid != 0 || st.st_gid != 0 || (st.st_mode & 07777) != 0444)
                                if (append(&problems, "%s/%s is not a root:root 0444 file", dir, de->d_name) < 0)
                                        return -ENOMEM;
                }
        }
        /* Changed content or missing files: what the bootstrap would write there. */
        _cleanup_strv_free_ char **paths = NULL;
        if (strv_extend(&paths, SRV(ctx)) < 0)
                return -ENOMEM;
        _cleanup_strv_free_ char **changes = NULL;
        _cleanup_free_ char *drift = NULL;
        int r = drift_scan(ctx, paths, &changes, m);
        if (r < 0)
                return r;
        if (drift_text(changes, &drift) < 0)
                return -ENOMEM;
        if (drift && strstr(drift, "/skills") && append(&problems, "%s", drift) < 0)
                return -ENOMEM;
        if (problems) {
                free(*m);
                *m = TAKE_PTR(problems);
                return 0;
        }
        return msg(m, "%u skill files unchanged", files) < 0 ? -ENOMEM : 1;
}

static int check_policy_sync(const CheckContext *ctx, char **m) {
        _cleanup_strv_free_ char **drift = NULL;
        _cleanup_free_ char *error = NULL;
        if (!ctx->config)
                return (void) msg(m, "no configuration to compare with"), -ENOMEDIUM;
        int r = con_policy_check(ctx->config, &drift, &error);
        if (r < 0)
                return (void) msg(m, "cannot check the policy: %s", error ?: strerror(-r)), r;
        size_t n = strv_length(drift);
        if (n == 0)
                return msg(m, "the three doors match the policy") < 0 ? -ENOMEM : 1;
        _cleanup_free_ char *j = strv_join(drift, "; ");
        return msg(m, "%zu difference%s between the doors and the policy: %.600s", n, n == 1 ? "" : "s", strempty(j)) < 0 ?
                -ENOMEM : 0;
}

int contract_check_native(const Contract *c, const ContractCheck *ch, const CheckContext *ctx, char **ret_message) {
        _cleanup_free_ char *m = NULL;
        int r;
        switch (ch->kind) {
        case CHECK_DISK_FREE:
                r = check_disk_free(ch, ctx, &m);
                break;
        case CHECK_MEMORY_AVAILABLE:
                r = check_memory(ch, ctx, &m);
                break;
        case CHECK_LOAD_PER_CORE:
                r = check_load(ch, ctx, &m);
                break;
        case CHECK_SESSION_DURATION:
                r = check_sessions(c, ch, ctx, &m);
                break;
        case CHECK_PATH:
                r = check_path(ch, &m);
                break;
        case CHECK_AGENTS_MD:
                r = check_agents_md(c, ctx, &m);
                break;
        case CHECK_AGENT_DIRS:
                r = check_agent_dirs(c, ctx, &m);
                break;
        case CHECK_AUDIT_CHAIN:
                r = check_audit_chain(ch, ctx, &m);
                break;
        case CHECK_AUDIT_WRITABLE:
                r = check_audit_writable(ch, ctx, &m);
                break;
        case CHECK_ENV_FILE:
                r = check_env_file(ch, ctx, &m);
                break;
        case CHECK_DRIFT:
                r = check_drift(ch, ctx, &m);
                break;
        case CHECK_SKILLS:
                r = check_skills(c, ctx, &m);
                break;
        case CHECK_POLICY_SYNC:
                r = check_policy_sync(ctx, &m);
                break;
        default:
                return -EOPNOTSUPP;
        }
        if (!m && msg(&m, "%s", r == -ENOMEM ? "out of memory" : r < 0 ? strerror(-r) : "ok") < 0)
                return -ENOMEM;
        *ret_message = TAKE_PTR(m);
        return r;
}

/* ---- shell checks ---- */

int contract_shell_argv(const ContractCheck *ch, const char *contracts_dir, char ***ret) {
        _cleanup_strv_free_ char **argv = NULL;
        char *s = NULL;
        if (strv_extend(&argv, "/bin/sh") < 0)
                return -ENOMEM;
        if (ch->kind == CHECK_COMMAND) {
                /* As the original: RESULT=$(run); test. The value also goes to the output so the
                 * audit record shows what was measured. */
                if (ch->test)
                        (void) asprintf(&s, "RESULT=$(%s)\nprintf 'RESULT=%%s\\n' \"$RESULT\"\n%s\n", ch->run, ch->test);
                else
                        s = strdup(ch->run);
                if (!s || strv_extend(&argv, "-c") < 0 || strv_consume(&argv, s) < 0)
                        return -ENOMEM;
        } else if (ch->kind == CHECK_SCRIPT) {
                if (ch->script[0] == '/')
                        s = strdup(ch->script);
                else
                        (void) asprintf(&s, "%s/%s", contracts_dir, ch->script);
                if (!s || strv_consume(&argv, s) < 0)
                        return -ENOMEM;
        } else
                return -EINVAL;
        *ret = TAKE_PTR(argv);
        return 0;
}

int contract_shell_spawn(const ContractCheck *ch, const char *contracts_dir, pid_t *ret_pid, int *ret_fd) {
        _cleanup_strv_free_ char **argv = NULL;
        int p[2];
        int r = contract_shell_argv(ch, contracts_dir, &argv);
        if (r < 0)
                return r;
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0) {
                r = -errno;
                safe_close(p[0]);
                safe_close(p[1]);
                return r;
        }
        if (pid == 0) {
                char *envp[] = { (char *) "PATH=" CONTRACT_CHECK_PATH, NULL };
                sigset_t all;
                (void) setsid();
                sigemptyset(&all);
                (void) sigprocmask(SIG_SETMASK, &all, NULL);
                for (int sig = 1; sig < _NSIG; sig++)
                        (void) signal(sig, SIG_DFL);
                int null = open("/dev/null", O_RDONLY);
                if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(p[1], STDOUT_FILENO) < 0 ||
                    dup2(p[1], STDERR_FILENO) < 0)
                        _exit(126);
                if (chdir(contracts_dir) < 0)
                        (void) chdir("/");
                execve(argv[0], argv, envp);
                dprintf(STDERR_FILENO, "cannot run %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        safe_close(p[1]);
        (void) fcntl(p[0], F_SETFL, O_NONBLOCK);
        *ret_pid = pid;
        *ret_fd = p[0];
        return 0;
}

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
