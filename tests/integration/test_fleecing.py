"""Pull-mode incremental backup: the fleecing pattern, end to end.

    guest (NBD client) --writes--> [src qcow2]  bitmap bm0 (what changed)
                                      ^  backing          copy-before-write
                                      |                    copies old data
    backup client  <--reads--  [ovl qcow2 scratch] <---- into the overlay
      (nbdinfo --map=qemu:dirty-bitmap:bm0, libnbd, nbdcopy, qemu-img map)

A `blockdev-backup sync=none` from the source into a scratch overlay whose
backing node is the source freezes the source as it was: the overlay reads
old data for whatever the guest overwrites from then on, the source's data
for the rest.  Exported read-only with bitmaps=[bm0] (found down the
overlay's backing chain), an external client reads just the ranges bm0
marks, and gets the point-in-time bytes while the guest keeps writing.

The bitmap switch (disable bm0, start bm1 for the next increment) and the
job start are separate commands here, with the guest's writer paused
around them, so the instant is exact without relying on transactions.
Checked against qemu-storage-daemon 7.2 (BLOCKJOBD_BIN=qemu-storage-daemon).
"""

import json
import os
import random
import threading
import time

import pytest

from bitmaptest import bitmap_info, marked_ranges
from bjtest import QMPError, qemu_img, qemu_io, run

nbd = pytest.importorskip('nbd')

KiB = 1024
MiB = 1024 * KiB
GRAN = 64 * KiB
SIZE = 32 * MiB


def uri(d, name):
    return 'nbd+unix:///%s?socket=%s' % (name, d.socket_path('nbd.sock'))


def merged_dirty(u, name):
    out = run('nbdinfo', '--map=qemu:dirty-bitmap:' + name, '--json',
              u).stdout
    ranges = []
    for e in json.loads(out):
        if e['type'] != 1:
            continue
        if ranges and ranges[-1][0] + ranges[-1][1] == e['offset']:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + e['length'])
        else:
            ranges.append((e['offset'], e['length']))
    return ranges


class Guest:
    """A guest writing random 4 KiB..128 KiB blocks of random bytes all
    over the source through its NBD export, in a thread, until stopped;
    pause() returns once no write is in flight."""

    def __init__(self, u, seed):
        self.h = nbd.NBD()
        self.h.connect_uri(u)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.go = threading.Event()
        self.done = False
        self.count = 0
        self.error = None
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def write(self, off, n):
        self.h.pwrite(os.urandom(n), off)

    def run(self):
        try:
            while True:
                self.go.wait()
                with self.lock:
                    if self.done:
                        return
                    if not self.go.is_set():
                        continue
                    n = self.rng.choice((4, 16, 64, 128)) * KiB
                    off = self.rng.randrange(0, SIZE - n, 512)
                    self.write(off, n)
                    self.count += 1
        except Exception as e:  # reported by stop()
            self.error = e

    def resume(self):
        self.go.set()

    def pause(self):
        self.go.clear()
        with self.lock:
            pass

    def wait_writes(self, n, timeout=60):
        deadline = time.monotonic() + timeout
        start = self.count
        while self.count < start + n:
            assert time.monotonic() < deadline, 'guest made no progress'
            assert self.error is None, self.error
            time.sleep(0.01)

    def stop(self):
        with self.lock:
            self.done = True
        self.go.set()
        self.t.join(30)
        assert not self.t.is_alive()
        if self.error:
            raise self.error
        self.h.shutdown()


