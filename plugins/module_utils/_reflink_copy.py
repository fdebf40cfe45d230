# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One reflink_copy request: ``cp -a --reflink`` for a file or a tree.

A new dest tree is built by _fresh.FreshTree under a hidden name and renamed
into place; an existing dest is brought up to date by _update.UpdateTree;
a single file is always written aside and renamed over dest.
"""

import errno
import os
import stat
import time

from ._errors import BadInput, at_door, from_oserror
from ._fresh import FreshTree
from ._transfer import check_policy
from ._tree import (
    FILE_FLAGS, PRESERVE_ALL, Meta, display, lstat_at, open_dir, open_dir_at, remove_tree_at, reset_new_dir,
    syncfs, temp_name,
)
from ._update import UpdateTree
from ._walk import new_stats


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
    Every failure is a LinkError naming its path, never a bare OSError.
    """
    try:
        return _copy(src, dest, policy, preserve, force, backup, dry_run, report)
    except OSError as exc:
        raise at_door(exc, display(dest), 'copy')


def _copy(src, dest, policy, preserve, force, backup, dry_run, report):
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
        check_policy(policy)
        if dest_st is not None and not force:
            return _result(new_stats(), 0, None)
        where = display(dest_b)
        if backup and dest_st is not None and not dry_run:
            plan = _run(policy, preserve, src_real, src_st, parent_fd, name, dest_st, where, dry_run=True)
            if not plan.changes:
                return _result(plan.stats, plan.changes, None)
            backup_name = _make_backup(parent_fd, name, dest_real, dest_st, preserve)
            tree = _run(policy, preserve, src_real, src_st, parent_fd, name, dest_st, where)
            return _result(tree.stats, tree.changes, os.path.join(parent, backup_name))
        tree = _run(policy, preserve, src_real, src_st, parent_fd, name, dest_st, where, dry_run, report)
        return _result(tree.stats, tree.changes, None)
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
        _run('auto', preserve, dest_real, dest_st, parent_fd, backup_name, None, display(backup_name))
    else:
        os.link(name, backup_name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
    return backup_name


def _result(stats, changes, backup_file):
    return {
        'changed': changes > 0, 'method': _method(stats), 'files': stats['files'],
        'bytes_cloned': stats['bytes_cloned'], 'bytes_copied': stats['bytes_copied'],
        'backup_file': os.fsdecode(backup_file) if backup_file else None, 'stats': stats,
    }


def _run(policy, preserve, src_real, src_st, parent_fd, name, dest_st, where, dry_run=False, report=None):
    """Copy src (the caller's resolved path) to parent_fd/name."""
    src_parent, src_name = os.path.split(src_real)
    src_parent_fd = open_dir(src_parent)
    try:
        return place(policy, preserve, src_parent_fd, src_name, src_st, parent_fd, name, dest_st, where,
                     src_where=display(src_real), dry_run=dry_run, report=report)
    finally:
        os.close(src_parent_fd)


def place(policy, preserve, src_parent_fd, src_name, src_st, parent_fd, name, dest_st, where, src_where=None,
          root_path=None, fs_fd=None, **options):
    """Copy the entry src_parent_fd/src_name (lstat ``src_st``) to
    parent_fd/name (lstat ``dest_st``, None if absent) and return the walker
    that did it: a file, symlink or special file (written aside, renamed
    over dest, fsynced first), a new tree (built under a hidden name,
    synced, renamed into place when complete) or an existing tree (brought
    up to date).
    ``where``/``src_where``: dest and src in messages; ``root_path``: the
    entry's path in reports and excludes (default: its name); ``fs_fd``: an
    fd on dest's filesystem where parent_fd is None (a dry run whose
    parents are still to be made).
    ``options``: the walkers' dry_run, report, excluder; UpdateTree's mirror."""
    src_where = src_where or display(src_name)
    fs_fd = parent_fd if fs_fd is None else fs_fd
    options['dest_dev'] = os.fstat(fs_fd).st_dev
    if root_path:
        options['base'] = root_path
    if not stat.S_ISDIR(src_st.st_mode):
        tree = UpdateTree(policy, preserve, **options)
        tree.sync_files = True
        if stat.S_ISREG(src_st.st_mode):
            try:
                fd = os.open(src_name, FILE_FLAGS, dir_fd=src_parent_fd)
            except OSError as exc:
                raise from_oserror(exc, src_where, 'open')
            try:
                tree.copier.probe(fd, fs_fd, where)
            finally:
                os.close(fd)
        try:
            tree.copy_entry(src_parent_fd, src_name, parent_fd, name, src_st, path=root_path)
        except OSError as exc:
            raise from_oserror(exc, where, 'copy')
        return tree
    src_fd = open_dir_at(src_parent_fd, src_name, expect=src_st, where=src_where)
    try:
        if dest_st is not None:
            tree = UpdateTree(policy, preserve, **options)
            tree.copier.probe_tree(src_fd, fs_fd, where)
            dst_fd = open_dir_at(parent_fd, name, where=where)
            try:
                tree.copy_tree(src_fd, dst_fd)
            finally:
                os.close(dst_fd)
            return tree
        options.pop('mirror', None)     # a new tree has nothing to delete
        tree = FreshTree(policy, preserve, **options)
        tree.copier.probe_tree(src_fd, fs_fd, where)
        tree.note(root_path or name, 'create', Meta(src_st), None)
        if tree.dry_run:
            tree.copy_tree(src_fd, None)
            return tree
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
        return tree
    finally:
        os.close(src_fd)
