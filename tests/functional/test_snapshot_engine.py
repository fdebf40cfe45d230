# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The snapshot engine (_snapshot.run) on real ext4, XFS and btrfs loop filesystems.

Every snapshot is checked with the rsync oracle: ``rsync -aHAXn --checksum --itemize-changes
--numeric-ids --modify-window=-1 SRC/ SNAP/`` prints nothing (plus a walk comparing nanosecond
mtimes, owners and modes) on a hostile tree (see tests/helpers/trees.py).
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from helpers import loopfs
from helpers.oracles import assert_same_tree, is_readonly_subvolume, regular_files, rsync_diff, tree_state
from helpers.snapshots import NAME_RE, Clock, entries, latest, leftovers, records, snapshots
from helpers.trees import SPARSE_SIZE, copy_reference, create_subvolume, make_hostile_tree, remove_tree

from ansible_collections.fslinks.snapshots.plugins.module_utils._extents import extents_equal, shared_bytes
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import (
    BadInput, CrossDevice, LinkError, NotSupported)
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

UTC = datetime.timezone.utc


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def clock():
    return Clock()


def snap(src, dest, clock=None, **kw):
    """One engine run; returns its result."""
    state = kw.pop('state', 'present')
    dry_run = kw.pop('dry_run', False)
    return run(Request(str(src), str(dest), **kw), state=state, dry_run=dry_run,
               now=clock() if clock else None)


def src_dir(work, subvolume=False):
    p = work / 'src'
    if subvolume:
        create_subvolume(p)
    else:
        p.mkdir()
    return p


def same_inode(a, b):
    sa, sb = os.lstat(a), os.lstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def fully_shared(a, b):
    fa = os.open(a, os.O_RDONLY)
    fb = os.open(b, os.O_RDONLY)
    try:
        return extents_equal(fa, fb)
    finally:
        os.close(fa)
        os.close(fb)


