#!/bin/sh
# test-conf.sh IPCD CONF - the shipped ipcd.conf is valid as it is, and so is
# every [Daemon] setting in it once uncommented (each spelled at a valid
# value: the documented default).
set -eu
ipcd=$1
conf=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! out=$("$ipcd" --check-config --config "$conf" 2>&1); then
        echo "FAIL: $conf as shipped: $out"
        exit 1
fi
echo "ok: $conf as shipped"

# Uncomment "#Key=value" up to the commented examples of other sections.
awk '/^#\[/ { done = 1 } !done && /^#[A-Za-z]+=/ { sub(/^#/, "") } { print }' "$conf" \
        >"$tmp/uncommented.conf"
n=$(grep -c '^[A-Za-z]*=' "$tmp/uncommented.conf" || true)
if [ "$n" -lt 9 ]; then
        echo "FAIL: only $n [Daemon] settings found in $conf"
        exit 1
fi
if ! out=$("$ipcd" --check-config --config "$tmp/uncommented.conf" 2>&1); then
        echo "FAIL: $conf with its $n settings uncommented: $out"
        exit 1
fi
echo "ok: $conf with its $n [Daemon] settings uncommented"
