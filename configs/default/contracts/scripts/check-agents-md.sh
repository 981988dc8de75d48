#!/bin/sh
# CON-AGENT-002: each agent's assembled instructions are root's, read-only, and unchanged.
#
#   /home/a-<n>                    root:root 0750 (the agent reads it through an ACL)
#   /home/a-<n>/AGENTS.md          root:root 0444
#   /home/a-<n>/AGENTS.md.sha256   root:root 0444, the hex SHA-256 of AGENTS.md
#
# Prints one line per problem and exits 1 if there is any. Runs as root, read-only.

# CON_CHECK_ROOT: a prefix for every path, for testing against a copy of the layout.
root=${CON_CHECK_ROOT:-}
problems=0

problem() {
        echo "$*"
        problems=$((problems + 1))
}

info() {
        if [ -L "$1" ]; then
                echo symlink
        elif [ -e "$1" ]; then
                stat -c '%U %G %a' "$1"
        else
                echo missing
        fi
}

for dir in "$root"/srv/con/agents/*; do
        [ -d "$dir" ] || continue
        user=a-${dir##*/}
        home=$root/home/$user
        getent passwd "$user" >/dev/null || continue

        h=$(info "$home")
        [ "$h" = "root root 750" ] || problem "$home: expected root root 750, found $h"

        md=$(info "$home/AGENTS.md")
        if [ "$md" != "root root 444" ]; then
                problem "$home/AGENTS.md: expected root root 444, found $md"
                continue
        fi

        sum=$(info "$home/AGENTS.md.sha256")
        if [ "$sum" != "root root 444" ]; then
                problem "$home/AGENTS.md.sha256: expected root root 444, found $sum"
                continue
        fi
        expected=$(cut -c1-64 "$home/AGENTS.md.sha256")
        actual=$(sha256sum < "$home/AGENTS.md" | cut -c1-64)
        [ "$expected" = "$actual" ] || problem "$home/AGENTS.md: content differs from AGENTS.md.sha256"
done

if [ "$problems" -gt 0 ]; then
        echo "$problems problem(s) found"
        exit 1
fi
exit 0
