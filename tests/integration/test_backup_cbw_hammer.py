"""Copy-before-write against several background workers: NBD writers hammer
the same clusters (4 KiB writes, partial clusters, several connections at
once) while an unthrottled backup copies in small chunks with its back-off
off, so clients' copies and the background's workers race for the same
clusters all the time.  The target must still be the source as it was when
the job started (qemu-img compare against a copy taken before), and every
write must have landed on the source.

The source is 64 MiB of data (no holes: every background chunk reads and
writes), the target a qcow2; each test runs with the nodes in the main loop
and in an iothread.
"""

import random
import threading

import pytest

import copyjob
from bjtest import nbd_export, qemu_img
from copyjob import Images

nbd = pytest.importorskip('nbd')

KiB = 1 << 10
MiB = 1 << 20
SIZE = copyjob.SIZE
HOT = 1 * MiB            # the last MiB: hit by the writers again and again
WRITERS = 4

pytestmark = [pytest.mark.ctx_variants,
              pytest.mark.blockjobd_only('x-yield is an extension')]


@pytest.fixture
def imgs(workdir):
    return Images(workdir, keep_ref=True,
                  src_writes=['write -P 0x11 0 32M', 'write -P 0x22 32M 32M'])


def writer(sock, seed, stop, errors, written):
    """4 KiB writes of pattern 0x55, half into the hot MiB at the end of
    the disk, half anywhere, 4 KiB aligned; records what it wrote."""
    rnd = random.Random(seed)
    buf = b'\x55' * (4 * KiB)
    h = nbd.NBD()
    try:
        h.set_export_name('x')
        h.connect_unix(sock)
        while not stop.is_set():
            if rnd.random() < 0.5:
                off = SIZE - HOT + rnd.randrange(HOT // (4 * KiB)) * 4 * KiB
            else:
                off = rnd.randrange(SIZE // (4 * KiB)) * 4 * KiB
            h.pwrite(buf, off)
            written.append(off)
        h.flush()
        h.shutdown()
    except Exception as e:        # reported by the test
        errors.append(e)


@pytest.mark.timeout(120)
def test_writers_hammer_the_same_clusters_during_backup(daemon, imgs):
    qmp = daemon.qmp
    imgs.add(qmp)
    sock = nbd_export(daemon, 'src', 'x')
    stop, errors = threading.Event(), []
    written = [[] for _ in range(WRITERS)]
    # The writers start after the job: the reference is the image before.
    copyjob.start(qmp, 'blockdev-backup', 'auto', 'b0',
                  **{'x-yield': {'enabled': False},
                     'x-perf': {'max-chunk': 64 * KiB}})
    threads = [threading.Thread(target=writer,
                                args=(sock, i, stop, errors, written[i]))
               for i in range(WRITERS)]
    for t in threads:
        t.start()
    try:
        ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=90,
                            match={'data': {'device': 'b0'}})
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert 'error' not in ev['data'], ev
    assert ev['data']['offset'] == ev['data']['len'] == SIZE
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    imgs.check()
    imgs.compare_ref()
    # Every write landed on the source.
    offs = sorted({o for w in written for o in w})
    assert offs, 'no write was made'
    with open(imgs.src, 'rb') as f:
        for o in offs:
            f.seek(o)
            assert f.read(4 * KiB) == b'\x55' * (4 * KiB), o
    # The source did change: the comparison above meant something.
    assert qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', imgs.ref,
                    imgs.src, check=False).returncode == 1
