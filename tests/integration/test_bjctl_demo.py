"""The README demo's main part (scripts/demo-jobs.py, run by
scripts/demo.sh after scripts/demo.py): a live backup and a live mirror
with bjctl under an NBD writer, checked with qemu-img compare."""

import os
import re
import subprocess

import pytest

from bjtest import REPO, bjctl_bin, check_sanitizer_text, daemon_bin, \
    sanitizer_env


@pytest.mark.no_valgrind('the demo script starts the daemon itself, '
                        'outside the harness that runs it under valgrind')
@pytest.mark.timeout(180)
def test_demo_jobs_runs():
    p = subprocess.run(['/usr/bin/python3',
                        os.path.join(REPO, 'scripts', 'demo-jobs.py'),
                        '--bin', daemon_bin(), '--bjctl', bjctl_bin()],
                       capture_output=True, text=True, timeout=170,
                       stdin=subprocess.DEVNULL, env=sanitizer_env())
    check_sanitizer_text(p.stderr + p.stdout, 'demo-jobs')
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "job 'backup-disk' completed" in out
    assert re.search(r'^backup-disk: running \d+\.\d% ', out, re.M)
    assert "job 'mirror-disk' is ready" in out
    assert re.search(r'^  mirror-disk\s+mirror\s+ready\s', out, re.M)
    assert "job 'mirror-disk' completed: pivoted to the target" in out
    assert 'the export holds every acknowledged write' in out
    assert out.count('Images are identical.') == 2
    assert 'daemon exited with status 0' in out
    assert out.rstrip().endswith('demo jobs: OK')


def test_demo_sh_runs_demo_jobs():
    with open(os.path.join(REPO, 'scripts', 'demo.sh')) as f:
        text = f.read()
    assert 'scripts/demo-jobs.py' in text and 'build/src/ctl/bjctl' in text
    assert os.access(os.path.join(REPO, 'scripts', 'demo-jobs.py'), os.X_OK)
