# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pulls: a job whose src is [USER@]HOST:/PATH, run by the real CLI, through a real sshd on
127.0.0.1 whose authorized_keys forces `fslinks-snapshot serve PATH` (what the role writes on a
client), with the real rsync and rrsync, onto backup roots on loop ext4, XFS and btrfs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import loopfs, oracles, trees
from helpers.processes import Job, cli
from helpers.snapshots import leftovers, snapshots
from helpers.sshd import Sshd

METHOD = {'ext4': 'hardlink', 'xfs': 'reflink', 'btrfs': 'btrfs'}


@pytest.fixture(scope='module')
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp('sshd')).start()
    yield server
    server.stop()


def _pull_job(sshd, work, src, dest, **cfg):
    sshd.authorize(src)
    options = sshd.job_options()
    options.update(cfg)
    return Job(work, sshd.remote(src), dest, **options)


def _ok(done):
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _record(dest, name):
    return json.loads((Path(dest) / (name + '.json')).read_text())


def _used(path):
    os.sync()
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_pull_is_an_exact_copy_over_several_pulls(sshd, fs, ext4, workdir):
    """The hostile tree (owners, modes, ACLs, xattrs, inner hard links, specials, sparse files,
    symlinks pointing out) arrives exactly, by the method of the backup root's filesystem, and
    stays exact over more pulls: ACLs on XFS too (rsync would delete XFS's trusted.SGI_ACL_*
    twins on the second pull without the filter)."""
    client = workdir(ext4, 'client-')
    tree = trees.make_hostile_tree(client / 'data', outside=workdir(ext4, 'outside-'))
    kind = loopfs.fstype_of(fs)
    job = _pull_job(sshd, workdir(fs, 'job-'), tree.root, workdir(fs, 'backup-') / 'root')
    for round_ in range(3):
        if round_:
            time.sleep(1.1)         # rsync's quick check: a change at least a second apart
            (tree.root / 'plain.txt').write_text('changed in round %d\n' % round_)
            (tree.root / ('new-%d' % round_)).write_bytes(os.urandom(5000))
        _ok(job.run())
        names = snapshots(job.dest)
        assert len(names) == round_ + 1
        if round_ == 0:
            oracles.check_hostile_copy(tree, job.dest / names[-1])
        else:   # (check_hostile_copy counts links and files of the first tree)
            oracles.assert_same_tree(tree.root, job.dest / names[-1])
            for rel in ('acl.txt', 'acl-dir', 'acl-dir/inherits'):
                assert oracles.acl_dump(job.dest / names[-1] / rel) == oracles.acl_dump(tree.root / rel), rel
        record = _record(job.dest, names[-1])
        assert record['method'] == METHOD[kind] and record['src'] == sshd.remote(tree.root)
        assert record['rsync']['exit'] == 0 and record['rsync']['reg'] >= 10
        if round_:
            assert record['changed_files'] == {'added': 1, 'modified': 1, 'deleted': 0}
    if kind == 'btrfs':
        assert oracles.is_readonly_subvolume(job.dest / names[-1])
    # The earlier snapshots still hold what was there then.
    assert (job.dest / names[0] / 'plain.txt').read_text() == 'hello world\n'
    assert (job.dest / names[1] / 'plain.txt').read_text() == 'changed in round 1\n'
    _ok(cli(job.etc, 'check', job.name))
    assert job.metric('last_run_status') == 1
    assert job.listed() == names
    assert leftovers(job.dest) == []


