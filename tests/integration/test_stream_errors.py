"""block-stream with read errors injected by blkdebug under an intermediate
layer, for each on-error policy: report, stop (then resume), ignore, and
enospc (which reports an EIO).

Chain: base <- mid (qcow2 on blkdebug on the file) <- top, all added by
blockdev-add.  Reads of mid's data at one host offset fail (once, or
always).
"""

import pytest

import golden
from bjtest import qemu_img
from chain import Chain

MiB = 1 << 20


def make(workdir, qmp, once):
    chain = Chain(workdir, size=16 * MiB, base=['write -P 1 0 8M'],
                  mid=['write -P 2 4M 8M'], top=[])
    chain.add_all_failing_mid_reads(qmp, 4 * MiB, once)
    return chain.top, chain.ref


def finish(qmp, top, ref, streamed):
    Chain.del_all(qmp)
    qemu_img('check', '-q', top)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', ref, top)
    info = qemu_img('info', '-U', top).stdout
    assert ('backing file:' in info) != streamed, info


@pytest.mark.timeout(120)
@pytest.mark.parametrize('policy', ['report', 'enospc'])
def test_stream_error_report(daemon, workdir, policy):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=False)
    rec = golden.Recorder(qmp, 'stream0')
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'on-error': policy})
    rec.wait_status('null')
    seq = golden.canonical(golden.sequence(rec.events))
    assert seq == ['JOB_STATUS_CHANGE:created', 'JOB_STATUS_CHANGE:running',
                   'BLOCK_JOB_ERROR:read:report', 'JOB_STATUS_CHANGE:aborting',
                   'BLOCK_JOB_COMPLETED:error', 'JOB_STATUS_CHANGE:concluded',
                   'JOB_STATUS_CHANGE:null'], seq
    done = [e for e in rec.events if e['event'] == 'BLOCK_JOB_COMPLETED'][0]
    assert done['data']['error'] == 'Input/output error'
    assert done['data']['offset'] < done['data']['len']
    finish(qmp, top, ref, streamed=False)


@pytest.mark.timeout(120)
def test_stream_error_stop_then_resume(daemon, workdir):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=True)
    rec = golden.Recorder(qmp, 'stream0')
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'on-error': 'stop'})
    rec.wait_status('paused')
    j = qmp.execute('query-block-jobs')[0]
    assert (j['status'], j['paused'], j['io-status']) == ('paused', True,
                                                          'failed')
    qmp.execute('block-job-resume', device='stream0')
    rec.wait_status('null')
    seq = golden.canonical(golden.sequence(rec.events))
    assert seq == ['JOB_STATUS_CHANGE:created', 'JOB_STATUS_CHANGE:running',
                   'BLOCK_JOB_ERROR:read:stop', 'JOB_STATUS_CHANGE:paused',
                   'JOB_STATUS_CHANGE:running', 'JOB_STATUS_CHANGE:waiting',
                   'JOB_STATUS_CHANGE:pending', 'BLOCK_JOB_COMPLETED',
                   'JOB_STATUS_CHANGE:concluded',
                   'JOB_STATUS_CHANGE:null'], seq
    finish(qmp, top, ref, streamed=True)


@pytest.mark.timeout(120)
def test_stream_error_ignore(daemon, workdir):
    qmp = daemon.qmp
    top, ref = make(workdir, qmp, once=True)
    rec = golden.Recorder(qmp, 'stream0')
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'on-error': 'ignore'})
    rec.wait_status('null')
    seq = golden.canonical(golden.sequence(rec.events))
    # the chunk is skipped, the job goes on and fails at the end
    assert seq == ['JOB_STATUS_CHANGE:created', 'JOB_STATUS_CHANGE:running',
                   'BLOCK_JOB_ERROR:read:ignore', 'JOB_STATUS_CHANGE:aborting',
                   'BLOCK_JOB_COMPLETED:error', 'JOB_STATUS_CHANGE:concluded',
                   'JOB_STATUS_CHANGE:null'], seq
    done = [e for e in rec.events if e['event'] == 'BLOCK_JOB_COMPLETED'][0]
    assert done['data']['offset'] == done['data']['len']
    finish(qmp, top, ref, streamed=False)
