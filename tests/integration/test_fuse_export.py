"""FUSE exports (block-export-add type=fuse, --export type=fuse): the node
shows up as a regular file at the mountpoint that ordinary file calls
read and write (checked against qemu-img on the image), losetup maps,
growable exports grow and shrink; allow-other as a mount option; qsd
7.2's errors; unmounted at block-export-del and at quit, also with the
file held open.

Skipped with the reason where FUSE cannot be used (no /dev/fuse, no
fusermount3, not root).  A mount left by a failed test is detached
(fusermount3 -uz) in teardown.
"""

import errno
import os
import shutil
import subprocess

import pytest

from bjtest import (QMPError, blockdev_add_image, is_qsd, qemu_img, qemu_io,
                    wait_until)

MiB = 1 << 20


def mounted(path):
    with open('/proc/mounts') as f:
        return [line.split()[3] for line in f
                if line.split()[1] == str(path)]


@pytest.fixture
def mnt(workdir):
    if not os.path.exists('/dev/fuse'):
        pytest.skip('no /dev/fuse here')
    if not shutil.which('fusermount3'):
        pytest.skip('fusermount3 is not installed (fuse3)')
    if os.geteuid() != 0:
        pytest.skip('the tests mount as root')
    path = workdir / 'mnt'
    path.touch()
    yield str(path)
    if mounted(path):
        subprocess.run(['fusermount3', '-uz', str(path)],
                       capture_output=True, timeout=30)


def image(workdir, fmt='qcow2', size=16 * MiB):
    path = str(workdir / ('img.' + fmt))
    qemu_img('create', '-q', '-f', fmt, path, size)
    qemu_io('-f', fmt, '-c', 'write -P 0x31 0 4M', '-c',
            'write -P 0x32 10M 1M', path)
    return path


def export(qmp, mnt, node='img', id='f', **opts):
    args = {'type': 'fuse', 'id': id, 'node-name': node, 'mountpoint': mnt}
    args.update(opts)
    qmp.execute('block-export-add', args)


def delete(qmp, id='f'):
    qmp.execute('block-export-del', id=id)
    qmp.wait_event('BLOCK_EXPORT_DELETED', match={'data': {'id': id}})


@pytest.mark.timeout(60)
def test_errors(daemon, workdir, mnt):
    """qsd's words."""
    qmp = daemon.qmp
    qmp.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'img',
                                 'size': MiB})
    export(qmp, mnt, id='f0')
    d = str(workdir)
    other = workdir / 'other'
    other.touch()
    cases = [
        ({'mountpoint': d + '/none'},
         "Failed to stat '%s/none': No such file or directory" % d),
        ({'mountpoint': d}, "'%s' is not a regular file" % d),
        ({'mountpoint': None}, "Parameter 'mountpoint' is missing"),
        ({'id': 'f0', 'mountpoint': str(other)},
         "Block export id 'f0' is already in use"),
        ({}, "There already is a FUSE export on '%s'" % mnt),
        ({'mountpoint': str(other), 'allow-other': 'maybe'},
         "Parameter 'allow-other' does not accept value 'maybe'"),
        ({'mountpoint': str(other), 'name': 'x'},
         "Parameter 'name' is unexpected"),
        ({'mountpoint': str(other), 'node-name': 'nosuch'},
         "Cannot find device='' nor node-name='nosuch'"),
    ]
    for extra, msg in cases:
        args = {'type': 'fuse', 'id': 'f1', 'node-name': 'img',
                'mountpoint': mnt}
        args.update(extra)
        args = {k: v for k, v in args.items() if v is not None}
        with pytest.raises(QMPError) as e:
            qmp.execute('block-export-add', args)
        assert e.value.desc == msg, extra
    # nbd refuses fuse's members, and an id fuse holds
    qmp.execute('nbd-server-start', addr={'type': 'unix', 'data': {
        'path': daemon.socket_path('nbd.sock')}})
    with pytest.raises(QMPError) as e:
        qmp.execute('block-export-add', {'type': 'nbd', 'id': 'n',
                                         'node-name': 'img',
                                         'mountpoint': mnt})
    assert e.value.desc == "Parameter 'mountpoint' is unexpected"
    with pytest.raises(QMPError) as e:
        qmp.execute('block-export-add', {'type': 'nbd', 'id': 'f0',
                                         'node-name': 'img'})
    assert e.value.desc == "Block export id 'f0' is already in use"
    assert [x['id'] for x in qmp.execute('query-block-exports')] == ['f0']
    assert not mounted(other)
    delete(qmp, 'f0')
    assert not mounted(mnt)


