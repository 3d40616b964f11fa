"""Crafted qcow2 images whose tables point data clusters at metadata.

Each image starts as a real image made by qemu-img (and qemu-io, for
allocated clusters, snapshots and bitmaps); then one table entry is
rewritten with struct so that a guest cluster maps onto a metadata
structure.  Everything is deterministic: same image, same bytes, every run.

    case = make(kind, path)
    case.guest_offset    guest offset whose cluster now maps onto metadata
    case.meta_offset     host offset of the metadata structure hit
    case.meta_len        its length in bytes (what must stay unchanged)
    case.ol_name         qemu's name of the structure in the corruption
                         message ("active L1 table", ...), or None when the
                         driver refuses the entry for another reason

Kinds (KINDS): an L2 entry pointing at the L2 table itself, the active L1
table, the header cluster, the refcount table, a refcount block, the
snapshot table, a snapshot's (inactive) L1 table, an inactive L2 table, the
bitmap directory; a bitmap-table entry pointing at the L1 table; an L1
entry pointing into the header cluster; a refcount of 0 on the L1 table's
cluster (so that the allocator hands it out for new data).
"""

import os
import struct
import subprocess
from dataclasses import dataclass

CLUSTER = 65536
SIZE = 64 << 20
COPIED = 1 << 63
OFFSET_MASK = 0x00fffffffffffe00
BITMAPS_EXT = 0x23852875

KINDS = ['l2-self', 'l2-active-l1', 'l2-header', 'l2-refcount-table',
         'l2-refcount-block', 'l2-snapshot-table', 'l2-inactive-l1',
         'l2-inactive-l2', 'l2-bitmap-directory', 'bitmap-table-l1',
         'l1-header', 'refcount-l1-free']


@dataclass
class Case:
    kind: str
    path: str
    guest_offset: int
    meta_offset: int
    meta_len: int
    ol_name: object
    # Set for structures that a read-write open may move (the bitmap
    # directory, which blockjobd rewrites when it arms its bitmaps): call
    # once the image is open to point the entry at where it is now.
    reaim: object = None


def _run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def _u64(f, off):
    f.seek(off)
    return struct.unpack('>Q', f.read(8))[0]


def _u32(f, off):
    f.seek(off)
    return struct.unpack('>I', f.read(4))[0]


def _put64(path, off, val):
    with open(path, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack('>Q', val))


