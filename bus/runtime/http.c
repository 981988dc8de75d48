/* SPDX-License-Identifier: MIT */
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/param.h>
#include <time.h>

#include "http.h"
#include "macro.h"
#include "strv.h"
#include "time-util.h"

/* Headers of one response larger than this are treated like an oversize body. */
#define HTTP_HEADERS_MAX (64U * 1024U)

typedef struct ConHttpIo ConHttpIo;

struct ConHttpIo {
        ConHttp *http;
        int fd;
        sd_event_source *source;
        ConHttpIo *prev, *next;
};

struct ConHttp {
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        ConHttpIo *ios;
        ConHttpSlot *slots;
        uint64_t connect_timeout_usec;
        unsigned long low_speed_limit;
        uint64_t low_speed_time_usec;
        unsigned dispatching;   /* > 0 while completions are handed out */
        bool freed;             /* con_http_free() ran during a dispatch; release memory after it */
};

struct ConHttpSlot {
        ConHttp *http;          /* NULL once the transfer is finished or cancelled */
        CURL *easy;
        struct curl_slist *header_list;
        char *request_body;
        ConHttpResponse resp;
        size_t body_alloc;
        size_t max_response_bytes;
        size_t header_bytes;
        bool over_cap, oom, floating;
        ConHttpCallback callback;
        void *userdata;
        char errbuf[CURL_ERROR_SIZE];
        ConHttpSlot *prev, *next;
};

static void *mfree(void *p) {
        free(p);
        return NULL;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_once_result = CURLE_FAILED_INIT;

static void curl_init_once(void) {
        curl_once_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void response_done(ConHttpResponse *r) {
        r->headers = strv_free(r->headers);
        r->body = mfree(r->body);
        r->error = mfree(r->error);
}

/* ---- io and timer glue ------------------------------------------------------------------ */

static void http_drain(ConHttp *h);

static ConHttpIo *io_free(ConHttpIo *io) {
        if (!io)
                return NULL;
        if (io->http) {
                if (io->prev)
                        io->prev->next = io->next;
                else
                        io->http->ios = io->next;
                if (io->next)
                        io->next->prev = io->prev;
        }
        sd_event_source_disable_unref(io->source);
        free(io);
        return NULL;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ConHttpIo *io = userdata;
        ConHttp *h = io->http;
        int action = 0, running;

        if (revents & (EPOLLIN | EPOLLHUP))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                action |= CURL_CSELECT_ERR;

        /* May free io (CURL_POLL_REMOVE); only h is used afterwards. */
        (void) curl_multi_socket_action(h->multi, fd, action, &running);
        http_drain(h);
        return 0;
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        ConHttp *h = userp;
        ConHttpIo *io = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                io_free(io);
                (void) curl_multi_assign(h->multi, fd, NULL);
                return 0;
        }

        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;

        /* curl may close a socket and get the same number back before telling us; start over then. */
        if (io && sd_event_source_get_io_fd(io->source) != fd)
                io = io_free(io);

        if (io)
                return sd_event_source_set_io_events(io->source, events) < 0 ? -1 : 0;

        io = calloc(1, sizeof(*io));
        if (!io)
                return -1;
        io->fd = fd;
        r = sd_event_add_io(h->event, &io->source, fd, events, on_io, io);
        if (r < 0) {
                free(io);
                return -1;
        }
        (void) sd_event_source_set_description(io->source, "http-io");
        io->http = h;
        io->next = h->ios;
        if (h->ios)
                h->ios->prev = io;
        h->ios = io;
        if (curl_multi_assign(h->multi, fd, io) != CURLM_OK) {
                io_free(io);
                return -1;
        }
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        ConHttp *h = userdata;
        int running;

        (void) curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        http_drain(h);
        return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
        ConHttp *h = userp;
        uint64_t usec;

        if (timeout_ms < 0)
                return h->timer && sd_event_source_set_enabled(h->timer, SD_EVENT_OFF) < 0 ? -1 : 0;

        usec = (uint64_t) timeout_ms * USEC_PER_MSEC;
        if (!h->timer) {
                /* Accuracy 1 µs: 0 would mean sd-event's default of 250 ms, far too coarse for curl. */
                if (sd_event_add_time_relative(h->event, &h->timer, CLOCK_MONOTONIC, usec, 1, on_timer, h) < 0)
                        return -1;
                (void) sd_event_source_set_description(h->timer, "http-timer");
                return 0;
        }
        if (sd_event_source_set_time_relative(h->timer, usec) < 0)
                return -1;
        return sd_event_source_set_enabled(h->timer, SD_EVENT_ONESHOT) < 0 ? -1 : 0;
}

/* ---- object life cycle ------------------------------------------------------------------ */

int con_http_new(sd_event *event, ConHttp **ret) {
        if (!event || !ret)
                return -EINVAL;

        (void) pthread_once(&curl_once, curl_init_once);
        if (curl_once_result != CURLE_OK)
                return -EIO;

        ConHttp *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->multi = curl_multi_init();
        if (!h->multi) {
                free(h);
                return -ENOMEM;
        }
        h->event = sd_event_ref(event);
        h->connect_timeout_usec = 10 * USEC_PER_SEC;
        h->low_speed_limit = 30;
        h->low_speed_time_usec = 60 * USEC_PER_SEC;

        if (curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
            curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h) != CURLM_OK ||
            curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
            curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h) != CURLM_OK) {
                con_http_free(h);
                return -EIO;
        }
        *ret = h;
        return 0;
}

