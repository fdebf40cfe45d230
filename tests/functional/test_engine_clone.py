# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The clone engine (module_utils/_reflink_copy.py and the walker it drives) on real loop filesystems, called directly.

Sharing is always checked independently of the engine's own report: FIEMAP extents
(extents_equal / shared_bytes), filefrag's 'shared' flag, cmp, and rsync -aHAX --checksum
as the oracle for whole trees.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers.oracles import (
    check_hostile_copy, extents_equal, filefrag_shared, regular_files, rsync_diff, same_content, shared_bytes, state,
    temp_leftovers,
)
from helpers.processes import engine_as_nobody
from helpers.trees import NS, data, make_hostile_tree, write

from ansible_collections.fslinks.snapshots.plugins.module_utils import _errors, _facts
from ansible_collections.fslinks.snapshots.plugins.module_utils._reflink_copy import reflink_copy

pytestmark = pytest.mark.loopfs

COW = ['xfs', 'btrfs']


@pytest.fixture(params=COW)
def cowfs(request):
    """A filesystem that can reflink."""
    return request.getfixturevalue(request.param)


def small_tree(root, sizes=(1 << 20, 70_000, 5000, 0)):
    """root/{f0, sub/f1, sub/deeper/f2, f3...} with the given sizes; returns rel paths."""
    os.makedirs(os.path.join(root, 'sub', 'deeper'))
    rels = []
    for i, size in enumerate(sizes):
        rel = ('f%d' % i, os.path.join('sub', 'f%d' % i), os.path.join('sub', 'deeper', 'f%d' % i))[i % 3]
        write(os.path.join(root, rel), data(size), mtime_ns=NS + i)
        rels.append(rel)
    os.symlink('f0', os.path.join(root, 'link'))
    return rels


# ---------------------------------------------------------------- 1. reflink

def test_reflink_file_shares_data(cowfs, workdir):
    w = workdir(cowfs)
    size = (1 << 20) + 123
    src = write(w / 'src.bin', data(size))
    dest = w / 'dest.bin'

    res = reflink_copy(str(w / 'src.bin'), str(dest), policy='always')

    assert res['changed'] is True
    assert res['method'] == 'reflink'
    assert res['bytes_cloned'] == size and res['bytes_copied'] == 0 and res['files'] == 1
    assert os.stat(src).st_ino != os.stat(dest).st_ino
    assert same_content(src, dest)
    assert extents_equal(src, dest)
    assert shared_bytes(src, dest) >= size
    assert filefrag_shared(dest), 'filefrag does not flag the clone as shared'
    # A clone, not a hard link: writing the copy leaves the original alone.
    with open(dest, 'r+b') as f:
        f.write(b'changed')
    assert open(src, 'rb').read(7) != b'changed'
    assert not extents_equal(src, dest)


def test_reflink_tree_shares_every_file(cowfs, workdir):
    w = workdir(cowfs)
    sizes = (1 << 20, 70_000, 5000, 12_288, 0)
    rels = small_tree(w / 'src', sizes)

    res = reflink_copy(str(w / 'src'), str(w / 'dest'), policy='always')

    assert res['changed'] is True and res['method'] == 'reflink'
    assert res['bytes_cloned'] == sum(sizes) and res['bytes_copied'] == 0
    assert res['files'] == len(sizes)
    assert regular_files(w / 'dest') == sorted(os.fsencode(r) for r in rels)
    for rel in rels:
        assert extents_equal(w / 'src' / rel, w / 'dest' / rel), rel
    assert filefrag_shared(w / 'dest' / rels[0])
    assert rsync_diff(w / 'src', w / 'dest') == []


