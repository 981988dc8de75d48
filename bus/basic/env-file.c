/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "env-file.h"
#include "macro.h"
#include "strv.h"

static bool env_name_ok(const char *s, size_t n) {
        if (n == 0 || n > 128 || !(isupper((unsigned char) s[0]) || islower((unsigned char) s[0]) || s[0] == '_'))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!(isalnum((unsigned char) s[i]) || s[i] == '_'))
                        return false;
        return true;
}

static void env_freep(char ***env) {
        con_env_free(*env);
}

int con_env_parse(const char *text, size_t len, char ***ret_env, unsigned *ret_bad_line) {
        _cleanup_(env_freep) char **env = NULL;
        size_t n = 0;
        unsigned line = 0;

        if (ret_bad_line)
                *ret_bad_line = 0;
        for (size_t pos = 0; pos < len;) {
                const char *b = text + pos;
                const char *nl = memchr(b, '\n', len - pos);
                size_t l = nl ? (size_t) (nl - b) : len - pos;
                pos += l + (nl ? 1 : 0);
                line++;

                while (l > 0 && (b[l - 1] == '\r' || b[l - 1] == ' ' || b[l - 1] == '\t'))
                        l--;
                while (l > 0 && (*b == ' ' || *b == '\t'))
                        b++, l--;
                if (l == 0 || *b == '#')
                        continue;
                if (l > 7 && strncmp(b, "export ", 7) == 0)
                        b += 7, l -= 7;
                if (memchr(b, '\0', l))
                        goto bad;
                const char *eq = memchr(b, '=', l);
                if (!eq || !env_name_ok(b, (size_t) (eq - b)))
                        goto bad;
                const char *v = eq + 1;
                size_t vl = l - (size_t) (v - b);
                if (vl >= 1 && (v[0] == '"' || v[0] == '\'')) {
                        if (vl < 2 || v[vl - 1] != v[0])
                                goto bad;
                        v++;
                        vl -= 2;
                }
                for (size_t i = 0; i < vl; i++)
                        if ((unsigned char) v[i] < ' ' || v[i] == 0x7f)
                                goto bad;
                char *e = NULL;
                if (asprintf(&e, "%.*s=%.*s", (int) (eq - b), b, (int) vl, v) < 0)
                        return -ENOMEM;
                char **nenv = reallocarray(env, n + 2, sizeof(char *));
                if (!nenv) {
                        explicit_bzero(e, strlen(e));
                        free(e);
                        return -ENOMEM;
                }
                env = nenv;
                env[n++] = e;
                env[n] = NULL;
                continue;
        bad:
                if (ret_bad_line)
                        *ret_bad_line = line;
                return -EINVAL;
        }
        if (!env && !(env = calloc(1, sizeof(char *))))
                return -ENOMEM;
        *ret_env = TAKE_PTR(env);
        return 0;
}

const char *con_env_get(char * const *env, const char *name) {
        size_t n = strlen(name);
        const char *found = NULL;
        for (size_t i = 0; env && env[i]; i++)
                if (strncmp(env[i], name, n) == 0 && env[i][n] == '=')
                        found = env[i] + n + 1; /* the last assignment wins, as in a shell */
        return found && *found ? found : NULL;
}

size_t con_env_keep(char **env, const char * const *names, size_t n_names) {
        size_t k = 0;

        for (size_t i = 0; env && env[i]; i++) {
                const char *eq = strchr(env[i], '=');
                size_t n = eq ? (size_t) (eq - env[i]) : strlen(env[i]);
                bool keep = false;
                for (size_t j = 0; j < n_names && !keep; j++)
                        keep = names[j] && strlen(names[j]) == n && strncmp(env[i], names[j], n) == 0;
                if (keep)
                        env[k++] = env[i];
                else {
                        explicit_bzero(env[i], strlen(env[i]));
                        free(env[i]);
                }
        }
        if (env)
                env[k] = NULL;
        return k;
}

char **con_env_free(char **env) {
        STRV_FOREACH(v, env)
                explicit_bzero(*v, strlen(*v));
        return strv_free(env);
}
