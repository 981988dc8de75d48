#!/bin/sh
# Writes configs/profile-history.sha256: the SHA-256 of every version of every profile file
# (configs/default, configs/minimal) ever committed on the current branch, plus the working
# tree's, one "SHA256  PROFILE/PATH" line each (sha256sum's format), sorted.
#
# `con bootstrap --profile` upgrades /etc/con with it on machines installed by a version that kept
# no record of what it installed (/var/lib/conspiracyos/installed-files, docs/BOOTSTRAP.md
# "Upgrades"): a file there that holds one of these versions is unedited, so it is replaced by the
# profile's current version instead of being refused as an admin's edit.
#
# Run it whenever a profile file changes, and commit the output with the change:
#   scripts/profile-history.sh && git add configs/profile-history.sha256
# (ctest's test-profile-history fails while a profile file's current version is missing.)
set -eu
export LC_ALL=C
cd "$(dirname "$0")/.."
out=configs/profile-history.sha256
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.blobs"' EXIT

# Every (blob, path) a commit touching the profiles had; then the working tree.
for c in $(git rev-list HEAD -- configs/default configs/minimal); do
        git ls-tree -r "$c" -- configs/default configs/minimal
done | awk -F'\t' '{ split($1, m, " "); if (m[2] == "blob") print m[3] "\t" $2 }' | sort -u >"$tmp.blobs"

{
        while IFS="$(printf '\t')" read -r blob path; do
                printf '%s  %s\n' "$(git cat-file blob "$blob" | sha256sum | cut -d' ' -f1)" "${path#configs/}"
        done <"$tmp.blobs"
        find configs/default configs/minimal -type f | while read -r path; do
                printf '%s  %s\n' "$(sha256sum <"$path" | cut -d' ' -f1)" "${path#configs/}"
        done
} | sort -k2,2 -k1,1 -u >"$tmp"

{
        echo "# The SHA-256 of every committed version of every profile file (PROFILE/PATH), written by"
        echo "# scripts/profile-history.sh: regenerate it when a profile file changes. con bootstrap takes a"
        echo "# file in /etc/con holding one of these versions for unedited (docs/BOOTSTRAP.md \"Upgrades\")."
        cat "$tmp"
} >"$out"
echo "$out: $(grep -vc '^#' "$out") versions of $(grep -v '^#' "$out" | cut -d' ' -f3 | sort -u | wc -l) files"
