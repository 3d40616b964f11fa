"""QMP wire protocol: greeting, negotiation, reply and error shapes, id echo,
several clients, events, hostile input, disconnects, quit.

Expected texts were observed on qemu-storage-daemon 7.2; the tests run
against it too (BLOCKJOBD_BIN=qemu-storage-daemon), except where marked.
qemu-storage-daemon serves one client per socket at a time, so clients that
must coexist come from daemon.new_client() (a spare monitor there).
"""

import json
import os
import socket
import threading
import time

import pytest

import bjtest
from bjtest import QMPClient, QMPClosed, QMPError


def error_of(reply):
    assert 'error' in reply, reply
    assert set(reply['error']) == {'class', 'desc'}, reply
    return reply['error']['class'], reply['error']['desc']


def read_until_id(client, want_id, timeout=60):
    """Skips error replies (of garbage) until the reply carrying want_id."""
    deadline = time.monotonic() + timeout
    skipped = []
    while time.monotonic() < deadline:
        msg = client.recv_reply(timeout=max(0.1, deadline - time.monotonic()))
        if msg.get('id') == want_id:
            return msg, skipped
        skipped.append(msg)
    raise TimeoutError('no reply with id %r' % (want_id,))


# ---- greeting and negotiation ---------------------------------------------

def test_greeting(daemon, qsd):
    c = daemon.new_client(negotiate=False)
    g = c.greeting
    assert set(g) == {'QMP'}
    assert set(g['QMP']) == {'version', 'capabilities'}
    assert g['QMP']['capabilities'] == ['oob']
    v = g['QMP']['version']
    assert set(v) == {'qemu', 'package'}
    assert set(v['qemu']) == {'major', 'minor', 'micro'}
    assert all(isinstance(x, int) for x in v['qemu'].values())
    if not qsd:
        assert v['package'] == 'blockjobd 0.1.0'
        # the qemu release whose interface blockjobd speaks (README)
        assert v['qemu'] == {'major': 7, 'minor': 2, 'micro': 0}
    # query-version says the same as the greeting.
    c.negotiate()
    assert c.execute('query-version') == v


def test_messages_end_with_crlf(daemon):
    c = daemon.new_client(negotiate=False)
    c.send_raw(b'{"execute":"qmp_capabilities"}\n')
    deadline = time.monotonic() + 30
    while b'\n' not in c._buf and time.monotonic() < deadline:
        c._read_more(deadline)
    line = c._buf[:c._buf.index(b'\n') + 1]
    assert line == b'{"return": {}}\r\n'


def test_negotiation_rules(daemon):
    c = daemon.new_client(negotiate=False)
    for cmd in ('query-version', 'quit', 'nonexistent'):
        assert error_of(c.cmd(cmd)) == (
            'CommandNotFound',
            "Expecting capabilities negotiation with 'qmp_capabilities'")
    # Arguments are checked before negotiation completes.
    assert error_of(c.cmd('qmp_capabilities', enable='oob')) == (
        'GenericError',
        "Invalid parameter type for 'enable', expected: array")
    assert error_of(c.cmd('qmp_capabilities', enable=['foo'])) == (
        'GenericError', "Parameter 'null' does not accept value 'foo'")
    assert error_of(c.cmd('qmp_capabilities', enable=[1])) == (
        'GenericError',
        "Invalid parameter type for 'enable[0]', expected: string")
    assert error_of(c.cmd('qmp_capabilities', bogus=1)) == (
        'GenericError', "Parameter 'bogus' is unexpected")
    assert c.cmd('qmp_capabilities') == {'return': {}}
    assert error_of(c.cmd('qmp_capabilities')) == (
        'CommandNotFound',
        'Capabilities negotiation is already complete, command ignored')
    assert 'return' in c.cmd('query-version')


