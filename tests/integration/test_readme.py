"""Every ```sh block of README.md runs as written.

The blocks run top to bottom as one bash script (set -e, pipefail) in an
empty scratch directory, with the build's blockjobd and bjctl first on
PATH.  A block right after a line `<!-- not-run: REASON -->` is skipped
(setup: installing packages, building, the whole suite); the README
documents the marker in an HTML comment at its top.
"""

import json
import os
import re
import signal
import subprocess

import pytest

from bjtest import REPO, bjctl_bin, daemon_bin, sanitizer_env

README = os.path.join(REPO, 'README.md')
NOT_RUN = re.compile(r'^<!-- not-run: (.+) -->$')

pytestmark = [
    pytest.mark.blockjobd_only('the README drives blockjobd and bjctl'),
    pytest.mark.no_valgrind('the README starts the daemon itself, '
                            'outside the harness'),
]


def sh_blocks():
    """[(line number, text, not-run reason or None)] of README's ```sh."""
    lines = open(README).read().split('\n')
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i] == '```sh':
            start = i
            prev = lines[i - 1] if i else ''
            m = NOT_RUN.match(prev)
            i += 1
            body = []
            while lines[i] != '```':
                body.append(lines[i])
                i += 1
            blocks.append((start + 1, '\n'.join(body) + '\n',
                           m.group(1) if m else None))
        i += 1
    return blocks


def test_marker_is_documented_and_explained():
    text = open(README).read()
    assert '<!-- not-run: REASON -->' in text
    assert 'tests/integration/test_readme.py' in text
    assert 'shared/DESIGN.md' not in text
    assert 'docs/architecture.md' in text
    # Every ```sh fence is a real block; no other shell fences hide.
    assert not re.search(r'^```(bash|shell|console)$', text, re.M)
    assert all(reason.strip() for _, _, reason in sh_blocks() if reason)


def kill_leftover_daemons(scratch):
    """A failing block may leave a --daemonize'd daemon: ours, by pidfile."""
    for name in os.listdir(scratch):
        if name.endswith('.pid'):
            try:
                os.kill(int(open(os.path.join(scratch, name)).read()),
                        signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass


def test_readme_blocks_run(sockdir):
    """sockdir: a short scratch path, the README's sockets live in it."""
    runnable = [(n, body) for n, body, reason in sh_blocks() if not reason]
    assert len(runnable) >= 2
    script = 'set -euo pipefail\n' + ''.join(
        '# README.md line %d\n%s' % (n, body) for n, body in runnable)
    path = os.pathsep.join([os.path.dirname(daemon_bin()),
                            os.path.dirname(bjctl_bin()),
                            os.environ.get('PATH', '/usr/bin:/bin')])
    env = sanitizer_env({'PATH': path})
    env.pop('BJCTL_SOCKET', None)
    try:
        p = subprocess.run(['bash', '-c', script], cwd=sockdir, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=300)
    finally:
        kill_leftover_daemons(sockdir)
    assert p.returncode == 0, 'script:\n%s\nstdout:\n%s\nstderr:\n%s' % (
        script, p.stdout, p.stderr)
    # What the examples show happened: the image served over NBD, both
    # backups done, the persistent bitmap listed; every daemon gone.
    assert 'virtual size: 1 GiB' in p.stdout
    assert 'bm0' in p.stdout
    assert not [f for f in os.listdir(sockdir)
                if f.endswith(('.pid', '.sock'))]
    info = subprocess.run(['qemu-img', 'info', os.path.join(sockdir,
                                                            'disk.qcow2')],
                          capture_output=True, text=True, timeout=60)
    assert 'bm0' in info.stdout     # the bitmap persisted in the image
    # The incremental backup copied only the cluster the "guest" wrote.
    m = subprocess.run(['qemu-img', 'map', '--output=json',
                        os.path.join(sockdir, 'inc1.qcow2')],
                       capture_output=True, text=True, timeout=60)
    assert sum(e['length'] for e in json.loads(m.stdout)
               if e['data']) == 64 * 1024
