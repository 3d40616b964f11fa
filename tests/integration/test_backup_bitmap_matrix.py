"""blockdev-backup with a bitmap: the iotest 257-style matrix of sync mode
(bitmap, full, top) x bitmap-mode (on-success, never, always) x outcome
(success, a read error on the source, a write error on the target, cancel
in PENDING, cancel while running), checking the bitmap's count and sha256
afterwards against the rule, and the backup's bytes (complete on success,
the clusters copied before the failure otherwise).  Also: bitmaps finer
and coarser than the backup cluster, a job paused on an error then resumed
or cancelled, everything refused while the bitmap is busy.  The invalid combinations are
refused with qemu-storage-daemon 7.2's words.  Every expectation was
checked against qemu-storage-daemon 7.2.

Scenario (16 MiB qcow2 source, 64 KiB clusters and granules): data at
0-4M and 8-10M; bm0 added; writes W1; the backup starts throttled to a
standstill (speed 1, one worker, 64 KiB chunks: it copies in order, one
cluster at a time); writes W2 land during the job (overlapping W1 and
new); the speed is lifted; the outcome.

The rule (qemu's, for a job that ends with ret):
    bitmap := W2                          ret == 0 and mode != never
    bitmap := W1 | W2                     mode == never, or ret < 0 and
                                          mode == on-success
    bitmap := W2 | (C not yet copied)     ret < 0 and mode == always
where C is what the job had to copy (bitmap: W1; full: every cluster;
top: the clusters allocated in the source).  The copy stops at cluster X
(the failing one), so "not yet copied" is C from X on; a cancel in
PENDING comes after everything was copied.
"""

import os

import pytest

from bitmaptest import (GRAN, ExportedSource, MiB, Model, assert_bitmap,
                        bitmap_info, bitmap_sha256, node_bitmaps,
                        data_granules, granules, host_offset, qemu_sha256,
                        read_image)
from bjtest import QMPError, qemu_img, qemu_io

pytest.importorskip('nbd')

SIZE = 16 * MiB
NBITS = SIZE // GRAN
X = 140                      # the cluster whose copy fails

# Initial data: granules 0-63 and 128-159 allocated in the source.
INITIAL = [(0x11, 0, 4 * MiB), (0x22, 8 * MiB, 2 * MiB)]
ALLOCATED = set(range(0, 64)) | set(range(128, 160))

# (seed, offset, length): aligned, unaligned, straddling, in holes.
W1 = [(1, 2 * GRAN, GRAN), (2, 3 * GRAN + 1000, 4096),
      (3, 41 * GRAN - 512, 1024), (4, 100 * GRAN, 8192),
      (5, X * GRAN + 4096, 4096), (6, 141 * GRAN, GRAN),
      (7, 200 * GRAN + 60000, 10000)]
# During the job: over W1 (2, 40, 201) and new (5, 150, 220), never X.
W2 = [(11, 2 * GRAN + 512, 512), (12, 40 * GRAN, GRAN),
      (13, 5 * GRAN, 4096), (14, 150 * GRAN, 4096),
      (15, 220 * GRAN, 4096), (16, 201 * GRAN + 100, 200)]
# After the job: the bitmap records again.
W3 = [(21, 250 * GRAN + 7, 9)]


def bits_of(writes):
    s = set()
    for _, off, length in writes:
        s |= granules(off, length)
    return s


B1, B2, B3 = bits_of(W1), bits_of(W2), bits_of(W3)
assert X in B1 and X not in B2

VALID = [('bitmap', 'on-success'), ('bitmap', 'never'), ('bitmap', 'always'),
         ('full', 'on-success'), ('full', 'always'),
         ('top', 'on-success'), ('top', 'always')]


def copy_set(sync):
    return {'bitmap': B1, 'full': set(range(NBITS)),
            'top': ALLOCATED | B1}[sync]


def expected_bits(sync, mode, outcome):
    ok = outcome == 'success'
    if mode == 'never' or (not ok and mode == 'on-success'):
        return B1 | B2
    if ok:
        return set(B2)
    if outcome == 'cancel':           # in PENDING: everything was copied
        return set(B2)
    return B2 | {c for c in copy_set(sync) if c >= X}