/* Takes the transfer out of curl and out of h; the slot itself stays. */
static void slot_detach(ConHttpSlot *slot) {
        ConHttp *h = slot->http;

        if (h) {
                if (slot->easy)
                        (void) curl_multi_remove_handle(h->multi, slot->easy);
                if (slot->prev)
                        slot->prev->next = slot->next;
                else
                        h->slots = slot->next;
                if (slot->next)
                        slot->next->prev = slot->prev;
                slot->prev = slot->next = NULL;
                slot->http = NULL;
        }
        if (slot->easy) {
                curl_easy_cleanup(slot->easy);
                slot->easy = NULL;
        }
        curl_slist_free_all(slot->header_list);
        slot->header_list = NULL;
        slot->request_body = mfree(slot->request_body);
}

ConHttpSlot *con_http_slot_free(ConHttpSlot *slot) {
        if (!slot)
                return NULL;
        slot_detach(slot);
        response_done(&slot->resp);
        free(slot);
        return NULL;
}

void *con_http_slot_get_userdata(ConHttpSlot *slot) {
        return slot ? slot->userdata : NULL;
}

ConHttp *con_http_free(ConHttp *h) {
        if (!h || h->freed)
                return NULL;

        while (h->slots) {
                ConHttpSlot *s = h->slots;
                slot_detach(s);
                if (s->floating)
                        con_http_slot_free(s);
        }
        if (h->multi)
                (void) curl_multi_cleanup(h->multi);
        h->multi = NULL;
        while (h->ios)
                io_free(h->ios);
        h->timer = sd_event_source_disable_unref(h->timer);
        h->event = sd_event_unref(h->event);

        if (h->dispatching > 0)
                h->freed = true;        /* http_drain() releases the memory */
        else
                free(h);
        return NULL;
}

void con_http_set_connect_timeout(ConHttp *h, uint64_t usec) {
        if (h)
                h->connect_timeout_usec = usec;
}

void con_http_set_low_speed(ConHttp *h, unsigned long limit_bytes_per_sec, uint64_t time_usec) {
        if (!h)
                return;
        h->low_speed_limit = limit_bytes_per_sec;
        h->low_speed_time_usec = time_usec;
}

