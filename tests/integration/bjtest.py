"""Test harness for blockjobd integration tests.

Works against blockjobd and against qemu-storage-daemon (set BLOCKJOBD_BIN to
either binary), so the same test can be checked against the reference.

    QMPClient   one QMP connection on a UNIX socket
    Daemon      a running daemon with one negotiated client (daemon.qmp)
    run_blockjobd(*args)   run the binary to completion (options errors, -h)
    qemu_img / qemu_io / run   run a peer tool, raising on failure
    nbd_export / nbd_connect   export a node over NBD, open a libnbd client
    nbd_export_teardown        hang up, delete the export and the nodes
    nbd_export_open / _close   export and connect, and undo it, for an
                               export whose NBD name is its id, on nbd.sock
                               in a given directory
    nbd_accepts(uri)           whether an NBD client gets through the handshake
    nbd_random_write           one random guest write, mirrored into a buffer
    blockdev_add_image         a raw or qcow2 node over a file
    blockdev_add_error         a blockdev-add that must fail: its message
    query_block_job            one job's query-block-jobs entry

Argument names: keyword arguments of cmd()/execute() have '_' turned into '-'
(node_name= becomes "node-name"); pass a dict as the second positional
argument to send names verbatim:  qmp.execute("blockdev-add", {"node-name": ..}).
"""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DEFAULT_BIN = os.path.join(REPO, 'build', 'src', 'daemon', 'blockjobd')

# Text a sanitizer prints when it finds something; any of them fails a test.
SANITIZER_MARKERS = (
    'ERROR: AddressSanitizer',
    'ERROR: LeakSanitizer',
    'runtime error:',
    'ERROR: ThreadSanitizer',
    'WARNING: ThreadSanitizer',
)


def daemon_bin():
    """Absolute path of the daemon under test (daemons run in workdir)."""
    b = os.environ.get('BLOCKJOBD_BIN') or DEFAULT_BIN
    if os.sep not in b:
        return shutil.which(b) or b
    return os.path.abspath(b)


def build_dir():
    """The build directory of the binaries under test.

    BLOCKJOBD_BUILD_DIR, else the build tree BLOCKJOBD_BIN lives in (when
    it is <dir>/src/daemon/blockjobd), else <repo>/build.
    """
    if os.environ.get('BLOCKJOBD_BUILD_DIR'):
        return os.environ['BLOCKJOBD_BUILD_DIR']
    b = os.path.abspath(daemon_bin())
    if b.endswith(os.path.join('src', 'daemon', 'blockjobd')):
        return os.path.dirname(os.path.dirname(os.path.dirname(b)))
    return os.path.join(REPO, 'build')


def bjctl_bin():
    """bjctl: BJCTL_BIN, else <build dir>/src/ctl/bjctl."""
    return os.environ.get('BJCTL_BIN') or os.path.join(build_dir(), 'src',
                                                        'ctl', 'bjctl')


# ---- checking modes: scripts/test.sh --valgrind / --tsan ----------------
#
# BLOCKJOBD_CHECK=valgrind runs every daemon the harness starts under
# valgrind's memcheck, one log per process next to the daemon's stderr;
# BLOCKJOBD_CHECK=tsan means BLOCKJOBD_BIN is a ThreadSanitizer build.  Both
# are slower than the daemon the tests were tuned on, so timeouts stretch.

VALGRIND_ERROR_EXIT = 97      # the daemon never exits with it by itself
TIMEOUT_FACTORS = {'valgrind': 4, 'tsan': 3}

# Error kinds memcheck reports one by one (what a killed process leaves
# behind without its closing "ERROR SUMMARY").
VALGRIND_ERROR_RE = re.compile(
    r'^==\d+== (Invalid (read|write|free)|Mismatched free|'
    r'Conditional jump|Use of uninitialised|Syscall param|'
    r'Source and destination overlap|Argument .* of function|'
    r'Invalid alignment|Illegal memory pool|'
    r'.*definitely lost in loss record)', re.M)
VALGRIND_SUMMARY_RE = re.compile(r'ERROR SUMMARY: (\d+) errors')


