# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs of one job started at the same moment (cron and a manual run, two timers on one
snapshot root): exactly one makes a snapshot, every other exits 75 at once saying "another
snapshot of DEST is running"; with lock_timeout they queue and each makes its own.

The CLI processes are started, import everything, say "ready", and are all released by one
file appearing, so they reach the lock within a millisecond or two of each other.
"""

from __future__ import annotations

import time

import pytest

from helpers import faults, processes, trees
from helpers.faults import TALLY, Chain
from helpers.processes import Job
from helpers.snapshots import partials, snapshot_names
from helpers.trees import copy_reference

FILES = faults.scale(5000, 5000)


def _race(job, work, count):
    """Start COUNT runs, release them together; return [(returncode, stdout, stderr, seconds)]."""
    go = work / 'go'
    if go.exists():
        go.unlink()
    procs = [job.start(go_file=go) for _i in range(count)]
    for proc in procs:
        assert proc.stdout.readline() == 'ready\n'
    go.touch()
    released = time.monotonic()
    ended = {}
    while len(ended) < count:
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.monotonic() - released
        assert time.monotonic() - released < 600
        time.sleep(0.002)
    out = []
    for i, proc in enumerate(procs):
        stdout, stderr = proc.communicate(timeout=60)
        out.append((proc.returncode, stdout, stderr, ended[i]))
    return out


RACES = [('ext4', 2), ('ext4', 10), ('xfs', 10), ('btrfs', 10)]
if faults.LONG:
    RACES += [('xfs', 2), ('btrfs', 2)]


@pytest.mark.slow
@pytest.mark.parametrize('kind,count', RACES, ids=['%s-%d' % r for r in RACES])
def test_runs_started_at_once(kind, count, request, workdir):
    mnt = request.getfixturevalue(kind)
    rng = faults.rng_for(request.node.nodeid)
    work = workdir(mnt)
    src = work / 'src'
    trees.make_many_files(src, FILES, size=2048, per_dir=50, rng=rng)
    dest = work / 'snaps'
    # copy: the slowest method, so that the winner still holds the lock when the last loser
    # (on two busy cores) gets to it.
    job = Job(work, src, dest, method='copy', keep={'last': 2})
    chain = Chain(dest, 2, job)
    chain.expect(copy_reference(src, work / 'ref'))
    assert job.run().returncode == 0            # the root and its lock file exist
    rounds = faults.scale(1, 5)
    for _round in range(rounds):
        before = snapshot_names(dest)
        results = _race(job, work, count)
        codes = sorted(r[0] for r in results)
        winners = [r for r in results if r[0] == 0]
        losers = [r for r in results if r[0] != 0]
        after = snapshot_names(dest)
        problems = chain.check()
        lost = len(problems)
        if codes != [0] + [processes.EX_BUSY] * (count - 1):
            problems.append('exit codes %s, wanted one 0 and %d x 75' % (codes, count - 1))
        for code, _out, err, _secs in losers:
            if 'another snapshot of %s is running' % dest not in err:
                problems.append('loser (exit %d) said: %s' % (code, err.strip()))
        made = [n for n in after if n not in before]
        if len(made) != 1:
            problems.append('%d snapshots made, wanted exactly one' % len(made))
        if partials(dest):
            problems.append('leftovers: %s' % partials(dest))
        slowest_loser = max((r[3] for r in losers), default=0)
        print('%d runs: winner took %.2fs, losers gave up within %.2fs' % (count, winners[0][3] if winners else -1,
                                                                           slowest_loser))
        # The metrics are the winner's: it finished last.
        if job.metric('last_run_status') != 1:
            problems.append('metrics say the last run failed (a loser wrote them after the winner)')
        TALLY.record('concurrent', kind, '%d at once: 1 snapshot, %d x exit 75' % (count, count - 1)
                     if not problems else '%d at once: %s' % (count, problems[0]), lost=lost)
        assert not problems, '\n'.join(problems)


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['ext4', 'xfs', 'btrfs'])
def test_runs_started_at_once_wait_with_lock_timeout(kind, request, workdir):
    mnt = request.getfixturevalue(kind)
    rng = faults.rng_for(request.node.nodeid)
    work = workdir(mnt)
    src = work / 'src'
    trees.make_many_files(src, 300, size=2048, per_dir=50, rng=rng)
    dest = work / 'snaps'
    count = faults.scale(3, 10)
    job = Job(work, src, dest, lock_timeout=300)
    chain = Chain(dest, None, job)
    chain.expect(copy_reference(src, work / 'ref'))
    results = _race(job, work, count)
    problems = chain.check()
    codes = [r[0] for r in results]
    if codes != [0] * count:
        problems.append('exit codes %s: %s' % (codes, [r[2] for r in results if r[0]]))
    names = snapshot_names(dest)
    if len(names) != count:
        problems.append('%d snapshots for %d queued runs: %s' % (len(names), count, names))
    TALLY.record('concurrent-wait', kind, '%d at once, lock_timeout 300: %d snapshots, one after the other'
                 % (count, count) if not problems else problems[0], lost=len(problems))
    assert not problems, '\n'.join(problems)
