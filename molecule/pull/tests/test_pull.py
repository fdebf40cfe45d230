# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pulls from one playbook (molecule/pull): what the role set up on the server and the clients,
the trust it gives the server's key (a read-only rsync of one path, from the server only, and
nothing else), and pulled snapshots on XFS, ext4 and btrfs roots: equal to the client's tree,
costing about the changed bytes, failing cleanly when the client is down or the run is killed.

The tests run in file order and build on each other (first pulls, then a change, then failures)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time

import pytest

from conftest import CLI, JOBS, KEY, KNOWN_HOSTS, SRC, SSH, on_this_machine, rsync_e, ssh

SENTINEL = 'OUTSIDE-SENTINEL'
METRICS = '/var/lib/node_exporter/textfile_collector/fslinks_snapshot_%s.prom'
MIB = 1 << 20


def snapshots(server, job):
    return json.loads(server.check_output('%s list %s --json' % (CLI, job)))


def run(server, job):
    return server.run('%s run %s' % (CLI, job))


def used_bytes(host, path):
    host.check_output('sync -f %s' % path)
    blocks, free, size = host.check_output("stat -f -c '%%b %%f %%S' %s" % path).split()
    return (int(blocks) - int(free)) * int(size)


def oracle(local, client, snapshot_path):
    """rsync -aHAX --numeric-ids --checksum, dry run, between the client's src and a snapshot on the
    server, here (both are bind mounts of this machine's loop filesystems): the differences.
    trusted.SGI_ACL_*: how XFS shows root the ACLs that rsync -A already compares."""
    src = on_this_machine(local, client, SRC)
    dst = on_this_machine(local, 'server', snapshot_path)
    out = subprocess.run(
        ['rsync', '-aHAXn', '--numeric-ids', '--checksum', '--delete', '--itemize-changes',
         '--filter=-x trusted.SGI_ACL_*', src + '/', dst + '/'],
        check=True, capture_output=True).stdout
    return out.decode('utf-8', 'backslashreplace').splitlines()


def chain_bytes(server, job):
    return json.loads(server.check_output('%s du %s --json' % (CLI, job)))['total_bytes']


def metric(server, job, name):
    text = server.file(METRICS % job).content_string
    m = re.search(r'^%s\{job="%s"\} (\S+)$' % (name, re.escape(job)), text, re.M)
    assert m, '%s missing from %s' % (name, text)
    return float(m.group(1))


# --- what the role set up ------------------------------------------------------------------

def test_server_key_is_private_and_ed25519(server):
    key = server.file(KEY)
    assert key.is_file and key.user == 'root' and key.mode == 0o600
    assert server.file(KEY).content_string.startswith('-----BEGIN OPENSSH PRIVATE KEY-----')
    assert server.file(KEY + '.pub').content_string.startswith('ssh-ed25519 ')
    assert server.file(KEY + '.pub').mode == 0o644
    assert server.file(os.path.dirname(KEY)).mode == 0o700


def test_known_hosts_holds_the_keys_read_on_the_clients(server, clients):
    lines = server.file(KNOWN_HOSTS).content_string.splitlines()
    keys = dict((name, ' '.join(c.file('/etc/ssh/ssh_host_ed25519_key.pub').content_string.split()[:2]))
                for name, c in clients.items())
    # Each container made its own host key at boot (the image holds none).
    assert keys['client1'] != keys['client2']
    assert sorted(lines) == sorted(['client1 ' + keys['client1'], '[client2]:2222 ' + keys['client2']])
    assert server.file(KNOWN_HOSTS).mode == 0o600


def test_each_client_authorizes_the_server_key_for_one_read_only_path(server, clients):
    pub = server.file(KEY + '.pub').content_string.split()[1]
    address = server.check_output('hostname -I').split()
    assert len(address) == 1, address      # the run's internal network only
    for name, client in clients.items():
        entries = [line for line in client.file('/root/.ssh/authorized_keys').content_string.splitlines()
                   if line.strip() and not line.startswith('#')]
        assert entries == ['command="%s serve /data/src",restrict,from="%s" ssh-ed25519 %s '
                           'fslinks-snapshots pull by server' % (CLI, address[0], pub)], name
        assert client.file('/root/.ssh').mode == 0o700
        assert client.file('/root/.ssh/authorized_keys').mode == 0o600


def test_the_clients_hold_no_key_to_the_server(server, clients):
    """Pull model: nothing on a client opens the server."""
    assert not server.file('/root/.ssh/authorized_keys').exists
    for client in clients.values():
        assert client.check_output('ls -A /root/.ssh') == 'authorized_keys'
        assert client.run('ls /etc/fslinks-snapshots/ssh').rc != 0


