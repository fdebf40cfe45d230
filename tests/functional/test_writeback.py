# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The writeback helper (module_utils/_children.writing_back) that every snapshot build and every
new reflink_copy tree runs beside it: the disk writes what the walk copied while the walk goes
on, the helper holds none of the run's fds, and it never outlives the run, whether the run ends
or is killed (tests/functional/test_parallel.py kills a whole snapshot run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import COLLECTIONS
from helpers.processes import alive, child_pids, outlived

from ansible_collections.fslinks.snapshots.plugins.module_utils._children import writing_back
from ansible_collections.fslinks.snapshots.plugins.module_utils._reflink_copy import reflink_copy
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

pytestmark = pytest.mark.loopfs

MiB = 1 << 20


def fds_of(pid):
    held = {}
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            held[int(fd)] = os.readlink('/proc/%d/fd/%s' % (pid, fd))
        except OSError:
            pass        # closed while we looked (its /proc/meminfo)
    return held


def sectors_written(mnt):
    """Sectors the loop device under MNT has written (/sys/block/loopN/stat, field 7)."""
    source = subprocess.run(['findmnt', '-n', '-o', 'SOURCE', '--target', str(mnt)], capture_output=True,
                            text=True, check=True).stdout.strip()
    with open('/sys/block/%s/stat' % os.path.basename(source), encoding='ascii') as f:
        return int(f.read().split()[6])


def test_what_the_body_writes_reaches_the_disk_before_the_body_ends(loop_fs):
    """96 MiB written and never synced by us reach the device within seconds, while the body
    still runs: without the helper the kernel would wait for dirty_expire_centisecs (30 s) or
    for dirty_background_ratio of this machine's memory.  On leaving, the helper is gone."""
    mnt = loop_fs('xfs', '512M')
    before_children = child_pids(os.getpid())
    fd = os.open(str(mnt), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with writing_back(fd):
            helpers = child_pids(os.getpid()) - before_children
            assert len(helpers) == 1
            start = sectors_written(mnt)
            block = os.urandom(MiB)
            out = os.open(str(mnt / 'data'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for _i in range(96):
                    os.write(out, block)
            finally:
                os.close(out)
            deadline = time.monotonic() + 10
            while (sectors_written(mnt) - start) * 512 < 90 * MiB and time.monotonic() < deadline:
                time.sleep(0.05)
            written = (sectors_written(mnt) - start) * 512
        assert written >= 90 * MiB, 'only %d MiB of 96 reached the device' % (written // MiB)
    finally:
        os.close(fd)
    assert not any(alive(p) for p in helpers)
    assert child_pids(os.getpid()) - before_children == set()


def test_the_builds_that_end_in_a_syncfs_run_beside_a_helper(workdir, xfs):
    """A snapshot (one process, so the only child is the helper) and a new reflink_copy tree
    walk with the helper beside them: the report callback, called on the walk, sees it; after
    the run it is gone."""
    w = workdir(xfs)
    (w / 'src' / 'd').mkdir(parents=True)
    for i in range(20):
        (w / 'src' / 'd' / ('f%d' % i)).write_bytes(b'x' * (i + 1))
    before = child_pids(os.getpid())
    seen = []

    def report(*_args):
        seen.append(len(child_pids(os.getpid()) - before))
    reflink_copy(str(w / 'src'), str(w / 'copy'), policy='never', report=report)
    run(Request(str(w / 'src'), str(w / 'snaps'), method='copy', workers=1), report=report)
    assert len(seen) > 40 and set(seen[1:]) == {1}, seen     # [0]: the tree's "create", before its walk
    assert child_pids(os.getpid()) == before


CALLER = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.fslinks.snapshots.plugins.module_utils._children import writing_back
fd = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY)
lock = os.open(os.path.join(sys.argv[2], 'lock'), os.O_RDWR | os.O_CREAT, 0o600)
with writing_back(fd):
    helper = set()
    for task in os.listdir('/proc/self/task'):
        with open('/proc/self/task/%s/children' % task) as f:
            helper.update(int(p) for p in f.read().split())
    print(json.dumps({'helper': sorted(helper), 'fd': fd, 'lock': lock}), flush=True)
    time.sleep(600)
'''


def test_a_killed_caller_leaves_no_helper_and_the_helper_holds_no_lock(tmp_path):
    proc = subprocess.Popen([sys.executable, '-c', CALLER, str(COLLECTIONS), str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        seen = json.loads(proc.stdout.readline())
        assert len(seen['helper']) == 1
        helper = seen['helper'][0]
        deadline = time.monotonic() + 5      # the fork closes what it inherited just after it starts
        while True:
            held = fds_of(helper)
            if str(tmp_path / 'lock') not in held.values() or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert str(tmp_path / 'lock') not in held.values()
        assert held.get(seen['fd']) == str(tmp_path)
        assert set(held) - {seen['fd']} <= {fd for fd, path in held.items() if path == '/proc/meminfo'}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert not outlived({helper}), 'the helper outlived its killed caller'
