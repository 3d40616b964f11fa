"""block-stream and intermediate block-commit while an NBD client writes to
the active layer throughout: every write survives, the chain ends as
expected and top reads the reference with the client's writes applied.
"""

import random

import pytest

import golden
from bjtest import (nbd_connect, nbd_export, nbd_export_teardown,
                    nbd_random_write, qemu_img)
from chain import Chain

nbd = pytest.importorskip('nbd')

MiB = 1 << 20
SIZE = 32 * MiB

# Every test that uses `daemon` twice: nodes in the main loop, then in an
# iothread (conftest.py, node_ctx).
pytestmark = pytest.mark.ctx_variants


def make_chain(d):
    return Chain(d, size=SIZE, base=['write -P 1 0 12M'],
                 mid=['write -P 2 8M 16M'], top=['write -P 3 2M 2M'])


def export_top(daemon, ref):
    """Exports node top; returns a client of it and what top reads now
    (the bytes of ref), for the writes to update."""
    h = nbd_connect(nbd_export(daemon, 'top'), 'top')
    with open(ref, 'rb') as f:
        return h, bytearray(f.read())


def write_until_gone(qmp, h, expect, job_id, seed):
    """Random writes until the job has left query-jobs; returns the count."""
    rnd = random.Random(seed)
    n = 0
    while n < 2000:
        if n >= 32 and n % 8 == 0:
            if not any(j['id'] == job_id for j in qmp.execute('query-jobs')):
                break
        nbd_random_write(h, rnd, n, expect, SIZE)
        n += 1
    return n


def finish(daemon, h, expect, ref, top, nodes):
    nbd_export_teardown(daemon.qmp, h, *nodes)
    with open(ref, 'wb') as f:
        f.write(expect)
    qemu_img('check', '-q', top)
    qemu_img('compare', '-q', '-f', 'raw', '-F', 'qcow2', ref, top)


@pytest.mark.timeout(180)
def test_stream_under_nbd_writes(daemon, workdir):
    chain = make_chain(str(workdir))
    top, ref = chain.top, chain.ref
    qmp = daemon.qmp
    chain.add_top(qmp)
    h, expect = export_top(daemon, ref)
    rec = golden.Recorder(qmp, 'stream0')
    qmp.execute('block-stream', {'job-id': 'stream0', 'device': 'top',
                                 'speed': 8 * MiB})
    n = write_until_gone(qmp, h, expect, 'stream0', 1)
    rec.wait_status('null')
    assert n >= 32
    assert golden.canonical(golden.sequence(rec.events)) == \
        golden.load('stream.auto')['canonical']
    finish(daemon, h, expect, ref, top, ['top'])
    info = qemu_img('info', top).stdout
    assert 'backing file' not in info


@pytest.mark.timeout(180)
def test_commit_under_nbd_writes(daemon, workdir):
    chain = make_chain(str(workdir))
    top, ref = chain.top, chain.ref
    qmp = daemon.qmp
    chain.add_all(qmp)
    h, expect = export_top(daemon, ref)
    rec = golden.Recorder(qmp, 'commit0')
    qmp.execute('block-commit', {'job-id': 'commit0', 'device': 'top',
                                 'top-node': 'mid', 'base-node': 'base',
                                 'speed': 8 * MiB})
    n = write_until_gone(qmp, h, expect, 'commit0', 2)
    rec.wait_status('null')
    assert n >= 32
    assert golden.canonical(golden.sequence(rec.events)) == \
        golden.load('commit-intermediate.auto')['canonical']
    finish(daemon, h, expect, ref, top, ['top', 'mid', 'base'])
    info = qemu_img('info', top).stdout
    assert 'base.qcow2' in info and 'mid.qcow2' not in info
