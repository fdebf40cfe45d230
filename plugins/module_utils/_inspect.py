# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the snapshots hold, read-only: space (usage), changes (diff), the
versions of one path (versions), and the list of a root (describe).

Nothing here writes.  Trees are walked like everywhere in the engine: with
directory fds, *at() calls and O_NOFOLLOW, never leaving a tree through a
symlink, and never crossing into another filesystem below a tree's root.

Space is counted in allocated bytes (whole blocks, as du counts them), from
the physical extents (FIEMAP) of every regular file's data: two snapshots
share what lives at the same physical place, whatever made them (hard links
share an inode and so its extents, reflinks and btrfs snapshots share
extents).  Directories, symlinks and filesystem metadata are not counted.
"""

import datetime
import errno
import os
import stat
import time

from . import _ioctl, _retention, _snapshot
from ._errors import BadInput, LinkError, from_oserror
from ._extents import extents_equal
from ._mounts import file_type
from ._tree import DIR_FLAGS, FILE_FLAGS, Excluder, display, join, lstat_at, open_dir, open_dir_at, proc_path, read_xattrs

LIVE = 'live'
_ACL = (b'system.posix_acl_access', b'system.posix_acl_default')
_CHUNK = 1 << 20


def _utc(seconds):
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def iso(when):
    """ISO-8601 UTC of a datetime (to the second)."""
    return when.strftime('%Y-%m-%dT%H:%M:%SZ')


def iso_ns(ns):
    """ISO-8601 UTC of a nanosecond timestamp, with the fraction when there is one."""
    sec, frac = divmod(ns, 10 ** 9)
    text = _utc(sec).strftime('%Y-%m-%dT%H:%M:%S')
    return text + ('.%09d' % frac if frac else '') + 'Z'


def _text(path):
    """A relative path (bytes) for results: str, undecodable bytes kept as
    surrogates (os.fsencode gives the bytes back)."""
    return os.fsdecode(path) if path else '.'


# ---------------------------------------------------------------- walking

def _entries(dfd):
    """(name, lstat) of a directory's entries, sorted by name; an entry
    removed between readdir and lstat (live src changes) is left out."""
    out = []
    with os.scandir(dfd) as it:
        for entry in it:
            try:
                out.append((os.fsencode(entry.name), entry.stat(follow_symlinks=False)))
            except FileNotFoundError:
                pass
    out.sort()
    return out


_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EAGAIN)


def _open_child(dfd, name, st, where):
    """open_dir_at, or None when the directory was removed or replaced
    since we listed it (a live tree): it is then left out, never followed."""
    try:
        return open_dir_at(dfd, name, st, where)
    except LinkError as exc:
        if exc.errno in _GONE:
            return None
        raise


def walk(root_fd, excluder=None, one_fs=True, top=b'', skip=()):
    """Yield (rel, name, parent_fd, lstat) for every entry below root_fd,
    a directory before its contents; parent_fd is valid during the yield.
    Directories on another device than the root are listed, not entered
    (``one_fs``); excluded entries (rsync-style patterns) and the
    directories in ``skip`` ((st_dev, st_ino) pairs) are skipped.
    One fd per level is open, however wide the tree."""
    root_dev = os.fstat(root_fd).st_dev
    stack = [(root_fd, top, iter(_entries(root_fd)), False)]
    try:
        while stack:
            dfd, rel, items, _owned = stack[-1]
            for name, st in items:
                path = join(rel, name)
                is_dir = stat.S_ISDIR(st.st_mode)
                if excluder and excluder.excluded(path, name, is_dir) or \
                        is_dir and (st.st_dev, st.st_ino) in skip:
                    continue
                yield path, name, dfd, st
                if is_dir and (not one_fs or st.st_dev == root_dev):
                    fd = _open_child(dfd, name, st, path)
                    if fd is None:
                        continue
                    stack.append((fd, path, iter(_entries(fd)), True))
                    break
            else:
                stack.pop()
                if _owned:
                    os.close(dfd)
    finally:
        for dfd, _rel, _items, owned in stack:
            if owned:
                os.close(dfd)


def _open_file_at(dfd, name, st, where):
    """Open a regular file we lstat'ed; None if it changed meanwhile."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return None
        raise from_oserror(exc, display(where), 'open')
    fst = os.fstat(fd)
    if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(fst.st_mode):
        os.close(fd)
        return None
    return fd


