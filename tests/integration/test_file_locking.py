"""Image locking of the `file` driver against qemu-img / qemu-io, both ways.

QEMU's layout, observed with qemu-io, qemu-img and qemu-storage-daemon 7.2:
open-file-description read locks on byte 100+i while permission i is held
and on byte 200+i while it is not shared (0 consistent read, 1 write,
2 write unchanged, 3 resize).  A node takes permissions only when a user
needs them: a file or raw node nobody uses holds no lock at all, a qcow2
node holds its file child for reading and writing (not sharing write), and
an NBD export holds what it needs.

Every expectation here was taken from qemu-storage-daemon 7.2; the file runs
unchanged against it (BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)).
Cases that need a driver or command blockjobd does not have yet are skipped
with the reason.
"""

import fcntl
import os
import struct
import subprocess

import pytest

import bjtest
from bjtest import QMPError

LOCK_FMT = 'hhqqi'


def lock_bytes(path):
    """Lock bytes held by anyone (seen from a fresh descriptor): a set of
    offsets among 100..103 and 200..203."""
    held = set()
    fd = os.open(path, os.O_RDONLY)
    try:
        for byte in list(range(100, 104)) + list(range(200, 204)):
            arg = struct.pack(LOCK_FMT, fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
            arg += b'\0' * (32 - len(arg))
            res = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, arg)
            if struct.unpack(LOCK_FMT, res[:struct.calcsize(LOCK_FMT)])[0] \
                    != fcntl.F_UNLCK:
                held.add(byte)
    finally:
        os.close(fd)
    return held


def make_qcow2(workdir, name='img.qcow2'):
    path = os.path.join(str(workdir), name)
    bjtest.qemu_img('create', '-f', 'qcow2', path, '1M')
    return path


class Holder:
    """qemu-io keeping an image open until stopped."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            ['qemu-io'] + list(args) + ['-c', 'sleep 100000'],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)

    def wait_for(self, path, byte):
        bjtest.wait_until(lambda: byte in lock_bytes(path)
                          or self.proc.poll() is not None,
                          timeout=30, what='qemu-io holding its locks')
        assert self.proc.poll() is None, self.proc.stdout.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture
def holder():
    held = []

    def start(path, *args, byte):
        h = Holder(*args, path)
        held.append(h)
        h.wait_for(path, byte)
        return h

    yield start
    for h in held:
        h.stop()


def add(qmp, opts):
    return qmp.execute('blockdev-add', opts)


def file_ref(path, **extra):
    ref = {'driver': 'file', 'filename': path}
    ref.update(extra)
    return ref


def add_qcow2(qmp, path, node_name='q', read_only=False, **file_extra):
    """Adds a qcow2 node over a file child; skips if the daemon has no
    qcow2 driver yet."""
    opts = {'driver': 'qcow2', 'node-name': node_name,
            'file': file_ref(path, **file_extra)}
    if read_only:
        opts['read-only'] = True
    try:
        add(qmp, opts)
    except QMPError as e:
        if "'qcow2'" in e.desc and 'Lock' not in e.desc \
                and 'lock' not in e.desc:
            pytest.skip('no qcow2 driver in this daemon yet: ' + e.desc)
        raise


def qemu_img_info(path, *extra):
    return bjtest.qemu_img('info', *extra, path, check=False)


def qemu_io_write(path, fmt):
    return bjtest.run('qemu-io', '-f', fmt, path, '-c', 'write 0 4k',
                      check=False)


# ---- what an unused node holds ----

def test_unused_nodes_hold_no_locks(daemon, workdir, holder):
    """file and raw nodes with no user take no permission, hence no lock:
    they open even while qemu-io writes the image, and leave it free."""
    img = make_qcow2(workdir)
    h = holder(img, '-f', 'qcow2', byte=101)
    theirs = lock_bytes(img)
    assert theirs == {100, 101, 103, 201, 203}

    add(daemon.qmp, {'driver': 'file', 'node-name': 'f', 'filename': img})
    add(daemon.qmp, {'driver': 'raw', 'node-name': 'r', 'file': 'f'})
    assert lock_bytes(img) == theirs
    h.stop()
    bjtest.wait_until(lambda: not lock_bytes(img), what='qemu-io gone')
    assert lock_bytes(img) == set()

    # With nobody else around, qemu may write the image we have open.
    p = qemu_io_write(img, 'qcow2')
    assert p.returncode == 0, p.stdout + p.stderr
    daemon.qmp.execute('blockdev-del', node_name='r')
    daemon.qmp.execute('blockdev-del', node_name='f')


def test_locking_options(daemon, workdir):
    """locking takes on/off/auto and nothing else."""
    img = make_qcow2(workdir)
    for i, value in enumerate(('on', 'off', 'auto')):
        add(daemon.qmp, {'driver': 'file', 'node-name': 'f%d' % i,
                         'filename': img, 'locking': value})
    desc = bjtest.blockdev_add_error(daemon.qmp, {
        'driver': 'file', 'node-name': 'g', 'filename': img,
        'locking': 'maybe'})
    assert desc == "Parameter 'locking' does not accept value 'maybe'"


# ---- qemu holds the image: we are refused ----

def test_qemu_writer_blocks_our_writer(daemon, workdir, holder):
    """qemu-io has the qcow2 image open read-write (it does not share
    write): a read-write qcow2 node on it is refused; locking=off opens."""
    img = make_qcow2(workdir)
    holder(img, '-f', 'qcow2', byte=101)

    try:
        add_qcow2(daemon.qmp, img)
    except QMPError as e:
        assert e.cls == 'GenericError'
        assert e.desc == 'Failed to get "write" lock'
    else:
        pytest.fail('blockdev-add went through a qemu-io write lock')
    # The failed add left no node behind.
    names = [n['node-name'] for n in
             daemon.qmp.execute('query-named-block-nodes')]
    assert 'q' not in names

    add_qcow2(daemon.qmp, img, node_name='q2', locking='off')


def test_qemu_reader_shares_reading(daemon, workdir, holder):
    """qemu-io has it open read-only (sharing everything): our read-only
    qcow2 node opens beside it."""
    img = make_qcow2(workdir)
    holder(img, '-r', '-f', 'qcow2', byte=100)
    add_qcow2(daemon.qmp, img, read_only=True)


# ---- we hold the image: qemu is refused ----

def test_our_writer_blocks_qemu(daemon, workdir):
    """A read-write qcow2 node holds its file for writing without sharing
    write: qemu-img info (which will not share write) and qemu-io write are
    refused with QEMU's words; qemu-img info -U still reads."""
    img = make_qcow2(workdir)
    add_qcow2(daemon.qmp, img)
    assert {100, 101, 201, 203} <= lock_bytes(img)

    p = qemu_img_info(img)
    assert p.returncode != 0
    assert 'Failed to get shared "write" lock' in p.stderr
    assert 'Is another process using the image [%s]?' % img in p.stderr

    p = qemu_io_write(img, 'qcow2')
    assert p.returncode != 0 or 'Failed' in p.stderr
    assert 'Failed to get "write" lock' in p.stderr + p.stdout

    p = qemu_img_info(img, '-U')
    assert p.returncode == 0, p.stderr
    assert 'file format: qcow2' in p.stdout

    # Gone with the node.
    daemon.qmp.execute('blockdev-del', node_name='q')
    assert lock_bytes(img) == set()
    p = qemu_img_info(img)
    assert p.returncode == 0, p.stderr


