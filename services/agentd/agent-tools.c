/* SPDX-License-Identifier: MIT */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "error-detail.h"
#include "agent-tools.h"
#include "task.h"
#include "con-paths.h"
#include "errors.h"
#include "fileio.h"
#include "json-util.h"
#include "macro.h"
#include "names.h"
#include "policy.h"
#include "strv.h"
#include "time-util.h"
#include "utf8.h"

#define TOOL_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define READ_FILE_MAX (256U * 1024U)
#define EDIT_FILE_MAX (8U * 1024U * 1024U)


static const char *const tool_names[_AGENT_TOOL_MAX] = {
        [AGENT_TOOL_EXEC] = "exec",
        [AGENT_TOOL_READ_FILE] = "read_file",
        [AGENT_TOOL_WRITE_FILE] = "write_file",
        [AGENT_TOOL_EDIT_FILE] = "edit_file",
        [AGENT_TOOL_APPEND_FILE] = "append_file",
        [AGENT_TOOL_LIST_DIR] = "list_dir",
        [AGENT_TOOL_LIST_AGENTS] = "list_agents",
        [AGENT_TOOL_SEND_TASK] = "send_task",
        [AGENT_TOOL_COMMISSION_AGENT] = "commission_agent",
};

const char *agent_tool_kind_to_string(AgentToolKind k) {
        return k >= 0 && k < _AGENT_TOOL_MAX ? tool_names[k] : NULL;
}

AgentToolKind agent_tool_kind_from_string(const char *s) {
        for (int i = 0; s && i < _AGENT_TOOL_MAX; i++)
                if (streq(tool_names[i], s))
                        return (AgentToolKind) i;
        return _AGENT_TOOL_INVALID;
}

void agent_tool_args_done(AgentToolArgs *a) {
        if (!a)
                return;
        free(a->path);
        free(a->content);
        free(a->old_text);
        free(a->new_text);
        free(a->command);
        strv_free(a->argv);
        free(a->working_dir);
        free(a->agent);
        free(a->text);
        free(a->tier);
        free(a->mode);
        free(a->instructions);
        free(a->model);
        strv_free(a->roles);
        strv_free(a->may_task);
        strv_free(a->tasked_by);
        strv_free(a->network);
        *a = (AgentToolArgs) {};
}

/* ---- schemas ---- */

typedef enum ArgType { ARG_STRING, ARG_BOOL, ARG_INT, ARG_STRV } ArgType;

typedef struct ArgSpec {
        const char *name;
        ArgType type;
        bool required;
        size_t offset;          /* into AgentToolArgs */
        const char *description;
} ArgSpec;

#define A(n, t, req, field, d) { n, t, req, offsetof(AgentToolArgs, field), d }

static const ArgSpec exec_args[] = {
        A("command", ARG_STRING, false, command, "Shell command, run with /bin/sh -c. Give this or argv."),
        A("argv", ARG_STRV, false, argv, "Program and arguments, run without a shell. Give this or command."),
        A("working_dir", ARG_STRING, false, working_dir, "Working directory (default: your workspace)."),
        A("timeout", ARG_INT, false, timeout_sec, "Seconds before the command is killed (1-600, default 60)."),
};
static const ArgSpec read_args[] = {
        A("path", ARG_STRING, true, path, "File to read (relative paths start in your workspace)."),
};
static const ArgSpec write_args[] = {
        A("path", ARG_STRING, true, path, "File to write; missing parent directories are created."),
        A("content", ARG_STRING, true, content, "The whole new content."),
};
static const ArgSpec edit_args[] = {
        A("path", ARG_STRING, true, path, "File to edit."),
        A("old_text", ARG_STRING, true, old_text, "Exact text to replace; it must occur exactly once."),
        A("new_text", ARG_STRING, true, new_text, "Replacement text."),
};
static const ArgSpec append_args[] = {
        A("path", ARG_STRING, true, path, "File to append to (created when missing)."),
        A("content", ARG_STRING, true, content, "Text to append."),
};
static const ArgSpec list_args[] = {
        A("path", ARG_STRING, false, path, "Directory to list (default: your workspace)."),
};
static const ArgSpec send_args[] = {
        A("agent", ARG_STRING, true, agent, "Name of the agent to task, e.g. sysadmin; AGENT@HOST for an agent of "
          "another host of the mesh, e.g. sysadmin@host-b."),
        A("text", ARG_STRING, true, text, "The task; it must stand on its own."),
        A("wait", ARG_BOOL, false, wait, "Wait for the result (default true, up to 10 minutes)."),
};

static const ArgSpec commission_args[] = {
        A("name", ARG_STRING, true, agent, "The new agent's name: lower-case letters, digits and '-', up to 29 "
          "characters, e.g. researcher."),
        A("tier", ARG_STRING, false, tier, "officer, operator or worker."),
        A("instructions", ARG_STRING, false, instructions, "Its own instructions (its AGENTS.md layer), at most 64 KiB."),
        A("roles", ARG_STRV, false, roles, "Roles (layers and skills)."),
        A("mode", ARG_STRING, false, mode, "on-demand (default) or always."),
        A("model", ARG_STRING, false, model, "Its model (default: its tier's)."),
        A("may_task", ARG_STRV, false, may_task, "Agents the new agent may task (only ones you may task yourself)."),
        A("tasked_by", ARG_STRV, false, tasked_by, "Agents that may task it, besides the concierge."),
        A("network", ARG_STRV, false, network, "[\"none\"], [\"gateway\"] or allow-list entries, not wider than "
          "your own."),
};

typedef struct ToolSpec {
        const char *description;
        const ArgSpec *args;
        size_t n_args;
} ToolSpec;

static const ToolSpec tool_specs[_AGENT_TOOL_MAX] = {
        [AGENT_TOOL_EXEC] = { "Run a command as your user in your workspace. Returns stdout, stderr and the "
                              "exit code (at most 1 MiB: a longer output keeps its start and its end).",
                              exec_args, ELEMENTSOF(exec_args) },
        [AGENT_TOOL_READ_FILE] = { "Read a text file.", read_args, ELEMENTSOF(read_args) },
        [AGENT_TOOL_WRITE_FILE] = { "Create or replace a file.", write_args, ELEMENTSOF(write_args) },
        [AGENT_TOOL_EDIT_FILE] = { "Replace one exact occurrence of old_text by new_text in a file.", edit_args,
                                   ELEMENTSOF(edit_args) },
        [AGENT_TOOL_APPEND_FILE] = { "Append text to a file.", append_args, ELEMENTSOF(append_args) },
        [AGENT_TOOL_LIST_DIR] = { "List a directory.", list_args, ELEMENTSOF(list_args) },
        [AGENT_TOOL_LIST_AGENTS] = { "List the agents of this conspiracy: name, tier, roles, running or not.",
                                     NULL, 0 },
        [AGENT_TOOL_SEND_TASK] = { "Give a task to another agent over the system bus (the policy decides "
                                   "whether you may). With wait, returns that agent's result.",
                                   send_args, ELEMENTSOF(send_args) },
        [AGENT_TOOL_COMMISSION_AGENT] = { "Create a new agent in this conspiracy (its Linux user, folders, "
                                          "AGENTS.md and bus name), through con-provisiond. It answers at once, by "
                                          "file drop and on the bus. You may grant it only what you may do yourself. "
                                          "Returns what was done, or why it was refused.",
                                          commission_args, ELEMENTSOF(commission_args) },
};

