"""driver=rbd against a real throw-away Ceph cluster (scripts/ceph-cluster.sh:
one ceph-mon, one memstore ceph-osd on 127.0.0.1, pool "rbd").

Bytes are checked with qemu-img over the rbd: protocol (qemu-block-extra).
The cluster is started once per session; the tests skip, with the reason,
only when it cannot start.  Errors are qemu-storage-daemon 7.2's texts.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from bjtest import (QMPError, REPO, is_qsd, nbd_connect, nbd_export,
                    nbd_export_teardown, qemu_img, qemu_io, wait_until)

MiB = 1 << 20
SCRIPT = os.path.join(REPO, 'scripts', 'ceph-cluster.sh')


class Cluster:
    def __init__(self, d):
        self.dir = d
        self.conf = os.path.join(d, 'ceph.conf')

    def uri(self, image):
        return 'rbd:rbd/%s:conf=%s' % (image, self.conf)

    def opts(self, image, **extra):
        o = {'driver': 'rbd', 'pool': 'rbd', 'image': image,
             'conf': self.conf}
        o.update(extra)
        return o

    def create(self, image, size, *io):
        """A new raw image in pool rbd, with qemu-io commands applied."""
        qemu_img('create', '-f', 'raw', self.uri(image), str(size))
        for c in io:
            qemu_io('-f', 'raw', '-c', c, self.uri(image))
        return image

    def remove(self, image):
        subprocess.run(['rbd', '-c', self.conf, 'rm', 'rbd/' + image],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)

    def exists(self, image):
        return subprocess.run(['rbd', '-c', self.conf, 'info',
                               'rbd/' + image], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              timeout=60).returncode == 0


def cluster_start(d):
    """Starts a cluster in d; returns (Cluster, None) or (None, reason)."""
    try:
        p = subprocess.run([SCRIPT, 'start', d], capture_output=True,
                           text=True, timeout=120)
    except subprocess.TimeoutExpired:
        subprocess.run([SCRIPT, 'stop', d], timeout=60)
        return None, 'ceph-cluster.sh start timed out'
    if p.returncode != 0:
        return None, (p.stderr.strip() or 'exit %d' % p.returncode)
    return Cluster(d), None


@pytest.fixture(scope='session')
def ceph():
    d = tempfile.mkdtemp(prefix='bj-ceph-')
    c, reason = cluster_start(d)
    if c is None:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip('ceph cluster did not start: %s' % reason)
    yield c
    subprocess.run([SCRIPT, 'stop', d], timeout=60)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def img(ceph):
    """A fresh image name, removed after the test."""
    name = 'bj-' + uuid.uuid4().hex[:12]
    yield name
    ceph.remove(name)


def compare(a, b, fa='raw', fb='raw'):
    return subprocess.run(['qemu-img', 'compare', '-f', fa, '-F', fb, a, b],
                          capture_output=True, text=True, timeout=120)


def assert_same(a, b, fa='raw', fb='raw'):
    p = compare(a, b, fa, fb)
    assert p.returncode == 0, p.stdout + p.stderr


def add_error(qmp, opts):
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-add', opts)
    return e.value.desc


def wait_job(qmp, jid, timeout=60):
    """Waits for jid's BLOCK_JOB_COMPLETED; returns its data."""
    return qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=timeout,
                          match={'data': {'device': jid}})['data']


# ---- open, I/O -----------------------------------------------------------