/* ---- transfers ---------------------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t n, void *userdata) {
        ConHttpSlot *slot = userdata;
        size_t len = size * n;

        if (slot->max_response_bytes > 0 && len > slot->max_response_bytes - slot->resp.body_size) {
                slot->over_cap = true;
                return 0;
        }
        if (slot->resp.body_size + len + 1 > slot->body_alloc) {
                size_t want = MAX(slot->body_alloc * 2, slot->resp.body_size + len + 1);
                want = MAX(want, (size_t) 4096);
                char *p = realloc(slot->resp.body, want);
                if (!p) {
                        slot->oom = true;
                        return 0;
                }
                slot->resp.body = p;
                slot->body_alloc = want;
        }
        memcpy(slot->resp.body + slot->resp.body_size, data, len);
        slot->resp.body_size += len;
        slot->resp.body[slot->resp.body_size] = 0;
        return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *userdata) {
        ConHttpSlot *slot = userdata;
        size_t len = size * n, l = len;

        /* A new status line starts a new response (after 1xx); only the final one is kept. */
        if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
                slot->resp.headers = strv_free(slot->resp.headers);
                slot->header_bytes = 0;
                return len;
        }
        slot->header_bytes += len;
        if (slot->header_bytes > HTTP_HEADERS_MAX) {
                slot->over_cap = true;
                return 0;
        }
        /* The line that ends the header block (curl passes on whatever follows its CR). */
        if (len == 0 || data[0] == '\r' || data[0] == '\n')
                return len;
        while (l > 0 && (data[l - 1] == '\n' || data[l - 1] == '\r'))
                l--;
        /* RFC 9110 5.5: CR, LF or NUL inside a field value is replaced by SP. */
        char *line = malloc(l + 1);
        if (line) {
                for (size_t i = 0; i < l; i++)
                        line[i] = data[i] == '\0' || data[i] == '\r' || data[i] == '\n' ? ' ' : data[i];
                line[l] = '\0';
        }
        if (!line || strv_consume(&slot->resp.headers, line) < 0) {
                slot->oom = true;
                return 0;
        }
        return len;
}

static long usec_to_ms(uint64_t usec) {
        uint64_t ms = (usec + USEC_PER_MSEC - 1) / USEC_PER_MSEC;
        return ms > LONG_MAX ? LONG_MAX : (long) ms;
}

static bool header_line_ok(const char *s) {
        return !isempty(s) && !strpbrk(s, "\r\n") && strchr(s, ':');
}

static bool url_scheme_ok(const char *url) {
        return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

int con_http_request(ConHttp *h, const char *url, char * const *headers, const char *body,
                     size_t body_size, uint64_t timeout_usec, size_t max_response_bytes,
                     ConHttpCallback callback, void *userdata, ConHttpSlot **ret_slot) {
        CURLcode c = CURLE_OK;

        if (!h || h->freed || isempty(url) || !callback)
                return -EINVAL;
        if (strpbrk(url, "\r\n \t"))
                return -EINVAL;
        if (!url_scheme_ok(url))
                return -EPROTONOSUPPORT;
        STRV_FOREACH(hdr, headers)
                if (!header_line_ok(*hdr))
                        return -EINVAL;

        _cleanup_(con_http_slot_freep) ConHttpSlot *slot = calloc(1, sizeof(*slot));
        if (!slot)
                return -ENOMEM;
        slot->callback = callback;
        slot->userdata = userdata;
        slot->max_response_bytes = max_response_bytes;
        slot->floating = !ret_slot;

        STRV_FOREACH(hdr, headers) {
                struct curl_slist *l = curl_slist_append(slot->header_list, *hdr);
                if (!l)
                        return -ENOMEM;
                slot->header_list = l;
        }
        if (body) {
                /* No "Expect: 100-continue" round trip for large bodies. */
                struct curl_slist *l = curl_slist_append(slot->header_list, "Expect:");
                if (!l)
                        return -ENOMEM;
                slot->header_list = l;
                slot->request_body = malloc(body_size + 1);
                if (!slot->request_body)
                        return -ENOMEM;
                memcpy(slot->request_body, body, body_size);
                slot->request_body[body_size] = 0;
        }

        slot->easy = curl_easy_init();
        if (!slot->easy)
                return -ENOMEM;

#define SETOPT(opt, val) do { if (c == CURLE_OK) c = curl_easy_setopt(slot->easy, opt, val); } while (0)
        SETOPT(CURLOPT_URL, url);
        SETOPT(CURLOPT_PRIVATE, (char *) slot);
        SETOPT(CURLOPT_NOSIGNAL, 1L);
        SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
        SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
        SETOPT(CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");
        SETOPT(CURLOPT_USERAGENT, "ConspiracyOS");
        SETOPT(CURLOPT_ERRORBUFFER, slot->errbuf);
        SETOPT(CURLOPT_WRITEFUNCTION, on_body);
        SETOPT(CURLOPT_WRITEDATA, slot);
        SETOPT(CURLOPT_HEADERFUNCTION, on_header);
        SETOPT(CURLOPT_HEADERDATA, slot);
        SETOPT(CURLOPT_ACCEPT_ENCODING, "");
        if (timeout_usec > 0)
                SETOPT(CURLOPT_TIMEOUT_MS, usec_to_ms(timeout_usec));
        if (h->connect_timeout_usec > 0)
                SETOPT(CURLOPT_CONNECTTIMEOUT_MS, usec_to_ms(h->connect_timeout_usec));
        if (h->low_speed_time_usec > 0) {
                SETOPT(CURLOPT_LOW_SPEED_LIMIT, (long) MIN(h->low_speed_limit, (unsigned long) LONG_MAX));
                SETOPT(CURLOPT_LOW_SPEED_TIME, MAX(1L, usec_to_ms(h->low_speed_time_usec) / 1000));
        }
        if (max_response_bytes > 0)
                SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) MIN(max_response_bytes, (size_t) INT64_MAX));
        if (slot->header_list)
                SETOPT(CURLOPT_HTTPHEADER, slot->header_list);
        if (body) {
                SETOPT(CURLOPT_POST, 1L);
                SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_size);
                SETOPT(CURLOPT_POSTFIELDS, slot->request_body);
        }
