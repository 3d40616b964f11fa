"""The daemon's command line, start-up, pidfile, daemonizing and shutdown.

Expected messages were observed on qemu-storage-daemon 7.2; run with
BLOCKJOBD_BIN=/usr/bin/qemu-storage-daemon to check them against it.
"""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from bjtest import (QMPClient, QMPError, daemon_bin, is_qsd, qemu_img,
                    run_blockjobd, sanitizer_env, check_sanitizer_text,
                    check_valgrind_logs, wait_until, wrap_command)

PROG = 'qemu-storage-daemon' if is_qsd() else 'blockjobd'


def make_image(path, size='1M'):
    qemu_img('create', '-q', '-f', 'raw', str(path), size)
    return str(path)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not reaped yet) counts as gone.
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split(')')[-1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


def read_pidfile(path):
    """The pidfile's text once written: the monitor socket comes up during
    start-up, the pidfile only at its end."""
    def written():
        try:
            return open(path).read().endswith('\n')
        except FileNotFoundError:
            return False
    wait_until(written, 30, what='pidfile %s written' % path)
    return open(path).read()


def monitor_args(path, cid='qmp0'):
    return ['--chardev', 'socket,id=%s,path=%s,server=on,wait=off'
            % (cid, path), '--monitor', 'chardev=%s' % cid]


# ---- -h, -V, -T ---------------------------------------------------------

def test_help():
    p = run_blockjobd('-h')
    assert p.returncode == 0
    assert p.stdout.startswith('Usage: %s [options]\n' % PROG)
    for opt in ('--blockdev', '--chardev', '--monitor', '--object',
                '--pidfile', '--daemonize', '--nbd-server', '--export',
                '-V, --version', '-h, --help'):
        assert opt in p.stdout
    assert run_blockjobd('--help').stdout == p.stdout


def test_version():
    p = run_blockjobd('-V')
    assert p.returncode == 0
    assert p.stdout.startswith('%s version ' % PROG)
    assert run_blockjobd('--version').stdout == p.stdout


def test_help_wins_over_later_options():
    # -h is handled before anything is created.
    p = run_blockjobd('-h', '--blockdev', 'driver=file,node-name=x,'
                      'filename=/nonexistent')
    assert p.returncode == 0
    assert p.stdout.startswith('Usage:')


def test_trace_option_accepted(daemon_factory):
    d = daemon_factory('-T', 'nonexistent_event')
    assert d.qmp.execute('query-version')['qemu']
    d.stop()


def test_object_help():
    p = run_blockjobd('--object', 'help')
    assert p.returncode == 0
    assert p.stdout.startswith('List of user creatable objects:\n')
    assert '  iothread\n' in p.stdout


# ---- bad options --------------------------------------------------------

BAD_OPTIONS = [
    (['--bogus'], "unrecognized option '--bogus'"),
    (['-x'], "invalid option -- 'x'"),
    (['--blockdev'], "option '--blockdev' requires an argument"),
    (['--pidfile'], "option '--pidfile' requires an argument"),
    (['stray'], 'stray: Unexpected argument'),
    (['--blockdev', 'driver=file'],
     "--blockdev driver=file: Parameter 'filename' is missing"),
    (['--blockdev', 'driver=file,node-name=f,filename=/nonexistent'],
     "--blockdev driver=file,node-name=f,filename=/nonexistent: Could not "
     "open '/nonexistent': No such file or directory"),
    (['--blockdev', 'driver=null-co,node-name=n,latency-ns=abc'],
     "--blockdev driver=null-co,node-name=n,latency-ns=abc: Parameter "
     "'latency-ns' expects integer"),
    (['--blockdev', 'driver=null-co,node-name=n,read-zeroes=maybe'],
     "--blockdev driver=null-co,node-name=n,read-zeroes=maybe: Parameter "
     "'read-zeroes' expects 'on' or 'off'"),
    (['--blockdev', 'driver=null-co,node-name=n',
      '--blockdev', 'driver=null-co,node-name=n'],
     "--blockdev driver=null-co,node-name=n: Duplicate nodes with "
     "node-name='n'"),
    (['--object', 'iothread'], "--object iothread: Parameter 'id' is missing"),
    (['--object', 'foo,id=x'],
     "--object foo,id=x: Parameter 'qom-type' does not accept value 'foo'"),
    (['--object', 'iothread,id=io0,bogus=1'],
     "--object iothread,id=io0,bogus=1: Parameter 'bogus' is unexpected"),
    (['--object', 'iothread,id=io0,poll-max-ns=x'],
     "--object iothread,id=io0,poll-max-ns=x: Parameter 'poll-max-ns' "
     "expects integer"),
    (['--object', 'iothread,id=io0', '--object', 'iothread,id=io0'],
     "--object iothread,id=io0: attempt to add duplicate property 'io0' to "
     "object (type 'container')"),
    (['--monitor', 'chardev=nope'],
     '--monitor chardev=nope: chardev "nope" not found'),
    (['--monitor', 'foo=bar'],
     "--monitor foo=bar: Parameter 'chardev' is missing"),
]


@pytest.mark.parametrize('args,message', BAD_OPTIONS,
                         ids=[' '.join(a) for a, _ in BAD_OPTIONS])
def test_bad_option(args, message):
    p = run_blockjobd(*args)
    assert p.returncode == 1
    # qsd's getopt messages start with argv[0] as given, a full path here.
    stderr = p.stderr.replace(daemon_bin() + ':', PROG + ':', 1)
    assert stderr == '%s: %s\n' % (PROG, message)
    assert p.stdout == ''


def test_bad_identifier():
    p = run_blockjobd('--object', 'iothread,id=1bad')
    assert p.returncode == 1
    assert p.stderr.startswith(
        "%s: --object iothread,id=1bad: Parameter 'id' expects an identifier\n"
        % PROG)


def test_bad_json_blockdev():
    p = run_blockjobd('--blockdev', '{bad')
    assert p.returncode == 1
    assert p.stderr.startswith('%s: --blockdev {bad: JSON parse error' % PROG)


# ---- options applied in order -------------------------------------------

def test_blockdev_must_follow_its_child(workdir):
    img = make_image(workdir / 'a.img')
    p = run_blockjobd('--blockdev', 'driver=raw,node-name=r,file=f',
                      '--blockdev', 'driver=file,node-name=f,filename=' + img)
    assert p.returncode == 1
    assert p.stderr == ("%s: --blockdev driver=raw,node-name=r,file=f: Cannot "
                        "find device='f' nor node-name='f'\n" % PROG)


def test_blockdev_forms(daemon_factory, workdir):
    """Dotted keys, JSON, and an inline child, in order."""
    a = make_image(workdir / 'a.img', '1M')
    b = make_image(workdir / 'b.img', '2M')
    d = daemon_factory(
        '--blockdev', 'driver=file,node-name=fa,filename=' + a,
        '--blockdev', json.dumps({'driver': 'raw', 'node-name': 'ra',
                                  'file': 'fa', 'read-only': True}),
        '--blockdev', 'raw,node-name=rb,file.driver=file,file.filename=' + b +
        ',file.node-name=fb',
        '--blockdev', 'driver=null-co,node-name=n,size=1048576,read-zeroes=on')
    nodes = {n['node-name']: n
             for n in d.qmp.execute('query-named-block-nodes')}
    assert set(nodes) == {'fa', 'ra', 'rb', 'fb', 'n'}
    assert nodes['ra']['drv'] == 'raw' and nodes['ra']['ro'] is True
    assert nodes['fa']['ro'] is False
    assert nodes['rb']['image']['virtual-size'] == 2 * 1024 * 1024
    assert nodes['fb']['file'] == b
    assert nodes['n']['image']['virtual-size'] == 1024 * 1024
    d.stop()


def test_option_with_equals_sign(daemon_factory, workdir):
    img = make_image(workdir / 'a.img')
    d = daemon_factory('--blockdev=driver=file,node-name=f,filename=' + img)
    assert [n['node-name'] for n in
            d.qmp.execute('query-named-block-nodes')] == ['f']
    d.stop()


def test_iothread_object(daemon_factory, workdir):
    img = make_image(workdir / 'a.img')
    d = daemon_factory('--object', 'iothread,id=io0',
                       '--object', '{"qom-type": "iothread", "id": "io1"}',
                       '--blockdev', 'driver=file,node-name=f,filename=' + img)
    assert d.qmp.execute('query-named-block-nodes')[0]['node-name'] == 'f'
    d.stop()


# ---- shutdown -----------------------------------------------------------

def test_quit(daemon):
    assert daemon.qmp.cmd('quit') == {'return': {}}
    assert daemon.wait() == 0
    daemon.check(0)
    assert not os.path.exists(daemon.sock_path)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT,
                                 signal.SIGHUP],
                         ids=['SIGTERM', 'SIGINT', 'SIGHUP'])
