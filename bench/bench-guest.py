#!/usr/bin/python3
"""What a job costs the guest: fio 4 KiB random writes (qd 16, over NBD,
across 256 MiB of a 2 GiB qcow2 disk full of data) while a job copies the
disk, for blockjobd with the back-off on (the default), blockjobd with it
off (x-yield.enabled false) and qemu-storage-daemon 7.2, run alternately,
several rounds, medians.

    bench/bench-guest.py [--bin BLOCKJOBD] [--rounds N] [--jobs backup,mirror]
                         [--solo S] [--during S] [--variants on,off,qsd]

  backup   blockdev-backup sync=full into a new qcow2 (to COMPLETED)
  mirror   blockdev-mirror sync=full into a new qcow2, bulk phase (to READY)

fio runs S_solo seconds alone (the first second is not counted), then the
job starts and fio goes on for S_during more seconds.  fio logs IOPS every
100 ms (--write_iops_log, --log_avg_msec=100) and a completion-latency
histogram every 100 ms (--write_hist_log, --log_hist_msec=100), in unix
time; the windows are cut at the job's JOB_STATUS_CHANGE "running" and
its COMPLETED/READY event timestamps (and at fio's end, when the job
outlives it).  Per run: IOPS during / IOPS solo ("keeps"), p99 latency
during / p99 solo, the job's duration, and how much of the job fio covered.

Images live in BENCH_DIR [/var/tmp].  The machine is shared: compare the
three daemons within one run, and read the medians, not single samples.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'tests', 'integration'))
import bjtest  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
DISK = 2 * GiB
AREA = 256 * MiB

# fio's latency histogram (clat, ns): 29 groups of 64 buckets
# (FIO_IO_U_PLAT_BITS 6), the first two groups exact.
PLAT_BITS = 6
PLAT_VAL = 1 << PLAT_BITS


def bucket_value(idx):
    if idx < (PLAT_VAL << 1):
        return idx
    error_bits = (idx >> PLAT_BITS) - 1
    base = 1 << (error_bits + PLAT_BITS)
    k = idx % PLAT_VAL
    return base + (k + 0.5) * (1 << error_bits)


def qemu_img(*args):
    subprocess.run(['qemu-img'] + list(args), check=True,
                   stdout=subprocess.DEVNULL)


def make_source(d):
    src = os.path.join(d, 'src.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', src, str(DISK))
    cmds = []
    for off in range(0, DISK, 256 * MiB):
        cmds += ['-c', 'write -P 0x5a %d %d' % (off, 256 * MiB)]
    subprocess.run(['qemu-io', '-f', 'qcow2'] + cmds + [src], check=True,
                   stdout=subprocess.DEVNULL)
    return src


def event_time(ev):
    ts = ev['timestamp']
    return ts['seconds'] + ts['microseconds'] / 1e6


def read_iops(path):
    """[(t_seconds, iops)] from an iops log in unix-epoch milliseconds
    (each entry: the IOs of the 100 ms ending at t, as IOPS)."""
    out = []
    with open(path) as f:
        for line in f:
            p = [x.strip() for x in line.split(',')]
            out.append((int(p[0]) / 1000.0, float(p[1])))
    return out


def read_hist(path):
    """[(t_seconds, counts)] from a histogram log."""
    out = []
    with open(path) as f:
        for line in f:
            p = [x.strip() for x in line.split(',')]
            out.append((int(p[0]) / 1000.0, [int(x) for x in p[3:]]))
    return out


def window_iops(log, a, b):
    v = [x for t, x in log if a < t <= b]
    return statistics.mean(v) if v else float('nan')


def window_p99(hist, a, b):
    total = None
    for t, counts in hist:
        if a < t <= b:
            total = counts if total is None else [
                x + y for x, y in zip(total, counts)]
    if not total or not sum(total):
        return float('nan')
    want = 0.99 * sum(total)
    n = 0
    for i, c in enumerate(total):
        n += c
        if n >= want:
            return bucket_value(i) / 1000.0      # microseconds
    return float('nan')


def run_one(binary, d, src, kind, variant, solo, during):
    tgt = os.path.join(d, 'tgt.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', tgt, str(DISK))
    sockdir = tempfile.mkdtemp(prefix='bjguest')
    sock = os.path.join(sockdir, 'n.sock')
    logs = os.path.join(d, 'fio')
    dm = bjtest.Daemon(d, [], binary=binary)
    dm.start()
    fio = None
    try:
        q = dm.qmp
        q.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'src',
            'file': {'driver': 'file', 'filename': src}})
        q.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'tgt',
            'file': {'driver': 'file', 'filename': tgt}})
        q.execute('nbd-server-start',
                  addr={'type': 'unix', 'data': {'path': sock}})
        q.execute('block-export-add', {'type': 'nbd', 'id': 'e',
                                       'node-name': 'src', 'writable': True})
        fio = subprocess.Popen([
            'fio', '--name=w', '--ioengine=nbd',
            '--uri=nbd+unix:///src?socket=%s' % sock,
            '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=%d' % AREA,
            '--time_based', '--runtime=%d' % (solo + during),
            '--write_iops_log=%s' % logs, '--log_avg_msec=100',
            '--write_hist_log=%s' % logs, '--log_hist_msec=100',
            '--log_unix_epoch=1', '--output-format=terse'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # fio alone for `solo` seconds (its own log says when it began)
        time.sleep(solo)
        args = {'job-id': 'j', 'device': 'src', 'target': 'tgt',
                'sync': 'full'}
        if variant == 'off':
            args['x-yield'] = {'enabled': False}
        q.execute('blockdev-backup' if kind == 'backup' else
                  'blockdev-mirror', args)
        ev0 = q.wait_event('JOB_STATUS_CHANGE', timeout=60, match={
            'data': {'id': 'j', 'status': 'running'}})
        ev1 = q.wait_event('BLOCK_JOB_COMPLETED' if kind == 'backup' else
                           'BLOCK_JOB_READY', timeout=1200,
                           match={'data': {'device': 'j'}})
        if kind == 'mirror':
            q.execute('block-job-cancel', device='j')
            q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
        fio.wait(timeout=solo + during + 120)
        if fio.returncode:
            raise RuntimeError('fio failed: %s' % fio.stderr.read())
    finally:
        if fio and fio.poll() is None:
            fio.kill()
            fio.wait()
        dm.cleanup()
        os.unlink(tgt)
        shutil.rmtree(sockdir, ignore_errors=True)
    t0, t1 = event_time(ev0), event_time(ev1)
    iops = read_iops(logs + '_iops.1.log')
    hist = read_hist(logs + '_clat_hist.1.log')
    for f in os.listdir(d):
        if f.startswith('fio_'):
            os.unlink(os.path.join(d, f))
    fio_start, fio_end = iops[0][0], iops[-1][0]
    end = min(t1, fio_end)
    solo_a = fio_start + 1.0
    r = {
        'keeps': window_iops(iops, t0, end) / window_iops(iops, solo_a, t0),
        'p99x': window_p99(hist, t0, end) / window_p99(hist, solo_a, t0),
        'p99solo': window_p99(hist, solo_a, t0),
        'iops_solo': window_iops(iops, solo_a, t0),
        'job_s': t1 - t0,
        'covered': max(0.0, end - t0) / (t1 - t0),
    }
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bin', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), '..', 'build', 'src',
        'daemon', 'blockjobd'))
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--jobs', default='backup,mirror')
    ap.add_argument('--solo', type=int, default=4)
    ap.add_argument('--during', type=int, default=16)
    ap.add_argument('--variants', default='on,off,qsd',
                    help='which of on (back-off on), off (back-off off), '
                    'qsd to run, in this order each round')
    args = ap.parse_args()
    qsd = shutil.which('qemu-storage-daemon')
    if not qsd or not shutil.which('fio'):
        sys.exit('bench-guest.py: needs qemu-storage-daemon and fio')
    bins = {'on': os.path.abspath(args.bin),
            'off': os.path.abspath(args.bin), 'qsd': qsd}
    variants = [(v, bins.get(v)) for v in args.variants.split(',')]
    if any(b is None for _, b in variants):
        sys.exit('bench-guest.py: --variants: one of on, off, qsd')
    d = tempfile.mkdtemp(prefix='bench-guest.',
                         dir=os.environ.get('BENCH_DIR', '/var/tmp'))
    try:
        src = make_source(d)
        print('load average before: %s' % open('/proc/loadavg').read()
              .strip())
        for kind in args.jobs.split(','):
            res = {v: [] for v, _ in variants}
            for _ in range(args.rounds):
                for v, b in variants:
                    r = run_one(b, d, src, kind, v, args.solo, args.during)
                    res[v].append(r)
                    print('%-6s %-3s keeps %.2f  p99 x%.2f (solo %.0f us, '
                          '%.0f IOPS)  job %.1f s  fio covered %.0f%%' % (
                              kind, v, r['keeps'], r['p99x'], r['p99solo'],
                              r['iops_solo'], r['job_s'],
                              100 * r['covered']), flush=True)
            for v, _ in variants:
                rs = res[v]
                print('%-6s %-3s MEDIAN keeps %.2f  p99 x%.2f  job %.1f s' % (
                    kind, v, statistics.median(x['keeps'] for x in rs),
                    statistics.median(x['p99x'] for x in rs),
                    statistics.median(x['job_s'] for x in rs)), flush=True)
        print('load average after: %s' % open('/proc/loadavg').read()
              .strip())
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    main()
