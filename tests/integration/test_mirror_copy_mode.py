"""copy-mode auto (our extension) and block-job-change (qemu 8.2): a mirror
whose clients dirty the source faster than it copies turns write-blocking
by itself and converges; block-job-change does the same by hand; the
query reports the mode, the dirty bytes and rate, and the ETA; bjctl info
shows them.  Bytes are checked with qemu-img compare after the pivot.
"""

import os
import subprocess

import pytest

import bjtest
from bjtest import (nbd_export, nbd_export_teardown, nbd_connect, qemu_img,
                    qemu_io, wait_until)

pytestmark = [pytest.mark.blockjobd_only('copy-mode auto, block-job-change '
                                         'and the x- query members are '
                                         'ours'),
              pytest.mark.ctx_variants]

MiB = 1 << 20
SIZE = 64 * MiB


def images(d, tgt_fmt='qcow2'):
    return bjtest.filled_source_and_target(d, SIZE, tgt_fmt)


def add_nodes(qmp, src, tgt, tgt_fmt='qcow2'):
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                                 'file': {'driver': 'file',
                                          'filename': src}})
    qmp.execute('blockdev-add', {'driver': tgt_fmt, 'node-name': 'tgt',
                                 'file': {'driver': 'file',
                                          'filename': tgt}})
    bjtest.place_node(qmp, 'src')
    bjtest.place_node(qmp, 'tgt')


def Writer(sock):
    """An NBD client writing 64 KiB blocks at random offsets as fast as it
    can until stopped; the image it leaves is what the source must hold."""
    return bjtest.NbdRandomWriter(sock, 'src', 65536, SIZE, 7, 0x20, 200)


def job(qmp, jid='m'):
    return bjtest.query_block_job(qmp, jid)


def test_auto_turns_write_blocking_and_converges(daemon, tmp_path):
    """At 4 MiB/s a 64 MiB copy under a writer re-dirtying it at random
    never shrinks in background mode; auto switches within its window
    (3 samples a second apart) and then reaches READY."""
    src, tgt = images(tmp_path)
    qmp = daemon.qmp
    add_nodes(qmp, src, tgt)
    sock = nbd_export(daemon, 'src')
    w = Writer(sock)
    wait_until(lambda: w.count > 50, what='the writer writing')
    qmp.execute('blockdev-mirror', job_id='m', device='src', target='tgt',
                sync='full', speed=4 * MiB, copy_mode='auto')
    j = job(qmp)
    assert j['x-copy-mode'] == 'background' and j['x-copy-mode-auto']
    assert not j['actively-synced']
    qmp.wait_event('BLOCK_JOB_READY', timeout=60 * bjtest.timeout_factor(),
                   match={'data': {'device': 'm'}})
    j = job(qmp)
    assert j['x-copy-mode'] == 'write-blocking' and j['actively-synced']
    assert j['x-eta-seconds'] == 0
    assert w.count > 100
    h = w.finish()
    qmp.execute('block-job-complete', device='m')
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60,
                        match={'data': {'device': 'm'}})
    assert 'error' not in ev['data']
    nbd_export_teardown(qmp, h, 'tgt', 'src')
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', src, tgt)


def test_auto_without_clients_stays_background(daemon, tmp_path):
    src, tgt = images(tmp_path)
    qmp = daemon.qmp
    add_nodes(qmp, src, tgt)
    qmp.execute('blockdev-mirror', job_id='m', device='src', target='tgt',
                sync='full', copy_mode='auto')
    qmp.wait_event('BLOCK_JOB_READY', timeout=60,
                   match={'data': {'device': 'm'}})
    j = job(qmp)
    assert j['x-copy-mode'] == 'background' and not j['actively-synced']
    assert j['x-dirty-bytes'] == 0
    qmp.execute('block-job-cancel', device='m')
    qmp.wait_event('BLOCK_JOB_COMPLETED', match={'data': {'device': 'm'}})
    qmp.execute('blockdev-del', node_name='tgt')
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', src, tgt)


