"""Persistent qcow2 bitmaps after a crash (docs/bitmaps.md, "After a
crash").

blockjobd keeps the stored copy of every persistent bitmap a superset of
what it recorded (mark-before-write) and vouches for it with an autoclear
bit of its own: after SIGKILL the bitmap is loaded, consistent, with at
least every granule a writer got an answer for.  Any other program opening
the image read-write clears that bit, and the bitmap is inconsistent, as
qemu would report it.  qemu-storage-daemon 7.2 never trusts an in_use
bitmap: those expectations are blockjobd-only (skipped against qsd).
"""
import json
import os
import random
import signal
import struct
import threading
import time

import pytest

from bjtest import is_qsd, qemu_img, qemu_io

MiB = 1024 * 1024
GRAN = 65536
BJ_AUTOCLEAR = 1 << 63
BJ_EXT = 0x424a4343
BITMAPS_EXT = 0x23852875

pytestmark = pytest.mark.skipif(is_qsd(), reason='blockjobd extension: '
                                'qemu reports every in_use bitmap '
                                'inconsistent')


def qcow2_args(path, node='d', opts=''):
    return ('--blockdev', 'driver=file,node-name=%s-file,filename=%s'
            % (node, path),
            '--blockdev', 'driver=qcow2,node-name=%s,file=%s-file%s'
            % (node, node, opts))


def header(path):
    """(autoclear bits, {extension type: data}) of a v3 image."""
    with open(path, 'rb') as f:
        h = f.read(65536)
    autoclear = struct.unpack('>Q', h[88:96])[0]
    pos = struct.unpack('>I', h[100:104])[0]
    exts = {}
    while True:
        t, n = struct.unpack('>II', h[pos:pos + 8])
        if t == 0:
            break
        exts[t] = h[pos + 8:pos + 8 + n]
        pos += 8 + ((n + 7) & ~7)
    return autoclear, exts


def stored_bitmap(path, name, with_table=False):
    """(flags, set of granule indices) of bitmap `name` as stored (and its
    table offset, with with_table)."""
    autoclear, exts = header(path)
    with open(path, 'rb') as f:
        h = f.read(104)
        cs = 1 << struct.unpack('>I', h[20:24])[0]
        size = struct.unpack('>Q', h[24:32])[0]
        nb, _, dsize, doff = struct.unpack('>IIQQ', exts[BITMAPS_EXT][:24])
        f.seek(doff)
        d = f.read(dsize)
        pos = 0
        for _ in range(nb):
            toff, tsz, flags, _, gb, nsz, esz = struct.unpack(
                '>QIIBBHI', d[pos:pos + 24])
            n = d[pos + 24 + esz:pos + 24 + esz + nsz].decode()
            pos += (24 + esz + nsz + 7) & ~7
            if n != name:
                continue
            nbits = (size + (1 << gb) - 1) >> gb
            f.seek(toff)
            table = struct.unpack('>%dQ' % tsz, f.read(8 * tsz))
            bits = set()
            for i, ent in enumerate(table):
                base = i * cs * 8
                off = ent & 0x00fffffffffffe00
                if not off:
                    if ent & 1:
                        bits.update(range(base, min(base + cs * 8, nbits)))
                    continue
                f.seek(off)
                data = f.read(cs)
                for j, byte in enumerate(data):
                    if byte:
                        for k in range(8):
                            if byte >> k & 1 and base + j * 8 + k < nbits:
                                bits.add(base + j * 8 + k)
            return (flags, bits, toff) if with_table else (flags, bits)
    raise AssertionError('no bitmap %s in %s' % (name, path))


def info_bitmaps(path):
    out = qemu_img('info', '--output=json', '-U', path).stdout
    data = json.loads(out)['format-specific']['data']
    return {b['name']: b['flags'] for b in data.get('bitmaps', [])}


def check_ok(path, leaks_ok=False):
    r = qemu_img('check', path, check=False)
    assert r.returncode in ((0, 3) if leaks_ok else (0,)), \
        r.stdout + r.stderr


