/* SPDX-License-Identifier: MIT */
/* con-webd: the read-only status page of the fabric (docs/DASHBOARD.md). libmicrohttpd speaks
 * HTTP (no request parsing of ours beyond matching a path against a fixed table), driven from
 * the sd-event loop through its epoll descriptor; the data comes from the system bus
 * (webd-state.c) and reaches browsers as Server-Sent Events. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/acl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>

#include "acl-util.h"
#include "con-paths.h"
#include "config.h"
#include "error-detail.h"
#include "fileio.h"
#include "log.h"
#include "macro.h"
#include "service.h"
#include "time-util.h"
#include "webd-state.h"
#include "webd-util.h"

#define WEBD_BUS_NAME "org.conspiracy.Web"
#define WEBD_USER_DEFAULT "con-web"
#define WEBD_RUNTIME_DIR_DEFAULT "/run/con-webd"
#define WEBD_SOCKET_NAME "webd.sock"
#define WEBD_TOKEN_PATH_DEFAULT CON_ETC_DIR "/dashboard.token"
#define WEBD_WEB_DIR_DEFAULT CON_PKGDATADIR "/web"
#define WEBD_CLIENTS_MAX 64
#define WEBD_KEEPALIVE_USEC (15 * USEC_PER_SEC)
#define WEBD_ASSET_MAX (1024 * 1024)
#define WEBD_TOKEN_MAX 4096

static void help(void);
static ConService svc = { .name = "con-webd", .help = help };

static struct {
        const char *config_path;
        const char *web_dir;
        const char *runtime_dir;
        const char *token_path;
        const char *user;
        const char *bind;
        unsigned port;
} arg = {
        .config_path = CON_CONFIG_PATH,
        .web_dir = WEBD_WEB_DIR_DEFAULT,
        .runtime_dir = WEBD_RUNTIME_DIR_DEFAULT,
        .token_path = WEBD_TOKEN_PATH_DEFAULT,
        .user = WEBD_USER_DEFAULT,
};

static void help(void) {
        printf("Usage: con-webd [OPTIONS]\n"
               "\n"
               "The ConspiracyOS status page: a read-only web page of the agents, the router, the\n"
               "contracts, the model gateway and the last events, fed from the system bus and updated\n"
               "live (Server-Sent Events). Listens on %s/%s (group con) and on the\n"
               "dashboard: bind and port of the configuration (default 127.0.0.1:8080). A bind that is not\n"
               "a loopback address needs the token file; without it the service refuses to start.\n"
               "Started as root, it binds its sockets and runs as the user %s.\n"
               "\n"
               "  --config PATH          Configuration file (default %s)\n"
               "  --bind ADDR            Listen on this address instead of dashboard.bind\n"
               "  --port PORT            Listen on this port instead of dashboard.port\n"
               "  --runtime-dir DIR      Folder of the Unix socket (default %s)\n"
               "  --token-file PATH      Access token for non-loopback binds (default %s)\n"
               "  --web-dir DIR          The page's files (default %s)\n"
               "  --user NAME            The user to run as when started as root (default %s)\n"
               CON_SERVICE_HELP,
               WEBD_RUNTIME_DIR_DEFAULT, WEBD_SOCKET_NAME, WEBD_USER_DEFAULT, CON_CONFIG_PATH,
               WEBD_RUNTIME_DIR_DEFAULT, WEBD_TOKEN_PATH_DEFAULT, WEBD_WEB_DIR_DEFAULT, WEBD_USER_DEFAULT);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_CONFIG = 0x100, ARG_BIND, ARG_PORT, ARG_RUNTIME_DIR, ARG_TOKEN, ARG_WEB_DIR, ARG_USER };
        static const struct option options[] = {
                CON_SERVICE_OPTIONS,
                { "config", required_argument, NULL, ARG_CONFIG },
                { "bind", required_argument, NULL, ARG_BIND },
                { "port", required_argument, NULL, ARG_PORT },
                { "runtime-dir", required_argument, NULL, ARG_RUNTIME_DIR },
                { "token-file", required_argument, NULL, ARG_TOKEN },
                { "web-dir", required_argument, NULL, ARG_WEB_DIR },
                { "user", required_argument, NULL, ARG_USER },
                {}
        };
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_CONFIG:
                        arg.config_path = optarg;
                        break;
                case ARG_BIND:
                        arg.bind = optarg;
                        break;
                case ARG_PORT: {
                        char *end;
                        errno = 0;
                        unsigned long p = strtoul(optarg, &end, 10);
                        if (errno || *end || end == optarg || p < 1 || p > 65535) {
                                log_error("--port: '%s' is not a port number (1..65535)", optarg);
                                svc.usage_error = true;
                                return -EINVAL;
                        }
                        arg.port = (unsigned) p;
                        break;
                }
                case ARG_RUNTIME_DIR:
                        arg.runtime_dir = optarg;
                        break;
                case ARG_TOKEN:
                        arg.token_path = optarg;
                        break;
                case ARG_WEB_DIR:
                        arg.web_dir = optarg;
                        break;
                case ARG_USER:
                        arg.user = optarg;
                        break;
                default:
                        r = con_service_parse_option(&svc, c, optarg);
                        if (r <= 0)
                                return r;
                }
        return con_service_no_arguments(&svc, argc, argv, optind);
}

/* ---- the server ---- */

