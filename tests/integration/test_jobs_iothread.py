"""Jobs on nodes in iothreads, beyond the job tests' 'iothread' variant
(node_ctx, conftest.py): x-blockdev-set-iothread and its errors as
qemu-storage-daemon 7.2 words them, a target that cannot join the source's
iothread, blockdev-create on a node in an iothread, two backups in two
iothreads at once under NBD writers, and quit/SIGTERM with jobs running in
iothreads.
"""

import os
import threading

import pytest

from bjtest import QMPError, blockdev_add_image, qemu_img, qemu_io
from copyjob import Images, MiB, SIZE

IOTHREADS = ('--object', 'iothread,id=io0', '--object', 'iothread,id=io1')


def qmp_error(qmp, cmd, args):
    with pytest.raises(QMPError) as e:
        qmp.execute(cmd, args)
    return e.value.desc


def set_iothread(qmp, node, iothread, **extra):
    args = {'node-name': node, 'iothread': iothread}
    args.update(extra)
    return qmp.execute('x-blockdev-set-iothread', args)


@pytest.mark.timeout(60)
def test_set_iothread_errors(daemon_factory, workdir):
    """Words as qemu-storage-daemon 7.2 (observed); a node moves with the
    nodes connected to it, and back with iothread null."""
    imgs = Images(workdir)
    d = daemon_factory(*IOTHREADS)
    qmp = d.qmp
    imgs.add(qmp)
    assert qmp_error(qmp, 'x-blockdev-set-iothread',
                     {'node-name': 'nope', 'iothread': 'io0'}) == \
        "Failed to find node with node-name='nope'"
    assert qmp_error(qmp, 'x-blockdev-set-iothread',
                     {'node-name': 'src', 'iothread': 'iox'}) == \
        'Cannot find iothread iox'
    # A node under another moves with it, no force needed.
    file_node = [n['node-name'] for n in
                 qmp.execute('query-named-block-nodes', flat=True)
                 if n['drv'] == 'file' and n['file'] == imgs.tgt][0]
    assert set_iothread(qmp, file_node, 'io0') == {}
    # A node an export uses only with force.
    sock = d.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'src'})
    assert qmp_error(qmp, 'x-blockdev-set-iothread',
                     {'node-name': 'src', 'iothread': 'io0'}) == (
        'Node src is associated with a BlockBackend and could be in use '
        '(use force=true to override this check)')
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    assert set_iothread(qmp, 'src', 'io1') == {}
    assert set_iothread(qmp, 'src', None) == {}
    assert set_iothread(qmp, 'tgt', None) == {}
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')


@pytest.mark.timeout(60)
def test_target_in_a_fixed_iothread_is_refused(daemon_factory, workdir):
    """A target an export holds in another iothread cannot follow the
    source: the job is refused, with no job created."""
    imgs = Images(workdir)
    d = daemon_factory(*IOTHREADS)
    qmp = d.qmp
    imgs.add(qmp)
    set_iothread(qmp, 'src', 'io0')
    sock = d.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {
        'type': 'nbd', 'id': 'et', 'node-name': 'tgt', 'writable': True,
        'iothread': 'io1', 'fixed-iothread': True})
    for cmd, extra in (('blockdev-backup', {}), ('blockdev-mirror', {})):
        args = {'job-id': 'j', 'device': 'src', 'target': 'tgt',
                'sync': 'full'}
        args.update(extra)
        assert qmp_error(qmp, cmd, args) == \
            'Cannot change iothread of active block backend', cmd
    assert qmp.execute('query-jobs') == []
    qmp.execute('block-export-del', id='et')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')


@pytest.mark.timeout(60)
@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 dies (monitor closed) '
                            'on blockdev-create on a node in an iothread')
