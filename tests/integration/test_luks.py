"""The luks driver (issue 21, encryption): LUKS1 images made by qemu-img
read and written by the daemon, images the daemon creates
(blockdev-create driver=luks) read and written by qemu-img/qemu-io, the
errors of a wrong passphrase, a missing secret and a file that is not
LUKS as qemu-storage-daemon 7.2 words them, and backup/mirror between a
plain disk and a LUKS target compared byte for byte.

Every image uses a short iter-time: PBKDF2 at qemu's default of 2 s per
key slot would make each open take seconds.
"""

import atexit
import hashlib
import json
import os
import shutil
import tempfile

import pytest

from bjtest import (QMPError, blockdev_add_error, qemu_img, qemu_io,
                    run_blockjobd)
from remote import unexport

MiB = 1 << 20
PASS = 'correct horse'
SECRET = 'secret,id=sec0,data=%s' % PASS


def luks_opts(path, secret='sec0'):
    """qemu's --image-opts for a luks image at path."""
    return 'driver=luks,key-secret=%s,file.filename=%s' % (secret, path)


def qio(path, *cmds):
    """qemu-io commands on the luks image at path (the passphrase PASS)."""
    args = ['--object', SECRET, '--image-opts']
    for c in cmds:
        args += ['-c', c]
    return qemu_io(*args, luks_opts(path))


def compare(a, b, *extra):
    """qemu-img compare of two --image-opts images (the secret given)."""
    qemu_img('compare', '-q', *extra, '--object', SECRET, '--image-opts',
             a, b)


# qemu-img create benchmarks PBKDF2 for every LUKS image it makes, about
# 2.5 s of CPU whatever iter-time says.  Each kind of image is made once
# per run and copied for every test that wants one (the copies share salt
# and UUID, which no test looks at).
_TEMPLATES = {}
_TEMPLATE_DIR = []


def _template(fmt, opts, size):
    key = (fmt, opts, size)
    if key not in _TEMPLATES:
        if not _TEMPLATE_DIR:
            _TEMPLATE_DIR.append(tempfile.mkdtemp(prefix='bj-luks-'))
            atexit.register(shutil.rmtree, _TEMPLATE_DIR[0], True)
        path = os.path.join(_TEMPLATE_DIR[0], 'tmpl%d' % len(_TEMPLATES))
        # qemu-img's PBKDF2 benchmark fails now and then on a loaded
        # machine ("Unable to get accurate CPU usage", measuring no CPU
        # time): that one failure is retried, any other fails the test.
        for _ in range(20):
            p = qemu_img('create', '-q', '-f', fmt, '--object', SECRET,
                         '-o', opts, path, size, check=False)
            if 'Unable to get accurate CPU usage' not in p.stderr:
                break
        assert p.returncode == 0, p.stderr
        _TEMPLATES[key] = path
    return _TEMPLATES[key]


def qemu_luks_image(path, size='4M', *extra):
    """A LUKS image made by qemu-img at path (the passphrase PASS)."""
    opts = 'key-secret=sec0,iter-time=100'
    for e in extra:
        opts += ',' + e
    shutil.copyfile(_template('luks', opts, size), path)


def add_luks(qmp, node, path, secret='sec0'):
    qmp.execute('blockdev-add', {
        'driver': 'luks', 'node-name': node, 'key-secret': secret,
        'file': {'driver': 'file', 'filename': path}})


def sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def wait_job(qmp, jid):
    ev = qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=60,
                        match={'data': {'device': jid}})
    assert 'error' not in ev['data'], ev
    return ev


@pytest.fixture
def luksd(daemon_factory):
    return daemon_factory('--object', SECRET)


# ---- images qemu-img made, read and written by us ------------------------

