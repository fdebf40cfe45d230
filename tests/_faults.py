# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for tests/reliability: how much to do (short for `make test`, long for
`make reliability`), the tally behind docs/reliability.md, the on-host CLI in a subprocess,
and the invariants every snapshot root must keep whatever went wrong.

Scale: RELIABILITY_LONG=1 (set by `make reliability`) turns the counts up; RELIABILITY_SEED
replays the random choices of a run (every test prints the seed it used).
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from _trees import nanosecond_diff, rsync_diff

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
COLLECTIONS = ROOT / '.collections'

LONG = os.environ.get('RELIABILITY_LONG', '') not in ('', '0', 'no', 'false')
SEED = int(os.environ.get('RELIABILITY_SEED') or time.time_ns() % 1000003)

LOCK_NAME = '.fslinks-snapshot.lock'
EX_OK, EX_FAIL, EX_BUSY = 0, 1, 75


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


def need(tool):
    """Skip (fail under CI) when a command-line tool is missing."""
    if shutil.which(tool) or shutil.which(tool, path='/usr/sbin:/sbin'):
        return
    msg = '%s is needed for this reliability test' % tool
    if os.environ.get('CI'):
        pytest.fail(msg + ' (CI is set, so this is an error, not a skip)', pytrace=False)
    pytest.skip(msg)


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


# ---------------------------------------------------------------- the CLI in a subprocess

# The real CLI entry point (what the role's /usr/local/bin/fslinks-snapshot runs), with two
# test hooks: "ready" on stdout once imported, then wait for FSLINKS_GO_FILE to exist, so
# that many processes can be released at the same moment.
_CLI_CODE = r'''
import os, sys, time
sys.path.insert(0, %r)
from ansible_collections.fslinks.snapshots.plugins.module_utils._jobs import main
go = os.environ.get('FSLINKS_GO_FILE')
if go:
    sys.stdout.write('ready\n')
    sys.stdout.flush()
    while not os.path.exists(go):
        time.sleep(0.0005)
sys.exit(main())
''' % str(COLLECTIONS)


def cli_argv(config_dir, *args):
    return [sys.executable, '-c', _CLI_CODE, '--config-dir', str(config_dir)] + [str(a) for a in args]


def cli(config_dir, *args, timeout=300, env=None):
    """Run `fslinks-snapshot --config-dir CONFIG_DIR ARGS...` to the end."""
    run_env = dict(os.environ)
    run_env.pop('FSLINKS_GO_FILE', None)
    run_env.update(env or {})
    return subprocess.run(cli_argv(config_dir, *args), capture_output=True, text=True, timeout=timeout,
                          check=False, env=run_env)


