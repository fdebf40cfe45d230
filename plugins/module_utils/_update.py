# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bring an existing dest up to date with src (reflink_copy onto a file or
tree that is there already).

Every entry is compared with what dest has at its name.  A regular file
whose data is already src's (same size and ns mtime, or every extent
shared: FIEMAP, never reading data) only gets its metadata fixed; any other
change is written under a hidden temporary name and renamed over the old
one, so a reader sees the old file or the new one, never half of either.
Nothing in dest is deleted.
"""

import errno
import os
import stat

from ._errors import BadInput
from ._extents import extents_equal
from ._tree import apply_meta_fd, display, lstat_at, meta_at
from ._walk import Walker


class UpdateTree(Walker):
    """Walker options; dest exists (the root directory, or a file's parent)."""

    def _root_existed(self):
        return True

    def _existing(self, dst_fd, name):
        return lstat_at(dst_fd, name) if dst_fd is not None else None

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
            self._write_file(fd, dst_fd, dname, path, src_meta, existing)
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
