"""blockdev-snapshot through the daemon: an overlay put on top of a node an
NBD client is writing, live; writes before stay in the old image, writes
after land in the overlay, the chain is what qemu-img sees; and the
refusals as qemu-storage-daemon 7.2 words them.
"""

import json
import os

import pytest

from bjtest import (QMPError, nbd_connect, nbd_export, nbd_export_teardown,
                   qemu_img, qemu_io, run)

nbd = pytest.importorskip('nbd')

MiB = 1 << 20


def add_qcow2(qmp, name, path, **kw):
    qmp.execute('blockdev-add', dict({
        'driver': 'qcow2', 'node-name': name,
        'file': {'driver': 'file', 'filename': path}}, **kw))


def make_overlay(daemon, name, backing):
    """A new image <name>.qcow2 in the daemon's workdir that names the
    image <backing>.qcow2 beside it in its header; returns its path."""
    path = os.path.join(daemon.workdir, name + '.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-b', backing + '.qcow2', '-F',
             'qcow2', path)
    return path


@pytest.fixture
def chain(daemon):
    base = os.path.join(daemon.workdir, 'base.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, 4 * MiB)
    qemu_io('-c', 'write -P 0x11 0 4M', base)
    # The overlay names base in its header; the daemon opens it without a
    # backing and the snapshot supplies one.
    ov = make_overlay(daemon, 'ov', 'base')
    add_qcow2(daemon.qmp, 'base', base)
    add_qcow2(daemon.qmp, 'ov', ov, backing=None)
    return base, ov


def export(daemon, node):
    return nbd_connect(nbd_export(daemon, node), node)


def nodes(qmp):
    return {n['node-name']: n
            for n in qmp.execute('query-named-block-nodes', flat=True)}


def test_snapshot_live_under_nbd(daemon, chain):
    base, ov = chain
    qmp = daemon.qmp
    h = export(daemon, 'base')
    h.pwrite(b'\xaa' * 65536, 0)
    qmp.execute('blockdev-snapshot', node='base', overlay='ov')
    # The export now serves the overlay; the client did not notice.
    exports = qmp.execute('query-block-exports')
    assert [(e['id'], e['node-name']) for e in exports] == [('e0', 'ov')]
    h.pwrite(b'\xbb' * 65536, MiB)
    assert h.pread(65536, 0) == b'\xaa' * 65536
    assert h.pread(65536, MiB) == b'\xbb' * 65536
    assert h.pread(65536, 2 * MiB) == b'\x11' * 65536
    h.flush()

    n = nodes(qmp)
    assert n['ov']['backing_file'] == base
    # The header is not rewritten by the snapshot.
    assert n['ov']['image']['backing-filename'] == 'base.qcow2'
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-del', node_name='base')
    assert e.value.desc == ("Node 'base' is busy: node is used as backing "
                            "hd of 'ov'")

    h.shutdown()
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='ov')
    qmp.execute('blockdev-del', node_name='base')

    # Before the snapshot: in base.  After: only in the overlay.
    qemu_io('-c', 'read -P 0xaa 0 64k', '-c', 'read -P 0x11 64k 4032k', base)
    qemu_io('-c', 'read -P 0xaa 0 64k', '-c', 'read -P 0xbb 1M 64k',
            '-c', 'read -P 0x11 2M 2M', ov)
    qemu_img('check', '-q', base)
    qemu_img('check', '-q', ov)
    out = run('qemu-img', 'info', '--backing-chain', ov).stdout
    assert out.count('image: ') == 2
    assert 'backing file: base.qcow2' in out
    amap = json.loads(run('qemu-img', 'map', '-f', 'qcow2',
                          '--output=json', ov).stdout)
    # Only the cluster written after the snapshot is the overlay's own.
    own = [(m['start'], m['length']) for m in amap
           if m['depth'] == 0 and m['data']]
    assert own == [(MiB, 65536)]


def test_snapshot_twice(daemon, chain):
    base, ov = chain
    qmp = daemon.qmp
    ov2 = make_overlay(daemon, 'ov2', 'ov')
    add_qcow2(qmp, 'ov2', ov2, backing=None)
    qmp.execute('blockdev-snapshot', node='base', overlay='ov')
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-snapshot', node='base', overlay='ov2')
    assert e.value.desc == ("Node 'base' is busy: node is used as backing "
                            "hd of 'ov'")
    qmp.execute('blockdev-snapshot', node='ov', overlay='ov2')
    n = nodes(qmp)
    # (qemu names ov by a json: filename here, since ov was opened with
    # backing: null and now has one; only the link itself is checked.)
    assert 'backing_file' in n['ov2']
    assert n['ov2']['image']['backing-filename'] == 'ov.qcow2'
    h = export(daemon, 'ov2')
    h.pwrite(b'\xcc' * 4096, 0)
    assert h.pread(8192, 0) == b'\xcc' * 4096 + b'\x11' * 4096
    h.shutdown()
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    for name in ('ov2', 'ov', 'base'):
        qmp.execute('blockdev-del', node_name=name)
    qemu_io('-c', 'read -P 0xcc 0 4k', '-c', 'read -P 0x11 4k 4092k', ov2)
    out = run('qemu-img', 'info', '--backing-chain', ov2).stdout
    assert out.count('image: ') == 3