def granules(off, length):
    return set(range(off // GRAN, (off + length - 1) // GRAN + 1))


def bitmap_info(qmp, node, name):
    for n in qmp.execute('query-named-block-nodes'):
        if n['node-name'] == node:
            for b in n.get('dirty-bitmaps', []):
                if b['name'] == name:
                    return b
    raise AssertionError('no bitmap %s on %s' % (name, node))


def start_export(d, node='d'):
    sock = d.socket_path('nbd.sock')
    d.qmp.execute('nbd-server-start',
                  addr={'type': 'unix', 'data': {'path': sock}})
    d.qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                       'node-name': node, 'name': 'x',
                                       'writable': True})
    return sock


def nbd_client(sock):
    """A libnbd handle on export 'x' at sock."""
    import nbd
    h = nbd.NBD()
    h.set_export_name('x')
    h.connect_unix(sock)
    return h


def bitmap_daemon(daemon_factory, p, size, name, **bitmap):
    """Creates the qcow2 image p (size), starts a daemon on it (node d)
    and adds persistent bitmap name to d (bitmap: more of its arguments);
    returns the daemon."""
    qemu_img('create', '-f', 'qcow2', p, size)
    d = daemon_factory(*qcow2_args(p))
    d.qmp.execute('block-dirty-bitmap-add', node='d', name=name,
                  persistent=True, **bitmap)
    return d


def reload_keeps_granules(daemon_factory, p, want):
    """A new daemon on p loads bitmap b consistent and with at least the
    granules want, and stores it clean (flags 2) with them at its quit."""
    d = daemon_factory(*qcow2_args(p))
    b = bitmap_info(d.qmp, 'd', 'b')
    assert 'inconsistent' not in b
    assert b['count'] >= len(want) * GRAN
    d.stop()
    flags, bits = stored_bitmap(p, 'b')
    assert flags == 2 and want <= bits


def write_ranges(h, byte, ranges):
    """Writes byte over each (offset, length) of ranges through h; returns
    the granules written."""
    written = set()
    for off, n in ranges:
        h.pwrite(byte * n, off)
        written |= granules(off, n)
    return written


def commit_into_bitmap_base(daemon_factory, workdir, base_size, mid_write,
                            mid_size=None):
    """base (base_size, persistent bitmap bb) <- mid (qemu-io mid_write;
    mid_size, when given, its own size) <- top: a daemon opens top and
    commits mid into base.  Returns the daemon and base's path."""
    base = str(workdir / 'base.qcow2')
    mid = str(workdir / 'mid.qcow2')
    top = str(workdir / 'top.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, base_size)
    qemu_img('bitmap', '--add', base, 'bb')
    qemu_img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F',
             'qcow2', mid, *([mid_size] if mid_size else []))
    qemu_io('-c', mid_write, mid)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F',
             'qcow2', top)
    d = daemon_factory('--blockdev', 'driver=qcow2,node-name=top,'
                       'file.driver=file,file.filename=%s' % top)
    d.qmp.execute('block-commit', device='top', job_id='j', top=mid,
                  base=base)
    d.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
    return d, base


def kill(d):
    d.send_signal(signal.SIGKILL)
    d.wait()
    d.check(expect_rc=None)


