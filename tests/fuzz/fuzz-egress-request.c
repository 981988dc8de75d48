/* SPDX-License-Identifier: MIT */
/* The egress gateway's request head (services/egressd/egress-util.c): whatever an agent sends to
 * 127.0.0.1:egress.port. Input: the bytes of the head. Checks: the parser answers 0 (more),
 * 1 (a whole head, within the input and EGRESS_HEAD_MAX), -EINVAL with a reason or -E2BIG; fed
 * byte by byte it agrees with itself; a parsed head has a valid lower-case host and port 1-65535
 * (CONNECT, http://) and a target inside the input; header look-ups and the service split stay inside it; the plain-HTTP rewrite is one head in origin
 * form ending in "Connection: close" and the empty line, without CR or LF inside its lines. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "egress-util.h"
#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *buf = (const char *) data, *problem = NULL;
        EgressRequest req;

        if (size > 2 * EGRESS_HEAD_MAX)
                return 0;
        int r = egress_parse_request(buf, size, &req, &problem);
        if (r != 0 && r != 1 && r != -EINVAL && r != -E2BIG)
                abort();
        if (r == -EINVAL && !problem)
                abort();
        /* Fed in two parts, the first part alone never claims more than the whole does. */
        if (size > 1) {
                EgressRequest half;
                int h = egress_parse_request(buf, size / 2, &half, NULL);
                if (h == 1 && (r != 1 || half.head_len != req.head_len))
                        abort();
        }
        if (r != 1)
                return 0;
        if (req.head_len == 0 || req.head_len > size || req.head_len > EGRESS_HEAD_MAX)
                abort();
        if (req.form != EGRESS_FORM_ORIGIN) {
                size_t n = strlen(req.host);
                if (n == 0 || n > EGRESS_HOST_MAX || req.port == 0)
                        abort();
                for (size_t i = 0; i < n; i++)
                        if (req.host[i] >= 'A' && req.host[i] <= 'Z')
                                abort();
        }
        if (req.form != EGRESS_FORM_CONNECT &&
            (!req.target || req.target < buf || req.target + req.target_len > buf + req.head_len))
                abort();
        char v[64], name[72];
        const char *rest;
        size_t rest_len;
        static const char * const hs[] = { "Content-Length", "Transfer-Encoding", "Accept", "Host" };
        for (size_t i = 0; i < ELEMENTSOF(hs); i++) {
                int h = egress_header_value(buf, &req, hs[i], v, sizeof v);
                if (h == 1 && (strlen(v) >= sizeof v || strpbrk(v, "\r\n")))
                        abort();
                if (h != 0 && h != 1 && h != -E2BIG)
                        abort();
        }
        if (egress_service_split(&req, name, sizeof name, &rest, &rest_len) == 0 &&
            (req.form != EGRESS_FORM_ORIGIN || !*name || rest < req.target || rest + rest_len != req.target + req.target_len))
                abort();
        if (req.form == EGRESS_FORM_ABSOLUTE) {
                _cleanup_free_ char *out = NULL;
                size_t len = 0;
                if (egress_rewrite_request(buf, &req, &out, &len) < 0)
                        return 0;
                if (len < 4 || strlen(out) != len || memcmp(out + len - 4, "\r\n\r\n", 4) != 0 ||
                    !strstr(out, "Connection: close\r\n\r\n") || out[strlen(req.method) + 1] != '/')
                        abort();
                /* Every line ends with CRLF; no bare CR or LF inside. */
                for (size_t i = 0; i < len; i++)
                        if ((out[i] == '\r' && (i + 1 >= len || out[i + 1] != '\n')) ||
                            (out[i] == '\n' && (i == 0 || out[i - 1] != '\r')))
                                abort();
                /* It parses again as one origin-form head (the added Host and Connection lines may take a
                 * head at the limits over them: -E2BIG, which only the upstream server sees). */
                EgressRequest again;
                int k = egress_parse_request(out, len, &again, NULL);
                if (k == -E2BIG)
                        return 0;
                if (k != 1 || again.form != EGRESS_FORM_ORIGIN || again.head_len != len)
                        abort();
                /* Exactly one Host, the checked one. */
                char host[EGRESS_HOST_MAX + 16];
                if (egress_header_value(out, &again, "Host", host, sizeof host) != 1 || !strstr(host, req.host))
                        abort();
                const char *first = strcasestr(out, "\r\nHost:");
                if (!first || strcasestr(first + 2, "\r\nHost:"))
                        abort();
        }
        return 0;
}
