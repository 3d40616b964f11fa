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
from joberrors import (STOPPED_THEN_COMPLETED, check_top, completed_event,
                       failed_after_error, failing_chain, resume_after_stop,
                       sequence)


# Every test that uses `daemon` twice: nodes in the main loop, then in an
# iothread (conftest.py, node_ctx).
pytestmark = pytest.mark.ctx_variants


def make(workdir, qmp, once):
    return failing_chain(workdir, qmp, once, top_writes=['write -P 3 0 1M'])


def finish(qmp, top, ref, committed):
    info = check_top(qmp, top, ref)
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
    seq = sequence(rec)
    assert seq == failed_after_error('report'), seq
    assert completed_event(rec)['data']['error'] == 'Input/output error'
    finish(qmp, top, ref, committed=False)


@pytest.mark.timeout(120)
def test_commit_error_stop_then_resume(daemon, workdir):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=True)
    rec = start(qmp, 'stop')
    resume_after_stop(qmp, rec, 'commit0')
    seq = sequence(rec)
    assert seq == STOPPED_THEN_COMPLETED, seq
    finish(qmp, top, ref, committed=True)


@pytest.mark.timeout(120)
def test_commit_error_ignore_retries(daemon, workdir):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=True)
    rec = start(qmp, 'ignore')
    rec.wait_status('null')
    seq = sequence(rec)
    assert seq == ['JOB_STATUS_CHANGE:created', 'JOB_STATUS_CHANGE:running',
                   'BLOCK_JOB_ERROR:read:ignore', 'JOB_STATUS_CHANGE:waiting',
                   'JOB_STATUS_CHANGE:pending', 'BLOCK_JOB_COMPLETED',
                   'JOB_STATUS_CHANGE:concluded',
                   'JOB_STATUS_CHANGE:null'], seq
    done = completed_event(rec)
    assert 'error' not in done['data']
    assert done['data']['offset'] == done['data']['len']
    finish(qmp, top, ref, committed=True)
