"""qcow2 metadata-overlap protection and corruption marking.

Images crafted by hostile_images.py point a guest cluster at a metadata
structure (or a table at an impossible place).  A guest write there over
NBD must fail with EIO and leave the metadata untouched; the image is then
marked corrupt (header incompatible bit 1), BLOCK_IMAGE_CORRUPTED is sent,
the line qemu prints is on stderr, further writes are refused and the
image cannot be opened read-write again.  Also the `overlap-check` option:
its templates (default `cached`) and its errors.

Expectations were taken from qemu-storage-daemon 7.2; the file runs
unchanged against it (BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)).
"""

import os

import pytest

import bjtest
import hostile_images as hi
from bjtest import QMPError, qemu_img

nbd = pytest.importorskip('nbd')

CORRUPT_RW = 'qcow2: Image is corrupt; cannot be opened read/write'


def qcow2_opts(path, name='q', **extra):
    opts = {'driver': 'qcow2', 'node-name': name,
            'file': {'driver': 'file', 'filename': path}}
    opts.update(extra)
    return opts


def is_eio(err):
    return err.errno in ('EIO', 5)


def write_refused_as_corrupt(daemon, h, offset):
    """A 4 KiB write at offset through h fails with EIO and the image is
    reported corrupt: returns the BLOCK_IMAGE_CORRUPTED event."""
    with pytest.raises(nbd.Error) as e:
        h.pwrite(b'\x5a' * 4096, offset)
    assert is_eio(e.value), e.value
    return daemon.qmp.wait_event('BLOCK_IMAGE_CORRUPTED')


def overlap_msg(name):
    return 'Preventing invalid write on metadata (overlaps with %s)' % name


def stderr_line(msg):
    return ('qcow2: Marking image as corrupt: %s; further corruption events '
            'will be suppressed\n' % msg)


def expect_corrupt_reopen(daemon, path):
    """The image is marked corrupt: read-write refused, read-only fine."""
    assert hi.corrupt_bit(path)
    with pytest.raises(QMPError) as e:
        daemon.qmp.execute('blockdev-add', qcow2_opts(path))
    assert e.value.desc == CORRUPT_RW
    daemon.qmp.execute('blockdev-add', qcow2_opts(path, **{'read-only': True}))
    daemon.qmp.execute('blockdev-del', node_name='q')
    r = qemu_img('info', '--output=json', path)
    assert '"corrupt": true' in r.stdout


# kind, open options, what the write runs into
OVERLAPS = [
    ('l2-self', {}),
    ('l2-active-l1', {}),
    ('l2-refcount-table', {}),
    ('l2-refcount-block', {}),
    ('l2-snapshot-table', {}),
    ('l2-inactive-l1', {}),
    ('l2-inactive-l2', {'overlap-check': 'all'}),
    ('l2-bitmap-directory', {}),
]


@pytest.mark.parametrize('kind,opts', OVERLAPS,
                         ids=[k for k, _ in OVERLAPS])
def test_write_onto_metadata(daemon, workdir, sockdir, kind, opts):
    case = hi.make(kind, str(workdir / 'x.qcow2'))
    daemon.qmp.execute('blockdev-add', qcow2_opts(case.path, **opts))
    if case.reaim:
        case.reaim()
    before = hi.read_meta(case)
    h = bjtest.nbd_export_open(daemon, sockdir)

    ev = write_refused_as_corrupt(daemon, h, case.guest_offset)
    msg = overlap_msg(case.ol_name)
    assert ev['data'] == {'device': '', 'node-name': 'q', 'msg': msg,
                          'offset': case.meta_offset, 'size': 4096,
                          'fatal': True}
    # The session writes no more, anywhere (qsd: EINVAL, we: EIO).
    with pytest.raises(nbd.Error):
        h.pwrite(b'\x5a' * 4096, 8 << 20)
    bjtest.nbd_export_close(daemon, h)

    assert hi.read_meta(case) == before
    assert stderr_line(msg) in daemon.stderr()
    # One report per session.
    assert daemon.stderr().count('qcow2: Marking image as corrupt') == 1
    assert daemon.qmp.get_events('BLOCK_IMAGE_CORRUPTED') == []
    expect_corrupt_reopen(daemon, case.path)