def test_signal_shutdown(daemon_factory, workdir, sig):
    img = make_image(workdir / 'a.img')
    pidfile = workdir / 'd.pid'
    d = daemon_factory('--blockdev', 'driver=file,node-name=f,filename=' + img,
                       '--blockdev', 'driver=raw,node-name=r,file=f',
                       '--pidfile', str(pidfile))
    assert read_pidfile(pidfile) == '%d\n' % d.pid
    d.send_signal(sig)
    assert d.wait() == 0
    d.check(0)
    assert not os.path.exists(d.sock_path)
    assert not pidfile.exists()
    # The image was closed: its locks are gone.
    qemu_img('info', '-f', 'raw', img)


def test_signal_while_client_connected(daemon):
    other = daemon.new_client()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait() == 0
    daemon.check(0)
    other.close()


def test_failed_startup_removes_socket(sockdir):
    sock = os.path.join(sockdir, 'm.sock')
    p = run_blockjobd(*monitor_args(sock), '--blockdev',
                      'driver=file,node-name=f,filename=/nonexistent')
    assert p.returncode == 1
    if not is_qsd():
        # qemu-storage-daemon leaves its socket behind; we clean up.
        assert not os.path.exists(sock)


def test_monitor_ready_after_earlier_options(daemon_factory, workdir):
    """The harness puts its monitor last, so a client that connects sees
    every node of the command line."""
    img = make_image(workdir / 'a.img')
    d = daemon_factory('--blockdev', 'driver=file,node-name=f,filename=' + img,
                       '--blockdev', 'driver=raw,node-name=r,file=f')
    assert sorted(n['node-name'] for n in
                  d.qmp.execute('query-named-block-nodes')) == ['f', 'r']


