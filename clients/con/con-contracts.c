/* SPDX-License-Identifier: MIT */
/* The contract verbs of `con`: healthcheck, contracts, resume, quarantine, release. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <systemd/sd-bus.h>

#include "json-util.h"
#include "con-paths.h"
#include "con.h"
#include "config.h"
#include "contract-check.h"
#include "errors.h"
#include "macro.h"
#include "strv.h"
#include "time-util.h"

typedef struct Opts {
        bool json;
        bool local;
        const char *config;
        const char *dir;
        const char *reason;
} Opts;

static int parse(int argc, char *argv[], const char *verb, const char *usage, Opts *o) {
        enum { ARG_JSON = 0x100, ARG_CONFIG, ARG_DIR, ARG_REASON, ARG_LOCAL };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "json", no_argument, NULL, ARG_JSON },
                { "config", required_argument, NULL, ARG_CONFIG },
                { "contracts-dir", required_argument, NULL, ARG_DIR },
                { "reason", required_argument, NULL, ARG_REASON },
                { "local", no_argument, NULL, ARG_LOCAL },
                {}
        };
        int c;
        *o = (Opts) { .config = CON_CONFIG_PATH, .dir = CONTRACT_DIR_DEFAULT };
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        fputs(usage, stdout);
                        return 0;
                case ARG_JSON:
                        o->json = true;
                        break;
                case ARG_CONFIG:
                        o->config = optarg;
                        break;
                case ARG_DIR:
                        o->dir = optarg;
                        o->local = true;
                        break;
                case ARG_REASON:
                        o->reason = optarg;
                        break;
                case ARG_LOCAL:
                        o->local = true;
                        break;
                default:
                        con_fail(CON_EXIT_USAGE, "%s: see 'con %s --help'", verb, verb);
                        return -EINVAL;
                }
        return 1;
}

static bool service_running(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int b = 0;
        if (!bus || sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                       "NameHasOwner", NULL, &reply, "s", CON_CONTRACTS_BUS_NAME) < 0)
                return false;
        return sd_bus_message_read(reply, "b", &b) >= 0 && b;
}

/* ---- healthcheck ---- */

/* What 'con healthcheck' found: printed line by line, or with --json collected into
 * {"source","results":[check result...],"invalid":[...],"passed","failed","skipped"}. */
typedef struct Tally {
        unsigned passed, failed, skipped, invalid;
        cJSON *results, *invalids;      /* with --json */
} Tally;

/* The check result object, the same in 'con healthcheck --json' and 'con contracts --json'. */
static cJSON *check_result_json(const char *id, const char *check, const char *status, const char *message,
                                uint64_t time_usec, uint64_t duration_usec) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
                return NULL;
        if (!cJSON_AddStringToObject(o, "contract", id) || !cJSON_AddStringToObject(o, "check", check) ||
            !cJSON_AddStringToObject(o, "status", status) || !cJSON_AddStringToObject(o, "message", message) ||
            !con_json_add_u64(o, "time_usec", time_usec) || !con_json_add_u64(o, "duration_usec", duration_usec)) {
                cJSON_Delete(o);
                return NULL;
        }
        return o;
}

static void print_result(const char *id, const char *check, const char *status, const char *message,
                         uint64_t time_usec, uint64_t usec, Tally *t) {
        bool skip = streq(status, "skip"), pass = streq(status, "pass");
        if (skip)
                t->skipped++;
        else if (pass)
                t->passed++;
        else
                t->failed++;
        if (t->results) {
                cJSON_AddItemToArray(t->results, check_result_json(id, check, status, strempty(message), time_usec, usec));
                return;
        }
        if (skip) {
                printf("%s SKIP %s\n", id, *check ? check : "-");
                return;
        }
        printf("%s %s %s (%" PRIu64 "ms)\n", id, pass ? "PASS" : "FAIL", check, usec / USEC_PER_MSEC);
        if (!pass && !isempty(message))
                printf("    %s\n", message);
}

static void print_invalid_one(const char *location, const char *reason, Tally *t) {
        t->invalid++;
        if (t->invalids) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "location", location);
                cJSON_AddStringToObject(o, "reason", reason);
                cJSON_AddItemToArray(t->invalids, o);
        } else
                printf("INVALID %s: %s\n", location, reason);
}