def test_sigkill_after_nbd_writes_keeps_bitmap(daemon_factory, workdir):
    """Writes acknowledged over NBD before SIGKILL are all in the bitmap
    the next open loads, consistent; the quit after it stores qemu's
    format exactly."""
    pytest.importorskip('nbd')
    p = str(workdir / 'a.qcow2')
    qemu_img('create', '-f', 'qcow2', p, '64M')
    qemu_img('bitmap', '--add', p, 'old')     # made by qemu-img
    d = daemon_factory(*qcow2_args(p, opts=',discard=unmap'))
    q = d.qmp
    q.execute('block-dirty-bitmap-add', node='d', name='new',
              persistent=True)
    # Armed while open: in use, our bit and extension.
    autoclear, exts = header(p)
    assert autoclear & BJ_AUTOCLEAR and BJ_EXT in exts
    assert info_bitmaps(p) == {'old': ['in-use', 'auto'],
                               'new': ['in-use', 'auto']}
    h = nbd_client(start_export(d))
    writes = [(0, 512), (3 * MiB + 100, 70000), (64 * MiB - 512, 512),
              (20 * MiB, 1 * MiB), (3 * GRAN + 5, 18 * GRAN)]
    want = write_ranges(h, b'\5', writes)
    h.zero(128 * 1024, 40 * MiB)
    want |= granules(40 * MiB, 128 * 1024)
    h.trim(65536 * 3, 50 * MiB)
    want |= granules(50 * MiB, 65536 * 3)
    kill(d)
    # qemu-img reads the image as one a writer left open...
    assert info_bitmaps(p) == {'old': ['in-use', 'auto'],
                               'new': ['in-use', 'auto']}
    check_ok(p, leaks_ok=True)
    for name in ('old', 'new'):
        assert stored_bitmap(p, name)[1] == want
    # ...and we load both, consistent, with exactly those granules.
    d = daemon_factory(*qcow2_args(p))
    for name in ('old', 'new'):
        b = bitmap_info(d.qmp, 'd', name)
        assert 'inconsistent' not in b and b['recording'] is True
        assert b['count'] == len(want) * GRAN
    d.stop()
    autoclear, exts = header(p)
    assert autoclear == 1 and BJ_EXT not in exts
    assert info_bitmaps(p) == {'old': ['auto'], 'new': ['auto']}
    check_ok(p, leaks_ok=True)
    r = qemu_img('check', '-r', 'leaks', p, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    check_ok(p)
    for name in ('old', 'new'):
        assert stored_bitmap(p, name) == (2, want)
    # qemu-img edits it as any other image.
    qemu_img('bitmap', '--add', p, 'copy')
    qemu_img('bitmap', '--merge', 'new', p, 'copy')
    assert stored_bitmap(p, 'copy')[1] == want


def writer(sock, seed, acked, stop, lock, phase=None, span=256 * MiB):
    """Random 4 KiB writes and 8 KiB write-zeroes in [0, span) until stop;
    appends (off, n) to acked once answered, or with phase (a one-element
    list the test moves on), (off, n, phase at submit, phase at answer)."""
    h = nbd_client(sock)
    rnd = random.Random(seed)
    buf = bytes([seed]) * 4096
    try:
        while not stop.is_set():
            off = rnd.randrange(0, span // 4096 - 1) * 4096
            kind = rnd.randrange(10)
            n = 8192 if kind == 0 else 4096
            p0 = phase[0] if phase else None
            if phase:
                with lock:
                    acked.append((off, n, p0, None))   # in flight
                    i = len(acked) - 1
            if kind == 0:
                h.zero(8192, off)
            else:
                h.pwrite(buf, off)
            with lock:
                if phase:
                    acked[i] = (off, n, p0, phase[0])
                else:
                    acked.append((off, n))
    except Exception:
        pass          # the daemon died under us


@pytest.mark.parametrize('after', [50, 400])
def test_sigkill_during_concurrent_writes(daemon_factory, workdir, after):
    """SIGKILL while four NBD clients write at random: every range a
    client got an answer for is dirty in the bitmap loaded afterwards."""
    pytest.importorskip('nbd')
    p = str(workdir / 'c.qcow2')
    d = bitmap_daemon(daemon_factory, p, '256M', 'b', granularity=GRAN)
    sock = start_export(d)
    acked, stop, lock = [], threading.Event(), threading.Lock()
    threads = [threading.Thread(target=writer,
                                args=(sock, i + 1, acked, stop, lock))
               for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < after and time.monotonic() < deadline:
        time.sleep(0.01)
    with lock:
        done = list(acked)
    kill(d)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(done) >= after
    want = set()
    for off, n in done:
        want |= granules(off, n)
    check_ok(p, leaks_ok=True)
    flags, bits = stored_bitmap(p, 'b')
    assert flags & 1 and want <= bits
    reload_keeps_granules(daemon_factory, p, want)
    qemu_img('check', '-r', 'leaks', p, check=False)
    check_ok(p)


@pytest.mark.parametrize('how', ['qemu-io', 'qemu-img-bitmap',
                                 'qemu-img-check-r'])
def test_foreign_writer_untrusts(daemon_factory, workdir, how):
    """Another program opening our crashed image read-write clears our
    autoclear bit: the bitmap is then inconsistent, never trusted."""
    p = str(workdir / 'f.qcow2')
    d = bitmap_daemon(daemon_factory, p, '8M', 'b')
    kill(d)
    # A read-only look changes nothing.
    qemu_io('-r', '-c', 'read 0 512', p)
    assert header(p)[0] & BJ_AUTOCLEAR
    if how == 'qemu-io':
        qemu_io('-c', 'write 0 512', p)
    elif how == 'qemu-img-check-r':
        qemu_img('check', '-r', 'all', p, check=False)
    else:
        qemu_img('bitmap', '--add', p, 'other')
    assert not header(p)[0] & BJ_AUTOCLEAR
    d = daemon_factory(*qcow2_args(p))
    assert bitmap_info(d.qmp, 'd', 'b')['inconsistent'] is True
    d.qmp.execute('block-dirty-bitmap-remove', node='d', name='b')
    assert 'b' not in info_bitmaps(p)        # removed at once
    d.stop()
    check_ok(p)


def test_add_and_remove_reach_the_image_at_once(daemon_factory, workdir):
    p = str(workdir / 'r.qcow2')
    d = bitmap_daemon(daemon_factory, p, '8M', 'a')
    q = d.qmp
    q.execute('block-dirty-bitmap-add', node='d', name='t')  # not stored
    q.execute('block-dirty-bitmap-add', node='d', name='off',
              persistent=True, disabled=True)
    assert info_bitmaps(p) == {'a': ['in-use', 'auto'], 'off': ['in-use']}
    q.execute('block-dirty-bitmap-remove', node='d', name='a')
    assert info_bitmaps(p) == {'off': ['in-use']}
    kill(d)
    d = daemon_factory(*qcow2_args(p))
    b = bitmap_info(d.qmp, 'd', 'off')
    assert 'inconsistent' not in b and b['recording'] is False
    d.qmp.execute('block-dirty-bitmap-remove', node='d', name='off')
    autoclear, exts = header(p)
    assert info_bitmaps(p) == {} and not autoclear & BJ_AUTOCLEAR
    assert BJ_EXT not in exts
    kill(d)
    check_ok(p)


def test_reopen_read_only_stores_bitmaps(daemon_factory, workdir):
    """A commit reopens its base read-write and read-only again: the base's
    bitmap records the commit's writes and is stored clean at the second
    reopen, so even a SIGKILL later leaves it consistent for qemu too."""
    d, base = commit_into_bitmap_base(daemon_factory, workdir, '8M',
                                      'write -P 2 1M 128k')
    assert info_bitmaps(base) == {'bb': ['auto']}
    autoclear, exts = header(base)
    assert autoclear == 1 and BJ_EXT not in exts
    kill(d)
    check_ok(base)
    assert stored_bitmap(base, 'bb')[1] == granules(1 * MiB, 128 * 1024)


def test_sigkill_during_incremental_backup(daemon_factory, workdir):
    """While a backup holds the bitmap frozen (its successor records), the
    stored copy still gains every new write: after SIGKILL mid-job the
    bitmap holds its bits from before the job plus the writes during it."""
    pytest.importorskip('nbd')
    p = str(workdir / 's.qcow2')
    t = str(workdir / 't.qcow2')
    qemu_img('create', '-f', 'qcow2', t, '16M')
    d = bitmap_daemon(daemon_factory, p, '16M', 'b')
    q = d.qmp
    h = nbd_client(start_export(d))
    before = [(0, 4096), (5 * MiB, 200000)]
    during = [(1 * MiB, 4096), (15 * MiB, 70000), (5 * MiB, 512)]
    want = write_ranges(h, b'\1', before)
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'tgt',
                               'file': {'driver': 'file', 'filename': t}})
    q.execute('blockdev-backup', {'job-id': 'j', 'device': 'd',
                                  'target': 'tgt', 'sync': 'incremental',
                                  'bitmap': 'b', 'speed': 1})
    for off, n in during:
        h.pwrite(b'\2' * n, off)
        want |= granules(off, n)
    assert [j['device'] for j in q.execute('query-block-jobs')] == ['j']
    kill(d)
    assert stored_bitmap(p, 'b')[1] >= want
    d = daemon_factory(*qcow2_args(p))
    b = bitmap_info(d.qmp, 'd', 'b')
    assert 'inconsistent' not in b and b['count'] >= len(want) * GRAN
    d.stop()
    assert stored_bitmap(p, 'b') == (2, stored_bitmap(p, 'b')[1])
    assert stored_bitmap(p, 'b')[1] >= want
    check_ok(p, leaks_ok=True)


def test_resize_rearms(daemon_factory, workdir):
    """A commit that grows its base re-arms the base's bitmap for the new
    size: the image stays valid for qemu and for us."""
    d, base = commit_into_bitmap_base(daemon_factory, workdir, '4M',
                                      'write -P 2 40M 64k', mid_size='64M')
    kill(d)
    check_ok(base)
    assert info_bitmaps(base) == {'bb': ['auto']}
    assert json.loads(qemu_img('info', '--output=json', base).stdout)[
        'virtual-size'] == 64 * MiB
    # The commit's writes past the old end are in the grown bitmap.
    assert granules(40 * MiB, 65536) <= stored_bitmap(base, 'bb')[1]


def test_no_room_in_header_falls_back_to_qemu_rule(daemon_factory, workdir):
    """512-byte clusters and a long backing file name: cluster 0 has no
    room for our extension; the image still opens, its bitmaps are marked
    in_use in place, and after a crash they are inconsistent, as in
    qemu."""
    p = str(workdir / 'small.qcow2')
    back = 'd' * 200 + '/' + 'x' * 120      # relative to the image
    os.mkdir(str(workdir / back.split('/')[0]))
    qemu_img('create', '-q', '-f', 'raw', str(workdir / back), '8M')
    qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512',
             '-b', back, '-F', 'raw', p, '8M')
    qemu_img('bitmap', '--add', p, 'b')
    args = ('--blockdev', 'driver=file,node-name=d-file,filename=%s' % p,
            '--blockdev', json.dumps({'driver': 'qcow2', 'node-name': 'd',
                                      'file': 'd-file', 'backing': None}))
    d = daemon_factory(*args)
    assert info_bitmaps(p) == {'b': ['in-use', 'auto']}
    kill(d)
    check_ok(p)
    assert not header(p)[0] & BJ_AUTOCLEAR
    d = daemon_factory(*args)
    assert bitmap_info(d.qmp, 'd', 'b')['inconsistent'] is True
    kill(d)
    check_ok(p)