def _open_root(dest):
    return open_dir(dest)


def record_source(root):
    """(src, Excluder) of the newest snapshot's record: the live tree the
    snapshots were taken of, (None, None) when unknown or gone."""
    root_fd = _open_root(root)
    try:
        for name in reversed(_snapshot.list_snapshots(root_fd)):
            record = _snapshot.read_record(root_fd, name) or {}
            src = record.get('src')
            if isinstance(src, str) and os.path.isabs(src):
                if not os.path.isdir(src):
                    return None, None
                try:
                    return src, Excluder(record.get('exclude') or ())
                except ValueError:
                    return src, None
    finally:
        os.close(root_fd)
    return None, None


# ---------------------------------------------------------------- usage

class _Inode(object):
    __slots__ = ('owners', 'links', 'nlink', 'extents', 'notes')

    def __init__(self, nlink):
        self.owners = set()
        self.links = 0
        self.nlink = nlink
        self.extents = []       # (physical, length, flags)
        self.notes = set()


def _file_extents(fd, st, where):
    """(extents, notes) of one file: comparable extents by physical place;
    what cannot be placed (inline, delayed, no FIEMAP) as (None, bytes)."""
    notes = set()
    out = []
    try:
        extents = list(_ioctl.fiemap(fd, display(where)))
    except LinkError:
        return [(None, st.st_blocks * 512, 0)], set(['no FIEMAP: st_blocks of whole inodes'])
    for ext in extents:
        if ext.flags & _ioctl.FIEMAP_EXTENT_ENCODED:
            notes.add('compressed or encoded extents: their uncompressed lengths are counted')
        if ext.flags & (_ioctl.FIEMAP_EXTENT_DATA_INLINE | _ioctl.FIEMAP_EXTENT_DATA_TAIL):
            notes.add('inline data (kept in metadata) counted as its inode\'s own')
            out.append((None, min(ext.length, max(st.st_size - ext.logical, 0)), ext.flags))
        elif not ext.comparable:
            notes.add('extents without a known place (delayed allocation) counted as their inode\'s own')
            out.append((None, ext.length, ext.flags))
        else:
            out.append((ext.physical, ext.length, ext.flags))
    return out, notes


def usage(root, live=None, excluder=None, names=None):
    """Space of the snapshots under ``root`` (allocated bytes).

    Per snapshot, oldest first: ``exclusive_bytes``, what deleting it alone
    frees (data no other snapshot, no file of ``live`` and, as far as the
    kernel tells, nothing else references), and ``shared_bytes``, the rest
    of its data.  ``total_bytes``: the data of the whole chain on disk,
    counted once; ``chain_exclusive_bytes``: what deleting every snapshot
    would free.  ``live`` (the job's src; ``excluder`` its excludes) is
    walked too, so that data still in use there is reported as shared.
    Without it, a place the kernel flags as shared (FIEMAP_EXTENT_SHARED)
    that no walked file explains is taken to be shared with something
    outside, and an inode with links outside the walked trees likewise.
    Where a figure cannot be exact, ``estimate`` is true and ``reasons``
    says why.
    """
    root_fd = _open_root(root)
    try:
        # statfs has XFS start its deferred inactivation of deleted inodes
        # now: until then, their blocks still count as shared.
        os.fstatvfs(root_fd)
        root_st = os.fstat(root_fd)
        names = _snapshot.list_snapshots(root_fd) if names is None else names
        methods = [(_snapshot.read_record(root_fd, n) or {}).get('method') for n in names]
        inodes = {}
        present = []
        for name in names:
            try:
                tree = open_dir_at(root_fd, name, where=os.path.join(root, name))
            except LinkError as exc:
                if exc.errno == errno.ENOENT:       # pruned meanwhile
                    continue
                raise
            try:
                _scan(tree, len(present), inodes, os.fsencode(os.path.join(root, name)))
            finally:
                os.close(tree)
            present.append(name)
        methods = [methods[names.index(n)] for n in present]
        names = present
    finally:
        os.close(root_fd)
    if live is not None:
        tree = open_dir(live)
        try:
            # The root inside live without an exclude is never live's data.
            _scan(tree, LIVE, inodes, os.fsencode(live), excluder, skip={(root_st.st_dev, root_st.st_ino)})
        finally:
            os.close(tree)
    return _account(root, live, names, methods, inodes)


