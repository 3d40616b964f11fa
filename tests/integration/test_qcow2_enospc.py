"""A qcow2 target on a full filesystem (issue 22 #9): a backup that fails
on ENOSPC with on-target-error=report leaves no leaked clusters, as with
qsd 7.2.

The filesystem is a small tmpfs (a real one: blkdebug cannot model "new
space fails, overwrites in place succeed").  Mounting needs root; without
it the test is skipped (and shown as skipped).  New L2 tables are written
when allocated, before the data that needs them (qcow2_prepare_l2_table):
before that, the tables were written back at close, on the full disk, and
every data cluster copied meanwhile leaked (641 in the red-team run).
"""

import os
import subprocess

import pytest

from bjtest import blockdev_add_image, qemu_img, qemu_io

MiB = 1 << 20


@pytest.fixture
def small_fs(workdir):
    mnt = str(workdir / 'small')
    os.mkdir(mnt)
    if os.geteuid() != 0:
        pytest.skip('mounting a tmpfs needs root')
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs',
                        mnt], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip('cannot mount a tmpfs: ' + r.stderr.strip())
    yield mnt
    subprocess.run(['umount', '-l', mnt], check=True)


@pytest.mark.timeout(120)
def test_backup_enospc_leaks_nothing(small_fs, daemon, workdir):
    src = str(workdir / 'src.raw')
    tgt = os.path.join(small_fs, 'tgt.qcow2')
    qemu_img('create', '-q', '-f', 'raw', src, str(64 * MiB))
    qemu_io('-f', 'raw', '-c', 'write -P 1 0 64M', src)
    qemu_img('create', '-q', '-f', 'qcow2', tgt, str(64 * MiB))
    qmp = daemon.qmp
    blockdev_add_image(qmp, 'raw', 'src', src)
    blockdev_add_image(qmp, 'qcow2', 'tgt', tgt)
    qmp.execute('blockdev-backup', {'job-id': 'b', 'device': 'src',
                                    'target': 'tgt', 'sync': 'full',
                                    'on-target-error': 'report'})
    done = qmp.wait_event('BLOCK_JOB_COMPLETED')['data']
    assert done['error'] == 'No space left on device'
    assert done['offset'] < done['len']
    qmp.execute('blockdev-del', node_name='tgt')
    r = qemu_img('check', '-f', 'qcow2', tgt, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'No errors were found on the image.' in r.stdout
    assert 'leaked' not in r.stdout + r.stderr
