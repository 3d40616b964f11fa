"""block-stream: bytes, chain, events (against the golden recordings),
control verbs mid-copy, cancel in each state, busy nodes, quit, and an NBD
client writing to the top throughout.

Chain (64 MiB, made by qemu-img/qemu-io):
    base:  1 @ 0-24M, 4 @ 40-48M
    mid:   2 @ 8-32M, zeroes @ 44-46M
    top:   3 @ 20-28M                       (the node streamed into)
A raw reference of top's view is taken before the job; the job must not
change what top reads.
"""

import os
import time

import pytest

import golden
from bjtest import (QMPError, is_qsd, qemu_img, qemu_io, query_block_job,
                    wait_until)

MiB = 1 << 20

# Every test that uses `daemon` twice: nodes in the main loop, then in an
# iothread (conftest.py, node_ctx).
pytestmark = pytest.mark.ctx_variants


def node_names(qmp):
    return [n['node-name']
            for n in qmp.execute('query-named-block-nodes', flat=True)]


# ---- completion, events, chain ----

@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_stream_whole_chain(daemon, chain, mode):
    qmp = daemon.qmp
    chain.add_top(qmp)
    rec = golden.Recorder(qmp, 'stream0')
    args = {'job-id': 'stream0', 'device': 'top'}
    if mode == 'manual':
        args.update({'auto-finalize': False, 'auto-dismiss': False})
    qmp.execute('block-stream', args)
    if mode == 'manual':
        rec.wait('BLOCK_JOB_PENDING')
        assert query_block_job(qmp, 'stream0')['status'] == 'pending'
        qmp.execute('job-finalize', id='stream0')
        rec.wait('BLOCK_JOB_COMPLETED')
        rec.wait_status('concluded')
        jobs = qmp.execute('query-jobs')
        assert [j['status'] for j in jobs] == ['concluded']
        assert 'error' not in jobs[0]
        qmp.execute('job-dismiss', id='stream0')
    rec.wait_status('null')
    assert qmp.execute('query-block-jobs') == []
    golden.assert_matches('stream.%s' % mode, rec.events, raw=True)
    qmp.execute('blockdev-del', node_name='top')
    assert chain.chain() == ['top.qcow2']
    assert chain.backing_string() == ''
    chain.check()


@pytest.mark.timeout(120)
def test_stream_to_base_node_with_backing_file(daemon, chain):
    qmp = daemon.qmp
    chain.add_top(qmp)
    # the chain's bottom node (opened from the headers)
    infos = qmp.execute('query-named-block-nodes', flat=True)
    base = [n['node-name'] for n in infos
            if n['drv'] == 'qcow2' and n['image']['filename'].endswith(
                'base.qcow2')][0]
    rec = golden.Recorder(qmp, 's1')
    qmp.execute('block-stream', {'job-id': 's1', 'device': 'top',
                                 'base-node': base,
                                 'backing-file': 'base.qcow2'})
    rec.wait_status('null')
    assert 'BLOCK_JOB_COMPLETED' in golden.sequence(rec.events)
    qmp.execute('blockdev-del', node_name='top')
    assert chain.backing_string() == 'base.qcow2'
    assert chain.chain() == ['top.qcow2', 'base.qcow2']
    chain.check()


# ---- control mid-copy ----