@pytest.mark.parametrize('variant', [
    (),
    ('cipher-alg=aes-128', 'cipher-mode=xts', 'hash-alg=sha1'),
    ('cipher-alg=aes-256', 'cipher-mode=cbc', 'ivgen-alg=essiv',
     'ivgen-hash-alg=sha256'),
    ('cipher-alg=aes-128', 'cipher-mode=cbc', 'ivgen-alg=plain',
     'hash-alg=sha512'),
], ids=['default', 'aes128-xts-sha1', 'aes256-cbc-essiv', 'aes128-cbc-plain'])
def test_qemu_image_read_write(luksd, workdir, variant):
    img = os.path.join(str(workdir), 'q.luks')
    qemu_luks_image(img, '4M', *variant)
    qio(img, 'write -P 0x11 0 1M', 'write -P 0x22 1536 700',
        'write -P 0x33 3M 64k')
    qmp = luksd.qmp
    add_luks(qmp, 'l0', img)
    node = [n for n in qmp.execute('query-named-block-nodes')
            if n['node-name'] == 'l0'][0]
    assert node['drv'] == 'luks'
    assert node['encrypted'] is True
    assert json.loads(node['file'][len('json:'):]) == {
        'driver': 'luks', 'key-secret': 'sec0',
        'file': {'driver': 'file', 'filename': img}}
    assert node['image']['virtual-size'] == 4 * MiB
    assert node['image']['encrypted'] is True
    # The header as qemu-img describes it (cipher, slots, uuid, ...).
    info = json.loads(qemu_img('info', '-U', '--output=json', img).stdout)
    assert node['image']['format-specific'] == info['format-specific']
    sock = luksd.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'l0', 'writable': True})
    uri = 'nbd+unix:///l0?socket=%s' % sock
    # What we decrypt is what qemu decrypts (unwritten sectors too: they
    # decrypt to noise, not zeroes).
    compare('driver=nbd,server.type=unix,server.path=%s,export=l0' % sock,
            luks_opts(img), '-U')
    qemu_io('-f', 'raw', '-c', 'read -P 0x11 0 1536',
            '-c', 'read -P 0x22 1536 700', '-c', 'read -P 0x11 2236 1046340',
            '-c', 'read -P 0x33 3M 64k', uri)
    # Our writes, aligned and not, as qemu reads them back.
    qemu_io('-f', 'raw', '-c', 'write -P 0x44 1M 128k',
            '-c', 'write -P 0x55 777 1000', '-c', 'write -z 3M 4k', uri)
    unexport(qmp)       # qemu-io's hang-up may not be seen yet
    qmp.execute('nbd-server-stop')
    qmp.execute('blockdev-del', node_name='l0')
    qio(img, 'read -P 0x11 0 777', 'read -P 0x55 777 1000',
        'read -P 0x22 1777 459', 'read -P 0x11 2236 1046340',
        'read -P 0x44 1M 128k', 'read -P 0 3M 4k', 'read -P 0x33 3076k 60k')


# ---- images we create, used by qemu ---------------------------------------

@pytest.mark.parametrize('extra,info', [
    ({}, ('aes-256', 'xts', 'plain64', 'sha256')),
    ({'cipher-alg': 'aes-128', 'cipher-mode': 'cbc', 'ivgen-alg': 'essiv',
      'hash-alg': 'sha1'}, ('aes-128', 'cbc', 'essiv', 'sha1')),
    ({'cipher-alg': 'aes-256', 'cipher-mode': 'cbc', 'ivgen-alg': 'plain',
      'hash-alg': 'sha512'}, ('aes-256', 'cbc', 'plain', 'sha512')),
], ids=['default', 'aes128-cbc-essiv', 'aes256-cbc-plain'])
def test_create_used_by_qemu(luksd, workdir, extra, info):
    img = os.path.join(str(workdir), 'new.luks')
    qmp = luksd.qmp
    qmp.execute('blockdev-create', {'job-id': 'c0', 'options': {
        'driver': 'file', 'filename': img, 'size': 0}})
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=60,
                   match={'data': {'id': 'c0', 'status': 'concluded'}})
    qmp.execute('job-dismiss', id='c0')
    opts = {'driver': 'luks', 'file': {'driver': 'file', 'filename': img},
            'size': 8 * MiB, 'key-secret': 'sec0', 'iter-time': 10}
    opts.update(extra)
    qmp.execute('blockdev-create', {'job-id': 'c1', 'options': opts})
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=60,
                   match={'data': {'id': 'c1', 'status': 'concluded'}})
    job = [j for j in qmp.execute('query-jobs') if j['id'] == 'c1'][0]
    assert 'error' not in job, job
    qmp.execute('job-dismiss', id='c1')

    out = qemu_img('info', '--output=json', '--object', SECRET,
                   '--image-opts', luks_opts(img)).stdout
    js = json.loads(out)
    assert js['virtual-size'] == 8 * MiB
    assert js['encrypted'] is True
    data = js['format-specific']['data']
    assert (data['cipher-alg'], data['cipher-mode'], data['ivgen-alg'],
            data['hash-alg']) == info
    assert [s['active'] for s in data['slots']] == [True] + [False] * 7
    # qemu writes, we read; we write, qemu reads.
    qio(img, 'write -P 0x61 0 2M', 'write -P 0x62 5M 4097')
    add_luks(qmp, 'l0', img)
    sock = luksd.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'l0', 'writable': True})
    uri = 'nbd+unix:///l0?socket=%s' % sock
    qemu_io('-f', 'raw', '-c', 'read -P 0x61 0 2M',
            '-c', 'read -P 0x62 5M 4097',
            '-c', 'write -P 0x63 7M 1M', '-c', 'write -P 0x64 100 10', uri)
    unexport(qmp)       # qemu-io's hang-up may not be seen yet
    qmp.execute('nbd-server-stop')
    qmp.execute('blockdev-del', node_name='l0')
    qio(img, 'read -P 0x61 0 100', 'read -P 0x64 100 10',
        'read -P 0x61 110 2097042', 'read -P 0x62 5M 4097',
        'read -P 0x63 7M 1M')