def test_pull_costs_only_the_changed_blocks(sshd, fs, ext4, workdir):
    """After 1 % of a big file's blocks change on the client, the next snapshot costs about those
    bytes on XFS and btrfs (mirror updated in place, then a reflink tree or a btrfs snapshot of
    it); on ext4 the unchanged files are hard links to the previous snapshot."""
    client = workdir(ext4, 'client-') / 'data'
    (client / 'small').mkdir(parents=True)
    big = client / 'image.raw'
    # One byte in eight zero: rsync -S with --inplace would punch a hole at each zero run that
    # starts or ends a block it keeps, unsharing a filesystem block from the snapshot each time.
    zeros = bytes.maketrans(bytes(range(0, 256, 8)), bytes(32))
    big.write_bytes(os.urandom(48 << 20).translate(zeros))
    for i in range(50):
        (client / 'small' / ('f%02d' % i)).write_bytes(os.urandom(3000))
    kind = loopfs.fstype_of(fs)
    job = _pull_job(sshd, workdir(fs, 'job-'), client, workdir(fs, 'backup-') / 'root')
    _ok(job.run())
    time.sleep(1.1)
    changed = 0
    with open(big, 'r+b') as handle:      # 1 % of the blocks, in 12 places
        for i in range(12):
            handle.seek(i * (4 << 20) + 8192)
            handle.write(os.urandom(40 << 10))
            changed += 40 << 10
    before = _used(job.dest)
    _ok(job.run())
    grown = _used(job.dest) - before
    first, second = snapshots(job.dest)
    assert oracles.same_content(client / 'image.raw', job.dest / second / 'image.raw')
    assert oracles.rsync_diff(client, job.dest / second) == []
    if kind == 'ext4':
        for i in range(50):
            rel = Path('small') / ('f%02d' % i)
            assert os.stat(job.dest / first / rel).st_ino == os.stat(job.dest / second / rel).st_ino
        assert os.stat(job.dest / first / 'image.raw').st_ino != os.stat(job.dest / second / 'image.raw').st_ino
        assert grown >= 48 << 20        # rsnapshot's way: a changed file costs a whole copy
    else:
        # 480 KiB changed; rsync's blocks (~7 KiB at this size) around each change, metadata.
        # The chain's data as `du` counts it (allocated extents, shared ones once): XFS's
        # used-space figure also holds CoW blocks it reserved ahead and reclaims later.
        chain = json.loads(_ok(cli(job.etc, 'du', job.name, '--json')).stdout)['total_bytes']
        first_copy = sum(p.stat().st_blocks * 512 for p in client.rglob('*') if p.is_file())
        assert chain - first_copy < 2 << 20, 'the chain holds %d bytes, the first copy %d, %d changed' % (
            chain, first_copy, changed)
        if kind == 'btrfs':
            assert grown < 3 << 20, 'the second pull cost %d bytes for %d changed' % (grown, changed)
        record = _record(job.dest, second)
        assert record['rsync']['literal_bytes'] < 2 << 20
        assert record['rsync']['matched_bytes'] > 40 << 20


def test_same_size_change_within_the_same_second_is_pulled(sshd, ext4, workdir):
    """rsync's quick check compares sizes and mtimes; the pulls compare mtimes to the nanosecond
    (--modify-window=-1), so a same-size rewrite within the second of the last pull is seen."""
    client = workdir(ext4, 'client-') / 'data'
    client.mkdir()
    victim = client / 'config'
    victim.write_text('port=1\n')
    os.utime(victim, ns=(1_800_000_000_000_000_100, 1_800_000_000_000_000_100))
    job = _pull_job(sshd, workdir(ext4, 'job-'), client, workdir(ext4, 'backup-') / 'root')
    _ok(job.run())
    victim.write_text('port=2\n')
    os.utime(victim, ns=(1_800_000_000_000_000_900, 1_800_000_000_000_000_900))
    _ok(job.run())
    assert (job.dest / snapshots(job.dest)[-1] / 'config').read_text() == 'port=2\n'