def has_data(path):
    """False for files that are all hole (no extent to share)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 0, os.SEEK_DATA)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def check_published(dest, result):
    """The run published result['snapshot'] as a complete snapshot that latest points at."""
    name = os.path.basename(result['snapshot'])
    assert result['snapshot'] == os.path.join(str(dest), name)
    assert (Path(dest) / name).is_dir()
    assert latest(dest) == name, 'latest is a relative symlink to the newest snapshot'
    assert leftovers(dest) == []
    return Path(dest) / name


# Methods each filesystem can do (btrfs: src a subvolume on the same fs).
FS_METHODS = [
    ('ext4', 'hardlink'), ('ext4', 'copy'), ('ext4', 'auto'),
    ('xfs', 'reflink'), ('xfs', 'hardlink'), ('xfs', 'copy'), ('xfs', 'auto'),
    ('btrfs', 'btrfs'), ('btrfs', 'reflink'), ('btrfs', 'hardlink'), ('btrfs', 'copy'), ('btrfs', 'auto'),
]
AUTO = {'ext4': 'hardlink', 'xfs': 'reflink', 'btrfs': 'btrfs'}


# ---------------------------------------------------------------- content equal to rsync -aHAX

@pytest.mark.parametrize('kind,method', FS_METHODS, ids=['%s-%s' % p for p in FS_METHODS])
def test_hostile_tree_equals_rsync(kind, method, request, workdir, clock):
    """Each method on each filesystem: two snapshots (the second after edits, so the hardlink
    method links against the first) are both what rsync -aHAX would copy."""
    mnt = request.getfixturevalue(kind)
    work = workdir(mnt)
    src = src_dir(work, subvolume=(kind == 'btrfs'))
    tree = make_hostile_tree(src)
    dest = work / 'snaps'
    expect = AUTO[kind] if method == 'auto' else method

    first = snap(src, dest, clock, method=method)
    assert first['method'] == expect, first
    s1 = check_published(dest, first)
    assert_same_tree(src, s1)
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700
    state1 = tree_state(s1)

    if expect != 'btrfs':
        st = first['stats']
        assert st['files'] == tree.files, st
        assert st['hardlinks'] == 3, st        # hard/b, hard2/c\nnl, hard2/pair2
        assert st['symlinks'] == 6 and st['specials'] == 4, st
        if expect in ('copy', 'hardlink') and kind == 'ext4':
            # Sparse files stay sparse (copy, and the hardlink method's first full copy).
            a, b = os.stat(tree.sparse), os.stat(s1 / 'sparse.img')
            assert b.st_size == SPARSE_SIZE
            assert b.st_blocks <= a.st_blocks + 8, (a.st_blocks, b.st_blocks)
            assert os.stat(s1 / 'all-hole').st_blocks == 0
        # Inner hard links are hard links in the snapshot too.
        assert same_inode(s1 / 'hard' / 'a', s1 / 'hard' / 'b')
        assert same_inode(s1 / 'hard' / 'a', os.path.join(os.fsencode(s1), b'hard2', b'c\nnl'))
        assert not same_inode(s1 / 'hard' / 'a', src / 'hard' / 'a')

    # Edit the source: content, mode, owner, a new file, a removed file.
    with open(src / 'plain.txt', 'ab') as f:
        f.write(b'more\n')
    os.chmod(src / 'setuid', 0o755)
    os.chown(src / 'owned', 99, 99)
    (src / 'new-file').write_bytes(b'new\n')
    os.unlink(src / 'empty')

    second = snap(src, dest, clock, method=method)
    assert second['method'] == expect
    s2 = check_published(dest, second)
    assert_same_tree(src, s2)
    assert tree_state(s1) == state1, 'the first snapshot changed'
    assert snapshots(dest) == [s1.name, s2.name]

    if expect in ('copy', 'reflink'):
        # Each snapshot has its own inodes; copy shares no data with src, reflink all of it.
        for rel in ('random.bin', 'sparse.img', 'hard/a'):
            assert not same_inode(s1 / rel, s2 / rel), rel
            fa, fb = os.open(src / rel, os.O_RDONLY), os.open(s2 / rel, os.O_RDONLY)
            try:
                shared = shared_bytes(fa, fb)
            finally:
                os.close(fa)
                os.close(fb)
            if expect == 'copy':
                assert shared == 0, rel
            elif rel == 'random.bin':
                assert shared >= os.path.getsize(src / rel) // 4096 * 4096, rel
    if expect == 'hardlink':
        st = second['stats']
        # plain.txt, setuid, owned, new-file are new inodes; the rest is linked.
        assert not same_inode(s1 / 'plain.txt', s2 / 'plain.txt')
        assert not same_inode(s1 / 'setuid', s2 / 'setuid')
        assert not same_inode(s1 / 'owned', s2 / 'owned')
        assert same_inode(s1 / 'random.bin', s2 / 'random.bin')
        assert same_inode(s1 / 'sparse.img', s2 / 'sparse.img')
        assert same_inode(s1 / 'hard' / 'a', s2 / 'hard' / 'b')
        assert same_inode(s1 / tree.deep_file.relative_to(src), s2 / tree.deep_file.relative_to(src))
        assert st['copied'] + st['reflinked'] == 4, st
        assert st['linked'] == st['files'] - st['hardlinks'] - 4, st


def test_btrfs_snapshot_is_readonly_subvolume(btrfs, workdir, clock):
    work = workdir(btrfs)
    src = src_dir(work, subvolume=True)
    (src / 'f').write_bytes(b'data')
    dest = work / 'snaps'
    res = snap(src, dest, clock)
    assert res['method'] == 'btrfs'
    assert 'subvolume' in res['reason']
    s = check_published(dest, res)
    assert os.stat(s).st_ino == 256
    assert is_readonly_subvolume(s)
    with pytest.raises(OSError):
        (s / 'g').write_bytes(b'x')
    assert res['stats']['files'] == 0, 'btrfs copies nothing: zero counts'


def test_btrfs_dest_root_is_another_subvolume(btrfs, workdir, clock):
    """src and the snapshot root in different subvolumes of one btrfs: still O(1) snapshots."""
    work = workdir(btrfs)
    src = src_dir(work, subvolume=True)
    (src / 'f').write_bytes(b'data')
    dest = create_subvolume(work / 'snaps')
    res = snap(src, dest, clock, keep={'last': 1})
    assert res['method'] == 'btrfs'
    assert is_readonly_subvolume(check_published(dest, res))
    res = snap(src, dest, clock, keep={'last': 1})
    assert snapshots(dest) == [os.path.basename(res['snapshot'])]


def test_btrfs_exclude_then_readonly(btrfs, workdir, clock):
    """With exclude: a writable snapshot, excluded paths deleted, then read-only."""
    work = workdir(btrfs)
    src = src_dir(work, subvolume=True)
    make_hostile_tree(src)
    (src / 'cache').mkdir()
    (src / 'cache' / 'big').write_bytes(b'x' * 10000)
    (src / 'deep' / 'x.tmp').write_bytes(b'tmp')
    (src / 'keep.tmp.txt').write_bytes(b'kept')
    excl = ['/cache/', '*.tmp']
    res = snap(src, dest := work / 'snaps', clock, method='btrfs', exclude=excl)
    s = check_published(dest, res)
    assert is_readonly_subvolume(s)
    assert not (s / 'cache').exists() and not (s / 'deep' / 'x.tmp').exists()
    assert (s / 'keep.tmp.txt').exists()
    # Same as rsync with the same excludes.
    # Directories that lost excluded entries keep src's mtime, as with rsync --exclude.
    assert rsync_diff(src, s, extra=['--exclude=/cache/', '--exclude=*.tmp', '--delete']) == []


def test_exclude_copy_methods(xfs, workdir, clock):
    work = workdir(xfs)
    src = src_dir(work)
    (src / 'cache' / 'sub').mkdir(parents=True)
    (src / 'cache' / 'sub' / 'f').write_bytes(b'1')
    (src / 'a' / 'cache').mkdir(parents=True)         # not anchored: /cache/ only at the top
    (src / 'a' / 'x.iso').write_bytes(b'iso')
    (src / 'a' / 'keep').write_bytes(b'keep')
    for method in ('reflink', 'hardlink', 'copy'):
        dest = work / ('snaps-' + method)
        res = snap(src, dest, clock, method=method, exclude=['/cache/', '*.iso'])
        s = check_published(dest, res)
        assert not (s / 'cache').exists() and not (s / 'a' / 'x.iso').exists()
        assert (s / 'a' / 'cache').is_dir() and (s / 'a' / 'keep').read_bytes() == b'keep'


# ---------------------------------------------------------------- sharing: links and extents

@pytest.mark.parametrize('kind', ['xfs', 'btrfs'])
def test_reflink_own_inodes_share_all_extents(kind, workdir, clock, request):
    work = workdir(request.getfixturevalue(kind))
    src = src_dir(work)              # a plain dir: reflink, not btrfs
    make_hostile_tree(src)
    dest = work / 'snaps'
    res = snap(src, dest, clock, method='reflink')
    s = check_published(dest, res)
    files = regular_files(src)
    assert res['stats']['reflinked'] == res['stats']['files'] - res['stats']['hardlinks']
    assert res['stats']['copied'] == 0 and res['stats']['bytes_copied'] == 0
    for rel in files:
        a, b = os.path.join(os.fsencode(src), rel), os.path.join(os.fsencode(s), rel)
        assert not same_inode(a, b), rel
        if has_data(a):
            assert fully_shared(a, b), rel

    # An independent witness: filefrag flags every data extent of the clone 'shared'.
    out = subprocess.run(['filefrag', '-v', str(s / 'random.bin')], capture_output=True, text=True,
                         check=True).stdout
    extents = [line for line in out.splitlines() if line.strip()[:1].isdigit() and ':' in line]
    assert extents and all('shared' in line for line in extents), out

    # The live source changes; the snapshot does not (own inodes, copy on write).
    before = tree_state(s)
    os.chmod(src / 'plain.txt', 0o600)
    os.chown(src / 'random.bin', 7, 7)
    with open(src / 'random.bin', 'r+b') as f:
        f.write(b'overwritten in place')
    os.setxattr(src / 'xattr.txt', 'user.text', b'changed')
    assert tree_state(s) == before


def test_auto_on_btrfs_plain_dir_is_reflink(btrfs, workdir, clock):
    work = workdir(btrfs)
    src = src_dir(work)
    (src / 'f').write_bytes(b'x' * 5000)
    res = snap(src, work / 'snaps', clock)
    assert res['method'] == 'reflink' and 'reflink' in res['reason']


@pytest.mark.parametrize('change', ['content-same-size', 'size', 'mtime', 'mode', 'owner', 'group',
                                    'xattr', 'acl', 'type'])
def test_hardlink_links_only_unchanged(change, ext4, workdir, clock):
    """Linked from the previous snapshot when equal in type, size, mtime_ns, mode, uid, gid,
    xattrs; otherwise a new copy.  Old snapshots never change."""
    work = workdir(ext4)
    src = src_dir(work)
    for name in ('target', 'other'):
        (src / name).write_bytes(b'0123456789')
        os.utime(src / name, ns=(1, 1_600_000_000_123_456_789))
    dest = work / 'snaps'
    s1 = check_published(dest, snap(src, dest, clock, method='hardlink'))
    before = tree_state(s1)
    t = src / 'target'
    st = os.stat(t)
    if change == 'content-same-size':
        # rsync --link-dest without --checksum cannot see this either: same size and mtime.
        t.write_bytes(b'abcdefghij')
        os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == 'size':
        t.write_bytes(b'0123456789+')
        os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == 'mtime':
        os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    elif change == 'mode':
        os.chmod(t, 0o600)
    elif change == 'owner':
        os.chown(t, 1234, -1)
    elif change == 'group':
        os.chown(t, -1, 5678)
    elif change == 'xattr':
        os.setxattr(t, 'user.new', b'1')
    elif change == 'acl':
        subprocess.run(['setfacl', '-m', 'u:1234:r', str(t)], check=True)
    elif change == 'type':
        t.unlink()
        os.symlink('other', t)
    res = snap(src, dest, clock, method='hardlink')
    s2 = check_published(dest, res)
    assert same_inode(s1 / 'other', s2 / 'other')
    if change == 'content-same-size':
        assert same_inode(s1 / 'target', s2 / 'target')
        assert res['stats']['linked'] == 2
    else:
        assert not same_inode(s1 / 'target', s2 / 'target')
        assert_same_tree(src, s2)
        assert res['stats']['linked'] == 1
        if change != 'type':
            assert res['stats']['copied'] == 1, res['stats']      # ext4: copy, not clone
    assert tree_state(s1) == before


def test_hardlink_changed_file_is_cloned_where_possible(xfs, workdir, clock):
    """hardlink method: unchanged files linked; changed ones cloned from src (XFS can)."""
    work = workdir(xfs)
    src = src_dir(work)
    for i in range(5):
        (src / ('f%d' % i)).write_bytes(os.urandom(20000))
    dest = work / 'snaps'
    first = snap(src, dest, clock, method='hardlink')
    assert first['stats']['linked'] == 0
    assert first['stats']['reflinked'] == 5, 'first snapshot: cloned from src where possible'
    s1 = check_published(dest, first)
    (src / 'f0').write_bytes(os.urandom(20000))
    res = snap(src, dest, clock, method='hardlink')
    s2 = check_published(dest, res)
    assert res['stats']['linked'] == 4 and res['stats']['reflinked'] == 1, res['stats']
    assert fully_shared(src / 'f0', s2 / 'f0')
    assert not same_inode(s1 / 'f0', s2 / 'f0')
    assert_same_tree(src, s2)


def test_hardlink_chmod_src_makes_new_copy_old_unchanged(fs, workdir, clock):
    work = workdir(fs)
    src = src_dir(work)
    (src / 'f').write_bytes(b'data')
    os.chmod(src / 'f', 0o644)
    dest = work / 'snaps'
    s1 = check_published(dest, snap(src, dest, clock, method='hardlink'))
    os.chmod(src / 'f', 0o600)
    s2 = check_published(dest, snap(src, dest, clock, method='hardlink'))
    assert stat.S_IMODE(os.stat(s1 / 'f').st_mode) == 0o644
    assert stat.S_IMODE(os.stat(s2 / 'f').st_mode) == 0o600
    assert not same_inode(s1 / 'f', s2 / 'f')


def test_reflink_chmod_src_old_snapshot_unchanged(xfs, workdir, clock):
    work = workdir(xfs)
    src = src_dir(work)
    (src / 'f').write_bytes(b'data' * 5000)
    os.chmod(src / 'f', 0o644)
    dest = work / 'snaps'
    s1 = check_published(dest, snap(src, dest, clock, method='reflink'))
    os.chmod(src / 'f', 0o600)
    with open(src / 'f', 'r+b') as f:
        f.write(b'EDIT')
    s2 = check_published(dest, snap(src, dest, clock, method='reflink'))
    assert stat.S_IMODE(os.stat(s1 / 'f').st_mode) == 0o644
    assert (s1 / 'f').read_bytes() == b'data' * 5000
    assert stat.S_IMODE(os.stat(s2 / 'f').st_mode) == 0o600
    assert (s2 / 'f').read_bytes().startswith(b'EDIT')


# ---------------------------------------------------------------- method choice

def test_auto_across_filesystems_falls_back_to_hardlink(xfs, xfs2, workdir, clock):
    src = src_dir(workdir(xfs))
    (src / 'f').write_bytes(b'x' * 5000)
    dest = workdir(xfs2) / 'snaps'
    res = snap(src, dest, clock)
    assert res['method'] == 'hardlink', res
    check_published(dest, res)
    assert_same_tree(src, dest / 'latest')


@pytest.mark.parametrize('dest_missing', [True, False], ids=['new-dest', 'existing-dest'])
def test_forced_reflink_on_ext4_fails_and_writes_nothing(ext4, workdir, clock, dest_missing):
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'f').write_bytes(b'x' * 5000)
    dest = work / 'snaps'
    if not dest_missing:
        check_published(dest, snap(src, dest, clock, method='copy'))
    before = sorted(os.listdir(dest)) if dest.exists() else None
    with pytest.raises(NotSupported, match='filesystem does not support reflink'):
        snap(src, dest, clock, method='reflink', dry_run=True)      # check mode says so too
    with pytest.raises(NotSupported, match='filesystem does not support reflink'):
        snap(src, dest, clock, method='reflink')
    if dest_missing:
        assert not dest.exists(), 'a failed run created the snapshot root: %s' % os.listdir(dest)
    else:
        assert sorted(os.listdir(dest)) == before


def test_forced_reflink_across_filesystems_fails(xfs, xfs2, workdir, clock):
    src = src_dir(workdir(xfs))
    (src / 'f').write_bytes(b'x' * 5000)
    dest = workdir(xfs2) / 'snaps'
    with pytest.raises(CrossDevice, match='different filesystems'):
        snap(src, dest, clock, method='reflink')
    assert not dest.exists()


def test_forced_btrfs_needs_subvolume(btrfs, workdir, clock):
    work = workdir(btrfs)
    src = src_dir(work)       # a plain directory
    with pytest.raises(NotSupported, match='not the root of a btrfs subvolume'):
        snap(src, work / 'snaps', clock, method='btrfs')
    assert not (work / 'snaps').exists()


def test_forced_btrfs_needs_same_filesystem(btrfs, ext4, workdir, clock):
    src = src_dir(workdir(btrfs), subvolume=True)
    dest = workdir(ext4) / 'snaps'
    with pytest.raises(NotSupported, match='not on the same btrfs filesystem'):
        snap(src, dest, clock, method='btrfs')
    assert not dest.exists()
    res = snap(src, dest, clock)     # auto: never fails for lack of btrfs or reflink
    assert res['method'] == 'hardlink'


# ---------------------------------------------------------------- publishing, naming, leftovers

def test_names_latest_and_same_second_suffix(ext4, workdir):
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'f').write_text('x')
    dest = work / 'snaps'
    now = datetime.datetime(2026, 11, 21, 10, 30, 0, 500000, tzinfo=UTC)
    names = []
    for _round in range(3):
        res = run(Request(str(src), str(dest)), now=now)
        names.append(os.path.basename(res['snapshot']))
        assert latest(dest) == names[-1]
        assert os.path.islink(dest / 'latest')
    assert names == ['2026-11-21T103000Z', '2026-11-21T103000Z-2', '2026-11-21T103000Z-3']
    assert entries(dest) == sorted(names + ['latest'])
    # Each snapshot has a record next to it (not inside: the snapshot is src's content only).
    assert records(dest) == sorted(n + '.json' for n in names)
    record = json.loads((dest / (names[0] + '.json')).read_text())
    assert record['method'] == 'hardlink' and record['stats']['files'] == 1
    # Real clock: a UTC stamp.
    res = snap(src, dest)
    assert NAME_RE.match(os.path.basename(res['snapshot']))


def test_dest_root_created_0700(ext4, workdir, clock):
    work = workdir(ext4)
    src = src_dir(work)
    os.chmod(src, 0o755)
    old = os.umask(0)
    try:
        res = snap(src, work / 'snaps', clock)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(work / 'snaps').st_mode) == 0o700
    # The snapshot itself keeps src's mode (root of the copy).
    assert stat.S_IMODE(os.stat(res['snapshot']).st_mode) == 0o755


def test_stale_partial_and_deleting_removed_never_linked(ext4, workdir, clock):
    """Leftovers of killed runs are removed by the next run, reported, never counted as
    snapshots and never linked against (even when newer than every real snapshot)."""
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'f').write_bytes(b'real')
    os.utime(src / 'f', ns=(1, 1_600_000_000_000_000_001))
    dest = work / 'snaps'
    s1 = check_published(dest, snap(src, dest, clock, method='hardlink'))
    # A newer partial holding a file that looks exactly like src's (same size, mtime, mode).
    partial = dest / '2030-01-01T000000Z.partial'
    partial.mkdir()
    (partial / 'f').write_bytes(b'FAKE')
    os.utime(partial / 'f', ns=(1, 1_600_000_000_000_000_001))
    deleting = dest / '2020-01-01T000000Z.deleting'
    (deleting / 'sub').mkdir(parents=True)
    (deleting / 'sub' / 'x').write_bytes(b'x')
    foreign = dest / 'notes.partial'          # not ours: left alone
    foreign.write_text('mine')

    s1_inode = os.stat(s1 / 'f').st_ino
    res = snap(src, dest, clock, method='hardlink', keep={'last': 1})
    s2 = check_published(dest, res)
    assert sorted(res['leftovers_removed']) == sorted([str(partial), str(deleting)])
    assert not partial.exists() and not deleting.exists() and foreign.exists()
    assert res['stats']['linked'] == 1
    assert os.stat(s2 / 'f').st_ino == s1_inode, 'linked against the real previous snapshot'
    assert (s2 / 'f').read_bytes() == b'real'
    assert res['kept'] == [str(s2)] and res['pruned'] == [str(s1)]


def test_leftovers_removed_by_prune_only_run(ext4, workdir, clock):
    work = workdir(ext4)
    src = src_dir(work)
    dest = work / 'snaps'
    check_published(dest, snap(src, dest, clock))
    (dest / '2030-01-01T000000Z.partial').mkdir()
    res = snap(src, dest, clock, state='pruned')
    assert res['leftovers_removed'] == [str(dest / '2030-01-01T000000Z.partial')]
    assert res['changed'] is True and res['snapshot'] is None


# ---------------------------------------------------------------- retention

def test_five_snapshots_keep_last_three(fs, workdir, clock):
    work = workdir(fs)
    src = src_dir(work)
    (src / 'counter').write_text('0')
    dest = work / 'snaps'
    made, states = [], {}
    for i in range(5):
        (src / 'counter').write_text(str(i))
        (src / ('file-%d' % i)).write_bytes(os.urandom(3000))
        if i:
            os.chmod(src / ('file-%d' % (i - 1)), 0o600)
        keep = {} if i < 4 else {'last': 3}
        res = snap(src, dest, clock, keep=keep)
        made.append(res['snapshot'])
        states[res['snapshot']] = tree_state(src)
        assert res['pruned'] == ([] if i < 4 else made[:2])
    check_published(dest, res)
    assert res['kept'] == made[2:]
    assert snapshots(dest) == [os.path.basename(p) for p in made[2:]]
    assert records(dest) == sorted(os.path.basename(p) + '.json' for p in made[2:]), 'records of pruned snapshots remain'
    assert latest(dest) == os.path.basename(made[-1])
    for path in made[2:]:
        assert tree_state(path) == states[path], 'snapshot %s is not the src of its time' % path


def test_keep_every_run_prunes_after_publish(ext4, workdir, clock):
    work = workdir(ext4)
    src = src_dir(work)
    dest = work / 'snaps'
    made = []
    for i in range(5):
        (src / 'f').write_text(str(i))
        res = snap(src, dest, clock, keep={'last': 3})
        made.append(res['snapshot'])
        assert res['pruned'] == (made[i - 3:i - 2] if i >= 3 else [])
        assert res['kept'] == made[-3:]
    assert snapshots(dest) == [os.path.basename(p) for p in made[-3:]]


def test_all_zero_policy_is_refused(ext4, workdir, clock):
    """keep with every count 0 would delete all but the newest: refused before anything is
    written (restic and borg refuse it too); the smallest real policy keeps the newest."""
    work = workdir(ext4)
    src = src_dir(work)
    dest = work / 'snaps'
    for _round in range(2):
        snap(src, dest, clock)
    before = snapshots(dest)
    with pytest.raises(BadInput, match='every count is 0'):
        snap(src, dest, clock, keep={'last': 0, 'daily': 0})
    assert snapshots(dest) == before
    res = snap(src, dest, clock, keep={'last': 1, 'daily': 0})
    assert res['kept'] == [res['snapshot']]
    assert len(res['pruned']) == 2
    assert snapshots(dest) == [os.path.basename(res['snapshot'])]


def test_state_pruned_only_prunes(ext4, workdir, clock):
    work = workdir(ext4)
    src = src_dir(work)
    dest = work / 'snaps'
    made = [snap(src, dest, clock)['snapshot'] for _round in range(4)]
    res = snap(src, dest, clock, keep={'last': 2}, state='pruned')
    assert res['pruned'] == made[:2] and res['kept'] == made[2:]
    assert res['snapshot'] is None
    assert latest(dest) == os.path.basename(made[-1])
    res = snap(src, dest, clock, keep={'last': 2}, state='pruned')
    assert res['changed'] is False and res['pruned'] == []


def test_prune_removes_btrfs_readonly_snapshots(btrfs, workdir, clock):
    work = workdir(btrfs)
    src = src_dir(work, subvolume=True)
    dest = work / 'snaps'
    made = []
    for i in range(3):
        (src / 'f').write_text(str(i))
        made.append(snap(src, dest, clock, keep={'last': 1})['snapshot'])
    assert snapshots(dest) == [os.path.basename(made[-1])]
    assert (Path(made[-1]) / 'f').read_text() == '2'


# ---------------------------------------------------------------- check mode

def test_check_mode_new_dest_writes_nothing(xfs, workdir, clock):
    work = workdir(xfs)
    src = src_dir(work)
    make_hostile_tree(src)
    dest = work / 'snaps'
    plan = snap(src, dest, clock, dry_run=True)
    assert not dest.exists()
    assert plan['changed'] is True and plan['method'] == 'reflink'
    assert plan['snapshot'].startswith(str(dest) + '/')
    real = snap(src, dest, clock)
    for key in ('files', 'dirs', 'symlinks', 'specials', 'hardlinks', 'reflinked', 'copied', 'linked'):
        assert plan['stats'][key] == real['stats'][key], key


def test_check_mode_existing_dest_plans_link_and_prune(ext4, workdir, clock):
    work = workdir(ext4)
    src = src_dir(work)
    for i in range(10):
        (src / ('f%d' % i)).write_bytes(b'%d' % i)
    dest = work / 'snaps'
    made = [snap(src, dest, clock, method='hardlink')['snapshot'] for _round in range(3)]
    (src / 'f0').write_bytes(b'changed')
    before = entries(dest)
    plan = snap(src, dest, clock, method='hardlink', keep={'last': 3}, dry_run=True)
    assert entries(dest) == before, 'check mode wrote something'
    assert plan['method'] == 'hardlink'
    assert plan['stats']['linked'] == 9
    # The planned snapshot counts: keeping 3 with 3 existing prunes the oldest.
    real = snap(src, dest, Clock(start=clock.t - clock.step), method='hardlink', keep={'last': 3})
    assert real['pruned'] == [made[0]]
    assert plan['snapshot'] == real['snapshot']
    assert plan['pruned'] == real['pruned'], 'check mode must plan the same pruning as the real run'
    assert plan['kept'] == real['kept']


def test_check_mode_predicts_copy_not_reflink_on_ext4(ext4, workdir, clock):
    """The plan's stats say what the run will do: on ext4 a changed file is copied."""
    work = workdir(ext4)
    src = src_dir(work)
    for i in range(3):
        (src / ('f%d' % i)).write_bytes(b'%d' % i)
    dest = work / 'snaps'
    snap(src, dest, clock, method='hardlink')
    (src / 'f0').write_bytes(b'changed')
    plan = snap(src, dest, clock, method='hardlink', dry_run=True)
    real = snap(src, dest, clock, method='hardlink')
    assert real['stats']['copied'] == 1 and real['stats']['reflinked'] == 0
    assert (plan['stats']['copied'], plan['stats']['reflinked']) == (1, 0), plan['stats']


