"""The backing chain that the commit, stream and reopen tests run on.

    base.qcow2 <- mid.qcow2 <- top.qcow2       (backing names relative)

made by qemu-img and written by qemu-io, plus ref.raw: what top reads when
the chain is made.  A job on the chain must not change what top reads, so
check() compares top with ref.raw.

Each test module says which bytes each layer holds (qemu-io commands); the
defaults are the chain of test_commit.py and test_stream.py:
    base:  1 @ 0-24M, 4 @ 40-48M
    mid:   2 @ 8-32M, zeroes @ 44-46M
    top:   3 @ 20-28M
"""

import json
import os

import pytest

from bjtest import QMPError, place_node, qemu_img, qemu_io

MiB = 1 << 20

BASE_WRITES = ('write -P 1 0 24M', 'write -P 4 40M 8M')
MID_WRITES = ('write -P 2 8M 24M', 'write -z 44M 2M')
TOP_WRITES = ('write -P 3 20M 8M',)


def file_opts(path):
    return {'driver': 'file', 'filename': path}


class Chain:
    def __init__(self, d, size=64 * MiB, base=BASE_WRITES, mid=MID_WRITES,
                 top=TOP_WRITES):
        self.dir = str(d)
        self.base, self.mid, self.top, self.ref = (
            os.path.join(self.dir, n) for n in
            ('base.qcow2', 'mid.qcow2', 'top.qcow2', 'ref.raw'))
        qemu_img('create', '-q', '-f', 'qcow2', self.base, size)
        self._write(self.base, base)
        qemu_img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F',
                 'qcow2', self.mid)
        self._write(self.mid, mid)
        qemu_img('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F',
                 'qcow2', self.top)
        self._write(self.top, top)
        qemu_img('convert', '-O', 'raw', self.top, self.ref)

    @staticmethod
    def _write(path, commands):
        # An empty layer is left alone: qemu-io with no command would sit
        # in its interactive prompt.
        if commands:
            qemu_io(*[a for c in commands for a in ('-c', c)], path)

    # -- in the daemon ----------------------------------------------------

    def blockdev(self, top_opts=''):
        """A --blockdev option opening top (and its chain from the
        headers); top_opts: more dotted keys, ending with a comma."""
        return ['--blockdev', 'driver=qcow2,node-name=top,%sfile.driver=file,'
                'file.filename=%s' % (top_opts, self.top)]

    def add_top(self, qmp):
        """blockdev-add of top alone: the layers below open from the
        headers (read-only).  On the node_ctx 'iothread' variant the
        chain goes to the iothread (bjtest.place_node)."""
        qmp.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'top',
            'file': file_opts(self.top)})
        place_node(qmp, 'top')

    def add_all(self, qmp, mid_file=None):
        """blockdev-add of every layer, base first, so that base is
        writable; mid_file: the options of mid's file node instead of the
        plain file (a blkdebug over it)."""
        qmp.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'base',
            'file': file_opts(self.base)})
        qmp.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'mid', 'backing': 'base',
            'file': mid_file or file_opts(self.mid)})
        qmp.execute('blockdev-add', {
            'driver': 'qcow2', 'node-name': 'top', 'backing': 'mid',
            'file': file_opts(self.top)})
        # The whole chain (every node connected to top) moves at once.
        place_node(qmp, 'top')

    def add_all_failing_mid_reads(self, qmp, host_offset, once):
        """add_all() with a blkdebug under mid that fails reads (EIO) at
        host_offset in mid's file, once or always.  Pick an offset inside
        mid's data clusters (they follow the metadata), so that opening
        the image, which reads only metadata, does not trip it."""
        blkdebug = {'driver': 'blkdebug',
                    'inject-error': [{'event': 'read_aio', 'errno': 5,
                                      'sector': host_offset // 512,
                                      'once': once}],
                    'image': file_opts(self.mid)}
        try:
            self.add_all(qmp, mid_file=blkdebug)
        except QMPError as e:
            if 'blkdebug' in e.desc:
                pytest.skip('blkdebug driver not available: %s' % e.desc)
            raise

    @staticmethod
    def del_all(qmp):
        for n in ('top', 'mid', 'base'):
            qmp.execute('blockdev-del', node_name=n)

    # -- the images, as qemu-img sees them ----------------------------------

    def chain(self):
        """Filenames of top's chain, top first."""
        out = qemu_img('info', '-U', '--backing-chain', '--output=json',
                       self.top).stdout
        return [os.path.basename(i['filename']) for i in json.loads(out)]

    def backing_string(self):
        out = qemu_img('info', '-U', '--output=json', self.top).stdout
        return json.loads(out).get('backing-filename', '')

    def compare_ref(self, image):
        """image (a qcow2) reads what top read before any job."""
        qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', self.ref, image)

    def check(self):
        """Consistent images, and top reads what it read before."""
        for img in (self.top, self.mid, self.base):
            qemu_img('check', '-q', img)
        self.compare_ref(self.top)
