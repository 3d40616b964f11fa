"""block-commit of an intermediate layer: bytes, chain, events (against the
golden recordings), cancel (chain unchanged), busy nodes, argument errors,
quit while running.

Chain (64 MiB), every node added by blockdev-add so that base is writable:
    base:  1 @ 0-24M, 4 @ 40-48M
    mid:   2 @ 8-32M, zeroes @ 44-46M       (committed into base)
    top:   3 @ 20-28M                       (the active layer)
"""

import pytest

import golden
from bjtest import QMPError, is_qsd, query_block_job, wait_until
from copyjob import finish, in_mode

MiB = 1 << 20

# Every test that uses `daemon` twice: nodes in the main loop, then in an
# iothread (conftest.py, node_ctx).
pytestmark = pytest.mark.ctx_variants


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_commit_intermediate(daemon, chain, mode):
    qmp = daemon.qmp
    chain.add_all(qmp)
    rec = golden.Recorder(qmp, 'commit0')
    qmp.execute('block-commit', in_mode(mode, {
        'job-id': 'commit0', 'device': 'top', 'top-node': 'mid',
        'base-node': 'base'}))
    finish(qmp, rec, mode, verbs='block-job')
    golden.assert_matches('commit-intermediate.%s' % mode, rec.events,
                          raw=True)
    # top now backs onto base; mid survives, detached
    top = [n for n in qmp.execute('query-named-block-nodes', flat=True)
           if n['node-name'] == 'top'][0]
    assert top['backing_file'].endswith('base.qcow2')
    chain.del_all(qmp)
    assert chain.chain() == ['top.qcow2', 'base.qcow2']
    chain.check()


@pytest.mark.timeout(120)
def test_commit_cancel_keeps_chain(daemon, chain):
    qmp = daemon.qmp
    chain.add_all(qmp)
    rec = golden.Recorder(qmp, 'commit0')
    qmp.execute('block-commit', {'job-id': 'commit0', 'device': 'top',
                                 'top-node': 'mid', 'base-node': 'base',
                                 'speed': 64 * 1024})
    # nodes the job reads/writes are "in use"; the overlay it re-points
    # carries the job's blocker
    for node, desc in [
            ('top', "Node 'top' is busy: block device is in use by block "
                    "job: commit"),
            ('mid', 'Node mid is in use'),
            ('base', 'Node base is in use')]:
        with pytest.raises(QMPError) as e:
            qmp.execute('blockdev-del', node_name=node)
        assert e.value.desc == desc
    with pytest.raises(QMPError) as e:
        qmp.execute('block-stream', {'job-id': 's', 'device': 'top'})
    assert e.value.desc == ("Node 'top' is busy: block device is in use by "
                            "block job: commit")
    with pytest.raises(QMPError) as e:
        qmp.execute('block-commit', {'job-id': 'c2', 'device': 'top',
                                     'top-node': 'mid'})
    assert e.value.desc == 'Need a root block node'
    with pytest.raises(QMPError) as e:
        qmp.execute('block-job-complete', device='commit0')
    assert e.value.desc == ("Job 'commit0' in state 'running' cannot accept "
                            "command verb 'complete'")
    qmp.execute('block-job-cancel', device='commit0')
    rec.wait_status('null')
    assert golden.canonical(golden.sequence(rec.events))[-4:] == [
        'JOB_STATUS_CHANGE:aborting', 'BLOCK_JOB_CANCELLED',
        'JOB_STATUS_CHANGE:concluded', 'JOB_STATUS_CHANGE:null']
    chain.del_all(qmp)
    assert chain.chain() == ['top.qcow2', 'mid.qcow2', 'base.qcow2']
    chain.check()


@pytest.mark.timeout(60)
def test_commit_argument_errors(daemon, chain):
    qmp = daemon.qmp
    chain.add_all(qmp)
    cases = [
        ({'device': 'nope', 'job-id': 'c'}, 'DeviceNotFound',
         "Device 'nope' not found"),
        ({'device': 'mid', 'job-id': 'c'}, 'GenericError',
         'Need a root block node'),
        ({'device': 'top', 'job-id': 'c', 'top-node': 'nope'},
         'GenericError', "Cannot find device='' nor node-name='nope'"),
        ({'device': 'top', 'job-id': 'c', 'top-node': 'mid', 'top': 'x'},
         'GenericError', "'top-node' and 'top' are mutually exclusive"),
        ({'device': 'top', 'job-id': 'c', 'top-node': 'mid',
          'base-node': 'base', 'base': 'x'},
         'GenericError', "'base-node' and 'base' are mutually exclusive"),
        ({'device': 'top', 'job-id': 'c', 'top-node': 'mid',
          'base-node': 'top'},
         'GenericError', "'top' is not in this backing file chain"),
        ({'device': 'top', 'job-id': 'c', 'top-node': 'mid',
          'base-node': 'mid'},
         'GenericError', 'cannot commit an image into itself'),
        ({'device': 'top', 'job-id': 'c', 'base': 'nothere'},
         'GenericError', "Can't find 'nothere' in the backing chain"),
        ({'device': 'top', 'top-node': 'mid'}, 'GenericError',
         "Invalid job ID ''"),
    ]
    for args, cls, desc in cases:
        with pytest.raises(QMPError) as e:
            qmp.execute('block-commit', args)
        assert (e.value.cls, e.value.desc) == (cls, desc), args
    assert qmp.execute('query-jobs') == []
    chain.del_all(qmp)


@pytest.mark.timeout(60)
def test_commit_active_layer_refused(daemon, chain):
    # Active commit itself runs as a mirror: test_commit_active.py.
    qmp = daemon.qmp
    chain.add_all(qmp)
    with pytest.raises(QMPError) as e:
        qmp.execute('block-commit', {'job-id': 'c', 'device': 'top',
                                     'backing-file': 'x'})
    assert e.value.desc == ("'backing-file' specified, but 'top' is the "
                            "active layer")
    chain.del_all(qmp)


@pytest.mark.timeout(120)
def test_commit_quit_while_running(daemon, chain):
    qmp = daemon.qmp
    chain.add_all(qmp)
    qmp.execute('block-commit', {'job-id': 'commit0', 'device': 'top',
                                 'top-node': 'mid', 'base-node': 'base',
                                 'speed': 256 * 1024})
    wait_until(lambda: query_block_job(qmp, 'commit0')['offset'] > 0,
               timeout=60, what='some progress')
    qmp.execute('quit')
    ev = qmp.wait_event('BLOCK_JOB_CANCELLED', timeout=60)
    assert ev['data']['device'] == 'commit0'
    assert daemon.wait() == 0
    daemon.check()
    assert chain.chain() == ['top.qcow2', 'mid.qcow2', 'base.qcow2']
    chain.check()
