"""Internal snapshots: blockdev-snapshot-internal-sync and
blockdev-snapshot-delete-internal-sync (also as a transaction action).

The snapshots we take must be what qemu-img reads (check clean, listed
with their names, `snapshot -a` restores the bytes of the instant) and
the ones qemu-img takes must be ours to delete; deleting gives the
clusters back.  Error texts are qsd 7.2's (every test also runs against
qemu-storage-daemon).
"""

import json
import os
import random
import shutil
import signal
import time

import pytest

import bjtest
from bjtest import QMPError, qemu_img, qemu_io

MiB = 1024 * 1024


def check_clean(path):
    """qemu-img check: no corruption, no leak, no error."""
    p = qemu_img('check', '--output=json', path, check=False)
    report = json.loads(p.stdout)
    assert report.get('corruptions', 0) == 0, (report, p.stderr)
    assert report.get('leaks', 0) == 0, (report, p.stderr)
    assert report.get('check-errors', 0) == 0, (report, p.stderr)
    assert p.returncode == 0, (report, p.stderr)
    return report


def snapshot_names(path):
    info = json.loads(qemu_img('info', '--output=json', '-U',
                               path).stdout)
    return [(s['id'], s['name']) for s in info.get('snapshots', [])]


def qerror(qmp, cmd, **args):
    try:
        qmp.execute(cmd, args)
    except QMPError as e:
        assert e.cls == 'GenericError', (e.cls, e.desc)
        return e.desc
    raise AssertionError('%s %r succeeded' % (cmd, args))


def make_image(workdir, name='a.qcow2', size=16 * MiB, *opts):
    path = os.path.join(str(workdir), name)
    qemu_img('create', '-q', '-f', 'qcow2', *opts, path, str(size))
    return path


def add(qmp, node, path, **opts):
    bjtest.blockdev_add_image(qmp, 'qcow2', node, path, **opts)


def test_create_list_restore_delete(daemon, workdir, sockdir):
    """Snapshots taken while an NBD client writes: qemu-img sees them, and
    restoring one gives back exactly the bytes of its instant."""
    pytest.importorskip('nbd')
    size = 16 * MiB
    path = make_image(workdir, 'a.qcow2', size)
    qmp = daemon.qmp
    add(qmp, 'q', path)
    h = bjtest.nbd_export_open(daemon, sockdir)
    rnd = random.Random(20)
    expect = bytearray(size)
    copies = {}
    n = 0
    for snap in ('s1', 's2', 's3'):
        for _ in range(40):
            bjtest.nbd_random_write(h, rnd, n, expect, size)
            n += 1
        qmp.execute('blockdev-snapshot-internal-sync', device='q', name=snap)
        copies[snap] = bytes(expect)
    for _ in range(40):
        bjtest.nbd_random_write(h, rnd, n, expect, size)
        n += 1
    # query-named-block-nodes lists them as qsd does
    nodes = {x['node-name']: x for x in qmp.execute('query-named-block-nodes')}
    snaps = nodes['q']['image']['snapshots']
    assert [(s['id'], s['name']) for s in snaps] == [
        ('1', 's1'), ('2', 's2'), ('3', 's3')]
    for s in snaps:
        assert set(s) == {'id', 'name', 'vm-state-size', 'date-sec',
                          'date-nsec', 'vm-clock-sec', 'vm-clock-nsec'}
        assert s['vm-state-size'] == 0
    bjtest.nbd_export_close(daemon, h)
    daemon.stop()

    check_clean(path)
    assert snapshot_names(path) == [('1', 's1'), ('2', 's2'), ('3', 's3')]
    # the active image has the latest bytes
    cur = os.path.join(str(workdir), 'cur.raw')
    with open(cur, 'wb') as f:
        f.write(expect)
    qemu_img('compare', '-f', 'qcow2', '-F', 'raw', path, cur)
    for snap, data in copies.items():
        work = os.path.join(str(workdir), 'w.qcow2')
        shutil.copyfile(path, work)
        qemu_img('snapshot', '-a', snap, work)
        with open(cur, 'wb') as f:
            f.write(data)
        qemu_img('compare', '-f', 'qcow2', '-F', 'raw', work, cur)
        check_clean(work)
        os.unlink(work)


