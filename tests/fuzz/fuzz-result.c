/* SPDX-License-Identifier: MIT */
/* What a runner prints, through the agent service's own path to a stored result and the GetResult
 * reply: the session's stdout bytes (or its stderr tail in the failure reason, built by the
 * service's agent_session_exit_reason()) go into a real queue (agent_queue_finish_output), are
 * read back from memory, from the journal after a restart and from outbox/ after eviction
 * (agent_queue_read_result), and are appended to a real sd-bus reply of GetResult and
 * GetResultInfo (agent_result_append). Every text must be valid UTF-8 without NUL and within its
 * limit, and sd-bus must accept it.
 *
 * Input: one flag byte, then the output bytes. Flags: bit 0 failed (the bytes are stderr), bits
 * 2-7 a small limit for agent_result_text() itself; bit 1 with bits 2-7 clear: the runner wrote
 * more than was read (the bytes are repeated past the read limit, or fill the stderr ring).
 *
 * The read limit and the result limit are 1 MiB; the libFuzzer build scales both to 64 KiB
 * (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, agent-session.h), the corpus replay of the suite
 * (fuzz-result, ctest -L fuzz) runs every input against the real ones. "1 MiB" below means the limit. */
/* The checks below are the point of the target (some call the code under test): keep them in
 * every build type. */
#undef NDEBUG
#include <assert.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "agent-queue.h"
#include "agent-service.h"
#include "agent-session.h"
#include "fuzz-util.h"
#include "macro.h"
#include "utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sd_bus *fuzz_bus(void) {
        static sd_bus *bus;
        int pair[2];
        if (bus)
                return bus;
        /* A started connection is needed to create messages; nobody ever answers on the other end. */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0 || sd_bus_new(&bus) < 0 ||
            sd_bus_set_fd(bus, pair[0], pair[0]) < 0 || sd_bus_start(bus) < 0)
                abort();
        return bus;
}

/* The checks' own UTF-8 validator: written independently of bus/basic/utf8.c (it decodes each code
 * point and refuses overlong forms, surrogates, values above U+10FFFF and NUL, RFC 3629), so the
 * two check each other, and built without coverage instrumentation: a big input makes 1 MiB texts,
 * and with the instrumented validator the checks' scans of them cost 40 % of the target's time
 * (one libFuzzer comparison callback per byte) while adding no coverage of the code under test. */
/* Nor with ASan's checks of each load: every caller passes a length it has already checked (the
 * input's own, or strlen() of a text, which ASan checks whole), and the word loads below stay
 * inside it. */
#ifdef __clang__
__attribute__((no_sanitize("coverage", "address")))
#endif
static bool oracle_utf8_valid(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *) s;
        for (size_t i = 0; i < n;) {
                uint32_t c = p[i], min;
                size_t len;
                /* Eight ASCII bytes at once: no byte with the top bit set, none zero. */
                if (n - i >= 8) {
                        const uint64_t high = 0x8080808080808080ULL;
                        uint64_t w;
                        memcpy(&w, p + i, 8);
                        /* Without top bits, each byte plus 0x7F carries into its own top bit
                         * unless it is zero, and never into the next byte. */
                        if (!(w & high) && ((w + 0x7F7F7F7F7F7F7F7FULL) & high) == high) {
                                i += 8;
                                continue;
                        }
                }
                if (c == 0)
                        return false;
                if (c < 0x80) {
                        i++;
                        continue;
                }
                if ((c & 0xE0) == 0xC0)
                        len = 2, c &= 0x1F, min = 0x80;
                else if ((c & 0xF0) == 0xE0)
                        len = 3, c &= 0x0F, min = 0x800;
                else if ((c & 0xF8) == 0xF0)
                        len = 4, c &= 0x07, min = 0x10000;
                else
                        return false;
                if (n - i < len)
                        return false;
                for (size_t k = 1; k < len; k++) {
                        if ((p[i + k] & 0xC0) != 0x80)
                                return false;
                        c = c << 6 | (p[i + k] & 0x3F);
                }
                if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
                        return false;
                if ((c >= 0xFDD0 && c <= 0xFDEF) || (c & 0xFFFE) == 0xFFFE)
                        return false;   /* noncharacters: sd-bus refuses them */
                i += len;
        }
        return true;
}