typedef struct Asset {
        const char *path;       /* the URL path */
        const char *file;       /* below web_dir */
        const char *type;
        char *data;
        size_t size;
} Asset;

typedef struct Webd Webd;

typedef struct Listener {
        Webd *webd;
        const char *label;
        bool auth;              /* requests need the token */
        struct MHD_Daemon *mhd;
        sd_event_source *io, *timer;
} Listener;

typedef struct Client {
        Webd *webd;
        struct MHD_Connection *conn;
        WebdBacklog backlog;
        bool suspended;
        struct Client *next;
} Client;

struct Webd {
        sd_event *event;
        WebdState *state;
        Listener tcp, unix_;
        char *token;
        Client *clients;
        unsigned n_clients;
        sd_event_source *push, *keepalive;
        Asset assets[3];
};

static const char security_csp[] =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

static void add_headers(struct MHD_Response *resp, const char *type) {
        MHD_add_response_header(resp, "Content-Security-Policy", security_csp);
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(resp, "X-Frame-Options", "DENY");
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
        MHD_add_response_header(resp, "Cache-Control", "no-store");
        MHD_add_response_header(resp, "Cross-Origin-Resource-Policy", "same-origin");
        if (type)
                MHD_add_response_header(resp, "Content-Type", type);
}

static enum MHD_Result queue_buffer(struct MHD_Connection *conn, unsigned status, const char *type, void *data,
                                    size_t size, enum MHD_ResponseMemoryMode mode) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(size, data, mode);
        if (!resp)
                return MHD_NO;
        add_headers(resp, type);
        if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
                MHD_add_response_header(resp, "Allow", "GET, HEAD");
        enum MHD_Result ret = MHD_queue_response(conn, status, resp);
        MHD_destroy_response(resp);
        return ret;
}

static enum MHD_Result queue_text(struct MHD_Connection *conn, unsigned status, const char *text) {
        return queue_buffer(conn, status, "text/plain; charset=utf-8", (void *) text, strlen(text),
                            MHD_RESPMEM_PERSISTENT);
}

/* Constant time in the length of the token. */
static bool token_equal(const char *token, const char *given) {
        size_t n = strlen(token), m = strlen(given);
        unsigned char d = n != m;
        for (size_t i = 0; i < n; i++)
                d |= (unsigned char) token[i] ^ (unsigned char) (i < m ? given[i] : 0);
        return d == 0;
}

