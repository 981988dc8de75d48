#!/bin/sh
# CON-AGENT-001: the agent folders have the layout con bootstrap provisions (docs/BOOTSTRAP.md).
# Prints one line per problem and exits 1 if there is any. Runs as root, read-only.
#
#   /srv/con/inbox                        root:root, sticky, no access for others
#   /srv/con/agents/<n>                   a-<n>:agents 0700 (0710 when peers may send: ACL --x)
#   /srv/con/agents/<n>/inbox             a-<n>:agents, sticky, 1700 (1730 with peers: ACL -wx)
#   .../outbox, processed, workspace      a-<n>:agents 0700
#   .../workspace/skills                  root:root 0755
#   /home/a-<n>/AGENTS.md                 exists (its integrity is CON-AGENT-002)
#   the bus activation file of the agent  exists

# CON_CHECK_ROOT: a prefix for every path, for testing against a copy of the layout.
root=${CON_CHECK_ROOT:-}
agents_dir=$root/srv/con/agents
problems=0

problem() {
        echo "$*"
        problems=$((problems + 1))
}

# owner group mode, or "missing"
info() {
        if [ -L "$1" ]; then
                echo symlink
        elif [ -e "$1" ]; then
                stat -c '%U %G %a' "$1"
        else
                echo missing
        fi
}

# The named-user ACL entries of $1 grant at most the permissions in $2 (e.g. "--x").
acl_at_most() {
        command -v getfacl >/dev/null 2>&1 || return 0
        getfacl -cp -- "$1" 2>/dev/null | while IFS=: read -r tag qualifier perms; do
                if [ "$tag" != user ] || [ -z "$qualifier" ]; then
                        continue
                fi
                perms=${perms%%[[:space:]]*}
                case "$2" in
                --x) [ "$perms" = "--x" ] || echo "$qualifier:$perms" ;;
                -wx) case "$perms" in --x|-w-|-wx) ;; *) echo "$qualifier:$perms" ;; esac ;;
                esac
        done
}

check_acl() {
        extra=$(acl_at_most "$1" "$2")
        [ -z "$extra" ] || problem "$1: ACL grants more than $2: $(printf '%s' "$extra" | tr '\n' ' ')"
}

inbox=$(info "$root/srv/con/inbox")
case "$inbox" in
"root root 1730"|"root root 1700") ;;
*) problem "$root/srv/con/inbox: expected root root 1730, found $inbox" ;;
esac

[ -d "$agents_dir" ] || { echo "$agents_dir: missing"; exit 1; }

for dir in "$agents_dir"/*; do
        [ -e "$dir" ] || continue
        n=${dir##*/}
        user=a-$n
        if [ -L "$dir" ] || [ ! -d "$dir" ]; then
                problem "$dir: not a folder (symlink or file)"
                continue
        fi
        if ! getent passwd "$user" >/dev/null; then
                problem "$dir: there is no user $user"
                continue
        fi

        base=$(info "$dir")
        case "$base" in
        "$user agents 700"|"$user agents 710") ;;
        *) problem "$dir: expected $user agents 700 (710 with peers), found $base" ;;
        esac
        check_acl "$dir" "--x"

        box=$(info "$dir/inbox")
        case "$box" in
        "$user agents 1700"|"$user agents 1730") ;;
        *) problem "$dir/inbox: expected $user agents 1700 (1730 with peers, sticky), found $box" ;;
        esac
        [ "$box" = symlink ] || [ "$box" = missing ] || check_acl "$dir/inbox" "-wx"

        for sub in outbox processed workspace; do
                s=$(info "$dir/$sub")
                [ "$s" = "$user agents 700" ] || problem "$dir/$sub: expected $user agents 700, found $s"
        done

        skills=$(info "$dir/workspace/skills")
        case "$skills" in
        "root root 755"|missing) ;;
        *) problem "$dir/workspace/skills: expected root root 755, found $skills" ;;
        esac

        [ -f "$root/home/$user/AGENTS.md" ] || problem "$root/home/$user/AGENTS.md: missing"

        if ! grep -qsx "User=$user" "$root"/usr/share/dbus-1/system-services/org.conspiracy.*.service; then
                problem "$user: no bus activation file in /usr/share/dbus-1/system-services"
        fi
done

if [ "$problems" -gt 0 ]; then
        echo "$problems problem(s) found"
        exit 1
fi
exit 0
