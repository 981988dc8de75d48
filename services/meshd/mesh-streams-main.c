/* SPDX-License-Identifier: MIT */
/* con-mesh-streams: the mesh's JetStream streams, made and checked with the administrator's
 * credentials (docs/MULTIHOST.md, "Who makes the streams"). Run by con mesh streams, which finds
 * the credentials, the hosts and the settings; not meant to be run by hand:
 *
 *   con-mesh-streams [--ca F --cert F --key F] --inbox PREFIX --server URL... --retention-usec N
 *                    --replicas N --max-bytes N --max-per-host N [--check] [--replace] HOST...
 *
 * For each HOST its task and result streams, then con-state: made when missing, changed when only
 * their settings differ (max age, replicas, duplicate window, the limits), left alone when
 * exactly the mesh's; one that is not the mesh's (sources, a mirror, a republish, other subjects,
 * retention or storage) is removed and made anew only with --replace. --check changes nothing and
 * reports. Then any other stream that copies one of them (a source or a mirror) is reported. One
 * line per stream on standard output; exit 0 when every stream is (now) the mesh's, 1 otherwise
 * or on error, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

#include "config.h"
#include "macro.h"
#include "mesh-streams.h"
#include "names.h"
#include "strv.h"

static void help(void) {
        printf("Usage: con-mesh-streams [--ca FILE --cert FILE --key FILE] --inbox PREFIX --server URL...\n"
               "                        --retention-usec N --replicas N --max-bytes N --max-per-host N\n"
               "                        [--check] [--replace] HOST...\n"
               "\n"
               "Makes (or with --check only checks) every HOST's task and result streams and con-state in\n"
               "JetStream as the mesh needs them, with the mesh administrator's credentials. Run by\n"
               "con mesh streams, which finds them (see con(1), docs/MULTIHOST.md).\n"
               "\n"
               "  --ca FILE --cert FILE --key FILE  the mesh CA and the administrator's certificate and key\n"
               "                                    (none: a plaintext nats:// server)\n"
               "  --inbox PREFIX       the administrator's inboxes\n"
               "  --server URL         a NATS server (repeatable)\n"
               "  --retention-usec N   the streams' max age\n"
               "  --replicas N         copies of each stream\n"
               "  --max-bytes N        bytes each task and result stream holds at most\n"
               "  --max-per-host N     messages of one sending host each task and result stream holds at most\n"
               "  --check              change nothing; report\n"
               "  --replace            remove a stream that is not the mesh's and make it anew\n"
               "  --help               this text\n"
               "\n"
               "Exit status: 0 every stream is the mesh's, 1 not or an error, 2 usage error.\n");
}

static const char *nats_text(natsStatus s) {
        const char *last = nats_GetLastError(NULL);
        return last && *last ? last : natsStatus_GetText(s);
}

/* One stream: made, changed, replaced or reported. 0: the mesh's now; 1: not; -1: error. */
static int one_stream(jsCtx *js, const MeshStreamConfig *c, bool check, bool replace) {
        _cleanup_free_ char *text = NULL;
        MeshStreamFound found;
        jsErrCode jerr = 0;
        jsStreamInfo *si = NULL;

        natsStatus s = mesh_stream_inspect(js, c, &found, &text, &jerr);
        if (s != NATS_OK) {
                printf("%s: cannot ask JetStream: %s (JetStream error %d)\n", c->name, nats_text(s), (int) jerr);
                return -1;
        }
        const char *done = NULL;
        switch (found) {
        case MESH_STREAM_FOUND_OK:
                printf("%s: ok\n", c->name);
                return 0;
        case MESH_STREAM_FOUND_MISSING:
                if (check) {
                        printf("%s: missing\n", c->name);
                        return 1;
                }
                s = js_AddStream(&si, js, (jsStreamConfig *) &c->cfg, NULL, &jerr);
                done = "made";
                break;
        case MESH_STREAM_FOUND_SETTINGS:
                if (check) {
                        printf("%s: %s\n", c->name, text);
                        return 1;
                }
                s = js_UpdateStream(&si, js, (jsStreamConfig *) &c->cfg, NULL, &jerr);
                done = "changed to the mesh's settings";
                break;
        case MESH_STREAM_FOUND_WRONG:
        default:
                if (check || !replace) {
                        printf("%s: %s; con mesh streams --replace removes it, with the messages it holds, and "
                               "makes it anew\n", c->name, text);
                        return 1;
                }
                s = js_DeleteStream(js, c->name, NULL, &jerr);
                if (s == NATS_OK)
                        s = js_AddStream(&si, js, (jsStreamConfig *) &c->cfg, NULL, &jerr);
                done = "replaced (it was not the mesh's)";
                break;
        }
        jsStreamInfo_Destroy(si);
        if (s != NATS_OK) {
                printf("%s: cannot be %s: %s (JetStream error %d)\n", c->name,
                       found == MESH_STREAM_FOUND_MISSING ? "made" : found == MESH_STREAM_FOUND_SETTINGS ? "changed" :
                       "replaced", nats_text(s), (int) jerr);
                return -1;
        }
        /* What the server has now must be exactly the mesh's. */
        free(text);
        text = NULL;
        s = mesh_stream_inspect(js, c, &found, &text, &jerr);
        if (s != NATS_OK || found != MESH_STREAM_FOUND_OK) {
                printf("%s: %s, but the server has %s\n", c->name, done,
                       s != NATS_OK ? nats_text(s) : text ? text : "no such stream");
                return -1;
        }
        printf("%s: %s\n", c->name, done);
        return 0;
}

