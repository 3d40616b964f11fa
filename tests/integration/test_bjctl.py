"""bjctl, the management client, against blockjobd and qemu-storage-daemon.

Every test runs twice: against the daemon under test (BLOCKJOBD_BIN) and
against qemu-storage-daemon 7.2 started directly, so bjctl is checked
against the reference whatever BLOCKJOBD_BIN says.  qemu-storage-daemon
serves one client per monitor socket, so bjctl gets spare monitors there
(ctl_socket(n)); blockjobd serves everyone on its one socket.
"""

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

import bjctltest
import bjtest
from bjctltest import QSD, MiB, bjctl_path, check_peer, help_text


def json_lines(text):
    """bjctl --json output: one object a line, each parsed."""
    return [json.loads(line) for line in text.splitlines()]


class Env(bjctltest.Env):
    """A daemon with a qcow2 chain (base <- top) and bjctl around it."""

    def popen(self, *args, n=2, **kw):
        cmd = [bjctl_path(), '--socket', self.sock(n)] + [str(a) for a in args]
        kw.setdefault('stdout', subprocess.PIPE)
        kw.setdefault('stderr', subprocess.PIPE)
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, text=True,
                                env=bjtest.sanitizer_env(), **kw)

    def jobs(self):
        return self.d.qmp.execute('query-jobs')

    def job(self, jid):
        for j in self.jobs():
            if j['id'] == jid:
                return j
        return None

    def wait_status(self, jid, status, timeout=30):
        bjtest.wait_until(lambda: (self.job(jid) or {}).get('status')
                          == status, timeout=timeout,
                          what='job %s %s' % (jid, status))

    def start_stream(self, jid, speed=0, **extra):
        args = {'job-id': jid, 'device': 'top', 'speed': speed}
        args.update({k.replace('_', '-'): v for k, v in extra.items()})
        self.d.qmp.execute('block-stream', args)


def make_chain(workdir, size=32 * MiB, data=16 * MiB):
    base = os.path.join(str(workdir), 'base.qcow2')
    top = os.path.join(str(workdir), 'top.qcow2')
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', base, str(size))
    bjtest.qemu_io('-c', 'write -P 0x5a 0 %d' % data, base)
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2',
                    top)
    bjtest.qemu_io('-c', 'write -P 0x33 %d 1M' % MiB, top)
    return base, top


def chain_args(top, extra_nodes=()):
    args = ['--blockdev', 'driver=qcow2,node-name=top,file.driver=file,'
            'file.filename=%s' % top]
    for a in extra_nodes:
        args += ['--blockdev', a]
    return args


@pytest.fixture(params=['daemon', 'qsd'])
def kind(request):
    check_peer(request.param)
    return request.param


@pytest.fixture
def start_env(kind, tmp_path, binary):
    """start_env(extra_nodes=(), **chain options) -> Env."""
    daemons = []

    def start(extra_nodes=(), **kw):
        base, top = make_chain(tmp_path, **kw)
        qsd = kind == 'qsd'
        d = bjtest.Daemon(tmp_path, chain_args(top, extra_nodes),
                          binary=QSD if qsd else binary)
        daemons.append(d)
        d.start()
        e = Env(d, tmp_path, qsd or bjtest.is_qsd())
        e.base, e.top = base, top
        return e

    yield start
    for d in daemons:
        d.cleanup()


@pytest.fixture
def env(start_env):
    return start_env()


def skip_unless_command(e, name):
    cmds = [c['name'] for c in e.d.qmp.execute('query-commands')]
    if name not in cmds:
        pytest.skip('%s is not implemented by this daemon' % name)


# -- no daemon, usage --------------------------------------------------------

def test_help_documents_exit_statuses():
    out = help_text()
    for word in ('Exit status', 'abort JOB', '--timeout', '--async',
                 '--pivot', 'BJCTL_SOCKET'):
        assert word in out
    for code in range(8):
        assert re.search(r'^  %d  ' % code, out, re.M), code


def test_no_daemon_one_line(tmp_path):
    missing = str(tmp_path / 'none.sock')
    start = time.monotonic()
    p = subprocess.run([bjctl_path(), '--socket', missing, 'list'],
                       capture_output=True, text=True, timeout=30)
    assert time.monotonic() - start < 10
    assert p.returncode == 3
    assert p.stdout == ''
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1
    assert 'cannot connect to %s' % missing in lines[0]


