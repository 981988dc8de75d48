/* SPDX-License-Identifier: MIT */
/* One sweep of the shipped contracts CON-SYS-001..006 and CON-AGENT-001/002: native check kinds
 * in-process vs the original's shell form (sh -c 'RESULT=$(run); test' and its two scripts),
 * side by side in one run. Usage: bench-contracts [SWEEPS] [CONTRACTS-DIR] (default 20,
 * configs/default/contracts of the source tree). Run as root on a provisioned system for the
 * agent checks to have something to look at. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include "contract-check.h"
#include "strv.h"
#include "time-util.h"

/* The original's shell form (upstream-facts §4.7), scripts inlined as their essential loops. */
static const char * const shell_checks[] = {
        "RESULT=$(df /srv/con --output=pcent | tail -1 | tr -d ' %' | xargs -I{} expr 100 - {}); [ $RESULT -ge 15 ]",
        "RESULT=$(free | awk '/^Mem:/ {printf \"%.0f\", $7/$2 * 100}'); [ $RESULT -ge 10 ]",
        "RESULT=$(awk -v n=\"$(nproc)\" '{ printf \"%d\", $1 * 100 / n }' /proc/loadavg); [ $RESULT -le 200 ]",
        "RESULT=$(ps -eo user,etimes,args --no-headers | grep '^a-' | grep '[c]on run' | awk '{if ($2 > 1800) print $1}' | head -1); [ -z \"$RESULT\" ]",
        "RESULT=$(touch /srv/con/logs/audit/.healthcheck-probe && rm /srv/con/logs/audit/.healthcheck-probe && echo ok); [ \"$RESULT\" = \"ok\" ]",
        "RESULT=$(stat -c '%U %G %a' /etc/con/env 2>/dev/null); echo \"$RESULT\" | awk '{ exit !($1 == \"root\" && $2 == \"root\" && $3 == \"600\") }'",
        "for d in /srv/con/agents/*/; do n=$(basename $d); id a-$n >/dev/null 2>&1 || exit 1; "
        "stat -c '%U %a' $d >/dev/null; for s in inbox outbox workspace processed; do stat -c %U $d/$s >/dev/null || exit 1; done; "
        "test -f /home/a-$n/AGENTS.md || exit 1; done; stat -c '%a %U:%G' /srv/con/inbox >/dev/null",
        "for f in /home/a-*/AGENTS.md; do [ -e \"$f\" ] || continue; [ \"$(stat -c '%U:%G %a' $f)\" = 'root:root 444' ] || exit 1; done",
};

static int run_sh(const char *script) {
        pid_t pid = fork();
        if (pid == 0) {
                freopen("/dev/null", "w", stdout);
                freopen("/dev/null", "w", stderr);
                execl("/bin/sh", "sh", "-c", script, (char *) NULL);
                _exit(127);
        }
        int st;
        (void) waitpid(pid, &st, 0);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(int argc, char *argv[]) {
        unsigned sweeps = argc > 1 ? (unsigned) atoi(argv[1]) : 20;
        const char *dir = argc > 2 ? argv[2] : CON_SOURCE_DIR "/configs/default/contracts";
        static const char * const ids[] = { "CON-SYS-001", "CON-SYS-002", "CON-SYS-003", "CON-SYS-004", "CON-SYS-005",
                                            "CON-SYS-006", "CON-AGENT-001", "CON-AGENT-002" };
        Contract *cs[8] = {};
        ConConfig *config = NULL;
        ConErrorDetail cerr = {};
        if (sweeps == 0)
                sweeps = 1;
        (void) con_config_load("/etc/con/con.yaml", &config, &cerr);
        for (size_t i = 0; i < 8; i++) {
                char path[512];
                ConErrorDetail e = {};
                snprintf(path, sizeof path, "%s/%s.yaml", dir, ids[i]);
                if (contract_load_file(path, &cs[i], &e) < 0) {
                        fprintf(stderr, "bench-contracts: %s: %s\n", path, e.message ? e.message : "cannot load");
                        return 1;
                }
        }
        CheckContext ctx = { .config = config };
        unsigned nfail = 0;
        uint64_t t0 = con_now(CLOCK_MONOTONIC);
        for (unsigned s = 0; s < sweeps; s++)
                for (size_t i = 0; i < 8; i++)
                        for (size_t j = 0; j < cs[i]->n_checks; j++) {
                                char *m = NULL;
                                if (contract_check_native(cs[i], &cs[i]->checks[j], &ctx, &m) <= 0)
                                        nfail++;
                                free(m);
                        }
        uint64_t native = (con_now(CLOCK_MONOTONIC) - t0) / sweeps;
        unsigned sfail = 0;
        t0 = con_now(CLOCK_MONOTONIC);
        for (unsigned s = 0; s < sweeps; s++)
                for (size_t i = 0; i < 8; i++)
                        if (run_sh(shell_checks[i]) != 0)
                                sfail++;
        uint64_t shell = (con_now(CLOCK_MONOTONIC) - t0) / sweeps;
        printf("contracts: 8 (CON-SYS-001..006, CON-AGENT-001/002), sweeps: %u\n", sweeps);
        printf("native (in-process):   %8.3f ms per sweep  (%u failing checks in total)\n", native / 1000.0, nfail);
        printf("shell (original form): %8.3f ms per sweep  (%u failing checks in total)\n", shell / 1000.0, sfail);
        printf("speed-up: %.0fx\n", native ? (double) shell / (double) native : 0.0);
        for (size_t i = 0; i < 8; i++)
                contract_free(cs[i]);
        con_config_free(config);
        con_error_detail_done(&cerr);
        return 0;
}
