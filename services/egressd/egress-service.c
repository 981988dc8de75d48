/* SPDX-License-Identifier: MIT */
/* con-egressd's proxy (egress-service.h). One Conn per accepted connection:
 *
 *   HEAD ──(request head read; caller = the kernel's owner UID of the client socket)──┐
 *        refused (not an agent, not on its list, malformed): error answer, audit, close
 *   RESOLVING (a worker thread runs getaddrinfo; never the loop) → CONNECTING (non-blocking
 *   connect, next address on failure) → RELAY (both directions, 64 KiB each, EOF passed on as
 *   shutdown) → done: one audit record with the byte counts.
 *
 * The audit record waits for the agent's answer to "which task are you running" (CurrentTask,
 * asked on the bus without activating the agent, 1 s at most). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/capability.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>

#include "audit-writer.h"
#include "con-paths.h"
#include "config.h"
#include "egress-service.h"
#include "egress-util.h"
#include "env-file.h"
#include "error-detail.h"
#include "fileio.h"
#include "http.h"
#include "strv.h"
#include "log.h"
#include "json-util.h"
#include "macro.h"
#include "names.h"
#include "task.h"

#define BUF_SIZE (64U * 1024U)
#define TASK_QUERY_USEC (1000ULL * 1000ULL)
#define SERVICE_BODY_MAX (1024U * 1024U)               /* a request body to a credentialed service */
#define SERVICE_REPLY_MAX (8U * 1024U * 1024U)         /* its answer */
#define SERVICE_TIMEOUT_USEC (60ULL * 1000000ULL)
#define ENV_MAX (1024U * 1024U)

typedef struct EgressAgent {
        char *name;
        char *bus_name;
        uid_t uid;
        const ConNetwork *network;      /* in the config */
} EgressAgent;

/* The config and the agent users as read at start or by the last SIGHUP. A connection keeps the
 * one it was accepted under until it ends. */
typedef struct EgressPolicy {
        unsigned refs;
        ConConfig *config;
        EgressAgent *agents;
        size_t n_agents;
} EgressPolicy;

typedef struct Lookup {
        atomic_int refs;
        int efd;
        char host[EGRESS_HOST_MAX + 1];
        char port[8];
        struct addrinfo *res;
        int err;                        /* getaddrinfo's EAI_* */
} Lookup;

typedef enum ConnState {
        CONN_HEAD,
        CONN_RESOLVING,
        CONN_CONNECTING,
        CONN_RELAY,
        CONN_BODY,                      /* reading a request body for a credentialed service */
        CONN_UPSTREAM,                  /* its call is in flight (libcurl) */
        CONN_ANSWER,                    /* writing an error answer, then done */
        CONN_DONE,
} ConnState;

typedef struct Conn Conn;
struct Conn {
        Egress *g;
        Conn *prev, *next;
        ConnState state;
        int cfd, ufd;
        sd_event_source *cio, *uio, *timer, *lookup_io;
        Lookup *lookup;
        struct addrinfo *addr;          /* the next address to try (in lookup->res) */
        sd_bus_slot *task_slot;
        bool task_pending;
        char *task_id;

        EgressPolicy *policy;
        const EgressAgent *agent;       /* in policy */
        uid_t uid;
        bool uid_known;
        EgressRequest req;

        char in[BUF_SIZE];              /* client → upstream (the head first) */
        size_t in_len, in_off;
        char out[BUF_SIZE];             /* upstream → client */
        size_t out_len, out_off;
        bool client_eof, upstream_eof, client_shut, upstream_shut;
        uint64_t bytes_out, bytes_in;   /* to the upstream, from the upstream */

        const ConEgressService *service;/* a credentialed service's request */
        ConHttpSlot *slot;
        char *body;                     /* its request body */
        size_t body_len, body_want;
        char *reply;                    /* an answer longer than out: the service's */
        size_t reply_len;
        bool quiet;                     /* no request was made: no record */
        const char *decision;           /* "allowed", "denied", "failed" */
        char *reason;
        int status;                     /* the HTTP status answered */
};

struct Egress {
        sd_event *event;
        sd_bus *bus;
        char *config_path;
        EgressPolicy *policy;
        ConAuditWriter *audit;
        ConHttp *http;
        char **env;                     /* /etc/con/env (root at start, the keeper on SIGHUP): the secrets */
        char *env_path;
        /* The secrets keeper (started as root, secrets_keeper()): SIGHUP asks it for the key file
         * again. -EBADF when the service did not start as root: it reads the file itself. */
        int secrets_fd;
        pid_t secrets_pid;
        sd_event_source *secrets_io;
        char *secrets_buf;              /* the answer being read: status, length, text */
        size_t secrets_len;
        bool secrets_again;             /* another SIGHUP came while a request was out */
        int listen_fd, nl_fd;
        struct sockaddr_storage local;
        unsigned port;
        bool port_fixed;                /* --port: not the config's */
        sd_event_source *listen_io, *sighup;
        Conn *conns;
        unsigned n_conns;
};

/* ---- the policy ---- */

static EgressPolicy *policy_unref(EgressPolicy *p) {
        if (!p || --p->refs > 0)
                return NULL;
        for (size_t i = 0; i < p->n_agents; i++) {
                free(p->agents[i].name);
                free(p->agents[i].bus_name);
        }
        free(p->agents);
        con_config_free(p->config);
        free(p);
        return NULL;
}

static void policy_unrefp(EgressPolicy **p) {
        policy_unref(*p);
}

static EgressPolicy *policy_ref(EgressPolicy *p) {
        p->refs++;
        return p;
}

