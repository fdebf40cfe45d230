# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pieces of bench/: loop filesystems (tests/helpers/loopfs.py), timed subprocesses, clean-up."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKER = BENCH / '_worker.py'
LOOP_PREFIX = 'fslinks-bench-'


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# The tests' loop-filesystem helper, reused as is (make_loop_fs always unmounts and detaches).
# Loaded by path under its own name: bench/ does not put tests/ on sys.path.
fsutil = sys.modules.get('helpers.loopfs') or _load('fslinks_test_loopfs', ROOT / 'tests' / 'helpers' / 'loopfs.py')


@contextlib.contextmanager
def workdir(base):
    """A directory BASE/fslinks-bench-XXXX for images and mount points, with a pid file so that a
    later run cleans it up if this one is SIGKILLed (same scheme as the test fixtures). BASE is
    created if missing; one that cannot be ends the run with a one-line message."""
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as exc:
        raise SystemExit('bench: cannot create the work directory %s: %s' % (base, exc.strerror or exc)) from None
    if os.geteuid() == 0 and os.path.isdir(base):
        fsutil.cleanup_stale(base, LOOP_PREFIX)
    d = Path(tempfile.mkdtemp(prefix=LOOP_PREFIX, dir=base))
    (d / 'pid').write_text(str(os.getpid()))
    try:
        yield d
    finally:
        for frozen in ('collection', 'baseline'):       # freeze_collection's copies
            shutil.rmtree(d / frozen, ignore_errors=True)
        with contextlib.suppress(OSError):
            (d / 'pid').unlink()
        with contextlib.suppress(OSError):
            d.rmdir()


class Timed:
    """Wall time, CPU time and peak RSS of one child process."""
    __slots__ = ('seconds', 'cpu', 'maxrss_kb', 'rc', 'stdout', 'stderr')

    def __init__(self, seconds, cpu, maxrss_kb, rc, stdout, stderr):
        self.seconds, self.cpu, self.maxrss_kb = seconds, cpu, maxrss_kb
        self.rc, self.stdout, self.stderr = rc, stdout, stderr


GNU_TIME = '/usr/bin/time'


def run_timed(argv, env=None, cwd=None, rss=True):
    """Run ARGV; wall time from just before the fork to the reaping wait4.

    Peak RSS: not wait4's ru_maxrss of our own child, which Linux charges with the forking
    parent's (this big Python's) resident set from before exec; instead GNU time runs ARGV and
    reports its child's peak (%M, KiB; for a tree of processes the largest of them). That adds
    GNU time's own fork+exec (~1 ms) to the wall time. rss=False: no GNU time, maxrss_kb None.
    """
    rss = rss and os.path.exists(GNU_TIME)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile('r', prefix='fslinks-bench-time-') as tf:
        full = [GNU_TIME, '-q', '-f', '%M', '-o', tf.name] + list(argv) if rss else list(argv)
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=err, env=env, cwd=cwd)  # pylint: disable=consider-using-with
        _pid, status, ru = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        maxrss = None
        if rss:
            lines = [ln for ln in tf.read().split() if ln.strip().isdigit()]
            maxrss = int(lines[-1]) if lines else None
        return Timed(seconds, ru.ru_utime + ru.ru_stime, maxrss, proc.returncode,
                     out.read().decode('utf-8', 'replace'), err.read().decode('utf-8', 'replace'))


