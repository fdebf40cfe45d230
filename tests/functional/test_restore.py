# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore (_restore.restore) on real ext4, XFS and btrfs loop filesystems, every method.

What comes back is checked with the rsync oracle (tests/_trees.py) against the snapshot, the
guard snapshot against a copy of the live tree made just before, sharing with FIEMAP, and a
SIGKILLed restore leaves every file old or new.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import COLLECTIONS, loopfs
from helpers.oracles import assert_same_tree, rsync_diff
from helpers.snapshots import Clock, snapshots
from helpers.trees import copy_reference, create_subvolume, make_hostile_tree

from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import BadInput, LinkError
from ansible_collections.fslinks.snapshots.plugins.module_utils._extents import extents_equal
from ansible_collections.fslinks.snapshots.plugins.module_utils._restore import restore, tree_path
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

METHODS = {'ext4': ('hardlink', 'copy'), 'xfs': ('reflink', 'hardlink', 'copy'),
           'btrfs': ('btrfs', 'reflink', 'hardlink')}


def _live(work, fstype, method):
    src = work / 'src'
    if method == 'btrfs':
        create_subvolume(src)
    else:
        src.mkdir()
    make_hostile_tree(src)
    return src


def _mess_up(src):
    """What a bad day does to the live tree: data, metadata, deletions, additions."""
    (src / 'plain.txt').write_bytes(b'overwritten by mistake\n')
    os.chmod(src / 'random.bin', 0o666)
    os.unlink(src / 'setuid')
    os.unlink(src / 'hard' / 'b')
    (src / 'extra-file').write_bytes(b'not in the snapshot\n')
    (src / 'extra-dir').mkdir()
    (src / 'extra-dir' / 'f').write_bytes(b'x')


def _snapshot_then_mess_up(work):
    """(src, root, snapshot, before): the hostile tree snapshotted, then messed up, and a copy
    of it as it is then (what a restore that changes nothing must leave)."""
    src = _live(work, 'xfs', 'reflink')
    root = work / 'snaps'
    snap = run(Request(str(src), str(root)), now=Clock()())['snapshot']
    _mess_up(src)
    before = work / 'before'
    copy_reference(src, before)
    return src, root, snap, before


@pytest.mark.parametrize('mirror', [True, False], ids=['mirror', 'no-mirror'])
def test_whole_tree_comes_back(fs, workdir, mirror):
    fstype = loopfs.fstype_of(fs)
    for method in METHODS[fstype]:
        work = workdir(fs)
        src = _live(work, fstype, method)
        root = work / 'snaps'
        clock = Clock()
        first = run(Request(str(src), str(root), method=method), now=clock())
        snap = first['snapshot']
        _mess_up(src)
        before = work / 'before'
        copy_reference(src, before)
        res = restore(str(root), mirror=mirror, now=clock())
        assert res['changed'] and res['snapshot'] == os.path.basename(snap)
        if mirror:
            assert_same_tree(snap, src)
            assert res['deleted'] == 2
        else:
            assert (src / 'extra-file').exists() and (src / 'extra-dir' / 'f').exists()
            assert res['deleted'] == 0
            os.unlink(src / 'extra-file')
            (src / 'extra-dir' / 'f').unlink()
            (src / 'extra-dir').rmdir()
            os.utime(src, ns=(os.stat(snap).st_atime_ns, os.stat(snap).st_mtime_ns))
            assert_same_tree(snap, src)
        # The guard snapshot holds the live tree as it was just before.
        guard = res['guard_snapshot']
        assert guard and os.path.isdir(guard)
        assert json.loads((root / (os.path.basename(guard) + '.json')).read_text())['purpose'] == 'guard'
        assert rsync_diff(before, guard) == []
        # latest is the newest snapshot that is not a guard: a second restore changes nothing.
        again = restore(str(root), mirror=mirror, now=clock())
        assert not again['changed'] and again['guard_snapshot'] is None, again['changes']
        assert again['snapshot'] == os.path.basename(snap)
        assert len(snapshots(root)) == 2


def test_dry_run_lists_and_changes_nothing(xfs, workdir):
    work = workdir(xfs)
    src, root, _snap, before = _snapshot_then_mess_up(work)
    seen = []
    res = restore(str(root), mirror=True, dry_run=True, report=lambda p, a, s, d: seen.append((p, a)))
    assert res['changed'] and res['guard_snapshot'] is None
    actions = {(c['path'], c['action']) for c in res['changes']}
    assert ('extra-file', 'delete') in actions and ('extra-dir', 'delete') in actions
    assert any(path == 'plain.txt' for path, _a in actions)
    assert len(seen) == len(res['changes'])
    assert rsync_diff(before, src) == [] and len(snapshots(root)) == 1


