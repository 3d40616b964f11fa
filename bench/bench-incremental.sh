#!/bin/bash
# Incremental backup, blockjobd beside qemu-storage-daemon 7.2 in one run.
#
#   bench/bench-incremental.sh [BUILD_DIR]      (default: build)
#
# Each daemon, on the same 4 GiB qcow2 source (64 KiB clusters, every
# cluster written), runs:
#   1. block-dirty-bitmap-add bm0 (persistent=false), then a sync=full
#      backup into a fresh qcow2 (timed apart: the base of the chain);
#   2. BENCH_ROUNDS times: 1 % of the disk changed by an NBD client
#      (libnbd) through a writable export of the source, as 64 KiB writes
#      at distinct random offsets (655 of them, 8 in flight), then
#      blockdev-backup sync=incremental bitmap=bm0 into a fresh qcow2;
#      timed from the command to BLOCK_JOB_COMPLETED.
# Checked each round: the target holds exactly the changed clusters
# (qemu-img map), and the bitmap is empty after the job (on-success); at
# the end the chain full <- inc1 <- inc2 ... rebased with qemu-img equals
# the source (qemu-img compare).
# Printed: the full backup's time, each daemon's median and best
# incremental time, the ratio blockjobd/qsd, the daemon's peak RSS
# (VmHWM) over the whole run and over the incremental rounds alone
# (reset through /proc/PID/clear_refs before the first change).
#
# Environment: BENCH_DIR parent dir [/var/tmp] (needs about 9 GiB free),
# BENCH_ROUNDS [5], BENCH_ONLY=qsd|blockjobd runs one daemon.  The page
# cache is not dropped: both daemons read a source the preparation just
# wrote; qemu-storage-daemon goes first.  The same seeds give both daemons
# the same changed clusters.
#
# Recorded 2026-11-22, 3 runs on the 2-core machine under heavy load from
# other builds (load average 10-12), qsd 7.2 / blockjobd (4ab1d5a+):
#   incremental 1 %, median of 5:  0.209/0.129  0.145/0.113  0.291/0.128 s
#                                  (ratio 0.62, 0.78, 0.44)
#   best of 5:                     0.166/0.075  0.116/0.051  0.114/0.071 s
#   peak RSS over the incrementals: 17.8/14.8  17.0/14.8  18.0/13.8 MiB
#   peak RSS up to the full backup: 75.7/19.7 MiB (every run)
#   full backup 4 GiB (too noisy under that load to rank):
#                                  20.3/15.5  9.8/21.1  13.3/16.8 s
# A 4th run at load 5-9 (7f0fcdb): incremental median 0.288/0.088 s
# (0.30), best 0.209/0.051 s, peak RSS 19.9/14.0 MiB, full 11.4/7.8 s.
# Quiet machine (load ~1, 7af34e8): incremental median 0.055/0.045 s
# (0.83), best 0.051/0.045 s, peak RSS incrementals 18.9/14.6 MiB, up to
# the full backup 75.5/19.7 MiB, full backup 5.24/5.72 s (1.09).
# Every run: each target held exactly the 655 changed clusters, the
# bitmap was empty after each job, the rebased chain equalled the source.
set -euo pipefail

build=${1:-build}
bj=$build/src/daemon/blockjobd
qsd=$(command -v qemu-storage-daemon || true)
py=/usr/bin/python3
# The QMP client and daemon launcher of the integration tests.
tests=$(cd "$(dirname "$0")/../tests/integration" && pwd)

