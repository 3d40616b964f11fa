"""driver=nbd: remote NBD exports (qemu-nbd, nbdkit, qemu-storage-daemon,
another blockjobd) opened as nodes: data round-trips, block status,
block-size constraints, use as job target, backing file and export, and
qsd's errors for bad options."""

import json
import os

import pytest

from bjtest import (blockdev_add_error, is_qsd, nbd_export, qemu_img,
                    qemu_io, wait_until)
from remote import nbd_opts, unexport

MiB = 1 << 20


def raw_image(workdir, name, size='16M', writes=()):
    path = os.path.join(str(workdir), name)
    qemu_img('create', '-q', '-f', 'raw', path, size)
    for w in writes:
        qemu_io('-f', 'raw', '-c', w, path)
    return path


def test_unix_read_write_roundtrip(daemon, remote, workdir):
    img = raw_image(workdir, 'r.raw', writes=['write -P 0x11 0 1M'])
    r = remote.qemu_nbd(img)
    qmp = daemon.qmp
    qmp.execute('blockdev-add', nbd_opts('n', r))
    sock = nbd_export(daemon, 'n')
    uri = 'nbd+unix:///n?socket=%s' % sock
    qemu_io('-f', 'raw', '-c', 'read -P 0x11 0 1M', '-c', 'read -P 0 1M 15M',
            '-c', 'write -P 0x22 2M 3M', '-c', 'write -z 4M 64k',
            '-c', 'discard 8M 1M', '-c', 'flush', uri)
    qemu_io('-f', 'raw', '-c', 'read -P 0x22 2M 2M', '-c',
            'read -P 0 4M 64k', '-c', 'read -P 0x22 4160k 960k', uri)
    unexport(qmp)
    qmp.execute('blockdev-del', node_name='n')
    ref = raw_image(workdir, 'ref.raw', writes=[
        'write -P 0x11 0 1M', 'write -P 0x22 2M 3M', 'write -z 4M 64k'])
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', ref, img)


def node_names(qmp):
    return sorted(n['node-name'] for n in qmp.execute('query-named-block-nodes'))


def test_bad_options_refused_with_qsd_texts(daemon, remote, workdir, sockdir):
    img = raw_image(workdir, 'r.raw')
    r = remote.qemu_nbd(img)
    ro = remote.qemu_nbd(img, export='ro', extra=['-r'])
    qmp = daemon.qmp
    before = node_names(qmp)
    missing = os.path.join(str(sockdir), 'nope.sock')
    port = remote_free_port()
    cases = [
        ({'server': {'type': 'unix', 'path': missing}},
         "Failed to connect to '%s': No such file or directory" % missing),
        ({'server': {'type': 'inet', 'host': '127.0.0.1', 'port': port}},
         "Failed to connect to '127.0.0.1:%s': Connection refused" % port),
        ({'export': 'nope'}, 'Requested export not available'),
        ({'server': dict(ro.addr), 'export': 'ro'},
         'Could not open image: Permission denied'),
        ({'tls-creds': 'x'}, "No TLS credentials with id 'x'"),
        ({'reconnect-delay': -1},
         "Parameter 'reconnect-delay' expects uint32_t"),
        ({'open-timeout': 1 << 32},
         "Parameter 'open-timeout' expects uint32_t"),
        ({'server': {'type': 'unix'}}, "Parameter 'server.path' is missing"),
        ({'server': {'type': 'inet', 'host': '127.0.0.1', 'port': 1}},
         "Invalid parameter type for 'server.port', expected: string"),
        ({'x-dirty-bitmap': 'b'}, 'Could not open image: Invalid argument'),
        ({'foo': 1}, "Parameter 'foo' is unexpected"),
    ]
    for extra, text in cases:
        opts = nbd_opts('n', r)
        opts.update(extra)
        assert blockdev_add_error(qmp, opts) == text, extra
    opts = nbd_opts('n', r)
    del opts['server']
    assert blockdev_add_error(qmp, opts) == "Parameter 'server' is missing"
    assert node_names(qmp) == before
    # The read-only export opens read-only; the good one still opens.
    qmp.execute('blockdev-add', nbd_opts('ro', ro, export='ro',
                                         **{'read-only': True}))
    qmp.execute('blockdev-add', nbd_opts('n', r))
    nodes = {n['node-name']: n for n in qmp.execute('query-named-block-nodes')}
    assert nodes['ro']['ro'] is True
    assert nodes['n']['ro'] is False
    assert nodes['n']['file'] == \
        'nbd+unix:///exp?socket=%s' % r.addr['path']
    assert nodes['n']['image']['virtual-size'] == 16 * MiB
    qmp.execute('blockdev-del', node_name='ro')
    qmp.execute('blockdev-del', node_name='n')


