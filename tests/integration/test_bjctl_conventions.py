"""bjctl's conventions for a qemu-storage-daemon + virsh user (issue 19):
per-command help, --version, extra arguments refused; Ctrl-C and
--timeout abort a waited-for job, --bandwidth in MiB/s, a unit required
for --speed; --json as one object per line.  The daemon-facing tests run
against blockjobd and qemu-storage-daemon alike (test_bjctl's fixtures).
"""

import json
import os
import re
import signal
import subprocess

import pytest

import bjtest
from test_bjctl import (bjctl_path, env, kind, run_in_pty,  # noqa: F401
                        start_env)

MiB = 1024 * 1024


def bjctl(*args):
    """bjctl without a daemon: for what needs none (help, usage)."""
    e = dict(bjtest.sanitizer_env())
    e.pop('BJCTL_SOCKET', None)
    p = subprocess.run([bjctl_path()] + list(args), capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL, env=e)
    bjtest.check_sanitizer_text(p.stderr, 'bjctl')
    return p


# -- help, version, arguments ------------------------------------------------

@pytest.mark.parametrize('cmd,own,foreign', [
    ('nodes', '--all', '--to'),
    ('mirror', '--pivot', '--granularity'),
    ('backup', '--bitmap-mode', '--base'),
    ('abort', '--async', '--bitmap'),
    ('bitmap', '--granularity', '--pivot'),
    ('speed', 'RATE', '--all'),
])
def test_command_help_is_its_own(cmd, own, foreign):
    p = bjctl(cmd, '--help')
    assert p.returncode == 0 and p.stderr == ''
    assert p.stdout.startswith('Usage: bjctl %s' % cmd), p.stdout
    assert own in p.stdout and foreign not in p.stdout
    # options before the command too, and no socket is needed
    assert bjctl('-h', cmd).stdout == p.stdout
    assert p.stdout != bjctl('--help').stdout


def test_global_help_without_command():
    p = bjctl('--help')
    assert p.returncode == 0 and 'Exit status:' in p.stdout
    assert "'bjctl COMMAND --help'" in p.stdout


def test_version_matches_meson():
    with open(os.path.join(bjtest.REPO, 'meson.build')) as f:
        version = re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)
    p = bjctl('--version')
    assert p.returncode == 0 and p.stderr == ''
    assert p.stdout == 'bjctl version %s\n' % version


@pytest.mark.parametrize('args,word', [
    (['nodes', 'extra'], "nodes: unexpected argument 'extra' (nodes takes "
                         "no arguments)"),
    (['list', 'x', 'y'], "list: unexpected argument 'x'"),
    (['events', 'x'], "events: unexpected argument 'x'"),
    (['info', 'j', 'k'], "info: unexpected argument 'k' (info takes 1 "
                         "argument)"),
    (['pause', 'j', 'k'], "pause: unexpected argument 'k'"),
    (['speed', 'j', '1M', 'z'], "speed: unexpected argument 'z' (speed "
                                "takes 2 arguments)"),
    (['pull', 'top', 'base'], "pull: unexpected argument 'base'"),
])
def test_extra_arguments_are_usage_errors(tmp_path, args, word):
    # refused before any connection: the socket need not exist
    p = bjctl('--socket', str(tmp_path / 'none.sock'), *args)
    assert p.returncode == 2, p.stderr
    assert p.stdout == ''
    assert p.stderr.startswith('bjctl: ' + word), p.stderr
    assert "Try 'bjctl %s --help'" % args[0] in p.stderr


def test_extra_argument_against_daemon(env):
    p = env.run('nodes', 'extra', expect=2)
    assert 'unexpected argument' in p.stderr and p.stdout == ''
    env.run('nodes', expect=0)


# -- virsh's conventions: Ctrl-C, --timeout, --bandwidth, units ---------------

def add_mirror_target(env, name):
    if 'blockdev-mirror' not in [c['name'] for c in
                                 env.d.qmp.execute('query-commands')]:
        pytest.skip('no blockdev-mirror in this daemon')
    tgt = os.path.join(str(env.workdir), name + '.qcow2')
    bjtest.qemu_img('create', '-q', '-f', 'qcow2', tgt, str(32 * MiB))
    env.d.qmp.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': name,
        'file': {'driver': 'file', 'filename': tgt}})


