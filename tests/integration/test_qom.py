"""QOM introspection: qom-list, qom-list-types, qom-list-properties, and
qom-get of every object type's properties, with qemu-storage-daemon 7.2's
answers and errors (recorded by running qsd 7.2 with the same commands).

qsd lists a container's children and classes in its hash tables' order,
so lists of children and of types are compared as sets; a class's
properties are compared in order.  qom-list-types is held to the classes
blockjobd has: qsd has more (qio channels, authz-list, tls-creds-anon...),
so against qsd the expected set must be contained, against blockjobd it
must be exact.
"""

import pytest

import bjtest
from bjtest import QMPError

T = 'string'

PROPS = {
    'secret': [('type', T), ('iv', T), ('keyid', T), ('loaded', 'bool'),
               ('format', 'QCryptoSecretFormat'), ('file', T), ('data', T)],
    'authz-simple': [('type', T), ('identity', T)],
    'iothread': [('type', T), ('thread-pool-min', 'int'),
                 ('aio-max-batch', 'int'), ('thread-pool-max', 'int'),
                 ('poll-max-ns', 'int'), ('poll-grow', 'int'),
                 ('poll-shrink', 'int')],
    'tls-creds-psk': [('type', T),
                      ('endpoint', 'QCryptoTLSCredsEndpoint'), ('dir', T),
                      ('verify-peer', 'bool'), ('priority', T),
                      ('username', T), ('loaded', 'bool')],
    'tls-creds-x509': [('type', T),
                       ('endpoint', 'QCryptoTLSCredsEndpoint'), ('dir', T),
                       ('verify-peer', 'bool'), ('priority', T),
                       ('sanity-check', 'bool'), ('passwordid', T),
                       ('loaded', 'bool')],
    'tls-creds': [('type', T),
                  ('endpoint', 'QCryptoTLSCredsEndpoint'), ('dir', T),
                  ('verify-peer', 'bool'), ('priority', T)],
    'secret_common': [('type', T), ('iv', T), ('keyid', T),
                      ('loaded', 'bool'), ('format', 'QCryptoSecretFormat')],
    'event-loop-base': [('type', T), ('thread-pool-min', 'int'),
                        ('aio-max-batch', 'int'),
                        ('thread-pool-max', 'int')],
    'object': [('type', T)],
    'container': [('type', T)],
    'authz': [('type', T)],
    'chardev-socket': [('type', T), ('connected', 'bool'),
                       ('addr', 'SocketAddress')],
}

TG_PROPS = ['type', 'x-bps-write-max-length', 'x-iops-total-max-length',
            'x-iops-size', 'limits', 'x-bps-total', 'x-iops-read-max-length',
            'x-bps-write', 'x-iops-write-max-length', 'x-bps-read-max',
            'x-iops-read-max', 'x-bps-total-max', 'x-bps-read-max-length',
            'x-iops-read', 'x-bps-read', 'x-bps-write-max',
            'x-iops-total-max', 'x-iops-total', 'x-iops-write',
            'x-bps-total-max-length', 'x-iops-write-max']


def infos(pairs):
    return [{'name': n, 'type': t} for n, t in pairs]


@pytest.fixture
def qd(daemon_factory, workdir):
    (workdir / 'sec.txt').write_text('hunter2')
    psk = workdir / 'psk'
    psk.mkdir()
    (psk / 'keys.psk').write_text(
        'alice:0123456789abcdef0123456789abcdef\n')
    d = daemon_factory(
        '--object', 'secret,id=sec0,data=abc',
        '--object', 'secret,id=sec1,file=%s,format=raw' % (workdir / 'sec.txt'),
        '--object', 'authz-simple,id=az0,identity=CN=foo',
        '--object', 'iothread,id=io0',
        '--object', 'iothread,id=io1,poll-max-ns=100,poll-grow=2,'
                    'poll-shrink=3,aio-max-batch=4',
        '--object', 'throttle-group,id=tg0,x-bps-total=1000000',
        '--object', 'tls-creds-psk,id=tp0,dir=%s,endpoint=server' % psk)
    d.psk_dir = str(psk)
    d.sec_file = str(workdir / 'sec.txt')
    return d