static const char *arg_type_json(ArgType t) {
        switch (t) {
        case ARG_STRING: return "string";
        case ARG_BOOL: return "boolean";
        case ARG_INT: return "integer";
        case ARG_STRV: return "array";
        }
        return "string";
}

/* Whether agent may commission agents: the policy's commission verb for its user. */
static bool may_commission(const ConConfig *config, const ConAgent *agent) {
        _cleanup_(con_policy_freep) ConPolicy *policy = NULL;
        _cleanup_free_ char *user = NULL;
        if (!config || !agent || con_policy_from_config(config, &policy) < 0 || con_agent_user(agent->name, &user) < 0)
                return false;
        return con_policy_allows(policy, user, NULL, CON_POLICY_COMMISSION, NULL);
}

int agent_tools_register(ConLlmConversation *c, const ConConfig *config, const ConAgent *agent) {
        bool commission = may_commission(config, agent);
        for (int k = 0; k < _AGENT_TOOL_MAX; k++) {
                const ToolSpec *s = &tool_specs[k];
                if (k == AGENT_TOOL_COMMISSION_AGENT && !commission)
                        continue;
                _cleanup_cjson_ cJSON *schema = cJSON_CreateObject();
                cJSON *props = cJSON_AddObjectToObject(schema, "properties");
                cJSON *req = cJSON_CreateArray();
                if (!schema || !props || !req || !cJSON_AddStringToObject(schema, "type", "object")) {
                        cJSON_Delete(req);
                        return -ENOMEM;
                }
                for (size_t i = 0; i < s->n_args; i++) {
                        cJSON *p = cJSON_AddObjectToObject(props, s->args[i].name);
                        if (!p || !cJSON_AddStringToObject(p, "type", arg_type_json(s->args[i].type)) ||
                            !cJSON_AddStringToObject(p, "description", s->args[i].description))
                                return -ENOMEM;
                        if (s->args[i].type == ARG_STRV) {
                                cJSON *items = cJSON_AddObjectToObject(p, "items");
                                if (!items || !cJSON_AddStringToObject(items, "type", "string"))
                                        return -ENOMEM;
                        }
                        if (s->args[i].required)
                                cJSON_AddItemToArray(req, cJSON_CreateString(s->args[i].name));
                }
                if (cJSON_GetArraySize(req) > 0)
                        cJSON_AddItemToObject(schema, "required", req);
                else
                        cJSON_Delete(req);
                _cleanup_free_ char *text = cJSON_PrintUnformatted(schema);
                if (!text)
                        return -ENOMEM;
                int r = con_llm_conversation_add_tool(c, tool_names[k], s->description, text, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- argument parsing ---- */

static char *allowed_list(const ToolSpec *s) {
        size_t n = 1;
        for (size_t i = 0; i < s->n_args; i++)
                n += strlen(s->args[i].name) + 2;
        char *b = calloc(1, n);
        if (!b)
                return NULL;
        for (size_t i = 0; i < s->n_args; i++) {
                if (i > 0)
                        strcat(b, ", ");
                strcat(b, s->args[i].name);
        }
        return b;
}

static int parse_one(const char *tool, const ArgSpec *spec, const cJSON *v, AgentToolArgs *a, char **ret_error) {
        void *field = (char *) a + spec->offset;

        switch (spec->type) {
        case ARG_STRING: {
                if (!cJSON_IsString(v))
                        return con_error_textf(ret_error, -EINVAL, "%s: argument \"%s\" must be a string, got %s", tool,
                                         spec->name, con_json_kind(v));
                char *s = strdup(v->valuestring);
                if (!s)
                        return -ENOMEM;
                *(char **) field = s;
                return 0;
        }
        case ARG_BOOL:
                if (!cJSON_IsBool(v))
                        return con_error_textf(ret_error, -EINVAL, "%s: argument \"%s\" must be true or false, got %s",
                                         tool, spec->name, con_json_kind(v));
                *(bool *) field = cJSON_IsTrue(v);
                return 0;
        case ARG_INT: {
                double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
                if (!cJSON_IsNumber(v) || !isfinite(d) || d < 1 || d > AGENT_TOOL_EXEC_TIMEOUT_MAX || d != (double) (unsigned) d)
                        return con_error_textf(ret_error, -EINVAL,
                                         "%s: argument \"%s\" must be an integer from 1 to %u, got %s", tool,
                                         spec->name, AGENT_TOOL_EXEC_TIMEOUT_MAX,
                                         cJSON_IsNumber(v) ? "a number outside that range" : con_json_kind(v));
                *(unsigned *) field = (unsigned) d;
                return 0;
        }
        case ARG_STRV: {
                _cleanup_strv_free_ char **l = NULL;
                if (!cJSON_IsArray(v))
                        return con_error_textf(ret_error, -EINVAL, "%s: argument \"%s\" must be an array of strings, got %s",
                                         tool, spec->name, con_json_kind(v));
                int i = 0;
                const cJSON *e;
                cJSON_ArrayForEach(e, v) {
                        if (!cJSON_IsString(e))
                                return con_error_textf(ret_error, -EINVAL, "%s: argument \"%s\"[%d] must be a string, got %s",
                                                 tool, spec->name, i, con_json_kind(e));
                        if (strv_extend(&l, e->valuestring) < 0)
                                return -ENOMEM;
                        i++;
                }
                if (!l)
                        return con_error_textf(ret_error, -EINVAL, "%s: argument \"%s\" must not be empty", tool, spec->name);
                *(char ***) field = TAKE_PTR(l);
                return 0;
        }
        }
        return -EINVAL;
}

static int check_args(AgentToolArgs *a, const char *tool, char **ret_error) {
        switch (a->kind) {
        case AGENT_TOOL_EXEC:
                if (!!a->command == !!a->argv)
                        return con_error_textf(ret_error, -EINVAL,
                                         "exec: give exactly one of \"command\" (a shell command line) or \"argv\" "
                                         "(an array: program and arguments)");
                if (a->command && isempty(a->command))
                        return con_error_textf(ret_error, -EINVAL, "exec: argument \"command\" must not be empty");
                if (a->argv && isempty(a->argv[0]))
                        return con_error_textf(ret_error, -EINVAL, "exec: argument \"argv\"[0] (the program) must not be empty");
                if (a->working_dir && isempty(a->working_dir))
                        return con_error_textf(ret_error, -EINVAL, "exec: argument \"working_dir\" must not be empty");
                if (a->timeout_sec == 0)
                        a->timeout_sec = AGENT_TOOL_EXEC_TIMEOUT;
                return 0;
        case AGENT_TOOL_SEND_TASK:
                if (strchr(a->agent, '@')) {
                        if (!con_mesh_target_valid(a->agent))
                                return con_error_textf(ret_error, -EINVAL,
                                                 "send_task: \"%s\" is not AGENT@HOST (an agent name, '@' and "
                                                 "the name of a host of the mesh: lower-case letters, digits and "
                                                 "'-')", a->agent);
                } else if (!con_agent_name_valid(a->agent))
                        return con_error_textf(ret_error, -EINVAL,
                                         "send_task: \"%s\" is not an agent name (lower-case letters, digits and '-', "
                                         "up to 29 characters; list_agents shows them), or AGENT@HOST for an agent of "
                                         "another host", a->agent);
                if (strspn(a->text, " \t\r\n") == strlen(a->text))
                        return con_error_textf(ret_error, -EINVAL, "send_task: argument \"text\" must not be empty");
                if (strlen(a->text) > AGENT_TOOL_SEND_TEXT_MAX)
                        return con_error_textf(ret_error, -EINVAL, "send_task: argument \"text\" is longer than %u bytes",
                                         AGENT_TOOL_SEND_TEXT_MAX);
                return 0;
        case AGENT_TOOL_COMMISSION_AGENT:
                if (!con_agent_name_valid(a->agent))
                        return con_error_textf(ret_error, -EINVAL,
                                         "commission_agent: \"%s\" is not a valid agent name (lower-case letters, digits "
                                         "and '-', starting with a letter, up to 29 characters)", a->agent);
                return 0;
        default:
                if (a->path && isempty(a->path))
                        return con_error_textf(ret_error, -EINVAL, "%s: argument \"path\" must not be empty", tool);
                return 0;
        }
}

int agent_tool_args_parse(const char *tool, const char *json, AgentToolArgs *ret, char **ret_error) {
        _cleanup_(agent_tool_args_done) AgentToolArgs a = { .wait = true };
        _cleanup_cjson_ cJSON *root = NULL;
        int r;

        a.kind = agent_tool_kind_from_string(tool);
        if (a.kind < 0)
                return con_error_textf(ret_error, -ENOENT,
                                 "unknown tool \"%s\"; the tools are exec, read_file, write_file, edit_file, "
                                 "append_file, list_dir, list_agents, send_task (and commission_agent where the "
                                 "policy allows it)", strempty(tool));
        const ToolSpec *s = &tool_specs[a.kind];

        if (isempty(json))
                json = "{}";
        size_t len = strlen(json);
        if (len > AGENT_TOOL_ARGS_MAX)
                return con_error_textf(ret_error, -EINVAL, "%s: arguments of %zu bytes are over the limit of %u bytes",
                                 tool, len, AGENT_TOOL_ARGS_MAX);
        const char *end = NULL;
        root = cJSON_ParseWithOpts(json, &end, true);
        if (!root)
                return con_error_textf(ret_error, -EINVAL, "%s: arguments are not valid JSON (error near offset %td)", tool,
                                 (end ?: cJSON_GetErrorPtr() ?: json) - json);
        if (!cJSON_IsObject(root))
                return con_error_textf(ret_error, -EINVAL, "%s: arguments must be a JSON object, got %s", tool,
                                 con_json_kind(root));
        /* What the gateway makes of arguments that were no JSON object (bus/fabric/llm.h). */
        const cJSON *bad = cJSON_GetObjectItemCaseSensitive(root, CON_LLM_MALFORMED_ARGUMENTS);
        if (cJSON_IsString(bad)) {
                _cleanup_cjson_ cJSON *j = cJSON_Parse(bad->valuestring);
                return con_error_textf(ret_error, -EINVAL,
                                 "%s: the arguments are not a JSON object (%s): %.200s%s -- call %s again with a "
                                 "JSON object of its parameters", tool, j ? con_json_kind(j) : "invalid JSON",
                                 bad->valuestring, strlen(bad->valuestring) > 200 ? "..." : "", tool);
        }

        const cJSON *v;
        cJSON_ArrayForEach(v, root) {
                const ArgSpec *spec = NULL;
                for (size_t i = 0; i < s->n_args; i++)
                        if (v->string && streq(s->args[i].name, v->string))
                                spec = &s->args[i];
                if (!spec) {
                        _cleanup_free_ char *allowed = allowed_list(s);
                        return con_error_textf(ret_error, -EINVAL, "%s: unknown argument \"%s\" (allowed: %s)", tool,
                                         strempty(v->string), s->n_args ? strempty(allowed) : "none");
                }
                for (const cJSON *w = root->child; w != v; w = w->next)
                        if (w->string && streq(w->string, v->string))
                                return con_error_textf(ret_error, -EINVAL, "%s: argument \"%s\" is given twice", tool,
                                                 v->string);
                r = parse_one(tool, spec, v, &a, ret_error);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < s->n_args; i++)
                if (s->args[i].required && !cJSON_GetObjectItemCaseSensitive(root, s->args[i].name))
                        return con_error_textf(ret_error, -EINVAL, "%s: missing required argument \"%s\"", tool,
                                         s->args[i].name);
        r = check_args(&a, tool, ret_error);
        if (r < 0)
                return r;
        *ret = a;
        a = (AgentToolArgs) {};
        return 0;
}

/* ---- output helpers ---- */

/* The marker between the head and the tail of a cut output. */
static int cut_marker(uint64_t size, char **ret) {
        return asprintf(ret, "\n[... cut: %" PRIu64 " bytes in all, the start and the end are shown ...]\n",
                        size) < 0 ? -ENOMEM : 0;
}

int agent_tool_cap_output(char **text, size_t max) {
        _cleanup_free_ char *clean = NULL, *marker = NULL, *out = NULL;
        size_t l = strlen(*text), cl;
        int r = con_utf8_sanitize(*text, l, &clean, &cl);
        if (r < 0)
                return r;
        if (cl <= max && r == 0)
                return 0;
        if (cut_marker(l, &marker) < 0)
                return -ENOMEM;
        r = con_utf8_head_tail(clean, cl, max, marker, &out);
        if (r < 0)
                return r;
        free(*text);
        *text = TAKE_PTR(out);
        return 0;
}

/* Tool output as valid text: bytes that are not UTF-8 become U+FFFD, with a line saying so (the
 * model should know the bytes it sees are not all the file or stream had). */
static int tool_output_text(char **text) {
        _cleanup_free_ char *clean = NULL;
        size_t l = strlen(*text);
        if (con_utf8_valid(*text, l))
                return 0;
        if (con_utf8_sanitize(*text, l, &clean, NULL) < 0)
                return -ENOMEM;
        char *n = NULL;
        if (asprintf(&n, "%s\n" AGENT_TOOL_REPLACED_NOTE, clean) < 0)
                return -ENOMEM;
        free(*text);
        *text = n;
        return 0;
}

_printf_(3, 4)
static int tool_result(char **ret, bool is_error_value, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = vasprintf(ret, fmt, ap);
        va_end(ap);
        (void) is_error_value;
        return r < 0 ? -ENOMEM : 0;
}

/* ---- exec ---- */

/* One output stream of a command: its first and its last AGENT_TOOL_OUTPUT_MAX bytes (any
 * bytes) and its true size; whatever the result keeps of it lies within those. */
typedef struct Capture {
        char head[AGENT_TOOL_OUTPUT_MAX], tail[AGENT_TOOL_OUTPUT_MAX];
        size_t head_len, tail_len;
        uint64_t size;
} Capture;

static int capture_read(int fd, Capture *c) {
        char b[8192];
        ssize_t n = read(fd, b, sizeof(b));
        if (n < 0)
                return errno == EINTR || errno == EAGAIN ? 0 : -errno;
        if (n == 0)
                return 1;
        size_t k = (size_t) n;
        c->size += k;
        /* Keep draining whatever the size, so the command never blocks on a full pipe. */
        size_t h = k < sizeof(c->head) - c->head_len ? k : sizeof(c->head) - c->head_len;
        memcpy(c->head + c->head_len, b, h);
        c->head_len += h;
        if (c->tail_len + k > sizeof(c->tail)) {
                size_t drop = c->tail_len + k - sizeof(c->tail);
                memmove(c->tail, c->tail + drop, c->tail_len - drop);
                c->tail_len -= drop;
        }
        memcpy(c->tail + c->tail_len, b, k);
        c->tail_len += k;
        return 0;
}

/* The stream as valid text: all of it when the head holds it, else the head and the tail (each
 * starting and ending on whole characters) joined, a text longer than any budget that is cut
 * below. *ret_replaced is set when bytes that were not UTF-8 became U+FFFD. */
static int capture_text(const Capture *c, char **ret, size_t *ret_len, bool *ret_replaced) {
        if (c->size <= sizeof(c->head)) {
                int r = con_utf8_sanitize(c->head, c->head_len, ret, ret_len);
                if (r > 0)
                        *ret_replaced = true;
                return r < 0 ? r : 0;
        }
        _cleanup_free_ char *h = NULL, *t = NULL;
        size_t hl, tl, o = con_utf8_tail_start(c->tail, c->tail_len, c->tail_len);
        int r1 = con_utf8_sanitize(c->head, con_utf8_complete_len(c->head, c->head_len), &h, &hl);
        int r2 = con_utf8_sanitize(c->tail + o, c->tail_len - o, &t, &tl);
        if (r1 < 0 || r2 < 0)
                return -ENOMEM;
        if (r1 > 0 || r2 > 0)
                *ret_replaced = true;
        char *j = malloc(hl + tl + 1);
        if (!j)
                return -ENOMEM;
        memcpy(j, h, hl);
        memcpy(j + hl, t, tl + 1);
        *ret = j;
        *ret_len = hl + tl;
        return 0;
}

/* The stream's text in at most budget bytes: whole, or its start and its end with a marker. */
static int capture_fit(const Capture *c, const char *text, size_t len, size_t budget, char **ret) {
        _cleanup_free_ char *marker = NULL;
        if (cut_marker(c->size, &marker) < 0)
                return -ENOMEM;
        int r = con_utf8_head_tail(text, len, budget, marker, ret);
        return r == -EINVAL ? con_utf8_head_tail(text, len, budget, "", ret) : r;
}

static _Noreturn void exec_child(const AgentToolContext *ctx, const AgentToolArgs *a, int out_w, int err_w) {
        (void) setpgid(0, 0);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null < 0 || dup2(null, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0)
                _exit(126);
        (void) close_range(3, ~0U, 0);
        const char *dir = a->working_dir ?: ctx->workspace;
        if (dir && chdir(dir) < 0) {
                dprintf(2, "cannot enter the working directory %s: %m\n", dir);
                _exit(126);
        }
        /* A clean environment: only what a command needs, never what the service had. */
        (void) clearenv();
        if ((ctx->workspace && setenv("HOME", ctx->workspace, 1) < 0) || setenv("PATH", TOOL_PATH, 1) < 0 ||
            setenv("LANG", "C.UTF-8", 1) < 0 || (ctx->agent && setenv("CON_AGENT", ctx->agent->name, 1) < 0) ||
            con_config_agent_proxy_setenv(ctx->config, ctx->agent) < 0)
                _exit(126);
        if (a->command)
                execl("/bin/sh", "sh", "-c", a->command, (char *) NULL);
        else
                execvp(a->argv[0], a->argv);
        dprintf(2, "cannot execute %s: %m\n", a->command ? "/bin/sh" : a->argv[0]);
        _exit(127);
}

/* The lines that always stay whole, last: what was cut with the true sizes, what was replaced,
 * and "Exit code: ...". */
static int exec_footer(bool cut, bool replaced, const Capture *out, const Capture *err, const char *code,
                       char **ret) {
        _cleanup_free_ char *c = NULL;
        if (cut && asprintf(&c, "[output cut: stdout %" PRIu64 " bytes, stderr %" PRIu64 " bytes in all; the start "
                            "and the end are shown]\n", out->size, err->size) < 0)
                return -ENOMEM;
        return asprintf(ret, "%s%sExit code: %s", strempty(c), replaced ? AGENT_TOOL_REPLACED_NOTE "\n" : "",
                        code) < 0 ? -ENOMEM : 0;
}

/* stdout, "STDERR:" and stderr, then the footer; all in AGENT_TOOL_OUTPUT_MAX bytes. When both
 * streams do not fit, stdout gets two thirds unless one of them needs less. */
static int exec_result(const Capture *out, const Capture *err, const char *code, char **ret) {
        _cleanup_free_ char *ot = NULL, *et = NULL, *of = NULL, *ef = NULL, *footer = NULL;
        size_t ol = 0, el = 0;
        bool replaced = false;

        if (capture_text(out, &ot, &ol, &replaced) < 0 || capture_text(err, &et, &el, &replaced) < 0)
                return -ENOMEM;
        /* A stream larger than its head is always cut: what was read of it is longer than any budget. */
        bool cut = out->size > sizeof(out->head) || err->size > sizeof(err->head);
        for (;;) {
                free(footer);
                footer = NULL;
                if (exec_footer(cut, replaced, out, err, code, &footer) < 0)
                        return -ENOMEM;
                /* "\n" after stdout, "STDERR:\n", "\n" after stderr (a cut keeps the last byte). */
                size_t fixed = strlen(footer) + (ol > 0 && ot[ol - 1] != '\n') +
                        (el > 0 ? strlen("STDERR:\n") + (et[el - 1] != '\n') : 0);
                size_t budget = AGENT_TOOL_OUTPUT_MAX - fixed;
                if (!cut && ol + el > budget) {
                        cut = true; /* the footer grows: size it again */
                        continue;
                }
                size_t ob = ol, eb = el;
                if (ol + el > budget) {
                        if (ol <= budget * 2 / 3)
                                eb = budget - ol;
                        else if (el <= budget / 3)
                                ob = budget - el;
                        else
                                eb = budget / 3, ob = budget - eb;
                }
                if (capture_fit(out, ot, ol, ob, &of) < 0 || capture_fit(err, et, el, eb, &ef) < 0)
                        return -ENOMEM;
                break;
        }
        size_t ofl = strlen(of), efl = strlen(ef);
        if (asprintf(ret, "%s%s%s%s%s%s", of, ofl && of[ofl - 1] != '\n' ? "\n" : "", efl ? "STDERR:\n" : "", ef,
                     efl && ef[efl - 1] != '\n' ? "\n" : "", footer) < 0)
                return -ENOMEM;
        return 0;
}

int agent_tool_exec(const AgentToolContext *ctx, const AgentToolArgs *a, char **ret_output, bool *ret_is_error) {
        _cleanup_close_ int out_r = -EBADF, out_w = -EBADF, err_r = -EBADF, err_w = -EBADF;
        _cleanup_free_ Capture *out = calloc(1, sizeof(Capture)), *err = calloc(1, sizeof(Capture));
        int p[2], status = 0, r = 0;
        bool timed_out = false, exited = false;

        if (!out || !err)
                return -ENOMEM;
        uint64_t timeout = (uint64_t) (a->timeout_sec ?: AGENT_TOOL_EXEC_TIMEOUT) * USEC_PER_SEC;
        uint64_t deadline = con_now(CLOCK_MONOTONIC) + timeout;
        if (ctx->deadline_usec > 0 && ctx->deadline_usec < deadline)
                deadline = ctx->deadline_usec;

        if (pipe2(p, O_CLOEXEC) < 0)
                return tool_result(ret_output, (*ret_is_error = true), "exec: cannot create a pipe: %m");
        out_r = p[0], out_w = p[1];
        if (pipe2(p, O_CLOEXEC) < 0)
                return tool_result(ret_output, (*ret_is_error = true), "exec: cannot create a pipe: %m");
        err_r = p[0], err_w = p[1];

        pid_t pid = fork();
        if (pid < 0)
                return tool_result(ret_output, (*ret_is_error = true), "exec: cannot fork: %m");
        if (pid == 0)
                exec_child(ctx, a, out_w, err_w);
        (void) setpgid(pid, pid);
        out_w = safe_close(out_w);
        err_w = safe_close(err_w);

        /* Read until both pipes close or the command exits (a background child may keep the pipes
         * open: the command's end is its main process), or the deadline. */
        while (out_r >= 0 || err_r >= 0) {
                if (!exited) {
                        pid_t w = waitpid(pid, &status, WNOHANG);
                        if (w == pid)
                                exited = true;
                }
                uint64_t now = con_now(CLOCK_MONOTONIC);
                if (now >= deadline) {
                        timed_out = !exited;
                        break;
                }
                struct pollfd pfd[2] = { { .fd = out_r, .events = POLLIN }, { .fd = err_r, .events = POLLIN } };
                uint64_t wait_ms = (deadline - now + 999) / 1000;
                int n = poll(pfd, 2, exited ? 0 : (int) (wait_ms < 100 ? wait_ms : 100));
                if (n < 0 && errno != EINTR) {
                        r = -errno;
                        break;
                }
                if (n <= 0) {
                        if (exited)
                                break;  /* exited and nothing more to read now */
                        continue;
                }
                if (pfd[0].revents && capture_read(out_r, out) != 0)
                        out_r = safe_close(out_r);
                if (pfd[1].revents && capture_read(err_r, err) != 0)
                        err_r = safe_close(err_r);
        }
        /* Both pipes closed before the main process was reaped: it closes its output on its way
         * out (coreutils does, in an atexit handler), so let it finish before killing what is
         * left of its group, or a clean exit is reported as "killed by signal 9". */
        while (!exited && r == 0 && !timed_out) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid) {
                        exited = true;
                        break;
                }
                if (con_now(CLOCK_MONOTONIC) >= deadline) {
                        timed_out = true;
                        break;
                }
                (void) usleep(1000);
        }
        (void) kill(-pid, SIGKILL);
        if (!exited) {
                if (waitpid(pid, &status, 0) == pid)
                        exited = true;
        }

        char code[64];
        if (timed_out)
                (void) snprintf(code, sizeof(code), "killed after the timeout of %us",
                                (unsigned) ((timeout + USEC_PER_SEC - 1) / USEC_PER_SEC));
        else if (WIFEXITED(status))
                (void) snprintf(code, sizeof(code), "%d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
                (void) snprintf(code, sizeof(code), "killed by signal %d", WTERMSIG(status));
        else
                (void) snprintf(code, sizeof(code), "unknown");

        *ret_is_error = timed_out || r < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
        return exec_result(out, err, code, ret_output);
}

/* ---- files ---- */

static int mkdir_parents(const char *path) {
        _cleanup_free_ char *p = strdup(path);
        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = 0;
                if (mkdir(p, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        return 0;
}

static int read_whole(const char *path, size_t max, char **ret, size_t *ret_len, size_t *ret_total) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        struct stat st;
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        _cleanup_free_ char *b = malloc(max + 1);
        if (!b)
                return -ENOMEM;
        ssize_t n = con_read_full(fd, b, max);
        if (n < 0)
                return (int) n;
        size_t l = (size_t) n;
        b[l] = 0;
        *ret_total = (size_t) st.st_size > l ? (size_t) st.st_size : l;
        *ret_len = l;
        *ret = TAKE_PTR(b);
        return 0;
}

static int tool_read_file(const AgentToolArgs *a, char **ret, bool *is_error) {
        _cleanup_free_ char *b = NULL;
        size_t l = 0, total = 0;
        int r = read_whole(a->path, READ_FILE_MAX, &b, &l, &total);
        if (r < 0)
                return tool_result(ret, (*is_error = true), "read_file: cannot read %s: %s", a->path,
                                   r == -EBADFD ? "not a regular file" : strerror(-r));
        if (memchr(b, 0, l))
                return tool_result(ret, (*is_error = true), "read_file: %s is a binary file (it contains NUL bytes)",
                                   a->path);
        *is_error = false;
        if (total > l) {
                /* Do not show the start of a character cut by the limit as an invalid byte. */
                l = con_utf8_complete_len(b, l);
                b[l] = 0;
                r = tool_result(ret, false, "%s\n... (file is %zu bytes; showing the first %zu)", b, total, l);
        } else {
                *ret = TAKE_PTR(b);
                r = 0;
        }
        /* A Latin-1 or otherwise non-UTF-8 file: shown with U+FFFD, and said so. */
        return r < 0 ? r : tool_output_text(ret);
}

static int tool_write_file(const AgentToolArgs *a, bool append, char **ret, bool *is_error) {
        const char *tool = append ? "append_file" : "write_file";
        int r = mkdir_parents(a->path);
        if (r < 0)
                return tool_result(ret, (*is_error = true), "%s: cannot create the directories of %s: %s", tool,
                                   a->path, strerror(-r));
        _cleanup_close_ int fd = open(a->path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | (append ? O_APPEND : O_TRUNC),
                                      0644);
        if (fd < 0)
                return tool_result(ret, (*is_error = true), "%s: cannot open %s: %m", tool, a->path);
        size_t l = strlen(a->content);
        r = con_write_all(fd, a->content, l);
        if (r < 0)
                return tool_result(ret, (*is_error = true), "%s: cannot write %s: %s", tool, a->path, strerror(-r));
        *is_error = false;
        return tool_result(ret, false, "%s %zu bytes to %s", append ? "Appended" : "Wrote", l, a->path);
}

static size_t count_occurrences(const char *hay, const char *needle, const char **ret_first) {
        size_t n = 0, nl = strlen(needle);
        *ret_first = NULL;
        for (const char *p = strstr(hay, needle); p; p = strstr(p + nl, needle)) {
                if (!*ret_first)
                        *ret_first = p;
                n++;
        }
        return n;
}

static int tool_edit_file(const AgentToolArgs *a, char **ret, bool *is_error) {
        _cleanup_free_ char *b = NULL;
        size_t l = 0, total = 0;
        const char *first;

        *is_error = true;
        if (isempty(a->old_text))
                return tool_result(ret, true, "edit_file: argument \"old_text\" must not be empty");
        int r = read_whole(a->path, EDIT_FILE_MAX, &b, &l, &total);
        if (r < 0)
                return tool_result(ret, true, "edit_file: cannot read %s: %s", a->path,
                                   r == -EBADFD ? "not a regular file" : strerror(-r));
        if (total > l)
                return tool_result(ret, true, "edit_file: %s is larger than %u bytes; use exec instead", a->path,
                                   EDIT_FILE_MAX);
        size_t n = count_occurrences(b, a->old_text, &first);
        if (n != 1)
                return tool_result(ret, true, "edit_file: old_text occurs %zu times in %s; it must occur exactly once "
                                   "(include more surrounding text)", n, a->path);
        size_t ol = strlen(a->old_text), nl = strlen(a->new_text), pre = (size_t) (first - b);
        _cleanup_free_ char *nb = malloc(l - ol + nl + 1);
        if (!nb)
                return -ENOMEM;
        memcpy(nb, b, pre);
        memcpy(nb + pre, a->new_text, nl);
        memcpy(nb + pre + nl, first + ol, l - pre - ol + 1);
        _cleanup_close_ int fd = open(a->path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return tool_result(ret, true, "edit_file: cannot write %s: %m", a->path);
        r = con_write_all(fd, nb, l - ol + nl);
        if (r < 0)
                return tool_result(ret, true, "edit_file: cannot write %s: %s", a->path, strerror(-r));
        *is_error = false;
        return tool_result(ret, false, "Edited %s: replaced one occurrence", a->path);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char * const *) a, *(char * const *) b);
}

static int tool_list_dir(const AgentToolArgs *a, char **ret, bool *is_error) {
        const char *path = a->path ?: ".";
        _cleanup_closedir_ DIR *d = opendir(path);
        _cleanup_strv_free_ char **lines = NULL;
        if (!d)
                return tool_result(ret, (*is_error = true), "list_dir: cannot open %s: %m", path);
        struct dirent *de;
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                struct stat st;
                bool dir = fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
                char *line = NULL;
                if (asprintf(&line, "%s %s", dir ? "DIR: " : "FILE:", de->d_name) < 0 || strv_consume(&lines, line) < 0)
                        return -ENOMEM;
        }
        *is_error = false;
        size_t n = strv_length(lines);
        if (n == 0)
                return tool_result(ret, false, "(%s is empty)", path);
        qsort(lines, n, sizeof(char *), cmp_str);
        *ret = strv_join(lines, "\n");
        if (!*ret)
                return -ENOMEM;
        return agent_tool_cap_output(ret, AGENT_TOOL_OUTPUT_MAX);
}

/* ---- agents over the bus ---- */

static int tool_list_agents(const AgentToolContext *ctx, char **ret, bool *is_error) {
        _cleanup_strv_free_ char **lines = NULL;
        *is_error = false;
        for (size_t i = 0; ctx->config && i < ctx->config->n_agents; i++) {
                const ConAgent *ag = &ctx->config->agents[i];
                _cleanup_free_ char *bus_name = NULL, *roles = NULL, *state = NULL;
                const char *running = "unknown";
                if (con_agent_bus_name(ag->name, &bus_name) < 0)
                        return -ENOMEM;
                if (ctx->bus) {
                        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                        int has = 0;
                        if (sd_bus_call_method(ctx->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                               "org.freedesktop.DBus", "NameHasOwner", &e, &m, "s", bus_name) >= 0 &&
                            sd_bus_message_read(m, "b", &has) >= 0)
                                running = has ? "running" : "not running (starts on demand)";
                        if (has)
                                (void) sd_bus_get_property_string(ctx->bus, bus_name, "/org/conspiracy/Agent",
                                                                  "org.conspiracy.Agent1", "State", NULL, &state);
                }
                roles = ag->roles ? strv_join(ag->roles, ",") : strdup("-");
                char *line = NULL;
                if (!roles || asprintf(&line, "%s%s: tier %s, mode %s, roles %s, %s%s%s", ag->name,
                                       ctx->agent && streq(ctx->agent->name, ag->name) ? " (you)" : "",
                                       *con_tier_to_string(ag->tier) ? con_tier_to_string(ag->tier) : "none",
                                       con_mode_to_string(ag->mode), roles, running, state ? ", state " : "",
                                       strempty(state)) < 0 ||
                    strv_consume(&lines, line) < 0)
                        return -ENOMEM;
        }
        if (!lines)
                return tool_result(ret, false, "no agents are configured");
        *ret = strv_join(lines, "\n");
        return *ret ? 0 : -ENOMEM;
}

typedef struct WaitState {
        const char *task_id;
        bool completed;
} WaitState;

static int on_task_completed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        WaitState *w = userdata;
        const char *id = NULL;
        if (w->task_id && sd_bus_message_read(m, "s", &id) >= 0 && id && streq(id, w->task_id))
                w->completed = true;
        return 0;
}

