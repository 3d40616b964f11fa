"""driver=host_device on loop devices the tests make (losetup on a sparse
file; always detached again): the size from the device, reads and writes,
write-zeroes and discard (BLKZEROOUT, BLKDISCARD: a discarded range of a
loop device is a hole in its file again), O_DIRECT on a device with
4 KiB logical blocks (unaligned requests padded to the device's block),
a qcow2 image on a device (qemu-img check, and a backing file named by a
header that is a device), qsd's errors ('file' refuses a device,
'host_device' a regular file), query output as qsd's; an LVM volume when
device-mapper is there.

Skipped, with the reason, where loop devices cannot be made (no
/dev/loop-control, not root, losetup failing).
"""

import json
import os
import subprocess

import pytest

from bjtest import (QMPError, nbd_export_close, nbd_export_open, qemu_img,
                    qemu_io)

MiB = 1 << 20
SIZE = 64 * MiB

nbd = pytest.importorskip('nbd')


def losetup(path, *opts):
    """A loop device on path (the caller detaches it), or skips."""
    if not os.path.exists('/dev/loop-control'):
        pytest.skip('no /dev/loop-control: loop devices cannot be made here')
    if os.geteuid() != 0:
        pytest.skip('making loop devices needs root')
    p = subprocess.run(['losetup', '-f', '--show', *opts, str(path)],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        pytest.skip('losetup cannot make a loop device here: %s'
                    % p.stderr.strip())
    return p.stdout.strip()


def detach(dev):
    subprocess.run(['losetup', '-d', dev], capture_output=True, timeout=30)


@pytest.fixture
def loop(workdir):
    """(device, backing file) of a 64 MiB sparse file."""
    img = workdir / 'loop.img'
    with open(img, 'wb') as f:
        f.truncate(SIZE)
    dev = losetup(img)
    try:
        yield dev, str(img)
    finally:
        detach(dev)


@pytest.fixture
def loop4k(workdir):
    """A device with 4 KiB logical blocks, direct I/O to its file."""
    img = workdir / 'loop4k.img'
    with open(img, 'wb') as f:
        f.truncate(SIZE)
    dev = losetup(img, '--sector-size', '4096')
    try:
        yield dev, str(img)
    finally:
        detach(dev)


def add_hdev(qmp, dev, node='h', **opts):
    args = {'driver': 'host_device', 'node-name': node, 'filename': dev}
    args.update(opts)
    qmp.execute('blockdev-add', args)


def node_info(qmp, node):
    return [n for n in qmp.execute('query-named-block-nodes', flat=True)
            if n['node-name'] == node][0]


@pytest.mark.timeout(60)
def test_size_query_and_errors(daemon, loop, workdir):
    dev, img = loop
    qmp = daemon.qmp
    add_hdev(qmp, dev)
    info = node_info(qmp, 'h')
    assert info['drv'] == 'host_device'
    assert info['file'] == dev
    assert info['image'] == {'filename': dev, 'format': 'host_device',
                             'virtual-size': SIZE, 'actual-size': 0,
                             'dirty-flag': False}
    d = str(workdir)
    cases = [
        ({'driver': 'host_device', 'filename': img},
         "'host_device' driver requires '%s' to be either a character or "
         "block device" % img),
        ({'driver': 'file', 'filename': dev},
         "'file' driver requires '%s' to be a regular file" % dev),
        ({'driver': 'host_device', 'filename': d},
         "Could not open '%s': Is a directory" % d),
        ({'driver': 'host_device', 'filename': d + '/none'},
         "Could not open '%s/none': No such file or directory" % d),
        ({'driver': 'host_device', 'filename': dev, 'foo': 1},
         "Parameter 'foo' is unexpected"),
    ]
    for args, msg in cases:
        args['node-name'] = 'x'
        with pytest.raises(QMPError) as e:
            qmp.execute('blockdev-add', args)
        assert e.value.desc == msg
    # a character device is a host_device too
    add_hdev(qmp, '/dev/null', node='n')
    assert node_info(qmp, 'n')['image']['virtual-size'] == 0
    qmp.execute('blockdev-del', node_name='n')
    qmp.execute('blockdev-del', node_name='h')


@pytest.mark.timeout(60)
def test_write_zeroes_discard(daemon, loop, sockdir):
    """Data written through NBD lands on the device; write-zeroes zeroes
    it; a discard gives the loop file's blocks back (a hole again)."""
    dev, img = loop
    qmp = daemon.qmp
    add_hdev(qmp, dev, discard='unmap')
    h = nbd_export_open(daemon, sockdir, node='h', name='e')
    h.pwrite(b'\x5a' * (16 * MiB), 0)
    h.flush()
    h.zero(2 * MiB, 4 * MiB)                 # count, offset
    h.flush()
    assert h.pread(MiB, 4 * MiB) == b'\x00' * MiB
    # without NBD's no-hole flag: may unmap, so the blocks go back
    zeroed = os.stat(img).st_blocks
    assert zeroed * 512 <= 16 * MiB - 2 * MiB + MiB
    full = os.stat(img).st_blocks
    h.zero(MiB, 7 * MiB, nbd.CMD_FLAG_NO_HOLE)   # zeroes, blocks kept
    h.flush()
    assert h.pread(MiB, 7 * MiB) == b'\x00' * MiB
    h.trim(8 * MiB, 8 * MiB)
    h.flush()
    nbd_export_close(daemon, h, node='h', name='e')
    with open(dev, 'rb') as f:
        data = f.read(16 * MiB)
    assert data[:4 * MiB] == b'\x5a' * (4 * MiB)
    assert data[4 * MiB:6 * MiB] == b'\x00' * (2 * MiB)
    assert data[6 * MiB:7 * MiB] == b'\x5a' * MiB
    assert data[7 * MiB:8 * MiB] == b'\x00' * MiB
    # the discarded 8 MiB are a hole in the loop device's file
    assert os.stat(img).st_blocks * 512 <= full * 512 - 8 * MiB + MiB
    assert data[8 * MiB:] == b'\x00' * (8 * MiB)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('direct', [True, False])
def test_direct_io_on_4k_device(daemon, loop4k, sockdir, direct):
    """cache.direct=on on a device with 4 KiB logical blocks: the node
    asks for the device's block (BLKSSZGET; the export's minimum block
    size shows it) and its I/O works (the kernel refuses less); buffered,
    any alignment."""
    dev, img = loop4k
    out = subprocess.run(['blockdev', '--getss', dev], capture_output=True,
                         text=True, check=True).stdout.strip()
    if out != '4096':
        pytest.skip('losetup --sector-size 4096 gave %s-byte blocks' % out)
    qmp = daemon.qmp
    add_hdev(qmp, dev, cache={'direct': direct})
    h = nbd_export_open(daemon, sockdir, node='h', name='e')
    assert h.get_block_size(nbd.SIZE_MINIMUM) == (4096 if direct else 1)
    h.pwrite(b'\x11' * 8192, 0)
    h.pwrite(b'\x22' * 4096, 16384)
    h.zero(4096, 4096)
    h.flush()
    want = b'\x11' * 4096 + b'\x00' * 4096 + b'\x00' * 8192 + b'\x22' * 4096
    assert h.pread(len(want), 0) == want
    nbd_export_close(daemon, h, node='h', name='e')
    with open(dev, 'rb') as f:
        assert f.read(len(want)) == want


@pytest.mark.timeout(60)
def test_direct_io_alignment_512(daemon, loop, sockdir):
    dev, _ = loop
    qmp = daemon.qmp
    add_hdev(qmp, dev, cache={'direct': True})
    h = nbd_export_open(daemon, sockdir, node='h', name='e')
    assert h.get_block_size(nbd.SIZE_MINIMUM) == 512
    h.pwrite(b'\x77' * 512, 512 * 7)
    assert h.pread(1024, 512 * 6) == b'\x00' * 512 + b'\x77' * 512
    nbd_export_close(daemon, h, node='h', name='e')


@pytest.mark.timeout(60)
def test_qcow2_on_a_device(daemon, loop, workdir, sockdir):
    """qemu-img formats the device; blockjobd writes through qcow2 over
    host_device; qemu-img reads it back.  An overlay file whose header
    names the device as its backing file opens it as a host_device."""
    dev, _ = loop
    qmp = daemon.qmp
    qemu_img('create', '-q', '-f', 'qcow2', dev, 32 * MiB)
    qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'q',
        'file': {'driver': 'host_device', 'filename': dev}})
    h = nbd_export_open(daemon, sockdir, node='q', name='e')
    h.pwrite(b'\x44' * MiB, 3 * MiB)
    nbd_export_close(daemon, h, node='q', name='e')
    qemu_img('check', '-q', dev)
    qemu_io('-f', 'qcow2', '-c', 'read -P 0x44 3M 1M', dev)
    top = str(workdir / 'top.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-b', dev, '-F', 'qcow2', top)
    qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'top',
        'file': {'driver': 'file', 'filename': top}})
    assert 'host_device' in [n['drv'] for n in
                             qmp.execute('query-named-block-nodes',
                                         flat=True)
                             if n['image']['filename'] == dev]
    h = nbd_export_open(daemon, sockdir, node='top', name='e', writable=False)
    assert h.pread(MiB, 3 * MiB) == b'\x44' * MiB
    nbd_export_close(daemon, h, node='top', name='e')


