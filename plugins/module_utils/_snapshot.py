# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rotating point-in-time snapshots of a tree.

A run, under an exclusive lock on the snapshot root:
  1. removes leftovers of killed runs (NAME.partial, NAME.deleting);
  2. builds the new snapshot in NAME.partial (btrfs subvolume snapshot,
     reflinks from src, hard links to the previous snapshot, or copies);
  3. syncs it, publishes it by renaming it to NAME, then points ``latest``
     at it (a symlink replaced by rename);
  4. only then prunes by the retention policy, each victim first renamed to
     NAME.deleting so that a half-deleted snapshot is never taken for one.
Only names that parse as snapshot stamps count: a .partial never does.
"""

import datetime
import errno
import json
import fcntl
import os
import re
import stat
import time

from . import _ioctl, _options, _parallel, _pull, _retention
from ._fresh import FreshTree
from ._transfer import DataCopier, first_regular_file
from ._walk import SKIPPED_MAX, new_stats
from ._errors import BadInput, Busy, LinkError, NoSpace, NotSupported, at_door, from_oserror
from ._mounts import mount_of, probe_reflink, read_mounts, reflink_capable
from ._tree import (
    PRESERVE_ALL, Excluder, lstat_at, open_dir, open_dir_at, open_dir_nofollow, remove_tree_at, reset_new_dir, syncfs,
)

METHODS, MAX_WORKERS = _options.METHODS, _options.MAX_WORKERS
LOCK_NAME = '.fslinks-snapshot.lock'
LATEST = 'latest'
PARTIAL = '.partial'
DELETING = '.deleting'
LINKS = '.links'        # a parallel run's claims on multiply-linked inodes (see _fresh)


class Request(object):
    """A validated snapshot request."""

    def __init__(self, src, dest, method='auto', keep=None, exclude=(), one_file_system=True,
                 lock_timeout=0, dest_mode=0o700, create_dest=True, root_tag=None, workers=0, on_error='skip',
                 ssh_key=None, ssh_port=None, ssh_known_hosts=None, bwlimit=0):
        opts = _options.settle(dict(src=src, dest=dest, method=method, keep=keep, exclude=exclude,
                                    one_file_system=one_file_system, lock_timeout=lock_timeout,
                                    workers=workers, on_error=on_error, ssh_key=ssh_key, ssh_port=ssh_port,
                                    ssh_known_hosts=ssh_known_hosts, bwlimit=bwlimit), _options.REQUEST)
        self.keep = opts['keep']
        self.on_error = opts['on_error']
        self.excluder = Excluder(opts['exclude'])
        self.workers = opts['workers']      # 0: chosen per dest filesystem, see _parallel.default_workers
        # A remote src ([USER@]HOST:/PATH) is pulled with rsync over ssh (see _pull).
        self.remote = _pull.remote_of(opts['src'])
        self.ssh_key, self.ssh_port = opts['ssh_key'], opts['ssh_port']
        self.ssh_known_hosts, self.bwlimit = opts['ssh_known_hosts'], opts['bwlimit']
        # The caller's top-level paths are resolved whole ('..', symlinks),
        # so that the inside/outside checks below compare real places.
        self.src = _pull.display(self.remote) if self.remote else os.path.realpath(opts['src'])
        self.dest = os.path.realpath(opts['dest'])
        self.src_given, self.dest_given = src, dest
        self.method = opts['method']
        self.exclude = opts['exclude']
        self.one_file_system = opts['one_file_system']
        self.lock_timeout = opts['lock_timeout']
        self.dest_mode = dest_mode
        # Scheduled jobs pass False: a missing or uninitialized root then
        # means "its disk is not mounted", not "start a new chain on /".
        self.create_dest = create_dest
        # With a tag (scheduled jobs: "job NAME"), the root must have been
        # initialized for this very job by us: see check_initialized.
        self.root_tag = root_tag
        self._check_paths()

    def _check_paths(self):
        if self.remote is not None:
            return          # on another host: rsync and ssh check it
        try:
            st = os.stat(self.src)
        except OSError as exc:
            raise from_oserror(exc, self.src_given, 'src')
        if not stat.S_ISDIR(st.st_mode):
            raise BadInput('src %s is not a directory' % self.src_given, self.src_given, errno.ENOTDIR)
        if self.dest == self.src:
            raise BadInput('src and dest are the same directory: %s' % self.src, self.src)
        if self.src.startswith(self.dest.rstrip('/') + '/'):
            raise BadInput('src %s is inside the snapshot root %s' % (self.src, self.dest), self.src)
        if self.dest.startswith(self.src.rstrip('/') + '/'):
            rel = os.fsencode(os.path.relpath(self.dest, self.src))
            if not self._excluded(rel):
                raise BadInput('dest %s is inside src %s: snapshots would contain themselves; '
                               'exclude it (exclude: [/%s]) or move it'
                               % (self.dest, self.src, os.fsdecode(rel)), self.dest)

    def _excluded(self, rel):
        parts = rel.split(b'/')
        for i in range(1, len(parts) + 1):
            if self.excluder.excluded(b'/'.join(parts[:i]), parts[i - 1], True):
                return True
        return False


# ---------------------------------------------------------------- listing

def list_snapshots(dest_fd):
    """Complete snapshots under the root, oldest first (names only)."""
    names = []
    try:
        with os.scandir(dest_fd) as it:
            for entry in it:
                if _retention.parse_snapshot_name(entry.name) and entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
    except OSError as exc:
        raise from_oserror(exc, _fd_path(dest_fd), 'list snapshots')
    return _retention.sort_snapshot_names(names)


def _fd_path(fd):
    """The path of an open directory, for messages (Linux: /proc/self/fd)."""
    try:
        return os.readlink('/proc/self/fd/%d' % fd)
    except OSError:
        return 'directory fd %d' % fd


def leftovers(dest_fd):
    """Names left by killed runs: partial snapshots, half-deleted ones, the
    temporary files of a ``latest`` or a record being replaced, records of
    snapshots that are gone."""
    with os.scandir(dest_fd) as it:
        names = set(e.name for e in it)
    out = []
    for name in names:
        stem, dot, suffix = name.rpartition('.')
        if LATEST_TMP.match(name) or RECORD_TMP.match(name):
            out.append(name)
        elif dot and '.' + suffix in (PARTIAL, DELETING, LINKS) and _retention.parse_snapshot_name(stem):
            out.append(name)
        elif dot and '.' + suffix == RECORD and _retention.parse_snapshot_name(stem) and stem not in names:
            out.append(name)
    return sorted(out)


# ---------------------------------------------------------------- lock

class Lock(object):
    """flock on a file in the snapshot root: one run per root at a time.
    The kernel drops it when the process dies, so a killed run never
    leaves a stale lock."""

    def __init__(self, dest_fd, dest, timeout=0):
        self.fd = None
        try:
            self.fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=dest_fd)
        except OSError as exc:
            raise from_oserror(exc, os.path.join(dest, LOCK_NAME), 'lock')
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    self.release()
                    raise from_oserror(exc, dest, 'lock')
            if time.monotonic() >= deadline:
                self.release()
                raise Busy('another snapshot of %s is running' % dest, dest, errno.EWOULDBLOCK)
            time.sleep(0.2)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------- removal

def remove_snapshot(dest_fd, name):
    """Delete one snapshot or leftover: rename it out of the snapshot
    namespace first, so that a half-deleted tree is never listed."""
    doomed = name
    if LATEST_TMP.match(name) or RECORD_TMP.match(name) or name.endswith(RECORD):
        os.unlink(name, dir_fd=dest_fd)
        return
    if not name.endswith((PARTIAL, DELETING, LINKS)):
        doomed = name + DELETING
        os.rename(name, doomed, src_dir_fd=dest_fd, dst_dir_fd=dest_fd)
    st = lstat_at(dest_fd, doomed)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode) and st.st_ino == _ioctl.BTRFS_FIRST_FREE_OBJECTID:
        _delete_subvolume(dest_fd, doomed)
    else:
        remove_tree_at(dest_fd, os.fsencode(doomed), on_subvolume=_delete_subvolume)
    if doomed.endswith(LINKS):
        return      # a run's scratch, no record of its own
    base = doomed[:-len(PARTIAL)] if doomed.endswith(PARTIAL) else doomed[:-len(DELETING)]
    try:
        os.unlink(base + RECORD, dir_fd=dest_fd)
    except FileNotFoundError:
        pass


def _delete_subvolume(parent_fd, name):
    name = os.fsdecode(name)
    fd = open_dir_at(parent_fd, name)
    try:
        # A read-only snapshot must be made writable before a user without
        # CAP_SYS_ADMIN may delete it (user_subvol_rm_allowed).
        _ioctl.btrfs_set_readonly(fd, False, name)
    except LinkError:
        pass
    finally:
        os.close(fd)
    _ioctl.btrfs_delete_subvolume(parent_fd, name, name)


# ---------------------------------------------------------------- method choice

def _fs_info(path, fd, mounts):
    mount = mount_of(path, mounts)
    return {
        'fstype': mount.fstype if mount else None,
        'mount': mount,
        'btrfs_fsid': _ioctl.btrfs_fsid(fd) if mount and mount.fstype == 'btrfs' else None,
    }


def choose_method(req, src_fd, dest_fd, dest_dir):
    """The best method this pair of filesystems allows (auto), or a check
    that the forced one is possible.  Returns (method, reason)."""
    mounts = read_mounts()
    src_info = _fs_info(req.src, src_fd, mounts)
    dest_info = _fs_info(dest_dir, dest_fd, mounts)
    src_st = os.fstat(src_fd)
    is_subvol = _ioctl.is_btrfs_subvolume_root(src_st, src_info['fstype'])
    same_btrfs = is_subvol and src_info['btrfs_fsid'] is not None and \
        src_info['btrfs_fsid'] == dest_info['btrfs_fsid']
    if req.method == 'btrfs':
        if not is_subvol:
            raise NotSupported('method btrfs: src %s is not the root of a btrfs subvolume' % req.src, req.src)
        if not same_btrfs:
            raise NotSupported('method btrfs: dest %s is not on the same btrfs filesystem as src %s'
                               % (req.dest, req.src), req.dest, errno.EXDEV)
        return 'btrfs', 'forced'
    if req.method in ('hardlink', 'copy'):
        return req.method, 'forced'
    if req.method == 'auto' and same_btrfs:
        return 'btrfs', 'src is a btrfs subvolume on the same filesystem as dest'
    can_clone = _can_clone(src_fd, dest_fd, dest_info, req.method == 'reflink', req.dest)
    if req.method == 'reflink':
        return 'reflink', 'forced'
    if can_clone:
        return 'reflink', 'src and dest are on one filesystem that can reflink'
    return 'hardlink', 'no reflink between src (%s) and dest (%s)' % (src_info['fstype'], dest_info['fstype'])


def _can_clone(src_fd, dest_fd, dest_info, strict, where):
    """Prove cloning by doing it: one src file into an anonymous file in
    dest.  ``strict`` raises the kernel's reason instead of answering no."""
    copier = DataCopier('always')
    probe = first_regular_file(src_fd)
    if probe is None:        # nothing to clone: ask the mount table
        ok = reflink_capable(dest_info['mount'])
        if strict and ok is False:
            raise NotSupported('method reflink: %s: filesystem does not support reflink' % where, where)
        return bool(ok)
    try:
        if copier.probe(probe, dest_fd, where) is None:      # could not probe here
            ok = reflink_capable(dest_info['mount'])
            if strict and ok is False:
                raise NotSupported('method reflink: %s: filesystem does not support reflink' % where, where)
            return bool(ok)
        return True
    except (NotSupported, LinkError) as exc:
        if strict:
            raise type(exc)('method reflink: %s' % exc, where, exc.errno)
        return False
    finally:
        os.close(probe)


