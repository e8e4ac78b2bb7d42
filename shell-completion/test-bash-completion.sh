#!/bin/bash
# The bash completion of ipcctl, sourced into this shell: what COMPREPLY holds
# for verbs, options, socket paths after -s, and the command names that a
# running ipcd (started here, on a socket in a temporary directory) offers
# after "send"; with no daemon, nothing and no noise.
#
# Usage: test-bash-completion.sh COMPLETION-FILE IPCCTL IPCD
set -u

comp=$1 ipcctl=$2 ipcd=$3
tmp=$(mktemp -d)
pid=''
failures=0
passes=0

cleanup()
{
        if [[ $pid ]]; then
                kill "$pid" 2>/dev/null
                wait "$pid" 2>/dev/null
        fi
        rm -rf "$tmp"
}
trap cleanup EXIT

# shellcheck source=shell-completion/bash/ipcctl
source "$comp" || { echo "FAIL: cannot source $comp"; exit 1; }

# complete WORD... : the completion for a line whose last word is the one
# being completed (give "" for an empty word); COMPREPLY, sorted, in $got.
complete_line()
{
        COMP_WORDS=("$ipcctl" "$@")
        COMP_CWORD=$#
        COMP_LINE="${COMP_WORDS[*]}"
        COMP_POINT=${#COMP_LINE}
        COMPREPLY=()
        _ipcctl 2>"$tmp/stderr"
        got=$(printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ')
        got=${got% }
        if [[ -s $tmp/stderr ]]; then
                echo "FAIL: the completion printed on stderr: $(cat "$tmp/stderr")"
                failures=$((failures + 1))
        fi
}

# complete_bash "LINE": as bash itself calls the completion for LINE, its
# COMP_WORDS split at blanks and at ':' and '=' (COMP_WORDBREAKS), each run of
# those a word of its own.
complete_bash()
{
        local line=$1 w rest
        COMP_WORDS=()
        for w in $line; do
                while [[ $w ]]; do
                        if [[ $w == [:=]* ]]; then
                                rest=${w##+([:=])}
                        else
                                rest=${w##+([^:=])}
                        fi
                        COMP_WORDS+=("${w:0:$((${#w} - ${#rest}))}")
                        w=$rest
                done
        done
        [[ $line == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE="$line"
        COMP_POINT=${#COMP_LINE}
        COMPREPLY=()
        _ipcctl 2>"$tmp/stderr"
        got=$(printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ')
        got=${got% }
}

# expect_bash "WANT" "LINE": what bash gets for LINE is exactly WANT.
expect_bash()
{
        complete_bash "$2"
        if [[ $got == "$1" ]]; then
                passes=$((passes + 1))
                echo "ok: [$2] -> [$got]"
        else
                failures=$((failures + 1))
                echo "FAIL: [$2]: got [$got], want [$1]"
        fi
}

# expect "WANT" WORD... : COMPREPLY (sorted, blank-separated) is exactly WANT.
expect()
{
        local want=$1
        shift
        complete_line "$@"
        if [[ $got == "$want" ]]; then
                passes=$((passes + 1))
                echo "ok: ipcctl $* -> [$got]"
        else
                failures=$((failures + 1))
                echo "FAIL: ipcctl $*: got [$got], want [$want]"
        fi
}

# expect_has "WORD..." WORD... : COMPREPLY holds at least these.
expect_has()
{
        local want=$1 w
        shift
        complete_line "$@"
        for w in $want; do
                if [[ " $got " != *" $w "* ]]; then
                        failures=$((failures + 1))
                        echo "FAIL: ipcctl $*: got [$got], missing $w"
                        return
                fi
        done
        passes=$((passes + 1))
        echo "ok: ipcctl $* -> [$got]"
}

# Verbs and options.
expect "hello listen publish send stats" ""
expect "send stats" s
expect "--json" --j
expect_has "-s -H -t -q -h --socket --json" -
expect_has "--socket --host --token-file --timeout --json --quiet --help --version" --
expect "hello listen publish send stats" -t 5 --json ""
expect "" -t ""
expect "--count" listen --c
expect "--reconnect" listen --r
expect "" hello ""

# Socket paths after -s: directories and sockets, not other files.
mkdir -p "$tmp/run/sub" || exit 1
touch "$tmp/run/notes.txt"
"$ipcd" --listen "unix:$tmp/run/ipcd.sock" >"$tmp/ipcd.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
        "$ipcctl" -s "$tmp/run/ipcd.sock" -t 1 send ping >/dev/null 2>&1 && break
        if ! kill -0 "$pid" 2>/dev/null; then
                echo "FAIL: ipcd exited: $(cat "$tmp/ipcd.log")"
                exit 1
        fi
        sleep 0.05
done
expect "$tmp/run/" -s "$tmp/r"
expect "$tmp/run/ipcd.sock $tmp/run/sub/" -s "$tmp/run/"
expect "$tmp/run/ipcd.sock" --socket "$tmp/run/i"

# Command names from the daemon, with the connection options of the line.
expect_has "ping echo hello help quit stats" -s "$tmp/run/ipcd.sock" send ""
expect_has "ping" -s "$tmp/run/ipcd.sock" send p
complete_line -s "$tmp/run/ipcd.sock" send p
for w in $got; do
        [[ $w == p* ]] || { echo "FAIL: send p offers $w"; failures=$((failures + 1)); }
done
expect "echo" --socket="$tmp/run/ipcd.sock" --json send help ec
expect "" -s "$tmp/run/ipcd.sock" send ping ""
# As bash splits the words: a HOST:PORT or an --opt=value is no verb.
shopt -s extglob
expect_bash "" "$ipcctl -H 127.0.0.1:1 send "
expect_bash "send stats" "$ipcctl -H 127.0.0.1:1 s"
expect_bash "send stats" "$ipcctl --host=127.0.0.1:1 s"
expect_bash "hello listen publish send stats" "$ipcctl --host=[::1]:1 "
expect_bash "echo" "$ipcctl --socket=$tmp/run/ipcd.sock send ec"
expect_bash "echo" "$ipcctl -s $tmp/run/ipcd.sock --json=typed send ec"
expect_bash "frames" "$ipcctl --json=f"
expect_bash "$tmp/run/ipcd.sock" "$ipcctl --socket=$tmp/run/ipcd"
expect_bash "ssh:" "$ipcctl -H ss"
# No daemon there: nothing, quietly (complete_line fails on stderr output).
expect "" -s "$tmp/run/none.sock" send ""

echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
