# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hosts and paths of the pull scenario. The tests take the hosts they need by name (server,
client1, client2), so each test runs once, not once per inventory host; the oracle compares
trees on this machine, through the loop filesystems that scripts/molecule.sh mounted here."""

from __future__ import annotations

import os
import shlex

import pytest
import testinfra
import yaml

CLI = '/usr/local/bin/fslinks-snapshot'
KEY = '/etc/fslinks-snapshots/ssh/id_ed25519'
KNOWN_HOSTS = '/etc/fslinks-snapshots/ssh/known_hosts'
SRC = '/data/src'
# The server's jobs (converge.yml): name -> (client, snapshot root on the server, its filesystem).
JOBS = {
    'c1-xfs': ('client1', '/data/pull/c1', 'xfs'),
    'c1-ext4': ('client1', '/backup/ext4/c1', 'ext4'),
    'c1-btrfs': ('client1', '/backup/btrfs/c1', 'btrfs'),
    'c2': ('client2', '/backup/ext4/c2', 'ext4'),
}
PORT = {'client1': 22, 'client2': 2222}
# What ssh runs as the server's jobs do (the engine's options: docs of the role, README).
SSH = ('ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -i %s '
       '-o UserKnownHostsFile=%s' % (KEY, KNOWN_HOSTS))


def _host(request, name):
    return testinfra.get_host('ansible://' + name, ansible_inventory=request.config.option.ansible_inventory)


@pytest.fixture(name='server', scope='session')
def fixture_server(request):
    return _host(request, 'server')


@pytest.fixture(name='client1', scope='session')
def fixture_client1(request):
    return _host(request, 'client1')


@pytest.fixture(name='client2', scope='session')
def fixture_client2(request):
    return _host(request, 'client2')


@pytest.fixture(name='clients', scope='session')
def fixture_clients(client1, client2):
    return {'client1': client1, 'client2': client2}


def ssh(client, command='', port=None):
    """The server's ssh to CLIENT with its own key and known_hosts, as a job runs it."""
    port = port or PORT[client]
    return '%s -p %d root@%s %s' % (SSH, port, client, command)


def rsync_e(client):
    """rsync's -e for CLIENT (a quoted word)."""
    return shlex.quote('%s -p %d' % (SSH, PORT[client]))


@pytest.fixture(name='local', scope='session')
def fixture_local():
    """Where each container's bind mounts are on this machine: {(platform, target): path}."""
    disks = os.environ.get('FSLINKS_MOLECULE_DISKS')
    scenario = os.environ.get('MOLECULE_SCENARIO_DIRECTORY')
    assert disks and scenario, 'run through scripts/molecule.sh (it sets FSLINKS_MOLECULE_DISKS)'
    with open(os.path.join(scenario, 'molecule.yml'), encoding='utf-8') as handle:
        platforms = yaml.safe_load(handle)['platforms']
    where = {}
    for p in platforms:
        where[(p['name'], '/data')] = os.path.join(disks, p['fs'], p.get('data', ''))
        for d in p.get('disks', ()):
            where[(p['name'], d['target'])] = os.path.join(disks, d['fs'], d['data'])
    return where


def on_this_machine(local, platform, path):
    """PATH of PLATFORM's container as a path here (below one of its bind mounts)."""
    for (name, target), here in sorted(local.items(), key=lambda kv: -len(kv[0][1])):
        if name == platform and (path == target or path.startswith(target + '/')):
            return here + path[len(target):]
    raise AssertionError('%s:%s is on no bind mount' % (platform, path))
