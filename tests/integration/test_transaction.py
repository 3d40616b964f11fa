"""The transaction command: actions blockdev-backup, blockdev-snapshot and
abort; all prepare, then all commit or all abort (in reverse);
completion-mode grouped, where one failing backup cancels the others.
Words and event order as qemu-storage-daemon 7.2 (observed).
"""

import os

import pytest

import golden
from bjtest import QMPError, qemu_img, qemu_io

MiB = 1 << 20
SIZE = 64 * MiB


@pytest.fixture
def nodes(daemon, workdir):
    d = str(workdir)
    qmp = daemon.qmp
    paths = {}
    for name, fmt in (('src', 'raw'), ('t1', 'qcow2'), ('t2', 'qcow2'),
                      ('ov', 'qcow2')):
        p = os.path.join(d, name + '.' + fmt)
        qemu_img('create', '-q', '-f', fmt, p, SIZE)
        paths[name] = p
    qemu_io('-f', 'raw', '-c', 'write -P 1 0 8M', paths['src'])
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                                 'file': {'driver': 'file',
                                          'filename': paths['src']}})
    for t in ('t1', 't2'):
        qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': t,
                                     'file': {'driver': 'file',
                                              'filename': paths[t]}})
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'ov',
                                 'backing': None,
                                 'file': {'driver': 'file',
                                          'filename': paths['ov']}})
    return paths


def backup(jid, target, **extra):
    data = {'job-id': jid, 'device': 'src', 'target': target,
            'sync': 'full'}
    data.update(extra)
    return {'type': 'blockdev-backup', 'data': data}


def statuses(events, jid):
    return [e['data']['status'] for e in events
            if e['event'] == 'JOB_STATUS_CHANGE' and e['data']['id'] == jid]


@pytest.mark.timeout(60)
def test_transaction_argument_errors(daemon, nodes):
    qmp = daemon.qmp
    assert qmp.execute('transaction', actions=[]) == {}
    cases = [
        ([{'type': 'abort', 'data': {}}], None,
         'Transaction aborted using Abort action'),
        ([{'type': 'abort'}], None, "Parameter 'actions[0].data' is missing"),
        ([{'type': 'bogus', 'data': {}}], None,
         "Parameter 'type' does not accept value 'bogus'"),
        ([{'type': 'blockdev-snapshot',
           'data': {'node': 'src', 'overlay': 'ov'}}],
         {'completion-mode': 'grouped'},
         "Action 'blockdev-snapshot' does not support Transaction property "
         "completion-mode = grouped"),
        ([{'type': 'blockdev-backup',
           'data': {'device': 'src', 'target': 't1', 'sync': 'full'}}],
         None, "Invalid job ID ''"),
        ([backup('a', 't1', bogus=1)], None,
         "Parameter 'actions[0].data.bogus' is unexpected"),
        ([backup('a', 't1')], {'completion-mode': 'bogus'},
         "Parameter 'completion-mode' does not accept value 'bogus'"),
    ]
    for actions, props, msg in cases:
        args = {'actions': actions}
        if props:
            args['properties'] = props
        with pytest.raises(QMPError) as e:
            qmp.execute('transaction', args)
        assert e.value.desc == msg
    assert qmp.execute('query-block-jobs') == []
    # Nothing changed: the snapshot was not taken.
    names = [n['node-name'] for n in
             qmp.execute('query-named-block-nodes', flat=True)]
    assert 'src' in names


@pytest.mark.timeout(60)
def test_transaction_abort_cancels_prepared_backup(daemon, nodes):
    """A backup prepared before an abort action: created, then aborting,
    concluded, null (never started); the filter is gone again."""
    qmp = daemon.qmp
    rec = golden.Recorder(qmp, 'a')
    with pytest.raises(QMPError) as e:
        qmp.execute('transaction', actions=[backup('a', 't1', speed=1),
                                            {'type': 'abort', 'data': {}}])
    assert e.value.desc == 'Transaction aborted using Abort action'
    assert rec.statuses() == ['created', 'aborting', 'concluded', 'null']
    assert [e['event'] for e in rec.events
            if e['event'].startswith('BLOCK_JOB')] == []
    drvs = {n['drv'] for n in qmp.execute('query-named-block-nodes')}
    assert 'copy-before-write' not in drvs
    # Duplicate job IDs: the first member goes the same way.
    rec = golden.Recorder(qmp, 'b')
    with pytest.raises(QMPError) as e:
        qmp.execute('transaction', actions=[backup('b', 't1', speed=1),
                                            backup('b', 't2', speed=1)])
    assert e.value.desc == "Job ID 'b' already in use"
    assert rec.statuses() == ['created', 'aborting', 'concluded', 'null']


