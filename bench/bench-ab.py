#!/usr/bin/python3
"""Before/after for a change: two blockjobd binaries (A, B) and
qemu-storage-daemon 7.2, run alternately, several rounds, medians.

    bench/bench-ab.py A_BINARY B_BINARY [--rounds N] [--jobs backup,mirror,nbdread,rss]

  backup   blockdev-backup sync=full of a 1 GiB raw source (512 MiB random
           data, 512 MiB hole) into a new qcow2: command to COMPLETED
  mirror   blockdev-mirror sync=full of the same: command to READY
  nbdread  nbdcopy of a 256 MiB raw export (written) to null:, one
           connection (its 64 requests of 256 KiB in flight)
  rss      20 such backups in one transaction: the daemon's peak RSS
           (VmHWM) and its RSS once they are done (VmRSS), in MiB

Prints each figure's samples and median, then the ratios B/A, B/qsd, A/qsd.
Images live in BENCH_DIR [/var/tmp]; the page cache is not dropped (all
three see the same warm cache).  Run it on a quiet machine: the ratios of
medians are meaningful under some load, single runs are not.
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


def qemu_img(*args):
    subprocess.run(['qemu-img'] + list(args), check=True,
                   stdout=subprocess.DEVNULL)


def make_sources(d):
    src = os.path.join(d, 'src.raw')
    with open(src, 'wb') as f:
        f.write(os.urandom(512 * MiB))
        f.truncate(GiB)
    small = os.path.join(d, 'small.raw')
    with open(small, 'wb') as f:
        f.write(os.urandom(256 * MiB))
    return src, small


def daemon(binary, d, *extra):
    dm = bjtest.Daemon(d, list(extra), binary=binary)
    dm.start()
    return dm


def add_pair(q, src, tgt, n=''):
    q.execute('blockdev-add', {
        'driver': 'raw', 'node-name': 'src' + n, 'read-only': bool(n),
        'file': {'driver': 'file', 'filename': src, 'locking': 'off'}})
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'tgt' + n,
                               'file': {'driver': 'file', 'filename': tgt}})


def run_copy(binary, d, src, kind):
    tgt = os.path.join(d, 'tgt.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', tgt, str(GiB))
    dm = daemon(binary, d)
    try:
        q = dm.qmp
        add_pair(q, src, tgt)
        t0 = time.monotonic()
        if kind == 'backup':
            q.execute('blockdev-backup', job_id='j', device='src',
                      target='tgt', sync='full')
            q.wait_event('BLOCK_JOB_COMPLETED', timeout=600)
        else:
            q.execute('blockdev-mirror', job_id='j', device='src',
                      target='tgt', sync='full')
            q.wait_event('BLOCK_JOB_READY', timeout=600)
        t = time.monotonic() - t0
        if kind == 'mirror':
            q.execute('block-job-cancel', device='j')
            q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
        return t
    finally:
        dm.cleanup()
        os.unlink(tgt)


def run_nbdread(binary, d, small):
    sock = os.path.join(tempfile.mkdtemp(prefix='bjab'), 'n.sock')
    dm = daemon(binary, d, '--blockdev',
                'driver=file,node-name=f,filename=%s' % small,
                '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
                '--export', 'type=nbd,id=e,node-name=f,name=e')
    try:
        t0 = time.monotonic()
        subprocess.run(['nbdcopy', '--connections=1',
                        'nbd+unix:///e?socket=%s' % sock, 'null:'],
                       check=True)
        return time.monotonic() - t0
    finally:
        dm.cleanup()
        shutil.rmtree(os.path.dirname(sock), ignore_errors=True)


def run_rss(binary, d, src):
    dm = daemon(binary, d)
    tgts = []
    try:
        q = dm.qmp
        acts = []
        for i in range(20):
            tgt = os.path.join(d, 't%d.qcow2' % i)
            tgts.append(tgt)
            qemu_img('create', '-q', '-f', 'qcow2', tgt, str(GiB))
            add_pair(q, src, tgt, str(i))
            acts.append({'type': 'blockdev-backup', 'data': {
                'job-id': 'j%d' % i, 'device': 'src%d' % i,
                'target': 'tgt%d' % i, 'sync': 'full'}})
        q.execute('transaction', actions=acts)
        for _ in acts:
            q.wait_event('BLOCK_JOB_COMPLETED', timeout=600)
        st = {}
        with open('/proc/%d/status' % dm.pid) as f:
            for line in f:
                k, _, v = line.partition(':')
                if k in ('VmHWM', 'VmRSS'):
                    st[k] = int(v.split()[0]) / 1024
        return st['VmHWM'], st['VmRSS']
    finally:
        dm.cleanup()
        for t in tgts:
            os.unlink(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('a')
    ap.add_argument('b')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--jobs', default='backup,mirror,nbdread,rss')
    args = ap.parse_args()
    qsd = shutil.which('qemu-storage-daemon')
    if not qsd:
        sys.exit('bench-ab.py: qemu-storage-daemon is not installed')
    bins = {'A': os.path.abspath(args.a), 'B': os.path.abspath(args.b),
            'qsd': qsd}
    d = tempfile.mkdtemp(prefix='bench-ab.',
                         dir=os.environ.get('BENCH_DIR', '/var/tmp'))
    try:
        src, small = make_sources(d)
        for job in args.jobs.split(','):
            res = {k: [] for k in bins}
            rounds = 1 if job == 'rss' else args.rounds
            for _ in range(rounds):
                for name, b in bins.items():
                    if job in ('backup', 'mirror'):
                        res[name].append(run_copy(b, d, src, job))
                    elif job == 'nbdread':
                        res[name].append(run_nbdread(b, d, small))
                    elif job == 'rss':
                        res[name].append(run_rss(b, d, src))
                    else:
                        sys.exit('bench-ab.py: unknown job %r' % job)
            if job == 'rss':
                for name, ((hwm, rss),) in res.items():
                    print('rss     %-3s peak %7.1f MiB   after %7.1f MiB' %
                          (name, hwm, rss))
                continue
            med = {k: statistics.median(v) for k, v in res.items()}
            for name, v in res.items():
                print('%-7s %-3s median %6.3f s   %s' % (
                    job, name, med[name], ' '.join('%.3f' % x for x in v)))
            print('%-7s B/A %.2f   B/qsd %.2f   A/qsd %.2f' % (
                job, med['B'] / med['A'], med['B'] / med['qsd'],
                med['A'] / med['qsd']))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    main()