def test_rbd_io_matches_qemu(daemon, ceph, img, workdir):
    """Reads, writes, write-zeroes (both kinds), discard (of a whole
    object, which then reads as zeroes) and flush through
    an NBD export of an rbd node; the image equals a local copy that got
    the same operations."""
    qmp = daemon.qmp
    size = 16 * MiB
    ceph.create(img, size, 'write -P 0x11 0 4M')
    local = os.path.join(workdir, 'local.raw')
    qemu_img('create', '-f', 'raw', local, str(size))
    qemu_io('-f', 'raw', '-c', 'write -P 0x11 0 4M', local)
    qmp.execute('blockdev-add', ceph.opts(img, discard='unmap',
                                          **{'node-name': 'r'}))
    h = nbd_connect(nbd_export(daemon, 'r', 'r'), 'r')
    assert h.get_size() == size
    assert h.pread(4096, 0) == b'\x11' * 4096
    h.pwrite(b'\x22' * 65536, 5 * MiB)
    h.zero(MiB, 6 * MiB)                          # may punch
    h.zero(MiB, 7 * MiB, flags=0x2)               # NO_HOLE
    h.pwrite(b'\x55' * (4 * MiB), 8 * MiB)
    h.trim(4 * MiB, 8 * MiB)      # a whole object: reads zero after
    h.flush()
    assert h.pread(65536, 5 * MiB) == b'\x22' * 65536
    qemu_io('-f', 'raw', '-c', 'write -P 0x22 5M 64k', '-c',
            'write -z 6M 1M', '-c', 'write -z 7M 1M', '-c',
            'write -z 8M 4M', local)
    nbd_export_teardown(qmp, h, 'r')
    assert_same(ceph.uri(img), local)


def test_rbd_query_and_info(daemon, ceph, img):
    qmp = daemon.qmp
    ceph.create(img, 8 * MiB)
    qmp.execute('blockdev-add', ceph.opts(img, **{'node-name': 'r'}))
    n = [x for x in qmp.execute('query-named-block-nodes')
         if x['node-name'] == 'r'][0]
    assert n['drv'] == 'rbd'
    assert n['image']['virtual-size'] == 8 * MiB
    assert n['image']['cluster-size'] == 4 * MiB
    qmp.execute('blockdev-del', node_name='r')


def test_rbd_snapshot_read_only(daemon, ceph, img):
    qmp = daemon.qmp
    ceph.create(img, 4 * MiB, 'write -P 0x33 0 1M')
    subprocess.run(['rbd', '-c', ceph.conf, 'snap', 'create',
                    'rbd/%s@s1' % img], check=True, timeout=60,
                   capture_output=True)
    qemu_io('-f', 'raw', '-c', 'write -P 0x44 0 1M', ceph.uri(img))
    assert add_error(qmp, ceph.opts(img, snapshot='s1',
                                    **{'node-name': 'r'})) == \
        'rbd snapshots are read-only'
    qmp.execute('blockdev-add', ceph.opts(img, snapshot='s1',
                                          **{'node-name': 'r',
                                             'read-only': True}))
    sock = daemon.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'r'})
    h = nbd_connect(sock, 'r')
    assert h.pread(4096, 0) == b'\x33' * 4096
    h.shutdown()
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='r')
    subprocess.run(['rbd', '-c', ceph.conf, 'snap', 'purge', 'rbd/' + img],
                   timeout=60, capture_output=True)


# ---- errors ----------------------------------------------------------------

def test_rbd_open_errors(daemon, ceph, img, workdir):
    """qsd 7.2's messages; nothing is left open, the daemon goes on."""
    qmp = daemon.qmp
    ceph.create(img, 4 * MiB)
    base = {'node-name': 'r'}
    assert add_error(qmp, dict(ceph.opts(img, pool='nopool'), **base)) == \
        'error opening pool nopool: No such file or directory'
    assert add_error(qmp, dict(ceph.opts('nope'), **base)) == \
        'error reading header from nope: No such file or directory'
    bad = os.path.join(workdir, 'missing.conf')
    assert add_error(qmp, dict(ceph.opts(img, conf=bad), **base)) == \
        'error reading conf file %s: No such file or directory' % bad
    assert add_error(qmp, dict(ceph.opts(img, snapshot='nosnap',
                                         **{'read-only': True}), **base)) \
        == 'error reading header from %s: No such file or directory' % img
    qsd = is_qsd()
    assert add_error(qmp, dict(ceph.opts(img, **{'key-secret': 's0'}),
                               **base)) == "No secret with id 's0'"
    assert add_error(qmp, dict(ceph.opts(img, encrypt={
        'format': 'luks', 'key-secret': 's0'}), **base)) == \
        ("No secret with id 's0'" if qsd else
         'rbd encryption is not supported by this build')
    assert qmp.execute('query-named-block-nodes') == []
    # and the right options still open it
    qmp.execute('blockdev-add', dict(ceph.opts(img), **base))
    qmp.execute('blockdev-del', node_name='r')


