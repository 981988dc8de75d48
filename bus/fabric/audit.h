/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <cJSON.h>

#include "sha256.h"

/* The tamper-evident audit log: one append-only JSON Lines file, DIR/audit.jsonl, written only by
 * root-owned services (default DIR: /srv/con/logs/audit). One record per line:
 *
 *   {"seq":12,"time":"2026-11-29T11:30:45.123456Z","service":"router","event":"task.routed",
 *    ...caller fields...,"prev":"<hex>","hash":"<hex>"}
 *
 * - seq counts from 1 without gaps; time is UTC with microseconds.
 * - prev is the "hash" of the previous record (64 zeros for seq 1).
 * - hash is the hex SHA-256 of the line's bytes from '{' up to (not including) the
 *   ',"hash":"' suffix, followed by '}': i.e. of the record as written without its hash field.
 *   The verifier hashes the bytes as stored; it does not re-serialise JSON.
 *
 * So changing any byte of a record breaks its hash; recomputing that hash breaks the next
 * record's prev; deleting, inserting or reordering records breaks seq and prev. Removing
 * records from the end is caught by DIR/audit.head ({"seq":N,"hash":"<hex>"}: record N's hash,
 * or 64 zeros for N = 0; padded with spaces to 128 bytes), overwritten in place and fdatasync()ed under the log lock. Someone
 * who can rewrite both files (root) can rewrite history: export the head hash elsewhere
 * (journal, another host) to anchor it.
 *
 * Several processes may append at once: every append takes flock(LOCK_EX) on the log, reads
 * the last record (or trusts its cache when the file size is unchanged), appends its lines (one
 * record, or several with con_audit_append_many()) with one O_APPEND write and unlocks, so the
 * chain stays linear.
 *
 * Files are created 0640 (the directory 0750 when this library creates it), owned by the
 * caller (root for the services).
 *
 * Never put task text, prompts, results or secrets into the fields: they are the caller's
 * responsibility and an audit log is read by operators and kept for years. Record ids,
 * agents, sizes, outcomes.
 *
 * Library code: no logging. */

#define CON_AUDIT_DIR_DEFAULT "/srv/con/logs/audit"
#define CON_AUDIT_LOG_NAME "audit.jsonl"
#define CON_AUDIT_HEAD_NAME "audit.head"
#define CON_AUDIT_LINE_MAX (64 * 1024)  /* a longer record is refused with -E2BIG */

typedef struct ConAudit ConAudit;

/* Opens (creating when missing) DIR/audit.jsonl and DIR/audit.head. dir NULL means
 * CON_AUDIT_DIR_DEFAULT; the directory itself is created (0750) when its parent exists.
 * -EBADMSG when the chain cannot be continued: the log ends with a partial or unreadable
 * record, or audit.head names a later record than the log's last (records were removed from
 * the end; appending would overwrite that evidence). Run con_audit_verify, keep the damaged
 * files for inspection and move them aside to start a new chain. */
int con_audit_open(const char *dir, ConAudit **ret);
ConAudit *con_audit_close(ConAudit *a);     /* flushes first (see con_audit_flush) */
static inline void con_audit_closep(ConAudit **a) {
        con_audit_close(*a);
}

/* Durability policy. sync true (default): every append fdatasync()s the log and rewrites the
 * head before returning. sync false: appends only write(); con_audit_flush() (call it from a
 * timer) and con_audit_close() fdatasync the log and rewrite the head once. A crash may then
 * lose the records since the last flush, and truncation of those is not detected. */
void con_audit_set_sync(ConAudit *a, bool sync);
int con_audit_flush(ConAudit *a);

/* Appends one record. service and event must pass con_identifier_valid() ("router",
 * "task.routed"). fields is borrowed: NULL or a JSON object whose keys are none of seq, time,
 * service, event, prev, hash, without duplicate keys, with valid UTF-8 strings (else -EINVAL).
 * Returns 0; -E2BIG when the record would exceed CON_AUDIT_LINE_MAX; -EBADMSG as for
 * con_audit_open (checked again whenever another process appended since); or another
 * negative errno. */
int con_audit_append(ConAudit *a, const char *service, const char *event, const cJSON *fields);
/* Appends n records as con_audit_append() would one after the other, but under one lock and with
 * one write (one syscall, not four, per record). All or none: when one is refused (-EINVAL,
 * -E2BIG), nothing is written. */
typedef struct ConAuditRecord {
        const char *service;
        const char *event;
        const cJSON *fields;
} ConAuditRecord;
int con_audit_append_many(ConAudit *a, const ConAuditRecord *recs, size_t n);
/* seq of the last record this handle appended, 0 before the first. */
uint64_t con_audit_last_seq(const ConAudit *a);

typedef struct ConAuditVerify {
        uint64_t records;               /* records read and found good */
        uint64_t last_seq;              /* seq of the last good record, 0 if none */
        char last_hash[CON_SHA256_HEX_SIZE];
        uint64_t head_seq;              /* seq in audit.head, 0 when absent */
        uint64_t bad_line;              /* 1-based line of the first problem, 0 if none */
        uint64_t bad_seq;               /* seq expected at that line */
        char reason[256];               /* what is wrong, empty if nothing */
} ConAuditVerify;

/* Verifies DIR/audit.jsonl and DIR/audit.head. Returns 0 when the chain is intact,
 * -EBADMSG when it is not (ret_report says where and why), -ENOENT when there is no log, or
 * another negative errno for I/O errors. ret_report may be NULL. Takes a shared lock, so it
 * may run while services append. */
int con_audit_verify(const char *dir, ConAuditVerify *ret_report);
