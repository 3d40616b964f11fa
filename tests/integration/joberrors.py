"""What test_commit_errors.py and test_stream_errors.py share: a chain
whose middle layer's reads fail (blkdebug), a job's recorded events, the
event sequences each on-error policy gives and the stop-then-resume dance.
"""

import golden
from bjtest import qemu_img
from chain import Chain

MiB = 1 << 20

# A job that paused on its read error (on-error=stop), was resumed, retried
# the chunk and completed.
STOPPED_THEN_COMPLETED = [
    'JOB_STATUS_CHANGE:created', 'JOB_STATUS_CHANGE:running',
    'BLOCK_JOB_ERROR:read:stop', 'JOB_STATUS_CHANGE:paused',
    'JOB_STATUS_CHANGE:running', 'JOB_STATUS_CHANGE:waiting',
    'JOB_STATUS_CHANGE:pending', 'BLOCK_JOB_COMPLETED',
    'JOB_STATUS_CHANGE:concluded', 'JOB_STATUS_CHANGE:null']


def failed_after_error(action):
    """The sequence of a job that met a read error, took action (the
    BLOCK_JOB_ERROR's) and failed."""
    return ['JOB_STATUS_CHANGE:created', 'JOB_STATUS_CHANGE:running',
            'BLOCK_JOB_ERROR:read:%s' % action, 'JOB_STATUS_CHANGE:aborting',
            'BLOCK_JOB_COMPLETED:error', 'JOB_STATUS_CHANGE:concluded',
            'JOB_STATUS_CHANGE:null']


def failing_chain(workdir, qmp, once, top_writes):
    """base <- mid <- top (16 MiB), all added; reads of mid's data at host
    offset 4 MiB fail once, or always.  Returns (top, ref)."""
    chain = Chain(workdir, size=16 * MiB, base=['write -P 1 0 8M'],
                  mid=['write -P 2 4M 8M'], top=top_writes)
    chain.add_all_failing_mid_reads(qmp, 4 * MiB, once)
    return chain.top, chain.ref


def check_top(qmp, top, ref):
    """Deletes the chain's nodes; top must be a clean image that reads as
    ref.  Returns top's qemu-img info."""
    Chain.del_all(qmp)
    qemu_img('check', '-q', top)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', ref, top)
    return qemu_img('info', '-U', top).stdout


def sequence(rec):
    return golden.canonical(golden.sequence(rec.events))


def completed_event(rec):
    return [e for e in rec.events if e['event'] == 'BLOCK_JOB_COMPLETED'][0]


def resume_after_stop(qmp, rec, device):
    """The job pauses on its error with io-status 'failed'; resumes it and
    waits until it is gone."""
    rec.wait_status('paused')
    j = qmp.execute('query-block-jobs')[0]
    assert (j['status'], j['paused'], j['io-status']) == ('paused', True,
                                                          'failed')
    qmp.execute('block-job-resume', device=device)
    rec.wait_status('null')
