#!/bin/bash
# con-routerd rejects every kind of bad inbox file: each ends in /srv/con/rejected with a
# .reason file and a TaskRejected signal, and the router never follows a link to its target.
# Symlinks, hard links and FIFOs dropped into any inbox are rejected at once (no rescan needed).
# Runs as root inside tests/sandbox/con-sandbox (fresh system bus, project installed in /usr).
. "$(dirname "$0")/lib.sh"
require_sandbox
T=$(lib_tmp)

section "fabric up"
check "con bootstrap --profile default" con bootstrap --profile default
check "con up" con up
check_output "router is running" "router +running" con status

# Watch the router's signals for the whole test.
dbus-monitor --system "type='signal',sender='org.conspiracy.Router'" >"$T/monitor" 2>&1 &
MON=$!
sleep 0.5

# rejected_soon LABEL NAME: the file is in /srv/con/rejected (with its reason) within 2 s.
rejected_soon() {
        for _ in $(seq 20); do
                ls /srv/con/rejected/*-"$1-$2.reason" >/dev/null 2>&1 && return 0
                sleep 0.1
        done
        return 1
}

# The target lives on the same file system as the inbox, so a hard link to it can exist.
SECRET=/srv/secret-target
echo "secret: never read me" >"$SECRET"
chmod 0600 "$SECRET"
before=$(sha256sum "$SECRET")

section "links and FIFOs are rejected at once, without a rescan"
# They appear with IN_CREATE alone (no IN_CLOSE_WRITE ever follows): the router looks at once,
# in the outer inbox and in an agent's own inbox alike.
for box in inbox:/srv/con/inbox sysadmin:/srv/con/agents/sysadmin/inbox; do
        label=${box%%:*} dir=${box#*:}
        ln -s "$SECRET" "$dir/now-symlink.task"
        ln "$SECRET" "$dir/now-hardlink.task"
        mkfifo "$dir/now-fifo.task"
        for k in symlink hardlink fifo; do
                check "$label: $k rejected within 2 s" rejected_soon "$label" "now-$k.task"
                check_fail "$label: $k gone from the inbox" test -e "$dir/now-$k.task" -o -L "$dir/now-$k.task"
        done
        check_output "$label: the symlink's reason names it" "symbolic link" \
                cat /srv/con/rejected/*-"$label"-now-symlink.task.reason
        check "$label: the symlink was moved as a link" test -L "$(ls /srv/con/rejected/*-"$label"-now-symlink.task)"
done
check_eq "the link target is untouched" "$before" "$(sha256sum "$SECRET")"
rm -f /srv/con/rejected/*-now-hardlink.task  # the checks below count the target's links

section "bad files"
ln -s "$SECRET" /srv/con/inbox/symlink.task
ln "$SECRET" /srv/con/inbox/hardlink.task
mkfifo /srv/con/inbox/fifo.task
head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' 'x' >/srv/con/inbox/.oversize.tmp
mv /srv/con/inbox/.oversize.tmp /srv/con/inbox/oversize.task
printf 'bad \xff\xfe utf-8' >/srv/con/inbox/badutf8.task
printf 'nul\0byte' >/srv/con/inbox/nul.task
printf -- '---\npriority: eleven\n---\ntext\n' >/srv/con/inbox/frontmatter.task
# A rescan takes whatever is there (the files above were seen at once already).
check "Rescan" busctl call org.conspiracy.Router /org/conspiracy/Router org.conspiracy.Router1 Rescan

kinds="symlink hardlink fifo oversize badutf8 nul frontmatter"
for k in $kinds; do
        for _ in $(seq 100); do
                ls /srv/con/rejected/*-inbox-$k.task.reason >/dev/null 2>&1 && break
                sleep 0.1
        done
        check "$k: moved to /srv/con/rejected" bash -c "ls /srv/con/rejected/*-inbox-$k.task"
        check "$k: has a reason file" bash -c "grep -q '^reason: ' /srv/con/rejected/*-inbox-$k.task.reason"
        check_fail "$k: gone from the inbox" test -e "/srv/con/inbox/$k.task" -o -L "/srv/con/inbox/$k.task"
        check "$k: TaskRejected signal" grep -q "/srv/con/inbox/$k.task" "$T/monitor"
done
check_output "symlink reason names it" "symbolic link" cat /srv/con/rejected/*-inbox-symlink.task.reason
check_output "hard link reason names it" "hard link" cat /srv/con/rejected/*-inbox-hardlink.task.reason
check_output "fifo reason names it" "not a regular file" cat /srv/con/rejected/*-inbox-fifo.task.reason
check "the symlink was moved as a link" test -L "$(ls /srv/con/rejected/*-inbox-symlink.task)"
check_eq "the link target is untouched" "$before" "$(sha256sum "$SECRET")"
check_eq "the target still has its own name (2 links: original + moved link)" "2" "$(stat -c %h "$SECRET")"
stat_is "reason files are root-only" "$(ls /srv/con/rejected/*-inbox-nul.task.reason)" "root:root 640"
check_fail "no signal carries file content" grep -q "never read me" "$T/monitor"

section "audit"
check_output "rejections are in the audit trail" "task.rejected" con audit --lines 50
check "the chain verifies" con audit verify

section "a good file still goes through"
echo "/ping" >/srv/con/inbox/.good.tmp && mv /srv/con/inbox/.good.tmp /srv/con/inbox/good.task
for _ in $(seq 100); do [ -e /srv/con/inbox/good.task ] || break; sleep 0.1; done
check_fail "good.task was delivered" test -e /srv/con/inbox/good.task
check "TaskRouted signal for it" grep -q '"good"' "$T/monitor"

kill "$MON" 2>/dev/null
con down >/dev/null 2>&1
finish
