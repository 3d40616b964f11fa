"""Jobs that yield to the guest (our extension, docs/guest-impact.md):
backup, mirror, stream and commit watch the latency and rate of guests'
(NBD clients') requests on their nodes and hold their own copy rate back
while those suffer, and run free while the guest is idle.

No timing is asserted.  The guest is made to suffer on purpose: it writes
through a throttle filter whose group is then limited to a few requests a
second (qom-set), so its latency rises a hundredfold and the back-off must
halve the job's limit down to its floor (x-yield.min-speed) -- observed
through query-block-jobs' x-yield-limit.  Lifting the limit and stopping
the writer must lift the back-off (x-yield-limit 0).  Bytes are checked with
qemu-img compare: a backup's target against a copy of the source taken
before the job, a mirror's target against the source after the pivot.
"""

import os
import shutil
import subprocess

import pytest

import bjtest
from bjtest import QMPError, qemu_img, qemu_io, wait_until

pytestmark = [pytest.mark.blockjobd_only('x-yield and its query members '
                                         'are ours'),
              pytest.mark.ctx_variants]

MiB = 1 << 20
SIZE = 32 * MiB
WRITE_AREA = 1 * MiB         # the guest writes there only
MIN_SPEED = 1 * MiB


def images(d, tgt_fmt='qcow2'):
    return bjtest.filled_source_and_target(d, SIZE, tgt_fmt)


def add_nodes(daemon, src, tgt, tgt_fmt='qcow2'):
    """src (raw) under a throttle filter 'thr' of group tg (no limits yet)
    exported over NBD as 'thr'; tgt.  Returns the NBD socket."""
    qmp = daemon.qmp
    qmp.execute('object-add', {'qom-type': 'throttle-group', 'id': 'tg'})
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                                 'file': {'driver': 'file',
                                          'filename': src}})
    qmp.execute('blockdev-add', {'driver': 'throttle', 'node-name': 'thr',
                                 'throttle-group': 'tg', 'file': 'src'})
    bjtest.place_node(qmp, 'thr')
    bjtest.blockdev_add_image(qmp, tgt_fmt, 'tgt', tgt)
    return bjtest.nbd_export(daemon, 'thr')


def throttle(qmp, iops):
    qmp.execute('qom-set', path='tg', property='limits',
                value={'iops-total': iops})


def Writer(sock):
    """An NBD client rewriting random 4 KiB blocks of the first MiB with a
    new pattern until stopped."""
    return bjtest.NbdRandomWriter(sock, 'thr', 4096, WRITE_AREA, 3, 0x30, 100)


def finish(w):
    h = w.finish()
    h.flush()
    h.shutdown()


def job(qmp, jid='j'):
    return bjtest.query_block_job(qmp, jid)


def wait_job(qmp, cond, what, jid='j'):
    wait_until(lambda: cond(job(qmp)), timeout=30 * bjtest.timeout_factor(),
               what=what)


def make_guest_suffer(daemon, sock, x_yield_enabled=True):
    """Starts the writer, waits until the job sees it, then throttles it to
    5 requests a second: its latency rises far above its baseline."""
    qmp = daemon.qmp
    w = Writer(sock)
    wait_until(lambda: w.count > 20, what='the writer writing')
    wait_job(qmp, lambda j: j['x-yield-guest-iops'] > 0,
             'the job seeing the guest')
    if x_yield_enabled:
        wait_job(qmp, lambda j: j['x-yield-limit'] > 0,
                 'the back-off limiting the job')
    throttle(qmp, 5)
    return w


def calm_guest(daemon, w):
    """Lifts the throttle and stops the writer: the guest is idle."""
    throttle(daemon.qmp, 0)
    finish(w)


def test_backup_backs_off_and_keeps_point_in_time(daemon, tmp_path):
    """A busy guest whose latency rises makes a full backup halve its limit
    down to min-speed; an idle guest lifts it; the target is the source as
    it was when the job started."""
    src, tgt = images(tmp_path)
    snap = os.path.join(str(tmp_path), 'snap.raw')
    shutil.copyfile(src, snap)
    sock = add_nodes(daemon, src, tgt)
    qmp = daemon.qmp
    # speed caps the job so that it is still copying while we look.
    qmp.execute('blockdev-backup', job_id='j', device='src', target='tgt',
                sync='full', speed=4 * MiB,
                x_yield={'min-speed': MIN_SPEED})
    j = job(qmp)
    assert j['x-yield'] is True and j['x-yield-limit'] == 0
    w = make_guest_suffer(daemon, sock)
    wait_job(qmp, lambda j: j['x-yield-limit'] == MIN_SPEED,
             'the limit halved down to min-speed')
    j = job(qmp)
    assert j['x-yield-backoffs'] > 0 and j['status'] == 'running'
    p = subprocess.run([bjtest.bjctl_bin(), '--socket', daemon.sock_path,
                        'info', 'j'], capture_output=True, text=True,
                       timeout=30, env=bjtest.sanitizer_env())
    assert p.returncode == 0, p.stderr
    assert any(line.startswith('back-off:  limiting to 1.0 MiB/s (guest ')
               for line in p.stdout.splitlines()), p.stdout
    calm_guest(daemon, w)
    wait_job(qmp, lambda j: j['x-yield-limit'] == 0,
             'the back-off lifted for an idle guest')
    qmp.execute('block-job-set-speed', device='j', speed=0)
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60,
                        match={'data': {'device': 'j'}})
    assert 'error' not in ev['data'] and ev['data']['offset'] == SIZE
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    for node in ('thr', 'src', 'tgt'):
        qmp.execute('blockdev-del', node_name=node)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', snap, tgt)
    # and the source has the guest's writes, so the check means something
    r = bjtest.run('qemu-img', 'compare', '-q', '-f', 'raw', '-F', 'raw',
                   snap, src, check=False)
    assert r.returncode == 1


