/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "agent-spec.h"
#include "error-detail.h"
#include "macro.h"
#include "names.h"
#include "network.h"
#include "policy-vocab.h"
#include "policy.h"
#include "strv.h"
#include "utf8.h"
#include "yaml-reader.h"

void con_agent_spec_done(ConAgentSpec *s) {
        free(s->name);
        free(s->tier);
        free(s->mode);
        free(s->cron);
        free(s->cron_task);
        strv_free(s->roles);
        free(s->instructions);
        strv_free(s->may_task);
        strv_free(s->tasked_by);
        free(s->runner);
        free(s->provider);
        free(s->model);
        strv_free(s->network);
        *s = (ConAgentSpec) {};
}

static int check_string(const char *key, const char *v, size_t max, char **ret_error) {
        if (!v)
                return 0;
        size_t n = strlen(v);
        if (n > max)
                return con_error_textf(ret_error, -EINVAL, "%s: %zu bytes; at most %zu are allowed", key, n, max);
        if (!con_utf8_valid(v, n))
                return con_error_textf(ret_error, -EINVAL, "%s: not valid UTF-8", key);
        return 0;
}

static int check_list(const char *key, char * const *l, char **ret_error) {
        size_t n = strv_length(l);
        int r;

        if (n > CON_AGENT_SPEC_LIST_MAX)
                return con_error_textf(ret_error, -EINVAL, "%s: %zu entries; at most %u are allowed", key, n,
                                       CON_AGENT_SPEC_LIST_MAX);
        STRV_FOREACH(e, l) {
                r = check_string(key, *e, CON_AGENT_SPEC_STRING_MAX, ret_error);
                if (r < 0)
                        return r;
                if (!**e)
                        return con_error_textf(ret_error, -EINVAL, "%s: an entry is empty", key);
        }
        return 0;
}

int con_agent_spec_check(const ConAgentSpec *s, char **ret_error) {
        int r;

        if (!s->name)
                return con_error_textf(ret_error, -EINVAL, "no agent name given");
        ConNameProblem p = con_agent_name_check(s->name);
        if (p != CON_NAME_OK) {
                _cleanup_free_ char *q = con_utf8_quote(s->name, strlen(s->name), 64);
                return con_error_textf(ret_error, -EINVAL, "%s is not a valid agent name: %s", q ?: "the name",
                                       con_name_problem_to_string(p));
        }
        const struct {
                const char *key, *value;
                size_t max;
        } strings[] = {
                { "tier", s->tier, 64 },
                { "mode", s->mode, 64 },
                { "cron", s->cron, 256 },
                { "cron_task", s->cron_task, CON_AGENT_SPEC_STRING_MAX },
                { "instructions", s->instructions, CON_AGENT_SPEC_INSTRUCTIONS_MAX },
                { "runner", s->runner, 64 },
                { "provider", s->provider, 64 },
                { "model", s->model, 256 },
        };
        for (size_t i = 0; i < ELEMENTSOF(strings); i++) {
                r = check_string(strings[i].key, strings[i].value, strings[i].max, ret_error);
                if (r < 0)
                        return r;
        }
        if (s->runner && streq(s->runner, "exec"))
                return con_error_textf(ret_error, -EINVAL, "runner: exec is not commissioned through the API (it runs "
                                       "a program of the caller's choice); add such an agent to con.yaml");
        const struct {
                const char *key;
                char * const *l;
        } lists[] = {
                { "roles", s->roles }, { "may_task", s->may_task }, { "tasked_by", s->tasked_by },
                { "network", s->network },
        };
        for (size_t i = 0; i < ELEMENTSOF(lists); i++) {
                r = check_list(lists[i].key, lists[i].l, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- the drop-in, written by libyaml's emitter ---- */

typedef struct Out {
        char *buf;
        size_t len, size;
} Out;

static int out_write(void *data, unsigned char *buffer, size_t size) {
        Out *o = data;
        if (o->len + size + 1 > o->size) {
                size_t n = (o->len + size + 1) * 2;
                char *b = realloc(o->buf, n);
                if (!b)
                        return 0;
                o->buf = b;
                o->size = n;
        }
        memcpy(o->buf + o->len, buffer, size);
        o->len += size;
        o->buf[o->len] = 0;
        return 1;
}

static int emit(yaml_emitter_t *e, yaml_event_t *ev) {
        return yaml_emitter_emit(e, ev) ? 0 : -EINVAL;
}

static int emit_scalar(yaml_emitter_t *e, const char *v, bool plain) {
        yaml_event_t ev;
        /* Caller's values are always quoted (double-quoted: every control character escaped);
         * only our own keys are plain. */
        if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *) v, (int) strlen(v), plain, !plain,
                                          plain ? YAML_PLAIN_SCALAR_STYLE : YAML_DOUBLE_QUOTED_SCALAR_STYLE))
                return -ENOMEM;
        return emit(e, &ev);
}

