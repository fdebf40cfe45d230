# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Walk one tree with several processes.

Most of a snapshot's time is spent in the kernel (link, stat, clone), and
the kernel runs calls on different directories in parallel.  Python threads
share one interpreter lock and make it slower; processes do not.

The parent only dispatches.  Each worker walks the directory it is given
depth-first, as the serial walker does, and hands a subdirectory back to the
parent (its three open fds travel over a unix socket) only while another
worker is idle: the work spreads over every worker without a fixed split,
and no job crosses a socket when nobody is waiting for it.

A worker dies with its parent (PR_SET_PDEATHSIG), so a killed run never
leaves a process writing into a tree that the next run removes.
"""

import array
import mmap
import os
import pickle
import select
import signal
import socket

from ._children import close_all_but, die_with_parent
from ._errors import LinkError

_MSG_MAX = 65536        # a job is a relative path; deeper ones are walked locally
_JOB_FDS = 3            # the most fds one message carries (a job's three)
# Room for exactly _JOB_FDS: one more sets MSG_CTRUNC instead of arriving unnoticed.
_ANC_SIZE = socket.CMSG_LEN(_JOB_FDS * array.array('i').itemsize)


def default_workers(fstype=None):
    """One worker per CPU this process may use, at most 4: beyond that the
    filesystem's own locks, not the CPUs, set the pace. At most 2 on btrfs,
    which serializes metadata updates within a subvolume (measured with
    30,000 files: 2 workers 1.1-1.15x faster than 1, 4 workers slower than 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(2 if fstype == 'btrfs' else 4, cpus))


class WorkerDied(LinkError):
    """A worker process ended without saying why (killed, out of memory)."""


class FdsLost(LinkError):
    """A message's fds did not all arrive (MSG_CTRUNC): the receiver ran out
    of fds (RLIMIT_NOFILE) or was sent more than a job carries."""


def _close(fds):
    for fd in fds:
        os.close(fd)


# sendmsg/recvmsg with SCM_RIGHTS, not socket.send_fds/recv_fds: those are Python 3.9+, and
# the engine runs on hosts with Python 3.8.
def _send(sock, msg, fds=()):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))] if fds else []
    sock.sendmsg([pickle.dumps(msg, protocol=2)], anc)


def _recv(sock):
    """(message, fds), or (None, []) at end of file. The fds are the
    caller's to close; on any error they are closed here."""
    data, anc, flags, _addr = sock.recvmsg(_MSG_MAX + 1024, _ANC_SIZE)
    fds = array.array('i')
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            # Whole ints only: a truncated control message may end mid-int.
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    fds = list(fds)
    try:
        if flags & socket.MSG_CTRUNC:
            raise FdsLost('a snapshot worker message lost its file descriptors on the way '
                          '(out of file descriptors? see ulimit -n)', None, None)
        msg = pickle.loads(data) if data else None
    except BaseException:
        _close(fds)
        raise
    if msg is None:
        _close(fds)
        return None, []
    return msg, fds


def _pack_error(exc):
    if isinstance(exc, LinkError):
        return (type(exc).__name__, exc.msg, exc.path, exc.errno)
    return ('LinkError', '%s: %s' % (type(exc).__name__, exc), None, getattr(exc, 'errno', None))


def _unpack_error(packed):
    from . import _errors     # pylint: disable=import-outside-toplevel
    name, msg, path, err = packed
    cls = getattr(_errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, LinkError)):
        cls = LinkError
    return cls(msg, path, err)