def test_rbd_unreachable_monitor(daemon, ceph, workdir):
    """A conf naming a closed port: blockdev-add fails within the conf's
    mount timeout (3 s) with qsd's message; the monitor answers meanwhile
    (connecting runs in the thread pool) and after."""
    import socket
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()                      # nobody listens there now
    conf = os.path.join(workdir, 'dead.conf')
    with open(conf, 'w') as f:
        f.write('[global]\nmon_host = v1:127.0.0.1:%d\n'
                'auth_client_required = none\nclient_mount_timeout = 3\n'
                % port)
    qmp = daemon.qmp
    other = daemon.new_client()
    t0 = time.monotonic()
    qmp.send({'execute': 'blockdev-add',
              'arguments': ceph.opts('x', conf=conf, **{'node-name': 'r'})})
    # the daemon still serves another client while connecting
    assert 'qemu' in other.execute('query-version')
    reply = qmp.recv_reply(timeout=60)
    assert reply['error']['desc'] == 'error connecting: Connection timed out'
    assert time.monotonic() - t0 < 30
    assert qmp.execute('query-named-block-nodes') == []


# ---- blockdev-create -------------------------------------------------------

def rbd_info(ceph, image):
    p = subprocess.run(['rbd', '-c', ceph.conf, 'info', '--format', 'json',
                        'rbd/' + image], capture_output=True, text=True,
                       timeout=60, check=True)
    return json.loads(p.stdout)


def run_create(qmp, opts, jid='c0'):
    qmp.execute('blockdev-create', job_id=jid, options=opts)
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=60,
                   match={'data': {'id': jid, 'status': 'concluded'}})
    job = [j for j in qmp.execute('query-jobs') if j['id'] == jid][0]
    qmp.execute('job-dismiss', id=jid)
    return job.get('error')


def test_rbd_blockdev_create(daemon, ceph, img):
    qmp = daemon.qmp
    loc = {'pool': 'rbd', 'image': img, 'conf': ceph.conf}
    assert run_create(qmp, {'driver': 'rbd', 'location': loc,
                            'size': 24 * MiB, 'cluster-size': MiB}) is None
    info = rbd_info(ceph, img)
    assert (info['size'], info['object_size']) == (24 * MiB, MiB)
    # it exists now
    assert run_create(qmp, {'driver': 'rbd', 'location': loc,
                            'size': MiB}) == 'error rbd create: File exists'
    assert run_create(qmp, {'driver': 'rbd', 'location': loc, 'size': MiB,
                            'cluster-size': 3 * 4096}) == \
        'obj size needs to be power of 2'
    assert run_create(qmp, {'driver': 'rbd', 'location': loc, 'size': MiB,
                            'cluster-size': 2048}) == 'obj size too small'
    assert run_create(qmp, {'driver': 'rbd',
                            'location': dict(loc, snapshot='s'),
                            'size': MiB}) == \
        "Can't use snapshot name for image creation"
    qmp.execute('blockdev-add', ceph.opts(img, **{'node-name': 'r'}))
    n = [x for x in qmp.execute('query-named-block-nodes')
         if x['node-name'] == 'r'][0]
    assert n['image']['cluster-size'] == MiB
    qmp.execute('blockdev-del', node_name='r')


# ---- jobs ----------------------------------------------------------------

SIZE = 32 * MiB
PATTERN = ('write -P 0x21 0 3M', 'write -P 0x42 12M 1M',
           'write -z 20M 1M')