def test_delete_frees_clusters(daemon_factory, workdir):
    """Deleting every snapshot, ours and qemu-img's, leaves a clean image
    whose clusters are what it had without them."""
    path = make_image(workdir, 'a.qcow2', 8 * MiB)
    qemu_io('-f', 'qcow2', '-c', 'write -P 1 0 4M', path)
    plain_alloc = json.loads(qemu_img('check', '--output=json',
                                      path).stdout)['allocated-clusters']
    qemu_img('snapshot', '-c', 'theirs', path)
    qemu_io('-f', 'qcow2', '-c', 'write -P 2 1M 2M', path)
    d = daemon_factory()
    qmp = d.qmp
    add(qmp, 'q', path)
    qmp.execute('blockdev-snapshot-internal-sync', device='q', name='ours')
    qmp.execute('blockdev-snapshot-internal-sync', device='q', name='ours2')
    # writes now copy the shared clusters
    d2 = qmp.execute('query-named-block-nodes')
    assert [s['name'] for s in
            [n for n in d2 if n['node-name'] == 'q'][0]['image']['snapshots']
            ] == ['theirs', 'ours', 'ours2']
    r = qmp.execute('blockdev-snapshot-delete-internal-sync', device='q',
                    name='theirs')
    assert r['id'] == '1' and r['name'] == 'theirs'
    assert set(r) >= {'vm-state-size', 'date-sec', 'date-nsec',
                      'vm-clock-sec', 'vm-clock-nsec'}
    qmp.execute('blockdev-snapshot-delete-internal-sync', device='q',
                id='2')
    d.stop()
    check_clean(path)
    assert snapshot_names(path) == [('3', 'ours2')]
    # qemu-img deletes ours
    qemu_img('snapshot', '-d', 'ours2', path)
    report = check_clean(path)
    assert report['allocated-clusters'] == plain_alloc
    ref = os.path.join(str(workdir), 'ref.qcow2')
    make_image(workdir, 'ref.qcow2', 8 * MiB)
    qemu_io('-f', 'qcow2', '-c', 'write -P 1 0 4M', '-c',
            'write -P 2 1M 2M', ref)
    qemu_img('compare', path, ref)


def test_write_after_snapshot_then_delete(daemon_factory, workdir):
    """Writes after a snapshot copy the shared clusters; deleting the
    snapshot gives the old copies back and COPIED is right again."""
    path = make_image(workdir, 'a.qcow2', 8 * MiB)
    qemu_io('-f', 'qcow2', '-c', 'write -P 1 0 8M', path)
    plain_alloc = json.loads(qemu_img('check', '--output=json',
                                      path).stdout)['allocated-clusters']
    d = daemon_factory()
    qmp = d.qmp
    add(qmp, 'q', path)
    qmp.execute('blockdev-snapshot-internal-sync', device='q', name='s')
    d.stop()
    check_clean(path)
    qemu_io('-f', 'qcow2', '-c', 'write -P 3 0 2M', path)
    d = daemon_factory()
    qmp = d.qmp
    add(qmp, 'q', path)
    qmp.execute('blockdev-snapshot-delete-internal-sync', device='q',
                name='s')
    d.stop()
    report = check_clean(path)
    assert report['allocated-clusters'] == plain_alloc
    assert snapshot_names(path) == []
    # and a write in place works afterwards (no needless copy)
    qemu_io('-f', 'qcow2', '-c', 'write -P 4 4M 1M', path)
    check_clean(path)
    assert json.loads(qemu_img('check', '--output=json', path).stdout)[
        'allocated-clusters'] == plain_alloc


