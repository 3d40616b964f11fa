"""`meson install` (into a scratch DESTDIR, never into /): both binaries,
the two man pages, the systemd unit and bash completion for bjctl land where
the build's prefix says, and each is well-formed."""

import json
import os
import re
import shutil
import subprocess

import pytest

from bjtest import build_dir

pytestmark = pytest.mark.blockjobd_only('installs the blockjobd build')


def run(*cmd, env=None, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env=env, **kw)
    assert p.returncode == 0, '%s: %s%s' % (cmd, p.stdout, p.stderr)
    return p


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(destdir, {option: value}) after one install of the build under test."""
    build = build_dir()
    dest = str(tmp_path_factory.mktemp('destdir'))
    opts = {o['name']: o['value'] for o in json.loads(
        run('meson', 'introspect', build, '--buildoptions').stdout)}
    env = dict(os.environ, DESTDIR=dest)
    run('meson', 'install', '-C', build, '--no-rebuild', '--quiet', env=env)
    return dest, opts


def path(installed, *parts):
    dest, opts = installed
    prefix = opts['prefix']
    sub = [opts.get(p, p) for p in parts]
    return os.path.join(dest + prefix, *[s if not os.path.isabs(s) else
                                         os.path.relpath(s, prefix)
                                         for s in sub])


def test_every_file_lands(installed):
    for f in (path(installed, 'bindir', 'blockjobd'),
              path(installed, 'bindir', 'bjctl')):
        assert os.access(f, os.X_OK), f
    for f in (path(installed, 'mandir', 'man8', 'blockjobd.8'),
              path(installed, 'mandir', 'man1', 'bjctl.1'),
              path(installed, 'lib/systemd/system', 'blockjobd.service'),
              path(installed, 'datadir', 'bash-completion/completions',
                   'bjctl')):
        assert os.path.isfile(f), f
    p = run(path(installed, 'bindir', 'blockjobd'), '-V')
    assert p.stdout.startswith('blockjobd version ')


@pytest.mark.parametrize('page', ['man8/blockjobd.8', 'man1/bjctl.1'])
def test_man_page_renders_without_warnings(installed, page):
    f = path(installed, 'mandir', page)
    p = run('groff', '-ww', '-z', '-man', f)
    assert p.stderr == ''
    p = run('man', '--warnings', '-l', f,
            env=dict(os.environ, MANWIDTH='80'))
    assert p.stderr == ''
    assert p.stdout


def test_man_page_documents_every_option(installed):
    """Every option `blockjobd -h` lists is in blockjobd(8)."""
    # The source, where no line breaking hyphenates an option's name.
    with open(path(installed, 'mandir', 'man8', 'blockjobd.8')) as f:
        text = f.read().replace('\\-', '-')
    help_text = run(path(installed, 'bindir', 'blockjobd'), '-h').stdout
    options = set(re.findall(r'(?<![\w-])(--?[a-zA-Z][\w-]*)', help_text))
    assert {'-T', '--shutdown-max-seconds', '--object'} <= options
    for opt in options:
        assert re.search(r'(?<![\w-])%s(?![\w-])' % opt, text), opt


def test_systemd_unit(installed):
    unit = path(installed, 'lib/systemd/system', 'blockjobd.service')
    text = open(unit).read()
    daemon = os.path.join(installed[1]['prefix'], installed[1]['bindir'],
                          'blockjobd')
    # In the foreground, telling systemd READY=1 (test_sdnotify.py).
    assert 'ExecStart=%s \\\n' % daemon in text
    assert 'Type=notify' in text and '--daemonize' not in text
    if not shutil.which('systemd-analyze'):
        pytest.skip('systemd-analyze is not installed: unit not verified')
    # verify insists that ExecStart exists: check a copy naming the
    # DESTDIR's binary, the file an install without DESTDIR would name.
    copy = os.path.join(os.path.dirname(installed[0]), 'blockjobd.service')
    with open(copy, 'w') as f:
        f.write(text.replace(daemon, installed[0] + daemon))
    env = dict(os.environ,
               MANPATH=path(installed, 'mandir'))   # Documentation=man:...
    p = subprocess.run(['systemd-analyze', 'verify', copy],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0 and p.stderr == '', p.stderr


def test_bash_completion(installed):
    f = path(installed, 'datadir', 'bash-completion/completions', 'bjctl')
    run('bash', '-n', f)
    # What it offers, with bash-completion's two helpers stubbed (the
    # package need not be installed here).
    script = r'''
_init_completion() { words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD
                     cur=${words[cword]}; prev=${words[cword-1]}; }
_filedir() { COMPREPLY=(FILES); }
source "$1"
t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
      COMPREPLY=(); _bjctl; echo "${COMPREPLY[*]}"; }
t bjctl ba
t bjctl backup disk --sync ''
t bjctl -s /tmp/x bitmap ''
t bjctl bitmap add --p
t bjctl --socket ''
'''
    out = run('bash', '-c', script, 'bash', f).stdout.split('\n')
    assert out[:5] == ['backup', 'full top none incremental bitmap',
                       'list add remove clear enable disable merge sha256',
                       '--poll --persistent', 'FILES']


def test_link_bin_puts_both_programs_on_path(tmp_path):
    """scripts/link-bin.sh (what scripts/demo.sh runs after building):
    links to the build that follow rebuilds, replacing only links."""
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
    repo = os.path.realpath(repo)
    script = os.path.join(repo, 'scripts', 'link-bin.sh')
    bindir = tmp_path / 'bin'
    env = dict(os.environ, PATH='%s:%s' % (bindir, os.environ['PATH']))
    p = run(script, str(bindir), env=env)
    assert p.stdout == 'link-bin: blockjobd and bjctl are on PATH (in %s)\n' \
        % bindir
    for name, sub in (('blockjobd', 'daemon'), ('bjctl', 'ctl')):
        assert os.readlink(bindir / name) == os.path.join(
            repo, 'build', 'src', sub, name)
    assert run('bjctl', '--version', env=env).stdout.startswith(
        'bjctl version ')
    # again: the same links, no complaint; a stale link is re-pointed
    os.unlink(bindir / 'bjctl')
    os.symlink('/nonexistent', bindir / 'bjctl')
    run(script, str(bindir), env=env)
    assert os.readlink(bindir / 'bjctl').startswith(repo)
    # an installed program is left as it is, and the note says so
    os.unlink(bindir / 'blockjobd')
    (bindir / 'blockjobd').write_text('#!/bin/sh\n')
    p = run(script, str(bindir), env=env)
    assert 'is not a link (installed?): left as it is' in p.stdout
    assert (bindir / 'blockjobd').read_text() == '#!/bin/sh\n'
    # a directory not on PATH: the note says how to add it
    other = tmp_path / 'other'
    p = run(script, str(other))
    assert 'add it to PATH: export PATH="%s:$PATH"' % other in p.stdout


def test_demo_sh_links_the_binaries():
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
    with open(os.path.join(repo, 'scripts', 'demo.sh')) as f:
        lines = f.read().splitlines()
    assert lines.index('./scripts/link-bin.sh') == \
        lines.index('./scripts/build.sh normal') + 1