static int emit_mapping_start(yaml_emitter_t *e, bool flow) {
        yaml_event_t ev;
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, flow ? YAML_FLOW_MAPPING_STYLE : YAML_BLOCK_MAPPING_STYLE))
                return -ENOMEM;
        return emit(e, &ev);
}

static int emit_mapping_end(yaml_emitter_t *e) {
        yaml_event_t ev;
        if (!yaml_mapping_end_event_initialize(&ev))
                return -ENOMEM;
        return emit(e, &ev);
}

static int emit_sequence_start(yaml_emitter_t *e, bool flow) {
        yaml_event_t ev;
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, flow ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE))
                return -ENOMEM;
        return emit(e, &ev);
}

static int emit_sequence_end(yaml_emitter_t *e) {
        yaml_event_t ev;
        if (!yaml_sequence_end_event_initialize(&ev))
                return -ENOMEM;
        return emit(e, &ev);
}

static int emit_pair(yaml_emitter_t *e, const char *key, const char *v) {
        if (!v)
                return 0;
        int r = emit_scalar(e, key, true);
        return r < 0 ? r : emit_scalar(e, v, false);
}

static int emit_list(yaml_emitter_t *e, const char *key, char * const *l) {
        int r;
        if (key) {
                r = emit_scalar(e, key, true);
                if (r < 0)
                        return r;
        }
        r = emit_sequence_start(e, true);
        STRV_FOREACH(i, l)
                if (r >= 0)
                        r = emit_scalar(e, *i, false);
        return r < 0 ? r : emit_sequence_end(e);
}

static int emit_grant(yaml_emitter_t *e, const char *who, const char *to) {
        int r = emit_mapping_start(e, true);
        if (r >= 0)
                r = emit_pair(e, "who", who);
        if (r >= 0)
                r = emit_list(e, "may", STRV_MAKE("task"));
        if (r >= 0)
                r = emit_list(e, "to", STRV_MAKE((char *) to));
        return r < 0 ? r : emit_mapping_end(e);
}

static int emit_spec(yaml_emitter_t *e, const ConAgentSpec *s) {
        yaml_event_t ev;
        int r;

        if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || emit(e, &ev) < 0)
                return -EINVAL;
        if (!yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) || emit(e, &ev) < 0)
                return -EINVAL;
        r = emit_mapping_start(e, false);
        if (r >= 0)
                r = emit_scalar(e, "agents", true);
        if (r >= 0)
                r = emit_sequence_start(e, false);
        if (r >= 0)
                r = emit_mapping_start(e, false);
        if (r >= 0)
                r = emit_pair(e, "name", s->name);
        if (r >= 0)
                r = emit_pair(e, "tier", s->tier);
        if (r >= 0)
                r = emit_pair(e, "mode", s->mode);
        if (r >= 0)
                r = emit_pair(e, "cron", s->cron);
        if (r >= 0)
                r = emit_pair(e, "cron_task", s->cron_task);
        if (r >= 0 && s->roles)
                r = emit_list(e, "roles", s->roles);
        if (r >= 0)
                r = emit_pair(e, "runner", s->runner);
        if (r >= 0)
                r = emit_pair(e, "provider", s->provider);
        if (r >= 0)
                r = emit_pair(e, "model", s->model);
        if (r >= 0 && s->network) {
                /* none and gateway are words; anything else is an allow-list. */
                if (strv_length(s->network) == 1 && (streq(s->network[0], "none") || streq(s->network[0], "gateway")))
                        r = emit_pair(e, "network", s->network[0]);
                else
                        r = emit_list(e, "network", s->network);
        }
        if (r >= 0)
                r = emit_pair(e, "instructions", s->instructions);
        if (r >= 0)
                r = emit_mapping_end(e);
        if (r >= 0)
                r = emit_sequence_end(e);
        if (r >= 0 && (s->may_task || s->tasked_by)) {
                r = emit_scalar(e, "policy", true);
                if (r >= 0)
                        r = emit_mapping_start(e, false);
                if (r >= 0)
                        r = emit_scalar(e, "grants", true);
                if (r >= 0)
                        r = emit_sequence_start(e, false);
                STRV_FOREACH(t, s->may_task)
                        if (r >= 0)
                                r = emit_grant(e, s->name, *t);
                STRV_FOREACH(w, s->tasked_by)
                        if (r >= 0)
                                r = emit_grant(e, *w, s->name);
                if (r >= 0)
                        r = emit_sequence_end(e);
                if (r >= 0)
                        r = emit_mapping_end(e);
        }
        if (r >= 0)
                r = emit_mapping_end(e);
        if (r < 0)
                return r;
        if (!yaml_document_end_event_initialize(&ev, 1) || emit(e, &ev) < 0)
                return -EINVAL;
        if (!yaml_stream_end_event_initialize(&ev) || emit(e, &ev) < 0)
                return -EINVAL;
        return yaml_emitter_flush(e) ? 0 : -EINVAL;
}

