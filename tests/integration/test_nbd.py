"""NBD exports against real clients: qemu-img, qemu-io, nbdinfo, nbdcopy,
python3-libnbd and fio; QMP export management; hostile clients.

Each test makes its own images under tmp_path; the NBD socket lives in the
daemon's short socket directory.
"""

import json
import os
import shutil
import socket
import struct
import subprocess
import time

import pytest

import bjtest
from bjtest import QMPError, qemu_img, qemu_io, run

nbd = pytest.importorskip('nbd')

SIZE = 64 * 1024 * 1024


def uri(d, name='disk'):
    return 'nbd+unix:///%s?socket=%s' % (name, d.socket_path('nbd.sock'))


def start_server(d, **kw):
    d.qmp.execute('nbd-server-start',
                  addr={'type': 'unix',
                        'data': {'path': d.socket_path('nbd.sock')}}, **kw)


def add_disk(d, path, fmt='raw', name='disk', size=SIZE):
    if not os.path.exists(path):
        qemu_img('create', '-f', fmt, path, str(size))
    d.qmp.execute('blockdev-add', driver=fmt, node_name=name,
                  file={'driver': 'file', 'filename': str(path)})


@pytest.fixture
def served(daemon, tmp_path):
    """A daemon exporting a 64 MiB raw image writable as 'disk'."""
    img = tmp_path / 'disk.raw'
    add_disk(daemon, img)
    start_server(daemon)
    daemon.qmp.execute('block-export-add', type='nbd', id='e0',
                       node_name='disk', writable=True)
    daemon.img = img
    return daemon


def del_export_when_free(d, export_id):
    """block-export-del once the server has seen its clients hang up.

    A client that has exited has closed its socket, but the server tears
    the connection down in its own time; a slow daemon (under valgrind, or
    a loaded machine) may still count it when the command arrives.
    """
    def deleted():
        try:
            d.qmp.execute('block-export-del', id=export_id)
            return True
        except QMPError as e:
            if e.desc != "export '%s' still in use" % export_id:
                raise
            return False
    bjtest.wait_until(deleted, timeout=30 * bjtest.timeout_factor(),
                      interval=0.1, what='export %s free' % export_id)


def connect(d, name='disk', meta=True):
    h = nbd.NBD()
    if meta:
        h.add_meta_context('base:allocation')
    h.connect_uri(uri(d, name))
    return h


# ---- interop with real clients ----

def test_qemu_img_info_and_io(served):
    info = json.loads(qemu_img('info', '--output=json', uri(served)).stdout)
    assert info['virtual-size'] == SIZE
    u = uri(served)
    qemu_io('-f', 'raw', '-c', 'write -P 0xab 0 1M',
            '-c', 'write -P 0xcd 5M 64k', '-c', 'write -z 1M 1M',
            '-c', 'discard 8M 1M', '-c', 'aio_write -P 0x11 10M 4k',
            '-c', 'aio_flush', u)
    qemu_io('-f', 'raw', '-c', 'read -P 0xab 0 1M', '-c', 'read -P 0 1M 1M',
            '-c', 'read -P 0xcd 5M 64k', '-c', 'read -P 0x11 10M 4k',
            '-c', 'read -P 0 20M 1M', u)
    # the bytes are in the image file itself
    del_export_when_free(served, 'e0')
    qemu_io('-f', 'raw', '-r', '-U', '-c', 'read -P 0xab 0 1M',
            '-c', 'read -P 0xcd 5M 64k', str(served.img))


def test_qemu_img_convert_compare(served, tmp_path):
    src = tmp_path / 'src.qcow2'
    qemu_img('create', '-f', 'qcow2', src, str(SIZE))
    qemu_io('-f', 'qcow2', '-c', 'write -P 0x5a 1M 3M',
            '-c', 'write -P 0xa5 40M 512k', str(src))
    qemu_img('convert', '-n', '-f', 'qcow2', '-O', 'raw', src, uri(served))
    qemu_img('compare', '-f', 'qcow2', '-F', 'raw', src, uri(served))
    back = tmp_path / 'back.qcow2'
    qemu_img('convert', '-f', 'raw', '-O', 'qcow2', uri(served), back)
    qemu_img('compare', '-f', 'qcow2', '-F', 'qcow2', src, back)


