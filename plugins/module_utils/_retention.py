# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshot names and retention (which snapshots to keep, which to prune).

Pure functions, standard library only, all times in UTC.  Nothing here touches
the filesystem: the module lists ``dest``, asks :func:`select` what to prune,
and deletes only what it is told to.  docs/retention.md states the semantics.

Two orders, on purpose (see docs/retention.md, "Clocks"):

- Names are the order in which snapshots were made: a new name is always
  after every existing one (:func:`next_snapshot_name`), so ``latest``,
  ``last: N``, "the newest is always kept" and the previous snapshot that a
  new one links against follow the order of the runs, whatever the clock did.
- Periods go by each snapshot's real creation time (its record's ``created``,
  else the time in its name: :func:`created_time`), so that after one run with
  the clock years ahead, the snapshots named after it still fall in their own
  days and the future-dated one takes one slot, as with restic and borg.

Retention: ``last: N`` keeps the N snapshots made last, and
``hourly/daily/weekly/monthly/yearly: N`` keep the newest snapshot of each of
the last N UTC periods *that have a snapshot* (a week without snapshots does
not use up a weekly slot, so a paused job never loses its history); a rule
with fewer such periods than N also keeps the oldest snapshot (restic >= 0.14,
borg >= 1.2: ``yearly: 10`` with two years of history keeps the very first).
A snapshot kept by any rule stays, and the snapshot made last always stays.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import difflib
import re
from typing import Dict, Iterable, List, Optional, Tuple

UTC = datetime.timezone.utc

# strftime-style description of the name; formatting and parsing are done by
# hand because %Y is not zero-padded for years < 1000 on every libc.
SNAPSHOT_NAME_FORMAT = '%Y-%m-%dT%H%M%SZ'

# Exact format only.  Seq 1 has no suffix; later snapshots of the same second
# get -2, -3, ... (no "-1", no leading zeros), so every (time, seq) has exactly
# one name.  \Z rather than $: "$" would also accept a trailing newline.
_NAME_RE = re.compile(r'([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z(?:-([2-9]|[1-9][0-9]+))?\Z')

KEEP_KEYS = ('last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly')
KEEP_MAX = 100000
# keep's free-space floor: "20%" of the filesystem or bytes ("10G", "500M",
# 1048576).  Not a count: select() ignores it; _snapshot prunes by it.
MIN_FREE = 'min_free'
_MIN_FREE_RE = re.compile(r'\A(?:([0-9]+(?:\.[0-9]+)?)\s*%|([0-9]+)\s*([KMGTP]?)(?:i?B)?)\Z', re.I)
_UNITS = {'': 0, 'K': 10, 'M': 20, 'G': 30, 'T': 40, 'P': 50}

# Calendar period of a UTC datetime, per rule.  ISO weeks start on Monday and
# belong to the ISO year (2026-12-31 and 2027-01-01 are both in 2026-W53).
_PERIOD = {
    'hourly': lambda dt: (dt.year, dt.month, dt.day, dt.hour),
    'daily': lambda dt: (dt.year, dt.month, dt.day),
    'weekly': lambda dt: tuple(dt.isocalendar())[:2],
    'monthly': lambda dt: (dt.year, dt.month),
    'yearly': lambda dt: (dt.year,),
}


