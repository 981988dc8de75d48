# shellcheck shell=bash
# Bash completion for con(1) and con-send(1). Installed as .../bash-completion/completions/con and
# .../con-send. Needs only bash (no bash-completion helpers), so it also works when sourced by hand.
#
# Verbs and options come from the programs' own --help, so they are never out of date. Agent
# names come from the configuration (con agents --json, which reads /etc/con/con.yaml or the
# --config given on the line), else from the names on the system bus; task ids from the running
# agents (con tasks), never starting an agent that does not run.

# The word being completed, as typed: the text from the last space to the cursor (COMP_WORDS
# splits at '=' too, which would lose '--continue=' and '--config=').
_con_current_word() {
        local line=${COMP_LINE:0:COMP_POINT}
        printf '%s' "${line##*[[:space:]]}"
}

# The value of OPTION on the command line (--config FILE or --config=FILE), or nothing.
_con_option_value() {
        local opt=$1 i w
        for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
                w=${COMP_WORDS[i]}
                if [[ $w == "$opt" ]]; then
                        # "--config" "=" "FILE" when '=' breaks words, "--config" "FILE" otherwise.
                        if [[ ${COMP_WORDS[i + 1]} == "=" ]]; then printf '%s' "${COMP_WORDS[i + 2]}"
                        else printf '%s' "${COMP_WORDS[i + 1]}"; fi
                        return
                elif [[ $w == "$opt="* ]]; then
                        printf '%s' "${w#*=}"
                        return
                fi
        done
}

# The options a --help text offers: those of its usage lines (up to the first blank line) and of
# its option list (lines that start with spaces and a '-'); prose that mentions other programs'
# options (con up: "dbus-daemon --system --fork") is left out.
_con_help_options() {
        "$@" --help 2>/dev/null | awk 'NR == 1, /^$/ { print; next } /^ +-/ { print }' |
                grep -oE -- '(^|[^A-Za-z0-9-])--?[A-Za-z][A-Za-z0-9-]*' | grep -oE -- '--?[A-Za-z][A-Za-z0-9-]*' | sort -u
}

_con_verbs() {
        con --help 2>/dev/null | awk '/^Commands:/ { f = 1; next } f && /^  [a-z]/ { print $1 }'
}

# Agent names: the configuration first (the real parser, through con), else the bus.
_con_agents() {
        local config=${1:-} out
        out=$(con agents --json ${config:+--config "$config"} 2>/dev/null |
                grep -oE '"name":"[a-z][a-z0-9-]*"' | sed 's/^"name":"//; s/"$//')
        if [[ -z $out ]] && command -v busctl >/dev/null; then
                out=$(busctl --system list --no-legend --no-pager 2>/dev/null |
                        awk '$1 ~ /^org\.conspiracy\.[A-Z][A-Za-z0-9]*$/ { sub(/^org\.conspiracy\./, "", $1); print $1 }' |
                        grep -vxE 'Router|Contracts|Models' |
                        sed 's/\([A-Z]\)/-\1/g; s/^-//' | tr '[:upper:]' '[:lower:]')
        fi
        printf '%s\n' "$out"
}

# Task ids of the running agents (asking an agent that does not run would start it).
_con_task_ids() {
        local config=${1:-} agent
        # One agent object per line; the router's has no "name".
        for agent in $(con status --json ${config:+--config "$config"} 2>/dev/null | sed 's/},{/}\n{/g' |
                grep '"running":true' | grep -oE '"name":"[a-z][a-z0-9-]*"' | sed 's/^"name":"//; s/"$//'); do
                con tasks "$agent" --json ${config:+--config "$config"} 2>/dev/null |
                        grep -oE '"task_id":"[^"]*"' | sed 's/^"task_id":"//; s/"$//'
        done
}

# The installed profiles: the folders with a con.yaml (not profile-history.sha256 next to them).
# CON_PROFILES_DIR replaces /usr/share/conspiracyos/profiles (for tests/unit/test-completion.sh).
_con_profiles() {
        local d out=""
        for d in "${CON_PROFILES_DIR:-/usr/share/conspiracyos/profiles}"/*/con.yaml; do
                [[ -f $d ]] && d=${d%/con.yaml} && out+="${d##*/} "
        done
        echo "${out:-default minimal}"
}