# ---- pidfile --------------------------------------------------------------

def test_pidfile_lock(daemon_factory, workdir):
    pidfile = workdir / 'd.pid'
    d = daemon_factory('--pidfile', str(pidfile))
    assert read_pidfile(pidfile) == '%d\n' % d.pid
    assert (os.stat(pidfile).st_mode & 0o777) == 0o600
    p = run_blockjobd('--pidfile', str(pidfile))
    assert p.returncode == 1
    assert p.stderr == ('%s: cannot create PID file: Cannot lock pid file: '
                        'Resource temporarily unavailable\n' % PROG)
    # The loser must not have touched the winner's file.
    assert pidfile.read_text() == '%d\n' % d.pid
    d.stop()
    assert not pidfile.exists()


@pytest.mark.blockjobd_only('qsd writes through the link')
@pytest.mark.parametrize('dangling', [False, True])
def test_pidfile_symlink_refused(workdir, dangling):
    """A pid file path that is a symlink is not followed: its target is
    neither truncated nor (dangling) created (docs/hardening.md)."""
    target = workdir / 'precious'
    if not dangling:
        target.write_text('keep me\n')
    link = workdir / 'd.pid'
    os.symlink(str(target), str(link))
    p = run_blockjobd('--pidfile', str(link))
    assert p.returncode == 1
    assert p.stderr == ("%s: cannot create PID file: Could not create '%s': "
                        "it is a symbolic link (a pid file is not written "
                        "through one)\n" % (PROG, link))
    if dangling:
        assert not target.exists()
    else:
        assert target.read_text() == 'keep me\n'
    assert os.path.islink(str(link))


@pytest.mark.blockjobd_only('qsd blocks opening a FIFO, and writes devices')
@pytest.mark.parametrize('kind', ['fifo', 'device'])
def test_pidfile_special_file_refused(workdir, kind):
    if kind == 'fifo':
        path = str(workdir / 'd.pid')
        os.mkfifo(path)
    else:
        path = '/dev/null'
    p = run_blockjobd('--pidfile', path)
    assert p.returncode == 1
    assert p.stderr == ("%s: cannot create PID file: Could not create '%s': "
                        "not a regular file\n" % (PROG, path))


