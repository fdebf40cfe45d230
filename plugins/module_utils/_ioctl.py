# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel interfaces we use, spoken directly with fcntl.ioctl.

FICLONE / FICLONERANGE / FIDEDUPERANGE (linux/fs.h), FS_IOC_FIEMAP
(linux/fiemap.h), XFS_IOC_FSGEOMETRY (xfs_fs.h) and the btrfs subvolume
ioctls (linux/btrfs.h).  Request numbers are computed from the _IOC layout
of x86, arm, ppc and s390 alike (dir:2 size:14 type:8 nr:8 on all but
ppc/mips/sparc/alpha, whose _IOC layout differs; see _IOC_* below).
"""

import errno
import fcntl
import os
import platform
import struct

from ._errors import NotSupported, from_oserror

# _IOC encoding.  Most architectures use 2 direction bits and 14 size bits;
# powerpc, mips, sparc and alpha use 3 direction bits, 13 size bits and other
# values for READ/WRITE.
if platform.machine().startswith(('ppc', 'powerpc', 'mips', 'sparc', 'alpha')):
    _IOC_SIZEBITS, _IOC_NONE, _IOC_WRITE, _IOC_READ = 13, 1, 4, 2
else:
    _IOC_SIZEBITS, _IOC_NONE, _IOC_WRITE, _IOC_READ = 14, 0, 1, 2
_IOC_DIRSHIFT = 16 + _IOC_SIZEBITS


def _ioc(direction, kind, nr, size):
    return (direction << _IOC_DIRSHIFT) | (size << 16) | (kind << 8) | nr


# linux/fs.h
FICLONE = _ioc(_IOC_WRITE, 0x94, 9, 4)
_CLONE_RANGE = struct.Struct('=qQQQ')       # src_fd, src_offset, src_length, dest_offset
FICLONERANGE = _ioc(_IOC_WRITE, 0x94, 13, _CLONE_RANGE.size)
_DEDUPE_HEAD = struct.Struct('=QQHHI')      # src_offset, src_length, dest_count, reserved1, reserved2
_DEDUPE_INFO = struct.Struct('=qQQiI')      # dest_fd, dest_offset, bytes_deduped, status, reserved
FIDEDUPERANGE = _ioc(_IOC_READ | _IOC_WRITE, 0x94, 54, _DEDUPE_HEAD.size)
FILE_DEDUPE_RANGE_DIFFERS = 1

# linux/fiemap.h
_FIEMAP_HEAD = struct.Struct('=QQIIII')     # start, length, flags, mapped, count, reserved
_FIEMAP_EXTENT = struct.Struct('=QQQQQIIII')  # logical, physical, length, 2x reserved, flags, 3x reserved
FS_IOC_FIEMAP = _ioc(_IOC_READ | _IOC_WRITE, ord('f'), 11, _FIEMAP_HEAD.size)
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_DELALLOC = 0x4
FIEMAP_EXTENT_ENCODED = 0x8
FIEMAP_EXTENT_DATA_INLINE = 0x200
FIEMAP_EXTENT_DATA_TAIL = 0x400
FIEMAP_EXTENT_UNWRITTEN = 0x800
FIEMAP_EXTENT_SHARED = 0x2000
# Extents whose physical address means nothing: they cannot be compared.
# (Encoded = compressed: its address is that of the compressed extent, which
# two reflinked files share, so it stays comparable.)
FIEMAP_NOT_COMPARABLE = (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
                         FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL)

# xfs_fs.h: struct xfs_fsop_geom (v5, 256 bytes; v4 is its first 112 bytes).
# The flags word sits at the same offset in both.
XFS_IOC_FSGEOMETRY = _ioc(_IOC_READ, ord('X'), 126, 256)
XFS_IOC_FSGEOMETRY_V4 = _ioc(_IOC_READ, ord('X'), 124, 112)
_XFS_GEOM_FLAGS_OFFSET = 92
XFS_FSOP_GEOM_FLAGS_REFLINK = 1 << 20

# linux/btrfs.h
BTRFS_VOL_NAME_MAX = 255
_BTRFS_VOL_ARGS = struct.Struct('=q4088s')               # fd, name
_BTRFS_VOL_ARGS_V2 = struct.Struct('=qQQ32s4040s')       # fd, transid, flags, unused, name
BTRFS_IOC_SNAP_DESTROY = _ioc(_IOC_WRITE, 0x94, 15, _BTRFS_VOL_ARGS.size)
BTRFS_IOC_SUBVOL_CREATE = _ioc(_IOC_WRITE, 0x94, 14, _BTRFS_VOL_ARGS.size)
BTRFS_IOC_SNAP_CREATE_V2 = _ioc(_IOC_WRITE, 0x94, 23, _BTRFS_VOL_ARGS_V2.size)
BTRFS_IOC_SUBVOL_GETFLAGS = _ioc(_IOC_READ, 0x94, 25, 8)
BTRFS_IOC_SUBVOL_SETFLAGS = _ioc(_IOC_WRITE, 0x94, 26, 8)
BTRFS_IOC_FS_INFO = _ioc(_IOC_READ, 0x94, 31, 1024)
_BTRFS_FSID_OFFSET = 16                                  # after max_id, num_devices
BTRFS_SUBVOL_RDONLY = 1 << 1
BTRFS_FIRST_FREE_OBJECTID = 256      # inode number of every subvolume root

REFLINK_UNSUPPORTED = 'filesystem does not support reflink'


def clone_file(src_fd, dst_fd, path='dest'):
    """Make dst share all of src's data (FICLONE).  dst gets src's size."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        raise from_oserror(exc, path, 'reflink', REFLINK_UNSUPPORTED)