def test_mirror_bulk_phase_backs_off(daemon, tmp_path):
    src, tgt = images(tmp_path, 'raw')
    sock = add_nodes(daemon, src, tgt, 'raw')
    qmp = daemon.qmp
    # thr is the root (mirror_top goes above it): the job reads through
    # the throttle too, which does not matter here.
    qmp.execute('blockdev-mirror', job_id='j', device='thr', target='tgt',
                sync='full', speed=4 * MiB,
                x_yield={'min-speed': MIN_SPEED, 'latency-pct': 150})
    w = make_guest_suffer(daemon, sock)
    wait_job(qmp, lambda j: j['x-yield-limit'] == MIN_SPEED,
             'the limit halved down to min-speed')
    assert not job(qmp)['ready']
    calm_guest(daemon, w)
    wait_job(qmp, lambda j: j['x-yield-limit'] == 0,
             'the back-off lifted for an idle guest')
    qmp.execute('block-job-set-speed', device='j', speed=0)
    qmp.wait_event('BLOCK_JOB_READY', timeout=60,
                   match={'data': {'device': 'j'}})
    assert job(qmp)['x-yield-limit'] == 0
    qmp.execute('block-job-complete', device='j')
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60,
                        match={'data': {'device': 'j'}})
    assert 'error' not in ev['data']
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    for node in ('thr', 'src', 'tgt'):
        qmp.execute('blockdev-del', node_name=node)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', src, tgt)


def test_back_off_turned_off(daemon, tmp_path):
    """x-yield.enabled false: the job sees the guest suffer (it counts the
    back-offs it would make) but is never limited."""
    src, tgt = images(tmp_path)
    sock = add_nodes(daemon, src, tgt)
    qmp = daemon.qmp
    qmp.execute('blockdev-backup', job_id='j', device='src', target='tgt',
                sync='full', speed=2 * MiB, x_yield={'enabled': False})
    w = make_guest_suffer(daemon, sock, x_yield_enabled=False)
    wait_job(qmp, lambda j: j['x-yield-backoffs'] > 0,
             'a back-off the job would have made')
    j = job(qmp)
    assert j['x-yield'] is False and j['x-yield-limit'] == 0
    p = subprocess.run([bjtest.bjctl_bin(), '--socket', daemon.sock_path,
                        'info', 'j'], capture_output=True, text=True,
                       timeout=30, env=bjtest.sanitizer_env())
    assert 'back-off:  off' in p.stdout.splitlines(), p.stdout
    calm_guest(daemon, w)
    qmp.execute('block-job-cancel', device='j', force=True)
    qmp.wait_event('BLOCK_JOB_CANCELLED', match={'data': {'device': 'j'}})


def test_idle_disk_not_throttled(daemon, tmp_path):
    """Without a guest the job is never limited: a backup held to 16 MiB/s
    by its speed (so that the back-off samples it for a second or more) is
    never limited and never counts a back-off; a mirror runs to READY."""
    src, tgt = images(tmp_path)
    qmp = daemon.qmp
    bjtest.blockdev_add_image(qmp, 'raw', 'src', src)
    bjtest.blockdev_add_image(qmp, 'qcow2', 'tgt', tgt)
    qmp.execute('blockdev-backup', job_id='j', device='src', target='tgt',
                sync='full', speed=16 * MiB)
    wait_job(qmp, lambda j: j['offset'] >= SIZE // 2, 'half of it copied')
    j = job(qmp)
    assert (j['x-yield'], j['x-yield-limit'], j['x-yield-backoffs'],
            j['x-yield-guest-iops']) == (True, 0, 0, 0)
    qmp.execute('block-job-set-speed', device='j', speed=0)
    qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60,
                   match={'data': {'device': 'j'}})
    qmp.execute('blockdev-mirror', job_id='m', device='src', target='tgt',
                sync='full')
    qmp.wait_event('BLOCK_JOB_READY', timeout=60,
                   match={'data': {'device': 'm'}})
    j = job(qmp, 'm')
    assert (j['x-yield'], j['x-yield-limit'], j['x-yield-backoffs'],
            j['x-yield-guest-iops']) == (True, 0, 0, 0)
    qmp.execute('block-job-cancel', device='m')
    qmp.wait_event('BLOCK_JOB_COMPLETED', match={'data': {'device': 'm'}})
    qmp.execute('blockdev-del', node_name='tgt')
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', src, tgt)