/* The config and, for each agent, its user's UID now (agents without a user yet are left out). */
static int policy_load(const char *path, EgressPolicy **ret) {
        _cleanup_(policy_unrefp) EgressPolicy *p = calloc(1, sizeof *p);
        ConErrorDetail err = {};
        int r;

        if (!p)
                return log_error_errno(-ENOMEM, "Out of memory");
        p->refs = 1;
        r = con_config_load(path, &p->config, &err);
        if (r < 0) {
                _cleanup_free_ char *m = con_error_detail_format(&err);
                con_error_detail_done(&err);
                return log_error_errno(r, "Invalid configuration: %s", m ?: "out of memory");
        }
        p->agents = calloc(p->config->n_agents + 1, sizeof *p->agents);
        if (!p->agents)
                return log_error_errno(-ENOMEM, "Out of memory");
        for (size_t i = 0; i < p->config->n_agents; i++) {
                const ConAgent *a = &p->config->agents[i];
                _cleanup_free_ char *user = NULL;
                r = con_agent_user(a->name, &user);
                if (r < 0)
                        return log_error_errno(r, "Invalid agent name %s: %m", a->name);
                struct passwd *pw = getpwnam(user);
                if (!pw) {
                        log_notice("Agent %s has no user %s yet (run con bootstrap); its requests are refused", a->name, user);
                        continue;
                }
                EgressAgent *e = &p->agents[p->n_agents];
                e->name = strdup(a->name);
                if (!e->name || con_agent_bus_name(a->name, &e->bus_name) < 0) {
                        free(e->name);
                        return log_error_errno(-ENOMEM, "Out of memory");
                }
                e->uid = pw->pw_uid;
                e->network = &a->rt.network;
                p->n_agents++;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

/* ---- resolver threads ---- */

static void lookup_unref(Lookup *l) {
        if (!l || atomic_fetch_sub(&l->refs, 1) != 1)
                return;
        if (l->res)
                freeaddrinfo(l->res);
        safe_close(l->efd);
        free(l);
}

static void *lookup_thread(void *p) {
        Lookup *l = p;
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
        l->err = getaddrinfo(l->host, l->port, &hints, &l->res);
        (void) eventfd_write(l->efd, 1);
        lookup_unref(l);
        return NULL;
}

static int lookup_start(const char *host, uint16_t port, Lookup **ret) {
        Lookup *l = calloc(1, sizeof *l);
        pthread_attr_t attr;
        pthread_t t;
        int r;

        if (!l)
                return -ENOMEM;
        atomic_init(&l->refs, 2);
        snprintf(l->host, sizeof l->host, "%s", host);
        snprintf(l->port, sizeof l->port, "%u", (unsigned) port);
        l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (l->efd < 0) {
                r = -errno;
                free(l);
                return r;
        }
        r = -pthread_attr_init(&attr);
        if (r == 0) {
                (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                (void) pthread_attr_setstacksize(&attr, 256 * 1024);
                r = -pthread_create(&t, &attr, lookup_thread, l);
                (void) pthread_attr_destroy(&attr);
        }
        if (r < 0) {
                safe_close(l->efd);
                free(l);
                return r;
        }
        *ret = l;
        return 0;
}

/* ---- connections ---- */

static void conn_free(Conn *c) {
        Egress *g = c->g;
        if (c->prev)
                c->prev->next = c->next;
        else
                g->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        g->n_conns--;
        sd_event_source_disable_unref(c->cio);
        sd_event_source_disable_unref(c->uio);
        sd_event_source_disable_unref(c->timer);
        sd_event_source_disable_unref(c->lookup_io);
        sd_bus_slot_unref(c->task_slot);
        lookup_unref(c->lookup);
        con_http_slot_free(c->slot);
        policy_unref(c->policy);
        free(c->body);
        free(c->reply);
        safe_close(c->cfd);
        safe_close(c->ufd);
        free(c->task_id);
        free(c->reason);
        free(c);
}

static void conn_audit(Conn *c) {
        Egress *g = c->g;
        _cleanup_(cJSON_Deletep) cJSON *f = cJSON_CreateObject();
        bool first = false;

        if (!f)
                return;
        if (c->agent)
                cJSON_AddStringToObject(f, "agent", c->agent->name);
        if (c->uid_known)
                cJSON_AddNumberToObject(f, "uid", (double) c->uid);
        if (c->task_id)
                cJSON_AddStringToObject(f, "task_id", c->task_id);
        if (c->req.method[0])
                cJSON_AddStringToObject(f, "method", c->req.method);
        if (c->req.host[0]) {
                cJSON_AddStringToObject(f, "host", c->req.host);
                cJSON_AddNumberToObject(f, "port", c->req.port);
        }
        cJSON_AddStringToObject(f, "via", c->service ? c->service->name : "proxy");
        cJSON_AddStringToObject(f, "decision", c->decision ?: "failed");
        if (c->reason)
                cJSON_AddStringToObject(f, "reason", c->reason);
        if (c->status)
                cJSON_AddNumberToObject(f, "status", c->status);
        cJSON_AddNumberToObject(f, "bytes_out", (double) c->bytes_out);
        cJSON_AddNumberToObject(f, "bytes_in", (double) c->bytes_in);
        int r = con_audit_writer_append(g->audit, "egress", "egress.request", f, &first);
        if (r < 0 && first)
                log_error_errno(r, "Cannot write the audit log: %m");
        log_debug("%s %s %s:%u for %s: %s (%" PRIu64 " out, %" PRIu64 " in)", c->decision ?: "failed", c->req.method,
                  c->req.host, (unsigned) c->req.port, c->agent ? c->agent->name : "?", strempty(c->reason),
                  c->bytes_out, c->bytes_in);
}

/* The connection is over: close both ends; the record waits for the task id if asked. */
static void conn_done(Conn *c) {
        c->state = CONN_DONE;
        c->cio = sd_event_source_disable_unref(c->cio);
        c->uio = sd_event_source_disable_unref(c->uio);
        c->timer = sd_event_source_disable_unref(c->timer);
        c->lookup_io = sd_event_source_disable_unref(c->lookup_io);
        c->slot = con_http_slot_free(c->slot);
        c->cfd = safe_close(c->cfd);
        c->ufd = safe_close(c->ufd);
        if (c->task_pending)
                return;
        if (!c->quiet)
                conn_audit(c);
        conn_free(c);
}

static int on_task_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Conn *c = userdata;
        const char *id = NULL;

        c->task_pending = false;
        c->task_slot = sd_bus_slot_unref(c->task_slot);
        if (!sd_bus_message_is_method_error(m, NULL) && sd_bus_message_read(m, "v", "s", &id) >= 0 && !isempty(id) &&
            con_task_id_valid(id))
                c->task_id = strdup(id);
        if (c->state == CONN_DONE)
                conn_done(c);
        return 0;
}

static void conn_ask_task(Conn *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        Egress *g = c->g;

        if (!g->bus || !c->agent)
                return;
        if (sd_bus_message_new_method_call(g->bus, &m, c->agent->bus_name, CON_AGENT_PATH,
                                           "org.freedesktop.DBus.Properties", "Get") < 0 ||
            sd_bus_message_append(m, "ss", CON_AGENT_INTERFACE, "CurrentTask") < 0 ||
            sd_bus_message_set_auto_start(m, false) < 0)
                return;
        if (sd_bus_call_async(g->bus, &c->task_slot, m, on_task_reply, c, TASK_QUERY_USEC) >= 0)
                c->task_pending = true;
}

static void conn_update_events(Conn *c);

/* An answer of the gateway's own (an error): queued on the client side, then the end. */
static void conn_answer(Conn *c, int status, const char *decision, const char *fmt, ...) _printf_(4, 5);
static void conn_answer(Conn *c, int status, const char *decision, const char *fmt, ...) {
        _cleanup_free_ char *body = NULL;
        va_list ap;
        int n;

        va_start(ap, fmt);
        if (vasprintf(&body, fmt, ap) < 0)
                body = NULL;
        va_end(ap);
        const char *text = status == 400 ? "Bad Request" : status == 403 ? "Forbidden" : status == 502 ? "Bad Gateway" :
                status == 503 ? "Service Unavailable" : status == 504 ? "Gateway Timeout" : status == 405 ?
                "Method Not Allowed" : status == 411 ? "Length Required" : status == 413 ? "Content Too Large" : "Error";
        free(c->reply);
        c->reply = NULL;
        c->slot = con_http_slot_free(c->slot);
        free(c->reason);
        c->reason = body ? strdup(body) : NULL;
        c->decision = decision;
        c->status = status;
        n = snprintf(c->out, sizeof c->out,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\nX-Con-Egress: %s\r\n\r\ncon-egressd: %s\n",
                     status, text, strlen("con-egressd: \n") + strlen(strempty(body)), decision, strempty(body));
        c->out_len = n > 0 && (size_t) n < sizeof c->out ? (size_t) n : 0;
        c->out_off = 0;
        c->in_len = c->in_off = 0;
        c->ufd = safe_close(c->ufd);
        c->uio = sd_event_source_disable_unref(c->uio);
        c->lookup_io = sd_event_source_disable_unref(c->lookup_io);
        c->state = CONN_ANSWER;
        conn_update_events(c);
}

static void conn_update_events(Conn *c) {
        uint32_t ce = 0, ue = 0;

        if (c->state == CONN_HEAD)
                ce = EPOLLIN;
        else if (c->state == CONN_ANSWER)
                ce = c->client_shut ? EPOLLIN : EPOLLOUT;
        else if (c->state == CONN_BODY)
                ce = EPOLLIN;
        else if (c->state == CONN_RELAY) {
                if (!c->client_eof && c->in_len == 0)
                        ce |= EPOLLIN;
                if (c->out_len > c->out_off)
                        ce |= EPOLLOUT;
                if (!c->upstream_eof && c->out_len == 0)
                        ue |= EPOLLIN;
                if (c->in_len > c->in_off)
                        ue |= EPOLLOUT;
        } else if (c->state == CONN_CONNECTING)
                ue = EPOLLOUT;
        if (c->cio) {
                (void) sd_event_source_set_io_events(c->cio, ce);
                (void) sd_event_source_set_enabled(c->cio, ce ? SD_EVENT_ON : SD_EVENT_OFF);
        }
        if (c->uio) {
                (void) sd_event_source_set_io_events(c->uio, ue);
                (void) sd_event_source_set_enabled(c->uio, ue ? SD_EVENT_ON : SD_EVENT_OFF);
        }
}

static int on_upstream_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);
static void conn_connect_next(Conn *c);

static void conn_relay_step(Conn *c) {
        ssize_t k;

        /* client → upstream */
        if (!c->client_eof && c->in_len == 0) {
                k = read(c->cfd, c->in, sizeof c->in);
                if (k > 0)
                        c->in_len = (size_t) k, c->in_off = 0;
                else if (k == 0 || (errno != EAGAIN && errno != EINTR))
                        c->client_eof = true;
        }
        while (c->in_len > c->in_off) {
                k = send(c->ufd, c->in + c->in_off, c->in_len - c->in_off, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        c->upstream_eof = c->client_eof = true;
                        c->in_len = c->in_off = 0;
                        break;
                }
                c->in_off += (size_t) k;
                c->bytes_out += (uint64_t) k;
        }
        if (c->in_off == c->in_len)
                c->in_len = c->in_off = 0;
        /* upstream → client */
        if (!c->upstream_eof && c->out_len == 0) {
                k = read(c->ufd, c->out, sizeof c->out);
                if (k > 0) {
                        c->out_len = (size_t) k, c->out_off = 0;
                        c->bytes_in += (uint64_t) k;
                } else if (k == 0 || (errno != EAGAIN && errno != EINTR))
                        c->upstream_eof = true;
        }
        while (c->out_len > c->out_off) {
                k = send(c->cfd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        c->upstream_eof = c->client_eof = true;
                        c->out_len = c->out_off = 0;
                        break;
                }
                c->out_off += (size_t) k;
        }
        if (c->out_off == c->out_len)
                c->out_len = c->out_off = 0;

        /* An end seen on one side is passed on once what came before it is delivered. */
        if (c->client_eof && c->in_len == 0 && !c->upstream_shut) {
                (void) shutdown(c->ufd, SHUT_WR);
                c->upstream_shut = true;
        }
        if (c->upstream_eof && c->out_len == 0 && !c->client_shut) {
                (void) shutdown(c->cfd, SHUT_WR);
                c->client_shut = true;
        }
        if (c->client_shut && c->upstream_shut) {
                conn_done(c);
                return;
        }
        conn_update_events(c);
}

/* The answer, then the end of our side; what the client still sends is read and dropped until
 * it closes (closing with unread bytes would reset the connection and lose the answer). */
static void conn_answer_step(Conn *c) {
        char sink[4096];
        ssize_t k;

        const char *ans = c->reply ?: c->out;
        size_t ans_len = c->reply ? c->reply_len : c->out_len;
        while (!c->client_shut && ans_len > c->out_off) {
                k = send(c->cfd, ans + c->out_off, ans_len - c->out_off, MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return;
                        conn_done(c);
                        return;
                }
                c->out_off += (size_t) k;
        }
        if (!c->client_shut) {
                (void) shutdown(c->cfd, SHUT_WR);
                c->client_shut = true;
                c->out_len = c->out_off = 0;
                (void) sd_event_source_set_io_events(c->cio, EPOLLIN);
        }
        while ((k = read(c->cfd, sink, sizeof sink)) > 0)
                ;
        if (k == 0 || (errno != EAGAIN && errno != EINTR))
                conn_done(c);
}

/* Connected: the tunnel's "200" or the rewritten plain-HTTP head, then relay. */
static void conn_connected(Conn *c) {
        c->state = CONN_RELAY;
        c->decision = "allowed";
        c->timer = sd_event_source_disable_unref(c->timer);
        (void) setsockopt(c->ufd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
        size_t rest = c->in_len - c->req.head_len;      /* bytes the client sent after the head */
        if (c->req.form == EGRESS_FORM_CONNECT) {
                static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
                memcpy(c->out, ok, sizeof ok - 1);
                c->out_len = sizeof ok - 1;
                c->out_off = 0;
                c->status = 200;
                memmove(c->in, c->in + c->req.head_len, rest);
                c->in_len = rest;
        } else {
                _cleanup_free_ char *head = NULL;
                size_t hl;
                int r = egress_rewrite_request(c->in, &c->req, &head, &hl);
                if (r < 0 || hl + rest > sizeof c->in) {
                        conn_answer(c, 400, "failed", "the request cannot be passed on (%s)",
                                    r < 0 ? strerror(-r) : "head too long");
                        return;
                }
                memmove(c->in + hl, c->in + c->req.head_len, rest);
                memcpy(c->in, head, hl);
                c->in_len = hl + rest;
        }
        c->in_off = 0;
        conn_relay_step(c);
}

static int on_connect_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Conn *c = userdata;
        if (c->state == CONN_CONNECTING || c->state == CONN_RESOLVING)
                conn_answer(c, 504, "failed", "%s:%u did not answer within %llu s", c->req.host, (unsigned) c->req.port,
                            EGRESS_CONNECT_TIMEOUT_USEC / 1000000ULL);
        else {
                if (c->state == CONN_HEAD || c->state == CONN_BODY) {
                        c->quiet = c->state == CONN_HEAD && c->in_len == 0;
                        free(c->reason);
                        c->reason = strdup("no whole request within 10 s");
                }
                conn_done(c);
        }
        return 0;
}

static void conn_connect_next(Conn *c) {
        Egress *g = c->g;
        int last = 0;

        for (; c->addr; c->addr = c->addr->ai_next) {
                struct addrinfo *a = c->addr;
                const void *ip = a->ai_family == AF_INET ? (const void *) &((struct sockaddr_in *) a->ai_addr)->sin_addr :
                        a->ai_family == AF_INET6 ? (const void *) &((struct sockaddr_in6 *) a->ai_addr)->sin6_addr : NULL;
                if (!ip)
                        continue;
                /* A name on the list that points at this host (or link-local, multicast) is not
                 * followed there unless an address entry names that address. */
                if (egress_addr_is_local(a->ai_family, ip) &&
                    !egress_addr_allowed(c->agent->network, a->ai_family, ip, c->req.port)) {
                        last = -EADDRNOTAVAIL;
                        continue;
                }
                c->ufd = safe_close(c->ufd);
                c->uio = sd_event_source_disable_unref(c->uio);
                c->ufd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (c->ufd < 0) {
                        last = -errno;
                        continue;
                }
                if (connect(c->ufd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
                        last = -errno;
                        continue;
                }
                if (sd_event_add_io(g->event, &c->uio, c->ufd, EPOLLOUT, on_upstream_io, c) < 0) {
                        last = -ENOMEM;
                        continue;
                }
                c->addr = a->ai_next;
                c->state = CONN_CONNECTING;
                conn_update_events(c);
                return;
        }
        if (last == -EADDRNOTAVAIL)
                conn_answer(c, 403, "denied", "%s resolves to a local address, which agent %s may not reach",
                            c->req.host, c->agent->name);
        else
                conn_answer(c, 502, "failed", "cannot connect to %s:%u: %s", c->req.host, (unsigned) c->req.port,
                            strerror(last ? -last : ENETUNREACH));
}

static int on_upstream_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Conn *c = userdata;

        if (c->state == CONN_CONNECTING) {
                int err = 0;
                socklen_t l = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
                        err = errno;
                if (err == 0) {
                        conn_connected(c);
                        return 0;
                }
                if (!c->addr) {
                        conn_answer(c, 502, "failed", "cannot connect to %s:%u: %s", c->req.host, (unsigned) c->req.port,
                                    strerror(err));
                        return 0;
                }
                conn_connect_next(c);
                return 0;
        }
        if (c->state == CONN_RELAY)
                conn_relay_step(c);
        return 0;
}

static int on_lookup(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Conn *c = userdata;
        Lookup *l = c->lookup;

        c->lookup_io = sd_event_source_disable_unref(c->lookup_io);
        if (l->err != 0 || !l->res) {
                conn_answer(c, 502, "failed", "cannot resolve %s: %s", c->req.host,
                            l->err == EAI_SYSTEM ? strerror(errno) : gai_strerror(l->err));
                return 0;
        }
        c->addr = l->res;
        conn_connect_next(c);
        return 0;
}

/* ---- credentialed services ---- */

static void on_service_done(ConHttpSlot *slot, int r, ConHttpResponse *resp, void *userdata) {
        Conn *c = userdata;
        _cleanup_free_ char *head = NULL;
        FILE *f;
        size_t hl = 0;

        c->slot = con_http_slot_free(c->slot);
        if (r < 0) {
                conn_answer(c, r == -ETIMEDOUT ? 504 : 502, "failed", "the service %s did not answer: %s", c->service->name,
                            resp->error ?: strerror(-r));
                return;
        }
        const char *ct = con_http_response_header(resp, "Content-Type");
        f = open_memstream(&head, &hl);
        if (!f) {
                conn_answer(c, 503, "failed", "out of memory");
                return;
        }
        fprintf(f, "HTTP/1.1 %ld %s\r\n", resp->status, resp->status < 400 ? "OK" : "Error");
        if (ct && !strpbrk(ct, "\r\n"))
                fprintf(f, "Content-Type: %s\r\n", ct);
        fprintf(f, "Content-Length: %zu\r\nConnection: close\r\nX-Con-Egress: service %s\r\n\r\n", resp->body_size,
                c->service->name);
        if (fclose(f) != 0 || !head) {
                conn_answer(c, 503, "failed", "out of memory");
                return;
        }
        c->reply = malloc(hl + resp->body_size);
        if (!c->reply) {
                conn_answer(c, 503, "failed", "out of memory");
                return;
        }
        memcpy(c->reply, head, hl);
        memcpy(c->reply + hl, resp->body, resp->body_size);
        c->reply_len = hl + resp->body_size;
        c->out_off = 0;
        c->bytes_in = resp->body_size;
        c->status = (int) resp->status;
        c->decision = "allowed";
        c->state = CONN_ANSWER;
        conn_update_events(c);
}

static void conn_service_call(Conn *c) {
        Egress *g = c->g;
        _cleanup_strv_free_ char **headers = NULL;
        _cleanup_free_ char *url = NULL;
        char *h = NULL, v[1024];
        const char *rest;
        size_t rest_len;
        char name[72];
        int r;

        (void) egress_service_split(&c->req, name, sizeof name, &rest, &rest_len);
        const char *secret = con_env_get(g->env, c->service->secret);
        if (!secret) {
                conn_answer(c, 503, "failed", "the service %s has no secret: %s is not set in %s", c->service->name,
                            c->service->secret, CON_ENV_PATH);
                return;
        }
        if (asprintf(&url, "%s%s%.*s", c->service->base_url, rest_len > 0 && rest[0] == '/' ? "" : "/", (int) rest_len,
                     rest) < 0 ||
            asprintf(&h, "%s: %s%s", c->service->header, strempty(c->service->prefix), secret) < 0 ||
            strv_consume(&headers, h) < 0) {
                conn_answer(c, 503, "failed", "out of memory");
                return;
        }
        /* The client's own headers stay here but for these two. */
        static const char * const pass[] = { "Accept", "Content-Type" };
        for (size_t i = 0; i < ELEMENTSOF(pass); i++) {
                const char *n = pass[i];
                if (egress_header_value(c->in, &c->req, n, v, sizeof v) == 1 && strv_extendf(&headers, "%s: %s", n, v) < 0) {
                        conn_answer(c, 503, "failed", "out of memory");
                        return;
                }
        }
        bool post = streq(c->req.method, "POST");
        c->bytes_out = c->body_len;
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);     /* curl's own timeout rules */
        c->state = CONN_UPSTREAM;
        conn_update_events(c);
        r = con_http_request(g->http, url, headers, post ? (c->body ?: "") : NULL, c->body_len, SERVICE_TIMEOUT_USEC,
                             SERVICE_REPLY_MAX, on_service_done, c, &c->slot);
        if (r < 0)
                conn_answer(c, 502, "failed", "cannot call the service %s: %s", c->service->name, strerror(-r));
}