[ -x "$bj" ] || { echo "bench-incremental.sh: $bj not built" >&2; exit 1; }
[ -n "$qsd" ] || { echo "bench-incremental.sh: qemu-storage-daemon not installed" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bj-bench-inc.XXXXXX")
trap 'rm -rf "$dir"' EXIT

# 4 GiB of data in 64 MiB writes, a different byte each, so that no
# cluster reads as zeroes.
qemu-img create -q -f qcow2 "$dir/src.qcow2" 4G
cmds=()
for i in $(seq 0 63); do
    cmds+=(-c "write -q -P $((i + 1)) $((i * 64))M 64M")
done
qemu-io -f qcow2 "${cmds[@]}" "$dir/src.qcow2" >/dev/null
sync

PYTHONPATH=$tests "$py" - "$bj" "$qsd" "$dir" "${BENCH_ROUNDS:-5}" "${BENCH_ONLY:-}" <<'PY'
import json, os, random, statistics, subprocess, sys, time
import nbd

import bjtest

bj, qsd, d, rounds, only = sys.argv[1:6]
# Absolute: the daemons run in the bench directory.
bj = os.path.abspath(bj)
rounds = int(rounds)
SIZE = 4 << 30
CLUSTER = 64 << 10
CHANGED = SIZE // 100 // CLUSTER          # 655 clusters, 1 % of the disk
SRC = os.path.join(d, 'src.qcow2')
MiB = 1 << 20


class Failed(Exception):
    pass


class Daemon(bjtest.Daemon):
    def __init__(self, binary):
        # One monitor for either daemon, as before the harness was shared.
        super().__init__(d, binary=binary, monitors=1, timeout=60)
        self.start()

    def cmd(self, name, args=None):
        try:
            return self.qmp.execute(name, args or {})
        except bjtest.QMPError as e:
            raise Failed('%s: %s' % (name, e.desc))

    def wait_completed(self, job):
        e = self.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=3600,
                                match={'data': {'device': job}})
        if e['data'].get('error'):
            raise Failed('job %s failed: %s' % (job, e['data']['error']))

    def hwm_mib(self):
        with open('/proc/%d/status' % self.pid) as st:
            for line in st:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def reset_hwm(self):
        with open('/proc/%d/clear_refs' % self.pid, 'w') as f:
            f.write('5')

    def quit(self):
        try:
            self.stop()
        finally:
            self.cleanup()

    def add_target(self, name):
        path = os.path.join(d, name + '.qcow2')
        if os.path.exists(path):
            os.unlink(path)
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path,
                        str(SIZE)], check=True)
        self.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': name,
                                  'file': {'driver': 'file',
                                           'filename': path}})
        return path

    def backup(self, job, target, **extra):
        args = {'job-id': job, 'device': 'src', 'target': target}
        args.update(extra)
        t0 = time.monotonic()
        self.cmd('blockdev-backup', args)
        self.wait_completed(job)
        return time.monotonic() - t0

    def bitmap_count(self):
        for n in self.cmd('query-named-block-nodes'):
            if n['node-name'] == 'src':
                for b in n.get('dirty-bitmaps', []):
                    if b['name'] == 'bm0':
                        return b['count']
        raise Failed('bitmap bm0 not found')