@pytest.mark.timeout(60)
def test_read_write_through_the_file(daemon, workdir, mnt):
    qmp = daemon.qmp
    img = image(workdir)
    blockdev_add_image(qmp, 'qcow2', 'img', img)
    export(qmp, mnt, writable=True)
    st = os.stat(mnt)
    assert st.st_size == 16 * MiB
    assert oct(st.st_mode) == oct(0o100600)
    assert 'allow_other' in mounted(mnt)[0]      # auto, as root
    info = qmp.execute('query-block-exports')
    assert info == [{'id': 'f', 'type': 'fuse', 'node-name': 'img',
                     'shutting-down': False}]
    ref = str(workdir / 'ref.raw')
    qemu_img('convert', '-U', '-O', 'raw', img, ref)
    with open(mnt, 'rb') as f, open(ref, 'rb') as r:
        assert f.read() == r.read()
    fd = os.open(mnt, os.O_RDWR)
    try:
        assert os.pwrite(fd, b'\x44' * MiB, 6 * MiB) == MiB
        assert os.pwrite(fd, b'\x45' * 1000, 12345) == 1000
        os.fsync(fd)
        # past the end of a non-growable export: nothing is written
        assert os.pwrite(fd, b'\x46' * 100, 16 * MiB - 10) == 10
    finally:
        os.close(fd)
    delete(qmp)
    assert not mounted(mnt)
    qmp.execute('blockdev-del', node_name='img')
    qemu_io('-f', 'qcow2', '-c', 'read -P 0x44 6M 1M', '-c',
            'read -P 0x45 12345 1000', '-c', 'read -P 0x31 0 12345', '-c',
            'read -P 0x32 10M 1M', '-c', 'read -P 0x46 16777206 10', img)
    qemu_img('check', '-q', img)


@pytest.mark.timeout(60)
def test_read_only_export(daemon, workdir, mnt):
    qmp = daemon.qmp
    img = image(workdir)
    blockdev_add_image(qmp, 'qcow2', 'img', img)
    export(qmp, mnt, **{'allow-other': 'off'})
    assert oct(os.stat(mnt).st_mode) == oct(0o100400)
    assert 'allow_other' not in mounted(mnt)[0]
    with open(mnt, 'rb') as f:
        assert f.read(4096) == b'\x31' * 4096
    # root passes the mode check; the export itself refuses the write
    fd = os.open(mnt, os.O_RDWR)
    try:
        with pytest.raises(OSError):
            os.pwrite(fd, b'x', 0)
    finally:
        os.close(fd)
    delete(qmp)
    qmp.execute('blockdev-del', node_name='img')
    qemu_io('-f', 'qcow2', '-c', 'read -P 0x31 0 4M', img)


@pytest.mark.timeout(60)
def test_growable(daemon, workdir, mnt):
    """Writes past the end grow the node, truncate resizes it."""
    qmp = daemon.qmp
    raw = str(workdir / 'g.raw')
    qemu_img('create', '-q', '-f', 'raw', raw, MiB)
    blockdev_add_image(qmp, 'raw', 'img', raw)
    export(qmp, mnt, writable=True, growable=True)
    fd = os.open(mnt, os.O_RDWR)
    try:
        assert os.pwrite(fd, b'\x51' * 4096, 3 * MiB) == 4096
        assert os.fstat(fd).st_size == 3 * MiB + 4096
        os.ftruncate(fd, 2 * MiB)
        assert os.fstat(fd).st_size == 2 * MiB
        os.ftruncate(fd, 5 * MiB)
        assert os.fstat(fd).st_size == 5 * MiB
        os.fsync(fd)
    finally:
        os.close(fd)
    delete(qmp)
    qmp.execute('blockdev-del', node_name='img')
    assert os.path.getsize(raw) == 5 * MiB
    qemu_io('-f', 'raw', '-c', 'read -P 0 2M 3M', raw)