# ---- errors --------------------------------------------------------------

def test_wrong_passphrase_changes_nothing(daemon_factory, workdir):
    img = os.path.join(str(workdir), 'w.luks')
    qemu_luks_image(img)
    qio(img, 'write -P 0x5a 0 1M')
    before = sha(img)
    d = daemon_factory('--object', 'secret,id=bad,data=not-it')
    opts = {'driver': 'luks', 'node-name': 'l0', 'key-secret': 'bad',
            'file': {'driver': 'file', 'filename': img}}
    assert blockdev_add_error(d.qmp, opts) == \
        'Invalid password, cannot unlock any keyslot'
    assert not [n for n in d.qmp.execute('query-named-block-nodes')]
    assert sha(img) == before
    # The same words on the command line.
    r = run_blockjobd('--object', 'secret,id=bad,data=not-it', '--blockdev',
                      'driver=luks,node-name=l0,key-secret=bad,'
                      'file.driver=file,file.filename=%s' % img)
    assert r.returncode == 1
    assert r.stderr.strip().endswith(
        ': Invalid password, cannot unlock any keyslot'), r.stderr
    assert sha(img) == before


def test_missing_secret_and_not_luks(luksd, workdir):
    img = os.path.join(str(workdir), 'm.luks')
    qemu_luks_image(img)
    before = sha(img)
    base = {'driver': 'luks', 'node-name': 'l0',
            'file': {'driver': 'file', 'filename': img}}
    assert blockdev_add_error(luksd.qmp, dict(base, **{
        'key-secret': 'nosuch'})) == "No secret with id 'nosuch'"
    assert blockdev_add_error(luksd.qmp, base) == \
        "Parameter 'key-secret' is required for cipher"
    raw = os.path.join(str(workdir), 'plain.raw')
    qemu_img('create', '-q', '-f', 'raw', raw, '1M')
    assert blockdev_add_error(luksd.qmp, {
        'driver': 'luks', 'node-name': 'l0', 'key-secret': 'sec0',
        'file': {'driver': 'file', 'filename': raw}}) == \
        'Volume is not in LUKS format'
    # Cut short inside the payload area: unlocked, then its length fails.
    short = os.path.join(str(workdir), 'short.luks')
    with open(img, 'rb') as f, open(short, 'wb') as g:
        g.write(f.read(MiB))
    assert blockdev_add_error(luksd.qmp, {
        'driver': 'luks', 'node-name': 'l0', 'key-secret': 'sec0',
        'file': {'driver': 'file', 'filename': short}}) == \
        'Could not refresh total sector count: Input/output error'
    assert not luksd.qmp.execute('query-named-block-nodes')
    assert sha(img) == before


# ---- jobs between a plain disk and a LUKS target -------------------------