def test_btrfs_tree_across_subvolumes(btrfs, workdir):
    w = workdir(btrfs)
    for sv in ('sv1', 'sv2'):
        subprocess.run(['btrfs', 'subvolume', 'create', str(w / sv)], check=True, capture_output=True)
    # Two subvolumes: different st_dev, same filesystem.
    assert os.stat(w / 'sv1').st_dev != os.stat(w / 'sv2').st_dev
    rels = small_tree(w / 'sv1' / 'tree')

    res = reflink_copy(str(w / 'sv1' / 'tree'), str(w / 'sv2' / 'copy'), policy='always')

    assert res['method'] == 'reflink'
    assert res['bytes_cloned'] == sum(os.path.getsize(w / 'sv1' / 'tree' / r) for r in rels)
    for rel in rels:
        assert extents_equal(w / 'sv1' / 'tree' / rel, w / 'sv2' / 'copy' / rel), rel
    assert filefrag_shared(w / 'sv2' / 'copy' / rels[0])
    assert rsync_diff(w / 'sv1' / 'tree', w / 'sv2' / 'copy') == []


# ---------------------------------------------------------------- 2. auto falls back

PAIRS = [('ext4', 'ext4'), ('xfs', 'xfs2'), ('xfs', 'ext4')]


@pytest.mark.parametrize('src_fs,dest_fs', PAIRS, ids=['ext4', 'xfs-to-xfs2', 'xfs-to-ext4'])
def test_auto_copies_where_reflink_is_impossible(request, workdir, src_fs, dest_fs):
    ws, wd = workdir(request.getfixturevalue(src_fs)), workdir(request.getfixturevalue(dest_fs))
    size = (3 << 20) + 17
    src = write(ws / 'file', data(size))
    rels = small_tree(ws / 'tree')

    res = reflink_copy(str(ws / 'file'), str(wd / 'file'), policy='auto')
    assert res['method'] == 'copy' and res['changed'] is True
    assert res['bytes_copied'] == size and res['bytes_cloned'] == 0
    assert same_content(src, wd / 'file')
    assert not filefrag_shared(wd / 'file')
    if src_fs == dest_fs:
        # (Across filesystems, see test_extents_never_equal_across_filesystems.)
        assert not extents_equal(src, wd / 'file')
        assert shared_bytes(src, wd / 'file') == 0

    res = reflink_copy(str(ws / 'tree'), str(wd / 'tree'), policy='auto')
    assert res['method'] == 'copy' and res['bytes_cloned'] == 0
    assert rsync_diff(ws / 'tree', wd / 'tree') == []
    for rel in rels:
        if os.path.getsize(ws / 'tree' / rel):
            assert not filefrag_shared(wd / 'tree' / rel), rel
            if src_fs == dest_fs:
                assert not extents_equal(ws / 'tree' / rel, wd / 'tree' / rel), rel
    assert temp_leftovers(wd) == []


def _twin_filesystems(loop_fs):
    """Two fresh, identically made XFS with one identical file each at the same place
    (the first file written on an empty filesystem)."""
    a, b = loop_fs('xfs', '320M'), loop_fs('xfs', '320M')
    content = data(1 << 20)
    write(a / 'f', content, mtime_ns=NS)
    reflink_copy(str(a / 'f'), str(b / 'f'))          # auto: a copy, b's first file
    return a, b


def test_extents_never_equal_across_filesystems(loop_fs):
    """Physical addresses of two filesystems are unrelated: equal numbers on two devices
    mean nothing, so extents_equal/shared_bytes must not call such files shared."""
    a, b = _twin_filesystems(loop_fs)
    assert os.stat(a / 'f').st_dev != os.stat(b / 'f').st_dev
    assert not filefrag_shared(b / 'f')
    assert extents_equal(a / 'f', b / 'f') is False
    assert shared_bytes(a / 'f', b / 'f') == 0
    cmp = _facts.compare_files(str(a / 'f'), str(b / 'f'))    # what link_facts reports
    assert (cmp['fully_shared'], cmp['shared_bytes']) == (False, 0), cmp