def check_mode():
    """'valgrind', 'tsan' or '' (BLOCKJOBD_CHECK)."""
    mode = os.environ.get('BLOCKJOBD_CHECK', '')
    if mode not in ('', 'valgrind', 'tsan'):
        raise ValueError('BLOCKJOBD_CHECK=%s: want valgrind or tsan' % mode)
    return mode


def under_valgrind():
    return check_mode() == 'valgrind'


def timeout_factor():
    return TIMEOUT_FACTORS.get(check_mode(), 1)


def valgrind_prefix(log_base):
    """The command prefix running a daemon under memcheck.

    %p in the log name: a --daemonize parent and its child each get their
    own log.  Only definite leaks are errors: blocks still pointed to at
    exit, or only from their inside ("possibly lost"), are not lost memory.
    """
    return ['valgrind', '--tool=memcheck', '--leak-check=full',
            '--show-leak-kinds=definite', '--errors-for-leak-kinds=definite',
            '--error-exitcode=%d' % VALGRIND_ERROR_EXIT,
            '--num-callers=30', '--log-file=%s.%%p' % log_base]


def wrap_command(cmd, log_base):
    """cmd (the daemon binary first) as the checking mode runs it: under
    valgrind with logs log_base.PID, else unchanged."""
    if under_valgrind() and not is_qsd(cmd[0]):
        return valgrind_prefix(log_base) + list(cmd)
    return list(cmd)


def valgrind_logs(log_base):
    d, name = os.path.split(log_base)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(d, n) for n in names
                  if n.startswith(name + '.') and n[len(name) + 1:].isdigit())


def check_valgrind_logs(log_base, what='daemon'):
    """Fails if a valgrind log of log_base reports an error.

    A complete log ends with "ERROR SUMMARY: N errors"; a process killed
    with SIGKILL leaves none, so its errors are found one by one.
    """
    for path in valgrind_logs(log_base):
        with open(path, 'rb') as f:
            text = f.read().decode('utf-8', 'replace')
        m = VALGRIND_SUMMARY_RE.search(text)
        if m:
            bad = int(m.group(1)) > 0
        else:
            bad = VALGRIND_ERROR_RE.search(_valgrind_body(text)) is not None
        if bad:
            raise AssertionError('%s: valgrind reported errors (%s):\n%s'
                                 % (what, path, text[-20000:]))


