#!/bin/bash
# Backups with the source in an iothread, blockjobd beside
# qemu-storage-daemon 7.2 in one run.
#
#   bench/bench-iothread.sh [BUILD_DIR]      (default: build)
#
# 1. backup sync=full of a 512 MiB raw image of random data into a fresh
#    qcow2, the source in the main loop, then in an iothread
#    (x-blockdev-set-iothread; the target follows it): seconds from the
#    command to BLOCK_JOB_COMPLETED.
# 2. Two such disks, each in its own iothread: one backup alone, then both
#    at once; scaling = 2 x (time of one) / (time of both), 2.0 being
#    perfect.  The machine's cores are the limit (nproc is printed).
# Environment: BENCH_DIR parent dir [/var/tmp], BENCH_RUNS rounds [5]: each
# round runs every figure on both daemons (which goes first alternates), and
# the table shows the medians.  The page cache is not dropped; both daemons see the
# same images, recreated targets each run.
set -euo pipefail

build=${1:-build}
bj=$build/src/daemon/blockjobd
qsd=$(command -v qemu-storage-daemon || true)
py=/usr/bin/python3
tests=$(cd "$(dirname "$0")/../tests/integration" && pwd)

[ -x "$bj" ] || { echo "bench-iothread.sh: $bj not built" >&2; exit 1; }
[ -n "$qsd" ] || { echo "bench-iothread.sh: qemu-storage-daemon not installed" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bj-bench-iothread.XXXXXX")
trap 'rm -rf "$dir"' EXIT

head -c 512M /dev/urandom > "$dir/a.raw"
head -c 512M /dev/urandom > "$dir/b.raw"
sync

PYTHONPATH=$tests "$py" - "$bj" "$qsd" "$dir" "${BENCH_RUNS:-5}" <<'PY'
import os, subprocess, sys, time
bj, qsd, d, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
bj = os.path.abspath(bj)

import bjtest

SIZE = 512 << 20


class Daemon(bjtest.Daemon):
    def __init__(self, binary):
        super().__init__(d, ['--object', 'iothread,id=io0',
                             '--object', 'iothread,id=io1'],
                         binary=binary, monitors=1, timeout=60)
        self.start()

    def cmd(self, name, args=None):
        return self.qmp.execute(name, args or {})

    def add(self, src, tgt, iothread):
        self.cmd('blockdev-add', {'driver': 'raw', 'node-name': src,
                                  'file': {'driver': 'file',
                                           'filename': os.path.join(
                                               d, src + '.raw')}})
        if iothread:
            self.cmd('x-blockdev-set-iothread',
                     {'node-name': src, 'iothread': iothread})
        path = os.path.join(d, tgt + '.qcow2')
        if os.path.exists(path):
            os.unlink(path)
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path,
                        str(SIZE)], check=True)
        self.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': tgt,
                                  'file': {'driver': 'file',
                                           'filename': path}})

    def backups(self, pairs):
        t0 = time.monotonic()
        for i, (src, tgt) in enumerate(pairs):
            self.cmd('blockdev-backup', {'job-id': 'j%d' % i, 'device': src,
                                         'target': tgt, 'sync': 'full'})
        for _ in pairs:
            e = self.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=3600)
            if e['data'].get('error'):
                sys.exit('job failed: %s' % e['data']['error'])
        return time.monotonic() - t0

    def quit(self):
        try:
            self.stop()
        finally:
            self.cleanup()


def run(binary, disks):
    """disks: [(source, iothread or None)]; seconds for their backups."""
    dm = Daemon(binary)
    pairs = []
    for src, io in disks:
        dm.add(src, 't' + src, io)
        pairs.append((src, 't' + src))
    t = dm.backups(pairs)
    dm.quit()
    for src, _ in disks:
        subprocess.run(['qemu-img', 'compare', '-q', '-f', 'raw', '-F',
                        'qcow2', os.path.join(d, src + '.raw'),
                        os.path.join(d, 't' + src + '.qcow2')], check=True)
    return t


FIGURES = (('main', [('a', None)]), ('io', [('a', 'io0')]),
           ('one', [('b', 'io1')]), ('two', [('a', 'io0'), ('b', 'io1')]))
DAEMONS = (('qemu-storage-daemon', qsd), ('blockjobd', bj))

# Rounds alternate the daemons (the first one changes every round), every
# figure once per daemon per round; the table shows medians.
samples = {name: {k: [] for k, _ in FIGURES} for name, _ in DAEMONS}
for r in range(runs):
    order = DAEMONS if r % 2 == 0 else DAEMONS[::-1]
    for name, binary in order:
        for key, disks in FIGURES:
            samples[name][key].append(run(binary, disks))


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


res = {name: {k: median(v) for k, v in figs.items()}
       for name, figs in samples.items()}
print('cores: %d; %d rounds alternating the daemons, medians; load average '
      '%.2f; 512 MiB of random data per disk'
      % (os.cpu_count(), runs, os.getloadavg()[0]))
print('%-40s %10s %10s' % ('', 'qsd 7.2', 'blockjobd'))
q, b = res['qemu-storage-daemon'], res['blockjobd']
for key, label in (('main', 'backup, source in main loop: s'),
                   ('io', 'backup, source in iothread: s'),
                   ('one', 'one disk in its iothread: s'),
                   ('two', 'two disks, two iothreads at once: s')):
    print('%-40s %10.2f %10.2f' % (label, q[key], b[key]))
print('%-40s %10.2f %10.2f' % ('scaling 2 x one / two (2.0 = perfect)',
                               2 * q['one'] / q['two'],
                               2 * b['one'] / b['two']))
PY
