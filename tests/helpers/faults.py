# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""For tests/reliability: how much to do (short for `make test`, long for `make reliability`),
replayable randomness, known engine bugs, the tally behind docs/reliability.md, and the
invariants every snapshot root must keep whatever went wrong (Chain).  The CLI in a subprocess
is in helpers.processes, trees in helpers.trees.

Scale: RELIABILITY_LONG=1 (set by `make reliability`) turns the counts up; RELIABILITY_SEED
replays the random choices of a run (every test prints the seed it used).
"""

from __future__ import annotations

import collections
import os
import random
import re
import subprocess
import time
from pathlib import Path

from .oracles import tree_problems
from .snapshots import latest, snapshot_names, sort_names

LONG = os.environ.get('RELIABILITY_LONG', '') not in ('', '0', 'no', 'false')
SEED = int(os.environ.get('RELIABILITY_SEED') or time.time_ns() % 1000003)


# Engine bugs reported and not fixed yet (see docs/reliability.md): a random test that hits one
# records it as such instead of failing; a deterministic test of each (strict xfail) says when
# the fix lands.
KNOWN_BUGS = {
    'B2': re.compile(r'remove leftover: .*\.json: no such file or directory'),
}


def known_bug(text):
    """The id of the known bug whose signature TEXT shows, or None."""
    for key, pattern in KNOWN_BUGS.items():
        if pattern.search(text or ''):
            return key
    return None


def scale(short, long):
    """COUNT for this run: SHORT in `make test`, LONG in `make reliability`."""
    return long if LONG else short


def rng_for(name):
    """A random.Random for one test, replayable from the session seed."""
    return random.Random('%d-%s' % (SEED, name))


# ---------------------------------------------------------------- the tally

FAULTS = collections.OrderedDict([
    ('sigkill', 'SIGKILL at a random moment of `fslinks-snapshot run`, then a normal run'),
    ('enospc-data', 'ENOSPC: the data does not fit (free space swept over the run)'),
    ('enospc-inodes', 'ENOSPC: inodes run out (free inodes swept over every step of a run)'),
    ('concurrent', 'Runs started at the same moment on one snapshot root'),
    ('concurrent-wait', 'Runs started at the same moment with lock_timeout (they queue)'),
    ('source-changes', 'Source mutated during the walk (grow, shrink, vanish, rename, dir to symlink swap)'),
    ('vanish-exact', 'An entry swapped (symlink to /etc or outside, fifo, foreign hard link) or removed exactly between the engine\'s stat and open'),
    ('readonly-dest', 'Snapshot root on a filesystem remounted read-only between runs'),
    ('permission-denied', 'Unreadable files and directories in src (job run as an unprivileged user)'),
    ('unmounted-dest', 'Filesystem of the snapshot root unmounted between runs'),
    ('local-user', 'A local user who owns files in src or a directory on the way to dest (job runs as root)'),
    ('hostile-module-args', 'Hostile module arguments through ansible-playbook (all three modules)'),
    ('hostile-cli', 'Hostile job names and job configs for the CLI'),
    ('fuzz-engine', 'Generated arguments for Request/run and reflink_copy (hypothesis)'),
])


class Tally:
    """Counts of injected faults, by fault and filesystem: how often, what happened, and
    how many times a check of the invariants found data lost or a snapshot incomplete."""

    def __init__(self):
        self.rows = {}
        self.notes = collections.defaultdict(list)

    def record(self, fault, fs, outcome, lost=0):
        assert fault in FAULTS, fault
        row = self.rows.setdefault((fault, fs), {'injected': 0, 'outcomes': collections.Counter(), 'data_lost': 0})
        row['injected'] += 1
        row['outcomes'][outcome] += 1
        row['data_lost'] += lost

    def note(self, fault, text):
        if text not in self.notes[fault]:
            self.notes[fault].append(text)

    def as_json(self):
        faults = []
        for key, title in FAULTS.items():
            per_fs = {fs: {'injected': row['injected'], 'outcomes': dict(row['outcomes']), 'data_lost': row['data_lost']}
                      for (fault, fs), row in sorted(self.rows.items()) if fault == key}
            if per_fs:
                faults.append({'key': key, 'title': title, 'fs': per_fs, 'notes': self.notes.get(key, [])})
        return faults


TALLY = Tally()


# ---------------------------------------------------------------- the invariants

class Chain:
    """What a snapshot root must look like whatever happened to the runs: every published
    snapshot equals the frozen source of the round that made it, latest names one of them,
    no published snapshot vanishes unless retention (keep last N) allows it, no .partial is
    ever listed, linked against or made latest.

    ``expect(ref)`` sets the frozen source that snapshots published from now on must equal.
    ``check()`` returns a list of problems (empty = fine) and remembers the state.
    """

    def __init__(self, dest, keep_last, job=None):
        self.dest = Path(dest)
        self.keep_last = keep_last
        self.job = job
        self.ref_of = {}
        self.current_ref = None
        self.seen = []

    def expect(self, ref):
        self.current_ref = Path(ref)

    def check(self, listed=True):
        problems = []
        names = snapshot_names(self.dest)
        before = list(self.seen)
        new = [n for n in names if n not in before]
        for name in new:
            self.ref_of[name] = self.current_ref
        # No earlier snapshot lost: only retention may take one, and retention (keep last N)
        # keeps the newest N of everything published so far.
        everything = sort_names(set(before + new))
        must_keep = set(everything[-max(self.keep_last, 1):]) if self.keep_last is not None else set(everything)
        lost = [n for n in before if n not in names and n in must_keep]
        if lost:
            problems.append('published snapshots vanished: %s' % lost)
        for name in names:
            ref = self.ref_of.get(name)
            if ref is None:
                problems.append('%s: snapshot of unknown origin' % name)
                continue
            problems += tree_problems(ref, self.dest / name)
        target = latest(self.dest)
        if (names or target is not None) and target not in names:
            problems.append('latest -> %r, not a published snapshot (%s)' % (target, names))
        if self.job is not None and listed:
            shown = self.job.listed()
            if shown != names:
                problems.append('fslinks-snapshot list shows %s, the root has %s' % (shown, names))
        self.seen = names
        return problems

    def forget_unused_refs(self):
        """Delete frozen copies no snapshot needs any more."""
        live = {self.ref_of[n] for n in self.seen if n in self.ref_of} | {self.current_ref}
        for name in list(self.ref_of):
            if name not in self.seen:
                ref = self.ref_of.pop(name)
                if ref not in live and ref is not None and ref.exists():
                    subprocess.run(['rm', '-rf', '--one-file-system', str(ref)], check=False)
