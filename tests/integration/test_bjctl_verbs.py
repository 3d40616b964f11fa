"""bjctl's workflow verbs (node add/remove), against blockjobd and
qemu-storage-daemon 7.2: each daemon test runs for both, like
test_bjctl.py.  Outcomes are read back over QMP (query-named-block-nodes).
"""

import json
import os
import subprocess

import pytest

import bjctltest
import bjtest
from bjctltest import QSD, MiB, bjctl_path, check_peer, help_text
from test_bjctl import json_lines

SIZE = 4 * MiB


class Env(bjctltest.Env):
    def nodes(self):
        return {n['node-name']: n
                for n in self.d.qmp.execute('query-named-block-nodes')}

    def image(self, name, fmt='qcow2', *extra):
        path = os.path.join(self.workdir, name)
        bjtest.qemu_img('create', '-q', '-f', fmt, *extra, path, str(SIZE))
        return path


@pytest.fixture(params=['daemon', 'qsd'])
def env(request, tmp_path, binary):
    qsd = request.param == 'qsd'
    check_peer(request.param)
    d = bjtest.Daemon(tmp_path, [], binary=QSD if qsd else binary)
    d.start()
    yield Env(d, tmp_path, qsd or bjtest.is_qsd())
    d.cleanup()


def test_help_lists_node_commands():
    out = help_text()
    for word in ('node add NAME', '--driver', '--backing NODE|none',
                 '--read-only', 'node add SPEC', 'node remove NAME', 'image create PATH',
                 '--cluster-size', '--backing-format', 'export add NODE',
                 'export remove ID', 'export list', '--allocation-depth'):
        assert word in out, word
    assert 'blockdev-del' in help_text('node')


def test_node_add_qcow2_and_remove_takes_the_file_node(env):
    img = env.image('a.qcow2')
    p = env.run('node', 'add', 'a', '--driver', 'qcow2', '--file', img,
                expect=0)
    assert p.stdout == "node 'a': added\n"
    n = env.nodes()
    assert n['a']['drv'] == 'qcow2' and not n['a']['ro']
    files = [k for k, v in n.items() if v['drv'] == 'file']
    assert len(files) == 1 and n[files[0]]['file'] == img
    p = env.run('node', 'remove', 'a', expect=0)
    assert p.stdout == "node 'a': removed\n"
    assert env.nodes() == {}


def test_node_add_overlay_backing_and_read_only(env):
    base = env.image('base.qcow2')
    top = env.image('top.qcow2', 'qcow2', '-b', base, '-F', 'qcow2')
    env.run('node', 'add', 'base', '--driver', 'qcow2', '--file', base,
            '--read-only', expect=0)
    env.run('node', 'add', 'top', '--driver', 'qcow2', '--file', top,
            '--backing', 'base', expect=0)
    n = env.nodes()
    assert n['base']['ro'] and not n['top']['ro']
    assert n['top']['backing_file_depth'] == 1
    assert n['top']['image']['backing-image']['filename'] == base
    env.run('node', 'remove', 'top', expect=0)
    # --backing none: the header's backing file is not opened
    env.run('node', 'add', 'lone', '--driver', 'qcow2', '--file', top,
            '--backing', 'none', expect=0)
    n = env.nodes()
    assert n['lone']['backing_file_depth'] == 0
    assert set(k for k in n if not k.startswith('#')) == {'base', 'lone'}


