/* SPDX-License-Identifier: MIT */
#include "agent-deliver.h"
#include "bus-util.h"
#include "policy-vocab.h"
#include "macro.h"
#include "names.h"
#include "task.h"

#define ALLOWED_KEYS "text (s), id (s), priority (y), reply_to (s), deadline (t), sender_uid (u), conversation (s), origin (s)"

void agent_deliver_args_done(AgentDeliverArgs *a) {
        free(a->text);
        free(a->id);
        free(a->reply_to);
        free(a->origin);
        free(a->conversation);
        *a = (AgentDeliverArgs) {};
}

static int want_type(sd_bus_message *m, const char *key, const char *want, sd_bus_error *error) {
        const char *contents = NULL;
        int r = sd_bus_message_peek_type(m, NULL, &contents);
        if (r < 0)
                return r;
        if (!streq_ptr(contents, want))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Key '%s' must be of type '%s', got '%s'", key, want, strempty(contents));
        return 0;
}

static int read_string(sd_bus_message *m, const char *key, char **dst, sd_bus_error *error) {
        const char *s;
        int r = want_type(m, key, "s", error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "v", "s", &s);
        if (r < 0)
                return r;
        char *c = strdup(s);
        if (!c)
                return -ENOMEM;
        free(*dst);
        *dst = c;
        return 0;
}

int agent_deliver_parse(sd_bus_message *m, AgentDeliverArgs *ret, sd_bus_error *error) {
        _cleanup_(agent_deliver_args_done) AgentDeliverArgs a = { .priority = CON_TASK_PRIORITY_DEFAULT };
        unsigned seen = 0;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (;;) {
                const char *key;
                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;

                static const char * const keys[] = { "text", "id", "priority", "reply_to", "deadline",
                                                     "sender_uid", "conversation", "origin" };
                unsigned bit = 0;
                for (unsigned i = 0; i < ELEMENTSOF(keys); i++)
                        if (streq(key, keys[i]))
                                bit = 1U << i;
                if (bit == 0)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Unknown key '%s' in the task; allowed keys are " ALLOWED_KEYS,
                                                 key);
                if (seen & bit)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Key '%s' is given twice", key);
                seen |= bit;

                if (streq(key, "text")) {
                        r = read_string(m, key, &a.text, error);
                } else if (streq(key, "id")) {
                        r = read_string(m, key, &a.id, error);
                        if (r >= 0 && !con_task_id_valid(a.id))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Key 'id': '%s' is not a valid task id; allowed are 1 to "
                                                         "128 characters A-Z a-z 0-9 . _ -, starting with a "
                                                         "letter or digit, without '..'", a.id);
                } else if (streq(key, "reply_to")) {
                        r = read_string(m, key, &a.reply_to, error);
                        if (r >= 0) {
                                ConNameProblem p = con_agent_name_check(a.reply_to);
                                if (p != CON_NAME_OK)
                                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                                 "Key 'reply_to': '%s' is not an agent name: %s",
                                                                 a.reply_to, con_name_problem_to_string(p));
                        }
                } else if (streq(key, "priority") || streq(key, "deadline")) {
                        r = con_bus_read_task_option(m, key, &a.priority, &a.deadline_usec, error);
                } else if (streq(key, "conversation")) {
                        r = read_string(m, key, &a.conversation, error);
                        if (r >= 0 && !con_conversation_id_valid(a.conversation))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Key 'conversation': '%s' is not a conversation id (the id "
                                                         "of the task that started it, or '"
                                                         CON_CONVERSATION_LATEST "')", a.conversation);
                } else if (streq(key, "origin")) {
                        r = read_string(m, key, &a.origin, error);
                        if (r >= 0 && !con_remote_sender_valid(a.origin))
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Key 'origin': '%s' is not USER@HOST (a Unix user name "
                                                         "and a mesh host name)", a.origin);
                } else {
                        r = want_type(m, key, "u", error);
                        if (r >= 0)
                                r = sd_bus_message_read(m, "v", "u", &a.sender_uid);
                        a.has_sender_uid = r >= 0;
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (!a.text)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Key 'text' (s) is required; allowed keys are " ALLOWED_KEYS);
        *ret = a;
        a = (AgentDeliverArgs) {};
        return 0;
}