def clone_range(src_fd, dst_fd, src_offset, length, dst_offset, path='dest'):
    """FICLONERANGE: offsets and length must be block aligned (length 0 = to EOF)."""
    arg = _CLONE_RANGE.pack(src_fd, src_offset, length, dst_offset)
    try:
        fcntl.ioctl(dst_fd, FICLONERANGE, arg)
    except OSError as exc:
        raise from_oserror(exc, path, 'reflink', REFLINK_UNSUPPORTED)


def dedupe_range(src_fd, src_offset, length, dst_fd, dst_offset, path='dest'):
    """FIDEDUPERANGE for one destination.  The kernel compares the bytes and
    shares them only if equal; returns the number of bytes deduplicated
    (0 when the contents differ)."""
    buf = bytearray(_DEDUPE_HEAD.pack(src_offset, length, 1, 0, 0) +
                    _DEDUPE_INFO.pack(dst_fd, dst_offset, 0, 0, 0))
    try:
        fcntl.ioctl(src_fd, FIDEDUPERANGE, buf, True)
    except OSError as exc:
        raise from_oserror(exc, path, 'dedupe', 'filesystem does not support deduplication')
    _fd, _off, done, status, _r = _DEDUPE_INFO.unpack_from(buf, _DEDUPE_HEAD.size)
    if status == FILE_DEDUPE_RANGE_DIFFERS:
        return 0
    if status < 0:
        raise from_oserror(OSError(-status, os.strerror(-status)), path, 'dedupe',
                           'filesystem does not support deduplication')
    return done


class Extent(tuple):
    """(logical, physical, length, flags) of one FIEMAP extent."""
    __slots__ = ()

    def __new__(cls, logical, physical, length, flags):
        return tuple.__new__(cls, (logical, physical, length, flags))

    logical = property(lambda self: self[0])
    physical = property(lambda self: self[1])
    length = property(lambda self: self[2])
    flags = property(lambda self: self[3])

    @property
    def shared(self):
        return bool(self[3] & FIEMAP_EXTENT_SHARED)

    @property
    def comparable(self):
        return not self[3] & FIEMAP_NOT_COMPARABLE


def fiemap(fd, path='file', sync=True, batch=256):
    """Yield the Extents of an open file, in logical order.

    ``sync`` flushes delayed allocations first, so that freshly written data
    has real physical addresses to compare.
    """
    start = 0
    flags = FIEMAP_FLAG_SYNC if sync else 0
    size = _FIEMAP_HEAD.size + batch * _FIEMAP_EXTENT.size
    while True:
        buf = bytearray(size)
        _FIEMAP_HEAD.pack_into(buf, 0, start, 0xFFFFFFFFFFFFFFFF - start, flags, 0, batch, 0)
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        except OSError as exc:
            raise from_oserror(exc, path, 'fiemap', 'filesystem does not support FIEMAP')
        mapped = _FIEMAP_HEAD.unpack_from(buf, 0)[3]
        if not mapped:
            return
        last = None
        for i in range(mapped):
            logical, physical, length, _r1, _r2, eflags, _a, _b, _c = _FIEMAP_EXTENT.unpack_from(
                buf, _FIEMAP_HEAD.size + i * _FIEMAP_EXTENT.size)
            last = Extent(logical, physical, length, eflags)
            yield last
        if last.flags & FIEMAP_EXTENT_LAST:
            return
        start = last.logical + last.length