def _valgrind_body(text):
    """The log after its banner, which ends with the Command: line."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if 'Command:' in line:
            return '\n'.join(lines[i + 1:])
    return text


def is_qsd(binary=None):
    """True when the binary under test is qemu-storage-daemon."""
    return 'qemu-storage-daemon' in os.path.basename(binary or daemon_bin())


def sanitizer_env(env=None):
    """Environment with sane sanitizer defaults (kept if already set)."""
    env = dict(os.environ if env is None else env)
    env.setdefault('ASAN_OPTIONS',
                   'halt_on_error=1:detect_leaks=1:print_stacktrace=1:'
                   'abort_on_error=0:detect_stack_use_after_return=0')
    env.setdefault('UBSAN_OPTIONS',
                   'halt_on_error=1:abort_on_error=1:print_stacktrace=1')
    env.setdefault('LSAN_OPTIONS', 'print_suppressions=0')
    # Every report, not just the first; the harness fails the test on the
    # first 'WARNING: ThreadSanitizer' in the daemon's stderr either way.
    env.setdefault('TSAN_OPTIONS',
                   'halt_on_error=0:exitcode=66:second_deadlock_stack=1:'
                   'history_size=4')
    return env


def check_sanitizer_text(text, what='daemon'):
    for marker in SANITIZER_MARKERS:
        if marker in text:
            raise AssertionError('%s printed a sanitizer report:\n%s'
                                 % (what, text[-20000:]))


class QMPError(Exception):
    """An error reply: .cls is the error class, .desc the message."""

    def __init__(self, cls, desc, reply=None):
        super().__init__('%s: %s' % (cls, desc))
        self.cls = cls
        self.desc = desc
        self.reply = reply


class QMPClosed(Exception):
    """The server closed the connection."""


def _conv_keys(kwargs):
    return {k.replace('_', '-'): v for k, v in kwargs.items()}


def _matches(obj, pattern):
    """True if every key of dict pattern is in obj with a matching value."""
    if isinstance(pattern, dict):
        if not isinstance(obj, dict):
            return False
        return all(k in obj and _matches(obj[k], v)
                   for k, v in pattern.items())
    return obj == pattern


_IN_STR = re.compile(rb'["\\]')       # what ends or escapes in a string
_OUT_STR = re.compile(rb'["{}\[\]]')   # what a scan outside strings needs


class QMPClient:
    def __init__(self, path, timeout=30.0, negotiate=False):
        self.path = path
        self.timeout = timeout
        self.events = []          # events received and not yet consumed
        self.all_events = []      # every event ever received (never cleared)
        self._buf = b''
        self._scan = None         # state of a partly received JSON value
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
            self.greeting = self.recv(timeout)
        except BaseException:
            self.sock.close()
            raise
        if self.greeting is None or 'QMP' not in self.greeting:
            self.sock.close()
            raise AssertionError('bad QMP greeting: %r' % (self.greeting,))
        if negotiate:
            self.negotiate()

    # -- low level --------------------------------------------------------

    def send_raw(self, data):
        """Sends bytes (or str) exactly as given."""
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def send(self, msg):
        self.send_raw(json.dumps(msg).encode() + b'\n')

    def _read_more(self, deadline):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        r, _, _ = select.select([self.sock], [], [], remaining)
        if not r:
            return False
        data = self.sock.recv(65536)
        if not data:
            raise QMPClosed('QMP connection closed by the server')
        self._buf += data
        return True

    def recv(self, timeout=None):
        """Next message (any kind) as a dict, or None after timeout seconds.

        Events returned here are also recorded in all_events (not events).
        Raises QMPClosed at end of stream.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            text = self._take_value()
            if text is not None:
                msg = json.loads(text.decode('utf-8', 'replace'))
                if isinstance(msg, dict) and 'event' in msg:
                    self.all_events.append(msg)
                return msg
            if not self._read_more(deadline):
                return None

    def _take_value(self):
        """Cuts one complete top-level JSON value off the buffer, or None.

        Values are found by bracket depth (outside strings), not by lines,
        so a monitor with pretty=on (values over many lines) works too.  The
        scan resumes where it stopped, so a large value costs O(n).
        """
        buf = self._buf
        st = self._scan
        if st is None:
            i = 0
            while i < len(buf) and buf[i] in b' \t\r\n':
                i += 1
            if i:
                self._buf = buf = buf[i:]
            if not buf:
                return None
            if buf[0] not in b'{[':
                # Not an object: take the line, json.loads will complain.
                nl = buf.find(b'\n')
                if nl < 0:
                    return None
                self._buf = buf[nl + 1:]
                return buf[:nl]
            st = self._scan = [0, 0, False, False]   # pos, depth, str, esc
        pos, depth, in_str, esc = st
        n = len(buf)
        while pos < n:
            if not esc:
                # Jump to the next byte that matters: a big string (a
                # 1 MiB event) costs one regex search, not a Python loop
                # iteration per byte.
                m = (_IN_STR if in_str else _OUT_STR).search(buf, pos)
                if m is None:
                    pos = n
                    break
                pos = m.start()
            c = buf[pos]
            pos += 1
            if in_str:
                if esc:
                    esc = False
                elif c == 0x5c:            # backslash
                    esc = True
                elif c == 0x22:            # quote
                    in_str = False
            elif c == 0x22:
                in_str = True
            elif c in (0x7b, 0x5b):        # { [
                depth += 1
            elif c in (0x7d, 0x5d):        # } ]
                depth -= 1
                if depth == 0:
                    self._scan = None
                    # The line ending goes with its value.
                    end = pos
                    if buf[end:end + 2] == b'\r\n':
                        end += 2
                    elif buf[end:end + 1] == b'\n':
                        end += 1
                    self._buf = buf[end:]
                    return buf[:pos]
        st[:] = [pos, depth, in_str, esc]
        return None

    def recv_reply(self, timeout=None):
        """Next non-event message; events met on the way go to .events."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                raise TimeoutError('no QMP reply within %ss' % timeout)
            if isinstance(msg, dict) and 'event' in msg:
                self.events.append(msg)
                continue
            return msg

    # -- commands ---------------------------------------------------------

    def cmd_raw(self, msg, timeout=None):
        """Sends a whole message dict (e.g. with an 'id') and returns the reply."""
        self.send(msg)
        return self.recv_reply(timeout)

    def cmd(self, command, arguments=None, /, **kwargs):
        """Runs a command and returns the whole reply dict."""
        msg = {'execute': command}
        args = dict(arguments or {})
        args.update(_conv_keys(kwargs))
        if args or arguments is not None:
            msg['arguments'] = args
        return self.cmd_raw(msg)

    def execute(self, command, arguments=None, /, **kwargs):
        """Runs a command; returns its "return" value or raises QMPError."""
        reply = self.cmd(command, arguments, **kwargs)
        if 'error' in reply:
            err = reply['error']
            raise QMPError(err.get('class'), err.get('desc'), reply)
        if 'return' not in reply:
            raise AssertionError('unexpected QMP reply: %r' % (reply,))
        return reply['return']

    def negotiate(self):
        return self.execute('qmp_capabilities')

    # -- events -----------------------------------------------------------

    def wait_event(self, name, timeout=30.0, match=None):
        """Returns (and consumes) the first event called name.

        Looks at already-received events first.  match is a dict that the
        event must contain (recursively, e.g. {'data': {'id': 'job0'}}) or a
        callable taking the event.  Raises TimeoutError.
        """
        def ok(ev):
            if ev.get('event') != name:
                return False
            if match is None:
                return True
            if callable(match):
                return bool(match(ev))
            return _matches(ev, match)

        for i, ev in enumerate(self.events):
            if ok(ev):
                del self.events[i]
                return ev
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError('event %s not received within %ss '
                                   '(pending: %r)'
                                   % (name, timeout,
                                      [e.get('event') for e in self.events]))
            msg = self.recv(remaining)
            if msg is None:
                continue
            if isinstance(msg, dict) and 'event' in msg:
                if ok(msg):
                    return msg
                self.events.append(msg)
            else:
                raise AssertionError('unexpected message while waiting for '
                                     '%s: %r' % (name, msg))

    def get_events(self, name=None):
        """Consumes and returns the pending events (all, or only name)."""
        if name is None:
            evs, self.events = self.events, []
            return evs
        evs = [e for e in self.events if e.get('event') == name]
        self.events = [e for e in self.events if e.get('event') != name]
        return evs

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Daemon:
    """A daemon process with a QMP monitor socket.

    workdir: a directory for files of the test (images, logs).
    The monitor socket lives in a short private directory (sockdir) because
    UNIX socket paths are limited to 107 bytes.
    """

    def __init__(self, workdir, extra_args=(), binary=None, env=None,
                 monitor=True, timeout=None, monitors=None):
        self.workdir = str(workdir)
        self.binary = binary or daemon_bin()
        self.extra_args = [str(a) for a in extra_args]
        self.env = sanitizer_env(env)
        self.monitor = monitor
        # qemu-storage-daemon serves one client per socket chardev at a
        # time, so against it new_client() uses spare monitor sockets.
        if monitors is None:
            monitors = 4 if is_qsd(self.binary) else 1
        self.monitors = monitors if monitor else 0
        self._next_monitor = 1
        self.timeout = timeout or 30.0 * timeout_factor()
        self.sockdir = tempfile.mkdtemp(prefix='bj')
        self.sock_path = os.path.join(self.sockdir, 'qmp.sock')
        n = 0
        while os.path.exists(os.path.join(self.workdir, 'daemon%d.err' % n)):
            n += 1
        self.stderr_path = os.path.join(self.workdir, 'daemon%d.err' % n)
        self.stdout_path = os.path.join(self.workdir, 'daemon%d.out' % n)
        # Under valgrind: daemonN.valgrind.PID, one per process.
        self.valgrind_base = os.path.join(self.workdir, 'daemon%d.valgrind' % n)
        self.proc = None
        self.qmp = None
        self.clients = []
        self.returncode = None
        self._checked = False

    @property
    def args(self):
        # The monitor comes last: options apply in order, so once its socket
        # accepts, every --blockdev/--object before it has been applied.
        a = [self.binary] + self.extra_args
        if under_valgrind() and not is_qsd(self.binary):
            a = valgrind_prefix(self.valgrind_base) + a
        if self.monitor:
            a += ['--chardev',
                  'socket,id=qmp0,path=%s,server=on,wait=off' % self.sock_path,
                  '--monitor', 'chardev=qmp0']
            for i in range(1, self.monitors):
                a += ['--chardev', 'socket,id=qmp%d,path=%s,server=on,wait=off'
                      % (i, self.socket_path('qmp%d.sock' % i)),
                      '--monitor', 'chardev=qmp%d' % i]
        return a

    @property
    def pid(self):
        return self.proc.pid

    def socket_path(self, name):
        """A path for another socket in the short socket directory."""
        return os.path.join(self.sockdir, name)

    def start(self):
        with open(self.stdout_path, 'wb') as out, \
                open(self.stderr_path, 'wb') as err:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, env=self.env,
                                         cwd=self.workdir)
        if self.monitor:
            self.qmp = self.new_client(negotiate=True)
        return self

    def new_client(self, negotiate=True, path=None):
        """Connects another QMP client (waits for the socket to appear).

        blockjobd serves many clients on one socket; against
        qemu-storage-daemon each new client takes the next spare monitor.
        """
        if path is None:
            path = self.sock_path
            if self.qmp is not None and is_qsd(self.binary):
                if self._next_monitor >= self.monitors:
                    raise AssertionError('no spare monitor socket for another '
                                         'qemu-storage-daemon client')
                path = self.socket_path('qmp%d.sock' % self._next_monitor)
                self._next_monitor += 1
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                c = QMPClient(path, timeout=self.timeout,
                              negotiate=negotiate)
                self.clients.append(c)
                return c
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if self.proc.poll() is not None:
                self._checked = True   # reported here, not again at teardown
                raise AssertionError('daemon exited with status %s before its '
                                     'monitor came up:\n%s'
                                     % (self.proc.returncode, self.stderr()))
            if time.monotonic() > deadline:
                raise AssertionError('monitor socket %s did not appear:\n%s'
                                     % (path, self.stderr()))
            time.sleep(0.02)

    def stderr(self):
        try:
            with open(self.stderr_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def stdout(self):
        try:
            with open(self.stdout_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout=None):
        """Waits for exit, returns the status (negative: killed by signal)."""
        self.returncode = self.proc.wait(timeout or self.timeout)
        self._close_clients()
        return self.returncode

    def _close_clients(self):
        for c in self.clients:
            c.close()
        self.clients = []

    def check(self, expect_rc=0):
        """Fails if the daemon printed a sanitizer report or exited badly."""
        self._checked = True
        what = '%s (pid %d)' % (os.path.basename(self.binary), self.proc.pid)
        check_sanitizer_text(self.stderr(), what)
        check_valgrind_logs(self.valgrind_base, what)
        if expect_rc is not None and self.returncode != expect_rc:
            raise AssertionError('daemon exited with status %s (expected %s):\n%s'
                                 % (self.returncode, expect_rc, self.stderr()))

    def stop(self, expect_rc=0):
        """quit, then SIGTERM, then SIGKILL; then check() the outcome."""
        if self.proc is None:
            return None
        if self.proc.poll() is None and self.qmp is not None:
            try:
                self.qmp.cmd('quit')
            except (OSError, QMPClosed, TimeoutError, ValueError):
                pass
            try:
                self.proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = self.proc.returncode
                self._close_clients()
                raise AssertionError('daemon ignored quit and SIGTERM:\n%s'
                                     % self.stderr())
        self.returncode = self.proc.returncode
        self._close_clients()
        self.check(expect_rc)
        return self.returncode

    def cleanup(self):
        """Fixture teardown: stop if running, always check, remove sockdir."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
            elif self.proc is not None and not self._checked:
                self.returncode = self.proc.returncode
                self.check(0)
            elif self.proc is not None:
                # Checked by the test; still never let a report slip by.
                check_sanitizer_text(self.stderr())
                check_valgrind_logs(self.valgrind_base)
        finally:
            self._close_clients()
            shutil.rmtree(self.sockdir, ignore_errors=True)


