"""The block-dirty-bitmap-{add,remove,clear,enable,disable,merge} actions of
the transaction command: each committed, each undone exactly by a later
failing or abort action (bits by sha256, count, recording, busy, order),
remove hiding the bitmap from later actions, the grouped refusal, argument
errors with their actions[i].data path, and add/clear together with a full
backup.  Every expectation was checked against qemu-storage-daemon 7.2
(BLOCKJOBD_BIN=qemu-storage-daemon), except the few marked blockjobd_only
where qemu 7.2 crashes or leaves a bitmap changed after a refused action.
"""

import hashlib
import json
import os

import pytest

from bjtest import QMPError, nbd_connect, nbd_export, qemu_img, qemu_io

MiB = 1024 * 1024
SIZE = 4 * MiB
ABORTED = 'Transaction aborted using Abort action'
# The sha256 of an empty 64-granule bitmap (one zero 64-bit word).
EMPTY = hashlib.sha256(bytes(8)).hexdigest()
BUSY = "Bitmap '%s' is currently in use by another operation and cannot " \
       "be used"


def act(kind, **data):
    return {'type': 'block-dirty-bitmap-' + kind, 'data': data}


ABORT = {'type': 'abort', 'data': {}}


def transaction_error(q, actions, properties=None):
    args = {'actions': actions}
    if properties:
        args['properties'] = properties
    with pytest.raises(QMPError) as e:
        q.execute('transaction', args)
    assert e.value.cls == 'GenericError'
    return e.value.desc


def bitmaps(q, node):
    """The node's named bitmaps as query-named-block-nodes lists them
    (newest first), each with its sha256."""
    for n in q.execute('query-named-block-nodes'):
        if n['node-name'] == node:
            out = []
            for b in n.get('dirty-bitmaps') or []:
                if 'name' not in b:
                    continue        # a backup job's own (qsd lists it)
                b = dict(b)
                b['sha256'] = q.execute('x-debug-block-dirty-bitmap-sha256',
                                        node=node, name=b['name'])['sha256']
                out.append(b)
            return out
    raise AssertionError('no node %s' % node)


def state(q):
    return {node: bitmaps(q, node) for node in ('d', 'n')}


def by_name(q, node):
    return {b['name']: b for b in bitmaps(q, node)}


@pytest.fixture
def env(daemon, workdir):
    """Node d (qcow2, 64 KiB clusters) exported writable over NBD as 'd',
    node n (null-co) of the same size; bitmaps: on d, bm0 (enabled,
    granules 0 and 5 dirty) and bm1 (disabled, granule 9 from a merge),
    on n, bmn (disabled, granules 0 and 5)."""
    pytest.importorskip('nbd')
    q = daemon.qmp
    p = str(workdir / 'd.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', p, SIZE)
    q.execute('blockdev-add', driver='file', node_name='d-file', filename=p)
    q.execute('blockdev-add', driver='qcow2', node_name='d', file='d-file')
    q.execute('blockdev-add', driver='null-co', node_name='n', size=SIZE)
    sock = nbd_export(daemon, 'd', 'd')
    h = nbd_connect(sock, 'd')

    def write(offset, length=4096, pattern=1):
        h.pwrite(bytes([pattern]) * length, offset)
        h.flush()

    q.execute('block-dirty-bitmap-add', node='d', name='bm0')
    q.execute('block-dirty-bitmap-add', node='d', name='bm1', disabled=True)
    q.execute('block-dirty-bitmap-add', node='n', name='bmn', disabled=True)
    write(9 * 65536)
    q.execute('block-dirty-bitmap-merge', node='d', target='bm1',
              bitmaps=['bm0'])
    q.execute('block-dirty-bitmap-clear', node='d', name='bm0')
    write(0)
    write(5 * 65536 + 100, 512)
    q.execute('block-dirty-bitmap-merge', node='n', target='bmn',
              bitmaps=[{'node': 'd', 'name': 'bm0'}])
    env = {'q': q, 'write': write, 'nbd': h, 'path': p, 'sock': sock,
           'daemon': daemon, 'workdir': workdir}
    yield env
    if daemon.running():
        h.shutdown()


@pytest.fixture
def transaction_bitmaps(env):
    return env