def test_pidfile_stale_is_reused(daemon_factory, workdir):
    pidfile = workdir / 'd.pid'
    pidfile.write_text('999999999\nold junk\n')
    d = daemon_factory('--pidfile', str(pidfile))
    wait_until(lambda: pidfile.read_text() == '%d\n' % d.pid, 30,
               what='pidfile rewritten')
    d.stop()
    assert not pidfile.exists()


def test_pidfile_relative_path(daemon_factory, workdir):
    # The daemon runs in workdir, so a relative path lands there.
    d = daemon_factory('--pidfile', 'rel.pid')
    assert read_pidfile(workdir / 'rel.pid') == '%d\n' % d.pid
    d.stop()
    assert not (workdir / 'rel.pid').exists()


def test_pidfile_bad_directory():
    p = run_blockjobd('--pidfile', '/nonexistent/dir/d.pid')
    assert p.returncode == 1
    assert p.stderr == ("%s: cannot create PID file: Could not create "
                        "'/nonexistent/dir/d.pid': No such file or "
                        "directory\n" % PROG)


# ---- --daemonize ------------------------------------------------------------

def test_daemonize(workdir, sockdir):
    pidfile = str(workdir / 'd.pid')
    sock = os.path.join(sockdir, 'qmp.sock')
    img = make_image(workdir / 'a.img')
    errlog = workdir / 'parent.err'
    valgrind_base = str(workdir / 'daemonize.valgrind')
    with open(errlog, 'w') as err:
        # Under valgrind the forked daemon stays under it: its own log.
        p = subprocess.run(wrap_command(
                               [daemon_bin(), '--daemonize', '--pidfile',
                                pidfile, '--blockdev',
                                'driver=file,node-name=f,filename=' + img]
                               + monitor_args(sock), valgrind_base),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=err, timeout=60, env=sanitizer_env())
    assert p.returncode == 0, errlog.read_text()
    # Start-up is complete when the parent exits: pidfile and socket exist.
    pid = int(open(pidfile).read())
    try:
        assert pid_alive(pid)
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().split(')')[-1].split()
        # fields: state ppid pgrp session tty_nr ...
        assert int(fields[3]) != os.getsid(0)  # a new session...
        assert int(fields[3]) != pid           # ...it does not lead
        assert int(fields[4]) == 0             # no controlling terminal
        assert os.readlink('/proc/%d/cwd' % pid) == '/'
        assert os.readlink('/proc/%d/fd/2' % pid) == '/dev/null'
        with QMPClient(sock, negotiate=True) as c:
            assert c.execute('query-named-block-nodes')[0]['node-name'] == 'f'
            assert c.cmd('quit') == {'return': {}}
        wait_until(lambda: not pid_alive(pid), 30, what='daemon exit')
        assert not os.path.exists(pidfile)
        assert not os.path.exists(sock)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    check_sanitizer_text(errlog.read_text())
    check_valgrind_logs(valgrind_base)


def test_daemonize_startup_failure(workdir, sockdir):
    sock = os.path.join(sockdir, 'qmp.sock')
    p = run_blockjobd('--daemonize', *monitor_args(sock), '--blockdev',
                      'driver=file,node-name=f,filename=/nonexistent')
    assert p.returncode == 1
    assert p.stderr == ("%s: --blockdev driver=file,node-name=f,"
                        "filename=/nonexistent: Could not open '/nonexistent': "
                        "No such file or directory\n" % PROG)


# ---- monitors -----------------------------------------------------------

def test_two_monitor_sockets(daemon_factory, sockdir, workdir):
    s1 = os.path.join(sockdir, 'm1.sock')
    s2 = os.path.join(sockdir, 'm2.sock')
    d = daemon_factory(*monitor_args(s1, 'm1'), *monitor_args(s2, 'm2'),
                       monitors=1)
    img = make_image(workdir / 'a.img')
    with QMPClient(s1, negotiate=True) as c1, \
            QMPClient(s2, negotiate=True) as c2:
        c1.execute('blockdev-add', driver='file', node_name='f',
                   filename=img)
        assert [n['node-name'] for n in
                c2.execute('query-named-block-nodes')] == ['f']
        with pytest.raises(QMPError) as e:
            c2.execute('blockdev-add', driver='file', node_name='f',
                       filename=img)
        assert e.value.cls == 'GenericError'
        assert e.value.desc == "Duplicate nodes with node-name='f'"
        assert d.qmp.execute('query-version')
    d.stop()
    assert not os.path.exists(s1) and not os.path.exists(s2)


