# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tree walker shared by the two ways of copying a tree: building a new
one (_fresh.FreshTree: snapshots, a new reflink_copy dest) and bringing an
existing one up to date (_update.UpdateTree: reflink_copy onto a dest).

The walk is depth-first with directory fds (openat, O_NOFOLLOW: nothing
inside a tree is ever followed) and an explicit stack of Frames, so deep
trees never meet Python's recursion limit.  Here: the per-entry dispatch,
directories, symlinks, special files, the later names of multiply-linked
inodes, and entries that vanish mid-walk.  What happens to a regular file
(and whether anything at dest is looked at first) is the subclass's.
"""

import errno
import os
import stat

from ._errors import BadInput, Changed, LinkError, from_oserror
from ._transfer import DataCopier, data_bytes
from ._tree import (
    FILE_FLAGS, PRESERVE_ALL, Meta, apply_meta_at, apply_meta_fd, display, join, lstat_at, meta_at,
    open_dir_at, raise_fd_limit, read_xattrs, temp_name, unlink_quietly,
)


def new_stats():
    return {
        'files': 0, 'dirs': 0, 'symlinks': 0, 'specials': 0,
        'linked': 0, 'reflinked': 0, 'copied': 0, 'hardlinks': 0, 'unchanged': 0,
        'metadata': 0, 'bytes_cloned': 0, 'bytes_copied': 0, 'bytes_linked': 0,
        'changed_during_run': 0, 'xattr_files': 0, 'added': 0, 'modified': 0, 'skipped': 0,
        'not_linked': 0,
    }


ON_ERROR = ('skip', 'fail')
SKIPPED_MAX = 100       # skipped entries named (in a record, a result); stats['skipped'] counts all

# What on_error=skip skips: an error of one entry (permission, an unreadable
# block), not of the whole destination.  ENOSPC, EDQUOT and EROFS would fail
# every later entry as well, and an error at the tree's root leaves nothing
# worth publishing: those always fail the run.
SKIPPABLE = frozenset((errno.EACCES, errno.EPERM, errno.EIO, errno.ENXIO, errno.ENODATA, errno.EOVERFLOW))


def _read_umask():
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


class Frame(object):
    """One directory of the walk: its fds in src, dest (None in a dry run
    of a directory still to be made) and the previous snapshot (None when
    there is nothing to link from), the entries still to visit, src's
    metadata for it, and whether dest already had it."""
    __slots__ = ('src', 'dst', 'prev', 'rel', 'entries', 'meta', 'existed')

    def __init__(self, src, dst, prev, rel, meta, existed=False):
        self.src, self.dst, self.prev, self.rel = src, dst, prev, rel
        self.entries = None
        self.meta = meta
        self.existed = existed

    def fds(self):
        return [fd for fd in (self.src, self.dst, self.prev) if fd is not None]

    def close(self):
        for fd in (self.src, self.dst, self.prev):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.src = self.dst = self.prev = None


class Walker(object):
    """Copy one tree (copy_tree) or file (copy_file) from src to dest.

    policy     -- always | auto | never (reflink), see _transfer.DataCopier
    preserve   -- subset of mode, ownership, timestamps, xattrs
    excluder   -- _tree.Excluder or None
    one_fs     -- do not descend into other filesystems (their mount point dir is kept)
    dry_run    -- decide and count, write nothing
    report     -- callback(rel, action, src_meta, dest_meta) for plans and diffs
    dest_dev   -- dest's device, for what a dry run predicts where dest does not exist yet
    base       -- the path of the copied tree's root inside a larger tree (b'': it is the
                  tree): reports and excludes see every entry as base/rel
    on_error   -- fail: an entry that cannot be read or written fails the walk; skip:
                  it is left out, counted (stats['skipped']) and named in ``skipped``
                  (the first SKIPPED_MAX, as {'path', 'error'}); see SKIPPABLE

    ``stats`` counts what was done (new_stats); ``changes`` counts every
    change, which is what makes a run "changed".  ``sync_files``: fsync each
    file before its rename, for one entry placed on its own (no syncfs of a
    whole tree follows it), so a crash leaves the old file or the new one.
    """

    sync_files = False

    def __init__(self, policy='auto', preserve=PRESERVE_ALL, excluder=None, one_fs=False,
                 dry_run=False, report=None, dest_dev=None, base=b'', on_error='fail'):
        self.copier = DataCopier(policy)
        self.on_error = on_error
        self.skipped = []
        self.preserve = frozenset(preserve)
        self.excluder = excluder
        self.one_fs = one_fs
        self.dry_run = dry_run
        self.report = report
        self.dest_dev = dest_dev
        self.base = base
        self.xattrs = 'xattrs' in self.preserve
        self.stats = new_stats()
        self.changes = 0
        self.umask = _read_umask()      # per run: the process may change it
        self._inodes = {}       # (dev, ino) of src files with nlink > 1 -> [dest rel, links left]
        self._dest_root = None
        self._root_dev = None

    # ------------------------------------------------------------ entry points

    def copy_tree(self, src_fd, dst_fd):
        """Copy the contents of the open directory src_fd into dst_fd (None
        in a dry run of a tree still to be made), then the root's metadata."""
        raise_fd_limit()
        self._dest_root = dst_fd
        root_st = os.fstat(src_fd)
        self._root_dev = root_st.st_dev
        cwd = os.open('.', os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)     # xattr reads move it
        try:
            self._walk_root(src_fd, dst_fd, root_st)
        finally:
            try:
                os.fchdir(cwd)
            finally:
                os.close(cwd)

    def copy_entry(self, src_dir_fd, src_name, dst_dir_fd, dst_name, st, path=None):
        """One file, symlink or special file src_dir_fd/src_name (lstat ``st``)
        to dst_dir_fd/dst_name; ``path`` names it in reports (dst_name)."""
        self._root_dev = st.st_dev
        path = path or dst_name
        if stat.S_ISREG(st.st_mode):
            self._file(src_dir_fd, dst_dir_fd, None, src_name, path, st, dname=dst_name)
        elif src_name != dst_name:
            raise BadInput('%s: only a regular file can be copied to another name' % display(path), display(path))
        elif stat.S_ISLNK(st.st_mode):
            self._symlink(src_dir_fd, dst_dir_fd, src_name, path, st)
        else:
            self._special(src_dir_fd, dst_dir_fd, src_name, path, st)

    def note(self, path, action, src_meta=None, dest_meta=None):
        """Count a change made on the walk's behalf (a new tree's root) and report it."""
        self._report(path, action, src_meta, dest_meta)

    # ------------------------------------------------------------ the walk

    def _walk_root(self, src_fd, dst_fd, root_st):
        root = Frame(src_fd, dst_fd, None, self.base, self._dir_meta(src_fd, root_st), existed=self._root_existed())
        self._walk_frames([root])

    def _root_existed(self):
        return False

    def _walk_frames(self, stack):
        """Depth-first from stack[0], whose fds belong to the caller."""
        try:
            while stack:
                frame = stack[-1]
                if frame.entries is None:
                    frame.entries = iter(self._plain_files(frame, self._entries(frame.src, frame.rel)))
                child = next(frame.entries, None)
                if child is None:
                    stack.pop()
                    self._finish_dir(frame, is_root=not stack)
                    continue
                pushed = self._entry(frame, child)
                if pushed is not None and not self._handed_off(pushed):
                    stack.append(pushed)
        finally:
            for frame in stack[1:]:
                frame.close()

    def _plain_files(self, frame, entries):
        """A subclass's fast pass over a directory's plain files: handles
        what it can and returns the entries left for _entry."""
        return entries

    def _handed_off(self, frame):
        """True if another process walks this directory now (see _fresh)."""
        return False

    def _entries(self, src_fd, rel):
        try:
            with os.scandir(src_fd) as it:
                return list(it)
        except OSError as exc:
            err = from_oserror(exc, display(rel or b'.'), 'read directory')
            if rel == self.base or not self._skippable(err):
                raise err
            # The directory itself is made (empty, with its metadata); what it holds is skipped.
            self._skip(rel, err)
            return []

    def _entry(self, frame, dirent):
        """One entry of a directory; returns the Frame of a directory to descend into."""
        name = os.fsencode(dirent.name)
        src_fd, dst_fd, prev_fd = frame.src, frame.dst, frame.prev
        path = join(frame.rel, name)
        try:
            # A fresh lstat, not the DirEntry's: a fast pass may have looked at
            # this entry a while ago, and stat and open must stay adjacent
            # (a file replaced in between is refused, not copied).
            st = os.stat(name, dir_fd=src_fd, follow_symlinks=False)
        except FileNotFoundError:
            self.stats['changed_during_run'] += 1     # vanished since readdir
            return None
        mode = st.st_mode
        if self.excluder and self.excluder.excluded(path, name, stat.S_ISDIR(mode)):
            return None
        try:
            if stat.S_ISDIR(mode):
                return self._dir(src_fd, dst_fd, prev_fd, name, path, st)
            if stat.S_ISREG(mode):
                self._file(src_fd, dst_fd, prev_fd, name, path, st)
            elif stat.S_ISLNK(mode):
                self._symlink(src_fd, dst_fd, name, path, st)
            else:
                self._special(src_fd, dst_fd, name, path, st)
        except (OSError, LinkError) as exc:
            self._failed(exc, src_fd, name, path, st, dst_fd)
        return None

    def _failed(self, exc, src_fd, name, path, st, dst_fd=None):
        """An entry's copy failed: go on if src deleted it meanwhile (rsync's
        "file has vanished"), or if it may be skipped (on_error); else raise
        the error with the path in it."""
        if getattr(exc, 'errno', None) == errno.ENOENT and lstat_at(src_fd, name) is None:
            self._vanished(path, st)
            return
        err = exc if isinstance(exc, LinkError) else from_oserror(exc, display(path), 'copy')
        if not self._skippable(err):
            raise err
        if dst_fd is not None and not stat.S_ISDIR(st.st_mode) and not self.dry_run and self._in_new_dir():
            unlink_quietly(dst_fd, name)       # a symlink or node made before its metadata failed
        self._forget(path, st)
        self._skip(path, err)

    def _skippable(self, err):
        """True if on_error=skip may leave this entry out: an entry's own
        error (SKIPPABLE).  A destination that fails for good (EIO, then
        remounted read-only) fails the next write with EROFS, or the publish."""
        return self.on_error == 'skip' and not isinstance(err, (BadInput, Changed)) and err.errno in SKIPPABLE

    def _skip(self, path, err):
        """Leave an entry out of the tree, on the record."""
        self.stats['skipped'] += 1
        if len(self.skipped) < SKIPPED_MAX:
            self.skipped.append({'path': display(path), 'error': str(err)})

    def _forget(self, path, st):
        """Uncount an entry that is not in the tree after all."""
        self.stats['dirs' if stat.S_ISDIR(st.st_mode) else 'files' if stat.S_ISREG(st.st_mode) else
                   'symlinks' if stat.S_ISLNK(st.st_mode) else 'specials'] -= 1
        first = self._inodes.get((st.st_dev, st.st_ino))
        if first is not None and first[0] == path:
            del self._inodes[(st.st_dev, st.st_ino)]      # a later name must not link to it

    def _vanished(self, path, st):
        """Forget an entry deleted from src while we were at it."""
        self.stats['changed_during_run'] += 1
        self._forget(path, st)

    def _existing(self, dst_fd, name):
        """What dest has at name (an lstat), or None; a new tree has nothing."""
        return None

    # ------------------------------------------------------------ directories

    def _dir_meta(self, fd, st):
        return Meta(st, read_xattrs(fd) if self.xattrs else None)

    def _dir(self, src_fd, dst_fd, prev_fd, name, path, st):
        self.stats['dirs'] += 1
        child_src = open_dir_at(src_fd, name, expect=st, where=path)
        meta = self._dir_meta(child_src, st)
        child_dst = child_prev = None
        try:
            existing = self._existing(dst_fd, name)
            if existing is not None and not stat.S_ISDIR(existing.st_mode):
                raise BadInput('%s: src is a directory but dest is not; remove it first'
                               % display(path), display(path), errno.ENOTDIR)
            if existing is None:
                self._report(path, 'create', meta, None)
                if not self.dry_run:
                    os.mkdir(name, 0o700, dir_fd=dst_fd)
            if dst_fd is not None and (existing is not None or not self.dry_run):
                child_dst = open_dir_at(dst_fd, name, where=path)
            if prev_fd is not None:
                prev_st = lstat_at(prev_fd, name)
                if prev_st is not None and stat.S_ISDIR(prev_st.st_mode):
                    child_prev = open_dir_at(prev_fd, name, where=path)
        except BaseException:
            for fd in (child_src, child_dst, child_prev):
                if fd is not None:
                    os.close(fd)
            raise
        frame = Frame(child_src, child_dst, child_prev, path, meta, existing is not None)
        if self.one_fs and st.st_dev != self._root_dev:
            # Keep the mount point itself, not what is mounted there (rsync -x).
            try:
                self._set_dir_meta(child_dst, path, meta, existing)
            finally:
                frame.close()
            return None
        return frame

    def _finish_dir(self, frame, is_root):
        """After the children: the directory's own metadata (its mtime moved
        while we created entries in it).  The root's fds are the caller's."""
        try:
            existing = os.fstat(frame.dst) if frame.existed else None
            self._set_dir_meta(frame.dst, frame.rel, frame.meta, existing)
        finally:
            if not is_root:
                frame.close()

    def _set_dir_meta(self, dst_fd, path, meta, existing):
        if existing is not None:
            before = Meta(existing, read_xattrs(dst_fd) if self.xattrs else None)
            if not meta.differs(before, self.preserve):
                return
            self.stats['metadata'] += 1
            self._report(path, 'metadata', meta, before)
        if self.dry_run or dst_fd is None:
            return
        apply_meta_fd(dst_fd, meta, self.preserve)

    # ------------------------------------------------------------ files

    def _file(self, src_fd, dst_fd, prev_fd, name, path, st, dname=None):
        """Regular file src_fd/name to dst_fd/dname (dname defaults to name)."""
        dname = dname or name
        self.stats['files'] += 1
        if st.st_nlink > 1 and self._later_name(src_fd, dst_fd, prev_fd, name, path, st, dname):
            return
        self._file_data(src_fd, dst_fd, prev_fd, name, path, st, dname)

    def _later_name(self, src_fd, dst_fd, prev_fd, name, path, st, dname):
        """A multiply-linked src inode: True if this name was made a link to
        the dest file of an earlier name (rsync -H), else remember it."""
        key = (st.st_dev, st.st_ino)
        first = self._inodes.get(key)
        if first is None:
            self._inodes[key] = [path, st.st_nlink - 1]
            return False
        first[1] -= 1
        if first[1] <= 0:
            del self._inodes[key]
        self._inner_hardlink(dst_fd, dname, path, first[0])
        return True

    def _file_data(self, src_fd, dst_fd, prev_fd, name, path, st, dname):
        raise NotImplementedError

    def _open_src(self, src_fd, name, st, path):
        try:
            fd = os.open(name, FILE_FLAGS, dir_fd=src_fd)
        except OSError as exc:
            raise from_oserror(exc, display(path), 'open')
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
            os.close(fd)
            raise Changed('open: %s: replaced while being read' % display(path), display(path), errno.EAGAIN)
        return fd

    def _src_meta(self, fd, st):
        meta = Meta(st, read_xattrs(fd) if self.xattrs else None)
        if meta.xattrs:
            self.stats['xattr_files'] += 1
        return meta

    def _write_file(self, fd, dst_fd, name, path, src_meta, existing, src_dev):
        """New data for dest/name from the open src fd, written under the
        name _write_name gives and renamed into place if that differs.
        ``src_dev``: fd's device, the st_dev _open_src checked it against."""
        before = Meta(existing) if existing is not None else None
        if self.dry_run:
            method = self.copier.predict(src_dev, self._dest_dev(dst_fd))
            self._count_write(method, data_bytes(fd, src_meta.size) if method == 'copy' else src_meta.size)
            self._report(path, method, src_meta, before)
            return
        tmp = self._write_name(name)
        born = self._born_mode(src_meta.mode)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, born, dir_fd=dst_fd)
        try:
            method, nbytes = self.copier.transfer(fd, out, src_meta.size, src_dev, self._dest_dev(dst_fd), path)
            if method == 'copy':     # a clone is atomic; a copy can catch a file mid-write
                after = os.fstat(fd)
                if after.st_size != src_meta.size or after.st_mtime_ns != src_meta.mtime_ns:
                    self.stats['changed_during_run'] += 1
            apply_meta_fd(out, src_meta, self.preserve, new=self._in_new_dir(), born_mode=born)
            if self.sync_files:
                os.fsync(out)
        except BaseException:
            os.close(out)
            unlink_quietly(dst_fd, tmp)
            raise
        os.close(out)
        if tmp != name:
            self._name_new_file(dst_fd, tmp, name, path, method, nbytes)
        self._count_write(method, nbytes if method == 'copy' else src_meta.size)
        self._report(path, method, src_meta, before)

    def _name_new_file(self, dst_fd, tmp, name, path, method, nbytes):  # pylint: disable=unused-argument
        """Rename a file written under tmp over its name (_update's walker
        holds a copy's rename until its data is on disk)."""
        try:
            os.rename(tmp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
        except BaseException:
            unlink_quietly(dst_fd, tmp)
            raise

    def _write_name(self, name):
        """Where new data is written first: a hidden temporary name, renamed
        over dest when complete, so no reader ever sees half a file."""
        return temp_name(name)

    def _born_mode(self, mode):
        return 0o600

    def _in_new_dir(self):
        """True if every file is created in a directory this walk made (see apply_meta_fd's new)."""
        return False

    def _count_write(self, method, nbytes):
        if method == 'reflink':
            self.stats['reflinked'] += 1
            self.stats['bytes_cloned'] += nbytes
        else:
            self.stats['copied'] += 1
            self.stats['bytes_copied'] += nbytes

    def _dest_dev(self, dst_fd):
        return os.fstat(dst_fd).st_dev if dst_fd is not None else self.dest_dev

    def _inner_hardlink(self, dst_fd, name, path, first_rel):
        """A later name of an inode already copied: link it to the first."""
        self.stats['hardlinks'] += 1
        existing = self._existing(dst_fd, name)
        if existing is not None:
            target = lstat_at(self._dest_root, self._in_dest(first_rel))
            if target is not None and (target.st_dev, target.st_ino) == (existing.st_dev, existing.st_ino):
                self.stats['unchanged'] += 1
                return
            if stat.S_ISDIR(existing.st_mode):
                raise BadInput('%s: src is a file but dest is a directory; remove it first'
                               % display(path), display(path), errno.EISDIR)
        self._report(path, 'hardlink', None, None)
        if self.dry_run:
            return
        tmp = name if existing is None else temp_name(name)
        self._link_from_root(first_rel, tmp, dst_fd)
        if tmp != name:
            os.rename(tmp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)

    def _in_dest(self, path):
        """A reported path (base/rel) as a path below the dest root."""
        return path[len(self.base) + 1:] if self.base else path

    def _link_from_root(self, path, name, dst_fd):
        """link the dest file of ``path`` to dst_fd/name; beyond PATH_MAX, walk
        to its directory with fds (O_NOFOLLOW) rather than handing the kernel the path."""
        rel = self._in_dest(path)
        if len(rel) < 4000:
            try:
                os.link(rel, name, src_dir_fd=self._dest_root, dst_dir_fd=dst_fd, follow_symlinks=False)
                return
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:
                    raise
        parts = rel.split(b'/')
        fds = []
        try:
            parent = self._dest_root
            for part in parts[:-1]:
                parent = open_dir_at(parent, part)
                fds.append(parent)
            os.link(parts[-1], name, src_dir_fd=parent, dst_dir_fd=dst_fd, follow_symlinks=False)
        finally:
            for fd in fds:
                os.close(fd)

    # ------------------------------------------------------------ symlinks and specials

    def _symlink(self, src_fd, dst_fd, name, path, st):
        self.stats['symlinks'] += 1
        try:
            target = os.readlink(name, dir_fd=src_fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:     # EINVAL: no longer a symlink
                raise
            raise Changed('readlink: %s: replaced while being read' % display(path), display(path), errno.EAGAIN)
        meta = meta_at(src_fd, name, st, self.xattrs)
        existing = self._existing(dst_fd, name)
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise BadInput('%s: src is a symlink but dest is a directory; remove it first'
                               % display(path), display(path), errno.EISDIR)
            if stat.S_ISLNK(existing.st_mode) and os.readlink(name, dir_fd=dst_fd) == target:
                self._fix_meta_at(dst_fd, name, path, meta, existing)
                return
        self._report(path, 'symlink', meta, Meta(existing) if existing is not None else None)
        if self.dry_run:
            return
        tmp = name if existing is None else temp_name(name)
        os.symlink(target, tmp, dir_fd=dst_fd)
        self._finish_at(dst_fd, tmp, name, meta)

    def _special(self, src_fd, dst_fd, name, path, st):
        self.stats['specials'] += 1
        meta = meta_at(src_fd, name, st, self.xattrs)
        existing = self._existing(dst_fd, name)
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise BadInput('%s: src is a special file but dest is a directory; remove it first'
                               % display(path), display(path), errno.EISDIR)
            if stat.S_IFMT(existing.st_mode) == stat.S_IFMT(st.st_mode) and existing.st_rdev == st.st_rdev:
                self._fix_meta_at(dst_fd, name, path, meta, existing)
                return
        self._report(path, 'special', meta, Meta(existing) if existing is not None else None)
        if self.dry_run:
            return
        tmp = name if existing is None else temp_name(name)
        os.mknod(tmp, stat.S_IFMT(st.st_mode) | 0o600, st.st_rdev, dir_fd=dst_fd)
        self._finish_at(dst_fd, tmp, name, meta)

    def _fix_meta_at(self, dst_fd, name, path, meta, existing):
        before = meta_at(dst_fd, name, existing, self.xattrs)
        if not meta.differs(before, self.preserve):
            self.stats['unchanged'] += 1
            return
        self.stats['metadata'] += 1
        self._report(path, 'metadata', meta, before)
        if not self.dry_run:
            apply_meta_at(dst_fd, name, meta, self.preserve)

    def _finish_at(self, dst_fd, tmp, name, meta):
        try:
            apply_meta_at(dst_fd, tmp, meta, self.preserve)
            if tmp != name:
                os.rename(tmp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
        except BaseException:
            if tmp != name:
                unlink_quietly(dst_fd, tmp)
            raise

    def _report(self, path, action, src_meta, dest_meta):
        """Every change goes through here: it is what makes a run 'changed'."""
        self.changes += 1
        if self.report is not None:
            self.report(path, action, src_meta, dest_meta)