def remote_free_port():
    from remote import free_port
    return str(free_port())


@pytest.mark.parametrize('peer', ['qemu-nbd', 'qsd', 'blockjobd'])
def test_tcp_peers_roundtrip(daemon, daemon_factory, remote, workdir, peer):
    img = raw_image(workdir, 'r.raw', writes=['write -P 0x33 1M 1M'])
    port = remote_free_port()
    if peer == 'qemu-nbd':
        r = remote.qemu_nbd(img, tcp=True)
        addr = r.addr
    else:
        binary = 'qemu-storage-daemon' if peer == 'qsd' else None
        peerd = daemon_factory(
            '--blockdev', 'driver=file,node-name=f,filename=%s' % img,
            '--blockdev', 'driver=raw,node-name=p,file=f',
            '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,'
            'addr.port=%s' % port,
            '--export', 'type=nbd,id=x,node-name=p,name=exp,writable=on',
            start=False)
        if binary:
            import shutil
            peerd.binary = shutil.which(binary)
        peerd.start()
        addr = {'type': 'inet', 'host': '127.0.0.1', 'port': port}
    qmp = daemon.qmp
    qmp.execute('blockdev-add', {'driver': 'nbd', 'node-name': 'n',
                                 'server': addr, 'export': 'exp'})
    sock = nbd_export(daemon, 'n')
    uri = 'nbd+unix:///n?socket=%s' % sock
    qemu_io('-f', 'raw', '-c', 'read -P 0x33 1M 1M', '-c',
            'write -P 0x44 4M 5M', '-c', 'write -z 5M 1M', '-c', 'flush', uri)
    unexport(qmp)
    qmp.execute('blockdev-del', node_name='n')
    ref = raw_image(workdir, 'ref.raw', writes=[
        'write -P 0x33 1M 1M', 'write -P 0x44 4M 5M', 'write -z 5M 1M'])
    if peer != 'qemu-nbd':
        peerd.qmp.execute('quit')
        peerd.wait(30)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', ref, img)


def test_block_size_constraints_honoured(daemon, remote):
    # nbdkit fails every request that breaks what it advertised.
    r = remote.nbdkit(['memory', '16M', 'blocksize-minimum=4096',
                       'blocksize-preferred=65536',
                       'blocksize-maximum=262144',
                       'blocksize-error-policy=error'],
                      filters=['blocksize-policy'])
    qmp = daemon.qmp
    qmp.execute('blockdev-add', nbd_opts('n', r))
    sock = nbd_export(daemon, 'n')
    uri = 'nbd+unix:///n?socket=%s' % sock
    # Unaligned and larger than the maximum: we align and split.
    qemu_io('-f', 'raw', '-c', 'write -P 0x55 100 1000', '-c',
            'write -P 0x66 1M 3M', '-c', 'read -P 0x55 100 1000', '-c',
            'read -P 0 0 100', '-c', 'read -P 0 1100 3000', '-c',
            'read -P 0x66 1M 3M', '-c', 'read 0 16M', uri)
    unexport(qmp)
    qmp.execute('blockdev-del', node_name='n')


SPARSE_WRITES = ['write -P 0x11 0 2M', 'write -P 0x22 40M 1M',
                 'write -P 0x33 63M 1M']


def data_extents(path, fmt='raw'):
    """qemu-img map's data ranges of an image (start, length)."""
    out = qemu_img('map', '--output=json', '-f', fmt, path).stdout
    return [(e['start'], e['length']) for e in json.loads(out) if e['data']]


def allocated_bytes(path):
    return os.stat(path).st_blocks * 512


def add_source(qmp, path, node='src'):
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': node,
                                 'file': {'driver': 'file',
                                          'filename': path}})


