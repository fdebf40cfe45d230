# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A/B of two engines: this checkout against a baseline checkout (another commit), interleaved.

For each filesystem: a fresh loop filesystem, a seeded tree (bench/_treegen.py), a first snapshot
(the PREV every hard-link run links against), then for each of our methods the two engines in
turn (A B A B ...) after one untimed warm-up round, each sample's snapshot deleted afterwards
and the filesystem flushed, as in bench/run.py.  Scenario "changed": 1 % of the files rewritten
since PREV (hard links).  The figure per contender pair is the median of the per-round ratios
this/baseline (pairs of neighbouring runs share the machine's state; a ratio of medians would not).

  .venv/bin/python bench/ab.py --baseline ../base --files 30000 --fs ext4,xfs,btrfs --reps 5

Prints a Markdown table; the JSON goes to bench/results/ab-STAMP.json.  Needs root.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# pylint: disable=wrong-import-position
import _common  # noqa: E402
import _treegen  # noqa: E402
import run as bench  # noqa: E402
from _common import engine_job, settle, sh, syncfs  # noqa: E402

METHODS = {'ext4': ('hardlink', 'copy'), 'xfs': ('hardlink', 'reflink', 'copy'), 'btrfs': ('hardlink', 'reflink', 'btrfs', 'copy')}


def log(msg):
    print('[ab %s] %s' % (time.strftime('%H:%M:%S'), msg), flush=True)


def _pair(method, src, snaps, prev, base):
    """(baseline, this) contenders of one method."""
    this = bench.engine(method, src, snaps, prev)
    that = bench.engine(method, src, snaps, prev)
    that.key, that.label, that.collections = this.key + ':baseline', this.label + ' (baseline)', base
    return that, this


def _ratios(timed, pairs):
    rows = []
    for that, this in pairs:
        pairs_ = list(zip(timed[that.key], timed[this.key]))
        per_round = [b['seconds'] / a['seconds'] for a, b in pairs_]
        # CPU seconds (the process and its workers) move less than wall time on a busy machine.
        cpu = [b['cpu_seconds'] / a['cpu_seconds'] for a, b in pairs_ if a.get('cpu_seconds')]
        rows.append({'method': this.key.split(':', 1)[1], 'baseline_median_s': statistics.median(
            s['seconds'] for s in timed[that.key]), 'this_median_s': statistics.median(
            s['seconds'] for s in timed[this.key]), 'ratio_median': statistics.median(per_round),
            'ratio_min': min(per_round), 'ratio_max': max(per_round), 'rounds': len(per_round),
            'cpu_ratio_median': statistics.median(cpu) if cpu else None,
            'samples': {'baseline': timed[that.key], 'this': timed[this.key]}})
    return rows


def bench_fs(fs, files, args, wd, base):
    tree_bytes = args.tree_bytes(files)
    out = []
    _size, fs_cm = bench.loop_fs(fs, files, args, wd, tree_bytes, 2, 'ab-%s-%d' % (fs, files))
    with fs_cm as mnt:
        src = mnt / 'src'
        src.mkdir()
        _treegen.generate(src, files, seed=args.seed, scale=args.scale)
        srcvol = None
        if fs == 'btrfs':
            srcvol = mnt / 'srcvol'
            sh('btrfs', 'subvolume', 'create', srcvol)
            sh('cp', '-a', '--reflink=always', '%s/.' % src, '%s/' % srcvol)
        syncfs(mnt)
        snaps = mnt / 'snaps'
        _t, first = engine_job({'op': 'snapshot', 'src': str(src), 'dest': str(snaps), 'method': 'hardlink'})
        prev = os.path.basename(first['snapshot'])
        pairs = []
        for method in METHODS[fs]:
            if method == 'btrfs':
                snaps_b = mnt / 'snaps-btrfs'
                _t, first_b = engine_job({'op': 'snapshot', 'src': str(srcvol), 'dest': str(snaps_b),
                                          'method': 'btrfs'})
                pairs.append(_pair('btrfs', srcvol, snaps_b, os.path.basename(first_b['snapshot']), base))
            else:
                pairs.append(_pair(method, src, snaps, prev, base))
        settle(mnt, fs == 'btrfs')
        contenders = [c for pair in pairs for c in pair]
        log('%s %d files, steady: %s' % (fs, files, ', '.join(c.key for c in contenders)))
        _warm, timed = bench.measure(contenders, mnt, fs == 'btrfs', args.reps, args.warmup)
        out += [dict(row, fs=fs, files=files, scenario='steady') for row in _ratios(timed, pairs)]
        _treegen.change_files(src, 0.01, seed=args.seed)
        settle(mnt, fs == 'btrfs')
        pairs = [p for p in pairs if p[1].key == 'engine:hardlink']
        contenders = [c for pair in pairs for c in pair]
        log('%s %d files, changed: %s' % (fs, files, ', '.join(c.key for c in contenders)))
        _warm, timed = bench.measure(contenders, mnt, fs == 'btrfs', args.reps, args.warmup)
        out += [dict(row, fs=fs, files=files, scenario='changed') for row in _ratios(timed, pairs)]
    return out


def table(rows, meta):
    lines = ['A/B: this engine (sha256 %s) against the baseline (%s), median of per-round ratios; load %s'
             % (meta['this_sha256'][:12], meta['baseline_sha256'][:12],
                ' '.join('%.1f' % x for x in meta['loadavg'])), '',
             '| fs | files | scenario | method | baseline s | this s | this/baseline (min-max) | CPU this/baseline |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append('| %s | %d | %s | %s | %.3f | %.3f | %.3f (%.3f-%.3f) | %s |' % (
            r['fs'], r['files'], r['scenario'], r['method'], r['baseline_median_s'], r['this_median_s'],
            r['ratio_median'], r['ratio_min'], r['ratio_max'],
            '-' if r['cpu_ratio_median'] is None else '%.3f' % r['cpu_ratio_median']))
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--baseline', required=True, help='a checkout of the collection to compare with')
    p.add_argument('--files', type=int, default=30000)
    p.add_argument('--fs', default='ext4,xfs,btrfs')
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--scale', type=float, default=1.0)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--workdir', default=os.environ.get('FSLINKS_BENCH_TMPDIR', '/var/tmp'))
    p.add_argument('--results-dir', default=str(_common.ROOT / 'bench' / 'results'))
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit('ab: needs root (loop devices, mount)')
    if not (Path(args.baseline) / 'plugins' / 'module_utils' / '_snapshot.py').is_file():
        raise SystemExit('ab: %s is not a checkout of the collection (no plugins/module_utils/_snapshot.py)'
                         % args.baseline)
    args.tree_bytes = lambda n: int(n * (1 - _treegen.LINK_SHARE) * (1 - _treegen.EMPTY) * bench.MEAN_FILE * args.scale)
    fss = [f.strip() for f in args.fs.split(',') if f.strip()]
    rows = []
    with _common.workdir(args.workdir) as wd:
        this, this_sha = _common.freeze_collection(wd / 'collection')
        os.environ['FSLINKS_BENCH_COLLECTIONS'] = str(this)
        base, base_sha = _common.freeze_collection(wd / 'baseline', Path(args.baseline).resolve())
        meta = {'this_sha256': this_sha, 'baseline_sha256': base_sha, 'baseline': str(Path(args.baseline).resolve()),
                'host': _common.host_info(), 'args': sys.argv[1:] if argv is None else argv,
                'loadavg_start': os.getloadavg()}
        try:
            for fs in fss:
                rows += bench_fs(fs, args.files, args, wd, base)
        finally:
            shutil.rmtree(wd / 'baseline', ignore_errors=True)
    meta['loadavg'] = os.getloadavg()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / ('ab-%s.json' % stamp)).write_text(json.dumps({'meta': meta, 'rows': rows}, indent=1) + '\n')
    print(table(rows, meta))
    return 0


if __name__ == '__main__':
    sys.exit(main())
