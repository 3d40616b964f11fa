"""The README's demo (scripts/demo.py) runs to the end against the binary
under test; scripts/demo.sh adds only installing and building."""

import os
import subprocess

import pytest

from bjtest import REPO, check_sanitizer_text, daemon_bin, sanitizer_env


@pytest.mark.no_valgrind('the demo script starts the daemon itself, '
                        'outside the harness that runs it under valgrind')
def test_demo_runs():
    p = subprocess.run(['/usr/bin/python3',
                        os.path.join(REPO, 'scripts', 'demo.py'),
                        '--bin', daemon_bin()],
                       capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL, env=sanitizer_env())
    check_sanitizer_text(p.stderr, 'demo')
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert '"execute": "query-named-block-nodes"' in out
    assert "demo (driver=raw, size=64 MiB, read-write)" in out
    assert "└─ file: demo-file (driver=file" in out
    assert 'daemon exited with status 0' in out
    assert 'QMP socket and pidfile removed' in out
    assert out.rstrip().endswith('demo: OK')


def test_demo_scripts_are_executable():
    for name in ('demo.sh', 'test.sh', 'deps.sh', 'build.sh'):
        assert os.access(os.path.join(REPO, 'scripts', name), os.X_OK), name
    with open(os.path.join(REPO, '.ci', 'run')) as f:
        assert 'exec ./scripts/test.sh' in f.read()
