/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <time.h>

#include "errors.h"
#include "macro.h"
#include "names.h"
#include "router-util.h"
#include "spool.h"
#include "task.h"

RouterEvent router_classify_event(uint32_t mask, const char *name) {
        if (mask & IN_Q_OVERFLOW)
                return ROUTER_EVENT_RESCAN;
        if (mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT))
                return ROUTER_EVENT_WATCH_GONE;
        if (mask & IN_ISDIR)
                return ROUTER_EVENT_IGNORE;
        if (!(mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)))
                return ROUTER_EVENT_IGNORE;
        if (isempty(name) || strchr(name, '/'))
                return ROUTER_EVENT_IGNORE;
        if (!con_spool_name_is_candidate(name, ".task"))
                return ROUTER_EVENT_IGNORE;
        if (!(mask & (IN_CLOSE_WRITE | IN_MOVED_TO)))
                return ROUTER_EVENT_CREATED;
        return ROUTER_EVENT_CANDIDATE;
}

bool router_created_is_final(const struct stat *st) {
        return !S_ISREG(st->st_mode) || st->st_nlink > 1;
}

RouterFileVerdict router_classify_open_error(int r) {
        switch (r) {
        case -ENOENT:
                return ROUTER_FILE_GONE;
        case -ELOOP:    /* symlink */
        case -EBADFD:   /* fifo, socket, device, directory */
        case -EISDIR:
        case -ENXIO:    /* a fifo or socket refused by open(2) itself */
        case -EMLINK:   /* hard link */
        case -EFBIG:    /* over the size cap */
        case -EACCES:   /* even root cannot read it (e.g. an immutable or special file) */
        case -EPERM:
        case -ENAMETOOLONG:
                return ROUTER_FILE_REJECT;
        default:
                return ROUTER_FILE_RETRY;
        }
}

RouterReplyVerdict router_classify_reply_error(const char *error_name) {
        static const char * const reject[] = {
                CON_ERROR_INVALID_TASK,
                CON_ERROR_TASK_TOO_LARGE,
                CON_ERROR_ACCESS_DENIED,
                CON_ERROR_NO_SUCH_AGENT,
                CON_ERROR_NOT_CONFIGURED,
                CON_ERROR_DELEGATION_REFUSED,   /* an agent's file beyond the hop limit, a cycle */
                SD_BUS_ERROR_ACCESS_DENIED,
                SD_BUS_ERROR_INVALID_ARGS,
                SD_BUS_ERROR_INVALID_SIGNATURE,
                SD_BUS_ERROR_UNKNOWN_METHOD,
                SD_BUS_ERROR_UNKNOWN_INTERFACE,
                SD_BUS_ERROR_UNKNOWN_OBJECT,
                SD_BUS_ERROR_NOT_SUPPORTED,
        };

        if (isempty(error_name))
                return ROUTER_REPLY_RETRY;
        if (streq(error_name, CON_ERROR_DUPLICATE_TASK))
                return ROUTER_REPLY_NEW_ID;
        if (streq(error_name, CON_ERROR_SENDER_QUOTA))
                return ROUTER_REPLY_SENDER_WAIT;
        for (size_t i = 0; i < ELEMENTSOF(reject); i++)
                if (streq(error_name, reject[i]))
                        return ROUTER_REPLY_REJECT;
        /* Everything else (ServiceUnknown, NameHasNoOwner, NoReply, Timeout, LimitsExceeded,
         * Spawn.*, QueueFull, StorageFailed, Halted, Quarantined, Disconnected, unknown names) is
         * a state of the agent that passes: keep the file and try again later. */
        return ROUTER_REPLY_RETRY;
}

uint64_t router_backoff_usec(unsigned failures) {
        uint64_t d = ROUTER_BACKOFF_MIN_USEC;

        for (unsigned i = 1; i < failures && d < ROUTER_BACKOFF_MAX_USEC; i++)
                d *= 2;
        return d < ROUTER_BACKOFF_MAX_USEC ? d : ROUTER_BACKOFF_MAX_USEC;
}

int router_inbox_target(const char *rel, char **ret_agent) {
        const char *p;

        if (!rel)
                return -EINVAL;
        if (streq(rel, "inbox")) {
                char *s = strdup(ROUTER_OUTER_AGENT);
                if (!s)
                        return -ENOMEM;
                *ret_agent = s;
                return 0;
        }
        p = startswith(rel, "agents/");
        if (!p)
                return -EINVAL;
        const char *slash = strchr(p, '/');
        if (!slash || !streq(slash, "/inbox"))
                return -EINVAL;
        _cleanup_free_ char *name = strndup(p, slash - p);
        if (!name)
                return -ENOMEM;
        if (!con_agent_name_valid(name))
                return -EINVAL;
        *ret_agent = TAKE_PTR(name);
        return 0;
}

int router_inbox_label(const char *rel, char **ret_label) {
        if (rel && streq(rel, "inbox")) {
                char *s = strdup("inbox");
                if (!s)
                        return -ENOMEM;
                *ret_label = s;
                return 0;
        }
        return router_inbox_target(rel, ret_label);
}

