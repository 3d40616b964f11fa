"""Intermediate block-commit with read errors injected by blkdebug under the
committed layer, for each on-error policy.  Commit retries a failed chunk
under stop (after resume) and ignore, so with a one-shot error the result
is complete and correct.

Chain: base <- mid (qcow2 on blkdebug on the file) <- top, all added by
blockdev-add; the injected error hits reads at one host offset inside mid's
data clusters.
"""

import pytest

import golden
from bjtest import qemu_img
from chain import Chain

MiB = 1 << 20


def make(workdir, qmp, once):
    chain = Chain(workdir, size=16 * MiB, base=['write -P 1 0 8M'],
                  mid=['write -P 2 4M 8M'], top=['write -P 3 0 1M'])
    chain.add_all_failing_mid_reads(qmp, 4 * MiB, once)
    return chain.top, chain.ref


def finish(qmp, top, ref, committed):
    Chain.del_all(qmp)
    qemu_img('check', '-q', top)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', ref, top)
    info = qemu_img('info', '-U', top).stdout
    assert ('mid.qcow2' not in info) == committed, info


def start(qmp, policy):
    rec = golden.Recorder(qmp, 'commit0')
    qmp.execute('block-commit', {'job-id': 'commit0', 'device': 'top',
                                 'top-node': 'mid', 'base-node': 'base',
                                 'on-error': policy})
    return rec


@pytest.mark.timeout(120)
def test_commit_error_report(daemon, workdir):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=False)
    rec = start(qmp, 'report')
    rec.wait_status('null')
    seq = golden.canonical(golden.sequence(rec.events))
    assert seq == ['JOB_STATUS_CHANGE:created', 'JOB_STATUS_CHANGE:running',
                   'BLOCK_JOB_ERROR:read:report', 'JOB_STATUS_CHANGE:aborting',
                   'BLOCK_JOB_COMPLETED:error', 'JOB_STATUS_CHANGE:concluded',
                   'JOB_STATUS_CHANGE:null'], seq
    done = [e for e in rec.events if e['event'] == 'BLOCK_JOB_COMPLETED'][0]
    assert done['data']['error'] == 'Input/output error'
    finish(qmp, top, ref, committed=False)


@pytest.mark.timeout(120)
def test_commit_error_stop_then_resume(daemon, workdir):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=True)
    rec = start(qmp, 'stop')
    rec.wait_status('paused')
    j = qmp.execute('query-block-jobs')[0]
    assert (j['status'], j['paused'], j['io-status']) == ('paused', True,
                                                          'failed')
    qmp.execute('block-job-resume', device='commit0')
    rec.wait_status('null')
    seq = golden.canonical(golden.sequence(rec.events))
    assert seq == ['JOB_STATUS_CHANGE:created', 'JOB_STATUS_CHANGE:running',
                   'BLOCK_JOB_ERROR:read:stop', 'JOB_STATUS_CHANGE:paused',
                   'JOB_STATUS_CHANGE:running', 'JOB_STATUS_CHANGE:waiting',
                   'JOB_STATUS_CHANGE:pending', 'BLOCK_JOB_COMPLETED',
                   'JOB_STATUS_CHANGE:concluded',
                   'JOB_STATUS_CHANGE:null'], seq
    finish(qmp, top, ref, committed=True)


@pytest.mark.timeout(120)
def test_commit_error_ignore_retries(daemon, workdir):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=True)
    rec = start(qmp, 'ignore')
    rec.wait_status('null')
    seq = golden.canonical(golden.sequence(rec.events))
    assert seq == ['JOB_STATUS_CHANGE:created', 'JOB_STATUS_CHANGE:running',
                   'BLOCK_JOB_ERROR:read:ignore', 'JOB_STATUS_CHANGE:waiting',
                   'JOB_STATUS_CHANGE:pending', 'BLOCK_JOB_COMPLETED',
                   'JOB_STATUS_CHANGE:concluded',
                   'JOB_STATUS_CHANGE:null'], seq
    done = [e for e in rec.events if e['event'] == 'BLOCK_JOB_COMPLETED'][0]
    assert 'error' not in done['data']
    assert done['data']['offset'] == done['data']['len']
    finish(qmp, top, ref, committed=True)