static void conn_body_step(Conn *c) {
        while (c->body_len < c->body_want) {
                ssize_t k = read(c->cfd, c->body + c->body_len, c->body_want - c->body_len);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return;
                        conn_done(c);
                        return;
                }
                if (k == 0) {
                        free(c->reason);
                        c->reason = strdup("the client closed the connection before the whole body");
                        conn_done(c);
                        return;
                }
                c->body_len += (size_t) k;
        }
        conn_service_call(c);
}

/* GET or POST /<service>/rest: the agent must be named by the service; the body is read whole. */
static void conn_service(Conn *c) {
        const char *rest;
        size_t rest_len;
        char name[72], v[32];
        int r;

        if (egress_service_split(&c->req, name, sizeof name, &rest, &rest_len) < 0) {
                conn_answer(c, 400, "failed", "%s %.*s: not a proxy request (use CONNECT host:port, an http:// URL, or "
                            "/SERVICE/PATH for a credentialed service)", c->req.method,
                            (int) (c->req.target_len > 200 ? 200 : c->req.target_len), c->req.target);
                return;
        }
        c->service = con_config_egress_service(c->policy->config, c->agent->name, name);
        if (!c->service) {
                /* Recorded under the name asked for. */
                snprintf(c->req.host, sizeof c->req.host, "%s", name);
                c->req.port = 0;
                conn_answer(c, 403, "denied", "agent %s may not use the service %s (egress.services.%s.agents; docs/NETWORK.md)",
                            c->agent->name, name, name);
                return;
        }
        /* The audit names the service's host. */
        const char *hs = strstr(c->service->base_url, "://") + 3;
        size_t hn = strcspn(hs, ":/");
        snprintf(c->req.host, sizeof c->req.host, "%.*s", (int) hn, hs);
        c->req.port = hs[hn] == ':' ? (uint16_t) atoi(hs + hn + 1) : strncmp(c->service->base_url, "https", 5) == 0 ? 443 : 80;
        if (!streq(c->req.method, "GET") && !streq(c->req.method, "POST")) {
                conn_answer(c, 405, "failed", "the service endpoint takes GET and POST only, not %s", c->req.method);
                return;
        }
        if (egress_header_value(c->in, &c->req, "Transfer-Encoding", v, sizeof v) != 0) {
                conn_answer(c, 411, "failed", "send the body with a Content-Length, not chunked");
                return;
        }
        r = egress_header_value(c->in, &c->req, "Content-Length", v, sizeof v);
        if (r == 1) {
                char *end;
                errno = 0;
                unsigned long long n = strtoull(v, &end, 10);
                if (errno || *end || end == v || v[0] == '-') {
                        conn_answer(c, 400, "failed", "invalid Content-Length");
                        return;
                }
                if (n > SERVICE_BODY_MAX) {
                        conn_answer(c, 413, "failed", "the body is larger than %u bytes", SERVICE_BODY_MAX);
                        return;
                }
                c->body_want = (size_t) n;
        }
        c->body = malloc(c->body_want + 1);
        if (!c->body) {
                conn_answer(c, 503, "failed", "out of memory");
                return;
        }
        size_t have = c->in_len - c->req.head_len;
        if (have > c->body_want)
                have = c->body_want;
        memcpy(c->body, c->in + c->req.head_len, have);
        c->body_len = have;
        c->state = CONN_BODY;
        (void) sd_event_source_set_time_relative(c->timer, EGRESS_HEAD_TIMEOUT_USEC);
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        conn_update_events(c);
        conn_body_step(c);
}

