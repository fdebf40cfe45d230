# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving one file's data: a reflink (FICLONE) where the policy and the
filesystems allow it, else a sparse copy in the kernel (sendfile)."""

import errno
import fcntl
import functools
import os
import queue
import threading

from . import _ioctl
from ._errors import BadInput, CrossDevice, NotSupported, from_oserror
from ._mounts import fstype_of_fd
from ._tree import DIR_FLAGS, FILE_FLAGS, display

POLICIES = ('always', 'auto', 'never')
_FS_LEVEL_ERRORS = (NotSupported, CrossDevice)
# A copy this large starts its own writeback (see copy_sparse); smaller files, most of a tree's
# names and little of its bytes, would pay a system call each for little.
_WRITEBACK_MIN = 256 << 10
_SENDFILE_MAX = 0x7ffff000
# A big file is sent in pieces this size, each one's writeback started once it is in the page
# cache: the disk writes piece N while sendfile fills piece N+1, so the sync before the copy is
# published waits for the last piece, not for the whole file.
_WRITEBACK_PIECE = 32 << 20
# Where a big file's pieces are better hinted from a thread of their own (bench/README, fourth
# and fifth sessions): btrfs checksums and allocates in the caller of the hint, which inline stalls the
# copy; ext4 gains a little; on XFS the thread made the copy slower, so it hints inline there.
_WRITEBACK_THREAD_FS = frozenset(('btrfs', 'ext4'))


def _data_regions(fd, size):
    """(start, end) of each stretch of fd's first ``size`` bytes that holds
    data, holes skipped (SEEK_DATA/SEEK_HOLE; the whole file where the
    filesystem cannot tell).  The first question is SEEK_HOLE from 0: for
    the common file without holes it is the only one (one lseek, not two)."""
    pos = 0
    first = True
    while pos < size:
        try:
            if first:
                first = False
                data, hole = 0, os.lseek(fd, 0, os.SEEK_HOLE)
                if hole == 0:                   # starts with a hole: where is data?
                    continue
            else:
                data = os.lseek(fd, pos, os.SEEK_DATA)
                hole = os.lseek(fd, data, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:        # only a hole is left
                return
            if exc.errno != errno.EINVAL:        # EINVAL: no SEEK_DATA here
                raise
            data, hole = pos, size
        hole = min(hole, size)
        yield data, hole
        pos = hole


def data_bytes(fd, size):
    """The bytes a sparse copy of fd would write (what a dry run reports)."""
    return sum(max(0, end - start) for start, end in _data_regions(fd, size))


def copy_sparse(src_fd, dst_fd, size, writeback_thread=False):
    """Copy data without sharing it, keeping holes as holes, into dst_fd: a
    new, empty file at offset 0.  sendfile does the copy in the kernel and,
    unlike copy_file_range, never reflinks.  ``writeback_thread``: a file
    bigger than one piece has its writeback started from a thread (see
    _WRITEBACK_THREAD_FS), which is joined before this returns or raises."""
    writeback = _PieceWriteback(dst_fd) if writeback_thread and size > _WRITEBACK_PIECE else None
    try:
        return _copy_regions(src_fd, dst_fd, size,
                             writeback.start if writeback else functools.partial(_start_writeback, dst_fd))
    finally:
        if writeback is not None:
            writeback.close()


def _copy_regions(src_fd, dst_fd, size, start_writeback):
    """copy_sparse's copy, with start_writeback(offset, length) for the
    hints.  Only what is needed per file: no lseek of dst where data goes on
    where the last stretch ended, and no ftruncate for a file without holes
    (on XFS a truncate costs ~70 us and marks the inode for a flush at
    close)."""
    copied = 0
    end = 0             # dst's size and offset: sendfile writes at the offset, then moves it
    dense = True        # one stretch of data from 0 to the end, so far
    for data, hole in _data_regions(src_fd, size):
        if dense and not (data == 0 and hole >= size):
            # A file with holes gets its size first, so every write lands inside EOF: XFS
            # preallocates beyond EOF as a file grows, and a hole written past would keep
            # those blocks (cp -a does, ~2 MiB for a 2 MiB hole).
            dense = False
            os.ftruncate(dst_fd, size)
        if data != end:
            os.lseek(dst_fd, data, os.SEEK_SET)
        # A file without holes goes in pieces, each one's writeback started at once.
        piece = _WRITEBACK_PIECE if dense else _SENDFILE_MAX
        offset = data
        while offset < hole:
            sent = os.sendfile(dst_fd, src_fd, offset, min(hole - offset, piece))
            if sent == 0:                        # src shrank under us
                break
            if dense and sent >= _WRITEBACK_MIN:
                start_writeback(offset, sent)
            offset += sent
        copied += max(0, offset - data)
        end = max(end, offset)
        if offset < hole:
            break
    if dense and end != size:
        os.ftruncate(dst_fd, size)              # src shrank under us, or was all hole
    if not dense and copied >= _WRITEBACK_MIN:
        start_writeback(0, 0)
    return copied


def _start_writeback(fd, offset, length):
    """Start writing fd's range out now, without waiting (DONTNEED writes dirty pages back, then
    drops those already clean), so the disk works while the copy or the walk goes on: a copy is
    synced before it is published, and that syncfs was a third of a copy's time on ext4."""
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass        # only a hint: the sync before publishing writes it all the same


