#!/bin/bash
# The cost of TLS on NBD: sequential read and write throughput with nbdcopy
# over a UNIX socket, plaintext and x509 TLS, against blockjobd and
# qemu-storage-daemon 7.2 exporting the same raw image.  The four
# configurations alternate within each round (so a load change on the
# machine hits all of them alike); the medians over the rounds are printed.
#
#   bench/bench-nbd-tls.sh [BUILD_DIR]          (default: build)
#
# Environment: BENCH_ROUNDS [5], BENCH_SIZE image size [512M],
# BENCH_DIR parent dir [/var/tmp].  Certificates are made for the run with
# certtool (tests/integration/tlscerts.py).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
bj=$build/src/daemon/blockjobd
qsd=$(command -v qemu-storage-daemon || true)
rounds=${BENCH_ROUNDS:-5}
size=${BENCH_SIZE:-512M}
py=/usr/bin/python3

[ -x "$bj" ] || { echo "bench-nbd-tls.sh: $bj not built" >&2; exit 1; }
[ -n "$qsd" ] || { echo "bench-nbd-tls.sh: qemu-storage-daemon missing" >&2; exit 1; }
command -v nbdcopy >/dev/null || { echo "bench-nbd-tls.sh: nbdcopy missing" >&2; exit 1; }
command -v certtool >/dev/null || { echo "bench-nbd-tls.sh: certtool missing (gnutls-bin)" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-nbd-tls.XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT

PYTHONPATH=$here/tests/integration $py -c '
import sys, tlscerts
ca = tlscerts.CA(sys.argv[1], "bench")
tlscerts.make_x509_dir(sys.argv[1], "server", ca)
tlscerts.make_x509_dir(sys.argv[1], "client", ca, server=False)
' "$dir"

qemu-img create -q -f raw "$dir/img.raw" "$size"
qemu-img create -q -f raw "$dir/src.raw" "$size"
qemu-io -f raw -c "write -P 0x5a 0 $size" "$dir/src.raw" >/dev/null
qemu-io -f raw -c "write -P 0xa5 0 $size" "$dir/img.raw" >/dev/null
bytes=$(stat -c %s "$dir/src.raw")
sock=$dir/nbd.sock

start_server() {   # server tls(0|1)
    local bin=$bj tls=()
    [ "$1" = qsd ] && bin=$qsd
    if [ "$2" = 1 ]; then
        tls=(--object "tls-creds-x509,id=tls0,dir=$dir/server,endpoint=server")
    fi
    rm -f "$sock"
    "$bin" "${tls[@]}" \
           --blockdev "driver=file,node-name=disk,filename=$dir/img.raw" \
           --nbd-server "addr.type=unix,addr.path=$sock${tls:+,tls-creds=tls0}" \
           --export "type=nbd,id=e0,node-name=disk,name=disk,writable=on" \
           >"$dir/$1.log" 2>&1 &
    pid=$!
    # The socket appears at bind(), before the server listens: wait until
    # it answers a handshake.
    for _ in $(seq 200); do
        nbdinfo --size "$(uri "$2")" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench-nbd-tls.sh: $1 did not start:" >&2
    cat "$dir/$1.log" >&2
    exit 1
}

uri() {   # tls(0|1)
    if [ "$1" = 1 ]; then
        echo "nbds+unix:///disk?socket=$sock&tls-certificates=$dir/client"
    else
        echo "nbd+unix:///disk?socket=$sock"
    fi
}

stop_server() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

mibs() {   # command... -> MiB/s for $bytes
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    $py -c "print('%.1f' % ($bytes / 1048576 / ($t1 - $t0)))"
}

declare -A res
configs="blockjobd:0 blockjobd:1 qsd:0 qsd:1"
for r in $(seq "$rounds"); do
    for c in $configs; do
        IFS=: read -r s tls <<<"$c"
        start_server "$s" "$tls"
        res[$c,read]+="$(mibs nbdcopy "$(uri "$tls")" null:) "
        res[$c,write]+="$(mibs nbdcopy "$dir/src.raw" "$(uri "$tls")") "
        stop_server
    done
done

median() { $py -c 'import statistics,sys; print("%.1f" % statistics.median(map(float, sys.argv[1:])))' "$@"; }

echo "nbdcopy over a UNIX socket, $size, $rounds rounds, median MiB/s"
printf '%-10s %-6s %10s %10s %9s\n' server op plain tls tls/plain
for s in blockjobd qsd; do
    for op in read write; do
        # shellcheck disable=SC2086
        p=$(median ${res[$s:0,$op]})
        # shellcheck disable=SC2086
        t=$(median ${res[$s:1,$op]})
        printf '%-10s %-6s %10s %10s %9s\n' $s $op "$p" "$t" \
            "$($py -c "print('%.2f' % ($t / max($p, 1e-9)))")"
    done
done
for op in read write; do
    for tls in 0 1; do
        # shellcheck disable=SC2086
        b=$(median ${res[blockjobd:$tls,$op]})
        # shellcheck disable=SC2086
        q=$(median ${res[qsd:$tls,$op]})
        printf 'blockjobd/qsd %-5s %-5s %s\n' $op "$([ $tls = 1 ] && echo tls || echo plain)" \
            "$($py -c "print('%.2f' % ($b / max($q, 1e-9)))")"
    done
done
