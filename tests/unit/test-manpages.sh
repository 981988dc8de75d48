#!/bin/bash
# test-manpages.sh SRC PROGRAM=PATH...: the manual pages in SRC/man cannot go stale.
#   1. Every page renders without a single warning (groff -man -ww, and man -l when man-db is
#      installed), and without words run together (a sentence given to .BR loses its spaces).
#   2. Every word of each program's --help that names something a user types appears in its page:
#      every option (--long, -s) and every literal word of its Usage lines (subcommands such as
#      'verify', values such as 'default|minimal'). For con(1) per verb: each verb of
#      'con --help' has a subsection "con VERB" holding what 'con VERB --help' prints, and each
#      such subsection names a verb that exists.
#   3. 'con help VERB' prints exactly what 'con VERB --help' prints.
#   4. Every page is installed (man/CMakeLists.txt) and every program has its page.
# The PROGRAM=PATH arguments name the built programs (con, con-send and every daemon); each must
# have its page. TAP-like output; exit 1 on any failure.
set -uo pipefail
src=${1:?usage: test-manpages.sh SRC PROGRAM=PATH...}
shift
declare -A bin=()
for a in "$@"; do bin[${a%%=*}]=${a#*=}; done
man=$src/man
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok $((passed + failed)) - $1"; }
not_ok() {
        failed=$((failed + 1))
        echo "not ok $((passed + failed)) - $1"
        [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/#   /'
}
command -v groff >/dev/null || { echo "not ok - groff is not installed (scripts/install-deps.sh: groff-base)"; exit 1; }

# The page as plain text, one paragraph per line (no filling, hyphenation or overstriking), so
# a word is found whatever the line length.
render() {
        LC_ALL=C.UTF-8 groff -man -Tascii -P-cbou -rLL=10000n "$1" 2>/dev/null
}

# The words of a --help text a page must mention, one per line.
help_words() {
        local text=$1
        {
                # options anywhere in the text
                grep -oE -- '(^|[^A-Za-z0-9-])--[a-z][a-z0-9-]*[a-z0-9]' <<<"$text" | sed 's/^[^-]*--/--/'
                grep -oE -- '(^|[ ,[|])-[A-Za-z]([],| =]|$)' <<<"$text" | grep -oE -- '-[A-Za-z]'
                # the literal words of the usage lines (up to the first blank line), options and
                # upper-case placeholders left out
                sed '/^$/q' <<<"$text" | sed 's/^Usage://' | tr ' []|=.' '\n' | grep -E '^[a-z][a-z0-9-]*$'
        } | sort -u
}

# has_word TEXT WORD: WORD appears in TEXT as a whole word (hyphens are part of words).
has_word() {
        grep -qE -- "(^|[^A-Za-z0-9_-])$(sed 's/[.]/\\./g' <<<"$2")([^A-Za-z0-9_-]|$)" <<<"$1"
}

# The subsection "con VERB" of the rendered con(1): from its heading (3 spaces of indent) to the
# next heading.
con_section() {
        awk -v h="   con $2" '
                $0 == h { on = 1; next }
                on && (/^[^ ]/ || /^ [^ ]/ || /^  [^ ]/ || /^   [^ ]/) { exit }
                on { print }' <<<"$1"
}

pages=$(cd "$man" && ls -- *.[1-8] 2>/dev/null)
if [ -z "$pages" ]; then
        not_ok "there are pages in man/"
        echo "$passed passed, $failed failed"
        exit 1
fi

# 1. rendering
for p in $pages; do
        w=$(LC_ALL=C.UTF-8 groff -man -ww -z -Tutf8 "$man/$p" 2>&1)
        if command -v man >/dev/null; then
                w+=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$man/$p" 2>&1 >/dev/null)
        fi
        if [ -z "$w" ]; then ok "$p renders without warnings"; else not_ok "$p renders without warnings" "$w"; fi
        # Words run together (an alternating-font macro such as .BR given a sentence: its words
        # lose their spaces) render as one long run of letters.
        glued=$(render "$man/$p" | grep -oE '[A-Za-z]{28,}' | head -n 3)
        if [ -z "$glued" ]; then ok "$p: no words run together"
        else not_ok "$p: no words run together (quote the sentence or start a new line after .BR/.IR ...)" "$glued"; fi
        name=${p%.*}
        section=${p##*.}
        if grep -qE "^\.TH \"?$(sed 's/[.]/\\./g' <<<"${name^^}")\"? $section " "$man/$p"; then
                ok "$p: .TH names $name($section)"
        else
                not_ok "$p: .TH names $name($section)" "$(grep -m1 '^\.TH' "$man/$p")"
        fi
done

# 4. installed, and a page per program
for p in $pages; do
        if grep -qE "(^|[ (])$p([ )]|$)" "$man/CMakeLists.txt"; then ok "$p is installed"; else not_ok "$p is installed (man/CMakeLists.txt)"; fi
done
# Every program the build installs (install(TARGETS ...) outside tests/) is given to this test.
installed=$(find "$src" -name CMakeLists.txt -not -path "$src/tests/*" -not -path "$src/build*" -not -path "*/.git/*" \
        -exec grep -hoE 'install\(TARGETS +[A-Za-z0-9_-]+' {} + | awk '{ print $2 }' | sort -u)
for prog in $installed; do
        if [ -n "${bin[$prog]:-}" ]; then ok "installed program $prog is checked"
        else not_ok "installed program $prog is checked" "add $prog=\$<TARGET_FILE:$prog> to test-manpages in tests/unit/CMakeLists.txt and write man/$prog.8"; fi
done
for prog in $(printf '%s\n' con con-send "${!bin[@]}" | sort -u); do
        if [ -x "${bin[$prog]:-}" ]; then ok "$prog was built"; else not_ok "$prog was built (${bin[$prog]:-not given})"; continue; fi
        f=$(ls "$man/$prog".[18] 2>/dev/null | head -n1)
        if [ -n "$f" ]; then ok "$prog has a page"; else not_ok "$prog has a page (man/$prog.1 or .8)"; continue; fi
        text=$(render "$f")
        if [ "$prog" = con ]; then
                continue
        fi
        help=$("${bin[$prog]}" --help 2>&1)
        missing=""
        for w in $(help_words "$help"); do
                has_word "$text" "$w" || missing="$missing $w"
        done
        if [ -z "$missing" ]; then ok "$prog: every option and word of --help is in $(basename "$f")"
        else not_ok "$prog: every option and word of --help is in $(basename "$f")" "missing:$missing"; fi
done

# 2 and 3. con, verb by verb
con=${bin[con]:?con=PATH is required}
page=$(render "$man/con.1")
verbs=$("$con" --help | awk '/^Commands:/ { f = 1; next } f && /^  [a-z]/ { print $1 }')
if [ -n "$verbs" ]; then ok "con --help lists its verbs"; else not_ok "con --help lists its verbs"; fi
missing=""
for w in $(help_words "$("$con" --help)") --version; do
        has_word "$page" "$w" || missing="$missing $w"
done
if [ -z "$missing" ]; then ok "con: the options of con --help are in con.1"; else not_ok "con: the options of con --help are in con.1" "missing:$missing"; fi
for v in $verbs help; do
        sec=$(con_section "$page" "$v")
        if [ -z "$sec" ]; then
                not_ok "con.1 has a subsection 'con $v'"
                continue
        fi
        ok "con.1 has a subsection 'con $v'"
        [ "$v" = help ] && continue
        help=$("$con" "$v" --help 2>&1)
        missing=""
        for w in $(help_words "$help"); do
                has_word "$sec" "$w" || missing="$missing $w"
        done
        if [ -z "$missing" ]; then ok "con $v: every option and word of its --help is in its subsection"
        else not_ok "con $v: every option and word of its --help is in its subsection" "missing:$missing"; fi
        if [ "$("$con" help "$v" 2>&1)" = "$help" ]; then ok "con help $v = con $v --help"
        else not_ok "con help $v = con $v --help"; fi
done
# No subsection for a verb that is gone.
for h in $(grep -E '^   con [a-z-]+$' <<<"$page" | awk '{ print $2 }'); do
        if grep -qx -- "$h" <<<"$verbs"$'\n'help; then ok "con.1: 'con $h' is a verb"
        else not_ok "con.1: 'con $h' is a verb" "con --help does not list '$h': remove its subsection"; fi
done

echo "$passed passed, $failed failed"
((failed == 0 && passed > 0))