def test_same_size_change_is_copied_across_filesystems(loop_fs):
    """src rewritten in place (same size, new bytes, new mtime) must be copied again, even
    when dest on another filesystem happens to sit at the same block numbers."""
    a, b = _twin_filesystems(loop_fs)
    new = data(1 << 20)
    with open(a / 'f', 'r+b') as f:        # in place: XFS keeps the blocks
        f.write(new)
    os.utime(a / 'f', ns=(NS + 10**9, NS + 10**9))

    res = reflink_copy(str(a / 'f'), str(b / 'f'))

    assert res['method'] == 'copy', res
    assert same_content(a / 'f', b / 'f'), 'dest kept stale data'


def test_never_copies_even_where_reflink_is_possible(xfs, workdir):
    w = workdir(xfs)
    src = write(w / 'file', data(1 << 20))
    res = reflink_copy(str(w / 'file'), str(w / 'copy'), policy='never')
    assert res['method'] == 'copy'
    assert same_content(src, w / 'copy')
    assert shared_bytes(src, w / 'copy') == 0
    assert not filefrag_shared(w / 'copy')


# ---------------------------------------------------------------- 3. always fails cleanly

ALWAYS_FAILS = [
    ('ext4', 'ext4', _errors.NotSupported, 'filesystem does not support reflink'),
    ('xfs', 'xfs2', _errors.CrossDevice, 'src and dest are on different filesystems'),
    ('xfs', 'ext4', _errors.CrossDevice, 'src and dest are on different filesystems'),
]


@pytest.mark.parametrize('kind', ['file', 'tree'])
@pytest.mark.parametrize('src_fs,dest_fs,exc,words', ALWAYS_FAILS, ids=['ext4', 'xfs-to-xfs2', 'xfs-to-ext4'])
def test_always_fails_and_leaves_nothing(request, workdir, kind, src_fs, dest_fs, exc, words):
    ws, wd = workdir(request.getfixturevalue(src_fs)), workdir(request.getfixturevalue(dest_fs))
    if kind == 'file':
        write(ws / 'src', data(300_000))
    else:
        small_tree(ws / 'src')
    before = sorted(os.listdir(wd))

    with pytest.raises(exc) as info:
        reflink_copy(str(ws / 'src'), str(wd / 'dest'), policy='always')

    assert words in str(info.value)
    assert not os.path.lexists(wd / 'dest')
    assert sorted(os.listdir(wd)) == before
    assert temp_leftovers(wd) == []


# ---------------------------------------------------------------- 4. dry run

@pytest.mark.parametrize('fsname,method', [('xfs', 'reflink'), ('btrfs', 'reflink'), ('ext4', 'copy')])
def test_dry_run_creates_nothing_and_predicts(request, workdir, fsname, method):
    w = workdir(request.getfixturevalue(fsname))
    write(w / 'file', data(100_000))
    small_tree(w / 'tree')
    before = state(w)
    seen = []

    for name in ('file', 'tree'):
        res = reflink_copy(str(w / name), str(w / (name + '.copy')), dry_run=True,
                           report=lambda *a: seen.append(a))
        assert res['changed'] is True
        assert res['method'] == method
        assert not os.path.lexists(w / (name + '.copy'))
    assert state(w) == before
    assert seen, 'dry run reported no planned change'

    # Up to date: the dry run predicts no change.
    for name in ('file', 'tree'):
        reflink_copy(str(w / name), str(w / (name + '.copy')))
        res = reflink_copy(str(w / name), str(w / (name + '.copy')), dry_run=True)
        assert res['changed'] is False and res['method'] == 'none'


# ---------------------------------------------------------------- 5. idempotency

IDEMPOTENT = [('xfs', None), ('btrfs', None), ('ext4', None), ('xfs', ['mode']), ('btrfs', ['mode'])]


@pytest.mark.parametrize('fsname,preserve', IDEMPOTENT,
                         ids=['xfs', 'btrfs', 'ext4', 'xfs-mode-only', 'btrfs-mode-only'])