def test_fixture_bits(env):
    q = env['q']
    d = by_name(q, 'd')
    assert [(b['name'], b['recording'], b['count']) for b in bitmaps(q, 'd')] \
        == [('bm1', False, 65536), ('bm0', True, 2 * 65536)]
    assert d['bm0']['sha256'] != d['bm1']['sha256']
    assert bitmaps(q, 'n')[0]['sha256'] == d['bm0']['sha256']


def test_each_action_committed(transaction_bitmaps):
    env = transaction_bitmaps
    q = env['q']
    # add: each option; several actions in one transaction.
    assert q.execute('transaction', actions=[
        act('add', node='d', name='a1'),
        act('add', node='d', name='a2', granularity=512, disabled=True),
        act('add', node='d', name='a3', persistent=True)]) == {}
    bms = bitmaps(q, 'd')
    assert [(b['name'], b['recording'], b['persistent'], b['granularity'],
             b['count'], b['busy']) for b in bms[:3]] == [
        ('a3', True, True, 65536, 0, False),
        ('a2', False, False, 512, 0, False),
        ('a1', True, False, 65536, 0, False)]
    # An added bitmap records the writes after the transaction.
    env['write'](2 * 65536)
    assert by_name(q, 'd')['a1']['count'] == 65536
    assert by_name(q, 'd')['a2']['count'] == 0
    # merge: a name on the target's node and {node, name} elsewhere; the
    # fine bitmap takes coarse granules whole.
    q.execute('transaction', actions=[
        act('merge', node='d', target='a2',
            bitmaps=['bm1', {'node': 'n', 'name': 'bmn'}])])
    assert by_name(q, 'd')['a2']['count'] == 3 * 65536
    # enable / disable, clear.
    q.execute('transaction', actions=[act('enable', node='d', name='bm1'),
                                      act('disable', node='d', name='bm0'),
                                      act('clear', node='d', name='a1')])
    d = by_name(q, 'd')
    assert (d['bm1']['recording'], d['bm0']['recording']) == (True, False)
    assert d['a1']['count'] == 0
    assert d['a1']['sha256'] == EMPTY
    env['write'](3 * 65536)
    d = by_name(q, 'd')
    assert d['bm1']['count'] == 2 * 65536               # 9, 3
    assert d['bm0']['count'] == 3 * 65536               # 0, 2, 5
    # remove, and a bitmap added and removed in the same transaction.
    q.execute('transaction', actions=[act('remove', node='d', name='a1'),
                                      act('add', node='d', name='tmp'),
                                      act('remove', node='d', name='tmp')])
    assert [b['name'] for b in bitmaps(q, 'd')] == ['a3', 'a2', 'bm1', 'bm0']
    # Actions see what the earlier ones did: clear then merge into it.
    q.execute('transaction', actions=[
        act('clear', node='d', name='a2'),
        act('merge', node='d', target='a2', bitmaps=['bm0'])])
    d = by_name(q, 'd')
    assert d['a2']['count'] == 3 * 65536
    assert d['a2']['sha256'] != d['bm0']['sha256']      # finer granules
    assert d['bm0']['count'] == 3 * 65536


ROLLBACKS = [
    [act('add', node='d', name='x')],
    [act('add', node='d', name='x', granularity=512, disabled=True)],
    [act('add', node='d', name='x', persistent=True)],
    [act('remove', node='d', name='bm0')],
    [act('remove', node='d', name='bm1'), act('remove', node='n',
                                              name='bmn')],
    [act('clear', node='d', name='bm0')],
    [act('clear', node='n', name='bmn')],
    [act('enable', node='d', name='bm1')],
    [act('enable', node='d', name='bm0')],
    [act('disable', node='d', name='bm0')],
    [act('disable', node='d', name='bm1')],
    [act('merge', node='d', target='bm1', bitmaps=['bm0'])],
    [act('merge', node='n', target='bmn',
         bitmaps=[{'node': 'd', 'name': 'bm1'}])],
    [act('merge', node='d', target='bm0', bitmaps=[])],
    # Chains: each action undone in reverse order.
    [act('clear', node='d', name='bm0'),
     act('merge', node='d', target='bm0', bitmaps=['bm1']),
     act('disable', node='d', name='bm0'),
     act('enable', node='d', name='bm1'),
     act('clear', node='d', name='bm1')],
    [act('add', node='d', name='x', granularity=4096),
     act('merge', node='d', target='x', bitmaps=['bm0', 'bm1']),
     act('remove', node='d', name='bm0'),
     act('enable', node='d', name='bm1'),
     act('clear', node='d', name='x')],
]