def test_errors_as_qsd(daemon, workdir):
    qmp = daemon.qmp
    path = make_image(workdir, 'a.qcow2', 1 * MiB)
    ro = make_image(workdir, 'ro.qcow2', 1 * MiB)
    qemu_img('snapshot', '-c', 'old', ro)
    raw = os.path.join(str(workdir), 'r.raw')
    qemu_img('create', '-q', '-f', 'raw', raw, '1M')
    add(qmp, 'q', path)
    bjtest.blockdev_add_image(qmp, 'raw', 'r', raw)
    qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'qro', 'read-only': True,
        'file': {'driver': 'file', 'filename': ro, 'node-name': 'fro',
                 'read-only': True}})
    c = 'blockdev-snapshot-internal-sync'
    dl = 'blockdev-snapshot-delete-internal-sync'
    assert qerror(qmp, c, device='nope', name='x') == \
        "Cannot find device='nope' nor node-name='nope'"
    assert qerror(qmp, c, device='r', name='x') == \
        "Block format 'raw' used by device 'r' does not support internal " \
        "snapshots"
    assert qerror(qmp, c, device='fro', name='x') == 'Need a root block node'
    assert qerror(qmp, c, device='qro', name='x') == \
        "Device 'qro' is read only"
    assert qerror(qmp, c, device='q', name='') == 'Name is empty'
    qmp.execute(c, device='q', name='s1')
    assert qerror(qmp, c, device='q', name='s1') == \
        "Snapshot with name 's1' already exists on device 'q'"
    assert qerror(qmp, dl, device='q') == 'Name or id must be provided'
    assert qerror(qmp, dl, device='nope', name='x') == \
        "Cannot find device='nope' nor node-name='nope'"
    assert qerror(qmp, dl, device='fro', name='x') == \
        'Need a root block node'
    assert qerror(qmp, dl, device='r', name='x') == \
        'Failed to get a snapshot list: Operation not supported'
    assert qerror(qmp, dl, device='q', name='x') == \
        "Snapshot with id 'null' and name 'x' does not exist on device 'q'"
    assert qerror(qmp, dl, device='q', id='9') == \
        "Snapshot with id '9' and name 'null' does not exist on device 'q'"
    assert qerror(qmp, dl, device='q', id='2', name='s1') == \
        "Snapshot with id '2' and name 's1' does not exist on device 'q'"
    assert qerror(qmp, dl, device='qro', name='old') == \
        'Failed to remove snapshot from snapshot list: Operation not ' \
        'permitted'
    # nothing changed by the refusals
    nodes = {x['node-name']: x for x in qmp.execute('query-named-block-nodes')}
    assert [s['name'] for s in nodes['q']['image']['snapshots']] == ['s1']
    if not bjtest.is_qsd():
        # (qsd 7.2 drops it from its list in memory, not from the image)
        assert [s['name'] for s in nodes['qro']['image']['snapshots']] == \
            ['old']
    r = qmp.execute(dl, device='q', id='1', name='s1')
    assert (r['id'], r['name'], r['vm-state-size']) == ('1', 's1', 0)
    nodes = {x['node-name']: x for x in qmp.execute('query-named-block-nodes')}
    assert 'snapshots' not in nodes['q']['image']
    # a long name is cut to 255 bytes, as qsd does
    long_name = 'n' * 300
    qmp.execute(c, device='q', name=long_name)
    nodes = {x['node-name']: x for x in qmp.execute('query-named-block-nodes')}
    assert [s['name'] for s in nodes['q']['image']['snapshots']] == \
        ['n' * 255]