def test_second_run_changes_nothing(request, workdir, fsname, preserve):
    w = workdir(request.getfixturevalue(fsname))
    write(w / 'file', data(2 << 20), mtime_ns=NS)
    rels = small_tree(w / 'tree')
    kw = {'preserve': preserve} if preserve else {}

    for name in ('file', 'tree'):
        first = reflink_copy(str(w / name), str(w / (name + '.copy')), **kw)
        assert first['changed'] is True
        if preserve:
            # Timestamps not kept: only FIEMAP can tell the data is already there.
            assert os.stat(w / 'file.copy').st_mtime_ns != NS
        before = state(w / (name + '.copy'))
        second = reflink_copy(str(w / name), str(w / (name + '.copy')), **kw)
        assert second['changed'] is False, second
        assert second['method'] == 'none'
        assert second['bytes_cloned'] == 0 and second['bytes_copied'] == 0
        assert state(w / (name + '.copy')) == before, 'second run rewrote dest'
    assert regular_files(w / 'tree.copy') == sorted(os.fsencode(r) for r in rels)


@pytest.mark.parametrize('fsname', ['xfs', 'btrfs', 'ext4'])
def test_metadata_only_change_fixes_in_place(request, workdir, fsname):
    w = workdir(request.getfixturevalue(fsname))
    src = write(w / 'file', data(1 << 20), mtime_ns=NS)
    dest = w / 'copy'
    reflink_copy(str(w / 'file'), str(dest))
    ino = os.stat(dest).st_ino

    os.chmod(src, 0o600)
    os.chown(src, 1234, 5678)
    res = reflink_copy(str(w / 'file'), str(dest))
    assert res['changed'] is True and res['method'] == 'none'
    assert res['stats']['metadata'] == 1
    st = os.stat(dest)
    assert st.st_ino == ino, 'dest data was rewritten for a metadata change'
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 1234, 5678)

    # Same for a tree: a file's and a directory's mode.
    small_tree(w / 'tree')
    reflink_copy(str(w / 'tree'), str(w / 'tree.copy'))
    inodes = {r: os.lstat(w / 'tree.copy' / os.fsdecode(r)).st_ino for r in regular_files(w / 'tree.copy')}
    os.chmod(w / 'tree' / 'sub', 0o750)
    os.chmod(w / 'tree' / 'f0', 0o604)
    res = reflink_copy(str(w / 'tree'), str(w / 'tree.copy'))
    assert res['changed'] is True and res['method'] == 'none'
    assert {r: os.lstat(w / 'tree.copy' / os.fsdecode(r)).st_ino for r in inodes} == inodes
    assert rsync_diff(w / 'tree', w / 'tree.copy') == []


def test_mtime_only_change_fixes_in_place_when_shared(cowfs, workdir):
    """touch -m of src: the extents say the data is the same, so only the time is set."""
    w = workdir(cowfs)
    src = write(w / 'file', data(1 << 20), mtime_ns=NS)
    reflink_copy(str(w / 'file'), str(w / 'copy'))
    ino = os.stat(w / 'copy').st_ino
    os.utime(src, ns=(NS + 10**9 + 1, NS + 10**9 + 1))

    res = reflink_copy(str(w / 'file'), str(w / 'copy'))

    assert res['changed'] is True and res['method'] == 'none'
    st = os.stat(w / 'copy')
    assert st.st_ino == ino
    assert st.st_mtime_ns == NS + 10**9 + 1
    assert extents_equal(src, w / 'copy')


def test_fully_sparse_file_is_idempotent_without_timestamps(xfs, workdir):
    """A file that is all hole (truncate -s) has no extents at all; its clone has none
    either, so the data is trivially the same and a second run must not rewrite it."""
    w = workdir(xfs)
    with open(w / 'holes', 'wb') as f:
        f.truncate(1 << 20)
    reflink_copy(str(w / 'holes'), str(w / 'copy'), preserve=['mode'])
    ino = os.stat(w / 'copy').st_ino
    res = reflink_copy(str(w / 'holes'), str(w / 'copy'), preserve=['mode'])
    assert res['changed'] is False, res
    assert os.stat(w / 'copy').st_ino == ino


# ---------------------------------------------------------------- 6. rich trees

