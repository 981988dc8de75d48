/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "mesh-state.h"

int mesh_state_rank(const char *s) {
        if (!s)
                return -1;
        if (streq(s, "submitted"))
                return 0;
        if (streq(s, "accepted"))
                return 1;
        if (streq(s, "working"))
                return 2;
        if (streq(s, "completed") || streq(s, "failed") || streq(s, "canceled"))
                return 3;
        return -1;
}

int mesh_state_check(const char *subject, const MeshState *st, char **ret_publisher, const char **ret_why) {
        _cleanup_free_ char *origin = NULL, *publisher = NULL, *id = NULL;
        const char *why = NULL;
        int r = mesh_state_subject_parse(subject, &origin, &publisher, &id);
        if (r < 0)
                return r;
        const char *at = st->from ? strrchr(st->from, '@') : NULL;
        if (!at || !st->id || !st->host || mesh_state_rank(st->state) < 0)
                why = "it is not a state event";
        else if (!streq(st->id, id))
                why = "its subject is about another task";
        else if (!streq(at + 1, origin))
                why = "its subject names another origin than its sender's host";
        else if (streq(st->host, origin))
                why = "it names a task sent by a host to itself";
        else if (streq(publisher, st->host)) {
                if (streq(st->state, "submitted"))
                        why = "only the task's origin says it was submitted";
        } else if (streq(publisher, origin)) {
                if (!streq(st->state, "submitted"))
                        why = "only the host that runs the task says how it goes";
        } else
                why = "its publisher is neither the task's origin nor the host that runs it";
        if (!why)
                return 0;
        if (ret_why)
                *ret_why = why;
        if (ret_publisher)
                *ret_publisher = TAKE_PTR(publisher);
        return -EPERM;
}

static void entry_done(MeshStateEntry *e) {
        free(e->id);
        free(e->host);
        free(e->agent);
        free(e->from);
        free(e->state);
}

const MeshStateEntry *mesh_state_table_find(const MeshStateTable *t, const char *id, const char *host,
                                            const char *agent, const char *from) {
        /* Newest first: the events of a running task are about a recent one. */
        for (size_t i = t->n; i > 0; i--) {
                const MeshStateEntry *e = &t->entries[i - 1];
                if (streq(e->id, id) && streq(e->host, host) && streq(e->agent, agent) && streq(e->from, from))
                        return e;
        }
        return NULL;
}

int mesh_state_table_apply(MeshStateTable *t, const MeshState *st, uint64_t when_usec) {
        int rank = mesh_state_rank(st->state);
        if (rank < 0)
                return 0;
        MeshStateEntry *e = (MeshStateEntry *) mesh_state_table_find(t, st->id, st->host, st->agent, st->from);
        if (e) {
                bool changed = false;
                if (when_usec < e->since_usec) {
                        e->since_usec = when_usec;
                        changed = true;
                }
                if (rank > mesh_state_rank(e->state)) {
                        char *s = strdup(st->state);
                        if (!s)
                                return -ENOMEM;
                        free(e->state);
                        e->state = s;
                        e->updated_usec = when_usec;
                        changed = true;
                }
                return changed;
        }
        size_t max = t->max ?: MESH_STATE_KEEP;
        if (t->n >= max) {
                entry_done(&t->entries[0]);
                memmove(t->entries, t->entries + 1, sizeof(*t->entries) * (t->n - 1));
                t->n--;
        }
        MeshStateEntry n = { .id = strdup(st->id), .host = strdup(st->host), .agent = strdup(st->agent),
                             .from = strdup(st->from), .state = strdup(st->state), .since_usec = when_usec,
                             .updated_usec = when_usec };
        MeshStateEntry *a = n.id && n.host && n.agent && n.from && n.state ?
                            realloc(t->entries, sizeof(*a) * (t->n + 1)) : NULL;
        if (!a) {
                entry_done(&n);
                return -ENOMEM;
        }
        t->entries = a;
        a[t->n++] = n;
        return 1;
}

void mesh_state_table_done(MeshStateTable *t) {
        for (size_t i = 0; i < t->n; i++)
                entry_done(&t->entries[i]);
        free(t->entries);
        *t = (MeshStateTable) { .max = t->max };
}
