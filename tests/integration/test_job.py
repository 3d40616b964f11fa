"""The generic job machinery through QMP: query-block-jobs / query-jobs
output, a failed job waiting for dismiss, and shutdown with jobs in
pending and concluded states.  Uses block-stream as the job.
"""

import os

import pytest

import golden
from bjtest import QMPError, qemu_img, qemu_io

MiB = 1 << 20


def add_overlay(daemon, workdir, node):
    """Adds node: a new image <node>.qcow2 over base.qcow2 (whose name it
    has in its header; the node itself has no backing child)."""
    t = os.path.join(str(workdir), node + '.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2',
             t)
    daemon.qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': node,
        'file': {'driver': 'file', 'filename': t}})
    return t


@pytest.fixture
def top(workdir, daemon):
    base = os.path.join(str(workdir), 'base.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, 16 * MiB)
    qemu_io('-c', 'write -P 1 0 16M', base)
    return add_overlay(daemon, workdir, 'top')


@pytest.mark.timeout(60)
def test_query_output(daemon, top):
    qmp = daemon.qmp
    assert qmp.execute('query-block-jobs') == []
    assert qmp.execute('query-jobs') == []
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'speed': 64 * 1024,
                                 'auto-dismiss': False})
    bj = qmp.execute('query-block-jobs')
    assert len(bj) == 1
    j = bj[0]
    # (blockjobd adds x- members of its own: the back-off's)
    assert {k for k in j if not k.startswith('x-')} == {
                      'type', 'device', 'len', 'offset', 'busy', 'paused',
                      'speed', 'io-status', 'ready', 'status',
                      'auto-finalize', 'auto-dismiss'}
    assert (j['type'], j['device'], j['speed'], j['io-status'], j['ready'],
            j['status'], j['auto-finalize'], j['auto-dismiss'],
            j['paused']) == ('stream', 'stream0', 64 * 1024, 'ok', False,
                             'running', True, False, False)
    assert j['len'] == 16 * MiB and j['offset'] <= j['len']
    jobs = qmp.execute('query-jobs')
    assert len(jobs) == 1
    assert {k for k in jobs[0] if not k.startswith('x-')} == {
        'id', 'type', 'status', 'current-progress', 'total-progress'}
    assert (jobs[0]['id'], jobs[0]['type'], jobs[0]['total-progress']) == \
        ('stream0', 'stream', 16 * MiB)
    qmp.execute('job-cancel', id='stream0')
    qmp.wait_event('JOB_STATUS_CHANGE',
                   match={'data': {'status': 'concluded'}})
    jobs = qmp.execute('query-jobs')
    assert jobs[0]['status'] == 'concluded'
    assert jobs[0]['error'] == 'Operation canceled'
    bj = qmp.execute('query-block-jobs')[0]
    assert bj['status'] == 'concluded'
    assert bj['error'] == 'Operation canceled'
    qmp.execute('job-dismiss', id='stream0')
    assert qmp.execute('query-jobs') == []


@pytest.mark.timeout(60)
def test_newest_first(daemon, top, workdir):
    qmp = daemon.qmp
    add_overlay(daemon, workdir, 'top2')
    for i, node in enumerate(('top', 'top2')):
        qmp.execute('block-stream', {'job-id': 'j%d' % i, 'device': node,
                                     'speed': 64 * 1024})
    assert [j['id'] for j in qmp.execute('query-jobs')] == ['j1', 'j0']
    assert [j['device'] for j in qmp.execute('query-block-jobs')] == \
        ['j1', 'j0']
    for i in range(2):
        qmp.execute('job-cancel', id='j%d' % i)
    for i in range(2):
        qmp.wait_event('BLOCK_JOB_CANCELLED')


@pytest.mark.timeout(60)
def test_quit_with_pending_and_concluded_jobs(daemon, top, workdir):
    qmp = daemon.qmp
    t2 = add_overlay(daemon, workdir, 'top2')
    manual = {'auto-finalize': False, 'auto-dismiss': False}
    rec0 = golden.Recorder(qmp, 'pending0')
    rec1 = golden.Recorder(qmp, 'done1')
    qmp.execute('block-stream', dict(manual, **{'job-id': 'pending0',
                                                'device': 'top'}))
    qmp.execute('block-stream', dict(manual, **{'job-id': 'done1',
                                                'device': 'top2'}))
    rec0.wait('BLOCK_JOB_PENDING')
    rec1.wait('BLOCK_JOB_PENDING')
    qmp.execute('job-finalize', id='done1')
    rec1.wait_status('concluded')
    with pytest.raises(QMPError):
        qmp.execute('job-finalize', id='done1')
    qmp.execute('quit')
    rec0.wait_status('null')
    rec1.wait_status('null')
    assert daemon.wait() == 0
    daemon.check()
    # the pending job was cancelled (chain kept), the finished one stays
    assert golden.sequence(rec0.events)[-4:] == [
        'JOB_STATUS_CHANGE:aborting', 'BLOCK_JOB_CANCELLED',
        'JOB_STATUS_CHANGE:concluded', 'JOB_STATUS_CHANGE:null']
    assert golden.sequence(rec1.events)[-1] == 'JOB_STATUS_CHANGE:null'
    assert 'backing file' in qemu_img('info', top).stdout
    assert 'backing file' not in qemu_img('info', t2).stdout
    qemu_img('check', '-q', top)
    qemu_img('check', '-q', t2)