@pytest.fixture
def fleece_setup(daemon, workdir):
    """The daemon with src (32 MiB of pattern, bitmap bm0), its writable
    guest export 'src', and a scratch qcow2 file for the overlay."""
    d = daemon
    src = workdir / 'src.qcow2'
    scratch = workdir / 'scratch.qcow2'
    qemu_img('create', '-f', 'qcow2', str(src), str(SIZE))
    qemu_io('-c', 'write -P 0x11 0 %d' % SIZE, str(src))
    # no backing file in its header: blockdev-add gives it the source node
    qemu_img('create', '-f', 'qcow2', str(scratch), str(SIZE))
    q = d.qmp
    q.execute('blockdev-add', driver='qcow2', node_name='src',
              file={'driver': 'file', 'filename': str(src)})
    q.execute('block-dirty-bitmap-add', node='src', name='bm0')
    q.execute('nbd-server-start',
              addr={'type': 'unix',
                    'data': {'path': d.socket_path('nbd.sock')}})
    q.execute('block-export-add', type='nbd', id='guest', node_name='src',
              writable=True)
    d.scratch = scratch
    return d


def start_fleece(d, bitmaps):
    """Freezes the source: next increment's bitmap, overlay, backup job,
    read-only export of the overlay as 'fleece'."""
    q = d.qmp
    q.execute('block-dirty-bitmap-disable', node='src', name='bm0')
    q.execute('block-dirty-bitmap-add', node='src', name='bm1')
    q.execute('blockdev-add', driver='qcow2', node_name='ovl',
              backing='src',
              file={'driver': 'file', 'filename': str(d.scratch)})
    q.execute('blockdev-backup', job_id='fleece', device='src',
              target='ovl', sync='none')
    q.execute('block-export-add', type='nbd', id='fleece', node_name='ovl',
              name='fleece', bitmaps=bitmaps, allocation_depth=True)


def stop_fleece(d):
    q = d.qmp
    q.execute('block-job-cancel', device='fleece')
    ev = q.wait_event('BLOCK_JOB_CANCELLED')
    assert ev['data']['device'] == 'fleece'
    q.execute('block-export-del', id='fleece')
    q.wait_event('BLOCK_EXPORT_DELETED', match={'data': {'id': 'fleece'}})
    q.execute('blockdev-del', node_name='ovl')


