/* SPDX-License-Identifier: MIT */
#pragma once

#include <sys/types.h>

#include "config.h"
#include "contract.h"

/* Running a contract's checks: the native checks (in-process reads of the system, the drift and
 * policy checkers) and the child set-up of the shell checks. Used by the contract service and by
 * `con contracts`; never logs (docs/CONTRACTS.md). */

/* Where native checks look. NULL members mean the defaults (/srv/con, /home, ...). */
typedef struct CheckContext {
        const ConConfig *config;        /* thresholds and agents; may be NULL (defaults, no agents) */
        const char *srv_dir;
        const char *home_root;
        const char *env_path;
        const char *config_path;        /* for drift */
        char **quarantined;             /* drift ignores these agents' activation files */
} CheckContext;

/* Evaluates a native check. Returns 1 pass, 0 fail, negative errno when it could not be
 * evaluated (counted as a failure); *ret_message says what was found (never NULL on success). */
int contract_check_native(const Contract *c, const ContractCheck *ch, const CheckContext *ctx, char **ret_message);

/* The argv for a shell check ("/bin/sh", "-c", SCRIPT) or ("/bin/sh", PATH); the script path
 * is resolved against contracts_dir. */
int contract_shell_argv(const ContractCheck *ch, const char *contracts_dir, char ***ret);
/* Forks the child of a shell check: new session and process group, stdin /dev/null, stdout and
 * stderr to one pipe (*ret_fd, non-blocking, close-on-exec), cwd contracts_dir, environment
 * PATH only. Returns the pid. */
int contract_shell_spawn(const ContractCheck *ch, const char *contracts_dir, pid_t *ret_pid, int *ret_fd);


/* A native check off the caller's event loop: forks a worker (set up as a shell check's child,
 * cwd /) that runs contract_check_native() on its copy of the caller's memory, writes
 * "RESULT\nMESSAGE" to the pipe (*ret_fd) and exits 0. The message is cut, on a character
 * boundary, to CONTRACT_NATIVE_MESSAGE_MAX bytes. Returns the pid. */
#define CONTRACT_NATIVE_MESSAGE_MAX (CONTRACT_OUTPUT_MAX - 16)
int contract_native_spawn(const Contract *c, const ContractCheck *ch, const CheckContext *ctx, pid_t *ret_pid,
                          int *ret_fd);
/* Reads what a worker wrote: *ret_result as contract_check_native() returned it (1, 0 or a
 * negative errno), *ret_message its message. -EBADMSG when out is not that shape. */
int contract_native_parse(const char *out, size_t len, int *ret_result, char **ret_message);
