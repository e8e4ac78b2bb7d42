#!/bin/sh
# test-man.sh IPCD IPCCTL PAGE... - the manual pages are clean and complete.
#
# 1. `mandoc -Tlint -Wwarning PAGE` must print nothing and exit 0 for every
#    PAGE: any warning, error or unsupported construct fails the test.
#    Messages of level style (-Wstyle) are ignored on purpose: on a real
#    system most of them are "referenced manual not found" for every .Xr to
#    a page that is not installed on the machine running the test (our own
#    pages before `meson install`, socat(1), sd_notify(3), ...) and
#    "outdated mandoc.db", which depend on the machine, not on the pages.
#    (The pages are style-clean apart from those; `mandoc -Tlint -Wstyle`
#    shows it.)
# 2. Every long option that `IPCD --help` prints appears in ipcd.8, and
#    every one that `IPCCTL --help` prints in ipcctl.1, in the rendered
#    text (so it is really documented, not only named in a comment); so
#    must those of `$IPCD_BRIDGE --help` in ipcd-bridge.8 when it is set.
#
# Exit status: 0 pass, 1 fail, 77 skipped (no mandoc), 2 usage.
set -u
LC_ALL=C
export LC_ALL

if [ $# -lt 3 ]; then
        echo "usage: $0 IPCD IPCCTL PAGE..." >&2
        exit 2
fi
ipcd=$1
ipcctl=$2
shift 2

if ! command -v mandoc >/dev/null 2>&1; then
        echo "SKIP: mandoc is not installed (it is in debian/control's Build-Depends)"
        exit 77
fi

fail=0
ipcd_page=
ipcctl_page=
bridge_page=

for page in "$@"; do
        case ${page##*/} in
        ipcd.8) ipcd_page=$page ;;
        ipcctl.1) ipcctl_page=$page ;;
        ipcd-bridge.8) bridge_page=$page ;;
        esac
        out=$(mandoc -Tlint -Wwarning "$page" 2>&1)
        status=$?
        if [ $status -ne 0 ] || [ -n "$out" ]; then
                echo "FAIL: mandoc -Tlint -Wwarning $page (exit status $status):"
                printf '%s\n' "$out"
                fail=1
        else
                echo "ok: $page: mandoc -Tlint -Wwarning is clean"
        fi
done

# check_options PROGRAM PAGE: every --option in `PROGRAM --help` is in PAGE.
check_options() {
        if [ -z "$2" ]; then
                echo "FAIL: no page given for $1"
                fail=1
                return
        fi
        if ! help=$("$1" --help); then
                echo "FAIL: $1 --help failed"
                fail=1
                return
        fi
        # Plain text, no overstriking, no line breaks inside the text.
        bs=$(printf '\b')
        text=$(mandoc -Tascii -O width=1000 "$2" | sed "s/.$bs//g")
        opts=$(printf '%s\n' "$help" | tr -cs 'A-Za-z0-9-' '\n' | grep '^--[a-z]' | sort -u)
        if [ -z "$opts" ]; then
                echo "FAIL: no long options found in $1 --help"
                fail=1
                return
        fi
        for opt in $opts; do
                if printf '%s\n' "$text" |
                        grep -Eq -- "(^|[^A-Za-z0-9-])$opt([^A-Za-z0-9-]|\$)"; then
                        echo "ok: $opt is documented in ${2##*/}"
                else
                        echo "FAIL: $1 --help prints $opt, but ${2##*/} does not document it"
                        fail=1
                fi
        done
}

check_options "$ipcd" "$ipcd_page"
check_options "$ipcctl" "$ipcctl_page"
# ipcd-bridge, when built: $IPCD_BRIDGE names it.
if [ -n "${IPCD_BRIDGE:-}" ]; then
        check_options "$IPCD_BRIDGE" "$bridge_page"
fi

exit $fail