def cli_start(config_dir, *args, go_file=None):
    """Start the CLI; with GO_FILE it imports, says ready, and waits for the file to exist."""
    env = dict(os.environ)
    env.pop('FSLINKS_GO_FILE', None)
    if go_file:
        env['FSLINKS_GO_FILE'] = str(go_file)
    return subprocess.Popen(cli_argv(config_dir, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


class Job:
    """A job config in its own config dir (what the role deploys), for the CLI."""

    def __init__(self, work, src, dest, name='data', init=True, **cfg):
        self.work = Path(work)
        self.src, self.dest, self.name = Path(src), Path(dest), name
        self.etc = self.work / 'etc'
        self.metrics = self.work / 'metrics'
        self.etc.mkdir(exist_ok=True)
        self.metrics.mkdir(exist_ok=True)
        self.cfg = dict(name=name, src=str(src), dest=str(dest), metrics_dir=str(self.metrics))
        self.cfg.update(cfg)
        self.write()
        if init:
            self.init()

    def init(self):
        """`fslinks-snapshot init JOB`: create the root (the role does it when it deploys)."""
        done = cli(self.etc, 'init', self.name)
        assert done.returncode == 0, done.stderr

    def write(self):
        (self.etc / (self.name + '.json')).write_text(json.dumps(self.cfg))

    def run(self, *extra, **kw):
        return cli(self.etc, 'run', self.name, *extra, **kw)

    def start(self, go_file=None):
        return cli_start(self.etc, 'run', self.name, go_file=go_file)

    def listed(self):
        out = cli(self.etc, 'list', self.name, '--json')
        assert out.returncode == 0, out.stderr
        return [s['name'] for s in json.loads(out.stdout)]

    def metric(self, key):
        path = self.metrics / ('fslinks_snapshot_%s.prom' % self.name)
        for line in path.read_text().splitlines():
            if line.startswith('fslinks_snapshot_' + key + '{'):
                return float(line.rsplit(' ', 1)[1])
        return None


# ---------------------------------------------------------------- looking at a snapshot root

def snapshot_names(dest):
    """Published snapshots, oldest first, as the engine lists them."""
    # pylint: disable=import-outside-toplevel
    from ansible_collections.fslinks.snapshots.plugins.module_utils import _snapshot
    return _snapshot.list_snapshots_at(str(dest))


def sort_names(names):
    # pylint: disable=import-outside-toplevel
    from ansible_collections.fslinks.snapshots.plugins.module_utils import _retention
    return _retention.sort_snapshot_names(names)


def latest(dest):
    p = Path(dest) / 'latest'
    return os.readlink(p) if p.is_symlink() else None


def partials(dest):
    """Leftovers of killed or failed runs (NAME.partial, NAME.deleting, NAME.links, temporary names)."""
    if not Path(dest).is_dir():
        return []
    return sorted(n for n in os.listdir(dest)
                  if n.endswith(('.partial', '.deleting', '.links')) or (n.startswith('.') and n.endswith('.tmp')))


def count_entries(root, limit=None):
    """Entries below ROOT (not following symlinks); stops counting at LIMIT."""
    n = 0
    for _dirpath, dirnames, filenames in os.walk(root):
        n += len(dirnames) + len(filenames)
        if limit and n >= limit:
            break
    return n


def tree_problems(reference, snapshot):
    """[] when SNAPSHOT is what rsync -aHAX makes of REFERENCE (checksums, nanosecond times,
    owners, modes), else the differences as text."""
    problems = []
    diff = rsync_diff(reference, snapshot)
    if diff:
        problems.append('%s differs from its source (rsync -aHAXn --checksum): %s' % (
            os.path.basename(str(snapshot)), b'; '.join(diff[:5]).decode('utf-8', 'backslashreplace')))
    bad = nanosecond_diff(reference, snapshot)
    if bad:
        problems.append('%s: times/owners differ: %r' % (os.path.basename(str(snapshot)), bad[:3]))
    return problems


def freeze(src, dest):
    """A frozen copy of SRC (cp -a keeps nanosecond times, owners, xattrs, ACLs, hard links)."""
    subprocess.run(['cp', '-a', '--sparse=always', '--no-target-directory', os.fsencode(src), os.fsencode(dest)],
                   check=True, capture_output=True)
    return Path(dest)


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


def inodes_of(root):
    """{inode} of the regular files below ROOT."""
    out = set()
    for dirpath, _dirs, files in os.walk(os.fsencode(root)):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                out.add(st.st_ino)
    return out


def linked_outside(snapshot, published_inodes):
    """Files of SNAPSHOT with more than one link whose inode is in no published snapshot
    (the hardlink method may link only to the previous published snapshot)."""
    bad = []
    for dirpath, _dirs, files in os.walk(os.fsencode(snapshot)):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and st.st_ino not in published_inodes:
                bad.append(p)
    return bad


# ---------------------------------------------------------------- source trees

def make_tree(root, files, rng, size=2048, per_dir=50):
    """FILES small files with distinct content in directories of PER_DIR."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        d = root / ('d%03d' % (i // per_dir))
        if i % per_dir == 0:
            d.mkdir(exist_ok=True)
        (d / ('f%05d' % i)).write_bytes(b'%08d' % i + rng.randbytes(max(0, size - 8)))


def mutate(root, rng, fraction=0.05):
    """Change a fraction of the files (new data, new mtime), delete a few, add a few."""
    root = Path(root)
    files = sorted(p for p in root.rglob('f*') if p.is_file())
    if not files:
        return
    for p in rng.sample(files, max(1, int(len(files) * fraction))):
        p.write_bytes(rng.randbytes(rng.randint(0, 8192)))
    for p in rng.sample(files, max(1, int(len(files) * fraction / 4))):
        if p.exists():
            p.unlink()
    d = root / ('new-%08x' % rng.getrandbits(32))
    d.mkdir()
    for i in range(rng.randint(1, 20)):
        (d / ('f-new-%d' % i)).write_bytes(rng.randbytes(rng.randint(0, 4096)))


def crc(path):
    with open(path, 'rb') as f:
        return zlib.crc32(f.read())
