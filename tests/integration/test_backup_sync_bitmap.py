"""blockdev-backup with a sync bitmap, focused cases (the sync x mode x
outcome matrix is test_backup_bitmap_matrix.py, the incremental chain
test_backup_incremental_chain.py): exactly the dirty clusters reach the
target and nothing else (qemu-img map and compare), the job's len at
other cluster sizes and granularities, what a client write costs during
the job, the refusals that the matrix does not reach (inconsistent,
another node, a job that fails while being set up), the order of the
bitmaps afterwards, a disabled bitmap, transactions that abort, and the
drained transaction pausing other jobs.  Every expectation was checked
against qemu-storage-daemon 7.2 (BLOCKJOBD_BIN=qemu-storage-daemon).
"""

import os
import signal

import pytest

from bitmaptest import (GRAN, ExportedSource, KiB, MiB, Model, NbdWriter,
                        assert_bitmap, bitmap_info, data_granules, granules,
                        node_bitmaps, pattern, start_export)
from bjtest import Daemon, QMPError, place_node, qemu_img, qemu_io

QSD = '/usr/bin/qemu-storage-daemon'

SIZE = 8 * MiB

# Every test that uses `daemon` twice: nodes in the main loop, then in an
# iothread (conftest.py, node_ctx).
pytestmark = pytest.mark.ctx_variants
FILL = 0x11


class Env(ExportedSource):
    """src: an 8 MiB qcow2, every cluster data, exported writable over
    NBD; tgt: a fresh qcow2 (tgt_cluster) of the same size."""

    def __init__(self, daemon, tgt_cluster=GRAN):
        self.qmp = daemon.qmp
        self.dir = daemon.workdir
        self.src = os.path.join(self.dir, 'src.qcow2')
        self.tgt = os.path.join(self.dir, 'tgt.qcow2')
        qemu_img('create', '-q', '-f', 'qcow2', self.src, SIZE)
        qemu_io('-f', 'qcow2', '-c', 'write -P %d 0 %d' % (FILL, SIZE),
                self.src)
        qemu_img('create', '-q', '-f', 'qcow2', '-o',
                 'cluster_size=%d' % tgt_cluster, self.tgt, SIZE)
        self.model = Model(SIZE, bytes([FILL]) * SIZE)
        for node, path in (('src', self.src), ('tgt', self.tgt)):
            self.qmp.execute('blockdev-add', {
                'driver': 'qcow2', 'node-name': node,
                'file': {'driver': 'file', 'filename': path}})
        # The 'iothread' variant: src there, tgt follows it with the job.
        place_node(self.qmp, 'src')
        self.export_src(daemon)

    def backup(self, **args):
        a = {'job-id': 'j', 'device': 'src', 'target': 'tgt'}
        a.update(args)
        return self.qmp.execute('blockdev-backup', a)

    def slow_backup(self, **args):
        """Throttled to a standstill, one worker, one cluster a chunk."""
        return self.backup(speed=1, **{'x-perf': {'max-workers': 1,
                                                  'max-chunk': GRAN}},
                           **args)

    def finish(self, jid='j'):
        self.qmp.execute('block-job-set-speed', device=jid, speed=0)
        ev = self.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60,
                                 match={'data': {'device': jid}})
        wait_null(self.qmp, jid)
        return ev['data']


def wait_null(qmp, jid):
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=60,
                   match={'data': {'id': jid, 'status': 'null'}})


def bits_of(writes, gran=GRAN):
    out = set()
    for _, off, length in writes:
        out |= granules(off, length, gran)
    return out


def names(qmp, node):
    return [b['name'] for b in node_bitmaps(qmp, node) if 'name' in b]


def backup_error(env, **args):
    with pytest.raises(QMPError) as e:
        env.backup(**args)
    assert e.value.cls == 'GenericError'
    return e.value.desc


def check_target_clusters(env, at_start, clusters, cluster=GRAN):
    """The target holds data exactly in these clusters, each as the source
    was when the job started, and reads zeroes elsewhere."""
    assert data_granules(env.tgt, gran=cluster) == clusters
    ref = bytearray(SIZE)
    for c in clusters:
        ref[c * cluster:(c + 1) * cluster] = \
            at_start[c * cluster:(c + 1) * cluster]
    path = os.path.join(env.dir, 'ref.raw')
    Model(SIZE, ref).save(path)
    qemu_img('compare', '-q', '-f', 'qcow2', '-F', 'raw', '-U', env.tgt,
             path)


