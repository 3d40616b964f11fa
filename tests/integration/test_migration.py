"""Live storage migration between two daemons on 127.0.0.1 over TCP: the
destination exports an empty disk, the source opens it with driver=nbd and
mirrors its disk there while a client writes to the source the whole time.
Both endings: pivot (block-job-complete) and libvirt's (block-job-cancel in
READY, the source stays in use).  At the switch-over the destination image
equals the source (qemu-img compare).  Also a backup pushed to a remote
daemon.

Each runs plaintext and with x509 TLS (certificates made by certtool for
the test): the destination's NBD server requires TLS, the source's nbd
node connects with client credentials and checks the server's
certificate against 127.0.0.1.
"""

import os
import random
import threading

import pytest

import tlscerts
from bjtest import qemu_img, qemu_io, wait_until
from remote import free_port

nbd = pytest.importorskip('nbd')

MiB = 1 << 20
SIZE = 64 * MiB


class Writer(threading.Thread):
    """Writes random 4-64 KiB blocks to an export until stopped."""

    def __init__(self, uri, seed):
        super().__init__(daemon=True)
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.rnd = random.Random(seed)
        self.stop_evt = threading.Event()
        self.n = 0
        self.error = None

    def run(self):
        try:
            while not self.stop_evt.is_set():
                length = 4096 * self.rnd.randint(1, 16)
                off = 4096 * self.rnd.randrange((SIZE - length) // 4096)
                self.h.pwrite(bytes([0x40 + self.n % 64]) * length, off)
                self.n += 1
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        """Stops writing; returns after the last write was answered and
        flushed, the connection closed."""
        self.stop_evt.set()
        self.join(60)
        assert not self.is_alive()
        assert self.error is None, self.error
        self.h.flush()
        self.h.shutdown()


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp('pki')
    ca = tlscerts.CA(base, 'migration')
    return (tlscerts.make_x509_dir(base, 'server', ca),
            tlscerts.make_x509_dir(base, 'client', ca, server=False))


def two_daemons(daemon_factory, workdir, sockdir, tls, pki=None):
    dest_tls, src_tls, node_tls = [], [], {}
    if tls:
        server_dir, client_dir = pki
        dest_tls = ['--object', 'tls-creds-x509,id=t0,dir=%s,endpoint=server'
                    % server_dir]
        src_tls = ['--object', 'tls-creds-x509,id=t0,dir=%s,endpoint=client'
                   % client_dir]
        node_tls = {'tls-creds': 't0'}
    src = os.path.join(str(workdir), 'src.raw')
    dst = os.path.join(str(workdir), 'dst.raw')
    qemu_img('create', '-q', '-f', 'raw', src, str(SIZE))
    qemu_io('-f', 'raw', '-c', 'write -P 0x11 0 8M', '-c',
            'write -P 0x22 32M 4M', src)
    qemu_img('create', '-q', '-f', 'raw', dst, str(SIZE))
    port = str(free_port())
    dest = daemon_factory(
        *dest_tls,
        '--blockdev', 'driver=file,node-name=df,filename=%s' % dst,
        '--blockdev', 'driver=raw,node-name=disk,file=df',
        '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=%s%s'
        % (port, ',tls-creds=t0' if tls else ''),
        '--export', 'type=nbd,id=x,node-name=disk,name=disk,writable=on')
    srcsock = os.path.join(str(sockdir), 'src.sock')
    source = daemon_factory(
        *src_tls,
        '--blockdev', 'driver=file,node-name=sf,filename=%s' % src,
        '--blockdev', 'driver=raw,node-name=disk,file=sf',
        '--nbd-server', 'addr.type=unix,addr.path=%s' % srcsock,
        '--export', 'type=nbd,id=x,node-name=disk,name=disk,writable=on')
    source.qmp.execute('blockdev-add', {
        'driver': 'nbd', 'node-name': 'remote', 'export': 'disk',
        'server': {'type': 'inet', 'host': '127.0.0.1', 'port': port},
        **node_tls})
    return source, dest, src, dst, 'nbd+unix:///disk?socket=%s' % srcsock


def mirror_to_ready(source):
    qmp = source.qmp
    qmp.execute('blockdev-mirror', {'job-id': 'mig', 'device': 'disk',
                                    'target': 'remote', 'sync': 'full'})
    qmp.wait_event('BLOCK_JOB_READY', timeout=60,
                   match={'data': {'device': 'mig'}})


@pytest.mark.timeout(180)
@pytest.mark.parametrize('tls', [False, True])
@pytest.mark.parametrize('ending', ['pivot', 'cancel'])
def test_live_migration(daemon_factory, workdir, sockdir, tls, ending, pki):
    source, dest, src, dst, uri = two_daemons(daemon_factory, workdir,
                                              sockdir, tls, pki)
    w = Writer(uri, 7)
    w.start()
    mirror_to_ready(source)
    # Writes keep coming while READY: the mirror keeps up.
    n = w.n
    wait_until(lambda: w.n >= n + 100 or w.error, what='writes in READY')
    # Switch-over: the guest stops first, then the job ends.
    w.stop()
    qmp = source.qmp
    if ending == 'pivot':
        qmp.execute('block-job-complete', device='mig')
    else:
        qmp.execute('block-job-cancel', device='mig')
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
    assert 'error' not in ev['data']
    if ending == 'cancel':
        # libvirt's way: the source stays in use.
        qemu_io('-f', 'raw', '-c', 'read 0 4k', uri)
    source.qmp.execute('quit')
    source.wait(30)
    dest.qmp.execute('quit')
    dest.wait(30)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', src, dst)
    assert w.n > 100


@pytest.mark.timeout(120)
@pytest.mark.parametrize('tls', [False, True])
def test_backup_pushed_to_remote_daemon(daemon_factory, workdir, sockdir,
                                        tls, pki):
    source, dest, src, dst, uri = two_daemons(daemon_factory, workdir,
                                              sockdir, tls, pki)
    qmp = source.qmp
    qmp.execute('blockdev-backup', {'job-id': 'bk', 'device': 'disk',
                                    'target': 'remote', 'sync': 'full'})
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
    assert 'error' not in ev['data']
    source.qmp.execute('quit')
    source.wait(30)
    dest.qmp.execute('quit')
    dest.wait(30)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', src, dst)
