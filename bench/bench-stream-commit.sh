#!/bin/bash
# block-stream and intermediate block-commit on a 1 GiB qcow2 chain,
# blockjobd beside qemu-storage-daemon 7.2 on identical fresh chains in one
# run: wall time from the command to BLOCK_JOB_COMPLETED, the daemon's peak
# RSS (VmHWM), and blockjobd's time as a fraction of qsd's (goal <= 0.6).
#
#   bench/bench-stream-commit.sh [BUILD_DIR]      (default: build)
#
# Chain (1 GiB virtual, 64 KiB clusters):
#   base: 512 MiB of data (0-512M)
#   mid:  512 MiB of data (256M-768M)      streamed up / committed down
#   top:  16 MiB of data  (900M-916M)
# Environment: BENCH_DIR parent dir [/var/tmp], BENCH_RUNS per daemon [2]
# (the best run counts).  The page cache is not dropped: both daemons see
# the same warm-ish cache, and images are recreated for every run.
set -euo pipefail

build=${1:-build}
bj=$build/src/daemon/blockjobd
qsd=$(command -v qemu-storage-daemon || true)
runs=${BENCH_RUNS:-2}
py=/usr/bin/python3

[ -x "$bj" ] || { echo "bench-stream-commit.sh: $bj not built" >&2; exit 1; }
[ -n "$qsd" ] || { echo "bench-stream-commit.sh: qemu-storage-daemon not installed" >&2; exit 1; }

dir=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bj-bench-job.XXXXXX")
trap 'rm -rf "$dir"' EXIT

make_chain() {
    rm -f "$dir"/*.qcow2
    qemu-img create -q -f qcow2 "$dir/base.qcow2" 1G
    qemu-io -c 'write -P 1 0 512M' "$dir/base.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$dir/mid.qcow2"
    qemu-io -c 'write -P 2 256M 512M' "$dir/mid.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$dir/top.qcow2"
    qemu-io -c 'write -P 3 900M 16M' "$dir/top.qcow2" >/dev/null
    sync
}

# run_job DAEMON JOB -> "seconds peak_rss_kib"
run_job() {
    "$py" - "$1" "$2" "$dir" <<'PY'
import json, os, socket, subprocess, sys, time
binary, job, d = sys.argv[1:4]
sock = os.path.join(d, 'qmp.sock')
if os.path.exists(sock):
    os.unlink(sock)
p = subprocess.Popen([binary, '--chardev',
                      'socket,id=c,path=%s,server=on,wait=off' % sock,
                      '--monitor', 'chardev=c'],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(500):
    if os.path.exists(sock):
        break
    time.sleep(0.01)
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
f = s.makefile('rw')
f.readline()
def cmd(name, args=None):
    f.write(json.dumps({'execute': name, 'arguments': args or {}}) + '\n')
    f.flush()
    while True:
        r = json.loads(f.readline())
        if 'event' in r:
            events.append(r)
            continue
        if 'error' in r:
            sys.exit('%s: %s' % (name, r['error']['desc']))
        return r['return']
events = []
cmd('qmp_capabilities')
def add(name, backing=None):
    o = {'driver': 'qcow2', 'node-name': name,
         'file': {'driver': 'file', 'filename': os.path.join(d, name + '.qcow2')}}
    if backing:
        o['backing'] = backing
    cmd('blockdev-add', o)
if job == 'stream':
    add('top')
    t0 = time.monotonic()
    cmd('block-stream', {'job-id': 'j', 'device': 'top'})
else:
    add('base'); add('mid', 'base'); add('top', 'mid')
    t0 = time.monotonic()
    cmd('block-commit', {'job-id': 'j', 'device': 'top', 'top-node': 'mid',
                         'base-node': 'base'})
while not any(e['event'] == 'BLOCK_JOB_COMPLETED' for e in events):
    events.append(json.loads(f.readline()))
t = time.monotonic() - t0
err = [e for e in events if e['event'] == 'BLOCK_JOB_COMPLETED'][0]['data'].get('error')
if err:
    sys.exit('job failed: %s' % err)
rss = 0
with open('/proc/%d/status' % p.pid) as st:
    for line in st:
        if line.startswith('VmHWM:'):
            rss = int(line.split()[1])
cmd('quit')
p.wait(60)
print('%.3f %d' % (t, rss))
PY
}

best() {  # best DAEMON JOB -> "seconds rss" of the fastest run
    local b="" out
    for _ in $(seq "$runs"); do
        make_chain
        out=$(run_job "$1" "$2")
        if [ -z "$b" ] || awk -v a="${out%% *}" -v c="${b%% *}" 'BEGIN{exit !(a<c)}'; then
            b=$out
        fi
    done
    echo "$b"
}

printf '%-8s %-22s %9s %12s\n' job daemon seconds peak_rss_MiB
for job in stream commit; do
    read -r tq rq <<<"$(best "$qsd" "$job")"
    read -r tb rb <<<"$(best "$bj" "$job")"
    printf '%-8s %-22s %9.3f %12.1f\n' "$job" qemu-storage-daemon "$tq" "$(echo "$rq/1024" | bc -l)"
    printf '%-8s %-22s %9.3f %12.1f\n' "$job" blockjobd "$tb" "$(echo "$rb/1024" | bc -l)"
    printf '%-8s %-22s %9.2f   (goal <= 0.60)\n' "$job" "ratio bj/qsd" "$(echo "$tb/$tq" | bc -l)"
done
