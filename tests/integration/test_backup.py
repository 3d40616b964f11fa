"""blockdev-backup: bytes (the target is the source as it was when the job
started, checked with qemu-img compare against a copy taken before), events
against the golden recordings (auto and manual), cancel, I/O errors on the
source and the target with each policy (blkdebug), sync modes, argument
errors as qemu-storage-daemon 7.2 words them, the filter in the graph.

Source (64 MiB raw): pattern 1 @ 0-8M, 2 @ 16-20M, zeroes written @ 24-25M,
the rest a hole.  Targets are qcow2 made with qemu-img create.
"""

import json
import os
import threading

import pytest

import copyjob
import golden
from bjtest import (QMPError, blockdev_add_image, nbd_connect, nbd_export,
                   qemu_img, qemu_io, wait_until)
from copyjob import Images, finish, node_names

MiB = 1 << 20
SIZE = 64 * MiB

# Every test that uses `daemon` twice: nodes in the main loop, then in an
# iothread (conftest.py, node_ctx).
pytestmark = pytest.mark.ctx_variants


@pytest.fixture
def imgs(workdir):
    return Images(workdir, keep_ref=True)


def start_backup(qmp, mode='auto', jid='backup0', **extra):
    copyjob.start(qmp, 'blockdev-backup', mode, jid, **extra)


def release(qmp):
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_backup_full(daemon, imgs, mode):
    qmp = daemon.qmp
    imgs.add(qmp)
    before = node_names(qmp)
    rec = golden.Recorder(qmp, 'backup0')
    start_backup(qmp, mode)
    finish(qmp, rec, mode)
    golden.assert_matches('backup-full.' + mode, rec.events, raw=True)
    assert node_names(qmp) == before      # the filter is gone
    release(qmp)
    imgs.compare_ref()
    imgs.check()


def nbd_writer(sock, stop, errors, count):
    """Writes pattern 0x55 all over the disk until told to stop."""
    import nbd
    h = nbd.NBD()
    try:
        h.set_export_name('x')
        h.connect_unix(sock)
        buf = b'\x55' * 65536
        off = 0
        while not stop.is_set():
            h.pwrite(buf, off)
            count[0] += 1
            off = (off + 7 * 65536 + 4096) % (SIZE - 65536)
        h.flush()
        h.shutdown()
    except Exception as e:       # reported by the test
        errors.append(e)


@pytest.mark.timeout(180)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_backup_live(daemon, imgs, mode):
    """An NBD client writes all over the source during the backup: the
    target is still the image of the instant the job started."""
    pytest.importorskip('nbd')
    qmp = daemon.qmp
    imgs.add(qmp)
    sock = nbd_export(daemon, 'src', 'x')
    rec = golden.Recorder(qmp, 'backup0')
    stop, errors, count = threading.Event(), [], [0]
    # Throttled so that the writer surely overtakes the copy; the writer
    # starts after the job, so the reference is the image before it.
    start_backup(qmp, mode, speed=32 * MiB)
    t = threading.Thread(target=nbd_writer, args=(sock, stop, errors, count))
    t.start()
    try:
        wait_until(lambda: count[0] > 200 or errors, timeout=60,
                   what='writes during the backup')
        qmp.execute('block-job-set-speed', device='backup0', speed=0)
        finish(qmp, rec, mode)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    golden.assert_matches('backup-live.' + mode, rec.events)
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    release(qmp)
    imgs.check()
    imgs.compare_ref()
    # And the writes did land on the source.
    qemu_io('-f', 'raw', '-c', 'read -P 0x55 0 64k', imgs.src)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_backup_cancel(daemon, imgs, mode):
    qmp = daemon.qmp
    imgs.add(qmp)
    before = node_names(qmp)
    rec = golden.Recorder(qmp, 'backup0')
    start_backup(qmp, mode, speed=1 * MiB)
    rec.wait_status('running')
    qmp.execute('block-job-cancel', device='backup0')
    finish(qmp, rec, mode, cancelled=True)
    golden.assert_matches('cancel-backup-running.' + mode, rec.events)
    assert node_names(qmp) == before
    release(qmp)