class Setup(ExportedSource):
    def __init__(self, daemon, outcome):
        self.qmp = daemon.qmp
        self.dir = daemon.workdir
        self.src = os.path.join(self.dir, 'src.qcow2')
        self.model = Model(SIZE)
        qemu_img('create', '-q', '-f', 'qcow2', self.src, SIZE)
        for seed, off, length in INITIAL:
            qemu_io('-f', 'qcow2', '-c',
                    'write -P %d %d %d' % (seed, off, length), self.src)
            self.model.write(off, bytes([seed]) * length)
        srcfile = {'driver': 'file', 'filename': self.src}
        if outcome == 'src-error':
            # X is allocated and W1 overwrites it in place: its host
            # offset is known now.
            sector = host_offset(self.src, X * GRAN) // 512
            srcfile = {'driver': 'blkdebug', 'image': srcfile,
                       'inject-error': [{'event': 'read_aio', 'errno': 5,
                                         'once': True, 'sector': sector}]}
        self.qmp.execute('blockdev-add', {'driver': 'qcow2',
                                          'node-name': 'src',
                                          'file': srcfile})
        if outcome == 'tgt-error':
            self.tgt, self.tgt_fmt = os.path.join(self.dir, 'tgt.raw'), 'raw'
            qemu_img('create', '-q', '-f', 'raw', self.tgt, SIZE)
            tgtfile = {'driver': 'blkdebug',
                       'image': {'driver': 'file', 'filename': self.tgt},
                       'inject-error': [{'event': 'write_aio', 'errno': 5,
                                         'once': True,
                                         'sector': X * GRAN // 512}]}
        else:
            self.tgt, self.tgt_fmt = os.path.join(self.dir,
                                                  'tgt.qcow2'), 'qcow2'
            qemu_img('create', '-q', '-f', 'qcow2', self.tgt, SIZE)
            tgtfile = {'driver': 'file', 'filename': self.tgt}
        self.qmp.execute('blockdev-add', {'driver': self.tgt_fmt,
                                          'node-name': 'tgt',
                                          'file': tgtfile})
        self.export_src(daemon)


def wait_status(qmp, status, timeout=60):
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=timeout,
                   match={'data': {'id': 'j', 'status': status}})


def copied_set(sync, outcome):
    """The clusters the target holds at the end: all of C, or (failure at
    X, copying in order) C before X and what W2 made the filter copy."""
    c = copy_set(sync)
    if outcome in ('success', 'cancel'):
        return c
    return {g for g in c if g < X} | (c & B2)


def check_target(s, at_start, copied, exact_data=None, partial=False):
    """The target holds at_start in the copied clusters, zeroes
    elsewhere; a qcow2 target has data only in copied clusters (and
    exactly in exact_data when given).  partial: any cluster may also
    have been left unwritten (zeroes)."""
    got = read_image(s.tgt, s.tgt_fmt, s.dir, 'tgt.dump')
    for g in range(NBITS):
        chunk = got[g * GRAN:(g + 1) * GRAN]
        if partial and chunk == bytes(GRAN):
            continue
        want_bytes = (at_start[g * GRAN:(g + 1) * GRAN]
                      if partial or g in copied else bytes(GRAN))
        assert chunk == want_bytes, 'target cluster %d' % g
    if partial:
        return
    if s.tgt_fmt == 'qcow2':
        data = data_granules(s.tgt)
        if exact_data is not None:
            assert data == exact_data
        assert data <= copied, sorted(data - copied)
        nonzero = {g for g in copied
                   if at_start[g * GRAN:(g + 1) * GRAN] != bytes(GRAN)}
        assert data >= nonzero, sorted(nonzero - data)
        qemu_img('check', '-q', s.tgt)


OUTCOMES = ['success', 'src-error', 'tgt-error', 'tgt-error-throttled',
            'cancel', 'cancel-running']


@pytest.mark.timeout(90)
@pytest.mark.parametrize('outcome', OUTCOMES)
@pytest.mark.parametrize('sync,mode', VALID,
                         ids=['%s-%s' % v for v in VALID])
def test_matrix(daemon, sync, mode, outcome):
    """outcome: success; src-error / tgt-error: the read of X from the
    source, or its write to the (raw) target, fails once (policy report);
    tgt-error-throttled: the same with the job still throttled (1 GiB/s);
    cancel: job-cancel in PENDING, after everything was copied;
    cancel-running: job-cancel while the job is throttled to a standstill
    (how much it copied by then is the daemon's business: for mode always
    only "every cluster of C is in the target or still in the bitmap")."""
    s = Setup(daemon, 'tgt-error' if outcome == 'tgt-error-throttled'
              else outcome)
    qmp = s.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0',
                granularity=GRAN)
    s.write(W1)
    assert_bitmap(qmp, 'src', 'bm0', B1, SIZE, what='after W1')
    at_start = s.model.snapshot()
    qmp.execute('blockdev-backup', {
        'job-id': 'j', 'device': 'src', 'target': 'tgt', 'sync': sync,
        'bitmap': 'bm0', 'bitmap-mode': mode, 'speed': 1,
        'auto-finalize': False, 'auto-dismiss': False,
        'x-perf': {'max-workers': 1, 'max-chunk': GRAN}})
    # The bitmap is frozen for the job: busy, still "recording" (its
    # successor records), its bits unchanged by the writes during the job.
    # (qemu also lists two anonymous bitmaps meanwhile, the successor and
    # the copy bitmap: not checked.)
    info = assert_bitmap(qmp, 'src', 'bm0', B1, SIZE, what='job started')
    assert info['busy'] is True and info['recording'] is True, info
    s.write(W2)
    info = assert_bitmap(qmp, 'src', 'bm0', B1, SIZE, what='during job')
    assert [b['name'] for b in node_bitmaps(qmp, 'src') if 'name' in b] == \
        ['bm0']

    if outcome == 'cancel-running':
        qmp.execute('job-cancel', id='j')
        qmp.wait_event('BLOCK_JOB_CANCELLED', timeout=60)
    elif outcome in ('success', 'cancel'):
        qmp.execute('block-job-set-speed', device='j', speed=0)
        qmp.wait_event('BLOCK_JOB_PENDING', timeout=60,
                       match={'data': {'id': 'j'}})
        if outcome == 'success':
            qmp.execute('job-finalize', id='j')
            ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
            assert 'error' not in ev['data'], ev
            assert ev['data']['offset'] == ev['data']['len']
        else:
            qmp.execute('job-cancel', id='j')
            qmp.wait_event('BLOCK_JOB_CANCELLED', timeout=60)
    else:
        # tgt-error-throttled: the job still has a speed when X fails, so
        # it copies one chunk at a time (and must not copy X+1 after X
        # failed).
        speed = 1 << 30 if outcome == 'tgt-error-throttled' else 0
        qmp.execute('block-job-set-speed', device='j', speed=speed)
        ev = qmp.wait_event('BLOCK_JOB_ERROR', timeout=60)
        assert ev['data'] == {'device': 'j', 'action': 'report',
                              'operation': 'read' if outcome == 'src-error'
                              else 'write'}
        ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
        assert ev['data']['error'] == 'Input/output error', ev
    wait_status(qmp, 'concluded')
    qmp.execute('job-dismiss', id='j')
    wait_status(qmp, 'null')

    what = '%s %s %s' % (sync, mode, outcome)
    if outcome == 'cancel-running' and mode == 'always':
        want = cancelled_bits(qmp, sync)
    else:
        want = expected_bits(sync, mode, outcome)
    info = assert_bitmap(qmp, 'src', 'bm0', want, SIZE, what=what)
    assert info['busy'] is False and info['recording'] is True, info
    s.write(W3)
    assert_bitmap(qmp, 'src', 'bm0', want | B3, SIZE, what='after W3')
    s.release()

    # The source holds every write.
    assert read_image(s.src, 'qcow2', s.dir, 'src.dump') == s.model.snapshot()
    # The target: the source as it was when the job started, in the
    # clusters copied; on success exactly the bitmap's (sync=bitmap) or
    # the allocated ones (sync=top).
    if outcome == 'cancel-running':
        # How far the job got is the daemon's business; what it copied
        # is right, and with mode always what it did not is still dirty.
        c = copy_set(sync)
        copied = (c - want) | (c & B2) if mode == 'always' else None
        check_target(s, at_start, copied, partial=mode != 'always')
        return
    exact = None
    if outcome == 'success':
        exact = {'bitmap': B1, 'top': ALLOCATED | B1}.get(sync)
    check_target(s, at_start, copied_set(sync, outcome), exact)


def cancelled_bits(qmp, sync, first=0):
    """The bits of bm0 after a cancel while running in mode always: W2
    and C from the point P >= first the in-order copy had reached (P
    unknown: the one whose hash matches)."""
    sha = bitmap_sha256(qmp, 'src', 'bm0')
    c = copy_set(sync)
    for p in range(first, NBITS + 1):
        bits = B2 | {g for g in c if g >= p}
        if qemu_sha256(bits, NBITS) == sha:
            return bits
    raise AssertionError('bitmap after cancel is not W2 | C from some '
                         'point on (count %d)'
                         % bitmap_info(qmp, 'src', 'bm0')['count'])


def backup_err(qmp, **args):
    a = {'job-id': 'j', 'device': 'src', 'target': 'tgt'}
    a.update({k.replace('_', '-'): v for k, v in args.items()})
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-backup', a)
    assert e.value.cls == 'GenericError'
    return e.value.desc


@pytest.mark.timeout(60)
def test_invalid_combinations(daemon):
    s = Setup(daemon, 'success')
    qmp = s.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0',
                granularity=GRAN)
    s.write(W1)
    for sync in ('full', 'top', 'none', 'bitmap', 'incremental'):
        if sync in ('bitmap', 'incremental'):
            msg = "must provide a valid bitmap name for '%s' sync mode" % sync
        else:
            msg = 'Cannot specify bitmap sync mode without a bitmap'
        for mode in ('on-success', 'never', 'always'):
            assert backup_err(qmp, sync=sync, bitmap_mode=mode) == msg
        if sync != 'incremental':
            assert backup_err(qmp, sync=sync, bitmap='bm0') == \
                'Bitmap sync mode must be given when providing a bitmap'
    for sync in ('full', 'top'):
        assert backup_err(qmp, sync=sync, bitmap='bm0',
                          bitmap_mode='never') == \
            ("Bitmap sync mode 'never' has no meaningful effect when "
             "combined with sync mode '%s'" % sync)
    for mode in ('on-success', 'never', 'always'):
        assert backup_err(qmp, sync='none', bitmap='bm0',
                          bitmap_mode=mode) == \
            "sync mode 'none' does not produce meaningful bitmap outputs"
    for mode in ('never', 'always'):
        assert backup_err(qmp, sync='incremental', bitmap='bm0',
                          bitmap_mode=mode) == \
            ("Bitmap sync mode must be 'on-success' when using sync mode "
             "'incremental'")
    for sync in ('bitmap', 'incremental', 'full'):
        assert backup_err(qmp, sync=sync, bitmap='nope',
                          bitmap_mode='on-success') == \
            "Bitmap 'nope' could not be found"
    # Nothing was started and the bitmap is untouched.
    assert qmp.execute('query-block-jobs') == []
    info = assert_bitmap(qmp, 'src', 'bm0', B1, SIZE)
    assert info['busy'] is False