def test_mirror_sparse_disk_into_remote_stays_sparse(daemon, remote, workdir):
    src = raw_image(workdir, 's.raw', size='64M', writes=SPARSE_WRITES)
    dst = raw_image(workdir, 'd.raw', size='64M')
    r = remote.qemu_nbd(dst)
    qmp = daemon.qmp
    add_source(qmp, src)
    # discard=unmap (as libvirt sets it): zeroes may leave holes.
    qmp.execute('blockdev-add', nbd_opts('tgt', r, discard='unmap'))
    qmp.execute('blockdev-mirror', {'job-id': 'm', 'device': 'src',
                                    'target': 'tgt', 'sync': 'full'})
    qmp.wait_event('BLOCK_JOB_READY', match={'data': {'device': 'm'}})
    qmp.execute('block-job-complete', device='m')
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED')
    assert 'error' not in ev['data']
    # Block status through the remote, while it is open: the same map.
    sock = nbd_export(daemon, 'tgt')
    remote_map = data_extents('nbd+unix:///tgt?socket=%s' % sock)
    unexport(qmp)
    qmp.execute('blockdev-del', node_name='src')
    qmp.execute('blockdev-del', node_name='tgt')
    r.stop()
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', src, dst)
    assert data_extents(dst) == data_extents(src)
    assert remote_map == data_extents(src)
    assert allocated_bytes(dst) <= 8 * MiB


def test_backup_pushed_to_remote(daemon, remote, workdir):
    src = raw_image(workdir, 's.raw', size='64M', writes=SPARSE_WRITES)
    dst = raw_image(workdir, 'd.raw', size='64M')
    r = remote.qemu_nbd(dst)
    qmp = daemon.qmp
    add_source(qmp, src)
    qmp.execute('blockdev-add', nbd_opts('tgt', r, discard='unmap'))
    qmp.execute('blockdev-backup', {'job-id': 'b', 'device': 'src',
                                    'target': 'tgt', 'sync': 'full'})
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED')
    assert 'error' not in ev['data']
    qmp.execute('blockdev-del', node_name='src')
    qmp.execute('blockdev-del', node_name='tgt')
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', src, dst)
    if not is_qsd():
        # Beyond qemu 7.2, whose backup writes the holes out.
        assert allocated_bytes(dst) <= 8 * MiB


def test_remote_as_backing_file_of_qcow2_overlay(daemon, remote, workdir):
    base = raw_image(workdir, 'b.raw', size='16M',
                     writes=['write -P 0x11 0 8M'])
    r = remote.qemu_nbd(base, extra=['-r'])
    ov = os.path.join(str(workdir), 'ov.qcow2')
    # The image names the local file; the node opens the remote copy.
    qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', ov)
    qmp = daemon.qmp
    qmp.execute('blockdev-add', nbd_opts('base', r, **{'read-only': True}))
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'ov',
                                 'backing': 'base',
                                 'file': {'driver': 'file',
                                          'filename': ov}})
    sock = nbd_export(daemon, 'ov')
    uri = 'nbd+unix:///ov?socket=%s' % sock
    qemu_io('-f', 'raw', '-c', 'write -P 0x22 4M 1M', '-c',
            'read -P 0x11 0 4M', '-c', 'read -P 0x22 4M 1M', '-c',
            'read -P 0x11 5M 3M', '-c', 'read -P 0 8M 8M', uri)
    # Block status through the chain: only the first 8M are data.
    assert data_extents(uri) == [(0, 8 * MiB)]
    unexport(qmp)
    qmp.execute('blockdev-del', node_name='ov')
    qmp.execute('blockdev-del', node_name='base')
    ref = raw_image(workdir, 'ref.raw', writes=['write -P 0x11 0 8M',
                                                'write -P 0x22 4M 1M'])
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', ref, ov)


def log_connections(path):
    """Connections nbdkit's log filter recorded."""
    with open(path) as f:
        return sum(1 for line in f if ' Connect ' in line or
                   line.startswith('Connect '))