@pytest.mark.timeout(60)
def test_losetup_maps_the_file(daemon, workdir, mnt):
    qmp = daemon.qmp
    img = image(workdir)
    blockdev_add_image(qmp, 'qcow2', 'img', img)
    export(qmp, mnt, writable=True)
    p = subprocess.run(['losetup', '-f', '--show', mnt], capture_output=True,
                       text=True, timeout=30)
    if p.returncode != 0:
        pytest.skip('losetup cannot map here: %s' % p.stderr.strip())
    dev = p.stdout.strip()
    try:
        with open(dev, 'r+b') as f:
            assert f.read(4096) == b'\x31' * 4096
            f.seek(8 * MiB)
            f.write(b'\x61' * 65536)
            f.flush()
            os.fsync(f.fileno())
    finally:
        subprocess.run(['losetup', '-d', dev], capture_output=True,
                       timeout=30)
    wait_until(lambda: dev not in subprocess.run(
        ['losetup', '-a'], capture_output=True, text=True).stdout,
        what='loop device detached')
    delete(qmp)
    qmp.execute('blockdev-del', node_name='img')
    qemu_io('-f', 'qcow2', '-c', 'read -P 0x61 8M 64k', img)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('how', ['del', 'quit'])
def test_unmounted_with_the_file_open(daemon_factory, workdir, mnt, how):
    """block-export-del and quit unmount even while a process holds the
    file open (the mount is detached lazily)."""
    img = image(workdir)
    d = daemon_factory('--blockdev',
                       'driver=qcow2,node-name=img,file.driver=file,'
                       'file.filename=%s' % img,
                       '--export', 'type=fuse,id=f,node-name=img,'
                       'mountpoint=%s,writable=on' % mnt)
    assert mounted(mnt)
    fd = os.open(mnt, os.O_RDONLY)
    try:
        assert os.pread(fd, 16, 0) == b'\x31' * 16
        if how == 'del':
            delete(d.qmp)
            assert not mounted(mnt)
            assert d.qmp.execute('query-block-exports') == []
            # the session's descriptor is closed, not leaked
            pid = d.proc.pid
            assert '/dev/fuse' not in [
                os.readlink('/proc/%d/fd/%s' % (pid, x))
                for x in os.listdir('/proc/%d/fd' % pid)]
        else:
            d.stop()
            assert not mounted(mnt)
        if not is_qsd():
            # the connection is gone (qsd keeps serving after a del)
            with pytest.raises(OSError) as e:
                os.pread(fd, 16, 0)
            assert e.value.errno == errno.ENOTCONN
    finally:
        try:
            os.close(fd)
        except OSError:
            pass       # ENOTCONN: the flush at close has nobody to ask
    if how == 'del':
        d.stop()
    qemu_img('check', '-q', img)


@pytest.mark.timeout(60)
def test_quit_unmounts_every_export(daemon, workdir, mnt):
    qmp = daemon.qmp
    img = image(workdir)
    blockdev_add_image(qmp, 'qcow2', 'img', img)
    mnt2 = str(workdir / 'mnt2')
    open(mnt2, 'w').close()
    export(qmp, mnt, id='a')
    export(qmp, mnt2, id='b')
    ids = sorted(x['id'] for x in qmp.execute('query-block-exports'))
    assert ids == ['a', 'b']
    daemon.stop()
    assert not mounted(mnt) and not mounted(mnt2)
