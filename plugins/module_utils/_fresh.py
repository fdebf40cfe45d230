# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A new tree: a snapshot's NAME.partial, or a reflink_copy dest that did
not exist.  The caller renames it into place once it is complete.

A file's fate in a new snapshot is decided here, in _file_data:
  - unchanged since the previous snapshot (same type, mode, size, ns mtime,
    owner, group and xattrs: rsync --link-dest's test, _since_previous)
    -> a hard link to the previous snapshot's file (the hardlink method);
  - otherwise new data (_transfer.DataCopier): a reflink where the policy
    and the filesystems allow it, else a sparse copy.
On the way every file name is counted as added (no namesake in the previous
snapshot) or modified (one that differs), at the cost of one lstat of the
namesake, which the hardlink method makes anyway.
Excluded entries are never looked at (_walk.Walker._entry, _plain_files),
and the later names of a multiply-linked inode become hard links to the
first one's file (_walk.Walker._later_name; across worker processes by
claims, _claimed_file).

Nothing in a new tree is compared with dest, which is empty: files are
written straight to their names, with their final permissions where the
umask allows.  Check mode (dry_run) takes the very same decisions.
"""

import errno
import os
import stat

from ._errors import LinkError
from ._tree import PRESERVE_ALL, join, open_dir_at, read_xattrs, remove_tree_at, temp_name, unlink_quietly
from ._walk import SKIPPED_MAX, Frame, Walker


_SAME, _LINKED = object(), object()     # _since_previous: unchanged; unchanged and linked


class XattrComparer(object):
    """Whether a src file and its namesake in the previous snapshot carry the
    same xattrs (rsync -X semantics), for the files of one directory.

    The *xattr calls take no dir fd: src names are read relative to the
    working directory, moved to src's directory once (a /proc/self/fd path
    per file costs the kernel twice as much); Walker.copy_tree restores it.
    One comparer at a time: making one moves the working directory."""

    def __init__(self, src_fd, prev_fd, prev_may_have):
        try:
            os.fchdir(src_fd)
            self.src = b''
        except OSError:
            self.src = b'/proc/self/fd/%d/' % src_fd
        self.prev = b'/proc/self/fd/%d/' % prev_fd
        self.prev_may_have = prev_may_have

    def same(self, name):
        """(same, 1 if the file has xattrs else 0)"""
        src = read_xattrs(self.src + name, follow=False)
        if not src and not self.prev_may_have:
            return True, 0
        return src == read_xattrs(self.prev + name, follow=False), 1 if src else 0


class FreshTree(Walker):
    """Walker options, plus:

    previous          -- fd of the previous snapshot: count what changed since (stats
                         added, modified)
    link              -- also link unchanged files from it (the hardlink method)
    previous_xattrs   -- may files of previous have xattrs? (False: its record says none has)
    workers           -- processes walking at once (see _parallel); 1: this one alone
    scratch           -- (dir fd, name): where a parallel walk may make its claims
                         directory, on dest's filesystem
    """

    # One tight pass over each directory's plain files; off, every entry takes
    # the general path (tests compare the two: same decisions, same counts).
    fast_paths = True

    def __init__(self, policy='auto', preserve=PRESERVE_ALL, excluder=None, one_fs=False,
                 dry_run=False, report=None, dest_dev=None, previous=None, link=False, previous_xattrs=True,
                 workers=1, scratch=None, base=b'', on_error='fail'):
        Walker.__init__(self, policy, preserve, excluder, one_fs, dry_run, report, dest_dev, base, on_error)
        self.previous = previous
        self.link = link and previous is not None
        self.previous_xattrs = previous_xattrs
        self.workers = workers
        self.scratch = scratch
        self._pool = None
        self._claims_fd = None

    # ------------------------------------------------------------ the walk

    def _walk_root(self, src_fd, dst_fd, root_st):
        if self.workers > 1 and self.scratch is not None and not self.dry_run and self.report is None:
            self._walk_parallel(src_fd, dst_fd)
            return
        self._walk_frames([Frame(src_fd, dst_fd, self.previous, self.base, self._dir_meta(src_fd, root_st))])

    def _plain_files(self, frame, entries):
        """The hot path: a directory's plain files (regular, one link, not
        excluded) in one tight loop, without the general per-entry stat and
        dispatch; the rest is returned for _entry.  A file linked from the
        previous snapshot (the steady state) is counted here in bulk; every
        other one goes on to _file_data with the decision already taken."""
        if not self.fast_paths:
            return entries
        src_fd, dst_fd, prev_fd, rel = frame.src, frame.dst, frame.prev, frame.rel
        is_reg = stat.S_ISREG
        excluder = self.excluder or None        # an empty Excluder is falsy: test it once
        comparer = self._comparer(src_fd, prev_fd)
        since_previous = self._since_previous if prev_fd is not None else None
        file_data = self._file_data
        report = self.report
        stats = self.stats
        rest = []
        files = linked = nbytes = 0
        try:
            for dirent in entries:
                try:
                    st = dirent.stat(follow_symlinks=False)
                except FileNotFoundError:
                    rest.append(dirent)     # vanished: the general path counts it
                    continue
                if not is_reg(st.st_mode) or st.st_nlink > 1:
                    rest.append(dirent)
                    continue
                name = os.fsencode(dirent.name)
                if excluder is not None and excluder.excluded(join(rel, name), name, False):
                    continue
                files += 1
                try:
                    since = None if since_previous is None else since_previous(
                        src_fd, prev_fd, dst_fd, name, st, comparer)
                    if since is _LINKED:
                        linked += 1
                        nbytes += st.st_size
                        if report is not None:
                            report(join(rel, name), 'link', None, None)
                        continue
                    file_data(src_fd, dst_fd, prev_fd, name, join(rel, name), st, name, comparer, since)
                except (OSError, LinkError) as exc:
                    self._failed(exc, src_fd, name, join(rel, name), st)
        finally:
            stats['files'] += files
            stats['linked'] += linked
            stats['bytes_linked'] += nbytes
            self.changes += linked
        return rest

    def _comparer(self, src_fd, prev_fd):
        # Only a link needs the xattrs compared: counting changes does not
        # pay two listxattr calls per file.
        if prev_fd is None or not self.xattrs or not self.link:
            return None
        return XattrComparer(src_fd, prev_fd, self.previous_xattrs)

    # ------------------------------------------------------------ files

    def _file_data(self, src_fd, dst_fd, prev_fd, name, path, st, dname, comparer=False, since=None):
        """The fate of one regular file (see the module's docstring).
        ``comparer``: the directory's XattrComparer where the caller has
        one; ``since``: what _since_previous said, where the caller asked."""
        if prev_fd is not None:
            if since is None:
                if comparer is False:
                    comparer = self._comparer(src_fd, prev_fd)
                since = self._since_previous(src_fd, prev_fd, dst_fd, name, st, comparer)
            if since is _LINKED:
                self.stats['linked'] += 1
                self.stats['bytes_linked'] += st.st_size
                self._report(path, 'link', None, None)
                return
            if since is not _SAME:
                self.stats[since] += 1
        elif self.previous is not None:
            self.stats['added'] += 1        # in a directory the previous snapshot lacks
        fd = self._open_src(src_fd, name, st, path)
        try:
            self._write_file(fd, dst_fd, dname, path, self._src_meta(fd, st), None, st.st_dev)
        finally:
            os.close(fd)

    def _since_previous(self, src_fd, prev_fd, dst_fd, name, st, comparer):
        """How src's file compares with its namesake in the previous snapshot:
        'added' (none), 'modified' (differs in a preserved attribute: rsync
        --link-dest's test), _SAME, or _LINKED: the same, and linked from
        there into dest (the hardlink method; not in a dry run)."""
        try:
            prev = os.stat(name, dir_fd=prev_fd, follow_symlinks=False)
        except FileNotFoundError:
            return 'added'
        if (prev.st_mode != st.st_mode or prev.st_size != st.st_size or prev.st_mtime_ns != st.st_mtime_ns
                or prev.st_uid != st.st_uid or prev.st_gid != st.st_gid):
            return 'modified' if stat.S_ISREG(prev.st_mode) else 'added'
        if not self.link:
            return _SAME
        has_xattrs = 0
        if comparer is not None:
            same, has_xattrs = comparer.same(name)
            if not same:
                return 'modified'
        if not self.dry_run:
            try:
                os.link(name, name, src_dir_fd=prev_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
            except OSError as exc:
                # The previous snapshot's file refuses a link: EPERM (immutable or
                # append-only, fs.protected_hardlinks for a file not ours), EMLINK (its
                # link limit); counted, since each costs new space.  EXDEV: it is another
                # btrfs subvolume; ENOENT: gone from it meanwhile.  New data, all of them.
                if exc.errno in (errno.EPERM, errno.EMLINK):
                    self.stats['not_linked'] += 1
                    return _SAME
                if exc.errno in (errno.EXDEV, errno.ENOENT):
                    return _SAME
                raise
        self.stats['xattr_files'] += has_xattrs
        return _LINKED

    def _write_name(self, name):
        return name         # nobody reads a tree that is not yet in place

    def _born_mode(self, mode):
        # Its directories are 0700 until finished, so a file may be born
        # with its final permissions, saving a chmod.
        perm = stat.S_IMODE(mode)
        if perm & ~0o777 or perm & self.umask or 'mode' not in self.preserve:
            return 0o600
        return perm

    def _in_new_dir(self):
        return True

    def _dest_dev(self, dst_fd):
        # One device for the whole tree: we made every directory of it.
        return self.dest_dev if self.dest_dev is not None else Walker._dest_dev(self, dst_fd)

    # ------------------------------------------------------------ parallel walk

    def _walk_parallel(self, src_fd, dst_fd):
        """The same walk in self.workers processes (see _parallel)."""
        # Imported here: reflink_copy and link_facts never walk in parallel
        # and need not load sockets, pickle and ctypes (~20 ms a module run).
        from . import _parallel     # pylint: disable=import-outside-toplevel
        scratch_fd, claims = self.scratch
        os.mkdir(claims, 0o700, dir_fd=scratch_fd)
        try:
            self._claims_fd = open_dir_at(scratch_fd, claims)
            self._pool = _parallel.Pool(self.workers)
            base, changes = dict(self.stats), self.changes
            roots = [src_fd, dst_fd] + ([self.previous] if self.previous is not None else [])
            for stats, worker_changes, skipped in self._pool.run(self, roots, keep=[self._claims_fd]):
                for key, value in stats.items():
                    self.stats[key] += value - base[key]
                self.changes += worker_changes - changes
                self.skipped.extend(skipped[:SKIPPED_MAX - len(self.skipped)])
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
            remove_tree_at(self.scratch[0], os.fsencode(self.scratch[1]))
        except OSError:
            if not quietly:
                raise       # a leftover the next run removes; the caller discards this one

    def _handed_off(self, frame):
        if self._pool is None or not self._pool.offload(frame.rel, frame.fds()):
            return False
        frame.close()       # another worker walks it now
        return True

    def run_job(self, rel, fds):
        """In a worker process: walk the directory whose fds the pool sent."""
        src_fd, dst_fd = fds[0], fds[1]
        prev_fd = fds[2] if len(fds) > 2 else None
        meta = self._dir_meta(src_fd, os.fstat(src_fd))
        self._walk_frames([Frame(src_fd, dst_fd, prev_fd, rel, meta)])

    def result(self):
        """In a worker process: what it did, for the parent to add up."""
        return dict(self.stats), self.changes, self.skipped

    def _later_name(self, src_fd, dst_fd, prev_fd, name, path, st, dname):
        if self._claims_fd is None:
            return Walker._later_name(self, src_fd, dst_fd, prev_fd, name, path, st, dname)
        self._claimed_file(src_fd, dst_fd, prev_fd, name, path, st)
        return True

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
            unlink_quietly(dst_fd, tmp)
            raise