def change(sock, seed):
    """1 % of the disk: CHANGED distinct 64 KiB clusters, 8 writes in
    flight; returns the set of cluster indexes written."""
    rnd = random.Random(seed)
    clusters = rnd.sample(range(SIZE // CLUSTER), CHANGED)
    h = nbd.NBD()
    h.set_export_name('src')
    h.connect_unix(sock)
    buf = nbd.Buffer.from_bytearray(bytearray([0x80 + seed % 64]) * CLUSTER)
    todo = list(clusters)
    inflight = []
    while todo or inflight:
        while todo and len(inflight) < 8:
            inflight.append(h.aio_pwrite(buf, todo.pop() * CLUSTER))
        h.poll(-1)
        inflight = [c for c in inflight if not h.aio_command_completed(c)]
    h.flush()
    h.shutdown()
    return set(clusters)


def allocated(path):
    """Clusters holding data in path itself (not its backing)."""
    out = subprocess.run(['qemu-img', 'map', '--output=json', '-f', 'qcow2',
                          path], check=True, capture_output=True,
                         text=True).stdout
    got = set()
    for e in json.loads(out):
        if e['data'] and e['depth'] == 0:
            first = e['start'] // CLUSTER
            got.update(range(first, first + e['length'] // CLUSTER))
    return got


def run(name, binary):
    for f in os.listdir(d):
        if f != 'src.qcow2':
            os.unlink(os.path.join(d, f))
    dm = Daemon(binary)
    res = {'inc': []}
    chain = []
    try:
        dm.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'src',
                                'file': {'driver': 'file',
                                         'filename': SRC}})
        dm.cmd('block-dirty-bitmap-add', {'node': 'src', 'name': 'bm0',
                                          'persistent': False})
        chain.append(dm.add_target('full'))
        res['full'] = dm.backup('jf', 'full', sync='full')
        nbd_sock = os.path.join(d, 'nbd.sock')
        dm.cmd('nbd-server-start', {'addr': {'type': 'unix',
                                             'data': {'path': nbd_sock}}})
        dm.cmd('block-export-add', {'type': 'nbd', 'id': 'e',
                                    'node-name': 'src', 'writable': True})
        res['hwm_full'] = dm.hwm_mib()
        dm.reset_hwm()
        for r in range(rounds):
            written = change(nbd_sock, r + 1)
            tgt = 'inc%d' % (r + 1)
            chain.append(dm.add_target(tgt))
            res['inc'].append(dm.backup('j%d' % r, tgt, sync='incremental',
                                        bitmap='bm0'))
            left = dm.bitmap_count()
            if left != 0:
                raise Failed('bitmap still counts %d bytes after the '
                             'backup' % left)
            dm.cmd('blockdev-del', {'node-name': tgt})
            got = allocated(chain[-1])
            if got != written:
                raise Failed('round %d: target holds %d clusters, %d '
                             'changed, %d in common' % (r + 1, len(got),
                             len(written), len(got & written)))
        res['hwm_inc'] = dm.hwm_mib()
        dm.cmd('block-export-del', {'id': 'e'})
    finally:
        dm.quit()
    for below, above in zip(chain, chain[1:]):
        subprocess.run(['qemu-img', 'rebase', '-q', '-u', '-f', 'qcow2',
                        '-F', 'qcow2', '-b', below, above], check=True)
    subprocess.run(['qemu-img', 'compare', '-q', '-f', 'qcow2', '-F',
                    'qcow2', SRC, chain[-1]], check=True)
    return res


daemons = [('qsd 7.2', qsd), ('blockjobd', bj)]
if only:
    daemons = [x for x in daemons if x[0].startswith(only)]
res = {}
for name, binary in daemons:
    try:
        res[name] = run(name, binary)
    except Failed as e:
        print('%s: %s' % (name, e))
print('4 GiB qcow2 source, %d incrementals of %d x 64 KiB (%.1f MiB, 1 %%) '
      'each' % (rounds, CHANGED, CHANGED * CLUSTER / MiB))
print('%-40s %10s %10s %8s' % ('', 'qsd 7.2', 'blockjobd', 'bj/qsd'))


def row(label, fn, fmt='%10.3f'):
    vals = [fn(res[n]) if n in res else None for n in ('qsd 7.2',
                                                        'blockjobd')]
    cells = [(fmt % v) if v is not None else '%10s' % '-' for v in vals]
    ratio = ('%8.2f' % (vals[1] / vals[0])) if None not in vals and \
        vals[0] > 0 else '%8s' % '-'
    print('%-40s %s %s %s' % (label, cells[0], cells[1], ratio))


row('full backup 4 GiB: seconds', lambda r: r['full'], '%10.2f')
row('incremental 1 %: median seconds',
    lambda r: statistics.median(r['inc']))
row('incremental 1 %: best seconds', lambda r: min(r['inc']))
row('peak RSS up to the full backup: MiB', lambda r: r['hwm_full'],
    '%10.1f')
row('peak RSS, incrementals only: MiB', lambda r: r['hwm_inc'], '%10.1f')
for n in res:
    print('%s rounds: %s' % (n, ' '.join('%.3f' % t for t in res[n]['inc'])))
if len(res) != len(daemons):
    sys.exit(1)
PY
