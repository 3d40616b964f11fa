"""filter-node-name of block-stream and block-commit: a name no node could
take (empty, not an identifier, too long, already a node's) is refused with
the reference's message, and no job is left behind.

blockjobd does not insert a filter node for stream or intermediate commit
yet, but it refuses the same names as qemu-storage-daemon 7.2, where the
name is given to the filter it inserts.  Chain: base <- mid <- top (qcow2).
"""

import pytest

from bjtest import QMPError, qemu_img

LONG = 'a' * 40

BAD = [
    ('', "Invalid node-name: ''"),
    ('1abc', "Invalid node-name: '1abc'"),
    ('a b', "Invalid node-name: 'a b'"),
    (LONG, 'Node name too long'),
    ('mid', "Duplicate nodes with node-name='mid'"),
]


@pytest.fixture
def chain(daemon, workdir):
    for name, backing in (('base', None), ('mid', 'base'), ('top', 'mid')):
        args = ['create', '-q', '-f', 'qcow2']
        if backing:
            args += ['-b', '%s.qcow2' % backing, '-F', 'qcow2']
        qemu_img(*args, str(workdir / ('%s.qcow2' % name)), '1M')
    daemon.qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'top',
        'file': {'driver': 'file', 'filename': str(workdir / 'top.qcow2')},
        'backing': {
            'driver': 'qcow2', 'node-name': 'mid',
            'file': {'driver': 'file',
                     'filename': str(workdir / 'mid.qcow2')}}})
    return daemon.qmp


def statuses(qmp):
    return [e['data']['status'] for e in qmp.get_events('JOB_STATUS_CHANGE')]


def refused(qmp, command, args, desc):
    with pytest.raises(QMPError) as e:
        qmp.execute(command, args)
    assert e.value.cls == 'GenericError'
    assert e.value.desc == desc
    assert qmp.execute('query-block-jobs') == []


@pytest.mark.parametrize('name,desc', BAD)
def test_stream_filter_node_name(chain, name, desc):
    refused(chain, 'block-stream',
            {'job-id': 'j', 'device': 'top', 'filter-node-name': name},
            'Could not create node: ' + desc)
    # Checked before the job exists: no job events at all.
    assert statuses(chain) == []


@pytest.mark.parametrize('name,desc', BAD)
def test_commit_filter_node_name(chain, name, desc):
    refused(chain, 'block-commit',
            {'job-id': 'j', 'device': 'top', 'top-node': 'mid',
             'filter-node-name': name}, desc)
    # Checked after the job exists (the reference's order).
    assert statuses(chain) == ['created', 'null']


@pytest.mark.parametrize('name,desc', BAD)
def test_active_commit_filter_node_name(chain, name, desc):
    refused(chain, 'block-commit',
            {'job-id': 'j', 'device': 'top', 'filter-node-name': name}, desc)
    assert statuses(chain) == []


def test_good_filter_node_name_runs(chain):
    chain.execute('block-stream', {'job-id': 'j', 'device': 'top',
                                   'filter-node-name': 'cor0'})
    chain.wait_event('BLOCK_JOB_COMPLETED', match={'data': {'device': 'j'}})