# ---------------------------------------------------------------- safe traversal and bad input

def test_dest_inside_src_refused_unless_excluded(ext4, workdir, clock):
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'f').write_text('x')
    with pytest.raises(BadInput, match='inside src'):
        Request(str(src), str(src / 'snaps'))
    with pytest.raises(BadInput, match='inside src'):
        Request(str(src), str(src / 'a' / 'snaps'), exclude=['*.tmp'])
    assert not (src / 'snaps').exists()
    res = snap(src, src / 'snaps', clock, exclude=['/snaps'])
    s = check_published(src / 'snaps', res)
    assert not (s / 'snaps').exists() and (s / 'f').exists()
    res = snap(src, src / 'snaps', clock, exclude=['/snaps'])
    assert not (Path(res['snapshot']) / 'snaps').exists()


def test_src_inside_dest_refused(ext4, workdir):
    work = workdir(ext4)
    (work / 'snaps' / 'data').mkdir(parents=True)
    with pytest.raises(BadInput, match='inside the snapshot root'):
        Request(str(work / 'snaps' / 'data'), str(work / 'snaps'))
    with pytest.raises(BadInput, match='same directory'):
        Request(str(work / 'snaps'), str(work / 'snaps') + '/')


def test_src_inside_dest_through_dotdot_refused(ext4, workdir):
    """dest spelled with '..' (Ansible's type=path does not normalize it) still names the
    directory that holds src."""
    work = workdir(ext4)
    (work / 'src').mkdir()
    (work / 'other').mkdir()
    with pytest.raises(BadInput):
        Request(str(work / 'src'), str(work / 'other' / '..'))
    with pytest.raises(BadInput):
        Request(str(work / 'src'), str(work / 'src' / 'sub' / '..' / '..'))


