/* SPDX-License-Identifier: MIT */
/* The HTTP response reader: whatever a model endpoint (or anything that answers on its address)
 * sends back goes through libcurl into bus/runtime/http.c (status, header lines, body assembly, caps,
 * Retry-After) and then into the LLM response parsers. Each input is served raw, as the complete
 * reply, by a server socket on 127.0.0.1 in the same event loop, to a real con_http_request().
 * Input: one flags byte (bits 0-1: response cap none, 16 B, 1 KiB, 64 KiB; bit 2: POST), then the
 * bytes of the response (status line, headers, body; chunked and gzip are curl's to decode).
 * Checks: the callback runs exactly once, with a documented result; a response obeys the cap, its
 * body is NUL-terminated, its header lines hold no CR or LF, Retry-After is only reported when sent.
 * The request times out after 5 s, under the 10 s per input of scripts/fuzz.sh. */
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "http.h"
#include "llm.h"
#include "macro.h"
#include "strv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Conn {
        const uint8_t *reply;
        size_t len, sent;
        bool done;
        int fd;
        sd_event_source *source;
} Conn;

typedef struct Run {
        const uint8_t *reply;
        size_t len;
        size_t cap;
        unsigned calls;
        Conn conns[4];
        unsigned n_conns;
} Run;

static int listen_fd = -EBADF;
static char url[64];
/* The event loop is the harness's, like the listening socket: made once, and empty between inputs
 * (every source of an input, the ConHttp's too, is gone when it ends). A new loop per input cost
 * an epoll instance, a timerfd and their registrations each time. */
static sd_event *ev;

static void setup(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(sa);

        listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
            listen(listen_fd, 16) < 0 || getsockname(listen_fd, (struct sockaddr *) &sa, &l) < 0 ||
            sd_event_new(&ev) < 0)
                abort();
        snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/messages", ntohs(sa.sin_port));
}

static int on_conn(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Conn *c = userdata;
        char buf[4096];
        ssize_t k;

        /* Swallow the request, so that closing never resets the connection under the reply. */
        while ((k = read(fd, buf, sizeof(buf))) > 0)
                ;
        bool eof = k == 0 || (k < 0 && errno != EAGAIN);
        while (!c->done && c->sent < c->len) {
                k = write(fd, c->reply + c->sent, c->len - c->sent);
                if (k < 0) {
                        if (errno == EAGAIN)
                                return 0;
                        break; /* the client went away */
                }
                c->sent += (size_t) k;
        }
        if (!c->done) {
                /* The whole reply: the end of the response is the end of the connection. */
                (void) shutdown(fd, SHUT_WR);
                c->done = true;
                (void) sd_event_source_set_io_events(s, EPOLLIN);
        }
        if (eof)
                (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Run *run = userdata;

        for (;;) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0)
                        return 0;
                if (run->n_conns >= ELEMENTSOF(run->conns)) {
                        close(cfd);
                        continue;
                }
                Conn *c = &run->conns[run->n_conns++];
                *c = (Conn) { .reply = run->reply, .len = run->len, .fd = cfd };
                if (sd_event_add_io(sd_event_source_get_event(s), &c->source, cfd, EPOLLIN | EPOLLOUT, on_conn,
                                    c) < 0)
                        abort();
        }
}

static void on_done(ConHttpSlot *slot, int r, ConHttpResponse *resp, void *userdata) {
        Run *run = userdata;

        run->calls++;
        if (!resp->body || resp->body[resp->body_size] != 0)
                abort();
        switch (r) {
        case 0:
                if (resp->error || resp->status < 100 || resp->status > 999)
                        abort();
                if (run->cap > 0 && resp->body_size > run->cap)
                        abort();
                STRV_FOREACH(h, resp->headers)
                        if (isempty(*h) || strpbrk(*h, "\r\n"))
                                abort();
                if (resp->has_retry_after && !con_http_response_header(resp, "Retry-After"))
                        abort();
                break;
        case -ENOMEM:
                break;
        case -ETIMEDOUT: case -EFBIG: case -ECONNRESET: case -EPROTO: case -EIO:
        case -ECONNREFUSED: case -EHOSTUNREACH: /* the loopback ran out of ports, say */
                if (!resp->error || resp->has_retry_after)
                        abort();
                break;
        default:
                abort();
        }

        /* What agentd does with it next. */
        if (r == 0) {
                for (int w = 0; w < _CON_LLM_WIRE_MAX; w++) {
                        ConLlmResponse *lr = NULL;
                        ConErrorDetail e = {};
                        (void) con_llm_parse_response((ConLlmWire) w, resp->body, resp->body_size, &lr, &e);
                        con_llm_response_free(lr);
                        con_error_detail_done(&e);
                }
                _cleanup_free_ char *msg = NULL;
                (void) con_llm_parse_error(resp->body, resp->body_size, &msg);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const size_t caps[] = { 0, 16, 1024, 64 * 1024 };

        if (size < 1 || size > 128 * 1024)
                return 0;
        if (listen_fd < 0)
                setup();

        _cleanup_(sd_event_source_unrefp) sd_event_source *accept_source = NULL;
        _cleanup_(con_http_freep) ConHttp *h = NULL;
        Run run = { .reply = data + 1, .len = size - 1, .cap = caps[data[0] & 3] };

        if (con_http_new(ev, &h) < 0 ||
            sd_event_add_io(ev, &accept_source, listen_fd, EPOLLIN, on_accept, &run) < 0)
                abort();
        const char *body = data[0] & 4 ? "{}" : NULL;
        if (con_http_request(h, url, NULL, body, body ? 2 : 0, 5 * USEC_PER_SEC, run.cap, on_done, &run, NULL) < 0)
                abort();
        while (run.calls == 0)
                if (sd_event_run(ev, UINT64_MAX) < 0)
                        abort();
        if (run.calls != 1)
                abort();

        h = con_http_free(h);
        for (unsigned i = 0; i < run.n_conns; i++) {
                sd_event_source_unref(run.conns[i].source);
                close(run.conns[i].fd);
        }
        for (int cfd; (cfd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0;)
                close(cfd);
        return 0;
}