def test_add_remove_keep_armed_bitmaps_in_place(daemon_factory, workdir):
    """Adding or removing a persistent bitmap rewrites the directory but
    leaves the clusters of the others where they are (in place, armed),
    and loses none of their bits across a SIGKILL."""
    pytest.importorskip('nbd')
    p = str(workdir / 'k.qcow2')
    d = bitmap_daemon(daemon_factory, p, '32M', 'a')
    q = d.qmp
    h = nbd_client(start_export(d))
    want = set()

    def write(off, n):
        h.pwrite(b'\7' * n, off)
        want.update(granules(off, n))

    write(0, 4096)
    t0 = stored_bitmap(p, 'a', with_table=True)[2]
    q.execute('block-dirty-bitmap-add', node='d', name='b', persistent=True)
    write(7 * MiB, 300000)
    assert stored_bitmap(p, 'a', with_table=True)[2] == t0
    q.execute('block-dirty-bitmap-remove', node='d', name='b')
    write(31 * MiB, 4096)
    assert stored_bitmap(p, 'a', with_table=True)[2] == t0
    assert info_bitmaps(p) == {'a': ['in-use', 'auto']}
    kill(d)
    assert stored_bitmap(p, 'a')[1] == want
    check_ok(p, leaks_ok=True)
    d = daemon_factory(*qcow2_args(p))
    b = bitmap_info(d.qmp, 'd', 'a')
    assert 'inconsistent' not in b and b['count'] == len(want) * GRAN
    d.stop()
    qemu_img('check', '-r', 'leaks', p, check=False)
    check_ok(p)


