"""Incremental backup chains, iotest 124 style: a full backup and three
incrementals (sync=incremental, bm0), with writes from an NBD client to the
source between the backups (and during one), restored by chaining the
images with qemu-img: the chain up to backup i equals the source as it was
when backup i started (qemu-img compare against a reference kept in
Python).  An incremental that fails leaves the bitmap whole and the next
one captures everything; a transaction [block-dirty-bitmap-add,
blockdev-backup full] starts the chain atomically (on two disks, with
grouped and individual completion); [clear, full] restarts it; disabled and
persistent bitmaps (across a restart, and after SIGKILL); concurrent
writers during an incremental.  Every expectation was
checked against qemu-storage-daemon 7.2.
"""

import json
import os
import signal

import pytest

from bitmaptest import (GRAN, MiB, Model, NbdWriter, assert_bitmap,
                        data_granules, granules, node_bitmaps, pattern,
                        read_image)
from bjtest import QMPError, qemu_img, qemu_io

pytest.importorskip('nbd')

SIZE = 32 * MiB

# Writes between the backups: (seed, offset, length); some rewrite what
# an earlier round wrote, some are unaligned or straddle two granules.
ROUNDS = [
    [(1, 0, GRAN), (2, 5 * GRAN + 100, 3000), (3, 64 * GRAN - 512, 1024),
     (4, 300 * GRAN, 3 * GRAN)],
    [(5, 5 * GRAN, GRAN), (6, 128 * GRAN + 4096, 4096),
     (7, 301 * GRAN + 10, 10), (8, 511 * GRAN, GRAN)],
    [(9, 0, 512), (10, 64 * GRAN, 2 * GRAN), (11, 400 * GRAN + 65000, 1000),
     (12, 200 * GRAN, 4096)],
]
# Written while the second incremental runs (not in it, in the third).
DURING = [(13, 128 * GRAN, 8192), (14, 450 * GRAN, 4096), (15, 0, 4096)]
AFTER = [(16, 77 * GRAN, 1)]


def bits_of(writes):
    s = set()
    for _, off, length in writes:
        s |= granules(off, length)
    return s