static void check_text(const char *text, size_t max) {
        size_t l = strlen(text);
        assert(l <= max);
        assert(oracle_utf8_valid(text, l));
}

/* The reply a GetResult / GetResultInfo caller gets: sd-bus refuses strings that are not UTF-8. */
static void check_reply(AgentTaskStatus st, const char *text, const AgentResultInfo *info) {
        for (int with_info = 0; with_info <= 1; with_info++) {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
                if (sd_bus_message_new_method_call(fuzz_bus(), &m, "org.conspiracy.Fuzz", "/org/conspiracy/Agent",
                                                   "org.conspiracy.Agent1", "GetResultInfo") < 0)
                        abort();
                assert(agent_result_append(m, st, text, info, with_info ? "alice@host-a" : NULL, with_info) >= 0);
                assert(sd_bus_message_seal(m, 1, 0) >= 0);
        }
}

/* The first read of an input's result (from memory), which the later ones (after a restart, after
 * eviction) must equal byte for byte, with the same info. */
typedef struct {
        char *text;
        size_t len;
        AgentResultInfo info;
} FirstRead;

static void check_result(AgentQueue *q, AgentTask *t, size_t max, uint64_t want_size, FirstRead *first) {
        _cleanup_free_ char *text = NULL;
        AgentResultInfo info;
        assert(agent_queue_read_result(q, t, &text, &info) == 0);
        assert(info.size == want_size);
        if (first->text) {
                /* The same bytes and info (and status: the same task) as the first read, which was
                 * checked: they pass the same checks and make the same replies. Checking them again
                 * (the validator over 1 MiB, sd-bus validating 1 MiB texts) was a fifth of the time. */
                assert(strlen(text) == first->len && memcmp(text, first->text, first->len) == 0);
                assert(info.size == first->info.size && info.truncated == first->info.truncated &&
                       info.replaced == first->info.replaced);
                return;
        }
        check_text(text, max);
        check_reply(t->status, text, &info);
        first->len = strlen(text);
        first->text = TAKE_PTR(text);
        first->info = info;
}

/* The queue's folder: one per process, emptied after each input (its sub-folders stay, as a
 * restarted service finds them), instead of a new folder made and removed per input. */
static int queue_dir(void) {
        static int dfd = -1;
        if (dfd < 0)
                dfd = fuzz_subdir_dfd("agent");
        return dfd;
}

/* The 1 MiB of runner output of a big input: one buffer of exactly that size for the process (a
 * read past it is still out of bounds), not a new one per input (ASan maps big allocations anew:
 * their page faults were a tenth of the time). */