# ---------------------------------------------------------------- the run

def _fsync_dir(fd):
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise


RECORD = '.json'     # DEST/NAME.json: what the run that made NAME did


def write_record(dest_fd, name, record):
    """The snapshot's record, next to it (inside it, rsync would see an
    extra file).  Written atomically; a snapshot without one is still a
    snapshot: the record is information, publication is the rename."""
    tmp = '.%s%s.tmp' % (name, RECORD)
    data = json.dumps(record, indent=2, sort_keys=True).encode() + b'\n'
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dest_fd)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(fd)
        os.rename(tmp, name + RECORD, src_dir_fd=dest_fd, dst_dir_fd=dest_fd)
    except OSError:
        try:
            os.unlink(tmp, dir_fd=dest_fd)
        except OSError:
            pass
        raise


def read_record(dest_fd, name):
    """The record of snapshot NAME, or None (missing, unreadable, foreign)."""
    try:
        fd = os.open(name + RECORD, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dest_fd)
    except OSError:
        return None
    try:
        with os.fdopen(fd, 'rb') as handle:
            record = json.loads(handle.read(1 << 20).decode('utf-8'))
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


RECORD_TMP = re.compile(r'\A\..*\.json\.tmp\Z')
LATEST_TMP = re.compile(r'\A\.%s\.fslinks-[0-9]+\.tmp\Z' % LATEST)