def err(qmp, cmd, **args):
    with pytest.raises(QMPError) as e:
        qmp.execute(cmd, **args)
    return e.value.cls, e.value.desc


def test_qom_list_root_and_objects(qd):
    q = qd.qmp
    root = q.execute('qom-list', path='/')
    assert root[0] == {'name': 'type', 'type': 'string'}
    assert {'name': 'objects', 'type': 'child<container>'} in root
    assert {'name': 'chardevs', 'type': 'child<container>'} in root
    assert len(root) == 3
    want = [{'name': 'type', 'type': 'string'}] + [
        {'name': i, 'type': 'child<%s>' % t} for i, t in [
            ('sec0', 'secret'), ('sec1', 'secret'), ('az0', 'authz-simple'),
            ('io0', 'iothread'), ('io1', 'iothread'),
            ('tg0', 'throttle-group'), ('tp0', 'tls-creds-psk')]]
    for path in ('/objects', 'objects', '//objects/'):
        got = q.execute('qom-list', path=path)
        assert got[0] == want[0]
        assert sorted(got[1:], key=str) == sorted(want[1:], key=str)
    chardevs = q.execute('qom-list', path='/chardevs')
    assert chardevs[0] == {'name': 'type', 'type': 'string'}
    assert {'name': 'qmp0', 'type': 'child<chardev-socket>'} in chardevs
    assert q.execute('qom-list', path='/chardevs/qmp0') == \
        infos(PROPS['chardev-socket'])
    assert q.execute('qom-get', path='/', property='type') == 'container'
    assert q.execute('qom-get', path='/', property='objects') == '/objects'
    assert q.execute('qom-get', path='/', property='chardevs') == \
        '/chardevs'
    assert q.execute('qom-get', path='/chardevs', property='type') == \
        'container'
    assert q.execute('qom-get', path='/chardevs', property='qmp0') == \
        '/chardevs/qmp0'
    assert q.execute('qom-get', path='/chardevs/qmp0', property='type') == \
        'chardev-socket'
    # this very client is connected to it
    assert q.execute('qom-get', path='/chardevs/qmp0',
                     property='connected') is True
    assert err(q, 'qom-get', path='/chardevs', property='nope') == \
        ('GenericError', "Property 'container.nope' not found")
    assert err(q, 'qom-get', path='/chardevs/qmp0', property='nope') == \
        ('GenericError', "Property 'chardev-socket.nope' not found")
    assert err(q, 'qom-get', path='/chardevs/nope', property='type') == \
        ('DeviceNotFound', "Device '/chardevs/nope' not found")
    assert err(q, 'qom-list', path='/chardevs/nope') == \
        ('DeviceNotFound', "Device '/chardevs/nope' not found")
    assert q.execute('qom-get', path='/objects', property='az0') == \
        '/objects/az0'


def test_qom_list_objects(qd):
    q = qd.qmp
    for oid, t in [('sec0', 'secret'), ('az0', 'authz-simple'),
                   ('io0', 'iothread'), ('tp0', 'tls-creds-psk')]:
        assert q.execute('qom-list', path='/objects/' + oid) == \
            infos(PROPS[t])
    assert q.execute('qom-list', path='sec0') == infos(PROPS['secret'])
    assert q.execute('qom-list', path='//objects//az0') == \
        infos(PROPS['authz-simple'])
    assert q.execute('qom-list', path='/objects/az0/') == \
        infos(PROPS['authz-simple'])
    tg = q.execute('qom-list', path='/objects/tg0')
    assert [p['name'] for p in tg] == TG_PROPS
    assert tg[4] == {'name': 'limits', 'type': 'ThrottleLimits'}


def test_qom_list_errors(qd):
    q = qd.qmp
    for path in ('/nope', 'nope', '/objects/nope', '/objects/az0/type'):
        assert err(q, 'qom-list', path=path) == \
            ('DeviceNotFound', "Device '%s' not found" % path)
    assert err(q, 'qom-list', path='') == \
        ('GenericError', "Path '' is ambiguous")
    assert err(q, 'qom-list') == \
        ('GenericError', "Parameter 'path' is missing")
    assert err(q, 'qom-list', path=5) == \
        ('GenericError', "Invalid parameter type for 'path', "
         "expected: string")
    assert err(q, 'qom-list', path='/', x=1) == \
        ('GenericError', "Parameter 'x' is unexpected")
    # nothing changed
    assert len(q.execute('qom-list', path='/objects')) == 8


