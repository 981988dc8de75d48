/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json-util.h"
#include "audit.h"
#include "fileio.h"
#include "macro.h"
#include "names.h"
#include "time-util.h"
#include "utf8.h"

#define HASH_KEY ",\"hash\":\""
#define HASH_KEY_LEN (sizeof(HASH_KEY) - 1)
/* ,"hash":"<64 hex>"} */
#define HASH_SUFFIX_LEN (HASH_KEY_LEN + 64 + 2)
#define HEAD_SIZE 128
#define GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

struct ConAudit {
        int dir_fd;
        int log_fd;
        int head_fd;
        bool sync;
        bool head_dirty;        /* appended since the head was last written */
        bool cache_valid;       /* cache_* describe the log's last record at size cache_end */
        off_t cache_end;
        uint64_t cache_seq;
        char cache_hash[CON_SHA256_HEX_SIZE];
        uint64_t last_seq;
};


static int flock_retry(int fd, int op) {
        while (flock(fd, op) < 0)
                if (errno != EINTR)
                        return negative_errno();
        return 0;
}

/* Splits a line (without its '\n') into the hashed body (line[0..body_len) + '}') and the stored
 * hash. Returns -EBADMSG when the line does not end in the hash suffix. */
static int record_split(const char *line, size_t len, size_t *ret_body_len, char ret_hash[CON_SHA256_HEX_SIZE]) {
        if (len < HASH_SUFFIX_LEN + 2 || line[0] != '{')
                return -EBADMSG;
        const char *suffix = line + len - HASH_SUFFIX_LEN;
        if (memcmp(suffix, HASH_KEY, HASH_KEY_LEN) != 0 || !con_sha256_hex_valid(suffix + HASH_KEY_LEN, 64) ||
            memcmp(suffix + HASH_KEY_LEN + 64, "\"}", 2) != 0)
                return -EBADMSG;
        memcpy(ret_hash, suffix + HASH_KEY_LEN, 64);
        ret_hash[64] = '\0';
        *ret_body_len = len - HASH_SUFFIX_LEN;
        return 0;
}

static int body_hash(const char *body, size_t len, char ret[CON_SHA256_HEX_SIZE]) {
        uint8_t d[CON_SHA256_DIGEST_SIZE];
        ConSha256 s;
        int r;

        (void) con_sha256_init(&s);     /* an init failure is reported by final */
        con_sha256_update(&s, body, len);
        con_sha256_update(&s, "}", 1);
        r = con_sha256_final(&s, d);
        if (r < 0)
                return r;
        con_sha256_to_hex(d, ret);
        return 0;
}

/* Parses the body of a record (plus the closing brace) as JSON. */
static cJSON *record_json(const char *body, size_t len) {
        _cleanup_free_ char *copy = malloc(len + 2);
        if (!copy)
                return NULL;
        memcpy(copy, body, len);
        copy[len] = '}';
        copy[len + 1] = '\0';
        return cJSON_ParseWithLength(copy, len + 1);
}

static bool json_seq(const cJSON *o, double min, uint64_t *ret) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "seq");
        if (!cJSON_IsNumber(s) || s->valuedouble < min || s->valuedouble > 9007199254740992.0 ||
            s->valuedouble != (double) (uint64_t) s->valuedouble)
                return false;
        *ret = (uint64_t) s->valuedouble;
        return true;
}

/* Reads the last record of the log (size bytes long) to continue the chain. */
static int read_tail(int fd, off_t size, uint64_t *ret_seq, char ret_hash[CON_SHA256_HEX_SIZE]) {
        size_t want = 4096;

        if (size == 0) {
                *ret_seq = 0;
                memcpy(ret_hash, GENESIS, CON_SHA256_HEX_SIZE);
                return 0;
        }

        for (;;) {
                size_t n = (uint64_t) size < want ? (size_t) size : want;
                _cleanup_free_ char *buf = malloc(n);
                size_t got = 0;

                if (!buf)
                        return -ENOMEM;
                while (got < n) {
                        ssize_t k = pread(fd, buf + got, n - got, size - (off_t) n + (off_t) got);
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                return negative_errno();
                        }
                        if (k == 0)
                                return -EIO;
                        got += (size_t) k;
                }
                if (buf[n - 1] != '\n')
                        return -EBADMSG; /* partial last record */

                const char *start = memrchr(buf, '\n', n - 1);
                if (!start && n < (uint64_t) size) {
                        if (want > CON_AUDIT_LINE_MAX)
                                return -EBADMSG;
                        want = CON_AUDIT_LINE_MAX + 1;
                        continue;
                }
                start = start ? start + 1 : buf;

                size_t len = (size_t) (buf + n - 1 - start), body_len;
                char hash[CON_SHA256_HEX_SIZE];
                if (record_split(start, len, &body_len, hash) < 0)
                        return -EBADMSG;
                _cleanup_(cJSON_Deletep) cJSON *o = record_json(start, body_len);
                if (!o || !json_seq(o, 1, ret_seq))
                        return -EBADMSG;
                memcpy(ret_hash, hash, CON_SHA256_HEX_SIZE);
                return 0;
        }
}

