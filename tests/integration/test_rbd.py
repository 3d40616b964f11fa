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

import copyjob  # noqa: F401  (the style of the copy-job tests)
from bjtest import (QMPError, REPO, nbd_connect, nbd_export,
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
