/* SPDX-License-Identifier: MIT */
/* The egress gateway's overhead per request (docs/PERFORMANCE.md), a benchmark, not a test:
 *
 *   bench-egress serve PORT                     a tiny HTTP server on 127.0.0.1:PORT (one answer
 *                                               per connection, then close)
 *   bench-egress client PROXY PORT N            N requests each way, one at a time, each on a new
 *                                               connection: direct to 127.0.0.1:PORT, plain HTTP
 *                                               through the proxy (GET http://127.0.0.1:PORT/),
 *                                               and CONNECT through the proxy then the GET; prints
 *                                               p50/p90/p99 of each and the proxy's overhead
 *
 * bench/bench-egress.sh runs it in the sandbox as an agent whose allow-list names the server. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n";

static unsigned long long now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (unsigned long long) ts.tv_sec * 1000000000ULL + (unsigned long long) ts.tv_nsec;
}

static int tcp_connect(unsigned port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* Reads until the end of the head ("\r\n\r\n"); returns 0 when it is a 200. */
static int read_head(int fd) {
        char buf[4096];
        size_t n = 0;
        while (n < sizeof buf - 1) {
                ssize_t k = read(fd, buf + n, sizeof buf - 1 - n);
                if (k <= 0)
                        return -1;
                n += (size_t) k;
                buf[n] = 0;
                if (strstr(buf, "\r\n\r\n"))
                        return strncmp(buf + 8, " 200", 4) == 0 ? 0 : -1;
        }
        return -1;
}

static int read_to_eof(int fd) {
        char buf[4096];
        ssize_t k;
        size_t total = 0;
        while ((k = read(fd, buf, sizeof buf)) > 0)
                total += (size_t) k;
        return k < 0 || total == 0 ? -1 : 0;
}

static int one(int mode, unsigned proxy, unsigned port) {
        char req[256];
        int fd = tcp_connect(mode == 0 ? port : proxy), r = -1;
        if (fd < 0)
                return -1;
        if (mode == 0)
                snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        else if (mode == 1)
                snprintf(req, sizeof req, "GET http://127.0.0.1:%u/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port);
        else
                snprintf(req, sizeof req, "CONNECT 127.0.0.1:%u HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", port);
        if (write(fd, req, strlen(req)) != (ssize_t) strlen(req))
                goto out;
        if (mode == 2) {
                if (read_head(fd) < 0)
                        goto out;
                snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
                if (write(fd, req, strlen(req)) != (ssize_t) strlen(req))
                        goto out;
        }
        r = read_to_eof(fd);
out:
        close(fd);
        return r;
}

static int cmp(const void *a, const void *b) {
        unsigned long long x = *(const unsigned long long *) a, y = *(const unsigned long long *) b;
        return x < y ? -1 : x > y;
}

static int serve(unsigned port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        (void) setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &(int) { 1 }, sizeof(int));
        if (ls < 0 || bind(ls, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(ls, 128) < 0) {
                perror("bench-egress serve");
                return 1;
        }
        printf("ready\n");
        fflush(stdout);
        for (;;) {
                char buf[4096];
                size_t n = 0;
                int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                (void) setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &(int) { 1 }, sizeof(int));
                while (n < sizeof buf - 1) {
                        ssize_t k = read(c, buf + n, sizeof buf - 1 - n);
                        if (k <= 0)
                                break;
                        n += (size_t) k;
                        buf[n] = 0;
                        if (strstr(buf, "\r\n\r\n"))
                                break;
                }
                (void) !write(c, answer, sizeof answer - 1);
                close(c);
        }
}

int main(int argc, char **argv) {
        static const char * const names[] = { "direct", "plain HTTP via the proxy", "CONNECT via the proxy" };
        unsigned long long p50[3];

        if (argc == 3 && strcmp(argv[1], "serve") == 0)
                return serve((unsigned) atoi(argv[2]));
        if (argc != 5 || strcmp(argv[1], "client") != 0) {
                fprintf(stderr, "usage: bench-egress serve PORT | client PROXY-PORT PORT N\n");
                return 2;
        }
        unsigned proxy = (unsigned) atoi(argv[2]), port = (unsigned) atoi(argv[3]);
        int n = atoi(argv[4]);
        unsigned long long *t = calloc((size_t) n, sizeof *t);
        if (!t || n < 10)
                return 2;
        for (int mode = 0; mode < 3; mode++) {
                for (int i = 0; i < n / 10; i++)        /* warm-up */
                        (void) one(mode, proxy, port);
                for (int i = 0; i < n; i++) {
                        unsigned long long a = now_ns();
                        if (one(mode, proxy, port) < 0) {
                                fprintf(stderr, "bench-egress: request %d (%s) failed\n", i, names[mode]);
                                return 1;
                        }
                        t[i] = now_ns() - a;
                }
                qsort(t, (size_t) n, sizeof *t, cmp);
                p50[mode] = t[n / 2];
                printf("%-26s n=%d  p50 %7.1f us  p90 %7.1f us  p99 %7.1f us\n", names[mode], n, t[n / 2] / 1e3,
                       t[n * 9 / 10] / 1e3, t[n * 99 / 100] / 1e3);
        }
        printf("proxy overhead at p50: plain HTTP %+.1f us, CONNECT %+.1f us (target <= 1000 us)\n",
               ((double) p50[1] - (double) p50[0]) / 1e3, ((double) p50[2] - (double) p50[0]) / 1e3);
        free(t);
        return 0;
}