static bool authorized(Webd *w, struct MHD_Connection *conn) {
        const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (!h)
                return false;
        const char *bearer = startswith(h, "Bearer ");
        if (bearer)
                return token_equal(w->token, bearer);
        char *pass = NULL;
        char *user = MHD_basic_auth_get_username_password(conn, &pass);
        bool ok = pass && token_equal(w->token, pass);
        MHD_free(user);
        MHD_free(pass);
        return ok;
}

static void listener_run(Listener *l);

static void client_append(Client *c, const char *data, size_t n) {
        if (c->backlog.closed)
                return;
        /* A client that does not keep up is disconnected (at its next read; MHD's timeout ends one
         * that reads nothing), never left with a stream missing events: the page reconnects and
         * starts from the current state. */
        if (webd_backlog_append(&c->backlog, data, n, WEBD_BACKLOG_MAX) < 0) {
                log_debug("An event stream client fell %d MiB behind; closing its stream", WEBD_BACKLOG_MAX >> 20);
                /* sse_read() ends the stream when libmicrohttpd asks for more; while the client's
                 * socket is full it does not ask, so a 1 s timeout closes the connection then. */
                (void) MHD_set_connection_option(c->conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned) 1);
        }
        if (c->suspended) {
                c->suspended = false;
                MHD_resume_connection(c->conn);
        }
}

static char *state_event(Webd *w) {
        _cleanup_free_ char *json = webd_state_to_json(w->state, con_now(CLOCK_REALTIME));
        char *ev = NULL;
        if (!json || asprintf(&ev, "event: state\ndata: %s\n\n", json) < 0)
                return NULL;
        return ev;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
        Client *c = cls;
        if (c->backlog.closed)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        size_t n = webd_backlog_take(&c->backlog, buf, max);
        if (n == 0) {
                c->suspended = true;
                MHD_suspend_connection(c->conn);
        }
        return (ssize_t) n;
}

static void sse_free(void *cls) {
        Client *c = cls;
        Webd *w = c->webd;
        for (Client **p = &w->clients; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        w->n_clients--;
        webd_backlog_done(&c->backlog);
        free(c);
}

static enum MHD_Result serve_events(Webd *w, struct MHD_Connection *conn) {
        if (w->n_clients >= WEBD_CLIENTS_MAX)
                return queue_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "Too many event streams\n");
        Client *c = calloc(1, sizeof(*c));
        if (!c)
                return MHD_NO;
        *c = (Client) { .webd = w, .conn = conn, .next = w->clients };
        w->clients = c;
        w->n_clients++;
        _cleanup_free_ char *ev = state_event(w);
        if (ev)
                client_append(c, ev, strlen(ev));
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_read, c, sse_free);
        if (!resp) {
                sse_free(c);
                return MHD_NO;
        }
        add_headers(resp, "text/event-stream");
        enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        return ret;
}

/* Whether a Host header names this machine's loopback: localhost, 127.0.0.0/8 or [::1], with an
 * optional port. The listeners without a token answer only such requests, so a web page the
 * admin visits cannot read the status by pointing its own name at 127.0.0.1 (DNS rebinding). */
