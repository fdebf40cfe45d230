# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mounts from /proc/self/mountinfo, path -> mount, and what each can do."""

import errno
import os
import re
import stat

from . import _ioctl
from ._errors import LinkError

MOUNTINFO = '/proc/self/mountinfo'

# What we know without asking the filesystem.  Anything else is "unknown"
# (None) unless probed: ZFS clones only with block cloning enabled, NFS only
# when the server can, overlayfs only when its upper layer can.
REFLINK_BY_FSTYPE = {
    'btrfs': True, 'bcachefs': True,
    'ext2': False, 'ext3': False, 'ext4': False, 'tmpfs': False, 'ramfs': False,
    'vfat': False, 'msdos': False, 'exfat': False, 'ntfs': False, 'ntfs3': False,
    'f2fs': False, 'jfs': False, 'reiserfs': False, 'iso9660': False, 'squashfs': False,
    'proc': False, 'sysfs': False, 'devtmpfs': False, 'devpts': False, 'cgroup2': False,
}
NO_HARDLINKS = frozenset(('vfat', 'msdos', 'exfat', 'iso9660', 'proc', 'sysfs', 'cgroup2'))
HARDLINKS = frozenset(('ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'bcachefs', 'tmpfs', 'zfs',
                       'nfs', 'nfs4', 'ocfs2', 'f2fs', 'jfs', 'reiserfs', 'overlay', 'ntfs3'))

_OCTAL = re.compile(r'\\([0-7]{3})')