@pytest.mark.parametrize('how', ['command', 'transaction'])
def test_merge_into_persistent_bitmap_survives_sigkill(daemon_factory,
                                                       workdir, how):
    """Bits a merge adds to a (disabled) persistent bitmap are in the image
    when the command returns: a SIGKILL right after loses none."""
    p = str(workdir / 'm.qcow2')
    d = bitmap_daemon(daemon_factory, p, '16M', 'dst', disabled=True)
    q = d.qmp
    q.execute('block-dirty-bitmap-add', node='d', name='src')
    sock = start_export(d)
    pytest.importorskip('nbd')
    h = nbd_client(sock)
    want = write_ranges(h, b'\7', [(0, 4096), (5 * MiB + 7, 3 * GRAN),
                                   (16 * MiB - 512, 512)])
    h.shutdown()
    assert stored_bitmap(p, 'dst')[1] == set()
    args = {'node': 'd', 'target': 'dst', 'bitmaps': ['src']}
    if how == 'command':
        q.execute('block-dirty-bitmap-merge', args)
    else:
        q.execute('transaction', actions=[
            {'type': 'block-dirty-bitmap-merge', 'data': args}])
    assert stored_bitmap(p, 'dst')[1] == want
    kill(d)
    d = daemon_factory(*qcow2_args(p))
    b = bitmap_info(d.qmp, 'd', 'dst')
    assert 'inconsistent' not in b and b['recording'] is False
    assert b['count'] == len(want) * GRAN
    d.stop()
    check_ok(p, leaks_ok=True)


