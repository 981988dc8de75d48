/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "name-owners.h"

typedef struct Name {
        ConNameOwners *w;
        char *name;
        char *owner;                    /* NULL: none (or not known yet) */
        sd_bus_slot *call;              /* GetNameOwner on its way */
} Name;

struct ConNameOwners {
        sd_bus *bus;
        char *arg0;
        bool namespace;
        con_name_owner_changed_t on_change;
        void *userdata;
        sd_bus_slot *match;
        Name **names;                   /* pointers: a pending call keeps its Name across a realloc */
        size_t n_names;
};

/* A well-known bus name, as the match rule quotes it: elements of [A-Za-z0-9_-], dot-separated. */
static bool bus_name_ok(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 255 || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
                return false;
        for (const char *p = s; *p; p++)
                if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') || ('0' <= *p && *p <= '9') ||
                      *p == '_' || *p == '-' || *p == '.'))
                        return false;
        return true;
}

static bool covered(const ConNameOwners *w, const char *name) {
        size_t l = strlen(w->arg0);
        if (streq(name, w->arg0))
                return true;
        return w->namespace && strncmp(name, w->arg0, l) == 0 && name[l] == '.';
}

static Name *find(const ConNameOwners *w, const char *name) {
        for (size_t i = 0; i < w->n_names; i++)
                if (streq(w->names[i]->name, name))
                        return w->names[i];
        return NULL;
}

static void set_owner(Name *n, const char *owner) {
        if (isempty(owner))
                owner = NULL;
        if (streq_ptr(n->owner, owner))
                return;
        char *o = NULL;
        if (owner && !(o = strdup(owner)))
                return;         /* out of memory: keep the old value rather than claim none */
        free(n->owner);
        n->owner = o;
        if (n->w->on_change)
                n->w->on_change(n->w, n->name, n->owner, n->w->userdata);
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        ConNameOwners *w = userdata;
        const char *name, *old, *new;
        if (sd_bus_message_read(m, "sss", &name, &old, &new) < 0)
                return 0;
        Name *n = find(w, name);
        if (!n)
                return 0;
        /* Newer than whatever a GetNameOwner still on its way will say. */
        n->call = sd_bus_slot_unref(n->call);
        set_owner(n, new);
        return 0;
}

static int on_get_owner(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Name *n = userdata;
        const char *owner = NULL;
        n->call = sd_bus_slot_unref(n->call);
        /* An error is "no owner" (NameHasNoOwner): NameOwnerChanged tells when one comes. */
        if (!sd_bus_message_is_method_error(m, NULL) && sd_bus_message_read(m, "s", &owner) < 0)
                owner = NULL;
        set_owner(n, owner);
        return 0;
}

int con_name_owners_new(sd_bus *bus, const char *arg0, bool namespace, con_name_owner_changed_t on_change,
                        void *userdata, ConNameOwners **ret) {
        _cleanup_(con_name_owners_freep) ConNameOwners *w = NULL;
        _cleanup_free_ char *match = NULL;
        int r;

        if (!bus || !arg0 || !bus_name_ok(arg0) || !ret)
                return -EINVAL;
        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->bus = sd_bus_ref(bus);
        w->namespace = namespace;
        w->on_change = on_change;
        w->userdata = userdata;
        w->arg0 = strdup(arg0);
        if (!w->arg0)
                return -ENOMEM;
        if (asprintf(&match, "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                     "interface='org.freedesktop.DBus',member='NameOwnerChanged',%s='%s'",
                     namespace ? "arg0namespace" : "arg0", arg0) < 0)
                return -ENOMEM;
        /* Sent before any GetNameOwner: the driver then reports every change after its answer. */
        r = sd_bus_add_match_async(bus, &w->match, match, on_owner_changed, NULL, w);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(w);
        return 0;
}

int con_name_owners_add(ConNameOwners *w, const char *name) {
        if (!name || !bus_name_ok(name) || !covered(w, name))
                return -EINVAL;
        if (find(w, name))
                return 0;
        Name **a = realloc(w->names, (w->n_names + 1) * sizeof *a);
        if (!a)
                return -ENOMEM;
        w->names = a;
        Name *n = calloc(1, sizeof *n);
        if (!n)
                return -ENOMEM;
        n->w = w;
        n->name = strdup(name);
        if (!n->name) {
                free(n);
                return -ENOMEM;
        }
        w->names[w->n_names++] = n;
        int r = sd_bus_call_method_async(w->bus, &n->call, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                         "org.freedesktop.DBus", "GetNameOwner", on_get_owner, n, "s", name);
        return r < 0 ? r : 0;
}

const char *con_name_owners_get(const ConNameOwners *w, const char *name) {
        const Name *n = w && name ? find(w, name) : NULL;
        return n ? n->owner : NULL;
}

const char *con_name_owners_name_of(const ConNameOwners *w, const char *unique) {
        if (!w || isempty(unique))
                return NULL;
        for (size_t i = 0; i < w->n_names; i++)
                if (streq_ptr(w->names[i]->owner, unique))
                        return w->names[i]->name;
        return NULL;
}

ConNameOwners *con_name_owners_free(ConNameOwners *w) {
        if (!w)
                return NULL;
        for (size_t i = 0; i < w->n_names; i++) {
                sd_bus_slot_unref(w->names[i]->call);
                free(w->names[i]->name);
                free(w->names[i]->owner);
                free(w->names[i]);
        }
        free(w->names);
        sd_bus_slot_unref(w->match);
        free(w->arg0);
        sd_bus_unref(w->bus);
        free(w);
        return NULL;
}