@pytest.mark.parametrize('method', ['hardlink', 'copy', 'reflink', 'btrfs'])
def test_forced_pull_methods(sshd, method, xfs, ext4, workdir):
    """A forced method does what it says on a root that can do it (hardlink and copy on XFS:
    unchanged files linked or copied anew), and fails before writing where it cannot (btrfs on
    XFS, reflink on ext4)."""
    client = workdir(ext4, 'client-') / 'data'
    client.mkdir()
    (client / 'same').write_bytes(os.urandom(10000))
    on = ext4 if method == 'reflink' else xfs
    job = _pull_job(sshd, workdir(on, 'job-'), client, workdir(on, 'backup-') / 'root', method=method)
    if method in ('btrfs', 'reflink'):
        failed = job.run()
        assert failed.returncode == 1 and 'method %s' % method in failed.stderr, failed.stderr
        assert snapshots(job.dest) == [] and not (job.dest / '.fslinks-mirror').exists()
        return
    _ok(job.run())
    time.sleep(1.1)
    (client / 'new').write_text('new\n')
    _ok(job.run())
    first, second = snapshots(job.dest)
    assert oracles.rsync_diff(client, job.dest / second) == []
    same = [os.stat(job.dest / n / 'same').st_ino for n in (first, second)]
    assert (same[0] == same[1]) == (method == 'hardlink')
    assert _record(job.dest, second)['method'] == method


def test_pull_check_mode_writes_nothing(sshd, xfs, ext4, workdir):
    """Check mode (hardlink_snapshot --check, the module's door) runs rsync --dry-run: the plan's
    counts, no root, no mirror, no snapshot."""
    from helpers.ansible_run import run_adhoc
    client = workdir(ext4, 'client-') / 'data'
    client.mkdir()
    for i in range(7):
        (client / ('f%d' % i)).write_bytes(os.urandom(1000))
    sshd.authorize(client)
    dest = workdir(xfs, 'backup-') / 'root'
    args = dict(src=sshd.remote(client), dest=str(dest), **sshd.job_options())
    planned = run_adhoc('hardlink_snapshot', args, check=True)
    assert not planned['failed'], planned
    assert planned['changed'] and planned['method'] == 'reflink' and planned['rsync']['reg'] == 7
    assert not dest.exists()
    done = run_adhoc('hardlink_snapshot', args)
    assert not done['failed'], done
    assert done['rsync']['files_transferred'] == 7
    planned = run_adhoc('hardlink_snapshot', args, check=True)
    assert planned['rsync']['files_transferred'] == 0 and planned['changed_files'] == {
        'added': 0, 'modified': 0, 'deleted': 0}
    assert len(snapshots(dest)) == 1


def test_unreachable_client_fails_clearly_and_publishes_nothing(sshd, tmp_path, xfs, ext4, workdir):
    """sshd stopped on the client: the run fails (exit 1) naming the host and ssh's cause, no
    snapshot or partial appears, the mirror stays, metrics and `check` say so; the next run,
    with sshd back, completes."""
    client = workdir(ext4, 'client-') / 'data'
    client.mkdir()
    (client / 'a').write_text('a\n')
    own = Sshd(tmp_path / 'own-sshd').start()
    try:
        job = _pull_job(own, workdir(xfs, 'job-'), client, workdir(xfs, 'backup-') / 'root')
        _ok(job.run())
        own.stop()
        time.sleep(1.5)
        failed = job.run()
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert 'pull from root@127.0.0.1:%s failed: rsync exited' % client in failed.stderr
        assert 'Connection refused' in failed.stderr
        assert len(snapshots(job.dest)) == 1
        assert sorted(p.name for p in job.dest.iterdir() if p.name.endswith('.partial')) == []
        assert (job.dest / '.fslinks-mirror' / 'a').read_text() == 'a\n'
        assert job.metric('last_run_status') == 0
        warned = cli(job.etc, 'check', job.name)      # the newest is fresh, the last run failed
        assert warned.returncode == 3, warned.stdout
        assert 'warning: job data: the last run (started ' in warned.stdout
        assert 'failed: pull from root@127.0.0.1:%s failed: rsync exited' % client in warned.stdout
        own.start()
        _ok(job.run())
        assert len(snapshots(job.dest)) == 2
        _ok(cli(job.etc, 'check', job.name))
    finally:
        own.stop()


