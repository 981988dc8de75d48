/* SPDX-License-Identifier: MIT */
/* con-fake-llm: a scripted fake LLM HTTP server for tests, loopback only.
 *
 *   con-fake-llm --script FILE [--port N] [--log FILE] [--idle-timeout SEC]
 *
 * Binds 127.0.0.1 (port 0 = ephemeral), prints the port on stdout, then answers each request with
 * the first script rule that matches it, and appends one JSON line per request to the log.
 * One connection per request (Connection: close). Single-threaded poll loop. Exits 0 on SIGTERM or
 * SIGINT, or after SEC seconds without any activity (default 60, 0 = never).
 * The script format is documented in docs/LLM-WIRE.md. */

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/param.h>
#include <sys/socket.h>
#include <time.h>
#include <arpa/inet.h>

#include "json-util.h"
#include "macro.h"
#include "time-util.h"

#define HEAD_MAX (64U * 1024U)
#define BODY_MAX (32U * 1024U * 1024U)
#define CONNS_MAX 64


typedef enum Behaviour {
        B_NORMAL,
        B_HANG,
        B_SLOW,
        B_CLOSE_MID_BODY,
        B_OVERSIZE,
        B_MALFORMED,
} Behaviour;

typedef struct Rule {
        const cJSON *json;
        const char *path, *method, *match;
        size_t min_body;        /* 0: any size; else only requests with a body of at least this many bytes */
        long times;             /* < 0: unlimited */
        int status;
        Behaviour behaviour;
        uint64_t delay_ms;
        size_t size;
} Rule;

typedef enum ConnState {
        S_READ,
        S_WAIT,
        S_WRITE,
        S_HANG,
        S_DEAD,
} ConnState;

typedef struct Conn {
        int fd;
        ConnState state;
        char *in;
        size_t in_len, in_alloc;
        size_t head_len;        /* 0 until the header block is complete */
        size_t content_length;
        char *out;
        size_t out_len, out_pos, out_limit;
        uint64_t send_at_ms;
} Conn;

static volatile sig_atomic_t terminate;
static Rule *rules;
static size_t n_rules;
static FILE *log_file;
static unsigned long seq;

static void on_signal(int sig) {
        terminate = 1;
}

static uint64_t now_ms(void) {
        return con_now(CLOCK_MONOTONIC) / USEC_PER_MSEC;
}

_printf_(1, 2) static void die(const char *fmt, ...) {
        va_list ap;
        fprintf(stderr, "con-fake-llm: ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(2);
}

/* ---- script ------------------------------------------------------------------------------- */

static cJSON *load_script(const char *path) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                die("cannot open script %s", path);
        char *buf = NULL;
        size_t n = 0;
        _cleanup_fclose_ FILE *m = open_memstream(&buf, &n);
        char chunk[4096];
        size_t k;
        while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
                fwrite(chunk, 1, k, m);
        fclose(m);
        m = NULL;
        cJSON *j = cJSON_Parse(buf);
        free(buf);
        if (!j)
                die("script %s is not valid JSON", path);
        return j;
}

