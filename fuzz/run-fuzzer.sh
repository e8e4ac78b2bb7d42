#!/bin/sh
# Run one libFuzzer harness for a bounded time on its seed corpus.
#
# Usage: run-fuzzer.sh HARNESS SEED_DIR [SECONDS] [LIBFUZZER_OPTION...]
#
# SECONDS defaults to $FUZZ_SECONDS, else 20. New inputs go to a temporary
# directory (the committed seeds are never written); a crash, leak or
# timeout leaves its reproducer in $FUZZ_ARTIFACTS (default: the current
# directory) and fails the run.
set -eu

exe=$1
seeds=$2
shift 2
secs=${FUZZ_SECONDS:-20}
if [ $# -gt 0 ]; then
        secs=$1
        shift
fi
artifacts=${FUZZ_ARTIFACTS:-$(pwd)}
mkdir -p "$artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/ipcd-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

"$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 -artifact_prefix="$artifacts/$(basename "$exe")-" \
        "$@" "$work" "$seeds"
