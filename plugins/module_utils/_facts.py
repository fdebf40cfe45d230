# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a host's filesystems can do: the link_facts answer."""

import os
import stat

from ._extents import extents_equal, shared_bytes
from ._errors import BadInput, from_oserror
from ._mounts import REFLINK_BY_FSTYPE, path_facts, read_mounts, reflink_capable


def link_facts(paths=(), compare=(), probe=False):
    for path in list(paths) + [p for pair in compare for p in pair]:
        if '\0' in path:
            raise BadInput('path %r contains a NUL byte, which no file name can' % (path,), path)
    mounts = read_mounts()
    mount_list = []
    for mount in mounts:
        may_probe = probe and mount.fstype not in REFLINK_BY_FSTYPE and os.access(mount.mountpoint, os.W_OK)
        mount_list.append(mount.as_dict(reflink_capable(mount, mount.mountpoint, may_probe)))
    return {
        'mounts': mount_list,
        'paths': dict((path, _path_facts(path, mounts, probe)) for path in paths),
        'compare': [compare_files(a, b) for a, b in compare],
    }


def _path_facts(path, mounts, probe):
    try:
        return path_facts(path, mounts, probe and _writable_dir(path))
    except OSError as exc:
        raise from_oserror(exc, path, 'stat')


def _writable_dir(path):
    directory = path if os.path.isdir(path) and not os.path.islink(path) else os.path.dirname(path)
    return os.access(directory, os.W_OK)


def compare_files(a, b):
    """same_inode, shared_bytes, fully_shared of two regular files."""
    fds = []
    try:
        for path in (a, b):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError as exc:
                raise from_oserror(exc, path, 'compare')
            fds.append(fd)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BadInput('compare: %s: not a regular file' % path, path)
        sa, sb = os.fstat(fds[0]), os.fstat(fds[1])
        same = (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
        return {
            'a': a, 'b': b, 'same_inode': same,
            'shared_bytes': sa.st_size if same else _shared(fds, (a, b)),
            'fully_shared': same or extents_equal(fds[0], fds[1]),
        }
    finally:
        for fd in fds:
            os.close(fd)


def _shared(fds, names):
    try:
        return shared_bytes(fds[0], fds[1], names)
    except OSError as exc:
        raise from_oserror(exc, names[0], 'fiemap', 'filesystem does not support FIEMAP')