def test_nbdinfo_map(served):
    qemu_io('-f', 'raw', '-c', 'write -P 1 0 1M', '-c', 'write -P 2 4M 1M',
            uri(served))
    out = run('nbdinfo', '--map', '--json', uri(served)).stdout
    extents = json.loads(out)
    assert sum(e['length'] for e in extents) == SIZE
    data = [(e['offset'], e['length']) for e in extents
            if not e['type'] & 1]
    assert data[0][0] == 0
    assert any(o <= 4 << 20 < o + n for o, n in data)
    # an area never written is a hole that reads as zeroes
    at8m = [e for e in extents if e['offset'] <= 8 << 20 <
            e['offset'] + e['length']]
    assert at8m[0]['type'] == 3
    info = run('nbdinfo', '--json', uri(served)).stdout
    assert json.loads(info)['exports'][0]['export-size'] == SIZE


def test_nbdcopy_both_ways(served, tmp_path):
    src = tmp_path / 'src.raw'
    with open(src, 'wb') as f:
        f.truncate(SIZE)
        f.seek(3 << 20)
        f.write(os.urandom(2 << 20))
        f.seek(50 << 20)
        f.write(os.urandom(100000))
    run('nbdcopy', str(src), uri(served))
    out = tmp_path / 'out.raw'
    run('nbdcopy', uri(served), str(out))
    assert open(src, 'rb').read() == open(out, 'rb').read()


def test_fio_verify(served, tmp_path):
    if not shutil.which('fio'):
        pytest.skip('fio not installed')
    p = run('fio', '--name=v', '--ioengine=nbd', '--uri=' + uri(served),
            '--rw=randwrite', '--bs=4k', '--size=8M', '--iodepth=16',
            '--verify=crc32c', '--do_verify=1', '--verify_fatal=1',
            '--output-format=json', check=False, timeout=120)
    assert p.returncode == 0, p.stderr + p.stdout
    res = json.loads(p.stdout[p.stdout.index('{'):])
    assert res['jobs'][0]['error'] == 0


# ---- libnbd: precise protocol cases ----

def test_libnbd_flags_and_sizes(served):
    h = connect(served)
    assert h.get_size() == SIZE
    assert h.can_meta_context('base:allocation')
    assert h.can_df() and h.can_flush() and h.can_fua()
    assert h.can_trim() and h.can_zero() and h.can_fast_zero()
    assert h.can_multi_conn() and not h.is_read_only()
    assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * 1024 * 1024
    assert h.get_structured_replies_negotiated()
    h.shutdown()


def test_libnbd_out_of_order_and_in_flight(served):
    h = connect(served)
    pattern = bytes(range(256)) * 256          # 64 KiB
    cookies = []
    for i in range(64):
        cookies.append(h.aio_pwrite(pattern, i * 65536))
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in cookies:
        assert h.aio_command_completed(c)
    bufs = [nbd.Buffer(65536) for _ in range(64)]
    cookies = [h.aio_pread(b, i * 65536) for i, b in enumerate(bufs)]
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for c in cookies:
        assert h.aio_command_completed(c)
    for b in bufs:
        assert b.to_bytearray() == pattern
    h.shutdown()


def test_libnbd_structured_read_holes(served):
    h = connect(served)
    h.pwrite(b'\x77' * 65536, 1 << 20)
    chunks = []

    def cb(subbuf, offset, status, error):
        chunks.append((offset, len(subbuf), status))
        return 0

    buf = h.pread_structured(4 << 20, 0, cb)
    assert buf[(1 << 20):(1 << 20) + 65536] == b'\x77' * 65536
    assert buf[:1 << 20] == bytes(1 << 20)
    assert any(s == nbd.READ_HOLE for _, _, s in chunks)
    assert any(s == nbd.READ_DATA and o <= 1 << 20 < o + n
               for o, n, s in chunks)
    # covers the request exactly, no overlap
    total = sum(n for _, n, _ in chunks)
    assert total == 4 << 20
    # with DF a single data chunk comes back
    chunks.clear()
    h.pread_structured(65536 * 4, (1 << 20) - 65536, cb, flags=nbd.CMD_FLAG_DF)
    assert len(chunks) == 1 and chunks[0][2] == nbd.READ_DATA
    h.shutdown()