static int write_head(ConAudit *a, uint64_t seq, const char *hash) {
        char buf[HEAD_SIZE];
        int n;

        n = snprintf(buf, sizeof(buf), "{\"seq\":%" PRIu64 ",\"hash\":\"%s\"}", seq, hash);
        if (n < 0 || n >= HEAD_SIZE)
                return -EINVAL;
        /* Always the same 128 bytes at offset 0: the old content is fully overwritten. */
        memset(buf + n, ' ', HEAD_SIZE - 1 - (size_t) n);
        buf[HEAD_SIZE - 1] = '\n';

        for (size_t done = 0; done < HEAD_SIZE;) {
                ssize_t k = pwrite(a->head_fd, buf + done, HEAD_SIZE - done, (off_t) done);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                done += (size_t) k;
        }
        if (fdatasync(a->head_fd) < 0)
                return negative_errno();
        a->head_dirty = false;
        return 0;
}

static int open_file(int dir_fd, const char *name, int flags, bool *ret_created) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;

        fd = openat(dir_fd, name, flags | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0 && errno == ENOENT) {
                fd = openat(dir_fd, name, flags | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0640);
                if (fd < 0 && errno != EEXIST)
                        return negative_errno();
                if (fd >= 0) {
                        if (fchmod(fd, 0640) < 0) /* against the umask */
                                return negative_errno();
                        *ret_created = true;
                } else
                        fd = openat(dir_fd, name, flags | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        }
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        return TAKE_FD(fd);
}

static int current_tail(ConAudit *a, off_t *ret_size);
static int flush_locked(ConAudit *a);

int con_audit_open(const char *dir, ConAudit **ret) {
        _cleanup_(con_audit_closep) ConAudit *a = NULL;
        bool created = false, log_created = false;
        int r, q;

        if (!ret)
                return -EINVAL;
        if (!dir)
                dir = CON_AUDIT_DIR_DEFAULT;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->dir_fd = a->log_fd = a->head_fd = -EBADF;
        a->sync = true;

        if (mkdir(dir, 0750) < 0 && errno != EEXIST)
                return negative_errno();
        a->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (a->dir_fd < 0)
                return negative_errno();

        r = open_file(a->dir_fd, CON_AUDIT_LOG_NAME, O_RDWR | O_APPEND, &log_created);
        if (r < 0)
                return r;
        a->log_fd = r;
        r = open_file(a->dir_fd, CON_AUDIT_HEAD_NAME, O_RDWR, &created);
        if (r < 0)
                return r;
        a->head_fd = r;
        /* Check the tail against the head now rather than at the first append; a new head is
         * written at once, so that an empty or missing head is always damage. */
        r = flock_retry(a->log_fd, LOCK_EX);
        if (r < 0)
                return r;
        r = created ? flush_locked(a) : current_tail(a, &(off_t) { 0 });
        q = flock_retry(a->log_fd, LOCK_UN);
        if (r < 0 || q < 0)
                return r < 0 ? r : q;
        if ((created || log_created) && fsync(a->dir_fd) < 0)
                return negative_errno();

        *ret = TAKE_PTR(a);
        return 0;
}

void con_audit_set_sync(ConAudit *a, bool sync) {
        if (a)
                a->sync = sync;
}

uint64_t con_audit_last_seq(const ConAudit *a) {
        return a ? a->last_seq : 0;
}

