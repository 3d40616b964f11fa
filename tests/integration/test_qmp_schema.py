"""query-qmp-schema and query-version.

The schema is built from the tables the dispatcher checks, so these tests
hold it to what the dispatcher does: every command is described, every
described argument is accepted (a wrong-typed value is refused for its type,
never as unexpected), every reference resolves, and the entries have the
shape qemu-storage-daemon 7.2's have (compared with a running qsd).
"""

import shutil

import pytest

import bjtest
from bjtest import QMPError

BUILTIN_JSON = {'str': 'string', 'int': 'int', 'bool': 'boolean',
                'any': 'value', 'null': 'null', 'number': 'number'}
META_KEYS = {
    'command': {'name', 'meta-type', 'arg-type', 'ret-type'},
    'event': {'name', 'meta-type', 'arg-type'},
    'object': {'name', 'meta-type', 'members'},
    'enum': {'name', 'meta-type', 'members', 'values'},
    'array': {'name', 'meta-type', 'element-type'},
    'alternate': {'name', 'meta-type', 'members'},
    'builtin': {'name', 'meta-type', 'json-type'},
}

# Commands and events whose arguments qsd 7.2 describes exactly as we do
# (member names, order, types, optionality, enum values).  The others differ
# in member order only, or are unions qemu spells out that we check in the
# handler (blockdev-create's options, transaction actions, socket addresses).
# block-commit is qsd's plus our copy-mode and x-yield, blockdev-backup and
# drive-backup qsd's plus our x-yield (EXTRA_ARGS).
SAME_AS_QSD = [
    'qmp_capabilities', 'query-version', 'query-commands', 'quit',
    'blockdev-del', 'query-named-block-nodes', 'block-job-set-speed',
    'block-job-cancel', 'block-job-pause', 'block-job-resume',
    'block-job-complete', 'block-job-finalize', 'block-job-dismiss',
    'job-pause', 'job-resume', 'job-cancel', 'job-complete', 'job-finalize',
    'job-dismiss', 'query-block-jobs', 'query-jobs',
    'nbd-server-stop', 'block-export-del', 'query-block-exports',
    'block-dirty-bitmap-remove', 'block-dirty-bitmap-clear',
    'block-dirty-bitmap-enable', 'block-dirty-bitmap-disable',
    'x-debug-block-dirty-bitmap-sha256',
    'blockdev-snapshot', 'block_resize', 'query-blockstats',
    'block-set-write-threshold', 'query-block', 'x-debug-query-block-graph',
    'change-backing-file', 'nbd-server-add', 'nbd-server-remove',
    'blockdev-snapshot-sync',
    'blockdev-snapshot-internal-sync',
    'blockdev-snapshot-delete-internal-sync',
    'qom-list', 'qom-list-types', 'qom-list-properties',
    'BLOCK_IMAGE_CORRUPTED', 'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED',
    'BLOCK_JOB_ERROR', 'BLOCK_JOB_READY', 'BLOCK_JOB_PENDING',
    'BLOCK_WRITE_THRESHOLD', 'JOB_STATUS_CHANGE', 'BLOCK_EXPORT_DELETED',
]


# Commands that are qsd's plus arguments of ours at the end.
EXTRA_ARGS = {'block-commit': ['copy-mode', 'x-yield'],
              'blockdev-backup': ['x-yield'], 'drive-backup': ['x-yield']}
# Commands of a later qemu than 7.2 (the name and arguments are qemu's).
LATER_QEMU = ['block-job-change']


def by_name(schema):
    d = {}
    for e in schema:
        assert e['name'] not in d, 'duplicate schema entry %s' % e['name']
        d[e['name']] = e
    return d


def resolver(schema):
    """A function turning a type name into a name-free structure, so that
    two schemas' numberings can be compared."""
    d = by_name(schema)

    def r(name, stack=()):
        if name in stack:
            return '<recursive>'
        e = d[name]
        st = stack + (name,)
        mt = e['meta-type']
        if mt == 'builtin':
            return name
        if mt == 'enum':
            return ('enum', tuple(e['values']))
        if mt == 'array':
            return ('array', r(e['element-type'], st))
        if mt == 'alternate':
            return ('alternate', tuple(r(m['type'], st) for m in e['members']))
        return ('object',
                tuple((m['name'], 'default' in m, r(m['type'], st))
                      for m in e['members']),
                e.get('tag'),
                tuple((v['case'], r(v['type'], st))
                      for v in e.get('variants', [])))
    return d, r


