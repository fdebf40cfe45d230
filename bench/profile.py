# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Profile one run of our snapshot engine (hardlink method by default) on a loop filesystem.

Builds the benchmark's seeded tree (bench/_treegen.py) on a fresh loop filesystem, takes a first
snapshot (PREV), then:
  1. times one plain run (fresh interpreter, as bench/run.py does: the reference wall time);
  2. runs it once in this process under cProfile and prints the top functions by tottime;
  3. if strace is installed, runs it once under ``strace -c -f`` and prints syscalls per file:
     the counts of a worker that only imports the engine are subtracted, so interpreter start-up
     does not count.
Each run's snapshot is deleted afterwards, so all three see the same state.

  .venv/bin/python bench/profile.py --fs ext4 --files 10000
  .venv/bin/python bench/profile.py --fs xfs --method reflink --scenario changed --top 40
  .venv/bin/python bench/profile.py --dir /mnt/scratch      # an existing fs instead of a loop one
"""

from __future__ import annotations

import os
import sys

# This file is called profile.py: keep bench/ off sys.path while cProfile imports the standard
# library's profile module, or it would import this file instead.
_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or '.') != _BENCH]
# pylint: disable=wrong-import-position
import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

sys.path.append(_BENCH)
import _common  # noqa: E402
import _treegen  # noqa: E402
import run as bench_run  # noqa: E402


def parse_strace(path):
    """{syscall: (calls, errors)} from an ``strace -c`` summary."""
    out = {}
    with open(path, encoding='utf-8', errors='replace') as f:
        for line in f:
            fields = line.split()
            if len(fields) < 5 or not fields[3].isdigit() or fields[-1] == 'total':
                continue
            errors = int(fields[4]) if len(fields) == 6 and fields[4].isdigit() else 0
            out[fields[-1]] = (int(fields[3]), errors)
    return out


def strace_counts(job):
    with tempfile.NamedTemporaryFile(prefix='fslinks-strace-', suffix='.txt') as tf:
        subprocess.run(['strace', '-c', '-f', '-o', tf.name, sys.executable, str(_common.WORKER), json.dumps(job)],
                       check=True, capture_output=True)
        return parse_strace(tf.name)


def engine_module():
    coll = str(_common.ROOT / '.collections')
    if coll not in sys.path:
        sys.path.insert(0, coll)
    from ansible_collections.fslinks.snapshots.plugins.module_utils import _snapshot  # pylint: disable=import-outside-toplevel
    return _snapshot


def clean(root, keep, btrfs):
    for name in os.listdir(root):
        if name not in keep:
            _common.remove(os.path.join(root, name), btrfs)
    _common.settle(root, btrfs)


def profile(args, base):
    btrfs = args.method == 'btrfs'
    src = os.path.join(base, 'src')
    snaps = os.path.join(base, 'snaps')
    os.mkdir(src)
    t0 = time.perf_counter()
    if btrfs:
        os.rmdir(src)
        _common.sh('btrfs', 'subvolume', 'create', src)
    tree = _treegen.generate(src, args.files, seed=args.seed, scale=args.scale)
    _common.syncfs(base)
    print('tree: %(files)d files, %(dirs)d dirs, %(symlinks)d symlinks, %(hardlinks)d inner hard links, '
          '%(bytes)d bytes' % tree, '(%.1fs)' % (time.perf_counter() - t0))
    # As bench/run.py makes it: a record that counts xattr files (a btrfs snapshot's does not),
    # so that a hard-link run compares xattrs only where the previous snapshot may have them.
    first_method = 'btrfs' if args.method == 'btrfs' else 'hardlink'
    _t, first = _common.engine_job({'op': 'snapshot', 'src': src, 'dest': snaps, 'method': first_method})
    prev = os.path.basename(first['snapshot'])
    keep = {prev, 'latest', '.fslinks-snapshot.lock'}
    if args.scenario == 'changed':
        print('changed files:', _treegen.change_files(src, 0.01, seed=args.seed))
    _common.settle(base, btrfs)
    job = {'op': 'snapshot', 'src': src, 'dest': snaps, 'method': args.method}
    entries = tree['files'] + tree['dirs'] + tree['symlinks']

    # 1. reference: as bench/run.py times it
    _t, ref = _common.engine_job(job)
    clean(snaps, keep, btrfs)
    print('\n== plain run (fresh interpreter, run() only): %.3f s, %.1f µs/file; stats %s'
          % (ref['seconds'], ref['seconds'] / tree['files'] * 1e6,
             {k: v for k, v in (ref.get('stats') or {}).items() if v}))

    # 2. cProfile in this process
    snapshot = engine_module()
    req = snapshot.Request(src, snaps, method=args.method)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(snapshot.run, req)
    wall = time.perf_counter() - t0
    clean(snaps, keep, btrfs)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    stats.sort_stats(args.sort).print_stats(args.top)
    print('\n== cProfile (%s method, %s, %d files; %.3f s under the profiler), top %d by %s'
          % (args.method, args.scenario, tree['files'], wall, args.top, args.sort))
    text = buf.getvalue()
    print(text[text.find('   ncalls'):] if '   ncalls' in text else text)

    # 3. syscalls
    if shutil.which('strace') and not args.no_strace:
        base_counts = strace_counts({'op': 'noop'})
        run_counts = strace_counts(job)
        clean(snaps, keep, btrfs)
        net = {}
        for name, (calls, errs) in run_counts.items():
            b_calls, b_errs = base_counts.get(name, (0, 0))
            if calls - b_calls > 0:
                net[name] = (calls - b_calls, max(0, errs - b_errs))
        total = sum(c for c, _e in net.values())
        print('== syscalls of run() (strace -c -f, minus an import-only worker): %d in all, '
              '%.2f per file, %.2f per entry (%d files, %d dirs, %d symlinks)'
              % (total, total / tree['files'], total / entries, tree['files'], tree['dirs'], tree['symlinks']))
        print('%-22s %10s %10s %9s' % ('syscall', 'calls', 'per file', 'errors'))
        for name, (calls, errs) in sorted(net.items(), key=lambda kv: -kv[1][0])[:args.top]:
            print('%-22s %10d %10.2f %9d' % (name, calls, calls / tree['files'], errs))
    elif not args.no_strace:
        print('== strace not installed (apt-get install strace, or make bench-profile): no syscall counts')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--fs', default='ext4', choices=sorted(_common.fsutil.MKFS), help='loop filesystem (default: ext4)')
    p.add_argument('--dir', help='work in this existing directory instead of a fresh loop filesystem')
    p.add_argument('--files', type=int, default=10000)
    p.add_argument('--scale', type=float, default=0.2, help='file size factor (default 0.2: data barely matters to links)')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--method', default='hardlink', choices=['hardlink', 'reflink', 'copy', 'btrfs'])
    p.add_argument('--scenario', default='steady', choices=['steady', 'changed'])
    p.add_argument('--top', type=int, default=25)
    p.add_argument('--sort', default='tottime', help='pstats sort key (default: tottime)')
    p.add_argument('--no-strace', action='store_true')
    p.add_argument('--workdir', default=os.environ.get('FSLINKS_BENCH_TMPDIR', '/var/tmp'))
    args = p.parse_args(argv)
    if args.dir:
        base = tempfile.mkdtemp(prefix='fslinks-profile-', dir=args.dir)
        try:
            profile(args, base)
        finally:
            _common.remove(os.path.join(base, 'snaps'), btrfs=True)
            _common.remove(os.path.join(base, 'src'), btrfs=True)
            shutil.rmtree(base, ignore_errors=True)
        return 0
    if os.geteuid() != 0:
        raise SystemExit('profile: loop filesystems need root (or use --dir)')
    fs = 'btrfs' if args.method == 'btrfs' else args.fs
    tree_bytes = int(args.files * (1 - _treegen.LINK_SHARE) * (1 - _treegen.EMPTY) * bench_run.MEAN_FILE * args.scale)
    with _common.workdir(args.workdir) as wd, \
            bench_run.loop_fs(fs, args.files, args, wd, tree_bytes, 2, 'profile-%s' % fs)[1] as mnt:
        print('%s loop filesystem at %s' % (fs, mnt))
        profile(args, str(mnt))
    return 0


if __name__ == '__main__':
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
