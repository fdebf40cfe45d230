# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for snapshot tests: a fake clock, looking at a snapshot root, btrfs subvolumes, the
engine in a child process."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

COLLECTIONS = Path(__file__).resolve().parents[1] / '.collections'

# The engine in a child process: prints "go" right before run(), then the result.
RUNNER = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot import Request, run
args = json.loads(sys.argv[2])
req = Request(args.pop('src'), args.pop('dest'), **args)
print('go', flush=True)
result = run(req)
print(json.dumps(result), flush=True)
'''


def start_engine(src, dest, **kw):
    """Start run() in a child process; returns the Popen once the child is about to run."""
    args = dict(src=str(src), dest=str(dest), **kw)
    proc = subprocess.Popen([sys.executable, '-c', RUNNER, str(COLLECTIONS), json.dumps(args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    assert line == b'go\n', (line, proc.stderr.read())
    return proc


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
    """Complete snapshot names under DEST, oldest first (by name: fine for one-per-hour tests)."""
    dest = Path(dest)
    if not dest.is_dir():
        return []
    return sorted(p.name for p in dest.iterdir() if NAME_RE.match(p.name) and not p.is_symlink())


def entries(dest):
    """Every name in DEST except the lock file and the snapshots' records."""
    return sorted(n for n in os.listdir(dest) if n != LOCK_NAME and not (n.endswith('.json') and NAME_RE.match(n[:-5])))


def latest(dest):
    """Target of DEST/latest (a relative name), or None."""
    p = Path(dest) / 'latest'
    return os.readlink(p) if p.is_symlink() else None


def leftovers(dest):
    """Leftovers of (killed) runs: STAMP.partial, STAMP.deleting, STAMP.links, temporary latest symlinks and
    records (.STAMP.json.tmp), records (STAMP.json) of snapshots that are gone."""
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


def records(dest):
    """Names of the snapshot records (STAMP.json) in DEST."""
    return sorted(n for n in os.listdir(dest) if n.endswith('.json') and NAME_RE.match(n[:-5]))


def create_subvolume(path):
    subprocess.run(['btrfs', 'subvolume', 'create', str(path)], check=True, capture_output=True)
    return Path(path)


def is_readonly_subvolume(path):
    out = subprocess.run(['btrfs', 'property', 'get', '-ts', str(path), 'ro'], check=True,
                         capture_output=True, text=True).stdout
    return out.strip() == 'ro=true'


def regular_files(root):
    """Relative paths (bytes) of the regular files below ROOT."""
    root = os.fsencode(root)
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    return sorted(out)