/* 1 with status/text when finished, 0 while queued or running, -errno with *ret_text on error. */
static int get_result(sd_bus *bus, const char *bus_name, const char *path, const char *interface, const char *id,
                      char **ret_status, char **ret_text) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const char *status, *text;
        int r = sd_bus_call_method(bus, bus_name, path, interface, "GetResult", &e, &m, "s", id);
        if (r < 0) {
                if (asprintf(ret_text, "%s: %s", strempty(e.name), e.message ?: strerror(-r)) < 0)
                        return -ENOMEM;
                return r;
        }
        r = sd_bus_message_read(m, "ss", &status, &text);
        if (r < 0)
                return r;
        if (!con_task_state_is_final(status))
                return 0;
        *ret_status = strdup(con_task_state_a2a(status));
        *ret_text = strdup(text);
        return *ret_status && *ret_text ? 1 : -ENOMEM;
}

static int append_entry(sd_bus_message *m, const char *key, const char *s, char **l) {
        if (!s && !l)
                return 0;
        int r = sd_bus_message_open_container(m, 'e', "sv");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", key);
        if (r >= 0 && s)
                r = sd_bus_message_append(m, "v", "s", s);
        else if (r >= 0) {
                r = sd_bus_message_open_container(m, 'v', "as");
                if (r >= 0)
                        r = sd_bus_message_append_strv(m, l);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        }
        return r < 0 ? r : sd_bus_message_close_container(m);
}

