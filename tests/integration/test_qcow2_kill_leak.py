"""A daemon killed (SIGKILL) in the middle of a job leaves its qcow2 target
consistent and (almost) without leaked clusters (hardening issue 22).

Each job copies 64 MiB of data into a qcow2 image with 4 KiB clusters
(block-stream into the overlay of a chain; blockdev-backup and
blockdev-mirror from a raw file into a fresh target), is killed once
query-block-jobs shows it half done, and `qemu-img check` then judges the
image: no corruption, ever, and at most LEAK_BOUND leaked clusters.

What a kill can leave counted but unreferenced (qcow2-cache.c): the
caches write back all metadata at once (refcount blocks, flush, L2 tables,
flush, L1 table), and refcount blocks go without the counts of
allocations in flight.  So only a kill during such a write-back leaks,
and only clusters whose L2 entries it had not written yet: at most the
entries of the L2 tables dirty in the cache, and those tables themselves.

- Killed while the job runs, with an L2 cache of two tables (a write-back
  at every new table, so the kill may well land in one): at most
  2 * (512 + 1) clusters, both tables full and not yet written, and this
  worst case does happen (1026 seen).  New tables and allocations in
  flight are left out of the refcounts on disk, so they add nothing; the
  bound has a small margin on top for what this reasoning may miss.
- Killed while the job is paused (nothing in flight, no write-back
  running; default caches): none.

Before this rule a 4 KiB-cluster target leaked every cluster written back
so far (the L1 table was only written at a full flush): 4,000 to 8,000
here.
"""

import json
import os
import signal

import pytest

from bjtest import qemu_img, qemu_io, wait_until

MiB = 1 << 20
SIZE = 64 * MiB
CLUSTER = 4096
L2_ENTRIES = CLUSTER // 8
L2_CACHE_TABLES = 2
# The entries of the dirty L2 tables and the tables themselves, plus a
# margin (see above).
LEAK_BOUND = L2_CACHE_TABLES * (L2_ENTRIES + 1) + 16
# The job is held to this, so that it is observed half done (and killed)
# long before it ends: 64 MiB in 1 s.
SPEED = 64 * MiB

pytestmark = pytest.mark.blockjobd_only(
    'the bound is ours: qemu-storage-daemon 7.2 leaks about a hundred '
    'clusters in the same runs')


def qcow2_opts(path, small_l2_cache):
    opts = {'driver': 'qcow2', 'node-name': 'tgt',
            'file': {'driver': 'file', 'filename': path}}
    if small_l2_cache:
        opts['l2-cache-size'] = L2_CACHE_TABLES * CLUSTER
    return opts


def start_job(qmp, workdir, job, small_l2_cache):
    """Makes the images, starts the job (id j) copying into node tgt;
    returns the path of tgt's image."""
    src = os.path.join(workdir, 'src.img')
    tgt = os.path.join(workdir, 'tgt.qcow2')
    if job == 'block-stream':
        qemu_img('create', '-q', '-f', 'qcow2', src, SIZE)
        qemu_io('-c', 'write -P 1 0 %d' % SIZE, src)
        qemu_img('create', '-q', '-f', 'qcow2', '-o',
                 'cluster_size=%d' % CLUSTER, '-b', 'src.img', '-F', 'qcow2',
                 tgt)
        qmp.execute('blockdev-add', qcow2_opts(tgt, small_l2_cache))
        qmp.execute('block-stream', {'job-id': 'j', 'device': 'tgt',
                                     'speed': SPEED})
        return tgt
    qemu_img('create', '-q', '-f', 'raw', src, SIZE)
    qemu_io('-f', 'raw', '-c', 'write -P 1 0 %d' % SIZE, src)
    qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % CLUSTER,
             tgt, SIZE)
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                                 'file': {'driver': 'file',
                                          'filename': src}})
    qmp.execute('blockdev-add', qcow2_opts(tgt, small_l2_cache))
    qmp.execute(job, {'job-id': 'j', 'device': 'src', 'target': 'tgt',
                      'sync': 'full', 'speed': SPEED})
    return tgt


def the_job(qmp):
    jobs = qmp.execute('query-block-jobs')
    assert len(jobs) == 1, 'the job ended before it was killed: %s' % jobs
    return jobs[0]


def kill_and_check(d, tgt):
    d.send_signal(signal.SIGKILL)
    d.wait()
    d.check(expect_rc=-signal.SIGKILL)
    p = qemu_img('check', '--output=json', tgt, check=False)
    report = json.loads(p.stdout)
    assert report.get('corruptions', 0) == 0, report
    assert report.get('check-errors', 0) == 0, report
    return report.get('leaks', 0)


def half_done(qmp):
    j = the_job(qmp)
    return j['offset'] >= j['len'] // 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize('job', ['block-stream', 'blockdev-backup',
                                 'blockdev-mirror'])
def test_kill_while_running_leaks_at_most_a_write_back(daemon, workdir,
                                                       job):
    d = daemon
    tgt = start_job(d.qmp, workdir, job, small_l2_cache=True)
    wait_until(lambda: half_done(d.qmp), interval=0.005,
               what='%s half done' % job)
    leaks = kill_and_check(d, tgt)
    assert leaks <= LEAK_BOUND


@pytest.mark.timeout(60)
@pytest.mark.parametrize('job', ['block-stream', 'blockdev-backup',
                                 'blockdev-mirror'])
def test_kill_while_paused_leaks_nothing(daemon, workdir, job):
    d = daemon
    tgt = start_job(d.qmp, workdir, job, small_l2_cache=False)
    wait_until(lambda: half_done(d.qmp), interval=0.005,
               what='%s half done' % job)
    d.qmp.execute('block-job-pause', device='j')
    wait_until(lambda: the_job(d.qmp)['status'] == 'paused' and
               not the_job(d.qmp)['busy'], what='%s paused' % job)
    leaks = kill_and_check(d, tgt)
    assert leaks == 0
