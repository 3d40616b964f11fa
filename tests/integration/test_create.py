"""blockdev-create through the daemon: the job's event sequence (no
BLOCK_JOB_* events, never auto-dismissed), query-jobs while concluded, the
images it makes (checked and used by qemu-img/qemu-io, written over NBD),
and the errors as qemu-storage-daemon 7.2 words them (command errors vs job
errors).
"""

import os

import pytest

from bjtest import (QMPError, nbd_connect, nbd_export, nbd_export_teardown,
                   qemu_img, qemu_io, run)

MiB = 1 << 20


def statuses(events, job_id):
    return [e['data']['status'] for e in events
            if e['event'] == 'JOB_STATUS_CHANGE'
            and e['data']['id'] == job_id]


def create(qmp, options, job_id='c0'):
    """Runs blockdev-create to concluded; returns (query-jobs entry,
    events seen).  The job stays until dismissed."""
    qmp.execute('blockdev-create', {'job-id': job_id, 'options': options})
    # Everything before the job concluded, in order, then that event.
    last = qmp.wait_event('JOB_STATUS_CHANGE', timeout=60,
                          match={'data': {'id': job_id,
                                          'status': 'concluded'}})
    events = qmp.get_events() + [last]
    info = [j for j in qmp.execute('query-jobs') if j['id'] == job_id]
    assert len(info) == 1
    return info[0], events


def dismiss(qmp, job_id='c0'):
    qmp.execute('job-dismiss', id=job_id)
    ev = qmp.wait_event('JOB_STATUS_CHANGE',
                        match={'data': {'id': job_id}})
    assert ev['data']['status'] == 'null'
    assert [j for j in qmp.execute('query-jobs') if j['id'] == job_id] == []


def create_ok(qmp, options, job_id='c0'):
    info, events = create(qmp, options, job_id)
    assert info == {'id': job_id, 'type': 'create', 'status': 'concluded',
                    'current-progress': 1, 'total-progress': 1}
    assert statuses(events, job_id) == ['created', 'running', 'waiting',
                                        'pending', 'concluded']
    assert not [e for e in events if e['event'].startswith('BLOCK_JOB_')]
    dismiss(qmp, job_id)


def create_fails(qmp, options, msg, job_id='c0'):
    info, events = create(qmp, options, job_id)
    assert info.get('error') == msg
    assert info['status'] == 'concluded'
    assert statuses(events, job_id) == ['created', 'running', 'aborting',
                                        'concluded']
    assert not [e for e in events if e['event'].startswith('BLOCK_JOB_')]
    dismiss(qmp, job_id)


def test_create_file(daemon):
    path = os.path.join(daemon.workdir, 'f.img')
    create_ok(daemon.qmp, {'driver': 'file', 'filename': path, 'size': MiB})
    assert os.path.getsize(path) == MiB
    # Over an existing file: emptied, then sized.
    qemu_io('-f', 'raw', '-c', 'write -P 0x55 0 64k', path)
    create_ok(daemon.qmp, {'driver': 'file', 'filename': path,
                           'size': 2 * MiB, 'preallocation': 'full'})
    assert os.path.getsize(path) == 2 * MiB
    qemu_io('-f', 'raw', '-c', 'read -P 0 0 2M', path)
    create_ok(daemon.qmp, {'driver': 'file', 'filename': path,
                           'size': MiB, 'preallocation': 'falloc',
                           'nocow': True, 'extent-size-hint': 0})
    assert os.path.getsize(path) == MiB


def test_concluded_job_waits_for_dismiss(daemon):
    qmp = daemon.qmp
    path = os.path.join(daemon.workdir, 'f.img')
    opts = {'driver': 'file', 'filename': path, 'size': 0}
    create(qmp, opts)
    assert qmp.execute('query-block-jobs') == []
    with pytest.raises(QMPError) as e:
        qmp.execute('blockdev-create', {'job-id': 'c0', 'options': opts})
    assert e.value.desc == "Job ID 'c0' already in use"
    with pytest.raises(QMPError) as e:
        qmp.execute('job-finalize', id='c0')
    assert e.value.desc == ("Job 'c0' in state 'concluded' cannot accept "
                            "command verb 'finalize'")
    dismiss(qmp)


