"""I/O throttling: --object/object-add throttle-group with qsd 7.2's
limits and errors, driver=throttle filter nodes sharing a group's budget,
qom-set/qom-get of the group's limits live, drained sections that do not
wait for the budget, and jobs throttled only when their path goes through
the filter.

Rates are measured with python3-libnbd over an NBD export of the throttle
node, several requests in flight.  Tolerance (the machine is loaded, so
lower bounds are loose and upper bounds firm): what passes in t seconds
is at most 1.1 x limit x t + the bucket's capacity (limit / 10, or
max x max-length with a burst) + one request (a request takes its budget
when it starts, so a bucket overshoots by at most one), and at least
0.3 x limit x t minus that capacity.
"""

import os
import time

import pytest

from bjtest import QMPError, run_blockjobd, qemu_img, query_block_job

nbd = pytest.importorskip('nbd')

KiB = 1 << 10
MiB = 1 << 20
SIZE = 16 * MiB


def make_raw(workdir, name, size=SIZE, fill=0x5a):
    """A raw image full of data: reads of holes may be answered from
    block status without a read (qsd's NBD server does that too), which
    no throttle sees."""
    path = str(workdir / name)
    qemu_img('create', '-f', 'raw', path, str(size))
    if fill is not None:
        from bjtest import qemu_io
        qemu_io('-f', 'raw', '-c', 'write -P %d 0 %d' % (fill, size), path)
    return path


def add_throttled(qmp, node, path, group, fnode=None):
    fnode = fnode or node + '-file'
    qmp.execute('blockdev-add', {'driver': 'file', 'node-name': fnode,
                                 'filename': path})
    qmp.execute('blockdev-add', {'driver': 'throttle', 'node-name': node,
                                 'throttle-group': group, 'file': fnode})


def export(daemon, node, sockdir, iothread=None):
    sock = os.path.join(str(sockdir), 'nbd.sock')
    if not getattr(daemon, '_nbd_started', False):
        daemon.qmp.execute('nbd-server-start', addr={
            'type': 'unix', 'data': {'path': sock}})
        daemon._nbd_started = True
    args = {'type': 'nbd', 'id': node, 'node-name': node, 'name': node,
            'writable': True}
    if iothread:
        args['iothread'] = iothread
    daemon.qmp.execute('block-export-add', args)
    h = nbd.NBD()
    h.connect_uri('nbd+unix:///%s?socket=%s' % (node, sock))
    return h


def unexport(daemon, h, node):
    h.shutdown()
    daemon.qmp.execute('block-export-del', id=node)
    daemon.qmp.wait_event('BLOCK_EXPORT_DELETED', match={'data': {'id': node}})


def load(handles, duration, reqsize, write=False, depth=4):
    """Keeps depth requests of reqsize in flight on each libnbd handle
    for duration seconds; returns (operations completed per handle,
    seconds from the first request to the last completion)."""
    buf = nbd.Buffer(reqsize)
    done = [0] * len(handles)
    inflight = [[] for _ in handles]
    start = time.monotonic()
    end = start + duration
    off = [0] * len(handles)
    while True:
        now = time.monotonic()
        busy = False
        for i, h in enumerate(handles):
            q = inflight[i]
            for c in [c for c in q if h.aio_command_completed(c)]:
                q.remove(c)
                done[i] += 1
            while now < end and len(q) < depth:
                o = off[i]
                off[i] = (o + reqsize) % SIZE
                if write:
                    q.append(h.aio_pwrite(buf, o))
                else:
                    q.append(h.aio_pread(buf, o))
            busy = busy or bool(q)
        if not busy:
            break
        for h in handles:
            if h.aio_in_flight():
                h.poll(0)
        time.sleep(0.002)
    return done, time.monotonic() - start


def bounds(limit, elapsed, cap, one):
    hi = 1.1 * limit * elapsed + cap + one
    lo = 0.3 * limit * elapsed - cap
    return lo, hi


# ---- the group object ----