def _scan(tree_fd, owner, inodes, top, excluder=None, skip=()):
    for rel, name, dfd, st in walk(tree_fd, excluder, skip=skip):
        if not stat.S_ISREG(st.st_mode):
            continue
        key = (st.st_dev, st.st_ino)
        ino = inodes.get(key)
        if ino is None:
            fd = _open_file_at(dfd, name, st, join(top, rel))
            if fd is None:          # gone or replaced while we looked: not counted
                continue
            try:
                ino = inodes[key] = _Inode(st.st_nlink)
                ino.extents, ino.notes = _file_extents(fd, st, join(top, rel))
            finally:
                os.close(fd)
        ino.owners.add(owner)
        ino.links += 1


def _account(root, live, names, methods, inodes):
    count = len(names)
    exclusive = [0] * count
    shared = [0] * count
    reasons = [set() for _i in range(count)]
    totals = {'total': 0, 'chain_exclusive': 0}

    def add(owners, length, outside, notes=()):
        snaps = [o for o in owners if o != LIVE]
        if not snaps or length <= 0:
            return
        totals['total'] += length
        alone = not outside and LIVE not in owners
        if alone:
            totals['chain_exclusive'] += length
        for s in snaps:
            if alone and len(snaps) == 1:
                exclusive[s] += length
            else:
                shared[s] += length
            reasons[s].update(notes)

    # Data without a physical place belongs to its inode alone.
    events = []
    table = []
    for ino in inodes.values():
        outside = ino.links < ino.nlink
        for phys, length, flags in ino.extents:
            if phys is None:
                add(ino.owners, length, outside, ino.notes)
                continue
            ref = len(table)
            table.append((ino, flags))
            events.append((phys, 1, ref))
            events.append((phys + length, 0, ref))
    events.sort()
    active = set()
    last = None
    for pos, kind, ref in events:
        if active and last is not None and pos > last:
            owners, outside, flagged, notes = set(), False, False, set()
            for a in active:
                ino, flags = table[a]
                owners.update(ino.owners)
                outside = outside or ino.links < ino.nlink
                flagged = flagged or bool(flags & _ioctl.FIEMAP_EXTENT_SHARED)
                notes.update(ino.notes)
            # The kernel says "shared" but we saw one reference only: the
            # other one is outside what we walked.
            add(owners, pos - last, outside or (flagged and len(active) == 1), notes)
        if kind:
            active.add(ref)
        else:
            active.discard(ref)
        last = pos
    snaps = []
    all_reasons = set()
    for i, name in enumerate(names):
        entry = {'name': name, 'method': methods[i], 'exclusive_bytes': exclusive[i],
                 'shared_bytes': shared[i], 'estimate': bool(reasons[i])}
        if reasons[i]:
            entry['reasons'] = sorted(reasons[i])
        all_reasons.update(reasons[i])
        snaps.append(entry)
    out = {'root': root, 'live': live, 'bytes': 'allocated', 'snapshots': snaps,
           'total_bytes': totals['total'], 'chain_exclusive_bytes': totals['chain_exclusive'],
           'estimate': bool(all_reasons)}
    if all_reasons:
        out['reasons'] = sorted(all_reasons)
    return out


# ---------------------------------------------------------------- diff

def _xattrs(dfd, name, st):
    try:
        return read_xattrs(proc_path(dfd, name), follow=False)
    except OSError:
        return {}


