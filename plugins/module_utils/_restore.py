# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Getting data back: a snapshot's tree, or one path of it, put back into
the live tree (the snapshot's src) or under another directory.

A restore, under the snapshot root's lock:
  1. picks the snapshot (``latest``: the newest that is not a guard
     snapshot, so a second restore never brings a guard back by accident)
     and PATH inside it, component by component with O_NOFOLLOW, refusing
     ``..`` and paths outside the tree;
  2. plans the very walk it will make (a dry run) and stops there when
     nothing would change: a second identical restore changes nothing;
  3. before anything of the live tree is overwritten or deleted, takes a
     guard snapshot of it in the same root (a normal snapshot whose record
     says ``purpose: guard``), unless told not to;
  4. copies, by the walkers of reflink_copy (_reflink_copy.place): reflinks
     where the snapshot and the target share a filesystem that clones,
     copies elsewhere; each file written aside and renamed over the old one,
     a directory the target lacks built aside and renamed into place; with
     ``mirror``, what the snapshot lacks is deleted (excluded names aside,
     as rsync --delete).
So a restore killed at any moment leaves each path as it was or as
restored, and running it again completes it.
"""

import errno
import os
import stat

from . import _pull, _snapshot
from ._errors import BadInput, LinkError, PermissionDenied, at_door
from ._reflink_copy import place
from ._tree import PRESERVE_ALL, Excluder, Meta, apply_meta_fd, display, lstat_at, open_dir, open_dir_at, read_xattrs

LATEST = 'latest'
LIVE = 'live'


def pick_snapshot(dest_fd, root, wanted=LATEST):
    """The name of the snapshot to restore: ``wanted``, or for ``latest``
    the newest complete snapshot that is not a guard snapshot."""
    names = _snapshot.list_snapshots(dest_fd)
    if wanted in (None, '', LATEST):
        for name in reversed(names):
            if (_snapshot.read_record(dest_fd, name) or {}).get('purpose') != _snapshot.GUARD:
                return name
        raise BadInput('%s holds no snapshot to restore%s' % (root, ' (only guard snapshots: name one)' if names else ''),
                       root, errno.ENOENT)
    if wanted not in names:
        raise BadInput('snapshot %s: no such complete snapshot in %s (newest: %s)'
                       % (display(wanted), root, names[-1] if names else 'none'), root, errno.ENOENT)
    return wanted


def tree_path(path, src=None):
    """PATH inside a snapshot's tree as a tuple of name components (bytes);
    () is the whole tree.  An absolute path inside the snapshot's ``src`` is
    taken relative to it (a live path pasted from a shell); "/" alone is
    the whole tree."""
    if path is None:
        return ()
    if not isinstance(path, (str, bytes)) or (b'\0' if isinstance(path, bytes) else '\0') in path:
        raise BadInput('path must be a path without NUL bytes, got %r' % (path,))
    raw = os.fsencode(path)
    if raw.startswith(b'/') and raw.strip(b'/'):
        base = os.fsencode(src).rstrip(b'/') if src else None
        norm = os.path.normpath(raw)
        if base is None or not (norm == base or norm.startswith(base + b'/')):
            raise BadInput('path %s is outside the snapshot\'s tree%s: give it relative to the tree'
                           % (display(raw), ' (%s)' % src if src else ''), display(raw))
        raw = norm[len(base):]
    parts = tuple(p for p in raw.split(b'/') if p not in (b'', b'.'))
    if b'..' in parts:
        raise BadInput('path %s: ".." is not allowed in a path inside a snapshot' % display(raw), display(raw))
    return parts


MAX_CHANGES = 1000      # changes listed in a result (all are counted; a report callback sees all)


class _Plan(object):
    """Collects a walk's reports: how many changes, the first MAX_CHANGES of
    them, and whether any touches something that is there now (overwritten,
    changed or deleted)."""

    def __init__(self, relay=None):
        self.count = 0
        self.changes = []
        self.touches_existing = False
        self.relay = relay

    def __call__(self, path, action, src_meta, dest_meta):
        self.count += 1
        if len(self.changes) < MAX_CHANGES:
            self.changes.append({'path': os.fsdecode(path), 'action': action})
        if dest_meta is not None or action in ('delete', 'metadata'):
            self.touches_existing = True
        if self.relay is not None:
            self.relay(path, action, src_meta, dest_meta)


class _Point(object):
    """Where the restored entry goes: the parent directory's fd (None in a
    dry run whose parents are still to be made), the leaf name, what is
    there now (lstat or None), an fd on the target's filesystem (probes,
    read-only check), the directories made on the way (paths, for the plan)
    and their (target fd, snapshot fd) pairs, whose times are set last."""
    __slots__ = ('parent', 'leaf', 'existing', 'fs_fd', 'made', 'settle')

    def __init__(self, parent, leaf, fs_fd, made=(), settle=()):
        self.parent, self.leaf, self.fs_fd = parent, leaf, fs_fd
        self.made, self.settle = list(made), list(settle)
        self.existing = lstat_at(parent, leaf) if parent is not None else None


def restore(root, snapshot=LATEST, path=None, to=None, mirror=False, guard=True, dry_run=False,
            report=None, job=None, now=None):
    """Put snapshot ``snapshot`` of the root ``root`` (its PATH, or the whole
    tree) back: into the live tree (the snapshot's src), or with ``to``
    under that directory at the same relative path.  ``report`` is called
    as the walkers call it.  ``job``: a scheduled job's settings (src,
    method, exclude, one_file_system, lock_timeout, root_tag); without one,
    the snapshot's record says where it came from and what it excluded.

    Returns changed, snapshot, path, target, method (reflink, copy or none),
    restored, deleted, guard_snapshot, changes (the plan's first MAX_CHANGES
    entries: path and action), changes_total, stats."""
    for label, value in (('root', root), ('to', to)):
        if value is not None and (not isinstance(value, str) or not os.path.isabs(value) or '\0' in value):
            raise BadInput('%s must be an absolute path, got %r' % (label, value))
    try:
        return _restore(root, snapshot, path, to, mirror, guard, dry_run, report, job or {}, now)
    except OSError as exc:
        raise at_door(exc, root, 'restore')


def _restore(root, snapshot, path, to, mirror, guard, dry_run, report, job, now):
    tag = job.get('root_tag')
    if tag is not None:
        _snapshot.check_initialized(root, tag)
    dest_fd = _snapshot.open_root(root, nofollow=tag is not None)
    lock = None
    fds = []
    try:
        if not dry_run:
            lock = _snapshot.Lock(dest_fd, root, job.get('lock_timeout', 0))
        name = pick_snapshot(dest_fd, root, snapshot)
        record = _snapshot.read_record(dest_fd, name) or {}
        src = job.get('src') or record.get('src')
        if to is None and not src:
            raise BadInput('the record of %s does not say where it came from: give a target directory'
                           % os.path.join(root, name), os.path.join(root, name))
        excluder = Excluder(job.get('exclude', record.get('exclude')) or ())
        remote = _pull.remote_of(src)
        if remote is not None and to is None:
            raise BadInput('%s was pulled from %s: restore it under a directory of this host (--to DIR, then '
                           'rsync it back), or run the restore on the client' % (os.path.join(root, name), src),
                           os.path.join(root, name))
        rel = tree_path(path, remote.path if remote else src)
        if remote is not None:
            src = None          # nothing on this host is the live tree: no guard snapshot
        target = os.path.realpath(to) if to is not None else src
        _check_target(target, root)
        where = _join(target, rel)
        from_where = _join(os.path.join(root, name), rel)

        snap_dirs, snap_leaf, snap_st = _open_in_snapshot(dest_fd, name, rel, fds, from_where)
        # Planned first: nothing, not even a missing parent directory, is made before the plan
        # and the guard snapshot.
        point = _open_target(target, rel, snap_dirs, True, fds)
        if os.fstatvfs(point.fs_fd).f_flag & os.ST_RDONLY:
            raise PermissionDenied('restore: %s: the filesystem is read-only' % where, where, errno.EROFS)
        _check_types(snap_st, point.existing, where)

        live = to is None or src is not None and (target == src or target.startswith(src.rstrip('/') + '/'))
        result = {'snapshot': name, 'path': os.fsdecode(b'/'.join(rel)), 'target': where, 'guard_snapshot': None}
        if dry_run or guard and live:
            # A plan first (the very walk, writing nothing): what a dry run reports, and whether
            # anything live would be overwritten or deleted, which is when a guard is taken.
            plan = _Plan(report if dry_run else None)
            for made in point.made:
                plan(made, 'create', None, None)
            planned = _place(snap_dirs[-1], snap_leaf, snap_st, point, rel, where, from_where, excluder, mirror,
                             plan, True)
            if dry_run or not plan.count:
                return _summary(result, planned, plan)
            if plan.touches_existing:
                result['guard_snapshot'] = _guard(root, src, job, record, now)['snapshot']
        done_plan = _Plan(report)
        if point.made:
            for made in point.made:
                done_plan(made, 'create', None, None)
            point = _open_target(target, rel, snap_dirs, False, fds)
        done = _place(snap_dirs[-1], snap_leaf, snap_st, point, rel, where, from_where, excluder, mirror,
                      done_plan, False)
        for target_fd, snap_fd in point.settle:
            snap = os.fstat(snap_fd)
            os.utime(target_fd, ns=(snap.st_atime_ns, snap.st_mtime_ns))
        return _summary(result, done, done_plan)
    finally:
        for fd in reversed(fds):
            os.close(fd)
        if lock is not None:
            lock.release()
        os.close(dest_fd)


def _join(base, rel):
    return os.path.join(base, *[os.fsdecode(p) for p in rel]) if rel else base


def _place(snap_parent, snap_leaf, snap_st, point, rel, where, from_where, excluder, mirror, report, plan_only):
    """The walk of reflink_copy, from the snapshot to the restore point."""
    return place('auto', PRESERVE_ALL, snap_parent, snap_leaf, snap_st, point.parent, point.leaf, point.existing,
                 display(where), src_where=display(from_where), root_path=b'/'.join(rel) or None,
                 fs_fd=point.fs_fd, dry_run=plan_only, report=report, excluder=excluder, mirror=mirror)


def _summary(result, tree, plan):
    """The result of a walk (or of its plan) and of the changes it reported."""
    stats = tree.stats
    deleted = getattr(tree, 'deleted', 0)
    result.update(changed=plan.count > 0, changes=plan.changes, changes_total=plan.count,
                  restored=tree.changes - deleted, deleted=deleted, stats=stats,
                  method='copy' if stats['copied'] else 'reflink' if stats['reflinked'] else 'none')
    return result


def _check_target(target, root):
    """Never restore into the snapshot root itself."""
    root_real = os.path.realpath(root)
    if target == root_real or target.startswith(root_real.rstrip('/') + '/'):
        raise BadInput('target %s is inside the snapshot root %s' % (target, root_real), target)


def _open_in_snapshot(dest_fd, name, rel, fds, where):
    """The directory fds down to PATH's parent (the snapshot root's, then
    snapshot NAME's, then one per directory of PATH), PATH's last name (NAME
    itself for the whole tree) and its lstat.  Every
    directory is opened with O_NOFOLLOW: a symlink in the tree is restored
    as a symlink, never followed."""
    dirs = [dest_fd]
    leaf = os.fsencode(name)
    for part in rel:
        st = lstat_at(dirs[-1], leaf)
        if st is None or not stat.S_ISDIR(st.st_mode):
            raise BadInput('%s: not in the snapshot (%s is not a directory there)' % (where, display(leaf)),
                           where, errno.ENOENT)
        dirs.append(open_dir_at(dirs[-1], leaf, expect=st, where=where))
        fds.append(dirs[-1])
        leaf = part
    st = lstat_at(dirs[-1], leaf)
    if st is None:
        raise BadInput('%s: not in the snapshot' % where, where, errno.ENOENT)
    return dirs, leaf, st


def _open_target(target, rel, snap_dirs, plan_only, fds):
    """The restore point for PATH under target.  Directories on the way that
    the target lacks are made with the snapshot's attributes (``plan_only``:
    only listed in ``made``); a symlink or a file on the way is refused."""
    if not rel:
        parent_path, leaf = os.path.split(target.rstrip('/'))
        if not leaf:
            raise BadInput('cannot restore a whole tree onto /', target)
        parent = open_dir(parent_path)
        fds.append(parent)
        return _Point(parent, os.fsencode(leaf), parent)
    planned = [b'/'.join(rel[:i + 1]) for i in range(len(rel) - 1)]
    try:
        parent = open_dir(target)
    except LinkError as exc:
        # A missing --to directory is made (0700: what goes in is restored
        # with its own attributes), if its parent exists.
        above = os.path.dirname(target)
        if exc.errno != errno.ENOENT or not os.path.isdir(above):
            raise
        if plan_only:
            fs_fd = open_dir(above)
            fds.append(fs_fd)
            return _Point(None, rel[-1], fs_fd, made=[b'.'] + planned)
        os.mkdir(target, 0o700)
        parent = open_dir(target)
    fds.append(parent)
    settle = []
    for i, part in enumerate(rel[:-1]):
        here = _join(target, rel[:i + 1])
        st = lstat_at(parent, part)
        if st is None:
            if plan_only:
                return _Point(None, rel[-1], parent, made=planned[i:])
            os.mkdir(part, 0o700, dir_fd=parent)
        elif stat.S_ISLNK(st.st_mode):
            raise BadInput('target %s is a symlink; a restore never follows one' % here, here, errno.ELOOP)
        elif not stat.S_ISDIR(st.st_mode):
            raise BadInput('target %s is a file where a directory is restored; move it away first' % here,
                           here, errno.ENOTDIR)
        parent = open_dir_at(parent, part, where=here)
        fds.append(parent)
        if st is None:
            snap_dir = snap_dirs[i + 2]     # [the root's fd, the snapshot's, rel[0]'s, ...]
            apply_meta_fd(parent, Meta(os.fstat(snap_dir), read_xattrs(snap_dir)), PRESERVE_ALL)
            settle.append((parent, snap_dir))
    return _Point(parent, rel[-1], parent, settle=settle)


def _check_types(snap_st, dest_st, where):
    if dest_st is None:
        return
    if stat.S_ISDIR(snap_st.st_mode) and not stat.S_ISDIR(dest_st.st_mode):
        raise BadInput('target %s is a file where a directory is restored; move it away first' % where,
                       where, errno.ENOTDIR)
    if stat.S_ISDIR(dest_st.st_mode) and not stat.S_ISDIR(snap_st.st_mode):
        raise BadInput('target %s is a directory where a file is restored; move it away first' % where,
                       where, errno.EISDIR)


def _guard(root, src, job, record, now):
    """A snapshot of the live tree as it is now, before the restore changes
    it: a normal snapshot (listed, restorable, pruned like any other) whose
    record says it is a guard.  No pruning in this run."""
    req = _snapshot.Request(src, root, method=job.get('method', 'auto'),
                            exclude=job.get('exclude', record.get('exclude')) or (),
                            one_file_system=job.get('one_file_system', record.get('one_file_system', True)),
                            create_dest=job.get('root_tag') is None, root_tag=job.get('root_tag'),
                            on_error='fail')    # a guard that skipped a file could not give it back
    return _snapshot.run(req, now=now, purpose=_snapshot.GUARD, lock_held=True)