/* Stream ID of HOST (NULL: con-state), its name added to NAMES. */
static int stream_of(jsCtx *js, MeshStreamId id, const char *host, const MeshStreamSettings *settings, bool check,
                     bool replace, char ***names) {
        _cleanup_(mesh_stream_config_done) MeshStreamConfig sc = {};

        if (mesh_stream_config(id, host, settings, &sc) < 0 || strv_extend(names, sc.name) < 0) {
                printf("out of memory\n");
                return -1;
        }
        return one_stream(js, &sc, check, replace);
}

/* -1 (an error) wins, then 1 (a stream not the mesh's), then 0. */
static int worst(int a, int b) {
        return a < 0 || b < 0 ? -1 : a > b ? a : b;
}

/* Any other stream that copies one of the mesh's (NAMES): a source or a mirror. */
static int other_streams(jsCtx *js, char * const *names) {
        jsStreamInfoList *list = NULL;
        jsErrCode jerr = 0;
        int bad = 0;

        natsStatus s = js_Streams(&list, js, NULL, &jerr);
        if (s == NATS_NOT_FOUND)
                return 0;
        if (s != NATS_OK) {
                printf("cannot list the streams: %s (JetStream error %d)\n", nats_text(s), (int) jerr);
                return -1;
        }
        for (int i = 0; i < list->Count; i++) {
                const jsStreamInfo *si = list->List[i];
                if (!si || !si->Config || strv_contains(names, si->Config->Name))
                        continue;
                STRV_FOREACH(n, names)
                        if (mesh_stream_copies(si->Config, *n)) {
                                printf("%s: not the mesh's, and copies %s (remove it)\n", si->Config->Name, *n);
                                bad = 1;
                        }
        }
        jsStreamInfoList_Destroy(list);
        return bad;
}

/* A whole decimal number from 1 to MAX, nothing else (not "3x", "-1", "1e9" or an empty string). */
static int parse_count(const char *option, const char *s, uint64_t max, uint64_t *ret) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = s[0] >= '0' && s[0] <= '9' ? strtoull(s, &end, 10) : 0;
        if (!end || *end || errno != 0 || n < 1 || n > max) {
                fprintf(stderr, "con-mesh-streams: --%s '%s' is not a whole number from 1 to %" PRIu64 "\n", option, s,
                        max);
                return -EINVAL;
        }
        *ret = n;
        return 0;
}

