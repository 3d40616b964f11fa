"""blockdev-reopen: read-only <-> read-write and the backing node of a
qcow2 node, a list applied whole or not at all, with qsd 7.2's errors.

Expectations recorded with qemu-storage-daemon 7.2; the file runs
unchanged against it (BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)),
except where blockjobd refuses what qsd swaps or resets (a new file child,
options other than read-only and backing): blockjobd_only tests.

Graph: base.qcow2 (read-only, 0x11 @ 0-64k) <- top.qcow2 (empty), and
other.qcow2 (0x22 @ 0-64k), raw r.raw; each format on its file node.
A reopen does not rewrite the image's header (qemu-img info still names
the old backing file after quit, as with qsd).
"""

import json
import os

import pytest

from bjtest import QMPError, qemu_img, qemu_io

nbd = pytest.importorskip('nbd')

KiB = 1 << 10
MiB = 1 << 20


@pytest.fixture
def graph(daemon, workdir):
    w = str(workdir)
    p = {n: os.path.join(w, n) for n in
         ('base.qcow2', 'top.qcow2', 'other.qcow2', 'r.raw')}
    qemu_img('create', '-q', '-f', 'qcow2', p['base.qcow2'], '1M')
    qemu_io('-f', 'qcow2', '-c', 'write -P 0x11 0 64k', p['base.qcow2'])
    qemu_img('create', '-q', '-f', 'qcow2', p['other.qcow2'], '1M')
    qemu_io('-f', 'qcow2', '-c', 'write -P 0x22 0 64k', p['other.qcow2'])
    qemu_img('create', '-q', '-f', 'qcow2', '-b', p['base.qcow2'], '-F',
             'qcow2', p['top.qcow2'], '1M')
    qemu_img('create', '-q', '-f', 'raw', p['r.raw'], '1M')
    q = daemon.qmp
    for fnode, fmt, path, extra in [
            ('fb', 'base', 'base.qcow2', {'read-only': True}),
            ('fo', 'other', 'other.qcow2', {}),
            ('ft', 'top', 'top.qcow2', {'backing': 'base'})]:
        q.execute('blockdev-add', driver='file', filename=p[path],
                  **{'node-name': fnode})
        q.execute('blockdev-add', driver='qcow2', file=fnode,
                  **{'node-name': fmt}, **extra)
    q.execute('blockdev-add', driver='file', filename=p['r.raw'],
              **{'node-name': 'fr'})
    q.execute('blockdev-add', driver='raw', file='fr', **{'node-name': 'r'})
    return p


def state(q):
    """{node: (ro, backing node-name or None)}"""
    nodes = q.execute('query-named-block-nodes', flat=True)
    graph = q.execute('x-debug-query-block-graph')
    names = {v['id']: v['name'] for v in graph['nodes']}
    backing = {}
    for e in graph['edges']:
        if e['name'] == 'backing':
            backing[names[e['parent']]] = names[e['child']]
    return {n['node-name']: (n['ro'], backing.get(n['node-name']))
            for n in nodes}


def reopen(q, *opts):
    return q.execute('blockdev-reopen', options=list(opts))


def refused(q, opts, desc):
    before = state(q)
    with pytest.raises(QMPError) as e:
        q.execute('blockdev-reopen', options=opts)
    assert e.value.desc == desc
    assert state(q) == before


def top(**kw):
    o = {'driver': 'qcow2', 'node-name': 'top', 'file': 'ft'}
    o.update(kw)
    return o


def other(**kw):
    o = {'driver': 'qcow2', 'node-name': 'other', 'file': 'fo'}
    o.update(kw)
    return o


def test_read_only_and_back(daemon, graph):
    q = daemon.qmp
    assert state(q)['top'] == (False, 'base')
    reopen(q, top(backing='base', **{'read-only': True}))
    assert state(q)['top'] == (True, 'base')
    # absent read-only means read-write, as in qemu
    reopen(q, top(backing='base'))
    assert state(q)['top'] == (False, 'base')
    # a backing image opened read-only may be made writable and back
    reopen(q, {'driver': 'qcow2', 'node-name': 'base', 'file': 'fb'})
    assert state(q)['base'][0] is False
    reopen(q, {'driver': 'qcow2', 'node-name': 'base', 'file': 'fb',
               'read-only': True})
    assert state(q)['base'][0] is True
    reopen(q, {'driver': 'raw', 'node-name': 'r', 'file': 'fr',
               'read-only': True})
    assert state(q)['r'][0] is True


def nbd_read(sock, name, off, n, write=None):
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_unix(sock)
    try:
        if write is not None:
            h.pwrite(write, off)
            h.flush()
        return h.pread(n, off)
    finally:
        h.shutdown()