@pytest.mark.timeout(60)
@pytest.mark.parametrize('gran', [4096, 256 * 1024])
def test_bitmap_granularity(daemon, gran):
    """A bitmap finer or coarser than the 64 KiB backup cluster: the job
    copies every cluster a dirty granule touches, and on success the
    bitmap holds the writes during the job at its own granularity."""
    s = Setup(daemon, 'success')
    qmp = s.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0',
                granularity=gran)
    s.write(W1)

    def bits(writes):
        out = set()
        for _, off, length in writes:
            out |= granules(off, length, gran)
        return out

    assert_bitmap(qmp, 'src', 'bm0', bits(W1), SIZE, gran)
    at_start = s.model.snapshot()
    qmp.execute('blockdev-backup', {
        'job-id': 'j', 'device': 'src', 'target': 'tgt', 'sync': 'bitmap',
        'bitmap': 'bm0', 'bitmap-mode': 'on-success', 'speed': 1,
        'x-perf': {'max-workers': 1, 'max-chunk': GRAN}})
    s.write(W2)
    qmp.execute('block-job-set-speed', device='j', speed=0)
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
    assert 'error' not in ev['data'], ev
    wait_status(qmp, 'null')
    assert_bitmap(qmp, 'src', 'bm0', bits(W2), SIZE, gran)
    s.release()
    copied = set()
    for b in bits(W1):
        copied |= granules(b * gran, gran)
    check_target(s, at_start, copied)