def test_silent_socket_times_out(tmp_path):
    """A listener that never greets: a bounded wait, then one clear line."""
    import socket
    path = str(tmp_path / 'mute.sock')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)
    try:
        p = subprocess.run([bjctl_path(), '--socket', path,
                            '--connect-timeout', '1', 'list'],
                           capture_output=True, text=True, timeout=30)
    finally:
        s.close()
    assert p.returncode == 3
    assert 'no QMP greeting' in p.stderr


def test_usage_errors(tmp_path):
    sock = str(tmp_path / 'x.sock')
    env = dict(os.environ)
    env.pop('BJCTL_SOCKET', None)
    for args, text in ((['list'], 'no socket'),
                       (['--socket', sock, 'frobnicate'], 'unknown command'),
                       (['--socket', sock, 'pull', 'n', '--speed', '5X'],
                        "invalid speed '5X'"),
                       (['--socket', sock, 'abort', 'j', '--timeout', 'x'],
                        'invalid timeout')):
        p = subprocess.run([bjctl_path()] + args, capture_output=True,
                           text=True, timeout=30, env=env)
        assert p.returncode == 2, args
        assert text in p.stderr


# -- queries -----------------------------------------------------------------

def test_env_socket_and_nodes(env):
    p = subprocess.run([bjctl_path(), 'nodes'], capture_output=True,
                       text=True, timeout=30,
                       env=dict(os.environ, BJCTL_SOCKET=env.sock()))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split()[:2] == ['NODE', 'DRIVER']
    top = [ln for ln in lines if ln.startswith('top ')]
    assert top and 'qcow2' in top[0] and env.top in top[0]
    assert '32.0 MiB' in top[0]
    assert any('backing: %s (qcow2)' % env.base in ln for ln in lines)
    assert not any(ln.startswith('#') for ln in lines)
    p = env.run('nodes', '--all', expect=0)
    assert any(ln.startswith('#') for ln in p.stdout.splitlines())
    p = env.run('--json', 'nodes', expect=0)
    names = [n['node-name'] for n in json_lines(p.stdout)]
    assert 'top' in names


def test_list_info_control(env):
    p = env.run('list', expect=0)
    assert p.stdout.strip() == 'no jobs'
    assert env.run('--json', 'list', expect=0).stdout == ''

    p = env.run('pull', 'top', '--speed', '64K', expect=0)
    assert "job 'stream-top' started" in p.stdout
    # a generated id is unique
    p = env.run('--json', 'pull', 'top', '--speed', '64K', expect=1)
    assert p.stderr.startswith('bjctl: ')      # the daemon's message
    p = env.run('list', expect=0)
    hdr, row = p.stdout.splitlines()[:2]
    assert hdr.split() == ['ID', 'TYPE', 'STATUS', 'PROGRESS', 'SPEED',
                           'READY', 'ERROR']
    assert row.split()[:2] == ['stream-top', 'stream']
    assert '64.0 KiB/s' in row
    jobs = json_lines(env.run('--json', 'list', expect=0).stdout)
    assert jobs[0]['id'] == 'stream-top' and jobs[0]['speed'] == 65536
    assert jobs[0]['ready'] is False

    env.run('speed', 'stream-top', '1M', expect=0)
    info = json.loads(env.run('--json', 'info', 'stream-top',
                              expect=0).stdout)
    assert info['speed'] == MiB and info['type'] == 'stream'

    env.run('pause', 'stream-top', expect=0)
    env.wait_status('stream-top', 'paused')
    p = env.run('info', 'stream-top', expect=0)
    assert 'status:    paused' in p.stdout
    assert 'speed:     1.0 MiB/s' in p.stdout
    p = env.run('pause', 'stream-top', expect=1)
    assert p.stderr.strip() == 'bjctl: Job is already paused'
    env.run('resume', 'stream-top', expect=0)
    env.wait_status('stream-top', 'running')
    p = env.run('complete', 'stream-top', expect=1)
    assert ("Job 'stream-top' in state 'running' cannot accept command "
            "verb 'complete'") in p.stderr
    p = env.run('info', 'nope', expect=1)
    assert "no job 'nope'" in p.stderr
    p = env.run('abort', 'stream-top', expect=0)
    assert "job 'stream-top' cancelled" in p.stdout
    assert env.jobs() == []


