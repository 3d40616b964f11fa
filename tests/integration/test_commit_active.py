"""Active block-commit (top is the active layer): a mirror of type "commit"
into base.  READY, complete, the chain shrinks (the export now writes to
base), events against the golden recordings, soft cancel keeps the chain,
an NBD client writing throughout loses nothing.

Chain (64 MiB qcow2, every node added by blockdev-add, base writable):
    base:  1 @ 0-24M
    mid:   2 @ 8-32M, zeroes @ 44-46M
    top:   3 @ 20-28M
"""

import random

import pytest

import golden
from bjtest import (QMPError, is_qsd, nbd_connect, nbd_export,
                    nbd_export_teardown, nbd_random_write, qemu_img, qemu_io)
from chain import Chain
from copyjob import finish, in_mode

MiB = 1 << 20

# Every test that uses `daemon` twice: nodes in the main loop, then in an
# iothread (conftest.py, node_ctx).
pytestmark = pytest.mark.ctx_variants

SIZE = 64 * MiB


@pytest.fixture
def chain(workdir):
    return Chain(workdir, size=SIZE, base=['write -P 1 0 24M'])


def export(daemon, node):
    pytest.importorskip('nbd')
    return nbd_connect(nbd_export(daemon, node, name='x'), 'x')


def export_node(qmp):
    for e in qmp.execute('query-block-exports'):
        if e['id'] == 'e0':
            return e['node-name']
    return None


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_commit_active(daemon, chain, mode):
    qmp = daemon.qmp
    chain.add_all(qmp)
    h = export(daemon, 'top')
    rec = golden.Recorder(qmp, 'commit1')
    qmp.execute('block-commit', in_mode(mode, {'job-id': 'commit1',
                                               'device': 'top'}))
    rec.wait('BLOCK_JOB_READY')
    j = qmp.execute('query-block-jobs')[0]
    assert (j['type'], j['status']) == ('commit', 'ready')
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-del', node_name='top')
    assert 'busy' in e.value.desc or 'in use' in e.value.desc
    qmp.execute('block-job-complete', device='commit1')
    finish(qmp, rec, mode)
    golden.assert_matches('commit-active.%s' % mode, rec.events)
    # the export now writes to base: the chain is just base
    assert export_node(qmp) == 'base'
    h.pwrite(b'\x09' * 65536, 60 * MiB)
    nbd_export_teardown(daemon.qmp, h)
    chain.del_all(qmp)
    qemu_img('check', '-q', chain.base)
    qemu_io('-c', 'read -P 9 60M 64k', chain.base)
    qemu_io('-c', 'write -z 60M 64k', chain.base)
    chain.compare_ref(chain.base)


@pytest.mark.timeout(120)
def test_commit_active_soft_cancel_keeps_chain(daemon, chain):
    qmp = daemon.qmp
    chain.add_all(qmp)
    rec = golden.Recorder(qmp, 'commit1')
    qmp.execute('block-commit', {'job-id': 'commit1', 'device': 'top'})
    rec.wait('BLOCK_JOB_READY')
    qmp.execute('block-job-cancel', device='commit1')
    ev = rec.wait('BLOCK_JOB_COMPLETED')
    assert 'error' not in ev['data']
    rec.wait_status('null')
    chain.del_all(qmp)
    # top still reads the same; base now holds the whole image too
    chain.compare_ref(chain.top)
    chain.compare_ref(chain.base)


@pytest.mark.timeout(180)
def test_commit_active_under_nbd_writes(daemon, chain):
    qmp = daemon.qmp
    chain.add_all(qmp)
    h = export(daemon, 'top')
    with open(chain.ref, 'rb') as f:
        expect = bytearray(f.read())
    rnd = random.Random(5)
    rec = golden.Recorder(qmp, 'commit1')
    qmp.execute('block-commit', {'job-id': 'commit1', 'device': 'top'})
    n = 0
    completed = False
    while True:
        nbd_random_write(h, rnd, n, expect, SIZE)
        n += 1
        if n % 16 == 0:
            jobs = qmp.execute('query-block-jobs')
            if not jobs:
                break
            if jobs[0]['ready'] and not completed:
                qmp.execute('block-job-complete', device='commit1')
                completed = True
        assert n < 20000, qmp.execute('query-block-jobs')
    # some more after the pivot
    for i in range(32):
        off = 4096 * rnd.randrange(SIZE // 4096 - 1)
        h.pwrite(b'\xee' * 4096, off)
        expect[off:off + 4096] = b'\xee' * 4096
    rec.wait_status('null')
    golden.assert_matches('commit-active.auto', rec.events)
    assert export_node(qmp) == 'base'
    nbd_export_teardown(daemon.qmp, h)
    chain.del_all(qmp)
    with open(chain.ref, 'wb') as f:
        f.write(expect)
    qemu_img('check', '-q', chain.base)
    chain.compare_ref(chain.base)


def node_by_file(qmp, filename):
    for n in qmp.execute('query-named-block-nodes'):
        if n['drv'] == 'qcow2' and n['file'] == filename:
            return n
    raise AssertionError('no qcow2 node for %s' % filename)


@pytest.mark.parametrize('how', ['complete', 'cancel'])
def test_commit_active_into_header_opened_base(daemon, chain, how):
    """The common case: only the top is added, its chain opened from the
    headers, so base is read-only.  The commit reopens it read-write; after
    the pivot base is the active layer and stays writable, after a cancel
    it is a backing image again and read-only."""
    qmp = daemon.qmp
    qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'top',
        'file': {'driver': 'file', 'filename': chain.top}})
    assert node_by_file(qmp, chain.base)['ro'] is True
    h = export(daemon, 'top')
    qmp.execute('block-commit', {'job-id': 'c0', 'device': 'top'})
    qmp.wait_event('BLOCK_JOB_READY', timeout=60)
    assert node_by_file(qmp, chain.base)['ro'] is False
    if how == 'complete':
        qmp.execute('block-job-complete', device='c0')
        qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
        # The export now writes into base, which stays writable.
        h.pwrite(b'\x09' * 4096, 60 * MiB)
        assert node_by_file(qmp, chain.base)['ro'] is False
    else:
        qmp.execute('job-cancel', id='c0')
        qmp.wait_event('BLOCK_JOB_CANCELLED', timeout=60)
        # qemu-storage-daemon 7.2 leaves the base read-write here (its
        # restore runs while the job still writes it); we don't.
        if not is_qsd(daemon.binary):
            assert node_by_file(qmp, chain.base)['ro'] is True
    nbd_export_teardown(daemon.qmp, h)
    qmp.execute('blockdev-del', node_name='top')
    daemon.stop()
    qemu_img('check', chain.base)
    if how == 'complete':
        qemu_io('-c', 'read -P 9 60M 4k', chain.base)
        qemu_io('-c', 'write -z 60M 4k', chain.base)   # back to the reference
        qemu_img('compare', '-f', 'qcow2', '-F', 'raw', chain.base, chain.ref)
    else:
        qemu_img('compare', '-f', 'qcow2', '-F', 'raw', chain.top, chain.ref)
