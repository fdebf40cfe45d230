# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""keep.min_free on a small real ext4: a chain that fills the disk is pruned oldest first down to
the floor and keeps the newest; the floor is met before a run as well as after; a snapshot that
cannot fit fails before it writes; the metrics and `check` report free space and warn under
the floor."""

import json
import os

import pytest

from helpers import ansible_run
from helpers.processes import Job, cli
from helpers.snapshots import partials, snapshot_names

from ansible_collections.fslinks.snapshots.plugins.module_utils import _jobs
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import NoSpace
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

MIB = 1 << 20


def _free(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def _rewrite(path, size, seed):
    """New data of SIZE bytes (a new copy in a hardlink snapshot: not linked to the previous one)."""
    path.write_bytes(bytes([seed % 251]) * size)


def test_chain_filling_the_disk_is_pruned_oldest_first_to_the_floor(ext4, loop_fs, workdir):
    small = loop_fs('ext4', '64M')
    src = workdir(ext4) / 'src'
    src.mkdir()
    (src / 'keep-me').write_text('the same in every snapshot\n')
    dest = small / 'snaps'
    keep = {'min_free': '30%'}
    made = []
    pruned_any = False
    for i in range(12):
        _rewrite(src / 'big', 8 * MIB, i)            # each snapshot holds 8 MiB of its own
        present = snapshot_names(dest)
        result = run(Request(str(src), str(dest), method='hardlink', keep=keep))
        made.append(os.path.basename(result['snapshot']))
        names = snapshot_names(dest)
        free, size = _free(dest)
        space = result['space']
        assert space['min_free_bytes'] == int(size * 0.3) and space['size_bytes'] == size
        assert space['free_bytes'] == free
        # Never the newest, and what is left is the newest part of the chain: oldest went first.
        assert names[-1] == made[-1] and names == made[len(made) - len(names):]
        gone = [os.path.basename(p) for p in result['pruned']]
        assert gone == present[:len(gone)]
        assert free >= space['min_free_bytes'], (i, free, space)      # 8 MiB snapshots: the floor can be met
        assert not result.get('warnings'), result.get('warnings')
        pruned_any = pruned_any or bool(result['pruned'])
        # Every kept snapshot is whole.
        assert (dest / names[-1] / 'big').read_bytes() == bytes([i % 251]) * (8 * MIB)
    assert pruned_any and 2 <= len(snapshot_names(dest)) < 12
    assert partials(dest) == []


def test_floor_met_before_the_run_and_the_newest_stays(ext4, loop_fs, workdir):
    """Something else fills the disk: the next run prunes the oldest first to make the floor;
    when even that is not enough, the newest stays, and the run says so."""
    small = loop_fs('ext4', '64M')
    src = workdir(ext4) / 'src'
    src.mkdir()
    dest = small / 'snaps'
    for i in range(3):
        _rewrite(src / 'big', 4 * MIB, i)
        run(Request(str(src), str(dest), method='hardlink'))
    before = snapshot_names(dest)
    assert len(before) == 3
    free, size = _free(small)
    # Leave about 20 % free: with the floor at 25 %, the run must delete old snapshots to make room.
    with open(small / 'filler', 'wb') as f:
        os.posix_fallocate(f.fileno(), 0, free - int(size * 0.20))
    _rewrite(src / 'big', 4 * MIB, 9)
    result = run(Request(str(src), str(dest), method='hardlink', keep={'min_free': '25%'}))
    after = snapshot_names(dest)
    new = os.path.basename(result['snapshot'])
    assert after[-1] == new and before[-1] in after          # the newest before the run stays
    assert [os.path.basename(p) for p in result['pruned']] == before[:-1]
    # One went before the run (room for the floor), one after it (the new snapshot took 4 MiB).
    assert result['space']['free_bytes'] >= result['space']['min_free_bytes'] and not result.get('warnings')
    # Far below the floor: prune only (state=pruned) leaves the newest alone, and says so.
    result = run(Request(str(src), str(dest), keep={'min_free': '90%'}), state='pruned')
    assert snapshot_names(dest) == [new] and result['pruned'] == [str(dest / before[-1])]
    assert any('only the newest snapshot is left' in w for w in result['warnings'])
    assert (dest / new / 'big').read_bytes() == bytes([9]) * (4 * MIB)


def test_check_mode_deletes_nothing_for_space(ext4, loop_fs, workdir):
    small = loop_fs('ext4', '64M')
    src = workdir(ext4) / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'x' * MIB)
    dest = small / 'snaps'
    run(Request(str(src), str(dest)))
    run(Request(str(src), str(dest)))
    before = snapshot_names(dest)
    result = run(Request(str(src), str(dest), keep={'min_free': '99%'}), dry_run=True)
    assert snapshot_names(dest) == before and result['pruned'] == []
    assert result['space']['free_bytes'] < result['space']['min_free_bytes']


def test_a_copy_that_cannot_fit_fails_before_writing(ext4, loop_fs, workdir):
    """A first snapshot of 40 MiB of data into 16 MiB: NoSpace at once, nothing written."""
    small = loop_fs('ext4', '16M')
    src = workdir(ext4) / 'src'
    src.mkdir()
    for i in range(5):
        _rewrite(src / ('f%d' % i), 8 * MIB, i)
    dest = small / 'snaps'
    dest.mkdir()
    free = _free(small)[0]
    for method in ('copy', 'hardlink'):
        with pytest.raises(NoSpace) as err:
            run(Request(str(src), str(dest), method=method))
        assert 'would copy %d bytes' % (40 * MIB) in str(err.value) and 'nothing was written' in str(err.value)
        assert os.listdir(dest) == ['.fslinks-snapshot.lock']
        assert _free(small)[0] >= free - 64 * 1024          # the lock file, not the data
    # Check mode says so too, and a tree that fits runs.
    plan = run(Request(str(src), str(dest), method='copy'), dry_run=True)
    assert any('would copy %d bytes' % (40 * MIB) in w for w in plan['warnings'])
    for i in range(1, 5):
        (src / ('f%d' % i)).unlink()
    assert run(Request(str(src), str(dest), method='copy'))['stats']['bytes_copied'] == 8 * MIB


def test_metrics_and_check_report_free_space(ext4, loop_fs, workdir):
    small = loop_fs('ext4', '64M')
    work = workdir(ext4)
    src = work / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'y' * MIB)
    job = Job(work, src, small / 'snaps', keep={'last': 5, 'min_free': '10%'})
    done = job.run()
    assert done.returncode == 0, done.stderr
    free, size = _free(small)
    assert job.metric('size_bytes') == size
    assert abs(job.metric('free_bytes') - free) <= 64 * 1024
    assert job.metric('min_free_bytes') == int(size * 0.1)
    ok = cli(job.etc, 'check', 'data')
    assert ok.returncode == _jobs.EX_OK and ' free' in ok.stdout and 'warning' not in ok.stdout, ok
    # The same chain with a floor it cannot meet: the run warns (and succeeds), check exits 3.
    job.cfg['keep'] = {'last': 5, 'min_free': '95%'}
    job.write()
    done = job.run()
    assert done.returncode == 0 and 'below keep.min_free 95%' in done.stderr, done
    assert job.metric('min_free_bytes') == int(size * 0.95) > job.metric('free_bytes')
    warned = cli(job.etc, 'check', 'data')
    assert warned.returncode == _jobs.EX_WARN, warned
    assert 'warning: job data: %s has' % job.dest in warned.stdout and 'below keep.min_free 95%' in warned.stdout
    assert len(job.listed()) == 1           # pruned for space down to the newest
    record = json.loads((job.dest / (job.listed()[0] + '.json')).read_text())
    assert record['stats']['skipped'] == 0


def test_min_free_is_checked_everywhere(tmp_path):
    for bad in ('100%', '20 percent', '-1G', 'lots'):
        with pytest.raises(Exception, match='keep.min_free must be a percentage below 100'):
            Request(str(tmp_path), str(tmp_path / 'snaps'), keep={'min_free': bad})
        with pytest.raises(Exception, match='job data: keep.min_free must be'):
            _jobs.validate_job({'name': 'data', 'src': str(tmp_path), 'dest': str(tmp_path / 's'),
                                'keep': {'min_free': bad}})
    cfg = _jobs.validate_job({'name': 'data', 'src': str(tmp_path), 'dest': str(tmp_path / 's'),
                              'keep': {'daily': 7, 'min_free': '10G'}})
    assert cfg['keep'] == {'daily': 7, 'min_free': '10G'}


def test_module_takes_min_free(ext4, loop_fs, workdir):
    """A real ansible run: keep.min_free reaches the engine, the result says what is free."""
    small = loop_fs('ext4', '64M')
    src = workdir(ext4) / 'src'
    src.mkdir()
    dest = small / 'snaps'
    for i in range(3):
        _rewrite(src / 'big', 4 * MIB, i)
        res = ansible_run.run_adhoc('hardlink_snapshot', {'src': str(src), 'dest': str(dest),
                                                          'keep': {'last': 10, 'min_free': '95%'}})
        assert not res['failed'], res
    free, size = _free(small)
    assert res['space'] == {'free_bytes': free, 'size_bytes': size, 'min_free_bytes': int(size * 0.95)}
    assert snapshot_names(dest) == [os.path.basename(res['snapshot'])] and len(res['pruned']) == 1
    assert any('below keep.min_free 95%' in w for w in res['warnings']), res
    bad = ansible_run.run_adhoc('hardlink_snapshot', {'src': str(src), 'dest': str(dest),
                                                      'keep': {'min_free': '120%'}})
    assert bad['failed'] and 'keep.min_free must be a percentage below 100' in bad['msg'], bad
