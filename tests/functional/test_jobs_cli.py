# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The on-host CLI ``fslinks-snapshot`` (module_utils/_jobs.py): run, list, prune, check,
validate, metrics and exit codes, on a real XFS loop filesystem, in a subprocess as the
timers run it."""

import fcntl
import json
import os
import subprocess
import sys
import time

import pytest

from helpers import COLLECTIONS

from ansible_collections.fslinks.snapshots.plugins.module_utils import _jobs

pytestmark = pytest.mark.loopfs

CLI = [sys.executable, '-c',
       'import sys; sys.path.insert(0, %r)\n'
       'from ansible_collections.fslinks.snapshots.plugins.module_utils._jobs import main\n'
       'sys.exit(main())' % str(COLLECTIONS)]


@pytest.fixture
def job(xfs, workdir):
    """A job config in its own config dir, with a small source tree."""
    w = workdir(xfs)
    src = w / 'src'
    (src / 'dir').mkdir(parents=True)
    (src / 'dir' / 'secret-name.txt').write_text('payload\n')
    (src / 'plain').write_bytes(b'x' * 10000)
    cfg = {'name': 'data', 'src': str(src), 'dest': str(w / 'snaps'), 'keep': {'last': 2},
           'metrics_dir': str(w / 'metrics'), 'max_age': 3600, 'schedule': 'hourly'}
    (w / 'etc').mkdir()
    (w / 'metrics').mkdir()
    write_config(w, cfg)
    assert cli(w, 'init', 'data').returncode == 0
    return w, cfg


def write_config(w, cfg):
    (w / 'etc' / (cfg['name'] + '.json')).write_text(json.dumps(cfg))


def cli(w, *args):
    return subprocess.run(CLI + ['--config-dir', str(w / 'etc')] + list(args),
                          capture_output=True, text=True, timeout=120, check=False)


def metrics(w, name='data'):
    out = {}
    for line in (w / 'metrics' / ('fslinks_snapshot_%s.prom' % name)).read_text().splitlines():
        if not line.startswith('#'):
            key, value = line.rsplit(' ', 1)
            out[key] = float(value)
    return out


def test_run_list_check_and_metrics(job):
    w, cfg = job
    before = cli(w, 'check', 'data')
    assert before.returncode == _jobs.EX_STALE and 'no complete snapshot' in before.stdout
    for _round in range(3):
        done = cli(w, 'run', 'data')
        assert done.returncode == 0, done.stderr
        assert 'by reflink' in done.stdout
    listed = json.loads(cli(w, 'list', 'data', '--json').stdout)
    assert len(listed) == 2, listed                         # keep last 2
    on_disk = sorted(n for n in os.listdir(cfg['dest']) if n.startswith('20') and not n.endswith('.json'))
    assert [s['name'] for s in listed] == on_disk
    assert os.readlink(os.path.join(cfg['dest'], 'latest')) == listed[-1]['name']
    table = cli(w, 'list', 'data').stdout.splitlines()
    assert table[0].split()[:2] == ['NAME', 'TIME'] and len(table) == 3
    assert cli(w, 'check', 'data').returncode == 0
    m = metrics(w)
    assert m['fslinks_snapshot_last_run_status{job="data"}'] == 1
    assert abs(m['fslinks_snapshot_last_success_timestamp_seconds{job="data"}'] - time.time()) < 60
    assert m['fslinks_snapshot_snapshots_kept{job="data"}'] == 2
    assert m['fslinks_snapshot_files{job="data",how="reflinked"}'] == 2
    assert m['fslinks_snapshot_bytes{job="data",how="cloned"}'] == 10008
    # Logs and metrics carry counts, never file names.
    text = done.stdout + done.stderr + (w / 'metrics' / 'fslinks_snapshot_data.prom').read_text()
    assert 'secret-name' not in text


def test_failed_run_keeps_last_success_and_snapshots(job):
    w, cfg = job
    assert cli(w, 'run', 'data').returncode == 0
    success = metrics(w)['fslinks_snapshot_last_success_timestamp_seconds{job="data"}']
    os.rename(cfg['src'], cfg['src'] + '.moved')
    failed = cli(w, 'run', 'data')
    assert failed.returncode == _jobs.EX_FAIL
    assert 'src' in failed.stderr and 'no such file or directory' in failed.stderr, failed.stderr
    m = metrics(w)
    assert m['fslinks_snapshot_last_run_status{job="data"}'] == 0
    assert m['fslinks_snapshot_last_success_timestamp_seconds{job="data"}'] == success
    assert m['fslinks_snapshot_snapshots_kept{job="data"}'] == 1
    assert len(json.loads(cli(w, 'list', 'data', '--json').stdout)) == 1
    # check: the newest snapshot is fresh, but the run after it failed (exit 3, and why).
    checked = cli(w, 'check', 'data')
    assert checked.returncode == _jobs.EX_WARN, checked.stdout + checked.stderr
    assert 'warning: job data: the last run (started ' in checked.stdout and 'no such file' in checked.stdout
    os.rename(cfg['src'] + '.moved', cfg['src'])
    assert cli(w, 'run', 'data').returncode == 0
    assert cli(w, 'check', 'data').returncode == _jobs.EX_OK
    # A before hook that failed (the role's record-failure) is a failed run too.
    assert cli(w, 'record-failure', 'data', 'before hook exited 1').returncode == 0
    hooked = cli(w, 'check', 'data')
    assert hooked.returncode == _jobs.EX_WARN and 'failed: before hook exited 1' in hooked.stdout


def test_busy_job_exits_75(job):
    w, cfg = job
    fd = os.open(os.path.join(cfg['dest'], '.fslinks-snapshot.lock'), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        busy = cli(w, 'run', 'data')
    finally:
        os.close(fd)
    assert busy.returncode == _jobs.EX_BUSY
    assert 'another snapshot of %s is running' % cfg['dest'] in busy.stderr
    assert cli(w, 'run', 'data').returncode == 0               # and runs once released


def test_prune_makes_no_snapshot(job):
    w, cfg = job
    cfg['keep'] = {}
    write_config(w, cfg)
    for _round in range(3):
        assert cli(w, 'run', 'data').returncode == 0
    cfg['keep'] = {'last': 1}
    write_config(w, cfg)
    pruned = cli(w, 'prune', 'data')
    assert pruned.returncode == 0 and 'pruned 2, kept 1' in pruned.stdout
    assert len(json.loads(cli(w, 'list', 'data', '--json').stdout)) == 1


def test_check_reports_stale(job):
    w, cfg = job
    assert cli(w, 'run', 'data').returncode == 0
    loaded = _jobs.load_job('data', str(w / 'etc'))
    ok, message = _jobs.check_job(loaded, now=time.time() + 7200)
    assert not ok and 'max_age 1h00m' in message and '2h00m old' in message


@pytest.mark.parametrize('change, words', [
    ({'src': 'relative/path'}, 'src must be an absolute path'),
    ({'color': 'blue'}, "unknown key 'color'"),
    ({'method': 'zfs'}, 'method must be one of'),
    ({'keep': {'dayly': 3}}, "unknown keep rule 'dayly'"),
    ({'keep': {'last': -1}}, 'negative'),
    ({'name': '../etc'}, 'job name'),
    ({'max_age': 'soon'}, 'max_age must be a int'),
])
def test_validate_rejects_bad_configs(job, change, words):
    w, cfg = job
    bad = dict(cfg, **change)
    path = w / 'candidate.json'
    path.write_text(json.dumps(bad))
    out = cli(w, 'validate', str(path))
    assert out.returncode == _jobs.EX_USAGE and words in out.stderr, out.stderr
    good = w / 'good.json'
    good.write_text(json.dumps(cfg))
    assert cli(w, 'validate', str(good)).returncode == 0


def test_missing_root_is_not_recreated(job):
    """An unmounted disk must not start a new chain on the parent filesystem."""
    w, cfg = job
    assert cli(w, 'run', 'data').returncode == 0
    os.rename(cfg['dest'], cfg['dest'] + '.away')          # as if its filesystem were not mounted
    gone = cli(w, 'run', 'data')
    assert gone.returncode == _jobs.EX_FAIL and 'is missing or not initialized' in gone.stderr, gone.stderr
    assert not os.path.exists(cfg['dest'])
    os.mkdir(cfg['dest'])                                    # an empty mount point dir: still refused
    assert cli(w, 'run', 'data').returncode == _jobs.EX_FAIL
    assert os.listdir(cfg['dest']) == []