def test_node_add_raw_file_and_specs_json(env):
    raw = env.image('r.raw', 'raw')
    p = env.run('--json', 'node', 'add', 'r', '--driver', 'raw', '--file',
                raw, expect=0)
    assert json_lines(p.stdout) == [{'node': 'r', 'result': 'added'}]
    env.run('node', 'add', 'f', '--driver', 'file', '--file', raw,
            '--read-only', expect=0)
    env.run('node', 'add', 'driver=null-co,node-name=n1,size=%d' % SIZE,
            expect=0)
    env.run('node', 'add', json.dumps({
        'driver': 'qcow2', 'node-name': 'q',
        'file': {'driver': 'file', 'filename': env.image('q.qcow2')}}),
        expect=0)
    n = env.nodes()
    assert n['r']['drv'] == 'raw' and n['f']['drv'] == 'file'
    assert n['n1']['drv'] == 'null-co' and n['n1']['image']['virtual-size'] \
        == SIZE
    assert n['q']['drv'] == 'qcow2'
    p = env.run('--json', 'node', 'remove', 'n1', expect=0)
    assert json_lines(p.stdout) == [{'node': 'n1', 'result': 'removed'}]
    assert 'n1' not in env.nodes()


def test_node_refusals(env):
    p = env.run('--json', 'node', 'remove', 'nosuch', expect=1)
    (o,) = json_lines(p.stdout)
    assert o['exit'] == 1 and 'nosuch' in o['error']['desc']
    p = env.run('node', 'add', 'x', '--driver', 'qcow2', '--file',
                os.path.join(env.workdir, 'missing.qcow2'), expect=1)
    assert p.stderr.startswith('bjctl: ')
    for args in (['node', 'add', 'x'],
                 ['node', 'add', 'x', '--driver', 'vmdk', '--file', 'p'],
                 ['node', 'add', 'x', '--driver', 'raw', '--file', 'p',
                  '--backing', 'none'],
                 ['node', 'add', 'driver=null-co', ],
                 ['node', 'add', '{"driver":', ],
                 ['node', 'add', 'driver=null-co,node-name=n', '--read-only'],
                 ['node', 'remove', 'x', '--driver', 'raw'],
                 ['node', 'frob', 'x'],
                 ['node', 'remove', 'x', 'y']):
        env.run(*args, expect=2)
    assert env.nodes() == {}


def img_info(path):
    return json.loads(bjtest.qemu_img('info', '--output=json', path).stdout)


def test_image_create_qcow2_and_raw(env):
    img = os.path.join(env.workdir, 'c.qcow2')
    p = env.run('image', 'create', img, '--format', 'qcow2', '--size', '8M',
                '--cluster-size', '128K', expect=0)
    assert p.stdout == "image '%s' created (qcow2, %d bytes)\n" % (img,
                                                                   8 * MiB)
    info = img_info(img)
    assert info['format'] == 'qcow2' and info['virtual-size'] == 8 * MiB
    assert info['cluster-size'] == 128 * 1024
    bjtest.qemu_img('check', img)
    raw = os.path.join(env.workdir, 'c.raw')
    p = env.run('--json', 'image', 'create', raw, '--format', 'raw',
                '--size', '3M', expect=0)
    assert json_lines(p.stdout) == [{'image': raw, 'result': 'created',
                                     'format': 'raw', 'size': 3 * MiB}]
    assert os.path.getsize(raw) == 3 * MiB
    # the temporary node and the jobs are gone
    assert env.nodes() == {}
    assert env.d.qmp.execute('query-jobs') == []


def test_image_create_overlay_then_node_add(env):
    base = env.image('base.qcow2')
    bjtest.qemu_io('-c', 'write -P 0x11 0 1M', base)
    top = os.path.join(env.workdir, 'top.qcow2')
    p = env.run('--json', '--verbose', 'image', 'create', top, '--format',
                'qcow2', '--size', str(SIZE) + 'B', '--backing', base,
                '--backing-format', 'qcow2', expect=0)
    assert json_lines(p.stdout)[-1]['result'] == 'created'
    info = img_info(top)
    assert info['backing-filename'] == base
    assert info['backing-filename-format'] == 'qcow2'
    bjtest.qemu_img('compare', base, top)
    env.run('node', 'add', 'top', '--driver', 'qcow2', '--file', top,
            expect=0)
    assert env.nodes()['top']['backing_file_depth'] == 1