class BackupChain:
    """A source node (raw, or qcow2) with its NBD export, a Model of its
    bytes and the images backed up from it (several per daemon: name
    them)."""

    def __init__(self, daemon, node='src', size=SIZE, server=True,
                 fmt='raw'):
        self.dir = daemon.workdir
        self.node = node
        self.size = size
        self.fmt = fmt
        self.src = os.path.join(self.dir, '%s.%s' % (node, fmt))
        qemu_img('create', '-q', '-f', fmt, self.src, size)
        qemu_io('-f', fmt, '-c', 'write -P 0x41 0 4M', '-c',
                'write -P 0x42 %d 2M' % (size // 2), self.src)
        self.model = Model(size)
        self.model.write(0, b'\x41' * (4 * MiB))
        self.model.write(size // 2, b'\x42' * (2 * MiB))
        self.images = []          # (qcow2 path, reference raw path)
        self.n = 0
        self.attach(daemon, server)

    def attach(self, daemon, server=True):
        """Opens the source in daemon and exports it."""
        self.daemon = daemon
        self.qmp = daemon.qmp
        self.qmp.execute('blockdev-add', {
            'driver': self.fmt, 'node-name': self.node,
            'file': {'driver': 'file', 'filename': self.src}})
        sock = daemon.socket_path('nbd.sock')
        if server:
            self.qmp.execute('nbd-server-start',
                             addr={'type': 'unix',
                                   'data': {'path': sock}})
        self.qmp.execute('block-export-add', {
            'type': 'nbd', 'id': 'e-' + self.node, 'node-name': self.node,
            'name': self.node, 'writable': True})
        self.nbd = NbdWriter(sock, self.node, self.model)

    def write(self, writes):
        for seed, off, length in writes:
            self.nbd.write(off, pattern(seed, length))

    def path(self, name):
        return os.path.join(self.dir, name)

    def add_target(self, name, backing=None, fmt='qcow2', blkdebug=None):
        """A new target node tgtN on a fresh image (backing: the image it
        will sit on, written in the header but not opened)."""
        p = self.path(name)
        if fmt == 'raw':
            qemu_img('create', '-q', '-f', 'raw', p, self.size)
        elif backing is None:
            qemu_img('create', '-q', '-f', 'qcow2', p, self.size)
        else:
            qemu_img('create', '-q', '-f', 'qcow2', '-b', backing, '-F',
                     'qcow2', p)
        f = {'driver': 'file', 'filename': p}
        if blkdebug is not None:
            f = {'driver': 'blkdebug', 'image': f,
                 'inject-error': [blkdebug]}
        node = '%s-tgt%d' % (self.node, self.n)
        self.n += 1
        opts = {'driver': fmt, 'node-name': node, 'file': f}
        if backing is not None:
            opts['backing'] = None
        self.qmp.execute('blockdev-add', opts)
        return p, node

    def backup(self, node, sync, jid, speed=None, during=None, **extra):
        """Runs a backup to node; returns the reference (the source at
        the start) and the BLOCK_JOB_COMPLETED data."""
        ref = self.model.snapshot()
        args = {'job-id': jid, 'device': self.node, 'target': node,
                'sync': sync}
        if speed is not None:
            args['speed'] = speed
        args.update(extra)
        self.qmp.execute('blockdev-backup', args)
        if during:
            self.write(during)
            self.qmp.execute('block-job-set-speed', device=jid, speed=0)
        ev = self.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60,
                                 match={'data': {'device': jid}})
        self.qmp.wait_event('JOB_STATUS_CHANGE', timeout=60,
                            match={'data': {'id': jid, 'status': 'null'}})
        self.qmp.execute('blockdev-del', node_name=node)
        return ref, ev['data']

    def keep(self, path, ref):
        refpath = path + '.ref'
        self.model.save(refpath, ref)
        self.images.append((path, refpath))

    def verify(self):
        """Each image, with the ones before it as backing, equals the
        source at its instant; each incremental holds only its own
        clusters (checked by the caller)."""
        for path, refpath in self.images:
            qemu_img('check', '-q', path)
            qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', refpath,
                     path)

    def finish(self, path, ref, granules):
        """Keeps path, the last image of the chain (the source at ref),
        hangs up and verifies the chain; path holds data in exactly
        granules."""
        self.keep(path, ref)
        self.close()
        assert data_granules(path, depth=0) == granules, path
        self.verify()

    def close(self):
        self.nbd.close()
        self.qmp.execute('block-export-del', id='e-' + self.node)
        self.qmp.wait_event('BLOCK_EXPORT_DELETED',
                            match={'data': {'id': 'e-' + self.node}})


def bm0_then_full(action, jid, target, bitmap=None, **backup):
    """The actions of a transaction that first changes bitmap bm0 of src
    (action: block-dirty-bitmap-add or -clear; bitmap: more of its data)
    and then starts a full backup jid of src to target (backup: more of
    its arguments)."""
    data = {'node': 'src', 'name': 'bm0'}
    data.update(bitmap or {})
    args = {'job-id': jid, 'device': 'src', 'target': target, 'sync': 'full'}
    args.update(backup)
    return [{'type': action, 'data': data},
            {'type': 'blockdev-backup', 'data': args}]


def rebase(path, backing):
    qemu_img('rebase', '-u', '-f', 'qcow2', '-b', backing, '-F', 'qcow2',
             path)


@pytest.mark.timeout(90)
@pytest.mark.parametrize('layout', ['backing', 'rebase'])
def test_full_and_three_incrementals(daemon, layout):
    """layout backing: each incremental is created on the previous image
    (qemu-img create -b) and opened without its backing; rebase: created
    standalone, chained afterwards with qemu-img rebase -u."""
    c = BackupChain(daemon)
    qmp = c.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0')
    full, node = c.add_target('full.qcow2')
    ref, done = c.backup(node, 'full', 'full')
    assert 'error' not in done and done['offset'] == done['len'] == SIZE
    c.keep(full, ref)
    assert_bitmap(qmp, 'src', 'bm0', set(), SIZE)

    prev = full
    expect = []
    pending = set()
    for i, writes in enumerate(ROUNDS):
        c.write(writes)
        pending |= bits_of(writes)
        assert_bitmap(qmp, 'src', 'bm0', pending, SIZE, what='round %d' % i)
        name = 'inc%d.qcow2' % i
        path, node = c.add_target(name, prev if layout == 'backing'
                                  else None)
        during = DURING if i == 1 else None
        ref, done = c.backup(node, 'incremental', 'inc%d' % i,
                             bitmap='bm0', speed=1 if during else None,
                             during=during)
        assert 'error' not in done, done
        # What the job copied: the dirty clusters.
        assert done['offset'] == done['len'] == len(pending) * GRAN
        expect.append((path, pending))
        pending = bits_of(during) if during else set()
        assert_bitmap(qmp, 'src', 'bm0', pending, SIZE,
                      what='after inc%d' % i)
        if layout == 'rebase':
            rebase(path, prev)
        c.keep(path, ref)
        prev = path

    c.write(AFTER)
    assert_bitmap(qmp, 'src', 'bm0', bits_of(AFTER), SIZE)
    c.close()
    for path, bits in expect:
        assert data_granules(path, depth=0) == bits, path
    c.verify()
    qmp.execute('blockdev-del', node_name='src')
    with open(c.src, 'rb') as f:
        assert f.read() == c.model.snapshot()


@pytest.mark.timeout(90)
def test_failed_incremental_keeps_bitmap(daemon):
    """An incremental whose target fails partway (blkdebug: the write of
    the last dirty cluster) reports the error and leaves bm0 whole, with
    the writes made meanwhile; the next incremental, on a new image,
    captures everything since the full backup."""
    c = BackupChain(daemon)
    qmp = c.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0')
    full, node = c.add_target('full.qcow2')
    ref, done = c.backup(node, 'full', 'full')
    assert 'error' not in done
    c.keep(full, ref)

    c.write(ROUNDS[0])
    first = bits_of(ROUNDS[0])
    last = max(first)
    # A raw target: its file offsets are the guest's.
    bad, node = c.add_target('bad.raw', fmt='raw', blkdebug={
        'event': 'write_aio', 'errno': 5, 'once': True,
        'sector': last * GRAN // 512})
    ref_bad, done = c.backup(node, 'incremental', 'inc-bad', bitmap='bm0',
                             speed=1, during=ROUNDS[1])
    assert done['error'] == 'Input/output error', done
    assert done['offset'] < done['len'] == len(first) * GRAN
    everything = first | bits_of(ROUNDS[1])
    info = assert_bitmap(qmp, 'src', 'bm0', everything, SIZE,
                         what='after the failure')
    assert info['busy'] is False and info['recording'] is True
    os.unlink(bad)

    c.write(ROUNDS[2])
    everything |= bits_of(ROUNDS[2])
    inc, node = c.add_target('inc.qcow2', full)
    ref, done = c.backup(node, 'incremental', 'inc', bitmap='bm0')
    assert 'error' not in done
    assert done['offset'] == done['len'] == len(everything) * GRAN
    assert_bitmap(qmp, 'src', 'bm0', set(), SIZE)
    c.finish(inc, ref, everything)


@pytest.mark.timeout(90)
def test_transaction_starts_chain(daemon):
    """transaction [block-dirty-bitmap-add, blockdev-backup full] creates
    the bitmap at the instant the full backup starts: writes during the
    full backup are in the bitmap (and not in the full backup), and the
    chain full + incremental equals the source at each instant.  A
    transaction whose backup is refused adds no bitmap."""
    c = BackupChain(daemon)
    qmp = c.qmp
    c.write(ROUNDS[0])                  # before: in the full backup only
    full, node = c.add_target('full.qcow2')
    p2, node2 = c.add_target('spare.qcow2')

    with pytest.raises(QMPError) as e:
        qmp.execute('transaction', actions=bm0_then_full(
            'block-dirty-bitmap-add', 'full', 'nope'))
    assert e.value.desc == "Cannot find device='nope' nor node-name='nope'"
    assert [n.get('dirty-bitmaps') for n in
            qmp.execute('query-named-block-nodes')
            if n['node-name'] == 'src'] == [None]
    assert qmp.execute('query-block-jobs') == []

    ref = c.model.snapshot()
    qmp.execute('transaction', actions=bm0_then_full(
        'block-dirty-bitmap-add', 'full', node, bitmap={'granularity': GRAN},
        speed=1))
    c.write(ROUNDS[1])                  # during the full backup
    assert_bitmap(qmp, 'src', 'bm0', bits_of(ROUNDS[1]), SIZE)
    qmp.execute('block-job-set-speed', device='full', speed=0)
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60,
                        match={'data': {'device': 'full'}})
    assert 'error' not in ev['data'], ev
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=60,
                   match={'data': {'id': 'full', 'status': 'null'}})
    qmp.execute('blockdev-del', node_name=node)
    c.keep(full, ref)

    c.write(ROUNDS[2])
    pending = bits_of(ROUNDS[1]) | bits_of(ROUNDS[2])
    assert_bitmap(qmp, 'src', 'bm0', pending, SIZE)
    ref, done = c.backup(node2, 'incremental', 'inc', bitmap='bm0')
    assert 'error' not in done
    assert done['offset'] == done['len'] == len(pending) * GRAN
    assert_bitmap(qmp, 'src', 'bm0', set(), SIZE)
    rebase(p2, full)
    c.finish(p2, ref, pending)


def wait_null(qmp, jid):
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=60,
                   match={'data': {'id': jid, 'status': 'null'}})


