# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Processes a run starts beside itself: the parallel walk's workers and
rsync.  Each dies with the run (PR_SET_PDEATHSIG) and a forked one keeps
none of the run's fds it does not need, above all not the lock: a killed
run leaves nothing behind that writes into its tree or keeps the next run
from starting."""

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


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
