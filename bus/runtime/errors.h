/* SPDX-License-Identifier: MIT */
#pragma once

#include <systemd/sd-bus.h>

/* The one table of ConspiracyOS bus errors. Every service returns failures as these error
 * replies (or a standard org.freedesktop.DBus.Error.*), and every client maps them back to an
 * errno with con_bus_errors_register(). The names are part of the API: never reuse one. */

#define CON_ERROR_INVALID_TASK      "org.conspiracy.Agent1.Error.InvalidTask"      /* EBADMSG */
#define CON_ERROR_TASK_TOO_LARGE    "org.conspiracy.Agent1.Error.TaskTooLarge"     /* EFBIG */
#define CON_ERROR_NO_SUCH_TASK      "org.conspiracy.Agent1.Error.NoSuchTask"       /* ENOENT */
#define CON_ERROR_DUPLICATE_TASK    "org.conspiracy.Agent1.Error.DuplicateTask"    /* EEXIST */
#define CON_ERROR_QUEUE_FULL        "org.conspiracy.Agent1.Error.QueueFull"        /* ENOSPC */
#define CON_ERROR_SENDER_QUOTA      "org.conspiracy.Agent1.Error.SenderQuotaExceeded" /* EUSERS */
#define CON_ERROR_NOT_CONFIGURED    "org.conspiracy.Agent1.Error.NotConfigured"    /* ENOMEDIUM */
#define CON_ERROR_HALTED            "org.conspiracy.Agent1.Error.Halted"           /* ESHUTDOWN */
#define CON_ERROR_QUARANTINED       "org.conspiracy.Agent1.Error.Quarantined"      /* EKEYREVOKED */
#define CON_ERROR_NOT_FINISHED      "org.conspiracy.Agent1.Error.NotFinished"      /* EINPROGRESS */
#define CON_ERROR_ACCESS_DENIED     "org.conspiracy.Agent1.Error.AccessDenied"     /* EACCES */
#define CON_ERROR_NO_SUCH_AGENT     "org.conspiracy.Router1.Error.NoSuchAgent"     /* ENXIO */
#define CON_ERROR_AGENT_UNAVAILABLE "org.conspiracy.Router1.Error.AgentUnavailable" /* EHOSTDOWN */
#define CON_ERROR_POLICY_TIMEOUT    "org.conspiracy.Agent1.Error.AuthorizationTimeout" /* ETIMEDOUT */
#define CON_ERROR_INVALID_CONFIG    "org.conspiracy.Contracts1.Error.InvalidConfig" /* ENOEXEC */
#define CON_ERROR_BUDGET_EXHAUSTED  "org.conspiracy.Models1.Error.BudgetExhausted" /* EDQUOT */
#define CON_ERROR_RATE_LIMITED      "org.conspiracy.Models1.Error.RateLimited"     /* EBUSY */
#define CON_ERROR_STORAGE_FAILED    "org.conspiracy.Agent1.Error.StorageFailed"    /* EIO */
#define CON_ERROR_DELEGATION_REFUSED "org.conspiracy.Agent1.Error.DelegationRefused" /* ELOOP */
#define CON_ERROR_INVALID_SPEC      "org.conspiracy.Provisioner1.Error.InvalidSpec"      /* EBADRQC */
#define CON_ERROR_AGENT_EXISTS      "org.conspiracy.Provisioner1.Error.AgentExists"      /* ENOTUNIQ */
#define CON_ERROR_NOT_COMMISSIONED  "org.conspiracy.Provisioner1.Error.NotCommissioned"  /* ENOPKG */
#define CON_ERROR_PROVISIONING_FAILED "org.conspiracy.Provisioner1.Error.ProvisioningFailed" /* EREMOTEIO */

typedef struct ConErrorInfo {
        const char *name;
        int errnum;       /* positive errno */
        const char *summary;
} ConErrorInfo;

/* The table, terminated by { NULL }. */
const ConErrorInfo *con_error_table(void);
/* Registers the table with sd-bus so sd_bus_error_get_errno() maps our names. Idempotent. */
int con_bus_errors_register(void);
/* Sets a named error with a formatted message; returns the negative errno of the name. */
int con_bus_error_setf(sd_bus_error *e, const char *name, const char *fmt, ...)
        __attribute__((__format__(printf, 3, 4)));
/* Our name for a positive errno, or NULL when the standard sd-bus mapping applies. */
const char *con_error_name_from_errno(int errnum);
