"""Helpers shared by the bitmap backup tests (test_backup_bitmap_matrix.py,
test_backup_incremental_chain.py).

    qemu_sha256(bits, nbits)    the hash x-debug-block-dirty-bitmap-sha256
                                reports for a bitmap with these bits set
    granules(off, length)       the granule indices a byte range touches
    Model                       the bytes a disk should hold, kept in Python
                                beside every write sent to the daemon
    bitmap_info / assert_bitmap the bitmap as query-named-block-nodes and
                                the sha256 command report it
    NbdWriter                   a libnbd connection to a writable export
    ExportedSource              base class of a test setup with nodes src
                                and tgt, src written over NBD
    image_map / data_granules   qemu-img map of an image, granules with data
"""

import hashlib
import json

from bjtest import nbd_export_teardown, qemu_img

KiB = 1 << 10
MiB = 1 << 20
GRAN = 64 * KiB


def qemu_sha256(bits, nbits):
    """qemu's hash: SHA-256 of the bits as 64-bit little-endian words."""
    buf = bytearray(((nbits + 63) // 64) * 8)
    for b in bits:
        buf[b // 8] |= 1 << (b % 8)
    return hashlib.sha256(bytes(buf)).hexdigest()


def granules(off, length, gran=GRAN):
    """The set of granules [off, off+length) touches."""
    return set(range(off // gran, (off + length + gran - 1) // gran))


def marked_ranges(ranges, gran=GRAN):
    """The byte ranges a bitmap of granularity gran marks for writes at
    [(offset, length)], adjacent granules joined."""
    marks = sorted({g for o, n in ranges
                    for g in range(o // gran, (o + n - 1) // gran + 1)})
    out = []
    for g in marks:
        if out and out[-1][0] + out[-1][1] == g * gran:
            out[-1] = (out[-1][0], out[-1][1] + gran)
        else:
            out.append((g * gran, gran))
    return out


def pattern(seed, length):
    """Non-zero, position-dependent bytes (a misplaced cluster shows)."""
    block = bytes(((seed * 31 + i * 7) % 251) + 1 for i in range(4096))
    return (block * (length // 4096 + 1))[:length]


class Model:
    """What the disk holds, byte for byte."""

    def __init__(self, size, data=None):
        self.size = size
        self.buf = bytearray(size) if data is None else bytearray(data)

    def write(self, off, data):
        self.buf[off:off + len(data)] = data

    def snapshot(self):
        return bytes(self.buf)

    def save(self, path, data=None):
        with open(path, 'wb') as f:
            f.write(self.buf if data is None else data)


def bitmap_info(qmp, node, name):
    for n in qmp.execute('query-named-block-nodes'):
        if n['node-name'] == node:
            for b in n.get('dirty-bitmaps', []):
                if b.get('name') == name:
                    return b
            raise AssertionError('no bitmap %s on %s' % (name, node))
    raise AssertionError('no node %s' % node)


def node_bitmaps(qmp, node):
    """The dirty-bitmaps list of node (anonymous ones included)."""
    for n in qmp.execute('query-named-block-nodes'):
        if n['node-name'] == node:
            return n.get('dirty-bitmaps', [])
    raise AssertionError('no node %s' % node)


def bitmap_sha256(qmp, node, name):
    return qmp.execute('x-debug-block-dirty-bitmap-sha256', node=node,
                       name=name)['sha256']


def assert_bitmap(qmp, node, name, bits, size, gran=GRAN, what=''):
    """The bitmap has exactly these granules set (count and sha256)."""
    info = bitmap_info(qmp, node, name)
    nbits = (size + gran - 1) // gran
    want = (len(bits) * gran, qemu_sha256(bits, nbits))
    got = (info['count'], bitmap_sha256(qmp, node, name))
    assert got == want, ('%s: bitmap %s: count %d, expected %d (%d granules '
                         '%s)' % (what, name, got[0], want[0], len(bits),
                                  sorted(bits)))
    return info


class NbdWriter:
    """A libnbd client of a writable export that mirrors into a Model."""

    def __init__(self, sock, name, model=None):
        import nbd
        self.h = nbd.NBD()
        self.h.set_export_name(name)
        self.h.connect_unix(sock)
        self.model = model

    def write(self, off, data):
        self.h.pwrite(data, off)
        if self.model is not None:
            self.model.write(off, data)
        return granules(off, len(data))

    def read(self, off, length):
        return self.h.pread(length, off)

    def close(self):
        self.h.flush()
        self.h.shutdown()


def start_export(qmp, sock, node, name='x', eid='e0'):
    qmp.execute('nbd-server-start',
                addr={'type': 'unix', 'data': {'path': sock}})
    qmp.execute('block-export-add', {'type': 'nbd', 'id': eid,
                                     'node-name': node, 'name': name,
                                     'writable': True})


class ExportedSource:
    """A test setup with nodes src and tgt on self.qmp whose src is
    exported writable (e0, named 'x') and written by self.nbd, an NbdWriter
    that mirrors every write into self.model."""

    def export_src(self, daemon):
        self.sock = daemon.socket_path('nbd.sock')
        start_export(self.qmp, self.sock, 'src')
        self.nbd = NbdWriter(self.sock, 'x', self.model)

    def write(self, writes):
        """writes: (seed, offset, length) of pattern(seed, length)."""
        for seed, off, length in writes:
            self.nbd.write(off, pattern(seed, length))

    def release(self):
        """Hangs up, deletes the export, tgt and src."""
        nbd_export_teardown(self.qmp, self.nbd.h, 'tgt', 'src')


def image_map(path, fmt='qcow2'):
    out = qemu_img('map', '--output=json', '-f', fmt, path).stdout
    return json.loads(out)


def data_granules(path, fmt='qcow2', gran=GRAN, depth=None):
    """Granules of path whose data is in the image (depth 0: in the top
    layer itself, None: anywhere in the chain)."""
    got = set()
    for ext in image_map(path, fmt):
        if not ext['data'] or (depth is not None and ext['depth'] != depth):
            continue
        got |= granules(ext['start'], ext['length'], gran)
    return got


def host_offset(path, off, fmt='qcow2'):
    """Where guest offset off of path lives in its file (must be data)."""
    for ext in image_map(path, fmt):
        if ext['start'] <= off < ext['start'] + ext['length']:
            assert ext['data'] and 'offset' in ext, ext
            return ext['offset'] + off - ext['start']
    raise AssertionError('offset %d not mapped in %s' % (off, path))


def read_image(path, fmt, workdir, name='dump.raw'):
    """The guest-visible bytes of an image (through qemu-img convert)."""
    out = str(workdir / name) if hasattr(workdir, '__truediv__') else \
        '%s/%s' % (workdir, name)
    qemu_img('convert', '-f', fmt, '-O', 'raw', '-U', path, out)
    with open(out, 'rb') as f:
        return f.read()
