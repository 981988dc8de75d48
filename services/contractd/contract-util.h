/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "contract.h"
#include "contract-check.h"

/* The contract service's own logic: the violation state machine, escalation task ids and the
 * quarantine's platform files. Pure; never logs (docs/CONTRACTS.md). */

/* Violation state per (contract, check): transitions, not ticks. */
typedef struct Violation {
        bool failing;
        uint64_t since_usec;            /* CLOCK_REALTIME of the transition to failing */
        bool escalated;                 /* one escalation task per violation */
} Violation;

typedef enum ViolationTransition {
        VIOLATION_NONE,
        VIOLATION_DETECTED,
        VIOLATION_CLEARED,
} ViolationTransition;

ViolationTransition violation_update(Violation *v, bool passed, uint64_t now_usec);
/* True exactly once per violation (and marks it escalated). */
bool violation_take_escalation(Violation *v);

/* A task id for the escalation of one violation: stable while it persists, so a repeated
 * Deliver is deduplicated by the agent too. "contract-<id>-<check>-<since>", other characters
 * mapped to '-'. */
int contract_escalation_id(const char *id, const char *check, uint64_t since_usec, char **ret);
/* The id to deliver an escalation under when another sender holds tid (task ids are scoped by
 * sender): "<tid>-<16 hex digits of random>", tid shortened so that it stays a valid id. */
int contract_escalation_retry_id(const char *tid, uint64_t random, char **ret);

/* The platform files of a quarantine: the bus policy denying the agents their names, and the
 * polkit rules denying them every org.conspiracy action. agents must be valid agent names;
 * NULL/empty gives NULL (remove the file). */
int contract_quarantine_bus_policy(char * const *agents, char **ret);
int contract_quarantine_polkit_rules(char * const *agents, char **ret);