def test_allocation_onto_metadata(daemon, workdir, sockdir, qsd):
    """Damaged refcounts call the L1 table's cluster free: the write that
    would allocate it is refused."""
    case = hi.make('refcount-l1-free', str(workdir / 'x.qcow2'))
    daemon.qmp.execute('blockdev-add', qcow2_opts(case.path))
    before = hi.read_meta(case)
    h = bjtest.nbd_export_open(daemon, sockdir)
    ev = write_refused_as_corrupt(daemon, h, case.guest_offset)
    msg = overlap_msg('active L1 table')
    # qsd checks the guest data's part of the new cluster as it writes it;
    # blockjobd checks the whole cluster as it allocates it, before the
    # refcount changes.
    size = 4096 if qsd else hi.CLUSTER
    assert ev['data'] == {'device': '', 'node-name': 'q', 'msg': msg,
                          'offset': case.meta_offset, 'size': size,
                          'fatal': True}
    bjtest.nbd_export_close(daemon, h)
    assert hi.read_meta(case) == before
    assert stderr_line(msg) in daemon.stderr()
    expect_corrupt_reopen(daemon, case.path)


def test_discard_then_allocate(daemon, workdir, sockdir, qsd):
    """A trim of the guest cluster that claims the L1 table drops the L1
    table's refcount to 0; the next allocation must not take it."""
    case = hi.make('l2-active-l1', str(workdir / 'x.qcow2'))
    daemon.qmp.execute('blockdev-add', qcow2_opts(
        case.path, discard='unmap',
        file={'driver': 'file', 'filename': case.path, 'discard': 'unmap'}))
    before = hi.read_meta(case)
    h = bjtest.nbd_export_open(daemon, sockdir)
    h.trim(hi.CLUSTER, case.guest_offset)
    h.flush()
    ev = write_refused_as_corrupt(daemon, h, 16 << 20)
    assert ev['data']['msg'] == overlap_msg('active L1 table')
    assert ev['data']['offset'] == case.meta_offset
    bjtest.nbd_export_close(daemon, h)
    # qsd 7.2 also passes the discard of the freed cluster down to the
    # file, punching a hole in the L1 table; blockjobd keeps it.
    assert (hi.read_meta(case) == before) != qsd
    expect_corrupt_reopen(daemon, case.path)


# Tables pointing into the header cluster: the offsets are unaligned (an
# aligned one would be 0, "unallocated"), which qemu reports as such.
UNALIGNED = [
    ('l2-header', 'w', 'Data cluster offset 0x200 unaligned (guest offset: '
                       '0x40000)'),
    ('l2-header', 'r', 'Cluster allocation offset 0x200 unaligned (L2 '
                       'offset: 0x40000, L2 index: 0x4)'),
    ('l1-header', 'w', 'L2 table offset 0x200 unaligned (L1 index: 0x1)'),
    ('l1-header', 'r', 'L2 table offset 0x200 unaligned (L1 index: 0x1)'),
]


@pytest.mark.parametrize('kind,op,msg', UNALIGNED,
                         ids=['%s-%s' % (k, o) for k, o, _ in UNALIGNED])
def test_table_into_header(daemon, workdir, sockdir, kind, op, msg):
    case = hi.make(kind, str(workdir / 'x.qcow2'))
    daemon.qmp.execute('blockdev-add', qcow2_opts(case.path))
    header = hi.read_range(case.path, 0, 72)
    h = bjtest.nbd_export_open(daemon, sockdir)
    with pytest.raises(nbd.Error) as e:
        if op == 'w':
            h.pwrite(b'\x5a' * 4096, case.guest_offset)
        else:
            h.pread(4096, case.guest_offset)
    assert is_eio(e.value), e.value
    ev = daemon.qmp.wait_event('BLOCK_IMAGE_CORRUPTED')
    assert ev['data'] == {'device': '', 'node-name': 'q', 'msg': msg,
                          'fatal': True}
    with pytest.raises(nbd.Error):
        h.pwrite(b'\x5a' * 4096, 8 << 20)
    bjtest.nbd_export_close(daemon, h)
    # Only the corrupt bit changed in the header.
    after = hi.read_range(case.path, 0, 72)
    assert after[:72] == header[:72]
    assert stderr_line(msg) in daemon.stderr()
    expect_corrupt_reopen(daemon, case.path)


def test_read_only_report_is_not_fatal(daemon, workdir, sockdir):
    case = hi.make('l2-header', str(workdir / 'x.qcow2'))
    daemon.qmp.execute('blockdev-add',
                       qcow2_opts(case.path, **{'read-only': True}))
    h = bjtest.nbd_export_open(daemon, sockdir, writable=False)
    for _ in range(2):
        with pytest.raises(nbd.Error) as e:
            h.pread(4096, case.guest_offset)
        assert is_eio(e.value)
    msg = ('Cluster allocation offset 0x200 unaligned (L2 offset: 0x40000, '
           'L2 index: 0x4)')
    ev = daemon.qmp.wait_event('BLOCK_IMAGE_CORRUPTED')
    assert ev['data'] == {'device': '', 'node-name': 'q', 'msg': msg,
                          'fatal': False}
    assert h.pread(4096, 0) == b'\x11' * 4096
    bjtest.nbd_export_close(daemon, h)
    assert daemon.qmp.get_events('BLOCK_IMAGE_CORRUPTED') == []
    assert ('qcow2: Image is corrupt: %s; further non-fatal corruption '
            'events will be suppressed\n' % msg) in daemon.stderr()
    assert not hi.corrupt_bit(case.path)