# _con_reply CUR WORDS...: COMPREPLY from the words that start with CUR. A CUR of the form
# --option=value completes the value; when '=' breaks words, readline replaces only the part
# after it, so the reply leaves '--option=' out.
_con_reply() {
        local cur=$1 prefix="" w
        shift
        if [[ $cur == --*=* ]]; then
                prefix=${cur%%=*}=
                cur=${cur#*=}
                [[ $COMP_WORDBREAKS == *=* ]] && prefix=""
        fi
        COMPREPLY=()
        while IFS= read -r w; do
                [[ -n $w ]] && COMPREPLY+=("$prefix$w")
        done < <(compgen -W "$*" -- "$cur")
}

# COMPREPLY: files (or with "dirs" directories) starting with CUR (after '--opt=' if any).
_con_reply_files() {
        local cur=$1 kind=${2:-files} prefix="" w
        if [[ $cur == --*=* ]]; then
                prefix=${cur%%=*}=
                cur=${cur#*=}
                [[ $COMP_WORDBREAKS == *=* ]] && prefix=""
        fi
        COMPREPLY=()
        while IFS= read -r w; do
                [[ -n $w ]] && COMPREPLY+=("$prefix$w")
        done < <(if [[ $kind == dirs ]]; then compgen -d -- "$cur"; else compgen -f -- "$cur"; fi)
        compopt -o filenames 2>/dev/null
}

_con() {
        local cur prev verb="" i n=0 args=()
        cur=$(_con_current_word)
        # The words before the current one, joined back where '=' split them.
        for ((i = 1; i < COMP_CWORD; i++)); do
                local w=${COMP_WORDS[i]}
                if [[ $w == "=" || ${COMP_WORDS[i - 1]} == "=" ]] && ((${#args[@]})) && [[ ${args[-1]} == --* ]]; then
                        args[-1]+=$w
                else
                        args+=("$w")
                fi
        done
        [[ $cur == *=* && ${#args[@]} -gt 0 && ${args[-1]} == *= ]] && unset 'args[-1]'
        prev=""
        ((${#args[@]})) && prev=${args[-1]}
        local config
        config=$(_con_option_value --config)

        # The verb: the first word that is not an option.
        local positional=()
        for ((i = 0; i < ${#args[@]}; i++)); do
                case ${args[i]} in
                --config|--dir|--contracts-dir|--lines|--timeout|--reason|--profile|-n|-c|-p) ((i++)) ;;
                --tier|--mode|--cron|--cron-task|--role|--instructions|--may-task|--tasked-by|--runner|--provider|--model|--network|--agent) ((i++)) ;;
                -*) ;;
                *) positional+=("${args[i]}") ;;
                esac
        done
        verb=${positional[0]:-}
        n=$((${#positional[@]} - 1))    # arguments of the verb before the current word

        # Values of options.
        case $cur in
        --config=*) _con_reply_files "$cur"; return ;;
        --dir=*|--contracts-dir=*) _con_reply_files "$cur" dirs; return ;;
        --profile=*) _con_reply "$cur" "$(_con_profiles)"; return ;;
        --agent=*) _con_reply "$cur" "$(_con_agents "$config")"; return ;;
        esac
        case $prev in
        --config|-c) _con_reply_files "$cur"; return ;;
        --dir|--contracts-dir) _con_reply_files "$cur" dirs; return ;;
        --profile|-p) _con_reply "$cur" "$(_con_profiles)"; return ;;
        --lines|-n|--timeout|--reason) COMPREPLY=(); return ;;
        --tier) _con_reply "$cur" officer operator worker; return ;;
        --mode) _con_reply "$cur" on-demand always cron; return ;;
        --runner) _con_reply "$cur" picoclaw claude codex; return ;;
        --network) _con_reply "$cur" none gateway; return ;;
        --may-task|--tasked-by|--agent) _con_reply "$cur" "$(_con_agents "$config")"; return ;;
        --instructions) _con_reply_files "$cur"; return ;;
        --cron|--cron-task|--role|--provider|--model) COMPREPLY=(); return ;;
        esac

        if [[ -z $verb ]]; then
                if [[ $cur == -* ]]; then _con_reply "$cur" --help --version
                else _con_reply "$cur" "$(_con_verbs) help"; fi
                return
        fi
        if [[ $cur == -* ]]; then
                # con mesh's subcommands have options of their own (status; init, issue, sign, server-config, streams).
                if [[ $verb == mesh && -n ${positional[1]:-} ]]; then
                        _con_reply "$cur" "$(_con_help_options con mesh "${positional[1]}") --help"
                else
                        _con_reply "$cur" "$(_con_help_options con "$verb") --help"
                fi
                return
        fi
        case $verb in
        help) ((n == 0)) && _con_reply "$cur" "$(_con_verbs)" ;;
        tasks|run|quarantine|release) ((n == 0)) && _con_reply "$cur" "$(_con_agents "$config")" ;;
        task|cancel) ((n == 0)) && _con_reply "$cur" "$(_con_task_ids "$config")" ;;
        audit) ((n == 0)) && _con_reply "$cur" verify ;;
        agent)
                case $n in
                0) _con_reply "$cur" add remove list ;;
                1) [[ ${positional[1]} == remove ]] && _con_reply "$cur" "$(_con_agents "$config")" ;;
                esac
                ;;
        mesh)
                case $n in
                0) _con_reply "$cur" status init issue sign server-config streams ;;
                1) [[ ${positional[1]} == sign ]] && _con_reply_files "$cur" ;;    # the signing request
                esac
                ;;
        policy)
                case $n in
                0) _con_reply "$cur" show check query ;;
                1) [[ ${positional[1]} == query ]] && _con_reply "$cur" "$(compgen -u)" ;;
                2) [[ ${positional[1]} == query ]] &&
                        _con_reply "$cur" task read-result cancel halt quarantine commission contracts-admin ;;
                3) [[ ${positional[1]} == query ]] && _con_reply "$cur" "$(_con_agents "$config")" ;;
                esac
                ;;
        *) COMPREPLY=() ;;
        esac
        return 0
}

