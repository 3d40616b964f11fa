"""NBD over TLS (GnuTLS) and the user-creatable objects that carry the
credentials: tls-creds-x509, tls-creds-psk, authz-simple, secret, with
--object and QMP object-add / object-del.

Peers: qemu-img, qemu-io, qemu-nbd --list, nbdinfo, nbdcopy and
python3-libnbd, each with certificates made for the test by certtool and
psktool (tlscerts.py).  Error texts are qemu-storage-daemon 7.2's: the
object tests run the same commands against qsd and blockjobd and compare.
"""

import os
import shutil
import socket
import ssl
import struct

import pytest

import bjtest
import tlscerts
from bjtest import QMPError, qemu_img, qemu_io, run

nbd = pytest.importorskip('nbd')

SIZE = 16 * 1024 * 1024

# A secret encrypted as libvirt passes them (keyid, iv): "sekrit" under
# AES-256-CBC with key bytes 0..31 and iv bytes 100..115 (made once with
# `openssl enc -aes-256-cbc`).
AES_KEY = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8='
AES_IV = 'ZGVmZ2hpamtsbW5vcHFycw=='
AES_SEKRIT = 'ESdP+WwF1392R6BlwSytCQ=='
QSD = shutil.which('qemu-storage-daemon')


@pytest.fixture(scope='module')
def pki(tmp_path_factory):
    """Two CAs; a server directory and client directories from the first,
    a client directory from the second (not trusted by the server)."""
    base = tmp_path_factory.mktemp('pki')
    ca = tlscerts.CA(base, 'main')
    other = tlscerts.CA(base, 'other')

    class Pki:
        pass
    p = Pki()
    p.server = tlscerts.make_x509_dir(base, 'server', ca)
    p.client = tlscerts.make_x509_dir(base, 'client', ca, server=False,
                                      client_cn='alice')
    p.client_bob = tlscerts.make_x509_dir(base, 'client-bob', ca,
                                          server=False, client_cn='bob')
    p.client_other = tlscerts.make_x509_dir(base, 'client-other', other,
                                            server=False, client_cn='alice')
    p.psk = tlscerts.make_psk_dir(base, 'psk', 'alice')
    p.psk_wrong = tlscerts.make_psk_dir(base, 'psk-wrong', 'alice',
                                        key='00' * 32)
    p.encrypted = tlscerts.copy_with_encrypted_key(base, 'encrypted',
                                                   p.server, 'sekrit')
    p.bad_ca = tlscerts.make_broken_dir(base, 'bad-ca', p.server,
                                        'ca-cert.pem')
    p.bad_dh = tlscerts.make_broken_dir(base, 'bad-dh', p.server,
                                        'dh-params.pem')
    p.bad_crl = tlscerts.make_broken_dir(base, 'bad-crl', p.server,
                                         'ca-crl.pem')
    p.empty = str(base / 'empty')
    os.makedirs(p.empty, exist_ok=True)
    return p


def nbd_sock(d):
    return d.socket_path('nbd.sock')


def serve(daemon_factory, tmp_path, creds, authz=None, extra=()):
    """A daemon with TLS credentials `creds` (an --object string) serving
    a writable 16 MiB raw image as export 'disk' over a UNIX socket."""
    img = tmp_path / 'disk.raw'
    qemu_img('create', '-f', 'raw', str(img), str(SIZE))
    d = daemon_factory(*extra, '--object', creds,
                       '--blockdev',
                       'driver=file,node-name=disk,filename=%s' % img)
    kw = {'tls-creds': 'tls0'}
    if authz:
        kw['tls-authz'] = authz
    d.qmp.execute('nbd-server-start',
                  {'addr': {'type': 'unix',
                            'data': {'path': nbd_sock(d)}}, **kw})
    d.qmp.execute('block-export-add', type='nbd', id='e0', node_name='disk',
                  writable=True)
    d.img = img
    return d


@pytest.fixture
def x509_server(daemon_factory, tmp_path, pki):
    return serve(daemon_factory, tmp_path,
                 'tls-creds-x509,id=tls0,dir=%s,endpoint=server' % pki.server)


def image_opts(d, creds_id='c0'):
    return ('driver=nbd,server.type=unix,server.path=%s,export=disk,'
            'tls-creds=%s,tls-hostname=localhost' % (nbd_sock(d), creds_id))


def client_obj(path, creds_id='c0'):
    return ['--object',
            'tls-creds-x509,id=%s,dir=%s,endpoint=client' % (creds_id, path)]


def nbds_uri(d, certs):
    return 'nbds+unix:///disk?socket=%s&tls-certificates=%s' % (nbd_sock(d),
                                                                certs)


