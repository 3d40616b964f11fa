"""NBD exports with `bitmaps` and `allocation-depth`: the
qemu:dirty-bitmap:NAME and qemu:allocation-depth metadata contexts, as
qemu-storage-daemon 7.2 serves them.

Every expectation here was observed on qemu-storage-daemon 7.2
(BLOCKJOBD_BIN=qemu-storage-daemon): the contexts a client is offered and
which queries select them, the extents each context reports (granule
aligned, clipped to the request), the errors of block-export-add, and the
bitmap being busy for as long as it is exported.
"""

import json
import struct

import pytest

from bitmaptest import bitmap_info, marked_ranges
from bjtest import QMPError, qemu_img, qemu_io, run, run_blockjobd

nbd = pytest.importorskip('nbd')

KiB = 1024
MiB = 1024 * KiB
GRAN = 64 * KiB


# ---- helpers ----

def start_server(d):
    sock = d.socket_path('nbd.sock')
    d.qmp.execute('nbd-server-start',
                  addr={'type': 'unix', 'data': {'path': sock}})
    return sock


def uri(d, name):
    return 'nbd+unix:///%s?socket=%s' % (name, d.socket_path('nbd.sock'))


def add_qcow2(d, path, node, **extra):
    args = {'driver': 'qcow2', 'node-name': node,
            'file': {'driver': 'file', 'filename': str(path)}}
    args.update(extra)
    d.qmp.execute('blockdev-add', args)


def export(d, **args):
    a = {'type': 'nbd'}
    a.update({k.replace('_', '-'): v for k, v in args.items()})
    d.qmp.execute('block-export-add', a)


def export_err(d, **args):
    a = {'type': 'nbd'}
    a.update({k.replace('_', '-'): v for k, v in args.items()})
    with pytest.raises(QMPError) as e:
        d.qmp.execute('block-export-add', a)
    assert e.value.cls == 'GenericError'
    return e.value.desc


def merged(extents):
    """[(offset, length, type)] with neighbours of one type joined."""
    out = []
    for o, n, t in extents:
        if out and out[-1][2] == t and out[-1][0] + out[-1][1] == o:
            out[-1] = (out[-1][0], out[-1][1] + n, t)
        else:
            out.append((o, n, t))
    return out


def nbdinfo_map(u, context):
    out = run('nbdinfo', '--map=' + context, '--json', u).stdout
    return merged([(e['offset'], e['length'], e['type'])
                   for e in json.loads(out)])


def dirty_ranges(u, name):
    return [(o, n) for o, n, t in nbdinfo_map(u, 'qemu:dirty-bitmap:' + name)
            if t == 1]


def block_status(h, offset, length, flags=0):
    """{context: [(length, flags), ...]} of one BLOCK_STATUS reply."""
    got = {}

    def cb(meta, off, entries, err):
        assert off == offset
        got[meta] = list(zip(entries[0::2], entries[1::2]))
        return 0
    h.block_status(length, offset, cb, flags)
    return got


def list_contexts(u, *queries):
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(u)
    try:
        for q in queries:
            h.add_meta_context(q)
        names = []
        h.opt_list_meta_context(lambda name: names.append(name) or 0)
        return names
    finally:
        h.opt_abort()


def set_bitmap_in_use(path, name):
    """Sets the in_use flag of bitmap `name` in a qcow2 image, as a writer
    that died with the image open leaves it (qcow2 spec: bitmaps
    extension, directory entry flags bit 0)."""
    with open(path, 'r+b') as f:
        hdr = f.read(104)
        assert hdr[:4] == b'QFI\xfb' and struct.unpack('>I', hdr[4:8])[0] == 3
        pos = struct.unpack('>I', hdr[100:104])[0]
        while True:
            f.seek(pos)
            etype, elen = struct.unpack('>II', f.read(8))
            assert etype != 0, 'no bitmaps extension'
            if etype == 0x23852875:
                data = f.read(elen)
                nb, _, dsize, doff = struct.unpack('>IIQQ', data[:24])
                break
            pos += 8 + (elen + 7) // 8 * 8
        f.seek(doff)
        d = f.read(dsize)
        at = 0
        for _ in range(nb):
            flags, = struct.unpack('>I', d[at + 12:at + 16])
            nsize, esize = struct.unpack('>HI', d[at + 18:at + 24])
            ntab, = struct.unpack('>I', d[at + 8:at + 12])
            ename = d[at + 24 + esize:at + 24 + esize + nsize].decode()
            if ename == name:
                f.seek(doff + at + 12)
                f.write(struct.pack('>I', flags | 1))
                return
            at += (24 + esize + nsize + 7) // 8 * 8
            assert ntab >= 0
    raise AssertionError('bitmap %s not found' % name)