@pytest.mark.timeout(120)
def test_stream_pause_resume_set_speed(daemon, chain):
    qmp = daemon.qmp
    chain.add_top(qmp)
    rec = golden.Recorder(qmp, 'stream0')
    # slow enough to be caught running on a loaded machine
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'speed': 256 * 1024})
    assert query_block_job(qmp, 'stream0')['speed'] == 256 * 1024
    qmp.execute('block-job-pause', device='stream0')
    with pytest.raises(QMPError) as e:
        qmp.execute('block-job-pause', device='stream0')
    assert e.value.desc == 'Job is already paused'
    rec.wait_status('paused')
    j = query_block_job(qmp, 'stream0')
    assert j['paused'] and j['status'] == 'paused' and not j['busy']
    offset = j['offset']
    time.sleep(0.3)
    assert query_block_job(qmp, 'stream0')['offset'] == offset
    # soft cancel of a user-paused job is refused
    with pytest.raises(QMPError) as e:
        qmp.execute('block-job-cancel', device='stream0')
    assert e.value.desc == ("The block job for device 'stream0' is "
                            "currently paused")
    qmp.execute('block-job-resume', device='stream0')
    rec.wait_status('running')
    with pytest.raises(QMPError) as e:
        qmp.execute('block-job-resume', device='stream0')
    assert e.value.desc == "Can't resume a job that was not paused"
    # lifting the limit wakes the throttled job
    qmp.execute('block-job-set-speed', device='stream0', speed=0)
    rec.wait_status('null')
    seq = golden.sequence(rec.events)
    assert golden.canonical(seq)[-5:] == [
        'JOB_STATUS_CHANGE:waiting', 'JOB_STATUS_CHANGE:pending',
        'BLOCK_JOB_COMPLETED', 'JOB_STATUS_CHANGE:concluded',
        'JOB_STATUS_CHANGE:null']
    qmp.execute('blockdev-del', node_name='top')
    assert chain.chain() == ['top.qcow2']
    chain.check()


@pytest.mark.timeout(120)
def test_stream_verbs_refused_while_running(daemon, chain):
    qmp = daemon.qmp
    chain.add_top(qmp)
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'speed': 64 * 1024})
    for cmd, args, verb in [
            ('block-job-complete', {'device': 'stream0'}, 'complete'),
            ('job-complete', {'id': 'stream0'}, 'complete'),
            ('block-job-finalize', {'id': 'stream0'}, 'finalize'),
            ('job-finalize', {'id': 'stream0'}, 'finalize'),
            ('job-dismiss', {'id': 'stream0'}, 'dismiss'),
            ('block-job-dismiss', {'id': 'stream0'}, 'dismiss')]:
        with pytest.raises(QMPError) as e:
            qmp.execute(cmd, args)
        assert e.value.desc == ("Job 'stream0' in state 'running' cannot "
                                "accept command verb '%s'" % verb), cmd
    with pytest.raises(QMPError) as e:
        qmp.execute('block-job-set-speed', device='stream0', speed=-1)
    assert e.value.desc == "Parameter 'speed' expects a non-negative value"
    for cmd, args in [('block-job-pause', {'device': 'nope'}),
                      ('block-job-set-speed', {'device': 'nope', 'speed': 1}),
                      ('block-job-finalize', {'id': 'nope'})]:
        with pytest.raises(QMPError) as e:
            qmp.execute(cmd, args)
        assert (e.value.cls, e.value.desc) == ('DeviceNotActive',
                                               "Block job 'nope' not found")
    for cmd in ('job-pause', 'job-resume', 'job-cancel', 'job-dismiss'):
        with pytest.raises(QMPError) as e:
            qmp.execute(cmd, id='nope')
        assert (e.value.cls, e.value.desc) == ('GenericError',
                                               'Job not found')
    qmp.execute('job-cancel', id='stream0')
    qmp.wait_event('JOB_STATUS_CHANGE', match={'data': {'status': 'null'}})


@pytest.mark.timeout(120)
@pytest.mark.parametrize('state', ['running', 'paused', 'pending',
                                   'concluded'])