def libnbd_x509(d, certs):
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_certificates(certs)
    h.set_export_name('disk')
    h.connect_unix(nbd_sock(d))
    return h


def assert_still_serving(d, pki):
    """A good client still gets through after a refused one."""
    h = libnbd_x509(d, pki.client)
    assert h.get_size() == SIZE
    assert h.pread(512, 0) is not None
    h.shutdown()


# ---- interoperability ------------------------------------------------------

def test_qemu_img_convert_compare_x509(x509_server, pki, tmp_path):
    d = x509_server
    src = tmp_path / 'src.raw'
    qemu_img('create', '-f', 'raw', str(src), str(SIZE))
    qemu_io('-f', 'raw', '-c', 'write -P 0xa5 1M 3M', '-c',
            'write -P 0x11 9M 64k', str(src))
    info = qemu_img('info', *client_obj(pki.client), '--image-opts',
                    image_opts(d)).stdout
    assert 'virtual size: 16 MiB' in info
    qemu_img('convert', '-n', '-f', 'raw', str(src), *client_obj(pki.client),
             '--target-image-opts', image_opts(d))
    qemu_img('compare', *client_obj(pki.client), '--image-opts',
             'driver=raw,file.filename=%s' % src, image_opts(d))
    # The writes landed byte-exact in the exported file.
    qemu_img('compare', '-f', 'raw', '-F', 'raw', str(src), str(d.img))


def test_qemu_io_and_qemu_nbd_list_x509(x509_server, pki):
    d = x509_server
    qemu_io(*client_obj(pki.client), '--image-opts', image_opts(d),
            '-c', 'write -P 0x5a 0 1M', '-c', 'read -P 0x5a 0 1M')
    qemu_io('-f', 'raw', '-c', 'read -P 0x5a 0 1M', str(d.img))
    out = run('qemu-nbd', '--list', '-k', nbd_sock(d),
              *client_obj(pki.client), '--tls-creds', 'c0',
              '--tls-hostname', 'localhost').stdout
    assert "export: 'disk'" in out


def test_nbdinfo_nbdcopy_x509(x509_server, pki, tmp_path):
    d = x509_server
    out = run('nbdinfo', nbds_uri(d, pki.client)).stdout
    assert 'with TLS' in out
    assert 'export-size: %d' % SIZE in out
    src = tmp_path / 'src.raw'
    qemu_img('create', '-f', 'raw', str(src), str(SIZE))
    qemu_io('-f', 'raw', '-c', 'write -P 0x3c 2M 5M', str(src))
    run('nbdcopy', str(src), nbds_uri(d, pki.client))
    qemu_img('compare', '-f', 'raw', '-F', 'raw', str(src), str(d.img))
    back = tmp_path / 'back.raw'
    run('nbdcopy', nbds_uri(d, pki.client), str(back))
    qemu_img('compare', '-f', 'raw', '-F', 'raw', str(src), str(back))


def test_libnbd_x509_read_write(x509_server, pki):
    d = x509_server
    h = libnbd_x509(d, pki.client)
    assert h.get_tls_negotiated()
    data = bytes(range(256)) * 4096            # 1 MiB
    h.pwrite(data, 4096)
    h.flush()
    assert h.pread(len(data), 4096) == data
    h.shutdown()
    with open(d.img, 'rb') as f:
        f.seek(4096)
        assert f.read(len(data)) == data


# ---- refusals --------------------------------------------------------------

def test_plaintext_client_refused(x509_server, pki):
    d = x509_server
    h = nbd.NBD()
    h.set_tls(nbd.TLS_DISABLE)
    h.set_export_name('disk')
    with pytest.raises(nbd.Error) as e:
        h.connect_unix(nbd_sock(d))
    assert 'TLS' in str(e.value)
    p = qemu_img('info', 'nbd+unix:///disk?socket=%s' % nbd_sock(d),
                 check=False)
    assert p.returncode != 0
    assert 'TLS negotiation required before option 7 (go)' in p.stderr
    # A client that is not fixed newstyle can only send
    # NBD_OPT_EXPORT_NAME, which has no error reply: it is cut off.
    h = nbd.NBD()
    h.set_tls(nbd.TLS_DISABLE)
    h.set_handshake_flags(0)
    h.set_export_name('disk')
    with pytest.raises(nbd.Error):
        h.connect_unix(nbd_sock(d))
    assert_still_serving(d, pki)


def test_other_ca_refused(x509_server, pki):
    d = x509_server
    with pytest.raises(nbd.Error):
        libnbd_x509(d, pki.client_other)
    p = qemu_img('info', *client_obj(pki.client_other), '--image-opts',
                 image_opts(d), check=False)
    assert p.returncode != 0
    assert_still_serving(d, pki)