def test_create_qcow2_and_use(daemon):
    qmp = daemon.qmp
    path = os.path.join(daemon.workdir, 'q.qcow2')
    create_ok(qmp, {'driver': 'file', 'filename': path, 'size': 0})
    qmp.execute('blockdev-add', driver='file', node_name='f0', filename=path)
    create_ok(qmp, {'driver': 'qcow2', 'file': 'f0', 'size': 64 * MiB,
                    'cluster-size': 65536})
    # The new image opens in the daemon and takes writes over NBD.
    pytest.importorskip('nbd')
    qmp.execute('blockdev-add', driver='qcow2', node_name='q0', file='f0')
    sock = nbd_export(daemon, 'q0')
    h = nbd_connect(sock, 'q0')
    assert h.get_size() == 64 * MiB
    h.pwrite(b'\x42' * MiB, 3 * MiB)
    nbd_export_teardown(qmp, h, 'q0', 'f0')
    qemu_img('check', '-q', path)
    qemu_io('-f', 'qcow2', '-c', 'read -P 0x42 3M 1M', '-c', 'read -P 0 0 3M',
            path)
    info = run('qemu-img', 'info', path).stdout
    assert 'virtual size: 64 MiB' in info
    assert 'compat: 1.1' in info


def test_create_qcow2_inline_file(daemon):
    qmp = daemon.qmp
    path = os.path.join(daemon.workdir, 'i.qcow2')
    qemu_img('create', '-q', '-f', 'raw', path, 0)
    create_ok(qmp, {'driver': 'qcow2', 'size': MiB,
                    'file': {'driver': 'file', 'filename': path}})
    # The inline node was for the creation only.
    assert qmp.execute('query-named-block-nodes') == []
    qemu_img('check', '-q', path)
    create_ok(qmp, {'driver': 'qcow2', 'size': 2 * MiB,
                    'file': {'driver': 'file', 'filename': path,
                             'node-name': 'mine'}})
    assert qmp.execute('query-named-block-nodes') == []
    assert 'virtual size: 2 MiB' in run('qemu-img', 'info', path).stdout
    create_fails(qmp, {'driver': 'qcow2', 'size': MiB,
                       'file': {'driver': 'file',
                                'filename': '/nonexistent/x'}},
                 "Could not open '/nonexistent/x': No such file or "
                 "directory")


def test_create_qcow2_options(daemon):
    qmp = daemon.qmp
    path = os.path.join(daemon.workdir, 'q.qcow2')
    base = os.path.join(daemon.workdir, 'base.raw')
    qemu_img('create', '-q', '-f', 'raw', base, MiB)
    qemu_img('create', '-q', '-f', 'raw', path, 0)
    qmp.execute('blockdev-add', driver='file', node_name='f0', filename=path)
    create_ok(qmp, {'driver': 'qcow2', 'file': 'f0', 'size': MiB,
                    'version': 'v2', 'cluster-size': 4096,
                    'backing-file': 'base.raw', 'backing-fmt': 'raw'})
    qemu_img('check', '-q', path)
    info = run('qemu-img', 'info', '-U', path).stdout
    assert 'compat: 0.10' in info
    assert 'cluster_size: 4096' in info
    assert 'backing file: base.raw' in info
    assert 'backing file format: raw' in info
    create_ok(qmp, {'driver': 'qcow2', 'file': 'f0', 'size': MiB,
                    'lazy-refcounts': True, 'refcount-bits': 64,
                    'cluster-size': 512})
    qemu_img('check', '-q', path)
    info = run('qemu-img', 'info', '-U', path).stdout
    assert 'refcount bits: 64' in info
    assert 'lazy refcounts: true' in info