def test_transaction_abort_leaves_no_snapshot(daemon, workdir):
    qmp = daemon.qmp
    path = make_image(workdir, 'a.qcow2', 4 * MiB)
    qemu_io('-f', 'qcow2', '-c', 'write -P 7 0 1M', path)
    add(qmp, 'q', path)
    qmp.execute('blockdev-snapshot-internal-sync', device='q', name='x')
    assert qerror(qmp, 'transaction', actions=[
        {'type': 'blockdev-snapshot-internal-sync',
         'data': {'device': 'q', 'name': 't1'}},
        {'type': 'abort', 'data': {}}]) == \
        'Transaction aborted using Abort action'
    assert qerror(qmp, 'transaction', actions=[
        {'type': 'blockdev-snapshot-internal-sync',
         'data': {'device': 'q', 'name': 't1'}}],
        properties={'completion-mode': 'grouped'}) == \
        "Action 'blockdev-snapshot-internal-sync' does not support " \
        "Transaction property completion-mode = grouped"
    qmp.execute('transaction', actions=[
        {'type': 'blockdev-snapshot-internal-sync',
         'data': {'device': 'q', 'name': 'y'}}])
    nodes = {x['node-name']: x for x in qmp.execute('query-named-block-nodes')}
    assert [(s['id'], s['name']) for s in nodes['q']['image']['snapshots']] \
        == [('1', 'x'), ('2', 'y')]
    qmp.execute('blockdev-del', node_name='q')
    check_clean(path)
    assert snapshot_names(path) == [('1', 'x'), ('2', 'y')]


def test_compressed_extended_small_clusters(daemon_factory, workdir):
    """Compressed clusters (counted per host cluster they touch), extended
    L2 entries and 512-byte clusters with 64-bit refcounts."""
    shapes = [('c.qcow2', ['-o', 'cluster_size=65536']),
              ('x.qcow2', ['-o', 'extended_l2=on,cluster_size=65536']),
              ('s.qcow2', ['-o', 'cluster_size=512,refcount_bits=64'])]
    for name, opts in shapes:
        path = make_image(workdir, name, 4 * MiB, *opts)
        qemu_io('-f', 'qcow2', '-c', 'write -c -P 5 0 1M', '-c',
                'write -P 6 2M 1M', '-c', 'write -z 3M 64k', path)
        plain = json.loads(qemu_img('check', '--output=json',
                                    path).stdout)['allocated-clusters']
        d = daemon_factory()
        qmp = d.qmp
        add(qmp, 'q', path)
        qmp.execute('blockdev-snapshot-internal-sync', device='q', name='s')
        d.stop()
        check_clean(path)
        ref = os.path.join(str(workdir), 'ref-' + name)
        shutil.copyfile(path, ref)
        qemu_io('-f', 'qcow2', '-c', 'write -P 7 512k 1M', '-c',
                'discard 2M 512k', path)
        check_clean(path)
        work = os.path.join(str(workdir), 'w-' + name)
        shutil.copyfile(path, work)
        qemu_img('snapshot', '-a', 's', work)
        qemu_img('compare', work, ref)
        d = daemon_factory()
        qmp = d.qmp
        add(qmp, 'q', path)
        qmp.execute('blockdev-snapshot-delete-internal-sync', device='q',
                    name='s')
        d.stop()
        check_clean(path)
        assert snapshot_names(path) == []
        after = json.loads(qemu_img('check', '--output=json',
                                    path).stdout)['allocated-clusters']
        assert after <= plain + 1, (name, plain, after)


@pytest.mark.blockjobd_only('qsd 7.2 updates refcounts and COPIED flags in '
                            'place: a kill between them is a corruption')