def test_create_on_an_iothread_node(daemon_factory, workdir):
    """blockdev-create writes a qcow2 image through a file node that lives
    in an iothread: the job ends as in the main loop and the image is one
    qemu-img checks clean."""
    d = daemon_factory(*IOTHREADS)
    qmp = d.qmp
    img = os.path.join(str(workdir), 'new.qcow2')
    qemu_img('create', '-q', '-f', 'raw', img, '0')
    qmp.execute('blockdev-add', {'driver': 'file', 'node-name': 'newf',
                                 'filename': img})
    set_iothread(qmp, 'newf', 'io1')
    qmp.execute('blockdev-create', {
        'job-id': 'cr', 'options': {'driver': 'qcow2', 'file': 'newf',
                                    'size': 4 * MiB}})
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=30, match={
        'data': {'id': 'cr', 'status': 'concluded'}})
    job = qmp.execute('query-jobs')[0]
    assert 'error' not in job, job
    assert (job['current-progress'], job['total-progress']) == (1, 1)
    qmp.execute('job-dismiss', id='cr')
    assert qmp.execute('query-jobs') == []
    # The node stayed where it was: back to the main loop, and a qcow2
    # node opens over it.
    assert set_iothread(qmp, 'newf', None) == {}
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'new',
                                 'file': 'newf'})
    qmp.execute('blockdev-del', node_name='new')
    qmp.execute('blockdev-del', node_name='newf')
    qemu_img('check', '-q', img)
    info = qemu_img('info', '--output=json', img).stdout
    assert '"virtual-size": 4194304' in info and '"qcow2"' in info


def nbd_writer(sock, name, stop, errors, count, pattern):
    """Writes pattern all over the disk until told to stop."""
    import nbd
    h = nbd.NBD()
    try:
        h.set_export_name(name)
        h.connect_unix(sock)
        buf = bytes([pattern]) * 65536
        off = 0
        while not stop.is_set():
            h.pwrite(buf, off)
            count[0] += 1
            off = (off + 7 * 65536 + 4096) % (SIZE - 65536)
        h.flush()
        h.shutdown()
    except Exception as e:       # reported by the test
        errors.append(e)


@pytest.mark.timeout(180)
@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 aborts when a client '
                            'of an iothread export disconnects')
def test_two_backups_in_two_iothreads(daemon_factory, workdir):
    """Two disks, each in its own iothread and written all the time by an
    NBD client, each backed up at once: both targets are their source as it
    was when its job started."""
    pytest.importorskip('nbd')
    d = daemon_factory(*IOTHREADS)
    qmp = d.qmp
    sock = d.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    disks = []
    for i, io in enumerate(('io0', 'io1')):
        sub = workdir / ('d%d' % i)
        sub.mkdir()
        imgs = Images(sub, keep_ref=True)
        src, tgt = 'src%d' % i, 'tgt%d' % i
        blockdev_add_image(qmp, 'raw', src, imgs.src)
        blockdev_add_image(qmp, 'qcow2', tgt, imgs.tgt)
        qmp.execute('block-export-add', {
            'type': 'nbd', 'id': 'e%d' % i, 'node-name': src,
            'name': src, 'writable': True, 'iothread': io})
        disks.append((imgs, src, tgt))
    stop, errors, counts, threads = threading.Event(), [], [], []
    # Throttled (64 s for a disk) until both writers wrote: the jobs are
    # surely still running then, however slow the build.
    for i, (imgs, src, tgt) in enumerate(disks):
        qmp.execute('blockdev-backup', {'job-id': 'b%d' % i, 'device': src,
                                        'target': tgt, 'sync': 'full',
                                        'speed': MiB})
    try:
        for i, (imgs, src, tgt) in enumerate(disks):
            counts.append([0])
            t = threading.Thread(target=nbd_writer, args=(
                sock, src, stop, errors, counts[i], 0x61 + i))
            t.start()
            threads.append(t)
        from bjtest import wait_until
        wait_until(lambda: min(c[0] for c in counts) > 100 or errors,
                   timeout=60, what='writes during both backups')
        for i in range(2):
            qmp.execute('block-job-set-speed', device='b%d' % i, speed=0)
        done = set()
        while len(done) < 2:
            ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=120)
            assert 'error' not in ev['data'], ev
            done.add(ev['data']['device'])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    for i, (imgs, src, tgt) in enumerate(disks):
        qmp.execute('block-export-del', id='e%d' % i)
        qmp.wait_event('BLOCK_EXPORT_DELETED')
        qmp.execute('blockdev-del', node_name=tgt)
        qmp.execute('blockdev-del', node_name=src)
        imgs.check()
        imgs.compare_ref()
        qemu_io('-f', 'raw', '-c', 'read -P %d 0 64k' % (0x61 + i), imgs.src)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('how', ['quit', 'SIGTERM'])
