/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include "config.h"

/* Platform files generated from the config: D-Bus policy, D-Bus activation files, polkit
 * rules, systemd units, under /etc and /usr/local (none in package-owned /usr: the polkit actions
 * file is static and installed with the project). Pure functions: config in, file texts out. Agent-controlled
 * strings are validated before they reach any file (names.h). */

/* The drop-in of con-agent@NAME.service that gives an agent using the egress gateway its network
 * (in CON_SYSTEMD_UNIT_DIR/con-agent@NAME.service.d/). */
#define CON_AGENT_NETWORK_DROPIN "50-con-network.conf"

typedef struct ConPlatformFile {
        char *path;             /* absolute target path, e.g. /etc/dbus-1/system.d/org.conspiracy.conf */
        char *content;
        mode_t mode;            /* 0644 unless stated */
} ConPlatformFile;

typedef struct ConPlatformOptions {
        const char *libexecdir; /* where con-agentd etc. live; default CON_LIBEXECDIR */
        const char *bindir;     /* where con and con-send live; default CON_BINDIR */
} ConPlatformOptions;

/* Renders every generated platform file for c, sorted by path. */
int con_platform_render(const ConConfig *c, const ConPlatformOptions *o, ConPlatformFile **ret_files,
                        size_t *ret_n);
void con_platform_files_free(ConPlatformFile *f, size_t n);
