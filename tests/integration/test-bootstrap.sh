#!/bin/bash
# con bootstrap, end to end, inside tests/sandbox/con-sandbox (root, overlay /etc and /usr,
# private /srv and /home): what it creates, that the kernel enforces the intended access with
# real users (runuser), idempotency, --dry-run, bad configs, symlinks, profiles.
. "$(dirname "$0")/lib.sh"
require_root
if [ "${CON_SANDBOX:-}" != 1 ]; then
        echo "# must run inside tests/sandbox/con-sandbox (it edits /etc/passwd); skipping"
        LIB_FINISHED=1
        exit 77
fi

T=$(lib_tmp)
PROFILES=/usr/share/conspiracyos/profiles

# Everything bootstrap may touch, in a comparable form.
snapshot() {
        {
                echo "== users"; getent passwd | sort
                echo "== groups"; getent group | sort
                echo "== shadow"; sha256sum /etc/shadow /etc/gshadow 2>&1
                echo "== tree"
                find /srv /home /etc/con /etc/dbus-1/system.d /etc/polkit-1/rules.d \
                        /usr/local/share/dbus-1/system-services /etc/systemd/system \
                        -printf '%p %u %g %m %y %s\n' 2>/dev/null | sort
                echo "== content"
                find /srv/con /home /etc/con -type f -print0 2>/dev/null | sort -z | xargs -0r sha256sum
                echo "== acl"
                getfacl -R -p /srv /home 2>/dev/null
        } >"$1"
}

section "preconditions"
check "con is installed in /usr/bin" test -x /usr/bin/con
check "default profile is installed" test -f "$PROFILES/default/con.yaml"
check "minimal profile is installed" test -f "$PROFILES/minimal/con.yaml"

section "refusals that touch nothing"
snapshot "$T/s0"
check_status "not root: exit status 3" 3 as_user nobody con bootstrap --profile default
check_output "not root: the message says why" "must run as root" echo "$LIB_OUT"
check_status "usage error: exit status 2" 2 con bootstrap --no-such-option
check_status "--config with --profile is a usage error" 2 con bootstrap --config /x --profile default

cat >"$T/bad.yaml" <<'EOF'
system:
  name: test
agents:
  - name: concierge
    tier: operator
    colour: blue
EOF
check_status "bad config: exit status 4" 4 con bootstrap --config "$T/bad.yaml"
check_output "bad config: FILE:LINE:COLUMN in the message" "bad\.yaml:6:[0-9]+:.*colour" echo "$LIB_OUT"
check_output "bad config: says nothing was changed" "nothing was changed" echo "$LIB_OUT"
check_fail "bad config: no agent user created" getent passwd a-concierge
check_fail "bad config: /srv/con not created" test -e /srv/con
check_status "unknown profile: exit status 1" 1 con bootstrap --profile no-such-profile
check_output "unknown profile: names it" "unknown profile 'no-such-profile'" echo "$LIB_OUT"

section "dry run on a fresh system"
check_output "dry run prints the plan" "^would create user a-concierge \(uid [0-9]+\)" con bootstrap --dry-run --profile default
check_output "dry run plans the ACLs" "^would set acl /srv/con/agents/sysadmin/inbox" echo "$LIB_OUT"
check_output "dry run plans the platform files" "^would write /etc/dbus-1/system.d/" echo "$LIB_OUT"
check_output "dry run plans the empty key file" "^would create empty /etc/con/env \(root:con-models 0640\)$" echo "$LIB_OUT"
snapshot "$T/s1"
check_same_file "dry run touched nothing" "$T/s0" "$T/s1"

section "first run: --profile default"
touch "$T/before-first-run"
check_output "bootstrap succeeds" "^create user a-sysadmin \(uid [0-9]+\)" con bootstrap --profile default
printf '%s\n' "$LIB_OUT" >"$T/first-run.out"
# Package-owned /usr is never written: generated files go under /etc and /usr/local (docs/DEPLOY.md).
check_output "nothing under /usr but /usr/local was written" "^none$" bash -c \
        "f=\$(find /usr -xdev -path /usr/local -prune -o -newer '$T/before-first-run' \\( -type f -o -type l \\) -print); echo \${f:-none}"
check "the agents' activation files are in /usr/local/share/dbus-1/system-services" \
        test -f /usr/local/share/dbus-1/system-services/org.conspiracy.Concierge.service
check_fail "... and not in /usr/share" test -e /usr/share/dbus-1/system-services/org.conspiracy.Concierge.service
check "the static polkit actions file is installed, not generated" test -f /usr/share/polkit-1/actions/org.conspiracy.policy
check_fail "... it names no agent" grep -q concierge /usr/share/polkit-1/actions/org.conspiracy.policy
check_same_file "the profile's con.yaml is installed" "$PROFILES/default/con.yaml" /etc/con/con.yaml
stat_is "the key file is created for the model gateway" /etc/con/env "root:con-models 640"
check_eq "... empty" 0 "$(stat -c %s /etc/con/env)"
check_fail_output "... no agent can read it" 'Permission denied' as_user a-concierge cat /etc/con/env

for g in agents officers operators workers trusted con; do
        check "group $g exists" getent group "$g"