@pytest.mark.timeout(60)
def test_transaction_snapshot_aborted(daemon, nodes):
    qmp = daemon.qmp
    with pytest.raises(QMPError):
        qmp.execute('transaction', actions=[
            {'type': 'blockdev-snapshot',
             'data': {'node': 'src', 'overlay': 'ov'}},
            {'type': 'abort', 'data': {}}])
    info = {n['node-name']: n for n in
            qmp.execute('query-named-block-nodes', flat=True)}
    assert info['ov']['backing_file_depth'] == 0


@pytest.mark.timeout(120)
def test_transaction_backup_and_snapshot(daemon, nodes):
    """A backup of src and a snapshot of src in one transaction: the backup
    holds src as it was, the overlay takes the writes after."""
    qmp = daemon.qmp
    rec = golden.Recorder(qmp, 'a')
    qmp.execute('transaction', actions=[
        backup('a', 't1'),
        {'type': 'blockdev-snapshot',
         'data': {'node': 'src', 'overlay': 'ov'}}])
    rec.wait_status('null')
    golden.assert_matches('backup-full.auto', [
        dict(e, data=dict(e['data'], **({'device': 'backup0'}
                                        if 'device' in e['data'] else
                                        {'id': 'backup0'})))
        for e in rec.events])
    qmp.execute('blockdev-del', node_name='t1')
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', nodes['src'],
             nodes['t1'])


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['grouped', 'individual'])
def test_transaction_grouped_one_fails(daemon, workdir, nodes, mode):
    """j1 is slow, j2's target fails every write.  grouped: j2's failure
    cancels j1 (qemu's order: ERROR j2, aborting j2, aborting j1,
    COMPLETED j2 with the error, concluded/null j2, CANCELLED j1,
    concluded/null j1).  individual: j1 goes on alone."""
    qmp = daemon.qmp
    bad = os.path.join(str(workdir), 'bad.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', bad, SIZE)
    qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'bad',
        'file': {'driver': 'blkdebug',
                 'inject-error': [{'event': 'write_aio', 'errno': 5}],
                 'image': {'driver': 'file', 'filename': bad}}})
    qmp.get_events()
    qmp.execute('transaction',
                actions=[backup('j1', 't1', speed=1 * MiB),
                         backup('j2', 'bad')],
                properties={'completion-mode': mode})
    names = ('JOB_STATUS_CHANGE', 'BLOCK_JOB_ERROR', 'BLOCK_JOB_COMPLETED',
             'BLOCK_JOB_CANCELLED')
    events = []

    def until(pred):
        # Every job event, in arrival order (the command replies before).
        while True:
            events.extend(e for e in qmp.get_events()
                          if e.get('event') in names)
            if pred():
                return
            ev = qmp.wait_event('JOB_STATUS_CHANGE', timeout=60)
            qmp.events.append(ev)

    def job_null(jid):
        return lambda: any(e['event'] == 'JOB_STATUS_CHANGE' and
                           e['data'] == {'id': jid, 'status': 'null'}
                           for e in events)
    until(job_null('j2'))
    if mode == 'grouped':
        until(job_null('j1'))
    else:
        assert qmp.execute('query-block-jobs')[0]['device'] == 'j1'
        qmp.execute('block-job-set-speed', device='j1', speed=0)
        until(job_null('j1'))
    seq = []
    for e in events:
        jid = e['data'].get('id', e['data'].get('device'))
        if e['event'] == 'JOB_STATUS_CHANGE':
            seq.append('%s:%s' % (jid, e['data']['status']))
        else:
            seq.append('%s:%s' % (jid, e['event']))
    # Drop the drain pairs of the start (created running paused running).
    starts = [s for s in seq if s.split(':')[1] in ('created', 'running',
                                                     'paused')]
    assert starts[:2] == ['j1:created', 'j2:created']
    tail = [s for s in seq if s.split(':')[1] not in ('created', 'running',
                                                       'paused')]
    if mode == 'grouped':
        assert tail == ['j2:BLOCK_JOB_ERROR', 'j2:aborting', 'j1:aborting',
                        'j2:BLOCK_JOB_COMPLETED', 'j2:concluded', 'j2:null',
                        'j1:BLOCK_JOB_CANCELLED', 'j1:concluded', 'j1:null']
    else:
        assert tail == ['j2:BLOCK_JOB_ERROR', 'j2:aborting',
                        'j2:BLOCK_JOB_COMPLETED', 'j2:concluded', 'j2:null',
                        'j1:waiting', 'j1:pending', 'j1:BLOCK_JOB_COMPLETED',
                        'j1:concluded', 'j1:null']
    done = [e for e in events if e['event'] == 'BLOCK_JOB_COMPLETED' and
            e['data']['device'] == 'j2'][0]
    assert done['data']['error'] == 'Input/output error'