def test_speed_units(env):
    env.start_stream('u1', speed=64 * 1024)
    env.run('pause', 'u1', expect=0)       # high speeds must not end it
    for text, value in (('512K', 512 * 1024), ('50M', 50 * MiB),
                        ('1G', 1024 * MiB), ('1.5M', 3 * MiB // 2),
                        ('2MiB', 2 * MiB), ('4kb', 4096), ('100B', 100),
                        ('0', 0)):
        env.run('speed', 'u1', text, expect=0)
        assert json.loads(env.run('--json', 'info', 'u1',
                                  expect=0).stdout)['speed'] == value, text
    for bad in ('5X', '-1', '', 'M', '1.5.5', '99999999T', '100'):
        p = env.run('speed', 'u1', bad, expect=2)
        if not bad.startswith('-'):      # '-1' is an unknown option
            assert 'usage: bjctl speed JOB SPEED' in p.stderr
    env.run('abort', 'u1', expect=0)


def test_man_page_matches_help():
    man = os.path.join(bjtest.REPO, 'docs', 'bjctl.1')
    with open(man) as f:
        text = f.read()
    global_help = help_text()
    section = text.split('.SH EXIT STATUS')[1].split('.SH ')[0]
    assert re.findall(r'^\.B (\d)$', section, re.M) == \
        [str(i) for i in range(8)]
    for opt in re.findall(r'--[a-z][a-z-]+', global_help):
        assert opt.replace('-', '\\-') in text, opt


def test_pull_wait_plain_progress(env):
    p = env.run('pull', 'top', '--job-id', 'p1', '--wait', '--verbose',
                '--speed', '8M', expect=0)
    assert "job 'p1' completed" in p.stdout
    # not a terminal: plain lines, no carriage returns or escapes
    assert '\r' not in p.stderr and '\033' not in p.stderr
    assert re.search(r'^p1: \S+ \d+\.\d% \(.* of 32\.0 MiB\), .*/s, ETA ',
                     p.stderr, re.M), p.stderr
    assert '100.0%' in p.stderr
    assert env.jobs() == []          # dismissed after the wait
    p = env.run('nodes', expect=0)
    assert 'backing:' not in p.stdout


def test_wait_json_result(env):
    p = env.run('--json', 'pull', 'top', '--wait', expect=0)
    assert json.loads(p.stdout) == {'id': 'stream-top', 'result': 'completed'}


def test_wait_sees_cancel_by_someone_else(env):
    w = env.popen('pull', 'top', '--job-id', 'c1', '--wait', '--speed', '64K',
                  n=1)
    bjtest.wait_until(lambda: env.job('c1') is not None, what='job c1')
    env.d.qmp.execute('job-cancel', id='c1')
    out, err = w.communicate(timeout=60)
    assert w.returncode == 6, err
    assert "job 'c1' was cancelled" in out
    # bjctl set auto-dismiss off to learn the end; it dismissed the job
    bjtest.wait_until(lambda: env.job('c1') is None, what='c1 dismissed')


def test_events(env):
    ev = env.popen('--json', 'events', '--timeout', '30', n=2)
    human = env.popen('events', '--timeout', '30', n=3)
    time.sleep(0.5)            # both connected and negotiated
    env.run('pull', 'top', '--job-id', 'e1', '--wait', expect=0)
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = ev.stdout.readline()
        if not line:
            break
        msg = json.loads(line)
        seen.append(msg)
        if msg['event'] == 'JOB_STATUS_CHANGE' and \
                msg['data'] == {'id': 'e1', 'status': 'null'}:
            break
    ev.terminate()
    ev.wait(30)
    names = [m['event'] for m in seen]
    assert 'BLOCK_JOB_COMPLETED' in names
    statuses = [m['data']['status'] for m in seen
                if m['event'] == 'JOB_STATUS_CHANGE']
    assert statuses[-3:] == ['pending', 'concluded', 'null']
    line = ''
    while 'status=null' not in line:
        line = human.stdout.readline()
        assert line, 'human event stream ended early'
        if 'BLOCK_JOB_COMPLETED' in line:
            assert re.match(r'^\d\d:\d\d:\d\d\.\d{6} BLOCK_JOB_COMPLETED '
                            r'.*device=e1', line), line
    human.terminate()
    human.wait(30)


def test_events_count(env):
    ev = env.popen('events', '--count', '2', n=2)
    time.sleep(0.5)
    env.start_stream('k1')
    out, err = ev.communicate(timeout=30)
    assert ev.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert ' JOB_STATUS_CHANGE ' in lines[0]
    assert ' id=k1' in lines[0] and ' status=created' in lines[0]


# -- abort -------------------------------------------------------------------

def test_abort_fast_job(env):
    """Unthrottled: the cancel may win or the job may complete first; the
    exit status and the message must agree, and the job must be gone.
    auto-dismiss is off so that the job still exists when bjctl looks for
    it: with it on, a job that finishes first may be dismissed before bjctl
    starts, and "no job" would be a third, timing-made outcome."""
    env.start_stream('f1', auto_dismiss=False)
    p = env.run('abort', 'f1')
    if p.returncode == 0:
        assert "job 'f1' cancelled" in p.stdout
    else:
        assert p.returncode == 4, p.stderr
        assert "job 'f1' completed before the cancel took effect" in p.stdout
    assert env.job('f1') is None


def test_abort_slow_job_one_terminal_event(env):
    env.start_stream('s1', speed=64 * 1024)
    env.wait_status('s1', 'running')
    p = env.run('abort', 's1', expect=0)
    assert p.stdout.strip() == "job 's1' cancelled"
    assert env.job('s1') is None
    env.d.qmp.wait_event('JOB_STATUS_CHANGE',
                         match={'data': {'id': 's1', 'status': 'null'}})
    term = [e for e in env.d.qmp.all_events
            if e['event'] in ('BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED')]
    assert [e['event'] for e in term] == ['BLOCK_JOB_CANCELLED']
    p = env.run('nodes', expect=0)
    assert 'backing: %s' % env.base in p.stdout      # cancelled: chain kept


def test_abort_already_finished(env):
    env.start_stream('d1', auto_dismiss=False)
    env.wait_status('d1', 'concluded')
    p = env.run('abort', 'd1', expect=4)
    assert "job 'd1' completed before the cancel took effect" in p.stdout
    assert env.job('d1') is None           # abort leaves no job behind
    p = env.run('abort', 'd1', expect=1)
    assert "no job 'd1'" in p.stderr


def test_abort_paused_job(env):
    env.start_stream('p1', speed=64 * 1024)
    env.d.qmp.execute('job-pause', id='p1')
    env.wait_status('p1', 'paused')
    p = env.run('--json', 'abort', 'p1', expect=0)
    assert json.loads(p.stdout) == {'id': 'p1', 'result': 'cancelled'}
    assert env.job('p1') is None


def test_abort_poll_only(env):
    """--poll: the fallback used when the event stream is lost."""
    env.start_stream('q1', speed=64 * 1024, auto_dismiss=False)
    p = env.run('abort', 'q1', '--poll', expect=0)
    assert "job 'q1' cancelled" in p.stdout
    assert env.job('q1') is None


def test_abort_async_and_events(env):
    ev = env.popen('--json', 'events', '--timeout', '30', n=2)
    time.sleep(0.5)
    env.start_stream('a1', speed=64 * 1024)
    env.wait_status('a1', 'running')
    p = env.run('abort', 'a1', '--async', expect=0)
    assert "job 'a1': cancel accepted" in p.stdout
    seen = []
    while True:
        line = ev.stdout.readline()
        assert line, 'event stream ended before a1 was gone'
        msg = json.loads(line)
        seen.append(msg)
        if msg['event'] == 'JOB_STATUS_CHANGE' and \
                msg['data'] == {'id': 'a1', 'status': 'null'}:
            break
    ev.terminate()
    ev.wait(30)
    term = [m['event'] for m in seen
            if m['event'] in ('BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED')]
    assert term == ['BLOCK_JOB_CANCELLED']
    assert env.run('--json', 'list', expect=0).stdout == ''


@pytest.fixture
def slow_backing(env, tmp_path):
    """A node 'stop' whose backing is a null-co node taking 2 s per read:
    a stream's cancel waits for the read in flight."""
    top = str(tmp_path / 'slowtop.qcow2')
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', top, str(32 * MiB))
    env.d.qmp.execute('blockdev-add', {
        'driver': 'null-co', 'node-name': 'slowbase', 'size': 32 * MiB,
        'latency-ns': 2 * 10 ** 9,
        # qemu-storage-daemon's stream reads a null-co backing only when it
        # reads zeroes, blockjobd's only when it does not: either way the
        # stream must read it to be slow
        'read-zeroes': env.qsd})
    env.d.qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': 'stop', 'backing': 'slowbase',
        'file': {'driver': 'file', 'filename': top}})
    return env