def type_set(lst):
    return {tuple(sorted(t.items())) for t in lst}


def check_types(got, want):
    g, w = type_set(got), type_set(want)
    if bjtest.is_qsd():
        assert w <= g
    else:
        assert g == w


CONCRETE = [{'name': 'authz-simple', 'parent': 'authz'},
            {'name': 'iothread', 'parent': 'event-loop-base'},
            {'name': 'secret', 'parent': 'secret_common'},
            {'name': 'tls-creds-psk', 'parent': 'tls-creds'},
            {'name': 'tls-creds-x509', 'parent': 'tls-creds'},
            {'name': 'throttle-group', 'parent': 'object'}]
CHARDEVS = [{'name': 'chardev-socket', 'parent': 'chardev'},
            {'name': 'chardev-stdio', 'parent': 'chardev-fd'},
            {'name': 'chardev-null', 'parent': 'chardev'}]


def test_qom_list_types(qd):
    q = qd.qmp
    check_types(q.execute('qom-list-types'),
                CONCRETE + CHARDEVS + [{'name': 'container',
                                        'parent': 'object'}])
    check_types(q.execute('qom-list-types', implements='user-creatable'),
                CONCRETE)
    check_types(q.execute('qom-list-types', implements='user-creatable',
                          abstract=True),
                CONCRETE + [
                    {'name': 'user-creatable', 'parent': 'interface',
                     'abstract': True},
                    {'name': 'secret_common', 'parent': 'object',
                     'abstract': True},
                    {'name': 'event-loop-base', 'parent': 'object',
                     'abstract': True}])
    check_types(q.execute('qom-list-types', implements='tls-creds',
                          abstract=True),
                [{'name': 'tls-creds', 'parent': 'object', 'abstract': True},
                 {'name': 'tls-creds-psk', 'parent': 'tls-creds'},
                 {'name': 'tls-creds-x509', 'parent': 'tls-creds'}])
    assert q.execute('qom-list-types', implements='throttle-group') == \
        [{'name': 'throttle-group', 'parent': 'object'}]
    assert q.execute('qom-list-types', implements='nope') == []
    assert err(q, 'qom-list-types', implements=5) == \
        ('GenericError', "Invalid parameter type for 'implements', "
         "expected: string")
    assert err(q, 'qom-list-types', abstract='x') == \
        ('GenericError', "Invalid parameter type for 'abstract', "
         "expected: boolean")


def test_qom_list_properties(qd):
    q = qd.qmp
    for t, props in PROPS.items():
        assert q.execute('qom-list-properties', typename=t) == infos(props)
    tg = q.execute('qom-list-properties', typename='throttle-group')
    assert [p['name'] for p in tg] == TG_PROPS
    assert err(q, 'qom-list-properties', typename='nope') == \
        ('DeviceNotFound', "Class 'nope' not found")
    for iface in ('user-creatable', 'interface'):
        assert err(q, 'qom-list-properties', typename=iface) == \
            ('GenericError', "Parameter 'typename' expects a QOM type")
    assert err(q, 'qom-list-properties') == \
        ('GenericError', "Parameter 'typename' is missing")


