# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Testinfra checks of what converge.yml left on each data disk, seen with the system's tools."""

from __future__ import annotations

import pytest

FS = {'ext4-host': 'ext4', 'xfs-host': 'xfs', 'btrfs-host': 'btrfs'}
SNAPSHOTS = '/data/snapshots'


@pytest.fixture(name='fs')
def fixture_fs(host):
    """The data filesystem of the host under test."""
    return FS[host.backend.get_hostname()]


def snapshot_names(host):
    """Published snapshots (directories named by UTC time, beside their NAME.json records),
    oldest first: the names sort by time."""
    out = host.check_output("find %s -mindepth 1 -maxdepth 1 -type d -printf '%%f\\n'" % SNAPSHOTS)
    return sorted(n for n in out.split() if n[:1].isdigit() and not n.endswith('.partial'))


def inode(host, path):
    return int(host.check_output('stat -c %%i %s' % path))


def shares_extents(host, path):
    """True if filefrag reports an extent of PATH as shared with another file."""
    return 'shared' in host.check_output('filefrag -v %s' % path)


def test_data_disk(host, fs):
    assert host.mount_point('/data').filesystem == fs


def test_check_mode_made_nothing(host):
    assert not host.file('/data/check-mode.bin').exists
    assert not host.file('/data/check-mode-tree').exists


def test_copies_share_data_only_where_the_fs_can(host, fs):
    for copy in ('/data/copy.bin', '/data/tree-copy/big.bin'):
        assert host.file(copy).sha256sum == host.file('/data/src/tree/big.bin').sha256sum
        assert inode(host, copy) != inode(host, '/data/src/tree/big.bin')
        assert shares_extents(host, copy) == (fs != 'ext4')


def test_tree_copy_equals_source(host):
    out = host.check_output('rsync -aHAXn --checksum --itemize-changes /data/src/tree/ /data/tree-copy/')
    assert out == ''


def test_retention_kept_last_three(host):
    names = snapshot_names(host)
    assert len(names) == 3
    assert host.file(SNAPSHOTS + '/latest').linked_to == SNAPSHOTS + '/' + names[-1]


def test_newest_snapshot_equals_source(host):
    out = host.check_output('rsync -aHAXn --checksum --itemize-changes /data/src/ %s/latest/' % SNAPSHOTS)
    assert out == ''


def test_snapshot_method_on_disk(host, fs):
    older, newest = ['%s/%s' % (SNAPSHOTS, n) for n in snapshot_names(host)[-2:]]
    big = '/tree/big.bin'
    if fs == 'btrfs':
        # A subvolume snapshot: its root is inode 256, and it is read-only.
        assert inode(host, newest) == 256
        assert host.check_output('btrfs property get -ts %s ro' % newest) == 'ro=true'
    elif fs == 'xfs':
        # Reflinks: own inodes, shared extents with the source.
        assert inode(host, newest + big) != inode(host, '/data/src' + big)
        assert shares_extents(host, newest + big)
    else:
        # Hard links to the previous snapshot for unchanged files, copies of the source.
        assert inode(host, newest + big) == inode(host, older + big)
        assert inode(host, newest + big) != inode(host, '/data/src' + big)
        assert not shares_extents(host, newest + big)


def test_restored_tree_equals_the_snapshot(host, fs):
    out = host.check_output('rsync -aHAXn --checksum --itemize-changes %s/latest/ /data/restored/' % SNAPSHOTS)
    assert out == ''
    # Restored by reflinks where the filesystem clones: the data is the snapshot's, not a copy.
    assert shares_extents(host, '/data/restored/tree/big.bin') == (fs != 'ext4')