def test_client_without_certificate_refused(x509_server, pki, tmp_path):
    """verify-peer=on (the default): a client with the CA but no
    certificate of its own is refused."""
    d = x509_server
    ca_only = tmp_path / 'ca-only'
    ca_only.mkdir()
    shutil.copy(os.path.join(pki.client, 'ca-cert.pem'), str(ca_only))
    with pytest.raises(nbd.Error):
        libnbd_x509(d, str(ca_only))
    assert_still_serving(d, pki)


def test_verify_peer_off_accepts_client_without_certificate(
        daemon_factory, tmp_path, pki):
    d = serve(daemon_factory, tmp_path,
              'tls-creds-x509,id=tls0,dir=%s,endpoint=server,verify-peer=off'
              % pki.server)
    ca_only = tmp_path / 'ca-only'
    ca_only.mkdir()
    shutil.copy(os.path.join(pki.client, 'ca-cert.pem'), str(ca_only))
    h = libnbd_x509(d, str(ca_only))
    assert h.get_size() == SIZE
    h.shutdown()


def test_authz_simple(daemon_factory, tmp_path, pki):
    d = serve(daemon_factory, tmp_path,
              'tls-creds-x509,id=tls0,dir=%s,endpoint=server' % pki.server,
              authz='auth0',
              extra=('--object', 'authz-simple,id=auth0,identity=%s'
                     % tlscerts.client_dn('alice').replace(',', ',,')))
    h = libnbd_x509(d, pki.client)             # CN=alice: allowed
    h.pwrite(b'\x42' * 4096, 0)
    h.shutdown()
    with pytest.raises(nbd.Error):
        libnbd_x509(d, pki.client_bob)         # same CA, CN=bob: denied
    p = qemu_img('info', *client_obj(pki.client_bob), '--image-opts',
                 image_opts(d), check=False)
    assert p.returncode != 0
    assert_still_serving(d, pki)
    # The authz object is looked up per connection, as in qemu.
    d.qmp.execute('object-del', id='auth0')
    with pytest.raises(nbd.Error):
        libnbd_x509(d, pki.client)


def test_psk(daemon_factory, tmp_path, pki):
    d = serve(daemon_factory, tmp_path,
              'tls-creds-psk,id=tls0,dir=%s,endpoint=server' % pki.psk)
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_psk_file(os.path.join(pki.psk, 'keys.psk'))
    h.set_tls_username('alice')
    h.set_export_name('disk')
    h.connect_unix(nbd_sock(d))
    h.pwrite(b'\x77' * 65536, 65536)
    h.shutdown()
    qemu_io('-f', 'raw', '-c', 'read -P 0x77 64k 64k', str(d.img))
    opts = ('driver=nbd,server.type=unix,server.path=%s,export=disk,'
            'tls-creds=c0' % nbd_sock(d))
    qemu_io('--object', 'tls-creds-psk,id=c0,dir=%s,endpoint=client,'
            'username=alice' % pki.psk, '--image-opts', opts,
            '-c', 'read -P 0x77 64k 64k')

    # A wrong key is refused, and the daemon goes on.
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_psk_file(os.path.join(pki.psk_wrong, 'keys.psk'))
    h.set_tls_username('alice')
    h.set_export_name('disk')
    with pytest.raises(nbd.Error):
        h.connect_unix(nbd_sock(d))
    p = qemu_io('--object', 'tls-creds-psk,id=c0,dir=%s,endpoint=client,'
                'username=alice' % pki.psk_wrong, '--image-opts', opts,
                '-c', 'read 0 4k', check=False)
    assert p.returncode != 0
    qemu_io('--object', 'tls-creds-psk,id=c0,dir=%s,endpoint=client,'
            'username=alice' % pki.psk, '--image-opts', opts,
            '-c', 'read -P 0x77 64k 64k')


# ---- lifetime --------------------------------------------------------------

def test_export_del_and_quit_with_tls_clients(x509_server, pki):
    d = x509_server
    h1 = libnbd_x509(d, pki.client)
    h1.pwrite(b'\x01' * 4096, 0)
    d.qmp.execute('block-export-del', id='e0', mode='hard')
    d.qmp.wait_event('BLOCK_EXPORT_DELETED')
    with pytest.raises(nbd.Error):
        h1.pread(4096, 0)
    d.qmp.execute('block-export-add', type='nbd', id='e0', node_name='disk',
                  writable=True)
    h2 = libnbd_x509(d, pki.client)
    assert h2.pread(4096, 0) == b'\x01' * 4096
    # quit with a TLS client connected: a clean exit.
    d.stop()
    with pytest.raises(nbd.Error):
        h2.pread(4096, 0)


