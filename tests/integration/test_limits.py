"""The limits of docs/limits.md, one test each: what a local user can do to
the daemon by opening connections and not talking, or not reading, or by
using up its descriptors, is bounded.

These are blockjobd rules (qemu-storage-daemon 7.2 serves one QMP client
per socket and has no handshake-max-seconds), so they run against
blockjobd only.
"""

import os
import resource
import socket
import struct
import time

import pytest

import bjtest

nbd = pytest.importorskip('nbd')

pytestmark = pytest.mark.blockjobd_only('limits of blockjobd')


def nbd_uri(sock, name='disk'):
    return 'nbd+unix:///%s?socket=%s' % (name, sock)


def raw_nbd(sock):
    """A client that connects and never says a word."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    return s


def recv_exactly(s, n, deadline):
    data = b''
    while len(data) < n:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def closed_by_peer(s, deadline):
    """Reads (and drops) until EOF; False if the deadline passes first."""
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not s.recv(4096):
                return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
    return False


def nbd_daemon(daemon_factory, tmp_path, server_opts):
    d = daemon_factory(start=False)
    sock = d.socket_path('nbd.sock')
    d.extra_args += ['--blockdev', 'driver=null-co,node-name=disk,size=1048576',
                     '--nbd-server', 'addr.type=unix,addr.path=%s,%s'
                     % (sock, server_opts),
                     '--export', 'type=nbd,id=e0,node-name=disk,name=disk']
    d.start()
    return d, sock


def cpu_seconds(pid):
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def nfds(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


# ---- NBD handshake timeout ------------------------------------------------

def test_idle_handshakes_time_out(daemon_factory, tmp_path):
    """Clients that never negotiate hold max-connections slots only until
    handshake-max-seconds: then a real client gets in."""
    d, sock = nbd_daemon(daemon_factory, tmp_path,
                         'max-connections=2,handshake-max-seconds=1')
    start = time.monotonic()
    idle = [raw_nbd(sock) for _ in range(2)]
    # Both were accepted (they got the greeting); every slot is taken.
    for s in idle:
        assert recv_exactly(s, 18, start + 10)[:8] == b'NBDMAGIC'
    assert not bjtest.nbd_accepts(nbd_uri(sock))
    # The server, not the client, ends the idle ones, within the bound.
    for s in idle:
        assert closed_by_peer(s, start + 10)
    bjtest.wait_until(lambda: bjtest.nbd_accepts(nbd_uri(sock)),
                      timeout=10, what='a client getting in after the idle ones')
    took = time.monotonic() - start
    print('a new client got in %.2f s after the idle ones connected' % took)
    assert 1.0 <= took < 10, took
    for s in idle:
        s.close()


def test_handshake_timeout_does_not_cut_negotiated_clients(daemon_factory,
                                                            tmp_path):
    d, sock = nbd_daemon(daemon_factory, tmp_path,
                         'handshake-max-seconds=1')
    h = nbd.NBD()
    h.connect_uri(nbd_uri(sock))
    idle = raw_nbd(sock)
    assert closed_by_peer(idle, time.monotonic() + 10)
    # The idle one is gone, so the deadline has passed: h still works.
    assert len(h.pread(512, 0)) == 512
    h.shutdown()
    idle.close()


def test_handshake_max_seconds_argument(daemon):
    q = daemon.qmp
    addr = {'type': 'unix', 'data': {'path': daemon.socket_path('n.sock')}}
    with pytest.raises(bjtest.QMPError) as e:
        q.execute('nbd-server-start', addr=addr,
                  handshake_max_seconds=1 << 32)
    assert e.value.desc == ("Parameter 'handshake-max-seconds' expects "
                            "uint32_t")
    q.execute('nbd-server-start', addr=addr, handshake_max_seconds=0)


# ---- descriptor exhaustion ------------------------------------------------

FD_LIMIT = 64
# The memory bounds are asserted on the daemon's RSS with the native
# allocator; valgrind and ThreadSanitizer add shadow memory and allocators of
# their own, so RSS there says nothing about our bounds.
RSS_REASON = 'RSS bounds are measured with the native allocator'


@pytest.mark.no_valgrind('valgrind reserves descriptors of its own and '
                         'emulates the descriptor limit')
def test_emfile_backs_off_and_recovers(daemon_factory, tmp_path):
    """With every descriptor in use, a waiting QMP and NBD client cost
    neither CPU nor log, and get in once descriptors are free again."""
    d, sock = nbd_daemon(daemon_factory, tmp_path, 'max-connections=0')
    resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    # Fill the table with idle QMP clients: each one accepted raises the
    # daemon's descriptor count, until one stays in the backlog.
    idle = []
    while True:
        s = raw_qmp_socket(d)
        idle.append(s)
        deadline = time.monotonic() + 10
        s.settimeout(0.05)
        got = b''
        while time.monotonic() < deadline and nfds(d.pid) < FD_LIMIT:
            try:
                got = s.recv(1)
            except socket.timeout:
                continue
            break
        if not got:
            break        # at the limit: this client waits in the backlog
        assert len(idle) < FD_LIMIT, 'descriptor limit not reached'
    assert nfds(d.pid) == FD_LIMIT
    waiting_qmp = idle.pop()
    waiting_nbd = raw_nbd(sock)
    err_before = os.path.getsize(d.stderr_path)
    cpu_before = cpu_seconds(d.pid)
    window = 2.0
    time.sleep(window)   # a measuring window, not a wait for an event
    cpu = cpu_seconds(d.pid) - cpu_before
    log = os.path.getsize(d.stderr_path) - err_before
    text = d.stderr()
    print('EMFILE window %.1f s: cpu %.2f s, stderr %d bytes'
          % (window, cpu, log))
    assert cpu < 0.25 * window
    assert log < 1024
    assert text.count('monitor: accept failed: Too many open files') == 1
    assert text.count('nbd: accept failed: Too many open files') == 1
    # Free some descriptors: both waiting clients get in within the longest
    # back-off (1 s) plus slack.
    for s in idle[:4]:
        s.close()
    deadline = time.monotonic() + 10
    assert recv_exactly(waiting_nbd, 8, deadline) == b'NBDMAGIC'
    assert b'"QMP"' in recv_exactly(waiting_qmp, 5, deadline) + \
        waiting_qmp.recv(4096)
    for s in idle[4:] + [waiting_qmp, waiting_nbd]:
        s.close()


# ---- QMP clients and their memory ----------------------------------------

def test_max_clients(daemon_factory):
    d = daemon_factory(start=False)
    path = d.socket_path('m1.sock')
    d.extra_args += ['--chardev', 'socket,id=m1,path=%s,server=on,wait=off'
                     % path, '--monitor', 'chardev=m1,max-clients=2']
    d.start()
    a = bjtest.QMPClient(path, negotiate=True)
    b = bjtest.QMPClient(path, negotiate=True)
    # The third is closed at once, without a greeting; again for a fourth.
    for _ in range(2):
        with pytest.raises(bjtest.QMPClosed):
            bjtest.QMPClient(path)
    assert d.stderr().count('max-clients') == 1
    # The other monitor has its own count.
    d.new_client().execute('query-version')
    a.close()
    bjtest.wait_until(lambda: try_qmp(path), what='a free client slot')
    b.execute('query-version')
    b.close()
    with pytest.raises(bjtest.QMPError) as e:
        d.qmp.execute('query-version', foo=1)   # still serving
    assert 'unexpected' in e.value.desc


def try_qmp(path):
    try:
        bjtest.QMPClient(path, negotiate=True).close()
    except bjtest.QMPClosed:
        return False
    return True


def test_max_clients_argument(binary, sockdir):
    p = bjtest.run_blockjobd('--chardev', 'socket,id=m,path=%s/m.sock,'
                             'server=on,wait=off' % sockdir,
                             '--monitor', 'chardev=m,max-clients=0',
                             binary=binary)
    assert p.returncode == 1
    assert p.stderr == ("blockjobd: --monitor chardev=m,max-clients=0: "
                        "Parameter 'max-clients' expects a value of at "
                        "least 1\n")


def rss_kib(pid, field='VmRSS'):
    with open('/proc/%d/status' % pid) as f:
        return int([l for l in f if l.startswith(field + ':')][0].split()[1])


def rss_env():
    """The sanitizer environment with ASan's quarantine off: freed buffers
    must leave the RSS at once, or the quarantine (up to 256 MiB) would be
    counted as held memory."""
    env = bjtest.sanitizer_env()
    env['ASAN_OPTIONS'] += ':quarantine_size_mb=0'
    return env


def raw_qmp_socket(d):
    """A plain socket connected to d's monitor; nothing said yet."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.sock_path)
    return s


