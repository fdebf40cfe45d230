# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshot runs under a wrong clock, on a real filesystem: a run with the clock years ahead must
not collapse retention for the years that follow, and the clock going back must not lose the
snapshot just made (docs/retention.md, "Clocks")."""

from __future__ import annotations

import datetime
import json
import os

from helpers.snapshots import Clock, latest, records, snapshot_names

from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

UTC = datetime.timezone.utc
DAY = datetime.timedelta(days=1)


def _run(src, dest, now, keep):
    (src / 'f').write_text(now.isoformat())         # every run has something new
    return run(Request(str(src), str(dest), method='hardlink', keep=keep), now=now)


def _created(dest, name):
    with open(os.path.join(dest, name + '.json'), encoding='utf-8') as handle:
        return json.load(handle)['created']


def test_one_run_years_ahead_uses_one_daily_slot(ext4, workdir):
    work = workdir(ext4)
    src, dest = work / 'src', work / 'snaps'
    src.mkdir()
    keep = {'daily': 7}
    good = Clock(start=datetime.datetime(2026, 3, 1, 2, 0, tzinfo=UTC), step=DAY)
    for _day in range(10):
        _run(src, dest, good(), keep)
    ahead = _run(src, dest, datetime.datetime(2030, 6, 1, 2, 0, tzinfo=UTC), keep)
    assert ahead['future_dated'] == []          # judged by the clock of its own run
    made = []
    for _day in range(28):
        now = good()
        res = _run(src, dest, now, keep)
        made.append((os.path.basename(res['snapshot']), now))
    names = snapshot_names(dest)
    # Named after the 2030 one (so names stay the order of the runs), created on their real day.
    assert made[-1][0] == '2030-06-01T020000Z-29'
    assert _created(dest, made[-1][0]) == made[-1][1].strftime('%Y-%m-%dT%H:%M:%SZ')
    assert latest(dest) == made[-1][0]
    last_week = [name for name, _now in made[-7:]]
    assert len(set(last_week) & set(names)) >= 6, names
    # The future-dated one takes the seventh slot, and nothing else stays.
    assert names == [os.path.basename(ahead['snapshot'])] + last_week[1:]
    assert res['future_dated'] == [ahead['snapshot']]
    assert any('dated in the future' in w for w in res.get('warnings', []))
    assert records(dest) == sorted(n + '.json' for n in names)


def test_clock_stepping_back_keeps_the_newest(ext4, workdir):
    work = workdir(ext4)
    src, dest = work / 'src', work / 'snaps'
    src.mkdir()
    keep = {'daily': 2}
    for day in (1, 2, 3):
        _run(src, dest, datetime.datetime(2026, 3, day, 12, tzinfo=UTC), keep)
    # The clock goes back two days: the new snapshot is the oldest by its time, but it is latest.
    res = _run(src, dest, datetime.datetime(2026, 3, 1, 13, tzinfo=UTC), keep)
    new = os.path.basename(res['snapshot'])
    assert new == '2026-03-03T120000Z-2'
    assert latest(dest) == new
    assert new in snapshot_names(dest)
    assert snapshot_names(dest) == ['2026-03-02T120000Z', '2026-03-03T120000Z', new]
    # The two snapshots after its clock are reported, and a run with the clock right again keeps
    # the newest too and prunes by real days.
    assert [os.path.basename(p) for p in res['future_dated']] == ['2026-03-02T120000Z', '2026-03-03T120000Z']
    res = _run(src, dest, datetime.datetime(2026, 3, 4, 12, tzinfo=UTC), keep)
    assert latest(dest) == os.path.basename(res['snapshot'])
    assert snapshot_names(dest) == ['2026-03-03T120000Z', os.path.basename(res['snapshot'])]
    assert res['future_dated'] == []