def test_symlinked_dest_inside_src_refused(ext4, workdir):
    """dest given through a symlink that resolves inside src."""
    work = workdir(ext4)
    src = src_dir(work)
    os.symlink(src, work / 'alias')
    with pytest.raises(BadInput, match='inside src'):
        Request(str(src), str(work / 'alias' / 'snaps'))


@pytest.mark.parametrize('case', ['missing', 'file', 'relative'])
def test_bad_src(case, ext4, workdir):
    work = workdir(ext4)
    src = {'missing': str(work / 'nope'), 'file': str(work / 'file'), 'relative': 'src'}[case]
    (work / 'file').write_text('x')
    msg = {'missing': 'no such file or directory', 'file': 'not a directory', 'relative': 'absolute'}[case]
    with pytest.raises(LinkError, match=msg):
        run(Request(src, str(work / 'snaps')))
    assert not (work / 'snaps').exists()


@pytest.mark.parametrize('kw,msg', [
    ({'method': 'rsync'}, 'method must be one of'),
    ({'keep': {'lats': 3}}, "did you mean 'last'"),
    ({'keep': {'last': -1}}, 'negative'),
    ({'exclude': ['/']}, 'matches nothing'),
    ({'lock_timeout': -1}, 'lock_timeout'),
])
def test_bad_request(kw, msg, ext4, workdir):
    work = workdir(ext4)
    src = src_dir(work)
    with pytest.raises(BadInput, match=msg):
        Request(str(src), str(work / 'snaps'), **kw)