def local_image(workdir, name, fmt='raw', *io, backing=None):
    path = os.path.join(workdir, name)
    args = ['create', '-f', fmt]
    if backing:
        args += ['-b', backing[0], '-F', backing[1]]
    qemu_img(*args, path, *([] if backing else [str(SIZE)]))
    for c in io:
        qemu_io('-f', fmt, '-c', c, path)
    return path


def add_local(qmp, node, path, fmt='raw', **extra):
    args = {'driver': fmt, 'node-name': node,
            'file': {'driver': 'file', 'filename': path}}
    args.update(extra)
    qmp.execute('blockdev-add', args)


def data_bytes(path, fmt):
    """How many bytes qemu-img map reports as data in the top layer."""
    m = json.loads(qemu_img('map', '--output=json', '-f', fmt,
                            path).stdout)
    return sum(e['length'] for e in m if e['data'] and e['depth'] == 0)


def test_rbd_backup_into_ceph(daemon, ceph, img, workdir):
    qmp = daemon.qmp
    src = local_image(workdir, 'src.raw', 'raw', *PATTERN)
    ceph.create(img, SIZE)
    add_local(qmp, 'src', src)
    qmp.execute('blockdev-add', ceph.opts(img, **{'node-name': 'tgt'}))
    qmp.execute('blockdev-backup', job_id='b0', device='src', target='tgt',
                sync='full')
    ev = wait_job(qmp, 'b0')
    assert 'error' not in ev and ev['offset'] == SIZE
    qmp.execute('blockdev-del', node_name='tgt')
    assert_same(ceph.uri(img), src)


def test_rbd_backup_out_of_ceph_sparse(daemon, ceph, img, workdir):
    """Ceph -> local qcow2: equal bytes, and the holes of the rbd image
    (block status from rbd_diff_iterate2) stay holes in the copy."""
    qmp = daemon.qmp
    ceph.create(img, SIZE, *PATTERN[:2])
    tgt = local_image(workdir, 'tgt.qcow2', 'qcow2')
    qmp.execute('blockdev-add', ceph.opts(img, **{'node-name': 'src'}))
    add_local(qmp, 'tgt', tgt, 'qcow2')
    qmp.execute('blockdev-backup', job_id='b0', device='src', target='tgt',
                sync='full')
    ev = wait_job(qmp, 'b0')
    assert 'error' not in ev
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    assert_same(ceph.uri(img), tgt, 'raw', 'qcow2')
    # data: two 4 MiB objects at most (0-3M and 12-13M), not 32 MiB
    assert data_bytes(tgt, 'qcow2') <= 8 * MiB


def rbd_used(ceph, image):
    """Bytes rbd du counts as used in the image (whole objects)."""
    p = subprocess.run(['rbd', '-c', ceph.conf, 'du', '--format', 'json',
                        'rbd/' + image], capture_output=True, text=True,
                       timeout=60, check=True)
    return json.loads(p.stdout)['images'][0]['used_size']


def test_rbd_backup_into_ceph_keeps_holes(daemon, ceph, img, workdir):
    """Backup into a fresh rbd image writes nothing where the source has
    holes (a new image reads as zeroes: rbd du counts only the objects
    with data); into an image full of data, the same holes are written
    as zeroes (what the target already holds is asked, not assumed)."""
    qmp = daemon.qmp
    src = local_image(workdir, 'src.raw', 'raw', *PATTERN)
    ceph.create(img, SIZE)
    full = 'bj-full-' + uuid.uuid4().hex[:8]
    ceph.create(full, SIZE, 'write -P 0x77 0 %d' % SIZE)
    try:
        add_local(qmp, 'src', src)
        for n, (name, jid) in enumerate(((img, 'b0'), (full, 'b1'))):
            qmp.execute('blockdev-add',
                        ceph.opts(name, **{'node-name': 'tgt%d' % n}))
            qmp.execute('blockdev-backup', job_id=jid, device='src',
                        target='tgt%d' % n, sync='full')
            ev = wait_job(qmp, jid)
            assert 'error' not in ev and ev['offset'] == SIZE
            qmp.execute('blockdev-del', node_name='tgt%d' % n)
        assert_same(ceph.uri(img), src)
        assert_same(ceph.uri(full), src)
        # data at 0-3M and 12-13M: objects 0 and 3, nothing else
        assert rbd_used(ceph, img) == 8 * MiB
    finally:
        ceph.remove(full)


