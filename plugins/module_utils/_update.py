# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring an existing dest up to date with src (reflink_copy onto a file or
tree that is there already).

Every entry is compared with what dest has at its name.  A regular file
whose data is already src's (same size and ns mtime, or every extent
shared: FIEMAP, never reading data) only gets its metadata fixed; any other
change is written under a hidden temporary name and renamed over the old
one, so a reader sees the old file or the new one, never half of either.
Nothing in dest is deleted, except with ``mirror`` (rsync --delete): what
src does not have, excluded names aside; and the temporary files of a
killed run of ours.

A copied file's rename is held until a syncfs has put its data on disk
(_hold, _flush): XFS does not flush a file renamed over another, so a
crash soon after the rename would leave an empty file where the old one
was.  A clone needs no flush (its extents are in the same journal as the
rename).  Held renames are given in the walk's order, each directory's
metadata after its files; at most HOLD_FILES files or HOLD_BYTES of data
wait at once, so the old files' space comes back as the walk goes.  When
the walk returns, all of it is on disk.
"""

import errno
import os
import stat

from ._errors import BadInput, from_oserror
from ._extents import extents_equal
from ._tree import (
    PRESERVE_ALL, Meta, apply_meta_fd, display, is_stale_temp, join, lstat_at, meta_at, remove_tree_at, syncfs,
    temp_name, unlink_quietly,
)
from ._walk import Walker

HOLD_FILES = 8192           # copied files waiting for their rename, at most
HOLD_BYTES = 256 << 20      # and their data, at most
HOLD_DIRS = 256             # directory fds kept open for them, at most


class _Held(object):
    """One held step: a copied file's rename (tmp -> name) or, once its
    files are named, a directory's metadata (frame)."""
    __slots__ = ('dir_fd', 'tmp', 'name', 'path', 'frame')

    def __init__(self, dir_fd, tmp=None, name=None, path=None, frame=None):
        self.dir_fd, self.tmp, self.name, self.path, self.frame = dir_fd, tmp, name, path, frame


