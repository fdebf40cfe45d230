# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Side-by-side benchmark: our snapshot engine against rsync --link-dest, cp -al, cp --reflink,
btrfs subvolume snapshot and cp -a --reflink=never, on loopback ext4, XFS (reflink=1) and btrfs.

For each tree size and filesystem: make a fresh loop filesystem, generate a seeded tree
(bench/_treegen.py), take a first snapshot with the engine (the PREV every hard-link contender
links against), then time every contender interleaved (A B C A B C ...) after one untimed
warm-up round, on the same tree and the same filesystem with a warm cache.  Each sample's output
is deleted after it, outside the timing, then the filesystem is flushed (and on btrfs the cleaner
waited for), so every sample starts from the same state.  Scenario "steady": the tree is unchanged
since PREV.  Scenario "changed": 1 % of the files were rewritten since PREV.  Ratios between two
contenders are the median of per-round ratios (neighbouring samples share the machine's state).
The scale stage (--scale-files, default 1,000,000 files on ext4) compares time per file and peak
memory of the hard-link and copy methods with a 100,000-file tree of the same file sizes.

Our engine runs in a fresh interpreter per sample (bench/_worker.py) that imports it the way the
modules do and times only ``run(req)``; its peak RSS comes from os.wait4.  The Ansible part times
``ansible localhost -m ...`` processes whole.  Results: JSON in bench/results/, the report in
docs/benchmarks.md and docs/benchmarks.png (bench/_report.py).  Needs root (loop devices).

Examples:
  make bench                                   # the full run (10k, 30k, 100k files)
  .venv/bin/python bench/run.py --files 10000 --scale 0.2 --reps 3 --fs xfs --no-ansible
  .venv/bin/python bench/run.py --report-only bench/results/latest.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# pylint: disable=wrong-import-position
import _common  # noqa: E402
import _report  # noqa: E402
import _treegen  # noqa: E402
from _common import ROOT, check, engine_job, fsutil, remove, run_timed, settle, sh, syncfs  # noqa: E402

REFLINK_FS = ('xfs', 'btrfs')
ALL_FS = ('ext4', 'xfs', 'btrfs')
MEAN_FILE = _treegen.MEDIAN * 2.718281828 ** (_treegen.SIGMA ** 2 / 2)   # log-normal mean
GiB = 1 << 30
MiB = 1 << 20


def log(msg):
    print('[bench %s] %s' % (time.strftime('%H:%M:%S'), msg), flush=True)


# ---------------------------------------------------------------- contenders

class Contender:
    """One thing to time. kind 'engine': a worker job, its snapshot removed after each sample
    from ROOT (all but KEEP). kind 'cmd': ARGV, OUTPUT removed after each sample."""

    def __init__(self, key, label, kind, job=None, argv=None, root=None, keep=(), output=None,
                 warm_argv=None, collections=None):
        self.key, self.label, self.kind = key, label, kind
        self.job, self.argv, self.root, self.keep, self.output = job, argv, root, set(keep), output
        self.warm_argv = warm_argv
        self.collections = collections      # an engine other than this run's frozen one


def engine(method, src, root, prev, workers=0):
    """Our engine; workers=0 is its default (one process per CPU, at most 4), 1 one process."""
    key, label = ('engine:%s' % method, 'fslinks %s' % method) if workers == 0 else \
        ('engine:%s-%d' % (method, workers), 'fslinks %s, %d process%s' % (method, workers, '' if workers == 1 else 'es'))
    return Contender(key, label, 'engine',
                     job={'op': 'snapshot', 'src': str(src), 'dest': str(root), 'method': method, 'workers': workers},
                     root=root, keep=(prev, 'latest', '.fslinks-snapshot.lock'))


def with_baseline(contenders, args):
    """After each engine contender whose method is in --baseline-methods, the same job run by the
    --baseline engine: before and after, interleaved in the same rounds.  Not after the
    1-process variants: they would double the baseline's time for a comparison the default
    already makes."""
    if not args.baseline:
        return contenders
    collections, label = args.baseline
    out = []
    for c in contenders:
        out.append(c)
        if c.kind == 'engine' and c.job['method'] in args.baseline_methods and c.job.get('workers') != 1:
            out.append(Contender(c.key + ':baseline', '%s (%s)' % (c.label, label), 'engine', job=c.job, root=c.root,
                                 keep=c.keep, collections=collections))
    return out


def command(key, label, argv, output, warm_argv=None):
    return Contender(key, label, 'cmd', argv=[str(a) for a in argv], output=output,
                     warm_argv=[str(a) for a in warm_argv] if warm_argv else None)


def _clean_engine(c, btrfs=False):
    """Delete the snapshot a sample made: all of the root but PREV, and point latest at PREV."""
    for name in os.listdir(c.root):
        if name not in c.keep:
            remove(c.root / name, btrfs)
    prev = sorted(n for n in c.keep if n[:1].isdigit())
    if prev:
        tmp = c.root / '.latest.bench'
        os.symlink(prev[-1], tmp)
        os.replace(tmp, c.root / 'latest')


def sample(c, mnt, btrfs, warm=False):
    """Time one run of contender C, then delete its output and settle the filesystem."""
    extra = {}
    if c.kind == 'engine':
        t, out = engine_job(c.job, c.collections)
        seconds = out['seconds']
        extra = {'stats': out.get('stats'), 'method': out.get('method'),
                 'engine_seconds': out.get('engine_seconds'), 'process_seconds': round(t.seconds, 4)}
    else:
        argv = c.warm_argv if (warm and c.warm_argv) else c.argv
        t = check(run_timed(argv, env=dict(os.environ, LC_ALL='C')), ' '.join(argv))
        seconds = t.seconds
        if warm and c.warm_argv:
            extra['output'] = t.stdout[-3000:]
    sync_s = syncfs(mnt)
    if c.kind == 'engine':
        _clean_engine(c, btrfs)
    else:
        remove(c.output, btrfs)
    settle(mnt, btrfs)
    # CPU: user+sys of the process and everything it waited for (cp, or our worker processes);
    # for our engine that includes the interpreter's start-up, which 'seconds' does not.
    s = {'seconds': round(seconds, 6), 'sync_seconds': round(sync_s, 6), 'maxrss_kb': t.maxrss_kb,
         'cpu_seconds': round(t.cpu, 4)}
    s.update(extra)
    return s


def measure(contenders, mnt, btrfs, reps, warmup):
    """Interleaved rounds: warm-up rounds (kept apart), then REPS timed rounds of every contender.
    A sample pays for what the one before it left (btrfs's cleaner, the page cache, blocks just
    freed), so no order is fixed: every other round runs backwards (each pair of neighbours
    swaps: the second of two copies of 100,000 files on ext4 was 20-30 % faster, whichever engine
    it was), and each pair of rounds starts one contender later (every contender takes each slot).
    An even number of timed rounds balances the two directions."""
    warm = {c.key: [] for c in contenders}
    timed = {c.key: [] for c in contenders}
    for rnd in range(warmup + reps):
        shift = (rnd // 2) % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        for c in (order[::-1] if rnd % 2 else order):
            s = sample(c, mnt, btrfs, warm=rnd < warmup)
            (warm if rnd < warmup else timed)[c.key].append(s)
        if rnd >= warmup:
            log('  round %d/%d: %s' % (rnd - warmup + 1, reps, ', '.join(
                '%s %.3fs' % (c.key, timed[c.key][-1]['seconds']) for c in contenders)))
    return warm, timed


def summarize(samples):
    secs = [s['seconds'] for s in samples]
    flushed = [s['seconds'] + s['sync_seconds'] for s in samples]
    rss = [s['maxrss_kb'] for s in samples if s.get('maxrss_kb') is not None] or [0]
    cpu = [s['cpu_seconds'] for s in samples if s.get('cpu_seconds') is not None]
    return {'median': statistics.median(secs), 'min': min(secs), 'max': max(secs), 'n': len(secs),
            'median_with_sync': statistics.median(flushed), 'maxrss_kb_median': statistics.median(rss),
            'maxrss_kb_max': max(rss), 'cpu_median': statistics.median(cpu) if cpu else None}


# ---------------------------------------------------------------- one filesystem, one size

BLOCK = 4096
META_PER_ENTRY = 2048       # inode, directory entry, extent records (btrfs: twice, DUP metadata)


def tree_entries(files):
    """Inodes of one tree: its files, directories and symlinks (bench/_treegen.py's shares)."""
    return int(files * (1 + _treegen.DIR_SHARE + _treegen.SYMLINK_SHARE)) + 1000


def image_plan(fs, tree_bytes, files, copies):
    """(bytes, mkfs options) of a sparse image sized from the tree: src and COPIES full copies of
    it (ext4's first snapshot, a copy contender's output: samples are deleted one by one), each
    file rounded up to a block, metadata for those trees plus a hard-link snapshot's, and 20 %
    margin.  On ext4 the inode count is given (-N) from the same count, instead of mkfs's one
    inode per 16 KiB of image: that made a 1,000,000-file tree of 1.3 GB ask for a 76 GiB image.
    Sparse: only what is written takes room on the disk underneath."""
    trees = 1 + copies + (1 if fs == 'btrfs' else 0)    # btrfs: src's reflinked twin (metadata)
    data = (tree_bytes + files * BLOCK) * (1 + copies)
    meta = tree_entries(files) * META_PER_ENTRY * (trees + 1)
    need = max((data + meta) * 1.2 + GiB, GiB if fs != 'ext4' else 512 * MiB)
    opts = ['-N', str(int(tree_entries(files) * (trees + 1) * 1.1))] if fs == 'ext4' else []
    return int(-(-need // MiB)) * MiB, opts


def loop_fs(fs, files, args, wd, tree_bytes, copies, name):
    """The stage's loop filesystem, refused with a message if the disk cannot hold it."""
    size, opts = image_plan(fs, tree_bytes, files, copies)
    free = _common.free_bytes(wd)
    if free < size * 1.05:
        raise SystemExit('bench: not enough free space in %s for a %.1f GiB image (%.1f GiB free); '
                         'fewer --files, a smaller --scale, or another --workdir' % (wd, size / GiB, free / GiB))
    log('%s, %d files: image %.1f GiB (sparse), tree ~%.2f GB' % (fs, files, size / GiB, tree_bytes / 1e9))
    return size, fsutil.make_loop_fs(fs, '%d' % size, wd, name=name, mkfs_options=opts)


def bench_fs(fs, files, args, wd, data):
    btrfs = fs == 'btrfs'
    reflink = fs in REFLINK_FS
    with_copy = files <= args.copy_max_files
    tree_bytes = args.tree_bytes(files)
    copies = (1 if fs == 'ext4' else 0) + (1 if with_copy else 0)
    size, fs_cm = loop_fs(fs, files, args, wd, tree_bytes, copies, '%s-%d' % (fs, files))
    with fs_cm as mnt:
        src = mnt / 'src'
        src.mkdir()
        t0 = time.perf_counter()
        tree = _treegen.generate(src, files, seed=args.seed, scale=args.scale,
                                 total_bytes=args.bytes and tree_bytes)
        srcvol = None
        if btrfs:
            # The btrfs method needs src to be a subvolume; cp -al cannot link across subvolumes,
            # so the file-level contenders use the plain directory, a reflinked twin of it.
            srcvol = mnt / 'srcvol'
            sh('btrfs', 'subvolume', 'create', srcvol)
            sh('cp', '-a', '--reflink=always', '%s/.' % src, '%s/' % srcvol)
        syncfs(mnt)
        tree['generate_seconds'] = round(time.perf_counter() - t0, 2)
        log('  tree: %(files)d files, %(dirs)d dirs, %(symlinks)d symlinks, %(hardlinks)d inner hard links, '
            '%(bytes)d bytes (%(generate_seconds)ss)' % tree)
        snaps = mnt / 'snaps'
        out = mnt / 'out'
        out.mkdir()
        _t, first = engine_job({'op': 'snapshot', 'src': str(src), 'dest': str(snaps), 'method': 'hardlink'})
        prev = os.path.basename(first['snapshot'])
        tree['prev_snapshot'] = {'seconds': round(first['seconds'], 3), 'stats': first['stats']}
        contenders = [engine('hardlink', src, snaps, prev), engine('hardlink', src, snaps, prev, workers=1)]
        rsync_argv = ['rsync', '-a', '--link-dest=%s' % (snaps / prev), '%s/' % src, '%s/' % (out / 'rsync')]
        rsync = command('rsync', 'rsync -a --link-dest', rsync_argv, out / 'rsync',
                        warm_argv=rsync_argv[:2] + ['--stats'] + rsync_argv[2:])
        cpal = command('cp-al', 'cp -al', ['cp', '-al', src, out / 'cpal'], out / 'cpal')
        contenders += [rsync, cpal]
        if reflink:
            contenders += [engine('reflink', src, snaps, prev), engine('reflink', src, snaps, prev, workers=1),
                           command('cp-reflink', 'cp -a --reflink=always',
                                   ['cp', '-a', '--reflink=always', src, out / 'cpreflink'], out / 'cpreflink')]
        if btrfs:
            snaps_b = mnt / 'snaps-btrfs'
            _t, first_b = engine_job({'op': 'snapshot', 'src': str(srcvol), 'dest': str(snaps_b), 'method': 'btrfs'})
            prev_b = os.path.basename(first_b['snapshot'])
            contenders += [engine('btrfs', srcvol, snaps_b, prev_b),
                           command('btrfs-snapshot', 'btrfs subvolume snapshot -r',
                                   ['btrfs', 'subvolume', 'snapshot', '-r', srcvol, out / 'snap'], out / 'snap')]
        if with_copy:
            # The floor of a copy is cp with reflinks off: GNU cp >= 9.0 reflinks by default.
            contenders += [engine('copy', src, snaps, prev), cp_never(src, out)]
        contenders = with_baseline(contenders, args)
        settle(mnt, btrfs)
        stage = {'fs': fs, 'files': files, 'tree': tree, 'image_bytes': size, 'scenarios': {},
                 'loadavg': {'start': os.getloadavg()}}
        data['stages'].append(stage)
        log('  steady state: %s' % ', '.join(c.key for c in contenders))
        warm, timed = measure(contenders, mnt, btrfs, args.reps, args.warmup)
        stage['scenarios']['steady'] = _scenario(contenders, warm, timed)
        # One more, untimed run of the hardlink method under tracemalloc: the peak of Python
        # allocations during run(), a finer memory measure than the process's resident set.
        # In one process: tracemalloc sees only its own process, and the walk is the same code.
        traced = dict(contenders[0].job, tracemalloc=True, workers=1)
        _t, res = engine_job(traced)
        stage['tracemalloc_peak_kb'] = {'engine:hardlink': res.get('tracemalloc_peak_kb')}
        _clean_engine(contenders[0], btrfs)
        settle(mnt, btrfs)
        write_json(args, data)
        # 1 % of the files change; PREV stays as it was, so every sample sees the same delta.
        changed = _treegen.change_files(src, args.change_share, seed=args.seed)
        if srcvol is not None:
            _treegen.change_files(srcvol, args.change_share, seed=args.seed)
        tree['changed_files'] = changed
        settle(mnt, btrfs)
        contenders = [c for c in contenders if c.key in ('engine:hardlink', 'engine:hardlink-1', 'rsync', 'cp-al',
                                                         'engine:hardlink:baseline')]
        log('  changed (%d files): %s' % (changed, ', '.join(c.key for c in contenders)))
        warm, timed = measure(contenders, mnt, btrfs, args.reps, args.warmup)
        stage['scenarios']['changed'] = _scenario(contenders, warm, timed)
        if fs == 'xfs':
            stage['scenarios'].update(bench_restore_diff(src, snaps, prev, out, mnt, args))
        stage['loadavg']['end'] = os.getloadavg()
        write_json(args, data)


def cp_never(src, out):
    return command('cp-never', 'cp -a --reflink=never', ['cp', '-a', '--reflink=never', src, out / 'cpnever'],
                   out / 'cpnever')


def bench_scale(fs, files, args, wd, data):
    """One point of the scale stage: a tree of FILES names with --scale-scale's small files (so
    that 1,000,000 of them fit this machine's disk), the steady state of the hard-link and copy
    methods against cp -al and cp -a --reflink=never.  Compared with the --scale-base point
    (100,000 files) of the same stage: time per file and peak memory."""
    tree_bytes = int(files * (1 - _treegen.LINK_SHARE) * (1 - _treegen.EMPTY) * MEAN_FILE * args.scale_scale)
    copies = (1 if fs == 'ext4' else 0) + 1
    size, fs_cm = loop_fs(fs, files, args, wd, tree_bytes, copies, 'scale-%s-%d' % (fs, files))
    with fs_cm as mnt:
        src = mnt / 'src'
        src.mkdir()
        t0 = time.perf_counter()
        tree = _treegen.generate(src, files, seed=args.seed, scale=args.scale_scale)
        syncfs(mnt)
        tree['generate_seconds'] = round(time.perf_counter() - t0, 2)
        log('  tree: %(files)d files, %(dirs)d dirs, %(bytes)d bytes (%(generate_seconds)ss)' % tree)
        snaps, out = mnt / 'snaps', mnt / 'out'
        out.mkdir()
        _t, first = engine_job({'op': 'snapshot', 'src': str(src), 'dest': str(snaps), 'method': 'hardlink'})
        prev = os.path.basename(first['snapshot'])
        contenders = with_baseline([
            engine('hardlink', src, snaps, prev),
            command('cp-al', 'cp -al', ['cp', '-al', src, out / 'cpal'], out / 'cpal'),
            engine('copy', src, snaps, prev), cp_never(src, out)], args)
        settle(mnt, fs == 'btrfs')
        stage = {'fs': fs, 'files': files, 'tree': tree, 'image_bytes': size, 'scenarios': {},
                 'loadavg': {'start': os.getloadavg()}}
        data['scale'].append(stage)
        warm, timed = measure(contenders, mnt, fs == 'btrfs', args.scale_reps, args.warmup)
        stage['scenarios']['steady'] = _scenario(contenders, warm, timed)
        stage['loadavg']['end'] = os.getloadavg()
        write_json(args, data)


def bench_big_file(fs, args, wd, data):
    """One big file (--big-file, 2 GiB of random data): reflink_copy with reflink: never against
    cp -a --reflink=never, interleaved; the copy path's streaming speed, where the per-file costs
    of a tree do not count."""
    size = _parse_size(args.big_file)
    _size, fs_cm = loop_fs(fs, 1, args, wd, size, 2, 'big-%s' % fs)
    with fs_cm as mnt:
        big = mnt / 'big.bin'
        buf = os.urandom(64 * MiB)
        with open(big, 'wb') as f:
            left = size
            while left > 0:
                f.write(buf[:min(left, len(buf))])
                left -= min(left, len(buf))
        syncfs(mnt)
        (mnt / 'eng').mkdir()
        (mnt / 'out').mkdir()
        ours = Contender('engine:copy-file', 'fslinks reflink_copy reflink=never', 'engine',
                         job={'op': 'reflink_copy', 'src': str(big), 'dest': str(mnt / 'eng' / 'big.bin'),
                              'policy': 'never', 'method': 'copy'}, root=mnt / 'eng')
        contenders = with_baseline([ours, command('cp-never', 'cp -a --reflink=never',
                                                  ['cp', '-a', '--reflink=never', big, mnt / 'out' / 'big.bin'],
                                                  mnt / 'out' / 'big.bin')], args)
        log('big file on %s: %s' % (fs, ', '.join(c.key for c in contenders)))
        warm, timed = measure(contenders, mnt, fs == 'btrfs', args.reps, args.warmup)
        data['big_file'].append({'fs': fs, 'file_bytes': size, 'scenarios': {'copy': _scenario(contenders, warm, timed)}})
        write_json(args, data)


def bench_restore_diff(src, snaps, prev, out, mnt, args):
    """Getting data back, on the tree whose 1 % changed since PREV: a restore of PREV with mirror
    over a live tree in that state (prepared afresh, untimed, before each sample) against
    ``rsync -a --delete PREV/ live/`` (the same job) and ``cp -a --reflink=always`` of PREV (a
    full clone, the floor of putting a tree back on XFS); and a diff of PREV and a snapshot of
    the changed tree against ``rsync -ani --delete`` (a dry run) of the same pair."""
    _t, second = engine_job({'op': 'snapshot', 'src': str(src), 'dest': str(snaps), 'method': 'hardlink'})
    snap_a, snap_b = snaps / prev, Path(second['snapshot'])
    live = out / 'live'

    def prepare():
        remove(live)
        sh('cp', '-a', '--reflink=always', src, live)
        syncfs(mnt)
        settle(mnt)

    restore = [('engine:restore', 'fslinks restore --mirror', 'engine',
                {'op': 'restore', 'root': str(snaps), 'snapshot': prev, 'to': str(live), 'mirror': True}, prepare),
               ('rsync-delete', 'rsync -a --delete', 'cmd',
                ['rsync', '-a', '--delete', '%s/' % snap_a, '%s/' % live], prepare),
               ('cp-reflink', 'cp -a --reflink=always', 'cmd',
                ['cp', '-a', '--reflink=always', snap_a, out / 'cprestore'], None)]
    diff = [('engine:diff', 'fslinks diff', 'engine', {'op': 'diff', 'a': str(snap_a), 'b': str(snap_b)}, None),
            ('rsync-n', 'rsync -ani --delete', 'cmd',
             ['rsync', '-ani', '--delete', '%s/' % snap_b, '%s/' % snap_a], None)]
    res = {}
    for scenario, contenders in (('restore', restore), ('diff', diff)):
        log('  %s: %s' % (scenario, ', '.join(c[0] for c in contenders)))
        timed = {c[0]: [] for c in contenders}
        for rnd in range(args.warmup + args.reps):
            for key, _label, kind, what, before in contenders:
                if before is not None:
                    before()
                if kind == 'engine':
                    t, got = engine_job(what)
                    sample_ = {'seconds': round(got['seconds'], 6), 'stats': got['stats'], 'maxrss_kb': t.maxrss_kb}
                else:
                    t = check(run_timed([str(a) for a in what], env=dict(os.environ, LC_ALL='C')), key)
                    sample_ = {'seconds': round(t.seconds, 6), 'maxrss_kb': t.maxrss_kb}
                sample_['sync_seconds'] = round(syncfs(mnt), 6)
                if rnd >= args.warmup:
                    timed[key].append(sample_)
            remove(out / 'cprestore')
            settle(mnt)
        res[scenario] = {}
        for key, label, kind, what, _before in contenders:
            entry = {'label': label, 'kind': kind, 'argv': None if kind == 'engine' else [str(a) for a in what],
                     'samples': timed[key], 'warmup': []}
            entry.update(summarize(timed[key]))
            res[scenario][key] = entry
    remove(live)
    remove(snap_b)
    os.unlink('%s.json' % snap_b)
    settle(mnt)
    return res


def _scenario(contenders, warm, timed):
    res = {}
    for c in contenders:
        entry = {'label': c.label, 'kind': c.kind, 'argv': c.argv, 'samples': timed[c.key], 'warmup': warm[c.key]}
        entry.update(summarize(timed[c.key]))
        res[c.key] = entry
    return res


# ---------------------------------------------------------------- modules through ansible

def bench_ansible(args, wd, data):
    """reflink_copy of one big file (new, then its idempotent re-run) against a bare ping, and
    ansible.builtin.copy remote_src=true of the same file, on XFS."""
    size = _parse_size(args.ansible_file_size)
    img = int(size * 3.5 + GiB)
    log('ansible: %.1f GiB file on XFS' % (size / GiB))
    py = sys.executable
    ansible = str(Path(py).parent / 'ansible')
    env = dict(os.environ, ANSIBLE_NOCOLOR='1',
               ANSIBLE_COLLECTIONS_PATH=os.environ.get('FSLINKS_BENCH_COLLECTIONS') or str(ROOT / '.collections'),
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_INVENTORY_UNPARSED_WARNING='False',
               ANSIBLE_RETRY_FILES_ENABLED='False')

    def adhoc(module, margs=None):
        argv = [ansible, 'localhost', '-c', 'local', '-o', '-e', 'ansible_python_interpreter=%s' % py, '-m', module]
        return argv + (['-a', margs] if margs else [])

    with fsutil.make_loop_fs('xfs', '%d' % img, wd, name='xfs-ansible') as mnt:
        big = mnt / 'big.bin'
        buf = os.urandom(64 * MiB)
        with open(big, 'wb') as f:
            left = size
            while left > 0:
                n = min(left, len(buf))
                f.write(buf[:n])
                left -= n
        syncfs(mnt)
        rc_dest, cp_dest = mnt / 'reflinked.bin', mnt / 'copied.bin'
        steps = [
            ('ping', 'ansible localhost -m ping', adhoc('ansible.builtin.ping'), None),
            ('reflink_copy', 'reflink_copy (new dest)',
             adhoc('fslinks.snapshots.reflink_copy', 'src=%s dest=%s' % (big, rc_dest)), None),
            ('reflink_copy-rerun', 'reflink_copy (re-run, unchanged)',
             adhoc('fslinks.snapshots.reflink_copy', 'src=%s dest=%s' % (big, rc_dest)), rc_dest),
            ('builtin.copy', 'ansible.builtin.copy remote_src (new dest)',
             adhoc('ansible.builtin.copy', 'src=%s dest=%s remote_src=true' % (big, cp_dest)), None),
            ('builtin.copy-rerun', 'ansible.builtin.copy remote_src (re-run, unchanged)',
             adhoc('ansible.builtin.copy', 'src=%s dest=%s remote_src=true' % (big, cp_dest)), cp_dest),
        ]
        samples = {k: [] for k, _l, _a, _o in steps}
        statuses = {k: set() for k, _l, _a, _o in steps}
        for rnd in range(args.warmup + args.ansible_reps):
            for key, _label, argv, output in steps:
                t = check(run_timed(argv, env=env), key)
                first = t.stdout.strip().splitlines()[0] if t.stdout.strip() else ''
                statuses[key].add(first.split('=>')[0].split('|')[-1].strip())
                syncfs(mnt)
                if output is not None:     # the re-run is over: drop the dest for the next round
                    remove(output)
                    settle(mnt)
                if rnd >= args.warmup:
                    samples[key].append({'seconds': round(t.seconds, 6), 'maxrss_kb': t.maxrss_kb,
                                         'cpu_seconds': round(t.cpu, 4)})
            if rnd >= args.warmup:
                log('  round %d/%d: %s' % (rnd - args.warmup + 1, args.ansible_reps, ', '.join(
                    '%s %.2fs' % (k, samples[k][-1]['seconds']) for k, _l, _a, _o in steps)))
        res = {'file_bytes': size, 'fs': 'xfs', 'results': {}}
        for key, label, argv, _o in steps:
            e = {'label': label, 'argv': argv, 'samples': samples[key], 'status': sorted(statuses[key])}
            e.update(summarize([dict(s, sync_seconds=0) for s in samples[key]]))
            res['results'][key] = e
        data['ansible'] = res
        write_json(args, data)


def _parse_size(s):
    return fsutil.parse_size(s)


# ---------------------------------------------------------------- output

def write_json(args, data):
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / ('bench-%s.json' % data['meta']['stamp'])
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + '\n')
    os.replace(tmp, path)
    latest = args.results_dir / 'latest.json'
    shutil.copyfile(path, latest)
    return path


def baseline_rss():
    """Peak RSS and CPU seconds of a worker that imports the engine and runs nothing (median of 3):
    the report takes that CPU off our engine's, which is its whole process's."""
    runs = [engine_job({'op': 'noop'}) for _i in range(3)]
    return (statistics.median(t.maxrss_kb for t, _r in runs), statistics.median(t.cpu for t, _r in runs),
            runs[0][1]['engine_file'])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--files', default='10000,30000,100000',
                   help='comma-separated tree sizes (regular file names) (default: %(default)s)')
    p.add_argument('--fs', default='ext4,xfs,btrfs', help='filesystems (default: %(default)s)')
    p.add_argument('--reps', type=int, default=5, help='timed rounds (default: %(default)s)')
    p.add_argument('--warmup', type=int, default=1, help='untimed warm-up rounds (default: %(default)s)')
    p.add_argument('--scale', type=float, default=1.0,
                   help='multiply every file size (1.0: mean ~25 KiB, ~2.5 GB at 100k files)')
    p.add_argument('--bytes', default=None,
                   help='total bytes of the largest tree instead (e.g. 500M); smaller trees get the same mean size')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--change-share', type=float, default=0.01, help='share of files changed (default: 1%%)')
    p.add_argument('--copy-max-files', type=int, default=100000,
                   help='run the full-copy contenders (fslinks copy, cp -a --reflink=never) only up to this size '
                        '(default: %(default)s)')
    p.add_argument('--scale-files', type=int, default=1000000,
                   help='the scale stage: this many files against 100,000, same file sizes (0: no scale stage) '
                        '(default: %(default)s)')
    p.add_argument('--scale-base', type=int, default=100000,
                   help='the scale stage\'s reference point (default: %(default)s)')
    p.add_argument('--scale-fs', default='ext4',
                   help="filesystems of the scale stage, or 'all' (default: %(default)s)")
    p.add_argument('--scale-scale', type=float, default=0.05,
                   help='file size factor of the scale stage (default %(default)s: ~1.2 GB at 1,000,000 files)')
    p.add_argument('--scale-reps', type=int, default=3, help='timed rounds of the scale stage (default: %(default)s)')
    p.add_argument('--big-file', default='2G',
                   help='one file of this size copied (reflink_copy reflink=never vs cp -a --reflink=never) on each '
                        '--fs; 0: not (default: %(default)s)')
    p.add_argument('--baseline', metavar='DIR',
                   help='also run another checkout of the collection (e.g. main) as "before", interleaved')
    p.add_argument('--baseline-label', default='before', help='its label in the report (default: %(default)s)')
    p.add_argument('--baseline-methods', default='copy',
                   help='methods the baseline runs, with the default workers (default: %(default)s)')
    p.add_argument('--no-ansible', action='store_true', help='skip the modules-through-ansible part')
    p.add_argument('--ansible-file-size', default='2G', help='file for reflink_copy vs ping (default: %(default)s)')
    p.add_argument('--ansible-reps', type=int, default=None, help='timed rounds for the ansible part (default: --reps)')
    p.add_argument('--workdir', default=os.environ.get('FSLINKS_BENCH_TMPDIR', '/var/tmp'),
                   help='where loop images go (a disk, not tmpfs) (default: %(default)s)')
    p.add_argument('--results-dir', default=str(ROOT / 'bench' / 'results'), help='raw JSON (default: bench/results)')
    p.add_argument('--docs-dir', default=str(ROOT / 'docs'), help='benchmarks.md and .png (default: docs)')
    p.add_argument('--no-plot', action='store_true', help='no PNG (matplotlib not needed)')
    p.add_argument('--report-only', metavar='JSON', help='only render the report from a results file')
    args = p.parse_args(argv)
    args.results_dir = Path(args.results_dir)
    args.docs_dir = Path(args.docs_dir)
    args.files = sorted({int(x) for x in str(args.files).split(',') if x.strip()})
    args.fs = [x.strip() for x in args.fs.split(',') if x.strip()]
    for fs in args.fs:
        if fs not in ALL_FS:
            p.error('unknown filesystem %r (known: %s)' % (fs, ', '.join(ALL_FS)))
    if args.ansible_reps is None:
        args.ansible_reps = args.reps
    args.scale_fs = list(ALL_FS) if args.scale_fs == 'all' else [x.strip() for x in args.scale_fs.split(',') if x.strip()]
    for fs in args.scale_fs:
        if fs not in ALL_FS:
            p.error('unknown filesystem %r in --scale-fs (known: %s, all)' % (fs, ', '.join(ALL_FS)))
    args.baseline_methods = [m.strip() for m in args.baseline_methods.split(',') if m.strip()]
    if args.baseline:
        if not (Path(args.baseline) / 'plugins' / 'module_utils' / '_snapshot.py').is_file():
            p.error('--baseline %s is not a checkout of the collection' % args.baseline)
        args.baseline = Path(args.baseline).resolve()
    largest = max(args.files)
    total = _parse_size(args.bytes) if args.bytes else None
    args.tree_bytes = (lambda n: int(total * n / largest)) if total else \
        (lambda n: int(n * (1 - _treegen.LINK_SHARE) * (1 - _treegen.EMPTY) * MEAN_FILE * args.scale))
    return args


def _sigterm(signum, frame):
    # SIGTERM (kill PID, a CI timeout) -> KeyboardInterrupt, so the loop filesystems are unmounted
    # and detached by make_loop_fs's finally. After SIGKILL the next run cleans up (cleanup_stale).
    raise KeyboardInterrupt('SIGTERM')


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _sigterm)
    if args.report_only:
        data = json.loads(Path(args.report_only).read_text())
        data['targets'] = _report.targets(data)
        log('report: %s' % _report.write(data, args.docs_dir, plot=not args.no_plot))
        print(_report.targets_text(data['targets']))
        return 0
    if os.geteuid() != 0:
        raise SystemExit('bench: needs root (loop devices, mount)')
    for fs in set(args.fs) | set(args.scale_fs if args.scale_files else ()):
        fsutil.check_prerequisites(fs)
    for tool in ('rsync', 'cp', 'sync') + (('btrfs',) if 'btrfs' in args.fs else ()):
        if not _common.which(tool):
            raise SystemExit('bench: %s not found (make bench installs what it needs)' % tool)
    if not args.no_plot:
        _report.check_plotting()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    data = {'meta': {'stamp': stamp, 'started': time.time(), 'argv': sys.argv[1:] if argv is None else argv,
                     'host': _common.host_info(), 'files': args.files, 'fs': args.fs, 'reps': args.reps,
                     'warmup': args.warmup, 'scale': args.scale, 'bytes': args.bytes, 'seed': args.seed,
                     'change_share': args.change_share, 'copy_max_files': args.copy_max_files,
                     'scale_files': args.scale_files, 'scale_base': args.scale_base, 'scale_scale': args.scale_scale, 'scale_reps': args.scale_reps,
                     'baseline': str(args.baseline) if args.baseline else None, 'baseline_label': args.baseline_label},
            'stages': [], 'scale': [], 'big_file': [], 'ansible': None}
    t0 = time.perf_counter()
    with _common.workdir(args.workdir) as wd:
        frozen, digest = _common.freeze_collection(wd / 'collection')
        os.environ['FSLINKS_BENCH_COLLECTIONS'] = str(frozen)
        data['meta']['engine_sha256'] = digest
        log('engine frozen for this run: %s (module_utils sha256 %s)' % (frozen, digest[:12]))
        rss, cpu, engine_file = baseline_rss()
        data['meta']['baseline_rss_kb'] = rss
        data['meta']['baseline_cpu_seconds'] = round(cpu, 4)
        data['meta']['engine_file'] = engine_file
        log('engine: %s; interpreter baseline peak RSS %.1f MiB' % (engine_file, rss / 1024))
        if args.baseline:
            coll, digest = _common.freeze_collection(wd / 'baseline', args.baseline)
            data['meta']['baseline_sha256'] = digest
            data['meta']['baseline_commit'] = _common.git_commit(args.baseline)
            args.baseline = (coll, args.baseline_label)
        # The JSON is saved after every stage (meta.complete false until the end): an hour's run that
        # fails in its last stage keeps what it measured, for --report-only.
        data['meta']['complete'] = False
        for files in args.files:
            for fs in args.fs:
                bench_fs(fs, files, args, wd, data)
                write_json(args, data)
        if _parse_size(args.big_file):
            for fs in args.fs:
                bench_big_file(fs, args, wd, data)
            write_json(args, data)
        if args.scale_files:
            for fs in args.scale_fs:
                for files in sorted({args.scale_base, args.scale_files}):
                    bench_scale(fs, files, args, wd, data)
                    write_json(args, data)
        if not args.no_ansible:
            bench_ansible(args, wd, data)
    data['meta']['complete'] = True
    data['meta']['seconds'] = round(time.perf_counter() - t0, 1)
    data['meta']['host']['loadavg_end'] = os.getloadavg()
    data['targets'] = _report.targets(data)
    path = write_json(args, data)
    log('raw results: %s' % path)
    md = _report.write(data, args.docs_dir, plot=not args.no_plot)
    log('report: %s' % md)
    print(_report.targets_text(data['targets']))
    return 0


if __name__ == '__main__':
    _common.main_guard(main, 'bench')