QCOW2_JOB_ERRORS = [
    ({'file': 'nonode', 'size': MiB},
     "Cannot find device='nonode' nor node-name='nonode'"),
    ({'size': 1000}, 'Image size must be a multiple of 512 bytes'),
    ({'size': MiB, 'cluster-size': 1000},
     'Cluster size must be a power of two between 512 and 2048k'),
    ({'size': MiB, 'cluster-size': 4 * MiB},
     'Cluster size must be a power of two between 512 and 2048k'),
    ({'size': MiB, 'version': 'v2', 'lazy-refcounts': True},
     'Lazy refcounts only supported with compatibility level 1.1 and above '
     '(use version=v3 or greater)'),
    ({'size': MiB, 'version': 'v2', 'refcount-bits': 8},
     'Different refcount widths than 16 bits require compatibility level '
     '1.1 or above (use version=v3 or greater)'),
    ({'size': MiB, 'refcount-bits': 3},
     'Refcount width must be a power of two and may not exceed 64 bits'),
    ({'size': MiB, 'refcount-bits': 128},
     'Refcount width must be a power of two and may not exceed 64 bits'),
    ({'size': MiB, 'backing-fmt': 'raw'},
     'Backing format cannot be used without backing file'),
    ({'size': MiB, 'compression-type': 'zstd', 'version': 'v2'},
     'Non-zlib compression type is only supported with compatibility level '
     '1.1 and above (use version=v3 or greater)'),
    ({'size': MiB, 'extended-l2': True, 'cluster-size': 4096},
     'Extended L2 entries are only supported with cluster sizes of at least '
     '16384 bytes'),
    ({'size': MiB, 'data-file-raw': True}, 'data-file-raw requires data-file'),
    ({'size': (1 << 51) + 512},
     'Could not resize image: Failed to grow the L1 table: File too large'),
    ({'size': 1 << 40, 'cluster-size': 512},
     'Could not resize image: Failed to grow the L1 table: File too large'),
    ({'size': (1 << 63) - 512, 'cluster-size': 2 * MiB},
     'Could not resize image: offset(9223372036854775296) exceeds '
     'maximum(9223372035781033984)'),
]


@pytest.mark.parametrize('opts,msg', QCOW2_JOB_ERRORS)
def test_qcow2_job_errors(daemon, opts, msg):
    path = os.path.join(daemon.workdir, 'e.img')
    qemu_img('create', '-q', '-f', 'raw', path, 0)
    daemon.qmp.execute('blockdev-add', driver='file', node_name='f0',
                       filename=path)
    create_fails(daemon.qmp, dict({'driver': 'qcow2', 'file': 'f0'}, **opts),
                 msg)


def test_qcow2_target_in_use_or_read_only(daemon):
    qmp = daemon.qmp
    path = os.path.join(daemon.workdir, 'e.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', path, MiB)
    qmp.execute('blockdev-add', driver='file', node_name='f0', filename=path)
    qmp.execute('blockdev-add', driver='qcow2', node_name='q0', file='f0')
    create_fails(qmp, {'driver': 'qcow2', 'file': 'f0', 'size': MiB},
                 "Permission conflict on node 'f0': permissions 'write, "
                 "resize' are both required by an unnamed block device "
                 "(uses node 'f0' as 'root' child) and unshared by node 'q0' "
                 "(uses node 'f0' as 'file' child).")
    qmp.execute('blockdev-del', node_name='q0')
    qmp.execute('blockdev-del', node_name='f0')
    qmp.execute('blockdev-add', driver='file', node_name='ro', filename=path,
                read_only=True)
    create_fails(qmp, {'driver': 'qcow2', 'file': 'ro', 'size': MiB},
                 'Block node is read-only')
    qmp.execute('blockdev-add', driver='null-co', node_name='nul')
    create_fails(qmp, {'driver': 'qcow2', 'file': 'nul', 'size': MiB},
                 'Image is not in qcow2 format')


def test_file_job_errors(daemon):
    qmp = daemon.qmp
    d = daemon.workdir
    create_fails(qmp, {'driver': 'file', 'filename': '/nonexistent/dir/x.img',
                       'size': MiB},
                 "Could not create '/nonexistent/dir/x.img': No such file or "
                 "directory")
    create_fails(qmp, {'driver': 'file', 'filename': d, 'size': MiB},
                 "Could not create '%s': Is a directory" % d)
    create_fails(qmp, {'driver': 'file', 'filename': os.path.join(d, 'x'),
                       'size': 1000, 'preallocation': 'metadata'},
                 'Unsupported preallocation mode: metadata')
    create_fails(qmp, {'driver': 'file', 'filename': os.path.join(d, 'x'),
                       'size': MiB, 'extent-size-hint': 1 << 33},
                 'Extent size hint is too large')
    create_fails(qmp, {'driver': 'file', 'filename': os.path.join(d, 'x'),
                       'size': -1},
                 'Could not resize file: Invalid argument')
    for mode in ('falloc', 'full'):
        create_fails(qmp, {'driver': 'file', 'filename': os.path.join(d, 'x'),
                           'size': -1, 'preallocation': mode},
                     'Cannot use preallocation for shrinking files')
    # A node writing the file keeps creation away from it.
    path = os.path.join(d, 'busy.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', path, MiB)
    qmp.execute('blockdev-add', driver='qcow2', node_name='q0',
                file={'driver': 'file', 'filename': path})
    create_fails(qmp, {'driver': 'file', 'filename': path, 'size': MiB},
                 'Failed to get "write" lock')


