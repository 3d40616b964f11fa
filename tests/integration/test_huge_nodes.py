"""Nodes of sizes near and past what a node may have (issue 22 #3).

qemu-storage-daemon 7.2 refuses a node longer than BDRV_MAX_LENGTH
(INT64_MAX rounded down to 1 GiB) and qcow2 headers whose size its L1
checks refuse; blockjobd refuses them with the same words.  A legal disk
can still be far too large for a bitmap at a fine granularity (a 1 EiB
disk at 64 KiB: 2 TiB of bits); qsd aborts there, blockjobd refuses the
bitmap, the backup or the mirror with an error and keeps running
(docs/hardening.md, "Bitmaps sized by the disk").
"""

import struct

import pytest

from bjtest import QMPError, qemu_img

MAX_LENGTH = (1 << 63) - (1 << 30)
EIB = 1 << 60
TOO_LARGE = 'Could not refresh total sector count: File too large'


def refused(qmp, command, args, desc):
    with pytest.raises(QMPError) as e:
        qmp.execute(command, args)
    assert e.value.cls == 'GenericError'
    assert e.value.desc == desc


@pytest.mark.parametrize('size', [(1 << 63) - 1, MAX_LENGTH + 1])
def test_null_co_too_large(daemon, size):
    refused(daemon.qmp, 'blockdev-add',
            {'driver': 'null-co', 'node-name': 'n', 'size': size}, TOO_LARGE)
    assert daemon.qmp.execute('query-named-block-nodes') == []


def test_largest_node(daemon):
    daemon.qmp.execute('blockdev-add', {'driver': 'null-co', 'node-name': 'n',
                                        'size': MAX_LENGTH})
    daemon.qmp.execute('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                                        'file': 'n', 'offset': 512,
                                        'size': MAX_LENGTH - 512})
    sizes = {n['node-name']: n['image']['virtual-size']
             for n in daemon.qmp.execute('query-named-block-nodes')}
    assert sizes == {'n': MAX_LENGTH, 'r': MAX_LENGTH - 512}


def header_size(path, size):
    with open(path, 'r+b') as f:
        f.seek(24)
        f.write(struct.pack('>Q', size))


@pytest.mark.parametrize('cluster,size,desc', [
    (65536, 1 << 62, 'Image is too big'),
    (2 << 20, (1 << 63) - 1, 'L1 table is too small'),
    (2 << 20, (1 << 64) - 1, TOO_LARGE),
])
def test_qcow2_header_size(daemon, workdir, cluster, size, desc):
    path = str(workdir / 'h.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-o',
             'cluster_size=%d' % cluster, path, '1G')
    header_size(path, size)
    refused(daemon.qmp, 'blockdev-add',
            {'driver': 'qcow2', 'node-name': 'h',
             'file': {'driver': 'file', 'filename': path}}, desc)


def bits_error(what, node, size, gran):
    return ('%s %s: a bitmap of %d bytes at granularity %d would need %d '
            'bits (at most 4294967296): use a larger granularity'
            % (what, node, size, gran, size // gran))


def copy_refused(qmp, command, jid, device, what, gran=None):
    """command (blockdev-mirror or -backup, sync=full) of the EIB-sized
    device to node 't' is refused with bits_error(what) at gran (when given,
    the job's granularity; else 64 KiB), and no job is left behind."""
    args = {'job-id': jid, 'device': device, 'target': 't', 'sync': 'full'}
    if gran is not None:
        args['granularity'] = gran
    refused(qmp, command, args,
            bits_error(what, "'%s'" % device, EIB, gran or 65536))
    assert qmp.execute('query-block-jobs') == []


@pytest.mark.blockjobd_only('qsd aborts on a bitmap of 2 TiB')
def test_bitmap_on_1eib_qcow2(daemon, workdir):
    path = str(workdir / 'e.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', path,
             '1E')
    qmp = daemon.qmp
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'e',
                                 'file': {'driver': 'file',
                                          'filename': path}})
    refused(qmp, 'block-dirty-bitmap-add', {'node': 'e', 'name': 'b'},
            bits_error("Cannot create a dirty bitmap on node", "'e'", EIB,
                       65536))
    # 2^29 bits at 2 GiB granules: allowed, and usable.
    qmp.execute('block-dirty-bitmap-add', {'node': 'e', 'name': 'b',
                                           'granularity': 1 << 31})
    qmp.execute('blockdev-add', {'driver': 'null-co', 'node-name': 't',
                                 'size': EIB})
    copy_refused(qmp, 'blockdev-mirror', 'm', 'e',
                 "Cannot create a dirty bitmap on node")
    bms = qmp.execute('query-named-block-nodes')
    assert [b['name'] for n in bms if n['node-name'] == 'e'
            for b in n.get('dirty-bitmaps', [])] == ['b']


@pytest.mark.blockjobd_only('qsd aborts on a copy bitmap of 2 TiB')
def test_backup_of_1eib(daemon):
    qmp = daemon.qmp
    for n in ('s', 't'):
        qmp.execute('blockdev-add', {'driver': 'null-co', 'node-name': n,
                                     'size': EIB})
    copy_refused(qmp, 'blockdev-backup', 'b', 's',
                 "Cannot create the copy bitmap of node")
    # The node stays usable for a job it can hold.
    copy_refused(qmp, 'blockdev-mirror', 'm', 's',
                 "Cannot create a dirty bitmap on node", gran=1 << 26)