/* The head is complete: who is asking, and may they? */
static void conn_decide(Conn *c) {
        Egress *g = c->g;
        uint8_t ip[16];
        int family = 0;
        int r;

        if (!c->agent) {
                conn_answer(c, 403, "denied", "UID %u is not an agent of this system; the egress gateway serves agents only",
                            (unsigned) c->uid);
                return;
        }
        if (c->req.form == EGRESS_FORM_ORIGIN) {
                conn_service(c);
                return;
        }
        if (inet_pton(AF_INET, c->req.host, ip) == 1)
                family = AF_INET;
        else if (inet_pton(AF_INET6, c->req.host, ip) == 1)
                family = AF_INET6;
        bool ok = family ? egress_addr_allowed(c->agent->network, family, ip, c->req.port) :
                egress_host_allowed(c->agent->network, c->req.host, c->req.port);
        if (!ok) {
                conn_answer(c, 403, "denied", "agent %s may not reach %s%s%s:%u (not on its network allow-list; docs/NETWORK.md)",
                            c->agent->name, family == AF_INET6 ? "[" : "", c->req.host, family == AF_INET6 ? "]" : "",
                            (unsigned) c->req.port);
                return;
        }
        c->state = CONN_RESOLVING;
        (void) sd_event_source_set_enabled(c->cio, SD_EVENT_OFF);
        (void) sd_event_source_set_time_relative(c->timer, EGRESS_CONNECT_TIMEOUT_USEC);
        (void) sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        if (family) {
                /* An address: no resolver, straight to connect. */
                struct addrinfo hints = { .ai_family = family, .ai_socktype = SOCK_STREAM,
                                          .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
                char port[8];
                Lookup *l = calloc(1, sizeof *l);
                if (!l) {
                        conn_answer(c, 503, "failed", "out of memory");
                        return;
                }
                atomic_init(&l->refs, 1);
                l->efd = -EBADF;
                snprintf(port, sizeof port, "%u", (unsigned) c->req.port);
                l->err = getaddrinfo(c->req.host, port, &hints, &l->res);
                c->lookup = l;
                if (l->err != 0) {
                        conn_answer(c, 502, "failed", "invalid address %s", c->req.host);
                        return;
                }
                c->addr = l->res;
                conn_connect_next(c);
                return;
        }
        r = lookup_start(c->req.host, c->req.port, &c->lookup);
        if (r >= 0)
                r = sd_event_add_io(g->event, &c->lookup_io, c->lookup->efd, EPOLLIN, on_lookup, c);
        if (r < 0)
                conn_answer(c, 503, "failed", "cannot resolve %s now: %s", c->req.host, strerror(-r));
}

static void conn_head_step(Conn *c) {
        const char *problem = NULL;

        for (;;) {
                ssize_t k = read(c->cfd, c->in + c->in_len, sizeof c->in - c->in_len);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        conn_done(c);
                        return;
                }
                if (k == 0) {
                        /* Gone before a whole request: nothing was asked, nothing to record. */
                        c->task_pending = false;
                        c->task_slot = sd_bus_slot_unref(c->task_slot);
                        c->quiet = c->in_len == 0;
                        c->decision = "failed";
                        free(c->reason);
                        c->reason = strdup("the client closed the connection before a whole request");
                        conn_done(c);
                        return;
                }
                c->in_len += (size_t) k;
                int r = egress_parse_request(c->in, c->in_len, &c->req, &problem);
                if (r == 0)
                        continue;
                if (r == -E2BIG) {
                        conn_answer(c, 400, "failed", "the request head is longer than %u bytes or has more than %u headers",
                                    EGRESS_HEAD_MAX, EGRESS_HEADERS_MAX);
                        return;
                }
                if (r < 0) {
                        c->req = (EgressRequest) {};
                        conn_answer(c, 400, "failed", "the request %s", problem ?: "is malformed");
                        return;
                }
                conn_decide(c);
                return;
        }
}

