# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`fslinks-snapshot serve PATH`: the forced command of a backup server's key
on a client (authorized_keys: command="... serve /srv/data",restrict,from=...).

sshd runs it instead of whatever the key's holder asked for, which is in
SSH_ORIGINAL_COMMAND.  It lets through one thing: the read-only rsync sender
a pull starts (`rsync --server --sender OPTIONS . PATH/`), with options from
a short allowlist, asking for PATH or a directory below it; then it execs
`rrsync -ro PATH` (shipped with rsync), which checks it again and runs rsync
confined to PATH.  Refused on purpose, because rrsync -ro lets them through:
-L, -k, --copy-links, --copy-unsafe-links and --copy-dirlinks, which would
make rsync read what a symlink in the tree points to, outside PATH.
"""

import os
import re
import shutil

from ._errors import BadInput

# Option letters of the pulls' -aHAX (and -n, -v, -c, -z a user may add), without L or k;
# after 'e' comes rsync's protocol capability string ("e.iLsfxCIvu"), not options.
_SHORT = re.compile(r'\A-[lHogDtpAXSrxnvcz]+(?:e\d*\.[A-Za-z]*)?\Z')
_LONG = re.compile(r'\A--(?:numeric-ids|inplace|(?:bwlimit|timeout|compress-level)=[0-9]+[A-Za-z]?)\Z')
_WORDS = re.compile(r'(?:[^\s\\]+|\\.[^\s\\]*)+')      # rsync's escaping of the remote command
_BACKSLASH = re.compile(r'\\(.)')
_RRSYNC = ('/usr/bin/rrsync', '/usr/local/bin/rrsync')


class Refused(BadInput):
    """The command is not a read-only rsync of the served path."""


def check(command, root):
    """The SSH_ORIGINAL_COMMAND to hand to rrsync (the path made relative to
    ROOT), or Refused saying why."""
    words = _WORDS.findall(command or '')
    if words[:3] != ['rsync', '--server', '--sender']:
        raise Refused('only a read-only rsync of %s is allowed with this key, not %r' % (root, (command or '')[:200]))
    try:
        dot = words.index('.', 3)
    except ValueError:
        raise Refused('not an rsync sender command: no "." argument')
    for word in words[3:dot]:
        if not (_SHORT.match(word) or _LONG.match(word)):
            raise Refused('rsync option %s is not allowed with this key (a pull asks for -aHAX, --numeric-ids, '
                          '--inplace, --bwlimit and --timeout only)' % word)
    paths = words[dot + 1:]
    if len(paths) != 1:
        raise Refused('exactly one path must be asked for, under %s' % root)
    asked = _BACKSLASH.sub(r'\1', paths[0])
    rel = _relative(asked, root)
    return ' '.join(words[:dot + 1] + [_escape(rel)])


def _relative(asked, root):
    """ASKED (absolute, under ROOT) as rrsync wants it: relative to ROOT,
    with its trailing slash kept (it means "the contents")."""
    if not asked.startswith('/') or '/../' in asked + '/' or asked.startswith('/..'):
        raise Refused('path %r: an absolute path under %s without ".." is required' % (asked, root))
    norm, given = os.path.normpath(asked), os.path.normpath(root)
    for path, under in ((norm, given), (os.path.realpath(norm), os.path.realpath(given))):
        if path != under and not path.startswith(under.rstrip('/') + '/'):
            raise Refused('path %s is outside %s, the only tree this key may read' % (path, under))
    rel = os.path.relpath(norm, given)
    return rel + '/' if asked.endswith('/') and rel != '.' else rel if rel != '.' else './'


def _escape(word):
    """Backslash-escape what rsync's word splitting (and rrsync's) would break."""
    return re.sub(r'([^A-Za-z0-9_@%+=:,./-])', r'\\\1', word)


def rrsync():
    for path in _RRSYNC:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which('rrsync')
    if found:
        return found
    raise BadInput('rrsync is not installed (it comes with rsync 3.2.4 or later: /usr/bin/rrsync)')


def serve(root, environ=None):
    """Check the command sshd was asked to run, then become rrsync -ro ROOT.
    Returns only by raising (Refused, BadInput)."""
    environ = os.environ if environ is None else environ
    if not os.path.isdir(root):
        raise BadInput('serve: %s is not a directory' % root, root)
    command = check(environ.get('SSH_ORIGINAL_COMMAND'), root)
    env = dict(environ, SSH_ORIGINAL_COMMAND=command)
    tool = rrsync()
    os.execve(tool, [tool, '-ro', os.path.realpath(root)], env)