@pytest.mark.parametrize('op', ['create', 'delete'])
@pytest.mark.timeout(300)
def test_kill_during_snapshot_leaves_old_or_new(daemon_factory, workdir, op):
    """SIGKILL at random points of a snapshot taken (or deleted) on a
    64 MiB image of 4 KiB clusters: qemu-img check finds neither a
    corruption nor a leak, and the image holds the old or the new state
    whole (the active bytes unchanged either way)."""
    size = 64 * MiB
    path = make_image(workdir, 'k.qcow2', size, '-o', 'cluster_size=4096')
    qemu_io('-f', 'qcow2', '-c', 'write -P 9 0 %d' % size, path)
    if op == 'delete':
        qemu_img('snapshot', '-c', 's', path)
        qemu_io('-f', 'qcow2', '-c', 'write -P 8 0 %d' % (size // 2), path)
    base = os.path.join(str(workdir), 'base.qcow2')
    shutil.copyfile(path, base)
    cmd = {'create': 'blockdev-snapshot-internal-sync',
           'delete': 'blockdev-snapshot-delete-internal-sync'}[op]

    def start():
        shutil.copyfile(base, path)
        d = daemon_factory()
        add(d.qmp, 'q', path)
        return d

    # How long the operation takes uninterrupted: the kills land within.
    d = start()
    t0 = time.monotonic()
    d.qmp.execute(cmd, device='q', name='s')
    span = time.monotonic() - t0
    d.stop()
    rnd = random.Random(op)
    outcomes = set()
    for _ in range(16):
        d = start()
        d.qmp.send({'execute': cmd,
                    'arguments': {'device': 'q', 'name': 's'}})
        time.sleep(rnd.uniform(0, span * 1.2))   # a random point, not an event
        d.send_signal(signal.SIGKILL)
        d.wait()
        d.check(expect_rc=-signal.SIGKILL)
        check_clean(path)
        qemu_img('compare', '-U', path, base)
        names = [n for _, n in snapshot_names(path)]
        assert names in ([], ['s'])
        outcomes.add(tuple(names))
        if names == ['s']:
            work = os.path.join(str(workdir), 'w.qcow2')
            shutil.copyfile(path, work)
            qemu_img('snapshot', '-a', 's', work)
            if op == 'create':
                qemu_img('compare', work, base)
            os.unlink(work)
    # (which states the kills found is timing: reported, not asserted)
    print('outcomes', sorted(outcomes))


def test_snapshots_while_a_client_writes(daemon, workdir, sockdir):
    """A client writes without pause (one write after the other) while
    snapshots are taken: each snapshot is the image after some prefix of
    the writes, and the active image holds them all."""
    pytest.importorskip('nbd')
    import threading
    size = 8 * MiB
    path = make_image(workdir, 'a.qcow2', size)
    qmp = daemon.qmp
    add(qmp, 'q', path)
    h = bjtest.nbd_export_open(daemon, sockdir)
    rnd = random.Random(7)
    done = threading.Event()
    progress = [0]

    def writer():
        n = 0
        buf = bytearray(size)
        while not done.is_set() or n < 50:
            bjtest.nbd_random_write(h, rnd, n, buf, size)
            n += 1
            progress[0] = n
        writer.final = buf
        writer.n = n

    t = threading.Thread(target=writer)
    t.start()
    for i in range(3):
        bjtest.wait_until(lambda: progress[0] >= 10 + 10 * i,
                          what='the client writing')
        qmp.execute('blockdev-snapshot-internal-sync', device='q',
                    name='w%d' % i)
    done.set()
    t.join(60)
    assert not t.is_alive()
    bjtest.nbd_export_close(daemon, h)
    daemon.stop()
    check_clean(path)
    assert [n for _, n in snapshot_names(path)] == ['w0', 'w1', 'w2']
    # replay the writes: each snapshot equals the image after a prefix
    replay = random.Random(7)
    state = bytearray(size)
    prefixes = []
    restored = {}
    for i in range(3):
        work = os.path.join(str(workdir), 'w%d.qcow2' % i)
        shutil.copyfile(path, work)
        qemu_img('snapshot', '-a', 'w%d' % i, work)
        raw = os.path.join(str(workdir), 'w%d.raw' % i)
        qemu_img('convert', '-O', 'raw', work, raw)
        with open(raw, 'rb') as f:
            restored[i] = f.read()
        os.unlink(work)
        os.unlink(raw)
    want = 0
    for n in range(writer.n + 1):
        while want < 3 and bytes(state) == restored[want]:
            prefixes.append(n)
            want += 1
        if n < writer.n:
            bjtest.nbd_random_write(_Sink(), replay, n, state, size)
    assert want == 3, 'snapshot %d matches no prefix of the writes' % want
    assert prefixes == sorted(prefixes)
    print('snapshots after writes', prefixes, 'of', writer.n)
    assert bytes(state) == bytes(writer.final)
    cur = os.path.join(str(workdir), 'cur.raw')
    with open(cur, 'wb') as f:
        f.write(state)
    qemu_img('compare', '-f', 'qcow2', '-F', 'raw', path, cur)


class _Sink:
    """Stands in for a libnbd handle when replaying the writes."""

    def pwrite(self, data, off):
        pass


def test_repeated_snapshots_reuse_space(daemon, workdir):
    """Each snapshot operation writes its new metadata in a free run when
    there is one: taking and deleting snapshots over and over does not
    make the image file grow without end."""
    path = make_image(workdir, 'a.qcow2', 64 * MiB, '-o',
                      'cluster_size=4096')
    qemu_io('-f', 'qcow2', '-c', 'write -P 1 0 16M', path)
    start = json.loads(qemu_img('check', '--output=json',
                                path).stdout)['image-end-offset']
    qmp = daemon.qmp
    add(qmp, 'q', path)
    for i in range(20):
        qmp.execute('blockdev-snapshot-internal-sync', device='q',
                    name='s%d' % i)
        qmp.execute('blockdev-snapshot-delete-internal-sync', device='q',
                    name='s%d' % i)
    qmp.execute('blockdev-del', node_name='q')
    report = check_clean(path)
    # one generation of metadata (L1, L2 tables, refcount structures) and
    # the room to write the next one beside it, at most
    print('image end', start, '->', report['image-end-offset'])
    assert report['image-end-offset'] <= start + MiB // 2


def test_refcount_overflow_refused(daemon, workdir):
    """refcount_bits=1 cannot count a second reference: qsd's error, and
    (unlike qsd 7.2, which leaks a cluster) the image is left as it was."""
    path = make_image(workdir, 'r1.qcow2', 1 * MiB, '-o', 'refcount_bits=1')
    qemu_io('-f', 'qcow2', '-c', 'write -P 3 0 64k', path)
    qmp = daemon.qmp
    add(qmp, 'r1', path)
    assert qerror(qmp, 'blockdev-snapshot-internal-sync', device='r1',
                  name='s') == \
        "Failed to create snapshot 's' on device 'r1': Invalid argument"
    nodes = {x['node-name']: x for x in qmp.execute('query-named-block-nodes')}
    assert 'snapshots' not in nodes['r1']['image']
    qmp.execute('blockdev-del', node_name='r1')
    if not bjtest.is_qsd():
        check_clean(path)
    assert snapshot_names(path) == []


@pytest.mark.blockjobd_only('qsd 7.2 aborts when an NBD client of an '
                            'export in an iothread hangs up '
                            '(nbd_blockdev_client_closed assertion)')
def test_node_in_an_iothread(daemon_factory, workdir):
    """A node an export runs in an iothread: the snapshot is taken and
    deleted there while the monitor waits, between client writes."""
    pytest.importorskip('nbd')
    path = make_image(workdir, 'a.qcow2', 4 * MiB)
    d = daemon_factory('--object', 'iothread,id=io0')
    qmp = d.qmp
    add(qmp, 'q', path)
    sock = d.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e',
                                     'node-name': 'q', 'writable': True,
                                     'iothread': 'io0'})
    h = bjtest.nbd_connect(sock, 'q')
    h.pwrite(b'x' * 65536, 0)
    qmp.execute('blockdev-snapshot-internal-sync', device='q', name='s')
    h.pwrite(b'y' * 65536, 0)
    qmp.execute('blockdev-snapshot-internal-sync', device='q', name='t')
    r = qmp.execute('blockdev-snapshot-delete-internal-sync', device='q',
                    name='s')
    assert (r['id'], r['name']) == ('1', 's')
    assert h.pread(65536, 0) == b'y' * 65536
    h.shutdown()
    qmp.execute('block-export-del', id='e')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='q')
    d.stop()
    check_clean(path)
    assert snapshot_names(path) == [('2', 't')]
    ref = os.path.join(str(workdir), 'ref.raw')
    with open(ref, 'wb') as f:
        f.write(b'y' * 65536)
        f.truncate(4 * MiB)
    qemu_img('compare', '-f', 'qcow2', '-F', 'raw', path, ref)