def _set_latest(dest_fd, name):
    tmp = '.%s.fslinks-%d.tmp' % (LATEST, os.getpid())
    os.symlink(name, tmp, dir_fd=dest_fd)
    os.rename(tmp, LATEST, src_dir_fd=dest_fd, dst_dir_fd=dest_fd)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def iso_time(seconds):
    """ISO 8601 UTC of a time.time() value, as records write it."""
    return _iso(datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc))


def _iso(when):
    """ISO 8601 UTC, to the second (a naive datetime is taken to be UTC)."""
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc)
    return when.strftime('%Y-%m-%dT%H:%M:%SZ')


GUARD = 'guard'     # a record's purpose: made by a restore, before it changed the live tree


def run(req, state='present', dry_run=False, now=None, report=None, purpose=None, lock_held=False):
    """Make a snapshot (state=present) and prune, or only prune (pruned).
    Returns the result dict of hardlink_snapshot.  Every failure is a
    LinkError naming its path, never a bare OSError.

    ``purpose`` goes into the snapshot's record (GUARD: made by a restore
    before it changed the live tree); ``lock_held``: the caller holds the
    root's Lock already (a restore), so this run does not take it."""
    try:
        return _run(req, state, dry_run, now, report, purpose, lock_held)
    except OSError as exc:
        raise at_door(exc, req.dest, 'snapshot')