/* The head must not be ahead of the log: otherwise records were removed from the end, and
 * appending would overwrite the head, the only evidence of that. */
static int check_head(ConAudit *a) {
        _cleanup_(cJSON_Deletep) cJSON *o = NULL;
        char buf[HEAD_SIZE];
        const cJSON *h;
        uint64_t seq;
        ssize_t n;

        do
                n = pread(a->head_fd, buf, sizeof(buf), 0);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return negative_errno();
        if (n == 0)
                return 0; /* crashed between creating and writing it */
        o = cJSON_ParseWithLength(buf, (size_t) n);
        h = cJSON_GetObjectItemCaseSensitive(o, "hash");
        if (!o || !json_seq(o, 0, &seq) || !cJSON_IsString(h))
                return -EBADMSG;
        if (seq > a->cache_seq || (seq == a->cache_seq && !streq(h->valuestring, a->cache_hash)))
                return -EBADMSG;
        return 0;
}

/* The log's current last record, from the cache when nobody appended since our last write. */
static int current_tail(ConAudit *a, off_t *ret_size) {
        struct stat st;
        int r;

        if (fstat(a->log_fd, &st) < 0)
                return negative_errno();
        if (!a->cache_valid || a->cache_end != st.st_size) {
                a->cache_valid = false;
                r = read_tail(a->log_fd, st.st_size, &a->cache_seq, a->cache_hash);
                if (r < 0)
                        return r;
                r = check_head(a);
                if (r < 0)
                        return r;
                a->cache_end = st.st_size;
                a->cache_valid = true;
        }
        *ret_size = st.st_size;
        return 0;
}

static int flush_locked(ConAudit *a) {
        off_t size;
        int r;

        if (fdatasync(a->log_fd) < 0)
                return negative_errno();
        r = current_tail(a, &size);
        if (r < 0)
                return r;
        return write_head(a, a->cache_seq, a->cache_hash);
}

static int audit_flush_force(ConAudit *a) {
        int r, q;

        r = flock_retry(a->log_fd, LOCK_EX);
        if (r < 0)
                return r;
        r = flush_locked(a);
        q = flock_retry(a->log_fd, LOCK_UN);
        return r < 0 ? r : q;
}

int con_audit_flush(ConAudit *a) {
        if (!a)
                return -EINVAL;
        if (!a->head_dirty)
                return 0;
        return audit_flush_force(a);
}

ConAudit *con_audit_close(ConAudit *a) {
        if (!a)
                return NULL;
        if (a->log_fd >= 0 && a->head_fd >= 0)
                (void) con_audit_flush(a);
        safe_close(a->head_fd);
        safe_close(a->log_fd);
        safe_close(a->dir_fd);
        free(a);
        return NULL;
}

static bool reserved_key(const char *k) {
        static const char * const reserved[] = { "seq", "time", "service", "event", "prev", "hash" };
        for (size_t i = 0; i < ELEMENTSOF(reserved); i++)
                if (streq(k, reserved[i]))
                        return true;
        return false;
}

/* The caller's fields, serialised, without the outer braces ("" for none). */
static int fields_inner(const cJSON *fields, char **ret, size_t *ret_len) {
        _cleanup_free_ char *s = NULL;
        size_t n;

        if (!fields) {
                *ret = NULL;
                *ret_len = 0;
                return 0;
        }
        if (!cJSON_IsObject(fields))
                return -EINVAL;
        for (const cJSON *c = fields->child; c; c = c->next) {
                if (!c->string || reserved_key(c->string))
                        return -EINVAL;
                for (const cJSON *d = c->next; d; d = d->next)
                        if (d->string && streq(c->string, d->string))
                                return -EINVAL;
        }
        s = cJSON_PrintUnformatted(fields);
        if (!s)
                return -ENOMEM;
        n = strlen(s);
        /* JSON Lines readers need valid UTF-8; cJSON passes strings through unchecked. */
        if (!con_utf8_valid(s, n))
                return -EINVAL;
        if (n < 2 || s[0] != '{' || s[n - 1] != '}')
                return -EINVAL;
        memmove(s, s + 1, n - 2);
        s[n - 2] = '\0';
        *ret_len = n - 2;
        *ret = TAKE_PTR(s);
        return 0;
}

