#!/bin/bash
# Dirty bitmap memory, blockjobd beside qemu-storage-daemon 7.2 in one run.
#
#   bench/bench-bitmap.sh [BUILD_DIR]      (default: build)
#   BENCH_PART=memory bench/bench-bitmap.sh ...   (part 1 only)
#
# Each daemon opens a 1 TiB null-co node; the figure is the RSS growth
# (VmRSS, KiB) after block-dirty-bitmap-add at 64 KiB granularity (16 Mi
# granules: 2 MiB of bits if every page were touched).  The bitmap is
# empty, as on a sparse disk nobody wrote yet; both daemons leave the
# untouched zero pages of the bit array unmapped, so only the summary
# levels and bookkeeping show.
#
# Recorded 2026-11-21 (2-core machine): blockjobd +100 KiB, qsd +24 KiB.
# The difference is code, not bits: the first add faults in the bitmap
# code's pages (file-backed); the anonymous growth and the cost of a
# second bitmap are what a bitmap itself costs (both columns printed).
# Recorded 2026-11-22: blockjobd +76 KiB (anonymous +36, second bitmap
# +36) on a 2.0 MiB daemon; qsd +24 KiB (anonymous +24, second +36) on
# an 8.6 MiB one.
set -euo pipefail

build=${1:-build}
bj=$build/src/daemon/blockjobd
# The QMP client and daemon launcher of the integration tests.
tests=$(cd "$(dirname "$0")/../tests/integration" && pwd)
qsd=$(command -v qemu-storage-daemon || true)
[ -x "$bj" ] || { echo "bench-bitmap.sh: $bj not built" >&2; exit 1; }
[ -n "$qsd" ] || { echo "bench-bitmap.sh: qemu-storage-daemon not installed" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bj-bench-bitmap.XXXXXX")
trap 'rm -rf "$dir"' EXIT

PYTHONPATH=$tests /usr/bin/python3 - "$bj" "$qsd" "$dir" <<'PY'
import os, sys, time

from bjtest import Daemon

def rss(pid, field='VmRSS:'):
    for line in open('/proc/%d/status' % pid):
        if line.startswith(field):
            return int(line.split()[1])

def anon(pid):
    return rss(pid, 'RssAnon:')

def measure(binary, d, tag):
    # One monitor for either daemon: the same footprint as the recorded
    # figures (the tests give qemu-storage-daemon spare ones).
    dm = Daemon(d, ['--blockdev',
                    'driver=null-co,node-name=n,size=1099511627776'],
                binary=binary, monitors=1)
    try:
        dm.start()
        pid = dm.pid
        time.sleep(0.2)
        before, before_anon = rss(pid), anon(pid)
        dm.qmp.execute('block-dirty-bitmap-add', node='n', name='b',
                       granularity=65536)
        time.sleep(0.2)
        after, after_anon = rss(pid), anon(pid)
        # The marginal cost: a second bitmap (code pages already in).
        dm.qmp.execute('block-dirty-bitmap-add', node='n', name='b2',
                       granularity=65536)
        time.sleep(0.2)
        second = rss(pid) - after
        dm.stop()
        return before, after, after_anon - before_anon, second
    finally:
        dm.cleanup()

res = {}
# Absolute: the daemons run in the bench directory.
for tag, b in (('blockjobd', os.path.abspath(sys.argv[1])),
               ('qsd', sys.argv[2])):
    before, after, danon, second = measure(b, sys.argv[3], tag)
    res[tag] = after - before
    print('%-10s RSS before %7d KiB  after add %7d KiB  delta %6d KiB '
          '(anonymous %+d KiB; a second bitmap %+d KiB)'
          % (tag, before, after, after - before, danon, second))
print('ratio blockjobd/qsd (delta): %.2f'
      % (res['blockjobd'] / max(res['qsd'], 1)))
PY

# ---- Part 2: the cost of a persistent bitmap on the write path ----
#
# fio 4 KiB random writes, iodepth 32, BENCH_SECONDS [5] each, through an
# NBD export of a 1 GiB qcow2 image (fully written first, so no cluster
# allocation is measured), without a bitmap and with a persistent one
# (qemu-img bitmap --add, 64 KiB granularity, empty at start), on
# blockjobd and on qemu-storage-daemon 7.2.  blockjobd makes each newly
# dirtied granule durable in the image before the write (one in-place
# bitmap write and flush per batch of writers); qsd keeps the bitmap in
# memory only (a crash loses it).  The first seconds dirty most of the
# 16 Ki granules, so "fresh" shows the worst case; "steady" reruns on the
# same open image after a sequential pass dirtied every granule.
#
# Recorded 2026-11-22 (2-core machine shared with other builds, load 4-7,
# so noisy), ratio bitmap/no-bitmap over four runs: blockjobd fresh
# 0.37-1.06, steady 0.89-1.14; qsd 0.60-1.10.
[ "${BENCH_PART:-all}" = memory ] && exit 0   # part 1 only
secs=${BENCH_SECONDS:-5}
sock=$dir/nbd.sock
img=$dir/w.qcow2
pid=
stop_server() {
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}
trap 'stop_server; rm -rf "$dir"' EXIT
run_fio() {
    fio --name=b --ioengine=nbd --uri="nbd+unix:///disk?socket=$sock" \
        --rw=randwrite --bs=4k --iodepth=32 --size=1G --time_based \
        --runtime="$secs" --output-format=json 2>/dev/null |
    /usr/bin/python3 -c '
import json, sys
t = sys.stdin.read()
print("%.0f" % json.loads(t[t.index("{"):])["jobs"][0]["write"]["iops"])'
}
declare -A iops
for server in blockjobd qsd; do
    bin=$bj
    [ $server = qsd ] && bin=$qsd
    for mode in none bitmap; do
        rm -f "$img" "$sock"
        qemu-img create -q -f qcow2 "$img" 1G
        qemu-io -f qcow2 -c "write -P 0x5a 0 1G" "$img" >/dev/null
        [ $mode = bitmap ] && qemu-img bitmap --add "$img" b0
        "$bin" --blockdev "driver=file,node-name=f,filename=$img" \
               --blockdev "driver=qcow2,node-name=disk,file=f" \
               --nbd-server "addr.type=unix,addr.path=$sock" \
               --export "type=nbd,id=e0,node-name=disk,name=disk,writable=on" \
               >"$dir/$server.log" 2>&1 &
        pid=$!
        for _ in $(seq 200); do
            nbdinfo --size "nbd+unix:///disk?socket=$sock" >/dev/null 2>&1 && break
            sleep 0.05
        done
        iops[$server,$mode,fresh]=$(run_fio)
        # Every granule dirty (and durable): the steady state.
        fio --name=fill --ioengine=nbd --uri="nbd+unix:///disk?socket=$sock" \
            --rw=write --bs=1M --iodepth=8 --size=1G >/dev/null 2>&1
        iops[$server,$mode,steady]=$(run_fio)
        stop_server
    done
done
printf '\n%-10s %-6s %12s %12s %8s\n' server run no-bitmap bitmap ratio
for server in blockjobd qsd; do
    for run in fresh steady; do
        a=${iops[$server,none,$run]}; b=${iops[$server,bitmap,$run]}
        printf '%-10s %-6s %12s %12s %8s\n' $server $run "$a" "$b" \
            "$(/usr/bin/python3 -c "print('%.2f' % ($b / max($a, 1)))")"
    done
done
