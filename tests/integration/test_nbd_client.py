"""driver=nbd: remote NBD exports (qemu-nbd, nbdkit, qemu-storage-daemon,
another blockjobd) opened as nodes: data round-trips, block status,
block-size constraints, use as job target, backing file and export, and
qsd's errors for bad options."""

import os

import pytest

from bjtest import (QMPError, blockdev_add_error, nbd_export, qemu_img,
                    qemu_io, wait_until)
from remote import nbd_opts

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
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
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
        ({'tls-creds': 'x'},
         'TLS credentials are not supported by this build yet'),
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
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
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
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='n')