def test_nodes_of_a_running_job(daemon, workdir):
    """A backup's source sits under its filter and its target under the
    job: neither is a root node (qsd's words), and nothing changes."""
    src = make_image(workdir, 'a.qcow2', 16 * MiB)
    tgt = make_image(workdir, 't.qcow2', 16 * MiB)
    qemu_io('-f', 'qcow2', '-c', 'write 0 16M', src)
    qmp = daemon.qmp
    add(qmp, 'q', src)
    add(qmp, 't', tgt)
    qmp.execute('blockdev-backup', {'job-id': 'j', 'device': 'q',
                                    'target': 't', 'sync': 'full',
                                    'speed': 1024})
    for dev in ('q', 't'):
        assert qerror(qmp, 'blockdev-snapshot-internal-sync', device=dev,
                      name='s') == 'Need a root block node'
        assert qerror(qmp, 'blockdev-snapshot-delete-internal-sync',
                      device=dev, name='s') == 'Need a root block node'
    qmp.execute('block-job-cancel', device='j', force=True)
    qmp.wait_event('BLOCK_JOB_CANCELLED')
    qmp.execute('blockdev-del', node_name='t')
    qmp.execute('blockdev-del', node_name='q')
    assert snapshot_names(src) == [] and snapshot_names(tgt) == []


