/* SPDX-License-Identifier: MIT */
/* A NATS client for tests/integration/test-mesh.sh: what a host (or anybody) holding some
 * credentials can do at the mesh's NATS server, with nats.c as con-meshd uses it.
 *
 *   mesh-probe [--ca F] [--cert F --key F] [--inbox PREFIX] [--msg-id ID] URL connect
 *   mesh-probe ... URL publish SUBJECT DATA       JetStream publish, waits for the stream's ack
 *                                                  (prints the stream and sequence, and whether it was a
 *                                                  duplicate of a message id stored before)
 *   mesh-probe ... URL pub SUBJECT DATA           plain NATS publish, then a round trip
 *   mesh-probe ... [--count N] [--pad N] URL pub ...   N messages (a flood), DATA followed by N
 *                                                  spaces (publish too: --pad); prints how many
 *                                                  and their size; --seq: each message's SUBJECT
 *                                                  and DATA with %N written as its number (1..N)
 *   mesh-probe ... URL stream NAME SUBJECT         makes a work-queue stream (as a gateway does)
 *   mesh-probe ... URL request SUBJECT JSON       a request (the JetStream API's), prints the reply
 *   mesh-probe ... URL next STREAM SUBJECT SECS    fetches one message with the durable consumer
 *                                                  con-meshd, prints its subject and data, acks it
 *   mesh-probe ... URL fetch-queued QUEUED LATE    the gateway's pull (mesh_fetch) where libnats
 *                                                  3.4.1's batch fetch overflows: stream
 *                                                  probe-fetch, QUEUED messages queued in the
 *                                                  subscription by an earlier request, LATE more
 *                                                  arriving from another one during the fetch;
 *                                                  fetches until all came, prints how many and
 *                                                  the most one fetch returned
 *
 * Prints "ok" (exit 0) or "error: ..." with nats.c's error and the server's asynchronous error
 * (a permissions violation) when there was one (exit 1). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nats/nats.h>

#include "mesh-fetch.h"

static char async_error[512];
static natsOptions *o;
static natsConnection *nc;
static jsCtx *js;
static char *data;      /* what pub and publish send */

static int done(int status) {
        fflush(stdout);
        free(data);
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
        natsOptions_Destroy(o);
        nats_Close();
        return status;
}

static void on_error(natsConnection *conn, natsSubscription *sub, natsStatus err, void *closure) {
        (void) sub;
        (void) closure;
        const char *last = NULL;
        (void) natsConnection_GetLastError(conn, &last);
        snprintf(async_error, sizeof(async_error), "%s%s%s", natsStatus_GetText(err), last ? ": " : "",
                 last ? last : "");
}

static int fail(natsStatus s, const char *what) {
        const char *last = nats_GetLastError(NULL);
        printf("error: %s: %s%s%s%s%s\n", what, natsStatus_GetText(s), last ? " (" : "", last ? last : "",
               last ? ")" : "", "");
        if (async_error[0])
                printf("async error: %s\n", async_error);
        return done(1);
}

static const char *fetch_inbox;
static int fetch_late;

/* Another pull request's messages, arriving while the first fetch runs. */
static void *late_request(void *p) {
        char req[64];
        (void) p;
        usleep(200 * 1000);
        snprintf(req, sizeof(req), "{\"batch\":%d}", fetch_late);
        (void) natsConnection_PublishRequestString(nc, "$JS.API.CONSUMER.MSG.NEXT.probe-fetch.probe", fetch_inbox, req);
        (void) natsConnection_Flush(nc);
        return NULL;
}