int con_agent_spec_to_yaml(const ConAgentSpec *s, char **ret) {
        yaml_emitter_t e;
        Out o = {};
        int r;

        if (!yaml_emitter_initialize(&e))
                return -ENOMEM;
        yaml_emitter_set_output(&e, out_write, &o);
        yaml_emitter_set_unicode(&e, 1);
        yaml_emitter_set_width(&e, -1);
        r = emit_spec(&e, s);
        if (r >= 0 && e.error == YAML_MEMORY_ERROR)
                r = -ENOMEM;
        yaml_emitter_delete(&e);
        if (r < 0 || !o.buf) {
                free(o.buf);
                return r < 0 ? r : -ENOMEM;
        }
        *ret = o.buf;
        return 0;
}

/* ---- what a caller may grant ---- */

/* Ranks: none < gateway < allow-list (each entry one the caller has too). */
static int network_within(const ConNetwork *want, const ConNetwork *have, char **ret_error) {
        if (want->mode == CON_NETWORK_NONE)
                return 0;
        if (want->mode == CON_NETWORK_GATEWAY) {
                if (have->mode == CON_NETWORK_GATEWAY || have->mode == CON_NETWORK_ALLOW)
                        return 0;
                return con_error_textf(ret_error, -EPERM, "network: gateway is wider than the caller's own (%s); "
                                       "give the new agent network none", con_network_mode_to_string(have->mode));
        }
        for (size_t j = 0; j < want->n_allow; j++) {
                _cleanup_free_ char *canon = con_net_allow_format(&want->allow[j]);
                bool found = false;
                if (!canon)
                        return -ENOMEM;
                for (size_t i = 0; have->mode == CON_NETWORK_ALLOW && i < have->n_allow && !found; i++) {
                        _cleanup_free_ char *h = con_net_allow_format(&have->allow[i]);
                        if (!h)
                                return -ENOMEM;
                        found = streq(h, canon);
                }
                if (!found)
                        return con_error_textf(ret_error, -EPERM, "network: '%s' is not in the caller's own allow-list; "
                                               "a caller may grant only network access it has", canon);
        }
        return 0;
}

int con_agent_spec_authorize(const ConAgentSpec *s, const ConConfig *config, const char *caller_user,
                             char * const *caller_groups, char **ret_error) {
        _cleanup_(con_policy_freep) ConPolicy *policy = NULL;
        _cleanup_free_ char *caller_agent = NULL;
        int r;

        if (streq(caller_user, "root"))
                return 0;
        r = con_policy_from_config(config, &policy);
        if (r < 0)
                return r;
        (void) con_agent_from_user(caller_user, &caller_agent);
        const ConAgent *self = caller_agent ? con_config_find_agent(config, caller_agent) : NULL;

        STRV_FOREACH(t, s->may_task) {
                if (streq(*t, "*"))
                        return con_error_textf(ret_error, -EPERM, "may_task: '*' (every agent) can only be granted by root");
                if (!con_policy_allows(policy, caller_user, caller_groups, CON_POLICY_TASK, *t))
                        return con_error_textf(ret_error, -EPERM, "may_task: %s may not task '%s' itself, so it cannot "
                                               "let the new agent do so", caller_user, *t);
        }
        STRV_FOREACH(w, s->tasked_by) {
                ConPrincipalKind kind;
                const char *pname;
                if (con_principal_parse(*w, &kind, &pname) < 0 || kind != CON_PRINCIPAL_AGENT)
                        return con_error_textf(ret_error, -EPERM, "tasked_by: '%s': only root may let users, groups or "
                                               "root task a new agent; name agents", *w);
                _cleanup_free_ char *user = NULL;
                r = con_agent_user(pname, &user);
                if (r < 0)
                        return r;
                STRV_FOREACH(t, s->may_task)
                        if (!con_policy_allows(policy, user, NULL, CON_POLICY_TASK, *t))
                                return con_error_textf(ret_error, -EPERM, "tasked_by: '%s' may not task '%s', which the "
                                                       "new agent may: it would reach further through the new agent",
                                                       pname, *t);
        }
        /* The new agent's network as resolved (its own setting, else its tier's or base's). */
        const ConAgent *created = con_config_find_agent(config, s->name);
        if (!created)
                return -ENOENT;
        const ConNetwork gateway = { .mode = CON_NETWORK_GATEWAY };
        return network_within(&created->rt.network, self ? &self->rt.network : &gateway, ret_error);
}
