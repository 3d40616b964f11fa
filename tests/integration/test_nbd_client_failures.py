"""A remote that dies or freezes never hangs us (docs/remote.md).

- reconnect-delay=0 (default): a dead server (SIGKILL) fails the mirror
  through its on-target-error policy at once; the daemon stays up.
- frozen server (SIGSTOP) with requests outstanding: block-job-cancel
  force=true, bjctl abort, quit and SIGTERM all end within the stall bound
  (5 s) plus slack, and the daemon serves its other exports meanwhile.
- reconnect-delay=N: requests wait while the server is away and resume
  when it comes back on the same socket (the mirror then completes
  byte-exact), or fail after N s.
"""

import os
import signal
import subprocess
import time

import pytest

from bjtest import (bjctl_bin, nbd_export, qemu_img, qemu_io,
                    timeout_factor)
from remote import nbd_opts, unexport

MiB = 1 << 20
# The stall bound of docs/remote.md, and slack for a busy machine.
STALL = 5
BOUND = STALL + 10 * timeout_factor()


def serve(remote, dst, server, addr=None):
    """dst served by qemu-nbd (one connection) or by nbdkit with
    multi-conn (four)."""
    if server == 'nbdkit':
        return remote.nbdkit(['file', dst], filters=['multi-conn'],
                             addr=addr)
    return remote.qemu_nbd(dst, addr=addr)


def setup_ready_mirror(daemon, remote, workdir, server='qemu-nbd',
                       **nbdopts):
    src = os.path.join(str(workdir), 's.raw')
    dst = os.path.join(str(workdir), 'd.raw')
    qemu_img('create', '-q', '-f', 'raw', src, '32M')
    qemu_io('-f', 'raw', '-c', 'write -P 0x11 0 4M', src)
    qemu_img('create', '-q', '-f', 'raw', dst, '32M')
    r = serve(remote, dst, server)
    qmp = daemon.qmp
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                                 'file': {'driver': 'file',
                                          'filename': src}})
    qmp.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'other',
                                 'read-zeroes': True})
    qmp.execute('blockdev-add', nbd_opts('tgt', r, **nbdopts))
    sock = nbd_export(daemon, 'src')
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e1',
                                     'node-name': 'other'})
    qmp.execute('blockdev-mirror', {'job-id': 'm', 'device': 'src',
                                    'target': 'tgt', 'sync': 'full'})
    qmp.wait_event('BLOCK_JOB_READY', match={'data': {'device': 'm'}})
    return r, src, dst, 'nbd+unix:///src?socket=%s' % sock, \
        'nbd+unix:///other?socket=%s' % sock


def test_dead_target_fails_job_promptly(daemon, remote, workdir):
    r, src, dst, uri, other = setup_ready_mirror(daemon, remote, workdir)
    r.kill()
    t0 = time.monotonic()
    # A guest write the mirror must copy to the dead target.
    qemu_io('-f', 'raw', '-c', 'write -P 0x22 1M 64k', uri)
    ev = daemon.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=30)
    took = time.monotonic() - t0
    assert ev['data']['error'] == 'Input/output error'
    assert took < 1.0 * timeout_factor(), took
    errs = daemon.qmp.get_events('BLOCK_JOB_ERROR')
    assert errs and errs[0]['data']['operation'] == 'write'
    # Still serving.
    qemu_io('-f', 'raw', '-c', 'read -P 0x22 1M 64k', uri)
    daemon.qmp.execute('blockdev-del', node_name='tgt')


def freeze_with_request_outstanding(daemon, r, uri):
    r.freeze()
    # The mirror copies this write to the frozen target: it stays
    # unanswered.
    qemu_io('-f', 'raw', '-c', 'write -P 0x33 2M 64k', uri)


@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 hangs on a frozen '
                             'NBD server')