def test_stream_and_commit_take_x_yield(daemon, tmp_path):
    base = os.path.join(str(tmp_path), 'base.qcow2')
    top = os.path.join(str(tmp_path), 'top.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, SIZE)
    qemu_io('-f', 'qcow2', '-c', 'write -P 0x22 0 4M', base)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top)
    qmp = daemon.qmp
    bjtest.blockdev_add_image(qmp, 'qcow2', 'top', top)
    qmp.execute('block-stream', job_id='j', device='top', speed=1,
                x_yield={'enabled': False, 'latency-pct': 200})
    j = job(qmp)
    assert (j['type'], j['x-yield'], j['x-yield-limit']) == \
        ('stream', False, 0)
    jobs = qmp.execute('query-jobs')
    assert jobs[0]['x-yield'] is False and 'x-yield-limit' in jobs[0]
    qmp.execute('block-job-cancel', device='j')
    qmp.wait_event('BLOCK_JOB_CANCELLED', match={'data': {'device': 'j'}})
    qmp.execute('block-commit', job_id='c', device='top', speed=1,
                x_yield={'min-speed': 65536})
    j = job(qmp, 'c')
    assert (j['type'], j['x-yield']) == ('commit', True)
    qmp.execute('block-job-cancel', device='c', force=True)
    qmp.wait_event('BLOCK_JOB_CANCELLED', match={'data': {'device': 'c'}})


def test_x_yield_errors_change_nothing(daemon, tmp_path):
    src, tgt = images(tmp_path)
    qmp = daemon.qmp
    bjtest.blockdev_add_image(qmp, 'raw', 'src', src)
    bjtest.blockdev_add_image(qmp, 'qcow2', 'tgt', tgt)
    nodes = sorted(n['node-name']
                   for n in qmp.execute('query-named-block-nodes'))
    lat = 'x-yield.latency-pct must be between 101 and 10000'
    minsp = 'x-yield.min-speed must be positive'
    cases = [
        ({'latency-pct': 100}, lat),
        ({'latency-pct': 0}, lat),
        ({'latency-pct': 10001}, lat),
        ({'min-speed': 0}, minsp),
        ({'min-speed': -4096}, minsp),
        ({'enabled': 'no'},
         "Invalid parameter type for 'x-yield.enabled', expected: boolean"),
        ({'min-speed': 'fast'},
         "Invalid parameter type for 'x-yield.min-speed', expected: "
         "integer"),
        ({'nope': 1}, "Parameter 'x-yield.nope' is unexpected"),
    ]
    commands = [
        ('blockdev-backup', {'sync': 'full', 'target': 'tgt'}),
        ('blockdev-mirror', {'sync': 'full', 'target': 'tgt'}),
        ('block-stream', {}),
    ]
    for cmd, args in commands:
        for xy, msg in cases:
            a = dict(args, **{'job-id': 'j', 'device': 'src', 'x-yield': xy})
            with pytest.raises(QMPError) as e:
                qmp.execute(cmd, a)
            assert (e.value.cls, e.value.desc) == ('GenericError', msg), \
                (cmd, xy)
    # drive-backup refuses them before it creates its target
    newfile = os.path.join(str(tmp_path), 'new.qcow2')
    with pytest.raises(QMPError) as e:
        qmp.execute('drive-backup', job_id='j', device='src', sync='full',
                    target=newfile, format='qcow2',
                    x_yield={'min-speed': 0})
    assert e.value.desc == minsp
    assert not os.path.exists(newfile)
    assert qmp.execute('query-block-jobs') == []
    assert qmp.execute('query-jobs') == []
    assert sorted(n['node-name']
                  for n in qmp.execute('query-named-block-nodes')) == nodes
    # x-yield is in the schema of every job command that copies
    schema = qmp.execute('query-qmp-schema')
    by_name = {e['name']: e for e in schema}
    for cmd in ('blockdev-backup', 'drive-backup', 'blockdev-mirror',
                'drive-mirror', 'block-stream', 'block-commit'):
        arg_type = by_name[by_name[cmd]['arg-type']]
        names = [m['name'] for m in arg_type['members']]
        assert 'x-yield' in names, cmd