def test_server_start_tls_arguments(daemon_factory, pki):
    d = daemon_factory('--object',
                       'tls-creds-x509,id=tcli,dir=%s,endpoint=client'
                       % pki.client,
                       '--object', 'secret,id=sec0,data=x')
    addr = {'type': 'unix', 'data': {'path': nbd_sock(d)}}
    for creds, msg in (
            ('nosuch', "No TLS credentials with id 'nosuch'"),
            ('sec0', "Object with id 'sec0' is not TLS credentials"),
            ('tcli', 'Expected TLS credentials for a server endpoint')):
        with pytest.raises(QMPError) as e:
            d.qmp.execute('nbd-server-start', {'addr': addr,
                                               'tls-creds': creds})
        assert e.value.desc == msg
    assert not os.path.exists(nbd_sock(d))


def object_del_when_free(d, oid):
    def try_del():
        r = d.qmp.cmd('object-del', id=oid)
        if 'error' in r:
            assert r['error']['desc'] == ("object '%s' is in use, can not be "
                                          "deleted" % oid)
            return False
        return True
    bjtest.wait_until(try_del, what='object-del %s' % oid)


def test_cmdline_nbd_server_tls(daemon_factory, tmp_path, pki):
    img = tmp_path / 'disk.raw'
    qemu_img('create', '-f', 'raw', str(img), str(SIZE))
    sockdir = bjtest.tempfile.mkdtemp(prefix='bjt')
    try:
        sock = os.path.join(sockdir, 'nbd.sock')
        d = daemon_factory(
            '--object', 'tls-creds-x509,id=tls0,dir=%s,endpoint=server'
            % pki.server,
            '--blockdev', 'driver=file,node-name=disk,filename=%s' % img,
            '--nbd-server', 'addr.type=unix,addr.path=%s,tls-creds=tls0'
            % sock,
            '--export', 'nbd,id=e0,node-name=disk')
        out = run('nbdinfo', '--size', 'nbds+unix:///disk?socket=%s&'
                  'tls-certificates=%s' % (sock, pki.client)).stdout
        assert out.strip() == str(SIZE)
        # In use by the server: object-del refuses until it stops.
        with pytest.raises(QMPError) as e:
            d.qmp.execute('object-del', id='tls0')
        assert e.value.desc == "object 'tls0' is in use, can not be deleted"
        d.qmp.execute('nbd-server-stop')
        # nbdinfo's connection (which holds a use of its own) may still be
        # being torn down: the credentials go once it has.
        object_del_when_free(d, 'tls0')
        d.stop()
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def test_cmdline_missing_cert_is_an_error(pki):
    p = bjtest.run_blockjobd('--object',
                             'tls-creds-x509,id=t,dir=%s,endpoint=server'
                             % pki.empty)
    assert p.returncode == 1
    assert p.stderr == (
        'blockjobd: --object tls-creds-x509,id=t,dir=%s,endpoint=server: '
        'Unable to access credentials %s/ca-cert.pem: No such file or '
        'directory\n' % (pki.empty, pki.empty))


def test_object_help_lists_types():
    p = bjtest.run_blockjobd('--object', 'help')
    assert p.returncode == 0
    for t in ('authz-simple', 'iothread', 'secret', 'tls-creds-psk',
              'tls-creds-x509'):
        assert '  %s\n' % t in p.stdout


# ---- object-add / object-del: errors as qsd gives them ---------------------