#undef SETOPT
        if (c == CURLE_OUT_OF_MEMORY)
                return -ENOMEM;
        if (c != CURLE_OK)
                return -EINVAL;

        if (curl_multi_add_handle(h->multi, slot->easy) != CURLM_OK)
                return -EIO;
        slot->http = h;
        slot->next = h->slots;
        if (h->slots)
                h->slots->prev = slot;
        h->slots = slot;

        if (ret_slot)
                *ret_slot = slot;
        TAKE_PTR(slot);
        return 0;
}

static int curl_code_to_errno(CURLcode c, const ConHttpSlot *slot) {
        if (slot->over_cap)
                return -EFBIG;
        if (slot->oom)
                return -ENOMEM;
        switch (c) {
        case CURLE_OK:
                return 0;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_FILESIZE_EXCEEDED:
                return -EFBIG;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_PARTIAL_FILE:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_GOT_NOTHING:
                return -ECONNRESET;
        case CURLE_UNSUPPORTED_PROTOCOL:
                /* The scheme was checked before the transfer started: here curl refused the
                 * reply (an HTTP/0.9 answer, without a status line). */
                return -EPROTO;
        case CURLE_URL_MALFORMAT:
                return -EINVAL;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
                return -EPROTO;
        default:
                return -EIO;
        }
}

static void slot_complete(ConHttpSlot *slot, CURLcode result) {
        ConHttpResponse resp = {};
        long status = 0;
        int r;

        (void) curl_easy_getinfo(slot->easy, CURLINFO_RESPONSE_CODE, &status);
        r = curl_code_to_errno(result, slot);
        /* curl 7.88 takes "HTTP/2777777777777 702" for a status line, with a status that is
         * none: a status has three digits (RFC 9110 15). */
        bool bad_status = r >= 0 && (status < 100 || status > 999);
        if (bad_status) {
                r = -EPROTO;
                status = 0;
        }

        /* Move the response out so that the callback may free the slot. */
        resp = slot->resp;
        slot->resp = (ConHttpResponse) {};
        resp.status = status;
        if (!resp.body)
                resp.body = strdup("");
        if (r < 0) {
                const char *what = slot->over_cap ? "response larger than the allowed size" :
                                   bad_status ? "no valid HTTP status line" :
                                   slot->errbuf[0] ? slot->errbuf : curl_easy_strerror(result);
                resp.error = strdup(what);
        } else {
                const char *ra = con_http_response_header(&resp, "Retry-After");
                if (ra && con_http_parse_retry_after(ra, con_now(CLOCK_REALTIME), &resp.retry_after_usec) >= 0)
                        resp.has_retry_after = true;
        }
        if (!resp.body || (r < 0 && !resp.error)) {
                r = -ENOMEM;
                resp.error = mfree(resp.error);
        }

        slot_detach(slot);

        bool floating = slot->floating;
        slot->callback(slot, r, &resp, slot->userdata);
        if (floating)
                con_http_slot_free(slot);
        response_done(&resp);
}

static void http_drain(ConHttp *h) {
        h->dispatching++;
        while (!h->freed) {
                int left;
                CURLMsg *m = curl_multi_info_read(h->multi, &left);
                if (!m)
                        break;
                if (m->msg != CURLMSG_DONE)
                        continue;

                CURL *easy = m->easy_handle;
                CURLcode result = m->data.result;
                char *p = NULL;
                (void) curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p);
                if (p)
                        slot_complete((ConHttpSlot *) p, result);
        }
        h->dispatching--;
        if (h->freed && h->dispatching == 0)
                free(h);
}

