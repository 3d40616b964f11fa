"""The harness's valgrind mode (scripts/test.sh --valgrind) fails the test
that started a daemon whose valgrind log has errors, and only that test.

Runs in every mode: the checks below use a tiny C program of their own, not
the daemon, so they cost a few seconds and need only gcc and valgrind.
"""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import bjtest

HERE = os.path.dirname(os.path.abspath(__file__))

# Stands in for a daemon: with "leak" it loses a block; either way it waits
# for SIGTERM and exits 0 through exit(), so valgrind runs its leak check.
PROGRAM = r'''
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
    /* SIGTERM stays blocked but while waiting, or one arriving just before
     * the wait would be lost. */
    sigset_t term, none;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigemptyset(&none);
    sigprocmask(SIG_BLOCK, &term, NULL);
    signal(SIGTERM, on_term);
    if (argc > 1 && strcmp(argv[1], "leak") == 0) {
        char *p = malloc(1234);
        memset(p, 1, 1234);
        p = NULL;
    }
    fclose(fopen(argv[2], "w"));    /* ready for SIGTERM */
    while (!stop) {
        sigsuspend(&none);
    }
    exit(0);
}
'''

# Two tests sharing one session, run by an inner pytest with the harness's
# conftest: the first starts the leaking program, the second a clean one.
INNER_TESTS = '''
import os
import bjtest


def start(daemon_factory, tmp_path, how):
    ready = str(tmp_path / "ready")
    daemon_factory(how, ready, monitor=False)
    bjtest.wait_until(lambda: os.path.exists(ready), timeout=120)


def test_starts_leaking(daemon_factory, tmp_path):
    start(daemon_factory, tmp_path, "leak")


def test_starts_clean(daemon_factory, tmp_path):
    start(daemon_factory, tmp_path, "clean")
'''

# The harness's conftest under another module name: the inner one is
# itself 'conftest' to pytest.
INNER_CONFTEST = '''
import importlib.util
_spec = importlib.util.spec_from_file_location(
    'bj_harness_conftest', %r)
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
globals().update({k: v for k, v in vars(_mod).items()
                  if not k.startswith('_')})
''' % os.path.join(HERE, 'conftest.py')


def _log(tmp_path, name, text):
    base = str(tmp_path / name)
    with open(base + '.4242', 'w') as f:
        f.write(text)
    return base


BANNER = ('==4242== Memcheck, a memory error detector\n'
          '==4242== Command: blockjobd --x\n==4242== \n')


@pytest.mark.parametrize('body, bad', [
    ('==4242== ERROR SUMMARY: 0 errors from 0 contexts\n', False),
    ('==4242== Invalid read of size 8\n'
     '==4242== ERROR SUMMARY: 1 errors from 1 contexts\n', True),
    # Killed by SIGKILL: no summary, but an error on the way.
    ('==4242== Conditional jump or move depends on uninitialised value(s)\n',
     True),
    ('==4242== 64 bytes in 1 blocks are definitely lost in loss record 1\n',
     True),
    # Killed by SIGKILL with nothing to report.
    ('', False),
], ids=['clean', 'summary', 'killed-error', 'killed-leak', 'killed-clean'])
def test_log_verdicts(tmp_path, body, bad):
    base = _log(tmp_path, 'd.valgrind', BANNER + body)
    if bad:
        with pytest.raises(AssertionError, match='valgrind reported errors'):
            bjtest.check_valgrind_logs(base)
    else:
        bjtest.check_valgrind_logs(base)


def test_logs_of_other_daemons_are_not_read(tmp_path):
    _log(tmp_path, 'daemon1.valgrind',
         BANNER + '==4242== ERROR SUMMARY: 3 errors from 1 contexts\n')
    bjtest.check_valgrind_logs(str(tmp_path / 'daemon0.valgrind'))
    assert bjtest.valgrind_logs(str(tmp_path / 'daemon0.valgrind')) == []


@pytest.mark.timeout(300)
def test_failure_is_the_starting_tests(tmp_path):
    if not shutil.which('valgrind') or not shutil.which('gcc'):
        pytest.skip('needs valgrind and gcc')
    src = tmp_path / 'prog.c'
    src.write_text(PROGRAM)
    prog = str(tmp_path / 'prog')
    bjtest.run('gcc', '-g', '-O0', '-o', prog, str(src))
    inner = tmp_path / 'inner'
    inner.mkdir()
    (inner / 'conftest.py').write_text(INNER_CONFTEST)
    (inner / 'test_inner.py').write_text(INNER_TESTS)
    xml = str(tmp_path / 'inner.xml')
    env = dict(os.environ, BLOCKJOBD_CHECK='valgrind', BLOCKJOBD_BIN=prog,
               PYTHONDONTWRITEBYTECODE='1')
    p = subprocess.run([sys.executable, '-m', 'pytest', '-q',
                        '-p', 'no:cacheprovider', '--rootdir', str(inner),
                        '--junitxml', xml, str(inner)],
                       capture_output=True, text=True, env=env,
                       cwd=str(inner), timeout=240)
    out = p.stdout + p.stderr
    verdicts = {}
    for case in ET.parse(xml).getroot().iter('testcase'):
        bad = case.find('failure') is not None or \
            case.find('error') is not None
        verdicts[case.get('name')] = bad
    # Teardown errors add a second record for the same test.
    assert verdicts == {'test_starts_leaking': True,
                        'test_starts_clean': False}, out
    assert 'valgrind reported errors' in out, out
    assert 'definitely lost' in out, out