BUSY = "Bitmap 'bm0' is currently in use by another operation and cannot " \
    "be used"


@pytest.mark.timeout(60)
def test_busy_during_backup(daemon):
    """While a backup uses bm0, everything that would change it or use it
    for another job is refused; reading its hash is allowed."""
    s = Setup(daemon, 'success')
    qmp = s.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0',
                granularity=GRAN)
    qmp.execute('block-dirty-bitmap-add', node='src', name='other',
                granularity=GRAN)
    s.write(W1)
    t2 = os.path.join(s.dir, 't2.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', t2, SIZE)
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 't2',
                                 'file': {'driver': 'file', 'filename': t2}})
    qmp.execute('blockdev-backup', {'job-id': 'j', 'device': 'src',
                                    'target': 'tgt', 'sync': 'incremental',
                                    'bitmap': 'bm0', 'speed': 1})

    def refused(cmd, args):
        with pytest.raises(QMPError) as e:
            qmp.execute(cmd, args)
        assert e.value.desc == BUSY, (cmd, args)

    for cmd in ('clear', 'remove', 'disable', 'enable'):
        refused('block-dirty-bitmap-' + cmd, {'node': 'src', 'name': 'bm0'})
    refused('block-dirty-bitmap-merge', {'node': 'src', 'target': 'bm0',
                                         'bitmaps': ['other']})
    refused('block-dirty-bitmap-merge', {'node': 'src', 'target': 'other',
                                         'bitmaps': ['bm0']})
    refused('blockdev-backup', {'job-id': 'k', 'device': 'src',
                                'target': 't2', 'sync': 'incremental',
                                'bitmap': 'bm0'})
    refused('blockdev-backup', {'job-id': 'k', 'device': 'src',
                                'target': 't2', 'sync': 'full',
                                'bitmap': 'bm0', 'bitmap-mode': 'always'})
    with pytest.raises(QMPError) as e:
        qmp.execute('block-dirty-bitmap-add', node='src', name='bm0')
    assert e.value.desc == 'Bitmap already exists: bm0'
    assert_bitmap(qmp, 'src', 'bm0', B1, SIZE)
    qmp.execute('job-cancel', id='j')
    wait_status(qmp, 'null')
    # Cancelled: on-success keeps every bit.
    info = assert_bitmap(qmp, 'src', 'bm0', B1, SIZE)
    assert info['busy'] is False
    qmp.execute('block-dirty-bitmap-clear', node='src', name='bm0')
    assert_bitmap(qmp, 'src', 'bm0', set(), SIZE)
    qmp.execute('blockdev-del', node_name='t2')


