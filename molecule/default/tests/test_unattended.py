# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Testinfra checks of what lets the jobs run unattended: hooks, failure notices, the sandboxed
service, and the metrics as node_exporter serves them (run by Molecule's verify step)."""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest

# As molecule.yml boots them (bullseye and trixie hold their data in a folder of the ext4 and
# XFS disks).
INIT = {'ext4-host': 'cron', 'xfs-host': 'systemd', 'btrfs-host': 'systemd', 'bullseye-host': 'cron',
        'trixie-host': 'systemd'}
CLI = '/usr/local/bin/fslinks-snapshot'
METRICS_DIR = '/var/lib/node_exporter/textfile_collector'
# The words converge.yml gives the before hook of job `data`, as the hook must receive them.
HOOK_ARGS = ['a b', '$HOME', '100%', ';', 'quote"d', "it's", 'back\\slash', 'two\nlines']
# The job forced to a method on xfs-host, besides `data` (auto: reflink on XFS, btrfs on btrfs).
# Its first snapshot, by the service, copies every file: the copy method's work.
METHOD_JOBS = {'links': 'hardlink'}
# While this file exists, the second before hook of `data` fails (converge.yml).
FAIL_SWITCH = '/var/tmp/fslinks-fail-next-run'
NOTICE = '/var/tmp/notice-data'
NODE_EXPORTER_HOST = 'btrfs-host'
AUTO = {'xfs-host': 'reflink', 'btrfs-host': 'btrfs', 'trixie-host': 'reflink'}
# systemd-analyze security's exposure of the sandboxed service must stay at most this (10 is
# no sandbox at all; docs/security.md has the figures).
MAX_EXPOSURE = 2.0


@pytest.fixture(name='name')
def fixture_name(host):
    return host.backend.get_hostname()


def systemd_only(name):
    if INIT[name] != 'systemd':
        pytest.skip('a systemd host check')


def cron_command(host, job):
    """The command the job's cron entry runs."""
    text = host.file('/etc/cron.d/fslinks-snapshot-%s' % job).content_string
    assert 'MAILTO=root' in text.splitlines()
    line = [ln for ln in text.splitlines() if ln.startswith('@hourly')][0]
    return line.split(' root ', 1)[1]


def start(host, name, job):
    """Run JOB as its scheduler would: the timer's service, or cron's command. Returns the result."""
    if INIT[name] == 'systemd':
        return host.run('systemctl start fslinks-snapshot@%s.service' % job)     # oneshot: waits
    return host.run(cron_command(host, job))


def read_json(host, path):
    return json.loads(host.file(path).content_string)


def snapshots(host, job):
    return json.loads(host.check_output('%s list %s --json' % (CLI, job)))


def metric(host, job, name):
    text = host.file('%s/fslinks_snapshot_%s.prom' % (METRICS_DIR, job)).content_string
    found = re.search(r'^fslinks_snapshot_%s\{job="%s"\} (\S+)$' % (name, re.escape(job)), text, re.M)
    assert found, text
    return float(found.group(1))


# --- hooks -----------------------------------------------------------------------------------

def test_hooks_receive_their_words_and_the_result(host, name):
    host.run('rm -f /var/tmp/hook-before.json /var/tmp/hook-after.json')
    newest = snapshots(host, 'data')[-1]['name'] if snapshots(host, 'data') else None
    result = start(host, name, 'data')
    assert result.rc == 0, result.stdout + result.stderr
    if INIT[name] == 'cron':
        assert result.stdout == '' and result.stderr == ''     # cron mails only failures
    assert read_json(host, '/var/tmp/hook-before.json')['argv'] == HOOK_ARGS
    after = read_json(host, '/var/tmp/hook-after.json')
    assert (after['result'], after['job']) == ('success', 'data')
    assert snapshots(host, 'data')[-1]['name'] != newest
    assert metric(host, 'data', 'last_run_status') == 1
    assert not host.file(NOTICE).exists                         # successes send no notice


def test_a_failing_before_hook_aborts_the_run(host, name):
    """converge.yml's second before hook of `data` fails while FAIL_SWITCH exists."""
    newest = snapshots(host, 'data')[-1]['name']
    last_success = metric(host, 'data', 'last_success_timestamp_seconds')
    host.run('rm -f /var/tmp/hook-after.json %s' % NOTICE)
    host.check_output('touch %s' % FAIL_SWITCH)
    try:
        result = start(host, name, 'data')
    finally:
        host.check_output('rm -f %s' % FAIL_SWITCH)
    assert result.rc != 0
    assert snapshots(host, 'data')[-1]['name'] == newest        # nothing published
    assert metric(host, 'data', 'last_run_status') == 0
    assert metric(host, 'data', 'last_success_timestamp_seconds') == last_success
    after = read_json(host, '/var/tmp/hook-after.json')        # after hooks run all the same
    assert (after['result'], after['job']) == ('failure', 'data')
    if INIT[name] == 'cron':
        # What cron mails to MAILTO: the hook's output and why nothing was made.
        assert 'nothing to freeze here' in result.stdout
        assert 'before hook /bin/sh failed (exit 3); no snapshot made' in result.stdout
    if name == NODE_EXPORTER_HOST:
        scraped = scrape(host)          # a failed run's metrics parse too
        assert re.search(r'^fslinks_snapshot_last_run_status\{job="data"\} 0$', scraped, re.M), scraped


def test_a_failed_run_sends_a_notice(host, name):
    """The notice command (snapshot_jobs_notify_command) got the notice of the run above."""
    notice = host.file(NOTICE)
    for _attempt in range(50):             # systemd starts the OnFailure= unit after the failure
        if notice.exists and 'no snapshot made' in notice.content_string:
            break
        time.sleep(0.2)
    text = notice.content_string
    assert 'before hook /bin/sh failed (exit 3); no snapshot made' in text, text
    if INIT[name] == 'systemd':
        assert 'fslinks-snapshot@data.service' in text              # the status and journal of the run
        assert host.run('systemctl is-failed fslinks-snapshot-notify@data.service').stdout.strip() != 'failed'


# --- the sandboxed service -------------------------------------------------------------------

@pytest.mark.parametrize('job', ['data'] + sorted(METHOD_JOBS))
def test_every_method_runs_in_the_sandbox(host, name, job):
    systemd_only(name)
    if job in METHOD_JOBS and name != 'xfs-host':
        pytest.skip('forced methods run on xfs-host')
    method = METHOD_JOBS.get(job) or AUTO[name]
    prop = host.check_output('systemctl show -p ProtectSystem -p NoNewPrivileges -p PrivateDevices '
                             '-p CapabilityBoundingSet fslinks-snapshot@%s.service' % job)
    assert 'ProtectSystem=strict' in prop and 'NoNewPrivileges=yes' in prop and 'PrivateDevices=yes' in prop
    assert ('cap_sys_admin' in prop) == (method == 'btrfs')
    assert 'cap_mknod' not in prop and 'cap_setuid' not in prop
    since = host.check_output('date +%s.%N')
    assert start(host, name, job).rc == 0
    log = host.check_output("journalctl -u fslinks-snapshot@%s.service --since @%s --no-pager -o cat" % (job, since))
    assert ' by %s ' % method in log, log
    latest = '%s/latest' % snapshots(host, job)[-1]['path'].rsplit('/', 1)[0]
    # The whole tree as it is in src (modes, owners, the set-uid bit, xattrs, ACLs), and another
    # owner's read-only folder, which pruning removes from older snapshots, is kept.
    assert host.check_output('stat -c %%u:%%a %s/setuid.bin %s/alice' % (latest, latest)).split() == ['1234:4755', '1234:555']
    assert host.check_output('rsync -aHAXn --checksum --itemize-changes /data/src/ %s/' % latest) == ''


def test_sandbox_exposure(host, name):
    systemd_only(name)
    out = host.check_output('systemd-analyze security --no-pager fslinks-snapshot@data.service')
    exposure = float(re.search(r'Overall exposure level for \S+: ([0-9.]+)', out).group(1))
    assert exposure <= MAX_EXPOSURE, out


# --- metrics through node_exporter -----------------------------------------------------------

def scrape(host):
    """node_exporter's /metrics (started once per host: a systemd transient unit), checked for
    textfile errors."""
    if host.run('systemctl is-active node-exporter-test.service').rc != 0:
        host.check_output('systemd-run --unit node-exporter-test /usr/local/bin/prometheus-node-exporter '
                          '--web.listen-address=127.0.0.1:9100 --collector.disable-defaults --collector.textfile '
                          '--collector.textfile.directory=%s' % METRICS_DIR)
    fetch = ("python3 -c 'import urllib.request; "
             "print(urllib.request.urlopen(\"http://127.0.0.1:9100/metrics\").read().decode())'")
    for _attempt in range(50):
        result = host.run(fetch)
        if result.rc == 0:
            break
        time.sleep(0.2)
    assert result.rc == 0, result.stderr
    text = result.stdout
    assert re.search(r'^node_textfile_scrape_error 0$', text, re.M), text
    assert re.search(r'^node_textfile_mtime_seconds\{file="[^"]*fslinks_snapshot_data\.prom"\} ', text, re.M), text
    return text


def test_node_exporter_serves_our_metrics(host, name):
    if name != NODE_EXPORTER_HOST:
        pytest.skip('node_exporter runs on %s' % NODE_EXPORTER_HOST)
    text = scrape(host)
    assert re.search(r'^fslinks_snapshot_last_run_status\{job="data"\} 1$', text, re.M), text
    assert re.search(r'^fslinks_snapshot_snapshots_kept\{job="data"\} 3$', text, re.M), text
    host.run('systemctl stop node-exporter-test.service')


@pytest.mark.parametrize('key', ['before', 'after'])
def test_job_configs_take_no_hooks(host, key):
    """Hooks come from Ansible only: a job config naming a command is refused (docs/security.md)."""
    cfg = json.loads(host.file('/etc/fslinks-snapshots/data.json').content_string)
    cfg[key] = [['/bin/sh', '-c', 'id > /tmp/pwned']]
    host.check_output('echo %s > /tmp/hooked.json' % shlex.quote(json.dumps(cfg)))
    result = host.run('%s validate /tmp/hooked.json' % CLI)
    assert result.rc == 64
    assert "unknown key '%s'" % key in result.stderr