def sleeping_client(d):
    """A monitor client that sends qmp_capabilities and never reads."""
    s = raw_qmp_socket(d)
    s.sendall(b'{"execute":"qmp_capabilities"}\n')
    return s


def flood_export_events(q, count):
    """count block exports of node 'disk' with an EVENT_MIB long id, each
    added and deleted: events that size go to every client."""
    long_id = 'e' + 'x' * (EVENT_MIB << 20)
    for _ in range(count):
        q.execute('block-export-add', type='nbd', id=long_id,
                  node_name='disk')
        q.execute('block-export-del', id=long_id)
        q.wait_event('BLOCK_EXPORT_DELETED')


def event_flood_daemon(daemon_factory):
    """A daemon (rss_env) with a null-co node 'disk' and an NBD server, for
    block exports whose long ids make 1 MiB events."""
    d = daemon_factory('--blockdev', 'driver=null-co,node-name=disk',
                       env=rss_env())
    d.qmp.execute('nbd-server-start', addr={
        'type': 'unix', 'data': {'path': d.socket_path('nbd.sock')}})
    return d


OUT_TOTAL_MAX_MIB = 128     # docs/limits.md: pending output, all clients
EVENT_MIB = 1


@pytest.mark.no_valgrind(RSS_REASON)
@pytest.mark.no_tsan(RSS_REASON)
@pytest.mark.timeout(300)
def test_pending_output_bound_across_clients(daemon_factory):
    """Clients that never read cannot make the daemon hold more than the
    daemon-wide budget of queued output, however many there are (each is
    also bounded at 64 MiB).  Events of 1 MiB (a block export whose id is
    1 MiB long) go to every client; 4 non-readers x 60 events would be
    240 MiB without the daemon-wide bound."""
    d = event_flood_daemon(daemon_factory)
    q = d.qmp
    sleepers = []
    for _ in range(4):
        sleepers.append(sleeping_client(d))
    # Every sleeper is negotiated once a reading client sees an event that
    # follows their qmp_capabilities: commands run one at a time, in turn.
    q.execute('query-version')
    base = rss_kib(d.pid)
    flood_export_events(q, 60)
    grown = (rss_kib(d.pid) - base) // 1024
    peak = (rss_kib(d.pid, 'VmHWM') - base) // 1024
    print('RSS grew by %d MiB (peak %d MiB) for %d MiB of budget'
          % (grown, peak, OUT_TOTAL_MAX_MIB))
    # The budget, plus per client at most 1 MiB of backlog and one message
    # over it, plus the reading client's buffers.
    assert grown < OUT_TOTAL_MAX_MIB + 5 * 2 * EVENT_MIB + 16
    assert 'for all clients' in d.stderr()
    for s in sleepers:
        s.close()
    q.execute('query-version')


