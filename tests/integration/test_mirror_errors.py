"""blockdev-mirror with I/O errors injected by blkdebug: on the source
(read) with on-source-error report/stop/ignore against the golden
recordings in auto and manual modes, and on the target (write) with
on-target-error report/stop/enospc.  After stop+resume and ignore the
target is identical to the source.
"""

import pytest

import golden
from bjtest import QMPError, qemu_img, wait_until
from copyjob import Images, finish, in_mode

MiB = 1 << 20

# Every test that uses `daemon` twice: nodes in the main loop, then in an
# iothread (conftest.py, node_ctx).
pytestmark = pytest.mark.ctx_variants


def file_failing(path, rule):
    """The options of path's file node, under a blkdebug injecting rule
    when there is one."""
    opts = {'driver': 'file', 'filename': path}
    if rule:
        opts = {'driver': 'blkdebug', 'inject-error': [rule], 'image': opts}
    return opts


def make_images(qmp, d, src_rule=None, tgt_rule=None):
    imgs = Images(d, src_writes=('write -P 1 0 8M', 'write -P 2 32M 4M'))
    imgs.add(qmp, src_file=file_failing(imgs.src, src_rule),
             tgt_file=file_failing(imgs.tgt, tgt_rule))
    return imgs.src, imgs.tgt


def cleanup_compare(qmp, src, tgt, same=True):
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    qemu_img('check', '-q', tgt)
    r = qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', src, tgt,
                 check=False)
    assert (r.returncode == 0) == same


def mirror_args(jid, mode, **extra):
    args = in_mode(mode, {'job-id': jid, 'device': 'src', 'target': 'tgt',
                          'sync': 'full'})
    args.update(extra)
    return args


def start_mirror_over_errors(qmp, workdir, jid, mode, src_rule=None,
                             tgt_rule=None, **extra):
    """make_images with the error rules, then blockdev-mirror jid in mode
    (extra: more arguments); returns (src, tgt, the job's Recorder)."""
    src, tgt = make_images(qmp, workdir, src_rule, tgt_rule)
    rec = golden.Recorder(qmp, jid)
    qmp.execute('blockdev-mirror', mirror_args(jid, mode, **extra))
    return src, tgt, rec


def complete(qmp, rec, mode):
    rec.wait('BLOCK_JOB_READY')
    qmp.execute('block-job-complete', device=rec.job_id)
    finish(qmp, rec, mode)


READ_ERR = {'event': 'read_aio', 'errno': 5, 'sector': 2 * MiB // 512}


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_source_error_report(daemon, workdir, mode):
    qmp = daemon.qmp
    src, tgt, rec = start_mirror_over_errors(
        qmp, workdir, 'mirror-report', mode,
        src_rule=dict(READ_ERR, once=False))
    ev = rec.wait('BLOCK_JOB_COMPLETED')
    assert ev['data']['error'] == 'Input/output error'
    if mode == 'manual':
        rec.wait_status('concluded')
        j = qmp.execute('query-jobs')[0]
        assert j['error'] == 'Input/output error'
        qmp.execute('job-dismiss', id='mirror-report')
    rec.wait_status('null')
    golden.assert_matches('error-mirror-report.%s' % mode, rec.events)
    cleanup_compare(qmp, src, tgt, same=False)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_source_error_stop(daemon, workdir, mode):
    qmp = daemon.qmp
    src, tgt, rec = start_mirror_over_errors(
        qmp, workdir, 'mirror-stop', mode, src_rule=dict(READ_ERR, once=True),
        **{'on-source-error': 'stop'})
    rec.wait_status('paused')
    j = qmp.execute('query-block-jobs')[0]
    assert (j['status'], j['paused'], j['io-status']) == ('paused', True,
                                                          'failed')
    qmp.execute('block-job-resume', device='mirror-stop')
    complete(qmp, rec, mode)
    golden.assert_matches('error-mirror-stop.%s' % mode, rec.events)
    cleanup_compare(qmp, src, tgt)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_source_error_ignore(daemon, workdir, mode):
    qmp = daemon.qmp
    src, tgt, rec = start_mirror_over_errors(
        qmp, workdir, 'mirror-ignore', mode,
        src_rule=dict(READ_ERR, once=True), **{'on-source-error': 'ignore'})
    complete(qmp, rec, mode)
    golden.assert_matches('error-mirror-ignore.%s' % mode, rec.events)
    cleanup_compare(qmp, src, tgt)


WRITE_ERR = {'event': 'write_aio', 'errno': 28}


@pytest.mark.timeout(120)
def test_target_error_report(daemon, workdir):
    qmp = daemon.qmp
    src, tgt, rec = start_mirror_over_errors(
        qmp, workdir, 'mt', 'auto', tgt_rule=dict(WRITE_ERR, once=False))
    ev = rec.wait('BLOCK_JOB_COMPLETED')
    assert ev['data']['error'] == 'No space left on device'
    rec.wait_status('null')
    seq = golden.sequence(rec.events)
    assert seq[2] == 'BLOCK_JOB_ERROR:write:report'
    assert seq[-4:] == ['JOB_STATUS_CHANGE:aborting',
                        'BLOCK_JOB_COMPLETED:error',
                        'JOB_STATUS_CHANGE:concluded',
                        'JOB_STATUS_CHANGE:null']
    assert not any(n['drv'] == 'mirror_top' for n in
                   qmp.execute('query-named-block-nodes', flat=True))
    cleanup_compare(qmp, src, tgt, same=False)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('policy', ['stop', 'enospc'])
def test_target_error_stop(daemon, workdir, policy):
    qmp = daemon.qmp
    src, tgt, rec = start_mirror_over_errors(
        qmp, workdir, 'mt', 'auto', tgt_rule=dict(WRITE_ERR, once=True),
        **{'on-target-error': policy})
    rec.wait_status('paused')
    j = qmp.execute('query-block-jobs')[0]
    assert j['io-status'] == 'nospace'
    qmp.execute('block-job-resume', device='mt')
    complete(qmp, rec, 'auto')
    seq = golden.sequence(rec.events)
    assert 'BLOCK_JOB_ERROR:write:stop' in seq
    assert seq[-5:] == ['JOB_STATUS_CHANGE:waiting',
                        'JOB_STATUS_CHANGE:pending', 'BLOCK_JOB_COMPLETED',
                        'JOB_STATUS_CHANGE:concluded',
                        'JOB_STATUS_CHANGE:null']
    cleanup_compare(qmp, src, tgt)


@pytest.mark.timeout(120)
def test_target_error_enospc_reports_eio(daemon, workdir):
    """enospc stops only on ENOSPC; another errno is reported."""
    qmp = daemon.qmp
    src, tgt, rec = start_mirror_over_errors(
        qmp, workdir, 'mt', 'auto',
        tgt_rule={'event': 'write_aio', 'errno': 5, 'once': True},
        **{'on-target-error': 'enospc'})
    ev = rec.wait('BLOCK_JOB_COMPLETED')
    assert ev['data']['error'] == 'Input/output error'
    assert 'BLOCK_JOB_ERROR:write:report' in golden.sequence(rec.events)
    rec.wait_status('null')
