/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "sha256.h"

/* What `con bootstrap` installed into /etc/con, and how it upgrades it (dpkg's conffile logic,
 * docs/BOOTSTRAP.md "Upgrades"). Two files use the same format, one line per file,
 * "SHA256  PATH\n" (what sha256sum prints), lines starting with '#' and empty lines ignored:
 *
 *   CON_INSTALLED_FILES_PATH  the record: each file bootstrap wrote from a profile (or --config
 *                             FILE), by absolute path, with the SHA-256 of what it wrote. Root's,
 *                             0600; written by bootstrap only.
 *   CON_PROFILE_HISTORY_NAME  shipped next to the profiles: the SHA-256 of every committed version
 *                             of every profile file, PATH being PROFILE/RELATIVE-PATH
 *                             (scripts/profile-history.sh writes it). Machines installed by a
 *                             version that kept no record are upgraded with it.
 *
 * Library code: nothing is printed. */

#define CON_PROFILE_HISTORY_NAME "profile-history.sha256"

typedef struct ConFileHash {
        char *path;
        char hash[CON_SHA256_HEX_SIZE];         /* lower-case hex */
} ConFileHash;

typedef struct ConFileHashes {
        ConFileHash *e;
        size_t n;
} ConFileHashes;

/* Parses text (len bytes, NUL bytes refused). Returns 0, or -EBADMSG with *ret_line the first
 * malformed line (1-based), or -ENOMEM. A path appearing twice keeps every entry (the history
 * lists each version). Paths are what con_file_hashes_path_valid() takes. */
int con_file_hashes_parse(const char *text, size_t len, ConFileHashes *ret, size_t *ret_line);
void con_file_hashes_done(ConFileHashes *h);

/* The hash of the first entry for path, or NULL. */
const char *con_file_hashes_get(const ConFileHashes *h, const char *path);
/* Whether some entry has this path and hash. */
bool con_file_hashes_contains(const ConFileHashes *h, const char *path, const char *hash);
/* Replaces every entry for path with one holding hash (added when there is none). -EINVAL for a
 * path con_file_hashes_path_valid() refuses. */
int con_file_hashes_set(ConFileHashes *h, const char *path, const char *hash);
/* Adds an entry (one more for path, as the history has). -EINVAL as con_file_hashes_set(). */
int con_file_hashes_add(ConFileHashes *h, const char *path, const char *hash);
/* Removes every entry for path. */
void con_file_hashes_remove(ConFileHashes *h, const char *path);
/* The file's text, entries sorted by path (then hash), after a header comment. */
int con_file_hashes_format(const ConFileHashes *h, const char *header, char **ret);
/* Whether path can be stored: non-empty, no control character, no "." or ".." segment ("/./",
 * "/../", a trailing "/." or "/..", a leading "./" or "../"): a path that names the file it says. */
bool con_file_hashes_path_valid(const char *path);

/* A file a profile (or --config FILE) installs, on a later bootstrap. */
typedef enum ConConffileDecision {
        CON_CONFFILE_INSTALL,   /* absent: write it */
        CON_CONFFILE_SAME,      /* holds the new version already */
        CON_CONFFILE_UPDATE,    /* unedited since installed (the recorded hash, or an earlier
                                 * profile version): replaced without asking */
        CON_CONFFILE_EDITED,    /* changed here: refused, unless --force */
} ConConffileDecision;

/* current: hash of the file now (NULL: absent); wanted: of the new version; recorded: what the
 * record says bootstrap wrote (NULL: no record); earlier: whether current is a known earlier
 * version of the file (the history). */
ConConffileDecision con_conffile_decide(const char *current, const char *wanted, const char *recorded, bool earlier);

/* A file bootstrap installed that the profile no longer has. */
typedef enum ConObsoleDecision {
        CON_OBSOLETE_GONE,      /* not there any more: nothing to do */
        CON_OBSOLETE_REMOVE,    /* unedited since installed: removed */
        CON_OBSOLETE_KEEP,      /* changed here: left, with a warning */
} ConObsoleDecision;

ConObsoleDecision con_obsolete_decide(const char *current, const char *recorded, bool earlier);
