#!/bin/bash
# blockdev-backup, blockjobd beside qemu-storage-daemon 7.2 in one run.
#
#   bench/bench-backup.sh [BUILD_DIR]      (default: build)
#
# 1. backup sync=full of a 1 GiB raw image (512 MiB random data, then a
#    512 MiB hole) into a fresh qcow2: wall time from the command to
#    BLOCK_JOB_COMPLETED, the daemon's peak RSS (VmHWM), the time ratio
#    blockjobd/qsd (goal <= 0.6).
# 2. An NBD client writing 64 KiB blocks at random offsets (4 in flight):
#    its throughput alone, then while the same backup runs (goal: keep
#    >= 85 % of the solo figure; every write to a cluster not yet copied
#    first copies its old data to the target).
# 3. 50 backups started in one transaction, of 50 raw 64 MiB sources
#    (hard links of one file: 32 MiB random data, 32 MiB hole) into 50
#    qcow2 targets: time until the last completes, peak RSS (goal < 150
#    MiB).
# Environment: BENCH_DIR parent dir [/var/tmp], BENCH_WRITE_SECS solo
# writer run [5], BENCH_QUICK=1 runs only blockjobd's backup (alone and
# under the writer), for tuning.  The page cache is not dropped; both daemons see the
# same images, recreated targets each run.
set -euo pipefail

build=${1:-build}
bj=$build/src/daemon/blockjobd
qsd=$(command -v qemu-storage-daemon || true)
py=/usr/bin/python3
# The QMP client and daemon launcher of the integration tests.
tests=$(cd "$(dirname "$0")/../tests/integration" && pwd)

[ -x "$bj" ] || { echo "bench-backup.sh: $bj not built" >&2; exit 1; }
[ -n "$qsd" ] || { echo "bench-backup.sh: qemu-storage-daemon not installed" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bj-bench-backup.XXXXXX")
trap 'rm -rf "$dir"' EXIT

head -c 512M /dev/urandom > "$dir/src.raw"
truncate -s 1G "$dir/src.raw"
head -c 32M /dev/urandom > "$dir/small.raw"
truncate -s 64M "$dir/small.raw"
for i in $(seq -w 0 49); do ln "$dir/small.raw" "$dir/s$i.raw"; done
sync

PYTHONPATH=$tests "$py" - "$bj" "$qsd" "$dir" "${BENCH_WRITE_SECS:-5}" <<'PY'
import os, random, subprocess, sys, threading, time
bj, qsd, d, write_secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
# Absolute: the daemons run in the bench directory.
bj = os.path.abspath(bj)
import nbd

import bjtest

MiB = 1 << 20


class Daemon(bjtest.Daemon):
    def __init__(self, binary):
        # One monitor for either daemon, as before the harness was shared.
        super().__init__(d, binary=binary, monitors=1, timeout=60)
        self.start()

    def cmd(self, name, args=None):
        return self.qmp.execute(name, args or {})

    def wait_completed(self, n=1):
        for _ in range(n):
            e = self.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=3600)
            if e['data'].get('error'):
                sys.exit('job failed: %s' % e['data']['error'])

    def rss_mib(self):
        with open('/proc/%d/status' % self.pid) as st:
            for line in st:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def quit(self):
        try:
            self.stop()
        finally:
            self.cleanup()

    def add_raw(self, name, path):
        self.cmd('blockdev-add', {'driver': 'raw', 'node-name': name,
                                  'file': {'driver': 'file',
                                           'filename': path}})

    def add_target(self, name, size):
        path = os.path.join(d, name + '.qcow2')
        if os.path.exists(path):
            os.unlink(path)
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path,
                        str(size)], check=True)
        self.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': name,
                                  'file': {'driver': 'file',
                                           'filename': path}})

    def export(self, node):
        sock = os.path.join(d, 'nbd.sock')
        if os.path.exists(sock):
            os.unlink(sock)
        self.cmd('nbd-server-start', {'addr': {'type': 'unix',
                                               'data': {'path': sock}}})
        self.cmd('block-export-add', {'type': 'nbd', 'id': 'e',
                                      'node-name': node, 'name': 'x',
                                      'writable': True})
        return sock


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


def fresh_source():
    # The writer changes the source: restore it for the next run.
    subprocess.run(['cp', '--sparse=always', os.path.join(d, 'src.raw'),
                    os.path.join(d, 'work.raw')], check=True)