def test_oob(daemon):
    c = daemon.new_client(negotiate=False)
    assert c.execute('qmp_capabilities', enable=['oob']) == {}
    r = c.cmd_raw({'exec-oob': 'query-version', 'id': 'o1'})
    assert r['id'] == 'o1'
    assert error_of(r) == ('GenericError',
                           'The command query-version does not support OOB')
    r = c.cmd_raw({'exec-oob': 'nope', 'id': 'o2'})
    assert error_of(r) == ('CommandNotFound',
                           'The command nope has not been found')
    r = c.cmd_raw({'exec-oob': 'query-version', 'execute': 'query-version',
                   'id': 'o4'})
    assert r['id'] == 'o4'
    assert error_of(r) == ('GenericError',
                           "QMP input member 'execute' clashes with "
                           "'exec-oob'")
    # With oob enabled, plain commands need no id.
    assert set(c.cmd('query-version')) == {'return'}
    r = c.cmd_raw({'exec-oob': 1, 'id': 'o3'})
    assert error_of(r) == ('GenericError',
                           "QMP input member 'exec-oob' must be a string")
    # Without the capability exec-oob is just an unknown member.
    d = daemon.qmp
    assert error_of(d.cmd_raw({'exec-oob': 'query-version'})) == (
        'GenericError', "QMP input member 'exec-oob' is unexpected")


# ---- replies, errors, ids --------------------------------------------------

IDS = [1, 0, -7, 'x', '', 'a\'b"c', [1, {'a': 2}], {'k': [1, 2], 'j': None},
       True, None, 1.5, 2 ** 64, 'caf\u00e9 \U0001F600']


def test_id_echo(daemon):
    q = daemon.qmp
    for i in IDS:
        r = q.cmd_raw({'execute': 'query-version', 'id': i})
        assert r['id'] == i and 'return' in r, (i, r)
        r = q.cmd_raw({'execute': 'nope', 'id': i})
        assert r['id'] == i and 'error' in r, (i, r)
        r = q.cmd_raw({'execute': 'query-version', 'arguments': {'x': 1},
                       'id': i})
        assert r['id'] == i and error_of(r)[1] == \
            "Parameter 'x' is unexpected", (i, r)
    # Output is ASCII whatever the id holds.
    q.send_raw(json.dumps({'execute': 'query-version',
                           'id': 'caf\u00e9'}, ensure_ascii=False).encode()
               + b'\n')
    assert q.recv_reply()['id'] == 'caf\u00e9'


def test_reply_without_id_has_none(daemon):
    r = daemon.qmp.cmd('query-version')
    assert set(r) == {'return'}
    r = daemon.qmp.cmd('nope')
    assert set(r) == {'error'}


# (request, error class, desc) as qemu-storage-daemon 7.2 answers them.
BAD_REQUESTS = [
    ('[1]', 'GenericError', 'QMP input must be a JSON object'),
    ('1', 'GenericError', 'QMP input must be a JSON object'),
    ('"str"', 'GenericError', 'QMP input must be a JSON object'),
    ('{}', 'GenericError', "QMP input lacks member 'execute'"),
    ('{"id":1}', 'GenericError', "QMP input lacks member 'execute'"),
    ('{"execute":1}', 'GenericError',
     "QMP input member 'execute' must be a string"),
    ('{"foo":1}', 'GenericError', "QMP input member 'foo' is unexpected"),
    ('{"execute":"query-version","foo":1}', 'GenericError',
     "QMP input member 'foo' is unexpected"),
    ('{"execute":"query-version","control":{}}', 'GenericError',
     "QMP input member 'control' is unexpected"),
    ('{"execute":"query-version","arguments":[]}', 'GenericError',
     "QMP input member 'arguments' must be an object"),
    ('{"execute":"query-version","arguments":null}', 'GenericError',
     "QMP input member 'arguments' must be an object"),
    ('{"execute":"query-version","arguments":{"x":1}}', 'GenericError',
     "Parameter 'x' is unexpected"),
    ('{"execute":"nope"}', 'CommandNotFound',
     'The command nope has not been found'),
    ('{"execute":"blockdev-del"}', 'GenericError',
     "Parameter 'node-name' is missing"),
    ('{"execute":"blockdev-del","arguments":{"node-name":1}}',
     'GenericError',
     "Invalid parameter type for 'node-name', expected: string"),
    ('{"execute":"query-named-block-nodes","arguments":{"flat":"yes"}}',
     'GenericError', "Invalid parameter type for 'flat', expected: boolean"),
    ('{"execute":"blockdev-add","arguments":{"node-name":"a"}}',
     'GenericError', "Parameter 'driver' is missing"),
    ('{"execute":"blockdev-add","arguments":{"driver":"bogus",'
     '"node-name":"a"}}', 'GenericError',
     "Parameter 'driver' does not accept value 'bogus'"),
    ('{"execute":"blockdev-add","arguments":{"driver":"raw",'
     '"node-name":"a","file":{"driver":"null-co","bogus":1}}}',
     'GenericError', "Parameter 'file.bogus' is unexpected"),
    ('{"execute":"blockdev-add","arguments":{"driver":"raw",'
     '"node-name":"a","file":1}}', 'GenericError',
     "Invalid parameter type for 'file', expected: BlockdevRef"),
    ('{"execute":"blockdev-add","arguments":{"driver":"raw",'
     '"node-name":"a","file":{"driver":"null-co"},"cache":{"direct":"x"}}}',
     'GenericError',
     "Invalid parameter type for 'cache.direct', expected: boolean"),
]


