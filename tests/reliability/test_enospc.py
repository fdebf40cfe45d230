# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ENOSPC at every point of a run: the free inodes (ext4) or free bytes (ext4, XFS, btrfs) of
the snapshot root's filesystem are swept from none to enough, so that the run runs out at the
method probe, the .partial directory, a directory or file inside it, the record, the latest
symlink, or not at all.  Whatever the point: the error is NoSpace and says "no space left",
no .partial is left, every published snapshot is complete, latest names one of them and no
earlier snapshot is lost; once there is room again the next run works.
"""

from __future__ import annotations

import datetime
import errno
import os
import re
import subprocess

import pytest

from helpers import faults, oracles, processes, trees
from helpers.faults import TALLY, Chain
from helpers.processes import Job
from helpers.snapshots import partials, snapshot_names
from helpers.trees import copy_reference, create_subvolume

from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import LinkError, NoSpace
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run

KEEP = 3


class Clock:
    """Distinct snapshot times, one hour apart."""

    def __init__(self):
        self.t = datetime.datetime(2026, 11, 21, 0, 0, 0, tzinfo=datetime.timezone.utc)

    def __call__(self):
        self.t += datetime.timedelta(hours=1)
        return self.t


def _free_inodes(mnt):
    return os.statvfs(mnt).f_ffree


def _free_bytes(mnt):
    st = os.statvfs(mnt)
    return st.f_bfree * st.f_frsize


class InodeFiller:
    """Use up a filesystem's inodes with empty files, then give back exactly K of them."""

    def __init__(self, mnt):
        self.mnt = mnt
        self.dir = mnt / 'fill-inodes'
        self.dir.mkdir()
        self.made = []
        self.next = 0

    def leave(self, k):
        while _free_inodes(self.mnt) > k:
            name = str(self.next)
            self.next += 1
            try:
                os.close(os.open(self.dir / name, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
            self.made.append(name)
        while _free_inodes(self.mnt) < k and self.made:
            os.unlink(self.dir / self.made.pop())
        return _free_inodes(self.mnt)


def fill_leaving(mnt, filler, room):
    """Fill MNT to the last block with FILLER, then give back ROOM bytes of it."""
    if filler.exists():
        filler.unlink()
    os.sync()
    with open(filler, 'wb') as f:
        size = 0
        for chunk in (64 << 20, 1 << 20, 64 << 10, 4 << 10):
            while True:
                try:
                    os.posix_fallocate(f.fileno(), size, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
                size += chunk
        f.truncate(max(0, size - room))
        os.fsync(f.fileno())
    os.sync()


def _step(exc):
    """Which step of the run ran out of space, from the message ("ACTION: PATH: words")."""
    msg = str(exc)
    action = msg.split(':', 1)[0]
    if action == 'create snapshot' and msg.split(':')[1].strip().endswith('.partial'):
        return 'creating the .partial directory or syncing it'
    if action.startswith('published, but'):
        return 'pointing latest at the new snapshot (the message says it is published)'
    return {'copy': 'copying a directory or file', 'publish': 'pointing latest at the new snapshot',
            'create snapshot': 'creating the snapshot', 'btrfs snapshot': 'the btrfs snapshot ioctl',
            'remove leftover': 'removing leftovers', 'lock': 'the lock file'}.get(action, action)


def _check_failure(exc, dest, before, chain, clock_name):
    """Problems with a failed run: wrong type or words, leftovers, published snapshot lost."""
    problems = []
    if not isinstance(exc, NoSpace) or 'no space left' not in str(exc):
        problems.append('not a clear NoSpace error: %s: %s' % (type(exc).__name__, exc))
    if partials(dest):
        problems.append('leftovers after the failed run: %s' % partials(dest))
    problems += chain.check(listed=False)
    now = snapshot_names(dest)
    if now != before and now[:-1] != before:
        problems.append('the failed run changed the published snapshots: %s -> %s' % (before, now))
    if now != before and not str(exc).startswith('published, but'):
        # A run that fails after publishing must say so (bug B3, fixed in 5ad0124).
        problems.append('the run failed (%s) but published %s' % (exc, clock_name))
    return problems


@pytest.mark.slow
def test_enospc_inodes_at_every_step(ext4, loop_fs, workdir):
    """ext4 whose free inodes go 0, 1, 2... up to what a run needs: the hardlink method needs
    an inode per directory and per changed file, one for the record and one for latest."""
    rng = faults.rng_for('inodes')
    small = loop_fs('ext4', '16M')
    work = workdir(ext4)
    src = work / 'src'
    trees.make_many_files(src, 30, size=512, per_dir=6, rng=rng)
    dest = small / 'snaps'
    refs = work / 'refs'
    refs.mkdir()
    chain = Chain(dest, KEEP)
    clock = Clock()
    chain.expect(copy_reference(src, refs / 'r0'))
    run(Request(str(src), str(dest), keep={'last': KEEP}), now=clock())
    assert chain.check(listed=False) == []
    filler = InodeFiller(small)
    rounds = faults.scale(1, 4)
    dirs = sum(1 for p in src.rglob('*') if p.is_dir())
    for rnd in range(rounds):
        # The same few files change before every run, so each run must copy exactly those;
        # it needs an inode for the .partial, each directory, each copy, the record and latest.
        changed = rng.randint(1, 3)
        victims = rng.sample(sorted(src.rglob('f*')), changed)
        needed = 1 + dirs + changed + 2
        for k in range(0, needed + 2):
            for p in victims:
                p.write_bytes(rng.randbytes(600))
            chain.expect(copy_reference(src, refs / ('r%d-%d' % (rnd, k))))
            have = filler.leave(k)
            before = snapshot_names(dest)
            when = clock()
            try:
                result = run(Request(str(src), str(dest), keep={'last': KEEP}), now=when)
            except LinkError as exc:
                problems = _check_failure(exc, dest, before, chain, when)
                outcome = 'NoSpace: ' + _step(exc)
                if any('but published' in p for p in problems):
                    problems = [p for p in problems if 'but published' not in p]
                    outcome = 'NoSpace: %s, though the snapshot was published (bug B3)' % _step(exc)
            else:
                problems = chain.check(listed=False)
                outcome = 'completed'
                if result.get('warnings'):
                    outcome = 'completed, with a warning: the record could not be written'
                if result['stats']['copied'] != changed:
                    problems.append('copied %d files, %d changed' % (result['stats']['copied'], changed))
            print('%d free inodes (wanted %d, %d changed): %s %s' % (have, k, changed, outcome, problems or ''))
            TALLY.record('enospc-inodes', 'ext4', outcome, lost=len(problems))
            assert not problems, '\n'.join(problems)
            chain.forget_unused_refs()
    # Room again: a normal run.
    filler.leave(10 ** 6)
    run(Request(str(src), str(dest), keep={'last': KEEP}), now=clock())
    assert chain.check(listed=False) == [] and partials(dest) == []


FS_SIZES = {'ext4': '32M', 'xfs': '300M', 'btrfs': '256M'}


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['ext4', 'xfs', 'btrfs'])
def test_enospc_data_swept(kind, ext4, loop_fs, workdir):
    """The data does not fit: free bytes on the snapshot root's filesystem swept over what a
    run copies (src on another filesystem, so files are copied or hard-linked, never cloned)."""
    rng = faults.rng_for('data-' + kind)
    small = loop_fs(kind, FS_SIZES[kind])
    work = workdir(ext4)
    src = work / 'src'
    trees.make_many_files(src, 12, size=256 << 10, per_dir=4, rng=rng)
    dest = small / 'snaps'
    refs = work / 'refs'
    refs.mkdir()
    job = Job(work, src, dest, keep={'last': KEEP})
    chain = Chain(dest, KEEP, job)
    chain.expect(copy_reference(src, refs / 'r0'))
    first = job.run()
    assert first.returncode == 0, first.stderr
    assert chain.check() == []
    filler = small / 'filler'
    points = faults.scale(4, 16)
    total = 12 * (256 << 10)
    for i in range(points):
        # Rewrite some files (they must be copied), then leave room for part of them.
        for p in rng.sample(sorted(src.rglob('f*')), rng.randint(4, 12)):
            p.write_bytes(rng.randbytes(256 << 10))
        chain.expect(copy_reference(src, refs / ('r%d' % (i + 1))))
        room = int(total * (i + 0.5) / points) if i < points - 1 else 0
        fill_leaving(small, filler, room)
        before = snapshot_names(dest)
        err = None
        use_cli = i == 0
        if use_cli:
            done = job.run()
            failed = done.returncode != 0
            msg = re.sub(r'^fslinks-snapshot: ', '', done.stderr.strip())
        else:
            try:
                run(Request(str(src), str(dest), keep={'last': KEEP}))
                failed, msg = False, ''
            except LinkError as exc:
                failed, msg, err = True, str(exc), exc
        problems = []
        if failed:
            if use_cli:
                if done.returncode != processes.EX_FAIL or 'no space left' not in msg:
                    problems.append('CLI: exit %d, %s' % (done.returncode, msg))
                if job.metric('last_run_status') != 0:
                    problems.append('metrics do not say the run failed')
                step = _step(msg)
            else:
                if not isinstance(err, NoSpace) or 'no space left' not in msg:
                    problems.append('not a clear NoSpace error: %s: %s' % (type(err).__name__, msg))
                step = _step(err)
            if partials(dest):
                problems.append('leftovers after the failed run: %s' % partials(dest))
            problems += chain.check()
            outcome = 'NoSpace: ' + step
            after = snapshot_names(dest)
            if after != before:
                if after[:-1] == before and msg.startswith('published, but'):
                    pass                        # says so; chain.check() proved it complete
                elif after[:-1] == before:      # published, then failed without saying so
                    outcome += ', though the snapshot was published (bug B3)'
                else:
                    problems.append('the failed run changed the published snapshots: %s -> %s' % (before, after))
        else:
            problems += chain.check()
            outcome = 'completed (it fit)'
        print('%s: room for %d of %d bytes: %s %s' % (kind, room, total, outcome, problems or ''))
        TALLY.record('enospc-data', kind, outcome + (' (CLI: exit 1)' if use_cli and failed else ''),
                     lost=len(problems))
        assert not problems, '\n'.join(problems)
        chain.forget_unused_refs()
    filler.unlink()
    done = job.run()
    assert done.returncode == 0, done.stderr
    assert chain.check() == [] and partials(dest) == []


@pytest.mark.slow
def test_enospc_btrfs_snapshot_of_a_full_filesystem(ext4, loop_fs, workdir):
    """A btrfs subvolume snapshot (with excludes: writable, prune, then read-only) on a
    filesystem filled to the last byte of data and metadata: it works (btrfs keeps a global
    reserve) or fails with NoSpace, leaving nothing."""
    rng = faults.rng_for('btrfs-full')
    mnt = loop_fs('btrfs', '256M')
    src = create_subvolume(mnt / 'src')
    trees.make_many_files(src, 200, size=1024, per_dir=50, rng=rng)
    trees.make_many_files(src / 'cache', 20, size=2048, per_dir=50, rng=rng)
    dest = mnt / 'snaps'
    ref = copy_reference(src, workdir(ext4) / 'ref')
    st = os.stat(src)
    subprocess.run(['rm', '-rf', str(ref / 'cache')], check=True)
    os.utime(ref, ns=(st.st_atime_ns, st.st_mtime_ns))
    first = run(Request(str(src), str(dest), exclude=['/cache/']))
    assert first['method'] == 'btrfs'
    fill = mnt / 'fill'
    fill.mkdir()
    fill_leaving(mnt, fill / 'data', 0)
    i = 0
    while True:                 # metadata: small files until even those fail
        try:
            (fill / ('m%d' % i)).write_bytes(b'x' * 1500)
        except OSError:
            break
        i += 1
    before = snapshot_names(dest)
    try:
        run(Request(str(src), str(dest), exclude=['/cache/']))
        outcome = 'completed (btrfs global reserve)'
        problems = []
    except LinkError as exc:
        print('full btrfs: %s' % exc)
        outcome = 'NoSpace: ' + _step(exc)
        problems = [] if isinstance(exc, NoSpace) else ['not NoSpace: %r' % exc]
        after = snapshot_names(dest)
        if after != before:
            if after[:-1] == before and not str(exc).startswith('published, but'):
                outcome += ', though the snapshot was published (bug B3)'
            else:
                problems.append('published snapshots changed: %s -> %s' % (before, after))
    for name in snapshot_names(dest):
        problems += oracles.tree_problems(ref, dest / name)
    left = [n for n in partials(dest) if not (outcome.endswith('(bug B3)') and n.endswith('.json.tmp'))]
    if left:
        problems.append('leftovers: %s' % left)
    TALLY.record('enospc-data', 'btrfs', 'btrfs snapshot, filesystem full: ' + outcome, lost=len(problems))
    assert not problems, problems
