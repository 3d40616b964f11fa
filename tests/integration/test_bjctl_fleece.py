"""bjctl fleece start|stop (pull-mode backup in one verb each way), against
blockjobd and qemu-storage-daemon 7.2.  What the fleece serves is checked
byte for byte against a copy of the disk taken at the instant it started,
while the guest goes on writing; refusals and failures leave nothing
behind (no node, job, export or file).
"""

import json
import os

import pytest

import bjtest
from bjctltest import MiB, help_text
from test_bjctl import json_lines
from test_bjctl_verbs import wf  # noqa: F401 (the fixture)
from test_bjctl_verbs import guest_write, nbd_uri


def state(env):
    """Everything a fleece adds: named nodes, jobs, exports, bitmaps."""
    nodes = env.nodes()
    return {
        'nodes': sorted(k for k in nodes if not k.startswith('#')),
        'jobs': [j['id'] for j in env.d.qmp.execute('query-jobs')],
        'exports': sorted(e['id'] for e in
                          env.d.qmp.execute('query-block-exports')),
        'bitmaps': sorted((b['name'], b['recording'])
                          for b in nodes['disk0'].get('dirty-bitmaps', [])
                          if 'name' in b),
        'files': sorted(os.listdir(env.workdir)),
    }


def test_help():
    text = help_text('fleece')
    assert text.startswith('Usage: bjctl fleece start NODE --file PATH')
    assert 'fleece stop N' in text
    assert 'fleece start NODE' in help_text()


def test_fleece_serves_the_instant_and_stop_removes_it(wf):
    w = wf.workdir
    wf.d.qmp.execute('block-dirty-bitmap-add', node='disk0', name='b0')
    guest_write(wf, 'write -P 0x62 4M 64K')
    expected = os.path.join(w, 'expected.qcow2')
    bjtest.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', wf.guest, expected)
    scratch = os.path.join(w, 'scratch.qcow2')
    p = wf.run('--json', 'fleece', 'start', 'disk0', '--file', scratch,
               '--bitmap', 'b0', '--next-bitmap', 'b1', expect=0)
    assert json_lines(p.stdout) == [{'id': 'fleece-disk0', 'result': 'started',
                                     'node': 'disk0', 'file': scratch}]
    s = state(wf)
    assert s['nodes'] == ['disk0', 'fleece-disk0']
    assert s['jobs'] == ['fleece-disk0']
    assert s['exports'] == ['fleece-disk0', 'guest']
    assert s['bitmaps'] == [('b0', False), ('b1', True)]

    # the guest writes on: the fleece does not see it, b1 does
    guest_write(wf, 'write -P 0x63 4M 128K')
    guest_write(wf, 'write -P 0x64 40M 64K')
    uri = nbd_uri(wf.nbd_sock, 'fleece-disk0')
    bjtest.qemu_img('compare', '-f', 'raw', '-F', 'qcow2', uri, expected)
    info = json.loads(bjtest.run('nbdinfo', '--json', uri).stdout)
    (e,) = info['exports']
    assert e['is_read_only'] and 'qemu:dirty-bitmap:b0' in e['contexts']
    dirty = bjtest.run('nbdinfo', '--map=qemu:dirty-bitmap:b0', uri).stdout
    assert [l.split()[:3] for l in dirty.splitlines() if l.split()[2] == '1'] \
        == [[str(4 * MiB), str(64 * 1024), '1']]

    p = wf.run('fleece', 'stop', 'fleece-disk0', expect=0)
    assert p.stdout == "fleece 'fleece-disk0': stopped\n"
    s = state(wf)
    assert s['nodes'] == ['disk0'] and s['jobs'] == []
    assert s['exports'] == ['guest']
    assert 'scratch.qcow2' not in s['files']
    # the bitmaps stay: b0 frozen, b1 saw the two writes since the instant
    assert s['bitmaps'] == [('b0', False), ('b1', True)]
    b1 = [b for b in wf.nodes()['disk0']['dirty-bitmaps']
          if b.get('name') == 'b1'][0]
    assert b1['count'] == 128 * 1024 + 64 * 1024


def test_start_refusals_change_nothing(wf):
    before = state(wf)
    # usage: no --file, no node, unknown verb
    for args in (['fleece', 'start', 'disk0'], ['fleece', 'start'],
                 ['fleece'], ['fleece', 'frob', 'x'],
                 ['fleece', 'stop', 'x', '--file', 'y']):
        wf.run(*args, expect=2)
    # the scratch file must be new: an existing one is left alone
    keep = os.path.join(wf.workdir, 'keep.qcow2')
    with open(keep, 'w') as f:
        f.write('mine')
    p = wf.run('fleece', 'start', 'disk0', '--file', keep, expect=1)
    assert 'exists' in p.stderr
    with open(keep) as f:
        assert f.read() == 'mine'
    os.unlink(keep)
    p = wf.run('fleece', 'start', 'nosuch', '--file',
               os.path.join(wf.workdir, 'f.qcow2'), expect=1)
    assert p.stderr == "bjctl: no node 'nosuch'\n"
    assert state(wf) == before


def test_start_failure_undoes_every_step(wf):
    """A bitmap that does not exist fails the transaction after the scratch
    image and its node exist: both go, and the daemon's error is shown."""
    before = state(wf)
    s_qcow2 = os.path.join(wf.workdir, 's.qcow2')
    p = wf.run('--json', 'fleece', 'start', 'disk0', '--file', s_qcow2,
               '--bitmap', 'nosuch', expect=1)
    (err,) = json_lines(p.stdout)
    assert err['exit'] == 1 and "nosuch" in err['error']['desc']
    assert state(wf) == before
    # a name already taken by a node
    p = wf.run('fleece', 'start', 'disk0', '--file', s_qcow2, '--name',
               'disk0', expect=1)
    assert state(wf) == before


def test_stop_refuses_what_is_not_a_fleece(wf):
    before = state(wf)
    p = wf.run('fleece', 'stop', 'nosuch', expect=1)
    assert p.stderr == "bjctl: no node 'nosuch'\n"
    p = wf.run('fleece', 'stop', 'disk0', expect=1)
    assert "'disk0' is not a fleece" in p.stderr
    assert state(wf) == before


def test_stop_waits_for_a_connected_client(wf):
    """While a backup client is connected both daemons refuse to remove the
    export: stop says so and changes nothing, so the client keeps its
    view; once it disconnects, stop finishes."""
    wf.run('fleece', 'start', 'disk0', '--file',
           os.path.join(wf.workdir, 's.qcow2'), '--name', 'f', expect=0)
    nbd = pytest.importorskip('nbd')
    h = nbd.NBD()
    h.connect_uri(nbd_uri(wf.nbd_sock, 'f'))
    try:
        first = h.pread(4096, 0)
        p = wf.run('fleece', 'stop', 'f', expect=1)
        assert p.stderr == (
            "bjctl: export 'f' still in use\n"
            "bjctl: a client is still connected to 'f'; nothing changed: run "
            "fleece stop again once it has disconnected\n")
        s = state(wf)
        assert s['jobs'] == ['f'] and 'f' in s['nodes']
        assert s['exports'] == ['f', 'guest']
        assert 's.qcow2' in s['files']
        assert h.pread(4096, 0) == first
    finally:
        h.shutdown()
        del h
    wf.run('fleece', 'stop', 'f', expect=0)
    s = state(wf)
    assert s['nodes'] == ['disk0'] and s['jobs'] == []
    assert 's.qcow2' not in s['files'] and s['exports'] == ['guest']
