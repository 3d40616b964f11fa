"""SIGKILL during block-stream (issue 22 #9): the overlay is consistent,
keeps what the stream had copied by then (up to the last new L2 table),
and has no leaked clusters (qsd 7.2 leaked 105 here in one run).

A new L2 table is a checkpoint (qcow2-cluster.c, get_l2_for_write): all
metadata is written, L1 last.  Without it, writing the new table wrote
the refcount blocks but not the L2 entries of the clusters they counted,
and a kill leaked every cluster copied so far (8192 of them in a 2 GiB
stream); before new tables were written at once, a kill kept nothing.
The overlay has 4 KiB clusters, so that each L2 table covers 2 MiB and a
64 MiB stream makes 32 of them.
"""

import json
import signal

import pytest

from bjtest import qemu_img, qemu_io, wait_until

MiB = 1 << 20
SIZE = 64 * MiB


@pytest.mark.blockjobd_only('qsd leaks here (105 clusters in one run)')
@pytest.mark.timeout(120)
def test_kill_during_stream(daemon_factory, workdir):
    base, top = str(workdir / 'base.qcow2'), str(workdir / 'top.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', base, str(SIZE))
    qemu_io('-c', 'write -P 7 0 64M', base)
    qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096',
             '-b', base, '-F', 'qcow2', top)
    d = daemon_factory()
    qmp = d.qmp
    qmp.execute('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                 'file': {'driver': 'file',
                                          'filename': top}})
    qmp.execute('block-stream', {'job-id': 's', 'device': 'top',
                                 'speed': 16 * MiB})
    wait_until(lambda: qmp.execute('query-block-jobs')[0]['offset'] >=
               SIZE // 2, 60, what='half of the stream')
    d.send_signal(signal.SIGKILL)
    d.wait()
    d.check(expect_rc=-signal.SIGKILL)
    r = qemu_img('check', '--output=json', '-f', 'qcow2', top, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads(r.stdout)
    assert info.get('leaks', 0) == 0 and info.get('corruptions', 0) == 0
    # At least the tables before the last checkpoint were kept.
    assert info['allocated-clusters'] * 4096 >= SIZE // 4
    qemu_io('-c', 'read -P 7 0 64M', top)
