"""blkdebug through the daemon: rules fail NBD requests as
qemu-storage-daemon 7.2 does with raw over blkdebug over a file (the stack
the job error tests use), and blockdev-add refuses bad options with its
messages.
"""

import errno
import os

import pytest

from bjtest import QMPError, nbd_connect, nbd_export, qemu_img, qemu_io

nbd = pytest.importorskip('nbd')

MiB = 1 << 20


@pytest.fixture
def image(daemon):
    path = os.path.join(daemon.workdir, 'img.raw')
    qemu_img('create', '-q', '-f', 'raw', path, MiB)
    qemu_io('-f', 'raw', '-c', 'write -P 0x5a 0 1M', path)
    return path


def add_debug(daemon, path, **rules):
    daemon.qmp.execute('blockdev-add', {
        'driver': 'raw', 'node-name': 'r0',
        'file': dict({'driver': 'blkdebug',
                      'image': {'driver': 'file', 'filename': path}},
                     **rules)})


def export(daemon, node='r0'):
    # qemu-storage-daemon 7.2 drops the connection when a structured read
    # fails; with simple replies it answers the error and carries on.
    return nbd_connect(nbd_export(daemon, node), node,
                       structured_replies=False)


def fails_with(fn, err):
    with pytest.raises(nbd.Error) as e:
        fn()
    # python3-libnbd gives the errno by name
    assert e.value.errno in (err, errno.errorcode[err])


def test_read_error_once_at_sector(daemon, image):
    add_debug(daemon, image, **{'inject-error': [
        {'event': 'read_aio', 'sector': 8, 'once': True}]})
    h = export(daemon)
    assert h.pread(4096, 0) == b'\x5a' * 4096
    fails_with(lambda: h.pread(4096, 4096), errno.EIO)
    # once: used up
    assert h.pread(4096, 4096) == b'\x5a' * 4096
    h.shutdown()


def test_active_rule_persists_across_kinds(daemon, image):
    add_debug(daemon, image, **{'inject-error': [{'event': 'read_aio'}]})
    h = export(daemon)
    h.pwrite(b'\x01' * 512, 0)
    fails_with(lambda: h.pread(512, 0), errno.EIO)
    # The read activated the rule: writes fail from now on too.
    fails_with(lambda: h.pwrite(b'\x02' * 512, 0), errno.EIO)
    h.shutdown()
    daemon.qmp.execute('block-export-del', id='e0')
    daemon.qmp.wait_event('BLOCK_EXPORT_DELETED')
    daemon.qmp.execute('blockdev-del', {'node-name': 'r0'})
    # Only the first write reached the file.
    qemu_io('-f', 'raw', '-c', 'read -P 1 0 512',
            '-c', 'read -P 0x5a 512 1023k', image)


def test_write_enospc_only_writes(daemon, image):
    add_debug(daemon, image, **{'inject-error': [
        {'event': 'write_aio', 'iotype': 'write', 'errno': 28}]})
    h = export(daemon)
    fails_with(lambda: h.pwrite(b'\x03' * 4096, 0), errno.ENOSPC)
    assert h.pread(4096, 0) == b'\x5a' * 4096
    h.shutdown()


def test_set_state(daemon, image):
    add_debug(daemon, image, **{
        'inject-error': [{'event': 'read_aio', 'state': 2}],
        'set-state': [{'event': 'read_aio', 'state': 1, 'new_state': 2}]})
    h = export(daemon)
    assert h.pread(512, 0) == b'\x5a' * 512
    fails_with(lambda: h.pread(512, 0), errno.EIO)
    h.shutdown()


def test_none_event_active_from_open(daemon, image):
    add_debug(daemon, image, **{'inject-error': [
        {'event': 'none', 'iotype': 'read', 'once': True}]})
    h = export(daemon)
    fails_with(lambda: h.pread(512, 0), errno.EIO)
    assert h.pread(512, 0) == b'\x5a' * 512
    h.shutdown()


