# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Check mode takes the very decisions of a real run.

For every method, on the hostile tree, a dry run reports exactly the stats the real run
then has (first snapshot, and a second one after changes in data, mode, xattrs, a new and a
deleted file), and the per-directory fast passes decide exactly as the general path does.
"""

from __future__ import annotations

import os

import pytest

from helpers import loopfs
from helpers.snapshots import Clock
from helpers.trees import make_hostile_tree

from ansible_collections.fslinks.snapshots.plugins.module_utils import _fresh
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

METHODS = {'ext4': ('auto', 'hardlink', 'copy'),
           'xfs': ('auto', 'reflink', 'hardlink', 'copy'),
           'btrfs': ('auto', 'reflink', 'hardlink', 'copy')}
# A race with a writer, which a quiet test tree never has; every other count must match.
RACY = {'changed_during_run'}


def _change(src):
    """Changes of every kind a second snapshot must see."""
    with open(src / 'random.bin', 'r+b') as f:          # same size, new data and mtime
        f.write(b'changed')
    os.utime(src / 'random.bin', ns=(1, 1_700_000_000_123_456_789))
    os.chmod(src / 'plain.txt', 0o600)
    os.setxattr(src / 'empty', b'user.check', b'mode')
    (src / 'brand-new').write_bytes(b'new file\n')
    os.unlink(src / 'setgid')


def _stats(result):
    return {k: v for k, v in result['stats'].items() if k not in RACY}


@pytest.mark.parametrize('fast_paths', [True, False], ids=['fast-paths', 'general-path'])
def test_dry_run_reports_the_real_runs_stats(fs, workdir, monkeypatch, fast_paths):
    monkeypatch.setattr(_fresh.FreshTree, 'fast_paths', fast_paths)
    work = workdir(fs)
    src = work / 'src'
    src.mkdir()
    make_hostile_tree(src)
    clock = Clock()
    dests = {m: work / ('snaps-' + m) for m in METHODS[loopfs.fstype_of(fs)]}
    for step in ('first', 'second'):
        if step == 'second':
            _change(src)
        for method, dest in dests.items():
            now = clock()
            planned = run(Request(str(src), str(dest), method=method), dry_run=True, now=now)
            done = run(Request(str(src), str(dest), method=method), now=now)
            assert planned['method'] == done['method'], (step, method)
            assert _stats(planned) == _stats(done), (step, method)
            assert done['stats']['files'] > 20


def test_fast_paths_decide_as_the_general_path(xfs, ext4, workdir, monkeypatch):
    """Same snapshots, same counts, with and without the fast passes (a change to one
    without the other shows here)."""
    results = {}
    for mnt in (xfs, ext4):
        work = workdir(mnt)
        src = work / 'src'
        src.mkdir()
        make_hostile_tree(src)
        clock = Clock()
        for step in ('first', 'second'):
            if step == 'second':
                _change(src)
            now = clock()
            for fast in (True, False):
                monkeypatch.setattr(_fresh.FreshTree, 'fast_paths', fast)
                done = run(Request(str(src), str(work / ('snaps-%s' % fast)), method='hardlink'), now=now)
                results[fast, step] = _stats(done)
            assert results[True, step] == results[False, step], (mnt, step)
        second = results[True, 'second']
        assert second['linked'] > 10 and second['copied'] + second['reflinked'] >= 3, second