def test_shutdown_with_jobs_in_iothreads(daemon_factory, workdir, how):
    """A throttled backup in io0 and a READY mirror in io1 when the daemon
    is told to stop: both jobs end, the daemon exits cleanly (sanitizers
    quiet) and every image checks clean."""
    d = daemon_factory(*IOTHREADS)
    qmp = d.qmp
    disks = []
    for i, io in enumerate(('io0', 'io1')):
        sub = workdir / ('d%d' % i)
        sub.mkdir()
        imgs = Images(sub)
        blockdev_add_image(qmp, 'raw', 'src%d' % i, imgs.src)
        blockdev_add_image(qmp, 'qcow2', 'tgt%d' % i, imgs.tgt)
        set_iothread(qmp, 'src%d' % i, io)
        disks.append(imgs)
    qmp.execute('blockdev-backup', {'job-id': 'b0', 'device': 'src0',
                                    'target': 'tgt0', 'sync': 'full',
                                    'speed': MiB})
    qmp.execute('blockdev-mirror', {'job-id': 'm1', 'device': 'src1',
                                    'target': 'tgt1', 'sync': 'full'})
    qmp.wait_event('BLOCK_JOB_READY', timeout=60)
    assert sorted(j['id'] for j in qmp.execute('query-jobs')) == ['b0', 'm1']
    if how == 'quit':
        qmp.execute('quit')
    else:
        d.send_signal()
    d.wait(timeout=60)
    d.check()
    for imgs in disks:
        imgs.check()


# ---- x-blockdev-set-iothread with NBD clients connected ----

def striped_writer(h, stop, shadow, count, errors, slots=8):
    """Keeps `slots` writes in flight on h, each slot writing one after the
    other through its own stripe of the disk (so no two writes in flight
    overlap), write n of 4 KiB * (1 + n % 16) of byte 1 + n % 255, until
    stop is set; every completed write goes into shadow.  Then flushes."""
    import nbd
    stripe = len(shadow) // slots
    pos = [0] * slots
    inflight = {}
    n = 0

    def issue(s):
        nonlocal n
        length = 4096 * (1 + n % 16)
        if pos[s] + length > stripe:
            pos[s] = 0
        off = s * stripe + pos[s]
        data = bytearray([1 + n % 255]) * length
        buf = nbd.Buffer.from_bytearray(data)
        inflight[s] = (h.aio_pwrite(buf, off), off, data, buf)
        pos[s] += length
        n += 1

    try:
        for s in range(slots):
            issue(s)
        while inflight:
            h.poll(-1)
            for s, (cookie, off, data, _) in list(inflight.items()):
                if h.aio_command_completed(cookie):
                    shadow[off:off + len(data)] = data
                    count[0] += 1
                    del inflight[s]
                    if not stop.is_set():
                        issue(s)
        h.flush()
        h.shutdown()
    except Exception as e:       # reported by the test
        errors.append(e)


def psk_client(sock, name, pskdir):
    import nbd
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_psk_file(os.path.join(pskdir, 'keys.psk'))
    h.set_tls_username('alice')
    h.set_export_name(name)
    h.connect_unix(sock)
    assert h.get_tls_negotiated()
    return h


@pytest.mark.timeout(120)
@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 aborts at random '
                            'moving an export whose clients are busy '
                            '(nbd/server.c blk_aio_attached: Assertion '
                            '`client->recv_coroutine == NULL\' failed)')