@pytest.mark.parametrize('args,msg', [
    ({'options': {'driver': 'file', 'filename': 'a', 'size': 0}},
     "Parameter 'job-id' is missing"),
    ({'job-id': '1a', 'options': {'driver': 'file', 'filename': 'a',
                                  'size': 0}},
     "Invalid job ID '1a'"),
    ({'job-id': 'c0'}, "Parameter 'options' is missing"),
    ({'job-id': 'c0', 'options': 5},
     "Invalid parameter type for 'options', expected: object"),
    ({'job-id': 'c0', 'options': {'filename': 'a'}},
     "Parameter 'options.driver' is missing"),
    ({'job-id': 'c0', 'options': {'driver': 'bogus'}},
     "Parameter 'driver' does not accept value 'bogus'"),
    ({'job-id': 'c0', 'options': {'driver': 'null-co'}},
     'Driver does not support blockdev-create'),
    ({'job-id': 'c0', 'options': {'driver': 'raw'}},
     'Driver does not support blockdev-create'),
    ({'job-id': 'c0', 'options': {'driver': 'iscsi'}},
     "Block driver 'iscsi' not found or not supported"),
    ({'job-id': 'c0', 'options': {'driver': 'file', 'filename': 'a'}},
     "Parameter 'options.size' is missing"),
    ({'job-id': 'c0', 'options': {'driver': 'file', 'filename': 'a',
                                  'size': '1M'}},
     "Parameter 'options.size' expects uint64"),
    ({'job-id': 'c0', 'options': {'driver': 'file', 'filename': 'a',
                                  'size': 0, 'preallocation': 'bogus'}},
     "Parameter 'preallocation' does not accept value 'bogus'"),
    ({'job-id': 'c0', 'options': {'driver': 'file', 'filename': 5,
                                  'size': 0}},
     "Invalid parameter type for 'options.filename', expected: string"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'size': 0}},
     "Parameter 'options.file' is missing"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'file': 5, 'size': 0}},
     "Invalid parameter type for 'file', expected: BlockdevRef"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'file': 'f',
                                  'size': 0, 'version': 'v4'}},
     "Parameter 'version' does not accept value 'v4'"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'file': 'f',
                                  'size': 0, 'cluster-size': 'x'}},
     "Parameter 'options.cluster-size' expects uint64"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'file': 'f',
                                  'size': 0, 'lazy-refcounts': 'x'}},
     "Invalid parameter type for 'options.lazy-refcounts', expected: "
     "boolean"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'file': 'f',
                                  'size': 0, 'bogus': 1}},
     "Parameter 'options.bogus' is unexpected"),
    ({'job-id': 'c0', 'options': {'driver': 'file', 'filename': 'a',
                                  'size': 0}, 'foo': 1},
     "Parameter 'foo' is unexpected"),
    # An inline file is checked against the schema at once.
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'size': 0,
                                  'file': {'filename': 'x'}}},
     "Parameter 'options.file.driver' is missing"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'size': 0,
                                  'file': {'driver': 'bogus'}}},
     "Parameter 'driver' does not accept value 'bogus'"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'size': 0,
                                  'file': {'driver': 'file'}}},
     "Parameter 'options.file.filename' is missing"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'size': 0,
                                  'file': {'driver': 'file',
                                           'filename': 5}}},
     "Invalid parameter type for 'options.file.filename', expected: "
     "string"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'size': 0,
                                  'file': {'driver': 'file', 'filename': 'x',
                                           'bogus': 1}}},
     "Parameter 'options.file.bogus' is unexpected"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'size': 0,
                                  'file': {'driver': 'file', 'filename': 'x',
                                           'read-only': 'x'}}},
     "Invalid parameter type for 'options.file.read-only', expected: "
     "boolean"),
    ({'job-id': 'c0', 'options': {'driver': 'qcow2', 'size': 0,
                                  'file': {'driver': 'raw',
                                           'file': {'driver': 'file'}}}},
     "Parameter 'options.file.file.filename' is missing"),
])
def test_command_errors(daemon, args, msg):
    with pytest.raises(QMPError) as e:
        daemon.qmp.execute('blockdev-create', args)
    assert e.value.desc == msg
    assert daemon.qmp.execute('query-jobs') == []
    assert [e for e in daemon.qmp.get_events()
            if e['event'] == 'JOB_STATUS_CHANGE'] == []
