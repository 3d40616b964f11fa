"""bjctl's conventions for a qemu-storage-daemon + virsh user (issue 19):
per-command help, --version, extra arguments refused; Ctrl-C and
--timeout abort a waited-for job, --bandwidth in MiB/s, a unit required
for --speed; --json as one object per line.  The daemon-facing tests run
against blockjobd and qemu-storage-daemon alike (test_bjctl's fixtures).
"""

import json
import os
import re
import subprocess

import pytest

import bjtest
from test_bjctl import bjctl_path, env, kind, start_env  # noqa: F401 (fixtures)


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
