"""change-backing-file: rewrites the backing file name an image stores.

Expectations from qemu-storage-daemon 7.2; the file runs unchanged against
it (BLOCKJOBD_BIN=$(command -v qemu-storage-daemon)).
"""

import json
import os

import pytest

from bjtest import QMPError, qemu_img


@pytest.fixture
def images(workdir):
    d = str(workdir)
    p = {n: os.path.join(d, n + '.qcow2') for n in ('b', 'm', 't', 'o')}
    qemu_img('create', '-f', 'qcow2', p['b'], '1M')
    qemu_img('create', '-f', 'qcow2', '-b', p['b'], '-F', 'qcow2', p['m'])
    qemu_img('create', '-f', 'qcow2', '-b', p['m'], '-F', 'qcow2', p['t'])
    qemu_img('create', '-f', 'qcow2', p['o'], '1M')
    return p


def stored_backing(path):
    info = json.loads(qemu_img('info', '--output=json', '-U', path).stdout)
    return info.get('backing-filename'), info.get('backing-filename-format')


def check(path):
    """qemu-img check of the image alone (its stored backing name may now
    point nowhere)."""
    qemu_img('check', 'json:' + json.dumps(
        {'driver': 'qcow2', 'backing': None,
         'file': {'driver': 'file', 'filename': path}}))


def open_chain(q, p, mid_ro=False):
    q.execute('blockdev-add', driver='qcow2', **{'node-name': 'base'},
              file={'driver': 'file', 'filename': p['b']})
    q.execute('blockdev-add', driver='qcow2', **{'node-name': 'mid'},
              file={'driver': 'file', 'filename': p['m']}, backing='base',
              **{'read-only': mid_ro})
    q.execute('blockdev-add', driver='qcow2', **{'node-name': 'top'},
              file={'driver': 'file', 'filename': p['t']}, backing='mid')
    q.execute('blockdev-add', driver='qcow2', **{'node-name': 'o'},
              file={'driver': 'file', 'filename': p['o']})


def cbf(q, device, image, file):
    return q.execute('change-backing-file', device=device,
                     **{'image-node-name': image, 'backing-file': file})


def refused(q, device, image, desc):
    with pytest.raises(QMPError) as e:
        cbf(q, device, image, 'new.qcow2')
    assert e.value.desc == desc


def test_rewrites_the_name_only(daemon, images):
    q = daemon.qmp
    open_chain(q, images)
    assert cbf(q, 'top', 'mid', '/elsewhere/b2.qcow2') == {}
    assert stored_backing(images['m']) == ('/elsewhere/b2.qcow2', 'qcow2')
    assert cbf(q, 'top', 'top', 'm-renamed.qcow2') == {}
    assert stored_backing(images['t']) == ('m-renamed.qcow2', 'qcow2')
    # the graph did not change: top still reads through mid and base
    nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
    assert nodes['top']['backing_file_depth'] == 2
    # an empty name stores none
    assert cbf(q, 'top', 'top', '') == {}
    assert stored_backing(images['t']) == (None, None)
    for n in ('top', 'mid', 'base', 'o'):
        q.execute('blockdev-del', **{'node-name': n})
    for n in ('b', 'm', 't'):
        check(images[n])


def test_read_only_image(daemon, images):
    q = daemon.qmp
    open_chain(q, images, mid_ro=True)
    assert cbf(q, 'top', 'mid', 'b3.qcow2') == {}
    assert stored_backing(images['m']) == ('b3.qcow2', 'qcow2')
    nodes = {n['node-name']: n for n in q.execute('query-named-block-nodes')}
    assert nodes['mid']['ro'] is True      # reopened read-only again
    q.execute('blockdev-del', **{'node-name': 'top'})
    q.execute('blockdev-del', **{'node-name': 'mid'})
    check(images['m'])


def test_refusals_change_nothing(daemon, images):
    q = daemon.qmp
    refused(q, 'nope', 'x', "Cannot find device='nope' nor node-name='nope'")
    open_chain(q, images)
    refused(q, 'mid', 'mid', 'Need a root block node')
    refused(q, 'top', 'nope', "Cannot find device='' nor node-name='nope'")
    refused(q, 'top', 'base', 'not allowing backing file change on an '
            'image without a backing file')
    refused(q, 'o', 'top', "'o' and image file are not in the same chain")
    with pytest.raises(QMPError) as e:
        q.execute('change-backing-file', device='top',
                  **{'image-node-name': 'mid'})
    assert e.value.desc == "Parameter 'backing-file' is missing"
    assert stored_backing(images['m'])[0] == images['b']
    assert stored_backing(images['t'])[0] == images['m']


def test_refused_while_a_job_runs(daemon, images):
    q = daemon.qmp
    open_chain(q, images)
    q.execute('blockdev-mirror', **{'job-id': 'j'}, device='top', target='o',
              sync='top')
    q.wait_event('BLOCK_JOB_READY')
    # the job's filter sits above top now
    refused(q, 'top', 'mid', 'Need a root block node')
    q.execute('block-job-cancel', device='j')
    q.wait_event('BLOCK_JOB_COMPLETED')
    assert stored_backing(images['m'])[0] == images['b']
    assert cbf(q, 'top', 'mid', 'x.qcow2') == {}