def object_cases(pki):
    """(command, arguments) run in order against both daemons."""
    x = 'tls-creds-x509'
    return [
        ('object-add', {'qom-type': 'secret', 'id': 's0', 'data': 'abc'}),
        ('object-add', {'qom-type': 'secret', 'id': 's0', 'data': 'abc'}),
        ('object-add', {'qom-type': 'nosuch', 'id': 'x'}),
        ('object-add', {'id': 'x'}),
        ('object-add', {'qom-type': 'secret'}),
        ('object-add', {'qom-type': 'secret', 'id': '1bad', 'data': 'a'}),
        ('object-add', {'qom-type': 'secret', 'id': 's1'}),
        ('object-add', {'qom-type': 'secret', 'id': 's1', 'data': 'a',
                        'file': '/etc/hostname'}),
        ('object-add', {'qom-type': 'secret', 'id': 's1', 'data': '!!',
                        'format': 'base64'}),
        ('object-add', {'qom-type': 'secret', 'id': 's1', 'data': 'a',
                        'format': 'hex'}),
        ('object-add', {'qom-type': 'secret', 'id': 's1', 'data': 'a',
                        'bogus': 1}),
        ('object-add', {'qom-type': 'secret', 'id': 's1',
                        'file': '/nonexistent/secret'}),
        ('object-add', {'qom-type': 'secret', 'id': 's2',
                        'data': 'aGVsbG8=', 'format': 'base64'}),
        ('object-add', {'qom-type': 'authz-simple', 'id': 'a0'}),
        ('object-add', {'qom-type': 'authz-simple', 'id': 'a0',
                        'identity': 'CN=x'}),
        ('object-add', {'qom-type': x, 'id': 't0', 'endpoint': 'server'}),
        ('object-add', {'qom-type': x, 'id': 't0', 'dir': pki.empty,
                        'endpoint': 'server'}),
        ('object-add', {'qom-type': x, 'id': 't0', 'dir': pki.client,
                        'endpoint': 'server'}),
        ('object-add', {'qom-type': x, 'id': 't0', 'dir': pki.server,
                        'endpoint': 'bogus'}),
        ('object-add', {'qom-type': x, 'id': 't0', 'dir': pki.server,
                        'endpoint': 'server'}),
        ('object-add', {'qom-type': x, 'id': 't1', 'dir': pki.client,
                        'endpoint': 'client', 'verify-peer': False}),
        ('object-add', {'qom-type': 'tls-creds-psk', 'id': 'p0',
                        'dir': pki.empty, 'endpoint': 'server'}),
        ('object-add', {'qom-type': 'tls-creds-psk', 'id': 'p0',
                        'dir': pki.psk, 'endpoint': 'client',
                        'username': 'bob'}),
        ('object-add', {'qom-type': 'tls-creds-psk', 'id': 'p0',
                        'dir': pki.psk, 'endpoint': 'client'}),
        ('object-add', {'qom-type': 'tls-creds-psk', 'id': 'p0',
                        'dir': pki.psk, 'endpoint': 'client',
                        'username': 'alice'}),
        ('object-add', {'qom-type': 'iothread', 'id': 'p0'}),
        ('object-del', {'id': 'nosuch'}),
        ('object-del', {}),
        ('object-del', {'id': 's0'}),
        ('object-del', {'id': 's0'}),
        ('object-del', {'id': 'a0'}),
        ('object-del', {'id': 't1'}),
        ('object-add', {'qom-type': 'secret', 'id': 's0', 'data': 'again'}),
        ('object-add', {'qom-type': x, 'id': 'b0', 'dir': pki.bad_ca,
                        'endpoint': 'server'}),
        ('object-add', {'qom-type': x, 'id': 'b0', 'dir': pki.bad_dh,
                        'endpoint': 'server'}),
        ('object-add', {'qom-type': x, 'id': 'b0', 'dir': pki.bad_crl,
                        'endpoint': 'server'}),
        ('object-add', {'qom-type': x, 'id': 'e0', 'dir': pki.encrypted,
                        'endpoint': 'server', 'passwordid': 'pw'}),
        ('object-add', {'qom-type': 'secret', 'id': 'pw', 'data': 'wrong'}),
        ('object-add', {'qom-type': x, 'id': 'e0', 'dir': pki.encrypted,
                        'endpoint': 'server', 'passwordid': 'pw'}),
        ('object-del', {'id': 'pw'}),
        ('object-add', {'qom-type': 'secret', 'id': 'pw', 'data': 'sekrit'}),
        ('object-add', {'qom-type': x, 'id': 'e0', 'dir': pki.encrypted,
                        'endpoint': 'server', 'passwordid': 'pw'}),
        # encrypted secrets (keyid, iv)
        ('object-add', {'qom-type': 'secret', 'id': 'k0', 'data': 'xx',
                        'keyid': 'nokey'}),
        ('object-add', {'qom-type': 'secret', 'id': 'short', 'data': 'x'}),
        ('object-add', {'qom-type': 'secret', 'id': 'k0', 'data': 'xx',
                        'keyid': 'short'}),
        ('object-add', {'qom-type': 'secret', 'id': 'mk', 'data': AES_KEY,
                        'format': 'base64'}),
        ('object-add', {'qom-type': 'secret', 'id': 'k0',
                        'data': AES_SEKRIT, 'keyid': 'mk'}),
        ('object-add', {'qom-type': 'secret', 'id': 'k0',
                        'data': AES_SEKRIT, 'keyid': 'mk', 'iv': 'AAAA'}),
        ('object-add', {'qom-type': 'secret', 'id': 'k0',
                        'data': AES_SEKRIT, 'keyid': 'mk', 'iv': AES_IV}),
        ('object-add', {'qom-type': 'secret', 'id': 'k0',
                        'data': AES_SEKRIT, 'keyid': 'mk', 'iv': AES_IV,
                        'format': 'base64'}),
        ('object-add', {'qom-type': x, 'id': 'e1', 'dir': pki.encrypted,
                        'endpoint': 'server', 'passwordid': 'k0'}),
    ]