def test_our_reader_lets_qemu_read(daemon, workdir):
    """A read-only qcow2 node still keeps writers out, but qemu-img info
    (a reader) works beside it."""
    img = make_qcow2(workdir)
    add_qcow2(daemon.qmp, img, read_only=True)
    held = lock_bytes(img)
    assert 100 in held and 101 not in held and 201 in held

    p = qemu_img_info(img)
    assert p.returncode == 0, p.stderr
    p = qemu_io_write(img, 'raw')
    assert 'Failed to get "write" lock' in p.stderr + p.stdout


def test_locking_off_lets_qemu_in(daemon, workdir):
    """With locking=off our node takes no lock: qemu writes freely."""
    img = make_qcow2(workdir)
    add_qcow2(daemon.qmp, img, locking='off')
    assert lock_bytes(img) == set()
    p = qemu_img_info(img)
    assert p.returncode == 0, p.stderr
    p = qemu_io_write(img, 'raw')
    assert p.returncode == 0 and 'Failed' not in p.stderr, p.stderr


# ---- an NBD export as the user of a raw node ----

def start_export(daemon, sockdir, img, writable):
    add(daemon.qmp, {'driver': 'raw', 'node-name': 'r',
                     'file': file_ref(img)})
    sock = os.path.join(str(sockdir), 'nbd.sock')
    try:
        daemon.qmp.execute('nbd-server-start',
                           {'addr': {'type': 'unix',
                                     'data': {'path': sock}}})
        daemon.qmp.execute('block-export-add',
                           {'type': 'nbd', 'id': 'e', 'node-name': 'r',
                            'writable': writable})
    except QMPError as e:
        if e.cls == 'CommandNotFound':
            pytest.skip('no NBD exports in this daemon yet')
        raise


def test_writable_export_holds_write(daemon, workdir, sockdir):
    """A writable NBD export on raw/file holds consistent read and write:
    qemu-img info and qemu-io opening the qcow2 image (neither shares
    write) are refused; once the export is gone they work."""
    img = make_qcow2(workdir)
    start_export(daemon, sockdir, img, True)
    assert {100, 101} <= lock_bytes(img)

    p = qemu_img_info(img)
    assert p.returncode != 0
    assert 'Failed to get shared "write" lock' in p.stderr
    p = qemu_io_write(img, 'qcow2')
    assert 'Failed to get' in p.stderr + p.stdout

    daemon.qmp.execute('block-export-del', id='e')
    bjtest.wait_until(lambda: not lock_bytes(img), what='export gone')
    p = qemu_io_write(img, 'qcow2')
    assert p.returncode == 0 and 'Failed' not in p.stderr, p.stderr


@pytest.mark.parametrize('writable', [False, True])
def test_export_keeps_resize_to_itself(daemon, workdir, sockdir, writable):
    """qemu-storage-daemon's NBD exports do not share resize (byte 203),
    read-only or not, so qemu-io opening the qcow2 image read-write (which
    wants resize) is refused with the resize message."""
    img = make_qcow2(workdir)
    start_export(daemon, sockdir, img, writable)
    expect = {100, 101, 203} if writable else {100, 203}
    assert lock_bytes(img) == expect, \
        'the NBD export must share everything but resize, as ' \
        'qemu-storage-daemon does (src/nbd/export.c)'
    p = qemu_io_write(img, 'qcow2')
    assert 'Failed to get "resize" lock' in p.stderr + p.stdout