def test_qom_get_object_properties(qd):
    q = qd.qmp

    def get(oid, prop):
        return q.execute('qom-get', path='/objects/' + oid, property=prop)

    assert [get('sec0', p) for p in
            ('format', 'data', 'file', 'loaded', 'keyid', 'iv')] == \
        ['raw', 'abc', '', True, '', '']
    assert [get('sec1', p) for p in ('format', 'data', 'file', 'loaded')] == \
        ['raw', '', qd.sec_file, True]
    assert get('az0', 'identity') == 'CN=foo'
    assert [get('io0', p) for p in
            ('poll-max-ns', 'poll-grow', 'poll-shrink', 'aio-max-batch',
             'thread-pool-min', 'thread-pool-max')] == \
        [32768, 0, 0, 0, 0, 64]
    assert [get('io1', p) for p in
            ('poll-max-ns', 'poll-grow', 'poll-shrink', 'aio-max-batch')] == \
        [100, 2, 3, 4]
    assert [get('tp0', p) for p in
            ('dir', 'endpoint', 'verify-peer', 'priority', 'username',
             'loaded', 'type')] == \
        [qd.psk_dir, 'server', True, '', '', True, 'tls-creds-psk']
    assert get('tg0', 'type') == 'throttle-group'
    assert err(q, 'qom-get', path='/objects/io0', property='nope') == \
        ('GenericError', "Property 'iothread.nope' not found")
    assert err(q, 'qom-get', path='/objects/tp0', property='sanity-check') \
        == ('GenericError',
            "Property 'tls-creds-psk.sanity-check' not found")
    assert err(q, 'qom-get', path='', property='type') == \
        ('DeviceNotFound', "Device '' not found")


def test_qom_schema_entries(qd):
    """The three commands are in query-commands."""
    names = {c['name'] for c in qd.qmp.execute('query-commands')}
    assert {'qom-list', 'qom-list-types', 'qom-list-properties'} <= names


def test_qom_set(qd):
    q = qd.qmp

    def get(oid, prop):
        return q.execute('qom-get', path='/objects/' + oid, property=prop)

    q.execute('qom-set', path='/objects/az0', property='identity',
              value='CN=bar')
    assert get('az0', 'identity') == 'CN=bar'
    assert err(q, 'qom-set', path='/objects/az0', property='identity',
               value=5) == \
        ('GenericError', "Invalid parameter type for 'identity', "
         "expected: string")
    for prop, v in (('poll-max-ns', 5), ('poll-grow', 3), ('poll-shrink', 0),
                    ('aio-max-batch', 7), ('thread-pool-min', 1),
                    ('thread-pool-max', 8)):
        q.execute('qom-set', path='/objects/io0', property=prop, value=v)
        assert get('io0', prop) == v
    assert err(q, 'qom-set', path='/objects/io0', property='poll-max-ns',
               value='x') == \
        ('GenericError', "Invalid parameter type for 'poll-max-ns', "
         "expected: integer")
    assert err(q, 'qom-set', path='/objects/io0', property='poll-max-ns',
               value=1.5) == \
        ('GenericError', "Invalid parameter type for 'poll-max-ns', "
         "expected: integer")
    assert err(q, 'qom-set', path='/objects/io0', property='poll-shrink',
               value=-3) == \
        ('GenericError', 'poll-shrink value must be in range '
         '[0, 9223372036854775807]')
    assert get('io0', 'poll-max-ns') == 5 and get('io0', 'poll-shrink') == 0
    assert err(q, 'qom-set', path='/objects/sec0', property='loaded',
               value=False) == \
        ('GenericError', "Property 'secret.loaded' is not writable")
    assert err(q, 'qom-set', path='/objects/tp0', property='loaded',
               value=False) == \
        ('GenericError', "Property 'tls-creds-psk.loaded' is not writable")
    assert err(q, 'qom-set', path='/objects/tp0', property='nope',
               value=False) == \
        ('GenericError', "Property 'tls-creds-psk.nope' not found")


@pytest.mark.blockjobd_only('qsd takes new secret and TLS settings that '
                            'the loaded object then ignores')
def test_qom_set_refused_after_creation(qd):
    q = qd.qmp
    for oid, t, prop, v in (('sec0', 'secret', 'data', 'x'),
                            ('sec0', 'secret', 'format', 'base64'),
                            ('tp0', 'tls-creds-psk', 'dir', '/x'),
                            ('tp0', 'tls-creds-psk', 'priority', 'NORMAL')):
        assert err(q, 'qom-set', path='/objects/' + oid, property=prop,
                   value=v) == \
            ('GenericError', "Property '%s.%s' is not writable" % (t, prop))
    assert q.execute('qom-get', path='/objects/sec0', property='data') == \
        'abc'
    assert q.execute('qom-get', path='/objects/tp0', property='priority') \
        == ''
