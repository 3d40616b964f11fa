"""Jobs on read-only nodes: block-commit into a base opened read-only (as
backing images opened from a header are) and block-stream into a read-only
top.  The node is reopened read-write for the job and read-only again after
it, whatever the outcome; a refused reopen (another process holds the image
in a way that forbids writing) fails the command and changes nothing.
Verified against qemu-storage-daemon 7.2.

Chain (64 MiB), opened from the headers below top:
    base:  1 @ 0-4M
    mid:   2 @ 2-40M, zeroes @ 44-45M     (more than the reference copies
                                          before its first rate-limit sleep)
    top:   3 @ 6-7M
"""

import os
import subprocess

import pytest

import golden
from bjtest import QMPError, is_qsd, qemu_img, qemu_io, wait_until
from chain import Chain
from copyjob import finish, in_mode

MiB = 1 << 20


@pytest.fixture
def chain(workdir):
    return Chain(workdir, base=['write -P 1 0 4M'],
                 mid=['write -P 2 2M 38M', 'write -z 44M 1M'],
                 top=['write -P 3 6M 1M'])


def nodes_of(qmp, path):
    """{driver: (node-name, ro)} of the nodes showing file `path`."""
    return {n['drv']: (n['node-name'], n['ro'])
            for n in qmp.execute('query-named-block-nodes')
            if n['file'] == path}


def node_name(qmp, path):
    return nodes_of(qmp, path)['qcow2'][0]


def assert_read_only(qmp, path):
    found = nodes_of(qmp, path)
    assert found['qcow2'][1] is True and found['file'][1] is True, found


def assert_fds_read_only(daemon, path):
    """Every descriptor the daemon has on path was opened read-only."""
    fd_dir = '/proc/%d/fd' % daemon.pid
    seen = 0
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != path:
                continue
            with open('/proc/%d/fdinfo/%s' % (daemon.pid, fd)) as f:
                flags = int(f.read().split('flags:')[1].split()[0], 8)
        except (FileNotFoundError, IndexError):
            continue
        seen += 1
        assert flags & os.O_ACCMODE == os.O_RDONLY, (fd, oct(flags))
    assert seen


