#!/bin/bash
# qcow2 vs raw throughput over NBD, blockjobd side by side with
# qemu-storage-daemon and qemu-nbd serving the same images, in one run.
#
#   bench/bench-qcow2.sh [BUILD_DIR]        (default: build)
#
# The same 1 GiB of data as a raw file and as a fully allocated qcow2
# image (qemu-img convert); fio's nbd engine drives each server over a
# UNIX socket: 4k random and 1M sequential, reads and (in-place) writes,
# plus 64k random writes into an empty qcow2 (cluster allocation).
# Ratios are blockjobd / qemu-storage-daemon for the same image and load.
#
# Environment: BENCH_SECONDS per run [4], BENCH_DIR parent dir [/var/tmp],
# BENCH_IODEPTH [16].
set -euo pipefail

build=${1:-build}
bj=$build/src/daemon/blockjobd
secs=${BENCH_SECONDS:-4}
depth=${BENCH_IODEPTH:-16}
py=/usr/bin/python3

for t in fio qemu-img qemu-nbd qemu-storage-daemon; do
    command -v $t >/dev/null || { echo "bench-qcow2.sh: $t not installed" >&2; exit 1; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "bench-qcow2.sh: fio lacks the nbd engine" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bj-bench-qcow2.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

raw=$dir/data.raw
qcow=$dir/data.qcow2
fio --name=fill --filename="$raw" --size=1G --rw=write --bs=1M \
    --ioengine=psync --refill_buffers --output=/dev/null
qemu-img convert -f raw -O qcow2 "$raw" "$qcow"

sock=$dir/nbd.sock

# start_server KIND FMT IMAGE -> starts it, waits for the socket
start_server() {
    local kind=$1 fmt=$2 img=$3
    rm -f "$sock"
    local bd="driver=$fmt,node-name=q,file.driver=file,file.filename=$img"
    case $kind in
    blockjobd|qsd)
        local b=$bj
        [ "$kind" = qsd ] && b=$(command -v qemu-storage-daemon)
        "$b" --blockdev "$bd" \
            --nbd-server addr.type=unix,addr.path="$sock" \
            --export type=nbd,id=e,node-name=q,name=e,writable=on \
            >"$dir/$kind.log" 2>&1 &
        ;;
    qemu-nbd)
        qemu-nbd -f "$fmt" -k "$sock" -x e -t --cache=writeback --aio=io_uring \
            "$img" >"$dir/$kind.log" 2>&1 &
        ;;
    esac
    pids+=($!)
    for _ in $(seq 200); do
        [ -S "$sock" ] && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

stop_server() {
    local p=${pids[-1]}
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset 'pids[-1]'
}

# fio_run RW BS -> "MB/s IOPS"
fio_run() {
    fio --name=bench --ioengine=nbd --uri="nbd+unix:///e?socket=$sock" \
        --rw="$1" --bs="$2" --iodepth="$depth" --numjobs=1 --size=1G \
        --time_based --runtime="$secs" --randrepeat=0 \
        --output-format=json --output="$dir/fio.json" >/dev/null 2>&1 || {
        echo "0 0"; return; }
    "$py" - "$dir/fio.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
side = job["read"] if job["read"]["io_bytes"] else job["write"]
print("%.1f %.0f" % (side["bw_bytes"] / 1e6, side["iops"]))
PY
}

declare -A mbs
rows=()
loads=("randread 4k" "randwrite 4k" "read 1M" "write 1M")
servers=(qsd qemu-nbd blockjobd)
[ -x "$bj" ] || echo "note: $bj not built; blockjobd rows will read n/a"

for fmt in raw qcow2; do
    img=$raw
    [ "$fmt" = qcow2 ] && img=$qcow
    for s in "${servers[@]}"; do
        if ! start_server "$s" "$fmt" "$img"; then
            for l in "${loads[@]}"; do mbs["$fmt $l $s"]="n/a n/a"; done
            stop_server
            continue
        fi
        for l in "${loads[@]}"; do
            set -- $l
            mbs["$fmt $l $s"]=$(fio_run "$1" "$2")
        done
        stop_server
    done
done

# cluster allocation: random 64k writes into an empty image, fresh each time
for s in "${servers[@]}"; do
    qemu-img create -q -f qcow2 "$dir/empty.qcow2" 1G
    if start_server "$s" qcow2 "$dir/empty.qcow2"; then
        mbs["qcow2-alloc randwrite 64k $s"]=$(fio_run randwrite 64k)
    else
        mbs["qcow2-alloc randwrite 64k $s"]="n/a n/a"
    fi
    stop_server
    rm -f "$dir/empty.qcow2"
done

printf '\n%-12s %-10s %5s %-10s %9s %9s %12s\n' image pattern bs server MB/s IOPS "bj/qsd"
printf '%s\n' "------------------------------------------------------------------------"
for key in "raw" "qcow2" "qcow2-alloc"; do
    ls=("${loads[@]}")
    [ "$key" = qcow2-alloc ] && ls=("randwrite 64k")
    for l in "${ls[@]}"; do
        read -r qmb _ <<<"${mbs["$key $l qsd"]}"
        for s in "${servers[@]}"; do
            read -r mb iops <<<"${mbs["$key $l $s"]}"
            ratio=$(awk -v a="$mb" -v b="$qmb" 'BEGIN { if (a == "n/a" || b + 0 == 0) print "-"; else printf "%.2f", a / b }')
            set -- $l
            printf '%-12s %-10s %5s %-10s %9s %9s %12s\n' "$key" "$1" "$2" "$s" "$mb" "$iops" "$ratio"
        done
    done
done
# qcow2 against raw, per server (the format's own cost)
printf '\nqcow2/raw (MB/s) per server:\n'
for l in "${loads[@]}"; do
    for s in "${servers[@]}"; do
        read -r a _ <<<"${mbs["qcow2 $l $s"]}"
        read -r b _ <<<"${mbs["raw $l $s"]}"
        r=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a == "n/a" || b + 0 == 0) print "-"; else printf "%.2f", a / b }')
        printf '  %-14s %-10s %s\n' "$l" "$s" "$r"
    done
done
echo "(iodepth $depth, ${secs}s per run, cache=writeback, 1 GiB on $(df --output=fstype "$dir" | tail -1))"