class _PieceWriteback(object):
    """_start_writeback of one fd's pieces, in order, from a thread: the copy
    goes on with piece N+1 while the hint for piece N does its work.  close()
    waits for every hint, so none runs once the caller closes the fd."""

    def __init__(self, fd):
        self._fd = fd
        self._pieces = queue.Queue()
        self._thread = threading.Thread(target=self._run, name='fslinks-writeback')
        self._thread.daemon = True
        self._thread.start()

    def start(self, offset, length):
        self._pieces.put((offset, length))

    def _run(self):
        while True:
            piece = self._pieces.get()
            if piece is None:
                return
            _start_writeback(self._fd, *piece)

    def close(self):
        self._pieces.put(None)
        self._thread.join()


def check_policy(policy):
    if policy not in POLICIES:
        raise BadInput('reflink must be one of %s, not %r' % (', '.join(POLICIES), policy))
    return policy


class DataCopier(object):
    """Moves one file's data with a policy, remembering per device pair that
    the kernel said "no reflink here" so that it asks only once."""

    def __init__(self, policy):
        self.policy = check_policy(policy)
        self._no_clone = {}
        self._writeback_thread = {}     # dst_dev -> its filesystem is in _WRITEBACK_THREAD_FS

    def predict(self, src_dev, dst_dev):
        """'reflink' or 'copy', as far as we know without trying."""
        if self.policy == 'never' or (src_dev, dst_dev) in self._no_clone:
            return 'copy'
        return 'reflink'

    def transfer(self, src_fd, dst_fd, size, src_dev, dst_dev, path):
        """Returns ('reflink'|'copy', bytes).  ``path`` (bytes) is only
        decoded for an error message: this runs once per file."""
        if self.policy != 'never' and (src_dev, dst_dev) not in self._no_clone:
            try:
                fcntl.ioctl(dst_fd, _ioctl.FICLONE, src_fd)
                return 'reflink', size
            except OSError as err:
                exc = from_oserror(err, display(path), 'reflink', _ioctl.REFLINK_UNSUPPORTED)
                if not isinstance(exc, _FS_LEVEL_ERRORS):
                    raise exc
                if self.policy == 'always':
                    if exc.errno == errno.EINVAL:
                        raise NotSupported('reflink: %s: this file cannot be cloned (on btrfs: a nodatacow file, '
                                           'chattr +C); reflink=auto would copy it' % display(path),
                                           display(path), exc.errno)
                    raise type(exc)('reflink: %s: %s' % (display(path), _reason(exc)), display(path), exc.errno)
                # EINVAL can be per file (btrfs nodatacow); the others are
                # properties of the filesystem pair.
                if exc.errno != errno.EINVAL:
                    self._no_clone[(src_dev, dst_dev)] = exc
        threaded = size > _WRITEBACK_PIECE and self._threads_writeback(dst_fd, dst_dev)
        return 'copy', copy_sparse(src_fd, dst_fd, size, threaded)

    def _threads_writeback(self, dst_fd, dst_dev):
        """Asked once per destination device, and only for files bigger than a piece."""
        known = self._writeback_thread.get(dst_dev)
        if known is None:
            known = self._writeback_thread[dst_dev] = fstype_of_fd(dst_fd) in _WRITEBACK_THREAD_FS
        return known

    def probe_tree(self, src_root_fd, dest_dir_fd, where):
        """probe() with some regular file of the tree, if it has one."""
        fd = first_regular_file(src_root_fd)
        if fd is not None:
            try:
                self.probe(fd, dest_dir_fd, where)
            finally:
                os.close(fd)

    def probe(self, src_fd, dest_dir_fd, where):
        """Clone src into an anonymous O_TMPFILE in dest's directory, before
        anything is created: reflink=always fails early with nothing left
        behind, auto learns to copy straight away.  Returns True (clones),
        False (cannot) or None: could not probe (no O_TMPFILE, read-only...),
        and the real run will tell."""
        if self.policy == 'never':
            return None
        key = (os.fstat(src_fd).st_dev, os.fstat(dest_dir_fd).st_dev)
        try:
            tmp = os.open('.', os.O_RDWR | os.O_CLOEXEC | os.O_TMPFILE, 0o600, dir_fd=dest_dir_fd)
        except OSError:
            return None
        try:
            _ioctl.clone_file(src_fd, tmp, where)
            return True
        except _FS_LEVEL_ERRORS as exc:
            if self.policy == 'always':
                raise type(exc)('reflink: %s: %s' % (where, _reason(exc)), where, exc.errno)
            if exc.errno != errno.EINVAL:
                self._no_clone[key] = exc
            return False
        finally:
            os.close(tmp)


def _reason(exc):
    if isinstance(exc, CrossDevice):
        return 'src and dest are on different filesystems'
    return _ioctl.REFLINK_UNSUPPORTED


def first_regular_file(root_fd, limit=10000):
    """An open fd of some regular file under root_fd (for probing), or None.
    Looks at no more than ``limit`` entries."""
    queue = [root_fd]
    seen = 0
    opened = []
    try:
        while queue and seen < limit:
            dfd = queue.pop(0)
            with os.scandir(dfd) as it:
                for entry in it:
                    seen += 1
                    if entry.is_file(follow_symlinks=False):
                        try:
                            return os.open(entry.name, FILE_FLAGS, dir_fd=dfd)
                        except OSError:
                            continue
                    if entry.is_dir(follow_symlinks=False) and len(opened) < 64:
                        try:
                            fd = os.open(entry.name, DIR_FLAGS, dir_fd=dfd)
                        except OSError:
                            continue
                        opened.append(fd)
                        queue.append(fd)
        return None
    finally:
        for fd in opened:
            os.close(fd)
