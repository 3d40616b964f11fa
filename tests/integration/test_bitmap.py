"""Named dirty bitmaps: the block-dirty-bitmap-* commands with
qemu-storage-daemon 7.2's defaults and messages, query-named-block-nodes,
and persistence in qcow2 images (qemu-img bitmap both ways, clean quit,
SIGKILL).  Every expectation here was checked against
qemu-storage-daemon 7.2 (BLOCKJOBD_BIN=qemu-storage-daemon).
"""

import hashlib
import json
import signal

import pytest

from bjtest import QMPError, is_qsd, nbd_connect, nbd_export, qemu_img, qemu_io

MiB = 1024 * 1024


def bitmaps_of(qmp, node):
    for n in qmp.execute('query-named-block-nodes'):
        if n['node-name'] == node:
            return n.get('dirty-bitmaps')
    raise AssertionError('no node %s' % node)


def qemu_sha256(bits_set, nbits):
    """The hash qemu reports: level-0 words (64-bit, little-endian)."""
    buf = bytearray(((nbits + 63) // 64) * 8)
    for b in bits_set:
        buf[b // 8] |= 1 << (b % 8)
    return hashlib.sha256(bytes(buf)).hexdigest()


def err(qmp, cmd, **args):
    with pytest.raises(QMPError) as e:
        qmp.execute(cmd, dict(args))
    assert e.value.cls == 'GenericError'
    return e.value.desc


def qcow2_args(path, node='d'):
    return ('--blockdev', 'driver=file,node-name=%s-file,filename=%s'
            % (node, path),
            '--blockdev', 'driver=qcow2,node-name=%s,file=%s-file'
            % (node, node))


def info_bitmaps(path):
    out = qemu_img('info', '--output=json', '-U', path).stdout
    data = json.loads(out)['format-specific']['data']
    return data.get('bitmaps', [])


def check_clean(path):
    r = qemu_img('check', path, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'No errors were found' in r.stdout


@pytest.fixture
def img(workdir):
    p = str(workdir / 'a.qcow2')
    qemu_img('create', '-f', 'qcow2', p, '1M')
    return p


def test_add_defaults_and_errors(daemon_factory, workdir, img):
    big = str(workdir / 'big.qcow2')
    qemu_img('create', '-f', 'qcow2', '-o', 'cluster_size=2M', big, '8M')
    small = str(workdir / 'small.qcow2')
    qemu_img('create', '-f', 'qcow2', '-o', 'cluster_size=512', small, '1M')
    d = daemon_factory(*qcow2_args(img), *qcow2_args(big, 'd2'),
                       *qcow2_args(small, 'd3'),
                       '--blockdev', 'driver=null-co,node-name=n,size=1048576')
    q = d.qmp
    q.execute('block-dirty-bitmap-add', node='d', name='b0')
    assert err(q, 'block-dirty-bitmap-add', node='d', name='b0') == \
        'Bitmap already exists: b0'
    assert err(q, 'block-dirty-bitmap-add', node='nope', name='b0') == \
        "Cannot find device='nope' nor node-name='nope'"
    assert err(q, 'block-dirty-bitmap-add', node='d', name='') == \
        'Bitmap name cannot be empty'
    assert err(q, 'block-dirty-bitmap-add', node='d', name='x' * 1024) == \
        'Bitmap name too long: ' + 'x' * 1024
    for g in (1000, 256, 0):
        assert err(q, 'block-dirty-bitmap-add', node='d', name='g',
                   granularity=g) == \
            'Granularity must be power of 2 and at least 512'
    for g in (-1, 2 ** 32):
        assert err(q, 'block-dirty-bitmap-add', node='d', name='g',
                   granularity=g) == \
            "Parameter 'granularity' expects uint32_t"
    for node in ('n', 'd-file'):
        assert err(q, 'block-dirty-bitmap-add', node=node, name='p',
                   persistent=True) == \
            "Can't store persistent bitmaps to %s: Operation not supported" \
            % node
    q.execute('block-dirty-bitmap-add', node='d', name='big',
              granularity=2 ** 31)
    q.execute('block-dirty-bitmap-add', node='d', name='dis', disabled=True)
    q.execute('block-dirty-bitmap-add', node='d', name='p', persistent=True,
              granularity=512)
    q.execute('block-dirty-bitmap-add', node='d2', name='c')
    q.execute('block-dirty-bitmap-add', node='d3', name='c')
    q.execute('block-dirty-bitmap-add', node='n', name='c')
    # Newest first, "inconsistent" only when true, none: member absent.
    assert bitmaps_of(q, 'd') == [
        {'name': 'p', 'recording': True, 'persistent': True, 'busy': False,
         'granularity': 512, 'count': 0},
        {'name': 'dis', 'recording': False, 'persistent': False,
         'busy': False, 'granularity': 65536, 'count': 0},
        {'name': 'big', 'recording': True, 'persistent': False,
         'busy': False, 'granularity': 2 ** 31, 'count': 0},
        {'name': 'b0', 'recording': True, 'persistent': False,
         'busy': False, 'granularity': 65536, 'count': 0},
    ]
    # Default granularity: the cluster size clamped to 4 KiB..64 KiB.
    assert bitmaps_of(q, 'd2')[0]['granularity'] == 65536
    assert bitmaps_of(q, 'd3')[0]['granularity'] == 4096
    assert bitmaps_of(q, 'n')[0]['granularity'] == 65536
    assert bitmaps_of(q, 'd-file') is None


def test_lookup_errors(daemon):
    q = daemon.qmp
    q.execute('blockdev-add', driver='null-co', node_name='n', size=MiB)
    q.execute('blockdev-add', driver='null-co', node_name='n2',
              size=2 * MiB)
    q.execute('block-dirty-bitmap-add', node='n', name='a')
    q.execute('block-dirty-bitmap-add', node='n2', name='b')
    for cmd in ('remove', 'clear', 'enable', 'disable'):
        assert err(q, 'block-dirty-bitmap-' + cmd, node='n', name='zz') == \
            "Dirty bitmap 'zz' not found"
        assert err(q, 'block-dirty-bitmap-' + cmd, node='zz', name='a') == \
            "Node 'zz' not found"
    assert err(q, 'x-debug-block-dirty-bitmap-sha256', node='n',
               name='zz') == "Dirty bitmap 'zz' not found"
    assert err(q, 'block-dirty-bitmap-merge', node='n', target='zz',
               bitmaps=['a']) == "Dirty bitmap 'zz' not found"
    assert err(q, 'block-dirty-bitmap-merge', node='n', target='a',
               bitmaps=['zz']) == "Dirty bitmap 'zz' not found"
    assert err(q, 'block-dirty-bitmap-merge', node='n', target='a',
               bitmaps=[{'node': 'zz', 'name': 'b'}]) == \
        "Node 'zz' not found"
    assert err(q, 'block-dirty-bitmap-merge', node='n', target='a',
               bitmaps=[{'node': 'n2', 'name': 'b'}]) == \
        ('Bitmaps are of different sizes (destination size is 1048576, '
         'source size is 2097152) and can\'t be merged')
    assert err(q, 'block-dirty-bitmap-merge', node='n', target='a',
               bitmaps=[3]) == \
        "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr"
    assert err(q, 'block-dirty-bitmap-merge', node='n', target='a',
               bitmaps=[{'node': 'n'}]) == \
        "Parameter 'bitmaps[0].name' is missing"
    q.execute('block-dirty-bitmap-enable', node='n', name='a')
    q.execute('block-dirty-bitmap-disable', node='n', name='a')
    assert bitmaps_of(q, 'n')[0]['recording'] is False
    q.execute('block-dirty-bitmap-remove', node='n', name='a')
    assert bitmaps_of(q, 'n') is None


def test_writes_mark_merge_sha256(daemon, workdir, img):
    """NBD writes mark enabled bitmaps only; merge (other nodes, other
    granularities) and clear; the hash is qemu's."""
    pytest.importorskip('nbd')
    q = daemon.qmp
    q.execute('blockdev-add', driver='file', node_name='f', filename=img)
    q.execute('blockdev-add', driver='qcow2', node_name='d', file='f')
    q.execute('blockdev-add', driver='null-co', node_name='n', size=MiB)
    q.execute('block-dirty-bitmap-add', node='d', name='on')
    q.execute('block-dirty-bitmap-add', node='d', name='fine',
              granularity=512)
    q.execute('block-dirty-bitmap-add', node='d', name='off', disabled=True)
    q.execute('block-dirty-bitmap-add', node='n', name='other')
    empty = q.execute('x-debug-block-dirty-bitmap-sha256', node='d',
                      name='on')['sha256']
    assert empty == qemu_sha256([], 16)
    sock = nbd_export(daemon, 'd', 'x')
    h = nbd_connect(sock, 'x')
    h.pwrite(b'\1' * 4096, 70000)          # granules 1 (64k) / 136..144
    h.pwrite(b'\2' * 512, 5 * 65536)       # granule 5 / 640
    h.flush()
    h.shutdown()
    bms = {b['name']: b for b in bitmaps_of(q, 'd')}
    assert bms['on']['count'] == 2 * 65536
    assert bms['fine']['count'] == 10 * 512
    assert bms['off']['count'] == 0
    assert q.execute('x-debug-block-dirty-bitmap-sha256', node='d',
                     name='on')['sha256'] == qemu_sha256([1, 5], 16)
    assert q.execute('x-debug-block-dirty-bitmap-sha256', node='d',
                     name='fine')['sha256'] == \
        qemu_sha256(list(range(136, 145)) + [640], 2048)
    # A fine source dirties whole coarse granules; across nodes too.
    q.execute('block-dirty-bitmap-merge', node='d', target='off',
              bitmaps=['fine'])
    assert {b['name']: b for b in bitmaps_of(q, 'd')}['off']['count'] == \
        2 * 65536
    q.execute('block-dirty-bitmap-merge', node='n', target='other',
              bitmaps=[{'node': 'd', 'name': 'on'}])
    assert bitmaps_of(q, 'n')[0]['count'] == 2 * 65536
    q.execute('block-dirty-bitmap-clear', node='d', name='on')
    assert q.execute('x-debug-block-dirty-bitmap-sha256', node='d',
                     name='on')['sha256'] == empty
    q.execute('block-export-del', id='e0')
    q.wait_event('BLOCK_EXPORT_DELETED')


def test_load_qemu_img_bitmaps_and_store_on_quit(daemon_factory, workdir):
    """Bitmaps qemu-img made and qemu-io filled are loaded with their
    contents; a clean quit stores ours so qemu-img lists and edits them."""
    p = str(workdir / 'c.qcow2')
    qemu_img('create', '-f', 'qcow2', p, '4M')
    qemu_img('bitmap', '--add', p, 'bmA')
    qemu_img('bitmap', '--add', '-g', '512', '--disable', p, 'bmB')
    qemu_io('-f', 'qcow2', '-c', 'write 0 64k', '-c', 'write 1M 1k', p)
    d = daemon_factory(*qcow2_args(p))
    q = d.qmp
    bms = {b['name']: b for b in bitmaps_of(q, 'd')}
    assert bms['bmA'] == {'name': 'bmA', 'recording': True,
                          'persistent': True, 'busy': False,
                          'granularity': 65536, 'count': 2 * 65536}
    assert bms['bmB']['recording'] is False and bms['bmB']['count'] == 0
    assert q.execute('x-debug-block-dirty-bitmap-sha256', node='d',
                     name='bmA')['sha256'] == qemu_sha256([0, 16], 64)
    # While open read-write, the image says in use.
    flags = {b['name']: b['flags'] for b in info_bitmaps(p)}
    assert flags == {'bmA': ['in-use', 'auto'], 'bmB': ['in-use']}
    q.execute('block-dirty-bitmap-add', node='d', name='new',
              persistent=True, granularity=4096)
    q.execute('block-dirty-bitmap-merge', node='d', target='new',
              bitmaps=['bmA'])
    q.execute('block-dirty-bitmap-remove', node='d', name='bmB')
    q.execute('block-dirty-bitmap-add', node='d', name='volatile')
    d.stop()
    got = {b['name']: (b['granularity'], b['flags'])
           for b in info_bitmaps(p)}
    assert got == {'bmA': (65536, ['auto']), 'new': (4096, ['auto'])}
    check_clean(p)
    # qemu-img edits what we stored; we load its edits.
    qemu_img('bitmap', '--disable', p, 'new')
    qemu_img('bitmap', '--add', p, 'fromimg')
    qemu_img('bitmap', '--merge', 'bmA', p, 'fromimg')
    d = daemon_factory(*qcow2_args(p))
    q = d.qmp
    bms = {b['name']: b for b in bitmaps_of(q, 'd')}
    assert set(bms) == {'bmA', 'new', 'fromimg'}
    assert bms['new']['recording'] is False
    assert bms['new']['count'] == 2 * 65536
    assert bms['fromimg']['count'] == 2 * 65536
    sha = q.execute('x-debug-block-dirty-bitmap-sha256', node='d',
                    name='new')['sha256']
    assert sha == qemu_sha256(list(range(16)) + list(range(256, 272)), 1024)
    q.execute('block-dirty-bitmap-remove', node='d', name='bmA')
    q.execute('block-dirty-bitmap-remove', node='d', name='new')
    q.execute('block-dirty-bitmap-remove', node='d', name='fromimg')
    d.stop()
    assert info_bitmaps(p) == []
    check_clean(p)


def test_sigkill_leaves_bitmap_inconsistent(daemon_factory, workdir):
    """A writer killed with the image open leaves its bitmaps in_use: the
    next open reports them inconsistent and refuses them until removed."""
    p = str(workdir / 'k.qcow2')
    qemu_img('create', '-f', 'qcow2', p, '4M')
    qemu_img('bitmap', '--add', p, 'bm')
    d = daemon_factory(*qcow2_args(p))
    d.qmp.execute('block-dirty-bitmap-add', node='d', name='mine',
                  persistent=True)
    d.send_signal(signal.SIGKILL)
    d.wait()
    d.check(expect_rc=None)
    if is_qsd():
        assert {b['name']: b['flags'] for b in info_bitmaps(p)} == \
            {'bm': ['in-use', 'auto']}       # 'mine' was never stored
    else:
        # blockjobd stores a persistent bitmap at once and keeps both
        # crash-consistent (test_bitmap_crash.py)...
        assert {b['name']: b['flags'] for b in info_bitmaps(p)} == \
            {'bm': ['in-use', 'auto'], 'mine': ['in-use', 'auto']}
        # ...until another writer opens the image: qemu-img clears our
        # autoclear bit, and what is left in use is inconsistent, as here.
        qemu_img('bitmap', '--remove', p, 'mine')
    check_clean(p)
    d = daemon_factory(*qcow2_args(p),
                       '--blockdev', 'driver=null-co,node-name=n,size=4194304')
    q = d.qmp
    assert bitmaps_of(q, 'd') == [
        {'name': 'bm', 'recording': False, 'persistent': True,
         'busy': False, 'granularity': 65536, 'count': 0,
         'inconsistent': True}]
    msg = "Bitmap 'bm' is inconsistent and cannot be used"
    for cmd in ('clear', 'enable', 'disable'):
        assert err(q, 'block-dirty-bitmap-' + cmd, node='d', name='bm') == msg
    q.execute('block-dirty-bitmap-add', node='n', name='x')
    assert err(q, 'block-dirty-bitmap-merge', node='n', target='x',
               bitmaps=[{'node': 'd', 'name': 'bm'}]) == msg
    assert err(q, 'block-dirty-bitmap-merge', node='d', target='bm',
               bitmaps=['bm']) == msg
    assert err(q, 'block-dirty-bitmap-add', node='d', name='bm',
               persistent=True) == 'Bitmap already exists: bm'
    # Kept as it is (in use) over a clean quit...
    d.stop()
    assert {b['name']: b['flags'] for b in info_bitmaps(p)} == \
        {'bm': ['in-use', 'auto']}
    check_clean(p)
    # ...until removed.
    d = daemon_factory(*qcow2_args(p))
    d.qmp.execute('block-dirty-bitmap-remove', node='d', name='bm')
    d.stop()
    assert info_bitmaps(p) == []
    check_clean(p)


def test_read_only_node_loads_bitmaps(daemon_factory, workdir):
    p = str(workdir / 'r.qcow2')
    qemu_img('create', '-f', 'qcow2', p, '1M')
    qemu_img('bitmap', '--add', p, 'bm')
    qemu_io('-f', 'qcow2', '-c', 'write 0 1k', p)
    d = daemon_factory(
        '--blockdev', 'driver=file,node-name=f,filename=%s,read-only=on' % p,
        '--blockdev', 'driver=qcow2,node-name=d,file=f,read-only=on')
    bms = bitmaps_of(d.qmp, 'd')
    assert [(b['name'], b['count']) for b in bms] == [('bm', 65536)]
    # An auto bitmap records on a read-only node too, as qsd 7.2 says.
    assert bms[0]['recording'] is True and bms[0]['persistent'] is True
    d.stop()
    assert {b['name']: b['flags'] for b in info_bitmaps(p)} == \
        {'bm': ['auto']}
    check_clean(p)


def test_nbd_writes_survive_clean_quit(daemon_factory, workdir):
    """Writes through an NBD export mark a persistent bitmap; a clean quit
    stores exactly those granules, and qemu-img reads them back."""
    pytest.importorskip('nbd')
    p = str(workdir / 'w.qcow2')
    qemu_img('create', '-f', 'qcow2', p, '8M')
    d = daemon_factory(*qcow2_args(p))
    q = d.qmp
    q.execute('block-dirty-bitmap-add', node='d', name='inc',
              persistent=True)
    sock = nbd_export(d, 'd', 'x')
    h = nbd_connect(sock, 'x')
    for off in (0, 3 * MiB + 100, 8 * MiB - 512):
        h.pwrite(b'\5' * 512, off)
    h.flush()
    h.shutdown()
    want = qemu_sha256([0, 48, 127], 128)
    assert q.execute('x-debug-block-dirty-bitmap-sha256', node='d',
                     name='inc')['sha256'] == want
    d.stop()
    check_clean(p)
    assert {b['name']: b['flags'] for b in info_bitmaps(p)} == \
        {'inc': ['auto']}
    # qemu-img copies our bits into a bitmap of its own; we load both.
    qemu_img('bitmap', '--add', p, 'copy')
    qemu_img('bitmap', '--merge', 'inc', p, 'copy')
    d = daemon_factory(*qcow2_args(p))
    for name in ('inc', 'copy'):
        assert d.qmp.execute('x-debug-block-dirty-bitmap-sha256', node='d',
                             name=name)['sha256'] == want
    d.stop()
    check_clean(p)
