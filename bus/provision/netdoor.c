/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error-detail.h"
#include "fileio.h"
#include "macro.h"
#include "markers.h"
#include "names.h"
#include "netdoor.h"
#include "platform.h"
#include "policy-check.h"
#include "strv.h"

#define TABLE CON_NFT_FAMILY " " CON_NFT_TABLE

static int entry_rule(FILE *f, uid_t uid, const char *name, const ConNetAllow *a) {
        char addr[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN + 8], ports[64] = "";

        if (!inet_ntop(a->family, a->addr, addr, sizeof addr))
                return -EINVAL;
        unsigned bits = a->family == AF_INET ? 32 : 128;
        if (a->prefix == bits)
                snprintf(dst, sizeof dst, "%s", addr);
        else
                snprintf(dst, sizeof dst, "%s/%u", addr, a->prefix);
        if (a->port_min == a->port_max && a->port_min)
                snprintf(ports, sizeof ports, " meta l4proto { 6, 17 } th dport %u", a->port_min);
        else if (a->port_min)
                snprintf(ports, sizeof ports, " meta l4proto { 6, 17 } th dport %u-%u", a->port_min, a->port_max);
        fprintf(f, "\t\tmeta skuid %u %s daddr %s%s accept comment \"agent %s\"\n", (unsigned) uid,
                a->family == AF_INET ? "ip" : "ip6", dst, ports, name);
        return 0;
}

int con_netdoor_render(const ConNetdoorAgent *agents, size_t n, unsigned proxy_port, char **ret_script, char **ret_listing) {
        _cleanup_free_ char *body = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&body, &len);
        int r = 0;

        if (!f)
                return -ENOMEM;
        fputs("table " TABLE " {\n"
              "\tchain output {\n"
              "\t\ttype filter hook output priority 0; policy accept;\n", f);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                const ConNetdoorAgent *a = &agents[i];
                if (!con_agent_name_valid(a->name) || a->uid == 0) {
                        r = -EINVAL;
                        break;
                }
                /* An allow-list agent reaches the egress gateway (its host-name entries, and its
                 * addresses through the proxy); nothing else on loopback. */
                if (a->cut) {
                        /* Halted or quarantined: nothing leaves, whatever the policy allows. */
                        fprintf(f, "\t\tmeta skuid %u reject with icmpx 3 comment \"agent %s: network cut (%s)\"\n",
                                (unsigned) a->uid, a->name, streq(a->cut, "halted") ? "halted" : "quarantined");
                        continue;
                }
                if ((a->network->mode == CON_NETWORK_ALLOW || (a->egress && a->network->mode != CON_NETWORK_NONE)) &&
                    proxy_port > 0 && proxy_port <= 65535)
                        fprintf(f, "\t\tmeta skuid %u ip daddr 127.0.0.1 tcp dport %u accept comment \"agent %s: egress gateway\"\n",
                                (unsigned) a->uid, proxy_port, a->name);
                if (a->network->mode == CON_NETWORK_ALLOW)
                        for (size_t j = 0; r >= 0 && j < a->network->n_allow; j++)
                                if (!a->network->allow[j].host)
                                        r = entry_rule(f, a->uid, a->name, &a->network->allow[j]);
                /* icmpx 3 is admin-prohibited: nothing leaves; a TCP connect fails at once
                 * (EHOSTUNREACH), a UDP or ICMP send with EPERM. */
                fprintf(f, "\t\tmeta skuid %u reject with icmpx 3 comment \"agent %s: network %s\"\n", (unsigned) a->uid, a->name,
                        con_network_mode_to_string(a->network->mode));
        }
        fputs("\t}\n}\n", f);
        if (fclose(f) != 0 || !body)
                return -ENOMEM;
        if (r < 0)
                return r;
        if (ret_script) {
                /* Declaring the table first makes the delete succeed when there is none; all three
                 * are one transaction, so there is never a moment without the rules. */
                if (asprintf(ret_script, "table " TABLE "\ndelete table " TABLE "\n%s", body) < 0) {
                        *ret_script = NULL;
                        return -ENOMEM;
                }
        }
        if (ret_listing)
                *ret_listing = TAKE_PTR(body);
        return 0;
}

