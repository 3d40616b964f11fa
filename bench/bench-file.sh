#!/bin/bash
# Throughput of a blockjobd `file` node with each I/O backend, side by side
# with fio (io_uring engine) on the same 1 GiB file, O_DIRECT throughout.
#
#   bench/bench-file.sh [BUILD_DIR]        (default: build)
#
# Environment: BENCH_SECONDS per run [4], BENCH_DIR parent dir [/var/tmp],
# BENCH_IODEPTH [32].  Twelve runs: about a minute in all.
set -euo pipefail

build=${1:-build}
bin=$build/bench/bench-file
secs=${BENCH_SECONDS:-4}
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

rows=()
for spec in "randread 4096 randread" "randwrite 4096 randwrite" \
            "read 1048576 read" "write 1048576 write"; do
    set -- $spec
    pattern=$1 bs=$2 fiorw=$3
    read -r fmb fiops < <(fio_run "$fiorw" "$bs")
    rows+=("$pattern $bs fio $fmb $fiops 1.00")
    for be in threads io_uring; do
        read -r omb oiops < <(ours_run "$be" "$pattern" "$bs")
        ratio=$(awk -v a="$omb" -v b="$fmb" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
        rows+=("$pattern $bs $be $omb $oiops $ratio")
    done
done

printf '\n%-10s %8s %-9s %10s %10s %9s\n' pattern bs engine MB/s IOPS ours/fio
printf '%s\n' "---------------------------------------------------------------"
for r in "${rows[@]}"; do
    set -- $r
    printf '%-10s %8s %-9s %10s %10s %9s\n' "$1" "$2" "$3" "$4" "$5" "$6"
done
echo "(iodepth $depth, ${secs}s per run, O_DIRECT, 1 GiB file on $(df --output=fstype "$dir" | tail -1))"
