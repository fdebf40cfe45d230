# Copyright: fslinks.snapshots contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn a bench results dict into docs/benchmarks.md (+ .png) and the PASS/MISS target list."""

from __future__ import annotations

import datetime
import os
import re
import statistics
from pathlib import Path

ORDER = ['engine:hardlink', 'engine:hardlink-1', 'rsync', 'cp-al', 'engine:reflink', 'engine:reflink-1',
         'cp-reflink', 'engine:btrfs', 'btrfs-snapshot', 'engine:copy', 'engine:copy-1', 'cp-never',
         'cp-a']        # cp-a: plain cp -a, in results from before cp-never (it reflinks on XFS, btrfs)
BASELINES = [('rsync', 'x rsync --link-dest'), ('cp-al', 'x cp -al'), ('cp-reflink', 'x cp --reflink'),
             ('cp-never', 'x cp --reflink=never')]
FLOORS = {'engine:hardlink': 'cp-al', 'engine:reflink': 'cp-reflink', 'engine:copy': 'cp-never',
          'engine:btrfs': 'btrfs-snapshot'}
SCALE_TIME = 1.10         # scale stage: time per file at the large point within 10 % of 100,000 files ...
SCALE_MEM_KB = 2048       # ... and peak memory within 2 MiB
FS_ORDER = ['ext4', 'xfs', 'btrfs']
MEM_GROWTH = 1.5          # "flat": net peak RSS grows at most 1.5x ...
MEM_SLACK_KB = 2048       # ... plus 2 MiB, for 10x more files (linear would be 10x)


def check_plotting():
    try:
        import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        raise SystemExit('bench: matplotlib is missing: run `make bench` (installs bench/requirements.txt) '
                         'or pass --no-plot')


def _stages(data):
    return sorted(data['stages'], key=lambda s: (s['files'], _fs_key(s['fs'])))


def _fs_key(fs):
    return FS_ORDER.index(fs) if fs in FS_ORDER else 99


def _get(data, fs, files, scenario, key):
    for st in data['stages']:
        if st['fs'] == fs and st['files'] == files:
            return st['scenarios'].get(scenario, {}).get(key)
    return None


def _keyed(keys):
    """Keys in report order; a baseline engine's key ('...:baseline') right after its own."""
    def rank(k):
        base = k[:-len(':baseline')] if k.endswith(':baseline') else k
        return (ORDER.index(base) if base in ORDER else len(ORDER), base, k != base)
    return sorted(keys, key=rank)


def _paired(a, b, value, value_b=None):
    """Median of the per-round ratios value(a sample) / value_b(b sample): samples of one round
    ran next to each other on the same machine state.  None where the rounds do not pair up (an
    old result, a different number of samples)."""
    value_b = value_b or value
    sa, sb = a.get('samples') or [], b.get('samples') or []
    pairs = [(value(x), value_b(y)) for x, y in zip(sa, sb)] if len(sa) == len(sb) else []
    pairs = [(x, y) for x, y in pairs if x is not None and y]
    return statistics.median(x / y for x, y in pairs) if pairs else None


def _ratio(a, b):
    if a is None or b is None or not b.get('median'):
        return None
    r = _paired(a, b, lambda s: s['seconds'])
    return r if r is not None else a['median'] / b['median']


def _cpu(data, entry):
    """CPU seconds (user+sys) of one sample of ENTRY.  Ours less the interpreter's start-up and
    imports (a worker that runs nothing), which its wall time does not include either."""
    off = data['meta'].get('baseline_cpu_seconds', 0.0) if entry.get('kind') == 'engine' else 0.0
    return lambda s: None if s.get('cpu_seconds') is None else max(s['cpu_seconds'] - off, 1e-3)


def _cpu_median(data, entry):
    vals = [v for v in map(_cpu(data, entry), entry.get('samples') or ()) if v is not None]
    return statistics.median(vals) if vals else None


def _durable(data, a, b):
    """Context for a ratio: both times including a flush (ours syncs before publishing; cp does
    not), and the CPU time (user+sys) ratio."""
    if a is None or b is None or not b.get('median_with_sync'):
        return ''
    r = _paired(a, b, lambda s: s['seconds'] + s['sync_seconds'])
    out = '; incl. syncfs for both: %.2fx' % (r if r is not None else a['median_with_sync'] / b['median_with_sync'])
    cpu = _paired(a, b, _cpu(data, a), _cpu(data, b))
    return out + ('; CPU %.2fx' % cpu if cpu is not None else '')


