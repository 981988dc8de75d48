/* SPDX-License-Identifier: MIT */
#include <stdarg.h>

#include "errors.h"
#include "macro.h"

static const ConErrorInfo table[] = {
        { CON_ERROR_INVALID_TASK,      EBADMSG,     "The task is not valid UTF-8 text or its front matter is malformed" },
        { CON_ERROR_TASK_TOO_LARGE,    EFBIG,       "The task is larger than the configured size cap" },
        { CON_ERROR_NO_SUCH_TASK,      ENOENT,      "No task with that id is known to this agent" },
        { CON_ERROR_DUPLICATE_TASK,    EEXIST,      "Another sender already uses that task id; send again under another id" },
        { CON_ERROR_QUEUE_FULL,        ENOSPC,      "The agent's queue is full" },
        { CON_ERROR_SENDER_QUOTA,      EUSERS,      "This sender has as many unfinished tasks at the agent as "
                                                    "system.max_queued_per_sender allows" },
        { CON_ERROR_NOT_CONFIGURED,    ENOMEDIUM,   "The agent has no runtime configured for this kind of task" },
        { CON_ERROR_HALTED,            ESHUTDOWN,   "The fabric or this agent is halted" },
        { CON_ERROR_QUARANTINED,       EKEYREVOKED, "The agent is quarantined" },
        { CON_ERROR_NOT_FINISHED,      EINPROGRESS, "The task has not finished yet" },
        { CON_ERROR_ACCESS_DENIED,     EACCES,      "The policy does not allow this caller to do that" },
        { CON_ERROR_NO_SUCH_AGENT,     ENXIO,       "No agent of that name is configured" },
        { CON_ERROR_AGENT_UNAVAILABLE, EHOSTDOWN,   "The agent could not be reached" },
        { CON_ERROR_POLICY_TIMEOUT,    ETIMEDOUT,   "The authorization check did not answer in time" },
        { CON_ERROR_INVALID_CONFIG,    ENOEXEC,     "A configuration or contract file is invalid" },
        { CON_ERROR_BUDGET_EXHAUSTED,  EDQUOT,      "A model budget of this agent is used up" },
        { CON_ERROR_RATE_LIMITED,      EBUSY,       "The model gateway's rate limit queue is full or the provider keeps refusing" },
        { CON_ERROR_STORAGE_FAILED,    EIO,         "The agent could not write its queue journal (disk full or I/O error)" },
        { CON_ERROR_DELEGATION_REFUSED, ELOOP,      "An agent's task may not be delegated there: the hop limit, a cycle "
                                                    "back to an agent waiting in the chain, or the parent's deadline" },
        { CON_ERROR_INVALID_SPEC,      EBADRQC,     "The agent's name or specification is not valid (the message names the field)" },
        { CON_ERROR_AGENT_EXISTS,      ENOTUNIQ,    "An agent or user of that name already exists" },
        { CON_ERROR_NOT_COMMISSIONED,  ENOPKG,      "The agent was not commissioned at run time (it is defined in con.yaml "
                                                    "or another drop-in)" },
        { CON_ERROR_PROVISIONING_FAILED, EREMOTEIO, "Provisioning failed and was rolled back (the message says which step)" },
        {}
};

const ConErrorInfo *con_error_table(void) {
        return table;
}

int con_bus_errors_register(void) {
        static sd_bus_error_map map[ELEMENTSOF(table)];
        static bool done;
        if (done)
                return 0;
        for (size_t i = 0; table[i].name; i++)
                map[i] = (sd_bus_error_map) SD_BUS_ERROR_MAP(table[i].name, table[i].errnum);
        map[ELEMENTSOF(table) - 1] = (sd_bus_error_map) SD_BUS_ERROR_MAP_END;
        int r = sd_bus_error_add_map(map);
        if (r < 0)
                return r;
        done = true;
        return 0;
}

const char *con_error_name_from_errno(int errnum) {
        for (size_t i = 0; table[i].name; i++)
                if (table[i].errnum == errnum)
                        return table[i].name;
        return NULL;
}

int con_bus_error_setf(sd_bus_error *e, const char *name, const char *fmt, ...) {
        va_list ap;
        int errnum = EIO;
        for (size_t i = 0; table[i].name; i++)
                if (streq(table[i].name, name))
                        errnum = table[i].errnum;
        va_start(ap, fmt);
        (void) sd_bus_error_setfv(e, name, fmt, ap);
        va_end(ap);
        return -errnum;
}