# Dirty before the backup: clusters 0, 3, 9-10 (straddling), 100.
W1 = [(1, 0, 4096), (2, 3 * GRAN + 1000, 100), (3, 10 * GRAN - 512, 1024),
      (4, 100 * GRAN, GRAN)]


@pytest.mark.timeout(90)
def test_incremental_copies_exactly_the_dirty_clusters(daemon):
    """Only the bitmap's clusters are read and written; a client write to
    a clean cluster during the job costs no copy (the target stays
    unallocated there), one to a dirty cluster first saves its old data;
    both land in the bitmap afterwards; len = offset = the dirty bytes."""
    env = Env(daemon)
    q = env.qmp
    q.execute('block-dirty-bitmap-add', node='src', name='b0')
    env.write(W1)
    b1 = bits_of(W1)
    assert b1 == {0, 3, 9, 10, 100}
    assert_bitmap(q, 'src', 'b0', b1, SIZE)
    at_start = env.model.snapshot()
    env.slow_backup(sync='incremental', bitmap='b0')
    info = bitmap_info(q, 'src', 'b0')
    assert (info['busy'], info['recording'], info['count']) == \
        (True, True, len(b1) * GRAN)
    # Clean cluster 50, dirty cluster 100 (not copied yet: the job copies
    # in order, one cluster per chunk, at 1 byte/s).
    w2 = [(7, 50 * GRAN + 4096, 4096), (8, 100 * GRAN + 8192, 512)]
    env.write(w2)
    assert_bitmap(q, 'src', 'b0', b1, SIZE, what='frozen during the job')
    ev = env.finish()
    assert (ev['len'], ev['offset']) == (len(b1) * GRAN, len(b1) * GRAN)
    assert 'error' not in ev
    info = assert_bitmap(q, 'src', 'b0', {50, 100}, SIZE)
    assert (info['busy'], info['recording']) == (False, True)
    env.release()
    check_target_clusters(env, at_start, b1)


@pytest.mark.timeout(90)
def test_len_at_other_cluster_sizes(daemon):
    """With a 128 KiB target cluster the backup copies 128 KiB clusters:
    a 512 B granule dirties the cluster it is in; a 1 MiB granule
    dirties the 8 clusters it covers.  len is what is copied."""
    env = Env(daemon, tgt_cluster=128 * KiB)
    q = env.qmp
    c = 128 * KiB
    q.execute('block-dirty-bitmap-add', node='src', name='fine',
              granularity=512)
    q.execute('block-dirty-bitmap-add', node='src', name='coarse',
              granularity=MiB)
    env.write([(1, 130 * KiB, 512), (2, 3 * c - 512, 1024)])
    assert bitmap_info(q, 'src', 'fine')['count'] == 3 * 512
    at_start = env.model.snapshot()
    env.backup(sync='incremental', bitmap='fine')
    ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)['data']
    wait_null(q, 'j')
    assert (ev['len'], ev['offset']) == (3 * c, 3 * c)
    assert bitmap_info(q, 'src', 'fine')['count'] == 0
    # coarse has granule 0 dirty (both writes are in the first MiB) and
    # gets granule 5 by one byte.
    env.write([(3, 5 * MiB + 7, 1)])
    at_second = env.model.snapshot()
    assert_bitmap(q, 'src', 'coarse', {0, 5}, SIZE, MiB)
    env.backup(**{'job-id': 'k', 'sync': 'bitmap', 'bitmap': 'coarse',
                  'bitmap-mode': 'always'})
    ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)['data']
    wait_null(q, 'k')
    assert (ev['len'], ev['offset']) == (2 * MiB, 2 * MiB)
    assert_bitmap(q, 'src', 'coarse', set(), SIZE, MiB)
    assert_bitmap(q, 'src', 'fine', granules(5 * MiB + 7, 1, 512), SIZE,
                  512)
    env.release()
    # The second job rewrote the first MiB as it was then (the same
    # bytes) and added granule 5.
    clusters = set(range(0, 8)) | set(range(40, 48))
    check_target_clusters(env, at_second, clusters, cluster=c)
    assert at_start[:MiB] == at_second[:MiB]


