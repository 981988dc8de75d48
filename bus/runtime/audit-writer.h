/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "audit.h"

/* A service's writer of the audit log (audit.h): records are appended at once and made durable
 * together by a flush 200 ms after the first unflushed one (and when the writer is freed), so a
 * burst costs one fdatasync, not one per record. Several services write the same log; audit.h
 * keeps the chain linear between them. A crash loses at most the unflushed records.
 *
 * Library code: no logging. The caller logs failures; con_audit_writer_append() says whether a
 * failure is the first since the last success, so a broken log is reported once, not per record. */

#define CON_AUDIT_FLUSH_USEC (200ULL * 1000ULL)

typedef struct ConAuditWriter ConAuditWriter;

/* Opens DIR/audit.jsonl (dir NULL: CON_AUDIT_DIR_DEFAULT) and attaches the flush timer to e.
 * Returns 0 or the negative errno of con_audit_open() (-EBADMSG: the log ends with a damaged
 * record), or of sd-event. */
int con_audit_writer_new(sd_event *e, const char *dir, ConAuditWriter **ret);
ConAuditWriter *con_audit_writer_free(ConAuditWriter *w); /* flushes first */
static inline void con_audit_writer_freep(ConAuditWriter **w) {
        con_audit_writer_free(*w);
}

/* Appends one record (con_audit_append(); fields borrowed, may be NULL) and arms the flush.
 * Returns 0 or a negative errno; then *ret_first_failure (may be NULL) is true when the previous
 * append had succeeded, i.e. when this failure is news. */
int con_audit_writer_append(ConAuditWriter *w, const char *service, const char *event, const cJSON *fields,
                            bool *ret_first_failure);
/* The same for n records at once (con_audit_append_many(): one lock, one write). */
int con_audit_writer_append_many(ConAuditWriter *w, const ConAuditRecord *recs, size_t n, bool *ret_first_failure);
/* Makes every appended record durable now. Returns 0 or a negative errno. */
int con_audit_writer_flush(ConAuditWriter *w);

/* {"task_id": ..., "agent": ..., "sender": ...} with the members that are not NULL; NULL when out
 * of memory. The usual fields of a task event. */
cJSON *con_audit_task_fields(const char *task_id, const char *agent, const char *sender);
