"""blockdev-mirror while an NBD client writes to the source throughout:
every write the client made before the pivot is on the target after it
(background and write-blocking modes), events against the golden "live"
recordings, and the pivot itself with writes held in a drained section:
they all land, in order, on the new active node.
"""

import os
import random
import threading
import time

import pytest

import copyjob
import golden
from bjtest import (nbd_connect, nbd_export, nbd_export_teardown, qemu_img,
                   wait_until)

nbd = pytest.importorskip('nbd')

MiB = 1 << 20

# Every test that uses `daemon` twice: nodes in the main loop, then in an
# iothread (conftest.py, node_ctx).
pytestmark = pytest.mark.ctx_variants

NCLIENTS = int(os.environ.get("NCL", "3"))
SIZE = 64 * MiB


def make_images(qmp, d):
    imgs = copyjob.Images(d, src_writes=('write -P 1 0 16M',
                                         'write -P 2 40M 8M'))
    imgs.add(qmp)
    with open(imgs.src, 'rb') as f:
        expect = bytearray(f.read())
    return imgs.src, imgs.tgt, expect


def export(daemon, node='src'):
    return nbd_export(daemon, node, name='x')


def connect(sock):
    return nbd_connect(sock, 'x')


def finish(daemon, h, tgt, expect):
    qmp = daemon.qmp
    nbd_export_teardown(qmp, h, 'tgt', 'src')
    ref = tgt + '.expect'
    with open(ref, 'wb') as f:
        f.write(expect)
    qemu_img('check', '-q', tgt)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', ref, tgt)


class Finalizer:
    """Manual mode: finalizes and dismisses the job from a QMP client of its
    own, as soon as the events say so.  The writer cannot do it between
    writes: qemu-storage-daemon 7.2 keeps the source drained from the end of
    a completed mirror until job-finalize, so a write sent then only returns
    after the finalize."""

    def __init__(self, daemon, jid):
        self.qmp = daemon.new_client()
        self.jid = jid
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _wait(self, status):
        self.qmp.wait_event('JOB_STATUS_CHANGE', timeout=120, match={
            'data': {'id': self.jid, 'status': status}})

    def _run(self):
        try:
            self._wait('pending')
            self.qmp.execute('job-finalize', id=self.jid)
            self._wait('concluded')
            self.qmp.execute('job-dismiss', id=self.jid)
        except Exception as e:       # reported by join()
            self.error = e

    def join(self):
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), 'finalizer still waiting'
        assert self.error is None, self.error


