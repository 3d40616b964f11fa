"""drive-backup (deprecated in qemu 7.2): blockdev-backup to a file that is
created (or, with mode existing, opened) for the job.

Events compare with the blockdev-backup recordings (the job is the same
backup job, and qsd 7.2 emits the same sequence for it).  Expectations from
qemu-storage-daemon 7.2; the file runs unchanged against it
(BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)).
"""

import json
import os

import pytest

import copyjob
import golden
from bjtest import QMPError, qemu_img, qemu_io
from copyjob import Images, finish

MiB = 1 << 20


@pytest.fixture
def imgs(workdir):
    return Images(workdir, keep_ref=True)


def add_src(q, imgs):
    q.execute('blockdev-add', driver='raw', **{'node-name': 'src'},
              file={'driver': 'file', 'filename': imgs.src})


def info(path):
    return json.loads(qemu_img('info', '-U', '--output=json', path).stdout)


def n_nodes(q):
    return len(q.execute('query-named-block-nodes', flat=True))


def refused(q, args, desc):
    with pytest.raises(QMPError) as e:
        q.execute('drive-backup', args)
    assert e.value.desc == desc


@pytest.mark.parametrize('mode', ['auto', 'manual'])
def test_full_existing_events_as_blockdev_backup(daemon, imgs, mode):
    q = daemon.qmp
    add_src(q, imgs)
    rec = golden.Recorder(q, 'backup0')
    q.execute('drive-backup', copyjob.in_mode(mode, {
        'job-id': 'backup0', 'device': 'src', 'target': imgs.tgt,
        'sync': 'full', 'mode': 'existing', 'format': 'qcow2'}))
    finish(q, rec, mode)
    golden.assert_matches('backup-full.' + mode, rec.events, raw=True)
    assert n_nodes(q) == 2   # src and its file: the target went with the job
    q.execute('blockdev-del', **{'node-name': 'src'})
    imgs.compare_ref()
    imgs.check()


def test_creates_the_target(daemon, imgs, workdir):
    q = daemon.qmp
    add_src(q, imgs)
    raw = os.path.join(str(workdir), 'new.raw')
    qc = os.path.join(str(workdir), 'new.qcow2')
    # the source's format by default
    q.execute('drive-backup', **{'job-id': 'b1', 'device': 'src',
                                 'target': raw, 'sync': 'full'})
    q.wait_event('BLOCK_JOB_COMPLETED', match={'data': {'device': 'b1'}})
    q.execute('drive-backup', **{'job-id': 'b2', 'device': 'src',
                                 'target': qc, 'sync': 'full',
                                 'format': 'qcow2'})
    ev = q.wait_event('BLOCK_JOB_COMPLETED', match={'data': {'device': 'b2'}})
    assert 'error' not in ev['data']
    assert info(raw)['format'] == 'raw'
    assert info(qc)['format'] == 'qcow2'
    assert info(qc)['virtual-size'] == copyjob.SIZE
    q.execute('blockdev-del', **{'node-name': 'src'})
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'raw', imgs.src, raw)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', imgs.src, qc)
    qemu_img('check', '-q', qc)


def test_existing_probes_the_format(daemon, imgs):
    q = daemon.qmp
    add_src(q, imgs)
    q.execute('drive-backup', **{'job-id': 'b1', 'device': 'src',
                                 'target': imgs.tgt, 'sync': 'full',
                                 'mode': 'existing'})
    ev = q.wait_event('BLOCK_JOB_COMPLETED', match={'data': {'device': 'b1'}})
    assert 'error' not in ev['data']
    q.execute('blockdev-del', **{'node-name': 'src'})
    imgs.compare_ref()
    imgs.check()