def tool_version(data, entry):
    """The version of the tool behind a result, as the report prints it next to its figures."""
    h = data['meta']['host']
    if entry.get('kind') == 'engine':
        if entry['label'].endswith(')') and data['meta'].get('baseline_commit'):
            return 'fslinks %s' % data['meta']['baseline_commit']
        return 'fslinks %s' % (h.get('git_commit', '?') + ('+' if h.get('engine_dirty') else ''))
    tool = os.path.basename((entry.get('argv') or ['?'])[0])
    line = {'rsync': h.get('rsync'), 'cp': h.get('cp'), 'btrfs': h.get('btrfs-progs')}.get(tool) or ''
    m = re.search(r'v?(\d+(?:\.\d+)+)', line)
    name = {'cp': 'coreutils', 'btrfs': 'btrfs-progs'}.get(tool, tool)
    return '%s %s' % (name, m.group(1)) if m else tool


def _versioned(data, fs, files, key, scenario='steady'):
    e = _get(data, fs, files, scenario, key)
    return '%s, %s' % (e['label'], tool_version(data, e)) if e else key


def _net_rss(data, entry):
    return max(0.0, entry['maxrss_kb_median'] - data['meta'].get('baseline_rss_kb', 0))


# ---------------------------------------------------------------- targets

def targets(data):
    """The issue's targets, evaluated on this run: [{name, where, value, limit, unit, status}]."""
    out = []
    sizes = sorted({st['files'] for st in data['stages']})
    if not sizes:
        return out
    big = sizes[-1]

    def add(name, where, value, limit, unit, ok):
        out.append({'name': name, 'where': where, 'value': value, 'limit': limit, 'unit': unit,
                    'status': 'n/a' if value is None else ('PASS' if ok else 'MISS')})

    # Against the floor: the C tool that does the least the same result needs.
    floors = [('engine:hardlink', 'hardlink', 'cp-al', 'cp -al', 1.15, FS_ORDER),
              ('engine:reflink', 'reflink', 'cp-reflink', 'cp -a --reflink=always', 0.90, ('xfs', 'btrfs')),
              ('engine:copy', 'copy', 'cp-never', 'cp -a --reflink=never', 1.0, FS_ORDER)]
    for key, method, floor, label, limit, fss in floors:
        for fs in fss:
            ours, theirs = _get(data, fs, big, 'steady', key), _get(data, fs, big, 'steady', floor)
            if ours is None or theirs is None:
                continue
            r = _ratio(ours, theirs)
            add('%s <= %.2fx %s' % (method, limit, label), '%s, %d files, steady, %s%s' % (
                fs, big, tool_version(data, theirs), _durable(data, ours, theirs)), r, limit, 'x', r is not None and r <= limit)
    # Against the rsync found on this machine, whatever its speed: a snapshot tool that is slower
    # than rsync -a --link-dest has no reason to exist.
    for fs in FS_ORDER:
        hl, rs = _get(data, fs, big, 'steady', 'engine:hardlink'), _get(data, fs, big, 'steady', 'rsync')
        if hl is None or rs is None:
            continue
        r = _ratio(hl, rs)
        add('hardlink <= 0.50x rsync -a --link-dest (the rsync on this machine)',
            '%s, %d files, steady, %s' % (fs, big, tool_version(data, rs)), r, 0.50, 'x', r is not None and r <= 0.50)
    back = '%d files, 1 %% changed' % big
    r = _ratio(_get(data, 'xfs', big, 'restore', 'engine:restore'), _get(data, 'xfs', big, 'restore', 'cp-reflink'))
    if r is not None:
        add('restore --mirror <= 1.0x cp -a --reflink=always', 'xfs, ' + back, r, 1.0, 'x', r <= 1.0)
    r = _ratio(_get(data, 'xfs', big, 'diff', 'engine:diff'), _get(data, 'xfs', big, 'diff', 'rsync-n'))
    if r is not None:
        add('diff <= 0.5x rsync -ani --delete', 'xfs, ' + back, r, 0.5, 'x', r <= 0.5)
    worst = None
    for n in sizes:
        e = _get(data, 'btrfs', n, 'steady', 'engine:btrfs')
        if e is not None and (worst is None or e['median'] > worst[1]):
            worst = (n, e['median'])
    if worst is not None:
        snap = _get(data, 'btrfs', worst[0], 'steady', 'btrfs-snapshot')
        extra = ''
        if snap is not None:
            extra = '; %.2fx %s' % (_ratio(_get(data, 'btrfs', worst[0], 'steady', 'engine:btrfs'), snap),
                                    _versioned(data, 'btrfs', worst[0], 'btrfs-snapshot'))
        add('btrfs method < 0.1 s at every tree size', 'btrfs, worst median at %d files%s' % (worst[0], extra),
            worst[1], 0.1, 's', worst[1] < 0.1)
    ans = (data.get('ansible') or {}).get('results') or {}
    if ans.get('ping'):
        size = '%.1f GiB' % (data['ansible']['file_bytes'] / (1 << 30))
        for key, what in (('reflink_copy', 'reflink_copy of a %s file' % size),
                          ('reflink_copy-rerun', 'reflink_copy re-run (unchanged)')):
            r = _ratio(ans.get(key), ans['ping'])
            add('%s <= 1.2x ansible -m ping' % what, 'xfs', r, 1.2, 'x', r is not None and r <= 1.2)
    if len(sizes) > 1:
        for fs in FS_ORDER:
            lo = _get(data, fs, sizes[0], 'steady', 'engine:hardlink')
            hi = _get(data, fs, big, 'steady', 'engine:hardlink')
            if lo is None or hi is None:
                continue
            a, b = _net_rss(data, lo), _net_rss(data, hi)
            limit = a * MEM_GROWTH + MEM_SLACK_KB
            heap = [((st.get('tracemalloc_peak_kb') or {}).get('engine:hardlink'))
                    for st in data['stages'] if st['fs'] == fs and st['files'] in (sizes[0], big)]
            extra = ''
            if len(heap) == 2 and None not in heap:
                extra = '; Python heap peak %.2f -> %.2f MiB' % (heap[0] / 1024, heap[1] / 1024)
            add('memory flat in the number of files (hardlink)',
                '%s, net peak RSS %.1f MiB at %d files -> at %d files%s' % (fs, a / 1024, sizes[0], big, extra),
                b / 1024, limit / 1024, 'MiB', b <= limit)
    out += scale_targets(data)
    for entry in data.get('big_file') or ():
        sc = entry['scenarios']['copy']
        ours, theirs = sc.get('engine:copy-file'), sc.get('cp-never')
        if ours is None or theirs is None:
            continue
        r = _ratio(ours, theirs)
        out.append(_target('copy of one %s file <= 1.00x cp -a --reflink=never' % _bytes(entry['file_bytes']),
                           '%s, reflink_copy reflink=never, %s%s' % (entry['fs'], tool_version(data, theirs),
                                                                     _durable(data, ours, theirs)),
                           r, 1.0, 'x', r is not None and r <= 1.0))
    return out