def run(*cmd, check=True, timeout=120, input=None, env=None):
    """Runs a command, returns CompletedProcess (text); raises on failure."""
    cmd = [str(c) for c in cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       input=input, env=env)
    if check and p.returncode != 0:
        raise AssertionError('%s failed with status %d:\nstdout: %s\nstderr: %s'
                             % (' '.join(cmd), p.returncode, p.stdout,
                                p.stderr))
    return p


def qemu_img(*args, check=True, timeout=120):
    return run('qemu-img', *args, check=check, timeout=timeout)


def qemu_io(*args, check=True, timeout=120):
    """qemu-io; also fails (with check) when a command printed an error."""
    p = run('qemu-io', *args, check=check, timeout=timeout)
    if check and ('Pattern verification failed' in p.stdout
                  or 'error' in p.stderr.lower()):
        raise AssertionError('qemu-io %s: %s%s' % (' '.join(map(str, args)),
                                                   p.stdout, p.stderr))
    return p


def filled_source_and_target(d, size, tgt_fmt='qcow2'):
    """d/src.raw of size bytes, all 0x11, and an empty d/tgt.TGT_FMT of the
    same size: the images of a copy job's test."""
    src = os.path.join(str(d), 'src.raw')
    tgt = os.path.join(str(d), 'tgt.' + tgt_fmt)
    qemu_img('create', '-q', '-f', 'raw', src, size)
    qemu_io('-f', 'raw', '-c', 'write -P 0x11 0 %d' % size, src)
    qemu_img('create', '-q', '-f', tgt_fmt, tgt, size)
    return src, tgt


