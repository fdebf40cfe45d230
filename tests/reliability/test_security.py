# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a local user who owns files in src, or a directory on the way to src or dest, can do
to a snapshot job that runs as root: the claims of docs/security.md, each held by a test.
"""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import time

import pytest

from helpers import processes, snapshots
from helpers.faults import TALLY
from helpers.processes import Job
from helpers.snapshots import latest, snapshot_names

NOBODY = 65534


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize('kind', ['ext4', 'xfs'])
def test_fifos_are_never_opened(kind, request, workdir):
    """A fifo in src with a writer waiting for a reader: a run that opened it (to read it, or
    to probe it) would release the writer.  The snapshot holds a fifo; the writer still waits."""
    mnt = request.getfixturevalue(kind)
    work = workdir(mnt)
    src = work / 'src'
    src.mkdir()
    os.mkfifo(src / 'a-fifo', 0o644)             # sorts first: the method probe looks at it first
    (src / 'data').write_bytes(b'x' * 10000)
    writer = subprocess.Popen([sys.executable, '-c', 'open(%r, "w").write("gotcha")' % str(src / 'a-fifo')])
    try:
        job = Job(work, src, work / 'snaps')
        done = job.run(timeout=60)
        time.sleep(0.2)
        still_waiting = writer.poll() is None
    finally:
        writer.kill()
        writer.wait()
    assert done.returncode == 0, done.stderr
    snap = work / 'snaps' / latest(work / 'snaps')
    assert stat.S_ISFIFO(os.lstat(snap / 'a-fifo').st_mode)
    TALLY.record('local-user', kind, 'fifo with a waiting writer in src: made with mknod, never opened')
    assert still_waiting, 'the run opened the fifo (the writer got a reader)'


def test_hard_link_to_a_foreign_file(ext4, workdir):
    """A user hard-links a file they cannot read into src (possible where protected_hardlinks
    is off, or for a file they own and later chmod): the snapshot holds a copy with the same
    owner and mode (so it is no more readable than the original) and never shares the
    original's inode; with the hardlink method later snapshots link to the first snapshot's
    copy, never to src."""
    work = workdir(ext4)
    outside = work / 'outside'
    outside.mkdir()
    secret = outside / 'secret'
    secret.write_bytes(b'root only\n')
    os.chmod(secret, 0o600)
    src = work / 'src'
    src.mkdir()
    os.link(secret, src / 'linked')
    os.chown(src, NOBODY, NOBODY)
    job = Job(work, src, work / 'snaps', method='hardlink')
    for _round in range(2):
        assert job.run().returncode == 0
    snaps = snapshot_names(work / 'snaps')
    inodes = {os.lstat(work / 'snaps' / s / 'linked').st_ino for s in snaps}
    copy = os.lstat(work / 'snaps' / snaps[-1] / 'linked')
    assert os.lstat(secret).st_ino not in inodes
    assert len(inodes) == 1, 'the second snapshot links to the first one'
    assert (stat.S_IMODE(copy.st_mode), copy.st_uid) == (0o600, 0)
    assert os.lstat(secret).st_nlink == 2        # src's link, nothing more
    TALLY.record('local-user', 'ext4', 'hard link to a foreign file in src: copied with its owner and mode, '
                 'never linked to')


def test_snapshot_root_and_files_are_private(ext4, workdir):
    """The root is made 0700 whatever the umask, the lock file and the records 0600; an
    existing root keeps the mode it has (the admin's choice)."""
    work = workdir(ext4)
    src = work / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'x')
    os.chmod(src, 0o755)
    job = Job(work, src, work / 'snaps', init=False)
    init = subprocess.run(['sh', '-c', 'umask 000 && exec "$@"', 'sh'] + processes.cli_argv(job.etc, 'init', 'data'),
                          capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    assert job.run().returncode == 0
    dest = work / 'snaps'
    snap = snapshot_names(dest)[-1]
    assert _mode(dest) == 0o700
    assert _mode(dest / snapshots.LOCK_NAME) == 0o600
    assert _mode(dest / (snap + '.json')) == 0o600
    assert _mode(dest / snap) == 0o755, 'the snapshot itself has src\'s mode; the root is the gate'
    shared = work / 'shared'
    shared.mkdir()
    os.chmod(shared, 0o755)
    job2 = Job(work, src, shared, name='shared')
    assert job2.run().returncode == 0
    assert _mode(shared) == 0o755, 'an existing root keeps its mode'


def test_logs_and_metrics_of_a_success_carry_no_file_names(xfs, workdir):
    work = workdir(xfs)
    src = work / 'src'
    (src / 'secret-dir-name').mkdir(parents=True)
    (src / 'secret-dir-name' / 'secret-file-name').write_bytes(b'x')
    job = Job(work, src, work / 'snaps')
    done = job.run()
    assert done.returncode == 0
    text = done.stdout + done.stderr + (job.metrics / 'fslinks_snapshot_data.prom').read_text()
    assert 'secret-' not in text


def _held_lock(dest):
    fd = os.open(os.path.join(dest, snapshots.LOCK_NAME), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_busy_run_leaves_the_metrics_alone(ext4, workdir):
    """A run that finds the job running exits 75; the running one writes the metrics when it
    ends.  If the busy one wrote "last run failed", an alert on last_run_status fires for a job
    that is only slow (cron starts the next hour's run while this one works)."""
    work = workdir(ext4)
    src = work / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'x')
    job = Job(work, src, work / 'snaps')
    assert job.run().returncode == 0
    assert job.metric('last_run_status') == 1
    fd = _held_lock(work / 'snaps')
    try:
        busy = job.run()
    finally:
        os.close(fd)
    assert busy.returncode == processes.EX_BUSY
    if job.metric('last_run_status') == 0:
        TALLY.record('concurrent', 'ext4', 'a run that finds the lock held writes last_run_status 0 (M1)')
        pytest.xfail('M1: exit 75 wrote fslinks_snapshot_last_run_status 0 while the other run is still working')


def test_metrics_temp_file_does_not_follow_symlinks(ext4, workdir):
    """The metrics directory is node_exporter's; where its owner is not root (packages differ),
    that user could plant METRICS/fslinks_snapshot_JOB.prom.PID.tmp -> /etc/something before the
    job writes it.  The job must not write through that symlink."""
    work = workdir(ext4)
    src = work / 'src'
    src.mkdir()
    (src / 'f').write_bytes(b'x')
    job = Job(work, src, work / 'snaps')
    os.chown(job.metrics, NOBODY, NOBODY)
    victim = work / 'victim'
    victim.write_bytes(b'root-owned file\n')
    proc = job.start()
    planted = job.metrics / ('fslinks_snapshot_data.prom.%d.tmp' % proc.pid)
    os.symlink(victim, planted)
    os.lchown(planted, NOBODY, NOBODY)
    proc.communicate(timeout=60)
    if victim.read_bytes() != b'root-owned file\n':
        TALLY.record('local-user', 'ext4', 'planted symlink in a metrics dir owned by another user: root writes '
                     'through it (H2)')
        pytest.xfail('H2: write_metrics followed a planted symlink and overwrote %s' % victim)
    TALLY.record('local-user', 'ext4', 'planted symlink in the metrics dir: not followed')


def test_a_user_owning_dests_parent_cannot_redirect_the_job(ext4, workdir, reachable):  # pylint: disable=unused-argument
    """Job "home" snapshots /home/alice/data into /home/alice/.snapshots (alice owns
    /home/alice); job "db" has its own root elsewhere with snapshots.  Alice swaps her
    .snapshots for a symlink to db's root.  Her job must not then write into db's root, let
    alone prune db's snapshots by her job's keep policy."""
    work = workdir(ext4)
    os.chmod(work, 0o755)
    home = work / 'home-alice'
    (home / 'data').mkdir(parents=True)
    (home / 'data' / 'mine').write_bytes(b'alice\n')
    db_src = work / 'db'
    db_src.mkdir()
    (db_src / 'table').write_bytes(b'db\n')
    db = Job(work, db_src, work / 'db-snaps', name='db')
    for _round in range(3):
        assert db.run().returncode == 0
    db_before = snapshot_names(db.dest)
    alice = Job(work, home / 'data', home / '.snapshots', name='home', keep={'last': 1})
    assert alice.run().returncode == 0
    for p in (home, home / 'data', home / 'data' / 'mine'):
        os.chown(p, NOBODY, NOBODY)
    # What alice can do in her own home (no privileges needed).
    swap = ('import os; os.rename(%r, %r); os.symlink(%r, %r)'
            % (str(home / '.snapshots'), str(home / 'old'), str(db.dest), str(home / '.snapshots')))
    done = subprocess.run(['setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY, '--clear-groups', sys.executable,
                           '-c', swap], capture_output=True, text=True, check=False, cwd='/')
    assert done.returncode == 0, done.stderr
    run = alice.run()
    db_after = snapshot_names(db.dest)
    lost = [n for n in db_before if n not in db_after]
    if run.returncode == 0 or lost:
        TALLY.record('local-user', 'ext4', 'dest swapped for a symlink to another job\'s root by the owner of its '
                     'parent: the job writes there and prunes %d of its snapshots (S1)' % len(lost), lost=len(lost))
        pytest.xfail('S1: the job followed the symlink %s -> %s (exit %d) and pruned %s'
                     % (home / '.snapshots', db.dest, run.returncode, lost))
    TALLY.record('local-user', 'ext4', 'dest swapped for a symlink by the owner of its parent: refused')
    assert latest(db.dest) == db_before[-1]


def test_a_user_owning_srcs_parent_cannot_point_the_job_elsewhere(ext4, workdir, reachable):  # pylint: disable=unused-argument
    """Alice swaps her data directory (src) for a symlink to a root-only directory: the job
    must not snapshot that directory (what it reads is what the admin configured).  Today it
    does (S1); the copy keeps the 0700 root-owned modes, so alice cannot read it through it."""
    work = workdir(ext4)
    os.chmod(work, 0o755)
    secret = work / 'root-only'
    secret.mkdir(mode=0o700)
    (secret / 'key').write_bytes(b'SENTINEL-TOKEN\n')
    os.chmod(secret / 'key', 0o600)
    home = work / 'home-alice'
    (home / 'data').mkdir(parents=True)
    (home / 'data' / 'mine').write_bytes(b'alice\n')
    job = Job(work, home / 'data', work / 'snaps', name='home')
    assert job.run().returncode == 0
    for p in (home, home / 'data', home / 'data' / 'mine'):
        os.chown(p, NOBODY, NOBODY)
    swap = ('import os; os.rename(%r, %r); os.symlink(%r, %r)'
            % (str(home / 'data'), str(home / 'old'), str(secret), str(home / 'data')))
    done = subprocess.run(['setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY, '--clear-groups', sys.executable,
                           '-c', swap], capture_output=True, text=True, check=False, cwd='/')
    assert done.returncode == 0, done.stderr
    run = job.run()
    newest = work / 'snaps' / snapshot_names(work / 'snaps')[-1]
    if (newest / 'key').exists():
        assert (_mode(newest), os.lstat(newest).st_uid) == (0o700, 0), 'the copy must keep the original modes'
        TALLY.record('local-user', 'ext4', 'src swapped for a symlink to a root-only directory by the owner of its '
                     'parent: the job snapshots that directory, modes kept (S1)')
        pytest.xfail('S1: the job followed %s -> %s' % (home / 'data', secret))
    TALLY.record('local-user', 'ext4', 'src swapped for a symlink by the owner of its parent: refused')
    assert run.returncode == processes.EX_FAIL


def test_src_swapped_after_the_checks(ext4, workdir, monkeypatch):
    """The same swap as above, made in the instant between the job's path checks and the
    moment the run opens src (the exact race, made deterministic with a hook): the run must not
    read the directory the symlink points to."""
    from ansible_collections.fslinks.snapshots.plugins.module_utils import _jobs, _snapshot  # pylint: disable=import-outside-toplevel
    work = workdir(ext4)
    secret = work / 'root-only'
    secret.mkdir(mode=0o700)
    (secret / 'key').write_bytes(b'SENTINEL-TOKEN\n')
    home = work / 'home-alice'
    (home / 'data').mkdir(parents=True)
    (home / 'data' / 'mine').write_bytes(b'alice\n')
    job = Job(work, home / 'data', work / 'snaps', name='home')
    orig = _snapshot.Request._check_paths

    def swap_after_checks(self):
        orig(self)
        if not (home / 'old').exists():
            os.rename(home / 'data', home / 'old')
            os.symlink(secret, home / 'data')
    monkeypatch.setattr(_snapshot.Request, '_check_paths', swap_after_checks)
    monkeypatch.setenv('INVOCATION_ID', 'fslinks-test')
    code = _jobs.main(['--config-dir', str(job.etc), 'run', 'home'])
    monkeypatch.undo()
    names = snapshot_names(work / 'snaps')
    followed = bool(names) and (work / 'snaps' / names[-1] / 'key').exists()
    if followed:
        TALLY.record('local-user', 'ext4', 'src swapped for a symlink right after the checks: the run reads the '
                     'target (S1b, a narrow race)')
        pytest.xfail('S1b: src swapped between the checks and the open was followed (exit %s)' % code)
    TALLY.record('local-user', 'ext4', 'src swapped for a symlink right after the checks: %s'
                 % ('refused' if code else 'not followed'))
