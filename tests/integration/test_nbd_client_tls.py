"""The nbd driver over TLS: tls-creds (x509 and PSK client objects) on a
driver=nbd node, against qemu-nbd serving with TLS.  A node asked for TLS
never falls back to plaintext; a server whose certificate another CA
signed, or a wrong PSK, is refused; the credentials object cannot be
deleted while a node uses it.  Error texts are qemu-storage-daemon 7.2's
where it has them (the test runs against it too).
"""

import os

import pytest

import bjtest
import tlscerts
from bjtest import QMPError, qemu_img, qemu_io
from remote import nbd_opts

MiB = 1 << 20
SIZE = 16 * MiB


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp('pki')
    ca = tlscerts.CA(base, 'main')
    other = tlscerts.CA(base, 'other')

    class Pki:
        pass
    p = Pki()
    p.server = tlscerts.make_x509_dir(base, 'server', ca)
    p.client = tlscerts.make_x509_dir(base, 'client', ca, server=False)
    p.client_other = tlscerts.make_x509_dir(base, 'client-other', other,
                                            server=False)
    p.psk = tlscerts.make_psk_dir(base, 'psk', 'alice')
    p.psk_wrong = tlscerts.make_psk_dir(base, 'psk-wrong', 'alice',
                                        key='00' * 32)
    return p


def image(workdir, name='disk.raw'):
    img = os.path.join(str(workdir), name)
    qemu_img('create', '-q', '-f', 'raw', img, str(SIZE))
    qemu_io('-f', 'raw', '-c', 'write -P 0x5a 0 4M', img)
    return img


def tls_server(remote, img, obj, tcp=False):
    return remote.qemu_nbd(img, tcp=tcp, extra=[
        '--object', obj, '--tls-creds', 's0'])


def add_client_obj(qmp, typ, d, **extra):
    qmp.execute('object-add', {'qom-type': typ, 'id': 'c0', 'dir': d,
                               'endpoint': 'client', **extra})


def test_x509_read_write_and_no_fallback(daemon, remote, workdir, pki):
    img = image(workdir)
    srv = tls_server(remote, img, 'tls-creds-x509,id=s0,dir=%s,'
                     'endpoint=server' % pki.server)
    qmp = daemon.qmp
    add_client_obj(qmp, 'tls-creds-x509', pki.client)
    # qemu needs a name to check over a UNIX socket; this libnbd checks
    # the chain there (and logs that the name is not checked)
    qmp.execute('blockdev-add', nbd_opts('r', srv, **{
        'tls-creds': 'c0', 'tls-hostname': 'localhost'}))
    sock = bjtest.nbd_export(daemon, 'r', name='r')
    qemu_io('-f', 'raw', '-c', 'read -P 0x5a 0 4M', '-c',
            'write -P 0x6b 8M 1M', 'nbd+unix:///r?socket=%s' % sock)
    qmp.execute('block-export-del', id='e0', mode='hard')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    # in use: the object stays (qsd lets it go)
    if not bjtest.is_qsd():
        with pytest.raises(QMPError) as e:
            qmp.execute('object-del', id='c0')
        assert e.value.desc == "object 'c0' is in use, can not be deleted"
    qmp.execute('blockdev-del', node_name='r')
    qmp.execute('object-del', id='c0')
    qemu_io('-f', 'raw', '-c', 'read -P 0x6b 8M 1M', img)


def test_psk(daemon, remote, workdir, pki):
    img = image(workdir)
    srv = tls_server(remote, img, 'tls-creds-psk,id=s0,dir=%s,'
                     'endpoint=server' % pki.psk, tcp=True)
    qmp = daemon.qmp
    add_client_obj(qmp, 'tls-creds-psk', pki.psk, username='alice')
    qmp.execute('blockdev-add', nbd_opts('r', srv, **{'tls-creds': 'c0'}))
    assert [n for n in qmp.execute('query-named-block-nodes')
            if n['node-name'] == 'r'][0]['image']['virtual-size'] == SIZE
    qmp.execute('blockdev-del', node_name='r')
    qmp.execute('object-del', id='c0')
    # the wrong key: refused, nothing added
    add_client_obj(qmp, 'tls-creds-psk', pki.psk_wrong, username='alice')
    with pytest.raises(QMPError):
        qmp.execute('blockdev-add', nbd_opts('r', srv, **{'tls-creds': 'c0'}))
    assert 'r' not in [n['node-name'] for n in
                       qmp.execute('query-named-block-nodes')]


def test_refusals(daemon, remote, workdir, pki):
    """A plaintext server (no fallback), a server another CA vouches for,
    credentials that are missing or for a server endpoint: each refused,
    nothing added."""
    qmp = daemon.qmp
    plain = remote.qemu_nbd(image(workdir, 'p.raw'))
    tls = tls_server(remote, image(workdir, 't.raw'),
                     'tls-creds-x509,id=s0,dir=%s,endpoint=server'
                     % pki.server)
    before = [n['node-name'] for n in qmp.execute('query-named-block-nodes')]
    add_client_obj(qmp, 'tls-creds-x509', pki.client)
    with pytest.raises(QMPError):
        qmp.execute('blockdev-add', nbd_opts('r', plain, **{'tls-creds': 'c0'}))
    qmp.execute('object-del', id='c0')
    add_client_obj(qmp, 'tls-creds-x509', pki.client_other)
    with pytest.raises(QMPError):
        qmp.execute('blockdev-add', nbd_opts('r', tls, **{'tls-creds': 'c0'}))
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-add', nbd_opts('r', tls, **{'tls-creds': 'nosuch'}))
    assert e.value.desc == "No TLS credentials with id 'nosuch'"
    qmp.execute('object-add', {'qom-type': 'tls-creds-x509', 'id': 's1',
                               'dir': pki.server, 'endpoint': 'server'})
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-add', nbd_opts('r', tls, **{'tls-creds': 's1'}))
    assert e.value.desc == 'Expected TLS credentials for a client endpoint'
    # a plaintext client of the TLS server is refused too
    with pytest.raises(QMPError):
        qmp.execute('blockdev-add', nbd_opts('r', tls))
    assert [n['node-name'] for n in
            qmp.execute('query-named-block-nodes')] == before


@pytest.mark.blockjobd_only('a libnbd without nbd_set_tls_hostname')
def test_tls_hostname_over_tcp(daemon, remote, workdir, pki):
    tls = tls_server(remote, image(workdir),
                     'tls-creds-x509,id=s0,dir=%s,endpoint=server'
                     % pki.server, tcp=True)
    qmp = daemon.qmp
    add_client_obj(qmp, 'tls-creds-x509', pki.client)
    # the certificate names 127.0.0.1 and localhost: the host matches
    qmp.execute('blockdev-add', nbd_opts('r', tls, **{'tls-creds': 'c0',
                                            'tls-hostname': '127.0.0.1'}))
    qmp.execute('blockdev-del', node_name='r')
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-add', nbd_opts('r', tls, **{'tls-creds': 'c0',
                                                'tls-hostname': 'example.org'}))
    assert "tls-hostname 'example.org' differs from the host" in e.value.desc
