# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Change counts: every snapshot's record (and the run's result, and the metrics) says how many
regular files were added, modified and deleted since the previous snapshot, as rsync itemizes
them between the two snapshots, for every method that walks."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from helpers import loopfs
from helpers.snapshots import Clock

from ansible_collections.fslinks.snapshots.plugins.module_utils import _jobs
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

METHODS = {'ext4': ('hardlink', 'copy'), 'xfs': ('reflink', 'hardlink', 'copy'), 'btrfs': ('reflink', 'hardlink')}


def _rsync_counts(old, new):
    """(added, modified, deleted) regular files from OLD to NEW, by rsync's itemized dry run."""
    out = subprocess.run(['rsync', '-ani', '--delete', '--numeric-ids', '--modify-window=-1',
                          '%s/' % new, '%s/' % old], capture_output=True, check=True).stdout.splitlines()
    added = sum(1 for line in out if line.startswith(b'>f+++++++++'))
    modified = sum(1 for line in out if line[:2] in (b'>f', b'.f') and not line.startswith(b'>f+++++++++'))
    deleted = sum(1 for line in out if line.startswith(b'*deleting') and not line.endswith(b'/'))
    return added, modified, deleted


def _populate(src):
    for d in range(4):
        (src / ('d%d' % d)).mkdir()
        for i in range(10):
            (src / ('d%d' % d) / ('f%d' % i)).write_bytes(b'%d-%d\n' % (d, i) * 50)


def _change(src):
    (src / 'd0' / 'f0').write_bytes(b'new content, other size\n')
    with open(src / 'd0' / 'f1', 'r+b') as f:       # same size, new data and mtime
        f.write(b'XX')
    os.utime(src / 'd0' / 'f1', ns=(1, 1_700_000_000_000_000_001))
    os.chmod(src / 'd1' / 'f0', 0o600)              # metadata only: modified too
    for i in range(3):
        (src / 'd2' / ('new%d' % i)).write_bytes(b'added\n')
    (src / 'newdir').mkdir()
    (src / 'newdir' / 'inside').write_bytes(b'added in a new directory\n')
    for i in range(4):
        os.unlink(src / 'd3' / ('f%d' % i))


def test_records_count_what_changed(fs, workdir):
    fstype = loopfs.fstype_of(fs)
    for method in METHODS[fstype]:
        work = workdir(fs)
        src = work / 'src'
        src.mkdir()
        _populate(src)
        dest = work / 'snaps'
        clock = Clock()
        first = run(Request(str(src), str(dest), method=method), now=clock())
        assert first['changed_files'] is None       # nothing to compare with
        _change(src)
        planned = run(Request(str(src), str(dest), method=method), now=clock(), dry_run=True)
        second = run(Request(str(src), str(dest), method=method), now=clock())
        expected = dict(zip(('added', 'modified', 'deleted'), _rsync_counts(first['snapshot'], second['snapshot'])))
        assert expected == {'added': 4, 'modified': 3, 'deleted': 4}, expected       # the oracle itself
        assert second['changed_files'] == expected, (method, second['changed_files'])
        assert planned['changed_files'] == expected, (method, planned['changed_files'])
        record = json.loads((dest / (os.path.basename(second['snapshot']) + '.json')).read_text())
        assert record['changed_files'] == expected


def test_metrics_carry_the_change_counts(xfs, workdir):
    work = workdir(xfs)
    src = work / 'src'
    src.mkdir()
    _populate(src)
    metrics = work / 'metrics'
    metrics.mkdir()
    cfg = _jobs.validate_job({'name': 'counts', 'src': str(src), 'dest': str(work / 'snaps'),
                              'metrics_dir': str(metrics)})
    _jobs.init_job(cfg)
    _jobs.run_job(cfg)
    text = (metrics / 'fslinks_snapshot_counts.prom').read_text()
    assert 'changed_files' not in text          # a first snapshot has nothing to compare with
    _change(src)
    _jobs.run_job(cfg)
    text = (metrics / 'fslinks_snapshot_counts.prom').read_text()
    for how, count in (('added', 4), ('modified', 3), ('deleted', 4)):
        assert 'fslinks_snapshot_changed_files{job="counts",how="%s"} %d' % (how, count) in text, text


@pytest.mark.parametrize('fast_paths', [True, False])
def test_counts_do_not_depend_on_the_fast_pass(xfs, workdir, monkeypatch, fast_paths):
    from ansible_collections.fslinks.snapshots.plugins.module_utils import _fresh
    monkeypatch.setattr(_fresh.FreshTree, 'fast_paths', fast_paths)
    work = workdir(xfs)
    src = work / 'src'
    src.mkdir()
    _populate(src)
    clock = Clock()
    run(Request(str(src), str(work / 'snaps'), method='hardlink'), now=clock())
    _change(src)
    second = run(Request(str(src), str(work / 'snaps'), method='hardlink'), now=clock())
    assert second['changed_files'] == {'added': 4, 'modified': 3, 'deleted': 4}