def test_clients_have_rsync_rrsync_and_the_cli(clients):
    for client in clients.values():
        assert client.run('command -v rrsync').rc == 0
        assert client.file(CLI).is_file and client.file(CLI).mode == 0o755
        assert client.file('/usr/local/lib/fslinks-snapshots/fslinks_snapshots/_jobs.py').is_file


def test_job_configs_carry_the_ssh_options(server):
    for job, (client, dest, _fs) in JOBS.items():
        cfg = json.loads(server.file('/etc/fslinks-snapshots/%s.json' % job).content_string)
        assert cfg['src'].endswith('%s:/data/src' % client) and cfg['dest'] == dest
        assert cfg['ssh_key'] == KEY and cfg['ssh_known_hosts'] == KNOWN_HOSTS
        assert (cfg['ssh_port'], cfg['bwlimit']) == ((2222, 4000) if job == 'c2' else (None, 0))


def test_pulled_jobs_may_use_the_network_in_their_sandbox(server):
    dropin = server.file('/etc/systemd/system/fslinks-snapshot@c1-xfs.service.d/job.conf').content_string
    assert 'PrivateNetwork=' not in dropin
    assert 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' in dropin
    assert 'After=network-online.target' in dropin
    assert 'ProtectSystem=strict' in dropin


def test_the_test_network_leads_nowhere_else(server):
    out = server.run("python3 -c \"import socket; socket.create_connection(('192.0.2.1', 22), timeout=3)\"")
    assert out.rc != 0
    assert 'unreachable' in out.stderr or 'timed out' in out.stderr, out.stderr


# --- what the server's key can do on a client ---------------------------------------------

def test_the_key_reads_its_path(server):
    """The control for the refusals below: the same key and options do read the job's path."""
    server.check_output('rm -rf /tmp/allowed')
    out = server.run('rsync -a -e %s client1:%s/docs/ /tmp/allowed/' % (rsync_e('client1'), SRC))
    assert out.rc == 0, out.stderr
    assert server.file('/tmp/allowed/readme.txt').content_string.startswith('readme of client1')


@pytest.mark.parametrize('command', ['id', 'sh -c id', '/bin/bash -i', 'cat /etc/shadow',
                                     'rsync --server -logDtpre.iLsfxC . /data/src/',
                                     'rsync --server --sender -logDtpre.iLsfxC . /etc/',
                                     'rsync --server --sender -vlogDtpre.iLsfxC . /data/src/; id'])
def test_the_key_runs_no_shell_and_nothing_but_a_read_of_its_path(server, command):
    out = server.run(ssh('client1', "'%s'" % command))
    assert out.rc != 0
    assert 'uid=' not in out.stdout and 'root:' not in out.stdout


def test_the_key_gets_no_login_shell(server):
    out = server.run(ssh('client1') + ' </dev/null')
    assert out.rc != 0
    assert 'uid=' not in out.stdout


def test_the_key_cannot_write(server, client1):
    out = server.run('rsync -a -e %s /etc/hostname client1:%s/pushed' % (rsync_e('client1'), SRC))
    assert out.rc != 0
    out = server.run('rsync -a --delete -e %s /var/empty/ client1:%s/docs/' % (rsync_e('client1'), SRC))
    assert out.rc != 0
    assert not client1.file(SRC + '/pushed').exists
    assert client1.file(SRC + '/docs/readme.txt').is_file


@pytest.mark.parametrize('path', ['/etc/', '/data/outside/', SRC + '/../outside/', '/', '/root/.ssh/'])
def test_the_key_reads_no_other_path(server, path):
    server.check_output('rm -rf /tmp/other')
    out = server.run('rsync -a -e %s client1:%s /tmp/other/' % (rsync_e('client1'), path))
    assert out.rc != 0
    assert server.run('ls -A /tmp/other 2>/dev/null').stdout.strip() in ('', '.'), path


@pytest.mark.parametrize('option', ['-L', '--copy-links', '--copy-unsafe-links', '-k', '--copy-dirlinks'])
def test_the_key_follows_no_symlink_out_of_the_tree(server, option):
    server.check_output('rm -rf /tmp/links')
    out = server.run('rsync -a %s -e %s client1:%s/ /tmp/links/' % (option, rsync_e('client1'), SRC))
    assert out.rc != 0
    assert server.run('grep -rs %s /tmp/links' % SENTINEL).stdout == ''


