#!/usr/bin/python3
"""Runs the whole test suite and prints one closing line for all of it.

    unit tests        meson test, in build/ and in build-asan/
    integration       pytest tests/integration, once with each daemon binary

Every cmocka test case counts as one test (a test binary that is not cmocka
counts as one).  Every pytest test counts as one.  Each failure and each skip
is listed with its reason above the closing line, which is exactly

    N passed, N failed, N skipped

Exit status: 0 only if nothing failed and something passed.

Build directories: build/ and build-asan/, or BLOCKJOBD_BUILDS.
Options: --only normal|asan, --no-unit, --no-integration, --serial, and
anything after '--' goes to pytest (e.g. -- -k daemon).

The integration runs of the two builds go at the same time (their output
one after the other); --serial (or BLOCKJOBD_SERIAL=1) runs them in turn.

Two checking modes run only when asked for (scripts/test.sh --valgrind,
--tsan), never in the default run:
    --only valgrind   build/ with every daemon (and unit test) under
                      valgrind's memcheck (BLOCKJOBD_CHECK=valgrind)
    --only tsan       build-tsan/, the ThreadSanitizer build
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = '/usr/bin/python3'   # the Debian interpreter with the test modules

BUILDS = [
    ('normal', 'build'),
    ('asan', 'build-asan'),
]
# A developer's own build directories: BLOCKJOBD_BUILDS="normal:build-me
# asan:build-me-asan".
if os.environ.get('BLOCKJOBD_BUILDS'):
    BUILDS = [tuple(b.split(':', 1))
              for b in os.environ['BLOCKJOBD_BUILDS'].split()]

# Checking modes: (label, build directory); see the docstring.
CHECK_BUILDS = [
    ('valgrind', os.environ.get('BLOCKJOBD_VALGRIND_BUILD', 'build')),
    ('tsan', os.environ.get('BLOCKJOBD_TSAN_BUILD', 'build-tsan')),
]

# Unit tests under valgrind: the same memcheck settings as the harness uses
# for the daemon (tests/integration/bjtest.py valgrind_prefix()).  Forked
# children are silent: in the unit tests they are the cases that leak and
# abort on purpose (test-aio's leak checks); their parent checks how they
# died.
VALGRIND_UNIT = ('valgrind --tool=memcheck --leak-check=full '
                 '--show-leak-kinds=definite --errors-for-leak-kinds=definite '
                 '--error-exitcode=97 --num-callers=30 --quiet '
                 '--child-silent-after-fork=yes')

SAN_ENV = {
    'ASAN_OPTIONS': 'halt_on_error=1:abort_on_error=0:print_stacktrace=1:'
                    'detect_leaks=1:print_summary=1',
    'UBSAN_OPTIONS': 'halt_on_error=1:abort_on_error=1:print_stacktrace=1:'
                     'print_summary=1',
    'LSAN_OPTIONS': 'print_suppressions=0',
    # Keep going after a report so a run shows every race; exit status 66
    # and the harness's scan of stderr still fail the test.
    'TSAN_OPTIONS': 'halt_on_error=0:exitcode=66:second_deadlock_stack=1:'
                    'history_size=4',
}


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = []      # (name, reason)
        self.skipped = []     # (name, reason)

    def add_pass(self, n=1):
        self.passed += n

    def fail(self, name, reason):
        self.failed.append((name, reason))

    def skip(self, name, reason):
        self.skipped.append((name, reason))


def first_line(text, limit=300):
    text = (text or '').strip()
    line = text.splitlines()[0] if text else ''
    return line[:limit]


# ---- unit tests (meson) ----------------------------------------------------

CMOCKA_RE = re.compile(r'^\[ *(RUN|OK|FAILED|SKIPPED|ERROR) *\] (.*)$')


def cmocka_cases(output):
    """[(case, 'pass'|'fail'|'skip', reason)] from cmocka output, or None."""
    cases = []
    current = None
    last_err = ''
    for line in output.splitlines():
        m = CMOCKA_RE.match(line.strip())
        if not m:
            if current is not None and line.strip():
                last_err = line.strip()
            continue
        tag, rest = m.group(1), m.group(2).strip()
        if tag == 'RUN':
            if current is not None:
                cases.append((current, 'fail', 'no result (crashed?)'))
            current, last_err = rest, ''
        elif current is not None and rest == current:
            if tag == 'OK':
                cases.append((current, 'pass', ''))
            elif tag == 'SKIPPED':
                cases.append((current, 'skip', last_err or 'skipped'))
            else:
                cases.append((current, 'fail',
                              last_err or 'failed (output above)'))
            current = None
    if current is not None:
        cases.append((current, 'fail', 'no result (crashed?)'))
    return cases or None


def run_unit(tally, label, builddir):
    bdir = os.path.join(REPO, builddir)
    # With a wrapper meson names its log after it (even with --logbase).
    log = os.path.join(bdir, 'meson-logs', 'testlog-valgrind.json'
                       if label == 'valgrind' else 'testlog.json')
    if os.path.exists(log):
        os.unlink(log)
    env = dict(os.environ)
    env.update(SAN_ENV)
    cmd = ['meson', 'test', '-C', bdir, '--no-rebuild', '--print-errorlogs']
    if label == 'asan':
        cmd += ['--timeout-multiplier', '3']
    elif label == 'tsan':
        cmd += ['--timeout-multiplier', '4']
    elif label == 'valgrind':
        cmd += ['--wrapper', VALGRIND_UNIT, '--timeout-multiplier', '10']
    print('==> unit tests (%s): %s' % (label, ' '.join(cmd)), flush=True)
    rc = subprocess.call(cmd, env=env)
    if not os.path.exists(log):
        tally.fail('unit[%s]' % label, 'meson test exited %d with no log' % rc)
        return
    with open(log) as f:
        for line in f:
            if not line.strip():
                continue
            t = json.loads(line)
            name = 'unit[%s] %s' % (label, t['name'])
            result = t.get('result', '')
            out = (t.get('stdout') or '') + '\n' + (t.get('stderr') or '')
            cases = cmocka_cases(out)
            if result == 'SKIP':
                tally.skip(name, 'skipped (exit 77): %s'
                           % first_line(out.strip().splitlines()[-1]
                                        if out.strip() else ''))
                continue
            if cases is None:
                if result in ('OK', 'EXPECTEDFAIL'):
                    tally.add_pass()
                else:
                    tally.fail(name, '%s (exit %s)'
                               % (result, t.get('returncode')))
                continue
            for case, status, reason in cases:
                cname = '%s: %s' % (name, case)
                if status == 'pass':
                    tally.add_pass()
                elif status == 'skip':
                    tally.skip(cname, reason)
                else:
                    tally.fail(cname, reason)
            # A binary can pass every case and still fail: a leak or a
            # sanitizer report at exit, a timeout, a crash after the last case.
            if result not in ('OK', 'EXPECTEDFAIL') and \
                    all(s != 'fail' for _, s, _ in cases):
                tally.fail(name, '%s (exit %s) after its cases ran'
                           % (result, t.get('returncode')))


# ---- integration tests (pytest) --------------------------------------------

def start_integration(label, builddir, pytest_args, log=None):
    """Starts pytest on one build; returns what finish_integration needs.
    Its output goes to stdout, or to the file log when given."""
    binary = os.path.join(REPO, builddir, 'src', 'daemon', 'blockjobd')
    xml = os.path.join(REPO, builddir, 'meson-logs', 'pytest-junit.xml')
    if os.path.exists(xml):
        os.unlink(xml)
    env = dict(os.environ)
    env.update(SAN_ENV)
    env['BLOCKJOBD_BIN'] = binary
    env['BLOCKJOBD_BUILD_DIR'] = os.path.join(REPO, builddir)
    env['PYTHONDONTWRITEBYTECODE'] = '1'
    if label in dict(CHECK_BUILDS):
        env['BLOCKJOBD_CHECK'] = label
    cmd = [PYTHON, '-m', 'pytest', '-q', '-rfEs', '-p', 'no:cacheprovider',
           '--rootdir', REPO,
           '--junitxml', xml, os.path.join(REPO, 'tests', 'integration')]
    cmd += pytest_args
    print('==> integration tests (%s): BLOCKJOBD_BIN=%s%s'
          % (label, binary, ' (output in %s)' % log if log else ''),
          flush=True)
    # A scratch working directory: tools that drop files in the current
    # directory (fio's verify state) must not litter the repository.  The
    # tests' own temporary directories go there too (--basetemp), removed
    # at the end, instead of pytest's shared /tmp/pytest-of-USER, which
    # keeps gigabytes of old runs and which another pytest session started
    # meanwhile prunes under a running one.
    scratch = tempfile.mkdtemp(prefix='bj-suite-')
    cmd += ['--basetemp', os.path.join(scratch, 'tmp')]
    out = open(log, 'w') if log else None
    proc = subprocess.Popen(cmd, env=env, cwd=scratch, stdout=out,
                            stderr=subprocess.STDOUT if out else None)
    if out:
        out.close()
    return (label, xml, scratch, proc, log)


def finish_integration(tally, run):
    """Waits for a run from start_integration and counts its results."""
    label, xml, scratch, proc, log = run
    try:
        rc = proc.wait()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if log:
        print('==> integration tests (%s), output:' % label, flush=True)
        with open(log) as f:
            shutil.copyfileobj(f, sys.stdout)
        sys.stdout.flush()
    if not os.path.exists(xml):
        tally.fail('integration[%s]' % label,
                   'pytest exited %d with no report' % rc)
        return
    root = ET.parse(xml).getroot()
    for case in root.iter('testcase'):
        cls = case.get('classname') or ''
        name = 'integration[%s] %s::%s' % (
            label, cls.replace('tests.integration.', ''), case.get('name'))
        failure = case.find('failure')
        if failure is None:
            failure = case.find('error')
        skipped = case.find('skipped')
        if failure is not None:
            tally.fail(name, first_line(failure.get('message') or
                                        failure.text or 'failed'))
        elif skipped is not None:
            tally.skip(name, first_line(skipped.get('message') or 'skipped'))
        else:
            tally.add_pass()
    if rc not in (0, 1, 5):
        tally.fail('integration[%s]' % label,
                   'pytest exited with status %d' % rc)


def run_integration(tally, builds, pytest_args, serial):
    """The integration tests once per build.  The builds run at the same
    time (each daemon is mostly waiting on I/O, processes and events, so
    two runs share two cores well): the first prints as it goes, the
    others' output follows when they end.  serial runs one after the
    other."""
    if serial or len(builds) < 2:
        for label, builddir in builds:
            finish_integration(tally, start_integration(label, builddir,
                                                        pytest_args))
        return
    logdir = tempfile.mkdtemp(prefix='bj-suite-logs-')
    runs = [start_integration(builds[0][0], builds[0][1], pytest_args)]
    for label, builddir in builds[1:]:
        runs.append(start_integration(
            label, builddir, pytest_args,
            log=os.path.join(logdir, 'pytest-%s.log' % label)))
    for run in runs:
        finish_integration(tally, run)
    shutil.rmtree(logdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--only', choices=[b[0] for b in BUILDS + CHECK_BUILDS])
    ap.add_argument('--no-unit', action='store_true')
    ap.add_argument('--no-integration', action='store_true')
    ap.add_argument('--serial', action='store_true',
                    help='integration runs one build after the other')
    ap.add_argument('pytest_args', nargs='*')
    args = ap.parse_args()

    tally = Tally()
    start = time.monotonic()
    builds = [b for b in BUILDS if args.only in (None, b[0])]
    builds += [b for b in CHECK_BUILDS if args.only == b[0]]
    if not args.no_unit:
        for label, builddir in builds:
            run_unit(tally, label, builddir)
    if not args.no_integration:
        run_integration(tally, builds, args.pytest_args,
                        args.serial or bool(os.environ.get('BLOCKJOBD_SERIAL')))

    if tally.passed == 0 and not tally.failed:
        tally.fail('suite', 'no test ran')
    print()
    print('==> summary (%.0f s)' % (time.monotonic() - start))
    for name, reason in tally.skipped:
        print('SKIPPED %s: %s' % (name, reason))
    for name, reason in tally.failed:
        print('FAILED  %s: %s' % (name, reason))
    print('%d passed, %d failed, %d skipped'
          % (tally.passed, len(tally.failed), len(tally.skipped)), flush=True)
    return 1 if tally.failed or tally.passed == 0 else 0


if __name__ == '__main__':
    sys.exit(main())