/* The summary line, or with --json the whole document. Returns the exit status. */
static int print_summary(const char *source, cJSON *doc, Tally *t) {
        if (doc) {
                cJSON_AddStringToObject(doc, "source", source);
                cJSON_AddItemToObject(doc, "results", t->results);
                cJSON_AddItemToObject(doc, "invalid", t->invalids);
                con_json_add_u64(doc, "passed", t->passed);
                con_json_add_u64(doc, "failed", t->failed);
                con_json_add_u64(doc, "skipped", t->skipped);
                _cleanup_free_ char *s = cJSON_PrintUnformatted(doc);
                if (!s)
                        return con_fail(CON_EXIT_FAILURE, "healthcheck: out of memory");
                puts(s);
        } else {
                printf("summary: %u passed, %u failed, %u skipped", t->passed, t->failed, t->skipped);
                if (t->invalid)
                        printf(", %u invalid", t->invalid);
                printf("\n");
        }
        return t->failed || t->invalid ? CON_EXIT_FAILURE : CON_EXIT_OK;
}

/* With --json: the document and the two arrays of the tally; they go into the document in
 * print_summary(). */
static int tally_json(cJSON **ret_doc, Tally *t) {
        *ret_doc = cJSON_CreateObject();
        t->results = cJSON_CreateArray();
        t->invalids = cJSON_CreateArray();
        if (!*ret_doc || !t->results || !t->invalids) {
                cJSON_Delete(t->results);
                cJSON_Delete(t->invalids);
                t->results = t->invalids = NULL;
                return con_fail(CON_EXIT_FAILURE, "healthcheck: out of memory");
        }
        return 0;
}

/* A shell check run synchronously, with its timeout. 1 pass, 0 fail. */
static int run_shell(const ContractCheck *ch, const char *dir, char **ret_message) {
        pid_t pid;
        _cleanup_close_ int fd = -EBADF;
        char buf[4096];
        int r = contract_shell_spawn(ch, dir, &pid, &fd);
        if (r < 0)
                return asprintf(ret_message, "cannot start the check: %s", strerror(-r)) < 0 ? -ENOMEM : 0;
        uint64_t end = con_now(CLOCK_MONOTONIC) + ch->timeout_usec;
        int status = 0;
        bool timed_out = false;
        for (;;) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid)
                        break;
                uint64_t n = con_now(CLOCK_MONOTONIC);
                if (n >= end) {
                        (void) kill(-pid, SIGKILL);
                        (void) waitpid(pid, &status, 0);
                        timed_out = true;
                        break;
                }
                struct pollfd p = { .fd = fd, .events = POLLIN };
                uint64_t left = (end - n) / USEC_PER_MSEC;
                if (poll(&p, 1, left > 50 ? 50 : (int) left + 1) > 0 && read(fd, buf, sizeof buf) <= 0)
                        fd = safe_close(fd);      /* EOF: just wait for the exit */
                if (fd < 0)
                        usleep(5000);
        }
        (void) kill(-pid, SIGKILL);
        if (timed_out)
                return asprintf(ret_message, "timed out after %" PRIu64 " s and was killed",
                                ch->timeout_usec / USEC_PER_SEC) < 0 ? -ENOMEM : 0;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return asprintf(ret_message, "exit status 0") < 0 ? -ENOMEM : 1;
        if (WIFEXITED(status))
                return asprintf(ret_message, "exit status %d", WEXITSTATUS(status)) < 0 ? -ENOMEM : 0;
        return asprintf(ret_message, "killed by signal %s", strsignal(WTERMSIG(status))) < 0 ? -ENOMEM : 0;
}

