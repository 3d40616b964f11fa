"""blockdev-mirror with small buffers copies everything, and a failure of
the flush before READY is handled under on-target-error (report fails
the job, ignore goes on), as in qsd 7.2.
"""

import os

from bjtest import qemu_img, qemu_io

MiB = 1 << 20
SIZE = 16 * MiB


def images(workdir):
    src = os.path.join(workdir, 'src.raw')
    tgt = os.path.join(workdir, 'tgt.raw')
    qemu_img('create', '-f', 'raw', src, str(SIZE))
    qemu_io('-f', 'raw', '-c', 'write -P 0x5a 0 %d' % SIZE, src)
    qemu_img('create', '-f', 'raw', tgt, str(SIZE))
    return src, tgt


def add(qmp, node, path, rule=None):
    f = {'driver': 'file', 'filename': path}
    if rule:
        f = {'driver': 'blkdebug', 'inject-error': [rule], 'image': f}
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': node,
                                 'file': f})


FLUSH_FAILS_ONCE = {'event': 'none', 'iotype': 'flush', 'once': True}


def test_mirror_small_buffers_copies_all(daemon, workdir):
    qmp = daemon.qmp
    src, tgt = images(workdir)
    add(qmp, 'src', src)
    add(qmp, 'tgt', tgt)
    qmp.execute('blockdev-mirror', job_id='m0', device='src', target='tgt',
                sync='full', buf_size=MiB)
    qmp.wait_event('BLOCK_JOB_READY', timeout=60)
    qmp.execute('block-job-complete', device='m0')
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
    assert 'error' not in ev['data'] and ev['data']['offset'] == SIZE
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', src, tgt)


def test_mirror_failed_flush_reports(daemon, workdir):
    """The target's flush before READY fails: the job fails with EIO
    under report."""
    qmp = daemon.qmp
    src, tgt = images(workdir)
    add(qmp, 'src', src)
    add(qmp, 'tgt', tgt, FLUSH_FAILS_ONCE)
    qmp.execute('blockdev-mirror', job_id='m0', device='src', target='tgt',
                sync='full', buf_size=MiB)
    err = qmp.wait_event('BLOCK_JOB_ERROR', timeout=60)['data']
    assert err['operation'] == 'write' and err['action'] == 'report'
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)['data']
    assert ev['error'] == 'Input/output error'
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')


def test_mirror_failed_flush_ignored(daemon, workdir):
    """Under ignore the error is reported once and the next flush before
    READY (which succeeds) lets the job become READY with all copied."""
    qmp = daemon.qmp
    src, tgt = images(workdir)
    add(qmp, 'src', src)
    add(qmp, 'tgt', tgt, FLUSH_FAILS_ONCE)
    qmp.execute('blockdev-mirror', job_id='m0', device='src', target='tgt',
                sync='full', buf_size=MiB, on_target_error='ignore')
    err = qmp.wait_event('BLOCK_JOB_ERROR', timeout=60)['data']
    assert err['operation'] == 'write' and err['action'] == 'ignore'
    qmp.wait_event('BLOCK_JOB_READY', timeout=60)
    qmp.execute('block-job-complete', device='m0')
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)['data']
    assert 'error' not in ev
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', src, tgt)