@pytest.mark.timeout(60)
@pytest.mark.parametrize('then', ['resume', 'cancel'])
@pytest.mark.parametrize('mode', ['on-success', 'always'])
def test_paused_on_error(daemon, mode, then):
    """on-source-error=stop: the job pauses at X with bm0 still busy;
    resumed, it retries X and succeeds (bitmap: W2); cancelled there, it
    ends as a failure (on-success: W1 and W2; always: W2 and C from
    where the copy stopped -- X, or a little further: qemu-storage-daemon
    restarts the copy when the cancel wakes the paused job, and a chunk or
    two may be copied before the cancel is seen -- and no cluster of C
    neither in the target nor in the bitmap)."""
    s = Setup(daemon, 'src-error')
    qmp = s.qmp
    qmp.execute('block-dirty-bitmap-add', node='src', name='bm0',
                granularity=GRAN)
    s.write(W1)
    at_start = s.model.snapshot()
    qmp.execute('blockdev-backup', {
        'job-id': 'j', 'device': 'src', 'target': 'tgt', 'sync': 'bitmap',
        'bitmap': 'bm0', 'bitmap-mode': mode, 'speed': 1,
        'on-source-error': 'stop',
        'x-perf': {'max-workers': 1, 'max-chunk': GRAN}})
    s.write(W2)
    qmp.execute('block-job-set-speed', device='j', speed=0)
    ev = qmp.wait_event('BLOCK_JOB_ERROR', timeout=60)
    assert ev['data'] == {'device': 'j', 'action': 'stop',
                          'operation': 'read'}
    wait_status(qmp, 'paused')
    info = assert_bitmap(qmp, 'src', 'bm0', B1, SIZE, what='paused')
    assert info['busy'] is True
    if then == 'resume':
        qmp.execute('block-job-resume', device='j')
        ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
        assert 'error' not in ev['data'], ev
        want, copied = set(B2), B1
    else:
        qmp.execute('block-job-cancel', device='j', force=True)
        qmp.wait_event('BLOCK_JOB_CANCELLED', timeout=60)
    wait_status(qmp, 'null')
    partial = False
    if then == 'cancel' and mode == 'always':
        want = cancelled_bits(qmp, 'bitmap', X)
        copied = (B1 - want) | (B1 & B2)
    elif then == 'cancel':
        want, copied, partial = B1 | B2, None, True
    info = assert_bitmap(qmp, 'src', 'bm0', want, SIZE, what=then)
    assert info['busy'] is False
    s.release()
    check_target(s, at_start, copied, partial=partial,
                 exact_data=copied if then == 'resume' else None)