/* commission_agent: CommissionAgent on con-provisiond, as this session's user (polkit decides, and
 * the service limits the grants to the caller's own). */
static int tool_commission_agent(const AgentToolContext *ctx, const AgentToolArgs *a, char **ret, bool *is_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_strv_free_ char **changes = NULL;
        int r;

        *is_error = true;
        if (!ctx->bus)
                return tool_result(ret, true, "commission_agent: this session has no connection to the system bus");
        uint64_t timeout = AGENT_TOOL_COMMISSION_USEC;
        if (ctx->deadline_usec > 0) {
                uint64_t now = con_now(CLOCK_MONOTONIC);
                if (now >= ctx->deadline_usec)
                        return tool_result(ret, true, "commission_agent: the task's time is up");
                if (ctx->deadline_usec - now < timeout)
                        timeout = ctx->deadline_usec - now;
        }
        r = sd_bus_message_new_method_call(ctx->bus, &m, CON_PROVISIONER_BUS_NAME, CON_PROVISIONER_PATH,
                                           CON_PROVISIONER_INTERFACE, "CommissionAgent");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", a->agent);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = append_entry(m, "tier", a->tier, NULL);
        if (r >= 0)
                r = append_entry(m, "mode", a->mode, NULL);
        if (r >= 0)
                r = append_entry(m, "instructions", a->instructions, NULL);
        if (r >= 0)
                r = append_entry(m, "model", a->model, NULL);
        if (r >= 0)
                r = append_entry(m, "roles", NULL, a->roles);
        if (r >= 0)
                r = append_entry(m, "may_task", NULL, a->may_task);
        if (r >= 0)
                r = append_entry(m, "tasked_by", NULL, a->tasked_by);
        if (r >= 0)
                r = append_entry(m, "network", NULL, a->network);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return r == -ENOMEM ? r : tool_result(ret, true, "commission_agent: cannot build the call: %s", strerror(-r));
        r = sd_bus_call(ctx->bus, m, timeout, &e, &reply);
        if (r < 0)
                return tool_result(ret, true, "commission_agent: refused (%s): %s", strempty(e.name),
                                   e.message ?: strerror(-r));
        r = sd_bus_message_read_strv(reply, &changes);
        if (r < 0)
                return tool_result(ret, true, "commission_agent: con-provisiond sent an unreadable reply");
        _cleanup_free_ char *list = changes ? strv_join(changes, "\n") : strdup("");
        if (!list)
                return -ENOMEM;
        *is_error = false;
        return tool_result(ret, false, "Commissioned agent %s (user a-%s). It can be tasked now (send_task, or a file "
                           "in /srv/con/agents/%s/inbox). Changes:\n%s", a->agent, a->agent, a->agent, list);
}