def test_enable_persistent_bitmap_under_writes(daemon_factory, workdir):
    """Enabling a persistent bitmap while a client writes: after SIGKILL
    the stored bitmap holds every granule written after the enable
    returned (the enable waits for writes in flight)."""
    pytest.importorskip('nbd')
    p = str(workdir / 'e.qcow2')
    # 256M: writer()'s range
    d = bitmap_daemon(daemon_factory, p, '256M', 'bm', disabled=True)
    q = d.qmp
    sock = start_export(d)
    acked, stop, lock = [], threading.Event(), threading.Lock()
    t = threading.Thread(target=writer, args=(sock, 7, acked, stop, lock))
    t.start()
    try:
        time.sleep(0.3)
        q.execute('block-dirty-bitmap-enable', node='d', name='bm')
        # A write in flight across the enable ended before it returned;
        # its answer reaches `acked` within this pause.
        time.sleep(0.1)
        with lock:
            before = len(acked)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join()
    with lock:
        after = list(acked[before:])
    assert after, 'the writer made no progress'
    kill(d)
    stored = stored_bitmap(p, 'bm')[1]
    for off, n in after:
        assert granules(off, n) <= stored, (off, n)


def test_small_clusters_store_bitmaps_at_clean_quit(daemon_factory,
                                                    workdir):
    """512-byte clusters: with a bitmaps extension the header leaves no
    room for the feature name table, which is then left out (as qemu
    does) instead of failing the store: a clean quit keeps the bits."""
    pytest.importorskip('nbd')
    p = str(workdir / 'small.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', p,
             '8M')
    qemu_img('bitmap', '--add', '-g', '64k', p, 'b')
    d = daemon_factory(*qcow2_args(p))
    h = nbd_client(start_export(d))
    h.pwrite(b'\1' * 4096, 3 * MiB)
    h.shutdown()
    d.stop()
    assert info_bitmaps(p) == {'b': ['auto']}
    check_ok(p, leaks_ok=True)
    assert stored_bitmap(p, 'b')[1] == granules(3 * MiB, 4096)


