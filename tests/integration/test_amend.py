"""x-blockdev-amend: the "amend" job, as qemu-storage-daemon 7.2 runs it.

qemu 7.2's qcow2 branch of BlockdevAmendOptions has only "encrypt" (LUKS
keyslots); on an unencrypted image an amend with it fails in the job
("image is not encrypted, can't amend"), one without it concludes having
changed nothing.  Other drivers are refused at the command.  Recorded
with qsd 7.2; the file runs unchanged against it
(BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)).
"""

import os

import pytest

import golden
from bjtest import QMPError, qemu_img, qemu_io

MiB = 1 << 20


@pytest.fixture
def nodes(daemon, workdir):
    q = daemon.qmp
    qc = os.path.join(str(workdir), 'a.qcow2')
    raw = os.path.join(str(workdir), 'r.raw')
    qemu_img('create', '-q', '-f', 'qcow2', qc, '1M')
    qemu_io('-f', 'qcow2', '-c', 'write -P 0x5a 0 64k', qc)
    qemu_img('create', '-q', '-f', 'raw', raw, '1M')
    q.execute('blockdev-add', driver='file', filename=qc,
              **{'node-name': 'fq'})
    q.execute('blockdev-add', driver='qcow2', file='fq',
              **{'node-name': 'q'})
    q.execute('blockdev-add', driver='file', filename=raw,
              **{'node-name': 'fr'})
    q.execute('blockdev-add', driver='raw', file='fr', **{'node-name': 'r'})
    with open(qc, 'rb') as f:
        before = f.read()
    return {'qcow2': qc, 'bytes': before}


def run_amend(q, job_id, label=None, **args):
    """Runs the job to its end and dismisses it; with label, its events
    are held to qsd's recording (tests/golden/qsd-7.2/LABEL.json, made by
    scripts/record-golden.py)."""
    rec = golden.Recorder(q, job_id)
    q.execute('x-blockdev-amend', **{'job-id': job_id}, **args)
    rec.wait_status('concluded')
    info = [j for j in q.execute('query-jobs') if j['id'] == job_id]
    assert len(info) == 1
    q.execute('job-dismiss', id=job_id)
    rec.wait_status('null')
    if label:
        golden.assert_matches(label, rec.events)
    statuses = [e['data']['status'] for e in rec.events
                if e['event'] == 'JOB_STATUS_CHANGE']
    assert statuses[-1] == 'null'
    return info[0], statuses[:-1]


def test_amend_without_changes_concludes(daemon, nodes):
    q = daemon.qmp
    for job_id, extra in (('a1', {}), ('a2', {'force': True})):
        info, statuses = run_amend(q, job_id, 'amend-ok',
                                   **{'node-name': 'q'},
                                   options={'driver': 'qcow2'}, **extra)
        assert info == {'id': job_id, 'type': 'amend',
                        'status': 'concluded', 'current-progress': 1,
                        'total-progress': 1}
        assert statuses == ['created', 'running', 'waiting', 'pending',
                            'concluded']
    assert not [e for e in q.get_events()
                if e['event'].startswith('BLOCK_JOB_')]
    daemon.qmp.execute('quit')
    daemon.wait(timeout=30)
    with open(nodes['qcow2'], 'rb') as f:
        assert f.read() == nodes['bytes']


def test_amend_encrypt_fails_in_the_job(daemon, nodes):
    q = daemon.qmp
    for job_id, enc in (('e1', {'format': 'luks', 'state': 'active',
                                'new-secret': 's'}),
                        ('e2', {'format': 'qcow'})):
        info, statuses = run_amend(q, job_id, 'amend-error',
                                   **{'node-name': 'q'},
                                   options={'driver': 'qcow2',
                                            'encrypt': enc})
        assert info == {'id': job_id, 'type': 'amend',
                        'status': 'concluded', 'current-progress': 1,
                        'total-progress': 1,
                        'error': "image is not encrypted, can't amend"}
        assert statuses == ['created', 'running', 'aborting', 'concluded']
    daemon.qmp.execute('quit')
    daemon.wait(timeout=30)
    with open(nodes['qcow2'], 'rb') as f:
        assert f.read() == nodes['bytes']


def test_amend_refusals(daemon, nodes):
    q = daemon.qmp

    def refused(args, desc):
        with pytest.raises(QMPError) as e:
            q.execute('x-blockdev-amend', args)
        assert e.value.desc == desc

    refused({'job-id': 'x', 'node-name': 'r', 'options': {'driver': 'raw'}},
            'Driver does not support x-blockdev-amend')
    refused({'job-id': 'x', 'node-name': 'fr',
             'options': {'driver': 'file'}},
            'Driver does not support x-blockdev-amend')
    refused({'job-id': 'x', 'node-name': 'r',
             'options': {'driver': 'qcow2'}},
            "x-blockdev-amend doesn't support changing the block driver")
    refused({'job-id': 'x', 'node-name': 'nope',
             'options': {'driver': 'qcow2'}},
            "Cannot find device='' nor node-name='nope'")
    refused({'job-id': 'x', 'node-name': 'q',
             'options': {'driver': 'qcow2', 'x': 1}},
            "Parameter 'options.x' is unexpected")
    refused({'job-id': 'x', 'node-name': 'q',
             'options': {'driver': 'raw', 'x': 1}},
            "Parameter 'options.x' is unexpected")
    refused({'job-id': 'x', 'node-name': 'q', 'options': {}},
            "Parameter 'options.driver' is missing")
    refused({'job-id': 'x', 'node-name': 'q',
             'options': {'driver': 'qcow2', 'encrypt': {'format': 'luks'}}},
            "Parameter 'options.encrypt.state' is missing")
    refused({'job-id': 'x', 'node-name': 'q'},
            "Parameter 'options' is missing")
    refused({'node-name': 'q', 'options': {'driver': 'qcow2'}},
            "Parameter 'job-id' is missing")
    q.execute('x-blockdev-amend', **{'job-id': 'j', 'node-name': 'q'},
              options={'driver': 'qcow2'})
    refused({'job-id': 'j', 'node-name': 'q',
             'options': {'driver': 'qcow2'}},
            "Job ID 'j' already in use")
    q.wait_event('JOB_STATUS_CHANGE',
                 match={'data': {'id': 'j', 'status': 'concluded'}})
    # nothing was started by the refused ones
    assert [j['id'] for j in q.execute('query-jobs')] == ['j']
    q.execute('job-dismiss', id='j')


def test_amend_in_an_iothread(daemon_factory, workdir):
    """The job runs in the node's context, an iothread's too."""
    d = daemon_factory('--object', 'iothread,id=io0')
    q = d.qmp
    qc = os.path.join(str(workdir), 'i.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', qc, '1M')
    q.execute('blockdev-add', driver='file', filename=qc,
              **{'node-name': 'fi'})
    q.execute('blockdev-add', driver='qcow2', file='fi',
              **{'node-name': 'i'})
    q.execute('x-blockdev-set-iothread', **{'node-name': 'i'},
              iothread='io0')
    info, statuses = run_amend(q, 'a', **{'node-name': 'i'},
                               options={'driver': 'qcow2'})
    assert info['status'] == 'concluded' and 'error' not in info
    assert statuses == ['created', 'running', 'waiting', 'pending',
                        'concluded']
    info, statuses = run_amend(q, 'b', **{'node-name': 'i'},
                               options={'driver': 'qcow2',
                                        'encrypt': {'format': 'qcow'}})
    assert info['error'] == "image is not encrypted, can't amend"
    assert statuses == ['created', 'running', 'aborting', 'concluded']
