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
# All-zero policies are refused (test_all_zero_policy_is_refused), so never generated here.
policies = st.fixed_dictionaries({}, optional={k: st.integers(0, 6) for k in R.KEEP_KEYS}).filter(
    lambda p: not p or any(p.values()))
nonempty_policies = policies.filter(bool)
nows = st.integers(-3600, 4 * 366 * 86400).map(lambda s: BASE + timedelta(seconds=s))
# Creation times from records, for some of the names: mostly near the name's time, sometimes
# years ahead (a clock that was wrong for one run) or before it (a clock that went back).
OFFSETS = st.one_of(st.integers(-7200, 7200), st.integers(-400 * 86400, 6 * 366 * 86400))


def with_times(names):
    return st.tuples(st.just(names), st.fixed_dictionaries({}, optional={
        n: OFFSETS.map(lambda off, n=n: key(n)[0] + timedelta(seconds=off)) for n in names}))


timed_lists = snapshot_lists.flatmap(with_times)
garbage = st.lists(st.sampled_from(['latest', 'x.partial', '2026-11-21T103000Z.partial', '2026-02-30T000000Z',
                                    '2026-11-21T103000Z-1', '2026-11-21T103000Z-02', '2026-11-21 103000Z', '']), max_size=4)


# --- an independent oracle ------------------------------------------------
# Per-snapshot formulation (select() walks the periods instead): a snapshot
# is kept by "RULE: N" iff it is the newest of its period (by creation time,
# then make order) and fewer than N periods newer than its own contain
# snapshots, or it is the oldest and fewer than N periods contain snapshots;
# "last: N" and the always-kept newest go by make order (names).

ORACLE_PERIODS = {
    'hourly': lambda dt: dt.strftime('%Y-%m-%d %H'),
    'daily': lambda dt: dt.date(),
    'weekly': lambda dt: dt.date() - timedelta(days=dt.weekday()),  # the Monday of its week
    'monthly': lambda dt: (dt.year, dt.month),
    'yearly': lambda dt: dt.year,
}


def oracle(names, policy, times=None):
    keys = {n: key(n) for n in names if key(n)}
    if not policy or not keys:
        return set(keys)
    times = times or {}
    when = {n: (times.get(n, keys[n][0]), keys[n]) for n in keys}     # creation time, then make order
    kept = {max(keys, key=keys.get)}
    oldest = min(keys, key=when.get)
    for n in keys:
        if len([o for o in keys if keys[o] > keys[n]]) < policy.get('last', 0):
            kept.add(n)
        newer = [o for o in keys if when[o] > when[n]]
        for rule, period in ORACLE_PERIODS.items():
            mine = period(when[n][0])
            newer_periods = {period(when[o][0]) for o in newer}
            if mine not in newer_periods and len(newer_periods) < policy.get(rule, 0):
                kept.add(n)
            if n == oldest and len({period(when[o][0]) for o in keys}) < policy.get(rule, 0):
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
    ({'last': 0}, 'keep: every count is 0 (last: 0), which would delete every snapshot but the newest; '
                  'give at least one count above 0 (such as {last: 1}), or no keep at all to keep every snapshot'),
    ({'daily': '0', 'yearly': 0, 'weekly': None}, 'keep: every count is 0 (daily: 0, yearly: 0), which would delete '
     'every snapshot but the newest; give at least one count above 0 (such as {last: 1}), or no keep at all to keep '
     'every snapshot'),
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
    with pytest.raises(ValueError):
        R.describe({'last': 0})


# --- select: properties ---------------------------------------------------

@FAST
@given(timed_lists, garbage, policies)
def test_partition_and_order(names_times, junk, policy):
    names, times = names_times
    kept, pruned = R.select(names + junk, policy, times)
    assert set(kept) | set(pruned) == set(names)
    assert not set(kept) & set(pruned)
    assert len(kept) + len(pruned) == len(names)
    assert kept == sorted(kept, key=key) and pruned == sorted(pruned, key=key)
    if names:
        assert max(names, key=key) in kept
    if not policy:
        assert pruned == []