def _run(req, state, dry_run, now, report, purpose, lock_held):
    started = time.monotonic()
    now = now or _now()
    result = {'changed': False, 'snapshot': None, 'method': None, 'stats': new_stats(), 'changed_files': None,
              'pruned': [], 'kept': [], 'leftovers_removed': [], 'future_dated': []}
    if not req.create_dest:
        check_initialized(req.dest, req.root_tag)
    if not dry_run and state == 'present' and not os.path.isdir(req.dest):
        _plan_new_root(req, state, now, None, validate_only=True)    # a forced method fails before mkdir
    dest_fd = _open_dest(req, create=not dry_run and state == 'present')
    if dest_fd is None:          # no root yet: check mode plans a first, full snapshot
        result.update(_plan_new_root(req, state, now, report))
        result['seconds'] = round(time.monotonic() - started, 3)
        return result
    lock = None
    try:
        if not dry_run:
            if not lock_held:
                lock = Lock(dest_fd, req.dest, req.lock_timeout)
            for name in leftovers(dest_fd):
                # A record may have gone with its NAME.deleting or NAME.partial
                # just before: removed by this run all the same.
                if lstat_at(dest_fd, name) is not None:
                    _guarded(remove_snapshot, req.dest, name, 'remove leftover')(dest_fd, name)
                result['leftovers_removed'].append(os.path.join(req.dest, name))
                result['changed'] = True
        existing = list_snapshots(dest_fd)
        # Room first: the floor of keep.min_free, at the cost of the oldest.
        existing = _prune_for_space(req, dest_fd, existing, set(existing[-1:]), dry_run, result)
        times = snapshot_times(dest_fd, existing)
        if state == 'present':
            name = _retention.next_snapshot_name(existing, now)
            about = {'created': _iso(now), 'purpose': purpose}
            if req.remote is not None:
                made = _make_pulled(req, dest_fd, existing, name, dry_run, result, about, lock and lock.fd)
            else:
                made = _make(req, dest_fd, existing, name, dry_run, report, result, about)
            if made or dry_run:
                existing = existing + [name]
                times[name] = _retention.created_time(name, about)
            result['changed'] = True
            result['snapshot'] = os.path.join(req.dest, name)
        kept, pruned = _retention.select(existing, req.keep, times)
        if result['snapshot']:
            new = os.path.basename(result['snapshot'])
            pruned = [p for p in pruned if p != new]      # belt and braces: never the new one
        for name in pruned:
            if not dry_run:
                _guarded(remove_snapshot, req.dest, name, 'prune')(dest_fd, name)
            result['changed'] = True
        protect = set(kept[-1:]) | (set([os.path.basename(result['snapshot'])]) if result['snapshot'] else set())
        if pruned and not dry_run and _retention.MIN_FREE in req.keep:
            syncfs(dest_fd)         # what the victims held counts as free for the floor
        kept = _prune_for_space(req, dest_fd, kept, protect, dry_run, result)
        result['pruned'] = [os.path.join(req.dest, n) for n in pruned] + result['space'].pop('victims')
        space = result['space']
        if space['min_free_bytes'] is not None and space['free_bytes'] < space['min_free_bytes']:
            result.setdefault('warnings', []).append(
                '%s has %d bytes free, below keep.min_free %s (%d bytes)%s' % (
                    req.dest, space['free_bytes'], req.keep[_retention.MIN_FREE], space['min_free_bytes'],
                    ' and only the newest snapshot is left' if len(kept) <= 1 else ''))
        result['kept'] = [os.path.join(req.dest, n) for n in kept]
        _report_future(req, result, kept, times, now)
        if result['pruned'] and not dry_run:
            _fsync_dir(dest_fd)
    finally:
        if lock is not None:
            lock.release()
        os.close(dest_fd)
    result['seconds'] = round(time.monotonic() - started, 3)
    return result