def test_stream_cancel_in_state(daemon, chain, state):
    qmp = daemon.qmp
    chain.add_top(qmp)
    rec = golden.Recorder(qmp, 'stream0')
    args = {'job-id': 'stream0', 'device': 'top'}
    if state in ('running', 'paused'):
        args['speed'] = 64 * 1024
    else:
        args.update({'auto-finalize': False, 'auto-dismiss': False})
    qmp.execute('block-stream', args)
    if state == 'paused':
        qmp.execute('job-pause', id='stream0')
        rec.wait_status('paused')
    elif state == 'pending':
        rec.wait('BLOCK_JOB_PENDING')
    elif state == 'concluded':
        rec.wait('BLOCK_JOB_PENDING')
        qmp.execute('job-finalize', id='stream0')
        rec.wait_status('concluded')
        with pytest.raises(QMPError) as e:
            qmp.execute('block-job-cancel', device='stream0', force=True)
        assert e.value.desc == ("Job 'stream0' in state 'concluded' cannot "
                                "accept command verb 'cancel'")
        qmp.execute('job-dismiss', id='stream0')
        rec.wait_status('null')
        qmp.execute('blockdev-del', node_name='top')
        assert chain.chain() == ['top.qcow2']
        chain.check()
        return
    qmp.execute('job-cancel', id='stream0')
    if state == 'pending':
        rec.wait_status('concluded')
        qmp.execute('job-dismiss', id='stream0')
    rec.wait_status('null')
    seq = golden.canonical(golden.sequence(rec.events))
    tail = ['JOB_STATUS_CHANGE:aborting', 'BLOCK_JOB_CANCELLED',
            'JOB_STATUS_CHANGE:concluded', 'JOB_STATUS_CHANGE:null']
    assert seq[-4:] == tail, seq
    cancelled = [e for e in rec.events
                 if e['event'] == 'BLOCK_JOB_CANCELLED'][0]['data']
    assert cancelled['type'] == 'stream' and cancelled['device'] == 'stream0'
    qmp.execute('blockdev-del', node_name='top')
    # cancelled: the chain is unchanged, the bytes too
    assert chain.chain() == ['top.qcow2', 'mid.qcow2', 'base.qcow2']
    assert chain.backing_string() == 'mid.qcow2'
    chain.check()


# ---- graph protection ----

@pytest.mark.timeout(120)
def test_stream_busy_nodes(daemon, chain):
    qmp = daemon.qmp
    chain.add_top(qmp)
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'speed': 64 * 1024})
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-del', node_name='top')
    assert e.value.desc == ("Node 'top' is busy: block device is in use by "
                            "block job: stream")
    with pytest.raises(QMPError) as e:
        qmp.execute('block-stream', {'job-id': 'stream1', 'device': 'top'})
    assert e.value.desc == ("Node 'top' is busy: block device is in use by "
                            "block job: stream")
    with pytest.raises(QMPError) as e:
        qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top'})
    qmp.execute('job-cancel', id='stream0')
    qmp.wait_event('JOB_STATUS_CHANGE', match={'data': {'status': 'null'}})
    qmp.execute('blockdev-del', node_name='top')


@pytest.mark.timeout(60)
def test_stream_argument_errors(daemon, chain):
    qmp = daemon.qmp
    chain.add_top(qmp)
    cases = [
        ({}, "Parameter 'device' is missing"),
        ({'device': 'nope'}, "Cannot find device='nope' nor node-name='nope'"),
        ({'device': 'top'}, "Invalid job ID ''"),
        ({'device': 'top', 'job-id': '1a'}, "Invalid job ID '1a'"),
        ({'device': 'top', 'job-id': 'j', 'base': 'x', 'base-node': 'y'},
         "'base' and 'base-node' cannot be specified at the same time"),
        ({'device': 'top', 'job-id': 'j', 'base': 'x', 'bottom': 'y'},
         "'base' and 'bottom' cannot be specified at the same time"),
        ({'device': 'top', 'job-id': 'j', 'bottom': 'x', 'base-node': 'y'},
         "'bottom' and 'base-node' cannot be specified at the same time"),
        ({'device': 'top', 'job-id': 'j', 'base-node': 'nope'},
         "Cannot find device='' nor node-name='nope'"),
        ({'device': 'top', 'job-id': 'j', 'base-node': 'top'},
         "Node 'top' is not a backing image of 'top'"),
        ({'device': 'top', 'job-id': 'j', 'backing-file': 'x'},
         'backing file specified, but streaming the entire chain'),
        ({'device': 'top', 'job-id': 'j', 'base': 'nothere'},
         "Can't find 'nothere' in the backing chain"),
        ({'device': 'top', 'job-id': 'j', 'speed': -1},
         "Parameter 'speed' expects a non-negative value"),
    ]
    for args, desc in cases:
        with pytest.raises(QMPError) as e:
            qmp.execute('block-stream', args)
        assert e.value.desc == desc, args
    assert qmp.execute('query-jobs') == []