def test_one_file_system(ext4, xfs2, workdir, clock):
    """A filesystem mounted below src: its mount point is kept, empty (rsync -x); with
    one_file_system false its content is copied."""
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'f').write_text('x')
    (src / 'mnt').mkdir()
    other = workdir(xfs2)
    (other / 'on-other-fs').write_text('other')
    subprocess.run(['mount', '--bind', str(other), str(src / 'mnt')], check=True)
    try:
        assert os.stat(src / 'mnt').st_dev != os.stat(src).st_dev
        for method in ('hardlink', 'copy'):
            dest = work / ('snaps-' + method)
            s = check_published(dest, snap(src, dest, clock, method=method))
            assert (s / 'f').exists()
            assert (s / 'mnt').is_dir() and os.listdir(s / 'mnt') == []
        dest = work / 'snaps-all'
        s = check_published(dest, snap(src, dest, clock, method='copy', one_file_system=False))
        assert (s / 'mnt' / 'on-other-fs').read_text() == 'other'
    finally:
        loopfs.unmount(src / 'mnt')


# ---------------------------------------------------------------- corner cases

def test_auto_reflink_with_nodatacow_file(btrfs, workdir, clock):
    """auto never fails for lack of reflink: on btrfs a NOCOW file (chattr +C, as for VM images
    and databases) cannot be cloned (EINVAL); it is copied, the rest is cloned."""
    work = workdir(btrfs)
    src = src_dir(work)                      # a plain directory: auto picks reflink
    (src / 'a-normal').write_bytes(os.urandom(50000))
    nocow = src / 'b-nocow.img'
    nocow.touch()
    subprocess.run(['chattr', '+C', str(nocow)], check=True)
    nocow.write_bytes(os.urandom(50000))
    dest = work / 'snaps'
    res = snap(src, dest, clock)
    assert res['method'] == 'reflink'
    s = check_published(dest, res)
    assert_same_tree(src, s)
    assert res['stats']['reflinked'] == 1 and res['stats']['copied'] == 1, res['stats']
    assert fully_shared(src / 'a-normal', s / 'a-normal')