static int tool_send_task(const AgentToolContext *ctx, const AgentToolArgs *a, char **ret, bool *is_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_free_ char *bus_name = NULL, *status = NULL, *text = NULL, *id = NULL;
        const char *tid;
        int r;

        /* AGENT@HOST: through this host's mesh gateway, which names this session's user (the
         * agent's own) as the sender, AGENT-USER@THIS-HOST (docs/MULTIHOST.md). */
        bool remote = strchr(a->agent, '@');
        const char *path = remote ? CON_MESH_PATH : CON_AGENT_PATH;
        const char *interface = remote ? CON_MESH_INTERFACE : CON_AGENT_INTERFACE;

        *is_error = true;
        if (!remote && ctx->config && !con_config_find_agent(ctx->config, a->agent)) {
                _cleanup_strv_free_ char **names = NULL;
                for (size_t i = 0; i < ctx->config->n_agents; i++)
                        if (strv_extend(&names, ctx->config->agents[i].name) < 0)
                                return -ENOMEM;
                _cleanup_free_ char *list = names ? strv_join(names, ", ") : strdup("none");
                return tool_result(ret, true, "send_task: there is no agent '%s' in this conspiracy; the agents are: %s",
                                   a->agent, strempty(list));
        }
        if (a->wait && ctx->agent && streq(a->agent, ctx->agent->name))
                return tool_result(ret, true, "send_task: you cannot wait for a task you send to yourself (it would "
                                   "only start after this one); send it with wait false");
        if (!ctx->bus)
                return tool_result(ret, true, "send_task: this session has no connection to the system bus");
        if (remote)
                bus_name = strdup(CON_MESH_BUS_NAME);
        else if (con_agent_bus_name(a->agent, &bus_name) < 0)
                return -ENOMEM;
        if (!bus_name)
                return -ENOMEM;

        WaitState w = {};
        if (a->wait) {
                /* Subscribe before submitting so the completion cannot be missed. No sender filter:
                 * the result itself is read from the agent's own bus name below. */
                r = sd_bus_match_signal(ctx->bus, &slot, NULL, path, interface, "TaskCompleted", on_task_completed, &w);
                if (r < 0)
                        return tool_result(ret, true, "send_task: cannot watch for the result: %s", strerror(-r));
        }
        if (remote && ctx->deadline_usec > 0) {
                /* The receiving agent cannot see this session: hand it this task's deadline (the
                 * session's own limit, which a local child inherits through the delegation record)
                 * as the remote task's, on the realtime clock the mesh carries. */
                uint64_t now = con_now(CLOCK_MONOTONIC);
                if (now >= ctx->deadline_usec)
                        return tool_result(ret, true, "send_task: the task's time is up");
                r = sd_bus_call_method(ctx->bus, bus_name, path, interface, "Submit", &e, &reply, "ssa{sv}", a->agent,
                                       a->text, 1, "deadline", "t",
                                       con_now(CLOCK_REALTIME) + (ctx->deadline_usec - now));
        } else if (remote)
                r = sd_bus_call_method(ctx->bus, bus_name, path, interface, "Submit", &e, &reply, "ssa{sv}", a->agent,
                                       a->text, 0);
        else
                r = sd_bus_call_method(ctx->bus, bus_name, path, interface, "Submit", &e, &reply, "s", a->text);
        if (remote && r < 0 && sd_bus_error_has_names(&e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                return tool_result(ret, true, "send_task: %s is on another host, and this host has no mesh gateway "
                                   "(no mesh: section in con.yaml, or the fabric is not up)", a->agent);
        if (r < 0)
                return tool_result(ret, true, "send_task: %s refused the task or is not reachable (%s): %s", a->agent,
                                   strempty(e.name), e.message ?: strerror(-r));
        r = sd_bus_message_read(reply, "s", &tid);
        if (r < 0 || !(id = strdup(tid)))
                return tool_result(ret, true, "send_task: %s sent an unreadable reply", a->agent);
        w.task_id = id;
        if (!a->wait) {
                *is_error = false;
                return tool_result(ret, false, "Sent task %s to %s; it runs on its own (not waiting for the result).",
                                   id, a->agent);
        }

        uint64_t wait = ctx->send_wait_usec ?: AGENT_TOOL_SEND_WAIT_USEC;
        uint64_t deadline = con_now(CLOCK_MONOTONIC) + wait, last_poll = 0;
        if (ctx->deadline_usec > 0 && ctx->deadline_usec < deadline)
                deadline = ctx->deadline_usec;
        for (;;) {
                uint64_t now = con_now(CLOCK_MONOTONIC);
                if (w.completed || now - last_poll >= 5 * USEC_PER_SEC) {
                        last_poll = now;
                        free(text);
                        text = NULL;
                        r = get_result(ctx->bus, bus_name, path, interface, id, &status, &text);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                return tool_result(ret, true, "send_task: task %s was accepted by %s, but its result "
                                                   "cannot be read: %s", id, a->agent, strempty(text));
                        if (r > 0)
                                break;
                        w.completed = false;
                }
                if (now >= deadline)
                        return tool_result(ret, true, "send_task: task %s sent to %s has no result after %u s; it is "
                                           "still queued or running (con task %s shows it later)", id, a->agent,
                                           (unsigned) (wait / USEC_PER_SEC), id);
                r = sd_bus_process(ctx->bus, NULL);
                if (r < 0)
                        return tool_result(ret, true, "send_task: lost the system bus while waiting: %s", strerror(-r));
                if (r > 0)
                        continue;
                uint64_t t = deadline - now;
                (void) sd_bus_wait(ctx->bus, t < USEC_PER_SEC ? t : USEC_PER_SEC);
        }
        *is_error = !streq(status, "completed");
        r = tool_result(ret, *is_error, "%s %s task %s (%s):\n%s", a->agent,
                        streq(status, "completed") ? "finished" : "did not finish", id, status, text);
        if (r < 0)
                return r;
        return agent_tool_cap_output(ret, AGENT_TOOL_OUTPUT_MAX);
}

int agent_tool_run(const AgentToolContext *ctx, const char *tool, const char *args_json, char **ret_output,
                   bool *ret_is_error) {
        _cleanup_(agent_tool_args_done) AgentToolArgs a = {};
        _cleanup_free_ char *err = NULL;
        int r;

        *ret_output = NULL;
        *ret_is_error = true;
        r = agent_tool_args_parse(tool, args_json, &a, &err);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                *ret_output = TAKE_PTR(err);
                return *ret_output ? 0 : -ENOMEM;
        }
        return agent_tool_dispatch(ctx, &a, ret_output, ret_is_error);
}

int agent_tool_dispatch(const AgentToolContext *ctx, const AgentToolArgs *args, char **ret_output,
                        bool *ret_is_error) {
        const AgentToolArgs a = *args;
        const char *tool = agent_tool_kind_to_string(a.kind);

        int r;

        *ret_output = NULL;
        *ret_is_error = true;
        switch (a.kind) {
        case AGENT_TOOL_EXEC:
                r = agent_tool_exec(ctx, &a, ret_output, ret_is_error);
                break;
        case AGENT_TOOL_READ_FILE:
                r = tool_read_file(&a, ret_output, ret_is_error);
                break;
        case AGENT_TOOL_WRITE_FILE:
                r = tool_write_file(&a, false, ret_output, ret_is_error);
                break;
        case AGENT_TOOL_APPEND_FILE:
                r = tool_write_file(&a, true, ret_output, ret_is_error);
                break;
        case AGENT_TOOL_EDIT_FILE:
                r = tool_edit_file(&a, ret_output, ret_is_error);
                break;
        case AGENT_TOOL_LIST_DIR:
                r = tool_list_dir(&a, ret_output, ret_is_error);
                break;
        case AGENT_TOOL_LIST_AGENTS:
                r = tool_list_agents(ctx, ret_output, ret_is_error);
                break;
        case AGENT_TOOL_SEND_TASK:
                r = tool_send_task(ctx, &a, ret_output, ret_is_error);
                break;
        case AGENT_TOOL_COMMISSION_AGENT:
                r = tool_commission_agent(ctx, &a, ret_output, ret_is_error);
                break;
        default:
                r = tool_result(ret_output, true, "unknown tool \"%s\"", strempty(tool));
        }
        if (r < 0)
                return r;
        /* Whatever a tool produced (file names, a path in an error), the model gets valid text. */
        return *ret_output ? tool_output_text(ret_output) : 0;
}
