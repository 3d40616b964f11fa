#!/bin/bash
# Runs the libFuzzer targets of tests/fuzz/ for a while each.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 60 s, every target
#   FUZZ_JOBS=2 scripts/fuzz.sh 600           two targets at a time
#   scripts/fuzz.sh --merge [TARGET...]       fold what the runs found into
#                                             tests/fuzz/corpus/ (minimised,
#                                             FUZZ_CORPUS_KB per target)
# Configures and builds build-fuzz/ (clang, -Dfuzzing=true) when needed.
# Each target starts from tests/fuzz/corpus/TARGET/ (read only) and keeps
# what it finds in build-fuzz/fuzz-out/TARGET/corpus/; crashes, leaks,
# timeouts and OOMs go to build-fuzz/fuzz-out/TARGET/crashes/.  A crash ends
# a libFuzzer run; the target is started again while time is left, up to
# three findings.  Prints per target: executions, exec/s, final cov and ft,
# corpus entries, findings.  Runs under nice: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=build-fuzz
OUT=$BUILD/fuzz-out
CORPUS=tests/fuzz/corpus
JOBS=${FUZZ_JOBS:-1}
MAX_FINDINGS=3

merge=false
if [ "${1:-}" = --merge ]; then
    merge=true
    shift
fi
secs=60
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    secs=$1
    shift
fi

if [ ! -f "$BUILD/build.ninja" ]; then
    CC=clang nice -n 10 meson setup "$BUILD" -Dfuzzing=true
fi
nice -n 10 ninja -C "$BUILD" >/dev/null

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for d in "$CORPUS"/*/; do
        targets+=("$(basename "$d")")
    done
fi
for t in "${targets[@]}"; do
    if [ ! -x "$BUILD/tests/fuzz/fuzz-$t" ]; then
        echo "fuzz: no target $t (have: $(ls "$BUILD/tests/fuzz" |
              sed -n 's/^fuzz-\([^.]*\)$/\1/p' | tr '\n' ' '))" >&2
        exit 1
    fi
done

# Folds the runs' finds into the committed corpus: seed-* and crash-*
# files stay as they are (a regression input stays even when it adds no
# coverage); libFuzzer's -merge=1 picks, among the other committed files
# and the work corpus, those that add features to them; the smallest of
# those are kept up to FUZZ_CORPUS_KB KiB per target (default 160), so the
# repository stays small.
merge_one() {
    local t=$1 exe=$BUILD/tests/fuzz/fuzz-$1 new pool
    local budget=$(( ${FUZZ_CORPUS_KB:-160} * 1024 )) used f size
    new=$(mktemp -d)
    pool=$(mktemp -d)
    find "$CORPUS/$t" -maxdepth 1 -type f \( -name 'seed-*' -o -name 'crash-*' \) \
        -exec cp {} "$new/" \;
    find "$CORPUS/$t" -maxdepth 1 -type f ! -name 'seed-*' ! -name 'crash-*' \
        -exec cp {} "$pool/" \;
    mkdir -p "$OUT/$t/corpus"
    nice -n 10 "$exe" -merge=1 -close_fd_mask=2 "$new" "$pool" \
        "$OUT/$t/corpus" >"$OUT/$t/merge.log" 2>&1
    find "$CORPUS/$t" -maxdepth 1 -type f ! -name 'seed-*' ! -name 'crash-*' \
        -delete
    used=$(find "$CORPUS/$t" -maxdepth 1 -type f -printf '%s\n' |
           awk '{s += $1} END {print s + 0}')
    while read -r size f; do
        if [ $((used + size)) -gt "$budget" ]; then
            break
        fi
        cp "$new/$f" "$CORPUS/$t/"
        used=$((used + size))
    done < <(find "$new" -maxdepth 1 -type f ! -name 'seed-*' \
             ! -name 'crash-*' -printf '%s %f\n' | sort -n)
    rm -rf "$new" "$pool"
    echo "$t: corpus $(ls "$CORPUS/$t" | wc -l) files, $used bytes"
}

# One target for secs seconds; writes its summary line to $OUT/t/summary.
run_one() {
    local t=$1 exe=$BUILD/tests/fuzz/fuzz-$1 dir=$OUT/$1
    local left=$secs runs=0 n=0 prev start now
    mkdir -p "$dir/corpus" "$dir/crashes"
    : >"$dir/log"
    touch "$dir/started"    # findings of this run are the newer files
    start=$(date +%s)
    while [ "$left" -gt 0 ] && [ "$n" -lt $MAX_FINDINGS ]; do
        # -close_fd_mask=2: the targets' own stderr (the driver logs every
        # hostile image it refuses) would fill the log; libFuzzer and the
        # sanitizers report on a copy of it.
        nice -n 10 "$exe" -max_total_time="$left" -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 -close_fd_mask=2 \
            -artifact_prefix="$dir/crashes/" \
            "$dir/corpus" "$CORPUS/$t" >>"$dir/log" 2>&1 || true
        prev=$n
        n=$(find "$dir/crashes" -type f -newer "$dir/started" | wc -l)
        now=$(date +%s)
        left=$((secs - (now - start)))
        # the same crash again (a corpus input crashes): restarting is moot
        if [ "$n" -eq "$prev" ] && [ "$left" -gt 0 ]; then
            break
        fi
    done
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" |
           awk '{s += $1} END {print s + 0}')
    local elapsed=$(( $(date +%s) - start ))
    local last cov ft corp
    # the last status line: "#N ... cov: C ft: F corp: E/SIZE ..."
    last=$(grep -a ' cov: ' "$dir/log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    printf '%-18s %12s %8s %6s %7s %7s %9s\n' "$t" "$runs" \
        "$((runs / (elapsed > 0 ? elapsed : 1)))" "${cov:-?}" "${ft:-?}" \
        "${corp:-?}" "$n" >"$dir/summary"
}

if $merge; then
    for t in "${targets[@]}"; do
        merge_one "$t"
    done
    exit 0
fi

echo "fuzz: ${#targets[@]} target(s), $secs s each, $JOBS at a time;" \
     "logs and crashes in $OUT/TARGET/"
running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

printf '%-18s %12s %8s %6s %7s %7s %9s\n' target executions exec/s cov ft \
    corpus findings
found=0
for t in "${targets[@]}"; do
    cat "$OUT/$t/summary"
    found=$((found + $(awk '{print $7}' "$OUT/$t/summary")))
done
if [ "$found" -gt 0 ]; then
    echo "fuzz: findings (reproduce: $BUILD/tests/fuzz/fuzz-TARGET FILE):"
    for t in "${targets[@]}"; do
        find "$OUT/$t/crashes" -type f -newer "$OUT/$t/started"
    done
    exit 1
fi
