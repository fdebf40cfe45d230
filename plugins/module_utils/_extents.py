# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Do two files share their data?  Answered from extent maps (FIEMAP),
without reading the data, as util-linux hardlink and duperemove do."""

import errno
import os

from . import _ioctl
from ._errors import LinkError

_INLINE_MAX = 64 * 1024


def same_filesystem(fd_a, fd_b):
    """Physical addresses compare only within one filesystem: same st_dev,
    or btrfs subvolumes (each has its own st_dev) of the same btrfs."""
    if os.fstat(fd_a).st_dev == os.fstat(fd_b).st_dev:
        return True
    fsid = _ioctl.btrfs_fsid(fd_a)
    return fsid is not None and fsid == _ioctl.btrfs_fsid(fd_b)


def data_extents(fd, where='file'):
    """Comparable data extents (logical, physical, length), merged where
    contiguous, or None if some extent has no stable address (inline,
    delayed, unknown)."""
    out = []
    for ext in _ioctl.fiemap(fd, where):
        if not ext.comparable:
            return None
        if out and out[-1][0] + out[-1][2] == ext.logical and out[-1][1] + out[-1][2] == ext.physical:
            last = out[-1]
            out[-1] = (last[0], last[1], last[2] + ext.length)
        else:
            out.append((ext.logical, ext.physical, ext.length))
    return out


def extents_equal(fd_a, fd_b):
    """True if both files have the same size and their data lives at the
    same physical places (a reflink or the same inode).  Reads no data,
    except for tiny inline files whose bytes live in metadata anyway."""
    sa, sb = os.fstat(fd_a), os.fstat(fd_b)
    if sa.st_size != sb.st_size:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    if not same_filesystem(fd_a, fd_b):
        return False
    try:
        ea, eb = data_extents(fd_a), data_extents(fd_b)
    except LinkError:
        return False
    if ea is None or eb is None:
        return sa.st_size <= _INLINE_MAX and os.pread(fd_a, sa.st_size, 0) == os.pread(fd_b, sb.st_size, 0)
    if not ea and not eb:               # no data at all: empty, or all holes
        return _all_hole(fd_a) and _all_hole(fd_b)
    return ea == eb


def _all_hole(fd):
    try:
        os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as exc:
        return exc.errno == errno.ENXIO
    return False


def shared_bytes(fd_a, fd_b, names=('file', 'file')):
    """Bytes of a's data whose physical blocks are also b's data blocks
    (extents are clipped to the file sizes: FIEMAP rounds up to blocks).
    ``names``: the two files' paths, for an error message."""
    if not same_filesystem(fd_a, fd_b):
        return 0

    def ranges(fd, name):
        size = os.fstat(fd).st_size
        out = []
        for ext in _ioctl.fiemap(fd, name):
            length = min(ext.length, size - ext.logical)
            if ext.comparable and length > 0:
                out.append((ext.physical, ext.physical + length))
        return sorted(out)

    ra, rb = ranges(fd_a, names[0]), ranges(fd_b, names[1])
    total = i = j = 0
    while i < len(ra) and j < len(rb):
        lo, hi = max(ra[i][0], rb[j][0]), min(ra[i][1], rb[j][1])
        if lo < hi:
            total += hi - lo
        if ra[i][1] < rb[j][1]:
            i += 1
        else:
            j += 1
    return total
