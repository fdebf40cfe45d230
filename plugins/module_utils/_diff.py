# Copyright: (c) 2026, fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Diff mode: what changes, as metadata lines (never file contents)."""

import stat

from ._mounts import file_type
from ._tree import display

MAX_ENTRIES = 1000


def describe(meta, action=None):
    """One line of metadata: type, size, mode, owner and how it was made."""
    if meta is None:
        return None
    parts = ['type=%s' % file_type(meta.mode)]
    if stat.S_ISREG(meta.mode):
        parts.append('size=%d' % meta.size)
    if not stat.S_ISLNK(meta.mode):
        parts.append('mode=%04o' % stat.S_IMODE(meta.mode))
    parts.append('owner=%d:%d' % (meta.uid, meta.gid))
    if action:
        parts.append('method=%s' % action)
    return ' '.join(parts)


class DiffRecorder(object):
    """A walker's ``report`` callback that builds Ansible's before/after
    texts, one line per changed entry, capped at MAX_ENTRIES."""

    def __init__(self, limit=MAX_ENTRIES):
        self.limit = limit
        self.before = []
        self.after = []
        self.count = 0

    def __call__(self, path, action, src_meta, dest_meta):
        self.count += 1
        if self.count > self.limit:
            return
        name = display(path) or '.'      # one line, whatever the name holds
        old = describe(dest_meta)
        new = describe(src_meta, action) if src_meta is not None else 'method=%s' % action
        if old is not None:
            self.before.append('%s: %s' % (name, old))
        self.after.append('%s: %s' % (name, new))

    def diff(self, before_header='before', after_header='after'):
        more = self.count - self.limit
        tail = ['... and %d more' % more] if more > 0 else []
        return {
            'before_header': before_header, 'after_header': after_header,
            'before': '\n'.join(self.before + tail) + ('\n' if self.before or tail else ''),
            'after': '\n'.join(self.after + tail) + ('\n' if self.after or tail else ''),
        }