def test_hardlink_method_after_btrfs_snapshots(btrfs, workdir, clock):
    """Switching a root from btrfs snapshots to hard links: the previous snapshot is another
    subvolume, so linking from it fails with EXDEV; the run must copy (or clone) instead."""
    work = workdir(btrfs)
    src = src_dir(work, subvolume=True)
    (src / 'f').write_bytes(b'data' * 1000)
    dest = work / 'snaps'
    assert snap(src, dest, clock)['method'] == 'btrfs'
    res = snap(src, dest, clock, method='hardlink')
    s = check_published(dest, res)
    assert_same_tree(src, s)


def test_stale_latest_tmp_symlink_removed(ext4, workdir, clock):
    """A run killed between creating the temporary latest symlink and renaming it leaves
    .latest.fslinks-PID.tmp; the next run cleans it like any other leftover."""
    work = workdir(ext4)
    src = src_dir(work)
    dest = work / 'snaps'
    first = snap(src, dest, clock)
    os.symlink(os.path.basename(first['snapshot']), dest / '.latest.fslinks-999999.tmp')
    snap(src, dest, clock)
    assert leftovers(dest) == [], os.listdir(dest)


@pytest.mark.xfail(strict=True, reason='not fixed yet: the hardlink method links each unchanged file to the '
                   'previous snapshot on its own, as rsync --link-dest does, so two src files that were one '
                   'inode in the previous snapshot and have since been split become one inode again')
def test_hardlink_keeps_src_link_structure(ext4, workdir, clock):
    """Two names of one inode in the previous snapshot whose src inodes have since been split
    (same content and metadata) must not become one inode again in the new snapshot: the
    snapshot's hard links are src's hard links (rsync -H), not the previous snapshot's."""
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'a').write_bytes(b'same')
    os.link(src / 'a', src / 'b')
    dest = work / 'snaps'
    s1 = check_published(dest, snap(src, dest, clock, method='hardlink'))
    assert same_inode(s1 / 'a', s1 / 'b')
    # Split b off: a new inode with the same content and metadata (cp -p; mv).
    subprocess.run(['cp', '-a', str(src / 'b'), str(src / 'b.new')], check=True)
    os.rename(src / 'b.new', src / 'b')
    assert not same_inode(src / 'a', src / 'b')
    s2 = check_published(dest, snap(src, dest, clock, method='hardlink'))
    assert not same_inode(s2 / 'a', s2 / 'b'), 'the snapshot joined two separate src files'
    assert_same_tree(src, s2)


def test_hardlink_too_many_links_falls_back_to_copy(ext4, workdir, clock):
    """ext4 allows 65000 links per inode: when the previous snapshot's file has them all, the
    new snapshot gets a copy (EMLINK) instead of failing."""
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'f').write_bytes(b'popular')
    (src / 'g').write_bytes(b'other')
    dest = work / 'snaps'
    s1 = check_published(dest, snap(src, dest, clock, method='hardlink'))
    side = work / 'links'
    side.mkdir()
    fd = os.open(side, os.O_RDONLY | os.O_DIRECTORY)
    try:
        target = os.fsencode(s1 / 'f')
        i = 0
        while True:
            try:
                os.link(target, b'%d' % i, dst_dir_fd=fd)
            except OSError as exc:
                assert exc.errno == errno.EMLINK
                break
            i += 1
    finally:
        os.close(fd)
    res = snap(src, dest, clock, method='hardlink')
    s2 = check_published(dest, res)
    assert res['stats']['linked'] == 1 and res['stats']['copied'] == 1, res['stats']
    assert res['stats']['not_linked'] == 1 and 'too many links' in res['warnings'][0]
    assert not same_inode(s1 / 'f', s2 / 'f') and same_inode(s1 / 'g', s2 / 'g')
    assert_same_tree(src, s2)
    remove_tree(side)