def run_object_cases(d, cases):
    out = []
    for cmd, args in cases:
        r = d.qmp.cmd(cmd, args)
        out.append(r.get('error', {}).get('desc', 'ok') if 'error' in r
                   else 'ok')
    return out


@pytest.mark.skipif(not QSD, reason='qemu-storage-daemon not installed')
def test_object_add_del_errors_match_qsd(daemon_factory, tmp_path, pki):
    cases = object_cases(pki)
    ours = run_object_cases(daemon_factory(), cases)
    q = bjtest.Daemon(tmp_path, binary=QSD)
    try:
        q.start()
        theirs = run_object_cases(q, cases)
    finally:
        q.cleanup()
    for (cmd, args), a, b in zip(cases, ours, theirs):
        assert a == b, '%s %s: ours %r, qsd %r' % (cmd, args, a, b)
    # The texts themselves, as recorded from qsd 7.2.
    assert ours[1] == ("attempt to add duplicate property 's0' to object "
                       "(type 'container')")
    assert ours[2] == "Parameter 'qom-type' does not accept value 'nosuch'"
    assert ours[6] == "Either 'file' or 'data' must be provided"
    assert ours[13] == "Parameter 'identity' is missing"
    assert ours[15] == "Missing 'dir' property value"
    assert ours[16] == ('Unable to access credentials %s/ca-cert.pem: '
                        'No such file or directory' % pki.empty)
    assert ours[17] == ('Unable to access credentials %s/server-cert.pem: '
                        'No such file or directory' % pki.client)
    assert ours[22] == ('Username bob not found in PSK file %s/keys.psk'
                        % pki.psk)
    assert ours[26] == "object 'nosuch' not found"
    assert ours[33] == ('Unable to import CA certificate list '
                        '%s/ca-cert.pem' % pki.bad_ca)
    assert ours[34].startswith('Unable to load DH parameters from '
                               '%s/dh-params.pem: ' % pki.bad_dh)
    assert ours[36] == "No secret with id 'pw'"
    assert ours[38] == ("Cannot load certificate '%s/server-cert.pem' & key "
                        "'%s/server-key.pem': Decryption has failed."
                        % (pki.encrypted, pki.encrypted))
    assert ours[41] == 'ok'
    assert ours[42] == "No secret with id 'nokey'"
    assert ours[44] == 'Key should be 32 bytes in length'
    assert ours[46] == 'IV is required to decrypt secret'
    assert ours[47] == 'IV should be 16 bytes in length not 3'
    assert ours[48] == 'Length 24 must be a multiple of block size 16'
    assert ours[49:] == ['ok', 'ok']     # the decrypted key password works


def test_encrypted_server_key(daemon_factory, tmp_path, pki):
    d = serve(daemon_factory, tmp_path,
              'tls-creds-x509,id=tls0,dir=%s,endpoint=server,passwordid=pw'
              % pki.encrypted, extra=('--object', 'secret,id=pw,data=sekrit'))
    h = libnbd_x509(d, pki.client)
    assert h.get_size() == SIZE
    h.shutdown()


def test_object_del_in_use(daemon_factory, pki):
    """Credentials a running server holds are not deleted (qsd 7.2 lets
    them go while its server keeps a reference; we refuse, see
    docs/architecture.md); iothreads are never deleted."""
    d = daemon_factory('--object', 'iothread,id=io0')
    d.qmp.execute('object-add', {'qom-type': 'tls-creds-x509', 'id': 't0',
                                 'dir': pki.server, 'endpoint': 'server'})
    d.qmp.execute('nbd-server-start',
                  {'addr': {'type': 'unix', 'data': {'path': nbd_sock(d)}},
                   'tls-creds': 't0'})
    for oid in ('t0', 'io0'):
        with pytest.raises(QMPError) as e:
            d.qmp.execute('object-del', id=oid)
        assert e.value.desc == ("object '%s' is in use, can not be deleted"
                                % oid)
    d.qmp.execute('object-add', {'qom-type': 'iothread', 'id': 'io1'})
    d.qmp.execute('nbd-server-stop')
    object_del_when_free(d, 't0')
    with pytest.raises(QMPError) as e:
        d.qmp.execute('object-del', id='t0')
    assert e.value.desc == "object 't0' not found"


def test_quit_with_tls_client_that_stopped_reading(x509_server, pki):
    """Replies pile up unread (the server's writer waits on a full socket):
    quit still ends the connection and exits cleanly."""
    d = x509_server
    h = libnbd_x509(d, pki.client)
    bufs = [nbd.Buffer(1024 * 1024) for _ in range(16)]
    for i, b in enumerate(bufs):
        h.aio_pread(b, i * 1024 * 1024)
    # The requests were sent (libnbd sends as far as it can without
    # blocking); nothing reads the replies.
    assert h.aio_in_flight() == 16
    d.stop()
    del h