def _meta_changes(a_dfd, b_dfd, name, sa, sb):
    """rsync's attribute letters in which two entries of one type differ
    (t mtime, p permissions, o owner, g group, a ACL, x other xattrs)."""
    out = []
    if sa.st_mtime_ns != sb.st_mtime_ns:
        out.append('t')
    if not stat.S_ISLNK(sa.st_mode) and stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
        out.append('p')
    if sa.st_uid != sb.st_uid:
        out.append('o')
    if sa.st_gid != sb.st_gid:
        out.append('g')
    xa, xb = _xattrs(a_dfd, name, sa), _xattrs(b_dfd, name, sb)
    if xa != xb:
        keys = set(k for k in set(xa) | set(xb) if xa.get(k) != xb.get(k))
        if keys & set(_ACL):
            out.append('a')
        if keys - set(_ACL):
            out.append('x')
    return out


def _same_content(fa, fb, size):
    done = 0
    while done < size:
        a, b = os.pread(fa, _CHUNK, done), os.pread(fb, _CHUNK, done)
        if a != b:
            return False
        if not a:
            return True
        done += len(a)
    return True


def _data_changed(a_dfd, b_dfd, name, sa, sb, where):
    """True if the file's data differs.  Reads no data unless it has to:
    the same inode (hard links) is the same data; a different size is a
    change; the same size and ns mtime is taken as the same data (rsync's
    quick check); then the same physical extents (reflinks) prove it is the
    same; only a same-size file with another mtime and other extents is
    compared byte by byte."""
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return False
    if sa.st_size != sb.st_size:
        return True
    if sa.st_mtime_ns == sb.st_mtime_ns:
        return False
    fa = _open_file_at(a_dfd, name, sa, where)
    fb = _open_file_at(b_dfd, name, sb, where) if fa is not None else None
    try:
        if fa is None or fb is None:
            return True
        if extents_equal(fa, fb):
            return False
        return not _same_content(fa, fb, sa.st_size)
    finally:
        for fd in (fa, fb):
            if fd is not None:
                os.close(fd)


def _content_changed(a_dfd, b_dfd, name, sa, sb, where):
    """Files: data (see _data_changed); symlinks: target; devices: number."""
    if stat.S_ISREG(sa.st_mode):
        return _data_changed(a_dfd, b_dfd, name, sa, sb, where)
    if stat.S_ISLNK(sa.st_mode):
        try:
            return os.readlink(name, dir_fd=a_dfd) != os.readlink(name, dir_fd=b_dfd)
        except OSError as exc:
            if exc.errno in _GONE + (errno.EINVAL,):      # replaced meanwhile
                return True
            raise from_oserror(exc, display(where), 'read symlink')
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        return sa.st_rdev != sb.st_rdev
    return False


class _Diff(object):
    def __init__(self):
        self.added, self.deleted, self.modified, self.metadata = [], [], [], []
        self.changes = {}
        self.types = {}

    def note(self, kind, rel, st, letters=None):
        getattr(self, kind).append(_text(rel))
        self.types[_text(rel)] = file_type(st.st_mode)
        if letters:
            self.changes[_text(rel)] = letters

    def subtree(self, kind, dfd, name, st, rel, excluder):
        """An added or deleted entry and, for a directory, all below it."""
        self.note(kind, rel, st)
        fd = _open_child(dfd, name, st, rel) if stat.S_ISDIR(st.st_mode) else None
        if fd is not None:
            try:
                for path, _n, _d, cst in walk(fd, excluder, top=rel):
                    self.note(kind, path, cst)
            finally:
                os.close(fd)

    def result(self):
        return {'added': sorted(self.added), 'deleted': sorted(self.deleted),
                'modified': sorted(self.modified), 'metadata': sorted(self.metadata),
                'changes': self.changes, 'types': self.types}