done
for a in concierge sysadmin; do
        check_output "user a-$a: nologin shell, home /home/a-$a" "^a-$a:x:[0-9]+:[0-9]+:[^:]*:/home/a-$a:/usr/sbin/nologin$" \
                getent passwd "a-$a"
        check_eq "user a-$a: primary group agents" agents "$(id -gn "a-$a")"
        check_output "user a-$a: in its tier group" "operators" id -Gn "a-$a"
        check_output "user a-$a: has a locked shadow entry" "^a-$a:!" grep "^a-$a:" /etc/shadow
done
uid_c=$(id -u a-concierge) uid_s=$(id -u a-sysadmin)
check "agent UIDs differ" test "$uid_c" != "$uid_s"
check "agent UIDs come from the agent block (60000..60999)" test "$uid_c" -ge 60000 -a "$uid_c" -le 60999 -a "$uid_s" -ge 60000 -a "$uid_s" -le 60999
check_eq "no duplicate UID in /etc/passwd" "" "$(cut -d: -f3 /etc/passwd | sort | uniq -d)"
check_eq "no duplicate GID in /etc/group" "" "$(cut -d: -f3 /etc/group | sort | uniq -d)"
check_eq "/etc/shadow keeps root:shadow 0640" "root:shadow 640" "$(stat -c '%U:%G %a' /etc/shadow)"
check_eq "/etc/passwd keeps root:root 0644" "root:root 644" "$(stat -c '%U:%G %a' /etc/passwd)"

stat_is "srv root" /srv/con "root:root 755"
stat_is "outer inbox: sticky, write-only for the submitters" /srv/con/inbox "root:root 1730"
stat_is "contracts: root only" /srv/con/contracts "root:root 755"
stat_is "audit logs: root only" /srv/con/logs/audit "root:root 750"
# The keeper's layout (docs/SECURITY.md): everything but the workspace is root's.
stat_is "agent folder: root's, traversable" /srv/con/agents/sysadmin "root:root 711"
stat_is "agent inbox: root's, sticky" /srv/con/agents/sysadmin/inbox "root:root 1730"
stat_is "agent queue: root only" /srv/con/agents/sysadmin/queue "root:root 700"
stat_is "... with the senders' conversations in it" /srv/con/agents/sysadmin/queue/conversations "root:root 700"
for d in outbox processed failed; do
        stat_is "agent $d: root's, traversable" "/srv/con/agents/sysadmin/$d" "root:root 711"
done
stat_is "agent workspace" /srv/con/agents/sysadmin/workspace "a-sysadmin:agents 700"
check_fail "no conversations in the workspace" test -e /srv/con/agents/sysadmin/workspace/sessions
stat_is "skills: root-owned, outside the workspace" /srv/con/agents/sysadmin/skills "root:root 755"
stat_is "home: root-owned, private" /home/a-concierge "root:root 750"
stat_is "AGENTS.md" /home/a-concierge/AGENTS.md "root:root 444"
stat_is "AGENTS.md.sha256" /home/a-concierge/AGENTS.md.sha256 "root:root 444"
check_eq "AGENTS.md.sha256 matches" "$(sha256sum /home/a-concierge/AGENTS.md | cut -d' ' -f1)" \
        "$(cat /home/a-concierge/AGENTS.md.sha256)"
check_output "concierge's AGENTS.md holds its instructions" "concierge" cat /home/a-concierge/AGENTS.md
check_output "inbox ACL: concierge may write+traverse sysadmin's inbox" "^user:a-concierge:-wx$" \
        getfacl -p /srv/con/agents/sysadmin/inbox
ACL_OUT=$LIB_OUT
check_fail "inbox default ACL: no agent reads what senders create" grep -q "^default:user:[^:]" <<<"$ACL_OUT"
check_output "... others get nothing" "^default:other::---$" echo "$ACL_OUT"
check_output "folder ACL: concierge may traverse sysadmin's folder" "^user:a-concierge:--x$" \
        getfacl -p /srv/con/agents/sysadmin
check_output "outer inbox ACL: the con group may write+traverse" "^group:con:-wx$" getfacl -p /srv/con/inbox
check_fail "outbox carries no ACL entry for anyone" grep -q "^user:a-" <(getfacl -p /srv/con/agents/concierge/outbox)
check "dbus policy written" test -f /etc/dbus-1/system.d/org.conspiracy.conf
check_eq "dbus policy is root:root 0644" "root:root 644" "$(stat -c '%U:%G %a' /etc/dbus-1/system.d/org.conspiracy.conf)"

# Whatever the profile ships in contracts/ and skills is copied, without nesting scripts/.
if [ -d "$PROFILES/default/contracts" ]; then
        check "contracts copied as shipped" diff -r "$PROFILES/default/contracts" /srv/con/contracts
        check_fail "no contracts/scripts/scripts nesting" test -e /srv/con/contracts/scripts/scripts
