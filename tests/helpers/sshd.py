# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real, private sshd on 127.0.0.1 for the pull tests: its own host key, port, config and
authorized_keys; a client key, and a known_hosts file holding the host key, as the role sets
them up between a backup server and its clients.  Nothing of the machine's own ssh setup is
read or changed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import COLLECTIONS
from helpers.prereq import unavailable

SSHD = '/usr/sbin/sshd'

# The CLI a client's authorized_keys runs (the role installs it as /usr/local/bin/fslinks-snapshot).
_CLI = '''#!%s
import sys
sys.path.insert(0, %r)
from ansible_collections.fslinks.snapshots.plugins.module_utils._jobs import main
sys.exit(main())
'''


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class Sshd:
    """sshd -D on 127.0.0.1:PORT, root logins by key only, keys under WORK."""

    def __init__(self, work: Path):
        if os.geteuid() != 0 or not os.access(SSHD, os.X_OK):
            unavailable('the pull tests need root and %s (openssh-server; scripts/setup.sh installs it)' % SSHD)
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.host_key = self.work / 'host_ed25519'
        self.key = self.work / 'id_ed25519'
        for key in (self.host_key, self.key):
            if not key.exists():
                subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(key)], check=True)
        self.authorized = self.work / 'authorized_keys'
        self.authorized.write_text('')
        self.known_hosts = self.work / 'known_hosts'
        self.known_hosts.write_text('[127.0.0.1]:%d %s' % (self.port, (self.work / 'host_ed25519.pub').read_text()))
        self.cli = self.work / 'fslinks-snapshot'
        self.cli.write_text(_CLI % (sys.executable, str(COLLECTIONS)))
        self.cli.chmod(0o755)
        self.config = self.work / 'sshd_config'
        self.config.write_text('\n'.join([
            'Port %d' % self.port, 'ListenAddress 127.0.0.1', 'HostKey %s' % self.host_key,
            'AuthorizedKeysFile %s' % self.authorized, 'PidFile %s' % (self.work / 'sshd.pid'),
            'PermitRootLogin prohibit-password', 'PasswordAuthentication no', 'KbdInteractiveAuthentication no',
            'UsePAM no', 'StrictModes no', 'LogLevel VERBOSE', '']))
        self.log = self.work / 'sshd.log'
        self.proc = None

    def start(self):
        os.makedirs('/run/sshd', mode=0o755, exist_ok=True)     # privilege separation directory
        with open(self.log, 'ab') as log:
            self.proc = subprocess.Popen([SSHD, '-D', '-e', '-f', str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, 'sshd exited: %s' % self.log.read_text()
            with socket.socket() as sock:
                if sock.connect_ex(('127.0.0.1', self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise AssertionError('sshd did not listen on port %d: %s' % (self.port, self.log.read_text()))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def authorize(self, root=None, options='restrict,from="127.0.0.1"'):
        """The client key may log in; with ROOT only through `fslinks-snapshot serve ROOT` (what
        the role writes on a client)."""
        forced = 'command="%s serve %s",' % (self.cli, root) if root is not None else ''
        self.authorized.write_text('%s%s %s' % (forced, options, (self.work / 'id_ed25519.pub').read_text()))

    def remote(self, path):
        return 'root@127.0.0.1:%s' % path

    def job_options(self):
        """A job's ssh options for this sshd."""
        return {'ssh_key': str(self.key), 'ssh_port': self.port, 'ssh_known_hosts': str(self.known_hosts)}

    def ssh(self, command, options=(), timeout=60):
        """Run COMMAND (None: none) through ssh with the client key and ssh OPTIONS, as a thief of
        the server's key would."""
        argv = ['ssh', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o',
                'UserKnownHostsFile=%s' % self.known_hosts, '-i', str(self.key), '-o', 'IdentitiesOnly=yes',
                '-p', str(self.port)] + list(options) + ['root@127.0.0.1'] + ([command] if command else [])
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, input='')

    def rsync(self, *args, timeout=120):
        """rsync over this sshd with the client key (any options: the serve tests try bad ones)."""
        shell = 'ssh -o BatchMode=yes -o UserKnownHostsFile=%s -i %s -o IdentitiesOnly=yes -p %d' % (
            self.known_hosts, self.key, self.port)
        return subprocess.run(['rsync', '-e', shell] + [str(a) for a in args], capture_output=True, text=True,
                              timeout=timeout, check=False)