CLI_ERRORS = [
    ('x-iops-total=100,x-iops-read=10',
     'bps/iops/max total values and read/write values cannot be used at '
     'the same time'),
    ('limits.bps-total=100,limits.bps-read=5',
     'bps/iops/max total values and read/write values cannot be used at '
     'the same time'),
    ('x-iops-total=-1', 'Property values cannot be negative'),
    ('x-iops-total=abc', "Parameter 'x-iops-total' expects integer"),
    ('x-iops-total=100,x-iops-total-max=50',
     'bps_max/iops_max cannot be lower than bps/iops'),
    ('x-iops-total-max=50',
     'bps_max/iops_max require corresponding bps/iops values'),
    ('x-iops-total=100,x-iops-total-max=200,x-iops-total-max-length=0',
     'the burst length cannot be 0'),
    ('x-iops-total-max-length=5', 'burst length set without burst rate'),
    ('x-iops-total=1000000000000001',
     'bps/iops/max values must be within [0, 1000000000000000]'),
    ('x-iops-total=100,x-iops-total-max=200,'
     'x-iops-total-max-length=10000000000',
     'x-iops-total-max-length value must be in therange [0, 4294967295]'),
    ('limits.iops-total=100,limits.iops-total-max=200,'
     'limits.iops-total-max-length=10000000000',
     'iops-total-max-length value must be in the range [0, 4294967295]'),
    ('limits.iops-total=100,limits.iops-total-max=200,'
     'limits.iops-total-max-length=-1',
     'burst length too high for this burst rate'),
    ('x-iops-size=4096', 'iops size requires an iops value to be set'),
    ('foo=1', "Parameter 'foo' is unexpected"),
    ('limits.foo=1', "Parameter 'limits.foo' is unexpected"),
    ('limits.iops-total=abc', "Parameter 'limits.iops-total' expects "
     'integer'),
]


@pytest.mark.parametrize('opts,msg', CLI_ERRORS)
def test_object_cli_errors(opts, msg):
    arg = 'throttle-group,id=tg,' + opts
    p = run_blockjobd('--object', arg, timeout=10)
    assert p.returncode == 1
    assert p.stderr.endswith('--object %s: %s\n' % (arg, msg)), p.stderr


def test_object_add_limits_and_errors(daemon):
    qmp = daemon.qmp
    bad = [
        ({'x-iops-total': '5'},
         "Invalid parameter type for 'x-iops-total', expected: integer"),
        ({'x-iops-total': -5}, 'Property values cannot be negative'),
        ({'limits': {'iops-total': -5}},
         'bps/iops/max values must be within [0, 1000000000000000]'),
        ({'limits': {'iops-total': 'x'}},
         "Invalid parameter type for 'limits.iops-total', expected: "
         'integer'),
        ({'limits': 5}, "Invalid parameter type for 'limits', expected: "
         'object'),
        ({'limits': {'iops-total': 100}, 'x-iops-read': 5},
         'bps/iops/max total values and read/write values cannot be used '
         'at the same time'),
    ]
    for props, msg in bad:
        args = {'qom-type': 'throttle-group', 'id': 'g0'}
        args.update(props)
        with pytest.raises(QMPError) as e:
            qmp.execute('object-add', args)
        assert e.value.desc == msg, props
        with pytest.raises(QMPError) as e:
            qmp.execute('qom-get', path='g0', property='limits')
        assert (e.value.cls, e.value.desc) == ('DeviceNotFound',
                                               "Device 'g0' not found")
    # limits wins over the x- properties; the rest keep their defaults.
    qmp.execute('object-add', {'qom-type': 'throttle-group', 'id': 'g0',
                               'x-iops-total': 100, 'x-iops-total-max': 300,
                               'x-bps-read': 4096, 'limits': {
                                   'iops-total': 7, 'iops-size': 512}})
    lim = qmp.execute('qom-get', path='/objects/g0', property='limits')
    assert len(lim) == 19
    assert (lim['iops-total'], lim['iops-total-max'], lim['bps-read'],
            lim['iops-size'], lim['bps-write-max-length']) == (7, 300, 4096,
                                                               512, 1)
    assert qmp.execute('qom-get', path='g0', property='x-iops-total') == 7
    assert qmp.execute('qom-get', path='g0', property='type') == \
        'throttle-group'
    # qom-set merges into what is set; a bad value changes nothing.
    qmp.execute('qom-set', path='g0', property='limits',
                value={'iops-total': 50})
    for value, msg in [
            ({'iops-total': 50, 'iops-read': 5},
             'bps/iops/max total values and read/write values cannot be '
             'used at the same time'),
            ({'iops-total': -1},
             'bps/iops/max values must be within [0, 1000000000000000]'),
            ({'iops-total-max': 10},
             'bps_max/iops_max cannot be lower than bps/iops'),
            ({'bogus': 10}, "Parameter 'limits.bogus' is unexpected"),
            (5, "Invalid parameter type for 'limits', expected: object")]:
        with pytest.raises(QMPError) as e:
            qmp.execute('qom-set', path='g0', property='limits', value=value)
        assert e.value.desc == msg, value
    lim = qmp.execute('qom-get', path='g0', property='limits')
    assert (lim['iops-total'], lim['iops-total-max']) == (50, 300)
    for cmd, args, cls, msg in [
            ('qom-set', {'path': 'g0', 'property': 'x-iops-total',
                         'value': 77},
             'GenericError', 'Property cannot be set after initialization'),
            ('qom-set', {'path': 'g0', 'property': 'nope', 'value': 1},
             'GenericError', "Property 'throttle-group.nope' not found"),
            ('qom-get', {'path': 'g0', 'property': 'nope'},
             'GenericError', "Property 'throttle-group.nope' not found"),
            ('qom-set', {'path': 'nope', 'property': 'limits', 'value': {}},
             'DeviceNotFound', "Device 'nope' not found"),
            ('qom-get', {'path': 'nope', 'property': 'limits'},
             'DeviceNotFound', "Device 'nope' not found")]:
        with pytest.raises(QMPError) as e:
            qmp.execute(cmd, args)
        assert (e.value.cls, e.value.desc) == (cls, msg)
    qmp.execute('object-del', id='g0')


