"""blockdev-mirror: bytes (qemu-img compare), events against the golden
recordings (auto and manual), sync modes, the pivot, cancel in READY (soft,
force, job-cancel), argument errors, drive-mirror.

Source (64 MiB raw): pattern 1 @ 0-8M, 2 @ 16-20M, zeroes written @ 24-25M,
the rest a hole.  Targets are qcow2 made with qemu-img create.
"""

import json
import os

import pytest

import copyjob
import golden
from bjtest import (QMPError, is_qsd, nbd_connect, nbd_export,
                   nbd_export_teardown, place_node, qemu_img, qemu_io,
                   wait_until)
from copyjob import Images, finish, node_names

MiB = 1 << 20
SIZE = 64 * MiB


# Every test that uses `daemon` twice: nodes in the main loop, then in an
# iothread (conftest.py, node_ctx).
pytestmark = pytest.mark.ctx_variants


@pytest.fixture
def imgs(workdir):
    return Images(workdir)


def start_mirror(qmp, mode='auto', jid='mirror0', **extra):
    copyjob.start(qmp, 'blockdev-mirror', mode, jid, **extra)


def start_ready_mirror(qmp):
    """Starts mirror0 (auto) and waits until it is READY; returns its
    Recorder."""
    rec = golden.Recorder(qmp, 'mirror0')
    start_mirror(qmp)
    rec.wait('BLOCK_JOB_READY')
    return rec


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_mirror_ready_complete(daemon, imgs, mode):
    qmp = daemon.qmp
    imgs.add(qmp)
    rec = golden.Recorder(qmp, 'mirror0')
    start_mirror(qmp, mode)
    rec.wait('BLOCK_JOB_READY')
    j = qmp.execute('query-block-jobs')[0]
    assert (j['type'], j['ready'], j['status']) == ('mirror', True, 'ready')
    assert j['offset'] == j['len']
    qmp.execute('block-job-complete', device='mirror0')
    finish(qmp, rec, mode)
    golden.assert_matches('mirror-ready-complete.%s' % mode, rec.events)
    # the filter is gone; both nodes remain
    assert not any(n['drv'] == 'mirror_top' for n in
                   qmp.execute('query-named-block-nodes', flat=True))
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    qemu_img('check', '-q', imgs.tgt)
    imgs.compare()


@pytest.mark.timeout(120)
def test_mirror_target_stays_sparse(daemon, imgs):
    qmp = daemon.qmp
    imgs.add(qmp)
    rec = start_ready_mirror(qmp)
    qmp.execute('block-job-complete', device='mirror0')
    rec.wait_status('null')
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    imgs.compare()
    m = json.loads(qemu_img('map', '--output=json', '-f', 'qcow2',
                            imgs.tgt).stdout)
    data = sum(e['length'] for e in m if e['data'])
    # 12 MiB of data; the hole and the zeroes are not data on the target
    assert data == 12 * MiB, m


@pytest.mark.timeout(120)
def test_mirror_pivot_moves_export(daemon, imgs):
    """An export on the source follows the pivot onto the target."""
    pytest.importorskip('nbd')
    qmp = daemon.qmp
    imgs.add(qmp)
    sock = nbd_export(daemon, 'src', 'x')
    rec = start_ready_mirror(qmp)
    h = nbd_connect(sock, 'x')
    h.pwrite(b'\x07' * 65536, 40 * MiB)
    qmp.execute('block-job-complete', device='mirror0')
    rec.wait_status('null')
    h.pwrite(b'\x08' * 65536, 50 * MiB)    # lands on the target only
    nbd_export_teardown(qmp, h, 'tgt', 'src')
    qemu_io('-f', 'qcow2', '-c', 'read -P 7 40M 64k', '-c',
            'read -P 8 50M 64k', imgs.tgt)
    qemu_io('-f', 'raw', '-c', 'read -P 7 40M 64k', '-c',
            'read -P 0 50M 64k', imgs.src)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('how', ['soft', 'force', 'job-cancel'])
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_mirror_cancel_ready(daemon, imgs, how, mode):
    qmp = daemon.qmp
    imgs.add(qmp)
    rec = golden.Recorder(qmp, 'mirror-r')
    start_mirror(qmp, mode, jid='mirror-r')
    rec.wait('BLOCK_JOB_READY')
    if how == 'job-cancel':
        qmp.execute('job-cancel', id='mirror-r')
    else:
        qmp.execute('block-job-cancel', device='mirror-r',
                    force=(how == 'force'))
    finish(qmp, rec, mode, cancelled=(how != 'soft'))
    golden.assert_matches('cancel-mirror-ready-%s.%s' % (how, mode),
                          rec.events)
    # no pivot: the source keeps its parents-free state, target is a copy
    assert not any(n['drv'] == 'mirror_top' for n in
                   qmp.execute('query-named-block-nodes', flat=True))
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    imgs.compare()


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_mirror_cancel_running(daemon, imgs, mode):
    qmp = daemon.qmp
    imgs.add(qmp)
    rec = golden.Recorder(qmp, 'mirror0')
    start_mirror(qmp, mode, speed=1024)
    wait_until(lambda: qmp.execute('query-block-jobs')[0]['offset'] > 0,
               what='progress')
    qmp.execute('block-job-cancel', device='mirror0')
    finish(qmp, rec, mode, cancelled=True)
    golden.assert_matches('cancel-mirror-running.%s' % mode, rec.events)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('sync', ['top', 'none'])
