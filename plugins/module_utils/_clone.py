# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Clone or copy files and trees, with a reflink policy.

One walker serves every caller: ``reflink_copy`` (into a dest that may
already exist: compare, replace atomically) and snapshots (into a fresh
``.partial`` directory, optionally hard-linking unchanged files from the
previous snapshot).
"""

import errno
import fcntl
import os
import stat
import time

from . import _ioctl
from ._errors import BadInput, Changed, CrossDevice, LinkError, NotSupported, from_oserror
from ._extents import extents_equal
from ._tree import (
    DIR_FLAGS, FILE_FLAGS, PRESERVE_ALL, Meta, apply_meta_at, apply_meta_fd, display, join,
    lstat_at, meta_at, proc_path, open_dir, open_dir_at, raise_fd_limit, read_xattrs, remove_tree_at,
    reset_new_dir, syncfs,
)

POLICIES = ('always', 'auto', 'never')
_FS_LEVEL_ERRORS = (NotSupported, CrossDevice)
_SENDFILE_MAX = 0x7ffff000
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _read_umask():
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def new_stats():
    return {
        'files': 0, 'dirs': 0, 'symlinks': 0, 'specials': 0,
        'linked': 0, 'reflinked': 0, 'copied': 0, 'hardlinks': 0, 'unchanged': 0,
        'metadata': 0, 'bytes_cloned': 0, 'bytes_copied': 0, 'bytes_linked': 0,
        'changed_during_run': 0, 'xattr_files': 0,
    }


def copy_sparse(src_fd, dst_fd, size, where='dest'):
    """Copy data without sharing it, keeping holes as holes.  sendfile does
    the copy in the kernel and, unlike copy_file_range, never reflinks."""
    copied = 0
    pos = 0
    while pos < size:
        try:
            data = os.lseek(src_fd, pos, os.SEEK_DATA)
            hole = os.lseek(src_fd, data, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:        # only a hole is left
                break
            if exc.errno != errno.EINVAL:        # EINVAL: no SEEK_DATA here
                raise
            data, hole = pos, size
        hole = min(hole, size)
        os.lseek(dst_fd, data, os.SEEK_SET)
        offset = data
        while offset < hole:
            sent = os.sendfile(dst_fd, src_fd, offset, min(hole - offset, _SENDFILE_MAX))
            if sent == 0:                        # src shrank under us
                break
            offset += sent
        copied += offset - data
        if offset < hole:
            break
        pos = hole
    os.ftruncate(dst_fd, size)
    return copied


class DataCopier(object):
    """Moves one file's data with a policy, remembering per device pair that
    the kernel said "no reflink here" so that it asks only once."""

    def __init__(self, policy):
        if policy not in POLICIES:
            raise BadInput('reflink must be one of %s, not %r' % (', '.join(POLICIES), policy))
        self.policy = policy
        self._no_clone = {}

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
        return 'copy', copy_sparse(src_fd, dst_fd, size, display(path))

    def probe_tree(self, src_root_fd, dest_dir_fd, where):
        """probe() with some regular file of the tree, if it has one."""
        fd = _first_regular_file(src_root_fd)
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


class _XattrReader(object):
    """Whether a src file and its namesake in the previous snapshot carry the
    same xattrs (rsync -X semantics), for the files of one directory.

    The *xattr calls take no dir fd: src names are read relative to the
    working directory, moved to src's directory once (a /proc/self/fd path
    per file costs the kernel twice as much); the caller restores it."""

    def __init__(self, src_fd, prev_fd, prev_may_have):
        try:
            os.fchdir(src_fd)
            self.src = ''
        except OSError:
            self.src = '/proc/self/fd/%d/' % src_fd
        self.prev = '/proc/self/fd/%d/' % prev_fd
        self.prev_may_have = prev_may_have

    def same(self, name):
        """(same, 1 if the file has xattrs else 0)"""
        src = read_xattrs(self.src + name, follow=False)
        if not src and not self.prev_may_have:
            return True, 0
        return src == read_xattrs(self.prev + name, follow=False), 1 if src else 0


class TreeCopier(object):
    """Copy one file or tree from src to dest.

    policy     -- always | auto | never (reflink)
    preserve   -- subset of mode, ownership, timestamps, xattrs
    fresh      -- dest is a new empty directory: skip every comparison
    link_from  -- fd of a previous copy: link unchanged files from it (rsync --link-dest)
    excluder   -- _tree.Excluder or None
    one_fs     -- do not descend into other filesystems (their mount point dir is kept)
    dry_run    -- decide and count, write nothing
    report     -- callback(rel, action, src_meta, dest_meta) for plans and diffs
    """

    def __init__(self, policy='auto', preserve=PRESERVE_ALL, fresh=False, link_from=None,
                 excluder=None, one_fs=False, dry_run=False, report=None, fsync=False):
        self.copier = DataCopier(policy)
        self.preserve = frozenset(preserve)
        self.fresh = fresh
        self.link_from = link_from
        self.excluder = excluder
        self.one_fs = one_fs
        self.dry_run = dry_run
        self.report = report
        self.fsync = fsync
        self.xattrs = 'xattrs' in self.preserve
        self.stats = new_stats()
        self._inodes = {}       # (dev, ino) of src files with nlink > 1 -> [dest rel, links left]
        self._dest_root = None
        self._root_dev = None
        self.dest_dev = None    # dest's device where known (a fresh tree, predictions)
        self.changes = 0
        self.umask = _read_umask()      # per run: the process may change it
        self.link_from_xattrs = True    # may files of link_from have xattrs?
        self.workers = 1                # processes walking at once (fresh trees only)
        self.scratch_fd = None          # a directory next to dest (same fs) where the
        self.scratch_name = None        # parallel walk may make one of its own, by this name
        self._pool = None
        self._claims_fd = None

    # ------------------------------------------------------------ entry points

    def copy_tree(self, src_fd, dst_fd):
        """Copy the contents of the open directory src_fd into dst_fd
        (which exists), then the root's metadata."""
        raise_fd_limit()
        self._dest_root = dst_fd
        root_st = os.fstat(src_fd)
        self._root_dev = root_st.st_dev
        cwd = os.open('.', os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)     # _XattrReader moves it
        try:
            if self.workers > 1 and self.fresh and not self.dry_run and self.report is None \
                    and self.scratch_fd is not None:
                self._walk_parallel(src_fd, dst_fd)
            else:
                self._walk(src_fd, dst_fd, self.link_from, root_st)
        finally:
            try:
                os.fchdir(cwd)
            finally:
                os.close(cwd)

    # ------------------------------------------------------------ the walk

    def _walk_parallel(self, src_fd, dst_fd):
        """The same walk in self.workers processes (see _parallel)."""
        # Imported here: reflink_copy and link_facts never walk in parallel
        # and need not load sockets, pickle and ctypes (~20 ms a module run).
        from . import _parallel     # pylint: disable=import-outside-toplevel
        scratch_fd, claims = self.scratch_fd, self.scratch_name
        os.mkdir(claims, 0o700, dir_fd=scratch_fd)
        try:
            self._claims_fd = open_dir_at(scratch_fd, claims)
            self._pool = _parallel.Pool(self.workers)
            base, changes = dict(self.stats), self.changes
            roots = [src_fd, dst_fd] + ([self.link_from] if self.link_from is not None else [])
            for stats, worker_changes in self._pool.run(self, roots, keep=[self._claims_fd]):
                for key, value in stats.items():
                    self.stats[key] += value - base[key]
                self.changes += worker_changes - changes
        except BaseException:
            self._drop_claims(quietly=True)     # never mask the run's own error
            raise
        self._drop_claims()

    def _drop_claims(self, quietly=False):
        self._pool = None
        try:
            if self._claims_fd is not None:
                os.close(self._claims_fd)
                self._claims_fd = None
            remove_tree_at(self.scratch_fd, os.fsencode(self.scratch_name))
        except OSError:
            if not quietly:
                raise       # a leftover the next run removes; the caller discards this one

    def run_job(self, rel, fds):
        """In a worker process: walk the directory whose fds the pool sent."""
        src_fd, dst_fd = fds[0], fds[1]
        prev_fd = fds[2] if len(fds) > 2 else None
        meta = self._dir_meta(src_fd, os.fstat(src_fd))
        self._walk_frames([[src_fd, dst_fd, prev_fd, rel, None, meta, False]])

    def result(self):
        """In a worker process: what it did, for the parent to add up."""
        return dict(self.stats), self.changes

    def _walk(self, src_root, dst_root, prev_root, root_st):
        # Frame: [src_fd, dst_fd or None, prev_fd or None, rel, entries, src_meta, existed]
        self._walk_frames([[src_root, dst_root, prev_root, b'', None, self._dir_meta(src_root, root_st), False]])

    def _walk_frames(self, stack):
        """Depth-first from stack[0], whose fds belong to the caller. An
        explicit stack: deep trees must not hit Python's recursion limit."""
        try:
            while stack:
                frame = stack[-1]
                if frame[4] is None:
                    entries = self._entries(frame[0], frame[3])
                    if frame[1] is not None and self.fresh and not self.dry_run:
                        entries = (self._link_pass if frame[2] is not None else self._clone_pass)(frame, entries)
                    frame[4] = iter(entries)
                child = next(frame[4], None)
                if child is None:
                    stack.pop()
                    self._finish_dir(frame, stack[-1] if stack else None)
                    continue
                pushed = self._entry(frame, child)
                if pushed is None:
                    continue
                if self._pool is not None and \
                        self._pool.offload(pushed[3], [fd for fd in pushed[:3] if fd is not None]):
                    self._close_frame(pushed)       # another worker walks it now
                else:
                    stack.append(pushed)
        finally:
            for frame in stack[1:]:
                self._close_frame(frame)

    def _entries(self, src_fd, rel):
        try:
            with os.scandir(src_fd) as it:
                return list(it)
        except OSError as exc:
            raise from_oserror(exc, display(rel or b'.'), 'read directory')

    def _clone_pass(self, frame, entries):
        """The hot path of a new reflink or copy snapshot: the plain files of
        one directory, without the general path's per-entry dispatch; the
        rest (directories, symlinks, inner hard links...) is returned."""
        src_fd, dst_fd, rel = frame[0], frame[1], frame[3]
        is_reg = stat.S_ISREG
        excluder = self.excluder or None
        stats = self.stats
        rest = []
        for dirent in entries:
            try:
                st = dirent.stat(follow_symlinks=False)
            except FileNotFoundError:
                rest.append(dirent)
                continue
            if not is_reg(st.st_mode) or st.st_nlink > 1:
                rest.append(dirent)
                continue
            name = os.fsencode(dirent.name)
            path = join(rel, name)
            if excluder is not None and excluder.excluded(path, name, False):
                rest.append(dirent)
                continue
            stats['files'] += 1
            try:
                fd = self._open_src(src_fd, name, st, path)
            except (OSError, LinkError) as exc:
                self._failed(exc, src_fd, name, path, st)
                continue
            try:
                meta = Meta(st, read_xattrs(fd) if self.xattrs else None)
                if meta.xattrs:
                    stats['xattr_files'] += 1
                self._write_file(fd, dst_fd, name, path, meta, None)
            except (OSError, LinkError) as exc:
                self._failed(exc, src_fd, name, path, st)
            finally:
                os.close(fd)
        return rest

    def _link_pass(self, frame, entries):
        """The hot path of a steady-state hardlink snapshot: link every plain
        file of one directory that is unchanged since the previous snapshot,
        and return the entries left for the general path (directories,
        symlinks, changed files, inner hard links, anything unusual).

        Same decision as _file + _link_unchanged, with what costs per file
        hoisted out of the loop: stat results compared inline, str names
        (the kernel gets the same bytes), counters summed once.
        """
        src_fd, dst_fd, prev_fd, rel = frame[0], frame[1], frame[2], frame[3]
        lstat, link, is_reg = os.lstat, os.link, stat.S_ISREG
        excluder = self.excluder or None        # an empty Excluder is falsy: test it once
        report = self.report
        xattrs = _XattrReader(src_fd, prev_fd, self.link_from_xattrs) if self.xattrs else None
        rest = []
        linked = nbytes = with_xattrs = 0
        try:
            for dirent in entries:
                name = dirent.name
                try:
                    st = dirent.stat(follow_symlinks=False)
                except FileNotFoundError:
                    rest.append(dirent)     # vanished: the general path counts it
                    continue
                if not is_reg(st.st_mode) or st.st_nlink > 1 or \
                        excluder is not None and excluder.excluded(join(rel, os.fsencode(name)), os.fsencode(name), False):
                    rest.append(dirent)
                    continue
                try:
                    prev = lstat(name, dir_fd=prev_fd)
                except FileNotFoundError:
                    rest.append(dirent)
                    continue
                if (prev.st_mode != st.st_mode or prev.st_size != st.st_size or prev.st_mtime_ns != st.st_mtime_ns
                        or prev.st_uid != st.st_uid or prev.st_gid != st.st_gid):
                    rest.append(dirent)
                    continue
                if xattrs is not None:
                    same, has = xattrs.same(name)
                    if not same:
                        rest.append(dirent)
                        continue
                    with_xattrs += has
                try:
                    link(name, name, src_dir_fd=prev_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
                except OSError as exc:
                    # EMLINK: too many links to that inode; EXDEV: another btrfs
                    # subvolume; ENOENT: gone from the previous snapshot. A copy.
                    if exc.errno in (errno.EMLINK, errno.EXDEV, errno.ENOENT):
                        rest.append(dirent)
                        continue
                    raise from_oserror(exc, display(join(rel, os.fsencode(name))), 'link')
                linked += 1
                nbytes += st.st_size
                if report is not None:
                    report(join(rel, os.fsencode(name)), 'link', None, None)
        finally:
            stats = self.stats
            stats['files'] += linked
            stats['linked'] += linked
            stats['bytes_linked'] += nbytes
            stats['xattr_files'] += with_xattrs
            self.changes += linked
        return rest

    def _close_frame(self, frame):
        for fd in (frame[0], frame[1], frame[2]):
            if fd is not None and fd >= 0:
                os.close(fd)
        frame[0] = frame[1] = frame[2] = None

    def _dir_meta(self, fd, st):
        return Meta(st, read_xattrs(fd) if self.xattrs else None)

    def _entry(self, frame, dirent):
        name = os.fsencode(dirent.name)
        src_fd, dst_fd, prev_fd, rel = frame[0], frame[1], frame[2], frame[3]
        path = join(rel, name)
        try:
            # A fresh lstat, not the DirEntry's: a hot pass may have looked at
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
            self._failed(exc, src_fd, name, path, st)
        return None

    def _failed(self, exc, src_fd, name, path, st):
        """An entry's copy failed: go on if src deleted it meanwhile (rsync's
        "file has vanished"), else raise the error with the path in it."""
        if getattr(exc, 'errno', None) == errno.ENOENT and lstat_at(src_fd, name) is None:
            self._vanished(path, st)
            return
        if isinstance(exc, LinkError):
            raise exc
        raise from_oserror(exc, display(path), 'copy')

    def _vanished(self, path, st):
        """Forget an entry deleted from src while we were at it."""
        self.stats['changed_during_run'] += 1
        self.stats['dirs' if stat.S_ISDIR(st.st_mode) else 'files' if stat.S_ISREG(st.st_mode) else
                   'symlinks' if stat.S_ISLNK(st.st_mode) else 'specials'] -= 1
        first = self._inodes.get((st.st_dev, st.st_ino))
        if first is not None and first[0] == path:
            del self._inodes[(st.st_dev, st.st_ino)]

    # ------------------------------------------------------------ directories

    def _dir(self, src_fd, dst_fd, prev_fd, name, path, st):
        self.stats['dirs'] += 1
        child_src = open_dir_at(src_fd, name, expect=st, where=path)
        meta = self._dir_meta(child_src, st)
        child_dst = child_prev = None
        try:
            existing = None if (self.fresh or dst_fd is None) else lstat_at(dst_fd, name)
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
        if self.one_fs and st.st_dev != self._root_dev:
            # Keep the mount point itself, not what is mounted there (rsync -x).
            self._set_dir_meta(child_dst, path, meta, existing)
            for fd in (child_src, child_dst, child_prev):
                if fd is not None:
                    os.close(fd)
            return None
        return [child_src, child_dst, child_prev, path, None, meta, existing is not None]

    def _finish_dir(self, frame, parent):
        """After the children: the directory's own metadata (its mtime moved
        while we created entries in it)."""
        if parent is None:     # the root: caller owns the fds
            existing = None if self.fresh else os.fstat(frame[1])
            self._set_dir_meta(frame[1], frame[3], frame[5], existing)
            return
        try:
            existing = os.fstat(frame[1]) if (frame[6] and frame[1] is not None) else None
            self._set_dir_meta(frame[1], frame[3], frame[5], existing)
        finally:
            self._close_frame(frame)

    def _set_dir_meta(self, dst_fd, path, meta, existing):
        if existing is not None and not self.fresh:
            before = Meta(existing, read_xattrs(dst_fd) if self.xattrs else None)
            diff = meta.differs(before, self.preserve)
            if not diff:
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
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1:
            if self._claims_fd is not None:
                self._claimed_file(src_fd, dst_fd, prev_fd, name, path, st)
                return
            first = self._inodes.get(key)
            if first is not None:
                self._inner_hardlink(dst_fd, dname, path, first, key)
                return
            self._inodes[key] = [path, st.st_nlink - 1]
        self._file_data(src_fd, dst_fd, prev_fd, name, path, st, dname)

    def _file_data(self, src_fd, dst_fd, prev_fd, name, path, st, dname):
        existing = None if (self.fresh or dst_fd is None) else lstat_at(dst_fd, dname)
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise BadInput('%s: src is a file but dest is a directory; remove it first'
                           % display(path), display(path), errno.EISDIR)
        if prev_fd is not None and existing is None and self._link_unchanged(prev_fd, dst_fd, src_fd, name, path, st):
            return
        src_meta = None
        fd = self._open_src(src_fd, name, st, path)
        try:
            if src_meta is None:
                src_meta = Meta(st, read_xattrs(fd) if self.xattrs else None)
                if src_meta.xattrs:
                    self.stats['xattr_files'] += 1
            if existing is not None and stat.S_ISREG(existing.st_mode):
                if self._refresh_existing(fd, dst_fd, dname, path, src_meta, existing):
                    return
            self._write_file(fd, dst_fd, dname, path, src_meta, existing)
        finally:
            os.close(fd)

    def _claimed_file(self, src_fd, dst_fd, prev_fd, name, path, st):
        """One name of a multiply-linked inode, in a parallel walk: other names
        may be in another worker's directories. Each worker makes its own
        file, then claims the inode with a link in the claims directory; the
        first claim wins (link is atomic) and every later name becomes a
        hard link to the winner, so src's link structure is kept."""
        before, changes = dict(self.stats), self.changes
        self._file_data(src_fd, dst_fd, prev_fd, name, path, st, name)
        key = b'%d-%d' % (st.st_dev, st.st_ino)
        try:
            os.link(name, key, src_dir_fd=dst_fd, dst_dir_fd=self._claims_fd, follow_symlinks=False)
            return
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno != errno.EMLINK or prev_fd is None:
                raise
            # Linked from the previous snapshot to an inode at its link limit:
            # make this name a copy of its own, which can be claimed.
            os.unlink(name, dir_fd=dst_fd)
            self.stats.update(before)
            self.changes = changes
            self._claimed_file(src_fd, dst_fd, None, name, path, st)
            return
        self.stats.update(before)       # counted as a later name, not as data
        self.stats['hardlinks'] += 1
        self.changes = changes + 1
        first = os.stat(key, dir_fd=self._claims_fd, follow_symlinks=False)
        mine = os.stat(name, dir_fd=dst_fd, follow_symlinks=False)
        if (first.st_dev, first.st_ino) == (mine.st_dev, mine.st_ino):
            return      # both names were linked from the same inode of the previous snapshot
        tmp = temp_name(name)
        os.link(key, tmp, src_dir_fd=self._claims_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        try:
            os.rename(tmp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
        except BaseException:
            _unlink_quietly(dst_fd, tmp)
            raise

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

    def _link_unchanged(self, prev_fd, dst_fd, src_fd, name, path, st):
        """rsync --link-dest: link when equal in every preserved attribute.
        The hot path of steady-state snapshots: stat results are compared
        directly, xattrs (two listxattr calls) only when the rest is equal."""
        try:
            prev = os.stat(name, dir_fd=prev_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if (prev.st_mode != st.st_mode or prev.st_size != st.st_size or prev.st_mtime_ns != st.st_mtime_ns
                or prev.st_uid != st.st_uid or prev.st_gid != st.st_gid):
            return False
        src_xattrs = None
        if self.xattrs:
            src_xattrs = read_xattrs(proc_path(src_fd, name), follow=False)
            # The previous snapshot's record says whether any of its files
            # has xattrs; if none has, there is nothing to read there.
            if (src_xattrs or self.link_from_xattrs) and \
                    src_xattrs != read_xattrs(proc_path(prev_fd, name), follow=False):
                return False
        if not self.dry_run:
            try:
                os.link(name, name, src_dir_fd=prev_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
            except OSError as exc:
                # EMLINK: too many links to that inode; EXDEV: the previous
                # snapshot is another btrfs subvolume.  Either way: a new copy.
                if exc.errno in (errno.EMLINK, errno.EXDEV):
                    return False
                raise
        self._report(path, 'link', None, None)
        self.stats['linked'] += 1
        self.stats['bytes_linked'] += st.st_size
        if src_xattrs:
            self.stats['xattr_files'] += 1
        return True

    def _refresh_existing(self, fd, dst_fd, name, path, src_meta, existing):
        """An existing dest file: True if its data is already src's (same
        size and mtime, or every extent shared), fixing metadata in place."""
        dest_meta = meta_at(dst_fd, name, existing, self.xattrs)
        same_data = existing.st_size == src_meta.size and (
            ('timestamps' in self.preserve and existing.st_mtime_ns == src_meta.mtime_ns)
            or self._fully_shared(fd, dst_fd, name))
        if not same_data:
            return False
        diff = src_meta.differs(dest_meta, self.preserve)
        if not diff:
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

    def _write_file(self, fd, dst_fd, name, path, src_meta, existing):
        """New data for dest: into a temporary name when dest exists (then
        renamed over it), straight to the name in a fresh tree."""
        before = Meta(existing) if existing is not None else None
        src_dev = self._src_dev_of(fd)
        if self.dry_run:
            method = self.copier.predict(src_dev, self._dest_dev(dst_fd))
            self._count_write(method, src_meta.size)
            self._report(path, method, src_meta, before)
            return
        tmp = name if self.fresh else temp_name(name)
        # In a fresh tree (its directories are 0700 until finished) a file
        # may be born with its final permissions, saving a chmod.
        born = self._born_mode(src_meta.mode) if self.fresh else 0o600
        out = os.open(tmp, _CREATE, born, dir_fd=dst_fd)
        try:
            method, nbytes = self.copier.transfer(fd, out, src_meta.size, src_dev,
                                                  self._dest_dev(dst_fd), path)
            if method == 'copy':     # a clone is atomic; a copy can catch a file mid-write
                after = os.fstat(fd)
                if after.st_size != src_meta.size or after.st_mtime_ns != src_meta.mtime_ns:
                    self.stats['changed_during_run'] += 1
            apply_meta_fd(out, src_meta, self.preserve, new=self.fresh, born_mode=born)
            if self.fsync:
                os.fsync(out)
        except BaseException:
            os.close(out)
            _unlink_quietly(dst_fd, tmp)
            raise
        os.close(out)
        if tmp != name:
            try:
                os.rename(tmp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
            except BaseException:
                _unlink_quietly(dst_fd, tmp)
                raise
        self._count_write(method, nbytes if method == 'copy' else src_meta.size)
        self._report(path, method, src_meta, before)

    def _born_mode(self, mode):
        perm = stat.S_IMODE(mode)
        if perm & ~0o777 or perm & self.umask or 'mode' not in self.preserve:
            return 0o600
        return perm

    def _count_write(self, method, nbytes):
        if method == 'reflink':
            self.stats['reflinked'] += 1
            self.stats['bytes_cloned'] += nbytes
        else:
            self.stats['copied'] += 1
            self.stats['bytes_copied'] += nbytes

    def _dest_dev(self, dst_fd):
        """Device of dest: one for the whole tree in a fresh copy (we made
        every directory of it), asked per directory otherwise."""
        if self.fresh and self.dest_dev is not None or dst_fd is None:
            return self.dest_dev
        return os.fstat(dst_fd).st_dev

    def _src_dev_of(self, fd):
        # Files of one src directory share its device unless one_fs is off
        # and the walk crossed into another filesystem; st_dev is in the
        # lstat we already have, so this costs nothing on the common path.
        return os.fstat(fd).st_dev if not self.one_fs else self._root_dev

    def _inner_hardlink(self, dst_fd, name, path, first, key):
        """A later name of an inode already copied: link it to the first."""
        first_rel = first[0]
        first[1] -= 1
        if first[1] <= 0:
            del self._inodes[key]
        self.stats['hardlinks'] += 1
        existing = None if (self.fresh or dst_fd is None) else lstat_at(dst_fd, name)
        if existing is not None and dst_fd is not None:
            target = lstat_at(self._dest_root, first_rel)
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

    def _link_from_root(self, rel, name, dst_fd):
        """link dest_root/rel to dst_fd/name; beyond PATH_MAX, walk to rel's
        directory with fds (O_NOFOLLOW) rather than handing the kernel the path."""
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
        existing = None if (self.fresh or dst_fd is None) else lstat_at(dst_fd, name)
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
        existing = None if (self.fresh or dst_fd is None) else lstat_at(dst_fd, name)
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
                _unlink_quietly(dst_fd, tmp)
            raise

    def _report(self, path, action, src_meta, dest_meta):
        """Every change goes through here: it is what makes a run 'changed'."""
        self.changes += 1
        if self.report is not None:
            self.report(path, action, src_meta, dest_meta)


def temp_name(name):
    """A hidden name next to ``name`` for write-then-rename."""
    return b'.%s.fslinks-%d-%d.tmp' % (name[:200], os.getpid(), time.monotonic_ns() % 1000000007)


def _unlink_quietly(dfd, name):
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


# ---------------------------------------------------------------- one request

def _first_regular_file(root_fd, limit=10000):
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


def check_preserve(preserve):
    """preserve as a frozenset of known names, or BadInput."""
    if isinstance(preserve, (str, bytes)) or not hasattr(preserve, '__iter__'):
        raise BadInput('preserve must be a list of %s, got %r' % (', '.join(sorted(PRESERVE_ALL)), preserve))
    unknown = [p for p in preserve if p not in PRESERVE_ALL]
    if unknown:
        raise BadInput('preserve: unknown %r (known: %s)' % (unknown, ', '.join(sorted(PRESERVE_ALL))))
    return frozenset(preserve)


def _method(stats):
    if stats['copied']:
        return 'copy'
    if stats['reflinked']:
        return 'reflink'
    return 'none'


def utc_stamp(now=None):
    return time.strftime('%Y-%m-%dT%H%M%SZ', time.gmtime(now))


def reflink_copy(src, dest, policy='auto', preserve=PRESERVE_ALL, force=True, backup=False,
                 dry_run=False, report=None):
    """Copy file or tree ``src`` to ``dest`` (the copy itself, like cp -T),
    sharing data where the filesystem can.  Returns a result dict with
    changed, method, files, bytes_cloned, bytes_copied, backup_file, stats.

    The top-level src and dest are the caller's words: symlinks in them are
    followed (dest's last component excepted); nothing inside a tree is.
    """
    for label, path in (('src', src), ('dest', dest)):
        if not isinstance(path, (str, bytes)) or not path or (b'\0' if isinstance(path, bytes) else '\0') in path:
            raise BadInput('%s must be a non-empty path without NUL bytes, got %r' % (label, path))
    preserve = check_preserve(preserve)
    src_b, dest_b = os.fsencode(src), os.fsencode(dest)
    for label, path in (('src', src_b), ('dest', dest_b)):
        if not os.path.isabs(path):
            raise BadInput('%s must be an absolute path, got %s' % (label, display(path)), display(path))
    src_real = os.path.realpath(src_b)
    try:
        src_st = os.stat(src_real)
    except OSError as exc:
        raise from_oserror(exc, display(src_b), 'src')
    dest_b = dest_b.rstrip(b'/') or b'/'
    parent, name = os.path.split(dest_b)
    if not name or name in (b'.', b'..'):
        raise BadInput('dest must name a file or directory, got %s' % display(dest_b), display(dest_b))
    parent_real = os.path.realpath(parent)
    dest_real = os.path.join(parent_real, name)
    try:
        parent_fd = os.open(parent_real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise from_oserror(exc, display(parent), 'dest directory')
    try:
        dest_st = lstat_at(parent_fd, name)
        if dest_st is not None and (dest_st.st_dev, dest_st.st_ino) == (src_st.st_dev, src_st.st_ino):
            raise BadInput('src and dest are the same file: %s' % display(dest_b), display(dest_b))
        if stat.S_ISDIR(src_st.st_mode):
            if dest_st is not None and not stat.S_ISDIR(dest_st.st_mode):
                raise BadInput('src %s is a directory but dest %s exists and is not one'
                               % (display(src_b), display(dest_b)), display(dest_b), errno.ENOTDIR)
            if dest_real == src_real or dest_real.startswith(src_real.rstrip(b'/') + b'/'):
                raise BadInput('dest %s is inside src %s: the copy would copy itself'
                               % (display(dest_b), display(src_b)), display(dest_b))
        elif stat.S_ISREG(src_st.st_mode):
            if dest_st is not None and stat.S_ISDIR(dest_st.st_mode):
                raise BadInput('src %s is a file but dest %s is a directory (give the full dest file name)'
                               % (display(src_b), display(dest_b)), display(dest_b), errno.EISDIR)
        else:
            raise BadInput('src %s is neither a regular file nor a directory' % display(src_b), display(src_b))
        tree = TreeCopier(policy, preserve, dry_run=dry_run, report=report)
        if dest_st is not None and not force:
            return _result(tree, None)
        if backup and dest_st is not None and not dry_run:
            plan = TreeCopier(policy, preserve, dry_run=True)
            _run(plan, src_real, src_st, parent_fd, name, dest_st, display(dest_b))
            if not plan.changes:
                return _result(plan, None)
            backup_name = _make_backup(parent_fd, name, dest_real, dest_st, preserve)
            _run(tree, src_real, src_st, parent_fd, name, dest_st, display(dest_b))
            return _result(tree, os.path.join(parent, backup_name))
        _run(tree, src_real, src_st, parent_fd, name, dest_st, display(dest_b))
        return _result(tree, None)
    finally:
        os.close(parent_fd)


def _make_backup(parent_fd, name, dest_real, dest_st, preserve):
    """Keep the old dest as ``dest.<UTC stamp>~`` (``-2``, ``-3``... within
    one second): a reflink where the filesystem can (cheap), a copy where
    not; a symlink or special file is kept by a hard link to it, since dest
    is about to be replaced by rename, not changed in place."""
    stamp = utc_stamp().encode()
    backup_name = b'%s.%s~' % (name, stamp)
    seq = 1
    while lstat_at(parent_fd, backup_name) is not None:
        seq += 1
        backup_name = b'%s.%s-%d~' % (name, stamp, seq)
    if stat.S_ISDIR(dest_st.st_mode) or stat.S_ISREG(dest_st.st_mode):
        _run(TreeCopier('auto', preserve), dest_real, dest_st, parent_fd, backup_name, None, display(backup_name))
    else:
        os.link(name, backup_name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
    return backup_name


def _result(tree, backup_file):
    stats = tree.stats
    return {
        'changed': tree.changes > 0, 'method': _method(stats), 'files': stats['files'],
        'bytes_cloned': stats['bytes_cloned'], 'bytes_copied': stats['bytes_copied'],
        'backup_file': os.fsdecode(backup_file) if backup_file else None, 'stats': stats,
    }


def _run(tree, src_real, src_st, parent_fd, name, dest_st, where):
    """Run a TreeCopier for one request: a file, or a tree built in a
    temporary directory and renamed into place when dest is new."""
    tree.dest_dev = os.fstat(parent_fd).st_dev
    tree._dest_root = parent_fd
    if not stat.S_ISDIR(src_st.st_mode):
        src_parent, src_name = os.path.split(src_real)
        sp = open_dir(src_parent)
        try:
            try:
                fd = os.open(src_name, FILE_FLAGS, dir_fd=sp)
            except OSError as exc:
                raise from_oserror(exc, display(src_real), 'open')
            try:
                tree.copier.probe(fd, parent_fd, where)
            finally:
                os.close(fd)
            try:
                tree._file(sp, parent_fd, None, src_name, name, src_st, dname=name)
            except OSError as exc:
                raise from_oserror(exc, where, 'copy')
        finally:
            os.close(sp)
        return
    src_fd = open_dir(src_real)
    try:
        tree.copier.probe_tree(src_fd, parent_fd, where)
        if dest_st is not None:
            dst_fd = open_dir_at(parent_fd, name, where=name)
            try:
                tree.copy_tree(src_fd, dst_fd)
            finally:
                os.close(dst_fd)
            return
        # A new tree: build it under a hidden name, publish it by rename.
        tree.fresh = True
        tree._report(name, 'create', Meta(src_st), None)
        if tree.dry_run:
            tree.copy_tree(src_fd, None)
            return
        tmp = temp_name(name)
        os.mkdir(tmp, 0o700, dir_fd=parent_fd)
        try:
            dst_fd = open_dir_at(parent_fd, tmp)
            try:
                reset_new_dir(dst_fd)
                tree.copy_tree(src_fd, dst_fd)
                syncfs(dst_fd)          # the whole copy on disk before it gets its name
            finally:
                os.close(dst_fd)
            os.rename(tmp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except BaseException:
            remove_tree_at(parent_fd, tmp)
            raise
    finally:
        os.close(src_fd)