static bool host_is_loopback(const char *host) {
        char name[64];
        const char *end;

        if (!host)
                return false;
        if (host[0] == '[') {
                end = strchr(host, ']');
                if (!end || (size_t) (end - host - 1) >= sizeof(name))
                        return false;
                memcpy(name, host + 1, (size_t) (end - host - 1));
                name[end - host - 1] = 0;
                end++;
        } else {
                end = strchr(host, ':') ?: host + strlen(host);
                if ((size_t) (end - host) >= sizeof(name))
                        return false;
                memcpy(name, host, (size_t) (end - host));
                name[end - host] = 0;
        }
        if (*end == ':') {
                if (!end[1] || strspn(end + 1, "0123456789") != strlen(end + 1))
                        return false;
        } else if (*end)
                return false;
        struct in_addr a4;
        struct in6_addr a6;
        if (strcasecmp(name, "localhost") == 0)
                return true;
        if (host[0] != '[' && inet_pton(AF_INET, name, &a4) == 1)
                return (ntohl(a4.s_addr) >> 24) == 127;
        return host[0] == '[' && inet_pton(AF_INET6, name, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
        Listener *l = cls;
        Webd *w = l->webd;

        /* Request bodies are never read: this service takes no input. */
        if (*upload_data_size > 0) {
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (!streq(method, MHD_HTTP_METHOD_GET) && !streq(method, MHD_HTTP_METHOD_HEAD))
                return queue_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "Read only: GET and HEAD\n");
        if (!l->auth && !host_is_loopback(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST)))
                return queue_text(conn, MHD_HTTP_FORBIDDEN, "Without the token only requests for localhost are "
                                  "answered (Host: localhost, 127.0.0.1 or [::1])\n");
        if (l->auth && !authorized(w, conn)) {
                static const char denied[] = "Authentication required: the dashboard token as the password (any user name) or a Bearer token\n";
                struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(denied), (void *) denied,
                                                                            MHD_RESPMEM_PERSISTENT);
                if (!resp)
                        return MHD_NO;
                add_headers(resp, "text/plain; charset=utf-8");
                enum MHD_Result ret = MHD_queue_basic_auth_fail_response(conn, "ConspiracyOS dashboard", resp);
                MHD_destroy_response(resp);
                return ret;
        }
        if (streq(url, "/api/state")) {
                char *json = webd_state_to_json(w->state, con_now(CLOCK_REALTIME));
                if (!json)
                        return queue_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "Out of memory\n");
                return queue_buffer(conn, MHD_HTTP_OK, "application/json", json, strlen(json), MHD_RESPMEM_MUST_FREE);
        }
        if (streq(url, "/api/events"))
                return serve_events(w, conn);
        for (size_t i = 0; i < ELEMENTSOF(w->assets); i++)
                if (streq(url, w->assets[i].path))
                        return queue_buffer(conn, MHD_HTTP_OK, w->assets[i].type, w->assets[i].data,
                                            w->assets[i].size, MHD_RESPMEM_PERSISTENT);
        return queue_text(conn, MHD_HTTP_NOT_FOUND, "Not found\n");
}

/* ---- the loop ---- */

static void listener_arm(Listener *l) {
        MHD_UNSIGNED_LONG_LONG ms;
        if (!l->mhd)
                return;
        if (MHD_get_timeout(l->mhd, &ms) == MHD_YES) {
                (void) sd_event_source_set_time(l->timer, con_now(CLOCK_MONOTONIC) + ms * USEC_PER_MSEC);
                (void) sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
        } else
                (void) sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
}

static void listener_run(Listener *l) {
        if (!l->mhd)
                return;
        (void) MHD_run(l->mhd);
        listener_arm(l);
}

static int on_listener_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        listener_run(userdata);
        return 0;
}

static int on_listener_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        listener_run(userdata);
        return 0;
}

static void broadcast(Webd *w, const char *data) {
        for (Client *c = w->clients; c; c = c->next)
                client_append(c, data, strlen(data));
        listener_run(&w->tcp);
        listener_run(&w->unix_);
}

static int on_push(sd_event_source *s, void *userdata) {
        Webd *w = userdata;
        if (!w->clients)
                return 0;
        _cleanup_free_ char *ev = state_event(w);
        if (ev)
                broadcast(w, ev);
        return 0;
}

/* The state changed: push it once at the end of this loop iteration, however many signals came. */
static void on_state_changed(void *userdata) {
        Webd *w = userdata;
        (void) sd_event_source_set_enabled(w->push, SD_EVENT_ONESHOT);
}

static int on_keepalive(sd_event_source *s, uint64_t usec, void *userdata) {
        Webd *w = userdata;
        /* A comment line: keeps proxies from closing the stream and finds clients that left. */
        broadcast(w, ":\n\n");
        (void) sd_event_source_set_time(s, usec + WEBD_KEEPALIVE_USEC);
        return 0;
}