def test_error_shapes(daemon):
    q = daemon.qmp
    for text, cls, desc in BAD_REQUESTS:
        q.send_raw(text.encode() + b'\n')
        r = q.recv_reply()
        assert error_of(r) == (cls, desc), text
        # An id, when the request had one and was an object, comes back.
        if text.startswith('{'):
            obj = json.loads(text)
            obj['id'] = 'tag'
            q.send_raw(json.dumps(obj).encode() + b'\n')
            r = q.recv_reply()
            assert r.get('id') == 'tag', (text, r)
            assert error_of(r) == (cls, desc), text


def test_query_commands(daemon):
    names = [c['name'] for c in daemon.qmp.execute('query-commands')]
    for n in ('qmp_capabilities', 'query-version', 'query-commands', 'quit',
              'blockdev-add', 'blockdev-del', 'query-named-block-nodes'):
        assert n in names
    assert len(names) == len(set(names))
    assert all(set(c) == {'name'}
               for c in daemon.qmp.execute('query-commands'))


# ---- JSON syntax ----------------------------------------------------------

JSON_ERRORS = [
    (b'}', 'JSON parse error, expecting value'),
    (b']', 'JSON parse error, expecting value'),
    (b'{"execute":"query-version",}', 'JSON parse error, expecting value'),
    (b'abc', "JSON parse error, invalid keyword 'abc'"),
    (b'{"a" 1}', 'JSON parse error, missing : in object pair'),
    (b'{"execute":"query-version" "id":1}',
     'JSON parse error, expected separator in dict'),
    (b'{"execute":"x","id":"\\q"}',
     'JSON parse error, invalid escape sequence in string'),
    (b'{"execute":"x","id":"\x80"}',
     'JSON parse error, invalid UTF-8 sequence in string'),
]


def test_json_errors(daemon):
    q = daemon.qmp
    for text, desc in JSON_ERRORS:
        q.send_raw(text + b'\n')
        r = q.recv_reply()
        assert r == {'error': {'class': 'GenericError', 'desc': desc}}, text
    # A value split across writes and lines is still one value.
    q.send_raw(b'{"execute":\n')
    time.sleep(0.05)
    q.send_raw(b'"query-version",\r\n "id": 5}')
    assert q.recv_reply()['id'] == 5
    # Several values in one write, each answered in order.
    q.send_raw(b'{"execute":"query-version","id":1}{"execute":'
               b'"query-version","id":2} x {"execute":"query-version",'
               b'"id":3}\n')
    assert q.recv_reply()['id'] == 1
    assert q.recv_reply()['id'] == 2
    assert error_of(q.recv_reply()) == (
        'GenericError', "JSON parse error, invalid keyword 'x'")
    assert q.recv_reply()['id'] == 3


def test_single_quotes(daemon):
    q = daemon.qmp
    q.send_raw(b"{'execute':'query-version', 'id':'x'}\n")
    assert q.recv_reply()['id'] == 'x'
    q.send_raw(b"{'execute':'query-version', 'id':'a\\'b\"c'}\n")
    assert q.recv_reply()['id'] == 'a\'b"c'
    q.send_raw(b'{"execute":"query-version", "id":"a\\\'b"}\n')
    assert q.recv_reply()['id'] == "a'b"