static void parse_rules(const cJSON *script, const char *path) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(script, "rules"), *r;
        if (!cJSON_IsArray(list))
                die("script %s: \"rules\" must be an array", path);
        n_rules = (size_t) cJSON_GetArraySize(list);
        rules = calloc(n_rules ? n_rules : 1, sizeof(Rule));
        if (!rules)
                die("%s", "out of memory");
        size_t i = 0;
        cJSON_ArrayForEach(r, list) {
                Rule *x = &rules[i++];
                const cJSON *v;

                if (!cJSON_IsObject(r))
                        die("script %s: every rule must be an object", path);
                static const char *const keys[] = { "path", "method", "match", "times", "status", "headers",
                                                    "body", "behaviour", "delay_ms", "size", "min_body" };
                for (const cJSON *k = r->child; k; k = k->next) {
                        size_t ki;
                        for (ki = 0; ki < ELEMENTSOF(keys); ki++)
                                if (k->string && streq(k->string, keys[ki]))
                                        break;
                        if (ki == ELEMENTSOF(keys))
                                die("script %s: rule %zu: unknown key \"%s\" (allowed: path, method, match, times, "
                                    "status, headers, body, behaviour, delay_ms, size, min_body)", path, i - 1, strempty(k->string));
                }
                x->json = r;
                x->times = -1;
                x->status = 200;
                v = cJSON_GetObjectItemCaseSensitive(r, "path");
                if (!cJSON_IsString(v))
                        die("script %s: every rule needs a \"path\" string", path);
                x->path = v->valuestring;
                v = cJSON_GetObjectItemCaseSensitive(r, "method");
                x->method = cJSON_IsString(v) ? v->valuestring : NULL;
                v = cJSON_GetObjectItemCaseSensitive(r, "match");
                x->match = cJSON_IsString(v) ? v->valuestring : NULL;
                v = cJSON_GetObjectItemCaseSensitive(r, "times");
                if (cJSON_IsNumber(v))
                        x->times = (long) v->valuedouble;
                v = cJSON_GetObjectItemCaseSensitive(r, "status");
                if (cJSON_IsNumber(v))
                        x->status = (int) v->valuedouble;
                if (x->status < 100 || x->status > 999)
                        die("script %s: \"status\" must be 100..999", path);
                v = cJSON_GetObjectItemCaseSensitive(r, "delay_ms");
                if (cJSON_IsNumber(v) && v->valuedouble > 0)
                        x->delay_ms = (uint64_t) v->valuedouble;
                v = cJSON_GetObjectItemCaseSensitive(r, "min_body");
                if (cJSON_IsNumber(v) && v->valuedouble > 0)
                        x->min_body = (size_t) v->valuedouble;
                v = cJSON_GetObjectItemCaseSensitive(r, "size");
                x->size = cJSON_IsNumber(v) && v->valuedouble > 0 ? (size_t) v->valuedouble : 1024 * 1024;
                v = cJSON_GetObjectItemCaseSensitive(r, "behaviour");
                if (v) {
                        static const char *const names[] = { "normal", "hang", "slow", "close-mid-body",
                                                             "oversize", "malformed" };
                        size_t b;
                        for (b = 0; b < ELEMENTSOF(names); b++)
                                if (cJSON_IsString(v) && streq(v->valuestring, names[b]))
                                        break;
                        if (b == ELEMENTSOF(names))
                                die("script %s: \"behaviour\" must be one of normal, hang, slow, close-mid-body, "
                                    "oversize, malformed", path);
                        x->behaviour = (Behaviour) b;
                }
        }
}

/* ---- requests ----------------------------------------------------------------------------- */

static void append_text(char **acc, const char *s) {
        char *n;
        if (asprintf(&n, "%s%s%s", *acc ?: "", *acc ? "\n" : "", s) < 0)
                return;
        free(*acc);
        *acc = n;
}

/* Text of the last message of either wire format: content string, text blocks, tool_result blocks. */
static char *last_message_text(const cJSON *body) {
        const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages"), *last, *content, *b;
        char *acc = NULL;

        if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
                return NULL;
        last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
        content = cJSON_GetObjectItemCaseSensitive(last, "content");
        if (cJSON_IsString(content))
                return strdup(content->valuestring);
        cJSON_ArrayForEach(b, content) {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "text");
                const cJSON *c = cJSON_GetObjectItemCaseSensitive(b, "content"), *cb;
                if (cJSON_IsString(t))
                        append_text(&acc, t->valuestring);
                if (cJSON_IsString(c))
                        append_text(&acc, c->valuestring);
                cJSON_ArrayForEach(cb, c) {
                        t = cJSON_GetObjectItemCaseSensitive(cb, "text");
                        if (cJSON_IsString(t))
                                append_text(&acc, t->valuestring);
                }
        }
        return acc;
}

static const char *reason(int status) {
        switch (status) {
        case 200: return "OK";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 404: return "Not Found";
        case 413: return "Content Too Large";
        case 429: return "Too Many Requests";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 502: return "Bad Gateway";
        case 503: return "Service Unavailable";
        case 529: return "Overloaded";
        default: return "Status";
        }
}

/* Builds the reply: status line, headers, body. extra_headers may be NULL. */
static void build_reply(Conn *c, int status, const cJSON *extra_headers, const char *body, size_t body_len,
                        size_t send_limit_body) {
        char *buf = NULL;
        size_t n = 0;
        FILE *m = open_memstream(&buf, &n);
        const cJSON *h;
        bool have_ct = false;

        if (!m)
                die("%s", "out of memory");
        fprintf(m, "HTTP/1.1 %d %s\r\n", status, reason(status));
        cJSON_ArrayForEach(h, extra_headers) {
                if (!cJSON_IsString(h) || !h->string)
                        continue;
                if (strcasecmp(h->string, "Content-Type") == 0)
                        have_ct = true;
                fprintf(m, "%s: %s\r\n", h->string, h->valuestring);
        }
        if (!have_ct)
                fputs("Content-Type: application/json\r\n", m);
        fprintf(m, "Content-Length: %zu\r\nConnection: close\r\n\r\n", body_len);
        size_t head = (size_t) ftell(m);
        fwrite(body, 1, body_len, m);
        fclose(m);
        c->out = buf;
        c->out_len = n;
        c->out_pos = 0;
        c->out_limit = head + MIN(send_limit_body, body_len);
}