class Pool(object):
    """Run ``work.run_job(rel, fds)`` for the root job and every job workers
    hand back; ``work.result()`` is each worker's contribution at the end."""

    def __init__(self, workers):
        self.workers = workers
        # Shared with the workers: how many more jobs the parent could hand
        # out right now. A hint, read without locks; the parent rewrites it.
        self._hungry = mmap.mmap(-1, 1)
        self._sock = None           # a worker's end of its socket
        self._socks = []            # the parent's ends
        self._pids = []

    # ------------------------------------------------------------ worker side

    def offload(self, rel, fds):
        """In a worker: hand a directory to the parent if a worker is idle."""
        hungry = self._hungry[0]
        if self._sock is None or hungry == 0 or len(rel) > _MSG_MAX:
            return False
        # Racy (two workers may both take the last slot): an extra job in the queue, no harm.
        self._hungry[0] = hungry - 1
        _send(self._sock, ('job', rel), fds)
        return True

    def _worker(self, work, parent, keep):
        code = 1
        try:
            die_with_parent(parent)
            close_all_but([0, 1, 2, self._sock.fileno()] + list(keep))
            while True:
                msg, fds = _recv(self._sock)
                if msg is None:
                    break
                if msg[0] == 'exit':
                    _send(self._sock, ('result', work.result()))
                    code = 0
                    break
                try:
                    work.run_job(msg[1], fds)
                except BaseException as exc:    # pylint: disable=broad-except
                    _send(self._sock, ('error', _pack_error(exc)))
                    break
                finally:
                    for fd in fds:
                        os.close(fd)
                _send(self._sock, ('done',))
        finally:
            os._exit(code)      # never run the parent's clean-up code in a fork

    # ------------------------------------------------------------ parent side

    def run(self, work, root_fds, keep=()):
        """Walk from the root job; returns the workers' results, or raises
        the first error a worker met (after every worker has been stopped).
        Workers keep only the fds in ``keep`` and the jobs they are sent."""
        parent = os.getpid()
        try:
            for _i in range(self.workers):
                mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                pid = os.fork()
                if pid == 0:
                    mine.close()
                    for sock in self._socks:
                        sock.close()
                    self._socks = []
                    self._sock = theirs
                    self._worker(work, parent, keep)
                theirs.close()
                self._socks.append(mine)
                self._pids.append(pid)
            self._dispatch(b'', root_fds)
            return self._collect()
        finally:
            self._stop()

    def _dispatch(self, root_rel, root_fds):
        queue = [(root_rel, list(root_fds), False)]    # the root's fds stay the caller's
        idle = list(range(self.workers))
        busy = set()
        by_fd = dict((sock.fileno(), i) for i, sock in enumerate(self._socks))
        poller = select.poll()      # not select(): fds above 1023 are possible in a busy caller
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        try:
            while True:
                while queue and idle:
                    i = idle.pop()
                    rel, fds, owned = queue.pop()
                    try:
                        _send(self._socks[i], ('job', rel), fds)
                    finally:        # sent or not (a dead worker), this job's fds are done with
                        if owned:
                            _close(fds)
                    busy.add(i)
                self._hungry[0] = max(0, min(255, len(idle) - len(queue)))
                if not busy:
                    return
                for fd, _event in poller.poll():
                    i = by_fd[fd]
                    msg, fds = _recv(self._socks[i])
                    if msg is None:
                        raise WorkerDied('a snapshot worker process died unexpectedly', None, None)
                    if msg[0] == 'job':
                        queue.append((msg[1], fds, True))
                        continue
                    _close(fds)     # only a job carries fds
                    if msg[0] == 'done':
                        busy.discard(i)
                        idle.append(i)
                    elif msg[0] == 'error':
                        raise _unpack_error(msg[1])
        finally:
            for _rel, fds, owned in queue:
                if owned:
                    for fd in fds:
                        os.close(fd)

    def _collect(self):
        results = []
        for sock in self._socks:
            _send(sock, ('exit',))
        for sock in self._socks:
            msg, _fds = _recv(sock)
            if msg is None or msg[0] != 'result':
                raise WorkerDied('a snapshot worker process died before reporting', None, None)
            results.append(msg[1])
        return results

    def _stop(self):
        """Every worker gone before the caller goes on (it may delete the tree)."""
        for sock in self._socks:
            sock.close()
        self._socks = []
        for pid in self._pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self._pids:
            while True:
                try:
                    os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
                except ChildProcessError:
                    break
        self._pids = []
