# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""on_error: what an entry that cannot be read does to a run.

skip (the default): the snapshot is published without it, its record lists it with the reason
(the first 100, all counted), the CLI exits 3, the metrics count it, `check` warns, and the
module returns it in `skipped_entries` (Ansible owns a result's `skipped`) with a warning.  fail: today's behaviour, the run fails and
publishes nothing.  Made real, no mocks: a job running as nobody over files only root may read,
and an I/O error from btrfs reading a file whose data no longer matches its checksum."""

import json
import os
import subprocess

import pytest

from helpers import ansible_run, prereq
from helpers.processes import EX_FAIL, Job, cli_argv
from helpers.snapshots import latest, partials, snapshot_names

from ansible_collections.fslinks.snapshots.plugins.module_utils import _jobs
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import LinkError
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run
from ansible_collections.fslinks.snapshots.plugins.module_utils._walk import SKIPPED_MAX

NOBODY = 65534
QUIET = {'INVOCATION_ID': 'fslinks-test'}       # the CLI logs to syslog unless systemd runs it


def _as_nobody(job, *args):
    prereq.need('setpriv')
    return subprocess.run(['setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY, '--clear-groups',
                           '--inh-caps=-all'] + cli_argv(job.etc, *args), capture_output=True, text=True,
                          check=False, cwd='/', timeout=300, env=dict(os.environ, **QUIET))


def _chown_tree(root, uid):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + ['']:
            os.lchown(os.path.join(dirpath, name) if name else dirpath, uid, uid)


def _record(dest, name):
    return json.loads((dest / (name + '.json')).read_text())


@pytest.fixture
def nobody_work(loop_workdir, ext4, workdir):
    """A directory on the shared test ext4 that nobody can reach (the loop mounts' directory is
    root's: traversable for the test only)."""
    mode = os.stat(loop_workdir).st_mode & 0o7777
    os.chmod(loop_workdir, 0o711)
    try:
        work = workdir(ext4)
        os.chmod(work, 0o755)
        yield work
    finally:
        os.chmod(loop_workdir, mode)


def test_unreadable_entries_under_a_non_root_job(nobody_work):
    work = nobody_work
    src = work / 'src'
    (src / 'd').mkdir(parents=True)
    (src / 'a').write_text('a\n')
    (src / 'd' / 'b').write_text('b\n')
    job = Job(work, src, work / 'snaps', keep={'last': 5})
    _chown_tree(work, NOBODY)
    assert _as_nobody(job, 'run', 'data').returncode == 0
    # Root puts a file and a directory into nobody's tree that nobody may not read.
    (src / 'd' / 'root-only').write_text('secret\n')
    os.chmod(src / 'd' / 'root-only', 0o600)
    (src / 'private').mkdir(mode=0o700)
    (src / 'private' / 'inner').write_text('x\n')
    done = _as_nobody(job, 'run', 'data')
    assert done.returncode == _jobs.EX_WARN == 3, done
    # Counted in the log, never named there (the record names them).
    assert 'skipped 2 entries' in done.stderr and 'root-only' not in done.stdout + done.stderr, done
    names = snapshot_names(job.dest)
    assert len(names) == 2 and latest(job.dest) == names[-1] and partials(job.dest) == []
    new = job.dest / names[-1]
    assert sorted(os.listdir(new)) == ['a', 'd'] and os.listdir(new / 'd') == ['b']
    record = _record(job.dest, names[-1])
    assert record['stats']['skipped'] == 2 and record['stats']['files'] == 2
    assert sorted(s['path'] for s in record['skipped']) == ['d/root-only', 'private']
    assert all('permission denied' in s['error'] for s in record['skipped'])
    assert job.metric('skipped_entries') == 2 and job.metric('last_run_status') == 1
    check = _as_nobody(job, 'check', 'data')
    assert check.returncode == _jobs.EX_WARN and 'skipped 2 entries' in check.stdout, check

    # Many: the record names the first SKIPPED_MAX, the count is all of them (several workers).
    (src / 'many').mkdir()
    os.chown(src / 'many', NOBODY, NOBODY)
    for i in range(SKIPPED_MAX + 30):
        path = src / 'many' / ('m%03d' % i)
        path.write_text('m\n')
        os.chmod(path, 0o600)
    done = _as_nobody(job, 'run', 'data')
    assert done.returncode == _jobs.EX_WARN, done
    record = _record(job.dest, snapshot_names(job.dest)[-1])
    assert record['stats']['skipped'] == SKIPPED_MAX + 32 and len(record['skipped']) == SKIPPED_MAX
    assert job.metric('skipped_entries') == SKIPPED_MAX + 32

    # on_error: fail is today's behaviour: exit 1 naming the entry, nothing published.
    job.cfg['on_error'] = 'fail'
    job.write()
    before = snapshot_names(job.dest)
    done = _as_nobody(job, 'run', 'data')
    assert done.returncode == EX_FAIL and 'permission denied' in done.stderr, done
    assert snapshot_names(job.dest) == before and latest(job.dest) == before[-1] and partials(job.dest) == []
    assert job.metric('last_run_status') == 0

    # Readable again: a clean run, and check is content.
    subprocess.run(['rm', '-rf', str(src / 'many'), str(src / 'private'), str(src / 'd' / 'root-only')], check=True)
    job.cfg['on_error'] = 'skip'
    job.write()
    assert _as_nobody(job, 'run', 'data').returncode == 0
    assert _as_nobody(job, 'check', 'data').returncode == 0
    assert job.metric('skipped_entries') == 0

    # The snapshot's root itself is never skipped: unreadable src fails the run.
    os.chmod(src, 0o300)
    before = snapshot_names(job.dest)
    done = _as_nobody(job, 'run', 'data')
    assert done.returncode == EX_FAIL and 'permission denied' in done.stderr, done
    assert snapshot_names(job.dest) == before and partials(job.dest) == []
    os.chmod(src, 0o755)


def _loop_device(mnt):
    return subprocess.run(['findmnt', '-n', '-o', 'SOURCE', str(mnt)], capture_output=True, text=True,
                          check=True).stdout.strip()


def _corrupt(device, needle):
    """Flip a byte of the one on-disk copy of NEEDLE (the filesystem is not mounted)."""
    chunk = 4 << 20
    with open(device, 'r+b') as disk:
        offset = 0
        while True:
            disk.seek(offset)
            data = disk.read(chunk + len(needle))
            if not data:
                raise AssertionError('pattern not found on %s' % device)
            at = data.find(needle)
            if at >= 0:
                disk.seek(offset + at)
                disk.write(bytes([needle[0] ^ 0xff]))
                disk.flush()
                os.fsync(disk.fileno())
                return
            offset += chunk


@pytest.fixture
def eio_src(loop_fs):
    """src on btrfs, with a file whose data block was changed behind btrfs's back: reading it
    fails its checksum, which the kernel returns as EIO (device-mapper's error target is not in
    this kernel; a checksum failure is the same errno from the same read path)."""
    mnt = loop_fs('btrfs', '128M')
    src = mnt / 'src'
    (src / 'sub').mkdir(parents=True)
    (src / 'good').write_bytes(b'g' * 10000)
    (src / 'sub' / 'fine').write_bytes(b'f' * 10000)
    needle = b''.join(b'fslinks-eio-%08d;' % i for i in range(8192))     # 160 KiB, not inline
    (src / 'bad').write_bytes(needle)
    device = _loop_device(mnt)
    os.sync()
    subprocess.run(['umount', str(mnt)], check=True)
    _corrupt(device, needle[:4096])
    subprocess.run(['mount', '-t', 'btrfs', device, str(mnt)], check=True)
    try:
        (src / 'bad').read_bytes()
    except OSError as exc:
        assert exc.errno == 5, exc
    else:
        pytest.fail('reading a file with a bad checksum did not fail')
    return src


def test_io_error_is_skipped_by_the_module_and_fails_with_on_error_fail(eio_src, ext4, workdir):
    dest = workdir(ext4) / 'snaps'
    res = ansible_run.run_adhoc('hardlink_snapshot', {'src': str(eio_src), 'dest': str(dest)})
    assert not res['failed'] and res['changed'], res
    assert len(res['skipped_entries']) == 1 and res['skipped_entries'][0]['path'] == 'bad', res
    assert 'input/output error' in res['skipped_entries'][0]['error'].lower(), res['skipped_entries']
    assert res['stats']['skipped'] == 1 and res['stats']['files'] == 2
    assert any('skipped 1 entries' in w for w in res['warnings']), res.get('warnings')
    name = os.path.basename(res['snapshot'])
    assert sorted(os.listdir(dest / name)) == ['good', 'sub'] and (dest / name / 'sub' / 'fine').exists()
    assert _record(dest, name)['skipped'] == res['skipped_entries']

    res = ansible_run.run_adhoc('hardlink_snapshot', {'src': str(eio_src), 'dest': str(dest), 'on_error': 'fail'})
    assert res['failed'] and 'bad' in res['msg'] and 'input/output error' in res['msg'].lower(), res
    assert res['errno'] == 5
    assert snapshot_names(dest) == [name] and partials(dest) == []


def test_enospc_is_never_skipped(eio_src, loop_fs):
    """Out of space on dest midway is the destination's failure, not an entry's: the run fails
    whatever on_error says, removes what it wrote, and the earlier snapshot stays."""
    small = loop_fs('ext4', '16M')
    dest = small / 'snaps'
    first = run(Request(str(eio_src), str(dest)))           # skips bad, as above
    assert first['stats']['skipped'] == 1
    (eio_src / 'sub' / 'large').write_bytes(b'n' * (24 << 20))
    with pytest.raises(LinkError) as err:
        run(Request(str(eio_src), str(dest), on_error='skip'))
    assert err.value.errno == 28 and 'no space left' in str(err.value)
    assert snapshot_names(dest) == [os.path.basename(first['snapshot'])] and partials(dest) == []
