"""driver=copy-on-read: reads through the filter that hit what the top
image does not hold copy the data into the top (qemu-img map before and
after), writes pass through, `bottom` limits what is copied; qsd 7.2's
errors for bad options; block-stream with filter-node-name shows the
filter above the top during the job and not after, with the events of
the goldens.

Chain (64 MiB, chain.py):
    base:  1 @ 0-24M, 4 @ 40-48M
    mid:   2 @ 8-32M, zeroes @ 44-46M
    top:   3 @ 20-28M
"""

import json

import pytest

import golden
from bjtest import QMPError, nbd_export_close, nbd_export_open, qemu_img

MiB = 1 << 20

nbd = pytest.importorskip('nbd')


def add_chain(qmp, chain):
    """top, mid and base as named nodes (top's backing opened by us)."""
    qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'top',
        'file': {'driver': 'file', 'filename': chain.top},
        'backing': {
            'driver': 'qcow2', 'node-name': 'mid',
            'file': {'driver': 'file', 'filename': chain.mid},
            'backing': {
                'driver': 'qcow2', 'node-name': 'base',
                'file': {'driver': 'file', 'filename': chain.base}}}})


def top_ranges(path):
    """[start, end) of what top itself holds (depth 0), merged."""
    out = qemu_img('map', '--output=json', path).stdout
    ranges = []
    for e in json.loads(out):
        if e['depth'] != 0 or not e['data'] and not e.get('zero'):
            continue
        if e['depth'] == 0 and (e['data'] or e['zero']):
            if ranges and ranges[-1][1] == e['start']:
                ranges[-1][1] = e['start'] + e['length']
            else:
                ranges.append([e['start'], e['start'] + e['length']])
    return [tuple(r) for r in ranges]


def node_names(qmp):
    return [n['node-name']
            for n in qmp.execute('query-named-block-nodes', flat=True)]


@pytest.mark.timeout(60)
def test_bad_options(daemon, chain):
    """qsd 7.2's words for each."""
    qmp = daemon.qmp
    chain.add_top(qmp)
    qmp.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'other'})
    cases = [
        ({}, "Parameter 'file' is missing"),
        ({'file': 'top', 'bottom': 'nope'}, "Bottom node 'nope' not found"),
        ({'file': 'top', 'bottom': 5},
         "Invalid parameter type for 'bottom', expected: string"),
        ({'file': 'top', 'foo': 1}, "Parameter 'foo' is unexpected"),
        ({'file': 'nosuch'},
         "Cannot find device='nosuch' nor node-name='nosuch'"),
    ]
    for extra, msg in cases:
        args = {'driver': 'copy-on-read', 'node-name': 'c'}
        args.update(extra)
        with pytest.raises(QMPError) as e:
            qmp.execute('blockdev-add', args)
        assert e.value.desc == msg, extra
    assert 'c' not in node_names(qmp)
    # bottom is a name: top itself (nothing is copied then) is fine.
    qmp.execute('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'c',
                                 'file': 'top', 'bottom': 'top'})
    info = [n for n in qmp.execute('query-named-block-nodes', flat=True)
            if n['node-name'] == 'c'][0]
    assert info['drv'] == 'copy-on-read'
    assert info['file'] == ('json:{"driver": "copy-on-read", "file": '
                            '{"driver": "qcow2", "file": {"driver": "file", '
                            '"filename": "%s"}}}' % chain.top)
    qmp.execute('blockdev-del', node_name='c')


@pytest.mark.timeout(60)
@pytest.mark.blockjobd_only('qsd 7.2 spins at 100% CPU on such a bottom')
def test_bottom_outside_the_chain(daemon, chain):
    qmp = daemon.qmp
    add_chain(qmp, chain)
    qmp.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'other'})
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-add', {'driver': 'copy-on-read',
                                     'node-name': 'c', 'file': 'top',
                                     'bottom': 'other'})
    assert e.value.desc == ("Bottom node 'other' is not in the backing "
                            "chain of 'top'")


def read_through(daemon, sockdir, node, ranges):
    """Reads ranges (length, offset) through an NBD export of node;
    returns the bytes of each."""
    h = nbd_export_open(daemon, sockdir, node=node, name='e')
    data = [h.pread(n, off) for n, off in ranges]
    nbd_export_close(daemon, h, node=node, name='e')
    return data


