"""block-stream with read errors injected by blkdebug under an intermediate
layer, for each on-error policy: report, stop (then resume), ignore, and
enospc (which reports an EIO).

Chain: base <- mid (qcow2 on blkdebug on the file) <- top, all added by
blockdev-add.  Reads of mid's data at one host offset fail (once, or
always).
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
    return failing_chain(workdir, qmp, once, top_writes=[])


def finish(qmp, top, ref, streamed):
    info = check_top(qmp, top, ref)
    assert ('backing file:' in info) != streamed, info


def start(qmp, policy):
    rec = golden.Recorder(qmp, 'stream0')
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'on-error': policy})
    return rec


@pytest.mark.timeout(120)
@pytest.mark.parametrize('policy', ['report', 'enospc'])
def test_stream_error_report(daemon, workdir, policy):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=False)
    rec = start(qmp, policy)
    rec.wait_status('null')
    seq = sequence(rec)
    assert seq == failed_after_error('report'), seq
    done = completed_event(rec)
    assert done['data']['error'] == 'Input/output error'
    assert done['data']['offset'] < done['data']['len']
    finish(qmp, top, ref, streamed=False)


@pytest.mark.timeout(120)
def test_stream_error_stop_then_resume(daemon, workdir):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=True)
    rec = start(qmp, 'stop')
    resume_after_stop(qmp, rec, 'stream0')
    seq = sequence(rec)
    assert seq == STOPPED_THEN_COMPLETED, seq
    finish(qmp, top, ref, streamed=True)


@pytest.mark.timeout(120)
def test_stream_error_ignore(daemon, workdir):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=True)
    rec = start(qmp, 'ignore')
    rec.wait_status('null')
    seq = sequence(rec)
    # the chunk is skipped, the job goes on and fails at the end
    assert seq == failed_after_error('ignore'), seq
    done = completed_event(rec)
    assert done['data']['offset'] == done['data']['len']
    finish(qmp, top, ref, streamed=False)
