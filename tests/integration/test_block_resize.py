"""block_resize: growing and shrinking, and refusals that change nothing.

Expectations taken from qemu-storage-daemon 7.2; the file runs unchanged
against it (BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)).
"""

import os

import pytest

from bjtest import QMPError, qemu_img, qemu_io

MiB = 1 << 20


def raw_image(workdir, name='r.img', size=MiB):
    path = os.path.join(str(workdir), name)
    with open(path, 'wb') as f:
        f.truncate(size)
    return path


def add_raw(q, path, node='r'):
    q.execute('blockdev-add', driver='file', **{'node-name': node + 'f'},
              filename=path)
    q.execute('blockdev-add', driver='raw', **{'node-name': node},
              file=node + 'f')


def size_of(q, node):
    for n in q.execute('query-named-block-nodes'):
        if n['node-name'] == node:
            return n['image']['virtual-size']
    raise AssertionError('no node %s' % node)


def refused(q, args, desc):
    with pytest.raises(QMPError) as e:
        q.execute('block_resize', args)
    assert e.value.desc == desc


def test_grow_and_shrink_raw(daemon, workdir):
    path = raw_image(workdir)
    qemu_io('-f', 'raw', '-c', 'write -P 0x5a 0 64k', path)
    q = daemon.qmp
    add_raw(q, path)
    assert q.execute('block_resize', **{'node-name': 'r'}, size=3 * MiB) == {}
    assert size_of(q, 'r') == 3 * MiB
    assert size_of(q, 'rf') == 3 * MiB
    assert os.path.getsize(path) == 3 * MiB
    # shrink, to an unaligned size too (raw over file allows any)
    q.execute('block_resize', **{'node-name': 'r'}, size=MiB // 2)
    assert os.path.getsize(path) == MiB // 2
    q.execute('block_resize', **{'node-name': 'r'}, size=100000)
    assert os.path.getsize(path) == 100000
    assert size_of(q, 'r') == 100352   # lengths read in whole sectors
    q.execute('block_resize', **{'node-name': 'r'}, size=0)
    assert os.path.getsize(path) == 0
    q.execute('block_resize', **{'node-name': 'r'}, size=MiB)
    q.execute('blockdev-del', **{'node-name': 'r'})
    q.execute('blockdev-del', **{'node-name': 'rf'})
    # the data went with the shrink to 0; the regrown tail reads zeros
    qemu_io('-f', 'raw', '-c', 'read -P 0 0 1M', path)


def test_grow_keeps_data_and_file_node(daemon, workdir):
    path = raw_image(workdir)
    qemu_io('-f', 'raw', '-c', 'write -P 0x5a 0 1M', path)
    q = daemon.qmp
    add_raw(q, path)
    # resizing the protocol node directly works too while only the raw node
    # (which shares resize) is above it
    q.execute('block_resize', **{'node-name': 'rf'}, size=2 * MiB)
    assert size_of(q, 'rf') == 2 * MiB
    q.execute('blockdev-del', **{'node-name': 'r'})
    q.execute('blockdev-del', **{'node-name': 'rf'})
    qemu_io('-f', 'raw', '-c', 'read -P 0x5a 0 1M', '-c',
            'read -P 0 1M 1M', path)


def test_grow_qcow2(daemon, workdir):
    path = os.path.join(str(workdir), 'q.qcow2')
    qemu_img('create', '-f', 'qcow2', path, '1M')
    qemu_io('-f', 'qcow2', '-c', 'write -P 0x11 0 64k', path)
    q = daemon.qmp
    q.execute('blockdev-add', driver='file', **{'node-name': 'qf'},
              filename=path)
    q.execute('blockdev-add', driver='qcow2', **{'node-name': 'q'},
              file='qf')
    q.execute('block_resize', **{'node-name': 'q'}, size=8 * MiB)
    assert size_of(q, 'q') == 8 * MiB
    refused(q, {'node-name': 'q', 'size': 8 * MiB + 1000},
            'The new size must be a multiple of 512')
    assert size_of(q, 'q') == 8 * MiB
    q.execute('blockdev-del', **{'node-name': 'q'})
    q.execute('blockdev-del', **{'node-name': 'qf'})
    qemu_img('check', path)
    info = qemu_img('info', '--output=json', path).stdout
    assert '"virtual-size": %d' % (8 * MiB) in info
    qemu_io('-f', 'qcow2', '-c', 'read -P 0x11 0 64k', '-c',
            'read -P 0 64k 8128k', path)


def test_bad_arguments_change_nothing(daemon, workdir):
    path = raw_image(workdir)
    q = daemon.qmp
    refused(q, {'node-name': 'nope', 'size': MiB},
            "Cannot find device='' nor node-name='nope'")
    refused(q, {'device': 'nope', 'size': MiB},
            "Cannot find device='nope' nor node-name=''")
    refused(q, {'size': MiB}, "Cannot find device='' nor node-name=''")
    refused(q, {'node-name': 'nope', 'size': -1},
            "Cannot find device='' nor node-name='nope'")
    refused(q, {'node-name': 'r'}, "Parameter 'size' is missing")
    refused(q, {'node-name': 'r', 'size': '1M'},
            "Invalid parameter type for 'size', expected: integer")
    add_raw(q, path)
    refused(q, {'node-name': 'r', 'size': -1},
            "Parameter 'size' expects a >0 size")
    refused(q, {'node-name': 'r', 'size': (1 << 63) - 1},
            'offset(9223372036854775807) exceeds maximum(9223372035781033984)')
    q.execute('blockdev-add', driver='raw', **{'node-name': 'ro'}, file='rf',
              **{'read-only': True})
    refused(q, {'node-name': 'ro', 'size': 2 * MiB}, 'Image is read-only')
    assert size_of(q, 'r') == MiB
    assert os.path.getsize(path) == MiB


def test_refused_while_exported(daemon, workdir, sockdir):
    path = raw_image(workdir)
    q = daemon.qmp
    add_raw(q, path)
    q.execute('nbd-server-start',
              addr={'type': 'unix',
                    'data': {'path': os.path.join(sockdir, 'nbd.sock')}})
    q.execute('block-export-add', type='nbd', id='e', **{'node-name': 'r'},
              writable=True)
    refused(q, {'node-name': 'r', 'size': 2 * MiB},
            "Permission conflict on node 'r': permissions 'resize' are both "
            "required by an unnamed block device (uses node 'r' as 'root' "
            "child) and unshared by an unnamed block device (uses node 'r' "
            "as 'root' child).")
    refused(q, {'node-name': 'rf', 'size': 2 * MiB},
            "Permission conflict on node 'rf': permissions 'resize' are both "
            "required by an unnamed block device (uses node 'rf' as 'root' "
            "child) and unshared by node 'r' (uses node 'rf' as 'file' "
            "child).")
    assert os.path.getsize(path) == MiB
    q.execute('block-export-del', id='e')
    q.wait_event('BLOCK_EXPORT_DELETED')
    # once the export is gone, the size may change
    q.execute('block_resize', **{'node-name': 'r'}, size=2 * MiB)
    assert os.path.getsize(path) == 2 * MiB
    q.execute('nbd-server-stop')


def test_refused_while_a_job_runs(daemon, workdir):
    src = raw_image(workdir, 's.img')
    dst = raw_image(workdir, 't.img')
    q = daemon.qmp
    add_raw(q, src, 's')
    add_raw(q, dst, 't')
    q.execute('blockdev-mirror', **{'job-id': 'j'}, device='s', target='t',
              sync='full')
    q.wait_event('BLOCK_JOB_READY', match={'data': {'device': 'j'}})
    refused(q, {'node-name': 's', 'size': 2 * MiB},
            "Device '(null)' is in use")
    refused(q, {'device': 'x', 'node-name': 't', 'size': 2 * MiB},
            "Device 'x' is in use")
    refused(q, {'node-name': 'sf', 'size': 2 * MiB},
            "Permission conflict on node 'sf': permissions 'resize' are both "
            "required by an unnamed block device (uses node 'sf' as 'root' "
            "child) and unshared by node 's' (uses node 'sf' as 'file' "
            "child).")
    assert os.path.getsize(src) == MiB and os.path.getsize(dst) == MiB
    q.execute('block-job-cancel', device='j')
    q.wait_event('BLOCK_JOB_COMPLETED', match={'data': {'device': 'j'}})
    q.execute('block_resize', **{'node-name': 's'}, size=2 * MiB)
    assert os.path.getsize(src) == 2 * MiB
