#!/bin/bash
# Dirty bitmap memory, blockjobd beside qemu-storage-daemon 7.2 in one run.
#
#   bench/bench-bitmap.sh [BUILD_DIR]      (default: build)
#
# Each daemon opens a 1 TiB null-co node; the figure is the RSS growth
# (VmRSS, KiB) after block-dirty-bitmap-add at 64 KiB granularity (16 Mi
# granules: 2 MiB of bits if every page were touched).  The bitmap is
# empty, as on a sparse disk nobody wrote yet; both daemons leave the
# untouched zero pages of the bit array unmapped, so only the summary
# levels and bookkeeping show.
#
# Recorded 2026-11-21 (2-core machine): blockjobd +100 KiB, qsd +24 KiB.
set -euo pipefail

build=${1:-build}
bj=$build/src/daemon/blockjobd
qsd=$(command -v qemu-storage-daemon || true)
[ -x "$bj" ] || { echo "bench-bitmap.sh: $bj not built" >&2; exit 1; }
[ -n "$qsd" ] || { echo "bench-bitmap.sh: qemu-storage-daemon not installed" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bj-bench-bitmap.XXXXXX")
trap 'rm -rf "$dir"' EXIT

/usr/bin/python3 - "$bj" "$qsd" "$dir" <<'PY'
import json, os, socket, subprocess, sys, time

def rss(pid):
    for line in open('/proc/%d/status' % pid):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])

def qmp(sock, cmd, **args):
    f = sock.makefile('rw')
    f.write(json.dumps({'execute': cmd, 'arguments': args}) + '\n')
    f.flush()
    while True:
        r = json.loads(f.readline())
        if 'return' in r or 'error' in r:
            return r

def measure(binary, d, tag):
    path = os.path.join(d, tag + '.sock')
    p = subprocess.Popen([binary, '--blockdev',
                          'driver=null-co,node-name=n,size=1099511627776',
                          '--chardev', 'socket,id=m,path=%s,server=on,wait=off'
                          % path, '--monitor', 'chardev=m'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            if os.path.exists(path):
                break
            time.sleep(0.01)
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        f = s.makefile('r')
        f.readline()
        qmp(s, 'qmp_capabilities')
        time.sleep(0.2)
        before = rss(p.pid)
        r = qmp(s, 'block-dirty-bitmap-add', node='n', name='b',
                granularity=65536)
        assert 'return' in r, r
        time.sleep(0.2)
        after = rss(p.pid)
        qmp(s, 'quit')
        p.wait(10)
        return before, after
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()

res = {}
for tag, b in (('blockjobd', sys.argv[1]), ('qsd', sys.argv[2])):
    before, after = measure(b, sys.argv[3], tag)
    res[tag] = after - before
    print('%-10s RSS before %7d KiB  after add %7d KiB  delta %6d KiB'
          % (tag, before, after, after - before))
print('ratio blockjobd/qsd (delta): %.2f'
      % (res['blockjobd'] / max(res['qsd'], 1)))
PY