fi
for f in "$PROFILES"/default/roles/sysadmin/skills/*.md; do
        [ -f "$f" ] || continue
        n=$(basename "$f")
        check_same_file "skill $n deployed" "$f" "/srv/con/agents/sysadmin/skills/$n"
        stat_is "skill $n is root-owned, read-only" "/srv/con/agents/sysadmin/skills/$n" "root:root 444"
done

section "the kernel enforces it (runuser)"
ISYS=/srv/con/agents/sysadmin/inbox
check "concierge can create a task in sysadmin's inbox" as_user a-concierge sh -c "echo hello >$ISYS/from-concierge.task"
check_fail_output "concierge cannot list sysadmin's inbox" 'Permission denied|Operation not permitted' as_user a-concierge ls "$ISYS"
# The inbox is root's: the agent itself can neither drop, read, move nor delete what its
# senders left there (the router, root, reads it and hands each task over on the bus).
check_fail_output "sysadmin cannot drop a file in its own inbox" 'Permission denied|Operation not permitted' as_user a-sysadmin sh -c "echo private >$ISYS/own.task"
check_fail_output "sysadmin cannot read a task concierge created" 'Permission denied' as_user a-sysadmin cat "$ISYS/from-concierge.task"
check_fail_output "sysadmin cannot list its inbox" 'Permission denied|Operation not permitted' as_user a-sysadmin ls "$ISYS"
check_fail_output "sysadmin cannot move a task out of its inbox" 'Permission denied|Operation not permitted' as_user a-sysadmin \
        mv "$ISYS/from-concierge.task" /srv/con/agents/sysadmin/workspace/
check "concierge creates a task with umask 077" as_user a-concierge sh -c "umask 077; echo tight >$ISYS/umask.task"
check "concierge creates a task with open(..., 0600)" as_user a-concierge \
        perl -MFcntl -e 'sysopen(my $f, $ARGV[0], O_CREAT | O_WRONLY, 0600) or die "$!"; syswrite($f, "x")' \
        "$ISYS/mode600.task"
check "root (the router) reads the 0600 task" cat "$ISYS/mode600.task"
check "sysadmin can submit to concierge (default policy)" as_user a-sysadmin \
        sh -c "echo hi >/srv/con/agents/concierge/inbox/from-sysadmin.task"
check_fail_output "concierge cannot write to its own outbox (the service's)" 'Permission denied|Operation not permitted' as_user a-concierge \
        sh -c "echo out >/srv/con/agents/concierge/outbox/r.md"
check "root writes a response there (0600, as the service does)" \
        sh -c "umask 077; echo out >/srv/con/agents/concierge/outbox/r.md"
for d in outbox processed workspace; do
        check_fail_output "sysadmin cannot list concierge's $d" 'Permission denied|Operation not permitted' as_user a-sysadmin ls "/srv/con/agents/concierge/$d"
done
check_fail_output "sysadmin cannot read concierge's outbox file" 'Permission denied' as_user a-sysadmin cat /srv/con/agents/concierge/outbox/r.md
check_fail_output "sysadmin cannot write root-executed contracts" 'Permission denied|Operation not permitted' as_user a-sysadmin touch /srv/con/contracts/evil.yaml
check_fail_output "agents cannot read the audit logs" 'Permission denied|Operation not permitted' as_user a-sysadmin ls /srv/con/logs/audit
check_fail_output "agents cannot drop into the outer inbox" 'Permission denied|Operation not permitted' as_user a-concierge sh -c "echo x >/srv/con/inbox/a.task"

A=/home/a-concierge/AGENTS.md
check "concierge reads its AGENTS.md" as_user a-concierge cat "$A"
check_fail_output "concierge cannot write its AGENTS.md" 'Permission denied|Operation not permitted' as_user a-concierge sh -c "echo evil >>$A"
check_fail_output "concierge cannot unlink its AGENTS.md" 'Permission denied|Operation not permitted' as_user a-concierge rm -f "$A"
check_fail_output "concierge cannot rename its AGENTS.md" 'Permission denied|Operation not permitted' as_user a-concierge mv "$A" "$A.old"
check_fail_output "concierge cannot create files in its home" 'Permission denied|Operation not permitted' as_user a-concierge touch /home/a-concierge/AGENTS.md.new
check_fail_output "concierge cannot chmod its AGENTS.md" 'Permission denied|Operation not permitted' as_user a-concierge chmod 644 "$A"
check_fail_output "sysadmin cannot read concierge's home" 'Permission denied' as_user a-sysadmin cat "$A"
check_fail_output "sysadmin cannot add a skill" 'Permission denied|Operation not permitted' as_user a-sysadmin touch /srv/con/agents/sysadmin/skills/injected.md
check_fail_output "sysadmin cannot rename its skills folder" 'Permission denied|Operation not permitted' as_user a-sysadmin \
        mv /srv/con/agents/sysadmin/skills /srv/con/agents/sysadmin/skills.old
check_fail_output "sysadmin cannot create a skills folder of its own next to it" 'Permission denied|Operation not permitted' as_user a-sysadmin \
        mkdir /srv/con/agents/sysadmin/skills2

check "create a human in the con group" useradd -M -N -g users -G con human1
check "create a second human in the con group" useradd -M -N -g users -G con human2
check "create a human outside the con group" useradd -M -N -g users outsider
check "a con member drops a task into the outer inbox" as_user human1 sh -c "echo task >/srv/con/inbox/h1.task"
check "another con member drops one too" as_user human2 sh -c "echo task >/srv/con/inbox/h2.task"
check_fail_output "a non-member cannot" 'Permission denied|Operation not permitted' as_user outsider sh -c "echo task >/srv/con/inbox/o.task"
check_fail_output "members cannot list the outer inbox" 'Permission denied|Operation not permitted' as_user human1 ls /srv/con/inbox
check_fail_output "members cannot delete each other's tasks (sticky)" 'Permission denied|Operation not permitted' as_user human2 rm -f /srv/con/inbox/h1.task
check_fail_output "members cannot read each other's tasks" 'Permission denied' as_user human2 cat /srv/con/inbox/h1.task
check_fail_output "members cannot overwrite each other's tasks" 'Permission denied|Operation not permitted' as_user human2 sh -c "echo x >/srv/con/inbox/h1.task"
check_eq "the task is intact" "task" "$(cat /srv/con/inbox/h1.task)"

section "idempotency"
snapshot "$T/s2"
check_output "second run changes nothing" "^bootstrap: nothing to change \([0-9]+ items checked\)$" \
        con bootstrap --profile default
check_eq "second run prints no change line" "" "$(grep -Ev '^(bootstrap: |con: bootstrap: warning: )' <<<"$LIB_OUT")"
snapshot "$T/s3"
check_same_file "second run left everything as it was" "$T/s2" "$T/s3"
check_output "no argument: uses /etc/con/con.yaml, nothing to change" "nothing to change" con bootstrap
check_output "dry run now plans nothing" "nothing to change" con bootstrap --dry-run
snapshot "$T/s4"
check_same_file "dry run touched nothing" "$T/s2" "$T/s4"

section "drift is repaired, and only the drift"
chmod 0777 /srv/con/agents/sysadmin/outbox
setfacl -b /srv/con/agents/sysadmin/inbox
chown a-concierge /home/a-concierge
chmod 0644 /etc/dbus-1/system.d/org.conspiracy.conf && echo '<!-- x -->' >>/etc/dbus-1/system.d/org.conspiracy.conf
snapshot "$T/s5"
check_output "dry run shows the drift" "^would set mode /srv/con/agents/sysadmin/outbox \(0711\)$" con bootstrap --dry-run
check_output "...the lost ACL" "^would set acl /srv/con/agents/sysadmin/inbox$" echo "$LIB_OUT"
check_output "...the home owner" "^would set owner /home/a-concierge \(root:root\)$" echo "$LIB_OUT"
check_output "...the edited platform file" "^would write /etc/dbus-1/system.d/org.conspiracy.conf$" echo "$LIB_OUT"
check_eq "dry run plans nothing else" "" \
        "$(grep '^would ' <<<"$LIB_OUT" | grep -Ev ' (/srv/con/agents/sysadmin/(outbox|inbox)|/home/a-concierge|/etc/dbus-1/system.d/org.conspiracy.conf)( |$)')"
snapshot "$T/s6"
check_same_file "dry run did not repair" "$T/s5" "$T/s6"
check "repair run" con bootstrap
snapshot "$T/s7"
check_same_file "repaired state equals the state before the drift" "$T/s2" "$T/s7"

section "the key file: owner and mode repaired, contents never touched"
printf 'CON_API_KEY=sk-bootstrap-test\n' >/etc/con/env
check_output "writing keys into the file keeps its owner and mode" "root:con-models 640" stat -c '%U:%G %a' /etc/con/env
chown root:root /etc/con/env && chmod 0644 /etc/con/env && setfacl -m u:a-concierge:r /etc/con/env
check_output "dry run shows the owner" "^would set owner /etc/con/env \(root:con-models\)$" con bootstrap --dry-run
check_output "...the mode" "^would set mode /etc/con/env \(0640\)$" echo "$LIB_OUT"
check_output "...the ACL" "^would set acl /etc/con/env$" echo "$LIB_OUT"
check "repair run" con bootstrap
stat_is "the key file is root:con-models 0640 again" /etc/con/env "root:con-models 640"
check_fail "... without the ACL entry" sh -c "getfacl -cp /etc/con/env | grep -q a-concierge"
check_eq "... with the keys intact" "CON_API_KEY=sk-bootstrap-test" "$(cat /etc/con/env)"
check_output "a second run changes nothing" "nothing to change" con bootstrap
: >/etc/con/env   # back to the state of the first run

section "symlinks are refused"
mv /srv/con/agents/sysadmin/outbox "$T/outbox.real"
mkdir "$T/victim"
ln -s "$T/victim" /srv/con/agents/sysadmin/outbox
check_status "a symlinked agent folder: exit status 1" 1 con bootstrap
check_output "...names the path and the symlink" "/srv/con/agents/sysadmin/outbox: .*symbolic link" echo "$LIB_OUT"
check_eq "...and the target was not chowned" "root" "$(stat -c %U "$T/victim")"
rm /srv/con/agents/sysadmin/outbox
mv "$T/outbox.real" /srv/con/agents/sysadmin/outbox

section "an edited /etc/con is never overwritten silently"
echo "# local edit" >>/etc/con/con.yaml
check_status "--profile over an edited con.yaml: exit status 1" 1 con bootstrap --profile default
check_output "...says which file and what to do" "/etc/con/con.yaml.*--force" echo "$LIB_OUT"
check_output "...the file is untouched" "# local edit" tail -1 /etc/con/con.yaml
check_output "without --profile the edited file is used" "nothing to change" con bootstrap
check "--config of the installed file itself changes nothing" con bootstrap --config /etc/con/con.yaml
check "--force replaces it with the profile's" con bootstrap --profile default --force
check_same_file "...restored" "$PROFILES/default/con.yaml" /etc/con/con.yaml

section "--config FILE is installed as /etc/con/con.yaml (the services read that)"
cp "$PROFILES/default/con.yaml" "$T/other.yaml"
echo "# other file" >>"$T/other.yaml"
echo "# local edit" >>/etc/con/con.yaml
check_status "--config FILE over an edited con.yaml: exit status 1" 1 con bootstrap --config "$T/other.yaml"
check_output "...says which file and what to do" \
        "/etc/con/con.yaml differs from .*other.yaml and was changed here.*'diff -u .*other.yaml /etc/con/con.yaml'.*--force" \
        echo "$LIB_OUT"
check_output "...and touched nothing" "# local edit" tail -1 /etc/con/con.yaml
check_output "--config FILE --force installs it" "^replace /etc/con/con.yaml \(changed here; --force\)$" \
        con bootstrap --config "$T/other.yaml" --force
check_same_file "...as /etc/con/con.yaml" "$T/other.yaml" /etc/con/con.yaml
check_output "...and a second run changes nothing" "nothing to change" con bootstrap --config "$T/other.yaml"
cp "$T/other.yaml" "$T/other2.yaml"
echo "# another file" >>"$T/other2.yaml"
check_output "--config FILE over the unedited one it installed: replaced without --force" \
        "^update /etc/con/con.yaml \(unedited since installed\)$" con bootstrap --config "$T/other2.yaml"
check_same_file "...as /etc/con/con.yaml" "$T/other2.yaml" /etc/con/con.yaml
check_output "back to the profile, without --force (con.yaml is unedited)" \
        "^update /etc/con/con.yaml \(unedited since installed, profile changed\)$" con bootstrap --profile default
check_same_file "...restored" "$PROFILES/default/con.yaml" /etc/con/con.yaml

section "--profile minimal"
check_output "switch to the minimal profile: its files replace the unedited ones" \
        "^update /etc/con/con.yaml \(unedited since installed, profile changed\)$" con bootstrap --profile minimal
check_output "...the default profile's files it lacks are removed" \
        "^remove /etc/con/agents/sysadmin/AGENTS.md \(unedited since installed, no longer in the profile\)$" echo "$LIB_OUT"
check_fail "...gone" test -e /etc/con/agents/sysadmin/AGENTS.md
check_same_file "minimal con.yaml installed" "$PROFILES/minimal/con.yaml" /etc/con/con.yaml
check "concierge still provisioned" test -f /home/a-concierge/AGENTS.md
check_output "minimal again: nothing to change" "nothing to change" con bootstrap --profile minimal
check_fail "concierge has no peer ACL left on its own folder" grep -q "^user:a-" \
        <(getfacl -p /srv/con/agents/concierge)
check "back to the default profile" con bootstrap --profile default
check_same_file "...its files are back" "$PROFILES/default/agents/sysadmin/AGENTS.md" /etc/con/agents/sysadmin/AGENTS.md

# Upgrades (docs/BOOTSTRAP.md): dpkg's conffile logic. What bootstrap installed from a profile is
# recorded with its SHA-256; a file unedited since then is replaced when the profile changes, an
# admin's edit is refused (or replaced with --force).
REC=/var/lib/conspiracyos/installed-files
SYS=/etc/con/agents/sysadmin/AGENTS.md
SKILL=/etc/con/roles/sysadmin/skills/commission-agent.md
OLD=$(cd "$(dirname "$0")" && pwd)/data/default-55f2e39
hash() { sha256sum "$1" | cut -d' ' -f1; }

section "upgrades: the record of installed files"
stat_is "the record is root's, 0600" "$REC" "root:root 600"
stat_is "...in a root-owned folder" /var/lib/conspiracyos "root:root 755"
check_fail_output "...no agent can read it" 'Permission denied' as_user a-sysadmin cat "$REC"
check_fail_output "...nor a member of con" 'Permission denied' as_user human1 cat "$REC"
for f in /etc/con/con.yaml "$SYS" "$SKILL"; do
        check "...it has $f with the SHA-256 of what was written" grep -qxF "$(hash "$f")  $f" "$REC"
done
check_eq "...one line per file of the profile" "$(find "$PROFILES/default" -type f | wc -l)" "$(grep -vc '^#' "$REC")"

section "upgrades: a machine provisioned by an earlier version (no record)"
# /etc/con as the default profile of commit 55f2e39 installed it, unedited; no record then.
check "the 55f2e39 fixture is in the shipped history" \
        grep -qxF "$(hash "$OLD/agents/sysadmin/AGENTS.md")  default/agents/sysadmin/AGENTS.md" "$PROFILES/profile-history.sha256"
check_fail "...and differs from the profile now" \
        cmp -s "$OLD/agents/sysadmin/AGENTS.md" "$PROFILES/default/agents/sysadmin/AGENTS.md"
cp "$OLD/agents/sysadmin/AGENTS.md" "$SYS"
cp "$OLD/roles/sysadmin/skills/commission-agent.md" "$SKILL"
rm "$REC"
check_output "dry run: the old files are updated" \
        "^would update $SYS \(unedited since installed, profile changed\)$" con bootstrap --profile default --dry-run
check_output "...both" "^would update $SKILL \(unedited since installed, profile changed\)$" echo "$LIB_OUT"
check_same_file "...and the dry run changed nothing" "$OLD/agents/sysadmin/AGENTS.md" "$SYS"
check_output "bootstrap --profile default succeeds without --force" \
        "^update $SYS \(unedited since installed, profile changed\)$" con bootstrap --profile default
check_same_file "...installs the profile's AGENTS.md" "$PROFILES/default/agents/sysadmin/AGENTS.md" "$SYS"
check_same_file "...and skill" "$PROFILES/default/roles/sysadmin/skills/commission-agent.md" "$SKILL"
stat_is "...and writes the record" "$REC" "root:root 600"
check "...with the new version" grep -qxF "$(hash "$SYS")  $SYS" "$REC"
check_output "a second run changes nothing" "nothing to change" con bootstrap --profile default
cp "$OLD/agents/sysadmin/AGENTS.md" "$SYS"
echo "# edited after 55f2e39" >>"$SYS"
rm "$REC"
check_status "an edited old file (no record): refused" 1 con bootstrap --profile default
check_output "...naming it and the diff to run" \
        "1 file in /etc/con was changed here.*: $SYS\. See the differences with: diff -u $PROFILES/default/agents/sysadmin/AGENTS.md $SYS\. .*--force.*without --profile" \
        echo "$LIB_OUT"
check_output "...the file is untouched" "# edited after 55f2e39" tail -1 "$SYS"
check_fail "...and no record was written" test -e "$REC"
check "--force replaces it" con bootstrap --profile default --force
check_same_file "...with the profile's" "$PROFILES/default/agents/sysadmin/AGENTS.md" "$SYS"

section "upgrades: the profile changed since bootstrap installed it (record)"
# A copy of the profile stands for the next version of the package.
NEW=$PROFILES/upgradetest
cp -a "$PROFILES/default" "$NEW"
check_output "the copy installs nothing new" "nothing to change" con bootstrap --profile upgradetest
echo "# version 2" >>"$NEW/agents/sysadmin/AGENTS.md"
rm "$NEW/roles/sysadmin/skills/heartbeat-audit.md"
check_output "dry run: the changed file is updated" \
        "^would update $SYS \(unedited since installed, profile changed\)$" con bootstrap --profile upgradetest --dry-run
check_output "...the dropped one removed" \
        "^would remove /etc/con/roles/sysadmin/skills/heartbeat-audit.md \(unedited since installed, no longer in the profile\)$" \
        echo "$LIB_OUT"
cp "$SYS" "$T/sys.before"
sha256sum "$REC" >"$T/rec.sum"
# The changes, in order: the update, the removal, the record (last).
check_status "a run that fails before its 3rd change (the record)" 1 env CON_TEST_BOOTSTRAP_FAIL_AT=3 con bootstrap --profile upgradetest
check_output "...is rolled back" "rolled back \(2 changes reverted\)" echo "$LIB_OUT"
check_same_file "...the updated file has its old content" "$T/sys.before" "$SYS"
check "...the removed file is back" test -f /etc/con/roles/sysadmin/skills/heartbeat-audit.md
check "...the record is as it was" sha256sum -c --quiet "$T/rec.sum"
check_output "bootstrap replaces it silently" "^update $SYS \(unedited since installed, profile changed\)$" \
        con bootstrap --profile upgradetest
check_same_file "...with the new version" "$NEW/agents/sysadmin/AGENTS.md" "$SYS"
check_fail "...removes the dropped file" test -e /etc/con/roles/sysadmin/skills/heartbeat-audit.md
check_fail "...and forgets it" grep -q heartbeat-audit "$REC"
check "...records the new version" grep -qxF "$(hash "$SYS")  $SYS" "$REC"
check_output "a second run changes nothing" "nothing to change" con bootstrap --profile upgradetest
# Files no earlier version had (so only the record knows them), added and then dropped together.
echo "extra a" >"$NEW/roles/sysadmin/skills/extra-a.md"
echo "extra b" >"$NEW/roles/sysadmin/skills/extra-b.md"
check_output "a new version adds two files" "^write /etc/con/roles/sysadmin/skills/extra-b.md$" con bootstrap --profile upgradetest
rm "$NEW/roles/sysadmin/skills/extra-a.md" "$NEW/roles/sysadmin/skills/extra-b.md"
check "the next one drops both: both are removed" con bootstrap --profile upgradetest
check_fail "...the first" test -e /etc/con/roles/sysadmin/skills/extra-a.md
check_fail "...the second" test -e /etc/con/roles/sysadmin/skills/extra-b.md
check_fail "...and the record forgets them" grep -q extra- "$REC"

section "upgrades: an admin's edit is refused, --force replaces it"
echo "# admin edit" >>"$SYS"
echo "# version 3" >>"$NEW/agents/sysadmin/AGENTS.md"
sha256sum "$REC" >"$T/rec.sum"
check_status "bootstrap refuses: exit status 1" 1 con bootstrap --profile upgradetest
check_output "...naming the file, the diff to run, --force, and how to keep it" \
        "1 file in /etc/con was changed here and differs from the profile in $NEW: $SYS\. See the differences with: diff -u $NEW/agents/sysadmin/AGENTS.md $SYS\. Then either add --force .* or keep it: run 'con bootstrap' without --profile" \
        echo "$LIB_OUT"
check_output "...the file is untouched" "# admin edit" tail -1 "$SYS"
check "...and so is the record" sha256sum -c --quiet "$T/rec.sum"
check_status "the dry run refuses too" 1 con bootstrap --profile upgradetest --dry-run
check_output "...naming the file" "was changed here.*: $SYS\\." echo "$LIB_OUT"
check_output "--force replaces it" "^replace $SYS \(changed here; --force\)$" con bootstrap --profile upgradetest --force
check_same_file "...with the profile's" "$NEW/agents/sysadmin/AGENTS.md" "$SYS"
check "...and records it" grep -qxF "$(hash "$SYS")  $SYS" "$REC"

section "upgrades: an edited file the profile dropped is kept"
W=/etc/con/roles/sysadmin/skills/writing-contracts.md
echo "# admin edit" >>"$W"
rm "$NEW/roles/sysadmin/skills/writing-contracts.md"
check_output "bootstrap succeeds and says it kept the file" \
        "warning: $W is no longer in the profile, but was changed here: kept" con bootstrap --profile upgradetest
check_output "...the file is there, edited" "# admin edit" tail -1 "$W"
check_fail "...the record forgets it" grep -q writing-contracts "$REC"
check_output "a second run says nothing more" "nothing to change" con bootstrap --profile upgradetest
check_fail "...no warning" grep -q "writing-contracts" <<<"$LIB_OUT"

section "upgrades: with a record, a file it does not list is not removed"
# The admin puts back by hand a file the profile dropped (bootstrap removed it above), as a
# profile version had it: the history knows that content, but the record says bootstrap did not
# install it; the history is for machines with no record.
H=/etc/con/roles/sysadmin/skills/heartbeat-audit.md
cp "$PROFILES/default/roles/sysadmin/skills/heartbeat-audit.md" "$H"
check "...the record does not list it" bash -c "! grep -q heartbeat-audit '$REC'"
check "...the shipped history knows its content" grep -qxF "$(hash "$H")  default/roles/sysadmin/skills/heartbeat-audit.md" \
        "$PROFILES/profile-history.sha256"
check_output "bootstrap has nothing to change" "nothing to change" con bootstrap --profile upgradetest
check "...and the file is still there" test -f "$H"
rm -f "$H"

section "upgrades: a record line whose path has '..' is refused and removes nothing"
# /etc/con/../../var/lib/X starts with /etc/con/ but names a file outside it: unedited (its hash
# matches) and in no profile, it would be removed as an obsolete file.
V=/var/lib/con-test-victim
echo "not bootstrap's" >"$V"
echo "$(hash "$V")  /etc/con/../..$V" >>"$REC"
check_output "bootstrap warns that the record is malformed" "$REC:[0-9]+: not a line 'SHA256  PATH'" \
        con bootstrap --profile upgradetest
check "...the file that line named is still there" test -f "$V"
check_fail "...and the record written anew does not have it" grep -q con-test-victim "$REC"
rm -f "$V"

section "con-provisiond's runs (--add-dropin) leave the record alone"
sha256sum "$REC" >"$T/rec.sum"
printf 'agents:\n  - name: extra\n    tier: worker\n' >"$T/extra.yaml"
check "bootstrap --add-dropin" con bootstrap --add-dropin "$T/extra.yaml"
check "...the record is as it was" sha256sum -c --quiet "$T/rec.sum"
check "bootstrap --remove-dropin" con bootstrap --remove-dropin extra.yaml
check "...the record is as it was" sha256sum -c --quiet "$T/rec.sum"

section "mesh: this host's TLS key and certificate, made by con bootstrap (docs/MULTIHOST.md)"
# host-b has no CA: bootstrap writes its key and a signing request and stops; the CA's host (here
# a folder, $MCA) signs it with con mesh sign; the second bootstrap proceeds. Then refusals of
# certificates that are not this host's, and the CA's host, where bootstrap issues it itself.
MCA=$T/mesh-ca
MK=/etc/con/mesh/host.key MC=/etc/con/mesh/host.crt MR=/etc/con/mesh/host.csr MA=/etc/con/mesh/ca.crt
check "the CA's host: con mesh init" con mesh init --ca-dir "$MCA"
cp /etc/con/con.yaml "$T/con.yaml.nomesh"
printf 'mesh:\n  host: host-b\n  servers: [tls://127.0.0.1:4222]\n' >>/etc/con/con.yaml
snapshot "$T/m0"
check_output "--dry-run: would write the key and the request, and stop" \
        "would stop here: mesh: this host \(host-b\) has no certificate yet" con bootstrap --dry-run
check_output "...the key" "^would write $MK$" echo "$LIB_OUT"
check_output "...the request" "^would write $MR$" echo "$LIB_OUT"
# Fail before the change after the request (one line per change up to there): key and request written.
n=$(grep '^would ' <<<"$LIB_OUT" | grep -nxF "would write $MR" | cut -d: -f1)
n=$((n + 1))
snapshot "$T/m1"
check_same_file "...and changes nothing" "$T/m0" "$T/m1"
check_status "a run that fails after writing the key and the request (before change $n)" 1 env CON_TEST_BOOTSTRAP_FAIL_AT="$n" con bootstrap
check_output "...is rolled back" "rolled back \([0-9]+ changes reverted\)" echo "$LIB_OUT"
check_fail "...the key it wrote is gone" test -e "$MK"
check_fail "...and so is the request" test -e "$MR"
check_fail_output "con bootstrap without the CA: stops, saying what to run on the CA's host" \
        "con mesh sign host-b.csr --out host-b.crt" con bootstrap
check_output "...names the request" "its signing request is $MR" echo "$LIB_OUT"
check_output "...and where the certificate goes" "copy host-b.crt to this host's $MC and the CA's ca.crt" echo "$LIB_OUT"
stat_is "...this host's key: root:con-mesh 0640" "$MK" "root:con-mesh 640"
stat_is "...the request: root:root 0644" "$MR" "root:root 644"
check_output "...a request of host-b, validly signed" "CN ?= ?host-b" openssl req -in "$MR" -noout -verify -subject
check_fail "...with no private key in it" grep -q PRIVATE "$MR"
sha256sum "$MK" "$MR" >"$T/mesh-key.sum"
check_fail_output "a second run without the certificate stops the same way" "con mesh sign host-b.csr" con bootstrap
check "...keeping the key and the request" sha256sum -c --quiet "$T/mesh-key.sum"
cp "$MR" "$T/host-b.csr"
check_output "the CA's host signs it (con mesh sign)" "host-b.crt: the certificate of host-b" \
        bash -c "cd '$T' && con mesh sign host-b.csr --ca-dir '$MCA'"
check_output "...a client certificate of host-b" "DNS:host-b" openssl x509 -in "$T/host-b.crt" -noout -ext subjectAltName
check_eq "...for this host's key" "$(openssl pkey -in "$MK" -pubout)" "$(openssl x509 -in "$T/host-b.crt" -noout -pubkey)"
cp "$T/host-b.crt" "$MC"
cp "$MCA/ca.crt" "$MA"
check "con bootstrap proceeds once the certificate is there" con bootstrap
check_output "...it verifies against the mesh's CA" "OK" openssl verify -CAfile "$MA" -purpose sslclient "$MC"
stat_is "...the key stays root:con-mesh 0640" "$MK" "root:con-mesh 640"
check_output "...a second run changes nothing" "nothing to change" con bootstrap
cp "$MK" "$T/good.key"
# Refused: another host's certificate, one from another CA, a key that is not the certificate's.
check "the CA issues host-z's certificate" con mesh issue host-z --ca-dir "$MCA" --out "$T/host-z"
cp "$T/host-z/host.crt" "$MC" && cp "$T/host-z/host.key" "$MK"
check_fail_output "con bootstrap refuses another host's certificate" \
        "mesh: $MC is the certificate of 'host-z', not of this host \(mesh.host: host-b\): remove it and run con bootstrap again" \
        con bootstrap
check "another CA issues a certificate of host-b" bash -c \
        "con mesh init --ca-dir '$T/rogue' && con mesh issue host-b --ca-dir '$T/rogue' --out '$T/rogue-b'"
cp "$T/rogue-b/host.crt" "$MC" && cp "$T/rogue-b/host.key" "$MK"
check_fail_output "con bootstrap refuses a certificate from another CA" \
        "mesh: $MC is not signed by the mesh's CA \($MA\): it comes from another CA" con bootstrap
cp "$T/host-b.crt" "$MC"
check_fail_output "con bootstrap refuses a key that is not the certificate's" \
        "mesh: $MC does not belong to the key $MK: copy the key issued with it" con bootstrap
cp "$T/good.key" "$MK"
check "with the right key it proceeds" con bootstrap
# The CA's host: bootstrap issues the certificate itself (for a new key), as con mesh issue does.
rm -f "$MK" "$MC" "$MR" "$MA"
mkdir -p /etc/con/mesh-ca && cp -a "$MCA/." /etc/con/mesh-ca/
check_output "on the CA's host con bootstrap issues this host's certificate" "^write $MC$" con bootstrap
check_output "...signed by the CA, for host-b" "OK" openssl verify -CAfile "$MCA/ca.crt" -purpose sslclient "$MC"
check_eq "...for its key" "$(openssl pkey -in "$MK" -pubout)" "$(openssl x509 -in "$MC" -noout -pubkey)"
stat_is "...the key root:con-mesh 0640" "$MK" "root:con-mesh 640"
check_output "...the certificates root:root 0644" "^root:root 644 root:root 644$" \
        bash -c "echo \$(stat -c '%U:%G %a' '$MC' '$MA')"
check_fail "...no signing request" test -e "$MR"
check_output "...a second run changes nothing" "nothing to change" con bootstrap
rm -rf /etc/con/mesh-ca
cp "$T/con.yaml.nomesh" /etc/con/con.yaml

finish
