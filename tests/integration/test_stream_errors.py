"""block-stream with read errors injected by blkdebug under an intermediate
layer, for each on-error policy: report, stop (then resume), ignore, and
enospc (which reports an EIO).

Chain: base <- mid (qcow2 on blkdebug on the file) <- top, all added by
blockdev-add.  Reads of mid's data at one host offset fail (once, or
always).
"""

import os

import pytest

import golden
from bjtest import QMPError, qemu_img, qemu_io

MiB = 1 << 20


def make(workdir, qmp, once):
    d = str(workdir)
    base, mid, top = (os.path.join(d, n) for n in
                      ('base.qcow2', 'mid.qcow2', 'top.qcow2'))
    ref = os.path.join(d, 'ref.raw')
    qemu_img('create', '-q', '-f', 'qcow2', base, 16 * MiB)
    qemu_io('-c', 'write -P 1 0 8M', base)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2',
             mid)
    qemu_io('-c', 'write -P 2 4M 8M', mid)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2',
             top)
    qemu_img('convert', '-O', 'raw', top, ref)
    try:
        qmp.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'base',
            'file': {'driver': 'file', 'filename': base}})
        qmp.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'mid', 'backing': 'base',
            'file': {'driver': 'blkdebug',
                     # a host offset inside mid's data clusters (they
                     # follow the metadata), so opening the image, which
                     # reads only metadata, does not trip it
                     'inject-error': [{'event': 'read_aio', 'errno': 5,
                                       'sector': 4 * MiB // 512,
                                       'once': once}],
                     'image': {'driver': 'file', 'filename': mid}}})
    except QMPError as e:
        if 'blkdebug' in e.desc:
            pytest.skip('blkdebug driver not available: %s' % e.desc)
        raise
    qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'top', 'backing': 'mid',
        'file': {'driver': 'file', 'filename': top}})
    return top, ref


def finish(qmp, top, ref, streamed):
    for n in ('top', 'mid', 'base'):
        qmp.execute('blockdev-del', node_name=n)
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