def test_unknown_host_key_is_refused(sshd, tmp_path, ext4, workdir):
    """Host keys are always checked: a known_hosts file without the client's key fails the run."""
    client = workdir(ext4, 'client-') / 'data'
    client.mkdir()
    empty = tmp_path / 'known_hosts'
    empty.write_text('')
    job = _pull_job(sshd, workdir(ext4, 'job-'), client, workdir(ext4, 'backup-') / 'root',
                    ssh_known_hosts=str(empty))
    failed = job.run()
    assert failed.returncode == 1
    assert 'Host key verification failed' in failed.stderr
    assert snapshots(job.dest) == []


def _rsyncs_writing(target):
    out = subprocess.run(['pgrep', '-af', 'rsync'], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if str(target) in line]


@pytest.mark.parametrize('kind', ['ext4', 'xfs'])
def test_killed_pull_publishes_nothing_and_the_next_completes(sshd, kind, ext4, request, workdir):
    """SIGKILL of the run in the middle of the transfer (slowed by bwlimit): rsync dies with it
    (no orphan writing on), nothing is published, and the next run completes an exact copy."""
    fs = request.getfixturevalue(kind)
    client = workdir(ext4, 'client-') / 'data'
    client.mkdir()
    for i in range(8):
        (client / ('f%d' % i)).write_bytes(os.urandom(1 << 20))
    job = _pull_job(sshd, workdir(fs, 'job-'), client, workdir(fs, 'backup-') / 'root', bwlimit=2000)
    run = job.start()
    deadline = time.monotonic() + 30
    written = job.dest / ('.fslinks-mirror' if kind == 'xfs' else '')
    while time.monotonic() < deadline and _used_by(written) < 1 << 20:
        time.sleep(0.1)
    assert _used_by(written) >= 1 << 20, 'the pull did not start writing'
    run.send_signal(signal.SIGKILL)
    run.wait(10)
    deadline = time.monotonic() + 10
    while _rsyncs_writing(job.dest) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _rsyncs_writing(job.dest) == []
    assert snapshots(job.dest) == []
    job.cfg.pop('bwlimit')
    job.write()
    _ok(job.run())
    names = snapshots(job.dest)
    assert len(names) == 1
    assert oracles.rsync_diff(client, job.dest / names[0]) == []
    assert not [p for p in job.dest.iterdir() if p.name.endswith('.partial')]


def test_files_vanishing_during_a_pull_are_a_warning(sshd, xfs, ext4, workdir):
    """A file deleted on the client while the pull runs (rsync exit 24) leaves the snapshot
    without it, published, with a warning in the log, the record and the metrics."""
    client = workdir(ext4, 'client-') / 'data'
    client.mkdir()
    for name in ('f1', 'f2', 'f3'):
        (client / name).write_bytes(os.urandom(1 << 20))
    job = _pull_job(sshd, workdir(xfs, 'job-'), client, workdir(xfs, 'backup-') / 'root', bwlimit=1000)
    run = job.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (job.dest / '.fslinks-mirror' / 'f1').exists():
        time.sleep(0.05)
    (client / 'f3').unlink()        # listed already, not sent yet
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, out + err
    assert 'vanished' in err
    name = snapshots(job.dest)[-1]
    assert sorted(p.name for p in (job.dest / name).iterdir()) == ['f1', 'f2']
    record = _record(job.dest, name)
    assert record['rsync']['exit'] == 24 and 'vanished' in record['rsync']['warnings'][0]
    assert job.metric('warnings') == 1 and job.metric('last_run_status') == 1