def test_one_file_from_an_older_snapshot_shares_its_extents(fs, workdir):
    fstype = loopfs.fstype_of(fs)
    work = workdir(fs)
    src = work / 'src'
    src.mkdir()
    big = src / 'data' / 'image.bin'
    big.parent.mkdir()
    big.write_bytes(os.urandom(8 << 20))
    (src / 'other').write_bytes(b'other\n')
    root = work / 'snaps'
    clock = Clock()
    old = run(Request(str(src), str(root)), now=clock())['snapshot']
    with open(big, 'r+b') as f:
        f.write(b'corrupted')
    run(Request(str(src), str(root)), now=clock())
    (src / 'other').write_bytes(b'changed, and must stay so\n')
    res = restore(str(root), snapshot=os.path.basename(old), path='data/image.bin', now=clock())
    assert res['changed'] and res['restored'] == 1 and res['path'] == 'data/image.bin'
    assert big.read_bytes() == open(os.path.join(old, 'data', 'image.bin'), 'rb').read()
    assert (src / 'other').read_bytes() == b'changed, and must stay so\n'
    assert res['guard_snapshot'] is not None
    if fstype in ('xfs', 'btrfs'):
        assert res['method'] == 'reflink'
        a, b = os.open(big, os.O_RDONLY), os.open(os.path.join(old, 'data', 'image.bin'), os.O_RDONLY)
        try:
            assert extents_equal(a, b)
        finally:
            os.close(a)
            os.close(b)
        out = subprocess.run(['filefrag', '-v', str(big)], capture_output=True, text=True, check=True).stdout
        assert 'shared' in out
    else:
        assert res['method'] == 'copy'


def test_restore_to_another_directory_and_an_absolute_live_path(xfs, workdir):
    work = workdir(xfs)
    src, root, snap, before = _snapshot_then_mess_up(work)
    elsewhere = work / 'elsewhere'
    res = restore(str(root), path=str(src / 'hard'), to=str(elsewhere))
    assert res['guard_snapshot'] is None            # the live tree is not touched
    assert res['target'] == str(elsewhere / 'hard')
    assert_same_tree(os.path.join(snap, 'hard'), elsewhere / 'hard')
    assert rsync_diff(before, src) == []
    whole = restore(str(root), to=str(work / 'copy'))
    assert_same_tree(snap, work / 'copy')
    assert whole['guard_snapshot'] is None
    # Without a plan (no guard to decide on), a second identical restore still changes nothing.
    again = restore(str(root), to=str(work / 'copy'), mirror=True)
    assert not again['changed'] and again['changes'] == [] and again['restored'] == 0, again['changes']
    live_again = restore(str(root), path='hard', guard=False)
    assert live_again['changed'] and restore(str(root), path='hard', guard=False)['changed'] is False


def test_missing_parents_are_planned_then_made_as_in_the_snapshot(xfs, workdir):
    work = workdir(xfs)
    src, root, snap, _before = _snapshot_then_mess_up(work)
    shutil.rmtree(src / 'readonly-dir')
    plan = restore(str(root), path='readonly-dir/file', dry_run=True)
    planned = [(c['path'], c['action']) for c in plan['changes']]
    assert planned == [('readonly-dir', 'create'), ('readonly-dir/file', 'reflink')]
    assert not (src / 'readonly-dir').exists()
    done = restore(str(root), path='readonly-dir/file')
    assert done['restored'] == 1 and done['guard_snapshot'] is None     # nothing live was overwritten
    made, there = os.lstat(src / 'readonly-dir'), os.lstat(os.path.join(snap, 'readonly-dir'))
    assert (made.st_mode, made.st_uid, made.st_mtime_ns) == (there.st_mode, there.st_uid, there.st_mtime_ns)
    assert rsync_diff(os.path.join(snap, 'readonly-dir'), src / 'readonly-dir') == []


def test_a_snapshot_without_its_record(xfs, workdir):
    """A record is information: without it a snapshot is still restorable elsewhere, and a
    restore into the live tree asks where that is."""
    work = workdir(xfs)
    src = _live(work, 'xfs', 'reflink')
    root = work / 'snaps'
    snap = run(Request(str(src), str(root)), now=Clock()())['snapshot']
    os.unlink(snap + '.json')
    with pytest.raises(BadInput, match='does not say where it came from'):
        restore(str(root))
    res = restore(str(root), to=str(work / 'elsewhere'))
    assert res['changed'] and res['guard_snapshot'] is None
    assert_same_tree(snap, work / 'elsewhere')