def check_timeout_then_cancelled(e, p, jid, start):
    assert p.returncode == 5, (p.stdout, p.stderr)
    assert time.monotonic() - start < 10
    assert ("bjctl: timed out after 0.5 s waiting for job '%s' to end; it "
            "was left to finish on its own" % jid) in p.stderr
    assert p.stdout == ''
    assert e.job(jid) is not None       # left alone, still there


def test_abort_timeout_slow_io(slow_backing):
    e = slow_backing
    e.d.qmp.execute('block-stream', {'job-id': 't1', 'device': 'stop'})
    time.sleep(0.3)            # a read of the slow backing is in flight
    start = time.monotonic()
    p = e.run('abort', 't1', '--timeout', '0.5')
    if p.returncode == 0:
        pytest.skip('the cancel took effect within 0.5 s here')
    check_timeout_then_cancelled(e, p, 't1', start)
    # it does end on its own, cancelled
    bjtest.wait_until(lambda: e.job('t1') is None, timeout=60, what='t1 gone')
    ev = [x['event'] for x in e.d.qmp.all_events
          if x['event'].startswith('BLOCK_JOB_')]
    assert ev == ['BLOCK_JOB_CANCELLED']


def test_daemon_dies_during_wait(env):
    w = env.popen('pull', 'top', '--job-id', 'x1', '--wait', '--verbose',
                  '--speed', '64K', n=1)
    bjtest.wait_until(lambda: env.job('x1') is not None, what='job x1')
    time.sleep(0.3)
    env.d.proc.kill()
    env.d.wait()
    env.d.check(expect_rc=-signal.SIGKILL)
    out, err = w.communicate(timeout=60)
    assert w.returncode == 3, err
    assert "connection to the daemon lost while waiting for job 'x1'" in err