def check_initialized(dest, tag=None):
    """A root that scheduled runs may use: it exists and holds our lock file,
    and with ``tag``, the lock file is ours (same uid, not a symlink) and
    names the job, so that nobody can point a job at another job's root or
    at a root of their own making."""
    words = None
    try:
        fd = os.open(os.path.join(dest, LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise from_oserror(exc, dest, 'snapshot root')    # there, but not for us (EACCES...)
        words = 'is missing or not initialized (no %s): is its filesystem mounted?' % LOCK_NAME
    else:
        try:
            st = os.fstat(fd)
            if tag is not None and (st.st_uid != os.geteuid()
                                    or os.read(fd, 4096).decode('utf-8', 'replace').strip() != tag):
                words = 'was not initialized for %s by this user' % tag
        finally:
            os.close(fd)
    if words:
        raise BadInput('snapshot root %s %s (`fslinks-snapshot init JOB` initializes it; the snapshot_jobs role does)'
                       % (dest, words), dest, errno.ENOENT)


def initialize(req):
    """Create the snapshot root (0700) and its lock file, which names the job
    when the request has a tag; idempotent."""
    fd = _open_dest(req, create=True)
    try:
        Lock(fd, req.dest, req.lock_timeout).release()
        if req.root_tag is not None:
            lock = os.open(LOCK_NAME, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            try:
                os.ftruncate(lock, 0)
                os.write(lock, req.root_tag.encode('utf-8') + b'\n')
            finally:
                os.close(lock)
    finally:
        os.close(fd)


def snapshot_times(dest_fd, names):
    """{name: when it was made} from the records (_retention.created_time)."""
    return dict((name, _retention.created_time(name, read_record(dest_fd, name))) for name in names)


def _report_future(req, result, kept, times, now):
    """result['future_dated'] and a warning: kept snapshots made with the
    clock ahead (or the clock went back since)."""
    future = [n for n in kept if _retention.is_future_dated(times[n], now)]
    result['future_dated'] = [os.path.join(req.dest, n) for n in future]
    if future:
        furthest = max(future, key=times.get)
        result.setdefault('warnings', []).append(
            '%d snapshot(s) in %s dated in the future (the furthest %s created %s, now is %s): the clock was ahead '
            'when they were made, or went back since; each keeps a slot of the period rules until deleted'
            % (len(future), req.dest, furthest, _iso(times[furthest]), _iso(now)))


def _guarded(func, dest, name, action):
    """func with its bare OSErrors typed and naming DEST/NAME."""
    def call(*args):
        try:
            return func(*args)
        except LinkError:
            raise
        except OSError as exc:
            raise from_oserror(exc, os.path.join(dest, os.fsdecode(name)), action)
    return call


def _open_dest(req, create):
    """Open the snapshot root, creating it (mode 0700: snapshots keep src's
    permissions inside, but the root must not let users reach old copies
    of files whose permissions were later tightened)."""
    try:
        return _open_top(req, req.dest)
    except LinkError as exc:
        if exc.errno != errno.ENOENT:
            raise
    if not create:
        return None
    try:
        os.mkdir(req.dest, req.dest_mode)
        os.chmod(req.dest, req.dest_mode)         # not subject to umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise from_oserror(exc, req.dest, 'create snapshot root')
    return _open_top(req, req.dest)


def open_root(path, nofollow=False):
    """Open an existing snapshot root; ``nofollow``: no component may be a
    symlink (a scheduled job's root, see _open_top)."""
    return open_dir_nofollow(path) if nofollow else open_dir(path)


def _open_top(req, path):
    """Open src or dest.  For scheduled jobs (root_tag) no component may be a
    symlink, checked by the very opens (O_NOFOLLOW from /), so that a user
    owning a parent directory cannot swap a symlink in after the checks."""
    return open_dir(path) if req.root_tag is None else open_dir_nofollow(path)


def _plan_new_root(req, state, now, report, validate_only=False):
    """Check mode without a snapshot root: the first snapshot, a full one.
    With ``validate_only``, just check that the method is possible."""
    if state != 'present':
        return {'changed': False}
    name = _retention.next_snapshot_name([], now)
    if req.remote is not None:
        return _plan_first_pull(req, name, validate_only)
    src_fd = _open_top(req, req.src)
    try:
        parent = os.path.dirname(req.dest)
        parent_fd = open_dir(parent)
        try:
            method, reason = choose_method(req, src_fd, parent_fd, parent)
            if validate_only:
                return None
            tree = _copier(req, method, src_fd, parent_fd, dry_run=True, report=report)
            if method != 'btrfs':
                tree.copy_tree(src_fd, None)
        finally:
            os.close(parent_fd)
    finally:
        os.close(src_fd)
    return {'changed': True, 'snapshot': os.path.join(req.dest, name), 'method': method,
            'reason': reason, 'stats': tree.stats, 'kept': [os.path.join(req.dest, name)]}


def _copier(req, method, src_fd, dest_fd, dry_run, report, **options):
    """The FreshTree of a method, having learnt whether src clones into dest.
    ``options``: FreshTree's previous, link, previous_xattrs, workers, scratch, on_error."""
    options.setdefault('on_error', req.on_error)
    # A forced reflink clones every file or fails; chosen by auto, a file
    # that cannot be cloned (btrfs nodatacow) is copied instead.
    policy = {'hardlink': 'auto', 'copy': 'never'}.get(method, 'always' if req.method == 'reflink' else 'auto')
    tree = FreshTree(policy, PRESERVE_ALL, excluder=req.excluder, one_fs=req.one_file_system, dry_run=dry_run,
                     report=report, dest_dev=os.fstat(dest_fd).st_dev, **options)
    if method != 'btrfs':
        tree.copier.probe_tree(src_fd, dest_fd, req.dest)
    return tree


def _make(req, dest_fd, existing, name, dry_run, report, result, about):
    """Build NAME.partial, sync, publish as NAME, point latest at it.
    ``about``: more for the record (created, purpose)."""
    started = time.monotonic()
    src_fd = _open_top(req, req.src)
    prev_fd = None
    partial = name + PARTIAL
    try:
        method, reason = choose_method(req, src_fd, dest_fd, req.dest)
        result['method'], result['reason'] = method, reason
        options = {}
        prev_record = None
        if method != 'btrfs' and existing:
            prev_fd = open_dir_at(dest_fd, existing[-1])
            prev_record = read_record(dest_fd, existing[-1]) or {}
            options.update(previous=prev_fd, link=method == 'hardlink',
                           previous_xattrs=(prev_record.get('stats') or {}).get('xattr_files') != 0)
        if not dry_run and method != 'btrfs':
            options.update(_parallel_options(req, dest_fd, name))
        tree = _copier(req, method, src_fd, dest_fd, dry_run, report, **options)
        result['stats'] = tree.stats
        result['skipped'] = tree.skipped
        if dry_run:
            if method != 'btrfs':
                tree.copy_tree(src_fd, None)
                _fits(req, dest_fd, tree.stats['bytes_copied'], result)
            result['changed_files'] = changed_files(tree.stats, prev_record)
            return False
        _check_fits(req, method, existing, src_fd, dest_fd, result)

        def build(partial):
            more = {}
            if method == 'btrfs':
                _btrfs_snapshot(req, src_fd, dest_fd, partial, tree.stats)
            else:
                _fill_new_dir(dest_fd, partial, lambda part_fd: tree.copy_tree(src_fd, part_fd))
                more['changed_files'] = result['changed_files'] = changed_files(tree.stats, prev_record)
            _note_skipped(req, name, tree.skipped, tree.stats, result, more)
            _note_not_linked(req, tree.stats, result)
            _record(req, dest_fd, name, method, reason, started, tree.stats, result, dict(about, **more))
        _publish(req, dest_fd, name, build)
        return True
    finally:
        os.close(src_fd)
        if prev_fd is not None:
            os.close(prev_fd)


def _parallel_options(req, dest_fd, name):
    """FreshTree's workers (the request's, or as many as suit dest's
    filesystem) and their scratch directory NAME.links."""
    return {'scratch': (dest_fd, name + LINKS),
            'workers': req.workers or _parallel.default_workers(_fs_info(req.dest, dest_fd, read_mounts())['fstype'])}


def _plan_first_pull(req, name, validate_only):
    """_plan_new_root of a pull: the method by the parent's filesystem, and
    rsync --dry-run's counts of a first, full pull."""
    parent = os.path.dirname(req.dest)
    parent_fd = open_dir(parent)
    try:
        method, reason = pull_method(req, parent_fd, parent)
    finally:
        os.close(parent_fd)
    if validate_only:
        return None
    done = _pull.transfer(_pull.rsync_argv(req, _pull_target(req, method, name), dry_run=True))
    warnings = _pull.check_exit(req.remote, done, req.on_error, req.src)
    out = {'changed': True, 'snapshot': os.path.join(req.dest, name), 'method': method, 'reason': reason,
           'stats': _pull.snapshot_stats(done, method), 'rsync': _pull.record_of(done, warnings),
           'kept': [os.path.join(req.dest, name)]}
    if warnings:
        out['warnings'] = warnings
    return out


def _fill_new_dir(dest_fd, partial, fill):
    """mkdir NAME.partial (0700 until the walk gives it src's mode) and
    fill(its fd)."""
    os.mkdir(partial, 0o700, dir_fd=dest_fd)
    part_fd = open_dir_at(dest_fd, partial)
    try:
        reset_new_dir(part_fd)
        fill(part_fd)
    finally:
        os.close(part_fd)


def _note_skipped(req, name, skipped, stats, result, more):
    """Skipped entries (on_error=skip) into the record and a warning."""
    if skipped:
        more['skipped'] = skipped
        result.setdefault('warnings', []).append(
            'skipped %d entries that could not be read or written (on_error=skip); the record %s '
            'names them' % (stats['skipped'], os.path.join(req.dest, name + RECORD)))


def _note_not_linked(req, stats, result):
    """A warning: unchanged files the previous snapshot would not link."""
    if stats['not_linked']:
        result.setdefault('warnings', []).append(
            '%d unchanged files could not be hard-linked to the previous snapshot in %s (operation not '
            'permitted: immutable or append-only files there, or fs.protected_hardlinks; or too many links) '
            'and were stored anew: they take space of their own' % (stats['not_linked'], req.dest))


def _publish(req, dest_fd, name, build):
    """build(NAME.partial) makes the snapshot and writes its record; then
    sync, publish it by renaming it to NAME and point latest at it.  A
    failure on the way (or a signal) removes the partial and re-raises."""
    partial = name + PARTIAL
    try:
        build(partial)
        syncfs(dest_fd)
        os.rename(partial, name, src_dir_fd=dest_fd, dst_dir_fd=dest_fd)
    except BaseException as exc:
        _discard(dest_fd, partial)
        if isinstance(exc, OSError) and not isinstance(exc, LinkError):
            raise from_oserror(exc, os.path.join(req.dest, partial), 'create snapshot')
        raise
    try:
        _set_latest(dest_fd, name)
    except OSError as exc:
        raise from_oserror(exc, os.path.join(req.dest, name),
                           'published, but could not point %s at it' % os.path.join(req.dest, LATEST))
    _fsync_dir(dest_fd)


# ---------------------------------------------------------------- pulls (see _pull)

def pull_method(req, fs_fd, where):
    """(method, reason) of a pull, by the backup root's filesystem: the
    forced one checked, or the best one (btrfs, reflink, hardlink)."""
    fstype = _fs_info(where, fs_fd, read_mounts())['fstype']
    if req.method in ('btrfs', 'auto') and fstype == 'btrfs':
        return 'btrfs', ('forced' if req.method == 'btrfs' else
                         'a pull onto btrfs: the mirror is a subvolume, each snapshot a read-only snapshot of it')
    if req.method == 'btrfs':
        raise NotSupported('method btrfs: the snapshot root %s is not on btrfs (%s)' % (req.dest, fstype), req.dest)
    if req.method in ('hardlink', 'copy'):
        return req.method, 'forced'
    clones = probe_reflink(where)
    if req.method == 'reflink':
        if clones is False:
            raise NotSupported('method reflink: %s: filesystem does not support reflink' % req.dest, req.dest)
        return 'reflink', 'forced'
    if clones:
        return 'reflink', 'a pull onto a filesystem that can reflink: the mirror is updated in place, each ' \
                          'snapshot a reflink tree of it'
    return 'hardlink', 'a pull onto %s (no reflink): rsync --link-dest to the previous snapshot' % fstype


def _pull_target(req, method, name):
    """Where rsync writes: the mirror, or NAME.partial itself."""
    return os.path.join(req.dest, _pull.MIRROR if method in ('btrfs', 'reflink') else name + PARTIAL)


def _ensure_mirror(req, dest_fd, method):
    """The mirror, made on the first pull: a subvolume on btrfs (so that it
    can be snapshotted), a directory elsewhere; 0700, like the root."""
    st = lstat_at(dest_fd, _pull.MIRROR)
    where = os.path.join(req.dest, _pull.MIRROR)
    if st is None:
        if method == 'btrfs':
            _ioctl.btrfs_create_subvolume(dest_fd, _pull.MIRROR, where)
            os.chmod(_pull.MIRROR, 0o700, dir_fd=dest_fd)
        else:
            os.mkdir(_pull.MIRROR, 0o700, dir_fd=dest_fd)
    elif not stat.S_ISDIR(st.st_mode):
        raise BadInput('%s is not a directory: move it away (it is where pulls keep their mirror)' % where, where)
    elif method == 'btrfs' and st.st_ino != _ioctl.BTRFS_FIRST_FREE_OBJECTID:
        raise NotSupported('method btrfs: the mirror %s is a plain directory, not a subvolume (made by another '
                           'method): delete it, the next pull makes it again' % where, where)
    return open_dir_at(dest_fd, _pull.MIRROR)


def _pull_changes(done, method, stats, prev_record):
    """changed_files of a pull: rsync's itemized lines (deletions are only
    itemized where rsync deletes: the mirror)."""
    if prev_record is None:
        return None
    if method in ('btrfs', 'reflink'):
        return {'added': done.added, 'modified': done.modified, 'deleted': done.deleted}
    return changed_files(stats, prev_record)


def _make_pulled(req, dest_fd, existing, name, dry_run, result, about, lock_fd):
    """A pull's NAME (see _pull): rsync into the mirror or NAME.partial, then
    publish it as _make does."""
    started = time.monotonic()
    method, reason = pull_method(req, dest_fd, req.dest)
    result['method'], result['reason'] = method, reason
    prev_record = (read_record(dest_fd, existing[-1]) or {}) if existing else None
    link_dest = os.path.join(req.dest, existing[-1]) if method == 'hardlink' and existing else None
    in_place = method in ('btrfs', 'reflink')
    argv = _pull.rsync_argv(req, _pull_target(req, method, name), in_place=in_place, link_dest=link_dest,
                            dry_run=dry_run, sparse=not (in_place and existing))
    if dry_run:
        done = _pull.transfer(argv)
        warnings = _pull.check_exit(req.remote, done, req.on_error, req.src)
        result['stats'] = _pull.snapshot_stats(done, method)
        result['changed_files'] = _pull_changes(done, method, result['stats'], prev_record)
        result['rsync'] = _pull.record_of(done, warnings)
        if warnings:
            result.setdefault('warnings', []).extend(warnings)
        return False
    mirror_fd = _ensure_mirror(req, dest_fd, method) if method in ('btrfs', 'reflink') else None
    prev_fd = None

    def build(partial):
        nonlocal prev_fd
        done = _pull.transfer(argv, lock_fd)
        warnings = _pull.check_exit(req.remote, done, req.on_error, req.src)
        skipped = _pull.skipped_entries(done)
        if method == 'btrfs':
            _ioctl.btrfs_snapshot(mirror_fd, dest_fd, partial, readonly=True, path=req.dest)
            stats = _pull.snapshot_stats(done, method)
        elif method == 'reflink':
            options = _parallel_options(req, dest_fd, name)
            if existing:
                prev_fd = open_dir_at(dest_fd, existing[-1])
                options.update(previous=prev_fd,
                               previous_xattrs=(prev_record.get('stats') or {}).get('xattr_files') != 0)
            # The mirror is on the root's own filesystem: rsync applied the excludes already;
            # every file is cloned (one that cannot be is copied, as auto does).
            tree = FreshTree('always' if req.method == 'reflink' else 'auto', PRESERVE_ALL, excluder=Excluder(()),
                             one_fs=True, dest_dev=os.fstat(dest_fd).st_dev, on_error=req.on_error, **options)
            _fill_new_dir(dest_fd, partial, lambda part_fd: tree.copy_tree(mirror_fd, part_fd))
            stats = tree.stats
            skipped += tree.skipped
        else:
            stats = _pull.snapshot_stats(done, method)
        stats['skipped'] = len(skipped)
        result.update(stats=stats, skipped=skipped[:SKIPPED_MAX], rsync=_pull.record_of(done, warnings),
                      changed_files=_pull_changes(done, method, stats, prev_record))
        if warnings:
            result.setdefault('warnings', []).extend(warnings)
        more = {'changed_files': result['changed_files'], 'rsync': result['rsync']}
        _note_skipped(req, name, result['skipped'], stats, result, more)
        _record(req, dest_fd, name, method, reason, started, stats, result, dict(about, **more))
    try:
        _publish(req, dest_fd, name, build)
    finally:
        for fd in (mirror_fd, prev_fd):
            if fd is not None:
                os.close(fd)
    return True


def changed_files(stats, prev_record):
    """{added, modified, deleted}: the regular file names of a new snapshot
    against the previous one (None without a previous snapshot to compare
    with: a first one, or a btrfs snapshot).  Deleted is derived from the
    previous record's file count (the names it had that are not here), so
    it is None when that record does not know it (missing, btrfs)."""
    if prev_record is None:
        return None
    kept = stats['files'] - stats['added']
    before = (prev_record.get('stats') or {}).get('files') if prev_record.get('method') != 'btrfs' else None
    return {'added': stats['added'], 'modified': stats['modified'],
            'deleted': max(0, before - kept) if isinstance(before, int) else None}


def _record(req, dest_fd, name, method, reason, started, stats, result, about):
    """Write NAME.json before NAME is published, so that every published
    snapshot has its record (a record without its snapshot is a leftover).
    It is information: failing to write it is a warning, not a failure."""
    try:
        record = {
            'name': name, 'src': req.src, 'method': method, 'reason': reason,
            'exclude': req.exclude, 'one_file_system': req.one_file_system,
            'seconds': round(time.monotonic() - started, 3), 'stats': stats,
        }
        record.update((k, v) for k, v in about.items() if v is not None)
        write_record(dest_fd, name, record)
    except OSError as exc:
        result.setdefault('warnings', []).append(
            'could not write the record of %s: %s' % (os.path.join(req.dest, name), exc.strerror))


# ---------------------------------------------------------------- free space

def space_of(fd):
    """(free bytes, size in bytes) of the filesystem of fd, as df's Avail
    and Size (blocks reserved for root are not free)."""
    st = os.fstatvfs(fd)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def floor_of(keep, size):
    """keep.min_free in bytes on a filesystem of ``size`` bytes, or None."""
    spec = (keep or {}).get(_retention.MIN_FREE)
    return None if spec is None else _retention.min_free_bytes(spec, size)


def _prune_for_space(req, dest_fd, names, protect, dry_run, result):
    """Delete the oldest snapshots until keep.min_free is met, never one in
    ``protect`` (the newest, the one just made); returns the names left.
    Check mode deletes nothing (what a deletion frees cannot be known
    without it).  result['space']: free, size and floor after it."""
    free, size = space_of(dest_fd)
    floor = floor_of(req.keep, size)
    space = result.setdefault('space', {'victims': []})
    names = list(names)
    btrfs = None
    while floor is not None and free < floor and not dry_run:
        victims = [n for n in names if n not in protect]
        if not victims:
            break
        _guarded(remove_snapshot, req.dest, victims[0], 'prune for space')(dest_fd, victims[0])
        names.remove(victims[0])
        space['victims'].append(os.path.join(req.dest, victims[0]))
        result['changed'] = True
        if btrfs is None:
            btrfs = _fs_info(req.dest, dest_fd, read_mounts())['fstype'] == 'btrfs'
        free = _freed(dest_fd, free, btrfs)
    space.update(free_bytes=free, size_bytes=size, min_free_bytes=floor)
    return names


def _freed(dest_fd, before, btrfs):
    """Free bytes after a deletion, once the filesystem counts them: syncfs
    commits it; btrfs frees a deleted subvolume's extents later, in its
    cleaner, so wait a little for the count to move rather than delete the
    next snapshot for room the first one is about to give back."""
    syncfs(dest_fd)
    deadline = time.monotonic() + (10 if btrfs else 0)
    while True:
        free = space_of(dest_fd)[0]
        if free > before or time.monotonic() >= deadline:
            return free
        time.sleep(0.2)
        syncfs(dest_fd)


def _fits(req, dest_fd, need, result):
    """Check mode: a warning when the data to copy exceeds the free space."""
    free = space_of(dest_fd)[0]
    if need > free:
        result.setdefault('warnings', []).append(
            'the snapshot would copy %d bytes of data, but %s has %d bytes free' % (need, req.dest, free))


def _check_fits(req, method, existing, src_fd, dest_fd, result):
    """Fail before writing anything when the snapshot's data surely does not
    fit: a copy, or a first hardlink snapshot, writes all of src's data.
    Reflinks and later hardlink snapshots share most of it and can only
    be judged by doing them (ENOSPC then fails the run cleanly)."""
    if method not in ('copy', 'hardlink') or (method == 'hardlink' and existing):
        return
    st = os.fstatvfs(dest_fd)
    free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize   # root may use the reserve
    if req.one_file_system:
        used = os.fstatvfs(src_fd)
        if (used.f_blocks - used.f_bfree) * used.f_frsize <= free:
            return      # a tree within one filesystem holds no more data than the filesystem (no walk)
    # The check mode walk of the same tree: it counts the data bytes to copy.
    plan = _copier(req, method, src_fd, dest_fd, dry_run=True, report=None, on_error='skip')
    plan.copy_tree(src_fd, None)
    need = plan.stats['bytes_copied']
    if need > free:
        raise NoSpace('create snapshot: %s: no space left on the destination filesystem: the snapshot would '
                      'copy %d bytes of data and %d are free (nothing was written)' % (req.dest, need, free),
                      req.dest, errno.ENOSPC)


def _discard(dest_fd, partial):
    """Remove a failed partial snapshot; never mask the original error."""
    try:
        if lstat_at(dest_fd, partial) is not None:
            remove_snapshot(dest_fd, partial)
    except (OSError, LinkError):
        pass


def _btrfs_snapshot(req, src_fd, dest_fd, partial, stats):
    """O(1) subvolume snapshot.  With excludes: writable first, delete
    what is excluded, then read-only (file-level excludes on btrfs)."""
    readonly = not req.excluder
    _ioctl.btrfs_snapshot(src_fd, dest_fd, partial, readonly=readonly, path=req.dest)
    if readonly:
        return
    snap_fd = open_dir_at(dest_fd, partial)
    try:
        stats['excluded'] = _delete_excluded(snap_fd, req.excluder)
        _ioctl.btrfs_set_readonly(snap_fd, True, partial)
    finally:
        os.close(snap_fd)


def _delete_excluded(root_fd, excluder):
    """Walk the writable snapshot and delete every excluded entry; the
    directories keep src's mtimes, as if the entries had never been there."""
    removed = 0
    stack = [(root_fd, b'', False)]
    while stack:
        dfd, rel, owned = stack.pop()
        times = os.fstat(dfd)
        try:
            with os.scandir(dfd) as it:
                entries = [(os.fsencode(e.name), e.is_dir(follow_symlinks=False)) for e in it]
            for name, is_dir in entries:
                path = rel + b'/' + name if rel else name
                if excluder.excluded(path, name, is_dir):
                    remove_tree_at(dfd, name, on_subvolume=_delete_subvolume)
                    removed += 1
                elif is_dir:
                    stack.append((open_dir_at(dfd, name), path, True))
            os.utime(dfd, ns=(times.st_atime_ns, times.st_mtime_ns))
        finally:
            if owned:
                os.close(dfd)
    return removed


def list_snapshots_at(dest, missing_ok=True):
    """Snapshot names under a root given by path; [] for a root that does
    not exist (yet) when ``missing_ok``.  Any other failure (a file, no
    permission) is a typed error naming the root."""
    try:
        fd = open_dir(dest)
    except LinkError as exc:
        if missing_ok and exc.errno == errno.ENOENT:
            return []
        raise
    try:
        return list_snapshots(fd)
    finally:
        os.close(fd)
