/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audit.h"
#include "macro.h"
#include "sha256.h"
#include "test-util.h"

static void test_sha256(void) {
        static const struct {
                const char *in;
                const char *hex;
        } v[] = {
                { "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
                { "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
                { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
                { "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                  "mnopqrstnopqrstu",
                  "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1" },
        };
        /* lengths around the padding boundaries, of the letter a */
        static const struct {
                size_t n;
                const char *hex;
        } a[] = {
                { 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318" },
                { 56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a" },
                { 63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34" },
                { 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb" },
                { 65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0" },
                { 119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb" },
                { 120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c" },
                { 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0" },
        };
        char hex[CON_SHA256_HEX_SIZE];

        for (size_t i = 0; i < ELEMENTSOF(v); i++) {
                g_assert_cmpint(con_sha256_hex(v[i].in, strlen(v[i].in), hex), ==, 0);
                g_assert_cmpstr(hex, ==, v[i].hex);
                g_assert_true(con_sha256_hex_valid(hex, strlen(hex)));
        }
        /* what con_sha256_to_hex writes, and nothing else */
        g_assert_false(con_sha256_hex_valid(hex, strlen(hex) - 1));
        g_assert_false(con_sha256_hex_valid(NULL, 64));
        hex[7] = 'A';
        g_assert_false(con_sha256_hex_valid(hex, 64));
        hex[7] = 'g';
        g_assert_false(con_sha256_hex_valid(hex, 64));
        hex[7] = '0';
        g_assert_true(con_sha256_hex_valid(hex, 64));

        _cleanup_free_ char *as = malloc(1000000);
        memset(as, 'a', 1000000);
        for (size_t i = 0; i < ELEMENTSOF(a); i++) {
                g_assert_cmpint(con_sha256_hex(as, a[i].n, hex), ==, 0);
                g_assert_cmpstr(hex, ==, a[i].hex);

                /* the same in uneven pieces */
                ConSha256 s;
                uint8_t d[CON_SHA256_DIGEST_SIZE];
                size_t done = 0, step = 1;
                g_assert_cmpint(con_sha256_init(&s), ==, 0);
                while (done < a[i].n) {
                        size_t k = MIN(step, a[i].n - done);
                        con_sha256_update(&s, as + done, k);
                        done += k;
                        step = step * 3 + 1;
                }
                g_assert_cmpint(con_sha256_final(&s, d), ==, 0);
                con_sha256_to_hex(d, hex);
                g_assert_cmpstr(hex, ==, a[i].hex);
        }
}

typedef struct Fixture {
        char *dir;
        char *log;
        char *head;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        f->dir = test_tmpdir_new();
        f->log = g_build_filename(f->dir, "audit", CON_AUDIT_LOG_NAME, NULL);
        f->head = g_build_filename(f->dir, "audit", CON_AUDIT_HEAD_NAME, NULL);
        char *d = g_build_filename(f->dir, "audit", NULL);
        g_free(f->dir);
        f->dir = d; /* the audit dir itself, created by con_audit_open() */
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        char *parent = g_path_get_dirname(f->dir);
        test_tmpdir_remove(parent);
        g_free(parent);
        g_free(f->dir);
        g_free(f->log);
        g_free(f->head);
}

static void append_n(const char *dir, unsigned n, bool sync) {
        ConAudit *a = NULL;

        g_assert_cmpint(con_audit_open(dir, &a), ==, 0);
        con_audit_set_sync(a, sync);
        for (unsigned i = 0; i < n; i++) {
                cJSON *fields = cJSON_CreateObject();
                cJSON_AddStringToObject(fields, "task", "20261129T113045.123456Z-1a2b3c-00000001-0123abcd");
                cJSON_AddStringToObject(fields, "to", "sysadmin");
                cJSON_AddNumberToObject(fields, "i", i);
                g_assert_cmpint(con_audit_append(a, "router", "task.routed", fields), ==, 0);
                cJSON_Delete(fields);
        }
        con_audit_close(a);
}

static char **read_lines(const char *path) {
        char *c = NULL;
        g_assert_true(g_file_get_contents(path, &c, NULL, NULL));
        g_assert_true(g_str_has_suffix(c, "\n"));
        c[strlen(c) - 1] = '\0';
        char **l = g_strsplit(c, "\n", -1);
        g_free(c);
        return l;
}

static void write_lines(const char *path, char **lines) {
        char *j = g_strjoinv("\n", lines);
        char *c = g_strconcat(j, "\n", NULL);
        test_write_file(path, c);
        g_free(j);
        g_free(c);
}

static void expect_bad(const char *dir, uint64_t line, const char *reason) {
        ConAuditVerify v;
        g_assert_cmpint(con_audit_verify(dir, &v), ==, -EBADMSG);
        g_test_message("reason: %s", v.reason);
        g_assert_cmpuint(v.bad_line, ==, line);
        g_assert_cmpstr(v.reason, ==, reason);
}

static void test_append_verify(Fixture *f, gconstpointer data) {
        ConAuditVerify v;
        struct stat st;

        g_assert_cmpint(con_audit_verify(f->dir, &v), ==, -ENOENT);
        append_n(f->dir, 5, true);
        g_assert_cmpint(con_audit_verify(f->dir, &v), ==, 0);
        g_assert_cmpuint(v.records, ==, 5);
        g_assert_cmpuint(v.last_seq, ==, 5);
        g_assert_cmpuint(v.head_seq, ==, 5);
        g_assert_cmpuint(v.bad_line, ==, 0);
        g_assert_cmpstr(v.reason, ==, "");
        g_assert_cmpint(con_audit_verify(f->dir, NULL), ==, 0);

        g_assert_cmpint(stat(f->dir, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0750);
        g_assert_cmpint(stat(f->log, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0640);
        g_assert_cmpint(stat(f->head, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0640);
        g_assert_cmpint(st.st_size, ==, 128);

        /* the records */
        char **l = read_lines(f->log);
        g_assert_cmpuint(g_strv_length(l), ==, 5);
        g_assert_true(g_regex_match_simple(
                "^\\{\"seq\":1,\"time\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z\","
                "\"service\":\"router\",\"event\":\"task.routed\",\"task\":\"20261129T113045.123456Z-1a2b3c-00000001-0123abcd\","
                "\"to\":\"sysadmin\",\"i\":0,\"prev\":\"0{64}\",\"hash\":\"[0-9a-f]{64}\"\\}$",
                l[0], 0, 0));
        for (unsigned i = 0; i < 5; i++) {
                cJSON *o = cJSON_Parse(l[i]);
                g_assert_nonnull(o);
                g_assert_cmpint(cJSON_GetObjectItem(o, "seq")->valueint, ==, i + 1);
                g_assert_cmpint(cJSON_GetObjectItem(o, "i")->valueint, ==, i);
                /* hash covers the record without the hash field */
                const char *h = cJSON_GetObjectItem(o, "hash")->valuestring;
                char *body = g_strndup(l[i], strlen(l[i]) - strlen(",\"hash\":\"\"}") - 64);
                char *withbrace = g_strconcat(body, "}", NULL);
                char hex[CON_SHA256_HEX_SIZE];
                g_assert_cmpint(con_sha256_hex(withbrace, strlen(withbrace), hex), ==, 0);
                g_assert_cmpstr(hex, ==, h);
                if (i == 4)
                        g_assert_cmpstr(v.last_hash, ==, h);
                g_free(body);
                g_free(withbrace);
                cJSON_Delete(o);
        }
        g_strfreev(l);

        /* reopen continues the chain */
        append_n(f->dir, 2, true);
        g_assert_cmpint(con_audit_verify(f->dir, &v), ==, 0);
        g_assert_cmpuint(v.records, ==, 7);
}

static void test_bad_args(Fixture *f, gconstpointer data) {
        _cleanup_(con_audit_closep) ConAudit *a = NULL;

        g_assert_cmpint(con_audit_open(f->dir, &a), ==, 0);
        g_assert_cmpint(con_audit_append(a, "Router", "x", NULL), ==, -EINVAL);
        g_assert_cmpint(con_audit_append(a, "router", "", NULL), ==, -EINVAL);
        g_assert_cmpint(con_audit_append(a, "router", "a\"b", NULL), ==, -EINVAL);

        static const char * const reserved[] = { "seq", "time", "service", "event", "prev", "hash" };
        for (size_t i = 0; i < ELEMENTSOF(reserved); i++) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, reserved[i], "x");
                g_assert_cmpint(con_audit_append(a, "router", "x", o), ==, -EINVAL);
                cJSON_Delete(o);
        }
        cJSON *arr = cJSON_CreateArray();
        g_assert_cmpint(con_audit_append(a, "router", "x", arr), ==, -EINVAL);
        cJSON_Delete(arr);

        cJSON *dup = cJSON_CreateObject();
        cJSON_AddStringToObject(dup, "k", "1");
        cJSON_AddStringToObject(dup, "k", "2");
        g_assert_cmpint(con_audit_append(a, "router", "x", dup), ==, -EINVAL);
        cJSON_Delete(dup);

        cJSON *bad = cJSON_CreateObject();
        cJSON_AddStringToObject(bad, "k", "\xff");
        g_assert_cmpint(con_audit_append(a, "router", "x", bad), ==, -EINVAL);
        cJSON_Delete(bad);

        char *big = g_malloc(CON_AUDIT_LINE_MAX);
        memset(big, 'b', CON_AUDIT_LINE_MAX - 1);
        big[CON_AUDIT_LINE_MAX - 1] = '\0';
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "k", big);
        g_assert_cmpint(con_audit_append(a, "router", "x", o), ==, -E2BIG);
        cJSON_Delete(o);
        g_free(big);

        /* escapes in fields keep the record on one line */
        cJSON *nl = cJSON_CreateObject();
        cJSON_AddStringToObject(nl, "note", "two\nlines \"quoted\" \xc3\xa9");
        g_assert_cmpint(con_audit_append(a, "router", "x", nl), ==, 0);
        cJSON_Delete(nl);
        g_assert_cmpint(con_audit_append(a, "router", "empty", NULL), ==, 0);
        g_assert_cmpuint(con_audit_last_seq(a), ==, 2);
        a = con_audit_close(a);

        ConAuditVerify v;
        g_assert_cmpint(con_audit_verify(f->dir, &v), ==, 0);
        g_assert_cmpuint(v.records, ==, 2);
        char **l = read_lines(f->log);
        g_assert_cmpuint(g_strv_length(l), ==, 2);
        g_strfreev(l);
}

static void test_tamper_byte(Fixture *f, gconstpointer data) {
        append_n(f->dir, 5, true);
        char **l = read_lines(f->log);
        char *p = strstr(l[2], "sysadmin");
        p[0] = 'S';
        write_lines(f->log, l);
        g_strfreev(l);
        expect_bad(f->dir, 3, "line 3: hash mismatch: the record was modified");
}

static void test_tamper_rehash(Fixture *f, gconstpointer data) {
        /* Change a record and fix up its own hash: the next record's prev gives it away. */
        append_n(f->dir, 5, true);
        char **l = read_lines(f->log);
        char *p = strstr(l[2], "sysadmin");
        p[0] = 'S';
        size_t body_len = strlen(l[2]) - strlen(",\"hash\":\"\"}") - 64;
        char *body = g_strndup(l[2], body_len);
        char *withbrace = g_strconcat(body, "}", NULL);
        char hex[CON_SHA256_HEX_SIZE];
        g_assert_cmpint(con_sha256_hex(withbrace, strlen(withbrace), hex), ==, 0);
        memcpy(l[2] + body_len + strlen(",\"hash\":\""), hex, 64);
        write_lines(f->log, l);
        g_strfreev(l);
        g_free(body);
        g_free(withbrace);
        expect_bad(f->dir, 4,
                   "line 4: \"prev\" does not match the hash of the previous record "
                   "(a record before it was changed, deleted or reordered)");
}

static void test_delete_line(Fixture *f, gconstpointer data) {
        append_n(f->dir, 5, true);
        char **l = read_lines(f->log);
        g_free(l[2]);
        memmove(l + 2, l + 3, 3 * sizeof(char *));
        write_lines(f->log, l);
        g_strfreev(l);
        expect_bad(f->dir, 3, "line 3: seq is 4, expected 3 (records were deleted, inserted or reordered)");
}

static void test_reorder(Fixture *f, gconstpointer data) {
        append_n(f->dir, 5, true);
        char **l = read_lines(f->log);
        char *t = l[1];
        l[1] = l[2];
        l[2] = t;
        write_lines(f->log, l);
        g_strfreev(l);
        expect_bad(f->dir, 2, "line 2: seq is 3, expected 2 (records were deleted, inserted or reordered)");
}

static void test_truncate_tail(Fixture *f, gconstpointer data) {
        append_n(f->dir, 5, true);
        char **l = read_lines(f->log);
        char *last = l[4];
        l[4] = NULL;
        write_lines(f->log, l);
        l[4] = last;
        expect_bad(f->dir, 5, "the log ends at seq 4 but audit.head records seq 5: records were removed from the end");

        /* appending would overwrite the evidence in the head: refused */
        ConAudit *a = NULL;
        g_assert_cmpint(con_audit_open(f->dir, &a), ==, -EBADMSG);
        g_assert_null(a);
        g_strfreev(l);
}

static void test_partial_tail(Fixture *f, gconstpointer data) {
        /* a tail cut in the middle of a record */
        append_n(f->dir, 5, true);
        int fd = open(f->log, O_WRONLY | O_APPEND);
        g_assert_cmpint(write(fd, "{\"seq\":6,", 9), ==, 9);
        close(fd);
        expect_bad(f->dir, 6, "line 6: partial record at the end of the log (no newline: interrupted write or truncation)");

        /* the chain cannot be continued on a partial record */
        ConAudit *a = NULL;
        g_assert_cmpint(con_audit_open(f->dir, &a), ==, -EBADMSG);
}

static void test_write_fails(Fixture *f, gconstpointer data) {
        /* The disk fills up in the middle of a record (here: RLIMIT_FSIZE, a short write then
         * EFBIG): the partial line is cut off again, so the chain stays intact and continues. */
        append_n(f->dir, 3, true);
        ConAudit *a = NULL;
        g_assert_cmpint(con_audit_open(f->dir, &a), ==, 0);
        struct stat st;
        g_assert_cmpint(stat(f->log, &st), ==, 0);
        struct rlimit old, lim;
        g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
        lim = (struct rlimit) { .rlim_cur = (rlim_t) st.st_size + 40, .rlim_max = old.rlim_max };
        void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
        g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &lim), ==, 0);
        cJSON *fields = cJSON_CreateObject();
        cJSON_AddStringToObject(fields, "task_id", "20261129T113045.123456Z-1a2b3c-00000001-0123abcd");
        g_assert_cmpint(con_audit_append(a, "router", "task.routed", fields), ==, -EFBIG);
        g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
        signal(SIGXFSZ, old_handler);
        struct stat st2;
        g_assert_cmpint(stat(f->log, &st2), ==, 0);
        g_assert_cmpint(st2.st_size, ==, st.st_size);

        /* space is back: the same handle appends, and the chain verifies */
        g_assert_cmpint(con_audit_append(a, "router", "task.routed", fields), ==, 0);
        cJSON_Delete(fields);
        con_audit_close(a);
        ConAuditVerify v;
        g_assert_cmpint(con_audit_verify(f->dir, &v), ==, 0);
        g_assert_cmpuint(v.records, ==, 4);
}

static void test_head(Fixture *f, gconstpointer data) {
        append_n(f->dir, 3, true);

        /* a head naming another hash */
        char *orig = NULL;
        g_assert_true(g_file_get_contents(f->head, &orig, NULL, NULL));
        char *other = g_strdup(orig);
        char *h = strstr(other, "\"hash\":\"") + 8;
        h[0] = h[0] == 'a' ? 'b' : 'a';
        test_write_file(f->head, other);
        expect_bad(f->dir, 3, "audit.head hash does not match record seq 3 (the log or the head was rewritten)");

        test_write_file(f->head, "garbage");
        expect_bad(f->dir, 0, "audit.head is damaged (not {\"seq\":N,\"hash\":\"<hex>\"})");
        test_write_file(f->head, "");
        expect_bad(f->dir, 0, "audit.head is damaged (not {\"seq\":N,\"hash\":\"<hex>\"})");

        g_assert_cmpint(unlink(f->head), ==, 0);
        expect_bad(f->dir, 4, "audit.head is missing: cannot check that no records were removed from the end");

        /* an emptied log under a head that names records: open refuses to overwrite the evidence */
        test_write_file(f->head, orig);
        test_write_file(f->log, "");
        ConAudit *a = NULL;
        g_assert_cmpint(con_audit_open(f->dir, &a), ==, -EBADMSG);
        g_assert_null(a);
        expect_bad(f->dir, 1, "the log ends at seq 0 but audit.head records seq 3: records were removed from the end");

        /* seq 0 with another hash than the genesis one: the appender refuses it, so does the
         * verifier (it said "intact"; found by fuzz-audit) */
        test_write_file(f->head, "{\"seq\":0,\"hash\":\"1111111111111111111111111111111111111111111111111111111111111111\"}");
        g_assert_cmpint(con_audit_open(f->dir, &a), ==, -EBADMSG);
        expect_bad(f->dir, 0, "audit.head names seq 0 with another hash than 64 zeros (the head was rewritten)");
        g_free(orig);
        g_free(other);
}

static void test_batch(Fixture *f, gconstpointer data) {
        ConAudit *a = NULL;
        ConAuditVerify v;

        g_assert_cmpint(con_audit_open(f->dir, &a), ==, 0);
        con_audit_set_sync(a, false);
        for (unsigned i = 0; i < 100; i++)
                g_assert_cmpint(con_audit_append(a, "router", "task.routed", NULL), ==, 0);
        /* the head still names seq 0: what was written since is covered only by the chain */
        g_assert_cmpint(con_audit_verify(f->dir, &v), ==, 0);
        g_assert_cmpuint(v.records, ==, 100);
        g_assert_cmpuint(v.head_seq, ==, 0);
        g_assert_cmpint(con_audit_flush(a), ==, 0);
        g_assert_cmpint(con_audit_verify(f->dir, &v), ==, 0);
        g_assert_cmpuint(v.head_seq, ==, 100);
        g_assert_cmpint(con_audit_append(a, "router", "task.routed", NULL), ==, 0);
        con_audit_close(a); /* flushes */
        g_assert_cmpint(con_audit_verify(f->dir, &v), ==, 0);
        g_assert_cmpuint(v.head_seq, ==, 101);
}

/* Several records with one append: chained as if appended one by one, all or none. */
static void test_append_many(Fixture *f, gconstpointer data) {
        ConAudit *a = NULL;
        ConAuditVerify v;
        cJSON *f1 = cJSON_CreateObject(), *bad = cJSON_CreateObject();

        g_assert_nonnull(cJSON_AddStringToObject(f1, "task_id", "t1"));
        g_assert_nonnull(cJSON_AddStringToObject(bad, "seq", "reserved"));
        g_assert_cmpint(con_audit_open(f->dir, &a), ==, 0);
        g_assert_cmpint(con_audit_append(a, "agent", "task.accepted", f1), ==, 0);
        ConAuditRecord recs[] = {
                { "agent", "task.started", f1 },
                { "agent", "task.completed", NULL },
                { "router", "task.routed", f1 },
        };
        g_assert_cmpint(con_audit_append_many(a, recs, ELEMENTSOF(recs)), ==, 0);
        g_assert_cmpuint(con_audit_last_seq(a), ==, 4);
        g_assert_cmpint(con_audit_append_many(a, recs, 0), ==, 0);
        ConAuditRecord refused[] = {
                { "agent", "task.started", f1 },
                { "agent", "task.completed", bad },
        };
        g_assert_cmpint(con_audit_append_many(a, refused, ELEMENTSOF(refused)), ==, -EINVAL);
        ConAuditRecord bad_name[] = { { "agent", "not an event", NULL } };
        g_assert_cmpint(con_audit_append_many(a, bad_name, 1), ==, -EINVAL);
        g_assert_cmpuint(con_audit_last_seq(a), ==, 4);
        g_assert_cmpint(con_audit_append(a, "agent", "task.completed", f1), ==, 0);
        con_audit_close(a);
        g_assert_cmpint(con_audit_verify(f->dir, &v), ==, 0);
        g_assert_cmpuint(v.records, ==, 5);
        g_assert_cmpuint(v.head_seq, ==, 5);
        g_autofree char *log = NULL;
        g_assert_true(g_file_get_contents(f->log, &log, NULL, NULL));
        g_assert_nonnull(strstr(log, "\"seq\":3,"));
        g_assert_nonnull(strstr(log, "\"event\":\"task.routed\",\"task_id\":\"t1\""));
        cJSON_Delete(f1);
        cJSON_Delete(bad);
}

#define PER_CHILD 500

static void test_concurrent(Fixture *f, gconstpointer data) {
        pid_t pids[2];
        ConAuditVerify v;

        /* the directory and files exist before the race */
        ConAudit *a = NULL;
        g_assert_cmpint(con_audit_open(f->dir, &a), ==, 0);
        con_audit_close(a);

        for (unsigned c = 0; c < 2; c++) {
                pids[c] = fork();
                g_assert_cmpint(pids[c], >=, 0);
                if (pids[c] == 0) {
                        ConAudit *ca = NULL;
                        if (con_audit_open(f->dir, &ca) < 0)
                                _exit(1);
                        /* one child syncs every record, the other batches */
                        con_audit_set_sync(ca, c == 0);
                        for (unsigned i = 0; i < PER_CHILD; i++) {
                                cJSON *o = cJSON_CreateObject();
                                cJSON_AddNumberToObject(o, "i", i);
                                if (con_audit_append(ca, c == 0 ? "router" : "contracts", "tick", o) < 0)
                                        _exit(2);
                                cJSON_Delete(o);
                                if (c == 1 && i % 50 == 0 && con_audit_flush(ca) < 0)
                                        _exit(3);
                        }
                        con_audit_close(ca);
                        _exit(0);
                }
        }
        for (unsigned c = 0; c < 2; c++) {
                int status;
                g_assert_cmpint(waitpid(pids[c], &status, 0), ==, pids[c]);
                g_assert_true(WIFEXITED(status));
                g_assert_cmpint(WEXITSTATUS(status), ==, 0);
        }
        g_assert_cmpint(con_audit_verify(f->dir, &v), ==, 0);
        g_assert_cmpuint(v.records, ==, 2 * PER_CHILD);
        g_assert_cmpuint(v.head_seq, ==, 2 * PER_CHILD);

        /* both wrote, and each one's records are in its own order */
        char **l = read_lines(f->log);
        int last[2] = { -1, -1 };
        for (char **p = l; *p; p++) {
                cJSON *o = cJSON_Parse(*p);
                unsigned c = streq(cJSON_GetObjectItem(o, "service")->valuestring, "router") ? 0 : 1;
                int i = cJSON_GetObjectItem(o, "i")->valueint;
                g_assert_cmpint(i, ==, last[c] + 1);
                last[c] = i;
                cJSON_Delete(o);
        }
        g_assert_cmpint(last[0], ==, PER_CHILD - 1);
        g_assert_cmpint(last[1], ==, PER_CHILD - 1);
        g_strfreev(l);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/audit/sha256", test_sha256);
#define T(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
        T("/audit/append-verify", test_append_verify);
        T("/audit/bad-args", test_bad_args);
        T("/audit/tamper-byte", test_tamper_byte);
        T("/audit/tamper-rehash", test_tamper_rehash);
        T("/audit/delete-line", test_delete_line);
        T("/audit/reorder", test_reorder);
        T("/audit/truncate-tail", test_truncate_tail);
        T("/audit/partial-tail", test_partial_tail);
        T("/audit/write-fails", test_write_fails);
        T("/audit/head", test_head);
        T("/audit/batch", test_batch);
        T("/audit/append-many", test_append_many);
        T("/audit/concurrent", test_concurrent);
        return con_test_run();
}
