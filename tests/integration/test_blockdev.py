"""blockdev-add, blockdev-del and query-named-block-nodes.

Every expectation here was taken from qemu-storage-daemon 7.2; the file runs
unchanged against it (BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)).
"""

import json
import os
import re
import time

import pytest

from bjtest import QMPError, blockdev_add_error, qemu_img


def make_image(workdir, name='a.img', size=1 << 20):
    path = os.path.join(str(workdir), name)
    with open(path, 'wb') as f:
        f.truncate(size)
    return path


def add(qmp, **opts):
    return qmp.execute('blockdev-add', opts)


def nodes(qmp, **args):
    return qmp.execute('query-named-block-nodes', args)


def node(qmp, name):
    found = [n for n in nodes(qmp) if n['node-name'] == name]
    assert len(found) == 1, name
    return found[0]


def names(qmp):
    return [n['node-name'] for n in nodes(qmp)]


def common_fields(info):
    """The members whose values do not depend on the node."""
    return {k: info[k] for k in ('backing_file_depth', 'encrypted', 'bps',
                                 'bps_rd', 'bps_wr', 'iops', 'iops_rd',
                                 'iops_wr', 'write_threshold')}


ZEROS = {'backing_file_depth': 0, 'encrypted': False, 'bps': 0, 'bps_rd': 0,
         'bps_wr': 0, 'iops': 0, 'iops_rd': 0, 'iops_wr': 0,
         'write_threshold': 0}
DEFAULT_CACHE = {'writeback': True, 'direct': False, 'no-flush': False}


def test_file_raw_by_name(daemon, workdir):
    img = make_image(workdir)
    q = daemon.qmp
    assert add(q, driver='file', **{'node-name': 'f'}, filename=img) == {}
    assert add(q, driver='raw', **{'node-name': 'r'}, file='f') == {}
    assert names(q) == ['r', 'f']          # newest first

    f = node(q, 'f')
    assert common_fields(f) == ZEROS
    assert f['file'] == img
    assert f['drv'] == 'file'
    assert f['ro'] is False
    assert f['detect_zeroes'] == 'off'
    assert f['cache'] == DEFAULT_CACHE
    assert f['image']['filename'] == img
    assert f['image']['format'] == 'file'
    assert f['image']['virtual-size'] == 1 << 20
    assert f['image']['dirty-flag'] is False
    assert f['image']['actual-size'] == os.stat(img).st_blocks * 512

    r = node(q, 'r')
    assert common_fields(r) == ZEROS
    assert r['file'] == img                # raw over a plain file: its name
    assert r['drv'] == 'raw'
    assert r['image']['format'] == 'raw'
    assert r['image']['filename'] == img
    assert r['image']['virtual-size'] == 1 << 20
    assert r['image']['dirty-flag'] is False
    assert 'backing_file' not in r


def test_inline_child_is_implicit(daemon, workdir):
    img = make_image(workdir)
    q = daemon.qmp
    add(q, driver='raw', **{'node-name': 'r'},
        file={'driver': 'file', 'filename': img})
    listed = nodes(q)
    assert [n['node-name'] for n in listed][0] == 'r'
    implicit = listed[1]
    assert implicit['node-name'].startswith('#block')
    assert implicit['drv'] == 'file'
    assert implicit['file'] == img
    # Only the monitor's own nodes can be deleted by name.
    with pytest.raises(QMPError) as e:
        q.execute('blockdev-del', **{'node-name': implicit['node-name']})
    assert e.value.desc == ('Node %s is not owned by the monitor'
                            % implicit['node-name'])
    # A named inline child is not the monitor's either.
    add(q, driver='raw', **{'node-name': 'r2', 'read-only': True},
        file={'driver': 'null-co', 'node-name': 'x'})
    with pytest.raises(QMPError) as e:
        q.execute('blockdev-del', **{'node-name': 'x'})
    assert e.value.desc == 'Node x is not owned by the monitor'
    q.execute('blockdev-del', **{'node-name': 'r2'})
    # Deleting the parent takes the implicit child with it.
    q.execute('blockdev-del', **{'node-name': 'r'})
    assert nodes(q) == []