def _scale_get(data, fs, files, key):
    for st in data.get('scale') or ():
        if st['fs'] == fs and st['files'] == files:
            return st['scenarios'].get('steady', {}).get(key)
    return None


def _scale_points(data):
    """(fs, small, large) of each filesystem's scale stage."""
    out = []
    for fs in FS_ORDER:
        sizes = sorted({st['files'] for st in data.get('scale') or () if st['fs'] == fs})
        if len(sizes) > 1:
            out.append((fs, sizes[0], sizes[-1]))
    return out


def scale_targets(data):
    out = []
    for fs, lo_n, hi_n in _scale_points(data):
        for key, method in (('engine:hardlink', 'hardlink'), ('engine:copy', 'copy')):
            lo, hi = _scale_get(data, fs, lo_n, key), _scale_get(data, fs, hi_n, key)
            if lo is None or hi is None:
                continue
            a, b = lo['median'] / lo_n * 1e6, hi['median'] / hi_n * 1e6
            floor, floor_lo = _scale_get(data, fs, hi_n, FLOORS[key]), _scale_get(data, fs, lo_n, FLOORS[key])
            extra = ''
            if floor and floor_lo:
                # The filesystem's own growth: where the floor grows as much, the 10 % cannot be ours.
                fa, fb = floor_lo['median'] / lo_n * 1e6, floor['median'] / hi_n * 1e6
                extra = '; the floor %s: %.1f -> %.1f us/file (%.2fx)' % (floor['label'], fa, fb, fb / fa)
            out.append(_target('time per file at %d files within 10 %% of %d files (%s)' % (hi_n, lo_n, method),
                               '%s, %.1f -> %.1f us/file%s' % (fs, a, b, extra), b / a, SCALE_TIME, 'x',
                               b / a <= SCALE_TIME))
            ra, rb = lo['maxrss_kb_median'], hi['maxrss_kb_median']
            out.append(_target('peak memory at %d files within 2 MiB of %d files (%s)' % (hi_n, lo_n, method),
                               '%s, %.1f -> %.1f MiB' % (fs, ra / 1024, rb / 1024), (rb - ra) / 1024,
                               SCALE_MEM_KB / 1024, 'MiB', rb - ra <= SCALE_MEM_KB))
    return out


def _target(name, where, value, limit, unit, ok):
    return {'name': name, 'where': where, 'value': value, 'limit': limit, 'unit': unit,
            'status': 'n/a' if value is None else ('PASS' if ok else 'MISS')}