def backup_full(binary):
    fresh_source()
    dm = Daemon(binary)
    dm.add_raw('src', os.path.join(d, 'work.raw'))
    dm.add_target('tgt', 1 << 30)
    t0 = time.monotonic()
    dm.cmd('blockdev-backup', {'job-id': 'j', 'device': 'src',
                               'target': 'tgt', 'sync': 'full'})
    dm.wait_completed()
    t = time.monotonic() - t0
    rss = dm.rss_mib()
    dm.quit()
    subprocess.run(['qemu-img', 'compare', '-q', '-f', 'raw', '-F', 'qcow2',
                    os.path.join(d, 'work.raw'),
                    os.path.join(d, 'tgt.qcow2')], check=True)
    return t, rss


def writer_solo(binary):
    fresh_source()
    dm = Daemon(binary)
    dm.add_raw('src', os.path.join(d, 'work.raw'))
    sock = dm.export('src')
    stop, res = threading.Event(), []
    t = threading.Thread(target=writer, args=(sock, stop, res))
    t.start()
    time.sleep(write_secs)
    stop.set()
    t.join()
    dm.quit()
    return res[0][0] / res[0][1] / MiB


def writer_during_backup(binary):
    fresh_source()
    dm = Daemon(binary)
    dm.add_raw('src', os.path.join(d, 'work.raw'))
    dm.add_target('tgt', 1 << 30)
    sock = dm.export('src')
    stop, res = threading.Event(), []
    t = threading.Thread(target=writer, args=(sock, stop, res))
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    dm.cmd('blockdev-backup', {'job-id': 'j', 'device': 'src',
                               'target': 'tgt', 'sync': 'full'})
    dm.wait_completed()
    tb = time.monotonic() - t0
    stop.set()
    t.join()
    dm.quit()
    return res[0][0] / res[0][1] / MiB, tb


def fifty(binary):
    dm = Daemon(binary)
    actions = []
    for i in range(50):
        dm.add_raw('s%02d' % i, os.path.join(d, 's%02d.raw' % i))
        dm.add_target('t%02d' % i, 64 << 20)
        actions.append({'type': 'blockdev-backup',
                        'data': {'job-id': 'j%02d' % i, 'device': 's%02d' % i,
                                 'target': 't%02d' % i, 'sync': 'full'}})
    t0 = time.monotonic()
    dm.cmd('transaction', {'actions': actions})
    dm.wait_completed(50)
    t = time.monotonic() - t0
    rss = dm.rss_mib()
    dm.quit()
    return t, rss


if os.environ.get('BENCH_QUICK'):
    print('full: %.2f s, %.1f MiB' % backup_full(bj))
    print('solo writer: %.1f MiB/s' % writer_solo(bj))
    print('writer during backup: %.1f MiB/s, backup %.2f s'
          % writer_during_backup(bj))
    sys.exit(0)
res = {}
for name, binary in (('qemu-storage-daemon', qsd), ('blockjobd', bj)):
    res[name] = {
        'full': backup_full(binary),
        'solo': writer_solo(binary),
        'during': writer_during_backup(binary),
        'fifty': fifty(binary),
    }
q, b = res['qemu-storage-daemon'], res['blockjobd']
print('%-34s %12s %12s %8s' % ('', 'qsd 7.2', 'blockjobd', 'bj/qsd'))
print('%-34s %12.2f %12.2f %8.2f' % ('backup full 1 GiB: seconds',
      q['full'][0], b['full'][0], b['full'][0] / q['full'][0]))
print('%-34s %12.1f %12.1f %8.2f' % ('backup full 1 GiB: peak RSS MiB',
      q['full'][1], b['full'][1], b['full'][1] / q['full'][1]))
print('%-34s %12.1f %12.1f' % ('NBD writer alone: MiB/s', q['solo'],
                               b['solo']))
print('%-34s %12.1f %12.1f' % ('NBD writer during backup: MiB/s',
                               q['during'][0], b['during'][0]))
print('%-34s %11.0f%% %11.0f%%' % ('  kept of solo throughput',
      100 * q['during'][0] / q['solo'], 100 * b['during'][0] / b['solo']))
print('%-34s %12.2f %12.2f %8.2f' % ('  backup time under writes: s',
      q['during'][1], b['during'][1], b['during'][1] / q['during'][1]))
print('%-34s %12.2f %12.2f %8.2f' % ('50 backups x 64 MiB: seconds',
      q['fifty'][0], b['fifty'][0], b['fifty'][0] / q['fifty'][0]))
print('%-34s %12.1f %12.1f %8.2f' % ('50 backups x 64 MiB: peak RSS MiB',
      q['fifty'][1], b['fifty'][1], b['fifty'][1] / q['fifty'][1]))
PY