static int healthcheck_local(const Opts *o) {
        _cleanup_(con_config_freep) ConConfig *config = NULL;
        _cleanup_(con_error_detail_done) ConErrorDetail cerr = {};
        _cleanup_strv_free_ char **files = NULL;
        _cleanup_(cJSON_Deletep) cJSON *doc = NULL;
        Tally t = {};
        int r;

        if (o->json && tally_json(&doc, &t) != 0)
                return CON_EXIT_FAILURE;
        r = con_config_load(o->config, &config, &cerr);
        if (r < 0) {
                _cleanup_free_ char *s = con_error_detail_format(&cerr);
                fprintf(stderr, "con: healthcheck: %s; using the default thresholds and no agents\n", s ?: strerror(-r));
        }
        r = contract_dir_list(o->dir, &files);
        if (r < 0 || !files) {
                if (!o->json)
                        printf("no contracts found%s%s\n", r < 0 ? ": " : " in ", r < 0 ? strerror(-r) : o->dir);
                else
                        fprintf(stderr, "con: healthcheck: no contracts found%s%s\n", r < 0 ? ": " : " in ",
                                r < 0 ? strerror(-r) : o->dir);
                return print_summary("local", doc, &t);
        }
        CheckContext ctx = { .config = config, .config_path = o->config };
        STRV_FOREACH(f, files) {
                _cleanup_(contract_freep) Contract *c = NULL;
                _cleanup_(con_error_detail_done) ConErrorDetail err = {};
                r = contract_load_file(*f, &c, &err);
                if (r < 0) {
                        /* As con-contractd names it: FILE[:LINE], the reason. */
                        _cleanup_free_ char *loc = NULL;
                        if (err.line > 0 ? asprintf(&loc, "%s:%u", *f, err.line) < 0 : !(loc = strdup(*f)))
                                return con_fail(CON_EXIT_FAILURE, "healthcheck: out of memory");
                        /* The reason with its key path, as con-contractd gives it. */
                        ConErrorDetail why = { .key = err.key, .message = err.message };
                        _cleanup_free_ char *reason = err.message ? con_error_detail_format(&why) : NULL;
                        print_invalid_one(loc, reason ?: strerror(-r), &t);
                        continue;
                }
                if (c->type == CONTRACT_PREVENTIVE) {
                        print_result(c->id, "", "skip", NULL, con_now(CLOCK_REALTIME), 0, &t);
                        continue;
                }
                for (size_t i = 0; i < c->n_checks; i++) {
                        const ContractCheck *ch = &c->checks[i];
                        _cleanup_free_ char *m = NULL;
                        uint64_t start = con_now(CLOCK_MONOTONIC), when = con_now(CLOCK_REALTIME);
                        r = check_kind_is_shell(ch->kind) ? run_shell(ch, o->dir, &m) : contract_check_native(c, ch, &ctx, &m);
                        print_result(c->id, ch->name, r > 0 ? "pass" : "fail", m, when, con_now(CLOCK_MONOTONIC) - start, &t);
                }
        }
        return print_summary("local", doc, &t);
}

/* The service's invalid contracts, printed or (t->invalids) collected. */
static void print_invalid(sd_bus *bus, Tally *t) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *loc, *reason;
        if (sd_bus_get_property(bus, CON_CONTRACTS_BUS_NAME, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "Invalid", &e,
                                &reply, "a(ss)") < 0 || sd_bus_message_enter_container(reply, 'a', "(ss)") < 0)
                return;
        while (sd_bus_message_read(reply, "(ss)", &loc, &reason) > 0)
                print_invalid_one(loc, reason, t);
}

static const char healthcheck_usage[] =
        "Usage: con healthcheck [--local] [--contracts-dir DIR] [--config FILE] [--json]\n"
        "\n"
        "Evaluate every health contract once and print one line per check:\n"
        "  ID PASS|FAIL CHECK (MS ms)   (failures followed by what was found)\n"
        "and a summary 'N passed, N failed, N skipped'. Malformed contracts are printed as\n"
        "'INVALID FILE:LINE:COLUMN: reason'; the others are still evaluated. Through con-contractd\n"
        "when it runs (its actions apply), else in this process (report only, no actions).\n"
        "--local or --contracts-dir: always in this process. --json prints one JSON document\n"
        "instead: the check results, the invalid contracts and the counts (docs/CLI.md). Needs root.\n"
        "\n"
        "Exit status: 0 all passed, 1 a check failed or a contract is invalid, 2 usage, 3 not root.\n";

int verb_healthcheck(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(cJSON_Deletep) cJSON *doc = NULL;
        Opts o;
        Tally t = {};
        int r = parse(argc, argv, "healthcheck", healthcheck_usage, &o);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (optind < argc)
                return con_fail(CON_EXIT_USAGE, "healthcheck: unexpected argument '%s'", argv[optind]);
        if (geteuid() != 0)
                return con_fail(CON_EXIT_NOT_ROOT, "healthcheck: needs root (contracts read every agent's files)");
        if (o.local || sd_bus_open_system(&bus) < 0 || !service_running(bus))
                return healthcheck_local(&o);
        (void) con_bus_errors_register();
        r = sd_bus_call_method(bus, CON_CONTRACTS_BUS_NAME, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "Evaluate", &e,
                               &reply, NULL);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "healthcheck: %s: %s", CON_CONTRACTS_BUS_NAME, e.message ?: strerror(-r));
        r = sd_bus_message_enter_container(reply, 'a', "(sssstt)");
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "healthcheck: bad reply from con-contractd: %s", strerror(-r));
        if (o.json && tally_json(&doc, &t) != 0)
                return CON_EXIT_FAILURE;
        const char *id, *check, *status, *message;
        uint64_t time, dur;
        while ((r = sd_bus_message_read(reply, "(sssstt)", &id, &check, &status, &message, &time, &dur)) > 0)
                print_result(id, check, status, message, time, dur, &t);
        print_invalid(bus, &t);
        return print_summary("service", doc, &t);
}

