"""qcow2 through the daemon: blockdev-add, query output, open errors, and
interop both ways over an NBD export (when the daemon has exports).

Expectations were taken from qemu-storage-daemon 7.2; the file runs
unchanged against it (BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)).
qemu-img check and compare judge what the daemon wrote; images qemu-img and
qemu-io wrote must read back byte-identical.
"""

import json
import os
import random
import signal
import struct

import pytest

import bjtest
from bjtest import QMPError, qemu_img, qemu_io

nbd = pytest.importorskip('nbd')


# ---- helpers ----

def p(workdir, name):
    return os.path.join(str(workdir), name)


def add_qcow2(qmp, path, name='q', **extra):
    opts = {'driver': 'qcow2', 'node-name': name,
            'file': {'driver': 'file', 'filename': path}}
    opts.update(extra)
    return qmp.execute('blockdev-add', opts)


def add_error(qmp, path, **extra):
    with pytest.raises(QMPError) as e:
        add_qcow2(qmp, path, **extra)
    assert e.value.cls == 'GenericError'
    return e.value.desc


def poke(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


def check_clean(path):
    r = qemu_img('check', '-f', 'qcow2', path, check=False)
    assert r.returncode == 0 and 'No errors were found' in r.stdout, \
        r.stdout + r.stderr


def check_same(raw, img):
    r = qemu_img('compare', '-f', 'raw', '-F', 'qcow2', raw, img,
                 check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def random_ops(h, ref, size, cs, n, seed, trims=True):
    """Random writes, zeroes and (whole-cluster) trims on the export and
    the same on the raw reference file."""
    rng = random.Random(seed)
    with open(ref, 'r+b') as f:
        for i in range(n):
            kind = rng.randrange(10)
            length = rng.randrange(1, 3 * cs + 1000)
            off = rng.randrange(0, size - length)
            if kind < 7:
                data = bytes([(i + 1) & 0xff]) * length
                data = bytearray(data)
                for k in range(0, length, 97):
                    data[k] = rng.randrange(256)
                h.pwrite(bytes(data), off)
                f.seek(off)
                f.write(data)
            elif kind < 9 or not trims:
                h.zero(length, off)
                f.seek(off)
                f.write(bytes(length))
            else:
                off = off // cs * cs
                length = (length + cs - 1) // cs * cs
                if off + length > size:
                    continue
                h.trim(length, off)
                f.seek(off)
                f.write(bytes(length))
            if i % 40 == 39:
                h.flush()
                roff = rng.randrange(0, size - 65536)
                rlen = rng.randrange(1, 65536)
                f.flush()
                with open(ref, 'rb') as g:
                    g.seek(roff)
                    assert h.pread(rlen, roff) == g.read(rlen)
    h.flush()


# ---- query and open errors ----

def test_query_chain(daemon, workdir):
    """A chain opened from the header's relative names shows up as qemu
    shows it: depth, backing names, format-specific data."""
    os.mkdir(p(workdir, 'sub'))
    qemu_img('create', '-f', 'qcow2', p(workdir, 'sub/base.qcow2'), '16M')
    qemu_img('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2',
             p(workdir, 'sub/mid.qcow2'))
    qemu_img('create', '-f', 'qcow2', '-o', 'cluster_size=4096',
             '-b', 'sub/mid.qcow2', '-F', 'qcow2', p(workdir, 'top.qcow2'))
    add_qcow2(daemon.qmp, p(workdir, 'top.qcow2'), name='top')
    nodes = daemon.qmp.execute('query-named-block-nodes')
    top = [n for n in nodes if n['node-name'] == 'top'][0]
    assert top['drv'] == 'qcow2'
    assert top['backing_file_depth'] == 2
    assert top['ro'] is False
    img = top['image']
    assert img['format'] == 'qcow2'
    assert img['virtual-size'] == 16 << 20
    assert img['cluster-size'] == 4096
    assert img['backing-filename'] == 'sub/mid.qcow2'
    assert img['backing-filename-format'] == 'qcow2'
    assert img['full-backing-filename'] == p(workdir, 'sub/mid.qcow2')
    assert img['format-specific'] == {
        'type': 'qcow2',
        'data': {'compat': '1.1', 'compression-type': 'zlib',
                 'lazy-refcounts': False, 'refcount-bits': 16,
                 'corrupt': False, 'extended-l2': False}}
    mid = img['backing-image']
    assert mid['filename'] == p(workdir, 'sub/mid.qcow2')
    assert mid['backing-filename'] == 'base.qcow2'
    assert mid['backing-image']['filename'] == p(workdir, 'sub/base.qcow2')
    # the implicit backing nodes are read-only
    implicit = [n for n in nodes if n['node-name'] != 'top'
                and n['drv'] == 'qcow2']
    assert len(implicit) == 2
    assert all(n['ro'] for n in implicit)
    daemon.qmp.execute('blockdev-del', node_name='top')


def test_v2_format_specific(daemon, workdir):
    qemu_img('create', '-f', 'qcow2', '-o', 'compat=0.10',
             p(workdir, 'v2.qcow2'), '1M')
    add_qcow2(daemon.qmp, p(workdir, 'v2.qcow2'))
    n = [x for x in daemon.qmp.execute('query-named-block-nodes')
         if x['node-name'] == 'q'][0]
    assert n['image']['format-specific'] == {
        'type': 'qcow2',
        'data': {'compat': '0.10', 'compression-type': 'zlib',
                 'refcount-bits': 16}}


@pytest.mark.parametrize('offset,data,message', [
    (20, struct.pack('>I', 63), 'Unsupported cluster size: 2^63'),
    (20, struct.pack('>I', 0), 'Unsupported cluster size: 2^0'),
    (4, struct.pack('>I', 4), 'Unsupported qcow2 version 4'),
    (72, struct.pack('>Q', 1 << 10),
     'Unsupported qcow2 feature(s): Unknown incompatible feature: 400'),
    (96, struct.pack('>I', 7),
     'Reference count entry width too large; may not exceed 64 bits'),
    (36, struct.pack('>I', 0x10000000), 'Active L1 table too large'),
    (40, struct.pack('>Q', 0x30001), 'Active L1 table offset invalid'),
    (48, struct.pack('>Q', 0x10001), 'Reference count table offset invalid'),
    (56, struct.pack('>I', 0x100000), 'Reference count table too large'),
    (100, struct.pack('>I', 100), 'qcow2 header too short'),
    (0, b'QFI\x00', 'Image is not in qcow2 format'),
])
def test_hostile_header(daemon, workdir, offset, data, message):
    path = p(workdir, 'h.qcow2')
    qemu_img('create', '-f', 'qcow2', path, '64M')
    poke(path, offset, data)
    assert add_error(daemon.qmp, path) == message
    # nothing half-opened stays behind
    assert daemon.qmp.execute('query-named-block-nodes') == []


def test_missing_backing(daemon, workdir):
    path = p(workdir, 'nb.qcow2')
    qemu_img('create', '-f', 'qcow2', '-u', '-b', 'nothere.qcow2',
             '-F', 'qcow2', path, '1M')
    assert add_error(daemon.qmp, path) == (
        "Could not open backing file: Could not open '%s': No such file or "
        "directory" % p(workdir, 'nothere.qcow2'))
    # backing: null opens it without
    add_qcow2(daemon.qmp, path, backing=None)


@pytest.mark.blockjobd_only('qemu recurses until it runs out of file '
                            'descriptors or stack')
def test_backing_loop(daemon, workdir):
    qemu_img('create', '-f', 'qcow2', p(workdir, 'la.qcow2'), '1M')
    qemu_img('create', '-f', 'qcow2', '-u', '-b', 'la.qcow2', '-F', 'qcow2',
             p(workdir, 'lb.qcow2'), '1M')
    qemu_img('rebase', '-u', '-f', 'qcow2', '-b', 'lb.qcow2', '-F', 'qcow2',
             p(workdir, 'la.qcow2'))
    msg = add_error(daemon.qmp, p(workdir, 'la.qcow2'), **{'read-only': True})
    assert 'too deep or has a loop' in msg


# ---- interop over NBD ----

SHAPES = [
    ('cluster_size=65536', 64 << 20, 65536, None),
    ('compat=0.10', 32 << 20, 65536, None),
    ('cluster_size=4096,refcount_bits=1', 16 << 20, 4096, None),
    ('cluster_size=512', 8 << 20, 512, None),
    ('cluster_size=512,refcount_bits=64', 8 << 20, 512, None),
    ('cluster_size=2M,refcount_bits=64', 64 << 20, 2 << 20, None),
    ('cluster_size=65536', 32 << 20, 65536, 'chain'),
    ('cluster_size=65536,extended_l2=on', 32 << 20, 65536, 'chain'),
    ('cluster_size=32768,extended_l2=on', 16 << 20, 32768, None),
]


@pytest.mark.parametrize('opts,size,cs,chain', SHAPES)
def test_nbd_writes_interop(daemon, workdir, sockdir, opts, size, cs, chain):
    img = p(workdir, 'img.qcow2')
    ref = p(workdir, 'ref.raw')
    if chain:
        # three layers, relative names, data and zeroes in each
        os.mkdir(p(workdir, 'b'))
        qemu_img('create', '-f', 'qcow2', p(workdir, 'b/base.qcow2'),
                 str(size))
        qemu_io('-f', 'qcow2', '-c', 'write -P 0x11 0 %d' % size,
                p(workdir, 'b/base.qcow2'))
        qemu_img('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2',
                 p(workdir, 'b/mid.qcow2'))
        qemu_io('-f', 'qcow2', '-c', 'write -P 0x22 1M 5M',
                '-c', 'write -z 8M 1M', p(workdir, 'b/mid.qcow2'))
        qemu_img('create', '-f', 'qcow2', '-o', opts, '-b', 'b/mid.qcow2',
                 '-F', 'qcow2', img)
        qemu_img('convert', '-O', 'raw', img, ref)
    else:
        qemu_img('create', '-f', 'qcow2', '-o', opts, img, str(size))
        with open(ref, 'wb') as f:
            f.truncate(size)
    add_qcow2(daemon.qmp, img, discard='unmap')
    h = bjtest.nbd_export_open(daemon, sockdir, 'q')
    # v2 cannot mark discarded clusters zero over a backing file
    random_ops(h, ref, size, cs, 250, seed=size + cs,
               trims=not (chain and 'compat=0.10' in opts))
    bjtest.nbd_export_close(daemon, h)
    check_clean(img)
    check_same(ref, img)


def test_nbd_reads_qemu_images(daemon, workdir, sockdir):
    """Zero clusters (qemu-io write -z), compressed clusters (convert -c),
    data in a backing file: byte-identical to qemu-img convert."""
    base = p(workdir, 'base.qcow2')
    src = p(workdir, 'src.raw')
    with open(src, 'wb') as f:
        rng = random.Random(7)
        for i in range(64):
            # compressible but not trivial
            f.write(bytes(rng.choice(b'abcdefgh') for _ in range(4096)) * 16)
    qemu_img('convert', '-c', '-f', 'raw', '-O', 'qcow2', src, base)
    img = p(workdir, 'top.qcow2')
    qemu_img('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', img)
    qemu_io('-f', 'qcow2', '-c', 'write -P 0x5a 100k 300k',
            '-c', 'write -z 1M 192k', '-c', 'write -z 2000k 10k', img)
    want = p(workdir, 'want.raw')
    qemu_img('convert', '-O', 'raw', img, want)
    add_qcow2(daemon.qmp, img, **{'read-only': True})
    h = bjtest.nbd_export_open(daemon, sockdir, 'q', writable=False)
    with open(want, 'rb') as f:
        data = f.read()
    step = (1 << 20) - 333
    for off in range(0, len(data), step):
        n = min(step, len(data) - off)
        assert h.pread(n, off) == data[off:off + n], off
    bjtest.nbd_export_close(daemon, h)


@pytest.mark.parametrize('opts', ['cluster_size=65536',
                                  'cluster_size=4096,refcount_bits=2',
                                  'cluster_size=512', 'backing'])
def test_crash_keeps_flushed_writes(daemon_factory, workdir, sockdir, opts):
    """SIGKILL during a stream of writes: no corruption (leaks at most) and
    every write acknowledged before the last completed flush is there."""
    img = p(workdir, 'c.qcow2')
    size = 64 << 20
    if opts == 'backing':
        qemu_img('create', '-f', 'qcow2', p(workdir, 'cb.qcow2'), str(size))
        qemu_io('-f', 'qcow2', '-c', 'write -P 0x3c 0 %d' % size,
                p(workdir, 'cb.qcow2'))
        qemu_img('create', '-f', 'qcow2', '-b', 'cb.qcow2', '-F', 'qcow2',
                 img)
    else:
        qemu_img('create', '-f', 'qcow2', '-o', opts, img, str(size))
    d = daemon_factory()
    add_qcow2(d.qmp, img)
    h = bjtest.nbd_export_open(d, sockdir, 'q')
    rng = random.Random(3)
    slots = list(range(size // 65536))
    rng.shuffle(slots)
    durable = {}
    written = {}
    for i, slot in enumerate(slots[:600]):
        data = bytes([i % 251 + 1]) * 4096 + os.urandom(16)
        h.pwrite(data, slot * 65536 + 512)
        written[slot] = data
        if i % 50 == 49:
            h.flush()
            durable = dict(written)
    # a burst in flight when the daemon dies
    for slot in slots[600:700]:
        h.aio_pwrite(os.urandom(8192), slot * 65536)
    d.send_signal(signal.SIGKILL)
    d.wait(timeout=30)
    d.check(expect_rc=-signal.SIGKILL)
    r = qemu_img('check', '-f', 'qcow2', img, check=False)
    # 0: clean, 3: leaked clusters only; 2 would be corruption
    assert r.returncode in (0, 3), r.stdout + r.stderr
    assert 'ERROR' not in r.stdout
    qemu_img('convert', '-O', 'raw', img, p(workdir, 'after.raw'))
    with open(p(workdir, 'after.raw'), 'rb') as f:
        for slot, data in durable.items():
            f.seek(slot * 65536 + 512)
            assert f.read(len(data)) == data, slot
            if opts == 'backing':
                # the copied-on-write rest of the cluster is the backing's
                f.seek(slot * 65536)
                assert f.read(512) == b'\x3c' * 512, slot
    # and qemu-img can repair what is left to zero errors
    if r.returncode == 3:
        qemu_img('check', '-r', 'all', '-f', 'qcow2', img)
        check_clean(img)


def test_backing_node_reference(daemon, workdir, sockdir):
    """backing given as a node name: reads fall through to that node, and
    writes copy partial clusters from it."""
    base = p(workdir, 'base.raw')
    with open(base, 'wb') as f:
        f.write(b'\x5b' * (4 << 20))
    img = p(workdir, 'top.qcow2')
    qemu_img('create', '-f', 'qcow2', '-u', '-b', 'elsewhere.raw',
             '-F', 'raw', img, '4M')
    daemon.qmp.execute('blockdev-add', {
        'driver': 'raw', 'node-name': 'base', 'read-only': True,
        'file': {'driver': 'file', 'filename': base}})
    add_qcow2(daemon.qmp, img, backing='base', **{'l2-cache-size': 65536,
                                                    'refcount-cache-size':
                                                    262144})
    top = [n for n in daemon.qmp.execute('query-named-block-nodes')
           if n['node-name'] == 'q'][0]
    assert top['backing_file_depth'] == 1
    h = bjtest.nbd_export_open(daemon, sockdir, 'q')
    assert h.pread(4096, 100000) == b'\x5b' * 4096
    h.pwrite(b'\x01' * 1000, 70000)
    h.flush()
    assert h.pread(3000, 69000) == b'\x5b' * 1000 + b'\x01' * 1000 + \
        b'\x5b' * 1000
    bjtest.nbd_export_close(daemon, h)
    daemon.qmp.execute('blockdev-del', node_name='base')
    r = qemu_img('check', '-f', 'qcow2', img, check=False)
    # the header still names elsewhere.raw, which does not exist
    assert 'No errors were found' in r.stdout or 'elsewhere.raw' in r.stderr
    run_out = qemu_io('-f', 'qcow2', '-c', 'read -P 0x5b 65536 4464',
                      '-c', 'read -P 1 70000 1000',
                      '--image-opts',
                      'driver=qcow2,file.filename=%s,backing.driver=raw,'
                      'backing.file.filename=%s' % (img, base),
                      check=False)
    assert 'failed' not in run_out.stdout, run_out.stdout


def test_cache_size_options(daemon, workdir):
    path = p(workdir, 'c.qcow2')
    qemu_img('create', '-f', 'qcow2', path, '1M')
    assert add_error(daemon.qmp, path, **{
        'cache-size': 1 << 20, 'l2-cache-size': 65536,
        'refcount-cache-size': 65536}) == (
        'cache-size, l2-cache-size and refcount-cache-size may not be set '
        'at the same time')
    with pytest.raises(QMPError) as e:
        add_qcow2(daemon.qmp, path, **{'l2-cache-size': 'x'})
    assert e.value.desc == ("Invalid parameter type for 'l2-cache-size', "
                            "expected: integer")
    add_qcow2(daemon.qmp, path, **{'cache-size': 1 << 20})


def test_long_allocation_with_small_refcount_blocks(daemon, workdir):
    """512-byte clusters and 64-bit refcounts: a refcount block covers 64
    clusters.  A persistent bitmap of an 8 GiB image at 512-byte
    granularity has a table of 64 clusters, one contiguous run, which
    crosses ranges that have no refcount block yet: their blocks go after
    it (this used to fail with EFBIG and lose the bitmap)."""
    img = p(workdir, 'small.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-o',
             'cluster_size=512,refcount_bits=64', img, '8G')
    qemu_io('-c', 'write -P 5 0 1M', img)
    daemon.qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'n',
        'file': {'driver': 'file', 'filename': img}})
    daemon.qmp.execute('block-dirty-bitmap-add', node='n', name='b',
                       persistent=True, granularity=512)
    daemon.qmp.execute('blockdev-del', node_name='n')
    qemu_img('check', img)
    info = json.loads(qemu_img('info', '--output=json', img).stdout)
    bitmaps = info['format-specific']['data'].get('bitmaps', [])
    assert [b['name'] for b in bitmaps] == ['b']
    qemu_io('-c', 'read -P 5 0 1M', img)
