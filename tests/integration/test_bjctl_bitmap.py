"""bjctl's dirty bitmap commands and bitmap backups, against blockjobd and
qemu-storage-daemon 7.2.

Like test_bjctl.py, every daemon test runs twice: against the daemon under
test (BLOCKJOBD_BIN) and against qemu-storage-daemon started directly.
Guest writes reach the node through an NBD export (qemu-io over
nbd+unix), so the daemon's bitmaps see them.
"""

import json
import os
import subprocess

import pytest

import bjctltest
import bjtest
from bjctltest import QSD, MiB, bjctl_path, check_peer, help_text
from test_bjctl import json_lines

KiB = 1024
SIZE = 32 * MiB


class Env(bjctltest.Env):
    """A daemon with node 'top' (a 32 MiB qcow2, half written), a 32 MiB
    null-co node 'n0', a writable NBD export of 'top', and bjctl."""

    def write(self, *cmds):
        """qemu-io commands against the export of 'top'."""
        args = ['-f', 'raw']
        for c in cmds:
            args += ['-c', c]
        bjtest.qemu_io(*args, 'nbd+unix:///top?socket=%s' % self.nbd_sock)

    def bitmap(self, name, node='top'):
        for n in self.d.qmp.execute('query-named-block-nodes'):
            if n['node-name'] == node:
                for b in n.get('dirty-bitmaps', []):
                    if b['name'] == name:
                        return b
        return None

    def add_target(self, name):
        return self.add_qcow2(name, os.path.join(self.workdir,
                                                 name + '.qcow2'), SIZE)


@pytest.fixture(params=['daemon', 'qsd'])
def env(request, tmp_path, binary):
    qsd = request.param == 'qsd'
    check_peer(request.param)
    top = str(tmp_path / 'top.qcow2')
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', top, str(SIZE))
    bjtest.qemu_io('-c', 'write -P 0x5a 0 16M', top)
    d = bjtest.Daemon(tmp_path, [
        '--blockdev', 'driver=qcow2,node-name=top,file.driver=file,'
        'file.filename=%s' % top,
        '--blockdev', 'driver=null-co,node-name=n0,size=%d' % SIZE],
        binary=QSD if qsd else binary)
    d.start()
    e = Env(d, tmp_path, qsd or bjtest.is_qsd())
    e.top = top
    e.nbd_sock = d.socket_path('nbd.sock')
    d.qmp.execute('nbd-server-start', addr={
        'type': 'unix', 'data': {'path': e.nbd_sock}})
    d.qmp.execute('block-export-add', type='nbd', id='e0', node_name='top',
                  writable=True)
    yield e
    d.cleanup()


def test_help_lists_bitmap_commands():
    out = help_text()
    for word in ('bitmap list', 'bitmap add NODE NAME', '--granularity',
                 '--persistent', '--disabled', 'bitmap merge',
                 'SRCNODE:NAME', '--bitmap-mode'):
        assert word in out, word