def test_backing_change_seen_through_nbd(daemon, graph, sockdir):
    q = daemon.qmp
    sock = os.path.join(sockdir, 'nbd.sock')
    q.execute('nbd-server-start',
              addr={'type': 'unix', 'data': {'path': sock}})
    q.execute('block-export-add', type='nbd', id='e',
              **{'node-name': 'top'}, writable=True)
    assert nbd_read(sock, 'top', 0, 4096) == b'\x11' * 4096
    reopen(q, top(backing='other'))
    assert state(q)['top'] == (False, 'other')
    assert nbd_read(sock, 'top', 0, 4096) == b'\x22' * 4096
    reopen(q, top(backing=None))
    assert state(q)['top'] == (False, None)
    assert nbd_read(sock, 'top', 0, 4096) == b'\0' * 4096
    # a file node may be the backing node too
    reopen(q, top(backing='base'))
    # writes still land in top
    assert nbd_read(sock, 'top', 128 * KiB, 4096,
                    write=b'\x33' * 4096) == b'\x33' * 4096
    # read-only refused while the export writes
    refused(q, [top(backing='base', **{'read-only': True})],
            "Read-only block node 'top' cannot support read-write users")
    refused(q, [other(**{'read-only': True}),
                top(backing='base', **{'read-only': True})],
            "Read-only block node 'top' cannot support read-write users")
    q.execute('block-export-del', id='e')
    q.wait_event('BLOCK_EXPORT_DELETED')
    reopen(q, top(backing='base', **{'read-only': True}))
    # a writable export of a read-only node is refused; a read-only one
    # serves and refuses writes
    with pytest.raises(QMPError):
        q.execute('block-export-add', type='nbd', id='e',
                  **{'node-name': 'top'}, writable=True)
    q.execute('block-export-add', type='nbd', id='e2',
              **{'node-name': 'top'})
    with pytest.raises(nbd.Error):
        nbd_read(sock, 'top', 0, 4096, write=b'\x44' * 4096)
    assert nbd_read(sock, 'top', 128 * KiB, 4096) == b'\x33' * 4096
    q.execute('block-export-del', id='e2')
    q.wait_event('BLOCK_EXPORT_DELETED')
    q.execute('nbd-server-stop')
    daemon.qmp.execute('quit')
    daemon.wait(timeout=30)
    info = json.loads(qemu_img('info', '--output=json',
                               graph['top.qcow2']).stdout)
    assert info['backing-filename'] == graph['base.qcow2']
    out = qemu_io('-f', 'qcow2', '-c', 'read -P 0x33 128k 4k',
                  graph['top.qcow2']).stdout
    assert 'read 4096/4096' in out


def test_errors_change_nothing(daemon, graph):
    q = daemon.qmp
    refused(q, [top()], "backing is missing for 'top'")
    refused(q, [top(backing='base', **{'node-name': 'nope'})],
            "Failed to find node with node-name='nope'")
    refused(q, [{'driver': 'qcow2', 'file': 'ft'}], "node-name not specified")
    refused(q, [{'driver': 'qcow2', 'node-name': 'r', 'file': 'fr'}],
            "Cannot change the option 'driver'")
    refused(q, [top(backing='nope')],
            "Cannot find device='' nor node-name='nope'")
    refused(q, [top(backing='top')],
            "Making 'top' a backing child of 'top' would create a cycle")
    refused(q, [{'driver': 'raw', 'node-name': 'top', 'file': 'ft',
                 'backing': 'base'}],
            "Parameter 'options[0].backing' is unexpected")
    refused(q, [{'driver': 'raw', 'node-name': 'r'}],
            "Parameter 'options[0].file' is missing")
    refused(q, [other(x=1)], "Parameter 'options[0].x' is unexpected")
    refused(q, [other(**{'read-only': True}), top(backing='base'),
                other(**{'node-name': 'nope'})],
            "Failed to find node with node-name='nope'")
    refused(q, [other(**{'read-only': True}), {'node-name': 'top'}],
            "Parameter 'options[1].driver' is missing")
    refused(q, {}, "Invalid parameter type for 'options', expected: array")
    with pytest.raises(QMPError) as e:
        q.execute('blockdev-reopen')
    assert e.value.desc == "Parameter 'options' is missing"


def test_job_writer_refuses_read_only(daemon, graph, workdir):
    q = daemon.qmp
    tgt = os.path.join(str(workdir), 't.raw')
    qemu_img('create', '-q', '-f', 'raw', tgt, '1M')
    q.execute('blockdev-add', driver='file', filename=tgt,
              **{'node-name': 'tf'})
    q.execute('blockdev-add', driver='raw', file='tf', **{'node-name': 't'})
    q.execute('blockdev-mirror', **{'job-id': 'j'}, device='other',
              target='t', sync='full')
    q.wait_event('BLOCK_JOB_READY', match={'data': {'device': 'j'}})
    refused(q, [{'driver': 'raw', 'node-name': 't', 'file': 'tf',
                 'read-only': True}],
            "Read-only block node 't' cannot support read-write users")
    q.execute('block-job-cancel', device='j')
    q.wait_event('BLOCK_JOB_COMPLETED', match={'data': {'device': 'j'}})
    reopen(q, {'driver': 'raw', 'node-name': 't', 'file': 'tf',
               'read-only': True})
    assert state(q)['t'][0] is True
    assert qemu_img('compare', '-U', '-f', 'qcow2', '-F', 'raw',
                    graph['other.qcow2'], tgt).returncode == 0