def test_libnbd_block_status(served):
    h = connect(served)
    h.pwrite(b'\x01' * 65536, 0)
    h.zero(65536, 1 << 20)
    seen = []

    def cb(meta, offset, entries, err):
        assert meta == 'base:allocation'
        seen.extend(entries)
        return 0

    h.block_status(4 << 20, 0, cb)
    assert seen[0] == 65536 and not seen[1] & nbd.STATE_HOLE
    assert sum(seen[0::2]) >= 65536
    seen.clear()
    h.block_status(4 << 20, 0, cb, flags=nbd.CMD_FLAG_REQ_ONE)
    assert len(seen) == 2
    with pytest.raises(nbd.Error):
        h.block_status(1024, SIZE - 512, cb)
    h.shutdown()


def test_libnbd_meta_context_list_and_errors(served):
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(uri(served))
    names = []
    h.opt_list_meta_context(lambda name: names.append(name) or 0)
    assert names == ['base:allocation']
    exports = []
    h.opt_list(lambda name, desc: exports.append(name) or 0)
    assert exports == ['disk']
    h.set_export_name('nope')
    with pytest.raises(nbd.Error):
        h.opt_go()
    h.set_export_name('disk')
    h.opt_go()
    with pytest.raises(nbd.Error) as e:
        h.pread(1024, SIZE - 512)
    assert e.value.errnum == 22     # EINVAL
    with pytest.raises(nbd.Error) as e:
        h.pwrite(b'x' * 1024, SIZE - 512)
    assert e.value.errnum == 28     # ENOSPC
    assert h.pread(512, 0) == bytes(512)   # the connection goes on
    h.shutdown()


def test_read_only_export(daemon, tmp_path):
    add_disk(daemon, tmp_path / 'ro.raw')
    start_server(daemon)
    daemon.qmp.execute('block-export-add', type='nbd', id='e0',
                       node_name='disk', description='a read-only disk')
    h = connect(daemon)
    assert h.is_read_only() and not h.can_trim() and not h.can_zero()
    assert h.get_export_description() == 'a read-only disk'
    with pytest.raises(nbd.Error) as e:
        h.pwrite(b'x' * 512, 0)
    assert e.value.errnum == 1      # EPERM
    h.shutdown()


# ---- QMP ----

def test_qmp_export_lifecycle(daemon, tmp_path):
    q = daemon.qmp
    with pytest.raises(QMPError) as e:
        q.execute('block-export-add', type='nbd', id='e0', node_name='disk')
    assert e.value.desc == "Cannot find device='' nor node-name='disk'"
    add_disk(daemon, tmp_path / 'd.raw')
    with pytest.raises(QMPError) as e:
        q.execute('block-export-add', type='nbd', id='e0', node_name='disk')
    assert e.value.desc == 'NBD server not running'
    with pytest.raises(QMPError) as e:
        q.execute('nbd-server-stop')
    assert e.value.desc == 'NBD server not running'
    start_server(daemon)
    with pytest.raises(QMPError) as e:
        start_server(daemon)
    assert e.value.desc == 'NBD server already running'
    q.execute('block-export-add', type='nbd', id='e0', node_name='disk')
    with pytest.raises(QMPError) as e:
        q.execute('block-export-add', type='nbd', id='e0', node_name='disk')
    assert e.value.desc == "Block export id 'e0' is already in use"
    with pytest.raises(QMPError) as e:
        q.execute('block-export-add', type='nbd', id='e1', node_name='disk')
    assert e.value.desc == "NBD server already has export named 'disk'"
    with pytest.raises(QMPError) as e:
        q.execute('block-export-add', type='nbd', id='3e', node_name='disk',
                  name='x')
    assert e.value.desc == 'Invalid block export id'
    q.execute('block-export-add', type='nbd', id='e1', node_name='disk',
              name='other', writable=True)
    assert q.execute('query-block-exports') == [
        {'id': 'e1', 'type': 'nbd', 'node-name': 'disk',
         'shutting-down': False},
        {'id': 'e0', 'type': 'nbd', 'node-name': 'disk',
         'shutting-down': False}]

    # safe delete refuses while a client is connected; hard disconnects it
    h = connect(daemon, 'other')
    with pytest.raises(QMPError) as e:
        q.execute('block-export-del', id='e1')
    assert e.value.desc == "export 'e1' still in use"
    q.execute('block-export-del', id='e1', mode='hard')
    q.wait_event('BLOCK_EXPORT_DELETED', match={'data': {'id': 'e1'}})
    with pytest.raises(nbd.Error):
        h.pread(512, 0)
    with pytest.raises(QMPError) as e:
        q.execute('block-export-del', id='e1')
    assert e.value.desc == "Export 'e1' is not found"
    # the node is free again once the export is gone
    q.execute('nbd-server-stop')
    q.wait_event('BLOCK_EXPORT_DELETED', match={'data': {'id': 'e0'}})
    assert q.execute('query-block-exports') == []
    q.execute('blockdev-del', node_name='disk')