@FAST
@given(timed_lists, garbage, policies)
def test_matches_oracle(names_times, junk, policy):
    names, times = names_times
    kept = R.select(iter(names + junk), policy, times)[0]
    assert set(kept) == oracle(names, policy, times)


@FAST
@given(snapshot_lists, st.integers(1, 50))
def test_last_n_alone(names, n):
    kept = R.select(names, {'last': n})[0]
    assert len(kept) == min(n, len(names))
    assert kept == R.sort_snapshot_names(names)[len(names) - len(kept):]


@FAST
@given(nonempty_snapshot_lists, st.integers(1, 50))
def test_daily_n_alone(names, n):
    kept = R.select(names, {'daily': n})[0]
    day = {s: key(s)[0].date() for s in names}
    days = len(set(day.values()))
    oldest = min(names, key=key)
    newest_of_day = [s for s in kept if key(s) == max(key(o) for o in names if day[o] == day[s])]
    if days >= n:
        assert kept == newest_of_day and len(kept) == n
        assert len({day[s] for s in kept}) == len(kept)
    else:           # an unmet count: every day's newest, and the oldest snapshot too
        assert set(kept) == set(newest_of_day) | {oldest}
        assert len({day[s] for s in kept}) == days


@FAST
@given(timed_lists.filter(lambda nt: nt[0]), nonempty_policies, policies)
def test_more_rules_never_prune_more(names_times, policy, extra):
    # Holds for non-empty policies only: the empty policy keeps everything,
    # so adding a first rule to it does prune.
    names, times = names_times
    bigger = dict(policy)
    for rule, count in extra.items():
        bigger[rule] = max(count, bigger.get(rule, 0))
    kept = R.select(names, policy, times)[0]
    kept_bigger = R.select(names, bigger, times)[0]
    assert set(kept) <= set(kept_bigger)


@FAST
@given(timed_lists, garbage, policies)
def test_pruning_twice_prunes_nothing_more(names_times, junk, policy):
    # Holds exactly: each rule picks its snapshots among the newest ones of the
    # newest periods; all of those survive the first prune and no period newer
    # than the N-th survives that was not there before, so on the kept list
    # every rule picks the very same snapshots (likewise the newest).  A rule
    # with fewer periods than its count keeps all of them and the oldest,
    # which stays the oldest; one with enough keeps N periods, still enough.
    names, times = names_times
    kept = R.select(names + junk, policy, times)[0]
    again, pruned_again = R.select(kept + junk, policy, times)
    assert again == kept
    assert pruned_again == []


# A job's runs: the gap since the previous run, and how wrong the clock is for this one
# (mostly right; sometimes days behind or years ahead).
RUNS = st.lists(st.tuples(st.one_of(st.integers(0, 120), st.integers(3600, 40 * 86400)),
                          st.one_of(st.just(0), st.just(0), st.just(0), st.integers(-5 * 86400, 5 * 366 * 86400))),
                min_size=1, max_size=40)


@FAST
@given(RUNS, policies)
def test_pruning_after_every_run_under_wrong_clocks(runs, policy):
    """Each run names its snapshot after the ones left, records the time its clock says, then
    prunes: the snapshot just made always stays and is the last name, and what is left equals
    one prune of every snapshot ever made (pruning early never loses what a rule keeps)."""
    real = BASE
    made, present, times = [], [], {}
    for gap, skew in runs:
        real += timedelta(seconds=gap)
        clock = real + timedelta(seconds=skew)
        new = R.next_snapshot_name(present, clock)
        assert new not in made
        times[new] = clock.replace(microsecond=0)
        made.append(new)
        present = R.select(present + [new], policy, times)[0]
        assert present[-1] == new
    assert present == R.select(made, policy, times)[0]


@FAST
@given(nonempty_snapshot_lists, st.sets(st.sampled_from(R.KEEP_KEYS), min_size=1))
def test_all_zero_policy_is_refused(names, rules):
    zeros = dict.fromkeys(rules, 0)
    with pytest.raises(ValueError, match='every count is 0'):
        R.select(names, zeros)
    # One count above zero is a policy again, and it prunes.
    assert R.select(names, dict(zeros, last=1)) == ([max(names, key=key)], sorted(set(names) - {max(names, key=key)}, key=key))


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
    thu, fri, week_before = name(2026, 12, 31, 12), name(2027, 1, 1, 12), name(2026, 12, 24)
    assert R.select([week_before, thu, fri], {'weekly': 2}) == ([week_before, fri], [thu])
    assert R.select([thu, fri], {'yearly': 2}) == ([thu, fri], [])
    assert R.select([thu, fri], {'monthly': 1}) == ([fri], [thu])