/* Formats the record after (seq, prev) into line (CON_AUDIT_LINE_MAX + 1 bytes); its length and
 * hash come back. */
static int format_record(const char *service, const char *event, const char *inner, size_t inner_len, uint64_t seq,
                         const char *prev, char *line, size_t *ret_len, char ret_hash[CON_SHA256_HEX_SIZE]) {
        char now[CON_TIMESTAMP_MAX];
        size_t len = 0;
        int r, n;

        r = con_format_timestamp(con_now(CLOCK_REALTIME), now);
        if (r < 0)
                return r;
        n = snprintf(line, CON_AUDIT_LINE_MAX, "{\"seq\":%" PRIu64 ",\"time\":\"%s\",\"service\":\"%s\",\"event\":\"%s\"",
                     seq, now, service, event);
        if (n < 0 || (size_t) n >= CON_AUDIT_LINE_MAX)
                return -E2BIG;
        len = (size_t) n;
        if (inner_len > 0) {
                if (len + 1 + inner_len >= CON_AUDIT_LINE_MAX)
                        return -E2BIG;
                line[len++] = ',';
                memcpy(line + len, inner, inner_len);
                len += inner_len;
        }
        if (len + strlen(",\"prev\":\"\"") + 64 + HASH_SUFFIX_LEN + 1 > CON_AUDIT_LINE_MAX)
                return -E2BIG;
        len += (size_t) sprintf(line + len, ",\"prev\":\"%s\"", prev);
        r = body_hash(line, len, ret_hash);
        if (r < 0)
                return r;
        len += (size_t) sprintf(line + len, HASH_KEY "%s\"}\n", ret_hash);
        *ret_len = len;
        return 0;
}

/* Appends the n records (already checked: inner[i] of inner_len[i] bytes) with one write. */
static int append_locked(ConAudit *a, const ConAuditRecord *recs, char * const *inner, const size_t *inner_len,
                         size_t n) {
        _cleanup_free_ char *line = NULL, *buf = NULL;
        char hash[CON_SHA256_HEX_SIZE], prev[CON_SHA256_HEX_SIZE];
        size_t len = 0, alloc = 0;
        off_t size;
        int r;

        r = current_tail(a, &size);
        if (r < 0)
                return r;
        line = malloc(CON_AUDIT_LINE_MAX + 1);
        if (!line)
                return -ENOMEM;
        memcpy(prev, a->cache_hash, sizeof(prev));
        for (size_t i = 0; i < n; i++) {
                size_t l;
                r = format_record(recs[i].service, recs[i].event, inner[i], inner_len[i], a->cache_seq + 1 + i,
                                  prev, line, &l, hash);
                if (r < 0)
                        return r;
                if (n == 1) {
                        buf = TAKE_PTR(line);
                        len = l;
                        break;
                }
                if (alloc - len < l) {
                        size_t na = 2 * alloc > len + l + 4096 ? 2 * alloc : len + l + 4096;
                        char *b = realloc(buf, na);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        alloc = na;
                }
                memcpy(buf + len, line, l);
                len += l;
                memcpy(prev, hash, sizeof(prev));
        }

        r = con_write_all(a->log_fd, buf, len);
        if (r < 0) {
                /* Part of the lines may have landed (ENOSPC, EIO): cut them off again, under the
                 * lock we hold, or the log ends with a partial record and every later append and
                 * 'con audit verify' fail. If even that fails, make the next append re-read. */
                if (ftruncate(a->log_fd, size) < 0)
                        a->cache_valid = false;
                return r;
        }
        a->cache_seq += n;
        memcpy(a->cache_hash, hash, sizeof(hash));
        a->cache_end = size + (off_t) len;
        a->last_seq = a->cache_seq;
        a->head_dirty = true;

        if (a->sync) {
                if (fdatasync(a->log_fd) < 0)
                        return negative_errno();
                return write_head(a, a->cache_seq, a->cache_hash);
        }
        return 0;
}