static void log_request(const char *method, const char *path, cJSON *headers, const char *body,
                        size_t body_len, long rule) {
        _cleanup_(cJSON_Deletep) cJSON *line = cJSON_CreateObject();
        if (!log_file || !line)
                return;
        cJSON_AddNumberToObject(line, "seq", (double) seq);
        cJSON_AddStringToObject(line, "method", method);
        cJSON_AddStringToObject(line, "path", path);
        cJSON_AddItemReferenceToObject(line, "headers", headers);
        cJSON *parsed = cJSON_ParseWithLength(body, body_len);
        if (parsed)
                cJSON_AddItemToObject(line, "body", parsed);
        else {
                char *copy = strndup(body, body_len);
                cJSON_AddStringToObject(line, "body", copy ?: "");
                free(copy);
        }
        cJSON_AddNumberToObject(line, "body_bytes", (double) body_len);
        cJSON_AddNumberToObject(line, "rule", (double) rule);
        char *s = cJSON_PrintUnformatted(line);
        if (s) {
                fprintf(log_file, "%s\n", s);
                fflush(log_file);
                free(s);
        }
}

static void dispatch(Conn *c) {
        char method[16], path[1024];
        _cleanup_(cJSON_Deletep) cJSON *headers = cJSON_CreateObject();
        const char *body = c->in + c->head_len;
        size_t body_len = c->content_length;
        long chosen = -1;

        seq++;
        if (sscanf(c->in, "%15s %1023s HTTP/1.%*c", method, path) != 2) {
                const char *m = "{\"error\":{\"message\":\"fake-llm: bad request line\"}}";
                build_reply(c, 400, NULL, m, strlen(m), SIZE_MAX);
                c->state = S_WRITE;
                return;
        }
        /* Headers as an object with lower-case names, for the log. */
        for (char *line = strstr(c->in, "\r\n"); line && line + 2 < c->in + c->head_len - 2;) {
                line += 2;
                char *eol = strstr(line, "\r\n"), *colon = memchr(line, ':', (size_t) (eol - line));
                if (colon) {
                        _cleanup_free_ char *name = strndup(line, (size_t) (colon - line));
                        char *v = colon + 1;
                        v += strspn(v, " \t");
                        _cleanup_free_ char *value = strndup(v, (size_t) (eol - v));
                        for (char *p = name; p && *p; p++)
                                *p = (char) tolower((unsigned char) *p);
                        if (name && value && headers)
                                cJSON_AddStringToObject(headers, name, value);
                }
                line = eol;
        }

        _cleanup_(cJSON_Deletep) cJSON *json = cJSON_ParseWithLength(body, body_len);
        _cleanup_free_ char *text = json ? last_message_text(json) : NULL;

        for (size_t i = 0; i < n_rules; i++) {
                Rule *r = &rules[i];
                if (r->times == 0 || !streq(r->path, path) || (r->method && !streq(r->method, method)))
                        continue;
                if (r->match && (!text || !strstr(text, r->match)))
                        continue;
                if (body_len < r->min_body)
                        continue;
                chosen = (long) i;
                if (r->times > 0)
                        r->times--;
                break;
        }
        log_request(method, path, headers, body, body_len, chosen);

        if (chosen < 0) {
                _cleanup_free_ char *msg = NULL;
                int l = asprintf(&msg, "{\"error\":{\"type\":\"not_found\",\"message\":\"fake-llm: no rule for %s %s\"}}",
                                 method, path);
                if (l < 0)
                        die("%s", "out of memory");
                build_reply(c, 404, NULL, msg, (size_t) l, SIZE_MAX);
                c->state = S_WRITE;
                return;
        }

        Rule *r = &rules[chosen];
        const cJSON *hdrs = cJSON_GetObjectItemCaseSensitive(r->json, "headers");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(r->json, "body");
        _cleanup_free_ char *out = NULL;
        if (cJSON_IsString(b))
                out = strdup(b->valuestring);
        else if (b)
                out = cJSON_PrintUnformatted(b);
        else
                out = strdup("");
        if (!out)
                die("%s", "out of memory");
        size_t out_len = strlen(out);

        switch (r->behaviour) {
        case B_HANG:
                c->state = S_HANG;
                return;
        case B_OVERSIZE: {
                free(out);
                out = malloc(r->size + 1);
                if (!out)
                        die("%s", "out of memory");
                memset(out, 'x', r->size);
                if (r->size >= 10) {
                        memcpy(out, "{\"pad\":\"", 8);
                        memcpy(out + r->size - 2, "\"}", 2);
                }
                out[r->size] = 0;
                out_len = r->size;
                build_reply(c, r->status, hdrs, out, out_len, SIZE_MAX);
                break;
        }
        case B_MALFORMED:
                if (out_len < 2) {
                        free(out);
                        out = strdup("{\"choices\": [");
                        if (!out)
                                die("%s", "out of memory");
                        out_len = strlen(out);
                } else
                        out_len /= 2;
                build_reply(c, r->status, hdrs, out, out_len, SIZE_MAX);
                break;
        case B_CLOSE_MID_BODY:
                build_reply(c, r->status, hdrs, out, out_len, out_len / 2);
                break;
        default:
                build_reply(c, r->status, hdrs, out, out_len, SIZE_MAX);
        }
        c->send_at_ms = now_ms() + r->delay_ms;
        c->state = S_WAIT;
}

