#!/bin/bash
# NBD export throughput: fio --ioengine=nbd against blockjobd, qemu-nbd and
# qemu-storage-daemon 7.2 exporting the same raw and qcow2 images, in one
# run, with the ratios blockjobd/qemu-nbd and blockjobd/qsd.
#
#   bench/bench-nbd.sh [BUILD_DIR]          (default: build)
#
# Workloads: 4 KiB random read and random write at iodepth 32, 1 MiB
# sequential read at iodepth 8.  Images: 1 GiB, fully written first (so
# reads hit data, not holes), cache=writeback everywhere (the servers' page
# cache is warm for all three alike).
# Environment: BENCH_SECONDS per run [5], BENCH_DIR parent dir [/var/tmp],
# BENCH_SIZE image size [1G].
set -euo pipefail

build=${1:-build}
bj=$build/src/daemon/blockjobd
qsd=$(command -v qemu-storage-daemon || true)
qnbd=$(command -v qemu-nbd || true)
secs=${BENCH_SECONDS:-5}
size=${BENCH_SIZE:-1G}
py=/usr/bin/python3

[ -x "$bj" ] || { echo "bench-nbd.sh: $bj not built" >&2; exit 1; }
[ -n "$qsd" ] || { echo "bench-nbd.sh: qemu-storage-daemon missing" >&2; exit 1; }
[ -n "$qnbd" ] || { echo "bench-nbd.sh: qemu-nbd missing" >&2; exit 1; }
command -v fio >/dev/null || { echo "bench-nbd.sh: fio missing" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-nbd.XXXXXX")
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

for fmt in raw qcow2; do
    qemu-img create -q -f $fmt "$dir/img.$fmt" "$size"
    qemu-io -f $fmt -c "write -P 0x5a 0 $size" "$dir/img.$fmt" >/dev/null
done

sock=$dir/nbd.sock

start_server() {   # server fmt
    rm -f "$sock"
    case $1 in
    blockjobd|qsd)
        local bin=$bj
        [ "$1" = qsd ] && bin=$qsd
        "$bin" --blockdev "driver=file,node-name=f,filename=$dir/img.$2" \
               --blockdev "driver=$2,node-name=disk,file=f" \
               --nbd-server "addr.type=unix,addr.path=$sock" \
               --export "type=nbd,id=e0,node-name=disk,name=disk,writable=on" \
               >"$dir/$1.log" 2>&1 &
        ;;
    qemu-nbd)
        "$qnbd" -f "$2" -x disk -k "$sock" --cache=writeback --persistent \
                --aio=threads -e 16 "$dir/img.$2" >"$dir/$1.log" 2>&1 &
        ;;
    esac
    pid=$!
    # The socket file appears at bind(), before the server listens: wait
    # until it answers an NBD handshake.
    for _ in $(seq 200); do
        nbdinfo --size "nbd+unix:///disk?socket=$sock" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench-nbd.sh: $1 did not start:" >&2
    cat "$dir/$1.log" >&2
    exit 1
}

stop_server() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

run_fio() {   # rw bs iodepth -> "iops MiB/s"
    fio --name=b --ioengine=nbd --uri="nbd+unix:///disk?socket=$sock" \
        --rw=$1 --bs=$2 --iodepth=$3 --size="$size" --time_based \
        --runtime="$secs" --output-format=json 2>/dev/null |
    $py -c '
import json, sys
t = sys.stdin.read()
j = json.loads(t[t.index("{"):])["jobs"][0]
d = j["read"] if j["read"]["io_bytes"] else j["write"]
print("%.0f %.1f" % (d["iops"], d["bw_bytes"] / 1048576))'
}

declare -A res
workloads="randread:4k:32 randwrite:4k:32 read:1M:8"
servers="blockjobd qemu-nbd qsd"
for fmt in raw qcow2; do
    for s in $servers; do
        start_server $s $fmt
        for w in $workloads; do
            IFS=: read -r rw bs qd <<<"$w"
            res[$fmt,$s,$w]=$(run_fio $rw $bs $qd)
        done
        stop_server
    done
done

printf '%-6s %-20s %14s %14s %14s %9s %9s\n' fmt workload blockjobd \
       qemu-nbd qsd bj/qnbd bj/qsd
for fmt in raw qcow2; do
    for w in $workloads; do
        read -r bi bb <<<"${res[$fmt,blockjobd,$w]}"
        read -r ni nb <<<"${res[$fmt,qemu-nbd,$w]}"
        read -r qi qb <<<"${res[$fmt,qsd,$w]}"
        if [[ $w == read:* ]]; then
            unit=MiB/s; b=$bb; n=$nb; q=$qb
        else
            unit=IOPS; b=$bi; n=$ni; q=$qi
        fi
        printf '%-6s %-20s %14s %14s %14s %9s %9s\n' $fmt "$w ($unit)" \
            "$b" "$n" "$q" \
            "$($py -c "print('%.2f' % ($b / max($n, 1e-9)))")" \
            "$($py -c "print('%.2f' % ($b / max($q, 1e-9)))")"
    done
done