class UpdateTree(Walker):
    """Walker options, plus ``mirror``: delete what src does not have.
    dest exists (the root directory, or a file's parent).  ``deleted``
    counts what mirror removed (or would, in a dry run)."""

    def __init__(self, policy='auto', preserve=PRESERVE_ALL, excluder=None, one_fs=False,
                 dry_run=False, report=None, dest_dev=None, base=b'', mirror=False):
        Walker.__init__(self, policy, preserve, excluder, one_fs, dry_run, report, dest_dev, base)
        self.mirror = mirror
        self.deleted = 0
        self._held = []             # _Held steps, in the walk's order
        self._held_dirs = {}        # a directory's dst fd (its Frame's) -> our dup of it, for _held
        self._held_devs = {}        # st_dev -> a dup on it: what to syncfs (dest may hold mounts)
        self._held_paths = set()    # the paths of the held files
        self._held_bytes = 0

    def copy_tree(self, src_fd, dst_fd):
        try:
            Walker.copy_tree(self, src_fd, dst_fd)
            self._flush()
        finally:
            self._drop_held()       # after a failure: the old files keep their names

    # ------------------------------------------------------------ held renames

    def _name_new_file(self, dst_fd, tmp, name, path, method, nbytes):
        if method != 'copy' or self.sync_files:
            Walker._name_new_file(self, dst_fd, tmp, name, path, method, nbytes)
            return
        dup = self._held_dirs.get(dst_fd)
        if dup is None:
            dup = self._held_dirs[dst_fd] = os.dup(dst_fd)
            self._held_devs.setdefault(os.fstat(dup).st_dev, dup)
        self._held.append(_Held(dup, tmp, name, path))
        self._held_paths.add(path)
        self._held_bytes += nbytes

    def _entry(self, frame, dirent):
        # Here, between entries, so that a failed rename is reported as its own.
        if len(self._held) >= HOLD_FILES or self._held_bytes >= HOLD_BYTES or len(self._held_dirs) >= HOLD_DIRS:
            self._flush()
        return Walker._entry(self, frame, dirent)

    def _finish_dir(self, frame, is_root):
        dup = self._held_dirs.pop(frame.dst, None)
        if dup is None:
            Walker._finish_dir(self, frame, is_root)
            return
        # Its metadata after its held files: their renames move its mtime.
        self._held.append(_Held(dup, path=frame.rel, frame=(frame.rel, frame.meta, frame.existed)))
        if not is_root:
            frame.close()

    def _inner_hardlink(self, dst_fd, name, path, first_rel):
        if first_rel in self._held_paths:
            self._flush()       # a link to the new file, not to the one it replaces
        Walker._inner_hardlink(self, dst_fd, name, path, first_rel)

    def _flush(self):
        """The held files' data on disk, then their names and their
        directories' metadata, in the walk's order."""
        for fd in self._held_devs.values():
            syncfs(fd)
        named = 0
        try:
            for step in self._held:
                if step.frame is None:
                    try:
                        os.rename(step.tmp, step.name, src_dir_fd=step.dir_fd, dst_dir_fd=step.dir_fd)
                    except OSError as exc:
                        raise from_oserror(exc, display(step.path), 'rename')
                else:
                    rel, meta, existed = step.frame
                    self._set_dir_meta(step.dir_fd, rel, meta, os.fstat(step.dir_fd) if existed else None)
                named += 1
        finally:
            self._drop_held(named)

    def _drop_held(self, named=0):
        """Forget the held steps, unlinking the files of those from ``named``
        on (never named: the old files keep their names), and close our fds."""
        for step in self._held[named:]:
            if step.tmp is not None:
                unlink_quietly(step.dir_fd, step.tmp)
        for fd in set(step.dir_fd for step in self._held) | set(self._held_dirs.values()):
            os.close(fd)
        self._held, self._held_dirs, self._held_devs, self._held_paths, self._held_bytes = [], {}, {}, set(), 0

    def _root_existed(self):
        return True

    def _plain_files(self, frame, entries):
        if frame.dst is not None:
            self._sweep(frame, set(os.fsencode(e.name) for e in entries))
        return entries

    def _sweep(self, frame, src_names):
        """Remove our own temporary files left by a killed run and, with
        mirror, every entry src lacks, before the directory is filled."""
        with os.scandir(frame.dst) as it:
            names = sorted(os.fsencode(e.name) for e in it)
        dir_dev = None
        for name in names:
            if name in src_names:
                continue
            if is_stale_temp(name):
                if not self.dry_run:
                    remove_tree_at(frame.dst, name)
                continue
            if not self.mirror:
                continue
            st = lstat_at(frame.dst, name)
            path = join(frame.rel, name)
            if st is None or self.excluder and self.excluder.excluded(path, name, stat.S_ISDIR(st.st_mode)):
                continue
            if stat.S_ISDIR(st.st_mode):
                dir_dev = dir_dev or os.fstat(frame.dst).st_dev
                if st.st_dev != dir_dev:
                    raise BadInput('%s: another filesystem is mounted there; mirror will not delete it'
                                   % display(path), display(path), errno.EXDEV)
            self.deleted += 1
            self._report(path, 'delete', None, Meta(st))
            if self.dry_run:
                continue
            if stat.S_ISDIR(st.st_mode):
                # Out of the way first, so that no reader sees a half-deleted
                # directory under its name; a leftover is swept next time.
                doomed = temp_name(name)
                os.rename(name, doomed, src_dir_fd=frame.dst, dst_dir_fd=frame.dst)
                remove_tree_at(frame.dst, doomed)
            else:
                os.unlink(name, dir_fd=frame.dst)

    def _existing(self, dst_fd, name):
        return lstat_at(dst_fd, name) if dst_fd is not None else None

    def _dir(self, src_fd, dst_fd, prev_fd, name, path, st):
        if self.mirror and dst_fd is not None:
            existing = self._existing(dst_fd, name)
            if existing is not None and stat.S_ISDIR(existing.st_mode) and \
                    existing.st_dev != os.fstat(dst_fd).st_dev:
                # Another filesystem is mounted there: mirroring into it would
                # delete what it holds (a snapshot keeps a mount point empty).
                self.stats['dirs'] += 1
                return None
        return Walker._dir(self, src_fd, dst_fd, prev_fd, name, path, st)

    def _file_data(self, src_fd, dst_fd, prev_fd, name, path, st, dname):
        existing = self._existing(dst_fd, dname)
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise BadInput('%s: src is a file but dest is a directory; remove it first'
                           % display(path), display(path), errno.EISDIR)
        fd = self._open_src(src_fd, name, st, path)
        try:
            src_meta = self._src_meta(fd, st)
            if existing is not None and stat.S_ISREG(existing.st_mode) and \
                    self._refresh_existing(fd, dst_fd, dname, path, src_meta, existing):
                return
            self._write_file(fd, dst_fd, dname, path, src_meta, existing, st.st_dev)
        finally:
            os.close(fd)

    def _refresh_existing(self, fd, dst_fd, name, path, src_meta, existing):
        """An existing dest file: True if its data is already src's (same
        size and mtime, or every extent shared), fixing metadata in place."""
        dest_meta = meta_at(dst_fd, name, existing, self.xattrs)
        same_data = existing.st_size == src_meta.size and (
            ('timestamps' in self.preserve and existing.st_mtime_ns == src_meta.mtime_ns)
            or self._fully_shared(fd, dst_fd, name))
        if not same_data:
            return False
        if not src_meta.differs(dest_meta, self.preserve):
            self.stats['unchanged'] += 1
            return True
        self.stats['metadata'] += 1
        self._report(path, 'metadata', src_meta, dest_meta)
        if not self.dry_run:
            dfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst_fd)
            try:
                apply_meta_fd(dfd, src_meta, self.preserve)
            finally:
                os.close(dfd)
        return True

    def _fully_shared(self, fd, dst_fd, name):
        try:
            dfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst_fd)
        except OSError:
            return False
        try:
            return extents_equal(fd, dfd)
        finally:
            os.close(dfd)