@pytest.fixture
def chain(workdir):
    """base <- mid <- top, 4 MiB: base has 0-64k, mid 1M-1M+64k, top
    2M-2M+64k, each a full cluster."""
    base, mid, top = (str(workdir / n) for n in
                      ('base.qcow2', 'mid.qcow2', 'top.qcow2'))
    qemu_img('create', '-f', 'qcow2', base, '4M')
    qemu_io('-c', 'write -P 1 0 64k', base)
    qemu_img('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid)
    qemu_io('-c', 'write -P 2 1M 64k', mid)
    qemu_img('create', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top)
    qemu_io('-c', 'write -P 3 2M 64k', top)
    return base, mid, top


def mid_node(d):
    for n in d.qmp.execute('query-named-block-nodes'):
        if n['drv'] == 'qcow2' and n['file'].endswith('mid.qcow2'):
            return n['node-name']
    raise AssertionError('no mid node')


# ---- the dirty-bitmap context ----

@pytest.mark.parametrize('gran', [GRAN, 512])
def test_map_reports_exactly_the_written_ranges(daemon, workdir, gran):
    """Writes through the daemon mark the bitmap; nbdinfo --map over
    qemu:dirty-bitmap reports exactly those granules, dirty = 1."""
    d = daemon
    img = workdir / 'a.qcow2'
    qemu_img('create', '-f', 'qcow2', str(img), '64M')
    add_qcow2(d, img, 'a')
    d.qmp.execute('block-dirty-bitmap-add', node='a', name='bm',
                  granularity=gran)
    start_server(d)
    # A writable export may carry a recording bitmap.
    export(d, id='e0', node_name='a', writable=True, bitmaps=['bm'])
    writes = [(0, 4 * KiB), (GRAN * 3 + 10, 100), (5 * MiB, 3 * GRAN),
              (20 * MiB - 512, 1024), (64 * MiB - 512, 512)]
    h = nbd.NBD()
    h.connect_uri(uri(d, 'a'))
    for o, n in writes:
        h.pwrite(b'\xa5' * n, o)
    h.flush()
    h.shutdown()
    want = marked_ranges(writes, gran)
    assert dirty_ranges(uri(d, 'a'), 'bm') == want
    assert bitmap_info(d.qmp, 'a', 'bm')['count'] == sum(n for _, n in want)
    # the whole disk is described, dirty or clean
    m = nbdinfo_map(uri(d, 'a'), 'qemu:dirty-bitmap:bm')
    assert m[0][0] == 0 and sum(n for _, n, _ in m) == 64 * MiB
    assert {t for _, _, t in m} == {0, 1}


def test_block_status_extents_clipped_and_ordered(daemon, chain):
    """One reply has a chunk per selected context (base, depth, bitmap in
    that order); extents are granule aligned inside, clipped to the
    request at its ends; REQ_ONE gives one extent per context."""
    d = daemon
    base, mid, top = chain
    add_qcow2(d, top, 'top')
    d.qmp.execute('block-dirty-bitmap-add', node='top', name='b0')
    start_server(d)
    export(d, id='e0', node_name='top', writable=True, bitmaps=['b0'],
           allocation_depth=True)
    h = nbd.NBD()
    for c in ('base:allocation', 'qemu:allocation-depth',
              'qemu:dirty-bitmap:b0'):
        h.add_meta_context(c)
    h.connect_uri(uri(d, 'top'))
    h.pwrite(b'x' * 100, 3 * GRAN + 10)
    h.pwrite(b'x' * 2 * GRAN, 5 * GRAN + 4096)

    got = block_status(h, 0, 4 * MiB)
    assert list(got) == ['base:allocation', 'qemu:allocation-depth',
                         'qemu:dirty-bitmap:b0']
    assert got['qemu:dirty-bitmap:b0'] == [
        (3 * GRAN, 0), (GRAN, 1), (GRAN, 0), (3 * GRAN, 1),
        (4 * MiB - 8 * GRAN, 0)]
    assert got['qemu:allocation-depth'] == [
        (GRAN, 3), (2 * GRAN, 0), (GRAN, 1), (GRAN, 0), (3 * GRAN, 1),
        (8 * GRAN, 0), (GRAN, 2), (15 * GRAN, 0), (GRAN, 1),
        (31 * GRAN, 0)]
    # base:allocation sees the backing chain: data from base and mid is
    # data here, what nobody allocated reads as zeroes
    assert got['base:allocation'] == [
        (GRAN, 0), (2 * GRAN, 3), (GRAN, 0), (GRAN, 3), (3 * GRAN, 0),
        (8 * GRAN, 3), (GRAN, 0), (15 * GRAN, 3), (GRAN, 0),
        (31 * GRAN, 3)]

    # clipped at both ends of the request
    at = 3 * GRAN + 20
    assert block_status(h, at, 4096) == {
        'base:allocation': [(4096, 0)],
        'qemu:allocation-depth': [(4096, 1)],
        'qemu:dirty-bitmap:b0': [(4096, 1)]}
    assert block_status(h, 4 * GRAN - 1, 2) == {
        'base:allocation': [(1, 0), (1, 3)],
        'qemu:allocation-depth': [(1, 1), (1, 0)],
        'qemu:dirty-bitmap:b0': [(1, 1), (1, 0)]}
    # REQ_ONE: the first extent only, still clipped to the granule
    assert block_status(h, at, 300000, nbd.CMD_FLAG_REQ_ONE) == {
        'base:allocation': [(GRAN - 20, 0)],
        'qemu:allocation-depth': [(GRAN - 20, 1)],
        'qemu:dirty-bitmap:b0': [(GRAN - 20, 1)]}
    h.shutdown()


def test_only_the_selected_bitmap_is_sent(daemon, workdir):
    """With two bitmaps exported, a client that selects one gets that
    one alone; each keeps its own bits."""
    d = daemon
    img = workdir / 'a.qcow2'
    qemu_img('create', '-f', 'qcow2', str(img), '8M')
    add_qcow2(d, img, 'a')
    for name in ('old', 'new'):
        d.qmp.execute('block-dirty-bitmap-add', node='a', name=name)
    start_server(d)
    h = nbd.NBD()
    export(d, id='w', node_name='a', name='w', writable=True,
           bitmaps=['old', 'new'])
    h.connect_uri(uri(d, 'w'))
    h.pwrite(b'1' * 512, 0)
    h.shutdown()
    d.qmp.execute('block-export-del', id='w')
    d.qmp.wait_event('BLOCK_EXPORT_DELETED')
    d.qmp.execute('block-dirty-bitmap-clear', node='a', name='new')
    export(d, id='w2', node_name='a', name='w2', writable=True,
           bitmaps=['old', 'new'])
    h = nbd.NBD()
    h.add_meta_context('qemu:dirty-bitmap:new')
    h.connect_uri(uri(d, 'w2'))
    h.pwrite(b'2' * 512, 2 * MiB)
    assert block_status(h, 0, 8 * MiB) == {'qemu:dirty-bitmap:new': [
        (2 * MiB, 0), (GRAN, 1), (6 * MiB - GRAN, 0)]}
    h.shutdown()
    assert dirty_ranges(uri(d, 'w2'), 'old') == [(0, GRAN),
                                                 (2 * MiB, GRAN)]


def test_huge_disk_small_queries(daemon):
    """A 1 TiB bitmap: a few dirty areas anywhere, small queries far into
    the disk and a map of the whole disk answer by dirty areas."""
    d = daemon
    size = 1 << 40
    d.qmp.execute('blockdev-add', driver='null-co', node_name='n',
                  size=size)
    d.qmp.execute('block-dirty-bitmap-add', node='n', name='bm')
    start_server(d)
    export(d, id='e', node_name='n', writable=True, bitmaps=['bm'])
    h = nbd.NBD()
    h.add_meta_context('qemu:dirty-bitmap:bm')
    h.connect_uri(uri(d, 'n'))
    writes = [(0, 512), (300 << 30, GRAN), (size - GRAN - 1, 2)]
    for o, n in writes:
        h.pwrite(b'z' * n, o)
    dirty = marked_ranges(writes)
    for i in range(200):
        at = (i * 5 << 30) + 12345
        flag = int(any(o <= at < o + n for o, n in dirty))
        assert block_status(h, at, 4096)['qemu:dirty-bitmap:bm'] == \
            [(4096, flag)]
    assert block_status(h, size - 4096, 4096)['qemu:dirty-bitmap:bm'] == [
        (4096, 1)]
    h.shutdown()
    assert dirty_ranges(uri(d, 'n'), 'bm') == marked_ranges(writes)


# ---- allocation depth ----

def test_allocation_depth_two_deep_chain(daemon, chain):
    d = daemon
    base, mid, top = chain
    add_qcow2(d, top, 'top', **{'read-only': True})
    start_server(d)
    export(d, id='e', node_name='top', allocation_depth=True)
    assert nbdinfo_map(uri(d, 'top'), 'qemu:allocation-depth') == [
        (0, GRAN, 3), (GRAN, MiB - GRAN, 0), (MiB, GRAN, 2),
        (MiB + GRAN, MiB - GRAN, 0), (2 * MiB, GRAN, 1),
        (2 * MiB + GRAN, 2 * MiB - GRAN, 0)]
    # and the layers' bytes are what a reader gets
    qemu_io('-f', 'raw', '-r', '-c', 'read -P 1 0 64k',
            '-c', 'read -P 2 1M 64k', '-c', 'read -P 3 2M 64k',
            '-c', 'read -P 0 3M 64k', uri(d, 'top'))


def test_allocation_depth_of_a_zero_cluster_and_past_a_short_backing(
        daemon, workdir):
    """A zero cluster is allocated where it is written; a backing file
    shorter than its overlay reads zeroes past its end, at its depth."""
    d = daemon
    base, top = str(workdir / 'b.qcow2'), str(workdir / 't.qcow2')
    qemu_img('create', '-f', 'qcow2', base, '1M')
    qemu_io('-c', 'write -P 9 0 64k', base)
    qemu_img('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, '2M')
    qemu_io('-c', 'write -z 64k 64k', top)
    add_qcow2(d, top, 'top', **{'read-only': True})
    start_server(d)
    export(d, id='e', node_name='top', allocation_depth=True)
    assert nbdinfo_map(uri(d, 'top'), 'qemu:allocation-depth') == [
        (0, GRAN, 2), (GRAN, GRAN, 1), (2 * GRAN, MiB - 2 * GRAN, 0),
        (MiB, MiB, 2)]
    assert nbdinfo_map(uri(d, 'top'), 'base:allocation') == [
        (0, GRAN, 0), (GRAN, 2 * MiB - GRAN, 3)]


# ---- negotiation ----

def test_meta_contexts_listed_and_queried(daemon, chain):
    d = daemon
    base, mid, top = chain
    add_qcow2(d, top, 'top')
    m = mid_node(d)
    d.qmp.execute('block-dirty-bitmap-add', node='top', name='b1',
                  disabled=True)
    d.qmp.execute('block-dirty-bitmap-add', node=m, name='m0',
                  disabled=True)
    start_server(d)
    # a name may repeat; a name is also found down the backing chain
    export(d, id='e3', node_name='top', name='n3',
           bitmaps=['b1', 'm0', 'b1'], allocation_depth=True)
    export(d, id='e7', node_name='top', name='n7', bitmaps=[])
    u = uri(d, 'n3')
    allc = ['base:allocation', 'qemu:allocation-depth',
            'qemu:dirty-bitmap:b1', 'qemu:dirty-bitmap:m0',
            'qemu:dirty-bitmap:b1']
    assert list_contexts(u) == allc
    assert list_contexts(u, 'qemu:') == allc[1:]
    assert list_contexts(u, 'qemu:dirty-bitmap:') == allc[2:]
    assert list_contexts(u, 'base:') == ['base:allocation']
    assert list_contexts(u, 'qemu:allocation-depth') == allc[1:2]
    assert list_contexts(u, 'qemu:dirty-bitmap:m0') == \
        ['qemu:dirty-bitmap:m0']
    assert list_contexts(u, 'qemu:dirty-bitmap:b1',
                         'base:allocation') == \
        ['base:allocation', 'qemu:dirty-bitmap:b1']
    for q in ('qemu:dirty-bitmap:zz', 'qemu:foo', 'foo:', 'qemu:dirty-bitmap'):
        assert list_contexts(u, q) == []
    assert list_contexts(uri(d, 'n7')) == ['base:allocation']
    assert list_contexts(uri(d, 'n7'), 'qemu:') == []

    info = json.loads(run('nbdinfo', '--list', '--json',
                          'nbd+unix:///?socket=' +
                          d.socket_path('nbd.sock')).stdout)
    ctx = {e['export-name']: e['contexts'] for e in info['exports']}
    assert ctx == {'n3': allc, 'n7': ['base:allocation']}

    # a bare namespace selects nothing with SET: the server then refuses
    # block status, and qemu-img's x-dirty-bitmap for a missing bitmap
    h = nbd.NBD()
    h.add_meta_context('qemu:dirty-bitmap:')
    h.connect_uri(u)
    assert not h.can_meta_context('qemu:dirty-bitmap:b1')
    h.shutdown()
    h = nbd.NBD()
    h.add_meta_context('qemu:dirty-bitmap:m0')
    h.add_meta_context('qemu:allocation-depth')
    h.connect_uri(u)
    assert h.can_meta_context('qemu:dirty-bitmap:m0')
    assert h.can_meta_context('qemu:allocation-depth')
    assert not h.can_meta_context('base:allocation')
    assert list(block_status(h, 0, MiB)) == ['qemu:allocation-depth',
                                             'qemu:dirty-bitmap:m0']
    h.shutdown()


def test_qemu_img_map_with_x_dirty_bitmap(daemon, workdir):
    """qemu's NBD client reads the bitmap through x-dirty-bitmap; it shows
    dirty areas as "data": false (its documented inversion)."""
    d = daemon
    img = workdir / 'a.qcow2'
    qemu_img('create', '-f', 'qcow2', str(img), '4M')
    add_qcow2(d, img, 'a')
    d.qmp.execute('block-dirty-bitmap-add', node='a', name='bm')
    start_server(d)
    export(d, id='w', node_name='a', writable=True, bitmaps=['bm'])
    qemu_io('-f', 'raw', '-c', 'write 1M 64k', '-c', 'write 3M 4k',
            uri(d, 'a'))
    opts = ('driver=nbd,export=a,server.type=unix,server.path=%s,'
            'x-dirty-bitmap=qemu:dirty-bitmap:bm'
            % d.socket_path('nbd.sock'))
    out = json.loads(qemu_img('map', '--output=json', '--image-opts',
                              opts).stdout)
    dirty = [(e['start'], e['length']) for e in out if not e['data']]
    assert dirty == [(MiB, GRAN), (3 * MiB, GRAN)]


# ---- errors and the busy state ----

def test_export_errors(daemon, chain):
    d = daemon
    base, mid, top = chain
    assert export_err(d, id='e1', node_name='zz', bitmaps=['b0']) == \
        "Cannot find device='' nor node-name='zz'"
    add_qcow2(d, top, 'top')
    assert export_err(d, id='e1', node_name='top', bitmaps=['b0']) == \
        'NBD server not running'
    start_server(d)
    m = mid_node(d)
    d.qmp.execute('block-dirty-bitmap-add', node='top', name='b0')
    d.qmp.execute('block-dirty-bitmap-add', node='top', name='t0',
                  disabled=True)
    d.qmp.execute('block-dirty-bitmap-add', node=m, name='m1')

    # shapes (BlockDirtyBitmapOrStr), as qemu's visitor words them
    for bad in ([5], [None], [['a']]):
        assert export_err(d, id='e1', node_name='top', bitmaps=bad) == \
            "Invalid parameter type for 'null', expected: " \
            "BlockDirtyBitmapOrStr"
    assert export_err(d, id='e1', node_name='top', bitmaps='b0') == \
        "Invalid parameter type for 'bitmaps', expected: array"
    assert export_err(d, id='e1', node_name='top',
                      bitmaps=['t0', {'node': 'top'}]) == \
        "Parameter 'bitmaps[1].name' is missing"
    assert export_err(d, id='e1', node_name='top',
                      bitmaps=[{'node': 'top', 'name': 't0', 'x': 1}]) == \
        "Parameter 'bitmaps[0].x' is unexpected"
    assert export_err(d, id='e1', node_name='top',
                      bitmaps=[{'node': 5, 'name': 't0'}]) == \
        "Invalid parameter type for 'bitmaps[0].node', expected: string"
    assert export_err(d, id='e1', node_name='top',
                      allocation_depth='yes') == \
        "Invalid parameter type for 'allocation-depth', expected: boolean"

    # lookups
    assert export_err(d, id='e1', node_name='top', bitmaps=['nope']) == \
        "Bitmap 'nope' is not found"
    assert export_err(d, id='e1', node_name='top',
                      bitmaps=[{'node': 'top', 'name': 'nope'}]) == \
        "Dirty bitmap 'nope' not found"
    assert export_err(d, id='e1', node_name='top',
                      bitmaps=[{'node': 'zz', 'name': 'nope'}]) == \
        "Node 'zz' not found"
    # a name is looked up down the chain, never up it
    assert export_err(d, id='e1', node_name=m, bitmaps=['t0']) == \
        "Bitmap 't0' is not found"
    # the first bad element is the one reported
    assert export_err(d, id='e1', node_name='top',
                      bitmaps=['b0', 'nope']) == \
        "Enabled bitmap 'b0' incompatible with readonly export"
    # export name checks come first
    export(d, id='e0', node_name='top', name='x')
    assert export_err(d, id='e1', node_name='top', name='x',
                      bitmaps=['nope']) == \
        "NBD server already has export named 'x'"

    # A recording bitmap of a writable node, found by name, would change
    # under a read-only export's client...
    assert export_err(d, id='e1', node_name='top', bitmaps=['b0']) == \
        "Enabled bitmap 'b0' incompatible with readonly export"
    # ...but not a bitmap of a read-only backing node, nor one named with
    # {node, name} (qemu checks only the names it looks up itself)
    export(d, id='e5', node_name='top', name='n5', bitmaps=['m1'])
    export(d, id='e6', node_name='top', name='n6',
           bitmaps=[{'node': 'top', 'name': 'b0'}])
    for node, name in ((m, 'm1'), ('top', 'b0')):
        assert bitmap_info(d.qmp, node, name)['busy'] is True
    for e in ('e5', 'e6'):
        d.qmp.execute('block-export-del', id=e)
        d.qmp.wait_event('BLOCK_EXPORT_DELETED', match={'data': {'id': e}})
    # a writable export takes the recording bitmap by name
    export(d, id='e7', node_name='top', name='n7', writable=True,
           bitmaps=['b0'])


def test_bitmap_busy_while_exported(daemon, workdir):
    """An exported bitmap is busy: other exports and every bitmap command
    but the hash refuse it, until the export is gone (after its last
    client when deleted hard)."""
    d = daemon
    img = workdir / 'a.qcow2'
    qemu_img('create', '-f', 'qcow2', str(img), '4M')
    add_qcow2(d, img, 'a')
    q = d.qmp
    q.execute('block-dirty-bitmap-add', node='a', name='b1', disabled=True)
    q.execute('block-dirty-bitmap-add', node='a', name='b2', disabled=True)
    start_server(d)
    export(d, id='e1', node_name='a', name='n1', bitmaps=['b1'])
    assert bitmap_info(d.qmp, 'a', 'b1') == {
        'name': 'b1', 'recording': False, 'persistent': False,
        'busy': True, 'granularity': GRAN, 'count': 0}
    busy = ("Bitmap 'b1' is currently in use by another operation and "
            "cannot be used")
    assert export_err(d, id='e2', node_name='a', name='n2',
                      bitmaps=['b1']) == busy
    assert export_err(d, id='e2', node_name='a', name='n2', writable=True,
                      bitmaps=[{'node': 'a', 'name': 'b1'}]) == busy
    for cmd in ('clear', 'remove', 'enable', 'disable'):
        with pytest.raises(QMPError) as e:
            q.execute('block-dirty-bitmap-' + cmd, node='a', name='b1')
        assert e.value.desc == busy
    for target, src in (('b1', 'b2'), ('b2', 'b1')):
        with pytest.raises(QMPError) as e:
            q.execute('block-dirty-bitmap-merge', node='a', target=target,
                      bitmaps=[src])
        assert e.value.desc == busy
    assert len(q.execute('x-debug-block-dirty-bitmap-sha256', node='a',
                         name='b1')['sha256']) == 64

    # hard delete with a client connected: busy until the client is gone
    h = nbd.NBD()
    h.add_meta_context('qemu:dirty-bitmap:b1')
    h.connect_uri(uri(d, 'n1'))
    q.execute('block-export-del', id='e1', mode='hard')
    q.wait_event('BLOCK_EXPORT_DELETED', match={'data': {'id': 'e1'}})
    assert bitmap_info(d.qmp, 'a', 'b1')['busy'] is False
    with pytest.raises(nbd.Error):
        h.pread(512, 0)
    del h
    q.execute('block-dirty-bitmap-remove', node='a', name='b1')


def test_inconsistent_bitmap_refused(daemon_factory, workdir):
    p = str(workdir / 'k.qcow2')
    qemu_img('create', '-f', 'qcow2', p, '4M')
    qemu_img('bitmap', '--add', p, 'bm')
    set_bitmap_in_use(p, 'bm')
    d = daemon_factory('--blockdev',
                       'driver=file,node-name=kf,filename=%s,read-only=on'
                       % p, '--blockdev',
                       'driver=qcow2,node-name=k,file=kf,read-only=on')
    assert bitmap_info(d.qmp, 'k', 'bm').get('inconsistent') is True
    start_server(d)
    assert export_err(d, id='e', node_name='k', bitmaps=['bm']) == \
        "Bitmap 'bm' is inconsistent and cannot be used"


def test_command_line_export_with_bitmaps(daemon_factory, workdir, sockdir):
    """--export takes bitmaps.N=NAME (or bitmaps.N.node/.name) and
    allocation-depth=on as dotted keys; a persistent bitmap stored by
    qemu-img is there at start-up."""
    p = str(workdir / 'c.qcow2')
    qemu_img('create', '-f', 'qcow2', p, '4M')
    qemu_img('bitmap', '--add', p, 'p0')
    qemu_io('-c', 'write 3M 4k', p)     # recorded by the auto bitmap
    sock = sockdir + '/n.sock'
    blk = ('--blockdev', 'driver=file,node-name=cf,filename=%s,read-only=on'
           % p, '--blockdev', 'driver=qcow2,node-name=c,file=cf,read-only=on',
           '--nbd-server', 'addr.type=unix,addr.path=%s' % sock)
    u = 'nbd+unix:///c?socket=' + sock
    for exp, ctxs in (
            ('type=nbd,id=e0,node-name=c,bitmaps.0=p0,allocation-depth=on',
             ['base:allocation', 'qemu:allocation-depth',
              'qemu:dirty-bitmap:p0']),
            ('nbd,id=e0,node-name=c,bitmaps.0.node=c,bitmaps.0.name=p0',
             ['base:allocation', 'qemu:dirty-bitmap:p0'])):
        d = daemon_factory(*blk, '--export', exp)
        assert list_contexts(u) == ctxs
        assert dirty_ranges(u, 'p0') == [(3 * MiB, GRAN)]
        d.stop()
    for exp, msg in (
            ('type=nbd,id=e0,node-name=c,bitmap=p0',
             "Parameter 'bitmap' is unexpected"),
            ('type=nbd,id=e0,node-name=c,bitmaps.0=zz',
             "Bitmap 'zz' is not found"),
            ('type=nbd,id=e0,node-name=c,bitmaps=p0',
             "Invalid parameter type for 'bitmaps', expected: array")):
        r = run_blockjobd(*blk, '--export', exp)
        assert r.returncode == 1
        assert r.stderr.strip().endswith(exp + ': ' + msg), r.stderr


# ---- where blockjobd deliberately differs ----

@pytest.mark.blockjobd_only(
    'qemu-storage-daemon 7.2 aborts on blockdev-del of a node whose bitmap '
    'another node\'s export serves (bdrv_release_dirty_bitmap_locked: '
    'Assertion !bdrv_dirty_bitmap_busy)')
def test_exported_bitmap_keeps_its_node(daemon):
    """A {node, name} bitmap may live on a node outside the export's
    chain: the export keeps that node, so it cannot be deleted under the
    bitmap's readers."""
    d = daemon
    q = d.qmp
    for n in ('a', 'other'):
        q.execute('blockdev-add', driver='null-co', node_name=n,
                  size=4 * MiB)
    q.execute('block-dirty-bitmap-add', node='other', name='ob',
              disabled=True)
    start_server(d)
    export(d, id='e', node_name='a',
           bitmaps=[{'node': 'other', 'name': 'ob'}])
    with pytest.raises(QMPError) as e:
        q.execute('blockdev-del', node_name='other')
    assert e.value.desc == 'Block device other is in use'
    assert nbdinfo_map(uri(d, 'a'), 'qemu:dirty-bitmap:ob') == \
        [(0, 4 * MiB, 0)]
    q.execute('block-export-del', id='e')
    q.wait_event('BLOCK_EXPORT_DELETED')
    q.execute('blockdev-del', node_name='other')


@pytest.mark.blockjobd_only(
    'qemu-storage-daemon 7.2 aborts when a client of an iothread export '
    'disconnects (nbd_blockdev_client_closed: Assertion '
    'qemu_in_main_thread()), bitmaps or not')
def test_iothread_export_with_bitmap(daemon_factory):
    """Connections of an iothread export read its bitmaps in that thread,
    where the node's writes mark them; a bitmap of a node in another
    thread is refused."""
    d = daemon_factory('--object', 'iothread,id=io0')
    q = d.qmp
    for n in ('a', 'b'):
        q.execute('blockdev-add', driver='null-co', node_name=n,
                  size=4 * MiB)
    q.execute('block-dirty-bitmap-add', node='a', name='bm')
    q.execute('block-dirty-bitmap-add', node='b', name='bb', disabled=True)
    start_server(d)
    export(d, id='e', node_name='a', writable=True, iothread='io0',
           bitmaps=['bm'], allocation_depth=True)
    h = nbd.NBD()
    h.connect_uri(uri(d, 'a'))
    h.pwrite(b'1' * 512, MiB)
    h.shutdown()
    assert dirty_ranges(uri(d, 'a'), 'bm') == [(MiB, GRAN)]
    assert nbdinfo_map(uri(d, 'a'), 'qemu:allocation-depth') == \
        [(0, 4 * MiB, 1)]
    assert export_err(d, id='e2', node_name='a', name='a2',
                      bitmaps=[{'node': 'b', 'name': 'bb'}]) == \
        "Bitmap 'bb' is not in the iothread of node 'a'"
