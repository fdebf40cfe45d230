# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy path (module_utils/_transfer.copy_sparse, and the walker around it) on real loop
filesystems: data equal byte for byte, holes kept as holes wherever they are (leading, inner,
trailing, a file that is all hole; no preallocated blocks left in a hole), offsets beyond 2 and
4 GiB, short sendfile writes, a src that shrinks under the copy, and writeback started as the
copy goes.  copy_sparse skips the lseek and the ftruncate it does not need; these are the cases
where it does need them.
"""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from helpers import loopfs
from helpers.trees import write_sparse

from ansible_collections.fslinks.snapshots.plugins.module_utils import _mounts, _transfer
from ansible_collections.fslinks.snapshots.plugins.module_utils._reflink_copy import reflink_copy

pytestmark = pytest.mark.loopfs

MiB = 1 << 20
GiB = 1 << 30


def pattern(n, seed):
    """N bytes, different for each seed and never zero (a hole reads as zeros)."""
    return (b'%07d.' % seed * (n // 8 + 1))[:n]


def read_regions(path, regions):
    with open(path, 'rb') as f:
        out = []
        for off, chunk in regions:
            f.seek(off)
            out.append(f.read(len(chunk)))
        return out


def copy_file(src, dst, size=None, copy=_transfer.copy_sparse):
    s = os.open(src, os.O_RDONLY)
    d = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        return copy(s, d, os.fstat(s).st_size if size is None else size)
    finally:
        os.close(s)
        os.close(d)


def allocated(path):
    return os.stat(path).st_blocks * 512


# Layouts: (apparent size, [(offset, length)] of data).  4 KiB aligned so that every filesystem
# keeps the holes exactly where they are.
LAYOUTS = {
    'dense': (3 * MiB + 123, [(0, 3 * MiB + 123)]),
    'small': (100, [(0, 100)]),
    'empty': (0, []),
    'all-hole': (8 * MiB, []),
    'leading-hole': (8 * MiB, [(4 * MiB, 64 << 10)]),
    'trailing-hole': (8 * MiB, [(0, 64 << 10)]),
    'inner-holes': (8 * MiB, [(0, 4096), (2 * MiB, 8192), (8 * MiB - 4096, 4096)]),
    'hole-data-hole': (8 * MiB, [(1 * MiB, 4096), (3 * MiB, 4096)]),
}


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_copy_sparse_keeps_data_and_holes(fs, workdir, layout):
    w = workdir(fs)
    size, spans = LAYOUTS[layout]
    regions = [(off, pattern(n, i + 1)) for i, (off, n) in enumerate(spans)]
    write_sparse(w / 'src', size, regions)
    copied = copy_file(w / 'src', w / 'dst')
    with open(w / 'src', 'rb') as a, open(w / 'dst', 'rb') as b:
        assert a.read() == b.read()
    assert os.stat(w / 'dst').st_size == size
    # What is a hole in src is a hole in dst.  Slack per region for the filesystem's rounding:
    # XFS reports a little of its speculative preallocation as data.
    data = sum(len(c) for _o, c in regions)
    slack = (len(regions) + 1) * 64 * 1024
    assert data <= copied <= data + slack
    assert allocated(w / 'dst') <= data + slack
    with open(w / 'src', 'rb') as f:
        assert data <= _transfer.data_bytes(f.fileno(), size) <= data + slack


def test_copy_sparse_offsets_beyond_2_and_4_gib(fs, workdir):
    """sendfile offsets and lengths past 2**31 and 2**32 (a sparse 5 GiB file: little is written)."""
    w = workdir(fs)
    size = 5 * GiB
    regions = [(0, pattern(4096, 1)), (2 * GiB - MiB, pattern(2 * MiB, 2)),    # across the 2 GiB mark
               (4 * GiB - 4096, pattern(8192, 3)), (size - 4096, pattern(4096, 4))]
    write_sparse(w / 'src', size, regions)
    copied = copy_file(w / 'src', w / 'dst')
    assert sum(len(c) for _o, c in regions) <= copied < 16 * MiB
    assert os.stat(w / 'dst').st_size == size
    assert read_regions(w / 'dst', regions) == [c for _o, c in regions]
    assert allocated(w / 'dst') < 16 * MiB
    # What lies between the regions reads as zeros.
    with open(w / 'dst', 'rb') as f:
        f.seek(3 * GiB)
        assert f.read(MiB) == bytes(MiB)


def test_copy_sparse_survives_short_writes(fs, workdir, monkeypatch):
    """sendfile may move fewer bytes than asked: the copy goes on from where it stopped."""
    w = workdir(fs)
    size, spans = LAYOUTS['inner-holes']
    regions = [(off, pattern(n, i + 1)) for i, (off, n) in enumerate(spans)] + [(3 * MiB, pattern(100_000, 9))]
    write_sparse(w / 'src', size, regions)
    real = os.sendfile
    calls = []

    def short(out_fd, in_fd, offset, count):
        calls.append(count)
        return real(out_fd, in_fd, offset, min(count, 1000))
    monkeypatch.setattr(_transfer.os, 'sendfile', short)
    copy_file(w / 'src', w / 'dst')
    monkeypatch.undo()
    assert len(calls) > 100
    with open(w / 'src', 'rb') as a, open(w / 'dst', 'rb') as b:
        assert a.read() == b.read()


def test_copy_sparse_src_shorter_than_told(fs, workdir):
    """src shrank after its size was read: dst still gets the size we were told (the walker
    counts the file as changed during the run), the data that was there, then zeros."""
    w = workdir(fs)
    write_sparse(w / 'src', 10_000, [(0, pattern(10_000, 5))])
    copied = copy_file(w / 'src', w / 'dst', size=50_000)
    assert copied == 10_000
    with open(w / 'dst', 'rb') as f:
        got = f.read()
    assert len(got) == 50_000
    assert got[:10_000] == pattern(10_000, 5) and got[10_000:] == bytes(40_000)


@pytest.mark.parametrize('layout', ['trailing-hole', 'all-hole', 'leading-hole', 'empty'])
def test_tree_copy_never_reflink_keeps_sparse_files(fs, workdir, layout):
    """The same through the walker (temp file, metadata, rename): reflink_copy reflink=never."""
    w = workdir(fs)
    size, spans = LAYOUTS[layout]
    regions = [(off, pattern(n, i + 1)) for i, (off, n) in enumerate(spans)]
    os.mkdir(w / 'tree')
    write_sparse(w / 'tree' / 'f', size, regions)
    os.utime(w / 'tree' / 'f', ns=(1_600_000_000_123_456_789, 1_600_000_000_987_654_321))
    res = reflink_copy(str(w / 'tree'), str(w / 'copy'), policy='never')
    assert res['stats']['copied'] == 1
    a, b = os.stat(w / 'tree' / 'f'), os.stat(w / 'copy' / 'f')
    assert (b.st_size, b.st_mtime_ns, b.st_mode) == (a.st_size, a.st_mtime_ns, a.st_mode)
    with open(w / 'tree' / 'f', 'rb') as x, open(w / 'copy' / 'f', 'rb') as y:
        assert x.read() == y.read()
    assert allocated(w / 'copy' / 'f') <= sum(len(c) for _o, c in regions) + 2 * 64 * 1024


def _hinted_copy(src, dst, monkeypatch, copy=_transfer.copy_sparse, threads=None):
    """copy_file with every posix_fadvise recorded as (offset, length, advice) and passed on;
    the copy is checked byte for byte.  ``threads``: a list that gets the thread of each hint."""
    calls = []
    real = os.posix_fadvise

    def hint(fd, offset, length, advice):
        calls.append((offset, length, advice))
        if threads is not None:
            threads.append(threading.current_thread())
        real(fd, offset, length, advice)
    with monkeypatch.context() as m:
        m.setattr(_transfer.os, 'posix_fadvise', hint)
        copied = copy_file(src, dst, copy=copy)
    with open(src, 'rb') as a, open(dst, 'rb') as b:
        assert a.read() == b.read()
    return copied, calls


def test_copy_sparse_starts_writeback_of_large_copies_only(fs, workdir, monkeypatch):
    """A copy of 256 KiB or more asks the kernel to start writing it out (the snapshot's syncfs
    then waits less); a small one does not; a failing hint fails nothing."""
    w = workdir(fs)
    write_sparse(w / 'big', MiB, [(0, pattern(MiB, 1))])
    write_sparse(w / 'small', 1000, [(0, pattern(1000, 2))])
    assert _hinted_copy(w / 'big', w / 'big.copy', monkeypatch)[1] == [(0, MiB, os.POSIX_FADV_DONTNEED)]
    assert _hinted_copy(w / 'small', w / 'small.copy', monkeypatch)[1] == []

    def failing(fd, offset, length, advice):
        raise OSError(22, 'Invalid argument')
    monkeypatch.setattr(_transfer.os, 'posix_fadvise', failing)
    assert copy_file(w / 'big', w / 'big.copy2') == MiB
    monkeypatch.undo()
    with open(w / 'big', 'rb') as a, open(w / 'big.copy2', 'rb') as b:
        assert a.read() == b.read()


def test_copy_sparse_writes_a_big_file_back_piece_by_piece(fs, workdir, monkeypatch):
    """A file without holes is sent in pieces, and each piece's writeback starts as soon as it
    is in the page cache (the sync before publishing then waits for the last piece only): the
    hinted ranges tile the file in order.  A sparse file is hinted once, at the end.  Pieces of
    1 MiB here instead of 32 MiB, the same code."""
    w = workdir(fs)
    monkeypatch.setattr(_transfer, '_WRITEBACK_PIECE', MiB)
    write_sparse(w / 'dense', 5 * MiB + 4096, [(0, pattern(5 * MiB + 4096, 1))])
    copied, calls = _hinted_copy(w / 'dense', w / 'dense.copy', monkeypatch)
    assert copied == 5 * MiB + 4096
    assert calls == [(i * MiB, MiB, os.POSIX_FADV_DONTNEED) for i in range(5)]   # the last 4 KiB: too small
    assert allocated(w / 'dense.copy') <= 5 * MiB + 4096 + 64 * 1024
    write_sparse(w / 'sparse', 8 * MiB, [(0, pattern(2 * MiB, 1)), (4 * MiB, pattern(3 * MiB, 2))])
    _copied, calls = _hinted_copy(w / 'sparse', w / 'sparse.copy', monkeypatch)
    assert calls == [(0, 0, os.POSIX_FADV_DONTNEED)]


def _copier_copy(src_fd, dst_fd, size):
    """A copy the way the walker makes it: DataCopier with reflink=never, which picks the
    writeback thread from dst's filesystem."""
    dev = os.fstat(dst_fd).st_dev
    return _transfer.DataCopier('never').transfer(src_fd, dst_fd, size, os.fstat(src_fd).st_dev, dev, b'f')[1]