def main_guard(main, label):
    """A bench script's exit: Ctrl-C is 130, a failed tool one line naming it, not a traceback."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except subprocess.CalledProcessError as exc:
        sys.exit('%s: %s failed: %s' % (label, ' '.join(map(str, exc.cmd)), (exc.stderr or '').strip()))


def check(t, what):
    if t.rc != 0:
        raise RuntimeError('%s failed (rc=%s): %s' % (what, t.rc, (t.stderr or t.stdout)[-2000:]))
    return t


def sh(*argv):
    """Run a helper command (not timed), raise on failure, return stdout."""
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True).stdout


def engine_job(job, collections=None):
    """One engine run in a fresh interpreter (bench/_worker.py); returns (Timed, worker JSON).
    Timed.seconds there is the process's life; the JSON's 'seconds' is run() alone, and
    Timed.maxrss_kb the worker's own VmHWM (peak resident set since exec).  ``collections``:
    another collections path to import the engine from (bench/ab.py's baseline)."""
    env = dict(os.environ, FSLINKS_BENCH_COLLECTIONS=str(collections)) if collections else None
    t = check(run_timed([sys.executable, str(WORKER), json.dumps(job)], env=env, rss=False), 'engine %s' % job)
    res = json.loads(t.stdout.strip().splitlines()[-1])
    t.maxrss_kb = res.get('vmhwm_kb')
    return t, res


def syncfs(path):
    """Flush one filesystem (coreutils ``sync -f``); returns the seconds it took."""
    t0 = time.perf_counter()
    subprocess.run(['sync', '-f', str(path)], check=True)
    return time.perf_counter() - t0


def remove(path, btrfs=False):
    """Delete a tree (rm -rf), or a btrfs subvolume and any nested ones."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if btrfs and os.lstat(path).st_ino == 256 and \
            subprocess.run(['stat', '-f', '-c', '%T', str(path)], capture_output=True, text=True,
                           check=False).stdout.strip() == 'btrfs':
        subprocess.run(['btrfs', 'property', 'set', '-ts', str(path), 'ro', 'false'],
                       check=False, capture_output=True)
        sh('btrfs', 'subvolume', 'delete', '--commit-after', path)   # else the cleaner waits ~30 s
        return
    subprocess.run(['rm', '-rf', '--one-file-system', str(path)], check=True)


def settle(mnt, btrfs=False):
    """After a clean-up: wait for btrfs's cleaner to drop deleted subvolumes and flush the fs, so
    the next sample starts on a quiet, clean filesystem."""
    if btrfs:
        subprocess.run(['btrfs', 'subvolume', 'sync', str(mnt)], check=False, capture_output=True)
    syncfs(mnt)


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return None


def host_info():
    info = {
        'kernel': platform.release(), 'machine': platform.machine(), 'cpus': os.cpu_count(),
        'python': platform.python_version(),
        'rsync': tool_version(['rsync', '--version']), 'cp': tool_version(['cp', '--version']),
        'btrfs-progs': tool_version(['btrfs', '--version']),
        'xfsprogs': tool_version(['mkfs.xfs', '-V']),
        'ansible-core': tool_version([str(Path(sys.executable).parent / 'ansible'), '--version']),
        'loadavg_start': os.getloadavg(),
    }
    with contextlib.suppress(OSError):
        with open('/proc/meminfo', encoding='ascii') as f:
            info['mem_total_kb'] = int(f.readline().split()[1])
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo', encoding='ascii') as f:
            for line in f:
                if line.startswith('model name'):
                    info['cpu_model'] = line.split(':', 1)[1].strip()
                    break
    with contextlib.suppress(subprocess.CalledProcessError, OSError):
        info['git_commit'] = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', '--short', 'HEAD'],
                                            capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', '-C', str(ROOT), 'status', '--porcelain', '--', 'plugins'],
                               capture_output=True, text=True, check=True).stdout.strip()
        info['engine_dirty'] = bool(dirty)
    return info


def git_commit(root):
    """Short commit of the checkout ROOT (+ '-dirty' if its plugins/ has uncommitted changes), or None."""
    try:
        commit = subprocess.run(['git', '-C', str(root), 'rev-parse', '--short', 'HEAD'],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(['git', '-C', str(root), 'status', '--porcelain', '--', 'plugins'],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, OSError):
        return None
    return commit + ('-dirty' if dirty else '')


def freeze_collection(dest, root=ROOT):
    """Copy what Ansible and the engine load (plugins/, meta/, galaxy.yml) of the checkout ROOT
    to DEST/ansible_collections/fslinks/snapshots; returns (collections path, sha256 of the
    engine's module_utils files)."""
    coll = Path(dest) / 'ansible_collections' / 'fslinks' / 'snapshots'
    coll.mkdir(parents=True)
    for name in ('plugins', 'meta'):
        if (root / name).is_dir():
            shutil.copytree(root / name, coll / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    shutil.copy2(root / 'galaxy.yml', coll / 'galaxy.yml')
    digest = hashlib.sha256()
    for f in sorted((coll / 'plugins' / 'module_utils').glob('*.py')):
        digest.update(f.name.encode() + b'\0' + f.read_bytes())
    return Path(dest), digest.hexdigest()


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def which(cmd):
    return shutil.which(cmd) or shutil.which(cmd, path='/usr/local/sbin:/usr/sbin:/sbin')
