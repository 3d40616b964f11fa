"""A job retrying a persistent error (issue 22 #9): block-commit with
on-error=ignore over a source that always fails.

qsd 7.2 (and blockjobd before) retries at once, forever: thousands of
BLOCK_JOB_ERROR a second, a core burnt, the monitor starved.  Now the
event of one job, operation and action goes out at most once a second
(the last repeat of a second is sent when it ends, as qemu throttles its
other event floods) and the retries back off, 1 ms doubling to 1 s
(docs/hardening.md, "Job error floods").  Times come from the events'
own timestamps and the daemon's CPU counters, not from sleeps.
"""

import json
import os

import pytest

from bjtest import qemu_img, qemu_io

MiB = 1 << 20


def ts(ev):
    return ev['timestamp']['seconds'] + ev['timestamp']['microseconds'] / 1e6


def cpu_seconds(pid):
    f = open('/proc/%d/stat' % pid).read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')


@pytest.mark.blockjobd_only('qsd floods: thousands of events a second')
@pytest.mark.timeout(60)
def test_commit_ignore_persistent_error(daemon, workdir):
    base, mid, top = (str(workdir / n) for n in ('base.qcow2', 'mid.qcow2',
                                                 'top.qcow2'))
    qemu_img('create', '-q', '-f', 'qcow2', base, str(4 * MiB))
    qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid)
    qemu_io('-c', 'write -P 1 0 4M', mid)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top)
    m = json.loads(qemu_img('map', '--output=json', mid).stdout)
    host = [e for e in m if e['data'] and e['depth'] == 0][0]['offset']
    qmp = daemon.qmp
    qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'top',
        'file': {'driver': 'file', 'filename': top},
        'backing': {
            'driver': 'qcow2', 'node-name': 'mid',
            'file': {'driver': 'blkdebug',
                     'inject-error': [{'event': 'read_aio', 'errno': 5,
                                       'once': False,
                                       'sector': host // 512}],
                     'image': {'driver': 'file', 'filename': mid}},
            'backing': {'driver': 'qcow2', 'node-name': 'base',
                        'file': {'driver': 'file', 'filename': base}}}})
    qmp.execute('block-commit', {'job-id': 'j', 'device': 'top',
                                 'top-node': 'mid', 'on-error': 'ignore'})
    first = qmp.wait_event('BLOCK_JOB_ERROR')
    cpu0 = cpu_seconds(daemon.pid)
    evs = [first]
    for _ in range(2):
        evs.append(qmp.wait_event('BLOCK_JOB_ERROR'))
    cpu = cpu_seconds(daemon.pid) - cpu0
    for ev in evs:
        assert ev['data'] == {'device': 'j', 'operation': 'read',
                              'action': 'ignore'}
    # One a second: two periods for three events.
    assert ts(evs[1]) - ts(evs[0]) >= 0.99
    assert ts(evs[2]) - ts(evs[1]) >= 0.99
    # Backing off, not spinning: well under a core over those 2 s.
    assert cpu < 0.5, cpu
    # The job is still there and still answers (cancel cuts the backoff).
    assert qmp.execute('query-block-jobs')[0]['status'] == 'running'
    qmp.execute('block-job-cancel', device='j')
    qmp.wait_event('BLOCK_JOB_CANCELLED')