def nbd_status(h, size):
    """base:allocation of [0, size) as (offset, length, hole) runs."""
    runs, at = [], 0
    while at < size:
        got = []

        def cb(meta, offset, entries, err):
            got.extend(entries)
            return 0
        h.block_status(size - at, at, cb)
        for i in range(0, len(got), 2):
            hole = bool(got[i + 1] & 1)
            if runs and runs[-1][2] == hole and runs[-1][0] + \
                    runs[-1][1] == at:
                runs[-1] = (runs[-1][0], runs[-1][1] + got[i], hole)
            else:
                runs.append((at, got[i], hole))
            at += got[i]
    return runs


def test_rbd_block_status_follows_writes(daemon, ceph, img):
    """Block status of an rbd node (walked once, then kept) sees the
    node's own write at once, and a discarded object turns back into a
    hole."""
    import nbd
    qmp = daemon.qmp
    size = 16 * MiB
    ceph.create(img, size, 'write -P 0x11 0 1M')
    qmp.execute('blockdev-add', ceph.opts(img, discard='unmap',
                                          **{'node-name': 'r'}))
    sock = nbd_export(daemon, 'r', 'r')
    h = nbd.NBD()
    h.add_meta_context('base:allocation')
    h.set_export_name('r')
    h.connect_unix(sock)
    M4 = 4 * MiB
    assert nbd_status(h, size) == [(0, M4, False), (M4, 3 * M4, True)]
    h.pwrite(b'\x22' * 65536, 2 * M4 + MiB)
    assert nbd_status(h, size) == [(0, M4, False), (M4, M4, True),
                                   (2 * M4, M4, False), (3 * M4, M4, True)]
    h.trim(M4, 2 * M4)
    assert nbd_status(h, size) == [(0, M4, False), (M4, 3 * M4, True)]
    assert h.pread(65536, 2 * M4 + MiB) == bytes(65536)
    nbd_export_teardown(qmp, h, 'r')


def mirror_under_writes(daemon, src_node, tgt_node, size, expect):
    """Mirrors src_node to tgt_node while an NBD client writes to
    src_node, pivots, and writes once more (into the target now); expect
    is the bytearray image the client saw."""
    import random
    qmp = daemon.qmp
    h = nbd_connect(nbd_export(daemon, src_node, 'e'), 'e')
    rnd = random.Random(16)
    from bjtest import nbd_random_write
    qmp.execute('blockdev-mirror', job_id='m0', device=src_node,
                target=tgt_node, sync='full')
    for n in range(20):
        nbd_random_write(h, rnd, n, expect, size)
    qmp.wait_event('BLOCK_JOB_READY', timeout=60,
                   match={'data': {'device': 'm0'}})
    for n in range(20, 40):
        nbd_random_write(h, rnd, n, expect, size)
    qmp.execute('block-job-complete', device='m0')
    ev = wait_job(qmp, 'm0')
    assert 'error' not in ev
    nbd_random_write(h, rnd, 40, expect, size)
    h.flush()
    h.shutdown()
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')


def test_rbd_mirror_into_ceph_pivot(daemon, ceph, img, workdir):
    qmp = daemon.qmp
    src = local_image(workdir, 'src.raw', 'raw', *PATTERN)
    with open(src, 'rb') as f:
        expect = bytearray(f.read())
    ceph.create(img, SIZE)
    add_local(qmp, 'src', src)
    qmp.execute('blockdev-add', ceph.opts(img, **{'node-name': 'tgt'}))
    mirror_under_writes(daemon, 'src', 'tgt', SIZE, expect)
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    want = os.path.join(workdir, 'want.raw')
    with open(want, 'wb') as f:
        f.write(expect)
    assert_same(ceph.uri(img), want)