# ---- the bound on shutdown ------------------------------------------------

def stuck_daemon(daemon_factory):
    """A daemon with an NBD write stuck in its driver for an hour."""
    d = daemon_factory(start=False)
    sock = d.socket_path('nbd.sock')
    d.extra_args += ['--shutdown-max-seconds', '1',
                     '--blockdev', 'driver=null-co,node-name=disk,'
                     'latency-ns=3600000000000',
                     '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
                     '--export', 'type=nbd,id=e0,node-name=disk,name=disk,'
                     'writable=on']
    d.start()
    h = nbd.NBD()
    h.add_meta_context('base:allocation')
    h.connect_uri(nbd_uri(sock))
    h.aio_pwrite(b'x' * 512, 0)
    # Requests start in arrival order and block status does not sleep: once
    # it is answered, the write is inside the driver.
    h.block_status(512, 0, lambda *a: 0)
    assert h.aio_in_flight() == 1
    return d, h


@pytest.mark.parametrize('how', ['sigterm', 'quit'])
def test_shutdown_is_bounded(daemon_factory, how):
    d, h = stuck_daemon(daemon_factory)
    t0 = time.monotonic()
    if how == 'sigterm':
        d.send_signal()
    else:
        assert d.qmp.execute('quit') == {}
    rc = d.wait(timeout=15)
    took = time.monotonic() - t0
    print('%s with a stuck request: exit %d after %.2f s' % (how, rc, took))
    assert rc == 1
    assert 1.0 <= took < 15
    assert 'shutdown did not finish within 1 s' in d.stderr()
    d.check(expect_rc=1)
    del h