/* libmicrohttpd's messages (a client gone mid-stream, a malformed request) are the clients'
 * business, not the service's: debug level. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
        char buf[512];
        (void) vsnprintf(buf, sizeof buf, fmt, ap);
        buf[strcspn(buf, "\n")] = 0;
        log_debug("HTTP (%s): %s", ((Listener *) cls)->label, buf);
}

static int listener_start(Webd *w, Listener *l, int fd) {
        int r;
        l->webd = w;
        l->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                                  on_request, l,
                                  MHD_OPTION_LISTEN_SOCKET, (MHD_socket) fd,
                                  MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, l,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned) (WEBD_CLIENTS_MAX + 16),
                                  MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned) 0,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 30,
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) (64 * 1024),
                                  MHD_OPTION_END);
        if (!l->mhd)
                return -EIO;
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(l->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return -EIO;
        r = sd_event_add_io(w->event, &l->io, info->epoll_fd, EPOLLIN, on_listener_io, l);
        if (r < 0)
                return r;
        r = sd_event_add_time(w->event, &l->timer, CLOCK_MONOTONIC, 0, 0, on_listener_timer, l);
        if (r < 0)
                return r;
        listener_arm(l);
        return 0;
}

static void listener_stop(Listener *l) {
        l->io = sd_event_source_disable_unref(l->io);
        l->timer = sd_event_source_disable_unref(l->timer);
        if (l->mhd) {
                MHD_stop_daemon(l->mhd);
                l->mhd = NULL;
        }
}

static Webd *webd_free(Webd *w) {
        if (!w)
                return NULL;
        /* Suspended connections must be resumed before the daemon stops. */
        for (Client *c = w->clients; c; c = c->next)
                if (c->suspended) {
                        c->suspended = false;
                        MHD_resume_connection(c->conn);
                }
        listener_stop(&w->tcp);
        listener_stop(&w->unix_);
        sd_event_source_disable_unref(w->push);
        sd_event_source_disable_unref(w->keepalive);
        webd_state_free(w->state);
        sd_event_unref(w->event);
        for (size_t i = 0; i < ELEMENTSOF(w->assets); i++)
                free(w->assets[i].data);
        if (w->token)
                explicit_bzero(w->token, strlen(w->token));
        free(w->token);
        free(w);
        return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(Webd *, webd_free);

/* ---- sockets, user, token ---- */

static bool address_is_loopback(const char *a) {
        struct in_addr v4;
        struct in6_addr v6;
        if (inet_pton(AF_INET, a, &v4) == 1)
                return (ntohl(v4.s_addr) >> 24) == 127;
        if (inet_pton(AF_INET6, a, &v6) == 1)
                return IN6_IS_ADDR_LOOPBACK(&v6);
        return false;
}

static int bind_tcp(const char *addr, unsigned port) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = {};
        socklen_t len;
        int family, one = 1;

        if (inet_pton(AF_INET, addr, &sa.in.sin_addr) == 1) {
                family = sa.in.sin_family = AF_INET;
                sa.in.sin_port = htons(port);
                len = sizeof(sa.in);
        } else if (inet_pton(AF_INET6, addr, &sa.in6.sin6_addr) == 1) {
                family = sa.in6.sin6_family = AF_INET6;
                sa.in6.sin6_port = htons(port);
                len = sizeof(sa.in6);
        } else
                return -EINVAL;
        _cleanup_close_ int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, &sa.sa, len) < 0 || listen(fd, 64) < 0)
                return -errno;
        return TAKE_FD(fd);
}

/* The socket's folder is the service's own, 0750 plus an ACL entry letting group `con` in (the
 * owner may grant that without being in the group); the socket itself is 0666 inside it. */