def _patch_snapshot_l1(path, l1_offset):
    """Points the first snapshot table entry's L1 table at l1_offset."""
    import struct
    with open(path, 'r+b') as f:
        f.seek(64)
        (table,) = struct.unpack('>Q', f.read(8))
        f.seek(table)
        f.write(struct.pack('>Q', l1_offset))


@pytest.mark.blockjobd_only('qsd 7.2 refuses to open such an image')
def test_hostile_snapshot_entry_changes_nothing(daemon, workdir):
    """A snapshot whose L1 table lies past the end of the file, or whose
    tree references clusters nothing counts: deleting it is refused and
    the image file is left byte for byte as it was."""
    qmp = daemon.qmp
    for i, target in enumerate(('past-end', 'uncounted')):
        path = make_image(workdir, '%s.qcow2' % target, 1 * MiB)
        qemu_io('-f', 'qcow2', '-c', 'write -P 1 0 64k', path)
        qemu_img('snapshot', '-c', 's', path)
        if target == 'past-end':
            _patch_snapshot_l1(path, 1 << 40)
        else:
            # an L1 table in a cluster nothing counts, naming an L2 table
            # in another one
            size = os.path.getsize(path)
            l1 = (size + 65535) // 65536 * 65536
            with open(path, 'r+b') as f:
                f.truncate(l1 + 2 * 65536)
                f.seek(l1)
                f.write((l1 + 65536).to_bytes(8, 'big'))
            _patch_snapshot_l1(path, l1)
        with open(path, 'rb') as f:
            before = f.read()
        node = 'h%d' % i
        add(qmp, node, path)
        desc = qerror(qmp, 'blockdev-snapshot-delete-internal-sync',
                      device=node, name='s')
        assert desc.startswith('Failed to remove snapshot from snapshot '
                               'list: '), desc
        nodes = {x['node-name']: x
                 for x in qmp.execute('query-named-block-nodes')}
        assert [s['name'] for s in nodes[node]['image']['snapshots']] == ['s']
        qmp.execute('blockdev-del', node_name=node)
        with open(path, 'rb') as f:
            assert f.read() == before
