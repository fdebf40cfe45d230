# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Generated arguments (hypothesis) for the engine's two doors that take user input,
Request(...) + run() and reflink_copy(...): each call either works or raises a LinkError
(BadInput, NotSupported...) with a message; never another exception type; never writes
outside its sandbox.  And what tests/unit/test_retention.py does not cover yet: parse_keep and
parse_snapshot_name on arbitrary values, and pruning after every run (as a job does) keeping
exactly what one pruning of the whole history would keep.
"""

from __future__ import annotations

import collections
import datetime
import math
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import faults
from helpers.faults import TALLY
from helpers.oracles import tree_state

from ansible_collections.fslinks.snapshots.plugins.module_utils import _retention
from ansible_collections.fslinks.snapshots.plugins.module_utils._reflink_copy import reflink_copy
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import LinkError
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import METHODS, Request, run

EXAMPLES = faults.scale(150, 1500)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not faults.LONG, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])

# Path pieces: the sandbox is FENCE/sandbox/a/b, so at most three '..' stay inside the fence's
# sandbox; the fence also holds a sentinel that must never change.
SEGMENTS = ['src', 'snaps', 'file', 'fifo', 'link', 'x', '..', '.', '', 'new\nline', 'sp ace', 'caf\u00e9',
            'bad-\udcff', 'a\x00b', '*', '[z-a]', 'a' * 255, 'a' * 300]
ODD = st.one_of(st.none(), st.integers(-2, 2), st.binary(max_size=8), st.just(''), st.just('relative/x'),
                st.lists(st.text(max_size=3), max_size=2), st.floats(allow_nan=True))


def _paths(base, likely):
    """Mostly LIKELY paths under BASE (so that runs get far), else any pieces, else junk."""
    segs = st.lists(st.sampled_from(SEGMENTS), min_size=0, max_size=4).filter(lambda s: s.count('..') <= 3)
    inside = segs.map(lambda s: os.path.join(base, *s) if s else base)
    good = st.sampled_from([os.path.join(base, p) for p in likely])
    return st.one_of(good, good, good, inside, inside, ODD)


def _often(good, other):
    return st.one_of(good, good, good, other)


def _known(exc):
    """Untyped exceptions reported as B6 (remove once fixed)."""
    text = str(exc)
    if isinstance(exc, ValueError) and ('null' in text or 'NUL' in text):
        return 'B6a'
    if type(exc).__name__ == 'error' or 'bad character range' in text or 'bad escape' in text:
        return 'B6b'
    if isinstance(exc, TypeError) and 'expected str, bytes' in text:
        return 'B6c/f'
    if isinstance(exc, TypeError) and "'<' not supported" in text:
        return 'B6d'
    if isinstance(exc, TypeError) and 'is not iterable' in text:
        return 'B6g'
    if isinstance(exc, TypeError) and 'not JSON serializable' in text:
        return 'B6h'
    return None


class Sandbox:
    """FENCE/sandbox/a/b with a small tree; FENCE/outside/sentinel must never change."""

    def __init__(self, fence):
        self.fence = fence
        self.root = fence / 'sandbox'
        self.base = self.root / 'a' / 'b'
        outside = fence / 'outside'
        outside.mkdir()
        (outside / 'sentinel').write_bytes(b'must not change')
        self.outside = tree_state(outside)
        self.reset()

    def reset(self):
        if self.root.exists():
            shutil.rmtree(self.root)
        src = self.base / 'src'
        (src / 'sub').mkdir(parents=True)
        (src / 'file').write_bytes(b'data\n')
        (src / 'sub' / 'f').write_bytes(b'x' * 5000)
        (self.base / 'file').write_bytes(b'a file\n')
        os.mkfifo(self.base / 'fifo')
        os.symlink('src', self.base / 'link')

    def problems(self):
        out = []
        if tree_state(self.fence / 'outside') != self.outside:
            out.append('the sentinel outside the sandbox changed')
        extra = sorted(set(os.listdir(self.fence)) - {'sandbox', 'outside'})
        if extra:
            out.append('written next to the sandbox: %s' % extra)
        return out


def _record(fault, fs, outcomes, exc):
    if exc is None:
        outcomes['worked'] += 1
    elif isinstance(exc, LinkError):
        outcomes['%s with a message' % type(exc).__name__] += 1
    else:
        known = _known(exc)
        outcomes['untyped %s (bug %s)' % (type(exc).__name__, known) if known else
                 'UNEXPECTED %s: %s' % (type(exc).__name__, exc)] += 1


def _one_hostile(draw, good, bad):
    """Arguments where at most one (chosen at random, or none) comes from BAD, the rest from
    GOOD: hostile values must be met deep in a run, not only by the first check."""
    names = sorted(good)
    pick = draw(st.sampled_from([None, None] + names))
    return {name: draw(bad[name] if name == pick else good[name]) for name in names}


@pytest.mark.slow
def test_fuzz_request_and_run(xfs, workdir):
    box = Sandbox(workdir(xfs))
    base = str(box.base)
    outcomes = collections.Counter()
    unexpected = []
    good = {
        'src': st.sampled_from([os.path.join(base, p) for p in ('src', 'src/sub', 'link', 'x/../src')]),
        'dest': st.sampled_from([os.path.join(base, p) for p in ('snaps', '../b/snaps', 'sn\naps', 'caf\u00e9',
                                                                 'bad-\udcff')]),
        'method': st.sampled_from(METHODS),
        'keep': st.fixed_dictionaries({}, optional={'last': st.integers(0, 3), 'daily': st.integers(0, 3)}).filter(
            lambda keep: not keep or any(keep.values())),       # all zero is refused: a bad value
        'exclude': st.lists(st.sampled_from(['*.tmp', '/sub/', 'f*', '/snaps/', '**/f', '[fs]*', 'sub/']), max_size=3),
        'one_file_system': st.booleans(),
        'lock_timeout': st.sampled_from([0, 1]),
        'dry_run': st.booleans(),
    }
    bad = dict(good)
    bad.update({
        'src': st.one_of(_paths(base, ['file', 'fifo', 'nope', 'snaps', '/', 'src/\x00']), ODD),
        'dest': st.one_of(_paths(base, ['src', 'src/snaps', 'file/snaps', 'snaps2/deeper', '.', '..', 'link']), ODD),
        'method': st.one_of(ODD, st.text(max_size=8)),
        'keep': st.one_of(ODD, st.dictionaries(
            st.one_of(st.sampled_from(_retention.KEEP_KEYS), st.text(max_size=6)),
            st.one_of(st.integers(-5, 10), st.integers(10 ** 5, 10 ** 30), st.text(max_size=4), st.floats(),
                      st.booleans(), st.none()), max_size=4)),
        'exclude': st.one_of(ODD, st.lists(st.one_of(st.sampled_from(['[z-a]', '[]', '[!]', '/', '**', 'a[', '\\']),
                                                     st.text(max_size=6), ODD), max_size=3)),
        'one_file_system': ODD,
        'lock_timeout': st.one_of(st.integers(-1, 1), st.floats(allow_nan=True, allow_infinity=False), ODD),
    })

    @SETTINGS
    @given(st.composite(lambda draw: _one_hostile(draw, good, bad))())
    def one(args):
        box.reset()
        exc = None
        dry_run = args.pop('dry_run')
        try:
            req = Request(**args)
            if isinstance(args['lock_timeout'], float) and math.isnan(args['lock_timeout']):
                outcomes['accepted lock_timeout=nan (bug B6d: would wait forever on a held lock)'] += 1
            run(req, dry_run=dry_run)
        except Exception as caught:       # pylint: disable=broad-exception-caught
            exc = caught
        _record('fuzz-engine', 'xfs', outcomes, exc)
        if exc is not None and not isinstance(exc, LinkError) and not _known(exc):
            unexpected.append('%r for Request(**%r)' % (exc, args))
        if exc is not None and isinstance(exc, LinkError):
            assert str(exc).strip(), 'a LinkError without a message'
        bad_news = box.problems()
        assert not bad_news, bad_news

    one()
    for outcome, count in sorted(outcomes.items()):
        for _i in range(count):
            TALLY.record('fuzz-engine', 'xfs', 'Request/run: ' + outcome)
    print(dict(outcomes))
    assert not unexpected, '\n'.join(unexpected[:10])


@pytest.mark.slow
def test_fuzz_reflink_copy(xfs, workdir):
    box = Sandbox(workdir(xfs))
    base = str(box.base)
    outcomes = collections.Counter()
    unexpected = []
    good = {
        'src': st.sampled_from([os.path.join(base, p) for p in ('src', 'src/file', 'file', 'link', 'src/sub/f',
                                                                'x/../file')]),
        'dest': st.sampled_from([os.path.join(base, p) for p in ('copy', 'src/sub/copy', 'file', 'co\npy', 'bad-\udcff')]),
        'policy': st.sampled_from(['auto', 'always', 'never']),
        'preserve': st.lists(st.sampled_from(['mode', 'ownership', 'timestamps', 'xattrs']), max_size=4),
        'force': st.booleans(), 'backup': st.booleans(), 'dry_run': st.booleans(),
    }
    bad = dict(good)
    bad.update({
        'src': st.one_of(_paths(base, ['fifo', 'nope', 'src/\x00', '/dev/null']), ODD),
        'dest': st.one_of(_paths(base, ['src', 'src/copy', '.', '..', 'nope/copy', 'fifo', '/']), ODD),
        'policy': st.one_of(ODD, st.text(max_size=6)),
        'preserve': st.one_of(st.lists(st.sampled_from(['acls', '', 'MODE']), min_size=1, max_size=2), ODD),
    })

    @SETTINGS
    @given(st.composite(lambda draw: _one_hostile(draw, good, bad))())
    def one(args):
        box.reset()
        exc = None
        try:
            reflink_copy(**args)
        except Exception as caught:       # pylint: disable=broad-exception-caught
            exc = caught
        _record('fuzz-engine', 'xfs', outcomes, exc)
        if exc is not None and not isinstance(exc, LinkError) and not _known(exc):
            unexpected.append('%r for reflink_copy(**%r)' % (exc, args))
        bad_news = box.problems()
        assert not bad_news, bad_news

    one()
    for outcome, count in sorted(outcomes.items()):
        for _i in range(count):
            TALLY.record('fuzz-engine', 'xfs', 'reflink_copy: ' + outcome)
    print(dict(outcomes))
    assert not unexpected, '\n'.join(unexpected[:10])


# ---------------------------------------------------------------- retention: what was missing

ANYTHING = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                                  st.binary(max_size=4)),
                        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                st.dictionaries(st.one_of(st.text(max_size=8),
                                                                          st.sampled_from(_retention.KEEP_KEYS)),
                                                                inner, max_size=4)),
                        max_leaves=8)


@settings(max_examples=faults.scale(300, 3000), deadline=None, database=None)
@given(ANYTHING)
def test_parse_keep_raises_only_value_error(value):
    try:
        policy = _retention.parse_keep(value)
    except ValueError as exc:
        assert str(exc)
        return
    floor = policy.pop(_retention.MIN_FREE, None)
    assert floor is None or _retention.min_free_bytes(floor, 1 << 40) >= 0
    assert set(policy) <= set(_retention.KEEP_KEYS)
    assert all(isinstance(v, int) and 0 <= v <= _retention.KEEP_MAX for v in policy.values())
    assert not policy or any(policy.values())       # all zero is refused


@settings(max_examples=faults.scale(300, 3000), deadline=None, database=None)
@given(st.one_of(st.text(max_size=30), st.from_regex(r'\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{6}Z(-[0-9]{1,3})?\s?\Z'), ANYTHING))
def test_parse_snapshot_name_is_total(value):
    parsed = _retention.parse_snapshot_name(value)
    if parsed is not None:
        assert _retention.format_snapshot_name(*parsed) == value


UTC = datetime.timezone.utc
GAPS = st.lists(st.one_of(st.integers(0, 120), st.integers(60, 7200), st.integers(3600, 40 * 86400)),
                min_size=1, max_size=faults.scale(60, 200))
POLICIES = st.fixed_dictionaries({}, optional={k: st.integers(0, 5) for k in _retention.KEEP_KEYS}).filter(
    lambda p: not p or any(p.values()))     # all zero is refused


@settings(max_examples=faults.scale(200, 2000), deadline=None, database=None)
@given(GAPS, POLICIES)
def test_pruning_after_every_run_equals_one_pruning_of_the_history(gaps, policy):
    """A job prunes after each snapshot; what is left must be what one select() over every
    snapshot ever made would keep (so a snapshot pruned early never leaves a hole that a
    later rule would have kept, and the oldest kept for an unmet count is the first one
    ever made), and the newest always stays."""
    t = datetime.datetime(2026, 1, 1, tzinfo=UTC)
    everything, present = [], []
    for gap in gaps:
        t += datetime.timedelta(seconds=gap)
        name = _retention.next_snapshot_name(present, t)
        everything.append(name)
        present.append(name)
        present, _pruned = _retention.select(present, policy)
        assert name in present
    assert present == _retention.select(everything, policy)[0]
