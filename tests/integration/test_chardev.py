"""Character devices and the monitors on them: QMP over TCP, over a
listening socket passed in by the parent (fd=), and over stdio; the
command-line refusals; chardev-add, chardev-remove, query-chardev and
query-chardev-backends.  Texts were observed on qemu-storage-daemon 7.2;
the tests run against it too, except where marked.
"""

import json
import os
import socket
import subprocess

import pytest

import bjtest
from bjtest import QMPError


class LineClient:
    """QMP over any stream: one JSON value a line each way."""

    def __init__(self, rfile, wfile):
        self.r, self.w = rfile, wfile
        self.greeting = self.recv()
        assert 'QMP' in self.greeting, self.greeting

    def recv(self):
        line = self.r.readline()
        assert line, 'connection closed'
        return json.loads(line)

    def execute(self, cmd, **args):
        self.w.write((json.dumps({'execute': cmd, 'arguments': args}) +
                      '\n').encode())
        self.w.flush()
        while True:
            msg = self.recv()
            if 'event' not in msg:
                return msg


def tcp_client(port):
    s = socket.create_connection(('127.0.0.1', port), timeout=30)
    c = LineClient(s.makefile('rb'), s.makefile('wb'))
    c.sock = s
    return c


def chardevs(qmp):
    return {c['label']: c for c in qmp.execute('query-chardev')}


def tcp_port(filename):
    """The port of a "[disconnected:]tcp:HOST:PORT,server=on[ <-> ...]"."""
    addr = filename.split('tcp:', 1)[1].split(',', 1)[0]
    return int(addr.rsplit(':', 1)[1])


def test_monitor_on_tcp(daemon_factory):
    d = daemon_factory('--chardev', 'socket,id=t0,host=127.0.0.1,port=0,'
                       'server=on,wait=off', '--monitor', 'chardev=t0')
    t0 = chardevs(d.qmp)['t0']
    assert t0['frontend-open'] is True
    assert t0['filename'].startswith('disconnected:tcp:127.0.0.1:')
    assert t0['filename'].endswith(',server=on')
    port = tcp_port(t0['filename'])
    c = tcp_client(port)
    assert c.execute('qmp_capabilities') == {'return': {}}
    assert 'qemu' in c.execute('query-version')['return']
    local = c.sock.getsockname()
    t0 = chardevs(d.qmp)['t0']
    assert t0['filename'] == 'tcp:127.0.0.1:%d,server=on <-> %s:%d' % (
        port, local[0], local[1])
    for f in (c.r, c.w, c.sock):
        f.close()
    bjtest.wait_until(lambda: chardevs(d.qmp)['t0']['filename'].startswith(
        'disconnected:'), what='the TCP client gone')