def test_rules_combine_as_union():
    names = [name(2025, m, 1) for m in range(1, 13)] + [name(2026, 1, d) for d in range(1, 15)]
    kept = R.select(names, {'last': 2, 'weekly': 2, 'monthly': 3, 'yearly': 5})[0]
    assert kept == [
        name(2025, 1, 1),  # yearly 5 with two years of history: the oldest too
        name(2025, 11, 1), name(2025, 12, 1),  # monthly (+ yearly 2025)
        name(2026, 1, 11),  # weekly: newest of 2026-W02 (Mon 5 to Sun 11 January)
        name(2026, 1, 13),  # last 2
        name(2026, 1, 14),  # newest: last, weekly (2026-W03), monthly, yearly
    ]


def test_newest_always_kept():
    names = [name(2026, 1, d) for d in range(1, 5)]
    assert R.select(names, {'last': 1, 'daily': 0}) == ([names[-1]], names[:-1])
    # The snapshot made last, even when its creation time is the oldest (the clock went back).
    times = {names[-1]: utc(2025, 6, 1)}
    assert R.select(names, {'daily': 1}, times) == ([names[-2], names[-1]], names[:-2])
    assert R.select(names, None) == (names, [])
    assert R.select(names, {}) == (names, [])
    assert R.select(names, {'daily': None}) == (names, [])


def test_non_snapshots_are_in_neither_list():
    names = [name(2026, 1, 1), name(2026, 1, 2)]
    junk = ['latest', name(2026, 1, 3) + '.partial', 'x.partial', 'lost+found']
    assert R.select(junk + names, {'last': 1}) == ([names[1]], [names[0]])
    assert R.select(junk, {'last': 1}) == ([], [])
    assert R.select([], {'last': 1}) == ([], [])


def test_names_after_a_future_dated_snapshot_keep_their_days():
    # Ten good days, one run with the clock at 2030, then 28 good days, one run a day: every
    # run after 2030 is named after it (T-2, T-3...), but its record has the real day.
    names, times = [], {}
    for day in range(38):
        real = utc(2026, 1, 1, 3) + timedelta(days=day)
        when = utc(2030, 5, 1, 3) if day == 10 else real
        n = R.next_snapshot_name(names, when)
        names.append(n)
        times[n] = when
    assert names[11] == '2030-05-01T030000Z-2' and names[-1] == '2030-05-01T030000Z-28'
    kept, _pruned = R.select(names, {'daily': 7}, times)
    # The future-dated one takes one slot; the six newest real days take the others.
    assert kept == [names[10]] + names[-6:]
    # Without the records, the 28 later runs all read as 2030-05-01: one day, one snapshot.
    assert R.select(names, {'daily': 7})[0] == names[4:10] + [names[-1]]
    # last: N is the N made last, whatever their times.
    assert R.select(names, {'last': 3}, times)[0] == names[-3:]


def test_yearly_keeps_the_very_first_when_history_is_short():
    # Two years of daily snapshots; yearly: 10 cannot be met, so the oldest stays too.
    names = [R.format_snapshot_name(utc(2024, 3, 1, 12) + timedelta(days=d)) for d in range(730)]
    kept = R.select(names, {'yearly': 10})[0]
    assert kept == [names[0], name(2024, 12, 31, 12), name(2025, 12, 31, 12), names[-1]]
    # Enough years for the count: the oldest goes.
    assert R.select(names, {'yearly': 2})[0] == [name(2025, 12, 31, 12), names[-1]]
    # last: N with fewer snapshots keeps them all (no "oldest" needed).
    assert R.select(names[:3], {'last': 5}) == (names[:3], [])