@pytest.mark.blockjobd_only('qsd swaps the file child and resets options')
def test_what_blockjobd_refuses(daemon, graph):
    q = daemon.qmp
    refused(q, [top(backing='base', file='fo')],
            "Cannot change the option 'file'")
    refused(q, [other(cache={'direct': True})],
            "Cannot change the option 'cache'")
    refused(q, [other(**{'lazy-refcounts': True})],
            "Cannot change the option 'lazy-refcounts'")
    # an empty list changes nothing (qsd 7.2 aborts on it)
    assert reopen(q) == {}


def test_list_is_whole(daemon, graph):
    q = daemon.qmp
    reopen(q, other(**{'read-only': True}), top(backing=None),
           other(**{'read-only': True}))
    s = state(q)
    assert s['other'] == (True, None) and s['top'] == (False, None)
    reopen(q, other(), top(backing='base'))
    s = state(q)
    assert s['other'] == (False, None) and s['top'] == (False, 'base')


def test_format_and_file_together(daemon, graph):
    """qemu checks the list's permissions as a whole: a named file node and
    its format go read-only (or read-write) together in either order."""
    q = daemon.qmp
    fo = {'driver': 'file', 'node-name': 'fo',
          'filename': graph['other.qcow2']}
    refused(q, [dict(fo, **{'read-only': True})],
            "Read-only block node 'fo' cannot support read-write users")
    reopen(q, dict(fo, **{'read-only': True}), other(**{'read-only': True}))
    s = state(q)
    assert s['fo'][0] is True and s['other'][0] is True
    refused(q, [other()], 'Block node is read-only')
    reopen(q, other(), fo)
    s = state(q)
    assert s['fo'][0] is False and s['other'][0] is False


def test_stream_freezes_the_backing_link(daemon, workdir):
    """A stream job freezes the links it works across (qsd's words); the
    read-only switch is refused because the job writes top."""
    w = str(workdir)
    base, top_ = os.path.join(w, 'b.qcow2'), os.path.join(w, 't.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, '16M')
    qemu_io('-f', 'qcow2', '-c', 'write -P 1 0 8M', base)
    qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top_,
             '16M')
    q = daemon.qmp
    q.execute('blockdev-add', driver='file', filename=base,
              **{'node-name': 'fb'})
    q.execute('blockdev-add', driver='qcow2', file='fb', **{'read-only': True},
              **{'node-name': 'base'})
    q.execute('blockdev-add', driver='file', filename=top_,
              **{'node-name': 'ft'})
    q.execute('blockdev-add', driver='qcow2', file='ft', backing='base',
              **{'node-name': 'top'})
    # slow enough never to finish before it is cancelled
    q.execute('block-stream', **{'job-id': 's'}, device='top', speed=1024)
    for b in (None, 'fb'):
        refused(q, [top(backing=b)],
                "Cannot change frozen 'backing' link from 'top' to 'base'")
    refused(q, [top(backing='base', **{'read-only': True})],
            "Read-only block node 'top' cannot support read-write users")
    reopen(q, top(backing='base'))
    q.execute('block-job-cancel', device='s')
    q.wait_event('BLOCK_JOB_CANCELLED', match={'data': {'device': 's'}})
    reopen(q, top(backing=None))
    assert state(q)['top'] == (False, None)


def test_read_only_in_an_iothread(daemon_factory, workdir):
    d = daemon_factory('--object', 'iothread,id=io0')
    q = d.qmp
    qc = os.path.join(str(workdir), 'i.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', qc, '1M')
    q.execute('blockdev-add', driver='file', filename=qc,
              **{'node-name': 'fi'})
    q.execute('blockdev-add', driver='qcow2', file='fi',
              **{'node-name': 'i'})
    q.execute('x-blockdev-set-iothread', **{'node-name': 'i'},
              iothread='io0')
    opts = {'driver': 'qcow2', 'node-name': 'i', 'file': 'fi'}
    reopen(q, dict(opts, **{'read-only': True}))
    assert state(q)['i'][0] is True
    reopen(q, opts)
    assert state(q)['i'][0] is False
    q.execute('quit')
    d.wait(timeout=30)
    qemu_img('check', qc)