@pytest.mark.blockjobd_only('x-connections is our extension')
@pytest.mark.parametrize('conns', [None, 1, 3])
def test_multi_conn(daemon, remote, workdir, conns):
    log = os.path.join(str(workdir), 'nbdkit.log')
    r = remote.nbdkit(['memory', '64M', 'logfile=%s' % log],
                      filters=['log'])
    extra = {} if conns is None else {'x-connections': conns}
    qmp = daemon.qmp
    qmp.execute('blockdev-add', nbd_opts('n', r, **extra))
    want = 4 if conns is None else conns
    wait_until(lambda: log_connections(log) == want, what='connections')
    sock = nbd_export(daemon, 'n')
    uri = 'nbd+unix:///n?socket=%s' % sock
    # Requests spread over the connections; flush covers them all.
    qemu_io('-f', 'raw', '-c', 'aio_write -P 0x71 0 1M', '-c',
            'aio_write -P 0x72 1M 1M', '-c', 'aio_write -P 0x73 2M 1M',
            '-c', 'aio_write -P 0x74 3M 1M', '-c', 'aio_flush',
            '-c', 'flush', uri)
    qemu_io('-f', 'raw', '-c', 'read -P 0x71 0 1M', '-c',
            'read -P 0x72 1M 1M', '-c', 'read -P 0x73 2M 1M', '-c',
            'read -P 0x74 3M 1M', '-c', 'read -P 0 4M 60M', uri)
    assert log_connections(log) == want
    unexport(qmp)
    qmp.execute('blockdev-del', node_name='n')


def test_no_multi_conn_one_connection(daemon, remote, workdir):
    # A server without multi-conn (as qemu-nbd 7.2's writable exports)
    # gets one connection.
    img = raw_image(workdir, 'r.raw')
    log = os.path.join(str(workdir), 'nbdkit.log')
    r = remote.nbdkit(['file', img, 'logfile=%s' % log,
                       'multi-conn-mode=disable'],
                      filters=['log', 'multi-conn'])
    qmp = daemon.qmp
    qmp.execute('blockdev-add', nbd_opts('n', r))
    wait_until(lambda: log_connections(log) >= 1, what='a connection')
    qmp.execute('blockdev-del', node_name='n')
    assert log_connections(log) == 1


@pytest.mark.blockjobd_only('x-connections is our extension')
def test_bad_x_connections(daemon, remote, workdir):
    r = remote.nbdkit(['memory', '1M'])
    qmp = daemon.qmp
    for v in (0, 17):
        assert blockdev_add_error(qmp, nbd_opts('n', r, **{
            'x-connections': v})) == \
            "Parameter 'x-connections' expects a value from 1 to 16"


def test_x_dirty_bitmap_shows_dirty_as_holes(daemon, daemon_factory,
                                             workdir):
    """x-dirty-bitmap with qemu's meaning: a dirty block reads as a hole
    ("data": false), seen through our own re-export."""
    img = os.path.join(str(workdir), 'a.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', img, '4M')
    peer = daemon_factory(
        '--blockdev', 'driver=file,node-name=f,filename=%s' % img,
        '--blockdev', 'driver=qcow2,node-name=a,file=f')
    peer.qmp.execute('block-dirty-bitmap-add', node='a', name='bm')
    psock = peer.socket_path('nbd.sock')
    peer.qmp.execute('nbd-server-start',
                     addr={'type': 'unix', 'data': {'path': psock}})
    peer.qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e1',
                                          'node-name': 'a', 'name': 'a',
                                          'writable': True,
                                          'bitmaps': ['bm']})
    qemu_io('-f', 'raw', '-c', 'write 1M 64k', '-c', 'write 3M 4k',
            'nbd+unix:///a?socket=%s' % psock)
    qmp = daemon.qmp
    qmp.execute('blockdev-add', {
        'driver': 'nbd', 'node-name': 'n', 'export': 'a', 'read-only': True,
        'x-dirty-bitmap': 'qemu:dirty-bitmap:bm',
        'server': {'type': 'unix', 'path': psock}})
    sock = daemon.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'n'})
    out = json.loads(qemu_img('map', '--output=json', '-f', 'raw',
                              'nbd+unix:///n?socket=%s' % sock).stdout)
    dirty = [(e['start'], e['length']) for e in out if not e['data']]
    assert dirty == [(MiB, 64 * 1024), (3 * MiB, 64 * 1024)]
    unexport(qmp)
    qmp.execute('blockdev-del', node_name='n')