def test_frozen_target_force_cancel_is_bounded(daemon, remote, workdir):
    r, src, dst, uri, other = setup_ready_mirror(daemon, remote, workdir)
    freeze_with_request_outstanding(daemon, r, uri)
    t0 = time.monotonic()
    daemon.qmp.execute('block-job-cancel', device='m', force=True)
    # Meanwhile the daemon serves its other export.
    qemu_io('-r', '-f', 'raw', '-c', 'read -P 0 0 64k', other)
    daemon.qmp.wait_event('BLOCK_JOB_CANCELLED', timeout=BOUND)
    assert time.monotonic() - t0 < BOUND
    daemon.qmp.execute('blockdev-del', node_name='tgt')


@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 hangs on a frozen '
                             'NBD server')
def test_frozen_target_bjctl_abort_is_bounded(daemon, remote, workdir):
    r, src, dst, uri, other = setup_ready_mirror(daemon, remote, workdir)
    freeze_with_request_outstanding(daemon, r, uri)
    t0 = time.monotonic()
    p = subprocess.run([bjctl_bin(), '--socket', daemon.sock_path, 'abort',
                        'm'], capture_output=True, text=True,
                       timeout=BOUND)
    assert time.monotonic() - t0 < BOUND
    # The job is gone, however it ended.
    assert daemon.qmp.execute('query-jobs') == [], p.stdout + p.stderr
    daemon.qmp.execute('blockdev-del', node_name='tgt')


@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 hangs on a frozen '
                             'NBD server')
@pytest.mark.parametrize('how', ['quit', 'sigterm'])
def test_frozen_target_shutdown_is_bounded(daemon, remote, workdir, how):
    r, src, dst, uri, other = setup_ready_mirror(daemon, remote, workdir)
    freeze_with_request_outstanding(daemon, r, uri)
    t0 = time.monotonic()
    if how == 'quit':
        daemon.qmp.execute('quit')
    else:
        daemon.send_signal(signal.SIGTERM)
    daemon.wait(BOUND)
    assert time.monotonic() - t0 < BOUND
    daemon.check()


@pytest.mark.parametrize('server', ['qemu-nbd', 'nbdkit'])
def test_reconnect_delay_resumes_and_mirror_completes(daemon, remote,
                                                      workdir, server):
    r, src, dst, uri, other = setup_ready_mirror(
        daemon, remote, workdir, server, **{'reconnect-delay': 30})
    r.kill()
    # Written while the server is away: the mirror's copy waits.
    qemu_io('-f', 'raw', '-c', 'write -P 0x44 3M 64k', uri)
    r2 = serve(remote, dst, server, addr=r.addr)
    daemon.qmp.execute('block-job-complete', device='m')
    ev = daemon.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
    assert 'error' not in ev['data']
    unexport(daemon.qmp)
    daemon.qmp.execute('blockdev-del', node_name='src')
    daemon.qmp.execute('blockdev-del', node_name='tgt')
    r2.stop()
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', src, dst)


def test_reconnect_delay_expires(daemon, remote, workdir):
    r, src, dst, uri, other = setup_ready_mirror(
        daemon, remote, workdir, **{'reconnect-delay': 1})
    r.kill()
    qemu_io('-f', 'raw', '-c', 'write -P 0x44 3M 64k', uri)
    ev = daemon.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=30)
    assert ev['data']['error'] == 'Input/output error'
    daemon.qmp.execute('blockdev-del', node_name='tgt')


def test_reconnect_resends_requests_outstanding_at_the_loss(daemon, remote,
                                                            workdir):
    r, src, dst, uri, other = setup_ready_mirror(
        daemon, remote, workdir, **{'reconnect-delay': 30})
    # The mirror's copy of this write is outstanding when the server dies.
    freeze_with_request_outstanding(daemon, r, uri)
    r.kill()
    r2 = serve(remote, dst, 'qemu-nbd', addr=r.addr)
    daemon.qmp.execute('block-job-complete', device='m')
    ev = daemon.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
    assert 'error' not in ev['data']
    unexport(daemon.qmp)
    daemon.qmp.execute('blockdev-del', node_name='src')
    daemon.qmp.execute('blockdev-del', node_name='tgt')
    r2.stop()
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', src, dst)