def test_raw_over_raw_and_options_get_json_names(daemon, workdir):
    img = make_image(workdir)
    q = daemon.qmp
    add(q, driver='file', **{'node-name': 'f'}, filename=img)
    add(q, driver='raw', **{'node-name': 'win'}, file='f', offset=512,
        size=4096)
    add(q, driver='raw', **{'node-name': 'rr'},
        file={'driver': 'raw', 'file': 'f'})

    win = node(q, 'win')
    assert win['file'].startswith('json:')
    assert json.loads(win['file'][5:]) == {
        'driver': 'raw', 'offset': 512, 'size': 4096,
        'file': {'driver': 'file', 'filename': img}}
    assert win['image']['virtual-size'] == 4096

    rr = node(q, 'rr')
    assert json.loads(rr['file'][5:]) == {
        'driver': 'raw', 'file': {'driver': 'raw',
                                  'file': {'driver': 'file',
                                           'filename': img}}}
    assert rr['image']['filename'] == rr['file']


def test_null_co(daemon):
    q = daemon.qmp
    add(q, driver='null-co', **{'node-name': 'n'})
    add(q, driver='null-co', **{'node-name': 'm', 'read-zeroes': True,
                                'latency-ns': 10}, size=12345)
    add(q, driver='null-co', **{'node-name': 'ro', 'read-only': True,
                                'force-share': True},
        cache={'direct': True, 'no-flush': True})
    add(q, driver='null-co', **{'node-name': 'dz', 'detect-zeroes': 'unmap',
                                'discard': 'unmap'})

    n = node(q, 'n')
    assert common_fields(n) == ZEROS
    assert n['file'] == 'null-co://'
    assert n['image'] == {'filename': 'null-co://', 'format': 'null-co',
                          'virtual-size': 1 << 30, 'actual-size': 0}
    m = node(q, 'm')
    # latency-ns does not change what the node is; size and read-zeroes do.
    assert json.loads(m['file'][5:]) == {'driver': 'null-co', 'size': 12345,
                                         'read-zeroes': True}
    assert m['image']['virtual-size'] == 12800   # whole 512-byte sectors
    ro = node(q, 'ro')
    assert ro['ro'] is True
    assert ro['cache'] == {'writeback': True, 'direct': True,
                           'no-flush': True}
    assert node(q, 'dz')['detect_zeroes'] == 'unmap'

    # raw over null-co: a json: name, and no dirty-flag (null-co has no
    # image info for raw to pass on).
    add(q, driver='raw', **{'node-name': 'r'},
        file={'driver': 'null-co', 'size': 1000})
    r = node(q, 'r')
    assert json.loads(r['file'][5:]) == {
        'driver': 'raw', 'file': {'driver': 'null-co', 'size': 1000}}
    assert r['image'] == {'filename': r['file'], 'format': 'raw',
                          'virtual-size': 1024, 'actual-size': 0}


def test_del_null_co_with_latency_does_not_wait(daemon):
    """Deleting a null-co node nobody wrote to returns at once, whatever its
    latency-ns (it used to flush on close and sleep the latency: an hour
    here, with QMP stalled and SIGTERM unheard meanwhile)."""
    q = daemon.qmp
    add(q, driver='null-co', **{'node-name': 'slow',
                               'latency-ns': 3600 * 10 ** 9})
    t0 = time.monotonic()
    q.execute('blockdev-del', **{'node-name': 'slow'})
    assert time.monotonic() - t0 < 10
    assert q.execute('query-named-block-nodes') == []


def test_flat_argument(daemon, workdir):
    img = make_image(workdir)
    q = daemon.qmp
    add(q, driver='file', **{'node-name': 'f'}, filename=img)
    add(q, driver='raw', **{'node-name': 'r'}, file='f')
    assert nodes(q, flat=True) == nodes(q)
    assert nodes(q, flat=False) == nodes(q)
    with pytest.raises(QMPError) as e:
        q.execute('query-named-block-nodes', flat='yes')
    assert e.value.desc.startswith("Invalid parameter type for 'flat'")
    with pytest.raises(QMPError) as e:
        q.execute('query-named-block-nodes', bogus=1)
    assert e.value.desc == "Parameter 'bogus' is unexpected"


