# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Looking at a snapshot root from tests: a fake clock for run(now=...), the snapshots in it,
latest, the records, and what killed or failed runs leave behind."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

NAME_RE = re.compile(r'\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{6}Z(-[2-9]|-[1-9][0-9]+)?\Z')
LOCK_NAME = '.fslinks-snapshot.lock'


class Clock:
    """Distinct, increasing snapshot times (one hour apart) for run(now=...)."""

    def __init__(self, start=datetime.datetime(2026, 11, 21, 10, 30, 0, tzinfo=datetime.timezone.utc),
                 step=datetime.timedelta(hours=1)):
        self.t = start
        self.step = step

    def __call__(self):
        now = self.t
        self.t += self.step
        return now


def snapshots(dest):
    """Complete snapshot names under DEST, oldest first (by name: fine for one-per-hour tests).
    Read by this module's own NAME_RE, independently of the engine (see snapshot_names)."""
    dest = Path(dest)
    if not dest.is_dir():
        return []
    return sorted(p.name for p in dest.iterdir() if NAME_RE.match(p.name) and not p.is_symlink())


def snapshot_names(dest):
    """Published snapshots, oldest first, as the engine lists them."""
    # pylint: disable=import-outside-toplevel
    from ansible_collections.fslinks.snapshots.plugins.module_utils import _snapshot
    return _snapshot.list_snapshots_at(str(dest))


def sort_names(names):
    """Snapshot names in the engine's order (oldest first)."""
    # pylint: disable=import-outside-toplevel
    from ansible_collections.fslinks.snapshots.plugins.module_utils import _retention
    return _retention.sort_snapshot_names(names)


def entries(dest):
    """Every name in DEST except the lock file and the snapshots' records."""
    return sorted(n for n in os.listdir(dest) if n != LOCK_NAME and not (n.endswith('.json') and NAME_RE.match(n[:-5])))


def latest(dest):
    """Target of DEST/latest (a relative name), or None."""
    p = Path(dest) / 'latest'
    return os.readlink(p) if p.is_symlink() else None


def leftovers(dest):
    """Everything a run that completed must have removed: STAMP.partial, STAMP.deleting,
    STAMP.links, temporary latest symlinks and records (.STAMP.json.tmp), and records
    (STAMP.json) of snapshots that are gone.  Strict: for tests that control every run."""
    names = set(os.listdir(dest))
    out = []
    for n in names:
        for suffix in ('.partial', '.deleting', '.links'):
            if n.endswith(suffix) and NAME_RE.match(n[:-len(suffix)]):
                out.append(n)
        if n.startswith('.latest.') and n.endswith('.tmp'):
            out.append(n)
        if n.startswith('.') and n.endswith('.json.tmp'):
            out.append(n)
        if n.endswith('.json') and NAME_RE.match(n[:-5]) and n[:-5] not in names:
            out.append(n)
    return sorted(out)


def partials(dest):
    """The unfinished work of killed or failed runs that the next run must clean up: names
    ending .partial, .deleting or .links, and temporary dot names ending .tmp, whatever the
    stamp looks like; [] if DEST does not exist.  Looser than leftovers() (a record left over
    by a killed run does not count): for tests that kill runs at random moments."""
    if not Path(dest).is_dir():
        return []
    return sorted(n for n in os.listdir(dest)
                  if n.endswith(('.partial', '.deleting', '.links')) or (n.startswith('.') and n.endswith('.tmp')))


def records(dest):
    """Names of the snapshot records (STAMP.json) in DEST."""
    return sorted(n for n in os.listdir(dest) if n.endswith('.json') and NAME_RE.match(n[:-5]))
