"""What an image header may name as its backing file (issue 22 #8).

The header is data, not the user: opened as qsd 7.2 opens it, a qcow2
whose header names /etc/shadow (no format: probed as raw) exposes that
file over NBD, and one naming a FIFO hangs the daemon in open().
blockjobd refuses a header-named backing file that is not a regular file
or a block device, and one with no backing format in the header that is
not a qcow2 image.  What real users make keeps working: qemu-img chains
with -F (relative, through symlinks, raw with -F raw), and any backing the
user names in "backing" (docs/hardening.md).
"""

import os
import struct

import pytest

from bjtest import QMPError, qemu_img


def header_backing_without_format(path, name):
    """Writes a backing file name into path's header with no format, as
    images from before qemu 6.1 have it (qemu-img now insists on -F)."""
    raw = name.encode()
    with open(path, 'r+b') as f:
        f.seek(0x1000)
        f.write(raw)
        f.seek(8)
        f.write(struct.pack('>QI', 0x1000, len(raw)))


def overlay(workdir, name, backing=None, fmt=None):
    path = str(workdir / name)
    qemu_img('create', '-q', '-f', 'qcow2', path, '1M')
    if backing is not None:
        if fmt:
            qemu_img('rebase', '-q', '-u', '-f', 'qcow2', '-b', backing,
                     '-F', fmt, path)
        else:
            header_backing_without_format(path, backing)
    return path


def add(qmp, path, **extra):
    args = {'driver': 'qcow2', 'node-name': 'q',
            'file': {'driver': 'file', 'filename': path}}
    args.update(extra)
    return qmp.execute('blockdev-add', args)


def add_error(qmp, path):
    with pytest.raises(QMPError) as e:
        add(qmp, path)
    assert e.value.cls == 'GenericError'
    assert qmp.execute('query-named-block-nodes') == []
    return e.value.desc


def backing_depth(qmp):
    return [n['backing_file_depth'] for n in
            qmp.execute('query-named-block-nodes') if n['node-name'] == 'q']


@pytest.mark.blockjobd_only('qsd probes the file as raw and exposes it')
def test_host_file_without_format_refused(daemon, workdir):
    secret = str(workdir / 'secret')
    with open(secret, 'w') as f:
        f.write('root:$6$hash:19000:0:99999:7:::\n')
    img = overlay(workdir, 'top.qcow2', secret)
    assert add_error(daemon.qmp, img) == (
        "Could not open backing file: '%s', named by the header of '%s' "
        "without a backing format, is not a qcow2 image and would be probed "
        "as raw: refused (name it in \"backing\" with driver raw, or record "
        "its format with qemu-img rebase -u -F raw)" % (secret, img))
    # The user may still open it without, or name the file themselves.
    add(daemon.qmp, img, backing=None)
    daemon.qmp.execute('blockdev-del', node_name='q')
    add(daemon.qmp, img, backing={'driver': 'raw', 'file': {
        'driver': 'file', 'filename': secret}})
    assert backing_depth(daemon.qmp) == [1]


@pytest.mark.blockjobd_only('qsd opens /dev/zero, and hangs on a FIFO')
@pytest.mark.parametrize('kind', ['chardev', 'fifo'])
def test_special_files_refused(daemon, workdir, kind):
    if kind == 'chardev':
        target, what = '/dev/zero', 'a character device'
    else:
        target, what = str(workdir / 'fifo'), 'a FIFO'
        os.mkfifo(target)
    # Even with a format, and through a symlink.
    link = str(workdir / 'base.raw')
    os.symlink(target, link)
    img = overlay(workdir, 'top.qcow2', 'base.raw', 'raw')
    assert add_error(daemon.qmp, img) == (
        "Could not open backing file: '%s', named by the header of '%s', is "
        "%s: a backing file named by an image must be a regular file or a "
        "block device (name it in \"backing\" to use it anyway)"
        % (link, img, what))


@pytest.mark.parametrize('case', ['qcow2-no-format', 'qcow2-symlink',
                                  'raw-with-format', 'parent-dir'])
def test_real_chains_open(daemon, workdir, case):
    os.mkdir(str(workdir / 'sub'))
    qemu_img('create', '-q', '-f', 'qcow2', str(workdir / 'base.qcow2'),
             '1M')
    qemu_img('create', '-q', '-f', 'raw', str(workdir / 'base.raw'), '1M')
    os.symlink('base.qcow2', str(workdir / 'link.qcow2'))
    if case == 'qcow2-no-format':
        img = overlay(workdir, 'top.qcow2', 'base.qcow2')
    elif case == 'qcow2-symlink':
        img = overlay(workdir, 'top.qcow2', 'link.qcow2', 'qcow2')
    elif case == 'raw-with-format':
        img = overlay(workdir, 'top.qcow2', 'base.raw', 'raw')
    else:
        img = overlay(workdir, 'sub/top.qcow2', '../base.qcow2', 'qcow2')
    add(daemon.qmp, img)
    assert backing_depth(daemon.qmp) == [1]