@pytest.mark.blockjobd_only('the version policy is blockjobd\'s')
def test_query_version_policy(daemon):
    v = daemon.qmp.execute('query-version')
    assert v == {'qemu': {'major': 7, 'minor': 2, 'micro': 0},
                 'package': 'blockjobd 0.1.0'}
    c = daemon.new_client(negotiate=False)
    assert c.greeting['QMP']['version'] == v


def test_schema_well_formed(daemon):
    schema = daemon.qmp.execute('query-qmp-schema')
    d = by_name(schema)
    for e in schema:
        mt = e['meta-type']
        keys = set(e) - {'features', 'tag', 'variants', 'default'}
        assert keys == META_KEYS[mt], e
        refs = []
        if mt in ('command', 'event'):
            refs = [e['arg-type']] + ([e['ret-type']] if 'ret-type' in e
                                      else [])
            assert d[e['arg-type']]['meta-type'] == 'object', e
        elif mt == 'object':
            refs = [m['type'] for m in e['members']]
            for m in e['members']:
                assert set(m) <= {'name', 'type', 'default', 'features'}, m
                if 'default' in m:
                    assert m['default'] is None
            if 'tag' in e:
                tag = [m for m in e['members'] if m['name'] == e['tag']]
                assert len(tag) == 1
                values = d[tag[0]['type']]['values']
                cases = [v['case'] for v in e['variants']]
                # each case a value, once (a value that no table describes
                # has no branch)
                assert set(cases) <= set(values)
                assert len(set(cases)) == len(cases)
                refs += [v['type'] for v in e['variants']]
        elif mt == 'enum':
            assert [m['name'] for m in e['members']] == e['values']
        elif mt == 'array':
            refs = [e['element-type']]
            assert e['name'] == '[%s]' % e['element-type']
        elif mt == 'alternate':
            refs = [m['type'] for m in e['members']]
        elif mt == 'builtin':
            assert BUILTIN_JSON[e['name']] == e['json-type']
        if mt not in ('command', 'event', 'builtin', 'array'):
            # qemu's numbering: every non-builtin type is a number
            assert e['name'].isdigit(), e
        for ref in refs:
            assert ref in d, '%s refers to missing type %s' % (e['name'], ref)
    assert d['0'] == {'name': '0', 'meta-type': 'object', 'members': []}


def test_every_command_in_schema(daemon):
    q = daemon.qmp
    schema = q.execute('query-qmp-schema')
    commands = {e['name'] for e in schema if e['meta-type'] == 'command'}
    listed = {c['name'] for c in q.execute('query-commands')}
    assert listed == commands
    assert 'query-qmp-schema' in commands
    events = {e['name'] for e in schema if e['meta-type'] == 'event'}
    assert {'JOB_STATUS_CHANGE', 'BLOCK_JOB_COMPLETED',
            'BLOCK_WRITE_THRESHOLD', 'BLOCK_EXPORT_DELETED'} <= events


def valid_value(d, name):
    """A value of type name that passes the type check."""
    e = d[name]
    mt = e['meta-type']
    if mt == 'builtin':
        return {'str': 'x', 'int': 0, 'bool': False, 'any': {},
                'null': None, 'number': 0}[name]
    if mt == 'enum':
        return e['values'][0]
    if mt == 'array':
        return []
    if mt == 'alternate':
        return 'x' if any(m['type'] == 'str' for m in e['members']) \
            else valid_value(d, e['members'][0]['type'])
    obj = {}
    for m in e['members']:
        if 'default' not in m:
            obj[m['name']] = valid_value(d, m['type'])
    return obj


def wrong_value(d, name):
    """A value of the wrong JSON type for type name, or None if every
    value is right (any)."""
    e = d[name]
    if e['meta-type'] == 'builtin':
        return {'str': 1, 'int': 'x', 'bool': 'x', 'number': 'x',
                'null': 1}.get(name)
    if e['meta-type'] in ('enum', 'alternate'):
        return [1] if e['meta-type'] == 'alternate' else 1
    return 'x' if e['meta-type'] in ('array', 'object') else None