def test_pull_backup_reads_point_in_time_while_guest_writes(fleece_setup,
                                                           workdir):
    d = fleece_setup
    q = d.qmp
    guest = Guest(uri(d, 'src'), seed=7)
    try:
        # The increment: known writes, then the guest runs on its own.
        first = [(0, 4 * KiB), (3 * MiB + 100, 5000), (7 * MiB, 3 * GRAN),
                 (SIZE - 512, 512)]
        for o, n in first:
            guest.write(o, n)
        rng = random.Random(1)
        for _ in range(20):
            n = rng.choice((4, 64)) * KiB
            o = rng.randrange(0, SIZE - n, 512)
            first.append((o, n))
            guest.write(o, n)
        want = marked_ranges(first)

        # The instant: the guest is quiet; its view is the reference.
        guest.pause()
        h = nbd.NBD()
        h.connect_uri(uri(d, 'src'))
        snapshot = h.pread(SIZE, 0)
        h.shutdown()
        start_fleece(d, ['bm0'])
        assert bitmap_info(d.qmp, 'src', 'bm0')['busy'] is True
        assert bitmap_info(d.qmp, 'src', 'bm0')['recording'] is False

        # The guest overwrites every dirty range and more, as the client
        # reads.
        guest.resume()
        for o, n in want:
            guest.write(o, n)
        guest.wait_writes(30)

        fu = uri(d, 'fleece')
        assert merged_dirty(fu, 'bm0') == want
        f = nbd.NBD()
        f.add_meta_context('qemu:dirty-bitmap:bm0')
        f.connect_uri(fu)
        assert f.is_read_only()
        dirty = []
        covered = [0]

        def cb(meta, off, entries, err):
            assert meta == 'qemu:dirty-bitmap:bm0'
            for length, flags in zip(entries[0::2], entries[1::2]):
                if flags & 1:
                    if dirty and dirty[-1][0] + dirty[-1][1] == off:
                        dirty[-1] = (dirty[-1][0], dirty[-1][1] + length)
                    else:
                        dirty.append((off, length))
                off += length
            covered[0] = off
            return 0
        while covered[0] < SIZE:
            f.block_status(SIZE - covered[0], covered[0], cb)
        assert dirty == want
        for o, n in dirty:
            assert f.pread(n, o) == snapshot[o:o + n], 'range %d+%d' % (o, n)
        guest.wait_writes(10)
        # the whole image is the instant's, not only its dirty ranges
        assert f.pread(SIZE, 0) == snapshot
        f.shutdown()

        # other clients of the same export: nbdcopy, qemu-img map
        out = workdir / 'copy.raw'
        run('nbdcopy', fu, str(out))
        assert open(out, 'rb').read() == snapshot
        opts = ('driver=nbd,export=fleece,server.type=unix,server.path=%s,'
                'x-dirty-bitmap=qemu:dirty-bitmap:bm0'
                % d.socket_path('nbd.sock'))
        m = json.loads(qemu_img('map', '--output=json', '--image-opts',
                                opts).stdout)
        assert [(e['start'], e['length']) for e in m if not e['data']] == \
            want
        # allocation depth: what the job copied sits in the overlay (1),
        # the rest is read through from the source (2)
        depth = json.loads(run('nbdinfo', '--map=qemu:allocation-depth',
                               '--json', fu).stdout)
        assert {e['type'] for e in depth} <= {1, 2}
        assert any(e['type'] == 1 for e in depth)
    finally:
        guest.stop()

    stop_fleece(d)
    bm0 = bitmap_info(d.qmp, 'src', 'bm0')
    assert (bm0['busy'], bm0['recording']) == (False, False)
    assert bm0['count'] == sum(n for _, n in want)
    # the next increment recorded the guest's writes since the instant
    assert bitmap_info(d.qmp, 'src', 'bm1')['count'] > 0
    # and the source has the guest's latest data, not the snapshot
    h = nbd.NBD()
    h.connect_uri(uri(d, 'src'))
    assert h.pread(SIZE, 0) != snapshot
    h.shutdown()
    q.execute('block-dirty-bitmap-remove', node='src', name='bm0')


def test_fleecing_with_node_and_name_of_a_recording_bitmap(fleece_setup):
    """bitmaps=[{node, name}] may name the source's bitmap while it still
    records (qemu checks only names it looks up itself); the client then
    sees the guest's new writes in the bitmap, and still the old data."""
    d = fleece_setup
    q = d.qmp
    g = nbd.NBD()
    g.connect_uri(uri(d, 'src'))
    g.pwrite(b'\x22' * GRAN, 2 * MiB)
    q.execute('blockdev-add', driver='qcow2', node_name='ovl',
              backing='src',
              file={'driver': 'file', 'filename': str(d.scratch)})
    q.execute('blockdev-backup', job_id='fleece', device='src',
              target='ovl', sync='none')
    with pytest.raises(QMPError) as e:
        q.execute('block-export-add', type='nbd', id='fleece',
                  node_name='ovl', name='fleece', bitmaps=['bm0'])
    assert e.value.desc == \
        "Enabled bitmap 'bm0' incompatible with readonly export"
    q.execute('block-export-add', type='nbd', id='fleece', node_name='ovl',
              name='fleece', bitmaps=[{'node': 'src', 'name': 'bm0'}])
    g.pwrite(b'\x33' * GRAN, 5 * MiB)
    fu = uri(d, 'fleece')
    assert merged_dirty(fu, 'bm0') == [(2 * MiB, GRAN), (5 * MiB, GRAN)]
    f = nbd.NBD()
    f.connect_uri(fu)
    assert f.pread(GRAN, 2 * MiB) == b'\x22' * GRAN
    assert f.pread(GRAN, 5 * MiB) == b'\x11' * GRAN
    f.shutdown()
    g.shutdown()
    stop_fleece(d)
    assert bitmap_info(d.qmp, 'src', 'bm0')['busy'] is False