def test_reset_byte(daemon):
    q = daemon.qmp
    # 0xFF abandons a half-sent value; the error reply marks the reset.
    q.send_raw(b'{"execute":"query-version", "id": [1, 2\xff')
    assert error_of(q.recv_reply()) == (
        'GenericError', "JSON parse error, stray '\ufffd'")
    q.send_raw(b'{"execute":"query-version","id":"after"}\n')
    assert q.recv_reply()['id'] == 'after'
    # A raw newline ends a runaway string; the next line works.
    q.send_raw(b'{"execute":"query-version","id":"abc\n')
    r = q.recv_reply()
    assert error_of(r)[1].startswith('JSON parse error, stray ')
    q.send_raw(b'{"execute":"query-version","id":"next"}\n')
    assert q.recv_reply()['id'] == 'next'


def test_nesting_limit(daemon):
    q = daemon.qmp
    q.send_raw(b'{"execute":"query-version","id":' + b'[' * 500 + b'1'
               + b']' * 500 + b'}\n')
    r = q.recv_reply()
    assert 'return' in r
    q.send_raw(b'[' * 1025 + b']' * 1025 + b'\n')
    r = q.recv_reply()
    assert r == {'error': {'class': 'GenericError',
                           'desc': 'JSON nesting depth limit exceeded'}}
    q.send_raw(b'{"execute":"query-version","id":"ok"}\n')
    msg, skipped = read_until_id(q, 'ok')
    assert 'return' in msg
    # blockjobd reports the over-deep value once; qemu also complains about
    # each of the leftover closing brackets.
    assert all('error' in s for s in skipped)


# ---- several clients, events ----------------------------------------------

def test_several_clients_negotiate_separately(daemon):
    a = daemon.qmp
    b = daemon.new_client(negotiate=False)
    c = daemon.new_client(negotiate=False)
    assert error_of(b.cmd('query-version'))[0] == 'CommandNotFound'
    assert 'return' in a.cmd('query-version')
    c.negotiate()
    assert 'return' in c.cmd('query-version')
    assert error_of(b.cmd('query-version'))[0] == 'CommandNotFound'
    b.negotiate()
    # Interleaved requests each get their own replies.
    for i in range(20):
        for cl in (a, b, c):
            cl.send({'execute': 'query-version', 'id': i})
    for cl in (a, b, c):
        for i in range(20):
            assert cl.recv_reply()['id'] == i


def _export_event(daemon, tag):
    """Raises BLOCK_EXPORT_DELETED for export `tag`."""
    q = daemon.qmp
    q.execute('block-export-add', {'type': 'nbd', 'id': tag,
                                   'node-name': 'n0', 'name': tag})
    q.execute('block-export-del', id=tag)


@pytest.fixture
def nbd_daemon(daemon_factory):
    d = daemon_factory('--blockdev', 'driver=null-co,node-name=n0,size=1048576')
    d.qmp.execute('nbd-server-start', addr={
        'type': 'unix', 'data': {'path': d.socket_path('nbd.sock')}})
    return d


def test_events_only_to_negotiated(nbd_daemon):
    d = nbd_daemon
    other = d.new_client(negotiate=True)
    waiting = d.new_client(negotiate=False)
    _export_event(d, 'e1')
    for cl in (d.qmp, other):
        ev = cl.wait_event('BLOCK_EXPORT_DELETED', timeout=30)
        assert ev['data'] == {'id': 'e1'}
        ts = ev['timestamp']
        assert set(ts) == {'seconds', 'microseconds'}
        assert abs(ts['seconds'] - time.time()) < 600
        assert 0 <= ts['microseconds'] < 1000000
        assert set(ev) == {'event', 'data', 'timestamp'}
    # The client still negotiating saw nothing; after negotiating it gets
    # the next event only.
    assert waiting.recv(timeout=0.5) is None
    waiting.negotiate()
    _export_event(d, 'e2')
    ev = waiting.wait_event('BLOCK_EXPORT_DELETED', timeout=30)
    assert ev['data'] == {'id': 'e2'}
    assert waiting.get_events() == []


# ---- hostile input and disconnects ----------------------------------------

def test_binary_garbage(daemon):
    victim = daemon.new_client(negotiate=True)
    other = daemon.qmp
    blob = bytes((i * 73 + 11) % 256 for i in range(64 * 1024))
    victim.send_raw(blob)
    # Whatever the garbage did, a reset byte and a newline give a clean
    # parser: the command after them is answered.
    victim.send_raw(b'\xff\n{"execute":"query-version","id":"clean"}\n')
    msg, skipped = read_until_id(victim, 'clean')
    assert 'return' in msg
    assert all(error_of(s)[0] == 'GenericError' for s in skipped)
    assert 'return' in other.cmd('query-version')