def argument_cases(d, cmd):
    """(arguments, member) for each described argument of cmd: the
    required members valid, the member itself of a wrong type."""
    arg = d[cmd['arg-type']]
    branches = [[]]
    if 'variants' in arg:
        branches = [[(arg['tag'], v['case'])] + [
            ('variant', m) for m in d[v['type']]['members']]
            for v in arg['variants']]
    for branch in branches:
        base = valid_value(d, arg['name'])
        members = list(arg['members'])
        tag = None
        if branch and branch[0][0] == arg['tag']:
            tag = branch[0][1]
            base[arg['tag']] = tag
            vmembers = [m for _, m in branch[1:]]
            for m in vmembers:
                if 'default' not in m:
                    base[m['name']] = valid_value(d, m['type'])
            members += vmembers
        for m in members:
            if tag is not None and m['name'] == arg['tag']:
                continue
            bad = wrong_value(d, m['type'])
            if bad is None:
                continue
            args = dict(base)
            args[m['name']] = bad
            yield args, m['name']
            # one level down: a plain object's members, by their path
            t = d[m['type']]
            if t['meta-type'] == 'object' and 'variants' not in t:
                inner = valid_value(d, t['name'])
                for sm in t['members']:
                    sbad = wrong_value(d, sm['type'])
                    if sbad is None:
                        continue
                    args = dict(base)
                    args[m['name']] = dict(inner, **{sm['name']: sbad})
                    yield args, '%s.%s' % (m['name'], sm['name'])


@pytest.mark.blockjobd_only('the value generator here fills plain members '
                             'only, not the nested unions qsd describes '
                             '(socket addresses)')
def test_every_schema_argument_accepted(daemon):
    q = daemon.qmp
    d = by_name(q.execute('query-qmp-schema'))
    n = 0
    for cmd in d.values():
        if cmd['meta-type'] != 'command' or cmd['name'] == 'qmp_capabilities':
            continue   # (qmp_capabilities: the monitor answers it itself)
        for args, member in argument_cases(d, cmd):
            with pytest.raises(QMPError) as ei:
                q.execute(cmd['name'], args)
            desc = ei.value.desc
            # (a uint64 member says it in qemu's words)
            assert desc.startswith("Invalid parameter type for '%s', "
                                   "expected: " % member) or \
                desc == "Parameter '%s' expects uint64" % member, \
                (cmd['name'], args, desc)
            n += 1
    assert n > 150   # the check did run over the tables
    # and nothing was created by the refused calls
    assert q.execute('query-named-block-nodes') == []
    assert q.execute('query-jobs') == []
    assert q.execute('query-block-exports') == []


def test_undescribed_argument_refused(daemon):
    """The other direction: what the schema does not name is refused."""
    q = daemon.qmp
    d = by_name(q.execute('query-qmp-schema'))
    for cmd in ('blockdev-del', 'query-named-block-nodes', 'job-cancel'):
        names = {m['name'] for m in d[d[cmd]['arg-type']]['members']}
        assert 'bogus' not in names
        with pytest.raises(QMPError) as ei:
            q.execute(cmd, {'bogus': 1})
        assert ei.value.desc in ("Parameter 'bogus' is unexpected",
                                 "Parameter 'node-name' is missing",
                                 "Parameter 'id' is missing")