ADD_ERRORS = [
    ({'node-name': 'x'}, "Parameter 'driver' is missing"),
    ({'driver': 'bogus', 'node-name': 'x'},
     "Parameter 'driver' does not accept value 'bogus'"),
    ({'driver': 'null-co'},
     "'node-name' must be specified for the root node"),
    ({'driver': 'null-co', 'node-name': '1x'}, "Invalid node-name: '1x'"),
    ({'driver': 'null-co', 'node-name': 'a-b_c.d!'},
     "Invalid node-name: 'a-b_c.d!'"),
    ({'driver': 'null-co', 'node-name': 'a' * 32}, 'Node name too long'),
    ({'driver': 'null-co', 'node-name': ''}, "Invalid node-name: ''"),
    ({'driver': 'null-co', 'node-name': '#block123'},
     "Invalid node-name: '#block123'"),
    ({'driver': 'null-co', 'node-name': 'taken'},
     "Duplicate nodes with node-name='taken'"),
    ({'driver': 'null-co', 'node-name': 'x', 'bogus': 1},
     "Parameter 'bogus' is unexpected"),
    ({'driver': 'null-co', 'node-name': 'x', 'force-share': True},
     'force-share=on can only be used with read-only images'),
    ({'driver': 'null-co', 'node-name': 'x', 'detect-zeroes': 'unmap'},
     'setting detect-zeroes to unmap is not allowed without setting discard '
     'operation to unmap'),
    ({'driver': 'null-co', 'node-name': 'x', 'latency-ns': -1},
     'latency-ns is invalid'),
    ({'driver': 'null-co', 'node-name': 'x', 'discard': 'on'},
     "Parameter 'discard' does not accept value 'on'"),
    ({'driver': 'null-co', 'node-name': 'x', 'cache': {'bogus': 1}},
     "Parameter 'cache.bogus' is unexpected"),
    ({'driver': 'null-co', 'node-name': 'x', 'cache': 5},
     "Invalid parameter type for 'cache', expected: object"),
    ({'driver': 'null-co', 'node-name': 'x', 'size': 'x'},
     "Invalid parameter type for 'size', expected: integer"),
    ({'driver': 'null-co', 'node-name': 5},
     "Invalid parameter type for 'node-name', expected: string"),
    ({'driver': 5, 'node-name': 'x'},
     "Invalid parameter type for 'driver', expected: string"),
    ({'driver': 'raw', 'node-name': 'x'}, "Parameter 'file' is missing"),
    ({'driver': 'raw', 'node-name': 'x', 'file': None},
     "Invalid parameter type for 'file', expected: BlockdevRef"),
    ({'driver': 'raw', 'node-name': 'x', 'file': 'nonexist'},
     "Cannot find device='nonexist' nor node-name='nonexist'"),
    ({'driver': 'raw', 'node-name': 'x', 'file': 5},
     "Invalid parameter type for 'file', expected: BlockdevRef"),
    ({'driver': 'raw', 'node-name': 'x', 'file': {'file': 'taken'}},
     "Parameter 'file.driver' is missing"),
    ({'driver': 'raw', 'node-name': 'x',
      'file': {'driver': 'raw', 'file': 'taken', 'node-name': '1'}},
     "Invalid node-name: '1'"),
    ({'driver': 'raw', 'node-name': 'x',
      'file': {'driver': 'raw', 'file': 'taken', 'node-name': 'x'}},
     "Duplicate nodes with node-name='x'"),
    ({'driver': 'raw', 'node-name': 'x', 'file': 'taken',
      'offset': 2 << 30},
     'Offset (2147483648) cannot be greater than size of the containing '
     'file (1073741824)'),
    ({'driver': 'raw', 'node-name': 'x', 'file': 'taken', 'offset': 512,
      'size': 1 << 30},
     'The sum of offset (512) and size (1073741824) has to be smaller or '
     'equal to the  actual size of the containing file (1073741824)'),
    ({'driver': 'raw', 'node-name': 'x', 'file': 'taken', 'size': 100},
     'Specified size is not multiple of 512'),
    ({'driver': 'raw', 'node-name': 'x', 'file': 'taken', 'offset': -1},
     "Parameter 'offset' expects a non-negative number below 2^64"),
    ({'driver': 'raw', 'node-name': 'x', 'file': 'taken', 'size': '1k'},
     "Invalid parameter type for 'size', expected: integer"),
]


