/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdio.h>

/* The `con` command: one file per subcommand (con-<verb>.c), each exporting a verb function
 * listed in the table of con.c. A verb gets argv starting at its own name and returns the
 * process exit status. Exit statuses shared by all verbs: */

#define CON_EXIT_OK        0
#define CON_EXIT_FAILURE   1    /* the operation failed */
#define CON_EXIT_USAGE     2    /* bad command line */
#define CON_EXIT_NOT_ROOT  3    /* the verb needs root */
#define CON_EXIT_CONFIG    4    /* the configuration is invalid; nothing was changed */

typedef int (*ConVerbFn)(int argc, char *argv[]);

int verb_bootstrap(int argc, char *argv[]);
/* The bus and the running fabric services re-read their configuration (con-fabric.c). */
int con_reload_services(void);
/* Only the egress gateway: SIGHUP, so it reads the config and the services' secrets (in
 * /etc/con/env, which bootstrap does not compare) again. 0 when none runs. */
int con_reload_egress(void);
/* con-fabric.c */
int verb_up(int argc, char *argv[]);
int verb_down(int argc, char *argv[]);
int verb_status(int argc, char *argv[]);
int verb_agents(int argc, char *argv[]);
int verb_tasks(int argc, char *argv[]);
int verb_task(int argc, char *argv[]);
int verb_cancel(int argc, char *argv[]);
int verb_run(int argc, char *argv[]);
int verb_route_inbox(int argc, char *argv[]);
int verb_audit(int argc, char *argv[]);
/* con-contracts.c */
int verb_healthcheck(int argc, char *argv[]);
int verb_contracts(int argc, char *argv[]);
int verb_resume(int argc, char *argv[]);
int verb_quarantine(int argc, char *argv[]);
int verb_release(int argc, char *argv[]);
/* con-agent.c */
int verb_agent(int argc, char *argv[]);
/* con-policy.c */
int verb_policy(int argc, char *argv[]);
/* con-mesh.c */
int verb_mesh(int argc, char *argv[]);
/* The tasks between any two hosts of the mesh (ListStates on this host's gateway: root sees all,
 * anyone else the tasks they sent from here): those not ended and those that ended in the last
 * CON_MESH_STATES_RECENT_SEC. JSON: an array KEY of OBJ. Otherwise a table, newest first, at most
 * MAX rows (0: all). 0 when shown, 0 with nothing shown when the gateway is not on the bus (JSON:
 * KEY null), a negative errno when it could not be asked. */
#define CON_MESH_STATES_RECENT_SEC 600
typedef struct sd_bus sd_bus;
struct cJSON;
int con_mesh_show_states(sd_bus *bus, struct cJSON *obj, const char *key, size_t max);
/* con-mesh-pki.c: con mesh init | issue | server-config */
bool con_mesh_pki_subcommand(const char *sub);
int con_mesh_pki(int argc, char *argv[]);
void con_mesh_pki_help(FILE *f);

/* con-enable.c: the enablement links under /etc/systemd/system for the config at CONFIG_PATH;
 * under systemd also daemon-reload and start. 0 or a CON_EXIT_* status (message printed). */
/* restart: agents whose network drop-in changed (more are added: drop-ins removed here); under
 * systemd their running units are restarted (try-restart) after the daemon-reload. */
int con_enable_fabric(const char *config_path, bool dry_run, unsigned *checked, unsigned *changed, char ***restart);
/* con-fabric.c: runs ARGV (PATH lookup), returns its exit status or -errno. */
int con_run_command(char *const argv[]);

/* Prints "con: " + message to stderr, returns status. */
int con_fail(int status, const char *fmt, ...) __attribute__((__format__(printf, 2, 3)));
