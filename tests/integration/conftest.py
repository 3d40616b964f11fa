"""pytest fixtures for the integration tests (see bjtest.py for the API).

Fixtures:
    daemon          a started daemon with a negotiated client, daemon.qmp
    daemon_factory  daemon_factory(*extra_args, monitor=True, env=None,
                                   start=True, monitors=None)
    workdir         a per-test directory on disk (pytest's tmp_path)
    sockdir         a short per-test directory for UNIX sockets
    binary          path of the daemon under test (BLOCKJOBD_BIN)
    qsd             True when the binary under test is qemu-storage-daemon
    node_ctx        'main', or for the tests of a module marked
                    ctx_variants that use `daemon`, 'main' and then
                    'iothread': `daemon` started with --object
                    iothread,id=io0 and the nodes the helpers add
                    (bjtest.place_node, blockdev_add_image,
                    copyjob.Images.add, Chain.add_*) moved there
    chain           chain.Chain(workdir): the default base <- mid <- top
                    images (a module that needs another shape defines its
                    own chain fixture)

Markers:
    blockjobd_only(reason)  skip when running against qemu-storage-daemon
    qsd_only(reason)        skip when running against blockjobd
    no_valgrind(reason)     skip under scripts/test.sh --valgrind
    no_tsan(reason)         skip under scripts/test.sh --tsan
    ctx_variants            every test using `daemon` runs twice (node_ctx)
    main_ctx_only(reason)   ... except this one (what it checks differs
                            there, the reason says how)
    tsan_only(reason)       part of scripts/test.sh --tsan's suite only: not
                            collected in other runs (what it checks, no
                            other build can see), so it is not a skip there

Each test gets a 120 s timeout unless it sets its own timeout marker; under
valgrind and ThreadSanitizer (BLOCKJOBD_CHECK) every timeout is stretched.
"""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bjtest  # noqa: E402
from chain import Chain  # noqa: E402

DEFAULT_TIMEOUT = 120


def pytest_configure(config):
    config.addinivalue_line('markers', 'timeout(seconds): per-test timeout')
    config.addinivalue_line('markers', 'blockjobd_only(reason): skip against '
                            'qemu-storage-daemon')
    config.addinivalue_line('markers', 'qsd_only(reason): skip against '
                            'blockjobd')
    config.addinivalue_line('markers', 'no_valgrind(reason): skip with the '
                            'daemon under valgrind')
    config.addinivalue_line('markers', 'no_tsan(reason): skip with a '
                            'ThreadSanitizer daemon')
    config.addinivalue_line('markers', 'tsan_only(reason): collected only '
                            'under scripts/test.sh --tsan')
    config.addinivalue_line('markers', 'ctx_variants: tests using '
                            'daemon run with nodes in the main loop and in '
                            'an iothread')
    config.addinivalue_line('markers', 'main_ctx_only(reason): no iothread '
                            'variant for this test of a ctx_variants '
                            'module')


def pytest_generate_tests(metafunc):
    if (metafunc.definition.get_closest_marker('ctx_variants') and
            not metafunc.definition.get_closest_marker('main_ctx_only') and
            'node_ctx' in metafunc.fixturenames):
        metafunc.parametrize('node_ctx', NODE_CTXS, indirect=True)


def pytest_collection_modifyitems(config, items):
    qsd = bjtest.is_qsd()
    mode = bjtest.check_mode()
    if mode != 'tsan':
        other = [i for i in items if i.get_closest_marker('tsan_only')]
        if other:
            config.hook.pytest_deselected(items=other)
            items[:] = [i for i in items if i not in other]
    factor = bjtest.timeout_factor()
    for item in items:
        m = item.get_closest_marker('timeout')
        seconds = m.args[0] if m is not None and m.args else DEFAULT_TIMEOUT
        if m is None or factor != 1:
            # In front: the closest marker is the one pytest-timeout uses.
            item.add_marker(pytest.mark.timeout(seconds * factor),
                            append=False)
        for name in ('no_valgrind', 'no_tsan'):
            m = item.get_closest_marker(name)
            if m is not None and mode == name[3:]:
                reason = m.args[0] if m.args else 'does not work there'
                item.add_marker(pytest.mark.skip(
                    reason='not run under %s: %s' % (mode, reason)))
        m = item.get_closest_marker('blockjobd_only')
        if m is not None and qsd:
            reason = m.args[0] if m.args else 'blockjobd-specific behaviour'
            item.add_marker(pytest.mark.skip(
                reason='not applicable to qemu-storage-daemon: ' + reason))
        m = item.get_closest_marker('qsd_only')
        if m is not None and not qsd:
            reason = m.args[0] if m.args else 'qemu-storage-daemon only'
            item.add_marker(pytest.mark.skip(
                reason='only run against qemu-storage-daemon: ' + reason))


def pytest_report_header(config):
    return 'daemon under test: %s' % bjtest.daemon_bin()


@pytest.fixture(scope='session')
def binary():
    path = bjtest.daemon_bin()
    if not os.access(path, os.X_OK):
        pytest.fail('daemon binary %s not found (build it, or set '
                    'BLOCKJOBD_BIN)' % path, pytrace=False)
    return path


@pytest.fixture(scope='session')
def qsd():
    return bjtest.is_qsd()


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def chain(workdir):
    return Chain(workdir)


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix='bjs')
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon_factory(binary, tmp_path):
    started = []

    def factory(*extra_args, monitor=True, env=None, start=True,
                monitors=None):
        d = bjtest.Daemon(tmp_path, extra_args, binary=binary, env=env,
                          monitor=monitor, monitors=monitors)
        started.append(d)
        if start:
            d.start()
        return d

    yield factory
    errors = []
    for d in started:
        try:
            d.cleanup()
        except Exception as e:  # report every daemon, not just the first
            errors.append(str(e))
    if errors:
        pytest.fail('\n\n'.join(errors), pytrace=False)


# The contexts a job test runs its nodes in (node_ctx).
NODE_CTXS = ['main', 'iothread']


@pytest.fixture
def node_ctx(request):
    return getattr(request, 'param', 'main')


@pytest.fixture
def daemon(daemon_factory, node_ctx):
    if node_ctx == 'main':
        return daemon_factory()
    d = daemon_factory('--object', 'iothread,id=io0')
    d.qmp.node_iothread = 'io0'
    return d


@pytest.fixture
def remote(sockdir, workdir):
    """Remote NBD servers (remote.RemoteSet), stopped by pid at the end."""
    import remote as remote_mod
    rs = remote_mod.RemoteSet(sockdir, workdir)
    yield rs
    rs.cleanup()
