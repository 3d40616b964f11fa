#!/usr/bin/python3
"""Records the golden job-event sequences from qemu-storage-daemon.

Runs the integration tests that compare job events with a recording
(golden.assert_matches) against qemu-storage-daemon, several times, with
$BLOCKJOBD_GOLDEN_RECORD set so that each such call saves its run instead of
comparing.  Then merges the runs of each label into
tests/golden/qsd-7.2/<label>.json:

    sequence, canonical, events   the most frequent raw sequence, its
                                  canonical form, the reduced events of a
                                  run that had it
    raw_deterministic             every run had the same raw sequence
    canonical_deterministic       ... the same canonical sequence
    distinct_raw, distinct_canonical   the other sequences seen, if any
    runs, tests, recorded_with    how many runs, by which tests, which daemon

    scripts/record-golden.py                       # qsd, 2 runs, in place
    scripts/record-golden.py --runs 3 --out /tmp/g # elsewhere, to compare
    scripts/record-golden.py --check               # record to a scratch dir
                                                   # and diff with the tree

The scenarios are the tests themselves (sizes, writers, policies), so a
recording always describes exactly what the suite checks.

qemu-storage-daemon 7.2 itself is not always reliable in these scenarios: it
has died of SIGSEGV with many backups in one transaction, and hung with a
mirror in PENDING while an NBD client kept writing (the client's write never
answered).  So each pytest pass has a wall-clock limit (--pass-timeout) and
a failed or killed pass still contributes the runs it saved; passes repeat,
up to --max-passes, until every label has --runs recordings.  Exit status 0
when every label has them.
"""

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))
import golden  # noqa: E402

# The tests that make the recordings (a label made by several of them merges
# all their runs).  Others (test_reopen, test_transaction, test_stream_nbd)
# compare against the same labels but are not their source.
SOURCES = [
    'test_backup.py', 'test_backup_many.py', 'test_commit.py',
    'test_commit_active.py', 'test_mirror.py', 'test_mirror_errors.py',
    'test_mirror_live.py', 'test_stream.py', 'test_amend.py',
]


def daemon_version(binary):
    out = subprocess.run([binary, '--version'], capture_output=True,
                         text=True).stdout.split()
    # "qemu-storage-daemon version 7.2.22 (Debian ...)"
    return out[out.index('version') + 1] if 'version' in out else '?'


def record_run(binary, scratch, pytest_args, timeout):
    env = dict(os.environ, BLOCKJOBD_BIN=binary, PYTHONDONTWRITEBYTECODE='1')
    env[golden.RECORD_ENV] = scratch
    files = [os.path.join(REPO, 'tests', 'integration', f) for f in SOURCES]
    work = tempfile.mkdtemp(prefix='bj-record-')
    cmd = ['/usr/bin/python3', '-m', 'pytest', '-q', '-rfE', '-p',
           'no:cacheprovider', '--rootdir', REPO,
           '--basetemp', os.path.join(work, 'tmp')] + files + pytest_args
    print('==> %s=%s %s' % (golden.RECORD_ENV, scratch, ' '.join(cmd)),
          flush=True)
    # A session of its own, so that a pass over its time limit is killed
    # with every daemon it started.
    p = subprocess.Popen(cmd, env=env, cwd=work, start_new_session=True)
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        print('record-golden: pass killed after %d s' % timeout)
        return -signal.SIGKILL
    finally:
        shutil.rmtree(work, ignore_errors=True)


def runs_of(scratch):
    """{label: [run, ...]} from one recording pass."""
    out = {}
    for label in sorted(os.listdir(scratch)):
        d = os.path.join(scratch, label)
        out[label] = []
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name)) as f:
                out[label].append(json.load(f))
    return out