static int on_client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Conn *c = userdata;

        switch (c->state) {
        case CONN_HEAD:
                conn_head_step(c);
                break;
        case CONN_RELAY:
                conn_relay_step(c);
                break;
        case CONN_BODY:
                conn_body_step(c);
                break;
        case CONN_ANSWER:
                conn_answer_step(c);
                break;
        default:
                break;
        }
        return 0;
}

static const EgressAgent *agent_by_uid(const EgressPolicy *p, uid_t uid) {
        for (size_t i = 0; i < p->n_agents; i++)
                if (p->agents[i].uid == uid)
                        return &p->agents[i];
        return NULL;
}

static void conn_accepted(Egress *g, int fd) {
        struct sockaddr_storage peer, local;
        socklen_t pl = sizeof peer, ll = sizeof local;
        Conn *c = calloc(1, sizeof *c);
        int r;

        if (!c) {
                safe_close(fd);
                return;
        }
        c->g = g;
        c->policy = policy_ref(g->policy);
        c->cfd = fd;
        c->ufd = -EBADF;
        c->next = g->conns;
        if (g->conns)
                g->conns->prev = c;
        g->conns = c;
        g->n_conns++;

        r = sd_event_add_io(g->event, &c->cio, fd, EPOLLIN, on_client_io, c);
        if (r >= 0)
                r = sd_event_add_time_relative(g->event, &c->timer, CLOCK_MONOTONIC, EGRESS_HEAD_TIMEOUT_USEC, 0,
                                               on_connect_timeout, c);
        if (r < 0) {
                conn_done(c);
                return;
        }
        /* Who: the kernel's owner of the other end (the client's socket), never what it says. */
        if (getpeername(fd, (struct sockaddr *) &peer, &pl) < 0 || getsockname(fd, (struct sockaddr *) &local, &ll) < 0)
                r = -errno;
        else
                r = egress_socket_uid(g->nl_fd, &peer, &local, &c->uid);
        if (r < 0) {
                log_warning_errno(r, "Cannot learn who opened a connection: %m");
                conn_answer(c, 403, "denied", "the caller could not be identified by the kernel (%s)", strerror(-r));
                return;
        }
        c->uid_known = true;
        c->agent = agent_by_uid(c->policy, c->uid);
        conn_ask_task(c);
        if (g->n_conns > EGRESS_CONNS_MAX) {
                conn_answer(c, 503, "failed", "too many connections (%u); try again", EGRESS_CONNS_MAX);
                return;
        }
}