def lvm(*args):
    return subprocess.run(list(args), capture_output=True, text=True,
                          timeout=60,
                          env=dict(os.environ, LVM_SUPPRESS_FD_WARNINGS='1'))


@pytest.mark.timeout(120)
def test_lvm_volume(daemon, workdir, sockdir):
    """A logical volume in a volume group on two loop devices."""
    if subprocess.run(['which', 'lvcreate'], capture_output=True).returncode:
        pytest.skip('lvm2 is not installed')
    devs = []
    vg = 'bjtest%d' % os.getpid()
    try:
        for i in range(2):
            img = workdir / ('pv%d.img' % i)
            with open(img, 'wb') as f:
                f.truncate(32 * MiB)
            devs.append(losetup(img))
        for dev in devs:
            p = lvm('pvcreate', '-q', dev)
            assert p.returncode == 0, p.stderr
        p = lvm('vgcreate', '-q', vg, *devs)
        assert p.returncode == 0, p.stderr
        p = lvm('lvcreate', '-q', '-y', '-L', '40M', '-n', 'lv', vg)
        if p.returncode != 0 and 'device-mapper' in p.stderr:
            pytest.skip('device-mapper is not available here: %s'
                        % p.stderr.strip().splitlines()[0])
        assert p.returncode == 0, p.stderr
        lv = '/dev/%s/lv' % vg
        qmp = daemon.qmp
        add_hdev(qmp, lv)
        assert node_info(qmp, 'h')['image']['virtual-size'] == 40 * MiB
        h = nbd_export_open(daemon, sockdir, node='h', name='e')
        h.pwrite(b'\x66' * MiB, 30 * MiB)     # on the second PV
        h.flush()
        nbd_export_close(daemon, h, node='h', name='e')
        with open(lv, 'rb') as f:
            f.seek(30 * MiB)
            assert f.read(MiB) == b'\x66' * MiB
    finally:
        lvm('vgremove', '-q', '-f', vg)
        for dev in devs:
            lvm('pvremove', '-q', '-f', dev)
            detach(dev)