def test_monitor_refers_to_earlier_chardev(sockdir):
    s1 = os.path.join(sockdir, 'm1.sock')
    p = run_blockjobd('--monitor', 'chardev=m1',
                      '--chardev', 'socket,id=m1,path=%s,server=on,wait=off'
                      % s1)
    assert p.returncode == 1
    assert p.stderr == '%s: --monitor chardev=m1: chardev "m1" not found\n' \
        % PROG


def test_quit_closes_images(daemon, workdir):
    img = make_image(workdir / 'a.img', '4M')
    daemon.qmp.execute('blockdev-add', driver='file', node_name='f',
                       filename=img)
    daemon.qmp.execute('blockdev-add', driver='raw', node_name='r', file='f')
    daemon.stop()
    # No lock is left: qemu-img may now write the image.
    qemu_img('resize', '-f', 'raw', img, '8M')
    assert os.path.getsize(img) == 8 * 1024 * 1024


# Idle thread-pool workers exit after 10 s (POOL_IDLE_NS in
# src/aio/thread-pool.c); a worker that has exited must still be joined.
POOL_IDLE_S = 10


@pytest.mark.blockjobd_only('the thread pool of blockjobd')
@pytest.mark.tsan_only('only ThreadSanitizer sees an unjoined thread')
def test_quit_joins_idle_pool_workers(daemon_factory, workdir):
    """Opening the file node starts a pool worker; it exits idle before
    quit.  The shutdown joins it: ThreadSanitizer reports an exited thread
    nobody joined ("thread leak"), so only the TSan build can tell."""
    img = make_image(workdir / 'a.img')
    d = daemon_factory('--blockdev', 'driver=file,node-name=f,filename=' + img)
    time.sleep(POOL_IDLE_S + 2)
    d.stop()


def test_sigterm_with_nbd_client_writing(daemon_factory, workdir, sockdir):
    """Shutdown with a client in the middle of writing: every write that was
    acknowledged is in the image, the daemon exits 0 and the image is
    closed (qemu-img may lock it again)."""
    nbd = pytest.importorskip('nbd')
    img = make_image(workdir / 'a.img', '8M')
    nbdsock = os.path.join(sockdir, 'nbd.sock')
    d = daemon_factory(
        '--blockdev', 'driver=file,node-name=f,filename=' + img,
        '--blockdev', 'driver=raw,node-name=r,file=f',
        '--nbd-server', 'addr.type=unix,addr.path=' + nbdsock,
        '--export', 'type=nbd,id=e,node-name=r,name=disk,writable=on')
    h = nbd.NBD()
    h.set_export_name('disk')
    h.connect_unix(nbdsock)
    chunk = 64 * 1024
    for i in range(32):                      # 2 MiB, each one acknowledged
        h.pwrite(b'\xa5' * chunk, i * chunk)
    # More writes in flight, not waited for, when the signal arrives.
    bufs = [nbd.Buffer.from_bytearray(bytearray(b'\x5a' * chunk))
            for _ in range(32)]
    for i, b in enumerate(bufs):
        h.aio_pwrite(b, 4 * 1024 * 1024 + i * chunk)
    d.send_signal(signal.SIGTERM)
    assert d.wait() == 0
    d.check(0)
    try:
        h.shutdown()
    except nbd.Error:
        pass                                 # the server is gone: fine
    del h
    if not is_qsd():
        # qemu-storage-daemon leaves its NBD socket behind; we clean up.
        assert not os.path.exists(nbdsock)
    p = qemu_io_check(img, 'read -P 0xa5 0 2M')
    assert 'Pattern verification failed' not in p.stdout
    qemu_img('resize', '-f', 'raw', img, '16M')   # no lock left behind


