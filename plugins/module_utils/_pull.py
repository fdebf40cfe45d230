# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pulls: snapshots of a remote tree ([USER@]HOST:/PATH), fetched with rsync
over ssh onto the backup server.

rsync does the transfer (delta transfer, owners, ACLs, xattrs, inner hard
links); this module decides where it writes, by the backup root's filesystem:

  btrfs     rsync updates DEST/.fslinks-mirror (a subvolume) in place, and the
            snapshot is a read-only snapshot of it;
  reflink   rsync updates DEST/.fslinks-mirror in place (--inplace: only the
            changed blocks are rewritten), and the snapshot is a reflink tree
            of it, so unchanged blocks of changed files stay shared;
  hardlink  rsync --link-dest=DEST/PREVIOUS into NAME.partial (rsnapshot's way:
            unchanged files are hard links, a changed one a whole new copy);
  copy      rsync into NAME.partial, a full copy.

_snapshot publishes the result as it does a local one.  A pull that fails or
is killed publishes nothing: the mirror may be half updated, which the next
pull completes, but no snapshot is ever taken of it before rsync succeeded.
"""

import collections
import errno
import os
import re
import subprocess
import threading

from ._children import die_with_parent
from ._errors import BadInput, LinkError
from ._walk import SKIPPED_MAX, new_stats

MIRROR = '.fslinks-mirror'
RSYNC = 'rsync'
CONNECT_TIMEOUT = 30        # seconds for ssh to reach the host
IO_TIMEOUT = 600            # rsync --timeout: seconds without any data before it gives up
VANISHED = 24               # rsync: some source files vanished during the transfer
PARTIAL_TRANSFER = 23       # rsync: some files or attributes were not transferred
STDERR_KEPT = 20            # last lines of rsync's stderr kept for a failure's message

# rsync's [USER@]HOST:PATH; not HOST::MODULE or rsync:// (daemons: no ssh trust model).
_REMOTE = re.compile(r'\A(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]*)@)?'
                     r'(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)'
                     r':(?P<path>/[^\0]*)\Z')

Remote = collections.namedtuple('Remote', 'user host path')


def parse_remote(src):
    """The Remote of ``[USER@]HOST:/PATH``; ValueError with a sentence naming
    what is wrong otherwise."""
    match = _REMOTE.match(src) if isinstance(src, str) and not src.startswith('rsync://') else None
    if match is None:
        raise ValueError('src %r is neither an absolute path nor [USER@]HOST:/ABSOLUTE/PATH (rsync daemon '
                         'syntax HOST::MODULE is not supported)' % (src,))
    path = os.path.normpath(match.group('path'))
    return Remote(match.group('user'), match.group('host'), '/' + path.lstrip('/'))


def remote_of(src):
    """The Remote of a remote src, None for a local path."""
    if isinstance(src, str) and not src.startswith('/') and ':' in src:
        return parse_remote(src)
    return None


def display(remote):
    return '%s%s:%s' % (remote.user + '@' if remote.user else '', remote.host, remote.path)


# ---------------------------------------------------------------- the rsync command

_PLAIN = re.compile(r'\A[A-Za-z0-9_@%+=:,./-]+\Z')


def _quote(word):
    """One word of rsync's -e command: rsync splits it on spaces and honours
    double quotes (no backslashes)."""
    if _PLAIN.match(word):
        return word
    if '"' in word or '\n' in word:
        raise BadInput('ssh option %r: a double quote or newline cannot be passed to ssh through rsync' % word, word)
    return '"%s"' % word


def ssh_command(req):
    """The -e of rsync: batch mode (never a password prompt), host keys always
    checked, dead links found within minutes."""
    argv = ['ssh', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes',
            '-o', 'ConnectTimeout=%d' % CONNECT_TIMEOUT, '-o', 'ServerAliveInterval=30', '-o', 'ServerAliveCountMax=4']
    if req.ssh_key:
        argv += ['-i', req.ssh_key, '-o', 'IdentitiesOnly=yes']
    if req.ssh_port:
        argv += ['-p', str(req.ssh_port)]
    if req.ssh_known_hosts:
        argv += ['-o', 'UserKnownHostsFile=' + req.ssh_known_hosts]
    return ' '.join(_quote(a) for a in argv)


def rsync_argv(req, target, in_place=False, link_dest=None, dry_run=False, sparse=True):
    """rsync's argv for one pull into the directory ``target``.

    ``sparse`` (-S) only where no snapshot shares the blocks written into:
    with --inplace, rsync punches a hole wherever a run of zero bytes starts
    or ends a block it keeps, down to one byte, and each such punch unshares
    a whole filesystem block from the snapshots (measured: a chain 3.7x the
    data sent).  So the mirror is sparse as its first pull wrote it; what
    later pulls write into it is stored dense."""
    argv = [RSYNC, '-aHAXS' if sparse else '-aHAX', '--numeric-ids', '--delete', '--stats', '--out-format=%i %n',
            '--timeout=%d' % IO_TIMEOUT, '-e', ssh_command(req),
            # Modification times compared to the nanosecond, not the second: a file rewritten
            # with its size kept within the second of its last pull is still noticed, and so is
            # a directory's time (rsync would leave one that is off by less than a second).
            '--modify-window=-1',
            # XFS shows root its ACLs twice, as system.posix_acl_* (which -A copies) and as
            # trusted.SGI_ACL_*; the client has no such names, so a second pull would delete
            # them and the ACLs with them.  Never send them, never delete them here.
            '--filter=-x trusted.SGI_ACL_*']
    if req.one_file_system:
        argv.append('--one-file-system')
    if in_place:
        # The mirror: rewrite only the blocks that changed (a snapshot shares the rest), and
        # drop what a new exclude leaves out (it must not linger into snapshots).
        argv += ['--inplace', '--no-whole-file', '--delete-excluded', '--filter=Px trusted.SGI_ACL_*']
    if link_dest:
        argv.append('--link-dest=' + link_dest)
    if req.bwlimit:
        argv.append('--bwlimit=%d' % req.bwlimit)
    if dry_run:
        argv.append('--dry-run')
    for pattern in req.exclude:
        argv.append('--exclude=' + pattern)
    remote = req.remote
    argv += ['--', '%s%s:%s/' % (remote.user + '@' if remote.user else '', remote.host, remote.path.rstrip('/')),
             target.rstrip('/') + '/']
    return argv


# ---------------------------------------------------------------- running it

class Transfer(object):
    """What one rsync run did: counts from its itemized lines and --stats."""

    def __init__(self):
        self.added = self.modified = self.deleted = 0
        self.rsync = {}          # --stats, by our names
        self.errors = []         # rsync's own complaints (stderr), the first SKIPPED_MAX
        self.tail = collections.deque(maxlen=STDERR_KEPT)
        self.exit = None

    def item(self, line):
        code, name = line.split(' ', 1) if ' ' in line else (line, '')
        if code == '*deleting':
            if not name.endswith('/'):
                self.deleted += 1
        elif len(code) == 11 and code[1] == 'f' and code[0] in '>ch':
            if code[2:] == '+' * 9:
                self.added += 1
            else:
                self.modified += 1


# --stats lines, by our record's names (rsync 3.x wording).
_STATS = {
    'Number of files': 'entries', 'Number of created files': 'created', 'Number of deleted files': 'deleted',
    'Number of regular files transferred': 'files_transferred', 'Total file size': 'total_bytes',
    'Total transferred file size': 'transferred_bytes', 'Literal data': 'literal_bytes',
    'Matched data': 'matched_bytes', 'Total bytes sent': 'sent_bytes', 'Total bytes received': 'received_bytes',
}
_STAT_LINE = re.compile(r'\A([A-Z][A-Za-z ]+): ([0-9,]+)(?: bytes)?(?: \((.*)\))?')
_KIND = re.compile(r'(reg|dir|link|dev|special): ([0-9,]+)')


def _stat(transfer, line):
    match = _STAT_LINE.match(line)
    if match is None or match.group(1) not in _STATS:
        return
    key = _STATS[match.group(1)]
    transfer.rsync[key] = int(match.group(2).replace(',', ''))
    if key == 'entries' and match.group(3):
        for kind, count in _KIND.findall(match.group(3)):
            transfer.rsync[kind] = int(count.replace(',', ''))


def transfer(argv, lock_fd=None):
    """Run rsync to the end; returns its Transfer.  The run's lock goes with
    it (inherited by rsync and its ssh), so that while any of them lives,
    even after a killed run, no other run of the root can start."""
    done = Transfer()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(lock_fd,) if lock_fd is not None else (), preexec_fn=die_with_parent,
                                cwd='/')
    except OSError as exc:
        raise LinkError('pull: cannot run %s: %s' % (argv[0], exc.strerror), argv[0], exc.errno)
    reader = threading.Thread(target=_read_errors, args=(proc.stderr, done))
    reader.daemon = True
    reader.start()
    stats = False
    try:
        for raw in proc.stdout:
            line = raw.decode('utf-8', 'backslashreplace').rstrip('\n')
            if not stats and (not line or line.startswith('Number of files: ')):
                stats = True
            if stats:
                _stat(done, line)
            else:
                done.item(line)
        done.exit = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.join(5)
        proc.stdout.close()
    return done


def _read_errors(stream, done):
    for raw in stream:
        line = raw.decode('utf-8', 'backslashreplace').rstrip('\n')
        if not line:
            continue
        done.tail.append(line)
        if len(done.errors) < SKIPPED_MAX and line.startswith(('rsync: ', 'file has vanished: ')):
            done.errors.append(line)
    stream.close()


_MEANING = {
    1: 'syntax or usage error', 2: 'protocol incompatibility', 3: 'errors selecting input/output files',
    5: 'error starting the client-server protocol', 10: 'error in socket I/O', 11: 'error in file I/O',
    12: 'error in the rsync protocol data stream', 14: 'error in IPC code', 20: 'killed by a signal',
    22: 'error allocating memory', 23: 'some files or attributes were not transferred',
    24: 'some source files vanished', 30: 'timeout in data send/receive', 35: 'timeout waiting for daemon',
    255: 'ssh failed (unreachable host, refused key, unknown host key?)',
}


def failure_message(remote, done):
    why = _MEANING.get(done.exit, 'exit status %s' % done.exit)
    if done.exit is not None and done.exit < 0:
        why = 'killed by signal %d' % -done.exit
    tail = [line for line in done.tail if line]
    return 'pull from %s failed: rsync exited %s (%s)%s' % (
        display(remote), done.exit, why, (': ' + ' | '.join(tail[-5:])) if tail else '')


def check_exit(remote, done, on_error, where):
    """None when the pull may be published; its warnings in a list; raises a
    LinkError naming the host and rsync's cause otherwise.  Files that
    vanished (24) are a warning; files that could not be read (23) follow
    on_error, as local unreadable entries do."""
    if done.exit == 0:
        return []
    if done.exit == VANISHED:
        return ['pull from %s: some files vanished while they were read (rsync exit 24); the snapshot has the '
                'tree without them' % display(remote)]
    if done.exit == PARTIAL_TRANSFER and on_error == 'skip':
        return ['pull from %s: some files or attributes could not be read (rsync exit 23, on_error=skip): %s'
                % (display(remote), ' | '.join(done.errors[:5]) or 'see rsync\'s messages')]
    raise LinkError(failure_message(remote, done), where, errno.EIO)


_QUOTED = re.compile(r'"([^"]*)"')


def skipped_entries(done):
    """The entries a pull with rsync exit 23 left out (on_error=skip), as
    the walkers name them: rsync's message and the path it quotes."""
    if done.exit != PARTIAL_TRANSFER:
        return []
    out = []
    for line in done.errors:
        if line.startswith('rsync: '):
            quoted = _QUOTED.search(line)
            out.append({'path': quoted.group(1) if quoted else None, 'error': line})
    return out


def snapshot_stats(done, method):
    """The snapshot's stats (_walk.new_stats) from a pull that wrote the tree
    itself (btrfs, hardlink, copy); rsync's own figures go to the record."""
    stats = new_stats()
    rs = done.rsync
    stats.update(files=rs.get('reg', 0), dirs=rs.get('dir', 0), symlinks=rs.get('link', 0),
                 specials=rs.get('dev', 0) + rs.get('special', 0), added=done.added, modified=done.modified)
    moved = rs.get('files_transferred', 0)
    if method == 'hardlink':
        stats.update(copied=moved, linked=max(0, stats['files'] - moved), bytes_copied=rs.get('transferred_bytes', 0))
    elif method == 'copy':
        stats.update(copied=stats['files'], bytes_copied=rs.get('total_bytes', 0))
    return stats


def record_of(done, warnings):
    """The record's "rsync" section: the transfer as rsync counted it."""
    out = dict(done.rsync, exit=done.exit, added=done.added, modified=done.modified, deleted=done.deleted)
    if warnings:
        out['warnings'] = warnings
    if done.errors:
        out['messages'] = list(done.errors)
    return out