@pytest.mark.timeout(90)
@pytest.mark.parametrize('grouped', [False, True],
                         ids=['individual', 'grouped'])
def test_transaction_two_disks(daemon, grouped):
    """iotest 124's transactions on two disks: one transaction adds both
    bitmaps and starts both full backups; then one transaction starts an
    incremental of each, and b's target fails.  Individual completion: a's
    bitmap is consumed, b's kept; grouped: a's job is cancelled too and
    both bitmaps are kept.  The retried incrementals capture everything
    and each chain equals its disk at each instant."""
    size = 8 * MiB
    disks = {n: BackupChain(daemon, n, size, server=(n == 'a')) for n in 'ab'}
    qmp = daemon.qmp
    actions, fulls = [], {}
    for n, c in disks.items():
        fulls[n] = c.add_target('%s-full.qcow2' % n)
        actions.append({'type': 'block-dirty-bitmap-add',
                        'data': {'node': n, 'name': 'bm'}})
    for n, c in disks.items():
        actions.append({'type': 'blockdev-backup',
                        'data': {'job-id': 'full-' + n, 'device': n,
                                 'target': fulls[n][1], 'sync': 'full'}})
    refs = {n: c.model.snapshot() for n, c in disks.items()}
    qmp.execute('transaction', actions=actions)
    for n, c in disks.items():
        wait_null(qmp, 'full-' + n)
        qmp.execute('blockdev-del', node_name=fulls[n][1])
        c.keep(fulls[n][0], refs[n])
        assert_bitmap(qmp, n, 'bm', set(), size)

    w = {'a': [(31, 0, GRAN), (32, 20 * GRAN + 5, 5)],
         'b': [(33, GRAN, GRAN), (34, 40 * GRAN, 2 * GRAN)]}
    for n, c in disks.items():
        c.write(w[n])
    bad_sector = 41 * GRAN // 512            # b's second dirty cluster
    ta, na = disks['a'].add_target('a-inc.qcow2')
    tb, nb = disks['b'].add_target('b-bad.raw', fmt='raw', blkdebug={
        'event': 'write_aio', 'errno': 5, 'once': True,
        'sector': bad_sector})
    kw = {'properties': {'completion-mode': 'grouped'}} if grouped else {}
    refa = disks['a'].model.snapshot()
    qmp.execute('transaction', actions=[
        {'type': 'blockdev-backup',
         'data': {'job-id': 'inc-a', 'device': 'a', 'target': na,
                  'sync': 'incremental', 'bitmap': 'bm'}},
        {'type': 'blockdev-backup',
         'data': {'job-id': 'inc-b', 'device': 'b', 'target': nb,
                  'sync': 'incremental', 'bitmap': 'bm'}}], **kw)
    wait_null(qmp, 'inc-a')
    wait_null(qmp, 'inc-b')
    evs = {e['data']['device']: e for e in qmp.get_events()
           if e['event'] in ('BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED')}
    assert evs['inc-b']['event'] == 'BLOCK_JOB_COMPLETED'
    assert evs['inc-b']['data']['error'] == 'Input/output error'
    if grouped:
        assert evs['inc-a']['event'] == 'BLOCK_JOB_CANCELLED', evs['inc-a']
        assert_bitmap(qmp, 'a', 'bm', bits_of(w['a']), size)
    else:
        assert evs['inc-a']['event'] == 'BLOCK_JOB_COMPLETED'
        assert 'error' not in evs['inc-a']['data']
        assert_bitmap(qmp, 'a', 'bm', set(), size)
    assert_bitmap(qmp, 'b', 'bm', bits_of(w['b']), size)
    for node in (na, nb):
        qmp.execute('blockdev-del', node_name=node)
    os.unlink(tb)
    if grouped:
        os.unlink(ta)
    else:
        disks['a'].keep(ta, refa)
        rebase(ta, fulls['a'][0])

    more = {'a': [(35, 20 * GRAN, GRAN)], 'b': [(36, 100 * GRAN, 1)]}
    for n, c in disks.items():
        c.write(more[n])
        pending = bits_of(more[n]) | bits_of(w[n])
        if n == 'a' and not grouped:
            pending = bits_of(more[n])
        prev = c.images[-1][0]
        path, node = c.add_target('%s-retry.qcow2' % n, prev)
        ref, done = c.backup(node, 'incremental', 'retry-' + n,
                             bitmap='bm')
        assert 'error' not in done
        assert done['len'] == len(pending) * GRAN
        assert_bitmap(qmp, n, 'bm', set(), size)
        c.finish(path, ref, pending)