def test_qom_paths(daemon):
    qmp = daemon.qmp
    qmp.execute('object-add', {'qom-type': 'throttle-group', 'id': 'g0'})
    for path, want in [('/', 'container'), ('/objects', 'container'),
                       ('objects', 'container'), ('/objects/', 'container'),
                       ('//objects/g0', 'throttle-group'),
                       ('g0', 'throttle-group')]:
        assert qmp.execute('qom-get', path=path, property='type') == want
    for path in ('', '/objects/nope', '/g0', '/objects/g0/x'):
        with pytest.raises(QMPError) as e:
            qmp.execute('qom-get', path=path, property='type')
        assert (e.value.cls, e.value.desc) == \
            ('DeviceNotFound', "Device '%s' not found" % path)
    with pytest.raises(QMPError) as e:
        qmp.execute('qom-set', path='g0', property='type', value='x')
    assert e.value.desc == "Property 'throttle-group.type' is not writable"
    with pytest.raises(QMPError) as e:
        qmp.execute('qom-get', path='/objects', property='limits')
    assert e.value.desc == "Property 'container.limits' not found"
    qmp.execute('object-del', id='g0')


def test_filter_errors_and_object_del(daemon, workdir):
    qmp = daemon.qmp
    path = make_raw(workdir, 'a.raw')
    qmp.execute('blockdev-add', {'driver': 'file', 'node-name': 'f',
                                 'filename': path})
    qmp.execute('object-add', {'qom-type': 'throttle-group', 'id': 'g0'})
    qmp.execute('object-add', {'qom-type': 'secret', 'id': 's0',
                               'data': 'x'})
    for opts, msg in [
            ({'file': 'f'}, "Parameter 'throttle-group' is missing"),
            ({'file': 'f', 'throttle-group': 'nope'},
             "Throttle group 'nope' does not exist"),
            ({'file': 'f', 'throttle-group': 's0'},
             "Throttle group 's0' does not exist"),
            ({'throttle-group': 'g0'}, "Parameter 'file' is missing"),
            ({'file': 'f', 'throttle-group': 'g0', 'limits': {}},
             "Parameter 'limits' is unexpected"),
            ({'file': 'f', 'throttle-group': 5},
             "Invalid parameter type for 'throttle-group', expected: "
             'string'),
            ({'file': 'nope', 'throttle-group': 'g0'},
             "Cannot find device='nope' nor node-name='nope'"),
            ({'file': 'f', 'throttle-group': 'g0', 'node-name': 'f'},
             "Duplicate nodes with node-name='f'")]:
        args = {'driver': 'throttle', 'node-name': 't0'}
        args.update(opts)
        with pytest.raises(QMPError) as e:
            qmp.execute('blockdev-add', args)
        assert e.value.desc == msg, opts
    names = [n['node-name']
             for n in qmp.execute('query-named-block-nodes', flat=True)]
    assert names == ['f']
    qmp.execute('object-del', id='g0')     # not in use after the failures
    qmp.execute('object-add', {'qom-type': 'throttle-group', 'id': 'g0'})
    for t in ('t0', 't1'):
        qmp.execute('blockdev-add', {'driver': 'throttle', 'node-name': t,
                                     'throttle-group': 'g0', 'file': 'f'})
    for t in ('t0', 't1'):
        with pytest.raises(QMPError) as e:
            qmp.execute('object-del', id='g0')
        assert e.value.desc == "object 'g0' is in use, can not be deleted"
        qmp.execute('blockdev-del', node_name=t)
    qmp.execute('object-del', id='g0')
    qmp.execute('object-del', id='s0')