def block_events(env, jid):
    return [x['event'] for x in env.d.qmp.all_events
            if x['event'].startswith('BLOCK_JOB_')
            and x['data'].get('device') == jid]


def test_sigint_during_wait_aborts_the_job(env):
    w = env.popen('pull', 'top', '--job-id', 'i1', '--wait', '--verbose',
                  '--speed', '64K', n=1)
    # not a terminal: a progress line says it is waiting
    line = w.stderr.readline()
    assert line.startswith('i1: '), line
    w.send_signal(signal.SIGINT)
    out, err = w.communicate(timeout=60)
    bjtest.check_sanitizer_text(err, 'bjctl')
    assert w.returncode == 7, (out, err)
    assert "bjctl: interrupted: job 'i1' aborted" in err
    assert out == ''
    assert env.job('i1') is None                 # dismissed by bjctl
    assert block_events(env, 'i1') == ['BLOCK_JOB_CANCELLED']


def test_ctrl_c_in_terminal_aborts_mirror(env):
    """A mirror --wait (until READY) cut short by ^C typed on a terminal."""
    add_mirror_target(env, 'cm')
    sent = []

    def type_ctrl_c(out, fd):
        if not sent and b'cm1 [' in out:        # the bar: it is waiting
            os.write(fd, b'\x03')
            sent.append(True)

    status, text = run_in_pty(env, 'mirror', 'top', '--to', 'cm', '--job-id',
                              'cm1', '--wait', '--verbose', '--speed', '64K',
                              on_output=type_ctrl_c)
    assert sent, text
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7, text
    assert "bjctl: interrupted: job 'cm1' aborted" in text
    bjtest.wait_until(lambda: env.job('cm1') is None, what='cm1 gone')
    assert block_events(env, 'cm1') == ['BLOCK_JOB_CANCELLED']


def test_timeout_on_start_aborts_the_job(env):
    # --timeout implies --wait, as in virsh
    p = env.run('pull', 'top', '--job-id', 't1', '--speed', '64K',
                '--timeout', '0.5', expect=5)
    assert "bjctl: timed out after 0.5 s: job 't1' aborted" in p.stderr
    assert p.stdout == ''
    assert env.job('t1') is None
    assert block_events(env, 't1') == ['BLOCK_JOB_CANCELLED']


def test_timeout_aborts_ready_mirror_with_force(env):
    """A mirror not READY within --timeout is cancelled (with force)."""
    add_mirror_target(env, 'tm')
    p = env.run('mirror', 'top', '--to', 'tm', '--job-id', 'tm1',
                '--speed', '64K', '--timeout', '0.5', expect=5)
    assert "timed out after 0.5 s: job 'tm1' aborted" in p.stderr
    bjtest.wait_until(lambda: env.job('tm1') is None, what='tm1 gone')
    assert block_events(env, 'tm1') == ['BLOCK_JOB_CANCELLED']


def job_speed(env, jid):
    return [j for j in env.d.qmp.execute('query-block-jobs')
            if j['device'] == jid][0]['speed']


def test_bandwidth_is_mib_per_second(env):
    env.run('pull', 'top', '--job-id', 'b1', '--bandwidth', '3', expect=0)
    env.run('pause', 'b1', expect=0)
    assert job_speed(env, 'b1') == 3 * MiB
    env.run('speed', 'b1', '--bandwidth', '5', expect=0)
    assert job_speed(env, 'b1') == 5 * MiB
    env.run('speed', 'b1', '100B', expect=0)
    assert job_speed(env, 'b1') == 100
    env.run('abort', 'b1', expect=0)


@pytest.mark.parametrize('args,word', [
    (['pull', 'top', '--speed', '100'], "speed '100' has no unit: give one, "
                                        "e.g. 100M for MiB/s or 100B"),
    (['speed', 'j', '7'], "speed '7' has no unit"),
    (['pull', 'top', '--speed', '1M', '--bandwidth', '1'],
     '--speed and --bandwidth'),
    (['pull', 'top', '--bandwidth', '1.5'], "invalid bandwidth '1.5'"),
    (['pull', 'top', '--bandwidth', '1M'], "invalid bandwidth '1M'"),
    (['speed', 'j', '1M', '--bandwidth', '1'], 'usage: bjctl speed'),
])
def test_speed_without_unit_refused(tmp_path, args, word):
    p = bjctl('--socket', str(tmp_path / 'none.sock'), *args)
    assert p.returncode == 2, p.stderr
    assert word in p.stderr, p.stderr


