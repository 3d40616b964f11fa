"""query-block and x-debug-query-block-graph.

Expectations from qemu-storage-daemon 7.2; the file runs unchanged against
it.  Vertex ids are arbitrary, so graphs are compared by names.
"""

import os

import pytest

from bjtest import QMPError

MiB = 1 << 20


def add_raw(q, workdir, node):
    path = os.path.join(str(workdir), node + '.img')
    with open(path, 'wb') as f:
        f.truncate(MiB)
    q.execute('blockdev-add', driver='file', **{'node-name': node + 'f'},
              filename=path)
    q.execute('blockdev-add', driver='raw', **{'node-name': node},
              file=node + 'f')


def graph(q):
    """(vertices as {(type, name)}, edges as {(parent, child, name, perm,
    shared)} with vertices named (type, name))."""
    g = q.execute('x-debug-query-block-graph')
    assert set(g) == {'nodes', 'edges'}
    ids = {}
    for n in g['nodes']:
        assert set(n) == {'id', 'name', 'type'}
        assert n['id'] not in ids
        ids[n['id']] = (n['type'], n['name'])
    edges = set()
    for e in g['edges']:
        assert set(e) == {'parent', 'child', 'name', 'perm', 'shared-perm'}
        edges.add((ids[e['parent']], ids[e['child']], e['name'],
                   tuple(e['perm']), tuple(e['shared-perm'])))
    return sorted(ids.values()), edges


def test_query_block_lists_no_devices(daemon, workdir):
    q = daemon.qmp
    assert q.execute('query-block') == []
    add_raw(q, workdir, 'r')
    assert q.execute('query-block') == []
    with pytest.raises(QMPError) as e:
        q.execute('query-block', flat=True)
    assert e.value.desc == "Parameter 'flat' is unexpected"


def test_block_graph(daemon, workdir, sockdir):
    q = daemon.qmp
    assert graph(q) == ([], set())
    add_raw(q, workdir, 'r')
    add_raw(q, workdir, 't')
    drv = 'block-driver'
    all_perms = ('resize', 'write-unchanged', 'write', 'consistent-read')
    assert graph(q) == (
        sorted([(drv, 'r'), (drv, 'rf'), (drv, 't'), (drv, 'tf')]),
        {((drv, 'r'), (drv, 'rf'), 'file', (), all_perms),
         ((drv, 't'), (drv, 'tf'), 'file', (), all_perms)})
    q.execute('nbd-server-start',
              addr={'type': 'unix',
                    'data': {'path': os.path.join(sockdir, 'nbd.sock')}})
    q.execute('block-export-add', type='nbd', id='e', **{'node-name': 'r'},
              writable=True)
    rw = ('write', 'consistent-read')
    shared = ('write-unchanged', 'write', 'consistent-read')
    # exactly what qsd 7.2 answers here
    assert graph(q) == (
        sorted([(drv, 'r'), (drv, 'rf'), (drv, 't'), (drv, 'tf'),
                ('block-backend', '')]),
        {((drv, 'r'), (drv, 'rf'), 'file', rw, shared),
         (('block-backend', ''), (drv, 'r'), 'root', rw, shared),
         ((drv, 't'), (drv, 'tf'), 'file', (), all_perms)})
    q.execute('blockdev-mirror', **{'job-id': 'j'}, device='r', target='t',
              sync='full')
    q.wait_event('BLOCK_JOB_READY')
    vertices, edges = graph(q)
    assert ('block-job', 'j') in vertices
    names = {e[2] for e in edges if e[0] == ('block-job', 'j')}
    assert {'source', 'target'} <= names
    assert ((drv, 't') in [e[1] for e in edges
                           if e[0] == ('block-job', 'j')])
    q.execute('block-job-cancel', device='j')
    q.wait_event('BLOCK_JOB_COMPLETED')
    q.execute('block-export-del', id='e')
    q.wait_event('BLOCK_EXPORT_DELETED')
    q.execute('nbd-server-stop')
    assert graph(q)[0] == sorted([(drv, 'r'), (drv, 'rf'), (drv, 't'),
                                  (drv, 'tf')])