@pytest.mark.timeout(60)
def test_transaction_clear_and_full(daemon):
    """transaction [block-dirty-bitmap-clear, blockdev-backup full]
    restarts a chain: the bitmap keeps only the writes after it."""
    c = BackupChain(daemon)
    qmp = c.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0')
    c.write(ROUNDS[0])
    assert_bitmap(qmp, 'src', 'bm0', bits_of(ROUNDS[0]), SIZE)
    full, node = c.add_target('full.qcow2')
    ref = c.model.snapshot()
    qmp.execute('transaction', actions=bm0_then_full(
        'block-dirty-bitmap-clear', 'full', node, speed=1))
    c.write(ROUNDS[1])
    qmp.execute('block-job-set-speed', device='full', speed=0)
    wait_null(qmp, 'full')
    qmp.execute('blockdev-del', node_name=node)
    c.keep(full, ref)
    assert_bitmap(qmp, 'src', 'bm0', bits_of(ROUNDS[1]), SIZE)
    inc, node = c.add_target('inc.qcow2', full)
    ref, done = c.backup(node, 'incremental', 'inc', bitmap='bm0')
    assert 'error' not in done
    c.finish(inc, ref, bits_of(ROUNDS[1]))


@pytest.mark.timeout(60)
@pytest.mark.parametrize('fail', [False, True], ids=['success', 'failure'])
def test_disabled_bitmap(daemon, fail):
    """A disabled bitmap can drive an incremental: it copies the bits,
    writes during the job are not recorded (the successor is disabled
    too), on success the bitmap ends empty, on failure as it was; it
    stays disabled."""
    c = BackupChain(daemon)
    qmp = c.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0')
    c.write(ROUNDS[0])
    qmp.execute('block-dirty-bitmap-disable', node='src', name='bm0')
    c.write(ROUNDS[1])                        # not recorded
    first = bits_of(ROUNDS[0])
    assert_bitmap(qmp, 'src', 'bm0', first, SIZE)
    if fail:
        path, node = c.add_target('bad.raw', fmt='raw', blkdebug={
            'event': 'write_aio', 'errno': 5, 'once': True,
            'sector': max(first) * GRAN // 512})
    else:
        path, node = c.add_target('inc.qcow2')
    ref, done = c.backup(node, 'incremental', 'inc', bitmap='bm0',
                         speed=1, during=ROUNDS[2])
    assert ('error' in done) == fail, done
    info = assert_bitmap(qmp, 'src', 'bm0', first if fail else set(), SIZE)
    assert info['recording'] is False and info['busy'] is False
    c.close()
    if not fail:
        got = read_image(path, 'qcow2', c.dir)
        assert data_granules(path) == first
        for g in range(SIZE // GRAN):
            want = ref[g * GRAN:(g + 1) * GRAN] if g in first \
                else bytes(GRAN)
            assert got[g * GRAN:(g + 1) * GRAN] == want, g


@pytest.mark.timeout(90)
def test_persistent_bitmap_across_restart(daemon_factory):
    """A persistent bitmap on a qcow2 source drives an incremental, stays
    persistent through it (its successor's bits: the writes during the
    job), is stored at quit (qemu-img info lists it) and loaded by the
    next daemon, whose incremental captures what the first one missed
    plus what came after."""
    d1 = daemon_factory()
    c = BackupChain(d1, fmt='qcow2')
    qmp = c.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0',
                persistent=True)
    full, node = c.add_target('full.qcow2')
    ref, done = c.backup(node, 'full', 'full')
    assert 'error' not in done
    c.keep(full, ref)
    c.write(ROUNDS[0])
    inc0, node = c.add_target('inc0.qcow2', full)
    ref, done = c.backup(node, 'incremental', 'inc0', bitmap='bm0',
                         speed=1, during=ROUNDS[1])
    assert 'error' not in done
    c.keep(inc0, ref)
    info = assert_bitmap(qmp, 'src', 'bm0', bits_of(ROUNDS[1]), SIZE)
    assert info['persistent'] is True and info['recording'] is True
    c.close()
    d1.stop()
    out = qemu_img('info', '--output=json', c.src).stdout
    bms = json.loads(out)['format-specific']['data']['bitmaps']
    assert [(b['name'], b['granularity'], b['flags']) for b in bms] == \
        [('bm0', GRAN, ['auto'])]

    d2 = daemon_factory()
    c.attach(d2)
    qmp = c.qmp
    info = assert_bitmap(qmp, 'src', 'bm0', bits_of(ROUNDS[1]), SIZE,
                         what='after restart')
    assert info['persistent'] is True and info['recording'] is True
    c.write(ROUNDS[2])
    pending = bits_of(ROUNDS[1]) | bits_of(ROUNDS[2])
    assert_bitmap(qmp, 'src', 'bm0', pending, SIZE)
    inc1, node = c.add_target('inc1.qcow2', inc0)
    ref, done = c.backup(node, 'incremental', 'inc1', bitmap='bm0')
    assert 'error' not in done
    assert done['len'] == len(pending) * GRAN
    c.keep(inc1, ref)
    assert_bitmap(qmp, 'src', 'bm0', set(), SIZE)
    c.close()
    assert data_granules(inc0, depth=0) == bits_of(ROUNDS[0])
    assert data_granules(inc1, depth=0) == pending
    c.verify()
    qmp.execute('blockdev-del', node_name='src')
    assert read_image(c.src, 'qcow2', c.dir) == c.model.snapshot()


@pytest.mark.timeout(60)
def test_bitmap_after_kill(daemon_factory):
    """A persistent bitmap of an image the daemon held read-write when it
    was killed (SIGKILL, after writes that reached the disk: flushed) is
    either inconsistent -- every backup refuses it, nothing starts, and a
    new chain can be started after removing it (qemu's rule) -- or, by a
    rule that keeps it crash-consistent, still usable: then it holds at
    least every write since it was stored, and the incremental it drives
    restores the disk exactly."""
    d1 = daemon_factory()
    c = BackupChain(d1, fmt='qcow2')
    full, node = c.add_target('full.qcow2')
    ref = c.model.snapshot()
    c.qmp.execute('transaction', actions=bm0_then_full(
        'block-dirty-bitmap-add', 'full', node, bitmap={'persistent': True}))
    wait_null(c.qmp, 'full')
    c.qmp.execute('blockdev-del', node_name=node)
    c.keep(full, ref)
    c.close()
    d1.stop()                       # bm0 stored, clean
    d2 = daemon_factory()
    c.attach(d2)
    c.write(ROUNDS[0])
    c.nbd.h.flush()
    d2.send_signal(signal.SIGKILL)
    d2.wait()
    d2.check(expect_rc=-signal.SIGKILL)

    d3 = daemon_factory()
    c.attach(d3)
    qmp = c.qmp
    info = [b for b in node_bitmaps(qmp, 'src') if b.get('name') == 'bm0']
    assert len(info) == 1, info
    path, node = c.add_target('inc.qcow2', full)
    if info[0].get('inconsistent'):
        for sync, mode in (('incremental', None), ('bitmap', 'never'),
                           ('bitmap', 'always'), ('full', 'on-success'),
                           ('top', 'always')):
            args = {'job-id': 'j', 'device': 'src', 'target': node,
                    'sync': sync, 'bitmap': 'bm0'}
            if mode:
                args['bitmap-mode'] = mode
            with pytest.raises(QMPError) as e:
                qmp.execute('blockdev-backup', args)
            assert e.value.desc == \
                "Bitmap 'bm0' is inconsistent and cannot be used", args
        assert qmp.execute('query-block-jobs') == []
        qmp.execute('block-dirty-bitmap-remove', node='src', name='bm0')
        ref = c.model.snapshot()
        qmp.execute('transaction', actions=bm0_then_full(
            'block-dirty-bitmap-add', 'full2', node,
            bitmap={'persistent': True}))
        wait_null(qmp, 'full2')
        qmp.execute('blockdev-del', node_name=node)
        rebase(path, full)
    else:
        assert info[0]['count'] >= len(bits_of(ROUNDS[0])) * GRAN, info
        ref, done = c.backup(node, 'incremental', 'inc', bitmap='bm0')
        assert 'error' not in done
        assert data_granules(path, depth=0) >= bits_of(ROUNDS[0])
    c.keep(path, ref)
    assert_bitmap(qmp, 'src', 'bm0', set(), SIZE)
    c.close()
    c.verify()


@pytest.mark.timeout(120)
def test_incremental_under_concurrent_writes(daemon):
    """Two NBD clients write 4 KiB pieces at random places (one the even
    granules, one the odd) all through a throttled incremental: the
    bitmap afterwards is exactly the granules they wrote, and the backup
    holds every dirty cluster as it was when the job started."""
    import random
    import threading
    size = 64 * MiB
    c = BackupChain(daemon, size=size)
    qmp = c.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0')
    rnd = random.Random(7)
    nbits = size // GRAN
    first = set(rnd.sample(range(nbits), 160))
    for g in sorted(first):
        c.nbd.write(g * GRAN + rnd.randrange(GRAN - 512), pattern(g, 512))
    assert_bitmap(qmp, 'src', 'bm0', first, size)
    path, node = c.add_target('inc.qcow2')
    ref = c.model.snapshot()
    qmp.execute('blockdev-backup', {'job-id': 'inc', 'device': 'src',
                                    'target': node, 'sync': 'incremental',
                                    'bitmap': 'bm0', 'speed': 4 * MiB})
    stop, errors = threading.Event(), []
    written = [set(), set()]
    done_writes = [0, 0]

    def writer(parity):
        try:
            w = NbdWriter(c.daemon.socket_path('nbd.sock'), 'src', c.model)
            r = random.Random(parity)
            while not stop.is_set():
                g = r.randrange(nbits // 2) * 2 + parity
                off = g * GRAN + r.randrange(GRAN // 4096) * 4096
                written[parity] |= w.write(off, pattern(g + 99, 4096))
                done_writes[parity] += 1
            w.close()
        except Exception as e:      # reported by the test
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    try:
        ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=90)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert 'error' not in ev['data'], ev
    assert min(done_writes) > 10, done_writes
    wait_null(qmp, 'inc')
    qmp.execute('blockdev-del', node_name=node)
    assert_bitmap(qmp, 'src', 'bm0', written[0] | written[1], size)
    c.close()
    got = read_image(path, 'qcow2', c.dir)
    assert data_granules(path) == first
    for g in range(nbits):
        want = ref[g * GRAN:(g + 1) * GRAN] if g in first else bytes(GRAN)
        assert got[g * GRAN:(g + 1) * GRAN] == want, g
    qmp.execute('blockdev-del', node_name='src')
    with open(c.src, 'rb') as f:
        assert f.read() == c.model.snapshot()