def test_rbd_mirror_out_of_ceph_pivot(daemon, ceph, img, workdir):
    qmp = daemon.qmp
    ceph.create(img, SIZE, *PATTERN)
    ref = local_image(workdir, 'ref.raw', 'raw', *PATTERN)
    with open(ref, 'rb') as f:
        expect = bytearray(f.read())
    tgt = local_image(workdir, 'tgt.qcow2', 'qcow2')
    qmp.execute('blockdev-add', ceph.opts(img, **{'node-name': 'src'}))
    add_local(qmp, 'tgt', tgt, 'qcow2')
    mirror_under_writes(daemon, 'src', 'tgt', SIZE, expect)
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    want = os.path.join(workdir, 'want.raw')
    with open(want, 'wb') as f:
        f.write(expect)
    assert_same(tgt, want, 'qcow2', 'raw')


def rbd_backed(ceph, img, workdir, layers):
    """qcow2 overlays over the rbd image (as raw): returns their paths,
    bottom first; each got its qemu-io writes."""
    paths = []
    below = (ceph.uri(img), 'raw')
    for i, io in enumerate(layers):
        p = os.path.join(workdir, 'ov%d.qcow2' % i)
        qemu_img('create', '-f', 'qcow2', '-b', below[0], '-F', below[1], p)
        for c in io:
            qemu_io('-f', 'qcow2', '-c', c, p)
        paths.append(p)
        below = (p, 'qcow2')
    return paths


def test_rbd_stream_from_ceph_base(daemon, ceph, img, workdir):
    """A qcow2 overlay on an rbd backing node; stream pulls the base in."""
    qmp = daemon.qmp
    ceph.create(img, SIZE, *PATTERN)
    [top] = rbd_backed(ceph, img, workdir, [('write -P 0x77 1M 1M',)])
    qmp.execute('blockdev-add', ceph.opts(img, **{'node-name': 'base',
                                                  'read-only': True}))
    add_local(qmp, 'top', top, 'qcow2', backing='base')
    qmp.execute('block-stream', job_id='s0', device='top')
    ev = wait_job(qmp, 's0')
    assert 'error' not in ev
    qmp.execute('blockdev-del', node_name='top')
    qmp.execute('blockdev-del', node_name='base')
    want = local_image(workdir, 'want.raw', 'raw', *PATTERN,
                       'write -P 0x77 1M 1M')
    assert_same(top, want, 'qcow2', 'raw')
    info = json.loads(qemu_img('info', '--output=json', top).stdout)
    assert 'backing-filename' not in info


def test_rbd_commit_into_ceph_base(daemon, ceph, img, workdir):
    """rbd base <- mid <- top: commit mid into the rbd base."""
    qmp = daemon.qmp
    ceph.create(img, SIZE, *PATTERN)
    mid, top = rbd_backed(ceph, img, workdir,
                          [('write -P 0x55 4M 2M',),
                           ('write -P 0x66 24M 1M',)])
    qmp.execute('blockdev-add', ceph.opts(img, **{'node-name': 'base'}))
    add_local(qmp, 'mid', mid, 'qcow2', backing='base')
    add_local(qmp, 'top', top, 'qcow2', backing='mid')
    qmp.execute('block-commit', job_id='c0', device='top', top_node='mid',
                base_node='base')
    ev = wait_job(qmp, 'c0')
    assert 'error' not in ev
    qmp.execute('blockdev-del', node_name='top')
    qmp.execute('blockdev-del', node_name='mid')
    qmp.execute('blockdev-del', node_name='base')
    want = local_image(workdir, 'want.raw', 'raw', *PATTERN,
                       'write -P 0x55 4M 2M')
    assert_same(ceph.uri(img), want)


