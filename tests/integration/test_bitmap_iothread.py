"""Named bitmaps on a node that an NBD export moved into an iothread.

The bitmap commands run in the main thread while the iothread serves the
guest's writes (and marks the bitmaps); persistent bitmaps are written to
the image from the node's own thread.  Every command must work there as on
a main-loop node, lose no write, and leave an image qemu-img finds clean.
qemu-storage-daemon 7.2 cannot run these: it aborts when a client of an
iothread export disconnects (nbd_blockdev_client_closed assertion).
"""
import threading

import pytest

from bitmaptest import GRAN, MiB, bitmap_info, granules
from bjtest import qemu_img

SIZE = 64 * MiB

pytestmark = pytest.mark.blockjobd_only(
    'qemu-storage-daemon 7.2 aborts when a client of an iothread export '
    'disconnects')


def start(daemon_factory, workdir, path):
    sock = str(workdir / 'nbd.sock')
    d = daemon_factory(
        '--object', 'iothread,id=io0',
        '--blockdev', 'driver=file,node-name=f,filename=%s' % path,
        '--blockdev', 'driver=qcow2,node-name=d,file=f',
        '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
        '--export', 'type=nbd,id=e0,node-name=d,name=x,writable=on,'
        'iothread=io0')
    return d, sock


def connect(sock):
    nbd = pytest.importorskip('nbd')
    h = nbd.NBD()
    h.set_export_name('x')
    h.connect_unix(sock)
    return h


def info_bitmaps(path):
    import json
    out = qemu_img('info', '--output=json', '-U', path).stdout
    data = json.loads(out)['format-specific']['data']
    return {b['name']: b['flags'] for b in data.get('bitmaps', [])}


def test_commands_on_an_iothread_node(daemon_factory, workdir):
    p = str(workdir / 'd.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', p, str(SIZE))
    qemu_img('bitmap', '--add', p, 'bm')
    d, sock = start(daemon_factory, workdir, p)
    q = d.qmp
    h = connect(sock)
    h.pwrite(b'\1' * MiB, 0)
    h.pwrite(b'\2' * 4096, 10 * MiB)
    want = granules(0, MiB) | granules(10 * MiB, 4096)
    assert bitmap_info(q, 'd', 'bm')['count'] == len(want) * GRAN

    q.execute('block-dirty-bitmap-add', node='d', name='p', persistent=True)
    q.execute('block-dirty-bitmap-add', node='d', name='t')
    h.pwrite(b'\3' * 4096, 20 * MiB)
    assert bitmap_info(q, 'd', 'p')['count'] == GRAN
    q.execute('block-dirty-bitmap-merge', node='d', target='p',
              bitmaps=['bm'])
    assert bitmap_info(q, 'd', 'p')['count'] == (len(want) + 1) * GRAN
    q.execute('block-dirty-bitmap-clear', node='d', name='bm')
    q.execute('block-dirty-bitmap-disable', node='d', name='t')
    h.pwrite(b'\4' * 4096, 30 * MiB)
    assert bitmap_info(q, 'd', 'bm')['count'] == GRAN
    assert bitmap_info(q, 'd', 't')['count'] == GRAN
    q.execute('block-dirty-bitmap-enable', node='d', name='t')
    q.execute('transaction', actions=[
        {'type': 'block-dirty-bitmap-add',
         'data': {'node': 'd', 'name': 'x', 'persistent': True}},
        {'type': 'block-dirty-bitmap-remove',
         'data': {'node': 'd', 'name': 't'}}])
    h.shutdown()
    q.execute('quit')
    d.wait()
    d.check()
    assert info_bitmaps(p) == {'bm': ['auto'], 'p': ['auto'],
                               'x': ['auto']}
    r = qemu_img('check', p, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_commands_while_the_iothread_writes(daemon_factory, workdir):
    """Adds, clears and merges while a client writes without pause: the
    daemon stays up, and every write acknowledged after the last clear is
    in the bitmap."""
    p = str(workdir / 'w.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', p, str(SIZE))
    d, sock = start(daemon_factory, workdir, p)
    q = d.qmp
    q.execute('block-dirty-bitmap-add', node='d', name='bm', persistent=True)
    acked, stop, lock = [], threading.Event(), threading.Lock()

    def writer():
        h = connect(sock)
        i = 0
        while not stop.is_set():
            off = (i * 7919 * 4096) % SIZE
            h.pwrite(b'\5' * 4096, off)
            with lock:
                acked.append(off)
            i += 1
        h.shutdown()

    t = threading.Thread(target=writer)
    t.start()
    try:
        for i in range(20):
            q.execute('block-dirty-bitmap-add', node='d', name='s%d' % i,
                      persistent=bool(i % 2))
            q.execute('block-dirty-bitmap-merge', node='d',
                      target='s%d' % i, bitmaps=['bm'])
            q.execute('block-dirty-bitmap-remove', node='d',
                      name='s%d' % i)
        q.execute('block-dirty-bitmap-clear', node='d', name='bm')
        with lock:
            first = len(acked)
        while True:
            with lock:
                if len(acked) > first + 50:
                    break
            assert t.is_alive()
    finally:
        stop.set()
        t.join()
    # A write acknowledged around the clear may be in or out; every one
    # after it is in.
    after = set(acked[first + 5:])
    bits = bitmap_info(q, 'd', 'bm')['count'] // GRAN
    assert bits >= len({o // GRAN for o in after})
    q.execute('quit')
    d.wait()
    d.check()
    r = qemu_img('check', p, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