def test_monitor_on_a_passed_listening_socket(tmp_path, binary):
    lsock = socket.socket()
    lsock.bind(('127.0.0.1', 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]
    fd = lsock.fileno()
    p = subprocess.Popen([binary, '--chardev',
                          'socket,id=f0,fd=%d,server=on,wait=off' % fd,
                          '--monitor', 'chardev=f0'], pass_fds=[fd],
                         stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=bjtest.sanitizer_env())
    lsock.close()           # the daemon holds its own copy
    try:
        c = tcp_client(port)
        assert c.execute('qmp_capabilities') == {'return': {}}
        (f0,) = c.execute('query-chardev')['return']
        assert f0['label'] == 'f0' and f0['frontend-open'] is True
        assert f0['filename'].startswith('tcp:127.0.0.1:%d,server=on <-> '
                                         % port)
        assert c.execute('quit') == {'return': {}}
        assert p.wait(timeout=30) == 0
        bjtest.check_sanitizer_text(p.stderr.read().decode(), 'daemon')
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_monitor_on_stdio(binary):
    p = subprocess.Popen([binary, '--chardev', 'stdio,id=s0', '--monitor',
                          's0'], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=bjtest.sanitizer_env())
    try:
        c = LineClient(p.stdout, p.stdin)
        assert c.execute('qmp_capabilities') == {'return': {}}
        assert c.execute('query-chardev') == {'return': [
            {'label': 's0', 'filename': 'stdio', 'frontend-open': True}]}
        assert c.execute('quit') == {'return': {}}
        assert p.wait(timeout=30) == 0
        bjtest.check_sanitizer_text(p.stderr.read().decode(), 'daemon')
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_stdio_monitor_eof_leaves_the_daemon_running(daemon_factory, tmp_path,
                                                     binary):
    """stdin closed: the stdio client goes, the daemon and its other
    monitor stay (as in qsd)."""
    sock = os.path.join(str(tmp_path), 'q.sock')
    # the socket first: once stdio greets, it listens
    p = subprocess.Popen([binary, '--chardev',
                          'socket,id=m,path=%s,server=on,wait=off' % sock,
                          '--monitor', 'm', '--chardev', 'stdio,id=s0',
                          '--monitor', 's0'], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=bjtest.sanitizer_env())
    try:
        LineClient(p.stdout, p.stdin)
        p.stdin.close()
        q = bjtest.QMPClient(sock, negotiate=True)
        assert q.execute('query-chardev')   # still serving
        q.execute('quit')
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize('args, msg', [
    (['--chardev', 'socket,id=a,host=127.0.0.1,server=on,wait=off'],
     'chardev: socket: no port given'),
    (['--chardev', 'socket,id=a,path=/tmp/x.sock,host=127.0.0.1,port=1,'
      'server=on,wait=off'],
     "None or one of 'path', 'fd' or 'host' option required."),
    (['--chardev', 'socket,id=a,fd=0,server=on,wait=off'],
     "File descriptor '0' is not a socket"),
    (['--chardev', 'stdio,id=a', '--chardev', 'stdio,id=b'],
     'cannot use stdio by multiple character devices'),
    (['--chardev', 'stdio,id=a,foo=1'], "Invalid parameter 'foo'"),
    (['--chardev', 'stdio,id=a', '--daemonize'],
     'cannot use stdio with -daemonize'),
    (['--chardev', 'socket,id=a,host=127.0.0.1,port=notaport,server=on,'
      'wait=off'], 'address resolution failed for 127.0.0.1:notaport'),
])
def test_command_line_refusals(args, msg):
    r = bjtest.run_blockjobd(*args)
    assert r.returncode == 1, (args, r.stderr)
    assert msg in r.stderr, (args, r.stderr)


def test_chardev_add_remove_query(daemon, sockdir, qsd):
    qmp = daemon.qmp
    before = chardevs(qmp)
    path = os.path.join(sockdir, 'c1.sock')
    unix = {'type': 'socket', 'data': {
        'addr': {'type': 'unix', 'data': {'path': path}},
        'server': True, 'wait': False}}
    assert qmp.execute('chardev-add', id='c1', backend=unix) == {}
    assert os.path.exists(path)
    assert qmp.execute('chardev-add', id='n1',
                       backend={'type': 'null', 'data': {}}) == {}
    # QAPI's defaults: a server, not waiting
    inet = {'type': 'socket', 'data': {
        'addr': {'type': 'inet', 'data': {'host': '127.0.0.1',
                                          'port': '0'}}}}
    assert qmp.execute('chardev-add', id='t1', backend=inet) == {}
    now = chardevs(qmp)
    assert now['c1'] == {'label': 'c1', 'frontend-open': False,
                         'filename': 'disconnected:unix:%s,server=on' % path}
    assert now['n1'] == {'label': 'n1', 'frontend-open': False,
                         'filename': 'null'}
    assert now['t1']['filename'].startswith('disconnected:tcp:127.0.0.1:')
    assert tcp_port(now['t1']['filename']) > 0

    for args, msg in (
            ({'id': 'c1', 'backend': unix},
             "Chardev with id 'c1' already exists"),
            ({'id': 'qmp0', 'backend': unix},
             "Chardev with id 'qmp0' already exists")):
        with pytest.raises(QMPError) as e:
            qmp.execute('chardev-add', args)
        assert e.value.desc == msg
    for cid, msg in (('qmp0', "Chardev 'qmp0' is busy"),
                     ('nosuch', "Chardev 'nosuch' not found")):
        with pytest.raises(QMPError) as e:
            qmp.execute('chardev-remove', id=cid)
        assert e.value.desc == msg
    for cid in ('c1', 'n1', 't1'):
        assert qmp.execute('chardev-remove', id=cid) == {}
    assert chardevs(qmp) == before
    if not qsd:
        assert not os.path.exists(path)     # qsd leaves the file behind


def test_chardev_add_refusals(daemon):
    qmp = daemon.qmp
    before = chardevs(qmp)
    for args, msg in (
            ({'id': 'x', 'backend': {'type': 'socket', 'data': {
                'addr': {'type': 'carrier-pigeon', 'data': {}}}}},
             "Parameter 'type' does not accept value 'carrier-pigeon'"),
            ({'id': 'x', 'backend': {'type': 'socket', 'data': {
                'addr': {'type': 'unix', 'data': {}}}}},
             "Parameter 'backend.data.addr.data.path' is missing")):
        with pytest.raises(QMPError) as e:
            qmp.execute('chardev-add', args)
        assert e.value.desc == msg
    assert chardevs(qmp) == before


@pytest.mark.blockjobd_only('the backends we implement, and our refusals')
def test_backends_and_what_is_refused(daemon):
    qmp = daemon.qmp
    assert qmp.execute('query-chardev-backends') == [
        {'name': 'socket'}, {'name': 'stdio'}, {'name': 'null'}]
    with pytest.raises(QMPError) as e:
        qmp.execute('chardev-add', id='f', backend={
            'type': 'file', 'data': {'out': '/tmp/o'}})
    assert e.value.desc == ("chardev 'f': char driver 'file' is not "
                            "supported, only 'socket' (server=on, wait=off), "
                            "'stdio' and 'null'")
    with pytest.raises(QMPError) as e:
        qmp.execute('chardev-add', id='c', backend={
            'type': 'socket', 'data': {
                'addr': {'type': 'unix', 'data': {'path': '/tmp/never'}},
                'server': False}})
    assert 'server=on is required' in e.value.desc
    assert [c['label'] for c in qmp.execute('query-chardev')] == ['qmp0']
