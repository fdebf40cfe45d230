# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pieces of a pull that are plain logic: the remote src syntax, the serve command's
allowlist (the real sshd/rsync runs are in tests/functional/test_pull.py), rsync's exit
codes and output as a pull reads them."""

import pytest

from ansible_collections.fslinks.snapshots.plugins.module_utils import _pull, _serve
from ansible_collections.fslinks.snapshots.plugins.module_utils._errors import BadInput, LinkError
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request

ROOT = '/srv/data'
# What rsync 3.2.7 sends for a pull's -aHAXS --numeric-ids --inplace (tests/functional shows it live).
SENDER = 'rsync --server --sender -lHogDtpAXrSxe.iLsfxCIvu --numeric-ids --inplace . '


@pytest.mark.parametrize('src, user, host, path', [
    ('web1:/srv/data', None, 'web1', '/srv/data'),
    ('root@web1.example.org:/srv/data/', 'root', 'web1.example.org', '/srv/data'),
    ('backup@[fe80::1]:/a b/c', 'backup', '[fe80::1]', '/a b/c'),
    ('10.0.0.5:/', None, '10.0.0.5', '/'),
])
def test_remote_src_syntax(src, user, host, path):
    assert _pull.parse_remote(src) == (user, host, path)


@pytest.mark.parametrize('src', ['web1::module', 'rsync://web1/m', 'web1:relative/path', '-oProxyCommand=x:/a',
                                 'a b:/x', 'web1:', '@web1:/x'])
def test_bad_remote_src_is_refused_naming_it(src):
    with pytest.raises(BadInput, match='neither an absolute path nor'):
        Request(src, '/var/backups/x')


def test_ssh_command_checks_host_keys_and_quotes():
    req = Request('web1:/srv', '/var/backups/x', ssh_key='/etc/fslinks snapshots/key', ssh_port=2222,
                  ssh_known_hosts='/etc/fslinks-snapshots/known_hosts')
    cmd = _pull.ssh_command(req)
    assert 'StrictHostKeyChecking=yes' in cmd and 'BatchMode=yes' in cmd
    assert '-i "/etc/fslinks snapshots/key" -o IdentitiesOnly=yes -p 2222' in cmd
    with pytest.raises(BadInput, match='double quote'):
        _pull.ssh_command(Request('web1:/srv', '/var/backups/x', ssh_key='/etc/"k'))


@pytest.mark.parametrize('asked, rel', [
    ('/srv/data/', './'), ('/srv/data', './'), ('/srv/data/sub/', 'sub/'), ('/srv/data/a\\ b/', 'a\\ b/'),
])
def test_serve_lets_through_a_read_only_rsync_of_its_path(asked, rel):
    assert _serve.check(SENDER + asked, ROOT) == SENDER + rel


@pytest.mark.parametrize('command, why', [
    (None, 'only a read-only rsync'),
    ('sh -c id', 'only a read-only rsync'),
    ('rsync --server -logDtpre.iLsfxCIvu . /srv/data/', 'only a read-only rsync'),       # a write
    ('rsync --server --sender -lLogDtpre.iLsfxCIvu . /srv/data/', 'option -lLogDtpre'),  # -L
    ('rsync --server --sender -logDtpre.iLsfxCIvu --copy-unsafe-links . /srv/data/', '--copy-unsafe-links'),
    ('rsync --server --sender -logDtprke.iLsfxCIvu . /srv/data/', 'is not allowed'),     # -k
    ('rsync --server --sender -logDtpre.iLsfxCIvu --log-file=/tmp/x . /srv/data/', '--log-file'),
    ('rsync --server --sender -logDtpre.iLsfxCIvu . /etc/', 'outside /srv/data'),
    ('rsync --server --sender -logDtpre.iLsfxCIvu . /srv/data2/', 'outside /srv/data'),
    ('rsync --server --sender -logDtpre.iLsfxCIvu . /srv/data/../x', 'without ".."'),
    ('rsync --server --sender -logDtpre.iLsfxCIvu . srv/data', 'absolute path'),
    ('rsync --server --sender -logDtpre.iLsfxCIvu . /srv/data/ /etc/', 'exactly one path'),
    ('rsync --server --sender -logDtpre.iLsfxCIvu /srv/data/', 'no "." argument'),
])
def test_serve_refuses_anything_else(command, why):
    with pytest.raises(_serve.Refused, match=why.replace('.', r'\.').replace('(', r'\(')):
        _serve.check(command, ROOT)


def _transfer(lines, exit_code):
    done = _pull.Transfer()
    stats = False
    for line in lines:
        stats = stats or not line or line.startswith('Number of files: ')
        if stats:
            _pull._stat(done, line)          # pylint: disable=protected-access
        else:
            done.item(line)
    done.exit = exit_code
    return done


# rsync 3.2.7's --out-format='%i %n' lines and --stats, as a pull into the mirror prints them.
OUTPUT = '''>f+++++++++ new file
>f.st...... changed
hf+++++++++ hard link to new file
*deleting   gone
*deleting   gone-dir/
cd+++++++++ new dir/
.d..t...... ./
cL+++++++++ link -> target

Number of files: 20,412 (reg: 20,001, dir: 410, link: 1)
Number of created files: 3 (reg: 2, dir: 1)
Number of deleted files: 2 (reg: 1, dir: 1)
Number of regular files transferred: 3
Total file size: 1,178,599,424 bytes
Total transferred file size: 10,485,760 bytes
Literal data: 1,048,576 bytes
Matched data: 9,437,184 bytes
File list size: 0
Total bytes sent: 250,108
Total bytes received: 1,123,311
'''.split('\n')


def test_rsync_output_is_counted():
    done = _transfer(OUTPUT, 0)
    assert (done.added, done.modified, done.deleted) == (2, 1, 1)
    assert done.rsync == {
        'entries': 20412, 'reg': 20001, 'dir': 410, 'link': 1, 'created': 3, 'deleted': 2, 'files_transferred': 3,
        'total_bytes': 1178599424, 'transferred_bytes': 10485760, 'literal_bytes': 1048576,
        'matched_bytes': 9437184, 'sent_bytes': 250108, 'received_bytes': 1123311}
    stats = _pull.snapshot_stats(done, 'hardlink')
    assert (stats['files'], stats['copied'], stats['linked'], stats['bytes_copied']) == (20001, 3, 19998, 10485760)


def test_vanished_files_are_a_warning_and_unreadable_ones_follow_on_error():
    remote = _pull.parse_remote('web1:/srv')
    assert _pull.check_exit(remote, _transfer([], 0), 'fail', 'x') == []
    assert 'vanished' in _pull.check_exit(remote, _transfer([], 24), 'fail', 'x')[0]
    unreadable = _transfer([], 23)
    unreadable.errors.append('rsync: [sender] send_files failed to open "/srv/secret": Permission denied (13)')
    assert 'on_error=skip' in _pull.check_exit(remote, unreadable, 'skip', 'x')[0]
    assert _pull.skipped_entries(unreadable) == [{'path': '/srv/secret', 'error': unreadable.errors[0]}]
    with pytest.raises(LinkError, match='rsync exited 23'):
        _pull.check_exit(remote, unreadable, 'fail', 'x')
    refused = _transfer([], 255)
    refused.tail.append('ssh: connect to host web1 port 22: Connection refused')
    with pytest.raises(LinkError, match='pull from web1:/srv failed: rsync exited 255 .ssh failed.*Connection refused'):
        _pull.check_exit(remote, refused, 'skip', 'x')