def run_blockjobd(*args, timeout=60, binary=None, env=None):
    """Runs the daemon binary to completion (for -h, -V, bad options)."""
    binary = binary or daemon_bin()
    cmd = [binary] + [str(a) for a in args]
    logdir = None
    if under_valgrind() and not is_qsd(binary):
        logdir = tempfile.mkdtemp(prefix='bjvg')
        log_base = os.path.join(logdir, 'run.valgrind')
        cmd = valgrind_prefix(log_base) + cmd
        timeout *= timeout_factor()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL,
                           env=sanitizer_env(env))
        check_sanitizer_text(p.stderr, os.path.basename(binary))
        if logdir:
            check_valgrind_logs(log_base, os.path.basename(binary))
    finally:
        if logdir:
            shutil.rmtree(logdir, ignore_errors=True)
    return p


def query_block_job(qmp, device):
    """The query-block-jobs entry of device's job, or None."""
    for j in qmp.execute('query-block-jobs'):
        if j['device'] == device:
            return j
    return None


def wait_until(cond, timeout=30.0, interval=0.02, what='condition'):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError('%s not met within %ss' % (what, timeout))
        time.sleep(interval)


def blockdev_add_image(qmp, driver, node, filename, **opts):
    """blockdev-add of node, a driver ('raw', 'qcow2') node over a file
    node of filename; opts: more of its options, by their QMP names.  On a
    daemon of the node_ctx 'iothread' variant the node goes to its iothread
    (place_node)."""
    args = {'driver': driver, 'node-name': node}
    args.update(opts)
    args['file'] = {'driver': 'file', 'filename': filename}
    ret = qmp.execute('blockdev-add', args)
    place_node(qmp, node)
    return ret