def diff(tree_a, tree_b, excluder_a=None, excluder_b=None, one_fs=True):
    """What changed from ``tree_a`` to ``tree_b`` (paths relative to them,
    sorted): ``added`` (in b only; a directory with all below it),
    ``deleted`` (in a only), ``modified`` (content: a file's data, a
    symlink's target, a device's number), ``metadata`` (only mode, owner,
    group, mtime, ACLs or xattrs).  An entry whose type changed is deleted
    and added.  ``changes``: rsync's letters per modified or metadata path
    (c content, s size, t mtime, p mode, o owner, g group, a ACL, x xattrs);
    ``types``: the type of each listed path.  This is what
    ``rsync -ani --delete --checksum B/ A/`` itemizes (without -H: hard
    links between names are not compared); see _data_changed for what is
    read.  The roots themselves are compared as ``.``."""
    fa = open_dir(tree_a)
    try:
        fb = open_dir(tree_b)
        try:
            return _diff_fds(fa, fb, excluder_a, excluder_b, one_fs)
        finally:
            os.close(fb)
    finally:
        os.close(fa)


def _diff_fds(root_a, root_b, excluder_a, excluder_b, one_fs):
    out = _Diff()
    sa, sb = os.fstat(root_a), os.fstat(root_b)
    letters = _meta_changes(root_a, root_b, b'.', sa, sb)
    if letters:
        out.note('metadata', b'', sb, letters)
    devs = (sa.st_dev, sb.st_dev)
    stack = [(root_a, root_b, b'', None)]
    try:
        while stack:
            dfa, dfb, rel, items = stack[-1]
            if items is None:
                items = iter(_pairs(dfa, dfb, rel, excluder_a, excluder_b))
                stack[-1] = (dfa, dfb, rel, items)
            for name, ea, eb in items:
                if ea is None or eb is None:
                    path = join(rel, name)
                    if eb is None:
                        out.subtree('deleted', dfa, name, ea, path, excluder_a)
                    else:
                        out.subtree('added', dfb, name, eb, path, excluder_b)
                    continue
                path = join(rel, name)
                if stat.S_IFMT(ea.st_mode) != stat.S_IFMT(eb.st_mode):
                    out.subtree('deleted', dfa, name, ea, path, excluder_a)
                    out.subtree('added', dfb, name, eb, path, excluder_b)
                    continue
                if (ea.st_dev, ea.st_ino) == (eb.st_dev, eb.st_ino):
                    continue            # one inode: nothing to compare, not even below
                letters = _meta_changes(dfa, dfb, name, ea, eb)
                if _content_changed(dfa, dfb, name, ea, eb, path):
                    if stat.S_ISREG(ea.st_mode) and ea.st_size != eb.st_size:
                        letters.insert(0, 's')
                    out.note('modified', path, eb, ['c'] + letters)
                elif letters:
                    out.note('metadata', path, eb, letters)
                if stat.S_ISDIR(ea.st_mode) and (not one_fs or (ea.st_dev, eb.st_dev) == devs):
                    ca = _open_child(dfa, name, ea, path)
                    try:
                        cb = _open_child(dfb, name, eb, path) if ca is not None else None
                    except BaseException:
                        os.close(ca)
                        raise
                    if cb is None:
                        if ca is not None:
                            os.close(ca)
                        continue
                    stack.append((ca, cb, path, None))
                    break
            else:
                stack.pop()
                if rel:
                    os.close(dfa)
                    os.close(dfb)
    finally:
        for dfa, dfb, rel, _items in stack:
            if rel:
                os.close(dfa)
                os.close(dfb)
    return out.result()