@pytest.mark.timeout(60)
@pytest.mark.parametrize('bottom', [None, 'mid'])
def test_reads_populate_top(daemon, chain, sockdir, bottom):
    """Reading 0-36M through the filter: top then holds what the chain
    (down to bottom) held there, the rest stays with the backing files;
    the image reads the same."""
    qmp = daemon.qmp
    assert top_ranges(chain.top) == [(20 * MiB, 28 * MiB)]
    add_chain(qmp, chain)
    args = {'driver': 'copy-on-read', 'node-name': 'cor', 'file': 'top'}
    if bottom:
        args['bottom'] = bottom
    qmp.execute('blockdev-add', args)
    data = read_through(daemon, sockdir, 'cor',
                        [(4 * MiB, off) for off in range(0, 36 * MiB,
                                                         4 * MiB)])
    with open(chain.ref, 'rb') as f:
        assert b''.join(data) == f.read(36 * MiB)
    qmp.execute('blockdev-del', node_name='top')
    if bottom is None:
        # 0-32M held by mid or base: copied; 32-36M by nobody: not.
        assert top_ranges(chain.top) == [(0, 32 * MiB)]
    else:
        # Only mid's part (8-32M) is copied, base's 0-8M is not.
        assert top_ranges(chain.top) == [(8 * MiB, 32 * MiB)]
    chain.check()
    qemu_img('check', '-q', chain.top)


@pytest.mark.timeout(60)
def test_writes_pass_through(daemon, chain, sockdir):
    qmp = daemon.qmp
    add_chain(qmp, chain)
    qmp.execute('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'cor',
                                 'file': 'top'})
    h = nbd_export_open(daemon, sockdir, node='cor', name='e')
    h.pwrite(b'\x09' * MiB, 50 * MiB)
    h.zero(MiB, 60 * MiB)
    assert h.pread(MiB, 50 * MiB) == b'\x09' * MiB
    # a write then a read of the same cluster: the write wins
    h.pwrite(b'\x0a' * 4096, 2 * MiB)
    assert h.pread(8192, 2 * MiB) == b'\x0a' * 4096 + b'\x01' * 4096
    h.flush()
    nbd_export_close(daemon, h, node='cor', name='e')
    qmp.execute('blockdev-del', node_name='top')
    out = qemu_img('compare', '-f', 'qcow2', chain.top, chain.top).stdout
    assert 'identical' in out
    p = qemu_img('map', '--output=json', chain.top).stdout
    held = [(e['start'], e['length']) for e in json.loads(p)
            if e['depth'] == 0 and (e['data'] or e['zero'])]
    assert any(s <= 50 * MiB < s + n for s, n in held)
    assert any(s <= 60 * MiB < s + n for s, n in held)
    qemu_img('check', '-q', chain.top)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_stream_with_filter_node_name(daemon, chain, mode):
    """The filter is above top while the job runs (top's parents hang off
    it) and gone after; the events are the goldens' (qsd inserts its
    filter in any case)."""
    qmp = daemon.qmp
    chain.add_top(qmp)
    rec = golden.Recorder(qmp, 'stream0')
    args = {'job-id': 'stream0', 'device': 'top', 'speed': 1,
            'filter-node-name': 'corf'}
    if mode == 'manual':
        args.update({'auto-finalize': False, 'auto-dismiss': False})
    qmp.execute('block-stream', args)
    infos = {n['node-name']: n
             for n in qmp.execute('query-named-block-nodes', flat=True)}
    assert infos['corf']['drv'] == 'copy-on-read'
    # a second node of that name is refused meanwhile
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-add', {'driver': 'null-co',
                                     'node-name': 'corf'})
    assert 'corf' in e.value.desc
    qmp.execute('block-job-set-speed', device='stream0', speed=0)
    if mode == 'manual':
        rec.wait('BLOCK_JOB_PENDING')
        qmp.execute('job-finalize', id='stream0')
        rec.wait_status('concluded')
        qmp.execute('job-dismiss', id='stream0')
    rec.wait_status('null')
    golden.assert_matches('stream.%s' % mode, rec.events, raw=True)
    assert 'corf' not in node_names(qmp)
    qmp.execute('blockdev-del', node_name='top')
    assert chain.chain() == ['top.qcow2']
    chain.check()