@pytest.mark.parametrize('fsname,method', [('xfs', 'reflink'), ('btrfs', 'reflink'), ('ext4', 'copy')])
def test_rich_tree_is_an_exact_copy(request, workdir, fsname, method):
    w = workdir(request.getfixturevalue(fsname))
    outside = w / 'outside'
    outside.mkdir()
    tree = make_hostile_tree(w / 'src', outside)

    res = reflink_copy(str(w / 'src'), str(w / 'dest'))

    assert res['method'] == method
    st = res['stats']
    # 7 symlinks in links/; fifo, socket, char and block device; hard/a has 2 more names, hard/pair1 1.
    assert st['symlinks'] == 7 and st['specials'] == 4 and st['hardlinks'] == 3, st
    check_hostile_copy(tree, w / 'dest')
    if method == 'reflink':
        assert extents_equal(w / 'src' / 'random.bin', w / 'dest' / 'random.bin')

    before = state(w / 'dest')
    again = reflink_copy(str(w / 'src'), str(w / 'dest'))
    assert again['changed'] is False, again
    assert state(w / 'dest') == before

    # The oracle is not blind: a changed xattr or a directory's nanoseconds show.
    subprocess.run(['setfattr', '-n', 'user.text', '-v', 'other', str(w / 'dest' / 'xattr.txt')], check=True)
    os.utime(w / 'dest' / 'hard2', ns=(NS, NS + 5))
    out = rsync_diff(w / 'src', w / 'dest')
    assert any('xattr.txt' in line for line in out) and any('hard2' in line for line in out), out


@pytest.mark.parametrize('fsname', ['xfs', 'btrfs', 'ext4'])
def test_tree_update_restores_directory_mtimes(request, workdir, fsname):
    """Updating an existing dest writes into its directories (temp file + rename), which
    moves their mtimes; they must be put back to src's afterwards, as on a fresh copy."""
    w = workdir(request.getfixturevalue(fsname))
    src = w / 'src'
    (src / 'd').mkdir(parents=True)
    write(src / 'd' / 'f', b'a' * 5000, mtime_ns=NS)
    os.utime(src / 'd', ns=(NS, NS + 1))
    os.utime(src, ns=(NS, NS + 2))
    reflink_copy(str(src), str(w / 'dest'))
    assert rsync_diff(src, w / 'dest') == []

    # New content (rewrites d/f in dest) and a new file at the top (rewrites dest/ too).
    write(src / 'd' / 'f', b'b' * 7000, mtime_ns=NS + 100)
    write(src / 'new', b'new\n', mtime_ns=NS + 200)
    os.utime(src / 'd', ns=(NS, NS + 1))
    os.utime(src, ns=(NS, NS + 3))
    time.sleep(0.01)
    res = reflink_copy(str(src), str(w / 'dest'))

    assert res['changed'] is True
    assert rsync_diff(src, w / 'dest') == []
    assert os.stat(w / 'dest' / 'd').st_mtime_ns == NS + 1
    assert os.stat(w / 'dest').st_mtime_ns == NS + 3


# ---------------------------------------------------------------- 7. bad input

def _bad_cases(w):
    """(name, src, dest, words that the message must hold) for a prepared workdir w."""
    return [
        ('src-missing', w / 'nope', w / 'out1', ['nope', 'no such file or directory']),
        ('dir-onto-file', w / 'tree', w / 'existing-file', ['existing-file', 'is a directory']),
        ('file-onto-dir', w / 'file', w / 'existing-dir', ['existing-dir', 'is a directory']),
        ('same-file', w / 'file', w / 'file', ['file', 'same file']),
        ('same-file-hardlink', w / 'file', w / 'file-hardlink', ['file-hardlink', 'same file']),
        ('dest-inside-src', w / 'tree', w / 'tree' / 'sub' / 'copy', ['tree/sub/copy', 'inside']),
        ('dest-is-src-tree', w / 'tree', w / 'tree', ['tree', 'same']),
        ('dest-parent-missing', w / 'file', w / 'no-such-dir' / 'out', ['no-such-dir', 'no such file or directory']),
        ('relative-src', 'relative/file', w / 'out2', ['relative/file', 'absolute']),
        ('relative-dest', w / 'file', 'relative-out', ['relative-out', 'absolute']),
    ]