def test_mirror_sync_top_none(daemon, workdir, sync):
    """top copies only the top layer (the target shares the backing file);
    none copies only what clients write during the job."""
    qmp = daemon.qmp
    d = str(workdir)
    base, top, tgt = (os.path.join(d, n) for n in
                      ('base.qcow2', 'top.qcow2', 'tgt.qcow2'))
    qemu_img('create', '-q', '-f', 'qcow2', base, SIZE)
    qemu_io('-c', 'write -P 1 0 8M', base)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F',
             'qcow2', top)
    qemu_io('-c', 'write -P 2 4M 2M', top)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F',
             'qcow2', tgt)
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'src',
                                 'file': {'driver': 'file',
                                          'filename': top}})
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'tgt',
                                 'file': {'driver': 'file',
                                          'filename': tgt}})
    rec = golden.Recorder(qmp, 'mirror0')
    start_mirror(qmp, sync=sync)
    rec.wait('BLOCK_JOB_READY')
    qmp.execute('block-job-complete', device='mirror0')
    rec.wait_status('null')
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    m = json.loads(qemu_img('map', '--output=json', tgt).stdout)
    own = sum(e['length'] for e in m if e['depth'] == 0 and e['data'])
    if sync == 'top':
        assert own == 2 * MiB
        qemu_img('compare', '-q', top, tgt)
    else:
        assert own == 0


@pytest.mark.timeout(60)
def test_mirror_argument_errors(daemon, imgs, workdir):
    qmp = daemon.qmp
    imgs.add(qmp)
    other = os.path.join(str(workdir), 'other.raw')
    qemu_img('create', '-q', '-f', 'raw', other, SIZE)
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'other',
                                 'file': {'driver': 'file',
                                          'filename': other}})
    base = {'job-id': 'j', 'device': 'src', 'target': 'tgt', 'sync': 'full'}
    cases = [
        ({'device': 'nope'}, "Cannot find device='nope' nor node-name='nope'"),
        ({'target': 'zz'}, "Cannot find device='zz' nor node-name='zz'"),
        ({'target': 'src'}, "Can't mirror node into itself"),
        ({'granularity': 1000}, "Parameter 'granularity' expects a power "
                                "of 2"),
        ({'granularity': 256}, "Parameter 'granularity' expects a value in "
                               "range [512B, 64MB]"),
        ({'granularity': 128 * MiB}, "Parameter 'granularity' expects a "
                                     "value in range [512B, 64MB]"),
        ({'buf-size': -5}, "Invalid parameter 'buf-size'"),
        ({'sync': 'incremental'}, "Sync mode 'incremental' not supported"),
        ({'sync': 'bitmap'}, "Sync mode 'bitmap' not supported"),
        ({'replaces': 'nope'}, "Failed to find node with node-name='nope'"),
        ({'copy-mode': 'bad'}, "Parameter 'copy-mode' does not accept "
                               "value 'bad'"),
        ({'job-id': None}, "Invalid job ID ''"),
    ]
    for extra, desc in cases:
        args = dict(base, **extra)
        args = {k: v for k, v in args.items() if v is not None}
        with pytest.raises(QMPError) as e:
            qmp.execute('blockdev-mirror', args)
        assert e.value.desc == desc, extra
    assert qmp.execute('query-jobs') == []
    assert not any(n['drv'] == 'mirror_top' for n in
                   qmp.execute('query-named-block-nodes', flat=True))


@pytest.mark.timeout(60)
def test_mirror_different_sizes_fails(daemon, imgs, workdir):
    """qemu-storage-daemon starts the job and fails it in the body."""
    qmp = daemon.qmp
    imgs.add(qmp)
    small = os.path.join(str(workdir), 'small.raw')
    qemu_img('create', '-q', '-f', 'raw', small, 1 * MiB)
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'small',
                                 'file': {'driver': 'file',
                                          'filename': small}})
    qmp.execute('blockdev-mirror', {'job-id': 'j', 'device': 'src',
                                    'target': 'small', 'sync': 'full'})
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=30)
    assert ev['data']['error'] == ('Source and target image have different '
                                   'sizes')
    assert not any(n['drv'] == 'mirror_top' for n in
                   qmp.execute('query-named-block-nodes', flat=True))