def place_node(qmp, node):
    """Moves node (and its file) into the iothread of a daemon started for
    the node_ctx 'iothread' variant (conftest.py), with
    x-blockdev-set-iothread; nothing on any other daemon.  An NBD export
    added later without an iothread serves it there too."""
    iothread = getattr(qmp, 'node_iothread', None)
    if iothread:
        qmp.execute('x-blockdev-set-iothread',
                    {'node-name': node, 'iothread': iothread})


def blockdev_add_error(qmp, opts):
    """blockdev-add opts, which must fail with a GenericError; returns the
    error's description."""
    try:
        qmp.execute('blockdev-add', opts)
    except QMPError as e:
        assert e.cls == 'GenericError', (e.cls, e.desc)
        return e.desc
    raise AssertionError('blockdev-add %r succeeded' % (opts,))


def nbd_export(daemon, node, name=None):
    """Starts daemon's NBD server on nbd.sock in its socket directory and
    exports node, writable, as export e0 (name: its NBD name, by default
    the node's); returns the socket path."""
    sock = daemon.socket_path('nbd.sock')
    daemon.qmp.execute('nbd-server-start',
                       addr={'type': 'unix', 'data': {'path': sock}})
    args = {'type': 'nbd', 'id': 'e0', 'node-name': node, 'writable': True}
    if name is not None:
        args['name'] = name
    daemon.qmp.execute('block-export-add', args)
    return sock