# ---- shutdown ----

@pytest.mark.timeout(120)
@pytest.mark.parametrize('how', ['quit', 'sigterm'])
def test_stream_quit_while_running(daemon, chain, how):
    qmp = daemon.qmp
    chain.add_top(qmp)
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'speed': 256 * 1024})
    wait_until(lambda: query_block_job(qmp, 'stream0')['offset'] > 0,
               timeout=60, what='some progress')
    if how == 'quit':
        qmp.execute('quit')
    else:
        daemon.send_signal()
    ev = qmp.wait_event('BLOCK_JOB_CANCELLED', timeout=60)
    assert ev['data']['device'] == 'stream0'
    assert ev['data']['offset'] < ev['data']['len']
    assert daemon.wait() == 0
    daemon.check()
    assert chain.chain() == ['top.qcow2', 'mid.qcow2', 'base.qcow2']
    chain.check()


# ---- speed ----

@pytest.mark.timeout(120)
def test_stream_speed_holds_from_the_first_chunk(daemon, workdir):
    if is_qsd():
        pytest.skip('qemu-storage-daemon lets the first chunk through at '
                    'once; blockjobd does not')
    d = str(workdir)
    base = os.path.join(d, 'b.qcow2')
    top = os.path.join(d, 't.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, 32 * MiB)
    qemu_io('-c', 'write -P 7 0 32M', base)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2',
             top)
    qmp = daemon.qmp
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                 'file': {'driver': 'file',
                                          'filename': top}})
    speed = 2 * MiB
    t0 = time.monotonic()
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'speed': speed})
    samples = []
    while time.monotonic() - t0 < 2.5:
        off = query_block_job(qmp, 'stream0')['offset']
        samples.append((time.monotonic() - t0, off))
        time.sleep(0.1)
    # Bytes done by time t never exceed speed * t (plus one chunk of a
    # tenth of a second), from the start on; the elapsed time measured
    # here can only be longer than the job's, so this bound is safe.
    for t, off in samples:
        assert off <= speed * t + speed // 10 + 64 * 1024, (t, off)
    assert samples[-1][1] > 0
    qmp.execute('job-cancel', id='stream0')
    qmp.wait_event('BLOCK_JOB_CANCELLED')


# ---- base named by file name ----

@pytest.mark.timeout(120)
@pytest.mark.parametrize('name', ['base.qcow2', 'absolute', 'mid.qcow2'])
def test_stream_base_by_file_name(daemon, chain, name):
    """'base' matches the header's backing string or the absolute file
    name; the new backing string is the base's absolute file name."""
    qmp = daemon.qmp
    chain.add_top(qmp)
    base = chain.base if name == 'absolute' else name
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'base': base})
    qmp.wait_event('BLOCK_JOB_COMPLETED')
    qmp.wait_event('JOB_STATUS_CHANGE', match={'data': {'status': 'null'}})
    qmp.execute('blockdev-del', node_name='top')
    if name == 'mid.qcow2':
        assert chain.chain() == ['top.qcow2', 'mid.qcow2', 'base.qcow2']
        assert chain.backing_string() == chain.mid
    else:
        assert chain.chain() == ['top.qcow2', 'base.qcow2']
        assert chain.backing_string() == chain.base
    chain.check()