@pytest.mark.timeout(90)
def test_bitmap_order_after_the_job(daemon):
    """After a synced end the bitmap counts as made when the job started
    (qemu's successor takes its name): bitmaps added during the job come
    before it in the query, older ones after.  A job that does not sync
    leaves the order as it was."""
    env = Env(daemon)
    q = env.qmp
    for name in ('b0', 'b1'):
        q.execute('block-dirty-bitmap-add', node='src', name=name)
    env.write(W1)
    assert names(q, 'src') == ['b1', 'b0']
    env.slow_backup(sync='incremental', bitmap='b0')
    q.execute('block-dirty-bitmap-add', node='src', name='b2')
    assert names(q, 'src') == ['b2', 'b1', 'b0']
    env.finish()
    assert names(q, 'src') == ['b2', 'b0', 'b1']
    # Cancelled: reclaimed in place.
    env.write(W1)
    env.slow_backup(sync='incremental', bitmap='b1')
    q.execute('block-dirty-bitmap-add', node='src', name='b3')
    q.execute('job-cancel', id='j')
    q.wait_event('BLOCK_JOB_CANCELLED', timeout=60)
    wait_null(q, 'j')
    assert names(q, 'src') == ['b3', 'b2', 'b0', 'b1']
    assert bitmap_info(q, 'src', 'b1')['busy'] is False
    env.release()


@pytest.mark.timeout(90)
@pytest.mark.parametrize('mode', ['on-success', 'never'])
def test_disabled_bitmap(daemon, mode):
    """A disabled bitmap can drive a backup; it stays disabled, so the
    writes during the job are not recorded: on success it is empty
    (on-success), or keeps its bits (never)."""
    env = Env(daemon)
    q = env.qmp
    q.execute('block-dirty-bitmap-add', node='src', name='d')
    env.write(W1)
    q.execute('block-dirty-bitmap-disable', node='src', name='d')
    env.slow_backup(sync='bitmap', bitmap='d', **{'bitmap-mode': mode})
    info = bitmap_info(q, 'src', 'd')
    assert (info['busy'], info['recording']) == (True, False)
    env.write([(9, 70 * GRAN, 4096)])
    ev = env.finish()
    assert ev['len'] == len(bits_of(W1)) * GRAN
    want = set() if mode == 'on-success' else bits_of(W1)
    info = assert_bitmap(q, 'src', 'd', want, SIZE)
    assert (info['busy'], info['recording']) == (False, False)
    env.release()


@pytest.mark.timeout(60)
def test_refusals_leave_the_bitmap_alone(daemon):
    """A bitmap of another node is not found; a job that fails after it
    was set up (negative speed) gives the bitmap back untouched; so does
    a transaction that aborts after preparing the backup, or whose second
    backup wants the same bitmap."""
    env = Env(daemon)
    q = env.qmp
    q.execute('block-dirty-bitmap-add', node='src', name='b0')
    q.execute('block-dirty-bitmap-add', node='tgt', name='other')
    env.write(W1)
    b1 = bits_of(W1)
    assert backup_error(env, sync='incremental', bitmap='other') == \
        "Bitmap 'other' could not be found"
    small = os.path.join(env.dir, 'small.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', small, SIZE // 2)
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'small',
                               'file': {'driver': 'file',
                                        'filename': small}})
    assert backup_error(env, sync='incremental', bitmap='b0',
                        target='small') == \
        'Source and target image have different sizes'
    assert backup_error(env, sync='incremental', bitmap='b0', speed=-1) == \
        "Parameter 'speed' expects a non-negative value"

    def untouched():
        info = assert_bitmap(q, 'src', 'b0', b1, SIZE)
        assert (info['busy'], info['recording']) == (False, True)
        assert q.execute('query-block-jobs') == []

    untouched()
    backup = {'type': 'blockdev-backup',
              'data': {'job-id': 'j', 'device': 'src', 'target': 'tgt',
                       'sync': 'incremental', 'bitmap': 'b0'}}
    with pytest.raises(QMPError) as e:
        q.execute('transaction', actions=[backup, {'type': 'abort',
                                                   'data': {}}])
    assert e.value.desc == 'Transaction aborted using Abort action'
    untouched()
    second = {'type': 'blockdev-backup',
              'data': dict(backup['data'], **{'job-id': 'k'})}
    with pytest.raises(QMPError) as e:
        q.execute('transaction', actions=[backup, second])
    assert e.value.desc == "Bitmap 'b0' is currently in use by another " \
        'operation and cannot be used'
    untouched()
    env.release()


