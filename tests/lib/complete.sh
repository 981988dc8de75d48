# shellcheck shell=bash
# complete_line LINE: runs the completion function registered for LINE's first word as bash would
# when Tab is pressed at the end of LINE, and leaves the candidates in COMPREPLY. COMP_WORDS is
# split as bash splits it with its default COMP_WORDBREAKS: at blanks, and at '=' (which becomes a
# word of its own). Source the completion file first.
complete_line() {
        local line=$1 w fn
        COMP_LINE=$line
        COMP_POINT=${#line}
        COMP_WORDS=()
        for w in $line; do
                if [[ $w == *=* ]]; then
                        COMP_WORDS+=("${w%%=*}" "=")
                        [[ -n ${w#*=} ]] && COMP_WORDS+=("${w#*=}")
                else
                        COMP_WORDS+=("$w")
                fi
        done
        # Tab after a blank starts a new, empty word (after "=" the "=" is the current word).
        if [[ $line == *[[:space:]] ]]; then COMP_WORDS+=(""); fi
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        fn=$(complete -p "${COMP_WORDS[0]}" 2>/dev/null | sed -n 's/.*-F \([^ ]*\) .*/\1/p')
        COMPREPLY=()
        [[ -n $fn ]] || return 1
        "$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]:-}"
        return 0
}

# The candidates, sorted, on one line.
completions() {
        complete_line "$1" || { echo "(no completion for ${1%% *})"; return; }
        printf '%s\n' "${COMPREPLY[@]}" | sort | paste -sd' '
}
