"""The images and steps that the backup and mirror tests share, and the
auto/manual modes of any job (in_mode, finish).

Source (64 MiB raw): pattern 1 @ 0-8M, 2 @ 16-20M, zeroes written @
24-25M, the rest a hole.  Target: an empty qcow2 of the same size made
with qemu-img create.  Both are added as nodes "src" and "tgt".
"""

import os
import shutil

from bjtest import place_node, qemu_img, qemu_io

MiB = 1 << 20
SIZE = 64 * MiB


SRC_WRITES = ('write -P 1 0 8M', 'write -P 2 16M 4M', 'write -z 24M 1M')


class Images:
    def __init__(self, d, keep_ref=False, src_writes=SRC_WRITES):
        """keep_ref: also copy the source to ref.raw before any job, for a
        job whose source changes while it copies (backup); src_writes: the
        qemu-io commands that fill the source."""
        self.dir = str(d)
        self.src = os.path.join(self.dir, 'src.raw')
        self.tgt = os.path.join(self.dir, 'tgt.qcow2')
        self.ref = os.path.join(self.dir, 'ref.raw')
        qemu_img('create', '-q', '-f', 'raw', self.src, SIZE)
        qemu_io('-f', 'raw', *[a for c in src_writes for a in ('-c', c)],
                self.src)
        qemu_img('create', '-q', '-f', 'qcow2', self.tgt, SIZE)
        if keep_ref:
            shutil.copyfile(self.src, self.ref)

    def add(self, qmp, src_file=None, tgt_file=None):
        """blockdev-add of src and tgt; src_file, tgt_file: the options of
        their file nodes instead of the plain files (a blkdebug).  On the
        node_ctx 'iothread' variant src goes to the iothread and tgt stays
        in the main loop: the job moves it to the source's context."""
        qmp.execute('blockdev-add', {
            'driver': 'raw', 'node-name': 'src',
            'file': src_file or {'driver': 'file', 'filename': self.src}})
        place_node(qmp, 'src')
        qmp.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'tgt',
            'file': tgt_file or {'driver': 'file', 'filename': self.tgt}})

    def compare(self):
        """The target holds what the source holds now."""
        qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', self.src,
                 self.tgt)

    def compare_ref(self):
        """The target holds the source as it was before the job."""
        qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', self.ref,
                 self.tgt)

    def check(self):
        qemu_img('check', '-q', self.tgt)


def in_mode(mode, args):
    """args for a job's command in mode: 'auto', as they are; 'manual',
    with auto-finalize and auto-dismiss off, so that the job waits for
    job-finalize and job-dismiss (see finish)."""
    if mode == 'manual':
        args.update({'auto-finalize': False, 'auto-dismiss': False})
    return args


def start(qmp, command, mode, jid, **extra):
    """blockdev-backup or blockdev-mirror of src to tgt, sync=full; mode
    'manual': the job waits for job-finalize and job-dismiss."""
    args = in_mode(mode, {'job-id': jid, 'device': 'src', 'target': 'tgt',
                          'sync': 'full'})
    args.update(extra)
    qmp.execute(command, args)


def finish(qmp, rec, mode, cancelled=False, verbs='job'):
    """Takes a job begun in mode (in_mode) to its end (null); verbs: the
    commands' prefix, 'job' (job-finalize, job-dismiss) or 'block-job'."""
    if mode == 'manual':
        if not cancelled:
            rec.wait('BLOCK_JOB_PENDING')
            qmp.execute(verbs + '-finalize', id=rec.job_id)
        rec.wait_status('concluded')
        qmp.execute(verbs + '-dismiss', id=rec.job_id)
    rec.wait_status('null')


def node_names(qmp):
    return sorted(n['node-name'] for n in
                  qmp.execute('query-named-block-nodes', flat=True))