def vm_kib(pid, field):
    with open('/proc/%d/status' % pid) as f:
        return int([l for l in f if l.startswith(field + ':')][0].split()[1])


TOKEN_MAX_MIB = 64    # JSON_STREAM_MAX_SIZE, docs/limits.md


@pytest.mark.blockjobd_only('qemu-storage-daemon parses ~13 s per MiB')
@pytest.mark.no_valgrind('its RSS bound is measured with the native allocator')
@pytest.mark.no_tsan('its RSS bound is measured with the native allocator')
@pytest.mark.timeout(300)
def test_huge_line(daemon_factory):
    """A 100 MiB line is refused once it passes the 64 MiB token bound, and
    the daemon never holds more than that bound for it."""
    env = bjtest.sanitizer_env()
    # Freed buffers must leave the RSS at once, or ASan's quarantine (up
    # to 256 MiB) would be counted as held input.
    env['ASAN_OPTIONS'] += ':quarantine_size_mb=0'
    daemon = daemon_factory(env=env)
    victim = daemon.new_client(negotiate=True)
    other = daemon.qmp
    base = vm_kib(daemon.pid, 'VmRSS')
    size = 100 << 20
    chunk = b'a' * (1 << 20)
    done = threading.Event()
    errors = []

    def push():
        try:
            victim.send_raw(b'{"execute":"query-version","id":"')
            for _ in range(size // len(chunk)):
                victim.send_raw(chunk)
            victim.send_raw(b'"}\n{"execute":"query-version","id":"small"}\n')
        except OSError as e:
            errors.append(e)
        finally:
            done.set()

    t = threading.Thread(target=push)
    t.start()
    # Other clients are served while the big line streams in.
    for i in range(5):
        assert other.cmd_raw({'execute': 'query-version', 'id': i})['id'] == i
    r = victim.recv_reply(timeout=240)
    assert r == {'error': {'class': 'GenericError',
                           'desc': 'JSON token size limit exceeded'}}
    t.join(240)
    assert done.is_set() and not errors
    r = victim.recv_reply(timeout=60)
    assert r['id'] == 'small' and 'return' in r
    assert 'return' in other.cmd('query-version')
    peak = (vm_kib(daemon.pid, 'VmHWM') - base) >> 10
    held = (vm_kib(daemon.pid, 'VmRSS') - base) >> 10
    print('huge line: peak +%d MiB, after +%d MiB' % (peak, held))
    # The token buffer at its bound, plus the half-size buffer that a
    # realloc copies from while growing to it, plus slack.
    assert peak < TOKEN_MAX_MIB + TOKEN_MAX_MIB // 2 + 16, peak
    # The buffer is given back once the token is refused.
    assert held < 16, held


@pytest.mark.blockjobd_only('qemu-storage-daemon serves one client per socket')
def test_disconnect_mid_command(daemon):
    path = daemon.sock_path
    for payload in (b'{"execute":"query-version"',        # half a command
                    b'{"execute":"query-commands"}\n',    # reply unread
                    b'{"execute":"qmp_capabilities"}\n'
                    b'{"execute":"query-commands","id":"' + b'z' * 300000
                    + b'"}\n'):                           # big reply unread
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(payload)
        s.close()
    # A client that goes away while its greeting is still queued.
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.close()
    time.sleep(0.2)
    assert daemon.running()
    assert 'return' in daemon.qmp.cmd('query-version')
    c = daemon.new_client(negotiate=True)
    assert 'return' in c.cmd('query-version')


@pytest.mark.blockjobd_only('qemu-storage-daemon serves one client per socket')
def test_half_close_gets_replies(daemon):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(daemon.sock_path)
    s.sendall(b'{"execute":"qmp_capabilities"}\n'
              b'{"execute":"query-version","id":7}\n')
    s.shutdown(socket.SHUT_WR)
    data = b''
    s.settimeout(30)
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    lines = [json.loads(l) for l in data.split(b'\r\n') if l]
    assert 'QMP' in lines[0]
    assert lines[1] == {'return': {}}
    assert lines[2]['id'] == 7


@pytest.mark.blockjobd_only('qemu-storage-daemon serves one client per socket')
def test_many_clients_one_socket(daemon):
    clients = [QMPClient(daemon.sock_path, negotiate=True) for _ in range(30)]
    try:
        for i, c in enumerate(clients):
            c.send({'execute': 'query-version', 'id': i})
        for i, c in enumerate(clients):
            assert c.recv_reply()['id'] == i
    finally:
        for c in clients:
            c.close()


def test_pipelined_commands(daemon):
    q = daemon.qmp
    n = 2000
    q.send_raw(b''.join(b'{"execute":"query-version","id":%d}\n' % i
                        for i in range(n)))
    for i in range(n):
        assert q.recv_reply()['id'] == i


@pytest.mark.blockjobd_only('relies on several clients on one socket')
def test_client_not_reading_is_not_blocking_others(daemon):
    lazy = QMPClient(daemon.sock_path, negotiate=True)
    try:
        lazy.sock.setblocking(False)
        payload = b'{"execute":"query-commands"}\n' * 2000
        sent = 0
        # Push until the daemon stops reading us (our send would block).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sent < 200 * len(payload):
            try:
                sent += lazy.sock.send(payload)
            except BlockingIOError:
                break
        assert 'return' in daemon.qmp.cmd('query-version')
    finally:
        lazy.close()
    assert 'return' in daemon.qmp.cmd('query-version')


# ---- quit ------------------------------------------------------------------

def test_quit(daemon):
    other = daemon.new_client(negotiate=True)
    assert daemon.qmp.cmd_raw({'execute': 'quit', 'id': 'bye'}) == \
        {'return': {}, 'id': 'bye'}
    # Every client sees the end of the stream, then the process exits
    # cleanly and takes its socket with it.
    with pytest.raises(QMPClosed):
        other.recv(timeout=30)
    assert daemon.wait(30) == 0
    daemon.check(0)
    assert not os.path.exists(daemon.sock_path)


def test_quit_with_arguments_refused(daemon):
    assert error_of(daemon.qmp.cmd('quit', x=1)) == (
        'GenericError', "Parameter 'x' is unexpected")
    assert daemon.running()


# ---- command line --------------------------------------------------------

CHARDEV_ERRORS = [
    ('socket,id=m,path={p},server=on,wait=off,bogus=1',
     "Invalid parameter 'bogus'"),
    ('bogus,id=m', "'bogus' is not a valid char driver name"),
    ('socket,path={p},server=on,wait=off', 'chardev: no id specified'),
    ('socket,id=1m,path={p},server=on,wait=off',
     "Parameter 'id' expects an identifier"),
    ('socket,id=m,path={p},server=x,wait=off',
     "Parameter 'server' expects 'on' or 'off'"),
    ('socket,id=m,path={d}/nonexist/c.sock,server=on,wait=off',
     'Failed to bind socket to {d}/nonexist/c.sock: '
     'No such file or directory'),
    ('id=m', 'chardev: "m" missing backend'),
]


def test_chardev_errors(sockdir, binary):
    p = os.path.join(sockdir, 'c.sock')
    for opt, msg in CHARDEV_ERRORS:
        r = bjtest.run_blockjobd('--chardev', opt.format(p=p, d=sockdir))
        assert r.returncode == 1, (opt, r.stderr)
        assert msg.format(d=sockdir) in r.stderr, (opt, r.stderr)


@pytest.mark.blockjobd_only('qemu-storage-daemon supports other backends')
def test_chardev_unsupported_shapes(sockdir):
    p = os.path.join(sockdir, 'c.sock')
    for opt, word in (('file,id=m,path=%s' % p, "'file'"),
                      ('socket,id=m,host=localhost,port=4444,server=on,'
                       'wait=off,telnet=on', "'telnet'"),
                      ('socket,id=m,path=%s,server=on,wait=on' % p,
                       'wait=off'),
                      ('socket,id=m,path=%s' % p, 'server=on')):
        r = bjtest.run_blockjobd('--chardev', opt)
        assert r.returncode == 1, (opt, r.stderr)
        assert word in r.stderr, (opt, r.stderr)


def test_monitor_errors(sockdir, qsd):
    p = os.path.join(sockdir, 'c.sock')
    chardev = ['--chardev', 'socket,id=m,path=%s,server=on,wait=off' % p]
    for args, msg in (
            (['--monitor', 'chardev=nope'], 'chardev "nope" not found'),
            (chardev + ['--monitor', 'chardev=m,mode=readline'],
             'Only QMP is supported'),
            (chardev + ['--monitor', 'chardev=m,bogus=1'],
             "Parameter 'bogus' is unexpected"),
            (chardev + ['--monitor', 'chardev=m,pretty=x'],
             "Parameter 'pretty' expects 'on' or 'off'"),
            (chardev + ['--monitor', 'chardev=m', '--monitor', 'chardev=m'],
             "Device 'm' is in use")):
        r = bjtest.run_blockjobd(*args)
        assert r.returncode == 1, (args, r.stderr)
        assert msg in r.stderr, (args, r.stderr)
        # qemu-storage-daemon leaves the socket file behind; we do not.
        assert qsd or not os.path.exists(p), args


def test_stale_socket_replaced(daemon_factory, sockdir):
    p = os.path.join(sockdir, 'stale.sock')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(p)          # a socket file nobody listens on
    s.close()
    d = daemon_factory('--chardev',
                       'socket,id=extra,path=%s,server=on,wait=off' % p,
                       '--monitor', 'chardev=extra')
    c = QMPClient(p, negotiate=True)
    try:
        assert 'return' in c.cmd('query-version')
    finally:
        c.close()
    d.stop()
    assert not os.path.exists(p)


def test_pretty_monitor(daemon_factory, sockdir):
    p = os.path.join(sockdir, 'pretty.sock')
    daemon_factory('--chardev', 'socket,id=pp,path=%s,server=on,wait=off' % p,
                   '--monitor', 'chardev=pp,pretty=on')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(p)
    s.settimeout(30)
    s.sendall(b'{"execute":"qmp_capabilities"}\n'
              b'{"execute":"query-version","id":[1]}\n')
    data = b''
    while data.count(b'\r\n}\r\n') < 3:
        d = s.recv(65536)
        assert d, data
        data += d
    s.close()
    assert data.startswith(b'{\r\n    "QMP": {\r\n')
    assert b'\n' not in data.replace(b'\r\n', b'')
    msgs = [json.loads(m + b'}') for m in data.split(b'\r\n}\r\n') if m]
    assert 'QMP' in msgs[0]
    assert msgs[1] == {'return': {}}
    assert msgs[2]['id'] == [1] and 'return' in msgs[2]


@pytest.mark.blockjobd_only('qemu-storage-daemon serves one client per socket')
def test_disconnect_while_commands_run(daemon, workdir):
    img = os.path.join(str(workdir), 'd.img')
    with open(img, 'wb') as f:
        f.truncate(1 << 20)
    # Opening a file node waits in the event loop; the client that asked
    # is gone by the time the replies are ready.
    reqs = []
    for i in range(30):
        reqs.append({'execute': 'blockdev-add', 'arguments': {
            'driver': 'file', 'node-name': 'f%d' % i, 'filename': img,
            'locking': 'off'}})
        reqs.append({'execute': 'blockdev-del',
                     'arguments': {'node-name': 'f%d' % i}})
    payload = b'{"execute":"qmp_capabilities"}\n' + b''.join(
        json.dumps(r).encode() + b'\n' for r in reqs)
    busy = daemon.new_client(negotiate=True)
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(daemon.sock_path)
        s.sendall(payload)
        busy.send({'execute': 'query-version', 'id': 'b'})
        s.close()
        assert busy.recv_reply()['id'] == 'b'
    # Commands not yet started when their client vanished may be dropped
    # (QEMU drops them too); whatever was opened is intact and deletable.
    empty_twice = [0]

    def cleaned():
        nodes = daemon.qmp.execute('query-named-block-nodes')
        for node in nodes:
            # A node still being opened for the vanished client may not be
            # deletable yet; the next round gets it.
            daemon.qmp.cmd('blockdev-del', node_name=node['node-name'])
        empty_twice[0] = empty_twice[0] + 1 if not nodes else 0
        time.sleep(0.2)
        return empty_twice[0] >= 2

    bjtest.wait_until(cleaned, timeout=60, what='file nodes deleted')
    assert 'return' in daemon.qmp.cmd('query-version')