@pytest.mark.blockjobd_only('clients over max-connections: qemu-storage-daemon '
                            'leaves them in the listen backlog, we close them')
def test_inet_server_and_max_connections(daemon, tmp_path):
    add_disk(daemon, tmp_path / 'd.raw')
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    daemon.qmp.execute('nbd-server-start',
                       addr={'type': 'inet', 'data': {'host': '127.0.0.1',
                                                      'port': str(port)}},
                       max_connections=2)
    daemon.qmp.execute('block-export-add', type='nbd', id='e0',
                       node_name='disk')
    u = 'nbd://127.0.0.1:%d/disk' % port
    hs = []
    for _ in range(2):
        h = nbd.NBD()
        h.connect_uri(u)
        hs.append(h)
    h = nbd.NBD()
    with pytest.raises(nbd.Error):
        h.connect_uri(u)
    hs[0].shutdown()
    bjtest.wait_until(lambda: bjtest.nbd_accepts(u), what='a free slot')
    for h in hs[1:]:
        h.shutdown()


@pytest.mark.blockjobd_only('--nbd-server flat address and --export')
def test_command_line(daemon_factory, tmp_path):
    img = tmp_path / 'c.raw'
    qemu_img('create', '-f', 'raw', img, '1M')
    d = daemon_factory(start=False)
    sock = d.socket_path('nbd.sock')
    d.extra_args += ['--blockdev', 'driver=file,node-name=f,filename=%s'
                     % img,
                     '--nbd-server', 'addr.type=unix,addr.path=%s,'
                     'max-connections=5' % sock,
                     '--export', 'type=nbd,id=e0,node-name=f,name=c,'
                     'writable=on']
    d.start()
    qemu_io('-f', 'raw', '-c', 'write -P 9 0 64k',
            'nbd+unix:///c?socket=%s' % sock)
    qemu_io('-f', 'raw', '-c', 'read -P 9 0 64k',
            'nbd+unix:///c?socket=%s' % sock)
    d.qmp.execute('quit')
    d.qmp.wait_event('BLOCK_EXPORT_DELETED')


# ---- iothreads ----

@pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 aborts when a client '
                            'of an iothread export disconnects')
def test_iothread_export(daemon_factory, tmp_path):
    d = daemon_factory('--object', 'iothread,id=io0')
    add_disk(d, tmp_path / 'io.raw')
    start_server(d)
    d.qmp.execute('block-export-add', type='nbd', id='e0', node_name='disk',
                  writable=True, iothread='io0')
    for i in range(3):
        qemu_io('-f', 'raw', '-c', 'write -P %d %dM 1M' % (i + 1, i),
                uri(d))
    qemu_io('-f', 'raw', '-c', 'read -P 1 0 1M', '-c', 'read -P 3 2M 1M',
            uri(d))
    h = connect(d)
    h.aio_pwrite(b'z' * 4096, 0)
    del h          # hang up with a request in flight
    qemu_io('-f', 'raw', '-c', 'read -P 2 1M 1M', uri(d))
    d.qmp.execute('block-export-del', id='e0')
    d.qmp.wait_event('BLOCK_EXPORT_DELETED')


# ---- drained sections ----

def wait_completions(h, cookies, timeout):
    """Polls until every command is retired; True if all succeeded."""
    deadline = time.monotonic() + timeout
    while h.aio_in_flight() > 0 and time.monotonic() < deadline:
        h.poll(100)
    if h.aio_in_flight() > 0:
        return False
    # a failed command raises here
    return all(h.aio_command_completed(c) for c in cookies)