def _writeback_threads():
    return [t for t in threading.enumerate() if t.name == 'fslinks-writeback']


def test_big_file_writeback_runs_in_a_thread_on_btrfs_and_ext4_only(fs, workdir, monkeypatch):
    """A file bigger than one piece has its pieces hinted from a thread on btrfs and ext4 (btrfs
    does checksums and allocation in the caller of the hint) and inline on XFS, where the thread
    was slower (bench/README).  Either way the hints tile the file in order, the copy is exact,
    and the thread is gone when the copy returns.  A file of one piece never starts a thread."""
    w = workdir(fs)
    monkeypatch.setattr(_transfer, '_WRITEBACK_PIECE', MiB)
    write_sparse(w / 'dense', 5 * MiB, [(0, pattern(5 * MiB, 3))])
    threads = []
    copied, calls = _hinted_copy(w / 'dense', w / 'dense.copy', monkeypatch, copy=_copier_copy, threads=threads)
    assert copied == 5 * MiB
    assert calls == [(i * MiB, MiB, os.POSIX_FADV_DONTNEED) for i in range(5)]
    threaded = loopfs.fstype_of(fs) in ('btrfs', 'ext4')
    assert [t.name for t in threads] == ['fslinks-writeback' if threaded else threading.current_thread().name] * 5
    assert _writeback_threads() == []
    write_sparse(w / 'one', MiB, [(0, pattern(MiB, 4))])
    threads = []
    _hinted_copy(w / 'one', w / 'one.copy', monkeypatch, copy=_copier_copy, threads=threads)
    assert threads == [threading.current_thread()]


