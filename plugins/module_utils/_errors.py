# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Typed errors of the engine.

The kernel speaks in errno numbers; users need words.  Every OSError that
leaves the engine is turned into one of these classes, which carry the path
involved, the errno and a sentence that says what happened.
"""

import errno as _errno
import os
import traceback


class LinkError(Exception):
    """Base class: ``str(err)`` is a complete sentence naming the path."""

    def __init__(self, msg, path=None, errno=None):
        super(LinkError, self).__init__(msg)
        self.msg = msg
        self.path = path
        self.errno = errno


class BadInput(LinkError):
    """The request itself is wrong (missing src, dest inside src, ...)."""


class NotSupported(LinkError):
    """The filesystem cannot do this (no reflink, no subvolumes, ...)."""


class CrossDevice(LinkError):
    """src and dest are on different filesystems."""


class NoSpace(LinkError):
    """The destination filesystem is full (blocks or inodes or quota)."""


class PermissionDenied(LinkError):
    """The kernel refused access (EACCES/EPERM/EROFS)."""


class Busy(LinkError):
    """Something else holds the object (EBUSY/ETXTBSY, or our own lock)."""


class Changed(LinkError):
    """The source changed under us while we were reading it."""


NOT_SUPPORTED_ERRNOS = frozenset(
    e for e in (
        getattr(_errno, 'EOPNOTSUPP', None), getattr(_errno, 'ENOTSUP', None),
        _errno.EINVAL, _errno.ENOTTY, getattr(_errno, 'ENOSYS', None),
    ) if e is not None
)

_CLASS_BY_ERRNO = {
    _errno.EXDEV: CrossDevice,
    _errno.ENOSPC: NoSpace,
    _errno.EDQUOT: NoSpace,
    _errno.EACCES: PermissionDenied,
    _errno.EPERM: PermissionDenied,
    _errno.EROFS: PermissionDenied,
    _errno.EBUSY: Busy,
    _errno.ETXTBSY: Busy,
    _errno.EWOULDBLOCK: Busy,
}

_WORDS = {
    _errno.EXDEV: 'src and dest are on different filesystems',
    _errno.ENOSPC: 'no space left on the destination filesystem',
    _errno.EDQUOT: 'disk quota exceeded on the destination filesystem',
    _errno.EACCES: 'permission denied',
    _errno.EPERM: 'operation not permitted',
    _errno.EROFS: 'the filesystem is read-only',
    _errno.EBUSY: 'device or resource busy',
    _errno.ETXTBSY: 'file is busy (being executed)',
    _errno.ENOENT: 'no such file or directory',
    _errno.ENOTDIR: 'a component of the path is not a directory',
    _errno.ELOOP: 'is a symlink, and symlinks are never followed here',
    _errno.EISDIR: 'is a directory',
    _errno.EEXIST: 'already exists',
    _errno.EFBIG: 'file too large for the destination filesystem',
    _errno.ENAMETOOLONG: 'file name too long',
}


def describe(err):
    """Words for an errno, falling back to the C library's."""
    if err in NOT_SUPPORTED_ERRNOS:
        return 'filesystem does not support reflink'
    return _WORDS.get(err) or os.strerror(err)


def from_oserror(exc, path, action, not_supported_msg=None):
    """Turn ``exc`` (an OSError raised while doing ``action`` on ``path``)
    into the matching LinkError subclass with a readable message.

    ``not_supported_msg`` replaces the generic words for the errnos that mean
    "this filesystem cannot do it" (EOPNOTSUPP/EINVAL/ENOTTY), which are only
    meaningful for the feature ioctls (clone, dedupe, fiemap...).
    """
    if isinstance(exc, LinkError):
        return exc
    code = exc.errno
    where = action if path is None else '%s: %s' % (action, path)
    if not_supported_msg and code in NOT_SUPPORTED_ERRNOS:
        return NotSupported('%s: %s' % (where, not_supported_msg), path, code)
    cls = _CLASS_BY_ERRNO.get(code, LinkError)
    words = _WORDS.get(code) or exc.strerror or os.strerror(code or 0)
    return cls('%s: %s' % (where, words), path, code)


def at_door(exc, path, action):
    """The typed error of anything that reached a door (the CLI's main, a
    module's main), so that every failure is one sentence naming a path:
    a LinkError as it is; an OSError typed, naming its own file when it
    has an absolute one, else ``path``; anything else (a bug) named by its
    repr, which keeps it on one line."""
    if isinstance(exc, LinkError):
        return exc
    if isinstance(exc, OSError):
        named = exc.filename
        if isinstance(named, bytes):
            named = os.fsdecode(named)
        if not (isinstance(named, str) and os.path.isabs(named)):
            named = path
        return from_oserror(exc, named, action)
    where = action if path is None else '%s: %s' % (action, path)
    return LinkError('%s: unexpected error %r' % (where, exc), path)


def failure(exc, path, action):
    """fail_json's fields for ``exc`` at a module's door: msg, path and errno
    always; for a bug, also the traceback (shown with -vvv)."""
    err = at_door(exc, path, action)
    fields = {'msg': str(err), 'path': err.path, 'errno': err.errno}
    if not isinstance(exc, (LinkError, OSError)):
        fields['exception'] = traceback.format_exc()
    return fields