def wait_stored(p, name, pred, timeout=30):
    """Polls the stored copy of `name` until pred(bits) holds."""
    deadline = time.monotonic() + timeout
    while True:
        bits = stored_bitmap(p, name)[1]
        if pred(bits) or time.monotonic() > deadline:
            return bits
        time.sleep(0.1)


def test_clear_shrinks_stored_copy(daemon_factory, workdir):
    """After block-dirty-bitmap-clear the stored copy becomes exact again
    within seconds: SIGKILL then reloads the bitmap consistent and empty
    (it used to keep every granule written since the open); writes after
    that are recorded and survive the next SIGKILL exactly."""
    pytest.importorskip('nbd')
    p = str(workdir / 'clr.qcow2')
    d = bitmap_daemon(daemon_factory, p, '64M', 'b', granularity=GRAN)
    h = nbd_client(start_export(d))
    w1 = write_ranges(h, b'\1', [(0, 4096), (7 * MiB, 3 * MiB),
                                 (63 * MiB, 512)])
    assert stored_bitmap(p, 'b')[1] == w1
    d.qmp.execute('block-dirty-bitmap-clear', node='d', name='b')
    assert wait_stored(p, 'b', lambda b: not b) == set()
    kill(d)
    check_ok(p, leaks_ok=True)
    assert stored_bitmap(p, 'b') == (3, set())
    d = daemon_factory(*qcow2_args(p))
    b = bitmap_info(d.qmp, 'd', 'b')
    assert 'inconsistent' not in b and b['count'] == 0
    h = nbd_client(start_export(d))
    w2 = write_ranges(h, b'\2', [(5 * MiB, 70000), (40 * MiB, 4096)])
    kill(d)
    assert stored_bitmap(p, 'b')[1] == w2
    d = daemon_factory(*qcow2_args(p))
    b = bitmap_info(d.qmp, 'd', 'b')
    assert 'inconsistent' not in b and b['count'] == len(w2) * GRAN
    d.stop()
    assert stored_bitmap(p, 'b') == (2, w2)
    qemu_img('check', '-r', 'leaks', p, check=False)
    check_ok(p)


def test_incremental_backup_shrinks_stored_copy(daemon_factory, workdir):
    """After an incremental backup succeeds the stored copy drops what it
    copied: SIGKILL after more writes W2 reloads exactly W2's granules."""
    pytest.importorskip('nbd')
    p = str(workdir / 'inc.qcow2')
    t = str(workdir / 'inc-t.qcow2')
    qemu_img('create', '-f', 'qcow2', t, '32M')
    d = bitmap_daemon(daemon_factory, p, '32M', 'bm0', granularity=GRAN)
    q = d.qmp
    h = nbd_client(start_export(d))
    w1 = write_ranges(h, b'\1', [(0, 4096), (9 * MiB, 2 * MiB),
                                 (31 * MiB, 4096)])
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'tgt',
                               'file': {'driver': 'file', 'filename': t}})
    q.execute('blockdev-backup', {'job-id': 'j', 'device': 'd',
                                  'target': 'tgt', 'sync': 'incremental',
                                  'bitmap': 'bm0'})
    ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
    assert 'error' not in ev['data']
    assert bitmap_info(q, 'd', 'bm0')['count'] == 0
    w2 = write_ranges(h, b'\2', [(9 * MiB, 4096), (20 * MiB, 100000)])
    assert w1 - w2
    assert wait_stored(p, 'bm0', lambda b: b == w2) == w2
    kill(d)
    d = daemon_factory(*qcow2_args(p))
    b = bitmap_info(d.qmp, 'd', 'bm0')
    assert 'inconsistent' not in b and b['count'] == len(w2) * GRAN
    d.stop()
    assert stored_bitmap(p, 'bm0') == (2, w2)
    check_ok(p, leaks_ok=True)