def test_bad_input_changes_nothing(xfs, workdir, loop_fs):
    work = workdir(xfs)
    src, root, _snap, before = _snapshot_then_mess_up(work)
    times = os.stat(src)
    os.symlink(str(work / 'before'), src / 'links-out')
    cases = [
        (dict(snapshot='2001-01-01T000000Z'), 'no such complete snapshot'),
        (dict(path='no/such/file'), 'not in the snapshot'),
        (dict(path='../etc/passwd'), '".." is not allowed'),
        (dict(path='/etc/passwd'), 'outside the snapshot'),
        (dict(path='links/relative/x'), 'is not a directory there'),
    ]
    for kwargs, words in cases:
        with pytest.raises(BadInput, match=words):
            restore(str(root), **kwargs)
    # A file where a directory is restored; a symlink on the way.
    os.rename(src / 'hard', work / 'hard-aside')
    (src / 'hard').write_bytes(b'a file now')
    with pytest.raises(BadInput, match='is a file where a directory is restored'):
        restore(str(root), path='hard/a')
    os.unlink(src / 'hard')
    os.symlink(str(work / 'hard-aside'), src / 'hard')
    with pytest.raises(BadInput, match='symlink; a restore never follows one'):
        restore(str(root), path='hard/a')
    ro = loop_fs('ext4', '32M')
    subprocess.run(['mount', '-o', 'remount,ro', str(ro)], check=True)
    with pytest.raises(LinkError, match='read-only'):
        restore(str(root), to=str(ro / 'x'))
    os.unlink(src / 'hard')
    os.rename(work / 'hard-aside', src / 'hard')
    os.unlink(src / 'links-out')
    os.utime(src, ns=(times.st_atime_ns, times.st_mtime_ns))     # the test's own renames moved it
    assert rsync_diff(before, src) == []
    assert len(snapshots(root)) == 1        # no guard was taken for any of them


def test_tree_path_rules():
    assert tree_path(None) == ()
    assert tree_path('/') == () and tree_path('.') == ()
    assert tree_path('a//b/./c/') == (b'a', b'b', b'c')
    assert tree_path('/srv/data/a/b', '/srv/data') == (b'a', b'b')
    assert tree_path('/srv/data', '/srv/data') == ()
    for bad in ('a/../b', '..', '/srv/database/x'):
        with pytest.raises(BadInput):
            tree_path(bad, '/srv/data')


RESTORER = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.fslinks.snapshots.plugins.module_utils._restore import restore
print('go', flush=True)
print(json.dumps(restore(sys.argv[2], mirror=True)), flush=True)
'''


def test_sigkill_during_restore_leaves_old_or_new(xfs, ext4, workdir):
    """Kill restores at random moments: every file is as it was or as restored (never half of
    either, never a stray temporary file), and a re-run completes it."""
    rng = random.Random(7)
    for mnt in (ext4, xfs):
        work = workdir(mnt)
        src = work / 'src'
        src.mkdir()
        for d in range(20):
            (src / ('d%02d' % d)).mkdir()
            for i in range(40):
                (src / ('d%02d' % d) / ('f%02d' % i)).write_bytes(b'new-%d-%d\n' % (d, i) * 4000)
        root = work / 'snaps'
        snap = run(Request(str(src), str(root), method='copy'), now=Clock()())['snapshot']
        for d in range(20):
            for i in range(40):
                (src / ('d%02d' % d) / ('f%02d' % i)).write_bytes(b'old-%d-%d\n' % (d, i) * 1000)
        for kill in range(3):
            proc = subprocess.Popen([sys.executable, '-c', RESTORER, str(COLLECTIONS), str(root)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdout.readline() == b'go\n'
            time.sleep(rng.uniform(0.05, 0.6))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            for d in range(20):
                for name in os.listdir(src / ('d%02d' % d)):
                    data = (src / ('d%02d' % d) / name).read_bytes()
                    i = int(name[1:]) if name.startswith('f') and not name.startswith('.') else None
                    if name.startswith('.'):
                        continue            # a killed run's temporary file: swept by the next run
                    assert data in (b'old-%d-%d\n' % (d, i) * 1000, b'new-%d-%d\n' % (d, i) * 4000), (d, name)
        res = restore(str(root), mirror=True)
        assert_same_tree(snap, src)
        assert json.dumps(res['stats'])
        leftovers = [n for d in os.listdir(src) for n in os.listdir(src / d) if n.startswith('.')]
        assert leftovers == []
