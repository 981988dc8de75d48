/* SPDX-License-Identifier: MIT */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-chain.h"
#include "fileio.h"
#include "json-util.h"
#include "macro.h"
#include "names.h"
#include "spool.h"
#include "task.h"

size_t agent_chain_hops(const char *chain) {
        size_t n = 0;
        for (const char *p = chain; p && *p;) {
                p += strspn(p, " ");
                if (!*p)
                        break;
                n++;
                p += strcspn(p, " ");
        }
        return n;
}

bool agent_chain_has_agent(const char *chain, const char *agent) {
        size_t l = strlen(agent);
        for (const char *p = chain; p && *p;) {
                p += strspn(p, " ");
                if (strncmp(p, agent, l) == 0 && p[l] == '/')
                        return true;
                p += strcspn(p, " ");
        }
        return false;
}

int agent_chain_append(const char *chain, const char *agent, const char *task, char **ret) {
        char *s = NULL;
        if (asprintf(&s, "%s%s%s/%s", strempty(chain), isempty(chain) ? "" : " ", agent, task) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* Calls f for each "AGENT/TASK" entry (split in place of a copy); stops at a negative return. */
static int chain_foreach(const char *chain, int (*f)(const char *agent, const char *task, void *u), void *u) {
        _cleanup_free_ char *copy = strdup(strempty(chain));
        if (!copy)
                return -ENOMEM;
        char *save = NULL;
        for (char *e = strtok_r(copy, " ", &save); e; e = strtok_r(NULL, " ", &save)) {
                char *slash = strchr(e, '/');
                if (!slash)
                        return -EBADMSG;
                *slash = 0;
                int r = f(e, slash + 1, u);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int entry_check(const char *agent, const char *task, void *u) {
        (void) u;
        return con_agent_name_valid(agent) && (streq(task, AGENT_CHAIN_NO_TASK) || con_task_id_valid(task)) ? 0 :
                -EBADMSG;
}

bool agent_chain_valid(const char *s) {
        return chain_foreach(s, entry_check, NULL) == 0;
}

int agent_chain_record_format(const char *id, const char *chain, uint64_t deadline_usec, char **ret) {
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_CreateObject();
        if (!j || !cJSON_AddStringToObject(j, "id", id) || !cJSON_AddStringToObject(j, "chain", strempty(chain)) ||
            !con_json_add_u64(j, "deadline", deadline_usec))
                return -ENOMEM;
        char *s = cJSON_PrintUnformatted(j);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int agent_chain_record_parse(const char *data, size_t len, char **ret_id, char **ret_chain,
                             uint64_t *ret_deadline_usec) {
        _cleanup_(cJSON_Deletep) cJSON *j = cJSON_ParseWithLength(data, len);
        if (!j || !cJSON_IsObject(j))
                return -EBADMSG;
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id"),
                    *chain = cJSON_GetObjectItemCaseSensitive(j, "chain"),
                    *dl = cJSON_GetObjectItemCaseSensitive(j, "deadline");
        if (!cJSON_IsString(id) || !con_task_id_valid(id->valuestring) || !cJSON_IsString(chain) ||
            !agent_chain_valid(chain->valuestring) || !cJSON_IsNumber(dl) || dl->valuedouble < 0 ||
            dl->valuedouble > 1e19)
                return -EBADMSG;
        _cleanup_free_ char *i = strdup(id->valuestring), *c = strdup(chain->valuestring);
        if (!i || !c)
                return -ENOMEM;
        *ret_id = TAKE_PTR(i);
        *ret_chain = TAKE_PTR(c);
        *ret_deadline_usec = (uint64_t) dl->valuedouble;
        return 0;
}

void agent_chain_parent_done(AgentChainParent *p) {
        free(p->task);
        free(p->chain);
        free(p->agents);
        *p = (AgentChainParent) {};
}

/* agents is "A/ B/ ...", so agent_chain_has_agent() works on it too. */
static int agent_add(const char *agent, const char *task, void *u) {
        char **agents = u, *n = NULL;
        (void) task;
        if (agent_chain_has_agent(*agents, agent))
                return 0;
        if (asprintf(&n, "%s%s%s/", strempty(*agents), *agents ? " " : "", agent) < 0)
                return -ENOMEM;
        free(*agents);
        *agents = n;
        return 0;
}

static int agents_add(char **agents, const char *chain) {
        return chain_foreach(chain, agent_add, agents);
}

int agent_chain_parent_read(const char *agents_dir, const char *agent, uid_t owner, AgentChainParent *ret) {
        _cleanup_(agent_chain_parent_done) AgentChainParent p = {};
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int dfd = -EBADF;
        size_t best_hops = 0;
        int r;

        if (!con_agent_name_valid(agent))
                return -EINVAL;
        if (asprintf(&path, "%s/%s/" AGENT_CHAIN_RUNNING_DIR, agents_dir, agent) < 0)
                return -ENOMEM;
        dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0) {
                if (errno != ENOENT)
                        return -errno;
                *ret = p;
                p = (AgentChainParent) {};
                return 0;
        }
        struct stat st;
        if (fstat(dfd, &st) < 0)
                return -errno;
        if (st.st_uid != owner || (st.st_mode & 0022))
                return -EPERM;
        _cleanup_(closedirp) DIR *d = NULL;
        r = con_opendir_dup(dfd, &d);
        if (r < 0)
                return r;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!con_spool_name_is_candidate(de->d_name, ".json"))
                        continue;
                _cleanup_free_ char *buf = NULL, *id = NULL, *chain = NULL;
                size_t len;
                uint64_t deadline;
                /* A record that is not the service's own (owner, mode, content) is not believed;
                 * one that cannot be read at all fails the whole lookup, so an I/O error cannot
                 * make a delegation look like one from outside any session (a shorter chain). A
                 * record removed since readdir() is simply gone. */
                r = con_spool_read_untrusted(dfd, de->d_name, AGENT_CHAIN_RECORD_MAX, &buf, &len, &st);
                if (r == -ENOENT)
                        continue;
                if (r < 0 && r != -ELOOP && r != -EBADFD && r != -EMLINK && r != -EFBIG)
                        return r;
                if (r < 0 || st.st_uid != owner || (st.st_mode & 0022))
                        continue;
                r = agent_chain_record_parse(buf, len, &id, &chain, &deadline);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        continue;
                size_t hops = agent_chain_hops(chain);
                if (!p.task || hops > best_hops) {
                        _cleanup_free_ char *child = NULL;
                        r = agent_chain_append(chain, agent, id, &child);
                        if (r < 0)
                                return r;
                        free(p.task);
                        free(p.chain);
                        p.task = TAKE_PTR(id);
                        p.chain = TAKE_PTR(child);
                        best_hops = hops;
                }
                r = agents_add(&p.agents, chain);
                if (r < 0)
                        return r;
                if (deadline > 0 && (p.deadline_usec == 0 || deadline < p.deadline_usec))
                        p.deadline_usec = deadline;
                p.n_running++;
        }
        if (p.n_running > 0) {
                _cleanup_free_ char *self = NULL;
                if (asprintf(&self, "%s/x", agent) < 0)
                        return -ENOMEM;
                r = agents_add(&p.agents, self);
                if (r < 0)
                        return r;
        }
        *ret = p;
        p = (AgentChainParent) {};
        return 0;
}

static int running_dir(int data_dir_fd, bool create) {
        if (create && mkdirat(data_dir_fd, AGENT_CHAIN_RUNNING_DIR, 0700) < 0 && errno != EEXIST)
                return -errno;
        int fd = openat(data_dir_fd, AGENT_CHAIN_RUNNING_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

int agent_chain_running_write(int data_dir_fd, const char *id, const char *chain, uint64_t deadline_usec) {
        _cleanup_free_ char *data = NULL, *name = NULL;
        _cleanup_close_ int dfd = running_dir(data_dir_fd, true);
        if (dfd < 0)
                return dfd;
        int r = agent_chain_record_format(id, chain, deadline_usec, &data);
        if (r < 0)
                return r;
        if (asprintf(&name, "%s.json", id) < 0)
                return -ENOMEM;
        ConSpoolWrite o = { .mode = 0600, .uid = (uid_t) -1, .gid = (gid_t) -1, .reader = (uid_t) -1 };
        return con_spool_write(dfd, name, data, strlen(data), &o);
}

int agent_chain_running_remove(int data_dir_fd, const char *id) {
        _cleanup_free_ char *name = NULL;
        _cleanup_close_ int dfd = running_dir(data_dir_fd, false);
        if (dfd < 0)
                return dfd == -ENOENT ? 0 : dfd;
        if (asprintf(&name, "%s.json", id) < 0)
                return -ENOMEM;
        if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

int agent_chain_running_clear(int data_dir_fd) {
        _cleanup_close_ int dfd = running_dir(data_dir_fd, true);
        if (dfd < 0)
                return dfd;
        _cleanup_(closedirp) DIR *d = NULL;
        int r = con_opendir_dup(dfd, &d);
        if (r < 0)
                return r;
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        (void) unlinkat(dfd, de->d_name, 0);
        return 0;
}