class Layout:
    """The few header fields and tables the cases need (version 3)."""

    def __init__(self, path):
        with open(path, 'rb') as f:
            self.cluster = 1 << _u32(f, 20)
            self.l1_size = _u32(f, 36)
            self.l1_offset = _u64(f, 40)
            self.rt_offset = _u64(f, 48)
            self.rt_clusters = _u32(f, 56)
            self.nb_snapshots = _u32(f, 60)
            self.snapshots_offset = _u64(f, 64)
            self.l1 = [_u64(f, self.l1_offset + 8 * i)
                       for i in range(self.l1_size)]
            self.refblock0 = _u64(f, self.rt_offset)
            hdr_len = _u32(f, 100)
            self.bitmap_dir = None
            off = hdr_len
            while off + 8 <= self.cluster:
                typ, length = _u32(f, off), _u32(f, off + 4)
                if typ == 0:
                    break
                if typ == BITMAPS_EXT:
                    self.bitmap_dir = (_u64(f, off + 24), _u64(f, off + 16))
                off += 8 + (length + 7) // 8 * 8
            self.snapshots = []
            off = self.snapshots_offset
            for _ in range(self.nb_snapshots):
                l1_off, l1_sz = _u64(f, off), _u32(f, off + 8)
                id_len = struct.unpack('>H', _read(f, off + 12, 2))[0]
                name_len = struct.unpack('>H', _read(f, off + 14, 2))[0]
                extra = _u32(f, off + 36)
                self.snapshots.append((l1_off, l1_sz))
                off += 40 + extra + id_len + name_len
                off = (off + 7) // 8 * 8
            self.snapshots_len = off - self.snapshots_offset

    def l2_offset(self, guest_offset):
        l1i = guest_offset // (self.cluster * (self.cluster // 8))
        return self.l1[l1i] & OFFSET_MASK

    def l2_entry_pos(self, guest_offset):
        l2i = (guest_offset // self.cluster) % (self.cluster // 8)
        return self.l2_offset(guest_offset) + 8 * l2i


def _read(f, off, n):
    f.seek(off)
    return f.read(n)


def _base(path):
    """64 MiB image, guest cluster 0 allocated (so L1[0] has an L2 table)."""
    _run('qemu-img', 'create', '-q', '-f', 'qcow2', path, str(SIZE))
    _run('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x11 0 64k', path)


def _point_l2(path, guest_offset, host):
    lay = Layout(path)
    _put64(path, lay.l2_entry_pos(guest_offset), host | COPIED)


# The guest cluster the cases redirect: unallocated before, in L1[0]'s table.
GUEST = 4 * CLUSTER


def make(kind, path):
    """Builds the image for kind at path; returns its Case."""
    _base(path)
    if kind in ('l2-snapshot-table', 'l2-inactive-l1', 'l2-inactive-l2'):
        _run('qemu-img', 'snapshot', '-c', 'snap0', path)
        if kind == 'l2-inactive-l2':
            # The active tree copies its L2 table on this write; the old
            # one stays, referenced by the snapshot only.
            _run('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x22 0 4k', path)
    if kind in ('l2-bitmap-directory', 'bitmap-table-l1'):
        _run('qemu-img', 'bitmap', '--add', path, 'bm0')
        # The bitmap records this write and is stored with a data cluster.
        _run('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x33 128k 64k', path)
    lay = Layout(path)
    l2 = lay.l2_offset(0)
    guest = GUEST
    if kind == 'l2-self':
        target, length, name = l2, lay.cluster, 'active L2 table'
    elif kind == 'l2-active-l1':
        target, length, name = lay.l1_offset, lay.l1_size * 8, \
            'active L1 table'
    elif kind == 'l2-header':
        # Host offset 0 means "unallocated"; the nearest a table can get
        # to the header is an offset inside its cluster.
        target, length, name = 0x200, 0x200, None
    elif kind == 'l2-refcount-table':
        target, length, name = lay.rt_offset, lay.rt_clusters * lay.cluster, \
            'refcount table'
    elif kind == 'l2-refcount-block':
        target, length, name = lay.refblock0, lay.cluster, 'refcount block'
    elif kind == 'l2-snapshot-table':
        target, length, name = lay.snapshots_offset, lay.snapshots_len, \
            'snapshot table'
        # qemu-img leaves the table at the very end of the file, without
        # its padding; a data cluster there would lie partly past the end,
        # which blockjobd refuses before it looks further.  Make the file
        # whole clusters long so that the overlap is what is tested.
        with open(path, 'r+b') as f:
            f.truncate((os.path.getsize(path) + CLUSTER - 1)
                       // CLUSTER * CLUSTER)
    elif kind == 'l2-inactive-l1':
        off, sz = lay.snapshots[0]
        target, length, name = off, sz * 8, 'inactive L1 table'
    elif kind == 'l2-inactive-l2':
        with open(path, 'rb') as f:
            sl1 = _u64(f, lay.snapshots[0][0]) & OFFSET_MASK
        assert sl1 != l2, 'the write did not copy the L2 table'
        target, length, name = sl1, lay.cluster, 'inactive L2 table'
    elif kind == 'l2-bitmap-directory':
        off, length = lay.bitmap_dir
        target, name = off, 'bitmap directory'
        case = Case(kind, path, guest, target, length, name)

        def reaim():
            case.meta_offset, case.meta_len = Layout(path).bitmap_dir
            _point_l2(path, guest, case.meta_offset)
        case.reaim = reaim
        _point_l2(path, guest, target)
        return case
    elif kind == 'bitmap-table-l1':
        with open(path, 'rb') as f:
            table = _u64(f, lay.bitmap_dir[0])
            entry = _u64(f, table)
        assert entry & OFFSET_MASK, 'bitmap has no data cluster'
        # The bitmap's data cluster is now the L1 table: whoever frees
        # the bitmap's clusters hands the L1 table to the allocator.
        _put64(path, table, lay.l1_offset)
        return Case(kind, path, guest, lay.l1_offset, lay.l1_size * 8,
                    'active L1 table')
    elif kind == 'l1-header':
        # L1 index 1 covers guest bytes from 512 MiB: grow the image so
        # that it exists, then point it into the header cluster.
        _run('qemu-img', 'resize', '-q', path, str(1 << 30))
        lay = Layout(path)
        assert lay.l1_size >= 2
        _put64(path, lay.l1_offset + 8, 0x200 | COPIED)
        return Case(kind, path, 512 << 20, 0, lay.cluster, None)
    elif kind == 'refcount-l1-free':
        # 16-bit refcounts: the L1 table's cluster now counts as free, and
        # the guest cluster, unallocated, takes the first free one.
        assert lay.l1_offset < lay.cluster * (lay.cluster // 2)
        with open(path, 'r+b') as f:
            f.seek(lay.refblock0 + 2 * (lay.l1_offset // lay.cluster))
            f.write(struct.pack('>H', 0))
        return Case(kind, path, guest, lay.l1_offset, lay.l1_size * 8,
                    'active L1 table')
    else:
        raise ValueError(kind)
    _point_l2(path, guest, target)
    return Case(kind, path, guest, target, length, name)


def clear_l2_entry(path, guest_offset):
    """Undoes the crafted entry (the guest cluster reads as unallocated)."""
    _put64(path, Layout(path).l2_entry_pos(guest_offset), 0)


def read_range(path, offset, length):
    with open(path, 'rb') as f:
        f.seek(offset)
        return f.read(length)


def read_meta(case):
    return read_range(case.path, case.meta_offset, case.meta_len)


def corrupt_bit(path):
    with open(path, 'rb') as f:
        return bool(_u64(f, 72) & 2)


if __name__ == '__main__':
    # Builds every case in a temporary directory and prints it.
    import tempfile
    d = tempfile.mkdtemp()
    for k in KINDS:
        c = make(k, os.path.join(d, k + '.qcow2'))
        print(c)