# -- --json: one object a line, errors and progress included -----------------

def objects(p):
    """Every stdout line of a --json run is exactly one JSON object."""
    lines = p.stdout.splitlines()
    assert p.stdout == ''.join(ln + '\n' for ln in lines)
    out = [json.loads(ln) for ln in lines]
    assert all(isinstance(o, dict) for o in out), p.stdout
    return out


def test_json_queries_one_object_a_line(env):
    env.start_stream('q1', speed=64 * 1024)
    jobs = objects(env.run('--json', 'list', expect=0))
    assert [j['id'] for j in jobs] == ['q1'] and jobs[0]['speed'] == 65536
    info = objects(env.run('--json', 'info', 'q1', expect=0))
    assert len(info) == 1 and info[0]['id'] == 'q1'
    nodes = objects(env.run('--json', 'nodes', expect=0))
    assert 'top' in [n['node-name'] for n in nodes] and len(nodes) >= 2
    env.run('abort', 'q1', expect=0)
    assert objects(env.run('--json', 'list', expect=0)) == []


def error_object(p, rc):
    assert p.returncode == rc, (p.stdout, p.stderr)
    last = objects(p)[-1]
    assert set(last) == {'error', 'exit'} and last['exit'] == rc
    assert set(last['error']) == {'class', 'desc'}
    return last['error']


def test_json_errors(env, tmp_path):
    e = error_object(env.run('--json', 'info', 'nope'), 1)
    assert e == {'class': 'Error', 'desc': "no job 'nope'"}
    # the daemon's refusal: its QMP class and words
    p = env.run('--json', 'pause', 'nope')
    e = error_object(p, 1)
    assert e['class'] and e['class'] != 'Error'
    assert p.stderr == 'bjctl: %s\n' % e['desc']
    e = error_object(env.run('--json', 'nodes', 'extra'), 2)
    assert e['class'] == 'UsageError' and 'unexpected argument' in e['desc']
    e = error_object(env.run('pull', 'top', '--speed', '5', '--json'), 2)
    assert e['class'] == 'UsageError' and 'has no unit' in e['desc']
    p = bjctl('--json', '--socket', str(tmp_path / 'none.sock'), 'list')
    assert error_object(p, 3)['class'] == 'ConnectionError'
    p = env.run('--json', 'pull', 'top', '--job-id', 'jt', '--speed', '64K',
                '--timeout', '0.5')
    e = error_object(p, 5)
    assert e == {'class': 'Timeout',
                 'desc': "timed out after 0.5 s: job 'jt' aborted"}
    assert len(objects(p)) == 1


def test_json_wait_progress_one_object_an_update(env):
    p = env.run('--json', 'pull', 'top', '--job-id', 'jp', '--wait',
                '--verbose', '--speed', '16M', expect=0)
    out = objects(p)
    assert out[-1] == {'id': 'jp', 'result': 'completed'}
    progress = out[:-1]
    assert progress, p.stdout
    for o in progress:
        assert set(o) == {'id', 'status', 'current-progress',
                          'total-progress'} and o['id'] == 'jp'
    cur = [o['current-progress'] for o in progress]
    assert cur == sorted(cur)
    # no bar or progress lines on stderr: stdout carries it all
    assert 'jp: ' not in p.stderr and '\r' not in p.stderr


def test_json_sigint_ends_with_interrupted(env):
    w = env.popen('--json', 'pull', 'top', '--job-id', 'ji', '--wait',
                  '--verbose', '--speed', '64K', n=1)
    first = json.loads(w.stdout.readline())     # waiting: it says so
    assert first['id'] == 'ji' and 'current-progress' in first
    w.send_signal(signal.SIGINT)
    out, err = w.communicate(timeout=60)
    bjtest.check_sanitizer_text(err, 'bjctl')
    assert w.returncode == 7, (out, err)
    last = [json.loads(ln) for ln in out.splitlines()][-1]
    assert last == {'error': {'class': 'Interrupted',
                              'desc': "interrupted: job 'ji' aborted"},
                    'exit': 7}
    assert env.job('ji') is None