@pytest.mark.blockjobd_only('x-debug-drain-begin is ours')
@pytest.mark.parametrize('iothread', [False, True])
def test_drain_postpones_writes(daemon_factory, tmp_path, iothread):
    d = daemon_factory(*(['--object', 'iothread,id=io0'] if iothread
                         else []))
    add_disk(d, tmp_path / 'dr.raw')
    start_server(d)
    d.qmp.execute('block-export-add', type='nbd', id='e0', node_name='disk',
                  writable=True, **({'iothread': 'io0'} if iothread else {}))
    hs = [connect(d) for _ in range(3)]
    d.qmp.execute('x-debug-drain-begin', node_name='disk')
    cookies = {h: [] for h in hs}
    for i in range(100):
        for n, h in enumerate(hs):
            cookies[h].append(h.aio_pwrite(bytes([i + n]) * 4096,
                                           n * 65536))
    time.sleep(0.5)
    for h in hs:
        h.poll(0)
        assert h.aio_in_flight() == 100, \
            'a write completed inside the drained section'
    d.qmp.execute('x-debug-drain-end', node_name='disk')
    for h in hs:
        assert wait_completions(h, cookies[h], 30)
    for n, h in enumerate(hs):
        assert h.pread(4096, n * 65536) == bytes([99 + n]) * 4096
        h.shutdown()
    with pytest.raises(QMPError):
        d.qmp.execute('x-debug-drain-end', node_name='disk')


@pytest.mark.blockjobd_only('x-debug-drain-begin is ours')
def test_drain_client_disconnects_while_queued(served):
    q = served.qmp
    h = connect(served)
    q.execute('x-debug-drain-begin', node_name='disk')
    h.aio_pwrite(b'\x42' * 4096, 0)
    h.poll(0)
    time.sleep(0.2)
    del h
    q.execute('x-debug-drain-end', node_name='disk')
    # the queued write ran; the export and daemon carry on
    bjtest.wait_until(lambda: read_first(served) == b'\x42' * 4096,
                      what='queued write applied')
    q.execute('block-export-del', id='e0')
    q.wait_event('BLOCK_EXPORT_DELETED')


def read_first(d):
    h = connect(d)
    b = h.pread(4096, 0)
    h.shutdown()
    return b


# ---- hostile clients ----

def raw_connect(d):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(d.socket_path('nbd.sock'))
    return s


def recv_all_until_eof(s):
    data = b''
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_hostile_clients(served):
    # garbage in the handshake
    s = raw_connect(served)
    s.recv(18)
    s.sendall(b'\xff' * 100)
    recv_all_until_eof(s)
    s.close()
    # hang up mid-handshake, mid-option
    s = raw_connect(served)
    s.recv(18)
    s.sendall(struct.pack('>I', 1) + b'IHAVEOPT' + struct.pack('>II', 7, 100))
    s.close()
    # huge option length: skipped, answered, not buffered
    s = raw_connect(served)
    s.recv(18)
    s.sendall(struct.pack('>I', 1) + b'IHAVEOPT' +
              struct.pack('>II', 6, 1 << 30) + b'x' * 1000)
    s.close()
    # lying request lengths and bad magic after a good handshake
    for payload in (struct.pack('>IHHQQI', 0x25609513, 0, 1, 1, 0, 1 << 30),
                    b'\x00' * 28,
                    struct.pack('>IHHQQI', 0x25609513, 0, 1, 1, 0, 4096) +
                    b'short'):
        h = nbd.NBD()
        h.connect_uri(uri(served))
        fd = h.aio_get_fd()
        s = socket.socket(fileno=os.dup(fd))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        recv_all_until_eof(s)
        s.close()
        del h
    # reads past the end
    h = connect(served)
    with pytest.raises(nbd.Error):
        h.pread(4096, SIZE)
    h.shutdown()
    # still alive and serving
    qemu_io('-f', 'raw', '-c', 'write -P 3 0 4k', '-c', 'read -P 3 0 4k',
            uri(served))
    assert served.qmp.execute('query-block-exports')[0]['id'] == 'e0'


@pytest.mark.blockjobd_only('clients over max-connections: qemu-storage-daemon '
                            'leaves them in the listen backlog, we close them')
def test_hundreds_of_connections(served):
    socks = []
    for _ in range(300):
        try:
            socks.append(raw_connect(served))
        except OSError:
            pass
    time.sleep(0.5)
    alive = 0
    for s in socks:
        try:
            s.settimeout(5)
            if len(s.recv(18)) == 18:
                alive += 1
        except OSError:
            pass
    assert 0 < alive <= 100      # max-connections defaults to 100
    for s in socks:
        s.close()
    bjtest.wait_until(lambda: bjtest.nbd_accepts(uri(served)),
                      what='server serving again')
    qemu_io('-f', 'raw', '-c', 'read 0 4k', uri(served))