@pytest.mark.blockjobd_only('compares blockjobd with qemu-storage-daemon')
def test_shape_matches_qsd(daemon, workdir):
    qsd_bin = shutil.which('qemu-storage-daemon')
    assert qsd_bin, 'qemu-storage-daemon is needed to compare schemas'
    ours = daemon.qmp.execute('query-qmp-schema')
    ref = bjtest.Daemon(workdir, binary=qsd_bin)
    try:
        ref.start()
        theirs = ref.qmp.execute('query-qmp-schema')
    finally:
        ref.cleanup()
    od, orr = resolver(ours)
    td, tr = resolver(theirs)
    for name in SAME_AS_QSD:
        assert od[name]['meta-type'] == td[name]['meta-type']
        assert orr(od[name]['arg-type']) == tr(td[name]['arg-type']), name
    for name, extra in EXTRA_ARGS.items():
        kind, members, *rest = orr(od[name]['arg-type'])
        mine = tuple(m for m in members if m[0] not in extra)
        assert (kind, mine, *rest) == tr(td[name]['arg-type']), name
        assert [m[0] for m in members[len(mine):]] == extra, name
    # Every command and event we have, qsd has too (extensions aside).
    for name, e in od.items():
        if e['meta-type'] in ('command', 'event') and \
                not name.startswith('x-debug-drain') and \
                name not in LATER_QEMU:
            assert name in td, name
    # Features (deprecated, unstable) as qsd's, for what both have; our own
    # x- extensions are unstable.  (blockdev-snapshot's
    # allow-write-only-overlay is not claimed.)
    for name, e in od.items():
        if e['meta-type'] != 'command':
            continue
        if name in td and name != 'blockdev-snapshot':
            assert e.get('features') == td[name].get('features'), name
        elif name.startswith('x-'):
            assert e.get('features') == ['unstable'], name
    # Entry shapes: the same keys per meta-type as qsd's.
    for mt in META_KEYS:
        mine = {frozenset(e) - {'features'} for e in ours
                if e['meta-type'] == mt}
        theirs_keys = {frozenset(e) - {'features'} for e in theirs
                       if e['meta-type'] == mt}
        assert mine <= theirs_keys, mt
    # TransactionAction: the union on type, a branch per action type we
    # run, each exactly as qsd's (all of qsd's).
    act = od[od[od[od['transaction']['arg-type']]['members'][0]['type']]
             ['element-type']]
    tact = td[td[td[td['transaction']['arg-type']]['members'][0]['type']]
              ['element-type']]
    assert act['tag'] == 'type'
    tv = {v['case']: v['type'] for v in tact['variants']}
    ov = {v['case']: v['type'] for v in act['variants']}
    assert set(ov) == set(tv)
    for case in ov:
        # (granularity and the bitmap list are checked by hand: "any")
        if case not in ('block-dirty-bitmap-add', 'block-dirty-bitmap-merge'):
            kind, wrap, *rest = orr(ov[case])
            extra = EXTRA_ARGS.get(case, [])
            if extra:
                # {data: the command's arguments}: ours end with extra
                (dname, dopt, (dkind, members, *drest)), = wrap
                mine = tuple(m for m in members if m[0] not in extra)
                assert [m[0] for m in members[len(mine):]] == extra, case
                wrap = ((dname, dopt, (dkind, mine, *drest)),)
            assert (kind, wrap, *rest) == tr(tv[case]), case
    # BlockdevOptions: the driver union, a branch per driver we have.
    add = od[od['blockdev-add']['arg-type']]
    assert add['tag'] == 'driver'
    cases = [v['case'] for v in add['variants']]
    assert {'file', 'raw', 'qcow2', 'null-co', 'blkdebug'} <= set(cases)
    tadd = td[td['blockdev-add']['arg-type']]
    tcases = {v['case']: v['type'] for v in tadd['variants']}
    assert orr(od[dict((v['case'], v['type']) for v in add['variants'])
                  ['null-co']]['name']) == tr(tcases['null-co'])
    # blockdev-reopen: {options: [BlockdevOptions]}, the same union as
    # blockdev-add's, as qsd has it.
    for d in (od, td):
        ro = d[d['blockdev-reopen']['arg-type']]['members']
        assert [(m['name'], 'default' in m) for m in ro] == \
            [('options', False)]
        assert d[ro[0]['type']]['element-type'] == \
            d['blockdev-add']['arg-type']
    # Each driver's members are members qsd describes, of the same kind
    # (we accept a subset of some drivers' options).
    for v in add['variants']:
        theirs_m = {m[0]: m for m in tr(tcases[v['case']])[1]}
        for m in orr(v['type'])[1]:
            if m[0].startswith('x-') and m[0] not in theirs_m:
                continue        # our own extension (nbd's x-connections)
            assert m[0] in theirs_m, (v['case'], m[0])
            t = theirs_m[m[0]]
            assert m[1] == t[1], (v['case'], m[0])
            if isinstance(m[2], tuple) and m[2][0] == 'enum':
                assert set(m[2][1]) == set(t[2][1]), (v['case'], m[0])
            elif m[2] not in ('<recursive>', 'any') and \
                    not isinstance(m[2], tuple):
                assert m[2] == t[2], (v['case'], m[0])