def test_bitmap_usage_errors(tmp_path):
    sock = str(tmp_path / 'x.sock')      # never reached: exit 2 first
    for args, text in (
            (['bitmap'], 'bitmap needs a subcommand'),
            (['bitmap', 'frob', 'n', 'b'], "unknown bitmap subcommand 'frob'"),
            (['bitmap', 'add', 'n'], 'bitmap add: wrong number of arguments'),
            (['bitmap', 'remove', 'n', 'b', 'c'],
             'bitmap remove: wrong number of arguments'),
            (['bitmap', 'merge', 'n', 'b'],
             'bitmap merge: wrong number of arguments'),
            (['bitmap', 'list', 'a', 'b'], 'at most one argument'),
            (['bitmap', 'clear', 'n', 'b', '--persistent'],
             "apply to 'bitmap add' only"),
            (['bitmap', 'add', 'n', 'b', '--granularity', 'big'],
             "invalid granularity 'big'"),
            (['mirror', 'n', '--to', 't', '--bitmap', 'b'],
             'apply to backup only'),
            (['pull', 'n', '--bitmap-mode', 'never'],
             'apply to backup only')):
        p = subprocess.run([bjctl_path(), '--socket', sock] + args,
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith('bjctl: ') and text in p.stderr, p.stderr
        assert p.stdout == ''


def test_add_list_remove(env):
    p = env.run('bitmap', 'list', expect=0)
    assert p.stdout == 'no bitmaps\n'
    p = env.run('bitmap', 'add', 'top', 'b1', '--granularity', '128K',
                '--persistent', '--disabled', expect=0)
    assert p.stdout == "bitmap 'b1' on node 'top': added\n"
    p = env.run('--json', 'bitmap', 'add', 'n0', 'x', expect=0)
    assert json.loads(p.stdout) == {'node': 'n0', 'name': 'x',
                                    'result': 'added'}
    assert env.bitmap('b1') == {
        'name': 'b1', 'recording': False, 'persistent': True, 'busy': False,
        'granularity': 128 * KiB, 'count': 0}

    rows = json_lines(env.run('--json', 'bitmap', 'list', expect=0).stdout)
    assert sorted((r['node'], r['name'], r['granularity'], r['recording'],
                   r['persistent']) for r in rows) == [
        ('n0', 'x', 64 * KiB, True, False),
        ('top', 'b1', 128 * KiB, False, True)]
    rows = json_lines(env.run('--json', 'bitmap', 'list', 'n0',
                              expect=0).stdout)
    assert [(r['node'], r['name']) for r in rows] == [('n0', 'x')]

    lines = env.run('bitmap', 'list', expect=0).stdout.splitlines()
    assert lines[0].split() == ['NODE', 'NAME', 'GRANULARITY', 'DIRTY',
                                'STATUS']
    table = {tuple(line.split()[:2]): line.split() for line in lines[1:]}
    assert set(table) == {('top', 'b1'), ('n0', 'x')}
    assert table[('top', 'b1')][2:] == ['128.0', 'KiB', '0', 'B',
                                        'disabled,persistent']
    assert table[('n0', 'x')][2:] == ['64.0', 'KiB', '0', 'B', 'recording']

    p = env.run('bitmap', 'remove', 'top', 'b1', expect=0)
    assert p.stdout == "bitmap 'b1' on node 'top': removed\n"
    assert env.bitmap('b1') is None
    assert env.run('bitmap', 'list', 'top', expect=0).stdout == 'no bitmaps\n'


def test_daemon_errors(env):
    env.run('bitmap', 'add', 'top', 'b', expect=0)
    # the daemon's own words, exit status 1, nothing on stdout
    for args, text in (
            (['add', 'top', 'b'], 'Bitmap already exists: b'),
            (['add', 'nope', 'b'],
             "Cannot find device='nope' nor node-name='nope'"),
            (['add', 'top', 'c', '--granularity', '1000'],
             'Granularity must be power of 2 and at least 512'),
            (['remove', 'top', 'zz'], "Dirty bitmap 'zz' not found"),
            (['merge', 'top', 'b', 'zz'], "Dirty bitmap 'zz' not found")):
        p = env.run('bitmap', *args, expect=1)
        assert p.stderr == 'bjctl: %s\n' % text
        assert p.stdout == ''
    p = env.run('bitmap', 'list', 'nope', expect=1)
    assert p.stderr == "bjctl: no node 'nope'\n"


def test_counts_merge_clear_enable_disable(env):
    env.run('bitmap', 'add', 'top', 'b1', expect=0)
    env.write('write -P 1 0 1M', 'write -P 2 20M 64K')
    assert env.bitmap('b1')['count'] == MiB + 64 * KiB
    row = json_lines(env.run('--json', 'bitmap', 'list', 'top',
                             expect=0).stdout)[0]
    assert row['count'] == MiB + 64 * KiB and row['recording'] is True
    assert '1.1 MiB' in env.run('bitmap', 'list', 'top', expect=0).stdout

    # merge into a disabled bitmap, from this node and from another one
    env.run('bitmap', 'add', 'top', 'b2', '--disabled', expect=0)
    env.run('bitmap', 'add', 'n0', 'x', expect=0)
    p = env.run('bitmap', 'merge', 'top', 'b2', 'b1', 'n0:x', expect=0)
    assert p.stdout == "bitmap 'b2' on node 'top': merged\n"
    assert env.bitmap('b2')['count'] == MiB + 64 * KiB
    s1 = env.run('bitmap', 'sha256', 'top', 'b1', expect=0).stdout.strip()
    s2 = json.loads(env.run('--json', 'bitmap', 'sha256', 'top', 'b2',
                            expect=0).stdout)
    assert s2 == {'node': 'top', 'name': 'b2', 'sha256': s1}
    assert s1 == env.d.qmp.execute('x-debug-block-dirty-bitmap-sha256',
                                   node='top', name='b1')['sha256']

    # disabled: writes leave it alone; enabled again: they count
    env.run('bitmap', 'clear', 'top', 'b1', expect=0)
    assert env.bitmap('b1')['count'] == 0
    p = env.run('--json', 'bitmap', 'disable', 'top', 'b1', expect=0)
    assert json.loads(p.stdout)['result'] == 'disabled'
    env.write('write -P 3 4M 128K')
    assert env.bitmap('b1') == dict(env.bitmap('b1'), count=0,
                                    recording=False)
    env.run('bitmap', 'enable', 'top', 'b1', expect=0)
    env.write('write -P 4 8M 64K')
    assert env.bitmap('b1')['count'] == 64 * KiB
    assert env.bitmap('b1')['recording'] is True


def allocated(path):
    """(offset, length) of the data ranges in path itself."""
    out = bjtest.run('qemu-img', 'map', '--output=json', '-f', 'qcow2',
                     path).stdout
    if isinstance(out, bytes):
        out = out.decode()
    return [(e['start'], e['length']) for e in json.loads(out)
            if e['data'] and e['depth'] == 0]


def test_incremental_backup_chain(env):
    """bitmap add + full backup, NBD writes, then bjctl backup --bitmap:
    the target holds just the written clusters and the chain equals the
    source; --bitmap-mode never keeps the bits for the next one."""
    q = env.d.qmp
    full = env.add_target('full')
    env.run('bitmap', 'add', 'top', 'bm0', expect=0)
    env.run('backup', 'top', '--to', 'full', '--job-id', 'jf', '--wait',
            expect=0)
    env.write('write -P 0x11 1M 64K', 'write -P 0x12 9M 128K',
              'write -P 0x13 30M 64K')
    assert env.bitmap('bm0')['count'] == 256 * KiB

    inc1 = env.add_target('inc1')
    p = env.run('--json', 'backup', 'top', '--to', 'inc1', '--bitmap', 'bm0',
                '--wait')
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {'id': 'backup-top', 'result': 'completed'}
    assert env.bitmap('bm0')['count'] == 0          # on-success
    q.execute('blockdev-del', node_name='inc1')
    assert allocated(inc1) == [(MiB, 64 * KiB), (9 * MiB, 128 * KiB),
                               (30 * MiB, 64 * KiB)]

    # never: the bitmap keeps what the backup copied
    env.write('write -P 0x21 2M 64K')
    inc2 = env.add_target('inc2')
    p = env.run('backup', 'top', '--to', 'inc2', '--sync', 'bitmap',
                '--bitmap', 'bm0', '--bitmap-mode', 'never', '--job-id',
                'j2', '--wait', expect=0)
    assert p.stdout == "job 'j2' completed\n"
    assert env.bitmap('bm0')['count'] == 64 * KiB
    assert env.bitmap('bm0')['busy'] is False
    q.execute('blockdev-del', node_name='inc2')
    assert allocated(inc2) == [(2 * MiB, 64 * KiB)]

    # a refused mode is the daemon's message
    env.add_target('inc3')
    p = env.run('backup', 'top', '--to', 'inc3', '--sync', 'incremental',
                '--bitmap', 'bm0', '--bitmap-mode', 'never', expect=1)
    assert p.stderr == ("bjctl: Bitmap sync mode must be 'on-success' when "
                        "using sync mode 'incremental'\n")

    env.d.stop()
    bjtest.qemu_img('rebase', '-q', '-u', '-f', 'qcow2', '-F', 'qcow2',
                    '-b', full, inc1)
    bjtest.qemu_img('rebase', '-q', '-u', '-f', 'qcow2', '-F', 'qcow2',
                    '-b', inc1, inc2)
    bjtest.qemu_img('compare', '-f', 'qcow2', '-F', 'qcow2', env.top, inc2)


def test_list_shows_busy_during_backup(env):
    """A throttled incremental holds its bitmap: list says busy, and the
    bitmap cannot be removed until the job is gone."""
    env.run('bitmap', 'add', 'top', 'bm0', expect=0)
    env.write('write -P 0x31 0 8M')
    env.add_target('slow')
    p = env.run('backup', 'top', '--to', 'slow', '--bitmap', 'bm0',
                '--speed', '64K', '--job-id', 'js', expect=None)
    assert p.returncode == 0, p.stderr
    row = json_lines(env.run('--json', 'bitmap', 'list', 'top',
                             expect=0).stdout)[0]
    assert row['busy'] is True and row['recording'] is True
    line = env.run('bitmap', 'list', 'top', expect=0).stdout.splitlines()[1]
    assert line.split()[-1] == 'recording,busy'
    p = env.run('bitmap', 'remove', 'top', 'bm0', expect=1)
    assert p.stderr == ("bjctl: Bitmap 'bm0' is currently in use by another "
                        "operation and cannot be used\n")
    env.run('abort', 'js', expect=0)
    # cancelled: nothing lost from the bitmap, and it is free again
    assert env.bitmap('bm0')['count'] == 8 * MiB
    assert env.bitmap('bm0')['busy'] is False


def test_list_shows_inconsistent_after_kill(env, tmp_path):
    """A persistent bitmap of an image that qemu-storage-daemon had open
    read-write when it was killed reads inconsistent (in blockjobd too:
    its crash rule covers only images it had open itself), and only
    remove is accepted."""
    if QSD is None:
        pytest.skip('qemu-storage-daemon not installed')
    env.d.stop()
    bjtest.qemu_img('bitmap', '--add', env.top, 'p0')
    k = bjtest.Daemon(tmp_path, [
        '--blockdev', 'driver=qcow2,node-name=top,file.driver=file,'
        'file.filename=%s' % env.top], binary=QSD)
    k.start()
    try:
        assert k.qmp.execute('query-named-block-nodes')[0]['dirty-bitmaps']
        k.proc.kill()
        k.proc.wait(30)
        k._checked = True
    finally:
        k.cleanup()
    d = bjtest.Daemon(tmp_path, [
        '--blockdev', 'driver=qcow2,node-name=top,file.driver=file,'
        'file.filename=%s' % env.top], binary=env.d.binary)
    d.start()
    try:
        env.d = d
        line = env.run('bitmap', 'list', expect=0).stdout.splitlines()[1]
        assert line.split()[0:2] == ['top', 'p0']
        assert line.split()[-1] == 'disabled,persistent,inconsistent'
        p = env.run('bitmap', 'clear', 'top', 'p0', expect=1)
        assert p.stderr == ("bjctl: Bitmap 'p0' is inconsistent and cannot "
                            "be used\n")
        env.run('bitmap', 'remove', 'top', 'p0', expect=0)
        assert env.run('bitmap', 'list', expect=0).stdout == 'no bitmaps\n'
    finally:
        d.cleanup()