def test_image_create_failures(env):
    bad = os.path.join(env.workdir, 'nodir', 'x.qcow2')
    p = env.run('--json', 'image', 'create', bad, '--format', 'qcow2',
                '--size', '1M', expect=1)
    (o,) = json_lines(p.stdout)
    assert o['exit'] == 1 and bad in o['error']['desc']
    assert env.d.qmp.execute('query-jobs') == []
    assert env.nodes() == {}
    for args in (['image', 'create', 'x'],
                 ['image', 'create', 'x', '--format', 'vmdk', '--size', '1M'],
                 ['image', 'create', 'x', '--format', 'raw'],
                 ['image', 'create', 'x', '--format', 'raw', '--size', '1M',
                  '--backing', 'b'],
                 ['image', 'create', 'x', '--format', 'qcow2', '--size',
                  '1M', '--backing-format', 'raw'],
                 ['image', 'create', 'x', '--format', 'qcow2', '--size',
                  'lots'],
                 ['image', 'frob', 'x']):
        env.run(*args, expect=2)
    assert not os.path.exists(os.path.join(env.workdir, 'x'))


def start_nbd(env):
    sock = env.d.socket_path('nbd.sock')
    env.d.qmp.execute('nbd-server-start', addr={
        'type': 'unix', 'data': {'path': sock}})
    return sock


def nbd_uri(sock, name):
    return 'nbd+unix:///%s?socket=%s' % (name, sock)


def test_export_add_needs_an_nbd_server(env):
    env.run('node', 'add', 'a', '--driver', 'qcow2', '--file',
            env.image('a.qcow2'), expect=0)
    p = env.run('export', 'add', 'a', expect=1)
    assert p.stderr.startswith("bjctl: cannot export 'a': the daemon runs "
                               "no NBD server")
    assert env.d.qmp.execute('query-block-exports') == []


def test_export_add_list_remove(env):
    sock = start_nbd(env)
    img = env.image('a.qcow2')
    bjtest.qemu_io('-c', 'write -P 0x33 0 64K', img)
    env.run('node', 'add', 'a', '--driver', 'qcow2', '--file', img, expect=0)
    env.run('bitmap', 'add', 'a', 'b0', '--disabled', expect=0)
    env.run('bitmap', 'add', 'a', 'b1', '--disabled', expect=0)
    p = env.run('export', 'list', expect=0)
    assert p.stdout == 'no exports\n'
    p = env.run('export', 'add', 'a', '--name', 'e1', '--bitmap', 'b0',
                '--bitmap', 'b1', '--allocation-depth', expect=0)
    assert p.stdout == "export 'e1': added\n"
    p = env.run('--json', 'export', 'add', 'a', '--writable', expect=0)
    assert json_lines(p.stdout) == [{'id': 'a', 'result': 'added'}]
    ex = {e['id']: e for e in env.d.qmp.execute('query-block-exports')}
    assert set(ex) == {'e1', 'a'} and ex['e1']['node-name'] == 'a'
    info = json.loads(bjtest.run('nbdinfo', '--json',
                                 nbd_uri(sock, 'e1')).stdout)
    (e1,) = info['exports']
    assert {'qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:b1',
            'qemu:allocation-depth'} <= set(e1['contexts'])
    assert e1['is_read_only']
    (ea,) = json.loads(bjtest.run('nbdinfo', '--json',
                                  nbd_uri(sock, 'a')).stdout)['exports']
    assert not ea['is_read_only']
    bjtest.qemu_img('compare', '-U', img, nbd_uri(sock, 'e1'))
    p = env.run('export', 'list', expect=0)
    lines = p.stdout.splitlines()
    assert lines[0].split() == ['ID', 'TYPE', 'NODE', 'STATUS']
    assert sorted(l.split() for l in lines[1:]) == [
        ['a', 'nbd', 'a', 'serving'], ['e1', 'nbd', 'a', 'serving']]
    p = env.run('--json', 'export', 'list', expect=0)
    assert sorted(o['id'] for o in json_lines(p.stdout)) == ['a', 'e1']
    p = env.run('export', 'remove', 'e1', expect=0)
    assert p.stdout == "export 'e1': removed\n"
    p = env.run('--json', 'export', 'remove', 'a', expect=0)
    assert json_lines(p.stdout) == [{'id': 'a', 'result': 'removed'}]
    assert env.d.qmp.execute('query-block-exports') == []
    # gone at once: the node can go too
    env.run('node', 'remove', 'a', expect=0)