def test_the_key_forwards_nothing(server):
    """restrict: no stdio or port forwarding (no agent, X11, pty either)."""
    base = 'timeout 20 %s -p 22' % SSH
    out = server.run('%s -W 127.0.0.1:22 root@client1 </dev/null' % base)
    assert out.rc != 0 and 'SSH-2.0' not in out.stdout
    out = server.run('%s -N -o ExitOnForwardFailure=yes -R 127.0.0.1:2299:127.0.0.1:22 root@client1' % base)
    assert out.rc == 255 and 'forwarding failed' in out.stderr, out.stderr


def test_the_key_works_only_from_the_server(server, client2):
    """from=: the same key and known_hosts, copied to client2, are refused by client1."""
    try:
        client2.check_output('install -d -m 0700 /tmp/stolen')
        for path in (KEY, KNOWN_HOSTS):
            data = base64.b64encode(server.file(path).content).decode()
            client2.check_output('echo %s | base64 -d > /tmp/stolen/%s' % (data, os.path.basename(path)))
        client2.check_output('chmod 600 /tmp/stolen/*')
        out = client2.run('ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes '
                          '-i /tmp/stolen/%s -o UserKnownHostsFile=/tmp/stolen/known_hosts '
                          'root@client1 rsync --server --sender -logDtpre.iLsfxC . /data/src/'
                          % os.path.basename(KEY))
        assert out.rc == 255 and 'Permission denied' in out.stderr, out.stderr
    finally:
        client2.run('rm -rf /tmp/stolen')


# --- pulled snapshots ----------------------------------------------------------------------

C1_JOBS = [job for job in JOBS if job.startswith('c1-')]


@pytest.fixture(name='first_pulls', scope='module')
def fixture_first_pulls(server):
    """One run of each of client1's jobs."""
    for job in C1_JOBS:
        out = run(server, job)
        assert out.rc == 0, '%s: %s' % (job, out.stderr)
    return dict((job, snapshots(server, job)) for job in C1_JOBS)


@pytest.mark.parametrize('job', C1_JOBS)
def test_a_pulled_snapshot_equals_the_client_tree(server, local, first_pulls, job):
    snaps = first_pulls[job]
    assert len(snaps) == 1
    assert oracle(local, 'client1', snaps[-1]['path']) == []
    dest = JOBS[job][1]
    assert server.file(dest + '/latest').linked_to == snaps[-1]['path']
    # The symlinks out of the tree are symlinks in the snapshot, never what they point to.
    assert server.check_output('readlink %s/escape-abs' % snaps[-1]['path']) == '/data/outside/secret'
    assert server.check_output('readlink %s/escape-dir' % snaps[-1]['path']) == '../outside'
    grep = server.run('grep -rs %s %s' % (SENTINEL, dest))
    assert grep.rc == 1 and grep.stdout == ''


@pytest.mark.parametrize('job', C1_JOBS)
def test_the_record_has_rsync_stats(server, first_pulls, job):
    record = json.loads(server.file(first_pulls[job][-1]['path'] + '.json').content_string)
    assert isinstance(record.get('rsync'), dict), sorted(record)


@pytest.mark.parametrize('job', C1_JOBS)
def test_the_mirror_per_filesystem(server, first_pulls, job):
    """btrfs: the mirror is a subvolume (inode 256); XFS: a folder (reflinked); ext4: none
    (--link-dest to the previous snapshot)."""
    assert first_pulls[job]
    dest, fs = JOBS[job][1], JOBS[job][2]
    assert server.check_output('stat -f -c %%T %s' % dest) == fs.replace('ext4', 'ext2/ext3')
    mirror = server.file(dest + '/.fslinks-mirror')
    if fs == 'ext4':
        assert not mirror.exists
    else:
        assert mirror.is_directory
        ino = int(server.check_output('stat -c %%i %s' % mirror.path))
        assert (ino == 256) == (fs == 'btrfs')


@pytest.fixture(name='changed_pulls', scope='module')
def fixture_changed_pulls(server, client1, first_pulls):
    """1 % of the 4 KiB blocks of client1's big file rewritten in place (the same size: rsync's
    quick check sees it by its mtime, more than a second after the first pulls) and one line
    added to a small file, then one more run of each job, with the used space of its filesystem
    before and after, and the growth of the job's chain as `du` counts it (allocated extents,
    shared ones once): {job: (used, chain, changed)}."""
    size = int(client1.check_output('stat -c %%s %s/big.bin' % SRC))
    blocks = size // 4096
    count = blocks // 100
    first = max(s['name'] for snaps in first_pulls.values() for s in snaps)
    time.sleep(1.1)
    client1.check_output(
        "python3 -c 'import os, random; r = random.Random(11); f = os.open(\"%s/big.bin\", os.O_WRONLY); "
        "[os.pwrite(f, os.urandom(4096), 4096 * b) for b in r.sample(range(%d), %d)]; os.close(f)'"
        % (SRC, blocks, count))
    client1.check_output('echo changed >> %s/docs/sub/notes.txt' % SRC)
    costs = {}
    for job in C1_JOBS:
        dest = JOBS[job][1]
        before = used_bytes(server, dest), chain_bytes(server, job)
        out = run(server, job)
        assert out.rc == 0, '%s: %s' % (job, out.stderr)
        costs[job] = (used_bytes(server, dest) - before[0], chain_bytes(server, job) - before[1], count * 4096)
    assert all(snapshots(server, job)[-1]['name'] > first for job in C1_JOBS)
    return costs