def test_events_daemon_dies(env):
    ev = env.popen('events', n=2)
    time.sleep(0.5)
    env.d.proc.kill()
    env.d.wait()
    env.d.check(expect_rc=-signal.SIGKILL)
    out, err = ev.communicate(timeout=30)
    assert ev.returncode == 3
    assert err.strip() == 'bjctl: the daemon closed the connection'


def test_daemon_dies_during_abort(slow_backing):
    e = slow_backing
    e.d.qmp.execute('block-stream', {'job-id': 'y1', 'device': 'stop'})
    time.sleep(0.3)            # a 2 s read is in flight: the cancel waits
    w = e.popen('abort', 'y1', n=1)
    time.sleep(0.5)
    e.d.proc.kill()
    e.d.wait()
    e.d.check(expect_rc=-signal.SIGKILL)
    out, err = w.communicate(timeout=60)
    if w.returncode == 0:
        pytest.skip('the cancel took effect before the daemon died')
    assert w.returncode == 3, (out, err)
    assert "connection to the daemon lost while waiting for job 'y1'" in err


# -- pivot -------------------------------------------------------------------

def test_pivot_refused_when_not_ready(env):
    env.start_stream('n1', speed=64 * 1024)
    p = env.run('abort', 'n1', '--pivot', expect=1)
    assert "nothing changed" in p.stderr
    j = env.job('n1')
    assert j is not None and j['status'] in ('running', 'created')
    env.run('abort', 'n1', expect=0)