def test_rbd_incremental_backup(daemon, ceph, img, workdir):
    """A (non-persistent) bitmap on an rbd node: an incremental backup
    copies what was written since, at the image's object granularity;
    a persistent bitmap is refused with qsd's message."""
    qmp = daemon.qmp
    ceph.create(img, SIZE, *PATTERN)
    qmp.execute('blockdev-add', ceph.opts(img, **{'node-name': 'r'}))
    with pytest.raises(QMPError) as e:
        qmp.execute('block-dirty-bitmap-add', node='r', name='p',
                    persistent=True)
    assert e.value.desc == \
        "Can't store persistent bitmaps to r: Operation not supported"
    qmp.execute('block-dirty-bitmap-add', node='r', name='b')
    h = nbd_connect(nbd_export(daemon, 'r', 'e'), 'e')
    h.pwrite(b'\x99' * 65536, 16 * MiB + 4096)
    h.flush()
    tgt = local_image(workdir, 'inc.qcow2', 'qcow2')
    add_local(qmp, 'tgt', tgt, 'qcow2')
    qmp.execute('blockdev-backup', job_id='b0', device='r', target='tgt',
                sync='incremental', bitmap='b')
    ev = wait_job(qmp, 'b0')
    assert 'error' not in ev
    h.shutdown()
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='r')
    # what was written, at the bitmap's granularity, and nothing else
    m = [e for e in json.loads(qemu_img('map', '--output=json', tgt).stdout)
         if e['data']]
    assert m and m[0]['start'] <= 16 * MiB + 4096
    assert m[-1]['start'] + m[-1]['length'] >= 16 * MiB + 4096 + 65536
    assert sum(e['length'] for e in m) <= 4 * MiB
    qemu_io('-f', 'qcow2', '-c', 'read -P 0x99 %d 65536' % (16 * MiB + 4096),
            '-c', 'read -P 0 %d 4096' % (16 * MiB), tgt)


@pytest.mark.timeout(360)
def test_rbd_cluster_gone_during_job(daemon, workdir):
    """A cluster of its own whose OSD is stopped while a backup writes into
    it: the job fails under its error policy (report), the daemon stays
    up and lets the node go."""
    d = tempfile.mkdtemp(prefix='bj-ceph-gone-')
    c, reason = cluster_start(d)
    if c is None:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip('ceph cluster did not start: %s' % reason)
    try:
        qmp = daemon.qmp
        size = 256 * MiB
        src = os.path.join(workdir, 'src.raw')
        qemu_img('create', '-f', 'raw', src, str(size))
        qemu_io('-f', 'raw', '-c', 'write -P 0x31 0 %d' % size, src)
        c.create('gone', size)
        add_local(qmp, 'src', src)
        # The node's librados gives up on the stopped OSD after 2 s a
        # request instead of the cluster's 10 s (the test's own length).
        fast = os.path.join(d, 'fast.conf')
        with open(c.conf) as f:
            conf = f.read()
        for key in ('rados_osd_op_timeout', 'rados_mon_op_timeout',
                    'client_mount_timeout'):
            conf = conf.replace('%s = 10' % key, '%s = 2' % key)
        with open(fast, 'w') as f:
            f.write(conf)
        qmp.execute('blockdev-add', c.opts('gone', conf=fast,
                                           **{'node-name': 'tgt'}))
        qmp.execute('blockdev-backup', job_id='b0', device='src',
                    target='tgt', sync='full', speed=8 * MiB)
        wait_until(lambda: qmp.execute('query-block-jobs')[0]['offset'] > 0,
                   timeout=60, what='backup progress')
        subprocess.run([SCRIPT, 'stop-osd', d], check=True, timeout=60)
        qmp.execute('block-job-set-speed', device='b0', speed=0)
        ev = wait_job(qmp, 'b0', timeout=120)
        assert ev['error']
        # on-target-error=report (the default): reported, then failed
        err = qmp.wait_event('BLOCK_JOB_ERROR', timeout=5)['data']
        assert (err['device'], err['operation'], err['action']) == \
            ('b0', 'write', 'report')
        assert ev['offset'] < size
        assert 'qemu' in qmp.execute('query-version')
        t0 = time.monotonic()
        reply = qmp.cmd_raw({'execute': 'blockdev-del',
                             'arguments': {'node-name': 'tgt'}}, timeout=150)
        assert reply == {'return': {}}
        print('blockdev-del with the osd gone: %.1f s'
              % (time.monotonic() - t0))
        if not is_qsd():
            # qsd holds its monitor until librbd gives up (30 s here)
            assert time.monotonic() - t0 < 20
        qmp.execute('blockdev-del', node_name='src')
        assert 'qemu' in qmp.execute('query-version')
        # librbd gives up on the image in the background (each request to
        # the OSD times out): wait for that before the daemon exits
        if "still waiting for the cluster" in daemon.stderr():
            wait_until(lambda: "rbd: node 'tgt' closed" in daemon.stderr(),
                       timeout=150, what='background close')
    finally:
        subprocess.run([SCRIPT, 'stop', d], timeout=60)
    daemon.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.blockjobd_only('qsd 7.2 aborts in nbd_blockdev_client_closed '
                            'when the client of an iothread export hangs up')