@pytest.mark.parametrize('actions', ROLLBACKS,
                         ids=['-'.join(a['type'][19:] for a in acts)
                              + str(i) for i, acts in enumerate(ROLLBACKS)])
def test_each_action_rolled_back(transaction_bitmaps, actions):
    q = transaction_bitmaps['q']
    before = state(q)
    assert transaction_error(q, actions + [ABORT]) == ABORTED
    assert state(q) == before
    # The same when a later action fails rather than abort.
    assert transaction_error(q, actions + [act('add', node='d',
                                               name='bm1')]) == \
        'Bitmap already exists: bm1'
    assert state(q) == before
    # Bitmaps still record (or not) as before the transaction.
    transaction_bitmaps['write'](7 * 65536)
    after = by_name(q, 'd')
    for name, b in ((b['name'], b) for b in before['d']):
        assert after[name]['count'] == \
            b['count'] + (65536 if b['recording'] else 0)


def test_persistent_add_and_remove(transaction_bitmaps):
    """What a clean quit stores: a persistent bitmap added and kept, not
    one whose add was rolled back, nor one removed, but one whose remove
    was rolled back."""
    env = transaction_bitmaps
    q = env['q']
    assert transaction_error(q, [act('add', node='d', name='p',
                                     persistent=True), ABORT]) == ABORTED
    q.execute('transaction', actions=[
        act('add', node='d', name='kept', persistent=True),
        act('add', node='d', name='gone', persistent=True)])
    env['write'](0)
    q.execute('transaction', actions=[act('remove', node='d', name='gone')])
    assert transaction_error(q, [act('remove', node='d', name='kept'),
                                 ABORT]) == ABORTED
    assert [(b['name'], b['persistent'], b['count'])
            for b in bitmaps(q, 'd')][:1] == [('kept', True, 65536)]
    env['nbd'].shutdown()
    q.execute('block-export-del', id='e0')
    q.wait_event('BLOCK_EXPORT_DELETED')
    env['daemon'].stop()
    info = json.loads(qemu_img('info', '--output=json',
                               env['path']).stdout)
    assert [(b['name'], b['flags']) for b in
            info['format-specific']['data']['bitmaps']] == \
        [('kept', ['auto'])]
    r = qemu_img('check', env['path'], check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_remove_hides_bitmap_from_later_actions(transaction_bitmaps):
    q = transaction_bitmaps['q']
    before = state(q)
    # (enable too, in test_refused_enable_changes_nothing.)
    for later in ('clear', 'disable', 'remove'):
        assert transaction_error(q, [
            act('remove', node='d', name='bm0'),
            act(later, node='d', name='bm0')]) == BUSY % 'bm0'
        assert state(q) == before
    for target, source in (('bm0', 'bm1'), ('bm1', 'bm0')):
        assert transaction_error(q, [
            act('remove', node='d', name='bm0'),
            act('merge', node='d', target=target, bitmaps=[source])]) == \
            BUSY % 'bm0'
    assert transaction_error(q, [
        act('remove', node='d', name='bm0'),
        act('add', node='d', name='bm0')]) == 'Bitmap already exists: bm0'
    assert state(q) == before
    assert state(q) == before
    q.execute('transaction', actions=[act('remove', node='d', name='bm0')])
    assert [b['name'] for b in bitmaps(q, 'd')] == ['bm1']


@pytest.mark.blockjobd_only('qemu 7.2 disables a bitmap whose enable was '
                            'refused, or crashes when it was not found')
def test_refused_enable_changes_nothing(transaction_bitmaps):
    q = transaction_bitmaps['q']
    before = state(q)
    assert transaction_error(q, [act('remove', node='d', name='bm0'),
                                 act('enable', node='d', name='bm0')]) == \
        BUSY % 'bm0'
    assert transaction_error(q, [act('enable', node='d', name='zz')]) == \
        "Dirty bitmap 'zz' not found"
    assert transaction_error(q, [act('enable', node='d', name='bm1')],
                             {'completion-mode': 'grouped'}) == \
        "Action 'block-dirty-bitmap-enable' does not support Transaction " \
        "property completion-mode = grouped"
    assert state(q) == before


def test_grouped_refused(transaction_bitmaps, qsd):
    q = transaction_bitmaps['q']
    before = state(q)
    grouped = {'completion-mode': 'grouped'}
    cases = [act('add', node='d', name='x'),
             act('remove', node='d', name='bm0'),
             act('clear', node='d', name='bm0'),
             act('disable', node='d', name='bm0'),
             act('merge', node='d', target='bm1', bitmaps=['bm0'])]
    if not qsd:
        cases.append(act('enable', node='d', name='bm1'))  # qsd crashes
    for a in cases:
        msg = "Action '%s' does not support Transaction property " \
              "completion-mode = grouped" % a['type']
        assert transaction_error(q, [a], grouped) == msg
        assert state(q) == before
        # Checked when the action is prepared, in order.
        assert transaction_error(q, [ABORT, a], grouped) == ABORTED
        assert transaction_error(q, [act('clear', node='d', name='bm0'), a],
                                 grouped) == \
            "Action 'block-dirty-bitmap-clear' does not support " \
            "Transaction property completion-mode = grouped"
        assert state(q) == before
    # individual (the default, and said so) is fine.
    q.execute('transaction', actions=[act('add', node='d', name='x')],
              properties={'completion-mode': 'individual'})


def test_argument_errors(transaction_bitmaps):
    q = transaction_bitmaps['q']
    before = state(q)
    p = 'actions[1].data'
    cases = [
        (act('add', node='d'), "Parameter '%s.name' is missing" % p),
        (act('add', node='d', name=1),
         "Invalid parameter type for '%s.name', expected: string" % p),
        (act('add', node='d', name='x', bogus=1),
         "Parameter '%s.bogus' is unexpected" % p),
        (act('add', node='d', name='x', persistent='yes'),
         "Invalid parameter type for '%s.persistent', expected: boolean"
         % p),
        # qemu names the bare member here.
        (act('add', node='d', name='x', granularity=2 ** 32),
         "Parameter 'granularity' expects uint32_t"),
        (act('add', node='d', name='x', granularity=-1),
         "Parameter 'granularity' expects uint32_t"),
        (act('clear', node='d', name='bm0', persistent=True),
         "Parameter '%s.persistent' is unexpected" % p),
        (act('remove', name='bm0'), "Parameter '%s.node' is missing" % p),
        (act('enable', node=None, name='bm0'),
         "Invalid parameter type for '%s.node', expected: string" % p),
        (act('merge', node='d', target='bm0'),
         "Parameter '%s.bitmaps' is missing" % p),
        (act('merge', node='d', target='bm0', bitmaps='bm1'),
         "Invalid parameter type for '%s.bitmaps', expected: array" % p),
        (act('merge', node='d', target='bm0', bitmaps=[1]),
         "Invalid parameter type for 'null', expected: "
         "BlockDirtyBitmapOrStr"),
        (act('merge', node='d', target='bm0', bitmaps=['bm1', None]),
         "Invalid parameter type for 'null', expected: "
         "BlockDirtyBitmapOrStr"),
        ({'type': 'block-dirty-bitmap-add'},
         "Parameter 'actions[1].data' is missing"),
        ({'type': 'block-dirty-bitmap-add', 'data': 5},
         "Invalid parameter type for 'actions[1].data', expected: object"),
    ]
    # Checked before any action runs: the add before it never happens.
    for a, msg in cases:
        assert transaction_error(q, [act('add', node='d', name='x'), a]) == \
            msg
        assert state(q) == before
    # Errors of the actions themselves, as the plain commands give them.
    cases = [
        (act('add', node='zz', name='x'),
         "Cannot find device='zz' nor node-name='zz'"),
        (act('add', node='d', name=''), 'Bitmap name cannot be empty'),
        (act('add', node='d', name='x', granularity=1000),
         'Granularity must be power of 2 and at least 512'),
        (act('add', node='n', name='x', persistent=True),
         "Can't store persistent bitmaps to n: Operation not supported"),
        (act('remove', node='zz', name='bm0'), "Node 'zz' not found"),
        (act('clear', node='d', name='zz'), "Dirty bitmap 'zz' not found"),
        (act('disable', node='d', name='zz'), "Dirty bitmap 'zz' not found"),
        (act('merge', node='d', target='bm0', bitmaps=['zz']),
         "Dirty bitmap 'zz' not found"),
        (act('merge', node='d', target='bm0',
             bitmaps=[{'node': 'zz', 'name': 'bm0'}]), "Node 'zz' not found"),
    ]
    for a, msg in cases:
        assert transaction_error(q, [act('clear', node='d', name='bm0'),
                                     a]) == msg
        assert state(q) == before


def test_argument_errors_beyond_the_table(transaction_bitmaps):
    """What an ArgSpec table cannot say, still checked before any action
    runs and with the path."""
    q = transaction_bitmaps['q']
    before = state(q)
    p = 'actions[1].data'
    cases = [
        (act('add', node='d', name='x', granularity='1'),
         "Parameter '%s.granularity' expects uint64" % p),
        (act('add', node='d', name='x', granularity=1.5),
         "Parameter '%s.granularity' expects uint64" % p),
        (act('merge', node='d', target='bm0', bitmaps=[{'node': 'd'}]),
         "Parameter '%s.bitmaps[0].name' is missing" % p),
        (act('merge', node='d', target='bm0',
             bitmaps=[{'node': 'd', 'name': 1}]),
         "Invalid parameter type for '%s.bitmaps[0].name', expected: string"
         % p),
        (act('merge', node='d', target='bm0',
             bitmaps=['bm1', {'node': 'd', 'name': 'bm1', 'x': 1}]),
         "Parameter '%s.bitmaps[1].x' is unexpected" % p),
        (act('add', node='d', name='x', granularity=2 ** 32),
         "Parameter 'granularity' expects uint32_t"),
    ]
    for a, msg in cases:
        for first in (act('add', node='d', name='x'), ABORT):
            assert transaction_error(q, [first, a]) == msg
            assert state(q) == before


def test_read_only_bitmaps(daemon_factory, workdir):
    """A persistent bitmap of an image opened read-only may be enabled,
    disabled and merged from, but not cleared, merged into or removed;
    the same inside a transaction."""
    p = str(workdir / 'r.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', p, SIZE)
    qemu_img('bitmap', '--add', p, 'bm')
    qemu_io('-f', 'qcow2', '-c', 'write 0 1k', p)
    d = daemon_factory(
        '--blockdev', 'driver=file,node-name=f,filename=%s,read-only=on' % p,
        '--blockdev', 'driver=qcow2,node-name=r,file=f,read-only=on')
    q = d.qmp
    q.execute('block-dirty-bitmap-add', node='r', name='x')
    ro = "Bitmap 'bm' is readonly and cannot be modified"
    refused = [act('clear', node='r', name='bm'),
               act('remove', node='r', name='bm'),
               act('merge', node='r', target='bm', bitmaps=['x'])]
    allowed = [act('disable', node='r', name='bm'),
               act('enable', node='r', name='bm'),
               act('merge', node='r', target='x', bitmaps=['bm'])]
    for a in refused:
        with pytest.raises(QMPError) as e:
            q.execute(a['type'], a['data'])
        assert e.value.desc == ro
    for a in allowed:
        q.execute(a['type'], a['data'])
    assert [(b['name'], b['count'], b['recording'])
            for b in bitmaps(q, 'r')] == [('x', 65536, True),
                                          ('bm', 65536, True)]
    before = bitmaps(q, 'r')
    for a in refused:
        assert transaction_error(q, [act('clear', node='r', name='x'),
                                     a]) == ro
        assert bitmaps(q, 'r') == before
    q.execute('transaction', actions=allowed[:1])
    assert not by_name(q, 'r')['bm']['recording']
    d.stop()
    info = json.loads(qemu_img('info', '--output=json', p).stdout)
    assert [(b['name'], b['flags']) for b in
            info['format-specific']['data']['bitmaps']] == [('bm', ['auto'])]


# ---- with blockdev-backup ----

def backup(target, **extra):
    data = {'job-id': 'j', 'device': 'd', 'target': target, 'sync': 'full'}
    data.update(extra)
    return {'type': 'blockdev-backup', 'data': data}


@pytest.fixture
def with_target(transaction_bitmaps):
    env = transaction_bitmaps
    t = str(env['workdir'] / 't.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', t, SIZE)
    env['q'].execute('blockdev-add', driver='qcow2', node_name='t',
                     file={'driver': 'file', 'filename': t})
    env['target'] = t
    return env


def finish(env):
    """Waits for job j, stops the daemon cleanly (the target is then
    complete on disk)."""
    q = env['q']
    ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
    assert ev['data']['device'] == 'j' and 'error' not in ev['data']
    env['nbd'].shutdown()
    q.execute('block-export-del', id='e0')
    q.wait_event('BLOCK_EXPORT_DELETED')
    env['daemon'].stop()


def test_add_with_full_backup(with_target):
    """The bitmap is born with the point-in-time copy: it holds exactly the
    writes after the transaction, the backup exactly the data before."""
    env = with_target
    q = env['q']
    env['write'](0, 65536, pattern=1)
    q.execute('transaction', actions=[act('add', node='d', name='inc'),
                                      backup('t', speed=1)])
    env['write'](0, 4096, pattern=2)          # copied before it lands
    env['write'](2 * MiB, 65536, pattern=3)
    q.execute('block-job-set-speed', device='j', speed=0)
    d = by_name(q, 'd')
    assert d['inc']['count'] == 2 * 65536
    assert not d['inc']['busy']
    finish(env)
    qemu_io('-f', 'qcow2', '-c', 'read -P 1 0 64k', '-c',
            'read -P 0 2M 64k', env['target'])
    qemu_io('-f', 'qcow2', '-c', 'read -P 2 0 4k', '-c',
            'read -P 3 2M 64k', env['path'])
    qemu_img('check', env['target'])


def test_clear_with_full_backup(with_target):
    env = with_target
    q = env['q']
    q.execute('transaction', actions=[act('clear', node='d', name='bm0'),
                                      backup('t')])
    d = by_name(q, 'd')
    assert d['bm0']['count'] == 0 and d['bm0']['recording']
    finish(env)
    qemu_img('compare', '-f', 'qcow2', '-F', 'qcow2', env['path'],
             env['target'])


def test_sync_bitmap_backup_with_actions(with_target):
    """A backup whose sync bitmap earlier actions changed: rolled back,
    every bitmap is as before (the backup gives its bitmap back first);
    committed, the job copies what the actions left in the bitmap."""
    env = with_target
    q = env['q']
    before = state(q)
    assert transaction_error(q, [
        act('merge', node='d', target='bm0', bitmaps=['bm1']),
        backup('t', sync='incremental', bitmap='bm0', speed=1),
        act('disable', node='d', name='bm1'),
        ABORT]) == ABORTED
    assert state(q) == before
    assert q.execute('query-block-jobs') == []
    # Only granule 9 (bm1's) is copied: bm0 was cleared and given bm1's.
    env['write'](0, 65536, pattern=1)
    env['write'](9 * 65536, 65536, pattern=9)
    q.execute('transaction', actions=[
        act('clear', node='d', name='bm0'),
        act('merge', node='d', target='bm0', bitmaps=['bm1']),
        backup('t', sync='incremental', bitmap='bm0')])
    finish(env)
    qemu_io('-f', 'qcow2', '-c', 'read -P 9 576k 64k', '-c',
            'read -P 0 0 64k', env['target'])


def test_backup_refused_leaves_bitmaps(with_target):
    """A refused backup (a missing target, or one whose job ID is taken)
    takes back the bitmap actions before it; a backup prepared before an
    aborting bitmap action never starts."""
    env = with_target
    q = env['q']
    before = state(q)
    assert transaction_error(q, [
        act('add', node='d', name='inc'),
        act('clear', node='d', name='bm0'),
        act('merge', node='d', target='bm1', bitmaps=['bm0']),
        backup('nope')]) == \
        "Cannot find device='nope' nor node-name='nope'"
    assert state(q) == before
    assert transaction_error(q, [
        backup('t', speed=1),
        act('clear', node='d', name='bm0'),
        act('add', node='d', name='bm1')]) == 'Bitmap already exists: bm1'
    assert state(q) == before
    assert q.execute('query-block-jobs') == []
    assert 'copy-before-write' not in \
        {n['drv'] for n in q.execute('query-named-block-nodes')}
    assert os.path.exists(env['target'])