def _fmt_target(t):
    if t['value'] is None:
        v = 'not measured'
    elif t['unit'] == 's':
        v = '%.3f s (limit %.2f s)' % (t['value'], t['limit'])
    elif t['unit'] == 'MiB':
        v = '%.1f MiB (limit %.1f MiB)' % (t['value'], t['limit'])
    elif t['unit'] == 'x':
        v = '%.2fx (limit %.2fx)' % (t['value'], t['limit'])
    else:
        v = '%.2f%s' % (t['value'], t['unit'])
    return '%-4s %s [%s]: %s' % (t['status'], t['name'], t['where'], v)


def targets_text(tlist):
    return '\n'.join(_fmt_target(t) for t in tlist) or '(no targets measured)'


# ---------------------------------------------------------------- markdown

def _s(x):
    if x is None:
        return ''
    if x >= 100:
        return '%.0f' % x
    if x >= 10:
        return '%.1f' % x
    if x >= 1:
        return '%.2f' % x
    return '%.3f' % x


def _r(x):
    if x is None:
        return ''
    return '%.2fx' % x if x >= 0.1 else '%.3fx' % x


def _rows_for(data, st, scenario, columns=None):
    sc = st['scenarios'].get(scenario, {})
    keys = _keyed(sc)
    rows = []
    for key in keys:
        e = sc[key]
        ratios = []
        for base, _title in columns or BASELINES:
            b = sc.get(base)
            ratios.append(_r(_ratio(e, b)) if b is not None and base != key else '')
        fps = st['tree']['files'] / e['median'] if e['median'] > 0 else None
        rows.append([st['fs'], scenario, ('**%s**' % e['label']) if key.startswith('engine:') else e['label'],
                     tool_version(data, e), _s(e['median']), '%s–%s' % (_s(e['min']), _s(e['max'])),
                     '{:,.0f}'.format(fps) if fps else '', *ratios, _s(e['median_with_sync']),
                     _s(_cpu_median(data, e)), '%.1f' % (e['maxrss_kb_median'] / 1024)])
    return rows


def _table(header, rows, align=None):
    align = align or ['---'] * len(header)
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(align) + '|']
    lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return '\n'.join(lines)


def headline(data, files=None):
    sizes = sorted({st['files'] for st in data['stages']})
    files = files or (sizes[-1] if sizes else None)
    header = ['fs', 'scenario', 'contender', 'version', 'median s', 'min–max s', 'files/s'] + \
        [t for _b, t in BASELINES] + ['median s incl. syncfs', 'CPU s', 'peak RSS MiB']
    rows = []
    for st in _stages(data):
        if st['files'] != files:
            continue
        for scenario in ('steady', 'changed', 'restore', 'diff'):
            rows += _rows_for(data, st, scenario)
    align = ['---'] * 4 + ['--:'] * (len(header) - 4)
    return files, _table(header, rows, align)


def _bytes(n):
    return '%.1f GiB' % (n / (1 << 30)) if n >= 1 << 30 else '%.0f MiB' % (n / (1 << 20))


def big_file_table(data):
    rows = []
    for entry in sorted(data.get('big_file') or (), key=lambda e: _fs_key(e['fs'])):
        sc = entry['scenarios']['copy']
        floor = sc.get('cp-never')
        for key in _keyed(sc):
            e = sc[key]
            rows.append([entry['fs'], ('**%s**' % e['label']) if key.startswith('engine:') else e['label'],
                         tool_version(data, e), _s(e['median']), '%s–%s' % (_s(e['min']), _s(e['max'])),
                         _r(_ratio(e, floor)) if floor is not None and key != 'cp-never' else '',
                         _s(e['median_with_sync']), _s(_cpu_median(data, e))])
    if not rows:
        return None
    return _table(['fs', 'contender', 'version', 'median s', 'min–max s', 'x cp --reflink=never',
                   'median s incl. syncfs', 'CPU s'], rows, ['---'] * 3 + ['--:'] * 5)


def scale_table(data):
    """The scale stage: each point's contenders, time per file, peak memory."""
    rows = []
    for st in sorted(data.get('scale') or (), key=lambda s: (_fs_key(s['fs']), s['files'])):
        sc = st['scenarios'].get('steady', {})
        for key in _keyed(sc):
            e = sc[key]
            floor = sc.get(FLOORS.get(key.split(':baseline')[0], ''))
            rows.append([st['fs'], '{:,}'.format(st['files']), '%.2f GB' % (st['tree']['bytes'] / 1e9),
                         ('**%s**' % e['label']) if key.startswith('engine:') else e['label'], tool_version(data, e),
                         _s(e['median']), '%.1f' % (e['median'] / st['files'] * 1e6),
                         _r(_ratio(e, floor)) if floor is not None else '', _s(_cpu_median(data, e)),
                         '%.1f' % (e['maxrss_kb_median'] / 1024)])
    if not rows:
        return None
    return _table(['fs', 'files', 'data', 'contender', 'version', 'median s', 'µs/file', 'x its floor', 'CPU s',
                   'peak RSS MiB'], rows, ['---'] * 5 + ['--:'] * 5)


