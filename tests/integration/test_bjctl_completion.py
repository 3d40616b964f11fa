"""bash completion of bjctl (contrib/bjctl.bash-completion) offers the
daemon's own names where a command takes one: jobs, nodes, exports, asked
of the daemon (blockjobd or qemu-storage-daemon) on the socket given by
--socket or $BJCTL_SOCKET.  bash-completion's two helpers are stubbed, as
in test_install.py, so the package need not be installed."""

import os
import subprocess

import bjtest
from bjctltest import bjctl_path
from test_bjctl_verbs import wf  # noqa: F401 (the fixture)

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                      'contrib', 'bjctl.bash-completion')

STUBS = r'''
_init_completion() { words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD
                     cur=${words[cword]}; prev=${words[cword-1]}; }
_filedir() { COMPREPLY=(FILES); }
source "$1"
t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
      COMPREPLY=(); _bjctl; echo "${COMPREPLY[*]}"; }
'''


def complete(env, lines, socket_env=True):
    """What each line of `t bjctl ...` calls offers, one string a line
    (sorted: the order is the daemon's)."""
    e = dict(bjtest.sanitizer_env(),
             PATH=os.path.dirname(bjctl_path()) + ':' + os.environ['PATH'])
    e.pop('BJCTL_SOCKET', None)
    if socket_env:
        e['BJCTL_SOCKET'] = env.sock()
    p = subprocess.run(['bash', '-c', STUBS + '\n'.join(lines), 'bash',
                        SCRIPT], capture_output=True, text=True, timeout=60,
                       env=e)
    assert p.returncode == 0, p.stderr
    return [' '.join(sorted(l.split()))
            for l in p.stdout.split('\n')[:len(lines)]]


def test_names_come_from_the_daemon(wf):
    wf.run('fleece', 'start', 'disk0', '--file',
           os.path.join(wf.workdir, 'f.qcow2'), '--name', 'fl', expect=0)
    out = complete(wf, [
        "t bjctl abort ''",               # jobs
        "t bjctl info f",
        "t bjctl backup d",               # nodes
        "t bjctl mirror disk0 --to ''",
        "t bjctl bitmap add ''",
        "t bjctl export remove ''",       # exports
        "t bjctl fleece stop f",
        "t bjctl fleece ''",              # fixed words, as before
        "t bjctl abort fl ''",            # one job id only
    ])
    assert out == ['fl', 'fl', 'disk0', 'disk0 fl', 'disk0 fl', 'fl guest',
                   'fl', 'start stop', '']
    wf.run('fleece', 'stop', 'fl', expect=0)


def test_socket_option_and_no_daemon(wf):
    sock = wf.sock()
    out = complete(wf, ["t bjctl -s %s node remove ''" % sock,
                        "t bjctl --socket /nonexistent node remove ''",
                        "t bjctl node remove ''"], socket_env=False)
    # no socket, or one nobody answers: nothing offered, no error
    assert out == ['disk0', '', '']