def test_export_refusals(env):
    start_nbd(env)
    p = env.run('--json', 'export', 'remove', 'nosuch', expect=1)
    assert 'nosuch' in json_lines(p.stdout)[0]['error']['desc']
    env.run('export', 'add', 'nosuch', expect=1)
    for args in (['export'], ['export', 'add'], ['export', 'list', 'x'],
                 ['export', 'remove', 'x', '--writable'],
                 ['export', 'list', '--name', 'x'], ['export', 'frob', 'x']):
        env.run(*args, expect=2)
    assert env.d.qmp.execute('query-block-exports') == []


# --- bjctl(1) EXAMPLES, Workflows: each block run as the man page has it --

MAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                   'docs', 'bjctl.1')


def man_example(name):
    """The shell text of the .EX block after '.\\" example: NAME'."""
    with open(MAN) as f:
        lines = f.read().splitlines()
    start = lines.index('.\\" example: %s' % name)
    assert lines[start + 1] == '.EX'
    end = lines.index('.EE', start)
    return '\n'.join(lines[start + 2:end]).replace('\\-', '-') \
        .replace('\\e', '\\') + '\n'


@pytest.fixture(params=['daemon', 'qsd'])
def wf(request, tmp_path, binary):
    """A daemon with node disk0 (64 MiB, disk.qcow2) and an NBD server;
    the 'guest' export of disk0 is how the test writes, as a guest would."""
    qsd = request.param == 'qsd'
    check_peer(request.param)
    disk = str(tmp_path / 'disk.qcow2')
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', disk, '64M')
    bjtest.qemu_io('-c', 'write -P 0x61 0 4M', disk)
    nbd_sock = str(tmp_path / 'nbd.sock')
    d = bjtest.Daemon(tmp_path, [
        '--blockdev', 'driver=qcow2,node-name=disk0,file.driver=file,'
        'file.filename=%s' % disk,
        '--nbd-server', 'addr.type=unix,addr.path=%s' % nbd_sock],
        binary=QSD if qsd else binary)
    d.start()
    d.qmp.execute('block-export-add', type='nbd', id='guest',
                  node_name='disk0', name='guest', writable=True)
    e = Env(d, tmp_path, qsd or bjtest.is_qsd())
    e.nbd_sock = nbd_sock
    e.guest = nbd_uri(nbd_sock, 'guest')
    yield e
    d.cleanup()


def run_example(env, name, **extra_env):
    p = subprocess.run(
        ['bash', '-e', '-c', man_example(name)], cwd=env.workdir,
        capture_output=True, text=True, timeout=120,
        env=dict(bjtest.sanitizer_env(), BJCTL_SOCKET=env.sock(),
                 NBD_SOCK=env.nbd_sock, **extra_env,
                 PATH=os.path.dirname(bjctl_path()) + ':' +
                 os.path.dirname(bjtest.daemon_bin()) + ':' +
                 os.environ['PATH']))
    bjtest.check_sanitizer_text(p.stderr, 'bjctl')
    assert p.returncode == 0, '%s: exit %d\n%s\n%s' % (
        name, p.returncode, p.stdout, p.stderr)
    return p


def guest_write(env, cmd):
    bjtest.qemu_io('-f', 'raw', '-c', cmd, env.guest)


def same_as_guest(env, path):
    bjtest.qemu_img('compare', '-f', 'raw', '-F', 'qcow2', env.guest,
                    os.path.join(env.workdir, path))