def test_sync_top_stores_the_backing(daemon, workdir):
    d = str(workdir)
    base, top, tgt = (os.path.join(d, n) for n in
                      ('b.qcow2', 't.qcow2', 'bk.qcow2'))
    qemu_img('create', '-f', 'qcow2', base, '4M')
    qemu_io('-f', 'qcow2', '-c', 'write -P 1 0 2M', base)
    qemu_img('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top)
    qemu_io('-f', 'qcow2', '-c', 'write -P 2 1M 1M', top)
    q = daemon.qmp
    # base read-only, as a backing image opened from the header is (qsd
    # opens the new target with its backing, and a writer on base would
    # refuse it that)
    q.execute('blockdev-add', driver='qcow2', **{'node-name': 'base'},
              file={'driver': 'file', 'filename': base}, **{'read-only': True})
    q.execute('blockdev-add', driver='qcow2', **{'node-name': 'top'},
              file={'driver': 'file', 'filename': top}, backing='base')
    q.execute('drive-backup', **{'job-id': 'b', 'device': 'top',
                                 'target': tgt, 'sync': 'top'})
    ev = q.wait_event('BLOCK_JOB_COMPLETED')
    assert 'error' not in ev['data']
    i = info(tgt)
    assert i['backing-filename'] == base
    assert i['backing-filename-format'] == 'qcow2'
    q.execute('blockdev-del', **{'node-name': 'top'})
    q.execute('blockdev-del', **{'node-name': 'base'})
    # the target over the base reads as top does
    qemu_img('compare', '-q', top, tgt)
    qemu_img('check', '-q', tgt)


def test_sync_none_and_transaction(daemon, imgs, workdir):
    q = daemon.qmp
    q.execute('blockdev-add', driver='qcow2', **{'node-name': 'q'},
              file={'driver': 'file', 'filename': imgs.tgt})
    fleece = os.path.join(str(workdir), 'fleece.qcow2')
    q.execute('transaction', actions=[{
        'type': 'drive-backup',
        'data': {'job-id': 'n', 'device': 'q', 'target': fleece,
                 'sync': 'none'}}])
    assert info(fleece)['backing-filename'] == imgs.tgt
    jobs = q.execute('query-jobs')
    assert [(j['id'], j['type']) for j in jobs] == [('n', 'backup')]
    q.execute('job-cancel', id='n')
    q.wait_event('BLOCK_JOB_CANCELLED')
    q.execute('blockdev-del', **{'node-name': 'q'})


def test_refusals(daemon, imgs, workdir):
    q = daemon.qmp
    d = str(workdir)
    t1 = os.path.join(d, 't1.img')
    refused(q, {'device': 'nope', 'target': t1, 'sync': 'full'},
            "Cannot find device='nope' nor node-name='nope'")
    add_src(q, imgs)
    refused(q, {'device': 'src', 'target': '/nonexistent/t', 'sync': 'full'},
            "Could not create '/nonexistent/t': No such file or directory")
    refused(q, {'device': 'src', 'target': t1 + '.missing', 'sync': 'full',
                'mode': 'existing'},
            "Could not open '%s.missing': No such file or directory" % t1)
    refused(q, {'device': 'src', 'target': t1, 'sync': 'full',
                'format': 'bogus'}, "Unknown file format 'bogus'")
    refused(q, {'device': 'src', 'target': t1, 'sync': 'none'},
            "Backing file not supported for file format 'raw'")
    assert not os.path.exists(t1)
    # the file is made before the job's own checks, as qsd does
    refused(q, {'device': 'src', 'target': t1, 'sync': 'full',
                'bitmap-mode': 'always'},
            'Cannot specify bitmap sync mode without a bitmap')
    refused(q, {'device': 'src', 'target': t1, 'sync': 'incremental'},
            "must provide a valid bitmap name for 'incremental' sync mode")
    refused(q, {'device': 'src', 'target': t1, 'sync': 'full',
                'mode': 'bogus'},
            "Parameter 'mode' does not accept value 'bogus'")
    assert q.execute('query-jobs') == []
    assert n_nodes(q) == 2   # src and its file: no target left open
    q.execute('blockdev-del', **{'node-name': 'src'})