static int bind_unix(const char *dir, const char *group) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct group *gr = getgrnam(group);
        int r;

        if (!gr)
                return log_error_errno(-ENOENT, "Group %s does not exist (con bootstrap creates it)", group);
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return log_error_errno(-errno, "Cannot open %s: %m", dir);
        if (fchmod(dfd, 0750) < 0)
                return log_error_errno(-errno, "Cannot chmod %s: %m", dir);
        ConAclEntry e = { .tag = ACL_GROUP, .id = gr->gr_gid, .perms = CON_ACL_X };
        _cleanup_acl_free_ acl_t acl = NULL;
        r = con_acl_build(0750, &e, 1, &acl);
        if (r >= 0)
                r = con_acl_fd_apply(dfd, ACL_TYPE_ACCESS, acl);
        if (r < 0)
                return log_error_errno(r, "Cannot let group %s into %s: %m", group, dir);

        if (snprintf(sa.sun_path, sizeof sa.sun_path, "%s/%s", dir, WEBD_SOCKET_NAME) >= (int) sizeof sa.sun_path)
                return log_error_errno(-ENAMETOOLONG, "%s/%s: the path is too long for a socket", dir, WEBD_SOCKET_NAME);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        (void) unlink(sa.sun_path);
        mode_t old = umask(0111);
        r = bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 ? -errno : 0;
        (void) umask(old);
        if (r < 0)
                return log_error_errno(r, "Cannot bind %s: %m", sa.sun_path);
        if (listen(fd, 64) < 0)
                return -errno;
        return TAKE_FD(fd);
}

/* Started as root (con up): the runtime folder for the user, then that user's identity only. */
static int drop_privileges(const char *user, const char *dir) {
        struct passwd *pw = getpwnam(user);
        if (!pw)
                return log_error_errno(-ENOENT, "User %s does not exist (con bootstrap creates it)", user);
        if (mkdir(dir, 0750) < 0 && errno != EEXIST)
                return log_error_errno(-errno, "Cannot create %s: %m", dir);
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0 || fchown(dfd, pw->pw_uid, pw->pw_gid) < 0)
                return log_error_errno(-errno, "Cannot give %s to %s: %m", dir, user);
        return con_service_become(user);
}

/* The token: one line in a file only the service may read (owner: the service's user; no access
 * for group or others). -ENOENT when missing, -EPERM when open to others. */
static int read_token(const char *path, char **ret) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len;
        int r;

        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0077))
                return -EPERM;
        r = read_fd(fd, WEBD_TOKEN_MAX, &buf, &len);
        if (r < 0)
                return r;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
                buf[--len] = 0;
        if (len < 16 || strlen(buf) != len)
                return -EBADMSG;
        *ret = TAKE_PTR(buf);
        return 0;
}

static int load_assets(Webd *w) {
        static const Asset table[] = {
                { .path = "/", .file = "index.html", .type = "text/html; charset=utf-8" },
                { .path = "/app.js", .file = "app.js", .type = "text/javascript; charset=utf-8" },
                { .path = "/style.css", .file = "style.css", .type = "text/css; charset=utf-8" },
        };
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                _cleanup_free_ char *p = NULL;
                w->assets[i] = table[i];
                if (asprintf(&p, "%s/%s", arg.web_dir, table[i].file) < 0)
                        return -ENOMEM;
                int r = read_file_nofollow(p, WEBD_ASSET_MAX, &w->assets[i].data, &w->assets[i].size);
                if (r < 0)
                        return log_error_errno(r, "Cannot read %s: %m", p);
        }
        return 0;
}

