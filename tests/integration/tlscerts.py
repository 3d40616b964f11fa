"""TLS material for tests, made with gnutls-bin's certtool and psktool.

make_ca(dir, name) makes a CA; make_x509_dir(...) lays out a directory the
way qemu's tls-creds-x509 reads it (ca-cert.pem, server-cert.pem,
server-key.pem, client-cert.pem, client-key.pem); make_psk_dir(...) writes
keys.psk ("username:hexkey" lines) as tls-creds-psk reads it.  Everything
goes under a directory the test owns (pytest's tmp_path).
"""

import os
import shutil
import subprocess


def _tool(name):
    path = shutil.which(name)
    if not path:
        raise RuntimeError('%s not found: install gnutls-bin '
                           '(scripts/deps.sh)' % name)
    return path


def _certtool(*args, template=None, cwd=None):
    cmd = [_tool('certtool')] + list(args)
    if template is not None:
        tpl = os.path.join(cwd, 'template.%d' % os.getpid())
        with open(tpl, 'w') as f:
            f.write(template)
        cmd += ['--template', tpl]
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    finally:
        if template is not None:
            os.unlink(tpl)


class CA:
    def __init__(self, workdir, name):
        self.dir = os.path.join(str(workdir), 'ca-' + name)
        os.makedirs(self.dir, exist_ok=True)
        self.key = os.path.join(self.dir, 'ca-key.pem')
        self.cert = os.path.join(self.dir, 'ca-cert.pem')
        _certtool('--generate-privkey', '--key-type=ecdsa', '--outfile',
                  self.key)
        _certtool('--generate-self-signed', '--load-privkey', self.key,
                  '--outfile', self.cert, cwd=self.dir,
                  template='cn = %s\nca\ncert_signing_key\n'
                           'expiration_days = 30\n' % name)

    def issue(self, key_path, cert_path, dn_cn, server):
        """Signs a new key pair for a server (hostnames localhost and
        127.0.0.1) or a client."""
        _certtool('--generate-privkey', '--key-type=ecdsa', '--outfile',
                  key_path)
        tpl = ('organization = blockjobd tests\ncn = %s\n'
               'expiration_days = 30\nsigning_key\nencryption_key\n'
               % dn_cn)
        if server:
            tpl += ('tls_www_server\ndns_name = localhost\n'
                    'ip_address = 127.0.0.1\n')
        else:
            tpl += 'tls_www_client\n'
        _certtool('--generate-certificate', '--load-privkey', key_path,
                  '--load-ca-certificate', self.cert,
                  '--load-ca-privkey', self.key, '--outfile', cert_path,
                  cwd=os.path.dirname(cert_path), template=tpl)


def client_dn(cn):
    """The distinguished name GnuTLS prints for a client certificate made
    by CA.issue (what authz-simple's identity compares with)."""
    return 'CN=%s,O=blockjobd tests' % cn


def make_x509_dir(workdir, name, ca, server=True, client_cn='client',
                  server_cn='localhost'):
    """A qemu-layout x509 directory holding ca's certificate and, for a
    server, server-cert/key, for a client client-cert/key."""
    d = os.path.join(str(workdir), name)
    os.makedirs(d, exist_ok=True)
    shutil.copy(ca.cert, os.path.join(d, 'ca-cert.pem'))
    if server:
        ca.issue(os.path.join(d, 'server-key.pem'),
                 os.path.join(d, 'server-cert.pem'), server_cn, True)
    else:
        ca.issue(os.path.join(d, 'client-key.pem'),
                 os.path.join(d, 'client-cert.pem'), client_cn, False)
    return d


def copy_with_encrypted_key(workdir, name, server_dir, password):
    """A copy of a server directory whose key is PKCS#8-encrypted with
    password (for tls-creds-x509's passwordid)."""
    d = os.path.join(str(workdir), name)
    os.makedirs(d, exist_ok=True)
    for f in ('ca-cert.pem', 'server-cert.pem'):
        shutil.copy(os.path.join(server_dir, f), os.path.join(d, f))
    _certtool('--load-privkey', os.path.join(server_dir, 'server-key.pem'),
              '--to-p8', '--password=%s' % password, '--outfile',
              os.path.join(d, 'server-key.pem'))
    return d


def make_broken_dir(workdir, name, server_dir, broken):
    """A copy of a server directory with file `broken` replaced by
    garbage (a file that is there but is no PEM)."""
    d = os.path.join(str(workdir), name)
    os.makedirs(d, exist_ok=True)
    for f in ('ca-cert.pem', 'server-cert.pem', 'server-key.pem'):
        shutil.copy(os.path.join(server_dir, f), os.path.join(d, f))
    with open(os.path.join(d, broken), 'w') as f:
        f.write('garbage\n')
    return d


def make_psk_dir(workdir, name, username='alice', key=None):
    """A directory with keys.psk holding username's key: psktool's random
    one, or key (hex) when given."""
    d = os.path.join(str(workdir), name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, 'keys.psk')
    if key is None:
        subprocess.run([_tool('psktool'), '-u', username, '-p', path],
                       check=True, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    else:
        with open(path, 'w') as f:
            f.write('%s:%s\n' % (username, key))
    return d


def psk_key(d, username):
    with open(os.path.join(d, 'keys.psk')) as f:
        for line in f:
            u, _, k = line.strip().partition(':')
            if u == username:
                return k
    raise KeyError(username)