/* ---- response helpers --------------------------------------------------------------------- */

const char *con_http_response_header(const ConHttpResponse *resp, const char *name) {
        size_t l;

        if (!resp || isempty(name))
                return NULL;
        l = strlen(name);
        STRV_FOREACH(hdr, resp->headers)
                if (strncasecmp(*hdr, name, l) == 0 && (*hdr)[l] == ':') {
                        const char *v = *hdr + l + 1;
                        return v + strspn(v, " \t");
                }
        return NULL;
}

static int month_from_name(const char *m) {
        static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
        for (size_t i = 0; i < ELEMENTSOF(months); i++)
                if (streq(m, months[i]))
                        return (int) i;
        return -1;
}

static bool weekday_ok(const char *d, bool long_form) {
        static const char *const short_days[] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
        static const char *const long_days[] = { "Monday", "Tuesday", "Wednesday", "Thursday",
                                                 "Friday", "Saturday", "Sunday" };
        for (size_t i = 0; i < 7; i++)
                if (streq(d, long_form ? long_days[i] : short_days[i]))
                        return true;
        return false;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1..12). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        unsigned yoe = (unsigned) (y - era * 400);
        unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + (int64_t) doe - 719468;
}

static int parse_http_date(const char *v, int64_t *ret_sec) {
        char wd[16], mon[8];
        unsigned day, year, hh, mm, ss;
        int n = -1, month;
        size_t len = strlen(v);

        if (len > 64)
                return -EINVAL;
        /* IMF-fixdate */
        if (sscanf(v, "%15[A-Za-z], %2u %3[A-Za-z] %4u %2u:%2u:%2u GMT%n",
                   wd, &day, mon, &year, &hh, &mm, &ss, &n) == 7 && n == (int) len &&
            weekday_ok(wd, false))
                goto ok;
        n = -1;
        /* obsolete RFC 850 */
        if (sscanf(v, "%15[A-Za-z], %2u-%3[A-Za-z]-%2u %2u:%2u:%2u GMT%n",
                   wd, &day, mon, &year, &hh, &mm, &ss, &n) == 7 && n == (int) len &&
            weekday_ok(wd, true)) {
                year += year < 70 ? 2000 : 1900;
                goto ok;
        }
        n = -1;
        /* asctime */
        if (sscanf(v, "%3[A-Za-z] %3[A-Za-z] %2u %2u:%2u:%2u %4u%n",
                   wd, mon, &day, &hh, &mm, &ss, &year, &n) == 7 && n == (int) len &&
            weekday_ok(wd, false))
                goto ok;
        return -EINVAL;
ok:
        month = month_from_name(mon);
        if (month < 0 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 || year < 1970)
                return -EINVAL;
        *ret_sec = days_from_civil(year, (unsigned) month + 1, day) * 86400 + hh * 3600 + mm * 60 + ss;
        return 0;
}

int con_http_parse_retry_after(const char *value, uint64_t now_realtime_usec, uint64_t *ret_usec) {
        char buf[80];
        size_t l;

        if (!value || !ret_usec)
                return -EINVAL;
        value += strspn(value, " \t");
        l = strlen(value);
        while (l > 0 && (value[l - 1] == ' ' || value[l - 1] == '\t'))
                l--;
        if (l == 0 || l >= sizeof(buf))
                return -EINVAL;
        memcpy(buf, value, l);
        buf[l] = 0;

        if (strspn(buf, "0123456789") == l) {
                uint64_t sec = 0;
                for (size_t i = 0; i < l; i++) {
                        if (sec > (UINT64_MAX / USEC_PER_SEC - 9) / 10) {
                                sec = UINT64_MAX / USEC_PER_SEC;
                                break;
                        }
                        sec = sec * 10 + (uint64_t) (buf[i] - '0');
                }
                *ret_usec = sec * USEC_PER_SEC;
                return 0;
        }

        int64_t when;
        if (parse_http_date(buf, &when) < 0)
                return -EINVAL;
        uint64_t when_usec = (uint64_t) when * USEC_PER_SEC;
        *ret_usec = when_usec > now_realtime_usec ? when_usec - now_realtime_usec : 0;
        return 0;
}