def test_backup_and_mirror_through_luks(luksd, workdir):
    w = str(workdir)
    src = os.path.join(w, 'src.raw')
    back = os.path.join(w, 'back.raw')
    img = os.path.join(w, 't.luks')
    qemu_img('create', '-q', '-f', 'raw', src, '16M')
    qemu_io('-f', 'raw', '-c', 'write -P 1 0 3M', '-c', 'write -P 2 5M 1M',
            '-c', 'write -P 3 12345 678', '-c', 'write -P 4 15M 1M', src)
    qemu_luks_image(img, '16M')
    qemu_img('create', '-q', '-f', 'raw', back, '16M')
    qmp = luksd.qmp
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'src',
                                 'file': {'driver': 'file',
                                          'filename': src}})
    add_luks(qmp, 'lt', img)
    qmp.execute('blockdev-backup', {'job-id': 'b0', 'device': 'src',
                                    'target': 'lt', 'sync': 'full'})
    wait_job(qmp, 'b0')
    # Mirror the LUKS node back to a plain disk.
    qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'back',
                                 'file': {'driver': 'file',
                                          'filename': back}})
    qmp.execute('blockdev-mirror', {'job-id': 'm0', 'device': 'lt',
                                    'target': 'back', 'sync': 'full'})
    qmp.wait_event('BLOCK_JOB_READY', timeout=60,
                   match={'data': {'device': 'm0'}})
    qmp.execute('block-job-complete', device='m0')
    wait_job(qmp, 'm0')
    for n in ('src', 'lt', 'back'):
        qmp.execute('blockdev-del', node_name=n)
    compare('driver=raw,file.filename=%s' % src, luks_opts(img))
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', src, back)
    # The ciphertext is not the plaintext.
    with open(img, 'rb') as f:
        f.seek(os.path.getsize(img) - 16 * MiB)
        assert b'\x01' * 4096 not in f.read(3 * MiB)


def test_create_errors(luksd, workdir):
    img = os.path.join(str(workdir), 'e.luks')
    qemu_img('create', '-q', '-f', 'raw', img, '0')
    before = sha(img)
    qmp = luksd.qmp
    qmp.execute('blockdev-create', {'job-id': 'c0', 'options': {
        'driver': 'luks', 'file': {'driver': 'file', 'filename': img},
        'size': MiB, 'key-secret': 'nosuch', 'iter-time': 10}})
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=60,
                   match={'data': {'id': 'c0', 'status': 'concluded'}})
    job = [j for j in qmp.execute('query-jobs') if j['id'] == 'c0'][0]
    assert job['error'] == "No secret with id 'nosuch'"
    qmp.execute('job-dismiss', id='c0')
    assert sha(img) == before
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-create', {'job-id': 'c1', 'options': {
            'driver': 'luks', 'file': {'driver': 'file', 'filename': img},
            'size': MiB, 'cipher-mode': 'nope'}})
    assert "cipher-mode" in e.value.desc


# ---- qcow2 with encrypt.format=luks --------------------------------------

def qcow2_opts(path, secret='sec0'):
    return ('driver=qcow2,encrypt.format=luks,encrypt.key-secret=%s,'
            'file.filename=%s' % (secret, path))


def qemu_qcow2_luks(path, size, *extra):
    """A qcow2 image with encrypt.format=luks made by qemu-img at path."""
    opts = 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=100'
    for e in extra:
        opts += ',' + e
    shutil.copyfile(_template('qcow2', opts, size), path)


def qio_qcow2(path, *cmds):
    args = ['--object', SECRET, '--image-opts']
    for c in cmds:
        args += ['-c', c]
    return qemu_io(*args, qcow2_opts(path))


