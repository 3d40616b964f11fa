"""Diffing our job events against qemu-storage-daemon 7.2's recordings.

The recordings live in the repository, tests/golden/qsd-7.2/<label>.json
(or $BLOCKJOBD_GOLDEN_DIR), and are made by scripts/record-golden.py, which
runs the tests that call assert_matches() against qemu-storage-daemon with
$BLOCKJOBD_GOLDEN_RECORD set: in that mode assert_matches() saves the run
instead of comparing it.  Each recording holds the raw event sequence, the
canonical one (drain-induced pause/resume pairs removed) and the reduced
event data (offset/len as "offset==len"/"offset<len", a non-zero speed as
"set").

    rec = golden.Recorder(daemon.qmp, 'stream0')   # collects that job's events
    ... run the scenario ...
    golden.assert_matches('stream.auto', rec.events)

A recording that is missing is a failure, never a skip: the recordings are
part of the tree.
"""

import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RECORD_ENV = 'BLOCKJOBD_GOLDEN_RECORD'


def golden_dir():
    d = os.environ.get('BLOCKJOBD_GOLDEN_DIR')
    if d:
        return d
    return os.path.join(REPO, 'tests', 'golden', 'qsd-7.2')


def load(label):
    """The recording for label ('stream.auto')."""
    path = os.path.join(golden_dir(), label + '.json')
    if not os.path.exists(path):
        pytest.fail('no golden recording %s (scripts/record-golden.py makes '
                    'them)' % path)
    with open(path) as f:
        return json.load(f)


def save_run(label, events):
    """Record mode: one run of label, as scripts/record-golden.py merges
    them (one file per run, named for the test that made it)."""
    out = os.path.join(os.environ[RECORD_ENV], label)
    os.makedirs(out, exist_ok=True)
    test = os.environ.get('PYTEST_CURRENT_TEST', '?').split(' ')[0]
    n = len(os.listdir(out))
    with open(os.path.join(out, '%04d.json' % n), 'w') as f:
        json.dump({'label': label, 'test': test,
                   'sequence': sequence(events),
                   'events': [reduce(e) for e in events]}, f, indent=1)


def entry(ev):
    """One element of a sequence, as the recordings spell it."""
    name, data = ev['event'], ev.get('data', {})
    if name == 'JOB_STATUS_CHANGE':
        return '%s:%s' % (name, data['status'])
    if name == 'BLOCK_JOB_ERROR':
        return '%s:%s:%s' % (name, data['operation'], data['action'])
    if name == 'BLOCK_JOB_COMPLETED' and 'error' in data:
        return '%s:error' % name
    return name


def sequence(events):
    return [entry(e) for e in events]


def canonical(seq):
    """seq without drain-induced pairs: an adjacent paused->running or
    standby->ready that does not follow an error."""
    pairs = {('JOB_STATUS_CHANGE:paused', 'JOB_STATUS_CHANGE:running'),
             ('JOB_STATUS_CHANGE:standby', 'JOB_STATUS_CHANGE:ready')}
    out = []
    i = 0
    while i < len(seq):
        if (i + 1 < len(seq) and (seq[i], seq[i + 1]) in pairs
                and not (out and out[-1].startswith('BLOCK_JOB_ERROR'))):
            i += 2
            continue
        out.append(seq[i])
        i += 1
    return out


def reduce(ev):
    """The stable part of an event: {event, data} with progress and speed
    reduced as in the recordings."""
    data = dict(ev.get('data', {}))
    if 'len' in data and 'offset' in data:
        data['offset'] = ('offset==len' if data['offset'] == data['len']
                          else 'offset<len' if data['offset'] < data['len']
                          else 'offset>len')
        data['len'] = 'len'
    if data.get('speed'):
        data['speed'] = 'set'
    return {'event': ev['event'], 'data': data}


def block_job_data(events):
    return [reduce(e) for e in events if e['event'].startswith('BLOCK_JOB_')]


def compare(label, events):
    """Returns {raw, canonical, data: bool, plus what differed}."""
    g = load(label)
    seq = sequence(events)
    ours = block_job_data(events)
    theirs = [e for e in g['events'] if e['event'].startswith('BLOCK_JOB_')]
    return {
        'raw': seq == g['sequence'],
        'canonical': canonical(seq) == g['canonical'],
        'data': ours == theirs,
        'our_sequence': seq,
        'golden_sequence': g['sequence'],
        'our_canonical': canonical(seq),
        'golden_canonical': g['canonical'],
        'our_data': ours,
        'golden_data': theirs,
    }


def assert_matches(label, events, raw=False):
    """Canonical sequence and BLOCK_JOB_* data must equal the recording
    (and the raw sequence too with raw=True).  In record mode the run is
    saved instead."""
    if os.environ.get(RECORD_ENV):
        save_run(label, events)
        return
    r = compare(label, events)
    assert r['canonical'], ('%s: canonical sequence differs\n ours:   %s\n '
                            'golden: %s' % (label, r['our_canonical'],
                                            r['golden_canonical']))
    assert r['data'], ('%s: BLOCK_JOB_* data differs\n ours:   %s\n '
                       'golden: %s' % (label, r['our_data'],
                                       r['golden_data']))
    if raw:
        assert r['raw'], ('%s: raw sequence differs\n ours:   %s\n golden: %s'
                          % (label, r['our_sequence'], r['golden_sequence']))


def job_id_of(ev):
    data = ev.get('data', {})
    return data.get('id', data.get('device'))


class Recorder:
    """Collects, in order, the job events of one job from a QMP client."""

    NAMES = ('JOB_STATUS_CHANGE', 'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED',
             'BLOCK_JOB_READY', 'BLOCK_JOB_PENDING', 'BLOCK_JOB_ERROR')

    def __init__(self, qmp, job_id):
        self.qmp = qmp
        self.job_id = job_id
        self.events = []
        self._cursor = 0     # wait() looks only past the last match

    def poll(self):
        """Moves that job's pending events of the client into self.events."""
        keep = []
        for ev in self.qmp.get_events():
            if ev.get('event') in self.NAMES and job_id_of(ev) == self.job_id:
                self.events.append(ev)
            else:
                keep.append(ev)
        self.qmp.events = keep + self.qmp.events
        return self.events

    def wait(self, name, status=None, timeout=60.0):
        """Waits for the job's event (JOB_STATUS_CHANGE with status)."""
        def match(ev):
            if job_id_of(ev) != self.job_id:
                return False
            return status is None or ev['data'].get('status') == status
        self.poll()
        for i in range(self._cursor, len(self.events)):
            ev = self.events[i]
            if ev['event'] == name and match(ev):
                self._cursor = i + 1
                return ev
        ev = self.qmp.wait_event(name, timeout=timeout, match=match)
        # Events received while waiting came before this one.
        self.poll()
        self.events.append(ev)
        self._cursor = len(self.events)
        return ev

    def wait_status(self, status, timeout=60.0):
        return self.wait('JOB_STATUS_CHANGE', status, timeout)

    def statuses(self):
        self.poll()
        return [e['data']['status'] for e in self.events
                if e['event'] == 'JOB_STATUS_CHANGE']