def _used_by(path):
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def test_pulled_snapshots_restore_diff_and_du_on_the_server(sshd, xfs, ext4, workdir, tmp_path):
    """restore, diff and du work on the server; restoring "into the live tree" is refused
    (it is on the client) and points at --to."""
    client = workdir(ext4, 'client-') / 'data'
    (client / 'd').mkdir(parents=True)
    (client / 'd' / 'x').write_text('one\n')
    job = _pull_job(sshd, workdir(xfs, 'job-'), client, workdir(xfs, 'backup-') / 'root')
    _ok(job.run())
    time.sleep(1.1)
    (client / 'd' / 'x').write_text('two\n')
    _ok(job.run())
    refused = cli(job.etc, 'restore', job.name, 'd/x')
    assert refused.returncode != 0 and '--to' in refused.stderr
    out = tmp_path / 'restored'
    out.mkdir()
    _ok(cli(job.etc, 'restore', job.name, 'd/x', '--to', out))
    assert (out / 'd' / 'x').read_text() == 'two\n'
    first = snapshots(job.dest)[0]
    _ok(cli(job.etc, 'restore', job.name, '%s/d' % client, '--snapshot', first, '--to', out / 'old'))
    assert (out / 'old' / 'd' / 'x').read_text() == 'one\n'
    diff = _ok(cli(job.etc, 'diff', job.name, '--json'))
    found = json.loads(diff.stdout)
    assert found['modified'] == ['d/x'] and found['added'] == found['deleted'] == []
    live = cli(job.etc, 'diff', job.name, 'latest', 'live')
    assert live.returncode != 0 and 'another host' in live.stderr
    _ok(cli(job.etc, 'du', job.name))


# ---------------------------------------------------------------- the client's key

def test_client_key_allows_only_a_read_only_rsync_of_its_path(sshd, ext4, workdir, tmp_path):
    """What a thief of the server's key could do with it on a client: nothing but a read-only
    rsync of the one path.  No shell, no writes, no other path, no symlink followed out of it,
    no forwarding."""
    tree = trees.make_hostile_tree(workdir(ext4, 'client-') / 'data', outside=workdir(ext4, 'outside-'))
    secret = tree.outside / 'marker'
    sshd.authorize(tree.root)
    remote = sshd.remote(tree.root)
    for command in ('id', 'sh -c id', 'cat /etc/shadow', 'rsync --server -logDtpre.iLsfxCIvu . %s/' % tree.root,
                    'rsync --server --sender -logDtpre.iLsfxCIvu . /etc/'):
        done = sshd.ssh(command)
        assert done.returncode != 0 and 'this key' in done.stderr, (command, done)
        assert 'uid=' not in done.stdout and 'root:' not in done.stdout
    for bad in (['-aL'], ['-a', '--copy-unsafe-links'], ['-a', '--copy-links'], ['-ak'], ['-a', '--copy-dirlinks']):
        dest = tmp_path / ('steal%s' % ''.join(bad).replace('-', '_'))
        done = sshd.rsync(*bad, remote + '/', dest)
        assert done.returncode != 0 and 'is not allowed with this key' in done.stderr, (bad, done.stderr)
        assert not dest.exists() or not any(dest.rglob(secret.name))
    for path in ('/etc/', str(tree.outside) + '/', '%s/links/outside-dir/' % tree.root, '%s/../' % tree.root):
        done = sshd.rsync('-a', 'root@127.0.0.1:%s' % path, tmp_path / 'other')
        assert done.returncode != 0, (path, done.stdout)
        assert not (tmp_path / 'other' / 'marker').exists() and not (tmp_path / 'other' / 'passwd').exists()
    pushed = sshd.rsync('-a', str(tree.root / 'plain.txt'), remote + '/pushed.txt')
    assert pushed.returncode != 0 and not (tree.root / 'pushed.txt').exists()
    forward = sshd.ssh(None, options=('-W', '127.0.0.1:%d' % sshd.port))
    assert forward.returncode != 0 and 'prohibited' in forward.stderr, forward.stderr
    # And what it is for still works, symlinks kept as symlinks.
    good = sshd.rsync('-aHAX', '--numeric-ids', remote + '/', tmp_path / 'good')
    assert good.returncode == 0, good.stderr
    assert os.readlink(tmp_path / 'good' / 'links' / 'outside-dir') == str(tree.outside)