def test_tls_export_in_iothread_added_by_object_add(daemon_factory, tmp_path,
                                                    pki):
    """The session moves with the connection to the export's iothread (an
    iothread made by object-add); reads and writes go on there."""
    d = serve(daemon_factory, tmp_path,
              'tls-creds-x509,id=tls0,dir=%s,endpoint=server' % pki.server)
    d.qmp.execute('object-add', {'qom-type': 'iothread', 'id': 'io1'})
    d.qmp.execute('block-export-add', type='nbd', id='e1', node_name='disk',
                  name='disk-io', iothread='io1', writable=True)
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_certificates(pki.client)
    h.set_export_name('disk-io')
    h.connect_unix(nbd_sock(d))
    data = b'\xc3' * (2 * 1024 * 1024)
    h.pwrite(data, 3 * 1024 * 1024)
    assert h.pread(len(data), 3 * 1024 * 1024) == data
    h.shutdown()
    qemu_io('-r', '-f', 'raw', '-U', '-c', 'read -P 0xc3 3M 2M', str(d.img))


def test_tcp_tls_export_del_with_stalled_reader_and_quit(daemon_factory,
                                                        tmp_path, pki):
    """Over TCP (where ending a TLS connection shuts only its read side
    first): qemu-img works, a hard block-export-del ends a client whose
    replies pile up unread, and quit ends another one."""
    img = tmp_path / 'disk.raw'
    qemu_img('create', '-f', 'raw', str(img), str(SIZE))
    d = daemon_factory('--object', 'tls-creds-x509,id=tls0,dir=%s,'
                       'endpoint=server' % pki.server, '--blockdev',
                       'driver=file,node-name=disk,filename=%s' % img)
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    d.qmp.execute('nbd-server-start',
                  {'addr': {'type': 'inet', 'data': {'host': '127.0.0.1',
                                                     'port': str(port)}},
                   'tls-creds': 'tls0'})
    d.qmp.execute('block-export-add', type='nbd', id='e0', node_name='disk',
                  writable=True)
    opts = ('driver=nbd,server.type=inet,server.host=127.0.0.1,'
            'server.port=%d,export=disk,tls-creds=c0' % port)
    qemu_io(*client_obj(pki.client), '--image-opts', opts,
            '-c', 'write -P 0x2e 0 4M', '-c', 'read -P 0x2e 0 4M')
    uri = 'nbds://127.0.0.1:%d/disk?tls-certificates=%s' % (port, pki.client)

    def stalled():
        h = nbd.NBD()
        h.set_uri_allow_local_file(True)
        h.connect_uri(uri)
        bufs = [nbd.Buffer(1024 * 1024) for _ in range(16)]
        for i, b in enumerate(bufs):
            h.aio_pread(b, i * 1024 * 1024)
        return h, bufs

    h1, _ = stalled()
    d.qmp.execute('block-export-del', id='e0', mode='hard')
    d.qmp.wait_event('BLOCK_EXPORT_DELETED')
    del h1
    d.qmp.execute('block-export-add', type='nbd', id='e0', node_name='disk',
                  writable=True)
    out = run('nbdinfo', '--size', uri).stdout
    assert out.strip() == str(SIZE)
    h2, _ = stalled()
    d.stop()
    del h2


def test_psk_authz_by_username(daemon_factory, tmp_path, pki):
    """With PSK the identity authz-simple compares is the username."""
    psk2 = tlscerts.make_psk_dir(tmp_path, 'psk2', 'alice')
    with open(os.path.join(psk2, 'keys.psk'), 'a') as f:
        f.write('bob:%s\n' % ('ab' * 32))
    d = serve(daemon_factory, tmp_path,
              'tls-creds-psk,id=tls0,dir=%s,endpoint=server' % psk2,
              authz='auth0',
              extra=('--object', 'authz-simple,id=auth0,identity=alice'))

    def connect(user):
        h = nbd.NBD()
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_psk_file(os.path.join(psk2, 'keys.psk'))
        h.set_tls_username(user)
        h.set_export_name('disk')
        h.connect_unix(nbd_sock(d))
        return h

    connect('alice').shutdown()
    with pytest.raises(nbd.Error):
        connect('bob')
    connect('alice').shutdown()


def recv_exact(s, n):
    b = b''
    while len(b) < n:
        chunk = s.recv(n - len(b))
        assert chunk, 'server closed the connection'
        b += chunk
    return b