def test_hardlink_to_an_immutable_previous_snapshot_stores_anew(fs, workdir, clock):
    """Old snapshots made immutable (chattr +i, or +a: a common guard against ransomware)
    refuse a link even to root (EPERM): those files are stored anew, counted and warned about.
    They were skipped before: the snapshot came out without them."""
    work = workdir(fs)
    src = src_dir(work)
    for name in ('a', 'b', 'c', 'd'):
        (src / name).write_bytes(name.encode() * 5000)
    dest = work / 'snaps'
    s1 = check_published(dest, snap(src, dest, clock, method='hardlink'))
    subprocess.run(['chattr', '+i', str(s1 / 'a'), str(s1 / 'b')], check=True)
    subprocess.run(['chattr', '+a', str(s1 / 'c')], check=True)
    try:
        res = snap(src, dest, clock, method='hardlink')
        s2 = check_published(dest, res)
        assert res['stats']['not_linked'] == 3 and res['stats']['linked'] == 1, res['stats']
        assert res['stats']['skipped'] == 0 and res.get('skipped', []) == []
        assert_same_tree(src, s2)
        assert same_inode(s1 / 'd', s2 / 'd') and not same_inode(s1 / 'a', s2 / 'a')
        assert len(res['warnings']) == 1 and res['warnings'][0].startswith(
            '3 unchanged files could not be hard-linked to the previous snapshot'), res['warnings']
    finally:
        subprocess.run(['chattr', '-i', '-a', str(s1 / 'a'), str(s1 / 'b'), str(s1 / 'c')], check=True)


def test_btrfs_dest_inside_src_excluded(btrfs, workdir, clock):
    """btrfs method with the snapshot root inside the src subvolume (excluded): earlier
    snapshots show up as (nested-subvolume) directories in the new snapshot; the exclude
    removes them."""
    work = workdir(btrfs)
    src = src_dir(work, subvolume=True)
    (src / 'f').write_text('x')
    dest = src / '.snapshots'
    for _round in range(3):
        res = snap(src, dest, clock, exclude=['/.snapshots/'], keep={'last': 2})
        assert res['method'] == 'btrfs'
        s = check_published(dest, res)
        assert is_readonly_subvolume(s)
        assert not (s / '.snapshots').exists() and (s / 'f').read_text() == 'x'
    assert len(snapshots(dest)) == 2


def test_check_mode_btrfs_new_root(btrfs, workdir, clock):
    work = workdir(btrfs)
    src = src_dir(work, subvolume=True)
    plan = snap(src, work / 'snaps', clock, dry_run=True)
    assert plan['method'] == 'btrfs' and plan['changed'] is True
    assert not (work / 'snaps').exists()


def test_auto_without_o_tmpfile_never_fails(ext4, workdir, clock, monkeypatch):
    """Some filesystems (vfat, CIFS, older NFS and FUSE) have no O_TMPFILE, so the reflink
    probe cannot run.  auto must then not assume reflink: on ext4 it is hardlink, and the run
    succeeds."""
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'f').write_bytes(b'x' * 5000)
    real_open = os.open

    def no_tmpfile(path, flags, *args, **kwargs):
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(errno.EOPNOTSUPP, 'O_TMPFILE not supported here')
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, 'open', no_tmpfile)
    dest = work / 'snaps'
    res = snap(src, dest, clock)
    monkeypatch.undo()
    assert res['method'] == 'hardlink'
    assert_same_tree(src, check_published(dest, res))


def _walk_fd(dfd, rel=b''):
    """(relpath, lstat) of everything below an open directory, by fds (no PATH_MAX limit)."""
    for entry in os.scandir(dfd):
        name = os.fsencode(entry.name)
        st = entry.stat(follow_symlinks=False)
        yield rel + b'/' + name, st
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                yield from _walk_fd(fd, rel + b'/' + name)
            finally:
                os.close(fd)


