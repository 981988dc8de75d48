/* SPDX-License-Identifier: MIT */
/* The mesh's JetStream streams: their configuration and what the server has (mesh-streams.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "mesh-state.h"
#include "mesh-streams.h"
#include "mesh-util.h"

void mesh_stream_config_done(MeshStreamConfig *c) {
        free(c->name);
        free(c->subject);
        *c = (MeshStreamConfig) {};
}

int mesh_stream_config(MeshStreamId id, const char *host, const MeshStreamSettings *settings, MeshStreamConfig *ret) {
        MeshStreamConfig c = {};
        int r;

        if (id == MESH_STREAM_STATE) {
                c.name = strdup(MESH_STATE_STREAM);
                c.subject = strdup(MESH_STATE_FILTER);
                if (!c.name || !c.subject) {
                        mesh_stream_config_done(&c);
                        return -ENOMEM;
                }
        } else {
                MeshKind k = id == MESH_STREAM_TASK ? MESH_KIND_TASK : MESH_KIND_RESULT;
                r = mesh_stream(k, host, &c.name);
                if (r >= 0)
                        r = mesh_subject_filter(k, host, &c.subject);
                if (r < 0) {
                        mesh_stream_config_done(&c);
                        return r;
                }
        }
        jsStreamConfig_Init(&c.cfg);
        c.cfg.Name = c.name;
        c.cfg.Storage = js_FileStorage;
        c.cfg.MaxAge = (int64_t) settings->retention_usec * 1000;
        c.cfg.Replicas = (int64_t) settings->replicas;
        if (id == MESH_STREAM_STATE) {
                /* The last event of each subject (task and publisher) for the retention. The
                 * server's duplicate window (2 min, or MaxAge when shorter) is not compared. */
                c.cfg.Retention = js_LimitsPolicy;
                c.cfg.MaxMsgsPerSubject = 1;
                c.cfg.MaxMsgs = 4 * MESH_STATE_KEEP;
                c.cfg.MaxMsgSize = MESH_STATE_MSG_MAX;
                c.cfg.MaxBytes = (int64_t) c.cfg.MaxMsgs * MESH_STATE_MSG_MAX;
                c.cfg.Discard = js_DiscardOld;
        } else {
                c.cfg.Retention = js_WorkQueuePolicy;
                c.cfg.MaxMsgSize = MESH_STREAM_MSG_MAX;
                /* Full, a new message is refused and its publisher told (a Submit's caller, a
                 * result sent again): a stored task or result is never dropped. The last subject
                 * token is the sending host, so one host fills only its own share. */
                c.cfg.MaxBytes = (int64_t) settings->max_bytes;
                c.cfg.MaxMsgsPerSubject = (int64_t) settings->max_per_host;
                c.cfg.Discard = js_DiscardNew;
                c.cfg.DiscardNewPerSubject = true;
                c.cfg.Duplicates = MESH_DUPLICATE_WINDOW_NS;
                c.check_duplicates = true;
        }
        *ret = c;
        /* The subject list points into *ret, not into the local copy. */
        ret->subjects[0] = ret->subject;
        ret->cfg.Subjects = ret->subjects;
        ret->cfg.SubjectsLen = 1;
        return 0;
}

static void shape_of(const jsStreamConfig *c, int64_t duplicates_ns, MeshStreamShape *ret) {
        *ret = (MeshStreamShape) {
                .subjects = (const char * const *) c->Subjects,
                .n_subjects = c->SubjectsLen > 0 ? (size_t) c->SubjectsLen : 0,
                .n_sources = c->SourcesLen > 0 ? (size_t) c->SourcesLen : 0,
                .mirror = c->Mirror != NULL,
                .republish = c->RePublish != NULL,
                .retention = (int) c->Retention,
                .storage = (int) c->Storage,
                .max_age_ns = c->MaxAge,
                .replicas = c->Replicas,
                .duplicates_ns = duplicates_ns,
                /* Unlimited is -1 from the server and may be 0 in a configuration. */
                .max_msgs = c->MaxMsgs > 0 ? c->MaxMsgs : -1,
                .max_msgs_per_subject = c->MaxMsgsPerSubject > 0 ? c->MaxMsgsPerSubject : -1,
                .max_bytes = c->MaxBytes > 0 ? c->MaxBytes : -1,
                .max_msg_size = c->MaxMsgSize > 0 ? c->MaxMsgSize : -1,
                .discard = (int) c->Discard,
                .discard_new_per_subject = c->DiscardNewPerSubject,
        };
}

natsStatus mesh_stream_inspect(jsCtx *js, const MeshStreamConfig *c, MeshStreamFound *ret_found, char **ret_text,
                               jsErrCode *jerr) {
        jsStreamInfo *si = NULL;
        MeshStreamShape have, want;

        *ret_text = NULL;
        *jerr = 0;
        natsStatus s = js_GetStreamInfo(&si, js, c->name, NULL, jerr);
        if (s == NATS_NOT_FOUND || (s != NATS_OK && *jerr == JSStreamNotFoundErr)) {
                *jerr = 0;
                *ret_found = MESH_STREAM_FOUND_MISSING;
                return NATS_OK;
        }
        if (s != NATS_OK)
                return s;
        if (!si->Config) {
                jsStreamInfo_Destroy(si);
                return NATS_ERR;
        }
        shape_of(si->Config, c->check_duplicates ? si->Config->Duplicates : -1, &have);
        shape_of(&c->cfg, c->check_duplicates ? c->cfg.Duplicates : -1, &want);
        int r = mesh_stream_shape_check(c->name, &have, &want, ret_text);
        jsStreamInfo_Destroy(si);
        if (r == -ENOMEM)
                return NATS_NO_MEMORY;
        *ret_found = r < 0 ? MESH_STREAM_FOUND_WRONG : r > 0 ? MESH_STREAM_FOUND_SETTINGS : MESH_STREAM_FOUND_OK;
        return NATS_OK;
}

bool mesh_stream_copies(const jsStreamConfig *cfg, const char *name) {
        if (cfg->Mirror && streq_ptr(cfg->Mirror->Name, name))
                return true;
        for (int i = 0; i < cfg->SourcesLen; i++)
                if (cfg->Sources[i] && streq_ptr(cfg->Sources[i]->Name, name))
                        return true;
        return false;
}
