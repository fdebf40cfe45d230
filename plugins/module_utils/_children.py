# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Processes a run starts beside itself: the parallel walk's workers, rsync,
and the writeback helper here.  Each dies with the run (PR_SET_PDEATHSIG)
and a forked one keeps none of the run's fds it does not need, above all
not the lock: a killed run leaves nothing behind that writes into its tree
or keeps the next run from starting."""

import contextlib
import ctypes
import os
import signal
import time

_PR_SET_PDEATHSIG = 1
# The writeback helper syncs only while this much of the machine's page
# cache is dirty: a walk that copies data makes it grow by tens of MiB a
# tenth of a second; one that only links, clones or stats leaves it low, and
# a syncfs then would only force the journal out early, for nothing.
_DIRTY_MIN = 32 << 20
_WRITEBACK_PAUSE = 0.1


def die_with_parent(parent=None):
    """In a child: SIGKILL when the parent dies.  ``parent``: its pid, to
    leave at once if it died before the request took effect (in a fork;
    before an exec the caller has no race to close)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def close_all_but(keep):
    """Close every inherited fd but those in ``keep``."""
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:        # never an empty range: CPython turns closerange(n, n) into "all from n"
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def dirty_bytes():
    """The machine's dirty page cache (/proc/meminfo), or None."""
    try:
        with open('/proc/meminfo', 'rb') as f:
            for line in f:
                if line.startswith(b'Dirty:'):
                    return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return None


@contextlib.contextmanager
def writing_back(fd):
    """While the body runs, a child keeps the filesystem of ``fd`` writing
    back what the body has written (syncfs whenever much is dirty), so the
    disk works while the walk goes on instead of all at the end: the kernel
    starts on its own only past dirty_background_ratio, and a snapshot is
    synced before it is published.  On XFS that final syncfs was a third of
    a copy's time.  Only an aid: the caller's own syncfs after the body is
    what publishing relies on, so a helper that cannot start changes nothing."""
    parent = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        pid = os.fork()
    except OSError:
        pid = None
    if pid == 0:
        try:
            die_with_parent(parent)
            close_all_but([fd])
            while True:
                dirty = dirty_bytes()
                if dirty is None or dirty >= _DIRTY_MIN and libc.syncfs(fd) != 0:
                    break       # never os.sync() here, unlike _tree.syncfs: every filesystem, ten times a second
                time.sleep(_WRITEBACK_PAUSE)
        finally:
            os._exit(0)     # never run the parent's clean-up code in a fork
    try:
        yield
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
