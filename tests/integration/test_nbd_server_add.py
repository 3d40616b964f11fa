"""The deprecated nbd-server-add / nbd-server-remove: thin wrappers over
block-export-add / block-export-del with qsd 7.2's defaults.

Expectations from qemu-storage-daemon 7.2; the file runs unchanged against
it (BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)).
"""

import os

import pytest

from bjtest import QMPError

MiB = 1 << 20


@pytest.fixture
def nodes(daemon, workdir):
    path = os.path.join(str(workdir), 'r.img')
    with open(path, 'wb') as f:
        f.truncate(MiB)
    q = daemon.qmp
    q.execute('blockdev-add', driver='file', **{'node-name': 'f'},
              filename=path)
    q.execute('blockdev-add', driver='raw', **{'node-name': 'r'}, file='f')
    q.execute('blockdev-add', driver='raw', **{'node-name': 'ro'}, file='f',
              **{'read-only': True})
    return path


def start(daemon):
    sock = daemon.socket_path('nbd.sock')
    daemon.qmp.execute('nbd-server-start',
                       addr={'type': 'unix', 'data': {'path': sock}})
    return sock


def refused(q, cmd, args, desc):
    with pytest.raises(QMPError) as e:
        q.execute(cmd, args)
    assert e.value.desc == desc


def exports(q):
    return sorted((e['id'], e['node-name'], e['type'])
                  for e in q.execute('query-block-exports'))


def test_add_and_remove(daemon, nodes):
    nbd = pytest.importorskip('nbd', reason='python3-libnbd is needed')
    q = daemon.qmp
    refused(q, 'nbd-server-add', {'device': 'nope'},
            "Cannot find device='nope' nor node-name='nope'")
    refused(q, 'nbd-server-add', {'device': 'r'}, 'NBD server not running')
    sock = start(daemon)
    assert q.execute('nbd-server-add', device='r') == {}
    refused(q, 'nbd-server-add', {'device': 'r'},
            "Block export id 'r' is already in use")
    # read-only node asked writable: exported read-only, not refused
    assert q.execute('nbd-server-add', device='ro', writable=True, name='x',
                     description='d') == {}
    assert exports(q) == [('r', 'r', 'nbd'), ('x', 'ro', 'nbd')]
    h = nbd.NBD()
    h.connect_uri('nbd+unix:///x?socket=%s' % sock)
    assert h.is_read_only()
    assert h.get_export_description() == 'd'
    h.shutdown()
    h = nbd.NBD()
    h.connect_uri('nbd+unix:///r?socket=%s' % sock)   # named after device
    assert h.is_read_only()                             # writable: false
    h.shutdown()
    refused(q, 'nbd-server-remove', {'name': 'nope'},
            "Export 'nope' is not found")
    refused(q, 'nbd-server-remove', {'name': 'x', 'mode': 'bogus'},
            "Parameter 'mode' does not accept value 'bogus'")
    assert exports(q) == [('r', 'r', 'nbd'), ('x', 'ro', 'nbd')]
    assert q.execute('nbd-server-remove', name='x') == {}
    assert q.wait_event('BLOCK_EXPORT_DELETED')['data'] == {'id': 'x'}
    assert q.execute('nbd-server-remove', name='r', mode='hard') == {}
    assert q.wait_event('BLOCK_EXPORT_DELETED')['data'] == {'id': 'r'}
    assert exports(q) == []
    refused(q, 'nbd-server-remove', {'name': 'r'}, "Export 'r' is not found")
    q.execute('nbd-server-stop')


def test_writable_and_bitmap(daemon, nodes):
    nbd = pytest.importorskip('nbd', reason='python3-libnbd is needed')
    q = daemon.qmp
    sock = start(daemon)
    refused(q, 'nbd-server-add', {'device': 'r', 'name': 'b',
                                  'bitmap': 'nobm'},
            "Bitmap 'nobm' is not found")
    assert exports(q) == []
    q.execute('block-dirty-bitmap-add', node='r', name='bm')
    assert q.execute('nbd-server-add', device='r', name='b', bitmap='bm',
                     writable=True) == {}
    h = nbd.NBD()
    h.add_meta_context('qemu:dirty-bitmap:bm')
    h.connect_uri('nbd+unix:///b?socket=%s' % sock)
    assert not h.is_read_only()
    assert h.can_meta_context('qemu:dirty-bitmap:bm')
    h.pwrite(b'\x07' * 4096, 0)
    h.flush()
    h.shutdown()
    # same NBD name, or an id in use
    q.execute('block-export-add', type='nbd', id='e2', **{'node-name': 'r'},
              name='same')
    refused(q, 'nbd-server-add', {'device': 'r', 'name': 'same'},
            "NBD server already has export named 'same'")
    refused(q, 'nbd-server-add', {'device': 'r', 'name': 'e2'},
            "Block export id 'e2' is already in use")
    for e in ('b', 'e2'):
        q.execute('nbd-server-remove', name=e)
        q.wait_event('BLOCK_EXPORT_DELETED')
    q.execute('nbd-server-stop')
    with open(nodes, 'rb') as f:
        assert f.read(4096) == b'\x07' * 4096
