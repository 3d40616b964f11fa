#!/bin/sh
# Live storage migration benchmark: a 1 GiB raw disk (first half random
# data, second half a hole) mirrored (sync=full, to READY, then complete)
# over TCP on 127.0.0.1 into a remote export of an empty raw file.  Source
# and destination are the same daemon: blockjobd -> blockjobd and
# qemu-storage-daemon -> qemu-storage-daemon, alternating, ROUNDS rounds;
# medians of time to READY and to done, and the ratio.
#
#   bench/bench-migrate.sh [blockjobd-binary]  (default build/src/daemon/blockjobd)
# Env: BENCH_DIR (default: a temp dir under /var/tmp), ROUNDS (default 3),
# CONNS (blockjobd's x-connections, default 4: multi-conn, as our server
# advertises it; CONNS=1 measures what multi-conn buys), TLS=1 (x509 TLS
# between the daemons, certificates made with certtool in BENCH_DIR).
# Figures mean something only on a quiet machine (load < 1.5).
set -eu
BJ=${1:-build/src/daemon/blockjobd}
BJ=$(readlink -f "$BJ")
DIR=${BENCH_DIR:-$(mktemp -d /var/tmp/bench-migrate.XXXXXX)}
export BJ DIR ROUNDS=${ROUNDS:-3} CONNS=${CONNS:-4} TLS=${TLS:-0}
export PYTHONPATH="$(cd "$(dirname "$0")/../tests/integration" && pwd)"
trap 'rm -rf "$DIR"' EXIT
/usr/bin/python3 - <<'PY'
import os, statistics, subprocess, sys, time

import bjtest
from remote import free_port

BJ, DIR = os.environ['BJ'], os.environ['DIR']
ROUNDS = int(os.environ['ROUNDS'])
CONNS = int(os.environ['CONNS'])
TLS = os.environ['TLS'] == '1'
SERVER_TLS, CLIENT_TLS, NODE_TLS = [], [], {}
if TLS:
    import tlscerts
    ca = tlscerts.CA(DIR, 'bench')
    SERVER_TLS = ['--object', 'tls-creds-x509,id=t0,endpoint=server,dir=%s'
                  % tlscerts.make_x509_dir(DIR, 'server', ca)]
    CLIENT_TLS = ['--object', 'tls-creds-x509,id=t0,endpoint=client,dir=%s'
                  % tlscerts.make_x509_dir(DIR, 'client', ca, server=False)]
    NODE_TLS = {'tls-creds': 't0'}
GiB = 1 << 30
SRC = os.path.join(DIR, 'src.raw')

with open(SRC, 'wb') as f:
    f.truncate(GiB)
    chunk = os.urandom(4 << 20)
    for i in range(128):                    # 512 MiB of random data
        f.write(chunk[i % 7:] + chunk[:i % 7])

def daemon(binary, args):
    d = bjtest.Daemon(DIR, args, binary=binary, monitors=1, timeout=60)
    d.start()
    return d

def stop(d):
    try:
        d.stop()
    finally:
        d.cleanup()

def migrate_once(binary, tag):
    dst = os.path.join(DIR, 'dst-%s.raw' % tag)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'raw', dst, str(GiB)],
                   check=True)
    port = str(free_port())
    dest = daemon(binary, SERVER_TLS + [
        '--blockdev', 'driver=file,node-name=df,filename=%s' % dst,
        '--blockdev', 'driver=raw,node-name=disk,file=df',
        '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=%s%s'
        % (port, ',tls-creds=t0' if TLS else ''),
        '--export', 'type=nbd,id=x,node-name=disk,name=disk,writable=on'])
    src = daemon(binary, CLIENT_TLS + [
        '--blockdev', 'driver=file,node-name=sf,filename=%s' % SRC,
        '--blockdev', 'driver=raw,node-name=disk,file=sf'])
    try:
        opts = {'driver': 'nbd', 'node-name': 'remote', 'export': 'disk',
                'discard': 'unmap',
                'server': {'type': 'inet', 'host': '127.0.0.1',
                           'port': port}, **NODE_TLS}
        if tag == 'blockjobd':
            opts['x-connections'] = CONNS
        src.qmp.execute('blockdev-add', opts)
        t0 = time.monotonic()
        src.qmp.execute('blockdev-mirror', {'job-id': 'm', 'device': 'disk',
                                            'target': 'remote',
                                            'sync': 'full'})
        src.qmp.wait_event('BLOCK_JOB_READY', timeout=3600)
        t_ready = time.monotonic() - t0
        src.qmp.execute('block-job-complete', device='m')
        ev = src.qmp.wait_event('BLOCK_JOB_COMPLETED', timeout=3600)
        t_done = time.monotonic() - t0
        if 'error' in ev['data']:
            sys.exit('%s: %s' % (tag, ev['data']['error']))
    finally:
        stop(src)
        stop(dest)
    r = subprocess.run(['qemu-img', 'compare', '-q', '-f', 'raw', '-F', 'raw',
                        SRC, dst])
    os.unlink(dst)
    if r.returncode:
        sys.exit('%s: destination differs from source' % tag)
    return t_ready, t_done

qsd = subprocess.run(['which', 'qemu-storage-daemon'], capture_output=True,
                     text=True).stdout.strip()
res = {'blockjobd': [], 'qsd': []}
for rnd in range(ROUNDS):
    order = (('blockjobd', BJ), ('qsd', qsd))
    if rnd % 2:
        order = order[::-1]
    for tag, b in order:
        res[tag].append(migrate_once(b, tag))
print('migrate 1 GiB (512 MiB data + 512 MiB hole) over TCP loopback, '
      'median of %d; blockjobd x-connections=%d%s' % (
          ROUNDS, CONNS, '; x509 TLS' if TLS else ''))
print('%-10s %9s %9s' % ('daemon', 'ready s', 'done s'))
med = {}
for tag in ('blockjobd', 'qsd'):
    med[tag] = (statistics.median(r[0] for r in res[tag]),
                statistics.median(r[1] for r in res[tag]))
    print('%-10s %9.2f %9.2f' % (tag, med[tag][0], med[tag][1]))
print('ratio blockjobd/qsd: ready %.2f, done %.2f' % (
    med['blockjobd'][0] / med['qsd'][0], med['blockjobd'][1] / med['qsd'][1]))
PY