static int fetch_queued(int queued, int late) {
        jsStreamConfig cfg;
        jsStreamInfo *si = NULL;
        jsSubOptions so;
        natsSubscription *sub = NULL;
        jsErrCode jerr = 0;
        const char *subjects[] = { "probe.fetch" };
        char req[64];
        int pending = 0, bytes = 0, got = 0, most = 0;
        pthread_t t;

        jsStreamConfig_Init(&cfg);
        cfg.Name = "probe-fetch";
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Retention = js_WorkQueuePolicy;
        natsStatus s = natsConnection_JetStream(&js, nc, NULL);
        if (s == NATS_OK)
                s = js_AddStream(&si, js, &cfg, NULL, &jerr);
        jsStreamInfo_Destroy(si);
        for (int i = 0; s == NATS_OK && i < queued + late + 3; i++)
                s = js_Publish(NULL, js, "probe.fetch", "m", 1, NULL, &jerr);
        jsSubOptions_Init(&so);
        so.Config.AckPolicy = js_AckExplicit;
        if (s == NATS_OK)
                s = js_PullSubscribe(&sub, js, "probe.fetch", "probe", NULL, &so, &jerr);
        if (s != NATS_OK)
                return fail(s, "fetch-queued: set-up");
        /* What a pull request that outlived its fetch leaves: messages queued in the subscription. */
        fetch_inbox = natsSubscription_GetSubject(sub);
        fetch_late = late;
        snprintf(req, sizeof(req), "{\"batch\":%d}", queued);
        s = natsConnection_PublishRequestString(nc, "$JS.API.CONSUMER.MSG.NEXT.probe-fetch.probe", fetch_inbox, req);
        for (int i = 0; s == NATS_OK && i < 50 && pending < queued; i++) {
                usleep(100 * 1000);
                s = natsSubscription_GetPending(sub, &pending, &bytes);
        }
        if (s != NATS_OK || pending < queued)
                return fail(s != NATS_OK ? s : NATS_TIMEOUT, "fetch-queued: queueing");
        if (pthread_create(&t, NULL, late_request, NULL) != 0)
                return fail(NATS_ERR, "fetch-queued: thread");
        for (int tries = 0; got < queued + late && tries < 3 * (queued + late); tries++) {
                natsMsgList list = {};
                int r = mesh_fetch(sub, 1000, false, &list);
                if (r == -EOVERFLOW) {
                        printf("error: a fetch returned more messages than its batch of %d\n", MESH_FETCH_BATCH);
                        fflush(stdout);
                        _exit(1);       /* the library wrote past its array: no clean-up on that heap */
                }
                for (int i = 0; r >= 0 && i < list.Count; i++)
                        (void) natsMsg_Ack(list.Msgs[i], NULL);
                if (r >= 0) {
                        got += list.Count;
                        most = list.Count > most ? list.Count : most;
                }
                natsMsgList_Destroy(&list);
        }
        (void) pthread_join(t, NULL);
        natsSubscription_Destroy(sub);
        printf("fetched %d of %d messages (%d queued before the first fetch), at most %d per fetch (batch %d)\n", got,
               queued + late, pending, most, MESH_FETCH_BATCH);
        return got == queued + late ? 0 : 1;
}