@pytest.mark.blockjobd_only('qsd 7.2 opens the image, and at close frees '
                            'the bitmap clusters, the L1 table with them; '
                            'the L1 table is then lost (qemu-img check '
                            'finds errors) and the image is not marked')
def test_bitmap_table_onto_l1(daemon, workdir):
    case = hi.make('bitmap-table-l1', str(workdir / 'x.qcow2'))
    before = hi.read_meta(case)
    # Opening read-write arms the bitmaps, which frees their old clusters.
    with pytest.raises(QMPError) as e:
        daemon.qmp.execute('blockdev-add', qcow2_opts(case.path))
    assert e.value.desc == ('qcow2: could not update the bitmap directory: '
                            'Input/output error')
    ev = daemon.qmp.wait_event('BLOCK_IMAGE_CORRUPTED')
    msg = 'Bitmap cluster to be freed overlaps with active L1 table'
    assert ev['data'] == {'device': '', 'node-name': 'q', 'msg': msg,
                          'offset': case.meta_offset, 'size': hi.CLUSTER,
                          'fatal': True}
    assert hi.read_meta(case) == before
    assert stderr_line(msg) in daemon.stderr()
    assert daemon.qmp.execute('query-named-block-nodes') == []
    expect_corrupt_reopen(daemon, case.path)


@pytest.mark.blockjobd_only('qsd 7.2 ejects the node: reads fail and '
                            'queries of it too')
def test_after_corruption(daemon, workdir, sockdir):
    """Reads still work (they cannot harm the image) and the node reports
    itself corrupt; flushes are refused, the cached tables stay out."""
    case = hi.make('l2-active-l1', str(workdir / 'x.qcow2'))
    daemon.qmp.execute('blockdev-add', qcow2_opts(case.path))
    h = bjtest.nbd_export_open(daemon, sockdir)
    write_refused_as_corrupt(daemon, h, case.guest_offset)
    assert h.pread(4096, 0) == b'\x11' * 4096
    with pytest.raises(nbd.Error) as e:
        h.flush()
    assert is_eio(e.value)
    node = daemon.qmp.execute('query-named-block-nodes')[0]
    assert node['image']['format-specific']['data']['corrupt'] is True
    bjtest.nbd_export_close(daemon, h)


def test_repair_clears_corrupt(daemon, workdir, sockdir):
    """qemu-img check -r clears the bit: the image opens read-write."""
    case = hi.make('l2-refcount-table', str(workdir / 'x.qcow2'))
    daemon.qmp.execute('blockdev-add', qcow2_opts(case.path))
    h = bjtest.nbd_export_open(daemon, sockdir)
    write_refused_as_corrupt(daemon, h, case.guest_offset)
    bjtest.nbd_export_close(daemon, h)
    # The repair does not know the entry is hostile: drop it first.
    hi.clear_l2_entry(case.path, case.guest_offset)
    qemu_img('check', '-r', 'all', case.path, check=False)
    assert not hi.corrupt_bit(case.path)
    daemon.qmp.execute('blockdev-add', qcow2_opts(case.path))
    daemon.qmp.execute('blockdev-del', node_name='q')


# ---- which structures each template covers ----

TEMPLATES = [
    # kind, overlap-check, refused
    ('l2-inactive-l2', None, False),        # the default is `cached`
    ('l2-inactive-l2', 'cached', False),
    ('l2-inactive-l1', 'cached', True),
    ('l2-inactive-l1', 'constant', False),
    ('l2-self', 'constant', False),
    ('l2-refcount-block', 'constant', False),
    ('l2-bitmap-directory', 'constant', True),
    ('l2-snapshot-table', 'constant', True),
    ('l2-active-l1', 'none', False),
    ('l2-active-l1', {'template': 'none', 'active-l1': True}, True),
    ('l2-self', {'template': 'all', 'active-l2': False}, False),
]


@pytest.mark.parametrize('kind,check,refused', TEMPLATES,
                         ids=['%s-%s' % (k, c) for k, c, _ in TEMPLATES])
