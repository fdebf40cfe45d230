# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshot names and retention: properties (hypothesis) and worked examples.

The module is loaded from its file so that these tests need neither Ansible
nor the collection to be on sys.path.
"""

import ast
import importlib.util
import pathlib
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

MODULE_PATH = pathlib.Path(__file__).resolve().parents[2] / 'plugins' / 'module_utils' / '_retention.py'
_spec = importlib.util.spec_from_file_location('fslinks_snapshots_retention_under_test', str(MODULE_PATH))
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)

UTC = timezone.utc
BASE = datetime(2024, 1, 1, tzinfo=UTC)
FAST = settings(max_examples=200, deadline=None)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def name(*args, seq=1):
    return R.format_snapshot_name(utc(*args), seq)


def key(n):
    return R.parse_snapshot_name(n)


# --- strategies -----------------------------------------------------------

# Span chosen per list so that some lists crowd into a few hours (many
# snapshots share a period) and others spread over years.
SPANS = [3 * 3600, 3 * 86400, 60 * 86400, 4 * 366 * 86400]
SEQS = st.sampled_from([1, 1, 1, 1, 1, 2, 3, 10])


def _snapshot_names(span):
    one = st.builds(lambda off, seq: R.format_snapshot_name(BASE + timedelta(seconds=off), seq), st.integers(0, span), SEQS)
    return st.lists(one, max_size=40, unique=True)


snapshot_lists = st.sampled_from(SPANS).flatmap(_snapshot_names)
nonempty_snapshot_lists = snapshot_lists.filter(bool)
policies = st.fixed_dictionaries({}, optional={k: st.integers(0, 6) for k in R.KEEP_KEYS})
nonempty_policies = policies.filter(bool)
nows = st.one_of(st.none(), st.integers(-3600, 4 * 366 * 86400).map(lambda s: BASE + timedelta(seconds=s)))
garbage = st.lists(st.sampled_from(['latest', 'x.partial', '2026-11-21T103000Z.partial', '2026-02-30T000000Z',
                                    '2026-11-21T103000Z-1', '2026-11-21T103000Z-02', '2026-11-21 103000Z', '']), max_size=4)


# --- an independent oracle ------------------------------------------------
# Per-snapshot formulation (select() walks the periods instead): a snapshot
# is kept by "RULE: N" iff it is the newest of its period and fewer than N
# periods newer than its own contain snapshots.

ORACLE_PERIODS = {
    'hourly': lambda dt: dt.strftime('%Y-%m-%d %H'),
    'daily': lambda dt: dt.date(),
    'weekly': lambda dt: dt.date() - timedelta(days=dt.weekday()),  # the Monday of its week
    'monthly': lambda dt: (dt.year, dt.month),
    'yearly': lambda dt: dt.year,
}


def oracle(names, policy, now=None):
    keys = {n: key(n) for n in names if key(n)}
    if not policy or not keys:
        return set(keys)
    kept = {max(keys, key=keys.get)}
    future = {n for n in keys if now is not None and keys[n][0] > now}
    kept |= future
    candidates = [n for n in keys if n not in future]
    for n in candidates:
        newer = [o for o in candidates if keys[o] > keys[n]]
        if len(newer) < policy.get('last', 0):
            kept.add(n)
        for rule, period in ORACLE_PERIODS.items():
            mine = period(keys[n][0])
            newer_periods = {period(keys[o][0]) for o in newer}
            if mine not in newer_periods and len(newer_periods) < policy.get(rule, 0):
                kept.add(n)
    return kept


# --- names ----------------------------------------------------------------

@FAST
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)), st.integers(1, 10 ** 6))
def test_name_roundtrip(dt, seq):
    n = R.format_snapshot_name(dt, seq)
    assert key(n) == (dt.replace(microsecond=0, tzinfo=UTC), seq)
    assert R.format_snapshot_name(*key(n)) == n
    for bad in (n + '.partial', n + '\n', ' ' + n, n.lower(), n + '-1', n.replace('Z', '')):
        assert key(bad) is None


@FAST
@given(st.lists(st.datetimes(min_value=datetime(1000, 1, 1)), max_size=20))
def test_plain_names_sort_as_strings(dts):
    # Without seq suffixes, string order is time order (the names are "sortable").
    names = {R.format_snapshot_name(dt) for dt in dts}
    assert R.sort_snapshot_names(names) == sorted(names)


def test_format_examples():
    assert R.SNAPSHOT_NAME_FORMAT == '%Y-%m-%dT%H%M%SZ'
    assert name(2026, 11, 21, 10, 30, 0) == '2026-11-21T103000Z'
    assert name(2026, 11, 21, 10, 30, 0, seq=2) == '2026-11-21T103000Z-2'
    assert R.format_snapshot_name(datetime(2026, 11, 21, 10, 30, 0, 999999)) == '2026-11-21T103000Z'  # naive = UTC
    plus2 = timezone(timedelta(hours=2))
    assert R.format_snapshot_name(datetime(2026, 11, 21, 12, 30, tzinfo=plus2)) == '2026-11-21T103000Z'
    assert R.format_snapshot_name(datetime(5, 1, 2)) == '0005-01-02T000000Z'
    for seq in (0, -1, True, 1.0):
        with pytest.raises(ValueError):
            R.format_snapshot_name(utc(2026, 1, 1), seq)


@pytest.mark.parametrize('text', [
    'latest', 'x.partial', '2026-11-21T103000Z.partial', '2026-11-21T103000Z-2.partial', '', 'garbage',
    '2026-02-30T000000Z', '2026-13-01T000000Z', '2026-11-21T246000Z', '0000-01-01T000000Z',
    '2026-11-21T103000Z-1', '2026-11-21T103000Z-0', '2026-11-21T103000Z-02', '2026-11-21T103000Z-',
    '2026-11-21T10:30:00Z', '2026-11-21T103000', '2026-11-21t103000z', '2026-11-21T103000Z\n',
    '\uff12026-11-21T103000Z', '2026-11-21T1030000Z', None, 20261121,
])
def test_parse_rejects(text):
    assert R.parse_snapshot_name(text) is None


def test_parse_examples():
    assert key('2026-11-21T103000Z') == (utc(2026, 11, 21, 10, 30), 1)
    assert key('2026-11-21T103000Z-2') == (utc(2026, 11, 21, 10, 30), 2)
    assert key('2028-02-29T235959Z-17') == (utc(2028, 2, 29, 23, 59, 59), 17)
    assert key('2026-11-21T103000Z')[0].tzinfo is not None


def test_seq_sorts_numerically_not_as_string():
    names = ['2026-11-21T103000Z-%d' % i for i in range(2, 12)] + ['2026-11-21T103000Z', '2026-11-21T102959Z']
    ordered = R.sort_snapshot_names(names + ['latest'])
    assert ordered[:3] == ['2026-11-21T102959Z', '2026-11-21T103000Z', '2026-11-21T103000Z-2']
    assert ordered[-2:] == ['2026-11-21T103000Z-10', '2026-11-21T103000Z-11']
    assert R.select(names, {'last': 1}) == (['2026-11-21T103000Z-11'], sorted(set(names) - {'2026-11-21T103000Z-11'}, key=key))


# --- next_snapshot_name ---------------------------------------------------

@FAST
@given(st.lists(snapshot_lists, max_size=1).map(lambda x: x[0] if x else []), garbage, nows.filter(bool))
def test_next_name_is_unique_and_newest(existing, junk, now):
    new = R.next_snapshot_name(existing + junk, now)
    assert new not in existing
    assert key(new) is not None
    assert all(key(new) > key(n) for n in existing)
    if all(key(n)[0] < now.replace(microsecond=0) for n in existing):
        assert new == R.format_snapshot_name(now)
    # Made repeatedly within one second, names keep counting up.
    assert key(R.next_snapshot_name(existing + [new], now)) == (key(new)[0], key(new)[1] + 1)


def test_next_name_examples():
    now = utc(2026, 11, 21, 10, 30, 0, 500)
    assert R.next_snapshot_name([], now) == '2026-11-21T103000Z'
    assert R.next_snapshot_name(['latest', '2026-11-21T103000Z.partial'], now) == '2026-11-21T103000Z'
    assert R.next_snapshot_name(['2026-11-21T103000Z'], now) == '2026-11-21T103000Z-2'
    assert R.next_snapshot_name(['2026-11-21T103000Z', '2026-11-21T103000Z-9'], now) == '2026-11-21T103000Z-10'
    # Clock went backwards: the newest existing time, next seq.
    assert R.next_snapshot_name(['2026-11-22T000000Z-3', '2026-11-20T000000Z'], now) == '2026-11-22T000000Z-4'
    assert R.next_snapshot_name([], datetime(2026, 11, 21, 10, 30)) == '2026-11-21T103000Z'
    assert R.next_snapshot_name([], datetime(2026, 11, 21, 11, 30, tzinfo=timezone(timedelta(hours=1)))) == '2026-11-21T103000Z'


# --- parse_keep / describe ------------------------------------------------

def test_parse_keep_accepts():
    assert R.parse_keep(None) == {}
    assert R.parse_keep({}) == {}
    assert R.parse_keep({'daily': None, 'last': None}) == {}  # Ansible's unset suboptions
    got = R.parse_keep({'yearly': '2', 'last': 3, 'daily': ' 7 ', 'hourly': 0, 'weekly': None, 'monthly': 100000})
    assert got == {'last': 3, 'hourly': 0, 'daily': 7, 'monthly': 100000, 'yearly': 2}
    assert list(got) == ['last', 'hourly', 'daily', 'monthly', 'yearly']  # KEEP_KEYS order
    assert R.KEEP_KEYS == ('last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly')


@pytest.mark.parametrize('keep, message', [
    ({'dayly': 3}, "unknown keep rule 'dayly' (did you mean 'daily'?); valid rules are: last, hourly, daily, weekly, monthly, yearly, min_free"),
    ({'quarterly': 3}, "unknown keep rule 'quarterly'; valid rules are: last, hourly, daily, weekly, monthly, yearly, min_free"),
    ({'daily': -1}, 'keep.daily=-1 is negative: counts must be 0 or more'),
    ({'daily': '-1'}, 'keep.daily=-1 is negative: counts must be 0 or more'),
    ({'daily': 100001}, 'keep.daily=100001 is too large (at most 100000)'),
    ({'weekly': '999999999999'}, 'keep.weekly=999999999999 is too large (at most 100000)'),
    ({'last': True}, 'keep.last must be a whole number >= 0, got True (bool)'),
    ({'last': 2.5}, 'keep.last must be a whole number >= 0, got 2.5 (float)'),
    ({'last': [3]}, 'keep.last must be a whole number >= 0, got [3] (list)'),
    ({'last': 'three'}, "keep.last must be a whole number >= 0, got 'three'"),
    ({'last': '3.0'}, "keep.last must be a whole number >= 0, got '3.0'"),
    ({'last': ''}, "keep.last must be a whole number >= 0, got ''"),
    ({'last': '1_000'}, "keep.last must be a whole number >= 0, got '1_000'"),
    ([('last', 3)], 'keep must be a dictionary of counts such as {last: 3, daily: 7}, got list'),
    ('last=3', 'keep must be a dictionary of counts such as {last: 3, daily: 7}, got str'),
])
def test_parse_keep_rejects(keep, message):
    with pytest.raises(ValueError) as err:
        R.parse_keep(keep)
    assert str(err.value) == message
    with pytest.raises(ValueError):
        R.select(['2026-11-21T103000Z'], keep)


def test_describe():
    assert R.describe(None) == 'keep everything'
    assert R.describe({'daily': '7', 'last': 3}) == 'last 3, daily 7'
    assert R.describe({'last': 0, 'weekly': 4}) == 'weekly 4'
    assert R.describe({'last': 0}) == 'newest only'


# --- select: properties ---------------------------------------------------

@FAST
@given(snapshot_lists, garbage, policies, nows)
def test_partition_and_order(names, junk, policy, now):
    kept, pruned = R.select(names + junk, policy, now)
    assert set(kept) | set(pruned) == set(names)
    assert not set(kept) & set(pruned)
    assert len(kept) + len(pruned) == len(names)
    assert kept == sorted(kept, key=key) and pruned == sorted(pruned, key=key)
    if names:
        assert max(names, key=key) in kept
    if not policy:
        assert pruned == []


@FAST
@given(snapshot_lists, garbage, policies, nows)
def test_matches_oracle(names, junk, policy, now):
    kept = R.select(iter(names + junk), policy, now)[0]
    assert set(kept) == oracle(names, policy, now)


@FAST
@given(snapshot_lists, st.integers(0, 50))
def test_last_n_alone(names, n):
    kept = R.select(names, {'last': n})[0]
    assert len(kept) == (max(1, min(n, len(names))) if names else 0)
    assert kept == R.sort_snapshot_names(names)[len(names) - len(kept):]


@FAST
@given(nonempty_snapshot_lists, st.integers(0, 50))
def test_daily_n_alone(names, n):
    kept = R.select(names, {'daily': n})[0]
    day = {s: key(s)[0].date() for s in names}
    for s in kept:
        assert key(s) == max(key(o) for o in names if day[o] == day[s])
    assert len(kept) == max(1, min(n, len(set(day.values()))))
    assert len({day[s] for s in kept}) == len(kept)


@FAST
@given(nonempty_snapshot_lists, nonempty_policies, policies, nows)
def test_more_rules_never_prune_more(names, policy, extra, now):
    # Holds for non-empty policies only: the empty policy keeps everything,
    # so adding a first rule to it does prune.
    bigger = dict(policy)
    for rule, count in extra.items():
        bigger[rule] = max(count, bigger.get(rule, 0))
    kept = R.select(names, policy, now)[0]
    kept_bigger = R.select(names, bigger, now)[0]
    assert set(kept) <= set(kept_bigger)


@FAST
@given(snapshot_lists, garbage, policies, nows)
def test_pruning_twice_prunes_nothing_more(names, junk, policy, now):
    # Holds exactly: each rule picks its snapshots among the newest ones of the
    # newest periods; all of those survive the first prune and no period newer
    # than the N-th survives that was not there before, so on the kept list
    # every rule picks the very same snapshots (likewise the newest, and the
    # future ones for the same `now`).
    kept = R.select(names + junk, policy, now)[0]
    again, pruned_again = R.select(kept + junk, policy, now)
    assert again == kept
    assert pruned_again == []


@FAST
@given(nonempty_snapshot_lists, policies)
def test_all_zero_policy_keeps_newest_only(names, policy):
    zeros = dict.fromkeys(policy, 0) or {'last': 0}
    kept, pruned = R.select(names, zeros)
    assert kept == [max(names, key=key)]
    assert len(pruned) == len(names) - 1


# --- select: examples -----------------------------------------------------

def test_hourly_snapshots_last_3_daily_7():
    names = [name(2026, 11, d, h) for d in range(1, 11) for h in range(24)]
    kept, pruned = R.select(names, {'last': 3, 'daily': 7})
    assert kept == [name(2026, 11, d, 23) for d in range(4, 10)] + [name(2026, 11, 10, h) for h in (21, 22, 23)]
    assert len(pruned) == 240 - 9


def test_periods_without_snapshots_do_not_count():
    names = [name(2026, 1, 1), name(2026, 3, 5, 12), name(2026, 6, 20, 1), name(2026, 6, 20, 2)]
    kept, pruned = R.select(names, {'daily': 3})
    assert kept == [name(2026, 1, 1), name(2026, 3, 5, 12), name(2026, 6, 20, 2)]
    assert pruned == [name(2026, 6, 20, 1)]


def test_iso_weeks_start_monday_and_span_new_year():
    sun, mon = name(2026, 11, 22, 23, 59, 59), name(2026, 11, 23)
    assert R.select([sun, mon], {'weekly': 1}) == ([mon], [sun])
    assert R.select([sun, mon], {'weekly': 2}) == ([sun, mon], [])
    # Thursday 2026-12-31 and Friday 2027-01-01 are both in ISO week 2026-W53.
    thu, fri = name(2026, 12, 31, 12), name(2027, 1, 1, 12)
    assert R.select([thu, fri], {'weekly': 2}) == ([fri], [thu])
    assert R.select([thu, fri], {'yearly': 2}) == ([thu, fri], [])
    assert R.select([thu, fri], {'monthly': 1}) == ([fri], [thu])


def test_rules_combine_as_union():
    names = [name(2025, m, 1) for m in range(1, 13)] + [name(2026, 1, d) for d in range(1, 15)]
    kept = R.select(names, {'last': 2, 'weekly': 2, 'monthly': 3, 'yearly': 5})[0]
    assert kept == [
        name(2025, 11, 1), name(2025, 12, 1),  # monthly (+ yearly 2025)
        name(2026, 1, 11),  # weekly: newest of 2026-W02 (Mon 5 to Sun 11 January)
        name(2026, 1, 13),  # last 2
        name(2026, 1, 14),  # newest: last, weekly (2026-W03), monthly, yearly
    ]


def test_newest_always_kept():
    names = [name(2026, 1, d) for d in range(1, 5)]
    assert R.select(names, {'last': 0}) == ([names[-1]], names[:-1])
    assert R.select(names, dict.fromkeys(R.KEEP_KEYS, 0)) == ([names[-1]], names[:-1])
    assert R.select(names, None) == (names, [])
    assert R.select(names, {}) == (names, [])
    assert R.select(names, {'daily': None}) == (names, [])


def test_non_snapshots_are_in_neither_list():
    names = [name(2026, 1, 1), name(2026, 1, 2)]
    junk = ['latest', name(2026, 1, 3) + '.partial', 'x.partial', 'lost+found']
    assert R.select(junk + names, {'last': 1}) == ([names[1]], [names[0]])
    assert R.select(junk, {'last': 1}) == ([], [])
    assert R.select([], {'last': 1}) == ([], [])


def test_future_snapshots_are_kept_and_use_no_slot():
    now = utc(2026, 1, 10, 12)
    past = [name(2026, 1, d) for d in range(1, 10)]
    future = [name(2026, 1, 10, 13), name(2026, 2, 1)]
    kept, pruned = R.select(past + future, {'last': 2}, now)
    assert kept == past[-2:] + future
    assert pruned == past[:-2]
    # All in the future: nothing is pruned.
    assert R.select(future, {'last': 0}, now) == (future, [])
    # The same instant is not the future.
    assert R.select([name(2026, 1, 10, 12), name(2026, 1, 10, 11)], {'last': 0}, now)[0] == [name(2026, 1, 10, 12)]
    # Naive `now` is taken as UTC.
    assert R.select(past + future, {'last': 2}, datetime(2026, 1, 10, 12)) == (kept, pruned)


def test_duplicates_are_counted_once():
    n = name(2026, 1, 1)
    assert R.select([n, n, name(2025, 1, 1)], {'last': 1}) == ([n], [name(2025, 1, 1)])


def test_module_is_standard_library_only():
    tree = ast.parse(MODULE_PATH.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, 'no relative imports: the file must load on its own'
            imported.add(node.module.split('.')[0])
    assert imported <= {'__future__', 'datetime', 'difflib', 're', 'typing'}
    compile(MODULE_PATH.read_text(), str(MODULE_PATH), 'exec', flags=0, dont_inherit=True)
    ast.parse(MODULE_PATH.read_text(), feature_version=(3, 8))


@pytest.mark.parametrize('value, size, floor', [
    ('20%', 1000, 200), ('12.5%', 1 << 30, 1 << 27), ('0%', 1000, 0), ('10G', 1, 10 << 30), ('500M', 1, 500 << 20),
    ('500 MiB', 1, 500 << 20), ('64k', 1, 64 << 10), ('1048576', 1, 1 << 20), (4096, 1, 4096), (' 2T ', 1, 2 << 40),
])
def test_min_free(value, size, floor):
    policy = R.parse_keep({'last': 2, 'min_free': value})
    assert policy == {'last': 2, 'min_free': value.strip() if isinstance(value, str) else value}
    assert R.min_free_bytes(policy['min_free'], size) == floor
    # A floor is no count: retention by count keeps what it kept without it.
    names = ['2026-11-2%dT000000Z' % d for d in range(1, 6)]
    assert R.select(names, policy) == R.select(names, {'last': 2})
    assert R.select(names, {'min_free': value}) == (names, [])


@pytest.mark.parametrize('value', ['100%', '150%', '-5%', '-1', -1, '10X', '1.5G', '', 'G', True, 1.5, [1], {}])
def test_min_free_rejects(value):
    with pytest.raises(ValueError, match=r'keep.min_free must be a percentage below 100'):
        R.parse_keep({'min_free': value})
