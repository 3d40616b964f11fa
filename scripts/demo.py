#!/usr/bin/python3
"""The blockjobd demo: start the daemon on an image, talk QMP, quit cleanly.

    scripts/demo.py [--bin PATH] [--keep]

Makes a small raw image with some data (qemu-img, qemu-io), starts blockjobd
with a QMP socket, shows the QMP conversation (query-version, blockdev-add of
a file node and a raw node on top, query-named-block-nodes drawn as a
graph), quits, checks that the daemon exited 0 and left the image intact
and unlocked.  Works the same with BLOCKJOBD_BIN=qemu-storage-daemon.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

from bjtest import QMPClient, QMPError  # noqa: E402

MiB = 1024 * 1024


def step(text):
    print('\n== %s' % text, flush=True)


def run(*cmd):
    print('$ %s' % ' '.join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    # qemu-io's timing lines differ from run to run: leave them out.
    out = '\n'.join(line for line in (p.stdout + p.stderr).splitlines()
                    if 'ops/sec' not in line).strip()
    if out:
        print('  ' + out.replace('\n', '\n  '))
    if p.returncode != 0:
        raise SystemExit('demo: %s failed with status %d'
                         % (cmd[0], p.returncode))
    return p


class Talk:
    """A QMP client that prints the conversation."""

    def __init__(self, client):
        self.c = client

    def __call__(self, command, **args):
        msg = {'execute': command}
        if args:
            msg['arguments'] = args
        print('-> %s' % json.dumps(msg), flush=True)
        reply = self.c.cmd_raw(msg)
        text = json.dumps(reply)
        print('<- %s' % (text if len(text) < 160 else text[:157] + '...'),
              flush=True)
        if 'error' in reply:
            raise QMPError(reply['error']['class'], reply['error']['desc'])
        return reply['return']


def human(n):
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if n < 1024 or unit == 'TiB':
            return '%g %s' % (n, unit)
        n /= 1024


def draw_graph(nodes, edges):
    """Prints nodes as a tree; edges maps parent -> [(role, child)]."""
    by_name = {n['node-name']: n for n in nodes}
    children = {c for kids in edges.values() for _, c in kids}

    def label(name):
        n = by_name.get(name, {})
        size = n.get('image', {}).get('virtual-size')
        parts = ['driver=%s' % n.get('drv', '?')]
        if size is not None:
            parts.append('size=%s' % human(size))
        parts.append('read-only' if n.get('ro') else 'read-write')
        if n.get('drv') == 'file':
            parts.append('filename=%s' % n.get('file'))
        return '%s (%s)' % (name, ', '.join(parts))

    def walk(name, prefix, role):
        print('%s%s%s' % (prefix, role and role + ': ' or '', label(name)))
        kids = edges.get(name, [])
        for i, (r, c) in enumerate(kids):
            last = i == len(kids) - 1
            walk(c, prefix.replace('└─ ', '   ').replace('├─ ', '│  ')
                 + ('└─ ' if last else '├─ '), r)

    for n in nodes:
        if n['node-name'] not in children:
            walk(n['node-name'], '  ', '')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.environ.get('BLOCKJOBD_BIN') or
                    os.path.join(REPO, 'build', 'src', 'daemon', 'blockjobd'))
    ap.add_argument('--keep', action='store_true',
                    help='keep the demo directory')
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix='blockjobd-demo.')
    img = os.path.join(work, 'demo.img')
    sock = os.path.join(work, 'qmp.sock')
    pidfile = os.path.join(work, 'blockjobd.pid')
    proc = None
    try:
        step('make a 64 MiB raw image with some data')
        run('qemu-img', 'create', '-q', '-f', 'raw', img, '64M')
        run('qemu-io', '-f', 'raw', '-c', 'write -P 0xab 0 1M',
            '-c', 'write -P 0xcd 8M 2M', img)

        step('start %s with a QMP socket' % os.path.basename(args.bin))
        cmd = [args.bin,
               '--chardev', 'socket,id=qmp0,path=%s,server=on,wait=off' % sock,
               '--monitor', 'chardev=qmp0', '--pidfile', pidfile]
        print('$ %s' % ' '.join(cmd), flush=True)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(pidfile):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit('demo: the daemon did not start (status %s)'
                                 % proc.poll())
            time.sleep(0.05)
        print('  running as pid %d (pidfile says %s)'
              % (proc.pid, open(pidfile).read().strip()))

        step('talk QMP')
        client = QMPClient(sock)
        print('<- %s' % json.dumps(client.greeting))
        qmp = Talk(client)
        qmp('qmp_capabilities')
        v = qmp('query-version')
        print('  %s, speaking the QMP interface of qemu '
              '%%(major)d.%%(minor)d.%%(micro)d' % v['package'] % v['qemu'])

        step('open the image: a file node and a raw format node on top')
        qmp('blockdev-add', **{'driver': 'file', 'node-name': 'demo-file',
                               'filename': img})
        qmp('blockdev-add', **{'driver': 'raw', 'node-name': 'demo',
                               'file': 'demo-file'})

        step('the node graph')
        nodes = qmp('query-named-block-nodes', flat=True)
        draw_graph(nodes, {'demo': [('file', 'demo-file')]})

        step('quit')
        qmp('quit')
        client.close()
        status = proc.wait(30)
        print('  daemon exited with status %d' % status)
        if status != 0:
            raise SystemExit('demo: the daemon exited with status %d' % status)
        for path in (sock, pidfile):
            if os.path.exists(path):
                raise SystemExit('demo: %s was left behind' % path)
        print('  QMP socket and pidfile removed')

        step('the image is closed and intact')
        run('qemu-io', '-f', 'raw', '-c', 'read -P 0xab 0 1M',
            '-c', 'read -P 0xcd 8M 2M', '-c', 'read -P 0 16M 1M', img)
        print('\ndemo: OK')
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if args.keep:
            print('demo files kept in %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