def test_writeback_thread_is_joined_when_the_copy_fails(fs, workdir, monkeypatch):
    """sendfile failing half way (here: EIO on the third piece) raises, and the writeback thread
    has been joined by then: no hint can reach the fd number after the caller closes it."""
    w = workdir(fs)
    monkeypatch.setattr(_transfer, '_WRITEBACK_PIECE', MiB)
    write_sparse(w / 'dense', 5 * MiB, [(0, pattern(5 * MiB, 5))])
    real = os.sendfile
    sent = []

    def failing(out_fd, in_fd, offset, count):
        if len(sent) == 2:
            raise OSError(5, 'Input/output error')
        sent.append(offset)
        return real(out_fd, in_fd, offset, count)
    monkeypatch.setattr(_transfer.os, 'sendfile', failing)
    with pytest.raises(OSError):
        copy_file(w / 'dense', w / 'dense.copy', copy=lambda s, d, n: _transfer.copy_sparse(s, d, n, True))
    assert sent == [0, MiB]
    assert _writeback_threads() == []


def test_fstype_of_fd_names_the_mount_a_btrfs_subvolume_is_on(ext4, xfs, btrfs, workdir):
    """The filesystem type of an open fd comes from its mount id (fdinfo): st_dev would not find
    it for a btrfs subvolume, which has a device number of its own.  No such fd: None."""
    sub = workdir(btrfs) / 'sv'
    subprocess.run(['btrfs', 'subvolume', 'create', str(sub)], check=True, capture_output=True)
    assert os.stat(sub).st_dev != os.stat(btrfs).st_dev
    for path, kind in ((workdir(ext4), 'ext4'), (workdir(xfs), 'xfs'), (sub, 'btrfs')):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert _mounts.fstype_of_fd(fd) == kind, path
        finally:
            os.close(fd)
    assert _mounts.fstype_of_fd(-1) is None