def merge(label, runs, recorded_with):
    raws = [tuple(r['sequence']) for r in runs]
    canons = [tuple(golden.canonical(list(s))) for s in raws]
    raw = collections.Counter(raws).most_common(1)[0][0]
    canon = tuple(golden.canonical(list(raw)))
    first = next(r for r in runs if tuple(r['sequence']) == raw)
    return {
        'label': label,
        'sequence': list(raw),
        'canonical': list(canon),
        'events': first['events'],
        'raw_deterministic': len(set(raws)) == 1,
        'canonical_deterministic': len(set(canons)) == 1,
        'distinct_raw': [list(s) for s in sorted(set(raws) - {raw})],
        'distinct_canonical': [list(s) for s in sorted(set(canons) - {canon})],
        'runs': len(runs),
        'tests': sorted({r['test'] for r in runs}),
        'recorded_with': recorded_with,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--daemon', default='/usr/bin/qemu-storage-daemon')
    ap.add_argument('--runs', type=int, default=2,
                    help='recordings wanted of every label')
    ap.add_argument('--max-passes', type=int, default=5)
    ap.add_argument('--pass-timeout', type=int, default=600,
                    help='seconds one pytest pass may take')
    ap.add_argument('--out', default=golden.golden_dir())
    ap.add_argument('--check', action='store_true',
                    help='record to a scratch directory and compare the '
                         'canonical sequences and data with --out')
    ap.add_argument('pytest_args', nargs='*')
    args = ap.parse_args()

    recorded_with = {'daemon': os.path.basename(args.daemon),
                     'version': daemon_version(args.daemon)}
    top = tempfile.mkdtemp(prefix='bj-golden-')
    try:
        runs = collections.defaultdict(list)
        for i in range(args.max_passes):
            scratch = os.path.join(top, 'pass%d' % i)
            os.makedirs(scratch)
            rc = record_run(args.daemon, scratch, args.pytest_args,
                            args.pass_timeout)
            for label, got in runs_of(scratch).items():
                runs[label] += got
            short = sorted(l for l in runs if len(runs[l]) < args.runs)
            print('record-golden: pass %d: pytest exit %d, %d labels, %d '
                  'still short of %d runs%s' % (
                      i, rc, len(runs), len(short), args.runs,
                      ': ' + ' '.join(short) if short else ''), flush=True)
            if i + 1 >= args.runs and not short:
                break
        else:
            print('record-golden: gave up after %d passes' % args.max_passes)
            return 1
        merged = {l: merge(l, r, recorded_with)
                  for l, r in sorted(runs.items())}
    finally:
        shutil.rmtree(top, ignore_errors=True)

    if args.check:
        bad = 0
        for l, m in merged.items():
            path = os.path.join(args.out, l + '.json')
            old = json.load(open(path)) if os.path.exists(path) else None
            same = old is not None and old['canonical'] == m['canonical'] \
                and [e for e in old['events']
                     if e['event'].startswith('BLOCK_JOB_')] == \
                [e for e in m['events'] if e['event'].startswith('BLOCK_JOB_')]
            bad += not same
            print('%-44s %s' % (l, 'same' if same else 'DIFFERS'))
        gone = sorted(n[:-5] for n in os.listdir(args.out)
                      if n.endswith('.json') and n[:-5] not in merged)
        for l in gone:
            print('%-44s NOT RECORDED' % l)
        bad += len(gone)
        print('%d of %d labels differ from %s' % (bad, len(merged) + len(gone),
                                                  args.out))
        return 1 if bad else 0

    os.makedirs(args.out, exist_ok=True)
    for name in os.listdir(args.out):
        if name.endswith('.json') and name[:-5] not in merged:
            os.unlink(os.path.join(args.out, name))
    for l, m in merged.items():
        with open(os.path.join(args.out, l + '.json'), 'w') as f:
            json.dump(m, f, indent=1, sort_keys=True)
            f.write('\n')
        print('%-44s runs %d  raw %s  canonical %s' % (
            l, m['runs'],
            'deterministic' if m['raw_deterministic'] else 'varies',
            'deterministic' if m['canonical_deterministic'] else 'VARIES'))
    print('%d recordings written to %s' % (len(merged), args.out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