def scaling(data):
    sizes = sorted({st['files'] for st in data['stages']})
    header = ['fs', 'contender'] + ['%s files: s (µs/file)' % '{:,}'.format(n) for n in sizes]
    if len(sizes) > 1:
        header.append('growth %s→%s (files x%.0f)' % ('{:,}'.format(sizes[0]), '{:,}'.format(sizes[-1]),
                                                      sizes[-1] / sizes[0]))
    rows = []
    for fs in FS_ORDER:
        keys = []
        for st in _stages(data):
            if st['fs'] == fs:
                keys += [k for k in st['scenarios'].get('steady', {}) if k not in keys]
        keys = _keyed(keys)
        for key in keys:
            cells, meds, label = [], [], key
            for n in sizes:
                e = _get(data, fs, n, 'steady', key)
                if e is None:
                    cells.append('')
                    meds.append(None)
                    continue
                label = e['label']
                cells.append('%s (%.1f)' % (_s(e['median']), e['median'] / n * 1e6))
                meds.append(e['median'])
            row = [fs, label] + cells
            if len(sizes) > 1:
                row.append('%.1fx' % (meds[-1] / meds[0]) if meds[0] and meds[-1] else '')
            rows.append(row)
    return _table(header, rows, ['---', '---'] + ['--:'] * (len(header) - 2))


def memory(data):
    sizes = sorted({st['files'] for st in data['stages']})
    base = data['meta'].get('baseline_rss_kb', 0)
    header = ['fs', 'contender'] + ['%s files' % '{:,}'.format(n) for n in sizes]
    rows = []
    for fs in FS_ORDER:
        for key in ('engine:hardlink', 'engine:hardlink-1', 'engine:reflink', 'rsync', 'cp-al'):
            cells = []
            label = None
            for n in sizes:
                e = _get(data, fs, n, 'steady', key)
                if e is None:
                    cells.append('')
                    continue
                label = e['label']
                if key.startswith('engine:'):
                    cells.append('%.1f (net %.1f)' % (e['maxrss_kb_median'] / 1024, max(0, e['maxrss_kb_median'] - base) / 1024))
                else:
                    cells.append('%.1f' % (e['maxrss_kb_median'] / 1024))
            if label:
                rows.append([fs, label] + cells)
        cells = []
        for n in sizes:
            st = next((x for x in data['stages'] if x['fs'] == fs and x['files'] == n), None)
            v = ((st or {}).get('tracemalloc_peak_kb') or {}).get('engine:hardlink')
            cells.append('' if v is None else '%.2f' % (v / 1024))
        if any(cells):
            rows.append([fs, 'fslinks hardlink: Python heap peak in run() (tracemalloc)'] + cells)
    return _table(header, rows, ['---', '---'] + ['--:'] * len(sizes))


def ansible_table(data):
    a = data.get('ansible')
    if not a:
        return None
    res = a['results']
    ping = res.get('ping')
    rows = []
    for key in ('ping', 'reflink_copy', 'reflink_copy-rerun', 'builtin.copy', 'builtin.copy-rerun'):
        e = res.get(key)
        if not e:
            continue
        rows.append([e['label'], _s(e['median']), '%s–%s' % (_s(e['min']), _s(e['max'])),
                     _r(_ratio(e, ping)), '/'.join(e.get('status', [])), '%.0f' % (e['maxrss_kb_median'] / 1024)])
    return _table(['ad-hoc run', 'median s', 'min–max s', 'x ping', 'result', 'peak RSS MiB (largest process)'],
                  rows, ['---', '--:', '--:', '--:', '---', '--:'])


def _tree_line(data):
    out = []
    for st in _stages(data):
        t = st['tree']
        counts = '{:,} | {:,} | {:,} | {:,}'.format(t['files'], t['dirs'], t['symlinks'], t['hardlinks'])
        load = st.get('loadavg') or {}
        load = ' → '.join('%.1f' % load[k][0] for k in ('start', 'end') if load.get(k)) or 'not recorded'
        out.append('| %s | %s | %.2f GB | {:,} | %s |'.format(t.get('changed_files', 0))
                   % (st['fs'], counts, t['bytes'] / 1e9, load))
    return '\n'.join(['| fs | files | dirs | symlinks | inner hard links | data | changed files | load (1 min) |',
                      '|---|--:|--:|--:|--:|--:|--:|--:|'] + out)