def xfs_has_reflink(fd):
    """True/False from the XFS geometry flags of the filesystem holding fd."""
    for request, size in ((XFS_IOC_FSGEOMETRY, 256), (XFS_IOC_FSGEOMETRY_V4, 112)):
        buf = bytearray(size)
        try:
            fcntl.ioctl(fd, request, buf, True)
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                continue
            raise
        flags = struct.unpack_from('=I', buf, _XFS_GEOM_FLAGS_OFFSET)[0]
        return bool(flags & XFS_FSOP_GEOM_FLAGS_REFLINK)
    raise NotSupported('not an XFS filesystem (no geometry ioctl)')


def _vol_name(name):
    raw = os.fsencode(name)
    if not raw or b'/' in raw or len(raw) > BTRFS_VOL_NAME_MAX:
        raise ValueError('invalid subvolume name %r' % (name,))
    return raw


def btrfs_snapshot(src_fd, dest_dir_fd, name, readonly=True, path='dest'):
    """Snapshot the subvolume open at src_fd as dest_dir_fd/name (O(1))."""
    # bytearray: fcntl copies immutable arguments only up to 1024 bytes.
    args = bytearray(_BTRFS_VOL_ARGS_V2.pack(src_fd, 0, BTRFS_SUBVOL_RDONLY if readonly else 0,
                                             b'', _vol_name(name)))
    try:
        fcntl.ioctl(dest_dir_fd, BTRFS_IOC_SNAP_CREATE_V2, args, True)
    except OSError as exc:
        raise from_oserror(exc, path, 'btrfs snapshot', 'not a btrfs subvolume')


def btrfs_create_subvolume(parent_fd, name, path='subvolume'):
    """Create the empty subvolume parent_fd/name."""
    args = bytearray(_BTRFS_VOL_ARGS.pack(0, _vol_name(name)))
    try:
        fcntl.ioctl(parent_fd, BTRFS_IOC_SUBVOL_CREATE, args, True)
    except OSError as exc:
        raise from_oserror(exc, path, 'btrfs subvolume create', 'not a btrfs filesystem')


def btrfs_set_readonly(fd, readonly, path='subvolume'):
    """Set or clear the read-only flag of the subvolume open at fd."""
    buf = bytearray(8)
    try:
        fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, buf, True)
        flags = struct.unpack('=Q', buf)[0]
        flags = (flags | BTRFS_SUBVOL_RDONLY) if readonly else (flags & ~BTRFS_SUBVOL_RDONLY)
        fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, struct.pack('=Q', flags))
    except OSError as exc:
        raise from_oserror(exc, path, 'btrfs set read-only', 'not a btrfs subvolume')


def btrfs_delete_subvolume(parent_fd, name, path='subvolume'):
    """Delete the subvolume parent_fd/name (it must be writable: clear the
    read-only flag first)."""
    args = bytearray(_BTRFS_VOL_ARGS.pack(-1, _vol_name(name)))
    try:
        fcntl.ioctl(parent_fd, BTRFS_IOC_SNAP_DESTROY, args, True)
    except OSError as exc:
        raise from_oserror(exc, path, 'btrfs subvolume delete', 'not a btrfs subvolume')


def btrfs_fsid(fd):
    """The UUID of the btrfs filesystem holding fd (the same for all its
    subvolumes, which each have their own st_dev), or None if not btrfs."""
    buf = bytearray(1024)
    try:
        fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buf, True)
    except OSError:
        return None
    return bytes(buf[_BTRFS_FSID_OFFSET:_BTRFS_FSID_OFFSET + 16])


def is_btrfs_subvolume_root(st, fstype):
    """btrfs gives every subvolume root inode 256 (what btrfs-progs checks)."""
    return fstype == 'btrfs' and st.st_ino == BTRFS_FIRST_FREE_OBJECTID
