# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The world around a run goes wrong: the snapshot root's filesystem is remounted read-only,
the job runs as a user who cannot read part of src, the snapshot root's filesystem is not
mounted when the timer fires.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest

from helpers import faults, prereq, processes, trees
from helpers.faults import TALLY, Chain
from helpers.oracles import tree_state
from helpers.processes import Job
from helpers.snapshots import latest, partials, snapshot_names
from helpers.trees import copy_reference

NOBODY = 65534


def _remount(mnt, opt):
    subprocess.run(['mount', '-o', 'remount,' + opt, str(mnt)], check=True, capture_output=True)


@pytest.mark.parametrize('kind', ['ext4', 'xfs', 'btrfs'])
def test_readonly_dest_between_runs(kind, ext4, loop_fs, workdir):
    rng = faults.rng_for('ro-' + kind)
    target = loop_fs(kind, '300M' if kind == 'xfs' else '128M')
    work = workdir(ext4)
    src = work / 'src'
    trees.make_many_files(src, 200, size=2048, per_dir=50, rng=rng)
    dest = target / 'snaps'
    job = Job(work, src, dest, keep={'last': 3})
    chain = Chain(dest, 3, job)
    chain.expect(copy_reference(src, work / 'ref0'))
    assert job.run().returncode == 0
    assert chain.check() == []
    for rnd in range(faults.scale(1, 5)):
        trees.mutate(src, rng)
        chain.expect(copy_reference(src, work / ('ref%d' % (rnd + 1))))
        before = tree_state(dest)
        _remount(target, 'ro')
        try:
            done = job.run()
            problems = chain.check()
        finally:
            _remount(target, 'rw')
        lost = len(problems)
        if done.returncode != processes.EX_FAIL or 'read-only' not in done.stderr:
            problems.append('exit %d: %s' % (done.returncode, done.stderr.strip()))
        if tree_state(dest) != before:
            problems.append('the read-only root changed')
        if job.metric('last_run_status') != 0:
            problems.append('the metrics do not say the run failed')
        again = job.run()
        if again.returncode != 0:
            problems.append('the run after remounting rw failed: %s' % again.stderr)
        after = chain.check()
        lost += len(after)
        problems += after
        TALLY.record('readonly-dest', kind, 'exit 1 "%s", nothing changed; next run after rw works'
                     % done.stderr.strip().rsplit(': ', 1)[-1], lost=lost)
        assert not problems, '\n'.join(problems)


# ---------------------------------------------------------------- as an unprivileged user


def _as_nobody(argv):
    prereq.need('setpriv')
    return subprocess.run(['setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY, '--clear-groups',
                           '--inh-caps=-all'] + argv, capture_output=True, text=True, check=False, cwd='/',
                          timeout=300)


def _chown_tree(root, uid):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + ['']:
            os.lchown(os.path.join(dirpath, name) if name else dirpath, uid, uid)


@pytest.mark.parametrize('kind', ['ext4', 'xfs', 'btrfs'])
def test_unreadable_entries_as_unprivileged_user(kind, request, reachable, workdir):  # pylint: disable=unused-argument
    """The job runs as nobody over nobody's tree; then root puts an unreadable file, then an
    unreadable directory into it. With on_error: fail each run fails with exit 1 naming the
    entry ("permission denied"), leaves nothing, and the earlier snapshot stays complete and
    latest; with on_error: skip (the default) the run exits 3 and publishes a snapshot that is
    src without that entry, which its record lists."""
    mnt = request.getfixturevalue(kind)
    rng = faults.rng_for('nobody-' + kind)
    work = workdir(mnt)
    os.chmod(work, 0o755)
    src = work / 'src'
    trees.make_many_files(src, 100, size=2048, per_dir=50, rng=rng)
    job = Job(work, src, work / 'snaps', keep={'last': 3}, on_error='fail')
    _chown_tree(work, NOBODY)
    chain = Chain(job.dest, 3)
    chain.expect(copy_reference(src, workdir(mnt) / 'ref0'))
    first = _as_nobody(processes.cli_argv(job.etc, 'run', job.name))
    assert first.returncode == 0, first.stderr
    assert chain.check() == []
    cases = [('file', src / 'd000' / 'root-only', 'open'), ('directory', src / 'private', 'open directory')]
    for what, path, action in cases:
        if what == 'file':
            path.write_bytes(b'root only\n')
            os.chmod(path, 0o600)
        else:
            path.mkdir(mode=0o700)
            (path / 'inner').write_bytes(b'x')
        before = snapshot_names(job.dest)
        done = _as_nobody(processes.cli_argv(job.etc, 'run', job.name))
        problems = chain.check(listed=False)
        rel = os.path.relpath(path, src)
        if done.returncode != processes.EX_FAIL or '%s: %s: permission denied' % (action, rel) not in done.stderr:
            problems.append('exit %d: %s' % (done.returncode, done.stderr.strip()))
        if snapshot_names(job.dest) != before or latest(job.dest) != before[-1]:
            problems.append('published snapshots changed: %s -> %s' % (before, snapshot_names(job.dest)))
        if partials(job.dest):
            problems.append('leftovers: %s' % partials(job.dest))
        TALLY.record('permission-denied', kind, 'on_error fail, unreadable %s: exit 1 "%s: ...: permission denied", '
                     'nothing left' % (what, action), lost=len(problems))
        assert not problems, '\n'.join(problems)
        # on_error: skip (the default): published without it, which the record says.
        ref = copy_reference(src, workdir(mnt) / ('ref-' + what))
        parent = os.stat(path.parent)
        subprocess.run(['rm', '-rf', str(ref / rel)], check=True)
        os.utime(ref / os.path.dirname(rel) if os.path.dirname(rel) else ref,
                 ns=(parent.st_atime_ns, parent.st_mtime_ns))
        chain.expect(ref)
        job.cfg['on_error'] = 'skip'
        job.write()
        done = _as_nobody(processes.cli_argv(job.etc, 'run', job.name))
        problems = chain.check(listed=False)
        names = snapshot_names(job.dest)
        if done.returncode != 3 or names[-1] in before or latest(job.dest) != names[-1]:
            problems.append('on_error skip: exit %d, %s -> %s: %s'
                            % (done.returncode, before, names, done.stderr.strip()))
        else:
            listed = json.loads((job.dest / (names[-1] + '.json')).read_text()).get('skipped')
            if [s['path'] for s in listed or []] != [rel]:
                problems.append('the record lists %r, not %s' % (listed, rel))
        TALLY.record('permission-denied', kind, 'on_error skip, unreadable %s: exit 3, published without it, '
                     'listed in its record' % what, lost=len(problems))
        job.cfg['on_error'] = 'fail'
        job.write()
        subprocess.run(['rm', '-rf', str(path)], check=True)
        assert not problems, '\n'.join(problems)
        chain.expect(copy_reference(src, workdir(mnt) / ('ref-after-' + what)))
    done = _as_nobody(processes.cli_argv(job.etc, 'run', job.name))
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- the root's filesystem is not mounted

