# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Testinfra checks of the role on each host (run by Molecule's verify step)."""

from __future__ import annotations

import json

import pytest

# Each host's data disk (molecule.yml `fs`), what runs as PID 1 there (`init`), and the
# snapshot method the job must pick on that disk.
FS = {'ext4-host': 'ext4', 'xfs-host': 'xfs', 'btrfs-host': 'btrfs', 'bullseye-host': 'ext4', 'trixie-host': 'xfs'}
INIT = {'ext4-host': 'cron', 'xfs-host': 'systemd', 'btrfs-host': 'systemd', 'bullseye-host': 'cron', 'trixie-host': 'systemd'}
# The host's /usr/bin/python3 (the README names these as run in Molecule).
PYTHON = {'ext4-host': '3.11', 'xfs-host': '3.11', 'btrfs-host': '3.11', 'bullseye-host': '3.9', 'trixie-host': '3.13'}
METHOD = {'ext4': 'hardlink', 'xfs': 'reflink', 'btrfs': 'btrfs'}

CLI = '/usr/local/bin/fslinks-snapshot'
JOB = 'data'
SRC = '/data/src'
DEST = '/data/snapshots'
CONFIG = '/etc/fslinks-snapshots/%s.json' % JOB
METRICS = '/var/lib/node_exporter/textfile_collector/fslinks_snapshot_%s.prom' % JOB
RUNS = 5
KEEP_LAST = 3


@pytest.fixture(name='name')
def fixture_name(host):
    """The inventory name of the host under test."""
    return host.backend.get_hostname()


def snapshots(host):
    """The job's complete snapshots, oldest first, as the CLI lists them."""
    return json.loads(host.check_output('%s list %s --json' % (CLI, JOB)))


def inode(host, path):
    return int(host.check_output('stat -c %%i %s' % path))


def shares_extents(host, path):
    """True if filefrag reports an extent of PATH as shared with another file."""
    return 'shared' in host.check_output('filefrag -v %s' % path)


@pytest.fixture(name='runs', scope='module')
def fixture_runs(host):
    """Run the job RUNS times on this host, changing one file between runs (the tests below
    share this: pytest gives each host its own module-scoped fixture). Returns the CLI output."""
    outputs = []
    for i in range(RUNS):
        host.check_output('echo "run %d" >> %s/changing.txt' % (i, SRC))
        result = host.run('%s run %s' % (CLI, JOB))
        assert result.rc == 0, result.stderr
        outputs.append(result.stdout)
    return outputs


# --- deployment ------------------------------------------------------------------------------

def test_data_disk(host, name):
    assert host.mount_point('/data').filesystem == FS[name]
    # On btrfs, src is a subvolume (its root directory has inode 256), so `auto` picks btrfs.
    assert (inode(host, SRC) == 256) == (FS[name] == 'btrfs')


def test_host_python(host, name):
    version = host.check_output("/usr/bin/python3 -c 'import platform; print(platform.python_version())'")
    assert version.rsplit('.', 1)[0] == PYTHON[name], version
    # The CLI runs the Python that the role put in its shebang.
    assert host.file(CLI).content_string.startswith('#!/usr/bin/python3\n')


def test_cli_installed(host):
    cli = host.file(CLI)
    assert cli.is_file
    assert cli.mode & 0o111
    host.check_output('%s --help' % CLI)


def test_job_config(host):
    cfg = json.loads(host.file(CONFIG).content_string)
    assert cfg['name'] == JOB
    assert (cfg['src'], cfg['dest']) == (SRC, DEST)
    assert cfg['keep'] == {'last': KEEP_LAST}
    assert cfg['schedule'] == 'hourly'