def test_shutdown_max_seconds_argument(binary):
    p = bjtest.run_blockjobd('--shutdown-max-seconds', '-1', binary=binary)
    assert p.returncode == 1
    assert p.stderr == ('blockjobd: --shutdown-max-seconds -1: expects a '
                        'number of seconds\n')


# ---- an NBD client that does not read its replies -------------------------

NBD_INFLIGHT_MAX_MIB = 256   # MAX_REQUEST_BYTES in src/nbd/conn.c
NBD_TOTAL_MAX_MIB = 512      # MAX_TOTAL_BYTES in src/nbd/conn.c
NBD_READ_MIB = 32            # the largest READ the server accepts


def raw_nbd_transmission(sock, name=b'disk'):
    """A newstyle-fixed handshake by hand (NBD_OPT_EXPORT_NAME), leaving a
    socket in the transmission phase that nobody reads from."""
    s = raw_nbd(sock)
    deadline = time.monotonic() + 10
    hello = recv_exactly(s, 18, deadline)
    assert hello[:16] == b'NBDMAGICIHAVEOPT', hello
    s.sendall(struct.pack('>I', 3))          # FIXED_NEWSTYLE | NO_ZEROES
    s.sendall(b'IHAVEOPT' + struct.pack('>II', 1, len(name)) + name)
    size, _flags = struct.unpack('>QH', recv_exactly(s, 10, deadline))
    return s, size


def slow_reader_daemon(daemon_factory):
    d = daemon_factory(start=False, env=rss_env())
    sock = d.socket_path('nbd.sock')
    d.extra_args += ['--blockdev', 'driver=null-co,node-name=disk,'
                     'size=1073741824,read-zeroes=on',
                     '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
                     '--export', 'type=nbd,id=e0,node-name=disk,name=disk']
    d.start()
    return d, sock


def send_big_reads(sock):
    """A client that sends 64 READs of 32 MiB (2 GiB asked for, at 28 bytes
    each) and never reads a reply."""
    s, size = raw_nbd_transmission(sock)
    assert size == 1 << 30
    length = NBD_READ_MIB << 20
    for i in range(64):
        s.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 0, i,
                              (i * length) % size, length))
    return s


def rss_growth_once_bounded(d, sock, base, bound_mib, what):
    """Waits until the daemon's RSS grew to within one read of bound_mib
    over base, checks that other clients are still served (meanwhile the
    main loop ran many times, so slow clients took whatever more they
    could), and returns the peak growth in MiB."""
    bjtest.wait_until(lambda: rss_kib(d.pid) - base >
                      (bound_mib - NBD_READ_MIB) << 10,
                      timeout=60, what=what + ' being reached')
    assert bjtest.nbd_accepts(nbd_uri(sock))
    d.qmp.execute('query-version')
    return (rss_kib(d.pid, 'VmHWM') - base) >> 10


