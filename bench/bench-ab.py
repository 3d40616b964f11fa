#!/usr/bin/python3
"""Before/after for a change: two blockjobd binaries (A, B) and
qemu-storage-daemon 7.2, run alternately, several rounds, medians.

    bench/bench-ab.py A_BINARY B_BINARY [--rounds N] [--quick]
                      [--jobs backup,mirror,nbd,mem50]

The jobs and figures are bench/compare.py's (see its help: backup, mirror,
stream, commit, nbd, qmp50, mem50); this only runs a third daemon in the
same rounds and prints, for each figure, the medians and the ratios B/A,
B/qsd, A/qsd.
"""

import argparse
import os
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('a')
    ap.add_argument('b')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--jobs', default='backup,mirror,nbd,mem50')
    args = ap.parse_args()
    qsd = shutil.which('qemu-storage-daemon')
    if not qsd:
        sys.exit('bench-ab.py: qemu-storage-daemon is not installed')
    jobs = args.jobs.split(',')
    for j in jobs:
        if j not in compare.ALL_JOBS or j == 'ref':
            sys.exit('bench-ab.py: unknown job %r' % j)
    bins = {'A': os.path.abspath(args.a), 'B': os.path.abspath(args.b),
            'qsd': qsd}
    print('load average %.2f' % os.getloadavg()[0])
    samples = compare.run_all(bins, jobs, args.rounds,
                              compare.Sizes(args.quick), lambda m: None)
    for fig in compare.FIGURES:
        if fig not in samples:
            continue
        unit = compare.FIGURES[fig][0]
        med = {k: statistics.median(v) for k, v in samples[fig].items()}
        for name, v in samples[fig].items():
            print('%-34s %-3s median %10s %-5s  %s' % (
                fig, name, compare.fmt(med[name]), unit,
                ' '.join(compare.fmt(x) for x in v)))
        print('%-34s B/A %.2f   B/qsd %.2f   A/qsd %.2f' % (
            fig, med['B'] / med['A'], med['B'] / med['qsd'],
            med['A'] / med['qsd']))
    print('load average %.2f' % os.getloadavg()[0])


if __name__ == '__main__':
    main()
