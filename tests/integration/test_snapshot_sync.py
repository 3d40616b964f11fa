"""blockdev-snapshot-sync: create an overlay image and put it on top.

Expectations from qemu-storage-daemon 7.2; the file runs unchanged against
it (BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)).  qsd has no devices,
so the node is always named by node-name, and the overlay belongs to the
node's parents (an export here): with none, it is closed at once.
"""

import json
import os

import pytest

from bjtest import QMPError, qemu_img, qemu_io, nbd_export_open

MiB = 1 << 20


@pytest.fixture
def img(workdir):
    d = str(workdir)
    p = {n: os.path.join(d, n) for n in ('b.qcow2', 'o.qcow2', 'r.img',
                                         's1.qcow2', 's2.qcow2')}
    qemu_img('create', '-f', 'qcow2', p['b.qcow2'], '1M')
    qemu_io('-f', 'qcow2', '-c', 'write -P 0x11 0 64k', p['b.qcow2'])
    qemu_img('create', '-f', 'qcow2', p['o.qcow2'], '1M')
    with open(p['r.img'], 'wb') as f:
        f.truncate(MiB)
    return p


def add_base(q, img):
    q.execute('blockdev-add', driver='qcow2', **{'node-name': 'base'},
              file={'driver': 'file', 'node-name': 'bf',
                    'filename': img['b.qcow2']})


def refused(q, args, desc):
    with pytest.raises(QMPError) as e:
        q.execute('blockdev-snapshot-sync', args)
    assert e.value.desc == desc


def info(path):
    return json.loads(qemu_img('info', '-U', '--output=json', path).stdout)


def node_names(q):
    return sorted(n['node-name'] for n in
                  q.execute('query-named-block-nodes'))


def test_refusals(daemon, img):
    q = daemon.qmp
    s1 = img['s1.qcow2']
    refused(q, {'snapshot-file': s1},
            "Cannot find device='' nor node-name=''")
    refused(q, {'device': 'nope', 'snapshot-file': s1},
            "Cannot find device='nope' nor node-name=''")
    add_base(q, img)
    refused(q, {'node-name': 'base', 'snapshot-file': s1},
            'New overlay node-name missing')
    refused(q, {'node-name': 'base', 'snapshot-file': s1,
                'snapshot-node-name': 'bf'},
            'New overlay node-name already in use')
    refused(q, {'node-name': 'base', 'snapshot-file': s1,
                'snapshot-node-name': 's1', 'format': 'raw'},
            "Backing file not supported for file format 'raw'")
    refused(q, {'node-name': 'base', 'snapshot-file': s1,
                'snapshot-node-name': 's1', 'format': 'bogus'},
            "Unknown file format 'bogus'")
    refused(q, {'node-name': 'base', 'snapshot-file': '/nonexistent/x',
                'snapshot-node-name': 's1'},
            "Could not create '/nonexistent/x': No such file or directory")
    refused(q, {'node-name': 'base', 'snapshot-file': s1 + '.missing',
                'snapshot-node-name': 's1', 'mode': 'existing'},
            "Could not open '%s.missing': No such file or directory" % s1)
    refused(q, {'node-name': 'base', 'snapshot-file': img['o.qcow2'],
                'snapshot-node-name': 's1', 'mode': 'existing',
                'format': 'bogus'}, "Unknown driver 'bogus'")
    refused(q, {'node-name': 'base', 'snapshot-file': img['r.img'],
                'snapshot-node-name': 's1', 'mode': 'existing',
                'format': 'raw'},
            'The overlay does not support backing images')
    refused(q, {'node-name': 'base', 'snapshot-file': s1,
                'snapshot-node-name': 's1', 'mode': 'bogus'},
            "Parameter 'mode' does not accept value 'bogus'")
    assert not os.path.exists(s1)
    assert node_names(q) == ['base', 'bf']
    # the file is made before the node-name is looked at, as qsd does
    refused(q, {'node-name': 'base', 'snapshot-file': s1,
                'snapshot-node-name': '1bad'}, "Invalid node-name: '1bad'")
    assert info(s1)['backing-filename'] == img['b.qcow2']
    assert node_names(q) == ['base', 'bf']