def qemu_io_check(img, *cmds):
    args = []
    for c in cmds:
        args += ['-c', c]
    p = subprocess.run(['qemu-io', '-f', 'raw'] + args + [img],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def test_monitor_implied_chardev_key(daemon_factory, sockdir):
    s1 = os.path.join(sockdir, 'm1.sock')
    d = daemon_factory('--chardev', 'socket,id=m1,path=%s,server=on,wait=off'
                       % s1, '--monitor', 'm1,mode=control,pretty=on')
    with QMPClient(s1, negotiate=True) as c:
        assert c.execute('query-version')['qemu']
    d.stop()


@pytest.mark.parametrize('mon,message', [
    ('m1,mode=readline', 'Only QMP is supported'),
    ('m1,pretty=maybe', "Parameter 'pretty' expects 'on' or 'off'"),
])
def test_monitor_bad_options(sockdir, mon, message):
    s1 = os.path.join(sockdir, 'm1.sock')
    p = run_blockjobd('--chardev', 'socket,id=m1,path=%s,server=on,wait=off'
                      % s1, '--monitor', mon)
    assert p.returncode == 1
    assert p.stderr == '%s: --monitor %s: %s\n' % (PROG, mon, message)


# ---- socket paths another daemon is serving ----------------------------

IN_USE = ('UNIX socket %s is in use: another process accepts connections '
          'on it')


@pytest.mark.blockjobd_only('qsd unlinks a live socket and takes its path '
                            'over, orphaning the first daemon\'s clients')
def test_live_monitor_socket_refused(daemon):
    chardev = 'socket,id=m,path=%s,server=on,wait=off' % daemon.sock_path
    p = run_blockjobd('--chardev', chardev, '--monitor', 'chardev=m')
    assert p.returncode == 1
    assert p.stderr == '%s: --chardev %s: %s\n' % (
        PROG, chardev, IN_USE % daemon.sock_path)
    # The first daemon still owns its path: a new client reaches it.
    with QMPClient(daemon.sock_path, negotiate=True) as c:
        assert c.execute('query-version')


@pytest.mark.blockjobd_only('qsd unlinks a live socket and takes its path '
                            'over, orphaning the first daemon\'s clients')
def test_live_nbd_socket_refused(daemon_factory, workdir):
    img = make_image(workdir / 'a.img')
    first = daemon_factory('--blockdev',
                           'driver=file,node-name=f,filename=' + img)
    nbd = first.socket_path('nbd.sock')
    first.qmp.execute('nbd-server-start',
                      addr={'type': 'unix', 'data': {'path': nbd}})
    first.qmp.execute('block-export-add', type='nbd', id='e', node_name='f')
    server = 'addr.type=unix,addr.path=' + nbd
    p = run_blockjobd('--nbd-server', server)
    assert p.returncode == 1
    assert p.stderr == '%s: --nbd-server %s: %s\n' % (PROG, server,
                                                        IN_USE % nbd)
    # Over QMP the same refusal, and the first export still serves.
    second = daemon_factory()
    with pytest.raises(QMPError) as e:
        second.qmp.execute('nbd-server-start',
                           addr={'type': 'unix', 'data': {'path': nbd}})
    assert e.value.desc == IN_USE % nbd
    p = subprocess.run(['qemu-img', 'info', '--output=json',
                        'nbd+unix:///f?socket=' + nbd],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)['virtual-size'] == 1024 * 1024


def test_stale_socket_replaced(daemon_factory, sockdir):
    """A socket file nobody listens on any more (its daemon was killed) is
    replaced, as before."""
    path = os.path.join(sockdir, 'm.sock')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()       # the file stays; connect() now gets ECONNREFUSED
    d = daemon_factory(*monitor_args(path, 'm'))
    with QMPClient(path, negotiate=True) as c:
        assert c.execute('query-version')
    d.stop()


def test_image_lock_hint(daemon_factory, workdir):
    """A second daemon writing a qcow2 image the first one writes is refused
    with qemu's message and its hint line, byte for byte."""
    img = str(workdir / 'q.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', img, '1M')
    nodes = ('--blockdev', 'driver=file,node-name=f,filename=' + img,
             '--blockdev', 'driver=qcow2,node-name=q,file=f')
    daemon_factory(*nodes)
    p = run_blockjobd(*nodes)
    assert p.returncode == 1
    assert p.stderr == ('%s: --blockdev driver=qcow2,node-name=q,file=f: '
                        'Failed to get "write" lock\n'
                        'Is another process using the image [%s]?\n'
                        % (PROG, img))