static int on_listen(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Egress *g = userdata;

        for (unsigned i = 0; i < 64; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(-errno, "accept failed: %m");
                        break;
                }
                (void) setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
                conn_accepted(g, cfd);
        }
        return 0;
}

/* ---- setup ---- */

/* ---- the services' secrets ---- */

/* The secrets keeper: a child forked while the service is still root, before anything else is
 * opened, that keeps uid 0 (the key file is root:con-models 0640: its owner reads it) and nothing
 * else: no capability (capset to empty), no_new_privs, no other descriptor, dies with its parent.
 * It ignores SIGHUP: `systemctl kill -s HUP con-egressd` signals every process of the unit, and the
 * gateway's reload must still find its keeper. For each byte on its socket it reads the key file and answers: int32 status (0 or -errno),
 * uint32 length, the text. It never parses, logs or keeps anything. Never returns. */
_Noreturn static void secrets_keeper(int fd, const char *path) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[2] = {};
        char c;

        /* Its own name: `pgrep -x con-egressd` (docs/NETWORK.md) finds the gateway alone. */
        (void) prctl(PR_SET_NAME, "con-egress-keys");
        if (signal(SIGHUP, SIG_IGN) == SIG_ERR || prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() == 1 || dup2(fd, 3) < 0 ||
            close_range(4, ~0U, 0) < 0 || syscall(SYS_capset, &h, d) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
                _exit(EXIT_FAILURE);
        while (read(3, &c, 1) == 1) {
                _cleanup_free_ char *text = NULL;
                size_t len = 0;
                int r = read_file_nofollow(path, ENV_MAX, &text, &len);
                int32_t status = r < 0 ? r : 0;
                uint32_t n = r < 0 ? 0 : (uint32_t) len;
                bool ok = con_write_all(3, &status, sizeof status) >= 0 && con_write_all(3, &n, sizeof n) >= 0 &&
                          (n == 0 || con_write_all(3, text, n) >= 0);
                if (text)
                        explicit_bzero(text, len);
                if (!ok)
                        break;
        }
        _exit(EXIT_SUCCESS);
}

