"""driver=nbd: remote NBD exports (qemu-nbd, nbdkit, qemu-storage-daemon,
another blockjobd) opened as nodes: data round-trips, block status,
block-size constraints, use as job target, backing file and export, and
qsd's errors for bad options."""

import os

import pytest

from bjtest import (QMPError, blockdev_add_error, nbd_export, qemu_img,
                    qemu_io, wait_until)
from remote import nbd_opts

MiB = 1 << 20


def raw_image(workdir, name, size='16M', writes=()):
    path = os.path.join(str(workdir), name)
    qemu_img('create', '-q', '-f', 'raw', path, size)
    for w in writes:
        qemu_io('-f', 'raw', '-c', w, path)
    return path


def test_unix_read_write_roundtrip(daemon, remote, workdir):
    img = raw_image(workdir, 'r.raw', writes=['write -P 0x11 0 1M'])
    r = remote.qemu_nbd(img)
    qmp = daemon.qmp
    qmp.execute('blockdev-add', nbd_opts('n', r))
    sock = nbd_export(daemon, 'n')
    uri = 'nbd+unix:///n?socket=%s' % sock
    qemu_io('-f', 'raw', '-c', 'read -P 0x11 0 1M', '-c', 'read -P 0 1M 15M',
            '-c', 'write -P 0x22 2M 3M', '-c', 'write -z 4M 64k',
            '-c', 'discard 8M 1M', '-c', 'flush', uri)
    qemu_io('-f', 'raw', '-c', 'read -P 0x22 2M 2M', '-c',
            'read -P 0 4M 64k', '-c', 'read -P 0x22 4160k 960k', uri)
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    qmp.execute('blockdev-del', node_name='n')
    ref = raw_image(workdir, 'ref.raw', writes=[
        'write -P 0x11 0 1M', 'write -P 0x22 2M 3M', 'write -z 4M 64k'])
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', ref, img)
