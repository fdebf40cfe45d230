# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files brought up to date inside an existing tree (_update.UpdateTree: reflink_copy onto a
dest, a restore over a live tree) on real loop filesystems: what a crash right after the run
leaves, and the held renames that make that safe.

The crash is the kernel's own: the filesystem is shut down with the "going down" ioctl
(XFS_IOC_GOINGDOWN; ext4's EXT4_IOC_SHUTDOWN has the same number), its journal flushed but no
data written back, as xfstests' godown does to mimic a power cut, and then mounted again.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess

import pytest

from helpers.oracles import assert_same_tree, sha, temp_leftovers
from helpers.snapshots import Clock
from helpers.trees import NS, data, write

from ansible_collections.fslinks.snapshots.plugins.module_utils import _update
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import LinkError
from ansible_collections.fslinks.snapshots.plugins.module_utils._reflink_copy import reflink_copy
from ansible_collections.fslinks.snapshots.plugins.module_utils._restore import restore
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

GOINGDOWN = 0x8004587d      # _IOR('X', 125, __u32)
LOGFLUSH = 1                # XFS_FSOP_GOING_FLAGS_LOGFLUSH, EXT4_GOING_FLAGS_LOGFLUSH


def crash_and_mount_again(mnt):
    """Shut the filesystem at MNT down as a power cut would (journal on disk, dirty data
    lost), unmount it and mount it again, replaying the journal."""
    device = subprocess.run(['findmnt', '-n', '-o', 'SOURCE', str(mnt)], capture_output=True, check=True,
                            text=True).stdout.strip()
    fd = os.open(str(mnt), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, GOINGDOWN, struct.pack('I', LOGFLUSH))
    finally:
        os.close(fd)
    subprocess.run(['umount', str(mnt)], check=True)
    subprocess.run(['mount', device, str(mnt)], check=True)


def old_and_new(root, count=40):
    """dest/ with old files (on disk) and src/ with new data for each of them, in two
    directories; returns (src, dest, {relative path: sha of the new data})."""
    src, dest = root / 'src', root / 'dest'
    want = {}
    for i in range(count):
        rel = '%s/f%02d' % ('a' if i % 2 else 'a/b', i)
        for tree, size in ((dest, 100_000 + i), (src, 150_000 + i)):
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            write(tree / rel, data(size), mtime_ns=NS + i if tree is src else None)
        want[rel] = sha(src / rel)
    os.sync()
    return src, dest, want


@pytest.mark.parametrize('kind', ['xfs', 'ext4'])
def test_updated_files_survive_a_crash_right_after_the_run(loop_fs, kind):
    # XFS does not flush a file renamed over another (ext4's auto_da_alloc does): renamed
    # before its data was on disk, every file here came back empty after the crash.
    mnt = loop_fs(kind, '320M')
    src, dest, want = old_and_new(mnt)
    result = reflink_copy(str(src), str(dest), policy='never')
    assert result['changed'] and result['stats']['copied'] == len(want)

    crash_and_mount_again(mnt)

    got = {rel: sha(dest / rel) for rel in want}
    assert got == want, 'after a crash: %d of %d files lost their data' % (
        sum(got[rel] != want[rel] for rel in want), len(want))
    assert_same_tree(src, dest)        # the directories' mtimes too, set after the renames
    assert temp_leftovers(dest) == []


def test_a_restore_over_a_live_tree_survives_a_crash_right_after_it(loop_fs):
    """Snapshots on another filesystem (ext4), so the restore copies into the live XFS."""
    live_fs, snap_fs = loop_fs('xfs', '320M'), loop_fs('ext4', '256M')
    live = live_fs / 'live'
    for i in range(30):
        (live / ('d%d' % (i % 3))).mkdir(parents=True, exist_ok=True)
        write(live / ('d%d' % (i % 3)) / ('f%02d' % i), data(120_000 + i), mtime_ns=NS + i)
    clock = Clock()
    snap = run(Request(str(live), str(snap_fs / 'snaps')), now=clock())['snapshot']
    for f in sorted(live.rglob('f*')):
        f.write_bytes(b'overwritten by mistake\n')         # a bad day
    os.sync()

    result = restore(str(snap_fs / 'snaps'), guard=False, now=clock())
    assert result['changed'] and result['stats']['copied'] == 30

    crash_and_mount_again(live_fs)

    assert_same_tree(snap, live)
    assert temp_leftovers(live) == []


def _fds():
    return len(os.listdir('/proc/self/fd'))


@pytest.mark.parametrize('limits', [None, (3, 2)], ids=['one-flush', 'many-flushes'])
def test_held_renames_leave_the_same_tree(xfs, workdir, monkeypatch, limits):
    """Many flushes (mid-directory, with a directory still open) or one at the end: the
    same exact tree, inner hard links to the new data, no temporary file or fd left."""
    if limits:
        monkeypatch.setattr(_update, 'HOLD_FILES', limits[0])
        monkeypatch.setattr(_update, 'HOLD_DIRS', limits[1])
    src, dest, want = old_and_new(workdir(xfs), count=12)
    # A changed inode with three names in two directories, and one new name in dest.
    os.link(src / 'a/f01', src / 'a/b/link-1')
    os.link(src / 'a/f01', src / 'a/link-2')
    fds = _fds()

    result = reflink_copy(str(src), str(dest), policy='never')

    assert result['stats']['copied'] == len(want)
    assert result['stats']['hardlinks'] == 2
    assert_same_tree(src, dest)
    assert os.stat(dest / 'a/b/link-1').st_ino == os.stat(dest / 'a/f01').st_ino
    assert temp_leftovers(dest) == []
    assert _fds() == fds


def test_a_held_rename_that_fails_names_its_file_and_keeps_the_old_ones(xfs, workdir):
    # While held, the first file copied in dest/a is replaced by a directory: its rename
    # fails (EISDIR).  a's other files come after it in the walk, so they are still held.
    src, dest, want = old_and_new(workdir(xfs), count=8)
    before = {rel: sha(dest / rel) for rel in want}
    fds = _fds()
    broken = []

    def report(path, action, src_meta, dest_meta):
        if action == 'copy' and path.count(b'/') == 1 and not broken:
            broken.append(path.decode())
            os.unlink(dest / broken[0])
            os.mkdir(dest / broken[0])
            (dest / broken[0] / 'keep').write_bytes(b'x')

    with pytest.raises(LinkError) as info:
        reflink_copy(str(src), str(dest), policy='never', report=report)

    assert 'rename: %s: is a directory' % broken[0] in str(info.value), str(info.value)
    for rel in want:
        if rel.count('/') == 1 and rel != broken[0]:
            assert sha(dest / rel) == before[rel], rel + ' should still be old'
        elif rel != broken[0]:
            assert sha(dest / rel) in (before[rel], want[rel])
    assert (dest / broken[0] / 'keep').read_bytes() == b'x'
    assert temp_leftovers(dest) == []
    assert _fds() == fds
