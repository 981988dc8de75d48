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

/* The host mesh_state_check believed for ST: the origin says submitted, the host running it the rest. */
static const char *event_publisher(const MeshState *st) {
        if (streq(st->state, "submitted")) {
                const char *at = strrchr(st->from, '@');
                return at ? at + 1 : st->from;
        }
        return st->host;
}

static MeshStateOwner *owner_find(const MeshStateTable *t, const char *host) {
        for (size_t i = 0; i < t->n_owners; i++)
                if (t->owners[i].host == host || streq(t->owners[i].host, host))
                        return &t->owners[i];
        return NULL;
}

size_t mesh_state_table_owned(const MeshStateTable *t, const char *host) {
        const MeshStateOwner *o = owner_find(t, host);
        return o ? o->n : 0;
}

/* One more row charged to HOST; *ret_host the owner's string, which the row borrows. */
static int owner_charge(MeshStateTable *t, const char *host, const char **ret_host) {
        MeshStateOwner *o = owner_find(t, host);
        if (!o) {
                char *h = strdup(host);
                MeshStateOwner *a = h ? realloc(t->owners, sizeof(*a) * (t->n_owners + 1)) : NULL;
                if (!a) {
                        free(h);
                        return -ENOMEM;
                }
                t->owners = a;
                o = &a[t->n_owners++];
                *o = (MeshStateOwner) { .host = h };
        }
        o->n++;
        *ret_host = o->host;
        return 0;
}

/* One row less charged to HOST (a row's owner string): the owner goes with its last row. */
static void owner_discharge(MeshStateTable *t, const char *host) {
        MeshStateOwner *o = owner_find(t, host);
        if (!o || --o->n > 0)
                return;
        free(o->host);
        *o = t->owners[--t->n_owners];
}

static void entry_remove(MeshStateTable *t, size_t i) {
        owner_discharge(t, t->entries[i].owner);
        entry_done(&t->entries[i]);
        memmove(t->entries + i, t->entries + i + 1, sizeof(*t->entries) * (t->n - i - 1));
        t->n--;
}

/* The oldest row of the host charged with the most (of those with as many, the oldest row). */
static void evict_one(MeshStateTable *t) {
        size_t most = 0;
        for (size_t i = 0; i < t->n_owners; i++)
                if (t->owners[i].n > most)
                        most = t->owners[i].n;
        for (size_t i = 0; i < t->n; i++) {
                const MeshStateOwner *o = owner_find(t, t->entries[i].owner);
                if (!o || o->n == most) {
                        entry_remove(t, i);
                        return;
                }
        }
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
        int r, rank = mesh_state_rank(st->state);
        if (rank < 0 || !st->id || !st->host || !st->agent || !st->from)
                return 0;
        const char *publisher = event_publisher(st);
        MeshStateEntry *e = (MeshStateEntry *) mesh_state_table_find(t, st->id, st->host, st->agent, st->from);
        if (e) {
                bool changed = false;
                if (rank == 0 && !streq(e->owner, publisher)) {
                        /* The origin's task: charged to the origin from now on. */
                        const char *owner;
                        r = owner_charge(t, publisher, &owner);
                        if (r < 0)
                                return r;
                        owner_discharge(t, e->owner);
                        e->owner = owner;
                }
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
        while (t->n >= max)
                evict_one(t);
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
        r = owner_charge(t, publisher, &n.owner);
        if (r < 0) {
                entry_done(&n);
                return r;
        }
        a[t->n++] = n;
        return 1;
}

void mesh_state_table_done(MeshStateTable *t) {
        for (size_t i = 0; i < t->n; i++)
                entry_done(&t->entries[i]);
        free(t->entries);
        for (size_t i = 0; i < t->n_owners; i++)
                free(t->owners[i].host);
        free(t->owners);
        *t = (MeshStateTable) { .max = t->max };
}