@pytest.mark.parametrize('job', C1_JOBS)
def test_the_next_pull_equals_the_changed_tree(server, local, changed_pulls, job):
    assert job in changed_pulls
    snaps = snapshots(server, job)
    assert len(snaps) == 2
    assert oracle(local, 'client1', snaps[-1]['path']) == []


@pytest.mark.parametrize('job', ['c1-xfs', 'c1-btrfs'])
def test_the_next_pull_costs_about_the_changed_bytes(changed_pulls, job):
    """The mirror updated in place (only the changed blocks written, rsync's ~8 KiB blocks around
    each change), then reflinked or snapshotted: the chain grows by about the changed bytes, not
    by the 64 MiB file. btrfs: its used space too (XFS's also holds the CoW blocks it reserved
    ahead, 128 KiB around each write, and reclaims later)."""
    used, chain, changed = changed_pulls[job]
    assert chain <= 4 * changed + 2 * MIB, 'the chain grew by %d bytes for %d changed' % (chain, changed)
    if job == 'c1-btrfs':
        assert used <= 4 * changed + 2 * MIB, 'used %d bytes for %d changed' % (used, changed)


def test_a_changed_file_costs_a_copy_on_ext4(changed_pulls):
    """The counterpart (and the proof that the figures above can see a copy): --link-dest keeps
    only unchanged files, so the changed 64 MiB file is a new copy."""
    used, chain, _changed = changed_pulls['c1-ext4']
    assert used >= 64 * MIB and chain >= 64 * MIB, (used, chain)


def test_unchanged_files_share_inodes_on_ext4(server, changed_pulls):
    assert 'c1-ext4' in changed_pulls
    older, newer = [s['path'] for s in snapshots(server, 'c1-ext4')[-2:]]

    def ino(path):
        return int(server.check_output('stat -c %%i %s' % path))
    for name in ('docs/readme.txt', 'links/a', 'secret.txt', 'setuid.bin'):
        assert ino('%s/%s' % (older, name)) == ino('%s/%s' % (newer, name)), name
    for name in ('big.bin', 'docs/sub/notes.txt'):
        assert ino('%s/%s' % (older, name)) != ino('%s/%s' % (newer, name)), name


def test_a_scheduled_run_pulls_in_its_sandbox(server, local, changed_pulls):
    """The job's systemd unit, as its timer starts it: ssh and rsync work in the sandbox."""
    assert changed_pulls
    before = snapshots(server, 'c1-xfs')[-1]['name']
    time.sleep(1.1)
    out = server.run('systemctl start fslinks-snapshot@c1-xfs.service')
    assert out.rc == 0, server.run('journalctl -u fslinks-snapshot@c1-xfs.service -n 30 --no-pager').stdout
    snaps = snapshots(server, 'c1-xfs')
    assert snaps[-1]['name'] != before
    assert oracle(local, 'client1', snaps[-1]['path']) == []
    assert server.run('%s check c1-xfs' % CLI).rc == 0
    assert metric(server, 'c1-xfs', 'fslinks_snapshot_last_run_status') == 1


def test_restore_from_the_server(server, local, changed_pulls):
    """The live tree is on the client: a pulled job restores --to a folder of the server."""
    assert changed_pulls
    server.check_output('rm -rf /data/restored')
    out = server.run('%s restore c1-xfs --to /data/restored' % CLI)
    assert out.rc == 0, out.stderr
    assert oracle(local, 'client1', '/data/restored') == []
    # Without --to there is no live tree to write into here.
    assert server.run('%s restore c1-xfs docs/readme.txt' % CLI).rc != 0
    assert not server.file(SRC + '/docs/readme.txt').exists


# --- failures: a pull killed midway, a client down ---------------------------------------