int con_netdoor_render_config(const ConConfig *c, char **ret_script, char **ret_listing, char ***ret_missing) {
        _cleanup_free_ ConNetdoorAgent *agents = calloc(c->n_agents + 1, sizeof(ConNetdoorAgent));
        _cleanup_strv_free_ char **missing = NULL, **quarantined = NULL;
        const char *halted = "";
        size_t n = 0;
        int r;

        if (!agents)
                return -ENOMEM;
        /* The markers decide what is cut; unreadable markers cut nothing here (the agents' own
         * services refuse work on them; con bootstrap still writes the policy's table). */
        if (con_marker_halted(CON_NETDOOR_STATE_DIR, &halted) < 0)
                halted = "";
        (void) con_marker_list_quarantined(CON_NETDOOR_STATE_DIR, &quarantined);
        for (size_t i = 0; i < c->n_agents; i++) {
                _cleanup_free_ char *user = NULL;
                r = con_agent_user(c->agents[i].name, &user);
                if (r < 0)
                        return r;
                errno = 0;
                struct passwd *pw = getpwnam(user);
                if (!pw) {
                        if (errno != 0 && errno != ENOENT && errno != ESRCH)
                                return -errno;
                        r = strv_extend(&missing, user);
                        if (r < 0)
                                return r;
                        continue;
                }
                agents[n++] = (ConNetdoorAgent) { .name = c->agents[i].name, .uid = pw->pw_uid,
                                                  .network = &c->agents[i].rt.network,
                                                  .egress = con_config_agent_uses_egress(c, &c->agents[i]) };
                if (streq(halted, "all") || (streq(halted, "workers") && c->agents[i].tier == CON_TIER_WORKER))
                        agents[n - 1].cut = "halted";
                else if (strv_contains(quarantined, c->agents[i].name))
                        agents[n - 1].cut = "quarantined";
        }
        r = con_netdoor_render(agents, n, c->egress.port, ret_script, ret_listing);
        if (r < 0)
                return r;
        if (ret_missing)
                *ret_missing = TAKE_PTR(missing);
        return 0;
}

/* Where the nftables package puts nft (Debian: /usr/sbin; /sbin on systems not merged into /usr),
 * in the order tried. */
static const char * const nft_paths[] = { "/usr/sbin/nft", "/sbin/nft" };

/* Runs nft with argv (after "nft"), stdin from `input` (may be NULL); stdout and stderr are
 * returned. Returns the exit status (>= 0) or a negative errno. */