@pytest.mark.parametrize('opts,msg', [
    ({'align': 3}, 'Cannot meet constraints with align 3'),
    ({'align': 4096, 'max-transfer': 1024},
     'Cannot meet constraints with max-transfer 1024'),
    ({'opt-write-zero': 1024, 'max-write-zero': 512},
     'Cannot meet constraints with max-write-zero 512'),
    ({'align': -512},
     "Parameter 'align' expects a non-negative number below 2^64"),
    ({'inject-error': [{'event': 'bogus'}]},
     "Parameter 'event' does not accept value 'bogus'"),
    ({'inject-error': [{'event': 'read_aio', 'iotype': 'foo'}]},
     "Parameter 'iotype' does not accept value 'foo'"),
    ({'inject-error': [{'errno': 5}]},
     "Parameter 'inject-error[0].event' is missing"),
    ({'inject-error': [{'event': 'read_aio', 'errno': 'x'}]},
     "Invalid parameter type for 'inject-error[0].errno', "
     "expected: integer"),
    ({'inject-error': [{'event': 'read_aio', 'foo': 1}]},
     "Parameter 'inject-error[0].foo' is unexpected"),
    ({'set-state': [{'event': 'read_aio'}]},
     "Parameter 'set-state[0].new_state' is missing"),
    ({'take-child-perms': ['graph-mod']},
     "Parameter 'null' does not accept value 'graph-mod'"),
])
def test_option_errors(daemon, image, opts, msg):
    args = dict({'driver': 'blkdebug', 'node-name': 'd0',
                 'image': {'driver': 'file', 'filename': image}}, **opts)
    with pytest.raises(QMPError) as e:
        daemon.qmp.execute('blockdev-add', args)
    assert e.value.desc == msg
    assert daemon.qmp.execute('query-named-block-nodes') == []


def test_missing_image(daemon):
    with pytest.raises(QMPError) as e:
        daemon.qmp.execute('blockdev-add', driver='blkdebug', node_name='d0')
    assert e.value.desc == "Parameter 'image' is missing"


def test_limits_accepted(daemon, image):
    daemon.qmp.execute('blockdev-add', {
        'driver': 'blkdebug', 'node-name': 'd0', 'align': 4096,
        'max-transfer': 65536, 'opt-write-zero': 8192,
        'image': {'driver': 'file', 'filename': image}})
    nodes = {n['node-name']: n
             for n in daemon.qmp.execute('query-named-block-nodes')}
    assert nodes['d0']['drv'] == 'blkdebug'
    assert nodes['d0']['image']['virtual-size'] == MiB
    h = export(daemon, 'd0')
    assert h.pread(8192, 4096) == b'\x5a' * 8192
    h.shutdown()


def test_config_file(daemon, image):
    conf = os.path.join(daemon.workdir, 'rules.conf')
    with open(conf, 'w') as f:
        f.write('# rules\n[inject-error]\nevent = "read_aio"\n'
                'errno = "28"\nonce = "on"\n\n[set-state]\n'
                'event = "none"\nnew_state = "2"\n')
    # The file's rules come first, then the options' own.
    add_debug(daemon, image, config=conf, **{'inject-error': [
        {'event': 'read_aio', 'state': 2}]})
    h = export(daemon)
    fails_with(lambda: h.pread(512, 0), errno.ENOSPC)
    fails_with(lambda: h.pread(512, 0), errno.EIO)
    h.shutdown()


@pytest.mark.parametrize('text,msg', [
    ('[inject-error]\nevent read_aio\n', 'invalid parameter value: '),
    ('[bogus]\nevent = "read_aio"\n', "There is no option group 'bogus'"),
    ('[inject-error]\nevent = "nope"\n', 'invalid parameter value: nope'),
    ('[inject-error]\nevent = "read_aio"\nerrno = "x"\n',
     "Parameter 'errno' expects a number"),
    ('event = "read_aio"\n', 'no group defined'),
    ('[inject-error]\nevent = "read_aio"\nfoo = "1"\n',
     "Invalid parameter 'foo'"),
    ('[inject-error]\nerrno = "5"\n', 'Missing event name for rule'),
    ('[inject-error]\nevent = "read_aio"\nonce = "maybe"\n',
     "Parameter 'once' expects 'on' or 'off'"),
])
def test_config_file_errors(daemon, image, text, msg):
    conf = os.path.join(daemon.workdir, 'rules.conf')
    with open(conf, 'w') as f:
        f.write(text)
    with pytest.raises(QMPError) as e:
        daemon.qmp.execute('blockdev-add', {
            'driver': 'blkdebug', 'node-name': 'd0', 'config': conf,
            'image': {'driver': 'file', 'filename': image}})
    assert e.value.desc == msg


def test_config_file_missing(daemon, image):
    with pytest.raises(QMPError) as e:
        daemon.qmp.execute('blockdev-add', {
            'driver': 'blkdebug', 'node-name': 'd0',
            'config': os.path.join(daemon.workdir, 'nonexistent.conf'),
            'image': {'driver': 'file', 'filename': image}})
    assert e.value.desc == ('Could not read blkdebug config file: No such '
                            'file or directory')