@contextlib.contextmanager
def _bind(source, target):
    subprocess.run(['mount', '--bind', str(source), str(target)], check=True, capture_output=True)
    try:
        yield target
    finally:
        subprocess.run(['umount', str(target)], check=False, capture_output=True)


def _umount(target):
    subprocess.run(['umount', str(target)], check=True, capture_output=True)


@pytest.mark.parametrize('layout', ['root-inside-the-mount', 'root-is-the-mount-point'])
def test_unmounted_dest(layout, ext4, loop_fs, workdir):
    """/backup is a mount point; the job's snapshot root is /backup/snaps (or /backup itself),
    initialized while mounted.  The filesystem is not mounted for one run: that run must not
    start a new chain on the parent filesystem (it refuses: exit 1, naming the root) and the
    real chain, mounted again, goes on where it was."""
    rng = faults.rng_for('unmounted-' + layout)
    parent = loop_fs('ext4', '64M')             # the filesystem the mount point lives on
    data = loop_fs('xfs', '300M')
    work = workdir(ext4)
    src = work / 'src'
    trees.make_many_files(src, 100, size=2048, per_dir=50, rng=rng)
    mp = parent / 'backup'
    mp.mkdir()
    dest = mp / 'snaps' if layout == 'root-inside-the-mount' else mp
    job = Job(work, src, dest, keep={'last': 3}, init=False)
    with _bind(data, mp):
        job.init()
        chain = Chain(dest, 3, job)
        chain.expect(copy_reference(src, work / 'ref0'))
        assert job.run().returncode == 0 and job.run().returncode == 0
        assert chain.check() == []
        state = tree_state(dest)
        kept_latest = latest(dest)
        _umount(mp)
        parent_before = tree_state(parent)
        done = job.run()
        problems = []
        if done.returncode == 0:
            outcome = 'exit 0: a new chain on the parent filesystem (B5)'
            problems.append('the run while unmounted started a new chain in %s' % dest)
        else:
            words = done.stderr.strip().split(': ', 1)[-1].split(' (')[0].replace(str(dest), 'DEST')
            outcome = 'exit %d: "%s"' % (done.returncode, words)
            if done.returncode != processes.EX_FAIL or str(dest) not in done.stderr:
                problems.append('exit %d: %s' % (done.returncode, done.stderr.strip()))
        if tree_state(parent) != parent_before:
            problems.append('the run while unmounted wrote to the parent filesystem')
        subprocess.run(['rm', '-rf', '--one-file-system', str(mp / 'snaps')], check=False)
        subprocess.run(['mount', '--bind', str(data), str(mp)], check=True, capture_output=True)
        if tree_state(dest) != state or latest(dest) != kept_latest:
            problems.append('the real chain changed while its filesystem was away')
        again = job.run()
        if again.returncode != 0:
            problems.append('the run after mounting again failed: %s' % again.stderr)
        problems += chain.check()
        TALLY.record('unmounted-dest', 'xfs', '%s: %s; mounted again, the chain goes on' % (layout, outcome),
                     lost=len(problems))
        assert not problems, '\n'.join(problems)