def test_resync_under_concurrent_writes(daemon_factory, workdir):
    """A resync racing four NBD writers never loses a write: every range
    submitted after the clear returned and answered before SIGKILL is in
    the reloaded bitmap, and the stored copy did shrink (a region written
    only before the clear is gone from it)."""
    pytest.importorskip('nbd')
    p = str(workdir / 'race.qcow2')
    d = bitmap_daemon(daemon_factory, p, '256M', 'b', granularity=GRAN)
    sock = start_export(d)
    h = nbd_client(sock)
    old = granules(200 * MiB, 8 * MiB)     # the writers stay below 192M
    h.pwrite(b'\7' * (8 * MiB), 200 * MiB)
    h.shutdown()
    assert stored_bitmap(p, 'b')[1] == old
    acked, stop, lock, phase = [], threading.Event(), threading.Lock(), [0]
    threads = [threading.Thread(target=writer,
                                args=(sock, i + 1, acked, stop, lock, phase,
                                      192 * MiB))
               for i in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        phase[0] = 1
        d.qmp.execute('block-dirty-bitmap-clear', node='d', name='b')
        phase[0] = 2
        bits = wait_stored(p, 'b', lambda b: not (b & old))
        assert not (bits & old)
        time.sleep(0.5)
        with lock:
            done = list(acked)
        kill(d)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    want = set()
    for off, n, p0, p1 in done:
        if p0 == 2 and p1 is not None:
            want |= granules(off, n)
    assert len(want) > 10
    flags, bits = stored_bitmap(p, 'b')
    assert flags & 1 and want <= bits and not (bits & old)
    check_ok(p, leaks_ok=True)
    reload_keeps_granules(daemon_factory, p, want)


def test_close_with_resync_pending(daemon_factory, workdir):
    """A node closed right after a clear (the resync still waiting for its
    timer) stores its exact bits at the clean close and nothing is left
    behind; a reopen read-write then arms it again."""
    pytest.importorskip('nbd')
    p = str(workdir / 'pend.qcow2')
    d = bitmap_daemon(daemon_factory, p, '16M', 'b')
    q = d.qmp
    h = nbd_client(start_export(d))
    h.pwrite(b'\1' * 4096, 1 * MiB)
    h.shutdown()
    q.execute('block-export-del', id='e0')
    q.execute('block-dirty-bitmap-clear', node='d', name='b')
    q.execute('blockdev-del', node_name='d')
    assert stored_bitmap(p, 'b') == (2, set())
    d.stop()
    check_ok(p)


def test_clear_shrinks_stored_copy_on_iothread_node(daemon_factory,
                                                    workdir):
    """The resync of a node an export moved into an iothread: the timer
    and the drain are the main loop's, the rewrite runs in the node's
    thread; writes go on afterwards and survive SIGKILL."""
    pytest.importorskip('nbd')
    p = str(workdir / 'io.qcow2')
    qemu_img('create', '-f', 'qcow2', p, '64M')
    sock = str(workdir / 'io-nbd.sock')
    d = daemon_factory(
        '--object', 'iothread,id=io0', *qcow2_args(p),
        '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
        '--export', 'type=nbd,id=e0,node-name=d,name=x,writable=on,'
        'iothread=io0')
    d.qmp.execute('block-dirty-bitmap-add', node='d', name='b',
                  persistent=True, granularity=GRAN)
    h = nbd_client(sock)
    h.pwrite(b'\1' * (2 * MiB), 10 * MiB)
    assert stored_bitmap(p, 'b')[1] == granules(10 * MiB, 2 * MiB)
    d.qmp.execute('block-dirty-bitmap-clear', node='d', name='b')
    assert wait_stored(p, 'b', lambda b: not b) == set()
    h.pwrite(b'\2' * 4096, 30 * MiB)
    kill(d)
    assert stored_bitmap(p, 'b')[1] == granules(30 * MiB, 4096)
    d = daemon_factory(*qcow2_args(p))
    b = bitmap_info(d.qmp, 'd', 'b')
    assert 'inconsistent' not in b and b['count'] == GRAN
    d.stop()
    check_ok(p, leaks_ok=True)