def test_overlay_without_parents_goes(daemon, img):
    q = daemon.qmp
    add_base(q, img)
    assert q.execute('blockdev-snapshot-sync', **{
        'node-name': 'base', 'snapshot-file': img['s1.qcow2'],
        'snapshot-node-name': 's1'}) == {}
    i = info(img['s1.qcow2'])
    assert i['backing-filename'] == img['b.qcow2']
    assert i['backing-filename-format'] == 'qcow2'
    assert i['virtual-size'] == MiB
    assert node_names(q) == ['base', 'bf']     # nothing held the overlay
    # so the name is free again, and base is no one's backing
    assert q.execute('blockdev-snapshot-sync', **{
        'node-name': 'base', 'snapshot-file': img['s2.qcow2'],
        'snapshot-node-name': 's1'}) == {}


def test_export_moves_to_the_overlay(daemon, img, sockdir):
    pytest.importorskip('nbd', reason='python3-libnbd is needed')
    q = daemon.qmp
    add_base(q, img)
    h = nbd_export_open(daemon, sockdir, node='base', name='e')
    assert q.execute('blockdev-snapshot-sync', **{
        'node-name': 'base', 'snapshot-file': img['s1.qcow2'],
        'snapshot-node-name': 's1'}) == {}
    assert [e['node-name'] for e in q.execute('query-block-exports')] == \
        ['s1']
    assert 's1' in node_names(q)
    # a second snapshot on top of the first, existing image
    assert q.execute('blockdev-snapshot-sync', **{
        'node-name': 's1', 'snapshot-file': img['o.qcow2'],
        'snapshot-node-name': 's2', 'mode': 'existing'}) == {}
    assert [e['node-name'] for e in q.execute('query-block-exports')] == \
        ['s2']
    assert h.pread(65536, 0) == b'\x11' * 65536
    h.pwrite(b'\x22' * 4096, 0)
    h.flush()
    h.shutdown()
    q.execute('block-export-del', id='e')
    q.wait_event('BLOCK_EXPORT_DELETED')
    # with the export gone nothing holds the overlays: they close
    assert node_names(q) == ['base', 'bf']
    q.execute('blockdev-del', **{'node-name': 'base'})
    q.execute('nbd-server-stop')
    qemu_io('-f', 'qcow2', '-c', 'read -P 0x11 0 64k', img['b.qcow2'])
    # the write went to o.qcow2, the newest overlay (whose stored backing
    # name mode existing leaves alone)
    out = qemu_io('--image-opts', '-c', 'read -P 0x22 0 4k',
                  'driver=qcow2,file.driver=file,file.filename=%s,'
                  'backing.driver=qcow2,backing.file.driver=file,'
                  'backing.file.filename=%s' % (img['o.qcow2'],
                                                img['s1.qcow2']))
    assert 'Pattern verification failed' not in out.stdout
    for p in ('b.qcow2', 's1.qcow2', 'o.qcow2'):
        qemu_img('check', '-U', img[p])


def test_in_a_transaction(daemon, img, sockdir):
    pytest.importorskip('nbd', reason='python3-libnbd is needed')
    q = daemon.qmp
    add_base(q, img)
    h = nbd_export_open(daemon, sockdir, node='base', name='e')
    action = {'type': 'blockdev-snapshot-sync',
              'data': {'node-name': 'base', 'snapshot-file': img['s1.qcow2'],
                       'snapshot-node-name': 's1'}}
    # undone by a later action's failure: the export stays on base
    with pytest.raises(QMPError) as e:
        q.execute('transaction', actions=[action, {'type': 'abort',
                                                   'data': {}}])
    assert e.value.desc == 'Transaction aborted using Abort action'
    assert [x['node-name'] for x in q.execute('query-block-exports')] == \
        ['base']
    assert 's1' not in node_names(q)
    # and done
    assert q.execute('transaction', actions=[action]) == {}
    assert [x['node-name'] for x in q.execute('query-block-exports')] == \
        ['s1']
    h.pwrite(b'\x33' * 4096, 0)
    h.flush()
    h.shutdown()
    q.execute('block-export-del', id='e')
    q.wait_event('BLOCK_EXPORT_DELETED')
    q.execute('nbd-server-stop')
    assert node_names(q) == ['base', 'bf']
    q.execute('blockdev-del', **{'node-name': 'base'})
    qemu_io('-f', 'qcow2', '-c', 'read -P 0x11 0 64k', img['b.qcow2'])
    qemu_io('-f', 'qcow2', '-c', 'read -P 0x33 0 4k', '-c',
            'read -P 0x11 4k 60k', img['s1.qcow2'])
