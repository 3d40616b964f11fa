#!/usr/bin/python3
"""The block jobs demo: a live backup and a live mirror under a writer.

    scripts/demo-jobs.py [--bin PATH] [--bjctl PATH] [--keep]

Makes a 64 MiB qcow2 disk with data, starts blockjobd exporting it over
NBD, starts a writer that keeps writing to it over NBD (it keeps a model
of what the disk must hold), then with bjctl:

  - a live backup (--wait --verbose): the backup must equal the disk as it
    was when the backup started, although the writer went on writing;
  - a live mirror (--wait --verbose, until READY), then `bjctl abort
    --pivot` to complete it: the NBD export now writes to the copy, which
    must equal the disk;

and checks both with qemu-img compare, prints a summary and cleans up.
Works the same with BLOCKJOBD_BIN=qemu-storage-daemon.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import nbd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'tests', 'integration'))

from bjtest import QMPClient  # noqa: E402

MiB = 1024 * 1024
SIZE = 64 * MiB
BLOCK = 64 * 1024


def step(text):
    print('\n== %s' % text, flush=True)


def run(*cmd, env=None):
    print('$ %s' % ' '.join(os.path.basename(c) if i == 0 else c
                            for i, c in enumerate(cmd)), flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True,
                       env=env)
    out = '\n'.join(line for line in p.stdout.splitlines()
                    if 'ops/sec' not in line).strip()
    if out:
        print('  ' + out.replace('\n', '\n  '), flush=True)
    if p.returncode != 0:
        raise SystemExit('demo: %s failed with status %d'
                         % (os.path.basename(cmd[0]), p.returncode))
    return p


class Writer(threading.Thread):
    """Writes random 64 KiB blocks over NBD, one every few milliseconds,
    and keeps `model`, what the disk must hold once a write is acked."""

    def __init__(self, sock, model):
        super().__init__(daemon=True)
        self.h = nbd.NBD()
        self.h.set_export_name('disk')
        self.h.connect_unix(sock)
        self.model = model
        self.lock = threading.Lock()      # held while a write is in flight
        self.stop = threading.Event()
        self.writes = 0
        self.error = None
        self.rng = random.Random(7)

    def run(self):
        try:
            while not self.stop.is_set():
                off = self.rng.randrange(SIZE // BLOCK) * BLOCK
                data = bytes([self.rng.randrange(1, 256)]) * BLOCK
                with self.lock:
                    self.h.pwrite(data, off)
                    self.model[off:off + BLOCK] = data
                    self.writes += 1
                time.sleep(0.01)
        except Exception as e:  # reported by the main thread
            self.error = e

    def snapshot(self):
        """The disk's content now: taken between two writes."""
        with self.lock:
            return bytes(self.model)

    def finish(self):
        self.stop.set()
        self.join(30)
        if self.error:
            raise SystemExit('demo: the NBD writer failed: %s' % self.error)
        self.h.flush()

    def read_all(self):
        return b''.join(self.h.pread(4 * MiB, off)
                        for off in range(0, SIZE, 4 * MiB))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default=os.environ.get('BLOCKJOBD_BIN') or
                    os.path.join(REPO, 'build', 'src', 'daemon', 'blockjobd'))
    ap.add_argument('--bjctl', default=os.environ.get('BJCTL_BIN') or
                    os.path.join(REPO, 'build', 'src', 'ctl', 'bjctl'))
    ap.add_argument('--keep', action='store_true',
                    help='keep the demo directory')
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix='blockjobd-jobs.')
    disk = os.path.join(work, 'disk.qcow2')
    backup = os.path.join(work, 'backup.qcow2')
    copy = os.path.join(work, 'copy.qcow2')
    sock = os.path.join(work, 'qmp.sock')
    nbd_sock = os.path.join(work, 'nbd.sock')
    env = dict(os.environ, BJCTL_SOCKET=sock)
    proc = writer = None
    try:
        step('a 64 MiB qcow2 disk with data, and two empty images')
        run('qemu-img', 'create', '-q', '-f', 'qcow2', disk, '64M')
        run('qemu-io', '-c', 'write -P 0xab 0 16M', '-c',
            'write -P 0xcd 32M 16M', disk)
        for img in (backup, copy):
            run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '64M')
        model = bytearray(SIZE)
        model[0:16 * MiB] = b'\xab' * (16 * MiB)
        model[32 * MiB:48 * MiB] = b'\xcd' * (16 * MiB)

        step('start %s exporting the disk over NBD'
             % os.path.basename(args.bin))
        cmd = [args.bin,
               '--blockdev', 'driver=qcow2,node-name=disk,file.driver=file,'
               'file.filename=%s' % disk,
               '--nbd-server', 'addr.type=unix,addr.path=%s' % nbd_sock,
               '--export', 'type=nbd,id=exp0,node-name=disk,name=disk,'
               'writable=on',
               '--chardev', 'socket,id=qmp0,path=%s,server=on,wait=off' % sock,
               '--monitor', 'chardev=qmp0']
        print('$ %s' % ' '.join([os.path.basename(cmd[0])] + cmd[1:]))
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit('demo: the daemon did not start (status %s)'
                                 % proc.poll())
            time.sleep(0.05)

        step('add the backup and copy images as nodes (QMP)')
        with QMPClient(sock, negotiate=True) as c:
            for name, path in (('backup', backup), ('copy', copy)):
                msg = {'execute': 'blockdev-add', 'arguments': {
                    'driver': 'qcow2', 'node-name': name,
                    'file': {'driver': 'file', 'filename': path}}}
                print('-> %s' % json.dumps(msg))
                reply = c.cmd_raw(msg)
                print('<- %s' % json.dumps(reply))
                if 'error' in reply:
                    raise SystemExit('demo: blockdev-add failed')
        run(args.bjctl, 'nodes', env=env)

        step('a writer keeps writing 64 KiB blocks to the disk over NBD')
        writer = Writer(nbd_sock, model)
        writer.start()
        time.sleep(0.3)
        print('  %d writes so far' % writer.writes)

        step('live backup: the disk as it is now, while the writer goes on')
        # Hold the writer for the instant the backup starts, so the model
        # knows the point in time the backup must equal.
        with writer.lock:
            at_start = bytes(writer.model)
            writes_at_start = writer.writes
            print('$ bjctl backup disk --to backup --speed 32M --wait '
                  '--verbose', flush=True)
            p = subprocess.Popen([args.bjctl, 'backup', 'disk', '--to',
                                  'backup', '--speed', '32M', '--wait',
                                  '--verbose'], env=env,
                                 stderr=subprocess.PIPE, text=True)
            # --verbose shows progress once the job runs: then release (a
            # second client may not be possible: qemu-storage-daemon serves
            # one per monitor, and bjctl holds it while it waits)
            first = p.stderr.readline()
        sys.stdout.write(first)
        for line in p.stderr:
            sys.stdout.write(line)
            sys.stdout.flush()
        if p.wait(120) != 0:
            raise SystemExit('demo: the backup failed')
        during_backup = writer.writes - writes_at_start
        print('  the writer wrote %d blocks during the backup' % during_backup)

        step('live mirror: copy the disk, keep the copy in sync, then pivot')
        run(args.bjctl, 'mirror', 'disk', '--to', 'copy', '--speed', '32M',
            '--wait', '--verbose', env=env)
        run(args.bjctl, 'list', env=env)
        run(args.bjctl, 'abort', 'mirror-disk', '--pivot', env=env)
        time.sleep(0.3)        # the writer now writes to the copy
        print('  %d writes in all' % writer.writes)

        step('stop the writer; check what NBD reads back')
        writer.finish()
        final = writer.snapshot()
        if writer.read_all() != final:
            raise SystemExit('demo: the export does not read back what was '
                             'written')
        print('  the export holds every acknowledged write')
        writer.h.shutdown()

        step('quit the daemon')
        with QMPClient(sock, negotiate=True) as c:
            c.execute('quit')
        status = proc.wait(30)
        print('  daemon exited with status %d' % status)
        if status != 0:
            raise SystemExit('demo: the daemon exited with status %d' % status)

        step('verify with qemu-img compare')
        ref_start = os.path.join(work, 'at-backup-start.raw')
        ref_final = os.path.join(work, 'final.raw')
        with open(ref_start, 'wb') as f:
            f.write(at_start)
        with open(ref_final, 'wb') as f:
            f.write(final)
        run('qemu-img', 'compare', '-f', 'raw', '-F', 'qcow2', ref_start,
            backup)
        run('qemu-img', 'compare', '-f', 'raw', '-F', 'qcow2', ref_final, copy)
        run('qemu-img', 'check', '-q', copy)
        run('qemu-img', 'check', '-q', backup)

        print('\nsummary:')
        print('  backup  = the disk when the backup started (%d writes came '
              'during it)' % during_backup)
        print('  mirror  = the disk at the end, pivoted live under %d writes'
              % writer.writes)
        print('\ndemo jobs: OK')
        return 0
    finally:
        if writer is not None and writer.is_alive():
            writer.stop.set()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if args.keep:
            print('demo files kept in %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