def test_qcow2_luks_interop(luksd, workdir):
    w = str(workdir)
    base = os.path.join(w, 'base.raw')
    img = os.path.join(w, 'enc.qcow2')
    qemu_img('create', '-q', '-f', 'raw', base, '8M')
    qemu_io('-f', 'raw', '-c', 'write -P 0x0b 0 8M', base)
    # A plain backing file: copy-on-write encrypts what it copies.
    qemu_qcow2_luks(img, '8M', 'backing_file=%s' % base,
                    'backing_fmt=raw', 'cluster_size=65536')
    qio_qcow2(img, 'write -P 0x11 0 1M', 'write -P 0x22 5M 4k')
    qmp = luksd.qmp
    qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'q0',
        'encrypt': {'format': 'luks', 'key-secret': 'sec0'},
        'file': {'driver': 'file', 'filename': img}})
    sock = luksd.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'q0', 'writable': True})
    node = [n for n in qmp.execute('query-named-block-nodes')
            if n['node-name'] == 'q0'][0]
    assert node['encrypted'] is True
    info = json.loads(qemu_img('info', '-U', '--output=json', img).stdout)
    assert node['image']['format-specific'] == info['format-specific']
    assert node['image']['format-specific']['data']['encrypt']['format'] \
        == 'luks'
    compare('driver=nbd,server.type=unix,server.path=%s,export=q0' % sock,
            qcow2_opts(img), '-U')
    uri = 'nbd+unix:///q0?socket=%s' % sock
    # Into an allocated cluster, into a new one (head and tail from the
    # backing file), across clusters, unaligned.
    qemu_io('-f', 'raw', '-c', 'read -P 0x11 0 1M', '-c', 'read -P 0x22 5M 4k',
            '-c', 'read -P 0x0b 6M 2M', '-c', 'write -P 0x33 512 1024',
            '-c', 'write -P 0x44 7M 100k', '-c', 'write -P 0x55 5M 512',
            '-c', 'write -P 0x66 3000000 200000', uri)
    unexport(qmp)       # qemu-io's hang-up may not be seen yet
    qmp.execute('nbd-server-stop')
    qmp.execute('blockdev-del', node_name='q0')
    qio_qcow2(img, 'read -P 0x11 0 512', 'read -P 0x33 512 1024',
              'read -P 0x11 1536 1047040', 'read -P 0x44 7M 100k',
              'read -P 0x0b 7442432 946176', 'read -P 0x55 5M 512',
              'read -P 0x22 5243392 3584', 'read -P 0x0b 2M 902848',
              'read -P 0x66 3000000 200000', 'read -P 0x0b 3200000 2042880')
    qemu_img('check', '-q', '--object', SECRET, '--image-opts',
             qcow2_opts(img))
    # The guest data is not in the file in clear.
    with open(img, 'rb') as f:
        assert b'\x44' * 4096 not in f.read()


def test_qcow2_luks_errors(daemon_factory, workdir):
    w = str(workdir)
    img = os.path.join(w, 'enc.qcow2')
    plain = os.path.join(w, 'plain.qcow2')
    qemu_qcow2_luks(img, '1M')
    qemu_img('create', '-q', '-f', 'qcow2', plain, '1M')
    before = sha(img)
    d = daemon_factory('--object', SECRET, '--object',
                       'secret,id=bad,data=not-it')

    def err(path, encrypt):
        opts = {'driver': 'qcow2', 'node-name': 'q0',
                'file': {'driver': 'file', 'filename': path}}
        if encrypt is not None:
            opts['encrypt'] = encrypt
        return blockdev_add_error(d.qmp, opts)

    assert err(img, {'format': 'luks', 'key-secret': 'bad'}) == \
        'Invalid password, cannot unlock any keyslot'
    assert err(img, {'format': 'luks', 'key-secret': 'nosuch'}) == \
        "No secret with id 'nosuch'"
    assert err(img, None) == \
        "Parameter 'encrypt.key-secret' is required for cipher"
    assert err(img, {'format': 'luks'}) == \
        "Parameter 'encrypt.key-secret' is required for cipher"
    assert err(img, {'key-secret': 'sec0'}) == \
        "Parameter 'encrypt.format' is missing"
    assert err(img, {'format': 'aes', 'key-secret': 'sec0'}) == \
        "Header reported 'luks' encryption format but options specify 'aes'"
    assert err(plain, {'format': 'luks', 'key-secret': 'sec0'}) == \
        "No encryption in image header, but options specified format 'luks'"
    assert not d.qmp.execute('query-named-block-nodes')
    assert sha(img) == before


def run_create(qmp, jid, options):
    """blockdev-create to concluded; returns the job's error (or None)."""
    qmp.execute('blockdev-create', {'job-id': jid, 'options': options})
    qmp.wait_event('JOB_STATUS_CHANGE', timeout=60,
                   match={'data': {'id': jid, 'status': 'concluded'}})
    job = [j for j in qmp.execute('query-jobs') if j['id'] == jid][0]
    qmp.execute('job-dismiss', id=jid)
    return job.get('error')


