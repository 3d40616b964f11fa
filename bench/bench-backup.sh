#!/bin/bash
# blockdev-backup under client writes, blockjobd beside qemu-storage-daemon
# 7.2 in one run.  (The backup's own time, the 50 backups' peak RSS and the
# ratios with their goals are bench/compare.sh's: `compare.sh --jobs
# backup,mem50`.)
#
#   bench/bench-backup.sh [BUILD_DIR]      (default: build)
#
# An NBD client writing 64 KiB blocks at random offsets (4 in flight): its
# throughput alone, then while a backup sync=full of the exported 1 GiB raw
# image (512 MiB random data, 512 MiB hole) into a new qcow2 runs (goal:
# keep >= 85 % of the solo figure; every write to a cluster not yet copied
# first copies its old data to the target), and the backup's time then.
# Environment: BENCH_DIR parent dir [/var/tmp], BENCH_WRITE_SECS solo
# writer run [5].  Images and daemons are compare.py's.
set -euo pipefail

build=${1:-build}
bj=$build/src/daemon/blockjobd
qsd=$(command -v qemu-storage-daemon || true)
[ -x "$bj" ] || { echo "bench-backup.sh: $bj not built" >&2; exit 1; }
[ -n "$qsd" ] || { echo "bench-backup.sh: qemu-storage-daemon not installed" >&2; exit 1; }

PYTHONPATH=$(cd "$(dirname "$0")" && pwd) exec /usr/bin/python3 - \
    "$(readlink -f "$bj")" "$qsd" "${BENCH_WRITE_SECS:-5}" <<'PY'
import os, random, shutil, subprocess, sys, tempfile, threading, time
import nbd

import compare

bj, qsd, write_secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
MiB = compare.MiB


def writer(sock, stop, result, size=1 << 30):
    """64 KiB writes at random 64 KiB-aligned offsets, 4 in flight,
    until stop is set; result gets (bytes, seconds)."""
    h = nbd.NBD()
    h.set_export_name('x')
    h.connect_unix(sock)
    buf = nbd.Buffer.from_bytearray(bytearray(b'\xa5' * 65536))
    rnd = random.Random(1)
    n = 0
    t0 = time.monotonic()
    inflight = []
    while not stop.is_set() or inflight:
        while not stop.is_set() and len(inflight) < 4:
            off = rnd.randrange(size // 65536) * 65536
            inflight.append(h.aio_pwrite(buf, off))
        h.poll(-1)
        still = []
        for c in inflight:
            if h.aio_command_completed(c):
                n += 1
            else:
                still.append(c)
        inflight = still
    dt = time.monotonic() - t0
    h.shutdown()
    result.append((n * 65536, dt))


def run(b, binary, with_backup):
    # The writer changes the source: a fresh copy for every run.
    work = b.path('work.raw')
    subprocess.run(['cp', '--sparse=always', b.src, work], check=True)
    tgt = b.new_qcow2('tgt.qcow2', b.sz.src)
    sock = os.path.join(tempfile.mkdtemp(prefix='bjbb'), 'n.sock')
    dm = b.daemon(binary)
    try:
        q = dm.qmp
        b.add_raw(q, 'src', work)
        b.add_qcow2(q, 'tgt', tgt)
        q.execute('nbd-server-start', addr={'type': 'unix',
                                            'data': {'path': sock}})
        q.execute('block-export-add', type='nbd', id='e', node_name='src',
                  name='x', writable=True)
        stop, res = threading.Event(), []
        t = threading.Thread(target=writer, args=(sock, stop, res))
        t.start()
        tb = None
        if with_backup:
            time.sleep(0.5)
            t0 = time.monotonic()
            q.execute('blockdev-backup', job_id='j', device='src',
                      target='tgt', sync='full')
            b.wait_done(q)
            tb = time.monotonic() - t0
        else:
            time.sleep(write_secs)
        stop.set()
        t.join()
        return res[0][0] / res[0][1] / MiB, tb
    finally:
        dm.cleanup()
        shutil.rmtree(os.path.dirname(sock), ignore_errors=True)


d = tempfile.mkdtemp(prefix='bj-bench-backup.',
                     dir=os.environ.get('BENCH_DIR', '/var/tmp'))
try:
    b = compare.Bench(d, compare.Sizes(False))
    b.make_source()
    res = {}
    for name, binary in (('qemu-storage-daemon', qsd), ('blockjobd', bj)):
        res[name] = (run(b, binary, False)[0], run(b, binary, True))
finally:
    shutil.rmtree(d, ignore_errors=True)
q, j = res['qemu-storage-daemon'], res['blockjobd']
print('%-34s %12s %12s %8s' % ('', 'qsd 7.2', 'blockjobd', 'bj/qsd'))
print('%-34s %12.1f %12.1f' % ('NBD writer alone: MiB/s', q[0], j[0]))
print('%-34s %12.1f %12.1f' % ('NBD writer during backup: MiB/s',
                               q[1][0], j[1][0]))
print('%-34s %11.0f%% %11.0f%%' % ('  kept of solo throughput',
      100 * q[1][0] / q[0], 100 * j[1][0] / j[0]))
print('%-34s %12.2f %12.2f %8.2f' % ('  backup time under writes: s',
      q[1][1], j[1][1], j[1][1] / q[1][1]))
PY