def prepare_bad_inputs(w):
    write(w / 'file', data(50_000))
    os.link(w / 'file', w / 'file-hardlink')
    small_tree(w / 'tree')
    write(w / 'existing-file', b'keep me\n')
    (w / 'existing-dir').mkdir()
    write(w / 'existing-dir' / 'inside', b'keep me too\n')


BAD_CASES = ['src-missing', 'dir-onto-file', 'file-onto-dir', 'same-file', 'same-file-hardlink',
             'dest-inside-src', 'dest-is-src-tree', 'dest-parent-missing', 'relative-src', 'relative-dest']


@pytest.mark.parametrize('case', BAD_CASES)
def test_bad_input_fails_and_touches_nothing(xfs, workdir, case):
    w = workdir(xfs)
    prepare_bad_inputs(w)
    _name, src, dest, words = [c for c in _bad_cases(w) if c[0] == case][0]
    before = state(w)

    with pytest.raises(_errors.LinkError) as info:
        reflink_copy(str(src), str(dest))

    msg = str(info.value)
    for word in words:
        assert word in msg, (word, msg)
    assert state(w) == before
    assert temp_leftovers(w) == []


@pytest.fixture
def nobody_tree():
    """src/{readable, sub/secret (mode 000)} and an empty out/, all owned by nobody, in a
    directory nobody can reach (the session loop mounts live under a 0700 directory).
    Unreadability does not depend on the filesystem type."""
    w = Path(tempfile.mkdtemp(prefix='fslinks-nobody-', dir='/var/tmp'))
    try:
        os.chmod(w, 0o755)
        os.makedirs(w / 'src' / 'sub')
        write(w / 'src' / 'readable', b'fine\n')
        write(w / 'src' / 'sub' / 'secret', b'secret\n', mode=0)
        (w / 'out').mkdir()
        for p in ('src', 'src/sub', 'src/readable', 'src/sub/secret', 'out'):
            os.chown(w / p, 65534, 65534)
        yield w
    finally:
        shutil.rmtree(w, ignore_errors=True)


def test_unreadable_file_in_tree_fails_cleanly(nobody_tree):
    """Root reads everything, so unreadability is made real by running the engine as nobody."""
    w = nobody_tree
    res = engine_as_nobody(w / 'src', w / 'out' / 'copy')
    assert res['ok'] is False
    assert res['link_error'] is True and res['cls'] == 'PermissionDenied', res
    assert 'secret' in res['msg'] and 'permission denied' in res['msg']
    assert os.listdir(w / 'out') == [], 'a failed new tree left something behind'


def test_unreadable_single_file_fails_with_a_typed_error(nobody_tree):
    w = nobody_tree
    res = engine_as_nobody(w / 'src' / 'sub' / 'secret', w / 'out' / 'copy')
    assert res['ok'] is False
    assert res['link_error'] is True, 'engine let a bare %s escape: %s' % (res['cls'], res['msg'])
    assert res['cls'] == 'PermissionDenied'
    assert str(w / 'src' / 'sub' / 'secret') in res['msg'] and 'permission denied' in res['msg']
    assert os.listdir(w / 'out') == []


def test_readable_tree_copies_as_nobody(nobody_tree):
    """Control for the two tests above: without the unreadable file, nobody can copy."""
    w = nobody_tree
    os.unlink(w / 'src' / 'sub' / 'secret')
    res = engine_as_nobody(w / 'src', w / 'out' / 'copy')
    assert res['ok'] is True, res
    assert open(w / 'out' / 'copy' / 'readable', 'rb').read() == b'fine\n'