def test_sigkill_during_a_pull_then_the_next_run_completes(server, local):
    """client2's job reads at most 4000 KiB/s: its first pull (16 MiB) takes seconds. SIGKILL to
    the CLI while rsync copies publishes nothing; the next run completes."""
    assert snapshots(server, 'c2') == []
    pid = server.check_output('setsid sh -c "%s run c2 >/tmp/c2.log 2>&1 & echo \\$!"' % CLI)
    deadline = time.time() + 30
    while server.run('pgrep -x rsync').rc != 0:
        assert time.time() < deadline, server.file('/tmp/c2.log').content_string
        time.sleep(0.2)
    time.sleep(1)
    assert server.run('kill -0 %s' % pid).rc == 0, 'the pull ended before the kill'
    server.check_output('kill -KILL %s' % pid)
    # rsync dies with the run (no orphan writing on and holding the job's lock).
    deadline = time.time() + 10
    while server.run('pgrep -x rsync').rc == 0:
        assert time.time() < deadline, server.check_output('ps -ef')
        time.sleep(0.2)
    assert snapshots(server, 'c2') == []
    assert not server.file('/backup/ext4/c2/latest').exists
    out = run(server, 'c2')
    assert out.rc == 0, out.stderr
    snaps = snapshots(server, 'c2')
    assert len(snaps) == 1
    assert oracle(local, 'client2', snaps[-1]['path']) == []
    assert 'partial' not in server.check_output('ls -A /backup/ext4/c2')


@pytest.fixture(name='client_down', scope='module')
def fixture_client_down(server, client2):
    """client2's sshd stopped (after a change on it), one run of its job, `check` and the metrics
    then, sshd started again: {before, run, after, check, status}."""
    before = [x['name'] for x in snapshots(server, 'c2')]
    assert len(before) == 1
    client2.check_output('systemctl stop ssh.service')
    try:
        client2.check_output('echo more >> %s/docs/readme.txt' % SRC)
        failed = run(server, 'c2')
        seen = {
            'before': before, 'run': failed, 'after': [x['name'] for x in snapshots(server, 'c2')],
            'latest': server.check_output('readlink /backup/ext4/c2/latest'),
            'names': server.check_output('ls -A /backup/ext4/c2'),
            'check': server.run('%s check c2' % CLI),
            'status': metric(server, 'c2', 'fslinks_snapshot_last_run_status'),
        }
    finally:
        client2.check_output('systemctl start ssh.service')
    return seen


def test_a_client_without_sshd_fails_the_run_clearly_and_publishes_nothing(client_down):
    out = client_down['run']
    assert out.rc == 1
    message = out.stderr.lower()
    assert 'client2' in message and 'refused' in message, out.stderr
    assert client_down['after'] == client_down['before']
    assert client_down['latest'] == client_down['before'][-1]
    assert 'partial' not in client_down['names']


def test_the_metrics_say_the_pull_failed(client_down):
    assert client_down['status'] == 0


def test_check_says_the_last_pull_failed(client_down):
    """The newest snapshot is fresh, but the run after it failed: a warning (exit 3) in the
    failure's words."""
    check = client_down['check']
    assert check.rc == 3, check.stdout
    assert 'failed' in check.stdout and 'client2' in check.stdout, check.stdout


def test_the_next_pull_completes_once_sshd_is_back(server, local, client_down):
    assert client_down['run'].rc == 1
    out = run(server, 'c2')
    assert out.rc == 0, out.stderr
    snaps = snapshots(server, 'c2')
    assert len(snaps) == 2
    assert oracle(local, 'client2', snaps[-1]['path']) == []
    assert metric(server, 'c2', 'fslinks_snapshot_last_run_status') == 1


def test_an_absent_job_takes_its_entry_off_the_client(server, client1):
    """converge.yml: a second key of the server pulled client1 (converge checked both entries were
    there), then its job was made absent: its entry and host key are gone, the first stay."""
    other = server.file('/etc/fslinks-snapshots/ssh-other/id_ed25519.pub').content_string.split()[1]
    keys = client1.file('/root/.ssh/authorized_keys').content_string
    assert other not in keys
    assert 'serve /data/src' in keys
    assert server.file('/etc/fslinks-snapshots/ssh-other/known_hosts').content_string.strip() == ''
    assert not server.file('/etc/fslinks-snapshots/other.json').exists
    assert server.file(KNOWN_HOSTS).content_string.startswith('client1 ')


def test_the_timers_are_there_and_wait(server):
    """Each pulled job has its timer (converge gave them a date that does not come, so that
    none fires while the tests count snapshots)."""
    for job in JOBS:
        out = server.run('systemctl is-enabled fslinks-snapshot@%s.timer' % job)
        assert out.stdout.strip() == 'enabled', job