int con_audit_append_many(ConAudit *a, const ConAuditRecord *recs, size_t n) {
        _cleanup_free_ char **inner_many = NULL;
        _cleanup_free_ size_t *inner_len_many = NULL;
        /* One record (con_audit_append(), the common case) needs no allocation for these. */
        char *inner_one = NULL, **inner = &inner_one;
        size_t inner_len_one = 0, *inner_len = &inner_len_one;
        int r, q;

        if (!a || (!recs && n > 0))
                return -EINVAL;
        if (n == 0)
                return 0;
        if (n > 1) {
                inner = inner_many = calloc(n, sizeof(char *));
                inner_len = inner_len_many = calloc(n, sizeof(size_t));
                if (!inner || !inner_len)
                        return -ENOMEM;
        }
        r = 0;
        for (size_t i = 0; i < n && r >= 0; i++) {
                if (!con_identifier_valid(recs[i].service) || !con_identifier_valid(recs[i].event))
                        r = -EINVAL;
                else
                        r = fields_inner(recs[i].fields, &inner[i], &inner_len[i]);
                if (r >= 0 && inner_len[i] >= CON_AUDIT_LINE_MAX)
                        r = -E2BIG;
        }
        if (r >= 0) {
                r = flock_retry(a->log_fd, LOCK_EX);
                if (r >= 0) {
                        r = append_locked(a, recs, inner, inner_len, n);
                        q = flock_retry(a->log_fd, LOCK_UN);
                        if (r >= 0)
                                r = q;
                }
        }
        for (size_t i = 0; i < n; i++)
                free(inner[i]);
        return r;
}

int con_audit_append(ConAudit *a, const char *service, const char *event, const cJSON *fields) {
        return con_audit_append_many(a, &(ConAuditRecord) { service, event, fields }, 1);
}

/* Verification */