class Holder:
    """qemu-io holding an image read-only: it forbids writers (image
    locks), so a reopen read-write of the image must be refused."""

    def __init__(self, path):
        self.path = path
        self.proc = subprocess.Popen(
            ['qemu-io', '-r', '-f', 'qcow2', '-c', 'sleep 60000', path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

        # Looks at /proc/locks rather than trying an open: a trial writer
        # could take its locks first and make qemu-io give up.
        ino = os.stat(path).st_ino

        def locked():
            assert self.proc.poll() is None, 'qemu-io exited'
            with open('/proc/locks') as f:
                return any(line.split()[5].endswith(':%d' % ino)
                           for line in f if 'OFDLCK' in line)
        wait_until(locked, timeout=30, what='qemu-io holding %s' % path)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def run_job(qmp, rec, cmd, args, mode):
    qmp.execute(cmd, in_mode(mode, args))
    finish(qmp, rec, mode)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_commit_into_read_only_base(daemon_factory, chain, mode):
    d = daemon_factory(*chain.blockdev())
    qmp = d.qmp
    assert_read_only(qmp, chain.base)
    rec = golden.Recorder(qmp, 'commit0')
    run_job(qmp, rec, 'block-commit',
            {'job-id': 'commit0', 'device': 'top',
             'top-node': node_name(qmp, chain.mid),
             'base-node': node_name(qmp, chain.base)}, mode)
    golden.assert_matches('commit-intermediate.%s' % mode, rec.events,
                          raw=True)
    assert_read_only(qmp, chain.base)
    assert_fds_read_only(d, chain.base)
    assert nodes_of(qmp, chain.mid) == {}
    d.stop()
    assert chain.chain() == ['top.qcow2', 'base.qcow2']
    chain.check()


@pytest.mark.timeout(120)
@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_stream_into_read_only_top(daemon_factory, chain, mode):
    d = daemon_factory(*chain.blockdev('read-only=on,'))
    qmp = d.qmp
    assert_read_only(qmp, chain.top)
    rec = golden.Recorder(qmp, 'stream0')
    run_job(qmp, rec, 'block-stream', {'job-id': 'stream0', 'device': 'top'},
            mode)
    golden.assert_matches('stream.%s' % mode, rec.events, raw=True)
    assert_read_only(qmp, chain.top)
    assert_fds_read_only(d, chain.top)
    # the top's lock is a reader's again: qemu-io may read it alongside
    qemu_io('-r', '-c', 'read -P 1 0 1M', chain.top)
    d.stop()
    assert chain.chain() == ['top.qcow2']
    chain.check()


@pytest.mark.timeout(120)
def test_commit_cancelled_base_read_only_again(daemon_factory, chain):
    d = daemon_factory(*chain.blockdev())
    qmp = d.qmp
    qmp.execute('block-commit', job_id='commit0', device='top',
                top_node=node_name(qmp, chain.mid),
                base_node=node_name(qmp, chain.base), speed=64 * 1024)
    base = nodes_of(qmp, chain.base)
    assert base['qcow2'][1] is False and base['file'][1] is False
    qmp.execute('block-job-cancel', device='commit0')
    qmp.wait_event('BLOCK_JOB_CANCELLED', timeout=60)
    assert_read_only(qmp, chain.base)
    assert_fds_read_only(d, chain.base)
    d.stop()
    assert chain.chain() == ['top.qcow2', 'mid.qcow2', 'base.qcow2']
    chain.check()


@pytest.mark.timeout(120)
def test_commit_reopen_refused(daemon_factory, chain):
    holder = Holder(chain.base)
    try:
        d = daemon_factory(*chain.blockdev())
        qmp = d.qmp
        rec = golden.Recorder(qmp, 'commit0')
        with pytest.raises(QMPError) as e:
            qmp.execute('block-commit', job_id='commit0', device='top',
                        top_node=node_name(qmp, chain.mid),
                        base_node=node_name(qmp, chain.base))
        assert e.value.desc == 'Failed to get "write" lock'
        # the job existed briefly, as in the reference
        rec.wait_status('null')
        assert rec.statuses() == ['created', 'null']
        assert qmp.execute('query-block-jobs') == []
        assert_read_only(qmp, chain.base)
        assert_read_only(qmp, chain.mid)
    finally:
        holder.stop()
    # nothing was left behind: the same commit now works
    rec = golden.Recorder(qmp, 'commit0')
    run_job(qmp, rec, 'block-commit',
            {'job-id': 'commit0', 'device': 'top',
             'top-node': node_name(qmp, chain.mid),
             'base-node': node_name(qmp, chain.base)}, 'auto')
    assert_read_only(qmp, chain.base)
    d.stop()
    chain.check()


@pytest.mark.timeout(120)
def test_stream_reopen_refused(daemon_factory, chain):
    holder = Holder(chain.top)
    try:
        d = daemon_factory(*chain.blockdev('read-only=on,'))
        qmp = d.qmp
        with pytest.raises(QMPError) as e:
            qmp.execute('block-stream', job_id='stream0', device='top')
        assert e.value.desc == 'Failed to get "write" lock'
        assert qmp.get_events() == []
        assert qmp.execute('query-block-jobs') == []
        assert_read_only(qmp, chain.top)
    finally:
        holder.stop()
    d.stop()
    assert chain.chain() == ['top.qcow2', 'mid.qcow2', 'base.qcow2']
    chain.check()


@pytest.mark.timeout(60)
def test_stream_read_only_named_file_refused(daemon_factory, chain):
    """A file node the user named keeps its state: the format node above
    cannot write it, so the reopen is refused."""
    d = daemon_factory('--blockdev', 'driver=file,node-name=f,read-only=on,'
                       'filename=%s' % chain.top,
                       '--blockdev', 'driver=qcow2,node-name=top,'
                       'read-only=on,file=f')
    qmp = d.qmp
    with pytest.raises(QMPError) as e:
        qmp.execute('block-stream', job_id='stream0', device='top')
    assert e.value.desc == 'Block node is read-only'
    assert qmp.execute('query-block-jobs') == []
    assert_read_only(qmp, chain.top)
    d.stop()
    assert chain.chain() == ['top.qcow2', 'mid.qcow2', 'base.qcow2']


@pytest.mark.timeout(120)
def test_commit_below_read_only_overlay(daemon_factory, chain):
    """top -> a -> mid -> base, commit mid into base: the overlay a is a
    read-only backing image too; it is made writable only for its header
    (read-only while the job copies) and read-only again after."""
    a = os.path.join(chain.dir, 'a.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2',
             a)
    qemu_io('-c', 'write -P 5 12M 1M', a)
    qemu_img('rebase', '-u', '-b', 'a.qcow2', '-F', 'qcow2', chain.top)
    qemu_img('convert', '-O', 'raw', chain.top, chain.ref)
    d = daemon_factory(*chain.blockdev())
    qmp = d.qmp
    rec = golden.Recorder(qmp, 'commit0')
    qmp.execute('block-commit', job_id='commit0', device='top',
                top_node=node_name(qmp, chain.mid),
                base_node=node_name(qmp, chain.base), speed=MiB)
    assert_read_only(qmp, a)
    qmp.execute('block-job-set-speed', device='commit0', speed=0)
    rec.wait_status('null')
    done = [e for e in rec.events if e['event'] == 'BLOCK_JOB_COMPLETED']
    assert len(done) == 1 and 'error' not in done[0]['data'], done
    assert_read_only(qmp, a)
    assert_read_only(qmp, chain.base)
    assert_fds_read_only(d, a)
    info = [n for n in qmp.execute('query-named-block-nodes')
            if n['file'] == a and n['drv'] == 'qcow2'][0]
    assert info['image']['backing-filename'] == chain.base
    d.stop()
    assert chain.chain() == ['top.qcow2', 'a.qcow2', 'base.qcow2']
    for img in (chain.top, a, chain.base):
        qemu_img('check', '-q', img)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', chain.ref,
             chain.top)