def _to_utc(dt):
    """Aware datetimes are converted to UTC; naive ones are taken to be UTC."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def format_snapshot_name(dt: datetime.datetime, seq: int = 1) -> str:
    """Name of the snapshot taken at ``dt`` (to the second), e.g. ``2026-11-21T103000Z``.

    ``seq`` > 1 adds ``-SEQ`` for further snapshots within the same second.
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError('snapshot sequence number must be an integer >= 1, got %r' % (seq,))
    dt = _to_utc(dt)
    name = '%04d-%02d-%02dT%02d%02d%02dZ' % (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
    return name if seq == 1 else '%s-%d' % (name, seq)


def parse_snapshot_name(name: str) -> Optional[Tuple[datetime.datetime, int]]:
    """``(aware UTC datetime, seq)`` for a snapshot name, else None.

    None for anything that is not exactly a snapshot name: ``latest``,
    ``NAME.partial`` (an unfinished snapshot is never a snapshot), impossible
    dates such as ``2026-02-30T000000Z``, non-canonical ``...Z-1``.
    """
    if not isinstance(name, str):
        return None
    m = _NAME_RE.match(name)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        dt = datetime.datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    return dt, int(m.group(7) or 1)


def _parsed(names):
    """{name: (dt, seq)} for the names that are snapshots; others are dropped."""
    out = {}
    for name in names:
        key = parse_snapshot_name(name)
        if key is not None:
            out[name] = key
    return out


def sort_snapshot_names(names: Iterable[str]) -> List[str]:
    """Snapshot names oldest first; names that are not snapshots are dropped.

    Sorted by (time, seq), not as strings: as strings ``...Z-10`` < ``...Z-2``.
    """
    parsed = _parsed(names)
    return sorted(parsed, key=parsed.__getitem__)


def next_snapshot_name(existing_names: Iterable[str], now: datetime.datetime) -> str:
    """Name for a snapshot made at ``now``: unused, and after every existing snapshot.

    Normally the name of ``now`` (or ``now`` with the next seq if this second
    is taken).  If an existing snapshot's name is later than ``now`` (the
    clock went back, or that snapshot was made with the clock ahead), the
    name is that newest name's time with the next seq: names stay the order
    in which snapshots were made, so ``latest`` and "the snapshot made last is
    always kept" mean the snapshot just made.  Its real time is in its
    record (``created``), which retention judges periods by.  Non-snapshot
    names (``latest``, ``*.partial``) cannot collide with the result and are
    ignored.
    """
    now = _to_utc(now).replace(microsecond=0)
    parsed = _parsed(existing_names)
    candidate = (now, 1)
    if parsed:
        newest = max(parsed.values())
        if newest >= candidate:
            candidate = (newest[0], newest[1] + 1)
    return format_snapshot_name(*candidate)


# A record's `created`, as _snapshot writes it.
_CREATED_RE = re.compile(r'([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z\Z')


def created_time(name: str, record: Optional[dict] = None) -> datetime.datetime:
    """When snapshot NAME was made (aware UTC): its record's ``created``
    (ISO 8601 UTC, to the second), else the time in its name (a snapshot
    from before records had it, or whose record is missing or damaged).
    ``name`` must be a snapshot name."""
    created = record.get('created') if isinstance(record, dict) else None
    m = _CREATED_RE.match(created) if isinstance(created, str) else None
    if m is not None:
        try:
            return datetime.datetime(*(int(g) for g in m.groups()), tzinfo=UTC)
        except ValueError:
            pass
    parsed = parse_snapshot_name(name)
    if parsed is None:
        raise ValueError('not a snapshot name: %r' % (name,))
    return parsed[0]


# How far after "now" a snapshot's creation time must be to be reported as
# dated in the future: less is the ordinary stepping of a clock by NTP, more
# is a clock that was wrong (a bad RTC at boot, a wrong NTP answer).
FUTURE_SLACK = datetime.timedelta(minutes=15)


def is_future_dated(created: datetime.datetime, now: datetime.datetime) -> bool:
    """True if a snapshot created at ``created`` is dated in the future at ``now``."""
    return _to_utc(created) > _to_utc(now) + FUTURE_SLACK


def _keep_value(key, value):
    where = 'keep.%s' % key
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError('%s must be a whole number >= 0, got %r (%s)' % (where, value, type(value).__name__))
    if isinstance(value, str):
        # Ansible and templating may hand numbers over as strings ("3").
        text = value.strip()
        if not re.match(r'[+-]?[0-9]+\Z', text):
            raise ValueError('%s must be a whole number >= 0, got %r' % (where, value))
        value = int(text)
    if value < 0:
        raise ValueError('%s=%d is negative: counts must be 0 or more' % (where, value))
    if value > KEEP_MAX:
        raise ValueError('%s=%d is too large (at most %d)' % (where, value, KEEP_MAX))
    return value


def parse_min_free(value):
    """keep.min_free checked: a whole number of bytes, or a string: "20%"
    (of the filesystem's size, below 100) or bytes with an optional binary
    suffix ("10G" is 10 GiB).  Returned as given (stripped), for the record."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    found = _MIN_FREE_RE.match(value.strip()) if isinstance(value, str) else None
    if found is None or (found.group(1) is not None and float(found.group(1)) >= 100):
        raise ValueError('keep.min_free must be a percentage below 100 of the filesystem ("20%%") or bytes '
                         '("10G", "500M", 1048576), got %r' % (value,))
    return value.strip()


def min_free_bytes(value, total_bytes):
    """The floor in bytes of a parse_min_free value on a filesystem of total_bytes."""
    if isinstance(value, int):
        return value
    found = _MIN_FREE_RE.match(value)
    if found.group(1) is not None:
        return int(total_bytes * float(found.group(1)) / 100)
    return int(found.group(2)) << _UNITS[found.group(3).upper()]


def parse_keep(keep: Optional[dict]) -> Dict[str, int]:
    """Validated retention policy: ``{rule: count}`` in KEEP_KEYS order.

    Keys whose value is None are left out (Ansible fills unset suboptions with
    None).  An empty result means "keep everything": no pruning at all.
    A policy whose counts are all 0 is refused, as restic and borg refuse
    one: it would delete every snapshot but the newest, which is far more
    likely a templating slip than a wish.
    Raises ValueError with a message meant for the user.
    """
    if keep is None:
        return {}
    if not isinstance(keep, dict):
        raise ValueError('keep must be a dictionary of counts such as {last: 3, daily: 7}, got %s' % type(keep).__name__)
    for key in keep:
        if key not in KEEP_KEYS + (MIN_FREE,):
            close = difflib.get_close_matches(str(key), KEEP_KEYS + (MIN_FREE,), n=1)
            hint = " (did you mean '%s'?)" % close[0] if close else ''
            raise ValueError("unknown keep rule '%s'%s; valid rules are: %s"
                             % (key, hint, ', '.join(KEEP_KEYS + (MIN_FREE,))))
    policy = {key: _keep_value(key, keep[key]) for key in KEEP_KEYS if keep.get(key) is not None}
    if policy and not any(policy.values()):
        raise ValueError('keep: every count is 0 (%s), which would delete every snapshot but the newest; '
                         'give at least one count above 0 (such as {last: 1}), or no keep at all to keep '
                         'every snapshot' % ', '.join('%s: 0' % key for key in policy))
    if keep.get(MIN_FREE) is not None:
        policy[MIN_FREE] = parse_min_free(keep[MIN_FREE])
    return policy


def describe(keep: Optional[dict]) -> str:
    """One-line summary of a policy, e.g. ``last 3, daily 7``."""
    policy = parse_keep(keep)
    floor = policy.pop(MIN_FREE, None)
    if not policy:
        return 'keep everything' + (', min_free %s' % floor if floor is not None else '')
    parts = ['%s %d' % (key, count) for key, count in policy.items() if count]
    if floor is not None:
        parts.append('min_free %s' % floor)
    return ', '.join(parts)


def _select_period(by_time, period, count):
    """Newest snapshot of each of the ``count`` newest periods that have one,
    and the oldest snapshot when there are fewer than ``count`` such periods
    (the unmet count keeps the longest history: restic >= 0.14, borg >= 1.2).
    ``by_time``: (time, make order, name), oldest first."""
    kept = []
    seen = set()
    for when, _order, name in reversed(by_time):
        if len(seen) >= count:
            return kept
        key = period(when)
        if key not in seen:
            seen.add(key)
            kept.append(name)
    if by_time:
        kept.append(by_time[0][2])
    return kept


def select(snapshots: Iterable[str], keep: Optional[dict],
           times: Optional[Dict[str, datetime.datetime]] = None) -> Tuple[List[str], List[str]]:
    """Split snapshot names into ``(kept, pruned)``, both in name order (the
    order they were made).

    - ``times``: each snapshot's creation time (see :func:`created_time`);
      a name without one is taken at the time in its name.  Period rules
      judge by these times (ties: the one made later is newer); ``last`` and
      "the snapshot made last" go by name order.
    - Names that are not snapshots (``latest``, ``*.partial``, ...) are in
      neither list: they are never pruned here.
    - An empty or None policy keeps everything.
    - The snapshot made last is always kept.
    - A snapshot dated in the future is one snapshot in its own period, like
      any other: it takes at most one slot of each period rule.

    Every rule keeps the same snapshots when run again on its own result, so
    pruning twice with the same policy prunes nothing more.
    """
    policy = parse_keep(keep)
    policy.pop(MIN_FREE, None)      # space, not a count: pruned by _snapshot
    parsed = _parsed(snapshots)
    made = sorted(parsed, key=parsed.__getitem__)
    if not policy or not made:
        return made, []
    times = times or {}
    by_time = sorted((_to_utc(times[name]) if name in times else parsed[name][0], order, name)
                     for order, name in enumerate(made))

    kept = {made[-1]}
    for rule, count in policy.items():
        if rule == 'last':
            kept.update(made[max(0, len(made) - count):] if count else ())
        elif count:
            kept.update(_select_period(by_time, _PERIOD[rule], count))

    return ([name for name in made if name in kept],
            [name for name in made if name not in kept])
