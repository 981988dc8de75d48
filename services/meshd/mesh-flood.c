/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "mesh-flood.h"

void mesh_flood_done(MeshFlood *f) {
        for (size_t i = 0; i < f->n_hosts; i++)
                free(f->hosts[i].host);
        free(f->hosts);
        f->hosts = NULL;
        f->n_hosts = 0;
}

static bool ended(const MeshFlood *f, const MeshFloodHost *h, uint64_t now) {
        return now >= h->start_usec + f->interval_usec;
}

/* An ended interval's count moves to pending (reported by mesh_flood_due). */
static void roll(const MeshFlood *f, MeshFloodHost *h, uint64_t now) {
        if (!ended(f, h, now))
                return;
        h->pending += h->suppressed;
        h->suppressed = 0;
        h->recorded = 0;
        h->start_usec = now;
}

static MeshFloodHost *find(MeshFlood *f, const char *host) {
        for (size_t i = 0; i < f->n_hosts; i++)
                if (streq(f->hosts[i].host, host))
                        return &f->hosts[i];
        return NULL;
}

static MeshFloodHost *append(MeshFlood *f, const char *host, uint64_t now) {
        MeshFloodHost *n = reallocarray(f->hosts, f->n_hosts + 1, sizeof(*n));
        if (!n)
                return NULL;
        f->hosts = n;
        char *copy = strdup(host);
        if (!copy)
                return NULL;
        n[f->n_hosts] = (MeshFloodHost) { .host = copy, .start_usec = now };
        return &n[f->n_hosts++];
}

static MeshFloodHost *add(MeshFlood *f, const char *host, uint64_t now) {
        if (f->n_hosts < MESH_FLOOD_HOSTS_MAX)
                return append(f, host, now);
        /* Full: a host with nothing to report and an ended interval makes room; else the shared
         * budget "*" (not a host name), one more. */
        for (size_t i = 0; i < f->n_hosts; i++) {
                MeshFloodHost *h = &f->hosts[i];
                if (ended(f, h, now) && h->suppressed == 0 && h->pending == 0 && !streq(h->host, "*")) {
                        char *copy = strdup(host);
                        if (!copy)
                                return NULL;
                        free(h->host);
                        *h = (MeshFloodHost) { .host = copy, .start_usec = now };
                        return h;
                }
        }
        return find(f, "*") ?: append(f, "*", now);
}

int mesh_flood_note(MeshFlood *f, const char *host, uint64_t now_usec) {
        MeshFloodHost *h = find(f, host) ?: add(f, host, now_usec);
        if (!h)
                return -ENOMEM;
        roll(f, h, now_usec);
        if (h->recorded < f->burst) {
                h->recorded++;
                return 1;
        }
        h->suppressed++;
        return 0;
}

int mesh_flood_due(MeshFlood *f, uint64_t now_usec, const char **ret_host, uint64_t *ret_count) {
        for (size_t i = 0; i < f->n_hosts; i++) {
                MeshFloodHost *h = &f->hosts[i];
                if (h->suppressed > 0 && ended(f, h, now_usec)) {
                        h->pending += h->suppressed;
                        h->suppressed = 0;
                }
                if (h->pending > 0) {
                        *ret_host = h->host;
                        *ret_count = h->pending;
                        h->pending = 0;
                        return 1;
                }
        }
        return 0;
}

uint64_t mesh_flood_next_usec(const MeshFlood *f) {
        uint64_t next = UINT64_MAX;
        for (size_t i = 0; i < f->n_hosts; i++) {
                const MeshFloodHost *h = &f->hosts[i];
                if (h->pending > 0)
                        return 0;
                if (h->suppressed > 0 && h->start_usec + f->interval_usec < next)
                        next = h->start_usec + f->interval_usec;
        }
        return next;
}