def _pairs(dfa, dfb, rel, excluder_a, excluder_b):
    """(name, lstat in a or None, lstat in b or None), sorted by name, less
    the names that are one inode in both (hard-link snapshots: most of
    them), known from readdir's inode numbers without an lstat; only where
    both directories are on one device (btrfs snapshots are each a device
    of their own, with the same inode numbers for different files)."""
    def listing(dfd, excluder):
        out = {}
        with os.scandir(dfd) as it:
            for entry in it:
                name = os.fsencode(entry.name)
                if excluder and excluder.excluded(join(rel, name), name, entry.is_dir(follow_symlinks=False)):
                    continue
                out[name] = entry
        return out

    def lstat_of(entry):
        try:
            return entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None         # removed since readdir (a live tree): left out

    a, b = listing(dfa, excluder_a), listing(dfb, excluder_b)
    one_device = os.fstat(dfa).st_dev == os.fstat(dfb).st_dev
    out = []
    for name in sorted(set(a) | set(b)):
        ea, eb = a.get(name), b.get(name)
        if one_device and ea is not None and eb is not None and ea.inode() == eb.inode():
            continue
        sa = lstat_of(ea) if ea is not None else None
        sb = lstat_of(eb) if eb is not None else None
        if sa is not None or sb is not None:
            out.append((name, sa, sb))
    return out


# ---------------------------------------------------------------- versions

def relative_path(path, live=None):
    """The parts (bytes) of a path inside a tree.  Relative paths must stay
    inside (no ``..``); an absolute path must be below ``live``."""
    raw = os.fsencode(path)
    if not raw or b'\0' in raw:
        raise BadInput('path must be a non-empty path without NUL bytes, got %r' % (path,), display(raw))
    if raw.startswith(b'/'):
        base = os.fsencode(live).rstrip(b'/') if live else None
        if base is None or not (raw == base or raw.startswith(base + b'/')):
            raise BadInput('%s: an absolute path must be inside src %s' % (display(raw), live), display(raw))
        raw = raw[len(base):]
    parts = [p for p in raw.split(b'/') if p not in (b'', b'.')]
    if b'..' in parts:
        raise BadInput('%s: ".." is not allowed in a path inside a snapshot' % display(raw), display(raw))
    return parts


def lstat_path(tree_fd, parts, where):
    """(parent_fd, lstat) of tree/parts, walked component by component with
    O_NOFOLLOW; (None, None) if it does not exist there.  A symlink on the
    way is refused.  The caller closes parent_fd (unless it is tree_fd)."""
    if not parts:
        return tree_fd, os.fstat(tree_fd)
    fd = tree_fd
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    if fd != tree_fd:
                        os.close(fd)
                    return None, None
                st = lstat_at(fd, part)
                if st is not None and stat.S_ISLNK(st.st_mode):
                    raise BadInput('%s: %s is a symlink; paths are never followed through symlinks'
                                   % (display(where), display(b'/'.join(parts[:i + 1]))), display(where), errno.ELOOP)
                if exc.errno == errno.ENOTDIR:
                    if fd != tree_fd:
                        os.close(fd)
                    return None, None
                raise from_oserror(exc, display(where), 'open')
            if fd != tree_fd:
                os.close(fd)
            fd = child
        st = lstat_at(fd, parts[-1])
        if st is None:
            if fd != tree_fd:
                os.close(fd)
            return None, None
        return fd, st
    except BaseException:
        if fd != tree_fd:
            os.close(fd)
        raise


def versions(root, path, live=None, names=None):
    """The distinct versions of one path across the snapshots (oldest
    first) and ``live`` (last), identical neighbours collapsed: the same
    inode, or the same type, size, ns mtime, mode, owner, xattrs and (for
    a symlink) target.  Each: ``snapshot`` (the first holding it, or
    ``live``), ``snapshots`` (all of them), ``path``, ``type``, ``size``,
    ``mtime`` (ISO-8601 UTC).  Snapshots without the path are skipped."""
    parts = relative_path(path, live)
    root_fd = _open_root(root)
    out = []
    try:
        names = _snapshot.list_snapshots(root_fd) if names is None else names
        trees = [(n, os.path.join(root, n)) for n in names] + ([(LIVE, live)] if live else [])
        previous = None
        for label, top in trees:
            try:
                tree = open_dir_at(root_fd, label, where=top) if label != LIVE else open_dir(top)
            except LinkError as exc:
                if exc.errno == errno.ENOENT and label != LIVE:      # pruned meanwhile
                    continue
                raise
            try:
                key, entry = _version_at(tree, parts, top)
            finally:
                os.close(tree)
            if entry is None:
                continue
            if previous is not None and _same_version(previous, key):
                out[-1]['snapshots'].append(label)
                continue
            entry['snapshot'] = label
            entry['snapshots'] = [label]
            out.append(entry)
            previous = key
    finally:
        os.close(root_fd)
    return out