def test_block_job_change_to_write_blocking(daemon, tmp_path):
    """After the change a client's write is on the target before it is
    acknowledged, though the job itself copies at 1 byte a second."""
    src, tgt = images(tmp_path, 'raw')
    qmp = daemon.qmp
    add_nodes(qmp, src, tgt, 'raw')
    sock = nbd_export(daemon, 'src')
    qmp.execute('blockdev-mirror', job_id='m', device='src', target='tgt',
                sync='full', speed=1)
    errors = [
        ({'id': 'nosuch', 'type': 'mirror', 'copy-mode': 'write-blocking'},
         "Block job 'nosuch' not found"),
        ({'id': 'm', 'type': 'commit', 'copy-mode': 'write-blocking'},
         "Job 'm' is a mirror job, not commit"),
        ({'id': 'm', 'type': 'mirror', 'copy-mode': 'background'},
         "Changing copy mode to 'background' is not supported"),
        ({'id': 'm', 'type': 'mirror', 'copy-mode': 'auto'},
         "Changing copy mode to 'auto' is not supported"),
    ]
    for args, msg in errors:
        with pytest.raises(bjtest.QMPError) as e:
            qmp.execute('block-job-change', args)
        assert e.value.desc == msg
    assert job(qmp)['x-copy-mode'] == 'background'
    # background: a client's write reaches only the source for now
    h = nbd_connect(sock, 'src')
    h.pwrite(b'\x66' * 65536, 48 * MiB)
    qemu_io('-f', 'raw', '-U', '-r', '-c', 'read -P 0 48M 64K', tgt)
    qmp.execute('block-job-change', id='m', type='mirror',
                copy_mode='write-blocking')
    assert job(qmp)['x-copy-mode'] == 'write-blocking'
    with pytest.raises(bjtest.QMPError) as e:
        qmp.execute('block-job-change', id='m', type='mirror',
                    copy_mode='write-blocking')
    assert e.value.desc == "Job 'm' is already in copy mode 'write-blocking'"

    h.pwrite(b'\x77' * 65536, 32 * MiB)
    # acknowledged, so already on the target (the job copied its first
    # 1 MiB chunk only: the speed limit comes after it)
    qemu_io('-f', 'raw', '-U', '-r', '-c', 'read -P 0x77 32M 64K', tgt)
    assert job(qmp)['offset'] <= MiB
    qmp.execute('block-job-cancel', device='m', force=True)
    qmp.wait_event('BLOCK_JOB_CANCELLED', match={'data': {'device': 'm'}})
    nbd_export_teardown(qmp, h, 'tgt', 'src')


def test_copy_mode_arguments(daemon, tmp_path):
    """copy-mode on block-commit is for an active commit only; a backup job
    has no copy mode; an unknown value is refused as qsd refuses one."""
    base = os.path.join(str(tmp_path), 'base.qcow2')
    mid = os.path.join(str(tmp_path), 'mid.qcow2')
    top = os.path.join(str(tmp_path), 'top.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, SIZE)
    qemu_io('-c', 'write -P 0x31 0 4M', base)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid)
    qemu_io('-c', 'write -P 0x32 1M 1M', mid)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top)
    qemu_io('-c', 'write -P 0x33 2M 1M', top)
    ref = os.path.join(str(tmp_path), 'ref.qcow2')
    qemu_img('convert', '-O', 'qcow2', top, ref)
    qmp = daemon.qmp
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                 'file': {'driver': 'file',
                                          'filename': top}})
    bjtest.place_node(qmp, 'top')
    with pytest.raises(bjtest.QMPError) as e:
        qmp.execute('block-commit', job_id='c', device='top', top=mid,
                    copy_mode='auto')
    assert e.value.desc == ("'copy-mode' applies to an active commit only "
                            "('top' is not the active layer)")
    with pytest.raises(bjtest.QMPError) as e:
        qmp.execute('blockdev-mirror', job_id='x', device='top', target='top',
                    sync='full', copy_mode='sometimes')
    assert e.value.desc == ("Parameter 'copy-mode' does not accept value "
                            "'sometimes'")
    assert qmp.execute('query-block-jobs') == []
    # an active commit in write-blocking mode, pivoted
    qmp.execute('block-commit', job_id='c', device='top',
                copy_mode='write-blocking')
    assert job(qmp, 'c')['x-copy-mode'] == 'write-blocking'
    qmp.wait_event('BLOCK_JOB_READY', match={'data': {'device': 'c'}})
    assert job(qmp, 'c')['actively-synced']
    qmp.execute('block-job-complete', device='c')
    qmp.wait_event('BLOCK_JOB_COMPLETED', match={'data': {'device': 'c'}})
    qmp.execute('blockdev-del', node_name='top')
    qemu_img('compare', '-q', ref, base)


def test_bjctl_info_shows_the_copy_state(daemon, tmp_path):
    src, tgt = images(tmp_path)
    qmp = daemon.qmp
    add_nodes(qmp, src, tgt)
    qmp.execute('blockdev-mirror', job_id='m', device='src', target='tgt',
                sync='full', copy_mode='auto', speed=1)
    p = subprocess.run([bjtest.bjctl_bin(), '--socket', daemon.sock_path,
                        'info', 'm'], capture_output=True, text=True,
                       timeout=30, env=bjtest.sanitizer_env())
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert 'copy mode: background (auto)' in lines
    assert any(l.startswith('dirty:     ') and 'clients dirty' in l
               for l in lines)
    assert 'eta:       - (not converging)' in lines
    qmp.execute('block-job-cancel', device='m', force=True)
    qmp.wait_event('BLOCK_JOB_CANCELLED', match={'data': {'device': 'm'}})
