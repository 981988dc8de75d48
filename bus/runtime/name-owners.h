/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

#include <systemd/sd-bus.h>

/* Who owns some well-known names, kept current from the bus driver: one NameOwnerChanged match
 * restricted to the names by arg0 (one name) or arg0namespace (every name under a prefix), so the
 * service wakes only for its names, and one asynchronous GetNameOwner per name added (a change
 * signalled while that call is on its way wins over its answer). Nothing blocks. Used by the
 * router (its agents), the contract service (the model gateway) and the status page (agents and
 * services). */

typedef struct ConNameOwners ConNameOwners;

/* Called when the owner of a watched name changes: owner is its unique name, or NULL when it has
 * none. Also called for the first answer of GetNameOwner when the name has an owner. */
typedef void (*con_name_owner_changed_t)(ConNameOwners *w, const char *name, const char *owner, void *userdata);

/* Watches names equal to arg0 (namespace false) or in the namespace arg0 (arg0 itself or
 * arg0.*). on_change may be NULL (only the lookups below are used). Returns 0, -EINVAL for an
 * arg0 that is not a bus name, or a negative errno of sd-bus. */
int con_name_owners_new(sd_bus *bus, const char *arg0, bool namespace, con_name_owner_changed_t on_change,
                        void *userdata, ConNameOwners **ret);
ConNameOwners *con_name_owners_free(ConNameOwners *w);
static inline void con_name_owners_freep(ConNameOwners **w) {
        con_name_owners_free(*w);
}

/* Starts watching name (nothing when it is watched already) and asks for its owner. Returns 0,
 * -EINVAL when name is outside what the match covers, -ENOMEM. */
int con_name_owners_add(ConNameOwners *w, const char *name);

/* The unique name owning name, NULL when none (or not known yet, or name not watched). */
const char *con_name_owners_get(const ConNameOwners *w, const char *name);

/* The first watched name that unique owns, NULL when none: who a signal's sender speaks for. */
const char *con_name_owners_name_of(const ConNameOwners *w, const char *unique);