def blkdebug_file(path, event, once):
    return {'driver': 'blkdebug',
            'inject-error': [{'event': event, 'errno': 5, 'once': once,
                              'sector': 4 * MiB // 512}],
            'image': {'driver': 'file', 'filename': path}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
@pytest.mark.parametrize('policy', ['report', 'stop', 'ignore'])
def test_backup_source_error(daemon, imgs, policy, mode):
    qmp = daemon.qmp
    jid = 'backup-' + policy
    imgs.add(qmp, src_file=blkdebug_file(imgs.src, 'read_aio',
                                         policy != 'report'))
    rec = golden.Recorder(qmp, jid)
    start_backup(qmp, mode, jid=jid, **{'on-source-error': policy})
    ev = rec.wait('BLOCK_JOB_ERROR')
    assert ev['data'] == {'device': jid, 'operation': 'read',
                          'action': policy}
    if policy == 'stop':
        rec.wait_status('paused')
        job = qmp.execute('query-block-jobs')[0]
        assert job['status'] == 'paused' and job['paused']
        assert job['io-status'] == 'failed'
        qmp.execute('block-job-resume', device=jid)
    finish(qmp, rec, mode, cancelled=policy == 'report')
    golden.assert_matches('error-backup-%s.%s' % (policy, mode), rec.events)
    release(qmp)
    if policy != 'report':
        imgs.compare_ref()
    imgs.check()


@pytest.mark.timeout(120)
@pytest.mark.parametrize('policy', ['report', 'stop', 'ignore'])
def test_backup_target_error(daemon, imgs, policy):
    """Target writes fail (blkdebug under the qcow2 target's file)."""
    qmp = daemon.qmp
    jid = 'b0'
    imgs.add(qmp, tgt_file=blkdebug_file(imgs.tgt, 'write_aio',
                                         policy != 'report'))
    rec = golden.Recorder(qmp, jid)
    start_backup(qmp, jid=jid, **{'on-target-error': policy})
    ev = rec.wait('BLOCK_JOB_ERROR')
    assert ev['data'] == {'device': jid, 'operation': 'write',
                          'action': policy}
    if policy == 'stop':
        rec.wait_status('paused')
        assert qmp.execute('query-block-jobs')[0]['io-status'] == 'failed'
        qmp.execute('block-job-resume', device=jid)
    rec.wait_status('null')
    done = [e for e in rec.events
            if e['event'] == 'BLOCK_JOB_COMPLETED'][0]['data']
    if policy == 'report':
        assert done['error'] == 'Input/output error'
        assert done['offset'] < done['len']
    else:
        assert 'error' not in done and done['offset'] == done['len']
    release(qmp)
    if policy != 'report':
        imgs.compare_ref()


@pytest.mark.timeout(120)
def test_backup_sync_none_keeps_old_data(daemon, imgs):
    """sync=none copies only what clients overwrite (fleecing)."""
    pytest.importorskip('nbd')
    qmp = daemon.qmp
    imgs.add(qmp)
    sock = nbd_export(daemon, 'src', 'x')
    rec = golden.Recorder(qmp, 'b0')
    start_backup(qmp, jid='b0', sync='none')
    h = nbd_connect(sock, 'x')
    h.pwrite(b'\x09' * 4096, 1 * MiB + 512)     # inside pattern 1
    h.pwrite(b'\x09' * 4096, 40 * MiB)           # in the hole
    h.shutdown()
    job = qmp.execute('query-block-jobs')[0]
    assert job['status'] == 'running' and job['len'] == SIZE
    qmp.execute('block-job-cancel', device='b0')
    rec.wait_status('null')
    assert [e['event'] for e in rec.events if
            e['event'].startswith('BLOCK_JOB')] == ['BLOCK_JOB_CANCELLED']
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    release(qmp)
    # The touched cluster holds the old data; untouched ones nothing.
    qemu_io('-f', 'qcow2', '-c', 'read -P 1 1M 64k', '-c',
            'read -P 0 40M 64k', '-c', 'read -P 0 2M 64k', imgs.tgt)
    out = qemu_img('map', '--output=json', '-f', 'qcow2', imgs.tgt)
    assert '"data": true' in out.stdout
    qemu_io('-f', 'raw', '-c', 'read -P 9 40M 4k', imgs.src)


@pytest.mark.timeout(120)
def test_backup_sync_top(daemon, workdir):
    """sync=top copies only what the top layer allocates."""
    d = str(workdir)
    base = os.path.join(d, 'base.qcow2')
    top = os.path.join(d, 'top.qcow2')
    tgt = os.path.join(d, 'tgt.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, SIZE)
    qemu_io('-f', 'qcow2', '-c', 'write -P 3 0 4M', base)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top)
    qemu_io('-f', 'qcow2', '-c', 'write -P 4 8M 1M', top)
    qemu_img('create', '-q', '-f', 'qcow2', tgt, SIZE)
    qmp = daemon.qmp
    blockdev_add_image(qmp, 'qcow2', 'src', top)
    blockdev_add_image(qmp, 'qcow2', 'tgt', tgt)
    rec = golden.Recorder(qmp, 'b0')
    start_backup(qmp, jid='b0', sync='top')
    rec.wait_status('null')
    release(qmp)
    qemu_io('-f', 'qcow2', '-c', 'read -P 4 8M 1M', '-c',
            'read -P 0 0 4M', tgt)


@pytest.mark.timeout(60)
def test_backup_argument_errors(daemon, imgs, workdir):
    """Words and order as qemu-storage-daemon 7.2 (observed)."""
    qmp = daemon.qmp
    imgs.add(qmp)
    small = os.path.join(str(workdir), 'small.raw')
    qemu_img('create', '-q', '-f', 'raw', small, 32 * MiB)
    blockdev_add_image(qmp, 'raw', 'small', small)
    base = {'device': 'src', 'target': 'tgt', 'job-id': 'j'}
    cases = [
        ({'device': 'src', 'target': 'tgt', 'sync': 'full'},
         "Invalid job ID ''"),
        (dict(base), "Parameter 'sync' is missing"),
        (dict(base, sync='incremental'),
         "must provide a valid bitmap name for 'incremental' sync mode"),
        (dict(base, sync='bitmap'),
         "must provide a valid bitmap name for 'bitmap' sync mode"),
        (dict(base, sync='full', **{'bitmap-mode': 'always'}),
         'Cannot specify bitmap sync mode without a bitmap'),
        (dict(base, sync='full', bitmap='bm0'),
         "Bitmap 'bm0' could not be found"),
        (dict(base, sync='incremental', bitmap='bm0',
              **{'bitmap-mode': 'never'}),
         "Bitmap sync mode must be 'on-success' when using sync mode "
         "'incremental'"),
        (dict(base, sync='full', target='src'),
         'Source and target cannot be the same'),
        (dict(base, sync='full', target='small'),
         'Source and target image have different sizes'),
        (dict(base, sync='full', device='nope'),
         "Cannot find device='nope' nor node-name='nope'"),
        (dict(base, sync='full', target='nope'),
         "Cannot find device='nope' nor node-name='nope'"),
        (dict(base, sync='full', **{'x-perf': {'max-workers': 0}}),
         'max-workers must be between 1 and 2147483647'),
        (dict(base, sync='full', **{'x-perf': {'max-chunk': -1}}),
         'max-chunk must be zero (which means no limit) or positive'),
        (dict(base, sync='full', **{'x-perf': {'max-chunk': 1000}}),
         'Required max-chunk (1000) is less than backup cluster size '
         '(65536)'),
        (dict(base, sync='full', target='small', compress=True),
         'Compression is not supported for this drive '),
    ]
    for args, msg in cases:
        with pytest.raises(QMPError) as e:
            qmp.execute('blockdev-backup', args)
        assert e.value.desc == msg, args
    # A negative speed fails after the job was created.
    rec = golden.Recorder(qmp, 'j')
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-backup', dict(base, sync='full', speed=-1))
    assert e.value.desc == "Parameter 'speed' expects a non-negative value"
    assert rec.statuses() == ['created', 'null']
    assert qmp.execute('query-block-jobs') == []


@pytest.mark.timeout(60)
def test_backup_filter_node_and_busy(daemon, imgs):
    qmp = daemon.qmp
    imgs.add(qmp)
    start_backup(qmp, jid='b0', speed=1, **{'filter-node-name': 'fl'})
    nodes = {n['node-name']: n for n in
             qmp.execute('query-named-block-nodes', flat=True)}
    assert nodes['fl']['drv'] == 'copy-before-write'
    # The target is taken; another backup of the source is fine elsewhere.
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-backup', {'job-id': 'b1', 'device': 'src',
                                        'target': 'tgt', 'sync': 'full'})
    assert e.value.desc == ("Node 'tgt' is busy: block device is in use by "
                            "block job: backup")
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('job-cancel', id='b0')
    qmp.wait_event('JOB_STATUS_CHANGE',
                   match=lambda ev: ev['data']['status'] == 'null')
    assert 'fl' not in node_names(qmp)
    release(qmp)


@pytest.mark.timeout(60)
def test_quit_with_running_backups(daemon, imgs):
    """quit while a throttled backup and a sync=none one run: both are
    cancelled, the filters go, the daemon exits cleanly (sanitizers
    quiet) and the images check clean."""
    qmp = daemon.qmp
    imgs.add(qmp)
    t2 = os.path.join(imgs.dir, 't2.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', t2, SIZE)
    blockdev_add_image(qmp, 'qcow2', 't2', t2)
    start_backup(qmp, jid='b0', speed=1 * MiB)
    start_backup(qmp, jid='b1', target='t2', sync='none')
    assert len(qmp.execute('query-block-jobs')) == 2
    qmp.execute('quit')
    daemon.wait(timeout=30)
    daemon.check()
    imgs.check()
    qemu_img('check', '-q', t2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('cluster', ['65536', '4096'])
def test_backup_compress(daemon, workdir, cluster):
    """compress=true into qcow2: compressed clusters that qemu-img check
    accepts and that read back as the source (incompressible clusters are
    stored plainly).  4 KiB target clusters: the backup copies 64 KiB
    pieces, each written as 16 compressed clusters."""
    qmp = daemon.qmp
    d = str(workdir)
    src = os.path.join(d, 'src.raw')
    tgt = os.path.join(d, 'tgt.qcow2')
    qemu_img('create', '-q', '-f', 'raw', src, SIZE)
    qemu_io('-f', 'raw', '-c', 'write -P 1 0 8M', '-c', 'write -P 2 16M 4M',
            src)
    with open(src, 'r+b') as f:              # incompressible data too
        f.seek(30 * MiB)
        f.write(os.urandom(2 * MiB))
    qemu_img('create', '-q', '-f', 'qcow2', '-o',
             'cluster_size=' + cluster, tgt, SIZE)
    blockdev_add_image(qmp, 'raw', 'src', src)
    blockdev_add_image(qmp, 'qcow2', 'tgt', tgt)
    rec = golden.Recorder(qmp, 'b0')
    start_backup(qmp, jid='b0', compress=True)
    rec.wait_status('null')
    assert 'error' not in [e for e in rec.events if e['event'] ==
                           'BLOCK_JOB_COMPLETED'][0]['data']
    release(qmp)
    qemu_img('check', '-q', tgt)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', src, tgt)
    # Compressed clusters are packed (test_backup_compress.py measures
    # how tightly): the patterned 12 MiB take little room on disk.
    if cluster == '65536':
        assert os.stat(tgt).st_blocks * 512 < 6 * MiB
    info = json.loads(qemu_img('check', '--output=json', tgt).stdout)
    cl = int(cluster)
    # The patterned clusters are compressed, the random ones are not.
    assert info['compressed-clusters'] >= 12 * MiB // cl
    assert info['compressed-clusters'] < info['allocated-clusters']
