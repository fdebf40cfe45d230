# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""hardlink_snapshot when things go wrong: SIGKILL at random moments, a full disk, a read-only
destination, a second run while one holds the lock."""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from helpers import COLLECTIONS, ansible_run
from helpers.oracles import assert_same_tree, tree_state
from helpers.processes import start_engine
from helpers.snapshots import LOCK_NAME, Clock, latest, leftovers, records, snapshots
from helpers.trees import copy_reference, create_subvolume, make_many_files, remove_tree

from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import (
    Busy, LinkError, NoSpace, PermissionDenied)
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run


def check_root(dest, src, reference=None, allow_leftovers=True):
    """Every published snapshot is a complete copy of the src (reference) and latest, if any,
    points at a published snapshot."""
    names = snapshots(dest)
    for name in names:
        assert_same_tree(reference or src, Path(dest) / name)
    target = latest(dest)
    if names:
        assert target in names, (target, names)
    if not allow_leftovers:
        assert leftovers(dest) == []
    return names


# ---------------------------------------------------------------- SIGKILL at random moments

KILL_CASES = [('ext4', 'hardlink', ()), ('xfs', 'reflink', ()), ('btrfs', 'btrfs', ('/d00[0-4]/',))]


@pytest.mark.parametrize('kind,method,exclude', KILL_CASES, ids=[c[0] + '-' + c[1] for c in KILL_CASES])
def test_sigkill_at_random_moments(kind, method, exclude, request, workdir):
    """Kill runs at random moments: the published snapshots are always complete, latest always
    names one of them, and the next normal run removes what the killed ones left."""
    mnt = request.getfixturevalue(kind)
    work = workdir(mnt)
    src = work / 'src'
    if kind == 'btrfs':
        create_subvolume(src)
    else:
        src.mkdir()
    make_many_files(src, 2000, size=2048)
    reference = work / 'reference'
    copy_reference(src, reference)
    if exclude:
        # The oracle for an excluding btrfs run: the reference without the excluded dirs.
        st = os.stat(reference)
        for i in range(5):
            remove_tree(reference / ('d%03d' % i))
        os.utime(reference, ns=(st.st_atime_ns, st.st_mtime_ns))
    dest = work / 'snaps'
    kw = dict(method=method, keep={'last': 3}, exclude=list(exclude))

    # A first snapshot (for hardlink to link against), then how long a usual run takes here.
    for _round in range(2):
        proc = start_engine(src, dest, **kw)
        t_go = time.monotonic()
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        duration = time.monotonic() - t_go
    seed = int(os.environ.get('FSLINKS_KILL_SEED', time.time_ns() % 1000003))
    rng = random.Random(seed)
    where = 'seed=%d (set FSLINKS_KILL_SEED to replay), run takes %.3fs' % (seed, duration)
    print(where)                       # shown with a failure: replay with the same seed
    state = tree_state(src)

    for _attempt in range(6):
        delay = rng.uniform(0, duration)
        proc = start_engine(src, dest, **kw)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        # Right after the kill: whatever is published is complete; latest names one of them.
        check_root(dest, src, reference)
        print('kill after %.3fs: snapshots %s, leftovers %s' % (delay, snapshots(dest), leftovers(dest)))
    assert tree_state(src) == state, 'src must stay constant during the kill loop'

    before = set(leftovers(dest))
    result = run(Request(str(src), str(dest), **kw))
    names = check_root(dest, src, reference, allow_leftovers=False)
    assert latest(dest) == os.path.basename(result['snapshot'])
    assert len(names) <= 3 and names[-1] == latest(dest)
    removed = {os.path.basename(p) for p in result['leftovers_removed']}
    assert removed == before, where
    assert leftovers(dest) == [], where
    # Every snapshot has its record, and no record outlives its snapshot.
    assert records(dest) == sorted(n + '.json' for n in names), where


# ---------------------------------------------------------------- ENOSPC

@pytest.mark.parametrize('method', ['copy', 'hardlink'])
def test_enospc_mid_run(method, ext4, small_ext4, workdir):
    """The destination fills up in the middle: the run fails saying so, the partial snapshot
    is removed, and the earlier snapshot is intact and still latest."""
    clock = Clock()
    src = workdir(ext4) / 'src'
    src.mkdir()
    make_many_files(src, 50, size=4096)
    dest = small_ext4 / 'snaps'
    first = run(Request(str(src), str(dest), method=method), now=clock())
    s1 = Path(first['snapshot'])
    reference = workdir(ext4) / 'reference'
    copy_reference(src, reference)
    before = tree_state(s1)

    # More data than fits (16M filesystem), after some files that do fit.
    (src / 'zz-big').mkdir()
    for i in range(6):
        (src / 'zz-big' / ('blob%d' % i)).write_bytes(os.urandom(4 << 20))
    with pytest.raises(LinkError) as exc:
        run(Request(str(src), str(dest), method=method), now=clock())
    assert isinstance(exc.value, NoSpace), repr(exc.value)
    assert 'no space left' in str(exc.value).lower()
    assert snapshots(dest) == [s1.name]
    assert leftovers(dest) == [], 'the partial snapshot must be removed'
    assert latest(dest) == s1.name
    assert tree_state(s1) == before
    assert_same_tree(reference, s1)
    # Space again: the next run works.
    remove_tree(src / 'zz-big')
    second = run(Request(str(src), str(dest), method=method), now=clock())
    assert latest(dest) == os.path.basename(second['snapshot'])
    assert_same_tree(src, second['snapshot'])


def test_enospc_through_module(ext4, small_ext4, workdir):
    src = workdir(ext4) / 'src'
    src.mkdir()
    (src / 'small').write_bytes(b'small')
    dest = small_ext4 / 'snaps'
    first = run(Request(str(src), str(dest), method='copy'), now=Clock()())
    for i in range(5):
        (src / ('blob%d' % i)).write_bytes(os.urandom(4 << 20))
    res = ansible_run.run_adhoc('hardlink_snapshot', {'src': str(src), 'dest': str(dest), 'method': 'copy'})
    assert res['failed'] is True
    assert 'no space left' in res['msg'].lower(), res['msg']
    assert snapshots(dest) == [os.path.basename(first['snapshot'])]
    assert leftovers(dest) == [] and latest(dest) == os.path.basename(first['snapshot'])


# ---------------------------------------------------------------- read-only destination

def _remount(mnt, opt):
    subprocess.run(['mount', '-o', 'remount,' + opt, str(mnt)], check=True, capture_output=True)


def test_readonly_dest(ext4, loop_fs, workdir):
    ro = loop_fs('ext4', '16M')
    src = workdir(ext4) / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'data')
    dest = ro / 'snaps'
    first = run(Request(str(src), str(dest)), now=Clock()())
    before = sorted(os.listdir(dest))
    _remount(ro, 'ro')
    try:
        with pytest.raises(PermissionDenied, match='read-only'):
            run(Request(str(src), str(dest)))
        with pytest.raises(PermissionDenied, match='read-only'):
            run(Request(str(src), str(ro / 'new-root')))
        assert sorted(os.listdir(dest)) == before
        res = ansible_run.run_adhoc('hardlink_snapshot', {'src': str(src), 'dest': str(dest)})
        assert res['failed'] is True and 'read-only' in res['msg'], res
    finally:
        _remount(ro, 'rw')
    assert sorted(os.listdir(dest)) == before
    assert latest(dest) == os.path.basename(first['snapshot'])


def test_check_mode_on_readonly_dest(ext4, loop_fs, workdir):
    """Check mode plans on a read-only root, and says what a writable one would get: ext4
    cannot reflink, so hardlink."""
    ro = loop_fs('ext4', '16M')
    src = workdir(ext4) / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'data')
    dest = ro / 'snaps'
    first = run(Request(str(src), str(dest)), now=Clock()())
    assert first['method'] == 'hardlink'
    _remount(ro, 'ro')
    try:
        plan = run(Request(str(src), str(dest)), dry_run=True)
    finally:
        _remount(ro, 'rw')
    assert plan['changed'] and plan['snapshot'] != first['snapshot']
    assert plan['method'] == 'hardlink', 'ext4 cannot reflink, read-only or not: %s' % plan['method']


# ---------------------------------------------------------------- the lock

class HeldLock:
    """The snapshot root's lock, taken by this test process."""

    def __init__(self, dest):
        Path(dest).mkdir(mode=0o700, exist_ok=True)
        self.fd = os.open(os.path.join(dest, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _pids_with_open(path):
    """Pids (other than ours) that have PATH open."""
    target = os.path.realpath(path)
    pids = set()
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            for fd in os.listdir('/proc/%s/fd' % pid):
                if os.readlink('/proc/%s/fd/%s' % (pid, fd)) == target:
                    pids.add(int(pid))
        except OSError:
            continue
    return pids


def _wait_for(cond, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def test_lock_held_fails_at_once_or_waits(ext4, workdir):
    work = workdir(ext4)
    src = work / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'x')
    dest = work / 'snaps'
    lock = HeldLock(dest)
    try:
        t = time.monotonic()
        with pytest.raises(Busy, match='another snapshot of %s is running' % dest):
            run(Request(str(src), str(dest)))
        assert time.monotonic() - t < 1.0, 'lock_timeout 0 must fail at once'
        t = time.monotonic()
        with pytest.raises(Busy, match='another snapshot'):
            run(Request(str(src), str(dest), lock_timeout=1))
        assert 0.9 <= time.monotonic() - t < 3
        assert snapshots(dest) == []
        threading.Timer(0.5, lock.release).start()
        t = time.monotonic()
        res = run(Request(str(src), str(dest), lock_timeout=2))
        assert 0.4 <= time.monotonic() - t < 2.5
        assert latest(dest) == os.path.basename(res['snapshot'])
    finally:
        lock.release()


def test_lock_through_module(ext4, workdir):
    """The module fails with the message while the lock is held; with lock_timeout it waits
    (we release once the module's process has the lock file open) and succeeds."""
    work = workdir(ext4)
    src = work / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'x')
    dest = work / 'snaps'
    lock = HeldLock(dest)
    try:
        res = ansible_run.run_adhoc('hardlink_snapshot', {'src': str(src), 'dest': str(dest)})
        assert res['failed'] is True
        assert res['msg'] == 'another snapshot of %s is running' % dest, res

        def release_when_waited_on():
            if _wait_for(lambda: _pids_with_open(dest / LOCK_NAME), 30):
                time.sleep(0.5)
            lock.release()

        releaser = threading.Thread(target=release_when_waited_on)
        releaser.start()
        res = ansible_run.run_adhoc('hardlink_snapshot', {'src': str(src), 'dest': str(dest), 'lock_timeout': 5})
        releaser.join()
        assert res['failed'] is False, res
        assert latest(dest) == os.path.basename(res['snapshot'])
    finally:
        lock.release()


def _holds_flock(pid, path):
    """True if PID holds a flock on PATH (from /proc/locks)."""
    ino = os.stat(path).st_ino
    with open('/proc/locks', encoding='ascii') as f:
        for line in f:
            fields = line.split()
            if 'FLOCK' in fields and fields[4] == str(pid) and fields[5].split(':')[-1] == str(ino):
                return True
    return False


def test_two_engine_processes(ext4, workdir):
    """A real second run while another process is snapshotting (stopped with SIGSTOP while it
    holds the lock): it fails at once; the first then completes."""
    work = workdir(ext4)
    src = work / 'src'
    src.mkdir()
    make_many_files(src, 3000, size=1024)
    dest = work / 'snaps'
    run(Request(str(src), str(dest), method='copy'))      # the root and its lock file exist
    first = start_engine(src, dest, method='copy')
    try:
        assert _wait_for(lambda: _holds_flock(first.pid, dest / LOCK_NAME), 30, step=0.001), \
            'the first run finished before we saw it hold the lock'
        first.send_signal(signal.SIGSTOP)
        with pytest.raises(Busy, match='another snapshot of %s is running' % dest):
            run(Request(str(src), str(dest)))
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    res = run(Request(str(src), str(dest)))
    assert len(snapshots(dest)) == 3 and latest(dest) == os.path.basename(res['snapshot'])


def test_enospc_from_the_start(ext4, small_ext4, workdir):
    """The destination is already full: even the .partial directory cannot be made.  A typed
    error naming the cause; nothing left behind; the earlier snapshot stays latest."""
    src = workdir(ext4) / 'src'
    src.mkdir()
    for i in range(20):
        (src / ('d%d' % i)).mkdir()
        (src / ('d%d' % i) / 'f').write_bytes(b'x' * 5000)
    dest = small_ext4 / 'snaps'
    first = run(Request(str(src), str(dest), method='copy'), now=Clock()())
    filler = small_ext4 / 'filler'
    with open(filler, 'wb') as f:
        try:
            while True:
                f.write(b'\0' * (1 << 16))
                f.flush()
        except OSError:
            pass
    for i in range(200):                   # the last blocks, and inodes' worth of directories
        try:
            os.mkdir(small_ext4 / ('fill-%d' % i))
        except OSError:
            break
    with pytest.raises(LinkError) as exc:
        run(Request(str(src), str(dest), method='copy'))
    assert isinstance(exc.value, NoSpace), repr(exc.value)
    assert 'no space left' in str(exc.value).lower()
    assert snapshots(dest) == [os.path.basename(first['snapshot'])]
    assert leftovers(dest) == [] and latest(dest) == os.path.basename(first['snapshot'])


# ---------------------------------------------------------------- an unprivileged user

NOBODY_RUNNER = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import LinkError
args = json.loads(sys.argv[2])
try:
    print(json.dumps({'ok': True, 'result': run(Request(args.pop('src'), args.pop('dest'), **args))}))
except LinkError as exc:
    print(json.dumps({'ok': False, 'cls': type(exc).__name__, 'msg': str(exc)}))
'''


@pytest.fixture
def nobody_dir():
    """A directory owned by nobody that nobody can reach (the session loop mounts live under a
    0700 directory, so this one is in /var/tmp)."""
    d = Path(tempfile.mkdtemp(prefix='fslinks-nobody-', dir='/var/tmp'))
    try:
        os.chmod(d, 0o755)
        os.chown(d, 65534, 65534)
        yield d
    finally:
        remove_tree(d)


def run_as_nobody(src, dest, **kw):
    if not shutil.which('setpriv'):
        pytest.skip('setpriv (util-linux) is needed to run the engine unprivileged')
    proc = subprocess.run(
        ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all',
         sys.executable, '-c', NOBODY_RUNNER, str(COLLECTIONS), json.dumps(dict(src=str(src), dest=str(dest), **kw))],
        capture_output=True, text=True, check=False, cwd='/')
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('method', ['hardlink', 'copy'])
def test_unprivileged_user_prunes_read_only_dirs(method, nobody_dir):
    """A user snapshotting their own tree (no root): a read-only directory (0555) with files in
    it is copied as 0555, and pruning that snapshot later must still work (rm -rf as the owner
    can, after making the directory writable)."""
    work = nobody_dir
    src = work / 'src'
    src.mkdir()
    (src / 'ro').mkdir()
    (src / 'ro' / 'f').write_bytes(b'x')
    (src / 'ro' / 'sub').mkdir()
    for p in (src, src / 'ro', src / 'ro' / 'f', src / 'ro' / 'sub'):
        os.chown(p, 65534, 65534)
    os.chmod(src / 'ro', 0o555)
    dest = work / 'snaps'
    results = [run_as_nobody(src, dest, method=method, keep={'last': 1}) for _round in range(2)]
    assert results[0]['ok'], results[0]
    assert results[1]['ok'], results[1]
    assert results[1]['result']['pruned'] == [results[0]['result']['snapshot']]
    assert snapshots(dest) == [os.path.basename(results[1]['result']['snapshot'])]
    assert leftovers(dest) == []