@pytest.mark.timeout(60)
def test_inconsistent_bitmap_refused(daemon_factory, workdir):
    """A bitmap left in use by a killed writer is refused, after the
    mode check and before the sync=none check (qemu's order).  The killed
    writer is qemu-storage-daemon: blockjobd keeps the bitmaps of images
    it had open usable after a kill (docs/bitmaps.md)."""
    if not os.path.exists(QSD):
        pytest.skip('qemu-storage-daemon not installed')
    src = str(workdir / 'k.qcow2')
    tgt = str(workdir / 't.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', src, '4M')
    qemu_img('create', '-q', '-f', 'qcow2', tgt, '4M')
    qemu_img('bitmap', '--add', src, 'bm')
    args = ('--blockdev', 'driver=file,node-name=k-file,filename=%s' % src,
            '--blockdev', 'driver=qcow2,node-name=k,file=k-file')
    k = Daemon(workdir, args, binary=QSD).start()
    try:
        # opened read-write: the bitmap is marked in use in the image
        assert k.qmp.execute('query-named-block-nodes')
        k.send_signal(signal.SIGKILL)
        k.wait(30)
        k.check(expect_rc=None)
    finally:
        k.cleanup()
    d = daemon_factory(*args, '--blockdev',
                       'driver=file,node-name=t-file,filename=%s' % tgt,
                       '--blockdev', 'driver=qcow2,node-name=t,file=t-file')
    q = d.qmp
    base = {'job-id': 'j', 'device': 'k', 'target': 't', 'bitmap': 'bm'}

    def err(**args):
        with pytest.raises(QMPError) as e:
            q.execute('blockdev-backup', dict(base, **args))
        return e.value.desc

    msg = "Bitmap 'bm' is inconsistent and cannot be used"
    assert err(sync='incremental') == msg
    assert err(sync='full', **{'bitmap-mode': 'always'}) == msg
    assert err(sync='none', **{'bitmap-mode': 'always'}) == msg
    assert err(sync='bitmap') == \
        'Bitmap sync mode must be given when providing a bitmap'
    assert q.execute('query-block-jobs') == []


@pytest.mark.timeout(90)
@pytest.mark.main_ctx_only(
    'a plain bitmap command drains every node in an iothread '
    '(cmd-bitmap.c): a job there shows paused and running around it, '
    'where qemu-storage-daemon 7.2 shows nothing')
def test_transaction_pauses_running_jobs(daemon):
    """A transaction drains every node while it runs (so a bitmap added
    beside a backup sees the same instant): a job running elsewhere is
    seen paused and running again, as in qemu-storage-daemon 7.2."""
    env = Env(daemon)
    q = env.qmp
    other = os.path.join(env.dir, 'o.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', other, SIZE)
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'o',
                               'file': {'driver': 'file',
                                        'filename': other}})
    env.slow_backup(target='o', sync='full', **{'job-id': 'j1'})
    # Its start (created, running, paused, running) came before the reply.
    assert [e['data']['status'] for e in q.get_events('JOB_STATUS_CHANGE')] \
        == ['created', 'running', 'paused', 'running']
    q.execute('transaction', actions=[
        {'type': 'block-dirty-bitmap-add',
         'data': {'node': 'tgt', 'name': 'x'}}])
    for status in ('paused', 'running'):
        q.wait_event('JOB_STATUS_CHANGE', timeout=30,
                     match={'data': {'id': 'j1', 'status': status}})
    # The plain command does not drain.
    q.get_events()
    q.execute('block-dirty-bitmap-add', node='tgt', name='y')
    assert [e for e in q.get_events('JOB_STATUS_CHANGE')] == []
    q.execute('job-cancel', id='j1')
    q.wait_event('BLOCK_JOB_CANCELLED', timeout=60)
    wait_null(q, 'j1')
    env.release()


