"""Remote NBD servers for the nbd client driver's tests: qemu-nbd, nbdkit
and qemu-storage-daemon started in the foreground (we keep their pid), on a
UNIX socket or a TCP port on 127.0.0.1, and torn down by pid (continued
first, in case a test froze them).  Use the `remote` fixture of conftest.py
or RemoteSet directly."""

import os
import signal
import socket
import subprocess

import bjtest


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _ready(addr):
    if addr['type'] == 'unix':
        s = socket.socket(socket.AF_UNIX)
        target = addr['path']
    else:
        s = socket.socket()
        target = (addr['host'], int(addr['port']))
    try:
        s.connect(target)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Remote:
    """One server process; addr is its SocketAddress for driver=nbd."""

    def __init__(self, argv, addr, log):
        self.argv = argv
        self.addr = addr
        self.log = log
        self.proc = None

    def start(self):
        if self.addr['type'] == 'unix' and os.path.exists(self.addr['path']):
            # A killed server's socket file (a restart on the same path).
            os.unlink(self.addr['path'])
        with open(self.log, 'ab') as err:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
        bjtest.wait_until(lambda: self.proc.poll() is not None or
                          _ready(self.addr), what='NBD server listening')
        assert self.proc.poll() is None, open(self.log).read()
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def freeze(self):
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.proc.send_signal(signal.SIGCONT)

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)


class RemoteSet:
    def __init__(self, sockdir, workdir):
        self.sockdir = str(sockdir)
        self.workdir = str(workdir)
        self.all = []
        self.n = 0

    def _addr(self, tcp):
        self.n += 1
        if tcp:
            return {'type': 'inet', 'host': '127.0.0.1',
                    'port': str(free_port())}
        return {'type': 'unix',
                'path': os.path.join(self.sockdir, 'r%d.sock' % self.n)}

    def _log(self):
        return os.path.join(self.workdir, 'remote%d.log' % self.n)

    def qemu_nbd(self, image, fmt='raw', export='exp', tcp=False,
                 extra=(), addr=None):
        """qemu-nbd -t serving image (persistent: many clients)."""
        addr = addr or self._addr(tcp)
        argv = ['qemu-nbd', '-t', '-f', fmt, '-x', export,
                '--cache=writeback']
        if addr['type'] == 'unix':
            argv += ['-k', addr['path']]
        else:
            argv += ['-b', addr['host'], '-p', addr['port']]
        argv += list(extra) + [str(image)]
        r = Remote(argv, addr, self._log())
        self.all.append(r)
        return r.start()

    def nbdkit(self, plugin_args, filters=(), tcp=False, addr=None):
        addr = addr or self._addr(tcp)
        argv = ['nbdkit', '-f', '-e', 'exp']
        for f in filters:
            argv.append('--filter=' + f)
        if addr['type'] == 'unix':
            argv += ['-U', addr['path']]
        else:
            argv += ['-i', addr['host'], '-p', addr['port']]
        argv += list(plugin_args)
        r = Remote(argv, addr, self._log())
        self.all.append(r)
        return r.start()

    def cleanup(self):
        for r in self.all:
            r.stop()


def nbd_opts(node, remote, export='exp', **extra):
    """blockdev-add options of a driver=nbd node on remote."""
    o = {'driver': 'nbd', 'node-name': node, 'server': dict(remote.addr),
         'export': export}
    o.update(extra)
    return o


def unexport(qmp, export_id='e0'):
    """Deletes the export a test's qemu-io runs used.  mode=hard: qemu-io
    has exited, but the server may not have seen its hang-up yet."""
    qmp.execute('block-export-del', id=export_id, mode='hard')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