int main(int argc, char *argv[]) {
        enum { ARG_CA = 0x100, ARG_CERT, ARG_KEY, ARG_INBOX, ARG_SERVER, ARG_RETENTION, ARG_REPLICAS, ARG_CHECK,
               ARG_REPLACE, ARG_MAX_BYTES, ARG_MAX_PER_HOST };
        static const struct option options[] = {
                { "ca", required_argument, NULL, ARG_CA },
                { "cert", required_argument, NULL, ARG_CERT },
                { "key", required_argument, NULL, ARG_KEY },
                { "inbox", required_argument, NULL, ARG_INBOX },
                { "server", required_argument, NULL, ARG_SERVER },
                { "retention-usec", required_argument, NULL, ARG_RETENTION },
                { "replicas", required_argument, NULL, ARG_REPLICAS },
                { "max-bytes", required_argument, NULL, ARG_MAX_BYTES },
                { "max-per-host", required_argument, NULL, ARG_MAX_PER_HOST },
                { "check", no_argument, NULL, ARG_CHECK },
                { "replace", no_argument, NULL, ARG_REPLACE },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        _cleanup_strv_free_ char **servers = NULL, **names = NULL;
        const char *ca = NULL, *cert = NULL, *key = NULL, *inbox = NULL;
        MeshStreamSettings settings = {};
        bool check = false, replace = false;
        int c;

        while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
                switch (c) {
                case ARG_CA:
                        ca = optarg;
                        break;
                case ARG_CERT:
                        cert = optarg;
                        break;
                case ARG_KEY:
                        key = optarg;
                        break;
                case ARG_INBOX:
                        inbox = optarg;
                        break;
                case ARG_SERVER:
                        if (strv_extend(&servers, optarg) < 0)
                                return 1;
                        break;
                case ARG_RETENTION:
                        if (parse_count("retention-usec", optarg, CON_MESH_RETENTION_MAX_USEC,
                                        &settings.retention_usec) < 0)
                                return 2;
                        break;
                case ARG_MAX_BYTES:
                        if (parse_count("max-bytes", optarg, CON_MESH_STREAM_MAX_BYTES_MAX, &settings.max_bytes) < 0)
                                return 2;
                        break;
                case ARG_MAX_PER_HOST: {
                        uint64_t n;
                        if (parse_count("max-per-host", optarg, CON_MESH_STREAM_MAX_PER_HOST_MAX, &n) < 0)
                                return 2;
                        settings.max_per_host = (unsigned) n;
                        break;
                }
                case ARG_REPLICAS: {
                        uint64_t n;
                        if (parse_count("replicas", optarg, CON_MESH_REPLICAS_MAX, &n) < 0)
                                return 2;
                        settings.replicas = (unsigned) n;
                        break;
                }
                case ARG_CHECK:
                        check = true;
                        break;
                case ARG_REPLACE:
                        replace = true;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return 2;
                }
        if ((!ca) != (!cert) || (!ca) != (!key) || !inbox || !servers || settings.retention_usec == 0 || settings.replicas == 0 ||
            settings.max_bytes == 0 || settings.max_per_host == 0 || optind >= argc) {
                fprintf(stderr, "con-mesh-streams: run by con mesh streams (see con mesh --help)\n");
                return 2;
        }
        for (int i = optind; i < argc; i++)
                if (!con_mesh_host_valid(argv[i])) {
                        fprintf(stderr, "con-mesh-streams: '%s' is not a valid host name\n", argv[i]);
                        return 2;
                }

        natsOptions *o = NULL;
        natsConnection *nc = NULL;
        jsCtx *js = NULL;
        natsStatus s = natsOptions_Create(&o);
        if (s == NATS_OK)
                s = natsOptions_SetServers(o, (const char **) servers, (int) strv_length(servers));
        if (s == NATS_OK)
                s = natsOptions_SetName(o, "con mesh streams");
        if (s == NATS_OK)
                s = natsOptions_SetCustomInboxPrefix(o, inbox);
        /* Without --ca: a plaintext mesh (insecure: true), where no user is checked. */
        if (s == NATS_OK && ca)
                s = natsOptions_SetSecure(o, true);
        if (s == NATS_OK && ca)
                s = natsOptions_LoadCATrustedCertificates(o, ca);
        if (s == NATS_OK && ca)
                s = natsOptions_LoadCertificatesChain(o, cert, key);
        if (s == NATS_OK)
                s = natsOptions_SetMaxReconnect(o, 0);
        if (s == NATS_OK)
                s = natsConnection_Connect(&nc, o);
        if (s == NATS_OK)
                s = natsConnection_JetStream(&js, nc, NULL);
        int bad = 0;
        if (s != NATS_OK) {
                printf("cannot connect to the NATS server as the mesh's administrator: %s\n", nats_text(s));
                bad = -1;
        }
        /* Each host's two streams, then con-state. */
        for (int i = optind; bad >= 0 && i < argc; i++)
                for (MeshStreamId id = MESH_STREAM_TASK; bad >= 0 && id <= MESH_STREAM_RESULT; id++)
                        bad = worst(bad, stream_of(js, id, argv[i], &settings, check, replace, &names));
        if (bad >= 0)
                bad = worst(bad, stream_of(js, MESH_STREAM_STATE, NULL, &settings, check, replace, &names));
        if (bad >= 0) {
                bad = worst(bad, other_streams(js, names));
        }
        fflush(stdout);
        jsCtx_Destroy(js);
        natsConnection_Destroy(nc);
        natsOptions_Destroy(o);
        nats_Close();
        return bad == 0 ? 0 : 1;
}