def test_rbd_in_iothread(daemon_factory, ceph, img, workdir):
    """An rbd node moved to an iothread by its export: completions still
    wake the requests there (in the iothread's context)."""
    d = daemon_factory('--object', 'iothread,id=io0')
    qmp = d.qmp
    ceph.create(img, 8 * MiB, 'write -P 0x61 0 1M')
    qmp.execute('blockdev-add', ceph.opts(img, **{'node-name': 'r'}))
    sock = d.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'r', 'writable': True,
                                     'iothread': 'io0'})
    h = nbd_connect(sock, 'r')
    assert h.pread(MiB, 0) == b'\x61' * MiB
    for i in range(16):
        h.pwrite(bytes([0x70 + i]) * 65536, MiB + i * 65536)
    h.flush()
    assert h.pread(65536, MiB + 65536 * 3) == b'\x73' * 65536
    nbd_export_teardown(qmp, h, 'r')
    want = os.path.join(workdir, 'want.raw')
    qemu_img('create', '-f', 'raw', want, str(8 * MiB))
    qemu_io('-f', 'raw', '-c', 'write -P 0x61 0 1M', want)
    for i in range(16):
        qemu_io('-f', 'raw', '-c', 'write -P %d %d 64k'
                % (0x70 + i, MiB + i * 65536), want)
    assert_same(ceph.uri(img), want)


def test_rbd_auth_client_required(daemon, ceph, img):
    """The cluster runs without auth: 'none' opens, 'cephx' alone cannot
    connect (qsd's message)."""
    qmp = daemon.qmp
    ceph.create(img, 4 * MiB)
    qmp.execute('blockdev-add', ceph.opts(
        img, user='admin', **{'node-name': 'r',
                              'auth-client-required': ['cephx', 'none']}))
    qmp.execute('blockdev-del', node_name='r')
    msg = add_error(qmp, ceph.opts(img, **{'node-name': 'r',
                                           'auth-client-required':
                                           ['cephx']}))
    assert msg == 'error connecting: Operation not supported'


def test_rbd_key_secret(daemon, ceph, img):
    """key-secret hands the secret's bytes to librados as its (base64)
    key; this cluster runs without cephx, so any key opens it, and a
    secret that is missing is refused, nothing added."""
    qmp = daemon.qmp
    ceph.create(img, 4 * MiB)
    qmp.execute('object-add', {'qom-type': 'secret', 'id': 'k0',
                               'data': 'AQBvdmVyeXNlY3JldGtleQ==',
                               'format': 'base64'})
    qmp.execute('blockdev-add', ceph.opts(img, **{'key-secret': 'k0',
                                                 'node-name': 'r'}))
    assert [n['node-name'] for n in
            qmp.execute('query-named-block-nodes')] == ['r']
    qmp.execute('blockdev-del', node_name='r')