def test_qcow2_luks_create(luksd, workdir):
    img = os.path.join(str(workdir), 'new.qcow2')
    qmp = luksd.qmp
    assert run_create(qmp, 'c0', {'driver': 'file', 'filename': img,
                                  'size': 0}) is None
    base = {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': img},
            'size': 8 * MiB}
    assert run_create(qmp, 'c1', dict(base, encrypt={
        'format': 'luks', 'key-secret': 'nosuch'})) == \
        "No secret with id 'nosuch'"
    # Member errors fail the command, in qsd's words.
    for enc, msg in [
            ({'format': 'luks', 'key-secret': 'sec0', 'cipher-alg': 'nope'},
             "Parameter 'cipher-alg' does not accept value 'nope'"),
            ({'key-secret': 'sec0'},
             "Parameter 'options.encrypt.format' is missing"),
            ({'format': 'aes', 'key-secret': 'sec0'},
             "Parameter 'format' does not accept value 'aes'"),
            ({'format': 'luks', 'key-secret': 'sec0', 'iter-time': 'x'},
             "Invalid parameter type for 'options.encrypt.iter-time', "
             "expected: integer"),
            ({'format': 'luks', 'key-secret': 'sec0', 'bogus': 1},
             "Parameter 'options.encrypt.bogus' is unexpected")]:
        with pytest.raises(QMPError) as e:
            qmp.execute('blockdev-create', {'job-id': 'cx', 'options': dict(
                base, encrypt=enc)})
        assert e.value.desc == msg
    assert run_create(qmp, 'c2', dict(base, encrypt={
        'format': 'luks'})) == \
        "Parameter 'encrypt.key-secret' is required for cipher"
    assert run_create(qmp, 'c3', dict(base, encrypt={
        'format': 'luks', 'key-secret': 'sec0', 'iter-time': 10,
        'cipher-alg': 'aes-128', 'cipher-mode': 'cbc',
        'ivgen-alg': 'essiv'})) is None
    qemu_img('check', '-q', '--object', SECRET, '--image-opts',
             qcow2_opts(img))
    info = json.loads(qemu_img('info', '--output=json', img).stdout)
    assert info['encrypted'] is True
    enc = info['format-specific']['data']['encrypt']
    assert (enc['format'], enc['cipher-alg'], enc['cipher-mode'],
            enc['ivgen-alg']) == ('luks', 'aes-128', 'cbc', 'essiv')
    # qemu writes, we read and write, qemu reads.
    qio_qcow2(img, 'write -P 0x71 0 1M', 'write -P 0x72 3M 5000')
    qmp.execute('blockdev-add', dict(
        {'node-name': 'q0', 'driver': 'qcow2',
         'encrypt': {'format': 'luks', 'key-secret': 'sec0'},
         'file': {'driver': 'file', 'filename': img}}))
    sock = luksd.socket_path('nbd.sock')
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': 'e0',
                                     'node-name': 'q0', 'writable': True})
    uri = 'nbd+unix:///q0?socket=%s' % sock
    qemu_io('-f', 'raw', '-c', 'read -P 0x71 0 1M',
            '-c', 'read -P 0x72 3M 5000', '-c', 'read -P 0 4M 4M',
            '-c', 'write -P 0x73 6M 70000', '-c', 'write -P 0x74 1000 24',
            uri)
    unexport(qmp)       # qemu-io's hang-up may not be seen yet
    qmp.execute('nbd-server-stop')
    qmp.execute('blockdev-del', node_name='q0')
    qio_qcow2(img, 'read -P 0x71 0 1000', 'read -P 0x74 1000 24',
              'read -P 0x71 1024 1047552', 'read -P 0x72 3M 5000',
              'read -P 0x73 6M 70000', 'read -P 0 7M 1M')
    qemu_img('check', '-q', '--object', SECRET, '--image-opts',
             qcow2_opts(img))


def test_luks_resize(luksd, workdir):
    img = os.path.join(str(workdir), 'r.luks')
    qemu_luks_image(img, '4M')
    qio(img, 'write -P 0x21 0 4M')
    qmp = luksd.qmp
    add_luks(qmp, 'l0', img)
    qmp.execute('block_resize', node_name='l0', size=8 * MiB)
    node = [n for n in qmp.execute('query-named-block-nodes')
            if n['node-name'] == 'l0'][0]
    assert node['image']['virtual-size'] == 8 * MiB
    qmp.execute('blockdev-del', node_name='l0')
    info = json.loads(qemu_img('info', '--output=json', img).stdout)
    assert info['virtual-size'] == 8 * MiB
    qio(img, 'read -P 0x21 0 4M', 'write -P 0x22 6M 1M', 'read -P 0x22 6M 1M')
