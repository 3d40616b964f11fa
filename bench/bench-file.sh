#!/bin/bash
# Throughput of a blockjobd `file` node with each I/O backend, side by side
# with fio (io_uring engine) on the same 1 GiB file, O_DIRECT throughout.
#
#   bench/bench-file.sh [BUILD_DIR]        (default: build)
#
# Environment: BENCH_SECONDS per run [3], BENCH_REPEAT [2], BENCH_DIR
# parent dir [/var/tmp], BENCH_IODEPTH [32].  Each engine runs REPEAT times,
# interleaved with the others, and the best run counts: on a shared machine
# the best is the least disturbed.  24 runs of 3 s: about 90 s in all.
set -euo pipefail

build=${1:-build}
bin=$build/bench/bench-file
secs=${BENCH_SECONDS:-3}
repeat=${BENCH_REPEAT:-2}
depth=${BENCH_IODEPTH:-32}
py=/usr/bin/python3

[ -x "$bin" ] || { echo "bench-file.sh: $bin not built (ninja -C $build)" >&2; exit 1; }
command -v fio >/dev/null || { echo "bench-file.sh: fio not installed" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bj-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
img=$dir/bench.img

# Fully written, not sparse: reads must reach the disk, not a hole.
fio --name=fill --filename="$img" --size=1G --rw=write --bs=1M \
    --ioengine=io_uring --direct=1 --iodepth=8 --output=/dev/null

# fio_run RW BS -> "MB/s IOPS"
fio_run() {
    fio --name=bench --filename="$img" --size=1G --rw="$1" --bs="$2" \
        --ioengine=io_uring --direct=1 --iodepth="$depth" --numjobs=1 \
        --time_based --runtime="$secs" --randrepeat=0 \
        --output-format=json --output="$dir/fio.json"
    "$py" - "$dir/fio.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
side = job["read"] if job["read"]["io_bytes"] else job["write"]
print("%.1f %.0f" % (side["bw_bytes"] / 1e6, side["iops"]))
PY
}

# ours_run BACKEND PATTERN BS -> "MB/s IOPS"
ours_run() {
    "$bin" "$img" "$1" "$2" "$3" "$depth" "$secs" | awk '{print $8, $9}'
}

# best "MB/s IOPS" of two
best() {
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
        if (x[1] + 0 >= y[1] + 0) print a; else print b }'
}

rows=()
for spec in "randread 4096 randread" "randwrite 4096 randwrite" \
            "read 1048576 read" "write 1048576 write"; do
    set -- $spec
    pattern=$1 bs=$2 fiorw=$3
    f="0 0" t="0 0" u="0 0"
    for ((i = 0; i < repeat; i++)); do
        f=$(best "$f" "$(fio_run "$fiorw" "$bs")")
        t=$(best "$t" "$(ours_run threads "$pattern" "$bs")")
        u=$(best "$u" "$(ours_run io_uring "$pattern" "$bs")")
    done
    fmb=${f%% *}
    rows+=("$pattern $bs fio $f 1.00")
    for be in threads io_uring; do
        [ "$be" = threads ] && r=$t || r=$u
        ratio=$(awk -v a="${r%% *}" -v b="$fmb" \
                'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
        rows+=("$pattern $bs $be $r $ratio")
    done
done

printf '\n%-10s %8s %-9s %10s %10s %9s\n' pattern bs engine MB/s IOPS ours/fio
printf '%s\n' "---------------------------------------------------------------"
for r in "${rows[@]}"; do
    set -- $r
    printf '%-10s %8s %-9s %10s %10s %9s\n' "$1" "$2" "$3" "$4" "$5" "$6"
done
echo "(iodepth $depth, best of $repeat runs of ${secs}s, O_DIRECT, 1 GiB file on $(df --output=fstype "$dir" | tail -1))"