@pytest.mark.parametrize('policy', ['never', 'auto'])
def test_one_file_is_fsynced_under_its_temp_name_before_the_rename(fs, workdir, monkeypatch, policy):
    """reflink_copy of one file (a restore of one too) has no syncfs of a tree after it, so the
    file is fsynced while it still has its temporary name: a crash leaves the old dest or the
    whole new one.  A new tree is synced whole (syncfs) before its rename, with no fsync per file."""
    w = workdir(fs)
    write_sparse(w / 'f', MiB, [(0, pattern(MiB, 6))])
    (w / 'dest').write_bytes(b'old')
    (w / 'tree').mkdir()
    write_sparse(w / 'tree' / 'g', MiB, [(0, pattern(MiB, 7))])
    synced = []
    real = os.fsync

    def recording(fd):
        synced.append(os.readlink('/proc/self/fd/%d' % fd))
        real(fd)
    monkeypatch.setattr(os, 'fsync', recording)        # the walker's fsync (_walk), any caller's
    reflink_copy(str(w / 'f'), str(w / 'dest'), policy=policy)
    assert len(synced) == 1, synced
    assert os.path.dirname(synced[0]) == str(w) and os.path.basename(synced[0]) not in ('dest', 'f'), synced
    assert (w / 'dest').read_bytes() == (w / 'f').read_bytes()
    del synced[:]
    reflink_copy(str(w / 'tree'), str(w / 'tree.copy'), policy=policy)
    assert synced == []
    assert (w / 'tree.copy' / 'g').read_bytes() == (w / 'tree' / 'g').read_bytes()


def test_copy_sparse_leaves_no_preallocation_in_holes(fs, workdir):
    """Megabytes of data, then a hole of megabytes: the hole stays a hole.  On XFS a file that
    grows gets blocks preallocated beyond its end; written past, they would stay in the hole
    (cp -a --reflink=never leaves ~2 MiB in this one).  The copy gives dst its size first."""
    w = workdir(fs)
    spans = [(0, 2 * MiB + 4096), (4 * MiB, 3 * MiB), (8 * MiB - 4096, 4096)]
    regions = [(off, pattern(n, i + 1)) for i, (off, n) in enumerate(spans)]
    write_sparse(w / 'src', 8 * MiB, regions)
    assert copy_file(w / 'src', w / 'dst') >= sum(n for _o, n in spans)
    with open(w / 'src', 'rb') as a, open(w / 'dst', 'rb') as b:
        assert a.read() == b.read()
    assert allocated(w / 'dst') <= allocated(w / 'src') + 3 * 64 * 1024