def allocated_here(path):
    """The ranges path itself (not its backing files) holds data for."""
    m = json.loads(bjtest.qemu_img('map', '--output=json', path).stdout)
    return [(e['start'], e['length']) for e in m
            if e['depth'] == 0 and e['data']]


def test_man_push_and_pull_backups(wf):
    w = wf.workdir
    run_example(wf, 'push-full')
    same_as_guest(wf, 'full.qcow2')
    guest_write(wf, 'write -P 0x62 8M 1M')
    run_example(wf, 'push-incremental')
    same_as_guest(wf, 'inc1.qcow2')
    assert allocated_here(os.path.join(w, 'inc1.qcow2')) == [(8 * MiB, MiB)]

    guest_write(wf, 'write -P 0x63 16M 1M')
    bjtest.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', wf.guest,
                    os.path.join(w, 'expected.qcow2'))
    run_example(wf, 'pull-start')
    # the guest writes while the backup client reads
    guest_write(wf, 'write -P 0x64 16M 64K')
    guest_write(wf, 'write -P 0x65 32M 64K')
    run_example(wf, 'pull-read')
    bjtest.qemu_img('compare', os.path.join(w, 'expected.qcow2'),
                    os.path.join(w, 'pulled.qcow2'))
    with open(os.path.join(w, 'dirty.map')) as f:
        dirty = [l.split()[:2] for l in f if l.split()[2] == '1']
    assert dirty == [[str(16 * MiB), str(MiB)]]
    # torn down: the guest's export, disk0 alone, inc1 recording
    assert [e['id'] for e in wf.d.qmp.execute('query-block-exports')] == \
        ['guest']
    assert wf.d.qmp.execute('query-jobs') == []
    n = wf.nodes()
    assert set(k for k in n if not k.startswith('#')) == {'disk0'}
    assert [(b['name'], b['recording'], b['count'])
            for b in n['disk0']['dirty-bitmaps'] if 'name' in b] == \
        [('inc1', True, 2 * 64 * 1024)]   # the two writes since the freeze
    assert not os.path.exists(os.path.join(w, 'fleece.qcow2'))


def test_man_migrate(wf):
    """The migration example, with the destination daemon it starts
    stopped by its pid afterwards."""
    from remote import free_port
    w = wf.workdir
    guest_write(wf, 'write -P 0x71 1M 2M')
    try:
        run_example(wf, 'migrate', DEST_PORT=str(free_port()))
        # pivoted: disk0 is now the remote node, the source image idle
        (n,) = [n for n in wf.d.qmp.execute('query-named-block-nodes')
                if n['node-name'] == 'dest']
        assert n['drv'] == 'nbd'
        guest_write(wf, 'write -P 0x72 5M 1M')     # lands at the destination
        assert wf.d.qmp.execute('query-jobs') == []
    finally:
        with open(os.path.join(w, 'dest.pid')) as f:
            pid = int(f.read())
        os.kill(pid, 15)
        bjtest.wait_until(lambda: not os.path.exists('/proc/%d' % pid),
                          what='destination daemon gone')
    bjtest.qemu_io('-c', 'read -P 0x71 1M 2M', '-c', 'read -P 0x72 5M 1M',
                   os.path.join(w, 'dest.qcow2'))


def test_man_flatten(wf):
    w = wf.workdir
    base = os.path.join(w, 'base.qcow2')
    top = os.path.join(w, 'top.qcow2')
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', base, '8M')
    bjtest.qemu_io('-c', 'write -P 0x71 0 4M', base)
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2',
                    top)
    bjtest.qemu_io('-c', 'write -P 0x72 2M 4M', top)
    bjtest.qemu_img('convert', '-O', 'qcow2', top,
                    os.path.join(w, 'ref.qcow2'))
    p = run_example(wf, 'flatten')
    assert 'backing file' not in p.stdout
    assert 'backing-filename' not in bjtest.qemu_img(
        'info', '--output=json', top).stdout
    os.unlink(base)
    bjtest.qemu_img('compare', os.path.join(w, 'ref.qcow2'), top)
