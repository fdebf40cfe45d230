# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Safe tree primitives: directory fds, excludes, metadata, removal.

Everything below a root is reached with *at() calls relative to an open
directory fd and O_NOFOLLOW, so swapping a directory for a symlink while we
walk can never lead us outside the tree.  Names are bytes end to end:
file names need not be UTF-8.
"""

import ctypes
import errno
import os
import re
import resource
import stat
import time

from ._errors import LinkError, from_oserror

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: if a regular file is swapped for a fifo after lstat, open
# must not hang; we verify the type with fstat anyway.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
PRESERVE_ALL = frozenset(('mode', 'ownership', 'timestamps', 'xattrs'))
_XATTR_UNSUPPORTED = frozenset((errno.ENOTSUP, errno.EOPNOTSUPP))


def raise_fd_limit():
    """Deep trees keep a few fds open per level: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
        except (ValueError, OSError):
            pass


# Control characters (a newline in a file name) would split a log line or
# let a file name forge one: messages show them as \xNN.
_CONTROLS = dict((c, '\\x%02x' % c) for c in list(range(0x20)) + [0x7f])


def display(path):
    """A path for messages, on one line: undecodable bytes and control
    characters shown as \\xNN, never raising."""
    if isinstance(path, bytes):
        path = path.decode('utf-8', 'backslashreplace')
    elif isinstance(path, str):
        path = path.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')
    else:
        path = str(path)
    return path.translate(_CONTROLS)


def join(parent, name):
    return name if not parent else parent + b'/' + name


def open_dir(path):
    """Open a top-level directory given by the user (symlinks in the given
    path are the user's words and are followed; nothing below it is)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise from_oserror(exc, display(path), 'open directory')


def open_dir_nofollow(path):
    """Open an absolute directory path component by component from /, with
    O_NOFOLLOW at every step: a symlink anywhere on the way is an error."""
    parts = [p for p in os.fsencode(path).split(b'/') if p not in (b'', b'.')]
    if b'..' in parts:
        raise LinkError('open directory: %s: ".." in a path that must be real' % display(path), display(path))
    # O_PATH on the way: like a plain open of the whole path, it needs only
    # search permission on the directories above.
    fd = os.open('/', os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            flags = DIR_FLAGS if i == len(parts) - 1 else os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                child = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise from_oserror(exc, display(path), 'open directory')
            os.close(fd)
            fd = child
        if not parts:
            os.close(fd)
            fd = os.open('/', DIR_FLAGS)
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_dir_at(dfd, name, expect=None, where=None):
    """openat(dfd, name, O_DIRECTORY|O_NOFOLLOW); with ``expect`` (a stat
    result) check it is still the same directory we looked at."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=dfd)
    except OSError as exc:
        raise from_oserror(exc, display(where or name), 'open directory')
    if expect is not None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
            os.close(fd)
            raise LinkError('open directory: %s: changed while being read' % display(where or name),
                            display(where or name), errno.EAGAIN)
    return fd


def lstat_at(dfd, name):
    """lstat relative to dfd, or None if it does not exist."""
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def proc_path(dfd, name):
    """A path naming dfd/name without walking the tree again: /proc resolves
    the fd itself, and the last component is not followed by *xattr calls
    made with follow_symlinks=False."""
    return b'/proc/self/fd/%d/%s' % (dfd, name)


# ---------------------------------------------------------------- metadata

def read_xattrs(target, follow=True):
    """{name: value} of an fd or a (bytes) path; {} where unsupported."""
    try:
        names = os.listxattr(target, follow_symlinks=follow) if not isinstance(target, int) \
            else os.listxattr(target)
    except OSError as exc:
        if exc.errno in _XATTR_UNSUPPORTED:
            return {}
        raise
    result = {}
    for name in names:
        try:
            result[name] = os.getxattr(target, name, follow_symlinks=follow) if not isinstance(target, int) \
                else os.getxattr(target, name)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA,) + tuple(_XATTR_UNSUPPORTED):
                raise
    return result


def write_xattrs(target, wanted, follow=True):
    """Make the xattrs of ``target`` exactly ``wanted`` (set and remove)."""
    current = read_xattrs(target, follow)
    kwargs = {} if isinstance(target, int) else {'follow_symlinks': follow}
    for name, value in wanted.items():
        if current.get(name) != value:
            os.setxattr(target, name, value, **kwargs)
    for name in current:
        if name not in wanted:
            try:
                os.removexattr(target, name, **kwargs)
            except OSError as exc:
                # security.* labels may be kernel-managed; leave them be.
                if exc.errno not in (errno.EPERM, errno.EACCES, errno.ENODATA) + tuple(_XATTR_UNSUPPORTED):
                    raise