@pytest.mark.parametrize('tls', [False, True], ids=['plain', 'tls'])
def test_move_exported_node_with_writers(daemon_factory, workdir, tls):
    """A qcow2 node exported (no fixed iothread) to two clients that keep 8
    writes in flight each, moved main -> io0 -> io1 -> main twice, by the
    format node (force) and by its file node (no force needed, as qsd):
    no write fails, and the image is exactly what the clients wrote."""
    nbd = pytest.importorskip('nbd')
    import tlscerts
    size = 4 * MiB
    img = str(workdir / 'disk.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', img, str(size))
    extra = list(IOTHREADS)
    if tls:
        pskdir = tlscerts.make_psk_dir(workdir, 'psk', 'alice')
        extra += ['--object',
                  'tls-creds-psk,id=tls0,dir=%s,endpoint=server' % pskdir]
    d = daemon_factory(*extra)
    qmp = d.qmp
    sock = d.socket_path('nbd.sock')
    start = {'addr': {'type': 'unix', 'data': {'path': sock}}}
    if tls:
        start['tls-creds'] = 'tls0'
    qmp.execute('nbd-server-start', start)
    qmp.execute('blockdev-add', {'driver': 'file', 'node-name': 'f0',
                                 'filename': img})
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'disk',
                                 'file': 'f0'})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'disk', 'writable': True})
    # Two clients on two halves of the disk, so that the image is defined.
    shadow = bytearray(size)
    halves = [memoryview(shadow)[:size // 2], memoryview(shadow)[size // 2:]]
    stop, errors, counts, threads, handles = (threading.Event(), [], [], [],
                                              [])
    for i in range(2):
        h = psk_client(sock, 'disk', pskdir) if tls else \
            nbd_connect_plain(sock, 'disk')
        handles.append(h)
    try:
        for i, h in enumerate(handles):
            counts.append([0])
            t = threading.Thread(target=offset_writer, args=(
                h, i * (size // 2), stop, halves[i], counts[i], errors))
            t.start()
            threads.append(t)
        assert qmp_error(qmp, 'x-blockdev-set-iothread',
                         {'node-name': 'disk', 'iothread': 'io0'}) == (
            'Node disk is associated with a BlockBackend and could be in '
            'use (use force=true to override this check)')
        moves = [('disk', 'io0', True), ('f0', 'io1', False),
                 ('disk', None, True)] * 2
        for node, io, force in moves:
            before = min(c[0] for c in counts)
            extra = {'force': True} if force else {}
            assert set_iothread(qmp, node, io, **extra) == {}
            from bjtest import wait_until
            wait_until(lambda: min(c[0] for c in counts) >= before + 40 or
                       errors, timeout=60, what='writes after a move')
            assert not errors, errors
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert min(c[0] for c in counts) > 240
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='disk')
    qmp.execute('blockdev-del', node_name='f0')
    ref = str(workdir / 'expect.raw')
    with open(ref, 'wb') as f:
        f.write(shadow)
    qemu_img('check', '-q', img)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', ref, img)


def nbd_connect_plain(sock, name):
    import nbd
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_unix(sock)
    return h


def offset_writer(h, base, stop, shadow, count, errors):
    """striped_writer on the part of the disk that starts at base and that
    shadow (a memoryview) stands for."""
    class Offset:
        def __init__(self, h):
            self.h = h

        def aio_pwrite(self, buf, off):
            return self.h.aio_pwrite(buf, base + off)

        def __getattr__(self, name):
            return getattr(self.h, name)
    striped_writer(Offset(h), stop, shadow, count, errors)


@pytest.mark.timeout(60)
def test_fixed_export_pins_its_node(daemon_factory, workdir):
    """fixed-iothread keeps the export's node where it is, as in qsd 7.2
    (with force, and through a node below it); an export without it lets
    the node move, and a node without users moves freely."""
    size = 4 * MiB
    img = str(workdir / 'disk.raw')
    qemu_img('create', '-q', '-f', 'raw', img, str(size))
    d = daemon_factory(*IOTHREADS)
    qmp = d.qmp
    sock = d.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('blockdev-add', {'driver': 'file', 'node-name': 'f0',
                                 'filename': img})
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r0',
                                 'file': 'f0'})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'r0', 'writable': True})
    assert set_iothread(qmp, 'r0', 'io0', force=True) == {}
    assert set_iothread(qmp, 'f0', 'io1') == {}
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e1',
                                     'node-name': 'r0', 'name': 'x1',
                                     'iothread': 'io1',
                                     'fixed-iothread': True})
    pinned = 'Cannot change iothread of active block backend'
    for node, io, force in (('r0', 'io0', True), ('r0', None, True),
                            ('f0', 'io0', False), ('f0', None, True)):
        args = {'node-name': node, 'iothread': io}
        if force:
            args['force'] = True
        assert qmp_error(qmp, 'x-blockdev-set-iothread', args) == pinned, \
            args
    # Nothing moved: the node still is in io1 (a move there is no change).
    assert set_iothread(qmp, 'f0', 'io1') == {}
    # block-export-add with an iothread moves the node the same way: not
    # away from a fixed export, and without fixed-iothread the export then
    # stays where the node is.
    assert qmp_error(qmp, 'block-export-add', {
        'type': 'nbd', 'id': 'e2', 'node-name': 'f0', 'name': 'x2',
        'iothread': 'io0', 'fixed-iothread': True}) == pinned
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e2',
                                     'node-name': 'f0', 'name': 'x2',
                                     'iothread': 'io0'})
    assert set_iothread(qmp, 'f0', 'io1', force=True) == {}
    qmp.execute('block-export-del', id='e2')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('block-export-del', id='e1')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    assert set_iothread(qmp, 'r0', None, force=True) == {}
    # An export of a node below another takes the node above along.
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e3',
                                     'node-name': 'f0', 'name': 'x3',
                                     'iothread': 'io1',
                                     'fixed-iothread': True})
    assert set_iothread(qmp, 'r0', 'io1', force=True) == {}
    assert qmp_error(qmp, 'x-blockdev-set-iothread',
                     {'node-name': 'r0', 'iothread': None,
                      'force': True}) == pinned
    qmp.execute('block-export-del', id='e3')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='r0')
    qmp.execute('blockdev-del', node_name='f0')