@pytest.mark.parametrize('opts,desc', ADD_ERRORS,
                         ids=[d[:40] for _, d in ADD_ERRORS])
def test_blockdev_add_errors(daemon, opts, desc):
    q = daemon.qmp
    add(q, driver='null-co', **{'node-name': 'taken'})
    assert blockdev_add_error(q, opts) == desc
    # Nothing half-added stays behind.
    assert names(q) == ['taken']


def test_file_errors(daemon, workdir):
    q = daemon.qmp
    missing = os.path.join(str(workdir), 'missing.img')
    assert blockdev_add_error(q, {'driver': 'file', 'node-name': 'f',
                                  'filename': missing}) == \
        "Could not open '%s': No such file or directory" % missing
    # The same failure inside an inline child unwinds the parent too.
    assert blockdev_add_error(q, {
        'driver': 'raw', 'node-name': 'r',
        'file': {'driver': 'raw', 'node-name': 'inner',
                 'file': {'driver': 'file', 'filename': missing}}}) == \
        "Could not open '%s': No such file or directory" % missing
    assert nodes(q) == []
    # And the names are free again.
    img = make_image(workdir)
    add(q, driver='raw', **{'node-name': 'r'},
        file={'driver': 'raw', 'node-name': 'inner',
              'file': {'driver': 'file', 'filename': img}})
    assert names(q)[:2] == ['r', 'inner'] or 'inner' in names(q)


def test_blockdev_del(daemon, workdir):
    img = make_image(workdir)
    q = daemon.qmp
    add(q, driver='file', **{'node-name': 'f'}, filename=img)
    add(q, driver='raw', **{'node-name': 'r'}, file='f')

    def del_error(name):
        with pytest.raises(QMPError) as e:
            q.execute('blockdev-del', **{'node-name': name})
        assert e.value.cls == 'GenericError'
        return e.value.desc

    assert del_error('nope') == "Failed to find node with node-name='nope'"
    assert del_error('f') == 'Block device f is in use'
    with pytest.raises(QMPError) as e:
        q.execute('blockdev-del')
    assert e.value.desc == "Parameter 'node-name' is missing"
    with pytest.raises(QMPError) as e:
        q.execute('blockdev-del', **{'node-name': 5})
    assert e.value.desc == \
        "Invalid parameter type for 'node-name', expected: string"

    assert q.execute('blockdev-del', **{'node-name': 'r'}) == {}
    assert names(q) == ['f']
    assert q.execute('blockdev-del', **{'node-name': 'f'}) == {}
    assert nodes(q) == []
    assert del_error('f') == "Failed to find node with node-name='f'"
    # The name can be used again, and the file is not held any more.
    add(q, driver='file', **{'node-name': 'f'}, filename=img)
    q.execute('blockdev-del', **{'node-name': 'f'})


def test_read_only_node(daemon, workdir):
    img = make_image(workdir)
    os.chmod(img, 0o444)
    q = daemon.qmp
    if os.geteuid() != 0:
        assert blockdev_add_error(q, {'driver': 'file', 'node-name': 'f',
                                      'filename': img}).startswith(
            "Could not open '%s'" % img)
    add(q, driver='file', **{'node-name': 'f', 'read-only': True},
        filename=img)
    add(q, driver='raw', **{'node-name': 'r', 'read-only': True}, file='f')
    assert node(q, 'f')['ro'] is True
    assert node(q, 'r')['ro'] is True