def test_open_timeout_waits_for_the_server(daemon, remote, workdir,
                                           sockdir):
    img = raw_image(workdir, 'r.raw', writes=['write -P 0x5a 0 64k'])
    addr = {'type': 'unix', 'path': os.path.join(str(sockdir), 'late.sock')}
    qmp = daemon.qmp
    qmp.send({'execute': 'blockdev-add', 'arguments': {
        'driver': 'nbd', 'node-name': 'n', 'server': addr, 'export': 'exp',
        'open-timeout': 60}})
    remote.qemu_nbd(img, addr=addr)
    assert qmp.recv_reply(timeout=60) == {'return': {}}
    sock = nbd_export(daemon, 'n')
    qemu_io('-f', 'raw', '-c', 'read -P 0x5a 0 64k',
            'nbd+unix:///n?socket=%s' % sock)
    unexport(qmp)
    qmp.execute('blockdev-del', node_name='n')


def test_open_timeout_expires(daemon, sockdir):
    path = os.path.join(str(sockdir), 'never.sock')
    assert blockdev_add_error(daemon.qmp, {
        'driver': 'nbd', 'node-name': 'n', 'export': 'exp',
        'server': {'type': 'unix', 'path': path}, 'open-timeout': 1}) == \
        "Failed to connect to '%s': No such file or directory" % path
    assert node_names(daemon.qmp) == []


@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 waits for a frozen '
                             'server forever')
def test_open_frozen_server_is_bounded(daemon, remote, workdir):
    """A server that accepts but never answers the handshake fails the one
    attempt of open-timeout=0 after 10 s (docs/remote.md)."""
    img = raw_image(workdir, 'r.raw')
    r = remote.qemu_nbd(img)
    r.freeze()
    assert blockdev_add_error(daemon.qmp, nbd_opts('n', r)) == \
        "Failed to connect to '%s': Connection timed out" % r.addr['path']
    assert node_names(daemon.qmp) == []


def test_flags_reach_the_server(daemon, remote, workdir):
    """FUA on writes and zeroes, NO_HOLE unless the zeroes may unmap, as
    nbdkit's log filter sees them."""
    log = os.path.join(str(workdir), 'nbdkit.log')
    r = remote.nbdkit(['memory', '16M', 'logfile=%s' % log],
                      filters=['log'])
    qmp = daemon.qmp
    qmp.execute('blockdev-add', nbd_opts('n', r, discard='unmap'))
    sock = nbd_export(daemon, 'n')
    # writeback: qemu-io's default writethrough would put FUA on all.
    qemu_io('-t', 'writeback', '-f', 'raw', '-c', 'write -f -P 1 0 64k',
            '-c', 'write -z -u 1M 64k', '-c', 'write -z 2M 64k',
            '-c', 'discard 3M 64k', 'nbd+unix:///n?socket=%s' % sock)
    unexport(qmp)
    qmp.execute('blockdev-del', node_name='n')
    with open(log) as f:
        lines = [line for line in f if ' id=' in line and '...' in line]

    def find(what, offset):
        hits = [line for line in lines if what in line and
                'offset=0x%x ' % offset in line]
        assert hits, (what, offset, lines)
        return hits[0]
    assert 'fua=1' in find('Write', 0)
    assert 'trim=1 fua=0' in find('Zero', 1 * MiB)
    assert 'trim=0 fua=0' in find('Zero', 2 * MiB)
    find('Trim', 3 * MiB)


@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 aborts when a client '
                             'of an iothread export disconnects')
def test_export_in_an_iothread(daemon_factory, remote, workdir):
    """An export with iothread moves the remote node there: its sockets
    and timers follow, requests work, and closing it there is clean."""
    img = raw_image(workdir, 'r.raw', writes=['write -P 0x11 0 1M'])
    r = remote.nbdkit(['file', img], filters=['multi-conn'])
    d = daemon_factory('--object', 'iothread,id=io0')
    qmp = d.qmp
    qmp.execute('blockdev-add', nbd_opts('n', r))
    sock = d.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'n', 'writable': True,
                                     'iothread': 'io0'})
    uri = 'nbd+unix:///n?socket=%s' % sock
    qemu_io('-f', 'raw', '-c', 'read -P 0x11 0 1M', '-c',
            'write -P 0x22 2M 1M', '-c', 'flush', uri)
    assert data_extents(uri) == [(0, MiB), (2 * MiB, MiB)]
    unexport(qmp)
    qmp.execute('blockdev-del', node_name='n')
    ref = raw_image(workdir, 'ref.raw', writes=['write -P 0x11 0 1M',
                                                'write -P 0x22 2M 1M'])
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', ref, img)