/* ---- contracts ---- */

static const char contracts_usage[] =
        "Usage: con contracts [--json]\n"
        "\n"
        "List the contracts con-contractd runs, with each check's last result and when it ran,\n"
        "the invalid files, and the halt and quarantine state. Needs con-contractd.\n"
        "\n"
        "Exit status: 0 ok, 1 con-contractd is not running or did not answer, 2 usage error.\n";

int verb_contracts(int argc, char *argv[]) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *list = NULL, *res = NULL, *halted = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_strv_free_ char **quarantined = NULL;
        _cleanup_(cJSON_Deletep) cJSON *root = NULL;
        const char *halt = "";
        Opts o;
        int r = parse(argc, argv, "contracts", contracts_usage, &o);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (optind < argc)
                return con_fail(CON_EXIT_USAGE, "contracts: unexpected argument '%s'", argv[optind]);
        if (sd_bus_open_system(&bus) < 0 || !service_running(bus))
                return con_fail(CON_EXIT_FAILURE, "contracts: con-contractd is not running (start it with 'con up'; "
                                "'con healthcheck' works without it)");
        r = sd_bus_call_method(bus, CON_CONTRACTS_BUS_NAME, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "List", &e, &list, NULL);
        if (r >= 0)
                r = sd_bus_get_property(bus, CON_CONTRACTS_BUS_NAME, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "Results",
                                        &e, &res, "a(sssstt)");
        if (r >= 0)
                r = sd_bus_get_property(bus, CON_CONTRACTS_BUS_NAME, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, "Halted",
                                        &e, &halted, "s");
        if (r >= 0)
                r = sd_bus_get_property_strv(bus, CON_CONTRACTS_BUS_NAME, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE,
                                             "Quarantined", &e, &quarantined);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "contracts: %s", e.message ?: strerror(-r));
        (void) sd_bus_message_read(halted, "s", &halt);

        root = cJSON_CreateObject();
        cJSON *arr = cJSON_AddArrayToObject(root, "contracts");
        const char *id, *file, *type, *scope, *desc, *check, *status, *message;
        uint64_t freq, time, dur;
        if (sd_bus_message_enter_container(list, 'a', "(ssssts)") < 0)
                return con_fail(CON_EXIT_FAILURE, "contracts: bad reply");
        while (sd_bus_message_read(list, "(ssssts)", &id, &file, &type, &scope, &freq, &desc) > 0) {
                cJSON *c = cJSON_CreateObject();
                cJSON_AddStringToObject(c, "id", id);
                cJSON_AddStringToObject(c, "file", file);
                cJSON_AddStringToObject(c, "type", type);
                cJSON_AddStringToObject(c, "scope", scope);
                cJSON_AddStringToObject(c, "description", desc);
                con_json_add_u64(c, "frequency_usec", freq);
                cJSON_AddArrayToObject(c, "checks");
                cJSON_AddItemToArray(arr, c);
        }
        if (sd_bus_message_enter_container(res, 'a', "(sssstt)") < 0)
                return con_fail(CON_EXIT_FAILURE, "contracts: bad reply");
        while (sd_bus_message_read(res, "(sssstt)", &id, &check, &status, &message, &time, &dur) > 0) {
                cJSON *c;
                cJSON_ArrayForEach(c, arr)
                        if (streq(cJSON_GetObjectItem(c, "id")->valuestring, id))
                                cJSON_AddItemToArray(cJSON_GetObjectItem(c, "checks"),
                                                     check_result_json(id, check, status, message, time, dur));
        }
        Tally t = { .invalids = cJSON_AddArrayToObject(root, "invalid") };
        if (o.json)
                print_invalid(bus, &t);
        if (isempty(halt))
                cJSON_AddNullToObject(root, "halted");
        else
                cJSON_AddStringToObject(root, "halted", halt);
        cJSON *q = cJSON_AddArrayToObject(root, "quarantined");
        STRV_FOREACH(a, quarantined)
                cJSON_AddItemToArray(q, cJSON_CreateString(*a));

        if (o.json) {
                _cleanup_free_ char *s = cJSON_PrintUnformatted(root);
                if (!s)
                        return con_fail(CON_EXIT_FAILURE, "contracts: out of memory");
                puts(s);
                return CON_EXIT_OK;
        }
        cJSON *c;
        cJSON_ArrayForEach(c, arr) {
                printf("%-16s %-10s %-14s every %gs  %s\n", cJSON_GetObjectItem(c, "id")->valuestring,
                       cJSON_GetObjectItem(c, "type")->valuestring, cJSON_GetObjectItem(c, "scope")->valuestring,
                       (double) con_json_get_u64(cJSON_GetObjectItem(c, "frequency_usec")) / USEC_PER_SEC,
                       cJSON_GetObjectItem(c, "file")->valuestring);
                cJSON *r2;
                cJSON_ArrayForEach(r2, cJSON_GetObjectItem(c, "checks")) {
                        char when[64] = "never";
                        time_t tt = (time_t) (con_json_get_u64(cJSON_GetObjectItem(r2, "time_usec")) / USEC_PER_SEC);
                        struct tm tm;
                        if (tt > 0 && gmtime_r(&tt, &tm))
                                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
                        printf("    %-28s %-7s %s  %s\n", cJSON_GetObjectItem(r2, "check")->valuestring,
                               cJSON_GetObjectItem(r2, "status")->valuestring, when,
                               cJSON_GetObjectItem(r2, "message")->valuestring);
                }
        }
        t.invalids = NULL;
        print_invalid(bus, &t);
        printf("halted: %s\n", *halt ? halt : "no");
        _cleanup_free_ char *ql = strv_join(quarantined, ", ");
        printf("quarantined: %s\n", !isempty(ql) ? ql : "none");
        return CON_EXIT_OK;
}