_printf_(4, 5)
static int verify_fail(ConAuditVerify *v, uint64_t line, uint64_t seq, const char *fmt, ...) {
        va_list ap;

        v->bad_line = line;
        v->bad_seq = seq;
        va_start(ap, fmt);
        vsnprintf(v->reason, sizeof(v->reason), fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

static int read_head(int dir_fd, ConAuditVerify *v, bool *ret_present, char ret_hash[CON_SHA256_HEX_SIZE]) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_(cJSON_Deletep) cJSON *o = NULL;
        char buf[HEAD_SIZE + 1];
        ssize_t k;
        size_t got;
        const cJSON *h;

        fd = openat(dir_fd, CON_AUDIT_HEAD_NAME, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0) {
                if (errno != ENOENT)
                        return negative_errno();
                *ret_present = false;
                return 0;
        }
        k = con_read_full(fd, buf, sizeof(buf));
        if (k < 0)
                return (int) k;
        got = (size_t) k;
        *ret_present = true;
        o = cJSON_ParseWithLength(buf, got);
        h = cJSON_GetObjectItemCaseSensitive(o, "hash");
        if (got > HEAD_SIZE || !o || !json_seq(o, 0, &v->head_seq) || !cJSON_IsString(h) ||
            !con_sha256_hex_valid(h->valuestring, strlen(h->valuestring)))
                return verify_fail(v, 0, 0, CON_AUDIT_HEAD_NAME " is damaged (not {\"seq\":N,\"hash\":\"<hex>\"})");
        memcpy(ret_hash, h->valuestring, CON_SHA256_HEX_SIZE);
        return 0;
}

static int verify_record(ConAuditVerify *v, uint64_t lineno, const char *line, size_t len, const char *prev,
                         char ret_hash[CON_SHA256_HEX_SIZE]) {
        _cleanup_(cJSON_Deletep) cJSON *o = NULL;
        char want[CON_SHA256_HEX_SIZE];
        const cJSON *f;
        size_t body_len;
        uint64_t seq;
        int r;

        if (record_split(line, len, &body_len, ret_hash) < 0)
                return verify_fail(v, lineno, lineno, "line %" PRIu64 ": not an audit record (no \"hash\" field at the end)",
                                   lineno);
        r = body_hash(line, body_len, want);
        if (r < 0)
                return r;
        if (!streq(want, ret_hash))
                return verify_fail(v, lineno, lineno, "line %" PRIu64 ": hash mismatch: the record was modified", lineno);
        o = record_json(line, body_len);
        if (!cJSON_IsObject(o))
                return verify_fail(v, lineno, lineno, "line %" PRIu64 ": not a JSON object", lineno);
        if (!json_seq(o, 1, &seq))
                return verify_fail(v, lineno, lineno, "line %" PRIu64 ": missing or bad \"seq\"", lineno);
        if (seq != lineno)
                return verify_fail(v, lineno, lineno,
                                   "line %" PRIu64 ": seq is %" PRIu64 ", expected %" PRIu64
                                   " (records were deleted, inserted or reordered)", lineno, seq, lineno);
        f = cJSON_GetObjectItemCaseSensitive(o, "prev");
        if (!cJSON_IsString(f) || !streq(f->valuestring, prev))
                return verify_fail(v, lineno, lineno,
                                   "line %" PRIu64 ": \"prev\" does not match the hash of the previous record "
                                   "(a record before it was changed, deleted or reordered)", lineno);
        for (unsigned i = 0; i < 3; i++) {
                static const char * const keys[] = { "time", "service", "event" };
                f = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
                if (!cJSON_IsString(f) || isempty(f->valuestring))
                        return verify_fail(v, lineno, lineno, "line %" PRIu64 ": missing or bad \"%s\"", lineno, keys[i]);
        }
        return 0;
}

int con_audit_verify(const char *dir, ConAuditVerify *ret_report) {
        _cleanup_close_ int dir_fd = -EBADF, fd = -EBADF;
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        ConAuditVerify dummy, *v = ret_report ?: &dummy;
        char prev[CON_SHA256_HEX_SIZE] = GENESIS, head_hash[CON_SHA256_HEX_SIZE], head_rec_hash[CON_SHA256_HEX_SIZE] = "";
        bool head_present;
        size_t cap = 0;
        uint64_t lineno = 0;
        int r;

        *v = (ConAuditVerify) {};
        if (!dir)
                dir = CON_AUDIT_DIR_DEFAULT;

        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
                return negative_errno();
        fd = openat(dir_fd, CON_AUDIT_LOG_NAME, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        /* A consistent view of log and head: appenders hold LOCK_EX while writing both. */
        r = flock_retry(fd, LOCK_SH);
        if (r < 0)
                return r;

        r = read_head(dir_fd, v, &head_present, head_hash);
        if (r < 0)
                return r;

        f = fdopen(fd, "re");
        if (!f)
                return negative_errno();
        fd = -EBADF; /* owned by f now; closing it drops the lock */

        for (;;) {
                char hash[CON_SHA256_HEX_SIZE];
                ssize_t n;

                errno = 0;
                n = getline(&line, &cap, f);
                if (n < 0) {
                        if (ferror(f))
                                return negative_errno();
                        break;
                }
                lineno++;
                if (line[n - 1] != '\n')
                        return verify_fail(v, lineno, lineno,
                                           "line %" PRIu64 ": partial record at the end of the log "
                                           "(no newline: interrupted write or truncation)", lineno);
                r = verify_record(v, lineno, line, (size_t) n - 1, prev, hash);
                if (r < 0)
                        return r;
                memcpy(prev, hash, sizeof(hash));
                v->records++;
                v->last_seq = lineno;
                memcpy(v->last_hash, hash, sizeof(hash));
                if (head_present && lineno == v->head_seq)
                        memcpy(head_rec_hash, hash, sizeof(hash));
        }

        if (!head_present) {
                if (v->records > 0)
                        return verify_fail(v, lineno + 1, lineno + 1,
                                           CON_AUDIT_HEAD_NAME " is missing: cannot check that no records were "
                                           "removed from the end");
                return 0;
        }
        if (v->head_seq > v->last_seq)
                return verify_fail(v, lineno + 1, v->last_seq + 1,
                                   "the log ends at seq %" PRIu64 " but " CON_AUDIT_HEAD_NAME " records seq %" PRIu64
                                   ": records were removed from the end", v->last_seq, v->head_seq);
        /* seq 0 (no record yet) goes with the genesis hash: the appender refuses anything else */
        if (v->head_seq == 0 && !streq(head_hash, GENESIS))
                return verify_fail(v, 0, 0, CON_AUDIT_HEAD_NAME " names seq 0 with another hash than 64 zeros "
                                   "(the head was rewritten)");
        if (v->head_seq > 0 && !streq(head_rec_hash, head_hash))
                return verify_fail(v, v->head_seq, v->head_seq,
                                   CON_AUDIT_HEAD_NAME " hash does not match record seq %" PRIu64
                                   " (the log or the head was rewritten)", v->head_seq);
        return 0;
}