def nbd_export_teardown(qmp, h, *nodes):
    """Undoes nbd_export: flushes and hangs up the client h, deletes
    export e0 (until BLOCK_EXPORT_DELETED), then blockdev-dels nodes in
    that order."""
    h.flush()
    h.shutdown()
    qmp.execute('block-export-del', id='e0')
    qmp.wait_event('BLOCK_EXPORT_DELETED')
    for node in nodes:
        qmp.execute('blockdev-del', node_name=node)


def nbd_random_write(h, rnd, n, expect, size):
    """Guest write number n through the libnbd handle h: 4 KiB to 64 KiB of
    byte 0x40 + n % 64 at a 4 KiB-aligned offset below size, both drawn
    from the random.Random rnd; the same bytes go into expect (the image
    as the guest sees it)."""
    length = 4096 * rnd.randint(1, 16)
    off = 4096 * rnd.randrange((size - length) // 4096)
    data = bytes([0x40 + n % 64]) * length
    h.pwrite(data, off)
    expect[off:off + length] = data


def nbd_connect(sock, name, structured_replies=True):
    """A libnbd handle on export name at sock.  The caller has checked
    that libnbd's Python module is installed (pytest.importorskip)."""
    import nbd
    h = nbd.NBD()
    if not structured_replies:
        h.set_request_structured_replies(False)
    h.set_export_name(name)
    h.connect_unix(sock)
    return h


class NbdRandomWriter:
    """An NBD client (a thread) rewriting random blocks of `block` bytes in
    the first `area` bytes of export `name`, each with a new pattern byte
    (first, first+1, ... modulo patterns), as fast as it can until finish().
    count is how many writes landed."""

    def __init__(self, sock, name, block, area, seed, first, patterns):
        import random
        import threading
        self.h = nbd_connect(sock, name)
        self.count = 0
        self.error = None
        self._args = (block, area, random.Random(seed), first, patterns)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        block, area, rnd, first, patterns = self._args
        try:
            while not self._stop.is_set():
                off = block * rnd.randrange(area // block)
                self.h.pwrite(bytes([first + self.count % patterns]) * block,
                              off)
                self.count += 1
        except Exception as e:       # reported by finish()
            self.error = e

    def finish(self):
        """Stops the writer; its error, if any, fails the caller.  Returns
        the handle, still connected."""
        self._stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert self.error is None, self.error
        return self.h


def nbd_accepts(uri):
    """Whether a libnbd client gets through the handshake at uri; it hangs
    up at once when it does."""
    import nbd
    h = nbd.NBD()
    try:
        h.connect_uri(uri)
    except nbd.Error:
        return False
    h.shutdown()
    return True


def nbd_export_open(daemon, sockdir, node='q', name='e', writable=True):
    """Exports node as name (also the export's id) on nbd.sock in sockdir,
    starting the NBD server there unless it runs already; returns a libnbd
    handle connected to it."""
    import nbd
    sock = os.path.join(str(sockdir), 'nbd.sock')
    if not os.path.exists(sock):
        daemon.qmp.execute('nbd-server-start',
                           {'addr': {'type': 'unix', 'data': {'path': sock}}})
    daemon.qmp.execute('block-export-add',
                       {'type': 'nbd', 'id': name, 'node-name': node,
                        'name': name, 'writable': writable})
    h = nbd.NBD()
    h.connect_uri('nbd+unix:///%s?socket=%s' % (name, sock))
    return h


def nbd_export_close(daemon, h, node='q', name='e'):
    """Undoes nbd_export_open: hangs up h, deletes the export, waits until
    it is gone and deletes node."""
    h.shutdown()
    daemon.qmp.execute('block-export-del', id=name)
    wait_until(lambda: not any(
        x['id'] == name for x in daemon.qmp.execute('query-block-exports')),
        what='export gone')
    daemon.qmp.execute('blockdev-del', node_name=node)