# ---- limits hold ----

def test_iops_limit(daemon_factory, workdir, sockdir):
    d = daemon_factory('--object', 'throttle-group,id=g,x-iops-total=50')
    add_throttled(d.qmp, 't', make_raw(workdir, 'a.raw'), 'g')
    h = export(d, 't', sockdir)
    done, elapsed = load([h], 2.0, 4 * KiB)
    lo, hi = bounds(50, elapsed, 50 / 10, 1)
    assert lo <= done[0] <= hi, (done, elapsed)
    unexport(d, h, 't')


def test_bps_limit_with_burst(daemon_factory, workdir, sockdir):
    # 1 MiB/s on average, bursts of 2 MiB/s for 1 s.
    d = daemon_factory('--object', 'throttle-group,id=g,x-bps-write=%d,'
                       'x-bps-write-max=%d,x-bps-write-max-length=1'
                       % (MiB, 2 * MiB))
    add_throttled(d.qmp, 't', make_raw(workdir, 'a.raw'), 'g')
    h = export(d, 't', sockdir)
    done, elapsed = load([h], 2.0, 64 * KiB, write=True)
    lo, hi = bounds(MiB, elapsed, 2 * MiB, 64 * KiB)
    assert lo <= done[0] * 64 * KiB <= hi, (done, elapsed)
    # Reads are not limited by a write limit.
    done, elapsed = load([h], 0.5, 64 * KiB)
    assert done[0] * 64 * KiB > 2 * MiB * elapsed + 2 * MiB, (done, elapsed)
    unexport(d, h, 't')


def test_iops_size(daemon_factory, workdir, sockdir):
    # A 64 KiB read counts 16 operations of 4 KiB: 20 of them a second.
    d = daemon_factory('--object', 'throttle-group,id=g,x-iops-total=20,'
                       'x-iops-size=4096')
    add_throttled(d.qmp, 't', make_raw(workdir, 'a.raw'), 'g')
    h = export(d, 't', sockdir)
    done, elapsed = load([h], 2.0, 64 * KiB, depth=1)
    lo, hi = bounds(20, elapsed, 20 / 10, 16)
    assert 1 <= done[0] * 16 <= hi, (done, elapsed)
    unexport(d, h, 't')


def test_group_shares_budget(daemon_factory, workdir, sockdir):
    d = daemon_factory('--object', 'throttle-group,id=g,x-iops-read=40')
    add_throttled(d.qmp, 't1', make_raw(workdir, 'a.raw'), 'g')
    add_throttled(d.qmp, 't2', make_raw(workdir, 'b.raw'), 'g')
    h1 = export(d, 't1', sockdir)
    h2 = export(d, 't2', sockdir)
    done, elapsed = load([h1, h2], 2.0, 4 * KiB)
    lo, hi = bounds(40, elapsed, 40 / 10, 1)
    assert lo <= sum(done) <= hi, (done, elapsed)
    assert min(done) > 0, done
    unexport(d, h1, 't1')
    unexport(d, h2, 't2')


@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 aborts when a client '
                            'of an iothread export disconnects')
def test_group_shared_with_iothread(daemon_factory, workdir, sockdir):
    # One member in an iothread, one in the main loop: one budget.
    d = daemon_factory('--object', 'iothread,id=io0',
                       '--object', 'throttle-group,id=g,x-iops-total=40')
    add_throttled(d.qmp, 't1', make_raw(workdir, 'a.raw'), 'g')
    add_throttled(d.qmp, 't2', make_raw(workdir, 'b.raw'), 'g')
    h1 = export(d, 't1', sockdir, iothread='io0')
    h2 = export(d, 't2', sockdir)
    done, elapsed = load([h1, h2], 2.0, 4 * KiB, write=True)
    lo, hi = bounds(40, elapsed, 40 / 10, 1)
    assert lo <= sum(done) <= hi, (done, elapsed)
    assert min(done) > 0, done
    unexport(d, h1, 't1')
    unexport(d, h2, 't2')


@pytest.mark.blockjobd_only('qsd 7.2 keeps the timer of a request already '
                            'waiting after qom-set (a minute here); we '
                            're-time it at once')