@pytest.mark.timeout(60)
def test_mirror_busy_nodes(daemon, imgs):
    qmp = daemon.qmp
    imgs.add(qmp)
    rec = start_ready_mirror(qmp)
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-del', node_name='src')
    assert 'is busy' in e.value.desc or 'in use' in e.value.desc
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-mirror', {'job-id': 'm1', 'device': 'src',
                                        'target': 'tgt', 'sync': 'full'})
    # The mirror's filter sits above src: not a root node any more.
    assert e.value.desc == "Need a root block node"
    qmp.execute('block-job-cancel', device='mirror0', force=True)
    rec.wait_status('null')


@pytest.mark.timeout(60)
def test_mirror_filter_node_name(daemon, imgs):
    qmp = daemon.qmp
    imgs.add(qmp)
    rec = golden.Recorder(qmp, 'mirror0')
    start_mirror(qmp, **{'filter-node-name': 'mtop'})
    rec.wait('BLOCK_JOB_READY')
    nodes = {n['node-name']: n for n in
             qmp.execute('query-named-block-nodes', flat=True)}
    assert nodes['mtop']['drv'] == 'mirror_top'
    qmp.execute('block-job-complete', device='mirror0')
    rec.wait_status('null')
    assert 'mtop' not in node_names(qmp)


@pytest.mark.timeout(60)
def test_drive_mirror(daemon, imgs, workdir):
    qmp = daemon.qmp
    imgs.add(qmp)
    dst = os.path.join(str(workdir), 'dm.raw')
    rec = golden.Recorder(qmp, 'd0')
    qmp.execute('drive-mirror', {'job-id': 'd0', 'device': 'src',
                                 'target': dst, 'format': 'raw',
                                 'sync': 'full', 'node-name': 'dm'})
    rec.wait('BLOCK_JOB_READY')
    qmp.execute('block-job-complete', device='d0')
    rec.wait_status('null')
    qemu_img('compare', '-q', '-U', '-f', 'raw', '-F', 'raw', imgs.src, dst)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('sync', ['full', 'top'])
def test_drive_mirror_creates_qcow2(daemon, workdir, sync):
    """mode absolute-paths (the default) creates a qcow2 target too; for
    sync top its backing file is the source's backing image, and only what
    is above it is copied.  After the pivot the chain reads as the
    source's did (checked against qsd's way: qemu-img compare)."""
    d = str(workdir)
    base = os.path.join(d, 'base.qcow2')
    top = os.path.join(d, 'top.qcow2')
    dst = os.path.join(d, 'dm.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, str(16 << 20))
    qemu_io('-c', 'write -P 0x11 0 4M', base)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top)
    qemu_io('-c', 'write -P 0x22 1M 1M', top)
    ref = os.path.join(d, 'ref.qcow2')
    qemu_img('convert', '-O', 'qcow2', top, ref)
    qmp = daemon.qmp
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                 'file': {'driver': 'file',
                                          'filename': top}})
    place_node(qmp, 'top')
    qmp.execute('drive-mirror', {'job-id': 'd0', 'device': 'top',
                                 'target': dst, 'format': 'qcow2',
                                 'sync': sync})
    qmp.wait_event('BLOCK_JOB_READY', timeout=30)
    qmp.execute('block-job-complete', device='d0')
    qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=30)
    qmp.execute('quit')
    daemon.wait(30)
    info = json.loads(qemu_img('info', '--output=json', dst).stdout)
    assert info['format'] == 'qcow2'
    if sync == 'top':
        assert info['backing-filename'] == base
        # only top's data is in the target itself
        m = json.loads(qemu_img('map', '--output=json', dst).stdout)
        assert [(e['start'], e['length']) for e in m
                if e['depth'] == 0 and e['data']] == [(1 << 20, 1 << 20)]
    else:
        assert 'backing-filename' not in info
    qemu_img('compare', '-q', ref, dst)


def test_complete_before_ready(daemon, imgs):
    """block-job-complete on a mirror still copying is refused by the verb
    table, in qemu's words, and the mirror goes on to READY."""
    qmp = daemon.qmp
    imgs.add(qmp)
    start_mirror(qmp, speed=1)      # one byte a second: never READY here
    qmp.wait_event('JOB_STATUS_CHANGE',
                   match={'data': {'status': 'running'}})
    with pytest.raises(QMPError) as e:
        qmp.execute('block-job-complete', device='mirror0')
    assert e.value.cls == 'GenericError'
    assert e.value.desc == ("Job 'mirror0' in state 'running' cannot accept "
                            "command verb 'complete'")
    qmp.execute('block-job-set-speed', device='mirror0', speed=0)
    qmp.wait_event('BLOCK_JOB_READY', timeout=60)
    qmp.execute('block-job-complete', device='mirror0')
    qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    imgs.compare()
