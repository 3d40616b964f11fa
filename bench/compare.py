#!/usr/bin/python3
"""blockjobd against qemu-storage-daemon 7.2: every job type and the NBD
workloads, alternating in one run, several rounds, medians, one table.

    bench/compare.sh [--rounds N] [--quick] [--jobs a,b,...]
                     [--json FILE] [--compare OLD.json]
                     [--bj BINARY] [--qsd BINARY]

Figures (time from the command to the event that ends it; the images are
recreated or copied afresh for every run, the page cache is not dropped):

  backup          blockdev-backup sync=full, raw source -> new qcow2, to
                  BLOCK_JOB_COMPLETED
  mirror          blockdev-mirror sync=full of the same: to BLOCK_JOB_READY
                  (mirror-ready) and, after block-job-complete, to
                  BLOCK_JOB_COMPLETED (mirror-done)
  stream          block-stream of a chain of three (base <- mid <- top) into
                  the top
  commit          active commit (top into base, to READY, complete, to
                  COMPLETED) and intermediate commit (mid into base)
  nbd             fio --ioengine=nbd against an exported raw image: 1 MiB
                  sequential read at queue depth 8 (MiB/s), 4 KiB random
                  read and random write at queue depth 32 (IOPS)
  qmp50           50 backups throttled with `speed` so that they keep
                  running; query-jobs, query-block-jobs and
                  query-named-block-nodes round trips (p50 and p99 in ms);
                  then block-job-cancel of each: time to BLOCK_JOB_CANCELLED
  mem50           50 backups in one transaction: the daemon's peak RSS
  ref             the physical reference: `cp --sparse=always` of the source
                  to a raw file and `qemu-img convert -O qcow2` of it, and the
                  copy jobs' throughput as a fraction of qemu-img convert's

Full size: 1 GiB source (512 MiB random data, 512 MiB hole), a 1 GiB chain,
a 512 MiB NBD image.  --quick: 32 MiB images, short fio runs: about a
minute, to check that the script works, not to measure.

--json FILE saves the medians and every sample with the commit, the date
and the machine (nproc, CPU model, load average before and after);
--compare OLD.json prints how each figure changed against a saved run.
Images live in BENCH_DIR [/var/tmp].
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
import bjtest  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

ALL_JOBS = ('backup', 'mirror', 'stream', 'commit', 'nbd', 'qmp50', 'mem50',
            'ref')

# Figure name -> (unit, better, goal text, goal test on the bj/qsd ratio or
# on blockjobd's own figure).  better: 'low' (times) or 'high' (rates).
FIGURES = {
    'backup':          ('s', 'low', '<= 0.5x', ('ratio', 0.5)),
    'mirror-ready':    ('s', 'low', '<= 0.6x', ('ratio', 0.6)),
    'mirror-done':     ('s', 'low', '-', None),
    'stream':          ('s', 'low', '<= 0.6x', ('ratio', 0.6)),
    'commit-active':   ('s', 'low', '<= 0.6x', ('ratio', 0.6)),
    'commit-intermediate': ('s', 'low', '-', None),
    'nbd-seqread':     ('MiB/s', 'high', '>= 1.1x', ('ratio_ge', 1.1)),
    'nbd-randread':    ('IOPS', 'high', 'keep', None),
    'nbd-randwrite':   ('IOPS', 'high', 'keep', None),
    'qmp50-query-jobs-p50': ('ms', 'low', '-', None),
    'qmp50-query-jobs-p99': ('ms', 'low', 'p99 <= 5 ms', ('abs', 5.0)),
    'qmp50-query-block-jobs-p50': ('ms', 'low', '-', None),
    'qmp50-query-block-jobs-p99': ('ms', 'low', 'p99 <= 5 ms', ('abs', 5.0)),
    'qmp50-query-named-block-nodes-p50': ('ms', 'low', '-', None),
    'qmp50-query-named-block-nodes-p99': ('ms', 'low', 'p99 <= 5 ms',
                                          ('abs', 5.0)),
    'cancel-latency-p50': ('ms', 'low', 'keep (< 1 ms)', ('abs', 1.0)),
    'mem50-peak':      ('MiB', 'low', 'keep far below', None),
    'ref-cp':          ('s', 'low', '', None),
    'ref-convert':     ('s', 'low', '', None),
    'backup/convert':  ('x', 'high', '>= 0.8', ('abs_ge', 0.8)),
    'mirror/convert':  ('x', 'high', '>= 0.8', ('abs_ge', 0.8)),
}
QUERIES = ('query-jobs', 'query-block-jobs', 'query-named-block-nodes')


class Sizes:
    def __init__(self, quick):
        self.quick = quick
        if quick:
            self.src, self.data = 32 * MiB, 16 * MiB
            self.chain = 32 * MiB
            self.nbd, self.fio_secs = 32 * MiB, 1
            self.fifty, self.fifty_data = 4 * MiB, 2 * MiB
            self.queries = 20
        else:
            self.src, self.data = GiB, 512 * MiB
            self.chain = GiB
            self.nbd, self.fio_secs = 512 * MiB, 5
            self.fifty, self.fifty_data = 64 * MiB, 32 * MiB
            self.queries = 200


def sh(*args):
    subprocess.run([str(a) for a in args], check=True,
                   stdout=subprocess.DEVNULL)


def qemu_img(*args):
    sh('qemu-img', *args)


def random_file(path, data, size):
    """data bytes of random data, then a hole up to size."""
    with open(path, 'wb') as f:
        left = data
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())     # not written back during a measured job


class Bench:
    """The images of one run and the jobs that use them."""

    def __init__(self, d, sz):
        self.d = d
        self.sz = sz
        self.src = os.path.join(d, 'src.raw')

    def path(self, name):
        return os.path.join(self.d, name)

    # -- images -----------------------------------------------------------

    def make_source(self):
        random_file(self.src, self.sz.data, self.sz.src)

    def make_chain(self):
        """base: data in the first half; mid: data in the middle half;
        top: a little data near the end.  Kept in chain/ and copied for
        every run (stream writes the top, commit the base)."""
        c, q = self.sz.chain, self.sz.chain // 4
        os.mkdir(self.path('chain'))
        base, mid, top = (self.path('chain/%s.qcow2' % n)
                          for n in ('base', 'mid', 'top'))
        qemu_img('create', '-q', '-f', 'qcow2', base, str(c))
        sh('qemu-io', '-c', 'write -P 1 0 %d' % (2 * q), base)
        qemu_img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F',
                 'qcow2', mid)
        sh('qemu-io', '-c', 'write -P 2 %d %d' % (q, 2 * q), mid)
        qemu_img('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F',
                 'qcow2', top)
        sh('qemu-io', '-c', 'write -P 3 %d %d' % (c - c // 8, c // 64), top)

    def fresh_chain(self):
        for n in ('base', 'mid', 'top'):
            p = self.path('%s.qcow2' % n)
            sh('cp', '--sparse=always', self.path('chain/%s.qcow2' % n), p)
            # Written back now: the copy's dirty pages would otherwise be
            # written back during the job, by chance more in one run than
            # in another.
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def make_nbd_image(self):
        p = self.path('nbd.raw')
        random_file(p, self.sz.nbd, self.sz.nbd)
        return p

    def make_fifty(self):
        """50 raw sources: hard links of one file."""
        one = self.path('fifty.raw')
        random_file(one, self.sz.fifty_data, self.sz.fifty)
        for i in range(50):
            os.link(one, self.path('s%02d.raw' % i))

    def new_qcow2(self, name, size):
        p = self.path(name)
        if os.path.exists(p):
            os.unlink(p)
        qemu_img('create', '-q', '-f', 'qcow2', p, str(size))
        return p

    # -- daemons ----------------------------------------------------------

    def daemon(self, binary, *extra):
        dm = bjtest.Daemon(self.d, list(extra), binary=binary, timeout=120)
        dm.start()
        return dm

    @staticmethod
    def add_raw(q, node, path, read_only=False):
        q.execute('blockdev-add', {
            'driver': 'raw', 'node-name': node, 'read-only': read_only,
            'file': {'driver': 'file', 'filename': path, 'locking': 'off'}})

    @staticmethod
    def add_qcow2(q, node, path, backing=None):
        o = {'driver': 'qcow2', 'node-name': node,
             'file': {'driver': 'file', 'filename': path}}
        if backing is not None:
            o['backing'] = backing
        q.execute('blockdev-add', o)

    @staticmethod
    def wait_done(q, n=1, name='BLOCK_JOB_COMPLETED'):
        for _ in range(n):
            e = q.wait_event(name, timeout=3600)
            if e['data'].get('error'):
                raise RuntimeError('job %s failed: %s'
                                   % (e['data'].get('device'),
                                      e['data']['error']))

    @staticmethod
    def peak_rss_mib(dm):
        with open('/proc/%d/status' % dm.pid) as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def compare_images(self, a, fa, b, fb):
        r = subprocess.run(['qemu-img', 'compare', '-q', '-f', fa, '-F', fb,
                            a, b])
        if r.returncode:
            raise RuntimeError('%s differs from %s' % (b, a))

    # -- jobs: each returns {figure: value} -------------------------------

    def backup(self, binary):
        tgt = self.new_qcow2('tgt.qcow2', self.sz.src)
        dm = self.daemon(binary)
        try:
            q = dm.qmp
            self.add_raw(q, 'src', self.src)
            self.add_qcow2(q, 'tgt', tgt)
            t0 = time.monotonic()
            q.execute('blockdev-backup', job_id='j', device='src',
                      target='tgt', sync='full')
            self.wait_done(q)
            t = time.monotonic() - t0
        finally:
            dm.cleanup()
        self.compare_images(self.src, 'raw', tgt, 'qcow2')
        return {'backup': t}

    def mirror(self, binary):
        tgt = self.new_qcow2('tgt.qcow2', self.sz.src)
        dm = self.daemon(binary)
        try:
            q = dm.qmp
            self.add_raw(q, 'src', self.src)
            self.add_qcow2(q, 'tgt', tgt)
            t0 = time.monotonic()
            q.execute('blockdev-mirror', job_id='j', device='src',
                      target='tgt', sync='full')
            q.wait_event('BLOCK_JOB_READY', timeout=3600)
            t_ready = time.monotonic() - t0
            q.execute('block-job-complete', device='j')
            self.wait_done(q)
            t_done = time.monotonic() - t0
        finally:
            dm.cleanup()
        self.compare_images(self.src, 'raw', tgt, 'qcow2')
        return {'mirror-ready': t_ready, 'mirror-done': t_done}

    def stream(self, binary):
        self.fresh_chain()
        dm = self.daemon(binary)
        try:
            q = dm.qmp
            self.add_qcow2(q, 'top', self.path('top.qcow2'))
            t0 = time.monotonic()
            q.execute('block-stream', job_id='j', device='top')
            self.wait_done(q)
            t = time.monotonic() - t0
        finally:
            dm.cleanup()
        return {'stream': t}

    def _commit(self, binary, active):
        self.fresh_chain()
        dm = self.daemon(binary)
        try:
            q = dm.qmp
            self.add_qcow2(q, 'base', self.path('base.qcow2'))
            self.add_qcow2(q, 'mid', self.path('mid.qcow2'), 'base')
            self.add_qcow2(q, 'top', self.path('top.qcow2'), 'mid')
            t0 = time.monotonic()
            if active:
                q.execute('block-commit', job_id='j', device='top')
                q.wait_event('BLOCK_JOB_READY', timeout=3600)
                q.execute('block-job-complete', device='j')
            else:
                q.execute('block-commit', job_id='j', device='top',
                          top_node='mid', base_node='base')
            self.wait_done(q)
            return time.monotonic() - t0
        finally:
            dm.cleanup()

    def commit(self, binary):
        return {'commit-active': self._commit(binary, True),
                'commit-intermediate': self._commit(binary, False)}

    def nbd(self, binary):
        sockdir = tempfile.mkdtemp(prefix='bjcmp')
        sock = os.path.join(sockdir, 'n.sock')
        dm = self.daemon(binary, '--blockdev',
                         'driver=file,node-name=f,filename=%s'
                         % self.path('nbd.raw'),
                         '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
                         '--export',
                         'type=nbd,id=e,node-name=f,name=e,writable=on')
        try:
            r = {}
            for fig, rw, bs, qd in (('nbd-seqread', 'read', '1M', 8),
                                    ('nbd-randread', 'randread', '4k', 32),
                                    ('nbd-randwrite', 'randwrite', '4k', 32)):
                iops, mibs = fio(sock, rw, bs, qd, self.sz.nbd,
                                 self.sz.fio_secs)
                r[fig] = mibs if fig == 'nbd-seqread' else iops
            return r
        finally:
            dm.cleanup()
            shutil.rmtree(sockdir, ignore_errors=True)

    def _fifty_daemon(self, binary):
        dm = self.daemon(binary)
        q = dm.qmp
        for i in range(50):
            self.add_raw(q, 's%02d' % i, self.path('s%02d.raw' % i), True)
            self.add_qcow2(q, 't%02d' % i,
                           self.new_qcow2('t%02d.qcow2' % i, self.sz.fifty))
        return dm

    def qmp50(self, binary):
        """Query latency while 50 throttled backups run, then cancel
        latency.  The speed keeps every job running for far longer than
        the queries take."""
        dm = self._fifty_daemon(binary)
        try:
            q = dm.qmp
            acts = [{'type': 'blockdev-backup', 'data': {
                'job-id': 'j%02d' % i, 'device': 's%02d' % i,
                'target': 't%02d' % i, 'sync': 'full',
                'speed': 256 * KiB}} for i in range(50)]
            q.execute('transaction', actions=acts)
            # Every job has started copying before the clock runs.
            deadline = time.monotonic() + 60
            while True:
                jobs = q.execute('query-jobs')
                if len(jobs) == 50 and all(j['status'] == 'running'
                                           for j in jobs):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError('50 jobs not running: %r' % jobs)
                time.sleep(0.01)
            lat = {c: [] for c in QUERIES}
            for _ in range(self.sz.queries):
                for c in QUERIES:
                    lat[c].append(round_trip_ms(q, c))
            jobs = q.execute('query-jobs')
            if len(jobs) != 50 or any(j['status'] != 'running'
                                      for j in jobs):
                raise RuntimeError('jobs ended during the queries: raise '
                                   'the source size or lower the speed')
            cancel = []
            for i in range(50):
                t0 = time.perf_counter()
                q.execute('block-job-cancel', device='j%02d' % i)
                q.wait_event('BLOCK_JOB_CANCELLED', timeout=60,
                             match={'data': {'device': 'j%02d' % i}})
                cancel.append((time.perf_counter() - t0) * 1000)
        finally:
            dm.cleanup()
        r = {}
        for c in QUERIES:
            r['qmp50-%s-p50' % c] = statistics.median(lat[c])
            r['qmp50-%s-p99' % c] = percentile(lat[c], 99)
        r['cancel-latency-p50'] = statistics.median(cancel)
        return r

    def mem50(self, binary):
        dm = self._fifty_daemon(binary)
        try:
            q = dm.qmp
            acts = [{'type': 'blockdev-backup', 'data': {
                'job-id': 'j%02d' % i, 'device': 's%02d' % i,
                'target': 't%02d' % i, 'sync': 'full'}} for i in range(50)]
            q.execute('transaction', actions=acts)
            self.wait_done(q, 50)
            return {'mem50-peak': self.peak_rss_mib(dm)}
        finally:
            dm.cleanup()

    def ref(self):
        """cp and qemu-img convert of the copy jobs' source to the same
        kinds of target."""
        tgt = self.path('ref.raw')
        t0 = time.monotonic()
        sh('cp', '--sparse=always', self.src, tgt)
        t_cp = time.monotonic() - t0
        os.unlink(tgt)
        tgt = self.path('ref.qcow2')
        t0 = time.monotonic()
        qemu_img('convert', '-f', 'raw', '-O', 'qcow2', self.src, tgt)
        t_conv = time.monotonic() - t0
        os.unlink(tgt)
        return {'ref-cp': t_cp, 'ref-convert': t_conv}


def round_trip_ms(q, command):
    """Milliseconds from sending command to the last byte of its reply.

    Timed on the raw socket: the test client's parser takes longer than the
    daemon on a 150 KiB reply and would be measured instead.  Both daemons
    end every message with a newline; events on the way are kept."""
    sock = q.sock
    t0 = time.perf_counter()
    sock.sendall(json.dumps({'execute': command}).encode() + b'\n')
    buf = b''
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError('monitor closed during %s' % command)
        buf += chunk
        if any(not line.startswith(b'{"event"')
               for line in buf.split(b'\n')[:-1] if line.strip()):
            break
    t = (time.perf_counter() - t0) * 1000
    while not buf.endswith(b'\n'):
        buf += sock.recv(1 << 20)
    for line in buf.splitlines():
        msg = json.loads(line)
        if 'event' in msg:
            q.events.append(msg)
        elif 'return' not in msg:
            raise RuntimeError('%s: %r' % (command, msg))
    return t


def percentile(xs, p):
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fio(sock, rw, bs, qd, size, secs):
    """-> (IOPS, MiB/s) of one fio --ioengine=nbd run."""
    p = subprocess.run(
        ['fio', '--name=b', '--ioengine=nbd',
         '--uri=nbd+unix:///e?socket=%s' % sock, '--rw=%s' % rw,
         '--bs=%s' % bs, '--iodepth=%d' % qd, '--size=%d' % size,
         '--time_based', '--runtime=%d' % secs, '--output-format=json'],
        check=True, capture_output=True, text=True)
    t = p.stdout
    j = json.loads(t[t.index('{'):])['jobs'][0]
    d = j['read'] if j['read']['io_bytes'] else j['write']
    return d['iops'], d['bw_bytes'] / MiB


# -- running, reporting ---------------------------------------------------

def machine():
    model = ''
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return {'nproc': os.cpu_count(), 'model': model,
            'loadavg': list(os.getloadavg())}


def git_commit():
    try:
        c = subprocess.run(['git', '-C', ROOT, 'rev-parse', 'HEAD'],
                           capture_output=True, text=True, check=True)
        dirty = subprocess.run(['git', '-C', ROOT, 'status', '--porcelain',
                                '--untracked-files=no'],
                               capture_output=True, text=True).stdout.strip()
        return c.stdout.strip() + ('-dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def run_all(bins, jobs, rounds, sz, log):
    """Alternates the daemons in every round; returns {figure: {daemon:
    [samples]}}."""
    samples = {}
    d = tempfile.mkdtemp(prefix='bj-compare.',
                         dir=os.environ.get('BENCH_DIR', '/var/tmp'))
    try:
        b = Bench(d, sz)
        if {'backup', 'mirror', 'ref'} & set(jobs):
            b.make_source()
        if {'stream', 'commit'} & set(jobs):
            b.make_chain()
        if 'nbd' in jobs:
            b.make_nbd_image()
        if {'qmp50', 'mem50'} & set(jobs):
            b.make_fifty()
        for rnd in range(rounds):
            for job in jobs:
                # The order rotates every round, so that each daemon runs
                # in each place equally often: with three (bench-ab.py's
                # A, B and qsd), a reversal alone kept B always in the
                # middle, right after another daemon's run, and B's backup
                # took up to 3x longer for that alone.
                order = list(bins.items())
                k = rnd % len(order)
                order = order[k:] + order[:k]
                if job == 'ref':
                    order = [('ref', None)]
                for name, binary in order:
                    r = b.ref() if job == 'ref' else getattr(b, job)(binary)
                    # What the run left dirty is written back now, not
                    # during the next daemon's run (it made blockjobd's
                    # backup swing from 0.14 to 0.9 s between rounds).
                    os.sync()
                    for fig, v in r.items():
                        samples.setdefault(fig, {}).setdefault(
                            'ref' if job == 'ref' else name, []).append(v)
                    log('round %d %-7s %-3s %s' % (
                        rnd + 1, job, name, ' '.join(
                            '%s=%.3f' % kv for kv in sorted(r.items()))))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return samples


def summarize(samples):
    figs = {}
    for fig, per in samples.items():
        unit, better, goal, test = FIGURES[fig]
        e = {'unit': unit, 'better': better, 'goal': goal,
             'samples': per}
        for k, v in per.items():
            e[k] = statistics.median(v)
        figs[fig] = e
    # Copy-job throughput as a fraction of qemu-img convert's (same data,
    # same kind of target): convert's time / the job's time.
    conv = figs.get('ref-convert', {}).get('ref')
    for job in ('backup', 'mirror-ready'):
        if conv and job in figs:
            name = job.split('-')[0] + '/convert'
            unit, better, goal, _ = FIGURES[name]
            figs[name] = {'unit': unit, 'better': better, 'goal': goal,
                          'bj': conv / figs[job]['bj'],
                          'qsd': conv / figs[job]['qsd']}
    for fig, e in figs.items():
        if e.get('bj') is not None and e.get('qsd'):
            e['ratio'] = e['bj'] / e['qsd']
        test = FIGURES[fig][3]
        if test and e.get('bj') is not None:
            kind, lim = test
            v = e.get('ratio') if kind.startswith('ratio') else e['bj']
            if v is not None:
                e['met'] = v >= lim if kind.endswith('_ge') else v <= lim
    return figs


def fmt(v):
    if v is None:
        return '-'
    if v >= 100:
        return '%.0f' % v
    if v >= 10:
        return '%.1f' % v
    return '%.3f' % v


def table(figs):
    lines = ['%-36s %6s %10s %10s %7s %14s %4s' % (
        'figure', 'unit', 'blockjobd', 'qsd-7.2', 'bj/qsd', 'goal', 'met')]
    for fig in FIGURES:
        if fig not in figs:
            continue
        e = figs[fig]
        bj = e.get('bj', e.get('ref'))
        met = {True: 'yes', False: 'NO'}.get(e.get('met'), '')
        lines.append('%-36s %6s %10s %10s %7s %14s %4s' % (
            fig, e['unit'], fmt(bj), fmt(e.get('qsd')),
            '%.2f' % e['ratio'] if 'ratio' in e else '-', e['goal'], met))
    return '\n'.join(lines)


def compare_table(new, old):
    lines = ['%-36s %6s %10s %10s %8s %8s %8s' % (
        'figure', 'unit', 'old bj', 'new bj', 'new/old', 'old r', 'new r')]
    for fig in FIGURES:
        if fig not in new['figures'] or fig not in old['figures']:
            continue
        n, o = new['figures'][fig], old['figures'][fig]
        nb, ob = n.get('bj', n.get('ref')), o.get('bj', o.get('ref'))
        ch = nb / ob if nb is not None and ob else None
        # Judged on the ratio to qsd where there is one: on a shared
        # machine the absolute figures move with the load, the ratios of
        # medians taken in the same rounds much less.
        judge = ch
        if 'ratio' in n and 'ratio' in o and o['ratio']:
            judge = n['ratio'] / o['ratio']
        word = ''
        if judge is not None and abs(judge - 1) >= 0.05:
            faster = (judge < 1) == (n['better'] == 'low')
            word = ' better' if faster else ' worse'
        lines.append('%-36s %6s %10s %10s %8s %8s %8s%s' % (
            fig, n['unit'], fmt(ob), fmt(nb),
            '%.2f' % ch if ch is not None else '-',
            '%.2f' % o['ratio'] if 'ratio' in o else '-',
            '%.2f' % n['ratio'] if 'ratio' in n else '-', word))
    return '\n'.join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog='compare.sh', description=__doc__.split('\n')[0],
        epilog=__doc__.split('\n\n', 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--quick', action='store_true',
                    help='small images: checks the script, measures little')
    ap.add_argument('--jobs', default=','.join(ALL_JOBS),
                    help='comma-separated subset of: ' + ','.join(ALL_JOBS))
    ap.add_argument('--json', metavar='FILE')
    ap.add_argument('--compare', metavar='OLD_JSON')
    ap.add_argument('--bj', default=os.path.join(ROOT, 'build', 'src',
                                                 'daemon', 'blockjobd'))
    ap.add_argument('--qsd', default=shutil.which('qemu-storage-daemon'))
    ap.add_argument('--verbose', '-v', action='store_true',
                    help='print every sample as it is taken')
    args = ap.parse_args(argv)
    jobs = [j for j in args.jobs.split(',') if j]
    for j in jobs:
        if j not in ALL_JOBS:
            ap.error('unknown job %r (known: %s)' % (j, ','.join(ALL_JOBS)))
    if args.rounds < 1:
        ap.error('--rounds must be at least 1')
    if not args.qsd:
        sys.exit('compare.sh: qemu-storage-daemon is not installed')
    bj = os.path.abspath(args.bj)
    if not os.access(bj, os.X_OK):
        sys.exit('compare.sh: %s is not built' % bj)
    if 'nbd' in jobs and not shutil.which('fio'):
        sys.exit('compare.sh: fio is not installed (scripts/deps.sh)')
    old = None
    if args.compare:
        with open(args.compare) as f:
            old = json.load(f)

    def log(msg):
        if args.verbose:
            print(msg, file=sys.stderr, flush=True)

    m0 = machine()
    t0 = time.monotonic()
    samples = run_all({'bj': bj, 'qsd': args.qsd}, jobs, args.rounds,
                      Sizes(args.quick), log)
    m1 = machine()
    figs = summarize(samples)
    res = {
        'commit': git_commit(),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'machine': {'nproc': m0['nproc'], 'model': m0['model'],
                    'loadavg_before': m0['loadavg'],
                    'loadavg_after': m1['loadavg']},
        'options': {'rounds': args.rounds, 'quick': args.quick,
                    'jobs': jobs, 'blockjobd': bj, 'qsd': args.qsd},
        'seconds': round(time.monotonic() - t0, 1),
        'figures': figs,
    }
    print('blockjobd %s vs qemu-storage-daemon 7.2: %d round(s)%s, medians; '
          'load average %.2f -> %.2f, %d CPUs' % (
              res['commit'][:12], args.rounds,
              ' (--quick)' if args.quick else '', m0['loadavg'][0],
              m1['loadavg'][0], m0['nproc']))
    print(table(figs))
    if old is not None:
        print()
        print('against %s (%s, %s):' % (args.compare, old.get('commit',
                                                               '?')[:12],
                                        old.get('date', '?')))
        print(compare_table(res, old))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=1, sort_keys=True)
            f.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