class Meta(object):
    """The preserved attributes of one entry, as rsync -aHAX sees them."""
    __slots__ = ('mode', 'uid', 'gid', 'mtime_ns', 'atime_ns', 'size', 'xattrs')

    def __init__(self, st, xattrs=None):
        self.mode = st.st_mode
        self.uid = st.st_uid
        self.gid = st.st_gid
        self.mtime_ns = st.st_mtime_ns
        self.atime_ns = st.st_atime_ns
        self.size = st.st_size
        self.xattrs = xattrs

    def differs(self, other, preserve):
        """Names of the preserved attributes in which other differs."""
        out = []
        if stat.S_IFMT(self.mode) != stat.S_IFMT(other.mode):
            out.append('type')
        if stat.S_ISREG(self.mode) and self.size != other.size:
            out.append('size')
        if 'mode' in preserve and not stat.S_ISLNK(self.mode) and \
                stat.S_IMODE(self.mode) != stat.S_IMODE(other.mode):
            out.append('mode')
        if 'ownership' in preserve and (self.uid, self.gid) != (other.uid, other.gid):
            out.append('owner')
        if 'timestamps' in preserve and self.mtime_ns != other.mtime_ns:
            out.append('mtime')
        if 'xattrs' in preserve and (self.xattrs or {}) != (other.xattrs or {}):
            out.append('xattrs')
        return out


_EUID, _EGID = os.geteuid(), os.getegid()


def apply_meta_fd(fd, meta, preserve, new=False, born_mode=None):
    """Set preserved attributes on an open file or directory.  Order matters:
    chown clears set-id bits, an ACL xattr rewrites group mode bits, and the
    times go last because everything else may touch them.

    ``new``: a file we just created in a directory we just created (0700,
    no setgid yet), so it is ours and has no xattrs: skip what is already so.
    """
    if 'ownership' in preserve and not (new and meta.uid == _EUID and meta.gid == _EGID):
        os.fchown(fd, meta.uid, meta.gid)
    if 'xattrs' in preserve and meta.xattrs is not None and (meta.xattrs or not new):
        write_xattrs(fd, meta.xattrs)
    if 'mode' in preserve and not (born_mode == stat.S_IMODE(meta.mode) and not meta.xattrs):
        os.fchmod(fd, stat.S_IMODE(meta.mode))
    if 'timestamps' in preserve:
        os.utime(fd, ns=(meta.atime_ns, meta.mtime_ns))


def apply_meta_at(dfd, name, meta, preserve):
    """Same for entries we do not open: symlinks and special files."""
    is_link = stat.S_ISLNK(meta.mode)
    if 'ownership' in preserve:
        os.chown(name, meta.uid, meta.gid, dir_fd=dfd, follow_symlinks=False)
    if 'xattrs' in preserve and meta.xattrs is not None:
        write_xattrs(proc_path(dfd, name), meta.xattrs, follow=False)
    if 'mode' in preserve and not is_link:
        # Linux has no lchmod; the entry is ours and not a symlink.
        os.chmod(name, stat.S_IMODE(meta.mode), dir_fd=dfd)
    if 'timestamps' in preserve:
        os.utime(name, ns=(meta.atime_ns, meta.mtime_ns), dir_fd=dfd, follow_symlinks=False)


def meta_at(dfd, name, st, with_xattrs):
    """Meta of dfd/name for entries we do not open (dirs are read via fd)."""
    xattrs = read_xattrs(proc_path(dfd, name), follow=False) if with_xattrs else None
    return Meta(st, xattrs)


def temp_name(name):
    """A hidden name next to ``name`` for write-then-rename."""
    return b'.%s.fslinks-%d-%d.tmp' % (name[:200], os.getpid(), time.monotonic_ns() % 1000000007)


_TEMP_NAME = re.compile(br'\A\..*\.fslinks-([0-9]+)-[0-9]+\.tmp\Z', re.S)