def unescape(field):
    r"""mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


class Mount(object):
    __slots__ = ('mount_id', 'parent_id', 'device', 'root', 'mountpoint', 'options',
                 'fstype', 'source', 'super_options')

    def __init__(self, **kw):
        for key in self.__slots__:
            setattr(self, key, kw.get(key))

    @property
    def btrfs_subvolume(self):
        """The subvolume path a btrfs mount shows (its root field), else None."""
        return self.root if self.fstype == 'btrfs' else None

    def as_dict(self, reflink):
        return {
            'mount': self.mountpoint, 'device': self.source, 'fstype': self.fstype,
            'options': self.options, 'reflink': reflink,
            'hardlink': hardlink_capable(self.fstype),
            'btrfs_subvolume': self.btrfs_subvolume,
        }


def parse_mountinfo(text):
    """Parse mountinfo text into Mounts, in file order (later mounts on top)."""
    mounts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        left, sep, right = line.partition(' - ')
        fields = left.split(' ')
        tail = right.split(' ')
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        mounts.append(Mount(
            mount_id=int(fields[0]), parent_id=int(fields[1]), device=fields[2],
            root=unescape(fields[3]), mountpoint=unescape(fields[4]), options=fields[5],
            fstype=tail[0], source=unescape(tail[1]),
            super_options=tail[2] if len(tail) > 2 else '',
        ))
    return mounts


def read_mounts(path=MOUNTINFO):
    with open(path, 'r', encoding='utf-8', errors='surrogateescape') as handle:
        return parse_mountinfo(handle.read())


def fstype_of_fd(fd):
    """The filesystem type of the mount an open fd is on, or None.  The mount
    id in /proc/self/fdinfo names it where st_dev cannot (each btrfs
    subvolume has a device number of its own)."""
    try:
        with open('/proc/self/fdinfo/%d' % fd, 'r') as handle:
            mount_id = next(int(line.split()[1]) for line in handle if line.startswith('mnt_id:'))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    for mount in read_mounts():
        if mount.mount_id == mount_id:
            return mount.fstype
    return None


def _is_under(path, mountpoint):
    return mountpoint == '/' or path == mountpoint or path.startswith(mountpoint + '/')


def mount_of(path, mounts=None):
    """The mount a path lives on: the longest matching mountpoint, and among
    equal ones the last mounted (it hides the others)."""
    if mounts is None:
        mounts = read_mounts()
    # Resolve the parent only: a symlink lives where its name is.
    path = os.path.abspath(os.fsdecode(path))
    real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    candidates = [m for m in mounts if _is_under(real, m.mountpoint)]
    if not candidates:
        return None
    longest = max(len(m.mountpoint) for m in candidates)
    stack = [m for m in candidates if len(m.mountpoint) == longest]
    # Several mounts on one mountpoint: the visible one is on top, i.e. no
    # other one of them is mounted on it.  File order is not enough: a mount
    # slid beneath (MOVE_MOUNT_BENEATH) is listed later but hidden.
    parents = set(m.parent_id for m in stack)
    top = [m for m in stack if m.mount_id not in parents]
    return (top or stack)[-1]


def hardlink_capable(fstype):
    if fstype in HARDLINKS:
        return True
    if fstype in NO_HARDLINKS:
        return False
    return None


def reflink_capable(mount, directory=None, probe=False):
    """True/False/None (unknown) for a mount.

    XFS answers from its geometry flags (asked through ``directory``, a
    directory on that mount, or the mountpoint); other known types from the
    table; unknown types only with ``probe``, which proves it by cloning a
    temporary file in ``directory``.
    """
    if mount is None:
        return None
    if mount.fstype == 'xfs':
        answer = _xfs_reflink(directory or mount.mountpoint)
        if answer is not None:
            return answer
    known = REFLINK_BY_FSTYPE.get(mount.fstype)
    if known is not None:
        return known
    if probe and directory is not None:
        return probe_reflink(directory)
    return None


def _xfs_reflink(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _ioctl.xfs_has_reflink(fd)
    except (OSError, LinkError):
        return None
    finally:
        os.close(fd)


def probe_reflink(directory):
    """Clone a one-block anonymous file (O_TMPFILE) inside ``directory``:
    True if the kernel accepts it, False if it says unsupported, None when
    the probe itself cannot run (read-only, no permission, no O_TMPFILE).
    Nothing is left behind: the files have no name."""
    flags = os.O_RDWR | os.O_CLOEXEC | getattr(os, 'O_TMPFILE', 0)
    if not getattr(os, 'O_TMPFILE', 0):
        return None
    src = dst = -1
    try:
        src = os.open(directory, flags, 0o600)
        dst = os.open(directory, flags, 0o600)
        os.write(src, b'\0' * 4096)
        _ioctl.clone_file(src, dst, directory)
        return True
    except LinkError as exc:
        return False if exc.errno in _NOT_SUPPORTED else None
    except OSError:
        return None
    finally:
        for fd in (src, dst):
            if fd >= 0:
                os.close(fd)


_NOT_SUPPORTED = frozenset((errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY))


def path_facts(path, mounts=None, probe=False):
    """Facts for one path (symlinks are described, not followed)."""
    if mounts is None:
        mounts = read_mounts()
    try:
        st = os.lstat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return {'exists': False}
        raise
    mount = mount_of(path, mounts)
    fstype = mount.fstype if mount else None
    directory = path if stat.S_ISDIR(st.st_mode) else os.path.dirname(os.path.abspath(path))
    return {
        'exists': True,
        'type': file_type(st.st_mode),
        'mount': mount.mountpoint if mount else None,
        'fstype': fstype,
        'device': mount.source if mount else None,
        'inode': st.st_ino,
        'nlink': st.st_nlink,
        'size': st.st_size,
        'reflink': reflink_capable(mount, directory, probe),
        'btrfs_subvolume': _ioctl.is_btrfs_subvolume_root(st, fstype) and stat.S_ISDIR(st.st_mode),
    }


def file_type(mode):
    for test, name in ((stat.S_ISREG, 'file'), (stat.S_ISDIR, 'directory'), (stat.S_ISLNK, 'link'),
                       (stat.S_ISFIFO, 'fifo'), (stat.S_ISCHR, 'char'), (stat.S_ISBLK, 'block'),
                       (stat.S_ISSOCK, 'socket')):
        if test(mode):
            return name
    return 'unknown'