_con_send() {
        local cur prev i args=()
        cur=$(_con_current_word)
        for ((i = 1; i < COMP_CWORD; i++)); do
                local w=${COMP_WORDS[i]}
                if [[ $w == "=" || ${COMP_WORDS[i - 1]} == "=" ]] && ((${#args[@]})) && [[ ${args[-1]} == --* ]]; then
                        args[-1]+=$w
                else
                        args+=("$w")
                fi
        done
        [[ $cur == *=* && ${#args[@]} -gt 0 && ${args[-1]} == *= ]] && unset 'args[-1]'
        prev=""
        ((${#args[@]})) && prev=${args[-1]}
        local config
        config=$(_con_option_value --config)

        case $cur in
        --config=*) _con_reply_files "$cur"; return ;;
        --to=*) _con_reply "$cur" "$(_con_agents "$config")"; return ;;
        --continue=*|--conversation=*|--id=*) _con_reply "$cur" "$(_con_task_ids "$config")"; return ;;
        esac
        case $prev in
        --config) _con_reply_files "$cur"; return ;;
        --to) _con_reply "$cur" "$(_con_agents "$config")"; return ;;
        --conversation|--id) _con_reply "$cur" "$(_con_task_ids "$config")"; return ;;
        --timeout) COMPREPLY=(); return ;;
        esac
        # Options only before the message (con-send stops at the first word that is not one).
        for ((i = 0; i < ${#args[@]}; i++)); do
                case ${args[i]} in
                --to|--id|--timeout|--config|--conversation) ((i++)) ;;
                -*) ;;
                *) COMPREPLY=(); return ;;
                esac
        done
        if [[ $cur == -* ]]; then
                _con_reply "$cur" "$(_con_help_options con-send)"
        else
                # The built-in commands every agent answers without a model.
                _con_reply "$cur" /help /ping /agents /status /tasks /new /forget
        fi
}

complete -F _con con
complete -F _con_send con-send