def markdown(data, png_name=None):
    m = data['meta']
    h = {k: ' '.join(v.split()) if isinstance(v, str) else v for k, v in m['host'].items()}
    when = datetime.datetime.fromtimestamp(m['started'], datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    files, head = headline(data)
    tl = data.get('targets') or targets(data)
    lines = [
        '<!-- Generated by bench/run.py (%s). Do not edit: re-run `make bench`. -->' % m['stamp'],
        '# Benchmarks',
        '',
        'Our snapshot engine against the tools people use for the same job, on the same tree, the '
        'same loopback filesystem and a warm cache. Generated by `bench/run.py` (`make bench`) on %s '
        '(%s, %s CPUs, %.0f GiB RAM, kernel %s; %s; %s; engine at commit %s%s, copied aside when the run '
        'started: module_utils sha256 `%s`). Raw numbers: '
        '`bench/results/bench-%s.json`.' % (
            when, h.get('cpu_model', h.get('machine')), h.get('cpus'), h.get('mem_total_kb', 0) / (1 << 20),
            h.get('kernel'), h.get('rsync'), h.get('cp'), h.get('git_commit', '?'),
            ' + uncommitted changes' if h.get('engine_dirty') else '', (m.get('engine_sha256') or '?')[:12],
            m['stamp']),
        '',
    ] + ([] if m.get('complete', True) else [
        '**Incomplete**: the run stopped before its last stage; what follows is what it had measured.',
        '',
    ]) + [
        '## Headline: %s files' % ('{:,}'.format(files) if files else '?'),
        '',
        'Median of %d interleaved samples after %d warm-up round(s); "x rsync --link-dest", "x cp -al", '
        '"x cp --reflink" (`cp -a --reflink=always`) and "x cp --reflink=never" (`cp -a --reflink=never`, the '
        'floor of a copy: GNU cp >= 9.0 reflinks by default) are the median of the per-round ratios '
        '(the two samples of a round ran one after the other; below 1: faster than that tool). '
        '"version": the tool that made the figures (ours: its commit). "CPU s": user+sys of the '
        'process and its children (ours less a bare interpreter\'s start-up and imports). **Bold**: our '
        'engine (`fslinks METHOD` = `hardlink_snapshot method=METHOD`, called in-process, with its '
        'default `workers`: one process per CPU, at most 4 (here %s); `..., 1 process` = `workers: 1`)%s.'
        % (m['reps'], m['warmup'], h.get('cpus'), (
            '; "(%s)": the engine at commit %s (`--baseline`), interleaved with this one in the same rounds'
            % (m.get('baseline_label', 'before'), m.get('baseline_commit') or '?')) if m.get('baseline') else ''),
        '',
        head,
        '',
        '## Targets',
        '',
        '```',
        targets_text(tl),
        '```',
        '',
    ]
    if png_name:
        lines += ['![benchmark plot](%s)' % png_name, '']
    lines += ['## How cost grows with the number of files (steady state)', '',
              'Median seconds and microseconds per file; the last column is the growth of the median '
              'from the smallest to the largest tree (linear cost would grow by the same factor as '
              'the files).', '', scaling(data), '',
              '## Peak memory (MiB)', '',
              'Peak resident set of one sample\'s process, median over samples. Our engine: `VmHWM` '
              'of the bench worker process (its peak since exec, read from /proc/self/status when `run()` '
              'returns) or, if larger, the largest peak of the engine\'s own worker processes, '
              'a fresh Python interpreter that has imported the engine (%.1f MiB before it '
              'runs anything: "net" subtracts that baseline); and, from one extra untimed run, the peak of '
              'the Python allocations made during `run()` (tracemalloc, with `workers: 1`: it sees one process). Other tools: GNU time `%%M` (for rsync '
              'the largest of its processes). (`wait4`\'s `ru_maxrss` is not used: Linux charges a '
              'child with the forking parent\'s resident set from before exec.)'
              % (m.get('baseline_rss_kb', 0) / 1024), '', memory(data), '']
    bft = big_file_table(data)
    if bft:
        lines += ['## One big file', '',
                  'A %s file of random data copied without sharing: `reflink_copy` with `reflink: never` '
                  '(called in-process; it syncs the copy before giving it its name) against '
                  '`cp -a --reflink=never` (which does not), median of %d interleaved samples; ratios are '
                  'medians of per-round ratios.' % (_bytes(data['big_file'][0]['file_bytes']), m['reps']),
                  '', bft, '']
    sct = scale_table(data)
    if sct:
        points = sorted({st['files'] for st in data['scale']})
        lines += ['## Scale: %s files' % ' and '.join('{:,}'.format(n) for n in points), '',
                  'The hard-link and the copy methods on a large tree against a smaller one (%s files) of the same '
                  'file sizes (`--scale-scale %s`: small files, so that the large tree fits this machine\'s '
                  'disk), steady state, median of %d interleaved samples; "x its floor": against `cp -al` and '
                  '`cp -a --reflink=never`, median of per-round ratios. Targets: time per file within 10 %% and '
                  'peak memory within 2 MiB of the smaller point.' % (
                      '{:,}'.format(m.get('scale_base') or 100000), m.get('scale_scale'), m.get('scale_reps', 0)),
                  '', sct, '']
    at = ansible_table(data)
    if at:
        a = data['ansible']
        lines += ['## Modules through Ansible', '',
                  'Whole `ansible localhost -c local -m MODULE` processes (start-up, module transfer, '
                  'run) on XFS with a %.1f GiB file, %d interleaved samples. The re-runs find dest '
                  'unchanged: reflink_copy compares extents (FIEMAP) and metadata without reading '
                  'data; ansible.builtin.copy checksums both files.'
                  % (a['file_bytes'] / (1 << 30), len(a['results']['ping']['samples'])),
                  '', at, '']
    lines += ['## Trees', '',
              'The load column is the machine\'s 1-minute load average when the stage started and ended '
              '(2 CPUs): anything well above the benchmark\'s own ~1 means other work ran alongside and '
              'that stage\'s absolute times are inflated; interleaving keeps the ratios fairer than the '
              'times.', '', _tree_line(data), '',
              '## How it is measured', '',
              '- Trees: seeded (`--seed %s`), log-normal sizes (median 4 KiB, mean ~25 KiB x `--scale %s`), '
              '~5%% directories in a random tree, 1%% inner hard links, 3%% symlinks, mixed modes, '
              'owners and mtimes; see `bench/_treegen.py`. "changed": %.0f%% of the files rewritten '
              '(first 4 KiB, new mtime) after the previous snapshot was taken.' % (
                  m['seed'], m['scale'], m['change_share'] * 100),
              '- One fresh loop filesystem per filesystem and size: ext4, XFS `reflink=1`, btrfs (the '
              'btrfs method and `btrfs subvolume snapshot` read a subvolume; the other contenders read '
              'a reflinked plain-directory twin of it, since `cp -al` cannot link across subvolumes).',
              '- A previous snapshot PREV (made by our engine) exists in every run; `fslinks hardlink` '
              'links unchanged files to it, `rsync -a --link-dest=PREV SRC/ NEW/` too; `cp -al SRC NEW` '
              'links to SRC itself; `fslinks reflink`, `cp -a --reflink=always` clone from SRC; '
              '`fslinks copy` and `cp -a --reflink=never` copy all data (only up to %s files).'
              % '{:,}'.format(m['copy_max_files']),
              '- Our engine: each sample is a fresh `python bench/_worker.py` that imports '
              '`ansible_collections.fslinks.snapshots.plugins.module_utils._snapshot` (the same code '
              'the modules and the CLI run; from a copy of the collection made when the run started, '
              'which the Ansible part uses too) and times `run(Request(src, dest, method=...))` alone with '
              '`perf_counter` (start-up and imports excluded). Other tools: wall time from fork to '
              '`wait4` (including GNU time\'s fork+exec, which measures their memory: ~1 ms).',
              '- Our engine syncs the new snapshot (`syncfs`) before publishing it, so its times include '
              'flushing; the C tools do not flush. The "incl. syncfs" column adds a `sync -f` run right '
              'after each sample (for the engine it finds little left to do).',
              '- After each sample (untimed): its output is deleted, the filesystem flushed (`sync -f`) and '
              'on btrfs `btrfs subvolume sync` waits for the cleaner; page cache stays warm.',
              '- Our engine preserves what `rsync -aHAX` would (inner hard links, xattrs and ACLs); the '
              'rsync contender is plain `rsync -a` as commonly used for snapshots, which does less.',
              '- Targets use the largest tree in the steady state: against the floor (`cp -al`, '
              '`cp -a --reflink=always`, `cp -a --reflink=never`, `btrfs subvolume snapshot`) and against '
              'the rsync found on this machine (its version in the target), each as the median of '
              'per-round ratios. "Memory flat": our hardlink method\'s net peak RSS at the largest tree is '
              'at most %.1fx (+%d MiB) that at the smallest.' % (MEM_GROWTH, MEM_SLACK_KB // 1024),
              '- Images are sparse and sized from the tree (its data, a block per file, metadata per '
              'entry; ext4 gets an inode count to match), so a large tree of small files needs no more '
              'disk than it fills.',
              '- The machine: load average %s at the start, %s at the end; run took %s s.' % (
                  _load(h.get('loadavg_start')), _load(h.get('loadavg_end')), m.get('seconds', '?')),
              '']
    return '\n'.join(lines)


def _load(la):
    return '/'.join('%.2f' % x for x in la) if la else '?'


# ---------------------------------------------------------------- plot

_COLORS = {'engine:hardlink': '#1f77b4', 'engine:reflink': '#2ca02c', 'engine:btrfs': '#9467bd',
           'engine:hardlink-1': '#17becf', 'engine:reflink-1': '#98df8a',
           'engine:copy': '#8c564b', 'rsync': '#ff7f0e', 'cp-al': '#d62728', 'cp-reflink': '#bcbd22',
           'btrfs-snapshot': '#e377c2', 'cp-never': '#7f7f7f', 'cp-a': '#7f7f7f'}


def render_plot(data, path):
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    from matplotlib.ticker import NullFormatter  # pylint: disable=import-outside-toplevel

    stages = _stages(data)
    fss = [fs for fs in FS_ORDER if any(s['fs'] == fs for s in stages)]
    sizes = sorted({s['files'] for s in stages})
    nrows = 2 if len(sizes) > 1 else 1
    fig, axes = plt.subplots(nrows, len(fss), figsize=(5.2 * len(fss), 4.2 * nrows), squeeze=False)
    big = sizes[-1]
    for col, fs in enumerate(fss):
        ax = axes[0][col]
        st = next(s for s in stages if s['fs'] == fs and s['files'] == big)
        sc = st['scenarios'].get('steady', {})
        keys = _keyed(sc)
        meds = [sc[k]['median'] for k in keys]
        lo = [sc[k]['median'] - sc[k]['min'] for k in keys]
        hi = [sc[k]['max'] - sc[k]['median'] for k in keys]
        y = range(len(keys))
        ax.barh(list(y), meds, xerr=[lo, hi], color=[_COLORS.get(k, '#333') for k in keys], capsize=3)
        ax.set_yticks(list(y))
        ax.set_yticklabels([sc[k]['label'] for k in keys], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale('log')
        ax.xaxis.set_minor_formatter(NullFormatter())
        for yi, k in zip(y, keys):
            ax.annotate(_s(sc[k]['median']) + ' s', (sc[k]['max'], yi), xytext=(5, 0), textcoords='offset points',
                        va='center', fontsize=7)
        ax.set_xlim(min(meds) / 2, max(meds) * 4)
        ax.set_xlabel('seconds (median, min–max; log scale)')
        ax.set_title('%s, %s files, steady state' % (fs, '{:,}'.format(big)))
        ax.grid(axis='x', which='both', alpha=0.3)
        if nrows > 1:
            ax2 = axes[1][col]
            keys = []
            for s in stages:
                if s['fs'] == fs:
                    keys += [k for k in s['scenarios'].get('steady', {}) if k not in keys]
            for key in _keyed(keys):
                xs, ys, label = [], [], key
                for n in sizes:
                    e = _get(data, fs, n, 'steady', key)
                    if e is not None:
                        xs.append(n)
                        ys.append(e['median'])
                        label = e['label']
                ax2.plot(xs, ys, marker='o', label=label, color=_COLORS.get(key, '#333'),
                         linestyle='-' if key.startswith('engine:') else '--')
            ax2.set_xscale('log')
            ax2.set_yscale('log')
            ax2.xaxis.set_minor_formatter(NullFormatter())
            ax2.set_xticks(sizes)
            ax2.set_xticklabels(['{:,}'.format(n) for n in sizes])
            ax2.set_xlabel('files')
            ax2.set_ylabel('seconds (median)')
            ax2.set_title('%s: cost vs number of files' % fs)
            ax2.grid(which='both', alpha=0.3)
            ax2.legend(fontsize=7)
    fig.suptitle('fslinks.snapshots bench %s' % data['meta']['stamp'])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(data, docs_dir, plot=True):
    """Write DOCS_DIR/benchmarks.md (and benchmarks.png); returns the markdown path."""
    docs_dir = Path(docs_dir)
    docs_dir.mkdir(parents=True, exist_ok=True)
    if 'targets' not in data:
        data['targets'] = targets(data)
    png = None
    if plot and data['stages']:
        png = docs_dir / 'benchmarks.png'
        render_plot(data, png)
    md = docs_dir / 'benchmarks.md'
    tmp = md.with_suffix('.md.tmp')
    tmp.write_text(markdown(data, png.name if png else None) + '\n', encoding='utf-8')
    os.replace(tmp, md)
    return md
