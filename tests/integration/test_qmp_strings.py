"""Strings and keys at the QMP boundary: a string holding U+0000 must never
be read as the shorter C string before the NUL (it named another node), and
a key repeated in one object is refused instead of "last one wins".

Duplicate keys: qemu-storage-daemon 7.2 says "JSON parse error, duplicate
key", checked against it here.  NUL: qsd keeps the NUL as an encoded
character, so its lookups fail with their own "not found" errors; blockjobd
refuses any argument string holding a NUL with one message naming the
member.  Either way nothing changes, which is what every test checks.
"""

import pytest

import bjtest


def error_of(reply):
    assert 'error' in reply, reply
    return reply['error']['class'], reply['error']['desc']


def node_names(qmp):
    return sorted(n['node-name'] for n in qmp.execute('query-named-block-nodes'))


def test_duplicate_keys_refused(daemon):
    c = daemon.qmp
    c.execute('blockdev-add', driver='null-co', **{'node-name': 'n1'})
    for raw in (b'{"execute":"query-version","execute":"query-version"}\n',
                b'{"execute":"blockdev-del","arguments":'
                b'{"node-name":"x","node-name":"n1"}}\n',
                b'{"execute":"query-version","arguments":{"a":{"b":1,"b":2}}}\n'):
        c.send_raw(raw)
        assert error_of(c.recv_reply()) == (
            'GenericError', 'JSON parse error, duplicate key')
    assert node_names(c) == ['n1']


def test_duplicate_keys_on_the_command_line(binary):
    p = bjtest.run_blockjobd(
        '--blockdev', '{"driver":"null-co","node-name":"a","node-name":"b"}',
        binary=binary)
    assert p.returncode == 1
    assert p.stderr.endswith('--blockdev {"driver":"null-co","node-name":"a",'
                             '"node-name":"b"}: JSON parse error, duplicate '
                             'key\n'), p.stderr


def test_nul_in_node_name_deletes_nothing(daemon, qsd):
    c = daemon.qmp
    c.execute('blockdev-add', driver='null-co', **{'node-name': 'n1'})
    cls, desc = error_of(c.cmd('blockdev-del', **{'node-name': 'n1\0whatever'}))
    assert cls == 'GenericError'
    if qsd:
        assert desc == "Failed to find node with node-name='n1\0whatever'"
    else:
        assert desc == ("Parameter 'node-name' must not contain a NUL "
                        "character")
    assert node_names(c) == ['n1']


def test_nul_in_backup_device_starts_nothing(daemon, qsd):
    c = daemon.qmp
    for n in ('src', 't'):
        c.execute('blockdev-add', driver='null-co', **{'node-name': n})
    cls, desc = error_of(c.cmd('blockdev-backup', device='src\0zzz',
                               target='t', sync='full'))
    if qsd:
        assert desc == ("Cannot find device='src\0zzz' nor "
                        "node-name='src\0zzz'")
    else:
        assert desc == "Parameter 'device' must not contain a NUL character"
    assert c.execute('query-block-jobs') == []


@pytest.mark.blockjobd_only('qsd accepts the name, keeping the NUL encoded')
def test_nul_in_export_name_and_nested_members(daemon):
    c = daemon.qmp
    c.execute('blockdev-add', driver='null-co', **{'node-name': 'src'})
    c.execute('nbd-server-start', addr={
        'type': 'unix', 'data': {'path': daemon.socket_path('nbd.sock')}})
    assert error_of(c.cmd('block-export-add', type='nbd', id='e1',
                          **{'node-name': 'src', 'name': 'x\0y'})) == (
        'GenericError', "Parameter 'name' must not contain a NUL character")
    assert c.execute('query-block-exports') == []
    # Nested members and array elements are named by their path.
    assert error_of(c.cmd('blockdev-add', driver='raw', **{
        'node-name': 'r', 'file': {'driver': 'file', 'filename': 'a\0b'}})) == (
        'GenericError',
        "Parameter 'file.filename' must not contain a NUL character")
    assert error_of(c.cmd('block-export-add', type='nbd', id='e1',
                          bitmaps=['b', 'c\0'], **{'node-name': 'src'})) == (
        'GenericError',
        "Parameter 'bitmaps[1]' must not contain a NUL character")
    assert node_names(c) == ['src']


@pytest.mark.blockjobd_only('qsd says the command is not found')
def test_nul_in_command_name_runs_nothing(daemon):
    c = daemon.qmp
    c.send_raw(b'{"execute":"quit\\u0000x","id":1}\n')
    assert c.recv_reply() == {'id': 1, 'error': {
        'class': 'GenericError',
        'desc': "QMP input member 'execute' must not contain a NUL "
                "character"}}
    assert daemon.running()
    c.execute('query-version')


@pytest.mark.blockjobd_only('qsd reads the NUL as an encoded character')
def test_nul_on_the_command_line(binary):
    arg = '{"driver":"null-co","node-name":"a\\u0000b"}'
    p = bjtest.run_blockjobd('--blockdev', arg, binary=binary)
    assert p.returncode == 1
    assert p.stderr == ('blockjobd: --blockdev %s: JSON parse error, string '
                        'contains a NUL character\n' % arg)