@pytest.mark.timeout(90)
@pytest.mark.parametrize('how', [
    'cancel',
    pytest.param('quit', marks=pytest.mark.blockjobd_only(
        'qemu-storage-daemon 7.2 stores the bitmap without the granules the '
        'job had copied when a quit ends it (observed: 2 of 3 granules '
        'kept); a cancelled backup must lose nothing'))])
def test_cancelled_backup_keeps_the_persistent_bitmap(daemon_factory,
                                                     workdir, how):
    """A running incremental backup ended by a cancel, or by a quit
    (which cancels it): its persistent bitmap gets the writes made during
    the job merged back and is stored so; the next start finds every
    bit."""
    src = str(workdir / 'p.qcow2')
    tgt = str(workdir / 'pt.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', src, SIZE)
    qemu_io('-f', 'qcow2', '-c', 'write -P 1 0 %d' % SIZE, src)
    qemu_img('create', '-q', '-f', 'qcow2', tgt, SIZE)
    args = ('--blockdev', 'driver=file,node-name=p-file,filename=%s' % src,
            '--blockdev', 'driver=qcow2,node-name=p,file=p-file',
            '--blockdev', 'driver=file,node-name=t-file,filename=%s' % tgt,
            '--blockdev', 'driver=qcow2,node-name=t,file=t-file')
    d = daemon_factory(*args)
    q = d.qmp
    q.execute('block-dirty-bitmap-add', node='p', name='keep',
              persistent=True)
    sock = d.socket_path('nbd.sock')
    start_export(q, sock, 'p')
    w = NbdWriter(sock, 'x')
    before = w.write(0, pattern(1, 4096)) | w.write(20 * GRAN, pattern(2, 10))
    q.execute('blockdev-backup', {'job-id': 'j', 'device': 'p',
                                  'target': 't', 'sync': 'incremental',
                                  'bitmap': 'keep', 'speed': 1,
                                  'x-perf': {'max-workers': 1,
                                             'max-chunk': GRAN}})
    during = w.write(30 * GRAN, pattern(3, 4096)) | \
        w.write(20 * GRAN + 100, pattern(4, 10))
    w.close()
    if how == 'cancel':
        q.execute('job-cancel', id='j')
        q.wait_event('BLOCK_JOB_CANCELLED', timeout=60)
        assert_bitmap(q, 'p', 'keep', before | during, SIZE)
        d.stop()
    else:
        q.execute('quit')
        d.wait(timeout=60)
        d.check()
    d = daemon_factory(*args)
    info = assert_bitmap(d.qmp, 'p', 'keep', before | during, SIZE)
    assert (info['busy'], info['recording'], info['persistent']) == \
        (False, True, True)
    d.stop()


@pytest.mark.timeout(60)
def test_len_counts_a_partial_last_cluster_whole(daemon):
    """A disk of 1,000,000 bytes: the last 64 KiB cluster is partial, and
    len/offset count it whole (full: 16 clusters; incremental with the
    first and the last cluster dirty: 2), as qemu-storage-daemon does."""
    q = daemon.qmp
    size = 1000000
    for n in ('s', 't1', 't2'):
        path = os.path.join(daemon.workdir, n + '.raw')
        qemu_img('create', '-q', '-f', 'raw', path, size)
        q.execute('blockdev-add', {'driver': 'raw', 'node-name': n,
                                   'file': {'driver': 'file',
                                            'filename': path}})
    q.execute('block-dirty-bitmap-add', node='s', name='b')
    sock = daemon.socket_path('nbd.sock')
    start_export(q, sock, 's')
    w = NbdWriter(sock, 'x')
    w.write(0, pattern(1, 10))
    w.write(size - 1000, pattern(2, 1000))
    w.close()
    for jid, t, args, n in (('a', 't1', {'sync': 'full'}, 16),
                            ('b', 't2', {'sync': 'incremental',
                                         'bitmap': 'b'}, 2)):
        q.execute('blockdev-backup', dict({'job-id': jid, 'device': 's',
                                           'target': t}, **args))
        ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)['data']
        assert (ev['device'], ev['len'], ev['offset']) == \
            (jid, n * GRAN, n * GRAN)
        wait_null(q, jid)
    q.execute('block-export-del', id='e0')
    q.wait_event('BLOCK_EXPORT_DELETED')