int router_rejected_name(uint64_t realtime_usec, const char *label, const char *name, char **ret) {
        /* Room for ".reason" after the name. */
        const size_t max = NAME_MAX - strlen(".reason");
        time_t sec = (time_t) (realtime_usec / USEC_PER_SEC);
        struct tm tm;
        char stamp[64];

        if (isempty(label) || isempty(name))
                return -EINVAL;
        if (!gmtime_r(&sec, &tm))
                return -ERANGE;
        if (strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &tm) == 0)
                return -ERANGE;

        size_t prefix = strlen(stamp) + 8 /* .uuuuuuZ */ + 1 + strlen(label) + 1;
        if (prefix + 1 > max)
                return -EINVAL;
        size_t n = strlen(name);
        if (prefix + n > max)
                n = max - prefix;

        _cleanup_free_ char *s = NULL;
        if (asprintf(&s, "%s.%06" PRIu64 "Z-%s-%.*s", stamp, realtime_usec % USEC_PER_SEC, label, (int) n, name) < 0)
                return -ENOMEM;
        if (strlen(s) != prefix + n)
                return -EINVAL;
        for (char *p = s + prefix; *p; p++) {
                unsigned char c = (unsigned char) *p;
                if (c <= 0x20 || c >= 0x7f || c == '/')
                        *p = '_';
        }
        *ret = TAKE_PTR(s);
        return 0;
}

uint64_t router_file_identity(const struct stat *st) {
        /* FNV-1a over the fields that change when a name is reused for another file. */
        const uint64_t fields[] = {
                (uint64_t) st->st_dev, (uint64_t) st->st_ino,
                (uint64_t) st->st_ctim.tv_sec, (uint64_t) st->st_ctim.tv_nsec,
                (uint64_t) st->st_size,
        };
        uint64_t h = 0xcbf29ce484222325ULL;
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                for (unsigned b = 0; b < 8; b++) {
                        h ^= (fields[i] >> (8 * b)) & 0xff;
                        h *= 0x100000001b3ULL;
                }
        return h;
}

int router_task_id(const char *filename, const struct stat *st, unsigned attempt, uint64_t random,
                   char **ret) {
        _cleanup_free_ char *base = NULL;
        char *s;
        int r;

        r = con_task_id_from_filename(filename, &base);
        if (r == -ENOMEM)
                return r;
        /* Without a usable NAME the sequence starts at the identity form. */
        if (r < 0)
                attempt++;
        if (attempt == 0) {
                *ret = TAKE_PTR(base);
                return 0;
        }
        /* Keep a recognisable prefix when there is one; the suffix makes it unique: the file's
         * identity first (stable, so a redelivery after a restart is deduplicated), then random
         * (unguessable, when another sender took even that one). */
        uint64_t suffix = attempt <= 1 ? router_file_identity(st) : random;
        if (r >= 0 && strlen(base) <= 80) {
                if (asprintf(&s, "%s-%016" PRIx64, base, suffix) < 0)
                        return -ENOMEM;
        } else if (asprintf(&s, "file-%016" PRIx64, suffix) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

/* The map: separate chaining, power-of-two buckets, grows at load 1. */
typedef struct MapEntry {
        struct MapEntry *next;
        uint64_t value;
        char key[];
} MapEntry;

struct RouterMap {
        MapEntry **buckets;
        size_t n_buckets;
        size_t size;
};

static uint64_t hash_str(const char *s) {
        uint64_t h = 0xcbf29ce484222325ULL;
        for (; *s; s++) {
                h ^= (unsigned char) *s;
                h *= 0x100000001b3ULL;
        }
        return h;
}

RouterMap *router_map_new(void) {
        RouterMap *m = calloc(1, sizeof *m);
        if (!m)
                return NULL;
        m->n_buckets = 64;
        m->buckets = calloc(m->n_buckets, sizeof *m->buckets);
        if (!m->buckets) {
                free(m);
                return NULL;
        }
        return m;
}

void router_map_clear(RouterMap *m) {
        if (!m)
                return;
        for (size_t i = 0; i < m->n_buckets; i++)
                while (m->buckets[i]) {
                        MapEntry *e = m->buckets[i];
                        m->buckets[i] = e->next;
                        free(e);
                }
        m->size = 0;
}

RouterMap *router_map_free(RouterMap *m) {
        if (!m)
                return NULL;
        router_map_clear(m);
        free(m->buckets);
        free(m);
        return NULL;
}

static MapEntry **map_find(const RouterMap *m, const char *key) {
        MapEntry **p = &m->buckets[hash_str(key) & (m->n_buckets - 1)];
        for (; *p; p = &(*p)->next)
                if (streq((*p)->key, key))
                        return p;
        return p;
}

static int map_grow(RouterMap *m) {
        size_t n = m->n_buckets * 2;
        MapEntry **b = calloc(n, sizeof *b);
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_buckets; i++)
                while (m->buckets[i]) {
                        MapEntry *e = m->buckets[i];
                        m->buckets[i] = e->next;
                        size_t j = hash_str(e->key) & (n - 1);
                        e->next = b[j];
                        b[j] = e;
                }
        free(m->buckets);
        m->buckets = b;
        m->n_buckets = n;
        return 0;
}

int router_map_put(RouterMap *m, const char *key, uint64_t value) {
        MapEntry **p = map_find(m, key);
        if (*p) {
                (*p)->value = value;
                return 0;
        }
        if (m->size >= m->n_buckets) {
                if (map_grow(m) < 0)
                        return -ENOMEM;
                p = map_find(m, key);
        }
        size_t l = strlen(key);
        MapEntry *e = malloc(sizeof *e + l + 1);
        if (!e)
                return -ENOMEM;
        memcpy(e->key, key, l + 1);
        e->value = value;
        e->next = NULL;
        *p = e;
        m->size++;
        return 1;
}

bool router_map_get(const RouterMap *m, const char *key, uint64_t *ret_value) {
        MapEntry **p = map_find(m, key);
        if (!*p)
                return false;
        if (ret_value)
                *ret_value = (*p)->value;
        return true;
}

bool router_map_remove(RouterMap *m, const char *key) {
        MapEntry **p = map_find(m, key);
        if (!*p)
                return false;
        MapEntry *e = *p;
        *p = e->next;
        free(e);
        m->size--;
        return true;
}

size_t router_map_size(const RouterMap *m) {
        return m ? m->size : 0;
}
