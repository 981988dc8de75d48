#!/bin/bash
# A burst of 10,000 dropped tasks all complete exactly once; kill -9 of the router and of the
# agent in the middle of a burst loses and duplicates nothing.
# Runs as root inside tests/sandbox/con-sandbox (fresh system bus, project installed in /usr).
. "$(dirname "$0")/lib.sh"
require_sandbox
T=$(lib_tmp)
N=${CON_BURST_N:-10000}
M=${CON_BURST_KILL_N:-3000}
TIMEOUT=${CON_BURST_TIMEOUT:-600}
AGENT_DIR=/srv/con/agents/concierge

count() { find "$1" -maxdepth 1 -name "$2" -type f | wc -l; }

inbox_drained() { # the router removes a file once the agent acknowledged it
        local end=$((SECONDS + 60))
        while ((SECONDS < end)); do
                (($(count /srv/con/inbox '*.task') == 0)) && return 0
                sleep 0.2
        done
        echo "$(count /srv/con/inbox '*.task') files left in /srv/con/inbox"
        return 1
}

wait_count() { # wait_count DIR GLOB WANT: until DIR holds WANT files matching GLOB
        local end=$((SECONDS + TIMEOUT)) n
        while ((SECONDS < end)); do
                n=$(count "$1" "$2")
                ((n >= $3)) && return 0
                sleep 1
        done
        echo "only $n of $3 $2 files in $1 after ${TIMEOUT}s"
        return 1
}


# The agent's view: every id exactly once in ListTasks (as root: all tasks).
ids_unique() {
        # ListTasks shows the tasks in memory: at most the 1000 most recent finished ones
        # (AGENT_QUEUE_KEEP_FINISHED), none twice. The journal holds one accept (or, after a
        # compaction, known) record per id the agent took, none twice; with the records of
        # finished tasks (queue/finished/ID.json: compaction drops evicted ones from the
        # journal) that makes exactly N ids.
        con tasks concierge --json >"$T/tasks.json" || return 1
        local listed listed_uniq jall juniq total
        listed=$(grep -o '"task_id":[[:space:]]*"[^"]*"' "$T/tasks.json" | grep -c "\"$1")
        listed_uniq=$(grep -o '"task_id":[[:space:]]*"[^"]*"' "$T/tasks.json" | grep "\"$1" | sort -u | wc -l)
        grep -o '"op":"\(accept\|known\)","id":"'"$1"'[^"]*"' "$AGENT_DIR/queue/journal" \
                | sed 's/.*"id":"//; s/"$//' >"$T/journal-ids"
        jall=$(wc -l <"$T/journal-ids")
        juniq=$(sort -u "$T/journal-ids" | wc -l)
        total=$( (cat "$T/journal-ids"; ls "$AGENT_DIR/queue/finished" | grep "^$1" | sed 's/\.json$//') \
                | sort -u | wc -l)
        echo "ids with prefix $1: $listed listed, $listed_uniq unique; $jall in the journal, $juniq unique;" \
                "$total known"
        [ "$listed" = "$listed_uniq" ] && [ "$listed" -ge 1 ] && [ "$listed" -le 1000 ] &&
                [ "$jall" = "$juniq" ] && [ "$total" = "$2" ]
}

section "fabric up"
check "con bootstrap --profile default" con bootstrap --profile default
check "con up" con up

section "burst of $N tasks"
start=$SECONDS
for i in $(seq -w 1 "$N"); do printf '/ping\n' >"/srv/con/inbox/a-$i.task"; done
echo "# dropped $N files in $((SECONDS - start)) s"
check "all $N answered" wait_count "$AGENT_DIR/outbox" 'a-*.response' "$N"
echo "# done after $((SECONDS - start)) s"
check "all $N processed" wait_count "$AGENT_DIR/processed" 'a-*.task' "$N"
check_eq "exactly $N responses" "$N" "$(count "$AGENT_DIR/outbox" 'a-*.response')"
check "the inbox is drained" inbox_drained
check_eq "nothing was rejected" "0" "$(count /srv/con/rejected '*-inbox-a-*.task' 2>/dev/null || echo 0)"
check "every id once at the agent" ids_unique a- "$N"

section "kill -9 of the router and of the agent during a burst of $M"
for i in $(seq -w 1 "$M"); do printf '/ping\n' >"/srv/con/inbox/b-$i.task"; done
sleep 1
rp=$(bus_owner_pid org.conspiracy.Router)
check "router pid known ($rp)" test -n "$rp"
kill -9 "$rp"
sleep 0.5
ap=$(bus_owner_pid org.conspiracy.Concierge)
[ -n "$ap" ] && kill -9 "$ap"
check "con up restarts the router" con up
sleep 2
ap=$(bus_owner_pid org.conspiracy.Concierge)
[ -n "$ap" ] && kill -9 "$ap"   # once more, while the router is delivering
check "all $M answered" wait_count "$AGENT_DIR/outbox" 'b-*.response' "$M"
check "all $M processed" wait_count "$AGENT_DIR/processed" 'b-*.task' "$M"
check_eq "exactly $M responses" "$M" "$(count "$AGENT_DIR/outbox" 'b-*.response')"
check "the inbox is drained" inbox_drained
check "every id once at the agent" ids_unique b- "$M"
check "the audit chain verifies" con audit verify

con down >/dev/null 2>&1
finish