static int run(int argc, char *argv[]) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(webd_freep) Webd *w = NULL;
        _cleanup_close_ int tcp_fd = -EBADF, unix_fd = -EBADF;
        ConErrorDetail err = {};
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        r = con_config_load(arg.config_path, &config, &err);
        if (r < 0) {
                _cleanup_free_ char *m = con_error_detail_format(&err);
                con_error_detail_done(&err);
                return log_error_errno(r, "Invalid configuration: %s", m ?: "out of memory");
        }
        const char *bind_addr = arg.bind ?: config->dashboard.bind;
        unsigned port = arg.port ?: config->dashboard.port;
        bool loopback = address_is_loopback(bind_addr);
        if (!config->dashboard.enabled)
                log_notice("dashboard.enabled is false in %s; serving because started explicitly", arg.config_path);

        w = calloc(1, sizeof(*w));
        if (!w)
                return log_error_errno(-ENOMEM, "Out of memory");
        r = load_assets(w);
        if (r < 0)
                return r;

        /* Ports below 1024 need root: bind before becoming the service's user. */
        tcp_fd = bind_tcp(bind_addr, port);
        if (tcp_fd < 0)
                return log_error_errno(tcp_fd, "Cannot listen on %s port %u: %m", bind_addr, port);
        if (geteuid() == 0) {
                r = drop_privileges(arg.user, arg.runtime_dir);
                if (r < 0)
                        return r;
        }
        if (!loopback) {
                r = read_token(arg.token_path, &w->token);
                if (r < 0)
                        return log_error_errno(r == -ENOENT || r == -EPERM || r == -EBADMSG ? -EACCES : r,
                                               "Refusing to listen on %s (not a loopback address) without "
                                               "authentication: %s %s. Put a token of at least 16 characters in it, "
                                               "owned by %s with mode 0400, or bind 127.0.0.1 (docs/DASHBOARD.md)",
                                               bind_addr, arg.token_path,
                                               r == -ENOENT ? "does not exist" :
                                               r == -EPERM ? "is not a file owned by the service's user and closed to everyone else" :
                                               r == -EBADMSG ? "holds no usable token" : "cannot be read",
                                               arg.user);
                log_info("Listening on %s port %u; requests need the token of %s", bind_addr, port, arg.token_path);
        }
        unix_fd = bind_unix(arg.runtime_dir, config->submitters_group);
        if (unix_fd < 0)
                return unix_fd;

        r = con_service_start(&svc, 0);
        if (r < 0)
                return r;
        w->event = sd_event_ref(svc.event);
        r = webd_state_new(config, on_state_changed, w, &w->state);
        if (r < 0)
                return log_error_errno(r, "Cannot set up: %m");
        r = sd_event_add_defer(w->event, &w->push, on_push, w);
        if (r < 0)
                return log_error_errno(r, "Cannot set up: %m");
        (void) sd_event_source_set_enabled(w->push, SD_EVENT_OFF);
        r = sd_event_add_time_relative(w->event, &w->keepalive, CLOCK_MONOTONIC, WEBD_KEEPALIVE_USEC, 0,
                                       on_keepalive, w);
        if (r < 0)
                return log_error_errno(r, "Cannot set up: %m");
        (void) sd_event_source_set_enabled(w->keepalive, SD_EVENT_ON);
        r = webd_state_attach(w->state, svc.bus);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the bus: %m");

        w->tcp.label = "tcp";
        w->tcp.auth = !loopback;
        r = listener_start(w, &w->tcp, tcp_fd);
        if (r < 0)
                return log_error_errno(r, "Cannot start the HTTP server on %s port %u: %m", bind_addr, port);
        TAKE_FD(tcp_fd);        /* MHD_stop_daemon closes it */
        w->unix_.label = "unix";
        r = listener_start(w, &w->unix_, unix_fd);
        if (r < 0)
                return log_error_errno(r, "Cannot start the HTTP server on %s/%s: %m", arg.runtime_dir, WEBD_SOCKET_NAME);
        TAKE_FD(unix_fd);

        r = sd_bus_request_name(svc.bus, WEBD_BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Cannot take %s: %m", WEBD_BUS_NAME);
        log_info("Serving %s port %u and %s/%s", bind_addr, port, arg.runtime_dir, WEBD_SOCKET_NAME);
        r = con_service_loop(&svc, "Serving the status page");
        return r < 0 ? r : 0;
}

CON_SERVICE_MAIN(svc, run)