def test_force_false_leaves_an_existing_dest_alone(xfs, workdir):
    w = workdir(xfs)
    write(w / 'src', data(5000))
    write(w / 'dest', b'old\n')
    before = state(w / 'dest')
    res = reflink_copy(str(w / 'src'), str(w / 'dest'), force=False)
    assert res['changed'] is False
    assert state(w / 'dest') == before
    # ...but a missing dest is still made.
    res = reflink_copy(str(w / 'src'), str(w / 'new'), force=False)
    assert res['changed'] is True and same_content(w / 'src', w / 'new')


def test_symlinks_in_dest_are_replaced_never_written_through(xfs, workdir):
    w = workdir(xfs)
    write(w / 'victim', b'must not change\n')
    write(w / 'src', data(5000))
    os.symlink(w / 'victim', w / 'dest')            # dest itself is a symlink
    small_tree(w / 'tree')
    reflink_copy(str(w / 'tree'), str(w / 'tree.copy'))
    os.unlink(w / 'tree.copy' / 'f0')               # and inside an existing dest tree
    os.symlink(w / 'victim', w / 'tree.copy' / 'f0')
    write(w / 'tree' / 'f0', data(1 << 20), mtime_ns=NS + 77)

    reflink_copy(str(w / 'src'), str(w / 'dest'))
    reflink_copy(str(w / 'tree'), str(w / 'tree.copy'))

    assert open(w / 'victim', 'rb').read() == b'must not change\n'
    assert not os.path.islink(w / 'dest') and same_content(w / 'src', w / 'dest')
    assert not os.path.islink(w / 'tree.copy' / 'f0')
    assert rsync_diff(w / 'tree', w / 'tree.copy') == []


# ---------------------------------------------------------------- 8. backup

STAMP = re.compile(r'\.\d{4}-\d\d-\d\dT\d{6}Z~$')


def test_backup_file_is_a_reflink_of_the_old_data(xfs, workdir):
    w = workdir(xfs)
    old, new = data(1 << 20), data((1 << 20) + 5)
    write(w / 'dest', old, mtime_ns=NS)
    # Our own clone of the old data, made by another tool, to compare the backup with.
    subprocess.run(['cp', '--reflink=always', str(w / 'dest'), str(w / 'keep')], check=True)
    write(w / 'src', new, mtime_ns=NS + 1)

    res = reflink_copy(str(w / 'src'), str(w / 'dest'), backup=True)

    assert res['changed'] is True and res['method'] == 'reflink'
    backup = res['backup_file']
    assert backup and os.path.dirname(backup) == str(w) and STAMP.search(backup), backup
    assert os.path.basename(backup).startswith('dest.')
    assert open(backup, 'rb').read() == old
    assert extents_equal(backup, w / 'keep'), 'backup does not share the old data'
    assert open(w / 'dest', 'rb').read() == new
    assert extents_equal(w / 'src', w / 'dest')

    # Nothing to change: no backup.
    again = reflink_copy(str(w / 'src'), str(w / 'dest'), backup=True)
    assert again['changed'] is False and again['backup_file'] is None
    assert sorted(n for n in os.listdir(w) if n.endswith('~')) == [os.path.basename(backup)]


def test_backup_of_a_tree(xfs, workdir):
    w = workdir(xfs)
    rels = small_tree(w / 'src')
    reflink_copy(str(w / 'src'), str(w / 'dest'))
    subprocess.run(['cp', '-a', '--reflink=always', str(w / 'dest'), str(w / 'keep')], check=True)
    write(w / 'src' / rels[0], data(4096 * 3), mtime_ns=NS + 50)

    res = reflink_copy(str(w / 'src'), str(w / 'dest'), backup=True)

    backup = res['backup_file']
    assert backup and STAMP.search(backup)
    assert rsync_diff(w / 'keep', backup) == []
    for rel in rels:
        if os.path.getsize(w / 'keep' / rel):
            assert extents_equal(os.path.join(backup, rel), w / 'keep' / rel), rel
    assert rsync_diff(w / 'src', w / 'dest') == []


