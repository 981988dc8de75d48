/* SPDX-License-Identifier: MIT */
/* `con audit verify` reads DIR/audit.jsonl and DIR/audit.head, files that anyone with write access
 * to the directory may have made: the verifier and the appender's tail reader must survive any
 * bytes, and agree. Input: one flags byte, then the log; "\n#head\n" starts the content of
 * audit.head (its newline ends the log, if any; without it there is no audit.head, or with flag 2
 * a correct one). Flag 1 rechains: every line ending in '}' gets its correct ,"hash":"..." suffix,
 * and "prev":"=" becomes the previous hash (as does "hash":"=" in the head), so that the fuzzer
 * gets past the hashes.
 * Checks: every verdict is 0 or -EBADMSG with a reason; the report counts what it read; a log
 * that verifies can be opened and appended to and still verifies, one record longer. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "fuzz-util.h"
#include "macro.h"
#include "sha256.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GENESIS "0000000000000000000000000000000000000000000000000000000000000000"
#define HEAD_SEP "\n#head\n"

typedef struct Buf {
        char *p;
        size_t n, cap;
} Buf;

static void buf_add(Buf *b, const void *d, size_t n) {
        if (b->n + n + 1 > b->cap) {
                b->cap = (b->n + n + 1) * 2;
                b->p = realloc(b->p, b->cap);
                if (!b->p)
                        abort();
        }
        memcpy(b->p + b->n, d, n);
        b->n += n;
        b->p[b->n] = 0;
}

/* Appends s[0..n) with every occurrence of token replaced by repl. */
static void buf_add_subst(Buf *b, const char *s, size_t n, const char *token, const char *repl) {
        size_t tl = strlen(token);
        while (n > 0) {
                const char *t = memmem(s, n, token, tl);
                if (!t) {
                        buf_add(b, s, n);
                        return;
                }
                buf_add(b, s, (size_t) (t - s));
                buf_add(b, repl, strlen(repl));
                n -= (size_t) (t - s) + tl;
                s = t + tl;
        }
}

/* Rewrites the lines of log: a line ending in '}' gets its hash suffix. Returns the number of
 * lines rechained; ret_last gets the last hash. */
static uint64_t rechain(const char *log, size_t len, Buf *out, char ret_last[CON_SHA256_HEX_SIZE]) {
        char prev[CON_SHA256_HEX_SIZE] = GENESIS;
        uint64_t n = 0;

        while (len > 0) {
                const char *nl = memchr(log, '\n', len);
                size_t l = nl ? (size_t) (nl - log) : len;
                if (l > 0 && log[l - 1] == '}') {
                        Buf rec = {};
                        buf_add_subst(&rec, log, l, "\"prev\":\"=\"", "\"prev\":\"" GENESIS "\"");
                        /* the substitution above has the right length; now put the real prev in */
                        for (char *p = rec.p; (p = strstr(p, "\"prev\":\"" GENESIS "\"")); p += 8 + 64)
                                memcpy(p + 8, prev, 64);
                        char hash[CON_SHA256_HEX_SIZE];
                        if (con_sha256_hex(rec.p, rec.n, hash) < 0)
                                abort();
                        buf_add(out, rec.p, rec.n - 1);
                        buf_add(out, ",\"hash\":\"", 9);
                        buf_add(out, hash, 64);
                        buf_add(out, "\"}", 2);
                        memcpy(prev, hash, sizeof(prev));
                        free(rec.p);
                        n++;
                } else
                        buf_add(out, log, l);
                if (nl)
                        buf_add(out, "\n", 1);
                len -= nl ? l + 1 : l;
                log += nl ? l + 1 : l;
        }
        memcpy(ret_last, prev, CON_SHA256_HEX_SIZE);
        return n;
}

static void check_report(int r, const ConAuditVerify *v) {
        if (r == -ENOMEM)
                return;
        if (r != 0 && r != -EBADMSG)
                abort();
        if ((r == 0) != isempty(v->reason))
                abort(); /* a broken chain says why, an intact one says nothing */
        if (v->records != v->last_seq)
                abort(); /* seq counts from 1 without gaps */
        if (r == 0 && v->head_seq > v->last_seq)
                abort();
        if (r < 0 && v->bad_line > v->records + 1)
                abort(); /* the first problem comes right after the good records, or is the head's */
        if (!memchr(v->reason, 0, sizeof(v->reason)))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1 || size > 256 * 1024)
                return 0;
        uint8_t flags = data[0];
        const char *in = (const char *) data + 1;
        size_t len = size - 1;

        const char *sep = memmem(in, len, HEAD_SEP, strlen(HEAD_SEP));
        /* the separator's newline ends the log, unless the log is empty */
        size_t log_len = sep ? (size_t) (sep - in) + (sep > in) : len;
        const char *head = sep ? sep + strlen(HEAD_SEP) : NULL;
        size_t head_len = sep ? len - (size_t) (head - in) : 0;

        Buf log = {}, hd = {};
        char last[CON_SHA256_HEX_SIZE] = GENESIS;
        uint64_t n = 0;
        if (flags & 1)
                n = rechain(in, log_len, &log, last);
        else
                buf_add(&log, in, log_len);
        if (head)
                buf_add_subst(&hd, head, head_len, "\"hash\":\"=\"", "\"hash\":\"" GENESIS "\"");
        if (head && hd.p && (flags & 1))
                for (char *p = hd.p; (p = strstr(p, "\"hash\":\"" GENESIS "\"")); p += 8 + 64)
                        memcpy(p + 8, last, 64);
        if (!head && (flags & 2)) {
                char h[128];
                int k = snprintf(h, sizeof(h), "{\"seq\":%" PRIu64 ",\"hash\":\"%s\"}", n, last);
                memset(h + k, ' ', sizeof(h) - 1 - (size_t) k);
                h[sizeof(h) - 1] = '\n';
                buf_add(&hd, h, sizeof(h));
        }

        fuzz_dir_rewrite(CON_AUDIT_LOG_NAME, log.p ?: "", log.n);
        fuzz_dir_rewrite(CON_AUDIT_HEAD_NAME, hd.p ?: (head ? "" : NULL), hd.n);
        free(log.p);
        free(hd.p);

        ConAuditVerify v;
        int r = con_audit_verify(fuzz_dir(), &v);
        check_report(r, &v);

        /* The appender continues the chain from the tail: whatever it accepts must stay a chain,
         * and a chain that verifies must be accepted. */
        _cleanup_(con_audit_closep) ConAudit *a = NULL;
        int q = con_audit_open(fuzz_dir(), &a);
        if (q == -ENOMEM)
                return 0;
        if (r == 0 && q < 0)
                abort();
        if (q < 0) {
                if (q != -EBADMSG)
                        abort();
                return 0;
        }
        con_audit_set_sync(a, false);
        q = con_audit_append(a, "fuzz", "fuzz.append", NULL);
        if (q == -ENOMEM)
                return 0;
        if (r == 0 && (q < 0 || con_audit_last_seq(a) != v.last_seq + 1))
                abort();
        a = con_audit_close(a);
        if (r == 0 && q >= 0) {
                ConAuditVerify w;
                int r2 = con_audit_verify(fuzz_dir(), &w);
                check_report(r2, &w);
                if (r2 != 0 || w.records != v.records + 1)
                        abort();
        }
        return 0;
}