def test_snapshot_errors(daemon, chain):
    qmp = daemon.qmp
    d = daemon.workdir
    raw = os.path.join(d, 'raw.img')
    qemu_img('create', '-q', '-f', 'raw', raw, MiB)
    qmp.execute('blockdev-add', driver='raw', node_name='raw',
                file={'driver': 'file', 'filename': raw})
    other = os.path.join(d, 'other.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', other, MiB)
    add_qcow2(qmp, 'has-backing', other, backing='raw')

    def fails(node, overlay, msg):
        with pytest.raises(QMPError) as e:
            qmp.execute('blockdev-snapshot', node=node, overlay=overlay)
        assert e.value.desc == msg

    fails('nonode', 'ov', "Cannot find device='nonode' nor node-name='nonode'")
    fails('base', 'nonode',
          "Cannot find device='nonode' nor node-name='nonode'")
    fails('base', 'raw', 'The overlay does not support backing images')
    fails('base', 'has-backing', 'The overlay already has a backing image')
    fails('ov', 'ov', "Making 'ov' a backing child of 'ov' would create a "
                      "cycle")
    fails('raw', 'has-backing', "Node 'raw' is busy: node is used as backing "
                                "hd of 'has-backing'")
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-snapshot', node='base')
    assert e.value.desc == "Parameter 'overlay' is missing"
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-snapshot', node=5, overlay='ov')
    assert e.value.desc == "Invalid parameter type for 'node', expected: string"

    # An exported overlay is in use.
    h = export(daemon, 'ov')
    fails('base', 'ov', 'The overlay is already in use')
    h.shutdown()
    # Nothing changed.
    n = nodes(qmp)
    assert 'backing_file' not in n['ov']
    assert 'backing_file' not in n['base']


def test_snapshot_refused_under_a_job(daemon, chain):
    base, ov = chain
    qmp = daemon.qmp
    top = make_overlay(daemon, 'top', 'base')
    add_qcow2(qmp, 'top', top, backing='base')
    # A slow stream keeps top busy.
    qmp.execute('block-stream', job_id='s0', device='top', speed=1024)
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-snapshot', node='top', overlay='ov')
    assert e.value.desc == ("Node 'top' is busy: block device is in use by "
                            "block job: stream")
    qmp.execute('job-cancel', id='s0')
    qmp.wait_event('JOB_STATUS_CHANGE',
                   match={'data': {'id': 's0', 'status': 'null'}})
    # Free again: the overlay goes on top.
    qmp.execute('blockdev-snapshot', node='top', overlay='ov')
    # (qemu names top by a json: filename here, as it has a backing
    # given by node-name; only the link is checked.)
    assert 'top.qcow2' in nodes(qmp)['ov']['backing_file']


def test_read_only_overlay(daemon):
    qmp = daemon.qmp
    d = daemon.workdir
    for n in ('b1', 'o1', 'b2', 'o2'):
        qemu_img('create', '-q', '-f', 'qcow2', os.path.join(d, n + '.qcow2'),
                 MiB)
    for n in ('b1', 'b2'):
        add_qcow2(qmp, n, os.path.join(d, n + '.qcow2'))
    for n in ('o1', 'o2'):
        add_qcow2(qmp, n, os.path.join(d, n + '.qcow2'), backing=None,
                  **{'read-only': True})
    # Nobody writes b1: a read-only overlay is fine.
    qmp.execute('blockdev-snapshot', node='b1', overlay='o1')
    # b2 has a writer, which cannot move onto a read-only overlay.
    h = export(daemon, 'b2')
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-snapshot', node='b2', overlay='o2')
    assert e.value.desc == 'Block node is read-only'
    assert [x['node-name'] for x in qmp.execute('query-block-exports')] == \
        ['b2']
    assert 'backing_file' not in nodes(qmp)['o2']
    h.pwrite(b'\x01' * 512, 0)
    h.shutdown()


def test_snapshot_while_client_writes(daemon, chain):
    """Every write the client had acknowledged, before, during or after the
    snapshot, reads back from the overlay's chain."""
    import random
    import threading
    base, ov = chain
    qmp = daemon.qmp
    size = 4 * MiB
    expect = bytearray(b'\x11' * size)
    h = export(daemon, 'base')
    stop = threading.Event()
    failures = []

    def writer():
        # Eight writes in flight, each in its own region of the disk, so the
        # snapshot's drained section catches several of them.
        rnd = random.Random(7)
        region = size // 8
        busy = {}                   # slot -> cookie
        n = 0
        try:
            while not stop.is_set() or n < 400 or busy:
                for slot in list(busy):
                    if h.aio_command_completed(busy[slot]):
                        del busy[slot]
                if len(busy) == 8 or (stop.is_set() and n >= 400):
                    if busy:
                        h.poll(-1)
                    continue
                slot = next(j for j in range(8) if j not in busy)
                length = 4096 * rnd.randint(1, 8)
                off = slot * region + 4096 * rnd.randrange(
                    (region - length) // 4096)
                data = bytes([n % 251 + 1]) * length
                busy[slot] = h.aio_pwrite(nbd.Buffer.from_bytearray(
                    bytearray(data)), off)
                expect[off:off + length] = data
                n += 1
        except Exception as e:      # reported below
            failures.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        qmp.execute('blockdev-snapshot', node='base', overlay='ov')
    finally:
        stop.set()
        t.join(60)
    assert not failures
    assert h.pread(size, 0) == bytes(expect)
    nbd_export_teardown(qmp, h, 'ov', 'base')
    qemu_img('check', '-q', ov)
    out = os.path.join(daemon.workdir, 'out.raw')
    qemu_img('convert', '-O', 'raw', ov, out)
    with open(out, 'rb') as f:
        assert f.read() == bytes(expect)
