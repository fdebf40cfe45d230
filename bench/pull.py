# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pull benchmark (issue 11): daily pulls over ssh, ours against rsnapshot's method.

A client tree on its own loop ext4 (one IMAGE file of random data plus FILES small files from
bench/_treegen.py) is pulled DAYS times over a real, private sshd on 127.0.0.1 (tests/helpers/
sshd.py: its own host key, the client key forced to `fslinks-snapshot serve TREE`, as the role
sets it up).  Before every pull but the first, 1 % of the image's blocks (scattered 4..64 KiB
pieces, 4 KiB aligned, never overlapping) and 1 % of the small files (rewritten whole) change,
with an mtime a day later; the bytes changed are counted exactly.

Per backup filesystem (a fresh loop XFS reflink=1, btrfs or ext4), interleaved day by day (the
order flips every day):
  ours       `fslinks-snapshot run JOB` (the CLI process whole: rsync + snapshot + record +
             metrics), its rsync through a tiny bash wrapper that logs when rsync ran, so that
             its wall time splits into before rsync / rsync / after rsync;
  rsnapshot  `rsync -a --delete --numeric-ids --link-dest=PREVIOUS` into a new tree (rsnapshot's
             method with its default arguments), same ssh command, same key, same forced command.
After each pull the filesystem is flushed (sync -f, timed apart) and its statvfs "used" read.
Chain space: allocated extents of every file of a chain counted once (the engine's
`_inspect.usage`, what `fslinks-snapshot du --json` reports as total_bytes; hard links and shared
extents once), after the first and the last day; statvfs deltas are reported beside it (XFS's
count includes CoW blocks reserved ahead).  Then the "unchanged tree" rounds: ours, a bare
`rsync -a` of the unchanged tree into an up-to-date copy (rsnapshot's last tree) and rsnapshot's
method, interleaved, after one warm-up round; the median of per-round ratios.

Results: bench/results/pull-STAMP.json (+ pull-latest.json) and docs/benchmarks-pull.md.
Needs root (loop devices, sshd).  Examples:
  make bench-pull                                              # 1 GiB + 20,000 files, 10 days, 3 fs
  make bench-pull BENCH_PULL_ARGS='--image-size 64M --files 2000 --days 3 --fs xfs'   # < 1 min
  .venv/bin/python bench/pull.py --report-only bench/results/pull-latest.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# pylint: disable=wrong-import-position
import _common  # noqa: E402
import _treegen  # noqa: E402
from _common import ROOT, check, fsutil, run_timed, syncfs  # noqa: E402

COLLECTIONS = ROOT / '.collections'
for _p in (str(ROOT / 'tests'), str(COLLECTIONS)):   # the tests' sshd helper; the engine's own counters
    if _p not in sys.path:
        sys.path.insert(0, _p)
from helpers.sshd import SSHD, Sshd  # noqa: E402
from ansible_collections.fslinks.snapshots.plugins.module_utils import _inspect, _pull, _snapshot  # noqa: E402

ALL_FS = ('xfs', 'ext4', 'btrfs')
METHOD = {'xfs': 'reflink', 'btrfs': 'btrfs', 'ext4': 'hardlink'}
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
BLOCK = 4 * KiB
SLOT = 64 * KiB             # the image is cut in 64 KiB slots; a day's pieces take distinct ones
SPACE_TARGET = 1.1          # chain on XFS and btrfs <= 1.1 x (first copy + bytes changed)
UNCHANGED_TARGET = 1.1      # a pull of an unchanged tree <= 1.1 x a bare rsync -a of it
JOB = 'pull'
IMAGE = 'image.raw'
CLI = '''import sys
sys.path.insert(0, %r)
from ansible_collections.fslinks.snapshots.plugins.module_utils._jobs import main
sys.exit(main())
'''
# Ours' rsync runs through this: one bash exec more, and a line "start end rc" per rsync run.
WRAPPER = '''#!/bin/bash
s=$EPOCHREALTIME
%s "$@"
rc=$?
echo "$s $EPOCHREALTIME $rc" >>"$FSLINKS_BENCH_RSYNC_LOG"
exit $rc
'''


def log(msg):
    print('[bench-pull %s] %s' % (time.strftime('%H:%M:%S'), msg), flush=True)


def size_arg(text):
    return fsutil.parse_size(text)


# ---------------------------------------------------------------- the client tree and its days

def make_tree(data, image_size, files, seed, scale):
    """DATA/image.raw (IMAGE_SIZE seeded random bytes) and DATA/small (bench/_treegen.py)."""
    data.mkdir()
    (data / 'small').mkdir()
    summary = _treegen.generate(data / 'small', files, seed=seed, scale=scale)
    rng = random.Random(seed ^ 0x1a6e)
    with open(data / IMAGE, 'wb') as f:
        left = image_size
        while left:
            n = min(left, MiB)
            f.write(rng.randbytes(n))
            left -= n
    ns = _treegen.T0 * 10**9
    os.utime(data / IMAGE, ns=(ns, ns))
    summary['image_bytes'] = image_size
    return summary


def _candidates(small):
    """Non-empty regular files of the small tree, one name per inode, sorted (deterministic)."""
    seen, out = set(), []
    for rel in _treegen.regular_files(small):
        st = os.lstat(os.path.join(small, rel))
        if st.st_size and st.st_ino not in seen:
            seen.add(st.st_ino)
            out.append((rel, st.st_size))
    return out


def _change_image(image, rng, share, ns):
    """SHARE of IMAGE's bytes rewritten in scattered 4..64 KiB pieces, 4 KiB aligned, in distinct 64 KiB
    slots, then its mtime set to NS; returns the pieces' lengths."""
    size = image.stat().st_size
    target = max(BLOCK, int(size * share) // BLOCK * BLOCK)
    pieces, total = [], 0
    while total < target:
        n = min(rng.randrange(1, SLOT // BLOCK + 1) * BLOCK, target - total)
        pieces.append(n)
        total += n
    pieces = pieces[:size // SLOT]
    slots = sorted(rng.sample(range(size // SLOT), len(pieces)))
    fd = os.open(image, os.O_WRONLY)
    try:
        for slot, n in zip(slots, pieces):
            os.pwrite(fd, rng.randbytes(n), slot * SLOT + rng.randrange((SLOT - n) // BLOCK + 1) * BLOCK)
    finally:
        os.close(fd)
    os.utime(image, ns=(ns, ns))
    return pieces


def change_day(data, day, seed, share=0.01):
    """Day DAY's change: SHARE of the image's bytes in scattered 4..64 KiB pieces and SHARE of the
    small files rewritten whole, all with an mtime DAY days after the tree's; exact byte counts."""
    rng = random.Random(seed * 1000003 + day)
    ns = (_treegen.CHANGED_MTIME + day * 86400) * 10**9 + rng.randrange(10**9)
    pieces = _change_image(data / IMAGE, rng, share, ns)
    small = data / 'small'
    cands = _candidates(small)
    nfiles = len(_treegen.regular_files(small))
    chosen = rng.sample(cands, min(len(cands), max(1, round(nfiles * share))))
    small_bytes = small_blocks = 0
    for rel, n in chosen:
        fd = os.open(small / rel, os.O_WRONLY)
        try:
            os.pwrite(fd, rng.randbytes(n), 0)
        finally:
            os.close(fd)
        os.utime(small / rel, ns=(ns, ns))
        small_bytes += n
        small_blocks += -(-n // BLOCK) * BLOCK
    return {'day': day, 'image_bytes': sum(pieces), 'image_pieces': len(pieces), 'small_files': len(chosen),
            'small_bytes': small_bytes, 'small_block_bytes': small_blocks,
            'bytes': sum(pieces) + small_bytes, 'block_bytes': sum(pieces) + small_blocks}


# ---------------------------------------------------------------- rsync -S and shared blocks

def sparse_check(kind, wd, seed, image_size=64 * MiB, share=0.01):
    """Local, no ssh: an image in a mirror, a snapshot of it (btrfs snapshot, or cp --reflink on
    XFS), then days alternating rsync -a and rsync -aS (both --inplace --no-whole-file, as ours
    into its mirror), each followed by a snapshot; the chain's growth (extents) against rsync's
    literal data, and the one-byte hole punches rsync made (strace -c, when strace is there)."""
    rows = []
    with fsutil.make_loop_fs(kind, GiB, wd, name='sparse-' + kind) as mnt:
        src, chain = mnt / 'src', mnt / 'chain'
        src.mkdir()
        chain.mkdir()
        rng = random.Random(seed)
        with open(src / IMAGE, 'wb') as f:
            f.write(rng.randbytes(image_size))
        mirror = chain / 'mirror'
        if kind == 'btrfs':
            _common.sh('btrfs', 'subvolume', 'create', mirror)
        else:
            mirror.mkdir()
        _common.sh('rsync', '-a', str(src) + '/', str(mirror) + '/')

        def snap(name):
            if kind == 'btrfs':
                _common.sh('btrfs', 'subvolume', 'snapshot', '-r', mirror, chain / name)
            else:
                _common.sh('cp', '-a', '--reflink=always', mirror, chain / name)
        snap('s0')
        names = ['mirror', 's0']
        base = extents(chain, names)['bytes']
        strace = _common.which('strace')
        for day, flags in enumerate(('-a', '-aS', '-a', '-aS'), 1):
            changed = sum(_change_image(src / IMAGE, rng, share, (_treegen.CHANGED_MTIME + day * 86400) * 10**9))
            argv = ['rsync', flags, '--inplace', '--no-whole-file', '--stats', str(src) + '/', str(mirror) + '/']
            trace = wd / 'sparse-strace.txt'
            if strace:
                argv = [strace, '-f', '-e', 'trace=fallocate', '-o', str(trace)] + argv
            out = _common.sh(*argv)
            literal = int(re.search(r'Literal data: ([0-9,]+)', out).group(1).replace(',', ''))
            punches = None
            if strace:
                punches = trace.read_text().count('FALLOC_FL_PUNCH_HOLE')
                trace.unlink()
            snap('s%d' % day)
            names.append('s%d' % day)
            now = extents(chain, names)['bytes']
            rows.append({'flags': flags, 'changed_bytes': changed, 'literal_bytes': literal, 'growth_bytes': now - base,
                         'hole_punches': punches})
            base = now
        if kind == 'btrfs':
            for name in names:
                _common.remove(chain / name, btrfs=True)
    return {'fs': kind, 'image_bytes': image_size, 'rows': rows}


# ---------------------------------------------------------------- measuring space

def used_bytes(mnt):
    st = os.statvfs(mnt)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def extents(root, names):
    """Allocated bytes of the trees ROOT/NAME..., every extent (and hard-linked inode) once."""
    syncfs(root)
    t0 = time.perf_counter()
    use = _inspect.usage(str(root), names=list(names))
    return {'bytes': use['total_bytes'], 'trees': len(names), 'estimate': use['estimate'],
            'reasons': use.get('reasons', []), 'seconds': round(time.perf_counter() - t0, 2)}


def ours_trees(root):
    """Everything our root holds: the snapshots and the mirror."""
    return sorted(n for n in os.listdir(root) if (root / n).is_dir() and not (root / n).is_symlink())


# ---------------------------------------------------------------- one backup filesystem

class Stage:
    """One backup filesystem: ours and rsnapshot's chains side by side, pulled from CLIENT."""

    def __init__(self, kind, mnt, wd, sshd, data, frozen):
        self.kind, self.mnt, self.sshd, self.data = kind, mnt, sshd, data
        self.remote = sshd.remote(data)
        self.root = mnt / 'ours'
        self.rsnap = mnt / 'rsnapshot'
        self.rsnap.mkdir()
        self.etc = wd / ('etc-' + kind)
        self.etc.mkdir()
        cfg = dict(name=JOB, src=self.remote, dest=str(self.root), metrics_dir=str(self.etc), **sshd.job_options())
        (self.etc / (JOB + '.json')).write_text(json.dumps(cfg))
        self.cli = [sys.executable, '-c', CLI % str(frozen), '--config-dir', str(self.etc)]
        check(run_timed(self.cli + ['init', JOB], rss=False), 'init')
        self.req = _snapshot.Request(self.remote, str(self.root), **sshd.job_options())
        self.ssh_e = _pull.ssh_command(self.req)
        wrap = wd / 'wrap'
        if not (wrap / 'rsync').exists():
            wrap.mkdir(exist_ok=True)
            (wrap / 'rsync').write_text(WRAPPER % _common.which('rsync'))
            (wrap / 'rsync').chmod(0o755)
        self.rsync_log = wd / ('rsync-%s.log' % kind)
        self.env = dict(os.environ, PATH='%s:%s' % (wrap, os.environ.get('PATH', '')),
                        FSLINKS_BENCH_RSYNC_LOG=str(self.rsync_log))
        self.rsnap_days = []

    def _flushed(self, before, t, extra):
        sync_s = syncfs(self.mnt)
        extra.update(seconds=round(t.seconds, 4), sync_seconds=round(sync_s, 4), cpu_seconds=round(t.cpu, 4),
                     statvfs_delta=used_bytes(self.mnt) - before)
        return extra

    def ours(self):
        before = used_bytes(self.mnt)
        with open(self.rsync_log, 'w', encoding='ascii'):
            pass
        wall0 = time.time()
        t = check(run_timed(self.cli + ['run', JOB], env=self.env, rss=False), 'fslinks-snapshot run')
        runs = [ln.split() for ln in self.rsync_log.read_text().splitlines() if ln.strip()]
        rsync_s = sum(float(e) - float(s) for s, e, _rc in runs)
        pre = float(runs[0][0]) - wall0 if runs else None
        names = [n for n in ours_trees(self.root) if not n.startswith('.')]
        record = json.loads((self.root / (names[-1] + '.json')).read_text())
        rs = record.get('rsync') or {}
        out = {'snapshot': names[-1], 'method': record.get('method'), 'rsync_runs': len(runs),
               'rsync_seconds': round(rsync_s, 4), 'before_rsync_seconds': round(pre, 4) if pre is not None else None,
               'rsync': {k: rs.get(k) for k in ('files_transferred', 'literal_bytes', 'matched_bytes', 'sent_bytes',
                                                'received_bytes', 'reg', 'exit')},
               'changed_files': record.get('changed_files'), 'stats': record.get('stats')}
        out = self._flushed(before, t, out)
        out['after_rsync_seconds'] = round(t.seconds - rsync_s - (pre or 0), 4)
        return out

    def rsync(self, target, link_dest=None, bare=False, stats=False):
        argv = ['rsync', '-a'] + ([] if bare else ['--delete', '--numeric-ids']) + ['-e', self.ssh_e]
        argv += (['--link-dest=%s' % link_dest] if link_dest else []) + (['--stats'] if stats else [])
        argv += [self.remote + '/', str(target) + '/']
        return self.timed(argv, target, stats)

    def timed(self, argv, target, stats=False):
        before = used_bytes(self.mnt)
        t = check(run_timed(argv, env=dict(os.environ, LC_ALL='C'), rss=False), ' '.join(argv))
        out = {'tree': target.name}
        if stats:
            found = re.search(r'Number of regular files transferred: ([0-9,]+)', t.stdout)
            out['files_transferred'] = int(found.group(1).replace(',', '')) if found else None
        return self._flushed(before, t, out)

    def rsnapshot(self, name, stats=False):
        prev = self.rsnap / self.rsnap_days[-1] if self.rsnap_days else None
        out = self.rsync(self.rsnap / name, link_dest=prev, stats=stats)
        self.rsnap_days.append(name)
        return out

    def bare(self, stats=False):
        return self.rsync(self.rsnap / self.rsnap_days[-1], bare=True, stats=stats)

    def verify(self):
        """Both newest copies against the client: a local rsync -ani (quick check: sizes, times,
        modes, owners) finds nothing, and the image is the same byte for byte."""
        newest = [n for n in ours_trees(self.root) if not n.startswith('.')][-1]
        out = {}
        for who, tree in (('ours', self.root / newest), ('rsnapshot', self.rsnap / self.rsnap_days[-1])):
            argv = ['rsync', '-ani', '--delete', '--numeric-ids', str(self.data) + '/', str(tree) + '/']
            found = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split('\n')
            out[who + '_differences'] = [ln for ln in found if ln.strip()][:20]
            out[who + '_image_identical'] = subprocess.run(['cmp', '-s', str(self.data / IMAGE), str(tree / IMAGE)],
                                                           check=False).returncode == 0
        out['exact'] = not out['ours_differences'] and not out['rsnapshot_differences'] and \
            out['ours_image_identical'] and out['rsnapshot_image_identical']
        return out

    def flags_ab(self, rounds, changed):
        """Which of ours' rsync options cost the time: ours' exact rsync argv, whole, without -S,
        without -A -X, without -H and with -a alone, against rsnapshot's rsync (CHANGED: one more
        changed day, every variant with --link-dest into a new tree, as ours on ext4) or a bare
        rsync -a into an up-to-date copy (not CHANGED: the unchanged tree, ours' argv as on this
        filesystem: in place into the mirror, or --link-dest into a new tree on ext4).  New trees
        are removed after each sample, untimed."""
        target = self.rsnap / 'ab'
        if changed or self.kind == 'ext4':
            prev = self.rsnap / self.rsnap_days[-1] if changed else \
                self.root / [n for n in ours_trees(self.root) if not n.startswith('.')][-1]
            ours = _pull.rsync_argv(self.req, str(target), link_dest=str(prev))
        else:
            ours = _pull.rsync_argv(self.req, str(self.root / _pull.MIRROR), in_place=True)
        flags = ours[1]
        base = ('rsnapshot', lambda: self.rsync(target, link_dest=self.rsnap / self.rsnap_days[-1])) if changed \
            else ('bare rsync -a', self.bare)
        variants = [base] + [(label, lambda f=f: self.timed(ours[:1] + [f] + ours[2:], target)) for label, f in (
            ('ours', flags), ('ours without -S', flags.replace('S', '')),
            ('ours without -A -X', flags.replace('A', '').replace('X', '')),
            ('ours without -H', flags.replace('H', '')), ('ours with -a alone', '-a'))]
        out = {'argv': ours, 'changed': changed, 'rounds': []}
        for rnd in range(rounds):
            row = {}
            for label, sample in variants[rnd % len(variants):] + variants[:rnd % len(variants)]:
                row[label] = sample()
                if target.exists():
                    _common.remove(target)
                    _common.settle(self.mnt)
            out['rounds'].append(row)
        out['median'] = {label: _med([r[label]['seconds'] for r in out['rounds']]) for label, _v in variants}
        out['median_with_sync'] = {label: _med([r[label]['seconds'] + r[label]['sync_seconds'] for r in out['rounds']])
                                   for label, _v in variants}
        return out

    def space(self):
        ours = extents(self.root, ours_trees(self.root))
        rsnap = extents(self.rsnap, self.rsnap_days)
        return {'ours': ours, 'rsnapshot': rsnap, 'statvfs_used': used_bytes(self.mnt)}


def backup_size(first, args):
    """Sparse loop image for one filesystem: rsnapshot's chain (a whole image a day) twice over
    (ours on ext4 is the same method), headroom for metadata."""
    per_day = args.image_size + first * args.share
    chain = first + (args.days - 1) * per_day
    return int(2.2 * chain) + GiB


def bench_fs(kind, args, wd, own, sshd, data, first, frozen, out):
    size = backup_size(first, args)
    log('%s: loop filesystem of %.1f GiB (sparse)' % (kind, size / GiB))
    stage = {'fs': kind, 'method': METHOD[kind], 'image_size': size, 'days': [], 'unchanged': []}
    out['stages'].append(stage)
    with fsutil.make_loop_fs(kind, size, wd, name='backup-' + kind) as mnt:
        st = Stage(kind, mnt, own, sshd, data, frozen)
        base = used_bytes(mnt)
        stage['statvfs_base'] = base
        for day in range(1, args.days + 1):
            change = change_day(data, day, args.seed, args.share) if day > 1 else None
            order = ('ours', 'rsnapshot') if day % 2 else ('rsnapshot', 'ours')
            row = {'day': day, 'change': change, 'order': list(order)}
            for who in order:
                row[who] = st.ours() if who == 'ours' else st.rsnapshot('day.%02d' % day)
            if day == 1:
                stage['space_day1'] = st.space()
            stage['days'].append(row)
            log('  %s day %2d: changed %s; ours %.2fs (rsync %.2fs), rsnapshot %.2fs' % (
                kind, day, _mib(change['bytes']) if change else 'first copy', row['ours']['seconds'],
                row['ours']['rsync_seconds'], row['rsnapshot']['seconds']))
        stage['space'] = st.space()
        stage['statvfs_used_end'] = used_bytes(mnt)
        stage['verify'] = st.verify()
        log('  %s after day %d: chain %s ours, %s rsnapshot; copies exact: %s' % (
            kind, args.days, _g(stage['space']['ours']['bytes']), _g(stage['space']['rsnapshot']['bytes']),
            stage['verify']['exact']))
        contenders = ['ours', 'bare', 'rsnapshot']
        for rnd in range(args.warmup + args.unchanged_rounds):
            warm = rnd < args.warmup
            order = contenders[rnd % 3:] + contenders[:rnd % 3]
            row = {'round': rnd - args.warmup + 1, 'warmup': warm, 'order': order}
            for who in order:
                if who == 'ours':
                    row[who] = st.ours()
                elif who == 'bare':
                    row[who] = st.bare(stats=warm)
                else:
                    row[who] = st.rsnapshot('unchanged.%02d' % (rnd + 1), stats=warm)
            row['ratio'] = round(row['ours']['seconds'] / row['bare']['seconds'], 4)
            stage['unchanged'].append(row)
            log('  %s unchanged %s: ours %.3fs (rsync %.3fs), bare rsync -a %.3fs, rsnapshot %.3fs: %.2fx' % (
                kind, 'warm-up' if warm else 'round %d' % row['round'], row['ours']['seconds'],
                row['ours']['rsync_seconds'], row['bare']['seconds'], row['rsnapshot']['seconds'], row['ratio']))
        if args.ab_rounds:
            stage['flags_ab_unchanged'] = st.flags_ab(args.ab_rounds, changed=False)
            stage['flags_ab_change'] = change_day(data, args.days + 1, args.seed, args.share)
            stage['flags_ab'] = st.flags_ab(args.ab_rounds, changed=True)
            for key, what in (('flags_ab_unchanged', 'the unchanged tree'), ('flags_ab', 'one changed day')):
                log('  %s rsync options, %s (median s): %s' % (kind, what, ', '.join(
                    '%s %.2f' % kv for kv in stage[key]['median'].items())))
    summarize(stage, out['client'])
    out['targets'] = targets(out)
    write_json(args, out)       # after each filesystem: a run cut short keeps what it measured
    write_md(args, out)


def _mib(n):
    return '%.1f MiB' % (n / MiB)


# ---------------------------------------------------------------- summary and targets

def _med(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def summarize(stage, client):
    days = stage['days']
    changed = sum(d['change']['bytes'] for d in days if d['change'])
    first = client['first_copy_bytes']
    later = days[1:]
    s = {'bytes_changed': changed, 'block_bytes_changed': sum(d['change']['block_bytes'] for d in later),
         'first_copy_bytes': first, 'expected_bytes': first + changed,
         'ours_chain_bytes': stage['space']['ours']['bytes'],
         'rsnapshot_chain_bytes': stage['space']['rsnapshot']['bytes'],
         'ours_statvfs_bytes': sum(d['ours']['statvfs_delta'] for d in days),
         'rsnapshot_statvfs_bytes': sum(d['rsnapshot']['statvfs_delta'] for d in days),
         'ours_first_seconds': days[0]['ours']['seconds'], 'rsnapshot_first_seconds': days[0]['rsnapshot']['seconds']}
    s['ours_space_ratio'] = round(s['ours_chain_bytes'] / s['expected_bytes'], 4)
    s['rsnapshot_space_ratio'] = round(s['rsnapshot_chain_bytes'] / s['expected_bytes'], 4)
    if later:
        for key in ('seconds', 'rsync_seconds', 'before_rsync_seconds', 'after_rsync_seconds', 'sync_seconds'):
            s['ours_daily_%s_median' % key] = _med([d['ours'].get(key) for d in later])
        s['rsnapshot_daily_seconds_median'] = _med([d['rsnapshot']['seconds'] for d in later])
        s['rsnapshot_daily_sync_seconds_median'] = _med([d['rsnapshot']['sync_seconds'] for d in later])
        s['daily_ratio_median'] = _med([d['ours']['seconds'] / d['rsnapshot']['seconds'] for d in later])
        s['daily_ratio_with_sync_median'] = _med([
            (d['ours']['seconds'] + d['ours']['sync_seconds'])
            / (d['rsnapshot']['seconds'] + d['rsnapshot']['sync_seconds'])
            for d in later])
    timed = [r for r in stage['unchanged'] if not r['warmup']]
    if timed:
        s['unchanged_ratio_median'] = _med([r['ratio'] for r in timed])
        s['unchanged_ratio_min'] = min(r['ratio'] for r in timed)
        s['unchanged_ratio_max'] = max(r['ratio'] for r in timed)
        for who in ('ours', 'bare', 'rsnapshot'):
            s['unchanged_%s_median' % who] = _med([r[who]['seconds'] for r in timed])
        for key in ('rsync_seconds', 'before_rsync_seconds', 'after_rsync_seconds'):
            s['unchanged_ours_%s_median' % key] = _med([r['ours'][key] for r in timed])
        s['unchanged_ours_rsync_ratio_median'] = _med([r['ours']['rsync_seconds'] / r['bare']['seconds']
                                                       for r in timed])
    stage['summary'] = s


def targets(data):
    out = []
    for st in data['stages']:
        s = st['summary']
        if st['fs'] in ('xfs', 'btrfs'):
            out.append({'name': 'chain space on %s <= %.1fx (first copy + bytes changed)' % (st['fs'], SPACE_TARGET),
                        'fs': st['fs'], 'value': s['ours_space_ratio'],
                        'status': 'PASS' if s['ours_space_ratio'] <= SPACE_TARGET else 'MISS'})
        if 'unchanged_ratio_median' in s:
            out.append({'name': 'unchanged-tree pull on %s <= %.1fx bare rsync -a' % (st['fs'], UNCHANGED_TARGET),
                        'fs': st['fs'], 'value': s['unchanged_ratio_median'],
                        'status': 'PASS' if s['unchanged_ratio_median'] <= UNCHANGED_TARGET else 'MISS'})
    return out


# ---------------------------------------------------------------- the report

def _g(n):
    return '%.2f GiB' % (n / GiB) if abs(n) >= GiB else '%.1f MiB' % (n / MiB)


def _s(x):
    return '-' if x is None else '%.2f s' % x


def _table(data, head, needed, row):
    """A markdown table of HEAD's columns, a row (ROW(stage, summary)) per stage whose summary has NEEDED."""
    out = ['| %s |' % ' | '.join(head), '|' + '---|' * len(head)]
    return out + ['| %s |' % ' | '.join(row(st, st['summary'])) for st in data['stages'] if needed in st['summary']]


def _shown(argv):
    """rsync's argv (ending in -- SRC DEST) with SSH for the ssh command, PREVIOUS for the --link-dest."""
    words = ['--link-dest=PREVIOUS' if w.startswith('--link-dest=') else w for w in argv[:-3]]
    if '-e' in words:
        i = words.index('-e')
        words = words[:i + 1] + ['SSH'] + words[i + 2:]
    return ' '.join(words) + ' -- SRC/ DEST/'


def _flags_table(data):
    """Which of ours' rsync options cost the time (the A/B after the unchanged rounds)."""
    out = []
    for key, title, what in (
            ('flags_ab_unchanged', 'the unchanged tree',
             'The unchanged tree again, after the unchanged rounds: a bare `rsync -a` into an up-to-date copy '
             'against the very argv ours runs on each filesystem (in place into the mirror on XFS and btrfs, '
             '`--link-dest` into a new tree on ext4; last on XFS and btrfs: `%s`)'),
            ('flags_ab', 'one changed day',
             'One more changed day (as the others), pulled with `--link-dest` into a new tree by rsnapshot\'s '
             'rsync and by the argv ours runs on ext4 (`%s`)')):
        stages = [st for st in data['stages'] if st.get(key)]
        if not stages:
            continue
        labels = list(stages[0][key]['median'])
        shown = _shown(([st for st in stages if st['fs'] != 'ext4'] or stages)[-1][key]['argv'])
        out += ['', '## Which rsync options cost the time: %s' % title, '',
                what % shown + ', whole and with options left out; new trees removed after each sample (untimed); '
                '%d interleaved rounds, rotated order: median wall time (min-max). Few rounds on a busy machine: a '
                'difference smaller than the spread is noise.' % data['meta'].get('ab_rounds', 0), '',
                '| fs | %s |' % ' | '.join(labels), '|---|' + '---|' * len(labels)]
        for st in stages:
            ab = st[key]
            spread = {k: [r[k]['seconds'] for r in ab['rounds']] for k in labels}
            out.append('| %s | %s |' % (st['fs'], ' | '.join('%s (%.2f-%.2f)' % (_s(ab['median'][k]), min(spread[k]),
                                                                                 max(spread[k])) for k in labels)))
    return out


def _split(s, pattern):
    return ' / '.join(_s(s[pattern % k]) for k in ('rsync_seconds', 'before_rsync_seconds', 'after_rsync_seconds'))


def render(data):
    meta, client = data['meta'], data['client']
    host = meta['host']
    lines = [
        '<!-- Generated by bench/pull.py (make bench-pull); do not edit by hand. -->',
        '# Benchmark: daily pulls over ssh',
        '',
        'Issue 11, item 4. %d daily pulls of a client tree (one %s image file of random data, 1 %% of '
        'its blocks rewritten each day in scattered 4-64 KiB pieces; %d small files from '
        '`bench/_treegen.py`, 1 %% of them rewritten whole each day; every change with an mtime a day '
        'later), over a real sshd on 127.0.0.1, onto loop XFS (reflink=1), btrfs and ext4: **ours** '
        '(`fslinks-snapshot run`, the whole CLI run) against **rsnapshot\'s method** (`rsync -a --delete '
        '--numeric-ids --link-dest=PREVIOUS` into a new tree), interleaved day by day, order flipped '
        'every day.' % (meta['days'], _g(meta['image_size']), meta['files']),
        '',
        '- Host: %s, %s CPUs (shared with other work: timings are noisy), kernel %s, load average '
        '%.1f at the start and %.1f at the end.' % (
            host.get('cpu_model', '?'), host.get('cpus'), host.get('kernel'), host['loadavg_start'][0],
            host.get('loadavg_end', [0])[0]),
        '- Transport: `%s`, `%s`, cipher %s; the client key is forced to `fslinks-snapshot serve TREE` '
        '(then `rrsync -ro`) for every contender alike, so transport costs the same for all.' % (
            meta['rsync_version'], meta['ssh_version'], meta.get('cipher') or '?'),
        '- Client tree on its own loop ext4: %d regular file names (%d hard links), %d symlinks, %d '
        'directories, %s of small files + the %s image; first copy (allocated, hard links once) %s.' % (
            client['files'], client['hardlinks'], client['symlinks'], client['dirs'], _g(client['bytes']),
            _g(meta['image_size']), _g(client['first_copy_bytes'])),
        '- Engine %s (module_utils sha256 %s), run %s, %.0f s in all. Raw JSON: `bench/results/pull-%s.json`.' % (
            host.get('git_commit', '?'), meta['engine_sha256'][:12], meta['stamp'], meta.get('seconds', 0),
            meta['stamp']),
        '',
        '## Targets',
        '',
        '| target | measured | status |',
        '|---|---|---|',
    ]
    for t in data['targets']:
        lines.append('| %s | %.3fx | **%s** |' % (t['name'], t['value'], t['status']))
    lines += ['', 'Chain space is counted from allocated extents (each extent and each hard-linked inode once: '
              '`fslinks-snapshot du --json` total_bytes), for ours the snapshots and the mirror '
              '(`.fslinks-mirror`), for rsnapshot\'s method its trees; "bytes changed" are the exact bytes '
              'the days rewrote. statvfs "used" growth is shown too; on XFS it also holds CoW blocks reserved '
              'ahead and reclaimed later, so it is not what the target is judged by.', '',
              '## Chain space after %d pulls' % meta['days'], '']
    lines += _table(data, ['fs', 'method', 'first copy + changed', 'ours (extents)', 'ours / expected',
                           'ours (statvfs)', 'rsnapshot (extents)', 'rsnapshot / expected', 'rsnapshot (statvfs)'],
                    'ours_chain_bytes', lambda st, s: [
                        st['fs'], st['method'], '%s + %s = %s' % (
                            _g(s['first_copy_bytes']), _g(s['bytes_changed']), _g(s['expected_bytes'])),
                        _g(s['ours_chain_bytes']), '%.3fx' % s['ours_space_ratio'], _g(s['ours_statvfs_bytes']),
                        _g(s['rsnapshot_chain_bytes']), '%.3fx' % s['rsnapshot_space_ratio'],
                        _g(s['rsnapshot_statvfs_bytes'])])
    lines += ['', '## Wall time per pull', '',
              'Median over the days after the first (each one a changed tree). "ours rsync" is the rsync '
              'that ours runs (from a wrapper\'s log), "before"/"after" the rest of the CLI run around it '
              '(interpreter, config, lock; then the snapshot, its record, metrics). "+ sync" adds the '
              '`sync -f` of the backup filesystem right after the pull (writeback, timed apart).', '']
    lines += _table(data, ['fs', 'first pull: ours', 'first pull: rsnapshot', 'daily: ours',
                           'ours rsync / before / after', 'daily: rsnapshot', 'ours / rsnapshot', 'same + sync'],
                    'daily_ratio_median', lambda st, s: [
                        st['fs'], _s(s['ours_first_seconds']), _s(s['rsnapshot_first_seconds']),
                        _s(s['ours_daily_seconds_median']), _split(s, 'ours_daily_%s_median'),
                        _s(s['rsnapshot_daily_seconds_median']), '%.2fx' % s['daily_ratio_median'],
                        '%.2fx' % s['daily_ratio_with_sync_median']])
    lines += ['', '## Unchanged tree', '',
              'After the last day, with nothing changed on the client: ours, a bare `rsync -a` of the tree '
              'into an up-to-date copy (rsnapshot\'s last tree) and rsnapshot\'s method, %d interleaved '
              'rounds after %d warm-up round (rotated order); median of the per-round ratios ours / bare.'
              % (meta['unchanged_rounds'], meta['warmup']), '']
    lines += _table(data, ['fs', 'ours', 'ours rsync / before / after', 'bare rsync -a', 'rsnapshot',
                           'ours / bare (min-max)', 'ours\' rsync / bare'],
                    'unchanged_ratio_median', lambda st, s: [
                        st['fs'], _s(s['unchanged_ours_median']), _split(s, 'unchanged_ours_%s_median'),
                        _s(s['unchanged_bare_median']), _s(s['unchanged_rsnapshot_median']),
                        '%.2fx (%.2f-%.2f)' % (s['unchanged_ratio_median'], s['unchanged_ratio_min'],
                                               s['unchanged_ratio_max']),
                        '%.2fx' % s['unchanged_ours_rsync_ratio_median']])
    lines += _flags_table(data)
    lines += _sparse_table(data)
    lines += ['', '## Day by day', '']
    for st in data['stages']:
        lines += ['### %s (%s)' % (st['fs'], st['method']), '',
                  '| day | changed (image + small files) | ours | ours rsync | ours after rsync | ours statvfs + '
                  '| rsnapshot | rsnapshot statvfs + | ours rsync literal / matched |',
                  '|---|---|---|---|---|---|---|---|---|']
        for d in st['days']:
            c, o, r = d['change'], d['ours'], d['rsnapshot']
            what = '%s (%d pieces) + %s (%d files)' % (
                _g(c['image_bytes']), c['image_pieces'], _g(c['small_bytes']), c['small_files']) if c else 'first copy'
            lines.append('| %d | %s | %s | %s | %s | %s | %s | %s | %s / %s |' % (
                d['day'], what, _s(o['seconds']), _s(o['rsync_seconds']), _s(o['after_rsync_seconds']),
                _g(o['statvfs_delta']), _s(r['seconds']), _g(r['statvfs_delta']),
                _g(o['rsync']['literal_bytes'] or 0), _g(o['rsync']['matched_bytes'] or 0)))
        v = st.get('verify') or {}
        lines += ['', 'After day %d, both newest copies against the client: %s.' % (
            len(st['days']), 'exact (a local `rsync -ani --delete` finds no difference, the image is identical '
            'byte for byte)' if v.get('exact') else 'DIFFERENT: %s' % json.dumps(v)), '']
    lines += notes(data)
    return '\n'.join(lines) + '\n'


def notes(data):
    """Where the time and the space go, from the measured figures."""
    out = ['## Reading the figures', '']
    for st in data['stages']:
        out += _space_note(st, data['meta']['image_size']) + _daily_note(st, data['client']['files'] + 1)
        s = st['summary']
        if 'unchanged_ratio_median' not in s:
            continue
        extra = s['unchanged_ours_median'] - s['unchanged_bare_median']
        out.append('- %s, unchanged tree: ours takes %s more than a bare `rsync -a`: its own rsync (`-aHAXS '
                   '--numeric-ids --delete --modify-window=-1`%s) takes %.2fx the bare one (%s vs %s), the CLI '
                   'before rsync %s, after it %s (%s).' % (
                       st['fs'], _s(extra), ', `--inplace --no-whole-file` into the mirror' if st['fs'] != 'ext4'
                       else ', `--link-dest` into a new tree', s['unchanged_ours_rsync_ratio_median'],
                       _s(s['unchanged_ours_rsync_seconds_median']), _s(s['unchanged_bare_median']),
                       _s(s['unchanged_ours_before_rsync_seconds_median']),
                       _s(s['unchanged_ours_after_rsync_seconds_median']),
                       {'xfs': 'the reflink tree of the mirror: one clone per file, O(files)',
                        'btrfs': 'a btrfs snapshot of the mirror, O(1), then the record',
                        'ext4': 'rsync itself made the new tree: the after part is the record and publishing'
                        }[st['fs']]))
    return out + ['']


def _block(image_size):
    """rsync's delta block for the image (sum_sizes_sqroot): about the square root of its size, a multiple of
    8, at least 700 bytes and at most 128 KiB."""
    return max(700, min(128 * KiB, math.isqrt(image_size) // 8 * 8))


def _space_note(st, image_size):
    s, later = st['summary'], st['days'][1:]
    if not later:
        return []
    grown = s['ours_chain_bytes'] - st['space_day1']['ours']['bytes']
    literal = sum(d['ours']['rsync']['literal_bytes'] or 0 for d in later)
    text = ('- %s, space: over days 2-%d ours\' chain grew %s for %s changed (%.2fx), while its rsync sent %s of '
            'literal data (%.2fx the changes: rsync resends whole delta blocks, %s here); rsnapshot\'s chain '
            'grew %s (a whole new copy of every changed file: the image each day).' % (
                st['fs'], len(st['days']), _g(grown), _g(s['bytes_changed']), grown / max(1, s['bytes_changed']),
                _g(literal), literal / max(1, s['bytes_changed']), '%d-byte blocks for the image' % _block(image_size),
                _g(s['rsnapshot_chain_bytes'] - st['space_day1']['rsnapshot']['bytes'])))
    if st['fs'] != 'ext4' and grown > 1.1 * literal:
        text += (' The growth beyond the literal data is not the snapshots (clones and btrfs snapshots share every '
                 'block they do not rewrite) but how rsync writes the mirror: with `-S` and `--inplace` it punches a '
                 'hole for the zero bytes at the edges of the pieces of literal data it writes (one byte long, most '
                 'of them: `fallocate(FALLOC_FL_KEEP_SIZE|FALLOC_FL_PUNCH_HOLE, OFFSET, 1)`), and each punch '
                 'unshares a whole 4 KiB block that the snapshots shared (see "rsync -S and shared blocks" below).')
    return [text]


def _sparse_table(data):
    checks = data.get('sparse_check') or []
    if not checks:
        return []
    out = ['', '## rsync -S and shared blocks', '',
           'Local, without ssh, on a fresh loop filesystem: a %s image in a mirror and a snapshot of it (btrfs '
           'snapshot; `cp -a --reflink=always` on XFS), then 4 days of 1 %% of its blocks rewritten as above, each '
           'pulled into the mirror by `rsync FLAGS --inplace --no-whole-file` and snapshotted, alternating -a and '
           '-aS (ours uses -aHAXS); the chain\'s growth counted from extents as above, the hole punches from '
           '`strace -e trace=fallocate`%s.' % (_g(checks[0]['image_bytes']), ' (run %s, after the main run, by '
                                                '`--sparse-check-into`)' % data['meta']['sparse_check_added']
                                                if data['meta'].get('sparse_check_added') else ''), '',
           '| fs | day | rsync | bytes changed | literal data | chain growth | growth / literal | hole punches |',
           '|---|---|---|---|---|---|---|---|']
    for check_ in checks:
        for day, row in enumerate(check_['rows'], 1):
            out.append('| %s | %d | %s | %d | %d | %d | %.2fx | %s |' % (
                check_['fs'], day, row['flags'], row['changed_bytes'], row['literal_bytes'], row['growth_bytes'],
                row['growth_bytes'] / max(1, row['literal_bytes']),
                '-' if row['hole_punches'] is None else row['hole_punches']))
    return out


def _daily_note(st, files):
    s = st['summary']
    if 'daily_ratio_median' not in s:
        return []
    return ['- %s, time of a daily pull: ours %s = rsync %s + before %s + after %s (%s); rsnapshot\'s rsync %s, '
            'and its writeback afterwards (`sync -f`) %s against ours\' %s.' % (
                st['fs'], _s(s['ours_daily_seconds_median']), _s(s['ours_daily_rsync_seconds_median']),
                _s(s['ours_daily_before_rsync_seconds_median']), _s(s['ours_daily_after_rsync_seconds_median']),
                {'xfs': 'after: the reflink tree of %d files', 'btrfs': 'after: one btrfs snapshot%.0s',
                 'ext4': 'rsync --link-dest wrote the tree itself%.0s'}[st['fs']] % files,
                _s(s['rsnapshot_daily_seconds_median']), _s(s['rsnapshot_daily_sync_seconds_median']),
                _s(s['ours_daily_sync_seconds_median']))]


# ---------------------------------------------------------------- main

def ssh_facts(sshd):
    """The cipher ssh negotiates with this sshd (ssh -v; the key is not authorized yet)."""
    argv = ['ssh', '-v', '-o', 'BatchMode=yes', '-o', 'UserKnownHostsFile=%s' % sshd.known_hosts, '-i', str(sshd.key),
            '-o', 'IdentitiesOnly=yes', '-p', str(sshd.port), 'root@127.0.0.1', 'true']
    err = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60).stderr
    found = re.search(r'kex: server->client cipher: (\S+) MAC: (\S+)', err)
    return ('%s (MAC %s)' % found.groups()) if found else None


def write_json(args, data):
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / ('pull-%s.json' % data['meta']['stamp'])
    text = json.dumps(data, indent=1)
    path.write_text(text)
    (args.results_dir / 'pull-latest.json').write_text(text)
    return path


def write_md(args, data):
    args.docs_dir.mkdir(parents=True, exist_ok=True)
    path = args.docs_dir / 'benchmarks-pull.md'
    path.write_text(render(data))
    return path


def targets_text(found):
    return '\n'.join('%-4s %-62s %.3fx' % (t['status'], t['name'], t['value']) for t in found)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    p.add_argument('--fs', default=','.join(ALL_FS), help='backup filesystems (default: %(default)s)')
    p.add_argument('--image-size', type=size_arg, default=GiB, help='the image file (default: 1G)')
    p.add_argument('--files', type=int, default=20000, help='small files (default: %(default)s)')
    p.add_argument('--days', type=int, default=10, help='daily pulls (default: %(default)s)')
    p.add_argument('--scale', type=float, default=1.0,
                   help='multiplies the image size and every small file\'s size (default: %(default)s)')
    p.add_argument('--share', type=float, default=0.01, help='share changed each day (default: 1%%)')
    p.add_argument('--unchanged-rounds', type=int, default=5, help='timed unchanged-tree rounds (default: %(default)s)')
    p.add_argument('--warmup', type=int, default=1, help='untimed unchanged-tree rounds (default: %(default)s)')
    p.add_argument('--ab-rounds', type=int, default=2,
                   help='rounds of the rsync options A/B after the unchanged rounds, 0: none (default: %(default)s)')
    p.add_argument('--no-sparse-check', dest='sparse_check', action='store_false',
                   help='skip the local rsync -a / -aS check on XFS and btrfs at the end')
    p.add_argument('--sparse-image-size', type=size_arg, default=64 * MiB,
                   help='the image of that check (default: 64M)')
    p.add_argument('--sparse-check-into', metavar='JSON', help='only run that check, into a results file, and render')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--workdir', default=os.environ.get('FSLINKS_BENCH_TMPDIR', '/var/tmp'),
                   help='loop images and mount points (default: $FSLINKS_BENCH_TMPDIR or /var/tmp)')
    p.add_argument('--results-dir', default=str(ROOT / 'bench' / 'results'), help='raw JSON (default: bench/results)')
    p.add_argument('--docs-dir', default=str(ROOT / 'docs'), help='benchmarks-pull.md (default: docs)')
    p.add_argument('--report-only', metavar='JSON', help='only render the report from a results file')
    args = p.parse_args(argv)
    args.fs = [f for f in args.fs.split(',') if f]
    bad = [f for f in args.fs if f not in ALL_FS]
    if bad:
        p.error('unknown filesystem %s (known: %s)' % (', '.join(bad), ', '.join(ALL_FS)))
    if args.days < 1 or args.unchanged_rounds < 0 or args.warmup < 0:
        p.error('--days must be at least 1, the rounds at least 0')
    args.image_size = max(SLOT, int(args.image_size * args.scale) // SLOT * SLOT)
    args.results_dir, args.docs_dir = Path(args.results_dir), Path(args.docs_dir)
    return args


def _sigterm(signum, frame):
    raise KeyboardInterrupt('SIGTERM')      # so that make_loop_fs unmounts and detaches


def run(args, argv):
    if os.geteuid() != 0:
        raise SystemExit('bench-pull: needs root (loop devices, mount, sshd)')
    for fs in set(args.fs) | {'ext4'}:
        fsutil.check_prerequisites(fs)
    for tool in ('rsync', 'ssh', 'ssh-keygen', 'sync', 'bash'):
        if not _common.which(tool):
            raise SystemExit('bench-pull: %s not found (make setup installs it)' % tool)
    if not os.access(SSHD, os.X_OK):
        raise SystemExit('bench-pull: %s not found (openssh-server; make setup installs it)' % SSHD)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    data = {'meta': {'stamp': stamp, 'argv': argv, 'host': _common.host_info(), 'fs': args.fs,
                     'image_size': args.image_size, 'files': args.files, 'days': args.days, 'scale': args.scale,
                     'share': args.share, 'unchanged_rounds': args.unchanged_rounds, 'warmup': args.warmup,
                     'ab_rounds': args.ab_rounds,
                     'seed': args.seed, 'rsync_version': _common.tool_version(['rsync', '--version']),
                     'ssh_version': _common.tool_version(['ssh', '-V'])},
            'client': None, 'stages': []}
    t0 = time.perf_counter()
    with _common.workdir(args.workdir) as wd:
        frozen, digest = _common.freeze_collection(wd / 'collection')
        data['meta']['engine_sha256'] = digest
        own = wd / 'run'            # sshd, job configs, the rsync wrapper (removed at the end)
        sshd = Sshd(own / 'sshd').start()
        try:
            files_est = args.files * _treegen.MEDIAN * 8 * args.scale
            with fsutil.make_loop_fs('ext4', int(1.3 * (args.image_size + files_est)) + GiB // 2, wd,
                                     name='client') as cmnt:
                data['meta']['cipher'] = ssh_facts(sshd)
                for kind in args.fs:
                    tree = cmnt / 'data'
                    if tree.exists():
                        _common.remove(tree)
                    t1 = time.perf_counter()
                    client = make_tree(tree, args.image_size, args.files, args.seed, args.scale)
                    client['first_copy_bytes'] = extents(cmnt, ['data'])['bytes']
                    client['seconds'] = round(time.perf_counter() - t1, 1)
                    data['client'] = client
                    log('client tree: %s in %d files + %s image (%.0f s)' % (
                        _g(client['bytes']), args.files, _g(args.image_size), client['seconds']))
                    sshd.authorize(tree)
                    bench_fs(kind, args, wd, own, sshd, tree, client['first_copy_bytes'], frozen, data)
            if args.sparse_check:
                data['sparse_check'] = run_sparse_check(args, wd)
        finally:
            sshd.stop()
            shutil.rmtree(own, ignore_errors=True)
    data['meta']['seconds'] = round(time.perf_counter() - t0, 1)
    data['meta']['host']['loadavg_end'] = os.getloadavg()
    data['targets'] = targets(data)
    log('raw results: %s' % write_json(args, data))
    log('report: %s' % write_md(args, data))
    print(targets_text(data['targets']))
    return 0


def run_sparse_check(args, wd):
    out = []
    for kind in args.fs:
        if kind != 'ext4':
            out.append(sparse_check(kind, wd, args.seed, args.sparse_image_size))
            log('%s, rsync -a vs -aS into a shared mirror: %s' % (kind, ', '.join(
                '%s +%d for %d literal' % (r['flags'], r['growth_bytes'], r['literal_bytes'])
                for r in out[-1]['rows'])))
    return out


def add_sparse_check(args, path):
    """--sparse-check-into JSON: run only that check (on the results' filesystems) into an existing results
    file, then render the report again."""
    if os.geteuid() != 0:
        raise SystemExit('bench-pull: needs root (loop devices, mount)')
    data = json.loads(Path(path).read_text())
    args.fs = [st['fs'] for st in data['stages']]
    with _common.workdir(args.workdir) as wd:
        data['sparse_check'] = run_sparse_check(args, wd)
    data['meta']['sparse_check_added'] = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    data['targets'] = targets(data)
    text = json.dumps(data, indent=1)
    Path(path).write_text(text)
    if Path(path).name != 'pull-latest.json' and (Path(path).parent / 'pull-latest.json').exists():
        latest = json.loads((Path(path).parent / 'pull-latest.json').read_text())
        if latest['meta']['stamp'] == data['meta']['stamp']:
            (Path(path).parent / 'pull-latest.json').write_text(text)
    log('report: %s' % write_md(args, data))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    if args.report_only:
        data = json.loads(Path(args.report_only).read_text())
        data['targets'] = targets(data)
        log('report: %s' % write_md(args, data))
        print(targets_text(data['targets']))
        return 0
    if args.sparse_check_into:
        return add_sparse_check(args, args.sparse_check_into)
    return run(args, argv)


if __name__ == '__main__':
    _common.main_guard(main, 'bench-pull')