static char *big_output(void) {
        static char *buf;
        if (!buf && !(buf = malloc(AGENT_SESSION_OUTPUT_MAX)))
                abort();
        return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size == 0)
                return 0;
        uint8_t flags = data[0];
        const char *bytes = (const char *) data + 1;
        size_t n = size - 1;
        bool failed = flags & 1;
        AgentTaskStatus st = failed ? AGENT_TASK_FAILED : AGENT_TASK_DONE;
        size_t max = failed ? AGENT_QUEUE_REASON_MAX : AGENT_QUEUE_RESULT_MAX;

        /* The pure step with a small limit: cuts at every position the input allows. */
        {
                _cleanup_free_ char *text = NULL;
                AgentResultInfo info;
                size_t small = 64 + (flags >> 2);
                bool valid = oracle_utf8_valid(bytes, n);
                assert(con_utf8_valid(bytes, n) == valid);
                assert(agent_result_text(bytes, n, n, small, &text, &info) == 0);
                check_text(text, small);
                assert(info.size == n);
                assert(info.replaced == !valid || info.truncated);
                if (!info.truncated && !info.replaced)
                        assert(strlen(text) == n && memcmp(text, bytes, n) == 0);
        }

        /* What the session read: the output as it came (stdout up to the read limit), or the stderr
         * tail turned into a reason. */
        _cleanup_free_ char *out_own = NULL;
        const char *out;
        size_t len = n;
        uint64_t total = n;
        /* Only with the limit bits clear: a 1 MiB round trip is costly, the cut logic itself is
         * exercised above at every input. */
        bool big = (flags & 2) && (flags >> 2) == 0;
        if (!failed && big && n > 0) {
                total = AGENT_SESSION_OUTPUT_MAX + n;
                len = AGENT_SESSION_OUTPUT_MAX;
                char *buf = big_output();
                /* Doubling: a one-byte input would otherwise take a million copies. */
                memcpy(buf, bytes, n < len ? n : len);
                for (size_t o = n; o < len; o *= 2)
                        memcpy(buf + o, buf, len - o < o ? len - o : o);
                out = buf;
        } else if (failed) {
                _cleanup_free_ AgentSession *s = calloc(1, sizeof(AgentSession));
                if (!s)
                        return 0;
                /* The ring keeps the last bytes; a repeated input fills it and loses its front. */
                uint64_t written = big ? AGENT_SESSION_STDERR_TAIL + n : n;
                s->err_size = written;
                s->err_len = written < AGENT_SESSION_STDERR_TAIL ? written : AGENT_SESSION_STDERR_TAIL;
                for (size_t o = 0; n > 0 && o < s->err_len; o++)
                        s->err[s->err_len - 1 - o] = bytes[n - 1 - (o % n)];
                s->exit_status = 1;
                if (agent_session_exit_reason(s, "/usr/bin/runner", &out_own, &len) < 0)
                        return 0;
                out = out_own;
                assert(len <= 64 + AGENT_SESSION_STDERR_TAIL);
                total = len;
        } else {
                out = out_own = malloc(n + 1);
                if (!out_own)
                        return 0;
                memcpy(out_own, bytes, n);
        }

        /* tmpfs (fuzz-util.h): the queue fsyncs, which a disk would make the slowest part by far. */
        int dfd = queue_dir();
        FirstRead first = {};

        AgentQueue *q = NULL;
        assert(agent_queue_open(dfd, 0, &q) == 0);
        AgentTaskRequest req = { .id = "fuzz", .sender_uid = 1000, .sender = "alice", .priority = 5, .text = "t" };
        AgentTask *t = NULL;
        assert(agent_queue_accept(q, &req, 1, &t) == 0);
        assert(agent_queue_start(q, t, 2) == 0);
        assert(agent_queue_finish_output(q, t, st, out, len, total, 3) == 0);
        check_text(t->result, max);
        assert(t->result_info.size == total);
        check_result(q, t, max, total, &first);
        assert(agent_queue_commit(q) == 0);
        assert(agent_queue_write_files(q, t) == 0);
        agent_queue_free(q);

        /* After a restart (replay of the journal), then from disk after eviction. */
        q = NULL;
        assert(agent_queue_open(dfd, 0, &q) == 0);
        t = agent_queue_find(q, "fuzz");
        assert(t);
        check_result(q, t, max, total, &first);
        agent_queue_set_keep_finished(q, 0);
        assert(agent_queue_evict(q) == 1);
        assert(agent_queue_compact(q) >= 0);
        AgentTask *ev = NULL;
        assert(agent_queue_load_finished(q, "fuzz", &ev) == 0);
        check_result(q, ev, max, total, &first);
        agent_task_free(ev);
        agent_queue_free(q);

        free(first.text);
        fuzz_tree_clear(dfd, false);
        return 0;
}