def test_templates(daemon, workdir, sockdir, kind, check, refused):
    case = hi.make(kind, str(workdir / 'x.qcow2'))
    extra = {} if check is None else {'overlap-check': check}
    daemon.qmp.execute('blockdev-add', qcow2_opts(case.path, **extra))
    if case.reaim:
        case.reaim()
    before = hi.read_meta(case)
    h = bjtest.nbd_export_open(daemon, sockdir)
    if refused:
        with pytest.raises(nbd.Error):
            h.pwrite(b'\x5a' * 4096, case.guest_offset)
        ev = daemon.qmp.wait_event('BLOCK_IMAGE_CORRUPTED')
        assert ev['data']['msg'] == overlap_msg(case.ol_name)
    else:
        # Unchecked, the write lands on the structure (as in qemu).
        h.pwrite(b'\x5a' * 4096, case.guest_offset)
        h.flush()
    bjtest.nbd_export_close(daemon, h)
    assert (hi.read_meta(case) == before) == refused
    assert hi.corrupt_bit(case.path) == refused
    assert daemon.qmp.get_events('BLOCK_IMAGE_CORRUPTED') == []


# ---- the option ----

BAD_OPTION = [
    ('foo', "Parameter 'overlap-check' does not accept value 'foo'"),
    (5, "Invalid parameter type for 'overlap-check', expected: "
        "Qcow2OverlapChecks"),
    (None, "Invalid parameter type for 'overlap-check', expected: "
           "Qcow2OverlapChecks"),
    (['all'], "Invalid parameter type for 'overlap-check', expected: "
              "Qcow2OverlapChecks"),
    ({'template': 'x'}, "Parameter 'template' does not accept value 'x'"),
    ({'template': 5}, "Invalid parameter type for 'overlap-check.template', "
                      "expected: string"),
    ({'main-header': 'on'}, "Invalid parameter type for "
                            "'overlap-check.main-header', expected: boolean"),
    ({'bogus': True}, "Parameter 'overlap-check.bogus' is unexpected"),
]


@pytest.mark.parametrize('value,message', BAD_OPTION,
                         ids=[repr(v) for v, _ in BAD_OPTION])
def test_bad_option(daemon, workdir, value, message):
    path = str(workdir / 'o.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', path, '1M')
    with pytest.raises(QMPError) as e:
        daemon.qmp.execute('blockdev-add',
                           qcow2_opts(path, **{'overlap-check': value}))
    assert e.value.cls == 'GenericError'
    assert e.value.desc == message
    assert daemon.qmp.execute('query-named-block-nodes') == []


GOOD_OPTION = ['none', 'constant', 'cached', 'all', {},
               {'template': 'all', 'inactive-l2': False},
               {'main-header': True, 'active-l1': False}]


@pytest.mark.parametrize('value', GOOD_OPTION,
                         ids=[repr(v) for v in GOOD_OPTION])
def test_good_option(daemon, workdir, value):
    path = str(workdir / 'o.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', path, '1M')
    daemon.qmp.execute('blockdev-add',
                       qcow2_opts(path, **{'overlap-check': value}))
    daemon.qmp.execute('blockdev-del', node_name='q')


CMDLINE = [
    ('overlap-check=foo',
     "Parameter 'overlap-check' does not accept value 'foo'"),
    ('overlap-check.template=foo',
     "Parameter 'template' does not accept value 'foo'"),
    ('overlap-check.main-header=foo',
     "Parameter 'overlap-check.main-header' expects 'on' or 'off'"),
    ('overlap-check.bogus=on',
     "Parameter 'overlap-check.bogus' is unexpected"),
]


@pytest.mark.parametrize('opt,message', CMDLINE, ids=[o for o, _ in CMDLINE])
def test_bad_option_cmdline(workdir, opt, message):
    path = str(workdir / 'o.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', path, '1M')
    arg = ('driver=qcow2,node-name=q,file.driver=file,file.filename=%s,%s'
           % (path, opt))
    p = bjtest.run_blockjobd('--blockdev', arg)
    assert p.returncode == 1
    prog = os.path.basename(bjtest.daemon_bin())
    stderr = p.stderr.replace(bjtest.daemon_bin() + ':', prog + ':', 1)
    assert stderr == '%s: --blockdev %s: %s\n' % (prog, arg, message)


def test_good_option_cmdline(daemon_factory, workdir):
    path = str(workdir / 'o.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', path, '1M')
    d = daemon_factory('--blockdev',
                       'driver=qcow2,node-name=q,file.driver=file,'
                       'file.filename=%s,overlap-check.template=all,'
                       'overlap-check.active-l1=off' % path)
    assert [n['node-name'] for n in d.qmp.execute('query-named-block-nodes')
            if n['drv'] == 'qcow2'] == ['q']
