/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

/* Asynchronous HTTP(S) requests on an sd-event loop, through libcurl's multi-socket interface.
 * Nothing here blocks the loop: curl's sockets are sd-event io sources, curl's timer is an
 * sd-event timer, completed transfers are handed to the caller's callback from the loop.
 *
 * Only http:// and https:// URLs are allowed, redirects are not followed (an API key must never
 * be sent to another host), signals are never used (CURLOPT_NOSIGNAL), and loopback addresses never
 * go through a proxy. Library code: no logging, no global state besides curl_global_init(),
 * which runs once. */

typedef struct ConHttp ConHttp;
typedef struct ConHttpSlot ConHttpSlot;

typedef struct ConHttpResponse {
        long status;                 /* HTTP status of the final response (100-999), 0 when none arrived */
        char **headers;              /* "Name: value" lines of the final response (strv), may be NULL;
                                      * CR, LF and NUL inside a line are replaced by spaces */
        char *body;                  /* always NUL-terminated (empty string when no body) */
        size_t body_size;            /* without the terminating NUL */
        bool has_retry_after;        /* a valid Retry-After header was present */
        uint64_t retry_after_usec;   /* its value relative to the arrival of the response */
        char *error;                 /* on a transport error: curl's description, else NULL */
} ConHttpResponse;

/* Called once per request, from the event loop, unless the slot was freed before.
 * r: 0 when an HTTP response arrived (whatever its status; 4xx/5xx are not errors here), or
 *    -ETIMEDOUT        total timeout or connect timeout or low-speed limit hit
 *    -EFBIG            the body (or the headers) went over the cap given to con_http_request()
 *    -ECONNREFUSED     nobody listens
 *    -EHOSTUNREACH     the host name does not resolve or the host is unreachable
 *    -ECONNRESET       the peer closed the connection early (e.g. in the middle of the body)
 *    -EPROTO           TLS or HTTP protocol failure (certificate problems included; a reply
 *                      without a valid status line, e.g. HTTP/0.9)
 *    -EPROTONOSUPPORT  not an http:// or https:// URL
 *    -EINVAL           malformed URL
 *    -ENOMEM, -EIO     anything else
 * resp is valid for the duration of the call. The callback may take ownership of resp->body and
 * resp->headers (set them to NULL). It may free its own slot, start new requests, free other slots
 * and free the ConHttp. For a floating slot (ret_slot was NULL) it must not free the slot. */
typedef void (*ConHttpCallback)(ConHttpSlot *slot, int r, ConHttpResponse *resp, void *userdata);

/* The glue. Takes a reference on the event loop. */
int con_http_new(sd_event *event, ConHttp **ret);
/* Cancels every pending request (their callbacks are not called) and frees. NULL-safe. */
ConHttp *con_http_free(ConHttp *h);
static inline void con_http_freep(ConHttp **h) {
        con_http_free(*h);
}

/* Connect timeout for later requests (default 10 s; 0 = curl's default). */
void con_http_set_connect_timeout(ConHttp *h, uint64_t usec);
/* Abort a transfer that moves fewer than limit bytes/s for time_usec (default 30 bytes/s for 60 s;
 * time_usec 0 disables). A non-streaming LLM call sends nothing until the model has finished:
 * such a caller should set a time at least as long as its total timeout, or 0. */
void con_http_set_low_speed(ConHttp *h, unsigned long limit_bytes_per_sec, uint64_t time_usec);

/* Starts a request. body NULL means GET, otherwise POST with body_size bytes.
 * headers: "Name: value" strings, no CR or LF allowed (-EINVAL otherwise).
 * timeout_usec: for the whole transfer (0 = none). max_response_bytes: cap on the body (0 = no cap).
 * ret_slot NULL makes the request floating (owned by h). Otherwise the caller owns the slot:
 * freeing it cancels the request if it is still running, and is required after completion too. */
int con_http_request(ConHttp *h, const char *url, char * const *headers, const char *body,
                     size_t body_size, uint64_t timeout_usec, size_t max_response_bytes,
                     ConHttpCallback callback, void *userdata, ConHttpSlot **ret_slot);

/* Cancels (when still pending) and frees. NULL-safe; the callback is never called afterwards. */
ConHttpSlot *con_http_slot_free(ConHttpSlot *slot);
static inline void con_http_slot_freep(ConHttpSlot **s) {
        con_http_slot_free(*s);
}
void *con_http_slot_get_userdata(ConHttpSlot *slot);

/* Case-insensitive header lookup in a response; returns the value (leading blanks skipped). */
const char *con_http_response_header(const ConHttpResponse *resp, const char *name);

/* Parses a Retry-After value: delay-seconds ("120") or an HTTP-date in any of the three forms of
 * RFC 9110 ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
 * "Sun Nov  6 08:49:37 1994"). now_realtime_usec is CLOCK_REALTIME; a date in the past gives 0.
 * Returns 0 or -EINVAL. Pure, no locale dependency. */
int con_http_parse_retry_after(const char *value, uint64_t now_realtime_usec, uint64_t *ret_usec);