def tls_client(d, certs):
    """A hand-made NBD client: STARTTLS, TLS with python's ssl (an end of
    stream without close_notify raises), GO; returns the TLS socket in
    transmission."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(nbd_sock(d))
    greeting = recv_exact(s, 18)
    assert greeting[:8] == b'NBDMAGIC'
    s.sendall(struct.pack('>I', 3))                     # fixed, no zeroes
    s.sendall(struct.pack('>QII', 0x49484156454F5054, 5, 0))   # STARTTLS
    magic, opt, typ, length = struct.unpack('>QIII', recv_exact(s, 20))
    assert (opt, typ, length) == (5, 1, 0)              # ACK
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Python sets this by default: an end of stream without close_notify
    # would then read as a clean one.
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    ctx.load_verify_locations(os.path.join(certs, 'ca-cert.pem'))
    ctx.load_cert_chain(os.path.join(certs, 'client-cert.pem'),
                        os.path.join(certs, 'client-key.pem'))
    t = ctx.wrap_socket(s, server_hostname='localhost',
                        suppress_ragged_eofs=False)
    data = struct.pack('>I', 4) + b'disk' + struct.pack('>H', 0)
    t.sendall(struct.pack('>QII', 0x49484156454F5054, 7, len(data)) + data)
    while True:
        magic, opt, typ, length = struct.unpack('>QIII', recv_exact(t, 20))
        recv_exact(t, length)
        if typ != 3:                                    # NBD_REP_INFO
            break
    assert typ == 1                                     # ACK: transmission
    return t


def stalled_tls_client(d, certs, nreq):
    """tls_client sending nreq 1 MiB reads whose replies it never reads."""
    t = tls_client(d, certs)
    reqs = b''.join(struct.pack('>IHHQQI', 0x25609513, 0, 0, i,
                                (i % 8) * 1024 * 1024, 1024 * 1024)
                    for i in range(nreq))
    t.sendall(reqs)
    return t


@pytest.mark.parametrize('nreq', [16, 200])
def test_export_del_and_quit_with_stalled_tls_client(x509_server, pki, nreq):
    """Replies never read: the server's writers wait on a full socket, and
    with more requests than it takes at once (128) its receive loop waits
    for a free slot too.  A hard block-export-del still ends the
    connection, the daemon serves the next client, and quit ends a second
    stalled one."""
    d = x509_server
    t = stalled_tls_client(d, pki.client, nreq)
    d.qmp.execute('block-export-del', id='e0', mode='hard')
    d.qmp.wait_event('BLOCK_EXPORT_DELETED')
    t.close()
    d.qmp.execute('block-export-add', type='nbd', id='e0', node_name='disk',
                  writable=True)
    assert_still_serving(d, pki)
    t = stalled_tls_client(d, pki.client, nreq)
    d.stop()
    t.close()


def test_export_del_ends_tls_with_close_notify(x509_server, pki):
    """A hard block-export-del ends a TLS client's session cleanly: it
    reads close_notify (python's ssl reports an end of stream without it
    as SSLEOFError), and a flush before that was answered."""
    d = x509_server
    t = tls_client(d, pki.client)
    t.sendall(struct.pack('>IHHQQI', 0x25609513, 0, 3, 7, 0, 0))   # FLUSH
    magic, err, handle = struct.unpack('>IIQ', recv_exact(t, 16))
    assert (magic, err, handle) == (0x67446698, 0, 7)
    d.qmp.execute('block-export-del', id='e0', mode='hard')
    d.qmp.wait_event('BLOCK_EXPORT_DELETED')
    assert t.recv(1) == b''
    t.close()


def test_tls_handshake_counts_toward_the_deadline(daemon_factory, tmp_path,
                                                  pki):
    """A client that sends STARTTLS and then nothing is cut off at
    handshake-max-seconds like any other slow negotiator."""
    img = tmp_path / 'disk.raw'
    qemu_img('create', '-f', 'raw', str(img), str(SIZE))
    d = daemon_factory('--object', 'tls-creds-x509,id=tls0,dir=%s,'
                       'endpoint=server' % pki.server, '--blockdev',
                       'driver=file,node-name=disk,filename=%s' % img)
    d.qmp.execute('nbd-server-start',
                  {'addr': {'type': 'unix', 'data': {'path': nbd_sock(d)}},
                   'tls-creds': 'tls0', 'handshake-max-seconds': 1})
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(nbd_sock(d))
    recv_exact(s, 18)
    s.sendall(struct.pack('>I', 3))
    s.sendall(struct.pack('>QII', 0x49484156454F5054, 5, 0))   # STARTTLS
    assert struct.unpack('>QIII', recv_exact(s, 20))[2] == 1   # ACK
    # No ClientHello: the server hangs up at its deadline.
    assert s.recv(1) == b''
    s.close()