def is_stale_temp(name):
    """True for a temp_name() of a process that is gone (a killed run's leftover)."""
    found = _TEMP_NAME.match(name)
    if found is None:
        return False
    pid = int(found.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def unlink_quietly(dfd, name):
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


def syncfs(fd):
    """Flush the destination filesystem (only it, unlike sync())."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


def reset_new_dir(fd):
    """The root of a fresh copy, just made by mkdir: drop what it inherited
    from its parent (a setgid bit and group, default ACLs), so that nothing
    built inside inherits them either: the copy gets src's attributes only,
    and files created in it are ours (see apply_meta_fd's ``new``)."""
    os.fchown(fd, _EUID, _EGID)
    os.fchmod(fd, 0o700)
    write_xattrs(fd, {})


# ---------------------------------------------------------------- excludes

def _glob_to_regex(glob):
    """rsync-style wildcards: * and ? stop at '/', ** crosses it, [...] sets."""
    out, i, n = [], 0, len(glob)
    while i < n:
        c = glob[i:i + 1]
        if c == b'*':
            if glob[i:i + 2] == b'**':
                out.append(b'.*')
                i += 2
                continue
            out.append(b'[^/]*')
        elif c == b'?':
            out.append(b'[^/]')
        elif c == b'[':
            j = glob.find(b']', i + 2 if glob[i + 1:i + 2] in (b'!', b'^') else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = glob[i + 1:j].replace(b'\\', b'\\\\')
                if body[:1] in (b'!', b'^'):
                    body = b'^' + body[1:]
                out.append(b'[' + body + b']')
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return b''.join(out)


class Excluder(object):
    """rsync-style exclude patterns, matched against paths relative to src.

    ``/foo`` is anchored at src, ``foo/`` matches directories only, a
    pattern with a ``/`` inside is matched against the whole relative path
    (at any directory boundary unless anchored), otherwise against the name.
    """

    def __init__(self, patterns):
        self.rules = []
        if patterns is not None and (isinstance(patterns, (str, bytes)) or not hasattr(patterns, '__iter__')):
            raise ValueError('exclude must be a list of patterns, got %r' % (patterns,))
        for pattern in patterns or ():
            if not isinstance(pattern, (str, bytes)) or '\0' in str(pattern):
                raise ValueError('exclude patterns must be strings without NUL bytes, got %r' % (pattern,))
            raw = os.fsencode(pattern)
            if not raw.strip(b'/'):
                raise ValueError('exclude pattern %r matches nothing' % (pattern,))
            dir_only = raw.endswith(b'/')
            raw = raw.rstrip(b'/')
            anchored = raw.startswith(b'/')
            raw = raw.lstrip(b'/')
            whole_path = anchored or b'/' in raw or b'**' in raw
            body = _glob_to_regex(raw)
            prefix = b'' if anchored or not whole_path else b'(?:.*/)?'
            try:
                regex = re.compile(b'\\A' + prefix + body + b'\\Z', re.S)
            except re.error as exc:
                raise ValueError('exclude pattern %r is not valid: %s' % (pattern, exc))
            self.rules.append((regex, whole_path, dir_only))

    def __bool__(self):
        return bool(self.rules)

    __nonzero__ = __bool__

    def excluded(self, rel, name, is_dir):
        for regex, whole_path, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if regex.match(rel if whole_path else name):
                return True
        return False


# ---------------------------------------------------------------- removal

def _make_removable(fd):
    """Snapshots keep src's modes, read-only directories included; a user
    without CAP_DAC_OVERRIDE must first give them back u+wx to empty them."""
    st = os.fstat(fd)
    if st.st_uid == _EUID and st.st_mode & 0o300 != 0o300:
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
        except OSError:
            pass


def remove_tree_at(dfd, name, on_subvolume=None):
    """Delete dfd/name and everything below it without following symlinks.

    ``on_subvolume(parent_fd, name)`` is called for directories that are
    btrfs subvolume roots (other than the top) when given; they cannot be
    removed with rmdir.
    """
    st = lstat_at(dfd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return
    stack = [(dfd, name, None, None)]
    while stack:
        parent, entry, fd, _st = stack[-1]
        if fd is None:
            fd = open_dir_at(parent, entry)
            stack[-1] = (parent, entry, fd, None)
            _make_removable(fd)
            pushed = False
            for child in os.scandir(fd):
                if child.is_dir(follow_symlinks=False):
                    stack.append((fd, os.fsencode(child.name), None, None))
                    pushed = True
                else:
                    try:
                        os.unlink(child.name, dir_fd=fd)
                    except FileNotFoundError:
                        pass
            if pushed:
                continue
        os.close(fd)
        stack.pop()
        try:
            os.rmdir(entry, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.EPERM and on_subvolume is not None:
                on_subvolume(parent, entry)
            elif exc.errno != errno.ENOENT:
                raise