def test_inline_child_inherits_read_only(daemon, workdir):
    img = make_image(workdir)
    q = daemon.qmp
    add(q, driver='raw', **{'node-name': 'r', 'read-only': True},
        file={'driver': 'file', 'filename': img})
    listed = nodes(q)
    assert [n['ro'] for n in listed] == [True, True]


def test_blockdev_on_command_line(daemon_factory, workdir):
    img = make_image(workdir)
    d = daemon_factory(
        '--blockdev', 'driver=raw,node-name=r,file.driver=file,'
        'file.filename=%s,offset=512,read-only=on,cache.direct=on' % img,
        '--blockdev', '{"driver": "null-co", "node-name": "n", '
        '"size": 4096}')
    listed = nodes(d.qmp)
    assert [n['node-name'] for n in listed][:2] == ['n', 'r']
    r = node(d.qmp, 'r')
    assert r['ro'] is True
    assert r['cache']['direct'] is True
    assert r['image']['virtual-size'] == (1 << 20) - 512
    assert json.loads(r['file'][5:]) == {
        'driver': 'raw', 'offset': 512,
        'file': {'driver': 'file', 'filename': img}}
    implicit = listed[2]
    assert implicit['drv'] == 'file' and implicit['ro'] is True
    assert implicit['cache']['direct'] is True     # inherited


def make_qcow2_chain(workdir):
    base = os.path.join(str(workdir), 'base.qcow2')
    top = os.path.join(str(workdir), 'top.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, '1M')
    qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top)
    return base, top


def test_blockdev_del_backing_and_export(daemon, workdir, sockdir):
    base, top = make_qcow2_chain(workdir)
    q = daemon.qmp
    add(q, driver='file', **{'node-name': 'fb'}, filename=base)
    add(q, driver='qcow2', **{'node-name': 'base'}, file='fb')
    add(q, driver='qcow2', **{'node-name': 'top'},
        file={'driver': 'file', 'filename': top}, backing='base')
    with pytest.raises(QMPError) as e:
        q.execute('blockdev-del', **{'node-name': 'base'})
    assert e.value.desc == \
        "Node 'base' is busy: node is used as backing hd of 'top'"
    # Newest first: top, then its inline file, then the older nodes.
    listed = names(q)
    assert listed[0] == 'top' and listed[1].startswith('#block')
    assert listed[2:] == ['base', 'fb']
    assert node(q, 'top')['backing_file'] == base
    assert node(q, 'top')['backing_file_depth'] == 1
    assert node(q, 'top')['image']['backing-image']['filename'] == base
    flat_top = [n for n in nodes(q, flat=True) if n['node-name'] == 'top'][0]
    assert 'backing-image' not in flat_top['image']
    assert flat_top['backing_file_depth'] == 0

    q.execute('nbd-server-start',
              addr={'type': 'unix',
                    'data': {'path': os.path.join(sockdir, 'nbd.sock')}})
    q.execute('block-export-add', type='nbd', id='exp0',
              **{'node-name': 'top'}, writable=True)
    with pytest.raises(QMPError) as e:
        q.execute('blockdev-del', **{'node-name': 'top'})
    assert e.value.desc == 'Node top is in use'

    # A writer on the file under a qcow2 node conflicts with the format
    # node, which does not share write on its file.
    with pytest.raises(QMPError) as e:
        q.execute('block-export-add', type='nbd', id='exp1',
                  **{'node-name': 'fb'}, writable=True)
    assert re.fullmatch(
        r"Permission conflict on node 'fb': permissions 'write' are both "
        r"required by .+ \(uses node 'fb' as 'root' child\) and unshared by "
        r"node 'base' \(uses node 'fb' as 'file' child\)\.", e.value.desc)

    q.execute('block-export-del', id='exp0')
    q.wait_event('BLOCK_EXPORT_DELETED')
    q.execute('blockdev-del', **{'node-name': 'top'})
    q.execute('blockdev-del', **{'node-name': 'base'})
    q.execute('blockdev-del', **{'node-name': 'fb'})
    assert nodes(q) == []