# ---- blockdev-add of a node whose child lives in an iothread ----

def exported_base(qmp, workdir, sock):
    """base.raw (1 MiB of 0x5a, then zeroes) as raw node 'rb' over file
    node 'fb', exported read-only as 'eb' with fixed-iothread io0."""
    base = str(workdir / 'base.raw')
    qemu_img('create', '-q', '-f', 'raw', base, str(4 * MiB))
    qemu_io('-f', 'raw', '-c', 'write -P 0x5a 0 1M', base)
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('blockdev-add', {'driver': 'file', 'node-name': 'fb',
                                 'filename': base})
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'rb',
                                 'file': 'fb'})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'eb',
                                     'node-name': 'rb', 'iothread': 'io0',
                                     'fixed-iothread': True})
    return base


@pytest.mark.timeout(60)
def test_blockdev_add_over_a_child_in_an_iothread(daemon_factory, workdir):
    """As qsd 7.2: a filter over a node an export pins in io0, and a qcow2
    overlay (its file node in the main loop) whose backing is that node,
    join io0; a node whose children are pinned in two different contexts
    is refused with qsd's words, and the refusal changes nothing."""
    d = daemon_factory(*IOTHREADS)
    qmp = d.qmp
    sock = d.socket_path('nbd.sock')
    exported_base(qmp, workdir, sock)
    pinned = 'Cannot change iothread of active block backend'

    qmp.execute('blockdev-add', {'driver': 'copy-on-read',
                                 'node-name': 'cor', 'file': 'rb'})
    assert set_iothread(qmp, 'cor', 'io0') == {}     # where it is
    assert qmp_error(qmp, 'x-blockdev-set-iothread',
                     {'node-name': 'cor', 'iothread': None}) == pinned
    qmp.execute('blockdev-del', node_name='cor')

    top = str(workdir / 'top.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-b', str(workdir / 'base.raw'),
             '-F', 'raw', top)
    qmp.execute('blockdev-add', {'driver': 'file', 'node-name': 'ft',
                                 'filename': top})
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                 'file': 'ft', 'backing': 'rb'})
    # The overlay's file node went along into io0.
    assert set_iothread(qmp, 'ft', 'io0') == {}
    assert qmp_error(qmp, 'x-blockdev-set-iothread',
                     {'node-name': 'ft', 'iothread': None}) == pinned

    # Children pinned in two contexts: the file by a fixed export in the
    # main loop, the backing by the one in io0.
    img2 = str(workdir / 'two.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', img2, str(4 * MiB))
    qmp.execute('blockdev-add', {'driver': 'file', 'node-name': 'f2',
                                 'filename': img2})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e2',
                                     'node-name': 'f2', 'name': 'f2',
                                     'fixed-iothread': True})
    assert qmp_error(qmp, 'blockdev-add', {
        'driver': 'qcow2', 'node-name': 'q2', 'file': 'f2', 'backing': 'rb',
        'read-only': True}) == pinned
    assert 'q2' not in [n['node-name'] for n in
                        qmp.execute('query-named-block-nodes')]
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'q2',
                                 'file': 'f2', 'backing': None,
                                 'read-only': True})
    assert set_iothread(qmp, 'q2', None) == {}       # still in the main loop
    qmp.execute('blockdev-del', node_name='q2')
    qmp.execute('block-export-del', id='e2')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='f2')

    qmp.execute('blockdev-del', node_name='top')
    assert set_iothread(qmp, 'ft', None) == {}       # free again
    qmp.execute('blockdev-del', node_name='ft')
    qmp.execute('block-export-del', id='eb')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='rb')
    qmp.execute('blockdev-del', node_name='fb')


