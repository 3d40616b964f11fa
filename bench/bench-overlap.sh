#!/bin/bash
# What the qcow2 metadata-overlap checks cost on the write path: blockjobd
# serving the same image over NBD with overlap-check=none, cached (the
# default) and all, fio 4k random writes, several rounds interleaved so
# that a noisy neighbour hits every setting alike; medians of IOPS and of
# the daemon's CPU time per write (user + system, from /proc: steadier
# than IOPS on a shared machine).
#
#   bench/bench-overlap.sh [BUILD_DIR]        (default: build)
#
# Images: 1 GiB fully allocated, 64 KiB clusters (in-place writes, 2 L2
# tables) and 4 KiB clusters (in-place writes, 512 L2 tables and 65
# refcount blocks in the map); and an empty 1 GiB image, 64 KiB clusters
# (every write allocates: the check covers the new cluster and its COW).
#
# Environment: BENCH_SECONDS per run [4], BENCH_ROUNDS [5],
# BENCH_DIR parent dir [/var/tmp], BENCH_IODEPTH [16].
set -euo pipefail

build=${1:-build}
bj=$build/src/daemon/blockjobd
secs=${BENCH_SECONDS:-4}
rounds=${BENCH_ROUNDS:-5}
depth=${BENCH_IODEPTH:-16}
py=/usr/bin/python3

for t in fio qemu-img; do
    command -v $t >/dev/null || { echo "bench-overlap.sh: $t not installed" >&2; exit 1; }
done
[ -x "$bj" ] || { echo "bench-overlap.sh: $bj not built" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bj-bench-overlap.XXXXXX")
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
sock=$dir/nbd.sock

fio --name=fill --filename="$dir/data.raw" --size=1G --rw=write --bs=1M \
    --ioengine=psync --refill_buffers --output=/dev/null
qemu-img convert -f raw -O qcow2 -o cluster_size=64k "$dir/data.raw" "$dir/c64k.qcow2"
qemu-img convert -f raw -O qcow2 -o cluster_size=4k "$dir/data.raw" "$dir/c4k.qcow2"
rm -f "$dir/data.raw"

start() {   # IMAGE CHECK
    rm -f "$sock"
    "$bj" --blockdev "driver=qcow2,node-name=q,file.driver=file,file.filename=$1,overlap-check=$2" \
        --nbd-server addr.type=unix,addr.path="$sock" \
        --export type=nbd,id=e,node-name=q,name=e,writable=on \
        >"$dir/bj.log" 2>&1 &
    pid=$!
    for _ in $(seq 200); do
        [ -S "$sock" ] && return 0
        sleep 0.05
    done
    cat "$dir/bj.log" >&2
    return 1
}

stop() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

cpu_ticks() {   # user + system clock ticks of the daemon so far
    awk '{ print $14 + $15 }' "/proc/$pid/stat"
}

run() {     # BS -> "IOPS CPU-us-per-write" of a random-write run
    local t0 t1
    t0=$(cpu_ticks)
    fio --name=bench --ioengine=nbd --uri="nbd+unix:///e?socket=$sock" \
        --rw=randwrite --bs="$1" --iodepth="$depth" --numjobs=1 --size=1G \
        --time_based --runtime="$secs" --randrepeat=0 \
        --output-format=json --output="$dir/fio.json" >/dev/null 2>&1 || {
        echo "0 0"; return; }
    t1=$(cpu_ticks)
    "$py" - "$dir/fio.json" "$((t1 - t0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
w = json.load(open(sys.argv[1]))["jobs"][0]["write"]
ticks, hz = int(sys.argv[2]), int(sys.argv[3])
print("%.0f %.2f" % (w["iops"], ticks / hz * 1e6 / max(w["total_ios"], 1)))
PY
}

declare -A res cpu
checks=(none cached all)
for r in $(seq "$rounds"); do
    for c in "${checks[@]}"; do
        for img in c64k c4k; do
            start "$dir/$img.qcow2" "$c"
            read -r i u <<<"$(run 4k)"
            res["$img $c"]+="$i "
            cpu["$img $c"]+="$u "
            stop
        done
        qemu-img create -q -f qcow2 "$dir/empty.qcow2" 1G
        start "$dir/empty.qcow2" "$c"
        read -r i u <<<"$(run 4k)"
        res["alloc $c"]+="$i "
        cpu["alloc $c"]+="$u "
        stop
        rm -f "$dir/empty.qcow2"
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

printf '\n%-26s %-7s %9s %7s %11s %7s   %s\n' image overlap "med IOPS" "vs none" \
    "CPU us/wr" "vs none" "IOPS per round"
for img in c64k c4k alloc; do
    case $img in
    c64k) name="allocated, 64k clusters";;
    c4k) name="allocated, 4k clusters";;
    alloc) name="empty (allocating), 64k";;
    esac
    base=$(echo "${res["$img none"]}" | median)
    cbase=$(echo "${cpu["$img none"]}" | median)
    for c in "${checks[@]}"; do
        m=$(echo "${res["$img $c"]}" | median)
        u=$(echo "${cpu["$img $c"]}" | median)
        printf '%-26s %-7s %9s %7s %11s %7s   %s\n' "$name" "$c" "$m" \
            "$(awk -v a="$m" -v b="$base" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }')" \
            "$u" "$(awk -v a="$u" -v b="$cbase" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }')" \
            "${res["$img $c"]}"
    done
done