/* Reads what is there; returns false when the connection is finished. */
static bool conn_read(Conn *c) {
        for (;;) {
                if (c->in_alloc - c->in_len < 4096) {
                        size_t want = c->in_alloc ? c->in_alloc * 2 : 8192;
                        char *n = realloc(c->in, want + 1);
                        if (!n)
                                return false;
                        c->in = n;
                        c->in_alloc = want;
                }
                ssize_t k = recv(c->fd, c->in + c->in_len, c->in_alloc - c->in_len, 0);
                if (k < 0)
                        return errno == EAGAIN || errno == EINTR;
                if (k == 0)
                        return false;
                if (c->state != S_READ)
                        continue;       /* hanging: discard */
                c->in_len += (size_t) k;
                c->in[c->in_len] = 0;

                if (c->head_len == 0) {
                        char *end = strstr(c->in, "\r\n\r\n");
                        if (!end) {
                                if (c->in_len > HEAD_MAX)
                                        return false;
                                continue;
                        }
                        c->head_len = (size_t) (end - c->in) + 4;
                        for (char *p = c->in; p < end; p++)
                                if (strncasecmp(p, "\r\ncontent-length:", 17) == 0)
                                        c->content_length = strtoul(p + 17, NULL, 10);
                        if (c->content_length > BODY_MAX) {
                                build_reply(c, 413, NULL, "", 0, SIZE_MAX);
                                c->state = S_WRITE;
                                return true;
                        }
                }
                if (c->in_len >= c->head_len + c->content_length) {
                        dispatch(c);
                        return true;
                }
        }
}

static bool conn_write(Conn *c) {
        while (c->out_pos < c->out_limit) {
                ssize_t k = send(c->fd, c->out + c->out_pos, c->out_limit - c->out_pos, MSG_NOSIGNAL);
                if (k < 0)
                        return errno == EAGAIN || errno == EINTR;
                c->out_pos += (size_t) k;
        }
        return false;   /* all sent (or the mid-body cut reached): close */
}

