"""What test_bjctl.py and test_bjctl_bitmap.py share: bjctl run against a
daemon that is either the one under test or qemu-storage-daemon 7.2 started
directly ('daemon' and 'qsd' runs of the same test).

    check_peer(kind)   skip a 'qsd' run this machine cannot make; fail when
                       bjctl is not built
    Env                a running daemon and bjctl pointed at it
"""

import os
import shutil
import subprocess

import pytest

import bjtest

QSD = shutil.which('qemu-storage-daemon')
MiB = 1024 * 1024


def bjctl_path():
    return bjtest.bjctl_bin()


def help_text(*command):
    """The stdout of `bjctl [COMMAND...] --help`, which must exit 0."""
    p = subprocess.run([bjctl_path(), *command, '--help'],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


def check_peer(kind):
    if kind == 'qsd':
        if QSD is None:
            pytest.skip('qemu-storage-daemon not installed')
        if bjtest.is_qsd():
            pytest.skip('the daemon under test is qemu-storage-daemon already')
    if not os.access(bjctl_path(), os.X_OK):
        pytest.fail('bjctl not built at %s' % bjctl_path(), pytrace=False)


class Env:
    """A daemon (d) and bjctl around it; qsd says whether the daemon is
    qemu-storage-daemon."""

    def __init__(self, daemon, workdir, qsd):
        self.d = daemon
        self.workdir = str(workdir)
        self.qsd = qsd

    def sock(self, n=1):
        # qemu-storage-daemon serves one client per monitor: bjctl takes a
        # spare one (qmp<n>.sock), d.qmp keeps the first.  blockjobd serves
        # everyone on its one socket.
        if self.qsd:
            return self.d.socket_path('qmp%d.sock' % n)
        return self.d.sock_path

    def run(self, *args, n=1, timeout=60, expect=None):
        """Runs bjctl to completion on monitor n; expect: its exit status."""
        cmd = [bjctl_path(), '--socket', self.sock(n)] + [str(a) for a in args]
        p = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL,
                           env=bjtest.sanitizer_env())
        bjtest.check_sanitizer_text(p.stderr, 'bjctl')
        if expect is not None:
            assert p.returncode == expect, (
                'bjctl %s: exit %d (expected %d)\nstdout: %s\nstderr: %s'
                % (' '.join(cmd[3:]), p.returncode, expect, p.stdout,
                   p.stderr))
        return p

    def add_qcow2(self, node, path, size=32 * MiB):
        """Creates an empty qcow2 image at path and adds it as node."""
        bjtest.qemu_img('create', '-q', '-f', 'qcow2', path, str(size))
        self.d.qmp.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': node,
            'file': {'driver': 'file', 'filename': path}})
        return path