/* S with every %N written as N. */
static char *with_seq(const char *s, long n) {
        char num[32], *r, *p;
        size_t k = 0;
        int w = snprintf(num, sizeof(num), "%ld", n);
        for (const char *q = strstr(s, "%N"); q; q = strstr(q + 2, "%N"))
                k++;
        r = p = malloc(strlen(s) + k * (size_t) w + 1);
        if (!r)
                return NULL;
        for (const char *q; (q = strstr(s, "%N")); s = q + 2) {
                memcpy(p, s, (size_t) (q - s));
                p += q - s;
                memcpy(p, num, (size_t) w);
                p += w;
        }
        strcpy(p, s);
        return r;
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "ca", required_argument, NULL, 'a' },
                { "cert", required_argument, NULL, 'c' },
                { "key", required_argument, NULL, 'k' },
                { "inbox", required_argument, NULL, 'i' },
                { "msg-id", required_argument, NULL, 'm' },
                { "count", required_argument, NULL, 'n' },
                { "pad", required_argument, NULL, 'p' },
                { "seq", no_argument, NULL, 's' },
                {}
        };
        const char *ca = NULL, *cert = NULL, *key = NULL, *inbox = NULL, *msg_id = NULL;
        long count = 1, pad = 0;
        bool seq = false;
        int c;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case 'a': ca = optarg; break;
                case 'c': cert = optarg; break;
                case 'k': key = optarg; break;
                case 'i': inbox = optarg; break;
                case 'm': msg_id = optarg; break;
                case 'n': count = strtol(optarg, NULL, 10); break;
                case 'p': pad = strtol(optarg, NULL, 10); break;
                case 's': seq = true; break;
                default: return 2;
                }
        if (argc - optind < 2) {
                fprintf(stderr, "usage: mesh-probe [OPTIONS] URL connect|publish|pub|request|stream|next|fetch-queued ARGS...\n");
                return 2;
        }
        const char *url = argv[optind], *verb = argv[optind + 1];
        size_t len = 0;
        if (count < 1 || pad < 0 || pad > 64L * 1024 * 1024) {
                fprintf(stderr, "mesh-probe: --count must be 1 or more, --pad 0 to 64 MiB\n");
                return 2;
        }
        if (argc - optind >= 4) {
                len = strlen(argv[optind + 3]) + (size_t) pad;
                data = malloc(len + 1);
                if (!data)
                        return 2;
                memcpy(data, argv[optind + 3], strlen(argv[optind + 3]));
                memset(data + strlen(argv[optind + 3]), ' ', (size_t) pad);
                data[len] = 0;
        }
        natsStatus s = natsOptions_Create(&o);
        if (s == NATS_OK)
                s = natsOptions_SetURL(o, url);
        if (s == NATS_OK)
                s = natsOptions_SetTimeout(o, 5000);
        if (s == NATS_OK)
                s = natsOptions_SetMaxReconnect(o, 0);
        if (s == NATS_OK)
                s = natsOptions_SetErrorHandler(o, on_error, NULL);
        if (s == NATS_OK && inbox)
                s = natsOptions_SetCustomInboxPrefix(o, inbox);
        if (s == NATS_OK && ca)
                s = natsOptions_SetSecure(o, true);
        if (s == NATS_OK && ca)
                s = natsOptions_LoadCATrustedCertificates(o, ca);
        if (s == NATS_OK && cert)
                s = natsOptions_LoadCertificatesChain(o, cert, key);
        if (s != NATS_OK)
                return fail(s, "options");
        s = natsConnection_Connect(&nc, o);
        if (s != NATS_OK)
                return fail(s, "connect");
        if (strcmp(verb, "connect") == 0) {
                /* A round trip: the server has accepted the connection (and its user). */
                s = natsConnection_FlushTimeout(nc, 5000);
                if (s != NATS_OK)
                        return fail(s, "flush");
        } else if (strcmp(verb, "publish") == 0 && argc - optind == 4) {
                jsPubOptions po;
                jsPubAck *pa = NULL;
                jsErrCode jerr = 0;
                jsPubOptions_Init(&po);
                po.MaxWait = 3000;
                po.MsgId = msg_id;
                s = natsConnection_JetStream(&js, nc, NULL);
                if (s == NATS_OK)
                        s = js_Publish(&pa, js, argv[optind + 2], data, (int) len, &po, &jerr);
                if (s != NATS_OK) {
                        usleep(200 * 1000);     /* the server's -ERR, if any, arrives */
                        return fail(s, "publish");
                }
                printf("stored in stream %s seq %llu%s\n", pa->Stream, (unsigned long long) pa->Sequence,
                       pa->Duplicate ? " (a duplicate: stored before)" : "");
                jsPubAck_Destroy(pa);
        } else if (strcmp(verb, "pub") == 0 && argc - optind == 4) {
                for (long i = 0; i < count && s == NATS_OK; i++) {
                        if (!seq) {
                                s = natsConnection_Publish(nc, argv[optind + 2], data, (int) len);
                                continue;
                        }
                        char *subject = with_seq(argv[optind + 2], i + 1), *d = with_seq(data, i + 1);
                        s = subject && d ? natsConnection_PublishString(nc, subject, d) : NATS_NO_MEMORY;
                        free(subject);
                        free(d);
                }
                if (s == NATS_OK)
                        s = natsConnection_FlushTimeout(nc, 30000);
                usleep(200 * 1000);     /* the server's -ERR, if any, arrives */
                if (s == NATS_OK && async_error[0])
                        s = NATS_NOT_PERMITTED;
                if (s != NATS_OK)
                        return fail(s, "pub");
                if (count > 1)
                        printf("sent %ld messages of %zu bytes\n", count, len);
        } else if (strcmp(verb, "stream") == 0 && argc - optind == 4) {
                jsStreamConfig cfg;
                jsStreamInfo *si = NULL;
                jsErrCode jerr = 0;
                const char *subjects[] = { argv[optind + 3] };
                jsStreamConfig_Init(&cfg);
                cfg.Name = argv[optind + 2];
                cfg.Subjects = subjects;
                cfg.SubjectsLen = 1;
                cfg.Retention = js_WorkQueuePolicy;
                cfg.Storage = js_FileStorage;
                s = natsConnection_JetStream(&js, nc, NULL);
                if (s == NATS_OK)
                        s = js_AddStream(&si, js, &cfg, NULL, &jerr);
                if (s != NATS_OK)
                        return fail(s, "stream");
                jsStreamInfo_Destroy(si);
        } else if (strcmp(verb, "request") == 0 && argc - optind == 4) {
                natsMsg *reply = NULL;
                s = natsConnection_RequestString(&reply, nc, argv[optind + 2], argv[optind + 3], 3000);
                if (s != NATS_OK) {
                        usleep(200 * 1000);     /* the server's -ERR, if any, arrives */
                        return fail(s, "request");
                }
                printf("%.*s\n", natsMsg_GetDataLength(reply), natsMsg_GetData(reply));
                natsMsg_Destroy(reply);
        } else if (strcmp(verb, "fetch-queued") == 0 && argc - optind == 4) {
                if (fetch_queued(atoi(argv[optind + 2]), atoi(argv[optind + 3])) != 0)
                        return done(1);
        } else if (strcmp(verb, "next") == 0 && argc - optind == 5) {
                natsSubscription *sub = NULL;
                natsMsgList list = {};
                jsSubOptions so;
                jsErrCode jerr = 0;
                jsSubOptions_Init(&so);
                so.Stream = argv[optind + 2];
                so.Config.AckPolicy = js_AckExplicit;
                s = natsConnection_JetStream(&js, nc, NULL);
                if (s == NATS_OK)
                        s = js_PullSubscribe(&sub, js, argv[optind + 3], "con-meshd", NULL, &so, &jerr);
                if (s == NATS_OK)
                        s = natsSubscription_Fetch(&list, sub, 1, atoi(argv[optind + 4]) * 1000, &jerr);
                if (s == NATS_OK && list.Count == 1) {
                        printf("%s %.*s\n", natsMsg_GetSubject(list.Msgs[0]), natsMsg_GetDataLength(list.Msgs[0]),
                               natsMsg_GetData(list.Msgs[0]));
                        s = natsMsg_Ack(list.Msgs[0], NULL);
                }
                natsMsgList_Destroy(&list);
                natsSubscription_Destroy(sub);
                if (s != NATS_OK)
                        return fail(s, "next");
        } else {
                fprintf(stderr, "mesh-probe: unknown verb '%s'\n", verb);
                return done(2);
        }
        printf("ok\n");
        return done(0);
}