def test_mirror_wait_pivot(env, tmp_path):
    skip_unless_command(env, 'blockdev-mirror')
    tgt = env.add_qcow2('mt', str(tmp_path / 'mtarget.qcow2'))
    # not READY yet (throttled): --pivot refuses and changes nothing
    env.run('mirror', 'top', '--to', 'mt', '--job-id', 'm1', '--speed', '64K',
            expect=0)
    p = env.run('abort', 'm1', '--pivot', expect=1)
    assert "job 'm1' is not ready" in p.stderr and 'nothing changed' in p.stderr
    env.run('speed', 'm1', '0', expect=0)
    p = env.run('mirror', 'top', '--to', 'mt', expect=1)   # target busy
    env.wait_status('m1', 'ready', timeout=60)
    p = env.run('list', expect=0)
    assert re.search(r'^m1\s+mirror\s+ready\s+100\.0%\s+unlimited\s+yes',
                     p.stdout, re.M), p.stdout
    p = env.run('abort', 'm1', '--pivot', expect=0)
    assert "job 'm1' completed: pivoted to the target" in p.stdout
    assert env.job('m1') is None
    env.d.stop()
    bjtest.qemu_img('compare', '-f', 'qcow2', '-F', 'qcow2', env.top, tgt)


def test_mirror_pivot_in_one_go(env, tmp_path):
    skip_unless_command(env, 'blockdev-mirror')
    env.add_qcow2('mt2', str(tmp_path / 'm2.qcow2'))
    p = env.run('mirror', 'top', '--to', 'mt2', '--pivot', '--verbose',
                expect=0)
    assert "job 'mirror-top' completed: pivoted to the target" in p.stdout
    assert env.jobs() == []


def test_mirror_manual_finalize_abort_pivot(env, tmp_path):
    """auto-finalize off: abort --pivot completes and finalizes it."""
    skip_unless_command(env, 'blockdev-mirror')
    env.add_qcow2('mf', str(tmp_path / 'mf.qcow2'))
    env.d.qmp.execute('blockdev-mirror', {
        'job-id': 'mf1', 'device': 'top', 'target': 'mf', 'sync': 'full',
        'auto-finalize': False})
    env.wait_status('mf1', 'ready', timeout=60)
    p = env.run('abort', 'mf1', '--pivot', expect=0)
    assert "job 'mf1' completed: pivoted to the target" in p.stdout
    assert env.job('mf1') is None
    assert any(e['event'] == 'BLOCK_JOB_PENDING'
               for e in env.d.qmp.all_events)


def test_backup_bitmap(env, tmp_path):
    skip_unless_command(env, 'blockdev-backup')
    skip_unless_command(env, 'block-dirty-bitmap-add')
    env.add_qcow2('it', str(tmp_path / 'inc.qcow2'))
    env.d.qmp.execute('block-dirty-bitmap-add', node='top', name='bm0')
    # nothing written since the bitmap was made: an empty incremental
    p = env.run('--json', 'backup', 'top', '--to', 'it', '--bitmap', 'bm0',
                '--wait')
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {'id': 'backup-top', 'result': 'completed'}
    p = env.run('backup', 'top', '--to', 'it', '--sync', 'bitmap',
                expect=1)
    assert p.stderr.startswith('bjctl: ') and 'bitmap' in p.stderr


def test_backup_wait(env, tmp_path):
    skip_unless_command(env, 'blockdev-backup')
    tgt = env.add_qcow2('bt', str(tmp_path / 'b.qcow2'))
    p = env.run('backup', 'top', '--to', 'bt', '--wait', expect=0)
    assert "job 'backup-top' completed" in p.stdout
    env.d.qmp.execute('blockdev-del', node_name='bt')
    env.d.stop()
    bjtest.qemu_img('compare', '-f', 'qcow2', '-F', 'qcow2', env.top, tgt)


