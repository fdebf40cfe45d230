# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots built by several worker processes (``workers``) against the same snapshots built by
one: same trees, same counts, hard links kept across workers, no worker left after a kill."""

from __future__ import annotations

import errno
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import COLLECTIONS
from helpers.oracles import assert_same_tree, link_groups
from helpers.processes import start_engine
from helpers.snapshots import latest, leftovers, snapshots
from helpers.trees import make_hostile_tree, make_many_files

from ansible_collections.fslinks.snapshots.plugins.module_utils import _parallel
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import BadInput
from ansible_collections.fslinks.snapshots.plugins.module_utils._parallel import FdsLost
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run


def spread_links(root, dirs=24, groups=40):
    """Names of one inode in three different directories, so that different workers meet them."""
    root = Path(root)
    for d in range(dirs):
        (root / ('spread%02d' % d) / 'sub').mkdir(parents=True)
    for g in range(groups):
        first = root / ('spread%02d' % (g % dirs)) / ('g%03d' % g)
        first.write_bytes(b'group %d\n' % g * (g + 1))
        os.link(first, root / ('spread%02d' % ((g + 7) % dirs)) / 'sub' / ('g%03d-b' % g))
        os.link(first, root / ('spread%02d' % ((g + 13) % dirs)) / ('g%03d-c' % g))


def counts(result):
    return dict((k, v) for k, v in result['stats'].items())


CASES = [('xfs', 'hardlink'), ('xfs', 'reflink'), ('xfs', 'copy'), ('ext4', 'hardlink'), ('btrfs', 'reflink')]


@pytest.mark.parametrize('fs,method', CASES, ids=['%s-%s' % c for c in CASES])
def test_workers_build_the_same_snapshot_as_one(request, workdir, fs, method):
    work = workdir(request.getfixturevalue(fs))
    src = work / 'src'
    src.mkdir()
    (src / 'hostile').mkdir()
    make_hostile_tree(src / 'hostile')
    make_many_files(src / 'many', 600, size=512, per_dir=25)
    spread_links(src)
    results = {}
    for workers in (1, 4):
        dest = work / ('snaps-%d' % workers)
        first = run(Request(str(src), str(dest), method=method, workers=workers))
        assert_same_tree(src, first['snapshot'])
        # Second run after edits: the hardlink method links from the first snapshot.
        (src / 'many' / 'd003' / 'f00075').write_bytes(b'changed %d\n' % workers)
        second = run(Request(str(src), str(dest), method=method, workers=workers))
        assert_same_tree(src, second['snapshot'])
        assert leftovers(dest) == [] and not any(n.endswith('.links') for n in os.listdir(dest))
        results[workers] = (counts(first), counts(second), link_groups(second['snapshot']))
        (src / 'many' / 'd003' / 'f00075').write_bytes(b'%08d' % 75 * 64)    # back as it was
        os.utime(src / 'many' / 'd003' / 'f00075', ns=(0, 10 ** 18))
    assert results[1][:2] == results[4][:2], 'workers=4 counted differently from workers=1'
    assert results[4][2] == results[1][2] == link_groups(src)
    if method == 'hardlink':
        assert results[4][1]['linked'] > 600


def worker_pids(pid):
    """The children of PID (its worker processes), from /proc."""
    pids = set()
    for task in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/children' % (pid, task), encoding='ascii') as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            pass
    return pids


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii', errors='replace') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_no_worker_outlives_a_killed_run(workdir, ext4):
    """SIGKILL the parent mid-run: its workers die with it (PR_SET_PDEATHSIG), so nothing writes
    into the tree the next run removes, and that run starts at once (workers hold no lock)."""
    work = workdir(ext4)
    src = work / 'src'
    make_many_files(src, 6000, size=4096, per_dir=50)
    dest = work / 'snaps'
    proc = start_engine(src, dest, method='copy', workers=3)
    try:
        deadline = time.monotonic() + 30
        workers = set()
        while len(workers) < 3 and time.monotonic() < deadline and proc.poll() is None:
            workers = worker_pids(proc.pid)
            time.sleep(0.005)
        assert len(workers) == 3, 'the run ended before its 3 workers were seen: %s' % workers
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(alive(p) for p in workers), 'workers outlived the killed run'
    assert snapshots(dest) == []
    result = run(Request(str(src), str(dest), method='copy', workers=3))     # lock_timeout=0
    assert any(p.endswith('.links') for p in result['leftovers_removed']) or \
        any(p.endswith('.partial') for p in result['leftovers_removed'])
    assert leftovers(dest) == [] and latest(dest) == os.path.basename(result['snapshot'])
    assert_same_tree(src, result['snapshot'])


@pytest.mark.parametrize('bad', [-1, 65, True, 1.5, '2'])
def test_workers_out_of_range(tmp_path, bad):
    (tmp_path / 'src').mkdir()
    with pytest.raises(BadInput, match='workers must be'):
        Request(str(tmp_path / 'src'), str(tmp_path / 'snaps'), workers=bad)


def test_default_workers_follow_cpus_and_filesystem():
    """One per CPU this process may use, at most 4, at most 2 on btrfs: pinned to one CPU, one."""
    cpus = len(os.sched_getaffinity(0))
    assert _parallel.default_workers('xfs') == min(4, cpus)
    assert _parallel.default_workers('btrfs') == min(2, cpus)
    code = 'import os, sys; sys.path.insert(0, sys.argv[1]); os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); ' \
        'from ansible_collections.fslinks.snapshots.plugins.module_utils import _parallel; ' \
        'print(_parallel.default_workers("xfs"))'
    out = subprocess.run([sys.executable, '-c', code, str(COLLECTIONS)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '1'


# --- fds over the socket (sendmsg/recvmsg with SCM_RIGHTS) ------------------------------------

def open_fds():
    return set(os.listdir('/proc/self/fd'))


def test_a_job_brings_its_fds_and_more_are_refused_not_leaked(tmp_path):
    """Three fds arrive as the same open files; a fourth does not fit (MSG_CTRUNC): FdsLost,
    and the three that did arrive are closed, not left open in the receiver."""
    files = [tmp_path / ('f%d' % i) for i in range(4)]
    for f in files:
        f.write_bytes(b'x')
    fds = [os.open(f, os.O_RDONLY) for f in files]
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        _parallel._send(mine, ('job', b'd/e'), fds[:3])
        msg, got = _parallel._recv(theirs)
        assert msg == ('job', b'd/e') and len(got) == 3
        assert [os.fstat(fd).st_ino for fd in got] == [f.stat().st_ino for f in files[:3]]
        assert not set(got) & set(fds)       # new fds in the receiver, not the same numbers
        for fd in got:
            os.close(fd)

        _parallel._send(mine, ('job', b'too/many'), fds)
        before = open_fds()
        with pytest.raises(FdsLost, match='lost its file descriptors'):
            _parallel._recv(theirs)
        assert open_fds() == before

        mine.close()        # end of file: no message, no fds
        assert _parallel._recv(theirs) == (None, [])
    finally:
        mine.close()
        theirs.close()
        for fd in fds:
            os.close(fd)


def test_fds_beyond_the_open_file_limit_are_closed_not_leaked():
    """The MSG_CTRUNC a busy caller meets: the receiver may open one more fd and a job brings
    three. The kernel installs one and drops two; FdsLost, and the one is closed again."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:        # the receiver, in a process of its own: it lowers its fd limit
        report = 'crashed'
        try:
            os.close(r)
            mine.close()
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(int(n) for n in open_fds()) + 8, hard))
            fillers = []
            try:
                while True:
                    fillers.append(os.open('/dev/null', os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
            free = fillers.pop()
            os.close(free)      # exactly one slot left: fd number `free`
            try:
                _parallel._recv(theirs)
                report = 'no error'
            except FdsLost:
                try:
                    probe = os.open('/dev/null', os.O_RDONLY)
                    report = 'FdsLost, slot free' if probe == free else 'FdsLost, got fd %d' % probe
                except OSError as exc:
                    report = 'FdsLost, but the fd that arrived leaked (%s)' % exc
        except BaseException as exc:    # pylint: disable=broad-except
            report = 'failed: %r' % exc
        finally:
            os.write(w, report.encode())
            os._exit(0)
    os.close(w)
    theirs.close()
    fds = [os.open('/dev/null', os.O_RDONLY) for _i in range(3)]
    try:
        _parallel._send(mine, ('job', b'deep'), fds)
        with os.fdopen(r, 'rb') as f:
            report = f.read().decode()
    finally:
        mine.close()        # first: should the send have failed, the receiver sees end of file
        os.waitpid(pid, 0)
        for fd in fds:
            os.close(fd)
    assert report == 'FdsLost, slot free'