def test_qom_set_retimes_waiting_requests(daemon_factory, workdir, sockdir):
    # 1 KiB/s: after the first 64 KiB read the next would wait a minute.
    d = daemon_factory('--object', 'throttle-group,id=g,x-bps-read=1024')
    add_throttled(d.qmp, 't', make_raw(workdir, 'a.raw'), 'g')
    h = export(d, 't', sockdir)
    h.pread(64 * KiB, 0)
    c = h.aio_pread(nbd.Buffer(64 * KiB), 0)
    h.poll(100)
    assert not h.aio_command_completed(c)
    d.qmp.execute('qom-set', path='g', property='limits',
                  value={'bps-read': 100 * MiB})
    t0 = time.monotonic()
    while not h.aio_command_completed(c):
        h.poll(1000)
        assert time.monotonic() - t0 < 10, 'qom-set did not re-time it'
    assert d.qmp.execute('qom-get', path='g',
                         property='limits')['bps-read'] == 100 * MiB
    unexport(d, h, 't')


def test_drain_does_not_wait_for_budget(daemon_factory, workdir, sockdir):
    d = daemon_factory('--object', 'throttle-group,id=g,x-bps-read=1024')
    add_throttled(d.qmp, 't', make_raw(workdir, 'a.raw'), 'g')
    h = export(d, 't', sockdir)
    h.pread(64 * KiB, 0)
    c = h.aio_pread(nbd.Buffer(64 * KiB), 0)
    h.poll(100)
    assert not h.aio_command_completed(c)
    # A transaction drains every node: the waiting read goes through.
    t0 = time.monotonic()
    d.qmp.execute('transaction', actions=[{
        'type': 'block-dirty-bitmap-add',
        'data': {'node': 't-file', 'name': 'b'}}])
    assert time.monotonic() - t0 < 10
    while not h.aio_command_completed(c):
        h.poll(1000)
        assert time.monotonic() - t0 < 10, 'read still waits after drain'
    unexport(d, h, 't')


# ---- jobs ----

def test_job_through_filter_is_throttled(daemon_factory, workdir):
    # Two sources with the same 8 MiB of data; the mirror of the throttle
    # node reads through it (512 KiB/s), the one beside it does not.
    size = 8 * MiB
    rate = 512 * KiB
    d = daemon_factory('--object', 'throttle-group,id=g,x-bps-total=%d'
                       % rate)
    qmp = d.qmp
    add_throttled(qmp, 't', make_raw(workdir, 'a.raw', size, fill=0x11),
                  'g', fnode='a')
    qmp.execute('blockdev-add', {'driver': 'file', 'node-name': 'b',
                                 'filename': make_raw(workdir, 'b.raw', size,
                                                      fill=0x22)})
    for n in ('ta', 'tb'):
        qmp.execute('blockdev-add', {'driver': 'file', 'node-name': n,
                                     'filename': make_raw(workdir,
                                                          n + '.raw', size,
                                                          fill=None)})
    t0 = time.monotonic()
    qmp.execute('blockdev-mirror', job_id='jt', device='t', target='ta',
                sync='full')
    qmp.execute('blockdev-mirror', job_id='jb', device='b', target='tb',
                sync='full')
    qmp.wait_event('BLOCK_JOB_READY', match={'data': {'device': 'jb'}})
    j = query_block_job(qmp, 'jt')
    elapsed = time.monotonic() - t0
    assert j is not None and not j['ready'], j
    # Everything the throttled job copied passed the filter.
    # (a mirror request is at most 1 MiB: its buffer / 16)
    assert j['offset'] <= 1.1 * rate * elapsed + rate / 10 + MiB, \
        (j, elapsed)
    # Lifting the limit lets it finish.
    qmp.execute('qom-set', path='g', property='limits',
                value={'bps-total': 0})
    qmp.wait_event('BLOCK_JOB_READY', match={'data': {'device': 'jt'}})
    for job in ('jt', 'jb'):
        qmp.execute('block-job-complete', device=job)
        qmp.wait_event('BLOCK_JOB_COMPLETED', match={'data': {'device': job}})
    qemu_img('compare', '-f', 'raw', '-F', 'raw', str(workdir / 'a.raw'),
             str(workdir / 'ta.raw'))
    qemu_img('compare', '-f', 'raw', '-F', 'raw', str(workdir / 'b.raw'),
             str(workdir / 'tb.raw'))