def test_scheduled(host, name):
    cron_file = host.file('/etc/cron.d/fslinks-snapshot-%s' % JOB)
    if INIT[name] == 'systemd':
        assert host.run('systemctl is-active fslinks-snapshot@%s.timer' % JOB).stdout.strip() == 'active'
        assert host.run('systemctl is-enabled fslinks-snapshot@%s.timer' % JOB).stdout.strip() == 'enabled'
        assert not cron_file.exists
    else:
        assert host.file('/proc/1/comm').content_string.strip() == 'cron'
        assert cron_file.exists
        assert cron_file.mode == 0o644
        # The entry runs the job's root-owned wrapper (hooks, output only on failure), which runs the CLI.
        wrapper = host.file('/usr/local/lib/fslinks-snapshots/cron-%s' % JOB)
        assert ' root %s\n' % wrapper.path in cron_file.content_string
        assert (wrapper.user, wrapper.mode) == ('root', 0o755)
        assert '%s ' % CLI in wrapper.content_string and ' run ' in wrapper.content_string


def test_list_json_before_any_run(host):
    # Before the runs below (module order): a JSON list, empty or not.
    assert isinstance(snapshots(host), list)


# --- runs ----------------------------------------------------------------------------------------

def test_runs_use_the_best_method(runs, name):
    for out in runs:
        assert ' by %s ' % METHOD[FS[name]] in out, out


def test_retention_keeps_last_three(host, runs):
    snaps = snapshots(host)
    assert len(runs) == RUNS
    assert len(snaps) == KEEP_LAST
    assert host.file(DEST + '/latest').linked_to == snaps[-1]['path']


def test_newest_snapshot_equals_source(host, runs):
    assert runs
    out = host.check_output('rsync -aHAXn --checksum --itemize-changes %s/ %s/latest/' % (SRC, DEST))
    assert out == ''


def test_snapshot_method_on_disk(host, name, runs):
    assert runs
    older, newest = [s['path'] for s in snapshots(host)[-2:]]
    fs = FS[name]
    if fs == 'btrfs':
        # A read-only subvolume snapshot (its root is inode 256).
        assert inode(host, newest) == 256
        assert host.check_output('btrfs property get -ts %s ro' % newest) == 'ro=true'
    elif fs == 'xfs':
        # Reflinks: own inodes, extents shared with the source.
        assert inode(host, newest + '/stable.bin') != inode(host, SRC + '/stable.bin')
        assert shares_extents(host, newest + '/stable.bin')
    else:
        # Hard links to the previous snapshot for unchanged files, a new file for the changed one.
        assert inode(host, newest + '/stable.bin') == inode(host, older + '/stable.bin')
        assert inode(host, newest + '/docs/readme.txt') == inode(host, older + '/docs/readme.txt')
        assert inode(host, newest + '/changing.txt') != inode(host, older + '/changing.txt')
        assert inode(host, newest + '/stable.bin') != inode(host, SRC + '/stable.bin')


def test_metrics_written(host, runs):
    assert runs
    metrics = host.file(METRICS)
    assert metrics.is_file
    text = metrics.content_string
    assert 'fslinks_snapshot_last_run_status{job="%s"} 1' % JOB in text
    assert 'fslinks_snapshot_snapshots_kept{job="%s"} %d' % (JOB, KEEP_LAST) in text
    assert 'fslinks_snapshot_last_success_timestamp_seconds{job="%s"}' % JOB in text


def test_check_reports_fresh(host, runs):
    assert runs
    assert host.run('%s check %s' % (CLI, JOB)).rc == 0


def test_prune_keeps_last_three(host, runs):
    assert runs
    host.check_output('%s prune %s' % (CLI, JOB))
    assert len(snapshots(host)) == KEEP_LAST


def test_scheduler_runs_the_job(host, name, runs):
    """What the timer (systemd) or cron starts really makes a snapshot, and logs it."""
    assert runs
    before = snapshots(host)[-1]['name']
    if INIT[name] == 'systemd':
        host.check_output('systemctl start fslinks-snapshot@%s.service' % JOB)      # oneshot: waits
        log = host.check_output('journalctl -u fslinks-snapshot@%s.service --no-pager -o cat' % JOB)
        assert 'job %s: snapshot' % JOB in log, log
    else:
        line = [ln for ln in host.file('/etc/cron.d/fslinks-snapshot-%s' % JOB).content_string.splitlines()
                if ln.startswith('@hourly')][0]
        host.check_output(line.split(' root ', 1)[1])                 # the command cron would run
    assert snapshots(host)[-1]['name'] != before
    assert host.run('%s check %s' % (CLI, JOB)).rc == 0