@pytest.mark.timeout(60)
@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 dies ("qemu_mutex_'
                            'unlock_impl: Operation not permitted") adding '
                            'a node over one in an iothread that could move')
@pytest.mark.parametrize('driver', ['throttle', 'copy-on-read', 'qcow2'])
def test_blockdev_add_over_a_served_iothread_node(daemon_factory, workdir,
                                                  driver):
    """A node an export serves from io0 while a client writes to it: a
    filter over it (or a qcow2 overlay backed by it) opens in io0 and
    reads what the client wrote, the client never fails, and the image
    is what it wrote."""
    nbd = pytest.importorskip('nbd')
    d = daemon_factory(*IOTHREADS)
    qmp = d.qmp
    sock = d.socket_path('nbd.sock')
    size = 4 * MiB
    img = str(workdir / 'disk.raw')
    qemu_img('create', '-q', '-f', 'raw', img, str(size))
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('blockdev-add', {'driver': 'file', 'node-name': 'f0',
                                 'filename': img})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'f0', 'writable': True,
                                     'iothread': 'io0'})
    if driver == 'throttle':
        qmp.execute('object-add', {'qom-type': 'throttle-group',
                                   'id': 'tg'})
    h = nbd_connect_plain(sock, 'f0')
    shadow = bytearray(size)
    stop, errors, count = threading.Event(), [], [0]
    t = threading.Thread(target=striped_writer,
                         args=(h, stop, shadow, count, errors))
    t.start()
    try:
        from bjtest import wait_until
        wait_until(lambda: count[0] > 50 or errors, what='writes')
        args = {'driver': driver, 'node-name': 'top'}
        if driver == 'qcow2':
            ov = str(workdir / 'ov.qcow2')
            qemu_img('create', '-q', '-f', 'qcow2', ov, str(size))
            args.update(file={'driver': 'file', 'filename': ov},
                        backing='f0', **{'read-only': True})
        else:
            args['file'] = 'f0'
            if driver == 'throttle':
                args['throttle-group'] = 'tg'
        qmp.execute('blockdev-add', args)
        # It lives in io0 with its child: no move happens.
        assert set_iothread(qmp, 'top', 'io0') == {}
        before = count[0]
        wait_until(lambda: count[0] > before + 50 or errors,
                   what='writes after blockdev-add')
        qmp.execute('block-export-add', {'type': 'nbd', 'id': 'et',
                                         'node-name': 'top', 'name': 'top'})
        r = nbd_connect_plain(sock, 'top')
        assert r.pread(65536, 0) is not None
        r.shutdown()
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    # Read through the new node once the writer is done: what it wrote.
    r = nbd_connect_plain(sock, 'top')
    assert r.pread(size, 0) == bytes(shadow)
    r.shutdown()
    qmp.execute('block-export-del', id='et')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='top')
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='f0')
    ref = str(workdir / 'expect.raw')
    with open(ref, 'wb') as f:
        f.write(shadow)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', ref, img)


# ---- x-blockdev-set-iothread with a job running ----

def job_statuses(qmp, jid):
    return [e['data']['status'] for e in qmp.get_events('JOB_STATUS_CHANGE')
            if e['data']['id'] == jid]


BUSY_CLIENTS_ABORT_QSD = pytest.mark.blockjobd_only(
    'qemu-storage-daemon 7.2 aborts at random moving an export whose '
    'clients are busy (nbd/server.c blk_aio_attached: Assertion '
    '`client->recv_coroutine == NULL\' failed)')


@pytest.mark.timeout(180)
@pytest.mark.parametrize('job,writer', [
    ('backup', False), ('mirror', False),
    pytest.param('backup', True, marks=BUSY_CLIENTS_ABORT_QSD),
    pytest.param('mirror', True, marks=BUSY_CLIENTS_ABORT_QSD)],
    ids=['backup', 'mirror', 'backup-nbd-writer', 'mirror-nbd-writer'])
