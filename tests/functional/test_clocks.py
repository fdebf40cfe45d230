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


def test_list_check_and_metrics_report_future_dated(ext4, workdir, capsys):
    """A job whose last run had the clock years ahead: `check` fails (the newest tells nothing
    about freshness), `list` and `check` say so in a warning line, the metrics count it; once a
    run with the right clock is the newest, check passes again but still warns."""
    # pylint: disable=import-outside-toplevel
    from argparse import Namespace

    from ansible_collections.fslinks.snapshots.plugins.module_utils import _jobs
    work = workdir(ext4)
    (work / 'src').mkdir()
    (work / 'metrics').mkdir()
    cfg = _jobs.validate_job({'name': 'data', 'src': str(work / 'src'), 'dest': str(work / 'snaps'),
                              'keep': {'daily': 7}, 'metrics_dir': str(work / 'metrics'), 'max_age': 7200,
                              'schedule': 'hourly'})
    _jobs.init_job(cfg)
    now = datetime.datetime.now(UTC).replace(microsecond=0)
    _jobs.run_job(cfg, now=now - datetime.timedelta(hours=1))
    res = _jobs.run_job(cfg, now=datetime.datetime(2030, 6, 1, tzinfo=UTC))
    ahead = os.path.basename(res['snapshot'])

    ok, message = _jobs.check_job(cfg)
    assert not ok
    assert 'newest snapshot %s is dated in the future (created 2030-06-01T00:00:00Z)' % ahead in message
    assert 'warning: 1 snapshot(s) dated in the future' in message

    assert _jobs._cmd_list(cfg, Namespace(usage=False, json=True)) == _jobs.EX_OK     # pylint: disable=protected-access
    out = capsys.readouterr()
    listed = json.loads(out.out)
    assert [s['future_dated'] for s in listed] == [False, True]
    assert 'dated in the future, the furthest %s created 2030-06-01T00:00:00Z' % ahead in out.err

    res = _jobs.run_job(cfg, now=now)           # the clock is right again
    assert os.path.basename(res['snapshot']) == ahead + '-2'    # named after it, created now
    ok, message = _jobs.check_job(cfg, now=now.timestamp() + 60)
    assert ok, message
    # (the line goes on with the free space of the root: '; 213.1M of 229.9M free')
    assert message.splitlines()[0].startswith('job data: newest snapshot %s is 1m00s old;' % (ahead + '-2'))
    assert 'warning: 1 snapshot(s) dated in the future' in message.splitlines()[1]
    prom = (work / 'metrics' / 'fslinks_snapshot_data.prom').read_text()
    assert 'fslinks_snapshot_future_dated{job="data"} 1\n' in prom
    assert [s['time'] for s in _jobs.list_job(cfg)][-1] == now.strftime('%Y-%m-%dT%H:%M:%SZ')