def test_no_backup_in_dry_run(xfs, workdir):
    w = workdir(xfs)
    write(w / 'src', b'new\n')
    write(w / 'dest', b'old\n')
    res = reflink_copy(str(w / 'src'), str(w / 'dest'), backup=True, dry_run=True)
    assert res['changed'] is True
    assert sorted(os.listdir(w)) == ['dest', 'src']
    assert open(w / 'dest', 'rb').read() == b'old\n'


def test_backup_of_a_dest_that_is_a_symlink(xfs, workdir):
    """dest's last component is not followed: a symlink dest is replaced by the copy, so
    the backup keeps the symlink itself. Whatever the engine chooses, it must not fail
    with an untyped ELOOP, and the symlink's target must not change."""
    w = workdir(xfs)
    write(w / 'src', b'new\n')
    write(w / 'target', b'target\n')
    os.symlink(w / 'target', w / 'dest')

    res = reflink_copy(str(w / 'src'), str(w / 'dest'), backup=True)

    assert open(w / 'dest', 'rb').read() == b'new\n' and not os.path.islink(w / 'dest')
    assert open(w / 'target', 'rb').read() == b'target\n'
    assert res['backup_file'] and os.readlink(res['backup_file']) == str(w / 'target')


def test_two_backups_in_the_same_second(xfs, workdir):
    """Two changes of one dest within a second (a loop in a playbook) must both succeed
    and keep both old versions."""
    w = workdir(xfs)
    write(w / 'dest', b'v0\n')
    results = []
    for i in (1, 2):
        write(w / 'src', b'v%d\n' % i, mtime_ns=NS + i)
        results.append(reflink_copy(str(w / 'src'), str(w / 'dest'), backup=True))
    assert open(w / 'dest', 'rb').read() == b'v2\n'
    backups = [r['backup_file'] for r in results]
    assert None not in backups and len(set(backups)) == 2
    assert sorted(open(b, 'rb').read() for b in backups) == [b'v0\n', b'v1\n']


# ---------------------------------------------------------------- 10. failure atomicity

def test_enospc_in_a_new_tree_leaves_nothing(xfs, small_ext4, workdir):
    w = workdir(xfs)
    (w / 'src' / 'sub').mkdir(parents=True)
    for i in range(3):
        write(w / 'src' / 'sub' / ('big%d' % i), data(6 << 20))
    write(w / 'src' / 'small', b'small\n')
    before = sorted(os.listdir(small_ext4))
    free = os.statvfs(small_ext4).f_bfree

    with pytest.raises(_errors.NoSpace) as info:
        reflink_copy(str(w / 'src'), str(small_ext4 / 'copy'))

    assert 'no space left' in str(info.value)
    assert sorted(os.listdir(small_ext4)) == before
    assert temp_leftovers(small_ext4) == []
    # Everything written was freed again.
    assert os.statvfs(small_ext4).f_bfree >= free - 8


def test_enospc_single_file_is_a_typed_error(xfs, small_ext4, workdir):
    w = workdir(xfs)
    write(w / 'big', data(20 << 20))
    before = sorted(os.listdir(small_ext4))

    with pytest.raises(_errors.LinkError) as info:
        reflink_copy(str(w / 'big'), str(small_ext4 / 'big'))

    assert isinstance(info.value, _errors.NoSpace)
    assert 'no space left' in str(info.value)
    assert sorted(os.listdir(small_ext4)) == before
    assert temp_leftovers(small_ext4) == []


def test_enospc_replacing_a_file_keeps_the_old_one(xfs, small_ext4, workdir):
    w = workdir(xfs)
    write(w / 'big', data(20 << 20))
    write(small_ext4 / 'big', b'the old version\n')
    before, names = state(small_ext4 / 'big'), sorted(os.listdir(small_ext4))

    with pytest.raises(_errors.NoSpace):
        reflink_copy(str(w / 'big'), str(small_ext4 / 'big'))

    assert state(small_ext4 / 'big') == before
    assert sorted(os.listdir(small_ext4)) == names
    assert temp_leftovers(small_ext4) == []