/* ---- resume / quarantine / release ---- */

static int simple_call(const char *verb, const char *method, const char *types, const char *a1, const char *a2) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        /* No local root check: the service decides (polkit's org.conspiracy.contracts.admin). */
        if (sd_bus_open_system(&bus) < 0 || !service_running(bus))
                return con_fail(CON_EXIT_FAILURE, "%s: con-contractd is not running (start it with 'con up')", verb);
        (void) con_bus_errors_register();
        int r = sd_bus_call_method(bus, CON_CONTRACTS_BUS_NAME, CON_CONTRACTS_PATH, CON_CONTRACTS_INTERFACE, method, &e,
                                   NULL, types, a1, a2);
        if (r < 0)
                return con_fail(CON_EXIT_FAILURE, "%s: %s", verb, e.message ?: strerror(-r));
        return CON_EXIT_OK;
}

static const char resume_usage[] =
        "Usage: con resume\n"
        "\n"
        "Lift a halt (halt_agents / halt_workers): removes /srv/con/state/halt and halt-workers and\n"
        "tells every running agent to resume. Audited and signalled. Needs root and con-contractd.\n";

int verb_resume(int argc, char *argv[]) {
        Opts o;
        int r = parse(argc, argv, "resume", resume_usage, &o);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (optind < argc)
                return con_fail(CON_EXIT_USAGE, "resume: unexpected argument '%s'", argv[optind]);
        r = simple_call("resume", "Resume", NULL, NULL, NULL);
        if (r == CON_EXIT_OK)
                printf("agents resumed\n");
        return r;
}

static const char quarantine_usage[] =
        "Usage: con quarantine AGENT [--reason TEXT]\n"
        "\n"
        "Quarantine an agent: its sessions are killed, its tasks fail, it releases its bus name and\n"
        "exits; it may not own its name again, polkit denies it every action and nothing activates\n"
        "it until 'con release AGENT'. Its files stay for forensics. Needs root and con-contractd.\n";

int verb_quarantine(int argc, char *argv[]) {
        Opts o;
        int r = parse(argc, argv, "quarantine", quarantine_usage, &o);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (optind + 1 != argc)
                return con_fail(CON_EXIT_USAGE, "quarantine: expected exactly one AGENT (see 'con quarantine --help')");
        r = simple_call("quarantine", "Quarantine", "ss", argv[optind], o.reason ?: "");
        if (r == CON_EXIT_OK)
                printf("agent %s quarantined\n", argv[optind]);
        return r;
}

static const char release_usage[] =
        "Usage: con release AGENT\n"
        "\n"
        "End an agent's quarantine: restores its activation file, bus policy and polkit rights.\n"
        "Needs root and con-contractd.\n";

int verb_release(int argc, char *argv[]) {
        Opts o;
        int r = parse(argc, argv, "release", release_usage, &o);
        if (r <= 0)
                return r < 0 ? CON_EXIT_USAGE : CON_EXIT_OK;
        if (optind + 1 != argc)
                return con_fail(CON_EXIT_USAGE, "release: expected exactly one AGENT (see 'con release --help')");
        r = simple_call("release", "Release", "s", argv[optind], NULL);
        if (r == CON_EXIT_OK)
                printf("agent %s released\n", argv[optind]);
        return r;
}
