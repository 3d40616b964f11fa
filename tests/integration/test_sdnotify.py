"""sd_notify(3) readiness: with $NOTIFY_SOCKET set (as systemd sets it for
a Type=notify unit), the daemon sends READY=1 with its pid once start-up
is complete, so commands already run when it arrives, and STOPPING=1 when
it shuts down; a start-up that fails sends nothing.  Both socket forms:
a path and an abstract name ("@...")."""

import os
import socket
import subprocess

import pytest

import bjtest

pytestmark = pytest.mark.blockjobd_only('qemu-storage-daemon 7.2 sends no '
                                        'sd_notify messages')


def notify_socket(tmp_path, abstract):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = '@bj-notify-%d-%d' % (os.getpid(), id(s))
        s.bind('\0' + name[1:])
    else:
        name = str(tmp_path / 'notify.sock')
        s.bind(name)
    s.settimeout(30 * bjtest.timeout_factor())
    return s, name


@pytest.mark.parametrize('abstract', [False, True])
def test_ready_then_stopping(tmp_path, binary, abstract):
    s, name = notify_socket(tmp_path, abstract)
    img = tmp_path / 'd.raw'
    img.write_bytes(b'\0' * 65536)
    d = bjtest.Daemon(tmp_path, ['--blockdev', 'driver=file,node-name=f,'
                                 'filename=%s' % img],
                      binary=binary, env=dict(os.environ, NOTIFY_SOCKET=name))
    try:
        d.start()
        msg = s.recv(4096).decode()
        assert msg == 'READY=1\nMAINPID=%d' % d.pid
        # ready means every option was applied and commands run
        assert [n['node-name'] for n in
                d.qmp.execute('query-named-block-nodes')] == ['f']
        d.qmp.execute('quit')
        assert s.recv(4096).decode() == 'STOPPING=1'
        d.wait(30)
    finally:
        d.cleanup()
        s.close()


def test_failed_start_sends_nothing(tmp_path, binary):
    s, name = notify_socket(tmp_path, False)
    s.settimeout(0)
    p = subprocess.run([binary, '--blockdev', 'driver=file,node-name=f,'
                        'filename=/nonexistent/x'], capture_output=True,
                       text=True, timeout=60,
                       env=bjtest.sanitizer_env(dict(os.environ,
                                                     NOTIFY_SOCKET=name)))
    assert p.returncode == 1
    with pytest.raises(BlockingIOError):
        s.recv(4096)
    s.close()


def test_bad_notify_socket_is_not_fatal(tmp_path, binary):
    """A NOTIFY_SOCKET nobody listens on: a warning, and the daemon runs."""
    d = bjtest.Daemon(tmp_path, [], binary=binary,
                      env=dict(os.environ,
                               NOTIFY_SOCKET=str(tmp_path / 'nobody')))
    try:
        d.start()
        d.qmp.execute('query-version')
        d.qmp.execute('quit')
        d.wait(30)
        assert 'sd_notify: cannot send to' in d.stderr()
    finally:
        d.cleanup()