/* Only the variables that egress.services name stay in this process (the key file holds the model
 * providers' keys too, which this gateway never needs). Returns how many were kept. */
static size_t secrets_keep(Egress *g, char **env) {
        const ConEgressConfig *e = &g->policy->config->egress;
        _cleanup_free_ const char **names = e->n_services > 0 ? calloc(e->n_services, sizeof(char *)) : NULL;

        if (!names) {
                con_env_keep(env, NULL, 0);
                return 0;
        }
        for (size_t i = 0; i < e->n_services; i++)
                names[i] = e->services[i].secret;
        return con_env_keep(env, names, e->n_services);
}

static void secrets_use(Egress *g, int status, const char *text, size_t len) {
        char **env = NULL;
        unsigned bad = 0;
        int r = status;

        if (r == -ENOENT)
                r = 0;          /* no key file: no secrets, as at start */
        else if (r >= 0)
                r = con_env_parse(text, len, &env, &bad);
        if (r < 0) {
                if (bad > 0)
                        log_error("%s:%u: not NAME=value; keeping the previous secrets", g->env_path, bad);
                else
                        log_error_errno(r, "Cannot read %s again: %m; keeping the previous secrets", g->env_path);
                /* ... but only those the services (as now configured) name. */
                (void) secrets_keep(g, g->env);
                return;
        }
        size_t n = strv_length(env);
        size_t kept = secrets_keep(g, env);
        con_env_free(g->env);
        g->env = env;
        log_info("Reloaded the services' secrets from %s (%zu variable%s); kept %zu, those egress.services name",
                 g->env_path, n, n == 1 ? "" : "s", kept);
}

static int secrets_request(Egress *g);

static int on_secrets(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Egress *g = userdata;
        char buf[4096];

        for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        return 0;
                if (n <= 0 || g->secrets_len + (size_t) n > 8 + ENV_MAX) {
                        log_error("The secrets keeper is gone; secrets are reloaded only by a restart now");
                        g->secrets_io = sd_event_source_disable_unref(g->secrets_io);
                        g->secrets_fd = safe_close(g->secrets_fd);
                        return 0;
                }
                char *b = realloc(g->secrets_buf, g->secrets_len + (size_t) n);
                if (!b) {
                        explicit_bzero(buf, sizeof buf);
                        return log_error_errno(-ENOMEM, "Out of memory");
                }
                /* realloc may have left the old copy behind: the keeper's answers are small and
                 * this process is not dumpable. */
                g->secrets_buf = b;
                memcpy(g->secrets_buf + g->secrets_len, buf, (size_t) n);
                g->secrets_len += (size_t) n;
                explicit_bzero(buf, sizeof buf);
                int32_t status;
                uint32_t len;
                if (g->secrets_len < 8)
                        continue;
                memcpy(&status, g->secrets_buf, 4);
                memcpy(&len, g->secrets_buf + 4, 4);
                if (g->secrets_len < 8 + (size_t) len)
                        continue;
                secrets_use(g, status, g->secrets_buf + 8, len);
                explicit_bzero(g->secrets_buf, g->secrets_len);
                free(g->secrets_buf);
                g->secrets_buf = NULL;
                g->secrets_len = 0;
                (void) sd_event_source_set_enabled(g->secrets_io, SD_EVENT_OFF);
                if (g->secrets_again) {
                        g->secrets_again = false;
                        (void) secrets_request(g);
                }
                return 0;
        }
}

/* The key file again: through the keeper when the service started as root (it no longer is),
 * else read here with the same rights as at start. */
static int secrets_request(Egress *g) {
        if (g->secrets_fd < 0) {
                _cleanup_free_ char *text = NULL;
                size_t len = 0;
                int r = read_file_nofollow(g->env_path, ENV_MAX, &text, &len);
                secrets_use(g, r < 0 ? r : 0, text, len);
                if (text)
                        explicit_bzero(text, len);
                return 0;
        }
        if (sd_event_source_get_enabled(g->secrets_io, NULL) > 0) {
                g->secrets_again = true;
                return 0;
        }
        if (write(g->secrets_fd, "r", 1) != 1)
                return log_error_errno(-errno, "Cannot ask the secrets keeper: %m");
        return sd_event_source_set_enabled(g->secrets_io, SD_EVENT_ON);
}

static int listen_on(unsigned port, int *ret_fd) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        _cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int) { 1 }, sizeof(int));
        if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(fd, 128) < 0)
                return negative_errno();
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* A new egress.port: listen there (as con-egress: a port from 1024 up), then stop listening on the
 * old one. Connections in flight are not touched. */
static void move_port(Egress *g, unsigned port) {
        _cleanup_(sd_event_source_disable_unrefp) sd_event_source *io = NULL;
        _cleanup_close_ int fd = -EBADF;
        int r = listen_on(port, &fd);
        if (r >= 0)
                r = sd_event_add_io(g->event, &io, fd, EPOLLIN, on_listen, g);
        if (r < 0) {
                log_error_errno(r, "egress.port is now %u but listening there failed: %m; still on %u", port, g->port);
                return;
        }
        sd_event_source_disable_unref(g->listen_io);
        safe_close(g->listen_fd);
        g->listen_io = TAKE_PTR(io);
        g->listen_fd = TAKE_FD(fd);
        log_notice("Listening on 127.0.0.1 port %u now (was %u)", port, g->port);
        g->port = port;
}

/* SIGHUP: the config and the agent users again (a new agent, a changed allow-list or service),
 * the services' secrets (through the keeper) and egress.port (a new listening socket);
 * connections in flight keep the policy they started under. */