def test_created_time():
    n = '2030-05-01T030000Z-7'
    assert R.created_time(n, {'created': '2026-01-11T03:00:00Z'}) == utc(2026, 1, 11, 3)
    # Without a record, or with one that does not say: the time in the name.
    for record in (None, {}, {'created': None}, {'created': 1767582000}, {'created': '2026-01-11 03:00:00'},
                   {'created': '2026-02-30T03:00:00Z'}, {'created': '2026-01-11T03:00:00Z\n'}, 'junk'):
        assert R.created_time(n, record) == utc(2030, 5, 1, 3), record
    with pytest.raises(ValueError):
        R.created_time('latest')


def test_is_future_dated():
    now = utc(2026, 12, 1, 12)
    assert R.is_future_dated(utc(2030, 1, 1), now)
    assert R.is_future_dated(now + R.FUTURE_SLACK + timedelta(seconds=1), now)
    assert not R.is_future_dated(now + R.FUTURE_SLACK, now)     # NTP stepping the clock back a little
    assert not R.is_future_dated(utc(2020, 1, 1), now)
    assert R.is_future_dated(utc(2026, 12, 1, 13), datetime(2026, 12, 1, 12))      # naive is UTC


# --- published cases of restic and borg -----------------------------------
# Where their semantics and ours coincide (UTC periods, rules OR-ed, the oldest kept to fill an
# unmet count, no tags or "within"), their expectations must be ours.

def _restic_times():
    """The snapshot times of restic's TestApplyPolicy (internal/data/snapshot_policy_test.go,
    restic 0.14+), written compactly: two years of one pattern, then January 2016.  The
    10:20:30.1 entries are a tenth of a second after 10:20:30; 2015-10-22 10:20:30 is there
    five times (restic tells them apart by tags and paths)."""
    aug_nov = (8, 10, 12, 13, 13.1, 15, 18, 20, 21, 22)
    sep_oct = (1, 2, 5, 6, 8, 9, 10, 11, 20, 22)
    out = []
    for year in (2014, 2015):
        for month, days in ((9, sep_oct), (8, aug_nov), (10, sep_oct), (11, aug_nov)):
            for day in days:
                out.append(datetime(year, month, int(day), 10, 20, 30, 100000 if day % 1 else 0, tzinfo=UTC))
    out += [utc(2015, 10, 22, 10, 20, 30)] * 4
    jan = ['01 01:02:03', '01 01:03:03', '01 07:08:03', '03 07:02:03', '04 10:23:03', '04 11:23:03',
           '04 12:23:03', '04 12:24:03', '04 12:28:03', '04 12:30:03', '04 16:23:03', '05 09:02:03',
           '06 08:02:03', '07 10:02:03', '08 20:02:03', '09 21:02:03', '12 21:02:03', '12 21:08:03', '18 12:02:03']
    out += [datetime.strptime('2016-01-' + t, '%Y-%m-%d %H:%M:%S').replace(tzinfo=UTC) for t in jan]
    return sorted(out)


def _times(*texts):
    return [datetime.strptime(t, '%Y-%m-%d %H:%M:%S.%f' if '.' in t else '%Y-%m-%d %H:%M:%S').replace(tzinfo=UTC)
            for t in texts]