@pytest.mark.parametrize('links', [False, True], ids=['files', 'inner-hardlinks'])
@pytest.mark.parametrize('method', ['hardlink', 'copy'])
def test_paths_longer_than_path_max(method, links, ext4, workdir, clock):
    """The walk uses directory fds, so a tree deeper than PATH_MAX (4096 bytes) snapshots fine,
    also with hard links inside src between names at the bottom."""
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'top').write_bytes(b'top')
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(30):                        # 30 * 201 bytes > 4096
            name = (b'%02d' % i) * 100
            os.mkdir(name, dir_fd=fd)
            new = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
        out = os.open(b'a', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, b'deep data')
        os.close(out)
        if links:
            os.link(b'a', b'b', src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    dest = work / 'snaps'
    for _round in range(2):
        res = snap(src, dest, clock, method=method)
        s = check_published(dest, res)
    sfd, dfd = os.open(src, os.O_RDONLY), os.open(s, os.O_RDONLY)
    try:
        a = dict(_walk_fd(sfd))
        b = dict(_walk_fd(dfd))
    finally:
        os.close(sfd)
        os.close(dfd)
    assert sorted(a) == sorted(b)
    deepest = max(a, key=len)
    assert len(deepest) > 4096
    for rel in a:
        assert (a[rel].st_mode, a[rel].st_size, a[rel].st_mtime_ns) == (b[rel].st_mode, b[rel].st_size, b[rel].st_mtime_ns), rel
    if links:
        pa, pb = deepest[:-1] + b'a', deepest[:-1] + b'b'
        assert b[pa].st_ino == b[pb].st_ino and b[pa].st_nlink >= 2


# ---------------------------------------------------------------- the oracle itself

PERTURB = {
    'dir-mtime-ns': lambda c: os.utime(c / 'deep', ns=(0, os.stat(c / 'deep').st_mtime_ns + 1)),
    'file-mtime-ns': lambda c: os.utime(c / 'plain.txt', ns=(0, os.stat(c / 'plain.txt').st_mtime_ns + 1)),
    'symlink-owner': lambda c: os.lchown(c / 'links' / 'relative', 42, 42),
    'symlink-xattr': lambda c: os.setxattr(c / 'links' / 'relative', 'trusted.on-symlink', b'x',
                                           follow_symlinks=False),
    'acl': lambda c: subprocess.run(['setfacl', '-m', 'u:999:r', str(c / 'acl.txt')], check=True),
    'trusted-xattr': lambda c: os.removexattr(c / 'xattr.txt', 'trusted.secret'),
    'capability': lambda c: os.removexattr(c / 'capable', 'security.capability'),
    'same-size-content': lambda c: _rewrite_same_meta(c / 'plain.txt', b'HELLO WORLD\n'),
    'broken-hardlink': lambda c: _split_link(c / 'hard' / 'b'),
    'rdev': lambda c: (os.unlink(c / 'dev' / 'null-like'),
                       os.mknod(c / 'dev' / 'null-like', stat.S_IFCHR | 0o666, os.makedev(1, 5))),
    'setuid-bit': lambda c: os.chmod(c / 'setuid', 0o755),
}


def _rewrite_same_meta(p, data):
    st = os.stat(p)
    p.write_bytes(data)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _split_link(p):
    subprocess.run(['cp', '-a', str(p), str(p) + '.new'], check=True)
    os.rename(str(p) + '.new', p)


@pytest.mark.parametrize('what', sorted(PERTURB))
def test_oracle_catches(what, ext4, workdir):
    """The rsync oracle is not vacuous: each kind of difference makes it complain."""
    work = workdir(ext4)
    src = src_dir(work)
    make_hostile_tree(src)
    copy = work / 'copy'
    copy_reference(src, copy)
    assert_same_tree(src, copy)
    parent_times = {p: os.stat(p).st_mtime_ns for p in (copy, copy / 'hard', copy / 'dev')}
    PERTURB[what](copy)
    for p, t in parent_times.items():           # only the perturbed entry differs
        os.utime(p, ns=(0, t))
    with pytest.raises(AssertionError):
        assert_same_tree(src, copy)


def test_prune_only_on_missing_root_creates_nothing(ext4, workdir, clock):
    work = workdir(ext4)
    src = src_dir(work)
    res = snap(src, work / 'snaps', clock, state='pruned', keep={'last': 1})
    assert res['changed'] is False and res['pruned'] == [] and res['kept'] == []
    assert not (work / 'snaps').exists(), 'state=pruned created the snapshot root'


def test_clock_went_backwards(ext4, workdir):
    """A run with a clock behind the newest snapshot still makes the newest snapshot (latest),
    named after it with the next sequence number."""
    work = workdir(ext4)
    src = src_dir(work)
    dest = work / 'snaps'
    first = snap(src, dest, Clock(start=datetime.datetime(2026, 11, 21, 10, 30, tzinfo=UTC)))
    res = snap(src, dest, Clock(start=datetime.datetime(2026, 11, 21, 9, 0, tzinfo=UTC)), keep={'last': 1})
    assert os.path.basename(res['snapshot']) == '2026-11-21T103000Z-2'
    assert latest(dest) == '2026-11-21T103000Z-2'
    assert res['pruned'] == [first['snapshot']]


def test_future_snapshot_does_not_stop_retention(ext4, workdir, clock):
    """One snapshot made while the clock was years ahead: later snapshots are named after it
    (so they are the newest), and retention must still bound their number; otherwise every new
    snapshot is 'in the future', kept by every policy, until the disk is full."""
    work = workdir(ext4)
    src = src_dir(work)
    dest = work / 'snaps'
    snap(src, dest, Clock(start=datetime.datetime(2030, 1, 1, tzinfo=UTC)))
    for _round in range(5):
        res = snap(src, dest, clock, keep={'last': 2})
    assert latest(dest) == os.path.basename(res['snapshot'])
    assert len(snapshots(dest)) <= 3, snapshots(dest)


def test_hardlink_sees_xattrs_of_files_moved_in(ext4, workdir):
    """Files moved into place by renaming their directory keep their old ctime: two copies of a
    directory (same content, mtimes, modes, owners) that differ only in an xattr (an ACL, a
    label) swapped by mv must not be linked to the previous snapshot's files with the other
    copy's xattrs."""
    work = workdir(ext4)
    src = src_dir(work)
    for d, v in (('a', b'1'), ('b', b'2')):
        (src / d).mkdir()
        (src / d / 'f').write_bytes(b'same')
        os.utime(src / d / 'f', ns=(1, 1_600_000_000_000_000_000))
        os.setxattr(src / d / 'f', 'user.v', v)
    time.sleep(1.05 - time.time() % 1)              # the files are from an earlier second
    dest = work / 'snaps'
    run(Request(str(src), str(dest), method='hardlink'))         # the real clock
    os.rename(src / 'a', src / 'tmp')
    os.rename(src / 'b', src / 'a')
    os.rename(src / 'tmp', src / 'b')
    res = run(Request(str(src), str(dest), method='hardlink'))
    assert os.getxattr(Path(res['snapshot']) / 'a' / 'f', 'user.v') == b'2'
    assert_same_tree(src, res['snapshot'])


@pytest.mark.parametrize('umask', [0o077, 0o027, 0o000], ids=['077', '027', '000'])
def test_modes_whatever_the_umask(umask, ext4, workdir, clock):
    """The snapshot has src's modes whatever the process umask is at run time (a daemon or CLI
    may set a strict umask after importing the engine)."""
    work = workdir(ext4)
    src = src_dir(work)
    for mode in (0o644, 0o664, 0o755, 0o600, 0o666, 0o777):
        p = src / ('m%o' % mode)
        p.write_bytes(b'x')
        os.chmod(p, mode)
    (src / 'd').mkdir()
    os.chmod(src / 'd', 0o775)
    old = os.umask(umask)
    try:
        res = snap(src, work / 'snaps', clock, method='copy')
    finally:
        os.umask(old)
    assert_same_tree(src, res['snapshot'])


@pytest.mark.parametrize('method', ['copy', 'hardlink'])
def test_default_acl_on_snapshot_root_not_inherited(method, ext4, workdir, clock):
    """An admin's default ACL on the snapshot root (e.g. to let a backup user read) would be
    inherited by everything created below it; the snapshot must still have src's ACLs (none)."""
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'f').write_bytes(b'x')
    os.chmod(src / 'f', 0o640)
    (src / 'd').mkdir()
    (src / 'd' / 'g').write_bytes(b'y')
    dest = work / 'snaps'
    dest.mkdir(mode=0o700)
    subprocess.run(['setfacl', '-d', '-m', 'u:1234:rwx,g::rwx,o::rwx', str(dest)], check=True)
    res = snap(src, dest, clock, method=method)
    assert_same_tree(src, res['snapshot'])


@pytest.mark.parametrize('method', ['copy', 'hardlink'])
def test_setgid_snapshot_root_group_not_inherited(method, ext4, workdir, clock):
    """A setgid snapshot root (a shared group for backups) makes everything created below it
    inherit that group; the snapshot must still have src's owners."""
    work = workdir(ext4)
    src = src_dir(work)
    (src / 'f').write_bytes(b'x')
    (src / 'd').mkdir()
    (src / 'd' / 'g').write_bytes(b'y')
    os.chown(src / 'd' / 'g', os.geteuid(), os.getegid())
    dest = work / 'snaps'
    dest.mkdir(mode=0o700)
    os.chown(dest, 0, 5678)
    os.chmod(dest, 0o2770)
    res = snap(src, dest, clock, method=method)
    assert_same_tree(src, res['snapshot'])