static void conn_free(Conn *c) {
        if (c->fd >= 0) {
                (void) shutdown(c->fd, SHUT_WR);
                close(c->fd);
        }
        free(c->in);
        free(c->out);
        free(c);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "script", required_argument, NULL, 's' },
                { "port", required_argument, NULL, 'p' },
                { "log", required_argument, NULL, 'l' },
                { "idle-timeout", required_argument, NULL, 'i' },
                {}
        };
        const char *script_path = NULL, *log_path = NULL;
        unsigned long port = 0, idle_sec = 60;
        Conn *conns[CONNS_MAX] = {};
        int o;

        while ((o = getopt_long(argc, argv, "", opts, NULL)) >= 0)
                switch (o) {
                case 's':
                        script_path = optarg;
                        break;
                case 'p':
                        port = strtoul(optarg, NULL, 10);
                        break;
                case 'l':
                        log_path = optarg;
                        break;
                case 'i':
                        idle_sec = strtoul(optarg, NULL, 10);
                        break;
                default:
                        fprintf(stderr, "usage: con-fake-llm --script FILE [--port N] [--log FILE] [--idle-timeout SEC]\n");
                        return 2;
                }
        if (!script_path || port > 65535) {
                fprintf(stderr, "usage: con-fake-llm --script FILE [--port N] [--log FILE] [--idle-timeout SEC]\n");
                return 2;
        }

        _cleanup_(cJSON_Deletep) cJSON *script = load_script(script_path);
        parse_rules(script, script_path);
        if (log_path) {
                log_file = fopen(log_path, "ae");
                if (!log_file)
                        die("cannot open log %s", log_path);
        }

        sigset_t block, orig;
        sigemptyset(&block);
        sigaddset(&block, SIGTERM);
        sigaddset(&block, SIGINT);
        sigprocmask(SIG_BLOCK, &block, &orig);
        struct sigaction sa = { .sa_handler = on_signal };
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigdelset(&orig, SIGTERM);
        sigdelset(&orig, SIGINT);

        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof(sin);
        if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(lfd, (struct sockaddr *) &sin, sizeof(sin)) < 0 || listen(lfd, 64) < 0 ||
            getsockname(lfd, (struct sockaddr *) &sin, &sl) < 0)
                die("cannot listen on 127.0.0.1: %s", strerror(errno));
        printf("%u\n", ntohs(sin.sin_port));
        fflush(stdout);

        uint64_t last_activity = now_ms();
        while (!terminate) {
                struct pollfd pfd[CONNS_MAX + 1];
                uint64_t now = now_ms(), deadline = idle_sec ? last_activity + idle_sec * 1000 : UINT64_MAX;
                size_t n = 1;

                pfd[0] = (struct pollfd) { .fd = lfd, .events = POLLIN };
                for (size_t i = 0; i < CONNS_MAX; i++) {
                        Conn *c = conns[i];
                        if (!c)
                                continue;
                        short ev = c->state == S_WRITE ? POLLOUT : c->state == S_WAIT ? 0 : POLLIN;
                        if (c->state == S_WAIT)
                                deadline = MIN(deadline, c->send_at_ms);
                        pfd[n++] = (struct pollfd) { .fd = c->fd, .events = ev };
                }
                struct timespec ts, *tsp = NULL;
                if (deadline != UINT64_MAX) {
                        uint64_t d = deadline > now ? deadline - now : 0;
                        ts = (struct timespec) { .tv_sec = (time_t) (d / 1000), .tv_nsec = (long) (d % 1000) * 1000000 };
                        tsp = &ts;
                }
                int k = ppoll(pfd, n, tsp, &orig);
                if (k < 0 && errno != EINTR)
                        die("poll failed: %s", strerror(errno));
                now = now_ms();
                if (k > 0)
                        last_activity = now;

                if (k > 0 && (pfd[0].revents & POLLIN))
                        for (;;) {
                                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                                if (fd < 0)
                                        break;
                                size_t slot;
                                for (slot = 0; slot < CONNS_MAX && conns[slot]; slot++)
                                        ;
                                Conn *c = slot < CONNS_MAX ? calloc(1, sizeof(Conn)) : NULL;
                                if (!c) {
                                        close(fd);
                                        continue;
                                }
                                c->fd = fd;
                                conns[slot] = c;
                        }

                size_t p = 1;
                for (size_t i = 0; i < CONNS_MAX && k > 0; i++) {
                        Conn *c = conns[i];
                        if (!c)
                                continue;
                        if (p >= n || pfd[p].fd != c->fd)
                                continue;       /* accepted during this round */
                        short re = pfd[p++].revents;
                        bool keep = true;
                        if (re & (POLLIN | POLLHUP | POLLERR))
                                keep = c->state == S_WRITE || c->state == S_WAIT ? !(re & POLLERR) : conn_read(c);
                        if (keep && c->state == S_WRITE && (re & POLLOUT))
                                keep = conn_write(c);
                        if (!keep) {
                                conn_free(c);
                                conns[i] = NULL;
                        }
                }
                for (size_t i = 0; i < CONNS_MAX; i++) {
                        Conn *c = conns[i];
                        if (c && c->state == S_WAIT && now >= c->send_at_ms) {
                                c->state = S_WRITE;
                                if (!conn_write(c)) {
                                        conn_free(c);
                                        conns[i] = NULL;
                                }
                        }
                }
                if (idle_sec && now >= last_activity + idle_sec * 1000)
                        break;
        }

        for (size_t i = 0; i < CONNS_MAX; i++)
                if (conns[i])
                        conn_free(conns[i]);
        close(lfd);
        if (log_file)
                fclose(log_file);
        free(rules);
        return 0;
}
