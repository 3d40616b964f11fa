#!/bin/bash
# driver=rbd, blockjobd beside qemu-storage-daemon 7.2 on the same Ceph
# cluster (scripts/ceph-cluster.sh, started here and stopped at the end).
#
#   bench/bench-rbd.sh [BUILD_DIR] [ROUNDS] [BEFORE]   (default: build 3)
#
# BEFORE, a blockjobd binary from before a change, runs in the same rounds
# as a third daemon, and its ratios are printed too.
# 1. backup sync=full of a local raw disk (SIZE, half random data, half
#    hole) into a fresh rbd image: wall time from the command to
#    BLOCK_JOB_COMPLETED.
# 2. mirror sync=full out of Ceph (that image) into a fresh local raw
#    file: wall time from the command to BLOCK_JOB_READY, then
#    block-job-complete.
# The two daemons alternate within each round; the medians and the ratio
# blockjobd/qsd are printed (goal <= 0.8).  Environment: BENCH_DIR parent
# dir [/var/tmp], BENCH_SIZE_MIB [512].  The memstore OSD keeps data in
# memory, so the figures are the daemons' and librbd's overhead, not a
# disk's.
set -euo pipefail

build=${1:-build}
rounds=${2:-3}
before=${3:-}
bj=$build/src/daemon/blockjobd
qsd=$(command -v qemu-storage-daemon || true)
py=/usr/bin/python3
here=$(cd "$(dirname "$0")" && pwd)
tests=$here/../tests/integration
size_mib=${BENCH_SIZE_MIB:-512}

[ -x "$bj" ] || { echo "bench-rbd.sh: $bj not built" >&2; exit 1; }
[ -n "$qsd" ] || { echo "bench-rbd.sh: qemu-storage-daemon not installed" >&2; exit 1; }
[ -z "$before" ] || [ -x "$before" ] || { echo "bench-rbd.sh: $before is not a binary" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bj-bench-rbd.XXXXXX")
cleanup() {
    "$here/../scripts/ceph-cluster.sh" stop "$dir/ceph" || true
    rm -rf "$dir"
}
trap cleanup EXIT

conf=$("$here/../scripts/ceph-cluster.sh" start "$dir/ceph")
head -c $((size_mib / 2))M /dev/urandom > "$dir/src.raw"
truncate -s ${size_mib}M "$dir/src.raw"
sync

uptime
PYTHONPATH=$tests "$py" - "$bj" "$qsd" "$dir" "$conf" "$rounds" "$size_mib" "$before" <<'PY'
import os, statistics, subprocess, sys, time
bj, qsd, d, conf, rounds, size_mib, before = sys.argv[1:8]
bj = os.path.abspath(bj)
rounds, size = int(rounds), int(size_mib) << 20
import bjtest


def rbd(*args):
    subprocess.run(['rbd', '-c', conf] + list(args), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one(binary, n):
    img = 'bench%d' % n
    rbd('create', '--size', '%dM' % (size >> 20), 'rbd/' + img)
    out = os.path.join(d, 'out.raw')
    subprocess.run(['truncate', '-s', '0', out], check=True)
    subprocess.run(['truncate', '-s', str(size), out], check=True)
    dm = bjtest.Daemon(d, binary=binary, monitors=1, timeout=120).start()
    q = dm.qmp
    try:
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                  'file': {'driver': 'file',
                           'filename': os.path.join(d, 'src.raw')}})
        q.execute('blockdev-add', {'driver': 'rbd', 'node-name': 'r',
                  'pool': 'rbd', 'image': img, 'conf': conf})
        t0 = time.monotonic()
        q.execute('blockdev-backup', job_id='b', device='src', target='r',
                  sync='full')
        ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=600)
        backup = time.monotonic() - t0
        assert 'error' not in ev['data'], ev
        q.execute('blockdev-del', node_name='src')
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': 'out',
                  'file': {'driver': 'file', 'filename': out}})
        t0 = time.monotonic()
        q.execute('blockdev-mirror', job_id='m', device='r', target='out',
                  sync='full')
        q.wait_event('BLOCK_JOB_READY', timeout=600)
        mirror = time.monotonic() - t0
        q.execute('block-job-complete', device='m')
        q.wait_event('BLOCK_JOB_COMPLETED', timeout=600)
    finally:
        dm.stop()
    rbd('rm', 'rbd/' + img)
    return backup, mirror


daemons = [('blockjobd', bj), ('qsd', qsd)]
if before:
    daemons.insert(1, ('before', os.path.abspath(before)))
res = {name: [] for name, _ in daemons}
n = 0
for r in range(rounds):
    for name, binary in daemons:
        n += 1
        b, m = one(binary, n)
        res[name].append((b, m))
        print('round %d %-9s backup %.2f s  mirror %.2f s' % (r + 1, name,
                                                             b, m))
med = {k: (statistics.median(x[0] for x in v),
           statistics.median(x[1] for x in v)) for k, v in res.items()}
for i, what in enumerate(('backup into ceph', 'mirror out of ceph')):
    print('%-19s blockjobd %.2f s  qsd %.2f s  ratio %.2f (goal <= 0.8)'
          % (what, med['blockjobd'][i], med['qsd'][i],
             med['blockjobd'][i] / med['qsd'][i]))
    if before:
        print('%-19s before    %.2f s  ratio to qsd %.2f, blockjobd/before '
              '%.2f' % ('', med['before'][i], med['before'][i] / med['qsd'][i],
                        med['blockjobd'][i] / med['before'][i]))
PY
uptime