@pytest.mark.timeout(60)
def test_transaction_bitmap_actions_around_a_backup(daemon):
    """A bitmap added earlier in the transaction can drive its backup;
    an abort after them undoes both (the job gives the bitmap back before
    the add is undone); a remove after the backup finds it busy."""
    env = Env(daemon)
    q = env.qmp

    def add(name):
        return {'type': 'block-dirty-bitmap-add',
                'data': {'node': 'src', 'name': name}}

    def remove(name):
        return {'type': 'block-dirty-bitmap-remove',
                'data': {'node': 'src', 'name': name}}

    def backup(name, jid='j'):
        return {'type': 'blockdev-backup',
                'data': {'job-id': jid, 'device': 'src', 'target': 'tgt',
                         'sync': 'incremental', 'bitmap': name}}

    def refused(actions):
        with pytest.raises(QMPError) as e:
            q.execute('transaction', actions=actions)
        assert q.execute('query-block-jobs') == []
        return e.value.desc

    assert refused([add('x'), backup('x'), {'type': 'abort', 'data': {}}]) \
        == 'Transaction aborted using Abort action'
    assert names(q, 'src') == []
    q.execute('transaction', actions=[add('x'), backup('x')])
    ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)['data']
    assert (ev['len'], ev['offset']) == (0, 0)
    wait_null(q, 'j')
    env.write(W1)
    assert refused([backup('x', 'k'), remove('x')]) == \
        "Bitmap 'x' is currently in use by another operation and cannot " \
        "be used"
    info = assert_bitmap(q, 'src', 'x', bits_of(W1), SIZE)
    assert info['busy'] is False
    env.release()


@pytest.mark.timeout(60)
def test_readonly_bitmap(daemon_factory, workdir):
    """A persistent bitmap of an image opened read-only can drive a backup
    only with bitmap-mode never (the others would change it): refused
    after the x-perf checks and before the size check, as qemu does."""
    src = str(workdir / 'ro.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', src, SIZE)
    qemu_io('-f', 'qcow2', '-c', 'write -P 5 0 1M', src)
    qemu_img('bitmap', '--add', src, 'bm')
    # qemu-io loads the bitmap, marks it and stores it at close
    qemu_io('-f', 'qcow2', '-c', 'write -P 6 %d %d' % (GRAN + 512, GRAN),
            src)
    tgts = []
    for name, size in (('t', SIZE), ('small', SIZE // 2)):
        tgts += ['--blockdev', 'driver=qcow2,node-name=%s,file.driver=file,'
                 'file.filename=%s' % (name, workdir / (name + '.qcow2'))]
        qemu_img('create', '-q', '-f', 'qcow2', str(workdir /
                                                    (name + '.qcow2')), size)
    d = daemon_factory('--blockdev', 'driver=qcow2,node-name=ro,'
                       'read-only=on,file.driver=file,file.filename=%s' % src,
                       *tgts)
    q = d.qmp
    base = {'job-id': 'j', 'device': 'ro', 'target': 't', 'bitmap': 'bm'}

    def err(**args):
        with pytest.raises(QMPError) as e:
            q.execute('blockdev-backup', dict(base, **args))
        return e.value.desc

    msg = "Bitmap 'bm' is readonly and cannot be modified"
    assert err(sync='incremental') == msg
    assert err(sync='bitmap', **{'bitmap-mode': 'always'}) == msg
    assert err(sync='full', **{'bitmap-mode': 'on-success'}) == msg
    assert err(sync='incremental', **{'x-perf': {'max-chunk': -1}}) == \
        'max-chunk must be zero (which means no limit) or positive'
    assert err(sync='incremental', target='small') == msg
    assert err(sync='bitmap', target='small',
               **{'bitmap-mode': 'never'}) == \
        'Source and target image have different sizes'
    q.execute('blockdev-backup', dict(base, sync='bitmap',
                                      **{'bitmap-mode': 'never'}))
    ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)['data']
    assert (ev['len'], ev['offset']) == (2 * GRAN, 2 * GRAN)
    wait_null(q, 'j')
    info = assert_bitmap(q, 'ro', 'bm', {1, 2}, SIZE)
    assert (info['busy'], info['persistent']) == (False, True)
    d.stop()
    assert data_granules(str(workdir / 't.qcow2')) == {1, 2}
