/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

/* The a{sv} argument of org.conspiracy.Agent1.Deliver, read into a plain struct. Pure: no
 * policy (whether sender_uid is honoured is the caller's decision), no logging. */

typedef struct AgentDeliverArgs {
        char *text;             /* required */
        char *id;               /* NULL: make a new one */
        int priority;           /* CON_TASK_PRIORITY_DEFAULT when absent */
        char *reply_to;         /* a valid agent name or NULL */
        uint64_t deadline_usec; /* 0: none */
        bool has_sender_uid;
        uint32_t sender_uid;
        char *conversation;     /* a valid conversation id (con_conversation_id_valid) or NULL */
        char *origin;           /* USER@HOST: the sender on another host, given by the mesh gateway
                                 * (con_remote_sender_valid), or NULL */
} AgentDeliverArgs;

void agent_deliver_args_done(AgentDeliverArgs *a);

/* Reads the a{sv} at the current position of m. On a bad argument returns -EINVAL with a
 * org.freedesktop.DBus.Error.InvalidArgs message in error naming the key, the type given and
 * what is allowed. Other negative errnos come from reading the message. */
int agent_deliver_parse(sd_bus_message *m, AgentDeliverArgs *ret, sd_bus_error *error);
