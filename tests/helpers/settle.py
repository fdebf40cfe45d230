# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting for the kernel to finish freeing what was deleted, before measuring space."""

import os
import time

from ansible_collections.fslinks.snapshots.plugins.module_utils import _ioctl


def settle(*paths, timeout=20):
    """Wait until no extent of PATHS is flagged shared: XFS frees a deleted file's references
    in the background (deferred inode inactivation), so a reflinked copy of a file just deleted
    reads as shared for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        os.sync()
        os.statvfs(paths[0])
        flagged = []
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                flagged += [path for ext in _ioctl.fiemap(fd) if ext.shared]
            finally:
                os.close(fd)
        if not flagged:
            return
        assert time.monotonic() < deadline, 'still shared after %ds: %s' % (timeout, flagged)
        time.sleep(0.1)
