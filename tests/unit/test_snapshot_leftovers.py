# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_snapshot.leftovers(dest_fd): the names a killed run leaves in a snapshot root, which the next
run removes.  Taking too much deletes a user's file or a snapshot; too little leaves litter
forever.  It only lists a directory, so a temporary directory of generated names on any
filesystem will do: no root, no loop filesystem."""

from __future__ import annotations

import datetime
import os
import re
import tempfile

from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.fslinks.snapshots.plugins.module_utils import _snapshot

STAMP = re.compile(r'\A([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z(-[2-9]|-[1-9][0-9]+)?\Z')


def is_snapshot_name(name):
    """YYYY-MM-DDTHHMMSSZ of a real UTC time, optionally -N with N >= 2 and no leading zero."""
    m = STAMP.match(name)
    if not m:
        return False
    try:
        datetime.datetime(*(int(g) for g in m.groups()[:6]))
    except ValueError:
        return False
    return True


def model(names):
    out = []
    for n in names:
        if re.match(r'\A\.latest\.fslinks-[0-9]+\.tmp\Z', n) or re.match(r'\A\..*\.json\.tmp\Z', n):
            out.append(n)      # a latest symlink or a record being replaced
            continue
        for suffix in ('.partial', '.deleting', '.links'):
            if n.endswith(suffix) and is_snapshot_name(n[:-len(suffix)]):
                out.append(n)  # a snapshot being built, deleted, or its hard-link claims
        if n.endswith('.json') and is_snapshot_name(n[:-5]) and n[:-5] not in names:
            out.append(n)      # the record of a snapshot that is gone
    return sorted(out)


valid_stamps = st.builds(
    lambda dt, seq: dt.strftime('%Y-%m-%dT%H%M%SZ') + ('' if seq is None else '-%d' % seq),
    st.datetimes(min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(2200, 12, 31)),
    st.one_of(st.none(), st.integers(2, 120)))
# Near misses: impossible dates, '-1', '-0', leading zeros, wrong separators, a missing Z.
bad_stamps = st.sampled_from(['2026-02-30T000000Z', '2026-13-01T000000Z', '2026-01-01T240000Z',
                              '2026-01-01T000000Z-1', '2026-01-01T000000Z-0', '2026-01-01T000000Z-02',
                              '2026-01-01T00:00:00Z', '2026-01-01T000000', '2026-1-01T000000Z', 'latest'])
stems = st.one_of(valid_stamps, bad_stamps)
suffixes = st.sampled_from(['', '.partial', '.deleting', '.links', '.json', '.json.tmp', '.tmp', '.partial.x',
                            '.PARTIAL', '.old'])
others = st.one_of(
    st.builds(lambda n: '.latest.fslinks-%d.tmp' % n, st.integers(0, 99999)),
    st.sampled_from(['.latest.fslinks-.tmp', '.latest.fslinks-12.tmpx', 'latest', '.fslinks-snapshot.lock',
                     '.x.json.tmp', '.json.tmp', 'x.json.tmp', 'notes.txt', '.partial', '.json']),
    st.builds(lambda stem: '.' + stem + '.json.tmp', stems),
    st.text(alphabet='abc.-_T0Z', min_size=1, max_size=12).filter(lambda n: n not in ('.', '..')))
names = st.sets(st.one_of(st.builds(lambda s, x: s + x, stems, suffixes), others), max_size=12)


@given(names)
def test_leftovers_are_exactly_the_documented_names(generated):
    with tempfile.TemporaryDirectory(prefix='fslinks-unit-') as tmp:
        for n in generated:
            os.close(os.open(os.path.join(tmp, n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            got = _snapshot.leftovers(fd)
        finally:
            os.close(fd)
    assert got == model(generated)
    # Never a complete snapshot, never latest itself.
    assert not any(is_snapshot_name(n) or n == 'latest' for n in got)


def test_a_record_is_a_leftover_only_without_its_snapshot():
    with tempfile.TemporaryDirectory(prefix='fslinks-unit-') as tmp:
        for n in ('2026-01-01T000000Z', '2026-01-01T000000Z.json', '2026-01-02T000000Z.json',
                  '2026-01-03T000000Z.partial', 'mine.json'):
            os.close(os.open(os.path.join(tmp, n), os.O_WRONLY | os.O_CREAT, 0o600))
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert _snapshot.leftovers(fd) == ['2026-01-02T000000Z.json', '2026-01-03T000000Z.partial']
        finally:
            os.close(fd)