@pytest.mark.no_valgrind(RSS_REASON)
@pytest.mark.no_tsan(RSS_REASON)
def test_slow_nbd_reader_is_bounded(daemon_factory):
    """A client that sends READs and never reads the replies makes the
    server hold at most 256 MiB of buffers for it (plus one request)."""
    d, sock = slow_reader_daemon(daemon_factory)
    base = rss_kib(d.pid)
    s = send_big_reads(sock)
    # The receive loop stops once 256 MiB are in flight: from then on the
    # daemon's memory stays put.
    grown = rss_growth_once_bounded(d, sock, base, NBD_INFLIGHT_MAX_MIB,
                                    'the in-flight bound')
    print('slow NBD reader: RSS grew by %d MiB' % grown)
    assert grown < NBD_INFLIGHT_MAX_MIB + NBD_READ_MIB + 16, grown
    s.close()


IN_TOTAL_MAX_MIB = 128      # docs/limits.md: unfinished input, all clients


@pytest.mark.no_valgrind(RSS_REASON)
@pytest.mark.no_tsan(RSS_REASON)
@pytest.mark.timeout(300)
def test_pending_output_bound_per_client(daemon_factory):
    """One client that never reads is dropped once 64 MiB of events wait
    for it (the daemon-wide budget is not reached with one client)."""
    d = event_flood_daemon(daemon_factory)
    q = d.qmp
    s = sleeping_client(d)
    q.execute('query-version')
    base = rss_kib(d.pid)
    flood_export_events(q, 70)
    peak = (rss_kib(d.pid, 'VmHWM') - base) >> 10
    held = (rss_kib(d.pid) - base) >> 10
    print('one sleeper: peak +%d MiB, after +%d MiB' % (peak, held))
    err = d.stderr()
    assert 'dropping a client that does not read its replies' in err
    assert 'for all clients' not in err
    assert peak < 64 + 32 + 16, peak    # bound, realloc source, slack
    assert held < 16, held              # its buffer went with it
    s.close()


@pytest.mark.no_valgrind(RSS_REASON)
@pytest.mark.no_tsan(RSS_REASON)
@pytest.mark.timeout(300)
def test_unfinished_input_bound_across_clients(daemon_factory):
    """Each client may have a value of up to 64 MiB in progress, but not
    all of them at once: three clients 60 MiB into a string would hold
    180 MiB; past the daemon-wide 128 MiB the one sending is dropped."""
    d = daemon_factory(env=rss_env())
    base = rss_kib(d.pid)
    chunk = b'a' * (1 << 20)
    clients = []
    dropped = []
    for k in range(3):
        s = raw_qmp_socket(d)
        clients.append(s)
        try:
            s.sendall(b'{"execute":"query-version","id":"')
            for _ in range(60):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            dropped.append(k)
    # A reading client is served, after the daemon read all it could.
    d.qmp.execute('query-version')
    peak = (rss_kib(d.pid, 'VmHWM') - base) >> 10
    print('unfinished input: peak +%d MiB, dropped %s' % (peak, dropped))
    assert 'unfinished input' in d.stderr()
    assert dropped == [2]
    # The budget, plus the half-size buffer a realloc copies from while a
    # value grows, plus slack.
    assert peak < IN_TOTAL_MAX_MIB + 32 + 16, peak
    for s in clients:
        s.close()


@pytest.mark.no_valgrind(RSS_REASON)
@pytest.mark.no_tsan(RSS_REASON)
def test_slow_nbd_readers_are_bounded_together(daemon_factory):
    """Three such clients would hold 768 MiB; all connections together hold
    at most 512 MiB plus one request each, and a fourth, well-behaved
    client is still served (one request at a time while over budget)."""
    d, sock = slow_reader_daemon(daemon_factory)
    base = rss_kib(d.pid)
    slow = [send_big_reads(sock) for _ in range(3)]
    grown = rss_growth_once_bounded(d, sock, base, NBD_TOTAL_MAX_MIB,
                                    'the daemon-wide bound')
    print('three slow NBD readers: RSS grew by %d MiB' % grown)
    assert grown < NBD_TOTAL_MAX_MIB + 3 * NBD_READ_MIB + 16, grown
    for s in slow:
        s.close()