def test_move_nodes_under_a_running_job(daemon_factory, workdir, job,
                                        writer):
    """As qsd 7.2 allows: a throttled backup or mirror (whose source an
    NBD client writes the whole time, with writer) moves with its nodes
    main -> io0 -> io1 -> main (the job pauses for each move, with qsd's
    events, and runs on in the new context), a mirror once more io1 ->
    main when READY.  A backup's target is the source as it was at the
    start, a mirror's is the source at the end, and the source is exactly
    what the client wrote."""
    from bjtest import wait_until
    imgs = Images(workdir, keep_ref=True)
    with open(imgs.src, 'rb') as f:
        shadow = bytearray(f.read())
    d = daemon_factory(*IOTHREADS)
    qmp = d.qmp
    imgs.add(qmp)
    stop, errors, count = threading.Event(), [], [0]
    cmd = 'blockdev-backup' if job == 'backup' else 'blockdev-mirror'
    if writer:
        pytest.importorskip('nbd')
        sock = d.socket_path('nbd.sock')
        qmp.execute('nbd-server-start',
                    addr={'type': 'unix', 'data': {'path': sock}})
        qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                         'node-name': 'src',
                                         'writable': True})
        h = nbd_connect_plain(sock, 'src')
    # The writer starts once the job runs: a backup's target is the source
    # as it was then.
    qmp.execute(cmd, {'job-id': 'j', 'device': 'src', 'target': 'tgt',
                      'sync': 'full', 'speed': 4 * MiB})
    if writer:
        t = threading.Thread(target=striped_writer,
                             args=(h, stop, shadow, count, errors))
        t.start()
    else:
        t = None
        count[0] = 1 << 30   # no writes to wait for

    try:
        for io in ('io0', 'io1', None):
            before, progress = count[0], \
                qmp.execute('query-jobs')[0]['current-progress']
            # Without an export the source moves without force, as in qsd.
            extra = {'force': True} if writer else {}
            assert set_iothread(qmp, 'src', io, **extra) == {}
            wait_until(lambda: count[0] > before + 40 or errors or
                       not writer, what='writes after a move')
            wait_until(lambda: qmp.execute('query-jobs')[0]
                       ['current-progress'] > progress, timeout=60,
                       what='job progress after a move')
            assert not errors, errors
        # The target moved with the source: the whole tree, by the target.
        if job == 'backup':
            assert set_iothread(qmp, 'tgt', 'io0') == {}
        else:
            assert qmp_error(qmp, 'x-blockdev-set-iothread',
                             {'node-name': 'tgt', 'iothread': 'io0'}) == (
                'Node tgt is associated with a BlockBackend and could be '
                'in use (use force=true to override this check)')
            assert set_iothread(qmp, 'tgt', 'io0', force=True) == {}
        qmp.execute('block-job-set-speed', device='j', speed=0)
        if job == 'mirror':
            qmp.wait_event('BLOCK_JOB_READY', timeout=60)
            # Back to the main loop in the end: qsd 7.2 aborts when a
            # client of an export in an iothread hangs up.
            for io in ('io1', None):
                assert set_iothread(qmp, 'src', io, force=True) == {}
                before = count[0]
                wait_until(lambda: count[0] > before + 40 or errors or
                           not writer, what='writes after a move in READY')
    finally:
        stop.set()
        if t:
            t.join()
    assert not errors, errors
    if job == 'mirror':
        qmp.execute('block-job-complete', device='j')
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=120)
    assert 'error' not in ev['data'], ev
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=30,
                   match={'data': {'id': 'j', 'status': 'null'}})
    statuses = job_statuses(qmp, 'j') + ['null']
    if writer:
        qmp.execute('block-export-del', id='e0')
        qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='tgt')
    qmp.execute('blockdev-del', node_name='src')
    imgs.check()
    ref = str(workdir / 'expect.raw')
    with open(ref, 'wb') as f:
        f.write(shadow)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', ref, imgs.src)
    if job == 'backup':
        imgs.compare_ref()
    else:
        imgs.compare()
    # One pause per move, each followed by running again (standby, then
    # ready again, once READY), as in qsd; a backup also pauses once as
    # it starts (inserting its filter), as in qsd 7.2.
    pauses = 0
    for i, st in enumerate(statuses):
        if st in ('paused', 'standby'):
            pauses += 1
            assert statuses[i + 1] == ('running' if st == 'paused'
                                       else 'ready'), statuses
    assert pauses == (5 if job == 'backup' else 6), statuses
    if job == 'mirror':
        assert statuses.count('ready') >= 3, statuses
    assert statuses[:2] == ['created', 'running'], statuses
    assert statuses[-4:] == ['waiting', 'pending', 'concluded', 'null'], \
        statuses
