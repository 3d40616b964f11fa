"""bench/compare.sh keeps working: one --quick round against the daemon under
test and qemu-storage-daemon 7.2 prints the whole table and writes a
well-formed JSON record; --compare reads it back.  Checks the form, never
the timings (benchmarks are not tests)."""

import json
import os
import shutil

import bjtest
from bjtest import run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
COMPARE = os.path.join(ROOT, 'bench', 'compare.sh')

# Every figure the full job list yields, in table order.
FIGURES = [
    'backup', 'mirror-ready', 'mirror-done', 'stream', 'commit-active',
    'commit-intermediate', 'nbd-seqread', 'nbd-randread', 'nbd-randwrite',
    'qmp50-query-jobs-p50', 'qmp50-query-jobs-p99',
    'qmp50-query-block-jobs-p50', 'qmp50-query-block-jobs-p99',
    'qmp50-query-named-block-nodes-p50', 'qmp50-query-named-block-nodes-p99',
    'cancel-latency-p50', 'mem50-peak', 'ref-cp', 'ref-convert',
    'backup/convert', 'mirror/convert']


def compare(tmp_path, *args):
    for tool in ('qemu-storage-daemon', 'fio'):
        assert shutil.which(tool), '%s is not installed (scripts/deps.sh)' % tool
    env = dict(os.environ, BENCH_DIR=str(tmp_path))
    return run(COMPARE, '--quick', '--rounds', '1', '--bj',
               bjtest.daemon_bin(), *args, env=env, timeout=600)


def test_quick_run_table_and_json(tmp_path):
    out = tmp_path / 'run.json'
    p = compare(tmp_path, '--json', out)
    lines = p.stdout.splitlines()
    assert lines[0].startswith('blockjobd '), p.stdout
    assert 'round(s) (--quick), medians; load average' in lines[0]
    assert lines[1].split() == ['figure', 'unit', 'blockjobd', 'qsd-7.2',
                                'bj/qsd', 'goal', 'met']
    rows = {ln.split()[0]: ln.split() for ln in lines[2:]}
    assert list(rows) == FIGURES, p.stdout
    for fig in FIGURES:
        if not fig.startswith('ref-'):
            float(rows[fig][2]), float(rows[fig][3]), float(rows[fig][4])

    j = json.loads(out.read_text())
    assert len(j['commit'].split('-')[0]) == 40
    assert j['date'].endswith('+00:00')
    m = j['machine']
    assert m['nproc'] >= 1 and isinstance(m['model'], str)
    assert len(m['loadavg_before']) == 3 and len(m['loadavg_after']) == 3
    assert j['options']['rounds'] == 1 and j['options']['quick'] is True
    assert list(j['figures']) and set(j['figures']) == set(FIGURES)
    for fig, e in j['figures'].items():
        if fig.startswith('ref-'):
            assert e['ref'] > 0 and len(e['samples']['ref']) == 1
            continue
        assert e['bj'] > 0 and e['qsd'] > 0, (fig, e)
        assert abs(e['ratio'] - e['bj'] / e['qsd']) < 1e-9
        if 'samples' in e:
            assert len(e['samples']['bj']) == len(e['samples']['qsd']) == 1
    # The jobs' outcome was checked by the script (qemu-img compare of
    # each copy target): a failure would have failed the run above.

    # A later run against the saved one: one row per common figure.
    p = compare(tmp_path, '--jobs', 'ref', '--compare', out)
    head, _, cmp = p.stdout.partition('\nagainst %s (' % out)
    assert cmp, p.stdout
    rows = [ln.split() for ln in cmp.splitlines()[1:]]
    assert rows[0] == ['figure', 'unit', 'old', 'bj', 'new', 'bj', 'new/old',
                       'old', 'r', 'new', 'r']
    assert [r[0] for r in rows[1:]] == ['ref-cp', 'ref-convert']
    for r in rows[1:]:
        float(r[4])


def test_bad_options(tmp_path):
    p = run(COMPARE, '--jobs', 'backup,nope', check=False)
    assert p.returncode == 2
    assert "unknown job 'nope'" in p.stderr
    p = run(COMPARE, '--rounds', '0', check=False)
    assert p.returncode == 2
    assert '--rounds must be at least 1' in p.stderr
    p = run(COMPARE, '--bj', str(tmp_path / 'missing'), '--jobs', 'ref',
            check=False)
    assert p.returncode == 1
    assert 'is not built' in p.stderr