def _version_at(tree, parts, top):
    rel = b'/'.join(parts)
    where = os.path.join(os.fsencode(top), rel) if rel else os.fsencode(top)
    dfd, st = lstat_path(tree, parts, where)
    if st is None:
        return None, None
    try:
        name = parts[-1] if parts else None
        if name is None:
            xattrs = read_xattrs(tree)
            target = None
        else:
            xattrs = _xattrs(dfd, name, st)
            target = os.readlink(name, dir_fd=dfd) if stat.S_ISLNK(st.st_mode) else None
    finally:
        if dfd != tree:
            os.close(dfd)
    key = ((st.st_dev, st.st_ino), (stat.S_IFMT(st.st_mode), st.st_size if not stat.S_ISDIR(st.st_mode) else None,
                                    st.st_mtime_ns, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                    st.st_rdev, target, sorted(xattrs.items())))
    return key, {'path': os.fsdecode(where), 'type': file_type(st.st_mode), 'size': st.st_size,
                 'mtime': iso_ns(st.st_mtime_ns)}


def _same_version(a, b):
    return a[0] == b[0] or a[1] == b[1]


# ---------------------------------------------------------------- listing

def describe(root, now=None, with_usage=False, live=None, excluder=None):
    """The snapshots of a root in the order they were made: ``name``, ``path``,
    ``created`` (ISO-8601 UTC: a run's start, from its record, else its name),
    ``age_seconds``, ``future_dated`` (created after ``now``: see
    _retention.is_future_dated),
    ``method`` and ``stats`` (from the record, None without one), ``files``,
    ``complete`` (false for the leftover of a run that did not finish),
    ``guard`` (made by a restore before it changed the live tree);
    with ``with_usage``, ``exclusive_bytes`` and ``shared_bytes``."""
    now = time.time() if now is None else now
    root_fd = _open_root(root)
    try:
        names = _snapshot.list_snapshots(root_fd)
        partial = [n for n in _snapshot.leftovers(root_fd) if n.endswith(_snapshot.PARTIAL)]
        out = []
        for name in names:
            record = _snapshot.read_record(root_fd, name) or {}
            out.append(_entry(root, name, name, record, True, now))
        for leftover in partial:
            stem = leftover[:-len(_snapshot.PARTIAL)]
            out.append(_entry(root, leftover, stem, {}, False, now))
    finally:
        os.close(root_fd)
    out.sort(key=lambda e: (_retention.parse_snapshot_name(e['stem']), not e['complete']))
    for entry in out:
        del entry['stem']
    result = {'root': root, 'snapshots': out, 'latest': names[-1] if names else None}
    if with_usage:
        use = usage(root, live=live, excluder=excluder, names=names)
        by_name = dict((s['name'], s) for s in use['snapshots'])
        for entry in out:
            found = by_name.get(entry['name']) if entry['complete'] else None
            if found is not None:       # (not one pruned meanwhile)
                entry['exclusive_bytes'] = found['exclusive_bytes']
                entry['shared_bytes'] = found['shared_bytes']
                if found['estimate']:
                    entry['estimate'] = True
        result['usage'] = dict((k, v) for k, v in use.items() if k != 'snapshots')
    return result


def _entry(root, name, stem, record, complete, now):
    when = _retention.created_time(stem, record)
    stats = record.get('stats') if isinstance(record.get('stats'), dict) else None
    return {'name': name, 'stem': stem, 'path': os.path.join(root, name), 'created': iso(when),
            'age_seconds': int(now - (when - _utc(0)).total_seconds()),
            'future_dated': _retention.is_future_dated(when, _utc(now)),
            'method': record.get('method'), 'files': (stats or {}).get('files'), 'stats': stats,
            'complete': complete, 'guard': record.get('purpose') == _snapshot.GUARD}
