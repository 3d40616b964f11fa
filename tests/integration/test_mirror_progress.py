"""Mirror progress on a sparse source, as qemu-storage-daemon 7.2 counts it.

qsd writes the whole target for sync=full (blockdev-mirror, and
drive-mirror onto an existing image) and counts the whole disk in the
job's progress, unless it can zero the target by unmapping (the target, or
for drive-mirror the source, opened with discard=unmap): then only what the
source allocates.  The file runs unchanged against qsd.
"""

import os

import pytest

from bjtest import qemu_img, qemu_io

MiB = 1 << 20
SIZE = 64 * MiB


@pytest.fixture
def imgs(workdir):
    d = str(workdir)
    src, tgt = os.path.join(d, 'src.qcow2'), os.path.join(d, 'tgt.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', src, str(SIZE))
    qemu_io('-f', 'qcow2', '-c', 'write -P 1 0 1M', '-c',
            'write -P 2 40M 64k', src)
    qemu_img('create', '-q', '-f', 'qcow2', tgt, str(SIZE))
    return src, tgt


def run_to_ready(q, cmd, args, **tgt_opts):
    q.execute(cmd, args)
    ev = q.wait_event('BLOCK_JOB_READY')
    job = q.execute('query-jobs')[0]
    q.execute('block-job-complete', device=args['job-id'])
    done = q.wait_event('BLOCK_JOB_COMPLETED')
    assert 'error' not in done['data']
    return ev['data'], job, done['data']


def add(q, node, path, **opts):
    q.execute('blockdev-add', driver='qcow2', **{'node-name': node},
              file={'driver': 'file', 'filename': path}, **opts)


@pytest.mark.parametrize('discard,total', [('ignore', SIZE),
                                           ('unmap', MiB + 64 * 1024)])
def test_blockdev_mirror_counts_like_qsd(daemon, imgs, discard, total):
    src, tgt = imgs
    q = daemon.qmp
    add(q, 'src', src)
    add(q, 'tgt', tgt, discard=discard)
    ready, job, done = run_to_ready(q, 'blockdev-mirror', {
        'job-id': 'm', 'device': 'src', 'target': 'tgt', 'sync': 'full'})
    assert (ready['len'], ready['offset']) == (total, total)
    assert (job['current-progress'], job['total-progress']) == (total, total)
    assert (done['len'], done['offset']) == (total, total)
    q.execute('blockdev-del', **{'node-name': 'tgt'})
    q.execute('blockdev-del', **{'node-name': 'src'})
    qemu_img('compare', '-q', src, tgt)
    qemu_img('check', '-q', tgt)


def test_drive_mirror_existing_counts_the_disk(daemon, imgs):
    src, tgt = imgs
    q = daemon.qmp
    add(q, 'src', src)
    ready, job, done = run_to_ready(q, 'drive-mirror', {
        'job-id': 'm', 'device': 'src', 'target': tgt, 'sync': 'full',
        'format': 'qcow2', 'mode': 'existing'})
    assert (ready['len'], ready['offset']) == (SIZE, SIZE)
    assert job['total-progress'] == SIZE
    q.execute('blockdev-del', **{'node-name': 'src'})
    qemu_img('compare', '-q', src, tgt)


def test_sync_top_counts_what_top_allocates(daemon, imgs, workdir):
    src, _ = imgs
    top = os.path.join(str(workdir), 'top.qcow2')
    tgt = os.path.join(str(workdir), 'tgt-top.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-b', src, '-F', 'qcow2', top)
    qemu_io('-f', 'qcow2', '-c', 'write -P 3 8M 128k', top)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', src, '-F', 'qcow2', tgt)
    q = daemon.qmp
    add(q, 'top', top)
    add(q, 'tgt', tgt, backing=None)
    ready, job, _ = run_to_ready(q, 'blockdev-mirror', {
        'job-id': 'm', 'device': 'top', 'target': 'tgt', 'sync': 'top'})
    assert ready['len'] == 128 * 1024
    assert job['total-progress'] == 128 * 1024
