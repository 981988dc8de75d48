/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error-detail.h"
#include "macro.h"
#include "names.h"

/* Health contracts as files: the YAML files in /srv/con/contracts (the original's schema plus
 * native check kinds), read with the one YAML reader (yaml-reader.h), so they follow con.yaml's
 * rules and messages. Used by the contract service and by the con client (docs/CONTRACTS.md).
 * Running the checks is contract-check.h (bus/provision); library code, never logs. */

#define CONTRACT_DIR_DEFAULT "/srv/con/contracts"
#define CONTRACT_STATE_DIR_DEFAULT "/srv/con/state"
#define CONTRACT_SCRIPT_TIMEOUT_DEFAULT_USEC (10 * USEC_PER_SEC)
#define CONTRACT_OUTPUT_MAX 4096        /* shell output kept for the audit record */
#define CONTRACT_FILE_MAX (256U * 1024U)
#define CONTRACT_FREQUENCY_MIN_USEC (1 * USEC_PER_SEC)
#define CONTRACT_CHECK_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

typedef enum ContractType {
        CONTRACT_DETECTIVE,
        CONTRACT_PREVENTIVE,
        _CONTRACT_TYPE_MAX,
        _CONTRACT_TYPE_INVALID = -EINVAL,
} ContractType;

typedef enum ContractAction {
        CONTRACT_ACTION_NONE,           /* on_fail absent: report only */
        CONTRACT_ACTION_ALERT,
        CONTRACT_ACTION_KILL_SESSION,
        CONTRACT_ACTION_QUARANTINE,
        CONTRACT_ACTION_HALT_AGENTS,
        CONTRACT_ACTION_HALT_WORKERS,
        _CONTRACT_ACTION_MAX,
        _CONTRACT_ACTION_INVALID = -EINVAL,
} ContractAction;

typedef enum CheckKind {
        CHECK_COMMAND,                  /* command: {run, test} through sh */
        CHECK_SCRIPT,                   /* script: {path, timeout} through sh */
        CHECK_DISK_FREE,                /* disk_free: {path, min_pct} */
        CHECK_MEMORY_AVAILABLE,         /* memory_available: {min_pct} */
        CHECK_LOAD_PER_CORE,            /* load_per_core: {max} */
        CHECK_SESSION_DURATION,         /* session_duration: {max} */
        CHECK_PATH,                     /* path: {path, owner, group, mode, acl, missing_ok} */
        CHECK_AGENTS_MD,                /* agents_md: {} */
        CHECK_AGENT_DIRS,               /* agent_dirs: {} */
        CHECK_AUDIT_CHAIN,              /* audit_chain: {dir} */
        CHECK_AUDIT_WRITABLE,           /* audit_writable: {dir} */
        CHECK_ENV_FILE,                 /* env_file: {path} */
        CHECK_DRIFT,                    /* drift: {paths}: what con bootstrap would change */
        CHECK_SKILLS,                   /* skills: {} */
        CHECK_POLICY_SYNC,              /* policy_sync: {}: con policy check */
        CHECK_NETWORK_DRIFT,            /* network_drift: {}: the network door's nftables table */
        _CHECK_KIND_MAX,
        _CHECK_KIND_INVALID = -EINVAL,
} CheckKind;

typedef struct ContractCheck {
        char *name;
        CheckKind kind;
        unsigned line;
        /* command / script */
        char *run, *test;               /* test NULL: exit_code_zero (pass iff run exits 0) */
        char *script;
        uint64_t timeout_usec;          /* shell checks; default 10 s */
        /* native parameters */
        char *path;                     /* disk_free, path, env_file, audit_* dir; NULL = default */
        double threshold;               /* min_pct / max factor; < 0 = from con.yaml */
        uint64_t max_usec;              /* session_duration; 0 = from con.yaml */
        char *owner, *group;            /* path: NULL = any */
        int mode;                       /* path: -1 = any */
        int acl;                        /* path: -1 any, 0 no extended entries ("none"), 1 extended required */
        bool missing_ok;
        char **paths;                   /* drift: path prefixes */
        /* on_fail */
        ContractAction action;
        char *escalate;                 /* agent name; NULL = sysadmin */
        char *message;
} ContractCheck;

typedef struct Contract {
        char *file;
        char *id;
        char *description;
        ContractType type;
        uint64_t frequency_usec;        /* 0 = contracts.system.healthcheck_interval */
        char *scope_agent;              /* NULL = scope system */
        ContractCheck *checks;
        size_t n_checks;
} Contract;

/* Parses one contract file. Returns 0, -EINVAL (err filled in) or -ENOMEM. */
int contract_parse(const char *text, size_t len, const char *file, Contract **ret, ConErrorDetail *err);
/* Reads and parses a file (no symlinks, at most CONTRACT_FILE_MAX). */
int contract_load_file(const char *path, Contract **ret, ConErrorDetail *err);
Contract *contract_free(Contract *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(Contract *, contract_free)

/* The *.yaml regular files of dir, sorted, as full paths. -ENOENT when dir is missing. */
int contract_dir_list(const char *dir, char ***ret);

/* A digest of what a load would read: the names and contents of the *.yaml files of dir (as
 * contract_dir_list() lists them) and of config_path (may be NULL). Two calls give the same digest
 * exactly when a load would see the same files, so a caller compares it with the digest taken just
 * before its last load to know whether that load is stale. Reads the files (each at most
 * CONTRACT_FILE_MAX counts; a file that cannot be read counts by its error), a few KiB usually. */
#define CONTRACT_FINGERPRINT_SIZE 32
int contract_dir_fingerprint(const char *dir, const char *config_path, uint8_t ret[CONTRACT_FINGERPRINT_SIZE]);

const char *contract_type_to_string(ContractType t);
const char *contract_action_to_string(ContractAction a);   /* "" for NONE */
ContractAction contract_action_from_string(const char *s);
const char *check_kind_to_string(CheckKind k);
/* "critical" (halt, quarantine), "high" (kill_session), "warning" (alert, none). */
const char *contract_action_severity(ContractAction a);
static inline bool check_kind_is_shell(CheckKind k) {
        return k == CHECK_COMMAND || k == CHECK_SCRIPT;
}