static int run_nft(char * const *args, const char *input, char **ret_out, char **ret_err) {
        _cleanup_close_ int in = -EBADF, out = -EBADF, err = -EBADF;
        char *argv[8];
        size_t k = 0;
        int status;

        argv[k++] = (char *) "nft";
        for (; *args && k < ELEMENTSOF(argv) - 1; args++)
                argv[k++] = *args;
        argv[k] = NULL;

        out = memfd_create("nft-out", MFD_CLOEXEC);
        err = memfd_create("nft-err", MFD_CLOEXEC);
        if (out < 0 || err < 0)
                return negative_errno();
        if (input) {
                in = memfd_create("nft-in", MFD_CLOEXEC);
                if (in < 0)
                        return negative_errno();
                if (con_write_all(in, input, strlen(input)) < 0 || lseek(in, 0, SEEK_SET) < 0)
                        return -EIO;
        } else {
                in = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (in < 0)
                        return negative_errno();
        }
        pid_t pid = fork();
        if (pid < 0)
                return negative_errno();
        if (pid == 0) {
                char *envp[] = { (char *) "PATH=/usr/sbin:/usr/bin:/sbin:/bin", (char *) "LC_ALL=C", NULL };
                if (dup2(in, STDIN_FILENO) < 0 || dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0)
                        _exit(126);
                for (size_t i = 0; i < ELEMENTSOF(nft_paths); i++)
                        execve(nft_paths[i], argv, envp);
                dprintf(STDERR_FILENO, "cannot run nft (/usr/sbin/nft): %s; install the nftables package",
                        strerror(errno));
                _exit(127);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return negative_errno();
        char *o = NULL, *e = NULL;
        size_t lo = 0, le = 0;
        if (lseek(out, 0, SEEK_SET) < 0 || lseek(err, 0, SEEK_SET) < 0 ||
            read_fd(out, 1 << 20, &o, &lo) < 0 || read_fd(err, 64 << 10, &e, &le) < 0) {
                free(o);
                free(e);
                return -EIO;
        }
        while (le > 0 && (e[le - 1] == '\n' || e[le - 1] == ' '))
                e[--le] = 0;
        *ret_out = o;
        *ret_err = e;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool con_netdoor_nft_available(void) {
        for (size_t i = 0; i < ELEMENTSOF(nft_paths); i++)
                if (access(nft_paths[i], X_OK) >= 0)
                        return true;
        return false;
}

int con_netdoor_apply(const char *script, char **ret_error) {
        _cleanup_free_ char *out = NULL, *err = NULL;
        char *args[] = { (char *) "-f", (char *) "-", NULL };
        int r = run_nft(args, script, &out, &err);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot run nft: %s", strerror(-r));
        if (r != 0)
                return con_error_textf(ret_error, -EIO, "nft -f (table " TABLE ") failed (exit status %d): %s", r,
                              isempty(err) ? "no message" : err);
        return 0;
}

int con_netdoor_list(char **ret_listing, char **ret_error) {
        _cleanup_free_ char *out = NULL, *err = NULL;
        char *args[] = { (char *) "-n", (char *) "list", (char *) "table", (char *) CON_NFT_FAMILY,
                         (char *) CON_NFT_TABLE, NULL };
        int r = run_nft(args, NULL, &out, &err);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot run nft: %s", strerror(-r));
        if (r != 0) {
                if (err && strstr(err, "No such file or directory"))
                        return -ENOENT;
                return con_error_textf(ret_error, -EIO, "nft list table " TABLE " failed (exit status %d): %s", r,
                              isempty(err) ? "no message" : err);
        }
        *ret_listing = TAKE_PTR(out);
        return 0;
}

int con_netdoor_remove(char **ret_error) {
        return con_netdoor_apply("table " TABLE "\ndelete table " TABLE "\n", ret_error);
}

/* The first line where a and b differ (1-based), with both lines, for a message. */
static int first_difference(const char *a, const char *b, char **ret) {
        unsigned line = 1;
        for (;;) {
                size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
                if (la != lb || strncmp(a, b, la) != 0 || !a[la] != !b[lb]) {
                        size_t ta = strspn(a, "\t "), tb = strspn(b, "\t ");
                        ta = ta < la ? ta : la;
                        tb = tb < lb ? tb : lb;
                        if (asprintf(ret, "line %u is '%.*s' where the config generates '%.*s'", line, (int) (la - ta),
                                     a + ta, (int) (lb - tb), b + tb) < 0) {
                                *ret = NULL;
                                return -ENOMEM;
                        }
                        return 0;
                }
                if (!a[la])
                        break;
                a += la + 1;
                b += lb + 1;
                line++;
        }
        *ret = NULL;
        return 0;
}

int con_netdoor_check_units(const ConConfig *c, char ***drift) {
        ConPlatformFile *files = NULL;
        size_t n = 0;
        _cleanup_strv_free_ char **want = NULL;
        int r = con_platform_render(c, NULL, &files, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                if (!startswith(files[i].path, CON_SYSTEMD_UNIT_DIR "/con-agent@") ||
                    !endswith(files[i].path, ".service.d/" CON_AGENT_NETWORK_DROPIN))
                        continue;
                r = strv_extend(&want, files[i].path);
                if (r >= 0)
                        r = con_generated_file_check(files[i].path, files[i].content, drift);
        }
        con_platform_files_free(files, n);
        if (r < 0)
                return r;
        /* A drop-in the config no longer generates gives an agent a network it may not have. */
        _cleanup_strv_free_ char **names = NULL;
        r = con_netdoor_dropin_agents(&names);
        STRV_FOREACH(name, names) {
                _cleanup_free_ char *path = NULL;
                if (r >= 0)
                        r = con_netdoor_dropin_path(*name, NULL, &path);
                if (r >= 0 && !strv_contains(want, path))
                        r = strv_extendf(drift, "%s: the config does not generate it (the agent does not use the egress "
                                         "gateway); run con bootstrap", path);
        }
        return r;
}

int con_netdoor_dropin_path(const char *name, char **ret_dir, char **ret_path) {
        _cleanup_free_ char *dir = NULL, *path = NULL;
        if (asprintf(&dir, CON_SYSTEMD_UNIT_DIR "/con-agent@%s.service.d", name) < 0) {
                dir = NULL;
                return -ENOMEM;
        }
        if (asprintf(&path, "%s/" CON_AGENT_NETWORK_DROPIN, dir) < 0) {
                path = NULL;
                return -ENOMEM;
        }
        if (ret_dir)
                *ret_dir = TAKE_PTR(dir);
        if (ret_path)
                *ret_path = TAKE_PTR(path);
        return 0;
}

int con_netdoor_dropin_agents(char ***ret) {
        _cleanup_(closedirp) DIR *d = opendir(CON_SYSTEMD_UNIT_DIR);
        _cleanup_strv_free_ char **names = NULL;
        struct dirent *de;
        int r;

        if (!d && errno != ENOENT)
                return -errno;
        while (d && (de = readdir(d))) {
                const char *n = startswith(de->d_name, "con-agent@");
                _cleanup_free_ char *name = NULL, *path = NULL;
                if (!n || !endswith(n, ".service.d"))
                        continue;
                name = strndup(n, strlen(n) - strlen(".service.d"));
                if (!name)
                        return -ENOMEM;
                r = con_netdoor_dropin_path(name, NULL, &path);
                if (r < 0)
                        return r;
                if (access(path, F_OK) < 0)
                        continue;
                r = strv_consume(&names, TAKE_PTR(name));
                if (r < 0)
                        return r;
        }
        if (!names && !(names = calloc(1, sizeof(char *))))
                return -ENOMEM;
        *ret = TAKE_PTR(names);
        return 0;
}

int con_netdoor_check(const ConConfig *c, char ***drift, char **ret_error) {
        _cleanup_free_ char *want = NULL, *have = NULL, *diff = NULL;
        int r;

        r = con_netdoor_render_config(c, NULL, &want, NULL);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot render the nftables table: %s", strerror(-r));
        r = con_netdoor_list(&have, ret_error);
        if (r == -ENOENT)
                r = strv_extend(drift, "nftables table " TABLE ": missing; the config generates it (run con bootstrap)");
        else if (r >= 0)
                r = first_difference(have, want, &diff);
        if (r < 0)
                return r;
        if (diff) {
                r = strv_extendf(drift, "nftables table " TABLE ": %s (run con bootstrap)", diff);
                if (r < 0)
                        return r;
        }
        r = con_netdoor_check_units(c, drift);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot check the agent units' network drop-ins: %s", strerror(-r));
        return 0;
}

int con_netdoor_sync(const ConConfig *c, bool dry_run, char **ret_change, char **ret_error) {
        _cleanup_free_ char *script = NULL, *want = NULL, *have = NULL;
        _cleanup_strv_free_ char **missing = NULL;
        int r;

        *ret_change = NULL;
        r = con_netdoor_render_config(c, &script, &want, &missing);
        if (r < 0)
                return con_error_textf(ret_error, r, "cannot render the nftables table: %s", strerror(-r));
        r = con_netdoor_list(&have, ret_error);
        if (r < 0 && r != -ENOENT)
                return r;
        if (r >= 0 && streq(have, want))
                return 0;
        size_t n = 0;
        for (const char *p = want; (p = strstr(p, " reject with icmpx 3 comment ")); p++)
                n++;
        if (asprintf(ret_change, "%s nftables table " TABLE " (network door: %zu agent%s%s)", r == -ENOENT ? "create" : "replace",
                     n, n == 1 ? "" : "s", missing ? ", agents without a user yet left out" : "") < 0) {
                *ret_change = NULL;
                return -ENOMEM;
        }
        if (dry_run)
                return 0;
        return con_netdoor_apply(script, ret_error);
}

int con_netdoor_refresh(const ConConfig *c, char **ret_change, char **ret_error) {
        _cleanup_free_ char *have = NULL;
        int r;

        *ret_change = NULL;
        r = con_netdoor_list(&have, ret_error);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        return con_netdoor_sync(c, false, ret_change, ret_error);
}