def test_commit_intermediate_wait(env, tmp_path):
    """b2 <- m2 <- o2: commit m2 into b2 (--top, --base), o2 then backs
    onto b2 and reads the same."""
    b2, m2, o2 = (str(tmp_path / n) for n in ('b2.qcow2', 'm2.qcow2',
                                               'o2.qcow2'))
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', b2, str(8 * MiB))
    bjtest.qemu_io('-c', 'write -P 0x11 0 4M', b2)
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', '-b', b2, '-F', 'qcow2', m2)
    bjtest.qemu_io('-c', 'write -P 0x22 1M 2M', m2)
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', '-b', m2, '-F', 'qcow2', o2)
    q = env.d.qmp
    bjtest.blockdev_add_image(q, 'qcow2', 'b2', b2)
    bjtest.blockdev_add_image(q, 'qcow2', 'm2', m2, backing='b2')
    bjtest.blockdev_add_image(q, 'qcow2', 'o2', o2, backing='m2')
    p = env.run('commit', 'o2', '--top', 'm2', '--base', 'b2', '--wait',
                expect=0)
    assert "job 'commit-o2' completed" in p.stdout
    assert env.jobs() == []
    for n in ('o2', 'm2', 'b2'):
        try:
            q.execute('blockdev-del', node_name=n)
        except bjtest.QMPError:
            pass               # m2 may be gone with the commit
    bjtest.qemu_io('-c', 'read -P 0x22 1M 2M', '-c', 'read -P 0x11 3M 1M',
                   b2)


def active_chain(env, tmp_path, name):
    """b <- t as explicit nodes (base writable), t with data of its own."""
    b, t = (str(tmp_path / ('%s-%s.qcow2' % (name, n))) for n in 'bt')
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', b, str(8 * MiB))
    bjtest.qemu_io('-c', 'write -P 0x11 0 4M', b)
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', '-b', b, '-F', 'qcow2', t)
    bjtest.qemu_io('-c', 'write -P 0x44 2M 4M', t)
    q = env.d.qmp
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': name + 'b',
                               'file': {'driver': 'file', 'filename': b}})
    q.execute('blockdev-add', {'driver': 'qcow2', 'node-name': name + 't',
                               'backing': name + 'b',
                               'file': {'driver': 'file', 'filename': t}})
    return b, t


def test_commit_active_wait_then_abort_pivot(env, tmp_path):
    b, t = active_chain(env, tmp_path, 'ac')
    p = env.run('commit', 'act', '--job-id', 'ac1', '--wait', expect=0)
    assert "job 'ac1' is ready" in p.stdout
    p = env.run('list', expect=0)
    assert re.search(r'^ac1\s+commit\s+ready\s.*\syes\s', p.stdout,
                     re.M), p.stdout
    p = env.run('abort', 'ac1', '--pivot', expect=0)
    assert "job 'ac1' completed: pivoted to the target" in p.stdout
    assert env.jobs() == []
    env.d.stop()
    bjtest.qemu_io('-c', 'read -P 0x11 0 2M', '-c', 'read -P 0x44 2M 4M', b)


def test_commit_active_pivot(env, tmp_path):
    b, t = active_chain(env, tmp_path, 'ad')
    p = env.run('commit', 'adt', '--pivot', '--job-id', 'ad1', '--verbose',
                expect=0)
    assert "job 'ad1' completed: pivoted to the target" in p.stdout
    assert env.jobs() == []
    env.d.stop()
    bjtest.qemu_io('-c', 'read -P 0x44 2M 4M', b)


# -- the progress bar on a terminal ------------------------------------------

def run_in_pty(env, *args, on_output=None):
    """bjctl on a terminal; on_output(all output so far, terminal fd) after
    each read.  Returns (wait status, output)."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execve(bjctl_path(), [bjctl_path(), '--socket', env.sock()] +
                      list(args), bjtest.sanitizer_env())
        finally:
            os._exit(127)
    out = b''
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 1)
        if not r:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:        # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if on_output:
            on_output(out, fd)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = out.decode('utf-8', 'replace')
    bjtest.check_sanitizer_text(text, 'bjctl')
    return status, text


def test_progress_bar_in_pty(env):
    status, text = run_in_pty(env, 'pull', 'top', '--job-id', 'tty1',
                              '--wait', '--verbose', '--speed', '8M')
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, text
    assert "job 'tty1' completed" in text
    # redrawn in place: carriage returns, a bar, percent, rate, ETA
    assert text.count('\r') >= 2, text
    assert re.search(r'tty1 \[[#.]{30}\] +\d+\.\d% +\S+ \S+/s ETA ', text), text
    assert re.search(r'\[#{30}\] 100\.0%', text), text