# (policy, restic's golden file internal/data/testdata/policy_keep_snapshots_N, kept times)
RESTIC_CASES = [
    ({'last': 10}, 1, _times('2016-01-18 12:02:03', '2016-01-12 21:08:03', '2016-01-12 21:02:03', '2016-01-09 21:02:03',
                             '2016-01-08 20:02:03', '2016-01-07 10:02:03', '2016-01-06 08:02:03', '2016-01-05 09:02:03',
                             '2016-01-04 16:23:03', '2016-01-04 12:30:03')),
    ({'hourly': 20}, 5, _times('2016-01-18 12:02:03', '2016-01-12 21:08:03', '2016-01-09 21:02:03', '2016-01-08 20:02:03',
                               '2016-01-07 10:02:03', '2016-01-06 08:02:03', '2016-01-05 09:02:03', '2016-01-04 16:23:03',
                               '2016-01-04 12:30:03', '2016-01-04 11:23:03', '2016-01-04 10:23:03', '2016-01-03 07:02:03',
                               '2016-01-01 07:08:03', '2016-01-01 01:03:03', '2015-11-22 10:20:30', '2015-11-21 10:20:30',
                               '2015-11-20 10:20:30', '2015-11-18 10:20:30', '2015-11-15 10:20:30',
                               '2015-11-13 10:20:30.1')),
    ({'daily': 10}, 7, _times('2016-01-18 12:02:03', '2016-01-12 21:08:03', '2016-01-09 21:02:03', '2016-01-08 20:02:03',
                              '2016-01-07 10:02:03', '2016-01-06 08:02:03', '2016-01-05 09:02:03', '2016-01-04 16:23:03',
                              '2016-01-03 07:02:03', '2016-01-01 07:08:03')),
    ({'monthly': 6}, 14, _times('2016-01-18 12:02:03', '2015-11-22 10:20:30', '2015-10-22 10:20:30', '2015-09-22 10:20:30',
                                '2015-08-22 10:20:30', '2014-11-22 10:20:30')),
    ({'daily': 2, 'weekly': 2, 'monthly': 6}, 15, _times(
        '2016-01-18 12:02:03', '2016-01-12 21:08:03', '2015-11-22 10:20:30', '2015-10-22 10:20:30',
        '2015-09-22 10:20:30', '2015-08-22 10:20:30', '2014-11-22 10:20:30')),
    # Three years for a count of ten: the oldest snapshot is kept too ("oldest yearly snapshot").
    ({'yearly': 10}, 16, _times('2016-01-18 12:02:03', '2015-11-22 10:20:30', '2014-11-22 10:20:30', '2014-08-08 10:20:30')),
]


@pytest.mark.parametrize('policy, golden, expected', RESTIC_CASES, ids=['restic-%d' % c[1] for c in RESTIC_CASES])
def test_restic_apply_policy_cases(policy, golden, expected):
    times_in_order = _restic_times()
    assert len(times_in_order) == 103
    names, times = [], {}
    for when in times_in_order:          # made in time order; equal seconds get -2, -3...
        n = R.next_snapshot_name(names, when)
        names.append(n)
        times[n] = when
    kept = R.select(names, policy, times)[0]
    assert sorted(times[n] for n in kept) == sorted(expected)


def _borg(*stamps):
    return [utc(*stamp) for stamp in stamps]


# borg's test_prune_split (src/borg/testsuite/archiver/prune_cmd_test.py, borg 1.2+): one rule at
# a time, where borg's rules (each skipping what an earlier rule kept) and ours (OR-ed) agree.
BORG_ARCHIVES = _borg((2015, 1, 1, 10), (2016, 1, 1, 10), (2017, 1, 1, 10), (2017, 2, 1, 10), (2017, 3, 1, 10),
                      (2017, 3, 2, 10), (2017, 3, 3, 10), (2017, 3, 4, 10), (2017, 10, 1, 9, 45), (2017, 10, 1, 9, 55),
                      (2017, 10, 1, 10, 0, 1), (2017, 10, 1, 10, 0, 3), (2017, 10, 1, 10, 0, 5))   # ids 1..13


@pytest.mark.parametrize('policy, ids', [
    ({'yearly': 3}, {13, 2, 1}), ({'monthly': 3}, {13, 8, 4}), ({'weekly': 2}, {13, 8}),
    ({'daily': 3}, {13, 8, 7}), ({'hourly': 3}, {13, 10, 8}), ({'last': 4}, {13, 12, 11, 10}),   # borg: secondly 4
])
def test_borg_prune_split_cases(policy, ids):
    names = [R.format_snapshot_name(t) for t in BORG_ARCHIVES]
    assert set(R.select(names, policy)[0]) == {names[i - 1] for i in ids}


def test_borg_prune_split_keep_oldest():
    # borg's test_prune_split_keep_oldest: the oldest is not the last of its year.
    stamps = _borg((2018, 1, 1, 10), (2018, 12, 30, 10), (2018, 12, 31, 10), (2019, 12, 31, 10))
    names = [R.format_snapshot_name(t) for t in stamps]
    assert R.select(names, {'yearly': 3})[0] == [names[0], names[2], names[3]]
    assert R.select(names, {'yearly': 2})[0] == [names[2], names[3]]


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