def write_through_job(daemon, h, expect, jid, mode, seed):
    """Random writes (and some zeroes) until the job is gone; completes it
    once READY (and finalizes/dismisses in manual mode, from a Finalizer)."""
    qmp = daemon.qmp
    rnd = random.Random(seed)
    finalizer = Finalizer(daemon, jid) if mode == 'manual' else None
    n = 0
    completed = False
    while True:
        length = 4096 * rnd.randint(1, 32)
        off = 4096 * rnd.randrange((SIZE - length) // 4096)
        if n % 10 == 9:
            h.zero(length, off)
            expect[off:off + length] = bytes(length)
        else:
            data = bytes([0x40 + n % 64]) * length
            h.pwrite(data, off)
            expect[off:off + length] = data
        n += 1
        if n % 16 == 0:
            jobs = {j['id']: j for j in qmp.execute('query-jobs')}
            j = jobs.get(jid)
            if j is None:
                break
            if j['status'] == 'ready' and not completed:
                qmp.execute('job-complete', id=jid)
                completed = True
        assert n < 50000, qmp.execute('query-jobs')
    if finalizer:
        finalizer.join()
    return n


@pytest.mark.timeout(180)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_mirror_live(daemon, workdir, mode):
    qmp = daemon.qmp
    src, tgt, expect = make_images(qmp, workdir)
    h = connect(export(daemon))
    rec = golden.Recorder(qmp, 'mirror1')
    copyjob.start(qmp, 'blockdev-mirror', mode, 'mirror1')
    n = write_through_job(daemon, h, expect, 'mirror1', mode, 11)
    assert n >= 16
    rec.poll()
    golden.assert_matches('mirror-ready-complete-live.%s' % mode,
                          rec.events)
    # after the pivot the export writes to the target
    assert [e['node-name'] for e in qmp.execute('query-block-exports')] \
        == ['tgt']
    h.pwrite(b'\x33' * 8192, 8 * MiB)
    expect[8 * MiB:8 * MiB + 8192] = b'\x33' * 8192
    finish(daemon, h, tgt, expect)


@pytest.mark.timeout(180)
def test_mirror_write_blocking(daemon, workdir):
    """copy-mode write-blocking: client writes reach the target before they
    are acknowledged, so the job converges whatever the client does; after
    READY no write leaves anything dirty behind."""
    qmp = daemon.qmp
    src, tgt, expect = make_images(qmp, workdir)
    h = connect(export(daemon))
    qmp.execute('blockdev-mirror', {'job-id': 'wb', 'device': 'src',
                                    'target': 'tgt', 'sync': 'full',
                                    'copy-mode': 'write-blocking'})
    write_through_job(daemon, h, expect, 'wb', 'auto', 12)
    finish(daemon, h, tgt, expect)


@pytest.mark.timeout(180)
def test_mirror_write_blocking_ready_soft_cancel(daemon, workdir):
    """In READY with write-blocking, a write is on the target once
    acknowledged: a soft cancel right after leaves source == target."""
    qmp = daemon.qmp
    src, tgt, expect = make_images(qmp, workdir)
    h = connect(export(daemon))
    rec = golden.Recorder(qmp, 'wb')
    qmp.execute('blockdev-mirror', {'job-id': 'wb', 'device': 'src',
                                    'target': 'tgt', 'sync': 'full',
                                    'copy-mode': 'write-blocking'})
    rec.wait('BLOCK_JOB_READY')
    rnd = random.Random(3)
    for i in range(300):
        off = 512 * rnd.randrange(SIZE // 512 - 64)
        data = bytes([i % 250 + 1]) * (512 * rnd.randint(1, 64))
        h.pwrite(data, off)
        expect[off:off + len(data)] = data
    qmp.execute('block-job-cancel', device='wb')
    rec.wait_status('null')
    assert 'BLOCK_JOB_COMPLETED' in golden.sequence(rec.events)
    finish(daemon, h, tgt, expect)


def wait_completions(h, cookies, timeout):
    """Polls until every command completed (a cookie is retired once
    aio_command_completed said so, so each is asked until then only)."""
    pending = list(cookies)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h.poll(100)
        pending = [c for c in pending if not h.aio_command_completed(c)]
        if not pending:
            return True
    return False


@pytest.mark.timeout(180)
@pytest.mark.blockjobd_only('x-debug-drain-begin is ours')
def test_pivot_with_postponed_writes(daemon, workdir):
    """Writes queued in a drained section of the source while the job is
    told to complete: when the section ends, the job pivots inside its own
    drained section; the writes that were still waiting retry on the
    target, in arrival order.  All of them are on the target afterwards
    and the last write to a shared block wins."""
    qmp = daemon.qmp
    src, tgt, expect = make_images(qmp, workdir)
    sock = export(daemon)
    hs = [connect(sock) for _ in range(NCLIENTS)]
    rec = golden.Recorder(qmp, 'mp')
    qmp.execute('blockdev-mirror', {'job-id': 'mp', 'device': 'src',
                                    'target': 'tgt', 'sync': 'full'})
    rec.wait('BLOCK_JOB_READY')
    qmp.execute('x-debug-drain-begin', node_name='src')
    cookies = {h: [] for h in hs}
    for i in range(100):
        for n, h in enumerate(hs):
            # one shared block per client, written 100 times in order, and
            # 100 blocks of its own
            data = bytes([i + n + 1]) * 4096
            cookies[h].append(h.aio_pwrite(data, 20 * MiB + n * 65536))
            own = 30 * MiB + (n * 100 + i) * 4096
            cookies[h].append(h.aio_pwrite(data, own))
            expect[own:own + 4096] = data
    time.sleep(0.3)
    for h in hs:
        h.poll(0)
        assert h.aio_in_flight() == 200, 'a write ran inside the section'
    qmp.execute('block-job-complete', device='mp')
    qmp.execute('x-debug-drain-end', node_name='src')
    for h in hs:
        assert wait_completions(h, cookies[h], 20), (
            qmp.execute('query-jobs'), qmp.execute('query-block-exports'),
            [(n['node-name'], n['drv']) for n in
             qmp.execute('query-named-block-nodes', flat=True)],
            [h.aio_in_flight() for h in hs])
    rec.wait_status('null')
    assert [e['node-name'] for e in qmp.execute('query-block-exports')] \
        == ['tgt']
    for n, h in enumerate(hs):
        off = 20 * MiB + n * 65536
        assert h.pread(4096, off) == bytes([100 + n]) * 4096
        expect[off:off + 4096] = bytes([100 + n]) * 4096
    for h in hs[1:]:
        h.shutdown()
    finish(daemon, hs[0], tgt, expect)