static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Egress *g = userdata;
        EgressPolicy *p = NULL;

        if (policy_load(g->config_path, &p) < 0) {
                log_error("Reload failed; keeping the previous configuration");
                return 0;
        }
        if (!g->port_fixed && p->config->egress.port != g->port)
                move_port(g, p->config->egress.port);
        if (p->config->egress.n_services > 0 && !g->http && con_http_new(g->event, &g->http) < 0)
                log_error("Cannot set up HTTP for the credentialed services");
        policy_unref(g->policy);
        g->policy = p;
        log_info("Reloaded: %zu agent%s", p->n_agents, p->n_agents == 1 ? "" : "s");
        if (p->config->egress.n_services > 0) {
                /* A service removed takes its secret with it now, whatever the key file says. */
                (void) secrets_keep(g, g->env);
                (void) secrets_request(g);
        } else {
                /* No service: no secret in this process (an answer still on its way is filtered
                 * by the same rule, secrets_keep()). */
                g->secrets_again = false;
                if (g->env)
                        log_info("No egress.services any more: the services' secrets are dropped");
                g->env = con_env_free(g->env);
        }
        return 0;
}

int egress_new(const EgressOptions *o, sd_event *e, Egress **ret) {
        _cleanup_(egress_freep) Egress *g = calloc(1, sizeof *g);
        int r;

        if (!g)
                return log_error_errno(-ENOMEM, "Out of memory");
        g->listen_fd = g->nl_fd = g->secrets_fd = -EBADF;
        g->event = sd_event_ref(e);
        g->config_path = strdup(o->config_path ?: CON_CONFIG_PATH);
        g->env_path = strdup(o->env_path ?: CON_ENV_PATH);
        if (!g->config_path || !g->env_path)
                return log_error_errno(-ENOMEM, "Out of memory");
        if (geteuid() == 0) {
                /* Before anything else is opened: the keeper inherits nothing it does not need. */
                int sv[2];
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                        return log_error_errno(-errno, "Cannot create the secrets keeper's socket: %m");
                pid_t pid = fork();
                if (pid < 0) {
                        r = -errno;
                        safe_close(sv[0]);
                        safe_close(sv[1]);
                        return log_error_errno(r, "Cannot start the secrets keeper: %m");
                }
                if (pid == 0) {
                        safe_close(sv[0]);
                        secrets_keeper(sv[1], g->env_path);
                }
                safe_close(sv[1]);
                g->secrets_fd = sv[0];
                g->secrets_pid = pid;
                (void) fcntl(g->secrets_fd, F_SETFL, O_NONBLOCK);
                r = sd_event_add_io(e, &g->secrets_io, g->secrets_fd, EPOLLIN, on_secrets, g);
                if (r >= 0)
                        r = sd_event_source_set_enabled(g->secrets_io, SD_EVENT_OFF);
                if (r < 0)
                        return log_error_errno(r, "Cannot watch the secrets keeper: %m");
        }
        r = policy_load(g->config_path, &g->policy);
        if (r < 0)
                return r;
        r = con_audit_writer_new(e, o->audit_dir, &g->audit);
        if (r < 0)
                return log_error_errno(r, "Cannot open the audit log in %s: %m", o->audit_dir ?: CON_AUDIT_DIR_DEFAULT);
        if (g->policy->config->egress.n_services > 0) {
                /* The services' secrets live with the model keys (root:con-models 0640); read while
                 * still root, kept in this process only (not dumpable), never written anywhere. */
                _cleanup_free_ char *text = NULL;
                size_t len = 0;
                unsigned bad = 0;
                r = read_file_nofollow(g->env_path, ENV_MAX, &text, &len);
                if (r < 0 && r != -ENOENT)
                        return log_error_errno(r, "Cannot read %s: %m", g->env_path);
                if (r >= 0) {
                        r = con_env_parse(text, len, &g->env, &bad);
                        explicit_bzero(text, len);
                        if (r < 0)
                                return log_error_errno(r, "%s:%u: not NAME=value", g->env_path, bad);
                        (void) secrets_keep(g, g->env);
                }
                r = con_http_new(e, &g->http);
                if (r < 0)
                        return log_error_errno(r, "Cannot set up HTTP: %m");
        }
        g->nl_fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (g->nl_fd < 0)
                return log_error_errno(-errno, "Cannot open the kernel's socket diagnosis (NETLINK_SOCK_DIAG): %m");

        g->port = o->port ?: g->policy->config->egress.port;
        g->port_fixed = o->port != 0;
        r = listen_on(g->port, &g->listen_fd);
        if (r < 0)
                return log_error_errno(r, "Cannot listen on 127.0.0.1 port %u: %m", g->port);
        *ret = TAKE_PTR(g);
        return 0;
}

int egress_start(Egress *g, sd_bus *bus) {
        int r;

        sigset_t ss;

        g->bus = bus ? sd_bus_ref(bus) : NULL;
        /* Blocked before any resolver thread exists, so they all inherit it. */
        sigemptyset(&ss);
        sigaddset(&ss, SIGHUP);
        (void) sigprocmask(SIG_BLOCK, &ss, NULL);
        r = sd_event_add_signal(g->event, &g->sighup, SIGHUP, on_sighup, g);
        if (r < 0)
                return log_error_errno(r, "Cannot handle SIGHUP: %m");
        r = sd_event_add_io(g->event, &g->listen_io, g->listen_fd, EPOLLIN, on_listen, g);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the listening socket: %m");
        log_info("Serving %zu agent%s on 127.0.0.1 port %u", g->policy->n_agents, g->policy->n_agents == 1 ? "" : "s",
                 g->port);
        return 0;
}

unsigned egress_port(const Egress *g) {
        return g->port;
}

Egress *egress_free(Egress *g) {
        if (!g)
                return NULL;
        while (g->conns) {
                Conn *c = g->conns;
                c->task_pending = false;
                c->task_slot = sd_bus_slot_unref(c->task_slot);
                if (c->state != CONN_DONE)
                        conn_done(c);
                else
                        conn_free(c);
        }
        sd_event_source_disable_unref(g->listen_io);
        safe_close(g->listen_fd);
        safe_close(g->nl_fd);
        sd_event_source_disable_unref(g->secrets_io);
        safe_close(g->secrets_fd);      /* the keeper reads the end and exits */
        if (g->secrets_pid > 0)
                (void) waitpid(g->secrets_pid, NULL, 0);
        if (g->secrets_buf)
                explicit_bzero(g->secrets_buf, g->secrets_len);
        free(g->secrets_buf);
        free(g->env_path);
        con_audit_writer_free(g->audit);
        con_http_free(g->http);
        con_env_free(g->env);
        policy_unref(g->policy);
        free(g->config_path);
        sd_event_source_disable_unref(g->sighup);
        sd_bus_unref(g->bus);
        sd_event_unref(g->event);
        free(g);
        return NULL;
}