@pytest.mark.timeout(120)
def test_stream_filter_gone_after_cancel(daemon, chain):
    qmp = daemon.qmp
    chain.add_top(qmp)
    rec = golden.Recorder(qmp, 's')
    qmp.execute('block-stream', {'job-id': 's', 'device': 'top', 'speed': 1,
                                 'filter-node-name': 'corf'})
    assert 'corf' in node_names(qmp)
    qmp.execute('block-job-cancel', device='s')
    rec.wait_status('null')
    assert 'BLOCK_JOB_CANCELLED' in golden.sequence(rec.events)
    assert 'corf' not in node_names(qmp)
    # the name is free again
    qmp.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'corf'})
    qmp.execute('blockdev-del', node_name='corf')
    qmp.execute('blockdev-del', node_name='top')
    chain.check()


@pytest.mark.timeout(120)
def test_stream_bad_filter_node_name(daemon, chain):
    """qsd's words, and no job."""
    qmp = daemon.qmp
    chain.add_top(qmp)
    qmp.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'taken'})
    with pytest.raises(QMPError) as e:
        qmp.execute('block-stream', {'job-id': 's', 'device': 'top',
                                     'filter-node-name': 'taken'})
    assert e.value.desc == ("Could not create node: Duplicate nodes with "
                            "node-name='taken'")
    assert qmp.execute('query-block-jobs') == []


@pytest.mark.timeout(120)
def test_copies_never_overwrite_writes(daemon, chain, sockdir, workdir):
    """Reads (which copy) and writes of the same clusters in flight
    together through the filter: every write survives (a copy of old
    data must not land on it)."""
    import random
    qmp = daemon.qmp
    add_chain(qmp, chain)
    qmp.execute('blockdev-add', {'driver': 'copy-on-read', 'node-name': 'cor',
                                 'file': 'top'})
    with open(chain.ref, 'rb') as f:
        expect = bytearray(f.read())
    rnd = random.Random(21)
    slots = rnd.sample(range(0, 36 * MiB // 65536), 200)
    h = nbd_export_open(daemon, sockdir, node='cor', name='e')
    bufs = []
    for i, slot in enumerate(slots):
        off = slot * 65536
        # a read covering the slot and its neighbours, then the write
        roff = max(0, off - 65536)
        rbuf = nbd.Buffer(3 * 65536)
        bufs.append(rbuf)
        h.aio_pread(rbuf, roff)
        data = bytes([0x80 + i % 64]) * 65536
        h.aio_pwrite(data, off)
        expect[off:off + 65536] = data
        while h.aio_in_flight() > 32:
            h.poll(-1)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
    nbd_export_close(daemon, h, node='cor', name='e')
    qmp.execute('blockdev-del', node_name='top')
    want = workdir / 'want.raw'
    want.write_bytes(bytes(expect))
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', str(want),
             chain.top)
    qemu_img('check', '-q', chain.top)


@pytest.mark.timeout(120)
def test_reads_during_stream_populate_top(daemon, chain, sockdir):
    """A client of top reads through the filter the stream inserted: what
    it reads lands in top at once, ahead of the job (held at speed 1)."""
    qmp = daemon.qmp
    chain.add_top(qmp)
    h = nbd_export_open(daemon, sockdir, node='top', name='e',
                        writable=False)
    rec = golden.Recorder(qmp, 's')
    qmp.execute('block-stream', {'job-id': 's', 'device': 'top', 'speed': 1,
                                 'filter-node-name': 'corf'})
    assert h.pread(4 * MiB, 40 * MiB) == b'\x04' * (4 * MiB)
    h.flush()          # top's metadata on disk, for qemu-img
    out = qemu_img('map', '-U', '--output=json', chain.top).stdout
    held = [(e['start'], e['start'] + e['length']) for e in json.loads(out)
            if e['depth'] == 0 and e['data']]
    assert any(s <= 40 * MiB and 44 * MiB <= e for s, e in held), held
    qmp.execute('block-job-set-speed', device='s', speed=0)
    rec.wait_status('null')
    assert 'corf' not in node_names(qmp)
    assert h.pread(4096, 40 * MiB) == b'\x04' * 4096
    nbd_export_close(daemon, h, node='top', name='e')
    chain.check()
